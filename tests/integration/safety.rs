//! Issue 11's faults on real `redis-server` processes: clock skew between hosts, a replica
//! cut off from Redis, memory pressure, an eviction policy that may drop keys, a vanished
//! `seen` set, and entries this version cannot read. Each test states what happened before
//! the fix.

use std::sync::Arc;
use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{
    Clock, ErasureReason, Error, ManualClock, RedisStore, Retention, RetentionBuilder, SystemClock,
};

use crate::common::proxy::Proxy;
use crate::common::{DAY, Env, RedisServer};
use crate::support::{Gate, Recorder, eventually, prune_until_nothing_held};

const MINUTE: Duration = Duration::from_secs(60);
const HOUR: Duration = Duration::from_secs(3600);

/// A host clock that runs `offset_ms` ahead (or behind, if negative).
struct SkewedClock(i64);

impl Clock for SkewedClock {
    fn now_ms(&self) -> i64 {
        SystemClock.now_ms() + self.0
    }
}

/// Redis's own clock, in unix ms.
fn redis_time(server: &RedisServer) -> i64 {
    let (secs, micros): (i64, i64) =
        redis::cmd("TIME").query(&mut server.sync_connection()).unwrap();
    secs * 1000 + micros / 1000
}

fn raw(server: &RedisServer, args: &[&str]) -> redis::Value {
    let mut cmd = redis::cmd(args[0]);
    for arg in &args[1..] {
        cmd.arg(*arg);
    }
    cmd.query(&mut server.sync_connection()).unwrap()
}

fn count(server: &RedisServer, args: &[&str]) -> i64 {
    match raw(server, args) {
        redis::Value::Int(n) => n,
        other => panic!("{args:?} answered {other:?}"),
    }
}

/// A retention on `store` sharing `clock`, with a 30-day threshold, fast heartbeats
/// (250 ms: a writer silent for 750 ms counts as cut off; the tests wait for that state,
/// and never assume a live writer beats on time) and the outage tests' store timeout.
fn replica(store: RedisStore, clock: &ManualClock) -> RetentionBuilder {
    Retention::builder(store)
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(clock.clone())
        .heartbeat_every(Duration::from_millis(250))
        .store_timeout(crate::common::OUTAGE_STORE_TIMEOUT)
}

async fn open(server: &RedisServer) -> RedisStore {
    RedisStore::open(&server.url()).await.unwrap()
}

