//! The erasure engine, shared by the pruner and the privacy commands: runs every eraser for
//! a claimed batch, then finishes the batch in the store (confirming erased users, giving
//! failed ones back for a retry with backoff) and announces what it erased.

use teloxide::types::UserId;
use tokio::time::timeout;

use crate::erase::{Erasure, ErasureReason};
use crate::error::Result;
use crate::retention::{OptOutOutcome, Retention};
use crate::stats::Counters;
use crate::store::{Batch, Claimed, Confirmed, Invalidation, random_id};

/// The per-user outcome of running every eraser: the failed erasers and their errors.
pub(crate) type EraserFailures = Vec<(String, String)>;

/// What finishing a batch did.
pub(crate) struct Finished {
    pub(crate) erased: Vec<(Claimed, Confirmed)>,
    pub(crate) failed: Vec<(Claimed, EraserFailures)>,
    /// The lease expired first; another pruner took the batch over.
    pub(crate) lease_lost: bool,
}

impl Retention {
    pub(crate) async fn erase_user_claimed(&self, user: UserId) -> Result<OptOutOutcome> {
        let times = self.claim_times();
        let claim =
            self.inner.backend.claim_user(user.0, ErasureReason::OptOut, times, random_id());
        let Some(batch) = self.store_call(claim).await? else {
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

    /// Runs every eraser for a claimed batch and finishes it in the store: erased users
    /// are confirmed, failed ones go back to the queue with backoff.
    pub(crate) async fn erase_batch(&self, batch: &Batch) -> Result<Finished> {
        let inner = &self.inner;
        // Interactions of users opting out go to the store while their erasers run, and are
        // noticed even if they reach it only after the finish (see below).
        let erasing: Vec<_> = batch
            .users
            .iter()
            .filter(|c| c.reason == ErasureReason::OptOut)
            .map(|c| (c.user, inner.tracker.begin_erasure(c.user)))
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
        let now = inner.clock.now_ms();
        let follow_up_at = crate::clock::later(now, inner.config.follow_up_delay);
        let retries: Vec<(Claimed, i64)> = failed
            .iter()
            .map(|(c, _)| (*c, now.saturating_add(retry_delay_ms(c.attempts))))
            .collect();
        let finish = inner.backend.finish(batch, &done, &retries, now, follow_up_at);
        let Some(confirmed) = self.store_call(finish).await? else {
            Counters::add(&inner.counters.leases_lost, batch.users.len() as u64);
            tracing::warn!(
                users = batch.users.len(),
                "a batch outlasted its lease; another pruner finishes it"
            );
            return Ok(Finished { erased: Vec::new(), failed, lease_lost: true });
        };
        Counters::add(&inner.counters.erasure_failures, failed.len() as u64);
        let mut confirmed = confirmed;
        let mut wrote = false;
        for (claimed, outcome) in done.iter().zip(confirmed.iter_mut()) {
            let touched = || erasing.iter().any(|(u, e)| *u == claimed.user && e.touched());
            if *outcome == Confirmed::Erased && claimed.reason == ErasureReason::OptOut && touched()
            {
                // This process took an interaction while the erasers ran, and the finish
                // did not see it in the store: its write was still waiting in the group
                // commit (or the backlog). Erase once more, as the finish would have.
                if inner.tracker.schedule_follow_up(claimed.user).await {
                    *outcome = Confirmed::ErasedWithFollowUp;
                }
            } else if *outcome == Confirmed::ErasedWithFollowUp {
                Counters::add(&inner.counters.follow_ups, 1);
            }
            inner.counters.erased(claimed.reason);
            tracing::debug!(user = claimed.user, reason = %claimed.reason, "user erased");
            if claimed.reason != ErasureReason::Inactive {
                let since = claimed.marked_at;
                let inv = Invalidation { user: claimed.user, since, until: now, opt_out: false };
                wrote |= inner.tracker.invalidate(inv).await;
            }
            inner.hooks.erased(claimed.user, claimed.reason);
        }
        if wrote {
            // Interactions this process had served from its cache after a user's mark: they
            // track the user again. Written before the pass goes on, so that its next claim
            // sees them.
            inner.tracker.settle().await;
        }
        Ok(Finished {
            erased: done.into_iter().zip(confirmed).collect(),
            failed,
            lease_lost: false,
        })
    }

    /// Runs every eraser for `claimed`, concurrently, each bounded by the eraser timeout.
    /// Returns each user's failures (empty: erased everywhere).
    async fn run_erasers(&self, claimed: &[Claimed]) -> Vec<EraserFailures> {
        let batch: Vec<Erasure> =
            claimed.iter().map(|c| Erasure::new(UserId(c.user), c.reason)).collect();
        let limit = self.inner.config.eraser_timeout;
        let runs = self.inner.erasers.iter().map(|eraser| {
            let batch = &batch;
            async move {
                let results = timeout(limit, eraser.erase_batch(batch)).await.unwrap_or_default();
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
                failures[i].push((name.to_owned(), error));
            }
        }
        failures
    }
}

/// Backoff for failed erasures: 30 s, doubling, at most six hours.
fn retry_delay_ms(attempts: u32) -> i64 {
    const BASE_MS: i64 = 30_000;
    const MAX_MS: i64 = 6 * 3600 * 1000;
    BASE_MS.saturating_mul(1_i64 << attempts.min(20)).min(MAX_MS)
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
