//! The commands that write from a file or a list: `forget` and `adopt`, with their
//! input files, bad lines and resumable progress.

use super::*;

/// A line of an input file that was skipped: its number, its text and why.
pub(super) type BadLine = (usize, String, String);

/// The entries of an input file, one per line (blank lines and `#` comments skipped),
/// and the lines `parse` refused, which are reported, not fatal.
pub(super) fn read_lines<T>(
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
pub(super) fn parse_id(text: &str) -> Result<u64, String> {
    text.parse::<u64>()
        .ok()
        .filter(|id| (1..=MAX_USER_ID).contains(id))
        .ok_or_else(|| "not a user id (user ids are 1 to 2^53 - 1)".to_owned())
}

/// The largest user id the crate stores (`Error::InvalidUser` above it).
const MAX_USER_ID: u64 = (1 << 53) - 1;

/// Says each bad line on stderr and returns them for `--json`; with `--strict`, refuses
/// the file if there is one.
pub(super) fn report_bad_lines(
    cli: &Cli,
    file: &Path,
    bad: &[BadLine],
) -> Result<Vec<Value>, Failure> {
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

pub(super) fn progress_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".progress");
    PathBuf::from(name)
}

/// The input file's fingerprint (SHA-256 of its bytes), kept with the progress: a
/// progress file left by another file, or by this file before it changed, is refused
/// instead of skipping ids it never covered.
pub(super) fn fingerprint(file: &Path) -> Result<String, Failure> {
    use sha2::Digest;
    let bytes = std::fs::read(file)
        .map_err(|e| Failure::usage(format!("cannot read {}: {e}", file.display())))?;
    Ok(sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect())
}

/// How many ids of `file` an earlier, interrupted run went through: its progress file
/// holds that count and the fingerprint of the file it was written for.
pub(super) fn read_progress(file: &Path, total: usize) -> Result<usize, Failure> {
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
pub(super) fn write_progress(file: &Path, print: &str, done: usize) -> Result<(), Failure> {
    let path = progress_path(file);
    let tmp = path.with_extension("progress.tmp");
    std::fs::write(&tmp, format!("{done} {print}\n"))
        .and_then(|()| std::fs::rename(&tmp, &path))
        .map_err(|e| Failure::new(format!("cannot write {}: {e}", path.display())))
}

pub(super) async fn forget(cli: &Cli, users: &[u64], file: Option<&Path>, rate: u32) -> Outcome {
    const CHUNK: usize = 500;
    let (ids, bad_json) = match file {
        Some(path) => {
            let (ids, bad) = read_lines(path, parse_id)?;
            (ids, report_bad_lines(cli, path, &bad)?)
        }
        None => {
            if let Some(bad) = users.iter().find(|u| !(1..=MAX_USER_ID).contains(*u)) {
                return Err(Failure::usage(format!(
                    "{bad} is not a user id (user ids are 1 to 2^53 - 1); nothing was scheduled"
                )));
            }
            (users.to_vec(), Vec::new())
        }
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
                Marked::Scheduled => "scheduled",
                Marked::AlreadyScheduled => "already_scheduled",
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
pub(super) async fn pace(rate: u32, done: usize, started: std::time::Instant) {
    if rate == 0 {
        return;
    }
    let due = Duration::from_secs_f64(done as f64 / f64::from(rate));
    if let Some(wait) = due.checked_sub(started.elapsed()) {
        tokio::time::sleep(wait).await;
    }
}

/// An adoption file's line: `ID` or `ID,LAST_ACTIVE`.
pub(super) fn parse_adoption(line: &str) -> Result<(UserId, Option<DateTime<Utc>>), String> {
    let (id, time) = match line.split_once(',') {
        Some((id, time)) => (id.trim(), Some(time.trim())),
        None => (line, None),
    };
    Ok((UserId(parse_id(id)?), time.map(parse_date).transpose()?))
}

/// `end-notices`: ends every running adoption notice.
pub(super) async fn end_notices(cli: &Cli) -> Outcome {
    let retention = retention(cli, None).await?;
    let running = retention.survey().await?.notices.len();
    retention.end_notices().await?;
    if cli.json {
        println!("{}", json!({ "ended": running }));
    } else {
        println!("ended {running} running adoption notices");
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) async fn adopt(
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
    let print = fingerprint(file)?;
    let skip = read_progress(file, users.len())?;
    // A notice is a rule of its own in the store: the threshold plays no part.
    let retention = retention(cli, None).await?;
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
        let adopted =
            retention.adopt(chunk.iter().copied(), &options).await.map_err(Failure::store)?;
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
                "refused_implausible_times": total.refused_implausible_times,
                "bad_lines": bad_json,
            })
        );
    } else {
        if skip > 0 {
            println!("resumed after {} users adopted by an earlier run", thousands(skip as u64));
        }
        println!(
            "{} users newly tracked, {} moved forward, {} kept, {} left to a running or \
             scheduled erasure, {} refused, {} with an implausible last activity; {} bad \
             lines skipped",
            thousands(total.newly_tracked),
            thousands(total.moved_forward),
            thousands(total.kept),
            thousands(total.erasing),
            thousands(total.refused_service_accounts + total.refused_invalid_ids),
            thousands(total.refused_implausible_times),
            bad.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Adds two runs' counts (`Adopted` is non-exhaustive: no struct literal here).
pub(super) fn sum_adopted(
    mut a: teloxide_retention::Adopted,
    b: teloxide_retention::Adopted,
) -> teloxide_retention::Adopted {
    a.newly_tracked += b.newly_tracked;
    a.moved_forward += b.moved_forward;
    a.kept += b.kept;
    a.erasing += b.erasing;
    a.refused_service_accounts += b.refused_service_accounts;
    a.refused_invalid_ids += b.refused_invalid_ids;
    a.refused_implausible_times += b.refused_implausible_times;
    a
}

/// What the first pass after adopting `users` would erase for inactivity, by age past the
/// threshold; nothing is written.
pub(super) fn adopt_dry_run(
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
                "the first pass erases nobody for inactivity before {} (the notice also holds \
                 every tracked user quiet since the adoption)",
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
