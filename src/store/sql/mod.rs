//! The SQL stores: the protocol on a SQL database through sqlx 0.8 (the sqlx of teloxide's
//! SQL storages), for SQLite (`SqliteStore`) and PostgreSQL (`PostgresStore`).
//!
//! Every operation that writes is one transaction that first takes the namespace's write
//! lock (`BEGIN IMMEDIATE` on SQLite, a transaction-scoped advisory lock in a transaction
//! that states `READ COMMITTED` on PostgreSQL, whatever the database's default), so such
//! operations on a namespace run one at a time, as Redis runs its Lua scripts: all or
//! nothing, in the same steps as the memory store. Operations that only read (status,
//! counts, previews, receipts, the audit's lookups) run on one snapshot without the lock.
//! The statements are written once, with `?` parameters and the SQL both databases speak;
//! a [`Dialect`] supplies the rest (tables, locking, clock, health).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures_util::future::BoxFuture;
use tokio::sync::OnceCell;

use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::receipts::RawReceipt;
use crate::store::{
    AdoptCounts, Adoptee, Backend, Batch, CensusAnswer, CensusPage, CensusWalk, ClaimRequest,
    ClaimTimes, ClaimUser, Claimed, Confirmed, Decision, FEED_KEEP_MS, FEED_READ, Failing,
    FeedPage, Finish, FinishRequest, Hashed, Health, Heartbeat, Interaction, Invalidation, Job,
    LastErasure, Marked, Notice, PreviewEntry, Queued, RawPreview, RawStatus, RawSurvey, Retry,
    ScheduleRequest, SeenRange, Unschedule, WriterWindow, came_back, census_cursor, follow_up,
    held_through, postponed, take_or_drop, too_many_notices,
};

mod adoption;
mod census;
mod ops;
#[cfg(feature = "postgres")]
mod postgres;
mod schema;
#[cfg(feature = "sqlite")]
mod sqlite;

#[cfg(feature = "postgres")]
pub use postgres::{PostgresDiagnosis, PostgresStore};
#[cfg(feature = "sqlite")]
pub use sqlite::{SqliteDiagnosis, SqliteStore};

pub use schema::TableVersion;
pub(crate) use schema::Tables;

/// Rows per multi-row statement (at most three parameters each).
const CHUNK: usize = 500;

/// A statement parameter.
#[derive(Debug, Clone)]
pub(crate) enum Arg {
    I(i64),
    T(String),
}

impl From<i64> for Arg {
    fn from(v: i64) -> Self {
        Self::I(v)
    }
}

impl From<&str> for Arg {
    fn from(v: &str) -> Self {
        Self::T(v.to_owned())
    }
}

impl From<String> for Arg {
    fn from(v: String) -> Self {
        Self::T(v)
    }
}

/// A user id as stored (ids are below 2^63).
fn id(user: u64) -> Arg {
    Arg::I(user as i64)
}

/// A value read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Val {
    I(i64),
    T(String),
    Null,
}

impl Val {
    fn i(&self) -> Result<i64> {
        match self {
            Self::I(v) => Ok(*v),
            other => Err(Error::Corrupt(format!("expected a number, got {other:?}"))),
        }
    }

    fn opt_i(&self) -> Result<Option<i64>> {
        match self {
            Self::Null => Ok(None),
            other => other.i().map(Some),
        }
    }

    fn t(&self) -> Result<&str> {
        match self {
            Self::T(v) => Ok(v),
            other => Err(Error::Corrupt(format!("expected text, got {other:?}"))),
        }
    }

    /// The id as stored, bit for bit: a row this crate did not write (0, negative, past
    /// `MAX_USER_ID`) reads as a value that is no user id (`humans::is_user_id` refuses
    /// it), never as another user, and [`id`] writes it back unchanged.
    fn user(&self) -> Result<u64> {
        Ok(self.i()? as u64)
    }
}

/// Binds `args` to a statement of database `DB`.
fn bind_all<'q, DB: sqlx::Database>(
    query: sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>,
    args: Vec<Arg>,
) -> sqlx::query::Query<'q, DB, <DB as sqlx::Database>::Arguments<'q>>
where
    i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    String: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
{
    args.into_iter().fold(query, |q, arg| match arg {
        Arg::I(v) => q.bind(v),
        Arg::T(v) => q.bind(v),
    })
}

