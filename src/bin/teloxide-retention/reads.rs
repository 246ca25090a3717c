//! The commands that read the store: `stats`, `preview`, `status`, `export`, `receipt`.

use super::*;

pub(super) fn survey_json(cli: &Cli, s: &Survey) -> Value {
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
        "due": { "now": s.due_now, "within_1d": s.due_within_day, "within_7d": s.due_within_week,
                 "held_by_notices": s.held_by_notices },
        "notices": s.notices.iter().map(|n| json!({
            "quiet_since": n.quiet_since.to_rfc3339(),
            "until": n.until.to_rfc3339(),
        })).collect::<Vec<_>>(),
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
        "census": census_json(&s.census),
        "writers": s.writers.iter().map(|w| json!({
            "id": w.id,
            "last_beat": w.last_beat.to_rfc3339(),
            "age_seconds": (s.taken_at - w.last_beat).num_seconds(),
            "unwritten": w.unwritten,
        })).collect::<Vec<_>>(),
    })
}

pub(super) fn survey_text(cli: &Cli, s: &Survey) -> String {
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
    if let Some(last) = s.notices.last() {
        let _ = writeln!(
            out,
            "held by adoption notices: {} users past the threshold ({} running, the last until {})",
            thousands(s.held_by_notices),
            s.notices.len(),
            last.until.format("%Y-%m-%d %H:%M UTC")
        );
    }
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
    if s.census.probed_users > 0 || s.census.round_walked > 0 {
        let _ = writeln!(
            out,
            "census: {} users probed; current round walked {} idle users",
            thousands(s.census.probed_users),
            thousands(s.census.round_walked)
        );
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

pub(super) async fn stats(cli: &Cli) -> Outcome {
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
                    "adopted": a.adopted, "residue": a.residue, "deferred": a.deferred,
                    "not_covered": a.not_covered })
        });
        println!("{doc}");
    } else {
        print!("{}", survey_text(cli, &survey));
        println!("{}", audit_line(audit.as_ref()));
    }
    Ok(ExitCode::SUCCESS)
}

fn census_json(c: &teloxide_retention::CensusProgress) -> Value {
    json!({
        "probed_users": c.probed_users,
        "round_walked": c.round_walked,
        "idle_users": c.idle_users,
        "round_takes_seconds": c.round_takes.map(|d| d.as_secs()),
        "round_left_seconds": c.round_left.map(|d| d.as_secs()),
    })
}

/// `census --dry-run`: what a census round over the current base takes.
pub(super) async fn census(cli: &Cli, idle_for: Duration, interval: Duration) -> Outcome {
    if interval.is_zero() {
        return Err(Failure::usage("--interval-ms must be at least 1".to_owned()));
    }
    let retention = retention(cli, cli.inactive_after).await?;
    let spinner = spinner("counting");
    let census = teloxide_retention::Census::new().idle_for(idle_for);
    let estimate = retention.census_estimate(&census, interval).await;
    spinner.finish_and_clear();
    let estimate = estimate?;
    if cli.json {
        println!("{}", census_json(&estimate));
        return Ok(ExitCode::SUCCESS);
    }
    let span = |d: Option<Duration>| {
        age(chrono::Duration::from_std(d.unwrap_or_default()).unwrap_or_default())
    };
    println!(
        "idle for {} or more: {} users; at one probe per {} ms a round takes at most {}",
        age(chrono::Duration::from_std(idle_for).unwrap_or_default()),
        thousands(estimate.idle_users.unwrap_or(0)),
        interval.as_millis(),
        span(estimate.round_takes)
    );
    println!(
        "probed so far: {} users; the current round walked {} and has at most {} left",
        thousands(estimate.probed_users),
        thousands(estimate.round_walked),
        span(estimate.round_left)
    );
    Ok(ExitCode::SUCCESS)
}

/// "last audit 3 h ago: 0 untracked, 0 residue; 1 eraser cannot list".
pub(super) fn audit_line(audit: Option<&teloxide_retention::AuditSummary>) -> String {
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

pub(super) async fn preview(cli: &Cli, limit: usize) -> Outcome {
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

pub(super) async fn status(cli: &Cli, user: UserId) -> Outcome {
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
                "last_probed": time(status.last_probed),
                "last_reachable": time(status.last_reachable),
            })
        );
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(probed) = status.last_probed {
        let reachable = status.last_reachable.map_or("never found reachable".to_owned(), |t| {
            format!("last reachable {}", t.format("%Y-%m-%d %H:%M:%S UTC"))
        });
        println!(
            "user {}: last probed {} ({reachable})",
            user.0,
            probed.format("%Y-%m-%d %H:%M:%S UTC")
        );
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

pub(super) async fn export(cli: &Cli, user: UserId) -> Outcome {
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

pub(super) async fn receipt(cli: &Cli, user: UserId, key_file: &Path) -> Outcome {
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
