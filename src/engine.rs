//! The erasure engine: erases a batch the store has claimed (for the pruner, or for one
//! user opting out now). An erasure walks one way: the claim (the caller's) → every eraser,
//! concurrently and each bounded → the finish in the store (confirming erased users,
//! giving failed ones back for a retry with backoff, reporting stuck ones) → the tracker,
//! told what was erased (an opt-out's interactions dropped, follow-ups scheduled).

use teloxide::types::UserId;
use tokio::time::timeout;

use crate::clock::duration_ms;
use crate::erase::{Erasure, ErasureReason};
use crate::error::Result;
use crate::hooks::StuckErasure;
use crate::parts::Parts;
use crate::receipts::ReceiptBatch;
use crate::stats::Counters;
use crate::store::{Batch, Claimed, Confirmed, FinishRequest, Invalidation, Retry};
use crate::tracker::Erasing;

/// The per-user outcome of running every eraser: the failed erasers and their errors.
pub(crate) type EraserFailures = Vec<(String, String)>;

/// What finishing a batch did.
pub(crate) struct Finished {
    pub(crate) erased: Vec<(Claimed, Confirmed)>,
    pub(crate) failed: Vec<(Claimed, EraserFailures)>,
    /// The lease expired first; another pruner took the batch over.
    pub(crate) lease_lost: bool,
}

/// Erases a claimed batch: runs every eraser, finishes the batch in the store (erased
/// users are confirmed, failed ones go back to the queue with backoff), then tells the
/// tracker what it erased. `held`: the guard of a user whose erasure this process began
/// before the claim (an opt-out now, see `rights::erase_user`).
pub(crate) async fn erase(
    parts: &Parts,
    batch: &Batch,
    held: Option<Erasing<'_>>,
) -> Result<Finished> {
    // Interactions of users opting out go to the store while their erasers run, and are
    // noticed even if they reach it only after the finish (see below).
    let held_user = held.as_ref().map(Erasing::user);
    let mut erasing: Vec<_> = batch
        .users
        .iter()
        .filter(|c| c.reason == ErasureReason::OptOut && Some(c.user) != held_user)
        .map(|c| (c.user, parts.tracker.begin_erasure(c.user)))
        .collect();
    if let Some(e) = held {
        // Claimed now: a gone mark kept in memory since the guard was taken (the store
        // failed meanwhile) is superseded by this erasure, as at the guard itself.
        parts.tracker.forget_mark(e.user());
        erasing.push((e.user(), e));
    }
    let failures = run_erasers(parts, &batch.users).await;
    let mut done = Vec::with_capacity(batch.users.len());
    let mut failed = Vec::new();
    for (claimed, failure) in batch.users.iter().zip(failures) {
        if failure.is_empty() {
            done.push(*claimed);
        } else {
            failed.push((*claimed, failure));
        }
    }
    let now = parts.clock.now_ms();
    let follow_up_at = crate::clock::later(now, parts.config.follow_up_delay);
    let retries: Vec<Retry> = failed
        .iter()
        .map(|(c, _)| Retry { claimed: *c, due: now.saturating_add(retry_delay_ms(c.attempts)) })
        .collect();
    let stuck = parts.config.stuck_window();
    let receipts = parts.config.receipts.as_ref().map(|r| ReceiptBatch {
        keep_ms: duration_ms(r.keep),
        erasers: serde_json::to_string(&parts.eraser_names()).unwrap_or_default(),
        tags: done.iter().map(|c| r.key.tag(UserId(c.user))).collect(),
    });
    let request = FinishRequest {
        batch,
        done: &done,
        failed: &retries,
        now,
        follow_up_at,
        stuck,
        receipts: receipts.as_ref(),
    };
    let Some(finish) = parts.door.call(|b| b.finish(request)).await? else {
        Counters::add(&parts.counters.leases_lost, batch.users.len() as u64);
        tracing::warn!(
            users = batch.users.len(),
            "a batch outlasted its lease; another pruner finishes it"
        );
        return Ok(Finished { erased: Vec::new(), failed, lease_lost: true });
    };
    Counters::add(&parts.counters.erasure_retries, failed.len() as u64);
    for ((claimed, failures), failing) in failed.iter().zip(&finish.failing) {
        if failing.report {
            report_stuck(parts, claimed, failing.since, failures);
        }
    }
    let mut confirmed = finish.confirmed;
    let mut wrote = false;
    for (claimed, outcome) in done.iter().zip(confirmed.iter_mut()) {
        let interacted = || erasing.iter().any(|(u, e)| *u == claimed.user && e.interacted());
        if *outcome == Confirmed::Erased && claimed.reason == ErasureReason::OptOut && interacted()
        {
            // This process took an interaction while the erasers ran, and the finish
            // did not see it in the store: its write was still waiting in the group
            // commit (or the backlog). Erase once more, as the finish would have.
            if parts.tracker.schedule_follow_up(claimed.user).await {
                *outcome = Confirmed::ErasedWithFollowUp;
            }
        } else if *outcome == Confirmed::ErasedWithFollowUp {
            Counters::add(&parts.counters.follow_ups, 1);
        }
        parts.counters.erased(claimed.reason);
        tracing::debug!(user = claimed.user, reason = %claimed.reason, "user erased");
        if claimed.reason != ErasureReason::Inactive {
            // As every replica applies it from the feed: for an opt-out, interactions
            // this process still holds from before it are dropped (writing them would
            // track the user again); one inside the window gets a follow-up (already
            // decided above, where this process took it: scheduling is idempotent).
            let since = claimed.marked_at;
            let opt_out = claimed.reason == ErasureReason::OptOut;
            let inv = Invalidation { user: claimed.user, since, until: now, opt_out };
            parts.tracker.announced_here(inv);
            wrote |= parts.tracker.invalidate(inv).await;
        }
        parts.hooks.erased(claimed.user, claimed.reason);
    }
    if wrote {
        // Interactions this process had served from its cache after a user's mark: they
        // track the user again. Written before the pass goes on, so that its next claim
        // sees them.
        parts.tracker.settle().await;
    }
    Ok(Finished { erased: done.into_iter().zip(confirmed).collect(), failed, lease_lost: false })
}

/// Reports an erasure failing since `since` (ms): logged, counted, and passed to the
/// bot's `on_stuck` hook. The store decided that it is due (once a day).
fn report_stuck(parts: &Parts, claimed: &Claimed, since: i64, failures: &EraserFailures) {
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
    Counters::add(&parts.counters.stuck_erasures, 1);
    parts.hooks.stuck(StuckErasure {
        user: UserId(claimed.user),
        reason: claimed.reason,
        failing_since,
        attempts,
        failures: failures.clone(),
    });
}

/// Runs every eraser for `claimed`, concurrently, each bounded by the eraser timeout.
/// Returns each user's failures (empty: erased everywhere).
async fn run_erasers(parts: &Parts, claimed: &[Claimed]) -> Vec<EraserFailures> {
    let batch: Vec<Erasure> =
        claimed.iter().map(|c| Erasure::new(UserId(c.user), c.reason)).collect();
    let limit = parts.config.eraser_timeout;
    let runs = parts.erasers.iter().map(|eraser| {
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
