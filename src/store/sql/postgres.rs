//! [`PostgresStore`]: the SQL store on PostgreSQL, shared by every replica of a bot. Each
//! operation that writes takes its namespace's transaction-scoped advisory lock first, so
//! such operations on a namespace run one at a time across replicas (as Redis runs its scripts), and the
//! feed's numbers commit in order. Times come from the server's clock, as on Redis.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::BoxFuture;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};

use chrono::{DateTime, Utc};

use super::{Arg, Dialect, SqlNamespace, TableVersion, Tables, Val, bind_all, values};
use crate::error::{Error, Result};
use crate::store::{Health, Store, sealed, validate_namespace};

/// How each write transaction begins: see [`Dialect::begin`] for why the level is stated.
const BEGIN_WRITE: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// How each read-only transaction begins: one snapshot, which never fails to serialize.
const BEGIN_READ: &str = "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY";

/// The server's clock in unix milliseconds: the one clock of the store.
const CLOCK_SQL: &str = "SELECT CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)";

/// The oldest PostgreSQL the store runs on (identity columns, `pg_sequence_last_value`).
const MIN_VERSION: i64 = 110_000;

/// PostgreSQL's longest identifier, in bytes (`NAMEDATALEN - 1`): it cuts longer names.
const MAX_IDENTIFIER: usize = 63;

/// Refuses a namespace whose longest table or index name PostgreSQL would cut.
fn check_length(namespace: &str) -> Result<()> {
    let names = Tables::new(namespace).names();
    let Some(longest) = names.iter().max_by_key(|n| n.len()) else { return Ok(()) };
    if longest.len() <= MAX_IDENTIFIER {
        return Ok(());
    }
    let max = MAX_IDENTIFIER.saturating_sub(longest.len() - namespace.len());
    Err(Error::config(format!(
        "namespace {namespace:?} is {} bytes; on PostgreSQL a namespace is at most {max} bytes, \
         so that its longest table or index name ({longest:?}, {} bytes) fits PostgreSQL's \
         {MAX_IDENTIFIER}-byte identifiers",
        namespace.len(),
        longest.len()
    )))
}

/// A store on PostgreSQL, for bots that keep their data there: several replicas may share
/// one namespace.
///
/// It has the protocol of [`RedisStore`](crate::RedisStore) with the same behaviour (one
/// behavioural suite runs against every store): grouped interaction writes that never move
/// a user back, gone marks, claims with leases and takeover, retries, receipts, the feed
/// through which replicas drop each other's caches, writers' heartbeats, the audit's lease.
/// Each operation that writes is one `READ COMMITTED` transaction holding its namespace's
/// advisory lock (reads run on one `REPEATABLE READ` snapshot without it); both levels are
/// stated in each `BEGIN`, so a database or pool whose default is another level changes
/// nothing. Times are the
/// server's (`clock_timestamp()`), so replicas agree on "now" as they do on Redis. Tables
/// are created on first use, named after the namespace (`"retention.seen"`, ...), and
/// versioned.
///
/// ```no_run
/// # async fn run() -> teloxide_retention::Result<()> {
/// use std::time::Duration;
/// use teloxide_retention::{PostgresStore, Retention};
///
/// let store = PostgresStore::open("postgres://bot@localhost/bot").await?;
/// let retention = Retention::builder(store)
///     .inactive_after(Duration::from_secs(180 * 24 * 3600))
///     .build()?;
/// # let _ = retention;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    db: Arc<PostgresDb>,
}

/// The PostgreSQL dialect over the store's pool.
pub(crate) struct PostgresDb {
    pool: PgPool,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore").finish_non_exhaustive()
    }
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:password@host/db`, or
    /// `postgres:///db?host=/run/postgresql` for a unix socket).
    pub async fn open(url: &str) -> Result<Self> {
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(Error::config(format!(
                "{} is not a PostgreSQL URL (postgres://user@host/db)",
                redact(url)
            )));
        }
        let pool = PgPoolOptions::new().max_connections(8).connect(url).await?;
        Ok(Self::from_pool(pool))
    }

    /// The store on a pool the bot already has (its own tables and the crate's share the
    /// database).
    #[must_use]
    pub fn from_pool(pool: PgPool) -> Self {
        Self { db: Arc::new(PostgresDb { pool }) }
    }
}

/// What [`PostgresStore::diagnose`] found: what matters to the crate about the server and
/// a namespace's tables. The CLI's `check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresDiagnosis {
    /// `server_version`, such as `16.4`.
    pub version: String,
    /// The isolation level the store's write transactions run at, as the server reports it
    /// inside one (`read committed`: stated in each `BEGIN`, whatever the default).
    pub write_isolation: String,
    /// The isolation level of the store's read-only transactions, as the server reports it
    /// (`repeatable read`: one snapshot per read).
    pub read_isolation: String,
    /// The database's `default_transaction_isolation`, which the store overrides.
    pub default_isolation: String,
    /// `synchronous_commit`: `off` lets a server crash undo the last interactions written.
    pub synchronous_commit: String,
    /// The server's clock (`clock_timestamp()`), the one clock every replica uses.
    pub server_time: DateTime<Utc>,
    /// This machine's clock when the server's was read (the middle of the round trip).
    pub local_time: DateTime<Utc>,
    /// The version of the namespace's tables.
    pub tables: TableVersion,
}

