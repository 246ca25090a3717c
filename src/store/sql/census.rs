//! The census's operations on a SQL namespace (see `Backend::census_walk` and
//! `Backend::census_record`): a step of the walk is one read, the answers of a step two
//! statements.

use super::{CHUNK, Dialect, SqlNamespace, Tx, id, params};
use crate::error::Result;
use crate::store::{CensusAnswer, CensusPage, CensusWalk, census_cursor, census_next};

impl<D: Dialect> SqlNamespace<D> {
    /// See `Backend::census_walk` (and `census_walk.lua`).
    pub(super) async fn census_walk_in(
        &self,
        tx: &mut Tx<D>,
        walk: CensusWalk,
    ) -> Result<CensusPage> {
        let CensusWalk { idle_up_to, probed_since, limit } = walk;
        let (at, skip) = census_cursor(self.meta(tx, "census").await?.as_deref());
        let sql = format!(
            "SELECT s.uid, s.at, j.uid, p.probed_at FROM {} s LEFT JOIN {} j ON j.uid = s.uid \
             LEFT JOIN {} p ON p.uid = s.uid WHERE s.at >= ? AND s.at <= ? \
             ORDER BY s.at, s.uid LIMIT ? OFFSET ?",
            self.t.seen, self.t.job, self.t.probes
        );
        let args = vec![
            at.into(),
            idle_up_to.into(),
            i64::try_from(limit).unwrap_or(i64::MAX).into(),
            i64::try_from(skip).unwrap_or(i64::MAX).into(),
        ];
        let rows = self.rows(tx, &sql, args).await?;
        let round_done = rows.len() < limit;
        let mut users = Vec::new();
        let mut times = Vec::with_capacity(rows.len());
        for row in &rows {
            times.push(row[1].i()?);
            let uid = row[0].i()?;
            // A row this crate did not write is never probed (the claim reports it).
            if uid <= 0 || !crate::humans::is_user_id(uid.unsigned_abs()) {
                continue;
            }
            let erasing = row[2].opt_i()?.is_some();
            let recent = row[3].opt_i()?.is_some_and(|probed| probed >= probed_since);
            if !erasing && !recent {
                users.push(uid.unsigned_abs());
            }
        }
        if round_done {
            let sql = format!("DELETE FROM {} WHERE key = 'census'", self.t.meta);
            self.exec(tx, &sql, Vec::new()).await?;
        } else {
            let (at, skip) = census_next(at, skip, &times);
            self.set_meta(tx, "census", &format!("{at},{skip}")).await?;
        }
        Ok(CensusPage { users, walked: rows.len() as u64, round_done })
    }

    /// See `Backend::census_sweep`: up to `limit` rows of users neither tracked nor
    /// erasing, found by key.
    pub(super) async fn census_sweep_in(&self, tx: &mut Tx<D>, limit: usize) -> Result<u64> {
        let sql = format!(
            "DELETE FROM {p} WHERE uid IN (SELECT p.uid FROM {p} p \
             LEFT JOIN {seen} s ON s.uid = p.uid LEFT JOIN {job} j ON j.uid = p.uid \
             WHERE s.uid IS NULL AND j.uid IS NULL LIMIT ?)",
            p = self.t.probes,
            seen = self.t.seen,
            job = self.t.job
        );
        self.exec(tx, &sql, vec![i64::try_from(limit).unwrap_or(i64::MAX).into()]).await
    }

    /// See `Backend::census_record`: set-based, one statement per chunk of reachable users
    /// and one per chunk of gone ones; only users still tracked (an erased user gets no row
    /// again); times never go back.
    pub(super) async fn census_record_in(
        &self,
        tx: &mut Tx<D>,
        answers: &[CensusAnswer],
        at: i64,
        now: Option<i64>,
    ) -> Result<()> {
        // Never later than now (invariant 11): the writer's claim clock, else the store's.
        let at = crate::store::no_later_than(at, now.unwrap_or(tx.wall));
        for reachable in [true, false] {
            let users: Vec<u64> =
                answers.iter().filter(|a| a.reachable == reachable).map(|a| a.user).collect();
            for chunk in users.chunks(CHUNK) {
                let sql = format!(
                    "INSERT INTO {p} (uid, probed_at, reachable_at) \
                     SELECT uid, ?, ? FROM {seen} WHERE uid IN ({}) \
                     ON CONFLICT (uid) DO UPDATE SET probed_at = CASE WHEN \
                     excluded.probed_at > {p}.probed_at THEN excluded.probed_at ELSE \
                     {p}.probed_at END, reachable_at = CASE WHEN excluded.reachable_at > \
                     {p}.reachable_at THEN excluded.reachable_at ELSE {p}.reachable_at END",
                    params(chunk.len()),
                    p = self.t.probes,
                    seen = self.t.seen
                );
                let mut args = vec![at.into(), (if reachable { at } else { 0 }).into()];
                args.extend(chunk.iter().map(|u| id(*u)));
                self.exec(tx, &sql, args).await?;
            }
        }
        Ok(())
    }
}
