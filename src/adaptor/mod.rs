//! The bot adaptor that detects gone users at the source: [`Retained`].
//!
//! Only a request knows whom it was for. `Retained` wraps any bot (`Bot`, `Throttle<Bot>`,
//! `DefaultParseMode<Bot>`, ...) like teloxide's own adaptors do, and when a request that
//! delivers to a chat (`send_*`, `copy_message(s)`, `forward_message(s)`, `edit_message_*`
//! of a chat message, `stop_poll`, `send_chat_action`, ...) fails with a "gone" error
//! for a **user's private chat**, it marks **that chat's user** gone. Never the source chat
//! of a forward or copy, never the user whose update the handler was serving, never a
//! group or channel. Rate limits, network and server errors never mark anyone; see
//! [`gone_reason`](crate::gone_reason) for the classification.
//!
//! A relay bot that forwards a user's message to an admin who blocked the bot therefore
//! marks the admin, and a broadcast marks exactly the recipients that failed, with no
//! extra code. The error still reaches the caller unchanged, so the handler tree's error
//! type does not matter (`RequestError`, boxed errors, `anyhow`, ...).
//!
//! ```
//! use std::time::Duration;
//! use teloxide::adaptors::{Throttle, throttle::Limits};
//! use teloxide::prelude::*;
//! use teloxide_retention::{MemoryStore, Retained, Retention, RetainedExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), teloxide_retention::Error> {
//! let retention = Retention::builder(MemoryStore::new())
//!     .inactive_after(Duration::from_secs(90 * 24 * 3600))
//!     .build()?;
//! // The adaptor stacks with teloxide's own, in any order.
//! let bot = Bot::new("TOKEN").retained(&retention).throttle(Limits::default());
//!
//! let handler = Update::filter_message().endpoint(
//!     |bot: Throttle<Retained<Bot>>, msg: Message| async move {
//!         // If this user blocked the bot, the failed reply marks them gone.
//!         bot.send_message(msg.chat.id, "hi").await?;
//!         respond(())
//!     },
//! );
//! // The privacy commands answer through the same bot type.
//! let handler = retention.wrap_for::<Throttle<Retained<Bot>>, _>(handler);
//! # let _ = (bot, handler);
//! # Ok(()) }
//! ```
//!
//! Code that talks to the Bot API without the adaptor reports failed sends itself with
//! [`Retention::note_send_error`](crate::Retention::note_send_error) or [`NoteGone::note_gone`](crate::NoteGone::note_gone).
//!
//! What happens to a marked user is the [`GonePolicy`](crate::GonePolicy). While the store
//! is unreachable, marks wait in memory (bounded) and are written with their original time
//! once it answers.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::future::BoxFuture;
use pin_project_lite::pin_project;
use teloxide::requests::{HasPayload, Output, Request, Requester};
use teloxide::types::{ChatId, Recipient};
use teloxide::{ApiError, RequestError};

use crate::gone::{gone_reason, gone_user};
use crate::retention::Retention;

/// A bot adaptor that marks the recipient of a failed request gone.
///
/// Only a request knows whom it was for: a request that delivers to a chat and fails with
/// a "gone" error for a user's private chat marks that chat's user, never the update's
/// sender, a group, a channel or the source chat of a forward or copy. The README's "Gone
/// users" section has the whole story and an example.
///
/// Created with [`Retained::new`] or [`RetainedExt::retained`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Retained<B> {
    inner: B,
    retention: Retention,
}

impl<B> Retained<B> {
    /// Wraps `inner`, reporting gone recipients to `retention`.
    #[must_use]
    pub fn new(inner: B, retention: &Retention) -> Self {
        Self { inner, retention: retention.clone() }
    }

    /// The wrapped bot.
    #[must_use]
    pub fn inner(&self) -> &B {
        &self.inner
    }

    /// Unwraps the bot.
    #[must_use]
    pub fn into_inner(self) -> B {
        self.inner
    }

    /// The retention this adaptor reports to.
    #[must_use]
    pub fn retention(&self) -> &Retention {
        &self.retention
    }
}

