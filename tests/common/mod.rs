//! Test support: the stores a test runs on ([`Env`]: memory, a real redis-server per test,
//! plain, sharded or over TLS, a Redis Cluster, a SQLite file, a PostgreSQL server of its
//! own), [`every_store!`] to run a test on each, and the crate's own test kit
//! (`teloxide_retention::testing`: a fake Bot API, real update JSON, a real teloxide
//! `Dispatcher` fed with those updates), the one bot authors use.
#![allow(dead_code, unreachable_pub)]

pub mod certs;
pub mod cluster;
pub mod postgres;
pub mod proxy;
pub mod redis_server;
pub mod sentinel;

#[allow(unused_imports)] // Each test binary uses a part.
pub use teloxide_retention::testing::{FakeBotApi, dispatch, dispatch_with, parse, updates};

/// The kit's Bot API items, where the tests have always found them.
pub mod bot_api {
    #[allow(unused_imports)]
    pub use teloxide_retention::testing::{BOT_ID, BOT_USERNAME, multipart_field, uploaded_file};
}

use std::time::Duration;

use teloxide_retention::{ManualClock, MemoryStore, RedisStore, RetentionBuilder};

pub use redis_server::{RedisServer, wait};

/// The repository's root (the test crate is its `tests/` folder).
pub fn repo_root() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ has a parent")
}

pub const DAY: Duration = Duration::from_secs(24 * 3600);
/// A fixed start time: 2023-11-14T22:13:20Z.
pub const T0: i64 = 1_700_000_000_000;

/// The store timeout of every env's builders: a healthy store answers within it even on a
/// loaded machine (a PostgreSQL claim took over the crate's default 2 s there). Tests of
/// the timeout itself, and of outages, set their own.
pub const STORE_TIMEOUT: Duration = Duration::from_secs(10);

/// The store timeout of tests that take Redis away: each call during the outage may wait
/// for it, so it stays short, while a healthy Redis on a loaded machine still answers well
/// within it (their calls before and after the outage run under it too).
pub const OUTAGE_STORE_TIMEOUT: Duration = Duration::from_secs(1);

/// Which store a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backing {
    Memory,
    Redis,
    /// A SQLite file in a temp dir (`SqliteStore`).
    Sqlite,
    /// A PostgreSQL server of the test's own (`PostgresStore`).
    Postgres,
}

/// A store (shared by every `Retention` built from this env, like replicas) and a clock.
pub struct Env {
    pub backing: Backing,
    pub clock: ManualClock,
    pub memory: MemoryStore,
    pub redis: Option<RedisServer>,
    /// Set for a Redis reached over TLS (with a client certificate).
    pub tls: Option<std::sync::Arc<certs::TestCerts>>,
    /// Shards per namespace, when not the store's default.
    pub shards: Option<usize>,
    /// Set for a Redis Cluster shared with other tests of one process: its node URLs and
    /// the namespace that keeps this env's keys apart.
    pub cluster: Option<(Vec<String>, String)>,
    /// Set for SQLite: the temp dir holding the file, and the store every builder of this
    /// env clones (one pool per process, as the store asks).
    #[cfg(feature = "sqlite")]
    pub sqlite: Option<(tempfile::TempDir, tokio::sync::OnceCell<teloxide_retention::SqliteStore>)>,
    /// Set for PostgreSQL: the server, and the store every builder of this env clones.
    #[cfg(feature = "postgres")]
    pub postgres: Option<(
        postgres::PostgresServer,
        tokio::sync::OnceCell<teloxide_retention::PostgresStore>,
    )>,
}

