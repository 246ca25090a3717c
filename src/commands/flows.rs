//! What the privacy commands do, for any bot type `R`.

use dptree::di::DependencyMap;
use teloxide::RequestError;
use teloxide::payloads::{
    AnswerCallbackQuerySetters, EditMessageTextSetters, SendDocumentSetters, SendMessageSetters,
};
use teloxide::prelude::Requester;
use teloxide::requests::Request;
use teloxide::types::{
    CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile, Me, Message,
    ParseMode, Update, UpdateKind, UserId,
};
use teloxide::utils::html;

use crate::clock::duration_ms;
use crate::commands::privacy::{human_bytes, privacy_text};
use crate::commands::{Commands, Texts};
use crate::humans::is_trackable;
use crate::parts::Parts;
use crate::rights::OptOutOutcome;
use crate::store::random_id;

/// Callback data of the confirmation buttons: `rtn:rm:<requester>:<nonce>:<y|n>`.
const CALLBACK_PREFIX: &str = "rtn:rm:";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Command {
    Remove,
    Export,
    Privacy,
}

impl Commands {
    /// A cheap pre-check, run for every update: could this be a privacy command or one of
    /// its buttons?
    pub(crate) fn may_handle(&self, update: &Update) -> bool {
        match &update.kind {
            UpdateKind::Message(msg) => msg.text().is_some_and(|t| t.starts_with('/')),
            UpdateKind::CallbackQuery(q) => {
                q.data.as_deref().is_some_and(|d| d.starts_with(CALLBACK_PREFIX))
            }
            _ => false,
        }
    }
}

/// The privacy commands at work on one update: their configuration and the shared parts they
/// export and erase with.
pub(crate) struct Flows<'a> {
    pub(crate) parts: &'a Parts,
    pub(crate) commands: &'a Commands,
}

