//! The audit's built-in listings of teloxide's dialogue storages: `RedisStorage` (bare chat
//! id keys) and `PostgresStorage` (`teloxide_dialogues`), each on a real server of its own,
//! written by teloxide's own storage code; `SqliteStorage` is in `adoption.rs`.

use std::collections::BTreeSet;
use std::sync::Arc;

use teloxide::dispatching::dialogue::{Storage, serializer::Json};
use teloxide::types::ChatId;
use teloxide_retention::{DialogueEraser, Eraser, Retention, UntrackedUsers};

use crate::common::{DAY, Env};

/// 2,500 users with a private dialogue (more than two pages of a listing), and 3 groups.
fn users() -> Vec<i64> {
    (1..=2_500).map(|u| 5_000_000 + u).collect()
}

const GROUPS: [i64; 3] = [-1, -100_123, -1_001_234_567_890];

async fn write_dialogues<S>(storage: &Arc<S>)
where
    S: Storage<serde_json::Value> + Send + Sync + 'static,
    S::Error: std::fmt::Debug,
{
    for chat in users().into_iter().chain(GROUPS) {
        let state = serde_json::json!({ "step": "asked_name", "chat": chat });
        Arc::clone(storage).update_dialogue(ChatId(chat), state).await.unwrap();
    }
}

/// Every page of `eraser`'s listing, checking that no user is listed twice.
async fn list_all(eraser: &impl Eraser) -> BTreeSet<u64> {
    let (mut cursor, mut seen, mut pages) = (None, BTreeSet::new(), 0);
    loop {
        let page = eraser.list(cursor).await.unwrap().expect("a built-in listing");
        pages += 1;
        for (user, _) in page.users {
            assert!(seen.insert(user.0), "user {} listed twice", user.0);
        }
        match page.next {
            Some(next) => cursor = Some(next),
            None => break,
        }
        assert!(pages < 10_000, "the listing never ends");
    }
    seen
}

/// The audit puts every user with a dialogue on a clock; the first pass past the threshold
/// erases their dialogues and leaves the groups'; the next audit finds nobody.
async fn audit_then_prune<S>(env: &Env, storage: Arc<S>, eraser: impl Eraser)
where
    S: Storage<serde_json::Value> + Send + Sync + 'static,
    S::Error: std::fmt::Debug,
{
    let retention: Retention = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(eraser)
        .build()
        .unwrap();
    let report = retention.audit(UntrackedUsers::Adopt).await.unwrap();
    let part = &report.erasers[0];
    assert!(part.can_list);
    assert_eq!((part.listed, part.untracked, part.adopted), (2_500, 2_500, 2_500), "{part:?}");
    env.clock.advance(91 * DAY);
    let erased = crate::support::prune_until_done(&retention).await;
    assert_eq!(erased, 2_500);
    for chat in [users()[0], users()[2_499]] {
        assert_eq!(Arc::clone(&storage).get_dialogue(ChatId(chat)).await.unwrap(), None);
    }
    for chat in GROUPS {
        assert!(Arc::clone(&storage).get_dialogue(ChatId(chat)).await.unwrap().is_some());
    }
    let report = retention.audit(UntrackedUsers::Adopt).await.unwrap();
    assert_eq!((report.erasers[0].listed, report.erasers[0].untracked), (0, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teloxide_redis_storage_is_listed_by_its_chat_id_keys() {
    use teloxide::dispatching::dialogue::RedisStorage;
    use teloxide_retention::redis;

    // The dialogues on one server, the crate's own store in memory: the listing reads only
    // the dialogue server.
    let server = crate::common::RedisServer::start();
    let env = Env::memory();
    let storage = RedisStorage::open(server.url().as_str(), Json).await.unwrap();
    write_dialogues(&storage).await;
    // Keys that are no user id: a bot's other data in the same database.
    let client = redis::Client::open(server.url()).unwrap();
    let conn = redis::aio::ConnectionManager::new(client).await.unwrap();
    for key in ["0", "012", "9007199254740992", "1abc", "config"] {
        let _: () =
            redis::cmd("SET").arg(key).arg("x").query_async(&mut conn.clone()).await.unwrap();
    }
    let eraser = DialogueEraser::for_any_state(Arc::clone(&storage)).list_redis(conn);
    let expected: BTreeSet<u64> = users().into_iter().map(|u| u as u64).collect();
    assert_eq!(list_all(&eraser).await, expected);
    audit_then_prune(&env, storage, eraser).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_teloxide_postgres_storage_is_listed_from_its_dialogue_table() {
    use teloxide::dispatching::dialogue::PostgresStorage;

    let server = crate::common::postgres::PostgresServer::start();
    let env = Env::memory();
    let storage = PostgresStorage::open(&server.url(), 4, Json).await.unwrap();
    write_dialogues(&storage).await;
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let eraser = DialogueEraser::for_any_state(Arc::clone(&storage)).list_postgres(pool);
    let expected: BTreeSet<u64> = users().into_iter().map(|u| u as u64).collect();
    assert_eq!(list_all(&eraser).await, expected);
    audit_then_prune(&env, storage, eraser).await;
}

#[cfg(feature = "postgres")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_listing_without_the_dialogue_table_fails_naming_it() {
    let server = crate::common::postgres::PostgresServer::start();
    let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
    let storage = teloxide::dispatching::dialogue::InMemStorage::<serde_json::Value>::new();
    let eraser = DialogueEraser::for_any_state(storage).list_postgres(pool);
    let err = eraser.list(None).await.unwrap_err();
    assert!(err.to_string().contains("teloxide_dialogues"), "{err}");
}
