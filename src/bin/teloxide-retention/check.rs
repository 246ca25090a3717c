//! `check`: what could make the bots' retention unsafe, as findings with a level.

use teloxide_retention::TableVersion;

use super::reads::audit_line;
use super::stores::{self, Opened};
use super::*;

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

pub(super) async fn check(cli: &Cli) -> Outcome {
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
    let store = Opened::open(cli).await?;
    let mut findings = Vec::new();
    let ready = match &store {
        Opened::Redis(redis) => redis_findings(cli, redis, &mut findings).await?,
        Opened::Sqlite(sqlite) => {
            let found = sqlite.diagnose(&cli.namespace).await.map_err(Failure::store)?;
            sqlite_findings(&found, &mut findings);
            tables_finding(cli, "SQLite", &found.tables, &mut findings)
        }
        Opened::Postgres(postgres) => {
            let found = postgres.diagnose(&cli.namespace).await.map_err(Failure::store)?;
            postgres_findings(&found, &mut findings);
            tables_finding(cli, "PostgreSQL", &found.tables, &mut findings)
        }
    };
    if ready {
        usage_findings(cli, store, &mut findings).await?;
    }
    Ok(findings)
}

/// A finding to `findings`.
fn push(findings: &mut Vec<Finding>, name: &'static str, level: Level, detail: String) {
    findings.push(Finding { name, level, detail });
}

/// The clock of this machine against the store's, which the bots correct for (Redis) or
/// use alone (PostgreSQL).
fn clock_finding(skew_ms: i64, against: &str, findings: &mut Vec<Finding>) {
    let level = match skew_ms.abs() {
        0..=1000 => Level::Ok,
        1001..=60_000 => Level::Warning,
        _ => Level::Problem,
    };
    push(findings, "clock", level, format!("this machine's clock is {skew_ms} ms off {against}"));
}

/// What the bot's Redis says; `true` if the namespace exists and the rest can be read.
async fn redis_findings(
    cli: &Cli,
    store: &teloxide_retention::RedisStore,
    findings: &mut Vec<Finding>,
) -> Result<bool, Failure> {
    let found = store.diagnose(&cli.namespace).await?;
    let mut add = |name, level, detail: String| push(findings, name, level, detail);

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
    clock_finding(skew, "Redis's (the bots correct for it)", findings);
    let mut add = |name, level, detail: String| push(findings, name, level, detail);

    let meta = format!("{{{}}}:meta", cli.namespace);
    let Some(ns) = &found.namespace else {
        // Before a bot's first run there is nothing to check yet: a warning, so that
        // `check` can gate a first deploy; a wrong --namespace reads the same, said so.
        add("namespace", Level::Warning, not_found(cli, &meta));
        return Ok(false);
    };
    let created =
        ns.created.map_or_else(String::new, |c| format!(", created {}", c.format("%Y-%m-%d")));
    match ns.resharding {
        Some((from, to)) => add(
            "namespace",
            Level::Problem,
            format!(
                "namespace {:?} is being resharded from {from} to {to} shards; finish it with \
                 RedisStore::reshard",
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
                "namespace {:?} has {} shards, but this store is opened with {} (--shards, or \
                 the default for the connection): open it with RedisStore::with_shards({}) in \
                 the bots and --shards {} here; a store opened with another count records and \
                 erases nothing",
                cli.namespace,
                ns.shards,
                store.shards(),
                ns.shards,
                ns.shards
            ),
        );
    }
    Ok(true)
}

/// "namespace "x" not found (WHAT is missing): ..." (a warning).
fn not_found(cli: &Cli, what: &str) -> String {
    format!(
        "namespace {:?} not found ({what} is missing): no bot has used it yet (fine before \
         the first deploy), or --namespace is wrong",
        cli.namespace
    )
}

/// What the SQLite file says. It has no clock: the bot's is the store's.
fn sqlite_findings(found: &teloxide_retention::SqliteDiagnosis, findings: &mut Vec<Finding>) {
    push(findings, "version", Level::Ok, format!("SQLite {}", found.version));
    let journal = found.journal_mode.to_ascii_lowercase();
    let level = match journal.as_str() {
        "wal" | "delete" | "truncate" | "persist" => Level::Ok,
        _ => Level::Problem,
    };
    let mut detail = format!("journal_mode {journal}");
    if level == Level::Problem {
        detail.push_str(
            ": a crash in the middle of an erasure's transaction can leave it half done; use \
             WAL (what SqliteStore::open sets) or DELETE",
        );
    }
    push(findings, "journal", level, detail);
    let (level, detail) = match found.synchronous.as_str() {
        "OFF" => (
            Level::Warning,
            "synchronous OFF: a power loss can undo the last interactions written, and those \
             users would look inactive since their earlier ones; use NORMAL or FULL (what \
             SqliteStore::open sets)"
                .to_owned(),
        ),
        other => (Level::Ok, format!("synchronous {other}")),
    };
    push(findings, "synchronous", level, detail);
    push(
        findings,
        "clock",
        Level::Ok,
        "SQLite has no clock of its own: the bot's clock is the store's (one host)".to_owned(),
    );
}

