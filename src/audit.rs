//! The audit: what the erasers hold, compared with what the store tracks.

use std::collections::HashSet;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use teloxide::types::UserId;

use crate::adopt::{Adoption, adopt};
use crate::clock::duration_ms;
use crate::erase::ErasureReason;
use crate::error::Result;
use crate::parts::Parts;
use crate::store::ScheduleRequest;

pub use crate::config::UntrackedUsers;

/// What the audit found; see [`Retention::audit`](crate::Retention::audit). Every user an
/// eraser's storage holds must be on a clock, and no erased user may still be held.
///
/// Erasers that can list what their storage holds ([`Eraser::list`](crate::Eraser::list))
/// are read page by page and compared with the store:
///
/// - a listed user the store does not know (not tracked, no erasure scheduled or running) is
///   **untracked**: data written by a code path outside the layer (an admin import, a web
///   app, a payment callback), or held since before the crate was installed. The audit puts
///   them on a clock as [`UntrackedUsers`] says (adopted, see [`crate::Adoption`]);
/// - with receipts on ([`RetentionBuilder::receipts`](crate::RetentionBuilder::receipts)),
///   an untracked user whose receipt records an erasure, and whom the eraser lists with no
///   activity after it, is **residue**: their erasure completed, yet the eraser still holds
///   data about them (a missed table or column). Their erasure is scheduled again at once
///   (counted against that eraser, and as untracked), as an erasure for inactivity marked at
///   the erasure the receipt records: a user who came back since (an interaction after it,
///   even one a replica writes only later) is not erased, and writers that may hold
///   unwritten interactions hold it back, as every erasure for inactivity;
/// - a user the eraser lists with activity after their recorded erasure is new data (an
///   order that bypassed the layer), never residue: untracked, a user to adopt;
/// - a user whose erasure was confirmed after the page was listed counts as tracked:
///   the page may show what that erasure removed since.
///
/// [`UntrackedUsers::Report`] only counts: it writes nothing. Each listing call is bounded
/// by the eraser timeout, and a listing that hands back a cursor it handed before is
/// stopped; both end that eraser's audit with [`EraserAudit::error`].
///
/// Memory stays bounded by a page: receipts are looked up page by page by the users'
/// keyed hashes; the audit stores no user id.
///
/// ```
/// use std::time::Duration;
/// use teloxide::types::UserId;
/// use teloxide_retention::{BoxError, Erasure, Listing, MemoryStore, Retention, UntrackedUsers, erase_fn};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), teloxide_retention::Error> {
/// let orders = erase_fn("orders", |_: Erasure| async { Ok::<_, BoxError>(()) })
///     // SELECT DISTINCT user_id FROM orders (one page here).
///     .list_with(|_cursor| async { Ok::<_, BoxError>(Listing::page([UserId(7)], None)) });
/// let retention = Retention::builder(MemoryStore::new())
///     .inactive_after(Duration::from_secs(90 * 24 * 3600))
///     .erase_with(orders)
///     .build()?;
/// let report = retention.audit(UntrackedUsers::Adopt).await?;
/// assert_eq!(report.erasers[0].untracked, 1);
/// assert_eq!(retention.tracked_users().await?, 1, "user 7 is on a clock now");
/// # Ok(()) }
/// ```
///
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditReport {
    /// One entry per registered eraser, in registration order.
    pub erasers: Vec<EraserAudit>,
    /// How long the audit took.
    pub elapsed: Duration,
}

impl AuditReport {
    /// Untracked users over every eraser (a user listed by two erasers counts twice).
    #[must_use]
    pub fn untracked(&self) -> u64 {
        self.erasers.iter().map(|e| e.untracked).sum()
    }

    /// Residue over every eraser.
    #[must_use]
    pub fn residue(&self) -> u64 {
        self.erasers.iter().map(|e| e.residue).sum()
    }

    /// Deferred untracked users over every eraser (see [`EraserAudit::deferred`]).
    #[must_use]
    pub fn deferred(&self) -> u64 {
        self.erasers.iter().map(|e| e.deferred).sum()
    }

    /// The erasers that cannot list, by name: the audit does not cover their data.
    #[must_use]
    pub fn not_covered(&self) -> Vec<&str> {
        self.erasers.iter().filter(|e| !e.can_list).map(|e| e.eraser.as_str()).collect()
    }
}

