//! Real faults against a real `redis-server`: a hung server (SIGSTOP), a server that is down
//! when the bot starts. Timings are asserted only as wide bounds.

use std::time::{Duration, Instant};

use teloxide::types::UserId;
use teloxide_retention::{Noted, RedisStore, Retention};

use crate::common::{DAY, Env};
use crate::support::eventually;

const STORE_TIMEOUT: Duration = Duration::from_secs(2);

/// How a test breaks Redis for a while.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// SIGSTOP: connections stay open and nothing answers.
    Hang,
    /// SIGKILL, then a new server on the same socket.
    Kill,
}

/// Records interactions of new users from four tasks while `fault` lasts `outage`, with one
/// process that wrote before (warm) and one built but never used (fresh: its first write,
/// and the read of the feed position before it, fall into the outage). Returns the slowest
/// `note_interaction` of each, after checking that every interaction reaches Redis.
async fn slowest_during(fault: Fault, outage: Duration) -> (Duration, Duration) {
    let mut env = Env::redis();
    let build = || async { env.builder().await.store_timeout(STORE_TIMEOUT).build().unwrap() };
    let warm = build().await;
    let fresh = build().await;
    assert_eq!(warm.note_interaction(UserId(1)).await, Noted::Written);
    match fault {
        Fault::Hang => env.redis_server().pause(),
        Fault::Kill => env.redis_server().stop(),
    }
    let started = Instant::now();
    let load = |retention: Retention, first: u64| {
        tokio::spawn(async move {
            let mut slowest = Duration::ZERO;
            let mut user = first;
            while started.elapsed() < outage {
                user += 1;
                let call = Instant::now();
                retention.note_interaction(UserId(user)).await;
                slowest = slowest.max(call.elapsed());
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (slowest, user - first)
        })
    };
    let tasks: Vec<_> = (0..4u64)
        .map(|i| {
            (
                i % 2 == 0,
                load(if i % 2 == 0 { warm.clone() } else { fresh.clone() }, (i + 1) * 1_000_000),
            )
        })
        .collect();
    let (mut slow_warm, mut slow_fresh, mut users) = (Duration::ZERO, Duration::ZERO, 1);
    for (is_warm, task) in tasks {
        let (slowest, n) = task.await.unwrap();
        users += n;
        if is_warm {
            slow_warm = slow_warm.max(slowest);
        } else {
            slow_fresh = slow_fresh.max(slowest);
        }
    }
    match fault {
        Fault::Hang => env.redis_server().resume(),
        Fault::Kill => env.redis_server().restart(),
    }
    // Nothing was lost: every interaction reaches Redis once it answers (a killed server
    // keeps nothing on disk here, so the one write before the kill went with it).
    if let Fault::Kill = fault {
        users -= 1;
    }
    eventually("buffered interactions are written", || async {
        warm.tracked_users().await.ok() == Some(users)
    })
    .await;
    (slow_warm, slow_fresh)
}

/// `store_timeout`, plus 1.5 s for scheduling on a loaded 2-core machine: still below
/// twice the store timeout, the wait of the bug these tests pin.
const BOUND: Duration = Duration::from_millis(STORE_TIMEOUT.as_millis() as u64 + 1_500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_redis_never_holds_an_interaction_past_the_store_timeout() {
    // Measured before the fix: with `store_timeout` 2 s, Redis SIGSTOPped for 4 s and 10 s
    // under load, the slowest `note_interaction` took 4.0 s: a handler waited twice the
    // store timeout, as a process's first write followed a read of the feed position.
    let (warm, fresh) = slowest_during(Fault::Hang, Duration::from_secs(4)).await;
    assert!(warm <= BOUND, "a warm process waited {warm:?}");
    assert!(fresh <= BOUND, "a fresh process waited {fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_redis_never_holds_an_interaction_past_the_store_timeout() {
    let (warm, fresh) = slowest_during(Fault::Kill, Duration::from_secs(3)).await;
    assert!(warm <= BOUND, "a warm process waited {warm:?}");
    assert!(fresh <= BOUND, "a fresh process waited {fresh:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_starts_while_redis_is_down_and_catches_up() {
    // Measured before the fix: `RedisStore::open` failed while Redis was down, so a bot
    // written like the quick start exited at start.
    let mut env = Env::redis();
    let url = env.redis.as_ref().unwrap().url();
    env.redis_server().stop();

    let err = RedisStore::connect(&url).await.unwrap_err();
    assert!(matches!(err, teloxide_retention::Error::Redis(_)), "the eager check fails: {err:?}");
    let store = RedisStore::open(&url).await.expect("opens while Redis is down");
    let retention = Retention::builder(store)
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(env.clock.clone())
        .store_timeout(STORE_TIMEOUT)
        .build()
        .unwrap();
    let started = Instant::now();
    assert_eq!(retention.note_interaction(UserId(7)).await, Noted::Buffered);
    assert!(started.elapsed() <= BOUND, "waited {:?}", started.elapsed());

    env.redis_server().restart();
    eventually("the interaction kept at start is written", || async {
        retention.tracked_users().await.ok() == Some(1)
    })
    .await;
    let status = retention.status(UserId(7)).await.unwrap();
    assert_eq!(status.last_seen.unwrap().timestamp_millis(), crate::common::T0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn erased_ids_leave_the_feed_within_two_windows() {
    // Measured before the fix: after a completed opt-out the user's id stayed in
    // `{ns}:feed` (`XADD … MINID ~` trims nothing while the stream is small, and the key had
    // no expiry), contradicting "trimmed to 10 minutes".
    let env = Env::redis();
    let retention = env.builder().await.build().unwrap();
    let mut conn = env.redis_connection();
    // An announcement from long ago, about user 9.
    let _: String = redis::cmd("XADD")
        .arg("{retention}:feed")
        .arg("1-0")
        .arg("u")
        .arg(9)
        .arg("s")
        .arg(0)
        .arg("e")
        .arg(0)
        .arg("o")
        .arg(1)
        .query(&mut conn)
        .unwrap();
    retention.note_interaction(UserId(5)).await;
    retention.erase_user(UserId(5)).await.unwrap();

    let entries: Vec<(String, Vec<String>)> =
        redis::cmd("XRANGE").arg("{retention}:feed").arg("-").arg("+").query(&mut conn).unwrap();
    let users: Vec<&str> = entries.iter().map(|(_, fields)| fields[1].as_str()).collect();
    assert_eq!(users, ["5"], "the old announcement is trimmed exactly");
    let ttl: i64 = redis::cmd("PTTL").arg("{retention}:feed").query(&mut conn).unwrap();
    assert!(ttl > 0 && ttl <= 10 * 60 * 1000, "the feed expires within one window: {ttl}");
}

use crate::common::FastClock;

/// A proxy to `server` that makes every `TIME` a client sends fail (so the first
/// measurement of the clock fails), while scripts still read Redis's clock.
fn time_failing_proxy(server: &crate::common::RedisServer) -> crate::common::proxy::Proxy {
    crate::common::proxy::Proxy::start_rewriting_requests(
        server.socket(),
        b"$4\r\nTIME\r\n",
        b"$4\r\nTIMX\r\n",
    )
}

/// A bot on a host 25 minutes fast, through `proxy`, with a 30-day threshold.
async fn fast_bot(proxy: &crate::common::proxy::Proxy) -> Retention {
    Retention::builder(RedisStore::open(&proxy.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .without_commands()
        .clock(FastClock)
        .build()
        .unwrap()
}

/// A claim never runs on a clock that was not measured against the store's: a bot whose
/// `TIME` requests fail (so the first measurement fails; scripts still read Redis's clock)
/// on a host 25 minutes fast erases nobody early. Before the fix its claim took the host's
/// time and erased a user idle for 30 days less 10 minutes under a 30-day threshold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_claim_runs_on_a_clock_that_was_never_measured() {
    use teloxide_retention::Clock;
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let proxy = time_failing_proxy(server);
    // The user, idle for 30 days less 10 minutes by the real clock (Redis's).
    let seeder = Retention::builder(RedisStore::open(&server.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .without_commands()
        .build()
        .unwrap();
    let idle_since = crate::common::adopt_nearly_inactive(&seeder).await;

    let fast = fast_bot(&proxy).await;
    assert!(FastClock.now_ms() > idle_since + (30 * DAY).as_millis() as i64 + 60_000);
    let pass = fast.prune_once().await.expect("the pass runs on Redis's clock");
    assert_eq!(pass.erased, 0, "a claim on the unmeasured host clock erased a user early");
    assert!(seeder.status(UserId(42)).await.unwrap().last_seen.is_some(), "still tracked");
    assert_eq!(fast.stats().clock_skew_warnings, 0, "the clock was never measured");
}

/// No stored time is later than the store's now (invariant 11): a bot on a host 25
/// minutes fast whose clock was never measured (its `TIME` requests fail) records an
/// interaction and adopts a user, and both are stored at Redis's now, not 25 minutes in the
/// future. Before the fix they kept the host's time: the users looked active for 25
/// minutes more than they were, and a later block looked like a return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmeasured_fast_clock_never_stores_a_future_time() {
    use teloxide_retention::Clock;
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let proxy = time_failing_proxy(server);
    let fast = fast_bot(&proxy).await;
    assert!(fast.note_interaction(UserId(7)).await.is_stored());
    let at = chrono::DateTime::from_timestamp_millis(FastClock.now_ms());
    let adopted =
        fast.adopt([(UserId(8), at)], &teloxide_retention::Adoption::new()).await.unwrap();
    assert_eq!(adopted.newly_tracked, 1, "{adopted:?}");
    // Read on Redis's clock, through a store of its own.
    let reader = Retention::builder(RedisStore::open(&server.url()).await.unwrap())
        .inactive_after(30 * DAY)
        .without_commands()
        .build()
        .unwrap();
    let real_now = teloxide_retention::SystemClock.now_ms();
    for user in [7, 8] {
        let seen = reader.status(UserId(user)).await.unwrap().last_seen.expect("tracked");
        assert!(
            seen.timestamp_millis() <= real_now + 5_000,
            "user {user} stored at {seen}, {} s after the store's now",
            (seen.timestamp_millis() - real_now) / 1000
        );
    }
    assert_eq!(fast.stats().clock_skew_warnings, 0, "the clock was never measured");
}

/// The census stores no probe time later than Redis's now either (invariant 11): a bot on
/// a host 25 minutes fast whose `TIME` requests fail records its answers at Redis's now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmeasured_fast_clock_never_stores_a_future_probe_time() {
    use teloxide_retention::Clock;
    let env = Env::redis();
    let server = env.redis.as_ref().unwrap();
    let proxy = time_failing_proxy(server);
    let seeder = Retention::builder(RedisStore::open(&server.url()).await.unwrap())
        .inactive_after(90 * DAY)
        .without_commands()
        .build()
        .unwrap();
    let idle = crate::common::adopt_nearly_inactive(&seeder).await;
    let api = crate::common::FakeBotApi::start().await;
    let probes = teloxide_retention::Probes::new().one_every(Duration::from_millis(1));
    let fast = Retention::builder(RedisStore::open(&proxy.url()).await.unwrap())
        .inactive_after(90 * DAY)
        .without_commands()
        .clock(FastClock)
        .probe_with(api.bot(), probes)
        .census(teloxide_retention::Census::new().idle_for(DAY))
        .build()
        .unwrap();
    assert!(idle > 0);
    assert_eq!(fast.prune_once().await.unwrap().census_probed, 1);
    let real_now = teloxide_retention::SystemClock.now_ms();
    let probed = seeder.status(UserId(42)).await.unwrap().last_probed.expect("probed");
    assert!(
        probed.timestamp_millis() <= real_now + 5_000,
        "probed at {probed}, {} s after the store's now",
        (probed.timestamp_millis() - real_now) / 1000
    );
}

/// An update waits for a hung store once, not once per store call the crate makes for it:
/// an unblock (cancelling the mark and recording the interaction) and `/mydata` (the
/// interaction, the key naming the user, the rate limit) each answer within the store
/// timeout and a margin. (Before the fix an unblock waited twice the store timeout, and
/// `/mydata` three times.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_store_holds_an_update_once_whatever_the_crate_asks_it() {
    use crate::common::{FakeBotApi, dispatch, updates};
    let timeout = Duration::from_secs(3);
    let bound = timeout * 3 / 2;
    let mut env = Env::redis();
    let retention =
        env.bare_builder().await.inactive_after(30 * DAY).store_timeout(timeout).build().unwrap();
    assert!(retention.mark_gone(UserId(5), teloxide_retention::GoneReason::Blocked).await.unwrap());
    let api = FakeBotApi::start().await;
    let tree = || {
        retention.wrap(
            teloxide::dptree::entry()
                .endpoint(|| async { Ok::<_, teloxide_retention::BoxError>(()) }),
        )
    };
    // Warm up the dispatcher's own start (getMe), with the store still answering.
    dispatch(&api, tree(), vec![updates::message(6, "hi")]).await;
    env.redis_server().pause();
    for (what, update) in
        [("an unblock", updates::unblocked(5)), ("/mydata", updates::message(7, "/mydata"))]
    {
        let started = Instant::now();
        dispatch(&api, tree(), vec![update]).await;
        let took = started.elapsed();
        assert!(took <= bound, "{what} waited {took:?} for a store timeout of {timeout:?}");
    }
    env.redis_server().resume();
}
