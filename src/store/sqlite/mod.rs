//! [`SqliteStore`]: the protocol on one SQLite file, through sqlx 0.8 (the sqlx of
//! teloxide's `SqliteStorage`, so a bot links one `libsqlite3-sys`).
//!
//! Every operation is one transaction begun with `BEGIN IMMEDIATE` (the write lock first,
//! so two connections never deadlock upgrading a read), which replaces the Redis store's
//! Lua scripts: all or nothing, in the same steps as the memory store. Times are the bot's
//! clock: SQLite is one host and one process, with no server clock to agree on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::future::BoxFuture;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{Row, Sqlite, Transaction};
use tokio::sync::OnceCell;

use crate::clock::{Clock, SystemClock};
use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::receipts::RawReceipt;
use crate::store::{
    AdoptCounts, Adoptee, Backend, Batch, ClaimRequest, ClaimTimes, ClaimUser, Claimed, Confirmed,
    FEED_KEEP_MS, FEED_READ, Failing, FeedPage, Finish, FinishRequest, Hashed, Health, Heartbeat,
    Interaction, Invalidation, Job, Marked, Pending, PreviewEntry, RawPreview, RawStatus,
    RawSurvey, Retry, ScheduleRequest, SeenRange, Store, TaggedReceipt, WriterWindow, came_back,
    sealed,
};

/// The version of the tables this crate writes, kept in each namespace's `meta` table.
const SCHEMA_VERSION: i64 = 1;

/// Rows per multi-row `INSERT` (two values each, far below SQLite's 32,766 parameters).
const CHUNK: usize = 500;

/// A store on one SQLite file, for a bot that runs as one process on one host.
///
/// It keeps what [`MemoryStore`](crate::MemoryStore) keeps, across restarts, with the same
/// behaviour (one behavioural suite runs against every store): grouped interaction writes
/// that never move a user back, gone marks, claims with leases and takeover, retries,
/// receipts, the feed, the audit's lease. Tables are created on first use, named after the
/// namespace (`"retention.seen"`, ...), and versioned.
///
/// Clones share one pool. Open the store once per process and clone it; every operation is
/// a short `BEGIN IMMEDIATE` transaction, and SQLite serialises writers.
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
    pool: SqlitePool,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the SQLite file at `url` (`sqlite:retention.db`,
    /// `sqlite:///var/lib/bot/retention.db`), in WAL mode with full sync, and checks that
    /// it answers.
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
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new().max_connections(4).connect_with(options).await?;
        Ok(Self { pool })
    }

    /// The store on a pool the bot already has (its own tables and the crate's share the
    /// file). Set a `busy_timeout` on it: other connections may hold the write lock.
    #[must_use]
    pub fn from_pool(pool: SqlitePool) -> Self {
        Self { pool }
    }
}

impl Store for SqliteStore {
    fn bind(&self, namespace: &str, _: sealed::Token) -> sealed::Bound {
        sealed::Bound(Arc::new(SqliteNamespace {
            pool: self.pool.clone(),
            t: Tables::new(namespace),
            ready: OnceCell::new(),
            warned_sync: AtomicBool::new(false),
        }))
    }
}

/// The quoted table names of a namespace.
struct Tables {
    seen: String,
    queue: String,
    job: String,
    failing: String,
    lease: String,
    batch: String,
    receipt: String,
    feed: String,
    kv: String,
    writers: String,
    meta: String,
    prefix: String,
}

impl Tables {
    fn new(ns: &str) -> Self {
        // Namespaces are letters, digits and `-_.:` (validated): safe inside quotes.
        let name = |table: &str| format!("\"{ns}.{table}\"");
        Self {
            seen: name("seen"),
            queue: name("queue"),
            job: name("job"),
            failing: name("failing"),
            lease: name("lease"),
            batch: name("batch"),
            receipt: name("receipt"),
            feed: name("feed"),
            kv: name("kv"),
            writers: name("writers"),
            meta: name("meta"),
            prefix: ns.to_owned(),
        }
    }

