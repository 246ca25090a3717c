//! One `Retention` driven from several tokio runtimes in turn, as test harnesses that build
//! a runtime per dispatch (`teloxide_tests`), per-test runtimes or a runtime rebuilt after a
//! panic do: the background writer and heartbeat must follow the caller.

use std::time::{Duration, Instant};

use teloxide::types::UserId;
use teloxide_retention::{GoneReason, Noted, Retention};

use crate::common::Env;

const STORE_TIMEOUT: Duration = Duration::from_secs(2);
/// `store_timeout`, plus 1.5 s for scheduling on a loaded 2-core machine: still below twice
/// the store timeout, the wait of the bug these tests pin.
const BOUND: Duration = Duration::from_millis(STORE_TIMEOUT.as_millis() as u64 + 1_500);

fn runtime(multi_thread: bool) -> tokio::runtime::Runtime {
    let mut builder = if multi_thread {
        tokio::runtime::Builder::new_multi_thread()
    } else {
        tokio::runtime::Builder::new_current_thread()
    };
    builder.enable_all().build().unwrap()
}

/// Interactions user `user` and checks that the call was written within the bound.
async fn note_quickly(retention: &Retention, user: u64) {
    let started = Instant::now();
    let noted = retention.note_interaction(UserId(user)).await;
    let took = started.elapsed();
    assert_eq!(noted, Noted::Written, "user {user}");
    assert!(took <= BOUND, "note_interaction of user {user} waited {took:?}");
}

/// Four runtimes one after the other, each dropped before the next starts (the first one
/// of `first_multi_thread`'s kind); with `idle_runtime`, the fourth is kept alive but no
/// longer driven while a fifth is used.
fn survives_runtimes(env: &Env, first_multi_thread: bool, idle_runtime: bool) {
    let first = runtime(first_multi_thread);
    let retention = first.block_on(async {
        let retention = env.builder().await.store_timeout(STORE_TIMEOUT).build().unwrap();
        note_quickly(&retention, 1).await;
        retention
    });
    drop(first);

    for round in 2..=3 {
        let next = runtime(false);
        next.block_on(async {
            // Measured before the fix: the first call on a new runtime waited twice the
            // store timeout and the user stayed in memory, never written.
            note_quickly(&retention, round).await;
            let status = retention.status(UserId(round)).await.unwrap();
            assert!(status.last_seen.is_some(), "user {round} is in the store");
            // A block and an unblock need the writer too.
            assert!(retention.mark_gone(UserId(round), GoneReason::Blocked).await.unwrap());
        });
        drop(next);
    }

    // A single-threaded runtime that stays alive runs its tasks only while it is driven:
    // the crate's tasks move to the caller's. (A Redis connection made on it stays there:
    // the README asks to drop such a runtime, so this part runs on the memory store.)
    let idle = runtime(false);
    let idle_user = if idle_runtime { 10 } else { 4 };
    idle.block_on(async { note_quickly(&retention, idle_user).await });
    if !idle_runtime {
        drop(idle);
    }
    let last = runtime(false);
    last.block_on(async {
        note_quickly(&retention, 11).await;
        assert_eq!(retention.stats().buffered_users, 0);
        let tracked = retention.tracked_users().await.unwrap();
        assert_eq!(tracked, 5, "users 1, 2, 3, {idle_user} and 11");
        let started = Instant::now();
        retention.shutdown().await.expect("shutdown from another runtime");
        assert!(started.elapsed() <= BOUND * 2, "shutdown took {:?}", started.elapsed());
    });
}

#[test]
fn memory_survives_the_runtime_that_started_its_tasks() {
    survives_runtimes(&Env::memory(), false, true);
}

#[test]
fn redis_survives_the_runtime_that_started_its_tasks() {
    survives_runtimes(&Env::redis(), false, false);
}

#[test]
fn redis_survives_a_multi_threaded_runtime_that_started_its_tasks() {
    survives_runtimes(&Env::redis(), true, false);
}

#[test]
fn the_heartbeat_is_removed_by_a_shutdown_on_another_runtime() {
    let env = Env::redis();
    let first = runtime(false);
    let retention = first.block_on(async {
        let retention = env.builder().await.store_timeout(STORE_TIMEOUT).build().unwrap();
        note_quickly(&retention, 1).await;
        retention
    });
    let mut conn = env.redis_connection();
    let writers: usize = redis::cmd("HLEN").arg("{retention}:writers").query(&mut conn).unwrap();
    assert_eq!(writers, 1, "the heartbeat was written");
    drop(first);
    runtime(false).block_on(async { retention.shutdown().await.unwrap() });
    let writers: usize = redis::cmd("HLEN").arg("{retention}:writers").query(&mut conn).unwrap();
    assert_eq!(writers, 0, "a clean shutdown leaves no heartbeat");
}

#[test]
fn nothing_starts_again_after_a_shutdown() {
    let env = Env::redis();
    let rt = runtime(false);
    rt.block_on(async {
        let retention = env.builder().await.store_timeout(STORE_TIMEOUT).build().unwrap();
        note_quickly(&retention, 1).await;
        retention.shutdown().await.unwrap();
        // Recorded after the shutdown: not written (said at once), no heartbeat comes back.
        let started = Instant::now();
        assert_eq!(retention.note_interaction(UserId(2)).await, Noted::Dropped);
        assert!(started.elapsed() < STORE_TIMEOUT, "took {:?}", started.elapsed());
        let mut conn = env.redis_connection();
        let writers: usize =
            redis::cmd("HLEN").arg("{retention}:writers").query(&mut conn).unwrap();
        assert_eq!(writers, 0, "no heartbeat after the shutdown");
        assert!(retention.status(UserId(2)).await.unwrap().last_seen.is_none());
    });
}
