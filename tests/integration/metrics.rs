//! The `metrics` facade: the Prometheus exporter's page (what `examples/bot.rs` serves)
//! after a scripted run on real Redis, checking names and exact values.
//!
//! The recorder is this test's own, set for its thread (`metrics::set_default_local_recorder`)
//! on a current-thread runtime, so every task of the run (the writer and the heartbeat
//! included) reports to it, and no other test, in this process or not, adds to its counts.

use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{GoneReason, ManualClock, OptOutOutcome, RedisStore, Retention};

use crate::common::{DAY, RedisServer, T0};
use crate::support::Recorder;

/// The value of the sample `name` (with its labels, as the page spells them).
fn value(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{page}"))
}

#[tokio::test(flavor = "current_thread")]
async fn the_prometheus_exporter_serves_every_metric_after_a_run() {
    crate::common::init_tracing();
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new().build_recorder();
    let exporter = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let scrape = || exporter.render();
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    let flaky = Recorder::new("profiles").failing_first(1);
    let retention = Retention::builder(RedisStore::open(&server.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(clock.clone())
        .erase_with(flaky)
        .build()
        .unwrap();

    // Five users; one blocks the bot, one opts out (its eraser fails once), three go idle.
    for user in 1..=5 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();
    assert!(retention.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap());
    let outcome = retention.erase_user(UserId(2)).await.unwrap();
    assert!(matches!(outcome, OptOutOutcome::Retrying { .. }), "{outcome:?}");
    clock.advance(Duration::from_secs(60));
    let first = retention.prune_once().await.unwrap();
    assert_eq!(first.erased, 1, "the opt-out retry");

    let page = scrape();
    assert_eq!(value(&page, "teloxide_retention_interactions_written_total"), 5.0);
    assert_eq!(value(&page, "teloxide_retention_gone_marks_total{reason=\"blocked\"}"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_erasures_total{reason=\"opt_out\"}"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_erasure_retries_total"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_eraser_failures_total{eraser=\"profiles\"}"), 1.0);
    // Gauges sampled by the pass: four users tracked, the gone mark scheduled (not due for
    // its grace period), nothing failing.
    assert_eq!(value(&page, "teloxide_retention_tracked_users"), 4.0);
    assert_eq!(value(&page, "teloxide_retention_scheduled_erasures"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_due_users"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_failing_erasures"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_oldest_failing_erasure_age_seconds"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_buffered_interactions"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_prune_pass_duration_seconds_count"), 1.0);
    assert!(value(&page, "teloxide_retention_store_call_duration_seconds_count") >= 5.0);
    assert_eq!(
        value(&page, "teloxide_retention_eraser_duration_seconds_count{eraser=\"profiles\"}"),
        2.0
    );

    // Past the threshold: the idle users and the blocked one are erased.
    clock.advance(31 * DAY);
    assert_eq!(retention.prune_once().await.unwrap().erased, 4);
    let page = scrape();
    assert_eq!(value(&page, "teloxide_retention_erasures_total{reason=\"inactive\"}"), 3.0);
    assert_eq!(value(&page, "teloxide_retention_erasures_total{reason=\"blocked\"}"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_tracked_users"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_scheduled_erasures"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_prune_passes_total"), 2.0);
}
