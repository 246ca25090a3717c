//! The built-in erasers (a teloxide dialogue `Storage` and the bot's own Redis keys), and a
//! stuck erasure reported once a day and retried, on every store.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use teloxide::dispatching::dialogue::{InMemStorage, Storage};
use teloxide::types::{ChatId, UserId};
use teloxide_retention::{
    Clock, DialogueEraser, ErasureReason, OptOutOutcome, RedisKeysEraser, Retention,
};

use crate::common::{DAY, Env, RedisServer, T0, updates::GROUP};
use crate::every_store;
use crate::support::Recorder;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
enum State {
    AskedName,
    Ordering { item: String },
}

async fn retention_with(env: &Env, eraser: impl teloxide_retention::Eraser) -> Retention {
    env.builder().await.erase_with(eraser).build().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialogue_is_erased_and_a_missing_one_counts_as_erased() {
    let env = Env::memory();
    let storage = InMemStorage::<State>::new();
    let retention = retention_with(&env, DialogueEraser::new(Arc::clone(&storage))).await;
    Arc::clone(&storage).update_dialogue(ChatId(1), State::AskedName).await.unwrap();
    Arc::clone(&storage).update_dialogue(ChatId(GROUP), State::AskedName).await.unwrap();

    assert_eq!(
        retention.erase_user(UserId(1)).await.unwrap(),
        OptOutOutcome::Erased { follow_up: false }
    );
    assert_eq!(Arc::clone(&storage).get_dialogue(ChatId(1)).await.unwrap(), None);
    assert_eq!(
        Arc::clone(&storage).get_dialogue(ChatId(GROUP)).await.unwrap(),
        Some(State::AskedName),
        "a group's dialogue belongs to the group"
    );
    // InMemStorage answers "dialogue not found" with an error; that is not a failure.
    assert_eq!(
        retention.erase_user(UserId(2)).await.unwrap(),
        OptOutOutcome::Erased { follow_up: false }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dialogue_is_exported_only_when_asked() {
    let env = Env::memory();
    let storage = InMemStorage::<State>::new();
    let state = State::Ordering { item: "pizza".into() };
    Arc::clone(&storage).update_dialogue(ChatId(3), state).await.unwrap();

    let exporting =
        retention_with(&env, DialogueEraser::new(Arc::clone(&storage)).with_export()).await;
    let document = exporting.export(UserId(3)).await.unwrap();
    assert_eq!(
        document["bot_data"][0],
        json!({ "name": "dialogue", "data": { "Ordering": { "item": "pizza" } } })
    );
    assert_eq!(exporting.export(UserId(4)).await.unwrap()["bot_data"][0]["data"], Value::Null);

    let silent =
        retention_with(&env, DialogueEraser::new(Arc::clone(&storage)).named("orders")).await;
    let document = silent.export(UserId(3)).await.unwrap();
    assert_eq!(document["bot_data"][0], json!({ "name": "orders", "held": "held, no export" }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_type_erased_storage_needs_no_annotations() {
    // Before the fix: `Arc<ErasedStorage<State>>` was rejected (`ErasedStorage` is unsized).
    use teloxide::dispatching::dialogue::ErasedStorage;
    let env = Env::memory();
    let storage: Arc<ErasedStorage<State>> = InMemStorage::<State>::new().erase();
    let retention =
        retention_with(&env, DialogueEraser::new(Arc::clone(&storage)).with_export()).await;
    Arc::clone(&storage).update_dialogue(ChatId(5), State::AskedName).await.unwrap();
    assert_eq!(retention.export(UserId(5)).await.unwrap()["bot_data"][0]["data"], "AskedName");
    assert!(matches!(retention.erase_user(UserId(5)).await.unwrap(), OptOutOutcome::Erased { .. }));
    assert_eq!(Arc::clone(&storage).get_dialogue(ChatId(5)).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_serializing_storage_is_erased_whatever_the_state_type() {
    // Before the fix: `SqliteStorage` (like `RedisStorage`) implements `Storage<D>` for every
    // serializable `D`, so `DialogueEraser::new(storage)` needed a turbofish.
    use teloxide::dispatching::dialogue::SqliteStorage;
    use teloxide::dispatching::dialogue::serializer::Json;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dialogues.sqlite");
    let storage = SqliteStorage::open(path.to_str().unwrap(), Json).await.unwrap();
    let state = State::Ordering { item: "pizza".into() };
    Arc::clone(&storage).update_dialogue(ChatId(6), state).await.unwrap();
    Arc::clone(&storage).update_dialogue(ChatId(GROUP), State::AskedName).await.unwrap();

    let env = Env::memory();
    let eraser = DialogueEraser::for_any_state(Arc::clone(&storage)).with_export();
    let retention = retention_with(&env, eraser).await;
    let document = retention.export(UserId(6)).await.unwrap();
    assert_eq!(document["bot_data"][0]["data"], json!({ "Ordering": { "item": "pizza" } }));
    assert!(matches!(retention.erase_user(UserId(6)).await.unwrap(), OptOutOutcome::Erased { .. }));
    let left: Option<State> = Arc::clone(&storage).get_dialogue(ChatId(6)).await.unwrap();
    assert_eq!(left, None);
    let group: Option<State> = Arc::clone(&storage).get_dialogue(ChatId(GROUP)).await.unwrap();
    assert_eq!(group, Some(State::AskedName), "group dialogues stay");
    // A user without a dialogue counts as erased.
    assert!(matches!(retention.erase_user(UserId(7)).await.unwrap(), OptOutOutcome::Erased { .. }));
}

/// A storage whose database is down: every call fails.
struct Unreachable;

impl Storage<State> for Unreachable {
    type Error = std::io::Error;

    fn remove_dialogue(self: Arc<Self>, _: ChatId) -> BoxFuture<'static, Result<(), Self::Error>> {
        Box::pin(async { Err(std::io::Error::other("connection refused")) })
    }

    fn update_dialogue(
        self: Arc<Self>,
        _: ChatId,
        _: State,
    ) -> BoxFuture<'static, Result<(), Self::Error>> {
        Box::pin(async { Err(std::io::Error::other("connection refused")) })
    }

    fn get_dialogue(
        self: Arc<Self>,
        _: ChatId,
    ) -> BoxFuture<'static, Result<Option<State>, Self::Error>> {
        Box::pin(async { Err(std::io::Error::other("connection refused")) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_dialogue_storage_fails_the_erasure() {
    let env = Env::memory();
    let retention = retention_with(&env, DialogueEraser::new(Arc::new(Unreachable))).await;
    let OptOutOutcome::Retrying { failed } = retention.erase_user(UserId(5)).await.unwrap() else {
        panic!("the storage is down");
    };
    assert_eq!(failed, [("dialogue".to_owned(), "connection refused".to_owned())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_keys_are_exported_by_type_and_erased() {
    let env = Env::redis();
    let bot_data = RedisServer::start();
    let client = redis::Client::open(bot_data.url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    let mut raw = bot_data.sync_connection();
    for user in [7u64, 8] {
        let _: () = redis::pipe()
            .hset(format!("profile:{user}"), "name", "Ada")
            .rpush(format!("cart:{{{user}}}"), &["tea", "milk"])
            .zadd(format!("scores:{user}"), "quiz", 3)
            .sadd(format!("tags:{user}"), "vip")
            .set(format!("lang:{user}"), "en")
            .query(&mut raw)
            .unwrap();
    }
    let eraser = RedisKeysEraser::new(
        conn,
        [
            "profile:{user}",
            "cart:{{user}}",
            "scores:{user}",
            "tags:{user}",
            "lang:{user}",
            "none:{user}",
        ],
    )
    .unwrap();
    assert_eq!(eraser.keys_for(UserId(7))[1], "cart:{7}", "{{user}} makes a hash tag");
    let retention = env.builder().await.erase_with(eraser).build().unwrap();

    let document = retention.export(UserId(7)).await.unwrap();
    assert_eq!(
        document["bot_data"][0]["data"],
        json!({
            "profile:7": { "name": "Ada" },
            "cart:{7}": ["tea", "milk"],
            "scores:7": ["quiz", "3"],
            "tags:7": ["vip"],
            "lang:7": "en",
        })
    );

    retention.note_interaction(UserId(7)).await;
    env.clock.advance(31 * DAY);
    retention.note_interaction(UserId(8)).await;
    assert_eq!(retention.prune_once().await.unwrap().erased, 1);
    let left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut raw).unwrap();
    let mut left = left;
    left.sort();
    assert_eq!(left, ["cart:{8}", "lang:8", "profile:8", "scores:8", "tags:8"]);
}

#[tokio::test]
async fn redis_key_patterns_must_name_the_user() {
    let server = RedisServer::start();
    let conn = redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let none = RedisKeysEraser::new(conn.clone(), Vec::<String>::new()).unwrap_err();
    assert!(none.to_string().contains("at least one key pattern"), "{none}");
    let shared = RedisKeysEraser::new(conn, ["profile:{user}", "global:settings"]).unwrap_err();
    assert!(
        shared.to_string().contains("\"global:settings\" has no {user} placeholder"),
        "{shared}"
    );
}

/// `RedisKeysEraser::open` brings its own connection from a URL (a bot on another `redis`
/// version has no client of this crate's type to give): it erases and lists like `new`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_keys_eraser_opened_from_a_url_erases_and_lists() {
    use teloxide_retention::{Eraser, Erasure, ErasureReason};
    let server = RedisServer::start();
    let mut conn = server.sync_connection();
    for key in ["profile:7", "profile:8", "cart:{7}"] {
        let () = redis::cmd("SET").arg(key).arg("x").query(&mut conn).unwrap();
    }
    let eraser = RedisKeysEraser::open(&server.url(), ["profile:{user}", "cart:{{user}}"]).unwrap();
    let listed = eraser.list(None).await.unwrap().unwrap();
    let mut users: Vec<u64> = listed.users.iter().map(|(u, _)| u.0).collect();
    users.sort_unstable();
    users.dedup();
    assert_eq!(users, [7, 8]);
    eraser.erase(Erasure::new(UserId(7), ErasureReason::OptOut)).await.unwrap();
    let left: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    assert_eq!(left, ["profile:8"]);

    let err = RedisKeysEraser::open("redis://host:99999/", ["p:{user}"]).unwrap_err();
    assert!(err.is_config() && err.to_string().contains("URL is invalid"), "{err}");
    let err = RedisKeysEraser::open(&server.url(), ["global"]).unwrap_err();
    assert!(err.is_config(), "{err}");
}

every_store! {
    async fn a_stuck_erasure_is_reported_once_a_day_by_one_replica_and_retried(env) {
        let reports = Arc::new(std::sync::Mutex::new(Vec::new()));
        // Two replicas share the store and the eraser, which fails 21 times.
        let eraser = Recorder::new("profiles").failing_first(21);
        let mut replicas = Vec::new();
        for _ in 0..2 {
            let reports = Arc::clone(&reports);
            let clock = env.clock.clone();
            let replica = env
                .builder()
                .await
                .erase_with(eraser.clone())
                .on_stuck(move |stuck| reports.lock().unwrap().push((clock.now_ms(), stuck)))
                .build()
                .unwrap();
            replicas.push(replica);
        }
        assert!(matches!(
            replicas[0].erase_user(UserId(1)).await.unwrap(),
            OptOutOutcome::Retrying { .. }
        ));
        // A pass every 6 hours (the longest retry delay), alternating replicas, for 5 days.
        for pass in 1..=20 {
            env.clock.advance(Duration::from_secs(6 * 3600));
            replicas[pass % 2].prune_once().await.unwrap();
        }
        let reports = reports.lock().unwrap().clone();
        let hours: Vec<i64> = reports.iter().map(|(at, _)| (at - T0) / 3_600_000).collect();
        assert_eq!(hours, [72, 96, 120], "after 3 days, then once a day: {reports:?}");
        let (_, first) = &reports[0];
        assert_eq!((first.user, first.reason), (UserId(1), ErasureReason::OptOut));
        assert_eq!(first.failing_since.timestamp_millis(), T0);
        assert_eq!(first.attempts, 13, "the opt-out's own attempt and 12 retries");
        assert_eq!(first.failures, [("profiles".to_owned(), "database unavailable".to_owned())]);
        let counted: u64 = replicas.iter().map(|r| r.stats().stuck_erasures).sum();
        assert_eq!(counted, 3, "each report counted once, by the replica that made it");

        // It was retried all along: the 22nd attempt succeeds, and nothing more is reported.
        env.clock.advance(Duration::from_secs(6 * 3600));
        assert_eq!(replicas[0].prune_once().await.unwrap().erased, 1);
        assert_eq!(eraser.erased(1), 1);
        assert_eq!(replicas[0].status(UserId(1)).await.unwrap().erasure, None);
    }
}
