//! `teloxide-retention`: see and steer a bot's retention from a shell, on the Redis the bot
//! uses. Nothing here erases data: `forget` schedules opt-outs that the bot's pruner
//! carries out with its erasers.
//!
//! Exit codes: 0 success; 1 `check` found a problem; 2 invalid arguments; 3 the command
//! failed (Redis unreachable, unreadable file, ...).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use futures_util::StreamExt as _;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use teloxide::types::UserId;
use teloxide_retention::{
    Adoption, OptOutScheduled, ReceiptKey, RedisSentinel, RedisStore, RedisTls, Retention, Survey,
};

/// See and steer a teloxide bot's data retention (teloxide-retention) from a shell.
///
/// Reads the namespace the bot writes in Redis. Nothing here erases data: `forget`
/// schedules opt-out erasures that the bot's pruner carries out with its erasers.
#[derive(Parser)]
#[command(name = "teloxide-retention", version)]
struct Cli {
    /// The bot's Redis: a redis://, rediss:// or redis+unix:// URL; with --cluster, the
    /// URLs of some of the cluster's nodes, comma-separated; with --sentinel, the sentinels'
    /// URLs, comma-separated.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1/", global = true)]
    url: String,
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
    /// The namespace's shard count, if the bot sets one (default: 24 on a cluster, 1
    /// elsewhere).
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
        /// At most this many users per second (0: as fast as Redis takes them).
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
        /// 2027-01-31T00:00:00Z), so that the bot can announce its policy first (needs
        /// --inactive-after).
        #[arg(long, value_parser = parse_date)]
        not_before: Option<DateTime<Utc>>,
        /// Write nothing; say what the first pass after the adoption would erase, by age
        /// (needs --inactive-after).
        #[arg(long)]
        dry_run: bool,
        /// At most this many users per second (0: as fast as Redis takes them).
        #[arg(long, default_value_t = 0)]
        rate: u32,
    },
    /// Check the Redis and the namespace: version, eviction policy, persistence, clock
    /// skew, namespace metadata. Exits with 1 on a problem, so it can gate a deploy.
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
    /// as not reaching Redis.
    fn store(e: teloxide_retention::Error) -> Self {
        match e {
            e if e.is_config() => Self::usage(e.to_string()),
            teloxide_retention::Error::Redis(e) => Self::new(format!(
                "cannot reach Redis (--url, REDIS_URL): {e}; is the server up and the URL \
                 right?"
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
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(&cli)) {
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
        return DateTime::from_timestamp(secs, 0)
            .ok_or_else(|| format!("{text:?} is out of range"));
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.with_timezone(&Utc)).map_err(|_| {
        format!("{text:?} is not a time: use RFC 3339 (2027-01-31T00:00:00Z) or unix seconds")
    })
}

/// TLS settings from --tls-ca, --tls-cert and --tls-key; `None` without them.
fn tls(cli: &Cli) -> Result<Option<RedisTls>, Failure> {
    let read = |path: &PathBuf| {
        std::fs::read(path)
            .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))
    };
    let mut tls = None;
    if let Some(ca) = &cli.tls_ca {
        tls = Some(RedisTls::new().ca_pem(read(ca)?));
    }
    if let (Some(cert), Some(key)) = (&cli.tls_cert, &cli.tls_key) {
        tls = Some(tls.unwrap_or_default().client_cert_pem(read(cert)?, read(key)?));
    }
    Ok(tls)
}

/// The bot's store, as the options describe it.
async fn store(cli: &Cli) -> Result<RedisStore, Failure> {
    let urls: Vec<&str> = cli.url.split(',').map(str::trim).filter(|u| !u.is_empty()).collect();
    let tls = tls(cli)?;
    let store = if cli.cluster {
        match &tls {
            Some(tls) => {
                RedisStore::open_cluster_with_tls(urls, tls).await.map_err(Failure::store)?
            }
            None => RedisStore::open_cluster(urls).await.map_err(Failure::store)?,
        }
    } else if let Some(master) = &cli.sentinel {
        let mut sentinel = RedisSentinel::new(master.as_str(), urls);
        if let Some(tls) = tls {
            sentinel = sentinel.master_tls(tls.clone()).sentinel_tls(tls);
        }
        RedisStore::open_sentinel(&sentinel).map_err(Failure::store)?
    } else {
        match (urls.as_slice(), &tls) {
            // Connected now: an unreachable or untrusted server fails here, said plainly.
            ([url], Some(tls)) => {
                RedisStore::connect_with_tls(url, tls).await.map_err(Failure::store)?
            }
            ([url], None) => RedisStore::connect(url).await.map_err(Failure::store)?,
            _ => {
                return Err(Failure::usage("several URLs need --cluster or --sentinel MASTER"));
            }
        }
    };
    Ok(match cli.shards {
        Some(n) => store.with_shards(n).map_err(Failure::store)?,
        None => store,
    })
}

