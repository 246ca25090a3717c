//! Which store the options name, and opening it: Redis (`--url`, `REDIS_URL`, with its
//! cluster, sentinel, shard and TLS options), SQLite or PostgreSQL (`--database-url`,
//! `DATABASE_URL`). Exactly one store is named; with none, the local Redis is the default.

use clap::ArgMatches;
use clap::parser::ValueSource;
use teloxide_retention::sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use teloxide_retention::sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use teloxide_retention::{
    PostgresStore, RedisSentinel, RedisStore, RedisTls, SqliteStore, TableVersion,
};

use super::*;

/// The Redis the CLI reads when no store is named.
const DEFAULT_REDIS: &str = "redis://127.0.0.1/";

/// How long the CLI waits for a SQL database to give it a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The store the options name, with the name of the option or variable that named it
/// (`--url` or `REDIS_URL`, `--database-url` or `DATABASE_URL`), for messages.
pub(super) enum Target {
    /// A Redis; `from` is `None` where nothing was named and the default applies.
    Redis { url: String, from: Option<&'static str> },
    /// A SQLite file (`sqlite:` URL).
    Sqlite { url: String, from: &'static str },
    /// A PostgreSQL database (`postgres://` or `postgresql://` URL).
    Postgres { url: String, from: &'static str },
}

impl Default for Target {
    fn default() -> Self {
        Self::Redis { url: DEFAULT_REDIS.to_owned(), from: None }
    }
}

/// The store, opened.
#[derive(Clone)]
pub(super) enum Opened {
    Redis(RedisStore),
    Sqlite(SqliteStore),
    Postgres(PostgresStore),
}

/// The name the user gave argument `id` under: its option (`--url`) or its variable
/// (`REDIS_URL`); `None` if it was not given.
fn named_as(
    matches: &ArgMatches,
    id: &str,
    option: &'static str,
    variable: &'static str,
) -> Option<&'static str> {
    match matches.value_source(id)? {
        ValueSource::EnvVariable => Some(variable),
        ValueSource::CommandLine => Some(option),
        _ => None,
    }
}

impl Target {
    /// The one store the options name. Naming both a Redis and a database, a database URL
    /// of no known kind, or a Redis-only option with a database is a usage error that says
    /// which options and variables it saw.
    pub(super) fn named(cli: &Cli, matches: &ArgMatches) -> Result<Self, Failure> {
        let redis = named_as(matches, "url", "--url", "REDIS_URL");
        let database = named_as(matches, "database_url", "--database-url", "DATABASE_URL");
        let (Some(url), Some(from)) = (&cli.database_url, database) else {
            let url = cli.url.clone().unwrap_or_else(|| DEFAULT_REDIS.to_owned());
            return Ok(Self::Redis { url, from: redis });
        };
        if let Some(redis) = redis {
            return Err(Failure::usage(format!(
                "two stores are named: {redis} (Redis) and {from} (a SQL database); a bot keeps \
                 its retention in one store: name only that one (unset the other variable, or \
                 drop the other option)"
            )));
        }
        let redis_only: Vec<&str> = [
            ("cluster", "--cluster", None),
            ("sentinel", "--sentinel", None),
            ("shards", "--shards", None),
            ("tls_ca", "--tls-ca", Some("REDIS_TLS_CA")),
            ("tls_cert", "--tls-cert", Some("REDIS_TLS_CERT")),
            ("tls_key", "--tls-key", Some("REDIS_TLS_KEY")),
        ]
        .into_iter()
        .filter_map(|(id, option, variable)| match matches.value_source(id) {
            Some(ValueSource::CommandLine) => Some(option),
            Some(ValueSource::EnvVariable) => variable,
            _ => None,
        })
        .collect();
        if !redis_only.is_empty() {
            return Err(Failure::usage(format!(
                "{} only appl{} to Redis, but {from} names a SQL database",
                redis_only.join(", "),
                if redis_only.len() == 1 { "ies" } else { "y" }
            )));
        }
        let url = url.clone();
        if url.starts_with("sqlite:") {
            Ok(Self::Sqlite { url, from })
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Ok(Self::Postgres { url, from })
        } else {
            Err(Failure::usage(format!(
                "{from} {:?} names no database this tool knows: use sqlite:path/to/file.db or \
                 postgres://user:password@host/db (for Redis, --url or REDIS_URL)",
                redact(&url)
            )))
        }
    }
}

/// `url` without its password (`postgres://bot:***@host/db`; a `password=` parameter's
/// value too), for messages: whatever the URL holds, its password is never printed. The
/// user part ends at the last `@` before the query, so a password with an unescaped `/` or
/// `@` is hidden whole.
pub(super) fn redact(url: &str) -> String {
    let Some(scheme) = url.find("://").map(|i| i + 3) else { return url.to_owned() };
    let (rest, query) = match url[scheme..].find(['?', '#']) {
        Some(i) => url[scheme..].split_at(i),
        None => (&url[scheme..], ""),
    };
    let rest = match rest.rfind('@').and_then(|at| Some((rest[..at].split_once(':')?.0, at))) {
        Some((user, at)) => format!("{user}:***{}", &rest[at..]),
        None => rest.to_owned(),
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _))
                if key.trim_start_matches(['?', '#']).eq_ignore_ascii_case("password") =>
            {
                format!("{key}=***")
            }
            _ => pair.to_owned(),
        })
        .collect();
    format!("{}{rest}{}", &url[..scheme], query.join("&"))
}

