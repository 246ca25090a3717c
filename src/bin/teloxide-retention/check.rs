//! `check`: what could make the bots' retention unsafe, as findings with a level.

use super::reads::audit_line;
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
