//! `teloxide-retention`: see and steer a bot's retention from a shell, on the store the bot
//! uses (Redis, SQLite or PostgreSQL). Nothing here erases data: `forget` schedules
//! opt-outs that the bot's pruner carries out with its erasers.
//!
//! Exit codes: 0 success; 1 `check` found a problem; 2 invalid arguments; 3 the command
//! failed (store unreachable, unreadable file, tables of another version, ...).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{CommandFactory as _, FromArgMatches as _, Parser, Subcommand};
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use teloxide::types::UserId;
use teloxide_retention::{Adoption, Marked, ReceiptKey, Retention, Survey};

mod check;
mod reads;
mod stores;
mod writes;

use check::check;
use reads::{census, export, preview, receipt, stats, status};
use stores::{Target, retention};
use writes::{adopt, end_notices, forget};

/// See and steer a teloxide bot's data retention (teloxide-retention) from a shell.
///
/// Reads the namespace the bot writes in its store: Redis (--url, REDIS_URL), or SQLite or
/// PostgreSQL (--database-url, DATABASE_URL). Name exactly one store; with none named, the
/// Redis at redis://127.0.0.1/ is used. Nothing here erases data: `forget` schedules
/// opt-out erasures that the bot's pruner carries out with its erasers.
#[derive(Parser)]
#[command(name = "teloxide-retention", version)]
struct Cli {
    /// The bot's Redis: a redis://, rediss:// or redis+unix:// URL; with --cluster, the
    /// URLs of some of the cluster's nodes, comma-separated; with --sentinel, the sentinels'
    /// URLs, comma-separated. [default, when no store is named: redis://127.0.0.1/]
    #[arg(long, env = "REDIS_URL", global = true)]
    url: Option<String>,
    /// The bot's SQL database, instead of Redis: sqlite:path/to/file.db (a file the bot
    /// already uses) or postgres://user:password@host/db (postgresql:// too).
    #[arg(long, value_name = "URL", env = "DATABASE_URL", global = true)]
    database_url: Option<String>,
    /// The URL(s) name Redis Cluster nodes.
    #[arg(long, global = true)]
    cluster: bool,
    /// The URL(s) name sentinels, and this is the name of the master they watch.
    #[arg(long, value_name = "MASTER", global = true, conflicts_with = "cluster")]
    sentinel: Option<String>,
    /// The bot's namespace (`RetentionBuilder::namespace`).
    #[arg(long, env = "RETENTION_NAMESPACE", default_value = "retention", global = true)]
    namespace: String,
    /// A CA certificate (PEM) to trust for rediss:// instead of the built-in webpki roots.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_CA", global = true)]
    tls_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present over TLS, with --tls-key.
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_CERT", global = true, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The client certificate's key (PEM).
    #[arg(long, value_name = "FILE", env = "REDIS_TLS_KEY", global = true, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The namespace's shard count on Redis, if the bot sets one (default: 24 on a
    /// cluster, 1 elsewhere).
    #[arg(long, global = true)]
    shards: Option<usize>,
    /// The bot's inactivity threshold (`inactive_after`), such as 90d, 36h or 45m: the
    /// reference of `stats` and `preview`.
    #[arg(long, env = "RETENTION_INACTIVE_AFTER", value_parser = parse_duration, global = true)]
    inactive_after: Option<Duration>,
    /// When a failing erasure counts as stuck in `stats` (the bot's `stuck_after`).
    #[arg(long, default_value = "3d", value_parser = parse_duration, global = true)]
    stuck_after: Duration,
    /// Print JSON instead of text (one document on stdout).
    #[arg(long, global = true)]
    json: bool,
    /// With --from-file: refuse a file that has any bad line, doing nothing (by default
    /// bad lines are reported with their numbers and skipped).
    #[arg(long, global = true)]
    strict: bool,
    #[command(subcommand)]
    command: Command,
    /// The store the options name (set from them before any command runs).
    #[arg(skip)]
    target: Target,
}

