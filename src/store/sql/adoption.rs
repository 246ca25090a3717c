//! Adoption and the audit's lookups, set-based: a chunk of users costs a few statements, not
//! a few per user (before: about 2,000 statements, each a round trip, per 500-user chunk
//! under the namespace's lock; over 2 s a chunk at 1 ms of latency).

use std::collections::{HashMap, HashSet};

use super::{Dialect, SqlNamespace, Tx, id, params};
use crate::error::Result;
use crate::store::{AdoptCounts, Adoptee};

/// What a chunk's read found of one user.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Found {
    /// Their time in `seen`, if tracked.
    seen: Option<i64>,
    /// An erasure of theirs is scheduled or running (a job, or a place in a batch).
    erasing: bool,
}

/// Adopts `users` in order over what the store holds of them (`found`), as the memory store
/// and `adopt.lua` do one by one: a user with an erasure is left as they are; one not
/// tracked is tracked at the adopted time; a tracked one moves forward to a later time
/// (not with `if_new`). A user listed twice counts once per listing and ends at the later
/// time. Returns the counts and each changed user's final time.
fn plan(users: &[Adoptee], mut found: HashMap<u64, Found>) -> (AdoptCounts, Vec<(u64, i64)>) {
    let mut counts = AdoptCounts::default();
    // The users whose time changes, in their first order.
    let mut changed = Vec::new();
    let mut changing = HashSet::new();
    for &Adoptee { user, ms, if_new } in users {
        let found = found.entry(user).or_default();
        if found.erasing {
            counts.erasing += 1;
            continue;
        }
        match found.seen {
            None => counts.new += 1,
            Some(old) if old < ms && !if_new => counts.moved += 1,
            Some(_) => {
                counts.kept += 1;
                continue;
            }
        }
        if changing.insert(user) {
            changed.push(user);
        }
        found.seen = Some(ms);
    }
    let writes = changed.into_iter().filter_map(|u| Some((u, found.get(&u)?.seen?))).collect();
    (counts, writes)
}

/// `users` without repeats, in their order.
fn distinct(users: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut seen = HashSet::new();
    users.into_iter().filter(|u| seen.insert(*u)).collect()
}

impl<D: Dialect> SqlNamespace<D> {
    /// Adopts `users` (at most [`CHUNK`](super::CHUNK)) inside a locked transaction: one read of what
    /// `seen`, the jobs and the batches hold of them, one upsert of those whose time
    /// changes.
    pub(super) async fn adopt_chunk(
        &self,
        tx: &mut Tx<D>,
        users: &[Adoptee],
        now: Option<i64>,
    ) -> Result<AdoptCounts> {
        let ids = distinct(users.iter().map(|a| a.user));
        let args = || ids.iter().map(|u| id(*u));
        let list = params(ids.len());
        // One statement for the three tables; the first column says which.
        let sql = format!(
            "SELECT CAST(0 AS BIGINT), uid, at FROM {} WHERE uid IN ({list}) \
             UNION ALL SELECT CAST(1 AS BIGINT), uid, CAST(0 AS BIGINT) FROM {} \
             WHERE uid IN ({list}) \
             UNION ALL SELECT CAST(1 AS BIGINT), uid, CAST(0 AS BIGINT) FROM {} \
             WHERE uid IN ({list})",
            self.t.seen, self.t.job, self.t.batch
        );
        let all = args().chain(args()).chain(args()).collect();
        let mut found: HashMap<u64, Found> = HashMap::with_capacity(ids.len());
        for row in self.rows(tx, &sql, all).await? {
            let entry = found.entry(row[1].user()?).or_default();
            if row[0].i()? == 0 {
                entry.seen = Some(row[2].i()?);
            } else {
                entry.erasing = true;
            }
        }
        let capped: Vec<Adoptee> = users
            .iter()
            .map(|a| Adoptee {
                ms: crate::store::no_later_than(a.ms, now.unwrap_or(tx.wall)),
                ..*a
            })
            .collect();
        let (counts, writes) = plan(&capped, found);
        if !writes.is_empty() {
            let seen = &self.t.seen;
            let values = vec!["(?, ?)"; writes.len()].join(", ");
            // Every time written is later than the one it replaces (`plan`); the condition
            // keeps a time from ever moving back all the same.
            let sql = format!(
                "INSERT INTO {seen} (uid, at) VALUES {values} ON CONFLICT (uid) DO UPDATE \
                 SET at = excluded.at WHERE excluded.at > {seen}.at"
            );
            let args = writes.iter().flat_map(|(u, ms)| [id(*u), (*ms).into()]).collect();
            self.exec(tx, &sql, args).await?;
        }
        Ok(counts)
    }

