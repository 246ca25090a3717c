//! Adoption of the users an existing bot already holds, and the audit of what erasers hold,
//! on every store (the first block's cases also on a shared Redis Cluster, `cluster.rs`);
//! and what concerns one store: Redis keys erasers' listings, no id left in Redis by an
//! audit, an existing SQLite bot's own table.

use std::time::Duration;

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use teloxide::types::UserId;
use teloxide_retention::{
    Adoption, BoxError, Erasure, Listing, ReceiptKey, RedisKeysEraser, Retention, UntrackedUsers,
    erase_fn,
};

use crate::common::{DAY, Env, T0};
use crate::every_store;

/// The bot's own table: user id → last activity (unix ms), as an existing bot keeps it.
#[derive(Clone, Default)]
pub(crate) struct Table(Arc<Mutex<BTreeMap<u64, i64>>>);

impl Table {
    pub(crate) fn insert(&self, user: u64, at: i64) {
        self.0.lock().unwrap().insert(user, at);
    }

    pub(crate) fn rows(&self) -> Vec<(UserId, Option<DateTime<Utc>>)> {
        let rows = self.0.lock().unwrap();
        rows.iter().map(|(&u, &at)| (UserId(u), DateTime::from_timestamp_millis(at))).collect()
    }

    pub(crate) fn remove(&self, user: u64) {
        self.0.lock().unwrap().remove(&user);
    }

    /// The user's last activity (ms), if the table holds them.
    pub(crate) fn at(&self, user: u64) -> Option<i64> {
        self.0.lock().unwrap().get(&user).copied()
    }

    pub(crate) fn contains(&self, user: u64) -> bool {
        self.0.lock().unwrap().contains_key(&user)
    }

    pub(crate) fn len(&self) -> usize {
        self.0.lock().unwrap().len()
    }

    /// An eraser that deletes the user's row and lists the table 300 rows a page
    /// (`SELECT user_id, last_active FROM t WHERE user_id > $1 ORDER BY user_id LIMIT 300`).
    pub(crate) fn eraser(&self, name: &'static str) -> impl teloxide_retention::Eraser {
        let erase = self.clone();
        let list = self.clone();
        erase_fn(name, move |e: Erasure| {
            erase.0.lock().unwrap().remove(&e.user.0);
            async { Ok::<_, BoxError>(()) }
        })
        .list_with(move |cursor: Option<String>| {
            let after: u64 = cursor.map_or(0, |c| c.parse().unwrap());
            let rows = list.0.lock().unwrap();
            let page: Vec<(UserId, Option<DateTime<Utc>>)> = rows
                .range(after + 1..)
                .take(300)
                .map(|(&u, &at)| (UserId(u), DateTime::from_timestamp_millis(at)))
                .collect();
            let next = (page.len() == 300).then(|| page[299].0.0.to_string());
            async move { Ok::<_, BoxError>(Listing::page_with_activity(page, next)) }
        })
    }
}

/// 2,000 users; 1,555 of them idle for more than 90 days (T0 is "now").
fn existing_bot_table() -> Table {
    let table = Table::default();
    for user in 1..=2_000u64 {
        let idle_days = if user <= 1_555 { 91 + user % 300 } else { user % 90 };
        table.insert(1_000_000 + user, T0 - (idle_days as i64) * 86_400_000 - 1);
    }
    table
}

/// The existing bot of these tests: its table, and a retention on `env` that erases from it
/// (a 90-day threshold).
async fn existing_bot(env: &crate::common::Env) -> (Table, Retention) {
    let table = existing_bot_table();
    let retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(table.eraser("users"))
        .build()
        .unwrap();
    (table, retention)
}

