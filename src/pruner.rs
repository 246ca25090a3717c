//! The pruner: erases users who are inactive past the threshold, gone, or whose erasure is
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use teloxide::types::UserId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::clock::duration_ms;
use crate::clock::to_datetime;
use crate::config::GonePolicy;
use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::parts::Parts;
use crate::probe::{Census, LOOKAHEAD, Prober, Reachability};
use crate::stats::{Counters, PerReason};
use crate::store::{
    CensusAnswer, CensusPage, CensusWalk, ClaimRequest, ClaimTimes, DUE_SCAN_SLACK, Job, Part,
    Unschedule, random_id,
};

/// Idle users a step of the census walks past at most.
const CENSUS_STEP: usize = 100;

/// Census entries a sweep looks at, per pass and part of the store.
const CENSUS_SWEEP: usize = 1_000;

/// Census probes in flight at once (each still waits for its slot of the pace).
const CENSUS_IN_FLIGHT: usize = 8;

/// Idle users the census walks past at most in one pass, probed or not: a base whose
/// round is done is walked again a slice per pass, not whole at every pass.
const CENSUS_WALK_PER_PASS: u64 = 50_000;
use futures_util::stream::{self, StreamExt};

/// What one prune pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PassReport {
    /// Users claimed for erasure.
    pub claimed: u64,
    /// Users erased (every eraser succeeded and the erasure was confirmed).
    pub erased: u64,
    /// Users erased, by reason: [`PassReport::erased_for`].
    erased_by_reason: PerReason,
    /// Gone users whose erasure was cancelled because they came back (interacted after
    /// being marked); each also went to
    /// [`RetentionBuilder::on_returned`](crate::RetentionBuilder::on_returned).
    pub returned: u64,
    /// Users whose erasers failed; they are retried in a later pass.
    pub failed: u64,
    /// Gone marks a probe found reachable: dropped, the user keeps their data (see
    /// [`Probes`](crate::Probes)); each also went to
    /// [`RetentionBuilder::on_returned`](crate::RetentionBuilder::on_returned).
    pub kept_reachable: u64,
    /// Gone marks a probe confirmed as gone before their erasure.
    pub confirmed_gone: u64,
    /// Gone marks whose probe found no answer (or that no probe reached in this pass):
    /// asked again at the next pass.
    pub probes_postponed: u64,
    /// Idle users the census walked past (probed, or skipped as probed recently or
    /// already marked); see [`Census`](crate::Census).
    pub census_walked: u64,
    /// Users the census probed.
    pub census_probed: u64,
    /// Users the census found gone (and marked); by reason:
    /// [`PassReport::census_found_gone_for`].
    pub census_found_gone: u64,
    census_found_gone_by_reason: PerReason,
    /// Users the census found reachable.
    pub census_found_reachable: u64,
    /// Census rounds completed (the walk reached the last idle user).
    pub census_rounds: u64,
    /// Census entries removed of users a replica of an older version erased.
    pub census_swept: u64,
    /// Users whose lease expired before confirmation; another pruner finishes them.
    pub leases_lost: u64,
    /// Script calls that claimed users (batches).
    pub batches: u64,
    /// Why users inactive past the threshold were not erased in this pass, if they were
    /// not: a process that records interactions reported unwritten ones, or missed its
    /// heartbeats (see [`RetentionBuilder::heartbeat_every`](crate::RetentionBuilder::heartbeat_every)).
    /// Gone users, opt-outs and retries were erased all the same.
    pub inactivity_held: Option<String>,
    /// Entries the pass could not read (written by another version of the crate, or by
    /// hand), left in place; each names its key and user. They are logged as errors.
    pub unreadable: Vec<String>,
    /// Wall time of the pass.
    pub elapsed: Duration,
}

impl PassReport {
    /// Users erased for `reason` in this pass.
    #[must_use]
    pub fn erased_for(&self, reason: ErasureReason) -> u64 {
        self.erased_by_reason.get(reason)
    }

