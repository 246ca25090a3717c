//! [`SqliteStore`]: the SQL store on one SQLite file. Each operation begins with `BEGIN
//! IMMEDIATE` (the write lock first, so two connections never deadlock upgrading a read).
//! Times are the bot's clock: SQLite is one host and one process, with no server clock.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Sqlite, Transaction};

use super::{Arg, Dialect, SqlNamespace, TableVersion, Tables, Val, bind_all, values};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, Result};
use crate::store::{Health, Store, sealed, validate_namespace};
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// A store on one SQLite file, for a bot that runs as one process on one host.
///
/// It keeps what [`MemoryStore`](crate::MemoryStore) keeps, across restarts, with the same
/// behaviour (one behavioural suite runs against every store): grouped interaction writes
/// that never move a user back, gone marks, claims with leases and takeover, retries,
/// receipts, the feed, the audit's lease. Tables are created on first use, named after the
/// namespace (`"retention.seen"`, ...), and versioned.
///
/// Clones share one pool. Open the store once per process and clone it; every operation that
/// writes is a short `BEGIN IMMEDIATE` transaction, and SQLite serialises writers (reads
/// take a snapshot and wait for none).
///
/// ```no_run
/// # async fn run() -> teloxide_retention::Result<()> {
/// use std::time::Duration;
/// use teloxide_retention::{Retention, SqliteStore};
///
/// let store = SqliteStore::open("sqlite:retention.db").await?;
/// let retention = Retention::builder(store)
///     .inactive_after(Duration::from_secs(180 * 24 * 3600))
///     .build()?;
/// # let _ = retention;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct SqliteStore {
    db: Arc<SqliteDb>,
}

/// The SQLite dialect over the store's pool.
pub(crate) struct SqliteDb {
    pool: SqlitePool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the SQLite file at `url` (`sqlite:retention.db`,
    /// `sqlite:///var/lib/bot/retention.db`), in WAL mode with full sync and
    /// `secure_delete` (an erased user's rows are overwritten, not left in free pages), and
    /// checks that it answers.
    pub async fn open(url: &str) -> Result<Self> {
        if !url.starts_with("sqlite:") {
            return Err(Error::config(format!(
                "{url:?} is not a SQLite URL (sqlite:path/to/file.db)"
            )));
        }
        let options: SqliteConnectOptions = url.parse().map_err(|e| {
            Error::config(format!("{url:?} is not a SQLite URL (sqlite:path/to/file.db): {e}"))
        })?;
        let options = options
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(sqlx::sqlite::SqliteSynchronous::Full)
            // Deleted rows are overwritten with zeros, not left in free pages of the file.
            .pragma("secure_delete", "ON")
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(Self::from_pool(pool))
    }

    /// The store on a pool the bot already has (its own tables and the crate's share the
    /// file). Set a `busy_timeout` on it (other connections may hold the write lock), and
    /// `secure_delete` if erased rows must not linger in the file's free pages.
    #[must_use]
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { db: Arc::new(SqliteDb { pool }) }
    }
}

/// What [`SqliteStore::diagnose`] found: what matters to the crate about the file and a
/// namespace's tables. The CLI's `check` prints it.
///
/// SQLite has no clock of its own: the bot's clock is the store's, on the one host.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct SqliteDiagnosis {
    /// The SQLite library's version (`sqlite_version()`).
    pub version: String,
    /// `PRAGMA journal_mode` (`wal` as [`SqliteStore::open`] sets it; `off` or `memory`
    /// can leave an erasure's transaction half done after a crash).
    pub journal_mode: String,
    /// `PRAGMA synchronous`, by name (`OFF`, `NORMAL`, `FULL` or `EXTRA`): `OFF` lets a
    /// power loss undo the last interactions written.
    pub synchronous: String,
    /// The version of the namespace's tables.
    pub tables: TableVersion,
}

