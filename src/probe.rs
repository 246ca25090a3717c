//! Reachability probes: one chat action ("typing") sent to a user's private chat, its
//! answer classified with the rules the adaptor applies to a failed send.
//!
//! Telegram answers `sendChatAction` like a message: 403 "bot was blocked by the user",
//! 403 "user is deactivated", 400 "chat not found". The user keeps nothing: at most a
//! "typing" indicator for five seconds, and only if they have the chat open.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use teloxide::RequestError;
use teloxide::requests::{Request, Requester};
use teloxide::types::{ChatAction, ChatId, UserId};

use crate::erase::ErasureReason;
use crate::error::{Error, Result};
use crate::gone::{GoneReason, gone_reason};

/// What a probe found out about a user; see [`Retention::probe`](crate::Retention::probe).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reachability {
    /// Telegram accepted the chat action: the bot can reach the user.
    Reachable,
    /// Telegram refused it in a way that means the user is gone, for this reason.
    Gone(GoneReason),
    /// No answer that says either: a rate limit (429), a server or network error, an error
    /// that is not about the user, or no answer within the probe's timeout. Never taken as
    /// reachable or as gone.
    Unknown,
}

impl Reachability {
    /// Classifies the answer to a request sent to the private chat of `user`.
    #[must_use]
    pub fn of<T>(user: UserId, answer: &std::result::Result<T, RequestError>) -> Self {
        match answer {
            Ok(_) => Self::Reachable,
            Err(e) => gone_reason(ChatId::from(user), e).map_or(Self::Unknown, Self::Gone),
        }
    }

    /// The label of the `teloxide_retention_probes_total` metric.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Self::Reachable => "reachable",
            Self::Gone(_) => "gone",
            Self::Unknown => "unknown",
        }
    }
}

/// How the pruner probes users; see
/// [`RetentionBuilder::probe_with`](crate::RetentionBuilder::probe_with).
///
/// ```
/// use std::time::Duration;
/// use teloxide_retention::{GoneReason, Probes};
///
/// let probes = Probes::new()
///     // Unreachable marks (the ambiguous 403s and 400s) and blocks learnt from a failed send.
///     .confirm([GoneReason::Unreachable, GoneReason::Blocked])
///     .one_every(Duration::from_millis(500));
/// assert_eq!(probes.confirm.len(), 2);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Probes {
    /// Gone marks of these reasons are confirmed by a probe when they fall due: a
    /// reachable user keeps their data, a gone one is erased, an unknown answer is asked
    /// again at the next pass. Default: [`GoneReason::Unreachable`] only (a block seen as
    /// a `my_chat_member` update and a "user is deactivated" answer need no probe).
    pub confirm: Vec<GoneReason>,
    /// The shortest time between two probes of this process (default one second, well
    /// under Telegram's limits on sends).
    pub interval: Duration,
    /// A mark whose probes found no answer for this long after its due time is erased
    /// unconfirmed, as without probes (default three days).
    pub give_up_after: Duration,
    /// A probe without an answer within this is unknown (default ten seconds).
    pub timeout: Duration,
}

impl Default for Probes {
    fn default() -> Self {
        Self {
            confirm: vec![GoneReason::Unreachable],
            interval: Duration::from_secs(1),
            give_up_after: Duration::from_secs(3 * 24 * 3600),
            timeout: Duration::from_secs(10),
        }
    }
}

impl Probes {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Confirms gone marks of these reasons before erasing (empty: none).
    #[must_use]
    pub fn confirm(mut self, reasons: impl IntoIterator<Item = GoneReason>) -> Self {
        self.confirm = reasons.into_iter().collect();
        self
    }

