//! The protocol every store implements: the [`Backend`] trait and a typed request and
//! reply per operation.
//!
//! Every operation is all-or-nothing on one store (one Lua script or one transaction on
//! Redis, one lock on the memory store), and none moves a user's last-seen time back.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::erase::ErasureReason;
use crate::error::Result;
use crate::receipts::{RawReceipt, ReceiptBatch};

/// One interaction to record: `user` was last seen at `at` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Interaction {
    pub(crate) user: u64,
    pub(crate) at: i64,
}

/// A user claimed for erasure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Claimed {
    pub(crate) user: u64,
    pub(crate) reason: ErasureReason,
    /// When the user was marked for erasure (0 for a claim for inactivity).
    pub(crate) marked_at: i64,
    /// Earlier failed attempts.
    pub(crate) attempts: u32,
}

impl Claimed {
    /// `user`, claimed with their scheduled erasure `job`.
    pub(crate) fn from_job(user: u64, Job { reason, marked_at, attempts }: Job) -> Self {
        Self { user, reason, marked_at, attempts }
    }
}

/// A time to store, no later than `now` (invariant 11: no stored time is later than the
/// store's now). `now` is the writer's claim clock when it has one (an injected clock, or
/// its estimate of the store's once measured), else the store's own: a writer whose clock
/// runs ahead and has not measured the store's yet never stores a future time.
/// `interactions.lua` and `adopt.lua` cap alike, at Redis's `TIME`.
pub(crate) fn no_later_than(ms: i64, now: i64) -> i64 {
    ms.min(now)
}

/// How many batches whose lease expired one claim takes over at most, before the due
/// queue and the inactive users (`claim.lua` writes the number out; a unit test pins it).
pub(crate) const EXPIRED_BATCHES_PER_CLAIM: usize = 16;

/// How many due entries beyond its limit a claim examines at most (users who came back
/// are dropped without counting): `claim.lua` writes the number out, and the probes of
/// the pruner (`pruner.rs`) preview as many.
pub(crate) const DUE_SCAN_SLACK: usize = 64;

/// A notice given by an adoption ([`Adoption::not_before`](crate::Adoption::not_before)):
/// until `until`, no user last seen at or before `seen_by` is erased for inactivity (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Notice {
    pub(crate) seen_by: i64,
    pub(crate) until: i64,
}

/// How many notices may run at once in a namespace (each adoption with a notice adds one;
/// one ends when its date passes).
pub(crate) const MAX_NOTICES: usize = 64;

impl Notice {
    /// What a part of the stored notices this version cannot read counts as: a notice that
    /// holds every user (2^53 ms, beyond any time) until the notices are ended, so that a
    /// value the crate did not write never lets an erasure through (`notices.lua` alike).
    pub(crate) const UNREADABLE: Self = Self { seen_by: 1 << 53, until: 1 << 53 };

    /// The notices stored as text (`seen_by:until,...`, as `notice.lua` and the SQL stores'
    /// `meta` keep them); a part that cannot be read is [`UNREADABLE`](Self::UNREADABLE).
    pub(crate) fn parse_all(text: &str) -> Vec<Self> {
        let parse = |part: &str| {
            let (seen_by, until) = part.split_once(':')?;
            Some(Self { seen_by: seen_by.parse().ok()?, until: until.parse().ok()? })
        };
        text.split(',')
            .filter(|part| !part.is_empty())
            .map(|part| parse(part).unwrap_or(Self::UNREADABLE))
            .collect()
    }

    /// The stored text of `notices` (see [`parse_all`](Self::parse_all)).
    pub(crate) fn format_all(notices: &[Self]) -> String {
        let parts: Vec<String> =
            notices.iter().map(|n| format!("{}:{}", n.seen_by, n.until)).collect();
        parts.join(",")
    }

    /// Whether `self` holds at least every user `other` holds, for at least as long.
    fn covers(self, other: Self) -> bool {
        self.seen_by >= other.seen_by && self.until >= other.until
    }

    /// The notices running at `now` with `self` added: a running notice that `self` covers
    /// goes, and `self` is not added if one covers it (an adoption in chunks, or run again,
    /// keeps one notice). `None` if `MAX_NOTICES` others run (`notice.lua` decides alike).
    pub(crate) fn added_to(self, stored: &[Self], now: i64) -> Option<Vec<Self>> {
        let mut running: Vec<Self> = stored.iter().copied().filter(|n| n.until > now).collect();
        if running.iter().any(|n| n.covers(self)) {
            return Some(running);
        }
        running.retain(|n| !self.covers(*n));
        if running.len() >= MAX_NOTICES {
            return None;
        }
        running.push(self);
        Some(running)
    }
}

