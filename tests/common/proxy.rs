//! A unix-socket proxy in front of a test's Redis that can cut one client off (the network
//! partition of one bot replica while the others still reach Redis), or rewrite what the
//! server says (an older Redis's version in `INFO`).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tempfile::TempDir;
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

pub struct Proxy {
    dir: TempDir,
    target: PathBuf,
    tasks: Arc<Mutex<Vec<JoinHandle<()>>>>,
    /// Bytes replaced in the server's replies (same length, so RESP lengths stay right).
    rewrite: Option<(&'static [u8], &'static [u8])>,
    /// Bytes replaced in the clients' requests, likewise.
    rewrite_requests: Option<(&'static [u8], &'static [u8])>,
}

impl Proxy {
    /// Starts forwarding to the Redis listening on `target`.
    pub fn start(target: PathBuf) -> Self {
        let dir = tempfile::Builder::new().prefix("retention-proxy-").tempdir().expect("temp dir");
        let proxy =
            Self { dir, target, tasks: Arc::default(), rewrite: None, rewrite_requests: None };
        proxy.listen();
        proxy
    }

    /// Starts forwarding to `target`, replacing `from` with `to` (of the same length) in
    /// everything the clients send: `(b"$4\r\nTIME\r\n", b"$4\r\nTIMX\r\n")` makes every
    /// `TIME` a client sends fail, while scripts still read the clock inside Redis.
    pub fn start_rewriting_requests(
        target: PathBuf,
        from: &'static [u8],
        to: &'static [u8],
    ) -> Self {
        assert_eq!(from.len(), to.len(), "a rewrite keeps lengths");
        let dir = tempfile::Builder::new().prefix("retention-proxy-").tempdir().expect("temp dir");
        let proxy = Self {
            dir,
            target,
            tasks: Arc::default(),
            rewrite: None,
            rewrite_requests: Some((from, to)),
        };
        proxy.listen();
        proxy
    }

    /// Starts forwarding to `target`, replacing `from` with `to` (of the same length) in
    /// everything the server sends: `(b"redis_version:7.", b"redis_version:6.")` makes
    /// Redis 7 look like Redis 6 to its clients.
    pub fn start_rewriting(target: PathBuf, from: &'static [u8], to: &'static [u8]) -> Self {
        assert_eq!(from.len(), to.len(), "a rewrite keeps lengths");
        let dir = tempfile::Builder::new().prefix("retention-proxy-").tempdir().expect("temp dir");
        let proxy = Self {
            dir,
            target,
            tasks: Arc::default(),
            rewrite: Some((from, to)),
            rewrite_requests: None,
        };
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
        let rewrite = self.rewrite;
        let rewrite_requests = self.rewrite_requests;
        let accept = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let target = target.clone();
                let pipe = tokio::spawn(async move {
                    let Ok(mut server) = UnixStream::connect(&target).await else { return };
                    match (rewrite, rewrite_requests) {
                        (None, None) => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                        }
                        (Some((from, to)), _) => {
                            let (mut client_rx, client_tx) = client.into_split();
                            let (server_rx, mut server_tx) = server.into_split();
                            let up = tokio::io::copy(&mut client_rx, &mut server_tx);
                            let down = copy_rewriting(server_rx, client_tx, from, to);
                            let _ = tokio::join!(up, down);
                        }
                        (None, Some((from, to))) => {
                            let (client_rx, mut client_tx) = client.into_split();
                            let (mut server_rx, server_tx) = server.into_split();
                            let up = copy_rewriting(client_rx, server_tx, from, to);
                            let down = tokio::io::copy(&mut server_rx, &mut client_tx);
                            let _ = tokio::join!(up, down);
                        }
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

/// Copies `rx` to `tx`, replacing `from` with `to`; holds back only a tail that may begin
/// a match (a reply ends in `\r\n`, which never does), so a match split across reads is
/// still replaced and no reply waits.
async fn copy_rewriting(
    mut rx: tokio::net::unix::OwnedReadHalf,
    mut tx: tokio::net::unix::OwnedWriteHalf,
    from: &[u8],
    to: &[u8],
) -> std::io::Result<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut pending: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = rx.read(&mut buf).await?;
        if n == 0 {
            return tx.write_all(&pending).await;
        }
        pending.extend_from_slice(&buf[..n]);
        let mut i = 0;
        while i + from.len() <= pending.len() {
            if &pending[i..i + from.len()] == from {
                pending[i..i + from.len()].copy_from_slice(to);
                i += from.len();
            } else {
                i += 1;
            }
        }
        // Whatever cannot start a match any more is sent now.
        let keep = (1..from.len().min(pending.len() + 1))
            .rev()
            .find(|&k| pending[pending.len() - k..] == from[..k])
            .unwrap_or(0);
        let send = pending.len() - keep;
        tx.write_all(&pending[..send]).await?;
        pending.drain(..send);
    }
}