/// Adds [`retained`](RetainedExt::retained) to every bot, next to teloxide's
/// `throttle`, `cache_me` and `parse_mode`.
pub trait RetainedExt: Requester + Sized {
    /// Wraps this bot in a [`Retained`] adaptor that reports gone recipients to
    /// `retention`.
    #[must_use]
    fn retained(self, retention: &Retention) -> Retained<Self> {
        Retained::new(self, retention)
    }
}

impl<B: Requester> RetainedExt for B {}

/// Reads the destination of a request from its payload.
type Destination<P> = fn(&P) -> Option<ChatId>;

/// A request of a [`Retained`] bot that delivers to a chat.
///
/// It behaves exactly like the wrapped request; when sending fails with a "gone" error for a
/// user's private chat, the user is marked gone before the error is returned.
#[must_use = "Requests are lazy and do nothing unless sent"]
pub struct RetainedRequest<R: HasPayload> {
    inner: R,
    retention: Retention,
    destination: Destination<R::Payload>,
    /// A forward or copy: the request also names a source chat.
    relay: bool,
}

impl<R: HasPayload + Clone> Clone for RetainedRequest<R> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            retention: self.retention.clone(),
            destination: self.destination,
            relay: self.relay,
        }
    }
}

impl<R: HasPayload> std::fmt::Debug for RetainedRequest<R>
where
    R::Payload: std::fmt::Debug,
{
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RetainedRequest").field("payload", self.inner.payload_ref()).finish()
    }
}

impl<R: HasPayload> RetainedRequest<R> {
    /// The user whose private chat this request goes to, read when it is sent (a setter may
    /// have changed the chat since the request was made). A user's private chat has the
    /// user's id, which is positive; groups and channels are negative.
    fn recipient(&self) -> Option<ChatId> {
        (self.destination)(self.inner.payload_ref()).filter(|chat| chat.is_user())
    }
}

impl<R: HasPayload> HasPayload for RetainedRequest<R> {
    type Payload = R::Payload;

    fn payload_mut(&mut self) -> &mut Self::Payload {
        self.inner.payload_mut()
    }

    fn payload_ref(&self) -> &Self::Payload {
        self.inner.payload_ref()
    }
}

impl<R> Request for RetainedRequest<R>
where
    R: Request<Err = RequestError>,
{
    type Err = RequestError;
    type Send = RetainedSend<R::Send>;
    type SendRef = RetainedSend<R::SendRef>;

    fn send(self) -> Self::Send {
        let watch = self.recipient().map(|chat| Watch {
            chat,
            relay: self.relay,
            retention: self.retention,
        });
        RetainedSend { inner: self.inner.send(), watch, marking: None }
    }

    fn send_ref(&self) -> Self::SendRef {
        let watch = self.recipient().map(|chat| Watch {
            chat,
            relay: self.relay,
            retention: self.retention.clone(),
        });
        RetainedSend { inner: self.inner.send_ref(), watch, marking: None }
    }
}

impl<R> IntoFuture for RetainedRequest<R>
where
    R: Request<Err = RequestError>,
{
    type Output = Result<Output<R>, RequestError>;
    type IntoFuture = RetainedSend<R::Send>;

    fn into_future(self) -> Self::IntoFuture {
        self.send()
    }
}

pin_project! {
    /// The future of a sent [`RetainedRequest`].
    ///
    /// On success it returns the wrapped request's result as soon as it has it. On a "gone"
    /// error for a user's private chat it first records the mark (bounded by the store
    /// timeout; kept in memory during an outage), then returns the error.
    #[must_use = "futures do nothing unless polled"]
    pub struct RetainedSend<F> {
        #[pin]
        inner: F,
        // The private chat this request goes to, or `None` when nothing can be marked.
        watch: Option<Watch>,
        // Recording a mark, then the error to return.
        marking: Option<(BoxFuture<'static, ()>, RequestError)>,
    }
}

impl<F, T> Future for RetainedSend<F>
where
    F: Future<Output = Result<T, RequestError>>,
{
    type Output = Result<T, RequestError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Some((mark, _)) = this.marking {
            ready!(mark.as_mut().poll(cx));
            let (_, err) = this.marking.take().expect("checked above");
            return Poll::Ready(Err(err));
        }
        let result = ready!(this.inner.as_mut().poll(cx));
        let Err(err) = &result else { return Poll::Ready(result) };
        let Some(Watch { chat, relay, retention }) = this.watch.take() else {
            return Poll::Ready(result);
        };
        // "Chat not found" of a forward or copy may be about its source chat.
        if relay && matches!(err, RequestError::Api(ApiError::ChatNotFound)) {
            return Poll::Ready(result);
        }
        let Some(reason) = gone_reason(chat, err) else { return Poll::Ready(result) };
        let Some(user) = chat.as_user() else { return Poll::Ready(result) };
        let mut mark: BoxFuture<'static, ()> =
            Box::pin(async move { retention.mark_gone_or_keep(user, reason).await });
        if mark.as_mut().poll(cx).is_ready() {
            return Poll::Ready(result);
        }
        let Err(err) = result else { unreachable!("matched as an error above") };
        *this.marking = Some((mark, err));
        Poll::Pending
    }
}

