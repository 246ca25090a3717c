//! Shard counts on one Redis server: the count recorded with the namespace, the clear error
//! for a store opened with another, and `RedisStore::reshard` moving every user (also from
//! the one-shard layout of earlier versions), refusing while bots run, and resumable.

use std::time::Duration;

use teloxide::dispatching::UpdateHandler;
use teloxide::types::UserId;
use teloxide_retention::{
    BoxError, ErasureReason, Error, GonePolicy, GoneReason, ManualClock, Noted, RedisStore,
    Retention, UserStatus,
};

use crate::common::{DAY, RedisServer, T0};
use crate::support::Recorder;

async fn bot(server: &RedisServer, shards: usize, clock: &ManualClock) -> Retention {
    bot_erasing(server, shards, clock, Recorder::new("profiles")).await
}

async fn bot_erasing(
    server: &RedisServer,
    shards: usize,
    clock: &ManualClock,
    eraser: Recorder,
) -> Retention {
    let store = RedisStore::open(&server.url()).await.unwrap().with_shards(shards).unwrap();
    Retention::builder(store)
        .namespace("shop")
        .inactive_after(30 * DAY)
        .gone_policy(GonePolicy::EraseAfter(7 * DAY))
        .without_commands()
        .clock(clock.clone())
        .erase_with(eraser)
        .build()
        .unwrap()
}

/// A bot of the namespace "shop" on the store at `url`, opened with the default shard
/// count, without erasers or a gone policy.
async fn plain_bot(url: &str, clock: &ManualClock) -> Retention {
    Retention::builder(RedisStore::open(url).await.unwrap())
        .namespace("shop")
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(clock.clone())
        .build()
        .unwrap()
}

fn keys(server: &RedisServer) -> Vec<String> {
    let mut keys: Vec<String> =
        redis::cmd("KEYS").arg("*").query(&mut server.sync_connection()).unwrap();
    keys.sort();
    keys
}

/// Users 1..=100 seen at different times, 7 marked gone (a scheduled erasure), 8 opted out
/// with a failing eraser (a retry with a failed attempt), on a namespace of `shards`.
async fn seed(server: &RedisServer, shards: usize, clock: &ManualClock) -> Vec<UserStatus> {
    let failing = Recorder::new("profiles").failing_first(1);
    let bot = bot_erasing(server, shards, clock, failing).await;
    for user in 1..=100 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
        clock.advance(Duration::from_secs(3600));
    }
    assert!(bot.mark_gone(UserId(7), GoneReason::Blocked).await.unwrap());
    bot.erase_user(UserId(8)).await.unwrap();
    let statuses = statuses(&bot).await;
    assert_eq!(statuses[7].erasure.as_ref().unwrap().reason, ErasureReason::OptOut);
    assert_eq!(statuses[7].erasure.as_ref().unwrap().failed_attempts, 1);
    bot.shutdown().await.unwrap();
    statuses
}

