//! The parts every feature of a `Retention` shares (the layer, the commands, the pruner,
//! the audit, adoption, the survey): the checked settings, the one door to the store, the
//! clock, the erasers, the hooks, the tracker and the counters. Nothing else holds any of
//! them: a feature that needs the store calls `parts.door`, one that needs the tracker
//! goes through `parts.tracker`.

use std::sync::Arc;

use teloxide::types::UserId;
use tokio_util::sync::CancellationToken;

use crate::clock::{SyncedClock, duration_ms};
use crate::config::Config;
use crate::erase::DynEraser;
use crate::error::Result;
use crate::hooks::Hooks;
use crate::receipts::ReceiptKey;
use crate::stats::Counters;
use crate::store::{ClaimTimes, Door, random_id};
use crate::tracker::Tracker;

/// The parts of one `Retention`, shared through an `Arc` by its clones, its wrapped
/// handlers and its pruner.
pub(crate) struct Parts {
    /// The settings the builder checked.
    pub(crate) config: Config,
    /// The store, behind its one bounded door.
    pub(crate) door: Door,
    /// The injected clock, corrected by its offset to the store's clock.
    pub(crate) clock: Arc<SyncedClock>,
    /// The registered erasers, in order.
    pub(crate) erasers: Vec<Arc<dyn DynEraser>>,
    /// The bot's callbacks.
    pub(crate) hooks: Arc<Hooks>,
    /// The cache of active users, the group commit of interactions and the gone marks.
    pub(crate) tracker: Arc<Tracker>,
    /// The counters behind `Stats` and the metrics.
    pub(crate) counters: Arc<Counters>,
    /// The bot's way to probe users (see `Probes`), if it gave one.
    pub(crate) prober: Option<crate::probe::Prober>,
    /// This process's name in leases it holds for long (the census's).
    pub(crate) holder: u64,
    /// Which part of the store the census walks first at its next pass (turn by turn).
    pub(crate) census_turn: std::sync::atomic::AtomicUsize,
    /// Cancelled when the last holder (a `Retention` clone, a running pruner, a wrapped
    /// handler) lets go; stops the tracker's background writer.
    cancel: CancellationToken,
    /// The key that names users in key names when no receipt key is set: the namespace's
    /// secret, read once (see [`Parts::hashed`]).
    secret: tokio::sync::OnceCell<ReceiptKey>,
}

impl Parts {
    /// The parts over the store behind `door`, with the tracker (the background writer of
    /// interactions).
    pub(crate) fn new(
        config: Config,
        door: Door,
        clock: Arc<dyn crate::clock::Clock>,
        erasers: Vec<Arc<dyn DynEraser>>,
        hooks: Hooks,
        prober: Option<crate::probe::Prober>,
    ) -> Self {
        let hooks = Arc::new(hooks);
        let counters = Arc::new(Counters::default());
        let cancel = CancellationToken::new();
        let clock = Arc::new(SyncedClock::new(clock));
        let tracker = Arc::new(Tracker::new(
            &config,
            door.clone(),
            Arc::clone(&clock),
            Arc::clone(&counters),
            Arc::clone(&hooks),
            cancel.clone(),
        ));
        Self {
            config,
            door,
            clock,
            erasers,
            hooks,
            tracker,
            counters,
            prober,
            holder: random_id(),
            census_turn: std::sync::atomic::AtomicUsize::new(0),
            cancel,
            secret: tokio::sync::OnceCell::new(),
        }
    }

    /// "Now" (ms) on the injected clock, corrected by its offset to the store's clock.
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    /// Measures the offset to the store's clock again if the last measurement is stale.
    pub(crate) async fn sync_clock(&self) {
        self.tracker.sync_clock_if_stale().await;
    }

    /// "Now" (ms) after [`sync_clock`](Self::sync_clock): for work that compares times
    /// written by other processes (a pass, a survey, an audit, an adoption).
    pub(crate) async fn store_now_ms(&self) -> i64 {
        self.sync_clock().await;
        self.now_ms()
    }

    /// Records that `user` interacted now (waiting for the write in strict mode).
    pub(crate) async fn note_interaction(&self, user: u64) -> crate::Noted {
        self.tracker.note_interaction(user, self.config.strict).await
    }

    /// "Now" (or the store's clock), the inactivity span and the lease of a claim. The span
    /// also covers the resolution: a cached user's stored time may lag their real last
    /// interaction by up to that much.
    pub(crate) fn claim_times(&self) -> ClaimTimes {
        let config = &self.config;
        ClaimTimes {
            now: self.clock.claim_now(),
            inactive_ms: duration_ms(config.inactive_after)
                .saturating_add(duration_ms(config.resolution))
                .min(MAX_SPAN_MS),
            lease_ms: duration_ms(config.lease).min(MAX_SPAN_MS),
        }
    }

    /// `user` as key names see them (confirmation nonces, rate-limit counters): the hex
    /// HMAC-SHA256 of the id under the receipt key if receipts are on (a key kept outside
    /// Redis), else under the namespace's secret, which the store creates once. No key
    /// name carries a raw user id.
    pub(crate) async fn hashed(&self, user: UserId) -> Result<crate::store::Hashed> {
        let key = match &self.config.receipts {
            Some(receipts) => &receipts.key,
            None => {
                self.secret
                    .get_or_try_init(|| async {
                        let candidate: String =
                            (0..4).map(|_| format!("{:016x}", random_id())).collect();
                        let secret = self.door.call(|b| b.secret(&candidate)).await?;
                        ReceiptKey::new(secret.into_bytes())
                    })
                    .await?
            }
        };
        Ok(crate::store::Hashed { user: user.0, tag: key.tag(user) })
    }

    /// The names of the registered erasers, in registration order.
    pub(crate) fn eraser_names(&self) -> Vec<&str> {
        self.erasers.iter().map(|e| e.name()).collect()
    }
}

impl Drop for Parts {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// The longest span handed to a script: about 35,000 years, exact in a Lua number, and
/// far enough that "never" stays never.
const MAX_SPAN_MS: i64 = 1 << 50;
