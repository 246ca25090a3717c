//! The behavioural suite: every case runs on every store (memory, Redis, sharded Redis,
//! SQLite, PostgreSQL); the core cases (the first block) also on Redis over TLS with a
//! client certificate and on a shared Redis Cluster (`cluster.rs`).

use std::sync::Arc;
use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{
    ErasureReason, GonePolicy, GoneReason, ManualClock, Noted, OptOutOutcome, Retention,
};

use crate::common::{DAY, T0};
use crate::every_store;
use crate::support::{Gate, Recorder, eventually, kill_pass_inside_eraser};

const MINUTE: Duration = Duration::from_secs(60);

every_store! {
    #![with_tls]
    #![on_cluster]
    async fn records_last_interaction(env) {
        let retention = env.builder().await.build().unwrap();
        assert_eq!(retention.note_interaction(UserId(7)).await, Noted::Written);
        let status = retention.status(UserId(7)).await.unwrap();
        assert_eq!(status.last_seen.unwrap().timestamp_millis(), T0);
        assert_eq!(status.erasure, None);
        assert_eq!(retention.tracked_users().await.unwrap(), 1);
        // Telegram's service account is never tracked.
        assert_eq!(retention.note_interaction(UserId(777_000)).await, Noted::Ignored);
        assert_eq!(retention.tracked_users().await.unwrap(), 1);
    }

    async fn a_replica_with_a_slow_clock_never_moves_a_user_back(env) {
        let ahead = env.builder().await.build().unwrap();
        let behind = env.builder().await.clock(ManualClock::at_unix_ms(T0 - 3_600_000)).build().unwrap();
        ahead.note_interaction(UserId(1)).await;
        assert_eq!(behind.note_interaction(UserId(1)).await, Noted::Written);
        let seen = ahead.status(UserId(1)).await.unwrap().last_seen.unwrap();
        assert_eq!(seen.timestamp_millis(), T0);
    }

    async fn an_active_user_costs_no_write_within_the_resolution(env) {
        let retention = env.builder().await.build().unwrap();
        assert_eq!(retention.note_interaction(UserId(1)).await, Noted::Written);
        for _ in 0..100 {
            env.clock.advance(Duration::from_millis(500));
            assert_eq!(retention.note_interaction(UserId(1)).await, Noted::Cached);
        }
        env.clock.advance(MINUTE);
        assert_eq!(retention.note_interaction(UserId(1)).await, Noted::Written);
        assert_eq!(retention.stats().interactions_written, 2);
    }

    async fn concurrent_first_interactions_share_one_write(env) {
        let retention = env.builder().await.build().unwrap();
        let interactions = (0..64).map(|_| retention.note_interaction(UserId(5)));
        let outcomes = futures_util::future::join_all(interactions).await;
        assert!(outcomes.iter().all(|o| *o == Noted::Written || *o == Noted::Cached));
        assert_eq!(retention.stats().interactions_written, 1, "one member written, once");
        if env.redis.is_some() {
            let mut conn = env.redis_connection();
            let stats: String = redis::cmd("INFO").arg("commandstats").query(&mut conn).unwrap();
            let zadd = stats.lines().find(|l| l.starts_with("cmdstat_zadd:")).unwrap();
            let field = |name: &str| -> u64 {
                zadd.split([':', ',']).find_map(|f| f.strip_prefix(name)?.parse().ok()).unwrap()
            };
            // Besides the write, the probe of the guarded write (a single server) adds two
            // `ZADD`s to its stand-in keys, the second refused: two per failed one.
            let (calls, failed) = (field("calls="), field("failed_calls="));
            assert_eq!(calls - 2 * failed, 1, "{zadd}");
        }
    }

    async fn users_inactive_past_the_threshold_are_erased_and_no_one_else(env) {
        let eraser = Recorder::new("profiles");
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        retention.note_interaction(UserId(1)).await;
        env.clock.advance(25 * DAY);
        retention.note_interaction(UserId(2)).await;
        env.clock.advance(6 * DAY);

        let preview = retention.preview(10).await.unwrap();
        assert_eq!(preview.inactive, 1);
        assert_eq!(preview.users.len(), 1);
        assert_eq!(preview.users[0].user, UserId(1));
        assert_eq!(preview.users[0].reason, ErasureReason::Inactive);
        assert!(eraser.calls().is_empty(), "a dry run erases nothing");

        let report = retention.prune_once().await.unwrap();
        assert_eq!((report.claimed, report.erased, report.failed), (1, 1, 0));
        assert_eq!(eraser.reasons(1), [ErasureReason::Inactive]);
        assert_eq!(eraser.erased(2), 0);
        assert_eq!(retention.status(UserId(1)).await.unwrap().last_seen, None);
        assert!(retention.status(UserId(2)).await.unwrap().last_seen.is_some());
        assert_eq!(retention.stats().erased_for(ErasureReason::Inactive), 1);

        let again = retention.prune_once().await.unwrap();
        assert_eq!(again.claimed, 0, "nothing left to do");
    }

    async fn an_interaction_after_the_cutoff_protects_even_when_it_was_not_written(env) {
        let eraser = Recorder::new("profiles");
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        assert_eq!(retention.note_interaction(UserId(1)).await, Noted::Written);
        env.clock.advance(Duration::from_secs(50));
        // Cached: the store still says T0, the user really interacted at T0 + 50 s.
        assert_eq!(retention.note_interaction(UserId(1)).await, Noted::Cached);

        env.clock.set_unix_ms(T0 + (30 * DAY + Duration::from_secs(45)).as_millis() as i64);
        assert_eq!(retention.prune_once().await.unwrap().claimed, 0, "interacted after the cutoff");

        env.clock.advance(Duration::from_secs(70));
        assert_eq!(retention.prune_once().await.unwrap().erased, 1);
        assert_eq!(eraser.erased(1), 1);
    }

    async fn a_pass_works_through_many_batches(env) {
        let eraser = Recorder::new("profiles");
        let retention = env.builder().await.batch_size(100).erase_with(eraser.clone()).build().unwrap();
        for user in 1..=1234 {
            retention.note_interaction(UserId(user)).await;
        }
        env.clock.advance(31 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased, 1234);
        // 13 batches of at most 100 users; with shards, at most one part-filled per shard.
        assert!((13..=12 + env.shard_count()).contains(&report.batches), "{report:?}");
        assert_eq!(eraser.counts().len(), 1234);
        assert_eq!(retention.tracked_users().await.unwrap(), 0);
    }

    async fn a_failed_eraser_is_retried_until_it_succeeds(env) {
        let flaky = Recorder::new("flaky").failing_first(2);
        let steady = Recorder::new("steady");
        let retention = env
            .builder()
            .await
            .erase_with(flaky.clone())
            .erase_with(steady.clone())
            .build()
            .unwrap();
        retention.note_interaction(UserId(9)).await;
        env.clock.advance(31 * DAY);

        let first = retention.prune_once().await.unwrap();
        assert_eq!((first.erased, first.failed), (0, 1));
        let status = retention.status(UserId(9)).await.unwrap();
        let pending = status.erasure.expect("the failed erasure is scheduled");
        assert_eq!(pending.reason, ErasureReason::Inactive);
        assert_eq!(pending.failed_attempts, 1);
        assert!(!pending.running);

        // Not due yet: retries back off.
        assert_eq!(retention.prune_once().await.unwrap().claimed, 0);
        env.clock.advance(Duration::from_secs(31));
        assert_eq!(retention.prune_once().await.unwrap().failed, 1);
        env.clock.advance(Duration::from_secs(61));
        let last = retention.prune_once().await.unwrap();
        assert_eq!(last.erased, 1);
        assert_eq!(flaky.erased(9), 1);
        assert_eq!(steady.erased(9), 3, "erasers are called again on retry: they must be idempotent");
        assert_eq!(retention.status(UserId(9)).await.unwrap().erasure, None);
        assert_eq!(retention.stats().erasure_retries, 2);
    }

    async fn a_pruner_killed_mid_batch_leaves_nothing_behind(env) {
        let gate = Arc::new(Gate::default());
        let stuck = Recorder::new("profiles").gated(Arc::clone(&gate));
        let doomed = env.builder().await.lease(Duration::from_secs(60)).eraser_timeout(Duration::from_secs(30))
            .erase_with(stuck.clone()).build().unwrap();
        doomed.note_interaction(UserId(1)).await;
        doomed.note_interaction(UserId(2)).await;
        env.clock.advance(31 * DAY);

        // The pass claims both users (in one batch, or one per shard), enters the eraser
        // and is killed there.
        let pass = tokio::spawn({
            let doomed = doomed.clone();
            async move { doomed.prune_once().await }
        });
        gate.entered.notified().await;
        eventually("both users claimed", || async {
            let mut running = true;
            for user in [1, 2] {
                let status = doomed.status(UserId(user)).await.unwrap();
                running &= status.erasure.is_some_and(|e| e.running);
            }
            running
        })
        .await;
        pass.abort();
        drop(doomed);

        let eraser = Recorder::new("profiles");
        let next = env.builder().await.lease(Duration::from_secs(60)).eraser_timeout(Duration::from_secs(30))
            .erase_with(eraser.clone()).build().unwrap();
        let running = next.status(UserId(1)).await.unwrap().erasure.unwrap();
        assert!(running.running);
        // Within the lease, nobody interactions the claimed users.
        assert_eq!(next.prune_once().await.unwrap().claimed, 0);
        let preview = next.preview(10).await.unwrap();
        assert_eq!(preview.expired_leases, 0);

        env.clock.advance(Duration::from_secs(61));
        let batches = if env.shard_count() == 1 { 1..=1 } else { 1..=2 };
        let expired = next.preview(10).await.unwrap().expired_leases;
        assert!(batches.contains(&expired), "{expired} claimed batches");
        let report = next.prune_once().await.unwrap();
        assert_eq!(report.erased, 2);
        assert_eq!((eraser.erased(1), eraser.erased(2)), (1, 1));
        assert_eq!(next.status(UserId(1)).await.unwrap().erasure, None);
        assert_eq!(next.prune_once().await.unwrap().claimed, 0);
    }

    async fn a_user_who_comes_back_during_a_crashed_erasure_is_kept(env) {
        let gate = Arc::new(Gate::default());
        let stuck = Recorder::new("profiles").gated(Arc::clone(&gate));
        let doomed = env.builder().await.erase_with(stuck).build().unwrap();
        doomed.note_interaction(UserId(1)).await;
        env.clock.advance(31 * DAY);
        kill_pass_inside_eraser(&doomed, &gate).await;

        // The user interacts while their erasure is stuck.
        let eraser = Recorder::new("profiles");
        let next = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        assert_eq!(next.note_interaction(UserId(1)).await, Noted::Written);
        env.clock.advance(3 * MINUTE);
        let report = next.prune_once().await.unwrap();
        assert_eq!(report.claimed, 0, "came back: the expired lease is dropped, not re-run");
        assert_eq!(eraser.erased(1), 0);
        let status = next.status(UserId(1)).await.unwrap();
        assert!(status.last_seen.is_some());
        assert_eq!(status.erasure, None);
    }

    async fn three_pruners_at_once_erase_each_user_exactly_once(env) {
        let eraser = Recorder::new("profiles").yielding();
        let mut pruners = Vec::new();
        for _ in 0..3 {
            pruners.push(env.builder().await.batch_size(50).erase_with(eraser.clone()).build().unwrap());
        }
        for user in 1..=3000 {
            pruners[user as usize % 3].note_interaction(UserId(user)).await;
        }
        env.clock.advance(31 * DAY);
        let passes = pruners.iter().map(|p| {
            let p = p.clone();
            tokio::spawn(async move { p.prune_once().await })
        });
        let reports: Vec<_> =
            futures_util::future::join_all(passes).await.into_iter().map(Result::unwrap).collect();
        let erased: u64 = reports.iter().map(|r| r.as_ref().unwrap().erased).sum();
        assert_eq!(erased, 3000);
        let counts = eraser.counts();
        assert_eq!(counts.len(), 3000);
        assert!(counts.values().all(|&n| n == 1), "someone was erased twice");
        assert!(reports.iter().filter(|r| r.as_ref().unwrap().erased > 0).count() >= 2,
            "the work was shared: {reports:?}");
    }

    async fn gone_users_are_erased_after_the_grace_period(env) {
        let eraser = Recorder::new("profiles");
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        retention.note_interaction(UserId(3)).await;
        assert!(retention.mark_gone(UserId(3), GoneReason::Blocked).await.unwrap());
        assert!(!retention.mark_gone(UserId(3), GoneReason::Blocked).await.unwrap(), "kept as it was");

        let pending = retention.status(UserId(3)).await.unwrap().erasure.unwrap();
        assert_eq!(pending.reason, ErasureReason::Blocked);
        assert_eq!(pending.due.unwrap().timestamp_millis(), T0 + (7 * DAY).as_millis() as i64);

        env.clock.advance(6 * DAY);
        assert_eq!(retention.prune_once().await.unwrap().claimed, 0, "within the grace period");
        env.clock.advance(DAY + MINUTE);
        let preview = retention.preview(10).await.unwrap();
        assert_eq!(preview.users[0].reason, ErasureReason::Blocked);
        assert!(preview.users[0].marked_at.is_some());
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased_for(ErasureReason::Blocked), 1);
        assert_eq!(eraser.reasons(3), [ErasureReason::Blocked]);
        assert_eq!(retention.status(UserId(3)).await.unwrap().erasure, None);
    }

    async fn the_dry_run_lists_each_user_once_with_the_reason_the_pass_uses(env) {
        let retention = env.builder().await.build().unwrap();
        retention.note_interaction(UserId(1)).await;
        retention.note_interaction(UserId(2)).await;
        env.clock.advance(29 * DAY);
        // Gone, but the grace period ends after the inactivity threshold does.
        retention.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap();
        env.clock.advance(2 * DAY);
        let preview = retention.preview(10).await.unwrap();
        let mut listed: Vec<_> = preview.users.iter().map(|e| (e.user.0, e.reason)).collect();
        listed.sort_by_key(|(user, _)| *user);
        assert_eq!(listed, [(1, ErasureReason::Blocked), (2, ErasureReason::Inactive)]);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased_for(ErasureReason::Blocked), 1);
        assert_eq!(report.erased_for(ErasureReason::Inactive), 1);
    }

    async fn an_interaction_within_the_grace_period_cancels_the_erasure(env) {
        let eraser = Recorder::new("profiles");
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        retention.note_interaction(UserId(3)).await;
        env.clock.advance(Duration::from_secs(10));
        retention.mark_gone(UserId(3), GoneReason::Unreachable).await.unwrap();
        env.clock.advance(Duration::from_secs(10));
        // Within the resolution of the last write, yet the mark makes it count.
        assert_eq!(retention.note_interaction(UserId(3)).await, Noted::Written);
        env.clock.advance(8 * DAY);
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased, 0);
        assert_eq!(eraser.erased(3), 0);
        assert_eq!(retention.status(UserId(3)).await.unwrap().erasure, None, "the mark is dropped");
        assert!(retention.status(UserId(3)).await.unwrap().last_seen.is_some());
    }

    async fn gone_policies_erase_now_or_only_mark(env) {
        let eraser = Recorder::new("profiles");
        let now = env.builder().await.gone_policy(GonePolicy::EraseNow).erase_with(eraser.clone()).build().unwrap();
        now.note_interaction(UserId(1)).await;
        now.mark_gone(UserId(1), GoneReason::Deactivated).await.unwrap();
        assert_eq!(now.prune_once().await.unwrap().erased, 1);
        assert_eq!(eraser.reasons(1), [ErasureReason::Deactivated]);

        let mark = env.builder().await.gone_policy(GonePolicy::MarkOnly).erase_with(eraser.clone()).build().unwrap();
        mark.note_interaction(UserId(2)).await;
        mark.mark_gone(UserId(2), GoneReason::Blocked).await.unwrap();
        let pending = mark.status(UserId(2)).await.unwrap().erasure.unwrap();
        assert_eq!((pending.reason, pending.due), (ErasureReason::Blocked, None));
        env.clock.advance(29 * DAY);
        assert_eq!(mark.prune_once().await.unwrap().claimed, 0, "only marked");
        env.clock.advance(2 * DAY);
        assert_eq!(mark.prune_once().await.unwrap().erased, 1, "inactivity erases them");
        assert_eq!(eraser.reasons(2), [ErasureReason::Blocked], "with the more specific reason");
    }

    async fn an_opt_out_erases_now_and_everywhere(env) {
        let a = Recorder::new("a");
        let b = Recorder::new("b");
        let erased = Arc::new(std::sync::Mutex::new(Vec::new()));
        let retention = env
            .builder()
            .await
            .erase_with(a.clone())
            .erase_with(b.clone())
            .on_erased({
                let erased = Arc::clone(&erased);
                move |e| erased.lock().unwrap().push((e.user, e.reason))
            })
            .build()
            .unwrap();
        retention.note_interaction(UserId(4)).await;
        retention.mark_gone(UserId(4), GoneReason::Blocked).await.unwrap();
        let outcome = retention.erase_user(UserId(4)).await.unwrap();
        assert_eq!(outcome, OptOutOutcome::Erased { follow_up: false });
        assert_eq!((a.reasons(4), b.reasons(4)), (vec![ErasureReason::OptOut], vec![ErasureReason::OptOut]));
        let status = retention.status(UserId(4)).await.unwrap();
        assert_eq!((status.last_seen, status.erasure), (None, None), "the gone mark went too");
        assert_eq!(*erased.lock().unwrap(), [(UserId(4), ErasureReason::OptOut)]);
        env.clock.advance(8 * DAY);
        assert_eq!(retention.prune_once().await.unwrap().claimed, 0);
    }

    async fn a_failed_opt_out_is_retried_durably(env) {
        let flaky = Recorder::new("flaky").failing_first(1);
        let retention = env.builder().await.erase_with(flaky.clone()).build().unwrap();
        retention.note_interaction(UserId(4)).await;
        let OptOutOutcome::Retrying { failed } = retention.erase_user(UserId(4)).await.unwrap() else {
            panic!("the eraser failed");
        };
        assert_eq!(failed[0].0, "flaky");
        drop(retention);

        // Another process (or the same bot after a restart) finishes the erasure.
        let eraser = flaky.clone();
        let restarted = env.builder().await.erase_with(eraser).build().unwrap();
        let pending = restarted.status(UserId(4)).await.unwrap().erasure.unwrap();
        assert_eq!((pending.reason, pending.failed_attempts), (ErasureReason::OptOut, 1));
        env.clock.advance(Duration::from_secs(31));
        let report = restarted.prune_once().await.unwrap();
        assert_eq!(report.erased_for(ErasureReason::OptOut), 1);
        assert_eq!(flaky.reasons(4), [ErasureReason::OptOut]);
        assert_eq!(restarted.status(UserId(4)).await.unwrap().erasure, None);
    }

    async fn an_update_in_flight_during_an_opt_out_gets_a_follow_up(env) {
        let gate = Arc::new(Gate::default());
        let eraser = Recorder::new("profiles").gated(Arc::clone(&gate));
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        retention.note_interaction(UserId(8)).await;
        let opt_out = tokio::spawn({
            let retention = retention.clone();
            async move { retention.erase_user(UserId(8)).await }
        });
        gate.entered.notified().await;
        // Another update of the user arrives while the eraser runs (cached before, but the
        // running erasure makes it go to the store).
        assert_eq!(retention.note_interaction(UserId(8)).await, Noted::Written);
        gate.release.notify_one();
        assert_eq!(opt_out.await.unwrap().unwrap(), OptOutOutcome::Erased { follow_up: true });

        let status = retention.status(UserId(8)).await.unwrap();
        assert!(status.last_seen.is_some(), "the in-flight update is not lost");
        let follow_up = status.erasure.expect("a follow-up is scheduled");
        assert_eq!(follow_up.reason, ErasureReason::OptOut);
        assert_eq!(retention.stats().follow_ups, 1);

        assert_eq!(retention.prune_once().await.unwrap().claimed, 0, "after the follow-up delay");
        env.clock.advance(MINUTE + Duration::from_secs(1));
        gate.release.notify_one(); // lets the follow-up's eraser through
        let report = retention.prune_once().await.unwrap();
        assert_eq!(report.erased_for(ErasureReason::OptOut), 1);
        assert_eq!(eraser.reasons(8), [ErasureReason::OptOut, ErasureReason::OptOut]);
        let status = retention.status(UserId(8)).await.unwrap();
        assert_eq!((status.last_seen, status.erasure), (None, None));
    }

    async fn an_interaction_during_a_pruner_run_opt_out_gets_a_follow_up(env) {
        // Before the fix: the pruner's retry of a failed opt-out served the user's
        // interactions from the cache while the erasers ran, so the finish saw none and no
        // follow-up erasure was scheduled for what that update's handler wrote.
        let gate = Arc::new(Gate::default());
        let eraser = Recorder::new("profiles").gated(Arc::clone(&gate)).failing_first(1);
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        retention.note_interaction(UserId(9)).await;
        let opt_out = tokio::spawn({
            let retention = retention.clone();
            async move { retention.erase_user(UserId(9)).await }
        });
        gate.entered.notified().await;
        gate.release.notify_one();
        assert!(matches!(opt_out.await.unwrap().unwrap(), OptOutOutcome::Retrying { .. }));

        // Past the retry delay the user writes again (and is cached from then on).
        env.clock.advance(MINUTE);
        assert_eq!(retention.note_interaction(UserId(9)).await, Noted::Written);
        let pass = tokio::spawn({
            let retention = retention.clone();
            async move { retention.prune_once().await }
        });
        gate.entered.notified().await;
        env.clock.advance(Duration::from_secs(1));
        assert_eq!(
            retention.note_interaction(UserId(9)).await,
            Noted::Written,
            "not served from the cache while the user's erasure runs"
        );
        gate.release.notify_one();
        let report = pass.await.unwrap().unwrap();
        assert_eq!(report.erased, 1, "{report:?}");

        let status = retention.status(UserId(9)).await.unwrap();
        let follow_up = status.erasure.expect("a follow-up erasure is scheduled");
        assert_eq!(follow_up.reason, ErasureReason::OptOut);
        assert_eq!(retention.stats().follow_ups, 1);
    }

    async fn an_opt_out_during_a_running_erasure_takes_it_over(env) {
        let gate = Arc::new(Gate::default());
        let eraser = Recorder::new("profiles").gated(Arc::clone(&gate)).failing_first(1);
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        retention.note_interaction(UserId(6)).await;
        env.clock.advance(31 * DAY);
        let pass = tokio::spawn({
            let retention = retention.clone();
            async move { retention.prune_once().await }
        });
        gate.entered.notified().await;
        assert_eq!(retention.erase_user(UserId(6)).await.unwrap(), OptOutOutcome::AlreadyRunning);
        gate.release.notify_one();
        assert_eq!(pass.await.unwrap().unwrap().failed, 1);
        let pending = retention.status(UserId(6)).await.unwrap().erasure.unwrap();
        assert_eq!(pending.reason, ErasureReason::OptOut, "retried as the opt-out it became");
    }

    /// An opt-out that takes over a running erasure reaches the erasers as an opt-out: once
    /// that erasure finishes, a follow-up erases the user again for the opt-out. (Before
    /// the fix the erasers only ever saw the earlier reason.)
    async fn an_opt_out_that_took_over_a_running_erasure_reaches_the_erasers(env) {
        let gate = Arc::new(Gate::default());
        let eraser = Recorder::new("profiles").gated(Arc::clone(&gate));
        let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        retention.note_interaction(UserId(6)).await;
        env.clock.advance(31 * DAY);
        let pass = tokio::spawn({
            let retention = retention.clone();
            async move { retention.prune_once().await }
        });
        gate.entered.notified().await;
        assert_eq!(retention.erase_user(UserId(6)).await.unwrap(), OptOutOutcome::AlreadyRunning);
        gate.release.notify_one();
        assert_eq!(pass.await.unwrap().unwrap().erased, 1);
        let pending = retention.status(UserId(6)).await.unwrap().erasure.expect("a follow-up");
        assert_eq!(pending.reason, ErasureReason::OptOut);
        env.clock.advance(Duration::from_secs(61));
        let pass = tokio::spawn({
            let retention = retention.clone();
            async move { retention.prune_once().await }
        });
        gate.entered.notified().await;
        gate.release.notify_one();
        assert_eq!(pass.await.unwrap().unwrap().erased_for(ErasureReason::OptOut), 1);
        assert_eq!(eraser.reasons(6), [ErasureReason::Inactive, ErasureReason::OptOut]);
        assert_eq!(retention.status(UserId(6)).await.unwrap().erasure, None);
    }

    async fn replicas_see_each_others_erasures(env) {
        let a = env.builder().await.build().unwrap();
        let b = env.builder().await.build().unwrap();
        assert_eq!(a.note_interaction(UserId(11)).await, Noted::Written);
        assert_eq!(a.stats().cached_users, 1);
        assert_eq!(b.erase_user(UserId(11)).await.unwrap(), OptOutOutcome::Erased { follow_up: false });
        // Replica A learns of the erasure from the store's feed and stops trusting its cache.
        crate::support::eventually("replica A drops its cache entry", || async {
            a.stats().cached_users == 0
        })
        .await;
        env.clock.advance(Duration::from_secs(5));
        assert_eq!(a.note_interaction(UserId(11)).await, Noted::Written);
        assert!(a.status(UserId(11)).await.unwrap().last_seen.is_some());
    }

    async fn a_replica_that_skipped_an_interaction_during_an_opt_out_writes_it_and_follows_up(env) {
        let gate = Arc::new(Gate::default());
        let eraser = Recorder::new("profiles").gated(Arc::clone(&gate));
        let a = env.builder().await.build().unwrap();
        let b = env.builder().await.erase_with(eraser.clone()).build().unwrap();
        assert_eq!(a.note_interaction(UserId(12)).await, Noted::Written);
        let opt_out = tokio::spawn({
            let b = b.clone();
            async move { b.erase_user(UserId(12)).await }
        });
        gate.entered.notified().await;
        env.clock.advance(Duration::from_secs(1));
        // Replica A serves this update from its cache: nothing reaches the store yet.
        assert_eq!(a.note_interaction(UserId(12)).await, Noted::Cached);
        env.clock.advance(Duration::from_secs(1));
        gate.release.notify_one();
        assert_eq!(opt_out.await.unwrap().unwrap(), OptOutOutcome::Erased { follow_up: false });

        // The follow-up is scheduled at once, the interaction goes out with the next group
        // commit: either may land first.
        crate::support::eventually("replica A writes the skipped interaction", || async {
            let status = a.status(UserId(12)).await.unwrap();
            status.erasure.is_some() && status.last_seen.is_some()
        })
        .await;
        let status = a.status(UserId(12)).await.unwrap();
        assert_eq!(status.last_seen.unwrap().timestamp_millis(), T0 + 1000);
        assert_eq!(status.erasure.unwrap().reason, ErasureReason::OptOut);
    }
}

