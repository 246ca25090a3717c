//! An offline tour of teloxide-retention: `cargo run --example demo`.
//!
//! No token, no network, no Redis needed: the in-memory store, a simulated clock, and a
//! fake Telegram on localhost that the real `teloxide::Bot` talks to. Set `REDIS_URL` to run
//! the same script against your Redis (it uses, then removes, a namespace of its own), or
//! `DATABASE_URL=sqlite:demo.db` (or `postgres://...`) to keep the store in a SQLite file or
//! a PostgreSQL database (a namespace of its own per run, left there).
//!
//! Seven users interact with a small bot that keeps a profile per user and relays support
//! requests to its admin. Over six simulated weeks they ask for the privacy policy, export
//! and delete their data, block the bot, delete their account, and go quiet; the pruner
//! erases them, with the bot's own data, as the policy says. The bot talks to Telegram
//! through the `Retained` adaptor, so a failed send marks exactly the user it was for: when
//! the admin has blocked the bot, relaying dave's request marks the admin, not dave. The
//! pruner probes before it trusts an ambiguous "chat not found" (frank keeps his data), and
//! its census finds grace, who deleted her account without a word, a week after she went
//! quiet instead of after the 30-day threshold.

use teloxide_retention::testing::{self as bot_api, updates};

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use teloxide::dispatching::dialogue::InMemStorage;
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide::types::Me;
use teloxide_retention::{
    BoxError, Census, Clock, Commands, DialogueEraser, Eraser, Erasure, ErasureReason, Export,
    ManualClock, MemoryStore, Probes, RedisStore, Retained, RetainedExt, Retention, Texts,
};

const DAY: Duration = Duration::from_secs(24 * 3600);
/// 2026-01-05 09:00 UTC, a Monday.
const START_MS: i64 = 1_767_603_600_000;

/// The bot's admin, who receives support requests (and has blocked the bot).
const ADMIN: u64 = 1000;

const USERS: [(u64, &str); 8] = [
    (ADMIN, "admin"),
    (1001, "alice"),
    (1002, "bob"),
    (1003, "carol"),
    (1004, "dave"),
    (1005, "erin"),
    (1006, "frank"),
    (1007, "grace"),
];

/// The bot's own data: a profile per user, in memory here (a database table in a real bot).
#[derive(Clone, Default)]
struct Profiles(Arc<Mutex<BTreeMap<u64, String>>>);

impl Eraser for Profiles {
    fn name(&self) -> &str {
        "profiles"
    }

    async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
        self.0.lock().unwrap().remove(&erasure.user.0);
        Ok(())
    }

    async fn export(&self, user: UserId) -> Result<Export, BoxError> {
        let profile = self.0.lock().unwrap().get(&user.0).cloned();
        Ok(Export::Data(profile.map_or(Value::Null, |p| serde_json::json!({ "greeting": p }))))
    }
}

/// The bot's state machine (a teloxide dialogue), kept per private chat.
#[derive(Clone, Default, serde::Serialize)]
enum State {
    #[default]
    Idle,
    Chatting,
}

/// The bot's own handler tree: it remembers who said hello and forwards support requests to
/// the admin. The layer wraps it unchanged.
fn bot_tree(profiles: Profiles, dialogues: Arc<InMemStorage<State>>) -> UpdateHandler<BoxError> {
    Update::filter_message().endpoint(move |bot: Retained<Bot>, msg: Message| {
        let profiles = profiles.clone();
        let dialogues = Arc::clone(&dialogues);
        async move {
            if msg.text().is_some_and(|t| t.starts_with("support:")) {
                let admin = ChatId(ADMIN as i64);
                if bot.forward_message(admin, msg.chat.id, msg.id).await.is_err() {
                    bot.send_message(msg.chat.id, "Support is unavailable right now.").await?;
                }
                return Ok(());
            }
            if let (Some(user), Some(text)) = (msg.from.as_ref(), msg.text()) {
                profiles.lock().insert(user.id.0, text.to_owned());
                use teloxide::dispatching::dialogue::Storage;
                dialogues.update_dialogue(msg.chat.id, State::Chatting).await?;
            }
            Ok(())
        }
    })
}

impl Profiles {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, String>> {
        self.0.lock().unwrap()
    }
}

