//! Ready-made privacy commands: `/removemydata`, `/mydata` and `/privacy`.
mod flows;
mod privacy;
mod texts;

pub(crate) use flows::Flows;
pub(crate) use privacy::privacy_text;
pub use texts::Texts;

use std::time::Duration;

use teloxide::types::BotCommand;

use crate::error::{Error, Result};

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
    /// Texts by lowercase language code.
    pub(crate) languages: Vec<(String, Texts)>,
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
            // Every shipped language is on; `without_language` turns one off.
            languages: vec![("de".to_owned(), Texts::german())],
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

    /// Replaces the fallback texts: those of users whose language has no texts of its own
    /// (see [`Commands::language`]). Default [`Texts::english`].
    pub fn texts(mut self, texts: Texts) -> Self {
        self.texts = texts;
        self
    }

    /// Answers users whose Telegram `language_code` is `code` with `texts`.
    ///
    /// `code` is an IETF language tag as Telegram sends it (`"de"`, `"pt-br"`), matched
    /// without regard to case. A user whose code has no texts of its own gets those of its
    /// primary language (`"de-at"` gets `"de"`), then the fallback ([`Commands::texts`]).
    /// Registering a code again replaces its texts. Every language the crate ships is on
    /// by default (German, `"de"`, besides the English fallback): this adds another or
    /// replaces a shipped one.
    ///
    /// ```
    /// use teloxide_retention::{Commands, Texts};
    ///
    /// let mut german = Texts::german();
    /// german.privacy_description = "Datenschutz: was dieser Bot speichert".into();
    /// let commands = Commands::default().language("de", german);
    /// # let _ = commands;
    /// ```
    pub fn language(mut self, code: impl Into<String>, texts: Texts) -> Self {
        let code = code.into().to_ascii_lowercase();
        self.languages.retain(|(c, _)| *c != code);
        self.languages.push((code, texts));
        self
    }

    /// Stops answering users whose `language_code` is `code` (or a variant of it) in their
    /// language: they get the fallback texts. For a shipped language the bot does not want.
    ///
    /// ```
    /// use teloxide_retention::Commands;
    ///
    /// let english_only = Commands::default().without_language("de");
    /// # let _ = english_only;
    /// ```
    pub fn without_language(mut self, code: &str) -> Self {
        let code = code.to_ascii_lowercase();
        self.languages.retain(|(c, _)| *c != code);
        self
    }

    /// The texts for a user whose `language_code` is `code`.
    pub(crate) fn texts_for(&self, code: Option<&str>) -> &Texts {
        let Some(code) = code.map(str::to_ascii_lowercase) else { return &self.texts };
        let find = |code: &str| self.languages.iter().find(|(c, _)| c == code).map(|(_, t)| t);
        find(&code)
            .or_else(|| code.split_once('-').and_then(|(primary, _)| find(primary)))
            .unwrap_or(&self.texts)
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
        for (code, _) in &self.languages {
            let valid = !code.is_empty()
                && code.len() <= 35
                && code.split('-').all(|part| {
                    !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric())
                });
            if !valid {
                return Err(Error::config(format!(
                    "language code {code:?} is invalid: use an IETF tag such as \"de\" or \"pt-br\""
                )));
            }
        }
        if self.max_export_bytes < 1024 {
            return Err(Error::config("max_export_bytes must be at least 1024"));
        }
        Ok(())
    }
}

impl Commands {
    /// The enabled commands with their descriptions for `code` (`None`: the fallback
    /// language).
    pub(crate) fn bot_commands(&self, code: Option<&str>) -> Vec<BotCommand> {
        let texts = self.texts_for(code);
        [
            (&self.remove, &texts.remove_description),
            (&self.export, &texts.export_description),
            (&self.privacy, &texts.privacy_description),
        ]
        .into_iter()
        .filter_map(|(name, description)| {
            name.as_ref().map(|n| BotCommand::new(n.clone(), description.clone()))
        })
        .collect()
    }

    /// The language codes registered with [`Commands::language`].
    pub(crate) fn language_codes(&self) -> Vec<&str> {
        self.languages.iter().map(|(code, _)| code.as_str()).collect()
    }
}