    /// Users the census found gone for `reason` in this pass.
    #[must_use]
    pub fn census_found_gone_for(&self, reason: ErasureReason) -> u64 {
        self.census_found_gone_by_reason.get(reason)
    }

    /// Adds the report of one part (shard) of a pass.
    fn absorb(&mut self, part: Self) {
        self.claimed += part.claimed;
        self.erased += part.erased;
        for reason in ErasureReason::ALL {
            self.erased_by_reason.add(reason, part.erased_by_reason.get(reason));
        }
        self.returned += part.returned;
        self.failed += part.failed;
        self.kept_reachable += part.kept_reachable;
        self.confirmed_gone += part.confirmed_gone;
        self.probes_postponed += part.probes_postponed;
        self.census_walked += part.census_walked;
        self.census_probed += part.census_probed;
        self.census_found_gone += part.census_found_gone;
        self.census_found_reachable += part.census_found_reachable;
        for reason in ErasureReason::ALL {
            let found = part.census_found_gone_by_reason.get(reason);
            self.census_found_gone_by_reason.add(reason, found);
        }
        self.census_rounds += part.census_rounds;
        self.census_swept += part.census_swept;
        self.leases_lost += part.leases_lost;
        self.batches += part.batches;
        self.inactivity_held = self.inactivity_held.take().or(part.inactivity_held);
        for entry in part.unreadable {
            if !self.unreadable.contains(&entry) {
                self.unreadable.push(entry);
            }
        }
    }
}

/// A dry run: what the next pass would erase; see [`Retention::preview`](crate::Retention::preview).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PrunePreview {
    /// Users inactive past the threshold (including any who are also scheduled). A count
    /// of the store's entries: members that are not users (see the README's guarantee
    /// 13), which the pass reports and leaves in place, are counted too.
    pub inactive: u64,
    /// Scheduled erasures that are due (gone users, opt-outs, retries); users among them
    /// who came back are dropped by the pass instead.
    pub scheduled_due: u64,
    /// Claimed batches whose pruner died before finishing them; the pass takes their users
    /// over.
    pub expired_leases: u64,
    /// Up to the requested number of users the pass would erase, each once, scheduled ones
    /// first.
    pub users: Vec<PreviewEntry>,
    /// Why a pass now would not erase the inactive users, if it would not (see
    /// [`PassReport::inactivity_held`]).
    pub inactivity_held: Option<String>,
}

/// One user in a [`PrunePreview`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PreviewEntry {
    /// The user.
    pub user: UserId,
    /// Why they would be erased.
    pub reason: ErasureReason,
    /// Their last recorded interaction.
    pub last_seen: Option<DateTime<Utc>>,
    /// When they were marked (gone users, opt-outs).
    pub marked_at: Option<DateTime<Utc>>,
}

/// Stops a pruner started with [`Retention::spawn_pruner`](crate::Retention::spawn_pruner).
///
/// The pruner: erases users who are inactive past the threshold, gone, or whose erasure is
/// being retried.
///
/// One pass ([`Retention::prune_once`](crate::Retention::prune_once)) claims users in batches, runs every eraser for the
/// batch, then confirms (or gives failed users back for a retry). The background task
/// ([`Retention::spawn_pruner`](crate::Retention::spawn_pruner)) runs a pass every interval until its handle is shut down.
/// Passes on several replicas at once are safe: a claim leases each user to one pruner.
///
/// ```
/// use std::time::Duration;
/// use teloxide::types::UserId;
/// use teloxide_retention::{ManualClock, MemoryStore, Retention};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), teloxide_retention::Error> {
/// let clock = ManualClock::starting_now();
/// let retention = Retention::builder(MemoryStore::new())
///     .inactive_after(Duration::from_secs(30 * 24 * 3600))
///     .clock(clock.clone())
///     .build()?;
/// retention.note_interaction(UserId(42)).await;
///
/// clock.advance(Duration::from_secs(31 * 24 * 3600));
/// let preview = retention.preview(10).await?;
/// assert_eq!(preview.users[0].user, UserId(42));
///
/// let report = retention.prune_once().await?;
/// assert_eq!(report.erased, 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping the handle leaves the pruner running until the runtime stops"]
pub struct PrunerHandle {
    token: CancellationToken,
    task: JoinHandle<()>,
}