#[derive(Subcommand)]
enum Command {
    /// Tracked users, an inactivity histogram, what is due, scheduled erasures, failing
    /// erasures and the writers' heartbeats.
    Stats,
    /// The dry run: who the next prune pass would erase, and why.
    Preview {
        /// Users to list.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// What the store holds about one user: last interaction and any scheduled erasure.
    Status {
        /// The Telegram user id.
        user: u64,
    },
    /// The store's part of a user's `/mydata` export (the bot's erasers export the rest).
    Export {
        /// The Telegram user id.
        user: u64,
    },
    /// Schedule opt-out erasures, carried out by the bot's pruner with all its erasers.
    ///
    /// Idempotent: a user already scheduled is left as is. With --from-file, progress is
    /// kept in FILE.progress, so that a rerun after an interruption resumes where it
    /// stopped; the file is removed when the run completes. A progress file is refused if
    /// FILE changed since it was written.
    Forget {
        /// Telegram user ids.
        #[arg(required_unless_present = "from_file", conflicts_with = "from_file")]
        users: Vec<u64>,
        /// A file of user ids, one per line (blank lines and `#` comments are skipped; bad
        /// lines are reported with their numbers and skipped).
        #[arg(long, value_name = "FILE")]
        from_file: Option<PathBuf>,
        /// At most this many users per second (0: as fast as the store takes them).
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// Put users the bot already holds on a clock (adoption): from a file of `ID` or
    /// `ID,LAST_ACTIVE` lines (RFC 3339 or unix seconds; blank lines and `#` comments
    /// skipped), with the last activity the bot knows.
    ///
    /// A tracked time only moves forward; users with a scheduled or running erasure are
    /// left as they are; idempotent. Bad lines are reported with their numbers and skipped.
    /// Progress is kept in FILE.progress, so that a rerun after an interruption resumes.
    /// Look first with --dry-run: the first pass after an adoption may erase most of an old
    /// base at once.
    Adopt {
        /// The file of users.
        #[arg(long, value_name = "FILE")]
        from_file: PathBuf,
        /// No adopted user is erased for inactivity before this date (RFC 3339, such as
        /// 2027-01-31T00:00:00Z; at most a year ahead), so that the bot can announce its
        /// policy first: a notice kept in the store, holding every user quiet since the
        /// adoption until then.
        #[arg(long, value_parser = parse_date)]
        not_before: Option<DateTime<Utc>>,
        /// Write nothing; say what the first pass after the adoption would erase, by age
        /// (needs --inactive-after).
        #[arg(long)]
        dry_run: bool,
        /// At most this many users per second (0: as fast as the store takes them).
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// End every running adoption notice now (one given by mistake): the users they held and
    /// idle past the threshold are due at the bot's next pass. `stats` lists the notices.
    EndNotices,
    /// Estimate a census round over the current base: users idle long enough, users probed
    /// so far, where the current round stands, and at most how long a round takes at the
    /// pace. The census itself runs in the bot's pruner (RetentionBuilder::census).
    Census {
        /// Only estimate (required: this tool sends no probes).
        #[arg(long, required = true)]
        dry_run: bool,
        /// Users idle at least this long are probed (the bot's `Census::idle_for`).
        #[arg(long, default_value = "30d", value_parser = parse_duration)]
        idle_for: Duration,
        /// One probe per this many milliseconds (the bot's `Probes::interval`).
        #[arg(long, default_value_t = 1000)]
        interval_ms: u64,
    },
    /// Check the store and the namespace. Redis: version, eviction policy, persistence,
    /// clock skew, namespace metadata. PostgreSQL: version, the isolation levels the store
    /// runs at, durability, the clock against clock_timestamp(), the table version. SQLite:
    /// version, journal mode, synchronous, the table version. Exits with 1 on a problem, so
    /// it can gate a deploy.
    Check,
    /// Find a user's erasure receipts with the bot's receipt key.
    Receipt {
        /// The Telegram user id.
        user: u64,
        /// The file holding the receipt key (`ReceiptKey::from_file`).
        #[arg(long, value_name = "FILE")]
        key_file: PathBuf,
    },
}

/// A command that failed, with what to tell the operator and the exit code: 2 for a usage
/// error (a missing or invalid option, file or setting), 3 for a failure. `check`'s
/// findings are not failures: they decide its exit code 1 themselves.
struct Failure(String, u8);

impl Failure {
    /// A failure: exit code 3.
    fn new(message: impl Into<String>) -> Self {
        Self(message.into(), 3)
    }

    /// A usage error: exit code 2.
    fn usage(message: impl Into<String>) -> Self {
        Self(message.into(), 2)
    }

    /// A library error: its configuration errors are usage errors, the store's are said
    /// as not reaching Redis or the database.
    fn store(e: teloxide_retention::Error) -> Self {
        match e {
            e if e.is_config() => Self::usage(e.to_string()),
            e @ teloxide_retention::Error::InvalidArgument(_) => Self::usage(e.to_string()),
            teloxide_retention::Error::Redis(e) => Self::new(format!(
                "cannot reach Redis (--url, REDIS_URL): {e}; is the server up and the URL \
                 right?"
            )),
            teloxide_retention::Error::Database(e) => Self::new(format!(
                "the database failed (--database-url, DATABASE_URL): {e}; is the server up \
                 and the URL right?"
            )),
            e => Self::new(e.to_string()),
        }
    }
}

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(e: E) -> Self {
        Self::new(e.to_string())
    }
}

type Outcome = Result<ExitCode, Failure>;

fn main() -> ExitCode {
    let matches = Cli::command().get_matches();
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    let outcome = match Target::named(&cli, &matches) {
        Ok(target) => {
            cli.target = target;
            match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(runtime) => runtime.block_on(run(&cli)),
                Err(e) => Err(Failure::new(format!("cannot start the runtime: {e}"))),
            }
        }
        Err(failure) => Err(failure),
    };
    match outcome {
        Ok(code) => code,
        Err(Failure(message, code)) => {
            if cli.json {
                println!("{}", json!({ "error": message }));
            }
            eprintln!("error: {message}");
            ExitCode::from(code)
        }
    }
}

async fn run(cli: &Cli) -> Outcome {
    match &cli.command {
        Command::Stats => stats(cli).await,
        Command::Preview { limit } => preview(cli, *limit).await,
        Command::Status { user } => status(cli, UserId(*user)).await,
        Command::Export { user } => export(cli, UserId(*user)).await,
        Command::Forget { users, from_file, rate } => {
            forget(cli, users, from_file.as_deref(), *rate).await
        }
        Command::Adopt { from_file, not_before, dry_run, rate } => {
            adopt(cli, from_file, *not_before, *dry_run, *rate).await
        }
        Command::Check => check(cli).await,
        Command::EndNotices => end_notices(cli).await,
        Command::Census { dry_run: _, idle_for, interval_ms } => {
            census(cli, *idle_for, Duration::from_millis(*interval_ms)).await
        }
        Command::Receipt { user, key_file } => receipt(cli, UserId(*user), key_file).await,
    }
}

/// `90d`, `36h`, `45m`, `30s` (or a number of seconds).
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().map_err(|_| format!("{text:?} is not a duration such as 90d"))?;
    let secs = match unit.trim() {
        "d" => n.checked_mul(86_400),
        "h" => n.checked_mul(3600),
        "m" => n.checked_mul(60),
        "s" | "" => Some(n),
        other => return Err(format!("unknown unit {other:?}: use d, h, m or s")),
    };
    match secs {
        Some(0) => Err("the duration must be longer than zero".to_owned()),
        Some(s) => Ok(Duration::from_secs(s)),
        None => Err(format!("{text:?} is too long")),
    }
}

