//! Adoption and the audit's lookups on the SQL stores: set-based, a few statements per
//! chunk of 500 users (one statement per user and table before, under the namespace's
//! lock), the lookups without the lock, and the same results as the memory store.
#![cfg(any(feature = "sqlite", feature = "postgres"))]

use std::time::Duration;

use chrono::DateTime;
use teloxide::types::UserId;
use teloxide_retention::{Adopted, Adoption, BoxError, Erasure, Listing, UntrackedUsers, erase_fn};

use crate::common::{DAY, Env, T0};
use crate::every_store;

/// An eraser whose listing holds users `1..=n`, 500 a page.
fn listing(n: u64) -> impl teloxide_retention::Eraser {
    erase_fn("table", |_: Erasure| async { Ok::<_, BoxError>(()) }).list_with(
        move |cursor: Option<String>| async move {
            let from: u64 = cursor.map_or(Ok(1), |c| c.parse())?;
            let to = (from + 500).min(n + 1);
            let next = (to <= n).then(|| to.to_string());
            Ok::<_, BoxError>(Listing::page((from..to).map(UserId), next))
        },
    )
}

fn at(ms: i64) -> Option<DateTime<chrono::Utc>> {
    DateTime::from_timestamp_millis(ms)
}

/// Statements naming `seen`, `job` or `batch` that the server logged between two markers
/// (`log_statement = 'all'`: one line per statement run, whatever the client).
#[cfg(feature = "postgres")]
fn logged_between(server: &crate::common::postgres::PostgresServer, from: &str, to: &str) -> usize {
    let log = std::fs::read_to_string(server.dir().join("server.log")).unwrap();
    let start = log.find(from).unwrap_or_else(|| panic!("{from} is logged"));
    let end = start + log[start..].find(to).unwrap_or_else(|| panic!("{to} is logged"));
    log[start..end]
        .lines()
        .filter(|l| l.contains("LOG:") && (l.contains("statement: ") || l.contains("execute ")))
        .filter(|l| {
            ["seen", "job", "batch"].iter().any(|t| l.contains(&format!("\"retention.{t}\"")))
        })
        .count()
}

/// Counts the statements a 1,501-user adoption (4 chunks: users moved forward, kept, with
/// an erasure scheduled, new, one listed twice) and an audit of 2,000 listed users run on
/// the tables, from the server's own log. Before they were set-based: about 4 per adopted
/// user and 2 per audited one.
#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adoption_and_the_audits_lookups_run_a_few_statements_per_chunk() {
    let env = Env::postgres();
    let server = &env.postgres.as_ref().unwrap().0;
    let admin = sqlx::PgPool::connect(&server.url()).await.unwrap();
    sqlx::query("ALTER DATABASE postgres SET log_statement = 'all'").execute(&admin).await.unwrap();
    admin.close().await;
    // Sessions opened from here log every statement: the store's pool, and the markers'.
    let admin = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let retention = env.builder().await.erase_with(listing(2_000)).build().unwrap();
    let before = (1..=600u64).map(|u| (UserId(u), at(T0 - (10 * DAY).as_millis() as i64)));
    retention.adopt(before, &Adoption::new()).await.unwrap();
    for user in 501..=600u64 {
        let gone = retention.mark_gone(UserId(user), teloxide_retention::GoneReason::Blocked);
        assert!(gone.await.unwrap());
    }

    let day_ago = T0 - DAY.as_millis() as i64;
    let mut users: Vec<_> = (1..=1_500u64).map(|u| (UserId(u), at(day_ago))).collect();
    users.insert(700, (UserId(7), at(day_ago)));
    sqlx::query("SELECT 'adoption starts'").execute(&admin).await.unwrap();
    let adopted = retention.adopt(users, &Adoption::new()).await.unwrap();
    sqlx::query("SELECT 'adoption ends'").execute(&admin).await.unwrap();
    let expected = (adopted.newly_tracked, adopted.moved_forward, adopted.kept, adopted.erasing);
    assert_eq!(expected, (900, 500, 1, 100), "{adopted:?}");
    let statements = logged_between(server, "adoption starts", "adoption ends");
    assert!(statements <= 2 * 4, "{statements} statements for 4 chunks of adoption");
    assert!(statements >= 4, "the log shows the adoption's statements: {statements}");

    sqlx::query("SELECT 'audit starts'").execute(&admin).await.unwrap();
    let audit = retention.audit(UntrackedUsers::Report).await.unwrap();
    sqlx::query("SELECT 'audit ends'").execute(&admin).await.unwrap();
    let part = &audit.erasers[0];
    assert_eq!((part.listed, part.tracked, part.untracked), (2_000, 1_500, 500), "{part:?}");
    let statements = logged_between(server, "audit starts", "audit ends");
    assert_eq!(statements, 4, "one statement per page of 500 listed users");
}

