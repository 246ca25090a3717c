//! What a [`Retention`](crate::Retention) counted: [`Stats`], and the counters behind them.

use std::sync::atomic::{AtomicU64, Ordering};

use crate::erase::ErasureReason;

/// Counters since this [`Retention`](crate::Retention) was built; see
/// [`Retention::stats`](crate::Retention::stats).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Interactions written to the store.
    pub interactions_written: u64,
    /// Store writes of interactions that failed (each may cover many users).
    pub interaction_write_failures: u64,
    /// Of those, writes refused because the store was opened with another shard count
    /// than its namespace's, or the namespace is being resharded
    /// ([`Error::ShardCount`](crate::Error::ShardCount),
    /// [`Error::Resharding`](crate::Error::Resharding)): a configuration error, logged
    /// once at error level.
    pub layout_errors: u64,
    /// Interactions buffered in memory because the store was failing.
    pub interactions_buffered: u64,
    /// Interactions lost because the buffer was full.
    pub interactions_dropped: u64,
    /// Gone marks (blocks, failed sends seen by the layer or `note_gone`) lost because the
    /// store was unreachable and the buffer was full.
    pub gone_marks_dropped: u64,
    /// Updates not handled in strict mode because their interaction could not be written.
    pub strict_refusals: u64,
    /// Users erased, by reason: [`Stats::erased_for`].
    erased: PerReason,
    /// Users whose erasure failed and was scheduled for a retry.
    pub erasure_retries: u64,
    /// Reports of stuck erasures (failing for longer than
    /// [`RetentionBuilder::stuck_after`](crate::RetentionBuilder::stuck_after)); each stuck
    /// erasure is reported once a day, by one process, while it keeps failing.
    pub stuck_erasures: u64,
    /// Users newly marked as gone.
    pub marked_gone: u64,
    /// Follow-up erasures scheduled because an update was in flight during an opt-out.
    pub follow_ups: u64,
    /// Claimed users whose lease expired before the erasure was confirmed.
    pub leases_lost: u64,
    /// Completed prune passes.
    pub prune_passes: u64,
    /// Claims that held back erasures for inactivity because a process may hold
    /// interactions it has not written (see [`PassReport::inactivity_held`](crate::PassReport::inactivity_held)).
    pub inactivity_held: u64,
    /// The offset of this process's clock to the store's (Redis `TIME` minus the local
    /// clock, in ms), as last measured; 0 with the in-memory store or a manual clock.
    /// Every time this process writes is corrected by it.
    pub clock_offset_ms: i64,
    /// Measurements that found this host's clock more than a second off the store's.
    pub clock_skew_warnings: u64,
    /// Users whose interaction is cached in this process.
    pub cached_users: u64,
    /// Users whose interaction is buffered, waiting for the store.
    pub buffered_users: u64,
    /// Gone marks kept in memory, waiting for the store.
    pub buffered_gone_marks: u64,
    /// Probes that reached their user (see [`Probes`](crate::Probes)).
    pub probes_reachable: u64,
    /// Probes that found their user gone.
    pub probes_gone: u64,
    /// Probes without an answer that says either (rate limits, server or network errors,
    /// timeouts).
    pub probes_unknown: u64,
    /// Gone marks dropped because a probe reached the user: they kept their data.
    pub kept_reachable: u64,
    /// Census rounds this process completed (see [`Census`](crate::Census)).
    pub census_rounds: u64,
}

impl Stats {
    /// Users erased for `reason`.
    #[must_use]
    pub fn erased_for(&self, reason: ErasureReason) -> u64 {
        self.erased.get(reason)
    }

    /// Users erased for any reason.
    #[must_use]
    pub fn erased_total(&self) -> u64 {
        self.erased.total()
    }
}

/// A count per [`ErasureReason`]; read through methods, so that a new reason is not a
/// breaking change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PerReason([u64; ErasureReason::ALL.len()]);

impl PerReason {
    pub(crate) fn get(&self, reason: ErasureReason) -> u64 {
        self.0[reason.index()]
    }

    pub(crate) fn add(&mut self, reason: ErasureReason, n: u64) {
        self.0[reason.index()] += n;
    }

    pub(crate) fn total(&self) -> u64 {
        self.0.iter().sum()
    }
}

/// What the tracker reports for [`Stats`] beside the counters: values of this moment.
pub(crate) struct Gauges {
    pub(crate) clock_offset_ms: i64,
    pub(crate) cached_users: u64,
    pub(crate) buffered_users: u64,
    pub(crate) buffered_gone_marks: u64,
}

/// One counter of [`Stats`], also emitted through the [`metrics`] facade as `metric`.
pub(crate) struct Counter {
    value: AtomicU64,
    metric: &'static str,
}

impl Counter {
    const fn new(metric: &'static str) -> Self {
        Self { value: AtomicU64::new(0), metric }
    }

    fn get(&self) -> u64 {
        self.value.load(Ordering::Relaxed)
    }
}