impl PostgresStore {
    /// Reads what matters to the crate about the server and `namespace`'s tables: the
    /// server's version, the isolation levels the store's transactions run at, the
    /// server's clock against this machine's, and the tables' version. It creates,
    /// migrates and locks nothing; a bot may call it at start.
    ///
    /// ```no_run
    /// # async fn run() -> teloxide_retention::Result<()> {
    /// use teloxide_retention::{PostgresStore, TableVersion};
    ///
    /// let store = PostgresStore::open("postgres://bot@localhost/bot").await?;
    /// let found = store.diagnose("retention").await?;
    /// assert_eq!(found.write_isolation, "read committed");
    /// if let TableVersion::Unsupported(v) = &found.tables {
    ///     eprintln!("the tables are of version {v}: upgrade the crate");
    /// }
    /// # Ok(())
    /// # }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace; [`Error::Database`] if the database
    /// does not answer.
    pub async fn diagnose(&self, namespace: &str) -> Result<PostgresDiagnosis> {
        validate_namespace(namespace)?;
        check_length(namespace)?;
        let pool = &self.db.pool;
        let show = |setting: &'static str| async move {
            let value: String = sqlx::query_scalar(setting).fetch_one(pool).await?;
            Ok::<_, Error>(value)
        };
        let version = show("SHOW server_version").await?;
        let default_isolation = show("SHOW default_transaction_isolation").await?;
        let synchronous_commit = show("SHOW synchronous_commit").await?;
        let mut isolation = Vec::new();
        for begin in [BEGIN_WRITE, BEGIN_READ] {
            // Dropped without a commit: rolled back.
            let mut tx = pool.begin_with(begin).await?;
            let level: String =
                sqlx::query_scalar("SHOW transaction_isolation").fetch_one(&mut *tx).await?;
            isolation.push(level);
        }
        let read_isolation = isolation.pop().unwrap_or_default();
        let write_isolation = isolation.pop().unwrap_or_default();
        let before = Utc::now();
        let ms: i64 = sqlx::query_scalar(CLOCK_SQL).fetch_one(pool).await?;
        let local_time = before + (Utc::now() - before) / 2;
        let server_time = DateTime::from_timestamp_millis(ms)
            .ok_or_else(|| Error::Corrupt(format!("clock_timestamp() is {ms} ms")))?;
        let meta = Tables::new(namespace).meta;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(&meta)
            .fetch_one(pool)
            .await?;
        let recorded: Option<String> = if exists {
            let sql = format!("SELECT value FROM {meta} WHERE key = 'schema'");
            sqlx::query_scalar(&sql).fetch_optional(pool).await?
        } else {
            None
        };
        Ok(PostgresDiagnosis {
            version,
            write_isolation,
            read_isolation,
            default_isolation,
            synchronous_commit,
            server_time,
            local_time,
            tables: TableVersion::of(recorded.as_deref()),
        })
    }
}

/// A URL without its password, for messages.
/// `url` with its password hidden, for error messages: the userinfo's (which ends at the
/// last `@` before the query, since an unescaped password may hold `@` or `/`) and a
/// `password=` query parameter's.
fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://") else {
        return url.to_owned();
    };
    let start = scheme + 3;
    let (main, query) = match url[start..].find('?') {
        Some(q) => url.split_at(start + q),
        None => (url, ""),
    };
    let mut out = match main[start..].rfind('@') {
        Some(at) => {
            let at = start + at;
            let user = main[start..at].split(':').next().unwrap_or("");
            format!("{}{user}:***{}", &main[..start], &main[at..])
        }
        None => main.to_owned(),
    };
    if let Some(params) = query.strip_prefix('?') {
        let params: Vec<String> =
            params
                .split('&')
                .map(|p| {
                    if p.starts_with("password=") {
                        "password=***".to_owned()
                    } else {
                        p.to_owned()
                    }
                })
                .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl Store for PostgresStore {
    fn bind(&self, namespace: &str, _: sealed::Token) -> sealed::Bound {
        sealed::Bound(Arc::new(SqlNamespace::new(Arc::clone(&self.db), namespace)))
    }

    fn check_namespace(&self, namespace: &str, _: sealed::Token) -> Result<()> {
        check_length(namespace)
    }
}

/// `sql` with its `?` parameters numbered as PostgreSQL writes them (`$1`, `$2`, ...).
fn numbered(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len() + 16);
    let mut n = 0;
    for c in sql.chars() {
        if c == '?' {
            n += 1;
            out.push('$');
            out.push_str(&n.to_string());
        } else {
            out.push(c);
        }
    }
    out
}

