//! [`SqliteStore`]: the protocol on one SQLite file, through sqlx 0.8 (the sqlx of
//! teloxide's `SqliteStorage`, so a bot links one `libsqlite3-sys`).
//!
//! Every operation is one transaction begun with `BEGIN IMMEDIATE` (the write lock first,
//! so two connections never deadlock upgrading a read), which replaces the Redis store's
//! Lua scripts: all or nothing, in the same steps as the memory store. Times are the bot's
//! clock: SQLite is one host and one process, with no server clock to agree on.

use std::collections::HashMap;
use std::sync::Arc;
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

impl Backend for SqliteNamespace {
    fn parts(&self) -> Vec<&dyn Backend> {
        vec![self]
    }

    fn record_interactions<'a>(&'a self, seen: &'a [Interaction]) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| {
            for chunk in seen.chunks(CHUNK) {
                let values = vec!["(?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "INSERT INTO {} VALUES {values} ON CONFLICT (user) DO UPDATE \
                         SET at = excluded.at WHERE excluded.at > at",
                    s.t.seen
                );
                let mut query = sqlx::query(&sql);
                for i in chunk {
                    query = query.bind(i.user as i64).bind(i.at);
                }
                query.execute(&mut **tx).await?;
            }
            Ok(())
        })
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>> {
        let ClaimRequest { times, writers, limit, batch: id } = request;
        in_tx!(self, |s, tx| {
            let now = now_of(times);
            let cutoff = now.saturating_sub(times.inactive_ms);
            let deadline = now.saturating_add(times.lease_ms);
            let held = s.writers_hold(tx, writers).await?;
            let (mut users, mut returned) = (Vec::new(), Vec::new());
            // 1. Batches whose lease expired.
            let expired: Vec<(i64, i64)> = sqlx::query_as(&format!(
                "SELECT batch, deadline FROM {} WHERE deadline <= ? \
                     ORDER BY deadline, batch LIMIT 16",
                s.t.lease
            ))
            .bind(now)
            .fetch_all(&mut **tx)
            .await?;
            for (old, old_deadline) in expired {
                let old = old as u64;
                if users.len() >= limit {
                    break;
                }
                let mut members = s.batch_users(tx, old).await?;
                let rest = members.split_off(members.len().min(limit - users.len()));
                for user in members {
                    s.take_or_drop(tx, user, &mut users, &mut returned).await?;
                }
                // What does not fit stays in the old batch, still expired, with a new
                // deadline so that the batch's own pruner finds its lease lost.
                if rest.is_empty() {
                    s.end_batch(tx, old).await?;
                } else {
                    s.put_batch(tx, old, &rest).await?;
                    let lost = if old_deadline == now { now - 1 } else { now };
                    s.set_lease(tx, old, lost).await?;
                }
            }
            // 2. Due scheduled erasures.
            let room = limit.saturating_sub(users.len());
            for (user, _) in s.up_to(tx, &s.t.queue, now, room).await? {
                s.remove(tx, &s.t.queue, user).await?;
                s.take_or_drop(tx, user, &mut users, &mut returned).await?;
            }
            // 3. Inactive users, unless a writer may hold unwritten interactions.
            if held.is_none() {
                // One read with the queue beside it and one removal per chunk: the common
                // case (no erasure scheduled) costs no statement per user.
                let room = i64::try_from(limit.saturating_sub(users.len())).unwrap_or(0);
                let inactive: Vec<(i64, bool)> = sqlx::query_as(&format!(
                    "SELECT s.user, q.user IS NOT NULL FROM {} s LEFT JOIN {} q \
                     ON q.user = s.user WHERE s.at <= ? ORDER BY s.at, s.user LIMIT ?",
                    s.t.seen, s.t.queue
                ))
                .bind(cutoff)
                .bind(room)
                .fetch_all(&mut **tx)
                .await?;
                let taken: Vec<u64> = inactive.iter().map(|(u, _)| unsigned(*u)).collect();
                for (user, queued) in inactive {
                    let user = unsigned(user);
                    let job = if queued {
                        s.remove(tx, &s.t.queue, user).await?;
                        s.job_of(tx, user).await?
                    } else {
                        Job::INACTIVE
                    };
                    users.push(claimed(user, job));
                }
                s.remove_all(tx, &s.t.seen, &taken).await?;
            }
            if !users.is_empty() {
                let ids: Vec<u64> = users.iter().map(|c| c.user).collect();
                s.put_batch(tx, id, &ids).await?;
                s.set_lease(tx, id, deadline).await?;
            }
            Ok(Batch { id, deadline, users, held, unreadable: Vec::new(), returned })
        })
    }

    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>> {
        let ClaimUser { user, reason, times, batch: id } = request;
        in_tx!(self, |s, tx| {
            let now = now_of(times);
            let deadline = now.saturating_add(times.lease_ms);
            let attempts = s.job(tx, user).await?.map_or(0, |j| j.attempts);
            let job = Job { reason, marked_at: now, attempts };
            s.put_job(tx, user, job).await?;
            if let Some((held_by, until)) = s.batch_of(tx, user).await? {
                if until > now {
                    return Ok(None);
                }
                let mut members = s.batch_users(tx, held_by).await?;
                members.retain(|u| *u != user);
                s.put_batch(tx, held_by, &members).await?;
            }
            s.remove(tx, &s.t.queue, user).await?;
            s.remove(tx, &s.t.seen, user).await?;
            s.put_batch(tx, id, &[user]).await?;
            s.set_lease(tx, id, deadline).await?;
            Ok(Some(Batch {
                id,
                deadline,
                users: vec![claimed(user, job)],
                held: None,
                unreadable: Vec::new(),
                returned: Vec::new(),
            }))
        })
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async { Ok(None) })
    }

    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?, ?)", s.t.writers))
                .bind(id as i64)
                .bind(wall_ms())
                .bind(i64::try_from(backlog).unwrap_or(i64::MAX))
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("DELETE FROM {} WHERE id = ?", s.t.writers))
                .bind(id as i64)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        in_tx!(self, |s, tx| { s.writers_hold(tx, writers).await })
    }

    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        Box::pin(async move {
            self.ready().await?;
            Ok(Health::default())
        })
    }

    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>> {
        let FinishRequest { batch, done, failed, now, follow_up_at, stuck, receipts } = request;
        in_tx!(self, |s, tx| {
            let lease: Option<i64> =
                sqlx::query_scalar(&format!("SELECT deadline FROM {} WHERE batch = ?", s.t.lease))
                    .bind(batch.id as i64)
                    .fetch_optional(&mut **tx)
                    .await?;
            if lease != Some(batch.deadline) {
                return Ok(None);
            }
            let ids: Vec<u64> = done.iter().map(|c| c.user).collect();
            let mut jobs = s.jobs(tx, &ids).await?;
            if let Some(receipts) = receipts {
                sqlx::query(&format!("DELETE FROM {} WHERE at < ?", s.t.receipt))
                    .bind(now - receipts.keep_ms)
                    .execute(&mut **tx)
                    .await?;
                for (c, tag) in done.iter().zip(&receipts.tags) {
                    // An opt-out may have taken over a running erasure.
                    let reason = jobs.get(&c.user).map_or(c.reason, |j| j.reason);
                    sqlx::query(&format!(
                        "INSERT INTO {} (tag, at, reason, erasers, attempts) \
                             VALUES (?, ?, ?, ?, ?)",
                        s.t.receipt
                    ))
                    .bind(tag)
                    .bind(now)
                    .bind(reason.code())
                    .bind(&receipts.erasers)
                    .bind(i64::from(c.attempts.saturating_add(1)))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            let mut confirmed = Vec::with_capacity(done.len());
            let mut with_job = Vec::with_capacity(done.len());
            for c in done {
                let Some(Job { reason, marked_at, .. }) = jobs.remove(&c.user) else {
                    confirmed.push(Confirmed::Erased);
                    continue;
                };
                with_job.push(c.user);
                if reason != ErasureReason::Inactive {
                    let opt_out = reason == ErasureReason::OptOut;
                    let inv = Invalidation { user: c.user, since: marked_at, until: now, opt_out };
                    s.announce(tx, inv).await?;
                }
                if reason == ErasureReason::OptOut
                    && s.score(tx, &s.t.seen, c.user).await?.is_some()
                {
                    s.set_due(tx, c.user, follow_up_at).await?;
                    s.put_job(tx, c.user, Job::opt_out(now)).await?;
                    confirmed.push(Confirmed::ErasedWithFollowUp);
                } else {
                    s.remove(tx, &s.t.job, c.user).await?;
                    confirmed.push(Confirmed::Erased);
                }
            }
            // A user without a job has no failing entry either (they go together).
            s.remove_all(tx, &s.t.failing, &with_job).await?;
            let mut failing = Vec::with_capacity(failed.len());
            for &Retry { claimed: c, due } in failed {
                let reason = s.job(tx, c.user).await?.map_or(c.reason, |j| j.reason);
                s.set_due(tx, c.user, due).await?;
                let attempts = c.attempts.saturating_add(1);
                s.put_job(tx, c.user, Job { reason, marked_at: c.marked_at, attempts }).await?;
                let row: Option<(i64, i64)> = sqlx::query_as(&format!(
                    "SELECT since, reported FROM {} WHERE user = ?",
                    s.t.failing
                ))
                .bind(c.user as i64)
                .fetch_optional(&mut **tx)
                .await?;
                let (since, reported) = row.unwrap_or((now, 0));
                let report = now - since >= stuck.after_ms && now - reported >= stuck.every_ms;
                sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?, ?)", s.t.failing))
                    .bind(c.user as i64)
                    .bind(since)
                    .bind(if report { now } else { reported })
                    .execute(&mut **tx)
                    .await?;
                failing.push(Failing { since, report });
            }
            s.end_batch(tx, batch.id).await?;
            Ok(Some(Finish { confirmed, failing }))
        })
    }

    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>> {
        in_tx!(self, |s, tx| {
            let all = s.receipts_since(tx, now - keep_ms).await?;
            Ok(all.into_iter().filter(|r| r.tag == tag).map(|r| r.receipt).collect())
        })
    }

    fn schedule(&self, request: ScheduleRequest) -> BoxFuture<'_, Result<Marked>> {
        let ScheduleRequest { user, reason, marked_at, due } = request;
        in_tx!(self, |s, tx| {
            let job = s.job(tx, user).await?;
            if s.batch_of(tx, user).await?.is_some() {
                if reason == ErasureReason::OptOut {
                    let job = job.unwrap_or(Job { reason, marked_at, attempts: 0 });
                    s.put_job(tx, user, Job { reason: ErasureReason::OptOut, ..job }).await?;
                }
                return Ok(Marked::AlreadyRunning);
            }
            if let Some(job) = job
                && s.score(tx, &s.t.queue, user).await?.is_some()
                && (reason != ErasureReason::OptOut || job.reason == ErasureReason::OptOut)
            {
                return Ok(Marked::AlreadyScheduled);
            }
            s.set_due(tx, user, due.unwrap_or(i64::MAX)).await?;
            s.put_job(tx, user, Job { reason, marked_at, attempts: 0 }).await?;
            if reason != ErasureReason::OptOut {
                let inv = Invalidation { user, since: marked_at, until: marked_at, opt_out: false };
                s.announce(tx, inv).await?;
            }
            Ok(Marked::Scheduled)
        })
    }

    fn unschedule_gone(&self, user: u64) -> BoxFuture<'_, Result<bool>> {
        in_tx!(self, |s, tx| {
            let Some(job) = s.job(tx, user).await? else { return Ok(false) };
            if !job.reason.is_gone() || !s.remove(tx, &s.t.queue, user).await? {
                return Ok(false);
            }
            s.remove(tx, &s.t.job, user).await?;
            s.remove(tx, &s.t.failing, user).await?;
            Ok(true)
        })
    }

    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        in_tx!(self, |s, tx| {
            Ok(RawStatus {
                last_seen: s.score(tx, &s.t.seen, user).await?,
                queued_due: s
                    .score(tx, &s.t.queue, user)
                    .await?
                    .map(|d| (d != i64::MAX).then_some(d)),
                leased_until: s.batch_of(tx, user).await?.map(|(_, deadline)| deadline),
                job: s.job(tx, user).await?,
            })
        })
    }

    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        in_tx!(self, |s, tx| {
            let now = now_of(times);
            let cutoff = now.saturating_sub(times.inactive_ms);
            let mut entries = Vec::new();
            for (user, _) in s.up_to(tx, &s.t.queue, now, limit).await? {
                let job = s.job_of(tx, user).await?;
                if !s.came_back(tx, user, job).await? {
                    let last_seen = s.score(tx, &s.t.seen, user).await?;
                    let Job { reason, marked_at, .. } = job;
                    entries.push(PreviewEntry { user, reason, marked_at, last_seen });
                }
            }
            let room = limit.saturating_sub(entries.len());
            for (user, seen) in s.up_to(tx, &s.t.seen, cutoff, room).await? {
                let Job { reason, marked_at, .. } = match s.score(tx, &s.t.queue, user).await? {
                    None => Job::INACTIVE,
                    Some(due) if due > now => s.job_of(tx, user).await?,
                    Some(_) => continue, // due: listed above
                };
                entries.push(PreviewEntry { user, reason, marked_at, last_seen: Some(seen) });
            }
            Ok(RawPreview {
                inactive_total: s.count_up_to(tx, &s.t.seen, "at", cutoff).await?,
                due_total: s.count_up_to(tx, &s.t.queue, "due", now).await?,
                expired_leases: s.count_up_to(tx, &s.t.lease, "deadline", now).await?,
                entries,
            })
        })
    }

    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        in_tx!(self, |s, tx| {
            // AUTOINCREMENT never reuses a number, even after the rows expire.
            let head: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = ?")
                    .bind(format!("{}.feed", s.t.prefix))
                    .fetch_optional(&mut **tx)
                    .await?;
            Ok(head.unwrap_or(0).to_string())
        })
    }

    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>> {
        in_tx!(self, |s, tx| {
            let after: i64 = cursor.parse().unwrap_or(0);
            let rows: Vec<(i64, i64, i64, i64, bool)> = sqlx::query_as(&format!(
                "SELECT seq, user, since, until, opt_out FROM {} WHERE seq > ? \
                     ORDER BY seq LIMIT ?",
                s.t.feed
            ))
            .bind(after)
            .bind(i64::try_from(FEED_READ).unwrap_or(i64::MAX))
            .fetch_all(&mut **tx)
            .await?;
            let next = rows.last().map_or(after, |r| r.0);
            let entries = rows
                .into_iter()
                .map(|(_, user, since, until, opt_out)| Invalidation {
                    user: unsigned(user),
                    since,
                    until,
                    opt_out,
                })
                .collect();
            Ok(FeedPage { entries, cursor: next.to_string() })
        })
    }

    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| {
            s.kv_put(tx, &format!("confirm:{}", who.tag), &value, ttl_ms).await
        })
    }

    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>> {
        in_tx!(self, |s, tx| {
            let key = format!("confirm:{}", who.tag);
            let value = s.kv_get(tx, &key).await?;
            sqlx::query(&format!("DELETE FROM {} WHERE key = ?", s.t.kv))
                .bind(&key)
                .execute(&mut **tx)
                .await?;
            Ok(value)
        })
    }

    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        in_tx!(self, |s, tx| {
            let key = format!("rate:{action}:{}:{window}", who.tag);
            match s.kv_get(tx, &key).await? {
                Some(count) => {
                    let next = count.parse::<u64>().unwrap_or(0) + 1;
                    sqlx::query(&format!("UPDATE {} SET value = ? WHERE key = ?", s.t.kv))
                        .bind(next.to_string())
                        .bind(&key)
                        .execute(&mut **tx)
                        .await?;
                    Ok(next)
                }
                None => {
                    s.kv_put(tx, &key, "1", ttl_ms).await?;
                    Ok(1)
                }
            }
        })
    }

    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        in_tx!(self, |s, tx| {
            if s.kv_get(tx, "audit").await?.is_some() {
                return Ok(false);
            }
            s.kv_put(tx, "audit", &holder.to_string(), ttl_ms).await?;
            Ok(true)
        })
    }

    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES ('audit', ?)", s.t.meta))
                .bind(summary)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        in_tx!(self, |s, tx| { s.meta(tx, "audit").await })
    }

    fn receipt_tags(&self, now: i64, keep_ms: i64) -> BoxFuture<'_, Result<Vec<TaggedReceipt>>> {
        in_tx!(self, |s, tx| { s.receipts_since(tx, now - keep_ms).await })
    }

    fn adopt<'a>(&'a self, users: &'a [Adoptee]) -> BoxFuture<'a, Result<AdoptCounts>> {
        in_tx!(self, |s, tx| {
            let mut counts = AdoptCounts::default();
            for &Adoptee { user, ms, if_new } in users {
                if s.job(tx, user).await?.is_some() || s.batch_of(tx, user).await?.is_some() {
                    counts.erasing += 1;
                    continue;
                }
                match s.score(tx, &s.t.seen, user).await? {
                    None => counts.new += 1,
                    Some(old) if old < ms && !if_new => counts.moved += 1,
                    Some(_) => {
                        counts.kept += 1;
                        continue;
                    }
                }
                sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?)", s.t.seen))
                    .bind(user as i64)
                    .bind(ms)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(counts)
        })
    }

    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        in_tx!(self, |s, tx| {
            let mut known = Vec::with_capacity(users.len());
            for &user in users {
                known.push(
                    s.score(tx, &s.t.seen, user).await?.is_some()
                        || s.job(tx, user).await?.is_some(),
                );
            }
            Ok(known)
        })
    }

    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("INSERT OR IGNORE INTO {} VALUES ('secret', ?)", s.t.meta))
                .bind(candidate)
                .execute(&mut **tx)
                .await?;
            s.meta(tx, "secret")
                .await?
                .ok_or_else(|| Error::Corrupt("the namespace's secret vanished".into()))
        })
    }

    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        in_tx!(self, |s, tx| {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", s.t.seen))
                .fetch_one(&mut **tx)
                .await?;
            Ok(unsigned(n))
        })
    }

    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>> {
        in_tx!(self, |s, tx| {
            let mut seen = Vec::with_capacity(ranges.len());
            for r in ranges {
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM {} WHERE at > ? AND at <= ?",
                    s.t.seen
                ))
                .bind(r.after)
                .bind(r.up_to)
                .fetch_one(&mut **tx)
                .await?;
                seen.push(unsigned(n));
            }
            let failing_since: Vec<i64> =
                sqlx::query_scalar(&format!("SELECT since FROM {}", s.t.failing))
                    .fetch_all(&mut **tx)
                    .await?;
            let mut survey = RawSurvey {
                seen,
                scheduled_due: s.count_up_to(tx, &s.t.queue, "due", now).await?,
                failing_since,
                ..RawSurvey::default()
            };
            let jobs: Vec<(String, i64)> =
                sqlx::query_as(&format!("SELECT reason, attempts FROM {}", s.t.job))
                    .fetch_all(&mut **tx)
                    .await?;
            // Every job, as the Redis store counts them: scheduled and running erasures.
            for (code, attempts) in jobs {
                let Ok(reason) = reason(&code) else { continue };
                survey.scheduled[reason.index()] += 1;
                let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
                survey.max_attempts = survey.max_attempts.max(attempts);
            }
            let beats: Vec<(i64, i64, i64)> =
                sqlx::query_as(&format!("SELECT id, at, backlog FROM {}", s.t.writers))
                    .fetch_all(&mut **tx)
                    .await?;
            let wall = wall_ms();
            // Heartbeats are stamped on the wall clock; report them on the survey's.
            survey.writers = beats
                .into_iter()
                .map(|(id, at, backlog)| Heartbeat {
                    writer: (id as u64).to_string(),
                    at: now.saturating_sub(wall.saturating_sub(at)),
                    backlog: unsigned(backlog),
                })
                .collect();
            Ok(survey)
        })
    }

    fn pending(&self) -> BoxFuture<'_, Result<Pending>> {
        in_tx!(self, |s, tx| {
            let scheduled: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", s.t.queue))
                .fetch_one(&mut **tx)
                .await?;
            let (failing, oldest): (i64, Option<i64>) =
                sqlx::query_as(&format!("SELECT COUNT(*), MIN(since) FROM {}", s.t.failing))
                    .fetch_one(&mut **tx)
                    .await?;
            Ok(Pending {
                scheduled: unsigned(scheduled),
                failing: unsigned(failing),
                oldest_failing_since: oldest,
            })
        })
    }
}