/// A row's values: integers where the column holds one, else text (or NULL).
fn values<R: sqlx::Row>(row: &R) -> Result<Vec<Val>>
where
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    (0..row.len())
        .map(|i| {
            if let Ok(v) = row.try_get::<Option<i64>, _>(i) {
                return Ok(v.map_or(Val::Null, Val::I));
            }
            let v: Option<String> = row.try_get(i)?;
            Ok(v.map_or(Val::Null, Val::T))
        })
        .collect()
}

/// What differs between the databases.
pub(crate) trait Dialect: Send + Sync + 'static {
    /// An open transaction.
    type Tx: Send + 'static;

    /// The database's name, for messages.
    const NAME: &'static str;

    /// The statements that create the tables (idempotent), or why this namespace cannot
    /// have tables here.
    fn schema(&self, t: &Tables) -> Result<Vec<String>>;

    /// Of the tables and indexes `names`, those the database holds under the same name in
    /// another letter case (read inside a transaction of [`begin`](Self::begin)): SQLite
    /// compares names without case, so those are another namespace's, which this one would
    /// share. None where names keep their case (PostgreSQL's quoted names).
    fn same_but_case<'a>(
        tx: &'a mut Self::Tx,
        names: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>>;

    /// Begins a transaction holding the write lock numbered `lock` (one per namespace), in
    /// which every statement after the lock reads what was committed before it (the
    /// isolation is stated, never left to the database's or the pool's default).
    fn begin(&self, lock: i64) -> BoxFuture<'_, Result<Self::Tx>>;

    /// Begins a read-only transaction that sees one snapshot of the database and takes no
    /// lock: for the counts and reads that change nothing (`tracked`, `preview`,
    /// `pending`, `status`), which then never hold writers back.
    fn begin_read(&self) -> BoxFuture<'_, Result<Self::Tx>>;

    fn commit(tx: Self::Tx) -> BoxFuture<'static, Result<()>>;

    /// Runs a statement; the number of rows it changed.
    fn exec<'a>(tx: &'a mut Self::Tx, sql: &'a str, args: Vec<Arg>) -> BoxFuture<'a, Result<u64>>;

    /// Runs a query; its rows.
    fn rows<'a>(
        tx: &'a mut Self::Tx,
        sql: &'a str,
        args: Vec<Arg>,
    ) -> BoxFuture<'a, Result<Vec<Vec<Val>>>>;

    /// The time (ms) for what expires in real time (nonces, the feed, heartbeats) and the
    /// claims' "now" when the bot gives none: the server's clock where there is a server.
    fn now<'a>(tx: &'a mut Self::Tx) -> BoxFuture<'a, Result<i64>>;

    /// A query of the feed's highest sequence number ever given (0 if none).
    fn feed_head_sql(t: &Tables) -> String;

    /// The server's clock, if the database has one of its own.
    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// What the database says about its own safety.
    fn health<'a>(&'a self, warned: &'a AtomicBool) -> BoxFuture<'a, Result<Health>>;
}

/// One namespace of a SQL store.
pub(crate) struct SqlNamespace<D: Dialect> {
    db: Arc<D>,
    t: Tables,
    /// The namespace's lock number (PostgreSQL's advisory lock).
    lock: i64,
    /// Set once the tables exist at this version.
    ready: OnceCell<()>,
    /// A durability risk was reported (once per process).
    warned: AtomicBool,
}

/// An open transaction and its "now".
pub(crate) struct Tx<D: Dialect> {
    inner: D::Tx,
    /// See [`Dialect::now`].
    wall: i64,
    /// Rows a claim read and left in place because this version cannot read them (see
    /// [`Batch::unreadable`]), at most [`MAX_REPORTED`] by name.
    unreadable: Vec<String>,
    /// Such rows beyond those named.
    unnamed: u64,
}

/// Rows a claim names in [`Batch::unreadable`], as the Redis claim does; it counts the rest.
const MAX_REPORTED: usize = 100;