impl Flows<'_> {
    /// Answers the update if it is one of the privacy commands or their buttons; returns
    /// `true` if it was (the wrapped handler does not see it then).
    pub(crate) async fn run<R>(&self, update: &Update, deps: &DependencyMap) -> bool
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let commands = self.commands;
        let (Some(bot), Some(me)) = (deps.try_get::<R>(), deps.try_get::<Me>()) else {
            return false;
        };
        match &update.kind {
            UpdateKind::Message(msg) => {
                let Some(command) = parse(commands, msg, &me) else { return false };
                self.on_command(&*bot, &me, msg, command).await;
                true
            }
            UpdateKind::CallbackQuery(query) => {
                let Some(data) =
                    query.data.as_deref().and_then(|d| d.strip_prefix(CALLBACK_PREFIX))
                else {
                    return false;
                };
                self.on_button(&*bot, query, data).await;
                true
            }
            _ => false,
        }
    }

    async fn on_command<R>(&self, bot: &R, me: &Me, msg: &Message, command: Command)
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let commands = self.commands;
        let Some(from) = msg.from.as_ref() else { return };
        let (user, language) = (from.id, from.language_code.as_deref());
        let texts = commands.texts_for(language);
        let chat = msg.chat.id;
        let name = match command {
            Command::Remove => commands.remove.as_deref(),
            Command::Export => commands.export.as_deref(),
            Command::Privacy => commands.privacy.as_deref(),
        }
        .unwrap_or_default();
        let slash = format!("/{name}");

        if command == Command::Privacy {
            self.say(bot, chat, privacy_text(Some(commands), self.parts, language), None).await;
            return;
        }
        if !msg.chat.is_private() && !commands.answer_in_groups {
            // Nothing in the group reveals what the user asked for or holds.
            let mut url = me.tme_url();
            url.set_query(Some(&format!("start={name}")));
            let button = InlineKeyboardButton::url(texts.open_private_chat.clone(), url);
            let text = texts.use_private_chat.replace("{command}", &slash);
            self.say(bot, chat, text, Some(InlineKeyboardMarkup::new([[button]]))).await;
            return;
        }
        match self.within_rate_limit(user, command).await {
            Ok(true) => {}
            Ok(false) => {
                self.say(bot, chat, texts.rate_limited.replace("{command}", &slash), None).await;
                return;
            }
            Err(()) => {
                self.say(bot, chat, texts.unavailable.clone(), None).await;
                return;
            }
        }
        match command {
            Command::Remove => self.ask_to_confirm(bot, texts, chat, user).await,
            Command::Export => self.send_export(bot, texts, chat, user).await,
            Command::Privacy => {}
        }
    }

    async fn within_rate_limit(&self, user: UserId, command: Command) -> Result<bool, ()> {
        let commands = self.commands;
        let action = if command == Command::Remove { "erase" } else { "export" };
        let window_ms = duration_ms(commands.window).max(1);
        let window = self.parts.now_ms().div_euclid(window_ms);
        let counted = async {
            let who = self.parts.hashed(user).await?;
            self.parts.door.call(|b| b.count_use(&who, action, window, window_ms)).await
        };
        match counted.await {
            Ok(count) => Ok(count <= u64::from(commands.uses_per_window)),
            Err(e) => {
                tracing::warn!(error = %e, "could not check the privacy commands' rate limit");
                Err(())
            }
        }
    }

    async fn ask_to_confirm<R>(&self, bot: &R, texts: &Texts, chat: ChatId, user: UserId)
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let commands = self.commands;
        let nonce = random_id();
        let issued = self.parts.now_ms();
        let ttl = duration_ms(commands.confirm_within);
        let stored = async {
            let who = self.parts.hashed(user).await?;
            let value = format!("{nonce:016x}:{issued}");
            self.parts.door.call(|b| b.put_nonce(&who, value, ttl)).await
        };
        if let Err(e) = stored.await {
            tracing::warn!(error = %e, "could not store a /removemydata confirmation");
            self.say(bot, chat, texts.unavailable.clone(), None).await;
            return;
        }
        let mut text = texts.remove_prompt.clone();
        for item in texts.stored_items(self.parts.eraser_names()) {
            text.push_str("\n• ");
            text.push_str(&item);
        }
        let data = |answer: &str| format!("{CALLBACK_PREFIX}{}:{nonce:016x}:{answer}", user.0);
        let keyboard = InlineKeyboardMarkup::new([
            [InlineKeyboardButton::callback(texts.confirm_button.clone(), data("y"))],
            [InlineKeyboardButton::callback(texts.cancel_button.clone(), data("n"))],
        ]);
        self.say(bot, chat, text, Some(keyboard)).await;
    }

    async fn on_button<R>(&self, bot: &R, query: &CallbackQuery, data: &str)
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let commands = self.commands;
        let texts = commands.texts_for(query.from.language_code.as_deref());
        let slash = format!("/{}", commands.remove.as_deref().unwrap_or_default());
        let expired = texts.expired.replace("{command}", &slash);
        // The erased user is always the presser (`from`); the id in the data only tells
        // whether the presser is the user who asked.
        let presser = query.from.id;
        let parts: Vec<&str> = data.split(':').collect();
        let [requester, nonce, answer] = parts.as_slice() else {
            self.answer(bot, query, Some(&expired)).await;
            return;
        };
        if commands.remove.is_none() || !is_trackable(&query.from) {
            self.answer(bot, query, Some(&expired)).await;
            return;
        }
        if *requester != presser.0.to_string() {
            self.answer(bot, query, Some(&texts.not_yours)).await;
            return;
        }
        let taken = async {
            let who = self.parts.hashed(presser).await?;
            self.parts.door.call(|b| b.take_nonce(&who)).await
        };
        let stored = match taken.await {
            Ok(stored) => stored,
            Err(e) => {
                tracing::warn!(error = %e, "could not read a /removemydata confirmation");
                self.answer(bot, query, Some(&texts.unavailable)).await;
                return;
            }
        };
        let now = self.parts.now_ms();
        let fresh = stored.as_deref().and_then(|s| s.split_once(':')).is_some_and(|(n, issued)| {
            n == *nonce
                && issued
                    .parse::<i64>()
                    .is_ok_and(|t| now.saturating_sub(t) <= duration_ms(commands.confirm_within))
        });
        if !fresh {
            self.answer(bot, query, Some(&expired)).await;
            self.replace_prompt(bot, query, expired.clone()).await;
            return;
        }
        self.answer(bot, query, None).await;
        if *answer != "y" {
            self.replace_prompt(bot, query, texts.cancelled.clone()).await;
            return;
        }
        self.replace_prompt(bot, query, texts.removing.clone()).await;
        let text = match crate::store::Budget::exempt(crate::rights::erase_user(
            self.parts, presser,
        ))
        .await
        {
            Ok(OptOutOutcome::Erased { .. }) => texts.removed.clone(),
            Ok(OptOutOutcome::Retrying { failed }) => {
                texts.removal_pending.replace("{failed}", &failed.len().to_string())
            }
            Ok(OptOutOutcome::AlreadyRunning) => texts.removal_running.clone(),
            Err(e) => {
                tracing::warn!(error = %e, user = presser.0, "opt-out could not start");
                texts.unavailable.clone()
            }
        };
        self.replace_prompt(bot, query, text).await;
    }

    async fn send_export<R>(&self, bot: &R, texts: &Texts, chat: ChatId, user: UserId)
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let commands = self.commands;
        let labels = crate::rights::ExportTexts {
            descriptions: &texts.eraser_descriptions,
            undescribed: &texts.other_records,
            note: &texts.export_note,
            no_copy: &texts.export_no_copy,
            unreadable: &texts.export_unreadable,
        };
        let document = match crate::rights::export(self.parts, user, Some(&labels)).await {
            Ok(document) => document,
            Err(e) => {
                tracing::warn!(error = %e, "could not build a /mydata export");
                self.say(bot, chat, texts.unavailable.clone(), None).await;
                return;
            }
        };
        let bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
        if bytes.len() > commands.max_export_bytes {
            let text = texts.export_too_large.replace("{size}", &human_bytes(bytes.len()));
            self.say(bot, chat, text, None).await;
            return;
        }
        // The file always goes to the private chat, also when asked in a group.
        let private = ChatId(user.0 as i64);
        let file = InputFile::memory(bytes).file_name(format!("my-data-{}.json", user.0));
        let sending = bot
            .send_document(private, file)
            .caption(html::escape(&texts.export_caption))
            .parse_mode(ParseMode::Html)
            .send();
        if let Err(e) = sending.await {
            self.failed_send(private, &e).await;
            if private != chat {
                let slash = format!("/{}", commands.export.as_deref().unwrap_or_default());
                let text = texts.use_private_chat.replace("{command}", &slash);
                self.say(bot, chat, text, None).await;
            }
        }
    }

    async fn say<R>(
        &self,
        bot: &R,
        chat: ChatId,
        text: String,
        keyboard: Option<InlineKeyboardMarkup>,
    ) where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        // Requests are not `Send`; only their futures are, so build the future in a scope.
        // Texts are plain text, sent escaped with an explicit parse mode: a bot adaptor's
        // default parse mode (`DefaultParseMode`) fills in only where none is set.
        let sending = {
            let request = bot.send_message(chat, html::escape(&text)).parse_mode(ParseMode::Html);
            match keyboard {
                Some(keyboard) => request.reply_markup(keyboard).send(),
                None => request.send(),
            }
        };
        if let Err(e) = sending.await {
            self.failed_send(chat, &e).await;
        }
    }

    async fn answer<R>(&self, bot: &R, query: &CallbackQuery, text: Option<&str>)
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let answering = {
            let request = bot.answer_callback_query(query.id.clone());
            match text {
                Some(text) => request.text(text).show_alert(true).send(),
                None => request.send(),
            }
        };
        if let Err(e) = answering.await {
            tracing::warn!(error = %e, "could not answer a callback query");
        }
    }

    /// Replaces the confirmation message (and its buttons) with `text`; sends a new message
    /// if it cannot be edited.
    async fn replace_prompt<R>(&self, bot: &R, query: &CallbackQuery, text: String)
    where
        R: Requester<Err = RequestError> + Clone + Send + Sync + 'static,
    {
        let Some(message) = &query.message else {
            self.say(bot, ChatId(query.from.id.0 as i64), text, None).await;
            return;
        };
        let chat = message.chat().id;
        let editing = bot
            .edit_message_text(chat, message.id(), html::escape(&text))
            .parse_mode(ParseMode::Html)
            .send();
        if editing.await.is_err() {
            self.say(bot, chat, text, None).await;
        }
    }

    async fn failed_send(&self, chat: ChatId, err: &RequestError) {
        tracing::warn!(error = %err, chat = chat.0, "a privacy command could not answer");
        if let Err(e) = self.parts.tracker.note_send_error(chat, err).await {
            tracing::warn!(error = %e, "could not mark a gone user");
        }
    }
}

/// Which privacy command a message is, if any.
fn parse(commands: &Commands, msg: &Message, me: &Me) -> Option<Command> {
    msg.from.as_ref().filter(|u| is_trackable(u))?;
    let mut words = msg.text()?.split_whitespace();
    let first = words.next()?.strip_prefix('/')?;
    let (name, addressee) = match first.split_once('@') {
        Some((name, bot)) => (name, Some(bot)),
        None => (first, None),
    };
    if let Some(addressee) = addressee
        && !me.user.username.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(addressee))
    {
        return None;
    }
    let is = |configured: &Option<String>, word: &str| {
        configured.as_deref().is_some_and(|c| c.eq_ignore_ascii_case(word))
    };
    // The "Open private chat" button of a group answer starts the bot with the command.
    let name = if name.eq_ignore_ascii_case("start") && msg.chat.is_private() {
        let payload = words.next()?;
        if !(is(&commands.remove, payload) || is(&commands.export, payload)) {
            return None;
        }
        payload
    } else {
        name
    };
    if is(&commands.remove, name) {
        Some(Command::Remove)
    } else if is(&commands.export, name) {
        Some(Command::Export)
    } else if is(&commands.privacy, name) {
        Some(Command::Privacy)
    } else {
        None
    }
}
