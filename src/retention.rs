//! [`Retention`]: the handle a bot keeps, and what it reports.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use teloxide::types::UserId;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use crate::clock::{Clock, SyncedClock, duration_ms, to_datetime};
use crate::commands::Commands;
use crate::config::{Config, RetentionBuilder};
use crate::erase::{DynEraser, ErasureReason, Export};
use crate::error::{Error, Result};
use crate::hooks::Hooks;
use crate::stats::{Counters, Stats};
use crate::store::{ClaimTimes, DynBackend, Store};
use crate::tracker::{Noted, Tracker};

/// Data retention for one bot: tracking, erasure, the pruner and the privacy commands.
///
/// Cheap to clone; clones share everything. Build one with [`Retention::builder`], wrap the
/// dispatcher's handler with [`Retention::wrap`], and start the pruner with
/// [`Retention::spawn_pruner`]. See the [crate documentation](crate) for a complete bot.
#[derive(Clone)]
pub struct Retention {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) config: Config,
    pub(crate) backend: DynBackend,
    /// The injected clock, corrected by its offset to the store's clock.
    pub(crate) clock: Arc<SyncedClock>,
    pub(crate) erasers: Vec<Arc<dyn DynEraser>>,
    pub(crate) commands: Option<Commands>,
    pub(crate) hooks: Arc<Hooks>,
    pub(crate) tracker: Arc<Tracker>,
    pub(crate) counters: Arc<Counters>,
    /// Cancelled when the last clone is dropped; stops the background writer.
    cancel: CancellationToken,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention")
            .field("namespace", &self.inner.config.namespace)
            .field("inactive_after", &self.inner.config.inactive_after)
            .field("erasers", &self.eraser_names())
            .finish_non_exhaustive()
    }
}

/// What the store holds about one user; see [`Retention::status`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UserStatus {
    /// The user.
    pub user: UserId,
    /// The last recorded interaction, if the user is tracked.
    pub last_seen: Option<DateTime<Utc>>,
    /// A scheduled or running erasure.
    pub erasure: Option<PendingErasure>,
}

/// An erasure that is scheduled or running.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PendingErasure {
    /// Why the user will be erased.
    pub reason: ErasureReason,
    /// When the user was marked (for gone users: when Telegram told us).
    pub marked_at: Option<DateTime<Utc>>,
    /// When the erasure becomes due; `None` while it runs, or when gone users are only
    /// marked ([`GonePolicy::MarkOnly`](crate::GonePolicy::MarkOnly)).
    pub due: Option<DateTime<Utc>>,
    /// `true` while an erasure of this user is running.
    pub running: bool,
    /// Earlier attempts that failed and are being retried.
    pub failed_attempts: u32,
}

/// The result of [`Retention::erase_user`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum OptOutOutcome {
    /// Everything is erased: the store's entries and every eraser's data.
    Erased {
        /// An update of the user was handled while the erasers ran; the erasure runs once
        /// more after the follow-up delay to erase what it may have written.
        follow_up: bool,
    },
    /// At least one eraser failed. The erasure is recorded in the store and retried by
    /// the pruner, with backoff, until it succeeds.
    Retrying {
        /// The erasers that failed, with their errors.
        failed: Vec<(String, String)>,
    },
    /// Another erasure of this user is running right now (a pruner, another replica); it
    /// now counts as an opt-out and is retried as one if it fails.
    AlreadyRunning,
}

impl Retention {
    /// Starts configuring retention on `store`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// assert_eq!(retention.inactive_after(), Duration::from_secs(90 * 24 * 3600));
    /// # Ok(()) }
    /// ```
    pub fn builder(store: impl Store) -> RetentionBuilder {
        RetentionBuilder::new(store)
    }

    pub(crate) fn from_parts(
        config: Config,
        backend: DynBackend,
        clock: Arc<dyn Clock>,
        erasers: Vec<Arc<dyn DynEraser>>,
        commands: Option<Commands>,
        hooks: Hooks,
    ) -> Self {
        let hooks = Arc::new(hooks);
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let clock = Arc::new(SyncedClock::new(clock));
        let tracker = Arc::new(Tracker::new(
            &config,
            Arc::clone(&backend),
            Arc::clone(&clock),
            Arc::clone(&counters),
            Arc::clone(&hooks),
            cancel.clone(),
        ));
        Self {
            inner: Arc::new(Inner {
                config,
                backend,
                clock,
                erasers,
                commands,
                hooks,
                tracker,
                counters,
                cancel,
            }),
        }
    }

