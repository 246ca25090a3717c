//! Erasers and helpers shared by the integration tests.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{BoxError, Eraser, Erasure, ErasureReason, Export};
use tokio::sync::Notify;

/// Records every erasure; can fail the first `fail_first` calls, or block until released.
#[derive(Clone, Default)]
pub struct Recorder {
    pub name: &'static str,
    calls: Arc<Mutex<Vec<Erasure>>>,
    /// The size of each batch the pruner handed over.
    batches: Arc<Mutex<Vec<usize>>>,
    fail_first: Arc<AtomicU32>,
    gate: Option<Arc<Gate>>,
    yielding: bool,
}

/// Lets a test hold an eraser mid-erasure and release it.
#[derive(Default)]
pub struct Gate {
    pub entered: Notify,
    pub release: Notify,
}

impl Recorder {
    pub fn new(name: &'static str) -> Self {
        Self { name, ..Self::default() }
    }

    /// Fails the first `n` calls with an error.
    pub fn failing_first(self, n: u32) -> Self {
        self.fail_first.store(n, Ordering::SeqCst);
        self
    }

    /// Blocks every call until `gate.release` is notified.
    pub fn gated(mut self, gate: Arc<Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Yields to the scheduler in every call, so that concurrent pruners interleave even
    /// on the in-memory store.
    pub fn yielding(mut self) -> Self {
        self.yielding = true;
        self
    }

    pub fn calls(&self) -> Vec<Erasure> {
        self.calls.lock().unwrap().clone()
    }

    /// How often each user was erased (successful calls only).
    pub fn counts(&self) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for e in self.calls() {
            *counts.entry(e.user.0).or_default() += 1;
        }
        counts
    }

    pub fn erased(&self, user: u64) -> usize {
        self.counts().get(&user).copied().unwrap_or(0)
    }

    /// The size of every batch the pruner handed to this eraser, in order.
    pub fn batch_sizes(&self) -> Vec<usize> {
        self.batches.lock().unwrap().clone()
    }

    pub fn reasons(&self, user: u64) -> Vec<ErasureReason> {
        self.calls().into_iter().filter(|e| e.user.0 == user).map(|e| e.reason).collect()
    }
}

impl Eraser for Recorder {
    fn name(&self) -> &str {
        self.name
    }

    async fn erase(&self, erasure: Erasure) -> Result<(), BoxError> {
        if self.yielding {
            tokio::task::yield_now().await;
        }
        if let Some(gate) = &self.gate {
            gate.entered.notify_one();
            gate.release.notified().await;
        }
        let failing = self
            .fail_first
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err("database unavailable".into());
        }
        self.calls.lock().unwrap().push(erasure);
        Ok(())
    }

    /// As the default (`erase` for up to 32 users at a time), recording the batch's size.
    async fn erase_batch(&self, batch: &[Erasure]) -> Vec<Result<(), BoxError>> {
        use futures_util::StreamExt;
        self.batches.lock().unwrap().push(batch.len());
        futures_util::stream::iter(batch.iter().copied())
            .map(|erasure| self.erase(erasure))
            .buffered(32)
            .collect()
            .await
    }

    async fn export(&self, user: UserId) -> Result<Export, BoxError> {
        Ok(Export::Data(serde_json::json!({ "user": user.0, "source": self.name })))
    }
}

/// Polls `check` until it holds, for effects of background tasks (never for prunes, which
/// tests run explicitly). Returns as soon as it holds; fails after
/// [`patience`](crate::common::wait::patience) (120 s, or `RETENTION_TEST_PATIENCE_SECS`).
pub async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let patience = crate::common::wait::patience();
    let deadline = tokio::time::Instant::now() + patience;
    while !check().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {patience:?} waiting for: {what} ({} sets the limit)",
            crate::common::wait::PATIENCE_VAR
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Runs a prune pass of `retention` and kills it once it is inside the eraser gated by
/// `gate`: a pruner process dying between claim and confirm.
pub async fn kill_pass_inside_eraser(retention: &teloxide_retention::Retention, gate: &Gate) {
    let pass = tokio::spawn({
        let retention = retention.clone();
        async move { retention.prune_once().await }
    });
    gate.entered.notified().await;
    pass.abort();
    assert!(pass.await.unwrap_err().is_cancelled(), "the pass was killed, not finished");
}

