//! Where the crate keeps what it knows: [`RedisStore`] in production, [`MemoryStore`] for
//! development, the offline demo and tests.
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
//! Both stores behave identically; one behavioural test suite runs against both.
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

pub(crate) mod memory;
pub(crate) mod redis;

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::receipts::{RawReceipt, ReceiptBatch};

pub use self::memory::MemoryStore;
pub use self::redis::connect::RedisSentinel;
#[cfg(feature = "tls")]
pub use self::redis::connect::RedisTls;
pub use self::redis::{Diagnosis, NamespaceMeta, RedisStore, Resharded};

/// Where a [`Retention`](crate::Retention) keeps what it knows: [`RedisStore`] or
/// [`MemoryStore`].
///
/// The trait is sealed: the crate's claim -> erase -> finish protocol is implemented by
/// these two stores only, and one behavioural test suite runs against both.
pub trait Store: Send + Sync + 'static {
    /// Returns the backend for `namespace` (validated by the builder). Not part of the
    /// API: [`sealed::Token`] cannot be named outside this crate.
    #[doc(hidden)]
    fn bind(&self, namespace: &str, token: sealed::Token) -> sealed::Bound;
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

/// A user claimed for erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) user: u64,
    pub(crate) reason: ErasureReason,
    /// When the user was marked for erasure (0 for a claim for inactivity).
    pub(crate) marked_at: i64,
    /// Earlier failed attempts.
    pub(crate) attempts: u32,
}

/// Users claimed together under one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Random; names the batch in the store.
    pub(crate) id: u64,
    /// The lease deadline; it identifies this claim when the batch is finished.
    pub(crate) deadline: i64,
    pub(crate) users: Vec<Claimed>,
    /// Why users inactive past the cutoff were not claimed (a writer may hold unwritten
    /// interactions), if they were not.
    pub(crate) held: Option<String>,
    /// Values the claim could not read, left in place (each names its key and user).
    pub(crate) unreadable: Vec<String>,
    /// Users whose due gone mark the claim dropped because they came back.
    pub(crate) returned: Vec<u64>,
}

/// How a claim finds "now", the cutoff and the lease deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimTimes {
    /// "Now" in ms; `None`: the store's own clock (Redis `TIME`).
    pub(crate) now: Option<i64>,
    /// Users last seen at or before `now - inactive_ms` are inactive.
    pub(crate) inactive_ms: i64,
    /// The lease deadline is `now + lease_ms`.
    pub(crate) lease_ms: i64,
}

/// How writers' heartbeats hold back inactivity claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterWindow {
    /// A writer without a heartbeat for longer than this may be cut off and buffering.
    pub(crate) silent_ms: i64,
    /// A writer without a heartbeat for longer than this counts as dead.
    pub(crate) dead_ms: i64,
}

/// What a store server says about its own safety; see [`Backend::health`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Health {
    /// The server's version as it reports it (`7.0.15`), when known.
    pub(crate) version: Option<String>,
    /// `maxmemory-policy`, when it could be read.
    pub(crate) eviction_policy: Option<String>,
    /// The `seen` set was lost after its marker was written (evicted or deleted).
    pub(crate) seen_vanished: bool,
}

/// The result of finishing one erased user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// The user's entries are gone.
    Erased,
    /// Erased, but the user was touched while erasers ran: a follow-up opt-out erasure is
    /// queued.
    ErasedWithFollowUp,
}

/// When a failing erasure counts as stuck, and how often a stuck one is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StuckWindow {
    /// Failing for this long (ms) makes an erasure stuck.
    pub(crate) after_ms: i64,
    /// A stuck erasure is reported at most once per this (ms).
    pub(crate) every_ms: i64,
}

/// How a batch is finished beyond its users: when failing erasures are stuck, and the
/// receipts to write (`None`: receipts are off).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FinishWith<'a> {
    pub(crate) stuck: StuckWindow,
    pub(crate) receipts: Option<&'a ReceiptBatch>,
}

