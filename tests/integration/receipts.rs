//! Erasure receipts: found with the right key only, gone after their lifetime, and never
//! holding a user id.

use std::time::Duration;

use teloxide::types::UserId;
use teloxide_retention::{Clock, ErasureReason, ReceiptKey, Retention};

use crate::common::{DAY, Env};
use crate::every_store;
use crate::support::Recorder;

fn key() -> ReceiptKey {
    ReceiptKey::new(*b"an example key of thirty-two b.!").unwrap()
}

async fn bot(env: &Env) -> (Retention, Recorder) {
    let profiles = Recorder::new("profiles");
    let retention = env
        .builder()
        .await
        .erase_with(profiles.clone())
        .erase_with(Recorder::new("orders").failing_first(3))
        .receipts(key(), 60 * DAY)
        .build()
        .unwrap();
    (retention, profiles)
}

every_store! {
    async fn receipts_are_found_with_their_key_and_expire(env) {
        let (bot, profiles) = bot(&env).await;
        for user in 1..=3 {
            bot.note_interaction(UserId(user)).await;
        }
        bot.flush().await.unwrap();
        env.clock.advance(31 * DAY);
        let first = env.clock.now_ms();
        // "orders" fails the first time: users 1..=3 are erased on the second attempt.
        assert_eq!(bot.prune_once().await.unwrap().erased, 0);
        env.clock.advance(Duration::from_secs(3600));
        let second = env.clock.now_ms();
        assert_eq!(bot.prune_once().await.unwrap().erased, 3);
        assert_eq!(profiles.erased(1), 2);
        bot.erase_user(UserId(7)).await.unwrap();

        let receipts = bot.receipt(UserId(1)).await.unwrap();
        assert_eq!(receipts.len(), 1, "{receipts:?}");
        assert_eq!(receipts[0].reason, ErasureReason::Inactive);
        assert_eq!(receipts[0].erasers, ["profiles", "orders"]);
        assert_eq!(receipts[0].attempts, 2);
        assert_eq!(receipts[0].erased_at.timestamp_millis(), second);
        assert!(second > first);
        let opt_out = bot.receipt(UserId(7)).await.unwrap();
        assert_eq!(opt_out.len(), 1);
        assert_eq!(opt_out[0].reason, ErasureReason::OptOut);

        // A wrong key finds nothing; nor does a user never erased.
        let wrong = ReceiptKey::new([0u8; 32]).unwrap();
        assert!(bot.receipt_with(UserId(1), &wrong).await.unwrap().is_empty());
        assert!(bot.receipt(UserId(2000)).await.unwrap().is_empty());
        assert_eq!(bot.receipt_with(UserId(1), &key()).await.unwrap(), receipts);

        // Erased again later: two receipts, oldest first.
        bot.note_interaction(UserId(1)).await;
        bot.flush().await.unwrap();
        bot.erase_user(UserId(1)).await.unwrap();
        let both = bot.receipt(UserId(1)).await.unwrap();
        assert_eq!(both.len(), 2);
        assert_eq!(both[1].reason, ErasureReason::OptOut);

        // Past their lifetime (60 days) they are gone: the next erasure trims them.
        env.clock.advance(61 * DAY);
        assert!(bot.receipt(UserId(7)).await.unwrap().is_empty());
        bot.erase_user(UserId(8)).await.unwrap();
        assert!(bot.receipt(UserId(7)).await.unwrap().is_empty());
        assert_eq!(bot.receipt(UserId(8)).await.unwrap().len(), 1);
        if env.redis.is_some() {
            let mut conn = env.redis_connection();
            let keys: Vec<String> = redis::cmd("KEYS").arg("*receipts").query(&mut conn).unwrap();
            let mut left = 0;
            for key in keys {
                let len: u64 = redis::cmd("XLEN").arg(&key).query(&mut conn).unwrap();
                left += len;
                // Each stream goes as a whole once its newest receipt has lived 60 days.
                let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
                assert!(ttl > 0 && ttl <= 60 * 24 * 3600 * 1000, "{key} expires in {ttl} ms");
            }
            if env.shard_count() == 1 {
                // Only user 8's receipt: writing it trimmed the expired ones.
                assert_eq!(left, 1);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_are_off_unless_asked_for() {
    let env = Env::memory();
    let bot = env.builder().await.build().unwrap();
    let err = bot.receipt(UserId(1)).await.unwrap_err();
    assert!(err.to_string().contains("receipts are off"), "{err}");
    assert!(ReceiptKey::new([1u8; 16]).is_err(), "a short key is refused");
}

/// No key or value anywhere in Redis holds the id of a user erased with a receipt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_user_id_is_left_in_redis() {
    let env = Env::redis_sharded();
    let (bot, _) = bot(&env).await;
    let user = 987_654_321;
    bot.note_interaction(UserId(user)).await;
    bot.flush().await.unwrap();
    env.clock.advance(31 * DAY);
    // "orders" fails three times first.
    let mut erased = 0;
    for _ in 0..10 {
        erased += bot.prune_once().await.unwrap().erased;
        env.clock.advance(DAY);
    }
    assert_eq!(erased, 1);
    assert_eq!(bot.receipt(UserId(user)).await.unwrap()[0].attempts, 4);

    let mut conn = env.redis_connection();
    let keys: Vec<String> = redis::cmd("KEYS").arg("*").query(&mut conn).unwrap();
    let mut everything = String::new();
    for key in &keys {
        let kind: String = redis::cmd("TYPE").arg(key).query(&mut conn).unwrap();
        let value: redis::Value = match kind.as_str() {
            "string" => redis::cmd("GET").arg(key).query(&mut conn).unwrap(),
            "hash" => redis::cmd("HGETALL").arg(key).query(&mut conn).unwrap(),
            "zset" => redis::cmd("ZRANGE")
                .arg(key)
                .arg(0)
                .arg(-1)
                .arg("WITHSCORES")
                .query(&mut conn)
                .unwrap(),
            "stream" => redis::cmd("XRANGE").arg(key).arg("-").arg("+").query(&mut conn).unwrap(),
            other => panic!("unexpected key type {other} of {key}"),
        };
        everything.push_str(&format!("{key} {value:?}\n"));
    }
    assert!(everything.contains("receipts"), "the receipt is in Redis:\n{everything}");
    assert!(!everything.contains(&user.to_string()), "the id is in Redis:\n{everything}");
}
