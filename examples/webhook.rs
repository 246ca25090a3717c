//! A bot that receives updates through a webhook instead of long polling.
//!
//! ```sh
//! TELOXIDE_TOKEN=123:ABC WEBHOOK_URL=https://bot.example.org/webhook \
//!     REDIS_URL=redis://127.0.0.1/ cargo run -p teloxide-retention-tests --example webhook
//! ```
//!
//! The server listens on port 8443 (`PORT` overrides it); a reverse proxy with TLS forwards
//! `WEBHOOK_URL` to it.
//!
//! Long polling asks Telegram for exactly the update kinds the handler tree needs. teloxide
//! 0.17's webhook listener does not (its `setWebhook` call has no `allowed_updates`), so
//! Telegram would keep sending its default set, without `my_chat_member` unless the bot
//! asked for it before: blocks would never reach the layer. This bot sets the webhook once
//! more with [`Retention::allowed_updates`], the tree's kinds plus the layer's.

use std::net::SocketAddr;
use std::time::Duration;

use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::update_listeners::webhooks;
use teloxide_retention::{RedisStore, Retention};

type HandlerError = Box<dyn std::error::Error + Send + Sync>;

fn handler_tree() -> UpdateHandler<HandlerError> {
    Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        bot.send_message(msg.chat.id, "Hello over a webhook! /privacy says what I keep.").await?;
        Ok(())
    })
}

#[tokio::main]
async fn main() -> Result<(), HandlerError> {
    tracing_subscriber::fmt().init();
    let url: url::Url = std::env::var("WEBHOOK_URL")?.parse()?;
    let port: u16 = std::env::var("PORT").map_or(Ok(8443), |p| p.parse())?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into());

    let retention = Retention::builder(RedisStore::open(&redis_url).await?)
        .namespace("webhook-bot")
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .build()?;
    let bot = Bot::from_env();
    let handler = retention.wrap(handler_tree());
    let kinds = retention.allowed_updates(&handler);

    let mut options = webhooks::Options::new(SocketAddr::from(([0, 0, 0, 0], port)), url.clone());
    // Known before teloxide sets the webhook, so that the second call below repeats it.
    let secret = options.get_or_gen_secret_token().to_owned();
    let listener = webhooks::axum(bot.clone(), options).await?;
    // teloxide's `setWebhook` above left `allowed_updates` out: set the webhook again, with
    // the same URL and secret (and certificate or max_connections, if the bot uses them).
    bot.set_webhook(url).allowed_updates(kinds).secret_token(secret).await?;

    let pruner = retention.spawn_pruner();
    let error_handler = LoggingErrorHandler::with_custom_text("webhook listener error");
    Dispatcher::builder(bot, handler)
        .enable_ctrlc_handler()
        .build()
        .dispatch_with_listener(listener, error_handler)
        .await;
    // The dispatcher has stopped: finish the running batch, then write buffered interactions.
    pruner.shutdown().await;
    retention.shutdown().await?;
    Ok(())
}
