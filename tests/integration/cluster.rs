//! The whole protocol on a real Redis Cluster (one node, all slots): every multi-key script
//! must keep its keys in one hash slot, or Redis refuses it with CROSSSLOT.

use std::collections::HashSet;

use teloxide::RequestError;
use teloxide::dispatching::{UpdateFilterExt, UpdateHandler};
use teloxide::types::{Update, UserId};
use teloxide_retention::{
    ErasureReason, GoneReason, ManualClock, OptOutOutcome, RedisStore, Retention,
};

use crate::common::{DAY, FakeBotApi, RedisServer, T0, dispatch, updates as u};
use crate::support::Recorder;

fn message_tree() -> UpdateHandler<RequestError> {
    Update::filter_message().endpoint(|| async { Ok(()) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_protocol_runs_on_redis_cluster() {
    crate::common::init_tracing();
    let server = RedisServer::start_cluster();
    let clock = ManualClock::at_unix_ms(T0);
    let eraser = Recorder::new("profiles").failing_first(1);
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let store = RedisStore::open_cluster([server.url().as_str()]).await.unwrap();
        let retention = Retention::builder(store)
            .namespace("clusterbot")
            .inactive_after(30 * DAY)
            .clock(clock.clone())
            .erase_with(eraser.clone())
            .build()
            .unwrap();
        replicas.push(retention);
    }
    let (a, b) = (&replicas[0], &replicas[1]);

    // Tracking through the layer, with the privacy commands (nonces, rate counters) on.
    for user in 1..=20 {
        a.note_interaction(UserId(user)).await;
    }
    let api = FakeBotApi::start().await;
    let updates =
        vec![u::message(21, "hi"), u::message(21, "/mydata"), u::message(22, "/removemydata")];
    dispatch(&api, a.wrap(message_tree()), updates).await;
    assert_eq!(api.sent_to("senddocument", 21).len(), 1);
    assert_eq!(api.sent_to("sendmessage", 22)[0].buttons().len(), 2);
    assert_eq!(a.tracked_users().await.unwrap(), 22);

    // Gone marks, opt-outs (one eraser failure, retried) and the feed between replicas.
    assert!(a.mark_gone(UserId(1), GoneReason::Blocked).await.unwrap());
    assert!(matches!(b.erase_user(UserId(2)).await.unwrap(), OptOutOutcome::Retrying { .. }));
    assert_eq!(b.erase_user(UserId(3)).await.unwrap(), OptOutOutcome::Erased { follow_up: false });

    clock.advance(31 * DAY);
    let preview = a.preview(100).await.unwrap();
    assert_eq!((preview.inactive, preview.scheduled_due), (20, 2), "{preview:?}");
    assert_eq!(preview.users.len(), 21, "each user once: {preview:?}");
    assert_eq!(preview.users.iter().filter(|e| e.user == UserId(1)).count(), 1);
    let report = a.prune_once().await.unwrap();
    assert_eq!(report.erased, 21, "{report:?}");
    assert_eq!(eraser.reasons(1), [ErasureReason::Blocked]);
    assert_eq!(eraser.reasons(2), [ErasureReason::OptOut]);
    assert_eq!(a.tracked_users().await.unwrap(), 0);

    // Every key of the namespace lives in one slot.
    let mut conn = server.sync_connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert!(keys.iter().any(|k| k == "{clusterbot}:feed"), "{keys:?}");
    let slots: HashSet<i64> = keys
        .iter()
        .map(|k| redis::cmd("CLUSTER").arg("KEYSLOT").arg(k).query(&mut conn).unwrap())
        .collect();
    assert_eq!(slots.len(), 1, "keys {keys:?} span slots {slots:?}");
}
