//! The erasure engine, shared by the pruner and the privacy commands: runs every eraser for
//! a claimed batch, then finishes the batch in the store (confirming erased users, giving
//! failed ones back for a retry with backoff) and announces what it erased. It also answers
//! what is held about one user (status and export), which asks the same store and erasers.

use futures_util::future::BoxFuture;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use teloxide::types::UserId;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::clock::{SyncedClock, duration_ms, to_datetime};
use crate::config::Config;
use crate::erase::{DynEraser, Erasure, ErasureReason, Export};
use crate::error::Result;
use crate::hooks::{Hooks, StuckErasure};
use crate::receipts::{Receipt, ReceiptBatch, ReceiptKey};
use crate::stats::Counters;
use crate::store::{
    Batch, ClaimTimes, ClaimUser, Claimed, Confirmed, DynBackend, FinishRequest, Invalidation, Job,
    Marked, Retry, ScheduleRequest, random_id,
};
use crate::tracker::Tracker;

/// What the store holds about one user; see [`Retention::status`](crate::Retention::status).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserStatus {
    /// The user.
    pub user: UserId,
    /// The last recorded interaction, if the user is tracked.
    pub last_seen: Option<DateTime<Utc>>,
    /// A scheduled or running erasure.
    pub erasure: Option<PendingErasure>,
}

/// An erasure that is scheduled or running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingErasure {
    /// Why the user will be erased.
    pub reason: ErasureReason,
    /// When the user was marked (for gone users: when Telegram told us).
    pub marked_at: Option<DateTime<Utc>>,
    /// When the erasure becomes due; `None` while it runs, or when gone users are only
    /// marked ([`GonePolicy::MarkOnly`](crate::GonePolicy::MarkOnly)).
    pub due: Option<DateTime<Utc>>,
    /// `true` while an erasure of this user is running.
    pub running: bool,
    /// Earlier attempts that failed and are being retried.
    pub failed_attempts: u32,
}

/// The result of [`Retention::erase_user`](crate::Retention::erase_user).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptOutOutcome {
    /// Everything is erased: the store's entries and every eraser's data.
    Erased {
        /// An update of the user was handled while the erasers ran; the erasure runs once
        /// more after the follow-up delay to erase what it may have written.
        follow_up: bool,
    },
    /// At least one eraser failed. The erasure is recorded in the store and retried by
    /// the pruner, with backoff, until it succeeds.
    Retrying {
        /// The erasers that failed, with their errors.
        failed: Vec<(String, String)>,
    },
    /// Another erasure of this user is running right now (a pruner, another replica); it
    /// now counts as an opt-out and is retried as one if it fails.
    AlreadyRunning,
}

/// The erasure engine and the parts it works with; the pruner, the privacy commands and
/// the layer share one through an `Arc`.
pub(crate) struct Engine {
    config: Config,
    backend: DynBackend,
    /// The injected clock, corrected by its offset to the store's clock.
    clock: Arc<SyncedClock>,
    erasers: Vec<Arc<dyn DynEraser>>,
    hooks: Arc<Hooks>,
    tracker: Arc<Tracker>,
    counters: Arc<Counters>,
    /// Cancelled when the last holder (a `Retention` clone, a running pruner, a wrapped
    /// handler) lets go; stops the tracker's background writer.
    cancel: CancellationToken,
    /// The key that names users in key names when no receipt key is set: the namespace's
    /// secret, read once (see [`Engine::hashed`]).
    secret: tokio::sync::OnceCell<ReceiptKey>,
}

impl Engine {
    /// The engine over `backend`, with its tracker (the background writer of interactions).
    pub(crate) fn new(
        config: Config,
        backend: DynBackend,
        clock: Arc<dyn crate::clock::Clock>,
        erasers: Vec<Arc<dyn DynEraser>>,
        hooks: Hooks,
    ) -> Self {
        let hooks = Arc::new(hooks);
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let clock = Arc::new(SyncedClock::new(clock));
        let tracker = Arc::new(Tracker::new(
            &config,
            Arc::clone(&backend),
            Arc::clone(&clock),
            Arc::clone(&counters),
            Arc::clone(&hooks),
            cancel.clone(),
        ));
        Self {
            config,
            backend,
            clock,
            erasers,
            hooks,
            tracker,
            counters,
            cancel,
            secret: tokio::sync::OnceCell::new(),
        }
    }
}