/// A `Retention` on the bot's namespace that only reads and schedules: no erasers, no
/// commands, and no heartbeat (it records no interactions).
async fn retention(cli: &Cli, threshold: Option<Duration>) -> Result<Retention, Failure> {
    // Commands that do not depend on the threshold still need one to build.
    let threshold = threshold.unwrap_or(Duration::from_secs(365 * 86_400));
    Retention::builder(store(cli).await?)
        .namespace(cli.namespace.as_str())
        .inactive_after(threshold)
        .stuck_after(cli.stuck_after)
        .without_commands()
        .build()
        .map_err(Failure::store)
}

fn threshold(cli: &Cli, command: &str) -> Result<Duration, Failure> {
    cli.inactive_after.ok_or_else(|| {
        Failure::usage(format!(
            "`{command}` counts relative to the bot's threshold: pass --inactive-after (such \
             as 90d) or set RETENTION_INACTIVE_AFTER, as the bot's `inactive_after`"
        ))
    })
}

/// A spinner on stderr while a command waits on Redis (hidden when stderr is no terminal).
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

fn survey_json(cli: &Cli, s: &Survey) -> Value {
    let threshold = s.inactive_after;
    json!({
        "taken_at": s.taken_at.to_rfc3339(),
        "inactive_after_seconds": threshold.as_secs(),
        "tracked": s.tracked,
        "inactivity": s.inactivity.iter().map(|b| json!({
            "label": b.label(threshold),
            "from_seconds": b.from.as_secs(),
            "to_seconds": b.to.map(|t| t.as_secs()),
            "users": b.users,
        })).collect::<Vec<_>>(),
        "due": { "now": s.due_now, "within_1d": s.due_within_day, "within_7d": s.due_within_week },
        "scheduled": {
            "total": s.scheduled.iter().map(|(_, n)| n).sum::<u64>(),
            "due_now": s.scheduled_due,
            "by_reason": s.scheduled.iter()
                .map(|(r, n)| (r.as_str().to_owned(), json!(n)))
                .collect::<serde_json::Map<_, _>>(),
        },
        "failing": {
            "count": s.failing,
            "stuck": s.stuck,
            "stuck_after_seconds": cli.stuck_after.as_secs(),
            "oldest_since": time(s.oldest_failing_since),
            "oldest_age_seconds": s.oldest_failing_since.map(|t| (s.taken_at - t).num_seconds()),
            "max_failed_attempts": s.max_failed_attempts,
        },
        "writers": s.writers.iter().map(|w| json!({
            "id": w.id,
            "last_beat": w.last_beat.to_rfc3339(),
            "age_seconds": (s.taken_at - w.last_beat).num_seconds(),
            "unwritten": w.unwritten,
        })).collect::<Vec<_>>(),
    })
}