/// Counters shared by the whole crate; see [`Stats`](crate::Stats). Each is also a
/// Prometheus-style counter of the `metrics` facade (a no-op unless the bot installed a
/// recorder); the README's "Operating it" lists them.
pub(crate) struct Counters {
    pub(crate) interactions_written: Counter,
    pub(crate) interaction_write_failures: Counter,
    pub(crate) layout_errors: Counter,
    pub(crate) interactions_buffered: Counter,
    pub(crate) interactions_dropped: Counter,
    pub(crate) gone_marks_dropped: Counter,
    pub(crate) strict_refusals: Counter,
    erased: [AtomicU64; ErasureReason::ALL.len()],
    pub(crate) erasure_retries: Counter,
    pub(crate) stuck_erasures: Counter,
    marked_gone: [AtomicU64; ErasureReason::ALL.len()],
    pub(crate) follow_ups: Counter,
    pub(crate) leases_lost: Counter,
    pub(crate) prune_passes: Counter,
    pub(crate) skew_warnings: Counter,
    pub(crate) inactivity_held: Counter,
    /// Probes by outcome: reachable, gone, unknown.
    probes: [AtomicU64; 3],
    pub(crate) kept_reachable: Counter,
    pub(crate) census_rounds: Counter,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            interactions_written: Counter::new("teloxide_retention_interactions_written_total"),
            interaction_write_failures: Counter::new(
                "teloxide_retention_interaction_write_failures_total",
            ),
            layout_errors: Counter::new("teloxide_retention_layout_errors_total"),
            interactions_buffered: Counter::new("teloxide_retention_interactions_buffered_total"),
            interactions_dropped: Counter::new("teloxide_retention_interactions_dropped_total"),
            gone_marks_dropped: Counter::new("teloxide_retention_gone_marks_dropped_total"),
            strict_refusals: Counter::new("teloxide_retention_strict_refusals_total"),
            erased: Default::default(),
            erasure_retries: Counter::new("teloxide_retention_erasure_retries_total"),
            stuck_erasures: Counter::new("teloxide_retention_stuck_erasures_total"),
            marked_gone: Default::default(),
            follow_ups: Counter::new("teloxide_retention_follow_ups_total"),
            leases_lost: Counter::new("teloxide_retention_leases_lost_total"),
            prune_passes: Counter::new("teloxide_retention_prune_passes_total"),
            skew_warnings: Counter::new("teloxide_retention_clock_skew_warnings_total"),
            inactivity_held: Counter::new("teloxide_retention_inactivity_held_total"),
            probes: Default::default(),
            kept_reachable: Counter::new("teloxide_retention_kept_reachable_total"),
            census_rounds: Counter::new("teloxide_retention_census_rounds_total"),
        }
    }
}

impl Counters {
    pub(crate) fn add(counter: &Counter, n: u64) {
        counter.value.fetch_add(n, Ordering::Relaxed);
        metrics::counter!(counter.metric).increment(n);
    }

    pub(crate) fn erased(&self, reason: ErasureReason) {
        self.erased[reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("teloxide_retention_erasures_total", "reason" => reason.as_str())
            .increment(1);
    }

    /// A gone mark for `reason` was newly stored.
    pub(crate) fn marked_gone(&self, reason: ErasureReason) {
        self.marked_gone[reason.index()].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("teloxide_retention_gone_marks_total", "reason" => reason.as_str())
            .increment(1);
    }

    /// A probe found `found`.
    pub(crate) fn probed(&self, found: crate::Reachability) {
        let i = match found {
            crate::Reachability::Reachable => 0,
            crate::Reachability::Gone(_) => 1,
            crate::Reachability::Unknown => 2,
        };
        self.probes[i].fetch_add(1, Ordering::Relaxed);
        metrics::counter!("teloxide_retention_probes_total", "outcome" => found.label())
            .increment(1);
    }

    /// The counters now, with the tracker's gauges.
    pub(crate) fn snapshot(&self, gauges: Gauges) -> Stats {
        let get = Counter::get;
        let per_reason = |a: &[AtomicU64; ErasureReason::ALL.len()]| {
            PerReason(std::array::from_fn(|i| a[i].load(Ordering::Relaxed)))
        };
        Stats {
            interactions_written: get(&self.interactions_written),
            interaction_write_failures: get(&self.interaction_write_failures),
            layout_errors: get(&self.layout_errors),
            interactions_buffered: get(&self.interactions_buffered),
            interactions_dropped: get(&self.interactions_dropped),
            gone_marks_dropped: get(&self.gone_marks_dropped),
            strict_refusals: get(&self.strict_refusals),
            erased: per_reason(&self.erased),
            erasure_retries: get(&self.erasure_retries),
            stuck_erasures: get(&self.stuck_erasures),
            marked_gone: per_reason(&self.marked_gone).total(),
            follow_ups: get(&self.follow_ups),
            leases_lost: get(&self.leases_lost),
            prune_passes: get(&self.prune_passes),
            inactivity_held: get(&self.inactivity_held),
            clock_offset_ms: gauges.clock_offset_ms,
            clock_skew_warnings: get(&self.skew_warnings),
            cached_users: gauges.cached_users,
            buffered_users: gauges.buffered_users,
            buffered_gone_marks: gauges.buffered_gone_marks,
            probes_reachable: self.probes[0].load(Ordering::Relaxed),
            probes_gone: self.probes[1].load(Ordering::Relaxed),
            probes_unknown: self.probes[2].load(Ordering::Relaxed),
            kept_reachable: get(&self.kept_reachable),
            census_rounds: get(&self.census_rounds),
        }
    }
}
