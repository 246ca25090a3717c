//! Plain settings: what [`RetentionBuilder`](crate::RetentionBuilder) collects, validated
//! into the [`Config`] every part reads.
use std::time::Duration;

use crate::error::{Error, Result};

const DAY: Duration = Duration::from_secs(24 * 3600);

/// The shortest lease accepted: a lease must outlive one batch of eraser calls.
pub(crate) const MIN_LEASE: Duration = Duration::from_secs(5);

/// The largest batch accepted (also the default). Redis runs one script at a time, so a claim
/// blocks every other client while it runs: at 5M tracked users a claim of 500 users took
/// 0.9 to 1.3 ms (slowest 4.4 ms), one of 1,000 up to 5.5 ms and one of 5,000 up to 14 ms
/// (`examples/bench.rs`, section 6; the README's Performance section).
pub(crate) const MAX_BATCH_SIZE: usize = 500;

/// What happens to a user Telegram reports as gone (blocked the bot, deleted their account,
/// or unreachable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GonePolicy {
    /// Erase at the next prune pass.
    EraseNow,
    /// Erase once the grace period has passed, unless the user unblocks the bot or
    /// interacts before then. The default, with seven days. `Duration::MAX` means never
    /// (the mark stays; inactivity erases the user like anyone else).
    EraseAfter(Duration),
    /// Only mark the user (visible in `/mydata` and the dry run); inactivity erases them
    /// later like anyone else.
    MarkOnly,
}

impl Default for GonePolicy {
    fn default() -> Self {
        Self::EraseAfter(7 * DAY)
    }
}

/// What the audit does with listed users the store does not know (see
/// [`Retention::audit`](crate::Retention::audit)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum UntrackedUsers {
    /// Put them on a clock with the last activity the eraser knows (now if it knows none).
    #[default]
    Adopt,
    /// Put them on a clock starting now, whatever the eraser knows.
    AdoptNow,
    /// Only count them.
    Report,
}

/// The settings, one type: the builder fills it from these defaults and validates it once
/// at `build()`; every part reads it.
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) namespace: String,
    /// Required: the builder sets it before validating (zero until then).
    pub(crate) inactive_after: Duration,
    pub(crate) resolution: Duration,
    pub(crate) prune_every: Duration,
    pub(crate) batch_size: usize,
    pub(crate) prune_concurrency: usize,
    pub(crate) lease: Duration,
    pub(crate) eraser_timeout: Duration,
    pub(crate) follow_up_delay: Duration,
    pub(crate) gone_policy: GonePolicy,
    pub(crate) strict: bool,
    pub(crate) max_buffered_interactions: usize,
    pub(crate) store_timeout: Duration,
    pub(crate) detect_blocks: bool,
    pub(crate) heartbeat: Duration,
    pub(crate) writer_timeout: Duration,
    pub(crate) allow_allkeys_eviction: bool,
    pub(crate) stuck_after: Duration,
    pub(crate) receipts: Option<crate::receipts::ReceiptConfig>,
    /// How often the pruner audits the erasers, and what it does with untracked users.
    pub(crate) audit: Option<(Duration, UntrackedUsers)>,
    /// How the pruner probes users; `Some` once the bot gave a way to reach Telegram.
    pub(crate) probes: Option<crate::probe::Probes>,
    /// The census, if on (it needs `probes`).
    pub(crate) census: Option<crate::probe::Census>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            namespace: "retention".to_owned(),
            inactive_after: Duration::ZERO,
            resolution: Duration::from_secs(60),
            prune_every: Duration::from_secs(10 * 60),
            batch_size: 500,
            prune_concurrency: 4,
            lease: Duration::from_secs(120),
            eraser_timeout: Duration::from_secs(30),
            follow_up_delay: Duration::from_secs(60),
            gone_policy: GonePolicy::default(),
            strict: false,
            max_buffered_interactions: 100_000,
            store_timeout: Duration::from_secs(2),
            detect_blocks: true,
            heartbeat: Duration::from_secs(5),
            writer_timeout: Duration::from_secs(3600),
            allow_allkeys_eviction: false,
            stuck_after: Duration::from_secs(3 * 24 * 3600),
            receipts: None,
            audit: None,
            probes: None,
            census: None,
        }
    }
}