fn survey_text(cli: &Cli, s: &Survey) -> String {
    let threshold = s.inactive_after;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "namespace {:?} · threshold {} · {}",
        cli.namespace,
        age(chrono::Duration::from_std(threshold).unwrap_or_default()),
        s.taken_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    let _ = writeln!(out, "tracked users: {}\n", thousands(s.tracked));
    let _ = writeln!(out, "time since last interaction");
    let labels: Vec<String> = s.inactivity.iter().map(|b| b.label(threshold)).collect();
    let label_width = labels.iter().map(|l| l.chars().count()).max().unwrap_or(0);
    let counts: Vec<String> = s.inactivity.iter().map(|b| thousands(b.users)).collect();
    let count_width = counts.iter().map(String::len).max().unwrap_or(0);
    let max = s.inactivity.iter().map(|b| b.users).max().unwrap_or(0);
    for ((bucket, label), count) in s.inactivity.iter().zip(&labels).zip(&counts) {
        let pad = label_width - label.chars().count();
        let _ = writeln!(
            out,
            "  {label}{}  {count:>count_width$}  {}",
            " ".repeat(pad),
            bar(bucket.users, max, 40)
        );
    }
    let _ = writeln!(
        out,
        "\ndue for inactivity: {} now · {} within 1 d · {} within 7 d",
        thousands(s.due_now),
        thousands(s.due_within_day),
        thousands(s.due_within_week)
    );
    let total: u64 = s.scheduled.iter().map(|(_, n)| n).sum();
    let by_reason: Vec<String> = s
        .scheduled
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(r, n)| format!("{} {}", r.as_str(), thousands(*n)))
        .collect();
    let _ = writeln!(
        out,
        "scheduled erasures: {} ({} due now){}",
        thousands(total),
        thousands(s.scheduled_due),
        if by_reason.is_empty() { String::new() } else { format!(": {}", by_reason.join(", ")) }
    );
    match s.oldest_failing_since {
        Some(since) => {
            let _ = writeln!(
                out,
                "failing erasures: {} ({} stuck, failing for over {}; oldest failing for {}, \
                 since {}; most failed attempts {})",
                thousands(s.failing),
                thousands(s.stuck),
                age(chrono::Duration::from_std(cli.stuck_after).unwrap_or_default()),
                age(s.taken_at - since),
                since.format("%Y-%m-%d %H:%M UTC"),
                s.max_failed_attempts
            );
        }
        None => {
            let _ = writeln!(out, "failing erasures: 0");
        }
    }
    if s.writers.is_empty() {
        let _ = writeln!(out, "writers: none (no bot records interactions now)");
    } else {
        let _ = writeln!(out, "writers: {}", s.writers.len());
        for w in &s.writers {
            let _ = writeln!(
                out,
                "  {}  last heartbeat {} ago, {} unwritten",
                w.id,
                age(s.taken_at - w.last_beat),
                thousands(w.unwritten)
            );
        }
    }
    out
}

async fn stats(cli: &Cli) -> Outcome {
    let threshold = threshold(cli, "stats")?;
    let retention = retention(cli, Some(threshold)).await?;
    let spinner = spinner("counting");
    let survey = retention.survey().await;
    let audit = retention.last_audit().await;
    spinner.finish_and_clear();
    let (survey, audit) = (survey?, audit?);
    if cli.json {
        let mut doc = survey_json(cli, &survey);
        doc["last_audit"] = audit.as_ref().map_or(Value::Null, |a| {
            json!({ "at": a.at.to_rfc3339(), "listed": a.listed, "untracked": a.untracked,
                    "adopted": a.adopted, "residue": a.residue, "not_covered": a.not_covered })
        });
        println!("{doc}");
    } else {
        print!("{}", survey_text(cli, &survey));
        println!("{}", audit_line(audit.as_ref()));
    }
    Ok(ExitCode::SUCCESS)
}

/// "last audit 3 h ago: 0 untracked, 0 residue; 1 eraser cannot list".
fn audit_line(audit: Option<&teloxide_retention::AuditSummary>) -> String {
    let Some(a) = audit else {
        return "last audit: none (RetentionBuilder::audit_every schedules it)".to_owned();
    };
    let ago = (Utc::now() - a.at).num_minutes().max(0);
    let ago = if ago < 120 { format!("{ago} min") } else { format!("{} h", ago / 60) };
    let mut line = format!(
        "last audit {ago} ago: {} untracked, {} residue",
        thousands(a.untracked),
        thousands(a.residue)
    );
    if !a.not_covered.is_empty() {
        let n = a.not_covered.len();
        let _ = write!(
            line,
            "; {n} eraser{} cannot list ({})",
            if n == 1 { "" } else { "s" },
            a.not_covered.join(", ")
        );
    }
    line
}