impl Env {
    pub fn memory() -> Self {
        init_tracing();
        Self {
            backing: Backing::Memory,
            clock: ManualClock::at_unix_ms(T0),
            memory: MemoryStore::new(),
            redis: None,
            tls: None,
            shards: None,
            cluster: None,
            #[cfg(feature = "sqlite")]
            sqlite: None,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }

    /// A SQLite file of its own in a temp dir.
    #[cfg(feature = "sqlite")]
    pub fn sqlite() -> Self {
        // In memory where the system has a tmpfs: each commit syncs to disk otherwise.
        let shm = std::path::Path::new("/dev/shm");
        let mut dir = tempfile::Builder::new();
        dir.prefix("retention-sqlite-");
        let dir = if shm.is_dir() { dir.tempdir_in(shm) } else { dir.tempdir() }.expect("temp dir");
        Self {
            backing: Backing::Sqlite,
            sqlite: Some((dir, tokio::sync::OnceCell::new())),
            ..Self::memory()
        }
    }

    /// A PostgreSQL server of its own.
    #[cfg(feature = "postgres")]
    pub fn postgres() -> Self {
        Self {
            backing: Backing::Postgres,
            postgres: Some((postgres::PostgresServer::start(), tokio::sync::OnceCell::new())),
            ..Self::memory()
        }
    }

    pub fn redis() -> Self {
        init_tracing();
        Self {
            backing: Backing::Redis,
            clock: ManualClock::at_unix_ms(T0),
            memory: MemoryStore::new(),
            redis: Some(RedisServer::start()),
            tls: None,
            shards: None,
            cluster: None,
            #[cfg(feature = "sqlite")]
            sqlite: None,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }

    /// A Redis that speaks only TLS and requires a client certificate, reached through
    /// `rediss://` with the test's CA.
    pub fn redis_tls() -> Self {
        init_tracing();
        let certs = std::sync::Arc::new(certs::TestCerts::generate());
        Self {
            backing: Backing::Redis,
            clock: ManualClock::at_unix_ms(T0),
            memory: MemoryStore::new(),
            redis: Some(RedisServer::start_tls(std::sync::Arc::clone(&certs), true)),
            tls: Some(certs),
            shards: None,
            cluster: None,
            #[cfg(feature = "sqlite")]
            sqlite: None,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }

    /// A single Redis, with each namespace split into three shards.
    pub fn redis_sharded() -> Self {
        Self { shards: Some(3), ..Self::redis() }
    }

    /// A Redis Cluster (started by the caller), with the clusters' default shard count and
    /// `namespace` for this env's keys.
    pub fn cluster(urls: Vec<String>, namespace: &str) -> Self {
        init_tracing();
        Self {
            backing: Backing::Redis,
            clock: ManualClock::at_unix_ms(T0),
            memory: MemoryStore::new(),
            redis: None,
            tls: None,
            shards: None,
            cluster: Some((urls, namespace.to_owned())),
            #[cfg(feature = "sqlite")]
            sqlite: None,
            #[cfg(feature = "postgres")]
            postgres: None,
        }
    }

    /// Shards per namespace of this env's store (1 without shards).
    pub fn shard_count(&self) -> u64 {
        match (&self.shards, &self.cluster) {
            (Some(n), _) => *n as u64,
            (None, Some(_)) => 24,
            (None, None) => 1,
        }
    }

    /// A builder on this env's store and clock, with a 30-day threshold and no commands.
    pub async fn builder(&self) -> RetentionBuilder {
        self.bare_builder().await.inactive_after(30 * DAY).without_commands()
    }

    /// A builder on this env's store and clock with [`STORE_TIMEOUT`], nothing else set.
    pub async fn bare_builder(&self) -> RetentionBuilder {
        self.store_builder().await.store_timeout(STORE_TIMEOUT)
    }

    /// A builder on this env's store and clock.
    async fn store_builder(&self) -> RetentionBuilder {
        #[cfg(feature = "postgres")]
        if let Some((server, store)) = &self.postgres {
            let store = store
                .get_or_init(|| async {
                    teloxide_retention::PostgresStore::open(&server.url())
                        .await
                        .expect("open postgres")
                })
                .await;
            return teloxide_retention::Retention::builder(store.clone()).clock(self.clock.clone());
        }
        #[cfg(feature = "sqlite")]
        if let Some((dir, store)) = &self.sqlite {
            let store = store
                .get_or_init(|| async {
                    let url = format!("sqlite:{}", dir.path().join("retention.db").display());
                    teloxide_retention::SqliteStore::open(&url).await.expect("open sqlite")
                })
                .await;
            return teloxide_retention::Retention::builder(store.clone()).clock(self.clock.clone());
        }
        let store = match (&self.redis, &self.cluster) {
            (Some(server), _) => match &self.tls {
                Some(certs) => RedisStore::open_with_tls(&server.url(), &certs.client_tls()).await,
                None => RedisStore::open(&server.url()).await,
            },
            (None, Some((urls, _))) => {
                RedisStore::open_cluster(urls.iter().map(String::as_str)).await
            }
            (None, None) => {
                return teloxide_retention::Retention::builder(self.memory.clone())
                    .clock(self.clock.clone());
            }
        }
        .expect("connect to redis");
        let store = match self.shards {
            Some(count) => store.with_shards(count).unwrap(),
            None => store,
        };
        let builder = teloxide_retention::Retention::builder(store).clock(self.clock.clone());
        match &self.cluster {
            Some((_, namespace)) => builder.namespace(namespace.as_str()),
            None => builder,
        }
    }

    /// The URL of this env's SQL database (SQLite file or PostgreSQL server), for a test's
    /// own connection; `None` for the other stores.
    pub fn sql_url(&self) -> Option<String> {
        #[cfg(feature = "postgres")]
        if let Some((server, _)) = &self.postgres {
            return Some(server.url());
        }
        #[cfg(feature = "sqlite")]
        if let Some((dir, _)) = &self.sqlite {
            return Some(format!("sqlite:{}", dir.path().join("retention.db").display()));
        }
        None
    }

    pub fn redis_server(&mut self) -> &mut RedisServer {
        self.redis.as_mut().expect("a redis env")
    }

    /// Raw access to the test's Redis, for checking keys.
    pub fn redis_connection(&self) -> redis::Connection {
        self.redis.as_ref().expect("a redis env").sync_connection()
    }
}

/// One case of a store suite, run on an env it is given.
pub type Case = fn(Env) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The one way to run a test on every store: each `async fn name(env) { ... }` in the block
/// becomes `mod name` with one test per store, named after it: `name::memory`,
/// `name::redis`, `name::redis_sharded` (three shards per namespace), `name::sqlite` and
/// `name::postgres` (the SQL ones with their features). Doc comments and other attributes
/// of a case go on its `mod`.
///
/// ```ignore
/// every_store! {
///     /// What the case shows.
///     async fn records_last_interaction(env) { ... }
///
///     /// Plants another process's heartbeat: the memory store serves one process only.
///     #[stores(redis, sqlite, postgres)]
///     async fn a_residue_waits_for_silent_writers(env) { ... }
/// }
/// ```
///
/// - `#[stores(store, ...)]` on a case: it runs on exactly these stores (any of `memory`,
///   `redis`, `redis_sharded`, `redis_tls`, `sqlite`, `postgres`). A case that leaves one of
///   the five out says why in its doc comment.
/// - `#![with_tls]` first in the block: every case also runs on Redis over TLS with a client
///   certificate (`name::redis_tls`). For the store suite's core cases only, so that the
///   suite does not grow by a TLS run of every test.
/// - `#![on_cluster]` first in the block: the block defines `every_case()`, its cases by
///   name, which `cluster::the_store_suite_runs_on_a_sharded_three_master_cluster` runs on
///   one shared Redis Cluster. At most one such block per module.
#[macro_export]
macro_rules! every_store {
    // The block's cases, each with the flags of the block (one token tree).
    (@cases $flags:tt $($(#[$($attr:tt)*])* async fn $name:ident($env:ident) $body:block)*) => {
        $(
            $crate::every_store!(
                @case $flags [] [memory redis redis_sharded sqlite postgres]
                $(#[$($attr)*])* async fn $name($env) $body
            );
        )*
        $crate::every_store!(@block $flags [$($name)*]);
    };

    // One case, its attributes read one by one: `#[stores(...)]` sets its stores, the others
    // (doc comments) go on its module.
    (@case $flags:tt [$($attrs:tt)*] $stores:tt
        #[stores($($store:ident),+ $(,)?)] $($rest:tt)*) => {
        $crate::every_store!(@case $flags [$($attrs)*] [$($store)+] $($rest)*);
    };
    (@case $flags:tt [$($attrs:tt)*] $stores:tt #[$($attr:tt)*] $($rest:tt)*) => {
        $crate::every_store!(@case $flags [$($attrs)* #[$($attr)*]] $stores $($rest)*);
    };
    (@case [$($flag:ident)*] [$($attrs:tt)*] [$($store:ident)+]
        async fn $name:ident($env:ident) $body:block) => {
        $($attrs)*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            async fn run($env: $crate::common::Env) $body

            $($crate::every_store!(@test $store);)+
            $($crate::every_store!(@case_flag $flag);)*
        }
    };

    // One test of a case on one store.
    (@test memory) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn memory() {
            run($crate::common::Env::memory()).await
        }
    };
    (@test redis) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis() {
            run($crate::common::Env::redis()).await
        }
    };
    (@test redis_sharded) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_sharded() {
            run($crate::common::Env::redis_sharded()).await
        }
    };
    (@test redis_tls) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn redis_tls() {
            run($crate::common::Env::redis_tls()).await
        }
    };
    (@test sqlite) => {
        #[cfg(feature = "sqlite")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn sqlite() {
            run($crate::common::Env::sqlite()).await
        }
    };
    (@test postgres) => {
        #[cfg(feature = "postgres")]
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn postgres() {
            run($crate::common::Env::postgres()).await
        }
    };

    // What a block's flag adds to each case, and to the block.
    (@case_flag with_tls) => {
        $crate::every_store!(@test redis_tls);
    };
    (@case_flag on_cluster) => {
        /// This case as a future, for suites that run every case on one server.
        pub(crate) fn boxed(
            env: $crate::common::Env,
        ) -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> {
            Box::pin(run(env))
        }
    };
    (@block [$($flag:ident)*] $names:tt) => {
        $($crate::every_store!(@block_flag $flag $names);)*
    };
    (@block_flag with_tls $names:tt) => {};
    (@block_flag on_cluster [$($name:ident)*]) => {
        /// Every case of this block, by name, for one shared server (a cluster).
        pub(crate) fn every_case() -> Vec<(&'static str, $crate::common::Case)> {
            vec![$((stringify!($name), $name::boxed as $crate::common::Case)),*]
        }
    };

    // The block: its flags (inner attributes), then its cases.
    ($(#![$flag:ident])* $($(#[$($attr:tt)*])* async fn $name:ident($env:ident) $body:block)*) => {
        $crate::every_store!(
            @cases [$($flag)*] $($(#[$($attr)*])* async fn $name($env) $body)*
        );
    };
}

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "teloxide_retention=debug,warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// A host clock 25 minutes fast (the tests of clock faults).
pub struct FastClock;

impl teloxide_retention::Clock for FastClock {
    fn now_ms(&self) -> i64 {
        teloxide_retention::SystemClock.now_ms() + 25 * 60_000
    }
}

/// Adopts user 42 idle for 30 days less 10 minutes by the real clock (the store's), for the
/// tests of a fast host clock under a 30-day threshold; returns when they were last active.
pub async fn adopt_nearly_inactive(retention: &teloxide_retention::Retention) -> i64 {
    use teloxide_retention::Clock;
    let idle_since =
        teloxide_retention::SystemClock.now_ms() - (30 * DAY).as_millis() as i64 + 600_000;
    let at = chrono::DateTime::from_timestamp_millis(idle_since);
    let adoption = teloxide_retention::Adoption::new();
    retention.adopt([(teloxide::types::UserId(42), at)], &adoption).await.unwrap();
    idle_since
}