/// The error of an adoption whose notice would be one more than [`MAX_NOTICES`].
pub(crate) fn too_many_notices() -> crate::error::Error {
    crate::error::Error::InvalidArgument(format!(
        "{MAX_NOTICES} adoption notices are running: wait until one ends, or adopt with the \
         date of a running one"
    ))
}

/// The latest last-seen time a running notice holds at `now`: users last seen at or before
/// it are not erased for inactivity yet (`None`: no notice runs). Claims and previews read
/// inactive users above it only; `notices.lua` decides alike.
pub(crate) fn held_through(notices: &[Notice], now: i64) -> Option<i64> {
    notices.iter().filter(|n| n.until > now).map(|n| n.seen_by).max()
}

/// The key of a privacy command's rate-limit counter: `action` by the user of `tag` in the
/// window numbered `window`.
pub(crate) fn rate_key(action: &str, tag: &str, window: i64) -> String {
    format!("rate:{action}:{tag}:{window}")
}

/// Users claimed together under one lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Batch {
    /// Random; names the batch in the store.
    pub(crate) id: u64,
    /// The lease deadline; it identifies this claim when the batch is finished.
    pub(crate) deadline: i64,
    pub(crate) users: Vec<Claimed>,
    /// Why users inactive past the cutoff were not claimed (a writer may hold unwritten
    /// interactions), if they were not.
    pub(crate) held: Option<String>,
    /// Values the claim could not read, left in place (each names its key and user).
    pub(crate) unreadable: Vec<String>,
    /// Users whose due gone mark the claim dropped because they came back.
    pub(crate) returned: Vec<u64>,
}

/// How a claim finds "now", the cutoff and the lease deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimTimes {
    /// "Now" in ms; `None`: the store's own clock (Redis `TIME`).
    pub(crate) now: Option<i64>,
    /// Users last seen at or before `now - inactive_ms` are inactive.
    pub(crate) inactive_ms: i64,
    /// The lease deadline is `now + lease_ms`.
    pub(crate) lease_ms: i64,
}

/// A claim of due erasures (see [`Backend::claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimRequest {
    pub(crate) times: ClaimTimes,
    pub(crate) writers: WriterWindow,
    /// At most this many users.
    pub(crate) limit: usize,
    /// The new batch's id ([`Batch::id`]).
    pub(crate) batch: u64,
}

/// A claim of one user for an immediate erasure (see [`Backend::claim_user`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ClaimUser {
    pub(crate) user: u64,
    pub(crate) reason: ErasureReason,
    /// "Now" and the lease; `inactive_ms` is unused.
    pub(crate) times: ClaimTimes,
    /// The new batch's id ([`Batch::id`]).
    pub(crate) batch: u64,
}

/// How writers' heartbeats hold back inactivity claims.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct WriterWindow {
    /// A writer without a heartbeat for longer than this may be cut off and buffering.
    pub(crate) silent_ms: i64,
    /// A writer without a heartbeat for longer than this counts as dead.
    pub(crate) dead_ms: i64,
}

/// What a store server says about its own safety; see [`Backend::health`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Health {
    /// The server's version as it reports it (`7.0.15`), when known.
    pub(crate) version: Option<String>,
    /// `maxmemory-policy`, when it could be read.
    pub(crate) eviction_policy: Option<String>,
    /// The `seen` set was lost after its marker was written (evicted or deleted).
    pub(crate) seen_vanished: bool,
    /// Why a crash could leave an operation half done (a SQLite file without a rollback
    /// journal), if it could: the pruner refuses to run.
    pub(crate) not_atomic: Option<String>,
}

/// The result of finishing one erased user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Confirmed {
    /// The user's entries are gone.
    Erased,
    /// Erased, but the user interacted while erasers ran: a follow-up opt-out erasure is
    /// queued.
    ErasedWithFollowUp,
}

/// When a failing erasure counts as stuck, and how often a stuck one is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StuckWindow {
    /// Failing for this long (ms) makes an erasure stuck.
    pub(crate) after_ms: i64,
    /// A stuck erasure is reported at most once per this (ms).
    pub(crate) every_ms: i64,
}

/// A claimed user whose erasure failed, given back to the queue due at `due` (ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Retry {
    pub(crate) claimed: Claimed,
    pub(crate) due: i64,
}

