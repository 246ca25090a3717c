//! A Sentinel deployment started by a test: one master, one replica and three
//! `redis-server --sentinel` processes, all on OS-chosen ports of 127.0.0.1 in their own temp
//! dirs, killed on drop.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::redis_server::{RedisServer, free_port};

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

fn connection(port: u16) -> redis::Connection {
    redis::Client::open(format!("redis://127.0.0.1:{port}/")).unwrap().get_connection().unwrap()
}

fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl SentinelTopology {
    pub fn start() -> Self {
        let master = RedisServer::start_tcp(&[]);
        let master_port = master.port().to_string();
        let replica = RedisServer::start_tcp(&["--replicaof", "127.0.0.1", &master_port]);
        let mut replica_conn = replica.sync_connection();
        wait_for("the replica to sync", || {
            let info: String =
                redis::cmd("INFO").arg("replication").query(&mut replica_conn).unwrap();
            info.contains("master_link_status:up")
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
            wait_for("a sentinel to answer", || {
                redis::Client::open(format!("redis://127.0.0.1:{}/", sentinel.port))
                    .and_then(|c| c.get_connection())
                    .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                    .is_ok()
            });
            let mut conn = connection(sentinel.port);
            wait_for("a sentinel to see the replica", || {
                let replicas: Vec<redis::Value> = redis::cmd("SENTINEL")
                    .arg("REPLICAS")
                    .arg(MASTER_NAME)
                    .query(&mut conn)
                    .unwrap_or_default();
                !replicas.is_empty()
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
        let mut conn = connection(self.sentinels[0].port);
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(MASTER_NAME)
            .query(&mut conn)
            .unwrap();
        port
    }

    /// Waits until the replica has every write of the master so far.
    pub fn sync_replica(&self) {
        let mut conn = connection(self.master_port());
        let acked: i64 = redis::cmd("WAIT").arg(1).arg(5000).query(&mut conn).unwrap();
        assert_eq!(acked, 1, "the replica acknowledged the writes");
    }

    /// `SENTINEL FAILOVER`: the replica becomes the master. Returns once every sentinel
    /// names it, it answers as a master and the old master answers as its replica.
    pub fn failover(&self) -> u16 {
        let old = self.master_port();
        let mut conn = connection(self.sentinels[0].port);
        // A sentinel refuses ("NOGOODSLAVE") until it has the replica's INFO.
        wait_for("a sentinel to accept the failover", || {
            let asked: redis::RedisResult<()> =
                redis::cmd("SENTINEL").arg("FAILOVER").arg(MASTER_NAME).query(&mut conn);
            match asked {
                Ok(()) => true,
                Err(e) if e.to_string().contains("NOGOODSLAVE") => false,
                Err(e) => panic!("SENTINEL FAILOVER: {e}"),
            }
        });
        wait_for("the sentinels to name the new master", || {
            self.sentinels.iter().all(|s| {
                let (_, port): (String, u16) = redis::cmd("SENTINEL")
                    .arg("GET-MASTER-ADDR-BY-NAME")
                    .arg(MASTER_NAME)
                    .query(&mut connection(s.port))
                    .unwrap();
                port != old
            })
        });
        let new = self.master_port();
        wait_for("the new master to accept writes", || {
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connection(new)).unwrap();
            matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"master")
        });
        // Sentinel demotes the old master right after: until then it still takes writes,
        // which its resync with the new master throws away (Redis replication is
        // asynchronous; the README's Sentinel section says what that means).
        wait_for("the old master to become a replica", || {
            let role: Vec<redis::Value> = redis::cmd("ROLE").query(&mut connection(old)).unwrap();
            matches!(role.first(), Some(redis::Value::BulkString(b)) if b == b"slave")
        });
        new
    }
}
