//! Recording interactions cheaply and without losing them.
//!
//! - **Cache.** A user written less than the resolution ago is not written again: an active
//!   user costs one hash-map lookup.
//! - **Group commit.** Users not in the cache join the pending batch; one background writer
//!   sends the whole batch as one `ZADD GT` while the next batch fills. Concurrent first
//!   touches of one user share the same write.
//! - **Outages.** A failed write moves its users to a bounded backlog that the writer
//!   retries with backoff; while the store is failing, touches go straight to the backlog
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

use std::collections::HashMap;
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
use crate::store::{DynBackend, Invalidation, Marked, random_id};
use crate::store::{FEED_KEEP_MS, FEED_READ};
use teloxide::RequestError;
use teloxide::types::{Recipient, UserId};

const MIN_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
const FEED_POLL: Duration = Duration::from_secs(1);
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
pub(crate) struct PendingMark {
    pub(crate) reason: ErasureReason,
    pub(crate) marked_at: i64,
    pub(crate) due: Option<i64>,
}

/// Telegram assigns user ids, so nobody can pick colliding keys: a fast hasher is safe.
type UserMap<V> = HashMap<u64, V, rustc_hash::FxBuildHasher>;

struct State {
    cache: UserMap<Seen>,
    pending: UserMap<i64>,
    /// Completes when `pending` has been written (`true`) or failed (`false`).
    slot: Arc<SetOnce<bool>>,
    /// The batch being written right now, and its completion.
    in_flight: UserMap<i64>,
    in_flight_slot: Arc<SetOnce<bool>>,
    backlog: UserMap<i64>,
    /// Gone marks the store could not take.
    marks: UserMap<PendingMark>,
    healthy: bool,
    /// Users with an erasure running in this process: never served from the cache.
    erasing: UserMap<Erasure>,
}

/// An erasure of one user running in this process.
#[derive(Default)]
struct Erasure {
    /// Guards alive ([`Tracker::begin_erasure`]).
    guards: usize,
    /// The user interacted meanwhile: that update's handler may write data after the
    /// erasers ran, even if its touch reaches the store only after the erasure finished.
    touched: bool,
}

pub(crate) struct Tracker {
    state: Mutex<State>,
    wake: Notify,
    backend: DynBackend,
    clock: Arc<SyncedClock>,
    /// Names this process's heartbeat in the store.
    writer_id: u64,
    heartbeat: Duration,
    resolution_ms: i64,
    follow_up_ms: i64,
    store_timeout: Duration,
    gone_policy: GonePolicy,
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
        backend: DynBackend,
        clock: Arc<SyncedClock>,
        counters: Arc<Counters>,
        hooks: Arc<Hooks>,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            state: Mutex::new(State {
                cache: UserMap::default(),
                pending: UserMap::default(),
                slot: Arc::new(SetOnce::new()),
                in_flight: UserMap::default(),
                in_flight_slot: Arc::new(SetOnce::new()),
                backlog: UserMap::default(),
                marks: UserMap::default(),
                healthy: true,
                erasing: UserMap::default(),
            }),
            wake: Notify::new(),
            backend,
            clock,
            writer_id: random_id(),
            heartbeat: config.heartbeat,
            resolution_ms: duration_ms(config.resolution),
            follow_up_ms: duration_ms(config.follow_up_delay),
            store_timeout: config.store_timeout,
            gone_policy: config.gone_policy,
            max_buffered: config.max_buffered_touches,
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

    /// Marks `user` gone now; see `Retention::mark_gone`.
    pub(crate) async fn mark_gone(
        self: &Arc<Self>,
        user: UserId,
        reason: GoneReason,
    ) -> Result<bool> {
        let mark = self.gone_mark(reason);
        self.write_mark(user, mark).await
    }