/// An RFC 3339 time, or unix seconds.
fn parse_date(text: &str) -> Result<DateTime<Utc>, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<i64>() {
        // Unix seconds reach 10^11 in the year 5138: a larger number is milliseconds (or
        // worse), and read as seconds it would name a date nobody meant.
        if !(0..100_000_000_000).contains(&secs) {
            return Err(format!(
                "{text:?} is not a time in unix seconds (milliseconds? divide by 1000), nor \
                 RFC 3339 (2027-01-31T00:00:00Z)"
            ));
        }
        return DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        format!("{text:?} is not a time: use RFC 3339 (2027-01-31T00:00:00Z) or unix seconds")
    })
}

fn threshold(cli: &Cli, command: &str) -> Result<Duration, Failure> {
    cli.inactive_after.ok_or_else(|| {
        Failure::usage(format!(
            "`{command}` counts relative to the bot's threshold: pass --inactive-after (such \
             as 90d) or set RETENTION_INACTIVE_AFTER, as the bot's `inactive_after`"
        ))
    })
}

/// A spinner on stderr while a command waits on the store (hidden when stderr is no terminal).
fn spinner(what: &str) -> ProgressBar {
    let bar = ProgressBar::new_spinner().with_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(100));
    bar
}

fn time(t: Option<DateTime<Utc>>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_rfc3339()))
}

/// `3 d 4 h`, `5 h 12 min`, `42 s`.
fn age(d: chrono::Duration) -> String {
    let s = d.num_seconds().max(0);
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86_400 if s % 3600 < 60 => format!("{} h", s / 3600),
        3600..86_400 => format!("{} h {} min", s / 3600, s % 3600 / 60),
        _ if s % 86_400 < 3600 => format!("{} d", s / 86_400),
        _ => format!("{} d {} h", s / 86_400, s % 86_400 / 3600),
    }
}

/// 12345 → `12,345`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A bar of `width` cells for `n` of `max`, in eighths of a cell.
fn bar(n: u64, max: u64, width: u64) -> String {
    const EIGHTHS: [&str; 8] = ["", "▏", "▎", "▍", "▌", "▋", "▊", "▉"];
    if max == 0 {
        return String::new();
    }
    let eighths = (u128::from(n) * u128::from(width) * 8).div_ceil(u128::from(max));
    let eighths = u64::try_from(eighths).unwrap_or(u64::MAX);
    let mut out = "█".repeat(usize::try_from(eighths / 8).unwrap_or(0));
    out.push_str(EIGHTHS[usize::try_from(eighths % 8).unwrap_or(0)]);
    out
}