/// After a switch of master: interactions of `users` are written or buffered (never dropped),
/// and each of them reaches one of the masters on `ports`, at least one the new master on
/// `ports[0]` (all of them when it is the only one).
pub async fn interactions_reach_the_new_master(
    bot: &teloxide_retention::Retention,
    users: std::ops::RangeInclusive<u64>,
    ports: &[u16],
) {
    use teloxide_retention::Noted;
    let mut noted = Vec::new();
    for user in users.clone() {
        noted.push(bot.note_interaction(teloxide::types::UserId(user)).await);
    }
    assert!(noted.iter().all(|n| matches!(n, Noted::Written | Noted::Buffered)), "{noted:?}");
    eventually("the buffered interactions to reach the new master", || async {
        bot.flush().await.is_ok() && bot.stats().buffered_users == 0
    })
    .await;
    let on = |port: u16| {
        let mut conn = redis::Client::open(format!("redis://127.0.0.1:{port}/"))
            .unwrap()
            .get_connection()
            .unwrap();
        crate::common::cluster::seen_members(&mut conn)
    };
    let on_new = on(ports[0]);
    let everywhere: HashSet<u64> = ports.iter().flat_map(|p| on(*p)).collect();
    for user in users.clone() {
        assert!(everywhere.contains(&user), "user {user}'s interaction is written");
    }
    assert!(users.clone().any(|u| on_new.contains(&u)), "interactions reach the new master");
}

/// Runs prune passes until they have erased `expected` users between them, and returns how
/// many they erased (more than `expected` if a pass erases more). After a topology switch
/// the first passes may fail, and a shard may still hold inactivity back for a heartbeat
/// written during the outage (a backlog the next heartbeat clears): that is the safe side,
/// so passes go on for up to [`patience`](crate::common::wait::patience). A last pass
/// checks that nobody else is due.
pub async fn prune_settled(bot: &teloxide_retention::Retention, expected: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + crate::common::wait::patience();
    let mut erased = 0;
    while erased < expected && tokio::time::Instant::now() < deadline {
        match bot.prune_once().await {
            Ok(report) => erased += report.erased,
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        if erased < expected {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // The last pass must succeed: an error here would hide users left due.
    let last = bot.prune_once().await.expect("the last pass, once the store is back");
    erased + last.erased
}

/// Runs prune passes until one runs with nothing held back, and returns how many users
/// they erased between them. A writer's heartbeat that still reports a backlog it has
/// written since (the next heartbeat clears it; late on a loaded machine) holds inactivity
/// back: the safe side, so passes go on for up to
/// [`patience`](crate::common::wait::patience).
pub async fn prune_until_nothing_held(pruner: &teloxide_retention::Retention) -> u64 {
    let deadline = tokio::time::Instant::now() + crate::common::wait::patience();
    let mut erased = 0;
    loop {
        let report = pruner.prune_once().await.unwrap();
        erased += report.erased;
        if report.inactivity_held.is_none() {
            return erased;
        }
        assert!(tokio::time::Instant::now() < deadline, "still held: {report:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Runs prune passes until one claims nobody, and returns how many users they erased.
pub(crate) async fn prune_until_done(retention: &teloxide_retention::Retention) -> u64 {
    let mut erased = 0;
    loop {
        let pass = retention.prune_once().await.unwrap();
        erased += pass.erased;
        if pass.claimed == 0 {
            return erased;
        }
    }
}

/// Every key name and value in `conn`'s Redis, one line per key.
pub(crate) fn dump(conn: &mut redis::Connection) -> Vec<(String, String)> {
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(conn).unwrap();
    let mut all = Vec::new();
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query(conn).unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(&key).query(conn).unwrap(),
            "hash" => redis::cmd("HGETALL").arg(&key).query(conn).unwrap(),
            "zset" => {
                redis::cmd("ZRANGE").arg(&key).arg(0).arg(-1).arg("WITHSCORES").query(conn).unwrap()
            }
            "stream" => redis::cmd("XRANGE").arg(&key).arg("-").arg("+").query(conn).unwrap(),
            other => panic!("unexpected key type {other} of {key}"),
        };
        all.push((key, format!("{value:?}")));
    }
    all
}
