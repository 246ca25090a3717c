//! What only `PostgresStore` has: replicas on pools of their own sharing one namespace
//! (the advisory lock, the feed between processes), a server crash during a pass, and its
//! errors.
//! (The behavioural suites and the model test run on PostgreSQL too.)
#![cfg(feature = "postgres")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{
    BoxError, Eraser, Erasure, Error, ManualClock, Noted, OptOutOutcome, PostgresStore, Retention,
};

use crate::common::postgres::PostgresServer;
use crate::common::{DAY, T0};
use crate::support::{Recorder, eventually, prune_until_nothing_held};

async fn replica(server: &PostgresServer, clock: &ManualClock, eraser: &Recorder) -> Retention {
    // A pool of its own, as a replica in another process would have.
    Retention::builder(PostgresStore::open(&server.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .without_commands()
        .batch_size(50)
        .clock(clock.clone())
        .erase_with(eraser.clone())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_pruning_at_once_erase_each_user_exactly_once() {
    let server = PostgresServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles");
    let replicas = [
        replica(&server, &clock, &eraser).await,
        replica(&server, &clock, &eraser).await,
        replica(&server, &clock, &eraser).await,
    ];
    for user in 1..=600u64 {
        replicas[(user % 3) as usize].note_interaction(UserId(user)).await;
    }
    for r in &replicas {
        r.flush().await.unwrap();
    }
    clock.advance(31 * DAY);
    let passes = replicas.iter().map(|r| r.prune_once());
    let reports = futures_util::future::join_all(passes).await;
    let erased: u64 = reports.into_iter().map(|r| r.unwrap().erased).sum();
    assert_eq!(erased, 600);
    let counts = eraser.counts();
    assert_eq!(counts.len(), 600);
    assert!(counts.values().all(|n| *n == 1), "a user was erased twice");
    assert_eq!(replicas[0].tracked_users().await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_drops_its_cache_when_another_erases_the_user() {
    let server = PostgresServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles");
    let (a, b) = (replica(&server, &clock, &eraser).await, replica(&server, &clock, &eraser).await);
    assert_eq!(a.note_interaction(UserId(5)).await, Noted::Written);
    assert_eq!(b.erase_user(UserId(5)).await.unwrap(), OptOutOutcome::Erased { follow_up: false });
    // Without the feed, A would serve the user's next update from its cache and never
    // track them again.
    a.settle().await.unwrap();
    clock.advance(Duration::from_secs(5));
    assert_eq!(a.note_interaction(UserId(5)).await, Noted::Written);
    assert!(a.status(UserId(5)).await.unwrap().last_seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_long_namespaces_are_clear_errors() {
    let err = PostgresStore::open("mysql://bot:secret@localhost/db").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("not a PostgreSQL URL"), "{err}");
    assert!(!err.to_string().contains("secret"), "the password is not shown: {err}");

    // The longest name a namespace gets is its lease index, `"{ns}.lease_deadline_batch"`:
    // 21 bytes more than the namespace. PostgreSQL cuts longer names at 63 bytes.
    let server = PostgresServer::start();
    let store = PostgresStore::open(&server.url()).await.unwrap();
    let builder = |namespace: String| {
        Retention::builder(store.clone())
            .namespace(namespace)
            .inactive_after(30 * DAY)
            .without_commands()
    };
    for long in [43, 60] {
        let err = builder("n".repeat(long)).build().expect_err("refused at build()");
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        let message = err.to_string();
        assert!(message.contains("at most 42 bytes") && message.contains("63"), "{message}");
    }
    // At the limit every name is whole: the longest is exactly 63 bytes.
    let longest = "n".repeat(42);
    let retention = builder(longest.clone()).build().unwrap();
    assert_eq!(retention.tracked_users().await.unwrap(), 0);
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let index = format!("{longest}.lease_deadline_batch");
    assert_eq!(index.len(), 63);
    let found: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM pg_class WHERE relname = $1")
        .bind(&index)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(found, 1, "{index} is not cut");
}

/// An eraser that holds every call until `open` is called, then lets every call through;
/// it counts the successful calls per user.
#[derive(Clone)]
struct Held {
    entered: Arc<tokio::sync::Notify>,
    gate: Arc<tokio::sync::Semaphore>,
    calls: Arc<Mutex<HashMap<u64, usize>>>,
}

impl Default for Held {
    fn default() -> Self {
        Self {
            entered: Arc::default(),
            gate: Arc::new(tokio::sync::Semaphore::new(0)),
            calls: Arc::default(),
        }
    }
}

impl Held {
    fn open(&self) {
        self.gate.add_permits(tokio::sync::Semaphore::MAX_PERMITS / 2);
    }

    fn erased(&self, user: u64) -> usize {
        self.calls.lock().unwrap().get(&user).copied().unwrap_or(0)
    }
}

impl Eraser for Held {
    fn name(&self) -> &str {
        "profiles"
    }

    async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
        self.entered.notify_one();
        drop(self.gate.acquire().await?);
        *self.calls.lock().unwrap().entry(erasure.user.0).or_default() += 1;
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_restarted_during_a_pass_erases_nobody_early_and_everyone_due_after_the_lease()
{
    // Durable: a crash keeps every commit, as on a production server.
    let mut server = PostgresServer::start_durable();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Held::default();
    let lease = Duration::from_secs(60);
    let retention = Retention::builder(PostgresStore::open(&server.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .without_commands()
        .batch_size(50)
        .lease(lease)
        .store_timeout(Duration::from_secs(2))
        .clock(clock.clone())
        .erase_with(eraser.clone())
        .build()
        .unwrap();
    // 150 users gone quiet for 31 days, 50 active today.
    for user in 1..=200u64 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();
    clock.advance(31 * DAY);
    for user in 151..=200u64 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();

    // The pass claims its first batch and is inside the erasers when the server goes down;
    // the erasers finish while it is down, so the pass cannot confirm them.
    let pass = tokio::spawn({
        let retention = retention.clone();
        async move { retention.prune_once().await }
    });
    eraser.entered.notified().await;
    tokio::task::block_in_place(|| server.crash());
    eraser.open();
    let report = pass.await.unwrap();
    assert!(
        report.as_ref().map_or(true, |r| r.erased == 0),
        "nothing can be confirmed while the database is down: {report:?}"
    );
    // A new user's interaction during the outage is kept for later, not lost.
    clock.advance(Duration::from_secs(5));
    retention.note_interaction(UserId(201)).await;

    tokio::task::block_in_place(|| server.start_again());
    // Within the lease the first batch stays claimed; the rest of the inactive users go,
    // once the interaction kept during the outage is written and the writer's heartbeat no
    // longer reports it (until then inactivity is held back: the safe side, seen under
    // load, when a heartbeat came between the restart and the write).
    eventually("the interaction kept during the outage is written", || async {
        retention.flush().await.is_ok() && retention.stats().buffered_users == 0
    })
    .await;
    let erased = prune_until_nothing_held(&retention).await;
    assert_eq!(erased, 100);
    let claimed_before = (1..=150u64).filter(|u| eraser.erased(*u) > 0).count();
    assert_eq!(claimed_before, 150, "every inactive user's erasers ran once");
    let mut running = 0;
    for user in 1..=150u64 {
        let status = retention.status(UserId(user)).await.unwrap();
        assert!(status.last_seen.is_none(), "user {user} is no longer tracked");
        running += usize::from(status.erasure.is_some_and(|e| e.running));
    }
    assert_eq!(running, 50, "the batch claimed before the crash is still under its lease");

    // After the lease the batch is taken over and confirmed; no active user was erased.
    clock.advance(lease + Duration::from_secs(1));
    let report = retention.prune_once().await.unwrap();
    assert_eq!(report.erased, 50, "{report:?}");
    for user in 1..=150u64 {
        assert!(eraser.erased(user) >= 1, "user {user} was erased");
        let status = retention.status(UserId(user)).await.unwrap();
        assert!(status.erasure.is_none() && status.last_seen.is_none(), "user {user}: {status:?}");
    }
    for user in 151..=201u64 {
        assert_eq!(eraser.erased(user), 0, "active user {user} was never erased");
    }
    retention.flush().await.unwrap();
    assert_eq!(retention.tracked_users().await.unwrap(), 51);
    let last = retention.status(UserId(201)).await.unwrap().last_seen.unwrap();
    assert_eq!(last.timestamp_millis(), T0 + (31 * DAY).as_millis() as i64 + 5_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_version_1_are_migrated_and_keep_their_rows() {
    let server = PostgresServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles");
    {
        let bot = replica(&server, &clock, &eraser).await;
        bot.note_interaction(UserId(1)).await;
        bot.shutdown().await.unwrap();
    }
    // Version 1's layout: no index on the receipts' nor the feed's time.
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    sqlx::query("DROP INDEX \"retention.receipt_at\"").execute(&pool).await.unwrap();
    sqlx::query("DROP INDEX \"retention.feed_at\"").execute(&pool).await.unwrap();
    sqlx::query("DROP TABLE \"retention.probes\"").execute(&pool).await.unwrap();
    sqlx::query("UPDATE \"retention.meta\" SET value = '1' WHERE key = 'schema'")
        .execute(&pool)
        .await
        .unwrap();
    let index = "SELECT COUNT(*) FROM pg_indexes WHERE indexname IN ('retention.receipt_at', \
                 'retention.feed_at')";
    let count: i64 = sqlx::query_scalar(index).fetch_one(&pool).await.unwrap();
    assert_eq!(count, 0);

    let bot = replica(&server, &clock, &eraser).await;
    assert_eq!(bot.tracked_users().await.unwrap(), 1, "the rows are kept");
    let version: String =
        sqlx::query_scalar("SELECT value FROM \"retention.meta\" WHERE key = 'schema'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(version, "3");
    let count: i64 = sqlx::query_scalar(index).fetch_one(&pool).await.unwrap();
    assert_eq!(count, 2);
    let probes: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM \"retention.probes\"")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(probes, 0, "version 3's table is there");
}

use crate::common::FastClock;

/// PostgreSQL's clock decides (invariant 11 and the claims): a bot on a host 25 minutes
/// fast stores interactions and adopted times at the server's now, never in the future, and
/// its pass erases nobody early (a user idle 30 days less 10 minutes under a 30-day
/// threshold stays).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fast_host_clock_neither_stores_a_future_time_nor_erases_early() {
    use teloxide_retention::Clock;
    let server = PostgresServer::start();
    let open = || async { PostgresStore::open(&server.url()).await.unwrap() };
    let real = Retention::builder(open().await)
        .inactive_after(30 * DAY)
        .without_commands()
        .build()
        .unwrap();
    crate::common::adopt_nearly_inactive(&real).await;

    let fast = Retention::builder(open().await)
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(FastClock)
        .build()
        .unwrap();
    assert!(fast.note_interaction(UserId(7)).await.is_stored());
    let ahead = chrono::DateTime::from_timestamp_millis(FastClock.now_ms());
    fast.adopt([(UserId(8), ahead)], &teloxide_retention::Adoption::new()).await.unwrap();
    let pass = fast.prune_once().await.unwrap();
    assert_eq!(pass.erased, 0, "a claim on the fast host clock erased a user early");
    let real_now = teloxide_retention::SystemClock.now_ms();
    for user in [7, 8] {
        let seen = real.status(UserId(user)).await.unwrap().last_seen.expect("tracked");
        assert!(
            seen.timestamp_millis() <= real_now + 5_000,
            "user {user} stored at {seen}, {} s after the server's now",
            (seen.timestamp_millis() - real_now) / 1000
        );
    }
    assert!(real.status(UserId(42)).await.unwrap().last_seen.is_some(), "still tracked");
}
