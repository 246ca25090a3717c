//! The census's part of the memory store (see `Backend::census_walk` and the others).

use super::{Space, ttl};
use crate::store::{CensusAnswer, CensusPage, CensusWalk, census_cursor, census_next};

impl Space {
    /// See `Backend::census_lease`.
    pub(super) fn census_lease(&mut self, ttl_ms: i64, holder: u64) -> bool {
        let holder = holder.to_string();
        if self.kv_get("census").is_some_and(|(h, _)| *h != holder) {
            return false;
        }
        self.kv.insert("census".to_owned(), (holder, ttl(ttl_ms)));
        true
    }

    /// See `Backend::census_walk` (and `census_walk.lua`).
    pub(super) fn census_walk(&mut self, walk: CensusWalk) -> CensusPage {
        let CensusWalk { idle_up_to, probed_since, limit } = walk;
        let (at, skip) = census_cursor(self.census.as_deref());
        let walked: Vec<(i64, u64)> = self
            .seen
            .order
            .range((at, 0)..)
            .take_while(|(t, _)| *t <= idle_up_to)
            .skip(usize::try_from(skip).unwrap_or(usize::MAX))
            .take(limit)
            .copied()
            .collect();
        let round_done = walked.len() < limit;
        let users = walked
            .iter()
            .map(|&(_, user)| user)
            .filter(|user| !self.job.contains_key(user))
            .filter(|user| self.probes.get(user).is_none_or(|(probed, _)| *probed < probed_since))
            .collect();
        let times: Vec<i64> = walked.iter().map(|(t, _)| *t).collect();
        self.census = if round_done {
            None
        } else {
            let (at, skip) = census_next(at, skip, &times);
            Some(format!("{at},{skip}"))
        };
        CensusPage { users, walked: walked.len() as u64, round_done }
    }

    /// See `Backend::census_record`: tracked users only; times never go back.
    pub(super) fn census_record(&mut self, answers: &[CensusAnswer], at: i64) {
        for a in answers {
            if self.seen.score(a.user).is_none() {
                continue;
            }
            let entry = self.probes.entry(a.user).or_insert((0, 0));
            entry.0 = entry.0.max(at);
            if a.reachable {
                entry.1 = entry.1.max(at);
            }
        }
    }

    /// See `Backend::census_sweep`: the whole map at once (it lives in this process).
    pub(super) fn census_sweep(&mut self) -> u64 {
        let before = self.probes.len();
        let (seen, job) = (&self.seen, &self.job);
        self.probes.retain(|user, _| seen.score(*user).is_some() || job.contains_key(user));
        (before - self.probes.len()) as u64
    }

    /// The census's part of a survey: users with a probe time, and users the current
    /// round walked past.
    pub(super) fn census_survey(&self) -> (u64, u64) {
        let walked = self.census.as_deref().map_or(0, |raw| {
            let (at, skip) = census_cursor(Some(raw));
            self.seen.order.range(..(at, 0)).count() as u64 + skip
        });
        (self.probes.len() as u64, walked)
    }
}
