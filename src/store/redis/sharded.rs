//! Sharded tracking: one namespace spread over several hash tags, so that on Redis Cluster
//! its users land on every master instead of the one that owns the namespace's slot.
//!
//! Each shard is a complete copy of the one-namespace layout (`seen`, `queue`, `job`,
//! `lease`, `batches`, `feed`, `writers`, `meta`) under a hash tag of its own; a user's keys
//! all live in the user's shard, so every script stays single-slot. The namespace's own tag
//! (`{retention}`) is the *home*: its `meta` records the shard count. With one shard the
//! home is the only shard, and the layout is the one-namespace layout unchanged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::future::{BoxFuture, try_join_all};

use super::RedisNamespace;
use crate::error::{Error, Result};
use crate::receipts::RawReceipt;
use crate::store::{
    AdoptCounts, Adoptee, Backend, Batch, CensusAnswer, CensusPage, CensusWalk, ClaimRequest,
    ClaimTimes, ClaimUser, FeedPage, Finish, FinishRequest, Hashed, Health, Interaction,
    LastErasure, Marked, Notice, Queued, RawPreview, RawStatus, RawSurvey, ScheduleRequest,
    SeenRange, Unschedule, WriterWindow,
};

/// `items` by their user's shard (of `count`), with each one's position in `items`: the
/// shards answer for their users, and [`in_order`] puts the answers back.
fn by_shard<T: Copy>(
    items: &[T],
    user: impl Fn(&T) -> u64,
    count: usize,
) -> (Vec<Vec<usize>>, Vec<Vec<T>>) {
    let (mut positions, mut parts) = (vec![Vec::new(); count], vec![Vec::new(); count]);
    for (i, item) in items.iter().enumerate() {
        let shard = shard_of(user(item), count);
        positions[shard].push(i);
        parts[shard].push(*item);
    }
    (positions, parts)
}

/// The shards' answers (one list per shard, in the order of [`by_shard`]'s parts) in the
/// callers' order.
fn in_order<A: Default + Clone>(
    positions: &[Vec<usize>],
    answers: Vec<Vec<A>>,
    len: usize,
) -> Vec<A> {
    let mut out = vec![A::default(); len];
    for (at, answers) in positions.iter().zip(answers) {
        for (&i, answer) in at.iter().zip(answers) {
            out[i] = answer;
        }
    }
    out
}

/// Redis Cluster's number of hash slots.
const SLOTS: usize = 16_384;

/// The largest shard count a namespace may have.
pub(crate) const MAX_SHARDS: usize = 1024;

/// The shard count of a namespace opened through [`RedisStore::open_cluster`]
/// (crate::RedisStore::open_cluster) unless set: a multiple of 1, 2, 3, 4, 6, 8, 12 and 24
/// masters, so each of them holds an equal part.
pub(crate) const DEFAULT_CLUSTER_SHARDS: usize = 24;

/// The shard of `user` among `count`: splitmix64's finalizer over the id, modulo the count.
/// It is part of the key layout: the same in every version and process.
pub(crate) fn shard_of(user: u64, count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    let mut z = user.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    // `count` is at most MAX_SHARDS: the remainder fits any usize.
    (z % count as u64) as usize
}

/// The Redis Cluster slot of a key whose hash tag is `tag` (CRC16/XMODEM modulo 16384).
pub(crate) fn slot_of(tag: &str) -> usize {
    usize::from(crc16::State::<crc16::XMODEM>::calculate(tag.as_bytes())) % SLOTS
}

/// The hash tag (without braces) of shard `index` of `count` in `namespace`.
///
/// One shard: the namespace itself. More: `namespace:<index>of<count>.<n>`, with the
/// smallest `n` whose slot lies in the `index`-th of `count` equal slot ranges. Masters that
/// own equal contiguous ranges (as `redis-cli --cluster create` assigns them) therefore
/// hold equal numbers of shards when `count` is a multiple of the number of masters.
pub(crate) fn shard_tag(namespace: &str, index: usize, count: usize) -> String {
    if count <= 1 {
        return namespace.to_owned();
    }
    (0u32..)
        .map(|n| format!("{namespace}:{index}of{count}.{n}"))
        .find(|tag| slot_of(tag) * count / SLOTS == index)
        .expect("every slot range of at most MAX_SHARDS is hit by some suffix")
}

