//! How [`RedisStore`](crate::RedisStore) reaches Redis beyond a plain URL: TLS with a CA or
//! client certificate of your own, and Sentinel, whose master it follows across failovers.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{AsyncConnectionConfig, Cmd, IntoConnectionInfo, Pipeline, RedisError, RedisFuture};
use redis::{ServerErrorKind, Value};

use crate::error::{Error, Result};

/// TLS settings for Redis beyond what a `rediss://` URL says (needs the `tls` feature, on
/// by default).
///
/// A `rediss://` URL alone trusts the webpki roots (Mozilla's CA list, built into the
/// binary), which covers managed services with public certificates (Upstash, Redis Cloud,
/// ElastiCache with in-transit encryption). Use this for a private CA or a self-signed
/// server, and for a client certificate when the server requires one (mutual TLS,
/// `tls-auth-clients yes`).
///
/// ```no_run
/// # async fn run() -> Result<(), teloxide_retention::Error> {
/// use teloxide_retention::{RedisStore, RedisTls};
///
/// let tls = RedisTls::new()
///     .ca_pem(std::fs::read("/etc/redis/ca.crt").expect("CA file"))
///     .client_cert_pem(
///         std::fs::read("/etc/redis/client.crt").expect("certificate"),
///         std::fs::read("/etc/redis/client.key").expect("key"),
///     );
/// let store = RedisStore::connect_with_tls("rediss://:password@redis.internal:6380/", &tls).await?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[cfg(feature = "tls")]
#[derive(Clone, Default)]
pub struct RedisTls {
    ca: Option<Vec<u8>>,
    client: Option<(Vec<u8>, Vec<u8>)>,
}

#[cfg(feature = "tls")]
impl std::fmt::Debug for RedisTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTls")
            .field("ca", &self.ca.as_ref().map(|_| "PEM"))
            .field("client_cert", &self.client.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

#[cfg(feature = "tls")]
impl RedisTls {
    /// The defaults: trust the webpki roots, no client certificate.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Trusts only this CA (one or more PEM certificates) instead of the webpki roots.
    #[must_use]
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca = Some(pem.into());
        self
    }

    /// Presents this client certificate and key (PEM) to the server.
    #[must_use]
    pub fn client_cert_pem(mut self, cert: impl Into<Vec<u8>>, key: impl Into<Vec<u8>>) -> Self {
        self.client = Some((cert.into(), key.into()));
        self
    }

    /// Checks the PEM given: the CA and the client certificate hold at least one
    /// certificate, the key is a private key; the client would only fail at the first
    /// connection, with a less clear error.
    pub(crate) fn validate(&self) -> Result<()> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let certificates = |pem: &[u8], what: &str| -> Result<()> {
            let mut found = 0;
            for cert in CertificateDer::pem_slice_iter(pem) {
                cert.map_err(|e| Error::config(format!("{what} is not valid PEM: {e}")))?;
                found += 1;
            }
            if found == 0 {
                return Err(Error::config(format!(
                    "{what} holds no PEM certificate (a -----BEGIN CERTIFICATE----- block)"
                )));
            }
            Ok(())
        };
        if let Some(ca) = &self.ca {
            certificates(ca, "RedisTls::ca_pem")?;
        }
        if let Some((cert, key)) = &self.client {
            certificates(cert, "the certificate of RedisTls::client_cert_pem")?;
            PrivateKeyDer::from_pem_slice(key).map_err(|e| {
                Error::config(format!(
                    "the key of RedisTls::client_cert_pem is not a PEM private key: {e}"
                ))
            })?;
        }
        Ok(())
    }

    pub(crate) fn certificates(&self) -> redis::TlsCertificates {
        redis::TlsCertificates {
            client_tls: self.client.as_ref().map(|(cert, key)| redis::ClientTlsConfig {
                client_cert: cert.clone(),
                client_key: key.clone(),
            }),
            root_cert: self.ca.clone(),
        }
    }
}

/// Without the `tls` feature there are no TLS settings to give.
#[cfg(not(feature = "tls"))]
#[derive(Debug, Clone, Copy)]
pub(crate) enum RedisTls {}

pub(crate) use crate::conn::ensure_crypto_provider;

