//! The crate's error type.
use std::time::Duration;

/// A boxed error, as returned by erasers and accepted from closures.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in this crate.
///
///
/// Every fallible public function returns [`Error`]. Configuration mistakes are caught by
/// [`RetentionBuilder::build`](crate::RetentionBuilder::build) with [`Error::Config`], and
/// store trouble surfaces as [`Error::Redis`] or [`Error::Timeout`]. Erasers' failures are
/// not errors of the call: they are retried, and reported in
/// [`OptOutOutcome::Retrying`](crate::OptOutOutcome::Retrying) and
/// [`PassReport::failed`](crate::PassReport::failed).
///
/// ```
/// use std::time::Duration;
/// use teloxide_retention::{Error, MemoryStore, Retention};
///
/// let err = Retention::builder(MemoryStore::new())
///     .inactive_after(Duration::ZERO)
///     .build()
///     .unwrap_err();
/// assert!(err.is_config());
/// assert!(err.to_string().contains("inactive_after"));
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The configuration given to the builder is invalid; the message names the setting.
    #[error("invalid retention configuration: {0}")]
    Config(String),
    /// Redis returned an error or could not be reached.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The SQL database (`SqliteStore`, `PostgresStore`) returned an error or could not be
    /// reached.
    #[cfg(any(feature = "sqlite", feature = "postgres"))]
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// The store did not answer within the configured store timeout.
    #[error("the store did not answer within {0:?}")]
    Timeout(Duration),
    /// The store holds a value this version of the crate cannot read.
    #[error("unexpected data in the store: {0}")]
    Corrupt(String),
    /// Erasing now could be wrong, so the pruner refuses: Redis may evict tracking data
    /// (an `allkeys-*` eviction policy), the set of tracked users vanished, or the server
    /// is older than Redis 7.0. The message says what and how to fix it.
    #[error("refusing to erase: {0}")]
    Unsafe(String),
    /// The id is not one the crate can store: 0, or above 2^53 - 1 (Telegram's user ids
    /// have at most 52 significant bits). Nothing was written.
    #[error("{0} is not a user id: user ids are 1 to 2^53 - 1")]
    InvalidUser(u64),
    /// An argument of a call is out of the range it can take (the message names it and
    /// why); nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The namespace records another shard count than the store was opened with (see
    /// `RedisStore::with_shards`); nothing is claimed, marked or scheduled until they
    /// match (interactions alone are written, into the namespace's own layout, each to its
    /// user's shard there). A configuration error: [`Error::is_config`] is `true`.
    #[error(
        "namespace {namespace:?} has {recorded} shards, but the store was opened with \
         {opened}: open it with RedisStore::with_shards({recorded}), or move its users with \
         RedisStore::reshard({namespace:?}, {opened}) while no bot runs"
    )]
    ShardCount {
        /// The namespace.
        namespace: String,
        /// The shard count recorded with the namespace.
        recorded: usize,
        /// The shard count the store was opened with.
        opened: usize,
    },
    /// The namespace is being moved to another shard count by `RedisStore::reshard`;
    /// nothing is written until the move is finished and the store is opened with the new
    /// count. A configuration error: [`Error::is_config`] is `true`.
    #[error(
        "namespace {namespace:?} is being resharded from {from} to {to} shards; finish with \
         RedisStore::reshard({namespace:?}, {to}), then open it with \
         RedisStore::with_shards({to})"
    )]
    Resharding {
        /// The namespace.
        namespace: String,
        /// The shard count being moved from.
        from: usize,
        /// The shard count being moved to.
        to: usize,
    },
}

impl Error {
    /// Returns `true` if this is a configuration error: from the builder, or a store opened
    /// with another shard count than its namespace's ([`Error::ShardCount`],
    /// [`Error::Resharding`]).
    #[must_use]
    pub fn is_config(&self) -> bool {
        matches!(self, Self::Config(_) | Self::ShardCount { .. } | Self::Resharding { .. })
    }

    /// Returns `true` if the store could not be reached or did not answer in time.
    ///
    /// Such errors are transient: the crate buffers and retries the work they interrupted.
    #[must_use]
    pub fn is_unavailable(&self) -> bool {
        match self {
            Self::Timeout(_) => true,
            Self::Redis(e) => {
                e.is_io_error()
                    || e.is_timeout()
                    || e.is_connection_dropped()
                    || e.is_connection_refusal()
            }
            #[cfg(any(feature = "sqlite", feature = "postgres"))]
            Self::Database(e) => match e {
                sqlx::Error::Io(_) | sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => true,
                // SQLITE_BUSY, SQLITE_LOCKED: another connection held the lock too long.
                sqlx::Error::Database(db) => {
                    matches!(db.code().as_deref(), Some("5" | "6" | "261" | "517"))
                }
                _ => false,
            },
            _ => false,
        }
    }

    pub(crate) fn config(msg: impl Into<String>) -> Self {
        Self::Config(msg.into())
    }
}

/// Shorthand for results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
