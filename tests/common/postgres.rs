//! A real PostgreSQL server per test: a fresh cluster in its own temp dir, `postgres`
//! listening on a unix socket in that dir only (no TCP, so the machine's own server on 5432
//! is never touched), ready when it accepts a connection, killed on drop. A missing binary
//! fails the test with an install hint; nothing is skipped.
//!
//! The cluster is a copy of one `initdb` made once per machine, user and PostgreSQL version
//! (a template in the temp dir): `initdb` costs a second or two of CPU, and about a hundred
//! tests start a server.
//!
//! PostgreSQL refuses to run as root; when the tests do, the server runs as `nobody`.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::redis_server::wait;

/// The port number only names the socket file (`.s.PGSQL.5432`) in the server's own dir.
const PORT: u16 = 5432;
/// `nobody`'s uid and gid on Debian, the server's user when the tests run as root.
const NOBODY: u32 = 65534;

pub struct PostgresServer {
    dir: TempDir,
    child: Child,
    durable: bool,
}

/// `name` from PATH, else from the newest `/usr/lib/postgresql/*/bin` (where Debian's
/// `postgresql` package puts the server binaries, off PATH).
fn binary(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var("PG_BIN").ok().map(PathBuf::from) {
        return dir.join(name);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|p| p.is_file());
    let debian = || {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path().join("bin").join(name))
            .filter(|p| p.is_file())
            .collect();
        dirs.sort();
        dirs.pop()
    };
    on_path.or_else(debian).unwrap_or_else(|| {
        panic!(
            "`{name}` not found (PATH, /usr/lib/postgresql/*/bin, PG_BIN): install PostgreSQL's \
             server (Debian: `apt-get install postgresql`); scripts/test.sh does"
        )
    })
}

fn is_root() -> bool {
    // `/proc/self` belongs to the process's effective user.
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// A cluster made by `initdb`, once per machine, user and PostgreSQL version: made in a
/// temp dir of its own and renamed into place, so that tests starting at once never see a
/// half-made one (the loser of a race drops its own).
fn template(root: bool) -> PathBuf {
    let initdb = binary("initdb");
    let version = Command::new(&initdb).arg("--version").output().expect("run initdb --version");
    let version: String = String::from_utf8_lossy(&version.stdout)
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' })
        .collect();
    let uid = if root {
        NOBODY
    } else {
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap())
    };
    let template = std::env::temp_dir()
        .join(format!("retention-pg-template-{uid}-{}", version.trim_matches('-')));
    if template.join("PG_VERSION").is_file() {
        return template;
    }
    let making =
        tempfile::Builder::new().prefix("retention-pg-making-").tempdir().expect("temp dir");
    if root {
        std::os::unix::fs::chown(making.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
    }
    let data = making.path().join("data");
    let out = as_server_user(&mut Command::new(&initdb), root)
        .args(["-D", data.to_str().unwrap(), "-U", "postgres", "--auth=trust", "-E", "UTF8"])
        .arg("--no-sync")
        .output()
        .expect("run initdb");
    assert!(
        out.status.success(),
        "initdb failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Another test may have won the race: its template is as good.
    let _ = std::fs::rename(&data, &template);
    assert!(template.join("PG_VERSION").is_file(), "no cluster template at {}", template.display());
    template
}

fn as_server_user(cmd: &mut Command, root: bool) -> &mut Command {
    if root {
        cmd.uid(NOBODY).gid(NOBODY);
    }
    cmd
}

impl PostgresServer {
    /// Initializes a cluster in a fresh temp dir and starts a server on it, without
    /// durability (a test database).
    pub fn start() -> Self {
        Self::start_with(false)
    }

    /// As [`start`](Self::start), with the durability of a production server (`fsync`,
    /// synchronous commits, 128 MB of shared buffers): for benchmarks.
    pub fn start_durable() -> Self {
        Self::start_with(true)
    }

    fn start_with(durable: bool) -> Self {
        let dir = tempfile::Builder::new().prefix("retention-pg-").tempdir().expect("temp dir");
        let root = is_root();
        if root {
            std::os::unix::fs::chown(dir.path(), Some(NOBODY), Some(NOBODY)).expect("chown");
        }
        let data = dir.path().join("data");
        let template = template(root);
        let out = Command::new("cp")
            .args(["-a", template.to_str().unwrap(), data.to_str().unwrap()])
            .output()
            .expect("run cp");
        assert!(
            out.status.success(),
            "copying the cluster template {} failed: {}",
            template.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = Self { child: spawn(dir.path(), durable), dir, durable };
        server.wait_ready();
        server
    }

    /// Stops the server as a crash would (SIGQUIT: immediate shutdown, no checkpoint; the
    /// next start replays the WAL). Connections open before it fail on their next use;
    /// new ones are refused until [`start_again`](Self::start_again).
    pub fn crash(&mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-QUIT", &pid]).status().expect("run kill");
        assert!(status.success(), "kill -QUIT {pid} failed");
        self.child.wait().expect("wait for postgres");
    }

    /// Starts the server again on the same data and socket after [`crash`](Self::crash).
    pub fn start_again(&mut self) {
        self.child = spawn(self.dir.path(), self.durable);
        self.wait_ready();
    }

    /// The connection URL of the `postgres` database, as sqlx reads it.
    pub fn url(&self) -> String {
        format!("postgres://postgres@localhost:{PORT}/postgres?host={}", self.dir.path().display())
    }

    /// The server's directory (its socket and `server.log`).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn wait_ready(&mut self) {
        let patience = wait::patience();
        let deadline = Instant::now() + patience;
        loop {
            // The socket exists a moment before the server accepts sessions; the log says
            // when it does.
            let log =
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
            if log.contains("ready to accept connections") {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("postgres exited ({status}): {log}");
            }
            assert!(
                Instant::now() < deadline,
                "postgres did not log \"ready to accept connections\" within {patience:?} ({} \
                 sets the limit): {}",
                wait::PATIENCE_VAR,
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for PostgresServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `postgres` on the cluster in `dir` (a new `server.log` each time: readiness is
/// read from it).
fn spawn(dir: &Path, durable: bool) -> Child {
    let root = is_root();
    let data = dir.join("data");
    let log = std::fs::File::create(dir.join("server.log")).expect("log file");
    if root {
        std::os::unix::fs::chown(dir.join("server.log"), Some(NOBODY), Some(NOBODY))
            .expect("chown log");
    }
    as_server_user(&mut Command::new(binary("postgres")), root)
        .args(["-D", data.to_str().unwrap(), "-k", dir.to_str().unwrap()])
        .args(["-p", &PORT.to_string(), "-c", "listen_addresses="])
        .args(if durable {
            ["-c", "fsync=on", "-c", "synchronous_commit=on"]
        } else {
            // A test database: no durability needed, and little memory.
            ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        })
        .args(if durable {
            ["-c", "full_page_writes=on", "-c", "shared_buffers=128MB"]
        } else {
            ["-c", "full_page_writes=off", "-c", "shared_buffers=16MB"]
        })
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn postgres")
}
