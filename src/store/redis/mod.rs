//! The Redis store, by role: the connection and its constructors here; [`connect`] for
//! TLS, Sentinel and Cluster connections; [`sharded`] for a namespace split into shards;
//! [`client`] for the protocol client of the Lua scripts ([`scripts`]), reading their
//! replies with [`decode`], its keys in [`keys`] and its guarded interactions write in
//! [`guarded`]; [`admin`] for diagnosis and resharding.

mod admin;
mod client;
pub(crate) mod connect;
mod decode;
mod guarded;
mod keys;
mod meta;
mod scripts;
pub(crate) mod sharded;

pub use admin::{Diagnosis, NamespaceMeta, Resharded};
use admin::{check_shard_count, info_field, infos, node_policies, oldest_version, riskiest_policy};
pub(crate) use client::RedisNamespace;

use crate::conn::manager_config;
use connect::{ClusterConn, ClusterHandle, SentinelConn, SentinelHandle};
use connect::{RedisSentinel, RedisTls};
use connect::{check_scheme, ensure_crypto_provider};
use sharded::{DEFAULT_CLUSTER_SHARDS, MAX_SHARDS, Sharded, shard_tag};

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, Value};

use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::receipts::RawReceipt;
use crate::store::{
    AdoptCounts, Adoptee, Backend, Batch, CensusAnswer, CensusPage, CensusWalk, ClaimRequest,
    ClaimTimes, ClaimUser, Claimed, Confirmed, FEED_KEEP_MS, FEED_READ, Failing, FeedPage, Finish,
    FinishRequest, Hashed, Health, Heartbeat, Interaction, Invalidation, Job, LastErasure,
    MAX_NOTICES, Marked, Notice, PreviewEntry, Queued, RawPreview, RawStatus, RawSurvey, Retry,
    ScheduleRequest, SeenRange, Store, Unschedule, WriterWindow, census_cursor, check_version,
    decode_job, parse_version, sealed, too_many_notices,
};

/// The production store: Redis 7.0 or newer, a single server (plain or `rediss://`), a
/// Sentinel-managed master ([`RedisStore::open_sentinel`]) or a Redis Cluster.
///
/// All keys of a namespace share one hash tag (`{retention}:seen`, `{retention}:queue`, ...),
/// so the multi-key scripts of the claim -> erase -> finish protocol run on Redis Cluster too.
/// On a cluster the namespace is split into shards, each with a hash tag of its own, so that
/// its users are spread over every master ([`RedisStore::with_shards`]). Several bot replicas
/// may share one store.
///
/// ```no_run
/// # async fn demo() -> Result<(), teloxide_retention::Error> {
/// use std::time::Duration;
/// use teloxide_retention::{RedisStore, Retention};
///
/// let store = RedisStore::open("redis://127.0.0.1/").await?;
/// let retention = Retention::builder(store)
///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
///     .build()?;
/// # let _ = retention;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisStore {
    conn: Conn,
    /// Shards per namespace; `None`: the default for the connection kind.
    shards: Option<usize>,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.conn {
            Conn::Single(..) => "single",
            Conn::Cluster(_) => "cluster",
            Conn::Sentinel(_) => "sentinel",
        };
        f.debug_struct("RedisStore")
            .field("connection", &kind)
            .field("shards", &self.shards())
            .finish()
    }
}

/// The connection kinds; each reconnects on its own.
#[derive(Clone)]
enum Conn {
    /// With the runtime of its last successful call (see [`LastRuntime`]).
    Single(ConnectionManager, Arc<LastRuntime>),
    Cluster(ClusterHandle),
    Sentinel(SentinelHandle),
}

/// The tokio runtime of a connection's last successful call.
///
/// A connection manager's connection is driven by a task on the runtime that made it; when
/// that runtime shuts down (a test harness that builds a runtime per dispatch), the next
/// command fails at once as a dropped connection, without reaching Redis, and the manager
/// connects again on the caller's runtime. That one command is sent again, so that a change
/// of runtime costs no failed write; a dropped connection on the same runtime is an outage
/// and is not retried here (a command may have reached Redis before its reply was lost).
#[derive(Default)]
struct LastRuntime(std::sync::Mutex<Option<tokio::runtime::Id>>);

impl LastRuntime {
    fn current() -> Option<tokio::runtime::Id> {
        tokio::runtime::Handle::try_current().ok().map(|h| h.id())
    }

    /// Whether `here` is another runtime than the last successful call's.
    fn changed(&self, here: Option<tokio::runtime::Id>) -> bool {
        let last = *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        last.is_some() && last != here
    }

