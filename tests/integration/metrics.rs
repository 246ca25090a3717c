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
    five_users_one_gone_one_opting_out(&retention).await;
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

/// The crate's metric names (every one begins with it).
const PREFIX: &str = "teloxide_retention_";

/// The metric names in a PromQL expression: each identifier that begins with [`PREFIX`].
/// Identifiers are runs of letters, digits, `_` and `:`; text in quotes (label values,
/// such as `"$job"`) is skipped, so that a label value is never taken for a metric.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut chars = expr.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        match c {
            '"' | '\'' | '`' => {
                // A quoted string, with backslash escapes: skipped whole.
                let mut escaped = false;
                for (_, d) in chars.by_ref() {
                    match d {
                        '\\' if !escaped => escaped = true,
                        d if d == c && !escaped => break,
                        _ => escaped = false,
                    }
                }
            }
            c if c.is_ascii_alphabetic() || c == '_' || c == ':' => {
                let mut end = start + c.len_utf8();
                while let Some(&(i, d)) = chars.peek() {
                    if !(d.is_ascii_alphanumeric() || d == '_' || d == ':') {
                        break;
                    }
                    end = i + d.len_utf8();
                    chars.next();
                }
                let ident = &expr[start..end];
                if ident.starts_with(PREFIX) {
                    names.push(ident.to_owned());
                }
            }
            // Digits and everything else: numbers (`0.99`) never begin a name here.
            _ => {}
        }
    }
    names
}

#[test]
fn the_metric_name_scanner_reads_names_not_label_values_or_numbers() {
    let expr = r#"histogram_quantile(0.99, sum by (le) (rate(teloxide_retention_claim_duration_seconds_bucket{job=~"teloxide_retention_x"}[$__rate_interval]))) / teloxide_retention_a:b"#;
    assert_eq!(
        metric_names(expr),
        ["teloxide_retention_claim_duration_seconds_bucket", "teloxide_retention_a:b"]
    );
    assert!(metric_names("sum(rate(other_total[5m]))").is_empty());
}

