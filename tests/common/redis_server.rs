//! A real `redis-server` per test: its own temp dir and unix socket (no TCP port, so the
//! machine's own Redis on 6379 is never touched), ready when it answers PING, killed on
//! drop. A missing binary fails the test with an install hint; nothing is skipped. Every
//! wait for the server retries until [`patience`](wait::patience), then fails with
//! what it waited for and the server's log.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::certs::{TestCerts, install_crypto_provider};

// Declared here, not in `common`, as examples/bench.rs includes this file and the other
// servers' files without `common`; `common` re-exports it.
#[path = "wait.rs"]
pub mod wait;

pub struct RedisServer {
    dir: TempDir,
    child: Option<Child>,
    mode: Mode,
    /// Extra command-line settings.
    extra: Vec<String>,
}

/// How a server listens.
#[derive(Clone)]
enum Mode {
    /// A unix socket in its temp dir (the default).
    Unix,
    /// A TCP port on 127.0.0.1 (Sentinel topologies).
    Tcp(u16),
    /// A cluster node on a TCP port.
    Cluster(u16),
    /// TLS only, on a TCP port, with certificates signed by the test's CA; clients must
    /// present a certificate if `client_auth`.
    Tls { port: u16, certs: std::sync::Arc<TestCerts>, client_auth: bool },
}

fn binary() -> String {
    std::env::var("REDIS_SERVER_BIN").unwrap_or_else(|_| "redis-server".to_owned())
}

