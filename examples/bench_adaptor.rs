//! The `Retained` bot adaptor's cost on the success path:
//! `cargo run --release -p teloxide-retention-tests --example bench_adaptor` (add `-- --quick` for a short run).
//!
//! Side by side in one process, against a fake Bot API on loopback (the same local server
//! the tests use):
//!
//! 1. heap allocations per successful `send_message` round trip, bare `Bot` versus
//!    `Retained<Bot>`, counted by an instrumented allocator across every thread (the HTTP
//!    client's included); the adaptor's target is zero extra;
//! 2. time per round trip, both;
//! 3. time to build a request and its send future and drop them, without the network: the
//!    adaptor's own work per request.
//!
//! Every figure is the median of interleaved rounds. Nothing here is asserted: read it.

use teloxide_retention::testing as bot_api;

use std::alloc::System;
use std::hint::black_box;
use std::time::{Duration, Instant};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use teloxide::prelude::*;
use teloxide_retention::{BoxError, MemoryStore, RetainedExt, Retention};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const ROUNDS: usize = 21;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Runs `send` `n` times in a row; returns allocations and microseconds per call.
async fn round<F, Fut>(n: u64, send: F) -> Result<(f64, f64), BoxError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<Message, teloxide::RequestError>>,
{
    let region = Region::new(GLOBAL);
    let started = Instant::now();
    for _ in 0..n {
        send().await?;
    }
    let elapsed = started.elapsed();
    let allocations = region.change().allocations as f64;
    Ok((allocations / n as f64, elapsed.as_secs_f64() * 1e6 / n as f64))
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<(), BoxError> {
    let quick = std::env::args().any(|a| a == "--quick");
    let api = bot_api::FakeBotApi::start().await;
    let retention = Retention::builder(MemoryStore::new())
        .inactive_after(Duration::from_secs(90 * 24 * 3600))
        .without_commands()
        .build()?;
    let bare = api.bot();
    let retained = api.bot().retained(&retention);
    let chat = ChatId(42);
    println!(
        "teloxide-retention adaptor benchmark, {} cores\n",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // Warm the connection pool and every lazy path of both bots.
    for _ in 0..50 {
        bare.send_message(chat, "warm").await?;
        retained.send_message(chat, "warm").await?;
    }
    let per_round: u64 = if quick { 20 } else { 100 };
    let (mut bare_a, mut retained_a, mut bare_t, mut retained_t) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        let (a, t) = round(per_round, || bare.send_message(chat, "x").send()).await?;
        bare_a.push(a);
        bare_t.push(t);
        let (a, t) = round(per_round, || retained.send_message(chat, "x").send()).await?;
        retained_a.push(a);
        retained_t.push(t);
    }

    let build = |n: u64, f: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..n {
            f();
        }
        started.elapsed().as_secs_f64() * 1e9 / n as f64
    };
    let per_round = if quick { 1_000 } else { 10_000 };
    let (mut bare_b, mut retained_b) = (Vec::new(), Vec::new());
    for _ in 0..ROUNDS {
        bare_b.push(build(per_round, &|| drop(black_box(bare.send_message(chat, "x").send()))));
        retained_b
            .push(build(per_round, &|| drop(black_box(retained.send_message(chat, "x").send()))));
    }

    let rows = [
        ("allocations per round trip, bare Bot", median(bare_a.clone()), "allocs"),
        ("allocations per round trip, Retained<Bot>", median(retained_a.clone()), "allocs"),
        ("extra allocations per successful request", median(retained_a) - median(bare_a), "allocs"),
        ("round trip, bare Bot", median(bare_t), "µs"),
        ("round trip, Retained<Bot>", median(retained_t), "µs"),
        ("build + drop a send future, bare Bot", median(bare_b.clone()), "ns"),
        ("build + drop a send future, Retained<Bot>", median(retained_b.clone()), "ns"),
        ("adaptor's own cost per request", median(retained_b) - median(bare_b), "ns"),
    ];
    println!("| Figure | Value |\n| --- | --- |");
    for (name, value, unit) in rows {
        println!("| {name} | {value:.2} {unit} |");
    }
    println!();
    for (name, value, unit) in rows {
        println!("{}", serde_json::json!({ "figure": name, "value": value, "unit": unit }));
    }
    Ok(())
}