    /// At most one probe per `interval`.
    #[must_use]
    pub fn one_every(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Erases a mark unconfirmed once its probes found no answer for `after` past its due
    /// time.
    #[must_use]
    pub fn give_up_after(mut self, after: Duration) -> Self {
        self.give_up_after = after;
        self
    }

    /// A probe without an answer within `timeout` is unknown.
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Whether a due erasure for `reason` is confirmed by a probe first.
    pub(crate) fn confirms(&self, reason: ErasureReason) -> bool {
        GoneReason::of(reason).is_some_and(|r| self.confirm.contains(&r))
    }

    pub(crate) fn validate(&self) -> Result<()> {
        if self.interval.is_zero() {
            return Err(Error::config("Probes::interval must not be zero"));
        }
        if self.timeout.is_zero() {
            return Err(Error::config("Probes::timeout must not be zero"));
        }
        if self.timeout > LOOKAHEAD / 4 {
            return Err(Error::config(format!(
                "Probes::timeout ({:?}) must be at most {:?}: a probe runs before a claim \
                 that must not wait for it",
                self.timeout,
                LOOKAHEAD / 4
            )));
        }
        Ok(())
    }
}

/// The census: the pruner probes tracked users idle for a while, so that users who blocked
/// the bot or deleted their account are found without waiting for the inactivity
/// threshold; see [`RetentionBuilder::census`](crate::RetentionBuilder::census).
///
/// ```
/// use std::time::Duration;
/// use teloxide_retention::Census;
///
/// const DAY: Duration = Duration::from_secs(24 * 3600);
/// let census = Census::new().idle_for(14 * DAY).every(60 * DAY);
/// assert_eq!(census.idle_for, 14 * DAY);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Census {
    /// Users idle at least this long are probed (default 30 days).
    pub idle_for: Duration,
    /// No user is probed twice within this (default 30 days): a round that completes
    /// sooner waits for its users' time to come again.
    pub every: Duration,
    /// The longest a prune pass probes (default five minutes, and at most half of
    /// `prune_every`): the census goes on at the next pass where it stopped.
    pub per_pass: Duration,
}

impl Default for Census {
    fn default() -> Self {
        const DAY: Duration = Duration::from_secs(24 * 3600);
        Self { idle_for: 30 * DAY, every: 30 * DAY, per_pass: Duration::from_secs(5 * 60) }
    }
}

impl Census {
    /// The defaults.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// Probes users idle at least `idle`.
    #[must_use]
    pub fn idle_for(mut self, idle: Duration) -> Self {
        self.idle_for = idle;
        self
    }

    /// Probes no user twice within `every`.
    #[must_use]
    pub fn every(mut self, every: Duration) -> Self {
        self.every = every;
        self
    }

    /// Probes for at most `budget` per prune pass.
    #[must_use]
    pub fn per_pass(mut self, budget: Duration) -> Self {
        self.per_pass = budget;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        for (name, value) in
            [("idle_for", self.idle_for), ("every", self.every), ("per_pass", self.per_pass)]
        {
            if value.is_zero() {
                return Err(Error::config(format!("Census::{name} must be longer than zero")));
            }
        }
        Ok(())
    }
}

/// How far ahead of now the pruner probes the marks that are due: a mark falling due
/// while the probes of a claim run must have been probed too (see `pruner.rs`). A claim
/// is skipped when its probes took more than half of it.
pub(crate) const LOOKAHEAD: Duration = Duration::from_secs(5 * 60);

/// A way to reach Telegram, type-erased: the answer, and how long Telegram asked the bot
/// to wait (a 429's `retry_after`).
trait Reach: Send + Sync {
    fn chat_action(&self, user: UserId) -> BoxFuture<'static, (Reachability, Option<Duration>)>;
}

struct ByRequester<R>(R);

impl<R> Reach for ByRequester<R>
where
    R: Requester<Err = RequestError> + Send + Sync + 'static,
{
    fn chat_action(&self, user: UserId) -> BoxFuture<'static, (Reachability, Option<Duration>)> {
        let sending = self.0.send_chat_action(ChatId::from(user), ChatAction::Typing).send();
        Box::pin(async move {
            let answer = sending.await;
            let wait = match &answer {
                Err(RequestError::RetryAfter(seconds)) => Some(seconds.duration()),
                _ => None,
            };
            (Reachability::of(user, &answer), wait)
        })
    }
}

