//! Waiting for a state, the one way the tests wait: poll until the state holds, and fail
//! with what was awaited (and the last error seen) once [`patience`] has passed. A wait
//! returns as soon as its state holds, so a generous deadline costs nothing on a quiet
//! machine and keeps a loaded one (a parallel build on every core, a shared CI runner)
//! from failing a test that would pass a little later.

use std::fmt::Display;
use std::time::{Duration, Instant};

/// The environment variable that sets [`patience`], in seconds.
pub const PATIENCE_VAR: &str = "RETENTION_TEST_PATIENCE_SECS";

/// How long any wait for a state lasts before the test fails: 120 s, or
/// `RETENTION_TEST_PATIENCE_SECS` (for a very slow CI runner).
pub fn patience() -> Duration {
    const DEFAULT: Duration = Duration::from_secs(120);
    match std::env::var(PATIENCE_VAR) {
        Ok(secs) => match secs.trim().parse::<u64>() {
            Ok(secs) if secs > 0 => Duration::from_secs(secs),
            _ => panic!("{PATIENCE_VAR}={secs:?}: a whole number of seconds above zero"),
        },
        Err(_) => DEFAULT,
    }
}

/// Calls `attempt` every `every` until it returns `Ok`, and returns its value. An `Err` is
/// "not yet" (a server still starting, a connection cut by a failover, a short read); once
/// [`patience`] has passed the test fails with `what` and the last error.
pub fn retry<T, E: Display>(
    what: &str,
    every: Duration,
    mut attempt: impl FnMut() -> Result<T, E>,
) -> T {
    let patience = patience();
    let deadline = Instant::now() + patience;
    loop {
        match attempt() {
            Ok(value) => return value,
            Err(e) if Instant::now() >= deadline => {
                panic!(
                    "timed out after {patience:?} waiting for: {what} (last: {e}); \
                     {PATIENCE_VAR} sets the limit"
                )
            }
            Err(_) => std::thread::sleep(every),
        }
    }
}

/// Calls `check` every `every` until it holds; see [`retry`]. For checks that read a
/// server, [`retry`] with the read's error keeps that error for the failure message.
pub fn until(what: &str, every: Duration, mut check: impl FnMut() -> bool) {
    retry(what, every, || if check() { Ok(()) } else { Err("not yet") });
}
