//! The crate under `teloxide_tests` 0.4, the community's mock Bot API for teloxide 0.17 (by
//! another author): its `MockBot` runs every `dispatch()` on a tokio runtime of its own and
//! drops it afterwards, and hands handlers a plain `Bot`.
//!
//! `MockBot` holds a process-wide lock for its lifetime (it sets environment variables), so
//! this file keeps one `MockBot` per test.

use std::time::Duration;

use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::types::{InlineKeyboardButtonKind, ReplyMarkup, UserId};
use teloxide_retention::{
    ErasureReason, GonePolicy, ManualClock, MemoryStore, Retained, Retention,
};
use teloxide_tests::{MockBot, MockCallbackQuery, MockMessageText, MockPrivateChat, MockUser};

use crate::common::{DAY, T0, updates};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// The bot's own tree: it greets in every private message, through the adaptor.
fn tree() -> UpdateHandler<Error> {
    Update::filter_message().endpoint(|bot: Retained<Bot>, msg: Message| async move {
        bot.send_message(msg.chat.id, "hello").await?;
        Ok(())
    })
}

/// A private text message from `user`.
fn text_from(user: u64, text: &str) -> MockMessageText {
    MockMessageText::new()
        .text(text)
        .from(MockUser::new().id(user).build())
        .chat(MockPrivateChat::new().id(user as i64).build())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_under_teloxide_tests_tracks_answers_erases_and_shuts_down() {
    crate::common::init_tracing();
    let clock = ManualClock::at_unix_ms(T0);
    let retention = Retention::builder(MemoryStore::new())
        .inactive_after(30 * DAY)
        .gone_policy(GonePolicy::EraseNow)
        .clock(clock.clone())
        .store_timeout(Duration::from_millis(500))
        .build()
        .unwrap();
    // A plain `Bot` from the harness; the tree's handlers take `Retained<Bot>`.
    let handler = retention.wrap_retained::<Bot, _>(tree());
    let (alice, bob, carol) = (MockUser::ID, 4_242, 5_151);

    // 1. A message: tracked, answered by the bot's own handler.
    let mut bot = MockBot::new(text_from(alice, "hi"), handler);
    bot.dispatch().await;
    assert_eq!(bot.get_responses().sent_messages.last().unwrap().text(), Some("hello"));
    assert!(retention.status(UserId(alice)).await.unwrap().last_seen.is_some());

    // 2. /privacy, on the next dispatch's runtime (the first one is gone).
    bot.update(text_from(alice, "/privacy"));
    bot.dispatch().await;
    let privacy = bot.get_responses().sent_messages.last().unwrap().text().unwrap().to_owned();
    assert!(privacy.contains("30 days"), "{privacy}");

    // 3. /mydata from another user: a JSON document.
    bot.update(text_from(bob, "/mydata"));
    bot.dispatch().await;
    let documents = bot.get_responses().sent_messages_document;
    assert_eq!(documents.len(), 1, "the export is sent as a document");
    assert!(retention.status(UserId(bob)).await.unwrap().last_seen.is_some());

    // 4. /removemydata, then the confirm button of the keyboard the bot sent.
    bot.update(text_from(alice, "/removemydata"));
    bot.dispatch().await;
    let prompt = bot.get_responses().sent_messages.last().unwrap().clone();
    let Some(ReplyMarkup::InlineKeyboard(keyboard)) =
        prompt.reply_markup().cloned().map(Into::into)
    else {
        panic!("the prompt has an inline keyboard: {prompt:?}");
    };
    let confirm = keyboard
        .inline_keyboard
        .iter()
        .flatten()
        .find_map(|button| match &button.kind {
            InlineKeyboardButtonKind::CallbackData(data) if data.ends_with(":y") => {
                Some(data.clone())
            }
            _ => None,
        })
        .expect("a confirm button");
    bot.update(
        MockCallbackQuery::new()
            .data(confirm)
            .from(MockUser::new().id(alice).build())
            .message(prompt),
    );
    bot.dispatch().await;
    let status = retention.status(UserId(alice)).await.unwrap();
    assert_eq!(status.last_seen, None, "erased on confirmation");
    assert!(status.erasure.is_none(), "nothing left to retry: {status:?}");

    // 5. A user writes, then blocks the bot (an update built from JSON).
    bot.update(text_from(carol, "hi"));
    bot.dispatch().await;
    // (`serde_json::from_value` yields `UpdateKind::Error` for this JSON; `parse` reads it
    // from text, as teloxide does, and fails loudly if teloxide cannot.)
    let block = crate::common::parse(updates::blocked(carol));
    bot.update(block);
    bot.dispatch().await;
    let status = retention.status(UserId(carol)).await.unwrap();
    assert_eq!(status.erasure.map(|e| e.reason), Some(ErasureReason::Blocked));
    clock.advance(Duration::from_secs(1));
    let pass = retention.prune_once().await.unwrap();
    assert_eq!(pass.erased, 1, "the blocked user: {pass:?}");
    assert_eq!(retention.status(UserId(carol)).await.unwrap().last_seen, None);

    // Every interaction was written; none waits in memory.
    assert_eq!(retention.stats().buffered_users, 0);
    assert_eq!(retention.tracked_users().await.unwrap(), 1, "only bob is left");
    retention.shutdown().await.expect("a clean shutdown");
}
