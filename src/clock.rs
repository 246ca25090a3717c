//! Injectable time.
use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current time, in unix milliseconds.
///
/// Scores in the store are unix milliseconds, which an `f64` holds exactly.
///
///
/// All code in this crate asks a [`Clock`] for "now"; nothing reads the system time directly.
/// Production uses [`SystemClock`] (the default); tests and the offline demo use
/// [`ManualClock`] and move time forward explicitly instead of sleeping.
///
/// **One clock for every process.** Hosts' clocks drift apart, and a pruner whose clock runs
/// fast would erase users early and take over leases that are still live. With a
/// [`RedisStore`](crate::RedisStore), the time that decides is Redis's own (`TIME`): claims
/// compute "now", the inactivity cutoff and lease deadlines inside their script, and every
/// time this process writes (interactions, gone marks) is its wall clock corrected by the
/// offset to Redis `TIME`, measured before the first write and every minute. An offset above
/// one second is logged as a warning and counted in
/// [`Stats::clock_skew_warnings`](crate::Stats::clock_skew_warnings). A `PostgresStore`
/// (feature `postgres`) does the same with the server's `clock_timestamp()`;
/// `SqliteStore` and [`MemoryStore`](crate::MemoryStore) serve one process, whose clock
/// decides. A clock that is not a [wall clock](Clock::is_wall_clock), such as
/// [`ManualClock`], is taken as it is: it is the time of every process that shares it.
///
/// ```
/// use std::time::Duration;
/// use teloxide_retention::{Clock, ManualClock};
///
/// let clock = ManualClock::at_unix_ms(1_700_000_000_000);
/// clock.advance(Duration::from_secs(90 * 24 * 3600));
/// assert_eq!(clock.now_ms(), 1_700_000_000_000 + 90 * 24 * 3600 * 1000);
/// ```
pub trait Clock: Send + Sync + 'static {
    /// The current time as milliseconds since the unix epoch.
    fn now_ms(&self) -> i64;

    /// Whether this clock reads the host's time, which may be off: then a store with a
    /// clock of its own (Redis `TIME`) corrects it, and claims use the store's clock.
    /// `true` by default; [`ManualClock`] returns `false`, as its time is the test's.
    fn is_wall_clock(&self) -> bool {
        true
    }
}

/// The wall clock of the machine. The default.
///
/// On Linux it reads the coarse real-time clock (`CLOCK_REALTIME_COARSE`), which the kernel
/// updates every tick (1 to 4 ms) and which costs a few nanoseconds instead of the few tens
/// that the precise clock costs. The layer reads the clock on every update; a retention
/// decision never needs more than second precision. Elsewhere it reads
/// [`SystemTime`](std::time::SystemTime).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    fn now_ms(&self) -> i64 {
        let now = rustix::time::clock_gettime(rustix::time::ClockId::RealtimeCoarse);
        now.tv_sec.saturating_mul(1000).saturating_add(now.tv_nsec / 1_000_000)
    }

    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to. Clones share the same time.
///
/// See [`Clock`] for an example.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<AtomicI64>,
}

impl ManualClock {
    /// Creates a clock showing the given unix time in milliseconds.
    #[must_use]
    pub fn at_unix_ms(ms: i64) -> Self {
        Self { now: Arc::new(AtomicI64::new(ms)) }
    }

    /// Creates a clock showing the current system time; it stays there until moved.
    #[must_use]
    pub fn starting_now() -> Self {
        Self::at_unix_ms(SystemClock.now_ms())
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.now.fetch_add(duration_ms(by), Ordering::SeqCst);
    }

    /// Sets the clock to the given unix time in milliseconds (it may move backwards).
    pub fn set_unix_ms(&self, ms: i64) {
        self.now.store(ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.now.load(Ordering::SeqCst)
    }

    /// `false`: a manual clock is the one time of every process that uses it; stores take
    /// it as it is.
    fn is_wall_clock(&self) -> bool {
        false
    }
}

/// Skew above this is logged and counted.
pub(crate) const SKEW_WARNING_MS: i64 = 1000;

/// The injected clock corrected by its measured offset to the store's clock.
pub(crate) struct SyncedClock {
    local: Arc<dyn Clock>,
    /// The store's clock minus the local clock, in ms (0 until measured, and for clocks
    /// that are not wall clocks).
    offset: AtomicI64,
    /// Whether claims read the store's clock: a wall clock and a store that has one.
    store_time: std::sync::atomic::AtomicBool,
    /// When the offset was last measured (`None`: never), and last tried.
    synced_at: std::sync::Mutex<(Option<std::time::Instant>, Option<std::time::Instant>)>,
}

/// A failed measurement is tried again after this long.
const SYNC_RETRY: Duration = Duration::from_secs(5);

impl SyncedClock {
    pub(crate) fn new(local: Arc<dyn Clock>) -> Self {
        Self {
            local,
            offset: AtomicI64::new(0),
            store_time: std::sync::atomic::AtomicBool::new(false),
            synced_at: std::sync::Mutex::new((None, None)),
        }
    }

