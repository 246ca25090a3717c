//! Probes: the pruner confirms ambiguous gone marks with one chat action before erasing,
//! through a real `teloxide::Bot` and a local server answering like the Bot API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use teloxide::prelude::*;
use teloxide_retention::testing::TelegramError;
use teloxide_retention::{
    Census, ErasureReason, GonePolicy, GoneReason, Probes, Reachability, Retention,
};

use crate::common::{DAY, Env, FakeBotApi};
use crate::every_store;

/// Probes as fast as the tests go.
fn fast() -> Probes {
    Probes::new().one_every(Duration::from_millis(1)).timeout(Duration::from_secs(1))
}

/// A retention on `env` that probes through `api`, recording the users passed to
/// `on_returned`.
async fn probing(env: &Env, api: &FakeBotApi, probes: Probes) -> (Retention, Arc<Mutex<Vec<u64>>>) {
    let returned = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&returned);
    let retention = env
        .builder()
        .await
        .probe_with(api.bot(), probes)
        .on_returned(move |user| seen.lock().unwrap().push(user.0))
        .build()
        .unwrap();
    (retention, returned)
}

/// The chat actions the fake API received for `chat`, answered or failed.
fn probed(api: &FakeBotApi, chat: i64) -> usize {
    api.sent().iter().filter(|s| s.method == "sendchataction" && s.chat_id == Some(chat)).count()
}

async fn job_of(retention: &Retention, user: u64) -> Option<ErasureReason> {
    retention.status(UserId(user)).await.unwrap().erasure.map(|p| p.reason)
}

