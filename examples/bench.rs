//! Benchmarks: `cargo run --release -p teloxide-retention-tests --example bench` (add `-- --help` for options).
//!
//! Starts its own `redis-server` on a unix socket in a temp dir and measures, side by side in
//! one run (figures are ratios because shared machines are noisy):
//!
//! 1. per-update overhead of the layer versus the bare handler tree (in-process dispatch),
//!    for active (cached) users, next to an empty dptree wrapper (the floor of any layer),
//!    and for first-seen users that need a Redis write;
//! 2. write throughput of distinct users versus a raw pipelined `ZADD` loop and
//!    `redis-benchmark` on the same server;
//! 3. prune throughput at 1M users (10% due) versus the naive strategy, with a no-op eraser
//!    and with an eraser that deletes one Redis key per user, and the slowest script call;
//! 4. Redis memory per tracked user and process memory per cached user;
//! 5. prune time as the number of tracked users grows with the same 10% share;
//! 6. latency: the slowest Redis call of each kind (each script, each command) at 5M tracked
//!    users, under interactions, a pass at the largest batch, opt-outs, gone marks and previews;
//! 9. every store on one workload: Redis, and with the `sqlite` feature `SqliteStore` on a
//!    file on disk, with `postgres` too `PostgresStore` on a server of its own: interactions
//!    written through the layer's group commit, bytes per user, a prune pass at 1M tracked
//!    users (10% due) with a no-op eraser, gone marks, opt-outs, status reads and a preview,
//!    the slowest call (Redis's slow log) or statement (sqlx's per-statement events) of each
//!    kind, the naive strategy on the same data, and adoption and the audit's lookups
//!    (users/s, and on SQL the statements per 500-user chunk);
//! 11. the census: probes per second it drives against the fake Bot API (the pruner on one
//!     core: a current-thread runtime), Redis time and memory per probed user, and the
//!     process's memory growth over bases of two sizes (flat: it keeps nothing per user);
//!     with the `sqlite` feature, the same rate on a SQLite file;
//! 7. with `--cluster` (it starts six more servers): write throughput and prune rate on a
//!    Redis Cluster of three masters (one replica each, the default 24 shards) next to one
//!    server in the same run, both over TCP, the spread of users over the masters, and each
//!    node's and the bench's CPU time per phase (which side was the bottleneck).
//!
//! The bot adaptor's cost per request is measured by `examples/bench_adaptor.rs`, which
//! counts allocations with an instrumented allocator that would skew the figures here.
//!
//! Prints a table and one JSON line per figure. Nothing here is asserted: read the table.

#[path = "../tests/common/redis_server.rs"]
#[allow(dead_code, unreachable_pub)]
mod redis_server;

// The test servers' helper also starts TLS servers, with certificates from here.
#[path = "../tests/common/certs.rs"]
#[allow(dead_code, unreachable_pub)]
mod certs;

#[path = "../tests/common/cluster.rs"]
#[allow(dead_code, unreachable_pub)]
mod cluster;

#[cfg(feature = "postgres")]
#[path = "../tests/common/postgres.rs"]
#[allow(dead_code, unreachable_pub)]
mod postgres_server;

/// The store's scripts by name, to name the ones in the slow log.
#[path = "../src/store/redis/scripts.rs"]
#[allow(dead_code, unreachable_pub)]
mod scripts;

use std::hint::black_box;
use std::ops::ControlFlow;
use std::time::{Duration, Instant};

use clap::Parser;
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::json;
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::prelude::*;
use teloxide::types::{Me, UserId};
use teloxide_retention::{
    Adoption, BoxError, Census, Erasure, GonePolicy, GoneReason, Listing, ManualClock, Probes,
    RedisKeysEraser, RedisStore, Retention, RetentionBuilder, UntrackedUsers, erase_fn,
};

const DAY_MS: i64 = 24 * 3600 * 1000;
/// The largest batch size `RetentionBuilder::batch_size` accepts.
const MAX_BATCH_SIZE: usize = 500;
const NOW: i64 = 1_767_225_600_000; // 2026-01-01
/// Rounds of the active-user overhead figure, in each of its processes.
const ROUNDS: usize = 21;
/// Fresh processes of the active-user overhead figure: where the heap and the code land in
/// memory moves a process's figures by a point or two, whichever variant runs.
const OVERHEAD_PROCESSES: usize = 5;

/// Benchmarks of teloxide-retention against a real redis-server.
#[derive(Parser)]
struct Args {
    /// Tracked users for the prune and memory figures.
    #[arg(long, default_value_t = 1_000_000)]
    users: u64,
    /// Updates of the first-seen figure (a quarter of them per round of the active one).
    #[arg(long, default_value_t = 200_000)]
    updates: u64,
    /// Tracked-user counts of the scaling figure.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000u64, 1_000_000, 5_000_000])]
    scaling: Vec<u64>,
    /// Tracked users of the latency figure.
    #[arg(long, default_value_t = 5_000_000)]
    latency_users: u64,
    /// Small sizes, for a quick look (not for publishing figures).
    #[arg(long)]
    quick: bool,
    /// Also run section 7 on a Redis Cluster of three masters with a replica each.
    #[arg(long)]
    cluster: bool,
    /// Users written and pruned in section 7.
    #[arg(long, default_value_t = 300_000)]
    cluster_users: u64,
    /// Users adopted and audited on each store in section 9.
    #[arg(long, default_value_t = 100_000)]
    store_adopt_users: u64,
    /// Users adopted, and erased users with a receipt, in section 10 (each store).
    #[arg(long, default_value_t = 1_000_000)]
    scale_users: u64,
    /// Idle users of the census in section 11, the smaller and the larger base.
    #[arg(long, value_delimiter = ',', default_values_t = [10_000u64, 100_000])]
    census_users: Vec<u64>,
    /// Run only these sections (1 to 6, 9 to 11; 7 with --cluster; 8 is an alias of 10);
    /// all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<u8>,
    /// Internal: records USERS users at URL in this fresh process and prints its memory
    /// growth (section 4 runs it, so that memory freed by other sections cannot hide it).
    #[arg(long, hide = true, num_args = 2, value_names = ["URL", "USERS"])]
    memory_probe: Option<Vec<String>>,
    /// Internal: measures the active-user overhead against URL in this fresh process and
    /// prints it (section 1 runs it several times).
    #[arg(long, hide = true, value_name = "URL")]
    overhead_probe: Option<String>,
    /// Internal: runs the census over USERS idle users on STORE, probing through the fake
    /// Bot API at API, in this fresh process, and prints what it did (section 11 runs it).
    #[arg(long, hide = true, num_args = 3, value_names = ["STORE", "API", "USERS"])]
    census_probe: Option<Vec<String>>,
}

struct Report {
    rows: Vec<(String, String, String)>,
    json: Vec<serde_json::Value>,
}

