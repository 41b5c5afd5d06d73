//! An in-process GOPROXY server that misbehaves on demand, for tests and benches.
//!
//! Input: [`ModuleFiles`] (from the Go corpus, `zipgen`, or by hand) and raw bodies at exact URL
//! paths. Output: the GOPROXY protocol on `http://127.0.0.1:PORT` (PROTOCOL.md "GOPROXY"):
//! `/<escaped path>/@v/list`, `/<escaped path>/@v/<escaped version>.info|.mod|.zip` and
//! `/<escaped path>/@latest`, the index feed `/index?since=&limit=` (see [`FeedLine`]), and
//! `/sumdb/<name>/...` for an attached checksum database ([`Upstream::attach_sumdb`]);
//! everything else is 404. Faults ([`Fault`], latency) are switched
//! on and off while it runs through [`Faults`].
//!
//! Built on axum with a custom listener: every connection carries a reset flag, so
//! [`Fault::Reset`] can fail the connection's writes and drop it with SO_LINGER 0 (an RST)
//! without sending a response. Bodies are `Bytes`, so a 400 MiB zip is held once and never
//! copied per request. Locks are held only to look up or change a table, never across the
//! latency sleep.
//!
//! A bench that wants the server outside its measured process runs [`serve_forever`] in a child
//! process; it needs `corpus.rs`, `upstream.rs` and `zipgen.rs` included with `#[path]` as the
//! modules `corpus`, `upstream` and `zipgen`.

// Support code: each test uses a different part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::extract::{Request, State};
use axum::http::{header, Method, StatusCode};
use axum::response::Response;
use axum::serve::{IncomingStream, Listener};
use axum::Router;
use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::corpus::{escape_path, is_pseudo_version, prerelease, semver_compare, CorpusVersion};

/// The files of one module version.
#[derive(Clone)]
pub struct ModuleFiles {
    /// Unescaped module path.
    pub path: String,
    /// Unescaped version.
    pub version: String,
    /// `None` serves 404 for `.info`, as proxy_test.go does when its archive lacks one.
    pub info: Option<Bytes>,
    /// `None` serves 404 for `.mod`.
    pub mod_file: Option<Bytes>,
    pub zip: Bytes,
    /// Whether `@v/list` shows this version.
    pub listed: bool,
}

impl ModuleFiles {
    /// All three files present; listed unless `version` is a pseudo-version.
    pub fn new(
        path: &str,
        version: &str,
        info: impl Into<Bytes>,
        mod_file: impl Into<Bytes>,
        zip: impl Into<Bytes>,
    ) -> Self {
        ModuleFiles {
            path: path.to_string(),
            version: version.to_string(),
            info: Some(info.into()),
            mod_file: Some(mod_file.into()),
            zip: zip.into(),
            listed: !is_pseudo_version(version),
        }
    }
}

impl std::fmt::Debug for ModuleFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}@{} (zip {} bytes)",
            self.path,
            self.version,
            self.zip.len()
        )
    }
}

impl From<CorpusVersion> for ModuleFiles {
    fn from(c: CorpusVersion) -> Self {
        ModuleFiles {
            path: c.path,
            version: c.version,
            info: c.info.map(Bytes::from),
            mod_file: c.mod_file.map(Bytes::from),
            zip: Bytes::from(c.zip),
            listed: c.listed,
        }
    }
}

/// A checksum database served under `/sumdb/<name>/` (how the go command and gomirror reach
/// one through a proxy, PROTOCOL.md "Checksum database"); `sumdb.rs` implements it. A trait
/// rather than that type, so this file builds without `sumdb.rs`.
pub trait SumdbHandler: Send + Sync {
    /// The database name, the `<name>` in `/sumdb/<name>/`.
    fn name(&self) -> &str;
    /// The answer for `rel_path` (e.g. `supported`, `lookup/...`), `None` for 404.
    fn handle(&self, rel_path: &str) -> Option<(u16, Bytes)>;
}

/// What the next matching requests get instead of their normal answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// This status with a short text body.
    Status(u16),
    /// 429 with `Retry-After: <retry_after_secs>`.
    TooMany { retry_after_secs: u64 },
    /// The request is read, then the connection is reset with no response at all.
    Reset,
    /// Headers with the full `Content-Length`, at most half the body, then the connection closes.
    Truncate,
}

