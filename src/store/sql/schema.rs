//! The tables of a namespace: their names, the statements that create them, their version
//! and the migrations from older versions.

use super::{Dialect, SqlNamespace};
use crate::error::{Error, Result};

/// The version of the tables this crate writes, kept in each namespace's `meta` table.
/// Tables of an older version are migrated when a store first uses the namespace (see
/// [`Tables::migration`]); a newer version is refused, never rewritten.
///
/// - 1: the first layout.
/// - 2: indexes on the receipts' and the feed's time, which finishes and announcements
///   trim by (without them each trim read the whole table: a burst of gone marks, one
///   announcement each, read the feed once per mark).
const SCHEMA_VERSION: i64 = 2;

/// The quoted table names of a namespace.
pub(crate) struct Tables {
    pub(super) seen: String,
    pub(super) queue: String,
    pub(super) job: String,
    pub(super) failing: String,
    pub(super) lease: String,
    pub(super) batch: String,
    pub(super) receipt: String,
    pub(super) feed: String,
    pub(super) kv: String,
    pub(super) writers: String,
    pub(super) meta: String,
    pub(super) prefix: String,
}

impl Tables {
    pub(super) fn new(ns: &str) -> Self {
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

    /// The tables with `integer` as the type of ids, times and counts and `serial` as the
    /// feed's and receipts' growing key: the statements both dialects run.
    pub(super) fn statements(&self, integer: &str, serial: &str) -> Vec<String> {
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
        let ns = &self.prefix;
        let index = |table: &str, columns: &str| {
            let name = columns.replace(", ", "_");
            format!(
                "CREATE INDEX IF NOT EXISTS \"{ns}.{table}_{name}\" ON \"{ns}.{table}\" ({columns})"
            )
        };
        let i = integer;
        vec![
            format!(
                "CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
            ),
            format!("CREATE TABLE IF NOT EXISTS {seen} (uid {i} PRIMARY KEY, at {i} NOT NULL)"),
            index("seen", "at, uid"),
            format!("CREATE TABLE IF NOT EXISTS {queue} (uid {i} PRIMARY KEY, due {i} NOT NULL)"),
            index("queue", "due, uid"),
            format!(
                "CREATE TABLE IF NOT EXISTS {job} (uid {i} PRIMARY KEY, reason TEXT NOT NULL, \
                 marked_at {i} NOT NULL, attempts {i} NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {failing} (uid {i} PRIMARY KEY, since {i} NOT NULL, \
                 reported {i} NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {lease} (batch {i} PRIMARY KEY, deadline {i} NOT NULL)"
            ),
            index("lease", "deadline, batch"),
            format!(
                "CREATE TABLE IF NOT EXISTS {batch} (batch {i} NOT NULL, pos {i} NOT NULL, \
                 uid {i} NOT NULL, PRIMARY KEY (batch, pos))"
            ),
            index("batch", "uid"),
            format!(
                "CREATE TABLE IF NOT EXISTS {receipt} (seq {serial}, tag TEXT NOT NULL, \
                 at {i} NOT NULL, reason TEXT NOT NULL, erasers TEXT NOT NULL, \
                 attempts {i} NOT NULL)"
            ),
            index("receipt", "tag"),
            index("receipt", "at"),
            format!(
                "CREATE TABLE IF NOT EXISTS {feed} (seq {serial}, at {i} NOT NULL, \
                 uid {i} NOT NULL, since {i} NOT NULL, until {i} NOT NULL, opt_out {i} NOT NULL)"
            ),
            index("feed", "at"),
            format!(
                "CREATE TABLE IF NOT EXISTS {kv} (key TEXT PRIMARY KEY, value TEXT NOT NULL, \
                 expires {i} NOT NULL)"
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS {writers} (id {i} PRIMARY KEY, at {i} NOT NULL, \
                 backlog {i} NOT NULL)"
            ),
        ]
    }

    /// The statements that take tables of version `from` to `from + 1`, or `None` where
    /// no migration exists (`from` is not an older version this crate knows).
    fn migration(&self, from: i64) -> Option<Vec<String>> {
        let ns = &self.prefix;
        match from {
            1 => Some(
                ["receipt", "feed"]
                    .map(|t| {
                        format!("CREATE INDEX IF NOT EXISTS \"{ns}.{t}_at\" ON \"{ns}.{t}\" (at)")
                    })
                    .to_vec(),
            ),
            _ => None,
        }
    }
}

impl<D: Dialect> SqlNamespace<D> {
    /// Creates the tables, or migrates them from an older version, once; refuses tables of
    /// a newer version before touching them. All in one locked transaction: replicas
    /// starting at once create or migrate the tables once.
    pub(super) async fn ready(&self) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let mut tx = self.db.begin(self.lock).await?;
                let meta = &self.t.meta;
                let sql = format!(
                    "CREATE TABLE IF NOT EXISTS {meta} (key TEXT PRIMARY KEY, value TEXT NOT NULL)"
                );
                D::exec(&mut tx, &sql, Vec::new()).await?;
                let sql = format!("SELECT value FROM {meta} WHERE key = 'schema'");
                let found = D::rows(&mut tx, &sql, Vec::new()).await?;
                let found = found.first().map(|r| r[0].t().map(str::to_owned)).transpose()?;
                let refuse = |found: &str| {
                    Error::config(format!(
                        "namespace {:?} in this {} database has table version {found:?}; this \
                         version of the crate reads version {SCHEMA_VERSION} and migrates \
                         older ones",
                        self.t.prefix,
                        D::NAME
                    ))
                };
                let mut statements = Vec::new();
                match found.as_deref().map(|v| (v, v.parse::<i64>())) {
                    None => statements = self.db.schema(&self.t)?,
                    Some((_, Ok(SCHEMA_VERSION))) => {}
                    Some((v, Ok(mut version))) if (1..SCHEMA_VERSION).contains(&version) => {
                        while version < SCHEMA_VERSION {
                            let step = self.t.migration(version).ok_or_else(|| refuse(v))?;
                            statements.extend(step);
                            version += 1;
                        }
                        tracing::info!(
                            namespace = %self.t.prefix,
                            from = v,
                            to = SCHEMA_VERSION,
                            "migrating the {} tables",
                            D::NAME
                        );
                    }
                    Some((v, _)) => return Err(refuse(v)),
                }
                for statement in statements {
                    D::exec(&mut tx, &statement, Vec::new()).await?;
                }
                let sql = format!(
                    "INSERT INTO {meta} (key, value) VALUES ('schema', ?) ON CONFLICT (key) DO \
                     UPDATE SET value = excluded.value"
                );
                D::exec(&mut tx, &sql, vec![SCHEMA_VERSION.to_string().into()]).await?;
                D::commit(tx).await
            })
            .await
            .copied()
    }
}
