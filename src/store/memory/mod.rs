use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use crate::clock::{Clock, SystemClock};
use crate::erase::ErasureReason;
use crate::error::Result;
use crate::receipts::RawReceipt;
use crate::store::FEED_KEEP_MS;

mod census;
use crate::store::{
    AdoptCounts, Adoptee, Backend, Batch, CensusAnswer, CensusPage, CensusWalk, ClaimRequest,
    ClaimTimes, ClaimUser, Claimed, Confirmed, Decision, Failing, FeedPage, Finish, FinishRequest,
    Hashed, Health, Heartbeat, Interaction, Invalidation, Job, LastErasure, Marked, Notice,
    PreviewEntry, Queued, RawPreview, RawStatus, RawSurvey, Retry, ScheduleRequest, SeenRange,
    Store, Unschedule, WriterWindow, came_back, follow_up, held_through, postponed, sealed,
    take_or_drop, too_many_notices,
};

/// An in-process store with the same behaviour as [`RedisStore`](crate::RedisStore).
///
/// For development, the offline demo and your own tests: no server, nothing persisted.
/// Clones share their data, so two [`Retention`](crate::Retention) instances built on clones
/// of one `MemoryStore` behave like two bot replicas sharing one Redis.
#[derive(Clone, Default)]
pub struct MemoryStore {
    spaces: Arc<Mutex<HashMap<String, Space>>>,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore").finish_non_exhaustive()
    }
}

impl MemoryStore {
    /// Creates an empty store.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }
}

impl Store for MemoryStore {
    fn bind(&self, namespace: &str, _: sealed::Token) -> sealed::Bound {
        sealed::Bound(Arc::new(MemoryNamespace {
            spaces: Arc::clone(&self.spaces),
            namespace: namespace.to_owned(),
        }))
    }
}

/// A sorted set of users, like a Redis `ZSET` with integer scores.
#[derive(Default)]
struct ZSet {
    scores: HashMap<u64, i64>,
    order: BTreeSet<(i64, u64)>,
}

impl ZSet {
    fn score(&self, user: u64) -> Option<i64> {
        self.scores.get(&user).copied()
    }

    fn set(&mut self, user: u64, score: i64) {
        if let Some(old) = self.scores.insert(user, score) {
            self.order.remove(&(old, user));
        }
        self.order.insert((score, user));
    }

    /// `ZADD GT`: only moves a score up; adds missing members.
    fn set_gt(&mut self, user: u64, score: i64) {
        if self.score(user).is_none_or(|old| score > old) {
            self.set(user, score);
        }
    }

    fn remove(&mut self, user: u64) -> Option<i64> {
        let old = self.scores.remove(&user)?;
        self.order.remove(&(old, user));
        Some(old)
    }

    /// Members with a score at or below `max`, lowest first.
    fn up_to(&self, max: i64, limit: usize) -> Vec<(u64, i64)> {
        self.order.iter().take_while(|(s, _)| *s <= max).take(limit).map(|&(s, u)| (u, s)).collect()
    }

    fn count_up_to(&self, max: i64) -> u64 {
        self.order.iter().take_while(|(s, _)| *s <= max).count() as u64
    }

    /// Members with a score above `above` (if any) and at or below `max`, lowest first.
    fn between(&self, above: Option<i64>, max: i64, limit: usize) -> Vec<(u64, i64)> {
        let Some(above) = above else { return self.up_to(max, limit) };
        let Some(start) = above.checked_add(1) else { return Vec::new() };
        let range = self.order.range((start, 0)..);
        range.take_while(|(s, _)| *s <= max).take(limit).map(|&(s, u)| (u, s)).collect()
    }

    fn count_between(&self, above: Option<i64>, max: i64) -> u64 {
        let below = above.map_or(0, |a| self.count_up_to(a.min(max)));
        self.count_up_to(max) - below
    }
}

