//! Adoption: putting the users a bot already held before it installed the crate on a clock.

use chrono::{DateTime, Utc};
use teloxide::types::UserId;

use crate::error::Result;
use crate::parts::Parts;
use crate::store::{Adoptee, Notice};

/// Users per store call while adopting: the same bound as interactions (`INTERACTION_CHUNK`).
const CHUNK: usize = 500;

/// How to adopt users; see [`Retention::adopt`](crate::Retention::adopt).
///
/// Telegram gives a bot no list of its users, and the users who deleted their chat never
/// write again, so the layer alone never tracks them. A bot adopts them from its own data
/// (its user table, the newest order per user, ...), with the last activity it knows:
///
/// ```
/// use std::time::Duration;
/// use chrono::{TimeZone, Utc};
/// use teloxide::types::UserId;
/// use teloxide_retention::{Adoption, MemoryStore, Retention};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), teloxide_retention::Error> {
/// let retention = Retention::builder(MemoryStore::new())
///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
///     .build()?;
/// // From the bot's table: (user, last activity if known).
/// let users = [
///     (UserId(7), Some(Utc.with_ymd_and_hms(2025, 1, 2, 3, 4, 5).unwrap())),
///     (UserId(8), None), // unknown: their clock starts now
///     (UserId(777_000), None), // Telegram's service account: refused
/// ];
/// let adopted = retention.adopt(users, &Adoption::new()).await?;
/// assert_eq!((adopted.newly_tracked, adopted.refused_service_accounts), (2, 1));
/// # Ok(()) }
/// ```
///
/// A tracked time only moves forward, so adopting again changes nothing, and a user whose
/// erasure is scheduled or running is left as they are (an opted-out user is never tracked
/// again by adoption). Look at [`Retention::preview`](crate::Retention::preview) before the
/// first pass: it may erase most of an old base at once; [`Adoption::not_before`] gives
/// users a notice period first.
///
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Adoption {
    /// No adopted user is erased for inactivity before this time (see
    /// [`not_before`](Self::not_before)).
    pub not_before: Option<DateTime<Utc>>,
}

impl Adoption {
    /// Adopts with the times given; an adopted user past the threshold is due at once.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// No adopted user is erased for inactivity before `date`, so that the bot can announce
    /// its policy first. The notice is a rule of its own, kept in the store beside the
    /// users: until `date`, no user last seen at or before the adoption is erased for
    /// inactivity (the adopted users, and anyone quiet since before it). Adopted users keep
    /// the last activity given, so their status and `/mydata` show what is true, and no
    /// stored time is ever later than now.
    ///
    /// Other erasures go on during the notice: an opt-out, a gone user after the grace (a
    /// block during the notice is no return), a user who interacts after the adoption and
    /// then stays away for the threshold. Once `date` passes, the users it held and idle
    /// past the threshold are due at once ([`Retention::preview`](crate::Retention::preview)
    /// shows them then).
    ///
    /// A date in the past gives no notice. A date more than a year ahead is refused with
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument), writing nothing: a notice
    /// that long keeps data no longer needed (and is often milliseconds read as seconds).
    /// Up to 64 notices run at once in a namespace; a stored notice this version cannot read
    /// holds every inactivity erasure until
    /// [`Retention::end_notices`](crate::Retention::end_notices).
    #[must_use]
    pub fn not_before(mut self, date: DateTime<Utc>) -> Self {
        self.not_before = Some(date);
        self
    }
}

/// What [`Retention::adopt`](crate::Retention::adopt) did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Adopted {
    /// Users not tracked before, now tracked.
    pub newly_tracked: u64,
    /// Users tracked with an earlier time, moved forward to the adopted one.
    pub moved_forward: u64,
    /// Users tracked with this time or a later one: unchanged.
    pub kept: u64,
    /// Users with an erasure scheduled or running: left as they are.
    pub erasing: u64,
    /// Telegram's service accounts (777000, `GroupAnonymousBot`, `Channel_Bot`): refused,
    /// as the layer refuses them.
    pub refused_service_accounts: u64,
    /// Ids that are no user id (0, or above 2^53 - 1): refused.
    pub refused_invalid_ids: u64,
    /// Users whose last activity cannot be true: before Telegram existed (2013), such as
    /// 0 written for "unknown", or more than a day after now, such as milliseconds read as
    /// seconds. Refused, so that a bad column neither erases users at once nor restarts
    /// their clocks; fix the times and adopt them again.
    pub refused_implausible_times: u64,
}

