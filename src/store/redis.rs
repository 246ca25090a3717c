use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisFuture, Script, Value};

use super::scripts::{
    ADOPT, CLAIM, CLAIM_USER, COUNT_USE, FINISH, HEARTBEAT, HOLDING, LAYOUT, MARKER, PREVIEW,
    SCHEDULE, STATUS, TOUCH, UNSCHEDULE_GONE,
};
use super::sharded::{DEFAULT_CLUSTER_SHARDS, MAX_SHARDS, Sharded, shard_tag};

use super::connect::{ClusterConn, ClusterHandle, SentinelConn, SentinelHandle};
use super::connect::{RedisSentinel, RedisTls};
use super::connect::{check_scheme, ensure_crypto_provider};
use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::receipts::RawReceipt;
use crate::store::{
    AdoptCounts, Adoptee, Backend, Batch, ClaimTimes, Claimed, Confirmed, Finish, FinishWith,
    Hashed, Health, Invalidation, Marked, Pending, RawPreview, RawStatus, RawSurvey, Store,
    WriterWindow, decode_job, sealed,
};

/// How long erasure announcements stay in the feed. A process that could not read the
/// feed for longer than this forgets its whole cache instead.
pub(crate) const FEED_KEEP_MS: i64 = 10 * 60 * 1000;

/// Feed entries per read.
pub(crate) const FEED_READ: usize = 1000;

/// Members per `ZADD` command when writing touches: at 5M tracked users a `ZADD` of 1,000
/// took up to 3.9 ms, of 500 about half that (`examples/bench.rs`, section 6).
const TOUCH_CHUNK: usize = 500;

/// The oldest Redis the scripts run on (function flags in `#!lua` shebangs).
pub(crate) const MIN_REDIS: (u32, u32) = (7, 0);

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
    /// use [`RedisStore::open_with_tls`].
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
            .map_err(crate::store::connect::invalid_nodes)?;
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
            .map_err(crate::store::connect::invalid_nodes)?;
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

    /// Reads what matters to the crate about the server and `namespace`: version, eviction
    /// policy, persistence, Redis's clock against this machine's, and the namespace's
    /// metadata. The CLI's `check` prints it; a bot may call it at start.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace; [`Error::Redis`] if Redis does not
    /// answer.
    pub async fn diagnose(&self, namespace: &str) -> Result<Diagnosis> {
        crate::store::validate_namespace(namespace)?;
        let mut conn = self.conn.clone();
        // On a cluster, every node's: the oldest version, the riskiest policy, persistence
        // only if every node has it.
        let infos = infos(&mut conn, &["server", "memory", "persistence"]).await?;
        let policies = node_policies(&mut conn, &infos).await;
        let snapshots = config_values(&mut conn, "save")
            .await
            .map(|saves| saves.iter().all(|save| !save.trim().is_empty()));
        let append_only =
            infos.iter().all(|i| info_field(i, "aof_enabled").as_deref() == Some("1"));
        let before = Utc::now();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        let after = Utc::now();
        let local_time = before + (after - before) / 2;
        let server_time = DateTime::from_timestamp(secs, u32::try_from(micros * 1000).unwrap_or(0))
            .unwrap_or_default();
        let meta: std::collections::HashMap<String, String> = redis::cmd("HGETALL")
            .arg(format!("{{{namespace}}}:meta"))
            .query_async(&mut conn)
            .await?;
        let namespace = (!meta.is_empty()).then(|| NamespaceMeta {
            shards: meta.get("shards").and_then(|n| n.parse().ok()).unwrap_or(1),
            created: meta
                .get("created")
                .and_then(|c| c.parse().ok())
                .and_then(DateTime::from_timestamp_millis),
            resharding: meta.get("resharding").and_then(|r| {
                let (from, to) = r.split_once(' ')?;
                Some((from.parse().ok()?, to.parse().ok()?))
            }),
        });
        Ok(Diagnosis {
            version: oldest_version(&infos),
            eviction_policy: riskiest_policy(policies),
            append_only,
            snapshots,
            server_time,
            local_time,
            namespace,
        })
    }

    /// Moves every user of `namespace` to a layout of `count` shards and records the new
    /// count: the operation to run when the shard count changes (also to shard a namespace
    /// written by a version that did not shard, whose count is 1).
    ///
    /// Stop every bot of the namespace first (a bot removes its heartbeat when it shuts
    /// down cleanly; a heartbeat younger than an hour, such as a crashed bot's, makes this
    /// refuse); open them again with [`RedisStore::with_shards`]`(count)` afterwards.
    /// While the move runs, bots that start refuse to touch the namespace. It is
    /// resumable: if it is interrupted, run it again with the same count. Confirmation
    /// nonces and rate-limit counters are not moved (they expire within minutes).
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), teloxide_retention::Error> {
    /// use teloxide_retention::RedisStore;
    ///
    /// let store = RedisStore::open_cluster(["redis://10.0.0.1:7000"]).await?;
    /// let moved = store.reshard("retention", 48).await?;
    /// println!("{} users moved from {} to {} shards", moved.users, moved.from, moved.to);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an invalid namespace or count, or if an unfinished resharding
    /// of this namespace goes to another count; [`Error::Unsafe`] if a bot still sends
    /// heartbeats or a prune batch is unfinished; [`Error::Redis`] if Redis fails (run it
    /// again).
    pub async fn reshard(&self, namespace: &str, count: usize) -> Result<Resharded> {
        crate::store::validate_namespace(namespace)?;
        check_shard_count(count)?;
        let home = Bound::new(self.conn.clone(), namespace);
        let layout = |n: usize| -> Vec<Bound> {
            (0..n).map(|i| Bound::new(self.conn.clone(), &shard_tag(namespace, i, n))).collect()
        };
        let (from, unfinished) = home.stored_layout().await?;
        if let Some(to) = unfinished
            && to != count
        {
            return Err(Error::config(format!(
                "namespace {namespace:?} is being resharded from {from} to {to} shards; finish \
                 that first with RedisStore::reshard({namespace:?}, {to})"
            )));
        }
        let mut moved = Resharded { from, to: count, users: 0, scheduled: 0 };
        if from == count {
            return Ok(moved);
        }
        let old = layout(from);
        let new = layout(count);
        if unfinished.is_none() {
            // 1. Fence the old layout first: from now on no process writes there, even one
            //    that has not sent a heartbeat yet (README guarantee 15).
            for shard in &old {
                shard.set_moved(count).await?;
            }
            // 2. Then make sure nothing is in flight there; give the fence up if it is.
            for shard in &old {
                if let Err(e) = shard.check_quiet().await {
                    for shard in &old {
                        shard.clear_moved().await?;
                    }
                    return Err(e);
                }
            }
            home.set_resharding(from, count).await?;
        }
        let now = home.server_time().await?.unwrap_or_default();
        for shard in &new {
            // 3. The target layout takes writes once the move is recorded as finished (a
            //    process opened with its count is refused by the home until then), and
            //    gets the marker that tells a lost `seen` from a new one.
            shard.clear_moved().await?;
            shard.write_marker(now).await?;
        }
        for (index, shard) in old.iter().enumerate() {
            shard.move_receipts(&new[index % count]).await?;
            let (users, scheduled) = shard.move_users(&new).await?;
            moved.users += users;
            moved.scheduled += scheduled;
            tracing::info!(shard = index, of = from, users, scheduled, "shard moved");
        }
        home.finish_resharding(count).await?;
        Ok(moved)
    }
}