    /// See `Retention::is_reachable`.
    pub(crate) async fn is_reachable(&self, user: UserId) -> Result<bool> {
        if self.has_mark(user.0) {
            return Ok(false);
        }
        let status = crate::store::bounded(self.store_timeout, self.backend.status(user.0)).await?;
        Ok(match status.job {
            // Came back after the mark (as `claim.lua` decides).
            Some((reason, marked_at, _)) if reason.is_gone() => {
                status.last_seen.is_some_and(|seen| seen > marked_at)
            }
            _ => true,
        })
    }

    /// Like `Retention::mark_gone`, but a mark the store cannot take is kept in memory
    /// (bounded by `max_buffered_touches`) and written once the store answers again.
    pub(crate) async fn mark_gone_or_keep(self: &Arc<Self>, user: UserId, reason: GoneReason) {
        let mark = self.gone_mark(reason);
        let Err(e) = self.write_mark(user, mark).await else { return };
        if self.keep_mark(user.0, mark) {
            tracing::warn!(
                error = %e,
                user = user.0,
                %reason,
                "could not mark a gone user; kept in memory until the store answers again"
            );
        } else {
            tracing::error!(
                error = %e,
                user = user.0,
                %reason,
                "gone mark lost: the store is unreachable and the buffer is full"
            );
        }
    }

    /// A gone mark made now, due as the `GonePolicy` says.
    fn gone_mark(&self, reason: GoneReason) -> PendingMark {
        let now = self.clock.now_ms();
        let due = match self.gone_policy {
            GonePolicy::EraseNow => Some(now),
            GonePolicy::EraseAfter(grace) => Some(later(now, grace)),
            GonePolicy::MarkOnly => None,
        };
        PendingMark { reason: reason.into(), marked_at: now, due }
    }

    async fn write_mark(self: &Arc<Self>, user: UserId, mark: PendingMark) -> Result<bool> {
        if !crate::humans::is_trackable_id(user) {
            return Ok(false);
        }
        let PendingMark { reason, marked_at: now, due } = mark;
        let marked = crate::store::bounded(
            self.store_timeout,
            self.backend.schedule(user.0, reason, now, due),
        )
        .await?;
        if marked != Marked::Scheduled {
            return Ok(false);
        }
        tracing::info!(user = user.0, %reason, "user marked gone");
        self.newly_marked(user.0, reason);
        // From now on, any interaction of the user must reach the store: it cancels the mark.
        let inv = Invalidation { user: user.0, since: now, until: now, opt_out: false };
        self.announced_here(inv);
        self.invalidate(inv).await;
        Ok(true)
    }

    /// Cancels a scheduled gone erasure of `user` (they unblocked the bot). Opt-outs stay.
    pub(crate) async fn user_returned(&self, user: UserId) {
        self.forget_mark(user.0);
        match crate::store::bounded(self.store_timeout, self.backend.unschedule_gone(user.0)).await
        {
            Ok(true) => {
                tracing::info!(user = user.0, "user unblocked the bot; erasure cancelled");
                self.hooks.returned(user.0);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, user = user.0, "could not cancel a gone mark"),
        }
    }

    /// Marks the user of `chat` gone if `err` says so; see `Retention::note_send_error`.
    pub(crate) async fn note_send_error(
        self: &Arc<Self>,
        chat: impl Into<Recipient>,
        err: &RequestError,
    ) -> Result<Option<GoneReason>> {
        let Some((user, reason)) = gone_user(chat.into(), err) else {
            return Ok(None);
        };
        self.mark_gone(user, reason).await?;
        Ok(Some(reason))
    }

