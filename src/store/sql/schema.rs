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
/// - 3: the census's table `probes` (when each user was last probed and last reachable).
const SCHEMA_VERSION: i64 = 3;

/// The version of a namespace's tables in a SQL database, as `SqliteStore::diagnose` and
/// `PostgresStore::diagnose` find it, against the version this crate writes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum TableVersion {
    /// The namespace has no tables in this database: no bot has used it yet (the first
    /// store call creates them), or the namespace is misspelt.
    Missing,
    /// The version this crate reads and writes.
    Current(i64),
    /// An older version, which the first store call migrates to the current one.
    Older(i64),
    /// A version this crate cannot read (a newer crate wrote it, or the recorded value is
    /// no version): the store refuses the namespace, and writes nothing to it.
    Unsupported(String),
}

impl TableVersion {
    /// The version recorded in a namespace's `meta` table (`None`: no tables).
    pub(super) fn of(recorded: Option<&str>) -> Self {
        match recorded.map(|v| (v, v.parse::<i64>())) {
            None => Self::Missing,
            Some((_, Ok(SCHEMA_VERSION))) => Self::Current(SCHEMA_VERSION),
            Some((_, Ok(version))) if (1..SCHEMA_VERSION).contains(&version) => {
                Self::Older(version)
            }
            Some((v, _)) => Self::Unsupported(v.to_owned()),
        }
    }
}

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
    pub(super) probes: String,
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
            probes: name("probes"),
            meta: name("meta"),
            prefix: ns.to_owned(),
        }
    }

    /// The indexes the tables have besides their primary keys: `(table, columns)`.
    const INDEXES: [(&'static str, &'static str); 7] = [
        ("seen", "at, uid"),
        ("queue", "due, uid"),
        ("lease", "deadline, batch"),
        ("batch", "uid"),
        ("receipt", "tag"),
        ("receipt", "at"),
        ("feed", "at"),
    ];

    /// The (unquoted) name of the index of `table` on `columns`.
    fn index_name(&self, table: &str, columns: &str) -> String {
        format!("{}.{table}_{}", self.prefix, columns.replace(", ", "_"))
    }

    /// The name of every table and index the namespace has (unquoted, as the database
    /// lists them), except those the database names itself (primary keys, sequences).
    pub(super) fn names(&self) -> Vec<String> {
        let tables = Self::columns("", "").map(|(t, _)| format!("{}.{t}", self.prefix));
        tables.into_iter().chain(Self::INDEXES.iter().map(|(t, c)| self.index_name(t, c))).collect()
    }

    /// Every table and its columns, in the order they are created, with `i` as the type of
    /// ids, times and counts and `serial` as the feed's and receipts' growing key.
    fn columns(i: &str, serial: &str) -> [(&'static str, String); 12] {
        [
            ("meta", "key TEXT PRIMARY KEY, value TEXT NOT NULL".to_owned()),
            ("seen", format!("uid {i} PRIMARY KEY, at {i} NOT NULL")),
            ("queue", format!("uid {i} PRIMARY KEY, due {i} NOT NULL")),
            (
                "job",
                format!(
                    "uid {i} PRIMARY KEY, reason TEXT NOT NULL, marked_at {i} NOT NULL, \
                     attempts {i} NOT NULL"
                ),
            ),
            ("failing", format!("uid {i} PRIMARY KEY, since {i} NOT NULL, reported {i} NOT NULL")),
            ("lease", format!("batch {i} PRIMARY KEY, deadline {i} NOT NULL")),
            (
                "batch",
                format!(
                    "batch {i} NOT NULL, pos {i} NOT NULL, uid {i} NOT NULL, \
                     PRIMARY KEY (batch, pos)"
                ),
            ),
            (
                "receipt",
                format!(
                    "seq {serial}, tag TEXT NOT NULL, at {i} NOT NULL, reason TEXT NOT NULL, \
                     erasers TEXT NOT NULL, attempts {i} NOT NULL"
                ),
            ),
            (
                "feed",
                format!(
                    "seq {serial}, at {i} NOT NULL, uid {i} NOT NULL, since {i} NOT NULL, \
                     until {i} NOT NULL, opt_out {i} NOT NULL"
                ),
            ),
            ("kv", format!("key TEXT PRIMARY KEY, value TEXT NOT NULL, expires {i} NOT NULL")),
            ("writers", format!("id {i} PRIMARY KEY, at {i} NOT NULL, backlog {i} NOT NULL")),
            (
                "probes",
                format!("uid {i} PRIMARY KEY, probed_at {i} NOT NULL, reachable_at {i} NOT NULL"),
            ),
        ]
    }

    /// The tables with `integer` as the type of ids, times and counts and `serial` as the
    /// feed's and receipts' growing key, each followed by its indexes: the statements both
    /// dialects run.
    pub(super) fn statements(&self, integer: &str, serial: &str) -> Vec<String> {
        let ns = &self.prefix;
        let mut statements = Vec::new();
        for (table, columns) in Self::columns(integer, serial) {
            statements.push(format!("CREATE TABLE IF NOT EXISTS \"{ns}.{table}\" ({columns})"));
            for (_, on) in Self::INDEXES.iter().filter(|(t, _)| *t == table) {
                statements.push(format!(
                    "CREATE INDEX IF NOT EXISTS \"{}\" ON \"{ns}.{table}\" ({on})",
                    self.index_name(table, on)
                ));
            }
        }
        statements
    }

    /// The statements that take tables of version `from` to `from + 1`, or `None` where
    /// no migration exists (`from` is not an older version this crate knows). Tables a
    /// version adds come with `ready`'s `CREATE TABLE IF NOT EXISTS` statements.
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
            2 => Some(Vec::new()),
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
                // Before anything is written: tables another namespace owns under these
                // names in another case (SQLite compares names without case) are refused.
                let names = self.t.names();
                let shared = D::same_but_case(&mut tx, &names).await?;
                if !shared.is_empty() {
                    return Err(Error::config(format!(
                        "namespace {:?} would share the tables of another namespace in this {} \
                         file ({}): {} compares table names without regard to letter case; \
                         give each bot on one file a namespace that differs from the others \
                         in more than case",
                        self.t.prefix,
                        D::NAME,
                        shared.join(", "),
                        D::NAME
                    )));
                }
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
                match TableVersion::of(found.as_deref()) {
                    TableVersion::Missing => statements = self.db.schema(&self.t)?,
                    TableVersion::Current(_) => {}
                    TableVersion::Older(from) => {
                        // New tables (and indexes) first: every statement creates only
                        // what is missing.
                        statements = self.db.schema(&self.t)?;
                        let mut version = from;
                        while version < SCHEMA_VERSION {
                            let step = self
                                .t
                                .migration(version)
                                .ok_or_else(|| refuse(&from.to_string()))?;
                            statements.extend(step);
                            version += 1;
                        }
                        tracing::info!(
                            namespace = %self.t.prefix,
                            from,
                            to = SCHEMA_VERSION,
                            "migrating the {} tables",
                            D::NAME
                        );
                    }
                    TableVersion::Unsupported(v) => return Err(refuse(&v)),
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

#[cfg(test)]
mod tests {
    use super::{SCHEMA_VERSION, TableVersion, Tables};

    /// What a recorded version means: `ready` creates, keeps, migrates or refuses as the
    /// diagnosis says.
    #[test]
    fn a_recorded_version_reads_as_missing_current_older_or_unsupported() {
        let current = SCHEMA_VERSION.to_string();
        let newer = (SCHEMA_VERSION + 1).to_string();
        for (recorded, expected) in [
            (None, TableVersion::Missing),
            (Some(current.as_str()), TableVersion::Current(SCHEMA_VERSION)),
            (Some("1"), TableVersion::Older(1)),
            (Some(newer.as_str()), TableVersion::Unsupported(newer.clone())),
            (Some("0"), TableVersion::Unsupported("0".to_owned())),
            (Some("-1"), TableVersion::Unsupported("-1".to_owned())),
            (Some("two"), TableVersion::Unsupported("two".to_owned())),
        ] {
            assert_eq!(TableVersion::of(recorded), expected, "{recorded:?}");
        }
    }

    /// The names checked for clashes and lengths are exactly those the statements create.
    #[test]
    fn names_are_those_the_statements_create() {
        let t = Tables::new("ns");
        let mut created: Vec<String> = t
            .statements("INTEGER", "INTEGER")
            .iter()
            .map(|s| s.split('"').nth(1).unwrap().to_owned())
            .collect();
        let mut names = t.names();
        created.sort();
        names.sort();
        assert_eq!(created, names);
        assert!(names.contains(&"ns.lease_deadline_batch".to_owned()));
        assert_eq!(names.iter().map(String::len).max(), Some("ns".len() + 21));
    }
}
