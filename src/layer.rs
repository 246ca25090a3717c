//! The dptree layer: one call wraps a bot's whole handler tree.
use std::collections::{BTreeMap, BTreeSet};
use std::ops::ControlFlow;
use std::panic::Location;
use std::sync::Arc;

use dptree::di::DependencyMap;
use dptree::{HandlerDescription, HandlerSignature, Type};
use teloxide::RequestError;
use teloxide::dispatching::{DpHandlerDescription, UpdateFilterExt, UpdateHandler};
use teloxide::prelude::Requester;
use teloxide::types::{AllowedUpdate, ChatMemberKind, Me, Update, UpdateKind, UserId};

use crate::commands::{Commands, Flows};
use crate::humans::is_trackable;
use crate::parts::Parts;
use crate::stats::Counters;
use crate::store::Budget;
use crate::tracker::Noted;

/// A privacy command's answer in progress: whether the layer handled the update. Boxed:
/// the rare path stays out of the per-update future.
type Answer<'a> = futures_util::future::BoxFuture<'a, bool>;

/// The layer: what it needs from the shared parts (the tracker, configuration, hooks) and the
/// privacy commands, shared by every update's run.
#[derive(Clone)]
pub(crate) struct Layer {
    parts: Arc<Parts>,
    commands: Option<Arc<Commands>>,
}

impl Layer {
    pub(crate) fn new(parts: Arc<Parts>, commands: Option<Arc<Commands>>) -> Self {
        Self { parts, commands }
    }

    /// Wraps `handler` for a dispatcher whose bot is `R`, which it requires; see
    /// `Retention::wrap_for`.
    #[track_caller]
    pub(crate) fn wrap_for<R, E>(&self, handler: UpdateHandler<E>) -> UpdateHandler<E>
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
        E: Send + Sync + 'static,
    {
        fn run<'a, R>(layer: &'a Layer, update: &'a Update, deps: &'a DependencyMap) -> Answer<'a>
        where
            R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
        {
            Box::pin(layer.run_command::<R>(update, deps))
        }
        self.wrap_with(handler, Some(Type::of::<R>()), run::<R>)
    }

    /// Wraps `handler` for a dispatcher whose bot is `teloxide::Bot` or `Retained<Bot>`,
    /// whichever it provides; see `Retention::wrap`.
    #[track_caller]
    pub(crate) fn wrap_bot<E>(&self, handler: UpdateHandler<E>) -> UpdateHandler<E>
    where
        E: Send + Sync + 'static,
    {
        fn run<'a>(layer: &'a Layer, update: &'a Update, deps: &'a DependencyMap) -> Answer<'a> {
            Box::pin(async move {
                if deps.try_get::<teloxide::Bot>().is_some() {
                    return layer.run_command::<teloxide::Bot>(update, deps).await;
                }
                if deps.try_get::<crate::Retained<teloxide::Bot>>().is_some() {
                    return layer.run_command::<crate::Retained<teloxide::Bot>>(update, deps).await;
                }
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::error!(
                        "the dispatcher's bot is neither teloxide::Bot nor Retained<Bot>: the \
                         privacy commands cannot answer; wrap the tree with \
                         Retention::wrap_for::<YourBotType, _>"
                    );
                });
                false
            })
        }
        self.wrap_with(handler, None, run)
    }

    /// Wraps `handler`, answering the privacy commands with `answer`, which needs the bot
    /// type `bot` (checked when the dispatcher is built) if it is given.
    #[track_caller]
    fn wrap_with<E>(
        &self,
        handler: UpdateHandler<E>,
        bot: Option<Type>,
        answer: for<'a> fn(&'a Layer, &'a Update, &'a DependencyMap) -> Answer<'a>,
    ) -> UpdateHandler<E>
    where
        E: Send + Sync + 'static,
    {
        let location = Location::caller();
        let commands = self.commands.is_some();
        let description = self.description(handler.description());
        let mut obligations = vec![Type::of::<Update>()];
        if commands {
            obligations.extend(bot);
            obligations.push(Type::of::<Me>());
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
                    // The store time this update may wait for in all (see `Budget`), made
                    // only where the store is called.
                    let mut budget = None;
                    let mut budget = || {
                        budget
                            .get_or_insert_with(|| Budget::new(layer.parts.config.store_timeout))
                            .clone()
                    };
                    let observed = match classify(&update, layer.parts.config.detect_blocks) {
                        Event::Nothing => Observed::default(),
                        Event::Interaction(user)
                            if layer.parts.tracker.note_interaction_cached(user.0) =>
                        {
                            Observed::default()
                        }
                        event => Box::pin(budget().scope(layer.observe(event))).await,
                    };
                    if observed.refuse {
                        return ControlFlow::Break(Ok(()));
                    }
                    if layer.commands.as_ref().is_some_and(|c| c.may_handle(&update))
                        && budget().scope(answer(&layer, &update, &deps)).await
                    {
                        return ControlFlow::Break(Ok(()));
                    }
                    match inner.execute(deps, pass_through).await {
                        // What is chained after the layer gets it next; a sibling branch
                        // gets what the layer returns.
                        ControlFlow::Continue(deps) => match cont(deps).await {
                            // Nobody handled an update the layer acted on (a block): mark
                            // it handled, so that the dispatcher's default handler does not
                            // log the whole update (a privacy leak). Sibling branches do not
                            // see it (`Retention::wrap` says so).
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

    /// See `Retention::allowed_updates`.
    pub(crate) fn allowed_updates<E: 'static>(
        &self,
        handler: &UpdateHandler<E>,
    ) -> Vec<AllowedUpdate> {
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
        if self.parts.config.detect_blocks || self.parts.hooks.removed_from_chat.is_some() {
            interests.push(interest(Update::filter_my_chat_member()));
        }
        if self.commands.is_some() {
            interests.push(interest(Update::filter_message()));
            interests.push(interest(Update::filter_callback_query()));
        }
        // Each interest observes one update kind and lets everything through, so chaining
        // it before the wrapped tree adds that kind and keeps the tree's own set and
        // filtering.
        interests.into_iter().fold(tree.clone(), |tree, interest| interest.merge_chain(&tree))
    }

    /// Answers the update if it is a privacy command or one of its buttons.
    async fn run_command<R>(&self, update: &Update, deps: &DependencyMap) -> bool
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let Some(commands) = &self.commands else { return false };
        Flows { parts: &self.parts, commands }.run::<R>(update, deps).await
    }

    /// Records what an update says about its user.
    async fn observe(&self, event: Event) -> Observed {
        match event {
            Event::Interaction(user) => self.interaction(user).await,
            Event::Blocked(user) => {
                self.parts.tracker.mark_gone_or_keep(user, crate::GoneReason::Blocked).await;
                Observed { refuse: false, consumed: true }
            }
            Event::Unblocked(user) => {
                // Together: a hung store holds the update once, not once per call.
                let (_, observed) =
                    tokio::join!(self.parts.tracker.user_returned(user), self.interaction(user));
                Observed { consumed: true, ..observed }
            }
            Event::RemovedFromChat(chat, performer) => {
                self.parts.hooks.removed_from_chat(chat);
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
        let strict = self.parts.config.strict;
        let recorded = self.parts.note_interaction(user.0).await;
        let refuse = strict && !recorded.is_stored();
        if refuse {
            Counters::add(&self.parts.counters.strict_refusals, 1);
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
