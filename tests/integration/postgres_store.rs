//! What only `PostgresStore` has: replicas on pools of their own sharing one namespace
//! (the advisory lock, the feed between processes), and its errors.
//! (The behavioural suites and the model test run on PostgreSQL too.)
#![cfg(feature = "postgres")]

use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{Error, ManualClock, Noted, OptOutOutcome, PostgresStore, Retention};

use crate::common::postgres::PostgresServer;
use crate::common::{DAY, T0};
use crate::support::Recorder;

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

    let server = PostgresServer::start();
    let retention = Retention::builder(PostgresStore::open(&server.url()).await.unwrap())
        .namespace("n".repeat(60).as_str())
        .inactive_after(30 * DAY)
        .without_commands()
        .build()
        .unwrap();
    let err = retention.tracked_users().await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("longer than 48 bytes"), "{err}");
}