    /// Whether the offset should be measured (a wall clock).
    pub(crate) fn is_wall_clock(&self) -> bool {
        self.local.is_wall_clock()
    }

    /// The injected clock corrected by the offset.
    pub(crate) fn now_ms(&self) -> i64 {
        self.local.now_ms().saturating_add(self.offset.load(Ordering::Relaxed))
    }

    /// The injected clock, uncorrected.
    pub(crate) fn local_ms(&self) -> i64 {
        self.local.now_ms()
    }

    /// The last measured offset (store minus local), in ms.
    pub(crate) fn offset_ms(&self) -> i64 {
        self.offset.load(Ordering::Relaxed)
    }

    /// Records a measurement; returns the previous offset and whether it was the first.
    pub(crate) fn set_offset(&self, offset: i64, store_time: bool) -> (i64, bool) {
        let mut at = self.synced_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = at.0.is_none();
        at.0 = Some(std::time::Instant::now());
        self.store_time.store(store_time, Ordering::Relaxed);
        (self.offset.swap(offset, Ordering::Relaxed), first)
    }

    /// Whether the offset was measured at least once.
    pub(crate) fn is_synced(&self) -> bool {
        self.synced_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner).0.is_some()
    }

    /// Whether to measure now: the last measurement is older than `max_age` (or there was
    /// none), and no attempt failed in the last few seconds. Counts as an attempt.
    pub(crate) fn should_sync(&self, max_age: Duration) -> bool {
        let mut at = self.synced_at.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let stale = at.0.is_none_or(|t| t.elapsed() >= max_age);
        let tried = at.1.is_some_and(|t| t.elapsed() < SYNC_RETRY);
        if stale && !tried {
            at.1 = Some(std::time::Instant::now());
        }
        stale && !tried
    }

    /// "Now" for a claim: `None` when the store reads its own clock. A wall clock that was
    /// never measured against the store's is not trusted with a claim (a host 25 minutes
    /// fast would erase users 25 minutes early): until the first measurement, claims read
    /// the store's own clock too (Redis `TIME`, PostgreSQL's `clock_timestamp()`; a store
    /// without a clock answers the first measurement at once, and then this clock decides).
    pub(crate) fn claim_now(&self) -> Option<i64> {
        let unmeasured = self.is_wall_clock() && !self.is_synced();
        (!unmeasured && !self.store_time.load(Ordering::Relaxed)).then(|| self.now_ms())
    }
}

/// A duration in whole milliseconds, saturating at `i64::MAX`.
pub(crate) fn duration_ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// `d` after `ms`, saturating: `Duration::MAX` (a natural "never") stays in the future
/// instead of wrapping into the past.
pub(crate) fn later(ms: i64, d: Duration) -> i64 {
    ms.saturating_add(duration_ms(d))
}

/// Unix milliseconds as a UTC date-time (clamped to chrono's range).
pub(crate) fn to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A host clock 25 minutes fast.
    struct Fast;

    impl Clock for Fast {
        fn now_ms(&self) -> i64 {
            1_700_000_000_000 + 25 * 60_000
        }
    }

    #[test]
    fn an_unmeasured_wall_clock_never_decides_a_claim() {
        let clock = SyncedClock::new(Arc::new(Fast));
        assert_eq!(clock.claim_now(), None, "before the first measurement: the store's clock");
        // The store has a clock, measured: it decides.
        clock.set_offset(-25 * 60_000, true);
        assert_eq!(clock.claim_now(), None);
        // A store without a clock of its own (memory, SQLite): this process's decides.
        let clock = SyncedClock::new(Arc::new(Fast));
        clock.set_offset(0, false);
        assert_eq!(clock.claim_now(), Some(1_700_000_000_000 + 25 * 60_000));
    }

    #[test]
    fn a_manual_clock_decides_claims_unmeasured() {
        let clock = SyncedClock::new(Arc::new(ManualClock::at_unix_ms(5)));
        assert_eq!(clock.claim_now(), Some(5));
    }
}
