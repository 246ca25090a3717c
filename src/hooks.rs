//! The bot's callbacks: erased, gone, returned, removed from a chat.
//!
//! Set on the builder ([`RetentionBuilder::on_erased`](crate::RetentionBuilder::on_erased)
//! and its siblings); called synchronously from the task that saw the event, so a hook
//! should be quick (send to a channel or spawn a task for anything slow).

use std::sync::Arc;

use chrono::{DateTime, Utc};
use teloxide::types::{ChatId, UserId};

use crate::erase::ErasureReason;
use crate::gone::GoneReason;

/// A user's data was erased; passed to the
/// [`RetentionBuilder::on_erased`](crate::RetentionBuilder::on_erased) callback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ErasedUser {
    /// The erased user.
    pub user: UserId,
    /// Why they were erased.
    pub reason: ErasureReason,
}

/// An erasure that has been failing for longer than
/// [`RetentionBuilder::stuck_after`](crate::RetentionBuilder::stuck_after); passed to the
/// [`RetentionBuilder::on_stuck`](crate::RetentionBuilder::on_stuck) callback once a day
/// while it keeps failing. Retrying goes on.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct StuckErasure {
    /// The user whose data is not erased yet.
    pub user: UserId,
    /// Why they are being erased.
    pub reason: ErasureReason,
    /// When the first attempt failed.
    pub failing_since: DateTime<Utc>,
    /// Failed attempts so far.
    pub attempts: u32,
    /// The erasers that failed this time, with their errors.
    pub failures: Vec<(String, String)>,
}

type Hook<T> = Option<Arc<dyn Fn(T) + Send + Sync>>;

/// Every callback the bot registered.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) erased: Hook<ErasedUser>,
    pub(crate) removed_from_chat: Hook<ChatId>,
    pub(crate) gone: Hook<(UserId, GoneReason)>,
    pub(crate) returned: Hook<UserId>,
    pub(crate) stuck: Hook<StuckErasure>,
}

impl Hooks {
    pub(crate) fn erased(&self, user: u64, reason: ErasureReason) {
        if let Some(hook) = &self.erased {
            hook(ErasedUser { user: UserId(user), reason });
        }
    }

    pub(crate) fn removed_from_chat(&self, chat: ChatId) {
        if let Some(hook) = &self.removed_from_chat {
            hook(chat);
        }
    }

    /// A gone mark was newly stored for `user`.
    pub(crate) fn gone(&self, user: u64, reason: ErasureReason) {
        if let (Some(hook), Some(reason)) = (&self.gone, GoneReason::of(reason)) {
            hook((UserId(user), reason));
        }
    }

    /// An erasure is stuck (reported once a day).
    pub(crate) fn stuck(&self, stuck: StuckErasure) {
        if let Some(hook) = &self.stuck {
            hook(stuck);
        }
    }

    /// A stored gone mark of `user` was cancelled: they came back.
    pub(crate) fn returned(&self, user: u64) {
        if let Some(hook) = &self.returned {
            hook(UserId(user));
        }
    }
}