/// Records `users` as last seen at `at` (unix ms), through a retention whose manual clock
/// shows that time.
async fn seed(server: &RedisServer, users: impl IntoIterator<Item = u64>, at: i64) {
    let seeder = Retention::builder(open(server).await)
        .inactive_after(HOUR)
        .without_commands()
        .clock(ManualClock::at_unix_ms(at))
        .build()
        .unwrap();
    for user in users {
        assert!(seeder.note_interaction(UserId(user)).await.is_stored());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pruner_whose_clock_runs_fast_neither_erases_early_nor_takes_over_live_leases() {
    // Measured before the fix: a pruner host 25 min fast erased 200 users idle 40 min under a
    // 1 h threshold, and took over a live lease (the erasers ran twice): the cutoff and lease
    // expiry came from its own clock.
    let server = RedisServer::start();
    let now = redis_time(&server);
    seed(&server, 1..=200, now - 40 * 60_000).await;
    seed(&server, [999], now - 2 * 3_600_000).await;

    // A correct pruner claims user 999 and is busy erasing them (lease 10 min).
    let gate = Arc::new(Gate::default());
    let slow = Recorder::new("profiles").gated(Arc::clone(&gate));
    let holder = Retention::builder(open(&server).await)
        .inactive_after(HOUR)
        .lease(10 * MINUTE)
        .without_commands()
        .erase_with(slow.clone())
        .build()
        .unwrap();
    let running = tokio::spawn(async move { holder.prune_once().await });
    gate.entered.notified().await;

    let fast_eraser = Recorder::new("profiles");
    let fast = Retention::builder(open(&server).await)
        .inactive_after(HOUR)
        .lease(10 * MINUTE)
        .without_commands()
        .erase_with(fast_eraser.clone())
        .clock(SkewedClock(25 * 60_000))
        .build()
        .unwrap();
    // Its dry run says what its pass does: the same times, on Redis's clock.
    let preview = fast.preview(300).await.unwrap();
    assert_eq!((preview.inactive, preview.users.len()), (0, 0), "{preview:?}");
    let report = fast.prune_once().await.unwrap();
    assert_eq!(report.claimed, 0, "{report:?}");
    assert!(fast_eraser.calls().is_empty());

    gate.release.notify_one();
    let held = running.await.unwrap().unwrap();
    assert_eq!((held.erased, held.leases_lost), (1, 0), "{held:?}");
    assert_eq!(slow.erased(999), 1);
    assert_eq!(fast.tracked_users().await.unwrap(), 200);

    // The skew was measured, corrected, logged and counted.
    let stats = fast.stats();
    // Within 10 s: the measurement's error is half a round trip, which a loaded machine
    // stretches; the skew is 25 minutes.
    assert!((stats.clock_offset_ms + 25 * 60_000).abs() < 10_000, "{stats:?}");
    assert!(stats.clock_skew_warnings >= 1, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_whose_clock_runs_slow_writes_redis_time() {
    // Before the fix a bot host 25 min slow wrote scores 25 min old: its users looked
    // inactive 25 min early.
    let server = RedisServer::start();
    let bot = Retention::builder(open(&server).await)
        .inactive_after(HOUR)
        .without_commands()
        .clock(SkewedClock(-25 * 60_000))
        .build()
        .unwrap();
    // User 7 is the first interaction, taken before the offset was measured; user 8 comes
    // after.
    for user in [7, 8] {
        assert!(bot.note_interaction(UserId(user)).await.is_stored());
        let stored = bot.status(UserId(user)).await.unwrap().last_seen.unwrap().timestamp_millis();
        let now = redis_time(&server);
        // Within 10 s (a loaded machine stretches the calls between the two readings); the
        // skew is 25 minutes.
        assert!((now - stored).abs() < 10_000, "user {user}: stored {stored}, Redis time {now}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_cut_off_from_redis_holds_back_inactivity_erasures_until_it_wrote_its_buffer() {
    // Measured before the fix: a replica that could not reach Redis buffered the
    // interactions of 1000 returning users while a pruner elsewhere erased all 1000 as
    // inactive: no process could see another one's buffer.
    let server = RedisServer::start();
    let proxy = Proxy::start(server.socket());
    let clock = ManualClock::at_unix_ms(redis_time(&server));
    let builder = |store: RedisStore| replica(store, &clock);
    let replica = builder(RedisStore::open(&proxy.url()).await.unwrap()).build().unwrap();
    let eraser = Recorder::new("profiles");
    let pruner = builder(open(&server).await).erase_with(eraser.clone()).build().unwrap();
    for user in 1..=1000 {
        replica.note_interaction(UserId(user)).await;
    }
    replica.flush().await.unwrap();
    assert_eq!(pruner.tracked_users().await.unwrap(), 1000);

    // A month later every user comes back, on the replica that is cut off.
    clock.advance(31 * DAY);
    proxy.cut();
    for user in 1..=1000 {
        assert!(!replica.note_interaction(UserId(user)).await.is_stored());
    }
    eventually("the cut-off replica misses its heartbeats", || async {
        let held = pruner.preview(10).await.unwrap().inactivity_held;
        held.is_some_and(|why| why.contains("missed its heartbeats"))
    })
    .await;
    let report = pruner.prune_once().await.unwrap();
    assert_eq!(report.erased, 0, "{report:?}");
    assert!(report.inactivity_held.is_some(), "{report:?}");
    assert!(pruner.stats().inactivity_held >= 1);

    // Opt-outs are not held back.
    assert!(matches!(
        pruner.erase_user(UserId(1001)).await.unwrap(),
        teloxide_retention::OptOutOutcome::Erased { .. }
    ));

    // Back online, the replica writes what it buffered: nobody who came back is erased.
    proxy.restore();
    eventually("the replica wrote its buffer", || async { replica.stats().buffered_users == 0 })
        .await;
    assert_eq!(prune_until_nothing_held(&pruner).await, 0, "nobody is erased");
    assert_eq!(pruner.tracked_users().await.unwrap(), 1000);
    assert_eq!(eraser.calls().len(), 1, "only the opt-out");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_memory_pressure_nothing_is_claimed_and_the_writers_backlog_holds_inactivity() {
    // Measured before the fix: with `maxmemory` reached under `noeviction`, interactions were
    // buffered while the pruner kept claiming, and 1000 of 1000 users who interacted during
    // the OOM were erased as inactive; a claim that failed halfway kept its removals.
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(redis_time(&server));
    let builder = |store: RedisStore| replica(store, &clock);
    let bot = builder(open(&server).await).build().unwrap();
    let eraser = Recorder::new("profiles");
    let pruner = builder(open(&server).await).erase_with(eraser.clone()).build().unwrap();
    for user in 1..=1000 {
        bot.note_interaction(UserId(user)).await;
    }
    bot.flush().await.unwrap();
    pruner.prune_once().await.unwrap();

    clock.advance(31 * DAY);
    raw(&server, &["CONFIG", "SET", "maxmemory", "1"]);
    for user in 1..=1000 {
        assert!(!bot.note_interaction(UserId(user)).await.is_stored());
    }
    eventually("the bot reports its unwritten interactions", || async {
        pruner.preview(1).await.unwrap().inactivity_held.is_some_and(|w| w.contains("1000"))
    })
    .await;
    // Redis refuses write scripts up front (`noeviction` at `maxmemory`).
    let err = pruner.prune_once().await.unwrap_err();
    assert!(matches!(&err, Error::Redis(_)) && err.to_string().contains("OOM"), "{err:?}");
    assert_eq!(count(&server, &["ZCOUNT", "{retention}:seen", "-inf", "(+inf"]), 1000);
    assert_eq!(count(&server, &["HLEN", "{retention}:batches"]), 0);

    raw(&server, &["CONFIG", "SET", "maxmemory", "0"]);
    eventually("the bot wrote its buffer", || async { bot.stats().buffered_users == 0 }).await;
    assert_eq!(prune_until_nothing_held(&pruner).await, 0, "nobody is erased");
    assert!(eraser.calls().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruner_refuses_to_run_under_an_allkeys_eviction_policy() {
    // Measured before the fix: under `allkeys-lru` Redis evicted the whole `seen` key and
    // 464,890 tracked users vanished with no error anywhere.
    let server = RedisServer::start_with(&["--maxmemory-policy", "allkeys-lru"]);
    let store = open(&server).await;
    let env_builder = |allow: bool| {
        Retention::builder(store.clone())
            .inactive_after(30 * DAY)
            .without_commands()
            .allow_allkeys_eviction(allow)
            .build()
            .unwrap()
    };
    let err = env_builder(false).prune_once().await.unwrap_err();
    assert!(matches!(err, Error::Unsafe(_)), "{err:?}");
    assert!(err.to_string().contains("allkeys-lru"), "{err}");
    assert!(err.to_string().contains("noeviction"), "says how to fix it: {err}");
    env_builder(true).prune_once().await.unwrap();

    raw(&server, &["CONFIG", "SET", "maxmemory-policy", "noeviction"]);
    env_builder(false).prune_once().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_eviction_policy_is_read_from_info_where_config_is_disabled() {
    // Managed Redis services often disable CONFIG.
    let server = RedisServer::start_with(&[
        "--maxmemory-policy",
        "allkeys-lfu",
        "--rename-command",
        "CONFIG",
        "",
    ]);
    let retention = Retention::builder(open(&server).await)
        .inactive_after(30 * DAY)
        .without_commands()
        .build()
        .unwrap();
    let err = retention.prune_once().await.unwrap_err();
    assert!(err.to_string().contains("allkeys-lfu"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_seen_set_pauses_pruning_until_the_loss_is_accepted() {
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let retention = env.builder().await.build().unwrap();
    retention.note_interaction(UserId(1)).await;
    retention.prune_once().await.unwrap();

    // Lost (as by eviction, or by hand); new interactions recreate the key.
    raw(server, &["DEL", "{retention}:seen"]);
    env.clock.advance(Duration::from_secs(120));
    retention.note_interaction(UserId(2)).await;
    let err = retention.prune_once().await.unwrap_err();
    assert!(matches!(err, Error::Unsafe(_)), "{err:?}");
    assert!(err.to_string().contains("{retention}:seen"), "{err}");
    let again = retention.prune_once().await.unwrap_err();
    assert!(matches!(again, Error::Unsafe(_)), "it stays paused: {again:?}");
    assert!(again.to_string().contains("{retention}:seen"), "{again}");

    retention.accept_lost_tracking().await.unwrap();
    retention.prune_once().await.unwrap();
    assert_eq!(retention.tracked_users().await.unwrap(), 1, "the marker is no user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_a_claim_cannot_read_are_left_in_place_and_reported() {
    // Measured before the fix: a job field the script's pattern does not parse (written by a
    // newer version during a rolling upgrade) made the claim fail after it had deleted
    // expired batches: those users were in no key any more and never erased.
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let eraser = Recorder::new("profiles");
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    // User 7: queued and due, with a job of an unknown kind.
    raw(server, &["HSET", "{retention}:job", "7", "z,1700000000000,0"]);
    raw(server, &["ZADD", "{retention}:queue", "0", "7"]);
    // User 8: queued and due, a gone user.
    raw(server, &["HSET", "{retention}:job", "8", "b,1,0"]);
    raw(server, &["ZADD", "{retention}:queue", "0", "8"]);
    // Users 9 and 10 in the expired batch of a crashed pruner; 10's job is unreadable.
    raw(server, &["HSET", "{retention}:batches", "555", ",9,10,"]);
    raw(server, &["ZADD", "{retention}:lease", "1", "555"]);
    raw(server, &["HSET", "{retention}:job", "10", "o,soon,0"]);

    let report = retention.prune_once().await.unwrap();
    assert_eq!(report.erased, 2, "{report:?}");
    assert_eq!(eraser.erased(8) + eraser.erased(9), 2);
    assert_eq!(report.unreadable.len(), 2, "{report:?}");
    assert!(report.unreadable.iter().any(|e| e.contains("user 7")), "{report:?}");
    assert!(report.unreadable.iter().any(|e| e.contains("user 10")), "{report:?}");
    // Left exactly where they were.
    assert_eq!(count(server, &["ZCOUNT", "{retention}:queue", "0", "0"]), 1);
    assert_eq!(count(server, &["HEXISTS", "{retention}:job", "7"]), 1);
    assert_eq!(count(server, &["HEXISTS", "{retention}:job", "10"]), 1);
    let batch: String = redis::cmd("HGET")
        .arg("{retention}:batches")
        .arg("555")
        .query(&mut server.sync_connection())
        .unwrap();
    assert_eq!(batch, ",10,");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_erasures_larger_than_one_feed_read_reaches_every_replica_at_once() {
    // Before the fix a replica read 1000 announcements per one-second poll: a burst larger
    // than the feed's window could expire unseen, and a few thousand took seconds.
    let env = Env::redis();
    let replica = env.builder().await.build().unwrap();
    let eraser = env.builder().await.build().unwrap();
    let users: Vec<u64> = (1..=3500).collect();
    for &user in &users {
        replica.note_interaction(UserId(user)).await;
    }
    replica.flush().await.unwrap();
    assert_eq!(replica.stats().cached_users, 3500);

    for chunk in users.chunks(50) {
        let mut opt_outs = tokio::task::JoinSet::new();
        for &user in chunk {
            let eraser = eraser.clone();
            opt_outs.spawn(async move { eraser.erase_user(UserId(user)).await.unwrap() });
        }
        while let Some(outcome) = opt_outs.join_next().await {
            assert!(matches!(outcome.unwrap(), teloxide_retention::OptOutOutcome::Erased { .. }));
        }
    }
    // The feed's polls (every second) read the whole burst; reading 1000 per poll once
    // left users cached for good.
    eventually("the replica forgets every opted-out user", || async {
        replica.stats().cached_users == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_removes_the_heartbeat_and_a_dead_writer_stops_holding_back() {
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let bot = env.builder().await.heartbeat_every(Duration::from_millis(250)).build().unwrap();
    bot.note_interaction(UserId(1)).await;
    eventually("the heartbeat is there", || async {
        count(server, &["HLEN", "{retention}:writers"]) == 1
    })
    .await;
    bot.shutdown().await.unwrap();
    assert_eq!(count(server, &["HLEN", "{retention}:writers"]), 0);

    // A writer that crashed (its heartbeat stays) holds back inactivity only until
    // `writer_timeout`, after which a claim forgets it.
    // Its last beat 10 minutes ago: held back under a 1-hour timeout, forgotten under a
    // 5-minute one (margins no loaded machine eats into).
    let old = redis_time(server) - 600_000;
    raw(server, &["HSET", "{retention}:writers", "77", &format!("{old},0")]);
    let pruner = |timeout: Duration| {
        let store = env.builder();
        async move { store.await.writer_timeout(timeout).build().unwrap() }
    };
    let report = pruner(HOUR).await.prune_once().await.unwrap();
    assert!(report.inactivity_held.unwrap().contains("writer 77"));
    let report = pruner(5 * MINUTE).await.prune_once().await.unwrap();
    assert_eq!(report.inactivity_held, None);
    assert_eq!(count(server, &["HLEN", "{retention}:writers"]), 0, "the dead writer is gone");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_replica_follows_up_its_buffered_interactions_and_drops_older_ones() {
    // Before the fix: a replica cut off from Redis wrote its backlog before reading the
    // erasures announced meanwhile. An interaction it had buffered during another
    // replica's opt-out erasure led to no follow-up erasure, and one buffered before the
    // opt-out tracked the erased user again.
    let server = RedisServer::start();
    let proxy = Proxy::start(server.socket());
    let clock = ManualClock::at_unix_ms(redis_time(&server));
    let builder = |store: RedisStore| replica(store, &clock);
    let cut_off = builder(RedisStore::open(&proxy.url()).await.unwrap()).build().unwrap();
    let gate = Arc::new(Gate::default());
    let eraser = Recorder::new("profiles").gated(Arc::clone(&gate));
    let other = builder(open(&server).await).erase_with(eraser.clone()).build().unwrap();
    for user in [20, 21] {
        assert!(cut_off.note_interaction(UserId(user)).await.is_stored());
    }

    proxy.cut();
    clock.advance(Duration::from_secs(3600));
    // User 21 interacts on the cut-off replica, then opts out on the other one.
    assert!(!cut_off.note_interaction(UserId(21)).await.is_stored());
    clock.advance(Duration::from_secs(1));
    let opt_out = tokio::spawn({
        let other = other.clone();
        async move { other.erase_user(UserId(21)).await }
    });
    gate.entered.notified().await;
    gate.release.notify_one();
    opt_out.await.unwrap().unwrap();
    // User 20 opts out, and interacts on the cut-off replica while the eraser runs.
    let opt_out = tokio::spawn({
        let other = other.clone();
        async move { other.erase_user(UserId(20)).await }
    });
    gate.entered.notified().await;
    clock.advance(Duration::from_secs(1));
    assert!(!cut_off.note_interaction(UserId(20)).await.is_stored());
    clock.advance(Duration::from_secs(1));
    gate.release.notify_one();
    assert_eq!(
        opt_out.await.unwrap().unwrap(),
        teloxide_retention::OptOutOutcome::Erased { follow_up: false },
        "the store has not seen the interaction yet"
    );

    proxy.restore();
    eventually("the replica wrote its buffer", || async { cut_off.stats().buffered_users == 0 })
        .await;
    let erasure = other.status(UserId(20)).await.unwrap().erasure;
    assert_eq!(
        erasure.map(|e| e.reason),
        Some(ErasureReason::OptOut),
        "the interaction during the erasure leads to a follow-up"
    );
    let status = other.status(UserId(21)).await.unwrap();
    assert_eq!(
        (status.last_seen, status.erasure),
        (None, None),
        "the interaction from before the opt-out does not track the erased user again"
    );
}
