//! What the privacy commands say, per language.

use std::collections::BTreeMap;
use std::time::Duration;

/// Everything the privacy commands say to a user, in one language: the answers, the
/// buttons, the command descriptions and the templates of the `/privacy` text.
///
/// [`Texts::english`] (the default) and [`Texts::german`] are built in. A bot adds a
/// language by building a `Texts` for it and registering it with
/// [`Commands::language`](crate::Commands::language); each user then gets the texts of
/// their Telegram `language_code`, or the fallback set with
/// [`Commands::texts`](crate::Commands::texts). Start from the built-in set closest to
/// the language and replace every field:
///
/// ```
/// use teloxide_retention::{Commands, Texts};
///
/// let mut french = Texts::english();
/// french.remove_prompt = "Supprimer toutes les données que ce bot garde sur vous ?".into();
/// french.confirm_button = "Oui, supprimer".into();
/// // ... every other field ...
/// french.eraser_descriptions.insert("orders".into(), "vos commandes".into());
/// let commands = Commands::default().language("fr", french);
/// # let _ = commands;
/// ```
///
/// In the texts, `{command}` is replaced by the command (with its slash), `{size}` by the
/// export's size, `{failed}` by the number of erasers that failed, `{duration}` by a
/// duration in words (from [`Texts::duration`]) and `{items}` by a list. Every text is
/// plain text, whatever parse mode the bot uses: the commands escape it and send it as HTML
/// with an explicit parse mode, which a `DefaultParseMode` adaptor leaves alone (eraser
/// descriptions and the privacy footer are escaped the same way).
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
    /// Some eraser failed; the erasure is retried (`{failed}`).
    pub removal_pending: String,
    /// Another erasure of the user is already running.
    pub removal_running: String,
    /// The user pressed cancel.
    pub cancelled: String,
    /// The confirmation expired or was used already (`{command}`).
    pub expired: String,
    /// Someone else pressed the button.
    pub not_yours: String,
    /// `/removemydata` or `/mydata` was sent in a group (`{command}`).
    pub use_private_chat: String,
    /// The button that opens the private chat.
    pub open_private_chat: String,
    /// Too many uses in the rate-limit window (`{command}`).
    pub rate_limited: String,
    /// The caption of the `/mydata` file.
    pub export_caption: String,
    /// The export is larger than the configured maximum (`{size}`).
    pub export_too_large: String,
    /// The store is unreachable.
    pub unavailable: String,
    /// The description of `/removemydata` for `set_my_commands`.
    pub remove_description: String,
    /// The description of `/mydata` for `set_my_commands`.
    pub export_description: String,
    /// The description of `/privacy` for `set_my_commands`.
    pub privacy_description: String,
    /// What the crate itself keeps, as an item of the lists of what is stored and what
    /// `/removemydata` deletes.
    pub last_interaction: String,
    /// What each eraser deletes, as users should read it, by eraser name: the lists show
    /// these instead of the erasers' internal names.
    pub eraser_descriptions: BTreeMap<String, String>,
    /// The list item for erasers without a description (shown once, however many); in the
    /// `/mydata` document, the label of such an eraser's entry.
    pub other_records: String,
    /// The `/mydata` document's note on what the crate itself keeps.
    pub export_note: String,
    /// The `/mydata` document's note for data the bot keeps but cannot copy out.
    pub export_no_copy: String,
    /// The `/mydata` document's note for data that could not be read right now.
    pub export_unreadable: String,
    /// The first line of `/privacy`.
    pub privacy_title: String,
    /// What is stored (`{items}`: the stored items, joined by `; `).
    pub privacy_stored: String,
    /// How long, when users are erased after `{duration}` of inactivity.
    pub privacy_kept_for: String,
    /// How long, when nobody is erased for inactivity.
    pub privacy_kept_until_deleted: String,
    /// Blocked or deleted users are erased at the next pass.
    pub privacy_gone_now: String,
    /// Blocked or deleted users are erased after a grace period (`{duration}`).
    pub privacy_gone_after: String,
    /// Blocked or deleted users are only noted; nothing else changes.
    pub privacy_gone_kept: String,
    /// Blocked or deleted users are only noted; inactivity erases them after `{duration}`.
    pub privacy_gone_marked: String,
    /// With the census on: users idle for `{duration}` are probed now and then.
    pub privacy_census: String,
    /// How to delete everything now (`{command}`).
    pub privacy_remove_hint: String,
    /// How to get a copy (`{command}`).
    pub privacy_export_hint: String,
    /// A duration in words, for `{duration}` ("90 days"); a function, so that a language's
    /// plural rules fit. The templates place it where it needs no further inflection (the
    /// German ones say "{duration} lang" and "nach einer Wartezeit ({duration})", not
    /// "nach {duration}", which would need the dative "Tagen").
    pub duration: fn(Duration) -> String,
}