/// The engine's parts, for the layer, the commands, the pruner and the other features.
impl Engine {
    /// The settings the builder checked.
    pub(crate) fn config(&self) -> &Config {
        &self.config
    }

    /// "Now" (ms) on the injected clock, corrected by its offset to the store's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Measures the offset to the store's clock again if the last measurement is stale.
    pub(crate) async fn sync_clock(&self) {
        self.tracker.sync_clock_if_stale().await;
    }

    /// "Now" (ms) after [`sync_clock`](Self::sync_clock): for work that compares times
    /// written by other processes (a pass, a survey, an audit, an adoption).
    pub(crate) async fn store_now_ms(&self) -> i64 {
        self.sync_clock().await;
        self.now_ms()
    }

    /// Records that `user` interacted now (waiting for the write in strict mode).
    pub(crate) async fn note_interaction(&self, user: u64) -> crate::Noted {
        self.tracker.note_interaction(user, self.config.strict).await
    }

    /// The cache of active users, the group commit of interactions and the gone marks.
    pub(crate) fn tracker(&self) -> &Arc<Tracker> {
        &self.tracker
    }

    /// The bot's callbacks.
    pub(crate) fn hooks(&self) -> &Hooks {
        &self.hooks
    }

    /// The counters behind `Stats` and the metrics.
    pub(crate) fn counters(&self) -> &Counters {
        &self.counters
    }

    /// The registered erasers, in order.
    pub(crate) fn erasers(&self) -> &[Arc<dyn DynEraser>] {
        &self.erasers
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The labels of a `/mydata` document in the user's language (from the command's `Texts`).
pub(crate) struct ExportTexts<'a> {
    /// User-facing descriptions of erasers, by eraser name.
    pub(crate) descriptions: &'a std::collections::BTreeMap<String, String>,
    /// The label of an eraser without a description.
    pub(crate) undescribed: &'a str,
    pub(crate) note: &'a str,
    pub(crate) no_copy: &'a str,
    pub(crate) unreadable: &'a str,
}

/// What [`Retention::schedule_opt_out`](crate::Retention::schedule_opt_out) did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptOutScheduled {
    /// Newly scheduled, or an earlier gone mark upgraded to an opt-out.
    Scheduled,
    /// An opt-out was already scheduled; it is kept as it was.
    AlreadyScheduled,
    /// The user is being erased right now; the running erasure counts as an opt-out.
    AlreadyRunning,
}

/// How long finding a user's receipts may take: it reads every receipt of the shards.
const RECEIPT_SCAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// The per-user outcome of running every eraser: the failed erasers and their errors.
pub(crate) type EraserFailures = Vec<(String, String)>;

/// What finishing a batch did.
pub(crate) struct Finished {
    pub(crate) erased: Vec<(Claimed, Confirmed)>,
    pub(crate) failed: Vec<(Claimed, EraserFailures)>,
    /// The lease expired first; another pruner took the batch over.
    pub(crate) lease_lost: bool,
}

impl Engine {
    /// `user` as key names see them (confirmation nonces, rate-limit counters): the hex
    /// HMAC-SHA256 of the id under the receipt key if receipts are on (a key kept outside
    /// Redis), else under the namespace's secret, which the store creates once. No key
    /// name carries a raw user id.
    pub(crate) async fn hashed(&self, user: UserId) -> Result<crate::store::Hashed> {
        let key = match &self.config.receipts {
            Some(receipts) => &receipts.key,
            None => {
                self.secret
                    .get_or_try_init(|| async {
                        let candidate: String =
                            (0..4).map(|_| format!("{:016x}", random_id())).collect();
                        let secret = self.call(self.backend.secret(&candidate)).await?;
                        ReceiptKey::new(secret.into_bytes())
                    })
                    .await?
            }
        };
        Ok(crate::store::Hashed { user: user.0, tag: key.tag(user) })
    }

