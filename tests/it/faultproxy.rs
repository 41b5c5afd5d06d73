//! A TCP proxy on 127.0.0.1 with switchable faults, for tests of what a client does when the
//! network between it and a real server misbehaves (see: #17, the S3 tree).
//!
//! Input: a target address (say, [`crate::s3::S3Server::addr`]). Output: [`FaultProxy`], a
//! listener that forwards every connection to the target byte for byte, until [`Faults`]
//! say otherwise:
//!
//! - `connect_latency`: a wait before each new connection is forwarded;
//! - `chunk_latency`: a wait before each chunk read from either side is passed on;
//! - `reset_upload_after` / `reset_download_after`: after that many bytes of one connection
//!   went client → target (or target → client), the rest of the chunk is dropped and both
//!   sides are reset (RST, as a crashed peer or a middlebox does), not closed in order;
//! - `refuse`: new connections are accepted and reset at once, before any byte;
//! - `stall`: new connections are accepted and never forwarded nor closed (a blackhole).
//!
//! [`FaultProxy::throttle`] answers the next N requests whose path contains a given string
//! with S3's `503 SlowDown` (and closes that connection) instead of forwarding them. A chunk
//! from the client begins a request when it is the connection's first or the target has
//! answered since the client last sent: an HTTP/1.1 client sends the next request only once
//! the previous answer came.
//!
//! Faults are read again for every chunk, so switching them affects the connections a client
//! keeps pooled, not only new ones. [`FaultProxy::connections`] counts accepted connections.
//! Latency uses `tokio::time::sleep`, so a test with a paused clock can advance it.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// What the proxy does to the traffic; `Faults::default()` forwards it untouched.
#[derive(Clone, Debug, Default)]
pub struct Faults {
    pub connect_latency: Duration,
    pub chunk_latency: Duration,
    pub reset_upload_after: Option<u64>,
    pub reset_download_after: Option<u64>,
    pub refuse: bool,
    pub stall: bool,
}

/// A running proxy; dropping it stops accepting and aborts the forwarding tasks.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