/// One eraser's part of an [`AuditReport`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EraserAudit {
    /// The eraser's name.
    pub eraser: String,
    /// Whether the eraser can list ([`Eraser::list`](crate::Eraser::list)); if not, the
    /// other counts are 0 and its data is not covered by the audit.
    pub can_list: bool,
    /// Users it listed.
    pub listed: u64,
    /// Of those, users the store knows (tracked, or with an erasure scheduled or running).
    pub tracked: u64,
    /// Of those, users the store did not know.
    pub untracked: u64,
    /// Of the untracked, users now put on a clock (see [`UntrackedUsers`]).
    pub adopted: u64,
    /// Of the untracked, users whose erasure completed (a receipt says so) yet whom the
    /// eraser still lists, with no activity after that erasure: their erasure is scheduled
    /// again (not under [`UntrackedUsers::Report`]).
    pub residue: u64,
    /// Of the untracked, users not adopted by this audit because an erasure finished
    /// while their page was read: without receipts the audit cannot tell a user that
    /// erasure just removed (whose data the page still showed) from one never tracked, and
    /// it never tracks an erased user again. A later audit adopts them if an eraser still
    /// lists them. (With receipts, a receipt tells them apart and nobody is deferred.)
    pub deferred: u64,
    /// Why listing stopped early, if it did (the counts cover the pages read).
    pub error: Option<String>,
}

/// The counts of the last scheduled audit (see
/// [`RetentionBuilder::audit_every`](crate::RetentionBuilder::audit_every)), as the store keeps
/// them; no user id. See [`Retention::last_audit`](crate::Retention::last_audit).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuditSummary {
    /// When the audit finished.
    pub at: DateTime<Utc>,
    /// Users listed by every eraser together.
    pub listed: u64,
    /// Listed users the store did not know.
    pub untracked: u64,
    /// Of those, users put on a clock.
    pub adopted: u64,
    /// Erased users an eraser still held, erased again.
    pub residue: u64,
    /// Untracked users left for a later audit (see [`EraserAudit::deferred`]).
    pub deferred: u64,
    /// The erasers that cannot list, by name.
    pub not_covered: Vec<String>,
}

impl AuditSummary {
    fn of(report: &AuditReport, at: DateTime<Utc>) -> Self {
        let sum = |f: fn(&EraserAudit) -> u64| report.erasers.iter().map(f).sum();
        Self {
            at,
            listed: sum(|e| e.listed),
            untracked: sum(|e| e.untracked),
            adopted: sum(|e| e.adopted),
            residue: sum(|e| e.residue),
            deferred: sum(|e| e.deferred),
            not_covered: report.not_covered().into_iter().map(str::to_owned).collect(),
        }
    }

    fn to_json(&self) -> String {
        serde_json::json!({
            "at": self.at.timestamp_millis(),
            "listed": self.listed,
            "untracked": self.untracked,
            "adopted": self.adopted,
            "residue": self.residue,
            "deferred": self.deferred,
            "not_covered": self.not_covered,
        })
        .to_string()
    }

    fn from_json(text: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(text).ok()?;
        let count = |k: &str| v.get(k).and_then(serde_json::Value::as_u64);
        Some(Self {
            at: DateTime::from_timestamp_millis(v.get("at")?.as_i64()?)?,
            listed: count("listed")?,
            untracked: count("untracked")?,
            adopted: count("adopted")?,
            residue: count("residue")?,
            // An older summary has none.
            deferred: count("deferred").unwrap_or(0),
            not_covered: v
                .get("not_covered")?
                .as_array()?
                .iter()
                .filter_map(|n| n.as_str().map(str::to_owned))
                .collect(),
        })
    }
}

/// The scheduled audit: runs it if this replica takes this interval's lease, and keeps its
/// counts in the store. `None` if another replica holds the lease.
pub(crate) async fn scheduled(
    parts: &Parts,
    every: Duration,
    untracked: UntrackedUsers,
) -> Result<Option<AuditReport>> {
    let holder = crate::store::random_id();
    if !parts.door.call(|b| b.claim_audit(duration_ms(every), holder)).await? {
        tracing::debug!("another replica runs this interval's audit");
        return Ok(None);
    }
    let report = audit(parts, untracked).await?;
    let at = DateTime::from_timestamp_millis(parts.now_ms()).unwrap_or_default();
    let summary = AuditSummary::of(&report, at).to_json();
    parts.door.call(|b| b.record_audit(&summary)).await?;
    Ok(Some(report))
}

/// The last scheduled audit's summary; see `Retention::last_audit`.
pub(crate) async fn last(parts: &Parts) -> Result<Option<AuditSummary>> {
    let raw = parts.door.call(|b| b.last_audit()).await?;
    Ok(raw.as_deref().and_then(AuditSummary::from_json))
}