async fn statuses(bot: &Retention) -> Vec<UserStatus> {
    let mut all = Vec::new();
    for user in 1..=100 {
        all.push(bot.status(UserId(user)).await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_opened_with_another_shard_count_refuses_and_writes_nothing() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let one = bot(&server, 1, &clock).await;
    one.note_interaction(UserId(1)).await;

    let four = bot(&server, 4, &clock).await;
    // At start, typed, naming both counts.
    let err = four.check_store().await.unwrap_err();
    assert!(
        matches!(&err, Error::ShardCount { namespace, recorded: 1, opened: 4 } if namespace == "shop"),
        "{err:?}"
    );
    let err = four.status(UserId(1)).await.unwrap_err();
    let text = err.to_string();
    assert!(err.is_config(), "{err:?}");
    assert!(text.contains("namespace \"shop\" has 1 shards"), "{text}");
    assert!(text.contains("RedisStore::with_shards(1)"), "{text}");
    assert!(text.contains("RedisStore::reshard(\"shop\", 4)"), "{text}");
    assert!(four.prune_once().await.unwrap_err().is_config());
    assert!(four.preview(10).await.unwrap_err().is_config());
    // An interaction is never written into a shard of the wrong layout: it goes into the
    // namespace's own, where its pruners see it.
    assert_eq!(four.note_interaction(UserId(2)).await, Noted::Written);
    four.flush().await.unwrap();
    // Every key is the one-shard layout's (the first bot's own heartbeat may come and go).
    let keys = keys(&server);
    assert!(keys.iter().all(|k| k.starts_with("{shop}:")), "{keys:?}");
    assert!(!keys.contains(&"{shop}:queue".to_owned()), "{keys:?}");
    assert_eq!(one.tracked_users().await.unwrap(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_moves_every_user_and_scheduled_erasure() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let seeded = seed(&server, 1, &clock).await;
    let store = RedisStore::open(&server.url()).await.unwrap();

    // 1 -> 4 -> 3 shards; after each move every status is as it was.
    for (from, to) in [(1, 4), (4, 3)] {
        let moved = store.reshard("shop", to).await.unwrap();
        assert_eq!((moved.from, moved.to), (from, to));
        assert_eq!(moved.users, 99, "the opted-out user was erased from `seen`");
        assert_eq!(moved.scheduled, 2, "the gone mark and the opt-out retry");
        let bot = bot(&server, to, &clock).await;
        assert_eq!(statuses(&bot).await, seeded, "after {from} -> {to}");
        assert_eq!(bot.tracked_users().await.unwrap(), 99);
        bot.shutdown().await.unwrap();
    }
    // The old layout's keys are gone: the namespace's home and the old shards keep only
    // their `meta`, which fences them (`moved`).
    let left = keys(&server);
    assert!(!left.contains(&"{shop}:seen".to_owned()), "{left:?}");
    assert!(!left.iter().any(|k| k.contains("of4.") && !k.ends_with(":meta")), "{left:?}");
    let mut conn = server.sync_connection();
    for old in left.iter().filter(|k| k.contains("of4.") || k.as_str() == "{shop}:meta") {
        let moved: Option<usize> =
            redis::cmd("HGET").arg(old).arg("moved").query(&mut conn).unwrap();
        assert_eq!(moved, Some(if old.contains("of4.") { 3 } else { 4 }), "{old}");
    }
    assert_eq!(left.iter().filter(|k| k.ends_with(":seen")).count(), 3, "{left:?}");
    assert!(bot(&server, 1, &clock).await.status(UserId(1)).await.unwrap_err().is_config());

    // Running it again with the same count does nothing.
    let again = store.reshard("shop", 3).await.unwrap();
    assert_eq!((again.from, again.to, again.users), (3, 3, 0));

    // The pruner erases on the new layout: the retry now, the gone mark after its grace,
    // the inactive users once due.
    let eraser = Recorder::new("profiles");
    let bot = bot_erasing(&server, 3, &clock, eraser.clone()).await;
    clock.advance(DAY);
    assert_eq!(bot.prune_once().await.unwrap().erased, 1);
    assert_eq!(eraser.reasons(8), [ErasureReason::OptOut]);
    clock.advance(31 * DAY);
    let report = bot.prune_once().await.unwrap();
    assert_eq!(report.erased, 99, "{report:?}");
    assert_eq!(eraser.reasons(7), [ErasureReason::Blocked]);
    assert_eq!(bot.tracked_users().await.unwrap(), 0);
}

/// 2,000 users on one shard, a process that checked that layout and has sent no heartbeat
/// yet (the race that no heartbeat check can close), and a reshard to 4 it does not see.
async fn missed_a_reshard(server: &RedisServer, clock: &ManualClock) -> Retention {
    seed_2000(server, clock).await;
    let stale = plain_bot(&server.url(), clock).await;
    assert!(stale.status(UserId(1)).await.unwrap().last_seen.is_some());
    let store = RedisStore::open(&server.url()).await.unwrap();
    assert_eq!(store.reshard("shop", 4).await.unwrap().users, 2000);
    stale
}

/// A process that missed a reshard reads the erasure feed of the layout the namespace has
/// now, where its interactions go: another replica's opt-out drops the user from its cache,
/// and the user's next interaction is written (a user again), not served from a cache the
/// erasure made stale. (Before the fix its feed reads were refused: it kept serving the user
/// from its cache, so a user who came back after opting out stayed untracked while the
/// bot's handler could write their data again.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_missed_a_reshard_reads_the_feed_of_the_new_layout() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let stale = missed_a_reshard(&server, &clock).await;

    clock.advance(Duration::from_secs(60));
    assert_eq!(stale.note_interaction(UserId(5)).await, Noted::Written);
    assert_eq!(stale.stats().cached_users, 1);

    let current = bot(&server, 4, &clock).await;
    current.erase_user(UserId(5)).await.unwrap();
    crate::support::eventually("the stale process drops the opted-out user", || async {
        stale.stats().cached_users == 0
    })
    .await;
    clock.advance(Duration::from_secs(5));
    assert_eq!(stale.note_interaction(UserId(5)).await, Noted::Written);
    stale.flush().await.unwrap();
    assert!(current.status(UserId(5)).await.unwrap().last_seen.is_some(), "tracked again");
    tokio::time::timeout(Duration::from_secs(60), stale.shutdown())
        .await
        .expect("the stale process shuts down")
        .unwrap();
}

/// A notice an adoption gave (a rule in each shard's `meta`) goes with a reshard: the new
/// layout's pruner holds the quiet users until its date, then erases them. Fails if
/// `reshard` leaves the notices behind (every user erased at once on the new layout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_keeps_the_notices_of_adoptions() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let two = bot(&server, 2, &clock).await;
    let old = chrono::DateTime::from_timestamp_millis(T0 - 200 * 86_400_000);
    let users: Vec<_> = (1..=50).map(|u| (UserId(u), old)).collect();
    let until = chrono::DateTime::from_timestamp_millis(T0 + 90 * 86_400_000).unwrap();
    let notice = teloxide_retention::Adoption::new().not_before(until);
    assert_eq!(two.adopt(users, &notice).await.unwrap().newly_tracked, 50);
    two.shutdown().await.unwrap();

    let store = RedisStore::open(&server.url()).await.unwrap();
    assert_eq!(store.reshard("shop", 3).await.unwrap().users, 50);
    let eraser = Recorder::new("profiles");
    let three = bot_erasing(&server, 3, &clock, eraser.clone()).await;
    clock.advance(60 * DAY);
    assert_eq!(three.preview(10).await.unwrap().inactive, 0, "held on the new layout");
    assert_eq!(three.prune_once().await.unwrap().erased, 0);
    clock.set_unix_ms(T0 + 91 * 86_400_000);
    let mut erased = 0;
    loop {
        let pass = three.prune_once().await.unwrap();
        erased += pass.erased;
        if pass.erased == 0 {
            break;
        }
    }
    assert_eq!(erased, 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_namespace_of_an_earlier_version_is_sharded_by_reshard() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let seeded = seed(&server, 1, &clock).await;
    // Versions before shard counts were recorded left no count.
    let mut conn = server.sync_connection();
    redis::cmd("HDEL").arg("{shop}:meta").arg("shards").query::<()>(&mut conn).unwrap();

    let err = bot(&server, 4, &clock).await.status(UserId(1)).await.unwrap_err();
    assert!(
        matches!(&err, Error::ShardCount { namespace, recorded: 1, opened: 4 } if namespace == "shop"),
        "{err:?}"
    );
    // With one shard, as before, it opens (and records the count).
    assert_eq!(statuses(&bot(&server, 1, &clock).await).await, seeded);

    let store = RedisStore::open(&server.url()).await.unwrap();
    assert_eq!(store.reshard("shop", 4).await.unwrap().users, 99);
    assert_eq!(statuses(&bot(&server, 4, &clock).await).await, seeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_refuses_while_a_bot_runs_and_an_interrupted_one_is_finished_by_rerunning() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let seeded = seed(&server, 1, &clock).await;
    let store = RedisStore::open(&server.url()).await.unwrap();

    // A running bot sends heartbeats: resharding under it could lose its writes.
    let running = bot(&server, 1, &clock).await;
    running.note_interaction(UserId(500)).await;
    crate::support::eventually("a heartbeat", || async {
        let beats: usize =
            redis::cmd("HLEN").arg("{shop}:writers").query(&mut server.sync_connection()).unwrap();
        beats > 0
    })
    .await;
    let err = store.reshard("shop", 4).await.unwrap_err();
    assert!(err.to_string().contains("stop every bot before resharding"), "{err}");
    running.shutdown().await.unwrap();

    // Invalid counts and namespaces.
    assert!(store.reshard("shop", 0).await.unwrap_err().is_config());
    assert!(store.reshard("shop", 5000).await.unwrap_err().is_config());
    assert!(store.reshard("sh{op}", 4).await.unwrap_err().is_config());
    let err = RedisStore::open(&server.url()).await.unwrap().with_shards(0).unwrap_err();
    assert!(err.is_config(), "{err:?}");

    // A move cut off after it began: bots refuse the namespace, another target count is
    // refused, and running it again finishes it.
    let mut conn = server.sync_connection();
    redis::cmd("HSET")
        .arg("{shop}:meta")
        .arg("resharding")
        .arg("1 4")
        .query::<()>(&mut conn)
        .unwrap();
    let err = bot(&server, 1, &clock).await.status(UserId(1)).await.unwrap_err();
    assert!(err.to_string().contains("is being resharded from 1 to 4 shards"), "{err}");
    let err = store.reshard("shop", 6).await.unwrap_err();
    assert!(err.to_string().contains("RedisStore::reshard(\"shop\", 4)"), "{err}");
    let moved = store.reshard("shop", 4).await.unwrap();
    assert_eq!(moved.users, 100, "99 seeded and the running bot's user");
    let bot = bot(&server, 4, &clock).await;
    assert_eq!(statuses(&bot).await, seeded);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_keeps_every_erasure_receipt() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let key = || teloxide_retention::ReceiptKey::new([9u8; 32]).unwrap();
    let receipting = |shards: usize| {
        let (url, clock) = (server.url(), clock.clone());
        async move {
            let store = RedisStore::open(&url).await.unwrap().with_shards(shards).unwrap();
            Retention::builder(store)
                .namespace("shop")
                .inactive_after(30 * DAY)
                .without_commands()
                .clock(clock)
                .erase_with(Recorder::new("profiles"))
                .receipts(key(), 365 * DAY)
                .build()
                .unwrap()
        }
    };
    let bot = receipting(1).await;
    for user in 1..=30 {
        bot.erase_user(UserId(user)).await.unwrap();
        clock.advance(Duration::from_secs(60));
    }
    bot.shutdown().await.unwrap();
    let store = RedisStore::open(&server.url()).await.unwrap();
    store.reshard("shop", 4).await.unwrap();
    store.reshard("shop", 3).await.unwrap();

    let bot = receipting(3).await;
    for user in 1..=30 {
        let found = bot.receipt(UserId(user)).await.unwrap();
        assert_eq!(found.len(), 1, "user {user}: {found:?}");
        assert_eq!(found[0].erased_at.timestamp_millis(), T0 + (user as i64 - 1) * 60_000);
    }
    let left = keys(&server);
    let streams: Vec<_> = left.iter().filter(|k| k.ends_with(":receipts")).collect();
    assert!(streams.iter().all(|k| k.contains("of3.")), "{streams:?}");
    let mut conn = server.sync_connection();
    for stream in streams {
        let ttl: i64 = redis::cmd("PTTL").arg(stream).query(&mut conn).unwrap();
        assert!(ttl > 300 * DAY.as_millis() as i64, "{stream} expires in {ttl} ms");
    }
}

/// Seeds users 1..=2000, all seen at `T0`, in the one-shard layout, by a bot that then
/// shuts down cleanly (no heartbeat left).
async fn seed_2000(server: &RedisServer, clock: &ManualClock) {
    let seeder = bot(server, 1, clock).await;
    for user in 1..=2000 {
        seeder.note_interaction(UserId(user)).await;
    }
    seeder.flush().await.unwrap();
    seeder.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reshard_refuses_while_a_bot_that_has_not_written_yet_runs() {
    // Measured before the fix: a bot that had started (wrapped its handler, run a pass) but
    // recorded no interaction had no heartbeat, so `reshard` 1 -> 4 went ahead; its interactions
    // 4 ms later landed in the old layout and the 4-shard pruner erased all 2,000 users
    // 22.9 s after they interacted.
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    seed_2000(&server, &clock).await;
    let idle = bot(&server, 1, &clock).await;
    let tree: UpdateHandler<BoxError> = dptree::entry().endpoint(|| async { Ok(()) });
    let _handler = idle.wrap(tree);
    idle.prune_once().await.unwrap();
    let store = RedisStore::open(&server.url()).await.unwrap();
    crate::support::eventually("the idle bot's heartbeat is in Redis", || async {
        let writers: usize =
            redis::cmd("HLEN").arg("{shop}:writers").query(&mut server.sync_connection()).unwrap();
        writers == 1
    })
    .await;
    let err = store.reshard("shop", 4).await.unwrap_err();
    assert!(matches!(err, Error::Unsafe(_)), "{err:?}");
    assert!(err.to_string().contains("heartbeat"), "{err}");
    // Nothing moved, nothing fenced: the bot goes on writing where its pruner reads.
    assert_eq!(idle.note_interaction(UserId(1)).await, Noted::Written);
    let moved: Option<String> = redis::cmd("HGET")
        .arg("{shop}:meta")
        .arg("moved")
        .query(&mut server.sync_connection())
        .unwrap();
    assert_eq!(moved, None, "a refused resharding lifts its fence");
    idle.shutdown().await.unwrap();
}

/// A process that records interactions with `note_interaction` alone (a webhook handler of
/// another framework, a worker: no handler tree wrapped, so no heartbeat before its first
/// write), started before a reshard it was not seen by: its interactions are refused by the
/// old layout's fence and written into the layout the namespace has now, each to its user's
/// shard, so the new layout's pruner sees them at once; its `shutdown` returns. (Before the
/// fix they stayed buffered: the new pruner erased the 2,000 users 23 s after they
/// interacted, and `shutdown` timed out.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_missed_a_reshard_writes_into_the_new_layout() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let stale = missed_a_reshard(&server, &clock).await;

    // Past the threshold of the seeded times, the users interact through the stale process.
    clock.advance(31 * DAY);
    for user in 1..=2000 {
        let noted = stale.note_interaction(UserId(user)).await;
        assert!(noted.is_stored(), "user {user}: {noted:?}");
    }
    stale.flush().await.unwrap();
    let old: bool =
        redis::cmd("EXISTS").arg("{shop}:seen").query(&mut server.sync_connection()).unwrap();
    assert!(!old, "nothing landed in the old layout");

    // A pruner on the new layout, at once: nobody who just interacted is erased.
    let pruner = bot(&server, 4, &clock).await;
    let pass = pruner.prune_once().await.unwrap();
    assert_eq!(pass.erased, 0, "{pass:?}");
    assert_eq!(pruner.tracked_users().await.unwrap(), 2000);
    let status = pruner.status(UserId(1999)).await.unwrap();
    assert_eq!(status.last_seen.unwrap().timestamp_millis(), T0 + 31 * 86_400_000);
    tokio::time::timeout(Duration::from_secs(60), stale.shutdown())
        .await
        .expect("the stale process shuts down")
        .unwrap();
}

/// A write the layout fence refuses writes nothing, and leaves `seen` exactly as it was:
/// interactions go as a transaction (the fence's guard, a plain `ZADD GT`, the undoing),
/// and the guard sets `seen` aside for the moment of the refused `ZADD`. Fails if the guard
/// lets the `ZADD` through (user 4 and user 1's new time would land in the fenced layout) or
/// does not put `seen` back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_the_fence_refuses_leaves_seen_as_it_was() {
    let server = RedisServer::start();
    refused_write_leaves_seen_as_it_was(&server, &server.url(), true).await;
}

/// The same for a connection whose user may not run `RENAME`: the guard could not set
/// `seen` aside, so a probe turns the transaction off and the interactions script writes.
/// Fails if the probe lets the transaction run (the `ZADD` would land, NOPERM stopping the
/// guard halfway).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_the_guard_cannot_work_for_writes_through_the_script_and_is_fenced_alike() {
    let server = RedisServer::start();
    let url = user_without(&server, "rename");
    refused_write_leaves_seen_as_it_was(&server, &url, false).await;
}

/// The same for a user who may not run `MULTI`: the probe's commands run one by one on its
/// stand-in keys, and the interactions script writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_without_transactions_writes_through_the_script_and_is_fenced_alike() {
    let server = RedisServer::start();
    let url = user_without(&server, "multi");
    refused_write_leaves_seen_as_it_was(&server, &url, false).await;
}

/// A guard that cannot read the fence (a `meta` of another type) refuses: a guard that
/// failed there would let the transaction's `ZADD` through. Fails if the guard calls the
/// fence unprotected (user 4 lands in `seen`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fence_the_guard_cannot_read_refuses_the_write() {
    crate::common::init_tracing();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let bot = bot(&server, 1, &clock).await;
    for user in 1..=3 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }
    let mut conn = server.sync_connection();
    let meta: std::collections::HashMap<String, String> =
        redis::cmd("HGETALL").arg("{shop}:meta").query(&mut conn).unwrap();
    let () = redis::cmd("DEL").arg("{shop}:meta").query(&mut conn).unwrap();
    let () = redis::cmd("SET").arg("{shop}:meta").arg("odd").query(&mut conn).unwrap();
    clock.advance(Duration::from_secs(3600));
    assert!(!bot.note_interaction(UserId(4)).await.is_stored());
    let four: Option<f64> =
        redis::cmd("ZSCORE").arg("{shop}:seen").arg(4).query(&mut conn).unwrap();
    assert_eq!(four, None, "nothing written past an unreadable fence");
    let kind: String = redis::cmd("TYPE").arg("{shop}:seen").query(&mut conn).unwrap();
    assert_eq!(kind, "zset");

    let () = redis::cmd("DEL").arg("{shop}:meta").query(&mut conn).unwrap();
    let () = redis::cmd("HSET").arg("{shop}:meta").arg(&meta).query(&mut conn).unwrap();
    crate::support::eventually("the kept interaction is written", || async {
        bot.flush().await.is_ok() && bot.stats().buffered_users == 0
    })
    .await;
    assert!(bot.status(UserId(4)).await.unwrap().last_seen.is_some());
    bot.shutdown().await.unwrap();
}

