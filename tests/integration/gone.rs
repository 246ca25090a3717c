//! Gone users: blocks from real `my_chat_member` JSON, and send errors from a local server
//! answering like the Bot API, with a real `teloxide::Bot`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use teloxide::RequestError;
use teloxide::dispatching::{Dispatcher, UpdateFilterExt, UpdateHandler};
use teloxide::error_handlers::LoggingErrorHandler;
use teloxide::prelude::*;
use teloxide::types::ChatMemberUpdated;
use teloxide_retention::{ErasureReason, GonePolicy, NoteGone};

use crate::both_stores;
use crate::common::bot_api::BOT_ID;
use crate::common::{DAY, FakeBotApi, dispatch, updates as u};
use crate::support::Recorder;

/// A bot whose handlers only take messages, and reply to each.
fn replying_tree() -> UpdateHandler<RequestError> {
    Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        bot.send_message(msg.chat.id, "got it").await?;
        Ok(())
    })
}

fn reason_of(status: &teloxide_retention::UserStatus) -> Option<ErasureReason> {
    status.erasure.as_ref().map(|e| e.reason)
}

both_stores! {
    async fn a_block_marks_the_user_gone_and_an_unblock_cancels_it(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        dispatch(&api, retention.wrap(replying_tree()), vec![u::message(1, "hi")]).await;
        env.clock.advance(DAY);

        // The tree only takes messages; the layer still sees the block.
        dispatch(&api, retention.wrap(replying_tree()), vec![u::blocked(1)]).await;
        let status = retention.status(UserId(1)).await.unwrap();
        assert_eq!(reason_of(&status), Some(ErasureReason::Blocked));
        assert_eq!(
            status.last_seen.unwrap().timestamp_millis(),
            crate::common::T0,
            "a block is not an interaction"
        );
        // `new_chat_member.user` is the bot itself: never touched.
        let bot = retention.status(UserId(BOT_ID)).await.unwrap();
        assert_eq!((bot.last_seen, bot.erasure), (None, None));

        env.clock.advance(DAY);
        dispatch(&api, retention.wrap(replying_tree()), vec![u::unblocked(1)]).await;
        let status = retention.status(UserId(1)).await.unwrap();
        assert_eq!(reason_of(&status), None, "unblocking cancels the erasure");
        assert_eq!(
            status.last_seen.unwrap().timestamp_millis(),
            crate::common::T0 + 2 * DAY.as_millis() as i64,
            "unblocking is an interaction"
        );
        env.clock.advance(8 * DAY);
        assert_eq!(retention.prune_once().await.unwrap().claimed, 0);
    }

    async fn a_block_still_reaches_a_tree_that_handles_it(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        let seen = Arc::new(AtomicUsize::new(0));
        let tree: UpdateHandler<RequestError> = Update::filter_my_chat_member().endpoint({
            let seen = Arc::clone(&seen);
            move |update: ChatMemberUpdated| {
                assert_eq!(update.from.id, UserId(61));
                seen.fetch_add(1, Ordering::SeqCst);
                async { Ok(()) }
            }
        });
        dispatch(&api, retention.wrap(tree), vec![u::blocked(61)]).await;
        assert_eq!(seen.load(Ordering::SeqCst), 1, "the layer does not consume the update");
        let status = retention.status(UserId(61)).await.unwrap();
        assert_eq!(reason_of(&status), Some(ErasureReason::Blocked));
    }

    async fn a_blocking_user_is_erased_after_the_grace_period_with_the_reason(env) {
        let api = FakeBotApi::start().await;
        let eraser = Recorder::new("profiles");
        let reasons = Arc::new(Mutex::new(Vec::new()));
        let retention = env
            .builder()
            .await
            .erase_with(eraser.clone())
            .on_erased({
                let reasons = Arc::clone(&reasons);
                move |e| reasons.lock().unwrap().push((e.user.0, e.reason))
            })
            .build()
            .unwrap();
        dispatch(&api, retention.wrap(replying_tree()), vec![u::message(2, "hi"), u::blocked(2)]).await;

        let document = retention.export(UserId(2)).await.unwrap();
        assert_eq!(document["retention"]["status"], "gone");
        assert_eq!(document["retention"]["erasure"]["reason"], "blocked");

        env.clock.advance(7 * DAY + Duration::from_secs(61));
        let preview = retention.preview(10).await.unwrap();
        assert_eq!(preview.users.len(), 1);
        assert_eq!((preview.users[0].user, preview.users[0].reason), (UserId(2), ErasureReason::Blocked));
        retention.prune_once().await.unwrap();
        assert_eq!(eraser.reasons(2), [ErasureReason::Blocked]);
        assert_eq!(*reasons.lock().unwrap(), [(2, ErasureReason::Blocked)]);
        assert_eq!(retention.stats().erased_for(ErasureReason::Blocked), 1);
    }

    async fn the_bot_leaving_a_group_is_not_its_users_leaving(env) {
        let api = FakeBotApi::start().await;
        let removed = Arc::new(Mutex::new(Vec::new()));
        let retention = env
            .builder()
            .await
            .on_removed_from_chat({
                let removed = Arc::clone(&removed);
                move |chat| removed.lock().unwrap().push(chat)
            })
            .build()
            .unwrap();
        let updates = vec![u::group_message(5, "hi all"), u::group_message(6, "hey")];
        dispatch(&api, retention.wrap(replying_tree()), updates).await;
        dispatch(&api, retention.wrap(replying_tree()), vec![u::bot_kicked_from_group(5)]).await;

        assert_eq!(*removed.lock().unwrap(), [ChatId(u::GROUP)]);
        for user in [5, 6, BOT_ID] {
            assert_eq!(reason_of(&retention.status(UserId(user)).await.unwrap()), None, "{user}");
        }
        assert_eq!(retention.stats().marked_gone, 0);
    }

    async fn a_handlers_failed_send_marks_its_user_gone(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        let cases = [
            (21, 403, "Forbidden: bot was blocked by the user", Some(ErasureReason::Blocked)),
            (22, 403, "Forbidden: user is deactivated", Some(ErasureReason::Deactivated)),
            (23, 400, "Bad Request: chat not found", Some(ErasureReason::Unreachable)),
            (24, 403, "Forbidden: bot can't initiate conversation with a user", Some(ErasureReason::Unreachable)),
            (25, 429, "Too Many Requests: retry after 3", None),
            (27, 400, "Bad Request: message text is empty", None),
        ];
        for (user, status, description, _) in cases {
            api.fail_chat(user, status, description);
        }
        let updates = cases.iter().map(|(user, ..)| u::message(*user as u64, "hi")).collect();
        dispatch(&api, retention.wrap(replying_tree()), updates).await;
        for (user, _, description, expected) in cases {
            let status = retention.status(UserId(user as u64)).await.unwrap();
            assert_eq!(reason_of(&status), expected, "{description}");
        }
    }

    async fn boxed_handler_errors_are_recognised_too(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        api.fail_chat(31, 403, "Forbidden: bot was blocked by the user");
        // teloxide's own `HandlerResult` boxes the error.
        let tree: UpdateHandler<Box<dyn std::error::Error + Send + Sync>> =
            Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
                bot.send_message(msg.chat.id, "got it").await?;
                Ok(())
            });
        dispatch(&api, retention.wrap(tree), vec![u::message(31, "hi")]).await;
        let status = retention.status(UserId(31)).await.unwrap();
        assert_eq!(reason_of(&status), Some(ErasureReason::Blocked));
    }

    async fn a_failed_send_in_a_group_marks_nobody(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        api.fail_chat(u::GROUP, 403, "Forbidden: bot was kicked from the supergroup chat");
        dispatch(&api, retention.wrap(replying_tree()), vec![u::group_message(41, "hi")]).await;
        assert_eq!(reason_of(&retention.status(UserId(41)).await.unwrap()), None);
    }

    async fn a_broadcast_marks_exactly_the_users_who_are_gone(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.gone_policy(GonePolicy::EraseNow).build().unwrap();
        let gone_descriptions = [
            (403, "Forbidden: bot was blocked by the user", ErasureReason::Blocked),
            (403, "Forbidden: user is deactivated", ErasureReason::Deactivated),
            (400, "Bad Request: chat not found", ErasureReason::Unreachable),
            (403, "Forbidden: bot can't initiate conversation with a user", ErasureReason::Unreachable),
        ];
        let mut expected = BTreeMap::new();
        for user in 1..=1000u64 {
            retention.record(UserId(user)).await;
            if user % 10 == 0 {
                let (status, description, reason) = gone_descriptions[(user / 10) as usize % 4];
                api.fail_chat(user as i64, status, description);
                expected.insert(user, reason);
            } else if user % 10 == 3 {
                api.fail_chat(user as i64, 429, "Too Many Requests: retry after 3");
            } else if user % 100 == 7 {
                // teloxide waits 10 s after a server error; these ten run in one wave.
                api.fail_chat(user as i64, 502, "Bad Gateway");
            }
        }
        let bot = api.bot();
        let failures = futures_util::stream::iter(1..=1000u64)
            .map(|user| {
                let bot = bot.clone();
                let retention = retention.clone();
                async move {
                    let chat = ChatId(user as i64);
                    bot.send_message(chat, "news").await.note_gone(&retention, chat).await.is_err()
                }
            })
            .buffer_unordered(64)
            .filter(|failed| std::future::ready(*failed))
            .count()
            .await;
        assert_eq!(failures, 210, "the fake really failed 100 gone + 110 transient sends");

        let preview = retention.preview(2000).await.unwrap();
        let marked: BTreeMap<u64, ErasureReason> =
            preview.users.iter().filter(|e| e.reason.is_gone()).map(|e| (e.user.0, e.reason)).collect();
        assert_eq!(marked, expected);
        assert_eq!(retention.stats().marked_gone, 100);

        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased, 100);
        assert_eq!(retention.tracked_users().await.unwrap(), 900);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_only_the_layer_acted_on_is_not_dumped_by_the_default_handler() {
    let env = crate::common::Env::memory();
    let api = FakeBotApi::start().await;
    let retention = env.builder().await.build().unwrap();
    let unhandled = Arc::new(AtomicUsize::new(0));
    let updates = vec![u::blocked(51), u::message(51, "/start"), u::poll()];
    let mut dispatcher = Dispatcher::builder(api.bot(), retention.wrap(replying_tree()))
        .default_handler({
            let unhandled = Arc::clone(&unhandled);
            move |_| {
                unhandled.fetch_add(1, Ordering::SeqCst);
                async {}
            }
        })
        .build();
    crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new()).await;
    assert_eq!(unhandled.load(Ordering::SeqCst), 1, "only the poll, which nobody handles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_signals_during_a_redis_outage_are_marked_once_it_is_back() {
    let mut env = crate::common::Env::redis();
    let api = FakeBotApi::start().await;
    let retention = env.builder().await.store_timeout(Duration::from_millis(300)).build().unwrap();
    let before: Vec<_> = [5, 8, 9].into_iter().map(|user| u::message(user, "hi")).collect();
    dispatch(&api, retention.wrap(replying_tree()), before).await;
    api.fail_chat(7, 403, "Forbidden: bot was blocked by the user");
    api.fail_chat(9, 403, "Forbidden: user is deactivated");
    env.clock.advance(DAY);
    let marked_at = crate::common::T0 + DAY.as_millis() as i64;

    env.redis_server().stop();
    // A block, a handler's failed reply, a failed broadcast send, and a block undone by an
    // unblock a minute later: all while Redis is down.
    let during = vec![u::blocked(5), u::message(7, "hi"), u::blocked(8)];
    dispatch(&api, retention.wrap(replying_tree()), during).await;
    let sent = api.bot().send_message(ChatId(9), "news").await;
    assert!(sent.note_gone(&retention, ChatId(9)).await.is_err());
    assert_eq!(retention.stats().buffered_gone_marks, 4, "{:?}", retention.stats());
    env.clock.advance(Duration::from_secs(60));
    dispatch(&api, retention.wrap(replying_tree()), vec![u::unblocked(8)]).await;
    assert_eq!(retention.stats().buffered_gone_marks, 3, "the unblock dropped user 8's mark");

    env.redis_server().restart();
    crate::support::eventually("kept marks and interactions are written", || async {
        let stats = retention.stats();
        stats.buffered_gone_marks == 0 && stats.buffered_users == 0
    })
    .await;
    for (user, reason) in
        [(5, ErasureReason::Blocked), (7, ErasureReason::Blocked), (9, ErasureReason::Deactivated)]
    {
        let status = retention.status(UserId(user)).await.unwrap();
        let erasure = status.erasure.unwrap_or_else(|| panic!("user {user} is marked"));
        assert_eq!(erasure.reason, reason, "user {user}");
        assert_eq!(erasure.marked_at.unwrap().timestamp_millis(), marked_at, "original time");
    }
    let returned = retention.status(UserId(8)).await.unwrap();
    assert_eq!(returned.erasure, None, "user 8 unblocked");
    assert_eq!(retention.stats().marked_gone, 3);
    assert_eq!(retention.stats().gone_marks_dropped, 0);

    // The grace period runs from the block, not from the end of the outage.
    env.clock.advance(7 * DAY);
    let report = retention.prune_once().await.unwrap();
    assert_eq!(report.erased, 3, "{report:?}");
    assert!(retention.status(UserId(8)).await.unwrap().last_seen.is_some(), "user 8 is kept");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_marks_beyond_the_buffer_are_dropped_and_counted() {
    let mut env = crate::common::Env::redis();
    let api = FakeBotApi::start().await;
    let retention = env
        .builder()
        .await
        .store_timeout(Duration::from_millis(300))
        .max_buffered_touches(2)
        .build()
        .unwrap();
    env.redis_server().stop();
    let blocks = (1..=3).map(u::blocked).collect();
    dispatch(&api, retention.wrap(replying_tree()), blocks).await;
    let stats = retention.stats();
    assert_eq!((stats.buffered_gone_marks, stats.gone_marks_dropped), (2, 1), "{stats:?}");
}
