//! Adoption: putting the users a bot already held before it installed the crate on a clock.

use chrono::{DateTime, Utc};
use teloxide::types::UserId;

use crate::clock::duration_ms;
use crate::engine::Engine;
use crate::error::Result;
use crate::store::Adoptee;

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
    /// No adopted user is erased for inactivity before this time.
    pub not_before: Option<DateTime<Utc>>,
}

impl Adoption {
    /// Adopts with the times given; an adopted user past the threshold is due at once.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// No adopted user is erased for inactivity before `date`, so that the bot can announce
    /// its policy first: each adopted user's time is moved forward (never back) to
    /// `date - inactive_after` where it is earlier, which makes them due at `date` at the
    /// earliest. Their status and `/mydata` show that time as their last interaction.
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
}

impl Adopted {
    /// Users given or now holding a time: newly tracked, moved forward or kept.
    #[must_use]
    pub fn tracked(&self) -> u64 {
        self.newly_tracked + self.moved_forward + self.kept
    }
}

/// Adopts `users`; see `Retention::adopt`.
pub(crate) async fn adopt<I>(engine: &Engine, users: I, options: &Adoption) -> Result<Adopted>
where
    I: IntoIterator<Item = (UserId, Option<DateTime<Utc>>)>,
{
    // A tool on another machine: its clock is corrected by the store's, as the bots' are.
    let now = engine.store_now_ms().await;
    let floor = options.not_before.map(|date| {
        date.timestamp_millis().saturating_sub(duration_ms(engine.config().inactive_after))
    });
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
        // A time in the future counts as now; none starts the clock now, for a user not
        // tracked yet only (adopting again never restarts a clock).
        let mut ms = last_active.map_or(now, |t| t.timestamp_millis().min(now));
        if let Some(floor) = floor {
            ms = ms.max(floor);
        }
        chunk.push(Adoptee { user: user.0, ms, if_new: last_active.is_none() });
        if chunk.len() == CHUNK {
            write(engine, &chunk, &mut adopted).await?;
            chunk.clear();
        }
    }
    write(engine, &chunk, &mut adopted).await?;
    Ok(adopted)
}

async fn write(engine: &Engine, chunk: &[Adoptee], adopted: &mut Adopted) -> Result<()> {
    if chunk.is_empty() {
        return Ok(());
    }
    let counts = engine.store(|b| b.adopt(chunk)).await?;
    adopted.newly_tracked += counts.new;
    adopted.moved_forward += counts.moved;
    adopted.kept += counts.kept;
    adopted.erasing += counts.erasing;
    Ok(())
}
