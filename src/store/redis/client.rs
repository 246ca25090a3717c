//! The protocol client: one namespace (or shard) of a Redis store (its keys in `keys.rs`),
//! and the Lua scripts of the claim -> erase -> finish protocol behind the `Backend` trait
//! (interactions on a single server as a guarded transaction: `guarded.rs`).

use super::decode::*;
use super::keys::Keys;
use super::scripts::{
    ADOPT, CENSUS_LEASE, CENSUS_RECORD, CENSUS_SWEEP, CENSUS_WALK, CLAIM, CLAIM_USER, COUNT_USE,
    FINISH, HEARTBEAT, HOLDING, INTERACTIONS, MARKER, PREVIEW, SCHEDULE, STATUS, UNSCHEDULE_GONE,
};
use super::*;

/// Members per `ZADD` command when recording interactions: at 5M tracked users a `ZADD` of 1,000
/// took up to 3.9 ms, of 500 about half that (`examples/bench.rs`, section 6).
const INTERACTION_CHUNK: usize = 500;

/// One hash tag of a namespace: a shard, or the home that records the shard count.
pub(crate) struct RedisNamespace {
    pub(super) conn: Conn,
    pub(super) keys: Keys,
    /// Whether interactions go as a guarded transaction here (see `guarded.rs`).
    pub(super) guard: super::guarded::GuardState,
}

impl RedisNamespace {
    pub(super) fn new(conn: Conn, tag: &str) -> Self {
        Self { conn, keys: Keys::new(tag), guard: Default::default() }
    }

    /// Another tag of the same store: a shard of another layout of this namespace.
    pub(crate) fn sibling(&self, tag: &str) -> Self {
        Self::new(self.conn.clone(), tag)
    }

    /// The hash tag of this part: the namespace for the home.
    pub(crate) fn namespace(&self) -> &str {
        &self.keys.tag
    }

    pub(super) fn invocation<'s>(&self, script: &'s Script) -> redis::ScriptInvocation<'s> {
        let mut inv = script.prepare_invoke();
        for key in self.keys.scripts() {
            inv.key(key);
        }
        inv
    }

    pub(super) async fn run<T: FromRedisValue>(
        &self,
        inv: &redis::ScriptInvocation<'_>,
    ) -> Result<T> {
        Ok(inv.invoke_async(&mut self.conn.clone()).await?)
    }
}

impl Backend for RedisNamespace {
    fn parts(&self) -> Vec<&dyn Backend> {
        vec![self]
    }

