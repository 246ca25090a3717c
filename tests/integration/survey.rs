//! `Retention::survey` counts the same on every store: the inactivity buckets relative to
//! the threshold, what is due, scheduled and failing erasures, and heartbeats.

use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{Clock, ErasureReason, GoneReason};

use crate::common::DAY;
use crate::every_store;
use crate::support::Recorder;

every_store! {
    async fn the_survey_counts_users_and_erasures(env) {
        // Threshold 30 days (Env's builder): buckets < 1 d, 1–7 d, 7–30 d... past.
        let bot =
            env.builder().await.erase_with(Recorder::new("profiles").failing_first(1)).build().unwrap();
        let note = |users: std::ops::RangeInclusive<u64>| {
            let bot = &bot;
            async move {
                for user in users {
                    bot.note_interaction(UserId(user)).await;
                }
                bot.flush().await.unwrap();
            }
        };
        note(1..=4).await; // 40 days old at the survey
        env.clock.advance(16 * DAY);
        note(11..=12).await; // 24 days: due within 7 d
        env.clock.advance(5 * DAY + DAY / 2);
        note(21..=21).await; // 18.5 days
        env.clock.advance(DAY / 2);
        note(31..=33).await; // 18 days
        env.clock.advance(15 * DAY);
        note(41..=42).await; // 3 days
        env.clock.advance(3 * DAY);
        note(51..=55).await; // now
        assert!(bot.mark_gone(UserId(900), GoneReason::Blocked).await.unwrap());
        bot.erase_user(UserId(901)).await.unwrap(); // fails once: a retry

        let survey = bot.survey().await.unwrap();
        assert_eq!(survey.tracked, 17);
        let threshold = survey.inactive_after;
        let buckets: Vec<(String, u64)> =
            survey.inactivity.iter().map(|b| (b.label(threshold), b.users)).collect();
        assert_eq!(
            buckets,
            [
                ("< 1 d".to_owned(), 5),
                ("1–7 d".to_owned(), 2),
                ("7 d–threshold".to_owned(), 6),
                ("past threshold".to_owned(), 4)
            ]
        );
        assert_eq!(survey.due_now, 4);
        assert_eq!(survey.due_within_week, 2);
        assert_eq!(survey.due_within_day, 0);
        let scheduled = |reason| survey.scheduled.iter().find(|(r, _)| *r == reason).unwrap().1;
        assert_eq!(scheduled(ErasureReason::Blocked), 1);
        assert_eq!(scheduled(ErasureReason::OptOut), 1);
        assert_eq!(survey.failing, 1);
        assert_eq!(survey.max_failed_attempts, 1);
        assert_eq!(survey.oldest_failing_since.map(|t| t.timestamp_millis()), Some(env.clock.now_ms()));
        // The heartbeat is the pulse task's, beside the writer: on a loaded machine it may land
        // after the interactions.
        crate::support::eventually("this bot's heartbeat", || async {
            bot.survey().await.unwrap().writers.len() == 1
        })
        .await;
        let survey = bot.survey().await.unwrap();
        assert_eq!(survey.writers.len(), 1, "this bot records interactions");

        env.clock.advance(Duration::from_secs(3600));
        assert_eq!(bot.survey().await.unwrap().scheduled_due, 1, "the retry is due");
    }
}
