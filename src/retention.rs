//! [`Retention`]: the handle a bot keeps, and what it reports.

use std::sync::Arc;
use std::time::Duration;

use teloxide::RequestError;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::Requester;
use teloxide::types::{AllowedUpdate, BotCommand, Recipient, UserId};

use crate::clock::Clock;
use crate::commands::Commands;
use crate::config::Config;
use crate::erase::DynEraser;
use crate::error::{Error, Result};
use crate::gone::GoneReason;
use crate::hooks::Hooks;
use crate::layer::Layer;
use crate::parts::Parts;
use crate::pruner::{PassReport, PrunePreview, Pruner, PrunerHandle};
use crate::rights::{OptOutOutcome, UserStatus};
use crate::stats::Stats;
use crate::store::Door;
use crate::tracker::Noted;

/// Data retention for one bot: tracking, erasure, the pruner and the privacy commands.
///
/// Cheap to clone; clones share everything. Build one with [`Retention::builder`], wrap the
/// dispatcher's handler with [`Retention::wrap`], and start the pruner with
/// [`Retention::spawn_pruner`]. See the [crate documentation](crate) for a complete bot.
#[derive(Clone)]
pub struct Retention {
    pub(crate) inner: Arc<Inner>,
}

/// What the clones share: the parts (tracker, store, erasers) and the privacy commands.
/// The handle only delegates; the work is done in the modules below it.
pub(crate) struct Inner {
    pub(crate) parts: Arc<Parts>,
    pub(crate) commands: Option<Arc<Commands>>,
}

impl std::fmt::Debug for Retention {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Retention")
            .field("namespace", &self.inner.parts.config.namespace)
            .field("inactive_after", &self.inner.parts.config.inactive_after)
            .field("erasers", &self.eraser_names())
            .finish_non_exhaustive()
    }
}

impl Retention {
    pub(crate) fn from_parts(
        config: Config,
        door: Door,
        clock: Arc<dyn Clock>,
        erasers: Vec<Arc<dyn DynEraser>>,
        commands: Option<Commands>,
        hooks: Hooks,
        prober: Option<crate::probe::Prober>,
    ) -> Self {
        let parts = Parts::new(config, door, clock, erasers, hooks, prober);
        Self { inner: Arc::new(Inner { parts: Arc::new(parts), commands: commands.map(Arc::new) }) }
    }

    /// The layer over this retention's parts and commands.
    fn layer(&self) -> Layer {
        Layer::new(Arc::clone(&self.inner.parts), self.inner.commands.clone())
    }

    /// The inactivity threshold.
    #[must_use]
    pub fn inactive_after(&self) -> Duration {
        self.inner.parts.config.inactive_after
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
        self.inner.parts.eraser_names()
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
        self.inner.parts.note_interaction(user.0).await
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
        self.inner.parts.tracker.flush().await
    }

    /// For tests (the `testing` feature): applies now the erasures and gone marks that
    /// processes sharing the store announced (read every second otherwise), then writes
    /// what is buffered, so that whether the next interaction is `Noted::Cached` or
    /// `Noted::Written` does not depend on when the background reader last ran.
    ///
    /// # Errors
    ///
    /// The store error if it is unreachable; the interactions stay buffered.
    #[cfg(feature = "testing")]
    pub async fn settle(&self) -> Result<()> {
        let tracker = &self.inner.parts.tracker;
        tracker.catch_up().await;
        tracker.flush().await
    }