    /// The inactivity threshold.
    #[must_use]
    pub fn inactive_after(&self) -> Duration {
        self.inner.config.inactive_after
    }

    /// The names of the registered erasers, in registration order.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .erase_with(teloxide_retention::erase_fn("orders", |_| async {
    /// #         Ok::<_, teloxide_retention::BoxError>(())
    /// #     }))
    /// #     .build()?;
    /// assert_eq!(retention.eraser_names(), ["orders"]);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn eraser_names(&self) -> Vec<&str> {
        self.inner.erasers.iter().map(|e| e.name()).collect()
    }

    /// Records that `user` interacted now, as the layer does for every update.
    ///
    /// For interactions that do not pass through the dispatcher (a web app, a payment
    /// callback). Telegram's service accounts are ignored.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// // A payment confirmed through a web app, outside the dispatcher:
    /// let noted = retention.note_interaction(UserId(42)).await;
    /// assert!(noted.is_stored());
    /// assert!(retention.status(UserId(42)).await?.last_seen.is_some());
    /// # Ok(()) }
    /// ```
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: a cancelled call's interaction is still written with its batch.
    pub async fn note_interaction(&self, user: UserId) -> Noted {
        if !crate::humans::is_trackable_id(user) {
            return Noted::Ignored;
        }
        self.inner.tracker.touch(user.0, self.inner.config.strict).await
    }

    /// Writes every buffered interaction now.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// retention.note_interaction(UserId(42)).await;
    /// retention.flush().await?; // nothing is left in memory
    /// assert_eq!(retention.stats().buffered_users, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The store error if it is still unreachable; the interactions stay buffered.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: what was not written stays buffered.
    pub async fn flush(&self) -> Result<()> {
        self.inner.tracker.flush().await
    }

    /// Ends this process's recording: writes every buffered interaction and removes the
    /// process's heartbeat from the store, so that pruners elsewhere do not hold back
    /// erasures for inactivity waiting for it (see
    /// [`RetentionBuilder::writer_timeout`](crate::RetentionBuilder::writer_timeout)).
    /// Call it once the dispatcher has stopped; interactions recorded afterwards are not
    /// written. Dropping the last clone does the same in the background, which a runtime
    /// that shuts down right after may not let finish.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// let pruner = retention.spawn_pruner();
    /// // ... the dispatcher runs, then stops ...
    /// pruner.shutdown().await;
    /// retention.shutdown().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Timeout`] if buffered interactions could not be written within a few store
    /// timeouts; they are lost, and this process keeps holding pruners back until it counts
    /// as dead.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: the writer finishes on its own.
    pub async fn shutdown(&self) -> Result<()> {
        if self.inner.tracker.shutdown().await {
            Ok(())
        } else {
            Err(Error::Timeout(self.inner.config.store_timeout))
        }
    }

    /// What the store holds about `user`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// use teloxide_retention::{ErasureReason, GoneReason};
    ///
    /// retention.note_interaction(UserId(42)).await;
    /// retention.mark_gone(UserId(42), GoneReason::Blocked).await?;
    /// let status = retention.status(UserId(42)).await?;
    /// assert!(status.last_seen.is_some());
    /// assert_eq!(status.erasure.unwrap().reason, ErasureReason::Blocked);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be read.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn status(&self, user: UserId) -> Result<UserStatus> {
        let raw = self.store_call(self.inner.backend.status(user.0)).await?;
        let erasure = raw.job.map(|(reason, marked_at, attempts)| PendingErasure {
            reason,
            marked_at: (marked_at != 0).then(|| to_datetime(marked_at)),
            due: raw.queued_due.flatten().map(to_datetime),
            running: raw.leased_until.is_some(),
            failed_attempts: attempts,
        });
        // A running inactivity erasure has a lease but no job.
        let erasure = erasure.or_else(|| {
            raw.leased_until.map(|_| PendingErasure {
                reason: ErasureReason::Inactive,
                marked_at: None,
                due: None,
                running: true,
                failed_attempts: 0,
            })
        });
        Ok(UserStatus { user, last_seen: raw.last_seen.map(to_datetime), erasure })
    }

    /// Number of tracked users.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// retention.note_interaction(UserId(1)).await;
    /// retention.note_interaction(UserId(2)).await;
    /// assert_eq!(retention.tracked_users().await?, 2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be read.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn tracked_users(&self) -> Result<u64> {
        self.store_call(self.inner.backend.tracked()).await
    }

    /// Erases `user` now, on their request: the store's entries and every eraser's data.
    ///
    /// This is what `/removemydata` runs after the user confirms. It returns only once the
    /// erasure is complete, or recorded durably for retry if an eraser failed.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// use teloxide_retention::OptOutOutcome;
    ///
    /// retention.note_interaction(UserId(42)).await;
    /// // A request by e-mail, handled by the bot's operator:
    /// let outcome = retention.erase_user(UserId(42)).await?;
    /// assert_eq!(outcome, OptOutOutcome::Erased { follow_up: false });
    /// assert_eq!(retention.status(UserId(42)).await?.last_seen, None);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be reached. If the store
    /// fails after the erasers succeeded, the claim's lease expires and the pruner finishes
    /// the erasure.
    ///
    /// # Cancellation safety
    ///
    /// Not cancel-safe: a cancelled call may leave a claimed user, which the pruner erases
    /// once the lease expires.
    pub async fn erase_user(&self, user: UserId) -> Result<OptOutOutcome> {
        let inner = &self.inner;
        // Interactions from now on go to the store, so that finishing the erasure sees them.
        let _erasing = inner.tracker.begin_erasure(user.0);
        self.erase_user_claimed(user).await
    }

    /// What this crate and every exporting eraser hold about `user`, as the JSON document
    /// `/mydata` sends.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// retention.note_interaction(UserId(42)).await;
    /// let document = retention.export(UserId(42)).await?;
    /// assert_eq!(document["user_id"], 42);
    /// assert_eq!(document["retention"]["status"], "active");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be read. A failing eraser
    /// does not fail the export; its entry says it failed.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn export(&self, user: UserId) -> Result<serde_json::Value> {
        use serde_json::json;
        let status = self.status(user).await?;
        let generated = to_datetime(self.inner.clock.now_ms());
        let erasure = status.erasure.as_ref().map(|e| {
            json!({
                "reason": e.reason.as_str(),
                "marked_at": e.marked_at.map(|t| t.to_rfc3339()),
                "due": e.due.map(|t| t.to_rfc3339()),
                "running": e.running,
                "failed_attempts": e.failed_attempts,
            })
        });
        let state = match &status.erasure {
            Some(e) if e.reason.is_gone() => "gone",
            Some(_) => "erasure_pending",
            None if status.last_seen.is_some() => "active",
            None => "not_tracked",
        };
        let limit = self.inner.config.eraser_timeout;
        let exports =
            futures_util::future::join_all(self.inner.erasers.iter().map(|eraser| async move {
                match timeout(limit, eraser.export(user)).await {
                    Ok(Ok(Export::Data(data))) => json!({ "name": eraser.name(), "data": data }),
                    Ok(Ok(Export::Unsupported)) => {
                        json!({ "name": eraser.name(), "held": "held, no export" })
                    }
                    Ok(Err(e)) => json!({ "name": eraser.name(), "error": e.to_string() }),
                    Err(_) => json!({ "name": eraser.name(), "error": "timed out" }),
                }
            }))
            .await;
        Ok(json!({
            "user_id": user.0,
            "generated_at": generated.to_rfc3339(),
            "retention": {
                "status": state,
                "last_seen": status.last_seen.map(|t| t.to_rfc3339()),
                "erasure": erasure,
                "note": "Only the time of your last interaction is kept; \
                         the first one is not recorded.",
            },
            "policy": {
                "inactive_after_days": self.inner.config.inactive_after.as_secs_f64() / 86_400.0,
            },
            "bot_data": exports,
        }))
    }

    /// Counters since this instance was built.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let clock = ManualClock::starting_now();
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    /// #     .clock(clock.clone())
    /// #     .build()?;
    /// use teloxide_retention::ErasureReason;
    ///
    /// retention.note_interaction(UserId(42)).await;
    /// retention.erase_user(UserId(42)).await?;
    /// let stats = retention.stats();
    /// assert_eq!(stats.erased_for(ErasureReason::OptOut), 1);
    /// assert_eq!(stats.erased_total(), 1);
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn stats(&self) -> Stats {
        self.inner.counters.snapshot(&self.inner.tracker)
    }

    /// "Now" (or the store's clock), the inactivity span and the lease of a claim. The span
    /// also covers the resolution: a cached user's stored time may lag their real last
    /// interaction by up to that much.
    pub(crate) fn claim_times(&self) -> ClaimTimes {
        let config = &self.inner.config;
        ClaimTimes {
            now: self.inner.clock.claim_now(),
            inactive_ms: duration_ms(config.inactive_after)
                .saturating_add(duration_ms(config.resolution))
                .min(MAX_SPAN_MS),
            lease_ms: duration_ms(config.lease).min(MAX_SPAN_MS),
        }
    }

    /// Runs a store call under the store timeout.
    pub(crate) async fn store_call<T>(
        &self,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let limit = self.inner.config.store_timeout;
        timeout(limit, call).await.unwrap_or(Err(Error::Timeout(limit)))
    }
}

