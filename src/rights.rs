//! The user's rights, as the bot and its commands exercise them: what the store holds
//! about one user (`status`), a copy of it with the bot's own data (`export`, `/mydata`),
//! an erasure now (`erase_user`, `/removemydata`) or one scheduled for the pruners
//! (`schedule_opt_out`), and the receipts that prove an erasure (`receipts`).

use chrono::{DateTime, Utc};
use teloxide::types::UserId;
use tokio::time::timeout;

use crate::clock::{duration_ms, to_datetime};
use crate::engine::Finished;
use crate::erase::{ErasureReason, Export};
use crate::error::Result;
use crate::parts::Parts;
use crate::receipts::{Receipt, ReceiptKey};
use crate::store::{ClaimUser, Confirmed, Job, Marked, ScheduleRequest, random_id};

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
    /// When the census (or a confirmation) last probed the user, if it did (see
    /// [`Census`](crate::Census)).
    pub last_probed: Option<DateTime<Utc>>,
    /// When a probe last found the user reachable, if one did.
    pub last_reachable: Option<DateTime<Utc>>,
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

/// How long finding a user's receipts may take: it reads every receipt of the shards.
const RECEIPT_SCAN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// What the store holds about `user`; see `Retention::status`.
pub(crate) async fn status(parts: &Parts, user: UserId) -> Result<UserStatus> {
    let raw = parts.door.call(|b| b.status(user.0)).await?;
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
    let (probed, reachable) = raw.probes.unwrap_or((0, 0));
    Ok(UserStatus {
        user,
        last_seen: raw.last_seen.map(to_datetime),
        erasure,
        last_probed: (probed > 0).then(|| to_datetime(probed)),
        last_reachable: (reachable > 0).then(|| to_datetime(reachable)),
    })
}

/// Erases `user` now as an opt-out; see `Retention::erase_user`. The erasure walks one
/// way: this process's interactions of the user go to the store from here on (so that the
/// finish sees them), the store claims the user, and the engine erases, finishes and tells
/// the tracker.
pub(crate) async fn erase_user(parts: &Parts, user: UserId) -> Result<OptOutOutcome> {
    check_user(user)?;
    let erasing = parts.tracker.begin_erasure(user.0);
    let times = parts.claim_times();
    let request =
        ClaimUser { user: user.0, reason: ErasureReason::OptOut, times, batch: random_id() };
    let Some(batch) = parts.door.call(|b| b.claim_user(request)).await? else {
        return Ok(OptOutOutcome::AlreadyRunning);
    };
    // From here on the erasure is durable: if anything below fails, the batch's lease
    // expires and the pruner finishes the erasure.
    let unfinished =
        |what: &str, why: String| OptOutOutcome::Retrying { failed: vec![(what.to_owned(), why)] };
    Ok(match crate::engine::erase(parts, &batch, Some(erasing)).await {
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

/// The export document of `user`; see `Retention::export`. With `texts` (the `/mydata`
/// command, in the user's language), each eraser's entry is labelled with its
/// user-facing description and the notes are in that language; without, with the
/// erasers' names and English notes, for the bot's own use.
pub(crate) async fn export(
    parts: &Parts,
    user: UserId,
    texts: Option<&ExportTexts<'_>>,
) -> Result<serde_json::Value> {
    use serde_json::json;
    let status = status(parts, user).await?;
    let generated = to_datetime(parts.clock.now_ms());
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
    let limit = parts.config.eraser_timeout;
    let label = |name: &str| match texts {
        Some(t) => t.descriptions.get(name).map_or(t.undescribed, String::as_str).to_owned(),
        None => name.to_owned(),
    };
    let no_copy = texts.map_or("held, no export", |t| t.no_copy);
    let exports = futures_util::future::join_all(parts.erasers.iter().map(|eraser| async move {
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
    let mut copy = json!({
        "user_id": user.0,
        "generated_at": generated.to_rfc3339(),
        "retention": {
            "status": state,
            "last_seen": status.last_seen.map(|t| t.to_rfc3339()),
            "erasure": erasure,
            "note": note,
        },

        "policy": {
            "inactive_after_days": parts.config.inactive_after.as_secs_f64() / 86_400.0,
        },
        "bot_data": exports,
    });
    // What the census keeps, once it has probed the user.
    if let Some(probed) = status.last_probed {
        copy["retention"]["last_probed"] = json!(probed.to_rfc3339());
        copy["retention"]["last_reachable"] = json!(status.last_reachable.map(|t| t.to_rfc3339()));
    }
    Ok(copy)
}

/// Schedules an opt-out erasure of `user`, due now, for the pruners to carry out.
pub(crate) async fn schedule_opt_out(parts: &Parts, user: UserId) -> Result<Marked> {
    check_user(user)?;
    // A tool on another machine: its clock is corrected by Redis's, as the bots' are.
    parts.sync_clock().await;
    let now = parts.clock.now_ms();
    let request = ScheduleRequest {
        user: user.0,
        reason: ErasureReason::OptOut,
        marked_at: now,
        due: Some(now),
    };
    parts.door.call(|b| b.schedule(request)).await
}

/// The receipts of `user` under `key` (see [`crate::RetentionBuilder::receipts`]),
/// oldest first; receipts older than the configured lifetime are left out.
pub(crate) async fn receipts(
    parts: &Parts,
    user: UserId,
    key: &ReceiptKey,
) -> Result<Vec<Receipt>> {
    let keep_ms = parts.config.receipts.as_ref().map_or(i64::MAX, |r| duration_ms(r.keep));
    let tag = key.tag(user);
    let now = parts.clock.now_ms();
    // Reading a long stream page by page takes longer than one store call.
    let found =
        parts.door.call_within(RECEIPT_SCAN_TIMEOUT, |b| b.receipts(&tag, now, keep_ms)).await?;
    Ok(found.into_iter().map(Receipt::from).collect())
}

/// Refuses an id the store cannot hold as a user ([`Error::InvalidUser`]).
fn check_user(user: UserId) -> Result<()> {
    if crate::humans::is_user_id(user.0) { Ok(()) } else { Err(crate::Error::InvalidUser(user.0)) }
}