every_store! {
    #![on_cluster]
    async fn an_existing_bot_adopts_its_users_and_the_first_pass_erases_exactly_the_idle(env) {
        let (table, retention) = existing_bot(&env).await;
        // Measured before the feature: a pass a year later erased 0 users, "tracked users: 0".
        let adopted = retention.adopt(table.rows(), &Adoption::new()).await.unwrap();
        assert_eq!(adopted.newly_tracked, 2_000, "{adopted:?}");
        assert_eq!(retention.tracked_users().await.unwrap(), 2_000);
        // The dry run shows the mass erasure before it happens.
        assert_eq!(retention.preview(10).await.unwrap().inactive, 1_555);

        let erased = crate::support::prune_until_done(&retention).await;
        assert_eq!(erased, 1_555);
        assert_eq!(table.len(), 445, "exactly the idle users' rows are gone");
        assert!((1_001_556..=1_002_000).all(|u| table.contains(u)));

        // Adopting again (from what the table holds now) changes nothing.
        let again = retention.adopt(table.rows(), &Adoption::new()).await.unwrap();
        assert_eq!((again.newly_tracked, again.moved_forward, again.kept), (0, 0, 445), "{again:?}");
    }

    async fn not_before_gives_notice_and_opt_outs_are_not_resurrected(env) {
        let (table, retention) = existing_bot(&env).await;
        // One user asked to be forgotten before the adoption: their erasure is scheduled.
        retention.schedule_opt_out(UserId(1_000_001)).await.unwrap();
        let notice = DateTime::from_timestamp_millis(T0).unwrap() + chrono::Duration::days(30);
        let adopted = retention.adopt(table.rows(), &Adoption::new().not_before(notice)).await.unwrap();
        assert_eq!((adopted.newly_tracked, adopted.erasing), (1_999, 1), "{adopted:?}");
        // Until the notice date only the opt-out is erased.
        env.clock.advance(29 * DAY);
        assert_eq!(retention.prune_once().await.unwrap().erased, 1);
        assert!(!table.contains(1_000_001));
        // Past the notice date (plus the cache's resolution, which every cutoff adds): the
        // users idle for longer than the threshold go, the recent ones stay.
        env.clock.advance(2 * DAY);
        crate::support::prune_until_done(&retention).await;
        assert!((1_000_002..=1_001_555).all(|u| !table.contains(u)), "the idle users are erased");
        let recent = (1_001_556..=1_002_000u64).filter(|u| (u - 1_000_000) % 90 <= 57);
        assert!(recent.clone().all(|u| table.contains(u)), "users seen within 57 days stay");
        assert!(recent.count() > 250);
        // Refused: Telegram's service account and ids that are no user ids.
        let refused = retention
            .adopt(
                [(UserId(777_000), None), (UserId(0), None), (UserId(1 << 53), None)],
                &Adoption::new(),
            )
            .await
            .unwrap();
        assert_eq!((refused.refused_service_accounts, refused.refused_invalid_ids), (1, 2));
    }

    async fn the_audit_finds_untracked_users_and_residue(env) {
        let key = ReceiptKey::new(*b"an example key of thirty-two b.!").unwrap();
        let orders = Table::default();
        // A second table the "orders" eraser forgets to delete from, but lists (a missed table).
        let items = Table::default();
        let listed = (orders.clone(), items.clone());
        let orders_eraser = {
            let erase = orders.clone();
            erase_fn("orders", move |e: Erasure| {
                erase.0.lock().unwrap().remove(&e.user.0);
                async { Ok::<_, BoxError>(()) }
            })
            .list_with(move |_cursor: Option<String>| {
                let (orders, items) = (listed.0.0.lock().unwrap(), listed.1.0.lock().unwrap());
                let users: BTreeSet<u64> = orders.keys().chain(items.keys()).copied().collect();
                // The last activity the tables know: the newest order.
                let page: Vec<(UserId, Option<DateTime<Utc>>)> = users
                    .into_iter()
                    .map(|u| {
                        (UserId(u), orders.get(&u).and_then(|&at| DateTime::from_timestamp_millis(at)))
                    })
                    .collect();
                async move { Ok::<_, BoxError>(Listing::page_with_activity(page, None)) }
            })
        };
        let retention = env
            .bare_builder()
            .await
            .inactive_after(90 * DAY)
            .without_commands()
            .erase_with(orders_eraser)
            .erase_with(erase_fn("cannot-list", |_: Erasure| async { Ok::<_, BoxError>(()) }))
            .receipts(key, 60 * DAY)
            .build()
            .unwrap();
        // Users the layer saw, with orders.
        for user in [5u64, 6] {
            retention.note_interaction(UserId(user)).await;
            orders.insert(user, T0);
            items.insert(user, T0);
        }
        // Rows written straight into the table (an admin import) for 3 users never seen.
        for user in [7u64, 8, 9] {
            orders.insert(user, T0 - 3_600_000);
        }
        retention.flush().await.unwrap();

        let report = retention.audit(UntrackedUsers::Adopt).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.listed, part.tracked, part.untracked, part.adopted), (5, 2, 3, 3), "{part:?}");
        assert_eq!(part.residue, 0);
        assert_eq!(report.not_covered(), ["cannot-list"]);
        for user in [7u64, 8, 9] {
            let status = retention.status(UserId(user)).await.unwrap();
            assert_eq!(status.last_seen.unwrap().timestamp_millis(), T0 - 3_600_000, "{user}");
        }

        // Users 5 and 6 opt out: the eraser deletes their orders but not their order items.
        let erased_at = teloxide_retention::Clock::now_ms(&env.clock);
        retention.erase_user(UserId(5)).await.unwrap();
        retention.erase_user(UserId(6)).await.unwrap();
        assert!(!orders.contains(5) && items.contains(5));
        let report = retention.audit(UntrackedUsers::Adopt).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.untracked, part.residue, part.adopted), (2, 2, 0), "{part:?}");
        // The residue is erased again at once (the items must go by hand: the eraser misses
        // them), marked at the erasure its receipt records; as an erasure for inactivity, so
        // that an interaction since cancels it.
        let status = retention.status(UserId(5)).await.unwrap();
        let erasure = status.erasure.unwrap();
        assert_eq!(erasure.reason, teloxide_retention::ErasureReason::Inactive);
        assert_eq!(erasure.marked_at.unwrap().timestamp_millis(), erased_at);
        // User 6 came back after their opt-out, and the interaction reaches the store only after
        // the audit (a replica's group commit or outage buffer): they are not erased again.
        env.clock.advance(Duration::from_secs(1));
        retention.note_interaction(UserId(6)).await;
        retention.flush().await.unwrap();
        let pass = retention.prune_once().await.unwrap();
        assert_eq!(pass.erased, 1, "user 5 only: {pass:?}");
        assert!(
            retention.status(UserId(6)).await.unwrap().last_seen.is_some(),
            "user 6 is a user again"
        );
        // A second audit of a clean state finds nothing new.
        items.0.lock().unwrap().remove(&5);
        items.0.lock().unwrap().remove(&6);
        let report = retention.audit(UntrackedUsers::Report).await.unwrap();
        assert_eq!((report.untracked(), report.residue()), (0, 0), "{report:?}");
    }

    /// No stored time is ever later than now, whatever the notice: a notice is a rule of its
    /// own, and adopted users keep their last activity (capped at now). Before the fix a
    /// 60-day notice on a 30-day threshold stored a last interaction 30 days in the future,
    /// and a block during the notice was taken for a return; the step after it refused such
    /// a notice. A last activity a little ahead (another host's clock) is stored as now, one
    /// that cannot be true (0 for "unknown", milliseconds read as seconds) is refused and
    /// counted, and so is a notice date more than a year ahead. Fails if adoption stops
    /// clamping to now.
    #[stores(memory, redis, redis_sharded, redis_tls, sqlite, postgres)]
    async fn no_adopted_time_is_ever_later_than_now(env) {
        let bot = env.builder().await.build().unwrap();
        let now = DateTime::from_timestamp_millis(T0).unwrap();
        let err = bot
            .adopt([(UserId(1), None)], &Adoption::new().not_before(now + chrono::Duration::days(400)))
            .await
            .unwrap_err();
        assert!(matches!(err, teloxide_retention::Error::InvalidArgument(_)), "{err:?}");
        assert!(err.to_string().contains("more than a year ahead"), "{err}");
        assert_eq!(bot.tracked_users().await.unwrap(), 0, "nothing was written");

        let soon = now + chrono::Duration::hours(3);
        let impossible = DateTime::from_timestamp(T0, 0).unwrap(); // ms read as seconds
        let unknown = DateTime::from_timestamp(0, 0).unwrap();
        let users = [
            (UserId(1), None),
            (UserId(2), Some(soon)),
            (UserId(3), Some(impossible)),
            (UserId(4), Some(unknown)),
        ];
        // Twice the 30-day threshold.
        let notice = Adoption::new().not_before(now + chrono::Duration::days(60));
        let adopted = bot.adopt(users, &notice).await.unwrap();
        assert_eq!((adopted.newly_tracked, adopted.refused_implausible_times), (2, 2), "{adopted:?}");
        for user in [1, 2] {
            let seen = bot.status(UserId(user)).await.unwrap().last_seen.unwrap();
            assert_eq!(seen.timestamp_millis(), T0, "user {user}: stored at now, never later");
        }
        assert_eq!(bot.status(UserId(3)).await.unwrap().last_seen, None);
        // A block during the notice is no return: the user is not reachable.
        env.clock.advance(DAY);
        assert!(bot.mark_gone(UserId(2), teloxide_retention::GoneReason::Blocked).await.unwrap());
        assert!(!bot.is_reachable(UserId(2)).await.unwrap());
    }

    /// A notice longer than the threshold: until its date nobody quiet since the adoption
    /// is erased for inactivity, on every store, while every other erasure goes on (an
    /// opt-out, a user who interacted after the adoption and stayed away for the
    /// threshold); once the date passes, the held users idle past the threshold go. Before
    /// the fix such a notice was refused (and before that it stored a future time).
    async fn a_notice_longer_than_the_threshold_holds_quiet_users_until_its_date(env) {
        let table = existing_bot_table();
        let bot = env
            .bare_builder()
            .await
            .inactive_after(30 * DAY)
            .without_commands()
            .erase_with(table.eraser("users"))
            .build()
            .unwrap();
        let notice = DateTime::from_timestamp_millis(T0).unwrap() + chrono::Duration::days(100);
        let adopted = bot.adopt(table.rows(), &Adoption::new().not_before(notice)).await.unwrap();
        assert_eq!(adopted.newly_tracked, 2_000, "{adopted:?}");
        // Every adopted user keeps the activity the table gives.
        let first = bot.status(UserId(1_000_001)).await.unwrap().last_seen.unwrap();
        assert_eq!(Some(first.timestamp_millis()), table.at(1_000_001));
        assert_eq!(bot.preview(10).await.unwrap().inactive, 0, "held by the notice");
        // Operators see the notice, and whom it holds, rather than users "due now".
        let survey = bot.survey().await.unwrap();
        let past = table.rows();
        let past = past.iter().filter(|(_, at)| at.unwrap().timestamp_millis() < T0 - 30 * 86_400_000);
        let past = past.count();
        assert_eq!((survey.due_now, survey.held_by_notices), (0, past as u64), "{survey:?}");
        assert_eq!(survey.notices.len(), 1);
        assert_eq!(survey.notices[0].until, notice);
        // 70 users adopted one call at a time (as the CLI adopts chunk by chunk), each call
        // with the same notice a second later, without a known activity: stored at the
        // adoption's own time, the notice's bound, and held. One notice holds them all (it
        // was one per call, and the 65th call was refused).
        let each = Adoption::new().not_before(notice);
        for user in 10..80u64 {
            env.clock.advance(Duration::from_secs(1));
            assert_eq!(bot.adopt([(UserId(user), None)], &each).await.unwrap().newly_tracked, 1);
        }
        assert_eq!(bot.survey().await.unwrap().notices.len(), 1, "one notice, not 70");

        // A day later user 1,000,002 opts out, and a user never seen before writes.
        env.clock.advance(DAY);
        bot.erase_user(UserId(1_000_002)).await.unwrap();
        assert!(!table.contains(1_000_002), "an opt-out is carried out during the notice");
        assert!(bot.note_interaction(UserId(5)).await.is_stored());
        bot.flush().await.unwrap();
        table.insert(5, T0 + 86_400_000);
        // 60 days on: user 5 has been away for 59 days, past the 30-day threshold.
        env.clock.advance(59 * DAY);
        assert_eq!(bot.preview(10).await.unwrap().inactive, 1);
        assert_eq!(crate::support::prune_until_done(&bot).await, 1, "user 5 only");
        assert!(!table.contains(5));
        assert_eq!(table.len(), 1_999, "every adopted user but the opt-out is kept");

        // Half a day before the notice date, every held user is due within a day.
        env.clock.set_unix_ms(T0 + 99 * 86_400_000 + 43_200_000);
        let survey = bot.survey().await.unwrap();
        let held = 1_999 + 70;
        assert_eq!((survey.due_now, survey.held_by_notices), (0, held), "{survey:?}");
        assert_eq!((survey.due_within_day, survey.due_within_week), (held, held), "{survey:?}");
        // Past the notice date (plus the cache's resolution): every adopted user idle past
        // the threshold goes, which is all of them here (the most recent was seen 89 days
        // before the adoption).
        env.clock.set_unix_ms(T0 + 101 * 86_400_000);
        assert_eq!(crate::support::prune_until_done(&bot).await, held);
        assert_eq!(table.len(), 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_erasers_list_the_users_whose_keys_exist() {
    let env = Env::redis();
    let client = redis::Client::open(env.redis.as_ref().unwrap().url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let mut sync = env.redis_connection();
    for key in ["profile:11", "profile:12", "cart:{13}", "profile:abc", "profile:012", "other:14"] {
        let _: () = redis::cmd("SET").arg(key).arg("x").query(&mut sync).unwrap();
    }
    let eraser = RedisKeysEraser::new(conn, ["profile:{user}", "cart:{{user}}"]).unwrap();
    let retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(eraser)
        .build()
        .unwrap();
    let report = retention.audit(UntrackedUsers::Report).await.unwrap();
    let part = &report.erasers[0];
    // Users 11, 12 and 13; the keys whose id part is no user id are skipped.
    assert_eq!((part.listed, part.untracked, part.adopted), (3, 3, 0), "{part:?}");
    assert_eq!(retention.tracked_users().await.unwrap(), 0, "only reported");
}

/// The audit keeps counts, never ids: after a scheduled audit that reported 300 untracked
/// users, no key name or value in Redis (its lease and summary included) holds their ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_writes_no_user_id_to_redis() {
    let env = Env::redis();
    let table = Table::default();
    for user in 1..=300u64 {
        table.insert(7_300_000_000 + user, T0 - 1);
    }
    let retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(table.eraser("orders"))
        .audit_every(Duration::from_secs(3600), UntrackedUsers::Report)
        .build()
        .unwrap();
    let pruner = retention.spawn_pruner();
    crate::support::eventually("the scheduled audit ran", || async {
        retention.last_audit().await.unwrap().is_some()
    })
    .await;
    pruner.shutdown().await;
    let summary = retention.last_audit().await.unwrap().unwrap();
    assert_eq!((summary.listed, summary.untracked, summary.adopted), (300, 300, 0));
    let all = crate::support::dump(&mut env.redis_connection());
    // The lease, and the summary in the namespace's metadata.
    assert!(all.iter().any(|(key, _)| key.ends_with(":audit")), "{all:?}");
    assert!(all.iter().any(|(_, value)| value.contains("untracked")), "{all:?}");
    for (key, value) in &all {
        assert!(!key.contains("73000") && !value.contains("73000"), "{key}: {value}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_without_listing_erasers_is_told_the_audit_covers_nothing() {
    let env = Env::memory();
    let retention: Retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(erase_fn("sessions", |_: Erasure| async { Ok::<_, BoxError>(()) }))
        .build()
        .unwrap();
    let report = retention.audit(UntrackedUsers::Adopt).await.unwrap();
    assert_eq!(report.not_covered(), ["sessions"]);
    assert!(!report.erasers[0].can_list);
}

every_store! {
    async fn one_replica_runs_each_scheduled_audit_and_its_counts_are_kept(env) {
        let lists = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let replica = || {
            let lists = Arc::clone(&lists);
            let eraser = erase_fn("orders", |_: Erasure| async { Ok::<_, BoxError>(()) }).list_with(
                move |_cursor: Option<String>| {
                    lists.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    async { Ok::<_, BoxError>(Listing::page([UserId(7), UserId(8)], None)) }
                },
            );
            let env = &env;
            async move {
                env.bare_builder()
                    .await
                    .inactive_after(90 * DAY)
                    .without_commands()
                    .erase_with(eraser)
                    .erase_with(erase_fn("sessions", |_: Erasure| async { Ok::<_, BoxError>(()) }))
                    .audit_every(Duration::from_secs(3600), UntrackedUsers::Adopt)
                    .build()
                    .unwrap()
            }
        };
        let (a, b) = (replica().await, replica().await);
        assert_eq!(a.last_audit().await.unwrap(), None);
        let (pa, pb) = (a.spawn_pruner(), b.spawn_pruner());
        crate::support::eventually("the scheduled audit ran", || async {
            a.last_audit().await.unwrap().is_some()
        })
        .await;
        // Each pruner tries its audit right after its first pass, in the same loop turn, which
        // `shutdown` lets finish: once both passed, both tried.
        crate::support::eventually("both replicas ran a pass", || async {
            a.stats().prune_passes >= 1 && b.stats().prune_passes >= 1
        })
        .await;
        pa.shutdown().await;
        pb.shutdown().await;
        assert_eq!(lists.load(std::sync::atomic::Ordering::SeqCst), 1, "one replica audited");
        let summary = b.last_audit().await.unwrap().unwrap();
        assert_eq!((summary.listed, summary.untracked, summary.adopted), (2, 2, 2));
        assert_eq!(summary.not_covered, ["sessions"]);
        assert_eq!(a.tracked_users().await.unwrap(), 2);
    }
}

/// An existing bot on SQLite: 2,000 users in its own table (1,555 idle past 90 days) and
/// dialogues in teloxide's `SqliteStorage`, some of users the table does not have, listed
/// by the built-in listing.
#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_existing_sqlite_bot_adopts_its_table_and_the_audit_finds_dialogue_only_users() {
    use teloxide::dispatching::dialogue::{SqliteStorage, Storage, serializer::Json};
    use teloxide::types::ChatId;
    use teloxide_retention::DialogueEraser;

    // The crate's store on the bot's own pool: one file holds the bot's table, teloxide's
    // dialogues and the crate's tables, through one sqlx (one libsqlite3-sys).
    let env = Env::memory();
    // In memory where the system has a tmpfs: every single-row write of SQLite (the
    // erasers', teloxide's storage) syncs to disk, seconds for thousands of them.
    let shm = std::path::Path::new("/dev/shm");
    let dir = if shm.is_dir() { tempfile::tempdir_in(shm) } else { tempfile::tempdir() }.unwrap();
    let path = dir.path().join("bot.sqlite");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE users (id INTEGER PRIMARY KEY, last_active INTEGER NOT NULL)")
        .execute(&pool)
        .await
        .unwrap();
    let table = existing_bot_table();
    let mut insert = pool.begin().await.unwrap();
    for (user, at) in table.rows() {
        sqlx::query("INSERT INTO users VALUES (?, ?)")
            .bind(user.0 as i64)
            .bind(at.unwrap().timestamp_millis())
            .execute(&mut *insert)
            .await
            .unwrap();
    }
    insert.commit().await.unwrap();
    let dialogues = SqliteStorage::open(path.to_str().unwrap(), Json).await.unwrap();
    // Dialogues of every 4th user, and of 3 users the table does not hold.
    let dialogue_users: Vec<u64> =
        (1..=2_000u64).filter(|u| u % 4 == 0).map(|u| 1_000_000 + u).chain([7, 8, 9]).collect();
    for user in &dialogue_users {
        let state = serde_json::json!({ "step": "asked_name" });
        Arc::clone(&dialogues).update_dialogue(ChatId(*user as i64), state).await.unwrap();
    }

    let users_eraser = {
        let (erase, list) = (pool.clone(), pool.clone());
        erase_fn("users", move |e: Erasure| {
            let pool = erase.clone();
            async move {
                sqlx::query("DELETE FROM users WHERE id = ?")
                    .bind(e.user.0 as i64)
                    .execute(&pool)
                    .await?;
                Ok::<_, BoxError>(())
            }
        })
        .list_with(move |cursor: Option<String>| {
            let pool = list.clone();
            async move {
                let after: i64 = cursor.map_or(Ok(0), |c| c.parse())?;
                let rows: Vec<(i64, i64)> = sqlx::query_as(
                    "SELECT id, last_active FROM users WHERE id > ? ORDER BY id LIMIT 500",
                )
                .bind(after)
                .fetch_all(&pool)
                .await?;
                let next = (rows.len() == 500).then(|| rows[499].0.to_string());
                let page = rows
                    .into_iter()
                    .map(|(id, at)| (UserId(id as u64), DateTime::from_timestamp_millis(at)));
                Ok::<_, BoxError>(Listing::page_with_activity(page, next))
            }
        })
    };
    let dialogue_eraser =
        DialogueEraser::for_any_state(Arc::clone(&dialogues)).list_sqlite(pool.clone());
    let retention = Retention::builder(teloxide_retention::SqliteStore::from_pool(pool.clone()))
        .clock(env.clock.clone())
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(users_eraser)
        .erase_with(dialogue_eraser)
        .build()
        .unwrap();

    // Adopt the table with each user's last activity, through the API.
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, last_active FROM users").fetch_all(&pool).await.unwrap();
    let adopted = retention
        .adopt(
            rows.into_iter()
                .map(|(id, at)| (UserId(id as u64), DateTime::from_timestamp_millis(at))),
            &Adoption::new(),
        )
        .await
        .unwrap();
    assert_eq!(adopted.newly_tracked, 2_000);
    // The audit finds the 3 dialogue-only users and puts them on a clock.
    let report = retention.audit(UntrackedUsers::Adopt).await.unwrap();
    assert_eq!((report.erasers[0].listed, report.erasers[0].untracked), (2_000, 0));
    assert_eq!((report.erasers[1].untracked, report.erasers[1].adopted), (3, 3), "{report:?}");

    // The first pass erases exactly the idle users: their rows and their dialogues.
    let erased = crate::support::prune_until_done(&retention).await;
    assert_eq!(erased, 1_555);
    let (left,): (i64,) =
        sqlx::query_as("SELECT COUNT(*) FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(left, 445);
    let idle_dialogues: (i64,) = sqlx::query_as(
        "SELECT COUNT(*) FROM teloxide_dialogues WHERE chat_id BETWEEN 1000001 AND 1001555",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(idle_dialogues.0, 0, "the idle users' dialogues are gone");
    // A second adoption of what the table holds now changes nothing.
    let rows: Vec<(i64, i64)> =
        sqlx::query_as("SELECT id, last_active FROM users").fetch_all(&pool).await.unwrap();
    let again = retention
        .adopt(
            rows.into_iter()
                .map(|(id, at)| (UserId(id as u64), DateTime::from_timestamp_millis(at))),
            &Adoption::new(),
        )
        .await
        .unwrap();
    assert_eq!((again.newly_tracked, again.moved_forward), (0, 0));
}

every_store! {
    async fn a_user_listed_twice_in_one_call_counts_once_and_keeps_the_later_time(env) {
        let retention = env.builder().await.build().unwrap();
        let at = |ms: i64| DateTime::from_timestamp_millis(ms);
        let users =
            [(UserId(3), at(T0 - 5_000)), (UserId(3), at(T0 - 1_000)), (UserId(3), at(T0 - 9_000))];
        let adopted = retention.adopt(users, &Adoption::new()).await.unwrap();
        assert_eq!((adopted.newly_tracked, adopted.moved_forward, adopted.kept), (1, 1, 1));
        let seen = retention.status(UserId(3)).await.unwrap().last_seen.unwrap();
        assert_eq!(seen.timestamp_millis(), T0 - 1_000);
    }
}
