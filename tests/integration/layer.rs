//! The layer, driven through a real teloxide `Dispatcher` with real update JSON.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use teloxide::RequestError;
use teloxide::dispatching::{Dispatcher, UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide::types::AllowedUpdate;
use teloxide_retention::{MemoryStore, Retention, RetentionExt};

use crate::common::{DAY, FakeBotApi, dispatch, updates as u};
use crate::every_store;
use crate::support::eventually;

/// A tree that handles the usual update kinds and counts what reaches it.
fn counting_tree(seen: Arc<AtomicUsize>) -> UpdateHandler<RequestError> {
    let count = move || {
        let seen = Arc::clone(&seen);
        move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }
    };
    dptree::entry()
        .branch(Update::filter_message().endpoint(count()))
        .branch(Update::filter_edited_message().endpoint(count()))
        .branch(Update::filter_callback_query().endpoint(count()))
        .branch(Update::filter_inline_query().endpoint(count()))
        .branch(Update::filter_channel_post().endpoint(count()))
        .branch(Update::filter_poll().endpoint(count()))
}

every_store! {
    async fn tracks_the_human_user_of_every_kind_of_update_and_nobody_else(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let updates = vec![
            u::message(1, "hello"),
            u::edited_message(2, "hello!"),
            u::callback(3, u::private_chat(3), "menu:open"),
            u::inline_query(4, "cats"),
            u::channel_post("news"),
            u::anonymous_admin_message("from the admins"),
            u::telegram_service_message("forwarded from the channel"),
            u::bot_message(999, "beep"),
            u::poll(),
        ];
        let n = updates.len();
        dispatch(&api, retention.wrap(counting_tree(Arc::clone(&seen))), updates).await;

        assert_eq!(seen.load(Ordering::SeqCst), n, "every update reaches the wrapped tree");
        for user in 1..=4 {
            assert!(retention.status(UserId(user)).await.unwrap().last_seen.is_some(), "user {user}");
        }
        for nobody in [999, 777_000, 1_087_968_824, 136_817_688] {
            assert_eq!(retention.status(UserId(nobody)).await.unwrap().last_seen, None, "{nobody}");
        }
        assert_eq!(retention.tracked_users().await.unwrap(), 4);
    }

    async fn records_the_interaction_before_the_wrapped_handler_runs(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        let checked = Arc::new(AtomicBool::new(false));
        let tree = Update::filter_message().endpoint({
            let retention = retention.clone();
            let checked = Arc::clone(&checked);
            move |msg: Message| {
                let retention = retention.clone();
                let checked = Arc::clone(&checked);
                async move {
                    let user = msg.from.unwrap().id;
                    let status = retention.status(user).await.unwrap();
                    assert!(status.last_seen.is_some(), "handler ran before the record was stored");
                    checked.store(true, Ordering::SeqCst);
                    Ok::<_, RequestError>(())
                }
            }
        });
        dispatch(&api, retention.wrap(tree), vec![u::message(31, "hi")]).await;
        assert!(checked.load(Ordering::SeqCst));
    }

    async fn one_write_per_user_per_resolution_however_many_updates(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let updates = (0..50).map(|i| u::message(40 + i % 5, "spam")).collect();
        dispatch(&api, retention.wrap(counting_tree(Arc::clone(&seen))), updates).await;
        assert_eq!(seen.load(Ordering::SeqCst), 50);
        assert_eq!(retention.stats().interactions_written, 5);
    }
}

async fn hints_of(handler: UpdateHandler<RequestError>) -> HashSet<AllowedUpdate> {
    let api = FakeBotApi::start().await;
    dispatch(&api, handler, Vec::new()).await
}

fn retention(
    build: impl FnOnce(teloxide_retention::RetentionBuilder) -> teloxide_retention::RetentionBuilder,
) -> Retention {
    build(Retention::builder(MemoryStore::new()).inactive_after(30 * DAY)).build().unwrap()
}

