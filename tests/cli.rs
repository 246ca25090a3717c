//! The operators' CLI, run as a process on a namespace seeded through the library in a
//! store of each test's own: a redis-server, a SQLite file, a PostgreSQL server. Every
//! subcommand's text and JSON output and exit code; the tests written with
//! [`every_store!`] run one body on each of the three.

#[path = "common/mod.rs"]
mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use teloxide::types::UserId;
use teloxide_retention::{
    ErasureReason, GoneReason, ManualClock, PostgresStore, RedisStore, Retention, RetentionBuilder,
    SqliteStore, Survey, erase_fn,
};

use common::postgres::PostgresServer;
use common::{DAY, RedisServer};

const KEY: &[u8; 32] = b"the receipts key of the cli test";

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The CLI binary of this build (the test crate's copy of `src/bin/teloxide-retention`).
fn binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_teloxide-retention-under-test"))
}

/// The store a test runs on, of its own: a redis-server, a SQLite file in a temp dir, or a
/// PostgreSQL server; the SQL stores are opened once, and every bot of the test clones
/// them (one pool per process, as the stores ask).
enum Db {
    Redis(RedisServer),
    Sqlite(tempfile::TempDir, SqliteStore),
    Postgres(PostgresServer, PostgresStore),
}

/// Which store a [`Db`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Redis,
    Sqlite,
    Postgres,
}

impl Db {
    async fn start(kind: Kind) -> Self {
        match kind {
            Kind::Redis => Self::Redis(RedisServer::start()),
            Kind::Sqlite => {
                // In memory where the system has a tmpfs: each commit syncs to disk otherwise.
                let shm = std::path::Path::new("/dev/shm");
                let mut dir = tempfile::Builder::new();
                dir.prefix("retention-cli-");
                let dir = if shm.is_dir() { dir.tempdir_in(shm) } else { dir.tempdir() }.unwrap();
                let url = format!("sqlite:{}", dir.path().join("bot.db").display());
                let store = SqliteStore::open(&url).await.unwrap();
                Self::Sqlite(dir, store)
            }
            Kind::Postgres => {
                let server = PostgresServer::start();
                let store = PostgresStore::open(&server.url()).await.unwrap();
                Self::Postgres(server, store)
            }
        }
    }

    fn kind(&self) -> Kind {
        match self {
            Self::Redis(_) => Kind::Redis,
            Self::Sqlite(..) => Kind::Sqlite,
            Self::Postgres(..) => Kind::Postgres,
        }
    }

    /// The URL the CLI is given: `REDIS_URL` for Redis, `DATABASE_URL` for the others.
    fn url(&self) -> String {
        match self {
            Self::Redis(server) => server.url(),
            Self::Sqlite(dir, _) => format!("sqlite:{}", dir.path().join("bot.db").display()),
            Self::Postgres(server, _) => server.url(),
        }
    }

    /// Names this store to `cmd`, and no other (whatever the environment of the tests).
    fn name_to(&self, cmd: &mut Command) {
        cmd.env_remove("REDIS_URL").env_remove("DATABASE_URL");
        match self {
            Self::Redis(_) => cmd.env("REDIS_URL", self.url()),
            _ => cmd.env("DATABASE_URL", self.url()),
        };
    }

    /// A builder on this store, as a bot has.
    async fn builder(&self) -> RetentionBuilder {
        match self {
            Self::Redis(server) => {
                Retention::builder(RedisStore::open(&server.url()).await.unwrap())
            }
            Self::Sqlite(_, store) => Retention::builder(store.clone()),
            Self::Postgres(_, store) => Retention::builder(store.clone()),
        }
    }

    /// The redis-server of a Redis test.
    fn redis(&self) -> &RedisServer {
        match self {
            Self::Redis(server) => server,
            _ => panic!("a Redis test"),
        }
    }
}

/// Runs one test body on every store: `every_store! { async fn name(db) { ... } }` creates
/// `name::redis`, `name::sqlite` and `name::postgres`.
macro_rules! every_store {
    ($($(#[$doc:meta])* async fn $name:ident($db:ident) $body:block)*) => {
        $(
            $(#[$doc])*
            mod $name {
                #[allow(unused_imports)]
                use super::*;

                async fn test($db: Db) $body

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn redis() {
                    test(Db::start(Kind::Redis).await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    test(Db::start(Kind::Sqlite).await).await
                }

                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    test(Db::start(Kind::Postgres).await).await
                }
            }
        )*
    };
}

/// The CLI on `db`'s namespace "shop" with a 90-day threshold.
fn cli(db: &Db) -> Command {
    let mut cmd = binary();
    db.name_to(&mut cmd);
    cmd.env("RETENTION_NAMESPACE", "shop")
        .env("RETENTION_INACTIVE_AFTER", "90d")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null());
    cmd
}

fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run the CLI");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(cmd: &mut Command) -> Value {
    let (code, stdout, stderr) = run(cmd.arg("--json"));
    assert_eq!(code, 0, "stdout: {stdout}\nstderr: {stderr}");
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}"))
}

