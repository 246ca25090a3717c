//! A Sentinel deployment started by a test: one master, one replica and three
//! `redis-server --sentinel` processes, all on OS-chosen ports of 127.0.0.1 in their own temp
//! dirs, killed on drop.
//!
//! Every read of a sentinel or a server retries until [`patience`](wait::patience):
//! a failover closes clients' connections (Sentinel demotes the old master with `REPLICAOF`
//! and `CLIENT KILL`), so a read may meet a refused connection or an end of file.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tempfile::TempDir;

use super::redis_server::{RedisServer, free_port, wait, wait_replicated};

pub const MASTER_NAME: &str = "mymaster";

pub struct SentinelTopology {
    pub master: RedisServer,
    pub replica: RedisServer,
    sentinels: Vec<Sentinel>,
}

struct Sentinel {
    _dir: TempDir,
    child: Child,
    port: u16,
}

impl Drop for Sentinel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How often a wait asks again.
const POLL: Duration = Duration::from_millis(50);

/// Sends `cmd` to the server or sentinel on `port` over a new connection (a failover may
/// have cut any older one).
fn query<T: redis::FromRedisValue>(port: u16, cmd: &redis::Cmd) -> redis::RedisResult<T> {
    let client = redis::Client::open(format!("redis://127.0.0.1:{port}/"))?;
    let mut conn = client.get_connection_with_timeout(Duration::from_secs(10))?;
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    cmd.query(&mut conn)
}

/// The role (`master`, `slave`, `sentinel`) the server on `port` answers `ROLE` with.
fn role(port: u16) -> redis::RedisResult<String> {
    let role: Vec<redis::Value> = query(port, &redis::cmd("ROLE"))?;
    match role.first() {
        Some(redis::Value::BulkString(b)) => Ok(String::from_utf8_lossy(b).into_owned()),
        other => Err(std::io::Error::other(format!("ROLE answered {other:?}")).into()),
    }
}

/// Waits until the server on `port` answers `ROLE` with `expected`.
fn wait_for_role(what: &str, port: u16, expected: &str) {
    wait::retry(what, POLL, || match role(port) {
        Ok(role) if role == expected => Ok(()),
        Ok(role) => Err(format!("it is a {role}")),
        Err(e) => Err(e.to_string()),
    });
}

/// The port of the master that the sentinel on `sentinel` names.
fn named_master(sentinel: u16) -> redis::RedisResult<u16> {
    let cmd = redis::cmd("SENTINEL").arg("GET-MASTER-ADDR-BY-NAME").arg(MASTER_NAME).clone();
    query::<(String, u16)>(sentinel, &cmd).map(|(_, port)| port)
}

impl SentinelTopology {
    pub fn start() -> Self {
        let master = RedisServer::start_tcp(&[]);
        let master_port = master.port().to_string();
        let replica = RedisServer::start_tcp(&["--replicaof", "127.0.0.1", &master_port]);
        let replica_port = replica.port();
        wait::retry("the replica to sync", POLL, || {
            match query::<String>(replica_port, redis::cmd("INFO").arg("replication")) {
                Ok(info) if info.contains("master_link_status:up") => Ok(()),
                Ok(_) => Err("master_link_status is not up".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        });
        let sentinels = (0..3)
            .map(|_| {
                let dir = tempfile::Builder::new().prefix("retention-sentinel-").tempdir().unwrap();
                let port = free_port();
                let conf = dir.path().join("sentinel.conf");
                std::fs::write(
                    &conf,
                    format!(
                        "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                         sentinel monitor {MASTER_NAME} 127.0.0.1 {master_port} 2\n\
                         sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                         sentinel failover-timeout {MASTER_NAME} 10000\n",
                        dir = dir.path().display()
                    ),
                )
                .unwrap();
                let child = Command::new(
                    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".into()),
                )
                .arg(&conf)
                .args(["--sentinel", "--logfile"])
                .arg(dir.path().join("sentinel.log"))
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("redis-server --sentinel (install redis-server)");
                Sentinel { _dir: dir, child, port }
            })
            .collect::<Vec<_>>();
        for sentinel in &sentinels {
            let port = sentinel.port;
            wait::retry("a sentinel to answer PING", POLL, || {
                query::<String>(port, &redis::cmd("PING"))
            });
            let replicas = redis::cmd("SENTINEL").arg("REPLICAS").arg(MASTER_NAME).clone();
            wait::retry("a sentinel to see the replica", POLL, || {
                match query::<Vec<redis::Value>>(port, &replicas) {
                    Ok(found) if !found.is_empty() => Ok(()),
                    Ok(_) => Err("no replica yet".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            });
        }
        Self { master, replica, sentinels }
    }

    /// The sentinels' URLs.
    pub fn sentinel_urls(&self) -> Vec<String> {
        self.sentinels.iter().map(|s| format!("redis://127.0.0.1:{}/", s.port)).collect()
    }

    /// The port of the master the sentinels name now.
    pub fn master_port(&self) -> u16 {
        let sentinel = self.sentinels[0].port;
        wait::retry("a sentinel to name the master", POLL, || named_master(sentinel))
    }

    /// Waits until the replica has every write of the master so far.
    pub fn sync_replica(&self) {
        wait_replicated(self.master_port());
    }

    /// `SENTINEL FAILOVER`: the replica becomes the master. Returns once every sentinel
    /// names it, it answers as a master and the old master answers as its replica.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let sentinel = self.sentinels[0].port;
        // A sentinel refuses ("NOGOODSLAVE") until it has the replica's INFO, and answers
        // "INPROG" once a failover it started runs: both are "not yet" or "done".
        let failover = redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME).clone();
        wait::retry("a sentinel to accept the failover", POLL, || {
            match query::<()>(sentinel, &failover) {
                Ok(()) => Ok(()),
                Err(e) if e.to_string().contains("INPROG") => Ok(()),
                Err(e) if e.to_string().contains("NOGOODSLAVE") || is_transient(&e) => {
                    Err(e.to_string())
                }
                Err(e) => panic!("SENTINEL FAILOVER: {e}"),
            }
        });
        wait::retry("every sentinel to name the new master", POLL, || {
            for s in &self.sentinels {
                match named_master(s.port) {
                    Ok(port) if port != old => {}
                    Ok(_) => return Err(format!("sentinel {} still names {old}", s.port)),
                    Err(e) => return Err(format!("sentinel {}: {e}", s.port)),
                }
            }
            Ok(())
        });
        let new = self.master_port();
        wait_for_role("the new master to answer as a master", new, "master");
        // Sentinel demotes the old master right after: until then it still takes writes,
        // which its resync with the new master throws away (Redis replication is
        // asynchronous; the README's Sentinel section says what that means). The demotion
        // closes the old master's clients: a read may end early, and is asked again.
        wait_for_role("the old master to answer as a replica", old, "slave");
        new
    }
}

/// An error of the connection (refused, reset, end of file, timeout) rather than an answer.
fn is_transient(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}