/// `sql` with `args` bound.
fn query(
    sql: &str,
    args: Vec<Arg>,
) -> sqlx::query::Query<'_, Postgres, sqlx::postgres::PgArguments> {
    bind_all(sqlx::query(sql), args)
}

impl Dialect for PostgresDb {
    type Tx = Transaction<'static, Postgres>;

    const NAME: &'static str = "PostgreSQL";

    fn schema(&self, t: &Tables) -> Result<Vec<String>> {
        // Checked by the builder already; here too for a namespace bound without it.
        check_length(&t.prefix)?;
        Ok(t.statements("BIGINT", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY"))
    }

    fn same_but_case<'a>(
        _: &'a mut Self::Tx,
        _: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<String>>> {
        // Quoted names keep their case: `"Shop.seen"` and `"shop.seen"` are two tables.
        Box::pin(async { Ok(Vec::new()) })
    }

    fn begin(&self, lock: i64) -> BoxFuture<'_, Result<Self::Tx>> {
        Box::pin(async move {
            // READ COMMITTED, stated rather than assumed: each statement then reads what was
            // committed before it started, so every statement after the lock sees every
            // write the lock ordered before this transaction. Under a database's or pool's
            // REPEATABLE READ or SERIALIZABLE default the lock's own statement would take
            // the transaction's one snapshot before the lock was granted: a claim would
            // read users as they were before the writes it waited for (and fail to
            // serialize when it removed them).
            let mut tx = self.pool.begin_with(BEGIN_WRITE).await?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(lock).execute(&mut *tx).await?;
            Ok(tx)
        })
    }

    fn begin_read(&self) -> BoxFuture<'_, Result<Self::Tx>> {
        Box::pin(async move {
            // A read-only transaction never fails to serialize: one snapshot, no lock.
            Ok(self.pool.begin_with(BEGIN_READ).await?)
        })
    }

    fn commit(tx: Self::Tx) -> BoxFuture<'static, Result<()>> {
        Box::pin(async move { Ok(tx.commit().await?) })
    }

    fn exec<'a>(tx: &'a mut Self::Tx, sql: &'a str, args: Vec<Arg>) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let sql = numbered(sql);
            Ok(query(&sql, args).execute(&mut **tx).await?.rows_affected())
        })
    }

    fn rows<'a>(
        tx: &'a mut Self::Tx,
        sql: &'a str,
        args: Vec<Arg>,
    ) -> BoxFuture<'a, Result<Vec<Vec<Val>>>> {
        Box::pin(async move {
            let sql = numbered(sql);
            let rows = query(&sql, args).fetch_all(&mut **tx).await?;
            rows.iter().map(values).collect()
        })
    }

    fn now<'a>(tx: &'a mut Self::Tx) -> BoxFuture<'a, Result<i64>> {
        Box::pin(async move { Ok(sqlx::query_scalar(CLOCK_SQL).fetch_one(&mut **tx).await?) })
    }

    fn feed_head_sql(t: &Tables) -> String {
        format!(
            "SELECT COALESCE(pg_sequence_last_value(CAST(pg_get_serial_sequence('{}', 'seq') \
             AS regclass)), 0)",
            t.feed
        )
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let ms: i64 = sqlx::query_scalar(CLOCK_SQL).fetch_one(&self.pool).await?;
            Ok(Some(ms))
        })
    }

    fn health<'a>(&'a self, warned: &'a AtomicBool) -> BoxFuture<'a, Result<Health>> {
        Box::pin(async move {
            let version: String =
                sqlx::query_scalar("SHOW server_version_num").fetch_one(&self.pool).await?;
            let version: i64 = version.trim().parse().unwrap_or(0);
            if version < MIN_VERSION {
                return Err(Error::Unsafe(format!(
                    "PostgreSQL {version} is too old: the store needs 11 or newer"
                )));
            }
            let commit: String =
                sqlx::query_scalar("SHOW synchronous_commit").fetch_one(&self.pool).await?;
            if commit.eq_ignore_ascii_case("off") && !warned.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "PostgreSQL runs with synchronous_commit=off: a crash of the server can undo \
                     the last interactions written, and those users would look inactive since \
                     their earlier ones; set it to on"
                );
            }
            Ok(Health::default())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn a_password_never_shows_in_a_message() {
        for (url, shown) in [
            ("postgres://bot:secret@db/bot", "postgres://bot:***@db/bot"),
            ("postgres://bot:se@cr/et@db/bot", "postgres://bot:***@db/bot"),
            (
                "postgres://db/bot?user=bot&password=secret",
                "postgres://db/bot?user=bot&password=***",
            ),
            ("postgres://db/bot", "postgres://db/bot"),
        ] {
            assert_eq!(redact(url), shown);
        }
    }
}
