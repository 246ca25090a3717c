//! A store that forwards every operation to another after a hook has seen it: the one
//! place where test doubles implement the protocol. A double is a [`Hook`] (hold a write,
//! fail an operation); the forwarding is written once, here.

use std::sync::Arc;

use futures_util::future::BoxFuture;

use crate::error::Result;
use crate::receipts::RawReceipt;
use crate::store::sealed::{Bound, Token};
use crate::store::{
    AdoptCounts, Adoptee, Backend, Batch, CensusAnswer, CensusPage, CensusWalk, ClaimRequest,
    ClaimTimes, ClaimUser, DynBackend, FeedPage, Finish, FinishRequest, Hashed, Health,
    Interaction, LastErasure, Marked, Notice, Queued, RawPreview, RawStatus, RawSurvey,
    ScheduleRequest, SeenRange, Store, Unschedule, WriterWindow,
};

/// The operations of [`Backend`], by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs)]
pub(crate) enum Op {
    RecordInteractions,
    Claim,
    ClaimUser,
    ServerTime,
    Heartbeat,
    Retire,
    WritersHolding,
    Health,
    AcceptLostTracking,
    Finish,
    Receipts,
    Schedule,
    UnscheduleGone,
    Status,
    Preview,
    FeedHead,
    FeedRead,
    PutNonce,
    TakeNonce,
    CountUse,
    ClaimAudit,
    CensusLease,
    CensusWalk,
    CensusRecord,
    CensusSweep,
    RecordAudit,
    LastAudit,
    IndexReceipts,
    ErasedAs,
    Adopt,
    Known,
    ErasuresFinished,
    AddNotice,
    Notices,
    EndNotices,
    Secret,
    Tracked,
    Survey,
    Queued,
}

/// What a test double does before an operation reaches the store: wait, count, or fail it
/// (an error is returned instead of calling the store).
pub(crate) trait Hook: Send + Sync + 'static {
    fn before(&self, op: Op) -> BoxFuture<'_, Result<()>>;
}

/// Holds each call of one operation, while on, until [`released`](Self::released) is
/// notified: for tests that act while a store call is in flight.
pub(crate) struct Hold {
    op: Op,
    /// Whether calls are held now.
    pub(crate) on: std::sync::atomic::AtomicBool,
    /// Notified once a call is held (and waits for `released`).
    pub(crate) held: tokio::sync::Notify,
    pub(crate) released: tokio::sync::Notify,
}

impl Hold {
    /// Holds the calls of `op` from the start (`on`) or once turned on.
    pub(crate) fn new(op: Op, on: bool) -> Self {
        Self { op, on: on.into(), held: Default::default(), released: Default::default() }
    }
}

impl Hook for Hold {
    fn before(&self, op: Op) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if op == self.op && self.on.load(std::sync::atomic::Ordering::SeqCst) {
                // Registered before saying so: a release right after cannot be missed.
                let released = self.released.notified();
                let mut released = std::pin::pin!(released);
                released.as_mut().enable();
                self.held.notify_one();
                released.await;
            }
            Ok(())
        })
    }
}

/// Fails each call of one operation, while on, with a timeout (as a store that does not
/// answer): for tests of what a process keeps when a write cannot reach the store.
pub(crate) struct Fail {
    op: Op,
    /// Whether calls fail now.
    pub(crate) on: std::sync::atomic::AtomicBool,
}

impl Fail {
    /// Fails the calls of `op` from the start (`on`) or once turned on.
    pub(crate) fn new(op: Op, on: bool) -> Self {
        Self { op, on: on.into() }
    }
}

impl Hook for Fail {
    fn before(&self, op: Op) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            if op == self.op && self.on.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(crate::Error::Timeout(std::time::Duration::ZERO));
            }
            Ok(())
        })
    }
}

/// `store` behind `hook`. Its namespaces are one part each (a sharded inner store's parts
/// are not split out), which is all the in-process doubles need.
pub(crate) struct Intercepted<S, H> {
    pub(crate) store: S,
    pub(crate) hook: Arc<H>,
}

impl<S: Store, H: Hook> Store for Intercepted<S, H> {
    fn bind(&self, namespace: &str, token: Token) -> Bound {
        let inner = self.store.bind(namespace, token).0;
        Bound(Arc::new(Forward { inner, hook: Arc::clone(&self.hook) }))
    }

    fn check_namespace(&self, namespace: &str, token: Token) -> Result<()> {
        self.store.check_namespace(namespace, token)
    }
}

struct Forward<H> {
    inner: DynBackend,
    hook: Arc<H>,
}

/// The hook, then the store.
macro_rules! forward {
    ($self:ident, $op:ident, $call:expr) => {
        Box::pin(async move {
            $self.hook.before(Op::$op).await?;
            $call.await
        })
    };
}