/// The end of a batch (see [`Backend::finish`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FinishRequest<'a> {
    pub(crate) batch: &'a Batch,
    /// Users whose erasers all succeeded.
    pub(crate) done: &'a [Claimed],
    /// Users with a failed eraser.
    pub(crate) failed: &'a [Retry],
    pub(crate) now: i64,
    /// When a follow-up erasure of a user who interacted while erasers ran is due.
    pub(crate) follow_up_at: i64,
    /// When failing erasures are stuck.
    pub(crate) stuck: StuckWindow,
    /// The receipts to write (`None`: receipts are off).
    pub(crate) receipts: Option<&'a ReceiptBatch>,
}

/// A failed user's erasure as the store now records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Failing {
    /// Since when (ms) the erasure has been failing.
    pub(crate) since: i64,
    /// It is stuck and to be reported now (once per period across every process).
    pub(crate) report: bool,
}

/// What finishing a batch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Finish {
    /// One per confirmed user.
    pub(crate) confirmed: Vec<Confirmed>,
    /// One per failed user.
    pub(crate) failing: Vec<Failing>,
}

/// The erasure queue of a namespace: scheduled and failing erasures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Queued {
    /// Scheduled erasures (gone marks, opt-outs, retries), due or not.
    pub(crate) scheduled: u64,
    /// Erasures whose last attempt failed.
    pub(crate) failing: u64,
    /// When the longest-failing of them first failed (ms).
    pub(crate) oldest_failing_since: Option<i64>,
}

/// Counts over a namespace for operators (see [`crate::Survey`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawSurvey {
    /// Users whose last interaction is in each of the asked ranges.
    pub(crate) seen: Vec<u64>,
    /// Scheduled (or running) erasures by reason ([`ErasureReason::index`]).
    pub(crate) scheduled: [u64; ErasureReason::ALL.len()],
    /// Scheduled erasures due at or before the survey's time.
    pub(crate) scheduled_due: u64,
    /// Since when (ms) each failing erasure fails.
    pub(crate) failing_since: Vec<i64>,
    /// The most failed attempts of any scheduled erasure.
    pub(crate) max_attempts: u32,
    /// Writers' heartbeats.
    pub(crate) writers: Vec<Heartbeat>,
    /// Users the census keeps a probe time of.
    pub(crate) census_probed: u64,
    /// Users the census's walk passed in its current round (0 between rounds).
    pub(crate) census_walked: u64,
}

/// A writer's last heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) writer: String,
    /// When (ms, the store's clock).
    pub(crate) at: i64,
    /// Interactions it held unwritten.
    pub(crate) backlog: u64,
}

/// Users last seen in `(after, up_to]` (ms), for a survey.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SeenRange {
    pub(crate) after: i64,
    pub(crate) up_to: i64,
}

/// An erasure to schedule (see [`Backend::schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ScheduleRequest {
    pub(crate) user: u64,
    pub(crate) reason: ErasureReason,
    pub(crate) marked_at: i64,
    /// When it is due (`None`: never, a mark only).
    pub(crate) due: Option<i64>,
}

/// A gone mark to cancel or postpone (see [`Backend::unschedule_gone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unschedule {
    pub(crate) user: u64,
    /// Only while the user's scheduled erasure is exactly this job (a probe's answer is
    /// about the mark it probed); `None`: whatever gone mark is scheduled.
    pub(crate) only: Option<Job>,
    /// `None`: cancel the mark; `Some(due)`: keep it, due at `due` (ms) instead.
    pub(crate) postpone_to: Option<i64>,
}

impl Unschedule {
    /// Cancels whatever gone mark `user` has (they unblocked the bot).
    pub(crate) fn any(user: u64) -> Self {
        Self { user, only: None, postpone_to: None }
    }
}

/// A step of the census's walk over idle users (see [`Backend::census_walk`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CensusWalk {
    /// Users last seen at or before this (ms) are idle enough to probe.
    pub(crate) idle_up_to: i64,
    /// Users probed at or after this (ms) are not probed again.
    pub(crate) probed_since: i64,
    /// Idle users to walk past at most (each probed or skipped).
    pub(crate) limit: usize,
}

/// What a step of the census's walk found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct CensusPage {
    /// Idle users to probe: tracked, without a scheduled or running erasure, not probed
    /// since the walk's `probed_since`; in the walk's order (longest idle first).
    pub(crate) users: Vec<u64>,
    /// Idle users walked past (probed or not).
    pub(crate) walked: u64,
    /// The walk reached the last idle user: the round is complete, and the next walk
    /// starts a new one.
    pub(crate) round_done: bool,
}