struct Demo {
    retention: Retention,
    handler: UpdateHandler<BoxError>,
    telegram: bot_api::FakeBotApi,
    bot: Retained<Bot>,
    me: Me,
    clock: ManualClock,
    profiles: Profiles,
    /// Requests to Telegram already printed.
    printed: usize,
    /// Marks already reported.
    marks: std::collections::BTreeSet<(u64, ErasureReason)>,
    erased: Arc<Mutex<BTreeMap<u64, (i64, ErasureReason)>>>,
}

impl Demo {
    fn day(&self) -> i64 {
        (self.clock.now_ms() - START_MS) / DAY.as_millis() as i64
    }

    fn name(user: u64) -> &'static str {
        USERS.iter().find(|(id, _)| *id == user).map_or("?", |(_, n)| n)
    }

    /// Feeds one update through the wrapped handler, as the dispatcher does, then prints
    /// what the bot sent.
    async fn update(&mut self, who: u64, what: &str, update: Value) {
        println!("day {:>2} │ {:<6}│ {what}", self.day(), Self::name(who));
        let update: Update = serde_json::from_str(&update.to_string()).expect("update JSON");
        let deps = dptree::deps![self.bot.clone(), self.me.clone(), update];
        let _ = self.handler.dispatch(deps).await;
        self.print_replies();
    }

    fn print_replies(&mut self) {
        let sent = self.telegram.sent();
        for request in &sent[self.printed..] {
            let text = request.text().unwrap_or_default().replace('\n', "\n       │       │   ");
            match request.method.as_str() {
                "sendmessage" if request.failed => {}
                "sendmessage" => println!("       │  bot  │ → {text}"),
                "editmessagetext" => println!("       │  bot  │ ✎ {text}"),
                "senddocument" => {
                    let file = bot_api::uploaded_file(&request.raw, "document").unwrap_or_default();
                    let compact: Value = serde_json::from_str(&file).unwrap_or_default();
                    println!("       │  bot  │ 📎 my-data.json: {compact}");
                }
                _ => {}
            }
            for (label, _) in request.buttons() {
                println!("       │       │   [{label}]");
            }
        }
        self.printed = sent.len();
    }

    fn note(&self, text: &str) {
        println!("       │       │ · {text}");
    }

    /// One day passes; the pruner runs its pass (a real bot runs it every few minutes).
    async fn next_day(&mut self, days: u32) {
        for _ in 0..days {
            self.clock.advance(DAY);
            // Marks made before the pass (by blocks, failed sends) are not the census's.
            for (id, _) in USERS {
                let marked = self.retention.status(UserId(id)).await.expect("status").erasure;
                if let Some(mark) = marked {
                    self.marks.insert((id, mark.reason));
                }
            }
            let report = self.retention.prune_once().await.expect("prune pass");
            if report.census_probed > 0 {
                println!(
                    "day {:>2} │ pruner│ census: probed {} idle user(s) (a \"typing\" action \
                     each), {} gone",
                    self.day(),
                    report.census_probed,
                    report.census_found_gone
                );
            }
            for (id, _) in USERS {
                let marked = self.retention.status(UserId(id)).await.expect("status").erasure;
                if let Some(mark) = marked.filter(|m| self.marks.insert((id, m.reason)))
                    && report.census_found_gone > 0
                    && mark.reason == ErasureReason::Deactivated
                {
                    let due = mark.due.map_or("-".to_owned(), |d| d.date_naive().to_string());
                    let name = Self::name(id);
                    println!(
                        "day {:>2} │ pruner│ census: {name}'s account is deleted → marked, \
                         erased on {due} unless she returns",
                        self.day()
                    );
                }
            }
            if report.kept_reachable > 0 {
                println!(
                    "day {:>2} │ pruner│ probe: {} user(s) marked unreachable answered → mark \
                     dropped, data kept",
                    self.day(),
                    report.kept_reachable
                );
            }
            if report.erased > 0 {
                let erased: Vec<String> = ErasureReason::ALL
                    .into_iter()
                    .map(|reason| (reason, report.erased_for(reason)))
                    .filter(|(_, n)| *n > 0)
                    .map(|(reason, n)| format!("{n} {reason}"))
                    .collect();
                println!("day {:>2} │ pruner│ erased {}", self.day(), erased.join(", "));
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let telegram = bot_api::FakeBotApi::start().await;
    let me = telegram.bot().get_me().await?;
    let clock = ManualClock::at_unix_ms(START_MS);
    let profiles = Profiles::default();
    let dialogues = InMemStorage::<State>::new();
    let erased = Arc::new(Mutex::new(BTreeMap::new()));

    let namespace = format!("retention-demo-{}", std::process::id());
    let redis_url = std::env::var("REDIS_URL").ok();
    let database_url = std::env::var("DATABASE_URL").ok();
    let (builder, store) = match (&redis_url, &database_url) {
        (Some(url), _) => (
            Retention::builder(RedisStore::open(url).await?).namespace(&namespace),
            "Redis".to_owned(),
        ),
        (None, Some(url)) if url.starts_with("postgres") => (
            Retention::builder(teloxide_retention::PostgresStore::open(url).await?)
                .namespace(&namespace),
            format!("PostgreSQL (tables \"{namespace}.*\")"),
        ),
        (None, Some(url)) => (
            Retention::builder(teloxide_retention::SqliteStore::open(url).await?)
                .namespace(&namespace),
            format!("SQLite ({url}, tables \"{namespace}.*\")"),
        ),
        (None, None) => (Retention::builder(MemoryStore::new()), "in memory".to_owned()),
    };
    // What each eraser deletes, as users should read it (they never see internal names).
    let mut texts = Texts::english();
    texts.eraser_descriptions.insert("profiles".into(), "your profile and settings".into());
    let retention = builder
        .inactive_after(30 * DAY)
        .clock(clock.clone())
        .commands(Commands::default().texts(texts))
        .erase_with(profiles.clone())
        .erase_with(DialogueEraser::new(Arc::clone(&dialogues)).with_export())
        // Probe before trusting an ambiguous "unreachable", and find gone users among
        // those idle a week (fast probes here; the default is one a second).
        .probe_with(telegram.bot(), Probes::new().one_every(Duration::from_millis(5)))
        .census(Census::new().idle_for(7 * DAY))
        .on_erased({
            let erased = Arc::clone(&erased);
            let clock = clock.clone();
            move |e| {
                erased.lock().unwrap().insert(e.user.0, (clock.now_ms(), e.reason));
            }
        })
        .build()?;
    // Every request goes through the adaptor; the privacy commands answer through it too.
    let bot = telegram.bot().retained(&retention);
    let handler = retention.wrap(bot_tree(profiles.clone(), dialogues));
    println!("teloxide-retention demo");
    println!(
        "store: {store}; policy: erase after 30 days without interaction, blocked users \
         after a 7-day grace period; users idle a week are probed (census)\n"
    );

    let mut demo = Demo {
        retention,
        handler,
        telegram,
        bot,
        me,
        clock,
        profiles,
        printed: 0,
        marks: Default::default(),
        erased,
    };
    use updates as u;

    for (id, name) in USERS.into_iter().filter(|(id, _)| *id != ADMIN) {
        demo.update(
            id,
            &format!("says \"hi, I'm {name}\""),
            u::message(id, &format!("hi, I'm {name}")),
        )
        .await;
    }
    demo.next_day(1).await;
    demo.update(1005, "/privacy", u::message(1005, "/privacy")).await;
    demo.next_day(1).await;
    demo.update(1005, "/mydata", u::message(1005, "/mydata")).await;
    demo.next_day(1).await;
    demo.update(1005, "/removemydata", u::message(1005, "/removemydata")).await;
    let confirm = demo.telegram.sent().last().unwrap().buttons()[0].1.clone();
    demo.update(
        1005,
        "presses \"Yes, delete my data\"",
        u::callback(1005, u::private_chat(1005), &confirm),
    )
    .await;
    let erin = demo.retention.status(UserId(1005)).await?;
    demo.note(&format!(
        "erin is {}; her profile is {}",
        if erin.last_seen.is_some() { "still tracked" } else { "no longer tracked" },
        if demo.profiles.lock().contains_key(&1005) { "kept" } else { "deleted" }
    ));

    demo.next_day(1).await;
    demo.update(1003, "blocks the bot (my_chat_member: kicked)", u::blocked(1003)).await;
    demo.telegram.fail_chat(1003, 403, "Forbidden: bot was blocked by the user");
    let carol = demo.retention.status(UserId(1003)).await?.erasure.expect("carol is marked");
    demo.note(&format!(
        "carol marked {}; erased on {} unless she returns",
        carol.reason,
        carol.due.unwrap().date_naive()
    ));
    demo.update(1002, "blocks the bot", u::blocked(1002)).await;
    demo.telegram.fail_chat(1002, 403, "Forbidden: bot was blocked by the user");

    demo.next_day(1).await;
    demo.telegram.fail_chat(ADMIN as i64, 403, "Forbidden: bot was blocked by the user");
    demo.update(
        1004,
        "says \"support: my order is late\"",
        u::message(1004, "support: my order is late"),
    )
    .await;
    demo.note("forwarding to the admin failed: the admin is marked blocked, dave is not");
    let dave = demo.retention.status(UserId(1004)).await?;
    assert!(dave.erasure.is_none(), "the sender is never blamed for a failed relay");

    demo.next_day(1).await;
    demo.telegram.fail_chat(1004, 403, "Forbidden: user is deactivated");
    // A "chat not found" that passes: frank is still there.
    demo.telegram.fail_chat(1006, 400, "Bad Request: chat not found");
    println!("day {:>2} │ bot   │ broadcasts \"New menu!\" to everyone with a profile", demo.day());
    let recipients: Vec<u64> = demo.profiles.lock().keys().copied().collect();
    for user in recipients {
        // The adapted bot marks a recipient whose send fails with a "gone" error.
        let sent = demo.bot.send_message(ChatId(user as i64), "New menu!").await;
        if let Err(e) = sent {
            demo.note(&format!("to {}: {e} → gone", Demo::name(user)));
        }
    }
    demo.printed = demo.telegram.sent().len();
    demo.telegram.heal_chat(1006);
    demo.note("frank's \"chat not found\" was transient: a probe confirms before erasing");
    // Telegram tells the bot nothing when an account is deleted.
    println!("day {:>2} │ grace │ deletes her Telegram account (the bot is not told)", demo.day());
    demo.telegram.fail_chat(1007, 403, "Forbidden: user is deactivated");

    demo.next_day(2).await;
    demo.update(1002, "unblocks the bot", u::unblocked(1002)).await;
    demo.telegram.heal_chat(1002);
    demo.note("bob's pending erasure is cancelled");
    demo.next_day(6).await;
    demo.update(1002, "says \"what's new?\"", u::message(1002, "what's new?")).await;
    demo.next_day(16).await;

    // Day 31: alice and frank have been quiet for 31 days. A dry run first, then the
    // day's pass.
    demo.clock.advance(DAY);
    let preview = demo.retention.preview(10).await?;
    let due: Vec<String> =
        preview.users.iter().map(|e| format!("{} ({})", Demo::name(e.user.0), e.reason)).collect();
    let due = if due.is_empty() { "nobody".to_owned() } else { due.join(", ") };
    println!("day {:>2} │ pruner│ dry run: would erase {due}", demo.day());
    demo.clock.set_unix_ms(demo.clock.now_ms() - DAY.as_millis() as i64);
    demo.next_day(8).await;

    println!("\nsummary on day {}:", demo.day());
    println!("  {:<6}  {:<12}  {:<8}  erased", "user", "last seen", "profile");
    for (id, name) in USERS {
        let status = demo.retention.status(UserId(id)).await?;
        let seen = status.last_seen.map_or("-".to_owned(), |t| {
            format!("day {}", (t.timestamp_millis() - START_MS) / DAY.as_millis() as i64)
        });
        let profile = if demo.profiles.lock().contains_key(&id) {
            "kept"
        } else if id == ADMIN {
            "none" // the admin never wrote to the bot
        } else {
            "deleted"
        };
        let erased = demo.erased.lock().unwrap().get(&id).map_or("-".to_owned(), |(at, reason)| {
            format!("day {} ({reason})", (at - START_MS) / DAY.as_millis() as i64)
        });
        println!("  {name:<6}  {seen:<12}  {profile:<8}  {erased}");
    }
    let stats = demo.retention.stats();
    println!(
        "\n{} interactions written, {} users erased, {} marked gone.",
        stats.interactions_written,
        stats.erased_total(),
        stats.marked_gone
    );

    if let Some(url) = redis_url {
        // Leave the user's Redis as we found it.
        let mut conn =
            redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
        let keys: Vec<String> =
            redis::cmd("KEYS").arg(format!("{{{namespace}}}:*")).query_async(&mut conn).await?;
        if !keys.is_empty() {
            redis::cmd("DEL").arg(keys).query_async::<()>(&mut conn).await?;
        }
    }
    Ok(())
}
