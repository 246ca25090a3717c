//! Interactions as a guarded transaction: `MULTI`, the layout fence's guard
//! (`lua/guard.lua`), a plain `ZADD GT` of the pairs, the undoing (`lua/unguard.lua`),
//! `EXEC`. Redis spends about a fifth less per member than when the pairs pass through a
//! script's arguments (`examples/bench.rs`, section 2), and the fence holds as in every
//! write script: a write the fence refuses writes nothing.
//!
//! A transaction does not stop at a failed command, so the guard must never fail where it
//! should refuse. That depends on the server (Redis 7 script flags) and on what the
//! connection's user may run (`RENAME`, `SET`, `TYPE`, `GET`, `DEL` inside scripts, under
//! ACLs). So the path is taken only on a single server (not through a Sentinel, whose
//! failover is told by the errors of plain script calls, nor a Cluster, whose client routes
//! each command of a pipeline on its own), once a probe showed the guard refusing and
//! undoing on this server, under this user; any other reply than the two the guard gives
//! turns the path off for good, back to the interactions script.

use std::sync::atomic::{AtomicU8, Ordering};

use redis::Value;

use super::client::RedisNamespace;
use super::scripts::{GUARD, UNGUARD};
use super::*;
use crate::error::{Error, Result};
use crate::store::Interaction;

/// Whether the guarded path is taken ([`RedisNamespace::guard_holds`]): 0 until a probe
/// ran, then [`HOLDS`] or [`OFF`].
#[derive(Default)]
pub(crate) struct GuardState(AtomicU8);

const HOLDS: u8 = 1;
const OFF: u8 = 2;

impl RedisNamespace {
    /// Whether interactions go as a guarded transaction: on a single server whose probe
    /// passed. A probe that could not run (the server unreachable) is tried again with the
    /// next write; meanwhile the script writes.
    pub(super) async fn guard_holds(&self) -> bool {
        if !matches!(self.conn, Conn::Single(..)) {
            return false;
        }
        match self.guard.0.load(Ordering::Acquire) {
            HOLDS => true,
            OFF => false,
            _ => match self.probe().await {
                Ok(holds) => {
                    self.guard.0.store(if holds { HOLDS } else { OFF }, Ordering::Release);
                    if !holds {
                        tracing::info!(
                            namespace = %self.keys.tag,
                            "the layout fence's guard does not hold on this server (Redis \
                             older than 7, or commands the connection's user may not run): \
                             interactions go through the interactions script"
                        );
                    }
                    holds
                }
                Err(e) if transient(&e) => {
                    tracing::debug!(error = %e, "could not probe the layout fence's guard");
                    false
                }
                Err(e) => {
                    // Refused by the server (a user without `MULTI`, keys outside its
                    // patterns): the same answer every time.
                    self.turn_off(&e.to_string());
                    false
                }
            },
        }
    }

    /// Runs the guard on stand-in keys whose fence refuses, inside one transaction that
    /// leaves nothing behind: `true` if it refused, the `ZADD` failed, the undoing put the
    /// stand-in `seen` back and nothing was left aside.
    async fn probe(&self) -> redis::RedisResult<bool> {
        let [seen, meta, aside] = &self.keys.probe;
        // `MULTI` and `EXEC` as commands of a plain pipeline, not an atomic one: a user who
        // may not run `MULTI` gets its replies one by one (the client's own transaction
        // parsing does not expect that).
        let mut pipe = redis::pipe();
        pipe.ignore_errors();
        pipe.cmd("MULTI");
        pipe.cmd("HSET").arg(meta).arg("moved").arg(0);
        pipe.cmd("ZADD").arg(seen).arg(0).arg("probe");
        self.guard_call(&mut pipe, GUARD, [seen, meta, aside]);
        pipe.cmd("ZADD").arg(seen).arg("GT").arg(1).arg("x");
        self.guard_call(&mut pipe, UNGUARD, [seen, meta, aside]);
        pipe.cmd("ZSCORE").arg(seen).arg("probe");
        pipe.cmd("EXISTS").arg(aside);
        pipe.cmd("DEL").arg(seen).arg(meta).arg(aside);
        pipe.cmd("EXEC");
        let mut replies: Vec<Value> = pipe.query_async(&mut self.conn.clone()).await?;
        let replies = match replies.pop() {
            Some(Value::Array(executed)) if replies.first() == Some(&Value::Okay) => executed,
            _ => return Ok(false),
        };
        let refused =
            |v: &Value, code: &str| matches!(v, Value::ServerError(e) if e.code() == code);
        let int = |v: &Value, n: i64| matches!(v, Value::Int(i) if *i == n);
        let zero = |v: &Value| match v {
            Value::BulkString(b) => b.as_slice() == b"0",
            Value::Double(d) => *d == 0.0,
            _ => false,
        };
        Ok(matches!(
            replies.as_slice(),
            [set, added, guard, zadd, unguard, score, left, deleted]
                if int(set, 1) && int(added, 1) && refused(guard, "LAYOUT")
                    && refused(zadd, "WRONGTYPE") && int(unguard, 1) && zero(score)
                    && int(left, 0) && int(deleted, 2)
        ))
    }