/// One answer the census got (see [`Backend::census_record`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CensusAnswer {
    pub(crate) user: u64,
    /// Telegram accepted the probe (else it said the user is gone).
    pub(crate) reachable: bool,
}

/// Where the census's walk stands, as the store keeps it: the last interaction time the
/// walk reached, and how many users with exactly that time it walked past. It names no
/// user, so that no key or row keeps an erased user's id.
pub(crate) fn census_cursor(raw: Option<&str>) -> (i64, u64) {
    raw.and_then(|r| {
        let (at, skip) = r.split_once(',')?;
        Some((at.parse().ok()?, skip.parse().ok()?))
    })
    .unwrap_or((i64::MIN, 0))
}

/// The cursor after a step that walked `times` (the last interaction times of the users
/// it walked, in order) from `(at, skip)`.
pub(crate) fn census_next(at: i64, skip: u64, times: &[i64]) -> (i64, u64) {
    let Some(&last) = times.last() else { return (at, skip) };
    let same = times.iter().rev().take_while(|&&t| t == last).count() as u64;
    if last == at { (at, skip + same) } else { (last, same) }
}

/// A scheduled or running erasure as the store records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub(crate) reason: ErasureReason,
    /// When the user was marked (0 for inactivity).
    pub(crate) marked_at: i64,
    /// Earlier failed attempts.
    pub(crate) attempts: u32,
}

impl Job {
    /// What a user claimed for inactivity carries: no mark, no attempts.
    pub(crate) const INACTIVE: Job =
        Job { reason: ErasureReason::Inactive, marked_at: 0, attempts: 0 };

    /// A new opt-out marked at `at`.
    pub(crate) fn opt_out(at: i64) -> Job {
        Job { reason: ErasureReason::OptOut, marked_at: at, attempts: 0 }
    }
}

/// Whether a user with a scheduled erasure `job` came back: they interacted after they
/// were marked (`last_seen` is their time in `seen`). An opt-out never comes back; an
/// erasure without a mark (inactivity, a dead pruner's batch) does as soon as the user is
/// tracked again. The one rule behind `came_back` in `claim.lua` and `preview.lua`, the
/// memory store and the tracker.
pub(crate) fn came_back(job: Job, last_seen: Option<i64>) -> bool {
    job.reason != ErasureReason::OptOut
        && last_seen.is_some_and(|seen| job.marked_at == 0 || seen > job.marked_at)
}

/// What a claim does with a user of a due scheduled erasure or of a dead pruner's batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Claimed into the new batch.
    Take,
    /// The user came back: the erasure is dropped.
    Drop,
    /// Left where it is: an erasure for inactivity while writers may hold unwritten
    /// interactions (one of them may be the user's return).
    Hold,
}

/// The claim's decision for a user with `job` (see [`Decision`]): `last_seen` is their time in
/// `seen`, `writers_hold` whether a writer may hold unwritten interactions. An erasure for
/// inactivity waits for the writers wherever it comes from (`seen`, or the queue: a retry,
/// a residue the audit found): the user's last interaction may not be written yet. Gone
/// users and opt-outs are not held, nor a dead pruner's batch (decided when nothing held:
/// its takeover passes `false`). The rule behind `take_or_drop` in `claim.lua`, the memory
/// store and the SQL stores.
pub(crate) fn take_or_drop(job: Job, last_seen: Option<i64>, writers_hold: bool) -> Decision {
    if came_back(job, last_seen) {
        Decision::Drop
    } else if writers_hold && job.reason == ErasureReason::Inactive {
        Decision::Hold
    } else {
        Decision::Take
    }
}

/// Whether finishing an erased user queues a follow-up opt-out erasure (due after the
/// follow-up delay): their erasure is an opt-out now (`job`, the reason the store records)
/// and either they interacted while the erasers ran (`interacted`: they are in `seen`
/// again, and the update's handler may have written data after the erasers) or the opt-out
/// took over an erasure claimed for another reason (`claimed`), whose erasers never saw
/// that it is one. The rule behind `finish.lua`, the memory store and the SQL stores.
pub(crate) fn follow_up(job: ErasureReason, claimed: ErasureReason, interacted: bool) -> bool {
    job == ErasureReason::OptOut && (interacted || claimed != ErasureReason::OptOut)
}

