//! Redis contents and SQL rows that a buggy script, a manual `redis-cli` or SQL session or
//! another tool could leave behind: only canonical ids are users (README guarantee 13).

use teloxide::types::UserId;
use teloxide_retention::{Error, Noted, OptOutOutcome};

use std::time::Duration;

use crate::common::{DAY, Env, T0};
use crate::every_store;
use crate::support::Recorder;

/// Members of `seen` that are not users. Before the fix `013950000` was read as user
/// 13950000 (whose erasers ran although they were active), `0` was erased as a user, and
/// the two huge ids were claimed and then failed to parse, leaving their batch leased for
/// good while 495 valid due users were never erased.
const NOT_USERS: [&str; 8] =
    ["0", "013950000", "-5", "1.5", "abc", "+7", "99999999999999999999999", "18446744073709551616"];

async fn odd_members_are_reported_and_left_in_place(env: Env, seen_key: &str) {
    let eraser = Recorder::new("orders");
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    for user in 1..=495u64 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();
    let mut conn = env.redis_connection();
    // The odd members are older than anyone: they come first in every claim's range read.
    for (i, member) in NOT_USERS.iter().enumerate() {
        let _: () = redis::cmd("ZADD").arg(seen_key).arg(i).arg(*member).query(&mut conn).unwrap();
    }
    // A user whose job cannot be read, queued and due.
    let queue = seen_key.replace(":seen", ":queue");
    let job = seen_key.replace(":seen", ":job");
    let _: () = redis::cmd("ZADD").arg(&queue).arg(1).arg("777").query(&mut conn).unwrap();
    let _: () = redis::cmd("HSET").arg(&job).arg("777").arg("x,1,2").query(&mut conn).unwrap();

    env.clock.advance(31 * DAY);
    // Active now, beside the alias `013950000`.
    retention.note_interaction(UserId(13_950_000)).await;
    retention.flush().await.unwrap();

    let mut erased = 0;
    let mut reported = Vec::new();
    for _ in 0..4 {
        let pass = retention.prune_once().await.unwrap();
        erased += pass.erased;
        reported.extend(pass.unreadable);
    }
    assert_eq!(erased, 495, "every valid due user is erased");
    let erased_users: Vec<u64> = eraser.calls().iter().map(|c| c.user.0).collect();
    assert!(!erased_users.contains(&13_950_000), "the active user is not erased");
    assert!(!erased_users.contains(&0), "0 is no user");
    assert!(erased_users.iter().all(|u| (1..=495).contains(u)), "{erased_users:?}");
    for member in NOT_USERS {
        assert!(
            reported.iter().any(|r| r == &format!("seen member {member}")),
            "{member} is reported: {reported:?}"
        );
        let score: Option<f64> =
            redis::cmd("ZSCORE").arg(seen_key).arg(member).query(&mut conn).unwrap();
        assert!(score.is_some(), "{member} is left in place");
    }
    assert!(reported.iter().any(|r| r.contains("user 777 job")), "{reported:?}");
    let kept: Option<String> = redis::cmd("HGET").arg(&job).arg("777").query(&mut conn).unwrap();
    assert_eq!(kept.as_deref(), Some("x,1,2"), "the unreadable job is left in place");
    // No lease stays behind, and the active user is still tracked.
    let lease = seen_key.replace(":seen", ":lease");
    let leases: u64 = redis::cmd("ZCARD").arg(&lease).query(&mut conn).unwrap();
    assert_eq!(leases, 0, "no batch stays leased");
    assert!(retention.status(UserId(13_950_000)).await.unwrap().last_seen.is_some());
    // The dry run lists none of them, and does not fail on them.
    let preview = retention.preview(100).await.unwrap();
    assert!(preview.users.is_empty(), "{:?}", preview.users);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_members_in_redis_are_reported_and_left_in_place() {
    odd_members_are_reported_and_left_in_place(Env::redis(), "{retention}:seen").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_odd_members_than_a_batch_never_hide_the_due_users_behind_them() {
    let env = Env::redis();
    let eraser = Recorder::new("orders");
    let retention = env.builder().await.erase_with(eraser.clone()).batch_size(50).build().unwrap();
    for user in 1..=60u64 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();
    let mut conn = env.redis_connection();
    for i in 0..1_000 {
        let member = format!("0{i}");
        let _: () =
            redis::cmd("ZADD").arg("{retention}:seen").arg(0).arg(member).query(&mut conn).unwrap();
    }
    env.clock.advance(31 * DAY);
    let first = retention.prune_once().await.unwrap();
    assert_eq!(first.erased, 60, "1,000 odd members ahead of them hide no one: {first:?}");
    assert!(first.unreadable.len() <= 101, "reports are bounded: {}", first.unreadable.len());
}

/// A running notice moves where the claim's run of inactive users starts in `seen` (the
/// first rank above the notice's bound): with odd members and held users below it and odd
/// members among the due users above it, the claim takes exactly the due users, removes
/// exactly them, and leaves the held users and the odd members in place. Fails if the run's
/// removal starts at rank 0 (it would remove held users instead of due ones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_moves_the_claims_run_past_the_held_users_and_odd_members() {
    let env = Env::redis();
    let eraser = Recorder::new("orders");
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    // Held: users 1..=20, adopted at T0 under a 90-day notice.
    let users = (1..=20u64).map(|u| (UserId(u), None));
    let until = chrono::DateTime::from_timestamp_millis(T0 + 90 * 86_400_000).unwrap();
    retention.adopt(users, &teloxide_retention::Adoption::new().not_before(until)).await.unwrap();
    // Due later: users 21..=30, seen an hour after the adoption.
    env.clock.advance(Duration::from_secs(3600));
    for user in 21..=30u64 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();
    let mut conn = env.redis_connection();
    for (member, score) in [("below", T0 - 1), ("0013", T0 + 3_600_002), ("x", T0 + 3_600_001)] {
        let _: () = redis::cmd("ZADD")
            .arg("{retention}:seen")
            .arg(score)
            .arg(member)
            .query(&mut conn)
            .unwrap();
    }
    env.clock.advance(31 * DAY);
    let pass = retention.prune_once().await.unwrap();
    assert_eq!(pass.erased, 10, "{pass:?}");
    let erased: Vec<u64> = eraser.calls().iter().map(|e| e.user.0).collect();
    assert!(erased.iter().all(|u| (21..=30).contains(u)), "{erased:?}");
    let left: Vec<String> =
        redis::cmd("ZRANGE").arg("{retention}:seen").arg(0).arg(-1).query(&mut conn).unwrap();
    let mut expected: Vec<String> = (1..=20).map(|u: u64| u.to_string()).collect();
    // (`marker`: the namespace's own marker of `seen`.)
    expected.extend(["below", "0013", "x", "marker"].map(str::to_owned));
    let (mut left, mut expected) = (left, expected);
    left.sort();
    expected.sort();
    assert_eq!(left, expected);
}

/// A `notices` value this version cannot read (written by hand, or by another version)
/// holds every inactivity erasure, as an unreadable heartbeat does, until the notices are
/// ended: it is never read as "no notice". Fails if `notices.lua` skips what it cannot
/// read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_this_version_cannot_read_holds_inactivity_erasures() {
    let env = Env::redis();
    let eraser = Recorder::new("orders");
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    retention.note_interaction(UserId(1)).await;
    retention.flush().await.unwrap();
    let mut conn = env.redis_connection();
    let _: () = redis::cmd("HSET")
        .arg("{retention}:meta")
        .arg("notices")
        .arg("until-2027")
        .query(&mut conn)
        .unwrap();
    env.clock.advance(31 * DAY);
    assert_eq!(retention.preview(10).await.unwrap().inactive, 0);
    assert_eq!(retention.prune_once().await.unwrap().erased, 0, "held");
    assert_eq!(retention.survey().await.unwrap().held_by_notices, 1);
    retention.end_notices().await.unwrap();
    assert_eq!(retention.prune_once().await.unwrap().erased, 1);
}