struct Shared {
    target: SocketAddr,
    /// Read for every chunk; held only to clone or replace it, never across an await.
    faults: Mutex<Faults>,
    connections: AtomicU64,
    /// Requests still to answer with 503 SlowDown, and what their path must contain.
    throttle: Mutex<(u64, String)>,
    /// Requests answered with 503 SlowDown so far.
    throttled: AtomicU64,
    /// Connections reset so far (a byte budget ran out).
    resets: AtomicU64,
    /// The request line (`PUT /bucket/key HTTP/1.1`) of every request seen, in order.
    requests: Mutex<Vec<String>>,
    /// The forwarding tasks, aborted on drop so no connection outlives the proxy.
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

impl FaultProxy {
    /// Binds a free loopback port and forwards to `target`. Needs a tokio runtime.
    pub async fn start(target: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            target,
            faults: Mutex::new(Faults::default()),
            connections: AtomicU64::new(0),
            throttle: Mutex::new((0, String::new())),
            throttled: AtomicU64::new(0),
            resets: AtomicU64::new(0),
            requests: Mutex::new(Vec::new()),
            tasks: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        FaultProxy {
            addr,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the faults; they apply from the next chunk of every connection.
    pub fn set(&self, faults: Faults) {
        *self.shared.faults.lock().expect("faults lock") = faults;
    }

    /// Answers the next `requests` requests whose path contains `path_contains` with
    /// `503 SlowDown`, as S3 does when it throttles.
    pub fn throttle(&self, requests: u64, path_contains: &str) {
        *self.shared.throttle.lock().expect("throttle lock") = (requests, path_contains.to_owned());
    }

    /// Requests answered with `503 SlowDown` so far.
    pub fn throttled(&self) -> u64 {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// The request lines of the requests seen so far whose method is `method` and whose
    /// request line contains `contains`.
    pub fn requests(&self, method: &str, contains: &str) -> usize {
        let seen = self.shared.requests.lock().expect("requests lock");
        seen.iter()
            .filter(|l| l.starts_with(&format!("{method} ")) && l.contains(contains))
            .count()
    }

    /// Connections reset so far because a byte budget ran out.
    pub fn resets(&self) -> u64 {
        self.shared.resets.load(Ordering::SeqCst)
    }

    /// Connections accepted so far, refused and stalled ones included.
    pub fn connections(&self) -> u64 {
        self.shared.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.shared.tasks.lock().expect("tasks lock").drain(..) {
            task.abort();
        }
    }
}

impl Shared {
    fn faults(&self) -> Faults {
        self.faults.lock().expect("faults lock").clone()
    }

    /// Records the request that `head` begins; whether it is to be throttled (and counted).
    fn throttles(&self, head: &[u8]) -> bool {
        let line = head.split(|&b| b == b'\n').next().unwrap_or_default();
        let text = String::from_utf8_lossy(line).trim_end().to_owned();
        self.requests.lock().expect("requests lock").push(text);
        let path = line.split(|&b| b == b' ').nth(1).unwrap_or_default();
        let mut throttle = self.throttle.lock().expect("throttle lock");
        let (left, needle) = &mut *throttle;
        let matches = *left > 0 && String::from_utf8_lossy(path).contains(needle.as_str());
        if matches {
            *left -= 1;
            self.throttled.fetch_add(1, Ordering::SeqCst);
        }
        matches
    }
}

/// What S3 answers when it throttles.
const SLOW_DOWN: &str = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>SlowDown</Code>\
                         <Message>Please reduce your request rate.</Message></Error>";

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        shared.connections.fetch_add(1, Ordering::SeqCst);
        let task = tokio::spawn(serve(client, Arc::clone(&shared)));
        let mut tasks = shared.tasks.lock().expect("tasks lock");
        tasks.retain(|t| !t.is_finished());
        tasks.push(task);
    }
}

/// How one direction of a connection ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// End of stream (or an I/O error), passed on as a half close.
    Eof,
    /// The byte budget ran out: reset both sides.
    Reset,
    /// A request is throttled: answer it with 503 SlowDown and close.
    Throttle,
}

async fn serve(mut client: TcpStream, shared: Arc<Shared>) {
    let faults = shared.faults();
    if faults.refuse {
        let _ = client.set_zero_linger();
        return;
    }
    if faults.stall {
        std::future::pending::<()>().await;
    }
    tokio::time::sleep(faults.connect_latency).await;
    let Ok(mut target) = TcpStream::connect(shared.target).await else {
        let _ = client.set_zero_linger();
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = target.set_nodelay(true);
    let end = {
        let (client_read, client_write) = client.split();
        let (target_read, target_write) = target.split();
        // Set when the target answers: the client's next chunk begins a request.
        let answered = std::sync::atomic::AtomicBool::new(true);
        let up = pump(
            client_read,
            target_write,
            &shared,
            Direction::Upload,
            &answered,
        );
        let down = pump(
            target_read,
            client_write,
            &shared,
            Direction::Download,
            &answered,
        );
        tokio::pin!(up, down);
        // A half close in one direction leaves the other running (an HTTP client may
        // shut down its write side and still read the response); a reset ends both.
        tokio::select! {
            end = &mut up => if end == End::Eof { down.await } else { end },
            end = &mut down => if end == End::Eof { up.await } else { end },
        }
    };
    if end == End::Reset {
        shared.resets.fetch_add(1, Ordering::SeqCst);
        // Zero linger makes the close below send RST instead of FIN.
        let _ = client.set_zero_linger();
        let _ = target.set_zero_linger();
    }
    if end == End::Throttle {
        let answer = format!(
            "HTTP/1.1 503 Slow Down\r\nContent-Type: application/xml\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{SLOW_DOWN}",
            SLOW_DOWN.len()
        );
        let _ = client.write_all(answer.as_bytes()).await;
        let _ = client.shutdown().await;
        // Read what the client still sends (a body), so the close is not a reset.
        let mut sink = vec![0u8; 16 * 1024];
        let drain = async { while matches!(client.read(&mut sink).await, Ok(n) if n > 0) {} };
        let _ = tokio::time::timeout(Duration::from_secs(2), drain).await;
    }
}

#[derive(Clone, Copy)]
enum Direction {
    Upload,
    Download,
}

async fn pump(
    mut from: ReadHalf<'_>,
    mut to: WriteHalf<'_>,
    shared: &Shared,
    direction: Direction,
    answered: &std::sync::atomic::AtomicBool,
) -> End {
    let mut buf = vec![0u8; 16 * 1024];
    let mut sent: u64 = 0;
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return End::Eof;
            }
            Ok(n) => n,
        };
        match direction {
            Direction::Download => answered.store(true, Ordering::SeqCst),
            Direction::Upload => {
                if answered.swap(false, Ordering::SeqCst) && shared.throttles(&buf[..n]) {
                    return End::Throttle;
                }
            }
        }
        let faults = shared.faults();
        tokio::time::sleep(faults.chunk_latency).await;
        let budget = match direction {
            Direction::Upload => faults.reset_upload_after,
            Direction::Download => faults.reset_download_after,
        };
        let allowed = budget.map_or(n as u64, |b| b.saturating_sub(sent).min(n as u64));
        let allowed = usize::try_from(allowed).expect("at most n");
        if to.write_all(&buf[..allowed]).await.is_err() {
            return End::Eof;
        }
        sent += allowed as u64;
        if allowed < n || budget == Some(sent) {
            let _ = to.flush().await;
            return End::Reset;
        }
    }
}

#[cfg(test)]
mod tests {
    //! The proxy against the real S3 server: the faults each do what they say, as a client
    //! (`object_store`, as gomirror uses it) sees them.

    use std::time::Instant;