/// What [`RedisStore::diagnose`] found: the server's settings that matter to the crate, and
/// the namespace's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Diagnosis {
    /// `redis_version` (on a cluster: the oldest node's).
    pub version: Option<String>,
    /// `maxmemory-policy` (on a cluster: an `allkeys-*` one if any node has it).
    pub eviction_policy: Option<String>,
    /// Whether the append-only file is on (on a cluster: on every node).
    pub append_only: bool,
    /// Whether RDB snapshots are configured (`save` is not empty; on a cluster, of the node
    /// that answered `CONFIG GET`); `None` if `CONFIG` is disabled (managed Redis).
    pub snapshots: Option<bool>,
    /// Redis's clock (`TIME`).
    pub server_time: DateTime<Utc>,
    /// This machine's clock when `TIME` was asked (the middle of the round trip).
    pub local_time: DateTime<Utc>,
    /// The namespace's metadata; `None` if no bot has used the namespace.
    pub namespace: Option<NamespaceMeta>,
}

/// A namespace's metadata (its `{ns}:meta` hash).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct NamespaceMeta {
    /// The recorded shard count (1 for a namespace of an earlier version).
    pub shards: usize,
    /// When the namespace's `seen` marker was written (the first prune pass or health check).
    pub created: Option<DateTime<Utc>>,
    /// `(from, to)` while [`RedisStore::reshard`] is moving users, or after it was
    /// interrupted.
    pub resharding: Option<(usize, usize)>,
}

/// What [`RedisStore::reshard`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Resharded {
    /// The shard count before.
    pub from: usize,
    /// The shard count now.
    pub to: usize,
    /// Tracked users moved.
    pub users: u64,
    /// Scheduled erasures moved.
    pub scheduled: u64,
}

/// A shard count must be between 1 and [`MAX_SHARDS`].
fn check_shard_count(count: usize) -> Result<()> {
    if (1..=MAX_SHARDS).contains(&count) {
        Ok(())
    } else {
        Err(Error::config(format!("shard count must be between 1 and {MAX_SHARDS}, not {count}")))
    }
}

/// Members per `ZSCAN`/`HSCAN` step and per write while resharding.
const MOVE_CHUNK: usize = 500;

/// A heartbeat younger than this means a bot may still run: resharding refuses. A bot may
/// send heartbeats as rarely as a third of its writer timeout (default 1 hour), so anything
/// shorter could miss a running bot, whose touches would then go to the old layout after
/// the move and leave the new one with stale times (an active user erased for inactivity).
/// A bot that shut down cleanly left no heartbeat; one that crashed blocks resharding for
/// this long.
const QUIET_MS: i64 = 60 * 60 * 1000;

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
    client.map_err(|e| crate::store::connect::invalid_url(url, e))
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

/// Reconnects with backoff up to 2 s; a command waits at most 5 s for Redis (the crate's own
/// store timeout, 2 s by default, is shorter).
fn manager_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(2)))
        .set_response_timeout(Some(Duration::from_secs(5)))
        .set_max_delay(Duration::from_secs(2))
        .set_number_of_retries(3)
}

impl Store for RedisStore {
    fn bind(&self, namespace: &str, _: sealed::Token) -> sealed::Bound {
        let count = self.shards();
        let home = Arc::new(Bound::new(self.conn.clone(), namespace));
        let shards = if count == 1 {
            vec![Arc::clone(&home)]
        } else {
            (0..count)
                .map(|i| Arc::new(Bound::new(self.conn.clone(), &shard_tag(namespace, i, count))))
                .collect()
        };
        sealed::Bound(Arc::new(Sharded::new(home, shards)))
    }
}

/// The value of `field` in an `INFO` reply (`field:value` lines).
/// The replies of every node: a cluster sends some commands (`INFO`, `CONFIG GET`) to every
/// node and answers with a map of node to reply; a single server answers once.
fn per_node(reply: Value) -> Vec<Value> {
    match reply {
        Value::Map(pairs) => pairs.into_iter().map(|(_, reply)| reply).collect(),
        other => vec![other],
    }
}

/// `INFO <sections>` of every node (one text per node).
async fn infos<C: ConnectionLike>(conn: &mut C, sections: &[&str]) -> Result<Vec<String>> {
    let reply: Value = redis::cmd("INFO").arg(sections).query_async(conn).await?;
    per_node(reply)
        .into_iter()
        .map(|v| redis::from_redis_value(v).map_err(|e| Error::Redis(redis::RedisError::from(e))))
        .collect()
}

/// `CONFIG GET <name>` of every node that answers; `None` if `CONFIG` is disabled.
async fn config_values<C: ConnectionLike>(conn: &mut C, name: &str) -> Option<Vec<String>> {
    let reply: Value = redis::cmd("CONFIG").arg("GET").arg(name).query_async(conn).await.ok()?;
    let values: Vec<String> = per_node(reply)
        .into_iter()
        .filter_map(|v| {
            let pair: Vec<String> = redis::from_redis_value(v).ok()?;
            pair.into_iter().nth(1)
        })
        .collect();
    (!values.is_empty()).then_some(values)
}

/// Every node's eviction policy: from `INFO memory`, which every node of a cluster answers
/// (a cluster client sends `CONFIG GET` to one node only), else from `CONFIG GET`.
async fn node_policies<C: ConnectionLike>(conn: &mut C, infos: &[String]) -> Vec<String> {
    let policies: Vec<String> =
        infos.iter().filter_map(|i| info_field(i, "maxmemory_policy")).collect();
    if !policies.is_empty() {
        return policies;
    }
    config_values(conn, "maxmemory-policy").await.unwrap_or_default()
}

