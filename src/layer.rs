//! The dptree layer: one call wraps a bot's whole handler tree.
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::panic::Location;

use dptree::di::DependencyMap;
use dptree::{HandlerDescription, HandlerSignature, Type};
use teloxide::dispatching::{DpHandlerDescription, UpdateFilterExt, UpdateHandler};
use teloxide::prelude::Requester;
use teloxide::types::{AllowedUpdate, ChatMemberKind, Me, Update, UpdateKind, UserId};
use teloxide::{Bot, RequestError};

use crate::humans::is_trackable;
use crate::retention::Retention;
use crate::stats::Counters;
use crate::tracker::Noted;

impl Retention {
    /// Wraps `handler` for a dispatcher whose bot is [`teloxide::Bot`].
    ///
    /// The dptree layer: one call wraps a bot's whole handler tree.
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
    /// through goes on to whatever follows the layer (the next branch, say) once the whole tree
    /// has tried it. So does a block the tree does not handle; only if nothing after the layer
    /// handles it either does the layer mark it handled.
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
    /// - with the privacy commands on (the default): the bot (`teloxide::Bot` for
    ///   [`Retention::wrap`], `R` for [`Retention::wrap_for`]) and `teloxide::types::Me`, both
    ///   provided by the dispatcher.
    ///
    /// For adaptors such as `Throttle<Bot>`, use [`Retention::wrap_for`].
    ///
    /// # Panics
    ///
    /// Never here; but the dispatcher's `build()` panics, naming this call, if the privacy
    /// commands are on and the dispatcher's bot is not a `teloxide::Bot`.
    #[must_use]
    #[track_caller]
    pub fn wrap<E>(&self, handler: UpdateHandler<E>) -> UpdateHandler<E>
    where
        E: Send + Sync + 'static,
    {
        self.wrap_for::<Bot, E>(handler)
    }

    /// Wraps `handler` for a dispatcher whose bot is `R` (an adaptor such as
    /// `Throttle<Bot>` or `DefaultParseMode<Bot>`).
    ///
    /// See [`Retention::wrap`] for what the layer does.
    #[must_use]
    #[track_caller]
    pub fn wrap_for<R, E>(&self, handler: UpdateHandler<E>) -> UpdateHandler<E>
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        let location = Location::caller();
        let commands = self.inner.commands.is_some();
        let description = self.description(handler.description());
        let mut obligations = vec![Type::of::<Update>()];
        if commands {
            obligations.extend([Type::of::<R>(), Type::of::<Me>()]);
        }
        let sig = with_obligations(handler.sig(), &obligations, location);

        let layer = self.clone();
        dptree::from_fn_with_description(
            description,
            move |deps: DependencyMap, cont| {
                let inner = handler.clone();
                let layer = layer.clone();
                // This future is allocated for every update: the common path (an active
                // user's cached interaction) stays synchronous, and the rare paths are boxed
                // so that their large state machines are not part of it.
                async move {
                    let Some(update) = deps.try_get::<Update>() else {
                        return match inner.execute(deps, pass_through).await {
                            ControlFlow::Continue(deps) => cont(deps).await,
                            done => done,
                        };
                    };
                    let observed = match classify(&update, layer.inner.config.detect_blocks) {
                        Event::Nothing => Observed::default(),
                        Event::Interaction(user) if layer.inner.tracker.touch_cached(user.0) => {
                            Observed::default()
                        }
                        event => Box::pin(layer.observe(event)).await,
                    };
                    if observed.refuse {
                        return ControlFlow::Break(Ok(()));
                    }
                    if layer.inner.commands.as_ref().is_some_and(|c| c.may_handle(&update))
                        && Box::pin(layer.run_command::<R>(&update, &deps)).await
                    {
                        return ControlFlow::Break(Ok(()));
                    }
                    match inner.execute(deps, pass_through).await {
                        // What follows the layer (a sibling branch) gets it next.
                        ControlFlow::Continue(deps) => match cont(deps).await {
                            // Nobody handled an update the layer acted on (a block): mark
                            // it handled, so that the dispatcher's default handler does not
                            // log the whole update (a privacy leak).
                            ControlFlow::Continue(_) if observed.consumed => {
                                ControlFlow::Break(Ok(()))
                            }
                            rest => rest,
                        },
                        done => done,
                    }
                }
            },
            sig,
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
        let description = self.description(handler.description());
        allowed_updates_of(&description).unwrap_or_else(|| {
            tracing::warn!(
                "could not read the handler's update kinds from this teloxide version; \
                 asking for every kind"
            );
            ALL_UPDATE_KINDS.to_vec()
        })
    }

