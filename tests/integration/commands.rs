//! The privacy commands, through the real handler tree and a fake Bot API: what the user
//! receives, the keyboard, and the store and erasers afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use teloxide::RequestError;
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide_retention::{BoxError, Commands, Erasure, ErasureReason, Retention, erase_fn};

use crate::both_stores;
use crate::common::bot_api::{BOT_USERNAME, multipart_field, uploaded_file};
use crate::common::{DAY, Env, FakeBotApi, dispatch, updates as u};
use crate::support::{Gate, Recorder};

/// The bot's own tree: counts messages that reach it.
fn tree(seen: &Arc<AtomicUsize>) -> UpdateHandler<RequestError> {
    let seen = Arc::clone(seen);
    Update::filter_message().endpoint(move || {
        seen.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    })
}

struct Bot {
    api: FakeBotApi,
    retention: Retention,
    seen: Arc<AtomicUsize>,
}

impl Bot {
    async fn new(env: &Env, commands: Commands, eraser: Recorder) -> Self {
        let retention = env
            .bare_builder()
            .await
            .inactive_after(90 * DAY)
            .commands(commands)
            .erase_with(eraser)
            .build()
            .unwrap();
        Self { api: FakeBotApi::start().await, retention, seen: Arc::default() }
    }

    async fn send(&self, updates: Vec<Value>) {
        dispatch(&self.api, self.retention.wrap(tree(&self.seen)), updates).await;
    }

    /// The buttons of the last message sent to `chat`.
    fn buttons(&self, chat: i64) -> Vec<(String, String)> {
        self.api.sent_to("sendmessage", chat).last().expect("a message").buttons()
    }

    fn texts(&self, chat: i64) -> Vec<String> {
        self.api.texts_to(chat)
    }

    fn last_text(&self, chat: i64) -> String {
        self.texts(chat).pop().unwrap_or_default()
    }

    /// Texts of callback answers, in order (`None` for a silent answer).
    fn callback_answers(&self) -> Vec<Option<String>> {
        self.api
            .sent()
            .into_iter()
            .filter(|s| s.method == "answercallbackquery")
            .map(|s| s.body.get("text").and_then(Value::as_str).map(str::to_owned))
            .collect()
    }

    /// Asks for removal in the private chat and returns the confirm and cancel data.
    async fn prompt(&self, user: u64) -> (String, String) {
        self.send(vec![u::message(user, "/removemydata")]).await;
        let buttons = self.buttons(user as i64);
        assert_eq!(buttons.len(), 2, "{buttons:?}");
        (buttons[0].1.clone(), buttons[1].1.clone())
    }
}

