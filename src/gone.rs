//! Users Telegram reports as gone: blocks and failed sends.
use std::fmt;

use teloxide::types::{ChatId, Recipient, UserId};
use teloxide::{ApiError, RequestError};

use crate::erase::ErasureReason;

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

/// The user a failed request to `chat` says is gone, and why.
pub(crate) fn gone_user(chat: Recipient, err: &RequestError) -> Option<(UserId, GoneReason)> {
    let Recipient::Id(chat) = chat else { return None };
    let reason = gone_reason(chat, err)?;
    // Telegram's service accounts are never users of the crate (README guarantee 7).
    let user = chat.as_user().filter(|u| crate::humans::is_trackable_id(*u))?;
    Some((user, reason))
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