every_store! {
    /// A user marked unreachable who answers a probe at the end of
    /// the grace keeps their data; one still failing is erased; a block is not probed.
    async fn an_unreachable_user_who_answers_a_probe_is_kept(env) {
        let api = FakeBotApi::start().await;
        let (retention, returned) = probing(&env, &api, fast()).await;
        for user in [1, 2, 3] {
            retention.note_interaction(UserId(user)).await;
        }
        retention.flush().await.unwrap();
        let last_seen = retention.status(UserId(1)).await.unwrap().last_seen;
        env.clock.advance(DAY);
        for user in [1, 2] {
            assert!(retention.mark_gone(UserId(user), GoneReason::Unreachable).await.unwrap());
        }
        assert!(retention.mark_gone(UserId(3), GoneReason::Blocked).await.unwrap());
        api.fail_chat_with(2, TelegramError::ChatNotFound);
        api.fail_chat_with(3, TelegramError::Blocked);

        // Inside the grace: nothing due, nobody probed.
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.erased, report.kept_reachable), (0, 0));
        assert_eq!(probed(&api, 1) + probed(&api, 2) + probed(&api, 3), 0);

        env.clock.advance(8 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.kept_reachable, 1, "{report:?}");
        assert_eq!(report.confirmed_gone, 1, "{report:?}");
        assert_eq!(report.erased_for(ErasureReason::Unreachable), 1, "{report:?}");
        assert_eq!(report.erased_for(ErasureReason::Blocked), 1, "{report:?}");
        assert_eq!((probed(&api, 1), probed(&api, 2), probed(&api, 3)), (1, 1, 0));

        // User 1 keeps their data, their time and their place on the inactivity clock.
        let status = retention.status(UserId(1)).await.unwrap();
        assert_eq!(status.last_seen, last_seen);
        assert_eq!(status.erasure, None);
        assert!(retention.is_reachable(UserId(1)).await.unwrap());
        assert_eq!(*returned.lock().unwrap(), vec![1]);
        for user in [2, 3] {
            let status = retention.status(UserId(user)).await.unwrap();
            assert_eq!((status.last_seen, status.erasure), (None, None), "user {user}");
        }
        let stats = retention.stats();
        assert_eq!((stats.probes_reachable, stats.probes_gone, stats.kept_reachable), (1, 1, 1));

        // A later pass probes nobody again; user 1 goes when inactive past the threshold.
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased, 0);
        assert_eq!(probed(&api, 1), 1);
        env.clock.advance(30 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased_for(ErasureReason::Inactive), 1, "{report:?}");
        assert_eq!(probed(&api, 1), 1);
    }

    /// Rate limits and server errors never mark anyone and never drop a mark: the mark
    /// waits for the next pass, and is erased unconfirmed only past `give_up_after`.
    async fn a_probe_without_an_answer_neither_erases_nor_keeps(env) {
        let api = FakeBotApi::start().await;
        let probes = fast().give_up_after(2 * DAY);
        let (retention, returned) = probing(&env, &api, probes).await;
        retention.note_interaction(UserId(4)).await;
        retention.flush().await.unwrap();
        assert!(retention.mark_gone(UserId(4), GoneReason::Unreachable).await.unwrap());
        env.clock.advance(8 * DAY);
        api.fail_chat_with(4, TelegramError::TooManyRequests { retry_after: 1 });
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.erased, report.kept_reachable), (0, 0), "{report:?}");
        assert_eq!(report.probes_postponed, 1, "{report:?}");
        assert_eq!(job_of(&retention, 4).await, Some(ErasureReason::Unreachable));
        assert_eq!(probed(&api, 4), 1);

        // The same pass again: postponed past its look-ahead, not probed.
        retention.prune_once().await.unwrap();
        assert_eq!(probed(&api, 4), 1);

        // The next pass: a server error, still unknown.
        env.clock.advance(Duration::from_secs(30 * 60));
        api.fail_chat_with(4, TelegramError::Other { status: 502, description: "Bad Gateway".into() });
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.erased, report.probes_postponed), (0, 1), "{report:?}");
        assert_eq!(probed(&api, 4), 2);
        assert_eq!(job_of(&retention, 4).await, Some(ErasureReason::Unreachable));
        assert!(!retention.is_reachable(UserId(4)).await.unwrap());
        assert_eq!(retention.stats().probes_unknown, 2);
        assert!(returned.lock().unwrap().is_empty());

        // Past give_up_after: erased unconfirmed, as without probes.
        env.clock.advance(3 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased_for(ErasureReason::Unreachable), 1, "{report:?}");
        assert_eq!(probed(&api, 4), 2);
    }

    /// Probes confirm only the reasons they are given; a block can be one of them.
    async fn probes_confirm_the_reasons_the_bot_chooses(env) {
        let api = FakeBotApi::start().await;
        let probes = fast().confirm([GoneReason::Blocked]);
        let (retention, _) = probing(&env, &api, probes).await;
        for user in [5, 6] {
            retention.note_interaction(UserId(user)).await;
        }
        retention.flush().await.unwrap();
        assert!(retention.mark_gone(UserId(5), GoneReason::Blocked).await.unwrap());
        assert!(retention.mark_gone(UserId(6), GoneReason::Unreachable).await.unwrap());
        env.clock.advance(8 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.kept_reachable, report.erased), (1, 1), "{report:?}");
        assert_eq!((probed(&api, 5), probed(&api, 6)), (1, 0));
        assert_eq!(retention.status(UserId(6)).await.unwrap().last_seen, None);
    }

    /// More due unreachable marks than a claim examines, and no probe can tell: none is
    /// erased unconfirmed (each round of probes postpones what it cannot confirm, so the
    /// claim never reaches a mark nobody probed).
    async fn marks_beyond_what_a_claim_examines_are_never_erased_unconfirmed(env) {
        const MARKS: u64 = 200;
        let api = FakeBotApi::start().await;
        let returned = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&returned);
        let retention = env
            .builder()
            .await
            .batch_size(10)
            .probe_with(api.bot(), fast())
            .on_returned(move |user| seen.lock().unwrap().push(user.0))
            .build()
            .unwrap();
        for user in 1..=MARKS {
            retention.note_interaction(UserId(user)).await;
        }
        retention.flush().await.unwrap();
        for user in 1..=MARKS {
            assert!(retention.mark_gone(UserId(user), GoneReason::Unreachable).await.unwrap());
        }
        // An answer that says nothing about the user (not gone, not reachable).
        let odd = TelegramError::Other { status: 400, description: "Bad Request: odd".into() };
        api.fail_method("sendchataction", odd);
        env.clock.advance(8 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased, 0, "{report:?}");
        assert_eq!(report.probes_postponed, MARKS, "{report:?}");
        for user in [1, MARKS / 2, MARKS] {
            assert_eq!(job_of(&retention, user).await, Some(ErasureReason::Unreachable));
        }
        assert!(returned.lock().unwrap().is_empty());
    }

    /// A user inactive past the threshold whose mark is not due (a grace, or a mark only)
    /// is erased for inactivity without a probe, and their mark is never brought forward.
    async fn an_inactive_users_pending_mark_is_neither_probed_nor_made_due(env) {
        let api = FakeBotApi::start().await;
        for policy in [GonePolicy::MarkOnly, GonePolicy::EraseAfter(60 * DAY)] {
            api.clear();
            let retention = env
                .builder()
                .await
                .gone_policy(policy)
                .probe_with(api.bot(), fast())
                .build()
                .unwrap();
            retention.note_interaction(UserId(8)).await;
            retention.flush().await.unwrap();
            assert!(retention.mark_gone(UserId(8), GoneReason::Unreachable).await.unwrap());
            let due = retention.status(UserId(8)).await.unwrap().erasure.unwrap().due;
            env.clock.advance(10 * DAY);
            retention.prune_once().await.unwrap();
            assert_eq!(probed(&api, 8), 0, "{policy:?}");
            let status = retention.status(UserId(8)).await.unwrap();
            assert_eq!(status.erasure.unwrap().due, due, "{policy:?}: the mark moved");
            env.clock.advance(25 * DAY);
            let report = retention.prune_once().await.unwrap();
            assert_eq!(report.erased, 1, "{policy:?}: {report:?}");
            assert_eq!(probed(&api, 8), 0, "{policy:?}");
            retention.shutdown().await.unwrap();
        }
    }

    /// `Retention::probe`: a gone answer marks the user, a reachable one is no interaction.
    async fn a_probe_by_hand_marks_a_gone_user(env) {
        let api = FakeBotApi::start().await;
        let (retention, _) = probing(&env, &api, fast()).await;
        retention.note_interaction(UserId(7)).await;
        retention.flush().await.unwrap();
        let before = retention.status(UserId(7)).await.unwrap().last_seen;
        env.clock.advance(DAY);
        assert_eq!(retention.probe(UserId(7)).await.unwrap(), Reachability::Reachable);
        assert_eq!(retention.status(UserId(7)).await.unwrap().last_seen, before);
        api.fail_chat_with(7, TelegramError::Deactivated);
        assert_eq!(
            retention.probe(UserId(7)).await.unwrap(),
            Reachability::Gone(GoneReason::Deactivated)
        );
        assert_eq!(job_of(&retention, 7).await, Some(ErasureReason::Deactivated));
    }
}

