//! One protocol, every store: random sequences of operations run against `MemoryStore`, a
//! real `redis-server`, and (with their features) a SQLite file and a PostgreSQL server side
//! by side, and every
//! result and the whole observable state must match after every step (proptest shrinks a
//! failing sequence to a shortest one).
//!
//! Operations: interactions (through `record` and through the layer), gone marks, unblocks
//! (a `my_chat_member` update through the layer), opt-outs, prune passes with erasers that
//! fail for chosen users, a pruner that crashes inside its erasers (its lease expires), and
//! clock moves, and members of `seen` that are not users (`Plant`: written into Redis
//! only, as a buggy script or a manual `redis-cli` session would; the memory store cannot
//! hold them), which must change nothing for the users around them.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, RngAlgorithm, TestCaseError, TestRng, TestRunner};
use serde_json::json;
use teloxide::dispatching::UpdateHandler;
use teloxide::prelude::*;
use teloxide::types::{Me, UserId};
use teloxide_retention::{
    BoxError, Eraser, Erasure, ErasureReason, GonePolicy, GoneReason, ManualClock, MemoryStore,
    OptOutOutcome, RedisStore, Retention,
};

use crate::common::{RedisServer, T0, parse, updates};

/// Users 1 to 5 (as ids 101 to 105): few, so that operations meet the same users.
const USERS: u64 = 5;
const LEASE: Duration = Duration::from_secs(60);

#[derive(Debug, Clone)]
enum Op {
    /// `Retention::record`.
    Record(u64),
    /// A message through the layer.
    Message(u64),
    /// `Retention::mark_gone`.
    MarkGone(u64, bool),
    /// The user blocked the bot (`my_chat_member` through the layer).
    Block(u64),
    /// The user unblocked the bot.
    Unblock(u64),
    /// `Retention::erase_user`.
    OptOut(u64),
    /// Erasers fail for this user from now on (`true`) or succeed again.
    Failing(u64, bool),
    /// `Retention::prune_once`.
    Prune,
    /// A pass whose pruner dies inside its erasers; its lease expires later.
    Crash,
    /// The clock moves on (minutes).
    Advance(u64),
    /// A member that is not a user appears in Redis's `seen` (an index into `NOT_USERS`).
    Plant(usize),
    /// `Retention::adopt` of a user (with a last activity this many minutes ago, or none)
    /// under a notice of this many minutes (0: none), or `end_notices` for `None`.
    Adopt(Option<(u64, Option<u64>, u64)>),
}

/// Members that are not users: aliases of the model's users among them.
const NOT_USERS: [&str; 6] = ["0", "0101", "-102", "103.0", "abc", "18446744073709551719"];

fn op() -> impl Strategy<Value = Op> {
    let user = 1..=USERS;
    prop_oneof![
        4 => user.clone().prop_map(Op::Record),
        2 => user.clone().prop_map(Op::Message),
        1 => (user.clone(), any::<bool>()).prop_map(|(u, d)| Op::MarkGone(u, d)),
        2 => user.clone().prop_map(Op::Block),
        1 => user.clone().prop_map(Op::Unblock),
        2 => user.clone().prop_map(Op::OptOut),
        1 => (user.clone(), any::<bool>()).prop_map(|(u, f)| Op::Failing(u, f)),
        3 => Just(Op::Prune),
        1 => Just(Op::Crash),
        // From seconds (within the cache's resolution) to past the 1-day threshold.
        3 => prop_oneof![Just(0u64), Just(1), Just(2), Just(30), Just(61), Just(1441)]
            .prop_map(Op::Advance),
        1 => (0..NOT_USERS.len()).prop_map(Op::Plant),
        // A notice longer than the 1-day threshold, or none.
        1 => prop_oneof![
            4 => (user.clone(), prop::option::of(prop_oneof![Just(5u64), Just(2000)]),
                  prop_oneof![Just(0u64), Just(60), Just(3000)])
                .prop_map(|(u, ago, notice)| Op::Adopt(Some((u, ago, notice)))),
            1 => Just(Op::Adopt(None)),
        ],
    ]
}

/// Erasers fail for the users in `failing`; with `crash`, they hang (the pruner "dies").
#[derive(Clone, Default)]
struct ModelEraser {
    failing: Arc<Mutex<HashSet<u64>>>,
    crash: Arc<AtomicBool>,
    /// Calls that hung since the crash began.
    hung: Arc<AtomicUsize>,
}

