//! The audit's promises: it never erases new data it takes for leftovers, writes nothing in
//! report mode, waits for silent writers before erasing residue, and never lets a listing
//! (the bot's code) hold the pruner; on every store.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::DateTime;
use teloxide::types::UserId;
use teloxide_retention::{
    BoxError, Erasure, ErasureReason, Listing, ReceiptKey, Retention, UntrackedUsers, erase_fn,
};

use crate::adoption::Table;
use crate::common::{DAY, Env, T0};
use crate::every_store;
use crate::support::eventually;

fn key() -> ReceiptKey {
    ReceiptKey::new(*b"an example key of thirty-two b.!").unwrap()
}

/// An eraser that deletes a user's orders but forgets their order items (a missed table),
/// and lists the users of both tables with their newest order as their last activity.
fn missing_items(orders: &Table, items: &Table) -> impl teloxide_retention::Eraser {
    let erase = orders.clone();
    let (orders, items) = (orders.clone(), items.clone());
    erase_fn("orders", move |e: Erasure| {
        erase.remove(e.user.0);
        async { Ok::<_, BoxError>(()) }
    })
    .list_with(move |_cursor: Option<String>| {
        let mut users: Vec<u64> = orders.rows().iter().map(|(u, _)| u.0).collect();
        users.extend(items.rows().iter().map(|(u, _)| u.0));
        users.sort_unstable();
        users.dedup();
        let page: Vec<_> = users
            .into_iter()
            .map(|u| (UserId(u), orders.at(u).and_then(DateTime::from_timestamp_millis)))
            .collect();
        async move { Ok::<_, BoxError>(Listing::page_with_activity(page, None)) }
    })
}

/// A bot with the [`missing_items`] eraser, receipts on, a 90-day threshold.
async fn bot(env: &Env, orders: &Table, items: &Table) -> Retention {
    env.bare_builder()
        .await
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(missing_items(orders, items))
        .receipts(key(), 60 * DAY)
        .build()
        .unwrap()
}

/// Users `users` interact now and have an order and an order item.
async fn customers(bot: &Retention, orders: &Table, items: &Table, users: &[u64]) {
    for &user in users {
        assert!(bot.note_interaction(UserId(user)).await.is_stored());
        orders.insert(user, T0);
        items.insert(user, T0);
    }
    bot.flush().await.unwrap();
}

/// A bot whose eraser deletes and lists `orders` (user 9 has an order and is tracked), and
/// whose first listing call finishes user 9's erasure after reading the page, before the
/// audit looks the page's users up; with or without receipts.
async fn racing_bot(env: &Env, orders: &Table, receipts: bool) -> Retention {
    let bot_cell: Arc<OnceLock<Retention>> = Arc::default();
    let raced = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let eraser = {
        let erase = orders.clone();
        let list = orders.clone();
        let (bot_cell, clock) = (Arc::clone(&bot_cell), env.clock.clone());
        erase_fn("orders", move |e: Erasure| {
            erase.remove(e.user.0);
            async { Ok::<_, BoxError>(()) }
        })
        .list_with(move |_cursor: Option<String>| {
            let page = list.rows();
            let (bot_cell, clock, raced) =
                (Arc::clone(&bot_cell), clock.clone(), Arc::clone(&raced));
            async move {
                if !raced.swap(true, std::sync::atomic::Ordering::SeqCst) {
                    clock.advance(Duration::from_secs(1));
                    let bot: &Retention = bot_cell.get().unwrap();
                    bot.erase_user(UserId(9)).await.unwrap();
                }
                Ok::<_, BoxError>(Listing::page_with_activity(page, None))
            }
        })
    };
    let mut builder =
        env.bare_builder().await.inactive_after(90 * DAY).without_commands().erase_with(eraser);
    if receipts {
        builder = builder.receipts(key(), 60 * DAY);
    }
    let bot = builder.build().unwrap();
    assert!(bot.note_interaction(UserId(9)).await.is_stored());
    bot.flush().await.unwrap();
    orders.insert(9, T0);
    let _ = bot_cell.set(bot.clone());
    bot
}