impl<H: Hook> Backend for Forward<H> {
    fn parts(&self) -> Vec<&dyn Backend> {
        vec![self]
    }
    fn record_interactions<'a>(
        &'a self,
        seen: &'a [Interaction],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        forward!(self, RecordInteractions, self.inner.record_interactions(seen, now))
    }
    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>> {
        forward!(self, Claim, self.inner.claim(request))
    }
    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>> {
        forward!(self, ClaimUser, self.inner.claim_user(request))
    }
    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        forward!(self, ServerTime, self.inner.server_time())
    }
    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        forward!(self, Heartbeat, self.inner.heartbeat(id, backlog))
    }
    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        forward!(self, Retire, self.inner.retire(id))
    }
    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        forward!(self, WritersHolding, self.inner.writers_holding(writers))
    }
    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        forward!(self, Health, self.inner.health())
    }
    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        forward!(self, AcceptLostTracking, self.inner.accept_lost_tracking())
    }
    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>> {
        forward!(self, Finish, self.inner.finish(request))
    }
    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>> {
        forward!(self, Receipts, self.inner.receipts(tag, now, keep_ms))
    }
    fn schedule(&self, request: ScheduleRequest) -> BoxFuture<'_, Result<Marked>> {
        forward!(self, Schedule, self.inner.schedule(request))
    }
    fn unschedule_gone<'a>(
        &'a self,
        requests: &'a [Unschedule],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        forward!(self, UnscheduleGone, self.inner.unschedule_gone(requests))
    }
    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        forward!(self, Status, self.inner.status(user))
    }
    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        forward!(self, Preview, self.inner.preview(times, limit))
    }
    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        forward!(self, FeedHead, self.inner.feed_head())
    }
    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>> {
        forward!(self, FeedRead, self.inner.feed_read(cursor))
    }
    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        forward!(self, PutNonce, self.inner.put_nonce(who, value, ttl_ms))
    }
    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>> {
        forward!(self, TakeNonce, self.inner.take_nonce(who))
    }
    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        forward!(self, CountUse, self.inner.count_use(who, action, window, ttl_ms))
    }
    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        forward!(self, ClaimAudit, self.inner.claim_audit(ttl_ms, holder))
    }
    fn census_lease(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        forward!(self, CensusLease, self.inner.census_lease(ttl_ms, holder))
    }
    fn census_walk(&self, walk: CensusWalk) -> BoxFuture<'_, Result<CensusPage>> {
        forward!(self, CensusWalk, self.inner.census_walk(walk))
    }
    fn census_sweep(&self, limit: usize) -> BoxFuture<'_, Result<u64>> {
        forward!(self, CensusSweep, self.inner.census_sweep(limit))
    }
    fn census_record<'a>(
        &'a self,
        answers: &'a [CensusAnswer],
        at: i64,
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        forward!(self, CensusRecord, self.inner.census_record(answers, at, now))
    }
    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        forward!(self, RecordAudit, self.inner.record_audit(summary))
    }
    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        forward!(self, LastAudit, self.inner.last_audit())
    }
    fn index_receipts(&self, now: i64, keep_ms: i64) -> BoxFuture<'_, Result<bool>> {
        forward!(self, IndexReceipts, self.inner.index_receipts(now, keep_ms))
    }
    fn erased_as<'a>(
        &'a self,
        tags: &'a [String],
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<LastErasure>>>> {
        forward!(self, ErasedAs, self.inner.erased_as(tags, now, keep_ms))
    }
    fn adopt<'a>(
        &'a self,
        users: &'a [Adoptee],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<AdoptCounts>> {
        forward!(self, Adopt, self.inner.adopt(users, now))
    }
    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        forward!(self, Known, self.inner.known(users))
    }
    fn erasures_finished(&self) -> BoxFuture<'_, Result<u64>> {
        forward!(self, ErasuresFinished, self.inner.erasures_finished())
    }
    fn add_notice(&self, notice: Notice, now: Option<i64>) -> BoxFuture<'_, Result<()>> {
        forward!(self, AddNotice, self.inner.add_notice(notice, now))
    }
    fn notices(&self) -> BoxFuture<'_, Result<Vec<Notice>>> {
        forward!(self, Notices, self.inner.notices())
    }
    fn end_notices(&self) -> BoxFuture<'_, Result<()>> {
        forward!(self, EndNotices, self.inner.end_notices())
    }
    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        forward!(self, Secret, self.inner.secret(candidate))
    }
    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        forward!(self, Tracked, self.inner.tracked())
    }
    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>> {
        forward!(self, Survey, self.inner.survey(now, ranges))
    }
    fn queued(&self) -> BoxFuture<'_, Result<Queued>> {
        forward!(self, Queued, self.inner.queued())
    }
}