/// The URL of a user `bot` who may run everything but `command`.
fn user_without(server: &RedisServer, command: &str) -> String {
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg("bot")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("&*")
        .arg("+@all")
        .arg(format!("-{command}"))
        .query(&mut server.sync_connection())
        .unwrap();
    format!("{}?user=bot&pass=secret", server.url())
}

/// `guarded`: whether the writes go as transactions (else only the probe's does).
async fn refused_write_leaves_seen_as_it_was(server: &RedisServer, url: &str, guarded: bool) {
    crate::common::init_tracing();
    let clock = ManualClock::at_unix_ms(T0);
    let bot = plain_bot(url, &clock).await;
    for user in 1..=3 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }
    let mut conn = server.sync_connection();
    let range = |conn: &mut redis::Connection| -> Vec<(String, f64)> {
        redis::cmd("ZRANGE")
            .arg("{shop}:seen")
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(conn)
            .unwrap()
    };
    let before = range(&mut conn);
    assert_eq!(before.len(), 3, "{before:?}");

    // A resharding under way fences the one-shard layout.
    let () =
        redis::cmd("HSET").arg("{shop}:meta").arg("resharding").arg(4).query(&mut conn).unwrap();
    clock.advance(Duration::from_secs(3600));
    let refused = bot.note_interaction(UserId(4)).await;
    assert!(!refused.is_stored(), "{refused:?}");
    assert!(!bot.note_interaction(UserId(1)).await.is_stored());
    assert_eq!(range(&mut conn), before, "nothing written, nothing lost");
    let kind: String = redis::cmd("TYPE").arg("{shop}:seen").query(&mut conn).unwrap();
    assert_eq!(kind, "zset");
    let keys = keys(server);
    assert!(!keys.iter().any(|k| k.contains("aside") || k.contains("probe")), "{keys:?}");

    // The resharding given up: the kept interactions are written.
    let () = redis::cmd("HDEL").arg("{shop}:meta").arg("resharding").query(&mut conn).unwrap();
    crate::support::eventually("the kept interactions are written", || async {
        bot.flush().await.is_ok() && bot.stats().buffered_users == 0
    })
    .await;
    let after = range(&mut conn);
    assert_eq!(after.len(), 4, "{after:?}");
    let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).unwrap();
    let transactions: u64 = stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_exec:calls=")?.split(',').next()?.parse().ok())
        .unwrap_or(0);
    if guarded {
        assert!(transactions > 1, "the writes went as transactions: {transactions}");
    } else {
        assert_eq!(transactions, 1, "the probe's alone");
    }
    let one = bot.status(UserId(1)).await.unwrap().last_seen.unwrap();
    assert_eq!(one.timestamp_millis(), T0 + 3_600_000);
    bot.shutdown().await.unwrap();
}
