//! Recording interactions cheaply and without losing them.
//!
//! - **Cache.** A user written less than the resolution ago is not written again: an active
//!   user costs one hash-map lookup.
//! - **Group commit.** Users not in the cache join the next commit; one background writer
//!   sends the whole batch as one `ZADD GT` while the next batch fills, and once it holds
//!   [`SECOND_COMMIT_AT`] users, sends it beside the first; a commit that is done takes the
//!   next one itself. Concurrent first interactions of one user share the same write.
//! - **Outages.** A failed write moves its users to a bounded backlog that the writer
//!   retries with backoff; while the store is failing, interactions go straight to the backlog
//!   instead of waiting. Gone marks the store could not take (a block, a failed send) wait
//!   in a second bounded buffer and are written after the backlog, with their original
//!   time; a later interaction of the user cancels a waiting mark, as it would a stored one.
//! - **Invalidation.** Erasures and gone marks are announced in the store's feed; every
//!   process drops those users from its cache and writes interactions it skipped since. A
//!   process learns where the feed stands before its first write; users it wrote before it
//!   could (during an outage) leave its cache once it can.
//! - **Runtimes.** The writer and the heartbeat run as tasks on the runtime of the first
//!   call that needs them. When they are gone (that runtime shut down, or a task panicked)
//!   or stuck on a single-threaded runtime nobody drives any more, the next call starts
//!   them again on its own runtime; the batch the old writer had in flight is written again
//!   (writes never move a user back, so writing twice is harmless).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{Notify, SetOnce};
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until, timeout};
use tokio_util::sync::CancellationToken;

use crate::clock::later;
use crate::clock::{SKEW_WARNING_MS, SyncedClock, duration_ms};
use crate::config::{Config, GonePolicy};
use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::gone::{GoneReason, gone_user};
use crate::hooks::Hooks;
use crate::stats::{Counters, Gauges};
use crate::store::{
    Door, FeedPage, Interaction, Invalidation, Marked, ScheduleRequest, Unschedule, came_back,
    random_id,
};
use crate::store::{FEED_KEEP_MS, FEED_READ};
use teloxide::RequestError;
use teloxide::types::{Recipient, UserId};

mod background;
mod marks;

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FEED_POLL: Duration = Duration::from_secs(1);
/// The writer's commits in flight at most: the next goes out while one is being written, so
/// that the store has it at hand once done, while this process wakes the first's callers.
const COMMITS_IN_FLIGHT: usize = 2;
/// The users a commit waits for before it goes out beside another in flight: fewer would
/// cost the store a call for little.
const SECOND_COMMIT_AT: usize = 256;
/// How often the offset between this process's clock and the store's is measured.
pub(crate) const CLOCK_SYNC: Duration = Duration::from_secs(60);

/// What [`Retention::note_interaction`](crate::Retention::note_interaction) did with an
/// interaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Noted {
    /// Written to the store by this call (or by a concurrent call for the same user).
    Written,
    /// Written recently enough already; nothing to do.
    Cached,
    /// The store is unreachable; buffered in memory and written when it answers again.
    Buffered,
    /// The store is unreachable and the buffer is full; the interaction is lost.
    Dropped,
    /// Not a user the crate tracks (a bot or one of Telegram's service accounts).
    Ignored,
}

impl Noted {
    /// Returns `true` if the interaction is in the store now.
    #[must_use]
    pub fn is_stored(self) -> bool {
        matches!(self, Self::Written | Self::Cached)
    }
}

#[derive(Clone, Copy)]
struct Seen {
    /// The newest interaction written to the store by this process.
    written: i64,
    /// The newest interaction not written because `written` was recent (0 if none).
    skipped: i64,
}

/// A gone mark waiting for the store: written as if it had been written at `marked_at`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeptMark {
    pub(crate) reason: ErasureReason,
    pub(crate) marked_at: i64,
    pub(crate) due: Option<i64>,
}

/// Telegram assigns user ids, so nobody can pick colliding keys: a fast hasher is safe.
type UserMap<V> = HashMap<u64, V, rustc_hash::FxBuildHasher>;

struct State {
    cache: UserMap<Seen>,
    /// Interactions the next group commit writes (user, time).
    next_commit: UserMap<i64>,
    /// Completes when `next_commit` has been written (`true`) or failed (`false`).
    slot: Arc<SetOnce<bool>>,
    /// The commits being written right now, oldest first: the writer's (up to
    /// [`COMMITS_IN_FLIGHT`]), and one of each caller of `settle` or `flush` (each is a
    /// write in flight for `apply` and for sharing).
    in_flight: Vec<InFlight>,
    /// The id of the last commit taken.
    commits: u64,
    /// The writer's generation, bumped when a writer that is gone is replaced
    /// ([`Tracker::recover_in_flight`]): a commit task of an earlier writer (on a runtime
    /// that may never run again) takes no further commit.
    generation: u64,
    backlog: UserMap<i64>,
    /// Gone marks the store could not take.
    marks: UserMap<KeptMark>,
    healthy: bool,
    /// Users with an erasure running in this process: never served from the cache.
    erasing: UserMap<RunningErasure>,
}