/// `url` without its credentials (`redis://<credentials>@host/`), for error messages.
pub(crate) fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority = rest.split(['/', '?']).next().unwrap_or(rest);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://<credentials>@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// A configuration error naming the URL (without its credentials) when the client refused
/// it; any other error as it is.
pub(crate) fn invalid_url(url: &str, e: RedisError) -> Error {
    if e.kind() != redis::ErrorKind::InvalidClientConfig {
        return Error::Redis(e);
    }
    Error::config(format!(
        "Redis URL {:?} is invalid: {e}; expected redis://[user:password@]host[:port][/db], \
         rediss://... (TLS) or redis+unix:///path/to/socket",
        redacted(url)
    ))
}

/// A configuration error for cluster nodes the client refused.
pub(crate) fn invalid_nodes(e: RedisError) -> Error {
    if e.kind() != redis::ErrorKind::InvalidClientConfig {
        return Error::Redis(e);
    }
    Error::config(format!(
        "Redis Cluster nodes are invalid: {e}; give at least one node URL such as \
         redis://10.0.0.1:7000"
    ))
}

/// A clear error for `rediss://` in a build without the `tls` feature, instead of the
/// client's "feature is not enabled".
pub(crate) fn check_scheme(url: &str) -> Result<()> {
    check_scheme_for(url, cfg!(feature = "tls"))
}

/// [`check_scheme`] for a build with or without TLS (both are tested in every build).
fn check_scheme_for(url: &str, tls: bool) -> Result<()> {
    if !tls && url.trim_start().to_ascii_lowercase().starts_with("rediss") {
        return Err(Error::config(
            "a rediss:// (TLS) URL needs teloxide-retention's `tls` feature, which is on by \
             default; enable it (or keep default features) to connect over TLS",
        ));
    }
    Ok(())
}

/// Where a Sentinel-managed Redis is: the master's name and the sentinels' addresses, with
/// the credentials and TLS settings for the master and for the sentinels.
///
/// The store asks the sentinels for the current master, and asks again whenever a call
/// fails in a way a failover causes (the connection drops or times out, or the old master,
/// now a replica, answers `READONLY`). Interactions that could not be written meanwhile are
/// buffered and written to the new master, as during any outage.
///
/// ```no_run
/// # async fn run() -> Result<(), teloxide_retention::Error> {
/// use teloxide_retention::{RedisSentinel, RedisStore};
///
/// let sentinel = RedisSentinel::new(
///     "mymaster",
///     ["redis://10.0.0.1:26379", "redis://10.0.0.2:26379", "redis://10.0.0.3:26379"],
/// )
/// .master_password("s3cret");
/// let store = RedisStore::open_sentinel(&sentinel)?;
/// # let _ = store;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct RedisSentinel {
    master: String,
    sentinels: Vec<String>,
    username: Option<String>,
    password: Option<String>,
    db: i64,
    #[cfg(feature = "tls")]
    master_tls: Option<RedisTls>,
    #[cfg(feature = "tls")]
    sentinel_tls: Option<RedisTls>,
}

impl std::fmt::Debug for RedisSentinel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSentinel")
            .field("master", &self.master)
            .field("sentinels", &self.sentinels.len())
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("db", &self.db)
            .finish_non_exhaustive()
    }
}

impl RedisSentinel {
    /// The master named `master` (the name in the sentinels' `sentinel monitor` line), found
    /// through these sentinels. Each sentinel is a URL such as `redis://10.0.0.1:26379`,
    /// `redis://:sentinel-password@host:26379` (a sentinel `requirepass`), or `rediss://...`
    /// for sentinels that speak TLS.
    #[must_use]
    pub fn new(
        master: impl Into<String>,
        sentinels: impl IntoIterator<Item: Into<String>>,
    ) -> Self {
        Self {
            master: master.into(),
            sentinels: sentinels.into_iter().map(Into::into).collect(),
            username: None,
            password: None,
            db: 0,
            #[cfg(feature = "tls")]
            master_tls: None,
            #[cfg(feature = "tls")]
            sentinel_tls: None,
        }
    }

    /// The ACL user to log in to the master (and its replicas) with.
    #[must_use]
    pub fn master_username(mut self, username: impl Into<String>) -> Self {
        self.username = Some(username.into());
        self
    }

