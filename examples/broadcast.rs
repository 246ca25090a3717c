//! Sends one message to many users and marks those Telegram reports as gone.
//!
//! ```sh
//! TELOXIDE_TOKEN=123:ABC REDIS_URL=redis://127.0.0.1/ \
//!     cargo run -p teloxide-retention-tests --example broadcast -- --namespace example-bot "New menu!" 1001 1002 1003
//! ```
//!
//! The bot is wrapped in the `Retained` adaptor, so users who blocked the bot, deleted their
//! account or are otherwise unreachable are marked gone by the failed send itself; the
//! bot's pruner erases them under its gone policy. Rate limits and network errors mark
//! nobody. (Without the adaptor, report each failure with `NoteGone::note_gone`.)

use std::time::Duration;

use clap::Parser;
use teloxide::prelude::*;
use teloxide_retention::{RedisStore, RetainedExt, Retention, gone_reason};

/// Broadcast a message and mark gone users.
#[derive(Parser)]
struct Args {
    /// The namespace of the bot's retention data.
    #[arg(long, default_value = "retention")]
    namespace: String,
    /// The message to send.
    text: String,
    /// Telegram user ids to send it to.
    #[arg(required = true)]
    users: Vec<u64>,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let args = Args::parse();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into());
    let retention = Retention::builder(RedisStore::open(&redis_url).await?)
        .namespace(args.namespace)
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .without_commands()
        .build()?;

    let bot = Bot::from_env().retained(&retention);

    let (mut sent, mut gone, mut failed) = (0, 0, 0);
    for user in args.users {
        let chat = ChatId(user as i64);
        // A "gone" error marks the user before it is returned.
        match bot.send_message(chat, &args.text).await {
            Ok(_) => sent += 1,
            Err(err) => match gone_reason(chat, &err) {
                Some(reason) => {
                    println!("{user}: gone ({reason})");
                    gone += 1;
                }
                None => {
                    println!("{user}: not sent ({err}); not a sign the user left");
                    failed += 1;
                }
            },
        }
    }
    println!("sent {sent}, gone {gone}, other failures {failed}");
    Ok(())
}