impl SqliteStore {
    /// Reads what matters to the crate about the file and `namespace`'s tables: SQLite's
    /// version, the journal mode, `synchronous`, and the tables' version. It creates,
    /// migrates and locks nothing.
    ///
    /// ```no_run
    /// # async fn run() -> teloxide_retention::Result<()> {
    /// use teloxide_retention::{SqliteStore, TableVersion};
    ///
    /// let store = SqliteStore::open("sqlite:retention.db").await?;
    /// let found = store.diagnose("retention").await?;
    /// assert_eq!(found.journal_mode, "wal");
    /// assert!(!matches!(found.tables, TableVersion::Unsupported(_)));
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace; [`Error::Database`] if the file cannot
    /// be read (no SQLite database, say).
    pub async fn diagnose(&self, namespace: &str) -> Result<SqliteDiagnosis> {
        validate_namespace(namespace)?;
        let mut conn = self.db.pool.acquire().await?;
        let version: String =
            sqlx::query_scalar("SELECT sqlite_version()").fetch_one(&mut *conn).await?;
        let journal_mode: String =
            sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
        let synchronous: i64 =
            sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
        let synchronous = match synchronous {
            0 => "OFF".to_owned(),
            1 => "NORMAL".to_owned(),
            2 => "FULL".to_owned(),
            3 => "EXTRA".to_owned(),
            other => other.to_string(),
        };
        let t = Tables::new(namespace);
        // The name as the file lists it: unquoted.
        let name = format!("{namespace}.meta");
        let exists: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?",
        )
        .bind(&name)
        .fetch_one(&mut *conn)
        .await?;
        let recorded: Option<String> = if exists > 0 {
            let sql = format!("SELECT value FROM {} WHERE key = 'schema'", t.meta);
            sqlx::query_scalar(&sql).fetch_optional(&mut *conn).await?
        } else {
            None
        };
        Ok(SqliteDiagnosis {
            version,
            journal_mode,
            synchronous,
            tables: TableVersion::of(recorded.as_deref()),
        })
    }
}

impl Store for SqliteStore {
    fn bind(&self, namespace: &str, _: sealed::Token) -> sealed::Bound {
        sealed::Bound(Arc::new(SqlNamespace::new(Arc::clone(&self.db), namespace)))
    }

    /// SQLite reserves names that begin with `sqlite_`, in any case, for itself. (Two
    /// namespaces that differ only in case are refused at the second one's first use, when
    /// the file can be read: see [`Dialect::same_but_case`].)
    fn check_namespace(&self, namespace: &str, _: sealed::Token) -> Result<()> {
        if namespace.len() >= 7 && namespace[..7].eq_ignore_ascii_case("sqlite_") {
            return Err(Error::config(format!(
                "namespace {namespace:?} begins with \"sqlite_\", which SQLite reserves for \
                 its own tables (in any letter case); choose another"
            )));
        }
        Ok(())
    }
}