every_store! {
    async fn ids_outside_the_user_range_are_refused_everywhere(env) {
        let retention = env.builder().await.build().unwrap();
        for id in [0, 1 << 53, u64::MAX] {
            assert_eq!(retention.note_interaction(UserId(id)).await, Noted::Ignored, "{id}");
            let gone = retention.mark_gone(UserId(id), teloxide_retention::GoneReason::Blocked);
            assert!(!gone.await.unwrap(), "{id} is not marked");
            assert!(
                matches!(retention.erase_user(UserId(id)).await, Err(Error::InvalidUser(i)) if i == id),
                "{id}"
            );
            assert!(
                matches!(retention.schedule_opt_out(UserId(id)).await, Err(Error::InvalidUser(i)) if i == id),
                "{id}"
            );
        }
        assert_eq!(retention.tracked_users().await.unwrap(), 0, "nothing was written");
        // The largest valid id is a user.
        let largest = UserId((1 << 53) - 1);
        assert_eq!(retention.note_interaction(largest).await, Noted::Written);
        assert!(matches!(retention.erase_user(largest).await, Ok(OptOutOutcome::Erased { .. })));
    }
}

/// Entries of the feed this version cannot read (written by hand, or by something else)
/// are skipped: a replica still reads the valid announcements after them and forgets the
/// opted-out user it had cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_feed_entries_are_skipped_and_the_announcements_after_them_still_arrive() {
    let env = Env::redis();
    let replica = env.builder().await.build().unwrap();
    let other = env.builder().await.build().unwrap();
    assert!(replica.note_interaction(UserId(5)).await.is_stored());
    assert_eq!(replica.stats().cached_users, 1);
    let mut conn = env.redis_connection();
    let corrupt: [&[&str]; 5] = [
        &["u", "abc", "s", "0", "e", "0", "o", "1"],
        &["u", "5", "s", "yesterday", "e", "0", "o", "1"],
        &["u", "0", "s", "0", "e", "0", "o", "1"],
        &["zzz", "1"],
        &["u", "-5"],
    ];
    for fields in corrupt {
        let mut add = redis::cmd("XADD");
        add.arg("{retention}:feed").arg("*");
        for field in fields {
            add.arg(*field);
        }
        let _: String = add.query(&mut conn).unwrap();
    }
    // The other process's opt-out of user 5 is announced after them.
    other.erase_user(UserId(5)).await.unwrap();
    crate::support::eventually("the replica forgets user 5", || async {
        replica.stats().cached_users == 0
    })
    .await;
    // Its next interaction is written, not skipped as cached.
    assert_eq!(replica.note_interaction(UserId(5)).await, teloxide_retention::Noted::Written);
    assert!(replica.status(UserId(5)).await.unwrap().last_seen.is_some());
}