both_stores! {
    async fn removemydata_asks_then_erases_everything_then_says_done(env) {
        let eraser = Recorder::new("profiles");
        let bot = Bot::new(&env, Commands::default(), eraser.clone()).await;
        // The reply must come after the erasers: record what the user had been told by then.
        let told_during_erasure = Arc::new(Mutex::new(Vec::new()));
        let retention = env.bare_builder().await.inactive_after(90 * DAY)
            .erase_with(eraser.clone())
            .erase_with(erase_fn("sessions", {
                let api = bot.api.clone();
                let told = Arc::clone(&told_during_erasure);
                move |_: Erasure| {
                    told.lock().unwrap().extend(api.texts_to(1));
                    async { Ok::<_, BoxError>(()) }
                }
            }))
            .build().unwrap();
        let bot = Bot { retention, ..bot };
        bot.send(vec![u::message(1, "hello")]).await;

        let (confirm, cancel) = bot.prompt(1).await;
        let prompt = bot.last_text(1);
        assert!(prompt.starts_with("Delete all data this bot keeps about you?"), "{prompt}");
        assert!(prompt.contains("• the time of your last interaction\n• profiles\n• sessions"), "{prompt}");
        assert_eq!(bot.buttons(1)[0].0, "Yes, delete my data");
        assert!(confirm.starts_with("rtn:rm:1:") && confirm.ends_with(":y"), "{confirm}");
        assert!(cancel.ends_with(":n"));
        assert!(eraser.calls().is_empty(), "nothing is erased before the user confirms");

        bot.send(vec![u::callback(1, u::private_chat(1), &confirm)]).await;
        assert_eq!(eraser.reasons(1), [ErasureReason::OptOut]);
        let status = bot.retention.status(UserId(1)).await.unwrap();
        assert_eq!((status.last_seen, status.erasure), (None, None));
        assert_eq!(
            bot.last_text(1),
            "Done: all data this bot kept about you has been deleted."
        );
        let told = told_during_erasure.lock().unwrap().clone();
        assert!(told.iter().all(|t| !t.starts_with("Done")), "said done too early: {told:?}");
        assert_eq!(bot.seen.load(Ordering::SeqCst), 1, "the bot's tree saw only 'hello'");
    }

    async fn a_failing_eraser_gets_the_truth_told_and_is_retried_after_a_restart(env) {
        let flaky = Recorder::new("profiles").failing_first(2);
        let bot = Bot::new(&env, Commands::default(), flaky.clone()).await;
        let (confirm, _) = bot.prompt(2).await;
        bot.send(vec![u::callback(2, u::private_chat(2), &confirm)]).await;
        assert_eq!(
            bot.last_text(2),
            "Deletion is not finished yet: 1 part(s) could not be deleted right now. \
             We keep trying until everything is deleted."
        );
        let pending = bot.retention.status(UserId(2)).await.unwrap().erasure.unwrap();
        assert_eq!(pending.reason, ErasureReason::OptOut);
        drop(bot);

        // The bot restarts: a new process, the same store.
        let restarted = env.bare_builder().await.inactive_after(90 * DAY).erase_with(flaky.clone())
            .build().unwrap();
        env.clock.advance(Duration::from_secs(31));
        assert_eq!(restarted.prune_once().await.unwrap().failed, 1, "second failure");
        env.clock.advance(Duration::from_secs(61));
        assert_eq!(restarted.prune_once().await.unwrap().erased, 1);
        assert_eq!(flaky.reasons(2), [ErasureReason::OptOut]);
        assert_eq!(restarted.status(UserId(2)).await.unwrap().erasure, None);
    }

    async fn a_confirm_works_once_and_expires(env) {
        let eraser = Recorder::new("profiles");
        let bot = Bot::new(&env, Commands::default(), eraser.clone()).await;
        let (confirm, _) = bot.prompt(3).await;
        bot.send(vec![u::callback(3, u::private_chat(3), &confirm)]).await;
        bot.send(vec![u::callback(3, u::private_chat(3), &confirm)]).await;
        assert_eq!(eraser.erased(3), 1, "a replayed confirm does nothing");
        let expired = "This confirmation has expired or was already used. Send /removemydata again.";
        assert_eq!(bot.callback_answers().last().unwrap().as_deref(), Some(expired));

        let (stale, _) = bot.prompt(3).await;
        env.clock.advance(Duration::from_secs(5 * 60 + 1));
        bot.send(vec![u::callback(3, u::private_chat(3), &stale)]).await;
        assert_eq!(eraser.erased(3), 1, "a stale confirm does nothing");
        assert_eq!(bot.callback_answers().last().unwrap().as_deref(), Some(expired));
        assert_eq!(bot.last_text(3), expired, "the old buttons are replaced");
    }

    async fn cancel_erases_nothing(env) {
        let eraser = Recorder::new("profiles");
        let bot = Bot::new(&env, Commands::default(), eraser.clone()).await;
        bot.send(vec![u::message(4, "hi")]).await;
        let (_, cancel) = bot.prompt(4).await;
        bot.send(vec![u::callback(4, u::private_chat(4), &cancel)]).await;
        assert_eq!(bot.last_text(4), "Cancelled. Nothing was deleted.");
        assert!(eraser.calls().is_empty());
        assert!(bot.retention.status(UserId(4)).await.unwrap().last_seen.is_some());
    }

    async fn only_the_requester_can_confirm_and_only_for_themselves(env) {
        let eraser = Recorder::new("profiles");
        let bot = Bot::new(&env, Commands::default().answer_in_groups(true), eraser.clone()).await;
        bot.send(vec![u::group_message(5, "/removemydata delete user 6 too")]).await;
        let buttons = bot.buttons(u::GROUP);
        let confirm = buttons[0].1.clone();
        assert!(confirm.starts_with("rtn:rm:5:"), "the requester is the sender: {confirm}");

        bot.send(vec![u::callback(6, u::group_chat(), &confirm)]).await;
        assert_eq!(
            bot.callback_answers().last().unwrap().as_deref(),
            Some("This button is for someone else.")
        );
        assert!(eraser.calls().is_empty(), "a foreign presser erases nobody");

        // Forged data naming another user only ever reaches the presser's own erasure check.
        let forged = confirm.replacen("rtn:rm:5:", "rtn:rm:6:", 1);
        bot.send(vec![u::callback(6, u::group_chat(), &forged)]).await;
        assert!(eraser.calls().is_empty());

        bot.send(vec![u::callback(5, u::group_chat(), &confirm)]).await;
        assert_eq!(eraser.counts().keys().copied().collect::<Vec<_>>(), [5]);
    }

    async fn in_groups_the_commands_point_to_the_private_chat(env) {
        let eraser = Recorder::new("profiles");
        let bot = Bot::new(&env, Commands::default(), eraser.clone()).await;
        bot.send(vec![u::group_message(7, "/removemydata"), u::group_message(8, "/mydata")]).await;
        let answers = bot.api.sent_to("sendmessage", u::GROUP);
        assert_eq!(answers.len(), 2);
        for answer in &answers {
            let text = answer.text().unwrap();
            assert!(text.starts_with("For your privacy, please send /"), "{text}");
            let (label, url) = &answer.buttons()[0];
            assert_eq!(label, "Open private chat");
            assert!(url.starts_with(&format!("https://t.me/{BOT_USERNAME}?start=")), "{url}");
        }
        assert!(bot.api.sent_to("senddocument", 8).is_empty(), "nothing is exposed in the group");

        // The button starts the private chat with the command.
        bot.send(vec![u::message(7, "/start removemydata")]).await;
        assert_eq!(bot.buttons(7).len(), 2, "the private prompt");
    }

    async fn commands_for_other_bots_and_renamed_or_disabled_commands_pass_through(env) {
        let eraser = Recorder::new("profiles");
        let commands = Commands::default().remove_command("forgetme").without_export_command();
        let bot = Bot::new(&env, commands, eraser.clone()).await;
        bot.send(vec![
            u::message(9, "/forgetme@otherbot"),
            u::message(9, "/removemydata"),
            u::message(9, "/mydata"),
        ])
        .await;
        assert_eq!(bot.seen.load(Ordering::SeqCst), 3, "none of these is ours");
        assert!(bot.api.sent_to("sendmessage", 9).is_empty());

        bot.send(vec![u::message(9, &format!("/forgetme@{BOT_USERNAME}"))]).await;
        assert_eq!(bot.buttons(9).len(), 2);
        let names: Vec<String> = bot.retention.bot_commands().into_iter().map(|c| c.command).collect();
        assert_eq!(names, ["forgetme", "privacy"]);
    }

    async fn mydata_sends_a_json_file_with_what_everyone_holds(env) {
        let eraser = Recorder::new("profiles");
        let retention = env.bare_builder().await.inactive_after(90 * DAY)
            .erase_with(eraser)
            .erase_with(erase_fn("sessions", |_: Erasure| async { Ok::<_, BoxError>(()) }))
            .build().unwrap();
        let bot = Bot { api: FakeBotApi::start().await, retention, seen: Arc::default() };
        bot.send(vec![u::message(10, "hello"), u::message(10, "/mydata please")]).await;

        let documents = bot.api.sent_to("senddocument", 10);
        assert_eq!(documents.len(), 1);
        let raw = &documents[0].raw;
        assert_eq!(multipart_field(raw, "caption").unwrap(), "All data this bot keeps about you.");
        assert!(String::from_utf8_lossy(raw).contains("filename=\"my-data-10.json\""));
        let document = uploaded_file(raw, "document").unwrap();
        let json: Value = serde_json::from_str(&document).unwrap();
        assert_eq!(json["user_id"], 10);
        assert_eq!(json["retention"]["status"], "active");
        assert_eq!(json["retention"]["last_seen"], "2023-11-14T22:13:20+00:00");
        assert_eq!(json["policy"]["inactive_after_days"], 90.0);
        assert_eq!(json["bot_data"][0]["name"], "profiles");
        assert_eq!(json["bot_data"][0]["data"]["user"], 10);
        assert_eq!(json["bot_data"][1]["name"], "sessions");
        assert_eq!(json["bot_data"][1]["held"], "held, no export");
    }

    async fn a_too_large_export_is_refused_with_a_clear_message(env) {
        struct Big;
        impl teloxide_retention::Eraser for Big {
            fn name(&self) -> &str { "archive" }
            async fn erase(&self, _: Erasure) -> Result<(), BoxError> { Ok(()) }
            async fn export(&self, _: UserId) -> Result<teloxide_retention::Export, BoxError> {
                Ok(teloxide_retention::Export::Data(Value::String("x".repeat(4000))))
            }
        }
        let retention = env.bare_builder().await.inactive_after(90 * DAY)
            .commands(Commands::default().max_export_bytes(2048))
            .erase_with(Big).build().unwrap();
        let bot = Bot { api: FakeBotApi::start().await, retention, seen: Arc::default() };
        bot.send(vec![u::message(11, "/mydata")]).await;
        assert!(bot.api.sent_to("senddocument", 11).is_empty());
        let text = bot.last_text(11);
        assert!(text.starts_with("Your data export is too large to send here (4.3 KiB)."), "{text}");
    }

    async fn each_user_may_use_the_commands_a_few_times_per_hour(env) {
        let bot = Bot::new(&env, Commands::default(), Recorder::new("profiles")).await;
        let updates = (0..6).map(|_| u::message(12, "/mydata")).collect();
        bot.send(updates).await;
        assert_eq!(bot.api.sent_to("senddocument", 12).len(), 5);
        assert_eq!(bot.last_text(12), "You have used /mydata too often. Please try again later.");
        // Another user is not affected; the same user is again after the window.
        bot.send(vec![u::message(13, "/mydata")]).await;
        assert_eq!(bot.api.sent_to("senddocument", 13).len(), 1);
        env.clock.advance(Duration::from_secs(3600));
        bot.send(vec![u::message(12, "/mydata")]).await;
        assert_eq!(bot.api.sent_to("senddocument", 12).len(), 6);

        if env.redis.is_some() {
            // The counters expire with their window: nothing outlives it.
            let mut conn = env.redis_connection();
            let keys: Vec<String> = redis::cmd("KEYS").arg("{retention}:rate:*").query(&mut conn).unwrap();
            assert!(!keys.is_empty());
            for key in keys {
                let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
                assert!(ttl > 0 && ttl <= 3_600_000, "{key} lives {ttl} ms");
            }
        }
    }

    async fn privacy_states_the_configured_policy(env) {
        let commands = Commands::default().privacy_footer("Contact: privacy@example.org");
        let bot = Bot::new(&env, commands, Recorder::new("profiles")).await;
        bot.send(vec![u::group_message(14, "/privacy")]).await;
        let text = bot.last_text(u::GROUP);
        for expected in [
            "your Telegram user id and the time of your last interaction",
            "the bot's own records: profiles.",
            "when you have not used the bot for 90 days",
            "deleted after 7 days, unless you unblock the bot",
            "Send /removemydata to delete all your data now.",
            "Send /mydata to get a copy of your data as a file.",
            "Contact: privacy@example.org",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(text, bot.retention.privacy_text());
    }

    async fn an_update_handled_during_the_erasure_triggers_a_follow_up(env) {
        let gate = Arc::new(Gate::default());
        let eraser = Recorder::new("profiles").gated(Arc::clone(&gate));
        let bot = Arc::new(Bot::new(&env, Commands::default(), eraser.clone()).await);
        let (confirm, _) = bot.prompt(15).await;
        let confirming = tokio::spawn({
            let bot = Arc::clone(&bot);
            async move { bot.send(vec![u::callback(15, u::private_chat(15), &confirm)]).await }
        });
        gate.entered.notified().await;
        // While the erasers run, the user writes in a group the bot is in.
        bot.send(vec![u::group_message(15, "meanwhile")]).await;
        gate.release.notify_one();
        confirming.await.unwrap();

        assert_eq!(bot.last_text(15), "Done: all data this bot kept about you has been deleted.");
        let status = bot.retention.status(UserId(15)).await.unwrap();
        assert!(status.last_seen.is_some(), "the in-flight update is tracked, not lost");
        assert_eq!(status.erasure.unwrap().reason, ErasureReason::OptOut, "a follow-up erasure");
        env.clock.advance(Duration::from_secs(61));
        gate.release.notify_one();
        assert_eq!(bot.retention.prune_once().await.unwrap().erased, 1);
        assert_eq!(eraser.erased(15), 2);
        let status = bot.retention.status(UserId(15)).await.unwrap();
        assert_eq!((status.last_seen, status.erasure), (None, None));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_work_with_an_adaptor_bot() {
    use teloxide::adaptors::DefaultParseMode;
    use teloxide::dispatching::Dispatcher;
    use teloxide::error_handlers::LoggingErrorHandler;
    use teloxide::types::ParseMode;

    let env = Env::memory();
    let api = FakeBotApi::start().await;
    let retention = env.bare_builder().await.inactive_after(90 * DAY).build().unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let bot = api.bot().parse_mode(ParseMode::Html);
    let handler = retention.wrap_for::<DefaultParseMode<teloxide::Bot>, _>(tree(&seen));
    let mut dispatcher = Dispatcher::builder(bot, handler).build();
    let updates = vec![u::message(16, "/privacy"), u::message(16, "hello")];
    crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new()).await;

    let sent = api.sent_to("sendmessage", 16);
    assert_eq!(sent.len(), 1);
    assert!(sent[0].text().unwrap().starts_with("How this bot handles your data"));
    assert_eq!(sent[0].body["parse_mode"], "HTML", "sent through the adaptor");
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    assert!(retention.status(UserId(16)).await.unwrap().last_seen.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn texts_are_escaped_and_sent_as_html_whatever_the_bots_default_parse_mode() {
    // Before the fix: with `DefaultParseMode<Bot>` and MarkdownV2 (a common setup) the texts
    // went out unescaped with that parse mode: `/privacy`, the `/mydata` caption and "Done"
    // contain a raw `.`, which Telegram rejects in MarkdownV2. An eraser name or a footer
    // with `<` broke HTML the same way.
    use teloxide::adaptors::DefaultParseMode;
    use teloxide::dispatching::Dispatcher;
    use teloxide::error_handlers::LoggingErrorHandler;
    use teloxide::types::ParseMode;

    let env = Env::memory();
    let api = FakeBotApi::start().await;
    let commands = Commands::default().privacy_footer("Contact: <privacy@example.org> & co.");
    let retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .commands(commands)
        .erase_with(Recorder::new("notes <v2>"))
        .build()
        .unwrap();
    let seen = Arc::new(AtomicUsize::new(0));
    let bot = api.bot().parse_mode(ParseMode::MarkdownV2);
    let handler = retention.wrap_for::<DefaultParseMode<teloxide::Bot>, _>(tree(&seen));
    let mut dispatcher = Dispatcher::builder(bot, handler).build();
    let updates = vec![
        u::message(17, "/privacy"),
        u::message(17, "/removemydata"),
        u::message(17, "/mydata"),
    ];
    crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new()).await;

    let sent = api.sent_to("sendmessage", 17);
    assert_eq!(sent.len(), 2);
    for message in &sent {
        assert_eq!(message.body["parse_mode"], "HTML", "an explicit parse mode wins");
    }
    let privacy = sent[0].text().unwrap();
    assert!(privacy.ends_with("Contact: &lt;privacy@example.org&gt; &amp; co."), "{privacy}");
    let prompt = sent[1].text().unwrap();
    assert!(prompt.contains("notes &lt;v2&gt;"), "{prompt}");
    let document = &api.sent_to("senddocument", 17)[0];
    assert_eq!(multipart_field(&document.raw, "parse_mode").unwrap(), "HTML");
    assert_eq!(
        multipart_field(&document.raw, "caption").unwrap(),
        "All data this bot keeps about you."
    );
}