/// Starts `cmd`, kills it (as ^C or a lost shell would) once its progress file says at
/// least `at_least` users are done, and returns the count the file then holds. Callers cap
/// the CLI's rate so that it runs for seconds after `at_least`: a loaded machine only
/// slows the CLI, which widens that window.
fn interrupted(cmd: &mut Command, progress: &std::path::Path, at_least: u64) -> u64 {
    let mut run = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    let read = || -> u64 {
        // "DONE FINGERPRINT"
        let text = std::fs::read_to_string(progress).unwrap_or_default();
        text.split_whitespace().next().and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let what = format!("the CLI's progress file to count {at_least} users");
    common::wait::until(&what, Duration::from_millis(20), || {
        if read() >= at_least {
            return true;
        }
        if let Ok(Some(status)) = run.try_wait() {
            panic!("the CLI exited ({status}) before its progress file counted {at_least} users");
        }
        false
    });
    run.kill().unwrap();
    run.wait().unwrap();
    read()
}

async fn bot(db: &Db, clock: &ManualClock, failing: bool) -> Retention {
    db.builder()
        .await
        .namespace("shop")
        .inactive_after(90 * DAY)
        .without_commands()
        .clock(clock.clone())
        .receipts(teloxide_retention::ReceiptKey::new(*KEY).unwrap(), 365 * DAY)
        .erase_with(erase_fn("profiles", move |_| async move {
            if failing { Err("the profiles database is down") } else { Ok(()) }
        }))
        .build()
        .unwrap()
}

/// Users seen at known ages (relative to the real clock, which the CLI uses): 5 now (and 7
/// an hour ago), 3
/// three days ago, 2 ten days ago, 4 forty days ago, 1 at 85 and 1 at 89.5 days, 6 past
/// the 90-day threshold; user 900 blocked the bot; user 901 opted out and their eraser
/// fails. Returns a bot that stays up (its heartbeat is a writer).
async fn seed(db: &Db) -> Retention {
    let ages: Vec<(u64, Duration)> = [
        (1..=5, Duration::ZERO),
        (11..=13, 3 * DAY),
        (21..=22, 10 * DAY),
        (31..=34, 40 * DAY),
        (41..=41, 85 * DAY),
        (42..=42, 89 * DAY + DAY / 2),
        (51..=56, 100 * DAY),
    ]
    .into_iter()
    .flat_map(|(users, age)| users.map(move |u| (u, age)))
    .collect();
    for (user, age) in &ages {
        let clock = ManualClock::at_unix_ms(now_ms() - age.as_millis() as i64);
        let bot = bot(db, &clock, false).await;
        bot.note_interaction(UserId(*user)).await;
        bot.shutdown().await.unwrap();
    }
    // An hour ago, so that the failed opt-out's retry (30 s later) is due now.
    let clock = ManualClock::at_unix_ms(now_ms() - 3_600_000);
    let bot = bot(db, &clock, true).await;
    bot.note_interaction(UserId(7)).await;
    bot.flush().await.unwrap();
    assert!(bot.mark_gone(UserId(900), GoneReason::Blocked).await.unwrap());
    bot.erase_user(UserId(901)).await.unwrap();
    bot
}

every_store! {
    async fn stats_draws_the_histogram_and_counts_what_is_due_scheduled_and_failing(db) {
        let bot = seed(&db).await;

        let (code, text, _) = run(cli(&db).arg("stats"));
        assert_eq!(code, 0, "{text}");
        for line in [
            "tracked users: 23",
            "time since last interaction",
            "due for inactivity: 6 now · 1 within 1 d · 2 within 7 d",
            "scheduled erasures: 2 (1 due now): opt_out 1, blocked 1",
            "0 stuck, failing for over 3 d",
            "most failed attempts 1",
            "writers: 1",
        ] {
            assert!(text.contains(line), "{line:?} missing from:\n{text}");
        }
        let bars: Vec<(&str, &str)> = vec![
            ("< 1 d", " 6  "),
            ("1–7 d", " 3  "),
            ("7–30 d", " 2  "),
            ("30 d–threshold", " 6  "),
            ("past threshold", " 6  "),
        ];
        for (label, count) in bars {
            let line = text.lines().find(|l| l.trim_start().starts_with(label)).unwrap();
            assert!(line.contains(count) && line.contains('█'), "{line:?}");
        }

        let stats = json(cli(&db).arg("stats"));
        assert_eq!(stats["tracked"], 23);
        let users: Vec<u64> = stats["inactivity"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["users"].as_u64().unwrap())
            .collect();
        assert_eq!(users, [6, 3, 2, 6, 6]);
        assert_eq!(stats["inactivity"][3]["label"], "30 d–threshold");
        assert_eq!(stats["due"]["now"], 6);
        assert_eq!(stats["due"]["within_1d"], 1);
        assert_eq!(stats["due"]["within_7d"], 2);
        assert_eq!(stats["scheduled"]["by_reason"]["blocked"], 1);
        assert_eq!(stats["scheduled"]["by_reason"]["opt_out"], 1);
        assert_eq!(stats["failing"]["count"], 1);
        assert_eq!(stats["failing"]["max_failed_attempts"], 1);
        assert_eq!(stats["failing"]["stuck"], 0);
        // Failing for an hour: stuck when the bot's stuck_after is shorter.
        let stats = json(cli(&db).args(["stats", "--stuck-after", "30m"]));
        assert_eq!(stats["failing"]["stuck"], 1);
        assert_eq!(stats["writers"].as_array().unwrap().len(), 1);

        // The library gives the same picture.
        let survey: Survey = bot.survey().await.unwrap();
        assert_eq!(survey.tracked, 23);
        bot.shutdown().await.unwrap();
        // The CLI itself leaves no heartbeat (it would hold `reshard` back for an hour).
        let stats = json(cli(&db).arg("stats"));
        assert_eq!(stats["writers"].as_array().unwrap().len(), 0, "{stats}");
        assert_eq!(stats["census"]["probed_users"], 0, "{stats}");
    }

    /// `census --dry-run` counts the users idle long enough and the round's length at the
    /// pace; without --dry-run it refuses (this tool sends no probes).
    async fn census_dry_run_estimates_a_round(db) {
        let bot = seed(&db).await;
        // The seed's users idle 30 days or more: the last two buckets of `stats`.
        let estimate =
            json(cli(&db).args(["census", "--dry-run", "--idle-for", "30d", "--interval-ms", "500"]));
        assert_eq!(estimate["idle_users"], 12, "{estimate}");
        assert_eq!(estimate["round_takes_seconds"], 6, "{estimate}");
        assert_eq!(estimate["probed_users"], 0, "{estimate}");
        let (code, text, _) =
            run(cli(&db).args(["census", "--dry-run", "--idle-for", "7d"]));
        assert_eq!(code, 0, "{text}");
        assert!(text.contains("idle for 7 d or more: 14 users"), "{text}");
        let (code, _, err) = run(cli(&db).arg("census"));
        assert_eq!(code, 2, "{err}");
        bot.shutdown().await.unwrap();

        // Once a bot's census has run, `check`, `stats` and the estimate show it.
        let api = teloxide_retention::testing::FakeBotApi::start().await;
        let probes = teloxide_retention::Probes::new().one_every(Duration::from_millis(1));
        let census = teloxide_retention::Census::new().idle_for(7 * DAY);
        let prober = db
            .builder()
            .await
            .namespace("shop")
            .inactive_after(90 * DAY)
            .without_commands()
            .probe_with(api.bot(), probes)
            .census(census)
            .build()
            .unwrap();
        let pass = prober.prune_once().await.unwrap();
        assert!(pass.census_probed > 0, "{pass:?}");
        assert_eq!(pass.census_found_reachable, pass.census_probed, "{pass:?}");
        prober.shutdown().await.unwrap();
        let (code, text, _) = run(cli(&db).arg("check"));
        assert_eq!(code, 0, "{text}");
        let line = format!("{} users probed", pass.census_probed);
        assert!(text.contains(&line), "{line:?} missing from:\n{text}");
        let (_, text, _) = run(cli(&db).arg("stats"));
        assert!(text.contains(&format!("census: {line}")), "{text}");
    }
}

every_store! {
    async fn preview_status_and_export_show_one_user_or_the_next_pass(db) {
        let bot = seed(&db).await;
        bot.shutdown().await.unwrap();

        let (code, text, _) = run(cli(&db).args(["preview", "--limit", "3"]));
        assert_eq!(code, 0);
        assert!(text.contains("the next pass would erase 6 inactive users and 1 scheduled"), "{text}");
        assert!(text.contains("user  reason"), "{text}");
        assert!(text.contains("(3 of 7; --limit shows more)"), "{text}");
        let preview = json(cli(&db).args(["preview", "--limit", "50"]));
        assert_eq!(preview["inactive"], 6);
        let users = preview["users"].as_array().unwrap();
        assert_eq!(users.len(), 7);
        assert!(users.iter().any(|u| u["user"] == 901 && u["reason"] == "opt_out"), "{preview}");
        assert!(users.iter().any(|u| u["user"] == 51 && u["reason"] == "inactive"), "{preview}");

        let (code, text, _) = run(cli(&db).args(["status", "901"]));
        assert_eq!(code, 0);
        assert!(text.contains("erasure scheduled: opt_out"), "{text}");
        assert!(text.contains("1 failed attempts"), "{text}");
        let status = json(cli(&db).args(["status", "3"]));
        assert_eq!(status["tracked"], true);
        assert_eq!(status["erasure"], Value::Null);
        let status = json(cli(&db).args(["status", "424242"]));
        assert_eq!(status["tracked"], false);

        let (code, text, err) = run(cli(&db).args(["export", "3"]));
        assert_eq!(code, 0);
        assert!(text.contains("\"user_id\": 3"), "{text}");
        assert!(err.contains("the bot's erasers export the bot's own data"), "{err}");
        let export = json(cli(&db).args(["export", "3"]));
        assert_eq!(export["user"], 3);
        assert!(export["note"].as_str().unwrap().contains("erasers"));
    }
}

every_store! {
    async fn forget_from_a_file_interrupted_and_rerun_schedules_each_user_once(db) {
        let clock = ManualClock::at_unix_ms(now_ms());
        bot(&db, &clock, false).await.note_interaction(UserId(1)).await;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("leavers.txt");
        let ids: Vec<String> = (100_001..=110_000).map(|u| u.to_string()).collect();
        std::fs::write(&file, format!("# users who asked by e-mail\n{}\n\n", ids.join("\n"))).unwrap();
        let progress = dir.path().join("leavers.txt.progress");

        // Interrupted after a few chunks (killed, as with ^C or a lost shell).
        let stopped = interrupted(
            cli(&db).args(["forget", "--rate", "1000", "--from-file"]).arg(&file),
            &progress,
            1500,
        ) as usize;
        assert!(stopped < 10_000, "the first run was interrupted ({stopped})");

        let rerun = json(cli(&db).args(["forget", "--from-file"]).arg(&file));
        let resumed = rerun["resumed_after"].as_u64().unwrap();
        assert_eq!(resumed, stopped as u64);
        let scheduled = rerun["scheduled"].as_u64().unwrap();
        let again = rerun["already_scheduled"].as_u64().unwrap();
        assert_eq!(resumed + scheduled + again, 10_000, "{rerun}");
        assert!(again <= 500, "only the chunk cut short is done twice: {rerun}");
        assert!(!progress.exists(), "a completed run removes its progress");

        // Every id is scheduled once, as an opt-out, and nothing else.
        let reader = db
            .builder()
            .await
            .namespace("shop")
            .inactive_after(90 * DAY)
            .without_commands()
            .build()
            .unwrap();
        let survey = reader.survey().await.unwrap();
        let opt_outs = survey.scheduled.iter().find(|(r, _)| *r == ErasureReason::OptOut);
        assert_eq!(opt_outs.map(|(_, n)| *n), Some(10_000));
        assert_eq!(survey.scheduled.iter().map(|(_, n)| n).sum::<u64>(), 10_000);

        // Idempotent: a third run schedules nothing new.
        let third = json(cli(&db).args(["forget", "--from-file"]).arg(&file));
        assert_eq!(third["scheduled"], 0, "{third}");
        assert_eq!(third["already_scheduled"], 10_000);

        // Ids on the command line; the human output says who erases.
        let (code, text, _) = run(cli(&db).args(["forget", "5", "6", "100001"]));
        assert_eq!(code, 0);
        assert!(text.contains("2 opt-out erasures scheduled, 1 already scheduled"), "{text}");
        assert!(text.contains("the bot's pruner carries the opt-outs out"), "{text}");

        // A bad line is reported with its number and skipped; the rest is scheduled. An id
        // above 2^53 - 1 is such a line (it aborted the whole run before).
        std::fs::write(&file, "7\nseven\n0\n9007199254740992\n8\n").unwrap();
        let (code, out, err) = run(cli(&db).args(["forget", "--json", "--from-file"]).arg(&file));
        assert_eq!(code, 0, "{err}");
        assert!(err.contains("line 2: \"seven\": not a user id"), "{err}");
        assert!(err.contains("line 3: \"0\": not a user id"), "{err}");
        assert!(err.contains("line 4: \"9007199254740992\": not a user id"), "{err}");
        let report: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(report["scheduled"], 2, "{report}");
        assert_eq!(report["bad_lines"].as_array().map(Vec::len), Some(3), "{report}");
        // On the command line: a usage error before anything is scheduled.
        let (code, _, err) = run(cli(&db).args(["forget", "10", "9007199254740992"]));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("9007199254740992 is not a user id"), "{err}");
        assert_eq!(reader.status(UserId(10)).await.unwrap().erasure, None);
        for user in [7, 8] {
            let status = reader.status(UserId(user)).await.unwrap();
            assert_eq!(status.erasure.map(|e| e.reason), Some(ErasureReason::OptOut));
        }

        // With --strict, a file with a bad line is refused whole: nothing is scheduled.
        std::fs::write(&file, "9\nnine\n").unwrap();
        let (code, _, err) = run(cli(&db).args(["forget", "--strict", "--from-file"]).arg(&file));
        assert_eq!(code, 2, "{err}");
        assert!(
            err.contains(
                "line 2: \"nine\": not a user id (user ids are 1 to 2^53 - 1) (refused: --strict)"
            ),
            "{err}"
        );
        assert!(err.contains("nothing was done (--strict)"), "{err}");
        assert_eq!(reader.status(UserId(9)).await.unwrap().erasure, None);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_passes_on_a_sound_setup_and_fails_on_eviction_or_a_missing_namespace() {
    let db = Db::Redis(RedisServer::start());
    let bot = seed(&db).await;
    bot.shutdown().await.unwrap();

    let (code, text, _) = run(cli(&db).arg("check"));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("ok       version      Redis 7."), "{text}");
    assert!(text.contains("namespace \"shop\": 1 shard(s)"), "{text}");
    assert!(text.contains("23 users tracked"), "{text}");
    let check = json(cli(&db).arg("check"));
    assert_eq!(check["ok"], true);

    // Before a bot's first run: a warning, exit 0, so that `check` can gate a first deploy.
    let (code, text, _) = run(cli(&db).args(["check", "--namespace", "nobody"]));
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("warning  namespace    namespace \"nobody\" not found"), "{text}");
    assert!(text.contains("fine before the first deploy"), "{text}");

    // A namespace created with 1 shard, checked as the bots would open it with 3.
    let (code, text, _) = run(cli(&db).args(["check", "--shards", "3"]));
    assert_eq!(code, 1, "{text}");
    assert!(
        text.contains(
            "problem  shards       namespace \"shop\" has 1 shards, but this store is opened with 3"
        ),
        "{text}"
    );
    assert!(text.contains("problem  tracking"), "the store refuses, typed: {text}");

    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory-policy")
        .arg("allkeys-lru")
        .query(&mut db.redis().sync_connection())
        .unwrap();
    let (code, text, _) = run(cli(&db).arg("check"));
    assert_eq!(code, 1, "{text}");
    assert!(text.contains("problem  eviction     maxmemory-policy allkeys-lru"), "{text}");
    let (code, stdout, _) = run(cli(&db).args(["check", "--json"]));
    assert_eq!(code, 1);
    let check: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(check["ok"], false);
    assert!(
        check["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["check"] == "eviction" && c["level"] == "problem")
    );
}

every_store! {
    async fn receipt_finds_a_users_receipts_with_the_key_file_only(db) {
        let clock = ManualClock::at_unix_ms(now_ms());
        let bot = bot(&db, &clock, false).await;
        bot.note_interaction(UserId(77)).await;
        bot.flush().await.unwrap();
        bot.erase_user(UserId(77)).await.unwrap();
        bot.shutdown().await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("receipt.key");
        std::fs::write(&key, KEY).unwrap();
        let wrong = dir.path().join("wrong.key");
        std::fs::write(&wrong, [1u8; 32]).unwrap();

        let (code, text, _) = run(cli(&db).args(["receipt", "77", "--key-file"]).arg(&key));
        assert_eq!(code, 0);
        assert!(text.contains("user 77 erased"), "{text}");
        assert!(text.contains("(opt_out, attempt 1) by profiles"), "{text}");
        let found = json(cli(&db).args(["receipt", "77", "--key-file"]).arg(&key));
        assert_eq!(found["receipts"].as_array().unwrap().len(), 1);
        assert_eq!(found["receipts"][0]["erasers"][0], "profiles");

        let (code, text, _) = run(cli(&db).args(["receipt", "77", "--key-file"]).arg(&wrong));
        assert_eq!(code, 0);
        assert!(text.contains("no receipt for user 77 under this key"), "{text}");
        let none = json(cli(&db).args(["receipt", "77", "--key-file"]).arg(&wrong));
        assert_eq!(none["receipts"].as_array().unwrap().len(), 0);

        let short = dir.path().join("short.key");
        std::fs::write(&short, b"too short").unwrap();
        let (code, _, err) = run(cli(&db).args(["receipt", "77", "--key-file"]).arg(&short));
        assert_eq!(code, 3);
        assert!(err.contains("at least 32 bytes"), "{err}");
    }
}

#[test]
fn bad_arguments_are_refused_with_usage() {
    let db = Db::Redis(RedisServer::start());
    let (code, _, err) = run(cli(&db).args(["stats", "--inactive-after", "ninety"]));
    assert_eq!(code, 2);
    assert!(err.contains("not a duration"), "{err}");
    let (code, _, err) = run(cli(&db).args(["stats"]).env_remove("RETENTION_INACTIVE_AFTER"));
    assert_eq!(code, 2, "a usage error: {err}");
    assert!(err.contains("pass --inactive-after"), "{err}");
    let (code, _, err) = run(cli(&db).args(["status", "x"]));
    assert_eq!(code, 2, "{err}");
    for (duration, says) in [
        ("0d", "the duration must be longer than zero"),
        ("90x", "unknown unit \"x\""),
        ("300000000000000d", "is too long"),
        ("99999999999999999999d", "is not a duration"),
    ] {
        let (code, _, err) = run(cli(&db).args(["stats", "--inactive-after", duration]));
        assert_eq!(code, 2, "{duration}: {err}");
        assert!(err.contains(says), "{duration}: {err}");
    }
    // A malformed URL is a usage error naming it; its password is never printed.
    let (code, _, err) = run(cli(&db).arg("stats").env("REDIS_URL", "redis://:pw@host:99999/"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("Redis URL \"redis://<credentials>@host:99999/\" is invalid"), "{err}");
    assert!(!err.contains(":pw@"), "{err}");
    // Missing input files.
    for command in ["forget", "adopt"] {
        let (code, _, err) = run(cli(&db).args([command, "--from-file", "/nonexistent/ids"]));
        assert_eq!(code, 2, "{command}: {err}");
        assert!(err.contains("cannot read /nonexistent/ids"), "{command}: {err}");
    }
    let (code, _, err) = run(cli(&db).args(["check", "--tls-ca", "/nonexistent/ca.pem"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read /nonexistent/ca.pem"), "{err}");
}

/// A Redis that does not answer: a failure (exit code 3) that says so, on every command
/// that needs the store, in text and JSON.
#[test]
fn an_unreachable_redis_is_a_failure_that_says_so() {
    let port = common::redis_server::free_port();
    let url = format!("redis://127.0.0.1:{port}/");
    for args in [&["stats"][..], &["check"], &["status", "7"], &["forget", "7"]] {
        let mut cmd = binary();
        cmd.env("REDIS_URL", &url).env("RETENTION_INACTIVE_AFTER", "90d").args(args);
        let (code, _, err) = run(&mut cmd);
        assert_eq!(code, 3, "{args:?}: {err}");
        assert!(err.contains("cannot reach Redis (--url, REDIS_URL)"), "{args:?}: {err}");
    }
    let mut cmd = binary();
    let (code, out, _) = run(cmd.env("REDIS_URL", &url).args(["check", "--json"]));
    assert_eq!(code, 3);
    let report: Value = serde_json::from_str(&out).unwrap();
    assert!(report["error"].as_str().unwrap().contains("cannot reach Redis"), "{report}");
}

every_store! {
    /// A progress file left by another input file (or by this one before it changed) is
    /// refused: resuming from it would skip ids it never covered. Nothing is written.
    async fn a_progress_file_of_another_file_is_refused_and_nothing_is_scheduled(db) {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a.txt"), dir.path().join("b.txt"));
        std::fs::write(&first, "11\n12\n13\n").unwrap();
        std::fs::write(&second, "21\n22\n23\n").unwrap();
        // An interrupted run over the first file left its progress: two ids done.
        let progress = |file: &std::path::Path| {
            let mut name = file.as_os_str().to_owned();
            name.push(".progress");
            std::path::PathBuf::from(name)
        };
        let (code, _, err) = run(cli(&db).args(["forget", "--from-file"]).arg(&first));
        assert_eq!(code, 0, "{err}");
        std::fs::write(progress(&first), "2 0000").unwrap();
        // Copied next to the second file, as an operator might.
        std::fs::copy(progress(&first), progress(&second)).unwrap();
        for (command, file) in [("forget", &second), ("adopt", &second), ("forget", &first)] {
            let (code, _, err) = run(cli(&db).args([command, "--from-file"]).arg(file));
            assert_eq!(code, 2, "{command}: {err}");
            assert!(err.contains("was written for another file"), "{command}: {err}");
            assert!(err.contains("delete it to start over"), "{command}: {err}");
        }
        let reader = bot(&db, &ManualClock::at_unix_ms(now_ms()), false).await;
        for user in [21, 22, 23] {
            let status = reader.status(UserId(user)).await.unwrap();
            assert_eq!((status.last_seen, status.erasure), (None, None), "user {user}");
        }
        // Deleting it starts over.
        std::fs::remove_file(progress(&second)).unwrap();
        let report = json(cli(&db).args(["forget", "--from-file"]).arg(&second));
        assert_eq!(report["scheduled"], 3, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reaches_a_tls_redis_with_a_ca_and_client_certificate_of_its_own() {
    let certs = std::sync::Arc::new(common::certs::TestCerts::generate());
    let server = RedisServer::start_tls(std::sync::Arc::clone(&certs), true);
    let store = RedisStore::open_with_tls(&server.url(), &certs.client_tls()).await.unwrap();
    let bot = Retention::builder(store)
        .namespace("shop")
        .inactive_after(90 * DAY)
        .without_commands()
        .build()
        .unwrap();
    bot.note_interaction(UserId(5)).await;
    bot.shutdown().await.unwrap();
    let db = Db::Redis(server);
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pem: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, pem).unwrap();
        path
    };
    let ca = write("ca.crt", &certs.ca_pem);
    let cert = write("client.crt", &certs.client_cert_pem);
    let key = write("client.key", &certs.client_key_pem);

    let with_tls = |args: &[&str]| {
        let mut cmd = cli(&db);
        cmd.args(args).arg("--tls-ca").arg(&ca).arg("--tls-cert").arg(&cert);
        cmd.arg("--tls-key").arg(&key);
        cmd
    };
    let (code, text, err) = run(&mut with_tls(&["check"]));
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("1 users tracked"), "{text}");
    let stats = json(&mut with_tls(&["stats"]));
    assert_eq!(stats["tracked"], 1);

    // Without the CA the server is not trusted: a configuration error (exit code 2), said so.
    let (code, _, err) = run(cli(&db).arg("check"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not trusted"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_reads_a_sharded_namespace_on_a_three_master_cluster() {
    let topology = common::cluster::ClusterTopology::start();
    let urls = topology.urls();
    let store = RedisStore::open_cluster(urls.iter().map(String::as_str)).await.unwrap();
    let bot = Retention::builder(store)
        .namespace("shop")
        .inactive_after(90 * DAY)
        .without_commands()
        .build()
        .unwrap();
    for user in 1..=100 {
        bot.note_interaction(UserId(user)).await;
    }
    bot.shutdown().await.unwrap();
    let on_cluster = |args: &[&str]| {
        let mut cmd = binary();
        cmd.env("REDIS_URL", urls.join(","))
            .env("RETENTION_NAMESPACE", "shop")
            .env("RETENTION_INACTIVE_AFTER", "90d")
            .arg("--cluster")
            .args(args);
        cmd
    };
    let stats = json(&mut on_cluster(&["stats"]));
    assert_eq!(stats["tracked"], 100);
    assert_eq!(stats["inactivity"][0]["users"], 100);
    let (code, text, err) = run(&mut on_cluster(&["check"]));
    assert_eq!(code, 0, "{text}\n{err}");
    assert!(text.contains("namespace \"shop\": 24 shard(s)"), "{text}");
    assert!(text.contains("100 users tracked"), "{text}");
    let forget = json(&mut on_cluster(&["forget", "3", "4"]));
    assert_eq!(forget["scheduled"], 2);
    let status = json(&mut on_cluster(&["status", "3"]));
    assert_eq!(status["erasure"]["reason"], "opt_out");
}

every_store! {
    async fn adopt_puts_a_file_of_users_on_a_clock_and_reports_bad_lines(db) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.csv");
        let now_s = now_ms() / 1000;
        let day = 86_400;
        // 1 and 2 idle past 90 days, 3 recent, 4 without a time, a service account, bad lines.
        let lines = [
            format!("1,{}", now_s - 200 * day),
            format!("2,{}", now_s - 95 * day),
            format!("3,{}", now_s - 5 * day),
            "4".to_owned(),
            "# a comment".to_owned(),
            "777000".to_owned(),
            "five".to_owned(),
            "6,yesterday".to_owned(),
            format!(
                "7,{}",
                chrono::DateTime::from_timestamp(now_s - 400 * day, 0).unwrap().to_rfc3339()
            ),
        ];
        std::fs::write(&file, lines.join("\n")).unwrap();

        // The dry run says what the first pass would erase, by age, and writes nothing.
        let (code, text, err) =
            run(cli(&db).args(["adopt", "--dry-run", "--from-file"]).arg(&file));
        assert_eq!(code, 0, "{text}{err}");
        assert!(text.contains("the first pass would erase 3 users for inactivity"), "{text}");
        assert!(
            err.contains("line 7: \"five\": not a user id (user ids are 1 to 2^53 - 1) (skipped)"),
            "{err}"
        );
        assert!(err.contains("line 8: \"6,yesterday\""), "{err}");
        let probe = bot(&db, &ManualClock::at_unix_ms(now_ms()), false).await;
        assert_eq!(probe.tracked_users().await.unwrap(), 0, "a dry run writes nothing");

        let report = json(cli(&db).args(["adopt", "--from-file"]).arg(&file));
        assert_eq!(report["newly_tracked"], 5, "{report}");
        assert_eq!(report["refused_service_accounts"], 1, "{report}");
        assert_eq!(report["bad_lines"].as_array().unwrap().len(), 2, "{report}");
        assert!(!dir.path().join("users.csv.progress").exists(), "progress is removed when done");
        let status = probe.status(UserId(2)).await.unwrap();
        assert_eq!(status.last_seen.unwrap().timestamp(), now_s - 95 * day);
        // Adopting again changes nothing.
        let again = json(cli(&db).args(["adopt", "--from-file"]).arg(&file));
        assert_eq!(
            (again["newly_tracked"].as_u64(), again["kept"].as_u64()),
            (Some(0), Some(5)),
            "{again}"
        );
        // A usage error: --not-before needs a time.
        let (code, _, err) =
            run(cli(&db).args(["adopt", "--not-before", "soon", "--from-file"]).arg(&file));
        assert_eq!(code, 2, "{err}");
        // Milliseconds are no unix seconds: read as seconds they named the year 57,970, a time
        // that could never be undone (times only move forward).
        let (code, _, err) = run(cli(&db)
            .args(["adopt", "--not-before", "1767225600000", "--from-file"])
            .arg(&file));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("milliseconds? divide by 1000"), "{err}");
        // A notice more than a year ahead is refused before anything is written.
        let far = chrono::DateTime::from_timestamp(now_s + 400 * day, 0).unwrap().to_rfc3339();
        let (code, _, err) =
            run(cli(&db).args(["adopt", "--not-before", &far, "--from-file"]).arg(&file));
        assert_eq!(code, 2, "{err}");
        assert!(err.contains("more than a year ahead"), "{err}");
        assert!(!dir.path().join("users.csv.progress").exists(), "nothing was adopted");
        // A notice 120 days ahead (longer than the 90-day threshold): a rule in the store,
        // which `stats` shows with the users it holds instead of users due now.
        let later = chrono::DateTime::from_timestamp(now_s + 120 * day, 0).unwrap().to_rfc3339();
        let noticed =
            json(cli(&db).args(["adopt", "--not-before", &later, "--from-file"]).arg(&file));
        assert_eq!(noticed["kept"], 5, "{noticed}");
        let stats = json(cli(&db).arg("stats"));
        let due = &stats["due"];
        assert_eq!((due["now"].as_u64(), due["held_by_notices"].as_u64()), (Some(0), Some(3)), "{stats}");
        assert_eq!(stats["notices"].as_array().unwrap().len(), 1, "{stats}");
        let (_, text, _) = run(cli(&db).arg("stats"));
        assert!(text.contains("held by adoption notices: 3 users past the threshold"), "{text}");
        // A notice given by mistake is ended.
        let ended = json(cli(&db).arg("end-notices"));
        assert_eq!(ended["ended"], 1, "{ended}");
        let stats = json(cli(&db).arg("stats"));
        let due = &stats["due"];
        assert_eq!((due["now"].as_u64(), due["held_by_notices"].as_u64()), (Some(3), Some(0)), "{stats}");
        assert_eq!(stats["notices"].as_array().unwrap().len(), 0, "{stats}");
        // A file whose times are milliseconds: each such line is a bad line, never a user
        // whose clock would run from the year 57,970.
        let ms_file = dir.path().join("ms.csv");
        std::fs::write(&ms_file, format!("8,{}\n9", now_ms())).unwrap();
        let report = json(cli(&db).args(["adopt", "--from-file"]).arg(&ms_file));
        assert_eq!(report["newly_tracked"], 1, "{report}");
        assert_eq!(report["bad_lines"].as_array().unwrap().len(), 1, "{report}");
        assert_eq!(probe.status(UserId(8)).await.unwrap().last_seen, None);
    }
}

every_store! {
    async fn adopt_from_a_file_interrupted_and_rerun_adopts_each_user_once(db) {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("users.txt");
        let ids: Vec<String> = (1_000_001..=1_100_000).map(|u| u.to_string()).collect();
        std::fs::write(&file, ids.join("\n")).unwrap();
        let progress = dir.path().join("users.txt.progress");

        // Killed midway, as with ^C or a lost shell.
        let stopped = interrupted(
            cli(&db).args(["adopt", "--rate", "5000", "--from-file"]).arg(&file),
            &progress,
            10_000,
        );
        assert!(stopped < 100_000, "the first run was interrupted ({stopped})");

        let rerun = json(cli(&db).args(["adopt", "--from-file"]).arg(&file));
        assert_eq!(rerun["resumed_after"].as_u64(), Some(stopped), "{rerun}");
        let (new, kept) = (rerun["newly_tracked"].as_u64().unwrap(), rerun["kept"].as_u64().unwrap());
        assert_eq!(stopped + new + kept, 100_000, "{rerun}");
        assert!(kept <= 500, "only the chunk cut short is done twice: {rerun}");
        let reader = bot(&db, &ManualClock::at_unix_ms(now_ms()), false).await;
        assert_eq!(reader.tracked_users().await.unwrap(), 100_000, "each user adopted once");
    }
}

/// Records `version` as the table version of namespace "shop", as a crate of that version
/// would have left it.
async fn set_table_version(db: &Db, version: &str) {
    let sql = format!("UPDATE \"shop.meta\" SET value = '{version}' WHERE key = 'schema'");
    let updated = match db {
        Db::Sqlite(..) => {
            let pool = sqlx::SqlitePool::connect(&db.url()).await.unwrap();
            sqlx::query(&sql).execute(&pool).await.unwrap().rows_affected()
        }
        Db::Postgres(..) => {
            let pool = sqlx::PgPool::connect(&db.url()).await.unwrap();
            sqlx::query(&sql).execute(&pool).await.unwrap().rows_affected()
        }
        Db::Redis(_) => unreachable!("Redis has no tables"),
    };
    assert_eq!(updated, 1);
}

/// `check` on a SQL store: what the database says (PostgreSQL: version, the isolation
/// levels the store runs at, durability, the clock against `clock_timestamp()`; SQLite:
/// version, journal mode, `synchronous`), the table version, a namespace no bot has used
/// (a warning, exit 0), and tables of another version: a problem for `check` (exit 1), a
/// failure (exit 3) that says so for every other command, which writes nothing.
async fn check_on_sql(db: Db) {
    seed(&db).await.shutdown().await.unwrap();

    let (code, text, err) = run(cli(&db).arg("check"));
    assert_eq!(code, 0, "{text}{err}");
    let said: &[&str] = match db.kind() {
        Kind::Sqlite => &[
            "ok       version      SQLite 3.",
            "ok       journal      journal_mode wal",
            "ok       synchronous  synchronous FULL",
            "ok       clock        SQLite has no clock of its own",
        ],
        Kind::Postgres => &[
            "ok       version      PostgreSQL ",
            "ok       isolation    writes run at READ COMMITTED, reads at REPEATABLE READ",
            "durability   synchronous_commit ",
            "ok       clock        this machine's clock is ",
            " ms off PostgreSQL's clock_timestamp()",
        ],
        Kind::Redis => unreachable!(),
    };
    let common = [
        "ok       namespace    namespace \"shop\": tables \"shop.*\", version 3",
        "ok       tracking     23 users tracked",
    ];
    for line in said.iter().chain(&common) {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let check = json(cli(&db).arg("check"));
    assert_eq!(check["ok"], true, "{check}");
    let checks = check["checks"].as_array().unwrap();
    assert!(checks.iter().any(|c| c["check"] == "namespace" && c["level"] == "ok"), "{check}");

    // Before a bot's first run: a warning, exit 0, and nothing created.
    for _ in 0..2 {
        let (code, text, _) = run(cli(&db).args(["check", "--namespace", "nobody"]));
        assert_eq!(code, 0, "{text}");
        assert!(
            text.contains(
                "warning  namespace    namespace \"nobody\" not found (table \"nobody.meta\" is \
                 missing)"
            ),
            "{text}"
        );
        assert!(text.contains("fine before the first deploy"), "{text}");
    }

    // Tables of a newer version (a newer crate wrote them) or an older one (this CLI would
    // migrate them under a bot that still reads them as they are).
    for (version, found) in [
        ("4", "has tables of version \"4\", which this teloxide-retention cannot read"),
        ("1", "has tables of version 1, older than this teloxide-retention's"),
    ] {
        set_table_version(&db, version).await;
        let (code, text, _) = run(cli(&db).arg("check"));
        assert_eq!(code, 1, "{text}");
        assert!(text.contains("problem  namespace    namespace \"shop\" in this "), "{text}");
        assert!(text.contains(found), "{text}");
        for args in [&["stats"][..], &["status", "3"], &["forget", "3"], &["preview"]] {
            let (code, out, err) = run(cli(&db).args(args));
            assert_eq!(code, 3, "{args:?}: {out}{err}");
            assert!(err.contains(found), "{args:?}: {err}");
            assert!(err.contains("use the teloxide-retention version the bot runs"), "{err}");
        }
        let (code, out, _) = run(cli(&db).args(["stats", "--json"]));
        assert_eq!(code, 3);
        let report: Value = serde_json::from_str(&out).unwrap();
        assert!(report["error"].as_str().unwrap().contains(found), "{report}");
    }
    set_table_version(&db, "3").await;
    let reader = bot(&db, &ManualClock::at_unix_ms(now_ms()), false).await;
    assert_eq!(reader.status(UserId(3)).await.unwrap().erasure, None, "nothing was scheduled");
    let (code, text, _) = run(cli(&db).arg("check"));
    assert_eq!(code, 0, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_sqlite_reports_the_file_and_its_tables() {
    check_on_sql(Db::start(Kind::Sqlite).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_postgres_reports_the_server_and_its_tables() {
    check_on_sql(Db::start(Kind::Postgres).await).await;
}

/// The CLI with no store named, whatever the tests' environment holds.
fn unnamed() -> Command {
    let mut cmd = binary();
    cmd.env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("RUST_LOG")
        .env("RETENTION_INACTIVE_AFTER", "90d")
        .stdin(Stdio::null());
    cmd
}

/// Bad store settings are refused before anything is read or written: two stores named,
/// Redis options with a SQL database, a URL of no known kind or a malformed one (a usage
/// error, exit 2), an unreachable server, a missing file or one that is no SQLite database
/// (a failure, exit 3). A password in a URL is never printed, in text or JSON.
#[test]
fn bad_store_settings_are_refused_and_passwords_never_printed() {
    const SECRET: &str = "hunter2secret";
    let dir = tempfile::tempdir().unwrap();
    let sqlite = format!("sqlite:{}", dir.path().join("bot.db").display());

    // Two stores, through variables, options, or both.
    let (code, _, err) = run(unnamed()
        .env("REDIS_URL", "redis://127.0.0.1/")
        .env("DATABASE_URL", &sqlite)
        .arg("stats"));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("two stores are named: REDIS_URL (Redis) and DATABASE_URL"), "{err}");
    let (code, _, err) = run(unnamed()
        .args(["stats", "--url", "redis://127.0.0.1/"])
        .args(["--database-url", &sqlite]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("two stores are named: --url (Redis) and --database-url"), "{err}");
    let (code, _, err) = run(unnamed().env("REDIS_URL", "redis://127.0.0.1/").args([
        "stats",
        "--database-url",
        &sqlite,
    ]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("REDIS_URL (Redis) and --database-url"), "{err}");

    // Redis-only options with a SQL database.
    for (args, says) in [
        (&["--cluster"][..], "--cluster only applies to Redis"),
        (&["--sentinel", "mymaster"], "--sentinel only applies to Redis"),
        (&["--shards", "3"], "--shards only applies to Redis"),
    ] {
        let (code, _, err) = run(unnamed().env("DATABASE_URL", &sqlite).arg("stats").args(args));
        assert_eq!(code, 2, "{args:?}: {err}");
        assert!(err.contains(says), "{args:?}: {err}");
        assert!(err.contains("but DATABASE_URL names a SQL database"), "{err}");
    }
    let (code, _, err) = run(unnamed()
        .env("DATABASE_URL", &sqlite)
        .env("REDIS_TLS_CA", "/etc/ca.pem")
        .args(["stats", "--shards", "2"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--shards, REDIS_TLS_CA only apply to Redis"), "{err}");

    // Malformed or unknown URLs: usage errors that show the URL without its password.
    // (A password with an unescaped `/` or `@`, and one given as a parameter, too.)
    for (url, says, shown) in [
        (
            format!("postgres://bot:{SECRET}@db.example:99999/bot"),
            "is not a valid PostgreSQL URL",
            "bot:***@db.example:99999/bot",
        ),
        (
            "postgres://bot:hunter2/se@cret@db.example:99999/bot".to_owned(),
            "is not a valid PostgreSQL URL",
            "bot:***@db.example:99999/bot",
        ),
        (
            format!("postgres://db.example:99999/bot?user=bot&password={SECRET}"),
            "is not a valid PostgreSQL URL",
            "db.example:99999/bot?user=bot&password=***",
        ),
        (
            format!("mysql://bot:{SECRET}@db.example/bot"),
            "names no database this tool knows",
            "bot:***@db.example",
        ),
    ] {
        for json in [false, true] {
            let mut cmd = unnamed();
            cmd.env("DATABASE_URL", &url).arg("stats");
            if json {
                cmd.arg("--json");
            }
            let (code, out, err) = run(&mut cmd);
            assert_eq!(code, 2, "{url}: {err}");
            assert!(err.contains(says), "{url}: {err}");
            assert!(err.contains(shown), "{url}: {err}");
            for secret in [SECRET, "hunter2"] {
                assert!(!out.contains(secret) && !err.contains(secret), "{out}{err}");
            }
        }
    }
    // A server that does not answer: a failure, said without the password.
    let port = common::redis_server::free_port();
    let url = format!("postgres://bot:{SECRET}@127.0.0.1:{port}/bot");
    let (code, out, err) = run(unnamed().env("DATABASE_URL", &url).args(["status", "7", "--json"]));
    assert_eq!(code, 3, "{err}");
    assert!(
        err.contains(&format!(
            "cannot reach PostgreSQL at \"postgres://bot:***@127.0.0.1:{port}/bot\""
        )),
        "{err}"
    );
    assert!(!out.contains(SECRET) && !err.contains(SECRET), "{out}{err}");

    // No file at the path: never created (a mistyped path would become an empty database).
    let (code, _, err) = run(unnamed().env("DATABASE_URL", &sqlite).args(["forget", "7"]));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("no SQLite database at"), "{err}");
    assert!(!dir.path().join("bot.db").exists(), "the CLI created a file");

    // A file that is no SQLite database.
    let path = dir.path().join("users.csv");
    std::fs::write(&path, "1,2026-01-01T00:00:00Z\n".repeat(500)).unwrap();
    let (code, _, err) =
        run(unnamed().env("DATABASE_URL", format!("sqlite:{}", path.display())).arg("check"));
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is no SQLite database this tool can read"), "{err}");
    assert!(err.contains("file is not a database"), "{err}");

    // With no store named, the local Redis is the default, and `--help` says so.
    let (code, out, _) = run(unnamed().arg("--help"));
    assert_eq!(code, 0);
    assert!(out.contains("with none named, the Redis at redis://127.0.0.1/ is used"), "{out}");
}