    /// The description of the layer over a tree described by `tree`: the tree's update
    /// kinds plus those the enabled features need.
    fn description(&self, tree: &DpHandlerDescription) -> DpHandlerDescription {
        let mut interests = Vec::new();
        if self.inner.config.detect_blocks || self.inner.hooks.removed_from_chat.is_some() {
            interests.push(interest(Update::filter_my_chat_member()));
        }
        if self.inner.commands.is_some() {
            interests.push(interest(Update::filter_message()));
            interests.push(interest(Update::filter_callback_query()));
        }
        // Each interest observes one update kind and lets everything through, so chaining
        // it before the wrapped tree adds that kind and keeps the tree's own set and
        // filtering.
        interests.into_iter().fold(tree.clone(), |tree, interest| interest.merge_chain(&tree))
    }

    /// Records what an update says about its user.
    async fn observe(&self, event: Event) -> Observed {
        match event {
            Event::Interaction(user) => self.interaction(user).await,
            Event::Blocked(user) => {
                self.mark_gone_or_keep(user, crate::GoneReason::Blocked).await;
                Observed { refuse: false, consumed: true }
            }
            Event::Unblocked(user) => {
                self.user_returned(user).await;
                Observed { consumed: true, ..self.interaction(user).await }
            }
            Event::RemovedFromChat(chat, performer) => {
                self.inner.hooks.removed_from_chat(chat);
                let mut observed = match performer {
                    Some(user) => self.interaction(user).await,
                    None => Observed::default(),
                };
                observed.consumed = true;
                observed
            }
            Event::Nothing => Observed::default(),
        }
    }

    async fn interaction(&self, user: UserId) -> Observed {
        let strict = self.inner.config.strict;
        let recorded = self.inner.tracker.touch(user.0, strict).await;
        let refuse = strict && !recorded.is_stored();
        if refuse {
            Counters::add(&self.inner.counters.strict_refusals, 1);
            tracing::error!(
                user = user.0,
                ?recorded,
                "strict mode: update not handled, its interaction could not be recorded"
            );
        } else if recorded == Noted::Dropped {
            tracing::error!(
                user = user.0,
                "interaction lost: the store is unreachable and the buffer is full"
            );
        }
        Observed { refuse, consumed: false }
    }
}

/// The continuation the wrapped tree runs with: it ends the tree's run, as
/// [`Handler::dispatch`](dptree::Handler::dispatch) does, and the layer passes an update the
/// tree let through to its own continuation afterwards, as a dptree branch does. Unlike the
/// boxed continuation the layer receives, this one costs no allocation per update.
fn pass_through<T>(deps: DependencyMap) -> std::future::Ready<ControlFlow<T, DependencyMap>> {
    std::future::ready(ControlFlow::Continue(deps))
}

/// Wraps handlers in a method chain; the twin of [`Retention::wrap`].
pub trait RetentionExt<E> {
    /// Wraps this handler with `retention`'s layer (for a `teloxide::Bot` dispatcher).
    #[must_use]
    fn with_retention(self, retention: &Retention) -> Self;
}