    /// Whether each of `users` (at most [`CHUNK`](super::CHUNK)) is tracked or has a job: one read.
    pub(super) async fn known_chunk(&self, tx: &mut Tx<D>, users: &[u64]) -> Result<Vec<bool>> {
        let ids = distinct(users.iter().copied());
        let list = params(ids.len());
        // Tracked, with a job, or in a running batch (one claimed for inactivity alone keeps
        // no job).
        let sql = format!(
            "SELECT uid FROM {} WHERE uid IN ({list}) UNION SELECT uid FROM {} WHERE uid IN \
             ({list}) UNION SELECT uid FROM {} WHERE uid IN ({list})",
            self.t.seen, self.t.job, self.t.batch
        );
        let args = ids.iter().chain(ids.iter()).chain(ids.iter()).map(|u| id(*u)).collect();
        let known: HashSet<u64> =
            self.rows(tx, &sql, args).await?.iter().map(|r| r[0].user()).collect::<Result<_>>()?;
        Ok(users.iter().map(|u| known.contains(u)).collect())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{Found, plan};
    use crate::store::{AdoptCounts, Adoptee};

    fn a(user: u64, ms: i64, if_new: bool) -> Adoptee {
        Adoptee { user, ms, if_new }
    }

    fn counts(new: u64, moved: u64, kept: u64, erasing: u64) -> AdoptCounts {
        AdoptCounts { new, moved, kept, erasing }
    }

    #[test]
    fn plans_adopt_one_listing_after_another() {
        let tracked = |ms| Found { seen: Some(ms), erasing: false };
        let found = HashMap::from([
            (1, tracked(100)),
            (2, tracked(100)),
            (3, tracked(100)),
            (4, Found { seen: Some(100), erasing: true }),
            (5, Found { seen: None, erasing: true }),
        ]);
        // The listings, what they count and the times they write.
        type Case<'a> = (&'a [Adoptee], AdoptCounts, &'a [(u64, i64)]);
        let cases: [Case<'_>; 9] = [
            (&[a(9, 50, false)], counts(1, 0, 0, 0), &[(9, 50)]),
            (&[a(9, 50, true)], counts(1, 0, 0, 0), &[(9, 50)]),
            (&[a(1, 200, false)], counts(0, 1, 0, 0), &[(1, 200)]),
            (&[a(1, 200, true)], counts(0, 0, 1, 0), &[]),
            (&[a(1, 100, false)], counts(0, 0, 1, 0), &[]),
            (&[a(1, 50, false)], counts(0, 0, 1, 0), &[]),
            (&[a(4, 500, false), a(5, 500, false)], counts(0, 0, 0, 2), &[]),
            // Listed twice or three times: once per listing, the later time kept.
            (&[a(9, 50, false), a(9, 90, false), a(9, 10, false)], counts(1, 1, 1, 0), &[(9, 90)]),
            (
                &[a(2, 300, false), a(3, 300, true), a(2, 250, false), a(2, 400, true)],
                counts(0, 1, 3, 0),
                &[(2, 300)],
            ),
        ];
        for (users, expected, writes) in cases {
            let (got, planned) = plan(users, found.clone());
            assert_eq!(got, expected, "{users:?}");
            assert_eq!(planned, writes, "{users:?}");
        }
    }
}