/// Audits every eraser; see `Retention::audit`.
pub(crate) async fn audit(parts: &Parts, untracked: UntrackedUsers) -> Result<AuditReport> {
    let started = Instant::now();
    let now = parts.store_now_ms().await;
    if let Some(config) = &parts.config.receipts
        && untracked != UntrackedUsers::Report
    {
        // Receipts are looked up page by page, by their users' tags (an index on Redis, to
        // which receipts an older version wrote are added, step by step). A report writes
        // nothing: it looks up what is indexed so far.
        let keep = duration_ms(config.keep);
        while !parts.door.call(|b| b.index_receipts(now, keep)).await? {}
    }
    let mut report = AuditReport::default();
    for eraser in &parts.erasers {
        let mut part = EraserAudit { eraser: eraser.name().to_owned(), ..EraserAudit::default() };
        let mut listing = Listing::new(parts.config.eraser_timeout);
        loop {
            // Taken before the page is read: an erasure confirmed after it may have removed
            // what the page shows.
            let listed_at = parts.now_ms();
            // Without receipts, whether any erasure finished while the page was read (see
            // `audit_page`): the count before the page, compared after the lookup.
            let finished_before =
                if parts.config.receipts.is_none() && untracked != UntrackedUsers::Report {
                    Some(parts.door.call(|b| b.erasures_finished()).await?)
                } else {
                    None
                };
            let page = match listing.next(&**eraser).await {
                Ok(Some(page)) => page,
                Ok(None) => break,
                Err(why) => {
                    part.error = Some(why);
                    break;
                }
            };
            part.can_list = true;
            let users = &page.users;
            let read = PageRead { listed_at, finished_before };
            audit_page(parts, users, untracked, read, now, &mut part).await?;
            if page.next.is_none() {
                break;
            }
        }
        if !part.can_list && part.error.is_none() {
            tracing::info!(eraser = %part.eraser, "the audit does not cover an eraser that cannot list");
        }
        if let Some(error) = &part.error {
            tracing::warn!(eraser = %part.eraser, %error, "the audit stopped listing an eraser");
        }
        let eraser = part.eraser.clone();
        metrics::counter!("teloxide_retention_audit_listed_total", "eraser" => eraser.clone())
            .increment(part.listed);
        metrics::counter!("teloxide_retention_audit_untracked_total", "eraser" => eraser.clone())
            .increment(part.untracked);
        metrics::counter!("teloxide_retention_audit_residue_total", "eraser" => eraser.clone())
            .increment(part.residue);
        metrics::counter!("teloxide_retention_audit_deferred_total", "eraser" => eraser)
            .increment(part.deferred);
        report.erasers.push(part);
    }
    report.elapsed = started.elapsed();
    metrics::histogram!("teloxide_retention_audit_duration_seconds")
        .record(report.elapsed.as_secs_f64());
    tracing::info!(
        untracked = report.untracked(),
        residue = report.residue(),
        deferred = report.deferred(),
        not_covered = report.not_covered().len(),
        elapsed_ms = report.elapsed.as_millis() as u64,
        "audit done"
    );
    Ok(report)
}

/// An eraser's listing, read page by page: each call bounded by the eraser timeout, and
/// stopped when it hands back a cursor it handed before (it would never end).
struct Listing {
    limit: Duration,
    cursor: Option<String>,
    /// Hashes of the cursors handed back so far (8 bytes a page).
    seen: HashSet<u64>,
    done: bool,
}

impl Listing {
    fn new(limit: Duration) -> Self {
        Self { limit, cursor: None, seen: HashSet::new(), done: false }
    }

    /// The next page; `Ok(None)` when there is none (or the eraser cannot list); `Err`
    /// with why the listing stopped.
    async fn next(
        &mut self,
        eraser: &dyn crate::erase::DynEraser,
    ) -> std::result::Result<Option<crate::erase::Listing>, String> {
        if self.done {
            return Ok(None);
        }
        let call = eraser.list(self.cursor.take());
        let page = match tokio::time::timeout(self.limit, call).await {
            Err(_) => {
                return Err(format!(
                    "a listing call did not answer within {:?} (eraser_timeout)",
                    self.limit
                ));
            }
            Ok(Err(e)) => return Err(e.to_string()),
            Ok(Ok(None)) => return Ok(None),
            Ok(Ok(Some(page))) => page,
        };
        match &page.next {
            None => self.done = true,
            Some(next) => {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                next.hash(&mut hasher);
                if !self.seen.insert(hasher.finish()) {
                    return Err(format!(
                        "the listing handed back cursor {next:?} a second time: it would never \
                         end"
                    ));
                }
                self.cursor = Some(next.clone());
            }
        }
        Ok(Some(page))
    }
}

/// Users looked up per store call by the audit (the bound of adoption's and interactions'
/// calls too).
const LOOKUP_CHUNK: usize = 500;

/// When a page was read: the time taken before listing it, and (without receipts) the
/// store's count of finished erasures then.
#[derive(Debug, Clone, Copy)]
struct PageRead {
    listed_at: i64,
    finished_before: Option<u64>,
}