    /// The statements that create version 1 of the tables.
    fn schema(&self) -> Vec<String> {
        let Tables {
            seen,
            queue,
            job,
            failing,
            lease,
            batch,
            receipt,
            feed,
            kv,
            writers,
            meta,
            ..
        } = self;
        let index = |table: &str, columns: &str| {
            format!(
                "CREATE INDEX IF NOT EXISTS \"{}.{table}_by_{}\" ON \"{}.{table}\" ({columns})",
                self.prefix,
                columns.replace(", ", "_"),
                self.prefix
            )
        };
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {seen} (user INTEGER PRIMARY KEY, at INTEGER NOT NULL)"
            ),
            index("seen", "at, user"),
            format!(
                "CREATE TABLE IF NOT EXISTS {queue} (user INTEGER PRIMARY KEY, due INTEGER NOT NULL)"
            ),
            index("queue", "due, user"),
            format!(
                "CREATE TABLE IF NOT EXISTS {job} (user INTEGER PRIMARY KEY, reason TEXT NOT NULL, \
                 marked_at INTEGER NOT NULL, attempts INTEGER NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {failing} (user INTEGER PRIMARY KEY, \
                 since INTEGER NOT NULL, reported INTEGER NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {lease} (batch INTEGER PRIMARY KEY, \
                 deadline INTEGER NOT NULL)"
            ),
            index("lease", "deadline, batch"),
            format!(
                "CREATE TABLE IF NOT EXISTS {batch} (batch INTEGER NOT NULL, pos INTEGER NOT NULL, \
                 user INTEGER NOT NULL, PRIMARY KEY (batch, pos))"
            ),
            index("batch", "user"),
            format!(
                "CREATE TABLE IF NOT EXISTS {receipt} (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 tag TEXT NOT NULL, at INTEGER NOT NULL, reason TEXT NOT NULL, \
                 erasers TEXT NOT NULL, attempts INTEGER NOT NULL)"
            ),
            index("receipt", "tag"),
            format!(
                "CREATE TABLE IF NOT EXISTS {feed} (seq INTEGER PRIMARY KEY AUTOINCREMENT, \
                 at INTEGER NOT NULL, user INTEGER NOT NULL, since INTEGER NOT NULL, \
                 until INTEGER NOT NULL, opt_out INTEGER NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {kv} (key TEXT PRIMARY KEY, value TEXT NOT NULL, \
                 expires INTEGER NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {writers} (id INTEGER PRIMARY KEY, at INTEGER NOT NULL, \
                 backlog INTEGER NOT NULL)"
            ),
        ]
    }
}

/// One namespace of a [`SqliteStore`].
struct SqliteNamespace {
    pool: SqlitePool,
    t: Tables,
    /// Set once the tables exist at this version.
    ready: OnceCell<()>,
    /// `synchronous=OFF` was reported (once per process).
    warned_sync: AtomicBool,
}

type Tx = Transaction<'static, Sqlite>;

/// The wall clock (ms) for what expires in real time (nonces, the feed, heartbeats), as
/// Redis TTLs do.
fn wall_ms() -> i64 {
    SystemClock.now_ms()
}

/// A stored integer read as an id or count (ids and counts are never negative).
fn unsigned(v: i64) -> u64 {
    v.max(0).unsigned_abs()
}

fn reason(code: &str) -> Result<ErasureReason> {
    ErasureReason::from_code(code).ok_or_else(|| Error::Corrupt(format!("reason {code:?}")))
}

fn claimed(user: u64, Job { reason, marked_at, attempts }: Job) -> Claimed {
    Claimed { user, reason, marked_at, attempts }
}