/// A namespace's shards behind one [`Backend`]: per-user calls go to the user's shard,
/// whole-namespace calls to every shard (concurrently), with results combined.
///
/// The first call checks the shard count recorded in the namespace (recording it if the
/// namespace is new); until that check passes every call fails with its error
/// ([`Error::ShardCount`], [`Error::Resharding`]), so a process opened with the wrong count
/// never writes a user into the wrong shard. A write the layout fence refuses later (the
/// namespace was resharded under this process, see `fence.lua`) makes the check run again
/// and fail with the same typed error.
pub(crate) struct Sharded {
    home: Arc<RedisNamespace>,
    shards: Vec<Arc<RedisNamespace>>,
    checked: AtomicBool,
    /// Interactions were written into the namespace's recorded layout (logged once).
    rerouted: AtomicBool,
}

/// Writes `seen` into `shards` (a layout), each interaction to its user's shard.
async fn write_interactions(
    shards: &[Arc<RedisNamespace>],
    seen: &[Interaction],
    now: Option<i64>,
) -> Result<()> {
    if shards.len() == 1 {
        return shards[0].record_interactions(seen, now).await;
    }
    let (_, split) = by_shard(seen, |i| i.user, shards.len());
    let writes = split
        .iter()
        .zip(shards)
        .filter(|(part, _)| !part.is_empty())
        .map(|(part, shard)| shard.record_interactions(part, now));
    try_join_all(writes).await.map(drop)
}

impl Sharded {
    /// `shards` in index order; `home` is the namespace's own tag (the only shard when
    /// there is one).
    pub(crate) fn new(home: Arc<RedisNamespace>, shards: Vec<Arc<RedisNamespace>>) -> Self {
        Self { home, shards, checked: AtomicBool::new(false), rerouted: AtomicBool::new(false) }
    }

    async fn ready(&self) -> Result<()> {
        if self.checked.load(Ordering::Acquire) {
            return Ok(());
        }
        self.home.check_layout(self.shards.len()).await?;
        self.checked.store(true, Ordering::Release);
        Ok(())
    }

    /// The shards of this namespace's layout of `count` shards.
    fn layout(&self, count: usize) -> Vec<Arc<RedisNamespace>> {
        let namespace = self.home.namespace();
        (0..count).map(|i| Arc::new(self.home.sibling(&shard_tag(namespace, i, count)))).collect()
    }