/// TLS settings from --tls-ca, --tls-cert and --tls-key; `None` without them.
fn tls(cli: &Cli) -> Result<Option<RedisTls>, Failure> {
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
    };
    let mut tls = None;
    if let Some(ca) = &cli.tls_ca {
        tls = Some(RedisTls::new().ca_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        tls = Some(tls.unwrap_or_default().client_cert_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// The bot's Redis, as the options describe it.
async fn redis(cli: &Cli, url: &str) -> Result<RedisStore, Failure> {
    let urls: Vec<&str> = url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    let tls = tls(cli)?;
    let store = if cli.cluster {
        match &tls {
            Some(tls) => {
                RedisStore::open_cluster_with_tls(urls, tls).await.map_err(Failure::store)?
            }
            None => RedisStore::open_cluster(urls).await.map_err(Failure::store)?,
        }
    } else if let Some(master) = &cli.sentinel {
        let mut sentinel = RedisSentinel::new(master.as_str(), urls);
        if let Some(tls) = tls {
            sentinel = sentinel.master_tls(tls.clone()).sentinel_tls(tls);
        }
        RedisStore::open_sentinel(&sentinel).map_err(Failure::store)?
    } else {
        match (urls.as_slice(), &tls) {
            // Connected now: an unreachable or untrusted server fails here, said plainly.
            ([url], Some(tls)) => {
                RedisStore::connect_with_tls(url, tls).await.map_err(Failure::store)?
            }
            ([url], None) => RedisStore::connect(url).await.map_err(Failure::store)?,
            _ => {
                return Err(Failure::usage("several URLs need --cluster or --sentinel MASTER"));
            }
        }
    };
    Ok(match cli.shards {
        Some(n) => store.with_shards(n).map_err(Failure::store)?,
        None => store,
    })
}

/// The bot's SQLite file. The CLI opens a file that exists, as it is: it creates no file
/// (a mistyped path would otherwise become an empty database) and leaves the journal mode
/// to the bot.
async fn sqlite(url: &str, from: &str) -> Result<SqliteStore, Failure> {
    let options: SqliteConnectOptions = url.parse().map_err(|e| {
        Failure::usage(format!("{from} {url:?} is not a SQLite URL (sqlite:path/to/file.db): {e}"))
    })?;
    let path = options.get_filename().to_owned();
    if !path.is_file() {
        return Err(Failure::new(format!(
            "no SQLite database at {} ({from}): the bot creates it when it first opens it \
             (SqliteStore::open); check the path",
            path.display()
        )));
    }
    let options = options
        .busy_timeout(Duration::from_secs(5))
        // As the bot's store: rows deleted here are overwritten, not left in free pages.
        .pragma("secure_delete", "ON");
    let not_sqlite = |e: &dyn std::fmt::Display| {
        Failure::new(format!(
            "{} ({from}) is no SQLite database this tool can read: {e}",
            path.display()
        ))
    };
    let pool = SqlitePoolOptions::new()
        .max_connections(2)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| not_sqlite(&e))?;
    // SQLite reads the file's header at the first statement: a file of another kind fails
    // here ("file is not a database").
    let _: i64 = teloxide_retention::sqlx::query_scalar("SELECT count(*) FROM sqlite_master")
        .fetch_one(&pool)
        .await
        .map_err(|e| not_sqlite(&e))?;
    Ok(SqliteStore::from_pool(pool))
}

/// The bot's PostgreSQL database.
async fn postgres(url: &str, from: &str) -> Result<PostgresStore, Failure> {
    let options: PgConnectOptions = url.parse().map_err(|e| {
        Failure::usage(format!("{from} {:?} is not a valid PostgreSQL URL: {e}", redact(url)))
    })?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(CONNECT_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|e| {
            Failure::new(format!(
                "cannot reach PostgreSQL at {:?} ({from}): {e}; is the server up and the URL \
                 right?",
                redact(url)
            ))
        })?;
    Ok(PostgresStore::from_pool(pool))
}

impl Opened {
    /// The store the options name, connected.
    pub(super) async fn open(cli: &Cli) -> Result<Self, Failure> {
        match &cli.target {
            Target::Redis { url, from } => match redis(cli, url).await {
                Ok(store) => Ok(Self::Redis(store)),
                Err(Failure(message, code)) if from.is_none() => Err(Failure(
                    format!(
                        "{message} (no store was named: --url or REDIS_URL for a Redis, \
                         --database-url or DATABASE_URL for SQLite or PostgreSQL; without them \
                         the Redis at {DEFAULT_REDIS} is read)"
                    ),
                    code,
                )),
                Err(failure) => Err(failure),
            },
            Target::Sqlite { url, from } => Ok(Self::Sqlite(sqlite(url, from).await?)),
            Target::Postgres { url, from } => Ok(Self::Postgres(postgres(url, from).await?)),
        }
    }

    /// The database's name, for messages.
    pub(super) fn name(&self) -> &'static str {
        match self {
            Self::Redis(_) => "Redis",
            Self::Sqlite(_) => "SQLite",
            Self::Postgres(_) => "PostgreSQL",
        }
    }

    /// The version of the namespace's tables on a SQL store; `None` on Redis.
    pub(super) async fn tables(&self, namespace: &str) -> Result<Option<TableVersion>, Failure> {
        Ok(match self {
            Self::Redis(_) => None,
            Self::Sqlite(store) => {
                Some(store.diagnose(namespace).await.map_err(Failure::store)?.tables)
            }
            Self::Postgres(store) => {
                Some(store.diagnose(namespace).await.map_err(Failure::store)?.tables)
            }
        })
    }
}

/// Refuses tables the commands must not touch: of a newer version (this tool cannot read
/// them), or of an older one (the first store call would migrate them, behind the back of
/// a bot that still runs the older crate). A failure, exit code 3.
pub(super) fn refuse_other_tables(
    cli: &Cli,
    database: &str,
    tables: Option<&TableVersion>,
) -> Result<(), Failure> {
    let found = match tables {
        Some(TableVersion::Unsupported(v)) => {
            format!(
                "version {v:?}, which this teloxide-retention cannot read (a newer one wrote it)"
            )
        }
        Some(TableVersion::Older(v)) => format!(
            "version {v}, older than this teloxide-retention's; it migrates such tables at \
             its first use, which a bot still running the older version could not read"
        ),
        _ => return Ok(()),
    };
    Err(Failure::new(format!(
        "namespace {:?} in this {database} database has tables of {found}: use the \
         teloxide-retention version the bot runs (cargo install teloxide-retention \
         --version VERSION --features cli)",
        cli.namespace
    )))
}

/// A `Retention` on the bot's namespace that only reads and schedules: no erasers, no
/// commands, and no heartbeat (it records no interactions).
pub(super) async fn retention(
    cli: &Cli,
    threshold: Option<Duration>,
) -> Result<Retention, Failure> {
    let store = Opened::open(cli).await?;
    retention_on(cli, store, threshold).await
}

/// [`retention`] on a store already open.
pub(super) async fn retention_on(
    cli: &Cli,
    store: Opened,
    threshold: Option<Duration>,
) -> Result<Retention, Failure> {
    refuse_other_tables(cli, store.name(), store.tables(&cli.namespace).await?.as_ref())?;
    // Commands that do not depend on the threshold still need one to build.
    let threshold = threshold.unwrap_or(Duration::from_secs(365 * 86_400));
    let builder = match store {
        Opened::Redis(store) => Retention::builder(store),
        Opened::Sqlite(store) => Retention::builder(store),
        Opened::Postgres(store) => Retention::builder(store),
    };
    builder
        .namespace(cli.namespace.as_str())
        .inactive_after(threshold)
        .stuck_after(cli.stuck_after)
        .without_commands()
        .build()
        .map_err(Failure::store)
}
