//! A test kit for bots that use the crate (the `testing` feature, for dev-dependencies).
//!
//! - [`FakeBotApi`]: a fake Telegram Bot API on localhost that answers what teloxide calls
//!   (`getMe` included), records what the bot sent, and fails chosen chats or methods with
//!   Telegram's own errors ([`TelegramError`]);
//! - [`updates`]: the updates a bot test needs (a message, a command, a button press, a
//!   block and an unblock, a user with a language), as Telegram sends them;
//! - [`TestBot`]: pushes updates through a real teloxide `Dispatcher` running a handler
//!   tree wrapped by the layer, and returns what the bot sent for each.
//!
//! ```toml
//! [dev-dependencies]
//! teloxide-retention = { version = "0.1", features = ["testing"] }
//! ```
//!
//! ```
//! use std::time::Duration;
//! use teloxide::prelude::*;
//! use teloxide_retention::testing::{TestBot, updates};
//! use teloxide_retention::{ManualClock, MemoryStore, Retained, Retention};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let clock = ManualClock::starting_now();
//! let retention = Retention::builder(MemoryStore::new())
//!     .inactive_after(Duration::from_secs(90 * 24 * 3600))
//!     .clock(clock.clone())
//!     .build()
//!     .unwrap();
//! // The bot's own tree, as in its `main`.
//! let tree = Update::filter_message().endpoint(|bot: Retained<Bot>, msg: Message| async move {
//!     bot.send_message(msg.chat.id, "hi!").await?;
//!     Ok::<_, teloxide::RequestError>(())
//! });
//! let bot = TestBot::new(retention, tree).await;
//!
//! let sent = bot.push(updates::message(7, "hello")).await;
//! assert_eq!(sent[0].text(), Some("hi!"));
//! assert!(bot.retention().status(UserId(7)).await.unwrap().last_seen.is_some());
//! # }
//! ```

mod bot_api;
pub mod updates;

use std::collections::HashSet;
use std::convert::Infallible;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use futures_util::stream;
use serde_json::Value;
use teloxide::Bot;
use teloxide::dispatching::{Dispatcher, UpdateHandler};
use teloxide::error_handlers::LoggingErrorHandler;
use teloxide::stop::{StopToken, mk_stop_token};
use teloxide::types::{AllowedUpdate, Update, UpdateKind};
use teloxide::update_listeners::{AsUpdateStream, UpdateListener};

pub use bot_api::{
    BOT_ID, BOT_USERNAME, FakeBotApi, Sent, TelegramError, multipart_field, uploaded_file,
};

use crate::Retention;

/// Parses update JSON the way the dispatcher does (from text: teloxide's `Update` parser
/// needs borrowed keys).
///
/// # Panics
///
/// On JSON teloxide would not understand: the dispatcher would otherwise receive an
/// `UpdateKind::Error` and drop it without a word.
#[must_use]
pub fn parse(update: Value) -> Update {
    let parsed: Update = match serde_json::from_str(&update.to_string()) {
        Ok(parsed) => parsed,
        Err(e) => panic!("not update JSON ({e}): {update:#}"),
    };
    assert!(
        !matches!(parsed.kind, UpdateKind::Error(_)),
        "teloxide did not parse this update (a field is missing or misspelt): {update:#}"
    );
    parsed
}

/// Runs a real teloxide `Dispatcher` of `api`'s bot over `updates` (each checked with
/// [`parse`]) and returns when every update is handled. Returns the update kinds the
/// dispatcher asked for (its `allowed_updates`).
pub async fn dispatch<E>(
    api: &FakeBotApi,
    handler: UpdateHandler<E>,
    updates: Vec<Value>,
) -> HashSet<AllowedUpdate>
where
    E: Debug + Send + Sync + 'static,
{
    let mut dispatcher = Dispatcher::builder(api.bot(), handler).build();
    dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new()).await
}