    /// Records one chunk of interactions as a guarded transaction.
    pub(super) async fn guarded_zadd(&self, chunk: &[Interaction], now: i64) -> Result<()> {
        let keys = [&self.keys.seen, &self.keys.meta, &self.keys.aside];
        let mut pipe = redis::pipe();
        pipe.atomic().ignore_errors();
        self.guard_call(&mut pipe, GUARD, keys);
        let zadd = pipe.cmd("ZADD").arg(&self.keys.seen).arg("GT");
        for i in chunk {
            zadd.arg(crate::store::no_later_than(i.at, now)).arg(i.user);
        }
        self.guard_call(&mut pipe, UNGUARD, keys);
        let replies: Vec<Value> = match pipe.query_async(&mut self.conn.clone()).await {
            Ok(replies) => replies,
            Err(e) => {
                if !transient(&e) {
                    // Refused as a whole (a permission the probe's keys had): the script
                    // writes from now on.
                    self.turn_off(&e.to_string());
                }
                return Err(e.into());
            }
        };
        match replies.as_slice() {
            [Value::Int(0), Value::Int(_), Value::Int(0)] => Ok(()),
            // Refused: the `ZADD` failed on the string put in the place of `seen`, and the
            // undoing put `seen` back.
            [Value::ServerError(e), Value::ServerError(_), Value::Int(1)]
                if e.code() == "LAYOUT" =>
            {
                Err(redis::RedisError::from(e.clone()).into())
            }
            _ => {
                self.turn_off(&format!("{replies:?}"));
                Err(match replies.into_iter().find(|r| matches!(r, Value::ServerError(_))) {
                    Some(Value::ServerError(e)) => redis::RedisError::from(e).into(),
                    _ => Error::Corrupt("an unexpected reply of the guarded write".into()),
                })
            }
        }
    }

    /// Turns the guarded path off for good after `what`, a reply the guard never gives.
    fn turn_off(&self, what: &str) {
        if self.guard.0.swap(OFF, Ordering::AcqRel) != OFF {
            tracing::warn!(
                namespace = %self.keys.tag,
                reply = what,
                "the layout fence's guard does not work for this connection (its user's \
                 permissions, or the server, changed?): interactions go through the \
                 interactions script from now on"
            );
        }
    }

    /// Adds a call of the guard or the undoing to `pipe`: the namespace's keys as every
    /// script gets them, with `seen` (1) and `meta` (8) replaced by `keys`' first two, and the
    /// key `seen` is set aside to (14).
    fn guard_call(&self, pipe: &mut redis::Pipeline, source: &str, keys: [&String; 3]) {
        let [seen, meta, aside] = keys;
        let call = pipe.cmd("EVAL").arg(source).arg(14);
        for (i, key) in self.keys.scripts().into_iter().enumerate() {
            call.arg(match i {
                0 => seen,
                7 => meta,
                _ => key,
            });
        }
        call.arg(aside);
    }
}

/// An error that may pass: the connection, a timeout, or a server state that changes
/// (memory pressure, a replica, loading, a busy script). Any other refusal comes again.
fn transient(e: &redis::RedisError) -> bool {
    if e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout() {
        return true;
    }
    let text = e.to_string();
    ["OOM", "READONLY", "LOADING", "MASTERDOWN", "BUSY", "TRYAGAIN"]
        .iter()
        .any(|c| text.contains(c))
}