/// A heartbeat in `writers` this version cannot read holds inactivity back (the safe
/// side: it may be a writer buffering interactions), says so, and lets gone users and
/// opt-outs be erased meanwhile; removing it lets the pass go on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_heartbeat_holds_inactivity_back_and_says_whose() {
    let env = Env::redis();
    let eraser = Recorder::new("profiles");
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    for user in 1..=3 {
        assert!(retention.note_interaction(UserId(user)).await.is_stored());
    }
    env.clock.advance(31 * DAY);
    retention.schedule_opt_out(UserId(3)).await.unwrap();
    let mut conn = env.redis_connection();
    let () = redis::cmd("HSET")
        .arg("{retention}:writers")
        .arg("88")
        .arg("garbage")
        .query(&mut conn)
        .unwrap();

    let report = retention.prune_once().await.unwrap();
    let held = report.inactivity_held.clone().expect("held back");
    assert!(
        held.contains("writer 88 left a heartbeat this version cannot read: garbage"),
        "{held}"
    );
    assert_eq!((report.erased, eraser.reasons(3).len()), (1, 1), "the opt-out ran: {report:?}");
    let preview = retention.preview(10).await.unwrap();
    assert!(preview.inactivity_held.is_some_and(|w| w.contains("writer 88")));

    let () = redis::cmd("HDEL").arg("{retention}:writers").arg("88").query(&mut conn).unwrap();
    let report = retention.prune_once().await.unwrap();
    assert_eq!((report.erased, report.inactivity_held), (2, None));
}