/// The sample names of an exporter page (`name{labels} value` lines; `#` lines skipped).
fn page_names(page: &str) -> std::collections::BTreeSet<String> {
    page.lines()
        .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
        .filter_map(|line| line.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// The Grafana dashboard (examples/grafana-dashboard.json) is a dashboard Grafana imports
/// (its current schema, a `${DS_PROMETHEUS}` input, stat, time series and heatmap panels,
/// each with a query) and queries only metrics the crate emits: every metric name in its
/// queries is on the exporter's page (configured as examples/bot.rs configures it) after a
/// run that emits each one the dashboard uses.
#[tokio::test(flavor = "current_thread")]
async fn the_grafana_dashboard_queries_only_metrics_the_crate_emits() {
    use teloxide_retention::{BoxError, Erasure, Listing, UntrackedUsers, erase_fn};

    crate::common::init_tracing();
    // As examples/bot.rs builds it: histograms with buckets.
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets_for_metric(
            metrics_exporter_prometheus::Matcher::Suffix("_seconds".into()),
            &[0.001, 0.01, 0.1, 1.0, 10.0],
        )
        .unwrap()
        .build_recorder();
    let exporter = recorder.handle();
    let _local = metrics::set_default_local_recorder(&recorder);
    let server = RedisServer::start();
    let clock = ManualClock::at_unix_ms(T0);
    // An eraser that always fails for user 2 (a stuck erasure), and one whose storage the
    // audit lists.
    let broken = erase_fn("profiles", |erasure: Erasure| async move {
        if erasure.user == UserId(2) { Err("the profiles database is down") } else { Ok(()) }
    });
    let orders = erase_fn("orders", |_: Erasure| async { Ok::<_, BoxError>(()) }).list_with(
        |_cursor: Option<String>| async {
            Ok::<_, BoxError>(Listing::page([UserId(3), UserId(40)], None))
        },
    );
    // Probes and the census, through a fake Bot API that reaches everyone.
    let api = crate::common::FakeBotApi::start().await;
    let probes = teloxide_retention::Probes::new()
        .one_every(Duration::from_millis(1))
        .give_up_after(60 * DAY);
    let retention = Retention::builder(RedisStore::open(&server.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .stuck_after(Duration::from_secs(3600))
        .without_commands()
        .clock(clock.clone())
        .erase_with(broken)
        .erase_with(orders)
        .probe_with(api.bot(), probes)
        .census(teloxide_retention::Census::new().idle_for(Duration::from_secs(3600)))
        .build()
        .unwrap();
    five_users_one_gone_one_opting_out(&retention).await;
    // A mark a probe finds reachable when it falls due.
    assert!(retention.mark_gone(UserId(3), GoneReason::Unreachable).await.unwrap());
    retention.audit(UntrackedUsers::Adopt).await.unwrap();
    // Failing for two hours: stuck at this pass; then past the threshold, the idle users
    // are erased.
    clock.advance(Duration::from_secs(2 * 3600));
    retention.prune_once().await.unwrap();
    clock.advance(31 * DAY);
    retention.prune_once().await.unwrap();
    assert!(retention.stats().stuck_erasures >= 1, "{:?}", retention.stats());
    retention.shutdown().await.unwrap();

    let emitted = page_names(&exporter.render());
    let path = crate::common::repo_root().join("examples/grafana-dashboard.json");
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();

    // What Grafana's import needs: the current schema, the data source as an input.
    assert!(dashboard["schemaVersion"].as_u64().unwrap() >= 39, "schemaVersion");
    assert_eq!(dashboard["__inputs"][0]["name"], "DS_PROMETHEUS");
    assert_eq!(dashboard["__inputs"][0]["pluginId"], "prometheus");
    assert!(dashboard["uid"].is_string() && dashboard["title"].is_string());
    let panels = dashboard["panels"].as_array().unwrap();
    let mut ids = std::collections::BTreeSet::new();
    let mut queried = std::collections::BTreeSet::new();
    for panel in panels {
        let (kind, title) = (panel["type"].as_str().unwrap(), &panel["title"]);
        assert!(ids.insert(panel["id"].as_u64().unwrap()), "duplicate id: {title}");
        assert!(panel["gridPos"]["w"].as_u64().is_some(), "{title} has no place");
        if kind == "row" {
            continue;
        }
        assert!(["stat", "timeseries", "heatmap"].contains(&kind), "{title}: {kind}");
        assert_eq!(panel["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
        let targets = panel["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title} has no query");
        for target in targets {
            assert_eq!(target["datasource"]["uid"], "${DS_PROMETHEUS}", "{title}");
            let names = metric_names(target["expr"].as_str().unwrap());
            assert!(!names.is_empty(), "{title}: a query that names no metric of the crate");
            for name in names {
                assert!(
                    emitted.contains(&name),
                    "{title}: {name} is not emitted; emitted: {emitted:?}"
                );
                queried.insert(name);
            }
        }
    }
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        for name in metric_names(variable["definition"].as_str().unwrap_or_default()) {
            assert!(emitted.contains(&name), "variable {}: {name}", variable["name"]);
        }
    }
    // What the dashboard is for: each of these is on it.
    for metric in [
        "tracked_users",
        "inactive_users",
        "erasures_total",
        "failing_erasures",
        "stuck_erasures_total",
        "prune_pass_duration_seconds_bucket",
        "claim_duration_seconds_bucket",
        "store_call_duration_seconds_bucket",
        "writers",
        "oldest_heartbeat_age_seconds",
        "unwritten_interactions",
        "audit_listed_total",
        "audit_untracked_total",
        "audit_residue_total",
        "audit_deferred_total",
    ] {
        assert!(queried.contains(&format!("{PREFIX}{metric}")), "no panel shows {metric}");
    }
}

/// Five users interact; user 1 blocks the bot and user 2 opts out, whose erasure fails once
/// (the retention's first eraser fails its first call): the scenario both metric tests
/// start from.
async fn five_users_one_gone_one_opting_out(retention: &Retention) {
    for user in 1..=5 {
        retention.note_interaction(UserId(user)).await;
    }
    retention.flush().await.unwrap();
    assert!(retention.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap());
    let outcome = retention.erase_user(UserId(2)).await.unwrap();
    assert!(matches!(outcome, OptOutOutcome::Retrying { .. }), "{outcome:?}");
}