/// A commit being written: its interactions and its completion.
struct InFlight {
    id: u64,
    users: UserMap<i64>,
    slot: Arc<SetOnce<bool>>,
    /// One of the writer's commits (not a `settle` or `flush`).
    by_writer: bool,
}

impl State {
    /// The writer's commits in flight.
    fn writer_commits(&self) -> usize {
        self.in_flight.iter().filter(|c| c.by_writer).count()
    }

    /// The completion of a write in flight that holds `user` at a time within `resolution`
    /// of `now` (the newest such write), to share.
    fn sharable_write(&self, user: u64, now: i64, resolution: i64) -> Option<Arc<SetOnce<bool>>> {
        self.in_flight.iter().rev().find_map(|c| {
            c.users.get(&user).filter(|&&s| now - s < resolution).map(|_| Arc::clone(&c.slot))
        })
    }
}

/// An erasure of one user running in this process.
#[derive(Default)]
struct RunningErasure {
    /// Guards alive ([`Tracker::begin_erasure`]).
    guards: usize,
    /// The user interacted meanwhile: that update's handler may write data after the
    /// erasers ran, even if its write reaches the store only after the erasure finished.
    interacted: bool,
}

pub(crate) struct Tracker {
    state: Mutex<State>,
    wake: Notify,
    /// The store, behind the one bounded door every part of the crate uses.
    door: Door,
    clock: Arc<SyncedClock>,
    /// Names this process's heartbeat in the store.
    writer_id: u64,
    heartbeat: Duration,
    resolution_ms: i64,
    follow_up_ms: i64,
    gone_policy: GonePolicy,
    /// Which gone marks the pruner confirms by a probe.
    probes: Option<crate::probe::Probes>,
    max_buffered: usize,
    counters: Arc<Counters>,
    hooks: Arc<Hooks>,
    cancel: CancellationToken,
    /// The background tasks, once started (see [`Tracker::ensure_writer`]).
    tasks: Mutex<Option<Tasks>>,
    /// The feed reader outlives a writer task, so that a restarted writer goes on from
    /// where the last one stood.
    feed: tokio::sync::Mutex<FeedReader>,
    /// Whether a restart of the background tasks was logged at warn level already.
    restart_logged: AtomicBool,
    /// Whether a write refused for the namespace's layout was logged already.
    layout_logged: AtomicBool,
    /// Announcements in the feed that this process applied itself when it made them (gone
    /// marks, erasures), by user: `(since, until, when)`. Their echo from the feed is
    /// skipped (see [`Tracker::announced_here`]).
    own: Mutex<UserMap<(i64, i64, Instant)>>,
    /// Set by the writer after its last flush at shutdown: `true` if nothing was left.
    flushed: SetOnce<bool>,
    /// Set by the pulse once it has removed (or given up removing) the heartbeat.
    retired: SetOnce<()>,
}