    /// The names of the registered erasers, in registration order.
    pub(crate) fn eraser_names(&self) -> Vec<&str> {
        self.erasers.iter().map(|e| e.name()).collect()
    }

    /// Runs a store call under the store timeout.
    /// The parts of the store a pass claims from one by one (its shards; itself when it has
    /// one).
    pub(crate) fn parts(&self) -> Vec<&dyn crate::store::Backend> {
        self.backend.parts()
    }

    /// Runs one store call, bounded by the store timeout: `engine.store(|b| b.tracked())`.
    /// Code outside the engine reaches the store this way, so that no call goes unbounded.
    pub(crate) async fn store<'a, T>(
        &'a self,
        call: impl FnOnce(&'a dyn crate::store::Backend) -> BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        self.call(call(&*self.backend)).await
    }

    pub(crate) async fn call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        crate::store::bounded(self.config.store_timeout, call).await
    }

    /// "Now" (or the store's clock), the inactivity span and the lease of a claim. The span
    /// also covers the resolution: a cached user's stored time may lag their real last
    /// interaction by up to that much.
    pub(crate) fn claim_times(&self) -> ClaimTimes {
        let config = &self.config;
        ClaimTimes {
            now: self.clock.claim_now(),
            inactive_ms: duration_ms(config.inactive_after)
                .saturating_add(duration_ms(config.resolution))
                .min(MAX_SPAN_MS),
            lease_ms: duration_ms(config.lease).min(MAX_SPAN_MS),
        }
    }

    /// What the store holds about `user`; see `Retention::status`.
    pub(crate) async fn status(&self, user: UserId) -> Result<UserStatus> {
        let raw = self.call(self.backend.status(user.0)).await?;
        let erasure = raw.job.map(|Job { reason, marked_at, attempts }| PendingErasure {
            reason,
            marked_at: (marked_at != 0).then(|| to_datetime(marked_at)),
            due: raw.queued_due.flatten().map(to_datetime),
            running: raw.leased_until.is_some(),
            failed_attempts: attempts,
        });
        // A running inactivity erasure has a lease but no job.
        let erasure = erasure.or_else(|| {
            raw.leased_until.map(|_| PendingErasure {
                reason: ErasureReason::Inactive,
                marked_at: None,
                due: None,
                running: true,
                failed_attempts: 0,
            })
        });
        Ok(UserStatus { user, last_seen: raw.last_seen.map(to_datetime), erasure })
    }

    /// Erases `user` now as an opt-out; see `Retention::erase_user`.
    pub(crate) async fn erase_user(&self, user: UserId) -> Result<OptOutOutcome> {
        check_user(user)?;
        // Interactions from now on go to the store, so that finishing the erasure sees them.
        let _erasing = self.tracker.begin_erasure(user.0);
        self.erase_user_claimed(user).await
    }

    /// The export document of `user`; see `Retention::export`. With `texts` (the `/mydata`
    /// command, in the user's language), each eraser's entry is labelled with its
    /// user-facing description and the notes are in that language; without, with the
    /// erasers' names and English notes, for the bot's own use.
    pub(crate) async fn export(
        &self,
        user: UserId,
        texts: Option<&ExportTexts<'_>>,
    ) -> Result<serde_json::Value> {
        use serde_json::json;
        let status = self.status(user).await?;
        let generated = to_datetime(self.clock.now_ms());
        let erasure = status.erasure.as_ref().map(|e| {
            json!({
                "reason": e.reason.as_str(),
                "marked_at": e.marked_at.map(|t| t.to_rfc3339()),
                "due": e.due.map(|t| t.to_rfc3339()),
                "running": e.running,
                "failed_attempts": e.failed_attempts,
            })
        });
        let state = match &status.erasure {
            Some(e) if e.reason.is_gone() => "gone",
            Some(_) => "erasure_pending",
            None if status.last_seen.is_some() => "active",
            None => "not_tracked",
        };
        let limit = self.config.eraser_timeout;
        let label = |name: &str| match texts {
            Some(t) => t.descriptions.get(name).map_or(t.undescribed, String::as_str).to_owned(),
            None => name.to_owned(),
        };
        let no_copy = texts.map_or("held, no export", |t| t.no_copy);
        let exports =
            futures_util::future::join_all(self.erasers.iter().map(|eraser| async move {
                let name = label(eraser.name());
                let failed = |why: String| match texts {
                    // The eraser's own error stays in the bot's log, not in the user's copy.
                    Some(t) => {
                        tracing::warn!(eraser = eraser.name(), error = %why, "/mydata: an export failed");
                        t.unreadable.to_owned()
                    }
                    None => why,
                };
                match timeout(limit, eraser.export(user)).await {
                    Ok(Ok(Export::Data(data))) => json!({ "name": name, "data": data }),
                    Ok(Ok(Export::Unsupported)) => json!({ "name": name, "held": no_copy }),
                    Ok(Err(e)) => json!({ "name": name, "error": failed(e.to_string()) }),
                    Err(_) => json!({ "name": name, "error": failed("timed out".to_owned()) }),
                }
            }))
            .await;
        let note = texts.map_or(
            "Only the time of your most recent interaction is kept; each new interaction \
             replaces it.",
            |t| t.note,
        );
        Ok(json!({
            "user_id": user.0,
            "generated_at": generated.to_rfc3339(),
            "retention": {
                "status": state,
                "last_seen": status.last_seen.map(|t| t.to_rfc3339()),
                "erasure": erasure,
                "note": note,
            },
            "policy": {
                "inactive_after_days": self.config.inactive_after.as_secs_f64() / 86_400.0,
            },
            "bot_data": exports,
        }))
    }

    pub(crate) async fn erase_user_claimed(&self, user: UserId) -> Result<OptOutOutcome> {
        let times = self.claim_times();
        let request =
            ClaimUser { user: user.0, reason: ErasureReason::OptOut, times, batch: random_id() };
        let claim = self.backend.claim_user(request);
        let Some(batch) = self.call(claim).await? else {
            return Ok(OptOutOutcome::AlreadyRunning);
        };
        // From here on the erasure is durable: if anything below fails, the batch's lease
        // expires and the pruner finishes the erasure.
        let unfinished = |what: &str, why: String| OptOutOutcome::Retrying {
            failed: vec![(what.to_owned(), why)],
        };
        Ok(match self.erase_batch(&batch).await {
            Ok(Finished { lease_lost: true, .. }) => {
                unfinished("lease", "the erasers outlasted the lease".to_owned())
            }
            Ok(Finished { mut failed, .. }) if !failed.is_empty() => {
                OptOutOutcome::Retrying { failed: failed.swap_remove(0).1 }
            }
            Ok(Finished { erased, .. }) => OptOutOutcome::Erased {
                follow_up: erased.iter().any(|(_, c)| *c == Confirmed::ErasedWithFollowUp),
            },
            Err(e) => unfinished("store", e.to_string()),
        })
    }

    /// Schedules an opt-out erasure of `user`, due now, for the pruners to carry out.
    pub(crate) async fn schedule_opt_out(&self, user: UserId) -> Result<OptOutScheduled> {
        check_user(user)?;
        // A tool on another machine: its clock is corrected by Redis's, as the bots' are.
        self.tracker.sync_clock_if_stale().await;
        let now = self.clock.now_ms();
        let request = ScheduleRequest {
            user: user.0,
            reason: ErasureReason::OptOut,
            marked_at: now,
            due: Some(now),
        };
        let marked = self.call(self.backend.schedule(request)).await?;
        Ok(match marked {
            Marked::Scheduled => OptOutScheduled::Scheduled,
            Marked::AlreadyScheduled => OptOutScheduled::AlreadyScheduled,
            Marked::AlreadyRunning => OptOutScheduled::AlreadyRunning,
        })
    }

    /// The receipts of `user` under `key` (see [`crate::RetentionBuilder::receipts`]),
    /// oldest first; receipts older than the configured lifetime are left out.
    pub(crate) async fn receipts(&self, user: UserId, key: &ReceiptKey) -> Result<Vec<Receipt>> {
        let keep_ms = self.config.receipts.as_ref().map_or(i64::MAX, |r| duration_ms(r.keep));
        let tag = key.tag(user);
        let now = self.clock.now_ms();
        // Reading a long stream page by page takes longer than one store call.
        let scan = self.backend.receipts(&tag, now, keep_ms);
        let found = crate::store::bounded(RECEIPT_SCAN_TIMEOUT, scan).await?;
        Ok(found.into_iter().map(Receipt::from).collect())
    }

    /// Runs every eraser for a claimed batch and finishes it in the store: erased users
    /// are confirmed, failed ones go back to the queue with backoff.
    pub(crate) async fn erase_batch(&self, batch: &Batch) -> Result<Finished> {
        // Interactions of users opting out go to the store while their erasers run, and are
        // noticed even if they reach it only after the finish (see below).
        let erasing: Vec<_> = batch
            .users
            .iter()
            .filter(|c| c.reason == ErasureReason::OptOut)
            .map(|c| (c.user, self.tracker.begin_erasure(c.user)))
            .collect();
        let failures = self.run_erasers(&batch.users).await;
        let mut done = Vec::with_capacity(batch.users.len());
        let mut failed = Vec::new();
        for (claimed, failure) in batch.users.iter().zip(failures) {
            if failure.is_empty() {
                done.push(*claimed);
            } else {
                failed.push((*claimed, failure));
            }
        }
        let now = self.clock.now_ms();
        let follow_up_at = crate::clock::later(now, self.config.follow_up_delay);
        let retries: Vec<Retry> = failed
            .iter()
            .map(|(c, _)| Retry {
                claimed: *c,
                due: now.saturating_add(retry_delay_ms(c.attempts)),
            })
            .collect();
        let stuck = self.config.stuck_window();
        let receipts = self.config.receipts.as_ref().map(|r| ReceiptBatch {
            keep_ms: duration_ms(r.keep),
            erasers: serde_json::to_string(&self.eraser_names()).unwrap_or_default(),
            tags: done.iter().map(|c| r.key.tag(UserId(c.user))).collect(),
        });
        let finish = self.backend.finish(FinishRequest {
            batch,
            done: &done,
            failed: &retries,
            now,
            follow_up_at,
            stuck,
            receipts: receipts.as_ref(),
        });
        let Some(finish) = self.call(finish).await? else {
            Counters::add(&self.counters.leases_lost, batch.users.len() as u64);
            tracing::warn!(
                users = batch.users.len(),
                "a batch outlasted its lease; another pruner finishes it"
            );
            return Ok(Finished { erased: Vec::new(), failed, lease_lost: true });
        };
        Counters::add(&self.counters.erasure_failures, failed.len() as u64);
        for ((claimed, failures), failing) in failed.iter().zip(&finish.failing) {
            if failing.report {
                self.report_stuck(claimed, failing.since, failures);
            }
        }
        let mut confirmed = finish.confirmed;
        let mut wrote = false;
        for (claimed, outcome) in done.iter().zip(confirmed.iter_mut()) {
            let interacted = || erasing.iter().any(|(u, e)| *u == claimed.user && e.interacted());
            if *outcome == Confirmed::Erased
                && claimed.reason == ErasureReason::OptOut
                && interacted()
            {
                // This process took an interaction while the erasers ran, and the finish
                // did not see it in the store: its write was still waiting in the group
                // commit (or the backlog). Erase once more, as the finish would have.
                if self.tracker.schedule_follow_up(claimed.user).await {
                    *outcome = Confirmed::ErasedWithFollowUp;
                }
            } else if *outcome == Confirmed::ErasedWithFollowUp {
                Counters::add(&self.counters.follow_ups, 1);
            }
            self.counters.erased(claimed.reason);
            tracing::debug!(user = claimed.user, reason = %claimed.reason, "user erased");
            if claimed.reason != ErasureReason::Inactive {
                // As every replica applies it from the feed: for an opt-out, interactions
                // this process still holds from before it are dropped (writing them would
                // track the user again); one inside the window gets a follow-up (already
                // decided above, where this process took it: scheduling is idempotent).
                let since = claimed.marked_at;
                let opt_out = claimed.reason == ErasureReason::OptOut;
                let inv = Invalidation { user: claimed.user, since, until: now, opt_out };
                self.tracker.announced_here(inv);
                wrote |= self.tracker.invalidate(inv).await;
            }
            self.hooks.erased(claimed.user, claimed.reason);
        }
        if wrote {
            // Interactions this process had served from its cache after a user's mark: they
            // track the user again. Written before the pass goes on, so that its next claim
            // sees them.
            self.tracker.settle().await;
        }
        Ok(Finished {
            erased: done.into_iter().zip(confirmed).collect(),
            failed,
            lease_lost: false,
        })
    }

    /// Reports an erasure failing since `since` (ms): logged, counted, and passed to the
    /// bot's `on_stuck` hook. The store decided that it is due (once a day).
    fn report_stuck(&self, claimed: &Claimed, since: i64, failures: &EraserFailures) {
        let attempts = claimed.attempts.saturating_add(1);
        let failing_since = crate::clock::to_datetime(since);
        tracing::error!(
            user = claimed.user,
            reason = %claimed.reason,
            %failing_since,
            attempts,
            failures = ?failures,
            "an erasure has been failing for longer than stuck_after; the user's data is \
             not erased yet (retrying goes on)"
        );
        Counters::add(&self.counters.stuck_erasures, 1);
        self.hooks.stuck(StuckErasure {
            user: UserId(claimed.user),
            reason: claimed.reason,
            failing_since,
            attempts,
            failures: failures.clone(),
        });
    }

    /// Runs every eraser for `claimed`, concurrently, each bounded by the eraser timeout.
    /// Returns each user's failures (empty: erased everywhere).
    async fn run_erasers(&self, claimed: &[Claimed]) -> Vec<EraserFailures> {
        let batch: Vec<Erasure> =
            claimed.iter().map(|c| Erasure::new(UserId(c.user), c.reason)).collect();
        let limit = self.config.eraser_timeout;
        let runs = self.erasers.iter().map(|eraser| {
            let batch = &batch;
            async move {
                let started = std::time::Instant::now();
                let results = timeout(limit, eraser.erase_batch(batch)).await.unwrap_or_default();
                let name = eraser.name().to_owned();
                metrics::histogram!("teloxide_retention_eraser_duration_seconds", "eraser" => name)
                    .record(started.elapsed().as_secs_f64());
                (eraser.name(), results)
            }
        });
        let mut failures = vec![EraserFailures::new(); batch.len()];
        for (name, results) in futures_util::future::join_all(runs).await {
            let mut results = results.into_iter();
            for (i, erasure) in batch.iter().enumerate() {
                let error = match results.next() {
                    Some(Ok(())) => continue,
                    Some(Err(e)) => e.to_string(),
                    None => format!("no result within {limit:?}"),
                };
                tracing::warn!(eraser = name, user = erasure.user.0, error = %error, "eraser failed");
                metrics::counter!(
                    "teloxide_retention_eraser_failures_total",
                    "eraser" => name.to_owned()
                )
                .increment(1);
                failures[i].push((name.to_owned(), error));
            }
        }
        failures
    }
}

/// The longest span handed to a script: about 35,000 years, exact in a Lua number, and
/// far enough that "never" stays never.
const MAX_SPAN_MS: i64 = 1 << 50;

/// Backoff for failed erasures: 30 s, doubling, at most six hours.
fn retry_delay_ms(attempts: u32) -> i64 {
    const BASE_MS: i64 = 30_000;
    const MAX_MS: i64 = 6 * 3600 * 1000;
    BASE_MS.saturating_mul(1_i64 << attempts.min(20)).min(MAX_MS)
}

/// Refuses an id the store cannot hold as a user ([`Error::InvalidUser`]).
fn check_user(user: UserId) -> Result<()> {
    if crate::humans::is_user_id(user.0) { Ok(()) } else { Err(crate::Error::InvalidUser(user.0)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_backoff_doubles_and_caps() {
        assert_eq!(retry_delay_ms(0), 30_000);
        assert_eq!(retry_delay_ms(1), 60_000);
        assert_eq!(retry_delay_ms(40), 6 * 3600 * 1000);
    }
}