impl<D: Dialect> Tx<D> {
    fn new(inner: D::Tx, wall: i64) -> Self {
        Self { inner, wall, unreadable: Vec::new(), unnamed: 0 }
    }

    /// Notes a row left in place because it cannot be read (`entry` names its table and
    /// id, and its values where they are not the id).
    fn report(&mut self, entry: String) {
        if self.unreadable.len() < MAX_REPORTED {
            self.unreadable.push(entry);
        } else {
            self.unnamed += 1;
        }
    }

    /// What [`report`](Self::report) noted, for [`Batch::unreadable`].
    fn take_unreadable(&mut self) -> Vec<String> {
        let mut entries = std::mem::take(&mut self.unreadable);
        if self.unnamed > 0 {
            entries.push(format!("{} more rows this version cannot read", self.unnamed));
            self.unnamed = 0;
        }
        entries
    }
}

/// A stored count read as one (counts are never negative).
fn unsigned(v: i64) -> u64 {
    v.max(0).unsigned_abs()
}

fn reason(code: &str) -> Result<ErasureReason> {
    ErasureReason::from_code(code).ok_or_else(|| Error::Corrupt(format!("reason {code:?}")))
}

/// A job from its columns `reason, marked_at, attempts`: a known reason, integer times and
/// attempts that are no negative number (what `claim.lua` reads as a job), else
/// [`Error::Corrupt`].
fn job_from(row: &[Val]) -> Result<Job> {
    let attempts = row[2].i()?;
    if attempts < 0 {
        return Err(Error::Corrupt(format!("{attempts} attempts")));
    }
    Ok(Job {
        reason: reason(row[0].t()?)?,
        marked_at: row[1].i()?,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
    })
}

/// A stored value as a report shows it.
fn shown(v: &Val) -> String {
    match v {
        Val::I(v) => v.to_string(),
        Val::T(v) => v.clone(),
        Val::Null => "NULL".to_owned(),
    }
}

/// A read of the rows of `select` (its first two columns: the id and `order`) with
/// `order <= ?`, in (`order`, `uid`) order, `LIMIT ?`; with `after`, only past the key
/// `(?, ?)`. No condition on the id: one made SQLite, and PostgreSQL before its first
/// `ANALYZE`, read the whole table by its primary key and sort it at every claim, where
/// the index on (`order`, `uid`) reads only the rows returned.
fn range_sql(select: &str, order: &str, uid: &str, after: bool) -> String {
    let after = if after { format!(" AND ({order}, {uid}) > (?, ?)") } else { String::new() };
    format!("{select} WHERE {order} <= ?{after} ORDER BY {order}, {uid} LIMIT ?")
}

/// `?, ?, ...`: `n` parameters.
fn params(n: usize) -> String {
    vec!["?"; n].join(", ")
}

/// A lock number for a namespace (FNV-1a of its name).
fn lock_of(ns: &str) -> i64 {
    let hash = ns.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    hash as i64
}

impl<D: Dialect> SqlNamespace<D> {
    pub(crate) fn new(db: Arc<D>, namespace: &str) -> Self {
        Self {
            db,
            t: Tables::new(namespace),
            lock: lock_of(namespace),
            ready: OnceCell::new(),
            warned: AtomicBool::new(false),
        }
    }

    /// A write transaction on this namespace's tables (created first if need be).
    async fn begin(&self) -> Result<Tx<D>> {
        self.ready().await?;
        let mut inner = self.db.begin(self.lock).await?;
        let wall = D::now(&mut inner).await?;
        Ok(Tx::new(inner, wall))
    }

    /// A read-only transaction on one snapshot, without the namespace's lock (see
    /// [`Dialect::begin_read`]).
    async fn begin_read(&self) -> Result<Tx<D>> {
        self.ready().await?;
        let mut inner = self.db.begin_read().await?;
        let wall = D::now(&mut inner).await?;
        Ok(Tx::new(inner, wall))
    }

    async fn exec(&self, tx: &mut Tx<D>, sql: &str, args: Vec<Arg>) -> Result<u64> {
        D::exec(&mut tx.inner, sql, args).await
    }