impl SqliteNamespace {
    /// Creates or checks the tables, once.
    async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
                for statement in self.t.schema() {
                    sqlx::query(&statement).execute(&mut *tx).await?;
                }
                let meta = &self.t.meta;
                let version: Option<String> =
                    sqlx::query_scalar(&format!("SELECT value FROM {meta} WHERE key = 'schema'"))
                        .fetch_optional(&mut *tx)
                        .await?;
                match version.as_deref().map(str::parse::<i64>) {
                    None => {
                        sqlx::query(&format!("INSERT INTO {meta} VALUES ('schema', ?)"))
                            .bind(SCHEMA_VERSION.to_string())
                            .execute(&mut *tx)
                            .await?;
                    }
                    Some(Ok(SCHEMA_VERSION)) => {}
                    Some(other) => {
                        return Err(Error::config(format!(
                            "namespace {:?} in this SQLite file has table version {other:?}; \
                             this version of the crate reads version {SCHEMA_VERSION}",
                            self.t.prefix
                        )));
                    }
                }
                tx.commit().await?;
                Ok(())
            })
            .await
            .copied()
    }

    /// A write transaction on this namespace's tables (created first if need be).
    async fn begin(&self) -> Result<Tx> {
        self.ready().await?;
        Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?)
    }

    async fn job(&self, tx: &mut Tx, user: u64) -> Result<Option<Job>> {
        let row = sqlx::query(&format!(
            "SELECT reason, marked_at, attempts FROM {} WHERE user = ?",
            self.t.job
        ))
        .bind(user as i64)
        .fetch_optional(&mut **tx)
        .await?;
        row.map(|r| {
            Ok(Job {
                reason: reason(r.get::<&str, _>(0))?,
                marked_at: r.get(1),
                attempts: u32::try_from(r.get::<i64, _>(2)).unwrap_or(u32::MAX),
            })
        })
        .transpose()
    }

    async fn job_of(&self, tx: &mut Tx, user: u64) -> Result<Job> {
        Ok(self.job(tx, user).await?.unwrap_or(Job::INACTIVE))
    }

    async fn put_job(&self, tx: &mut Tx, user: u64, job: Job) -> Result<()> {
        sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?, ?, ?)", self.t.job))
            .bind(user as i64)
            .bind(job.reason.code())
            .bind(job.marked_at)
            .bind(i64::from(job.attempts))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// A user's score in `table` (`seen` or `queue`).
    async fn score(&self, tx: &mut Tx, table: &str, user: u64) -> Result<Option<i64>> {
        let column = if table == self.t.seen { "at" } else { "due" };
        Ok(sqlx::query_scalar(&format!("SELECT {column} FROM {table} WHERE user = ?"))
            .bind(user as i64)
            .fetch_optional(&mut **tx)
            .await?)
    }

    /// Removes `user` from `table`; whether a row was there.
    async fn remove(&self, tx: &mut Tx, table: &str, user: u64) -> Result<bool> {
        let done = sqlx::query(&format!("DELETE FROM {table} WHERE user = ?"))
            .bind(user as i64)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    async fn set_due(&self, tx: &mut Tx, user: u64, due: i64) -> Result<()> {
        sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?)", self.t.queue))
            .bind(user as i64)
            .bind(due)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// `(user, score)` of `table` with a score at or below `max`, lowest first.
    async fn up_to(
        &self,
        tx: &mut Tx,
        table: &str,
        max: i64,
        limit: usize,
    ) -> Result<Vec<(u64, i64)>> {
        let column = if table == self.t.seen { "at" } else { "due" };
        let rows: Vec<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT user, {column} FROM {table} WHERE {column} <= ? ORDER BY {column}, user LIMIT ?"
        ))
        .bind(max)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&mut **tx)
        .await?;
        Ok(rows.into_iter().map(|(u, s)| (unsigned(u), s)).collect())
    }

    async fn count_up_to(&self, tx: &mut Tx, table: &str, column: &str, max: i64) -> Result<u64> {
        let n: i64 =
            sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {table} WHERE {column} <= ?"))
                .bind(max)
                .fetch_one(&mut **tx)
                .await?;
        Ok(unsigned(n))
    }

    /// The batch holding `user`, and its deadline (0 if its lease is gone).
    async fn batch_of(&self, tx: &mut Tx, user: u64) -> Result<Option<(u64, i64)>> {
        let row: Option<(i64, i64)> = sqlx::query_as(&format!(
            "SELECT b.batch, COALESCE(l.deadline, 0) FROM {} b LEFT JOIN {} l \
             ON l.batch = b.batch WHERE b.user = ? LIMIT 1",
            self.t.batch, self.t.lease
        ))
        .bind(user as i64)
        .fetch_optional(&mut **tx)
        .await?;
        Ok(row.map(|(b, d)| (b as u64, d)))
    }

    async fn set_lease(&self, tx: &mut Tx, batch: u64, deadline: i64) -> Result<()> {
        sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?)", self.t.lease))
            .bind(batch as i64)
            .bind(deadline)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn put_batch(&self, tx: &mut Tx, batch: u64, users: &[u64]) -> Result<()> {
        sqlx::query(&format!("DELETE FROM {} WHERE batch = ?", self.t.batch))
            .bind(batch as i64)
            .execute(&mut **tx)
            .await?;
        for (pos, chunk) in users.chunks(CHUNK).enumerate() {
            let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!("INSERT INTO {} VALUES {values}", self.t.batch);
            let mut query = sqlx::query(&sql);
            for (i, user) in chunk.iter().enumerate() {
                let at = i64::try_from(pos * CHUNK + i).unwrap_or(i64::MAX);
                query = query.bind(batch as i64).bind(at).bind(*user as i64);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    async fn batch_users(&self, tx: &mut Tx, batch: u64) -> Result<Vec<u64>> {
        let users: Vec<i64> = sqlx::query_scalar(&format!(
            "SELECT user FROM {} WHERE batch = ? ORDER BY pos",
            self.t.batch
        ))
        .bind(batch as i64)
        .fetch_all(&mut **tx)
        .await?;
        Ok(users.into_iter().map(unsigned).collect())
    }

    async fn end_batch(&self, tx: &mut Tx, batch: u64) -> Result<()> {
        for table in [&self.t.batch, &self.t.lease] {
            sqlx::query(&format!("DELETE FROM {table} WHERE batch = ?"))
                .bind(batch as i64)
                .execute(&mut **tx)
                .await?;
        }
        Ok(())
    }

    /// Removes every one of `users` from `table`, a chunk per statement.
    async fn remove_all(&self, tx: &mut Tx, table: &str, users: &[u64]) -> Result<()> {
        for chunk in users.chunks(CHUNK) {
            let sql = format!("DELETE FROM {table} WHERE user IN ({})", params(chunk.len()));
            let mut query = sqlx::query(&sql);
            for user in chunk {
                query = query.bind(*user as i64);
            }
            query.execute(&mut **tx).await?;
        }
        Ok(())
    }

    /// The jobs of those of `users` that have one.
    async fn jobs(&self, tx: &mut Tx, users: &[u64]) -> Result<HashMap<u64, Job>> {
        let mut jobs = HashMap::new();
        for chunk in users.chunks(CHUNK) {
            let sql = format!(
                "SELECT user, reason, marked_at, attempts FROM {} WHERE user IN ({})",
                self.t.job,
                params(chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for user in chunk {
                query = query.bind(*user as i64);
            }
            for r in query.fetch_all(&mut **tx).await? {
                let job = Job {
                    reason: reason(r.get::<&str, _>(1))?,
                    marked_at: r.get(2),
                    attempts: u32::try_from(r.get::<i64, _>(3)).unwrap_or(u32::MAX),
                };
                jobs.insert(unsigned(r.get(0)), job);
            }
        }
        Ok(jobs)
    }

    async fn came_back(&self, tx: &mut Tx, user: u64, job: Job) -> Result<bool> {
        let seen = self.score(tx, &self.t.seen, user).await?;
        Ok(came_back(job, seen))
    }

    /// Takes a user with a job (or of a dead pruner's batch) unless they came back (a gone
    /// user who came back goes to `returned`).
    async fn take_or_drop(
        &self,
        tx: &mut Tx,
        user: u64,
        users: &mut Vec<Claimed>,
        returned: &mut Vec<u64>,
    ) -> Result<()> {
        let job = self.job_of(tx, user).await?;
        if self.came_back(tx, user, job).await? {
            self.remove(tx, &self.t.job, user).await?;
            self.remove(tx, &self.t.failing, user).await?;
            if job.reason.is_gone() {
                returned.push(user);
            }
        } else {
            self.remove(tx, &self.t.seen, user).await?;
            users.push(claimed(user, job));
        }
        Ok(())
    }

    /// Why writers hold inactivity claims back, if they do; forgets dead writers.
    async fn writers_hold(&self, tx: &mut Tx, w: WriterWindow) -> Result<Option<String>> {
        let now = wall_ms();
        sqlx::query(&format!("DELETE FROM {} WHERE at < ?", self.t.writers))
            .bind(now.saturating_sub(w.dead_ms))
            .execute(&mut **tx)
            .await?;
        let rows: Vec<(i64, i64, i64)> =
            sqlx::query_as(&format!("SELECT id, at, backlog FROM {} ORDER BY id", self.t.writers))
                .fetch_all(&mut **tx)
                .await?;
        Ok(rows.into_iter().find_map(|(id, at, backlog)| {
            let id = id as u64;
            if backlog > 0 {
                Some(format!("writer {id} holds {backlog} unwritten interactions"))
            } else if now - at > w.silent_ms {
                Some(format!(
                    "writer {id} missed its heartbeats for {} s (it may be cut off from the store)",
                    (now - at) / 1000
                ))
            } else {
                None
            }
        }))
    }

    async fn announce(&self, tx: &mut Tx, inv: Invalidation) -> Result<()> {
        let now = wall_ms();
        sqlx::query(&format!("DELETE FROM {} WHERE at < ?", self.t.feed))
            .bind(now - FEED_KEEP_MS)
            .execute(&mut **tx)
            .await?;
        sqlx::query(&format!(
            "INSERT INTO {} (at, user, since, until, opt_out) VALUES (?, ?, ?, ?, ?)",
            self.t.feed
        ))
        .bind(now)
        .bind(inv.user as i64)
        .bind(inv.since)
        .bind(inv.until)
        .bind(inv.opt_out)
        .execute(&mut **tx)
        .await?;
        Ok(())
    }

    /// A live key-value entry (nonces, counters, the audit's lease).
    async fn kv_get(&self, tx: &mut Tx, key: &str) -> Result<Option<String>> {
        sqlx::query(&format!("DELETE FROM {} WHERE expires <= ?", self.t.kv))
            .bind(wall_ms())
            .execute(&mut **tx)
            .await?;
        Ok(sqlx::query_scalar(&format!("SELECT value FROM {} WHERE key = ?", self.t.kv))
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?)
    }

    async fn kv_put(&self, tx: &mut Tx, key: &str, value: &str, ttl_ms: i64) -> Result<()> {
        sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?, ?)", self.t.kv))
            .bind(key)
            .bind(value)
            .bind(wall_ms().saturating_add(ttl_ms.max(1)))
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    async fn meta(&self, tx: &mut Tx, key: &str) -> Result<Option<String>> {
        Ok(sqlx::query_scalar(&format!("SELECT value FROM {} WHERE key = ?", self.t.meta))
            .bind(key)
            .fetch_optional(&mut **tx)
            .await?)
    }

    async fn receipts_since(&self, tx: &mut Tx, oldest: i64) -> Result<Vec<TaggedReceipt>> {
        let rows = sqlx::query(&format!(
            "SELECT tag, at, reason, erasers, attempts FROM {} WHERE at >= ? ORDER BY seq",
            self.t.receipt
        ))
        .bind(oldest)
        .fetch_all(&mut **tx)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(TaggedReceipt {
                    tag: r.get(0),
                    receipt: RawReceipt {
                        at: r.get(1),
                        reason: reason(r.get::<&str, _>(2))?,
                        erasers: r.get(3),
                        attempts: u32::try_from(r.get::<i64, _>(4)).unwrap_or(u32::MAX),
                    },
                })
            })
            .collect()
    }
}

/// The expected output of a transaction's body, so that `?` inside it knows its error.
fn typed<T, F: std::future::Future<Output = Result<T>>>(body: F) -> F {
    body
}

/// Runs a body in one `BEGIN IMMEDIATE` transaction, committed if the body succeeds and
/// rolled back otherwise (also when the call is dropped at its timeout).
macro_rules! in_tx {
    ($this:ident, |$s:ident, $tx:ident| $body:block) => {
        Box::pin(async move {
            let mut tx = $this.begin().await?;
            let out = {
                let $s = $this;
                let $tx = &mut tx;
                typed(async move $body).await?
            };
            tx.commit().await?;
            Ok(out)
        })
    };
}

/// `?, ?, ...`: `n` parameters.
fn params(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// Claim times on the bot's clock (SQLite has no clock of its own to agree on).
fn now_of(times: ClaimTimes) -> i64 {
    times.now.unwrap_or_else(wall_ms)
}

mod ops;
