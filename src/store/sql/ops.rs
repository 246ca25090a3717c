//! The protocol's operations, each one locked transaction in the memory store's steps.

use super::*;

impl<D: Dialect> Backend for SqlNamespace<D> {
    fn parts(&self) -> Vec<&dyn Backend> {
        vec![self]
    }

    fn record_interactions<'a>(
        &'a self,
        seen: &'a [Interaction],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| {
            for chunk in seen.chunks(CHUNK) {
                let values = vec!["(?, ?)"; chunk.len()].join(", ");
                let seen = &s.t.seen;
                let sql = format!(
                    "INSERT INTO {seen} (uid, at) VALUES {values} ON CONFLICT (uid) DO UPDATE \
                     SET at = excluded.at WHERE excluded.at > {seen}.at"
                );
                let args = chunk
                    .iter()
                    .flat_map(|i| {
                        [
                            id(i.user),
                            crate::store::no_later_than(i.at, now.unwrap_or(tx.wall)).into(),
                        ]
                    })
                    .collect();
                s.exec(tx, &sql, args).await?;
            }
            Ok(())
        })
    }

    fn claim(&self, request: ClaimRequest) -> BoxFuture<'_, Result<Batch>> {
        let ClaimRequest { times, writers, limit, batch } = request;
        in_tx!(self, |s, tx| {
            let now = now_of(times, tx.wall);
            let cutoff = now.saturating_sub(times.inactive_ms);
            let deadline = now.saturating_add(times.lease_ms);
            let held = s.writers_hold(tx, writers).await?;
            // Announcements past the feed's window go at every claim too, not only when a
            // new one comes: no id stays longer than the window and a prune interval.
            s.trim_feed(tx).await?;
            let (mut users, mut returned) = (Vec::new(), Vec::new());
            // 1. Batches whose lease expired.
            let sql = format!(
                "SELECT batch, deadline FROM {} WHERE deadline <= ? ORDER BY deadline, batch \
                 LIMIT {}",
                s.t.lease,
                crate::store::EXPIRED_BATCHES_PER_CLAIM
            );
            for row in s.rows(tx, &sql, vec![now.into()]).await? {
                let (old, old_deadline) = (row[0].i()? as u64, row[1].i()?);
                if users.len() >= limit {
                    break;
                }
                let members = s.batch_users(tx, old).await?;
                let mut rest = Vec::new();
                for user in members {
                    // Decided when nothing held: a takeover finishes it.
                    if users.len() >= limit
                        || s.take_or_drop(tx, user, false, &mut users, &mut returned)
                            .await?
                            .is_none()
                    {
                        rest.push(user);
                    }
                }
                // What does not fit or cannot be read stays in the old batch, still expired,
                // with a new deadline so that the batch's own pruner finds its lease lost.
                if rest.is_empty() {
                    s.end_batch(tx, old).await?;
                } else {
                    s.put_batch(tx, old, &rest).await?;
                    let lost = if old_deadline == now { now - 1 } else { now };
                    s.set_lease(tx, old, lost).await?;
                }
            }
            // 2. Due scheduled erasures. Entries it cannot read stay queued; a few more are
            // read so that they cannot starve the rest. While writers hold, an erasure for
            // inactivity is postponed (see `postponed`), so that those behind it go on.
            let room = limit.saturating_sub(users.len());
            let later = postponed(now, writers);
            for (user, _) in
                s.up_to(tx, &s.t.queue, None, now, room + crate::store::DUE_SCAN_SLACK).await?
            {
                if users.len() >= limit {
                    break;
                }
                match s.take_or_drop(tx, user, held.is_some(), &mut users, &mut returned).await? {
                    None => {}
                    Some(Decision::Hold) => s.set_due(tx, user, later).await?,
                    Some(Decision::Take | Decision::Drop) => {
                        s.remove(tx, &s.t.queue, user).await?;
                    }
                }
            }
            // 3. Inactive users, unless a writer may hold unwritten interactions.
            if held.is_none() {
                // One read with the queue beside it and one removal per chunk: the common
                // case (no erasure scheduled) costs no statement per user.
                let room = limit.saturating_sub(users.len());
                let select = format!(
                    "SELECT s.uid, s.at, CAST(CASE WHEN q.uid IS NULL THEN 0 ELSE 1 END AS \
                     BIGINT) FROM {} s LEFT JOIN {} q ON q.uid = s.uid",
                    s.t.seen, s.t.queue
                );
                // Above what a running notice holds.
                let above = held_through(&s.notices(tx).await?, now);
                let inactive = s.range(tx, "seen", &select, "s.at", (above, cutoff), room).await?;
                let mut taken = Vec::with_capacity(inactive.len());
                for row in &inactive {
                    let user = row[0].user()?;
                    let job = if row[2].i()? == 1 {
                        // A job it cannot read: left in `seen` and the queue, reported.
                        let Some(job) = s.readable_job(tx, user).await? else { continue };
                        s.remove(tx, &s.t.queue, user).await?;
                        job
                    } else {
                        Job::INACTIVE
                    };
                    taken.push(user);
                    users.push(Claimed::from_job(user, job));
                }
                s.remove_all(tx, &s.t.seen, &taken).await?;
            }
            if !users.is_empty() {
                let ids: Vec<u64> = users.iter().map(|c| c.user).collect();
                s.put_batch(tx, batch, &ids).await?;
                s.set_lease(tx, batch, deadline).await?;
            }
            let unreadable = tx.take_unreadable();
            Ok(Batch { id: batch, deadline, users, held, unreadable, returned })
        })
    }

    fn claim_user(&self, request: ClaimUser) -> BoxFuture<'_, Result<Option<Batch>>> {
        let ClaimUser { user, reason, times, batch } = request;
        in_tx!(self, |s, tx| {
            let now = now_of(times, tx.wall);
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
            s.put_batch(tx, batch, &[user]).await?;
            s.set_lease(tx, batch, deadline).await?;
            Ok(Some(Batch {
                id: batch,
                deadline,
                users: vec![Claimed::from_job(user, job)],
                held: None,
                unreadable: Vec::new(),
                returned: Vec::new(),
            }))
        })
    }

    fn server_time(&self) -> BoxFuture<'_, Result<Option<i64>>> {
        self.db.server_time()
    }

    fn heartbeat(&self, writer: u64, backlog: u64) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| {
            let sql = format!(
                "INSERT INTO {} (id, at, backlog) VALUES (?, ?, ?) ON CONFLICT (id) DO UPDATE \
                 SET at = excluded.at, backlog = excluded.backlog",
                s.t.writers
            );
            let backlog = i64::try_from(backlog).unwrap_or(i64::MAX);
            s.exec(tx, &sql, vec![id(writer), tx.wall.into(), backlog.into()]).await.map(drop)
        })
    }

    fn retire(&self, writer: u64) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| {
            let sql = format!("DELETE FROM {} WHERE id = ?", s.t.writers);
            s.exec(tx, &sql, vec![id(writer)]).await.map(drop)
        })
    }

    fn writers_holding(&self, writers: WriterWindow) -> BoxFuture<'_, Result<Option<String>>> {
        in_tx!(self, |s, tx| { s.writers_hold(tx, writers).await })
    }

    fn health(&self) -> BoxFuture<'_, Result<Health>> {
        Box::pin(async move {
            self.ready().await?;
            self.db.health(&self.warned).await
        })
    }

    fn accept_lost_tracking(&self) -> BoxFuture<'_, Result<()>> {
        Box::pin(async { Ok(()) })
    }

    fn finish<'a>(&'a self, request: FinishRequest<'a>) -> BoxFuture<'a, Result<Option<Finish>>> {
        let FinishRequest { batch, done, failed, now, follow_up_at, stuck, receipts } = request;
        in_tx!(self, |s, tx| {
            let sql = format!("SELECT deadline FROM {} WHERE batch = ?", s.t.lease);
            let lease = s.scalar(tx, &sql, vec![id(batch.id)]).await?;
            if lease.map(|v| v.i()).transpose()? != Some(batch.deadline) {
                return Ok(None);
            }
            let ids: Vec<u64> = done.iter().map(|c| c.user).collect();
            if !ids.is_empty() {
                let finished = s.meta(tx, "erasures_finished").await?;
                let finished = finished.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
                s.set_meta(tx, "erasures_finished", &(finished + 1).to_string()).await?;
            }
            let mut jobs = s.jobs(tx, &ids).await?;
            if let Some(receipts) = receipts {
                let sql = format!("DELETE FROM {} WHERE at < ?", s.t.receipt);
                s.exec(tx, &sql, vec![(now - receipts.keep_ms).into()]).await?;
                for (c, tag) in done.iter().zip(&receipts.tags) {
                    // An opt-out may have taken over a running erasure.
                    let reason = jobs.get(&c.user).map_or(c.reason, |j| j.reason);
                    let sql = format!(
                        "INSERT INTO {} (tag, at, reason, erasers, attempts) VALUES (?, ?, ?, ?, ?)",
                        s.t.receipt
                    );
                    let attempts = i64::from(c.attempts.saturating_add(1));
                    let args = vec![
                        tag.as_str().into(),
                        now.into(),
                        reason.code().into(),
                        receipts.erasers.as_str().into(),
                        attempts.into(),
                    ];
                    s.exec(tx, &sql, args).await?;
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
                    && follow_up(reason, c.reason, s.score(tx, &s.t.seen, c.user).await?.is_some())
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
            // What the census kept about the erased users goes with them.
            let erased: Vec<u64> = done.iter().map(|c| c.user).collect();
            s.remove_all(tx, &s.t.probes, &erased).await?;
            let mut failing = Vec::with_capacity(failed.len());
            for &Retry { claimed: c, due } in failed {
                let reason = s.job(tx, c.user).await?.map_or(c.reason, |j| j.reason);
                s.set_due(tx, c.user, due).await?;
                let attempts = c.attempts.saturating_add(1);
                s.put_job(tx, c.user, Job { reason, marked_at: c.marked_at, attempts }).await?;
                let sql = format!("SELECT since, reported FROM {} WHERE uid = ?", s.t.failing);
                let row = s.rows(tx, &sql, vec![id(c.user)]).await?;
                let (since, reported) = match row.first() {
                    Some(r) => (r[0].i()?, r[1].i()?),
                    None => (now, 0),
                };
                let report = now - since >= stuck.after_ms && now - reported >= stuck.every_ms;
                let sql = format!(
                    "INSERT INTO {} (uid, since, reported) VALUES (?, ?, ?) ON CONFLICT (uid) \
                     DO UPDATE SET since = excluded.since, reported = excluded.reported",
                    s.t.failing
                );
                let reported = if report { now } else { reported };
                s.exec(tx, &sql, vec![id(c.user), since.into(), reported.into()]).await?;
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
        in_tx!(read self, |s, tx| {
            // By the index on the tag: one user's receipts, not every receipt kept.
            let sql = format!(
                "SELECT at, reason, erasers, attempts FROM {} WHERE tag = ? AND at >= ? ORDER BY seq",
                s.t.receipt
            );
            let rows = s.rows(tx, &sql, vec![tag.into(), (now - keep_ms).into()]).await?;
            rows.iter()
                .map(|r| {
                    Ok(RawReceipt {
                        at: r[0].i()?,
                        reason: reason(r[1].t()?)?,
                        erasers: r[2].t()?.to_owned(),
                        attempts: u32::try_from(r[3].i()?).unwrap_or(u32::MAX),
                    })
                })
                .collect()
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

    fn unschedule_gone<'a>(
        &'a self,
        requests: &'a [Unschedule],
    ) -> BoxFuture<'a, Result<Vec<bool>>> {
        in_tx!(self, |s, tx| {
            let mut done = Vec::with_capacity(requests.len());
            for &request in requests {
                done.push(s.unschedule_gone_in(tx, request).await?);
            }
            Ok(done)
        })
    }

    fn status(&self, user: u64) -> BoxFuture<'_, Result<RawStatus>> {
        in_tx!(read self, |s, tx| {
            Ok(RawStatus {
                last_seen: s.score(tx, &s.t.seen, user).await?,
                queued_due: s
                    .score(tx, &s.t.queue, user)
                    .await?
                    .map(|d| (d != i64::MAX).then_some(d)),
                leased_until: s.batch_of(tx, user).await?.map(|(_, deadline)| deadline),
                job: s.job(tx, user).await?,
                probes: {
                    let sql = format!(
                        "SELECT probed_at, reachable_at FROM {} WHERE uid = ?",
                        s.t.probes
                    );
                    let rows = s.rows(tx, &sql, vec![id(user)]).await?;
                    rows.first().map(|r| Ok::<_, Error>((r[0].i()?, r[1].i()?))).transpose()?
                },
            })
        })
    }

    fn preview(&self, times: ClaimTimes, limit: usize) -> BoxFuture<'_, Result<RawPreview>> {
        in_tx!(read self, |s, tx| {
            let now = now_of(times, tx.wall);
            let cutoff = now.saturating_sub(times.inactive_ms);
            let mut entries = Vec::new();
            // Rows a claim cannot read are left out, as the claim leaves them in place.
            for (user, _) in s.up_to(tx, &s.t.queue, None, now, limit).await? {
                let Some(job) = s.readable_job(tx, user).await? else { continue };
                if !s.came_back(tx, user, job).await? {
                    let last_seen = s.score(tx, &s.t.seen, user).await?;
                    entries.push(PreviewEntry::new(user, job, last_seen, true));
                }
            }
            let room = limit.saturating_sub(entries.len());
            let above = held_through(&s.notices(tx).await?, now);
            for (user, seen) in s.up_to(tx, &s.t.seen, above, cutoff, room).await? {
                let job = match s.score(tx, &s.t.queue, user).await? {
                    None => Job::INACTIVE,
                    Some(due) if due > now => {
                        let Some(job) = s.readable_job(tx, user).await? else { continue };
                        job
                    }
                    Some(_) => continue, // due: listed above
                };
                entries.push(PreviewEntry::new(user, job, Some(seen), false));
            }
            Ok(RawPreview {
                inactive_total: s.count_between(tx, &s.t.seen, "at", above, cutoff).await?,
                due_total: s.count_up_to(tx, &s.t.queue, "due", now).await?,
                expired_leases: s.count_up_to(tx, &s.t.lease, "deadline", now).await?,
                entries,
            })
        })
    }

    fn feed_head(&self) -> BoxFuture<'_, Result<String>> {
        in_tx!(read self, |s, tx| {
            // The highest number ever given, even after its rows expired.
            let head = s.scalar(tx, &D::feed_head_sql(&s.t), Vec::new()).await?;
            Ok(head.map_or(Ok(None), |v| v.opt_i())?.unwrap_or(0).to_string())
        })
    }

    fn feed_read<'a>(&'a self, cursor: &'a str) -> BoxFuture<'a, Result<FeedPage>> {
        in_tx!(read self, |s, tx| {
            let after: i64 = cursor.parse().unwrap_or(0);
            let sql = format!(
                "SELECT seq, uid, since, until, opt_out FROM {} WHERE seq > ? ORDER BY seq LIMIT ?",
                s.t.feed
            );
            let limit = i64::try_from(FEED_READ).unwrap_or(i64::MAX);
            let rows = s.rows(tx, &sql, vec![after.into(), limit.into()]).await?;
            let next = rows.last().map_or(Ok(after), |r| r[0].i())?;
            let entries = rows
                .iter()
                .map(|r| {
                    Ok(Invalidation {
                        user: r[1].user()?,
                        since: r[2].i()?,
                        until: r[3].i()?,
                        opt_out: r[4].i()? == 1,
                    })
                })
                .collect::<Result<_>>()?;
            Ok(FeedPage { entries, cursor: next.to_string(), restarted: false })
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
            s.exec(tx, &format!("DELETE FROM {} WHERE key = ?", s.t.kv), vec![key.into()]).await?;
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
            let key = crate::store::rate_key(action, &who.tag, window);
            match s.kv_get(tx, &key).await? {
                Some(count) => {
                    let next = count.parse::<u64>().unwrap_or(0) + 1;
                    let sql = format!("UPDATE {} SET value = ? WHERE key = ?", s.t.kv);
                    s.exec(tx, &sql, vec![next.to_string().into(), key.into()]).await?;
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

    fn census_lease(&self, ttl_ms: i64, holder: u64) -> BoxFuture<'_, Result<bool>> {
        in_tx!(self, |s, tx| {
            let holder = holder.to_string();
            if s.kv_get(tx, "census").await?.is_some_and(|h| h != holder) {
                return Ok(false);
            }
            s.kv_put(tx, "census", &holder, ttl_ms).await?;
            Ok(true)
        })
    }

    fn census_walk(&self, walk: CensusWalk) -> BoxFuture<'_, Result<CensusPage>> {
        in_tx!(self, |s, tx| { s.census_walk_in(tx, walk).await })
    }

    fn census_sweep(&self, limit: usize) -> BoxFuture<'_, Result<u64>> {
        in_tx!(self, |s, tx| { s.census_sweep_in(tx, limit).await })
    }

    fn census_record<'a>(
        &'a self,
        answers: &'a [CensusAnswer],
        at: i64,
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| { s.census_record_in(tx, answers, at, now).await })
    }

    fn record_audit<'a>(&'a self, summary: &'a str) -> BoxFuture<'a, Result<()>> {
        in_tx!(self, |s, tx| { s.set_meta(tx, "audit", summary).await })
    }

    fn last_audit(&self) -> BoxFuture<'_, Result<Option<String>>> {
        in_tx!(read self, |s, tx| { s.meta(tx, "audit").await })
    }

    fn index_receipts(&self, _now: i64, _keep_ms: i64) -> BoxFuture<'_, Result<bool>> {
        // Receipts are found by their tag as they are.
        Box::pin(async { Ok(true) })
    }

    fn erased_as<'a>(
        &'a self,
        tags: &'a [String],
        now: i64,
        keep_ms: i64,
    ) -> BoxFuture<'a, Result<Vec<Option<LastErasure>>>> {
        in_tx!(read self, |s, tx| {
            // By the index on the tag: the receipts of these users only, without the lock.
            // The age is checked here, not in the statement: with `at >= ?` beside the tags,
            // PostgreSQL walked the index on the time over every receipt kept (1M receipts:
            // seconds a page).
            let oldest = now - keep_ms;
            let mut latest: HashMap<String, LastErasure> = HashMap::new();
            for chunk in tags.chunks(CHUNK) {
                let sql = format!(
                    "SELECT tag, at, reason FROM {} WHERE tag IN ({})",
                    s.t.receipt,
                    params(chunk.len())
                );
                let args = chunk.iter().map(|t| Arg::from(t.as_str())).collect();
                for row in s.rows(tx, &sql, args).await? {
                    // A receipt this version cannot read names no erasure the audit could
                    // rely on.
                    let (Ok(tag), Ok(at), Ok(Some(reason))) =
                        (row[0].t(), row[1].i(), row[2].t().map(ErasureReason::from_code))
                    else {
                        continue;
                    };
                    if at < oldest {
                        continue;
                    }
                    let this = Some(LastErasure { reason, at });
                    let entry = latest.remove(tag);
                    if let Some(l) = LastErasure::latest(entry, this) {
                        latest.insert(tag.to_owned(), l);
                    }
                }
            }
            Ok(tags.iter().map(|t| latest.get(t).copied()).collect())
        })
    }

    fn adopt<'a>(
        &'a self,
        users: &'a [Adoptee],
        now: Option<i64>,
    ) -> BoxFuture<'a, Result<AdoptCounts>> {
        in_tx!(self, |s, tx| {
            // A few statements per chunk, not per user (see `adoption.rs`).
            let mut counts = AdoptCounts::default();
            for chunk in users.chunks(CHUNK) {
                counts += s.adopt_chunk(tx, chunk, now).await?;
            }
            Ok(counts)
        })
    }

    fn known<'a>(&'a self, users: &'a [u64]) -> BoxFuture<'a, Result<Vec<bool>>> {
        // Only reads: one snapshot, without the lock.
        in_tx!(read self, |s, tx| {
            let mut known = Vec::with_capacity(users.len());
            for chunk in users.chunks(CHUNK) {
                known.extend(s.known_chunk(tx, chunk).await?);
            }
            Ok(known)
        })
    }

    fn add_notice(&self, notice: Notice, now: Option<i64>) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| {
            let now = now.unwrap_or(tx.wall);
            let notices =
                notice.added_to(&s.notices(tx).await?, now).ok_or_else(too_many_notices)?;
            s.set_meta(tx, "notices", &Notice::format_all(&notices)).await
        })
    }

    fn notices(&self) -> BoxFuture<'_, Result<Vec<Notice>>> {
        in_tx!(read self, |s, tx| { s.notices(tx).await })
    }

    fn end_notices(&self) -> BoxFuture<'_, Result<()>> {
        in_tx!(self, |s, tx| { s.set_meta(tx, "notices", "").await })
    }

    fn erasures_finished(&self) -> BoxFuture<'_, Result<u64>> {
        in_tx!(read self, |s, tx| {
            let finished = s.meta(tx, "erasures_finished").await?;
            Ok(finished.and_then(|v| v.parse::<u64>().ok()).unwrap_or(0))
        })
    }

    fn secret<'a>(&'a self, candidate: &'a str) -> BoxFuture<'a, Result<String>> {
        in_tx!(self, |s, tx| {
            let sql = format!(
                "INSERT INTO {} (key, value) VALUES ('secret', ?) ON CONFLICT (key) DO NOTHING",
                s.t.meta
            );
            s.exec(tx, &sql, vec![candidate.into()]).await?;
            s.meta(tx, "secret")
                .await?
                .ok_or_else(|| Error::Corrupt("the namespace's secret vanished".into()))
        })
    }

    fn tracked(&self) -> BoxFuture<'_, Result<u64>> {
        in_tx!(read self, |s, tx| {
            s.count(tx, &format!("SELECT COUNT(*) FROM {}", s.t.seen), Vec::new()).await
        })
    }

    fn survey<'a>(&'a self, now: i64, ranges: &'a [SeenRange]) -> BoxFuture<'a, Result<RawSurvey>> {
        in_tx!(read self, |s, tx| {
            let mut seen = Vec::with_capacity(ranges.len());
            for r in ranges {
                let sql = format!("SELECT COUNT(*) FROM {} WHERE at > ? AND at <= ?", s.t.seen);
                seen.push(s.count(tx, &sql, vec![r.after.into(), r.up_to.into()]).await?);
            }
            let sql = format!("SELECT since FROM {}", s.t.failing);
            let failing_since = s
                .rows(tx, &sql, Vec::new())
                .await?
                .iter()
                .map(|r| r[0].i())
                .collect::<Result<Vec<_>>>()?;
            let mut survey = RawSurvey {
                seen,
                scheduled_due: s.count_up_to(tx, &s.t.queue, "due", now).await?,
                failing_since,
                ..RawSurvey::default()
            };
            let sql = format!("SELECT reason, marked_at, attempts FROM {}", s.t.job);
            // Every job, as the Redis store counts them: scheduled and running erasures.
            for row in s.rows(tx, &sql, Vec::new()).await? {
                let Ok(job) = job_from(&row) else { continue };
                survey.scheduled[job.reason.index()] += 1;
                survey.max_attempts = survey.max_attempts.max(job.attempts);
            }
            let sql = format!("SELECT id, at, backlog FROM {}", s.t.writers);
            let wall = tx.wall;
            // Heartbeats are stamped on the store's "now"; report them on the survey's.
            survey.writers = s
                .rows(tx, &sql, Vec::new())
                .await?
                .iter()
                .map(|r| {
                    Ok(Heartbeat {
                        writer: (r[0].i()? as u64).to_string(),
                        at: now.saturating_sub(wall.saturating_sub(r[1].i()?)),
                        backlog: unsigned(r[2].i()?),
                    })
                })
                .collect::<Result<_>>()?;
            let sql = format!("SELECT COUNT(*) FROM {}", s.t.probes);
            survey.census_probed = s.count(tx, &sql, Vec::new()).await?;
            if let Some(raw) = s.meta(tx, "census").await? {
                let (at, skip) = census_cursor(Some(&raw));
                let sql = format!("SELECT COUNT(*) FROM {} WHERE at < ?", s.t.seen);
                survey.census_walked = s.count(tx, &sql, vec![at.into()]).await? + skip;
            }
            Ok(survey)
        })
    }

    fn queued(&self) -> BoxFuture<'_, Result<Queued>> {
        in_tx!(read self, |s, tx| {
            let scheduled =
                s.count(tx, &format!("SELECT COUNT(*) FROM {}", s.t.queue), Vec::new()).await?;
            let sql = format!("SELECT COUNT(*), MIN(since) FROM {}", s.t.failing);
            let rows = s.rows(tx, &sql, Vec::new()).await?;
            let row = rows.first().ok_or_else(|| Error::Corrupt("no count".into()))?;
            Ok(Queued {
                scheduled,
                failing: unsigned(row[0].i()?),
                oldest_failing_since: row[1].opt_i()?,
            })
        })
    }
}