    async fn rows(&self, tx: &mut Tx<D>, sql: &str, args: Vec<Arg>) -> Result<Vec<Vec<Val>>> {
        D::rows(&mut tx.inner, sql, args).await
    }

    /// The single value of a one-row query (`None`: no row).
    async fn scalar(&self, tx: &mut Tx<D>, sql: &str, args: Vec<Arg>) -> Result<Option<Val>> {
        Ok(self.rows(tx, sql, args).await?.into_iter().next().and_then(|r| r.into_iter().next()))
    }

    async fn count(&self, tx: &mut Tx<D>, sql: &str, args: Vec<Arg>) -> Result<u64> {
        Ok(self.scalar(tx, sql, args).await?.map_or(Ok(0), |v| v.i())?.max(0).unsigned_abs())
    }

    async fn job(&self, tx: &mut Tx<D>, user: u64) -> Result<Option<Job>> {
        let sql = format!("SELECT reason, marked_at, attempts FROM {} WHERE uid = ?", self.t.job);
        self.rows(tx, &sql, vec![id(user)]).await?.first().map(|r| job_from(r)).transpose()
    }

    /// A claim's read of `user`'s job ([`Job::INACTIVE`] without one), or `None` where its
    /// row cannot be read (a reason this version does not know, written by another version
    /// or by hand): reported, and the user is left where they are.
    async fn readable_job(&self, tx: &mut Tx<D>, user: u64) -> Result<Option<Job>> {
        let sql = format!("SELECT reason, marked_at, attempts FROM {} WHERE uid = ?", self.t.job);
        let Some(row) = self.rows(tx, &sql, vec![id(user)]).await?.into_iter().next() else {
            return Ok(Some(Job::INACTIVE));
        };
        if let Ok(job) = job_from(&row) {
            return Ok(Some(job));
        }
        let values: Vec<String> = row.iter().map(shown).collect();
        tx.report(format!("user {user} job {}", values.join(",")));
        Ok(None)
    }