impl Tracker {
    pub(crate) fn new(
        config: &Config,
        door: Door,
        clock: Arc<SyncedClock>,
        counters: Arc<Counters>,
        hooks: Arc<Hooks>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                cache: UserMap::default(),
                next_commit: UserMap::default(),
                slot: Arc::new(SetOnce::new()),
                in_flight: Vec::new(),
                commits: 0,
                generation: 0,
                backlog: UserMap::default(),
                marks: UserMap::default(),
                healthy: true,
                erasing: UserMap::default(),
            }),
            wake: Notify::new(),
            door,
            clock,
            writer_id: random_id(),
            heartbeat: config.heartbeat,
            resolution_ms: duration_ms(config.resolution),
            follow_up_ms: duration_ms(config.follow_up_delay),
            gone_policy: config.gone_policy,
            probes: config.probes.clone(),
            max_buffered: config.max_buffered_interactions,
            counters,
            hooks,
            cancel,
            tasks: Mutex::new(None),
            feed: tokio::sync::Mutex::new(FeedReader::default()),
            restart_logged: AtomicBool::new(false),
            layout_logged: AtomicBool::new(false),
            own: Mutex::new(UserMap::default()),
            flushed: SetOnce::new(),
            retired: SetOnce::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records that `user` interacted now if this process wrote them recently enough;
    /// returns `false` when a write is needed ([`Tracker::note_interaction`]).
    pub(crate) fn note_interaction_cached(&self, user: u64) -> bool {
        let mut st = self.lock();
        let now = self.clock.now_ms();
        self.cached(&mut st, user, now)
    }

    fn cached(&self, st: &mut State, user: u64, now: i64) -> bool {
        if !st.erasing.is_empty() && st.erasing.contains_key(&user) {
            return false;
        }
        match st.cache.get_mut(&user) {
            Some(seen) if now - seen.written < self.resolution_ms => {
                seen.skipped = seen.skipped.max(now);
                true
            }
            _ => false,
        }
    }

    /// Records that `user` interacted now.
    ///
    /// With `must_store`, waits for the write even while the store is failing (strict mode).
    pub(crate) async fn note_interaction(self: &Arc<Self>, user: u64, must_store: bool) -> Noted {
        let (now, slot, wake) = {
            let mut st = self.lock();
            // Read under the lock: the first clock measurement shifts stored times with it.
            let now = self.clock.now_ms();
            if !st.erasing.is_empty()
                && let Some(erasure) = st.erasing.get_mut(&user)
            {
                erasure.interacted = true;
            }
            if !st.marks.is_empty() && st.marks.get(&user).is_some_and(|m| m.marked_at < now) {
                // The user came back after a mark that never reached the store: drop it.
                st.marks.remove(&user);
            }
            if self.cached(&mut st, user, now) {
                return Noted::Cached;
            }
            // The writer is woken when the next commit gets its first user while none of its
            // commits is in flight, and when it is large enough to go out beside another in
            // flight: else it would wake for nothing (a commit in flight takes the next one
            // when it is done, and a commit task that returns wakes the writer).
            let (slot, wake) = if let Some(score) = st.next_commit.get_mut(&user) {
                *score = (*score).max(now);
                (Arc::clone(&st.slot), false)
            } else if !st.erasing.contains_key(&user)
                && let Some(slot) = st.sharable_write(user, now, self.resolution_ms)
            {
                // Being written right now, recently enough: share that write.
                (slot, false)
            } else if !st.healthy && !must_store {
                return self.buffer(&mut st, [(user, now)]);
            } else {
                st.next_commit.insert(user, now);
                let users = st.next_commit.len();
                let first = users == 1 && st.writer_commits() == 0;
                (Arc::clone(&st.slot), first || users == SECOND_COMMIT_AT)
            };
            (now, slot, wake)
        };
        self.ensure_writer();
        if self.retired.get().is_some() {
            // After `shutdown`: nothing writes any more.
            return Noted::Dropped;
        }
        if wake {
            self.wake.notify_one();
        }
        // The writer may be busy with a slow store (a hung Redis), or still reading where
        // the feed stands before its first write: never wait longer than the store timeout.
        // The interaction is not lost: it moves to the backlog, which the writer retries.
        let limit = crate::store::Budget::limit(self.door.timeout());
        let waited = std::time::Instant::now();
        let written = timeout(limit, slot.wait()).await;
        crate::store::Budget::charge(waited.elapsed());
        match written {
            Ok(true) => return Noted::Written,
            Ok(false) => {}
            Err(_) => {
                // Still waiting for the writer: move it to the backlog, so that "buffered"
                // is what the heartbeat reports (a write in flight stays in flight).
                let mut st = self.lock();
                return match st.next_commit.remove(&user) {
                    Some(ms) => self.buffer(&mut st, [(user, ms)]),
                    None => Noted::Buffered,
                };
            }
        }
        // The write failed and moved to the backlog, unless the backlog was full (or a retry
        // of the backlog has written it since).
        let st = self.lock();
        if st.backlog.contains_key(&user) {
            Noted::Buffered
        } else if st.cache.get(&user).is_some_and(|seen| seen.written >= now) {
            Noted::Written
        } else {
            Noted::Dropped
        }
    }

    /// Adds interactions to the backlog; returns how the last one fared.
    fn buffer(&self, st: &mut State, seen: impl IntoIterator<Item = (u64, i64)>) -> Noted {
        let mut outcome = Noted::Buffered;
        for (user, ms) in seen {
            let room = st.backlog.len() < self.max_buffered;
            match st.backlog.get_mut(&user) {
                Some(score) => *score = (*score).max(ms),
                None if room => {
                    st.backlog.insert(user, ms);
                }
                None => {
                    Counters::add(&self.counters.interactions_dropped, 1);
                    outcome = Noted::Dropped;
                    continue;
                }
            }
            Counters::add(&self.counters.interactions_buffered, 1);
            outcome = Noted::Buffered;
        }
        outcome
    }

    /// Marks `user` as being erased by this process: drops them from the cache and sends
    /// their interactions to the store until the returned guard is dropped (also when the
    /// erasure is cancelled).
    pub(crate) fn begin_erasure(&self, user: u64) -> Erasing<'_> {
        let mut st = self.lock();
        st.cache.remove(&user);
        // The erasure supersedes a gone mark still waiting for the store.
        st.marks.remove(&user);
        st.erasing.entry(user).or_default().guards += 1;
        Erasing { tracker: self, user }
    }

    /// Notes that this process applied `inv` itself when it made the announcement (a gone
    /// mark it wrote, an erasure it finished), so that its echo from the feed is skipped:
    /// the cache was dropped then, an opt-out's follow-up was decided by the erasure's own
    /// guard, and applying it again a second later would write interactions taken after
    /// it as if they came before, or count ones within the same millisecond as in flight.
    pub(crate) fn announced_here(&self, inv: Invalidation) {
        let mut own = self.own.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        own.insert(inv.user, (inv.since, inv.until, Instant::now()));
    }

    /// Whether `inv`, read from the feed, is the echo of an announcement of this process.
    fn is_own_echo(&self, inv: &Invalidation) -> bool {
        let mut own = self.own.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if own.is_empty() {
            return false;
        }
        let echo = own
            .get(&inv.user)
            .is_some_and(|&(since, until, _)| (since, until) == (inv.since, inv.until));
        if echo {
            own.remove(&inv.user);
        }
        echo
    }

    /// Schedules an opt-out erasure of `user` after the follow-up delay: they interacted
    /// while their erasers ran. Returns whether it was scheduled (an erasure already
    /// scheduled is kept and not counted).
    pub(crate) async fn schedule_follow_up(&self, user: u64) -> bool {
        let now = self.clock.now_ms();
        let due = Some(now.saturating_add(self.follow_up_ms));
        let request = ScheduleRequest { user, reason: ErasureReason::OptOut, marked_at: now, due };
        match self.door.call(|b| b.schedule(request)).await {
            Ok(marked) => {
                if marked == Marked::Scheduled {
                    Counters::add(&self.counters.follow_ups, 1);
                }
                true
            }
            Err(e) => {
                tracing::warn!(
                    user,
                    error = %e,
                    "could not schedule a follow-up erasure after an in-flight update"
                );
                false
            }
        }
    }

    /// Applies an erasure or gone mark: forgets the user and writes any interaction this
    /// process skipped since `inv.since`.
    ///
    /// For an opt-out, `since..=until` is the erasure window: an interaction of this process
    /// inside it, whether served from the cache, written, or still waiting to be written
    /// (group commit, outage backlog), was in flight while the erasers ran, so it schedules
    /// a follow-up erasure. Interactions from before the window that are still unwritten
    /// are dropped: the user is erased, and writing them would track them again.
    ///
    /// Returns whether interactions were sent to the writer.
    pub(crate) async fn invalidate(self: &Arc<Self>, inv: Invalidation) -> bool {
        let applied = self.apply(inv);
        if applied.follow_up {
            self.schedule_follow_up(inv.user).await;
        }
        applied.write
    }

    /// What [`invalidate`](Self::invalidate) does in memory, at once: the follow-up it
    /// calls for is the caller's to schedule.
    fn apply(self: &Arc<Self>, inv: Invalidation) -> Applied {
        let within = |ms: i64| ms >= inv.since && ms <= inv.until;
        let (write, in_window) = {
            let mut st = self.lock();
            let st = &mut *st;
            let mut write = false;
            let mut in_window = false;
            if let Some(seen) = st.cache.remove(&inv.user) {
                in_window = within(seen.written) || within(seen.skipped);
                if seen.skipped >= inv.since {
                    let score = st.next_commit.entry(inv.user).or_insert(seen.skipped);
                    *score = (*score).max(seen.skipped);
                    write = true;
                }
            }
            if inv.opt_out {
                for unwritten in [&mut st.next_commit, &mut st.backlog] {
                    match unwritten.get(&inv.user) {
                        Some(&ms) if ms < inv.since => {
                            unwritten.remove(&inv.user);
                        }
                        Some(&ms) => in_window |= ms <= inv.until,
                        None => {}
                    }
                }
                in_window |= st
                    .in_flight
                    .iter()
                    .any(|c| c.users.get(&inv.user).is_some_and(|&ms| within(ms)));
            }
            (write, in_window)
        };
        if write {
            self.ensure_writer();
            self.wake.notify_one();
        }
        Applied { write, follow_up: inv.opt_out && in_window }
    }

    /// Writes the interactions of the next commit now and waits for a write in flight, so that the
    /// store holds every interaction taken before the call (or, if it fails, the backlog
    /// does). Bounded by the store timeout.
    pub(crate) async fn settle(&self) {
        self.write_next_commit().await;
        let slots: Vec<Arc<SetOnce<bool>>> =
            self.lock().in_flight.iter().map(|c| Arc::clone(&c.slot)).collect();
        if !slots.is_empty() {
            let all = futures_util::future::join_all(slots.iter().map(|s| s.wait()));
            let _ = timeout(self.door.timeout(), all).await;
        }
    }

    /// Reads the feed now, applying every erasure announced since the last read.
    #[cfg(feature = "testing")]
    pub(crate) async fn catch_up(self: &Arc<Self>) {
        self.poll_feed().await;
    }

    /// Writes the next commit and everything buffered now.
    pub(crate) async fn flush(self: &Arc<Self>) -> Result<()> {
        self.ensure_writer();
        self.write_next_commit().await;
        self.write_backlog().await
    }

    /// The last measured offset to the store's clock, in ms.
    pub(crate) fn clock_offset_ms(&self) -> i64 {
        self.clock.offset_ms()
    }

    /// Number of users in the cache.
    pub(crate) fn cached_users(&self) -> usize {
        self.lock().cache.len()
    }

    /// Number of buffered (unwritten) users.
    pub(crate) fn buffered_users(&self) -> usize {
        self.lock().backlog.len()
    }

    /// Counts and announces (the `on_gone` hook) a gone mark the store newly took, however
    /// it was written.
    pub(crate) fn newly_marked(&self, user: u64, reason: ErasureReason) {
        self.counters.marked_gone(reason);
        self.hooks.gone(user, reason);
    }

    /// A gone mark of `user` waits for the store.
    /// The gauges [`Stats`](crate::Stats) reports beside the counters.
    pub(crate) fn gauges(&self) -> Gauges {
        Gauges {
            clock_offset_ms: self.clock_offset_ms(),
            cached_users: self.cached_users() as u64,
            buffered_users: self.buffered_users() as u64,
            buffered_gone_marks: self.buffered_marks() as u64,
        }
    }

    pub(crate) fn has_mark(&self, user: u64) -> bool {
        let st = self.lock();
        !st.marks.is_empty() && st.marks.contains_key(&user)
    }

    /// Number of gone marks waiting for the store.
    pub(crate) fn buffered_marks(&self) -> usize {
        self.lock().marks.len()
    }
}