async fn preview(cli: &Cli, limit: usize) -> Outcome {
    let threshold = threshold(cli, "preview")?;
    let retention = retention(cli, Some(threshold)).await?;
    let spinner = spinner("reading");
    let preview = retention.preview(limit).await;
    spinner.finish_and_clear();
    let preview = preview?;
    if cli.json {
        let users: Vec<Value> = preview
            .users
            .iter()
            .map(|e| {
                json!({
                    "user": e.user.0,
                    "reason": e.reason.as_str(),
                    "last_seen": time(e.last_seen),
                    "marked_at": time(e.marked_at),
                })
            })
            .collect();
        println!(
            "{}",
            json!({
                "inactive": preview.inactive,
                "scheduled_due": preview.scheduled_due,
                "expired_leases": preview.expired_leases,
                "inactivity_held": preview.inactivity_held,
                "users": users,
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "the next pass would erase {} inactive users and {} scheduled erasures{}",
        thousands(preview.inactive),
        thousands(preview.scheduled_due),
        if preview.expired_leases > 0 {
            format!(", and take over {} abandoned batches", preview.expired_leases)
        } else {
            String::new()
        }
    );
    if let Some(held) = &preview.inactivity_held {
        println!("inactivity erasures are held back: {held}");
    }
    if preview.users.is_empty() {
        println!("nobody is due");
        return Ok(ExitCode::SUCCESS);
    }
    println!("\n{:>12}  {:<12}  {:<20}  {:<20}", "user", "reason", "last seen", "marked at");
    let when = |t: Option<DateTime<Utc>>| {
        t.map_or_else(|| "-".to_owned(), |t| t.format("%Y-%m-%d %H:%M").to_string())
    };
    for e in &preview.users {
        println!(
            "{:>12}  {:<12}  {:<20}  {:<20}",
            e.user.0,
            e.reason.as_str(),
            when(e.last_seen),
            when(e.marked_at)
        );
    }
    let total = preview.inactive + preview.scheduled_due;
    if (preview.users.len() as u64) < total {
        println!("({} of {}; --limit shows more)", preview.users.len(), thousands(total));
    }
    Ok(ExitCode::SUCCESS)
}

async fn status(cli: &Cli, user: UserId) -> Outcome {
    let retention = retention(cli, None).await?;
    let status = retention.status(user).await?;
    let erasure = status.erasure.as_ref();
    if cli.json {
        println!(
            "{}",
            json!({
                "user": user.0,
                "tracked": status.last_seen.is_some(),
                "last_seen": time(status.last_seen),
                "erasure": erasure.map(|e| json!({
                    "reason": e.reason.as_str(),
                    "marked_at": time(e.marked_at),
                    "due": time(e.due),
                    "running": e.running,
                    "failed_attempts": e.failed_attempts,
                })),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    match status.last_seen {
        Some(t) => {
            println!("user {}: last interaction {}", user.0, t.format("%Y-%m-%d %H:%M:%S UTC"))
        }
        None => println!("user {}: not tracked", user.0),
    }
    match erasure {
        None => println!("no erasure scheduled"),
        Some(e) => {
            let state = if e.running {
                "running now".to_owned()
            } else {
                e.due.map_or_else(
                    || "marked only (never due)".to_owned(),
                    |due| format!("due {}", due.format("%Y-%m-%d %H:%M:%S UTC")),
                )
            };
            println!(
                "erasure scheduled: {}, {state}, {} failed attempts",
                e.reason.as_str(),
                e.failed_attempts
            );
        }
    }
    println!("(the store's view only; the bot's own data is in what its erasers cover)");
    Ok(ExitCode::SUCCESS)
}

async fn export(cli: &Cli, user: UserId) -> Outcome {
    let retention = retention(cli, cli.inactive_after).await?;
    let mut export = retention.export(user).await?;
    if cli.inactive_after.is_none()
        && let Some(document) = export.as_object_mut()
    {
        // The policy section states the threshold, which only --inactive-after gives here.
        document.remove("policy");
    }
    let note = "the store's part only: the bot's erasers export the bot's own data, in the \
                bot's /mydata";
    if cli.json {
        println!("{}", json!({ "user": user.0, "export": export, "note": note }));
    } else {
        println!("{}", serde_json::to_string_pretty(&export)?);
        eprintln!("note: {note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// A line of an input file that was skipped: its number, its text and why.
type BadLine = (usize, String, String);

/// The entries of an input file, one per line (blank lines and `#` comments skipped),
/// and the lines `parse` refused, which are reported, not fatal.
fn read_lines<T>(
    path: &Path,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<(Vec<T>, Vec<BadLine>), Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
    let (mut entries, mut bad) = (Vec::new(), Vec::new());
    for (n, raw) in text.lines().enumerate() {
        let line = raw.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        match parse(line) {
            Ok(entry) => entries.push(entry),
            Err(why) => bad.push((n + 1, line.to_owned(), why)),
        }
    }
    Ok((entries, bad))
}

/// A user id as the files and the command line write it.
fn parse_id(text: &str) -> Result<u64, String> {
    text.parse::<u64>().ok().filter(|id| *id > 0).ok_or_else(|| "not a user id".to_owned())
}

/// Says each bad line on stderr and returns them for `--json`; with `--strict`, refuses
/// the file if there is one.
fn report_bad_lines(cli: &Cli, file: &Path, bad: &[BadLine]) -> Result<Vec<Value>, Failure> {
    let outcome = if cli.strict { "refused: --strict" } else { "skipped" };
    for (line, text, why) in bad {
        eprintln!("{} line {line}: {text:?}: {why} ({outcome})", file.display());
    }
    if cli.strict && !bad.is_empty() {
        return Err(Failure::usage(format!(
            "{} has {} bad line(s); nothing was done (--strict)",
            file.display(),
            bad.len()
        )));
    }
    Ok(bad
        .iter()
        .map(|(line, text, why)| json!({ "line": line, "text": text, "why": why }))
        .collect())
}

fn progress_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

/// The input file's fingerprint (SHA-256 of its bytes), kept with the progress: a
/// progress file left by another file, or by this file before it changed, is refused
/// instead of skipping ids it never covered.
fn fingerprint(file: &Path) -> Result<String, Failure> {
    use sha2::Digest;
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// How many ids of `file` an earlier, interrupted run went through: its progress file
/// holds that count and the fingerprint of the file it was written for.
fn read_progress(file: &Path, total: usize) -> Result<usize, Failure> {
    let path = progress_path(file);
    let text = match std::fs::read_to_string(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(Failure::new(format!("cannot read {}: {e}", path.display()))),
        Ok(text) => text,
    };
    let mut parts = text.split_whitespace();
    let done = parts.next().and_then(|n| n.parse::<usize>().ok());
    let ours = parts.next() == Some(fingerprint(file)?.as_str());
    match done {
        Some(done) if ours && done <= total => Ok(done),
        _ => Err(Failure::usage(format!(
            "{} was written for another file, or for {} before it changed; delete it to \
             start over (every id is then sent again, which is harmless)",
            path.display(),
            file.display()
        ))),
    }
}

/// Records progress atomically (a rename), so that an interruption leaves the old or the
/// new count, never half a file.
fn write_progress(file: &Path, print: &str, done: usize) -> Result<(), Failure> {
    let path = progress_path(file);
    let tmp = path.with_extension("progress.tmp");
    std::fs::write(&tmp, format!("{done} {print}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
}

async fn forget(cli: &Cli, users: &[u64], file: Option<&Path>, rate: u32) -> Outcome {
    const CHUNK: usize = 500;
    let (ids, bad_json) = match file {
        Some(path) => {
            let (ids, bad) = read_lines(path, parse_id)?;
            (ids, report_bad_lines(cli, path, &bad)?)
        }
        None => (users.to_vec(), Vec::new()),
    };
    // The input file and its fingerprint, for the progress file.
    let progress = match file {
        Some(path) => Some((path, fingerprint(path)?)),
        None => None,
    };
    let skip = match file {
        Some(path) => read_progress(path, ids.len())?,
        None => 0,
    };
    let retention = retention(cli, None).await?;
    let bar = ProgressBar::new(ids.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} users scheduled · {per_sec} · {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(skip as u64);
    let mut counts: BTreeMap<&str, u64> = BTreeMap::new();
    let started = std::time::Instant::now();
    let mut done = skip;
    for chunk in ids[skip..].chunks(CHUNK) {
        let outcomes: Vec<_> = futures_util::stream::iter(chunk)
            .map(|user| retention.schedule_opt_out(UserId(*user)))
            .buffered(32)
            .collect()
            .await;
        for outcome in outcomes {
            let key = match outcome? {
                OptOutScheduled::Scheduled => "scheduled",
                OptOutScheduled::AlreadyScheduled => "already_scheduled",
                _ => "running",
            };
            *counts.entry(key).or_default() += 1;
        }
        done += chunk.len();
        if let Some((path, print)) = &progress {
            write_progress(path, print, done)?;
        }
        bar.set_position(done as u64);
        pace(rate, done - skip, started).await;
    }
    bar.finish_and_clear();
    if let Some((path, _)) = &progress {
        let path = progress_path(path);
        std::fs::remove_file(&path)
            .map_err(|e| Failure::new(format!("cannot remove {}: {e}", path.display())))?;
    }
    let get = |k: &str| counts.get(k).copied().unwrap_or(0);
    let note = "this tool erases nothing itself: the bot's pruner carries the opt-outs out \
                with all its erasers at its next pass";
    if cli.json {
        println!(
            "{}",
            json!({
                "users": ids.len(),
                "resumed_after": skip,
                "scheduled": get("scheduled"),
                "already_scheduled": get("already_scheduled"),
                "running": get("running"),
                "bad_lines": bad_json,
                "note": note,
            })
        );
    } else {
        if skip > 0 {
            println!("resumed after {} users scheduled by an earlier run", thousands(skip as u64));
        }
        println!(
            "{} opt-out erasures scheduled, {} already scheduled, {} running now",
            thousands(get("scheduled")),
            thousands(get("already_scheduled")),
            thousands(get("running"))
        );
        println!("{note}");
    }
    Ok(ExitCode::SUCCESS)
}

/// Waits until `done` users since `started` keep to `rate` per second (0: no limit).
async fn pace(rate: u32, done: usize, started: std::time::Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(done as f64 / f64::from(rate));
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// An adoption file's line: `ID` or `ID,LAST_ACTIVE`.
fn parse_adoption(line: &str) -> Result<(UserId, Option<DateTime<Utc>>), String> {
    let (id, time) = match line.split_once(',') {
        Some((id, time)) => (id.trim(), Some(time.trim())),
        None => (line, None),
    };
    Ok((UserId(parse_id(id)?), time.map(parse_date).transpose()?))
}

async fn adopt(
    cli: &Cli,
    file: &Path,
    not_before: Option<DateTime<Utc>>,
    dry_run: bool,
    rate: u32,
) -> Outcome {
    const CHUNK: usize = 500;
    let (users, bad) = read_lines(file, parse_adoption)?;
    let bad_json = report_bad_lines(cli, file, &bad)?;
    if dry_run {
        return adopt_dry_run(cli, &users, not_before, &bad_json);
    }
    // With a notice date, adopted times depend on the bot's threshold: it must be given.
    let threshold = match not_before {
        Some(_) => Some(threshold(cli, "adopt --not-before")?),
        None => None,
    };
    let print = fingerprint(file)?;
    let skip = read_progress(file, users.len())?;
    let retention = retention(cli, threshold).await?;
    let options = match not_before {
        Some(date) => Adoption::new().not_before(date),
        None => Adoption::new(),
    };
    let bar = ProgressBar::new(users.len() as u64).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} users adopted · {per_sec} · {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.set_position(skip as u64);
    let mut total = teloxide_retention::Adopted::default();
    let mut done = skip;
    let started = std::time::Instant::now();
    for chunk in users[skip..].chunks(CHUNK) {
        let adopted = retention.adopt(chunk.iter().copied(), &options).await?;
        total = sum_adopted(total, adopted);
        done += chunk.len();
        write_progress(file, &print, done)?;
        bar.set_position(done as u64);
        pace(rate, done - skip, started).await;
    }
    bar.finish_and_clear();
    let progress = progress_path(file);
    std::fs::remove_file(&progress)
        .map_err(|e| Failure::new(format!("cannot remove {}: {e}", progress.display())))?;
    if cli.json {
        println!(
            "{}",
            json!({
                "users": users.len(),
                "resumed_after": skip,
                "newly_tracked": total.newly_tracked,
                "moved_forward": total.moved_forward,
                "kept": total.kept,
                "erasing": total.erasing,
                "refused_service_accounts": total.refused_service_accounts,
                "refused_invalid_ids": total.refused_invalid_ids,
                "bad_lines": bad_json,
            })
        );
    } else {
        if skip > 0 {
            println!("resumed after {} users adopted by an earlier run", thousands(skip as u64));
        }
        println!(
            "{} users newly tracked, {} moved forward, {} kept, {} left to a running or \
             scheduled erasure, {} refused; {} bad lines skipped",
            thousands(total.newly_tracked),
            thousands(total.moved_forward),
            thousands(total.kept),
            thousands(total.erasing),
            thousands(total.refused_service_accounts + total.refused_invalid_ids),
            bad.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds two runs' counts (`Adopted` is non-exhaustive: no struct literal here).
fn sum_adopted(
    mut a: teloxide_retention::Adopted,
    b: teloxide_retention::Adopted,
) -> teloxide_retention::Adopted {
    a.newly_tracked += b.newly_tracked;
    a.moved_forward += b.moved_forward;
    a.kept += b.kept;
    a.erasing += b.erasing;
    a.refused_service_accounts += b.refused_service_accounts;
    a.refused_invalid_ids += b.refused_invalid_ids;
    a
}

/// What the first pass after adopting `users` would erase for inactivity, by age past the
/// threshold; nothing is written.
fn adopt_dry_run(
    cli: &Cli,
    users: &[(UserId, Option<DateTime<Utc>>)],
    not_before: Option<DateTime<Utc>>,
    bad: &[Value],
) -> Outcome {
    let threshold = threshold(cli, "adopt --dry-run")?;
    let now = Utc::now();
    let threshold = chrono::Duration::from_std(threshold).unwrap_or(chrono::TimeDelta::MAX);
    let held_back = not_before.is_some_and(|date| date > now);
    // Buckets of time past the threshold: (label, up to days).
    let buckets: [(&str, i64); 4] = [
        ("up to 30 days", 30),
        ("30 to 180 days", 180),
        ("180 days to 2 years", 730),
        ("more", i64::MAX),
    ];
    let mut counts = [0u64; 4];
    let mut due = 0u64;
    for (_, last_active) in users {
        let Some(last_active) = last_active else { continue };
        let past = now - *last_active - threshold;
        if past <= chrono::TimeDelta::zero() || held_back {
            continue;
        }
        due += 1;
        let days = past.num_days();
        let slot = buckets.iter().position(|(_, up_to)| days < *up_to).unwrap_or(3);
        counts[slot] += 1;
    }
    if cli.json {
        let by_age: serde_json::Map<String, Value> = buckets
            .iter()
            .zip(counts)
            .map(|((label, _), n)| ((*label).to_owned(), json!(n)))
            .collect();
        println!(
            "{}",
            json!({ "users": users.len(), "first_pass_would_erase": due, "past_the_threshold_by": by_age,
                    "held_until": not_before.map(|d| d.to_rfc3339()), "bad_lines": bad })
        );
    } else {
        println!("dry run: nothing written; {} users in the file", thousands(users.len() as u64));
        if held_back {
            println!(
                "the first pass erases nobody for inactivity before {}",
                not_before.unwrap_or(now)
            );
        } else if due == 0 {
            println!("the first pass would erase nobody for inactivity");
        } else {
            println!("the first pass would erase {} users for inactivity:", thousands(due));
            for ((label, _), n) in buckets.iter().zip(counts) {
                println!("  {label:<22} past the threshold: {}", thousands(n));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn receipt(cli: &Cli, user: UserId, key_file: &Path) -> Outcome {
    let key = ReceiptKey::from_file(key_file)?;
    let retention = retention(cli, None).await?;
    let spinner = spinner("reading receipts");
    let receipts = retention.receipt_with(user, &key).await;
    spinner.finish_and_clear();
    let receipts = receipts?;
    if cli.json {
        let list: Vec<Value> = receipts
            .iter()
            .map(|r| {
                json!({
                    "reason": r.reason.as_str(),
                    "erased_at": r.erased_at.to_rfc3339(),
                    "erasers": r.erasers,
                    "attempts": r.attempts,
                })
            })
            .collect();
        println!("{}", json!({ "user": user.0, "receipts": list }));
        return Ok(ExitCode::SUCCESS);
    }
    if receipts.is_empty() {
        println!(
            "no receipt for user {} under this key (never erased while receipts were on, \
             expired, or another key)",
            user.0
        );
    }
    for r in &receipts {
        println!(
            "user {} erased {} ({}, attempt {}) by {}",
            user.0,
            r.erased_at.format("%Y-%m-%d %H:%M:%S UTC"),
            r.reason.as_str(),
            r.attempts,
            if r.erasers.is_empty() { "no erasers".to_owned() } else { r.erasers.join(", ") }
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// One line of `check`: what was checked, what was found, and whether it is fine.
struct Finding {
    name: &'static str,
    level: Level,
    detail: String,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Ok,
    Warning,
    Problem,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Warning => "warning",
            Self::Problem => "problem",
        }
    }
}

async fn check(cli: &Cli) -> Outcome {
    let spinner = spinner("checking");
    let findings = check_findings(cli).await;
    spinner.finish_and_clear();
    let findings = findings?;
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    if cli.json {
        let list: Vec<Value> = findings
            .iter()
            .map(|f| json!({ "check": f.name, "level": f.level.name(), "detail": f.detail }))
            .collect();
        println!("{}", json!({ "ok": worst != Level::Problem, "checks": list }));
    } else {
        for f in &findings {
            println!("{:<8} {:<12} {}", f.level.name(), f.name, f.detail);
        }
        println!(
            "{}",
            match worst {
                Level::Problem => "problems found",
                Level::Warning => "no problem (see the warnings)",
                Level::Ok => "all good",
            }
        );
    }
    Ok(if worst == Level::Problem { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

async fn check_findings(cli: &Cli) -> Result<Vec<Finding>, Failure> {
    let store = store(cli).await?;
    let found = store.diagnose(&cli.namespace).await?;
    let mut findings = Vec::new();
    let mut add = |name, level, detail: String| findings.push(Finding { name, level, detail });

    let version = found.version.clone().unwrap_or_else(|| "unknown".to_owned());
    let major: u32 = version.split('.').next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major >= 7 {
        add("version", Level::Ok, format!("Redis {version}"));
    } else {
        add("version", Level::Problem, format!("Redis {version}: the crate needs 7.0 or later"));
    }

    let policy = found.eviction_policy.clone().unwrap_or_else(|| "unknown".to_owned());
    if policy.starts_with("allkeys-") {
        add(
            "eviction",
            Level::Problem,
            format!(
                "maxmemory-policy {policy}: Redis may evict the namespace's keys (who was \
                 seen when, scheduled erasures); use noeviction or a volatile-* policy"
            ),
        );
    } else {
        add("eviction", Level::Ok, format!("maxmemory-policy {policy}"));
    }

    match (found.append_only, found.snapshots) {
        (true, _) => add("persistence", Level::Ok, "append-only file on".to_owned()),
        (false, Some(true)) => {
            add("persistence", Level::Ok, "RDB snapshots on (AOF off)".to_owned());
        }
        (false, None) => add(
            "persistence",
            Level::Warning,
            "AOF off; snapshots unknown (CONFIG is disabled): check your provider's \
             persistence settings"
                .to_owned(),
        ),
        (false, Some(false)) => add(
            "persistence",
            Level::Warning,
            "neither AOF nor RDB snapshots: a restart loses who was seen when (the crate \
             notices and holds inactivity erasures back until you accept the loss)"
                .to_owned(),
        ),
    }

    let skew = (found.local_time - found.server_time).num_milliseconds();
    let level = match skew.abs() {
        0..=1000 => Level::Ok,
        1001..=60_000 => Level::Warning,
        _ => Level::Problem,
    };
    add(
        "clock",
        level,
        format!("this machine's clock is {skew} ms off Redis's (the bots correct for it)"),
    );

    let meta = format!("{{{}}}:meta", cli.namespace);
    match &found.namespace {
        // Before a bot's first run there is nothing to check yet: a warning, so that
        // `check` can gate a first deploy; a wrong --namespace reads the same, said so.
        None => add(
            "namespace",
            Level::Warning,
            format!(
                "namespace {:?} not found ({meta} is missing): no bot has used it yet (fine \
                 before the first deploy), or --namespace is wrong",
                cli.namespace
            ),
        ),
        Some(ns) => {
            let created = ns
                .created
                .map_or_else(String::new, |c| format!(", created {}", c.format("%Y-%m-%d")));
            match ns.resharding {
                Some((from, to)) => add(
                    "namespace",
                    Level::Problem,
                    format!(
                        "namespace {:?} is being resharded from {from} to {to} shards; \
                         finish it with RedisStore::reshard",
                        cli.namespace
                    ),
                ),
                None => add(
                    "namespace",
                    Level::Ok,
                    format!("namespace {:?}: {} shard(s){created}", cli.namespace, ns.shards),
                ),
            }
            if ns.resharding.is_none() && ns.shards != store.shards() {
                add(
                    "shards",
                    Level::Problem,
                    format!(
                        "namespace {:?} has {} shards, but this store is opened with {} \
                         (--shards, or the default for the connection): open it with \
                         RedisStore::with_shards({}) in the bots and --shards {} here; a \
                         store opened with another count records and erases nothing",
                        cli.namespace,
                        ns.shards,
                        store.shards(),
                        ns.shards,
                        ns.shards
                    ),
                );
            }
            let retention = retention(cli, None).await?;
            match retention.last_audit().await {
                Ok(Some(a)) if a.residue > 0 => add(
                    "audit",
                    Level::Warning,
                    format!(
                        "{}: erasers left data of erased users behind (erased again)",
                        audit_line(Some(&a))
                    ),
                ),
                Ok(audit) => add("audit", Level::Ok, audit_line(audit.as_ref())),
                Err(e) => add("audit", Level::Warning, e.to_string()),
            }
            match retention.tracked_users().await {
                Ok(n) => add("tracking", Level::Ok, format!("{} users tracked", thousands(n))),
                Err(e) => add("tracking", Level::Problem, e.to_string()),
            }
        }
    }
    Ok(findings)
}