impl Eraser for ModelEraser {
    fn name(&self) -> &str {
        "model"
    }

    async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
        if self.crash.load(Ordering::SeqCst) {
            self.hung.fetch_add(1, Ordering::SeqCst);
            std::future::pending::<()>().await;
        }
        if self.failing.lock().unwrap().contains(&erasure.user.0) {
            return Err("database unavailable".into());
        }
        Ok(())
    }
}

/// One side of the comparison: a store, its clock, its eraser and its handler tree.
struct Side {
    retention: Retention,
    clock: ManualClock,
    eraser: ModelEraser,
    handler: UpdateHandler<BoxError>,
    /// On the Redis side: a connection and the namespace's `seen` key, for `Plant`.
    redis: Option<(Mutex<redis::Connection>, String)>,
    /// Members planted so far (left in place by every claim).
    planted: Mutex<HashSet<String>>,
    /// Made once: a `Bot` builds an HTTP client with TLS, tens of milliseconds each.
    bot: Bot,
}

impl Side {
    fn new(builder: teloxide_retention::RetentionBuilder) -> Self {
        let clock = ManualClock::at_unix_ms(T0);
        let eraser = ModelEraser::default();
        let retention = builder
            .inactive_after(Duration::from_secs(24 * 3600))
            .gone_policy(GonePolicy::EraseAfter(Duration::from_secs(3600)))
            .follow_up_delay(Duration::from_secs(60))
            .lease(LEASE)
            // The comparison is of what the stores decide, not of how fast they answer: on a
            // loaded machine a transaction could otherwise time out on one side only.
            .store_timeout(Duration::from_secs(30))
            .without_commands()
            .clock(clock.clone())
            .erase_with(eraser.clone())
            .build()
            .expect("valid configuration");
        let tree = dptree::entry().endpoint(|| async { Ok::<_, BoxError>(()) });
        let handler = retention.wrap(tree);
        Self {
            retention,
            clock,
            eraser,
            handler,
            redis: None,
            planted: Mutex::default(),
            bot: Bot::new("1:model"),
        }
    }

    /// A side whose `Plant` writes into `seen` of `namespace` on `server`.
    fn planting(mut self, server: &RedisServer, namespace: &str) -> Self {
        self.redis = Some((Mutex::new(server.sync_connection()), format!("{{{namespace}}}:seen")));
        self
    }

    /// The planted members out of a report: only Redis can hold them.
    fn without_planted(&self, reported: &[String]) -> Vec<String> {
        let planted = self.planted.lock().unwrap();
        reported
            .iter()
            .filter(|r| !r.strip_prefix("seen member ").is_some_and(|m| planted.contains(m)))
            .cloned()
            .collect()
    }

    /// Dispatches `update` through the wrapped tree and describes how it ended (the
    /// endpoint's result, or that no branch took it), for the comparison of the sides.
    async fn dispatch(&self, update: serde_json::Value) -> String {
        let me: Me = serde_json::from_value(json!({
            "id": 1, "is_bot": true, "first_name": "B", "username": "model_bot",
            "can_join_groups": true, "can_read_all_group_messages": false,
            "supports_inline_queries": false, "has_main_web_app": false,
        }))
        .unwrap();
        let deps = dptree::deps![parse(update), self.bot.clone(), me];
        match self.handler.dispatch(deps).await {
            std::ops::ControlFlow::Break(result) => format!("handled {result:?}"),
            std::ops::ControlFlow::Continue(_) => "not handled".to_owned(),
        }
    }