/// The longest span handed to a script: about 35,000 years, exact in a Lua number, and
/// far enough that "never" stays never.
const MAX_SPAN_MS: i64 = 1 << 50;

#[cfg(test)]
mod tests {
    use super::*;

    mod held_touches {
        //! A store whose touch writes wait until the test lets them through: the group
        //! commit's write of an interaction taken during an erasure lands after the finish.

        use std::sync::atomic::AtomicBool;

        use futures_util::future::BoxFuture;
        use tokio::sync::Notify;

        use crate::store::sealed::{Bound, Token};
        use crate::store::{
            Backend, Batch, ClaimTimes, Claimed, Confirmed, Health, Invalidation, Marked,
            RawPreview, RawStatus, WriterWindow,
        };
        use crate::{ErasureReason, MemoryStore, Result, Store};

        use super::*;

        #[derive(Clone)]
        pub(super) struct HeldTouches {
            pub(super) store: MemoryStore,
            pub(super) hold: Arc<AtomicBool>,
            pub(super) released: Arc<Notify>,
        }

        impl Store for HeldTouches {
            fn bind(&self, namespace: &str, token: Token) -> Bound {
                let inner = self.store.bind(namespace, token).0;
                Bound(Arc::new(Held { inner, store: self.clone() }))
            }
        }

