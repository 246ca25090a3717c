//! A picture of a namespace for the people who run the bot: how many users it holds, how
//! long since they were last seen, what is due, scheduled, failing, and who writes.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::clock::{duration_ms, to_datetime};
use crate::erase::ErasureReason;
use crate::error::Result;
use crate::parts::Parts;
use crate::store::SeenRange;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// What a namespace holds, counted at one moment (see [`Retention::survey`]).
///
/// [`Retention::survey`]: crate::Retention::survey
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Survey {
    /// When the counts were taken (the `Retention`'s clock, corrected by Redis's `TIME` as
    /// the pruner's is).
    pub taken_at: DateTime<Utc>,
    /// The inactivity threshold the counts are relative to.
    pub inactive_after: Duration,
    /// Users tracked.
    pub tracked: u64,
    /// Users by time since their last interaction, youngest first; the last bucket is
    /// everyone past the threshold.
    pub inactivity: Vec<InactivityBucket>,
    /// Users past the threshold, whom the next passes erase for inactivity (the pruner's
    /// cutoff adds the resolution; a writer's heartbeat may hold inactivity erasures back).
    /// Users a running notice holds are not counted here but in `held_by_notices`.
    pub due_now: u64,
    /// Users past the threshold whom a running adoption notice holds (see
    /// [`Adoption::not_before`](crate::Adoption::not_before)): erased once it ends.
    pub held_by_notices: u64,
    /// The adoption notices running now, earliest end first.
    pub notices: Vec<NoticeStatus>,
    /// Users who become due within a day from now (not counting `due_now`): they cross the
    /// threshold, or a notice that holds them ends.
    pub due_within_day: u64,
    /// Users who become due within a week from now (not counting `due_now`), as
    /// `due_within_day`.
    pub due_within_week: u64,
    /// Scheduled erasures (gone marks, opt-outs, retries) by reason, due or not, with any
    /// that is running now.
    pub scheduled: Vec<(ErasureReason, u64)>,
    /// Scheduled erasures due now.
    pub scheduled_due: u64,
    /// Erasures whose last attempt failed (they are retried).
    pub failing: u64,
    /// Failing erasures that have failed for longer than `stuck_after` (see
    /// [`RetentionBuilder::stuck_after`](crate::RetentionBuilder::stuck_after)).
    pub stuck: u64,
    /// When the longest-failing erasure first failed.
    pub oldest_failing_since: Option<DateTime<Utc>>,
    /// The most failed attempts of any scheduled erasure.
    pub max_failed_attempts: u32,
    /// The processes that record interactions, by their last heartbeat.
    pub writers: Vec<WriterHeartbeat>,
    /// Where the census stands (see [`Census`](crate::Census)).
    pub census: CensusProgress,
}

/// An adoption notice that runs (see [`Adoption::not_before`](crate::Adoption::not_before)):
/// until `until`, no user last seen at or before `quiet_since` is erased for inactivity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct NoticeStatus {
    /// Users last seen at or before this time (the adoption) are held.
    pub quiet_since: DateTime<Utc>,
    /// The notice's date.
    pub until: DateTime<Utc>,
}

/// Where the census stands, in a [`Survey`] or from
/// [`Retention::census_estimate`](crate::Retention::census_estimate).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct CensusProgress {
    /// Tracked users the census keeps a probe time of (probed at least once).
    pub probed_users: u64,
    /// Idle users the current round has walked past (0 between rounds).
    pub round_walked: u64,
    /// Users idle long enough to be probed (`None`: no census settings to count with).
    pub idle_users: Option<u64>,
    /// At most how long a whole round of `idle_users` takes at the probes' pace
    /// (users probed within `Census::every` are passed without a probe).
    pub round_takes: Option<Duration>,
    /// At most how long the current round still takes at that pace.
    pub round_left: Option<Duration>,
}

/// Users whose last interaction was between `from` and `to` ago.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InactivityBucket {
    /// The bucket's start (inclusive).
    pub from: Duration,
    /// The bucket's end (exclusive); `None` for the last bucket, past the threshold.
    pub to: Option<Duration>,
    /// Users in the bucket.
    pub users: u64,
}

impl InactivityBucket {
    /// A short name, such as `"1–7 d"`, `"30 d–threshold"` or `"past threshold"`.
    #[must_use]
    pub fn label(&self, threshold: Duration) -> String {
        match self.to {
            None => "past threshold".to_owned(),
            Some(to) if self.from.is_zero() => format!("< {}", span(to, threshold)),
            Some(to) if to == threshold => format!("{}–threshold", span(self.from, threshold)),
            Some(to) => {
                let (from, to) = (span(self.from, threshold), span(to, threshold));
                // "1–7 d" rather than "1 d–7 d".
                let from = match from.strip_suffix(" d") {
                    Some(days) if to.ends_with(" d") => days.to_owned(),
                    _ => from,
                };
                format!("{from}–{to}")
            }
        }
    }
}

/// `3 d`, `12 h`, `90 s`, or `threshold`.
fn span(d: Duration, threshold: Duration) -> String {
    let secs = d.as_secs();
    if d == threshold {
        "threshold".to_owned()
    } else if secs.is_multiple_of(86_400) {
        format!("{} d", secs / 86_400)
    } else if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        format!("{secs} s")
    }
}

/// One process that records interactions, as its heartbeat says.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct WriterHeartbeat {
    /// The process's id (random per process).
    pub id: String,
    /// Its last heartbeat (by Redis's clock on Redis).
    pub last_beat: DateTime<Utc>,
    /// Interactions it holds but has not written (an outage backlog).
    pub unwritten: u64,
}

