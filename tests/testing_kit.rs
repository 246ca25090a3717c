//! A bot's own test with the crate's test kit and nothing else (the README's "Testing your
//! bot" shows this file from its `use` lines on; `tests/integration/docs.rs` checks it).

use std::time::Duration;

use teloxide::prelude::*;
use teloxide_retention::testing::{TelegramError, TestBot, updates as u};
use teloxide_retention::{ErasureReason, ManualClock, MemoryStore, Retained, Retention};

#[tokio::test]
async fn my_bot_keeps_its_privacy_promises() {
    let clock = ManualClock::starting_now();
    let retention = Retention::builder(MemoryStore::new())
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .clock(clock.clone())
        .build()
        .unwrap();
    // The bot's own handlers: it greets everyone and tells user 3 the news.
    let tree = Update::filter_message().endpoint(|bot: Retained<Bot>, msg: Message| async move {
        bot.send_message(msg.chat.id, "hi!").await?;
        bot.send_message(ChatId(3), "news").await?;
        Ok::<_, teloxide::RequestError>(())
    });
    let bot = TestBot::new(retention, tree).await;

    // A message is answered, and its user is tracked.
    assert_eq!(bot.push(u::message(1, "hello")).await[0].text(), Some("hi!"));
    // `/privacy` in German, for a user whose Telegram speaks German.
    let privacy = bot.push(u::in_language(u::message(2, "/privacy"), "de")).await;
    assert!(privacy[0].text().unwrap().contains("Daten"), "{privacy:?}");
    // `/removemydata`, then the confirm button: user 2 is erased.
    let prompt = bot.push(u::message(2, "/removemydata")).await;
    let (_, confirm) = prompt[0].buttons()[0].clone();
    bot.push(u::callback(2, u::private_chat(2), &confirm)).await;
    assert_eq!(bot.retention().status(UserId(2)).await.unwrap().last_seen, None);
    // A send to user 3, who blocked the bot, fails and marks them gone; so does a block.
    bot.api().fail_chat_with(3, TelegramError::Blocked);
    bot.push(u::message(4, "hello")).await;
    bot.push(u::blocked(4)).await;
    for user in [3, 4] {
        let erasure = bot.retention().status(UserId(user)).await.unwrap().erasure;
        assert_eq!(erasure.map(|e| e.reason), Some(ErasureReason::Blocked), "user {user}");
    }
    // 91 days later the pruner erases user 1 for inactivity, and the gone users.
    clock.advance(Duration::from_secs(91 * 24 * 3600));
    assert_eq!(bot.retention().prune_once().await.unwrap().erased, 3);
}
