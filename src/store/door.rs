//! The one door to the store. Every call the crate makes to its store goes through a
//! [`Door`]: bounded by the store timeout, or by what is left of the store time of the
//! update being handled ([`Budget`]), and timed in
//! `teloxide_retention_store_call_duration_seconds`. The engine, the tracker and every
//! feature reach the store only this way (`tests/integration/architecture.rs` holds that).

use std::time::Duration;

use futures_util::future::BoxFuture;

use super::{Backend, DynBackend};
use crate::error::Result;

/// The store of one namespace, behind its bound; cheap to clone.
#[derive(Clone)]
pub(crate) struct Door {
    backend: DynBackend,
    timeout: Duration,
}

impl Door {
    /// The door to `backend`, whose calls are bounded by `timeout` (the store timeout).
    pub(crate) fn new(backend: DynBackend, timeout: Duration) -> Self {
        Self { backend, timeout }
    }

    /// The store timeout each call is bounded by.
    pub(crate) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Runs one store call, bounded by the store timeout: `door.call(|b| b.tracked())`.
    pub(crate) async fn call<'a, T>(
        &'a self,
        call: impl FnOnce(&'a dyn Backend) -> BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        bounded(self.timeout, call(&*self.backend)).await
    }

    /// Runs one store call that may take longer than one (a scan of every receipt),
    /// bounded by `limit` instead of the store timeout.
    pub(crate) async fn call_within<'a, T>(
        &'a self,
        limit: Duration,
        call: impl FnOnce(&'a dyn Backend) -> BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        bounded(limit, call(&*self.backend)).await
    }

    /// The parts a pass claims from one by one (the shards of a sharded namespace; the
    /// store itself when it has one), each behind the same bound.
    pub(crate) fn parts(&self) -> Vec<Part<'_>> {
        self.backend
            .parts()
            .into_iter()
            .map(|backend| Part { backend, timeout: self.timeout })
            .collect()
    }
}

/// One part of the store (see [`Door::parts`]), behind the same bound as its door.
#[derive(Clone, Copy)]
pub(crate) struct Part<'a> {
    backend: &'a dyn Backend,
    timeout: Duration,
}

impl<'a> Part<'a> {
    /// Runs one store call on this part, bounded by the store timeout.
    pub(crate) async fn call<T>(
        self,
        call: impl FnOnce(&'a dyn Backend) -> BoxFuture<'a, Result<T>>,
    ) -> Result<T> {
        bounded(self.timeout, call(self.backend)).await
    }
}

/// Runs a store call under the store timeout `limit`.
async fn bounded<T>(
    limit: std::time::Duration,
    call: impl std::future::Future<Output = crate::Result<T>>,
) -> crate::Result<T> {
    let limit = Budget::limit(limit);
    if limit.is_zero() {
        // The update's budget is spent: the call is not even issued.
        return Err(crate::Error::Timeout(limit));
    }
    let started = std::time::Instant::now();
    let result =
        tokio::time::timeout(limit, call).await.unwrap_or(Err(crate::Error::Timeout(limit)));
    let spent = started.elapsed();
    Budget::charge(spent);
    metrics::histogram!("teloxide_retention_store_call_duration_seconds")
        .record(spent.as_secs_f64());
    result
}

tokio::task_local! {
    static BUDGET: Budget;
}

/// The store time one update may wait for in all, shared by every store call made while
/// the crate handles it (an unblock cancels a mark and records an interaction; a privacy
/// command checks its rate limit and stores a nonce...): each call is bounded by what is
/// left, so a hung store holds an update for at most the store timeout, not once per call.
/// Calls outside a budget (background tasks, the bot's own calls) are bounded by the store
/// timeout alone.
#[derive(Clone)]
pub(crate) struct Budget(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl Budget {
    pub(crate) fn new(total: std::time::Duration) -> Self {
        let nanos = u64::try_from(total.as_nanos()).unwrap_or(u64::MAX);
        Self(std::sync::Arc::new(std::sync::atomic::AtomicU64::new(nanos)))
    }

    /// Runs `work` outside the budget of the update being handled: each of its store calls
    /// is bounded by the store timeout alone. For an erasure the user confirmed: once
    /// claimed it is durable, and cutting its finish short would only make the erasers run
    /// again after the lease.
    pub(crate) async fn exempt<F: std::future::Future>(work: F) -> F::Output {
        BUDGET.scope(Self::new(std::time::Duration::MAX), work).await
    }

    /// Runs `work` with this budget.
    pub(crate) async fn scope<F: std::future::Future>(&self, work: F) -> F::Output {
        BUDGET.scope(self.clone(), work).await
    }

    /// `limit`, or what is left of the budget of the update being handled if less.
    pub(crate) fn limit(limit: std::time::Duration) -> std::time::Duration {
        BUDGET
            .try_with(|b| {
                let left = b.0.load(std::sync::atomic::Ordering::Relaxed);
                limit.min(std::time::Duration::from_nanos(left))
            })
            .unwrap_or(limit)
    }

    /// Charges `spent` to the budget of the update being handled, if any.
    pub(crate) fn charge(spent: std::time::Duration) {
        let spent = u64::try_from(spent.as_nanos()).unwrap_or(u64::MAX);
        let _ = BUDGET.try_with(|b| {
            let _ = b.0.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |left| Some(left.saturating_sub(spent)),
            );
        });
    }
}