/// A running server; dropping it stops accepting and closes idle connections.
pub struct Upstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: CancellationToken,
}

/// Switches faults on a running [`Upstream`]; cheap to clone.
#[derive(Clone)]
pub struct Faults(Arc<Shared>);

#[derive(Default)]
struct Shared {
    /// URL path → body, plus the versions behind each `@v/list` and `@latest`. Held only to
    /// look up or change an entry.
    tables: Mutex<Tables>,
    /// Pending faults in push order. Held only to pick and count down one.
    faults: Mutex<Vec<PendingFault>>,
    latency_nanos: AtomicU64,
    /// URL path → number of requests.
    hits: Mutex<HashMap<String, usize>>,
    /// Attached checksum databases. Held only to clone one handler out.
    sumdbs: Mutex<Vec<Arc<dyn SumdbHandler>>>,
    total: AtomicUsize,
    /// The index feed.
    feed: Mutex<Feed>,
}

#[derive(Default)]
struct Tables {
    files: HashMap<String, Bytes>,
    /// Module path → (version, listed, info) for every version added.
    modules: HashMap<String, Vec<(String, bool, Option<Bytes>)>>,
}

struct PendingFault {
    url_substring: String,
    fault: Fault,
    remaining: usize,
}

impl Upstream {
    /// Serves `versions` on `127.0.0.1:0`.
    pub async fn start(versions: Vec<ModuleFiles>) -> Upstream {
        Self::start_on("127.0.0.1:0", versions)
            .await
            .expect("bind 127.0.0.1:0")
    }

