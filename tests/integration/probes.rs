//! Probes: the pruner confirms ambiguous gone marks with one chat action before erasing,
//! through a real `teloxide::Bot` and a local server answering like the Bot API.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use teloxide::prelude::*;
use teloxide_retention::testing::TelegramError;
use teloxide_retention::{ErasureReason, GoneReason, Probes, Reachability, Retention};

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
        api.fail_chat_with(4, TelegramError::TooManyRequests { retry_after: 5 });
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