every_store! {
    #![with_tls]
    #![on_cluster]
    /// A user erased months ago comes back through a path that bypasses the layer (a
    /// web-shop order): the eraser lists them with that new activity. They are a user to
    /// adopt, never residue, and their new order is kept. Under `Report` nothing is
    /// written. (Before the fix the audit called them residue, even under `Report`, and the
    /// next pass erased the new order.)
    async fn new_data_after_an_erasure_is_adopted_and_a_report_writes_nothing(env) {
        let (orders, items) = (Table::default(), Table::default());
        let bot = bot(&env, &orders, &items).await;
        customers(&bot, &orders, &items, &[5, 6]).await;
        bot.erase_user(UserId(5)).await.unwrap();
        bot.erase_user(UserId(6)).await.unwrap();
        assert!(!orders.contains(5) && items.contains(5), "user 5's items are missed");
        items.remove(6);
        // Ten days later user 6 orders from the web shop, outside the layer.
        env.clock.advance(10 * DAY);
        orders.insert(6, T0 + 10 * 86_400_000);
        env.clock.advance(10 * DAY);
        let tracked = bot.tracked_users().await.unwrap();

        let report = bot.audit(UntrackedUsers::Report).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.listed, part.untracked, part.residue, part.adopted), (2, 2, 1, 0), "{part:?}");
        assert_eq!(bot.status(UserId(5)).await.unwrap().erasure, None, "a report writes nothing");
        assert_eq!(bot.status(UserId(6)).await.unwrap().last_seen, None);
        assert_eq!(bot.tracked_users().await.unwrap(), tracked);

        let report = bot.audit(UntrackedUsers::Adopt).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.untracked, part.residue, part.adopted), (2, 1, 1), "{part:?}");
        let six = bot.status(UserId(6)).await.unwrap();
        assert_eq!(six.last_seen.unwrap().timestamp_millis(), T0 + 10 * 86_400_000);
        assert_eq!(six.erasure, None, "user 6 is a user again, on the clock of the new order");
        let five = bot.status(UserId(5)).await.unwrap().erasure.expect("residue erased again");
        assert_eq!(five.reason, ErasureReason::Inactive);
        assert_eq!(five.marked_at.unwrap().timestamp_millis(), T0, "marked at the erasure");

        let erased = crate::support::prune_until_done(&bot).await;
        assert_eq!(erased, 1, "the residue only");
        assert!(orders.contains(6), "the new order is kept");
    }

    /// A residue erasure is marked at the erasure its receipt records, not at the audit:
    /// an interaction between the two that reaches the store only after the audit (a
    /// replica's group commit or outage buffer) cancels it. Fails if the mark is the
    /// audit's time.
    async fn a_residue_is_marked_at_the_recorded_erasure(env) {
        let (orders, items) = (Table::default(), Table::default());
        let bot = bot(&env, &orders, &items).await;
        customers(&bot, &orders, &items, &[7]).await;
        bot.erase_user(UserId(7)).await.unwrap();
        env.clock.advance(2 * DAY);
        let report = bot.audit(UntrackedUsers::Adopt).await.unwrap();
        assert_eq!(report.residue(), 1, "{report:?}");
        // User 7 wrote a day after their erasure; the write lands after the audit.
        env.clock.set_unix_ms(T0 + 86_400_000);
        assert!(bot.note_interaction(UserId(7)).await.is_stored());
        bot.flush().await.unwrap();
        env.clock.set_unix_ms(T0 + 2 * 86_400_000 + 1_000);
        let pass = bot.prune_once().await.unwrap();
        assert_eq!(pass.erased, 0, "user 7 came back after the erasure: {pass:?}");
        let seven = bot.status(UserId(7)).await.unwrap();
        assert_eq!(seven.last_seen.unwrap().timestamp_millis(), T0 + 86_400_000);
        assert_eq!(seven.erasure, None);
    }

    /// An erasure confirmed while the audit reads a page is no residue and no user to adopt:
    /// the page may show what that erasure removed since. (Before the fix the audit read
    /// every receipt first, found none for the user, and adopted the user just erased.)
    async fn an_audit_racing_an_erasure_neither_adopts_nor_erases_again(env) {
        let orders = Table::default();
        let bot = racing_bot(&env, &orders, true).await;
        let report = bot.audit(UntrackedUsers::Adopt).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.listed, part.untracked, part.residue), (1, 0, 0), "{part:?}");
        let nine = bot.status(UserId(9)).await.unwrap();
        assert_eq!((nine.last_seen, nine.erasure), (None, None), "user 9 stays erased");
    }

    /// Without receipts nothing records an erasure, so the audit cannot tell a user an
    /// erasure removed while it read their page from one never tracked: it defers the
    /// page's untracked users to a later audit, which adopts those an eraser still lists.
    /// (Before the fix the audit adopted user 9 just after their erasure finished: an
    /// erased user tracked again.)
    async fn without_receipts_an_audit_racing_an_erasure_never_adopts_the_erased_user(env) {
        let orders = Table::default();
        let bot = racing_bot(&env, &orders, false).await;
        // User 10's order was written outside the layer: a user to adopt.
        orders.insert(10, T0);
        let report = bot.audit(UntrackedUsers::Adopt).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.listed, part.untracked, part.adopted), (2, 2, 0), "{part:?}");
        assert_eq!((part.deferred, report.deferred()), (2, 2), "{part:?}");
        let nine = bot.status(UserId(9)).await.unwrap();
        assert_eq!((nine.last_seen, nine.erasure), (None, None), "user 9 stays erased");
        assert_eq!(bot.status(UserId(10)).await.unwrap().last_seen, None, "deferred");

        // The next audit, with no erasure finishing during it, adopts user 10 only.
        let report = bot.audit(UntrackedUsers::Adopt).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.listed, part.adopted, part.deferred), (1, 1, 0), "{part:?}");
        assert!(bot.status(UserId(10)).await.unwrap().last_seen.is_some());
        assert_eq!(bot.status(UserId(9)).await.unwrap().last_seen, None);
    }

    /// A user whose erasure for inactivity is running (a batch keeps no job for them) is
    /// known to the audit: never adopted while being erased. (Before the fix the audit
    /// counted them untracked and tracked them again.)
    async fn a_user_in_a_running_erasure_is_known_to_the_audit(env) {
        let gate = Arc::new(crate::support::Gate::default());
        let held = Table::default();
        held.insert(9, T0);
        let list = held.clone();
        let lister = erase_fn("lister", |_: Erasure| async { Ok::<_, BoxError>(()) })
            .list_with(move |_cursor: Option<String>| {
                let page = list.rows();
                async move { Ok::<_, BoxError>(Listing::page_with_activity(page, None)) }
            });
        let bot = env
            .builder()
            .await
            .erase_with(lister)
            .erase_with(crate::support::Recorder::new("profiles").gated(Arc::clone(&gate)))
            .build()
            .unwrap();
        assert!(bot.note_interaction(UserId(9)).await.is_stored());
        bot.flush().await.unwrap();
        env.clock.advance(31 * DAY);
        crate::support::kill_pass_inside_eraser(&bot, &gate).await;
        let report = bot.audit(UntrackedUsers::Adopt).await.unwrap();
        let part = &report.erasers[0];
        assert_eq!((part.listed, part.tracked, part.untracked), (1, 1, 0), "{part:?}");
        assert_eq!(bot.status(UserId(9)).await.unwrap().last_seen, None, "not tracked again");
    }

    /// A listing call that never answers, and one that hands back the same cursor for
    /// ever, end the audit of their eraser with the reason; the other erasers are audited.
    async fn a_hung_or_endless_listing_ends_with_its_reason(env) {
        let hung = erase_fn("hung", |_: Erasure| async { Ok::<_, BoxError>(()) })
            .list_with(|_cursor: Option<String>| std::future::pending::<Result<Listing, BoxError>>());
        let endless = erase_fn("endless", |_: Erasure| async { Ok::<_, BoxError>(()) })
            .list_with(|_cursor: Option<String>| async {
                Ok::<_, BoxError>(Listing::page([UserId(11)], Some("same".to_owned())))
            });
        let fine = erase_fn("fine", |_: Erasure| async { Ok::<_, BoxError>(()) })
            .list_with(|_cursor: Option<String>| async {
                Ok::<_, BoxError>(Listing::page([UserId(12)], None))
            });
        let bot = env
            .builder()
            .await
            .eraser_timeout(Duration::from_millis(300))
            .erase_with(hung)
            .erase_with(endless)
            .erase_with(fine)
            .build()
            .unwrap();
        let report = bot.audit(UntrackedUsers::Adopt).await.unwrap();
        let [hung, endless, fine] = &report.erasers[..] else { panic!("{report:?}") };
        assert!(hung.error.as_deref().is_some_and(|e| e.contains("did not answer")), "{hung:?}");
        assert!(endless.error.as_deref().is_some_and(|e| e.contains("second time")), "{endless:?}");
        assert_eq!(endless.listed, 1, "the first page counts");
        assert_eq!((fine.listed, fine.adopted, fine.error.as_deref()), (1, 1, None), "{fine:?}");
        assert_eq!(bot.tracked_users().await.unwrap(), 2);
    }

    /// The scheduled audit never holds the pruner: while its listing hangs, passes go on
    /// (an opt-out is carried out), and `shutdown` returns. (Before the fix the audit ran
    /// inside the pruner loop: the opt-out waited for ever, and so did `shutdown`.)
    async fn a_hung_listing_holds_neither_the_passes_nor_the_shutdown(env) {
        let listing = Arc::new(tokio::sync::Notify::new());
        let hung = {
            let listing = Arc::clone(&listing);
            erase_fn("hung", |_: Erasure| async { Ok::<_, BoxError>(()) }).list_with(
                move |_cursor: Option<String>| {
                    listing.notify_one();
                    std::future::pending::<Result<Listing, BoxError>>()
                },
            )
        };
        let profiles = crate::support::Recorder::new("profiles");
        let bot = env
            .builder()
            .await
            .prune_every(Duration::from_millis(50))
            .erase_with(hung)
            .erase_with(profiles.clone())
            .audit_every(Duration::from_secs(3600), UntrackedUsers::Adopt)
            .build()
            .unwrap();
        assert!(bot.note_interaction(UserId(3)).await.is_stored());
        bot.flush().await.unwrap();
        let pruner = bot.spawn_pruner();
        listing.notified().await;
        bot.schedule_opt_out(UserId(3)).await.unwrap();
        eventually("the pruner carries out the opt-out", || async { profiles.erased(3) == 1 })
            .await;
        tokio::time::timeout(Duration::from_secs(60), pruner.shutdown())
            .await
            .expect("shutdown returns while the audit's listing hangs");
    }
}