impl PrunerHandle {
    /// Stops the pruner: no new batch is claimed, the running batch finishes, and this
    /// returns when the task has ended.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: the pruner was already told to stop and finishes on its own.
    pub async fn shutdown(self) {
        self.token.cancel();
        if let Err(e) = self.task.await
            && e.is_panic()
        {
            tracing::error!("the pruner task panicked: {e}");
        }
    }

    /// Tells the pruner to stop, without waiting: no new batch is claimed, and the running
    /// batch finishes. For a signal handler; [`PrunerHandle::shutdown`] also waits.
    pub fn stop(&self) {
        self.token.cancel();
    }

    /// `true` once the pruner task has ended.
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

/// The pruner: passes over the store's due users, through the erasure engine.
#[derive(Clone)]
pub(crate) struct Pruner {
    parts: Arc<Parts>,
}

impl Pruner {
    pub(crate) fn new(parts: Arc<Parts>) -> Self {
        Self { parts }
    }

    /// One pass now; see `Retention::prune_once`.
    pub(crate) async fn prune_once(&self) -> Result<PassReport> {
        self.pass(&CancellationToken::new()).await
    }

    /// The dry run; see `Retention::preview`.
    pub(crate) async fn preview(&self, limit: usize) -> Result<PrunePreview> {
        self.parts.sync_clock().await;
        // The claim's own times: on the store's clock where the claim reads it.
        let times = self.parts.claim_times();
        let raw = self.parts.door.call(|b| b.preview(times, limit)).await?;
        let window = self.parts.config.writer_window();
        let held = self.parts.door.call(|b| b.writers_holding(window)).await?;
        Ok(PrunePreview {
            inactivity_held: held,
            inactive: raw.inactive_total,
            scheduled_due: raw.due_total,
            expired_leases: raw.expired_leases,
            users: raw
                .entries
                .into_iter()
                .map(|e| PreviewEntry {
                    user: UserId(e.user),
                    reason: e.reason,
                    last_seen: e.last_seen.map(to_datetime),
                    marked_at: (e.marked_at != 0).then(|| to_datetime(e.marked_at)),
                })
                .collect(),
        })
    }

    /// Starts the background task; see `Retention::spawn_pruner`.
    pub(crate) fn spawn(self) -> PrunerHandle {
        let token = CancellationToken::new();
        let task = tokio::spawn(self.run(token.clone()));
        PrunerHandle { token, task }
    }

    /// The pruner loop; it ends when `token` is cancelled. The scheduled audit runs beside
    /// it as a task of its own, so that no listing (the bot's code) holds a pass or the
    /// shutdown: shutting down stops an audit where it is (what it wrote stays, and the
    /// next interval audits again).
    async fn run(self, token: CancellationToken) {
        let interval = self.parts.config.prune_every;
        let mut next_audit = tokio::time::Instant::now();
        let mut audit: Option<tokio::task::JoinHandle<()>> = None;
        loop {
            match self.pass(&token).await {
                Ok(report) if report.claimed > 0 => tracing::info!(
                    erased = report.erased,
                    failed = report.failed,
                    leases_lost = report.leases_lost,
                    elapsed_ms = report.elapsed.as_millis() as u64,
                    "prune pass done"
                ),
                Ok(_) => tracing::debug!("prune pass: nothing to erase"),
                // Refused (unsafe or misconfigured), or a reply or value this version cannot
                // read: an operator has to act; logged as an error.
                Err(e @ (Error::Unsafe(_) | Error::Config(_) | Error::Corrupt(_))) => {
                    tracing::error!(error = %e, "prune pass refused; retrying next interval");
                }
                Err(e) => tracing::warn!(error = %e, "prune pass failed; retrying next interval"),
            }
            if let Some(done) = audit.take_if(|a| a.is_finished())
                && let Err(e) = done.await
                && e.is_panic()
            {
                tracing::error!("the scheduled audit panicked: {e}");
            }
            if let Some((every, untracked)) = self.parts.config.audit
                && tokio::time::Instant::now() >= next_audit
                && audit.is_none()
            {
                next_audit = tokio::time::Instant::now() + every;
                let parts = Arc::clone(&self.parts);
                audit = Some(tokio::spawn(async move {
                    if let Err(e) = crate::audit::scheduled(&parts, every, untracked).await {
                        tracing::warn!(error = %e, "scheduled audit failed; retrying next interval");
                    }
                }));
            }
            tokio::select! {
                () = token.cancelled() => {
                    if let Some(audit) = audit {
                        audit.abort();
                        let _ = audit.await;
                    }
                    return;
                }
                () = tokio::time::sleep(interval) => {}
            }
        }
    }

