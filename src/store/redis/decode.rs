//! Replies of Redis read into the protocol's types: one decoder per script reply that is
//! more than a number (claim, claim_user, finish, status, preview), feed entries, receipts,
//! and the integers, texts, ids and reasons inside them.

use super::*;

/// `claim.lua`'s reply: `{plain users, special users (user, reason, marked_at,
/// attempts), deadline, held, unreadable, returned}`.
pub(super) fn claim_reply(id: u64, reply: Value) -> Result<Batch> {
    type Reply = (Vec<Value>, Vec<Value>, Value, String, Vec<String>, Vec<Value>);
    let (plain, special, deadline, held, unreadable, returned): Reply =
        redis::from_redis_value(reply).map_err(|e| Error::Redis(redis::RedisError::from(e)))?;
    let mut users = Vec::with_capacity(plain.len() + special.len() / 4);
    for user in &plain {
        let Job { reason, marked_at, attempts } = Job::INACTIVE;
        users.push(Claimed { user: user_of(user)?, reason, marked_at, attempts });
    }
    for c in special.chunks_exact(4) {
        users.push(Claimed {
            user: user_of(&c[0])?,
            reason: reason_of(&c[1])?,
            marked_at: int(&c[2])?,
            attempts: u32::try_from(int(&c[3])?).unwrap_or(u32::MAX),
        });
    }
    let held = (!held.is_empty()).then_some(held);
    let returned = returned.iter().map(user_of).collect::<Result<_>>()?;
    Ok(Batch { id, deadline: int(&deadline)?, users, held, unreadable, returned })
}

/// `claim_user.lua`'s reply: `{1, attempts, now, deadline}`, or `{0}` when a live batch
/// holds the user.
pub(super) fn claim_user_reply(request: &ClaimUser, reply: &[i64]) -> Result<Option<Batch>> {
    let &ClaimUser { user, reason, batch, .. } = request;
    Ok(match reply {
        [1, attempts, now, deadline] => {
            let attempts = u32::try_from(*attempts).unwrap_or(u32::MAX);
            Some(Batch {
                id: batch,
                deadline: *deadline,
                users: vec![Claimed { user, reason, marked_at: *now, attempts }],
                held: None,
                unreadable: Vec::new(),
                returned: Vec::new(),
            })
        }
        [0] => None,
        other => return Err(Error::Corrupt(format!("claim_user replied {other:?}"))),
    })
}

/// `finish.lua`'s reply for a batch of `done` confirmed users: `{-1}` (lease lost), or `{k,
/// k positions (1-based) of follow-ups, then (since, report) per failed user}`.
pub(super) fn finish_reply(done: usize, reply: &[Value]) -> Result<Option<Finish>> {
    let k = int(reply.first().ok_or_else(|| Error::Corrupt("finish replied nothing".into()))?)?;
    if k < 0 {
        return Ok(None);
    }
    let k = usize::try_from(k).unwrap_or(usize::MAX).min(reply.len() - 1);
    let mut confirmed = vec![Confirmed::Erased; done];
    for position in &reply[1..=k] {
        let at = usize::try_from(int(position)?).ok().and_then(|p| p.checked_sub(1));
        let slot = at.and_then(|i| confirmed.get_mut(i)).ok_or_else(|| {
            Error::Corrupt(format!("finish named follow-up {position:?} of {done}"))
        })?;
        *slot = Confirmed::ErasedWithFollowUp;
    }
    let failing = reply[k + 1..]
        .chunks_exact(2)
        .map(|pair| Ok(Failing { since: int(&pair[0])?, report: int(&pair[1])? == 1 }))
        .collect::<Result<_>>()?;
    Ok(Some(Finish { confirmed, failing }))
}

