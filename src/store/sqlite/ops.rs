//! The protocol's operations on SQLite, each one transaction in the memory store's steps.

use super::*;

impl Backend for SqliteNamespace {
    fn parts(&self) -> Vec<&dyn Backend> {
        vec![self]
    }

    fn record_interactions<'a>(&'a self, seen: &'a [Interaction]) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| {
            for chunk in seen.chunks(CHUNK) {
                let values = vec!["(?, ?)"; chunk.len()].join(", ");
                let sql = format!(
                    "INSERT INTO {} VALUES {values} ON CONFLICT (user) DO UPDATE \
                         SET at = excluded.at WHERE excluded.at > at",
                    s.t.seen
                );
                let mut query = sqlx::query(&sql);
                for i in chunk {
                    query = query.bind(i.user as i64).bind(i.at);
                }
                query.execute(&mut **tx).await?;
            }
            Ok(())
        })
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>> {
        let ClaimRequest { times, writers, limit, batch: id } = request;
        in_tx!(self, |s, tx| {
            let now = now_of(times);
            let cutoff = now.saturating_sub(times.inactive_ms);
            let deadline = now.saturating_add(times.lease_ms);
            let held = s.writers_hold(tx, writers).await?;
            let (mut users, mut returned) = (Vec::new(), Vec::new());
            // 1. Batches whose lease expired.
            let expired: Vec<(i64, i64)> = sqlx::query_as(&format!(
                "SELECT batch, deadline FROM {} WHERE deadline <= ? \
                     ORDER BY deadline, batch LIMIT 16",
                s.t.lease
            ))
            .bind(now)
            .fetch_all(&mut **tx)
            .await?;
            for (old, old_deadline) in expired {
                let old = old as u64;
                if users.len() >= limit {
                    break;
                }
                let mut members = s.batch_users(tx, old).await?;
                let rest = members.split_off(members.len().min(limit - users.len()));
                for user in members {
                    s.take_or_drop(tx, user, &mut users, &mut returned).await?;
                }
                // What does not fit stays in the old batch, still expired, with a new
                // deadline so that the batch's own pruner finds its lease lost.
                if rest.is_empty() {
                    s.end_batch(tx, old).await?;
                } else {
                    s.put_batch(tx, old, &rest).await?;
                    let lost = if old_deadline == now { now - 1 } else { now };
                    s.set_lease(tx, old, lost).await?;
                }
            }
            // 2. Due scheduled erasures.
            let room = limit.saturating_sub(users.len());
            for (user, _) in s.up_to(tx, &s.t.queue, now, room).await? {
                s.remove(tx, &s.t.queue, user).await?;
                s.take_or_drop(tx, user, &mut users, &mut returned).await?;
            }
            // 3. Inactive users, unless a writer may hold unwritten interactions.
            if held.is_none() {
                // One read with the queue beside it and one removal per chunk: the common
                // case (no erasure scheduled) costs no statement per user.
                let room = i64::try_from(limit.saturating_sub(users.len())).unwrap_or(0);
                let inactive: Vec<(i64, bool)> = sqlx::query_as(&format!(
                    "SELECT s.user, q.user IS NOT NULL FROM {} s LEFT JOIN {} q \
                     ON q.user = s.user WHERE s.at <= ? ORDER BY s.at, s.user LIMIT ?",
                    s.t.seen, s.t.queue
                ))
                .bind(cutoff)
                .bind(room)
                .fetch_all(&mut **tx)
                .await?;
                let taken: Vec<u64> = inactive.iter().map(|(u, _)| unsigned(*u)).collect();
                for (user, queued) in inactive {
                    let user = unsigned(user);
                    let job = if queued {
                        s.remove(tx, &s.t.queue, user).await?;
                        s.job_of(tx, user).await?
                    } else {
                        Job::INACTIVE
                    };
                    users.push(claimed(user, job));
                }
                s.remove_all(tx, &s.t.seen, &taken).await?;
            }
            if !users.is_empty() {
                let ids: Vec<u64> = users.iter().map(|c| c.user).collect();
                s.put_batch(tx, id, &ids).await?;
                s.set_lease(tx, id, deadline).await?;
            }
            Ok(Batch { id, deadline, users, held, unreadable: Vec::new(), returned })
        })
    }

    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>> {
        let ClaimUser { user, reason, times, batch: id } = request;
        in_tx!(self, |s, tx| {
            let now = now_of(times);
            let deadline = now.saturating_add(times.lease_ms);
            let attempts = s.job(tx, user).await?.map_or(0, |j| j.attempts);
            let job = Job { reason, marked_at: now, attempts };
            s.put_job(tx, user, job).await?;
            if let Some((held_by, until)) = s.batch_of(tx, user).await? {
                if until > now {
                    return Ok(None);
                }
                let mut members = s.batch_users(tx, held_by).await?;
                members.retain(|u| *u != user);
                s.put_batch(tx, held_by, &members).await?;
            }
            s.remove(tx, &s.t.queue, user).await?;
            s.remove(tx, &s.t.seen, user).await?;
            s.put_batch(tx, id, &[user]).await?;
            s.set_lease(tx, id, deadline).await?;
            Ok(Some(Batch {
                id,
                deadline,
                users: vec![claimed(user, job)],
                held: None,
                unreadable: Vec::new(),
                returned: Vec::new(),
            }))
        })
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        Box::pin(async { Ok(None) })
    }

    fn heartbeat(&self, id: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?, ?)", s.t.writers))
                .bind(id as i64)
                .bind(wall_ms())
                .bind(i64::try_from(backlog).unwrap_or(i64::MAX))
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn retire(&self, id: u64) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("DELETE FROM {} WHERE id = ?", s.t.writers))
                .bind(id as i64)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        in_tx!(self, |s, tx| { s.writers_hold(tx, writers).await })
    }

    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        Box::pin(async move {
            self.ready().await?;
            let mut conn = self.pool.acquire().await?;
            let journal: String =
                sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut *conn).await?;
            let synchronous: i64 =
                sqlx::query_scalar("PRAGMA synchronous").fetch_one(&mut *conn).await?;
            let not_atomic = matches!(journal.to_ascii_lowercase().as_str(), "off" | "memory")
                .then(|| {
                    format!(
                        "the SQLite file runs with journal_mode={journal}: a crash in the middle \
                         of an erasure's transaction can leave it half done; use WAL (what \
                         SqliteStore::open sets) or DELETE"
                    )
                });
            if synchronous == 0 && !self.warned_sync.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the SQLite file runs with synchronous=OFF: a power loss can undo the last \
                     interactions written, and those users would look inactive since their \
                     earlier ones; use NORMAL or FULL (what SqliteStore::open sets)"
                );
            }
            Ok(Health { not_atomic, ..Health::default() })
        })
    }

    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>> {
        let FinishRequest { batch, done, failed, now, follow_up_at, stuck, receipts } = request;
        in_tx!(self, |s, tx| {
            let lease: Option<i64> =
                sqlx::query_scalar(&format!("SELECT deadline FROM {} WHERE batch = ?", s.t.lease))
                    .bind(batch.id as i64)
                    .fetch_optional(&mut **tx)
                    .await?;
            if lease != Some(batch.deadline) {
                return Ok(None);
            }
            let ids: Vec<u64> = done.iter().map(|c| c.user).collect();
            let mut jobs = s.jobs(tx, &ids).await?;
            if let Some(receipts) = receipts {
                sqlx::query(&format!("DELETE FROM {} WHERE at < ?", s.t.receipt))
                    .bind(now - receipts.keep_ms)
                    .execute(&mut **tx)
                    .await?;
                for (c, tag) in done.iter().zip(&receipts.tags) {
                    // An opt-out may have taken over a running erasure.
                    let reason = jobs.get(&c.user).map_or(c.reason, |j| j.reason);
                    sqlx::query(&format!(
                        "INSERT INTO {} (tag, at, reason, erasers, attempts) \
                             VALUES (?, ?, ?, ?, ?)",
                        s.t.receipt
                    ))
                    .bind(tag)
                    .bind(now)
                    .bind(reason.code())
                    .bind(&receipts.erasers)
                    .bind(i64::from(c.attempts.saturating_add(1)))
                    .execute(&mut **tx)
                    .await?;
                }
            }
            let mut confirmed = Vec::with_capacity(done.len());
            let mut with_job = Vec::with_capacity(done.len());
            for c in done {
                let Some(Job { reason, marked_at, .. }) = jobs.remove(&c.user) else {
                    confirmed.push(Confirmed::Erased);
                    continue;
                };
                with_job.push(c.user);
                if reason != ErasureReason::Inactive {
                    let opt_out = reason == ErasureReason::OptOut;
                    let inv = Invalidation { user: c.user, since: marked_at, until: now, opt_out };
                    s.announce(tx, inv).await?;
                }
                if reason == ErasureReason::OptOut
                    && s.score(tx, &s.t.seen, c.user).await?.is_some()
                {
                    s.set_due(tx, c.user, follow_up_at).await?;
                    s.put_job(tx, c.user, Job::opt_out(now)).await?;
                    confirmed.push(Confirmed::ErasedWithFollowUp);
                } else {
                    s.remove(tx, &s.t.job, c.user).await?;
                    confirmed.push(Confirmed::Erased);
                }
            }
            // A user without a job has no failing entry either (they go together).
            s.remove_all(tx, &s.t.failing, &with_job).await?;
            let mut failing = Vec::with_capacity(failed.len());
            for &Retry { claimed: c, due } in failed {
                let reason = s.job(tx, c.user).await?.map_or(c.reason, |j| j.reason);
                s.set_due(tx, c.user, due).await?;
                let attempts = c.attempts.saturating_add(1);
                s.put_job(tx, c.user, Job { reason, marked_at: c.marked_at, attempts }).await?;
                let row: Option<(i64, i64)> = sqlx::query_as(&format!(
                    "SELECT since, reported FROM {} WHERE user = ?",
                    s.t.failing
                ))
                .bind(c.user as i64)
                .fetch_optional(&mut **tx)
                .await?;
                let (since, reported) = row.unwrap_or((now, 0));
                let report = now - since >= stuck.after_ms && now - reported >= stuck.every_ms;
                sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?, ?)", s.t.failing))
                    .bind(c.user as i64)
                    .bind(since)
                    .bind(if report { now } else { reported })
                    .execute(&mut **tx)
                    .await?;
                failing.push(Failing { since, report });
            }
            s.end_batch(tx, batch.id).await?;
            Ok(Some(Finish { confirmed, failing }))
        })
    }

    fn receipts<'a>(
        &'a self,
        tag: &'a str,
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<RawReceipt>>> {
        in_tx!(self, |s, tx| {
            let all = s.receipts_since(tx, now - keep_ms).await?;
            Ok(all.into_iter().filter(|r| r.tag == tag).map(|r| r.receipt).collect())
        })
    }

    fn schedule(&self, request: ScheduleRequest) -> BoxFuture<'_, Result<Marked>> {
        let ScheduleRequest { user, reason, marked_at, due } = request;
        in_tx!(self, |s, tx| {
            let job = s.job(tx, user).await?;
            if s.batch_of(tx, user).await?.is_some() {
                if reason == ErasureReason::OptOut {
                    let job = job.unwrap_or(Job { reason, marked_at, attempts: 0 });
                    s.put_job(tx, user, Job { reason: ErasureReason::OptOut, ..job }).await?;
                }
                return Ok(Marked::AlreadyRunning);
            }
            if let Some(job) = job
                && s.score(tx, &s.t.queue, user).await?.is_some()
                && (reason != ErasureReason::OptOut || job.reason == ErasureReason::OptOut)
            {
                return Ok(Marked::AlreadyScheduled);
            }
            s.set_due(tx, user, due.unwrap_or(i64::MAX)).await?;
            s.put_job(tx, user, Job { reason, marked_at, attempts: 0 }).await?;
            if reason != ErasureReason::OptOut {
                let inv = Invalidation { user, since: marked_at, until: marked_at, opt_out: false };
                s.announce(tx, inv).await?;
            }
            Ok(Marked::Scheduled)
        })
    }

    fn unschedule_gone(&self, user: u64) -> BoxFuture<'_, Result<bool>> {
        in_tx!(self, |s, tx| {
            let Some(job) = s.job(tx, user).await? else { return Ok(false) };
            if !job.reason.is_gone() || !s.remove(tx, &s.t.queue, user).await? {
                return Ok(false);
            }
            s.remove(tx, &s.t.job, user).await?;
            s.remove(tx, &s.t.failing, user).await?;
            Ok(true)
        })
    }

    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        in_tx!(self, |s, tx| {
            Ok(RawStatus {
                last_seen: s.score(tx, &s.t.seen, user).await?,
                queued_due: s
                    .score(tx, &s.t.queue, user)
                    .await?
                    .map(|d| (d != i64::MAX).then_some(d)),
                leased_until: s.batch_of(tx, user).await?.map(|(_, deadline)| deadline),
                job: s.job(tx, user).await?,
            })
        })
    }

    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        in_tx!(self, |s, tx| {
            let now = now_of(times);
            let cutoff = now.saturating_sub(times.inactive_ms);
            let mut entries = Vec::new();
            for (user, _) in s.up_to(tx, &s.t.queue, now, limit).await? {
                let job = s.job_of(tx, user).await?;
                if !s.came_back(tx, user, job).await? {
                    let last_seen = s.score(tx, &s.t.seen, user).await?;
                    let Job { reason, marked_at, .. } = job;
                    entries.push(PreviewEntry { user, reason, marked_at, last_seen });
                }
            }
            let room = limit.saturating_sub(entries.len());
            for (user, seen) in s.up_to(tx, &s.t.seen, cutoff, room).await? {
                let Job { reason, marked_at, .. } = match s.score(tx, &s.t.queue, user).await? {
                    None => Job::INACTIVE,
                    Some(due) if due > now => s.job_of(tx, user).await?,
                    Some(_) => continue, // due: listed above
                };
                entries.push(PreviewEntry { user, reason, marked_at, last_seen: Some(seen) });
            }
            Ok(RawPreview {
                inactive_total: s.count_up_to(tx, &s.t.seen, "at", cutoff).await?,
                due_total: s.count_up_to(tx, &s.t.queue, "due", now).await?,
                expired_leases: s.count_up_to(tx, &s.t.lease, "deadline", now).await?,
                entries,
            })
        })
    }

    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        in_tx!(self, |s, tx| {
            // AUTOINCREMENT never reuses a number, even after the rows expire.
            let head: Option<i64> =
                sqlx::query_scalar("SELECT seq FROM sqlite_sequence WHERE name = ?")
                    .bind(format!("{}.feed", s.t.prefix))
                    .fetch_optional(&mut **tx)
                    .await?;
            Ok(head.unwrap_or(0).to_string())
        })
    }

    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>> {
        in_tx!(self, |s, tx| {
            let after: i64 = cursor.parse().unwrap_or(0);
            let rows: Vec<(i64, i64, i64, i64, bool)> = sqlx::query_as(&format!(
                "SELECT seq, user, since, until, opt_out FROM {} WHERE seq > ? \
                     ORDER BY seq LIMIT ?",
                s.t.feed
            ))
            .bind(after)
            .bind(i64::try_from(FEED_READ).unwrap_or(i64::MAX))
            .fetch_all(&mut **tx)
            .await?;
            let next = rows.last().map_or(after, |r| r.0);
            let entries = rows
                .into_iter()
                .map(|(_, user, since, until, opt_out)| Invalidation {
                    user: unsigned(user),
                    since,
                    until,
                    opt_out,
                })
                .collect();
            Ok(FeedPage { entries, cursor: next.to_string() })
        })
    }

    fn put_nonce<'a>(
        &'a self,
        who: &'a Hashed,
        value: String,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| {
            s.kv_put(tx, &format!("confirm:{}", who.tag), &value, ttl_ms).await
        })
    }

    fn take_nonce<'a>(&'a self, who: &'a Hashed) -> BoxFuture<'a, Result<Option<String>>> {
        in_tx!(self, |s, tx| {
            let key = format!("confirm:{}", who.tag);
            let value = s.kv_get(tx, &key).await?;
            sqlx::query(&format!("DELETE FROM {} WHERE key = ?", s.t.kv))
                .bind(&key)
                .execute(&mut **tx)
                .await?;
            Ok(value)
        })
    }

    fn count_use<'a>(
        &'a self,
        who: &'a Hashed,
        action: &'static str,
        window: i64,
        ttl_ms: i64,
    ) -> BoxFuture<'a, Result<u64>> {
        in_tx!(self, |s, tx| {
            let key = format!("rate:{action}:{}:{window}", who.tag);
            match s.kv_get(tx, &key).await? {
                Some(count) => {
                    let next = count.parse::<u64>().unwrap_or(0) + 1;
                    sqlx::query(&format!("UPDATE {} SET value = ? WHERE key = ?", s.t.kv))
                        .bind(next.to_string())
                        .bind(&key)
                        .execute(&mut **tx)
                        .await?;
                    Ok(next)
                }
                None => {
                    s.kv_put(tx, &key, "1", ttl_ms).await?;
                    Ok(1)
                }
            }
        })
    }

    fn claim_audit(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        in_tx!(self, |s, tx| {
            if s.kv_get(tx, "audit").await?.is_some() {
                return Ok(false);
            }
            s.kv_put(tx, "audit", &holder.to_string(), ttl_ms).await?;
            Ok(true)
        })
    }

    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES ('audit', ?)", s.t.meta))
                .bind(summary)
                .execute(&mut **tx)
                .await?;
            Ok(())
        })
    }

    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        in_tx!(self, |s, tx| { s.meta(tx, "audit").await })
    }

    fn receipt_tags(&self, now: i64, keep_ms: i64) -> BoxFuture<'_, Result<Vec<TaggedReceipt>>> {
        in_tx!(self, |s, tx| { s.receipts_since(tx, now - keep_ms).await })
    }

    fn adopt<'a>(&'a self, users: &'a [Adoptee]) -> BoxFuture<'a, Result<AdoptCounts>> {
        in_tx!(self, |s, tx| {
            let mut counts = AdoptCounts::default();
            for &Adoptee { user, ms, if_new } in users {
                if s.job(tx, user).await?.is_some() || s.batch_of(tx, user).await?.is_some() {
                    counts.erasing += 1;
                    continue;
                }
                match s.score(tx, &s.t.seen, user).await? {
                    None => counts.new += 1,
                    Some(old) if old < ms && !if_new => counts.moved += 1,
                    Some(_) => {
                        counts.kept += 1;
                        continue;
                    }
                }
                sqlx::query(&format!("INSERT OR REPLACE INTO {} VALUES (?, ?)", s.t.seen))
                    .bind(user as i64)
                    .bind(ms)
                    .execute(&mut **tx)
                    .await?;
            }
            Ok(counts)
        })
    }

    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        in_tx!(self, |s, tx| {
            let mut known = Vec::with_capacity(users.len());
            for &user in users {
                known.push(
                    s.score(tx, &s.t.seen, user).await?.is_some()
                        || s.job(tx, user).await?.is_some(),
                );
            }
            Ok(known)
        })
    }

    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        in_tx!(self, |s, tx| {
            sqlx::query(&format!("INSERT OR IGNORE INTO {} VALUES ('secret', ?)", s.t.meta))
                .bind(candidate)
                .execute(&mut **tx)
                .await?;
            s.meta(tx, "secret")
                .await?
                .ok_or_else(|| Error::Corrupt("the namespace's secret vanished".into()))
        })
    }

    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        in_tx!(self, |s, tx| {
            let n: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", s.t.seen))
                .fetch_one(&mut **tx)
                .await?;
            Ok(unsigned(n))
        })
    }

    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>> {
        in_tx!(self, |s, tx| {
            let mut seen = Vec::with_capacity(ranges.len());
            for r in ranges {
                let n: i64 = sqlx::query_scalar(&format!(
                    "SELECT COUNT(*) FROM {} WHERE at > ? AND at <= ?",
                    s.t.seen
                ))
                .bind(r.after)
                .bind(r.up_to)
                .fetch_one(&mut **tx)
                .await?;
                seen.push(unsigned(n));
            }
            let failing_since: Vec<i64> =
                sqlx::query_scalar(&format!("SELECT since FROM {}", s.t.failing))
                    .fetch_all(&mut **tx)
                    .await?;
            let mut survey = RawSurvey {
                seen,
                scheduled_due: s.count_up_to(tx, &s.t.queue, "due", now).await?,
                failing_since,
                ..RawSurvey::default()
            };
            let jobs: Vec<(String, i64)> =
                sqlx::query_as(&format!("SELECT reason, attempts FROM {}", s.t.job))
                    .fetch_all(&mut **tx)
                    .await?;
            // Every job, as the Redis store counts them: scheduled and running erasures.
            for (code, attempts) in jobs {
                let Ok(reason) = reason(&code) else { continue };
                survey.scheduled[reason.index()] += 1;
                let attempts = u32::try_from(attempts).unwrap_or(u32::MAX);
                survey.max_attempts = survey.max_attempts.max(attempts);
            }
            let beats: Vec<(i64, i64, i64)> =
                sqlx::query_as(&format!("SELECT id, at, backlog FROM {}", s.t.writers))
                    .fetch_all(&mut **tx)
                    .await?;
            let wall = wall_ms();
            // Heartbeats are stamped on the wall clock; report them on the survey's.
            survey.writers = beats
                .into_iter()
                .map(|(id, at, backlog)| Heartbeat {
                    writer: (id as u64).to_string(),
                    at: now.saturating_sub(wall.saturating_sub(at)),
                    backlog: unsigned(backlog),
                })
                .collect();
            Ok(survey)
        })
    }

    fn pending(&self) -> BoxFuture<'_, Result<Pending>> {
        in_tx!(self, |s, tx| {
            let scheduled: i64 = sqlx::query_scalar(&format!("SELECT COUNT(*) FROM {}", s.t.queue))
                .fetch_one(&mut **tx)
                .await?;
            let (failing, oldest): (i64, Option<i64>) =
                sqlx::query_as(&format!("SELECT COUNT(*), MIN(since) FROM {}", s.t.failing))
                    .fetch_one(&mut **tx)
                    .await?;
            Ok(Pending {
                scheduled: unsigned(scheduled),
                failing: unsigned(failing),
                oldest_failing_since: oldest,
            })
        })
    }
}
