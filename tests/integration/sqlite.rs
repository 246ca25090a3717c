//! What only `SqliteStore` has: a file that outlives the process, tables named after the
//! namespace and versioned, and its errors. (The behavioural suites and the model test run
//! on SQLite too.)
#![cfg(feature = "sqlite")]

use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{Error, GoneReason, ManualClock, Noted, Retention, SqliteStore};

use crate::common::{DAY, T0};

fn temp_db() -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite:{}", dir.path().join("bot.db").display());
    (dir, url)
}

async fn retention(store: SqliteStore, clock: &ManualClock, namespace: &str) -> Retention {
    Retention::builder(store)
        .namespace(namespace)
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(clock.clone())
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_recorded_before_a_restart_are_erased_after_it() {
    let (_dir, url) = temp_db();
    let clock = ManualClock::at_unix_ms(T0);
    {
        let bot = retention(SqliteStore::open(&url).await.unwrap(), &clock, "bot").await;
        assert_eq!(bot.note_interaction(UserId(1)).await, Noted::Written);
        clock.advance(20 * DAY);
        assert_eq!(bot.note_interaction(UserId(2)).await, Noted::Written);
        bot.shutdown().await.unwrap();
    }
    // A new process: the memory store would have forgotten both users.
    clock.advance(15 * DAY);
    let bot = retention(SqliteStore::open(&url).await.unwrap(), &clock, "bot").await;
    assert_eq!(bot.tracked_users().await.unwrap(), 2);
    let seen = bot.status(UserId(1)).await.unwrap().last_seen.unwrap();
    assert_eq!(seen.timestamp_millis(), T0);
    let report = bot.prune_once().await.unwrap();
    assert_eq!(report.erased, 1, "only user 1 is 35 days idle");
    assert_eq!(bot.status(UserId(1)).await.unwrap().last_seen, None);
    assert!(bot.status(UserId(2)).await.unwrap().last_seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_in_one_file_keep_apart_in_tables_of_their_own() {
    let (_dir, url) = temp_db();
    let clock = ManualClock::at_unix_ms(T0);
    let store = SqliteStore::open(&url).await.unwrap();
    let a = retention(store.clone(), &clock, "bot-a").await;
    let b = retention(store.clone(), &clock, "bot.b").await;
    a.note_interaction(UserId(1)).await;
    b.note_interaction(UserId(2)).await;
    b.note_interaction(UserId(3)).await;
    assert_eq!((a.tracked_users().await.unwrap(), b.tracked_users().await.unwrap()), (1, 2));
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let tables: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
            .fetch_all(&pool)
            .await
            .unwrap();
    for table in ["bot-a.seen", "bot-a.queue", "bot-a.meta", "bot.b.seen", "bot.b.feed"] {
        assert!(tables.iter().any(|t| t == table), "{table} in {tables:?}");
    }
    let version: String =
        sqlx::query_scalar("SELECT value FROM \"bot-a.meta\" WHERE key = 'schema'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(version, "3");
}

/// The indexes of `table` (SQLite's own names them `sqlite_autoindex_*`).
async fn indexes(pool: &sqlx::SqlitePool, table: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?")
        .bind(table)
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A file whose namespace `bot` tracks user 1, then says its tables are of `version`: the
/// file, its URL and a pool of the test's own on it.
async fn one_user_at_version(version: &str) -> (tempfile::TempDir, String, sqlx::SqlitePool) {
    let (dir, url) = temp_db();
    let clock = ManualClock::at_unix_ms(T0);
    let bot = retention(SqliteStore::open(&url).await.unwrap(), &clock, "bot").await;
    bot.note_interaction(UserId(1)).await;
    bot.shutdown().await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("UPDATE \"bot.meta\" SET value = ? WHERE key = 'schema'")
        .bind(version)
        .execute(&pool)
        .await
        .unwrap();
    (dir, url, pool)
}

/// What `bot.tracked_users()` says on a fresh store on `url` (tables checked or migrated).
async fn tracked(url: &str) -> Result<u64, Error> {
    let clock = ManualClock::at_unix_ms(T0);
    retention(SqliteStore::open(url).await.unwrap(), &clock, "bot").await.tracked_users().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_version_1_are_migrated_and_keep_their_rows() {
    let (_dir, url, pool) = one_user_at_version("1").await;
    // Version 1's layout: no index on the receipts' nor the feed's time, no `probes`.
    sqlx::query("DROP INDEX \"bot.receipt_at\"").execute(&pool).await.unwrap();
    sqlx::query("DROP INDEX \"bot.feed_at\"").execute(&pool).await.unwrap();
    sqlx::query("DROP TABLE \"bot.probes\"").execute(&pool).await.unwrap();
    assert!(!indexes(&pool, "bot.receipt").await.contains(&"bot.receipt_at".to_owned()));

    assert_eq!(tracked(&url).await.unwrap(), 1, "the rows are kept");
    let version: String = sqlx::query_scalar("SELECT value FROM \"bot.meta\" WHERE key = 'schema'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, "3");
    assert!(indexes(&pool, "bot.receipt").await.contains(&"bot.receipt_at".to_owned()));
    assert!(indexes(&pool, "bot.feed").await.contains(&"bot.feed_at".to_owned()));
    let probes: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM \"bot.probes\"").fetch_one(&pool).await.unwrap();
    assert_eq!(probes, 0, "version 3's table is there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_version_2_get_the_census_table_and_the_census_runs() {
    let (_dir, url, pool) = one_user_at_version("2").await;
    sqlx::query("DROP TABLE \"bot.probes\"").execute(&pool).await.unwrap();
    let clock = ManualClock::at_unix_ms(T0);
    let api = crate::common::FakeBotApi::start().await;
    let bot = SqliteStore::open(&url).await.unwrap();
    let bot = Retention::builder(bot)
        .namespace("bot")
        .inactive_after(90 * DAY)
        .clock(clock.clone())
        .probe_with(
            api.bot(),
            teloxide_retention::Probes::new().one_every(Duration::from_millis(1)),
        )
        .census(teloxide_retention::Census::new().idle_for(7 * DAY))
        .build()
        .unwrap();
    clock.advance(8 * DAY);
    let report = bot.prune_once().await.unwrap();
    assert_eq!(report.census_probed, 1, "{report:?}");
    let version: String = sqlx::query_scalar("SELECT value FROM \"bot.meta\" WHERE key = 'schema'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(version, "3");
    let probes: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM \"bot.probes\"").fetch_one(&pool).await.unwrap();
    assert_eq!(probes, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_of_a_newer_or_unknown_version_are_refused_not_rewritten() {
    // 0: no version of this crate wrote it; 4: a newer one did.
    for version in ["0", "4"] {
        let (_dir, url, pool) = one_user_at_version(version).await;
        let err = tracked(&url).await.unwrap_err();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains("table version"), "{err}");
        // Nothing was changed: the user is still there for the version that wrote it.
        let users: i64 =
            sqlx::query_scalar("SELECT COUNT(*) FROM \"bot.seen\"").fetch_one(&pool).await.unwrap();
        assert_eq!(users, 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_urls_and_unopenable_files_are_clear_errors() {
    let err = SqliteStore::open("redis://localhost").await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(err.to_string().contains("not a SQLite URL"), "{err}");
    let err = SqliteStore::open("sqlite:/nonexistent-dir/x/bot.db").await.unwrap_err();
    assert!(matches!(err, Error::Database(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_write_lock_makes_writes_time_out_not_hang_and_reads_go_on() {
    let (_dir, url) = temp_db();
    let clock = ManualClock::at_unix_ms(T0);
    let store = SqliteStore::open(&url).await.unwrap();
    let bot = Retention::builder(store)
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(clock.clone())
        .store_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    bot.note_interaction(UserId(1)).await;
    // Another process holds the write lock.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let other = pool.begin_with("BEGIN IMMEDIATE").await.unwrap();
    let err = bot.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap_err();
    assert!(err.is_unavailable(), "{err:?}");
    // Reads take a snapshot and wait for no writer.
    assert_eq!(bot.tracked_users().await.unwrap(), 1);
    assert!(bot.status(UserId(1)).await.unwrap().erasure.is_none(), "nothing was kept");
    other.rollback().await.unwrap();
    assert!(bot.mark_gone(UserId(1), GoneReason::Blocked).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_without_a_rollback_journal_is_refused_by_the_pruner() {
    let (_dir, url) = temp_db();
    let options: sqlx::sqlite::SqliteConnectOptions = url.parse().unwrap();
    let options =
        options.create_if_missing(true).journal_mode(sqlx::sqlite::SqliteJournalMode::Memory);
    let pool = sqlx::SqlitePool::connect_with(options).await.unwrap();
    let clock = ManualClock::at_unix_ms(T0);
    let bot = retention(SqliteStore::from_pool(pool), &clock, "bot").await;
    bot.note_interaction(UserId(1)).await;
    clock.advance(40 * DAY);
    let err = bot.prune_once().await.unwrap_err();
    assert!(matches!(err, Error::Unsafe(_)), "{err:?}");
    assert!(err.to_string().contains("journal_mode=memory"), "{err}");
    assert_eq!(bot.tracked_users().await.unwrap(), 1, "nobody was erased");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_erased_id_stays_in_the_feed_past_its_window_and_a_pass() {
    let (_dir, url) = temp_db();
    let clock = ManualClock::at_unix_ms(T0);
    let bot = retention(SqliteStore::open(&url).await.unwrap(), &clock, "bot").await;
    bot.note_interaction(UserId(4)).await;
    bot.erase_user(UserId(4)).await.unwrap();
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let ids = || async {
        sqlx::query_scalar::<_, i64>("SELECT uid FROM \"bot.feed\"").fetch_all(&pool).await.unwrap()
    };
    assert_eq!(ids().await, [4], "the opt-out is announced to the replicas");
    // Eleven minutes later (the feed's rows are stamped on the wall clock), with no new
    // erasure since: the next pass removes it.
    sqlx::query("UPDATE \"bot.feed\" SET at = at - 11 * 60 * 1000").execute(&pool).await.unwrap();
    bot.prune_once().await.unwrap();
    assert!(ids().await.is_empty(), "the id left the feed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_this_crate_did_not_write_are_never_erased_as_someone() {
    let (_dir, url) = temp_db();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = crate::support::Recorder::new("profiles");
    let bot = Retention::builder(SqliteStore::open(&url).await.unwrap())
        .namespace("bot")
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(clock.clone())
        // Fewer than the odd rows: a claim reads past them to the users behind them.
        .batch_size(2)
        .erase_with(eraser.clone())
        .build()
        .unwrap();
    bot.note_interaction(UserId(7)).await;
    bot.note_interaction(UserId(8)).await;
    bot.flush().await.unwrap();
    // Rows no version of this crate writes: ids that are no user (0, negative, past 2^53),
    // older than every user, so first in the claim's range.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    for odd in [0, -5, 1_i64 << 60] {
        sqlx::query("INSERT INTO \"bot.seen\" (uid, at) VALUES (?, ?)")
            .bind(odd)
            .bind(T0 - 1)
            .execute(&pool)
            .await
            .unwrap();
    }
    clock.advance(31 * DAY);
    let report = bot.prune_once().await.unwrap();
    assert_eq!(report.erased, 2);
    let mut erased: Vec<u64> = eraser.calls().iter().map(|e| e.user.0).collect();
    erased.sort_unstable();
    assert_eq!(erased, [7, 8]);
    let left: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM \"bot.seen\"").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 3, "the odd rows are left in place");
}

/// SQLite compares table names without regard to case: namespaces `shop` and `Shop` on one
/// file would share every table, and bot B's pruner would carry out bot A's opt-out with
/// B's erasers (A's never running). The second namespace to arrive is refused, before it
/// writes anything; the first goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_that_differ_only_in_case_never_share_tables() {
    let (_dir, url) = temp_db();
    let clock = ManualClock::at_unix_ms(T0);
    let (a_eraser, b_eraser) =
        (crate::support::Recorder::new("a-profiles"), crate::support::Recorder::new("b-profiles"));
    let bot = |namespace: &'static str, eraser: &crate::support::Recorder| {
        let (url, clock, eraser) = (url.clone(), clock.clone(), eraser.clone());
        async move {
            // A store of its own: the other bot is another process on the same file.
            Retention::builder(SqliteStore::open(&url).await.unwrap())
                .namespace(namespace)
                .inactive_after(30 * DAY)
                .without_commands()
                .clock(clock)
                .erase_with(eraser)
                .build()
                .unwrap()
        }
    };
    let a = bot("shop", &a_eraser).await;
    assert_eq!(a.note_interaction(UserId(5)).await, Noted::Written);
    assert_eq!(a.schedule_opt_out(UserId(5)).await.unwrap(), teloxide_retention::Marked::Scheduled);

    let b = bot("Shop", &b_eraser).await;
    // At start-up, as at its first call of any kind.
    let err = b.check_store().await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let err = b.prune_once().await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    let message = err.to_string();
    assert!(message.contains("\"Shop\"") && message.contains("shop.seen"), "{message}");
    assert!(message.contains("case"), "the message says why: {message}");
    let err = b.tracked_users().await.unwrap_err();
    assert!(matches!(err, Error::Config(_)), "{err:?}");
    assert!(b_eraser.calls().is_empty(), "B's erasers never ran for A's user");

    // Nothing of B's was written: every table in the file is A's, in A's case.
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    let foreign: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM sqlite_master WHERE name GLOB 'Shop*'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(foreign, 0);
    // A's opt-out is still A's, carried out by A's erasers.
    let report = a.prune_once().await.unwrap();
    assert_eq!(report.erased, 1, "{report:?}");
    assert_eq!(a_eraser.reasons(5), [teloxide_retention::ErasureReason::OptOut]);
    assert!(b_eraser.calls().is_empty());
}

/// SQLite reserves table names that begin with `sqlite_` (in any case) for itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespaces_sqlite_reserves_are_refused_at_build() {
    let (_dir, url) = temp_db();
    let store = SqliteStore::open(&url).await.unwrap();
    for namespace in ["sqlite_x", "SQLite_bot", "SQLITE_"] {
        let built = Retention::builder(store.clone())
            .namespace(namespace)
            .inactive_after(30 * DAY)
            .without_commands()
            .build();
        let err = built.err().unwrap_or_else(|| panic!("{namespace} was accepted"));
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert!(err.to_string().contains("sqlite_"), "{err}");
    }
    // Elsewhere the same names are fine, and so is `sqlite` without the underscore here.
    assert!(
        Retention::builder(teloxide_retention::MemoryStore::new())
            .namespace("sqlite_x")
            .inactive_after(30 * DAY)
            .build()
            .is_ok()
    );
    let bot = retention(store, &ManualClock::at_unix_ms(T0), "sqlite-bot").await;
    assert_eq!(bot.tracked_users().await.unwrap(), 0);
}