fn messages_only() -> UpdateHandler<RequestError> {
    Update::filter_message().endpoint(|| async { Ok(()) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_updates_are_the_trees_own_plus_what_enabled_features_need() {
    use AllowedUpdate::*;
    let set = |kinds: &[AllowedUpdate]| kinds.iter().copied().collect::<HashSet<_>>();

    assert_eq!(hints_of(messages_only()).await, set(&[Message]), "the bare tree");
    let tracking_only = retention(|b| b.without_commands().detect_blocks(false));
    assert_eq!(
        hints_of(tracking_only.wrap(messages_only())).await,
        set(&[Message]),
        "tracking never widens"
    );

    let blocks = retention(|b| b.without_commands());
    assert_eq!(hints_of(blocks.wrap(messages_only())).await, set(&[Message, MyChatMember]));

    let inline_tree: UpdateHandler<RequestError> = dptree::entry()
        .branch(Update::filter_inline_query().endpoint(|| async { Ok(()) }))
        .branch(Update::filter_chosen_inline_result().endpoint(|| async { Ok(()) }));
    let defaults = retention(|b| b);
    let hints = hints_of(defaults.wrap(inline_tree)).await;
    assert_eq!(
        hints,
        set(&[InlineQuery, ChosenInlineResult, MyChatMember, Message, CallbackQuery])
    );
    assert!(!hints.contains(&ChatMember), "never the flood of chat_member updates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allowed_updates_for_a_webhook_are_what_the_dispatcher_asks_polling_for() {
    use AllowedUpdate::*;
    let inline_tree = || -> UpdateHandler<RequestError> {
        dptree::entry()
            .branch(Update::filter_inline_query().endpoint(|| async { Ok(()) }))
            .branch(Update::filter_chosen_inline_result().endpoint(|| async { Ok(()) }))
    };
    let chat_members = || -> UpdateHandler<RequestError> {
        Update::filter_chat_member().endpoint(|| async { Ok(()) })
    };
    let defaults = retention(|b| b);
    let kinds = defaults.allowed_updates(&messages_only());
    assert_eq!(kinds, [Message, CallbackQuery, MyChatMember], "Bot API order, no duplicates");

    type Tree = fn() -> UpdateHandler<RequestError>;
    let cases: Vec<(Retention, Tree)> = vec![
        (retention(|b| b), messages_only),
        (retention(|b| b), inline_tree),
        (retention(|b| b), chat_members),
        (retention(|b| b.without_commands()), messages_only),
        (retention(|b| b.without_commands().detect_blocks(false)), inline_tree),
    ];
    for (i, (retention, tree)) in cases.into_iter().enumerate() {
        let kinds = retention.allowed_updates(&tree());
        let set: HashSet<_> = kinds.iter().copied().collect();
        assert_eq!(set.len(), kinds.len(), "case {i}: {kinds:?}");
        assert_eq!(set, hints_of(retention.wrap(tree())).await, "case {i}");
        assert_eq!(retention.allowed_updates(&retention.wrap(tree())), kinds, "case {i} wrapped");
    }
}

#[tokio::test]
#[should_panic(expected = "alloc::string::String")]
async fn the_dispatcher_still_type_checks_the_wrapped_tree() {
    let tree: UpdateHandler<RequestError> =
        Update::filter_message().endpoint(|_needs_a_string: String| async { Ok(()) });
    let wrapped = retention(|b| b).wrap(tree);
    let _ = Dispatcher::builder(Bot::new("1:x"), wrapped).build();
}

#[tokio::test]
#[should_panic(expected = "teloxide_core::bot::Bot")]
async fn wrap_for_a_bot_type_the_dispatcher_lacks_fails_at_start_up_naming_it() {
    use teloxide::adaptors::DefaultParseMode;
    use teloxide::types::ParseMode;
    let wrapped = retention(|b| b).wrap_for::<Bot, _>(messages_only());
    let bot: DefaultParseMode<Bot> = Bot::new("1:x").parse_mode(ParseMode::Html);
    let _ = Dispatcher::builder(bot, wrapped).build();
}

/// `wrap` serves a dispatcher of `Bot` and one of `Retained<Bot>` alike (before, the
/// adaptor's dispatcher panicked at start-up, "missing teloxide_core::bot::Bot"): the
/// privacy commands answer, and with the adaptor a failed send marks its recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_serves_a_plain_and_a_retained_bot_alike() {
    use teloxide_retention::{Retained, RetainedExt};
    let api = FakeBotApi::start().await;
    let retention = retention(|b| b);
    let tree = || -> UpdateHandler<RequestError> {
        Update::filter_message().endpoint(|bot: Retained<Bot>, msg: Message| async move {
            bot.send_message(msg.chat.id, "hi").await?;
            Ok(())
        })
    };
    let mut dispatcher =
        Dispatcher::builder(api.bot().retained(&retention), retention.wrap(tree())).build();
    api.fail_chat(8, 403, "Forbidden: bot was blocked by the user");
    let updates = vec![u::message(7, "/privacy"), u::message(8, "hello")];
    crate::common::dispatch_with(
        &mut dispatcher,
        updates,
        teloxide::error_handlers::LoggingErrorHandler::new(),
    )
    .await;
    assert!(api.last_text_to(7).is_some_and(|t| t.contains("deleted")), "{:?}", api.texts_to(7));
    let status = retention.status(teloxide::types::UserId(8)).await.unwrap();
    assert_eq!(status.erasure.map(|e| e.reason), Some(teloxide_retention::ErasureReason::Blocked));

    let plain = Update::filter_message().endpoint(|| async { Ok::<_, RequestError>(()) });
    dispatch(&api, retention.wrap(plain), vec![u::message(9, "/privacy")]).await;
    assert!(api.last_text_to(9).is_some_and(|t| t.contains("deleted")), "{:?}", api.texts_to(9));
}

/// Under a bot type it does not know (here `DefaultParseMode<Bot>`), `wrap` still starts
/// and tracks; the privacy commands cannot answer (an error is logged once) and go on to
/// the bot's own tree, which `wrap_for::<DefaultParseMode<Bot>, _>` would answer for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_under_another_adaptor_tracks_and_leaves_the_commands_to_the_tree() {
    use teloxide::adaptors::DefaultParseMode;
    use teloxide::types::ParseMode;
    let api = FakeBotApi::start().await;
    let retention = retention(|b| b);
    let seen = Arc::new(AtomicUsize::new(0));
    let tree = {
        let seen = Arc::clone(&seen);
        Update::filter_message().endpoint(move || {
            seen.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, RequestError>(()) }
        })
    };
    let bot: DefaultParseMode<Bot> = api.bot().parse_mode(ParseMode::Html);
    let mut dispatcher = Dispatcher::builder(bot, retention.wrap(tree)).build();
    let updates = vec![u::message(7, "/privacy")];
    let listener_errors = teloxide::error_handlers::LoggingErrorHandler::new();
    crate::common::dispatch_with(&mut dispatcher, updates, listener_errors).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1, "the tree got the command");
    assert!(api.texts_to(7).is_empty(), "the layer sent nothing: {:?}", api.texts_to(7));
    assert!(retention.status(teloxide::types::UserId(7)).await.unwrap().last_seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_extension_method_wraps_like_wrap() {
    let retention = retention(|b| b.without_commands());
    let wrapped = messages_only().with_retention(&retention);
    assert_eq!(hints_of(wrapped).await, hints_of(retention.wrap(messages_only())).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_the_wrapped_tree_lets_through_reach_the_next_branch_once() {
    let api = FakeBotApi::start().await;
    let retention = retention(|b| b.without_commands());
    let (handled, after) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let counter = |n: &Arc<AtomicUsize>| {
        let n = Arc::clone(n);
        move || {
            n.fetch_add(1, Ordering::SeqCst);
            async { Ok::<_, RequestError>(()) }
        }
    };
    let tree = Update::filter_message().endpoint(counter(&handled));
    let handler = dptree::entry()
        .branch(retention.wrap(tree))
        .branch(Update::filter_edited_message().endpoint(counter(&after)));
    dispatch(&api, handler, vec![u::message(61, "hi"), u::edited_message(62, "hi!")]).await;

    assert_eq!(handled.load(Ordering::SeqCst), 1, "the wrapped tree handled the message");
    assert_eq!(after.load(Ordering::SeqCst), 1, "the edit it let through went on, once");
    for user in [61, 62] {
        assert!(retention.status(UserId(user)).await.unwrap().last_seen.is_some(), "user {user}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_redis_is_down_updates_are_handled_and_recorded_once_it_is_back() {
    let mut env = crate::common::Env::redis();
    let api = FakeBotApi::start().await;
    let retention =
        env.builder().await.store_timeout(crate::common::OUTAGE_STORE_TIMEOUT).build().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let tree = || retention.wrap(counting_tree(Arc::clone(&seen)));
    dispatch(&api, tree(), vec![u::message(1, "before")]).await;

    env.redis_server().stop();
    let during: Vec<_> = (10..20).map(|user| u::message(user, "during the outage")).collect();
    dispatch(&api, tree(), during).await;
    assert_eq!(seen.load(Ordering::SeqCst), 11, "every update was handled");
    // A handler waits at most `store_timeout`: the last write may reach the backlog after.
    eventually("every interaction is buffered or dropped", || async {
        let stats = retention.stats();
        stats.buffered_users + stats.interactions_dropped == 10
    })
    .await;
    let stats = retention.stats();
    assert!(stats.interaction_write_failures >= 1, "{stats:?}");
    assert_eq!(stats.buffered_users, 10, "{stats:?}");
    assert_eq!(stats.interactions_dropped, 0);

    env.redis_server().restart();
    eventually("buffered interactions are written", || async {
        retention.stats().buffered_users == 0
    })
    .await;
    for user in 10..20 {
        let status = retention.status(UserId(user)).await.unwrap();
        assert!(status.last_seen.is_some(), "user {user} recorded after the outage");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_written_before_the_erasure_feed_could_be_read_are_not_served_from_the_cache() {
    // A replica that starts during an outage writes its buffered users before it knows where
    // the erasure feed stands; an erasure announced in between would pass it unseen, so
    // those users must not be served from its cache.
    let mut env = crate::common::Env::redis();
    let a = env.builder().await.store_timeout(crate::common::OUTAGE_STORE_TIMEOUT).build().unwrap();
    env.redis_server().stop();
    assert_eq!(a.note_interaction(UserId(5)).await, teloxide_retention::Noted::Buffered);
    env.redis_server().restart();
    eventually("the buffered user is written", || async { a.stats().buffered_users == 0 }).await;
    eventually("replica A reads the feed and drops what it cached before", || async {
        a.stats().cached_users == 0
    })
    .await;
    let b = env.builder().await.build().unwrap();
    b.erase_user(UserId(5)).await.unwrap();
    env.clock.advance(Duration::from_secs(5));
    assert_eq!(a.note_interaction(UserId(5)).await, teloxide_retention::Noted::Written);
    assert!(a.status(UserId(5)).await.unwrap().last_seen.is_some(), "tracked again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_drops_and_counts_further_users() {
    let mut env = crate::common::Env::redis();
    let retention = env
        .builder()
        .await
        .store_timeout(crate::common::OUTAGE_STORE_TIMEOUT)
        .max_buffered_interactions(3)
        .build()
        .unwrap();
    env.redis_server().stop();
    for user in 1..=5 {
        retention.note_interaction(UserId(user)).await;
    }
    // A handler waits at most `store_timeout`, the writer's own limit for the write it has in
    // flight: that write may reach the backlog just after the handler returned.
    eventually("every interaction is buffered or dropped", || async {
        let stats = retention.stats();
        stats.buffered_users + stats.interactions_dropped == 5
    })
    .await;
    let stats = retention.stats();
    assert_eq!((stats.buffered_users, stats.interactions_dropped), (3, 2), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_refuses_to_handle_updates_it_could_not_record() {
    let mut env = crate::common::Env::redis();
    let api = FakeBotApi::start().await;
    let retention = env
        .builder()
        .await
        .strict(true)
        .store_timeout(crate::common::OUTAGE_STORE_TIMEOUT)
        .build()
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let tree = || retention.wrap(counting_tree(Arc::clone(&seen)));

    env.redis_server().stop();
    dispatch(&api, tree(), vec![u::message(1, "refused"), u::message(2, "refused")]).await;
    assert_eq!(seen.load(Ordering::SeqCst), 0, "not handled without a record");
    assert_eq!(retention.stats().strict_refusals, 2);

    env.redis_server().restart();
    eventually("the store answers again", || async { retention.flush().await.is_ok() }).await;
    dispatch(&api, tree(), vec![u::message(3, "handled")]).await;
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert!(retention.status(UserId(3)).await.unwrap().last_seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_ends_at_the_layer_and_other_updates_reach_the_next_branch() {
    // What `Retention::wrap`'s docs say: an update the wrapped tree lets through reaches the
    // next branch; a block the tree does not handle ends at the layer (`on_gone` is the way
    // to react to it), so the dispatcher never logs it in full.
    let gone = Arc::new(AtomicUsize::new(0));
    let retention = Retention::builder(MemoryStore::new())
        .inactive_after(30 * DAY)
        .without_commands()
        .on_gone({
            let gone = Arc::clone(&gone);
            move |_, _| {
                gone.fetch_add(1, Ordering::SeqCst);
            }
        })
        .build()
        .unwrap();
    let sibling = Arc::new(AtomicUsize::new(0));
    let tree: UpdateHandler<RequestError> =
        Update::filter_edited_message().endpoint(|| async { Ok(()) });
    let handler = dptree::entry().branch(retention.wrap(tree)).branch(dptree::endpoint({
        let sibling = Arc::clone(&sibling);
        move || {
            sibling.fetch_add(1, Ordering::SeqCst);
            async { Ok(()) }
        }
    }));
    let api = FakeBotApi::start().await;
    dispatch(&api, handler, vec![u::message(5, "hi"), u::blocked(6)]).await;
    assert_eq!(
        sibling.load(Ordering::SeqCst),
        1,
        "the message reaches the next branch, the block does not"
    );
    assert_eq!(gone.load(Ordering::SeqCst), 1, "on_gone sees the block");
}

/// Telegram's service accounts, which must never be tracked whatever `is_bot` says (the
/// check on the id alone guards `note_interaction` and gone marks).
const SERVICE_IDS: [u64; 3] = [777_000, 1_087_968_824, 136_817_688];

every_store! {
    async fn service_accounts_are_never_tracked_nor_marked_whatever_is_bot_says(env) {
        let retention = env.builder().await.build().unwrap();
        let api = FakeBotApi::start().await;
        for id in SERVICE_IDS {
            for is_bot in [false, true] {
                let mut message = u::message(id, "hi");
                message["message"]["from"]["is_bot"] = serde_json::json!(is_bot);
                let mut block = u::blocked(id);
                block["my_chat_member"]["from"]["is_bot"] = serde_json::json!(is_bot);
                let tree: UpdateHandler<RequestError> = dptree::entry().endpoint(|| async { Ok(()) });
                dispatch(&api, retention.wrap(tree), vec![message, block]).await;
            }
            assert_eq!(retention.note_interaction(UserId(id)).await, teloxide_retention::Noted::Ignored);
            let marked = retention.mark_gone(UserId(id), teloxide_retention::GoneReason::Blocked);
            assert!(!marked.await.unwrap(), "{id} is not marked");
            // A failed send to the account's chat, through the adaptor, marks nobody.
            api.fail_chat(id as i64, 403, "Forbidden: bot was blocked by the user");
            let bot = teloxide_retention::RetainedExt::retained(api.bot(), &retention);
            assert!(bot.send_message(ChatId(id as i64), "x").await.is_err());
            let noted = retention.note_send_error(
                ChatId(id as i64),
                &RequestError::Api(teloxide::ApiError::BotBlocked),
            );
            assert_eq!(noted.await.unwrap(), None, "{id}");
            let status = retention.status(UserId(id)).await.unwrap();
            assert_eq!((status.last_seen, status.erasure), (None, None), "{id}");
        }
        retention.flush().await.unwrap();
        assert_eq!(retention.tracked_users().await.unwrap(), 0);
        assert_eq!(retention.stats().marked_gone, 0);
        // The same update from a human is tracked (the test sees the layer work).
        let tree: UpdateHandler<RequestError> = dptree::entry().endpoint(|| async { Ok(()) });
        dispatch(&api, retention.wrap(tree), vec![u::message(777_001, "hi")]).await;
        assert_eq!(retention.tracked_users().await.unwrap(), 1);
    }
}