impl Report {
    fn add(&mut self, name: &str, value: f64, unit: &str, target: Option<(&str, bool)>) {
        let shown = if value >= 1000.0 {
            format!("{value:.0}")
        } else if value >= 100.0 {
            format!("{value:.1}")
        } else {
            format!("{value:.2}")
        };
        let verdict = match target {
            Some((t, met)) => format!("{t} {}", if met { "✓" } else { "✗ missed" }),
            None => String::new(),
        };
        self.rows.push((name.to_owned(), format!("{shown} {unit}"), verdict));
        self.json.push(json!({
            "figure": name, "value": value, "unit": unit,
            "target": target.map(|t| t.0), "met": target.map(|t| t.1),
        }));
        println!("  {name:<58} {shown:>12} {unit}");
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let mut args = Args::parse();
    if args.quick {
        args.users = 100_000;
        args.updates = 50_000;
        args.scaling = vec![10_000, 100_000];
        args.latency_users = 200_000;
        args.cluster_users = 50_000;
        args.store_adopt_users = 20_000;
        args.scale_users = 50_000;
        args.census_users = vec![2_000, 10_000];
    }
    if let Some(probe) = &args.memory_probe {
        return memory_probe(&probe[0], probe[1].parse()?).await;
    }
    if let Some(url) = &args.overhead_probe {
        return overhead_probe(url, args.updates / 4).await;
    }
    if let Some(probe) = &args.census_probe {
        let (store, api) = (probe[0].clone(), probe[1].clone());
        let run = census_run(store, api, probe[2].parse()?)?;
        println!(
            "{}",
            json!({ "probed": run.probed, "found_gone": run.found_gone,
                    "seconds": run.seconds, "rss_growth": run.rss_growth })
        );
        return Ok(());
    }
    let server = redis_server::RedisServer::start();
    let url = server.url();
    let client = redis::Client::open(url.as_str())?;
    // The naive strategy reads a million members in one reply: no response timeout here.
    let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
    let mut raw = client.get_multiplexed_async_connection_with_config(&config).await?;
    let version: String = redis::cmd("INFO").arg("server").query_async(&mut raw).await?;
    let version =
        version.lines().find_map(|l| l.strip_prefix("redis_version:")).unwrap_or("?").to_owned();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| c.lines().find_map(|l| l.strip_prefix("model name\t: ").map(str::to_owned)))
        .unwrap_or_else(|| "unknown CPU".into());
    println!(
        "teloxide-retention benchmark: {cpu}, {} cores, redis {version} on a unix socket\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut report = Report { rows: Vec::new(), json: Vec::new() };

    let run = |section: u8| args.only.is_empty() || args.only.contains(&section);
    if run(1) {
        overhead(&url, &mut raw, &args, &mut report).await?;
    }
    if run(2) {
        write_throughput(&server, &url, &mut raw, &args, &mut report).await?;
    }
    if run(3) {
        prune(&url, &mut raw, &args, &mut report).await?;
    }
    if run(4) {
        memory(&url, &mut raw, &args, &mut report).await?;
    }
    if run(5) {
        scaling(&url, &mut raw, &args, &mut report).await?;
    }
    if run(6) {
        latency(&url, &mut raw, &args, &mut report).await?;
    }
    if run(9) {
        stores(&url, &mut raw, &args, &mut report).await?;
    }
    // Section 8 (adoption and the audit of 1M users on Redis) is part of section 10 now.
    if run(10) || run(8) {
        at_scale(&url, &mut raw, &args, &mut report).await?;
    }
    if run(11) {
        census(&url, &mut raw, &args, &mut report).await?;
    }
    if args.cluster && run(7) {
        on_cluster(&args, &mut report).await?;
    }

    println!("\n| Figure | Value | Target |\n| --- | --- | --- |");
    for (name, value, target) in &report.rows {
        println!("| {name} | {value} | {target} |");
    }
    println!();
    for line in &report.json {
        println!("{line}");
    }
    Ok(())
}

async fn flush(raw: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<()> {
    redis::cmd("FLUSHALL").query_async(raw).await
}

fn builder(store: RedisStore, clock: &ManualClock) -> RetentionBuilder {
    Retention::builder(store)
        .inactive_after(Duration::from_millis(90 * DAY_MS as u64))
        .clock(clock.clone())
}

fn message(user: u64, id: u64) -> Update {
    let json = json!({
        "update_id": id,
        "message": {
            "message_id": id, "date": 1_767_225_600, "text": "hello",
            "from": { "id": user, "is_bot": false, "first_name": "U" },
            "chat": { "id": user, "first_name": "U", "type": "private" },
        }
    });
    serde_json::from_str(&json.to_string()).expect("update")
}

fn me() -> Me {
    serde_json::from_value(json!({
        "id": 1, "is_bot": true, "first_name": "B", "username": "bench_bot",
        "can_join_groups": true, "can_read_all_group_messages": false,
        "supports_inline_queries": false, "has_main_web_app": false,
    }))
    .expect("me")
}

/// The bot's own tree for the overhead figure: a couple of branches and a cheap endpoint.
fn tree() -> UpdateHandler<BoxError> {
    dptree::entry().branch(Update::filter_callback_query().endpoint(|| async { Ok(()) })).branch(
        Update::filter_message().endpoint(|msg: Message| async move {
            black_box(msg.id);
            Ok(())
        }),
    )
}

/// A handler node that only runs `inner`: what wrapping costs in dptree, before any work.
/// It runs `inner` as the layer does, the cheapest way: to its end, then passes an update
/// `inner` let through on (handing `inner` the boxed continuation would cost an allocation).
fn empty_wrapper(inner: UpdateHandler<BoxError>) -> UpdateHandler<BoxError> {
    let description = inner.description().clone();
    let sig = inner.sig().clone();
    dptree::from_fn_with_description(
        description,
        move |deps, cont| {
            let inner = inner.clone();
            async move {
                match inner
                    .execute(deps, |deps| std::future::ready(ControlFlow::Continue(deps)))
                    .await
                {
                    ControlFlow::Continue(deps) => cont(deps).await,
                    done => done,
                }
            }
        },
        sig,
    )
}

async fn dispatch_all(
    handler: &UpdateHandler<BoxError>,
    updates: &[Update],
    concurrency: usize,
) -> Duration {
    let bot = Bot::new("1:bench");
    let me = me();
    let started = Instant::now();
    futures_util::stream::iter(updates)
        .map(|u| {
            let deps = dptree::deps![u.clone(), bot.clone(), me.clone()];
            async move { black_box(handler.dispatch(deps).await) }
        })
        .buffer_unordered(concurrency)
        .for_each(|_| async {})
        .await;
    started.elapsed()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

async fn zadd_calls(raw: &mut redis::aio::MultiplexedConnection) -> redis::RedisResult<u64> {
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(raw).await?;
    Ok(stats
        .lines()
        .find_map(|l| l.strip_prefix("cmdstat_zadd:calls="))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0))
}

/// 1. Per-update overhead.
async fn overhead(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    println!("1. per-update overhead (in-process dispatch, same tree with and without the layer)");
    flush(raw).await?;

    // (a) Active users, in fresh processes (see `overhead_probe`); each figure is the
    // median over the processes, and the spread shows how far one process can be off.
    let mut runs = Vec::new();
    for _ in 0..OVERHEAD_PROCESSES {
        let mut probe = vec!["--overhead-probe".to_owned(), url.to_owned()];
        if args.quick {
            probe.push("--quick".to_owned());
        }
        runs.push(run_probe(probe).await?);
    }
    let figure =
        |name: &str| median(runs.iter().map(|r| r[name].as_f64().unwrap_or(f64::NAN)).collect());
    let cost = figure("cost");
    let costs = runs.iter().filter_map(|r| r["cost"].as_f64());
    let (lowest, highest) = costs.fold((f64::MAX, f64::MIN), |(l, h), c| (l.min(c), h.max(c)));
    report.add("active users: bare tree", figure("bare"), "updates/s", None);
    report.add("active users: with the layer", figure("layered"), "updates/s", None);
    report.add("active users: layer overhead", cost, "%", Some(("≤ 5 %", cost <= 5.0)));
    report.add("active users: of which an empty dptree wrapper", figure("floor"), "%", None);
    report.add("active users: layer time per update", figure("nanos"), "ns", None);
    report.add("active users: layer overhead, lowest process", lowest, "%", None);
    report.add("active users: layer overhead, highest process", highest, "%", None);

    // (b) First-seen users: every update needs a Redis write; 256 dispatched concurrently.
    let clock = ManualClock::at_unix_ms(NOW);
    let retention = builder(RedisStore::open(url).await?, &clock).build()?;
    let wrapped = retention.wrap(tree());
    let fresh: Vec<Update> = (0..args.updates).map(|i| message(10_000_000 + i, i)).collect();
    let b = dispatch_all(&tree(), &fresh, 256).await;
    let before = zadd_calls(raw).await?;
    let w = dispatch_all(&wrapped, &fresh, 256).await;
    let writes = zadd_calls(raw).await? - before;
    report.add(
        "first-seen users: bare tree",
        args.updates as f64 / b.as_secs_f64(),
        "updates/s",
        None,
    );
    report.add(
        "first-seen users: with the layer",
        args.updates as f64 / w.as_secs_f64(),
        "updates/s",
        None,
    );
    report.add(
        "first-seen users: updates per ZADD round trip",
        args.updates as f64 / writes.max(1) as f64,
        "updates",
        Some(("> 1 (shared)", writes < args.updates)),
    );
    Ok(())
}

/// 2. Write throughput against the Redis ceiling.
async fn write_throughput(
    server: &redis_server::RedisServer,
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    println!("2. write throughput of distinct users");
    let n = args.users;
    flush(raw).await?;
    // The ceiling: single-member ZADDs, pipelined 1,000 per round trip, 4 pipelines in flight.
    let cpu = redis_cpu_us(raw).await?;
    let started = Instant::now();
    futures_util::stream::iter(
        (0..n).collect::<Vec<_>>().chunks(1000).map(<[u64]>::to_vec).collect::<Vec<_>>(),
    )
    .map(|chunk| {
        let mut conn = raw.clone();
        async move {
            let mut pipe = redis::pipe();
            for user in chunk {
                pipe.zadd("ceiling", user, NOW).ignore();
            }
            pipe.query_async::<()>(&mut conn).await
        }
    })
    .buffer_unordered(4)
    .for_each(|r| async move { r.expect("pipeline") })
    .await;
    let ceiling = n as f64 / started.elapsed().as_secs_f64();
    let raw_cpu = (redis_cpu_us(raw).await? - cpu) / n as f64;
    report.add("raw pipelined ZADD (same client)", ceiling, "members/s", None);
    report.add("raw pipelined ZADD: Redis CPU per member", raw_cpu, "µs", None);
    let benchmark = redis_benchmark(server, n);
    if let Some(rps) = benchmark {
        report.add("redis-benchmark ZADD -P 64", rps, "members/s", None);
    }
    let ceiling = ceiling.max(benchmark.unwrap_or(0.0));

    flush(raw).await?;
    let clock = ManualClock::at_unix_ms(NOW);
    let retention = builder(RedisStore::open(url).await?, &clock).build()?;
    let cpu = redis_cpu_us(raw).await?;
    let own = own_cpu_us();
    let calls = zadd_calls(raw).await?;
    let started = Instant::now();
    futures_util::stream::iter(0..n)
        .map(|user| {
            let retention = retention.clone();
            async move { retention.note_interaction(UserId(1 + user)).await }
        })
        .buffer_unordered(1024)
        .for_each(|_| async {})
        .await;
    let ours = n as f64 / started.elapsed().as_secs_f64();
    let layer_cpu = (redis_cpu_us(raw).await? - cpu) / n as f64;
    let own = (own_cpu_us() - own) / n as f64;
    let calls = zadd_calls(raw).await? - calls;
    report.add("layer writes: members per ZADD", n as f64 / calls.max(1) as f64, "members", None);
    report.add("layer writes: Redis CPU per member", layer_cpu, "µs", None);
    report.add("layer writes: the bot process's CPU per member", own, "µs", None);
    let share = ours / ceiling * 100.0;
    report.add("layer writes of distinct users (1,024 concurrent)", ours, "members/s", None);
    report.add("layer writes / Redis ceiling", share, "%", Some(("≥ 50 %", share >= 50.0)));
    Ok(())
}

fn redis_benchmark(server: &redis_server::RedisServer, n: u64) -> Option<f64> {
    let out = std::process::Command::new("redis-benchmark")
        .arg("-s")
        .arg(server.socket())
        .args(["-n", &n.to_string(), "-P", "64", "-r", "100000000", "-q"])
        .args(["ZADD", "benchmark", "__rand_int__", "__rand_int__"])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let rps = text.rsplit(':').next()?.split_whitespace().next()?.parse().ok();
    // The last "requests per second" figure on the line.
    rps.or_else(|| text.split_whitespace().find_map(|w| w.parse().ok()))
}

/// Fills `seen` with `n` users, `n / 10` of them past the threshold; with `keys`, also one
/// bot-data key per due user.
async fn fill(
    raw: &mut redis::aio::MultiplexedConnection,
    n: u64,
    keys: bool,
) -> Result<(), BoxError> {
    flush(raw).await?;
    let chunks: Vec<Vec<u64>> =
        (1..=n).collect::<Vec<_>>().chunks(5000).map(<[u64]>::to_vec).collect();
    futures_util::stream::iter(chunks)
        .map(|chunk| {
            let mut conn = raw.clone();
            async move {
                let mut pipe = redis::pipe();
                let items: Vec<(i64, u64)> = chunk
                    .iter()
                    .map(|&u| (if u % 10 == 0 { NOW - 100 * DAY_MS } else { NOW - DAY_MS }, u))
                    .collect();
                pipe.zadd_multiple("{retention}:seen", &items).ignore();
                if keys {
                    for &u in chunk.iter().filter(|u| *u % 10 == 0) {
                        pipe.set(format!("data:{u}"), "x").ignore();
                    }
                }
                pipe.query_async::<()>(&mut conn).await
            }
        })
        .buffer_unordered(4)
        .for_each(|r| async move { r.expect("fill") })
        .await;
    Ok(())
}

/// One pass: its time, the users erased, the slowest script call and the total time Redis
/// spent in scripts.
struct Pass {
    took: Duration,
    erased: u64,
    worst: Duration,
    in_scripts: Duration,
}

/// Runs one pass. Script time comes from `INFO commandstats`; the slowest call from the
/// slow log at 100 µs (a lower threshold would also log, and slow down, every command inside
/// the scripts).
async fn timed_pass(
    retention: &Retention,
    raw: &mut redis::aio::MultiplexedConnection,
) -> Result<Pass, BoxError> {
    redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(raw).await?;
    redis::cmd("SLOWLOG").arg("RESET").query_async::<()>(raw).await?;
    let report = retention.prune_once().await?;
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(raw).await?;
    let total: i64 = stats
        .lines()
        .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
        .filter_map(|l| l.split("usec=").nth(1)?.split(',').next()?.parse::<i64>().ok())
        .sum();
    let log: redis::Value = redis::cmd("SLOWLOG").arg("GET").arg(100_000).query_async(raw).await?;
    let mut worst = 100i64; // an upper bound when no call reached the log's threshold
    if let redis::Value::Array(entries) = log {
        for entry in entries {
            let redis::Value::Array(fields) = entry else { continue };
            let is_script = matches!(fields.get(3), Some(redis::Value::Array(args))
                if matches!(args.first(), Some(redis::Value::BulkString(c)) if c.eq_ignore_ascii_case(b"evalsha") || c.eq_ignore_ascii_case(b"eval")));
            if let (true, Some(redis::Value::Int(us))) = (is_script, fields.get(2)) {
                worst = worst.max(*us);
            }
        }
    }
    Ok(Pass {
        took: report.elapsed,
        erased: report.erased,
        worst: Duration::from_micros(worst.unsigned_abs()),
        in_scripts: Duration::from_micros(total.unsigned_abs()),
    })
}

/// The strategy most bots use: load everyone, compare in the client, delete one by one.
async fn naive(
    raw: &mut redis::aio::MultiplexedConnection,
    keys: bool,
) -> Result<(Duration, u64), BoxError> {
    let started = Instant::now();
    let all: Vec<(String, f64)> = raw.zrange_withscores("{retention}:seen", 0, -1).await?;
    let cutoff = (NOW - 90 * DAY_MS) as f64;
    let mut erased = 0;
    for (user, score) in all {
        if score < cutoff {
            if keys {
                raw.del::<_, ()>(format!("data:{user}")).await?;
            }
            raw.zrem::<_, _, ()>("{retention}:seen", &user).await?;
            erased += 1;
        }
    }
    Ok((started.elapsed(), erased))
}

/// 3. Prune throughput.
async fn prune(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    let n = args.users;
    println!("3. prune throughput: {n} tracked users, 10% past the threshold");
    slowlog(raw, 100, 100_000).await?;
    let clock = ManualClock::at_unix_ms(NOW);

    for keys in [false, true] {
        let label = if keys { "eraser deleting one key per user" } else { "no-op eraser" };
        fill(raw, n, keys).await?;
        let store = RedisStore::open(url).await?;
        let retention = if keys {
            let conn = redis::aio::ConnectionManager::new(redis::Client::open(url)?).await?;
            builder(store, &clock)
                .erase_with(RedisKeysEraser::new(conn, ["data:{user}"])?)
                .build()?
        } else {
            builder(store, &clock)
                .erase_with(erase_fn("noop", |_: Erasure| async { Ok::<_, BoxError>(()) }))
                .build()?
        };
        let Pass { took: ours, erased, worst, in_scripts } = timed_pass(&retention, raw).await?;
        assert_eq!(erased, n / 10, "the pass erased what was due");
        fill(raw, n, keys).await?;
        let (theirs, naive_erased) = naive(raw, keys).await?;
        assert_eq!(naive_erased, n / 10);
        let rate = erased as f64 / ours.as_secs_f64();
        let speedup = theirs.as_secs_f64() / ours.as_secs_f64();
        report.add(&format!("prune pass, {label}"), ours.as_secs_f64() * 1000.0, "ms", None);
        report.add(
            &format!("prune rate, {label}"),
            rate,
            "users/s",
            (!keys).then_some(("≥ 200,000", rate >= 200_000.0)),
        );
        report.add(&format!("naive strategy, {label}"), theirs.as_secs_f64() * 1000.0, "ms", None);
        report.add(
            &format!("speed-up over naive, {label}"),
            speedup,
            "×",
            Some(("≥ 20 ×", speedup >= 20.0)),
        );
        report.add(
            &format!("Redis time in scripts, {label}"),
            in_scripts.as_secs_f64() * 1000.0,
            "ms",
            None,
        );
        let worst_ms = worst.as_secs_f64() * 1000.0;
        report.add(
            &format!("slowest script call, {label}"),
            worst_ms,
            "ms",
            Some(("≤ 10 ms", worst_ms <= 10.0)),
        );
    }
    slowlog(raw, 10_000, 128).await?;
    Ok(())
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// The CPU time this process has used so far (user and system, every thread), in µs.
fn own_cpu_us() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // After the command name in parentheses: utime and stime are fields 14 and 15.
    let fields: Vec<&str> =
        stat.rsplit_once(')').map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Clock ticks of 10 ms (USER_HZ is 100 on Linux).
    (ticks(11) + ticks(12)) * 10_000.0
}

/// The CPU time Redis has used so far (user and system, its main thread included), in µs.
async fn redis_cpu_us(raw: &mut redis::aio::MultiplexedConnection) -> Result<f64, BoxError> {
    let info: String = redis::cmd("INFO").arg("cpu").query_async(raw).await?;
    let field = |name: &str| -> f64 {
        info.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((field("used_cpu_user:") + field("used_cpu_sys:")) * 1e6)
}

async fn used_memory(raw: &mut redis::aio::MultiplexedConnection) -> Result<u64, BoxError> {
    let info: String = redis::cmd("INFO").arg("memory").query_async(raw).await?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("used_memory:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

/// 4. Memory.
async fn memory(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    let n = args.users;
    println!("4. memory at {n} tracked users");
    flush(raw).await?;
    let redis_before = used_memory(raw).await?;
    let probe = run_probe(vec!["--memory-probe".to_owned(), url.to_owned(), n.to_string()]).await?;
    let redis_after = used_memory(raw).await?;
    let tracked: u64 = redis::cmd("ZCARD").arg("{retention}:seen").query_async(raw).await?;
    assert_eq!(tracked, n, "the probe tracked every user");
    let per_user = (redis_after - redis_before) as f64 / n as f64;
    report.add(
        "Redis memory per tracked user",
        per_user,
        "bytes",
        Some(("≤ 110", per_user <= 110.0)),
    );
    let grown = probe["rss_growth"].as_f64().unwrap_or(0.0);
    let cached = probe["cached"].as_f64().unwrap_or(0.0);
    report.add("process memory per cached user", grown / cached.max(1.0), "bytes", None);
    Ok(())
}

/// The active-user overhead, measured in this fresh process: 1,000 users, already written
/// within the resolution, with the system clock, as a bot has them. The bare tree, the
/// tree under an empty dptree wrapper (the floor any layer pays: one more handler node and
/// its future) and the tree under the layer run in short rounds, in rotating order, so that
/// drift of a shared machine hits all three alike; each figure is the median over the
/// rounds. Prints one JSON object.
async fn overhead_probe(url: &str, updates: u64) -> Result<(), BoxError> {
    let live = Retention::builder(RedisStore::open(url).await?)
        .inactive_after(Duration::from_millis(90 * DAY_MS as u64))
        .build()?;
    let layered = live.wrap(tree());
    let active: Vec<Update> = (0..updates).map(|i| message(1 + i % 1000, i)).collect();
    dispatch_all(&layered, &active[..1000], 1).await;
    let variants = [&tree(), &empty_wrapper(tree()), &layered];
    let mut secs = [Vec::new(), Vec::new(), Vec::new()];
    for round in 0..ROUNDS {
        for k in 0..variants.len() {
            let v = (round + k) % variants.len();
            secs[v].push(dispatch_all(variants[v], &active, 1).await.as_secs_f64());
        }
    }
    let overhead = |v: usize| {
        let ratios = secs[v].iter().zip(&secs[0]).map(|(w, b)| w / b).collect();
        (median(ratios) - 1.0) * 100.0
    };
    let rate = |v: usize| active.len() as f64 / median(secs[v].clone());
    // The layer's cost in time per update: what a bot pays whatever its handlers do.
    let added = secs[2].iter().zip(&secs[0]).map(|(w, b)| (w - b) * 1e9).collect();
    let nanos = median(added) / active.len() as f64;
    println!(
        "{}",
        json!({
            "bare": rate(0), "layered": rate(2), "floor": overhead(1), "cost": overhead(2),
            "nanos": nanos,
        })
    );
    Ok(())
}

/// Runs this binary with `args` in a fresh process and parses the JSON it prints.
async fn run_probe(args: Vec<String>) -> Result<serde_json::Value, BoxError> {
    let exe = std::env::current_exe()?;
    let output =
        tokio::task::spawn_blocking(move || std::process::Command::new(exe).args(args).output())
            .await??;
    if !output.status.success() {
        return Err(format!("probe failed: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

/// The child process of section 4: a fresh process, so its resident memory grows by what
/// the cache of `n` users takes (plus the runtime's and the connection's buffers).
async fn memory_probe(url: &str, n: u64) -> Result<(), BoxError> {
    let clock = ManualClock::at_unix_ms(NOW);
    let retention = builder(RedisStore::open(url).await?, &clock).build()?;
    retention.note_interaction(UserId(1)).await; // start the writer and the connection first
    let rss_before = rss_bytes();
    futures_util::stream::iter(0..n)
        .map(|user| {
            let retention = retention.clone();
            // Realistic ids: Telegram user ids have 9 to 10 digits.
            async move { retention.note_interaction(UserId(5_000_000_000 + user * 7)).await }
        })
        .buffer_unordered(1024)
        .for_each(|_| async {})
        .await;
    let rss_growth = rss_bytes().saturating_sub(rss_before);
    // User 1 above is not one of the `n`; remove it so that the parent counts exactly `n`.
    let mut raw = redis::Client::open(url)?.get_multiplexed_async_connection().await?;
    let _: u64 = raw.zrem("{retention}:seen", 1).await?;
    let cached = retention.stats().cached_users - 1;
    println!("{}", json!({ "rss_growth": rss_growth, "cached": cached }));
    Ok(())
}

/// 5. Scaling.
async fn scaling(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    println!("5. scaling: prune time as tracked users grow (10% due, no-op eraser)");
    let clock = ManualClock::at_unix_ms(NOW);
    for &n in &args.scaling {
        fill(raw, n, false).await?;
        let retention = builder(RedisStore::open(url).await?, &clock)
            .erase_with(erase_fn("noop", |_: Erasure| async { Ok::<_, BoxError>(()) }))
            .build()?;
        let Pass { took, erased, in_scripts, .. } = timed_pass(&retention, raw).await?;
        report.add(&format!("prune pass at {n} users"), took.as_secs_f64() * 1000.0, "ms", None);
        report.add(
            &format!("time per erased user at {n} users"),
            took.as_secs_f64() * 1e6 / erased.max(1) as f64,
            "µs",
            None,
        );
        // Where the time goes: inside Redis' scripts, or in the client and round trips.
        report.add(
            &format!("Redis script time per erased user at {n} users"),
            in_scripts.as_secs_f64() * 1e6 / erased.max(1) as f64,
            "µs",
            None,
        );
    }
    flush(raw).await?;
    Ok(())
}

/// Sets what the slow log keeps: calls over `micros` µs, at most `entries` of them.
async fn slowlog(
    raw: &mut redis::aio::MultiplexedConnection,
    micros: i64,
    entries: u64,
) -> redis::RedisResult<()> {
    redis::cmd("CONFIG")
        .arg("SET")
        .arg("slowlog-log-slower-than")
        .arg(micros)
        .arg("slowlog-max-len")
        .arg(entries)
        .query_async(raw)
        .await
}

/// Section 6, latency: the slowest call of each kind. Redis runs one call at a time, so the
/// slowest call is how long every other client (other replicas, the bot's own data) waits.
///
/// The slow log keeps calls over 100 µs; a lower threshold would also log every command
/// inside the scripts and slow them down. Kinds with no call over 100 µs are listed apart.
async fn latency(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    let n = args.latency_users;
    println!("6. latency: the slowest call of each kind at {n} tracked users");
    fill(raw, n, false).await?;
    slowlog(raw, 100, 1_000_000).await?;
    redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(raw).await?;
    redis::cmd("SLOWLOG").arg("RESET").query_async::<()>(raw).await?;

    let clock = ManualClock::at_unix_ms(NOW);
    let retention = builder(RedisStore::open(url).await?, &clock)
        .batch_size(MAX_BATCH_SIZE)
        .erase_with(erase_fn("noop", |_: Erasure| async { Ok::<_, BoxError>(()) }))
        .build()?;
    // Interactions through the group commit: returning users (already in `seen`) and new ones.
    let returning = (n / 20).max(1000);
    futures_util::stream::iter((1..=returning).chain(n + 1..=n + returning))
        .map(|user| {
            let retention = retention.clone();
            async move { retention.note_interaction(UserId(user)).await }
        })
        .buffer_unordered(1024)
        .for_each(|_| async {})
        .await;
    retention.flush().await?;
    // Gone marks, opt-outs (each a claim of one user and its finish), status reads and a
    // gone user's return.
    for user in (10..10_000).step_by(100) {
        retention.mark_gone(UserId(user + 1), GoneReason::Blocked).await?;
        retention.erase_user(UserId(user + 2)).await?;
        retention.status(UserId(user + 3)).await?;
    }
    retention.note_interaction(UserId(11)).await;
    retention.flush().await?;
    // Previews and a whole pass at the largest batch (the 10 % due, claimed 5,000 at a time).
    retention.preview(1000).await?;
    let pass = retention.prune_once().await?;
    retention.preview(1000).await?;
    retention.tracked_users().await?;
    retention.shutdown().await?;

    let worst = slow_calls(raw).await?;
    println!("  (pass erased {} users in batches of {MAX_BATCH_SIZE})", pass.erased);
    for (kind, calls) in &worst {
        let ms = calls.iter().max().copied().unwrap_or(0) as f64 / 1000.0;
        report.add(
            &format!("slowest {kind} call at {n} users"),
            ms,
            "ms",
            Some(("≤ 5 ms", ms <= 5.0)),
        );
        let logged: Vec<f64> = calls.iter().map(|&us| us as f64 / 1000.0).collect();
        let count = logged.len();
        println!("    ({count} calls over 0.1 ms, median of those {:.2} ms)", median(logged));
    }
    let stats: String = redis::cmd("INFO").arg("commandstats").query_async(raw).await?;
    let quick: Vec<&str> = stats
        .lines()
        .filter_map(|l| l.strip_prefix("cmdstat_")?.split(':').next())
        .filter(|c| {
            let command = c.split('|').next().unwrap_or(c);
            !worst.contains_key(&c.replace('|', " ").to_uppercase())
                && !["evalsha", "eval", "slowlog", "config", "info", "flushall"].contains(&command)
        })
        .collect();
    println!("  every call of these commands took under 0.1 ms: {}", quick.join(", "));
    println!("  scripts not listed above took under 0.1 ms per call, or did not run");
    slowlog(raw, 10_000, 128).await?;
    flush(raw).await?;
    Ok(())
}

/// The slow log's calls by kind (a script by its file name, else the command), in µs; the
/// commands a script runs and the bench's own commands are left out.
async fn slow_calls(
    raw: &mut redis::aio::MultiplexedConnection,
) -> Result<std::collections::BTreeMap<String, Vec<i64>>, BoxError> {
    let log: redis::Value = redis::cmd("SLOWLOG").arg("GET").arg(-1).query_async(raw).await?;
    let names: std::collections::HashMap<String, &str> =
        scripts::ALL.iter().map(|(name, script)| (script.get_hash().to_owned(), *name)).collect();
    let mut worst: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
    let redis::Value::Array(entries) = log else { return Err("SLOWLOG GET: not an array".into()) };
    for entry in entries {
        let redis::Value::Array(fields) = entry else { continue };
        let (Some(redis::Value::Int(us)), Some(redis::Value::Array(argv))) =
            (fields.get(2), fields.get(3))
        else {
            continue;
        };
        // Commands run inside a script are logged with the pseudo client `?:0`; they are
        // part of their script's call.
        if matches!(fields.get(4), Some(redis::Value::BulkString(c)) if c.starts_with(b"?")) {
            continue;
        }
        let word = |i: usize| match argv.get(i) {
            Some(redis::Value::BulkString(b)) => String::from_utf8_lossy(b).to_lowercase(),
            _ => String::new(),
        };
        let kind = match word(0).as_str() {
            "evalsha" | "eval" => match names.get(&word(1)) {
                Some(name) => format!("{name}.lua"),
                None => continue, // not ours
            },
            "script" => format!("SCRIPT {}", word(1).to_uppercase()),
            "slowlog" | "config" | "info" | "flushall" => continue, // the bench's own
            command => command.to_uppercase(),
        };
        worst.entry(kind).or_default().push(*us);
    }
    Ok(worst)
}

/// Section 7: one server and a three-master cluster, each written and pruned the same way
/// through the crate.
async fn on_cluster(args: &Args, report: &mut Report) -> Result<(), BoxError> {
    let n = args.cluster_users;
    let cores = std::thread::available_parallelism().map_or(0, |c| c.get());
    println!(
        "7. one server vs a Redis Cluster of 3 masters (+3 replicas, 24 shards), {n} users, \
         {cores} cores for the bench and every server"
    );
    let single = redis_server::RedisServer::start_tcp(&[]);
    let topology = cluster::ClusterTopology::start();
    let stores = [
        ("one server", RedisStore::open(&single.url()).await?, vec![single.url()]),
        ("3-master cluster", RedisStore::open_cluster(topology.urls()).await?, topology.urls()),
    ];
    for (label, store, nodes) in stores {
        let clock = ManualClock::at_unix_ms(NOW);
        let retention = builder(store, &clock)
            .erase_with(erase_fn("noop", |_: Erasure| async { Ok::<_, BoxError>(()) }))
            .build()?;
        let cpu = CpuSnapshot::take(&nodes).await?;
        let started = Instant::now();
        futures_util::stream::iter(0..n)
            .map(|user| {
                let retention = retention.clone();
                async move { retention.note_interaction(UserId(5_000_000_000 + user * 7)).await }
            })
            .buffer_unordered(1024)
            .for_each(|_| async {})
            .await;
        retention.flush().await?;
        let wall = started.elapsed();
        let writes = n as f64 / wall.as_secs_f64();
        report.add(&format!("layer writes of distinct users, {label}"), writes, "members/s", None);
        cpu.report(&nodes, wall, &format!("writes, {label}"), report).await?;
        if label != "one server" {
            for (port, members) in topology.seen_per_master() {
                let share = members as f64 * 100.0 / n as f64;
                report.add(&format!("users on the master at port {port}"), share, "%", None);
            }
        }
        clock.advance(Duration::from_millis(91 * DAY_MS as u64));
        let cpu = CpuSnapshot::take(&nodes).await?;
        let pass = retention.prune_once().await?;
        assert_eq!(pass.erased, n, "the pass erased every user");
        let rate = n as f64 / pass.elapsed.as_secs_f64();
        report.add(&format!("prune rate, no-op eraser, {label}"), rate, "users/s", None);
        cpu.report(&nodes, pass.elapsed, &format!("prune, {label}"), report).await?;
        retention.shutdown().await?;
    }
    Ok(())
}

/// CPU seconds used so far by each Redis node (`INFO cpu`: user + system) and by this
/// process (`/proc/self/stat`), to tell which side of a phase was the bottleneck.
struct CpuSnapshot {
    nodes: Vec<f64>,
    client: f64,
}

impl CpuSnapshot {
    async fn take(nodes: &[String]) -> Result<Self, BoxError> {
        let mut used = Vec::with_capacity(nodes.len());
        for url in nodes {
            let mut conn =
                redis::Client::open(url.as_str())?.get_multiplexed_async_connection().await?;
            let info: String = redis::cmd("INFO").arg("cpu").query_async(&mut conn).await?;
            let field = |name: &str| -> f64 {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0.0)
            };
            used.push(field("used_cpu_user") + field("used_cpu_sys"));
        }
        Ok(Self { nodes: used, client: client_cpu_seconds() })
    }

    /// Reports, for the phase since this snapshot, each node's and the bench's CPU time as
    /// a share of the phase's wall time (100 % = one core kept busy).
    async fn report(
        &self,
        nodes: &[String],
        wall: Duration,
        phase: &str,
        report: &mut Report,
    ) -> Result<(), BoxError> {
        let now = Self::take(nodes).await?;
        let share = |seconds: f64| seconds * 100.0 / wall.as_secs_f64().max(1e-9);
        for ((url, before), after) in nodes.iter().zip(&self.nodes).zip(&now.nodes) {
            let port = url.rsplit(':').next().unwrap_or(url).trim_end_matches('/');
            let figure = format!("Redis CPU during {phase}, node :{port}");
            report.add(&figure, share(after - before), "% of a core", None);
        }
        let client = share(now.client - self.client);
        report.add(&format!("bench process CPU during {phase}"), client, "% of a core", None);
        Ok(())
    }
}

/// This process's CPU time (user + system), in seconds.
fn client_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): utime and stime are 14 and 15,
    // in clock ticks (100 per second on Linux).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks(11) + ticks(12)) / 100.0
}

/// The slowest call in the slow log (ms), the bench's own commands aside.
async fn slowest_call_ms(raw: &mut redis::aio::MultiplexedConnection) -> Result<f64, BoxError> {
    let log: redis::Value = redis::cmd("SLOWLOG").arg("GET").arg(-1).query_async(raw).await?;
    let redis::Value::Array(entries) = log else { return Err("SLOWLOG GET: not an array".into()) };
    let mut slowest = 0;
    for entry in entries {
        let redis::Value::Array(fields) = entry else { continue };
        let (Some(redis::Value::Int(us)), Some(redis::Value::Array(argv))) =
            (fields.get(2), fields.get(3))
        else {
            continue;
        };
        let own = matches!(argv.first(), Some(redis::Value::BulkString(c))
            if [&b"SLOWLOG"[..], b"CONFIG", b"INFO", b"FLUSHALL"].iter().any(|o| c.eq_ignore_ascii_case(o)));
        if !own {
            slowest = slowest.max(*us);
        }
    }
    Ok(slowest as f64 / 1000.0)
}

/// Section 9's user ids: ten digits, as Telegram's are today.
const FIRST_ID: u64 = 1_000_000_000;

/// Section 9, every store on one workload: Redis (the bench's server), and with their
/// features `SqliteStore` on a file on disk (not a tmpfs: each commit syncs, as a bot's
/// would) and `PostgresStore` on a server of the bench's own (from `initdb`, with `fsync`
/// and synchronous commits on, as in production).
async fn stores(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    flush(raw).await?;
    slowlog(raw, 100, 1_000_000).await?;
    redis::cmd("SLOWLOG").arg("RESET").query_async::<()>(raw).await?;
    let before = used_memory(raw).await?;
    let redis = Probe::Redis { raw: raw.clone(), before };
    one_store("Redis", RedisStore::open(url).await?, redis, args, report).await?;
    slowlog(raw, 10_000, 128).await?;
    flush(raw).await?;
    #[cfg(feature = "sqlite")]
    {
        let slowest = statements::Slowest::install();
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite:{}", dir.path().join("bench.db").display());
        let store = teloxide_retention::SqliteStore::open(&url).await?;
        let probe = Probe::Sql { url: url.clone(), slowest: slowest.clone() };
        one_store("SQLite", store, probe, args, report).await?;
        #[cfg(feature = "postgres")]
        {
            let server = postgres_server::PostgresServer::start_durable();
            let store = teloxide_retention::PostgresStore::open(&server.url()).await?;
            let probe = Probe::Sql { url: server.url(), slowest };
            one_store("PostgreSQL", store, probe, args, report).await?;
        }
    }
    #[cfg(not(feature = "sqlite"))]
    println!("9. SQLite and PostgreSQL: skipped (run with --features sqlite,postgres)");
    Ok(())
}

/// What the census did over `n` idle users, in its own process.
struct CensusRun {
    probed: u64,
    found_gone: u64,
    seconds: f64,
    rss_growth: u64,
}

/// Runs the census over `n` users idle 40 days on `store` (a Redis or `sqlite:` URL),
/// probing through the fake Bot API at `api`, pass after pass until a round completes: on
/// a current-thread runtime of its own (the pruner on one core; the fake API serves from
/// the parent process, so this process's memory is the census's).
fn census_run(store: String, api: String, n: u64) -> Result<CensusRun, BoxError> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        rt.block_on(async move {
            let bot = Bot::new("12345:TEST-TOKEN").set_api_url(api.parse()?);
            let builder = if store.starts_with("sqlite:") {
                #[cfg(feature = "sqlite")]
                let builder =
                    Retention::builder(teloxide_retention::SqliteStore::open(&store).await?);
                #[cfg(not(feature = "sqlite"))]
                let builder: RetentionBuilder = return Err("the sqlite feature is off".into());
                builder
            } else {
                Retention::builder(RedisStore::open(&store).await?)
            };
            let clock = ManualClock::at_unix_ms(NOW);
            let retention = builder
                .inactive_after(Duration::from_millis(90 * DAY_MS as u64))
                .clock(clock.clone())
                .probe_with(bot, Probes::new().one_every(Duration::from_micros(1)))
                .census(Census::new().per_pass(Duration::from_secs(3600)))
                .prune_every(Duration::from_secs(24 * 3600))
                .build()?;
            let since = chrono::DateTime::from_timestamp_millis(NOW - 40 * DAY_MS);
            retention.adopt((1..=n).map(|u| (UserId(u), since)), &Adoption::new()).await?;
            if !store.starts_with("sqlite:") {
                // Redis's script time from here on is the census's (and the passes').
                let mut raw =
                    redis::Client::open(store.as_str())?.get_multiplexed_async_connection().await?;
                redis::cmd("CONFIG").arg("RESETSTAT").query_async::<()>(&mut raw).await?;
            }
            let rss_before = rss_bytes();
            let started = Instant::now();
            let (mut probed, mut found_gone) = (0, 0);
            loop {
                let pass = retention.prune_once().await?;
                probed += pass.census_probed;
                found_gone += pass.census_found_gone;
                if pass.census_rounds > 0 {
                    break;
                }
            }
            let seconds = started.elapsed().as_secs_f64();
            let rss_growth = rss_bytes().saturating_sub(rss_before);
            retention.shutdown().await?;
            Ok(CensusRun { probed, found_gone, seconds, rss_growth })
        })
    })
    .join()
    .map_err(|_| "the census thread panicked")?
}

/// Section 11's figures of one store: the census over `n` users in a fresh process.
async fn census_in_process(store: &str, api: &str, n: u64) -> Result<CensusRun, BoxError> {
    let args = vec!["--census-probe".to_owned(), store.to_owned(), api.to_owned(), n.to_string()];
    let out = run_probe(args).await?;
    let num = |k: &str| out[k].as_f64().unwrap_or(0.0);
    Ok(CensusRun {
        probed: num("probed") as u64,
        found_gone: num("found_gone") as u64,
        seconds: num("seconds"),
        rss_growth: num("rss_growth") as u64,
    })
}

/// 11. The census.
async fn census(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    println!("11. the census over {:?} idle users", args.census_users);
    let api = teloxide_retention::testing::FakeBotApi::start().await;
    let largest = args.census_users.iter().copied().max().unwrap_or(0);
    for user in (1..=largest).step_by(100) {
        api.fail_chat_with(user as i64, teloxide_retention::testing::TelegramError::Deactivated);
    }
    for &n in &args.census_users {
        flush(raw).await?;
        api.clear();
        let run = census_in_process(url, &api.url(), n).await?;
        assert_eq!((run.probed, run.found_gone), (n, n.div_ceil(100)));
        let stats: String = redis::cmd("INFO").arg("commandstats").query_async(raw).await?;
        let script_usec: f64 = stats
            .lines()
            .filter(|l| l.starts_with("cmdstat_evalsha:") || l.starts_with("cmdstat_eval:"))
            .filter_map(|l| l.split(',').find_map(|f| f.strip_prefix("usec=")))
            .filter_map(|v| v.parse::<f64>().ok())
            .sum();
        // The census's field of each probed user in `{ns}:probes`.
        let probes_bytes: u64 = redis::cmd("MEMORY")
            .arg("USAGE")
            .arg("{retention}:probes")
            .arg("SAMPLES")
            .arg(0)
            .query_async(raw)
            .await?;
        let name = |what: &str| format!("census, Redis, {n} idle: {what}");
        report.add(&name("probes/s (one core)"), n as f64 / run.seconds, "probes/s", None);
        // Every script of the passes (claims, the walk, the answers, the marks).
        report.add(&name("Redis script time per probed user"), script_usec / n as f64, "µs", None);
        report.add(
            &name("Redis memory per probed user"),
            probes_bytes as f64 / n as f64,
            "bytes",
            None,
        );
        report.add(
            &name("process memory growth"),
            run.rss_growth as f64 / (1024.0 * 1024.0),
            "MiB",
            None,
        );
    }
    #[cfg(feature = "sqlite")]
    {
        let n = args.census_users[0];
        let dir = tempfile::tempdir()?;
        let store = format!("sqlite:{}", dir.path().join("census.db").display());
        api.clear();
        let run = census_in_process(&store, &api.url(), n).await?;
        assert_eq!(run.probed, n);
        report.add(
            &format!("census, SQLite, {n} idle: probes/s (one core)"),
            n as f64 / run.seconds,
            "probes/s",
            None,
        );
    }
    Ok(())
}

/// How section 9 looks inside a store: its size, its slowest calls, and the naive loop's
/// own access to it.
enum Probe {
    /// `before`: `used_memory` before the first user.
    Redis { raw: redis::aio::MultiplexedConnection, before: u64 },
    /// `url`: the naive loop's own connection (sqlx's `Any`, ids written into the
    /// statements); `slowest`: every statement's time, from sqlx's events.
    #[cfg(feature = "sqlite")]
    Sql { url: String, slowest: statements::Slowest },
}

/// One store at `args.users` tracked users, 10% due: interactions through the group commit,
/// bytes per user, a pass with a no-op eraser, opt-outs, gone marks, status reads and
/// previews, the slowest call or statement of each kind, then the naive loop on the same
/// data (load all, compare, delete one by one, timed over 5,000 deletions and extrapolated).
async fn one_store(
    name: &str,
    store: impl teloxide_retention::Store + Clone,
    mut probe: Probe,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    let n = args.users;
    println!("9. {name}: {n} tracked users, 10% past the threshold");
    let clock = ManualClock::at_unix_ms(NOW - 100 * DAY_MS);
    let retention = Retention::builder(store.clone())
        .inactive_after(Duration::from_millis((90 * DAY_MS) as u64))
        .gone_policy(GonePolicy::EraseAfter(Duration::from_secs(7 * 24 * 3600)))
        .without_commands()
        .clock(clock.clone())
        .max_buffered_interactions(usize::MAX / 2)
        .erase_with(erase_fn("noop", |_: Erasure| async { Ok::<_, BoxError>(()) }))
        .build()?;
    // The tables are made before anything is timed.
    retention.tracked_users().await?;
    #[cfg(feature = "sqlite")]
    if let Probe::Sql { slowest, .. } = &probe {
        slowest.reset();
    }
    // 10% long ago, then 90% now, 1,024 at a time through the group commit.
    let record = |users: std::ops::Range<u64>| {
        let retention = retention.clone();
        async move {
            futures_util::stream::iter(users)
                .map(|u| {
                    let retention = retention.clone();
                    async move { retention.note_interaction(UserId(FIRST_ID + u)).await }
                })
                .buffer_unordered(1024)
                .collect::<Vec<_>>()
                .await
        }
    };
    record(0..n / 10).await;
    clock.set_unix_ms(NOW);
    let started = Instant::now();
    record(n / 10..n).await;
    retention.flush().await?;
    let took = started.elapsed();
    let label = |what: &str| format!("{name}: {what}");
    let rate = (n - n / 10) as f64 / took.as_secs_f64();
    report.add(&label("interactions written"), rate, "users/s", None);
    match &mut probe {
        Probe::Redis { raw, before } => {
            let bytes = used_memory(raw).await?.saturating_sub(*before);
            report.add(&label("bytes per tracked user"), bytes as f64 / n as f64, "bytes", None);
        }
        #[cfg(feature = "sqlite")]
        Probe::Sql { url, slowest } => {
            slowest.pause(true);
            let bytes = sql::bytes(url).await?;
            slowest.pause(false);
            report.add(&label("bytes per tracked user"), bytes as f64 / n as f64, "bytes", None);
        }
    }

    let pass = retention.prune_once().await?;
    assert_eq!(pass.erased, n / 10, "the pass erased what was due");
    let rate = pass.erased as f64 / pass.elapsed.as_secs_f64();
    report.add(&label("prune pass, no-op eraser"), pass.elapsed.as_secs_f64() * 1000.0, "ms", None);
    let goal = match name {
        "PostgreSQL" => Some(("≥ 50,000", rate >= 50_000.0)),
        "Redis" => Some(("≥ 200,000", rate >= 200_000.0)),
        _ => None,
    };
    report.add(&label("prune rate, no-op eraser"), rate, "users/s", goal);
    // The other calls a bot makes: gone marks, opt-outs (a claim of one user and its
    // finish), status reads, previews.
    for user in (n / 10..n / 10 + 10_000).step_by(100) {
        retention.mark_gone(UserId(FIRST_ID + user + 1), GoneReason::Blocked).await?;
        retention.erase_user(UserId(FIRST_ID + user + 2)).await?;
        retention.status(UserId(FIRST_ID + user + 3)).await?;
    }
    retention.preview(1000).await?;
    retention.flush().await?;
    retention.shutdown().await?;
    // The slowest call (Redis) or statement (SQL) of each kind; kinds whose every call took
    // under 0.1 ms are named apart, as the slow log keeps only calls over 0.1 ms.
    let worst: Vec<(String, f64, String)> = match &mut probe {
        Probe::Redis { raw, .. } => slow_calls(raw)
            .await?
            .into_iter()
            .map(|(kind, calls)| {
                (kind, calls.into_iter().max().unwrap_or(0) as f64 / 1000.0, String::new())
            })
            .collect(),
        #[cfg(feature = "sqlite")]
        Probe::Sql { slowest, .. } => {
            slowest.pause(true);
            slowest.take()
        }
    };
    let mut quick = Vec::new();
    for (kind, ms, statement) in worst {
        if ms >= 0.1 {
            report.add(&label(&format!("slowest {kind}")), ms, "ms", None);
            if !statement.is_empty() {
                println!("    ({})", statement.chars().take(160).collect::<String>());
            }
        } else {
            quick.push(kind);
        }
    }
    if !quick.is_empty() {
        println!("  {name}: every call took under 0.1 ms: {}", quick.join(", "));
    }

    // The naive strategy on the same data, the due users put back for it.
    let old = NOW - 100 * DAY_MS;
    let cutoff = NOW - 90 * DAY_MS;
    let (load, per_user, due) = match &mut probe {
        Probe::Redis { raw, .. } => {
            let items: Vec<(i64, u64)> = (0..n / 10).map(|u| (old, FIRST_ID + u)).collect();
            for chunk in items.chunks(5000) {
                raw.zadd_multiple::<_, _, _, ()>("{retention}:seen", chunk).await?;
            }
            let started = Instant::now();
            let all: Vec<(String, f64)> = raw.zrange_withscores("{retention}:seen", 0, -1).await?;
            let due: Vec<String> =
                all.into_iter().filter(|(_, at)| *at < cutoff as f64).map(|(u, _)| u).collect();
            let load = started.elapsed();
            let sample = due.len().min(5_000);
            let started = Instant::now();
            for user in &due[..sample] {
                raw.zrem::<_, _, ()>("{retention}:seen", user).await?;
            }
            (load, started.elapsed().as_secs_f64() / sample as f64, due.len())
        }
        #[cfg(feature = "sqlite")]
        Probe::Sql { url, .. } => sql::naive(url, n, old, cutoff).await?,
    };
    let naive = load.as_secs_f64() + per_user * due as f64;
    report.add(&label("naive strategy (extrapolated)"), naive * 1000.0, "ms", None);
    let speedup = naive / pass.elapsed.as_secs_f64();
    report.add(&label("speed-up over naive"), speedup, "×", Some(("≥ 20 ×", speedup >= 20.0)));
    adopt_on(name, store, args.store_adopt_users, &probe, report).await
}

/// Section 9's adoption on one store, in a namespace of its own: `n` users a bot held
/// before, adopted with a last activity each (users/s), then an audit of an eraser listing
/// the same users, which finds every one tracked (users/s: the audit's lookups). On the SQL
/// stores also the statements each 500-user chunk ran (sqlx's events; the store's
/// background statements of those seconds included).
async fn adopt_on(
    name: &str,
    store: impl teloxide_retention::Store,
    n: u64,
    probe: &Probe,
    report: &mut Report,
) -> Result<(), BoxError> {
    const FIRST: u64 = 2_000_000_000;
    const PAGE: u64 = 1_000;
    let lister = erase_fn("table", |_: Erasure| async { Ok::<_, BoxError>(()) }).list_with(
        move |cursor: Option<String>| async move {
            let from: u64 = cursor.map_or(Ok(FIRST), |c| c.parse())?;
            let to = (from + PAGE).min(FIRST + n);
            let next = (to < FIRST + n).then(|| to.to_string());
            Ok::<_, BoxError>(Listing::page((from..to).map(UserId), next))
        },
    );
    let clock = ManualClock::at_unix_ms(NOW);
    let retention = Retention::builder(store)
        .namespace("adoption")
        .inactive_after(Duration::from_millis((90 * DAY_MS) as u64))
        .without_commands()
        .clock(clock)
        .erase_with(lister)
        .build()?;
    retention.tracked_users().await?;
    let label = |what: &str| format!("{name}: {what}");
    let chunks = n.div_ceil(500) as f64;
    let statements = |probe: &Probe| -> Option<f64> {
        match probe {
            Probe::Redis { .. } => None,
            #[cfg(feature = "sqlite")]
            Probe::Sql { slowest, .. } => Some(slowest.statements() as f64),
        }
    };
    #[cfg(feature = "sqlite")]
    if let Probe::Sql { slowest, .. } = probe {
        slowest.reset();
    }
    let users = (FIRST..FIRST + n).map(|u| {
        let at = chrono::DateTime::from_timestamp_millis(NOW - (u as i64 % 365) * DAY_MS);
        (UserId(u), at)
    });
    let started = Instant::now();
    let adopted = retention.adopt(users, &Adoption::new()).await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(adopted.newly_tracked, n);
    let goal = (name == "PostgreSQL").then_some(("≥ 50,000", rate >= 50_000.0));
    report.add(&label(&format!("adopt {n} users")), rate, "users/s", goal);
    if let Some(count) = statements(probe) {
        report.add(&label("adopt: statements per 500 users"), count / chunks, "", None);
    }
    #[cfg(feature = "sqlite")]
    if let Probe::Sql { slowest, .. } = probe {
        slowest.reset();
    }
    let started = Instant::now();
    let audited = retention.audit(UntrackedUsers::Report).await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!((audited.erasers[0].listed, audited.erasers[0].untracked), (n, 0));
    report.add(&label(&format!("audit {n} listed users")), rate, "users/s", None);
    if let Some(count) = statements(probe) {
        report.add(&label("audit: statements per 500 users"), count / chunks, "", None);
    }
    #[cfg(feature = "sqlite")]
    if let Probe::Sql { slowest, .. } = probe {
        slowest.pause(true);
    }
    retention.shutdown().await?;
    Ok(())
}

/// Section 10, adoption and the audit at scale on every store: N users adopted with a last
/// activity each (users/s, the slowest store call), then N receipts of erased users (written
/// straight into the store, as a bot's past erasures left them), then an audit of an eraser
/// listing the N tracked users and the N erased ones (every erased one is residue, looked
/// up by its keyed hash): users/s, the slowest store call, and the peak growth of the
/// process's memory while it runs (it must not grow with the users or the receipts).
async fn at_scale(
    url: &str,
    raw: &mut redis::aio::MultiplexedConnection,
    args: &Args,
    report: &mut Report,
) -> Result<(), BoxError> {
    let n = args.scale_users;
    println!("10. adoption and the audit of {n} users and {n} receipts on every store");
    flush(raw).await?;
    slowlog(raw, 100, 100_000).await?;
    let redis = Probe::Redis { raw: raw.clone(), before: 0 };
    scale_on("Redis", RedisStore::open(url).await?, n, &redis, report).await?;
    slowlog(raw, 10_000, 128).await?;
    flush(raw).await?;
    #[cfg(feature = "sqlite")]
    {
        let slowest = statements::Slowest::install();
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite:{}", dir.path().join("bench.db").display());
        let store = teloxide_retention::SqliteStore::open(&url).await?;
        let probe = Probe::Sql { url: url.clone(), slowest: slowest.clone() };
        scale_on("SQLite", store, n, &probe, report).await?;
        #[cfg(feature = "postgres")]
        {
            let server = postgres_server::PostgresServer::start_durable();
            let store = teloxide_retention::PostgresStore::open(&server.url()).await?;
            let probe = Probe::Sql { url: server.url(), slowest };
            scale_on("PostgreSQL", store, n, &probe, report).await?;
        }
    }
    #[cfg(not(feature = "sqlite"))]
    println!("10. SQLite and PostgreSQL: skipped (run with --features sqlite,postgres)");
    Ok(())
}

/// The receipt key of section 10, and a user's tag under it (the crate's `ReceiptKey::tag`:
/// hex HMAC-SHA256 of the decimal id).
const SCALE_KEY: &[u8; 32] = b"section 10's receipt key, 32 b.!";

fn scale_tag(user: u64) -> String {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(SCALE_KEY).expect("any length");
    mac.update(user.to_string().as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// The slowest store call since the last reset, in ms: Redis's slow log, or the slowest SQL
/// statement of any kind.
async fn slowest_store_ms(probe: &Probe) -> Result<f64, BoxError> {
    match probe {
        Probe::Redis { raw, .. } => slowest_call_ms(&mut raw.clone()).await,
        #[cfg(feature = "sqlite")]
        Probe::Sql { slowest, .. } => {
            Ok(slowest.take().into_iter().map(|(_, ms, _)| ms).fold(0.0, f64::max))
        }
    }
}

async fn reset_slowest(probe: &Probe) -> Result<(), BoxError> {
    match probe {
        Probe::Redis { raw, .. } => {
            redis::cmd("SLOWLOG").arg("RESET").query_async::<()>(&mut raw.clone()).await?;
        }
        #[cfg(feature = "sqlite")]
        Probe::Sql { slowest, .. } => {
            slowest.take();
            slowest.reset();
        }
    }
    Ok(())
}

/// Section 10 on one store, in the namespace `scale`.
async fn scale_on(
    name: &str,
    store: impl teloxide_retention::Store,
    n: u64,
    probe: &Probe,
    report: &mut Report,
) -> Result<(), BoxError> {
    const TRACKED: u64 = 2_000_000_000;
    const ERASED: u64 = 3_000_000_000;
    const PAGE: u64 = 1_000;
    // The tracked users, then the erased ones, 1,000 a page.
    let lister = erase_fn("table", |_: Erasure| async { Ok::<_, BoxError>(()) }).list_with(
        move |cursor: Option<String>| async move {
            let at: u64 = cursor.map_or(Ok(0), |c| c.parse())?;
            let to = (at + PAGE).min(2 * n);
            let users = (at..to).map(|i| UserId(if i < n { TRACKED + i } else { ERASED + i - n }));
            let next = (to < 2 * n).then(|| to.to_string());
            Ok::<_, BoxError>(Listing::page(users, next))
        },
    );
    let clock = ManualClock::at_unix_ms(NOW);
    let key = teloxide_retention::ReceiptKey::new(*SCALE_KEY)?;
    let retention = Retention::builder(store)
        .namespace("scale")
        .inactive_after(Duration::from_millis((90 * DAY_MS) as u64))
        .without_commands()
        .clock(clock)
        .receipts(key, Duration::from_millis((60 * DAY_MS) as u64))
        .erase_with(lister)
        .build()?;
    retention.tracked_users().await?;
    let label = |what: &str| format!("{name} at scale: {what}");

    reset_slowest(probe).await?;
    let users = (TRACKED..TRACKED + n).map(|u| {
        let at = chrono::DateTime::from_timestamp_millis(NOW - (u as i64 % 365) * DAY_MS);
        (UserId(u), at)
    });
    let started = Instant::now();
    let adopted = retention.adopt(users, &Adoption::new()).await?;
    let rate = n as f64 / started.elapsed().as_secs_f64();
    assert_eq!(adopted.newly_tracked, n);
    let goal = match name {
        "Redis" => Some((">= 200k", rate >= 200_000.0)),
        "PostgreSQL" => Some((">= 50k", rate >= 50_000.0)),
        _ => None,
    };
    report.add(&label(&format!("adopt {n} users")), rate, "users/s", goal);
    let slowest = slowest_store_ms(probe).await?;
    let goal = (name == "Redis").then_some(("<= 5", slowest <= 5.0));
    report.add(&label("adopt: slowest store call"), slowest, "ms", goal);

    // Past erasures' receipts, a day old.
    let at = NOW - DAY_MS;
    match probe {
        Probe::Redis { raw, .. } => {
            let mut raw = raw.clone();
            let before = used_memory(&mut raw).await?;
            for chunk in (ERASED..ERASED + n).collect::<Vec<_>>().chunks(1_000) {
                let mut pipe = redis::pipe();
                for &user in chunk {
                    let tag = scale_tag(user);
                    pipe.cmd("XADD")
                        .arg("{scale}:receipts")
                        .arg("*")
                        .arg(&[("h", tag.as_str()), ("r", "o"), ("e", "[]"), ("a", "1")])
                        .arg("t")
                        .arg(at)
                        .ignore();
                    pipe.cmd("ZADD").arg("{scale}:erased").arg(at * 8).arg(tag).ignore();
                }
                pipe.query_async::<()>(&mut raw).await?;
            }
            // As a finish writes them: in the index already, and read past by it.
            let top: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
                .arg("{scale}:receipts")
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(1)
                .query_async(&mut raw)
                .await?;
            let last = top.ids.first().map(|e| e.id.clone()).unwrap_or_default();
            redis::cmd("HSET")
                .arg("{scale}:meta")
                .arg("erased_index")
                .arg(last)
                .query_async::<()>(&mut raw)
                .await?;
            let index: u64 = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg("{scale}:erased")
                .arg("SAMPLES")
                .arg(0)
                .query_async(&mut raw)
                .await?;
            let all = used_memory(&mut raw).await?.saturating_sub(before);
            report.add(
                &label("bytes per receipt (stream + index)"),
                all as f64 / n as f64,
                "B",
                None,
            );
            report.add(
                &label("bytes per receipt in the index"),
                index as f64 / n as f64,
                "B",
                None,
            );
        }
        #[cfg(feature = "sqlite")]
        Probe::Sql { url, slowest } => {
            slowest.pause(true);
            let tags: Vec<String> = (ERASED..ERASED + n).map(scale_tag).collect();
            sql::seed_receipts(url, "scale", &tags, at).await?;
        }
    }

    reset_slowest(probe).await?;
    let rss_before = rss_bytes();
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(rss_before));
    let sampler = tokio::spawn({
        let peak = std::sync::Arc::clone(&peak);
        async move {
            loop {
                peak.fetch_max(rss_bytes(), std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let started = Instant::now();
    let audited = retention.audit(UntrackedUsers::Report).await?;
    let rate = (2 * n) as f64 / started.elapsed().as_secs_f64();
    sampler.abort();
    let growth = peak.load(std::sync::atomic::Ordering::Relaxed).saturating_sub(rss_before);
    let part = &audited.erasers[0];
    assert_eq!((part.listed, part.tracked, part.residue), (2 * n, n, n), "{part:?}");
    let goal = (name == "Redis").then_some((">= 200k", rate >= 200_000.0));
    report.add(&label(&format!("audit {} listed, {n} receipts", 2 * n)), rate, "users/s", goal);
    let slowest = slowest_store_ms(probe).await?;
    let goal = (name == "Redis").then_some(("<= 5", slowest <= 5.0));
    report.add(&label("audit: slowest store call"), slowest, "ms", goal);
    report.add(
        &label("audit: peak process memory growth"),
        growth as f64 / (1024.0 * 1024.0),
        "MiB",
        None,
    );
    #[cfg(feature = "sqlite")]
    if let Probe::Sql { slowest, .. } = probe {
        slowest.pause(true);
    }
    retention.shutdown().await?;
    Ok(())
}

/// The SQL side of section 9's probes, through sqlx's `Any` driver.
#[cfg(feature = "sqlite")]
mod sql {
    use std::time::{Duration, Instant};

    use teloxide_retention::BoxError;

    use super::FIRST_ID;

    /// The `seen` table's size with its indexes (SQLite: the whole file after a checkpoint,
    /// the write-ahead log's pages included).
    pub(super) async fn bytes(url: &str) -> Result<i64, BoxError> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url).await?;
        if url.starts_with("sqlite:") {
            sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&pool).await?;
            let pages: i64 = sqlx::query_scalar("PRAGMA page_count").fetch_one(&pool).await?;
            let page: i64 = sqlx::query_scalar("PRAGMA page_size").fetch_one(&pool).await?;
            return Ok(pages * page);
        }
        let sql = "SELECT CAST(pg_total_relation_size('\"retention.seen\"') AS BIGINT)";
        Ok(sqlx::query_scalar(sql).fetch_one(&pool).await?)
    }

    /// The naive loop: the due users put back, then load all, compare, and one `DELETE` per
    /// commit, as a bot's loop would. Returns the load's time, the time per deletion over
    /// the first 5,000, and how many were due.
    /// Writes receipts of `tags`, erased `at` (an opt-out each), into `namespace`'s
    /// receipts table, 500 rows a statement.
    pub(super) async fn seed_receipts(
        url: &str,
        namespace: &str,
        tags: &[String],
        at: i64,
    ) -> Result<(), BoxError> {
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(url).await?;
        for chunk in tags.chunks(500) {
            let values: Vec<String> =
                chunk.iter().map(|t| format!("('{t}', {at}, 'o', '[]', 1)")).collect();
            let sql = format!(
                "INSERT INTO \"{namespace}.receipt\" (tag, at, reason, erasers, attempts) VALUES {}",
                values.join(", ")
            );
            sqlx::query(&sql).execute(&pool).await?;
        }
        pool.close().await;
        Ok(())
    }

    pub(super) async fn naive(
        url: &str,
        n: u64,
        old: i64,
        cutoff: i64,
    ) -> Result<(Duration, f64, usize), BoxError> {
        let pool = sqlx::AnyPool::connect(url).await?;
        for chunk in (0..n / 10).collect::<Vec<_>>().chunks(500) {
            let values: Vec<String> =
                chunk.iter().map(|u| format!("({}, {old})", FIRST_ID + u)).collect();
            let sql =
                format!("INSERT INTO \"retention.seen\" (uid, at) VALUES {}", values.join(", "));
            sqlx::query(&sql).execute(&pool).await?;
        }
        let started = Instant::now();
        let all: Vec<(i64, i64)> =
            sqlx::query_as("SELECT uid, at FROM \"retention.seen\"").fetch_all(&pool).await?;
        let due: Vec<i64> = all.iter().filter(|(_, at)| *at < cutoff).map(|(u, _)| *u).collect();
        let load = started.elapsed();
        let sample = due.len().min(5_000);
        let started = Instant::now();
        for user in &due[..sample] {
            sqlx::query(&format!("DELETE FROM \"retention.seen\" WHERE uid = {user}"))
                .execute(&pool)
                .await?;
        }
        Ok((load, started.elapsed().as_secs_f64() / sample as f64, due.len()))
    }
}

/// The slowest execution of each kind of SQL statement, from the `tracing` event sqlx
/// emits for every statement (target `sqlx::query`, field `elapsed_secs`). A kind is the
/// statement's verb and its first table (`INSERT seen`, `DELETE lease`), or its first
/// words where it names none (`BEGIN`, the server's clock).
#[cfg(feature = "sqlite")]
mod statements {
    use std::collections::BTreeMap;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    use tracing::field::{Field, Visit};
    use tracing::subscriber::Interest;
    use tracing::{Event, Metadata, Subscriber};
    use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

    const TARGET: &str = "sqlx::query";

    /// Each kind's slowest time (ms) and statement; whether statements are recorded now
    /// (not while the bench runs its own).
    #[derive(Clone, Default)]
    pub(super) struct Slowest {
        worst: Arc<Mutex<BTreeMap<String, (f64, String)>>>,
        paused: Arc<AtomicBool>,
        /// Statements recorded since the last reset.
        count: Arc<AtomicU64>,
    }

    impl Slowest {
        /// Installs the recorder as the process's subscriber (only sqlx's statement events
        /// are enabled: nothing else pays for it).
        pub(super) fn install() -> Self {
            let slowest = Self::default();
            let subscriber = tracing_subscriber::registry().with(slowest.clone());
            tracing::subscriber::set_global_default(subscriber).expect("one subscriber");
            slowest
        }

        /// Forgets what was recorded and records from now on.
        pub(super) fn reset(&self) {
            self.worst.lock().unwrap().clear();
            self.count.store(0, Ordering::SeqCst);
            self.pause(false);
        }

        /// Statements recorded since the last reset.
        pub(super) fn statements(&self) -> u64 {
            self.count.load(Ordering::SeqCst)
        }

        /// Stops (`true`) or resumes recording, around the bench's own statements.
        pub(super) fn pause(&self, paused: bool) {
            self.paused.store(paused, Ordering::SeqCst);
        }

        /// The slowest time (ms) and statement of each kind so far, and starts again.
        pub(super) fn take(&self) -> Vec<(String, f64, String)> {
            let worst = std::mem::take(&mut *self.worst.lock().unwrap());
            worst.into_iter().map(|(kind, (ms, sql))| (kind, ms, sql)).collect()
        }
    }

    /// The kind of `sql`: its verb and first table, else its first three words.
    fn kind(sql: &str) -> String {
        let sql = sql.trim();
        let verb = sql.split_whitespace().next().unwrap_or("").to_uppercase();
        let table = sql
            .split('"')
            .skip(1)
            .step_by(2)
            .find_map(|quoted| quoted.rsplit_once('.').map(|(_, t)| t.to_owned()));
        let count = if sql.contains("COUNT(") { " COUNT" } else { "" };
        match table {
            Some(table) => format!("{verb}{count} {table}"),
            None if sql.contains("clock_timestamp") => "SELECT clock_timestamp()".to_owned(),
            None => sql.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
        }
    }

    #[derive(Default)]
    struct Fields {
        summary: String,
        statement: String,
        secs: f64,
    }

    impl Visit for Fields {
        fn record_str(&mut self, field: &Field, value: &str) {
            match field.name() {
                "summary" => self.summary = value.to_owned(),
                "db.statement" => self.statement = value.to_owned(),
                _ => {}
            }
        }
        fn record_f64(&mut self, field: &Field, value: f64) {
            if field.name() == "elapsed_secs" {
                self.secs = value;
            }
        }
        fn record_debug(&mut self, _: &Field, _: &dyn std::fmt::Debug) {}
    }

    impl<S: Subscriber> Layer<S> for Slowest {
        fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
            if metadata.target() == TARGET { Interest::always() } else { Interest::never() }
        }

        fn enabled(&self, metadata: &Metadata<'_>, _: Context<'_, S>) -> bool {
            metadata.target() == TARGET
        }

        fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
            let mut fields = Fields::default();
            event.record(&mut fields);
            // sqlx gives the whole statement only where it is longer than the summary.
            let sql = if fields.statement.trim().is_empty() {
                &fields.summary
            } else {
                &fields.statement
            };
            if self.paused.load(Ordering::SeqCst) {
                return;
            }
            self.count.fetch_add(1, Ordering::SeqCst);
            let ms = fields.secs * 1000.0;
            let mut slowest = self.worst.lock().unwrap();
            let worst = slowest.entry(kind(sql)).or_default();
            if ms > worst.0 {
                *worst = (ms, sql.split_whitespace().collect::<Vec<_>>().join(" "));
            }
        }
    }
}