/// Plants the heartbeat of another process that missed its heartbeats for a minute but is
/// not dead (`writer_timeout` is an hour): it may be cut off and buffering interactions.
async fn plant_a_silent_writer(env: &Env) {
    let now = teloxide_retention::Clock::now_ms(&teloxide_retention::SystemClock);
    if let Some(server) = &env.redis {
        let mut conn = server.sync_connection();
        let (secs, _): (i64, i64) = redis::cmd("TIME").query(&mut conn).unwrap();
        let beat = format!("{},0", secs * 1000 - 60_000);
        let () = redis::cmd("HSET")
            .arg("{retention}:writers")
            .arg("77")
            .arg(beat)
            .query(&mut conn)
            .unwrap();
        return;
    }
    let sql = r#"INSERT INTO "retention.writers" (id, at, backlog) VALUES (77, $1, 0)"#;
    if let Some((dir, _)) = &env.sqlite {
        let url = format!("sqlite:{}", dir.path().join("retention.db").display());
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        sqlx::query(sql).bind(now - 60_000).execute(&pool).await.unwrap();
        return;
    }
    if let Some((server, _)) = &env.postgres {
        let pool = sqlx::PgPool::connect(&server.url()).await.unwrap();
        // The server's clock decides on PostgreSQL.
        let sql = r#"INSERT INTO "retention.writers" (id, at, backlog)
            VALUES (77, CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT) - 60000, 0)"#;
        sqlx::query(sql).execute(&pool).await.unwrap();
        return;
    }
    panic!("no store to plant a heartbeat in");
}

