//! The `/privacy` answer, generated from the configuration.

use std::time::Duration;

use crate::commands::{Commands, Texts};
use crate::config::GonePolicy;
use crate::parts::Parts;

/// The `/privacy` answer for a user whose language is `language`; see
/// `Retention::privacy_text`.
pub(crate) fn privacy_text(
    commands: Option<&Commands>,
    parts: &Parts,
    language: Option<&str>,
) -> String {
    let config = &parts.config;
    let default = Texts::default();
    let texts = commands.map_or(&default, |c| c.texts_for(language));
    let duration = |d: Duration| (texts.duration)(d);
    let mut lines = vec![texts.privacy_title.clone(), String::new()];

    let items = texts.stored_items(parts.eraser_names());
    lines.push(texts.privacy_stored.replace("{items}", &items.join("; ")));
    lines.push(if is_never(config.inactive_after) {
        texts.privacy_kept_until_deleted.clone()
    } else {
        texts.privacy_kept_for.replace("{duration}", &duration(config.inactive_after))
    });
    lines.push(match config.gone_policy {
        GonePolicy::EraseNow => texts.privacy_gone_now.clone(),
        GonePolicy::EraseAfter(grace) if is_never(grace) => texts.privacy_gone_kept.clone(),
        GonePolicy::EraseAfter(grace) => {
            texts.privacy_gone_after.replace("{duration}", &duration(grace))
        }
        GonePolicy::MarkOnly => {
            texts.privacy_gone_marked.replace("{duration}", &duration(config.inactive_after))
        }
    });
    if let Some(census) = &config.census {
        lines.push(texts.privacy_census.replace("{duration}", &duration(census.idle_for)));
    }
    if let Some(commands) = commands {
        if let Some(remove) = &commands.remove {
            lines.push(texts.privacy_remove_hint.replace("{command}", &format!("/{remove}")));
        }
        if let Some(export) = &commands.export {
            lines.push(texts.privacy_export_hint.replace("{command}", &format!("/{export}")));
        }
        if let Some(footer) = &commands.privacy_footer {
            lines.push(String::new());
            lines.push(footer.clone());
        }
    }
    lines.join("\n").trim_end().to_owned()
}

/// A thousand years or more: a setting that means "never" (such as `Duration::MAX`).
pub(crate) fn is_never(d: Duration) -> bool {
    d >= Duration::from_secs(1000 * 365 * 86_400)
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
    fn sizes_read_naturally() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(6 * 1024 * 1024), "6.0 MiB");
    }
}