/// The longest a probe waits out a 429's `retry_after` (Telegram asks for seconds, rarely
/// minutes); a probe due in a longer wait is unknown, unsent.
const MAX_WAIT: Duration = Duration::from_secs(10);

/// The pruner's prober: the bot's requester, paced and bounded.
pub(crate) struct Prober {
    reach: Arc<dyn Reach>,
    pub(crate) settings: Probes,
    /// The earliest time of this process's next probe.
    next: tokio::sync::Mutex<tokio::time::Instant>,
    /// Until when Telegram asked this bot to wait (a 429's `retry_after`).
    blocked_until: std::sync::Mutex<Option<tokio::time::Instant>>,
}

impl Prober {
    pub(crate) fn new<R>(requester: R, settings: Probes) -> Self
    where
        R: Requester<Err = RequestError> + Send + Sync + 'static,
    {
        Self {
            reach: Arc::new(ByRequester(requester)),
            settings,
            next: tokio::sync::Mutex::new(tokio::time::Instant::now()),
            blocked_until: std::sync::Mutex::new(None),
        }
    }

    /// Sends one chat action to `user`, at this process's pace, and classifies the answer.
    /// A rate limit (429) pushes every later probe of this process back by the wait
    /// Telegram asked for.
    pub(crate) async fn probe(&self, user: UserId) -> Reachability {
        let slot = {
            let mut next = self.next.lock().await;
            let slot = (*next).max(tokio::time::Instant::now());
            *next = slot + self.settings.interval;
            slot
        };
        tokio::time::sleep_until(slot).await;
        // Telegram asked to wait (a 429 of an earlier probe): a short wait is waited out; a
        // long one makes this probe unknown without sending it (asked again later).
        let blocked = *self.blocked_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(until) = blocked.filter(|u| *u > tokio::time::Instant::now()) {
            if until - tokio::time::Instant::now() > MAX_WAIT {
                return Reachability::Unknown;
            }
            tokio::time::sleep_until(until).await;
        }
        let answer = tokio::time::timeout(self.settings.timeout, self.reach.chat_action(user));
        let (found, wait) = answer.await.unwrap_or((Reachability::Unknown, None));
        if let Some(wait) = wait {
            tracing::warn!(?wait, "Telegram asked the probes to slow down");
            let until = tokio::time::Instant::now() + wait;
            let mut blocked =
                self.blocked_until.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *blocked = Some(blocked.map_or(until, |b| b.max(until)));
        }
        found
    }
}

impl std::fmt::Debug for Prober {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prober").field("settings", &self.settings).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use teloxide::ApiError;

    use super::*;

    #[test]
    fn answers_are_classified_as_a_failed_send_is() {
        let user = UserId(42);
        let api = |e| Err::<(), _>(RequestError::Api(e));
        assert_eq!(Reachability::of(user, &Ok::<_, RequestError>(())), Reachability::Reachable);
        assert_eq!(
            Reachability::of(user, &api(ApiError::BotBlocked)),
            Reachability::Gone(GoneReason::Blocked)
        );
        assert_eq!(
            Reachability::of(user, &api(ApiError::ChatNotFound)),
            Reachability::Gone(GoneReason::Unreachable)
        );
        let limited =
            Err::<(), _>(RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(3)));
        assert_eq!(Reachability::of(user, &limited), Reachability::Unknown);
        let other = api(ApiError::Unknown("Bad Request: something else".into()));
        assert_eq!(Reachability::of(user, &other), Reachability::Unknown);
    }

    #[test]
    fn settings_are_checked() {
        assert!(Probes::new().validate().is_ok());
        assert!(Probes::new().one_every(Duration::ZERO).validate().is_err());
        assert!(Probes::new().timeout(Duration::from_secs(3600)).validate().is_err());
        assert!(Probes::new().confirms(ErasureReason::Unreachable));
        assert!(!Probes::new().confirms(ErasureReason::Blocked));
        assert!(!Probes::new().confirm([GoneReason::Blocked]).confirms(ErasureReason::OptOut));
    }
}
