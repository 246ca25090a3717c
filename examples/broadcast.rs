//! Sends one message to many users and marks those Telegram reports as gone.
//!
//! ```sh
//! TELOXIDE_TOKEN=123:ABC REDIS_URL=redis://127.0.0.1/ \
//!     cargo run --example broadcast -- --namespace example-bot "New menu!" 1001 1002 1003
//! ```
//!
//! Users who blocked the bot, deleted their account or are otherwise unreachable are marked
//! gone with `note_gone`; the bot's pruner erases them under its gone policy. Rate limits
//! and network errors mark nobody.

use std::time::Duration;

use clap::Parser;
use teloxide::prelude::*;
use teloxide_retention::{NoteGone, RedisStore, Retention, gone_reason};

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
    let bot = Bot::from_env();
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into());
    let retention = Retention::builder(RedisStore::open(&redis_url).await?)
        .namespace(args.namespace)
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .without_commands()
        .build()?;

    let (mut sent, mut gone, mut failed) = (0, 0, 0);
    for user in args.users {
        let chat = ChatId(user as i64);
        // `note_gone` marks the user gone if the error says so, and returns the result.
        match bot.send_message(chat, &args.text).await.note_gone(&retention, chat).await {
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