    /// Applies `op` and describes its result.
    async fn apply(&self, op: &Op) -> String {
        let id = |u: u64| UserId(100 + u);
        let result = match op {
            Op::Record(u) => format!("{:?}", self.retention.note_interaction(id(*u)).await),
            Op::Message(u) => self.dispatch(updates::message(100 + u, "hi")).await,
            Op::MarkGone(u, deleted) => {
                let reason = if *deleted { GoneReason::Deactivated } else { GoneReason::Blocked };
                format!("{:?}", self.retention.mark_gone(id(*u), reason).await)
            }
            Op::Block(u) => self.dispatch(updates::blocked(100 + u)).await,
            Op::Unblock(u) => self.dispatch(updates::unblocked(100 + u)).await,
            Op::OptOut(u) => match self.retention.erase_user(id(*u)).await {
                Ok(OptOutOutcome::Retrying { failed }) => format!("retrying {failed:?}"),
                other => format!("{other:?}"),
            },
            Op::Failing(u, on) => {
                let mut failing = self.eraser.failing.lock().unwrap();
                if *on {
                    failing.insert(100 + u);
                } else {
                    failing.remove(&(100 + u));
                }
                String::new()
            }
            Op::Prune => match self.retention.prune_once().await {
                Ok(r) => format!(
                    "claimed {} erased {} {:?} returned {} failed {} lost {} batches {} held {} \
                     unreadable {:?}",
                    r.claimed,
                    r.erased,
                    ErasureReason::ALL.map(|reason| r.erased_for(reason)),
                    r.returned,
                    r.failed,
                    r.leases_lost,
                    r.batches,
                    r.inactivity_held.is_some(),
                    self.without_planted(&r.unreadable)
                ),
                Err(e) => format!("error {e}"),
            },
            Op::Crash => {
                self.eraser.hung.store(0, Ordering::SeqCst);
                self.eraser.crash.store(true, Ordering::SeqCst);
                let mut pass = tokio::spawn({
                    let retention = self.retention.clone();
                    async move { retention.prune_once().await.map(|r| r.claimed) }
                });
                let outcome = loop {
                    tokio::select! {
                        done = &mut pass => {
                            break format!("nothing to erase {:?}", done.unwrap().ok());
                        }
                        () = tokio::time::sleep(Duration::from_millis(2)) => {
                            if self.eraser.hung.load(Ordering::SeqCst) > 0 {
                                pass.abort();
                                break "died inside its erasers".to_owned();
                            }
                        }
                    }
                };
                self.eraser.crash.store(false, Ordering::SeqCst);
                outcome
            }
            Op::Adopt(None) => format!("{:?}", self.retention.end_notices().await),
            Op::Adopt(Some((u, ago, notice))) => {
                let now = teloxide_retention::Clock::now_ms(&self.clock);
                let at = |minutes_ago: u64| {
                    chrono::DateTime::from_timestamp_millis(now - minutes_ago as i64 * 60_000)
                };
                let mut options = teloxide_retention::Adoption::new();
                if *notice > 0 {
                    let until = chrono::DateTime::from_timestamp_millis(now).unwrap()
                        + chrono::Duration::minutes(*notice as i64);
                    options = options.not_before(until);
                }
                let adopted = self.retention.adopt([(id(*u), ago.and_then(at))], &options).await;
                format!("{adopted:?}")
            }
            Op::Plant(i) => {
                if let Some((conn, seen)) = &self.redis {
                    let member = NOT_USERS[*i];
                    let _: () = redis::cmd("ZADD")
                        .arg(seen)
                        .arg(0)
                        .arg(member)
                        .query(&mut *conn.lock().unwrap())
                        .expect("plant");
                    self.planted.lock().unwrap().insert(member.to_owned());
                }
                String::new()
            }
            Op::Advance(minutes) => {
                self.clock.advance(Duration::from_secs(minutes * 60).max(Duration::from_secs(1)));
                String::new()
            }
        };
        // Interactions a gone mark or an erasure sent back to the writer are written now, and
        // the erasures announced are applied now, not whenever the reader's one-second timer
        // fires: on a loaded machine it fires at another step on each side.
        self.retention.settle().await.expect("settle");
        result
    }

    /// Everything observable about every user, the tracked count and the dry run.
    async fn state(&self) -> String {
        let mut out = String::new();
        for u in 1..=USERS {
            let s = self.retention.status(UserId(100 + u)).await.expect("status");
            out += &format!("{u}: {:?} {:?}\n", s.last_seen, s.erasure);
        }
        let preview = self.retention.preview(100).await.expect("preview");
        // The counts of `seen` include its planted members (score 0: always inactive, unless
        // a running notice holds them, as it holds every time before it); they are no users,
        // and no entry of the dry run names one.
        let planted = self.planted.lock().unwrap().len() as u64;
        let planted_inactive =
            if planted == 0 || !self.retention.survey().await.expect("survey").notices.is_empty() {
                0
            } else {
                planted
            };
        out += &format!(
            "tracked {} | due: {:?} | inactive {} expired leases {}",
            self.retention.tracked_users().await.expect("tracked") - planted,
            preview.users.iter().map(|e| (e.user, e.reason)).collect::<Vec<_>>(),
            preview.inactive - planted_inactive,
            preview.expired_leases,
        );
        out
    }
}

