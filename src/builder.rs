//! [`RetentionBuilder`]: settings, erasers, commands and hooks, validated into a
//! [`Retention`]. The handle's entry point, [`Retention::builder`], lives here too, so that
//! imports point one way: the builder knows the handle, the handle does not know the
//! builder.

use std::sync::Arc;
use std::time::Duration;

use teloxide::RequestError;
use teloxide::requests::Requester;
use teloxide::types::{ChatId, UserId};

use crate::clock::{Clock, SystemClock};
use crate::commands::Commands;
use crate::config::{Config, GonePolicy};
use crate::erase::{DynEraser, Eraser};
use crate::error::{Error, Result};
use crate::gone::GoneReason;
use crate::hooks::{ErasedUser, Hooks, StuckErasure};
use crate::probe::{Census, Prober, Probes};
use crate::receipts::ReceiptKey;
use crate::retention::Retention;
use crate::store::Store;

/// Builds a [`Retention`]; created by [`Retention::builder`].
///
///
/// Every setting has a default except the inactivity threshold, which is the bot's
/// retention policy and must be chosen deliberately.
///
/// ```
/// use std::time::Duration;
/// use teloxide_retention::{GonePolicy, MemoryStore, Retention};
///
/// let retention = Retention::builder(MemoryStore::new())
///     .namespace("shopbot")
///     .inactive_after(Duration::from_secs(180 * 24 * 3600))
///     .gone_policy(GonePolicy::EraseAfter(Duration::from_secs(3 * 24 * 3600)))
///     .prune_every(Duration::from_secs(15 * 60))
///     .build()?;
/// # let _ = retention;
/// # Ok::<(), teloxide_retention::Error>(())
/// ```
#[must_use]
pub struct RetentionBuilder {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    erasers: Vec<Arc<dyn DynEraser>>,
    commands: Option<Commands>,
    hooks: Hooks,
    config: Config,
    /// Required; kept apart until `build()` says so if it is missing.
    inactive_after: Option<Duration>,
    /// The bot's way to reach Telegram for probes, with its settings.
    prober: Option<Prober>,
}

impl std::fmt::Debug for RetentionBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetentionBuilder")
            .field("namespace", &self.config.namespace)
            .field("inactive_after", &self.inactive_after)
            .field("erasers", &self.erasers.len())
            .finish_non_exhaustive()
    }
}

impl RetentionBuilder {
    pub(crate) fn new(store: impl Store) -> Self {
        Self {
            store: Arc::new(store),
            clock: Arc::new(SystemClock),
            erasers: Vec::new(),
            commands: Some(Commands::default()),
            hooks: Hooks::default(),
            config: Config::default(),
            inactive_after: None,
            prober: None,
        }
    }

    /// Users who have not interacted for this long are erased. Required.
    ///
    /// This is the bot's retention period; `/privacy` states it to users.
    /// `Duration::MAX` means never: nobody is erased for inactivity (gone users and
    /// opt-outs still are). Every time computed from a duration saturates, so no setting
    /// wraps around into the past.
    pub fn inactive_after(mut self, threshold: Duration) -> Self {
        self.inactive_after = Some(threshold);
        self
    }