    /// Records that `user` interacted now if this process wrote them recently enough;
    /// returns `false` when a write is needed ([`Tracker::touch`]).
    pub(crate) fn touch_cached(&self, user: u64) -> bool {
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
    pub(crate) async fn touch(self: &Arc<Self>, user: u64, must_store: bool) -> Noted {
        let (now, slot) = {
            let mut st = self.lock();
            // Read under the lock: the first clock measurement shifts stored times with it.
            let now = self.clock.now_ms();
            if !st.erasing.is_empty()
                && let Some(erasure) = st.erasing.get_mut(&user)
            {
                erasure.touched = true;
            }
            if !st.marks.is_empty() && st.marks.get(&user).is_some_and(|m| m.marked_at < now) {
                // The user came back after a mark that never reached the store: drop it.
                st.marks.remove(&user);
            }
            if self.cached(&mut st, user, now) {
                return Noted::Cached;
            }
            let slot = if let Some(score) = st.pending.get_mut(&user) {
                *score = (*score).max(now);
                Arc::clone(&st.slot)
            } else if !st.erasing.contains_key(&user)
                && st.in_flight.get(&user).is_some_and(|s| now - s < self.resolution_ms)
            {
                // Being written right now, recently enough: share that write.
                Arc::clone(&st.in_flight_slot)
            } else if !st.healthy && !must_store {
                return self.buffer(&mut st, [(user, now)]);
            } else {
                st.pending.insert(user, now);
                Arc::clone(&st.slot)
            };
            (now, slot)
        };
        self.ensure_writer();
        if self.retired.get().is_some() {
            // After `shutdown`: nothing writes any more.
            return Noted::Dropped;
        }
        self.wake.notify_one();
        // The writer may be busy with a slow store (a hung Redis), or still reading where
        // the feed stands before its first write: never wait longer than the store timeout.
        // The interaction is not lost: it moves to the backlog, which the writer retries.
        match timeout(self.store_timeout, slot.wait()).await {
            Ok(true) => return Noted::Written,
            Ok(false) => {}
            Err(_) => {
                // Still waiting for the writer: move it to the backlog, so that "buffered"
                // is what the heartbeat reports (a write in flight stays in flight).
                let mut st = self.lock();
                return match st.pending.remove(&user) {
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

    /// Adds touches to the backlog; returns how the last one fared.
    fn buffer(&self, st: &mut State, touches: impl IntoIterator<Item = (u64, i64)>) -> Noted {
        let mut outcome = Noted::Buffered;
        for (user, ms) in touches {
            let room = st.backlog.len() < self.max_buffered;
            match st.backlog.get_mut(&user) {
                Some(score) => *score = (*score).max(ms),
                None if room => {
                    st.backlog.insert(user, ms);
                }
                None => {
                    Counters::add(&self.counters.touches_dropped, 1);
                    outcome = Noted::Dropped;
                    continue;
                }
            }
            Counters::add(&self.counters.touches_buffered, 1);
            outcome = Noted::Buffered;
        }
        outcome
    }

    /// Keeps a gone mark the store could not take, to write it when the store answers again.
    /// Returns `false` if the buffer is full (the mark is lost).
    pub(crate) fn keep_mark(self: &Arc<Self>, user: u64, mark: PendingMark) -> bool {
        {
            let mut st = self.lock();
            // Later interactions must not be served from the cache: they cancel the mark.
            st.cache.remove(&user);
            if st.marks.len() >= self.max_buffered && !st.marks.contains_key(&user) {
                Counters::add(&self.counters.marks_dropped, 1);
                return false;
            }
            // An earlier mark of the user stays: it started the grace period.
            st.marks.entry(user).or_insert(mark);
        }
        self.ensure_writer();
        self.wake.notify_one();
        true
    }

    /// Drops a gone mark of `user` still waiting for the store (they unblocked the bot).
    pub(crate) fn forget_mark(&self, user: u64) {
        let mut st = self.lock();
        if !st.marks.is_empty() {
            st.marks.remove(&user);
        }
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
        let scheduled = self.backend.schedule(user, ErasureReason::OptOut, now, due);
        match timeout(self.store_timeout, scheduled).await {
            Ok(Ok(marked)) => {
                if marked == Marked::Scheduled {
                    Counters::add(&self.counters.follow_ups, 1);
                }
                true
            }
            Err(_) => {
                tracing::warn!(
                    user,
                    "could not schedule a follow-up erasure after an in-flight update: the \
                     store did not answer in time"
                );
                false
            }
            Ok(Err(e)) => {
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
        let within = |ms: i64| ms >= inv.since && ms <= inv.until;
        let (write, in_window) = {
            let mut st = self.lock();
            let st = &mut *st;
            let mut write = false;
            let mut in_window = false;
            if let Some(seen) = st.cache.remove(&inv.user) {
                in_window = within(seen.written) || within(seen.skipped);
                if seen.skipped >= inv.since {
                    let score = st.pending.entry(inv.user).or_insert(seen.skipped);
                    *score = (*score).max(seen.skipped);
                    write = true;
                }
            }
            if inv.opt_out {
                for unwritten in [&mut st.pending, &mut st.backlog] {
                    match unwritten.get(&inv.user) {
                        Some(&ms) if ms < inv.since => {
                            unwritten.remove(&inv.user);
                        }
                        Some(&ms) => in_window |= ms <= inv.until,
                        None => {}
                    }
                }
                in_window |= st.in_flight.get(&inv.user).is_some_and(|&ms| within(ms));
            }
            (write, in_window)
        };
        if write {
            self.ensure_writer();
            self.wake.notify_one();
        }
        if inv.opt_out && in_window {
            self.schedule_follow_up(inv.user).await;
        }
        write
    }

    /// Writes the pending interactions now and waits for a write in flight, so that the
    /// store holds every interaction taken before the call (or, if it fails, the backlog
    /// does). Bounded by the store timeout.
    pub(crate) async fn settle(&self) {
        self.write_pending().await;
        let in_flight = {
            let st = self.lock();
            (!st.in_flight.is_empty()).then(|| Arc::clone(&st.in_flight_slot))
        };
        if let Some(slot) = in_flight {
            let _ = timeout(self.store_timeout, slot.wait()).await;
        }
    }

    /// Writes everything pending and buffered now.
    pub(crate) async fn flush(self: &Arc<Self>) -> Result<()> {
        self.ensure_writer();
        self.write_pending().await;
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

    /// Starts the writer and the heartbeat now if the caller runs on a tokio runtime (the
    /// layer is being built): the heartbeat tells `RedisStore::reshard` that a bot runs
    /// before its first interaction, and where the feed stands is read before the first
    /// update arrives instead of in front of its write. Elsewhere they start with the first
    /// interaction.
    pub(crate) fn start_if_in_runtime(self: &Arc<Self>) {
        if Handle::try_current().is_ok() {
            self.ensure_writer();
        }
    }

    /// Starts the writer and the heartbeat on the caller's runtime unless they run already,
    /// or starts them again if they are gone: their runtime shut down (a test harness that
    /// builds a runtime per dispatch, a runtime rebuilt after a panic), a task panicked, or
    /// they sit on a single-threaded runtime other than the caller's, which only runs them
    /// while someone drives it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub(crate) fn ensure_writer(self: &Arc<Self>) {
        let mut tasks = self.lock_tasks();
        if self.retired.get().is_some() {
            // Shut down for good: interactions recorded afterwards are not written.
            return;
        }
        let here = Handle::current();
        if tasks.as_ref().is_some_and(|t| t.serve(&here)) {
            return;
        }
        if let Some(old) = tasks.take() {
            old.writer.abort();
            old.pulse.abort();
            self.recover_in_flight();
            if !self.restart_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the background writer of teloxide-retention was gone (its tokio runtime \
                     shut down or it panicked); started it again on the current runtime, \
                     nothing buffered is lost (logged once)"
                );
            } else {
                tracing::debug!("background writer started again on the current runtime");
            }
        }
        *tasks = Some(Tasks {
            runtime: here.id(),
            flavor: here.runtime_flavor(),
            writer: here.spawn(Arc::clone(self).run()),
            pulse: here.spawn(Arc::clone(self).pulse()),
        });
    }

    /// Puts the batch a writer that is gone had in flight back into the pending batch: it
    /// may or may not have reached the store, and writing it again never moves a user back.
    fn recover_in_flight(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        if st.in_flight.is_empty() {
            return;
        }
        for (user, ms) in st.in_flight.drain() {
            let score = st.pending.entry(user).or_insert(ms);
            *score = (*score).max(ms);
        }
        // Callers that waited for it wait for the next write instead (never past the store
        // timeout): completing the old slot would tell them their write failed.
        st.in_flight_slot = Arc::clone(&st.slot);
    }

    /// The background writer: flushes batches, retries the backlog, reads the feed and
    /// keeps the cache small.
    async fn run(self: Arc<Self>) {
        let mut backoff = MIN_BACKOFF;
        let mut retry_at: Option<Instant> = None;
        let mut next_poll = Instant::now();
        let sweep_every = Duration::from_millis(self.resolution_ms.unsigned_abs());
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            let mut wake_at = next_poll.min(next_sweep);
            if let Some(at) = retry_at {
                wake_at = wake_at.min(at);
            }
            tokio::select! {
                () = self.cancel.cancelled() => {
                    // Last chance for buffered interactions; bounded by the store timeout.
                    let flushed = self.flush().await;
                    let _ = self.flushed.set(flushed.is_ok());
                    return;
                }
                () = self.wake.notified() => {}
                () = sleep_until(wake_at) => {}
            }
            // Times are corrected by the offset to the store's clock before the first write
            // (later measurements are the pulse's).
            if !self.clock.is_synced() {
                self.sync_clock_if_stale().await;
            }
            if self.feed.lock().await.cursor.is_none() && self.lock().healthy {
                // Where the feed stands is read before this process writes anything, so that
                // an erasure announced after a write comes after the cursor and drops the
                // cached user. (Users written while it cannot be read are dropped from the
                // cache once it can: see `FeedReader::poll`.)
                let _ = timeout(self.store_timeout, self.poll_feed()).await;
                next_poll = Instant::now() + FEED_POLL;
            }
            self.write_pending().await;
            if retry_at.is_some_and(|at| at <= Instant::now()) {
                retry_at = None;
            }
            let has_backlog = {
                let st = self.lock();
                !st.backlog.is_empty() || !st.marks.is_empty()
            };
            if has_backlog && retry_at.is_none() {
                if self.feed.lock().await.cursor.is_some() {
                    // Read the erasures announced meanwhile first: interactions of users
                    // who opted out since are dropped from the backlog instead of tracking
                    // them again (see `invalidate`).
                    let _ = timeout(self.store_timeout, self.poll_feed()).await;
                    next_poll = Instant::now() + FEED_POLL;
                }
                if self.write_backlog().await.is_ok() {
                    backoff = MIN_BACKOFF;
                } else {
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            if next_poll <= Instant::now() {
                // Bounded: pending touches wait for this loop.
                let _ = timeout(self.store_timeout, self.poll_feed()).await;
                next_poll = Instant::now() + FEED_POLL;
            }
            if next_sweep <= Instant::now() {
                self.sweep();
                next_sweep = Instant::now() + sweep_every;
            }
        }
    }

    async fn poll_feed(self: &Arc<Self>) {
        self.feed.lock().await.poll(self).await;
    }

    /// Beside the writer, so that a slow store never delays writes: sends the heartbeats and
    /// measures the clock offset. At shutdown it removes the heartbeat once the writer's last
    /// flush wrote everything (a writer that still holds interactions keeps holding pruners
    /// back until it counts as dead).
    async fn pulse(self: Arc<Self>) {
        loop {
            self.beat().await;
            // The first measurement is the writer's, before its first write.
            if self.clock.is_synced() {
                self.sync_clock_if_stale().await;
            }
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(self.heartbeat) => {}
            }
        }
        let wait = self.store_timeout.saturating_mul(4);
        if let Ok(true) = timeout(wait, self.flushed.wait()).await.copied() {
            let retire = self.backend.retire(self.writer_id);
            let _ = timeout(self.store_timeout, retire).await;
        }
        let _ = self.retired.set(());
    }

    /// Stops the writer: writes what is buffered, removes the heartbeat, and returns once
    /// done (bounded by a few store timeouts). `false` if interactions were left unwritten.
    pub(crate) async fn shutdown(self: &Arc<Self>) -> bool {
        self.cancel.cancel();
        if self.lock_tasks().is_none() {
            return true;
        }
        if let Some(&flushed) = self.retired.get().and(self.flushed.get()) {
            return flushed;
        }
        // Tasks whose runtime is gone cannot finish: start them on this one, where they see
        // the cancellation at once, write what is left and remove the heartbeat.
        self.ensure_writer();
        let wait = self.store_timeout.saturating_mul(6);
        let _ = timeout(wait, self.retired.wait()).await;
        self.flushed.get().copied().unwrap_or(false)
    }

    fn lock_tasks(&self) -> MutexGuard<'_, Option<Tasks>> {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the store this writer is alive and how many interactions it has not written.
    async fn beat(&self) {
        let backlog = {
            let st = self.lock();
            let unwritten = if st.healthy { 0 } else { st.pending.len() };
            (st.backlog.len() + unwritten) as u64
        };
        let beat = self.backend.heartbeat(self.writer_id, backlog);
        match timeout(self.store_timeout, beat).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "could not send a heartbeat"),
            Err(_) => tracing::debug!("could not send a heartbeat: the store did not answer"),
        }
    }

    /// Measures the offset to the store's clock if the last measurement is older than
    /// [`CLOCK_SYNC`].
    pub(crate) async fn sync_clock_if_stale(&self) {
        if self.clock.is_wall_clock() && self.clock.should_sync(CLOCK_SYNC) {
            self.sync_clock().await;
        }
    }

    /// Measures the offset between this process's clock and the store's (Redis `TIME`),
    /// from the midpoint of the round trip. The first measurement also corrects the times
    /// this process took before it.
    async fn sync_clock(&self) {
        let before = self.clock.local_ms();
        let time = match timeout(self.store_timeout, self.backend.server_time()).await {
            Ok(Ok(time)) => time,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "could not read the store's clock");
                return;
            }
            Err(_) => {
                tracing::debug!("could not read the store's clock: the store did not answer");
                return;
            }
        };
        let after = self.clock.local_ms();
        let Some(server) = time else {
            // No clock of its own (the in-memory store): this process's clock decides.
            self.clock.set_offset(0, false);
            return;
        };
        let local = before + (after - before) / 2;
        let offset = server.saturating_sub(local);
        if offset.abs() > SKEW_WARNING_MS {
            Counters::add(&self.counters.skew_warnings, 1);
            tracing::warn!(
                offset_ms = offset,
                "this host's clock is {} s {} Redis's; times are corrected by the offset, \
                 but fix the host's time synchronisation (NTP)",
                offset.abs() as f64 / 1000.0,
                if offset > 0 { "behind" } else { "ahead of" }
            );
        }
        let mut st = self.lock();
        let (old, first) = self.clock.set_offset(offset, true);
        let delta = offset - old;
        if first && delta != 0 {
            let st = &mut *st;
            for score in st.pending.values_mut().chain(st.backlog.values_mut()) {
                *score = score.saturating_add(delta);
            }
            for seen in st.cache.values_mut() {
                seen.written = seen.written.saturating_add(delta);
                if seen.skipped != 0 {
                    seen.skipped = seen.skipped.saturating_add(delta);
                }
            }
            for mark in st.marks.values_mut() {
                mark.marked_at = mark.marked_at.saturating_add(delta);
                mark.due = mark.due.map(|d| d.saturating_add(delta));
            }
        }
    }

    /// Writes the pending batch and completes its waiters.
    async fn write_pending(&self) {
        let (touches, slot) = {
            let mut st = self.lock();
            if st.pending.is_empty() {
                return;
            }
            let slot = std::mem::replace(&mut st.slot, Arc::new(SetOnce::new()));
            st.in_flight = std::mem::take(&mut st.pending);
            st.in_flight_slot = Arc::clone(&slot);
            let touches: Vec<(u64, i64)> = st.in_flight.iter().map(|(u, s)| (*u, *s)).collect();
            (touches, slot)
        };
        let result = self.write(&touches).await;
        {
            let mut st = self.lock();
            st.in_flight.clear();
            match &result {
                Ok(()) => self.written(&mut st, &touches),
                Err(e) => {
                    if st.healthy && !e.is_config() {
                        tracing::warn!(
                            error = %e,
                            users = touches.len(),
                            "could not record interactions; buffering them until the store \
                             answers again"
                        );
                    }
                    st.healthy = false;
                    self.write_failed(e);
                    self.buffer(&mut st, touches.iter().copied());
                }
            }
        }
        let _ = slot.set(result.is_ok());
    }

    /// Writes a snapshot of the backlog, then the waiting gone marks, and removes what was
    /// written. The backlog stays in place meanwhile, so its bound holds and newer touches
    /// merge into it.
    async fn write_backlog(self: &Arc<Self>) -> Result<()> {
        let touches: Vec<(u64, i64)> = self.lock().backlog.iter().map(|(u, s)| (*u, *s)).collect();
        if touches.is_empty() {
            return self.write_marks().await;
        }
        if let Err(e) = self.write(&touches).await {
            self.write_failed(&e);
            return Err(e);
        }
        tracing::info!(users = touches.len(), "store answers again; wrote buffered interactions");
        {
            let mut st = self.lock();
            for (user, ms) in &touches {
                if st.backlog.get(user).is_some_and(|s| s <= ms) {
                    st.backlog.remove(user);
                }
            }
            self.written(&mut st, &touches);
        }
        self.write_marks().await
    }

    /// Writes the gone marks that wait for the store, one script call each, with their
    /// original times: a user who interacted since (their touch is in the store now) is
    /// not erased, exactly as if the mark had been stored when it happened.
    async fn write_marks(self: &Arc<Self>) -> Result<()> {
        let marks: Vec<(u64, PendingMark)> =
            self.lock().marks.iter().map(|(u, m)| (*u, *m)).collect();
        for (user, mark) in marks {
            let schedule = self.backend.schedule(user, mark.reason, mark.marked_at, mark.due);
            let marked = match timeout(self.store_timeout, schedule).await {
                Ok(result) => result?,
                Err(_) => return Err(Error::Timeout(self.store_timeout)),
            };
            {
                let mut st = self.lock();
                // Remove it unless the user came back meanwhile (and it is gone already).
                if st.marks.get(&user).is_some_and(|m| m.marked_at == mark.marked_at) {
                    st.marks.remove(&user);
                }
            }
            if marked == Marked::Scheduled {
                self.newly_marked(user, mark.reason);
            }
            // As for a mark written at once: interactions this process served from its cache
            // since the mark must reach the store, where they cancel it.
            let since = mark.marked_at;
            let inv = Invalidation { user, since, until: since, opt_out: false };
            if marked == Marked::Scheduled {
                self.announced_here(inv);
            }
            self.invalidate(inv).await;
            tracing::info!(user, reason = %mark.reason, "wrote a gone mark kept during an outage");
        }
        Ok(())
    }

    /// Counts a failed write; a store opened with the wrong shard count is a configuration
    /// error, logged once at error level (not per update).
    fn write_failed(&self, e: &Error) {
        Counters::add(&self.counters.touch_write_failures, 1);
        if !e.is_config() {
            return;
        }
        Counters::add(&self.counters.layout_errors, 1);
        if !self.layout_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                error = %e,
                "interactions cannot be recorded: the store is opened with another shard \
                 count than its namespace's; they are kept in memory (up to \
                 max_buffered_touches users) until the store is opened with the right count \
                 (logged once)"
            );
        }
    }

    async fn write(&self, touches: &[(u64, i64)]) -> Result<()> {
        match timeout(self.store_timeout, self.backend.touch(touches)).await {
            Ok(result) => result,
            Err(_) => Err(Error::Timeout(self.store_timeout)),
        }
    }

    fn written(&self, st: &mut State, touches: &[(u64, i64)]) {
        st.healthy = true;
        Counters::add(&self.counters.touches_written, touches.len() as u64);
        for &(user, ms) in touches {
            let seen = st.cache.entry(user).or_insert(Seen { written: ms, skipped: 0 });
            seen.written = seen.written.max(ms);
        }
    }

    /// Empties the cache; interactions it skipped writing join the pending batch.
    fn forget_cache(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut skipped = false;
        for (user, seen) in st.cache.drain() {
            if seen.skipped > seen.written {
                let score = st.pending.entry(user).or_insert(seen.skipped);
                *score = (*score).max(seen.skipped);
                skipped = true;
            }
        }
        if skipped {
            self.wake.notify_one();
        }
    }

    /// Drops cache entries that can no longer skip a write nor matter to an invalidation.
    fn sweep(&self) {
        let horizon = self.clock.now_ms().saturating_sub(self.resolution_ms.saturating_mul(2));
        self.lock().cache.retain(|_, s| s.written.max(s.skipped) >= horizon);
        // Echoes that never came (the feed could not be read in time) are forgotten.
        let keep = Duration::from_millis(FEED_KEEP_MS.unsigned_abs());
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (_, _, at)| at.elapsed() < keep);
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
}