/// Prints the first disagreement as it is found: shrinking it can take minutes on a loaded
/// machine, and a run cut off meanwhile would otherwise show nothing.
fn first_disagreement(ops: &[Op], what: &str) {
    static SEEN: AtomicBool = AtomicBool::new(false);
    if !SEEN.swap(true, Ordering::SeqCst) {
        eprintln!("first disagreement, before shrinking: {what}\nsequence: {ops:?}");
    }
}

#[test]
fn every_store_agrees_on_random_operation_sequences() {
    crate::common::init_tracing();
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let server = RedisServer::start();
    #[cfg(feature = "sqlite")]
    let sqlite_dir = tempfile::tempdir().expect("temp dir");
    #[cfg(feature = "sqlite")]
    let sqlite = rt.block_on(async {
        let url = format!("sqlite:{}", sqlite_dir.path().join("model.db").display());
        teloxide_retention::SqliteStore::open(&url).await.expect("open sqlite")
    });
    #[cfg(feature = "postgres")]
    let pg_server = crate::common::postgres::PostgresServer::start();
    #[cfg(feature = "postgres")]
    let postgres = rt.block_on(async {
        teloxide_retention::PostgresStore::open(&pg_server.url()).await.expect("open postgres")
    });
    let cases: u32 = std::env::var("MODEL_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(100);
    // A fixed seed by default, so that CI runs the same sequences; `MODEL_SEED` explores others.
    let seed: u64 = std::env::var("MODEL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(1);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = TestRng::from_seed(RngAlgorithm::ChaCha, &bytes);
    // Shrinking stops after two minutes: a loaded CI machine still reports a short sequence.
    let config =
        Config { cases, failure_persistence: None, max_shrink_time: 120_000, ..Config::default() };
    let mut runner = TestRunner::new_with_rng(config, rng);
    let case = std::sync::atomic::AtomicU32::new(0);
    let result = runner.run(&proptest::collection::vec(op(), 1..40), |ops| {
        let namespace = format!("model{}", case.fetch_add(1, Ordering::SeqCst));
        rt.block_on(async {
            let redis = RedisStore::open(&server.url()).await.expect("connect");
            let memory = Side::new(Retention::builder(MemoryStore::new()));
            let redis = Side::new(Retention::builder(redis).namespace(namespace.as_str()))
                .planting(&server, &namespace);
            let mut others = vec![("Redis", redis)];
            #[cfg(feature = "sqlite")]
            others.push((
                "SQLite",
                Side::new(Retention::builder(sqlite.clone()).namespace(namespace.as_str())),
            ));
            #[cfg(feature = "postgres")]
            others.push((
                "PostgreSQL",
                Side::new(Retention::builder(postgres.clone()).namespace(namespace.as_str())),
            ));
            let mut before = memory.state().await;
            for (step, op) in ops.iter().enumerate() {
                let a = memory.apply(op).await;
                for (name, other) in &others {
                    let b = other.apply(op).await;
                    if a != b {
                        first_disagreement(
                            &ops,
                            &format!("step {step} ({op:?}) on {name}:\n{a}\n{b}"),
                        );
                    }
                    prop_assert_eq!(
                        &a,
                        &b,
                        "result of step {} ({:?}) on {}, state before:\n{}",
                        step,
                        op,
                        name,
                        before
                    );
                }
                let a = memory.state().await;
                for (name, other) in &others {
                    let b = other.state().await;
                    if a != b {
                        first_disagreement(
                            &ops,
                            &format!("state after step {step} ({op:?}) on {name}:\n{a}\n{b}"),
                        );
                    }
                    prop_assert_eq!(
                        &a,
                        &b,
                        "state after step {} ({:?}) on {}, state before:\n{}",
                        step,
                        op,
                        name,
                        before
                    );
                }
                before = a;
            }
            memory.retention.shutdown().await.expect("the memory side shuts down");
            for (name, other) in &others {
                other
                    .retention
                    .shutdown()
                    .await
                    .unwrap_or_else(|e| panic!("{name} shuts down: {e}"));
            }
            Ok::<(), TestCaseError>(())
        })
    });
    if let Err(e) = result {
        panic!("the stores disagree: {e}");
    }
}