/// Compares one listed page with the store, and acts on what it finds:
///
/// 1. users the store knows (tracked, or an erasure scheduled or running) are fine;
/// 2. of the others, a user whose receipt records an erasure confirmed after the page was
///    listed (a later millisecond) counts as known, and nothing is done: the page may show
///    what that erasure removed since;
/// 3. a user whose receipt records an erasure, listed with no activity after it, is
///    **residue** (counted as untracked too): erased again, as an erasure for inactivity marked at that erasure (an
///    interaction since cancels it, and writers' heartbeats hold it as they hold every
///    erasure for inactivity);
/// 4. every other user is **untracked**: a user to adopt, also one erased before whom the
///    eraser lists with activity after that erasure (new data, a user again);
/// 5. without receipts, if an erasure finished while the page was read (the store's count
///    of finished erasures moved between before the listing and after the lookup), the
///    untracked are **deferred**, not adopted: one of them may be a user that erasure just
///    removed.
///
/// Under [`UntrackedUsers::Report`] nothing is written.
async fn audit_page(
    parts: &Parts,
    users: &[(UserId, Option<DateTime<Utc>>)],
    untracked: UntrackedUsers,
    read: PageRead,
    now: i64,
    part: &mut EraserAudit,
) -> Result<()> {
    let PageRead { listed_at, finished_before } = read;
    // Service accounts and invalid ids are never users: not counted, never adopted.
    let users: Vec<(UserId, Option<DateTime<Utc>>)> =
        users.iter().copied().filter(|(u, _)| crate::humans::is_trackable_id(*u)).collect();
    let ids: Vec<u64> = users.iter().map(|(u, _)| u.0).collect();
    part.listed += users.len() as u64;
    // Looked up a bounded chunk per store call, whatever the size of the eraser's pages: no
    // call keeps Redis busy for long (README guarantee 16).
    let mut known = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(LOOKUP_CHUNK) {
        known.extend(parts.door.call(|b| b.known(chunk)).await?);
    }
    let unknown: Vec<(UserId, Option<DateTime<Utc>>)> =
        users.into_iter().zip(known).filter(|(_, known)| !known).map(|(u, _)| u).collect();
    part.tracked += ids.len() as u64 - unknown.len() as u64;
    let erased = match &parts.config.receipts {
        Some(config) if !unknown.is_empty() => {
            let tags: Vec<String> = unknown.iter().map(|(u, _)| config.key.tag(*u)).collect();
            let keep = duration_ms(config.keep);
            let mut erased = Vec::with_capacity(tags.len());
            for chunk in tags.chunks(LOOKUP_CHUNK) {
                erased.extend(parts.door.call(|b| b.erased_as(chunk, now, keep)).await?);
            }
            erased
        }
        _ => vec![None; unknown.len()],
    };
    let writes = untracked != UntrackedUsers::Report;
    let raced = match finished_before {
        Some(before) if !unknown.is_empty() => {
            parts.door.call(|b| b.erasures_finished()).await? != before
        }
        _ => false,
    };
    if raced {
        tracing::debug!(
            eraser = %part.eraser,
            users = unknown.len(),
            "an erasure finished while a page was read: its untracked users wait for a later \
             audit"
        );
    }
    let mut adopt_now = Vec::new();
    for ((user, last_active), erased) in unknown.into_iter().zip(erased) {
        // An activity time that cannot be true (a sentinel, milliseconds read as seconds)
        // is no activity: it neither makes leftovers new data nor starts a clock.
        let last_active =
            last_active.filter(|t| crate::adopt::plausible(t.timestamp_millis(), now));
        let active_ms = last_active.map(|t| t.timestamp_millis());
        match erased {
            Some(e) if e.at > listed_at => {
                // Erased while the page was read.
                part.tracked += 1;
                continue;
            }
            Some(e) if active_ms.is_none_or(|at| at <= e.at) => {
                part.untracked += 1;
                part.residue += 1;
                tracing::warn!(
                    eraser = %part.eraser,
                    "residue: an eraser still holds data of an erased user{}",
                    if writes { "; erasing again" } else { "" }
                );
                if writes {
                    let request = ScheduleRequest {
                        user: user.0,
                        reason: ErasureReason::Inactive,
                        marked_at: e.at,
                        due: Some(now),
                    };
                    parts.door.call(|b| b.schedule(request)).await?;
                }
                continue;
            }
            _ => {}
        }
        part.untracked += 1;
        if raced {
            part.deferred += 1;
            continue;
        }
        match untracked {
            UntrackedUsers::Adopt => adopt_now.push((user, last_active)),
            UntrackedUsers::AdoptNow => adopt_now.push((user, None)),
            UntrackedUsers::Report => {}
        }
    }
    if !adopt_now.is_empty() {
        let adopted = adopt(parts, adopt_now, &Adoption::new()).await?;
        part.adopted += adopted.newly_tracked + adopted.moved_forward;
    }
    Ok(())
}