/// When a queued erasure for inactivity that a claim holds back becomes due again: one
/// silent window later (three heartbeats), so that the queue's head moves on and gone users
/// and opt-outs behind it are claimed while writers hold (`postponed` in `claim.lua`).
pub(crate) fn postponed(now: i64, writers: WriterWindow) -> i64 {
    now.saturating_add(writers.silent_ms.max(1))
}

/// What scheduling an erasure of a user did: the answer of
/// [`Retention::schedule_opt_out`](crate::Retention::schedule_opt_out), and of the store
/// to every mark (a gone mark, a follow-up).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Marked {
    /// Newly scheduled, or an earlier gone mark upgraded to an opt-out.
    Scheduled,
    /// An erasure was already scheduled; it is kept as it was.
    AlreadyScheduled,
    /// The user is being erased right now; for an opt-out, the running erasure counts as
    /// one.
    AlreadyRunning,
}

/// What the store holds about one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct RawStatus {
    pub(crate) last_seen: Option<i64>,
    /// Scheduled erasure: due time (`None` = never, mark only).
    pub(crate) queued_due: Option<Option<i64>>,
    pub(crate) leased_until: Option<i64>,
    /// A scheduled or running erasure.
    pub(crate) job: Option<Job>,
    /// What the census keeps: (last probed, last found reachable; 0 if never), ms.
    pub(crate) probes: Option<(i64, i64)>,
}

/// A read-only view of what the next pass would claim.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RawPreview {
    pub(crate) inactive_total: u64,
    pub(crate) due_total: u64,
    pub(crate) expired_leases: u64,
    pub(crate) entries: Vec<PreviewEntry>,
}

/// One user a claim would take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PreviewEntry {
    pub(crate) user: u64,
    pub(crate) reason: ErasureReason,
    /// When the user was marked (0 if not).
    pub(crate) marked_at: i64,
    pub(crate) last_seen: Option<i64>,
    /// Listed as a due scheduled erasure (else as a user inactive past the cutoff).
    pub(crate) queued: bool,
    /// Earlier failed attempts of the erasure.
    pub(crate) attempts: u32,
}

impl PreviewEntry {
    /// `user` with their scheduled erasure `job` (or [`Job::INACTIVE`]), listed from the due
    /// queue (`queued`) or as inactive.
    pub(crate) fn new(user: u64, job: Job, last_seen: Option<i64>, queued: bool) -> Self {
        let Job { reason, marked_at, attempts } = job;
        Self { user, reason, marked_at, last_seen, queued, attempts }
    }
}

/// An erasure (or gone mark) announced to every process sharing the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Invalidation {
    pub(crate) user: u64,
    /// Interactions at or after this time must be written again.
    pub(crate) since: i64,
    /// The end of the erasure window (equal to `since` for a gone mark).
    pub(crate) until: i64,
    /// The erasure was an opt-out: interactions inside the window need a follow-up.
    pub(crate) opt_out: bool,
}

/// Invalidations read from the feed, and the cursor after them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FeedPage {
    pub(crate) entries: Vec<Invalidation>,
    pub(crate) cursor: String,
    /// The cursor named another layout than the one read (a reshard under the reader): the
    /// feeds were read from their start, and what the old ones held since the last read may
    /// be lost.
    pub(crate) restarted: bool,
}

/// The latest erasure that a user's receipts record (see [`Backend::erased_as`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LastErasure {
    pub(crate) reason: ErasureReason,
    /// When the erasure was confirmed (ms).
    pub(crate) at: i64,
}

impl LastErasure {
    /// The later of two (`None` is older than any).
    pub(crate) fn latest(a: Option<Self>, b: Option<Self>) -> Option<Self> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.at > a.at { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

/// A user as key names see them: a keyed hash of the id (`tag`, see
/// `Parts::hashed`), never the id, so that no key name keeps a raw user id. `user` only
/// picks the user's shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Hashed {
    pub(crate) user: u64,
    pub(crate) tag: String,
}

/// A user to adopt (see `Backend::adopt`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Adoptee {
    pub(crate) user: u64,
    pub(crate) ms: i64,
    /// The bot knew no time: `ms` applies only if the user is not tracked yet.
    pub(crate) if_new: bool,
}

/// What adopting users did (see `Backend::adopt`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AdoptCounts {
    /// Not tracked before.
    pub(crate) new: u64,
    /// Tracked with an earlier time, moved forward.
    pub(crate) moved: u64,
    /// Tracked with this time or a later one: unchanged.
    pub(crate) kept: u64,
    /// An erasure of theirs is scheduled or running: left as it is.
    pub(crate) erasing: u64,
}

