//! Gone users: blocks from real `my_chat_member` JSON, and send errors from a local server
//! answering like the Bot API, with a real `teloxide::Bot`.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use teloxide::RequestError;
use teloxide::adaptors::{CacheMe, DefaultParseMode, Throttle};
use teloxide::dispatching::{Dispatcher, UpdateFilterExt, UpdateHandler};
use teloxide::error_handlers::LoggingErrorHandler;
use teloxide::prelude::*;
use teloxide::types::ChatMemberUpdated;
use teloxide_retention::{
    ErasureReason, GonePolicy, GoneReason, NoteGone, Retained, RetainedExt, Retention,
};

use crate::common::bot_api::BOT_ID;
use crate::common::{DAY, Env, FakeBotApi, dispatch, updates as u};
use crate::every_store;
use crate::support::Recorder;

/// A bot whose handlers only take messages, and reply to each.
fn replying_tree() -> UpdateHandler<RequestError> {
    Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        bot.send_message(msg.chat.id, "got it").await?;
        Ok(())
    })
}

/// The same bot, with replies sent through the adaptor.
fn retained_replying_tree() -> UpdateHandler<RequestError> {
    Update::filter_message().endpoint(|bot: Retained<Bot>, msg: Message| async move {
        bot.send_message(msg.chat.id, "got it").await?;
        Ok(())
    })
}

/// An admin who blocked the bot.
const ADMIN: u64 = 9001;

/// Runs a real dispatcher whose bot is `Retained<Bot>` over `updates`.
async fn dispatch_retained<E>(
    api: &FakeBotApi,
    retention: &Retention,
    tree: UpdateHandler<E>,
    updates: Vec<serde_json::Value>,
) where
    E: std::fmt::Debug + Send + Sync + 'static,
{
    let handler = retention.wrap_for::<Retained<Bot>, _>(tree);
    let mut dispatcher = Dispatcher::builder(api.bot().retained(retention), handler).build();
    crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new()).await;
}

/// Dispatches `updates` through a dispatcher whose default handler (teloxide's would log each
/// update in full) only counts; returns how many reached it.
async fn dispatch_counting_unhandled(
    api: &FakeBotApi,
    handler: UpdateHandler<RequestError>,
    updates: Vec<serde_json::Value>,
) -> usize {
    let unhandled = Arc::new(AtomicUsize::new(0));
    let mut dispatcher = Dispatcher::builder(api.bot(), handler)
        .default_handler({
            let unhandled = Arc::clone(&unhandled);
            move |_| {
                unhandled.fetch_add(1, Ordering::SeqCst);
                async {}
            }
        })
        .build();
    crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new()).await;
    unhandled.load(Ordering::SeqCst)
}

fn reason_of(status: &teloxide_retention::UserStatus) -> Option<ErasureReason> {
    status.erasure.as_ref().map(|e| e.reason)
}