/// `sql` with `args` bound.
fn query(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'_, Sqlite, sqlx::sqlite::SqliteArguments<'_>> {
    bind_all(sqlx::query(sql), args)
}

impl SqliteDb {
    /// Begins a transaction with `statement`, in a task of its own: a call dropped at its
    /// store timeout while sqlx begins the transaction (after SQLite ran `BEGIN`, before
    /// sqlx made the `Transaction` that rolls back on drop) left the connection inside the
    /// transaction; back in the pool it held the write lock, and every later call waited
    /// for it and timed out. The task always finishes the begin, and a transaction nobody
    /// waits for any more is dropped there, which rolls it back.
    async fn begin_as(&self, statement: &'static str) -> Result<Transaction<'static, Sqlite>> {
        let pool = self.pool.clone();
        let begun = tokio::spawn(async move {
            // Kept from before the cause above was found: should sqlx still count a pooled
            // connection inside a transaction, wait up to 200 ms for the count to drop.
            let mut waits = 0;
            loop {
                match pool.begin_with(statement).await {
                    Err(sqlx::Error::InvalidSavePointStatement) if waits < 200 => {
                        waits += 1;
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                    result => return result,
                }
            }
        });
        match begun.await {
            Ok(result) => Ok(result?),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Its runtime is shutting down.
            Err(_) => Err(Error::Database(sqlx::Error::WorkerCrashed)),
        }
    }
}

impl Dialect for SqliteDb {
    type Tx = Transaction<'static, Sqlite>;

    const NAME: &'static str = "SQLite";

    fn schema(&self, t: &Tables) -> Result<Vec<String>> {
        // `INTEGER PRIMARY KEY` is the row id itself: no second copy of each user id.
        Ok(t.statements("INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT"))
    }

    fn same_but_case<'a>(
        tx: &'a mut Self::Tx,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        Box::pin(async move {
            // `lower` folds ASCII letters, as SQLite's comparison of names does (namespaces
            // are ASCII).
            let sql = format!(
                "SELECT name FROM sqlite_master WHERE lower(name) IN ({})",
                super::params(names.len())
            );
            let lower = names.iter().map(|n| Arg::T(n.to_ascii_lowercase())).collect();
            let found: Vec<String> = query(&sql, lower)
                .fetch_all(&mut **tx)
                .await?
                .iter()
                .map(|row| sqlx::Row::try_get(row, 0))
                .collect::<std::result::Result<_, _>>()?;
            Ok(found.into_iter().filter(|name| !names.contains(name)).collect())
        })
    }

    fn begin(&self, _: i64) -> BoxFuture<'_, Result<Self::Tx>> {
        Box::pin(self.begin_as("BEGIN IMMEDIATE"))
    }

    fn begin_read(&self) -> BoxFuture<'_, Result<Self::Tx>> {
        // Deferred: in WAL mode the first read takes a snapshot, and writers go on.
        Box::pin(self.begin_as("BEGIN DEFERRED"))
    }

    fn commit(tx: Self::Tx) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { Ok(tx.commit().await?) })
    }

    fn exec<'a>(tx: &'a mut Self::Tx, sql: &'a str, args: Vec<Arg>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move { Ok(query(sql, args).execute(&mut **tx).await?.rows_affected()) })
    }

    fn rows<'a>(
        tx: &'a mut Self::Tx,
        sql: &'a str,
        args: Vec<Arg>,
    ) -> BoxFuture<'a, Result<Vec<Vec<Val>>>> {
        Box::pin(async move {
            let rows = query(sql, args).fetch_all(&mut **tx).await?;
            rows.iter().map(values).collect()
        })
    }

    fn now<'a>(_: &'a mut Self::Tx) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async { Ok(SystemClock.now_ms()) })
    }

    fn feed_head_sql(t: &Tables) -> String {
        // AUTOINCREMENT never reuses a number, even after the rows expire.
        format!("SELECT seq FROM sqlite_sequence WHERE name = '{}.feed'", t.prefix)
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async { Ok(None) })
    }

    fn health<'a>(&'a self, warned: &'a AtomicBool) -> BoxFuture<'a, Result<Health>> {
        Box::pin(async move {
            let mut conn = self.pool.acquire().await?;
            let journal: String =
                sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
            let synchronous: i64 =
                sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
            let not_atomic = matches!(journal.to_ascii_lowercase().as_str(), "off" | "memory")
                .then(|| {
                    format!(
                        "the SQLite file runs with journal_mode={journal}: a crash in the middle \
                         of an erasure's transaction can leave it half done; use WAL (what \
                         SqliteStore::open sets) or DELETE"
                    )
                });
            if synchronous == 0 && !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the SQLite file runs with synchronous=OFF: a power loss can undo the last \
                     interactions written, and those users would look inactive since their \
                     earlier ones; use NORMAL or FULL (what SqliteStore::open sets)"
                );
            }
            Ok(Health { not_atomic, ..Health::default() })
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use sqlx::Connection;

    use super::SqliteStore;

    /// A call dropped at its store timeout while it begins its transaction must not leave
    /// the connection inside that transaction: it would go back to the pool holding the
    /// write lock, and every later write would wait for it and time out.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_begin_dropped_at_any_moment_leaves_no_connection_in_a_transaction() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite:{}", dir.path().join("begin.db").display());
        let store = SqliteStore::open(&url).await.unwrap();
        for i in 0..8000_u64 {
            // From "at once" to past the whole begin, to hit every await inside it.
            let limit = Duration::from_nanos((i % 600) * 250);
            let _ = tokio::time::timeout(limit, store.db.begin_as("BEGIN IMMEDIATE")).await;
        }
        let mut held = Vec::new();
        for _ in 0..store.db.pool.options().get_max_connections() {
            let conn = tokio::time::timeout(Duration::from_secs(10), store.db.pool.acquire());
            let mut conn =
                conn.await.expect("no connection free: one is stuck inside a transaction").unwrap();
            // Runs after any rollback a dropped transaction queued on this connection.
            conn.ping().await.unwrap();
            assert!(!conn.is_in_transaction(), "a connection was left inside a transaction");
            held.push(conn);
        }
    }
}