    use object_store::path::Path as ObjectPath;
    use object_store::{ObjectStoreExt, PutPayload};

    use super::*;
    use crate::s3::{builder_for, S3Server};
    use crate::tools::{find_s3s_fs, need};

    fn store_through(proxy: &FaultProxy, s3: &S3Server) -> object_store::aws::AmazonS3 {
        builder_for(&proxy.url(), s3.bucket())
            .with_access_key_id(s3.access_key())
            .with_secret_access_key(s3.secret_key())
            .build()
            .expect("build the S3 store")
    }

    /// `s3s-fs`'s in-flight writes: `.tmp.<n>.internal.part` at the root.
    fn temp_files(root: &std::path::Path) -> usize {
        std::fs::read_dir(root)
            .expect("read the S3 root")
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(".tmp."))
            .count()
    }

    #[tokio::test]
    async fn faultproxy_forwards_with_latency_and_counts_connections() {
        let Some(bin) = need("faultproxy_latency", "s3s-fs", find_s3s_fs()) else {
            return;
        };
        let s3 = S3Server::start(&bin);
        let proxy = FaultProxy::start(s3.addr()).await;
        proxy.set(Faults {
            connect_latency: Duration::from_millis(200),
            chunk_latency: Duration::from_millis(10),
            ..Faults::default()
        });
        let store = store_through(&proxy, &s3);
        let path = ObjectPath::from("slow/a.info");
        let started = Instant::now();
        store
            .put(&path, PutPayload::from_static(b"{}"))
            .await
            .expect("put through the slow proxy");
        assert!(
            started.elapsed() >= Duration::from_millis(200),
            "the connection waited {:?}, not the connect latency",
            started.elapsed()
        );
        assert_eq!(proxy.connections(), 1);
        let got = store.get(&path).await.expect("get").bytes().await;
        assert_eq!(got.expect("body").as_ref(), b"{}");
        assert_eq!(
            std::fs::read(s3.root().join(s3.bucket()).join("slow/a.info")).expect("object file"),
            b"{}"
        );
    }

    #[tokio::test]
    async fn faultproxy_reset_fails_a_put_and_leaves_no_object() {
        let Some(bin) = need("faultproxy_reset", "s3s-fs", find_s3s_fs()) else {
            return;
        };
        let s3 = S3Server::start(&bin);
        let proxy = FaultProxy::start(s3.addr()).await;
        let store = store_through(&proxy, &s3);
        // The request head is a few hundred bytes; the body is cut off after 1 KiB of it.
        proxy.set(Faults {
            reset_upload_after: Some(2048),
            ..Faults::default()
        });
        let path = ObjectPath::from("cut/a.zip");
        let err = store
            .put(&path, PutPayload::from(vec![7u8; 256 * 1024]))
            .await
            .expect_err("a put whose connection is reset fails");
        assert!(
            !s3.root().join(s3.bucket()).join("cut/a.zip").exists(),
            "a cut-off put left an object: {err}"
        );
        // The server drops its temp file when it sees the reset, a moment later.
        let deadline = Instant::now() + Duration::from_secs(5);
        while temp_files(s3.root()) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(temp_files(s3.root()), 0, "a cut-off put left its temp file");

        // Switched back, the same store writes again, over a new connection.
        proxy.set(Faults::default());
        let before = proxy.connections();
        store
            .put(&path, PutPayload::from(vec![7u8; 256 * 1024]))
            .await
            .expect("put after the faults are off");
        assert!(proxy.connections() > before);

        proxy.set(Faults {
            reset_download_after: Some(1000),
            ..Faults::default()
        });
        let result = async { store.get(&path).await?.bytes().await }.await;
        assert!(
            result.is_err(),
            "a download reset after 1000 bytes must fail, got {:?} bytes",
            result.map(|b| b.len())
        );
    }

    #[tokio::test]
    async fn faultproxy_refuse_and_stall() {
        let Some(bin) = need("faultproxy_refuse", "s3s-fs", find_s3s_fs()) else {
            return;
        };
        let s3 = S3Server::start(&bin);
        let proxy = FaultProxy::start(s3.addr()).await;
        let store = store_through(&proxy, &s3);
        proxy.set(Faults {
            refuse: true,
            ..Faults::default()
        });
        let path = ObjectPath::from("refused/a.mod");
        store
            .put(&path, PutPayload::from_static(b"module a\n"))
            .await
            .expect_err("a refused connection fails the put");
        assert!(proxy.connections() >= 1);

        proxy.set(Faults {
            stall: true,
            ..Faults::default()
        });
        let stalled = tokio::time::timeout(
            Duration::from_millis(300),
            store.put(&path, PutPayload::from_static(b"module a\n")),
        )
        .await;
        assert!(stalled.is_err(), "a stalled connection never answers");
        assert!(!s3.root().join(s3.bucket()).join("refused/a.mod").exists());
    }
}