/// The audit's lookups only read: they run while another process holds the namespace's
/// write lock, where every write waits (and times out at the store timeout).
/// So do the other reads the docs call lock-free: the survey's counts, the last audit's
/// summary and a replica's polling of the feed (before the fix each of them took the lock
/// and timed out).
async fn the_audit_reads_while_the_write_lock_is_held(env: Env, hold: impl AsyncFnOnce()) {
    let retention = env
        .builder()
        .await
        .erase_with(listing(1_000))
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let replica = env.builder().await.store_timeout(Duration::from_millis(500)).build().unwrap();
    let adopted = (1..=600u64).map(|u| (UserId(u), None));
    assert_eq!(retention.adopt(adopted, &Adoption::new()).await.unwrap().newly_tracked, 600);
    // The replica serves user 700 from its cache; the bot erases them (a feed entry).
    assert!(replica.note_interaction(UserId(700)).await.is_stored());
    assert_eq!(replica.stats().cached_users, 1);
    retention.erase_user(UserId(700)).await.unwrap();
    hold().await;
    let err = retention.mark_gone(UserId(5), teloxide_retention::GoneReason::Blocked).await;
    assert!(err.unwrap_err().is_unavailable(), "writes wait for the lock");
    let audit = retention.audit(UntrackedUsers::Report).await.unwrap();
    let part = &audit.erasers[0];
    assert_eq!((part.listed, part.tracked, part.untracked), (1_000, 600, 400), "{part:?}");
    assert_eq!(retention.survey().await.unwrap().tracked, 600);
    assert_eq!(retention.last_audit().await.unwrap(), None);
    crate::support::eventually("the replica reads the feed while the lock is held", || async {
        replica.stats().cached_users == 0
    })
    .await;
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audits_lookups_on_sqlite_wait_for_no_writer() {
    let env = Env::sqlite();
    let url = env.sql_url().unwrap();
    let holder = std::sync::Mutex::new(None);
    the_audit_reads_while_the_write_lock_is_held(env, async || {
        // The file exists once the store has made its tables.
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        let tx = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
        *holder.lock().unwrap() = Some(tx);
    })
    .await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audits_lookups_on_postgres_wait_for_no_writer() {
    let env = Env::postgres();
    let pool = sqlx::PgPool::connect(&env.sql_url().unwrap()).await.unwrap();
    let holder = std::sync::Mutex::new(None);
    the_audit_reads_while_the_write_lock_is_held(env, async || {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(crate::postgres_isolation::namespace_lock("retention"))
            .execute(&mut *tx)
            .await
            .unwrap();
        *holder.lock().unwrap() = Some(tx);
    })
    .await;
}

/// The same adoption on `env` and on the memory store, across chunk boundaries: users
/// tracked earlier (moved forward or kept), with a gone mark or an opt-out scheduled, in a
/// batch a killed pass left leased, unknown times (`if_new`), and users listed twice,
/// also on both sides of a chunk boundary. Returns what each side adopted and every user's
/// tracked time.
async fn adopt_everything(env: &Env) -> (Adopted, Vec<Option<i64>>) {
    let gate = std::sync::Arc::new(crate::support::Gate::default());
    let eraser = crate::support::Recorder::new("profiles").gated(gate.clone());
    let retention = env.builder().await.erase_with(eraser).build().unwrap();
    let ms = |days: i64| T0 - days * DAY.as_millis() as i64;
    // 1,001-1,010 are idle: a pass claims them and dies inside the eraser.
    let idle = (1_001..=1_010u64).map(|u| (UserId(u), at(ms(100))));
    retention.adopt(idle, &Adoption::new()).await.unwrap();
    crate::support::kill_pass_inside_eraser(&retention, &gate).await;
    let early = (1..=700u64).map(|u| (UserId(u), at(ms(10 + (u % 3) as i64))));
    retention.adopt(early, &Adoption::new()).await.unwrap();
    for user in 650..=700u64 {
        retention.mark_gone(UserId(user), teloxide_retention::GoneReason::Blocked).await.unwrap();
    }
    for user in 640..650u64 {
        retention.schedule_opt_out(UserId(user)).await.unwrap();
    }
    let mut users: Vec<_> = (1..=1_200u64)
        .map(|u| {
            let when = match u % 4 {
                0 => None,
                1 => at(ms(11)),
                2 => at(ms(20)),
                _ => at(ms(5)),
            };
            (UserId(u), when)
        })
        .collect();
    // Listed twice: at a chunk boundary (positions 499 and 500), and within one chunk.
    users.insert(500, (UserId(3), at(ms(1))));
    users.insert(10, (UserId(9), at(ms(2))));
    users.insert(11, (UserId(9), at(ms(30))));
    users.extend((1_001..=1_010u64).map(|u| (UserId(u), at(ms(1)))));
    let adopted = retention.adopt(users, &Adoption::new()).await.unwrap();
    let mut times = Vec::new();
    for user in 1..=1_210u64 {
        let status = retention.status(UserId(user)).await.unwrap();
        times.push(status.last_seen.map(|t| t.timestamp_millis()));
    }
    (adopted, times)
}

every_store! {
    /// The SQL stores' set-based adoption (this module's subject) adopts as the memory store
    /// does.
    #[stores(sqlite, postgres)]
    async fn adoption_agrees_with_the_memory_store(env) {
        let (adopted, times) = adopt_everything(&env).await;
        let (expected, expected_times) = adopt_everything(&Env::memory()).await;
        assert_eq!(adopted, expected);
        assert!(adopted.erasing >= 70 && adopted.moved_forward > 0 && adopted.kept > 0, "{adopted:?}");
        for (user, (got, want)) in times.iter().zip(&expected_times).enumerate() {
            assert_eq!(got, want, "user {}", user + 1);
        }
    }
}