    /// Refuses to prune where erasing could be wrong: a Redis older than 7.0, an eviction
    /// policy that may drop any key, or a `seen` set that vanished.
    async fn check_store(&self) -> Result<()> {
        let health = self.parts.door.call(|b| b.health()).await?;
        crate::store::check_version(health.version.as_deref())?;
        if let Some(policy) = &health.eviction_policy
            && policy.starts_with("allkeys-")
            && !self.parts.config.allow_allkeys_eviction
        {
            return Err(Error::Unsafe(format!(
                "Redis runs with maxmemory-policy {policy}, so it may evict the set of \
                 tracked users at any time and their data would never be erased; set \
                 maxmemory-policy to noeviction (see the README's \"Running Redis\"), or \
                 accept the risk with RetentionBuilder::allow_allkeys_eviction"
            )));
        }
        if let Some(why) = health.not_atomic {
            return Err(Error::Unsafe(why));
        }
        if health.seen_vanished {
            return Err(Error::Unsafe(format!(
                "the set of tracked users ({{{}}}:seen, or a shard's) was lost (evicted or \
                 deleted): users tracked before are unknown now, so their data would never \
                 be erased for inactivity; restore it from a backup, or call \
                 Retention::accept_lost_tracking to prune with what is left",
                self.parts.config.namespace
            )));
        }
        Ok(())
    }

    /// See `Retention::accept_lost_tracking`.
    pub(crate) async fn accept_lost_tracking(&self) -> Result<()> {
        tracing::warn!("accepting the loss of the set of tracked users");
        self.parts.door.call(|b| b.accept_lost_tracking()).await
    }