/// The writer and heartbeat tasks, and the runtime they run on.
struct Tasks {
    runtime: tokio::runtime::Id,
    flavor: RuntimeFlavor,
    writer: JoinHandle<()>,
    pulse: JoinHandle<()>,
}

impl Tasks {
    /// Whether these tasks still do their job for a caller on `here`: both alive, and
    /// on a runtime that runs them without its owner driving it (a multi-threaded one), or
    /// on the caller's own.
    fn serve(&self, here: &Handle) -> bool {
        !self.writer.is_finished()
            && !self.pulse.is_finished()
            && (self.runtime == here.id() || self.flavor != RuntimeFlavor::CurrentThread)
    }

    /// Whether the heartbeat task alone still runs, for a caller on `here`, as it does
    /// between the writer's last flush at shutdown and the removal of the heartbeat.
    fn retiring(&self, here: &Handle) -> bool {
        !self.pulse.is_finished()
            && (self.runtime == here.id() || self.flavor != RuntimeFlavor::CurrentThread)
    }
}

/// An erasure running in this process; see [`Tracker::begin_erasure`].
pub(crate) struct Erasing<'a> {
    tracker: &'a Tracker,
    user: u64,
}

impl Erasing<'_> {
    /// The user being erased.
    pub(crate) fn user(&self) -> u64 {
        self.user
    }

    /// The user interacted since the first guard of this erasure was taken.
    pub(crate) fn interacted(&self) -> bool {
        self.tracker.lock().erasing.get(&self.user).is_some_and(|e| e.interacted)
    }
}