#[tokio::test]
async fn invalid_configuration_is_refused_with_a_clear_error() {
    use teloxide_retention::{Commands, MemoryStore, Texts};
    let base = || Retention::builder(MemoryStore::new()).inactive_after(30 * DAY);
    let cases: Vec<(teloxide_retention::RetentionBuilder, &str)> = vec![
        (Retention::builder(MemoryStore::new()), "inactive_after is required"),
        (base().inactive_after(Duration::ZERO), "inactive_after must be longer than zero"),
        (base().resolution(Duration::ZERO), "resolution must be longer than zero"),
        (base().inactive_after(Duration::from_secs(100)), "twice the resolution"),
        (base().namespace(""), "namespace must not be empty"),
        (base().namespace("a{b}"), "contains '{'"),
        (base().batch_size(0), "batch_size must be between 1 and 500, got 0"),
        (base().batch_size(10_000), "batch_size must be between 1 and 500"),
        (base().lease(Duration::from_secs(1)), "lease (1s) must be at least 5s"),
        (base().lease(Duration::from_secs(30)), "at least twice eraser_timeout"),
        (base().prune_every(Duration::ZERO), "prune_every must be longer than zero"),
        (base().max_buffered_interactions(0), "max_buffered_interactions must be at least 1"),
        (base().gone_policy(GonePolicy::EraseAfter(Duration::ZERO)), "use GonePolicy::EraseNow"),
        (base().prune_concurrency(0), "prune_concurrency must be at least 1"),
        (base().eraser_timeout(Duration::ZERO), "eraser_timeout must be longer than zero"),
        (base().follow_up_delay(Duration::ZERO), "follow_up_delay must be longer than zero"),
        (base().store_timeout(Duration::ZERO), "store_timeout must be longer than zero"),
        (base().heartbeat_every(Duration::ZERO), "heartbeat_every must be longer than zero"),
        (base().writer_timeout(Duration::ZERO), "writer_timeout must be longer than zero"),
        (base().stuck_after(Duration::ZERO), "stuck_after must be longer than zero"),
        (
            base().heartbeat_every(Duration::from_secs(5)).writer_timeout(Duration::from_secs(15)),
            "writer_timeout (15s) must be longer than three heartbeats (5s each)",
        ),
        (
            base().audit_every(Duration::ZERO, teloxide_retention::UntrackedUsers::Report),
            "audit_every must be longer than zero",
        ),
        (
            base().receipts(
                teloxide_retention::ReceiptKey::new(*b"an example key of thirty-two b.!").unwrap(),
                Duration::ZERO,
            ),
            "receipts must be kept for longer than zero",
        ),
        (base().namespace("n".repeat(65)), "namespace must be at most 64 bytes"),
        (
            base().commands(Commands::default().confirm_within(Duration::ZERO)),
            "confirm_within must be longer than zero",
        ),
        (
            base().commands(Commands::default().rate_limit(0, DAY)),
            "rate_limit needs at least one use per non-zero window",
        ),
        (
            base().commands(Commands::default().rate_limit(3, Duration::ZERO)),
            "rate_limit needs at least one use per non-zero window",
        ),
        (
            base().commands(Commands::default().language("", Texts::default())),
            "language code \"\" is invalid",
        ),
        (
            base().commands(Commands::default().language("de_DE", Texts::german())),
            "language code \"de_de\" is invalid",
        ),
        (
            base().commands(Commands::default().max_export_bytes(100)),
            "max_export_bytes must be at least 1024",
        ),
        (
            base().erase_with(Recorder::new("same")).erase_with(Recorder::new("same")),
            "two erasers are named \"same\"",
        ),
        (
            base().commands(teloxide_retention::Commands::default().remove_command("Remove Me")),
            "command name \"Remove Me\" is invalid",
        ),
        (
            base().commands(teloxide_retention::Commands::default().export_command("privacy")),
            "two privacy commands are named \"privacy\"",
        ),
    ];
    for (builder, expected) in cases {
        let err = builder.build().expect_err(expected);
        assert!(err.is_config(), "{err}");
        assert!(err.to_string().contains(expected), "{err:?} should mention {expected:?}");
    }
    assert!(base().build().is_ok());
}