/// Without a requester, `probe` says what is missing.
#[tokio::test]
async fn probing_without_a_requester_is_a_configuration_error() {
    let env = Env::memory();
    let retention = env.builder().await.build().unwrap();
    let err = retention.probe(UserId(1)).await.unwrap_err();
    assert!(err.to_string().contains("probe_with"), "{err}");
    let bad = env
        .builder()
        .await
        .probe_with(FakeBotApi::start().await.bot(), Probes::new().one_every(Duration::ZERO));
    assert!(bad.build().unwrap_err().to_string().contains("interval"));
}

/// The census's pace in the tests: a tenth of a millisecond between probes.
const PACE: Duration = Duration::from_micros(100);

/// A retention on `env` with the census on: users idle a week are probed, a 90-day
/// threshold, probes through `api` at [`PACE`].
async fn census(env: &Env, api: &FakeBotApi) -> Retention {
    env.builder()
        .await
        .inactive_after(90 * DAY)
        // teloxide waits 10 s after a 5xx before it answers: a probe that meets one is
        // unknown at its timeout.
        .probe_with(api.bot(), Probes::new().one_every(PACE).timeout(Duration::from_secs(1)))
        .census(Census::new().idle_for(7 * DAY))
        .build()
        .unwrap()
}

/// Each user's count of chat actions the fake API received.
fn probes_by_chat(api: &FakeBotApi) -> std::collections::HashMap<i64, usize> {
    let mut by_chat = std::collections::HashMap::new();
    for sent in api.sent().iter().filter(|s| s.method == "sendchataction") {
        *by_chat.entry(sent.chat_id.unwrap()).or_insert(0) += 1;
    }
    by_chat
}