impl Drop for Erasing<'_> {
    fn drop(&mut self) {
        let mut st = self.tracker.lock();
        if let Some(erasure) = st.erasing.get_mut(&self.user) {
            erasure.guards -= 1;
            if erasure.guards == 0 {
                st.erasing.remove(&self.user);
            }
        }
    }
}

/// What applying an invalidation did, and what it leaves to do.
struct Applied {
    /// Interactions were sent to the writer.
    write: bool,
    /// An interaction inside an opt-out's window: a follow-up erasure is due.
    follow_up: bool,
}

/// Follows the store's feed of erasures.
#[derive(Default)]
struct FeedReader {
    cursor: Option<String>,
    last_ok: Option<Instant>,
    /// Users whose follow-up erasure a read called for and that is not scheduled yet.
    follow_ups: VecDeque<u64>,
}

impl FeedReader {
    /// Reads the feed until it is caught up (a burst larger than one read is not left for
    /// later polls, where it could expire unseen), applying each invalidation.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe (the writer bounds each poll by `store_timeout`): a page's invalidations
    /// are applied to memory at once, together with the move of the cursor past them, and
    /// the follow-up erasures they call for wait in `follow_ups` until each is scheduled
    /// (scheduling is idempotent), by this poll or the next: a poll cut short never leaves
    /// users of a page it read in the cache, nor their follow-ups unsent.
    async fn poll(&mut self, tracker: &Arc<Tracker>) {
        self.schedule_follow_ups(tracker).await;
        loop {
            let read = match &self.cursor {
                None => tracker.door.call(|b| b.feed_head()).await.map(|cursor| FeedPage {
                    entries: Vec::new(),
                    cursor,
                    restarted: false,
                }),
                Some(cursor) => tracker.door.call(|b| b.feed_read(cursor)).await,
            };
            let FeedPage { entries: invalidations, cursor: next, restarted } = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the erasure feed");
                    return;
                }
            };
            let gap = self.last_ok.is_some_and(|at| {
                at.elapsed() > Duration::from_millis(FEED_KEEP_MS.unsigned_abs() / 2)
            });
            if gap || self.cursor.is_none() || restarted {
                // Announcements may have expired unseen (or gone with a layout resharded
                // under this process), or users were written before the feed's position was
                // known (it could not be read then): forget the cache
                // instead, but first send what it skipped to the store, so that no
                // interaction served from it is lost.
                tracker.forget_cache();
            }
            let full = invalidations.len() >= FEED_READ;
            self.cursor = Some(next);
            self.last_ok = Some(Instant::now());
            for inv in invalidations {
                if !tracker.is_own_echo(&inv) && tracker.apply(inv).follow_up {
                    self.follow_ups.push_back(inv.user);
                }
            }
            self.schedule_follow_ups(tracker).await;
            if !full {
                return;
            }
        }
    }

    /// Schedules the follow-ups waiting in `follow_ups`, each removed once its call ended.
    async fn schedule_follow_ups(&mut self, tracker: &Tracker) {
        while let Some(&user) = self.follow_ups.front() {
            tracker.schedule_follow_up(user).await;
            self.follow_ups.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::store::MemoryStore;
    use crate::store::Store;

    #[tokio::test]
    async fn forgetting_the_cache_keeps_the_interactions_it_skipped() {
        // The feed reader forgets the cache after a gap; before the fix the interactions it
        // had served from the cache (not written) were forgotten with it.
        let config = crate::config::Config::for_tests();
        let backend = MemoryStore::new().bind("t", crate::store::sealed::Token).0;
        let clock = ManualClock::at_unix_ms(1_000);
        let tracker = Arc::new(Tracker::new(
            &config,
            Door::new(Arc::clone(&backend), config.store_timeout),
            Arc::new(SyncedClock::new(Arc::new(clock.clone()))),
            Arc::default(),
            Arc::default(),
            CancellationToken::new(),
        ));
        assert_eq!(tracker.note_interaction(1, false).await, Noted::Written);
        clock.advance(Duration::from_secs(10));
        assert!(tracker.note_interaction_cached(1), "served from the cache");
        tracker.forget_cache();
        assert_eq!(tracker.cached_users(), 0);
        tracker.flush().await.unwrap();
        assert_eq!(backend.status(1).await.unwrap().last_seen, Some(11_000));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_feed_read_cut_short_forgets_the_whole_page_and_sends_every_follow_up() {
        use crate::store::intercept::{Hold, Intercepted, Op};

        // Seen under load (safety::a_burst_of_erasures_larger_than_one_feed_read_…): the
        // writer bounds each feed poll by `store_timeout`; a poll that ran out while it
        // scheduled the follow-up of one opt-out had moved its cursor past the whole page,
        // so the page's later users stayed cached for good and got no follow-up.
        let memory = MemoryStore::new();
        let hook = Arc::new(Hold::new(Op::Schedule, false));
        let store = Intercepted { store: memory.clone(), hook: Arc::clone(&hook) };
        let clock = ManualClock::at_unix_ms(1_000);
        let tracker = Arc::new(Tracker::new(
            &crate::config::Config::for_tests(),
            Door::new(
                store.bind("t", crate::store::sealed::Token).0,
                crate::config::Config::for_tests().store_timeout,
            ),
            Arc::new(SyncedClock::new(Arc::new(clock.clone()))),
            Arc::default(),
            Arc::default(),
            CancellationToken::new(),
        ));
        tracker.poll_feed().await;
        for user in 1..=3 {
            assert_eq!(tracker.note_interaction(user, false).await, Noted::Written);
        }
        assert_eq!(tracker.cached_users(), 3);
        // Follow-ups hang from now on (held before the erasures: the writer's own poll, every
        // second, may read them first).
        hook.on.store(true, Ordering::SeqCst);
        // Another replica erases all three while their interactions are in the window (the
        // clocks stand still), so each invalidation calls for a follow-up.
        let other = crate::Retention::builder(memory)
            .namespace("t")
            .inactive_after(Duration::from_secs(90 * 24 * 3600))
            .without_commands()
            .clock(clock)
            .build()
            .unwrap();
        for user in 1..=3 {
            other.erase_user(teloxide::types::UserId(user)).await.unwrap();
        }

        // The first follow-up hangs, and the poll is cut short there.
        let cut = timeout(Duration::from_millis(200), tracker.poll_feed()).await;
        assert!(cut.is_err(), "the poll waited on the held follow-up");
        assert_eq!(tracker.cached_users(), 0, "every user of the page read is forgotten");

        hook.on.store(false, Ordering::SeqCst);
        hook.released.notify_waiters();
        tracker.poll_feed().await;
        for user in 1..=3 {
            let status = tracker.door.call(|b| b.status(user)).await.unwrap();
            assert!(status.job.is_some(), "user {user}'s follow-up is scheduled: {status:?}");
        }
    }

    type Noting = tokio::task::JoinHandle<Noted>;

    /// A tracker on a memory store whose interaction writes are held: user 1's commit is in
    /// flight (the writer's, held), user 2 waits in the next commit.
    async fn user_1_in_flight_user_2_waiting()
    -> (Arc<crate::store::intercept::Hold>, MemoryStore, Arc<Tracker>, Noting, Noting) {
        use crate::store::intercept::{Hold, Intercepted, Op};

        let hook = Arc::new(Hold::new(Op::RecordInteractions, true));
        let memory = MemoryStore::new();
        let store = Intercepted { store: memory.clone(), hook: Arc::clone(&hook) };
        let config = crate::config::Config::for_tests();
        let tracker = Arc::new(Tracker::new(
            &config,
            Door::new(store.bind("t", crate::store::sealed::Token).0, Duration::from_secs(30)),
            Arc::new(SyncedClock::new(Arc::new(ManualClock::at_unix_ms(1_000)))),
            Arc::default(),
            Arc::default(),
            CancellationToken::new(),
        ));
        let writer = Arc::clone(&tracker);
        let first = tokio::spawn(async move { writer.note_interaction(1, false).await });
        hook.held.notified().await;
        let waiter = Arc::clone(&tracker);
        let second = tokio::spawn(async move { waiter.note_interaction(2, false).await });
        while tracker.lock().next_commit.is_empty() {
            tokio::task::yield_now().await;
        }
        (hook, memory, tracker, first, second)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_commit_in_flight_counts_for_an_opt_outs_window() {
        // A `flush` writes the next commit beside the writer's own commit in flight. Before
        // the fix the second commit replaced the first as "the write in flight": an opt-out
        // announced meanwhile missed the first one's interaction, inside its erasure window,
        // and called for no follow-up (that update's handler may write after the erasers).
        let (hook, _, tracker, first, second) = user_1_in_flight_user_2_waiting().await;
        // A flush writes user 2's commit beside the writer's (held too).
        let flusher = Arc::clone(&tracker);
        let flush = tokio::spawn(async move { flusher.flush().await });
        hook.held.notified().await;
        assert_eq!(tracker.lock().in_flight.len(), 2);

        let opt_out = Invalidation { user: 1, since: 0, until: 5_000, opt_out: true };
        assert!(tracker.apply(opt_out).follow_up, "user 1's write in flight is in the window");

        hook.on.store(false, Ordering::SeqCst);
        hook.released.notify_waiters();
        assert_eq!(first.await.unwrap(), Noted::Written);
        assert_eq!(second.await.unwrap(), Noted::Written);
        flush.await.unwrap().unwrap();
        assert!(tracker.lock().in_flight.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_next_commit_goes_out_beside_the_one_in_flight() {
        // The writer keeps two commits in flight, so that the store has the next at hand
        // while this process wakes the first one's callers (bench section 2); the second goes
        // out once it holds SECOND_COMMIT_AT users, not before (a call for a few users would
        // cost the store more than it saves).
        let (hook, _, tracker, first, second) = user_1_in_flight_user_2_waiting().await;
        let join = |users: std::ops::Range<u64>| -> Vec<Noting> {
            users
                .map(|user| {
                    let tracker = Arc::clone(&tracker);
                    tokio::spawn(async move { tracker.note_interaction(user, false).await })
                })
                .collect()
        };
        // User 2 and the rest of a second commit.
        let mut waiting = join(10..10 + SECOND_COMMIT_AT as u64 - 1);
        let sent = timeout(Duration::from_secs(60), async {
            while tracker.lock().in_flight.len() < 2 {
                tokio::task::yield_now().await;
            }
        });
        sent.await.expect("a second commit went out beside the first");
        {
            let st = tracker.lock();
            assert_eq!(st.in_flight[1].users.len(), SECOND_COMMIT_AT, "it went out when full");
            assert!(st.in_flight[1].users.contains_key(&2));
        }
        // Later users wait for a commit to come back.
        waiting.extend(join(1_000..1_300));
        while tracker.lock().next_commit.len() < 300 {
            tokio::task::yield_now().await;
        }
        assert_eq!(tracker.lock().in_flight.len(), 2, "two at most");

        hook.on.store(false, Ordering::SeqCst);
        hook.released.notify_waiters();
        assert_eq!(first.await.unwrap(), Noted::Written);
        assert_eq!(second.await.unwrap(), Noted::Written);
        for noting in waiting {
            assert_eq!(noting.await.unwrap(), Noted::Written);
        }
    }

    #[tokio::test]
    async fn a_commit_task_of_a_replaced_writer_takes_no_further_commit() {
        // A commit task takes the writer's next commit when it is done. One of a writer that
        // was replaced (its single-threaded runtime no longer driven, and driven once more
        // later) must not: its commit would count as the new writer's while it sits on a
        // runtime that may never run again, and the new writer would wait for it.
        let config = crate::config::Config::for_tests();
        let backend = MemoryStore::new().bind("t", crate::store::sealed::Token).0;
        let tracker = Arc::new(Tracker::new(
            &config,
            Door::new(backend, config.store_timeout),
            Arc::new(SyncedClock::new(Arc::new(ManualClock::at_unix_ms(1_000)))),
            Arc::default(),
            Arc::default(),
            CancellationToken::new(),
        ));
        let before = tracker.lock().generation;
        tracker.lock().next_commit.insert(7, 1_000);
        tracker.recover_in_flight();
        assert!(tracker.take_writer_commit(before).is_none(), "the replaced writer's task");
        let now = tracker.lock().generation;
        let commit = tracker.take_writer_commit(now).expect("the current writer's");
        assert_eq!(commit.1, vec![Interaction { user: 7, at: 1_000 }]);
        assert_eq!(tracker.lock().writer_commits(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_cancelled_flush_puts_its_commit_back() {
        // A caller may cancel `flush` (it is documented cancel-safe). Dropped during its
        // write, its commit went nowhere: its users were neither written nor buffered, and
        // it stayed "in flight" for good (every later `settle` waited on it).
        let (hook, memory, tracker, first, _second) = user_1_in_flight_user_2_waiting().await;
        let flush = timeout(Duration::from_millis(100), tracker.flush()).await;
        assert!(flush.is_err(), "the flush's write was held, and cancelled");
        {
            let st = tracker.lock();
            assert_eq!(st.in_flight.len(), 1, "only the writer's commit is in flight");
            assert!(st.next_commit.contains_key(&2), "user 2 waits for the next commit again");
        }
        hook.on.store(false, Ordering::SeqCst);
        hook.released.notify_waiters();
        assert_eq!(first.await.unwrap(), Noted::Written);
        let backend = memory.bind("t", crate::store::sealed::Token).0;
        for _ in 0..500 {
            if backend.status(2).await.unwrap().last_seen.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("user 2 was never written");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_writer_that_returned_at_shutdown_is_not_started_again() {
        use crate::store::intercept::{Hold, Intercepted, Op};

        // Seen under load: the writer saw the cancellation and returned while the heartbeat
        // task was still removing the heartbeat; `shutdown` took the writer for gone, warned
        // "the background writer was gone", aborted the heartbeat task and started both again.
        let hook = Arc::new(Hold::new(Op::Retire, true));
        let store = Intercepted { store: MemoryStore::new(), hook: Arc::clone(&hook) };
        let cancel = CancellationToken::new();
        let tracker = Arc::new(Tracker::new(
            &crate::config::Config::for_tests(),
            Door::new(
                store.bind("t", crate::store::sealed::Token).0,
                crate::config::Config::for_tests().store_timeout,
            ),
            Arc::new(SyncedClock::new(Arc::new(ManualClock::at_unix_ms(1_000)))),
            Arc::default(),
            Arc::default(),
            cancel.clone(),
        ));
        tracker.ensure_writer();
        cancel.cancel();
        hook.held.notified().await;
        while !tracker.lock_tasks().as_ref().is_some_and(|t| t.writer.is_finished()) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        // What `shutdown` and every interaction call: the heartbeat task is left to finish.
        tracker.ensure_writer();
        assert!(!tracker.restart_logged.load(Ordering::Relaxed), "taken for a writer gone");
        hook.released.notify_one();
        assert!(tracker.shutdown().await, "everything was written");
        assert!(!tracker.restart_logged.load(Ordering::Relaxed), "taken for a writer gone");
    }
}
