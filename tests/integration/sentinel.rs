//! Redis Sentinel: the store follows the master across `SENTINEL FAILOVER`. A prune pass cut
//! off by the failover, interactions made while it happens and the passes after it: nobody is
//! erased early, every due user is erased, and interactions buffered during the switch reach
//! the new master.

use std::sync::Arc;
use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{
    GonePolicy, GoneReason, ManualClock, Noted, RedisSentinel, RedisStore, Retention,
};

use crate::common::sentinel::{MASTER_NAME, SentinelTopology};
use crate::common::{DAY, T0};
use crate::support::{Gate, Recorder, interactions_reach_the_new_master, prune_settled};

fn retention(topology: &SentinelTopology, clock: &ManualClock, eraser: Recorder) -> Retention {
    let sentinel = RedisSentinel::new(MASTER_NAME, topology.sentinel_urls());
    let store = RedisStore::open_sentinel(&sentinel).unwrap();
    Retention::builder(store)
        .inactive_after(30 * DAY)
        .gone_policy(GonePolicy::EraseNow)
        .lease(Duration::from_secs(60))
        .without_commands()
        .clock(clock.clone())
        .erase_with(eraser)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactions_and_prunes_carry_on_across_a_sentinel_failover() {
    crate::common::init_tracing();
    let topology = Arc::new(SentinelTopology::start());
    let old_master = topology.master_port();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles");
    let bot = retention(&topology, &clock, eraser.clone());

    // 40 users go inactive, one blocks the bot; ten stay active.
    for user in 1..=41 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }
    clock.advance(31 * DAY);
    assert!(bot.mark_gone(UserId(41), GoneReason::Blocked).await.unwrap());
    for user in 51..=60 {
        assert_eq!(bot.note_interaction(UserId(user)).await, Noted::Written);
    }

    // A pruner claims the due users and is inside its eraser when the master fails over;
    // it never finishes (its process is cut off).
    let gate = Arc::new(Gate::default());
    let stuck = retention(&topology, &clock, Recorder::new("profiles").gated(Arc::clone(&gate)));
    let pass = tokio::spawn(async move { stuck.prune_once().await });
    gate.entered.notified().await;
    let new_master = tokio::task::spawn_blocking({
        let topology = Arc::clone(&topology);
        move || {
            topology.sync_replica();
            topology.failover()
        }
    })
    .await
    .unwrap();
    assert_ne!(new_master, old_master);
    pass.abort();

    // Interactions right after the switch: the first write meets the old master (now a replica,
    // READONLY) or a dropped connection; whatever is not written is buffered.
    interactions_reach_the_new_master(&bot, 61..=70, &[new_master]).await;

    // Within the cut-off pass's lease nobody is erased twice at once; after it, the next pass
    // erases every due user and nobody else.
    clock.advance(Duration::from_secs(61));
    let erased = prune_settled(&bot, 41).await;
    assert_eq!(erased, 41, "40 inactive users and the one who blocked the bot");
    for user in 1..=41 {
        assert!(eraser.erased(user) >= 1, "user {user} erased");
    }
    for user in 51..=70 {
        assert_eq!(eraser.erased(user), 0, "user {user} is active and kept");
    }
    assert_eq!(bot.tracked_users().await.unwrap(), 20);
    assert_eq!(bot.prune_once().await.unwrap().claimed, 0);
}
