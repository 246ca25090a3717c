//! Promises of the README and the API docs that no other test pins: `note_send_error`'s
//! verdicts, store errors during an outage, a kept mark undone by a later interaction,
//! scheduled erasures while inactivity is held back (guarantee 12), and Redis older than 7.0
//! refused (guarantee 14).

use std::time::Duration;

use teloxide::types::{ChatId, Recipient, UserId};
use teloxide::{ApiError, RequestError};
use teloxide_retention::{ErasureReason, Error, GonePolicy, GoneReason, RedisStore, Retention};

use crate::common::proxy::Proxy;
use crate::common::{DAY, Env, FakeBotApi, dispatch, updates as u};
use crate::every_store;
use crate::support::{Recorder, eventually};

every_store! {
    async fn note_send_error_marks_exactly_the_users_a_telegram_error_says_are_gone(env) {
        let retention = env.builder().await.build().unwrap();
        let api = |e: ApiError| RequestError::Api(e);
        let cases: Vec<(Recipient, RequestError, Option<GoneReason>)> = vec![
            (ChatId(11).into(), api(ApiError::BotBlocked), Some(GoneReason::Blocked)),
            (ChatId(12).into(), api(ApiError::UserDeactivated), Some(GoneReason::Deactivated)),
            (ChatId(13).into(), api(ApiError::ChatNotFound), Some(GoneReason::Unreachable)),
            (
                ChatId(14).into(),
                api(ApiError::Unknown("Forbidden: bot was blocked by the user".into())),
                Some(GoneReason::Blocked),
            ),
            // Not a verdict on the user: flood control, a bad request, a network error.
            (ChatId(21).into(), RequestError::RetryAfter(teloxide::types::Seconds::from_seconds(5)), None),
            (ChatId(22).into(), api(ApiError::MessageTextIsEmpty), None),
            (ChatId(23).into(), RequestError::Io(std::io::Error::other("reset").into()), None),
            // Not a user: a group, a channel by name, a service account.
            (ChatId(-100_123).into(), api(ApiError::BotBlocked), None),
            (Recipient::ChannelUsername("@news".into()), api(ApiError::ChatNotFound), None),
            (ChatId(777_000).into(), api(ApiError::BotBlocked), None),
        ];
        for (chat, err, expected) in cases {
            let said = retention.note_send_error(chat.clone(), &err).await.unwrap();
            assert_eq!(said, expected, "{chat:?} {err:?}");
        }
        for (user, reason) in [
            (11, ErasureReason::Blocked),
            (12, ErasureReason::Deactivated),
            (13, ErasureReason::Unreachable),
            (14, ErasureReason::Blocked),
        ] {
            let status = retention.status(UserId(user)).await.unwrap();
            assert_eq!(status.erasure.map(|e| e.reason), Some(reason), "user {user}");
        }
        for user in [21, 22, 23, 777_000] {
            assert_eq!(retention.status(UserId(user)).await.unwrap().erasure, None, "user {user}");
        }
        assert_eq!(retention.stats().marked_gone, 4);
    }
}

/// Guarantee 12: a pass that holds inactivity back still erases gone users and opt-outs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_erasures_run_while_inactivity_is_held_back() {
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let eraser = Recorder::new("profiles");
    let retention = env
        .builder()
        .await
        .gone_policy(GonePolicy::EraseNow)
        .erase_with(eraser.clone())
        .build()
        .unwrap();
    for user in 1..=4 {
        assert!(retention.note_interaction(UserId(user)).await.is_stored());
    }
    env.clock.advance(31 * DAY);
    assert!(retention.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap());
    retention.schedule_opt_out(UserId(2)).await.unwrap();
    // Another process's heartbeat, a minute old: it missed its heartbeats but is not dead
    // (`writer_timeout` is an hour), so it may be cut off and buffering interactions.
    let mut conn = server.sync_connection();
    let (secs, _): (i64, i64) = redis::cmd("TIME").query(&mut conn).unwrap();
    let beat = format!("{},0", secs * 1000 - 60_000);
    let () =
        redis::cmd("HSET").arg("{retention}:writers").arg("77").arg(beat).query(&mut conn).unwrap();

    let report = retention.prune_once().await.unwrap();
    assert!(
        report.inactivity_held.as_deref().is_some_and(|w| w.contains("writer 77")),
        "{report:?}"
    );
    assert_eq!(report.erased, 2, "{report:?}");
    assert_eq!(eraser.reasons(1), [ErasureReason::Blocked]);
    assert_eq!(eraser.reasons(2), [ErasureReason::OptOut]);
    assert_eq!(eraser.erased(3) + eraser.erased(4), 0, "the inactive users wait");
    assert_eq!(retention.tracked_users().await.unwrap(), 2);
}