    fn record(&self, here: Option<tokio::runtime::Id>) {
        *self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = here;
    }
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c, last) => Box::pin(async move {
                let here = LastRuntime::current();
                let mut reply = c.req_packed_command(cmd).await;
                if reply.as_ref().is_err_and(redis::RedisError::is_connection_dropped)
                    && last.changed(here)
                {
                    reply = c.req_packed_command(cmd).await;
                }
                if reply.is_ok() {
                    last.record(here);
                }
                reply
            }),
            Self::Cluster(c) => c.req_packed_command(cmd),
            Self::Sentinel(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c, last) => Box::pin(async move {
                let here = LastRuntime::current();
                let mut reply = c.req_packed_commands(cmd, offset, count).await;
                if reply.as_ref().is_err_and(redis::RedisError::is_connection_dropped)
                    && last.changed(here)
                {
                    reply = c.req_packed_commands(cmd, offset, count).await;
                }
                if reply.is_ok() {
                    last.record(here);
                }
                reply
            }),
            Self::Cluster(c) => c.req_packed_commands(cmd, offset, count),
            Self::Sentinel(c) => c.req_packed_commands(cmd, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c, _) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
            Self::Sentinel(c) => c.get_db(),
        }
    }
}

impl RedisStore {
    /// Opens a store on one Redis server, such as `redis://127.0.0.1/`,
    /// `redis+unix:///run/redis.sock` or, over TLS, `rediss://user:password@host:6380/`,
    /// without waiting for it.
    ///
    /// The connection is made on first use, so a bot starts while Redis is down: its
    /// interactions are buffered as during any outage and written once Redis answers (see
    /// the README's Guarantees). The connection reconnects by itself after Redis restarts;
    /// every call of the crate is bounded by the configured store timeout. Use
    /// [`RedisStore::connect`] to fail at start instead.
    ///
    /// A `rediss://` URL trusts the webpki roots; for a private CA or a client certificate
    #[cfg_attr(feature = "tls", doc = "use [`RedisStore::open_with_tls`].")]
    #[cfg_attr(not(feature = "tls"), doc = "use `RedisStore::open_with_tls` (`tls` feature).")]
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL is invalid (the message names it, without its
    /// credentials) or is `rediss://` in a build without the `tls` feature.
    pub async fn open(url: &str) -> Result<Self> {
        let client = client(url, None)?;
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config())?;
        Ok(Self::from_manager(manager))
    }

    /// Like [`RedisStore::open`], but connects now and fails if Redis does not answer or
    /// is older than 7.0.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] as for [`RedisStore::open`]; [`Error::Redis`] if the first
    /// connection fails (over TLS, an untrusted server certificate is an [`Error::Config`]
    /// saying so); [`Error::Unsafe`] if the server is older than Redis 7.0.
    pub async fn connect(url: &str) -> Result<Self> {
        Self::connect_client(client(url, None)?).await
    }

    /// Like [`RedisStore::open`], for a `rediss://` URL with a CA or client certificate of
    /// your own.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if the URL is invalid, or the CA, the client certificate or its
    /// key is not valid PEM (the message names which).
    #[cfg(feature = "tls")]
    pub async fn open_with_tls(url: &str, tls: &RedisTls) -> Result<Self> {
        let client = client(url, Some(tls))?;
        let manager = ConnectionManager::new_lazy_with_config(client, manager_config())?;
        Ok(Self::from_manager(manager))
    }

    /// Like [`RedisStore::connect`], for a `rediss://` URL with a CA or client certificate
    /// of your own.
    ///
    /// # Errors
    ///
    /// As [`RedisStore::connect`]; a server whose certificate the CA did not sign fails
    /// here, naming the certificate problem.
    #[cfg(feature = "tls")]
    pub async fn connect_with_tls(url: &str, tls: &RedisTls) -> Result<Self> {
        Self::connect_client(client(url, Some(tls))?).await
    }

    async fn connect_client(client: redis::Client) -> Result<Self> {
        let mut manager =
            ConnectionManager::new_with_config(client, manager_config()).await.map_err(tls_hint)?;
        let info: String = redis::cmd("INFO").arg("server").query_async(&mut manager).await?;
        check_version(info_field(&info, "redis_version").as_deref())?;
        Ok(Self::from_manager(manager))
    }

    /// Opens a store on the master that Redis Sentinel names, following it across
    /// failovers; see [`RedisSentinel`]. Like [`RedisStore::open`], it connects on first use.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] or [`Error::Redis`] if a sentinel address or setting is invalid.
    pub fn open_sentinel(sentinel: &RedisSentinel) -> Result<Self> {
        let conn = SentinelConn::new(sentinel)?;
        Ok(Self { conn: Conn::Sentinel(SentinelHandle(Arc::new(conn))), shards: None })
    }

    /// Connects to a Redis Cluster through any of its nodes (`redis://` or `rediss://`).
    ///
    /// Each namespace is split into 24 shards unless [`RedisStore::with_shards`] says
    /// otherwise: 24 spreads users evenly over 1, 2, 3, 4, 6, 8, 12 or 24 masters.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if no node is given or a URL is invalid; [`Error::Redis`] if no
    /// node answers.
    pub async fn open_cluster<I, U>(nodes: I) -> Result<Self>
    where
        I: IntoIterator<Item = U>,
        U: redis::IntoConnectionInfo,
    {
        ensure_crypto_provider();
        let client = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .build()
            .map_err(connect::invalid_nodes)?;
        Self::cluster_client(client).await
    }

