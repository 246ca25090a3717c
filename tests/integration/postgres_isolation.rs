//! `PostgresStore` on a database whose default isolation is not READ COMMITTED (README
//! guarantee 15): each write transaction states the isolation it needs, so that what it
//! reads after the namespace's advisory lock is granted includes every write the lock
//! ordered before it. Under a REPEATABLE READ or SERIALIZABLE default, a transaction's
//! snapshot was taken by the lock's own statement, before the lock was granted: a claim
//! read users as they were before the writes it had waited for, and failed to serialize
//! when it removed them.
#![cfg(feature = "postgres")]

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use teloxide::types::UserId;
use teloxide_retention::{ManualClock, PostgresStore, Retention};

use crate::common::postgres::PostgresServer;
use crate::common::{DAY, T0};
use crate::support::{Recorder, eventually};

/// The advisory lock of namespace `ns`, as `lock_of` in `src/store/sql/mod.rs` numbers it
/// (FNV-1a of the name). A wrong number fails the test: no pruner would wait for it.
pub(crate) fn namespace_lock(ns: &str) -> i64 {
    let hash = ns.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash as i64
}

/// A pool whose sessions carry `name` (`pg_stat_activity.application_name`).
async fn pool_named(server: &PostgresServer, name: &str) -> PgPool {
    let options: PgConnectOptions = server.url().parse().unwrap();
    PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.application_name(name))
        .await
        .unwrap()
}

/// A replica on a pool of its own named `name`. Long store timeouts: the test holds the
/// namespace's lock while passes wait for it. Rare heartbeats: nothing but the passes
/// queues for the lock while the test watches who waits.
async fn replica(
    server: &PostgresServer,
    name: &str,
    clock: &ManualClock,
    eraser: &Recorder,
) -> Retention {
    Retention::builder(PostgresStore::from_pool(pool_named(server, name).await))
        .inactive_after(30 * DAY)
        .without_commands()
        .batch_size(50)
        .store_timeout(Duration::from_secs(60))
        .heartbeat_every(Duration::from_secs(3600))
        .writer_timeout(Duration::from_secs(4 * 3600))
        .clock(clock.clone())
        .erase_with(eraser.clone())
        .build()
        .unwrap()
}

/// Sessions of pools named `prefix...` waiting for an advisory lock.
async fn waiting(admin: &PgPool, prefix: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid \
         WHERE l.locktype = 'advisory' AND NOT l.granted AND a.application_name LIKE $1",
    )
    .bind(format!("{prefix}%"))
    .fetch_one(admin)
    .await
    .unwrap()
}

/// Runs a pass on each pruner at once and returns every report, failures included.
async fn passes(pruners: &[Retention]) -> Vec<teloxide_retention::Result<u64>> {
    let passes = pruners.iter().map(|p| {
        let p = p.clone();
        tokio::spawn(async move { p.prune_once().await.map(|r| r.erased) })
    });
    futures_util::future::join_all(passes).await.into_iter().map(Result::unwrap).collect()
}