every_store! {
    /// A 10,000-user base with 1,000 deleted accounts and 500 blocks: one census round
    /// finds exactly those, probes nobody twice and never goes faster than its pace; the
    /// gone users are erased after the grace, the others keep their clock, and nothing the
    /// census kept outlives an erased user.
    async fn the_census_finds_the_gone_users_of_an_idle_base_in_one_round(env) {
        const USERS: u64 = 10_000;
        let api = FakeBotApi::start().await;
        let retention = census(&env, &api).await;
        let users = (1..=USERS).map(|u| (UserId(u), None));
        let adopted = retention.adopt(users, &Default::default()).await.unwrap();
        assert_eq!(adopted.newly_tracked, USERS);
        for user in 1..=1_000 {
            api.fail_chat_with(user * 10, TelegramError::Deactivated);
        }
        for user in 1..=500 {
            api.fail_chat_with(user * 10 - 3, TelegramError::Blocked);
        }
        // Not idle long enough: nobody is probed.
        env.clock.advance(6 * DAY);
        let rounds = env.shard_count(); // one walk per shard
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.census_probed, report.census_rounds), (0, rounds), "{report:?}");

        env.clock.advance(2 * DAY);
        let started = std::time::Instant::now();
        let report = retention.prune_once().await.unwrap();
        let elapsed = started.elapsed();
        assert_eq!(report.census_probed, USERS, "{report:?}");
        assert_eq!(report.census_found_gone, 1_500, "{report:?}");
        assert_eq!(report.census_found_gone_for(ErasureReason::Deactivated), 1_000);
        assert_eq!(report.census_found_gone_for(ErasureReason::Blocked), 500);
        assert_eq!(report.census_found_reachable, USERS - 1_500, "{report:?}");
        assert_eq!((report.census_rounds, report.erased), (rounds, 0), "{report:?}");
        let by_chat = probes_by_chat(&api);
        assert_eq!(by_chat.len() as u64, USERS);
        assert!(by_chat.values().all(|n| *n == 1), "a user probed twice in one round");
        // The pace, measured over the run: USERS probes take at least USERS - 1 gaps.
        assert!(elapsed >= PACE * (USERS as u32 - 1), "{USERS} probes in {elapsed:?}");
        for user in [10, 20, 10_000] {
            assert_eq!(job_of(&retention, user).await, Some(ErasureReason::Deactivated));
        }
        for user in [7, 4_997] {
            assert_eq!(job_of(&retention, user).await, Some(ErasureReason::Blocked));
        }
        let probed_at = crate::common::T0 + (8 * DAY).as_millis() as i64;
        for user in [1, 9_999] {
            let status = retention.status(UserId(user)).await.unwrap();
            assert_eq!(status.erasure, None, "user {user}");
            // Reachable is no interaction: the clock is where adoption put it.
            assert_eq!(status.last_seen.unwrap().timestamp_millis(), crate::common::T0);
            assert_eq!(status.last_reachable.unwrap().timestamp_millis(), probed_at);
        }
        let gone = retention.status(UserId(10)).await.unwrap();
        assert_eq!(gone.last_probed.unwrap().timestamp_millis(), probed_at);
        assert_eq!(gone.last_reachable, None);
        // `/mydata` shows what the census keeps.
        let copy = retention.export(UserId(1)).await.unwrap();
        let expected = chrono::DateTime::from_timestamp_millis(probed_at).unwrap().to_rfc3339();
        assert_eq!(copy["retention"]["last_reachable"], expected.as_str(), "{copy}");

        // The next pass: the round is done and every user was probed within `every`.
        api.clear();
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.census_probed, report.census_rounds), (0, rounds), "{report:?}");
        assert!(probes_by_chat(&api).is_empty());

        // After the grace: the 1,500 gone users are erased, nobody else.
        env.clock.advance(8 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased_for(ErasureReason::Deactivated), 1_000, "{report:?}");
        assert_eq!(report.erased_for(ErasureReason::Blocked), 500, "{report:?}");
        assert_eq!(report.erased, 1_500, "{report:?}");
        assert_eq!(retention.tracked_users().await.unwrap(), USERS - 1_500);
        // A round per pass (and shard): before the users were idle, the round that
        // probed them, the one that found them probed, and the one after the grace.
        assert_eq!(retention.stats().census_rounds, 4 * rounds);
    }

    /// Two replicas pruning at once: one holds the census's lease, so nobody is probed
    /// twice in a round.
    async fn two_replicas_never_probe_one_user_twice_in_a_round(env) {
        const USERS: u64 = 2_000;
        let api = FakeBotApi::start().await;
        let (a, b) = (census(&env, &api).await, census(&env, &api).await);
        a.adopt((1..=USERS).map(|u| (UserId(u), None)), &Default::default()).await.unwrap();
        env.clock.advance(8 * DAY);
        let (ra, rb) = tokio::join!(a.prune_once(), b.prune_once());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.census_probed + rb.census_probed, USERS, "{ra:?} {rb:?}");
        let by_chat = probes_by_chat(&api);
        assert_eq!(by_chat.len() as u64, USERS);
        assert!(by_chat.values().all(|n| *n == 1), "a user probed twice in one round");
    }

    /// Rate limits and server errors in the census mark nobody; the users are probed again
    /// in the next round.
    async fn the_census_takes_no_unknown_answer_for_gone(env) {
        let api = FakeBotApi::start().await;
        let retention = census(&env, &api).await;
        retention.adopt((1..=3).map(|u| (UserId(u), None)), &Default::default()).await.unwrap();
        api.fail_chat_with(1, TelegramError::TooManyRequests { retry_after: 1 });
        api.fail_chat_with(2, TelegramError::Other { status: 500, description: "Internal Server Error".into() });
        env.clock.advance(8 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.census_probed, report.census_found_gone), (3, 0), "{report:?}");
        for user in 1..=3 {
            assert_eq!(job_of(&retention, user).await, None, "user {user}");
        }
        assert_eq!(retention.stats().probes_unknown, 2);
        // Unknown answers record nothing: the next round asks users 1 and 2 again.
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.census_probed, 2, "{report:?}");
    }
}