every_store! {
    /// A residue erasure waits for silent writers, as every erasure for inactivity does: one of
    /// them may hold the user's return, unwritten. Opt-outs go on meanwhile. (Before the fix the
    /// residue was erased at once.) Not on the memory store: it serves one process, so it
    /// has no heartbeat of another to plant.
    #[stores(redis, sqlite, postgres)]
    async fn a_residue_waits_for_silent_writers(env) {
        let (orders, items) = (Table::default(), Table::default());
        let bot = env
            .bare_builder()
            .await
            .inactive_after(90 * DAY)
            .without_commands()
            .batch_size(10)
            .erase_with(missing_items(&orders, &items))
            .receipts(key(), 60 * DAY)
            .build()
            .unwrap();
        // A hundred residues queued before an opt-out, ten users a batch.
        let residues: Vec<u64> = (100..200).collect();
        customers(&bot, &orders, &items, &residues).await;
        customers(&bot, &orders, &items, &[8]).await;
        for &user in &residues {
            bot.erase_user(UserId(user)).await.unwrap();
        }
        env.clock.advance(DAY);
        assert_eq!(bot.audit(UntrackedUsers::Adopt).await.unwrap().residue(), 100);
        plant_a_silent_writer(&env).await;
        env.clock.advance(Duration::from_secs(1));
        bot.schedule_opt_out(UserId(8)).await.unwrap();
        // The residues are held back (and postponed), so the opt-out behind them goes on.
        let mut opt_outs = 0;
        for _ in 0..3 {
            let pass = bot.prune_once().await.unwrap();
            assert!(
                pass.inactivity_held.as_deref().is_some_and(|w| w.contains("writer 77")),
                "{pass:?}"
            );
            assert_eq!(pass.erased_for(ErasureReason::Inactive), 0, "the residue waits: {pass:?}");
            opt_outs += pass.erased_for(ErasureReason::OptOut);
        }
        assert_eq!(opt_outs, 1, "the opt-out goes on");
        let first = bot.status(UserId(100)).await.unwrap().erasure.expect("still scheduled");
        assert_eq!(first.reason, ErasureReason::Inactive);
    }
}