    /// Runs `call` on every shard of the layout that `layout_error` names as the recorded
    /// one (the target of a resharding in progress), ignoring failures: a best effort for
    /// heartbeats of a process opened with the wrong count.
    async fn in_recorded_layout<F>(&self, layout_error: &Error, call: F)
    where
        F: for<'b> Fn(&'b RedisNamespace) -> BoxFuture<'b, Result<()>>,
    {
        let count = match layout_error {
            Error::ShardCount { recorded, .. } => *recorded,
            Error::Resharding { to, .. } => *to,
            _ => return,
        };
        let namespace = self.home.namespace();
        let shards: Vec<RedisNamespace> =
            (0..count).map(|i| self.home.sibling(&shard_tag(namespace, i, count))).collect();
        let _ = futures_util::future::join_all(shards.iter().map(call)).await;
    }

    /// Passes `result` on, unless the layout fence refused the write: then the recorded
    /// layout is read again, and its error ([`Error::ShardCount`], [`Error::Resharding`])
    /// is returned instead.
    async fn fenced<T>(&self, result: Result<T>) -> Result<T> {
        let refusal = match result {
            Err(Error::Redis(e)) if e.code() == Some("LAYOUT") => e,
            other => return other,
        };
        self.checked.store(false, Ordering::Release);
        self.ready().await?;
        // The home records this process's count, yet a shard is fenced: a resharding that
        // was given up halfway.
        Err(Error::Unsafe(format!(
            "a write was refused by the layout fence ({}) although the namespace records {} \
             shards: run RedisStore::reshard({:?}, {}) to finish the resharding",
            refusal.detail().unwrap_or_default(),
            self.shards.len(),
            self.home.namespace(),
            self.shards.len(),
        )))
    }

    fn shard(&self, user: u64) -> &RedisNamespace {
        &self.shards[shard_of(user, self.shards.len())]
    }

    /// The shards whose erasure feeds this process reads: its own, or, when it was opened
    /// with another count than the namespace records (it missed a reshard), the recorded
    /// layout's, where the other replicas announce their erasures (as its interactions are
    /// written there). During a resharding there is no layout to read: the error.
    async fn feed_layout(&self) -> Result<Vec<Arc<RedisNamespace>>> {
        // A reshard under this process deletes its layout's feeds. A process that has not
        // written since (a write meets the fence and reads the layout again) must not read
        // them empty for good: each read looks at the fence first (one `HMGET`).
        if self.checked.load(Ordering::Acquire)
            && self.shards[0].layout_fenced(self.shards.len() == 1).await?
        {
            self.checked.store(false, Ordering::Release);
        }
        match self.ready().await {
            Ok(()) => Ok(self.shards.clone()),
            Err(Error::ShardCount { recorded, .. }) if (1..=MAX_SHARDS).contains(&recorded) => {
                Ok(self.layout(recorded))
            }
            Err(e) => Err(e),
        }
    }

    /// Runs `call` on every shard concurrently; all results, or the first error.
    async fn every<'a, T, F>(&'a self, call: F) -> Result<Vec<T>>
    where
        F: Fn(&'a RedisNamespace) -> BoxFuture<'a, Result<T>>,
    {
        self.ready().await?;
        try_join_all(self.shards.iter().map(|s| call(s))).await
    }
}

/// The feed position of several shards: theirs, joined by commas (stream ids have none).
fn split_cursor(cursor: &str, count: usize) -> Result<Vec<&str>> {
    let parts: Vec<&str> = cursor.split(',').collect();
    if parts.len() == count {
        Ok(parts)
    } else {
        Err(Error::Corrupt(format!("feed cursor {cursor:?} does not name {count} shards")))
    }
}

impl Backend for Sharded {
    fn parts(&self) -> Vec<&dyn Backend> {
        self.shards.iter().map(|s| &**s as &dyn Backend).collect()
    }