every_store! {
    async fn duration_max_means_never_and_nothing_overflows(env) {
        // A grace period of `Duration::MAX` (a natural "never") once wrapped to a due time
        // in the past: blocked users were erased at the next pass.
        let eraser = Recorder::new("profiles");
        let retention = env
            .builder()
            .await
            .gone_policy(GonePolicy::EraseAfter(Duration::MAX))
            .erase_with(eraser.clone())
            .build()
            .unwrap();
        retention.note_interaction(UserId(1)).await;
        assert!(retention.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap());
        env.clock.advance(10 * DAY);
        assert_eq!(retention.prune_once().await.unwrap().claimed, 0, "never due");
        let erasure = retention.status(UserId(1)).await.unwrap().erasure.unwrap();
        assert_eq!(erasure.reason, ErasureReason::Blocked, "the mark stays");
        // Inactivity still applies to them.
        env.clock.advance(21 * DAY);
        assert_eq!(retention.prune_once().await.unwrap().erased, 1);
        assert_eq!(eraser.erased(1), 1);

        // A threshold of `Duration::MAX`: nobody is ever inactive.
        let forever = env
            .bare_builder()
            .await
            .namespace("forever")
            .inactive_after(Duration::MAX)
            .resolution(Duration::MAX / 4)
            .lease(Duration::MAX)
            .follow_up_delay(Duration::MAX)
            .without_commands()
            .build()
            .unwrap();
        assert!(forever.note_interaction(UserId(2)).await.is_stored());
        assert_eq!(forever.tracked_users().await.unwrap(), 1);
        env.clock.advance(3650 * DAY);
        assert_eq!(forever.preview(10).await.unwrap().inactive, 0);
        assert_eq!(forever.prune_once().await.unwrap().claimed, 0);
        // An opt-out still runs, with a lease deadline that saturates.
        assert!(matches!(forever.erase_user(UserId(2)).await.unwrap(), OptOutOutcome::Erased { .. }));
        assert!(forever.privacy_text(None).contains("does not delete it for inactivity"), "{}", forever.privacy_text(None));
    }
}