/// An erasure running in this process; see [`Tracker::begin_erasure`].
pub(crate) struct Erasing<'a> {
    tracker: &'a Tracker,
    user: u64,
}

impl Erasing<'_> {
    /// The user interacted since the first guard of this erasure was taken.
    pub(crate) fn touched(&self) -> bool {
        self.tracker.lock().erasing.get(&self.user).is_some_and(|e| e.touched)
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

/// Follows the store's feed of erasures.
#[derive(Default)]
struct FeedReader {
    cursor: Option<String>,
    last_ok: Option<Instant>,
}

impl FeedReader {
    /// Reads the feed until it is caught up (a burst larger than one read is not left for
    /// later polls, where it could expire unseen), applying each invalidation.
    async fn poll(&mut self, tracker: &Arc<Tracker>) {
        loop {
            let read = match &self.cursor {
                None => tracker.backend.feed_head().await.map(|head| (Vec::new(), head)),
                Some(cursor) => tracker.backend.feed_read(cursor).await,
            };
            let (invalidations, next) = match read {
                Ok(read) => read,
                Err(e) => {
                    tracing::debug!(error = %e, "could not read the erasure feed");
                    return;
                }
            };
            let gap = self.last_ok.is_some_and(|at| {
                at.elapsed() > Duration::from_millis(FEED_KEEP_MS.unsigned_abs() / 2)
            });
            if gap || self.cursor.is_none() {
                // Announcements may have expired unseen, or users were written before the
                // feed's position was known (it could not be read then): forget the cache
                // instead, but first send what it skipped to the store, so that no
                // interaction served from it is lost.
                tracker.forget_cache();
            }
            let full = invalidations.len() >= FEED_READ;
            self.cursor = Some(next);
            self.last_ok = Some(Instant::now());
            for inv in invalidations {
                if !tracker.is_own_echo(&inv) {
                    tracker.invalidate(inv).await;
                }
            }
            if !full {
                return;
            }
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
        let backend = MemoryStore::new().bind("t", crate::store::sealed::Token).0;
        let clock = ManualClock::at_unix_ms(1_000);
        let tracker = Arc::new(Tracker::new(
            &crate::config::Config::for_tests(),
            Arc::clone(&backend),
            Arc::new(SyncedClock::new(Arc::new(clock.clone()))),
            Arc::default(),
            Arc::default(),
            CancellationToken::new(),
        ));
        assert_eq!(tracker.touch(1, false).await, Noted::Written);
        clock.advance(Duration::from_secs(10));
        assert!(tracker.touch_cached(1), "served from the cache");
        tracker.forget_cache();
        assert_eq!(tracker.cached_users(), 0);
        tracker.flush().await.unwrap();
        assert_eq!(backend.status(1).await.unwrap().last_seen, Some(11_000));
    }
}
