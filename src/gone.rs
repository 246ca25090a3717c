//! Users Telegram reports as gone: blocks and failed sends.
use std::fmt;
use std::future::Future;

use teloxide::types::{ChatId, Recipient, UserId};
use teloxide::{ApiError, RequestError};

use crate::clock::later;
use crate::config::GonePolicy;
use crate::erase::ErasureReason;
use crate::error::Result;
use crate::retention::Retention;
use crate::store::{Invalidation, Marked};
use crate::tracker::PendingMark;

/// Why Telegram says a user is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum GoneReason {
    /// The user blocked the bot.
    Blocked,
    /// The user's account was deleted.
    Deactivated,
    /// The bot cannot reach the user any more ("chat not found", other `Forbidden`s).
    Unreachable,
}

impl From<GoneReason> for ErasureReason {
    fn from(reason: GoneReason) -> Self {
        match reason {
            GoneReason::Blocked => Self::Blocked,
            GoneReason::Deactivated => Self::Deactivated,
            GoneReason::Unreachable => Self::Unreachable,
        }
    }
}

impl GoneReason {
    /// The gone reason behind an erasure reason; `None` for opt-outs and inactivity.
    pub(crate) fn of(reason: ErasureReason) -> Option<Self> {
        match reason {
            ErasureReason::Blocked => Some(Self::Blocked),
            ErasureReason::Deactivated => Some(Self::Deactivated),
            ErasureReason::Unreachable => Some(Self::Unreachable),
            _ => None,
        }
    }
}

impl fmt::Display for GoneReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ErasureReason::from(*self).fmt(f)
    }
}

/// Classifies the failure of a request sent to `chat`: `Some` if it means the user is gone.
///
/// Only private chats (positive ids) count; a group's "chat not found" says nothing about
/// its members. Rate limits (`RetryAfter`), network and server errors never mean gone.
#[must_use]
pub fn gone_reason(chat: ChatId, err: &RequestError) -> Option<GoneReason> {
    if !chat.is_user() {
        return None;
    }
    let RequestError::Api(api) = err else {
        return None;
    };
    match api {
        ApiError::BotBlocked => Some(GoneReason::Blocked),
        ApiError::UserDeactivated => Some(GoneReason::Deactivated),
        ApiError::ChatNotFound | ApiError::CantInitiateConversation => {
            Some(GoneReason::Unreachable)
        }
        // teloxide parses only the descriptions it knows; newer ones arrive as `Unknown`.
        ApiError::Unknown(text) => classify_description(text),
        _ => None,
    }
}

fn classify_description(text: &str) -> Option<GoneReason> {
    let rest = text.strip_prefix("Forbidden: ")?;
    if rest.contains("to bots") {
        // "bot can't send messages to bots": the chat is a bot, never a tracked user.
        None
    } else if rest.contains("blocked") {
        Some(GoneReason::Blocked)
    } else if rest.contains("deactivated") {
        Some(GoneReason::Deactivated)
    } else {
        Some(GoneReason::Unreachable)
    }
}