    /// Ends this process's recording: writes every buffered interaction and removes the
    /// process's heartbeat from the store, so that pruners elsewhere do not hold back
    /// erasures for inactivity waiting for it (see
    /// [`RetentionBuilder::writer_timeout`](crate::RetentionBuilder::writer_timeout)).
    /// Call it once the dispatcher has stopped; interactions recorded afterwards are not
    /// written (`note_interaction` answers [`Noted::Dropped`] at once). It works from any
    /// tokio runtime, also after the one that started the background writer shut down. Dropping the last clone does the same in the background, which a runtime
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
        if self.inner.parts.tracker.shutdown().await {
            Ok(())
        } else {
            Err(Error::Timeout(self.inner.parts.config.store_timeout))
        }
    }

    /// Checks now what the first write would find out: that the store answers, that the
    /// namespace's recorded shard count is the one the store was opened with, and on
    /// SQLite that no other namespace on the file differs from this one only in letter
    /// case (they would share tables; see
    /// [`RetentionBuilder::namespace`](crate::RetentionBuilder::namespace)). A bot
    /// that should not start on a misconfigured store calls it after
    /// [`RetentionBuilder::build`](crate::RetentionBuilder::build), as
    /// [`RedisStore::connect`](crate::RedisStore::connect) fails at start for an
    /// unreachable Redis (the store alone does not know the namespace). Without it, a
    /// wrong count fails the first write with the same error, logged once at error level
    /// and counted in [`Stats::layout_errors`](crate::Stats::layout_errors), and
    /// interactions stay buffered.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide_retention::{MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// retention.check_store().await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::ShardCount`] or [`Error::Resharding`] (both [`Error::is_config`]) naming
    /// the recorded and the opened count; [`Error::Config`] naming the tables of a SQLite
    /// namespace that differs from this one only in case; [`Error::Redis`] or
    /// [`Error::Timeout`] if the store does not answer.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads (and records the shard count of a new namespace).
    pub async fn check_store(&self) -> Result<()> {
        let parts = &self.inner.parts;
        parts.door.call(|b| b.tracked()).await.map(drop)
    }

    /// Puts users the bot already held before it installed the crate on a clock: each with
    /// the last activity the bot knows (its own table's `last_active`, the newest order,
    /// ...) or none (their clock starts now if they are not tracked yet; a tracked user
    /// keeps theirs). A tracked time only moves forward and no stored time is later than
    /// now (a time up to a day ahead counts as now); Telegram's service accounts, invalid ids
    /// and implausible times (before 2013, or more than a day ahead: see
    /// [`Adopted::refused_implausible_times`](crate::Adopted::refused_implausible_times))
    /// are refused, and users with a scheduled or running erasure are left as they are.
    /// Idempotent.
    /// Written in chunks of 500 users, one store call each (sharded stores put each user in
    /// their shard). [`Adoption`](crate::Adoption) and the README's "Adding retention
    /// to an existing bot" show the whole procedure; look at [`Retention::preview`] before
    /// the first pass, or give users notice with [`Adoption::not_before`](crate::Adoption::not_before).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{Adoption, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    /// #     .build()?;
    /// let adopted = retention.adopt([(UserId(7), None), (UserId(8), None)], &Adoption::new()).await?;
    /// assert_eq!(adopted.newly_tracked, 2);
    /// let again = retention.adopt([(UserId(7), None)], &Adoption::new()).await?;
    /// assert_eq!(again.newly_tracked, 0);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store fails; the chunks written before
    /// stay written (run it again: it is idempotent). [`Error::ShardCount`] /
    /// [`Error::Resharding`] for a store opened with the wrong shard count.
    /// [`Error::InvalidArgument`] for a notice date more than a year ahead (see
    /// [`Adoption::not_before`](crate::Adoption::not_before)), before anything is written, or
    /// when 64 other notices run.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe in the sense that every chunk is written whole or not at all; a cancelled
    /// call leaves the chunks before it adopted.
    pub async fn adopt<I>(&self, users: I, options: &crate::Adoption) -> Result<crate::Adopted>
    where
        I: IntoIterator<Item = (UserId, Option<chrono::DateTime<chrono::Utc>>)>,
    {
        crate::adopt::adopt(&self.inner.parts, users, options).await
    }

    /// Ends every running adoption notice now (see
    /// [`Adoption::not_before`](crate::Adoption::not_before)): the users they held that are
    /// idle past the threshold are due at the next pass. For a notice given by mistake (a
    /// wrong date); [`Survey::notices`](crate::Survey::notices) lists the running ones.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store fails (run it again).
    /// [`Error::ShardCount`] / [`Error::Resharding`] for a store opened with the wrong shard
    /// count.
    pub async fn end_notices(&self) -> Result<()> {
        self.inner.parts.door.call(|b| b.end_notices()).await
    }

    /// Audits every registered eraser that can list what its storage holds
    /// ([`Eraser::list`](crate::Eraser::list)) against the store: listed users the store
    /// does not know are put on a clock (or only counted, per `untracked`), and, with
    /// receipts on, users whose erasure completed but whom an eraser still lists are erased
    /// again (residue). Erasers that cannot list are reported as not covered. See
    /// [`AuditReport`](crate::AuditReport) for an example.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store fails; an eraser's listing error
    /// is reported in its [`EraserAudit`](crate::EraserAudit) instead.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: what it adopted or scheduled before is kept, and running it again
    /// finishes the job.
    pub async fn audit(&self, untracked: crate::UntrackedUsers) -> Result<crate::AuditReport> {
        crate::audit::audit(&self.inner.parts, untracked).await
    }

    /// The counts of the last scheduled audit
    /// ([`RetentionBuilder::audit_every`](crate::RetentionBuilder::audit_every)), kept in
    /// the store by whichever replica ran it; `None` before the first.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be read.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn last_audit(&self) -> Result<Option<crate::AuditSummary>> {
        crate::audit::last(&self.inner.parts).await
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
        crate::rights::status(&self.inner.parts, user).await
    }

    /// Counts what the namespace holds, for operators: tracked users by time since their
    /// last interaction (buckets relative to the threshold), users due now and within a day
    /// or a week, scheduled erasures by reason, failing erasures, and the heartbeats of the
    /// processes that record interactions. The CLI's `stats` prints it.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// retention.note_interaction(UserId(1)).await;
    /// retention.flush().await?;
    /// let survey = retention.survey().await?;
    /// assert_eq!(survey.tracked, 1);
    /// assert_eq!(survey.inactivity[0].label(survey.inactive_after), "< 1 d");
    /// assert_eq!(survey.inactivity[0].users, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be read.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads. It reads every scheduled erasure, so it is meant for
    /// operators, not for every update.
    pub async fn survey(&self) -> Result<crate::Survey> {
        crate::survey::survey(&self.inner.parts).await
    }

    /// Where the census stands, counted as if it ran with `census` and one probe per
    /// `interval`: users idle long enough, how many it keeps a probe time of, and at most
    /// how long a round takes. Works whether the census is on or not (the CLI's
    /// `census --dry-run` prints it), so that an operator sees what turning it on means.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// use teloxide_retention::{Census, ManualClock, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// const DAY: Duration = Duration::from_secs(24 * 3600);
    /// let clock = ManualClock::starting_now();
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(90 * DAY)
    ///     .clock(clock.clone())
    ///     .build()?;
    /// retention.note_interaction(UserId(1)).await;
    /// retention.flush().await?;
    /// clock.advance(31 * DAY);
    /// let estimate =
    ///     retention.census_estimate(&Census::new(), Duration::from_secs(1)).await?;
    /// assert_eq!(estimate.idle_users, Some(1));
    /// assert_eq!(estimate.round_takes, Some(Duration::from_secs(1)));
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be read.
    pub async fn census_estimate(
        &self,
        census: &crate::Census,
        interval: Duration,
    ) -> Result<crate::CensusProgress> {
        let with = Some((census.idle_for, interval));
        Ok(crate::survey::survey_with(&self.inner.parts, with).await?.census)
    }

    /// Schedules an opt-out erasure of `user`, due now, for the pruners of the bots sharing
    /// this store to carry out with all their erasers (unlike [`Retention::erase_user`],
    /// which erases here and now). For tools without erasers, such as the CLI's `forget`.
    /// Idempotent: scheduling a user twice keeps one erasure. The erasure is due at this
    /// process's clock corrected by Redis's `TIME`, so a tool on a machine with a skewed
    /// clock schedules it for now all the same.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{Marked, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// assert_eq!(retention.schedule_opt_out(UserId(7)).await?, Marked::Scheduled);
    /// assert_eq!(retention.schedule_opt_out(UserId(7)).await?, Marked::AlreadyScheduled);
    /// assert_eq!(retention.prune_once().await?.erased, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::InvalidUser`] for 0 or an id above 2^53 - 1; [`Error::Redis`] or
    /// [`Error::Timeout`] if the store cannot be written; nothing was scheduled then, or the
    /// call may be repeated.
    pub async fn schedule_opt_out(&self, user: UserId) -> Result<crate::Marked> {
        crate::rights::schedule_opt_out(&self.inner.parts, user).await
    }

    /// The erasure receipts of `user`, oldest first, found with the key given to
    /// [`RetentionBuilder::receipts`](crate::RetentionBuilder::receipts): one per completed
    /// erasure within the receipts' lifetime. Empty if the user was never erased in that
    /// time (or under another key).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// # use teloxide_retention::{ErasureReason, MemoryStore, ReceiptKey, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(30 * 24 * 3600))
    ///     .receipts(ReceiptKey::new([7u8; 32])?, Duration::from_secs(365 * 24 * 3600))
    ///     .build()?;
    /// retention.erase_user(UserId(42)).await?;
    /// let receipts = retention.receipt(UserId(42)).await?;
    /// assert_eq!(receipts[0].reason, ErasureReason::OptOut);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`] if receipts are off; [`Error::Redis`] or [`Error::Timeout`] if the
    /// store cannot be read (it reads every receipt of the namespace, within 60 s).
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn receipt(&self, user: UserId) -> Result<Vec<crate::Receipt>> {
        let Some(receipts) = &self.inner.parts.config.receipts else {
            return Err(Error::config(
                "receipts are off; turn them on with RetentionBuilder::receipts, or look a \
                 user up with Retention::receipt_with and the key",
            ));
        };
        crate::rights::receipts(&self.inner.parts, user, &receipts.key).await
    }

    /// Like [`Retention::receipt`], with a key given here: for tools that look receipts
    /// up without writing them (the CLI's `receipt`). Receipts past their lifetime that
    /// Redis still holds are included unless this `Retention` was built with
    /// [`RetentionBuilder::receipts`](crate::RetentionBuilder::receipts).
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be read.
    pub async fn receipt_with(
        &self,
        user: UserId,
        key: &crate::ReceiptKey,
    ) -> Result<Vec<crate::Receipt>> {
        crate::rights::receipts(&self.inner.parts, user, key).await
    }

    /// Number of tracked users: the entries of the store's `seen` (members that are not
    /// users, see the README's guarantee 13, count too).
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
        self.inner.parts.door.call(|b| b.tracked()).await
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
    /// [`Error::InvalidUser`] for 0 or an id above 2^53 - 1 (nothing runs);
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be reached. If the store
    /// fails after the erasers succeeded, the claim's lease expires and the pruner finishes
    /// the erasure.
    ///
    /// # Cancellation safety
    ///
    /// Not cancel-safe: a cancelled call may leave a claimed user, which the pruner erases
    /// once the lease expires.
    pub async fn erase_user(&self, user: UserId) -> Result<OptOutOutcome> {
        crate::rights::erase_user(&self.inner.parts, user).await
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
        crate::rights::export(&self.inner.parts, user, None).await
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
        self.inner.parts.counters.snapshot(self.inner.parts.tracker.gauges())
    }

    /// Marks `user` as gone, as the layer does for a block; what follows is the
    /// [`GonePolicy`](crate::GonePolicy).
    ///
    /// Returns `true` if an erasure was newly scheduled (`false`: one was already
    /// scheduled or running, which is kept, or `user` is a bot or service account id the
    /// crate never tracks).
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
    /// use teloxide_retention::GoneReason;
    ///
    /// // A user the bot's own code found gone (a failed call to another API, say):
    /// assert!(retention.mark_gone(UserId(42), GoneReason::Unreachable).await?);
    /// assert!(!retention.is_reachable(UserId(42)).await?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`](crate::Error::Redis) or [`Error::Timeout`](crate::Error::Timeout)
    /// if the store cannot be written. The mark is then not kept: handle the error, or use
    /// [`NoteGone::note_gone`](crate::NoteGone::note_gone), which keeps marks in memory while the store is unreachable
    /// (as the layer does for blocks) and writes them when it answers again.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: the mark is written in one script call, or not at all.
    pub async fn mark_gone(&self, user: UserId, reason: GoneReason) -> Result<bool> {
        self.inner.parts.tracker.mark_gone(user, reason).await
    }

    /// Whether `user` can be messaged, as far as Telegram has told the bot: `false` while
    /// they are marked gone (they blocked the bot, deleted their account, or a request to
    /// them failed as unreachable) and have not interacted since; `true` otherwise,
    /// including for users the crate does not track. The check to make before a broadcast.
    ///
    /// Cheap: one store read (one script call on Redis), no scan; a mark kept in memory
    /// during a store outage counts too.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide::types::UserId;
    /// use teloxide_retention::{GoneReason, MemoryStore, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// retention.mark_gone(UserId(42), GoneReason::Blocked).await?;
    /// assert!(!retention.is_reachable(UserId(42)).await?);
    /// assert!(retention.is_reachable(UserId(43)).await?);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`](crate::Error::Redis) or [`Error::Timeout`](crate::Error::Timeout)
    /// if the store cannot be read and this process keeps no mark of `user` in memory (with
    /// one, the answer is `false` without asking the store).
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn is_reachable(&self, user: UserId) -> Result<bool> {
        self.inner.parts.tracker.is_reachable(user).await
    }

    /// Probes `user` now: sends one chat action ("typing") to their private chat through
    /// the requester given to
    /// [`RetentionBuilder::probe_with`](crate::RetentionBuilder::probe_with), at the
    /// probes' pace, and classifies the answer. A gone answer marks the user as a failed
    /// send would (the [`GonePolicy`](crate::GonePolicy) applies); a reachable one is not an
    /// interaction (an idle user stays on the inactivity clock).
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// use teloxide::prelude::*;
    /// use teloxide_retention::{MemoryStore, Probes, Reachability, Retention};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .probe_with(Bot::from_env(), Probes::new())
    ///     .build()?;
    /// if let Reachability::Gone(reason) = retention.probe(UserId(42)).await? {
    ///     println!("user 42 is gone: {reason}");
    /// }
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Config`](crate::Error::Config) if the builder was given no requester;
    /// [`Error::Redis`](crate::Error::Redis) or [`Error::Timeout`](crate::Error::Timeout)
    /// if a gone user's mark cannot be written.
    pub async fn probe(&self, user: UserId) -> Result<crate::Reachability> {
        let Some(prober) = &self.inner.parts.prober else {
            return Err(crate::Error::config(
                "Retention::probe needs a way to reach Telegram: RetentionBuilder::probe_with",
            ));
        };
        let found = prober.probe(user).await;
        self.inner.parts.counters.probed(found);
        if let crate::Reachability::Gone(reason) = found {
            self.inner.parts.tracker.mark_gone(user, reason).await?;
        }
        Ok(found)
    }

    /// Like [`Retention::mark_gone`], but a mark the store cannot take is kept in memory
    /// (bounded by `max_buffered_interactions`) and written once the store answers again.
    pub(crate) async fn mark_gone_or_keep(&self, user: UserId, reason: GoneReason) {
        self.inner.parts.tracker.mark_gone_or_keep(user, reason).await;
    }

    /// Reports a failed request to `chat`; marks the user gone if the error says so.
    ///
    /// Returns the reason when the user was marked.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`](crate::Error::Redis) or [`Error::Timeout`](crate::Error::Timeout)
    /// if the store cannot be written; the mark is not kept, as with
    /// [`Retention::mark_gone`].
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe, like [`Retention::mark_gone`].
    pub async fn note_send_error(
        &self,
        chat: impl Into<Recipient>,
        err: &RequestError,
    ) -> Result<Option<GoneReason>> {
        self.inner.parts.tracker.note_send_error(chat, err).await
    }

    /// Runs one prune pass now and returns what it did.
    ///
    /// Claims due users in batches until none are left: expired leases of crashed pruners,
    /// scheduled erasures (gone users, opt-outs, retries) and users inactive past the
    /// threshold. A user who interacted after the cutoff is never claimed. Users who came
    /// back after being marked are dropped, not erased.
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
    /// clock.advance(Duration::from_secs(31 * 24 * 3600));
    /// let report = retention.prune_once().await?;
    /// assert_eq!(report.erased, 1);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`](crate::Error::Redis) or [`Error::Timeout`](crate::Error::Timeout)
    /// if the store fails; users claimed before the failure are finished by a later pass
    /// once their lease expires.
    ///
    /// # Cancellation safety
    ///
    /// Not cancel-safe in the sense that a dropped pass may leave a batch claimed; the
    /// next pass after the lease finishes it. Use [`PrunerHandle::shutdown`](crate::PrunerHandle::shutdown) to stop
    /// between batches.
    pub async fn prune_once(&self) -> Result<PassReport> {
        Pruner::new(Arc::clone(&self.inner.parts)).prune_once().await
    }

    /// Lists up to `limit` users the next pass would erase, with reasons, without erasing
    /// anyone.
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
    /// clock.advance(Duration::from_secs(31 * 24 * 3600));
    /// let preview = retention.preview(10).await?;
    /// assert_eq!((preview.users[0].user, preview.users[0].reason), (UserId(42), ErasureReason::Inactive));
    /// assert_eq!(retention.tracked_users().await?, 1, "a dry run erases nothing");
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// [`Error::Redis`](crate::Error::Redis) or [`Error::Timeout`](crate::Error::Timeout)
    /// if the store cannot be read.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn preview(&self, limit: usize) -> Result<PrunePreview> {
        Pruner::new(Arc::clone(&self.inner.parts)).preview(limit).await
    }

    /// Starts the background pruner on the current Tokio runtime: a pass now, then one
    /// every interval, until [`PrunerHandle::shutdown`](crate::PrunerHandle::shutdown).
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
    /// // ... the bot runs ...
    /// pruner.shutdown().await; // the running batch finishes first
    /// # Ok(()) }
    /// ```
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime.
    pub fn spawn_pruner(&self) -> PrunerHandle {
        Pruner::new(Arc::clone(&self.inner.parts)).spawn()
    }

    /// Accepts that the set of tracked users was lost (a prune pass fails with
    /// [`Error::Unsafe`] saying so) and lets the pruner run again with the users tracked
    /// since. Users tracked before the loss are not erased for inactivity; erase their data
    /// by other means.
    ///
    /// # Errors
    ///
    /// [`Error::Redis`] or [`Error::Timeout`] if the store cannot be written.
    pub async fn accept_lost_tracking(&self) -> Result<()> {
        Pruner::new(Arc::clone(&self.inner.parts)).accept_lost_tracking().await
    }

    /// Wraps `handler` for a dispatcher whose bot is [`teloxide::Bot`] or
    /// [`Retained<Bot>`](crate::Retained), whichever it provides.
    ///
    /// The dptree layer: one call wraps a bot's whole handler tree. Handlers that send
    /// should take `Retained<Bot>` where they took `Bot` (with a dispatcher built on
    /// `bot.retained(&retention)`): a send that fails because its recipient blocked the bot
    /// or deleted their account then marks that recipient gone. With a plain `Bot`, failed
    /// sends mark nobody. For another adaptor (`Throttle<Bot>`, `DefaultParseMode<Bot>`),
    /// use [`Retention::wrap_for`].
    ///
    /// For every update with a human user, the layer records the interaction *before* the
    /// wrapped handler runs (so no handler writes data about a user the retention policy does
    /// not cover), then runs the wrapped handler unchanged. It also
    ///
    /// - marks users who block the bot (private `my_chat_member`, status `kicked`) as gone and
    ///   cancels that when they unblock; these updates are requested from Telegram even if the
    ///   wrapped tree only handles messages, and still reach the wrapped tree;
    /// - answers the privacy commands (see [`Commands`](crate::Commands)).
    ///
    /// Bots, Telegram's service accounts (777000, `GroupAnonymousBot`, `Channel_Bot`) and
    /// updates without a user are never tracked.
    ///
    /// The wrapped tree runs as one unit, as a branch of a dptree tree does: an update it lets
    /// through goes on to the next branch once the whole tree has tried it. A block the tree
    /// does not handle is different: it ends at the layer, which marks it handled (so that
    /// the dispatcher's default handler does not log the whole update, a privacy leak), and
    /// branches after the layer never see it. To react to blocks and unblocks, use
    /// [`RetentionBuilder::on_gone`](crate::RetentionBuilder::on_gone) and
    /// [`RetentionBuilder::on_returned`](crate::RetentionBuilder::on_returned), or handle
    /// `my_chat_member` inside the wrapped tree, which sees every block first.
    ///
    /// The layer never marks anyone gone because a handler failed: a handler's error does not
    /// say whom the failed request was for. Failed sends are caught at the source by the
    /// [`Retained`](crate::Retained) bot adaptor.
    ///
    /// ```
    /// use std::time::Duration;
    /// use teloxide::prelude::*;
    /// use teloxide_retention::{MemoryStore, Retention, RetentionExt};
    ///
    /// # fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    ///
    /// let tree = Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
    ///     bot.send_message(msg.chat.id, "hi").await?;
    ///     respond(())
    /// });
    /// let handler = retention.wrap(tree);
    /// // Or, in a method chain:
    /// # let tree = Update::filter_message().endpoint(|| async { respond(()) });
    /// let handler2 = tree.with_retention(&retention);
    /// # let _ = (handler, handler2);
    /// # Ok(()) }
    /// ```
    ///
    /// # Dependency requirements
    ///
    /// - `teloxide::types::Update` (the dispatcher provides it);
    /// - with the privacy commands on (the default): `teloxide::types::Me`, provided by the
    ///   dispatcher, and at run time the bot, `teloxide::Bot` or `Retained<Bot>` (a
    ///   dispatcher of another bot type gets an error logged once, and its privacy commands
    ///   go unanswered: use [`Retention::wrap_for`], which checks its bot type when the
    ///   dispatcher is built).
    ///
    /// A tree whose handlers take `Retained<Bot>` under a dispatcher (or test harness) that
    /// provides a plain `Bot` needs [`Retention::wrap_retained`].
    #[must_use]
    #[track_caller]
    pub fn wrap<E>(&self, handler: UpdateHandler<E>) -> UpdateHandler<E>
    where
        E: Send + Sync + 'static,
    {
        self.inner.parts.tracker.start_if_in_runtime();
        self.layer().wrap_bot::<E>(handler)
    }

    /// Wraps `handler` for a dispatcher whose bot is `R` (an adaptor such as
    /// `Throttle<Bot>` or `DefaultParseMode<Bot>`, or `Retained<Throttle<Bot>>`).
    ///
    /// See [`Retention::wrap`] for what the layer does.
    ///
    /// # Panics
    ///
    /// Never here; but the dispatcher's `build()` panics, naming this call, if the privacy
    /// commands are on and the dispatcher's bot is not an `R`.
    #[must_use]
    #[track_caller]
    pub fn wrap_for<R, E>(&self, handler: UpdateHandler<E>) -> UpdateHandler<E>
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        // A process that wraps a handler tracks interactions: it announces itself now.
        self.inner.parts.tracker.start_if_in_runtime();
        self.layer().wrap_for::<R, E>(handler)
    }

    /// Wraps `handler`, whose endpoints take [`Retained<B>`](crate::Retained), for a
    /// dispatcher that provides a plain `B` (usually `teloxide::Bot`): the wrapped tree gets
    /// a `Retained<B>` made from the dispatcher's bot for every update, so that failed sends
    /// mark their recipients gone, without changing how the dispatcher is built. This is
    /// also the way to run such a tree under a test harness that hands handlers a plain
    /// `Bot`, such as `teloxide_tests`' `MockBot` (see the README's "Testing your bot").
    ///
    /// Equivalent to [`Retention::retained_bot`] chained in front of
    /// [`Retention::wrap_for`]`::<Retained<B>, _>`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use teloxide::prelude::*;
    /// use teloxide_retention::{MemoryStore, Retained, Retention};
    ///
    /// # fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// let tree = Update::filter_message().endpoint(|bot: Retained<Bot>, msg: Message| async move {
    ///     // A user who blocked the bot is marked gone by this failed send.
    ///     bot.send_message(msg.chat.id, "hi").await?;
    ///     respond(())
    /// });
    /// let handler = retention.wrap_retained::<Bot, _>(tree);
    /// // Dispatcher::builder(Bot::from_env(), handler): a plain `Bot`.
    /// # let _ = handler;
    /// # Ok(()) }
    /// ```
    ///
    /// # Dependency requirements
    ///
    /// - `teloxide::types::Update` and `B`, provided by the dispatcher;
    /// - with the privacy commands on (the default): `teloxide::types::Me`, provided by the
    ///   dispatcher.
    #[must_use]
    #[track_caller]
    pub fn wrap_retained<B, E>(&self, handler: UpdateHandler<E>) -> UpdateHandler<E>
    where
        B: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        self.retained_bot::<B, E>().chain(self.wrap_for::<crate::Retained<B>, E>(handler))
    }

    /// A dptree step that puts a [`Retained<B>`](crate::Retained), made from the
    /// dispatcher's `B`, into the dependencies of what is chained after it. It asks Telegram
    /// for no update kind of its own (unlike a plain `dptree::map` at the root, which would
    /// ask for all of them). [`Retention::wrap_retained`] uses it; chain it yourself in
    /// front of a tree you wrap in another way.
    ///
    /// # Dependency requirements
    ///
    /// - `B`, provided by the dispatcher.
    #[must_use]
    pub fn retained_bot<B, E>(&self) -> UpdateHandler<E>
    where
        B: Requester + Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let retention = self.clone();
        dptree::map_with_description(
            <teloxide::dispatching::DpHandlerDescription as dptree::HandlerDescription>::entry(),
            move |bot: B| crate::Retained::new(bot, &retention),
        )
    }

    /// The update kinds a webhook must ask Telegram for: those `handler` handles plus those
    /// the layer needs (`my_chat_member` for blocks, messages and callback queries for the
    /// privacy commands). Pass the wrapped or the unwrapped handler; the answer is the same.
    ///
    /// Long polling needs none of this: the dispatcher passes these kinds to `getUpdates`
    /// itself. teloxide 0.17's webhook listeners do not pass them to `setWebhook`, so
    /// Telegram keeps sending its default set, which leaves out `my_chat_member` unless the
    /// bot asked for it before: blocks would never be seen. Set them with the webhook (see
    /// the README's "Webhooks" section and `examples/webhook.rs`):
    ///
    /// ```
    /// use std::time::Duration;
    /// use teloxide::prelude::*;
    /// use teloxide::types::AllowedUpdate;
    /// use teloxide_retention::{MemoryStore, Retention};
    ///
    /// # fn main() -> Result<(), teloxide_retention::Error> {
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// let tree = Update::filter_message().endpoint(|| async { respond(()) });
    /// let kinds = retention.allowed_updates(&tree);
    /// assert!(kinds.contains(&AllowedUpdate::Message));
    /// assert!(kinds.contains(&AllowedUpdate::MyChatMember));
    /// // bot.set_webhook(url).allowed_updates(kinds).secret_token(secret).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// teloxide keeps a handler's update kinds private; this reads them from the
    /// description's `Debug` output, which `tests/integration/layer.rs` checks against what
    /// the dispatcher itself computes. Should a teloxide release change that output, the
    /// answer is every update kind (more updates than needed, never fewer), with a warning.
    #[must_use]
    pub fn allowed_updates<E: 'static>(&self, handler: &UpdateHandler<E>) -> Vec<AllowedUpdate> {
        self.layer().allowed_updates(handler)
    }

    /// The enabled privacy commands with their descriptions in the fallback language, to
    /// merge into the bot's `set_my_commands` call; see [`Retention::bot_commands_in`] for
    /// the other languages.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide_retention::{MemoryStore, Retention};
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// let names: Vec<String> = retention.bot_commands().into_iter().map(|c| c.command).collect();
    /// assert_eq!(names, ["removemydata", "mydata", "privacy"]);
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    #[must_use]
    pub fn bot_commands(&self) -> Vec<BotCommand> {
        self.inner.commands.as_ref().map_or_else(Vec::new, |c| c.bot_commands(None))
    }

    /// The enabled privacy commands with their descriptions for users whose language is
    /// `code`, for `set_my_commands(...).language_code(code)`; one call per language of
    /// [`Retention::command_languages`].
    ///
    /// ```no_run
    /// # async fn run(bot: teloxide::Bot, retention: teloxide_retention::Retention)
    /// # -> Result<(), teloxide::RequestError> {
    /// use teloxide::prelude::*;
    ///
    /// bot.set_my_commands(retention.bot_commands()).await?;
    /// for code in retention.command_languages() {
    ///     bot.set_my_commands(retention.bot_commands_in(code)).language_code(code).await?;
    /// }
    /// # Ok(()) }
    /// ```
    #[must_use]
    pub fn bot_commands_in(&self, code: &str) -> Vec<BotCommand> {
        self.inner.commands.as_ref().map_or_else(Vec::new, |c| c.bot_commands(Some(code)))
    }

    /// The bot's own commands `own` followed by the privacy commands, in the language
    /// `code` (`None`: the fallback language): one menu for `set_my_commands`. A privacy
    /// command the bot already lists under the same name is not added twice (the bot's
    /// entry stays). See [`Retention::set_my_commands`] to set every language at once.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use teloxide::types::BotCommand;
    /// # use teloxide_retention::{MemoryStore, Retention};
    /// # let retention = Retention::builder(MemoryStore::new())
    /// #     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    /// #     .build()?;
    ///
    /// let own = vec![BotCommand::new("start", "Start"), BotCommand::new("help", "Help")];
    /// let menu: Vec<String> =
    ///     retention.merged_commands(own, None).into_iter().map(|c| c.command).collect();
    /// assert_eq!(menu, ["start", "help", "removemydata", "mydata", "privacy"]);
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    #[must_use]
    pub fn merged_commands(&self, own: Vec<BotCommand>, code: Option<&str>) -> Vec<BotCommand> {
        let ours = match code {
            Some(code) => self.bot_commands_in(code),
            None => self.bot_commands(),
        };
        let mut menu = own;
        for command in ours {
            if !menu.iter().any(|c| c.command == command.command) {
                menu.push(command);
            }
        }
        menu
    }

    /// Sets the bot's command menus with the privacy commands added to the bot's own, in
    /// place of the bot's own `set_my_commands` call (which would replace one with the
    /// other).
    ///
    /// `own` lists the bot's menus by language: `(None, commands)` for the default menu,
    /// `(Some("fr"), commands)` for users whose language is French, and so on. Every
    /// language of `own` and of the privacy texts ([`Retention::command_languages`]) gets
    /// its menu: the bot's commands in that language (or its default ones) followed by
    /// the privacy commands in that language ([`Retention::merged_commands`]).
    ///
    /// ```no_run
    /// # async fn run(bot: teloxide::Bot, retention: teloxide_retention::Retention)
    /// # -> Result<(), teloxide::RequestError> {
    /// use teloxide::utils::command::BotCommands;
    ///
    /// #[derive(BotCommands, Clone)]
    /// #[command(rename_rule = "lowercase")]
    /// enum Command {
    ///     /// Start over.
    ///     Start,
    /// }
    ///
    /// retention.set_my_commands(&bot, &[(None, Command::bot_commands())]).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    ///
    /// The first error of a `set_my_commands` request; the menus set before it stay.
    pub async fn set_my_commands<R>(
        &self,
        bot: &R,
        own: &[(Option<&str>, Vec<BotCommand>)],
    ) -> std::result::Result<(), R::Err>
    where
        R: Requester,
    {
        use teloxide::payloads::SetMyCommandsSetters;
        use teloxide::requests::Request;
        let default: Vec<BotCommand> =
            own.iter().find(|(code, _)| code.is_none()).map(|(_, c)| c.clone()).unwrap_or_default();
        bot.set_my_commands(self.merged_commands(default.clone(), None)).send().await?;
        let mut codes: Vec<&str> = own.iter().filter_map(|(code, _)| *code).collect();
        codes.extend(self.command_languages());
        codes.sort_unstable();
        codes.dedup();
        for code in codes {
            let mine = own
                .iter()
                .find(|(c, _)| *c == Some(code))
                .map_or_else(|| default.clone(), |(_, commands)| commands.clone());
            bot.set_my_commands(self.merged_commands(mine, Some(code)))
                .language_code(code)
                .send()
                .await?;
        }
        Ok(())
    }

    /// The language codes registered with [`Commands::language`].
    #[must_use]
    pub fn command_languages(&self) -> Vec<&str> {
        self.inner.commands.as_ref().map_or_else(Vec::new, |c| c.language_codes())
    }

    /// The retention policy in words, as `/privacy` answers a user whose Telegram
    /// `language_code` is `language` (`None`: the fallback language): what is stored, for
    /// how long, what happens when the user blocks the bot, and how to delete or export
    /// data. Built from the templates of [`Texts`](crate::Texts) and the configuration.
    ///
    /// ```
    /// # use std::time::Duration;
    /// use teloxide_retention::{MemoryStore, Retention};
    ///
    /// // German is built in and on by default.
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .build()?;
    /// assert!(retention.privacy_text(None).contains("for 90 days"));
    /// assert!(retention.privacy_text(Some("de-AT")).contains("90 Tage lang"));
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    #[must_use]
    pub fn privacy_text(&self, language: Option<&str>) -> String {
        crate::commands::privacy_text(self.inner.commands.as_deref(), &self.inner.parts, language)
    }
}

