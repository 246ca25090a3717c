//! The tracker's background tasks: the writer (group commit of interactions, buffered
//! marks, follow-ups), the feed reader, the heartbeat and the clock sync, and how they
//! follow the runtime they run on.

use super::*;

impl Tracker {
    /// Starts the writer and the heartbeat now if the caller runs on a tokio runtime (the
    /// layer is being built): the heartbeat tells `RedisStore::reshard` that a bot runs
    /// before its first interaction, and where the feed stands is read before the first
    /// update arrives instead of in front of its write. Elsewhere they start with the first
    /// interaction.
    pub(crate) fn start_if_in_runtime(self: &Arc<Self>) {
        if Handle::try_current().is_ok() {
            self.ensure_writer();
        }
    }

    /// Starts the writer and the heartbeat on the caller's runtime unless they run already,
    /// or starts them again if they are gone: their runtime shut down (a test harness that
    /// builds a runtime per dispatch, a runtime rebuilt after a panic), a task panicked, or
    /// they sit on a single-threaded runtime other than the caller's, which only runs them
    /// while someone drives it.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does.
    pub(crate) fn ensure_writer(self: &Arc<Self>) {
        let mut tasks = self.lock_tasks();
        if self.retired.get().is_some() {
            // Shut down for good: interactions recorded afterwards are not written.
            return;
        }
        let here = Handle::current();
        if tasks.as_ref().is_some_and(|t| t.serve(&here)) {
            return;
        }
        if self.flushed.get().is_some() && tasks.as_ref().is_some_and(|t| t.retiring(&here)) {
            // A clean shutdown under way: the writer wrote what it held and returned, and
            // the heartbeat task is removing the heartbeat. Nothing is gone.
            return;
        }
        if let Some(old) = tasks.take() {
            old.writer.abort();
            old.pulse.abort();
            self.recover_in_flight();
            if !self.restart_logged.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "the background writer of teloxide-retention was gone (its tokio runtime \
                     shut down or it panicked); started it again on the current runtime, \
                     nothing buffered is lost (logged once)"
                );
            } else {
                tracing::debug!("background writer started again on the current runtime");
            }
        }
        // Read here, after any recovery, not in the writer's first poll: a replacement of
        // this writer that ran before that poll must leave it with the older generation.
        let generation = self.lock().generation;
        *tasks = Some(Tasks {
            runtime: here.id(),
            flavor: here.runtime_flavor(),
            writer: here.spawn(Arc::clone(self).run(generation)),
            pulse: here.spawn(Arc::clone(self).pulse()),
        });
    }

    /// Puts the batch a writer that is gone had in flight back into the next commit: it
    /// may or may not have reached the store, and writing it again never moves a user back.
    pub(super) fn recover_in_flight(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        st.generation += 1;
        // Callers that waited for them wait until the store timeout (completing their slots
        // would tell them their write failed); later ones join the next commit.
        for commit in std::mem::take(&mut st.in_flight) {
            for (user, ms) in commit.users {
                let score = st.next_commit.entry(user).or_insert(ms);
                *score = (*score).max(ms);
            }
        }
    }

    /// The background writer: flushes batches, retries the backlog, reads the feed and
    /// keeps the cache small. `generation` is the writer's (see [`State::generation`]), read
    /// when it was started.
    pub(super) async fn run(self: Arc<Self>, generation: u64) {
        // The writer's commits in flight: a second one goes out beside the first once it is
        // large enough, so that the store has the next commit at hand while this process
        // completes the first's waiters (see `take_writer_commit`). Each goes in a task of
        // its own, so that it goes on while this loop reads the feed or retries the backlog,
        // and takes the next commit itself when it is done (`write_commits`); aborted with
        // the writer (its runtime shut down), each puts its users back into the next commit.
        let mut writing = tokio::task::JoinSet::new();
        let mut backoff = MIN_BACKOFF;
        let mut retry_at: Option<Instant> = None;
        let mut next_poll = Instant::now();
        let sweep_every = Duration::from_millis(self.resolution_ms.unsigned_abs());
        let mut next_sweep = Instant::now() + sweep_every;
        loop {
            let mut wake_at = next_poll.min(next_sweep);
            if let Some(at) = retry_at {
                wake_at = wake_at.min(at);
            }
            tokio::select! {
                () = self.cancel.cancelled() => {
                    // The commits in flight finish first (each bounded by the store timeout,
                    // as every write is); then the last chance for buffered interactions.
                    while writing.join_next().await.is_some() {}
                    let flushed = self.flush().await;
                    let _ = self.flushed.set(flushed.is_ok());
                    return;
                }
                () = self.wake.notified() => {}
                () = sleep_until(wake_at) => {}
                Some(done) = writing.join_next(), if !writing.is_empty() => {
                    if let Err(e) = done
                        && e.is_panic()
                    {
                        tracing::error!("a write of interactions panicked; its users were put back");
                    }
                }
            }
            // Times are corrected by the offset to the store's clock before the first write
            // (later measurements are the pulse's).
            if !self.clock.is_synced() {
                self.sync_clock_if_stale().await;
            }
            if self.feed.lock().await.cursor.is_none() && self.lock().healthy {
                // Where the feed stands is read before this process writes anything, so that
                // an erasure announced after a write comes after the cursor and drops the
                // cached user. (Users written while it cannot be read are dropped from the
                // cache once it can: see `FeedReader::poll`.)
                let _ = timeout(self.door.timeout(), self.poll_feed()).await;
                next_poll = Instant::now() + FEED_POLL;
            }
            while let Some(commit) = self.take_writer_commit(generation) {
                writing.spawn(Arc::clone(&self).write_commits(commit, generation));
            }
            if retry_at.is_some_and(|at| at <= Instant::now()) {
                retry_at = None;
            }
            let has_backlog = {
                let st = self.lock();
                !st.backlog.is_empty() || !st.marks.is_empty()
            };
            if has_backlog && retry_at.is_none() {
                if self.feed.lock().await.cursor.is_some() {
                    // Read the erasures announced meanwhile first: interactions of users
                    // who opted out since are dropped from the backlog instead of tracking
                    // them again (see `invalidate`).
                    let _ = timeout(self.door.timeout(), self.poll_feed()).await;
                    next_poll = Instant::now() + FEED_POLL;
                }
                if self.write_backlog().await.is_ok() {
                    backoff = MIN_BACKOFF;
                } else {
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            if next_poll <= Instant::now() {
                // Bounded: interactions of the next commit wait for this loop unless a commit
                // in flight takes them when it is done.
                let _ = timeout(self.door.timeout(), self.poll_feed()).await;
                next_poll = Instant::now() + FEED_POLL;
            }
            if next_sweep <= Instant::now() {
                self.sweep();
                next_sweep = Instant::now() + sweep_every;
            }
        }
    }

    pub(super) async fn poll_feed(self: &Arc<Self>) {
        self.feed.lock().await.poll(self).await;
    }

    /// Beside the writer, so that a slow store never delays writes: sends the heartbeats and
    /// measures the clock offset. At shutdown it removes the heartbeat once the writer's last
    /// flush wrote everything (a writer that still holds interactions keeps holding pruners
    /// back until it counts as dead).
    pub(super) async fn pulse(self: Arc<Self>) {
        loop {
            self.beat().await;
            // The first measurement is the writer's, before its first write.
            if self.clock.is_synced() {
                self.sync_clock_if_stale().await;
            }
            tokio::select! {
                () = self.cancel.cancelled() => break,
                () = tokio::time::sleep(self.heartbeat) => {}
            }
        }
        let wait = self.door.timeout().saturating_mul(4);
        if let Ok(true) = timeout(wait, self.flushed.wait()).await.copied() {
            let _ = self.door.call(|b| b.retire(self.writer_id)).await;
        }
        let _ = self.retired.set(());
    }

    /// Stops the writer: writes what is buffered, removes the heartbeat, and returns once
    /// done (bounded by a few store timeouts). `false` if interactions were left unwritten.
    pub(crate) async fn shutdown(self: &Arc<Self>) -> bool {
        self.cancel.cancel();
        if self.lock_tasks().is_none() {
            return true;
        }
        if let Some(&flushed) = self.retired.get().and(self.flushed.get()) {
            return flushed;
        }
        // Tasks whose runtime is gone cannot finish: start them on this one, where they see
        // the cancellation at once, write what is left and remove the heartbeat.
        self.ensure_writer();
        let wait = self.door.timeout().saturating_mul(6);
        let _ = timeout(wait, self.retired.wait()).await;
        self.flushed.get().copied().unwrap_or(false)
    }

    pub(super) fn lock_tasks(&self) -> MutexGuard<'_, Option<Tasks>> {
        self.tasks.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the store this writer is alive and how many interactions it has not written.
    pub(super) async fn beat(&self) {
        let backlog = {
            let st = self.lock();
            let in_flight: usize = st.in_flight.iter().map(|c| c.users.len()).sum();
            let unwritten = if st.healthy { 0 } else { st.next_commit.len() + in_flight };
            (st.backlog.len() + unwritten) as u64
        };
        if let Err(e) = self.door.call(|b| b.heartbeat(self.writer_id, backlog)).await {
            tracing::debug!(error = %e, "could not send a heartbeat");
        }
    }

    /// Measures the offset to the store's clock if the last measurement is older than
    /// [`CLOCK_SYNC`].
    pub(crate) async fn sync_clock_if_stale(&self) {
        if self.clock.is_wall_clock() && self.clock.should_sync(CLOCK_SYNC) {
            self.sync_clock().await;
        }
    }

    /// Measures the offset between this process's clock and the store's (Redis `TIME`),
    /// from the midpoint of the round trip. The first measurement also corrects the times
    /// this process took before it.
    pub(super) async fn sync_clock(&self) {
        let before = self.clock.local_ms();
        let time = match self.door.call(|b| b.server_time()).await {
            Ok(time) => time,
            Err(e) => {
                tracing::debug!(error = %e, "could not read the store's clock");
                return;
            }
        };
        let after = self.clock.local_ms();
        let Some(server) = time else {
            // No clock of its own (the in-memory store): this process's clock decides.
            self.clock.set_offset(0, false);
            return;
        };
        let local = before + (after - before) / 2;
        let offset = server.saturating_sub(local);
        if offset.abs() > SKEW_WARNING_MS {
            Counters::add(&self.counters.skew_warnings, 1);
            tracing::warn!(
                offset_ms = offset,
                "this host's clock is {} s {} the store's; times are corrected by the offset, \
                 but fix the host's time synchronisation (NTP)",
                offset.abs() as f64 / 1000.0,
                if offset > 0 { "behind" } else { "ahead of" }
            );
        }
        let mut st = self.lock();
        let (old, first) = self.clock.set_offset(offset, true);
        let delta = offset - old;
        if first && delta != 0 {
            let st = &mut *st;
            for score in st.next_commit.values_mut().chain(st.backlog.values_mut()) {
                *score = score.saturating_add(delta);
            }
            for seen in st.cache.values_mut() {
                seen.written = seen.written.saturating_add(delta);
                if seen.skipped != 0 {
                    seen.skipped = seen.skipped.saturating_add(delta);
                }
            }
            for mark in st.marks.values_mut() {
                mark.marked_at = mark.marked_at.saturating_add(delta);
                mark.due = mark.due.map(|d| d.saturating_add(delta));
            }
        }
    }

    /// Writes the next commit and completes its waiters (for `settle` and `flush`, each of
    /// whose callers may have one in flight beside the writer's two).
    pub(super) async fn write_next_commit(&self) {
        let commit = Self::take_commit_of(&mut self.lock(), 1, false);
        if let Some(commit) = commit {
            self.write_commit(commit).await;
        }
    }

    /// Writes `commit`, then the writer's next commit as soon as this one is done, without a
    /// trip through the writer's loop, while the writes succeed and the writer's loop has
    /// nothing to do before a write (measure the clock, read where the feed stands). A
    /// commit task that returns wakes the writer, which takes what is left.
    async fn write_commits(self: Arc<Self>, mut commit: Commit, generation: u64) {
        loop {
            self.write_commit(commit).await;
            let healthy = self.lock().healthy;
            // What the writer's loop does before a write: measure the store's clock (a wall
            // clock only), read where the feed stands.
            let ready = healthy
                && (self.clock.is_synced() || !self.clock.is_wall_clock())
                && self.feed.try_lock().is_ok_and(|feed| feed.cursor.is_some());
            if !ready || self.cancel.is_cancelled() {
                return;
            }
            match self.take_writer_commit(generation) {
                Some(next) => commit = next,
                None => return,
            }
        }
    }

    /// The next commit of the writer of `generation`, if it holds anyone, that writer is
    /// the current one, and its commits in flight leave room: the first always, a second one
    /// once it holds [`SECOND_COMMIT_AT`] users (fewer would cost the store a call for
    /// little).
    pub(super) fn take_writer_commit(&self, generation: u64) -> Option<Commit> {
        let mut st = self.lock();
        if st.generation != generation {
            return None;
        }
        let at_least = match st.writer_commits() {
            0 => 1,
            w if w < COMMITS_IN_FLIGHT => SECOND_COMMIT_AT,
            _ => return None,
        };
        Self::take_commit_of(&mut st, at_least, true)
    }

    /// Takes the next commit if it holds `at_least` users (one at least), for the writer
    /// (`by_writer`) or for a caller of `settle` or `flush`.
    fn take_commit_of(st: &mut State, at_least: usize, by_writer: bool) -> Option<Commit> {
        if st.next_commit.is_empty() || st.next_commit.len() < at_least {
            return None;
        }
        let slot = std::mem::replace(&mut st.slot, Arc::new(SetOnce::new()));
        // The next commit starts at this one's size: it fills under the lock every caller
        // takes, which growing it step by step would hold longer.
        let size = st.next_commit.len().min(4 * SECOND_COMMIT_AT);
        let room = UserMap::with_capacity_and_hasher(size, Default::default());
        let users = std::mem::replace(&mut st.next_commit, room);
        let seen = interactions(&users);
        st.commits += 1;
        let id = st.commits;
        st.in_flight.push(InFlight { id, users, slot: Arc::clone(&slot), by_writer });
        Some((id, seen, slot))
    }

    /// Writes one commit taken by `take_commit_of` and completes its waiters.
    ///
    /// # Cancellation safety
    ///
    /// Cancel-safe: dropped during the write (a cancelled `flush` or `settle`), the commit
    /// goes back into the next one (see [`Unfinished`]).
    async fn write_commit(&self, commit: Commit) {
        let (id, seen, slot) = commit;
        let mut unfinished = Unfinished { tracker: self, id, done: false };
        let result = self.write(&seen).await;
        unfinished.done = true;
        {
            let mut st = self.lock();
            st.in_flight.retain(|c| c.id != id);
            match &result {
                Ok(()) => self.written(&mut st, &seen),
                Err(e) => {
                    if st.healthy && !e.is_config() {
                        tracing::warn!(
                            error = %e,
                            users = seen.len(),
                            "could not record interactions; buffering them until the store \
                             answers again"
                        );
                    }
                    st.healthy = false;
                    self.write_failed(e);
                    self.buffer(&mut st, seen.iter().map(|i| (i.user, i.at)));
                }
            }
        }
        let _ = slot.set(result.is_ok());
    }

    /// Writes a snapshot of the backlog, then the waiting gone marks, and removes what was
    /// written. The backlog stays in place meanwhile, so its bound holds and newer interactions
    /// merge into it.
    pub(super) async fn write_backlog(self: &Arc<Self>) -> Result<()> {
        let seen = interactions(&self.lock().backlog);
        if seen.is_empty() {
            return self.write_marks().await;
        }
        if let Err(e) = self.write(&seen).await {
            self.write_failed(&e);
            return Err(e);
        }
        tracing::info!(users = seen.len(), "store answers again; wrote buffered interactions");
        {
            let mut st = self.lock();
            for i in &seen {
                if st.backlog.get(&i.user).is_some_and(|s| *s <= i.at) {
                    st.backlog.remove(&i.user);
                }
            }
            self.written(&mut st, &seen);
        }
        self.write_marks().await
    }

    /// Writes the gone marks that wait for the store, one script call each, with their
    /// original times: a user who interacted since (their interaction is in the store now) is
    /// not erased, exactly as if the mark had been stored when it happened.
    pub(super) async fn write_marks(self: &Arc<Self>) -> Result<()> {
        let marks: Vec<(u64, KeptMark)> = self.lock().marks.iter().map(|(u, m)| (*u, *m)).collect();
        for (user, mark) in marks {
            let KeptMark { reason, marked_at, due } = mark;
            let request = ScheduleRequest { user, reason, marked_at, due };
            let marked = self.door.call(|b| b.schedule(request)).await?;
            {
                let mut st = self.lock();
                // Remove it unless the user came back meanwhile (and it is gone already).
                if st.marks.get(&user).is_some_and(|m| m.marked_at == mark.marked_at) {
                    st.marks.remove(&user);
                }
            }
            if marked == Marked::Scheduled {
                self.newly_marked(user, mark.reason);
            }
            // As for a mark written at once: interactions this process served from its cache
            // since the mark must reach the store, where they cancel it.
            let since = mark.marked_at;
            let inv = Invalidation { user, since, until: since, opt_out: false };
            if marked == Marked::Scheduled {
                self.announced_here(inv);
            }
            self.invalidate(inv).await;
            tracing::info!(user, reason = %mark.reason, "wrote a gone mark kept during an outage");
        }
        Ok(())
    }

    /// Counts a failed write; a store opened with the wrong shard count is a configuration
    /// error, logged once at error level (not per update).
    pub(super) fn write_failed(&self, e: &Error) {
        Counters::add(&self.counters.interaction_write_failures, 1);
        if !e.is_config() {
            return;
        }
        Counters::add(&self.counters.layout_errors, 1);
        if !self.layout_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                error = %e,
                "interactions cannot be recorded: the store is opened with another shard \
                 count than its namespace's; they are kept in memory (up to \
                 max_buffered_interactions users) until the store is opened with the right count \
                 (logged once)"
            );
        }
    }

    pub(super) async fn write(&self, seen: &[Interaction]) -> Result<()> {
        // Never stored later than now: this process's estimate of the store's clock, or the
        // store's own before the first measurement.
        let now = self.clock.claim_now();
        self.door.call(|b| b.record_interactions(seen, now)).await
    }

    pub(super) fn written(&self, st: &mut State, written: &[Interaction]) {
        st.healthy = true;
        Counters::add(&self.counters.interactions_written, written.len() as u64);
        for &Interaction { user, at } in written {
            let seen = st.cache.entry(user).or_insert(Seen { written: at, skipped: 0 });
            seen.written = seen.written.max(at);
        }
    }

    /// Empties the cache; interactions it skipped writing join the next commit.
    pub(super) fn forget_cache(&self) {
        let mut st = self.lock();
        let st = &mut *st;
        let mut skipped = false;
        for (user, seen) in st.cache.drain() {
            if seen.skipped > seen.written {
                let score = st.next_commit.entry(user).or_insert(seen.skipped);
                *score = (*score).max(seen.skipped);
                skipped = true;
            }
        }
        if skipped {
            self.wake.notify_one();
        }
    }

    /// Drops cache entries that can no longer skip a write nor matter to an invalidation.
    pub(super) fn sweep(&self) {
        let horizon = self.clock.now_ms().saturating_sub(self.resolution_ms.saturating_mul(2));
        self.lock().cache.retain(|_, s| s.written.max(s.skipped) >= horizon);
        // Echoes that never came (the feed could not be read in time) are forgotten.
        let keep = Duration::from_millis(FEED_KEEP_MS.unsigned_abs());
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .retain(|_, (_, _, at)| at.elapsed() < keep);
    }
}

/// A commit taken to be written: its id, its interactions and its waiters' completion.
type Commit = (u64, Vec<Interaction>, Arc<SetOnce<bool>>);

/// The interactions of a user → time map, to write.
fn interactions<'a>(times: impl IntoIterator<Item = (&'a u64, &'a i64)>) -> Vec<Interaction> {
    times.into_iter().map(|(&user, &at)| Interaction { user, at }).collect()
}

/// A commit in flight whose write may be dropped midway (its caller, a `flush` or `settle`,
/// cancelled): then it goes back into the next commit, since it may or may not have reached
/// the store and writing it again never moves a user back, and the writer is woken. Its
/// waiters wait until the store timeout, as after a writer that is gone.
struct Unfinished<'a> {
    tracker: &'a Tracker,
    id: u64,
    done: bool,
}

impl Drop for Unfinished<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        {
            let mut st = self.tracker.lock();
            let st = &mut *st;
            if let Some(i) = st.in_flight.iter().position(|c| c.id == self.id) {
                for (user, ms) in st.in_flight.remove(i).users {
                    let score = st.next_commit.entry(user).or_insert(ms);
                    *score = (*score).max(ms);
                }
            }
        }
        self.tracker.wake.notify_one();
    }
}
