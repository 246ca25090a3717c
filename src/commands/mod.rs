//! Ready-made privacy commands: `/removemydata`, `/mydata` and `/privacy`.
mod flows;
mod privacy;

use std::time::Duration;

use teloxide::types::BotCommand;

use crate::error::{Error, Result};
use crate::retention::Retention;

/// Ready-made privacy commands: `/removemydata`, `/mydata` and `/privacy`.
///
/// The layer answers them before the wrapped handler sees the update:
///
/// - **`/removemydata`** replies with what will be deleted and a confirm/cancel keyboard.
///   Confirm erases the user (the store's entries and every eraser) and the reply says
///   "done" only after every eraser succeeded; otherwise it says the truth and the erasure
///   is retried durably by the pruner. The user erased is always the one who pressed the
///   button (the update's `from`), and only if they are the one who asked; a confirmation
///   expires and works once.
/// - **`/mydata`** sends a JSON file with what the crate holds (last interaction, status)
///   and what every exporting eraser returns.
/// - **`/privacy`** states the retention policy, generated from the configuration.
///
/// In groups, `/removemydata` and `/mydata` answer with a pointer to the private chat, so
/// that nobody's request is exposed. `/removemydata@otherbot` is left alone, arguments are
/// ignored, and each user may use `/removemydata` and `/mydata` a few times per hour.
///
/// ```
/// use std::time::Duration;
/// use teloxide_retention::{Commands, MemoryStore, Retention};
///
/// let commands = Commands::default()
///     .remove_command("forgetme")
///     .without_export_command()
///     .privacy_footer("Questions? Write to privacy@example.org.")
///     .rate_limit(2, Duration::from_secs(3600));
/// let retention = Retention::builder(MemoryStore::new())
///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
///     .commands(commands)
///     .build()?;
/// // Merge these into your own `set_my_commands` call:
/// let names: Vec<String> = retention.bot_commands().into_iter().map(|c| c.command).collect();
/// assert_eq!(names, ["forgetme", "privacy"]);
/// # Ok::<(), teloxide_retention::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Commands {
    pub(crate) remove: Option<String>,
    pub(crate) export: Option<String>,
    pub(crate) privacy: Option<String>,
    pub(crate) texts: Texts,
    pub(crate) confirm_within: Duration,
    pub(crate) uses_per_window: u32,
    pub(crate) window: Duration,
    pub(crate) answer_in_groups: bool,
    pub(crate) privacy_footer: Option<String>,
    pub(crate) max_export_bytes: usize,
}

impl Default for Commands {
    fn default() -> Self {
        Self {
            remove: Some("removemydata".to_owned()),
            export: Some("mydata".to_owned()),
            privacy: Some("privacy".to_owned()),
            texts: Texts::default(),
            confirm_within: Duration::from_secs(5 * 60),
            uses_per_window: 5,
            window: Duration::from_secs(3600),
            answer_in_groups: false,
            privacy_footer: None,
            max_export_bytes: 5 * 1024 * 1024,
        }
    }
}

impl Commands {
    /// Renames `/removemydata` (without the slash).
    pub fn remove_command(mut self, name: impl Into<String>) -> Self {
        self.remove = Some(name.into());
        self
    }

    /// Turns `/removemydata` off.
    pub fn without_remove_command(mut self) -> Self {
        self.remove = None;
        self
    }

    /// Renames `/mydata` (without the slash).
    pub fn export_command(mut self, name: impl Into<String>) -> Self {
        self.export = Some(name.into());
        self
    }

    /// Turns `/mydata` off.
    pub fn without_export_command(mut self) -> Self {
        self.export = None;
        self
    }

    /// Renames `/privacy` (without the slash).
    pub fn privacy_command(mut self, name: impl Into<String>) -> Self {
        self.privacy = Some(name.into());
        self
    }

    /// Turns `/privacy` off. Telegram's Bot Developer Terms require bots to answer it, so
    /// only do this if the bot answers it itself.
    pub fn without_privacy_command(mut self) -> Self {
        self.privacy = None;
        self
    }

    /// Replaces the texts the commands send.
    pub fn texts(mut self, texts: Texts) -> Self {
        self.texts = texts;
        self
    }

    /// How long a `/removemydata` confirmation button works. Default 5 minutes.
    pub fn confirm_within(mut self, window: Duration) -> Self {
        self.confirm_within = window;
        self
    }

    /// How often one user may use `/removemydata` and `/mydata` (each counted on its own).
    /// Default 5 per hour. The counters expire with their window.
    pub fn rate_limit(mut self, uses: u32, per: Duration) -> Self {
        self.uses_per_window = uses;
        self.window = per;
        self
    }

    /// Answers `/removemydata` and `/mydata` in groups too, instead of pointing to the
    /// private chat. Default `false`. The export is still sent privately.
    pub fn answer_in_groups(mut self, on: bool) -> Self {
        self.answer_in_groups = on;
        self
    }