/// `status.lua`'s reply: the user's `seen` score, queue score, job and batch deadline,
/// each nil when absent.
pub(super) fn status_reply(reply: [Option<String>; 5]) -> Result<RawStatus> {
    let [seen, queued, job, leased, probes] = reply;
    let probes = probes
        .map(|raw| {
            let (probed, reachable) = raw.split_once(',').unwrap_or((raw.as_str(), "0"));
            Ok::<_, Error>((parse_num(probed)?, parse_num(reachable)?))
        })
        .transpose()?;
    let score = |v: Option<String>| v.as_deref().map(parse_num).transpose();
    Ok(RawStatus {
        last_seen: score(seen)?,
        queued_due: score(queued)?.map(|d| (d != i64::MAX).then_some(d)),
        leased_until: score(leased)?,
        job: job.as_deref().map(decode_job).transpose()?,
        probes,
    })
}

/// `preview.lua`'s reply: `{inactive total, due total, expired leases, then (user, reason,
/// marked_at, last seen or "") per entry}`.
pub(super) fn preview_reply(reply: &[Value]) -> Result<RawPreview> {
    let [inactive, due, expired, rest @ ..] = reply else {
        return Err(Error::Corrupt("short preview reply".into()));
    };
    let entries = rest
        .chunks_exact(6)
        .map(|c| {
            let seen = text(&c[3])?;
            Ok(PreviewEntry {
                user: user_of(&c[0])?,
                reason: reason_of(&c[1])?,
                marked_at: int(&c[2])?,
                last_seen: if seen.is_empty() { None } else { Some(parse_num(&seen)?) },
                queued: int(&c[4])? == 1,
                attempts: u32::try_from(int(&c[5])?).unwrap_or(u32::MAX),
            })
        })
        .collect::<Result<_>>()?;
    Ok(RawPreview {
        inactive_total: int(inactive)?.unsigned_abs(),
        due_total: int(due)?.unsigned_abs(),
        expired_leases: int(expired)?.unsigned_abs(),
        entries,
    })
}

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
            .ok_or_else(|| Error::Corrupt(format!("receipt {} lacks its field `{name}`", entry.id)))
    };
    let bad = |what: &str| Error::Corrupt(format!("receipt {} has an unreadable {what}", entry.id));
    Ok(RawReceipt {
        at: field("t")?.parse().map_err(|_| bad("time"))?,
        reason: ErasureReason::from_code(&field("r")?).ok_or_else(|| bad("reason"))?,
        erasers: field("e")?,
        attempts: field("a")?.parse().map_err(|_| bad("attempt count"))?,
    })
}

/// The reasons in the order of their rank in an `erased` score (`RANK` in finish.lua).
const ERASED_RANKS: [&str; 5] = ["o", "i", "b", "d", "u"];

/// A score of the `erased` index: the erasure's time (ms) times 8 plus the reason's rank,
/// so that `ZADD GT` keeps each tag's latest erasure and one `ZMSCORE` answers for a page
/// of tags (exact in a double: times stay below 2^50).
pub(super) fn erased_score(at: i64, reason: &str) -> Option<i64> {
    let rank = ERASED_RANKS.iter().position(|r| *r == reason)?;
    Some(at.checked_mul(8)? + rank as i64)
}

/// A receipts stream entry as a member of the `erased` index: its score and keyed hash;
/// `None` for an entry this version cannot read (it names no erasure the audit relies on).
pub(super) fn erased_entry(entry: &redis::streams::StreamId) -> Option<(i64, String)> {
    let at = entry.get::<String>("t")?.parse::<i64>().ok()?;
    let score = erased_score(at, &entry.get::<String>("r")?)?;
    Some((score, entry.get::<String>("h")?))
}

/// The erasure an `erased` score records; `None` for a score this version did not write.
pub(super) fn decode_erased(score: f64) -> Option<LastErasure> {
    if !score.is_finite() || score < 0.0 || score.fract() != 0.0 {
        return None;
    }
    let score = score as i64;
    let reason = ErasureReason::from_code(ERASED_RANKS.get((score % 8) as usize)?)?;
    Some(LastErasure { reason, at: score / 8 })
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
