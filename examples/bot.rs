//! A real bot with data retention, to copy from.
//!
//! ```sh
//! TELOXIDE_TOKEN=123:ABC REDIS_URL=redis://127.0.0.1/ cargo run -p teloxide-retention-tests --example bot
//! ```
//!
//! The bot remembers each user's last message in a Redis hash `profile:<user id>` (its own
//! data) and keeps a dialogue per chat. teloxide-retention records every user's last
//! interaction, answers `/privacy`, `/mydata` and `/removemydata`, erases users who block
//! the bot after a grace period, and erases everyone inactive for 90 days, profile and
//! dialogue included. The bot talks to Telegram through the `Retained` adaptor, so a send
//! that fails because its recipient blocked the bot or deleted their account marks that
//! recipient gone, wherever it is sent from (see also `examples/broadcast.rs`).
//!
//! At start, and once a day, it audits its own data: every user with a `profile:<id>` hash
//! (listed with `SCAN`) must be on a clock, so users the bot held before it used the crate
//! are adopted, and with receipts a profile left behind by an erasure is erased again.
//!
//! It serves the crate's metrics for Prometheus at `http://127.0.0.1:9184/metrics` (set
//! `METRICS_ADDR` to change it), through `metrics-exporter-prometheus`. With
//! `RECEIPT_KEY_FILE` (32 bytes or more, e.g. `openssl rand 32 > receipt.key`) it keeps an
//! erasure receipt per erased user for three years. Operators watch it with the CLI:
//! `cargo run --features cli --bin teloxide-retention -- --namespace example-bot
//! --inactive-after 90d stats`.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use teloxide::dispatching::dialogue::{InMemStorage, Storage};
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide::types::BotCommand;
use teloxide_retention::{
    Commands, DialogueEraser, ReceiptKey, RedisKeysEraser, RedisStore, Retained, RetainedExt,
    Retention, Texts, UntrackedUsers,
};

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
    Update::filter_message().endpoint(move |bot: Retained<Bot>, msg: Message| {
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
            // A "bot was blocked" error here marks this chat's user gone (the adaptor sees it).
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
    // The crate emits through the `metrics` facade; this exporter serves it to Prometheus.
    let metrics_addr: std::net::SocketAddr =
        std::env::var("METRICS_ADDR").unwrap_or_else(|_| "127.0.0.1:9184".into()).parse()?;
    // Histograms as Prometheus histograms (`_bucket` series, which the dashboard in
    // examples/grafana-dashboard.json draws as heatmaps and percentiles), not summaries.
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(metrics_addr)
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0, 300.0,
            ],
        )?
        .install()?;
    let redis_url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1/".into());
    let redis =
        redis::aio::ConnectionManager::new(redis::Client::open(redis_url.as_str())?).await?;
    let dialogues = InMemStorage::<State>::new();

    // What each eraser deletes, as users read it, in English and German; each user gets
    // the texts of their Telegram app's language.
    let mut english = Texts::english();
    english.eraser_descriptions.insert("profile".into(), "your last message".into());
    let mut german = Texts::german();
    german.eraser_descriptions.insert("profile".into(), "Ihre letzte Nachricht".into());
    let commands = Commands::default().texts(english).language("de", german);

    let mut builder = Retention::builder(RedisStore::open(&redis_url).await?)
        .namespace("example-bot")
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .commands(commands)
        .erase_with(RedisKeysEraser::new(redis.clone(), ["profile:{user}"])?.named("profile"))
        .erase_with(DialogueEraser::new(Arc::clone(&dialogues)).with_export())
        .on_stuck(|stuck| {
            tracing::error!(user = stuck.user.0, failures = ?stuck.failures, "erasure stuck")
        });
    if let Ok(path) = std::env::var("RECEIPT_KEY_FILE") {
        let three_years = Duration::from_secs(3 * 365 * 24 * 3600);
        builder = builder.receipts(ReceiptKey::from_file(path)?, three_years);
    }
    let retention = builder.build()?;

    // Every request goes through the adaptor; wrap the handler for the adapted bot's type.
    let bot = Bot::from_env().retained(&retention);

    // The bot's own commands plus the privacy commands, in each language.
    let mut commands = vec![BotCommand::new("start", "Say hello")];
    commands.extend(retention.bot_commands());
    bot.set_my_commands(commands).await?;
    for code in retention.command_languages() {
        let mut commands = vec![BotCommand::new("start", "Hallo sagen")];
        commands.extend(retention.bot_commands_in(code));
        bot.set_my_commands(commands).language_code(code).await?;
    }

    // Users the bot held before it used the crate are put on a clock before the first pass
    // (a bot with its own table would rather `retention.adopt` it with each user's last
    // activity, and look at `retention.preview` first; see the README). Then once a day.
    let report = retention.audit(UntrackedUsers::Adopt).await?;
    tracing::info!(adopted = report.untracked(), residue = report.residue(), "audit at start");
    let audit = {
        let retention = retention.clone();
        tokio::spawn(async move {
            let day = Duration::from_secs(24 * 3600);
            let mut daily = tokio::time::interval_at(tokio::time::Instant::now() + day, day);
            loop {
                daily.tick().await;
                match retention.audit(UntrackedUsers::Adopt).await {
                    Ok(report) => tracing::info!(
                        untracked = report.untracked(),
                        residue = report.residue(),
                        not_covered = ?report.not_covered(),
                        "audit of the bot's own data"
                    ),
                    Err(e) => tracing::warn!(error = %e, "audit failed; next try tomorrow"),
                }
            }
        })
    };
    let pruner = retention.spawn_pruner();
    let handler = retention.wrap(handler_tree(redis, dialogues));
    let mut dispatcher = Dispatcher::builder(bot, handler)
        .dependencies(dptree::deps![retention.clone()])
        // Ctrl-C stops the dispatcher.
        .enable_ctrlc_handler()
        .build();
    // So does SIGTERM, which Docker, Kubernetes and systemd send.
    #[cfg(unix)]
    {
        let token = dispatcher.shutdown_token();
        let mut sigterm =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::spawn(async move {
            sigterm.recv().await;
            if let Ok(stopping) = token.shutdown() {
                stopping.await;
            }
        });
    }
    dispatcher.dispatch().await;
    // The dispatcher has stopped: let the pruner finish its batch, then write buffered
    // interactions and retire this process's heartbeat.
    audit.abort();
    pruner.shutdown().await;
    retention.shutdown().await?;
    Ok(())
}