impl std::ops::AddAssign for AdoptCounts {
    fn add_assign(&mut self, other: Self) {
        self.new += other.new;
        self.moved += other.moved;
        self.kept += other.kept;
        self.erasing += other.erasing;
    }
}

/// Decodes a stored job.
pub(crate) fn decode_job(raw: &str) -> Result<Job> {
    let bad = || crate::Error::Corrupt(format!("erasure job {raw:?}"));
    let mut parts = raw.split(',');
    let reason = parts.next().and_then(ErasureReason::from_code).ok_or_else(bad)?;
    let marked_at = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    let attempts = parts.next().and_then(|p| p.parse().ok()).ok_or_else(bad)?;
    Ok(Job { reason, marked_at, attempts })
}

/// Shared handle type.
pub(crate) type DynBackend = Arc<dyn Backend>;

/// The protocol every store implements. Times are unix milliseconds of the injected clock.
///
/// Invariant kept by every operation: a user is in at most one of the queue and a batch.
pub(crate) trait Backend: Send + Sync {
    /// The parts a pass claims from, each on its own: the shards of a sharded namespace,
    /// otherwise the backend itself. A batch claimed from a part is finished through the
    /// whole backend, which sends it back to that part.
    fn parts(&self) -> Vec<&dyn Backend>;

    /// Records interactions: `seen[user] = max(seen[user], ms)`, each `ms` no later than
    /// `now` ([`no_later_than`]): the writer's claim clock, or the store's own if `None`.
    fn record_interactions<'a>(
        &'a self,
        seen: &'a [Interaction],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Claims up to `limit` users whose erasure is due into a new batch, leased until
    /// `now + lease`: users of expired batches, due queue entries, then users inactive past
    /// the cutoff (unless a writer may hold unwritten interactions). Users who came back
    /// are dropped; values the claim cannot read are left in place and reported.
    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>>;

    /// Claims one user for an immediate erasure as a batch of their own; `None` if a live
    /// batch of another erasure holds them (that erasure is upgraded to the reason).
    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>>;

    /// The store's own clock in unix ms (Redis `TIME`); `None` if it has none.
    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>>;

    /// Records a heartbeat of writer `id` with `backlog` unwritten interactions, stamped
    /// with the store's clock.
    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>>;

    /// Removes the heartbeat of writer `id` (a clean shutdown).
    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>>;

    /// Why inactivity claims would be held back by writers right now, if they would.
    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>>;

    /// The server's version, eviction policy and whether `seen` vanished (writing its
    /// marker when the namespace is new).
    fn health(&self) -> BoxFuture<'_, Result<Health>>;

    /// Writes the marker of `seen` again: the operator accepted that tracking was lost.
    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>>;

    /// Ends a batch while its lease is ours: confirms `done` users and gives `failed` ones
    /// back to the queue, due at their retry time, noting since when each has been failing
    /// (and reporting those stuck by `stuck`, each once per period across every process).
    /// `None` if the lease was lost.
    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>>;

    /// The receipts of the user named `tag` (in every shard: a reshard moves receipts
    /// without knowing whose they are) that are younger than `keep_ms` at `now`, oldest
    /// first.
    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>>;

    /// Schedules an erasure (an upgrade to an opt-out replaces a gone mark).
    fn schedule(&self, request: ScheduleRequest) -> BoxFuture<'_, Result<Marked>>;