    fn record_interactions<'a>(
        &'a self,
        seen: &'a [Interaction],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let written = async {
                self.ready().await?;
                self.fenced(write_interactions(&self.shards, seen, now).await).await
            };
            match written.await {
                // Opened with another count than the namespace's (it was resharded under
                // this process, or the process was started with a stale count): the
                // interactions go to the layout the namespace has now, each to its user's
                // shard there, where its pruners see them. A fence there (another reshard
                // since) refuses them again, and they stay buffered.
                Err(Error::ShardCount { namespace, recorded, opened }) => {
                    // A recorded count out of range (written by hand) is no layout to write to.
                    if !(1..=MAX_SHARDS).contains(&recorded) {
                        return Err(Error::ShardCount { namespace, recorded, opened });
                    }
                    let shards = self.layout(recorded);
                    if write_interactions(&shards, seen, now).await.is_err() {
                        return Err(Error::ShardCount { namespace, recorded, opened });
                    }
                    if !self.rerouted.swap(true, Ordering::Relaxed) {
                        tracing::warn!(
                            "namespace {namespace:?} has {recorded} shards, but the store was \
                             opened with {opened}: interactions are written into its layout of \
                             {recorded}; open the store with RedisStore::with_shards({recorded}) \
                             (logged once)"
                        );
                    }
                    Ok(())
                }
                other => other,
            }
        })
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>> {
        // The pruner claims from each of `parts()`; this whole-namespace claim takes the
        // first shard with work, so that a batch never spans shards.
        Box::pin(async move {
            self.ready().await?;
            let mut empty = Batch {
                id: request.batch,
                deadline: 0,
                users: Vec::new(),
                held: None,
                unreadable: Vec::new(),
                returned: Vec::new(),
            };
            for shard in &self.shards {
                let mut batch = self.fenced(shard.claim(request).await).await?;
                if !batch.users.is_empty() {
                    batch.returned.append(&mut empty.returned);
                    batch.unreadable.append(&mut empty.unreadable);
                    batch.held = batch.held.or(empty.held);
                    return Ok(batch);
                }
                empty.deadline = batch.deadline;
                empty.held = empty.held.or(batch.held);
                empty.unreadable.append(&mut batch.unreadable);
                empty.returned.append(&mut batch.returned);
            }
            Ok(empty)
        })
    }

    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>> {
        Box::pin(async move {
            self.ready().await?;
            self.fenced(self.shard(request.user).claim_user(request).await).await
        })
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        self.home.server_time()
    }

    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        // Every shard's claims judge writers by their own heartbeats.
        Box::pin(async move {
            match self.every(|s| s.heartbeat(id, backlog)).await {
                Err(e) if e.is_config() => {
                    // Opened with another count than the namespace's: this process holds
                    // interactions the pruners of the recorded layout cannot see. Its
                    // heartbeat goes there, so that they hold inactivity erasures back
                    // while it reports a backlog (it is not written itself: refused).
                    self.in_recorded_layout(&e, |s| s.heartbeat(id, backlog)).await;
                    Err(e)
                }
                other => other.map(drop),
            }
        })
    }

    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            match self.every(|s| s.retire(id)).await {
                Err(e) if e.is_config() => {
                    self.in_recorded_layout(&e, |s| s.retire(id)).await;
                    Err(e)
                }
                other => other.map(drop),
            }
        })
    }

    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async move {
            let held = self.every(|s| s.writers_holding(writers)).await?;
            Ok(held.into_iter().flatten().next())
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        Box::pin(async move {
            let all = self.fenced(self.every(Backend::health).await).await?;
            // The most worrying of the masters': an eviction policy that may drop keys wins.
            let eviction_policy = all
                .iter()
                .filter_map(|h| h.eviction_policy.clone())
                .max_by_key(|p| p.starts_with("allkeys-"));
            let version = all
                .iter()
                .filter_map(|h| h.version.clone())
                .min_by_key(|v| crate::store::parse_version(v).unwrap_or((0, 0)));
            Ok(Health {
                version,
                eviction_policy,
                seen_vanished: all.iter().any(|h| h.seen_vanished),
                not_atomic: None,
            })
        })
    }

    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.fenced(self.every(Backend::accept_lost_tracking).await.map(drop)).await
        })
    }

    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>> {
        Box::pin(async move {
            self.ready().await?;
            // A batch is claimed from one shard: its first user names it.
            let Some(first) = request.batch.users.first() else {
                return Ok(Some(Finish { confirmed: Vec::new(), failing: Vec::new() }));
            };
            let shard = self.shard(first.user);
            self.fenced(shard.finish(request).await).await
        })
    }

    fn schedule(&self, request: ScheduleRequest) -> BoxFuture<'_, Result<Marked>> {
        Box::pin(async move {
            self.ready().await?;
            self.fenced(self.shard(request.user).schedule(request).await).await
        })
    }

    fn unschedule_gone<'a>(
        &'a self,
        requests: &'a [Unschedule],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            self.ready().await?;
            let (positions, parts) = by_shard(requests, |r| r.user, self.shards.len());
            let asked =
                parts.iter().zip(&self.shards).map(|(part, shard)| shard.unschedule_gone(part));
            let answers = self.fenced(try_join_all(asked).await).await?;
            Ok(in_order(&positions, answers, requests.len()))
        })
    }

    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        Box::pin(async move {
            self.ready().await?;
            self.shard(user).status(user).await
        })
    }

    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        Box::pin(async move {
            let all = self.every(|s| s.preview(times, limit)).await?;
            let mut out = RawPreview::default();
            let mut lists = Vec::with_capacity(all.len());
            for part in all {
                out.inactive_total += part.inactive_total;
                out.due_total += part.due_total;
                out.expired_leases += part.expired_leases;
                lists.push(part.entries.into_iter());
            }
            // Take from the shards in turn, so that the listed users are a fair sample.
            while out.entries.len() < limit {
                let before = out.entries.len();
                for list in &mut lists {
                    if out.entries.len() < limit
                        && let Some(entry) = list.next()
                    {
                        out.entries.push(entry);
                    }
                }
                if out.entries.len() == before {
                    break;
                }
            }
            Ok(out)
        })
    }

    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let shards = self.feed_layout().await?;
            let heads = try_join_all(shards.iter().map(|s| s.feed_head())).await?;
            Ok(heads.join(","))
        })
    }

    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>> {
        Box::pin(async move {
            let shards = self.feed_layout().await?;
            let (cursors, restarted) = match split_cursor(cursor, shards.len()) {
                Ok(cursors) => (cursors, false),
                // A position in another layout (a reshard under this process, or one it
                // missed): the layout's feeds hold only what was announced since the reshard
                // (it moves none), so they are read from their start, and the reader learns
                // that what the old ones held since its last read may be lost.
                Err(_) => (vec!["0-0"; shards.len()], true),
            };
            let reads = shards.iter().zip(cursors).map(|(s, c)| s.feed_read(c));
            let mut all = Vec::new();
            let mut next = Vec::with_capacity(shards.len());
            for page in try_join_all(reads).await? {
                all.extend(page.entries);
                next.push(page.cursor);
            }
            Ok(FeedPage { entries: all, cursor: next.join(","), restarted })
        })
    }

    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.ready().await?;
            self.shard(who.user).put_nonce(who, value, ttl_ms).await
        })
    }

    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            self.ready().await?;
            self.shard(who.user).take_nonce(who).await
        })
    }

    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            self.ready().await?;
            self.shard(who.user).count_use(who, action, window, ttl_ms).await
        })
    }

    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        // One lease for the namespace, in the home.
        self.home.claim_audit(ttl_ms, holder)
    }

    fn census_lease(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        // The pruner walks each shard through its parts (`Backend::parts`), each with its
        // own lease and cursor; the namespace as a whole walks the home's.
        self.home.census_lease(ttl_ms, holder)
    }

    fn census_walk(&self, walk: CensusWalk) -> BoxFuture<'_, Result<CensusPage>> {
        self.home.census_walk(walk)
    }

    fn census_sweep(&self, limit: usize) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let swept = self.every(|shard| shard.census_sweep(limit)).await?;
            Ok(swept.into_iter().sum())
        })
    }

    fn census_record<'a>(
        &'a self,
        answers: &'a [CensusAnswer],
        at: i64,
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            self.ready().await?;
            let (_, split) = by_shard(answers, |a| a.user, self.shards.len());
            let writes = split
                .iter()
                .zip(&self.shards)
                .map(|(part, shard)| shard.census_record(part, at, now));
            self.fenced(try_join_all(writes).await.map(drop)).await
        })
    }

    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        self.home.record_audit(summary)
    }

    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        self.home.last_audit()
    }

    fn index_receipts(&self, now: i64, keep_ms: i64) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let done = self.every(|shard| shard.index_receipts(now, keep_ms)).await?;
            Ok(done.into_iter().all(|d| d))
        })
    }

    fn erased_as<'a>(
        &'a self,
        tags: &'a [String],
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<LastErasure>>>> {
        Box::pin(async move {
            // Every shard: receipts stay where they were written when a reshard moves users.
            let all = self.every(|shard| shard.erased_as(tags, now, keep_ms)).await?;
            let mut latest = vec![None; tags.len()];
            for found in all {
                for (l, f) in latest.iter_mut().zip(found) {
                    *l = LastErasure::latest(*l, f);
                }
            }
            Ok(latest)
        })
    }

    fn adopt<'a>(
        &'a self,
        users: &'a [Adoptee],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<AdoptCounts>> {
        Box::pin(async move {
            self.ready().await?;
            let (_, split) = by_shard(users, |a| a.user, self.shards.len());
            let adopted = split
                .iter()
                .zip(&self.shards)
                .filter(|(part, _)| !part.is_empty())
                .map(|(part, shard)| shard.adopt(part, now));
            let mut total = AdoptCounts::default();
            for counts in self.fenced(try_join_all(adopted).await).await? {
                total += counts;
            }
            Ok(total)
        })
    }

    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            self.ready().await?;
            let (positions, parts) = by_shard(users, |u| *u, self.shards.len());
            let asked = parts.iter().zip(&self.shards).map(|(part, shard)| shard.known(part));
            Ok(in_order(&positions, try_join_all(asked).await?, users.len()))
        })
    }

    fn add_notice(&self, notice: Notice, now: Option<i64>) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            self.ready().await?;
            // Every shard's claim reads its own copy; one that runs MAX_NOTICES refuses.
            let added = self.shards.iter().map(|s| s.add_notice(notice, now));
            self.fenced(try_join_all(added).await).await?;
            Ok(())
        })
    }

    fn notices(&self) -> BoxFuture<'_, Result<Vec<Notice>>> {
        Box::pin(async move {
            self.ready().await?;
            let mut all: Vec<Notice> = Vec::new();
            for part in try_join_all(self.shards.iter().map(|s| s.notices())).await? {
                for notice in part {
                    if !all.contains(&notice) {
                        all.push(notice);
                    }
                }
            }
            Ok(all)
        })
    }

    fn end_notices(&self) -> BoxFuture<'_, Result<()>> {
        // The home's too: a later reshard copies the notices of the layout it moves from.
        Box::pin(async move {
            self.every(|s| s.end_notices()).await?;
            self.home.end_notices().await
        })
    }

    fn erasures_finished(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            self.ready().await?;
            let counts = try_join_all(self.shards.iter().map(|s| s.erasures_finished())).await?;
            Ok(counts.into_iter().sum())
        })
    }

    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        // Kept with the namespace's shard count, in the home.
        self.home.secret(candidate)
    }

    fn queued(&self) -> BoxFuture<'_, Result<Queued>> {
        Box::pin(async move {
            let all = self.every(Backend::queued).await?;
            Ok(Queued {
                scheduled: all.iter().map(|p| p.scheduled).sum(),
                failing: all.iter().map(|p| p.failing).sum(),
                oldest_failing_since: all.iter().filter_map(|p| p.oldest_failing_since).min(),
            })
        })
    }

    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move { Ok(self.every(Backend::tracked).await?.into_iter().sum()) })
    }

    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>> {
        Box::pin(async move {
            let all = self.every(|shard| shard.survey(now, ranges)).await?;
            let mut total = RawSurvey { seen: vec![0; ranges.len()], ..RawSurvey::default() };
            for (index, part) in all.into_iter().enumerate() {
                for (sum, n) in total.seen.iter_mut().zip(part.seen) {
                    *sum += n;
                }
                for (sum, n) in total.scheduled.iter_mut().zip(part.scheduled) {
                    *sum += n;
                }
                total.scheduled_due += part.scheduled_due;
                total.census_probed += part.census_probed;
                total.census_walked += part.census_walked;
                total.failing_since.extend(part.failing_since);
                total.max_attempts = total.max_attempts.max(part.max_attempts);
                // Every shard gets every heartbeat: the first shard's are all of them.
                if index == 0 {
                    total.writers = part.writers;
                }
            }
            Ok(total)
        })
    }

    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>> {
        Box::pin(async move {
            self.ready().await?;
            // Every shard: receipts stay where they were written when the user's shard
            // changes (see `RedisStore::reshard`).
            let all =
                try_join_all(self.shards.iter().map(|shard| shard.receipts(tag, now, keep_ms)))
                    .await?;
            let mut found: Vec<RawReceipt> = all.into_iter().flatten().collect();
            found.sort_by_key(|r| r.at);
            Ok(found)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_shard_keeps_the_namespace_tag() {
        assert_eq!(shard_tag("retention", 0, 1), "retention");
        assert_eq!(shard_of(42, 1), 0);
    }

    #[test]
    fn shard_tags_fall_in_equal_slot_ranges() {
        for count in [2, 3, 24, 60, MAX_SHARDS] {
            for index in 0..count {
                let tag = shard_tag("retention", index, count);
                assert_eq!(slot_of(&tag) * count / SLOTS, index, "{tag}");
            }
        }
        // Known values of Redis's CLUSTER KEYSLOT.
        assert_eq!(slot_of("foo"), 12_182);
        assert_eq!(slot_of("123456789"), 12_739);
    }

    /// The key layout, written once from the code of version 0.1 and asserted forever: a
    /// change of `shard_of` or `shard_tag` strands every sharded namespace, so it must be a
    /// visible, deliberate break with a migration (`RedisStore::reshard`).
    const GOLDEN: [(u64, usize, usize, &str); 24] = [
        (1, 1, 0, "retention"),
        (42, 1, 0, "retention"),
        (777_001, 1, 0, "retention"),
        (123_456_789, 1, 0, "retention"),
        (5_000_000_001, 1, 0, "retention"),
        (9_007_199_254_740_991, 1, 0, "retention"),
        (1, 3, 2, "retention:2of3.3"),
        (42, 3, 1, "retention:1of3.1"),
        (777_001, 3, 0, "retention:0of3.0"),
        (123_456_789, 3, 2, "retention:2of3.3"),
        (5_000_000_001, 3, 2, "retention:2of3.3"),
        (9_007_199_254_740_991, 3, 0, "retention:0of3.0"),
        (1, 24, 17, "retention:17of24.22"),
        (42, 24, 13, "retention:13of24.22"),
        (777_001, 24, 0, "retention:0of24.62"),
        (123_456_789, 24, 17, "retention:17of24.22"),
        (5_000_000_001, 24, 11, "retention:11of24.25"),
        (9_007_199_254_740_991, 24, 15, "retention:15of24.40"),
        (1, 256, 193, "retention:193of256.58"),
        (42, 256, 149, "retention:149of256.44"),
        (777_001, 256, 48, "retention:48of256.416"),
        (123_456_789, 256, 121, "retention:121of256.202"),
        (5_000_000_001, 256, 147, "retention:147of256.278"),
        (9_007_199_254_740_991, 256, 159, "retention:159of256.265"),
    ];

    #[test]
    fn the_shard_layout_is_the_same_in_every_version() {
        for (user, count, index, tag) in GOLDEN {
            assert_eq!(shard_of(user, count), index, "user {user} of {count} shards");
            assert_eq!(shard_tag("retention", index, count), tag, "shard {index} of {count}");
        }
    }

    #[test]
    fn users_spread_evenly_and_stably() {
        let mut per_shard = [0u32; 24];
        for user in 0..240_000u64 {
            per_shard[shard_of(user * 7 + 100_000_000, 24)] += 1;
        }
        for n in per_shard {
            assert!((9_500..10_500).contains(&n), "{per_shard:?}");
        }
    }
}