impl Config {
    /// Checks the settings together; the builder calls it once, at `build()`.
    pub(crate) fn validate(&self) -> Result<()> {
        let c = self;
        for (name, value) in [
            ("inactive_after", c.inactive_after),
            ("resolution", c.resolution),
            ("prune_every", c.prune_every),
            ("lease", c.lease),
            ("eraser_timeout", c.eraser_timeout),
            ("follow_up_delay", c.follow_up_delay),
            ("store_timeout", c.store_timeout),
            ("heartbeat_every", c.heartbeat),
            ("writer_timeout", c.writer_timeout),
            ("stuck_after", c.stuck_after),
        ] {
            if value.is_zero() {
                return Err(Error::config(format!("{name} must be longer than zero")));
            }
        }
        if let Some((every, _)) = c.audit
            && every.is_zero()
        {
            return Err(Error::config("audit_every must be longer than zero"));
        }
        if let Some(receipts) = &c.receipts
            && receipts.keep.is_zero()
        {
            return Err(Error::config("receipts must be kept for longer than zero"));
        }
        if let Some(probes) = &c.probes {
            probes.validate()?;
        }
        if let Some(census) = &c.census {
            if c.probes.is_none() {
                return Err(Error::config(
                    "census needs a way to reach Telegram: RetentionBuilder::probe_with",
                ));
            }
            census.validate()?;
        }
        crate::store::validate_namespace(&c.namespace)?;
        if c.inactive_after <= c.resolution.saturating_mul(2) {
            return Err(Error::config(format!(
                "inactive_after ({:?}) must be longer than twice the resolution ({:?})",
                c.inactive_after, c.resolution
            )));
        }
        if c.batch_size == 0 || c.batch_size > MAX_BATCH_SIZE {
            return Err(Error::config(format!(
                "batch_size must be between 1 and {MAX_BATCH_SIZE}, got {}",
                c.batch_size
            )));
        }
        if c.prune_concurrency == 0 {
            return Err(Error::config("prune_concurrency must be at least 1"));
        }
        if c.lease < MIN_LEASE {
            return Err(Error::config(format!(
                "lease ({:?}) must be at least {MIN_LEASE:?}",
                c.lease
            )));
        }
        if c.lease < c.eraser_timeout.saturating_mul(2) {
            return Err(Error::config(format!(
                "lease ({:?}) must be at least twice eraser_timeout ({:?}), so that a batch \
                 finishes before its lease ends",
                c.lease, c.eraser_timeout
            )));
        }
        if c.writer_timeout <= c.heartbeat.saturating_mul(3) {
            return Err(Error::config(format!(
                "writer_timeout ({:?}) must be longer than three heartbeats ({:?} each)",
                c.writer_timeout, c.heartbeat
            )));
        }
        if c.max_buffered_interactions == 0 {
            return Err(Error::config("max_buffered_interactions must be at least 1"));
        }
        if c.gone_policy == GonePolicy::EraseAfter(Duration::ZERO) {
            return Err(Error::config(
                "the gone grace period must be longer than zero; use GonePolicy::EraseNow",
            ));
        }
        Ok(())
    }

    /// How writers' heartbeats hold back inactivity claims: silent after three missed
    /// heartbeats, dead after the writer timeout.
    pub(crate) fn writer_window(&self) -> crate::store::WriterWindow {
        crate::store::WriterWindow {
            silent_ms: crate::clock::duration_ms(self.heartbeat.saturating_mul(3)),
            dead_ms: crate::clock::duration_ms(self.writer_timeout),
        }
    }

    /// When a failing erasure is stuck; a stuck one is reported once a day.
    pub(crate) fn stuck_window(&self) -> crate::store::StuckWindow {
        crate::store::StuckWindow {
            after_ms: crate::clock::duration_ms(self.stuck_after),
            every_ms: crate::clock::duration_ms(STUCK_REPORT_EVERY),
        }
    }
}

/// How often a stuck erasure is reported (logged, counted, passed to `on_stuck`).
pub(crate) const STUCK_REPORT_EVERY: Duration = Duration::from_secs(24 * 3600);

#[cfg(test)]
impl Config {
    /// The defaults, with a 90-day threshold.
    pub(crate) fn for_tests() -> Self {
        let config = Config { inactive_after: 90 * DAY, ..Config::default() };
        config.validate().expect("the defaults are valid");
        config
    }
}