impl RedisServer {
    /// Starts a server on a unix socket in a fresh temp dir.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra settings, e.g. `["--maxmemory-policy", "allkeys-lru"]`.
    pub fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("retention-redis-").tempdir().expect("temp dir");
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server = Self { dir, child: None, mode: Mode::Unix, extra };
        server.spawn();
        server
    }

    /// Starts a server on a TCP port of 127.0.0.1 (OS-chosen), with extra settings.
    pub fn start_tcp(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("retention-tcp-").tempdir().expect("temp dir");
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server = Self { dir, child: None, mode: Mode::Tcp(free_port()), extra };
        server.spawn();
        server
    }

    /// Starts a TLS-only server whose certificate `certs`' CA signed.
    pub fn start_tls(certs: std::sync::Arc<TestCerts>, client_auth: bool) -> Self {
        install_crypto_provider();
        let dir = tempfile::Builder::new().prefix("retention-tls-").tempdir().expect("temp dir");
        let port = free_port();
        let mut server = Self {
            dir,
            child: None,
            mode: Mode::Tls { port, certs, client_auth },
            extra: Vec::new(),
        };
        server.spawn();
        server
    }

    /// Starts a TLS-only single-node Redis Cluster (all 16384 slots; the cluster bus over
    /// TLS too) whose certificate `certs`' CA signed; clients must present a certificate.
    pub fn start_tls_cluster(certs: std::sync::Arc<TestCerts>) -> Self {
        install_crypto_provider();
        let dir =
            tempfile::Builder::new().prefix("retention-tls-cluster-").tempdir().expect("temp dir");
        let port = free_port();
        let extra = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf"]
            .into_iter()
            .map(str::to_owned)
            .chain(["--cluster-port".to_owned(), free_port().to_string()])
            .chain(["--tls-cluster".to_owned(), "yes".to_owned()])
            .collect();
        let mut server =
            Self { dir, child: None, mode: Mode::Tls { port, certs, client_auth: true }, extra };
        server.spawn();
        server.own_every_slot();
        server
    }

    /// The TCP port, for TCP, cluster and TLS servers.
    pub fn port(&self) -> u16 {
        match &self.mode {
            Mode::Tcp(port) | Mode::Cluster(port) | Mode::Tls { port, .. } => *port,
            Mode::Unix => panic!("a unix-socket server has no port"),
        }
    }

    /// Starts a cluster-mode node with no slots (for `redis-cli --cluster create`), with extra
    /// settings.
    pub fn start_cluster_node(extra: &[&str]) -> Self {
        let dir = tempfile::Builder::new().prefix("retention-node-").tempdir().expect("temp dir");
        let extra = extra.iter().map(|s| (*s).to_owned()).collect();
        let mut server = Self { dir, child: None, mode: Mode::Cluster(free_port()), extra };
        server.spawn();
        server
    }

    /// `true` while the server process runs.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Starts a single-node Redis Cluster (all 16384 slots) on OS-chosen ports.
    pub fn start_cluster() -> Self {
        let dir =
            tempfile::Builder::new().prefix("retention-cluster-").tempdir().expect("temp dir");
        let port = free_port();
        let mut server = Self { dir, child: None, mode: Mode::Cluster(port), extra: Vec::new() };
        server.spawn();
        server.own_every_slot();
        server
    }

    /// Gives this single cluster node all 16384 slots and waits until the cluster is ok.
    fn own_every_slot(&self) {
        let mut conn = self.sync_connection();
        let _: () = redis::cmd("CLUSTER")
            .arg("ADDSLOTSRANGE")
            .arg(0)
            .arg(16383)
            .query(&mut conn)
            .expect("CLUSTER ADDSLOTSRANGE");
        wait::retry("the single-node cluster to be ok", Duration::from_millis(50), || {
            match self
                .try_connection()
                .and_then(|mut c| redis::cmd("CLUSTER").arg("INFO").query::<String>(&mut c))
            {
                Ok(info) if info.contains("cluster_state:ok") => Ok(()),
                Ok(info) => Err(info),
                Err(e) => Err(e.to_string()),
            }
        });
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// The URL to connect with.
    pub fn url(&self) -> String {
        match &self.mode {
            Mode::Tcp(port) | Mode::Cluster(port) => format!("redis://127.0.0.1:{port}/"),
            Mode::Tls { port, .. } => format!("rediss://localhost:{port}/"),
            Mode::Unix => format!("redis+unix://{}", self.socket().display()),
        }
    }

    fn client(&self) -> redis::RedisResult<redis::Client> {
        match &self.mode {
            Mode::Tls { certs, .. } => {
                redis::Client::build_with_tls(self.url(), certs.redis_certificates())
            }
            _ => redis::Client::open(self.url()),
        }
    }

    /// A new connection to the server; retried until it connects (a loaded machine may
    /// be slow to accept), failing with the server's log.
    pub fn sync_connection(&self) -> redis::Connection {
        let what = format!("a connection to redis-server at {}", self.url());
        wait::retry(&what, Duration::from_millis(20), || {
            self.try_connection().map_err(|e| format!("{e}; log:\n{}", read(&self.log())))
        })
    }

    /// One attempt at a connection, bounded so that a hung server fails the attempt.
    fn try_connection(&self) -> redis::RedisResult<redis::Connection> {
        let conn = self.client()?.get_connection_with_timeout(Duration::from_secs(10))?;
        conn.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(conn)
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut cmd = Command::new(binary());
        cmd.arg("--dir").arg(dir).arg("--logfile").arg(self.log()).args([
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
        ]);
        match self.mode.clone() {
            Mode::Tcp(port) => {
                cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"]);
            }
            Mode::Tls { port, certs, client_auth } => {
                let write = |name: &str, pem: &str| {
                    let path = dir.join(name);
                    std::fs::write(&path, pem).unwrap();
                    path
                };
                cmd.args(["--port", "0", "--tls-port", &port.to_string(), "--bind", "127.0.0.1"])
                    .arg("--tls-cert-file")
                    .arg(write("server.crt", &certs.server_cert_pem))
                    .arg("--tls-key-file")
                    .arg(write("server.key", &certs.server_key_pem))
                    .arg("--tls-ca-cert-file")
                    .arg(write("ca.crt", &certs.ca_pem))
                    .args(["--tls-auth-clients", if client_auth { "yes" } else { "no" }]);
            }
            Mode::Cluster(port) => {
                let bus = free_port();
                cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                    .args(["--cluster-enabled", "yes", "--cluster-port", &bus.to_string()])
                    .arg("--cluster-config-file")
                    .arg(dir.join("nodes.conf"));
            }
            Mode::Unix => {
                cmd.args(["--port", "0", "--unixsocketperm", "700"])
                    .arg("--unixsocket")
                    .arg(self.socket());
            }
        }
        cmd.args(&self.extra);
        let child = cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap_or_else(|e| {
            panic!(
                "could not start `{}`: {e}.\nThe tests need a real Redis server binary: \
                 install it (Debian/Ubuntu: `apt-get install redis-server`; macOS: \
                 `brew install redis`), set REDIS_SERVER_BIN, or run scripts/test.sh, which \
                 installs it.",
                binary()
            )
        });
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&mut self) {
        let patience = wait::patience();
        let deadline = Instant::now() + patience;
        loop {
            let pinged = self
                .try_connection()
                .and_then(|mut conn| redis::cmd("PING").query::<String>(&mut conn));
            let error = match pinged {
                Ok(_) => return,
                Err(e) => e,
            };
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!("redis-server exited with {status}; log:\n{}", read(&self.log()));
            }
            if Instant::now() > deadline {
                panic!(
                    "redis-server did not answer PING within {patience:?} (last: {error}; {} \
                     sets the limit); log:\n{}",
                    wait::PATIENCE_VAR,
                    read(&self.log())
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (like a crash); its data is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Freezes the server (SIGSTOP): connections stay open and nothing answers, as with a
    /// hung Redis.
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// Lets a paused server go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("a running server").id();
        let status = Command::new("kill").arg(signal).arg(pid.to_string()).status().expect("kill");
        assert!(status.success(), "kill {signal} {pid} failed");
    }

    /// Starts the server again on the same socket.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| format!("<no log: {e}>"))
}

/// Waits until a replica of the master on 127.0.0.1:`port` has acknowledged every write
/// the master took so far: the master's replication offset now. (`WAIT` answers for the
/// writes of its own connection only: on a fresh one, which wrote nothing, it returns at
/// once, whatever the replica still lacks.)
pub fn wait_replicated(port: u16) {
    let every = Duration::from_millis(50);
    let info = || -> Result<String, String> {
        let client =
            redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
        let mut conn = client
            .get_connection_with_timeout(Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        conn.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
        redis::cmd("INFO").arg("replication").query(&mut conn).map_err(|e| e.to_string())
    };
    let field = |info: &str, name: &str| -> Option<i64> {
        info.lines().find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
    };
    let what = format!("the replication offset of the master on port {port}");
    let target = wait::retry(&what, every, || {
        let info = info()?;
        field(&info, "master_repl_offset:").ok_or(info)
    });
    let what = format!("a replica of the master on port {port} to acknowledge offset {target}");
    wait::retry(&what, every, || {
        let info = info()?;
        // "slave0:ip=127.0.0.1,port=…,state=online,offset=…,lag=0"
        let acked = info
            .lines()
            .filter(|l| l.starts_with("slave") && l.contains("state=online"))
            .filter_map(|l| {
                l.split(',').find_map(|kv| kv.strip_prefix("offset=")?.parse::<i64>().ok())
            })
            .max();
        match acked {
            Some(acked) if acked >= target => Ok(()),
            _ => Err(info),
        }
    });
}

/// A TCP port the OS reports free (below 55536, so that a cluster bus port fits too).
pub fn free_port() -> u16 {
    loop {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < 55_536 {
            return port;
        }
    }
}