/// [`dispatch`] with a dispatcher built by the test (any bot type, such as an adaptor).
pub async fn dispatch_with<R, E, K>(
    dispatcher: &mut Dispatcher<R, E, K>,
    updates: Vec<Value>,
    listener_errors: Arc<LoggingErrorHandler>,
) -> HashSet<AllowedUpdate>
where
    R: teloxide::requests::Requester + Clone + Send + Sync + 'static,
    E: Debug + Send + Sync + 'static,
    K: std::hash::Hash + Eq + Clone + Send + 'static,
{
    let listener = ScriptedListener {
        updates: updates.into_iter().map(parse).collect(),
        hints: Arc::new(Mutex::new(HashSet::new())),
        stop: mk_stop_token().0,
    };
    let hints = Arc::clone(&listener.hints);
    dispatcher.dispatch_with_listener(listener, listener_errors).await;
    let hints = hints.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    hints.clone()
}

/// An update listener that yields a fixed list of updates and then ends, which makes the
/// dispatcher finish every update and return.
struct ScriptedListener {
    updates: Vec<Update>,
    hints: Arc<Mutex<HashSet<AllowedUpdate>>>,
    stop: StopToken,
}

impl UpdateListener for ScriptedListener {
    type Err = Infallible;

    fn stop_token(&mut self) -> StopToken {
        self.stop.clone()
    }

    fn hint_allowed_updates(&mut self, hint: &mut dyn Iterator<Item = AllowedUpdate>) {
        self.hints.lock().unwrap_or_else(std::sync::PoisonError::into_inner).extend(hint);
    }
}

impl<'a> AsUpdateStream<'a> for ScriptedListener {
    type StreamErr = Infallible;
    type Stream = stream::Iter<std::vec::IntoIter<Result<Update, Infallible>>>;

    fn as_stream(&'a mut self) -> Self::Stream {
        let updates: Vec<_> = std::mem::take(&mut self.updates).into_iter().map(Ok).collect();
        stream::iter(updates)
    }
}

/// A bot under test: the bot's handler tree, wrapped by the layer of a [`Retention`], run
/// by a real teloxide `Dispatcher` against a [`FakeBotApi`].
///
/// Handlers may take `Bot` or [`Retained<Bot>`](crate::Retained) (the tree is wrapped with
/// [`Retention::wrap_retained`]): with `Retained<Bot>`, a failed send to a blocked user
/// marks them gone, as in production. Give the [`Retention`] a
/// [`ManualClock`](crate::ManualClock) to move time instead of sleeping. See the
/// [module's example](self).
pub struct TestBot<E> {
    api: FakeBotApi,
    retention: Retention,
    tree: UpdateHandler<E>,
}

impl<E> std::fmt::Debug for TestBot<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestBot").field("api", &self.api).finish_non_exhaustive()
    }
}

impl<E> TestBot<E>
where
    E: Debug + Send + Sync + 'static,
{
    /// Wraps `tree` with `retention`'s layer and starts a [`FakeBotApi`] for it.
    pub async fn new(retention: Retention, tree: UpdateHandler<E>) -> Self {
        let tree = retention.wrap_retained::<Bot, E>(tree);
        Self { api: FakeBotApi::start().await, retention, tree }
    }

    /// Dispatches `update` and returns every request the bot made for it, in order (not
    /// the dispatcher's own `getMe`).
    pub async fn push(&self, update: Value) -> Vec<Sent> {
        self.push_all(vec![update]).await
    }

    /// Dispatches `updates`, in order, and returns every request the bot made for them
    /// (not the dispatcher's own `getMe`).
    pub async fn push_all(&self, updates: Vec<Value>) -> Vec<Sent> {
        let before = self.api.sent().len();
        dispatch(&self.api, self.tree.clone(), updates).await;
        let mut sent = self.api.sent().split_off(before);
        sent.retain(|request| request.method != "getme");
        sent
    }

    /// The fake Bot API: what the bot sent so far, and failures to script.
    #[must_use]
    pub fn api(&self) -> &FakeBotApi {
        &self.api
    }

    /// The bot's [`Retention`]: its store, its pruner, its users' status.
    #[must_use]
    pub fn retention(&self) -> &Retention {
        &self.retention
    }
}
