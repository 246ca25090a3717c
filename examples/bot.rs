//! A real bot with data retention, to copy from.
//!
//! ```sh
//! TELOXIDE_TOKEN=123:ABC REDIS_URL=redis://127.0.0.1/ cargo run --example bot
//! ```
//!
//! The bot remembers each user's last message in a Redis hash `profile:<user id>` (its own
//! data) and keeps a dialogue per chat. teloxide-retention records every user's last
//! interaction, answers `/privacy`, `/mydata` and `/removemydata`, erases users who block
//! the bot after a grace period, and erases everyone inactive for 90 days, profile and
//! dialogue included. For sends outside handlers, see `examples/broadcast.rs`.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use teloxide::dispatching::dialogue::{InMemStorage, Storage};
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide::types::BotCommand;
use teloxide_retention::{DialogueEraser, RedisKeysEraser, RedisStore, Retention};

type HandlerError = Box<dyn std::error::Error + Send + Sync>;

#[derive(Clone, Default, serde::Serialize)]
enum State {
    #[default]
    Start,
    Talking,
}

/// The bot's own handlers, as they would be without retention.
fn handler_tree(
    redis: redis::aio::ConnectionManager,
    dialogues: Arc<InMemStorage<State>>,
) -> UpdateHandler<HandlerError> {
    Update::filter_message().endpoint(move |bot: Bot, msg: Message| {
        let mut redis = redis.clone();
        let dialogues = Arc::clone(&dialogues);
        async move {
            let (Some(user), Some(text)) = (msg.from.as_ref(), msg.text()) else {
                return Ok(());
            };
            let key = format!("profile:{}", user.id);
            let previous: Option<String> = redis.hget(&key, "last_message").await?;
            redis.hset::<_, _, _, ()>(&key, "last_message", text).await?;
            Arc::clone(&dialogues).update_dialogue(msg.chat.id, State::Talking).await?;
            let reply = match previous {
                Some(previous) => format!("Last time you said: {previous}"),
                None => "Nice to meet you! Send /privacy to see what I keep.".to_owned(),
            };
            // A "bot was blocked" error here marks the user gone (the layer sees it).
            bot.send_message(msg.chat.id, reply).await?;
            Ok(())
        }
    })
}

#[tokio::main]
async fn main() -> Result<(), HandlerError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,teloxide_retention=debug".into()),
        )
        .init();
    let bot = Bot::from_env();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into());
    let redis =
        redis::aio::ConnectionManager::new(redis::Client::open(redis_url.as_str())?).await?;
    let dialogues = InMemStorage::<State>::new();

    let retention = Retention::builder(RedisStore::open(&redis_url).await?)
        .namespace("example-bot")
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .erase_with(RedisKeysEraser::new(redis.clone(), ["profile:{user}"])?.named("profile"))
        .erase_with(DialogueEraser::new(Arc::clone(&dialogues)).with_export())
        .build()?;

    // The bot's own commands plus the privacy commands.
    let mut commands = vec![BotCommand::new("start", "Say hello")];
    commands.extend(retention.bot_commands());
    bot.set_my_commands(commands).await?;

    let pruner = retention.spawn_pruner();
    Dispatcher::builder(bot.clone(), retention.wrap(handler_tree(redis, dialogues)))
        .enable_ctrlc_handler()
        .build()
        .dispatch()
        .await;
    pruner.shutdown().await;
    retention.flush().await?;
    Ok(())
}