impl Default for Texts {
    fn default() -> Self {
        Self::english()
    }
}

impl Texts {
    /// The English texts (the default).
    pub fn english() -> Self {
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
            remove_description: "Delete all data this bot keeps about you".into(),
            export_description: "Get a copy of your data".into(),
            privacy_description: "How this bot handles your data".into(),
            last_interaction: "the time of your last interaction with this bot".into(),
            eraser_descriptions: BTreeMap::from([(
                "dialogue".to_owned(),
                "the state of your conversation with this bot".to_owned(),
            )]),
            other_records: "the other records this bot keeps about you".into(),
            export_note: "Only the time of your most recent interaction is kept; each new \
                          interaction replaces it."
                .into(),
            export_no_copy: "kept, but this bot cannot make a copy of it".into(),
            export_unreadable: "could not be read right now; ask again later".into(),
            privacy_title: "How this bot handles your data".into(),
            privacy_stored: "What is stored: your Telegram user id; {items}.".into(),
            privacy_kept_for: "How long: when you have not used the bot for {duration}, \
                               everything it keeps about you is deleted automatically."
                .into(),
            privacy_kept_until_deleted: "How long: until you delete it; the bot does not delete \
                                         it for inactivity."
                .into(),
            privacy_gone_now: "If you block the bot or delete your account: your data is \
                               deleted right away."
                .into(),
            privacy_gone_after: "If you block the bot or delete your account: your data is \
                                 deleted after {duration}, unless you unblock the bot or use it \
                                 again before then."
                .into(),
            privacy_gone_kept: "If you block the bot or delete your account: this is noted; your \
                                data is kept as the rest of this policy says."
                .into(),
            privacy_gone_marked: "If you block the bot or delete your account: this is noted, \
                                  and your data is deleted after {duration} without use like \
                                  anyone else's."
                .into(),
            privacy_census: "If you have not used the bot for {duration}, it checks now and \
                             then whether it can still reach you: your chat may show \
                             \"typing…\" for a few seconds, nothing is sent, and only when you \
                             were last reachable is noted (deleted with your data)."
                .into(),
            privacy_remove_hint: "Send {command} to delete all your data now.".into(),
            privacy_export_hint: "Send {command} to get a copy of your data as a file.".into(),
            duration: english_duration,
        }
    }

    /// The German texts: a worked example of a second language.
    pub fn german() -> Self {
        Self {
            remove_prompt: "Alle Daten löschen, die dieser Bot über Sie speichert? Gelöscht \
                            wird:"
                .into(),
            confirm_button: "Ja, meine Daten löschen".into(),
            cancel_button: "Abbrechen".into(),
            removing: "Ihre Daten werden gelöscht…".into(),
            removed: "Erledigt: Alle Daten, die dieser Bot über Sie gespeichert hatte, sind \
                      gelöscht."
                .into(),
            removal_pending: "Das Löschen ist noch nicht abgeschlossen: {failed} Teil(e) \
                              konnten gerade nicht gelöscht werden. Wir versuchen es weiter, \
                              bis alles gelöscht ist."
                .into(),
            removal_running: "Ihre Daten werden gerade gelöscht. Schlägt dabei etwas fehl, \
                              versuchen wir es weiter, bis alles gelöscht ist."
                .into(),
            cancelled: "Abgebrochen. Es wurde nichts gelöscht.".into(),
            expired: "Diese Bestätigung ist abgelaufen oder wurde schon verwendet. Senden Sie \
                      {command} noch einmal."
                .into(),
            not_yours: "Diese Schaltfläche ist für jemand anderen.".into(),
            use_private_chat: "Zum Schutz Ihrer Privatsphäre senden Sie {command} bitte in \
                               einem privaten Chat mit mir."
                .into(),
            open_private_chat: "Privaten Chat öffnen".into(),
            rate_limited: "Sie haben {command} zu oft verwendet. Bitte versuchen Sie es später \
                           noch einmal."
                .into(),
            export_caption: "Alle Daten, die dieser Bot über Sie speichert.".into(),
            export_too_large: "Ihr Datenexport ist zu groß, um ihn hier zu senden ({size}). \
                               Bitte wenden Sie sich an den Betreiber dieses Bots."
                .into(),
            unavailable: "Das ist gerade leider nicht möglich. Bitte versuchen Sie es in ein \
                          paar Minuten noch einmal."
                .into(),
            remove_description: "Alle Daten löschen, die dieser Bot über Sie speichert".into(),
            export_description: "Eine Kopie Ihrer Daten erhalten".into(),
            privacy_description: "Wie dieser Bot mit Ihren Daten umgeht".into(),
            last_interaction: "der Zeitpunkt Ihrer letzten Nutzung dieses Bots".into(),
            eraser_descriptions: BTreeMap::from([(
                "dialogue".to_owned(),
                "der Stand Ihres Gesprächs mit diesem Bot".to_owned(),
            )]),
            other_records: "die übrigen Daten, die dieser Bot über Sie speichert".into(),
            export_note: "Gespeichert wird nur der Zeitpunkt Ihrer jüngsten Nutzung; jede \
                          neue Nutzung ersetzt ihn."
                .into(),
            export_no_copy: "gespeichert, aber dieser Bot kann davon keine Kopie erstellen".into(),
            export_unreadable: "konnte gerade nicht gelesen werden; bitte später noch einmal \
                                versuchen"
                .into(),
            privacy_title: "Wie dieser Bot mit Ihren Daten umgeht".into(),
            privacy_stored: "Was gespeichert wird: Ihre Telegram-Nutzer-ID; {items}.".into(),
            privacy_kept_for: "Wie lange: Wenn Sie den Bot {duration} lang nicht genutzt haben, \
                               wird alles, was er über Sie speichert, automatisch gelöscht."
                .into(),
            privacy_kept_until_deleted: "Wie lange: bis Sie es löschen; wegen Inaktivität löscht \
                                         der Bot nichts."
                .into(),
            privacy_gone_now: "Wenn Sie den Bot blockieren oder Ihr Konto löschen: Ihre Daten \
                               werden sofort gelöscht."
                .into(),
            privacy_gone_after: "Wenn Sie den Bot blockieren oder Ihr Konto löschen: Ihre Daten \
                                 werden nach einer Wartezeit ({duration}) gelöscht, außer Sie \
                                 heben die Blockierung vorher auf oder nutzen den Bot wieder."
                .into(),
            privacy_gone_kept: "Wenn Sie den Bot blockieren oder Ihr Konto löschen: Das wird \
                                vermerkt; Ihre Daten werden behalten, wie es der Rest dieser \
                                Erklärung sagt."
                .into(),
            privacy_gone_marked: "Wenn Sie den Bot blockieren oder Ihr Konto löschen: Das wird \
                                  vermerkt, und Ihre Daten werden wie bei allen anderen gelöscht, \
                                  wenn Sie den Bot {duration} lang nicht genutzt haben."
                .into(),
            privacy_census: "Wenn Sie den Bot {duration} lang nicht genutzt haben, prüft er ab \
                             und zu, ob er Sie noch erreicht: Ihr Chat zeigt dann vielleicht \
                             einige Sekunden lang „schreibt…“, gesendet wird nichts, und \
                             vermerkt wird nur, wann Sie zuletzt erreichbar waren (gelöscht mit \
                             Ihren Daten)."
                .into(),
            privacy_remove_hint: "Senden Sie {command}, um jetzt alle Ihre Daten zu löschen."
                .into(),
            privacy_export_hint: "Senden Sie {command}, um eine Kopie Ihrer Daten als Datei zu \
                                  erhalten."
                .into(),
            duration: german_duration,
        }
    }

    /// What `/removemydata` deletes and `/privacy` says is stored: the last interaction,
    /// then each eraser's description (one item for all erasers without one).
    pub(crate) fn stored_items<'a>(
        &self,
        erasers: impl IntoIterator<Item = &'a str>,
    ) -> Vec<String> {
        let mut items = vec![self.last_interaction.clone()];
        let mut undescribed = false;
        for name in erasers {
            match self.eraser_descriptions.get(name) {
                Some(description) if !items.contains(description) => {
                    items.push(description.clone());
                }
                Some(_) => {}
                None => undescribed = true,
            }
        }
        if undescribed {
            items.push(self.other_records.clone());
        }
        items
    }
}