/// What a sent request needs to mark its recipient.
struct Watch {
    chat: ChatId,
    relay: bool,
    retention: Retention,
}

/// The chat a payload's `chat_id` names, if it is given by id.
trait ChatOf {
    fn chat(&self) -> Option<ChatId>;
}

impl ChatOf for Recipient {
    fn chat(&self) -> Option<ChatId> {
        match self {
            Recipient::Id(id) => Some(*id),
            Recipient::ChannelUsername(_) => None,
        }
    }
}

impl ChatOf for ChatId {
    fn chat(&self) -> Option<ChatId> {
        Some(*self)
    }
}

/// Expands the method list in `methods.rs` into the `Requester` items of [`Retained`]:
/// `deliver` and `relay` methods return a [`RetainedRequest`] that reads the payload's
/// `chat_id`, `forward` methods return the wrapped bot's request unchanged.
macro_rules! retained_methods {
    ($($kind:ident $name:ident [$($gen:tt)*] ($($arg:ident : $argty:ty),*) -> $Ty:ident [$($bound:tt)*];)*) => {
        impl<B> Requester for Retained<B>
        where
            B: Requester<Err = RequestError>,
        {
            type Err = RequestError;

            $( retained_methods!(@$kind $name [$($gen)*] ($($arg : $argty),*) -> $Ty [$($bound)*]); )*
        }
    };
    (@deliver $($rest:tt)*) => { retained_methods!(@watched false $($rest)*); };
    (@relay $($rest:tt)*) => { retained_methods!(@watched true $($rest)*); };
    (@watched $relay:literal $name:ident [$($gen:tt)*] ($($arg:ident : $argty:ty),*) -> $Ty:ident [$($bound:tt)*]) => {
        type $Ty = RetainedRequest<B::$Ty>;

        fn $name<$($gen)*>(&self, $($arg: $argty),*) -> Self::$Ty where $($bound)* {
            RetainedRequest {
                inner: self.inner.$name($($arg),*),
                retention: self.retention.clone(),
                destination: |payload: &teloxide::payloads::$Ty| payload.chat_id.chat(),
                relay: $relay,
            }
        }
    };
    (@forward $name:ident [$($gen:tt)*] ($($arg:ident : $argty:ty),*) -> $Ty:ident [$($bound:tt)*]) => {
        type $Ty = B::$Ty;

        fn $name<$($gen)*>(&self, $($arg: $argty),*) -> Self::$Ty where $($bound)* {
            self.inner.$name($($arg),*)
        }
    };
}

#[allow(clippy::wildcard_imports)]
mod requester {
    use teloxide::types::*;
    use url::Url;

    use super::{ChatOf, Retained, RetainedRequest};
    use teloxide::RequestError;
    use teloxide::requests::Requester;

    include!("methods.rs");
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
/// [`NoteGone::note_gone`] or [`Retention::note_send_error`](crate::Retention::note_send_error), naming the chat the request
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
/// What happens to a gone user is the [`GonePolicy`](crate::GonePolicy): erased at the
/// next pass, after a grace period (the default: a user who unblocks or interacts within it
/// is kept), or only marked.
pub trait NoteGone<T> {
    /// Marks the user of `chat` gone if this result is a "gone" error, then returns the
    /// result unchanged. Store failures are logged, not returned: while the store is
    /// unreachable the mark is kept in memory (bounded by `max_buffered_interactions`) and
    /// written when it answers again.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe, like [`Retention::mark_gone`](crate::Retention::mark_gone).
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
