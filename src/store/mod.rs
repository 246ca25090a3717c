//! Where the crate keeps what it knows: [`RedisStore`] in production, `SqliteStore` (the
//! `sqlite` feature) for a bot that runs as one process, [`MemoryStore`] for development,
//! the offline demo and tests.
//!
//! A store holds, per namespace, only this (see the README's key layout):
//!
//! - **seen**: each tracked user and the time of their last interaction;
//! - **queue**: users whose erasure is scheduled (gone users after their grace period,
//!   opt-outs and retries of failed erasures), with the reason;
//! - **lease** and **batch**: users being erased right now, in batches with a lease
//!   deadline;
//! - a short-lived **feed** of erasures, so that replicas sharing one Redis drop their caches;
//! - short-lived confirmation nonces and rate-limit counters of the privacy commands.
//!
//! Every store behaves identically; one behavioural test suite runs against each.
//!
//! ```
//! use std::time::Duration;
//! use teloxide_retention::{MemoryStore, Retention};
//!
//! // The in-memory store needs no server; clones share their data.
//! let retention = Retention::builder(MemoryStore::new())
//!     .inactive_after(Duration::from_secs(30 * 24 * 3600))
//!     .build()?;
//! # let _ = retention;
//! # Ok::<(), teloxide_retention::Error>(())
//! ```

mod door;
#[cfg(test)]
pub(crate) mod intercept;
pub(crate) mod memory;
mod protocol;
pub(crate) mod redis;
#[cfg(any(feature = "sqlite", feature = "postgres"))]
mod sql;

use std::sync::Arc;

use crate::error::{Error, Result};

pub(crate) use self::door::{Budget, Door, Part};
pub use self::memory::MemoryStore;
pub use self::protocol::Marked;
pub(crate) use self::protocol::*;
pub use self::redis::connect::RedisSentinel;
#[cfg(feature = "tls")]
pub use self::redis::connect::RedisTls;
pub use self::redis::{Diagnosis, NamespaceMeta, RedisStore, Resharded};
#[cfg(any(feature = "sqlite", feature = "postgres"))]
pub use self::sql::TableVersion;
#[cfg(feature = "postgres")]
pub use self::sql::{PostgresDiagnosis, PostgresStore};
#[cfg(feature = "sqlite")]
pub use self::sql::{SqliteDiagnosis, SqliteStore};

/// Where a [`Retention`](crate::Retention) keeps what it knows: [`RedisStore`],
/// `SqliteStore` (the `sqlite` feature) or [`MemoryStore`].
///
/// The trait is sealed: the crate's claim -> erase -> finish protocol is implemented by
/// these stores only, and one behavioural test suite runs against each.
pub trait Store: Send + Sync + 'static {
    /// Returns the backend for `namespace` (validated by the builder). Not part of the
    /// API: [`sealed::Token`] cannot be named outside this crate.
    #[doc(hidden)]
    fn bind(&self, namespace: &str, token: sealed::Token) -> sealed::Bound;

    /// Refuses, with [`Error::Config`], a `namespace` (already validated by the builder)
    /// that this store cannot keep apart from others or would have to cut: names its
    /// database reserves, or whose tables' names it would not hold whole. The builder calls
    /// it before [`bind`](Self::bind). Not part of the API, as `bind`.
    #[doc(hidden)]
    fn check_namespace(&self, namespace: &str, token: sealed::Token) -> Result<()> {
        let _ = (namespace, token);
        Ok(())
    }
}

/// How long erasure announcements stay in the feed. A process that could not read the
/// feed for longer than this forgets its whole cache instead.
pub(crate) const FEED_KEEP_MS: i64 = 10 * 60 * 1000;

/// Feed entries per read.
pub(crate) const FEED_READ: usize = 1000;

/// The oldest Redis the scripts run on (function flags in `#!lua` shebangs).
pub(crate) const MIN_REDIS: (u32, u32) = (7, 0);

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

pub(crate) mod sealed {
    use super::{Arc, Backend};

    /// A store bound to one namespace.
    pub struct Bound(pub(crate) Arc<dyn Backend>);

    /// Proof that a caller is this crate.
    #[derive(Debug, Clone, Copy)]
    pub struct Token;
}

/// A namespace names every key's hash tag: short, and without braces or spaces.
pub(crate) fn validate_namespace(ns: &str) -> Result<()> {
    if ns.is_empty() {
        return Err(Error::config("namespace must not be empty"));
    }
    if ns.len() > 64 {
        return Err(Error::config("namespace must be at most 64 bytes"));
    }
    if let Some(bad) = ns.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.:".contains(*c))) {
        return Err(Error::config(format!(
            "namespace {ns:?} contains {bad:?}; use letters, digits, '-', '_', '.' and ':'"
        )));
    }
    Ok(())
}

/// An unpredictable 64-bit id (SipHash with a per-process random key over a counter), for
/// batch ids and confirmation nonces.
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use crate::erase::ErasureReason;

    #[test]
    fn the_scripts_know_every_reason_and_the_same_largest_id() {
        let ids = include_str!("redis/lua/ids.lua");
        for reason in ErasureReason::ALL {
            assert!(ids.contains(&format!(" {} = true", reason.code())), "{reason:?}");
        }
        assert!(ids.contains(&format!("local MAX_USER_ID = {}\n", crate::humans::MAX_USER_ID)));
    }

    #[test]
    fn the_claim_script_takes_over_as_many_expired_batches_as_the_other_stores() {
        let claim = include_str!("redis/lua/claim.lua");
        let n = super::EXPIRED_BATCHES_PER_CLAIM;
        assert!(claim.contains(&format!("'BYSCORE', 'LIMIT', 0, {n}, 'WITHSCORES'")));
        assert!(claim.contains(&format!("limit - #members + {n} + n_handled")));
    }

    #[test]
    fn the_claim_script_examines_as_many_due_entries_as_the_probes_preview() {
        let claim = include_str!("redis/lua/claim.lua");
        let n = super::DUE_SCAN_SLACK;
        assert!(claim.contains(&format!("'BYSCORE', 'LIMIT', 0, limit - #members + {n})")));
    }
}
