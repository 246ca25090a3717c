//! A unix-socket proxy in front of a test's Redis that can cut one client off: the network
//! partition of one bot replica while the others still reach Redis.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    dir: TempDir,
    target: PathBuf,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl Proxy {
    /// Starts forwarding to the Redis listening on `target`.
    pub fn start(target: PathBuf) -> Self {
        let dir = tempfile::Builder::new().prefix("retention-proxy-").tempdir().expect("temp dir");
        let proxy = Self { dir, target, tasks: Arc::default() };
        proxy.listen();
        proxy
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("proxy.sock")
    }

    /// The URL clients connect with.
    pub fn url(&self) -> String {
        format!("redis+unix://{}", self.socket().display())
    }

    fn listen(&self) {
        let listener = UnixListener::bind(self.socket()).expect("bind the proxy socket");
        let target = self.target.clone();
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    if let Ok(mut server) = UnixStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
                tasks.lock().unwrap().push(pipe);
            }
        });
        self.tasks.lock().unwrap().push(accept);
    }

    /// Cuts every connection and refuses new ones, as a network partition would.
    pub fn cut(&self) {
        for task in self.tasks.lock().unwrap().drain(..) {
            task.abort();
        }
        let _ = std::fs::remove_file(self.socket());
    }

    /// Accepts connections again.
    pub fn restore(&self) {
        self.listen();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.cut();
    }
}