/// One namespace.
#[derive(Default)]
struct Space {
    seen: ZSet,
    /// Batch id → lease deadline.
    lease: ZSet,
    /// Batch id → its users.
    batches: HashMap<u64, Vec<u64>>,
    queue: ZSet,
    job: HashMap<u64, Job>,
    /// User → (first failure, last report as stuck) of a failing erasure.
    failing: HashMap<u64, (i64, i64)>,
    /// Erasure receipts, oldest first: the user's keyed hash and the receipt.
    receipts: VecDeque<(String, RawReceipt)>,
    feed: VecDeque<(u64, Instant, Invalidation)>,
    feed_seq: u64,
    /// Nonces and counters, with their real-time expiry (like Redis TTLs).
    kv: HashMap<String, (String, Instant)>,
    /// Writer id → (last heartbeat, unwritten interactions).
    writers: HashMap<u64, (Instant, u64)>,
    /// See `Backend::secret`.
    secret: Option<String>,
    /// See `Backend::record_audit`.
    last_audit: Option<String>,
    /// The census's state per user: (last probed, last reachable; 0 if never), ms.
    probes: HashMap<u64, (i64, i64)>,
    /// Where the census's walk stands (see `census_cursor`).
    census: Option<String>,
    /// See `Backend::erasures_finished`.
    erasures_finished: u64,
    /// See `Backend::add_notice`.
    notices: Vec<Notice>,
}

impl Space {
    /// See `Backend::unschedule_gone` (and `unschedule_gone.lua`), one request.
    fn unschedule_gone(&mut self, request: Unschedule) -> bool {
        let Unschedule { user, only, postpone_to } = request;
        let Some(job) = self.job.get(&user) else { return false };
        if !job.reason.is_gone() || only.is_some_and(|o| o != *job) {
            return false;
        }
        if let Some(due) = postpone_to {
            // Only while it waits in the queue (not running), and later only.
            return self.queue.score(user).is_some_and(|current| {
                self.queue.set(user, due.max(current));
                true
            });
        }
        if self.queue.remove(user).is_none() {
            return false;
        }
        self.job.remove(&user);
        self.failing.remove(&user);
        true
    }

    fn came_back(&self, user: u64, job: Job) -> bool {
        came_back(job, self.seen.score(user))
    }

    fn job_of(&self, user: u64) -> Job {
        self.job.get(&user).copied().unwrap_or(Job::INACTIVE)
    }

    /// The batch holding `user`, and its deadline (see `batches.lua`).
    fn batch_of(&self, user: u64) -> Option<(u64, i64)> {
        let (&id, _) = self.batches.iter().find(|(_, users)| users.contains(&user))?;
        Some((id, self.lease.score(id).unwrap_or(0)))
    }

    /// Takes a user with a job (or of a dead pruner's batch) unless they came back (a gone
    /// user who came back goes to `returned`).
    /// Applies the claim's [`Decision`] for `user` (a held user stays where they are).
    fn take_or_drop(
        &mut self,
        user: u64,
        hold: bool,
        users: &mut Vec<Claimed>,
        returned: &mut Vec<u64>,
    ) -> Decision {
        let job = self.job_of(user);
        let decision = take_or_drop(job, self.seen.score(user), hold);
        match decision {
            Decision::Drop => {
                self.job.remove(&user);
                self.failing.remove(&user);
                if job.reason.is_gone() {
                    returned.push(user);
                }
            }
            Decision::Take => {
                self.seen.remove(user);
                users.push(Claimed::from_job(user, job));
            }
            Decision::Hold => {}
        }
        decision
    }

    /// See `writers_hold` in `writers.lua`; also forgets dead writers.
    fn writers_hold(&mut self, w: WriterWindow) -> Option<String> {
        let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        self.writers.retain(|_, (at, _)| ms(at.elapsed()) <= w.dead_ms);
        self.writers.iter().find_map(|(id, (at, backlog))| {
            if *backlog > 0 {
                Some(format!("writer {id} holds {backlog} unwritten interactions"))
            } else if ms(at.elapsed()) > w.silent_ms {
                Some(format!(
                    "writer {id} missed its heartbeats for {} s (it may be cut off from the store)",
                    at.elapsed().as_secs()
                ))
            } else {
                None
            }
        })
    }

    fn announce(&mut self, inv: Invalidation) {
        let now = Instant::now();
        let keep = Duration::from_millis(FEED_KEEP_MS.unsigned_abs());
        while self.feed.front().is_some_and(|(_, at, _)| now.duration_since(*at) > keep) {
            self.feed.pop_front();
        }
        self.feed_seq += 1;
        self.feed.push_back((self.feed_seq, now, inv));
    }

    fn kv_get(&mut self, key: &str) -> Option<&mut (String, Instant)> {
        let now = Instant::now();
        self.kv.retain(|_, (_, expires)| *expires > now);
        self.kv.get_mut(key)
    }
}

fn ttl(ms: i64) -> Instant {
    Instant::now() + Duration::from_millis(ms.max(1).unsigned_abs())
}

