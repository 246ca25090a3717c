//! The privacy commands, through the real handler tree and a fake Bot API: what the user
//! receives, the keyboard, and the store and erasers afterwards.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use teloxide::RequestError;
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide_retention::{BoxError, Commands, Erasure, ErasureReason, Retention, Texts, erase_fn};

use crate::common::bot_api::{BOT_USERNAME, multipart_field, uploaded_file};
use crate::common::{DAY, Env, FakeBotApi, dispatch, updates as u};
use crate::every_store;
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

every_store! {
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
        assert!(
            prompt.ends_with(
                "• the time of your last interaction with this bot\n\
                 • the other records this bot keeps about you"
            ),
            "two undescribed erasers are one item, without their internal names: {prompt}"
        );
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

    async fn malformed_confirmations_erase_nobody_and_say_the_prompt_expired(env) {
        let eraser = Recorder::new("profiles");
        let bot = Bot::new(&env, Commands::default(), eraser.clone()).await;
        let (confirm, _) = bot.prompt(30).await;
        let expired = "This confirmation has expired or was already used. Send /removemydata again.";
        // Shapes the bot never sends: answered before the stored confirmation is read, so
        // the real button still works afterwards.
        let malformed = [
            "rtn:rm:", "rtn:rm:30", "rtn:rm:30:", "rtn:rm:30:n", "rtn:rm:30:a:b:c:y",
        ];
        for data in malformed {
            bot.send(vec![u::callback(30, u::private_chat(30), data)]).await;
        }
        // Another requester's id, however written: not the presser's button.
        for data in ["rtn:rm:31:n:y", "rtn:rm:abc:n:y", "rtn:rm:-30:n:y", "rtn:rm:030:n:y", "rtn:rm:::"] {
            bot.send(vec![u::callback(30, u::private_chat(30), data)]).await;
        }
        let answers = bot.callback_answers();
        assert_eq!(answers.len(), malformed.len() + 5, "every press is answered: {answers:?}");
        let (shapes, others) = answers.split_at(malformed.len());
        assert!(shapes.iter().all(|a| a.as_deref() == Some(expired)), "{answers:?}");
        assert!(others.iter().all(|a| a.as_deref() == Some("This button is for someone else.")), "{answers:?}");
        assert!(eraser.calls().is_empty());
        assert!(bot.retention.status(UserId(30)).await.unwrap().last_seen.is_some());

        // The real confirmation, pressed on a message sent in inline mode (no chat to edit):
        // it erases the presser and says so in their private chat.
        bot.send(vec![u::inline_callback(30, &confirm)]).await;
        assert_eq!(eraser.reasons(30), [ErasureReason::OptOut]);
        assert_eq!(bot.last_text(30), "Done: all data this bot kept about you has been deleted.");

        // A wrong nonce of the right user uses the confirmation up: a guess gets one try.
        let (confirm, _) = bot.prompt(30).await;
        let guess = format!("rtn:rm:30:{}:y", "0".repeat(16));
        bot.send(vec![u::callback(30, u::private_chat(30), &guess)]).await;
        bot.send(vec![u::callback(30, u::private_chat(30), &confirm)]).await;
        assert_eq!(eraser.erased(30), 1, "{:?}", bot.callback_answers());
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
        // Erasers without a description are labelled as the lists label them, never by
        // their internal names.
        assert_eq!(json["bot_data"][0]["name"], "the other records this bot keeps about you");
        assert_eq!(json["bot_data"][0]["data"]["user"], 10);
        assert_eq!(json["bot_data"][1]["name"], "the other records this bot keeps about you");
        assert_eq!(json["bot_data"][1]["held"], "kept, but this bot cannot make a copy of it");
        assert!(!document.contains("sessions"), "{document}");
    }

    async fn mydata_speaks_the_users_language_and_names_no_internal_eraser(env) {
        // Measured before the fix: every entry was labelled with the eraser's internal name
        // (`"name": "tbl_orders_v2"`) and the notes were English for every user.
        let mut german = Texts::german();
        german.eraser_descriptions.insert("tbl_orders_v2".into(), "Ihre Bestellungen".into());
        let retention = env.bare_builder().await.inactive_after(90 * DAY)
            .commands(Commands::default().language("de", german))
            .erase_with(Recorder::new("tbl_orders_v2"))
            .erase_with(erase_fn("sessions", |_: Erasure| async { Ok::<_, BoxError>(()) }))
            .build().unwrap();
        let bot = Bot { api: FakeBotApi::start().await, retention, seen: Arc::default() };
        bot.send(vec![u::in_language(u::message(11, "/mydata"), "de")]).await;
        let documents = bot.api.sent_to("senddocument", 11);
        let document = uploaded_file(&documents[0].raw, "document").unwrap();
        let json: Value = serde_json::from_str(&document).unwrap();
        assert_eq!(json["bot_data"][0]["name"], "Ihre Bestellungen");
        assert_eq!(json["bot_data"][1]["name"], "die übrigen Daten, die dieser Bot über Sie speichert");
        assert_eq!(json["bot_data"][1]["held"], "gespeichert, aber dieser Bot kann davon keine Kopie erstellen");
        assert!(json["retention"]["note"].as_str().unwrap().starts_with("Gespeichert wird nur"));
        // (The eraser's own data may say anything; the labels and notes name no eraser.)
        let labels: Vec<&Value> = json["bot_data"].as_array().unwrap().iter().map(|e| &e["name"]).collect();
        assert!(!format!("{labels:?}").contains("tbl_orders_v2"), "{labels:?}");
        assert!(!document.contains("sessions"), "{document}");
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
            let keys: Vec<String> = redis::cmd("KEYS").arg("{retention*}:rate:*").query(&mut conn).unwrap();
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
            "What is stored: your Telegram user id; the time of your last interaction with this \
             bot; the other records this bot keeps about you.",
            "when you have not used the bot for 90 days",
            "deleted after 7 days, unless you unblock the bot",
            "Send /removemydata to delete all your data now.",
            "Send /mydata to get a copy of your data as a file.",
            "Contact: privacy@example.org",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(text, bot.retention.privacy_text(None));
        assert!(!text.contains("profiles"), "internal eraser names stay internal:\n{text}");
    }

    async fn the_commands_speak_the_users_language(env) {
        let mut english = Texts::english();
        english.eraser_descriptions.insert("profiles".into(), "your profile".into());
        let mut german = Texts::german();
        german.eraser_descriptions.insert("profiles".into(), "Ihr Profil".into());
        let commands = Commands::default().texts(english).language("de", german);
        let bot = Bot::new(&env, commands, Recorder::new("profiles")).await;
        let privacy = |user: u64, code: &str| u::in_language(u::message(user, "/privacy"), code);
        bot.send(vec![privacy(14, "en"), privacy(15, "de"), privacy(16, "DE-at"), privacy(17, "fr")])
            .await;

        let english = bot.last_text(14);
        assert!(english.contains("your Telegram user id; the time of your last interaction with \
                                  this bot; your profile."), "{english}");
        let german = bot.last_text(15);
        for expected in [
            "Wie dieser Bot mit Ihren Daten umgeht",
            "Ihre Telegram-Nutzer-ID; der Zeitpunkt Ihrer letzten Nutzung dieses Bots; Ihr Profil.",
            "Wenn Sie den Bot 90 Tage lang nicht genutzt haben",
            "nach einer Wartezeit (7 Tage) gelöscht",
            "Senden Sie /removemydata, um jetzt alle Ihre Daten zu löschen.",
        ] {
            assert!(german.contains(expected), "missing {expected:?} in:\n{german}");
        }
        assert_eq!(german, bot.retention.privacy_text(Some("de")));
        assert_eq!(bot.last_text(16), german, "a regional code falls back to its language");
        assert_eq!(bot.last_text(17), english, "an unknown language gets the fallback");

        bot.send(vec![u::in_language(u::message(15, "/removemydata"), "de")]).await;
        let prompt = bot.last_text(15);
        assert!(prompt.starts_with("Alle Daten löschen"), "{prompt}");
        assert!(prompt.ends_with("• der Zeitpunkt Ihrer letzten Nutzung dieses Bots\n• Ihr Profil"), "{prompt}");
        let buttons = bot.buttons(15);
        assert_eq!((buttons[0].0.as_str(), buttons[1].0.as_str()), ("Ja, meine Daten löschen", "Abbrechen"));

        let described = |commands: Vec<teloxide::types::BotCommand>| -> Vec<String> {
            commands.into_iter().map(|c| c.description).collect()
        };
        assert_eq!(bot.retention.command_languages(), ["de"]);
        assert_eq!(described(bot.retention.bot_commands_in("de"))[2], "Wie dieser Bot mit Ihren Daten umgeht");
        assert_eq!(described(bot.retention.bot_commands())[2], "How this bot handles your data");
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
async fn the_whole_opt_out_works_with_throttle_over_cache_me() {
    use teloxide::adaptors::throttle::Limits;
    use teloxide::adaptors::{CacheMe, Throttle};
    use teloxide::dispatching::Dispatcher;
    use teloxide::error_handlers::LoggingErrorHandler;

    let env = Env::memory();
    let eraser = Recorder::new("profiles");
    let retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .erase_with(eraser.clone())
        .build()
        .unwrap();
    let api = FakeBotApi::start().await;
    let seen = Arc::new(AtomicUsize::new(0));
    type Stack = Throttle<CacheMe<teloxide::Bot>>;
    let run = |updates: Vec<Value>| {
        let (api, retention, seen) = (&api, &retention, &seen);
        async move {
            let bot: Stack = api.bot().cache_me().throttle(Limits::default());
            let handler = retention.wrap_for::<Stack, _>(tree(seen));
            let mut dispatcher = Dispatcher::builder(bot, handler).build();
            crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new())
                .await;
        }
    };
    run(vec![u::message(18, "hello"), u::message(18, "/removemydata")]).await;
    let confirm = api.sent_to("sendmessage", 18).last().expect("the prompt").buttons()[0].1.clone();
    run(vec![u::callback(18, u::private_chat(18), &confirm)]).await;

    assert_eq!(
        api.texts_to(18).pop().as_deref(),
        Some("Done: all data this bot kept about you has been deleted.")
    );
    assert_eq!(eraser.erased(18), 1);
    assert_eq!(seen.load(Ordering::SeqCst), 1, "only the plain message reached the tree");
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

    const RESERVED: &str = "_*[]()~>#+-=|{}.!<&";
    let env = Env::memory();
    let mut texts = Texts::english();
    texts.eraser_descriptions.insert("notes".into(), format!("your notes {RESERVED}"));
    let footer = format!("Contact: <privacy@example.org> & co. {RESERVED}");
    let commands = Commands::default().texts(texts).privacy_footer(footer);
    let retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .commands(commands)
        .erase_with(Recorder::new("notes"))
        .build()
        .unwrap();
    let modes = [None, Some(ParseMode::Html), Some(ParseMode::MarkdownV2)];
    #[allow(deprecated)] // Legacy Markdown is deprecated, and still what some bots use.
    let modes = modes.into_iter().chain([Some(ParseMode::Markdown)]);
    for (i, mode) in modes.enumerate() {
        let user = 17 + i as u64;
        let api = FakeBotApi::start().await;
        let seen = Arc::new(AtomicUsize::new(0));
        let updates = vec![
            u::message(user, "/privacy"),
            u::message(user, "/removemydata"),
            u::message(user, "/mydata"),
        ];
        match mode {
            None => {
                let handler = retention.wrap(tree(&seen));
                let mut dispatcher = Dispatcher::builder(api.bot(), handler).build();
                crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new())
                    .await;
            }
            Some(mode) => {
                let handler = retention.wrap_for::<DefaultParseMode<teloxide::Bot>, _>(tree(&seen));
                let mut dispatcher =
                    Dispatcher::builder(api.bot().parse_mode(mode), handler).build();
                crate::common::dispatch_with(&mut dispatcher, updates, LoggingErrorHandler::new())
                    .await;
            }
        }
        let confirm = api.sent_to("sendmessage", user as i64)[1].buttons()[0].1.clone();
        let press = u::callback(user, u::private_chat(user), &confirm);
        dispatch(&api, retention.wrap(tree(&seen)), vec![press]).await;

        let mut texts: Vec<(String, serde_json::Value)> = Vec::new();
        for method in ["sendmessage", "editmessagetext"] {
            for request in api.sent_to(method, user as i64) {
                texts
                    .push((request.text().unwrap().to_owned(), request.body["parse_mode"].clone()));
            }
        }
        let document = &api.sent_to("senddocument", user as i64)[0];
        texts.push((
            multipart_field(&document.raw, "caption").unwrap(),
            multipart_field(&document.raw, "parse_mode").unwrap().into(),
        ));
        assert_eq!(texts.len(), 5, "privacy, prompt, removing, done, caption: {texts:?}");
        for (text, parse_mode) in &texts {
            assert_eq!(parse_mode, "HTML", "{mode:?}: an explicit parse mode wins: {text}");
            assert_valid_html(text);
        }
        let privacy = &texts[0].0;
        assert!(
            privacy.contains(
                "Contact: &lt;privacy@example.org&gt; &amp; co. _*[]()~&gt;#+-=|{}.!&lt;&amp;"
            ),
            "{privacy}"
        );
        let prompt = &texts[1].0;
        assert!(prompt.contains("your notes _*[]()~&gt;#+-=|{}.!&lt;&amp;"), "{prompt}");
    }
}