    /// Text appended to the generated `/privacy` answer (contact, legal basis, ...). Plain
    /// text: it is escaped for the parse mode the answer is sent with.
    pub fn privacy_footer(mut self, text: impl Into<String>) -> Self {
        self.privacy_footer = Some(text.into());
        self
    }

    /// The largest `/mydata` document sent, in bytes. Default 5 MiB.
    pub fn max_export_bytes(mut self, bytes: usize) -> Self {
        self.max_export_bytes = bytes;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let names: Vec<&str> = [&self.remove, &self.export, &self.privacy]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect();
        for name in &names {
            let valid = !name.is_empty()
                && name.len() <= 32
                && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
            if !valid {
                return Err(Error::config(format!(
                    "command name {name:?} is invalid: Telegram accepts 1-32 characters of \
                     lowercase letters, digits and underscores, without the slash"
                )));
            }
        }
        for (i, a) in names.iter().enumerate() {
            if names[i + 1..].contains(a) {
                return Err(Error::config(format!("two privacy commands are named {a:?}")));
            }
        }
        if self.confirm_within.is_zero() {
            return Err(Error::config("confirm_within must be longer than zero"));
        }
        if self.uses_per_window == 0 || self.window.is_zero() {
            return Err(Error::config("rate_limit needs at least one use per non-zero window"));
        }
        if self.max_export_bytes < 1024 {
            return Err(Error::config("max_export_bytes must be at least 1024"));
        }
        Ok(())
    }
}

/// The texts the privacy commands send. English by default; every field may be replaced.
///
/// `{command}` is replaced by the command (with its slash), `{size}` by the export's size
/// and `{failed}` by the number of erasers that failed.
///
/// Every text is plain text, whatever parse mode the bot uses: the commands escape it and
/// send it as HTML with an explicit parse mode, which a `DefaultParseMode` adaptor leaves
/// alone (eraser names and the privacy footer are escaped the same way).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Texts {
    /// `/removemydata`'s question; followed by the list of what will be deleted.
    pub remove_prompt: String,
    /// The confirm button.
    pub confirm_button: String,
    /// The cancel button.
    pub cancel_button: String,
    /// Shown while the erasure runs.
    pub removing: String,
    /// Every eraser succeeded.
    pub removed: String,
    /// Some eraser failed; the erasure is retried.
    pub removal_pending: String,
    /// Another erasure of the user is already running.
    pub removal_running: String,
    /// The user pressed cancel.
    pub cancelled: String,
    /// The confirmation expired or was used already.
    pub expired: String,
    /// Someone else pressed the button.
    pub not_yours: String,
    /// `/removemydata` or `/mydata` was sent in a group.
    pub use_private_chat: String,
    /// The button that opens the private chat.
    pub open_private_chat: String,
    /// Too many uses in the rate-limit window.
    pub rate_limited: String,
    /// The caption of the `/mydata` file.
    pub export_caption: String,
    /// The export is larger than the configured maximum.
    pub export_too_large: String,
    /// The store is unreachable.
    pub unavailable: String,
    /// The descriptions for `set_my_commands`: remove, export, privacy.
    pub descriptions: [String; 3],
}

impl Default for Texts {
    fn default() -> Self {
        Self {
            remove_prompt: "Delete all data this bot keeps about you? This deletes:".into(),
            confirm_button: "Yes, delete my data".into(),
            cancel_button: "Cancel".into(),
            removing: "Deleting your data…".into(),
            removed: "Done: all data this bot kept about you has been deleted.".into(),
            removal_pending: "Deletion is not finished yet: {failed} part(s) could not be \
                              deleted right now. We keep trying until everything is deleted."
                .into(),
            removal_running: "Your data is being deleted right now. If anything fails, we keep \
                              trying until everything is deleted."
                .into(),
            cancelled: "Cancelled. Nothing was deleted.".into(),
            expired: "This confirmation has expired or was already used. Send {command} again."
                .into(),
            not_yours: "This button is for someone else.".into(),
            use_private_chat: "For your privacy, please send {command} to me in a private chat."
                .into(),
            open_private_chat: "Open private chat".into(),
            rate_limited: "You have used {command} too often. Please try again later.".into(),
            export_caption: "All data this bot keeps about you.".into(),
            export_too_large: "Your data export is too large to send here ({size}). Please \
                               contact the operator of this bot."
                .into(),
            unavailable: "Sorry, this is not possible right now. Please try again in a few \
                          minutes."
                .into(),
            descriptions: [
                "Delete all data this bot keeps about you".into(),
                "Get a copy of your data".into(),
                "How this bot handles your data".into(),
            ],
        }
    }
}

impl Retention {
    /// The enabled privacy commands with their descriptions, to merge into the bot's
    /// `set_my_commands` call.
    #[must_use]
    pub fn bot_commands(&self) -> Vec<BotCommand> {
        let Some(c) = &self.inner.commands else { return Vec::new() };
        [&c.remove, &c.export, &c.privacy]
            .into_iter()
            .zip(&c.texts.descriptions)
            .filter_map(|(name, description)| {
                name.as_ref().map(|n| BotCommand::new(n.clone(), description.clone()))
            })
            .collect()
    }
}