    async fn put_job(&self, tx: &mut Tx<D>, user: u64, job: Job) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (uid, reason, marked_at, attempts) VALUES (?, ?, ?, ?) \
             ON CONFLICT (uid) DO UPDATE SET reason = excluded.reason, \
             marked_at = excluded.marked_at, attempts = excluded.attempts",
            self.t.job
        );
        let args = vec![
            id(user),
            job.reason.code().into(),
            job.marked_at.into(),
            i64::from(job.attempts).into(),
        ];
        self.exec(tx, &sql, args).await.map(drop)
    }

    /// The jobs of those of `users` that have one.
    async fn jobs(&self, tx: &mut Tx<D>, users: &[u64]) -> Result<HashMap<u64, Job>> {
        let mut jobs = HashMap::new();
        for chunk in users.chunks(CHUNK) {
            let sql = format!(
                "SELECT uid, reason, marked_at, attempts FROM {} WHERE uid IN ({})",
                self.t.job,
                params(chunk.len())
            );
            for row in self.rows(tx, &sql, chunk.iter().map(|u| id(*u)).collect()).await? {
                jobs.insert(row[0].user()?, job_from(&row[1..])?);
            }
        }
        Ok(jobs)
    }

    /// A user's score in `table` (`seen`: `at`; `queue`: `due`).
    async fn score(&self, tx: &mut Tx<D>, table: &str, user: u64) -> Result<Option<i64>> {
        let column = if table == self.t.seen { "at" } else { "due" };
        let sql = format!("SELECT {column} FROM {table} WHERE uid = ?");
        self.scalar(tx, &sql, vec![id(user)]).await?.map(|v| v.i()).transpose()
    }

    /// Removes `user` from `table`; whether a row was there.
    async fn remove(&self, tx: &mut Tx<D>, table: &str, user: u64) -> Result<bool> {
        let sql = format!("DELETE FROM {table} WHERE uid = ?");
        Ok(self.exec(tx, &sql, vec![id(user)]).await? > 0)
    }

    /// Removes every one of `users` from `table`, a chunk per statement.
    async fn remove_all(&self, tx: &mut Tx<D>, table: &str, users: &[u64]) -> Result<()> {
        for chunk in users.chunks(CHUNK) {
            let sql = format!("DELETE FROM {table} WHERE uid IN ({})", params(chunk.len()));
            self.exec(tx, &sql, chunk.iter().map(|u| id(*u)).collect()).await?;
        }
        Ok(())
    }

    async fn set_due(&self, tx: &mut Tx<D>, user: u64, due: i64) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (uid, due) VALUES (?, ?) ON CONFLICT (uid) DO UPDATE \
             SET due = excluded.due",
            self.t.queue
        );
        self.exec(tx, &sql, vec![id(user), due.into()]).await.map(drop)
    }

    /// See `Backend::unschedule_gone` (and `unschedule_gone.lua`), one request.
    async fn unschedule_gone_in(&self, tx: &mut Tx<D>, request: Unschedule) -> Result<bool> {
        let Unschedule { user, only, postpone_to } = request;
        let Some(job) = self.job(tx, user).await? else { return Ok(false) };
        if !job.reason.is_gone() || only.is_some_and(|o| o != job) {
            return Ok(false);
        }
        if let Some(due) = postpone_to {
            // Only while it waits in the queue (not running), and later only.
            let Some(current) = self.score(tx, &self.t.queue, user).await? else {
                return Ok(false);
            };
            self.set_due(tx, user, due.max(current)).await?;
            return Ok(true);
        }
        if !self.remove(tx, &self.t.queue, user).await? {
            return Ok(false);
        }
        self.remove(tx, &self.t.job, user).await?;
        self.remove(tx, &self.t.failing, user).await?;
        Ok(true)
    }

    /// `(user, score)` of `table` with a score at or below `max`, lowest first.
    async fn up_to(
        &self,
        tx: &mut Tx<D>,
        table: &str,
        above: Option<i64>,
        max: i64,
        limit: usize,
    ) -> Result<Vec<(u64, i64)>> {
        let (column, what) = if table == self.t.seen { ("at", "seen") } else { ("due", "queue") };
        let select = format!("SELECT uid, {column} FROM {table}");
        let rows = self.range(tx, what, &select, column, (above, max), limit).await?;
        rows.iter().map(|r| Ok((r[0].user()?, r[1].i()?))).collect()
    }

    /// Up to `limit` rows of `select` (see [`range_sql`]; its id is the `uid` column
    /// beside `order`, `s.at` and `s.uid`) with `above < order <= max` (`bounds`; no lower
    /// bound if `above` is `None`), in (`order`, id) order, of
    /// user ids only: a row this crate did not write (0, negative, past `MAX_USER_ID`) is
    /// skipped, never claimed, so never erased as someone, and stays in place, reported as
    /// a `what` member (`seen`, `queue`). The range is read by key from where the last read
    /// ended, so rows skipped never hold back the ones after them, and the common case is
    /// one read.
    async fn range(
        &self,
        tx: &mut Tx<D>,
        what: &str,
        select: &str,
        order: &str,
        bounds: (Option<i64>, i64),
        limit: usize,
    ) -> Result<Vec<Vec<Val>>> {
        let (above, max) = bounds;
        let uid =
            order.rsplit_once('.').map_or("uid".to_owned(), |(alias, _)| format!("{alias}.uid"));
        let uid = uid.as_str();
        let mut out = Vec::new();
        // Above `above`: after its last possible id.
        let mut after: Option<(i64, i64)> = above.map(|a| (a, i64::MAX));
        while out.len() < limit {
            let want = limit - out.len();
            let sql = range_sql(select, order, uid, after.is_some());
            let mut args: Vec<Arg> = vec![max.into()];
            if let Some((order, id)) = after {
                args.extend([order.into(), id.into()]);
            }
            args.push(i64::try_from(want).unwrap_or(i64::MAX).into());
            let rows = self.rows(tx, &sql, args).await?;
            let complete = rows.len() < want;
            let Some(last) = rows.last() else { break };
            after = Some((last[1].i()?, last[0].i()?));
            for row in rows {
                let id = row[0].i()?;
                if id > 0 && crate::humans::is_user_id(id.unsigned_abs()) {
                    out.push(row);
                } else {
                    tx.report(format!("{what} member {id}"));
                }
            }
            if complete {
                break;
            }
        }
        Ok(out)
    }

    async fn count_up_to(
        &self,
        tx: &mut Tx<D>,
        table: &str,
        column: &str,
        max: i64,
    ) -> Result<u64> {
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} <= ?");
        self.count(tx, &sql, vec![max.into()]).await
    }

    /// The rows of `table` with `above < column <= max` (no lower bound if `above` is
    /// `None`).
    async fn count_between(
        &self,
        tx: &mut Tx<D>,
        table: &str,
        column: &str,
        above: Option<i64>,
        max: i64,
    ) -> Result<u64> {
        let Some(above) = above else { return self.count_up_to(tx, table, column, max).await };
        let sql = format!("SELECT COUNT(*) FROM {table} WHERE {column} <= ? AND {column} > ?");
        self.count(tx, &sql, vec![max.into(), above.into()]).await
    }

    /// The notices stored in `meta` (see `Backend::add_notice`).
    async fn notices(&self, tx: &mut Tx<D>) -> Result<Vec<Notice>> {
        Ok(self.meta(tx, "notices").await?.map_or_else(Vec::new, |t| Notice::parse_all(&t)))
    }

    /// The batch holding `user`, and its deadline (0 if its lease is gone).
    async fn batch_of(&self, tx: &mut Tx<D>, user: u64) -> Result<Option<(u64, i64)>> {
        let sql = format!(
            "SELECT b.batch, COALESCE(l.deadline, 0) FROM {} b LEFT JOIN {} l \
             ON l.batch = b.batch WHERE b.uid = ? LIMIT 1",
            self.t.batch, self.t.lease
        );
        let rows = self.rows(tx, &sql, vec![id(user)]).await?;
        rows.first().map(|r| Ok((r[0].i()? as u64, r[1].i()?))).transpose()
    }

    async fn set_lease(&self, tx: &mut Tx<D>, batch: u64, deadline: i64) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (batch, deadline) VALUES (?, ?) ON CONFLICT (batch) DO UPDATE \
             SET deadline = excluded.deadline",
            self.t.lease
        );
        self.exec(tx, &sql, vec![id(batch), deadline.into()]).await.map(drop)
    }

    async fn put_batch(&self, tx: &mut Tx<D>, batch: u64, users: &[u64]) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE batch = ?", self.t.batch);
        self.exec(tx, &sql, vec![id(batch)]).await?;
        for (n, chunk) in users.chunks(CHUNK).enumerate() {
            let values = vec!["(?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!("INSERT INTO {} (batch, pos, uid) VALUES {values}", self.t.batch);
            let mut args = Vec::with_capacity(chunk.len() * 3);
            for (i, user) in chunk.iter().enumerate() {
                let pos = i64::try_from(n * CHUNK + i).unwrap_or(i64::MAX);
                args.extend([id(batch), pos.into(), id(*user)]);
            }
            self.exec(tx, &sql, args).await?;
        }
        Ok(())
    }

    /// The members of `batch` in order, as stored (see [`Val::user`]): one that is no user
    /// id is written back unchanged when the batch is.
    async fn batch_users(&self, tx: &mut Tx<D>, batch: u64) -> Result<Vec<u64>> {
        let sql = format!("SELECT uid FROM {} WHERE batch = ? ORDER BY pos", self.t.batch);
        let rows = self.rows(tx, &sql, vec![id(batch)]).await?;
        rows.iter().map(|r| r[0].user()).collect()
    }

    async fn end_batch(&self, tx: &mut Tx<D>, batch: u64) -> Result<()> {
        for table in [&self.t.batch, &self.t.lease] {
            self.exec(tx, &format!("DELETE FROM {table} WHERE batch = ?"), vec![id(batch)]).await?;
        }
        Ok(())
    }

    async fn came_back(&self, tx: &mut Tx<D>, user: u64, job: Job) -> Result<bool> {
        let seen = self.score(tx, &self.t.seen, user).await?;
        Ok(came_back(job, seen))
    }

    /// Takes a user with a job (or of a dead pruner's batch) unless they came back (a gone
    /// user who came back goes to `returned`), or holds them (see [`Decision`]). `None`,
    /// leaving them in place and reporting them, for a member that is no user id (only a
    /// batch can hold one: the reads of ranges skip them) and a user whose job cannot be
    /// read.
    async fn take_or_drop(
        &self,
        tx: &mut Tx<D>,
        user: u64,
        hold: bool,
        users: &mut Vec<Claimed>,
        returned: &mut Vec<u64>,
    ) -> Result<Option<Decision>> {
        if !crate::humans::is_user_id(user) {
            tx.report(format!("batch member {}", user as i64));
            return Ok(None);
        }
        let Some(job) = self.readable_job(tx, user).await? else { return Ok(None) };
        let seen = self.score(tx, &self.t.seen, user).await?;
        let decision = take_or_drop(job, seen, hold);
        match decision {
            Decision::Drop => {
                self.remove(tx, &self.t.job, user).await?;
                self.remove(tx, &self.t.failing, user).await?;
                if job.reason.is_gone() {
                    returned.push(user);
                }
            }
            Decision::Take => {
                self.remove(tx, &self.t.seen, user).await?;
                users.push(Claimed::from_job(user, job));
            }
            Decision::Hold => {}
        }
        Ok(Some(decision))
    }

    /// Why writers hold inactivity claims back, if they do; forgets dead writers.
    async fn writers_hold(&self, tx: &mut Tx<D>, w: WriterWindow) -> Result<Option<String>> {
        let now = tx.wall;
        let sql = format!("DELETE FROM {} WHERE at < ?", self.t.writers);
        self.exec(tx, &sql, vec![now.saturating_sub(w.dead_ms).into()]).await?;
        let sql = format!("SELECT id, at, backlog FROM {} ORDER BY id", self.t.writers);
        for row in self.rows(tx, &sql, Vec::new()).await? {
            let (id, at, backlog) = (row[0].i()? as u64, row[1].i()?, row[2].i()?);
            if backlog > 0 {
                return Ok(Some(format!("writer {id} holds {backlog} unwritten interactions")));
            }
            if now - at > w.silent_ms {
                return Ok(Some(format!(
                    "writer {id} missed its heartbeats for {} s (it may be cut off from the store)",
                    (now - at) / 1000
                )));
            }
        }
        Ok(None)
    }

    /// Removes the feed's announcements older than its window.
    async fn trim_feed(&self, tx: &mut Tx<D>) -> Result<()> {
        let sql = format!("DELETE FROM {} WHERE at < ?", self.t.feed);
        self.exec(tx, &sql, vec![(tx.wall - FEED_KEEP_MS).into()]).await.map(drop)
    }

    async fn announce(&self, tx: &mut Tx<D>, inv: Invalidation) -> Result<()> {
        let now = tx.wall;
        self.trim_feed(tx).await?;
        let sql = format!(
            "INSERT INTO {} (at, uid, since, until, opt_out) VALUES (?, ?, ?, ?, ?)",
            self.t.feed
        );
        let args = vec![
            now.into(),
            id(inv.user),
            inv.since.into(),
            inv.until.into(),
            i64::from(inv.opt_out).into(),
        ];
        self.exec(tx, &sql, args).await.map(drop)
    }

    /// A live key-value entry (nonces, counters, the audit's lease).
    async fn kv_get(&self, tx: &mut Tx<D>, key: &str) -> Result<Option<String>> {
        let sql = format!("DELETE FROM {} WHERE expires <= ?", self.t.kv);
        self.exec(tx, &sql, vec![tx.wall.into()]).await?;
        let sql = format!("SELECT value FROM {} WHERE key = ?", self.t.kv);
        self.scalar(tx, &sql, vec![key.into()]).await?.map(|v| v.t().map(str::to_owned)).transpose()
    }

    async fn kv_put(&self, tx: &mut Tx<D>, key: &str, value: &str, ttl_ms: i64) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (key, value, expires) VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE \
             SET value = excluded.value, expires = excluded.expires",
            self.t.kv
        );
        let expires = tx.wall.saturating_add(ttl_ms.max(1));
        self.exec(tx, &sql, vec![key.into(), value.into(), expires.into()]).await.map(drop)
    }

    async fn meta(&self, tx: &mut Tx<D>, key: &str) -> Result<Option<String>> {
        let sql = format!("SELECT value FROM {} WHERE key = ?", self.t.meta);
        self.scalar(tx, &sql, vec![key.into()]).await?.map(|v| v.t().map(str::to_owned)).transpose()
    }

    async fn set_meta(&self, tx: &mut Tx<D>, key: &str, value: &str) -> Result<()> {
        let sql = format!(
            "INSERT INTO {} (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE \
             SET value = excluded.value",
            self.t.meta
        );
        self.exec(tx, &sql, vec![key.into(), value.into()]).await.map(drop)
    }
}