struct MemoryNamespace {
    spaces: Arc<Mutex<HashMap<String, Space>>>,
    namespace: String,
}

impl MemoryNamespace {
    /// Runs `f` on this namespace, atomically (like a Lua script).
    fn with<T>(&self, f: impl FnOnce(&mut Space) -> T) -> Result<T> {
        let mut spaces: MutexGuard<'_, _> =
            self.spaces.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        Ok(f(spaces.entry(self.namespace.clone()).or_default()))
    }

    fn ready<'a, T: Send + 'a>(&self, f: impl FnOnce(&mut Space) -> T) -> BoxFuture<'a, Result<T>> {
        let result = self.with(f);
        Box::pin(async move { result })
    }
}

impl Backend for MemoryNamespace {
    fn parts(&self) -> Vec<&dyn Backend> {
        vec![self]
    }

    fn record_interactions<'a>(
        &'a self,
        seen: &'a [Interaction],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        self.ready(|s| {
            let now = now.unwrap_or_else(|| SystemClock.now_ms());
            for &Interaction { user, at } in seen {
                s.seen.set_gt(user, crate::store::no_later_than(at, now));
            }
        })
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>> {
        let ClaimRequest { times, writers, limit, batch: id } = request;
        self.ready(|s| {
            let now = times.now.unwrap_or_else(|| SystemClock.now_ms());
            let cutoff = now.saturating_sub(times.inactive_ms);
            let deadline = now.saturating_add(times.lease_ms);
            let held = s.writers_hold(writers);
            let (mut users, mut returned) = (Vec::new(), Vec::new());
            // 1. Batches whose lease expired.
            for (old, old_deadline) in s.lease.up_to(now, crate::store::EXPIRED_BATCHES_PER_CLAIM) {
                if users.len() >= limit {
                    break;
                }
                let members = s.batches.remove(&old).unwrap_or_default();
                let mut rest = Vec::new();
                for user in members {
                    if users.len() >= limit {
                        rest.push(user);
                    } else {
                        // Decided when nothing held: a takeover finishes it.
                        s.take_or_drop(user, false, &mut users, &mut returned);
                    }
                }
                // What does not fit stays in the old batch, still expired (see claim.lua).
                if rest.is_empty() {
                    s.lease.remove(old);
                } else {
                    s.batches.insert(old, rest);
                    // A new deadline, still expired, so that the batch's own pruner finds
                    // its lease lost (see claim.lua).
                    s.lease.set(old, if old_deadline == now { now - 1 } else { now });
                }
            }
            // 2. Due scheduled erasures. While writers hold, an erasure for inactivity is
            // postponed (see `postponed`), so that those behind it go on.
            let postponed = postponed(now, writers);
            for (user, _) in
                s.queue.up_to(now, limit.saturating_sub(users.len()) + crate::store::DUE_SCAN_SLACK)
            {
                if users.len() >= limit {
                    break;
                }
                match s.take_or_drop(user, held.is_some(), &mut users, &mut returned) {
                    Decision::Hold => s.queue.set(user, postponed),
                    Decision::Take | Decision::Drop => {
                        s.queue.remove(user);
                    }
                }
            }
            // 3. Inactive users, unless a writer may hold unwritten interactions; above what
            // a running notice holds.
            if held.is_none() {
                let above = held_through(&s.notices, now);
                for (user, _) in s.seen.between(above, cutoff, limit.saturating_sub(users.len())) {
                    let job =
                        if s.queue.remove(user).is_some() { s.job_of(user) } else { Job::INACTIVE };
                    s.seen.remove(user);
                    users.push(Claimed::from_job(user, job));
                }
            }
            if !users.is_empty() {
                s.batches.insert(id, users.iter().map(|c| c.user).collect());
                s.lease.set(id, deadline);
            }
            Batch { id, deadline, users, held, unreadable: Vec::new(), returned }
        })
    }

    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>> {
        let ClaimUser { user, reason, times, batch: id } = request;
        self.ready(|s| {
            let now = times.now.unwrap_or_else(|| SystemClock.now_ms());
            let deadline = now.saturating_add(times.lease_ms);
            let attempts = s.job.get(&user).map_or(0, |j| j.attempts);
            let job = Job { reason, marked_at: now, attempts };
            s.job.insert(user, job);
            if let Some((held_by, until)) = s.batch_of(user) {
                if until > now {
                    return None;
                }
                if let Some(users) = s.batches.get_mut(&held_by) {
                    users.retain(|u| *u != user);
                }
            }
            s.queue.remove(user);
            s.seen.remove(user);
            s.batches.insert(id, vec![user]);
            s.lease.set(id, deadline);
            let users = vec![Claimed::from_job(user, job)];
            Some(Batch {
                id,
                deadline,
                users,
                held: None,
                unreadable: Vec::new(),
                returned: Vec::new(),
            })
        })
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async { Ok(None) })
    }

    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        self.ready(|s| {
            s.writers.insert(id, (Instant::now(), backlog));
        })
    }

    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        self.ready(|s| {
            s.writers.remove(&id);
        })
    }

    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        self.ready(|s| s.writers_hold(writers))
    }

    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        Box::pin(async { Ok(Health::default()) })
    }

    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>> {
        let FinishRequest { batch, done, failed, now, follow_up_at, stuck, receipts } = request;
        self.ready(|s| {
            if s.lease.score(batch.id) != Some(batch.deadline) {
                return None;
            }
            if !done.is_empty() {
                s.erasures_finished += 1;
            }
            if let Some(receipts) = receipts {
                while s.receipts.front().is_some_and(|(_, r)| r.at < now - receipts.keep_ms) {
                    s.receipts.pop_front();
                }
                for (c, tag) in done.iter().zip(&receipts.tags) {
                    let receipt = RawReceipt {
                        at: now,
                        // An opt-out may have taken over a running erasure.
                        reason: s.job.get(&c.user).map_or(c.reason, |j| j.reason),
                        erasers: receipts.erasers.clone(),
                        attempts: c.attempts.saturating_add(1),
                    };
                    s.receipts.push_back((tag.clone(), receipt));
                }
            }
            let confirmed: Vec<Confirmed> = done
                .iter()
                .map(|c| {
                    let Some(Job { reason, marked_at, .. }) = s.job.get(&c.user).copied() else {
                        return Confirmed::Erased;
                    };
                    if reason != ErasureReason::Inactive {
                        s.announce(Invalidation {
                            user: c.user,
                            since: marked_at,
                            until: now,
                            opt_out: reason == ErasureReason::OptOut,
                        });
                    }
                    if follow_up(reason, c.reason, s.seen.score(c.user).is_some()) {
                        s.queue.set(c.user, follow_up_at);
                        s.job.insert(c.user, Job::opt_out(now));
                        return Confirmed::ErasedWithFollowUp;
                    }
                    s.job.remove(&c.user);
                    Confirmed::Erased
                })
                .collect();
            for c in done {
                s.failing.remove(&c.user);
                s.probes.remove(&c.user);
            }
            let mut failing = Vec::with_capacity(failed.len());
            for &Retry { claimed: c, due } in failed {
                let reason = s.job.get(&c.user).map_or(c.reason, |j| j.reason);
                s.queue.set(c.user, due);
                let attempts = c.attempts.saturating_add(1);
                s.job.insert(c.user, Job { reason, marked_at: c.marked_at, attempts });
                let (since, reported) = s.failing.entry(c.user).or_insert((now, 0));
                let report = now - *since >= stuck.after_ms && now - *reported >= stuck.every_ms;
                if report {
                    *reported = now;
                }
                failing.push(Failing { since: *since, report });
            }
            s.batches.remove(&batch.id);
            s.lease.remove(batch.id);
            Some(Finish { confirmed, failing })
        })
    }

    fn schedule(&self, request: ScheduleRequest) -> BoxFuture<'_, Result<Marked>> {
        let ScheduleRequest { user, reason, marked_at, due } = request;
        self.ready(|s| {
            if s.batch_of(user).is_some() {
                if reason == ErasureReason::OptOut {
                    let job = s.job.entry(user).or_insert(Job { reason, marked_at, attempts: 0 });
                    job.reason = ErasureReason::OptOut;
                }
                return Marked::AlreadyRunning;
            }
            if let Some(job) = s.job.get(&user)
                && s.queue.score(user).is_some()
                && (reason != ErasureReason::OptOut || job.reason == ErasureReason::OptOut)
            {
                return Marked::AlreadyScheduled;
            }
            s.queue.set(user, due.unwrap_or(i64::MAX));
            s.job.insert(user, Job { reason, marked_at, attempts: 0 });
            if reason != ErasureReason::OptOut {
                s.announce(Invalidation {
                    user,
                    since: marked_at,
                    until: marked_at,
                    opt_out: false,
                });
            }
            Marked::Scheduled
        })
    }

    fn unschedule_gone<'a>(
        &'a self,
        requests: &'a [Unschedule],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        self.ready(move |s| requests.iter().map(|r| s.unschedule_gone(*r)).collect())
    }

    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        self.ready(|s| RawStatus {
            last_seen: s.seen.score(user),
            queued_due: s.queue.score(user).map(|d| (d != i64::MAX).then_some(d)),
            leased_until: s.batch_of(user).map(|(_, deadline)| deadline),
            job: s.job.get(&user).copied(),
            probes: s.probes.get(&user).copied(),
        })
    }

    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        self.ready(move |s| {
            let now = times.now.unwrap_or_else(|| SystemClock.now_ms());
            let cutoff = now.saturating_sub(times.inactive_ms);
            let mut entries = Vec::new();
            for (user, _) in s.queue.up_to(now, limit) {
                let job = s.job_of(user);
                if !s.came_back(user, job) {
                    let last_seen = s.seen.score(user);
                    entries.push(PreviewEntry::new(user, job, last_seen, true));
                }
            }
            let room = limit.saturating_sub(entries.len());
            let above = held_through(&s.notices, now);
            for (user, seen) in s.seen.between(above, cutoff, room) {
                let job = match s.queue.score(user) {
                    None => Job::INACTIVE,
                    Some(due) if due > now => s.job_of(user),
                    Some(_) => continue, // due: listed above
                };
                entries.push(PreviewEntry::new(user, job, Some(seen), false));
            }
            RawPreview {
                inactive_total: s.seen.count_between(above, cutoff),
                due_total: s.queue.count_up_to(now),
                expired_leases: s.lease.count_up_to(now),
                entries,
            }
        })
    }

    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        self.ready(|s| s.feed_seq.to_string())
    }

    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>> {
        self.ready(|s| {
            let after: u64 = cursor.parse().unwrap_or(0);
            let entries =
                s.feed.iter().filter(|(seq, _, _)| *seq > after).map(|(_, _, inv)| *inv).collect();
            FeedPage { entries, cursor: s.feed_seq.to_string(), restarted: false }
        })
    }

    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        self.ready(|s| {
            s.kv.insert(format!("confirm:{}", who.tag), (value, ttl(ttl_ms)));
        })
    }

    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>> {
        self.ready(|s| {
            let key = format!("confirm:{}", who.tag);
            s.kv_get(&key)?;
            s.kv.remove(&key).map(|(v, _)| v)
        })
    }

    fn adopt<'a>(
        &'a self,
        users: &'a [Adoptee],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<AdoptCounts>> {
        // As adopt.lua.
        self.ready(|s| {
            let mut counts = AdoptCounts::default();
            let now = now.unwrap_or_else(|| SystemClock.now_ms());
            for &Adoptee { user, ms, if_new } in users {
                let ms = crate::store::no_later_than(ms, now);
                if s.job.contains_key(&user) || s.batch_of(user).is_some() {
                    counts.erasing += 1;
                    continue;
                }
                match s.seen.score(user) {
                    None => counts.new += 1,
                    Some(old) if old < ms && !if_new => counts.moved += 1,
                    Some(_) => {
                        counts.kept += 1;
                        continue;
                    }
                }
                s.seen.set_gt(user, ms);
            }
            counts
        })
    }

    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        self.ready(|s| {
            // A batch claimed for inactivity alone keeps no job: its users are known too.
            let running: std::collections::HashSet<u64> =
                s.batches.values().flatten().copied().collect();
            users
                .iter()
                .map(|u| s.seen.score(*u).is_some() || s.job.contains_key(u) || running.contains(u))
                .collect()
        })
    }

    fn notices(&self) -> BoxFuture<'_, Result<Vec<Notice>>> {
        self.ready(|s| s.notices.clone())
    }

    fn end_notices(&self) -> BoxFuture<'_, Result<()>> {
        self.ready(|s| s.notices.clear())
    }

    fn erasures_finished(&self) -> BoxFuture<'_, Result<u64>> {
        self.ready(|s| s.erasures_finished)
    }

    fn add_notice(&self, notice: Notice, now: Option<i64>) -> BoxFuture<'_, Result<()>> {
        let result = self
            .with(|s| {
                let now = now.unwrap_or_else(|| SystemClock.now_ms());
                s.notices = notice.added_to(&s.notices, now).ok_or_else(too_many_notices)?;
                Ok(())
            })
            .and_then(std::convert::identity);
        Box::pin(async move { result })
    }

    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        self.ready(|s| s.secret.get_or_insert_with(|| candidate.to_owned()).clone())
    }

    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        self.ready(|s| {
            let key = crate::store::rate_key(action, &who.tag, window);
            match s.kv_get(&key) {
                Some((count, _)) => {
                    let next = count.parse::<u64>().unwrap_or(0) + 1;
                    *count = next.to_string();
                    next
                }
                None => {
                    s.kv.insert(key, ("1".to_owned(), ttl(ttl_ms)));
                    1
                }
            }
        })
    }

    fn queued(&self) -> BoxFuture<'_, Result<Queued>> {
        self.ready(|s| Queued {
            scheduled: s.queue.scores.len() as u64,
            failing: s.failing.len() as u64,
            oldest_failing_since: s.failing.values().map(|(since, _)| *since).min(),
        })
    }

    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        self.ready(|s| s.seen.scores.len() as u64)
    }

    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>> {
        self.ready(move |s| {
            let seen = ranges
                .iter()
                .map(|r| s.seen.scores.values().filter(|t| **t > r.after && **t <= r.up_to).count())
                .map(|n| n as u64)
                .collect();
            let mut survey = RawSurvey {
                seen,
                scheduled_due: s.queue.scores.values().filter(|due| **due <= now).count() as u64,
                failing_since: s.failing.values().map(|(since, _)| *since).collect(),
                ..RawSurvey::default()
            };
            // Every job, as the Redis store counts them: scheduled and running erasures.
            for job in s.job.values() {
                survey.scheduled[job.reason.index()] += 1;
                survey.max_attempts = survey.max_attempts.max(job.attempts);
            }
            survey.writers = s
                .writers
                .iter()
                .map(|(id, (at, backlog))| {
                    let age = i64::try_from(at.elapsed().as_millis()).unwrap_or(i64::MAX);
                    let at = now.saturating_sub(age);
                    Heartbeat { writer: id.to_string(), at, backlog: *backlog }
                })
                .collect();
            (survey.census_probed, survey.census_walked) = s.census_survey();
            survey
        })
    }

    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        self.ready(move |s| {
            if s.kv_get("audit").is_some() {
                return false;
            }
            s.kv.insert("audit".to_owned(), (holder.to_string(), ttl(ttl_ms)));
            true
        })
    }

    fn census_lease(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        self.ready(move |s| s.census_lease(ttl_ms, holder))
    }

    fn census_walk(&self, walk: CensusWalk) -> BoxFuture<'_, Result<CensusPage>> {
        self.ready(move |s| s.census_walk(walk))
    }

    fn census_sweep(&self, _limit: usize) -> BoxFuture<'_, Result<u64>> {
        self.ready(|s| s.census_sweep())
    }

    fn census_record<'a>(
        &'a self,
        answers: &'a [CensusAnswer],
        at: i64,
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        self.ready(move |s| s.census_record(answers, now.map_or(at, |now| at.min(now))))
    }

    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        self.ready(move |s| s.last_audit = Some(summary.to_owned()))
    }

    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        self.ready(|s| s.last_audit.clone())
    }

    fn index_receipts(&self, _now: i64, _keep_ms: i64) -> BoxFuture<'_, Result<bool>> {
        // Receipts are found by their tag as they are.
        Box::pin(async { Ok(true) })
    }

    fn erased_as<'a>(
        &'a self,
        tags: &'a [String],
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<LastErasure>>>> {
        self.ready(move |s| {
            let wanted: HashMap<&str, usize> =
                tags.iter().enumerate().map(|(i, t)| (t.as_str(), i)).collect();
            let mut found = vec![None; tags.len()];
            for (tag, r) in s.receipts.iter().filter(|(_, r)| r.at >= now - keep_ms) {
                if let Some(&i) = wanted.get(tag.as_str()) {
                    let this = Some(LastErasure { reason: r.reason, at: r.at });
                    found[i] = LastErasure::latest(found[i], this);
                }
            }
            // A tag asked twice gets the same answer twice.
            for (i, tag) in tags.iter().enumerate() {
                found[i] = found[wanted[tag.as_str()]];
            }
            found
        })
    }

    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>> {
        self.ready(move |s| {
            s.receipts
                .iter()
                .filter(|(t, r)| t == tag && r.at >= now - keep_ms)
                .map(|(_, r)| r.clone())
                .collect()
        })
    }
}