/// The oldest version among the nodes' (the one the crate must work with).
fn oldest_version(infos: &[String]) -> Option<String> {
    infos
        .iter()
        .filter_map(|i| info_field(i, "redis_version"))
        .min_by_key(|v| parse_version(v).unwrap_or((0, 0)))
}

/// The riskiest eviction policy among the nodes' (an `allkeys-*` one if any node has it).
fn riskiest_policy(policies: Vec<String>) -> Option<String> {
    policies
        .iter()
        .find(|p| p.starts_with("allkeys-"))
        .cloned()
        .or_else(|| policies.into_iter().next())
}

fn info_field(info: &str, field: &str) -> Option<String> {
    info.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        (k == field).then(|| v.trim().to_owned())
    })
}

/// `(major, minor)` of a version such as `7.0.15`.
pub(crate) fn parse_version(v: &str) -> Option<(u32, u32)> {
    let mut parts = v.split('.');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Fails with a clear error for a Redis older than [`MIN_REDIS`]; an unknown version passes
/// (the scripts would then fail with Redis's own error).
pub(crate) fn check_version(version: Option<&str>) -> Result<()> {
    match version.and_then(parse_version) {
        Some(v) if v < MIN_REDIS => Err(Error::Unsafe(format!(
            "Redis {} is too old: teloxide-retention needs Redis {}.{} or newer (its scripts \
             declare flags, so that Redis refuses them up front under memory pressure \
             instead of failing halfway)",
            version.unwrap_or_default(),
            MIN_REDIS.0,
            MIN_REDIS.1
        ))),
        _ => Ok(()),
    }
}

/// Every key of one shard of a namespace (of the namespace itself when it has one shard).
/// Keys are built here and nowhere else.
struct Keys {
    /// The hash tag: the namespace, or a shard's tag.
    tag: String,
    prefix: String,
    seen: String,
    lease: String,
    queue: String,
    job: String,
    feed: String,
    batches: String,
    writers: String,
    meta: String,
    failing: String,
    receipts: String,
    audit: String,
}

impl Keys {
    fn new(tag: &str) -> Self {
        // The braces make `tag` the Redis Cluster hash tag of every key.
        let prefix = format!("{{{tag}}}:");
        Self {
            seen: format!("{prefix}seen"),
            lease: format!("{prefix}lease"),
            queue: format!("{prefix}queue"),
            job: format!("{prefix}job"),
            feed: format!("{prefix}feed"),
            batches: format!("{prefix}batches"),
            writers: format!("{prefix}writers"),
            meta: format!("{prefix}meta"),
            failing: format!("{prefix}failing"),
            receipts: format!("{prefix}receipts"),
            audit: format!("{prefix}audit"),
            tag: tag.to_owned(),
            prefix,
        }
    }

    fn nonce(&self, who: &Hashed) -> String {
        format!("{}confirm:{}", self.prefix, who.tag)
    }

    fn counter(&self, action: &str, who: &Hashed, window: i64) -> String {
        format!("{}rate:{action}:{}:{window}", self.prefix, who.tag)
    }
}

/// One hash tag of a namespace: a shard, or the home that records the shard count.
pub(crate) struct Bound {
    conn: Conn,
    keys: Keys,
}

impl Bound {
    fn new(conn: Conn, tag: &str) -> Self {
        Self { conn, keys: Keys::new(tag) }
    }

    /// Another tag of the same store: a shard of another layout of this namespace.
    pub(crate) fn sibling(&self, tag: &str) -> Self {
        Self::new(self.conn.clone(), tag)
    }

    /// The hash tag of this part: the namespace for the home.
    pub(crate) fn namespace(&self) -> &str {
        &self.keys.tag
    }

    /// Checks the namespace's recorded shard count against `count`, recording it if the
    /// namespace is new (on the home only): [`Error::ShardCount`] or
    /// [`Error::Resharding`] if they differ.
    pub(crate) async fn check_layout(&self, count: usize) -> Result<()> {
        let mut inv = self.invocation(&LAYOUT);
        inv.arg(count);
        let verdict: String = self.run(&inv).await?;
        let namespace = self.keys.tag.clone();
        let number = |word: Option<&str>| word.and_then(|w| w.parse::<usize>().ok());
        let mut words = verdict.split(' ');
        match (words.next(), words.next(), words.next()) {
            (Some(""), None, None) => Ok(()),
            (Some("stored"), stored, None) if number(stored).is_some() => Err(Error::ShardCount {
                namespace,
                recorded: number(stored).unwrap_or(1),
                opened: count,
            }),
            (Some("moving"), from, to) if number(from).is_some() && number(to).is_some() => {
                Err(Error::Resharding {
                    namespace,
                    from: number(from).unwrap_or(1),
                    to: number(to).unwrap_or(1),
                })
            }
            // Users in the one-shard layout of versions that did not record a count.
            (Some("unsharded"), None, None) => {
                Err(Error::ShardCount { namespace, recorded: 1, opened: count })
            }
            _ => Err(Error::Corrupt(format!("layout check answered {verdict:?}"))),
        }
    }

    /// Fences this layout: writes into its keys are refused from now on (see `fence.lua`).
    async fn set_moved(&self, to: usize) -> Result<()> {
        redis::cmd("HSET")
            .arg(&self.keys.meta)
            .arg("moved")
            .arg(to)
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Lifts the fence of this layout (it is the target of a resharding, or one was given
    /// up).
    async fn clear_moved(&self) -> Result<()> {
        redis::cmd("HDEL")
            .arg(&self.keys.meta)
            .arg("moved")
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// Writes the marker of a new shard's `seen` (as `marker.lua` does), without the fence:
    /// the target of a resharding is written while the namespace is still fenced.
    async fn write_marker(&self, now: i64) -> Result<()> {
        redis::pipe()
            .atomic()
            .cmd("HSET")
            .arg(&self.keys.meta)
            .arg("created")
            .arg(now)
            .ignore()
            .cmd("ZADD")
            .arg(&self.keys.seen)
            .arg("NX")
            .arg("+inf")
            .arg("marker")
            .ignore()
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    /// The recorded shard count (1 if none: a namespace from before counts were recorded,
    /// or a new one), and the target of an unfinished resharding.
    async fn stored_layout(&self) -> Result<(usize, Option<usize>)> {
        let (stored, moving): (Option<usize>, Option<String>) = redis::cmd("HMGET")
            .arg(&self.keys.meta)
            .arg("shards")
            .arg("resharding")
            .query_async(&mut self.conn.clone())
            .await?;
        match moving {
            None => Ok((stored.unwrap_or(1), None)),
            Some(moving) => {
                let mut parts = moving.split(' ').map(str::parse::<usize>);
                match (parts.next(), parts.next()) {
                    (Some(Ok(from)), Some(Ok(to))) => Ok((from, Some(to))),
                    _ => Err(Error::Corrupt(format!("resharding record {moving:?}"))),
                }
            }
        }
    }

    async fn set_resharding(&self, from: usize, to: usize) -> Result<()> {
        redis::cmd("HSET")
            .arg(&self.keys.meta)
            .arg("resharding")
            .arg(format!("{from} {to}"))
            .query_async::<()>(&mut self.conn.clone())
            .await?;
        Ok(())
    }

    async fn finish_resharding(&self, count: usize) -> Result<()> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("HSET")
            .arg(&self.keys.meta)
            .arg("shards")
            .arg(count)
            .ignore()
            .cmd("HDEL")
            .arg(&self.keys.meta)
            .arg("resharding")
            .ignore();
        pipe.query_async::<()>(&mut self.conn.clone()).await?;
        Ok(())
    }

    /// Refuses to reshard while a bot may still write to this shard or a batch of it is
    /// being erased.
    async fn check_quiet(&self) -> Result<()> {
        let mut conn = self.conn.clone();
        let batches: u64 = redis::cmd("ZCARD").arg(&self.keys.lease).query_async(&mut conn).await?;
        if batches > 0 {
            return Err(Error::Unsafe(format!(
                "{} holds {batches} unfinished prune batches; let a bot with the current shard \
                 count finish them (Retention::prune_once, after the lease) before resharding",
                self.keys.prefix.trim_end_matches(':')
            )));
        }
        let now = self.server_time().await?.unwrap_or_default();
        let writers: Vec<(String, String)> =
            redis::cmd("HGETALL").arg(&self.keys.writers).query_async(&mut conn).await?;
        for (id, beat) in writers {
            let at: i64 = beat.split(',').next().and_then(|t| t.parse().ok()).unwrap_or(i64::MAX);
            if now.saturating_sub(at) < QUIET_MS {
                return Err(Error::Unsafe(format!(
                    "writer {id} sent a heartbeat {} s ago: a bot may still run on this \
                     namespace; stop every bot before resharding (a bot that crashed instead \
                     of shutting down counts as running for an hour after its last heartbeat)",
                    now.saturating_sub(at).max(0) / 1000
                )));
            }
        }
        Ok(())
    }

    /// Copies this shard's users, scheduled erasures and jobs into the shards of `new`
    /// (each to its user's shard), then deletes this shard's keys. Copies are idempotent,
    /// so an interrupted move is finished by running it again. Returns the users and
    /// scheduled erasures moved.
    /// Moves this shard's erasure receipts into `target`'s stream, oldest first. They are
    /// found by a lookup of every shard, so any target will do. An entry keeps its time
    /// unless the target already holds later ones (ids only grow), which only delays its
    /// trimming; each page is deleted here once copied, so a rerun after an interruption
    /// copies at most one page twice.
    async fn move_receipts(&self, target: &Bound) -> Result<()> {
        let mut conn = self.conn.clone();
        let source_ttl: i64 =
            redis::cmd("PTTL").arg(&self.keys.receipts).query_async(&mut conn).await?;
        let top: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(&target.keys.receipts)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(1)
            .query_async(&mut conn)
            .await?;
        let ms_of = |id: &str| id.split('-').next().and_then(|ms| ms.parse::<u64>().ok());
        let mut top_ms = top.ids.first().and_then(|e| ms_of(&e.id)).unwrap_or(0);
        loop {
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.receipts)
                .arg("-")
                .arg("+")
                .arg("COUNT")
                .arg(MOVE_CHUNK)
                .query_async(&mut conn)
                .await?;
            if page.ids.is_empty() {
                break;
            }
            let mut copy = redis::pipe();
            let mut delete = redis::cmd("XDEL");
            delete.arg(&self.keys.receipts);
            for entry in &page.ids {
                top_ms = top_ms.max(ms_of(&entry.id).unwrap_or(0));
                let add = copy.cmd("XADD").arg(&target.keys.receipts).arg(format!("{top_ms}-*"));
                for field in ["h", "r", "t", "e", "a"] {
                    add.arg(field).arg(entry.get::<String>(field).unwrap_or_default());
                }
                copy.ignore();
                delete.arg(&entry.id);
            }
            copy.query_async::<()>(&mut conn).await?;
            delete.query_async::<()>(&mut conn).await?;
        }
        if source_ttl > 0 {
            let target_ttl: i64 =
                redis::cmd("PTTL").arg(&target.keys.receipts).query_async(&mut conn).await?;
            if target_ttl < source_ttl {
                redis::cmd("PEXPIRE")
                    .arg(&target.keys.receipts)
                    .arg(source_ttl)
                    .query_async::<()>(&mut conn)
                    .await?;
            }
        }
        // An emptied stream stays as a key until deleted.
        redis::cmd("DEL").arg(&self.keys.receipts).query_async::<()>(&mut conn).await?;
        Ok(())
    }

    async fn move_users(&self, new: &[Bound]) -> Result<(u64, u64)> {
        let mut conn = self.conn.clone();
        let count = new.len();
        // A member that is not a user (see `parse_user`) is kept, in the first shard, where
        // claims go on reporting it.
        let to = |member: &str| -> Result<&Bound> {
            Ok(match crate::humans::parse_user(member) {
                Some(user) => &new[super::sharded::shard_of(user, count)],
                None => &new[0],
            })
        };
        let (mut users, mut scheduled) = (0, 0);
        for (key, kind) in [
            (&self.keys.seen, "ZSCAN"),
            (&self.keys.queue, "ZSCAN"),
            (&self.keys.job, "HSCAN"),
            (&self.keys.failing, "HSCAN"),
        ] {
            let mut cursor = 0u64;
            loop {
                let (next, flat): (u64, Vec<String>) = redis::cmd(kind)
                    .arg(key)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(MOVE_CHUNK)
                    .query_async(&mut conn)
                    .await?;
                let mut pipe = redis::pipe();
                let mut writes = 0;
                for pair in flat.chunks_exact(2) {
                    let (member, value) = (&pair[0], &pair[1]);
                    if key == &self.keys.seen && member == "marker" {
                        continue;
                    }
                    let target = to(member)?;
                    writes += 1;
                    if key == &self.keys.seen {
                        users += 1;
                        pipe.cmd("ZADD").arg(&target.keys.seen).arg("GT").arg(value).arg(member);
                    } else if key == &self.keys.queue {
                        scheduled += 1;
                        pipe.cmd("ZADD").arg(&target.keys.queue).arg(value).arg(member);
                    } else if key == &self.keys.job {
                        pipe.cmd("HSET").arg(&target.keys.job).arg(member).arg(value);
                    } else {
                        pipe.cmd("HSET").arg(&target.keys.failing).arg(member).arg(value);
                    }
                    pipe.ignore();
                }
                if writes > 0 {
                    pipe.query_async::<()>(&mut conn).await?;
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        let k = &self.keys;
        let same: Vec<&str> = new.iter().map(|b| b.keys.tag.as_str()).collect();
        if same.contains(&k.tag.as_str()) {
            // Cannot happen (tags name their count), but never delete a target shard.
            return Err(Error::Corrupt(format!("shard {} is both source and target", k.tag)));
        }
        redis::cmd("DEL")
            .arg(&k.seen)
            .arg(&k.queue)
            .arg(&k.job)
            .arg(&k.lease)
            .arg(&k.batches)
            .arg(&k.feed)
            .arg(&k.writers)
            .arg(&k.failing)
            .query_async::<()>(&mut conn)
            .await?;
        // The home keeps its `meta` (the shard count); a shard's goes with it.
        redis::cmd("HDEL").arg(&k.meta).arg("created").query_async::<()>(&mut conn).await?;
        Ok((users, scheduled))
    }
    /// Calls `f` for each receipt of this shard younger than `keep_ms` at `now`, oldest
    /// first, reading 1,000 at a time.
    async fn each_receipt(
        &self,
        now: i64,
        keep_ms: i64,
        mut f: impl FnMut(&redis::streams::StreamId) -> Result<()>,
    ) -> Result<()> {
        const PAGE: usize = 1000;
        let mut conn = self.conn.clone();
        let mut start = format!("{}", now.saturating_sub(keep_ms).max(0));
        loop {
            let page: redis::streams::StreamRangeReply = redis::cmd("XRANGE")
                .arg(&self.keys.receipts)
                .arg(&start)
                .arg("+")
                .arg("COUNT")
                .arg(PAGE)
                .query_async(&mut conn)
                .await?;
            let Some(last) = page.ids.last() else { return Ok(()) };
            start = format!("({}", last.id);
            for entry in &page.ids {
                f(entry)?;
            }
            if page.ids.len() < PAGE {
                return Ok(());
            }
        }
    }

    fn invocation<'s>(&self, script: &'s Script) -> redis::ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        inv.key(&self.keys.seen)
            .key(&self.keys.lease)
            .key(&self.keys.queue)
            .key(&self.keys.job)
            .key(&self.keys.feed)
            .key(&self.keys.batches)
            .key(&self.keys.writers)
            .key(&self.keys.meta)
            .key(&self.keys.failing)
            .key(&self.keys.receipts);
        inv
    }

    async fn run<T: FromRedisValue>(&self, inv: &redis::ScriptInvocation<'_>) -> Result<T> {
        Ok(inv.invoke_async(&mut self.conn.clone()).await?)
    }
}

/// An invalidation from its feed entry's fields (`u` user, `s` since, `e` until, `o`
/// opt-out); `None` if it lacks a user or holds a value this version cannot read.
fn decode_invalidation(fields: &[Value]) -> Option<Invalidation> {
    let mut inv = Invalidation { user: 0, since: 0, until: 0, opt_out: false };
    for kv in fields.chunks_exact(2) {
        match text(&kv[0]).ok()?.as_str() {
            "u" => inv.user = crate::humans::parse_user(&text(&kv[1]).ok()?)?,
            "s" => inv.since = int(&kv[1]).ok()?,
            "e" => inv.until = int(&kv[1]).ok()?,
            "o" => inv.opt_out = int(&kv[1]).ok()? == 1,
            _ => {}
        }
    }
    (inv.user != 0).then_some(inv)
}

/// A receipt from its stream entry (`t` time, `r` reason, `e` erasers, `a` attempts).
fn decode_receipt(entry: &redis::streams::StreamId) -> Result<RawReceipt> {
    let field = |name: &str| {
        entry
            .get::<String>(name)
            .ok_or_else(|| Error::Unsafe(format!("receipt {} lacks its field `{name}`", entry.id)))
    };
    let bad = |what: &str| Error::Unsafe(format!("receipt {} has an unreadable {what}", entry.id));
    Ok(RawReceipt {
        at: field("t")?.parse().map_err(|_| bad("time"))?,
        reason: ErasureReason::from_code(&field("r")?).ok_or_else(|| bad("reason"))?,
        erasers: field("e")?,
        attempts: field("a")?.parse().map_err(|_| bad("attempt count"))?,
    })
}

/// "Now" for a script: the given time, or empty for Redis's own clock.
fn now_arg(now: Option<i64>) -> String {
    now.map(|n| n.to_string()).unwrap_or_default()
}

/// A score as Redis writes it: integers stay integers, "never" is `+inf`.
fn due_arg(due: Option<i64>) -> String {
    due.map_or_else(|| "+inf".to_owned(), |d| d.to_string())
}

fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => parse_num(&String::from_utf8_lossy(b)),
        Value::SimpleString(s) => parse_num(s),
        Value::Double(d) => Ok(*d as i64),
        other => Err(Error::Corrupt(format!("expected a number, got {other:?}"))),
    }
}

/// Parses an integer, or a score Redis printed as a float (`"1.7e+12"`, `"inf"`).
fn parse_num(s: &str) -> Result<i64> {
    s.parse::<i64>().or_else(|_| {
        s.parse::<f64>()
            .map(|f| if f.is_infinite() { i64::MAX } else { f as i64 })
            .map_err(|_| Error::Corrupt(format!("expected a number, got {s:?}")))
    })
}

fn text(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Corrupt(format!("expected a string, got {other:?}"))),
    }
}