/// Telegram's HTML parse mode: `<`, `>` and `&` only as tags and entities (the texts have
/// no tags), every other character literal.
fn assert_valid_html(text: &str) {
    assert!(!text.contains(['<', '>']), "a raw tag character in {text:?}");
    for (i, _) in text.match_indices('&') {
        let entity = ["&lt;", "&gt;", "&amp;", "&quot;"].iter().any(|e| text[i..].starts_with(e));
        assert!(entity, "a raw & in {text:?}");
    }
}

async fn an_opt_out_leaves_the_id_only_in_the_feed_for_its_window(receipts: bool) {
    // Measured before the fix: after a /removemydata opt-out the id stayed in the key name
    // `{ns}:rate:erase:<id>:<window>` for the whole rate-limit window (hours or days).
    let env = Env::redis();
    let user: u64 = 7_364_019_258;
    let mut builder = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .commands(Commands::default().rate_limit(3, Duration::from_secs(30 * 86_400)))
        .erase_with(Recorder::new("profiles"));
    if receipts {
        let key =
            teloxide_retention::ReceiptKey::new(*b"an example key of thirty-two b.!").unwrap();
        builder = builder.receipts(key, 60 * DAY);
    }
    let bot = Bot {
        api: FakeBotApi::start().await,
        retention: builder.build().unwrap(),
        seen: Arc::default(),
    };
    bot.send(vec![u::message(user, "hello")]).await;
    let (confirm, _) = bot.prompt(user).await;
    bot.send(vec![u::callback(user, u::private_chat(user), &confirm)]).await;
    assert_eq!(bot.retention.status(UserId(user)).await.unwrap().last_seen, None);

    let mut conn = env.redis_connection();
    let all = crate::support::dump(&mut conn);
    let id = user.to_string();
    assert!(all.iter().any(|(k, _)| k.contains(":rate:erase:")), "the rate limit is kept: {all:?}");
    for (key, value) in &all {
        if key == "{retention}:feed" {
            // The stated window: the replicas' feed, trimmed to 10 minutes.
            let ttl: i64 = redis::cmd("PTTL").arg(key).query(&mut conn).unwrap();
            assert!(ttl > 0 && ttl <= 10 * 60 * 1000, "the feed expires within its window: {ttl}");
            continue;
        }
        assert!(!key.contains(&id), "the id is in a key name: {key}");
        assert!(!value.contains(&id), "the id is in {key}: {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_leaves_no_id_in_redis_outside_the_feed() {
    an_opt_out_leaves_the_id_only_in_the_feed_for_its_window(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_opt_out_with_receipts_leaves_no_id_in_redis_outside_the_feed() {
    an_opt_out_leaves_the_id_only_in_the_feed_for_its_window(true).await;
}

/// `set_my_commands` keeps the bot's own menu, per language, and adds the privacy commands
/// in that language; German is on by default, `without_language` turns it off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_merged_menu_keeps_the_bots_own_commands_in_every_language() {
    use teloxide::types::BotCommand;
    let api = FakeBotApi::start().await;
    let retention = Env::memory().bare_builder().await.inactive_after(90 * DAY).build().unwrap();
    let own = vec![BotCommand::new("start", "Start"), BotCommand::new("privacy", "Our policy")];
    let own_fr = vec![BotCommand::new("start", "Démarrer")];
    retention.set_my_commands(&api.bot(), &[(None, own), (Some("fr"), own_fr)]).await.unwrap();
    // Each `setMyCommands`: its language and its (command, description) pairs.
    type Menu = (Option<String>, Vec<(String, String)>);
    let menus: Vec<Menu> = api
        .sent()
        .into_iter()
        .filter(|s| s.method == "setmycommands")
        .map(|s| {
            let language = s.body.get("language_code").and_then(Value::as_str).map(str::to_owned);
            let commands = s.body["commands"]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| {
                    (
                        c["command"].as_str().unwrap().into(),
                        c["description"].as_str().unwrap().into(),
                    )
                })
                .collect();
            (language, commands)
        })
        .collect();
    let pairs = |list: &[(&str, &str)]| -> Vec<(String, String)> {
        list.iter().map(|(c, d)| ((*c).into(), (*d).into())).collect()
    };
    assert_eq!(menus.len(), 3, "default, de, fr: {menus:?}");
    assert_eq!(menus[0].0, None);
    // The bot's own /privacy stays (its description too); ours are added after its own.
    assert_eq!(
        menus[0].1,
        pairs(&[
            ("start", "Start"),
            ("privacy", "Our policy"),
            ("removemydata", "Delete all data this bot keeps about you"),
            ("mydata", "Get a copy of your data"),
        ])
    );
    assert_eq!(menus[1].0.as_deref(), Some("de"));
    assert_eq!(menus[1].1[..2], pairs(&[("start", "Start"), ("privacy", "Our policy")])[..]);
    assert_eq!(menus[1].1.len(), 4, "{:?}", menus[1].1);
    assert!(menus[1].1[2].1.contains("Daten"), "German descriptions: {:?}", menus[1].1);
    assert_eq!(menus[2].0.as_deref(), Some("fr"));
    assert_eq!(menus[2].1[0], ("start".to_owned(), "Démarrer".to_owned()));
    assert_eq!(menus[2].1.len(), 4, "English privacy commands for French: {:?}", menus[2].1);

    let english_only = Env::memory()
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .commands(Commands::default().without_language("de"))
        .build()
        .unwrap();
    assert!(english_only.command_languages().is_empty());
}