/// A claim removes from `seen` exactly the users it took, whether they lead the range (one
/// ZREMRANGEBYRANK) or come after a member it leaves in place or a scheduled user (one
/// ZREM each): the odd member and the active user stay, nobody else does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_removes_exactly_the_users_it_took_around_members_it_leaves() {
    let env = Env::redis();
    let eraser = Recorder::new("orders");
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    let mut conn = env.redis_connection();
    // Lowest scores first: users 1 and 4 (the run), a member that is no user, users 2
    // (scheduled below), 3 and 5-8.
    let members = ["1", "4", "0042", "2", "3", "5", "6", "7", "8"];
    for (i, member) in members.iter().enumerate() {
        let score = crate::common::T0 - 1_000 + i as i64;
        let () = redis::cmd("ZADD")
            .arg("{retention}:seen")
            .arg(score)
            .arg(*member)
            .query(&mut conn)
            .unwrap();
    }
    // User 2 blocked the bot (scheduled, not yet due); user 9 is active.
    assert!(retention.mark_gone(UserId(2), teloxide_retention::GoneReason::Blocked).await.unwrap());
    env.clock.advance(31 * DAY);
    assert!(retention.note_interaction(UserId(9)).await.is_stored());

    let pass = retention.prune_once().await.unwrap();
    assert_eq!(pass.erased, 8, "{pass:?}");
    assert_eq!(eraser.reasons(2), [teloxide_retention::ErasureReason::Blocked]);
    let left: Vec<String> =
        redis::cmd("ZRANGE").arg("{retention}:seen").arg(0).arg(-1).query(&mut conn).unwrap();
    assert_eq!(left, ["0042", "9", "marker"]);
}

