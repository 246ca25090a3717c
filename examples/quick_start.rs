//! The README's quick start, verbatim below this header (`tests/integration/docs.rs` checks
//! that they match): a complete `main.rs`.

use std::time::Duration;

use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::types::BotCommand;
use teloxide_retention::{
    BoxError, Erasure, RedisStore, Retained, RetainedExt, Retention, erase_fn,
};

/// The bot's own handlers; they take `Retained<Bot>` where they took `Bot`.
fn handler_tree() -> UpdateHandler<BoxError> {
    Update::filter_message().endpoint(
        |bot: Retained<Bot>, msg: Message, retention: Retention| async move {
            // The `Retention` is a dependency like any other (see `dependencies` below).
            let days = retention.inactive_after().as_secs() / 86_400;
            let text = format!("Hi! I forget users after {days} idle days; see /privacy.");
            bot.send_message(msg.chat.id, text).await?;
            Ok(())
        },
    )
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into());
    let retention = Retention::builder(RedisStore::open(&redis_url).await?)
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .erase_with(erase_fn("orders", |erasure: Erasure| async move {
            // DELETE FROM orders WHERE user_id = $1 (deleting nothing is fine)
            let _ = erasure.user;
            Ok::<_, BoxError>(())
        }))
        .build()?;

    // A send that fails because its recipient blocked the bot marks that recipient gone.
    let bot = Bot::from_env().retained(&retention);
    // The bot's own menu with /removemydata, /mydata and /privacy added, in every language.
    let own_menu = vec![BotCommand::new("start", "Start the bot")];
    retention.set_my_commands(&bot, &[(None, own_menu)]).await?;
    let handler = retention.wrap(handler_tree());
    let pruner = retention.spawn_pruner();
    Dispatcher::builder(bot, handler)
        .dependencies(dptree::deps![retention.clone()])
        .enable_ctrlc_handler()
        .build()
        .dispatch()
        .await;
    // Ctrl-C stopped the dispatcher: let the pruner finish its batch, then write the
    // interactions still buffered and retire this process's heartbeat.
    pruner.shutdown().await;
    retention.shutdown().await?;
    Ok(())
}