    /// One pass: claims from every part of the store (each shard of a sharded namespace),
    /// at most `prune_concurrency` at a time, until none has due users left.
    async fn pass(&self, token: &CancellationToken) -> Result<PassReport> {
        let started = Instant::now();
        self.parts.sync_clock().await;
        self.check_store().await?;
        let store_parts = self.parts.door.parts();
        let concurrency = self.parts.config.prune_concurrency.clamp(1, store_parts.len().max(1));
        // Indices, not the parts themselves: a closure over borrowed parts is not `Send`
        // for every lifetime, which `tokio::spawn` needs.
        let passes: Vec<Result<PassReport>> = stream::iter(0..store_parts.len())
            .map(|i| self.pass_over(store_parts[i], token))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let mut report = PassReport::default();
        let mut failure = None;
        for pass in passes {
            match pass {
                Ok(part) => report.absorb(part),
                Err(e) => {
                    failure.get_or_insert(e);
                }
            }
        }
        for entry in &report.unreadable {
            tracing::error!(
                entry = %entry,
                "left an entry this version cannot read in place; it is not erased"
            );
        }
        if let Some(why) = &report.inactivity_held {
            Counters::add(&self.parts.counters.inactivity_held, 1);
            tracing::warn!(reason = %why, "holding back erasures for inactivity");
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if let (Some(prober), Some(census)) = (&self.parts.prober, &self.parts.config.census)
            && let Err(e) = self.census(prober, census, token, &mut report).await
        {
            // The pass's erasures stand; the census goes on at the next pass.
            tracing::warn!(error = %e, "the census stopped early");
        }
        report.elapsed = started.elapsed();
        Counters::add(&self.parts.counters.prune_passes, 1);
        metrics::histogram!("teloxide_retention_prune_pass_duration_seconds")
            .record(report.elapsed.as_secs_f64());
        if let Err(e) = self.sample_gauges().await {
            tracing::debug!(error = %e, "could not sample the store's gauges");
        }
        Ok(report)
    }

    /// Sets the gauges of the `metrics` facade from the store (after each pass).
    async fn sample_gauges(&self) -> Result<()> {
        let parts = &self.parts;
        let now = parts.now_ms();
        let tracked = parts.door.call(|b| b.tracked()).await?;
        let due = parts.door.call(|b| b.preview(parts.claim_times(), 0)).await?;
        let queue = parts.door.call(|b| b.queued()).await?;
        let age = queue.oldest_failing_since.map_or(0, |since| now.saturating_sub(since).max(0));
        let set = |name: &'static str, value: u64| metrics::gauge!(name).set(value as f64);
        set("teloxide_retention_tracked_users", tracked);
        set("teloxide_retention_due_users", due.inactive_total + due.due_total);
        set("teloxide_retention_scheduled_erasures", queue.scheduled);
        set("teloxide_retention_failing_erasures", queue.failing);
        metrics::gauge!("teloxide_retention_oldest_failing_erasure_age_seconds")
            .set(age as f64 / 1000.0);
        set("teloxide_retention_buffered_interactions", parts.tracker.gauges().buffered_users);
        // The inactivity histogram and the writers' heartbeats, as `Retention::survey` (and
        // the CLI's `stats`) gives them.
        let survey = crate::survey::survey(parts).await?;
        for bucket in &survey.inactivity {
            metrics::gauge!("teloxide_retention_inactive_users", "age" => bucket.label(survey.inactive_after))
                .set(bucket.users as f64);
        }
        set("teloxide_retention_writers", survey.writers.len() as u64);
        set(
            "teloxide_retention_unwritten_interactions",
            survey.writers.iter().map(|w| w.unwritten).sum(),
        );
        let oldest_beat = survey
            .writers
            .iter()
            .map(|w| (survey.taken_at - w.last_beat).num_milliseconds().max(0))
            .max()
            .unwrap_or(0);
        metrics::gauge!("teloxide_retention_oldest_heartbeat_age_seconds")
            .set(oldest_beat as f64 / 1000.0);
        if parts.config.census.is_some() {
            set("teloxide_retention_census_probed_users", survey.census.probed_users);
            set("teloxide_retention_census_idle_users", survey.census.idle_users.unwrap_or(0));
            metrics::gauge!("teloxide_retention_census_round_left_seconds")
                .set(survey.census.round_left.unwrap_or_default().as_secs_f64());
        }
        Ok(())
    }

    /// Claims from one part of the store until it has no due users left.
    async fn pass_over(&self, part: Part<'_>, token: &CancellationToken) -> Result<PassReport> {
        let config = &self.parts.config;
        let mut report = PassReport::default();
        // The gone marks this pass probed (or postponed): each is probed once a pass.
        let mut probed = HashMap::new();
        while !token.is_cancelled() {
            if let Some(prober) = &self.parts.prober
                && !self.confirm_due_marks(part, prober, token, &mut probed, &mut report).await?
            {
                break; // cancelled
            }
            let request = ClaimRequest {
                times: self.parts.claim_times(),
                writers: config.writer_window(),
                limit: config.batch_size,
                batch: random_id(),
            };
            let claiming = std::time::Instant::now();
            let mut batch = part.call(|b| b.claim(request)).await?;
            metrics::histogram!("teloxide_retention_claim_duration_seconds")
                .record(claiming.elapsed().as_secs_f64());
            for entry in std::mem::take(&mut batch.unreadable) {
                // Every claim of the pass meets them again: report each once.
                if !report.unreadable.contains(&entry) {
                    report.unreadable.push(entry);
                }
            }
            if report.inactivity_held.is_none() {
                report.inactivity_held = batch.held.take();
            }
            for user in std::mem::take(&mut batch.returned) {
                tracing::info!(user, "a gone user came back; erasure cancelled");
                report.returned += 1;
                self.parts.hooks.returned(user);
            }
            if batch.users.is_empty() {
                break;
            }
            report.batches += 1;
            report.claimed += batch.users.len() as u64;
            let finished = crate::engine::erase(&self.parts, &batch, None).await?;
            if finished.lease_lost {
                report.leases_lost += batch.users.len() as u64;
                continue;
            }
            for (claimed, _) in &finished.erased {
                report.erased += 1;
                report.erased_by_reason.add(claimed.reason, 1);
            }
            report.failed += finished.failed.len() as u64;
        }
        Ok(report)
    }

    /// Runs the census for at most its budget (see `Census`), after the pass's claims:
    /// while this process holds the census's lease (one for the namespace), walks each
    /// part of the store on from where it stands, a step of each part in turn, probes the
    /// idle users the walks return, marks the gone ones and records the answers.
    async fn census(
        &self,
        prober: &Prober,
        census: &Census,
        token: &CancellationToken,
        report: &mut PassReport,
    ) -> Result<()> {
        let parts = &self.parts;
        let budget = census.per_pass.min(parts.config.prune_every / 2);
        let ttl = duration_ms(budget).saturating_add(30_000);
        if token.is_cancelled() || !parts.door.call(|b| b.census_lease(ttl, parts.holder)).await? {
            return Ok(());
        }
        let ends = Instant::now() + budget;
        let store_parts = parts.door.parts();
        // What an older replica's erasures left of the census (a page a pass and part).
        for part in &store_parts {
            let swept = part.call(|b| b.census_sweep(CENSUS_SWEEP)).await?;
            if swept > 0 {
                tracing::info!(swept, "removed the census's state of users erased elsewhere");
            }
            report.census_swept += swept;
        }
        let count = store_parts.len().max(1);
        // Each pass starts one part further, so that every part gets its turn.
        let first =
            self.parts.census_turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % count;
        let mut done = vec![false; store_parts.len()];
        let mut walked = 0;
        'walk: while !token.is_cancelled() && Instant::now() < ends && walked < CENSUS_WALK_PER_PASS
        {
            for i in (0..count).map(|k| (first + k) % count) {
                if done[i] {
                    continue;
                }
                if token.is_cancelled() || Instant::now() >= ends {
                    break 'walk;
                }
                let sharing = done.iter().filter(|d| !**d).count().max(1);
                let part = store_parts[i];
                let page =
                    self.census_step(part, prober, census, ends, sharing, token, report).await?;
                walked += page.walked;
                if page.round_done {
                    done[i] = true;
                    report.census_rounds += 1;
                    Counters::add(&parts.counters.census_rounds, 1);
                }
            }
            if done.iter().all(|d| *d)
                || !parts.door.call(|b| b.census_lease(ttl, parts.holder)).await?
            {
                break;
            }
        }
        Ok(())
    }

    /// One step of the census on one part: walks past at most as many idle users as the
    /// probes' pace fits before `ends`, probes those the walk returns, marks the gone ones
    /// and records the answers.
    #[allow(clippy::too_many_arguments)]
    async fn census_step(
        &self,
        part: Part<'_>,
        prober: &Prober,
        census: &Census,
        ends: Instant,
        sharing: usize,
        token: &CancellationToken,
        report: &mut PassReport,
    ) -> Result<CensusPage> {
        let parts = &self.parts;
        let now = parts.now_ms();
        // As many users as the probes' pace fits in this part's share of what is left, so
        // that a step never walks past users it cannot probe, nor takes the others' time.
        let left =
            ends.saturating_duration_since(Instant::now()) / u32::try_from(sharing).unwrap_or(1);
        let fit = left.as_nanos() / prober.settings.interval.as_nanos().max(1);
        let walk = CensusWalk {
            idle_up_to: now.saturating_sub(duration_ms(census.idle_for)),
            probed_since: now.saturating_sub(duration_ms(census.every)),
            limit: usize::try_from(fit).unwrap_or(usize::MAX).clamp(1, CENSUS_STEP),
        };
        let mut page = part.call(|b| b.census_walk(walk)).await?;
        report.census_walked += page.walked;
        // A few probes in flight at once, each at its slot of the pace: a slow answer does
        // not slow the census below its rate.
        // A cancelled pass probes no more; the answers so far are recorded.
        let found: Vec<(u64, Reachability)> = stream::iter(std::mem::take(&mut page.users))
            .take_while(|_| std::future::ready(!token.is_cancelled()))
            .map(|user| async move { (user, prober.probe(UserId(user)).await) })
            .buffered(CENSUS_IN_FLIGHT)
            .collect()
            .await;
        let mut answers = Vec::with_capacity(found.len());
        for (user, found) in found {
            parts.counters.probed(found);
            report.census_probed += 1;
            match found {
                Reachability::Reachable => {
                    report.census_found_reachable += 1;
                    metrics::counter!("teloxide_retention_census_found_total", "answer" => "reachable")
                        .increment(1);
                    answers.push(CensusAnswer { user, reachable: true });
                }
                Reachability::Gone(reason) => {
                    tracing::info!(user, %reason, "the census found a user gone");
                    match parts.tracker.mark_gone(UserId(user), reason).await {
                        Ok(_) => {
                            report.census_found_gone += 1;
                            report.census_found_gone_by_reason.add(reason.into(), 1);
                            let answer = crate::ErasureReason::from(reason).as_str();
                            metrics::counter!("teloxide_retention_census_found_total", "answer" => answer)
                                .increment(1);
                            answers.push(CensusAnswer { user, reachable: false });
                        }
                        // Not recorded: the next round asks again.
                        Err(e) => tracing::warn!(user, error = %e, "could not mark a user gone"),
                    }
                }
                Reachability::Unknown => {}
            }
        }
        part.call(|b| b.census_record(&answers, now, parts.clock.claim_now())).await?;
        Ok(page)
    }

    /// Probes, before a claim, the gone marks whose reason [`Probes`](crate::Probes)
    /// confirms and which the claim could take, until none is left unconfirmed among the
    /// due entries the claim examines (no more than its batch and [`DUE_SCAN_SLACK`] due
    /// entries, in due order). Each round previews that many entries [`LOOKAHEAD`] ahead:
    /// a reachable user's mark is dropped; a gone one's is left for the claim; one without
    /// an answer, or that the probes had no time for, is postponed past the look-ahead, so
    /// that the entries behind it come into view. A retry (a confirmed erasure that
    /// failed) and a mark due longer ago than `give_up_after` are left to the claim
    /// unprobed. `false` when the pass is cancelled, or when the marks to confirm outlast
    /// half the look-ahead: no claim follows in this part this pass.
    async fn confirm_due_marks(
        &self,
        part: Part<'_>,
        prober: &Prober,
        token: &CancellationToken,
        probed: &mut HashMap<(u64, i64), Probed>,
        report: &mut PassReport,
    ) -> Result<bool> {
        let parts = &self.parts;
        let settings = &prober.settings;
        let grace = match parts.config.gone_policy {
            GonePolicy::EraseAfter(grace) => duration_ms(grace),
            GonePolicy::EraseNow | GonePolicy::MarkOnly => 0,
        };
        let give_up = duration_ms(settings.give_up_after);
        let limit = parts.config.batch_size + DUE_SCAN_SLACK;
        let started = Instant::now();
        let probing_ends = started + LOOKAHEAD / 4;
        loop {
            if token.is_cancelled() {
                return Ok(false);
            }
            let now = parts.now_ms();
            let ahead = now.saturating_add(duration_ms(LOOKAHEAD));
            let times = ClaimTimes { now: Some(ahead), ..parts.claim_times() };
            let preview = part.call(|b| b.preview(times, limit)).await?;
            // Asked again at the next pass: past this look-ahead.
            let retry_at =
                ahead.saturating_add(duration_ms(parts.config.prune_every.min(LOOKAHEAD)));
            let mut changed = false;
            // Postponements of this round, in one store call.
            let mut later = Vec::new();
            for entry in preview.entries {
                if !entry.queued
                    || entry.marked_at == 0
                    || entry.attempts > 0
                    || !settings.confirms(entry.reason)
                    || now.saturating_sub(entry.marked_at.saturating_add(grace)) > give_up
                {
                    continue;
                }
                let (user, key) = (entry.user, (entry.user, entry.marked_at));
                let found = match probed.get(&key) {
                    Some(Probed::Left | Probed::Kept) => continue,
                    Some(Probed::Postponed(to)) if *to > ahead => continue,
                    Some(Probed::Postponed(_)) => Reachability::Unknown,
                    None if Instant::now() < probing_ends && !token.is_cancelled() => {
                        let found = prober.probe(UserId(user)).await;
                        parts.counters.probed(found);
                        found
                    }
                    None => Reachability::Unknown,
                };
                changed = true;
                let mark = Job { reason: entry.reason, marked_at: entry.marked_at, attempts: 0 };
                match found {
                    Reachability::Reachable => {
                        let drop = [Unschedule { user, only: Some(mark), postpone_to: None }];
                        if part.call(|b| b.unschedule_gone(&drop)).await?.first() == Some(&true) {
                            tracing::info!(
                                user,
                                reason = %entry.reason,
                                "a probe reached a user marked gone; mark dropped"
                            );
                            report.kept_reachable += 1;
                            Counters::add(&parts.counters.kept_reachable, 1);
                            parts.hooks.returned(user);
                            probed.insert(key, Probed::Kept);
                            if parts.config.census.is_some() {
                                // The census need not ask again within its interval.
                                let answer = [CensusAnswer { user, reachable: true }];
                                part.call(|b| {
                                    b.census_record(&answer, now, parts.clock.claim_now())
                                })
                                .await?;
                            }
                        } else {
                            // The mark changed meanwhile (an opt-out, a claim): not ours.
                            probed.insert(key, Probed::Left);
                        }
                    }
                    Reachability::Gone(_) => {
                        report.confirmed_gone += 1;
                        probed.insert(key, Probed::Left);
                    }
                    Reachability::Unknown => {
                        later.push(Unschedule {
                            user,
                            only: Some(mark),
                            postpone_to: Some(retry_at),
                        });
                        probed.insert(key, Probed::Postponed(retry_at));
                    }
                }
            }
            if !later.is_empty() {
                let done = part.call(|b| b.unschedule_gone(&later)).await?;
                report.probes_postponed += done.iter().filter(|d| **d).count() as u64;
            }
            if changed && started.elapsed() > LOOKAHEAD / 2 {
                // A backlog larger than one look-ahead can move: no claim in this part
                // this pass (a claim now could take a mark nobody probed); the next pass
                // goes on.
                tracing::warn!(
                    took = ?started.elapsed(),
                    "the due gone marks to confirm outlast the look-ahead; claiming at the \
                     next pass"
                );
                return Ok(false);
            }
            if !changed {
                // Every mark the claim can examine is confirmed (or past give_up_after):
                // this preview was the last, and the claim follows at once.
                return Ok(true);
            }
        }
    }
}

/// What a pass did with a gone mark it probed.
enum Probed {
    /// Found reachable: the mark was dropped.
    Kept,
    /// Found gone (or the mark changed meanwhile): left for the claim.
    Left,
    /// No answer (or no probe in time): due again at this time (ms).
    Postponed(i64),
}