every_store! {
    /// What the census kept of a user a replica without the census erased (a rolling
    /// upgrade) is swept by the next pass; a tracked user's stays.
    #[stores(redis, sqlite, postgres)]
    async fn the_census_sweeps_what_an_older_replica_left(env) {
        let api = FakeBotApi::start().await;
        let retention = census(&env, &api).await;
        retention.adopt([(UserId(1), None)], &Default::default()).await.unwrap();
        env.clock.advance(8 * DAY);
        assert_eq!(retention.prune_once().await.unwrap().census_probed, 1);
        // User 99's field, left by an erasure of a version that knew no census.
        let orphan = |conn: &mut redis::Connection| -> u64 {
            redis::cmd("HSET").arg("{retention}:probes").arg(99).arg("5,5").query(conn).unwrap()
        };
        match env.sql_url() {
            None => assert_eq!(orphan(&mut env.redis_connection()), 1),
            Some(url) if url.starts_with("sqlite:") => {
                let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
                sqlx::query("INSERT INTO \"retention.probes\" VALUES (99, 5, 5)")
                    .execute(&pool)
                    .await
                    .unwrap();
            }
            Some(url) => {
                let pool = sqlx::PgPool::connect(&url).await.unwrap();
                sqlx::query("INSERT INTO \"retention.probes\" VALUES (99, 5, 5)")
                    .execute(&pool)
                    .await
                    .unwrap();
            }
        }
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.census_swept, 1, "{report:?}");
        assert_eq!(retention.survey().await.unwrap().census.probed_users, 1);
        assert!(retention.status(UserId(1)).await.unwrap().last_probed.is_some());
    }
}

/// The census needs a way to reach Telegram, and says so at `build()`.
#[tokio::test]
async fn a_census_without_probes_is_refused() {
    let env = Env::memory();
    let err = env.builder().await.census(Census::new()).build().unwrap_err();
    assert!(err.to_string().contains("probe_with"), "{err}");
}

/// `/privacy` tells users about the census when it is on.
#[tokio::test]
async fn privacy_mentions_the_census_when_it_is_on() {
    let env = Env::memory();
    let api = FakeBotApi::start().await;
    let off = env.builder().await.build().unwrap();
    assert!(!off.privacy_text(None).contains("typing"));
    let on = census(&env, &api).await;
    assert!(on.privacy_text(None).contains("typing"), "{}", on.privacy_text(None));
}

/// What the census keeps goes with the erased user: no Redis key keeps their id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_census_keeps_nothing_of_an_erased_user_on_redis() {
    let env = Env::redis();
    let api = FakeBotApi::start().await;
    let retention = census(&env, &api).await;
    retention.adopt([(UserId(1), None), (UserId(2), None)], &Default::default()).await.unwrap();
    env.clock.advance(8 * DAY);
    assert_eq!(retention.prune_once().await.unwrap().census_probed, 2);
    let mut conn = env.redis_connection();
    let mut kept: Vec<String> =
        redis::cmd("HKEYS").arg("{retention}:probes").query(&mut conn).unwrap();
    kept.sort();
    assert_eq!(kept, ["1", "2"]);
    retention.erase_user(UserId(1)).await.unwrap();
    let kept: Vec<String> = redis::cmd("HKEYS").arg("{retention}:probes").query(&mut conn).unwrap();
    assert_eq!(kept, ["2"]);
}

/// Probes can go through the bot's own `Throttle`, sharing its pace with the bot's sends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn probes_go_through_the_bots_throttle() {
    use teloxide::requests::RequesterExt;
    let env = Env::memory();
    let api = FakeBotApi::start().await;
    let throttled = api.bot().throttle(teloxide::adaptors::throttle::Limits::default());
    let retention = env.builder().await.probe_with(throttled, fast()).build().unwrap();
    api.fail_chat_with(3, TelegramError::Blocked);
    assert_eq!(retention.probe(UserId(2)).await.unwrap(), Reachability::Reachable);
    assert_eq!(retention.probe(UserId(3)).await.unwrap(), Reachability::Gone(GoneReason::Blocked));
    assert_eq!(probed(&api, 2) + probed(&api, 3), 2);
}