/// A user id the scripts returned; they return canonical ids only (`ids.lua`).
fn user_of(v: &Value) -> Result<u64> {
    let s = text(v)?;
    crate::humans::parse_user(&s).ok_or_else(|| Error::Corrupt(format!("user id {s:?}")))
}

fn reason_of(v: &Value) -> Result<ErasureReason> {
    let s = text(v)?;
    ErasureReason::from_code(&s).ok_or_else(|| Error::Corrupt(format!("reason {s:?}")))
}

impl Backend for Bound {
    fn parts(&self) -> Vec<&dyn Backend> {
        vec![self]
    }

    fn touch<'a>(&'a self, touches: &'a [(u64, i64)]) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // One fenced `ZADD GT` per chunk; the chunks go out together over the multiplexed
            // connection.
            let writes = touches.chunks(TOUCH_CHUNK).map(|chunk| async move {
                let mut inv = self.invocation(&TOUCH);
                for (user, ms) in chunk {
                    inv.arg(*ms).arg(*user);
                }
                self.run::<()>(&inv).await
            });
            futures_util::future::try_join_all(writes).await.map(drop)
        })
    }

    fn claim(
        &self,
        times: ClaimTimes,
        writers: WriterWindow,
        limit: usize,
        id: u64,
    ) -> BoxFuture<'_, Result<Batch>> {
        Box::pin(async move {
            let mut inv = self.invocation(&CLAIM);
            inv.arg(now_arg(times.now))
                .arg(times.inactive_ms)
                .arg(times.lease_ms)
                .arg(limit)
                .arg(id)
                .arg(writers.silent_ms)
                .arg(writers.dead_ms);
            let (plain, special, deadline, held, unreadable, returned): (
                Vec<Value>,
                Vec<Value>,
                Value,
                String,
                Vec<String>,
                Vec<Value>,
            ) = self.run(&inv).await?;
            let mut users = Vec::with_capacity(plain.len() + special.len() / 4);
            for user in &plain {
                users.push(Claimed {
                    user: user_of(user)?,
                    reason: ErasureReason::Inactive,
                    marked_at: 0,
                    attempts: 0,
                });
            }
            for c in special.chunks_exact(4) {
                users.push(Claimed {
                    user: user_of(&c[0])?,
                    reason: reason_of(&c[1])?,
                    marked_at: int(&c[2])?,
                    attempts: u32::try_from(int(&c[3])?).unwrap_or(u32::MAX),
                });
            }
            let held = (!held.is_empty()).then_some(held);
            let returned = returned.iter().map(user_of).collect::<Result<_>>()?;
            Ok(Batch { id, deadline: int(&deadline)?, users, held, unreadable, returned })
        })
    }

    fn claim_user(
        &self,
        user: u64,
        reason: ErasureReason,
        times: ClaimTimes,
        id: u64,
    ) -> BoxFuture<'_, Result<Option<Batch>>> {
        Box::pin(async move {
            let mut inv = self.invocation(&CLAIM_USER);
            inv.arg(user).arg(reason.code()).arg(now_arg(times.now)).arg(times.lease_ms).arg(id);
            let reply: Vec<i64> = self.run(&inv).await?;
            Ok(match reply.as_slice() {
                [1, attempts, now, deadline] => {
                    let attempts = u32::try_from(*attempts).unwrap_or(u32::MAX);
                    let users = vec![Claimed { user, reason, marked_at: *now, attempts }];
                    Some(Batch {
                        id,
                        deadline: *deadline,
                        users,
                        held: None,
                        unreadable: Vec::new(),
                        returned: Vec::new(),
                    })
                }
                _ => None,
            })
        })
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let (secs, micros): (i64, i64) =
                redis::cmd("TIME").query_async(&mut self.conn.clone()).await?;
            Ok(Some(secs.saturating_mul(1000).saturating_add(micros / 1000)))
        })
    }

    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut inv = self.invocation(&HEARTBEAT);
            inv.arg(id).arg(backlog).arg(0);
            self.run::<()>(&inv).await
        })
    }

    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut inv = self.invocation(&HEARTBEAT);
            inv.arg(id).arg(0).arg(1);
            self.run::<()>(&inv).await
        })
    }

    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async move {
            let mut inv = self.invocation(&HOLDING);
            inv.arg(writers.silent_ms).arg(writers.dead_ms);
            let held: String = self.run(&inv).await?;
            Ok((!held.is_empty()).then_some(held))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // On a cluster every node answers: the oldest version and the riskiest policy
            // count.
            let infos = infos(&mut conn, &["server", "memory"]).await.unwrap_or_default();
            let eviction_policy = riskiest_policy(node_policies(&mut conn, &infos).await);
            let version = oldest_version(&infos);
            // The scripts need Redis 7; do not run one on an older server.
            let seen_vanished = if check_version(version.as_deref()).is_err() {
                false
            } else {
                let mut inv = self.invocation(&MARKER);
                inv.arg(0);
                self.run::<i64>(&inv).await? == 1
            };
            Ok(Health { version, eviction_policy, seen_vanished })
        })
    }

    fn finish<'a>(
        &'a self,
        batch: &'a Batch,
        done: &'a [Claimed],
        failed: &'a [(Claimed, i64)],
        now: i64,
        follow_up_at: i64,
        with: FinishWith<'a>,
    ) -> BoxFuture<'a, Result<Option<Finish>>> {
        let FinishWith { stuck, receipts } = with;
        Box::pin(async move {
            let mut inv = self.invocation(&FINISH);
            inv.arg(now)
                .arg(follow_up_at)
                .arg(FEED_KEEP_MS)
                .arg(batch.id)
                .arg(batch.deadline)
                .arg(done.len())
                .arg(stuck.after_ms)
                .arg(stuck.every_ms)
                .arg(receipts.map_or(0, |r| r.keep_ms))
                .arg(receipts.map_or("", |r| r.erasers.as_str()));
            for c in done {
                inv.arg(c.user);
            }
            if let Some(receipts) = receipts {
                for (c, tag) in done.iter().zip(&receipts.tags) {
                    inv.arg(tag).arg(c.reason.code()).arg(c.attempts.saturating_add(1));
                }
            }
            for (c, retry_at) in failed {
                inv.arg(c.user)
                    .arg(c.reason.code())
                    .arg(c.marked_at)
                    .arg(c.attempts.saturating_add(1))
                    .arg(*retry_at);
            }
            // {-1} (lease lost), or {k, k positions of follow-ups, failing pairs}.
            let reply: Vec<Value> = self.run(&inv).await?;
            let k = int(reply
                .first()
                .ok_or_else(|| Error::Unsafe("finish replied nothing".into()))?)?;
            if k < 0 {
                return Ok(None);
            }
            let k = usize::try_from(k).unwrap_or(usize::MAX).min(reply.len() - 1);
            let mut confirmed = vec![Confirmed::Erased; done.len()];
            for position in &reply[1..=k] {
                let at = usize::try_from(int(position)?).ok().and_then(|p| p.checked_sub(1));
                let slot = at.and_then(|i| confirmed.get_mut(i)).ok_or_else(|| {
                    Error::Unsafe(format!("finish named follow-up {position:?} of {}", done.len()))
                })?;
                *slot = Confirmed::ErasedWithFollowUp;
            }
            let failing = &reply[k + 1..];
            let failing = failing
                .chunks_exact(2)
                .map(|pair| Ok((int(&pair[0])?, int(&pair[1])? == 1)))
                .collect::<Result<_>>()?;
            Ok(Some(Finish { confirmed, failing }))
        })
    }

    fn schedule(
        &self,
        user: u64,
        reason: ErasureReason,
        marked_at: i64,
        due: Option<i64>,
    ) -> BoxFuture<'_, Result<Marked>> {
        Box::pin(async move {
            let mut inv = self.invocation(&SCHEDULE);
            inv.arg(user).arg(reason.code()).arg(marked_at).arg(due_arg(due)).arg(FEED_KEEP_MS);
            let code: i64 = self.run(&inv).await?;
            Ok(match code {
                1 => Marked::Scheduled,
                2 => Marked::InProgress,
                _ => Marked::AlreadyScheduled,
            })
        })
    }

    fn unschedule_gone(&self, user: u64) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let mut inv = self.invocation(&UNSCHEDULE_GONE);
            inv.arg(user);
            let code: i64 = self.run(&inv).await?;
            Ok(code == 1)
        })
    }

    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        Box::pin(async move {
            let mut inv = self.invocation(&STATUS);
            inv.arg(user);
            let (seen, queued, job, leased): (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<String>,
            ) = self.run(&inv).await?;
            let score = |v: Option<String>| v.as_deref().map(parse_num).transpose();
            let job = job.as_deref().map(decode_job).transpose()?;
            Ok(RawStatus {
                last_seen: score(seen)?,
                queued_due: score(queued)?.map(|d| (d != i64::MAX).then_some(d)),
                leased_until: score(leased)?,
                job,
            })
        })
    }

    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        Box::pin(async move {
            let mut inv = self.invocation(&PREVIEW);
            inv.arg(times.now.map_or(String::new(), |ms| ms.to_string()))
                .arg(times.inactive_ms)
                .arg(limit);
            let flat: Vec<Value> = self.run(&inv).await?;
            let [inactive, due, expired, rest @ ..] = flat.as_slice() else {
                return Err(Error::Corrupt("short preview reply".into()));
            };
            let entries = rest
                .chunks_exact(4)
                .map(|c| {
                    let seen = text(&c[3])?;
                    Ok((
                        user_of(&c[0])?,
                        reason_of(&c[1])?,
                        int(&c[2])?,
                        if seen.is_empty() { None } else { Some(parse_num(&seen)?) },
                    ))
                })
                .collect::<Result<_>>()?;
            Ok(RawPreview {
                inactive_total: int(inactive)?.unsigned_abs(),
                due_total: int(due)?.unsigned_abs(),
                expired_leases: int(expired)?.unsigned_abs(),
                entries,
            })
        })
    }

    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let last: Value = redis::cmd("XREVRANGE")
                .arg(&self.keys.feed)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(match last {
                Value::Array(entries) => match entries.first() {
                    Some(Value::Array(entry)) => entry.first().map(text).transpose()?,
                    _ => None,
                },
                _ => None,
            }
            .unwrap_or_else(|| "0-0".to_owned()))
        })
    }

    fn feed_read<'a>(
        &'a self,
        cursor: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<Invalidation>, String)>> {
        Box::pin(async move {
            let reply: Value = redis::cmd("XRANGE")
                .arg(&self.keys.feed)
                .arg(format!("({cursor}"))
                .arg("+")
                .arg("COUNT")
                .arg(FEED_READ)
                .query_async(&mut self.conn.clone())
                .await?;
            let mut out = Vec::new();
            let mut next = cursor.to_owned();
            let Value::Array(entries) = reply else {
                return Ok((out, next));
            };
            for entry in entries {
                let Value::Array(parts) = entry else { continue };
                let [id, fields] = parts.as_slice() else { continue };
                next = text(id)?;
                let fields: Vec<Value> = match fields {
                    Value::Array(f) => f.clone(),
                    Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
                    _ => continue,
                };
                match decode_invalidation(&fields) {
                    Some(inv) => out.push(inv),
                    // Not written by this crate: nothing to drop from the cache for it.
                    None => tracing::warn!(entry = %next, "skipped an unreadable feed entry"),
                }
            }
            Ok((out, next))
        })
    }

    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            redis::cmd("SET")
                .arg(self.keys.nonce(who))
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async::<()>(&mut self.conn.clone())
                .await?;
            Ok(())
        })
    }

    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(redis::cmd("GETDEL")
                .arg(self.keys.nonce(who))
                .query_async(&mut self.conn.clone())
                .await?)
        })
    }

    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut inv = COUNT_USE.prepare_invoke();
            inv.key(self.keys.counter(action, who, window)).arg(ttl_ms.max(1));
            let count: u64 = self.run(&inv).await?;
            Ok(count)
        })
    }

    fn adopt<'a>(&'a self, users: &'a [Adoptee]) -> BoxFuture<'a, Result<AdoptCounts>> {
        Box::pin(async move {
            let mut total = AdoptCounts::default();
            for chunk in users.chunks(TOUCH_CHUNK) {
                let mut inv = self.invocation(&ADOPT);
                for a in chunk {
                    let ms = if a.if_new { format!("n{}", a.ms) } else { a.ms.to_string() };
                    inv.arg(ms).arg(a.user);
                }
                let [new, moved, kept, erasing]: [u64; 4] = self.run(&inv).await?;
                total += AdoptCounts { new, moved, kept, erasing };
            }
            Ok(total)
        })
    }

    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            if users.is_empty() {
                return Ok(Vec::new());
            }
            // Tracked (`seen`) or with a job (scheduled or running: a running erasure keeps
            // its job until it is confirmed).
            let (seen, jobs): (Vec<Option<f64>>, Vec<Option<String>>) = redis::pipe()
                .cmd("ZMSCORE")
                .arg(&self.keys.seen)
                .arg(users)
                .cmd("HMGET")
                .arg(&self.keys.job)
                .arg(users)
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(seen.iter().zip(&jobs).map(|(s, j)| s.is_some() || j.is_some()).collect())
        })
    }

    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let (secret,): (String,) = redis::pipe()
                .atomic()
                .cmd("HSETNX")
                .arg(&self.keys.meta)
                .arg("secret")
                .arg(candidate)
                .ignore()
                .cmd("HGET")
                .arg(&self.keys.meta)
                .arg("secret")
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(secret)
        })
    }

    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            // Users only: the marker's score is +inf.
            Ok(redis::cmd("ZCOUNT")
                .arg(&self.keys.seen)
                .arg("-inf")
                .arg("(+inf")
                .query_async(&mut self.conn.clone())
                .await?)
        })
    }

    fn survey<'a>(
        &'a self,
        now: i64,
        ranges: &'a [(i64, i64)],
    ) -> BoxFuture<'a, Result<RawSurvey>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for (after, up_to) in ranges {
                pipe.cmd("ZCOUNT").arg(&self.keys.seen).arg(format!("({after}")).arg(*up_to);
            }
            pipe.cmd("ZCOUNT").arg(&self.keys.queue).arg("-inf").arg(now);
            pipe.cmd("HVALS").arg(&self.keys.job);
            pipe.cmd("HVALS").arg(&self.keys.failing);
            pipe.cmd("HGETALL").arg(&self.keys.writers);
            let mut replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await?;
            fn parse<T: FromRedisValue>(reply: Option<Value>) -> Result<T> {
                redis::from_redis_value(reply.unwrap_or(Value::Nil))
                    .map_err(|e| Error::Redis(redis::RedisError::from(e)))
            }
            let writers: Vec<(String, String)> = parse(replies.pop())?;
            let failing: Vec<String> = parse(replies.pop())?;
            let jobs: Vec<String> = parse(replies.pop())?;
            let scheduled_due: u64 = parse(replies.pop())?;
            let seen = replies.into_iter().map(|v| parse(Some(v))).collect::<Result<Vec<u64>>>()?;
            let mut survey = RawSurvey { seen, scheduled_due, ..RawSurvey::default() };
            // A job this version cannot read is the claim's to report, not a reason to fail.
            for job in jobs.iter().filter_map(|job| decode_job(job).ok()) {
                let (reason, _, attempts) = job;
                survey.scheduled[reason.index()] += 1;
                survey.max_attempts = survey.max_attempts.max(attempts);
            }
            survey.failing_since = failing
                .iter()
                .filter_map(|v| v.split(',').next().and_then(|s| s.parse().ok()))
                .collect();
            survey.writers = writers
                .into_iter()
                .filter_map(|(id, value)| {
                    let (time, backlog) = value.split_once(',')?;
                    Some((id, time.parse().ok()?, backlog.parse().ok()?))
                })
                .collect();
            Ok(survey)
        })
    }

    fn pending(&self) -> BoxFuture<'_, Result<Pending>> {
        Box::pin(async move {
            let (scheduled, failing): (u64, Vec<String>) = redis::pipe()
                .cmd("ZCARD")
                .arg(&self.keys.queue)
                .cmd("HVALS")
                .arg(&self.keys.failing)
                .query_async(&mut self.conn.clone())
                .await?;
            let since = |v: &String| v.split(',').next().and_then(|s| s.parse::<i64>().ok());
            Ok(Pending {
                scheduled,
                failing: failing.len() as u64,
                oldest_failing_since: failing.iter().filter_map(since).min(),
            })
        })
    }

    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>> {
        Box::pin(async move {
            let mut found = Vec::new();
            self.each_receipt(now, keep_ms, |entry| {
                if entry.get::<String>("h").as_deref() == Some(tag) {
                    found.push(decode_receipt(entry)?);
                }
                Ok(())
            })
            .await?;
            Ok(found)
        })
    }

    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&self.keys.audit)
                .arg(holder)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(taken.is_some())
        })
    }

    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            redis::cmd("HSET")
                .arg(&self.keys.meta)
                .arg("audit")
                .arg(summary)
                .query_async::<()>(&mut self.conn.clone())
                .await?;
            Ok(())
        })
    }

    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async move {
            Ok(redis::cmd("HGET")
                .arg(&self.keys.meta)
                .arg("audit")
                .query_async(&mut self.conn.clone())
                .await?)
        })
    }

    fn receipt_tags(
        &self,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<(String, RawReceipt)>>> {
        Box::pin(async move {
            let mut found = Vec::new();
            self.each_receipt(now, keep_ms, |entry| {
                // An entry this version cannot read names nobody the audit could match.
                if let (Some(tag), Ok(receipt)) = (entry.get::<String>("h"), decode_receipt(entry))
                {
                    found.push((tag, receipt));
                }
                Ok(())
            })
            .await?;
            Ok(found)
        })
    }

    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut inv = self.invocation(&MARKER);
            inv.arg(1);
            self.run::<i64>(&inv).await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_carries_the_namespace_hash_tag() {
        let keys = Keys::new("mybot");
        for key in [
            &keys.seen,
            &keys.lease,
            &keys.queue,
            &keys.job,
            &keys.feed,
            &keys.batches,
            &keys.writers,
            &keys.meta,
        ] {
            assert!(key.starts_with("{mybot}:"), "{key}");
        }
        let who = Hashed { user: 42, tag: "ab12".to_owned() };
        assert_eq!(keys.nonce(&who), "{mybot}:confirm:ab12");
        assert_eq!(keys.counter("export", &who, 7), "{mybot}:rate:export:ab12:7");
    }

    #[test]
    fn scores_parse_from_every_redis_spelling() {
        assert_eq!(parse_num("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_num("1.7e+12").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_num("inf").unwrap(), i64::MAX);
        assert!(parse_num("x").is_err());
        assert_eq!(due_arg(None), "+inf");
        assert_eq!(due_arg(Some(5)), "5");
    }

    #[test]
    fn versions_before_7_0_are_refused_with_a_clear_error() {
        let err = check_version(Some("6.2.14")).unwrap_err();
        assert!(err.to_string().contains("Redis 6.2.14 is too old"), "{err}");
        assert!(err.to_string().contains("7.0 or newer"), "{err}");
        assert!(check_version(Some("7.0.15")).is_ok());
        assert!(check_version(Some("8.2.1")).is_ok());
        assert!(check_version(None).is_ok());
        assert_eq!(
            info_field("# Server\r\nredis_version:7.0.15\r\n", "redis_version").unwrap(),
            "7.0.15"
        );
    }
}