    /// Serves `versions` on `addr` (e.g. `127.0.0.1:8080`).
    pub async fn start_on(addr: &str, versions: Vec<ModuleFiles>) -> io::Result<Upstream> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::default());
        for v in versions {
            shared.add(v);
        }
        let app = Router::new()
            .fallback(handle)
            .with_state(shared.clone())
            .into_make_service_with_connect_info::<ConnCtl>();
        let shutdown = CancellationToken::new();
        let stop = shutdown.clone().cancelled_owned();
        tokio::spawn(async move {
            // An error here means the listener died; requests then fail, which tests notice.
            let _ = axum::serve(ResettableListener(listener), app)
                .with_graceful_shutdown(stop)
                .await;
        });
        Ok(Upstream {
            addr,
            shared,
            shutdown,
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Adds (or replaces) a version and rebuilds its module's `@v/list` and `@latest`.
    pub fn add(&self, files: ModuleFiles) {
        self.shared.add(files);
    }

    /// Serves `body` at exactly `url_path` (e.g. `/example.com/m/@v/list`), replacing anything.
    pub fn set_raw(&self, url_path: &str, body: impl Into<Bytes>) {
        self.shared
            .tables()
            .files
            .insert(url_path.to_string(), body.into());
    }

    /// Makes `url_path` a 404 until something is added there again.
    pub fn remove(&self, url_path: &str) {
        self.shared.tables().files.remove(url_path);
    }

    /// Requests so far whose URL path contains `url_path_substring`.
    pub fn requests(&self, url_path_substring: &str) -> usize {
        let hits = self.shared.hits.lock().expect("hits lock");
        hits.iter()
            .filter(|(p, _)| p.contains(url_path_substring))
            .map(|(_, n)| n)
            .sum()
    }

    pub fn total_requests(&self) -> usize {
        self.shared.total.load(Ordering::Relaxed)
    }

    pub fn faults(&self) -> Faults {
        Faults(self.shared.clone())
    }

    /// Serves `db` under `/sumdb/<db.name()>/`, behind the same latency and faults as every
    /// other path. Replaces a database of the same name.
    pub fn attach_sumdb(&self, db: Arc<dyn SumdbHandler>) {
        let mut dbs = self.shared.sumdbs.lock().expect("sumdbs lock");
        dbs.retain(|d| d.name() != db.name());
        dbs.push(db);
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

impl Faults {
    /// Added to every request before it is answered (faults included).
    pub fn set_latency(&self, latency: Duration) {
        let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
        self.0.latency_nanos.store(nanos, Ordering::Relaxed);
    }

    /// The next `times` requests whose URL path contains `url_substring` get `fault`.
    /// Earlier pushes are served first when several match.
    pub fn push(&self, url_substring: &str, fault: Fault, times: usize) {
        let f = PendingFault {
            url_substring: url_substring.to_string(),
            fault,
            remaining: times,
        };
        self.0.faults.lock().expect("faults lock").push(f);
    }

    /// Drops all pending faults and the latency.
    pub fn clear(&self) {
        self.0.faults.lock().expect("faults lock").clear();
        self.set_latency(Duration::ZERO);
    }
}

/// Runs a server on `addr` until the process is killed, printing its URL as the first line of
/// stdout. For a bench that measures the mirror's memory without the server's.
pub async fn serve_forever(
    addr: &str,
    versions: Vec<ModuleFiles>,
    latency: Duration,
) -> io::Result<()> {
    let upstream = Upstream::start_on(addr, versions).await?;
    upstream.faults().set_latency(latency);
    println!("{}", upstream.url());
    std::future::pending::<()>().await;
    Ok(())
}

impl Shared {
    fn tables(&self) -> std::sync::MutexGuard<'_, Tables> {
        self.tables.lock().expect("tables lock")
    }

    fn add(&self, m: ModuleFiles) {
        let (esc, esc_v) = (escape_path(&m.path), escape_path(&m.version));
        let base = format!("/{esc}/@v/{esc_v}");
        let mut t = self.tables();
        t.files.insert(format!("{base}.zip"), m.zip);
        for (ext, body) in [("info", &m.info), ("mod", &m.mod_file)] {
            match body {
                Some(b) => t.files.insert(format!("{base}.{ext}"), b.clone()),
                None => t.files.remove(&format!("{base}.{ext}")),
            };
        }
        let versions = t.modules.entry(m.path).or_default();
        versions.retain(|(v, _, _)| *v != m.version);
        versions.push((m.version, m.listed, m.info));
        versions.sort_by(|a, b| semver_compare(&a.0, &b.0));
        let list: String = versions
            .iter()
            .filter(|v| v.1)
            .map(|v| format!("{}\n", v.0))
            .collect();
        let latest = latest_info(versions);
        t.files.insert(format!("/{esc}/@v/list"), Bytes::from(list));
        match latest {
            Some(info) => t.files.insert(format!("/{esc}/@latest"), info),
            None => t.files.remove(&format!("/{esc}/@latest")),
        };
    }

    fn lookup(&self, path: &str) -> Option<Bytes> {
        self.tables().files.get(path).cloned()
    }

    /// `/sumdb/<name>/<rel>` answered by the attached database `<name>`, if any.
    fn sumdb(&self, path: &str) -> Option<(StatusCode, Bytes)> {
        let (name, rel) = path.strip_prefix("/sumdb/")?.split_once('/')?;
        let db = {
            let dbs = self.sumdbs.lock().expect("sumdbs lock");
            dbs.iter().find(|d| d.name() == name)?.clone()
        };
        let (status, body) = db.handle(rel)?;
        Some((StatusCode::from_u16(status).ok()?, body))
    }

    fn count(&self, path: &str) {
        self.total.fetch_add(1, Ordering::Relaxed);
        *self
            .hits
            .lock()
            .expect("hits lock")
            .entry(path.to_string())
            .or_default() += 1;
    }

    fn take_fault(&self, path: &str) -> Option<Fault> {
        let mut faults = self.faults.lock().expect("faults lock");
        let i = faults
            .iter()
            .position(|f| path.contains(&f.url_substring))?;
        let fault = faults[i].fault;
        faults[i].remaining -= 1;
        if faults[i].remaining == 0 {
            faults.remove(i);
        }
        Some(fault)
    }
}

/// The `.info` of the highest listed release, else the highest listed pre-release, else the
/// highest pseudo-version, like proxy.golang.org. Unlisted tagged versions (failing
/// module.Check, e.g. corpus `rsc.io/quote v2.0.0`) never win. proxy_test.go means the same but
/// considers every version and its comparison picks the *lowest* of each kind.
fn latest_info(sorted: &[(String, bool, Option<Bytes>)]) -> Option<Bytes> {
    let kind = |v: &str, listed: bool| match (is_pseudo_version(v), listed, prerelease(v)) {
        (true, _, _) => Some(0),
        (false, false, _) => None,
        (false, true, "") => Some(2),
        (false, true, _) => Some(1),
    };
    // `max_by_key` keeps the last of equal keys: the highest version of the best kind.
    let best = sorted
        .iter()
        .filter_map(|(v, listed, info)| Some((kind(v, *listed)?, info)))
        .max_by_key(|(k, _)| *k)?;
    best.1.clone()
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    ConnectInfo(conn): ConnectInfo<ConnCtl>,
    req: Request,
) -> Response {
    let path = percent_decode(req.uri().path());
    shared.count(&path);
    let latency = Duration::from_nanos(shared.latency_nanos.load(Ordering::Relaxed));
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    }
    let normal = || match shared.sumdb(&path) {
        Some(answer) => answer,
        None if path == "/index" => feed_page(&shared, req.uri().query().unwrap_or("")),
        None => match shared.lookup(&path) {
            Some(body) => (StatusCode::OK, body),
            None => (StatusCode::NOT_FOUND, Bytes::from_static(b"not found\n")),
        },
    };
    match shared.take_fault(&path) {
        None => {
            let (status, body) = normal();
            full(status, body)
        }
        Some(Fault::Status(code)) => {
            let status = StatusCode::from_u16(code).expect("fault status is 100..=999");
            text(status, "injected fault\n")
        }
        Some(Fault::TooMany { retry_after_secs }) => {
            let mut r = text(StatusCode::TOO_MANY_REQUESTS, "slow down\n");
            r.headers_mut()
                .insert(header::RETRY_AFTER, retry_after_secs.into());
            r
        }
        Some(Fault::Reset) => {
            conn.0.store(true, Ordering::SeqCst);
            text(StatusCode::INTERNAL_SERVER_ERROR, "never sent\n")
        }
        Some(Fault::Truncate) => {
            let (status, body) = normal();
            truncated(status, body)
        }
    }
}

fn text(status: StatusCode, body: &'static str) -> Response {
    full(status, Bytes::from_static(body.as_bytes()))
}

fn full(status: StatusCode, body: Bytes) -> Response {
    let mut r = Response::new(Body::empty());
    *r.status_mut() = status;
    r.headers_mut()
        .insert(header::CONTENT_LENGTH, body.len().into());
    *r.body_mut() = Body::from(body);
    r
}

/// Declares the full length, sends the first half, then fails the body so hyper closes the
/// connection. The one `yield_now` lets hyper flush the half before the failure.
fn truncated(status: StatusCode, body: Bytes) -> Response {
    let len = body.len();
    let half = body.slice(..len / 2);
    let stream = futures::stream::unfold(0u8, move |step| {
        let half = half.clone();
        async move {
            match step {
                0 => Some((Ok(half), 1)),
                1 => {
                    tokio::task::yield_now().await;
                    Some((Err(io::Error::other("injected truncation")), 2))
                }
                _ => None,
            }
        }
    });
    let mut r = Response::new(Body::from_stream(stream));
    *r.status_mut() = status;
    r.headers_mut().insert(header::CONTENT_LENGTH, len.into());
    r
}

// ---------------------------------------------------------------------------
// The index feed (issue 6): `GET /index?since=<RFC3339>&limit=<n>` answers the lines whose
// timestamp is at or after `since` (inclusive, as index.golang.org), in the order added, at
// most `limit` of them (default 2000; [`Upstream::feed_cap_limit`] caps it, as the real index
// caps at 2000). A missing or bad `since` is 400.
// ---------------------------------------------------------------------------

/// One line of the feed: where it sorts, and its text (a JSON entry, or anything at all).
#[derive(Clone, Debug)]
pub struct FeedLine {
    pub at: time::OffsetDateTime,
    pub text: String,
}

impl FeedLine {
    /// `{"Path","Version","Timestamp"}`; the strings go out as given, hostile or not.
    pub fn entry(path: &str, version: &str, timestamp: &str) -> FeedLine {
        FeedLine {
            at: parse_time(timestamp).expect("test feed timestamp is RFC 3339"),
            text: serde_json::json!({"Path": path, "Version": version, "Timestamp": timestamp})
                .to_string(),
        }
    }

    /// A line of any text, served among the entries of `timestamp`.
    pub fn raw(timestamp: &str, text: &str) -> FeedLine {
        FeedLine {
            at: parse_time(timestamp).expect("test feed timestamp is RFC 3339"),
            text: text.to_string(),
        }
    }
}

#[derive(Default)]
struct Feed {
    lines: Vec<FeedLine>,
    cap: Option<usize>,
    /// The query string of every `/index` request, in order.
    queries: Vec<String>,
}

impl Upstream {
    /// Appends lines to the feed; add them in timestamp order, as the index serves them.
    pub fn feed_push(&self, lines: impl IntoIterator<Item = FeedLine>) {
        self.shared.feed().lines.extend(lines);
    }

    /// Serves at most `cap` lines per page, whatever `limit` asks.
    pub fn feed_cap_limit(&self, cap: usize) {
        self.shared.feed().cap = Some(cap);
    }

    /// The query strings of the `/index` requests so far.
    pub fn feed_queries(&self) -> Vec<String> {
        self.shared.feed().queries.clone()
    }
}

impl Shared {
    fn feed(&self) -> std::sync::MutexGuard<'_, Feed> {
        self.feed.lock().expect("feed lock")
    }
}