/// `mark_gone` and `note_send_error` return the store's error when it cannot be written,
/// and keep nothing (their docs say so); `NoteGone::note_gone` is the kept alternative.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gone_marks_report_the_store_error_during_an_outage_and_keep_nothing() {
    let mut env = Env::redis();
    let retention =
        env.builder().await.store_timeout(crate::common::OUTAGE_STORE_TIMEOUT).build().unwrap();
    assert!(retention.note_interaction(UserId(5)).await.is_stored());
    env.redis_server().stop();
    let err = retention.mark_gone(UserId(5), GoneReason::Blocked).await.unwrap_err();
    assert!(matches!(err, Error::Redis(_) | Error::Timeout(_)), "{err:?}");
    let blocked = RequestError::Api(ApiError::BotBlocked);
    let err = retention.note_send_error(ChatId(6), &blocked).await.unwrap_err();
    assert!(matches!(err, Error::Redis(_) | Error::Timeout(_)), "{err:?}");
    assert_eq!(retention.stats().buffered_gone_marks, 0, "nothing kept");
    env.redis_server().restart();
    eventually("the store answers", || async { retention.tracked_users().await.is_ok() }).await;
    for user in [5, 6] {
        assert_eq!(retention.status(UserId(user)).await.unwrap().erasure, None, "user {user}");
    }
    assert_eq!(retention.stats().marked_gone, 0);
}

/// A block kept in memory during an outage is undone by the user's later message (they
/// unblocked the bot and wrote): once Redis is back, the user is tracked and not marked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_block_is_undone_by_a_later_interaction_of_the_user() {
    let mut env = Env::redis();
    let api = FakeBotApi::start().await;
    let retention =
        env.builder().await.store_timeout(crate::common::OUTAGE_STORE_TIMEOUT).build().unwrap();
    let tree = || teloxide::dptree::entry().endpoint(|| async { Ok::<_, RequestError>(()) });
    dispatch(&api, retention.wrap(tree()), vec![u::message(5, "hi"), u::message(6, "hi")]).await;
    env.redis_server().stop();
    env.clock.advance(DAY);
    dispatch(&api, retention.wrap(tree()), vec![u::blocked(5), u::blocked(6)]).await;
    assert_eq!(retention.stats().buffered_gone_marks, 2);
    env.clock.advance(Duration::from_secs(60));
    dispatch(&api, retention.wrap(tree()), vec![u::message(5, "back")]).await;
    assert_eq!(retention.stats().buffered_gone_marks, 1, "user 5's mark is dropped");
    assert!(!retention.is_reachable(UserId(6)).await.unwrap(), "user 6's kept mark counts");

    env.redis_server().restart();
    eventually("kept marks and interactions are written", || async {
        let stats = retention.stats();
        stats.buffered_gone_marks == 0 && stats.buffered_users == 0
    })
    .await;
    let back = retention.status(UserId(5)).await.unwrap();
    assert_eq!(back.erasure, None, "user 5 came back");
    let seen = back.last_seen.unwrap().timestamp_millis();
    assert_eq!(seen, crate::common::T0 + (DAY + Duration::from_secs(60)).as_millis() as i64);
    let gone = retention.status(UserId(6)).await.unwrap();
    assert_eq!(gone.erasure.map(|e| e.reason), Some(ErasureReason::Blocked), "user 6 is marked");
}

/// Guarantee 14: Redis older than 7.0 is refused by `connect` and by a pass (here a Redis 7
/// whose `INFO` a proxy rewrites to say 6.x).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_older_than_7_is_refused_by_connect_and_by_a_pass() {
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let proxy = Proxy::start_rewriting(server.socket(), b"redis_version:7.", b"redis_version:6.");
    let err = RedisStore::connect(&proxy.url()).await.unwrap_err();
    assert!(matches!(err, Error::Unsafe(_)), "{err:?}");
    assert!(err.to_string().contains("7.0"), "names the minimum: {err}");

    let eraser = Recorder::new("profiles");
    let retention = Retention::builder(RedisStore::open(&proxy.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(env.clock.clone())
        .erase_with(eraser.clone())
        .build()
        .unwrap();
    let err = retention.prune_once().await.unwrap_err();
    assert!(matches!(err, Error::Unsafe(_)) && err.to_string().contains("7.0"), "{err:?}");
    assert!(eraser.calls().is_empty());
    // Through the proxy without the rewrite the same server passes.
    let direct = RedisStore::connect(&server.url()).await.unwrap();
    drop(direct);
}