/// The bucket edges: 1 day, 7 days, 30 days and the threshold, those below it.
fn edges(threshold: Duration) -> Vec<Duration> {
    let mut edges: Vec<Duration> =
        [Duration::ZERO, DAY, 7 * DAY, 30 * DAY].into_iter().filter(|e| *e < threshold).collect();
    edges.push(threshold);
    edges
}

pub(crate) async fn survey(parts: &Parts) -> Result<Survey> {
    let census = match (&parts.config.census, &parts.config.probes) {
        (Some(census), Some(probes)) => Some((census.idle_for, probes.interval)),
        _ => None,
    };
    survey_with(parts, census).await
}

/// The survey, with the census's progress counted for users idle `idle_for`, probed one per
/// `interval`.
pub(crate) async fn survey_with(
    parts: &Parts,
    census: Option<(Duration, Duration)>,
) -> Result<Survey> {
    // Ages are measured against Redis's clock, as the pruner's are.
    let now = parts.store_now_ms().await;
    let threshold = parts.config.inactive_after;
    let t = duration_ms(threshold);
    let edges = edges(threshold);
    // Inactivity in [lo, hi) is a last interaction in (now - hi, now - lo]; the youngest
    // bucket also takes times ahead of this clock, the oldest everything before.
    let range = |after, up_to| SeenRange { after, up_to };
    let mut ranges: Vec<SeenRange> = edges
        .windows(2)
        .map(|w| {
            let up_to = if w[0].is_zero() { i64::MAX } else { now - duration_ms(w[0]) };
            range(now - duration_ms(w[1]), up_to)
        })
        .collect();
    ranges.push(range(i64::MIN, now - t));
    // Users due at a time: past the threshold then, above what the notices running then
    // hold (a notice only ends, so a user due at the end of a window stays due).
    let mut notices = parts.door.call(|b| b.notices()).await?;
    notices.retain(|n| n.until > now);
    notices.sort_by_key(|n| (n.until, n.seen_by));
    let past = now - t;
    let due_at = |later: i64| {
        let held = crate::store::held_through(&notices, now + later);
        range(held.unwrap_or(i64::MIN), past + later)
    };
    ranges.extend([due_at(0), due_at(duration_ms(DAY)), due_at(duration_ms(7 * DAY))]);
    if let Some((idle_for, _)) = census {
        ranges.push(range(i64::MIN, now.saturating_sub(duration_ms(idle_for))));
    }
    let raw = parts.door.call(|b| b.survey(now, &ranges)).await?;
    let idle_users = census.and_then(|_| raw.seen.get(edges.len() + 3).copied());
    let pace = |users: u64| {
        census
            .map(|(_, interval)| interval.saturating_mul(u32::try_from(users).unwrap_or(u32::MAX)))
    };
    let census = CensusProgress {
        probed_users: raw.census_probed,
        round_walked: raw.census_walked,
        idle_users,
        round_takes: idle_users.and_then(pace),
        round_left: idle_users.and_then(|idle| pace(idle.saturating_sub(raw.census_walked))),
    };
    let stuck_ms = duration_ms(parts.config.stuck_after);
    let (buckets, due) = raw.seen.split_at(edges.len());
    let past_threshold = buckets.last().copied().unwrap_or(0);
    let due_now = due.first().copied().unwrap_or(0);
    let due_by = |i: usize| due.get(i).copied().unwrap_or(0).saturating_sub(due_now);
    let inactivity: Vec<InactivityBucket> = buckets
        .iter()
        .enumerate()
        .map(|(i, users)| InactivityBucket {
            from: edges[i],
            to: edges.get(i + 1).copied(),
            users: *users,
        })
        .collect();
    Ok(Survey {
        taken_at: to_datetime(now),
        inactive_after: threshold,
        tracked: inactivity.iter().map(|b| b.users).sum(),
        due_now,
        held_by_notices: past_threshold.saturating_sub(due_now),
        notices: notices
            .iter()
            .map(|n| NoticeStatus {
                quiet_since: to_datetime(n.seen_by),
                until: to_datetime(n.until),
            })
            .collect(),
        due_within_day: due_by(1),
        due_within_week: due_by(2),
        inactivity,
        scheduled: ErasureReason::ALL.iter().map(|r| (*r, raw.scheduled[r.index()])).collect(),
        scheduled_due: raw.scheduled_due,
        failing: raw.failing_since.len() as u64,
        stuck: raw.failing_since.iter().filter(|since| now - **since >= stuck_ms).count() as u64,
        oldest_failing_since: raw.failing_since.iter().min().map(|s| to_datetime(*s)),
        max_failed_attempts: raw.max_attempts,
        writers: raw
            .writers
            .into_iter()
            .map(|beat| WriterHeartbeat {
                id: beat.writer,
                last_beat: to_datetime(beat.at),
                unwritten: beat.backlog,
            })
            .collect(),
        census,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_follow_the_threshold() {
        let labels = |t: Duration| -> Vec<String> {
            let e = edges(t);
            let mut buckets: Vec<InactivityBucket> = e
                .windows(2)
                .map(|w| InactivityBucket { from: w[0], to: Some(w[1]), users: 0 })
                .collect();
            buckets.push(InactivityBucket { from: t, to: None, users: 0 });
            buckets.iter().map(|b| b.label(t)).collect()
        };
        assert_eq!(
            labels(90 * DAY),
            ["< 1 d", "1–7 d", "7–30 d", "30 d–threshold", "past threshold"]
        );
        assert_eq!(labels(7 * DAY), ["< 1 d", "1 d–threshold", "past threshold"]);
        assert_eq!(labels(DAY / 2), ["< threshold", "past threshold"]);
    }
}
