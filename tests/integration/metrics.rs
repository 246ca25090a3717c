//! The `metrics` facade: a Prometheus exporter (as `examples/bot.rs` serves it) scraped over
//! HTTP after a scripted run on real Redis, checking names and values.

use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{GoneReason, ManualClock, OptOutOutcome, RedisStore, Retention};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::common::redis_server::free_port;
use crate::common::{DAY, RedisServer, T0};
use crate::support::Recorder;

/// The exporter's text page, fetched with a plain HTTP/1.0 GET.
async fn scrape(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    stream.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n").await.unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).await.unwrap();
    assert!(page.starts_with("HTTP/1.0 200") || page.starts_with("HTTP/1.1 200"), "{page}");
    page
}

/// The value of the sample `name` (with its labels, as the page spells them).
fn value(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in\n{page}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prometheus_exporter_serves_every_metric_after_a_run() {
    crate::common::init_tracing();
    let port = free_port();
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(([127, 0, 0, 1], port))
        .install()
        .unwrap();
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

    let page = scrape(port).await;
    assert_eq!(value(&page, "teloxide_retention_interactions_written_total"), 5.0);
    assert_eq!(value(&page, "teloxide_retention_gone_marks_total{reason=\"blocked\"}"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_erasures_total{reason=\"opt_out\"}"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_erasure_failures_total"), 1.0);
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
    let page = scrape(port).await;
    assert_eq!(value(&page, "teloxide_retention_erasures_total{reason=\"inactive\"}"), 3.0);
    assert_eq!(value(&page, "teloxide_retention_erasures_total{reason=\"blocked\"}"), 1.0);
    assert_eq!(value(&page, "teloxide_retention_tracked_users"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_scheduled_erasures"), 0.0);
    assert_eq!(value(&page, "teloxide_retention_prune_passes_total"), 2.0);
}