every_store! {
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

    async fn gone_and_returned_hooks_fire_once_per_event_and_reachability_follows(env) {
        let api = FakeBotApi::start().await;
        let gone = Arc::new(Mutex::new(Vec::new()));
        let returned = Arc::new(Mutex::new(Vec::new()));
        let retention = env
            .builder()
            .await
            .on_gone({
                let gone = Arc::clone(&gone);
                move |user, reason| gone.lock().unwrap().push((user.0, reason))
            })
            .on_returned({
                let returned = Arc::clone(&returned);
                move |user| returned.lock().unwrap().push(user.0)
            })
            .build()
            .unwrap();
        let hi = |users: &[u64]| users.iter().map(|user| u::message(*user, "hi")).collect();
        dispatch(&api, retention.wrap(replying_tree()), hi(&[1, 2, 3, 4])).await;
        env.clock.advance(DAY);

        // A block seen twice (a redelivered update), a failed send, a direct mark.
        dispatch(&api, retention.wrap(replying_tree()), vec![u::blocked(1), u::blocked(1)]).await;
        api.fail_chat(2, 403, "Forbidden: user is deactivated");
        let sent = api.bot().send_message(ChatId(2), "news").await;
        assert!(sent.note_gone(&retention, ChatId(2)).await.is_err());
        assert!(retention.mark_gone(UserId(3), GoneReason::Unreachable).await.unwrap());
        assert!(!retention.mark_gone(UserId(3), GoneReason::Unreachable).await.unwrap());
        assert_eq!(
            *gone.lock().unwrap(),
            [(1, GoneReason::Blocked), (2, GoneReason::Deactivated), (3, GoneReason::Unreachable)]
        );
        for (user, reachable) in [(1, false), (2, false), (3, false), (4, true), (999, true)] {
            assert_eq!(retention.is_reachable(UserId(user)).await.unwrap(), reachable, "{user}");
        }

        // User 1 unblocks: returned at once. User 2 writes again: reachable at once, and
        // returned when the pruner drops the mark instead of erasing them.
        env.clock.advance(DAY);
        dispatch(&api, retention.wrap(replying_tree()), vec![u::unblocked(1), u::message(2, "back")])
            .await;
        assert_eq!(*returned.lock().unwrap(), [1]);
        assert!(retention.is_reachable(UserId(1)).await.unwrap());
        assert!(retention.is_reachable(UserId(2)).await.unwrap());
        assert!(!retention.is_reachable(UserId(3)).await.unwrap());

        env.clock.advance(7 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.returned, report.erased_for(ErasureReason::Unreachable)), (1, 1), "{report:?}");
        assert_eq!(*returned.lock().unwrap(), [1, 2]);
        assert!(retention.status(UserId(2)).await.unwrap().last_seen.is_some(), "user 2 is kept");
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.returned, report.erased), (0, 0), "{report:?}");
        assert_eq!(gone.lock().unwrap().len(), 3, "each event once");
        assert_eq!(*returned.lock().unwrap(), [1, 2], "each event once");
    }

    async fn a_private_block_whose_sender_is_not_the_chats_user_marks_nobody(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        dispatch(&api, retention.wrap(replying_tree()), vec![u::message(40, "hi")]).await;
        dispatch(&api, retention.wrap(replying_tree()), vec![u::blocked_by_other(40, 41)]).await;
        assert_eq!(reason_of(&retention.status(UserId(40)).await.unwrap()), None);
        let other = retention.status(UserId(41)).await.unwrap();
        assert_eq!((other.last_seen, reason_of(&other)), (None, None), "not tracked either");
        assert_eq!(retention.stats().marked_gone, 0);
        // The well-formed block of the same chat marks its user.
        dispatch(&api, retention.wrap(replying_tree()), vec![u::blocked(40)]).await;
        let status = retention.status(UserId(40)).await.unwrap();
        assert_eq!(reason_of(&status), Some(ErasureReason::Blocked));
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

    async fn a_failed_reply_through_the_adaptor_marks_its_recipient(env) {
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
        dispatch_retained(&api, &retention, retained_replying_tree(), updates).await;
        for (user, _, description, expected) in cases {
            let status = retention.status(UserId(user as u64)).await.unwrap();
            assert_eq!(reason_of(&status), expected, "{description}");
        }
    }

    async fn a_handler_error_without_the_adaptor_marks_nobody(env) {
        // The failed request could have been for anyone; only the adaptor knows.
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        api.fail_chat(26, 403, "Forbidden: bot was blocked by the user");
        dispatch(&api, retention.wrap(replying_tree()), vec![u::message(26, "hi")]).await;
        assert_eq!(api.sent().iter().filter(|s| s.failed).count(), 1, "the reply really failed");
        assert_eq!(reason_of(&retention.status(UserId(26)).await.unwrap()), None);
        assert_eq!(retention.stats().marked_gone, 0);
    }

    async fn a_relay_to_a_blocked_admin_marks_the_admin_not_the_sender(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        api.fail_chat(ADMIN as i64, 403, "Forbidden: bot was blocked by the user");
        api.fail_chat(ADMIN as i64 + 1, 403, "Forbidden: user is deactivated");
        // A support bot: user messages are forwarded to one admin and copied to another; both
        // admins are gone, so both requests fail.
        let tree: UpdateHandler<RequestError> = Update::filter_message().endpoint(
            |bot: Retained<Bot>, msg: Message| async move {
                let forwarded = bot.forward_message(ChatId(ADMIN as i64), msg.chat.id, msg.id).await;
                let copied = bot.copy_message(ChatId(ADMIN as i64 + 1), msg.chat.id, msg.id).await;
                assert!(forwarded.is_err() && copied.is_err());
                bot.send_message(msg.chat.id, "sent to support").await?;
                Ok(())
            },
        );
        dispatch_retained(&api, &retention, tree, vec![u::message(71, "help me")]).await;

        let forward_admin = retention.status(UserId(ADMIN)).await.unwrap();
        assert_eq!(reason_of(&forward_admin), Some(ErasureReason::Blocked));
        let copy_admin = retention.status(UserId(ADMIN + 1)).await.unwrap();
        assert_eq!(reason_of(&copy_admin), Some(ErasureReason::Deactivated));
        let sender = retention.status(UserId(71)).await.unwrap();
        assert_eq!(reason_of(&sender), None, "the sender is active, never marked");
        assert!(sender.last_seen.is_some());
        assert_eq!(retention.stats().marked_gone, 2);
    }

    async fn failures_for_channels_groups_and_source_chats_mark_nobody(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        const WRONG_GROUP: i64 = -1_005_555_555_555;
        api.fail_chat(u::CHANNEL, 403, "Forbidden: bot is not a member of the channel chat");
        api.fail_chat(WRONG_GROUP, 400, "Bad Request: chat not found");
        api.fail_chat(u::GROUP, 403, "Forbidden: bot was kicked from the supergroup chat");
        // User 73 is gone, but is only the *source* of a forward and a copy to user 74.
        api.fail_chat(73, 400, "Bad Request: chat not found");
        let tree: UpdateHandler<RequestError> = Update::filter_message().endpoint(
            |bot: Retained<Bot>, msg: Message| async move {
                let _ = bot.send_message(ChatId(u::CHANNEL), "post").await;
                let _ = bot.send_message(ChatId(WRONG_GROUP), "hello group").await;
                let _ = bot.send_message(ChatId(u::GROUP), "hello").await;
                let _ = bot.forward_message(ChatId(74), ChatId(73), msg.id).await;
                let _ = bot.copy_message(ChatId(74), ChatId(73), msg.id).await;
                Ok(())
            },
        );
        let updates = vec![u::message(72, "go"), u::group_message(75, "go")];
        dispatch_retained(&api, &retention, tree, updates).await;
        assert_eq!(api.sent().iter().filter(|s| s.failed).count(), 10, "every request failed");
        for user in [72, 73, 74, 75] {
            assert_eq!(reason_of(&retention.status(UserId(user)).await.unwrap()), None, "{user}");
        }
        assert_eq!(retention.stats().marked_gone, 0);
    }

    async fn an_anyhow_handler_tree_marks_the_blocked_recipient(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        api.fail_chat(31, 403, "Forbidden: bot was blocked by the user");
        let tree: UpdateHandler<anyhow::Error> = Update::filter_message().endpoint(
            |bot: Retained<Bot>, msg: Message| async move {
                bot.send_message(msg.chat.id, "got it").await?;
                Ok(())
            },
        );
        dispatch_retained(&api, &retention, tree, vec![u::message(31, "hi")]).await;
        let status = retention.status(UserId(31)).await.unwrap();
        assert_eq!(reason_of(&status), Some(ErasureReason::Blocked));
    }

    async fn a_block_reaches_a_sibling_branch_after_the_layer_once(env) {
        let api = FakeBotApi::start().await;
        let retention = env.builder().await.build().unwrap();
        let audited = Arc::new(AtomicUsize::new(0));
        // The audit branch handles user 62's block and leaves user 63's alone.
        let audit: UpdateHandler<RequestError> = Update::filter_my_chat_member()
            .filter(|update: ChatMemberUpdated| update.from.id == UserId(62))
            .endpoint({
                let audited = Arc::clone(&audited);
                move || {
                    audited.fetch_add(1, Ordering::SeqCst);
                    async { Ok(()) }
                }
            });
        // The sibling follows the layer in its continuation (dptree gives a handler that is
        // itself the `next` of a branch no way to reach the branches after it).
        let handler = dptree::entry().branch(retention.wrap(replying_tree()).branch(audit));
        let unhandled =
            dispatch_counting_unhandled(&api, handler, vec![u::blocked(62), u::blocked(63)]).await;
        assert_eq!(audited.load(Ordering::SeqCst), 1, "the sibling branch saw the block once");
        assert_eq!(unhandled, 0, "user 63's block is not dumped either");
        for user in [62, 63] {
            let status = retention.status(UserId(user)).await.unwrap();
            assert_eq!(reason_of(&status), Some(ErasureReason::Blocked), "{user}");
        }
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
            retention.note_interaction(UserId(user)).await;
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
        // No `note_gone`: the adapted bot knows each request's recipient.
        let bot = api.bot().retained(&retention);
        let failures = futures_util::stream::iter(1..=1000u64)
            .map(|user| {
                let bot = bot.clone();
                async move { bot.send_message(ChatId(user as i64), "news").await.is_err() }
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
    let updates = vec![u::blocked(51), u::message(51, "/start"), u::poll()];
    let unhandled =
        dispatch_counting_unhandled(&api, retention.wrap(replying_tree()), updates).await;
    assert_eq!(unhandled, 1, "only the poll, which nobody handles");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_signals_during_a_redis_outage_are_marked_once_it_is_back() {
    let mut env = crate::common::Env::redis();
    let api = FakeBotApi::start().await;
    let gone = Arc::new(Mutex::new(Vec::new()));
    let retention = env
        .builder()
        .await
        .store_timeout(crate::common::OUTAGE_STORE_TIMEOUT)
        .on_gone({
            let gone = Arc::clone(&gone);
            move |user, _| gone.lock().unwrap().push(user.0)
        })
        .build()
        .unwrap();
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
    dispatch_retained(&api, &retention, retained_replying_tree(), during).await;
    let sent = api.bot().send_message(ChatId(9), "news").await;
    assert!(sent.note_gone(&retention, ChatId(9)).await.is_err());
    assert_eq!(retention.stats().buffered_gone_marks, 4, "{:?}", retention.stats());
    env.clock.advance(Duration::from_secs(60));
    dispatch(&api, retention.wrap(replying_tree()), vec![u::unblocked(8)]).await;
    assert_eq!(retention.stats().buffered_gone_marks, 3, "the unblock dropped user 8's mark");
    assert!(gone.lock().unwrap().is_empty(), "on_gone waits for the store");
    assert!(!retention.is_reachable(UserId(7)).await.unwrap(), "a kept mark counts");

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
    gone.lock().unwrap().sort_unstable();
    assert_eq!(*gone.lock().unwrap(), [5, 7, 9], "each written mark once, not user 8's");
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
        .store_timeout(crate::common::OUTAGE_STORE_TIMEOUT)
        .max_buffered_interactions(2)
        .build()
        .unwrap();
    env.redis_server().stop();
    let blocks = (1..=3).map(u::blocked).collect();
    dispatch(&api, retention.wrap(replying_tree()), blocks).await;
    let stats = retention.stats();
    assert_eq!((stats.buffered_gone_marks, stats.gone_marks_dropped), (2, 1), "{stats:?}");
}

/// Dispatches, through a dispatcher whose bot is `$ty`, `/privacy` from one user and a
/// message from a user who blocked the bot; the reply to the second marks them.
macro_rules! adaptor_stack_case {
    ($name:ident: $ty:ty = $make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let env = crate::common::Env::memory();
            let api = FakeBotApi::start().await;
            let retention = env.bare_builder().await.inactive_after(30 * DAY).build().unwrap();
            api.fail_chat(82, 403, "Forbidden: bot was blocked by the user");
            let tree: UpdateHandler<RequestError> =
                Update::filter_message().endpoint(|bot: $ty, msg: Message| async move {
                    bot.send_message(msg.chat.id, "got it").await?;
                    Ok(())
                });
            let make: fn(Bot, &Retention) -> $ty = $make;
            let bot = make(api.bot(), &retention);
            let handler = retention.wrap_for::<$ty, _>(tree);
            let mut dispatcher = Dispatcher::builder(bot, handler).build();
            let updates = vec![u::message(81, "/privacy"), u::message(82, "hi")];
            crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new())
                .await;

            let answers = api.sent_to("sendmessage", 81);
            assert_eq!(answers.len(), 1, "the privacy command answered");
            assert!(answers[0].text().unwrap().starts_with("How this bot handles your data"));
            assert_eq!(answers[0].body["parse_mode"], "HTML", "through DefaultParseMode");
            let status = retention.status(UserId(82)).await.unwrap();
            assert_eq!(reason_of(&status), Some(ErasureReason::Blocked));
        }
    };
}

adaptor_stack_case!(throttle_over_retained_with_parse_mode:
DefaultParseMode<Throttle<Retained<Bot>>> = |bot, retention| {
    bot.retained(retention).throttle(Default::default()).parse_mode(teloxide::types::ParseMode::Html)
});

adaptor_stack_case!(retained_over_throttle_with_parse_mode:
Retained<DefaultParseMode<Throttle<Bot>>> = |bot, retention| {
    bot.throttle(Default::default()).parse_mode(teloxide::types::ParseMode::Html).retained(retention)
});

adaptor_stack_case!(retained_between_cache_me_and_parse_mode:
CacheMe<Retained<DefaultParseMode<Bot>>> = |bot, retention| {
    bot.parse_mode(teloxide::types::ParseMode::Html).retained(retention).cache_me()
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn is_reachable_answers_from_marks_kept_in_memory_during_an_outage() {
    let mut env = Env::redis();
    let retention = env
        .bare_builder()
        .await
        .inactive_after(30 * DAY)
        .without_commands()
        .store_timeout(crate::common::OUTAGE_STORE_TIMEOUT)
        .build()
        .unwrap();
    retention.note_interaction(UserId(5)).await;
    retention.flush().await.unwrap();
    env.redis_server().stop();
    // The block arrives while Redis is down: the mark waits in memory.
    let api = FakeBotApi::start().await;
    let tree: UpdateHandler<RequestError> = dptree::entry().endpoint(|| async { Ok(()) });
    dispatch(&api, retention.wrap(tree), vec![u::blocked(5)]).await;
    assert_eq!(retention.stats().buffered_gone_marks, 1);
    assert!(!retention.is_reachable(UserId(5)).await.unwrap(), "answered from memory");
    // Nothing in memory about another user: the store must answer, and cannot.
    assert!(retention.is_reachable(UserId(6)).await.unwrap_err().is_unavailable());
    env.redis_server().restart();
}