/// What finishing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finish {
    /// One per confirmed user.
    pub(crate) confirmed: Vec<Confirmed>,
    /// One per failed user: since when (ms) their erasure has been failing, and whether it
    /// is stuck and to be reported now.
    pub(crate) failing: Vec<(i64, bool)>,
}

/// Scheduled and failing erasures of a namespace.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Pending {
    /// Scheduled erasures (gone marks, opt-outs, retries), due or not.
    pub(crate) scheduled: u64,
    /// Erasures whose last attempt failed.
    pub(crate) failing: u64,
    /// When the longest-failing of them first failed (ms).
    pub(crate) oldest_failing_since: Option<i64>,
}

/// Counts over a namespace for operators (see [`crate::Survey`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawSurvey {
    /// Users whose last interaction is in each of the asked ranges.
    pub(crate) seen: Vec<u64>,
    /// Scheduled (or running) erasures by reason ([`ErasureReason::index`]).
    pub(crate) scheduled: [u64; ErasureReason::ALL.len()],
    /// Scheduled erasures due at or before the survey's time.
    pub(crate) scheduled_due: u64,
    /// Since when (ms) each failing erasure fails.
    pub(crate) failing_since: Vec<i64>,
    /// The most failed attempts of any scheduled erasure.
    pub(crate) max_attempts: u32,
    /// Heartbeats: writer id, time (ms), unwritten interactions.
    pub(crate) writers: Vec<(String, i64, u64)>,
}

/// The result of scheduling an erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Marked {
    /// Newly scheduled (or upgraded to an opt-out).
    Scheduled,
    /// An erasure was already scheduled and is kept as it was.
    AlreadyScheduled,
    /// The user is being erased right now.
    InProgress,
}

/// What the store holds about one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RawStatus {
    pub(crate) last_seen: Option<i64>,
    /// Scheduled erasure: due time (`None` = never, mark only).
    pub(crate) queued_due: Option<Option<i64>>,
    pub(crate) leased_until: Option<i64>,
    /// Reason, marked-at and attempts of a scheduled or running erasure.
    pub(crate) job: Option<(ErasureReason, i64, u32)>,
}

/// A read-only view of what the next pass would claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawPreview {
    pub(crate) inactive_total: u64,
    pub(crate) due_total: u64,
    pub(crate) expired_leases: u64,
    /// user, reason, marked_at (0 if none), last seen.
    pub(crate) entries: Vec<(u64, ErasureReason, i64, Option<i64>)>,
}

/// An erasure (or gone mark) announced to every process sharing the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalidation {
    pub(crate) user: u64,
    /// Interactions at or after this time must be written again.
    pub(crate) since: i64,
    /// The end of the erasure window (equal to `since` for a gone mark).
    pub(crate) until: i64,
    /// The erasure was an opt-out: interactions inside the window need a follow-up.
    pub(crate) opt_out: bool,
}

/// A user as key names see them: a keyed hash of the id (`tag`, see
/// `Engine::hashed`), never the id, so that no key name keeps a raw user id. `user` only
/// picks the user's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hashed {
    pub(crate) user: u64,
    pub(crate) tag: String,
}

/// A user to adopt (see `Backend::adopt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Adoptee {
    pub(crate) user: u64,
    pub(crate) ms: i64,
    /// The bot knew no time: `ms` applies only if the user is not tracked yet.
    pub(crate) if_new: bool,
}

/// What adopting users did (see `Backend::adopt`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AdoptCounts {
    /// Not tracked before.
    pub(crate) new: u64,
    /// Tracked with an earlier time, moved forward.
    pub(crate) moved: u64,
    /// Tracked with this time or a later one: unchanged.
    pub(crate) kept: u64,
    /// An erasure of theirs is scheduled or running: left as it is.
    pub(crate) erasing: u64,
}

impl std::ops::AddAssign for AdoptCounts {
    fn add_assign(&mut self, other: Self) {
        self.new += other.new;
        self.moved += other.moved;
        self.kept += other.kept;
        self.erasing += other.erasing;
    }
}