/// Rows a SQL store's claim reads that no version of this crate writes, put there by hand:
/// ids that are no user id in `seen`, the queue and a crashed pruner's batch, and jobs of
/// an unknown kind (or with negative attempts) for a due user, a user in a grace period and
/// a user in that batch. Before the fix a job of an unknown kind failed every claim (no
/// one was erased any more), and a negative id in a batch was erased as user 0.
async fn odd_sql_rows_are_reported_and_left_in_place(env: Env) {
    sqlx::any::install_default_drivers();
    let eraser = Recorder::new("orders");
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    for user in 1..=20u64 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();
    // User 31 will be inactive, with an erasure scheduled for later.
    retention.note_interaction(UserId(31)).await;
    retention.flush().await.unwrap();
    let pool = sqlx::AnyPool::connect(&env.sql_url().unwrap()).await.unwrap();
    let old = crate::common::T0 - 1_000;
    let due_later = crate::common::T0 + (40 * DAY).as_millis() as i64;
    for sql in [
        // Not users, older than everyone: first in every read of `seen` and the queue.
        format!(r#"INSERT INTO "retention.seen" (uid, at) VALUES (0, {old}), (-5, {old})"#),
        r#"INSERT INTO "retention.queue" (uid, due) VALUES (-7, 0), (0, 0)"#.to_owned(),
        // A due user whose job is of a kind this version does not know.
        r#"INSERT INTO "retention.queue" (uid, due) VALUES (777, 0)"#.to_owned(),
        r#"INSERT INTO "retention.job" (uid, reason, marked_at, attempts) VALUES (777, 'x', 1, 2)"#
            .to_owned(),
        // User 31, inactive by then, with an erasure scheduled later whose job is unreadable.
        format!(r#"INSERT INTO "retention.queue" (uid, due) VALUES (31, {due_later})"#),
        r#"INSERT INTO "retention.job" (uid, reason, marked_at, attempts) VALUES (31, 'b', 1, -1)"#
            .to_owned(),
        // A crashed pruner's batch: user 9, no user (-3), user 10 whose job is unreadable.
        r#"INSERT INTO "retention.lease" (batch, deadline) VALUES (555, 1)"#.to_owned(),
        r#"INSERT INTO "retention.batch" (batch, pos, uid) VALUES (555, 0, 9), (555, 1, -3), (555, 2, 10)"#
            .to_owned(),
        r#"INSERT INTO "retention.job" (uid, reason, marked_at, attempts) VALUES (10, 'q', 5, 0)"#
            .to_owned(),
        r#"DELETE FROM "retention.seen" WHERE uid IN (9, 10)"#.to_owned(),
    ] {
        sqlx::query(&sql).execute(&pool).await.unwrap();
    }

    env.clock.advance(31 * DAY);
    let mut reported = Vec::new();
    let first = retention.prune_once().await.unwrap();
    reported.extend(first.unreadable.clone());
    // Users 1-9 and 11-20: every user whose rows can be read, and nobody else.
    assert_eq!(first.erased, 19, "{first:?}");
    let mut erased: Vec<u64> = eraser.calls().iter().map(|c| c.user.0).collect();
    erased.sort_unstable();
    let expected: Vec<u64> = (1..=20).filter(|u| *u != 10).collect();
    assert_eq!(erased, expected, "nobody is erased as user 0 or as another id");
    for entry in [
        "seen member 0",
        "seen member -5",
        "queue member -7",
        "queue member 0",
        "user 777 job x,1,2",
        "user 31 job b,1,-1",
        "batch member -3",
        "user 10 job q,5,0",
    ] {
        assert!(reported.iter().any(|r| r == entry), "{entry} is reported: {reported:?}");
    }
    assert_eq!(reported.len(), 8, "{reported:?}");
    // A second pass meets them again, reports them again, and erases nobody.
    let again = retention.prune_once().await.unwrap();
    assert_eq!((again.erased, again.unreadable.len()), (0, 8), "{again:?}");
    // Every odd row is where it was.
    let count = |sql: &'static str| {
        let pool = pool.clone();
        async move { sqlx::query_scalar::<_, i64>(sql).fetch_one(&pool).await.unwrap() }
    };
    assert_eq!(count(r#"SELECT COUNT(*) FROM "retention.seen" WHERE uid IN (0, -5, 31)"#).await, 3);
    assert_eq!(
        count(r#"SELECT COUNT(*) FROM "retention.queue" WHERE uid IN (-7, 0, 777, 31)"#).await,
        4
    );
    assert_eq!(
        count(r#"SELECT COUNT(*) FROM "retention.job" WHERE uid IN (777, 31, 10)"#).await,
        3
    );
    assert_eq!(
        count(r#"SELECT COUNT(*) FROM "retention.batch" WHERE batch = 555 AND uid IN (-3, 10)"#)
            .await,
        2
    );
    assert_eq!(count(r#"SELECT COUNT(*) FROM "retention.batch" WHERE uid = 9"#).await, 0);
    // The dry run lists none of them, and does not fail on them.
    let preview = retention.preview(100).await.unwrap();
    assert!(preview.users.is_empty(), "{:?}", preview.users);
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_rows_in_sqlite_are_reported_and_left_in_place() {
    odd_sql_rows_are_reported_and_left_in_place(Env::sqlite()).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_rows_in_postgres_are_reported_and_left_in_place() {
    odd_sql_rows_are_reported_and_left_in_place(Env::postgres()).await;
}