impl Retention {
    /// Marks `user` as gone, as the layer does for a block; what follows is the
    /// [`GonePolicy`].
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
    /// [`NoteGone::note_gone`], which keeps marks in memory while the store is unreachable
    /// (as the layer does for blocks) and writes them when it answers again.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: the mark is written in one script call, or not at all.
    pub async fn mark_gone(&self, user: UserId, reason: GoneReason) -> Result<bool> {
        let mark = self.gone_mark(reason);
        self.write_mark(user, mark).await
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
    /// if the store cannot be read.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: it only reads.
    pub async fn is_reachable(&self, user: UserId) -> Result<bool> {
        if self.inner.tracker.has_mark(user.0) {
            return Ok(false);
        }
        let status = self.store_call(self.inner.backend.status(user.0)).await?;
        Ok(match status.job {
            // Came back after the mark (as `claim.lua` decides).
            Some((reason, marked_at, _)) if reason.is_gone() => {
                status.last_seen.is_some_and(|seen| seen > marked_at)
            }
            _ => true,
        })
    }

    /// Like [`Retention::mark_gone`], but a mark the store cannot take is kept in memory
    /// (bounded by `max_buffered_touches`) and written once the store answers again.
    pub(crate) async fn mark_gone_or_keep(&self, user: UserId, reason: GoneReason) {
        let mark = self.gone_mark(reason);
        let Err(e) = self.write_mark(user, mark).await else { return };
        if self.inner.tracker.keep_mark(user.0, mark) {
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

    /// A gone mark made now, due as the [`GonePolicy`] says.
    fn gone_mark(&self, reason: GoneReason) -> PendingMark {
        let now = self.inner.clock.now_ms();
        let due = match self.inner.config.gone_policy {
            GonePolicy::EraseNow => Some(now),
            GonePolicy::EraseAfter(grace) => Some(later(now, grace)),
            GonePolicy::MarkOnly => None,
        };
        PendingMark { reason: reason.into(), marked_at: now, due }
    }

    async fn write_mark(&self, user: UserId, mark: PendingMark) -> Result<bool> {
        let inner = &self.inner;
        if !crate::humans::is_trackable_id(user) {
            return Ok(false);
        }
        let PendingMark { reason, marked_at: now, due } = mark;
        let marked = self.store_call(inner.backend.schedule(user.0, reason, now, due)).await?;
        if marked != Marked::Scheduled {
            return Ok(false);
        }
        tracing::info!(user = user.0, %reason, "user marked gone");
        inner.tracker.newly_marked(user.0, reason);
        // From now on, any interaction of the user must reach the store: it cancels the mark.
        inner
            .tracker
            .invalidate(Invalidation { user: user.0, since: now, until: now, opt_out: false })
            .await;
        Ok(true)
    }

    /// Cancels a scheduled gone erasure of `user` (they unblocked the bot). Opt-outs stay.
    pub(crate) async fn user_returned(&self, user: UserId) {
        self.inner.tracker.forget_mark(user.0);
        match self.store_call(self.inner.backend.unschedule_gone(user.0)).await {
            Ok(true) => {
                tracing::info!(user = user.0, "user unblocked the bot; erasure cancelled");
                self.inner.hooks.returned(user.0);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, user = user.0, "could not cancel a gone mark"),
        }
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
        let Some((user, reason)) = gone_user(chat.into(), err) else {
            return Ok(None);
        };
        self.mark_gone(user, reason).await?;
        Ok(Some(reason))
    }
}

/// The user a failed request to `chat` says is gone, and why.
fn gone_user(chat: Recipient, err: &RequestError) -> Option<(UserId, GoneReason)> {
    let Recipient::Id(chat) = chat else { return None };
    let reason = gone_reason(chat, err)?;
    Some((chat.as_user()?, reason))
}

/// Users Telegram reports as gone: blocks and failed sends.
///
/// Telegram sends no event when a user deletes a chat, but two real signals exist:
///
/// - a private `my_chat_member` update with status `kicked`: the user blocked the bot (the
///   layer handles these; see [`RetentionBuilder::detect_blocks`](crate::RetentionBuilder::detect_blocks));
/// - a request to the user failing with "bot was blocked by the user", "user is
///   deactivated", "chat not found" or another `Forbidden` answer for a private chat.
///
/// Failed requests are caught at the source by the [`Retained`](crate::Retained) bot
/// adaptor, which knows each request's recipient: wrap the bot once and every handler's and
/// broadcast's failed send marks exactly the user it was for. Code that calls the Bot API
/// through a bot without the adaptor reports failures itself, with
/// [`NoteGone::note_gone`] or [`Retention::note_send_error`], naming the chat the request
/// was sent to:
///
/// ```no_run
/// use teloxide::prelude::*;
/// use teloxide_retention::{NoteGone, Retention};
///
/// async fn broadcast(bot: Bot, retention: Retention, users: Vec<UserId>) {
///     for user in users {
///         // Marks the user gone if Telegram says they blocked the bot or left.
///         let _ = bot.send_message(user, "News!").await.note_gone(&retention, user).await;
///     }
/// }
/// ```
///
/// What happens to a gone user is the [`GonePolicy`]: erased at the
/// next pass, after a grace period (the default: a user who unblocks or interacts within it
/// is kept), or only marked.
pub trait NoteGone<T> {
    /// Marks the user of `chat` gone if this result is a "gone" error, then returns the
    /// result unchanged. Store failures are logged, not returned: while the store is
    /// unreachable the mark is kept in memory (bounded by `max_buffered_touches`) and
    /// written when it answers again.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe, like [`Retention::mark_gone`].
    fn note_gone(
        self,
        retention: &Retention,
        chat: impl Into<Recipient> + Send,
    ) -> impl Future<Output = Result<T, RequestError>> + Send;
}

impl<T: Send> NoteGone<T> for Result<T, RequestError> {
    async fn note_gone(
        self,
        retention: &Retention,
        chat: impl Into<Recipient> + Send,
    ) -> Result<T, RequestError> {
        if let Err(err) = &self
            && let Some((user, reason)) = gone_user(chat.into(), err)
        {
            retention.mark_gone_or_keep(user, reason).await;
        }
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(e: ApiError) -> RequestError {
        RequestError::Api(e)
    }

    #[test]
    fn classifies_gone_errors_for_user_chats() {
        let user = ChatId(42);
        assert_eq!(gone_reason(user, &api(ApiError::BotBlocked)), Some(GoneReason::Blocked));
        assert_eq!(
            gone_reason(user, &api(ApiError::UserDeactivated)),
            Some(GoneReason::Deactivated)
        );
        assert_eq!(gone_reason(user, &api(ApiError::ChatNotFound)), Some(GoneReason::Unreachable));
        let newer = "Forbidden: bot can't initiate conversation with a user".to_owned();
        assert_eq!(
            gone_reason(user, &api(ApiError::Unknown(newer))),
            Some(GoneReason::Unreachable)
        );
        let to_bots = "Forbidden: bot can't send messages to bots".to_owned();
        assert_eq!(gone_reason(user, &api(ApiError::Unknown(to_bots))), None);
    }

    #[test]
    fn never_gone_for_groups_rate_limits_or_other_errors() {
        assert_eq!(gone_reason(ChatId(-100123), &api(ApiError::ChatNotFound)), None);
        assert_eq!(gone_reason(ChatId(-5), &api(ApiError::BotBlocked)), None);
        let retry = RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(5));
        assert_eq!(gone_reason(ChatId(42), &retry), None);
        assert_eq!(gone_reason(ChatId(42), &api(ApiError::MessageNotModified)), None);
        let other = "Bad Request: message text is empty".to_owned();
        assert_eq!(gone_reason(ChatId(42), &api(ApiError::Unknown(other))), None);
    }
}