fn parse_time(s: &str) -> Option<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()
}

fn feed_page(shared: &Shared, query: &str) -> (StatusCode, Bytes) {
    let mut feed = shared.feed();
    feed.queries.push(query.to_string());
    let param = |name: &str| {
        url::form_urlencoded::parse(query.as_bytes())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    };
    let Some(since) = param("since").as_deref().and_then(parse_time) else {
        return (StatusCode::BAD_REQUEST, Bytes::from_static(b"bad since\n"));
    };
    let limit = param("limit").and_then(|l| l.parse().ok()).unwrap_or(2000);
    let limit = feed.cap.map_or(limit, |cap| limit.min(cap));
    let body: String = feed
        .lines
        .iter()
        .filter(|l| l.at >= since)
        .take(limit)
        .map(|l| format!("{}\n", l.text))
        .collect();
    (StatusCode::OK, Bytes::from(body))
}

/// `%XX` → byte, as Go's `r.URL.Path` is decoded; malformed escapes stay as they are.
fn percent_decode(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = b
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match hex
            .filter(|_| b[i] == b'%')
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(b[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The per-connection reset flag, handed to the handler as connect info.
#[derive(Clone)]
struct ConnCtl(Arc<AtomicBool>);

impl Connected<IncomingStream<'_, ResettableListener>> for ConnCtl {
    fn connect_info(stream: IncomingStream<'_, ResettableListener>) -> Self {
        ConnCtl(stream.io().reset.clone())
    }
}

struct ResettableListener(TcpListener);

impl Listener for ResettableListener {
    type Io = ConnIo;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (ConnIo, SocketAddr) {
        loop {
            match self.0.accept().await {
                Ok((tcp, addr)) => {
                    let _ = tcp.set_nodelay(true);
                    return (
                        ConnIo {
                            tcp,
                            reset: Arc::default(),
                        },
                        addr,
                    );
                }
                // EMFILE and friends: wait for connections to close, as axum's own listener does.
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr()
    }
}

/// A TCP stream that, once `reset` is set, fails every write and closes with an RST on drop.
struct ConnIo {
    tcp: TcpStream,
    /// Set by the handler for [`Fault::Reset`]; from then on nothing more reaches the client.
    reset: Arc<AtomicBool>,
}

impl ConnIo {
    fn check(&self) -> io::Result<()> {
        match self.reset.load(Ordering::SeqCst) {
            true => Err(io::ErrorKind::ConnectionReset.into()),
            false => Ok(()),
        }
    }
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if self.reset.load(Ordering::SeqCst) {
            let _ = self.tcp.set_zero_linger();
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, b: &[u8]) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, b)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.check()?;
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.check()?;
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}