#[test]
fn durations_too_large_to_double_are_config_errors_not_panics() {
    use teloxide_retention::MemoryStore;
    // `2 * eraser_timeout` and `2 * resolution` used to panic on overflow.
    let err = Retention::builder(MemoryStore::new())
        .inactive_after(30 * DAY)
        .eraser_timeout(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(err.is_config() && err.to_string().contains("eraser_timeout"), "{err}");
    let err = Retention::builder(MemoryStore::new())
        .inactive_after(30 * DAY)
        .resolution(Duration::MAX)
        .build()
        .unwrap_err();
    assert!(err.is_config() && err.to_string().contains("resolution"), "{err}");
}

every_store! {
    /// Not on sharded Redis: a pass claims a batch from each shard at once there, so the
    /// first crashed pass (300 a shard) holds all 800 users and the second finds none to
    /// claim (it waits for its eraser for ever).
    #[stores(memory, redis, sqlite, postgres)]
    async fn two_crashed_full_batches_are_taken_over_within_the_batch_limit(env) {
        // Two pruners crash mid-batch: 300 and 500 users. The takeover once merged crashed
        // batches into one above the limit (3,500 + 5,000 into 8,500 when the limit was
        // 5,000), which `finish` could never end on Redis ("too many results to unpack"):
        // erasers ran again every pass and the lease stuck for good.
        let users: Vec<UserId> = (1..=800).map(UserId).collect();
        let writer = env.builder().await.build().unwrap();
        futures_util::future::join_all(users.iter().map(|u| writer.note_interaction(*u))).await;
        env.clock.advance(31 * DAY);
        for batch in [300, 500] {
            let gate = Arc::new(Gate::default());
            let doomed = env.builder().await.batch_size(batch)
                .erase_with(Recorder::new("profiles").gated(Arc::clone(&gate)))
                .build().unwrap();
            kill_pass_inside_eraser(&doomed, &gate).await;
        }
        env.clock.advance(3 * MINUTE);

        let eraser = Recorder::new("profiles");
        let next = env.builder().await.batch_size(500).erase_with(eraser.clone()).build().unwrap();
        assert_eq!(next.preview(10).await.unwrap().expired_leases, 2);
        let report = next.prune_once().await.unwrap();
        assert_eq!((report.erased, report.failed, report.leases_lost), (800, 0, 0), "{report:?}");
        let sizes = eraser.batch_sizes();
        assert!(sizes.iter().all(|&n| (1..=500).contains(&n)), "none above the limit: {sizes:?}");
        assert_eq!((sizes.iter().sum::<usize>(), sizes.len() as u64), (800, report.batches));
        let counts = eraser.counts();
        assert_eq!(counts.len(), 800);
        assert!(counts.values().all(|&n| n == 1), "someone was erased twice");
        assert_eq!(next.prune_once().await.unwrap().claimed, 0);
        assert_eq!(next.preview(10).await.unwrap().expired_leases, 0);
    }
}

/// Releases every call held by `gate` until `task` ends, and returns its result.
async fn release_until_done<T>(gate: &Gate, task: tokio::task::JoinHandle<T>) -> T {
    while !task.is_finished() {
        gate.release.notify_one();
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    task.await.unwrap()
}

every_store! {
    async fn a_stalled_pruner_loses_a_batch_taken_over_in_part(env) {
        // Pruner A stalls inside its erasers past the lease. Pruner B (batch size 2) takes
        // over two of A's three users; the third stays in A's expired batch. When A wakes,
        // its finish must find the lease lost, or it would confirm and requeue users that
        // now belong to B's batch.
        for user in 1..=3 {
            env.builder().await.build().unwrap().note_interaction(UserId(user)).await;
        }
        env.clock.advance(31 * DAY);
        let (gate_a, gate_b) = (Arc::new(Gate::default()), Arc::new(Gate::default()));
        let a = env.builder().await.erase_with(Recorder::new("profiles").gated(Arc::clone(&gate_a)))
            .build().unwrap();
        let pass_a = tokio::spawn({ let a = a.clone(); async move { a.prune_once().await } });
        gate_a.entered.notified().await;
        env.clock.advance(3 * MINUTE);

        let eraser_b = Recorder::new("profiles").gated(Arc::clone(&gate_b));
        let b = env.builder().await.batch_size(2).erase_with(eraser_b.clone()).build().unwrap();
        let pass_b = tokio::spawn({ let b = b.clone(); async move { b.prune_once().await } });
        // B has taken over what it will before A wakes: two of A's users in one batch, or
        // on a sharded store (each shard's pass on its own) all three. Waiting for B's
        // first eraser only let A finish a shard B had not reached yet on a busy machine.
        let taken = if env.shard_count() > 1 { 3 } else { 2 };
        eventually("B's batches hold the users it takes over", || async {
            eraser_b.batch_sizes().iter().sum::<usize>() >= taken
        })
        .await;

        let report_a = release_until_done(&gate_a, pass_a).await.unwrap();
        assert_eq!(report_a.leases_lost, 3, "A's finish finds its lease lost: {report_a:?}");
        let report_b = release_until_done(&gate_b, pass_b).await.unwrap();
        // A's pass goes on and may take the user left in its old batch; B erases its two.
        assert_eq!(report_a.erased + report_b.erased, 3, "{report_a:?} {report_b:?}");
        assert!(eraser_b.counts().values().all(|&n| n == 1));
        for user in 1..=3 {
            assert_eq!(b.status(UserId(user)).await.unwrap().erasure, None, "{user}");
        }
    }
}
