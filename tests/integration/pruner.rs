//! The background pruner: a pass at start and every interval, and a clean shutdown.
//! Tokio's clock is paused, so the intervals pass without sleeping.

use std::sync::Arc;
use std::time::Duration;

use teloxide::types::UserId;

use crate::common::{DAY, Env};
use crate::support::{Gate, Recorder};

const INTERVAL: Duration = Duration::from_secs(600);

#[tokio::test(start_paused = true)]
async fn the_pruner_runs_now_and_every_interval_until_shut_down() {
    let env = Env::memory();
    let eraser = Recorder::new("profiles");
    let retention =
        env.builder().await.prune_every(INTERVAL).erase_with(eraser.clone()).build().unwrap();
    retention.note_interaction(UserId(1)).await;
    env.clock.advance(20 * DAY);
    retention.note_interaction(UserId(2)).await;
    env.clock.advance(11 * DAY);

    let pruner = retention.spawn_pruner();
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(retention.stats().prune_passes, 1, "a pass at start");
    assert_eq!(eraser.erased(1), 1);
    assert_eq!(eraser.erased(2), 0);

    env.clock.advance(20 * DAY);
    tokio::time::sleep(INTERVAL).await;
    assert_eq!(retention.stats().prune_passes, 2, "a pass every interval");
    assert_eq!(eraser.erased(2), 1);

    pruner.shutdown().await;
    retention.note_interaction(UserId(3)).await;
    env.clock.advance(31 * DAY);
    tokio::time::sleep(10 * INTERVAL).await;
    assert_eq!(retention.stats().prune_passes, 2, "no pass after shutdown");
    assert_eq!(eraser.erased(3), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_the_running_batch_finish() {
    let env = Env::redis();
    let gate = Arc::new(Gate::default());
    let eraser = Recorder::new("profiles").gated(Arc::clone(&gate));
    let retention = env.builder().await.erase_with(eraser.clone()).build().unwrap();
    retention.note_interaction(UserId(1)).await;
    env.clock.advance(31 * DAY);

    let pruner = retention.spawn_pruner();
    gate.entered.notified().await;
    pruner.stop();
    // The pruner is inside its batch's eraser, so it cannot have ended.
    assert!(!pruner.is_finished(), "waits for the batch it is erasing");
    gate.release.notify_one();
    pruner.shutdown().await;
    assert_eq!(eraser.erased(1), 1);
    let status = retention.status(UserId(1)).await.unwrap();
    assert_eq!((status.last_seen, status.erasure), (None, None), "finished, not left leased");
}