impl Adopted {
    /// Users given or now holding a time: newly tracked, moved forward or kept.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.newly_tracked + self.moved_forward + self.kept
    }
}

/// Adopts `users`; see `Retention::adopt`.
pub(crate) async fn adopt<I>(parts: &Parts, users: I, options: &Adoption) -> Result<Adopted>
where
    I: IntoIterator<Item = (UserId, Option<DateTime<Utc>>)>,
{
    // A tool on another machine: its clock is corrected by the store's, as the bots' are.
    let now = parts.store_now_ms().await;
    // Added before the first user is written (a claim that sees an adopted user sees the
    // notice), and only once there is one.
    let mut notice = match options.not_before {
        Some(date) => Some(notice_until(date, now)?).filter(|until| *until > now),
        None => None,
    }
    .map(|until| Notice { seen_by: now, until });
    let mut adopted = Adopted::default();
    let mut chunk = Vec::with_capacity(CHUNK);
    for (user, last_active) in users {
        if !crate::humans::is_user_id(user.0) {
            adopted.refused_invalid_ids += 1;
            continue;
        }
        if !crate::humans::is_trackable_id(user) {
            adopted.refused_service_accounts += 1;
            continue;
        }
        if last_active.is_some_and(|t| !plausible(t.timestamp_millis(), now)) {
            adopted.refused_implausible_times += 1;
            continue;
        }
        // A time in the future (within a day: clocks differ) counts as now; none starts
        // the clock now, for a user not tracked yet only (adopting again never restarts a
        // clock). No stored time is later than now.
        let ms = last_active.map_or(now, |t| t.timestamp_millis().min(now));
        chunk.push(Adoptee { user: user.0, ms, if_new: last_active.is_none() });
        if chunk.len() == CHUNK {
            write(parts, &chunk, &mut notice, &mut adopted).await?;
            chunk.clear();
        }
    }
    write(parts, &chunk, &mut notice, &mut adopted).await?;
    Ok(adopted)
}

/// 2013-08-14T00:00:00Z, the day Telegram launched: no user was active before it.
const TELEGRAM_LAUNCH_MS: i64 = 1_376_438_400_000;

/// A day: how far a last activity may lie ahead of now (another host's clock).
const AHEAD_MS: i64 = 24 * 3600 * 1000;

/// Whether a last activity (ms) can be true at `now`.
pub(crate) fn plausible(ms: i64, now: i64) -> bool {
    (TELEGRAM_LAUNCH_MS..=now.saturating_add(AHEAD_MS)).contains(&ms)
}

/// How far ahead a notice date may lie: a year (a day more for clocks that differ).
const NOTICE_MAX_MS: i64 = 366 * 24 * 3600 * 1000;

/// The end (ms) of a notice until `date`, refused if `date` is more than a year after
/// `now` (see [`Adoption::not_before`]).
fn notice_until(date: DateTime<Utc>, now: i64) -> Result<i64> {
    let until = date.timestamp_millis();
    if until > now.saturating_add(NOTICE_MAX_MS) {
        return Err(crate::Error::InvalidArgument(format!(
            "Adoption::not_before({date}) is more than a year ahead: a notice that long keeps \
             data no longer needed (a time in milliseconds read as seconds?); give users at \
             most a year of notice"
        )));
    }
    Ok(until)
}

async fn write(
    parts: &Parts,
    chunk: &[Adoptee],
    notice: &mut Option<Notice>,
    adopted: &mut Adopted,
) -> Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let now = parts.clock.claim_now();
    if let Some(pending) = *notice {
        parts.door.call(|b| b.add_notice(pending, now)).await?;
        *notice = None;
    }
    let counts = parts.door.call(|b| b.adopt(chunk, now)).await?;
    adopted.newly_tracked += counts.new;
    adopted.moved_forward += counts.moved;
    adopted.kept += counts.kept;
    adopted.erasing += counts.erasing;
    Ok(())
}
