//! The whole protocol on a real Redis Cluster (one node, all slots): every multi-key script
//! must keep its keys in one hash slot, or Redis refuses it with CROSSSLOT. Then three
//! masters with a replica each and the default 24 shards per namespace: the store suite,
//! the spread of users over the masters, a master failover during a prune pass, and a slot
//! migration (MOVED/ASK) during interactions.

use std::collections::HashSet;

use teloxide::RequestError;
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::types::{Update, UserId};
use teloxide_retention::{
    ErasureReason, GoneReason, ManualClock, Noted, OptOutOutcome, RedisStore, Retention,
};

use crate::common::cluster::ClusterTopology;
use crate::common::{DAY, FakeBotApi, RedisServer, T0, dispatch, updates as u};
use crate::support::{
    Gate, Recorder, eventually, interactions_reach_the_new_master, prune_settled,
};

fn message_tree() -> UpdateHandler<RequestError> {
    Update::filter_message().endpoint(|| async { Ok(()) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_runs_on_redis_cluster() {
    crate::common::init_tracing();
    let server = RedisServer::start_cluster();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles").failing_first(1);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::open_cluster([server.url().as_str()]).await.unwrap();
        let retention = Retention::builder(store)
            .namespace("clusterbot")
            .inactive_after(30 * DAY)
            .clock(clock.clone())
            .erase_with(eraser.clone())
            .build()
            .unwrap();
        replicas.push(retention);
    }
    let (a, b) = (&replicas[0], &replicas[1]);

    // Tracking through the layer, with the privacy commands (nonces, rate counters) on.
    for user in 1..=20 {
        a.note_interaction(UserId(user)).await;
    }
    let api = FakeBotApi::start().await;
    let updates =
        vec![u::message(21, "hi"), u::message(21, "/mydata"), u::message(22, "/removemydata")];
    dispatch(&api, a.wrap(message_tree()), updates).await;
    assert_eq!(api.sent_to("senddocument", 21).len(), 1);
    assert_eq!(api.sent_to("sendmessage", 22)[0].buttons().len(), 2);
    assert_eq!(a.tracked_users().await.unwrap(), 22);

    // Gone marks, opt-outs (one eraser failure, retried) and the feed between replicas.
    assert!(a.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap());
    assert!(matches!(b.erase_user(UserId(2)).await.unwrap(), OptOutOutcome::Retrying { .. }));
    assert_eq!(b.erase_user(UserId(3)).await.unwrap(), OptOutOutcome::Erased { follow_up: false });

    clock.advance(31 * DAY);
    let preview = a.preview(100).await.unwrap();
    assert_eq!((preview.inactive, preview.scheduled_due), (20, 2), "{preview:?}");
    assert_eq!(preview.users.len(), 21, "each user once: {preview:?}");
    assert_eq!(preview.users.iter().filter(|e| e.user == UserId(1)).count(), 1);
    let report = a.prune_once().await.unwrap();
    assert_eq!(report.erased, 21, "{report:?}");
    assert_eq!(eraser.reasons(1), [ErasureReason::Blocked]);
    assert_eq!(eraser.reasons(2), [ErasureReason::OptOut]);
    assert_eq!(a.tracked_users().await.unwrap(), 0);

    // The namespace is split into 24 shards, each in a slot of its own, and the home that
    // records the count; no key is outside them.
    let mut conn = server.sync_connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let tags: HashSet<&str> = keys
        .iter()
        .map(|k| k.strip_prefix('{').and_then(|k| k.split_once('}')).expect("a hash tag").0)
        .collect();
    assert!(tags.contains("clusterbot"), "{tags:?}");
    assert_eq!(tags.len(), 25, "{tags:?}");
    let slots: HashSet<i64> = tags
        .iter()
        .map(|t| redis::cmd("CLUSTER").arg("KEYSLOT").arg(*t).query(&mut conn).unwrap())
        .collect();
    assert_eq!(slots.len(), 25, "every shard in a slot of its own: {slots:?}");
    let shards: usize =
        redis::cmd("HGET").arg("{clusterbot}:meta").arg("shards").query(&mut conn).unwrap();
    assert_eq!(shards, 24);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_suite_runs_on_a_sharded_three_master_cluster() {
    let topology = ClusterTopology::start();
    let cases = crate::store::every_case()
        .into_iter()
        .chain(crate::adoption::every_case())
        .chain(crate::audit::every_case());
    for (i, (name, case)) in cases.enumerate() {
        let env = crate::common::Env::cluster(topology.urls(), &format!("case{i}"));
        // A panic names its case; the other cases still run on a clean namespace.
        if let Err(e) = tokio::spawn(case(env)).await {
            panic!("store case {name} failed on the cluster: {e}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_are_spread_evenly_over_every_master() {
    crate::common::init_tracing();
    let topology = ClusterTopology::start();
    let clock = ManualClock::at_unix_ms(T0);
    let bot = cluster_bot(topology.urls(), &clock, Recorder::new("profiles")).await;
    // Telegram user ids: large and dense in places.
    let users = 6_000u64;
    for user in 0..users {
        bot.note_interaction(UserId(5_000_000_000 + user * 37)).await;
    }
    bot.flush().await.unwrap();
    assert_eq!(bot.tracked_users().await.unwrap(), users);
    let spread = topology.seen_per_master();
    assert_eq!(spread.len(), 3, "{spread:?}");
    assert_eq!(spread.iter().map(|(_, n)| n).sum::<u64>(), users, "{spread:?}");
    for (port, n) in &spread {
        let share = *n as f64 / users as f64;
        assert!(
            (share - 1.0 / 3.0).abs() <= 0.1 / 3.0,
            "master {port} holds {n} of {users} users (within 10 % of a third expected): {spread:?}"
        );
    }

    // One master may evict any key: the pruner refuses, as on a single server. (Measured
    // before the fix: the health check read no policy on a cluster, whose nodes each answer
    // INFO and CONFIG GET, and pruned.)
    let port = spread[1].0;
    let node = topology.nodes.iter().find(|n| n.port() == port).unwrap();
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut node.sync_connection())
        .unwrap();
    let err = bot.prune_once().await.unwrap_err();
    assert!(err.to_string().contains("allkeys-lru"), "{err}");
    let store = RedisStore::open_cluster(topology.urls().iter().map(String::as_str)).await.unwrap();
    let found = store.diagnose("retention").await.unwrap();
    assert_eq!(found.eviction_policy.as_deref(), Some("allkeys-lru"));
    assert_eq!(found.namespace.unwrap().shards, 24);
}

/// A bot on a cluster of three masters with one replica each.
fn cluster_bot(
    urls: Vec<String>,
    clock: &ManualClock,
    eraser: Recorder,
) -> impl std::future::Future<Output = Retention> {
    let clock = clock.clone();
    async move {
        let store = RedisStore::open_cluster(urls.iter().map(String::as_str)).await.unwrap();
        Retention::builder(store)
            .inactive_after(30 * DAY)
            .lease(std::time::Duration::from_secs(60))
            .without_commands()
            .clock(clock)
            .erase_with(eraser)
            .build()
            .unwrap()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactions_and_prunes_carry_on_when_a_cluster_master_fails_over() {
    crate::common::init_tracing();
    let topology = std::sync::Arc::new(std::sync::Mutex::new(ClusterTopology::start()));
    // Slot 0's master holds a third of the 24 shards.
    let slot = 0;
    let urls = topology.lock().unwrap().urls();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles");
    let bot = cluster_bot(urls.clone(), &clock, eraser.clone()).await;
    for user in 1..=40 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }
    clock.advance(31 * DAY);
    for user in 51..=60 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }

    // A pass is inside its eraser when the master of a third of the shards dies; its
    // replica takes over and the pass never finishes.
    let gate = std::sync::Arc::new(Gate::default());
    let stuck = cluster_bot(urls, &clock, Recorder::new("profiles").gated(gate.clone())).await;
    let pass = tokio::spawn(async move { stuck.prune_once().await });
    gate.entered.notified().await;
    let masters = tokio::task::spawn_blocking({
        let topology = std::sync::Arc::clone(&topology);
        move || {
            let mut t = topology.lock().unwrap();
            let (_, port) = t.master_of(slot);
            t.sync_replica_of(port);
            let new_master = t.kill_master_of(slot);
            let mut ports = t.master_ports();
            ports.sort_by_key(|p| *p != new_master);
            ports
        }
    })
    .await
    .unwrap();
    pass.abort();

    // 30 users: some of them are in the new master's shards.
    interactions_reach_the_new_master(&bot, 61..=90, &masters).await;

    clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(prune_settled(&bot, 40).await, 40);
    for user in 1..=40 {
        assert!(eraser.erased(user) >= 1, "user {user} erased");
    }
    for user in 51..=90 {
        assert_eq!(eraser.erased(user), 0, "user {user} is active and kept");
    }
    assert_eq!(bot.tracked_users().await.unwrap(), 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactions_and_prunes_carry_on_when_a_cluster_master_hangs() {
    crate::common::init_tracing();
    let topology = std::sync::Arc::new(std::sync::Mutex::new(ClusterTopology::start()));
    let slot = 0;
    let urls = topology.lock().unwrap().urls();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles");
    let bot = cluster_bot(urls, &clock, eraser.clone()).await;
    for user in 1..=40 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }
    clock.advance(31 * DAY);

    // The master of a third of the shards hangs (its sockets stay open, nothing answers)
    // while the bot keeps writing; the cluster promotes its replica. (Interactions start after
    // the freeze: a write the old master took but had not replicated would be lost with
    // it, as Redis replication is asynchronous.)
    let frozen = tokio::task::spawn_blocking({
        let topology = std::sync::Arc::clone(&topology);
        move || {
            let mut t = topology.lock().unwrap();
            let (_, port) = t.master_of(slot);
            t.sync_replica_of(port);
            t.freeze_master_of(slot)
        }
    })
    .await
    .unwrap();
    let masters = tokio::task::spawn_blocking({
        let topology = std::sync::Arc::clone(&topology);
        move || {
            let t = topology.lock().unwrap();
            let new_master = t.wait_for_new_master_of(slot, frozen);
            let mut ports = t.master_ports();
            ports.sort_by_key(|p| *p != new_master);
            ports
        }
    });
    let mut user = 100;
    while !masters.is_finished() {
        user += 1;
        let noted = bot.note_interaction(UserId(user)).await;
        assert!(matches!(noted, Noted::Written | Noted::Buffered), "{noted:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let masters = masters.await.unwrap();

    interactions_reach_the_new_master(&bot, 61..=90, &masters).await;
    clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(prune_settled(&bot, 40).await, 40);
    for u in 1..=40 {
        assert!(eraser.erased(u) >= 1, "user {u} erased");
    }
    for u in (61..=90).chain(101..=user) {
        assert_eq!(eraser.erased(u), 0, "user {u} is active and kept");
    }
    assert_eq!(bot.tracked_users().await.unwrap(), 30 + user - 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactions_carry_on_while_slots_migrate() {
    crate::common::init_tracing();
    let topology = ClusterTopology::start();
    // Slot 0's master holds a third of the 24 shards.
    let slot = 0;
    let clock = ManualClock::at_unix_ms(T0);
    let bot = cluster_bot(topology.urls(), &clock, Recorder::new("profiles")).await;
    for user in 1..=100 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }

    // Every slot of one master moves to another master (MOVED and ASK redirections)
    // while new users keep arriving.
    let (from, _) = topology.master_of(slot);
    let (to, _) = topology.other_master(slot);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut reshard = topology.reshard(&from, &to, log.path());
    let mut noted = Vec::new();
    let mut user = 100;
    loop {
        user += 1;
        clock.advance(std::time::Duration::from_secs(120)); // past the cache: every interaction writes
        noted.push(bot.note_interaction(UserId(user)).await);
        if reshard.try_wait().unwrap().is_some() {
            break;
        }
        assert!(user < 100_000, "the reshard never ended");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let status = reshard.wait().unwrap();
    let output = std::fs::read_to_string(log.path()).unwrap();
    assert!(status.success(), "reshard failed: {}", &output[output.len().saturating_sub(2000)..]);
    assert_eq!(topology.master_of(slot).0, to, "the slot moved");
    assert!(!noted.contains(&Noted::Dropped), "{noted:?}");
    eventually("every interaction written", || async {
        bot.flush().await.is_ok() && bot.stats().buffered_users == 0
    })
    .await;
    assert_eq!(
        bot.tracked_users().await.unwrap(),
        user,
        "no interaction was lost ({} during the move)",
        user - 100
    );
    let report = bot.prune_once().await.unwrap();
    assert_eq!(report.erased, 0, "nobody is inactive");
}