/// Decodes a stored job.
pub(crate) fn decode_job(raw: &str) -> Result<(ErasureReason, i64, u32)> {
    let bad = || crate::Error::Corrupt(format!("erasure job {raw:?}"));
    let mut parts = raw.split(',');
    let reason = parts.next().and_then(ErasureReason::from_code).ok_or_else(bad)?;
    let marked_at = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let attempts = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok((reason, marked_at, attempts))
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

/// Runs a store call under the store timeout `limit`.
pub(crate) async fn bounded<T>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    let started = std::time::Instant::now();
    let result =
        tokio::time::timeout(limit, call).await.unwrap_or(Err(crate::Error::Timeout(limit)));
    metrics::histogram!("teloxide_retention_store_call_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    result
}

/// An unpredictable 64-bit id (SipHash with a per-process random key over a counter), for
/// batch ids and confirmation nonces.
pub(crate) fn random_id() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one(COUNTER.fetch_add(1, Ordering::Relaxed))
}

/// Shared handle type.
pub(crate) type DynBackend = Arc<dyn Backend>;

/// The protocol every store implements. Times are unix milliseconds of the injected clock.
///
/// Invariant kept by every operation: a user is in at most one of the queue and a batch.
pub(crate) trait Backend: Send + Sync {
    /// The parts a pass claims from, each on its own: the shards of a sharded namespace,
    /// otherwise the backend itself. A batch claimed from a part is finished through the
    /// whole backend, which sends it back to that part.
    fn parts(&self) -> Vec<&dyn Backend>;

    /// Records interactions: `seen[user] = max(seen[user], ms)`.
    fn touch<'a>(&'a self, touches: &'a [(u64, i64)]) -> BoxFuture<'a, Result<()>>;

    /// Claims up to `limit` users whose erasure is due into batch `id`, leased until
    /// `now + lease`: users of expired batches, due queue entries, then users inactive past
    /// the cutoff (unless a writer may hold unwritten interactions). Users who came back
    /// are dropped; values the claim cannot read are left in place and reported.
    fn claim(
        &self,
        times: ClaimTimes,
        writers: WriterWindow,
        limit: usize,
        id: u64,
    ) -> BoxFuture<'_, Result<Batch>>;

    /// Claims one user for an immediate erasure as batch `id`; `None` if a live batch of
    /// another erasure holds them (that erasure is upgraded to `reason`).
    /// (`times.inactive_ms` is unused.)
    fn claim_user(
        &self,
        user: u64,
        reason: ErasureReason,
        times: ClaimTimes,
        id: u64,
    ) -> BoxFuture<'_, Result<Option<Batch>>>;

    /// The store's own clock in unix ms (Redis `TIME`); `None` if it has none.
    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// Records a heartbeat of writer `id` with `backlog` unwritten interactions, stamped
    /// with the store's clock.
    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>>;

    /// Removes the heartbeat of writer `id` (a clean shutdown).
    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>>;

    /// Why inactivity claims would be held back by writers right now, if they would.
    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>>;

    /// The server's version, eviction policy and whether `seen` vanished (writing its
    /// marker when the namespace is new).
    fn health(&self) -> BoxFuture<'_, Result<Health>>;

    /// Writes the marker of `seen` again: the operator accepted that tracking was lost.
    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>>;