    /// The password of the master (its `requirepass`, or the ACL user's password).
    #[must_use]
    pub fn master_password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(password.into());
        self
    }

    /// The database number on the master (default 0).
    #[must_use]
    pub fn db(mut self, db: i64) -> Self {
        self.db = db;
        self
    }

    /// Talks TLS to the master, with these settings (`RedisTls::new()` for the webpki roots).
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn master_tls(mut self, tls: RedisTls) -> Self {
        self.master_tls = Some(tls);
        self
    }

    /// The CA or client certificate for sentinels given as `rediss://` URLs.
    #[cfg(feature = "tls")]
    #[must_use]
    pub fn sentinel_tls(mut self, tls: RedisTls) -> Self {
        self.sentinel_tls = Some(tls);
        self
    }

    fn client(&self) -> Result<SentinelClient> {
        if self.sentinels.is_empty() {
            return Err(Error::config("RedisSentinel needs at least one sentinel address"));
        }
        if self.master.is_empty() {
            return Err(Error::config("RedisSentinel needs the master's name"));
        }
        let mut addrs = Vec::with_capacity(self.sentinels.len());
        let mut sentinel_auth: Option<(Option<String>, String)> = None;
        for url in &self.sentinels {
            check_scheme(url)?;
            let info = url.as_str().into_connection_info().map_err(|e| {
                Error::config(format!(
                    "sentinel address {:?} is not a Redis URL: {e}",
                    redacted(url)
                ))
            })?;
            let settings = info.redis_settings();
            if let Some(password) = settings.password() {
                sentinel_auth = Some((settings.username().map(str::to_owned), password.to_owned()));
            }
            addrs.push(info.addr().clone());
        }
        let mut builder =
            SentinelClientBuilder::new(addrs, &self.master, SentinelServerType::Master)?
                .set_client_to_redis_db(self.db);
        if let Some(username) = &self.username {
            builder = builder.set_client_to_redis_username(username);
        }
        if let Some(password) = &self.password {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some((username, password)) = sentinel_auth {
            if let Some(username) = username {
                builder = builder.set_client_to_sentinel_username(username);
            }
            builder = builder.set_client_to_sentinel_password(password);
        }
        #[cfg(feature = "tls")]
        {
            if let Some(tls) = &self.master_tls {
                tls.validate()?;
                builder = builder
                    .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                    .set_client_to_redis_certificates(tls.certificates());
            }
            if let Some(tls) = &self.sentinel_tls {
                tls.validate()?;
                builder = builder.set_client_to_sentinel_certificates(tls.certificates());
            }
        }
        Ok(builder.build()?)
    }
}

/// A connection to the master a set of sentinels names, found again after a failover.
pub(crate) struct SentinelConn {
    client: tokio::sync::Mutex<SentinelClient>,
    /// The connection in use and its generation; `None` until the first call and after a
    /// call failed as a failover makes calls fail.
    current: Mutex<Option<(u64, MultiplexedConnection)>>,
    /// The generation of the next connection.
    generations: AtomicU64,
    config: AsyncConnectionConfig,
    db: i64,
}

impl SentinelConn {
    pub(crate) fn new(sentinel: &RedisSentinel) -> Result<Self> {
        ensure_crypto_provider();
        Ok(Self {
            client: tokio::sync::Mutex::new(sentinel.client()?),
            current: Mutex::new(None),
            generations: AtomicU64::new(0),
            config: AsyncConnectionConfig::new()
                .set_connection_timeout(Some(Duration::from_secs(2)))
                .set_response_timeout(Some(Duration::from_secs(5))),
            db: sentinel.db,
        })
    }

    fn current(&self) -> Option<(u64, MultiplexedConnection)> {
        self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }

    /// The connection to the current master, asking the sentinels if there is none.
    async fn connection(&self) -> redis::RedisResult<(u64, MultiplexedConnection)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut client = self.client.lock().await;
        // Another call may have connected while this one waited.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let master = client.async_get_client().await?;
        let conn = master.get_multiplexed_async_connection_with_config(&self.config).await?;
        let generation = self.generations.fetch_add(1, Ordering::Relaxed);
        *self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
            Some((generation, conn.clone()));
        tracing::info!(master = ?master.get_connection_info().addr(), "connected to the master Sentinel names");
        Ok((generation, conn))
    }

    /// Forgets the connection of `generation` if `err` is how a failover looks, so that the
    /// next call asks the sentinels again.
    fn failed(&self, generation: u64, err: &RedisError) {
        let failover = err.is_io_error()
            || err.is_connection_dropped()
            || err.is_connection_refusal()
            || err.is_timeout()
            || matches!(
                err.kind(),
                redis::ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
            );
        if !failover {
            return;
        }
        let mut slot = self.current.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if slot.as_ref().is_some_and(|(g, _)| *g == generation) {
            tracing::warn!(error = %err, "the Redis master failed; asking the sentinels again");
            *slot = None;
        }
    }

    pub(crate) fn db(&self) -> i64 {
        self.db
    }
}

/// A handle on a [`SentinelConn`] that sends commands as any connection does.
#[derive(Clone)]
pub(crate) struct SentinelHandle(pub(crate) Arc<SentinelConn>);

impl SentinelHandle {
    /// Runs `send` on the current master's connection; a failure that looks like a
    /// failover makes the next call ask the sentinels again.
    async fn on_master<T>(
        &self,
        send: impl AsyncFnOnce(&mut MultiplexedConnection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let (generation, mut conn) = self.0.connection().await?;
        let reply = send(&mut conn).await;
        if let Err(e) = &reply {
            self.0.failed(generation, e);
        }
        reply
    }
}

impl ConnectionLike for SentinelHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.on_master(async |conn| conn.req_packed_command(cmd).await))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(
            self.on_master(async move |conn| conn.req_packed_commands(cmd, offset, count).await),
        )
    }

    fn get_db(&self) -> i64 {
        self.0.db()
    }
}

/// A Redis Cluster connection that is made afresh when calls keep stalling.
///
/// The cluster client reads the slot map again when a node refuses connections or answers
/// `MOVED`, but not when a node hangs (a frozen process, a half-open connection, a network
/// partition): calls routed to it then wait out every timeout, however long the cluster
/// has served its slots from a promoted replica. After [`STALLS_BEFORE_REBUILD`] calls
/// stall within [`STALL_WINDOW`] (they time out, are given up by the store's timeout, or
/// fail on the connection), a fresh connection is made in the background from the initial
/// nodes; it reads the current slot map. Calls already under way finish on the old one.
pub(crate) struct ClusterConn {
    /// `None` for a connection the bot made itself, which is never made again.
    client: Option<redis::cluster::ClusterClient>,
    state: Mutex<ClusterState>,
}

/// Stalled calls within [`STALL_WINDOW`] that make [`ClusterConn`] connect afresh.
const STALLS_BEFORE_REBUILD: u32 = 3;
/// How close together stalls must be to count together.
const STALL_WINDOW: Duration = Duration::from_secs(30);
/// The shortest time between two fresh connections.
const REBUILD_EVERY: Duration = Duration::from_secs(5);
/// How long a fresh connection may take before the attempt is given up.
const REBUILD_TIMEOUT: Duration = Duration::from_secs(10);

struct ClusterState {
    generation: u64,
    conn: redis::cluster_async::ClusterConnection,
    /// Stalls counted since `first_stall`.
    stalls: u32,
    first_stall: Option<std::time::Instant>,
    rebuilding: bool,
    last_rebuild: Option<std::time::Instant>,
}

