//! Gone marks: written to the store, or kept in memory while it does not answer.

use super::*;

impl Tracker {
    /// Marks `user` gone now; see `Retention::mark_gone`.
    pub(crate) async fn mark_gone(
        self: &Arc<Self>,
        user: UserId,
        reason: GoneReason,
    ) -> Result<bool> {
        let mark = self.gone_mark(reason);
        self.write_mark(user, mark).await
    }

    /// See `Retention::is_reachable`.
    pub(crate) async fn is_reachable(&self, user: UserId) -> Result<bool> {
        if self.has_mark(user.0) {
            return Ok(false);
        }
        let status = self.door.call(|b| b.status(user.0)).await?;
        Ok(match status.job {
            Some(job) if job.reason.is_gone() => came_back(job, status.last_seen),
            _ => true,
        })
    }

    /// Like `Retention::mark_gone`, but a mark the store cannot take is kept in memory
    /// (bounded by `max_buffered_interactions`) and written once the store answers again.
    pub(crate) async fn mark_gone_or_keep(self: &Arc<Self>, user: UserId, reason: GoneReason) {
        let mark = self.gone_mark(reason);
        let Err(e) = self.write_mark(user, mark).await else { return };
        if self.keep_mark(user.0, mark) {
            tracing::warn!(
                error = %e,
                user = user.0,
                %reason,
                "could not mark a gone user; kept in memory until the store answers again"
            );
        } else {
            tracing::error!(
                error = %e,
                user = user.0,
                %reason,
                "gone mark lost: the store is unreachable and the buffer is full"
            );
        }
    }

    /// A gone mark made now, due as the `GonePolicy` says.
    pub(super) fn gone_mark(&self, reason: GoneReason) -> KeptMark {
        let now = self.clock.now_ms();
        let due = match self.gone_policy {
            GonePolicy::EraseNow => Some(now),
            GonePolicy::EraseAfter(grace) => Some(later(now, grace)),
            GonePolicy::MarkOnly => None,
        };
        KeptMark { reason: reason.into(), marked_at: now, due }
    }

    /// A mark the pruner confirms by a probe is due after the probes' look-ahead at the
    /// earliest, counted when it is written (a mark kept in memory during an outage may be
    /// written long after it was made): none falls due unprobed while a claim's probes run.
    fn not_before_probes(&self, reason: crate::ErasureReason, due: Option<i64>) -> Option<i64> {
        match &self.probes {
            Some(probes) if probes.confirms(reason) => {
                due.map(|d| d.max(later(self.clock.now_ms(), crate::probe::LOOKAHEAD)))
            }
            _ => due,
        }
    }

    pub(super) async fn write_mark(self: &Arc<Self>, user: UserId, mark: KeptMark) -> Result<bool> {
        if !crate::humans::is_trackable_id(user) {
            return Ok(false);
        }
        let KeptMark { reason, marked_at, due } = mark;
        let due = self.not_before_probes(reason, due);
        let request = ScheduleRequest { user: user.0, reason, marked_at, due };
        let marked = self.door.call(|b| b.schedule(request)).await?;
        if marked != Marked::Scheduled {
            return Ok(false);
        }
        tracing::info!(user = user.0, %reason, "user marked gone");
        self.newly_marked(user.0, reason);
        // From now on, any interaction of the user must reach the store: it cancels the mark.
        let inv = Invalidation { user: user.0, since: marked_at, until: marked_at, opt_out: false };
        self.announced_here(inv);
        self.invalidate(inv).await;
        Ok(true)
    }

    /// Cancels a scheduled gone erasure of `user` (they unblocked the bot). Opt-outs stay.
    pub(crate) async fn user_returned(&self, user: UserId) {
        self.forget_mark(user.0);
        let request = [Unschedule::any(user.0)];
        match self.door.call(|b| b.unschedule_gone(&request)).await.map(|done| done[0]) {
            Ok(true) => {
                tracing::info!(user = user.0, "user unblocked the bot; erasure cancelled");
                self.hooks.returned(user.0);
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(error = %e, user = user.0, "could not cancel a gone mark"),
        }
    }

    /// Marks the user of `chat` gone if `err` says so; see `Retention::note_send_error`.
    pub(crate) async fn note_send_error(
        self: &Arc<Self>,
        chat: impl Into<Recipient>,
        err: &RequestError,
    ) -> Result<Option<GoneReason>> {
        let Some((user, reason)) = gone_user(chat.into(), err) else {
            return Ok(None);
        };
        self.mark_gone(user, reason).await?;
        Ok(Some(reason))
    }

    /// Keeps a gone mark the store could not take, to write it when the store answers again.
    /// Returns `false` if the buffer is full (the mark is lost).
    pub(crate) fn keep_mark(self: &Arc<Self>, user: u64, mark: KeptMark) -> bool {
        {
            let mut st = self.lock();
            // Later interactions must not be served from the cache: they cancel the mark.
            st.cache.remove(&user);
            if st.marks.len() >= self.max_buffered && !st.marks.contains_key(&user) {
                Counters::add(&self.counters.gone_marks_dropped, 1);
                return false;
            }
            // An earlier mark of the user stays: it started the grace period.
            st.marks.entry(user).or_insert(mark);
        }
        self.ensure_writer();
        self.wake.notify_one();
        true
    }

    /// Drops a gone mark of `user` still waiting for the store (they unblocked the bot).
    pub(crate) fn forget_mark(&self, user: u64) {
        let mut st = self.lock();
        if !st.marks.is_empty() {
            st.marks.remove(&user);
        }
    }
}