impl<E: Send + Sync + 'static> RetentionExt<E> for UpdateHandler<E> {
    #[track_caller]
    fn with_retention(self, retention: &Retention) -> Self {
        retention.wrap(self)
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct Observed {
    /// Strict mode could not record the interaction: do not run the wrapped handler.
    refuse: bool,
    /// The layer acted on this update on its own (a block, an unblock, a removal).
    consumed: bool,
}

enum Event {
    Interaction(UserId),
    Blocked(UserId),
    Unblocked(UserId),
    RemovedFromChat(teloxide::types::ChatId, Option<UserId>),
    Nothing,
}

fn classify(update: &Update, detect_blocks: bool) -> Event {
    if let UpdateKind::MyChatMember(m) = &update.kind {
        // The affected user is `from`; `new_chat_member.user` is the bot itself.
        let user = is_trackable(&m.from).then_some(m.from.id);
        if m.chat.is_private() {
            let Some(user) = user.filter(|u| m.chat.id.0 == u.0 as i64) else {
                return Event::Nothing;
            };
            if !detect_blocks {
                return Event::Nothing;
            }
            return match (&m.old_chat_member.kind, &m.new_chat_member.kind) {
                (_, ChatMemberKind::Banned(_)) => Event::Blocked(user),
                (ChatMemberKind::Banned(_), _) => Event::Unblocked(user),
                _ => Event::Interaction(user),
            };
        }
        if matches!(m.new_chat_member.kind, ChatMemberKind::Left | ChatMemberKind::Banned(_)) {
            return Event::RemovedFromChat(m.chat.id, user);
        }
    }
    match update.from() {
        Some(user) if is_trackable(user) => Event::Interaction(user.id),
        _ => Event::Nothing,
    }
}

/// Every update kind, in the Bot API's order.
const ALL_UPDATE_KINDS: [AllowedUpdate; 23] = {
    use AllowedUpdate::*;
    [
        Message,
        EditedMessage,
        ChannelPost,
        EditedChannelPost,
        BusinessConnection,
        BusinessMessage,
        EditedBusinessMessage,
        DeletedBusinessMessages,
        MessageReaction,
        MessageReactionCount,
        InlineQuery,
        ChosenInlineResult,
        CallbackQuery,
        ShippingQuery,
        PreCheckoutQuery,
        PurchasedPaidMedia,
        Poll,
        PollAnswer,
        MyChatMember,
        ChatMember,
        ChatJoinRequest,
        ChatBoost,
        RemovedChatBoost,
    ]
};

/// Fails to compile when teloxide adds an update kind, so that [`ALL_UPDATE_KINDS`] is
/// extended with it.
const fn _every_kind_is_listed(kind: AllowedUpdate) {
    use AllowedUpdate::*;
    match kind {
        Message
        | EditedMessage
        | ChannelPost
        | EditedChannelPost
        | BusinessConnection
        | BusinessMessage
        | EditedBusinessMessage
        | DeletedBusinessMessages
        | MessageReaction
        | MessageReactionCount
        | InlineQuery
        | ChosenInlineResult
        | CallbackQuery
        | ShippingQuery
        | PreCheckoutQuery
        | PurchasedPaidMedia
        | Poll
        | PollAnswer
        | MyChatMember
        | ChatMember
        | ChatJoinRequest
        | ChatBoost
        | RemovedChatBoost => {}
    }
}

/// The update kinds a description observes, read from its `Debug` output
/// (`DpHandlerDescription { allowed: InterestSet { observed: {Kind(Message), ...}, ... } }`);
/// `None` if that output has another shape.
fn allowed_updates_of(description: &DpHandlerDescription) -> Option<Vec<AllowedUpdate>> {
    let debug = format!("{description:?}");
    let start = debug.find("observed: {")? + "observed: {".len();
    let set = &debug[start..start + debug[start..].find('}')?];
    let mut kinds = Vec::new();
    for item in set.split(", ").filter(|item| !item.is_empty()) {
        let name = item.strip_prefix("Kind(")?.strip_suffix(')')?;
        kinds.push(*ALL_UPDATE_KINDS.iter().find(|kind| format!("{kind:?}") == name)?);
    }
    // In the Bot API's order, for stable output.
    kinds.sort_by_key(|kind| ALL_UPDATE_KINDS.iter().position(|k| k == kind));
    Some(kinds)
}

/// The description of a handler that observes the updates `filter` lets through and lets
/// everything continue: (observed = filter's kinds, filtered = all).
fn interest(filter: dptree::Handler<'static, (), DpHandlerDescription>) -> DpHandlerDescription {
    let observer = filter.endpoint(|| async {});
    DpHandlerDescription::entry().merge_branch(observer.description())
}

/// The wrapped handler's signature plus the layer's own obligations, so that the
/// dispatcher's start-up type check still covers the wrapped tree.
fn with_obligations(
    sig: &HandlerSignature,
    types: &[Type],
    location: &'static Location<'static>,
) -> HandlerSignature {
    let (mut obligations, guaranteed_outcomes, conditional_outcomes, continues) = match sig {
        HandlerSignature::Entry => (BTreeMap::new(), BTreeSet::new(), BTreeSet::new(), true),
        HandlerSignature::Other {
            obligations,
            guaranteed_outcomes,
            conditional_outcomes,
            continues,
        } => (
            obligations.clone(),
            guaranteed_outcomes.clone(),
            conditional_outcomes.clone(),
            *continues,
        ),
    };
    for ty in types {
        obligations.entry(*ty).or_insert(location);
    }
    HandlerSignature::Other { obligations, guaranteed_outcomes, conditional_outcomes, continues }
}