/// The expected output of a transaction's body, so that `?` inside it knows its error.
fn typed<T, F: std::future::Future<Output = Result<T>>>(body: F) -> F {
    body
}

/// Runs a body in one locked transaction, committed if the body succeeds and rolled back
/// otherwise (also when the call is dropped at its timeout). `in_tx!(read ...)`: in a
/// read-only transaction on one snapshot, without the lock.
macro_rules! in_tx {
    (read $this:ident, |$s:ident, $tx:ident| $body:block) => {
        in_tx!(@ begin_read, $this, |$s, $tx| $body)
    };
    ($this:ident, |$s:ident, $tx:ident| $body:block) => {
        in_tx!(@ begin, $this, |$s, $tx| $body)
    };
    (@ $begin:ident, $this:ident, |$s:ident, $tx:ident| $body:block) => {
        Box::pin(async move {
            let mut tx = $this.$begin().await?;
            let out = {
                let $s = $this;
                let $tx = &mut tx;
                typed(async move $body).await?
            };
            D::commit(tx.inner).await?;
            Ok(out)
        })
    };
}
use in_tx;

/// Claim times: the bot's when it gives them, else the transaction's "now".
fn now_of(times: ClaimTimes, wall: i64) -> i64 {
    times.now.unwrap_or(wall)
}

