//! Injectable time.
//!
//! All code in this crate asks a [`Clock`] for "now"; nothing reads the system time directly.
//! Production uses [`SystemClock`] (the default); tests and the offline demo use
//! [`ManualClock`] and move time forward explicitly instead of sleeping.
//!
//! ```
//! use std::time::Duration;
//! use teloxide_retention::{Clock, ManualClock};
//!
//! let clock = ManualClock::at_unix_ms(1_700_000_000_000);
//! clock.advance(Duration::from_secs(90 * 24 * 3600));
//! assert_eq!(clock.now_ms(), 1_700_000_000_000 + 90 * 24 * 3600 * 1000);
//! ```

use std::sync::{
    Arc,
    atomic::{AtomicI64, Ordering},
};
use std::time::Duration;

use chrono::{DateTime, Utc};

/// A source of the current time, in unix milliseconds.
///
/// Scores in the store are unix milliseconds, which an `f64` holds exactly.
pub trait Clock: Send + Sync + 'static {
    /// The current time as milliseconds since the unix epoch.
    fn now_ms(&self) -> i64;
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
/// See the [module documentation](self) for an example.
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

/// `d` before `ms`, saturating (see [`later`]).
pub(crate) fn earlier(ms: i64, d: Duration) -> i64 {
    ms.saturating_sub(duration_ms(d))
}

/// Unix milliseconds as a UTC date-time (clamped to chrono's range).
pub(crate) fn to_datetime(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or(DateTime::<Utc>::MAX_UTC)
}