/// Three pruners (replicas on pools of their own) on a database whose sessions default to
/// `level`, while users due for inactivity come back: first deterministically (their
/// interactions commit while every pruner's claim waits for the lock), then concurrently
/// with the passes.
async fn pruners_under_default_isolation(level: &str) {
    let server = PostgresServer::start();
    let admin = PgPool::connect(&server.url()).await.unwrap();
    let sql = format!("ALTER DATABASE postgres SET default_transaction_isolation = '{level}'");
    sqlx::query(&sql).execute(&admin).await.unwrap();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles");
    // New sessions take the database's default: every pool opened from here.
    let writer = replica(&server, "writer", &clock, &eraser).await;
    let mut pruners = Vec::new();
    for i in 1..=3 {
        pruners.push(replica(&server, &format!("pruner-{i}"), &clock, &eraser).await);
    }
    let probe = pool_named(&server, "probe").await;
    let default: String =
        sqlx::query_scalar("SHOW default_transaction_isolation").fetch_one(&probe).await.unwrap();
    assert_eq!(default, level, "the stores' sessions run under the default being tested");

    for user in 1..=600u64 {
        writer.note_interaction(UserId(user)).await;
    }
    writer.flush().await.unwrap();
    for pruner in &pruners {
        // Each replica checks its tables now (under the lock), not inside the pass below.
        pruner.tracked_users().await.unwrap();
    }
    clock.advance(31 * DAY);
    let now = T0 + (31 * DAY).as_millis() as i64;

    // 1. The test holds the namespace's lock while every pruner's first claim queues for
    // it, then writes the interactions of every third user under it (as another replica's
    // group commit would) and commits. Each claim that was waiting must see them.
    let came_back: Vec<u64> = (3..=600u64).step_by(3).collect();
    let mut holder = admin.begin().await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(namespace_lock("retention"))
        .execute(&mut *holder)
        .await
        .unwrap();
    let running = tokio::spawn({
        let pruners = pruners.clone();
        async move { passes(&pruners).await }
    });
    eventually("every pruner's claim waits for the namespace's lock", || async {
        waiting(&admin, "pruner-").await == 3
    })
    .await;
    let values: Vec<String> = came_back.iter().map(|u| format!("({u}, {now})")).collect();
    let sql = format!(
        "INSERT INTO \"retention.seen\" (uid, at) VALUES {} ON CONFLICT (uid) DO UPDATE \
         SET at = excluded.at WHERE excluded.at > \"retention.seen\".at",
        values.join(", ")
    );
    sqlx::query(&sql).execute(&mut *holder).await.unwrap();
    holder.commit().await.unwrap();
    let reports = running.await.unwrap();
    assert!(reports.iter().all(Result::is_ok), "no pass fails: {reports:?}");
    let erased: u64 = reports.into_iter().map(Result::unwrap).sum();
    assert_eq!(erased, 400, "every due user who did not come back is erased");
    for user in 1..=600u64 {
        let expected = usize::from(user % 3 != 0);
        assert_eq!(eraser.erased(user), expected, "user {user}");
    }
    assert_eq!(writer.tracked_users().await.unwrap(), 200);

    // 2. The same while the interactions are written concurrently with the passes: 600
    // more users, every third of whom comes back while three passes run.
    for user in 601..=1200u64 {
        writer.note_interaction(UserId(user)).await;
    }
    writer.flush().await.unwrap();
    clock.advance(31 * DAY);
    let returning: Vec<u64> = (603..=1200u64).step_by(3).collect();
    let running = tokio::spawn({
        let pruners = pruners.clone();
        async move { passes(&pruners).await }
    });
    for user in &returning {
        writer.note_interaction(UserId(*user)).await;
    }
    writer.flush().await.unwrap();
    let reports = running.await.unwrap();
    assert!(reports.iter().all(Result::is_ok), "no pass fails: {reports:?}");
    // Passes after the writes: whoever is still due (none, unless a pass ended before
    // the writes began) goes.
    let reports = passes(&pruners).await;
    assert!(reports.iter().all(Result::is_ok), "no pass fails: {reports:?}");
    for user in 1..=1200u64 {
        let erased = eraser.erased(user);
        if returning.contains(&user) {
            // Erased only if claimed before their interaction was written; tracked again
            // by it either way.
            assert!(erased <= 1, "user {user} was erased {erased} times");
            let status = writer.status(UserId(user)).await.unwrap();
            assert!(status.last_seen.is_some(), "returning user {user} is tracked");
        } else {
            assert_eq!(erased, 1, "due user {user} is erased once");
        }
    }
    assert_eq!(writer.tracked_users().await.unwrap(), returning.len() as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruners_under_a_repeatable_read_default_erase_every_due_user_and_nobody_who_came_back() {
    pruners_under_default_isolation("repeatable read").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pruners_under_a_serializable_default_erase_every_due_user_and_nobody_who_came_back() {
    pruners_under_default_isolation("serializable").await;
}