/// A duration as a whole number of its largest exact unit: days, hours, minutes or
/// seconds; a duration of days and more that is not a whole number of days is rounded to
/// the nearest day.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Day,
    Hour,
    Minute,
    Second,
}

fn split(d: Duration) -> (u64, Unit) {
    let secs = d.as_secs();
    if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, Unit::Day)
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, Unit::Hour)
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, Unit::Minute)
    } else if secs >= 86_400 {
        (secs.saturating_add(43_200) / 86_400, Unit::Day)
    } else {
        (secs.max(1), Unit::Second)
    }
}

/// "90 days", "1 day", "12 hours", "30 minutes", "45 seconds".
fn english_duration(d: Duration) -> String {
    let (n, unit) = split(d);
    let word = match unit {
        Unit::Day => "day",
        Unit::Hour => "hour",
        Unit::Minute => "minute",
        Unit::Second => "second",
    };
    if n == 1 { format!("1 {word}") } else { format!("{n} {word}s") }
}

/// "90 Tage", "1 Tag", "12 Stunden", "30 Minuten", "45 Sekunden".
fn german_duration(d: Duration) -> String {
    let (n, unit) = split(d);
    let (one, many) = match unit {
        Unit::Day => ("Tag", "Tage"),
        Unit::Hour => ("Stunde", "Stunden"),
        Unit::Minute => ("Minute", "Minuten"),
        Unit::Second => ("Sekunde", "Sekunden"),
    };
    if n == 1 { format!("1 {one}") } else { format!("{n} {many}") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        let days = |n: u64| Duration::from_secs(n * 86_400);
        assert_eq!(english_duration(days(90)), "90 days");
        assert_eq!(english_duration(days(1)), "1 day");
        assert_eq!(english_duration(Duration::from_secs(2 * 3600)), "2 hours");
        assert_eq!(english_duration(Duration::from_secs(30 * 60)), "30 minutes");
        assert_eq!(english_duration(Duration::from_secs(45)), "45 seconds");
        assert_eq!(english_duration(Duration::from_secs(86_400 + 7)), "1 day");
        assert_eq!(german_duration(days(90)), "90 Tage");
        assert_eq!(german_duration(days(1)), "1 Tag");
        assert_eq!(german_duration(Duration::from_secs(3600)), "1 Stunde");
    }

    #[test]
    fn erasers_are_listed_by_description_and_the_rest_once() {
        let mut texts = Texts::english();
        texts.eraser_descriptions.insert("orders".into(), "your orders".into());
        let items = texts.stored_items(["orders", "dialogue", "cache", "audit"]);
        assert_eq!(
            items,
            [
                "the time of your last interaction with this bot",
                "your orders",
                "the state of your conversation with this bot",
                "the other records this bot keeps about you",
            ]
        );
    }
}