/// Wraps handlers in a method chain; the twin of [`Retention::wrap`].
pub trait RetentionExt<E> {
    /// Wraps this handler with `retention`'s layer (for a dispatcher of `teloxide::Bot` or
    /// `Retained<Bot>`), as [`Retention::wrap`] does.
    #[must_use]
    fn with_retention(self, retention: &Retention) -> Self;
}

impl<E: Send + Sync + 'static> RetentionExt<E> for UpdateHandler<E> {
    #[track_caller]
    fn with_retention(self, retention: &Retention) -> Self {
        retention.wrap(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The replica that carries out an opt-out drops the user's interactions it still
    /// holds from before it, as every other replica does when the feed announces it:
    /// writing them would track the erased user again. (Before the fix it wrote them.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_opt_out_drops_the_users_interactions_buffered_before_it() {
        use std::sync::atomic::Ordering;

        use crate::store::intercept::{Fail, Intercepted, Op};

        let hook = Arc::new(Fail::new(Op::RecordInteractions, true));
        let store = Intercepted { store: crate::MemoryStore::new(), hook: Arc::clone(&hook) };
        let clock = crate::ManualClock::at_unix_ms(1_000_000);
        let retention = Retention::builder(store)
            .inactive_after(Duration::from_secs(30 * 24 * 3600))
            .clock(clock.clone())
            .build()
            .unwrap();
        // The store takes no interaction for a while: user 7's waits in the backlog.
        assert_eq!(retention.note_interaction(UserId(7)).await, crate::Noted::Buffered);
        clock.advance(Duration::from_secs(1));
        let outcome = retention.erase_user(UserId(7)).await.unwrap();
        assert_eq!(outcome, OptOutOutcome::Erased { follow_up: false });
        // The store takes interactions again; the backlog is written.
        hook.on.store(false, Ordering::SeqCst);
        retention.flush().await.unwrap();
        let status = retention.status(UserId(7)).await.unwrap();
        assert_eq!((status.last_seen, status.erasure), (None, None), "user 7 stays erased");
        assert_eq!(retention.stats().buffered_users, 0);
    }

    mod held_interactions {
        //! A store whose interaction writes wait until the test lets them through: the group
        //! commit's write of an interaction taken during an erasure lands after the finish.

        use std::sync::atomic::Ordering;

        use tokio::sync::Notify;

        use crate::store::intercept::{Hold, Intercepted, Op};
        use crate::{ErasureReason, MemoryStore};

        use super::*;

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
            let hook = Arc::new(Hold::new(Op::RecordInteractions, false));
            let store = Intercepted { store: MemoryStore::new(), hook: Arc::clone(&hook) };
            let clock = crate::ManualClock::at_unix_ms(1_000_000);
            let (entered, release) = (Arc::new(Notify::new()), Arc::new(Notify::new()));
            let retention = Retention::builder(store)
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
            hook.on.store(true, Ordering::SeqCst);
            clock.advance(Duration::from_secs(1));
            let interaction = tokio::spawn({
                let retention = retention.clone();
                async move { retention.note_interaction(UserId(7)).await }
            });
            hook.held.notified().await;
            release.notify_one();
            let outcome = opt_out.await.unwrap().unwrap();
            // Now the held write lands, after the finish.
            hook.on.store(false, Ordering::SeqCst);
            hook.released.notify_waiters();
            assert_eq!(interaction.await.unwrap(), crate::Noted::Written);

            assert_eq!(outcome, OptOutOutcome::Erased { follow_up: true });
            let status = retention.status(UserId(7)).await.unwrap();
            let follow_up = status.erasure.expect("a follow-up erasure is scheduled");
            assert_eq!(follow_up.reason, ErasureReason::OptOut);
            assert_eq!(retention.stats().follow_ups, 1);
        }
    }
}