/// The audit holds with many receipts: it looks a page's users up by their tags, and the
/// receipts an older version wrote (in the stream only, before the index of tags existed)
/// are indexed step by step, each step one bounded store call, every one of them found.
/// (Before the fix the audit read every receipt in one call: with 300,000 receipts and a
/// 1.5 s store timeout it timed out every time. How the audit fares at a million receipts
/// is the bench's to say, section 10: a bound in a test fails on a busy machine.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_audit_holds_with_many_receipts_written_before_the_index() {
    let env = Env::redis();
    let (orders, items) = (Table::default(), Table::default());
    let bot = env
        .bare_builder()
        .await
        .inactive_after(90 * DAY)
        .without_commands()
        .erase_with(missing_items(&orders, &items))
        .receipts(key(), 60 * DAY)
        .build()
        .unwrap();
    customers(&bot, &orders, &items, &[5]).await;
    bot.erase_user(UserId(5)).await.unwrap();
    // Other users' receipts, as an older version wrote them, and no index.
    let mut conn = env.redis_connection();
    for chunk in 0..6 {
        let mut pipe = redis::pipe();
        for i in 0..10_000 {
            pipe.cmd("XADD")
                .arg("{retention}:receipts")
                .arg("*")
                .arg(&[("h", format!("{:064x}", chunk * 10_000 + i)), ("r", "i".to_owned())])
                .arg(&[("t", T0.to_string()), ("e", "[]".to_owned()), ("a", "1".to_owned())])
                .ignore();
        }
        let () = pipe.query(&mut conn).unwrap();
    }
    let () = redis::cmd("DEL").arg("{retention}:erased").query(&mut conn).unwrap();
    let () =
        redis::cmd("HDEL").arg("{retention}:meta").arg("erased_index").query(&mut conn).unwrap();
    env.clock.advance(DAY);
    let report = bot.audit(UntrackedUsers::Adopt).await.expect("the audit holds");
    assert_eq!((report.residue(), report.untracked()), (1, 1), "{report:?}");
    let indexed: u64 = redis::cmd("ZCARD").arg("{retention}:erased").query(&mut conn).unwrap();
    assert_eq!(indexed, 60_001, "every receipt is indexed");
}