    /// Separates the data of several bots sharing one Redis. Default `"retention"`.
    ///
    /// Every key is `{namespace}:...`; the braces make the namespace a Redis Cluster hash
    /// tag, so it must not contain braces itself. Letters, digits, `-`, `_`, `.` and `:`,
    /// at most 64 bytes. The SQL stores name their tables after it: on SQLite, which
    /// compares table names without regard to case, two namespaces on one file must differ
    /// in more than letter case (the second is refused at its first use) and none may begin
    /// with `sqlite_`; on PostgreSQL a namespace is at most 42 bytes, so that its longest
    /// index name fits 63 bytes (both refused by [`build`](Self::build)).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.config.namespace = namespace.into();
        self
    }

    /// A user written less than this long ago is not written again by this process.
    /// Default 60 s.
    ///
    /// Active users then cost a hash-map lookup per update instead of a Redis write. The
    /// stored time of a user's last interaction may lag by up to this much; the pruner
    /// allows for it, so nobody is erased early.
    pub fn resolution(mut self, resolution: Duration) -> Self {
        self.config.resolution = resolution;
        self
    }

    /// How often the background pruner runs a pass. Default 10 minutes.
    pub fn prune_every(mut self, interval: Duration) -> Self {
        self.config.prune_every = interval;
        self
    }

    /// Users claimed per script call of the pruner: 1 to 500 (also the default). Redis runs
    /// one script at a time, so a claim blocks every other client while it runs: at 5M
    /// tracked users a claim of 500 users took 0.9 to 1.3 ms (slowest 4.4 ms), one of 1,000
    /// up to 5.5 ms (the README's Performance section). Smaller batches make each call
    /// shorter.
    pub fn batch_size(mut self, users: usize) -> Self {
        self.config.batch_size = users;
        self
    }

    /// How many shards a pass erases from at once, on a store split into shards
    /// ([`RedisStore::with_shards`](crate::RedisStore::with_shards)): at least 1, default 4.
    /// Each runs its batches through the erasers, so the bot's own stores see up to this
    /// many batches at a time. Without shards a pass runs one batch at a time.
    pub fn prune_concurrency(mut self, shards: usize) -> Self {
        self.config.prune_concurrency = shards;
        self
    }

    /// How long a pruner may hold claimed users before another pruner takes them over.
    /// Default 2 minutes, at least 5 seconds, and at least twice the eraser timeout.
    pub fn lease(mut self, lease: Duration) -> Self {
        self.config.lease = lease;
        self
    }

    /// How long one eraser call may take before it counts as failed. Default 30 s. It
    /// bounds each listing call of the audit ([`Eraser::list`](crate::Eraser::list)) too.
    pub fn eraser_timeout(mut self, timeout: Duration) -> Self {
        self.config.eraser_timeout = timeout;
        self
    }

    /// When an update of a user is handled while their opt-out erasure runs, the erasure
    /// runs once more after this delay, to erase what that update's handler wrote.
    /// Default 60 s.
    pub fn follow_up_delay(mut self, delay: Duration) -> Self {
        self.config.follow_up_delay = delay;
        self
    }

    /// What to do with users Telegram reports as gone. Default
    /// [`GonePolicy::EraseAfter`] seven days.
    pub fn gone_policy(mut self, policy: GonePolicy) -> Self {
        self.config.gone_policy = policy;
        self
    }

    /// Refuses to run the wrapped handler for an update whose interaction could not be
    /// written to the store. Default `false`: the update is handled and the write is
    /// buffered and retried.
    pub fn strict(mut self, strict: bool) -> Self {
        self.config.strict = strict;
        self
    }

    /// How many distinct users' interactions are buffered in memory while the store is
    /// unreachable. Default 100 000 (a few megabytes).
    ///
    /// When the buffer is full, interactions of further users are dropped and counted in
    /// [`Stats::interactions_dropped`](crate::Stats::interactions_dropped); each such user is recorded
    /// again at their next interaction after the store is back.
    ///
    /// Gone marks (blocks, and failed sends seen by the layer or
    /// [`NoteGone::note_gone`](crate::NoteGone::note_gone)) wait in a second buffer of the
    /// same size; marks beyond it are counted in
    /// [`Stats::gone_marks_dropped`](crate::Stats::gone_marks_dropped), and those users are
    /// left to the inactivity threshold.
    pub fn max_buffered_interactions(mut self, users: usize) -> Self {
        self.config.max_buffered_interactions = users;
        self
    }

    /// How long one call to the store may take. Default 2 s.
    ///
    /// An interaction whose write has not finished within this is kept in memory and
    /// written later, so a hung or unreachable Redis never holds an update longer than
    /// `store_timeout` (plus scheduling noise), the first write of a process included.
    pub fn store_timeout(mut self, timeout: Duration) -> Self {
        self.config.store_timeout = timeout;
        self
    }

    /// How often each process that records interactions tells the store it is alive and
    /// how many interactions it has not written yet. Default 5 s.
    ///
    /// Pruners hold back erasures for inactivity while any such process reports unwritten
    /// interactions, or has missed three heartbeats (it may be cut off from the store and
    /// buffering), so that nobody whose interaction waits in a buffer is erased as inactive.
    /// Gone users, opt-outs and retries are erased meanwhile.
    pub fn heartbeat_every(mut self, interval: Duration) -> Self {
        self.config.heartbeat = interval;
        self
    }

    /// How long a process that stopped sending heartbeats holds back erasures for
    /// inactivity before it counts as dead. Default 1 hour.
    ///
    /// A process that shuts down cleanly (the last clone of its [`Retention`] dropped
    /// inside the runtime) removes its heartbeat at once. One that crashed, or is cut off
    /// from Redis for longer than this, counts as dead: interactions it still buffers may
    /// then be written after their user was erased for inactivity.
    pub fn writer_timeout(mut self, timeout: Duration) -> Self {
        self.config.writer_timeout = timeout;
        self
    }

    /// Lets the pruner run although Redis may evict any key (`maxmemory-policy`
    /// `allkeys-lru`, `allkeys-lfu` or `allkeys-random`). Default `false`: under such a
    /// policy a prune pass fails with [`Error::Unsafe`], because Redis could drop the set
    /// of tracked users and their data would never be erased. See the README's "Running
    /// Redis".
    pub fn allow_allkeys_eviction(mut self, allow: bool) -> Self {
        self.config.allow_allkeys_eviction = allow;
        self
    }

    /// Treats private `my_chat_member` updates with status `kicked` as the user blocking the
    /// bot. Default `true`; this asks Telegram for `my_chat_member` updates.
    pub fn detect_blocks(mut self, on: bool) -> Self {
        self.config.detect_blocks = on;
        self
    }

    /// Registers an eraser for the bot's own data; every erasure calls every eraser.
    pub fn erase_with(mut self, eraser: impl Eraser) -> Self {
        self.erasers.push(Arc::new(eraser));
        self
    }

    /// Configures the privacy commands (`/removemydata`, `/mydata`, `/privacy`).
    /// They are on by default.
    pub fn commands(mut self, commands: Commands) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Turns all privacy commands off.
    pub fn without_commands(mut self) -> Self {
        self.commands = None;
        self
    }

    /// Calls `hook` after each user's erasure is complete (every eraser succeeded).
    pub fn on_erased(mut self, hook: impl Fn(ErasedUser) + Send + Sync + 'static) -> Self {
        self.hooks.erased = Some(Arc::new(hook));
        self
    }

    /// Calls `hook` once each time a user is newly marked gone: they blocked the bot (a
    /// private `my_chat_member` update), or a request to them failed because they blocked
    /// it, deleted their account or cannot be reached (see [`crate::gone_reason`]).
    ///
    /// It runs when the mark is stored (for a mark kept in memory during a store outage:
    /// when it is written), not again for a user who is marked already, and whatever the
    /// [`GonePolicy`]. The place to stop broadcasting to the user or flag them in the bot's
    /// own database.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide_retention::{MemoryStore, Retention};
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .on_gone(|user, reason| tracing::info!(user = user.0, %reason, "user left"))
    ///     .on_returned(|user| tracing::info!(user = user.0, "user came back"))
    ///     .build()?;
    /// # let _ = retention;
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    pub fn on_gone(mut self, hook: impl Fn(UserId, GoneReason) + Send + Sync + 'static) -> Self {
        self.hooks.gone = Some(Arc::new(move |(user, reason)| hook(user, reason)));
        self
    }

    /// Calls `hook` once each time a user's stored gone mark is cancelled because they came
    /// back: when they unblock the bot (as the update arrives), or, for a user who
    /// interacted after the mark, when the pruner finds the mark due and drops it instead
    /// of erasing them (the end of the grace period of [`GonePolicy::EraseAfter`]; with
    /// [`GonePolicy::MarkOnly`] the mark is never due, so only an unblock calls it).
    /// [`Retention::is_reachable`] answers at once, for any policy.
    pub fn on_returned(mut self, hook: impl Fn(UserId) + Send + Sync + 'static) -> Self {
        self.hooks.returned = Some(Arc::new(hook));
        self
    }

    /// How long an erasure may keep failing before it is **stuck**: then it is logged at
    /// error level, counted in [`Stats::stuck_erasures`](crate::Stats::stuck_erasures) and
    /// passed to [`RetentionBuilder::on_stuck`], once a day (by one process among replicas)
    /// while it keeps failing. Retrying goes on all the same. Default 3 days.
    pub fn stuck_after(mut self, after: Duration) -> Self {
        self.config.stuck_after = after;
        self
    }

    /// Makes the pruner audit the erasers every `interval` (see
    /// [`Retention::audit`](crate::Retention::audit)), doing with untracked users what
    /// `untracked` says: one replica per interval (a lease in the store), logged, counted
    /// in the metrics (`teloxide_retention_audit_*`), and its counts kept in the store for
    /// [`Retention::last_audit`](crate::Retention::last_audit) and the CLI's `stats` and
    /// `check`. Off by default; a day is a good interval.
    pub fn audit_every(mut self, interval: Duration, untracked: crate::UntrackedUsers) -> Self {
        self.config.audit = Some((interval, untracked));
        self
    }

    /// Calls `hook` for each stuck erasure (see [`RetentionBuilder::stuck_after`]), once a
    /// day while it keeps failing: the place to page someone, since an eraser that fails
    /// for days keeps data the bot promised to delete.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use teloxide_retention::{MemoryStore, Retention};
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .stuck_after(Duration::from_secs(24 * 3600))
    ///     .on_stuck(|stuck| {
    ///         tracing::error!(user = stuck.user.0, failures = ?stuck.failures, "erasure stuck")
    ///     })
    ///     .build()?;
    /// # let _ = retention;
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    pub fn on_stuck(mut self, hook: impl Fn(StuckErasure) + Send + Sync + 'static) -> Self {
        self.hooks.stuck = Some(Arc::new(hook));
        self
    }

    /// Keeps an **erasure receipt** for each completed erasure, for `keep`: a record in the
    /// store that names the user only by `HMAC-SHA256(key, user id)`, with the reason, the
    /// time, the erasers that succeeded and the attempt. [`Retention::receipt`] (and the
    /// CLI's `receipt`) finds a user's receipts given the key; without the key they are
    /// anonymous. Off by default.
    ///
    /// What a receipt shows: that this bot's pruner erased the user named by that hash, when,
    /// why and with which erasers, all of which reported success. What it does not show:
    /// what the erasers actually deleted, nor anything about backups or copies outside them.
    /// Keep the key outside Redis; destroying it leaves only anonymous records.
    ///
    /// ```no_run
    /// # use std::time::Duration;
    /// # use teloxide_retention::{MemoryStore, ReceiptKey, Retention};
    /// let key = ReceiptKey::from_file("/run/secrets/receipt.key")?;
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .receipts(key, Duration::from_secs(3 * 365 * 24 * 3600))
    ///     .build()?;
    /// # let _ = retention;
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    ///
    /// [`Retention::receipt`]: crate::Retention::receipt
    pub fn receipts(mut self, key: ReceiptKey, keep: Duration) -> Self {
        self.config.receipts = Some(crate::receipts::ReceiptConfig { key, keep });
        self
    }

    /// Calls `hook` when the bot is removed from a group, supergroup or channel.
    ///
    /// The crate does nothing to the users of that chat (leaving a group is not a user
    /// leaving the bot); this is the place to drop the bot's data about the chat itself.
    pub fn on_removed_from_chat(mut self, hook: impl Fn(ChatId) + Send + Sync + 'static) -> Self {
        self.hooks.removed_from_chat = Some(Arc::new(hook));
        self
    }

    /// Uses `clock` instead of the system clock (tests, the demo).
    pub fn clock(mut self, clock: impl Clock) -> Self {
        self.clock = Arc::new(clock);
        self
    }

    /// Gives the pruner a way to reach Telegram (the bot's `Bot`, or a `Throttle<Bot>` so
    /// that probes share the bot's pace), so that it confirms ambiguous gone marks by a
    /// probe before erasing; `probes` says which, and how fast.
    ///
    /// A probe sends one chat action ("typing") to the user's private chat: the user keeps
    /// nothing (at most a "typing" indicator for five seconds, if the chat is open), and
    /// Telegram answers as it does a message. When a mark whose reason `probes` confirms
    /// (by default [`GoneReason::Unreachable`]: "chat not found" and the `Forbidden`s that
    /// are not a block or a deleted account) falls due, the pruner probes the user first:
    /// - **reachable**: the mark is dropped and the user keeps their data (counted in
    ///   [`PassReport::kept_reachable`](crate::PassReport::kept_reachable), and passed to
    ///   [`on_returned`](Self::on_returned)); they stay on the inactivity clock;
    /// - **gone**: erased, as without probes;
    /// - **unknown** (a rate limit, a server or network error, no answer): asked again at
    ///   the next pass, until [`Probes::give_up_after`](crate::Probes::give_up_after)
    ///   past its due time, when it is erased unconfirmed, as without probes.
    ///
    /// Probes run in the pruner before each claim, at most one per
    /// [`Probes::interval`](crate::Probes::interval) in this process. Every replica that
    /// runs a pruner should be given one: a pruner without it erases such marks
    /// unconfirmed. A confirmed mark falls due five minutes after it was made at the
    /// earliest (the probes look that far ahead), even under [`GonePolicy::EraseNow`].
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use teloxide::prelude::*;
    /// use teloxide_retention::{MemoryStore, Probes, Retention};
    ///
    /// let bot = Bot::from_env();
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .probe_with(bot.clone(), Probes::new())
    ///     .build()?;
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    pub fn probe_with<R>(mut self, requester: R, probes: Probes) -> Self
    where
        R: Requester<Err = RequestError> + Send + Sync + 'static,
    {
        self.config.probes = Some(probes.clone());
        self.prober = Some(Prober::new(requester, probes));
        self
    }

    /// Turns the census on (off by default; it needs [`probe_with`](Self::probe_with)):
    /// each prune pass probes tracked users idle for at least
    /// [`Census::idle_for`](crate::Census::idle_for), longest idle first, at the probes'
    /// pace and for at most [`Census::per_pass`](crate::Census::per_pass), and goes on at
    /// the next pass where it stopped. One replica probes at a time (a lease in the store,
    /// as the scheduled audit's), and no user is probed twice within
    /// [`Census::every`](crate::Census::every).
    ///
    /// A gone answer marks the user with its reason (the [`GonePolicy`]'s grace applies, and
    /// an `unreachable` mark is probed again when it falls due); a reachable one records
    /// when the user was last reachable and is never an interaction: an idle user stays on
    /// the inactivity clock. What the census keeps per user (two times) is erased with the
    /// user. `/privacy` tells users about it.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use teloxide::prelude::*;
    /// use teloxide_retention::{Census, MemoryStore, Probes, Retention};
    ///
    /// let retention = Retention::builder(MemoryStore::new())
    ///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
    ///     .probe_with(Bot::from_env(), Probes::new())
    ///     .census(Census::new())
    ///     .build()?;
    /// # Ok::<(), teloxide_retention::Error>(())
    /// ```
    pub fn census(mut self, census: Census) -> Self {
        self.config.census = Some(census);
        self
    }

    /// Validates the configuration and builds the [`Retention`].
    ///
    /// # Errors
    ///
    /// [`Error::Config`] naming the first invalid setting: a missing or zero inactivity
    /// threshold, a threshold not longer than twice the resolution, zero durations, an
    /// empty or malformed namespace (or one the store cannot hold: on SQLite one beginning
    /// with `sqlite_`, on PostgreSQL one over 42 bytes), a batch size of 0 or above 500, a lease
    /// shorter than 5 seconds or than twice the eraser timeout, a writer timeout not
    /// longer than three heartbeats, a zero grace period,
    /// two erasers with one name, or invalid command settings.
    pub fn build(self) -> Result<Retention> {
        let inactive_after = self.inactive_after.ok_or_else(|| {
            Error::config("inactive_after is required: how long may a user stay inactive?")
        })?;
        let config = Config { inactive_after, ..self.config };
        config.validate()?;
        let mut names: Vec<&str> = self.erasers.iter().map(|e| e.name()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::config(format!(
                "two erasers are named {:?}; give each a distinct name",
                w[0]
            )));
        }
        if let Some(commands) = &self.commands {
            commands.validate()?;
        }
        self.store.check_namespace(&config.namespace, crate::store::sealed::Token)?;
        let bound = self.store.bind(&config.namespace, crate::store::sealed::Token);
        let door = crate::store::Door::new(bound.0, config.store_timeout);
        Ok(Retention::from_parts(
            config,
            door,
            self.clock,
            self.erasers,
            self.commands,
            self.hooks,
            self.prober,
        ))
    }
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
}
