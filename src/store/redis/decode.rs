//! Replies of Redis read into the protocol's types: integers, texts, ids and reasons, feed
//! entries and receipts.

use super::*;

/// An invalidation from its feed entry's fields (`u` user, `s` since, `e` until, `o`
/// opt-out); `None` if it lacks a user or holds a value this version cannot read.
pub(super) fn decode_invalidation(fields: &[Value]) -> Option<Invalidation> {
    let mut inv = Invalidation { user: 0, since: 0, until: 0, opt_out: false };
    for kv in fields.chunks_exact(2) {
        match text(&kv[0]).ok()?.as_str() {
            "u" => inv.user = crate::humans::parse_user(&text(&kv[1]).ok()?)?,
            "s" => inv.since = int(&kv[1]).ok()?,
            "e" => inv.until = int(&kv[1]).ok()?,
            "o" => inv.opt_out = int(&kv[1]).ok()? == 1,
            _ => {}
        }
    }
    (inv.user != 0).then_some(inv)
}

/// A receipt from its stream entry (`t` time, `r` reason, `e` erasers, `a` attempts).
pub(super) fn decode_receipt(entry: &redis::streams::StreamId) -> Result<RawReceipt> {
    let field = |name: &str| {
        entry
            .get::<String>(name)
            .ok_or_else(|| Error::Unsafe(format!("receipt {} lacks its field `{name}`", entry.id)))
    };
    let bad = |what: &str| Error::Unsafe(format!("receipt {} has an unreadable {what}", entry.id));
    Ok(RawReceipt {
        at: field("t")?.parse().map_err(|_| bad("time"))?,
        reason: ErasureReason::from_code(&field("r")?).ok_or_else(|| bad("reason"))?,
        erasers: field("e")?,
        attempts: field("a")?.parse().map_err(|_| bad("attempt count"))?,
    })
}

/// "Now" for a script: the given time, or empty for Redis's own clock.
pub(super) fn now_arg(now: Option<i64>) -> String {
    now.map(|n| n.to_string()).unwrap_or_default()
}

/// A score as Redis writes it: integers stay integers, "never" is `+inf`.
pub(super) fn due_arg(due: Option<i64>) -> String {
    due.map_or_else(|| "+inf".to_owned(), |d| d.to_string())
}

pub(super) fn int(v: &Value) -> Result<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        Value::BulkString(b) => parse_num(&String::from_utf8_lossy(b)),
        Value::SimpleString(s) => parse_num(s),
        Value::Double(d) => Ok(*d as i64),
        other => Err(Error::Corrupt(format!("expected a number, got {other:?}"))),
    }
}

/// Parses an integer, or a score Redis printed as a float (`"1.7e+12"`, `"inf"`).
pub(super) fn parse_num(s: &str) -> Result<i64> {
    s.parse::<i64>().or_else(|_| {
        s.parse::<f64>()
            .map(|f| if f.is_infinite() { i64::MAX } else { f as i64 })
            .map_err(|_| Error::Corrupt(format!("expected a number, got {s:?}")))
    })
}

pub(super) fn text(v: &Value) -> Result<String> {
    match v {
        Value::BulkString(b) => Ok(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Ok(s.clone()),
        Value::Int(i) => Ok(i.to_string()),
        other => Err(Error::Corrupt(format!("expected a string, got {other:?}"))),
    }
}

/// A user id the scripts returned; they return canonical ids only (`ids.lua`).
pub(super) fn user_of(v: &Value) -> Result<u64> {
    let s = text(v)?;
    crate::humans::parse_user(&s).ok_or_else(|| Error::Corrupt(format!("user id {s:?}")))
}

pub(super) fn reason_of(v: &Value) -> Result<ErasureReason> {
    let s = text(v)?;
    ErasureReason::from_code(&s).ok_or_else(|| Error::Corrupt(format!("reason {s:?}")))
}