#[cfg(all(test, feature = "sqlite"))]
mod tests {
    use super::{Tables, range_sql};

    /// SQLite's plan for the claim's read of the inactive range, on a table of 20,000 rows
    /// without statistics (as after an adoption): the index on (at, uid), no sort.
    #[tokio::test]
    async fn the_claims_range_read_walks_the_index_and_sorts_nothing() {
        let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
        let t = Tables::new("plan");
        for statement in t.statements("INTEGER", "INTEGER PRIMARY KEY AUTOINCREMENT") {
            sqlx::query(&statement).execute(&pool).await.unwrap();
        }
        let values: Vec<String> =
            (0..20_000).map(|u| format!("({}, {})", 1_000_000_000 + u, u % 7)).collect();
        let fill = format!("INSERT INTO {} (uid, at) VALUES {}", t.seen, values.join(", "));
        sqlx::query(&fill).execute(&pool).await.unwrap();
        let select = format!(
            "SELECT s.uid, s.at, CAST(CASE WHEN q.uid IS NULL THEN 0 ELSE 1 END AS BIGINT) \
             FROM {} s LEFT JOIN {} q ON q.uid = s.uid",
            t.seen, t.queue
        );
        for after in [false, true] {
            let sql = format!("EXPLAIN QUERY PLAN {}", range_sql(&select, "s.at", "s.uid", after));
            let mut query = sqlx::query_as::<_, (i64, i64, i64, String)>(&sql).bind(3_i64);
            if after {
                query = query.bind(1_i64).bind(1_000_000_100_i64);
            }
            let plan: Vec<String> = query
                .bind(500_i64)
                .fetch_all(&pool)
                .await
                .unwrap()
                .into_iter()
                .map(|r| r.3)
                .collect();
            let plan = plan.join("\n");
            assert!(plan.contains("seen_at_uid"), "the (at, uid) index is read: {plan}");
            assert!(!plan.contains("TEMP B-TREE"), "nothing is sorted: {plan}");
        }
    }
}