/// What the PostgreSQL server says.
fn postgres_findings(found: &teloxide_retention::PostgresDiagnosis, findings: &mut Vec<Finding>) {
    let major: u32 =
        found.version.split(['.', ' ']).next().and_then(|m| m.parse().ok()).unwrap_or(0);
    if major >= 11 {
        push(findings, "version", Level::Ok, format!("PostgreSQL {}", found.version));
    } else {
        push(
            findings,
            "version",
            Level::Problem,
            format!("PostgreSQL {}: the store needs 11 or newer", found.version),
        );
    }
    let level = if found.write_isolation == "read committed" { Level::Ok } else { Level::Problem };
    push(
        findings,
        "isolation",
        level,
        format!(
            "writes run at {}, reads at {} (stated in each transaction; the database's default \
             is {})",
            found.write_isolation.to_uppercase(),
            found.read_isolation.to_uppercase(),
            found.default_isolation
        ),
    );
    let (level, detail) = if found.synchronous_commit.eq_ignore_ascii_case("off") {
        (
            Level::Warning,
            "synchronous_commit off: a crash of the server can undo the last interactions \
             written, and those users would look inactive since their earlier ones; set it to on"
                .to_owned(),
        )
    } else {
        (Level::Ok, format!("synchronous_commit {}", found.synchronous_commit))
    };
    push(findings, "durability", level, detail);
    let skew = (found.local_time - found.server_time).num_milliseconds();
    clock_finding(
        skew,
        "PostgreSQL's clock_timestamp() (the store's one clock; the bots' own clocks are not used)",
        findings,
    );
}

/// The version of the namespace's tables; `true` if they can be read.
fn tables_finding(
    cli: &Cli,
    database: &str,
    tables: &TableVersion,
    findings: &mut Vec<Finding>,
) -> bool {
    let ns = &cli.namespace;
    let (level, detail) = match tables {
        TableVersion::Missing => (Level::Warning, not_found(cli, &format!("table \"{ns}.meta\""))),
        TableVersion::Current(v) => {
            (Level::Ok, format!("namespace {ns:?}: tables \"{ns}.*\", version {v}"))
        }
        other => match stores::refuse_other_tables(cli, database, Some(other)) {
            Err(Failure(message, _)) => (Level::Problem, message),
            Ok(()) => (Level::Problem, format!("namespace {ns:?}: tables {other:?}")),
        },
    };
    let ready = level == Level::Ok;
    push(findings, "namespace", level, detail);
    ready
}

/// The last audit and the tracked users, read as the bots read them.
async fn usage_findings(
    cli: &Cli,
    store: Opened,
    findings: &mut Vec<Finding>,
) -> Result<(), Failure> {
    let retention = stores::retention_on(cli, store, None).await?;
    match retention.last_audit().await {
        Ok(Some(a)) if a.residue > 0 => push(
            findings,
            "audit",
            Level::Warning,
            format!(
                "{}: erasers left data of erased users behind (erased again)",
                audit_line(Some(&a))
            ),
        ),
        Ok(audit) => push(findings, "audit", Level::Ok, audit_line(audit.as_ref())),
        Err(e) => push(findings, "audit", Level::Warning, e.to_string()),
    }
    match retention.tracked_users().await {
        Ok(n) => push(findings, "tracking", Level::Ok, format!("{} users tracked", thousands(n))),
        Err(e) => push(findings, "tracking", Level::Problem, e.to_string()),
    }
    // The census, once it has run (a bot's `RetentionBuilder::census`).
    let estimate =
        retention.census_estimate(&teloxide_retention::Census::new(), Duration::from_secs(1)).await;
    match estimate {
        Ok(c) if c.probed_users > 0 || c.round_walked > 0 => push(
            findings,
            "census",
            Level::Ok,
            format!(
                "{} users probed; the current round walked {} idle users",
                thousands(c.probed_users),
                thousands(c.round_walked)
            ),
        ),
        Ok(_) => {}
        Err(e) => push(findings, "census", Level::Warning, e.to_string()),
    }
    Ok(())
}