    /// Like [`RedisStore::open_cluster`], for `rediss://` nodes with a CA or client
    /// certificate of your own.
    ///
    /// # Errors
    ///
    /// As [`RedisStore::open_cluster`]; [`Error::Config`] also if the CA, the client
    /// certificate or its key is not valid PEM.
    #[cfg(feature = "tls")]
    pub async fn open_cluster_with_tls<I, U>(nodes: I, tls: &RedisTls) -> Result<Self>
    where
        I: IntoIterator<Item = U>,
        U: redis::IntoConnectionInfo,
    {
        ensure_crypto_provider();
        tls.validate()?;
        let client = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(Duration::from_secs(2))
            .response_timeout(Duration::from_secs(5))
            .certs(tls.certificates())
            .build()
            .map_err(connect::invalid_nodes)?;
        Self::cluster_client(client).await
    }

    async fn cluster_client(client: redis::cluster::ClusterClient) -> Result<Self> {
        let conn = client.get_async_connection().await.map_err(tls_hint)?;
        let conn = ClusterConn::new(conn, Some(client));
        Ok(Self { conn: Conn::Cluster(ClusterHandle(Arc::new(conn))), shards: None })
    }

    /// Uses a connection manager you configured yourself.
    #[must_use]
    pub fn from_manager(manager: ConnectionManager) -> Self {
        Self { conn: Conn::Single(manager, Arc::default()), shards: None }
    }

    /// Uses a cluster connection you configured yourself.
    ///
    /// Unlike a store from [`RedisStore::open_cluster`], which connects afresh when calls
    /// keep stalling on a hung node (the cluster client reads the slot map again when a
    /// node refuses connections, not when it hangs), this one keeps the connection it was
    /// given.
    #[must_use]
    pub fn from_cluster(conn: ClusterConnection) -> Self {
        let conn = ClusterConn::new(conn, None);
        Self { conn: Conn::Cluster(ClusterHandle(Arc::new(conn))), shards: None }
    }

    /// Splits each namespace into `count` shards, each with a Redis Cluster hash tag of its
    /// own, so that its users, queues and batches are spread over the cluster's masters (a
    /// user's keys all stay in the user's shard). The default is 1 on a single server or
    /// Sentinel (the layout of one hash tag, `{retention}:seen`) and 24 on a cluster.
    ///
    /// A namespace records its shard count when first used; opening it with another count
    /// fails with [`Error::Config`] on every call (nothing is written to the wrong shard)
    /// until the count matches or the users are moved with [`RedisStore::reshard`].
    /// Choose a multiple of the number of masters, with room to grow: shards are the unit
    /// that `redis-cli --cluster reshard` can move, and each costs one script call per pass.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), teloxide_retention::Error> {
    /// use teloxide_retention::RedisStore;
    ///
    /// let store = RedisStore::open_cluster(["redis://10.0.0.1:7000", "redis://10.0.0.2:7000"])
    ///     .await?
    ///     .with_shards(12)?;
    /// # let _ = store;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if `count` is 0 or above 1024.
    pub fn with_shards(mut self, count: usize) -> Result<Self> {
        check_shard_count(count)?;
        self.shards = Some(count);
        Ok(self)
    }

    /// The number of shards each namespace is split into (see [`RedisStore::with_shards`]).
    #[must_use]
    pub fn shards(&self) -> usize {
        self.shards.unwrap_or(match self.conn {
            Conn::Cluster(_) => DEFAULT_CLUSTER_SHARDS,
            Conn::Single(..) | Conn::Sentinel(_) => 1,
        })
    }
}

/// A client for `url`, with `tls` settings if given.
fn client(url: &str, tls: Option<&RedisTls>) -> Result<redis::Client> {
    check_scheme(url)?;
    ensure_crypto_provider();
    let client = match tls {
        #[cfg(feature = "tls")]
        Some(tls) => {
            tls.validate()?;
            redis::Client::build_with_tls(url, tls.certificates())
        }
        _ => redis::Client::open(url),
    };
    client.map_err(|e| connect::invalid_url(url, e))
}

/// Says what a failed TLS handshake means: rustls names the problem ("invalid peer
/// certificate: UnknownIssuer"), not what to do about it.
fn tls_hint(e: redis::RedisError) -> Error {
    let text = e.to_string();
    if text.contains("certificate") || text.contains("InvalidCertificate") {
        return Error::config(format!(
            "TLS handshake with Redis failed: {text}; the server's certificate is not \
             trusted: give its CA with RedisTls::ca_pem (the default trusts the webpki \
             roots), or check the host name in the URL against the certificate"
        ));
    }
    Error::Redis(e)
}

impl Store for RedisStore {
    fn bind(&self, namespace: &str, _: sealed::Token) -> sealed::Bound {
        let count = self.shards();
        let home = Arc::new(RedisNamespace::new(self.conn.clone(), namespace));
        let shards = if count == 1 {
            vec![Arc::clone(&home)]
        } else {
            (0..count)
                .map(|i| {
                    Arc::new(RedisNamespace::new(
                        self.conn.clone(),
                        &shard_tag(namespace, i, count),
                    ))
                })
                .collect()
        };
        sealed::Bound(Arc::new(Sharded::new(home, shards)))
    }
}
