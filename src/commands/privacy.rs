//! The `/privacy` answer, generated from the configuration.

use std::fmt::Write;
use std::time::Duration;

use crate::config::GonePolicy;
use crate::retention::Retention;

impl Retention {
    /// The retention policy in words, as `/privacy` answers it: what is stored, for how
    /// long, what happens when the user blocks the bot, and how to delete or export data.
    #[must_use]
    pub fn privacy_text(&self) -> String {
        let inner = &self.inner;
        let config = &inner.config;
        let names = self.eraser_names();
        let mut text = String::from("How this bot handles your data\n\n");

        text.push_str(
            "What is stored: your Telegram user id and the time of your last interaction \
             with this bot",
        );
        if names.is_empty() {
            text.push_str(".\n");
        } else {
            let _ = writeln!(text, ", and the bot's own records: {}.", names.join(", "));
        }

        if is_never(config.inactive_after) {
            text.push_str(
                "How long: until you delete it; the bot does not delete it for inactivity.\n",
            );
        } else {
            let _ = writeln!(
                text,
                "How long: when you have not used the bot for {}, everything it keeps about \
                 you is deleted automatically.",
                human(config.inactive_after)
            );
        }

        let blocked = match config.gone_policy {
            GonePolicy::EraseNow => "your data is deleted right away.".to_owned(),
            GonePolicy::EraseAfter(grace) if is_never(grace) => {
                "this is noted; your data is kept as the rest of this policy says.".to_owned()
            }
            GonePolicy::EraseAfter(grace) => format!(
                "your data is deleted after {}, unless you unblock the bot or use it again \
                 before then.",
                human(grace)
            ),
            GonePolicy::MarkOnly => format!(
                "this is noted, and your data is deleted after {} without use like anyone \
                 else's.",
                human(config.inactive_after)
            ),
        };
        let _ = writeln!(text, "If you block the bot or delete your account: {blocked}");

        if let Some(commands) = &inner.commands {
            if let Some(remove) = &commands.remove {
                let _ = writeln!(text, "Send /{remove} to delete all your data now.");
            }
            if let Some(export) = &commands.export {
                let _ = writeln!(text, "Send /{export} to get a copy of your data as a file.");
            }
            if let Some(footer) = &commands.privacy_footer {
                let _ = write!(text, "\n{footer}\n");
            }
        }
        text.trim_end().to_owned()
    }
}

/// A thousand years or more: a setting that means "never" (such as `Duration::MAX`).
pub(crate) fn is_never(d: Duration) -> bool {
    d >= Duration::from_secs(1000 * 365 * 86_400)
}

/// A duration in words: "90 days", "1 day", "12 hours", "30 minutes", "45 seconds".
pub(crate) fn human(d: Duration) -> String {
    let secs = d.as_secs();
    let (n, unit) = if secs >= 86_400 && secs.is_multiple_of(86_400) {
        (secs / 86_400, "day")
    } else if secs >= 3600 && secs.is_multiple_of(3600) {
        (secs / 3600, "hour")
    } else if secs >= 60 && secs.is_multiple_of(60) {
        (secs / 60, "minute")
    } else if secs >= 86_400 {
        // Not a whole number of days: round to the nearest day.
        (secs.saturating_add(43_200) / 86_400, "day")
    } else {
        (secs.max(1), "second")
    };
    if n == 1 { format!("1 {unit}") } else { format!("{n} {unit}s") }
}

/// A size in words: "512 bytes", "12.3 KiB", "6.0 MiB".
pub(crate) fn human_bytes(n: usize) -> String {
    const KIB: f64 = 1024.0;
    let f = n as f64;
    if f < KIB {
        format!("{n} bytes")
    } else if f < KIB * KIB {
        format!("{:.1} KiB", f / KIB)
    } else {
        format!("{:.1} MiB", f / (KIB * KIB))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human(Duration::from_secs(90 * 86_400)), "90 days");
        assert_eq!(human(Duration::from_secs(86_400)), "1 day");
        assert_eq!(human(Duration::from_secs(2 * 3600)), "2 hours");
        assert_eq!(human(Duration::from_secs(30 * 60)), "30 minutes");
        assert_eq!(human(Duration::from_secs(45)), "45 seconds");
        assert_eq!(human(Duration::from_secs(86_400 + 7)), "1 day");
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(6 * 1024 * 1024), "6.0 MiB");
    }
}