        struct Held {
            inner: Arc<dyn Backend>,
            store: HeldTouches,
        }

        impl Backend for Held {
            fn touch<'a>(&'a self, touches: &'a [(u64, i64)]) -> BoxFuture<'a, Result<()>> {
                Box::pin(async move {
                    if self.store.hold.load(std::sync::atomic::Ordering::SeqCst) {
                        self.store.released.notified().await;
                    }
                    self.inner.touch(touches).await
                })
            }
            fn claim(
                &self,
                t: ClaimTimes,
                w: WriterWindow,
                limit: usize,
                id: u64,
            ) -> BoxFuture<'_, Result<Batch>> {
                self.inner.claim(t, w, limit, id)
            }
            fn claim_user(
                &self,
                user: u64,
                reason: ErasureReason,
                t: ClaimTimes,
                id: u64,
            ) -> BoxFuture<'_, Result<Option<Batch>>> {
                self.inner.claim_user(user, reason, t, id)
            }
            fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
                self.inner.server_time()
            }
            fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
                self.inner.heartbeat(id, backlog)
            }
            fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
                self.inner.retire(id)
            }
            fn writers_holding(&self, w: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
                self.inner.writers_holding(w)
            }
            fn health(&self) -> BoxFuture<'_, Result<Health>> {
                self.inner.health()
            }
            fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
                self.inner.accept_lost_tracking()
            }
            fn finish<'a>(
                &'a self,
                batch: &'a Batch,
                done: &'a [Claimed],
                failed: &'a [(Claimed, i64)],
                now: i64,
                follow_up_at: i64,
            ) -> BoxFuture<'a, Result<Option<Vec<Confirmed>>>> {
                self.inner.finish(batch, done, failed, now, follow_up_at)
            }
            fn schedule(
                &self,
                user: u64,
                reason: ErasureReason,
                marked_at: i64,
                due: Option<i64>,
            ) -> BoxFuture<'_, Result<Marked>> {
                self.inner.schedule(user, reason, marked_at, due)
            }
            fn unschedule_gone(&self, user: u64) -> BoxFuture<'_, Result<bool>> {
                self.inner.unschedule_gone(user)
            }
            fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
                self.inner.status(user)
            }
            fn preview(
                &self,
                now: i64,
                cutoff: i64,
                limit: usize,
            ) -> BoxFuture<'_, Result<RawPreview>> {
                self.inner.preview(now, cutoff, limit)
            }
            fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
                self.inner.feed_head()
            }
            fn feed_read<'a>(
                &'a self,
                cursor: &'a str,
            ) -> BoxFuture<'a, Result<(Vec<Invalidation>, String)>> {
                self.inner.feed_read(cursor)
            }
            fn put_nonce(
                &self,
                user: u64,
                value: String,
                ttl_ms: i64,
            ) -> BoxFuture<'_, Result<()>> {
                self.inner.put_nonce(user, value, ttl_ms)
            }
            fn take_nonce(&self, user: u64) -> BoxFuture<'_, Result<Option<String>>> {
                self.inner.take_nonce(user)
            }
            fn count_use(
                &self,
                user: u64,
                action: &'static str,
                window: i64,
                ttl_ms: i64,
            ) -> BoxFuture<'_, Result<u64>> {
                self.inner.count_use(user, action, window, ttl_ms)
            }
            fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
                self.inner.tracked()
            }
        }

        /// An eraser that lets the test act while it runs.
        struct Paused(Arc<Notify>, Arc<Notify>);

        impl crate::Eraser for Paused {
            fn name(&self) -> &str {
                "paused"
            }
            async fn erase(&self, _: crate::Erasure) -> std::result::Result<(), crate::BoxError> {
                self.0.notify_one();
                self.1.notified().await;
                Ok(())
            }
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn an_interaction_whose_write_lands_after_the_finish_still_gets_a_follow_up() {
            // Before the fix: the interaction's write waited in the group commit while the
            // finish ran, so the finish did not see it in `seen` and queued no follow-up;
            // the write then tracked the opted-out user again, and whatever the update's
            // handler wrote after the erasers stayed.
            let store = HeldTouches {
                store: MemoryStore::new(),
                hold: Arc::new(AtomicBool::new(false)),
                released: Arc::new(Notify::new()),
            };
            let clock = crate::ManualClock::at_unix_ms(1_000_000);
            let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
            let retention = Retention::builder(store.clone())
                .inactive_after(Duration::from_secs(30 * 24 * 3600))
                .clock(clock.clone())
                .erase_with(Paused(Arc::clone(&entered), Arc::clone(&release)))
                .build()
                .unwrap();
            assert_eq!(retention.note_interaction(UserId(7)).await, crate::Noted::Written);
            let opt_out = tokio::spawn({
                let retention = retention.clone();
                async move { retention.erase_user(UserId(7)).await }
            });
            entered.notified().await;
            // An update of the user arrives while the eraser runs; its write is held.
            store.hold.store(true, std::sync::atomic::Ordering::SeqCst);
            clock.advance(Duration::from_secs(1));
            let touch = tokio::spawn({
                let retention = retention.clone();
                async move { retention.note_interaction(UserId(7)).await }
            });
            tokio::time::sleep(Duration::from_millis(50)).await;
            release.notify_one();
            let outcome = opt_out.await.unwrap().unwrap();
            // Now the held write lands, after the finish.
            store.hold.store(false, std::sync::atomic::Ordering::SeqCst);
            store.released.notify_waiters();
            assert_eq!(touch.await.unwrap(), crate::Noted::Written);

            assert_eq!(outcome, OptOutOutcome::Erased { follow_up: true });
            let status = retention.status(UserId(7)).await.unwrap();
            let follow_up = status.erasure.expect("a follow-up erasure is scheduled");
            assert_eq!(follow_up.reason, ErasureReason::OptOut);
            assert_eq!(retention.stats().follow_ups, 1);
        }
    }
}