    /// Ends a batch while its lease is ours: confirms `done` users and gives `failed` ones
    /// back to the queue, due at the paired time, noting since when each has been failing
    /// (and reporting those stuck by `stuck`, each once per period across every process).
    /// `None` if the lease was lost.
    fn finish<'a>(
        &'a self,
        batch: &'a Batch,
        done: &'a [Claimed],
        failed: &'a [(Claimed, i64)],
        now: i64,
        follow_up_at: i64,
        with: FinishWith<'a>,
    ) -> BoxFuture<'a, Result<Option<Finish>>>;

    /// The receipts of the user named `tag` (in every shard: a reshard moves receipts
    /// without knowing whose they are) that are younger than `keep_ms` at `now`, oldest
    /// first.
    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>>;

    /// Schedules an erasure of `user` for `reason`, due at `due` (`None`: never, mark only).
    fn schedule(
        &self,
        user: u64,
        reason: ErasureReason,
        marked_at: i64,
        due: Option<i64>,
    ) -> BoxFuture<'_, Result<Marked>>;

    /// Cancels a scheduled gone erasure (not an opt-out); `true` if one was cancelled.
    fn unschedule_gone(&self, user: u64) -> BoxFuture<'_, Result<bool>>;

    /// What the store holds about `user`.
    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>>;

    /// What a claim with `times` would take, listing up to `limit` users: the same "now"
    /// and cutoff as the claim (the store's clock where the claim reads it).
    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>>;

    /// The position after the newest invalidation.
    fn feed_head(&self) -> BoxFuture<'_, Result<String>>;

    /// Invalidations after `cursor`, and the new cursor.
    fn feed_read<'a>(
        &'a self,
        cursor: &'a str,
    ) -> BoxFuture<'a, Result<(Vec<Invalidation>, String)>>;

    /// Stores a confirmation nonce for `who`, replacing any earlier one.
    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;

    /// Removes and returns the confirmation nonce of `who`.
    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>>;

    /// Counts one use of `action` by `who` in the window `window` (an index); returns the
    /// count so far in that window. The counter expires after `ttl_ms`.
    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Takes the lease of the scheduled audit for `ttl_ms` (as `holder`); `false` if another
    /// replica holds it, which then runs this interval's audit.
    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>>;

    /// Keeps `summary` (counts only, JSON) as the last audit's.
    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>>;

    /// The last audit's summary, if any.
    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>>;

    /// Every receipt younger than `keep_ms` at `now`, with its keyed tag (every shard).
    /// Reads every receipt: for the audit, not hot paths.
    fn receipt_tags(
        &self,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'_, Result<Vec<(String, RawReceipt)>>>;

    /// Adopts users the bot held before it tracked them: `seen[user] = max(seen[user], ms)`
    /// (with `if_new`, only for a user not tracked yet) unless an erasure of the user is
    /// scheduled or running.
    fn adopt<'a>(&'a self, users: &'a [Adoptee]) -> BoxFuture<'a, Result<AdoptCounts>>;

    /// For each of `users`, whether the store knows them: tracked, or with an erasure
    /// scheduled or running. Read-only.
    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>>;

    /// The namespace's secret for naming users in keys when no receipt key is set (hex of
    /// 32 random bytes), created on first use; `candidate` is stored if there is none yet.
    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>>;

    /// Number of tracked users (for stats and tests).
    fn tracked(&self) -> BoxFuture<'_, Result<u64>>;

    /// Counts for operators at `now`: users last seen in each range `(after, up_to]` (ms),
    /// scheduled and failing erasures, heartbeats. Reads whole queues: not for hot paths.
    fn survey<'a>(&'a self, now: i64, ranges: &'a [(i64, i64)])
    -> BoxFuture<'a, Result<RawSurvey>>;

    /// Scheduled and failing erasures (for the metrics' gauges).
    fn pending(&self) -> BoxFuture<'_, Result<Pending>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scripts_know_every_reason_and_the_same_largest_id() {
        let ids = include_str!("redis/lua/ids.lua");
        for reason in ErasureReason::ALL {
            assert!(ids.contains(&format!(" {} = true", reason.code())), "{reason:?}");
        }
        assert!(ids.contains(&format!("local MAX_USER_ID = {}\n", crate::humans::MAX_USER_ID)));
    }

    #[test]
    fn jobs_decode() {
        for reason in ErasureReason::ALL {
            let raw = format!("{},1700000000123,7", reason.code());
            assert_eq!(decode_job(&raw).unwrap(), (reason, 1_700_000_000_123, 7));
        }
        assert!(decode_job("x,1,2").is_err());
        assert!(decode_job("o,1").is_err());
    }
}