    /// Cancels scheduled gone erasures (never an opt-out, nor one running), or postpones
    /// them, in one call; per request, `true` if it was cancelled or postponed.
    fn unschedule_gone<'a>(
        &'a self,
        requests: &'a [Unschedule],
    ) -> BoxFuture<'a, Result<Vec<bool>>>;

    /// What the store holds about `user`.
    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>>;

    /// What a claim with `times` would take, listing up to `limit` users: the same "now"
    /// and cutoff as the claim (the store's clock where the claim reads it).
    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>>;

    /// The position after the newest invalidation.
    fn feed_head(&self) -> BoxFuture<'_, Result<String>>;

    /// Invalidations after `cursor`, and the new cursor.
    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>>;

    /// Stores a confirmation nonce for `who`, replacing any earlier one.
    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>>;

    /// Removes and returns the confirmation nonce of `who`.
    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>>;

    /// Counts one use of `action` by `who` in the window `window` (an index); returns the
    /// count so far in that window. The counter expires after `ttl_ms`.
    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>>;

    /// Takes the lease of the scheduled audit for `ttl_ms` (as `holder`); `false` if another
    /// replica holds it, which then runs this interval's audit.
    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>>;

    /// Takes or renews the census's lease for `ttl_ms` (as `holder`); `false` while another
    /// replica holds it.
    fn census_lease(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>>;

    /// Walks on from where the census stands over tracked users idle up to
    /// `walk.idle_up_to`, longest idle first, and moves the cursor past them.
    fn census_walk(&self, walk: CensusWalk) -> BoxFuture<'_, Result<CensusPage>>;

    /// Records the census's answers at `at` (ms): when each user was probed, and for a
    /// reachable one when they were last reachable. Users no longer tracked (erased
    /// meanwhile) get nothing: the census keeps no state of a user the store does not
    /// track, and an erasure removes what it kept. No time later than now: `now` is the
    /// writer's claim clock when it has one, else the store's own (as for interactions).
    fn census_record<'a>(
        &'a self,
        answers: &'a [CensusAnswer],
        at: i64,
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>>;

    /// Removes what the census keeps of up to about `limit` users the store neither tracks
    /// nor erases (a replica of a version without the census erased them and left it),
    /// walking on from where the last sweep stopped; returns how many it removed.
    fn census_sweep(&self, limit: usize) -> BoxFuture<'_, Result<u64>>;

    /// Keeps `summary` (counts only, JSON) as the last audit's.
    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>>;

    /// The last audit's summary, if any.
    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>>;

    /// Prepares [`erased_as`](Self::erased_as) by a bounded step: a store that finds
    /// receipts by tag through an index of their own (Redis) adds the receipts written
    /// before the index existed. `true` once it is complete; a call does a bounded amount
    /// of work, so the caller repeats it.
    fn index_receipts(&self, now: i64, keep_ms: i64) -> BoxFuture<'_, Result<bool>>;

    /// For each of `tags` (users' keyed hashes), the latest erasure that a receipt younger
    /// than `keep_ms` at `now` records, in every shard. Read-only; its cost follows the
    /// number of tags, not of receipts kept: the audit asks page by page.
    fn erased_as<'a>(
        &'a self,
        tags: &'a [String],
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<LastErasure>>>>;

    /// Adopts users the bot held before it tracked them: `seen[user] = max(seen[user], ms)`
    /// (with `if_new`, only for a user not tracked yet) unless an erasure of the user is
    /// scheduled or running; each `ms` no later than `now`, as for interactions.
    fn adopt<'a>(
        &'a self,
        users: &'a [Adoptee],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<AdoptCounts>>;

    /// For each of `users`, whether the store knows them: tracked, or with an erasure
    /// scheduled or running. Read-only.
    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>>;

    /// How many finished batches erased at least one user, ever: a count that only grows
    /// (per layout; a sharded store sums its shards). Read-only. The audit reads it around
    /// a page: if it moved, an erasure finished while the page was read, and a user the
    /// page lists may be unknown only because that erasure just removed them.
    fn erasures_finished(&self) -> BoxFuture<'_, Result<u64>>;

    /// Adds a notice ([`Notice`]), in every shard, before the users it is for are adopted:
    /// a claim reads the notices running at its own "now" in the same step as the users.
    /// Notices that ended are dropped; `Error::InvalidArgument` if `MAX_NOTICES` run.
    /// `now` is the caller's claim clock, or the store's own if `None`.
    fn add_notice(&self, notice: Notice, now: Option<i64>) -> BoxFuture<'_, Result<()>>;

    /// The notices stored, running or ended (every shard's, once each). Read-only.
    fn notices(&self) -> BoxFuture<'_, Result<Vec<Notice>>>;

    /// Ends every notice now, in every shard.
    fn end_notices(&self) -> BoxFuture<'_, Result<()>>;

    /// The namespace's secret for naming users in keys when no receipt key is set (hex of
    /// 32 random bytes), created on first use; `candidate` is stored if there is none yet.
    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>>;

    /// Number of tracked users (for stats and tests).
    fn tracked(&self) -> BoxFuture<'_, Result<u64>>;

    /// Counts for operators at `now`: users last seen in each range, scheduled and failing
    /// erasures, heartbeats. Reads whole queues: not for hot paths.
    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>>;

    /// Scheduled and failing erasures (for the metrics' gauges).
    fn queued(&self) -> BoxFuture<'_, Result<Queued>>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notices_hold_the_quiet_users_of_the_latest_running_one() {
        let n = |seen_by, until| Notice { seen_by, until };
        let stored = Notice::parse_all("100:500,200:300");
        assert_eq!(stored, [n(100, 500), n(200, 300)]);
        assert_eq!(Notice::parse_all(&Notice::format_all(&stored)), stored);
        assert_eq!(Notice::parse_all(""), []);
        // A part this version cannot read holds everyone until the notices are ended.
        let odd = Notice::parse_all("100:500,bad,7:x");
        assert_eq!(odd, [n(100, 500), Notice::UNREADABLE, Notice::UNREADABLE]);
        assert_eq!(held_through(&odd, 10_000), Some(1 << 53));
        // (now) -> held through
        assert_eq!(held_through(&stored, 250), Some(200));
        assert_eq!(held_through(&stored, 300), Some(100), "the later one ended");
        assert_eq!(held_through(&stored, 500), None);
        assert_eq!(held_through(&[], 0), None);
        // Adding drops the ended ones and those it covers, adds nothing a running one
        // covers, and refuses past MAX_NOTICES others running.
        assert_eq!(n(400, 450).added_to(&stored, 300), Some(vec![n(100, 500), n(400, 450)]));
        assert_eq!(n(400, 900).added_to(&stored, 300), Some(vec![n(400, 900)]));
        assert_eq!(n(50, 400).added_to(&stored, 250), Some(stored.clone()));
        // An adoption in 1,000 chunks, each with the same date a little later: one notice.
        let mut kept = Vec::new();
        for chunk in 0..1_000 {
            kept = n(1_000 + chunk, 9_000).added_to(&kept, 1_000 + chunk).unwrap();
        }
        assert_eq!(kept, [n(1_999, 9_000)]);
        let full: Vec<Notice> = (0..MAX_NOTICES as i64).map(|i| n(100 - i, 1_000 + i)).collect();
        assert_eq!(n(200, 500).added_to(&full, 10), None);
        assert_eq!(n(200, 500).added_to(&full, 1_000).map(|v| v.len()), Some(MAX_NOTICES));
    }

    #[test]
    fn claims_take_drop_or_hold() {
        let at = |reason, marked_at| Job { reason, marked_at, attempts: 0 };
        let (i, o, b) = (ErasureReason::Inactive, ErasureReason::OptOut, ErasureReason::Blocked);
        // (job, last seen, writers hold) -> decision
        let cases = [
            (Job::INACTIVE, None, false, Decision::Take),
            (Job::INACTIVE, None, true, Decision::Hold),
            (Job::INACTIVE, Some(5), false, Decision::Drop),
            (Job::INACTIVE, Some(5), true, Decision::Drop),
            // A residue: an erasure for inactivity marked at the recorded erasure.
            (at(i, 10), Some(9), false, Decision::Take),
            (at(i, 10), Some(9), true, Decision::Hold),
            (at(i, 10), Some(11), true, Decision::Drop),
            (at(i, 10), None, true, Decision::Hold),
            // Gone users and opt-outs go on while writers hold.
            (at(b, 10), None, true, Decision::Take),
            (at(b, 10), Some(10), true, Decision::Take),
            (at(b, 10), Some(11), true, Decision::Drop),
            (at(o, 10), Some(11), true, Decision::Take),
            (at(o, 10), None, false, Decision::Take),
        ];
        for (job, seen, hold, expected) in cases {
            assert_eq!(take_or_drop(job, seen, hold), expected, "{job:?} {seen:?} {hold}");
        }
    }

    #[test]
    fn finishes_follow_up_opt_outs_that_erasers_did_not_see_whole() {
        let (i, o, b) = (ErasureReason::Inactive, ErasureReason::OptOut, ErasureReason::Blocked);
        // (job's reason now, claimed reason, interacted) -> follow-up
        let cases = [
            (o, o, false, false),
            (o, o, true, true),
            // An opt-out took over a running erasure: its erasers saw another reason.
            (o, i, false, true),
            (o, b, false, true),
            (b, b, true, false),
            (i, i, true, false),
        ];
        for (job, claimed, interacted, expected) in cases {
            assert_eq!(
                follow_up(job, claimed, interacted),
                expected,
                "{job} {claimed} {interacted}"
            );
        }
    }

    #[test]
    fn jobs_decode() {
        for reason in ErasureReason::ALL {
            let raw = format!("{},1700000000123,7", reason.code());
            let job = Job { reason, marked_at: 1_700_000_000_123, attempts: 7 };
            assert_eq!(decode_job(&raw).unwrap(), job);
        }
        assert!(decode_job("x,1,2").is_err());
        assert!(decode_job("o,1").is_err());
    }
}
