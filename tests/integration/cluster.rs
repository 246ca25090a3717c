//! The whole protocol on a real Redis Cluster (one node, all slots): every multi-key script
//! must keep its keys in one hash slot, or Redis refuses it with CROSSSLOT. Then three
//! masters with a replica each: a master failover during a prune pass, and a migration of
//! the namespace's slot (MOVED/ASK) during touches.

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
    Gate, Recorder, eventually, prune_once_settled, touches_reach_the_new_master,
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

    // Every key of the namespace lives in one slot.
    let mut conn = server.sync_connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(keys.iter().any(|k| k == "{clusterbot}:feed"), "{keys:?}");
    let slots: HashSet<i64> = keys
        .iter()
        .map(|k| redis::cmd("CLUSTER").arg("KEYSLOT").arg(k).query(&mut conn).unwrap())
        .collect();
    assert_eq!(slots.len(), 1, "keys {keys:?} span slots {slots:?}");
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
async fn touches_and_prunes_carry_on_when_a_cluster_master_fails_over() {
    crate::common::init_tracing();
    let topology = std::sync::Arc::new(std::sync::Mutex::new(ClusterTopology::start()));
    let (urls, slot) = {
        let t = topology.lock().unwrap();
        (t.urls(), t.slot("{retention}:seen"))
    };
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

    // A pass is inside its eraser when the master of the namespace's slot dies; its
    // replica takes over and the pass never finishes.
    let gate = std::sync::Arc::new(Gate::default());
    let stuck = cluster_bot(urls, &clock, Recorder::new("profiles").gated(gate.clone())).await;
    let pass = tokio::spawn(async move { stuck.prune_once().await });
    gate.entered.notified().await;
    let new_master = tokio::task::spawn_blocking({
        let topology = std::sync::Arc::clone(&topology);
        move || {
            let mut t = topology.lock().unwrap();
            let (_, port) = t.master_of(slot);
            t.sync_replica_of(port);
            t.kill_master_of(slot)
        }
    })
    .await
    .unwrap();
    pass.abort();

    touches_reach_the_new_master(&bot, 61..=70, new_master).await;

    clock.advance(std::time::Duration::from_secs(61));
    assert_eq!(prune_once_settled(&bot).await, 40);
    for user in 1..=40 {
        assert!(eraser.erased(user) >= 1, "user {user} erased");
    }
    for user in 51..=70 {
        assert_eq!(eraser.erased(user), 0, "user {user} is active and kept");
    }
    assert_eq!(bot.tracked_users().await.unwrap(), 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn touches_carry_on_while_the_namespace_slot_migrates() {
    crate::common::init_tracing();
    let topology = ClusterTopology::start();
    let slot = topology.slot("{retention}:seen");
    let clock = ManualClock::at_unix_ms(T0);
    let bot = cluster_bot(topology.urls(), &clock, Recorder::new("profiles")).await;
    for user in 1..=100 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }

    // Every slot of the namespace's master moves to another master (MOVED and ASK
    // redirections) while new users keep arriving.
    let (from, _) = topology.master_of(slot);
    let (to, _) = topology.other_master(slot);
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut reshard = topology.reshard(&from, &to, log.path());
    let mut noted = Vec::new();
    let mut user = 100;
    loop {
        user += 1;
        clock.advance(std::time::Duration::from_secs(120)); // past the cache: every touch writes
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
    eventually("every touch written", || async {
        bot.flush().await.is_ok() && bot.stats().buffered_users == 0
    })
    .await;
    assert_eq!(
        bot.tracked_users().await.unwrap(),
        user,
        "no touch was lost ({} during the move)",
        user - 100
    );
    let report = bot.prune_once().await.unwrap();
    assert_eq!(report.erased, 0, "nobody is inactive");
}