impl ClusterConn {
    pub(crate) fn new(
        conn: redis::cluster_async::ClusterConnection,
        client: Option<redis::cluster::ClusterClient>,
    ) -> Self {
        Self {
            client,
            state: Mutex::new(ClusterState {
                generation: 0,
                conn,
                stalls: 0,
                first_stall: None,
                rebuilding: false,
                last_rebuild: None,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, ClusterState> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn current(&self) -> (u64, redis::cluster_async::ClusterConnection) {
        let state = self.state();
        (state.generation, state.conn.clone())
    }

    /// Counts a stalled call on the connection of `generation`; starts a fresh connection
    /// when enough stalled close together.
    fn stalled(self: &Arc<Self>, generation: u64) {
        let Some(client) = &self.client else { return };
        let now = std::time::Instant::now();
        {
            let mut state = self.state();
            if state.generation != generation || state.rebuilding {
                return;
            }
            if state.first_stall.is_none_or(|first| now.duration_since(first) > STALL_WINDOW) {
                state.first_stall = Some(now);
                state.stalls = 0;
            }
            state.stalls += 1;
            if state.stalls < STALLS_BEFORE_REBUILD
                || state.last_rebuild.is_some_and(|last| now.duration_since(last) < REBUILD_EVERY)
            {
                return;
            }
            let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
            state.rebuilding = true;
            let (this, client) = (Arc::clone(self), client.clone());
            runtime.spawn(async move { this.rebuild(client).await });
        }
    }

    async fn rebuild(&self, client: redis::cluster::ClusterClient) {
        tracing::warn!(
            "calls to the Redis Cluster keep stalling; connecting afresh to read its slot map"
        );
        let fresh = tokio::time::timeout(REBUILD_TIMEOUT, client.get_async_connection()).await;
        let mut state = self.state();
        state.rebuilding = false;
        state.last_rebuild = Some(std::time::Instant::now());
        match fresh {
            Ok(Ok(conn)) => {
                state.conn = conn;
                state.generation += 1;
                state.stalls = 0;
                state.first_stall = None;
                tracing::info!("connected to the Redis Cluster afresh");
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "could not connect to the Redis Cluster afresh");
            }
            Err(_) => tracing::warn!(
                "could not connect to the Redis Cluster afresh within {REBUILD_TIMEOUT:?}"
            ),
        }
    }
}

/// Whether `err` is how a hung or lost node makes a call fail.
fn is_stall(err: &RedisError) -> bool {
    err.is_io_error()
        || err.is_connection_dropped()
        || err.is_connection_refusal()
        || err.is_timeout()
        || matches!(err.kind(), redis::ErrorKind::Server(ServerErrorKind::ClusterDown))
}

/// Counts a call as stalled unless it is settled before it is dropped (the store's timeout
/// drops a call that hangs).
struct Watch<'a> {
    conn: &'a Arc<ClusterConn>,
    generation: u64,
    settled: bool,
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if !self.settled {
            self.conn.stalled(self.generation);
        }
    }
}

/// A handle on a [`ClusterConn`] that sends commands as any connection does.
#[derive(Clone)]
pub(crate) struct ClusterHandle(pub(crate) Arc<ClusterConn>);

impl ClusterHandle {
    async fn on_cluster<T>(
        &self,
        send: impl AsyncFnOnce(&mut redis::cluster_async::ClusterConnection) -> redis::RedisResult<T>,
    ) -> redis::RedisResult<T> {
        let (generation, mut conn) = self.0.current();
        let mut watch = Watch { conn: &self.0, generation, settled: false };
        let reply = send(&mut conn).await;
        watch.settled = !matches!(&reply, Err(e) if is_stall(e));
        reply
    }
}

impl ConnectionLike for ClusterHandle {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        Box::pin(self.on_cluster(async |conn| conn.req_packed_command(cmd).await))
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        Box::pin(
            self.on_cluster(async move |conn| conn.req_packed_commands(cmd, offset, count).await),
        )
    }

    fn get_db(&self) -> i64 {
        self.0.current().1.get_db()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tls_url_without_the_tls_feature_is_a_config_error_naming_the_feature() {
        let err = check_scheme_for("rediss://redis.example:6380/", false).unwrap_err();
        assert!(err.is_config(), "{err:?}");
        assert!(err.to_string().contains("`tls` feature"), "{err}");
        assert!(check_scheme_for(" REDISS://host/", false).is_err(), "any case and spacing");
        assert!(check_scheme_for("rediss://host/", true).is_ok());
        assert!(check_scheme_for("redis://host/", false).is_ok());
    }

    #[test]
    fn credentials_never_appear_in_url_errors() {
        assert_eq!(redacted("redis://:s3cret@host:6379/0"), "redis://<credentials>@host:6379/0");
        assert_eq!(redacted("rediss://bot:pw@h/?x=@"), "rediss://<credentials>@h/?x=@");
        assert_eq!(redacted("redis://host:6379"), "redis://host:6379");
        assert_eq!(redacted("not a url"), "not a url");
    }
}