    fn record_interactions<'a>(
        &'a self,
        seen: &'a [Interaction],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            // One fenced `ZADD GT` per chunk; the chunks go out together over the multiplexed
            // connection.
            let writes = seen.chunks(INTERACTION_CHUNK).map(|chunk| async move {
                if let Some(now) = now
                    && self.guard_holds().await
                {
                    return self.guarded_zadd(chunk, now).await;
                }
                let mut inv = self.invocation(&INTERACTIONS);
                // No time later than now: this process's clock when it gives one, else the
                // script caps at Redis's (given the largest time, it knows when to look).
                match now {
                    Some(now) => {
                        inv.arg("");
                        for i in chunk {
                            inv.arg(crate::store::no_later_than(i.at, now)).arg(i.user);
                        }
                    }
                    None => {
                        inv.arg(chunk.iter().map(|i| i.at).max().unwrap_or(0));
                        for i in chunk {
                            inv.arg(i.at).arg(i.user);
                        }
                    }
                }
                self.run::<()>(&inv).await
            });
            futures_util::future::try_join_all(writes).await.map(drop)
        })
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>> {
        let ClaimRequest { times, writers, limit, batch } = request;
        Box::pin(async move {
            let mut inv = self.invocation(&CLAIM);
            inv.arg(now_arg(times.now))
                .arg(times.inactive_ms)
                .arg(times.lease_ms)
                .arg(limit)
                .arg(batch)
                .arg(writers.silent_ms)
                .arg(writers.dead_ms);
            claim_reply(batch, self.run(&inv).await?)
        })
    }

    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>> {
        let ClaimUser { user, reason, times, batch } = request;
        Box::pin(async move {
            let mut inv = self.invocation(&CLAIM_USER);
            inv.arg(user).arg(reason.code()).arg(now_arg(times.now)).arg(times.lease_ms).arg(batch);
            claim_user_reply(&request, &self.run::<Vec<i64>>(&inv).await?)
        })
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async move {
            let (secs, micros): (i64, i64) =
                redis::cmd("TIME").query_async(&mut self.conn.clone()).await?;
            Ok(Some(secs.saturating_mul(1000).saturating_add(micros / 1000)))
        })
    }

    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut inv = self.invocation(&HEARTBEAT);
            inv.arg(id).arg(backlog).arg(0);
            self.run::<()>(&inv).await
        })
    }

    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut inv = self.invocation(&HEARTBEAT);
            inv.arg(id).arg(0).arg(1);
            self.run::<()>(&inv).await
        })
    }

    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async move {
            let mut inv = self.invocation(&HOLDING);
            inv.arg(writers.silent_ms).arg(writers.dead_ms);
            let held: String = self.run(&inv).await?;
            Ok((!held.is_empty()).then_some(held))
        })
    }

    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        Box::pin(async move {
            let mut conn = self.conn.clone();
            // On a cluster every node answers: the oldest version and the riskiest policy
            // count.
            let infos = infos(&mut conn, &["server", "memory"]).await.unwrap_or_default();
            let eviction_policy = riskiest_policy(node_policies(&mut conn, &infos).await);
            let version = oldest_version(&infos);
            // The scripts need Redis 7; do not run one on an older server.
            let seen_vanished = if check_version(version.as_deref()).is_err() {
                false
            } else {
                let mut inv = self.invocation(&MARKER);
                inv.arg(0);
                self.run::<i64>(&inv).await? == 1
            };
            Ok(Health { version, eviction_policy, seen_vanished, not_atomic: None })
        })
    }

    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>> {
        let FinishRequest { batch, done, failed, now, follow_up_at, stuck, receipts } = request;
        Box::pin(async move {
            let mut inv = self.invocation(&FINISH);
            inv.arg(now)
                .arg(follow_up_at)
                .arg(FEED_KEEP_MS)
                .arg(batch.id)
                .arg(batch.deadline)
                .arg(done.len())
                .arg(stuck.after_ms)
                .arg(stuck.every_ms)
                .arg(receipts.map_or(0, |r| r.keep_ms))
                .arg(receipts.map_or("", |r| r.erasers.as_str()))
                .arg(done.iter().map(|c| c.reason.code()).collect::<String>());
            for c in done {
                inv.arg(c.user);
            }
            if let Some(receipts) = receipts {
                for (c, tag) in done.iter().zip(&receipts.tags) {
                    inv.arg(tag).arg(c.reason.code()).arg(c.attempts.saturating_add(1));
                }
            }
            for &Retry { claimed: c, due } in failed {
                inv.arg(c.user)
                    .arg(c.reason.code())
                    .arg(c.marked_at)
                    .arg(c.attempts.saturating_add(1))
                    .arg(due);
            }
            finish_reply(done.len(), &self.run::<Vec<Value>>(&inv).await?)
        })
    }

    fn schedule(&self, request: ScheduleRequest) -> BoxFuture<'_, Result<Marked>> {
        let ScheduleRequest { user, reason, marked_at, due } = request;
        Box::pin(async move {
            let mut inv = self.invocation(&SCHEDULE);
            inv.arg(user).arg(reason.code()).arg(marked_at).arg(due_arg(due)).arg(FEED_KEEP_MS);
            let code: i64 = self.run(&inv).await?;
            Ok(match code {
                1 => Marked::Scheduled,
                2 => Marked::AlreadyRunning,
                _ => Marked::AlreadyScheduled,
            })
        })
    }

    fn unschedule_gone<'a>(
        &'a self,
        requests: &'a [Unschedule],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            let mut done = Vec::with_capacity(requests.len());
            for chunk in requests.chunks(500) {
                let mut inv = self.invocation(&UNSCHEDULE_GONE);
                for &Unschedule { user, only, postpone_to } in chunk {
                    inv.arg(user);
                    match only {
                        Some(Job { reason, marked_at, attempts }) => {
                            inv.arg(format!("{},{marked_at},{attempts}", reason.code()))
                        }
                        None => inv.arg(""),
                    };
                    match postpone_to {
                        Some(due) => inv.arg(due),
                        None => inv.arg(""),
                    };
                }
                let codes: Vec<i64> = self.run(&inv).await?;
                done.extend(codes.into_iter().map(|c| c == 1));
            }
            Ok(done)
        })
    }

    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        Box::pin(async move {
            let mut inv = self.invocation(&STATUS);
            inv.arg(user);
            status_reply(self.run(&inv).await?)
        })
    }

    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        Box::pin(async move {
            let mut inv = self.invocation(&PREVIEW);
            inv.arg(times.now.map_or(String::new(), |ms| ms.to_string()))
                .arg(times.inactive_ms)
                .arg(limit);
            preview_reply(&self.run::<Vec<Value>>(&inv).await?)
        })
    }

    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        Box::pin(async move {
            let last: Value = redis::cmd("XREVRANGE")
                .arg(&self.keys.feed)
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(match last {
                Value::Array(entries) => match entries.first() {
                    Some(Value::Array(entry)) => entry.first().map(text).transpose()?,
                    _ => None,
                },
                _ => None,
            }
            .unwrap_or_else(|| "0-0".to_owned()))
        })
    }

    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>> {
        Box::pin(async move {
            let reply: Value = redis::cmd("XRANGE")
                .arg(&self.keys.feed)
                .arg(format!("({cursor}"))
                .arg("+")
                .arg("COUNT")
                .arg(FEED_READ)
                .query_async(&mut self.conn.clone())
                .await?;
            let mut out = Vec::new();
            let mut next = cursor.to_owned();
            let Value::Array(entries) = reply else {
                return Ok(FeedPage { entries: out, cursor: next, restarted: false });
            };
            for entry in entries {
                let Value::Array(parts) = entry else { continue };
                let [id, fields] = parts.as_slice() else { continue };
                next = text(id)?;
                let fields: Vec<Value> = match fields {
                    Value::Array(f) => f.clone(),
                    Value::Map(m) => m.iter().flat_map(|(k, v)| [k.clone(), v.clone()]).collect(),
                    _ => continue,
                };
                match decode_invalidation(&fields) {
                    Some(inv) => out.push(inv),
                    // Not written by this crate: nothing to drop from the cache for it.
                    None => tracing::warn!(entry = %next, "skipped an unreadable feed entry"),
                }
            }
            Ok(FeedPage { entries: out, cursor: next, restarted: false })
        })
    }

    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            redis::cmd("SET")
                .arg(self.keys.nonce(who))
                .arg(value)
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async::<()>(&mut self.conn.clone())
                .await?;
            Ok(())
        })
    }

    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>> {
        Box::pin(async move {
            Ok(redis::cmd("GETDEL")
                .arg(self.keys.nonce(who))
                .query_async(&mut self.conn.clone())
                .await?)
        })
    }

    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        Box::pin(async move {
            let mut inv = COUNT_USE.prepare_invoke();
            inv.key(self.keys.counter(action, who, window)).arg(ttl_ms.max(1));
            let count: u64 = self.run(&inv).await?;
            Ok(count)
        })
    }

    fn adopt<'a>(
        &'a self,
        users: &'a [Adoptee],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<AdoptCounts>> {
        Box::pin(async move {
            let mut total = AdoptCounts::default();
            for chunk in users.chunks(INTERACTION_CHUNK) {
                let mut inv = self.invocation(&ADOPT);
                // No time later than now, as for interactions.
                inv.arg(if now.is_some() { "" } else { "now" });
                for a in chunk {
                    let at = now.map_or(a.ms, |now| crate::store::no_later_than(a.ms, now));
                    let ms = if a.if_new { format!("n{at}") } else { at.to_string() };
                    inv.arg(ms).arg(a.user);
                }
                let [new, moved, kept, erasing]: [u64; 4] = self.run(&inv).await?;
                total += AdoptCounts { new, moved, kept, erasing };
            }
            Ok(total)
        })
    }

    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        Box::pin(async move {
            if users.is_empty() {
                return Ok(Vec::new());
            }
            // Tracked (`seen`), with a job (scheduled, or running with a reason), or in a
            // running batch (one claimed for inactivity alone keeps no job). Only a few
            // batches run at a time: their member lists are read whole.
            let (seen, jobs, running): (Vec<Option<f64>>, Vec<Option<String>>, Vec<String>) =
                redis::pipe()
                    .cmd("ZMSCORE")
                    .arg(&self.keys.seen)
                    .arg(users)
                    .cmd("HMGET")
                    .arg(&self.keys.job)
                    .arg(users)
                    .cmd("HVALS")
                    .arg(&self.keys.batches)
                    .query_async(&mut self.conn.clone())
                    .await?;
            let running: std::collections::HashSet<&str> =
                running.iter().flat_map(|b| b.split(',')).filter(|u| !u.is_empty()).collect();
            Ok(users
                .iter()
                .zip(seen.iter().zip(&jobs))
                .map(|(u, (s, j))| {
                    s.is_some() || j.is_some() || running.contains(u.to_string().as_str())
                })
                .collect())
        })
    }

    fn add_notice(&self, notice: Notice, now: Option<i64>) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.write_notice(notice, now))
    }

    fn notices(&self) -> BoxFuture<'_, Result<Vec<Notice>>> {
        Box::pin(self.read_notices())
    }

    fn end_notices(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(self.drop_notices())
    }

    fn erasures_finished(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(self.finished_count())
    }

    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            let (secret,): (String,) = redis::pipe()
                .atomic()
                .cmd("HSETNX")
                .arg(&self.keys.meta)
                .arg("secret")
                .arg(candidate)
                .ignore()
                .cmd("HGET")
                .arg(&self.keys.meta)
                .arg("secret")
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(secret)
        })
    }

    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            // Users only: the marker's score is +inf.
            Ok(redis::cmd("ZCOUNT")
                .arg(&self.keys.seen)
                .arg("-inf")
                .arg("(+inf")
                .query_async(&mut self.conn.clone())
                .await?)
        })
    }

    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>> {
        Box::pin(async move {
            let mut pipe = redis::pipe();
            for r in ranges {
                pipe.cmd("ZCOUNT").arg(&self.keys.seen).arg(format!("({}", r.after)).arg(r.up_to);
            }
            pipe.cmd("ZCOUNT").arg(&self.keys.queue).arg("-inf").arg(now);
            pipe.cmd("HVALS").arg(&self.keys.job);
            pipe.cmd("HVALS").arg(&self.keys.failing);
            pipe.cmd("HGETALL").arg(&self.keys.writers);
            pipe.cmd("HLEN").arg(&self.keys.probes);
            pipe.cmd("HGET").arg(&self.keys.meta).arg("census");
            let mut replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await?;
            fn parse<T: FromRedisValue>(reply: Option<Value>) -> Result<T> {
                redis::from_redis_value(reply.unwrap_or(Value::Nil))
                    .map_err(|e| Error::Redis(redis::RedisError::from(e)))
            }
            let cursor: Option<String> = parse(replies.pop())?;
            let census_probed: u64 = parse(replies.pop())?;
            let census_walked = match cursor {
                Some(raw) => {
                    let (at, skip) = census_cursor(Some(&raw));
                    let before: u64 = redis::cmd("ZCOUNT")
                        .arg(&self.keys.seen)
                        .arg("-inf")
                        .arg(format!("({at}"))
                        .query_async(&mut self.conn.clone())
                        .await?;
                    before + skip
                }
                None => 0,
            };
            let writers: Vec<(String, String)> = parse(replies.pop())?;
            let failing: Vec<String> = parse(replies.pop())?;
            let jobs: Vec<String> = parse(replies.pop())?;
            let scheduled_due: u64 = parse(replies.pop())?;
            let seen = replies.into_iter().map(|v| parse(Some(v))).collect::<Result<Vec<u64>>>()?;
            let mut survey = RawSurvey {
                seen,
                scheduled_due,
                census_probed,
                census_walked,
                ..RawSurvey::default()
            };
            // A job this version cannot read is the claim's to report, not a reason to fail.
            for job in jobs.iter().filter_map(|job| decode_job(job).ok()) {
                survey.scheduled[job.reason.index()] += 1;
                survey.max_attempts = survey.max_attempts.max(job.attempts);
            }
            survey.failing_since = failing
                .iter()
                .filter_map(|v| v.split(',').next().and_then(|s| s.parse().ok()))
                .collect();
            survey.writers = writers
                .into_iter()
                .filter_map(|(writer, value)| {
                    let (at, backlog) = value.split_once(',')?;
                    Some(Heartbeat { writer, at: at.parse().ok()?, backlog: backlog.parse().ok()? })
                })
                .collect();
            Ok(survey)
        })
    }

    fn queued(&self) -> BoxFuture<'_, Result<Queued>> {
        Box::pin(async move {
            let (scheduled, failing): (u64, Vec<String>) = redis::pipe()
                .cmd("ZCARD")
                .arg(&self.keys.queue)
                .cmd("HVALS")
                .arg(&self.keys.failing)
                .query_async(&mut self.conn.clone())
                .await?;
            let since = |v: &String| v.split(',').next().and_then(|s| s.parse::<i64>().ok());
            Ok(Queued {
                scheduled,
                failing: failing.len() as u64,
                oldest_failing_since: failing.iter().filter_map(since).min(),
            })
        })
    }

    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>> {
        Box::pin(async move {
            let mut found = Vec::new();
            self.each_receipt(now, keep_ms, |entry| {
                if entry.get::<String>("h").as_deref() == Some(tag) {
                    found.push(decode_receipt(entry)?);
                }
                Ok(())
            })
            .await?;
            Ok(found)
        })
    }

    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let taken: Option<String> = redis::cmd("SET")
                .arg(&self.keys.audit)
                .arg(holder)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms.max(1))
                .query_async(&mut self.conn.clone())
                .await?;
            Ok(taken.is_some())
        })
    }

    fn census_lease(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        Box::pin(async move {
            let mut inv = self.invocation(&CENSUS_LEASE);
            inv.arg(holder).arg(ttl_ms.max(1));
            let held: i64 = self.run(&inv).await?;
            Ok(held == 1)
        })
    }

    fn census_walk(&self, walk: CensusWalk) -> BoxFuture<'_, Result<CensusPage>> {
        Box::pin(async move {
            let mut inv = self.invocation(&CENSUS_WALK);
            inv.arg(walk.idle_up_to).arg(walk.probed_since).arg(walk.limit.max(1));
            let reply: Vec<Value> = self.run(&inv).await?;
            let int = |v: Option<&Value>| match v {
                Some(Value::Int(n)) => Ok(*n),
                other => Err(Error::Corrupt(format!("census_walk replied {other:?}"))),
            };
            let walked = int(reply.first())?;
            let round_done = int(reply.get(1))? == 1;
            let users = reply[2..]
                .iter()
                .map(|v| {
                    text(v)?
                        .parse()
                        .map_err(|_| Error::Corrupt(format!("census_walk replied user {v:?}")))
                })
                .collect::<Result<Vec<u64>>>()?;
            Ok(CensusPage { users, walked: walked.unsigned_abs(), round_done })
        })
    }

    fn census_sweep(&self, limit: usize) -> BoxFuture<'_, Result<u64>> {
        Box::pin(async move {
            let mut inv = self.invocation(&CENSUS_SWEEP);
            inv.arg(limit.max(1));
            let removed: i64 = self.run(&inv).await?;
            Ok(removed.unsigned_abs())
        })
    }

    fn census_record<'a>(
        &'a self,
        answers: &'a [CensusAnswer],
        at: i64,
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            for chunk in answers.chunks(500) {
                let mut inv = self.invocation(&CENSUS_RECORD);
                // No time later than now: this process's clock when it gives one, else the
                // script caps at Redis's (as for interactions).
                match now {
                    Some(now) => inv.arg(crate::store::no_later_than(at, now)).arg(""),
                    None => inv.arg(at).arg("1"),
                };
                for a in chunk {
                    inv.arg(a.user).arg(u8::from(a.reachable));
                }
                let _: i64 = self.run(&inv).await?;
            }
            Ok(())
        })
    }

    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            redis::cmd("HSET")
                .arg(&self.keys.meta)
                .arg("audit")
                .arg(summary)
                .query_async::<()>(&mut self.conn.clone())
                .await?;
            Ok(())
        })
    }

    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        Box::pin(async move {
            Ok(redis::cmd("HGET")
                .arg(&self.keys.meta)
                .arg("audit")
                .query_async(&mut self.conn.clone())
                .await?)
        })
    }

    fn index_receipts(&self, now: i64, keep_ms: i64) -> BoxFuture<'_, Result<bool>> {
        Box::pin(self.index_receipts_step(now, keep_ms))
    }

    fn erased_as<'a>(
        &'a self,
        tags: &'a [String],
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<LastErasure>>>> {
        Box::pin(async move {
            if tags.is_empty() {
                return Ok(Vec::new());
            }
            let scores: Vec<Option<f64>> = redis::cmd("ZMSCORE")
                .arg(&self.keys.erased)
                .arg(tags)
                .query_async(&mut self.conn.clone())
                .await?;
            let oldest = now.saturating_sub(keep_ms);
            Ok(scores
                .into_iter()
                .map(|score| score.and_then(decode_erased).filter(|e| e.at >= oldest))
                .collect())
        })
    }

    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async move {
            let mut inv = self.invocation(&MARKER);
            inv.arg(1);
            self.run::<i64>(&inv).await.map(drop)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scores_parse_from_every_redis_spelling() {
        assert_eq!(parse_num("1700000000123").unwrap(), 1_700_000_000_123);
        assert_eq!(parse_num("1.7e+12").unwrap(), 1_700_000_000_000);
        assert_eq!(parse_num("inf").unwrap(), i64::MAX);
        assert!(parse_num("x").is_err());
        assert_eq!(due_arg(None), "+inf");
        assert_eq!(due_arg(Some(5)), "5");
    }

    #[test]
    fn versions_before_7_0_are_refused_with_a_clear_error() {
        let err = check_version(Some("6.2.14")).unwrap_err();
        assert!(err.to_string().contains("Redis 6.2.14 is too old"), "{err}");
        assert!(err.to_string().contains("7.0 or newer"), "{err}");
        assert!(check_version(Some("7.0.15")).is_ok());
        assert!(check_version(Some("8.2.1")).is_ok());
        assert!(check_version(None).is_ok());
        assert_eq!(
            info_field("# Server\r\nredis_version:7.0.15\r\n", "redis_version").unwrap(),
            "7.0.15"
        );
    }
}
