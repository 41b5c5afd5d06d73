//! Client: requests against the upstream list, with retries, backoff, 429/`Retry-After`,
//! one global bound on in-flight requests, and counters for the run summary.
//!
//! Per request: upstreams in order, the next one only on 404/410 (PROTOCOL.md;
//! Go: cmd/go/internal/modfetch/proxy.go TryProxies). Per upstream: up to
//! `max_attempts` attempts; 5xx, 429, timeouts, connection errors and truncated bodies
//! are retried, nothing else is (STYLE.md §3: retries live only here).
//!
//! Timeouts: `connect_timeout` bounds TCP+TLS setup (reqwest). `header_timeout` is a
//! deadline from sending the request until its response headers are in. `read_timeout`
//! is an idle timeout for each body chunk, not a deadline for the whole body, so a
//! large zip on a slow but steady link is never cut off; but a body slower than
//! `min_bytes_per_second` over a whole `throughput_window` fails like a timeout and is
//! retried, so a trickle of a byte a second cannot hold a run (and every daemon tick
//! after it) forever (See: #13).
//!
//! Waits (how long: `retry.rs`): the server's `Retry-After` if a 429 or 503 carries one,
//! otherwise exponential backoff with full jitter. A `Retry-After`, and any 429, also
//! holds back every new request to that host until the wait is over, so one rate-limit
//! answer slows the whole run against that server instead of each task discovering it
//! alone; an optional rate cap spaces all request starts (`throttle.rs`).
//!
//! Per-job bases: [`Client::with_upstreams`] derives a client for another upstream list
//! (the feed's `cached-only` base, the index) that shares this one's connection pool,
//! in-flight bound, throttle and counters, so the limits hold for the whole run.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use time::OffsetDateTime;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::download::{
    check_declared, guarded, pump, Body, Downloaded, FileSink, MemSink, ReadCx, Sink,
};
use super::retry::{retry_after, Backoff};
use super::settings::FetchSettings;
use super::stats::{FetchStats, HealthTable, StatsSnapshot, UpstreamHealth};
use super::throttle::{cancellable, Throttle};
use super::upstream::{check_rel, Location, Upstream};
use super::FetchError;
use crate::error::Chain;

/// [`FetchSettings`] or an upstream list that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("fetch client: no upstreams configured")]
    NoUpstreams,
    #[error("fetch client: {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    #[error("fetch client: building the HTTP client")]
    Http(#[source] reqwest::Error),
}

/// Fetches from the upstream list. Cheap to clone; clones, and clients derived with
/// [`Client::with_upstreams`], share the in-flight limit, the throttle, the connection
/// pool and the counters ([`Client::for_service`]: all but the in-flight limit).
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
    /// One permit per request in progress, held from sending it until its body is read
    /// (or it failed), and never while sleeping before a retry.
    in_flight: Arc<Semaphore>,
    sources: Arc<[Source]>,
}

struct Inner {
    http: reqwest::Client,
    /// The in-flight limit, for [`Client::for_service`].
    max_in_flight: usize,
    /// Hold-offs per host and the rate cap, for every request of the run.
    throttle: Throttle,
    read_timeout: Duration,
    header_timeout: Duration,
    /// `[fetch] min_bytes_per_second` over `throughput_window`; `None`: off.
    min_rate: Option<(u64, Duration)>,
    max_attempts: u32,
    backoff: Backoff,
    stats: FetchStats,
    /// Requests and failures per upstream base, for `status` and metrics.
    health: HealthTable,
}

struct Source {
    upstream: Upstream,
    /// What hold-offs are keyed by; `None` for a local directory.
    host: Option<String>,
}

impl Source {
    fn new(upstream: Upstream) -> Source {
        Source {
            host: upstream.host_key(),
            upstream,
        }
    }
}

/// An attempt's error, plus the server's `Retry-After` if it sent one.
struct Failed {
    error: FetchError,
    retry_after: Option<Duration>,
}

impl From<FetchError> for Failed {
    fn from(error: FetchError) -> Self {
        Failed {
            error,
            retry_after: None,
        }
    }
}

impl Client {
    /// A client for `upstreams`, tried in order (the next only on 404/410).
    pub fn new(upstreams: Vec<Upstream>, cfg: &FetchSettings) -> Result<Client, ClientError> {
        check_config(&upstreams, cfg)?;
        let http = reqwest::Client::builder()
            .user_agent(cfg.user_agent.as_str())
            .connect_timeout(cfg.connect_timeout)
            // Keep a connection per permit so steady-state requests reuse them.
            .pool_max_idle_per_host(cfg.concurrency)
            .build()
            .map_err(ClientError::Http)?;
        Ok(Client {
            sources: upstreams.into_iter().map(Source::new).collect(),
            in_flight: Arc::new(Semaphore::new(cfg.concurrency)),
            inner: Arc::new(Inner {
                http,
                max_in_flight: cfg.concurrency,
                throttle: Throttle::new(cfg.requests_per_second),
                read_timeout: cfg.read_timeout,
                header_timeout: cfg.header_timeout,
                min_rate: (cfg.min_bytes_per_second > 0)
                    .then_some((cfg.min_bytes_per_second, cfg.throughput_window)),
                max_attempts: cfg.max_attempts,
                backoff: Backoff {
                    base: cfg.backoff_base,
                    max: cfg.backoff_max,
                },
                stats: FetchStats::default(),
                health: HealthTable::default(),
            }),
        })
    }

    /// A client for another upstream list that shares this one's limits, pool and
    /// counters: feed-driven fetches go to their own base under the run's limits.
    pub fn with_upstreams(&self, upstreams: Vec<Upstream>) -> Result<Client, ClientError> {
        if upstreams.is_empty() {
            return Err(ClientError::NoUpstreams);
        }
        Ok(Client {
            inner: self.inner.clone(),
            in_flight: self.in_flight.clone(),
            sources: upstreams.into_iter().map(Source::new).collect(),
        })
    }

    /// A client for another service (the checksum database): it shares the
    /// throttle, the pool and the counters, but has an in-flight limit of its
    /// own, of the same size — one budget per resource (STYLE.md §3), so that
    /// lookups run beside the module downloads instead of queueing behind them.
    pub fn for_service(&self, upstreams: Vec<Upstream>) -> Result<Client, ClientError> {
        let mut client = self.with_upstreams(upstreams)?;
        client.in_flight = Arc::new(Semaphore::new(self.inner.max_in_flight));
        Ok(client)
    }

    /// Like [`Client::get`], with a query string appended to each upstream's URL
    /// (`index?since=…&limit=…`). Only http(s) upstreams can take one.
    #[tracing::instrument(level = "debug", skip_all, fields(rel = rel))]
    pub async fn get_query(
        &self,
        rel: &str,
        query: &[(&str, String)],
        limit: u64,
        token: &CancellationToken,
    ) -> Result<Bytes, FetchError> {
        self.fetch_query::<MemSink>(rel, query, &(), limit, token)
            .await
    }

    /// Fetches a small body (`@v/list`, `.info`, `.mod`, `@latest`) into memory.
    /// Fails with `TooLarge` as soon as the declared length or the bytes received exceed `limit`.
    #[tracing::instrument(level = "debug", skip_all, fields(rel = rel))]
    pub async fn get(
        &self,
        rel: &str,
        limit: u64,
        token: &CancellationToken,
    ) -> Result<Bytes, FetchError> {
        self.fetch::<MemSink>(rel, &(), limit, token).await
    }

    /// Streams a body (`.zip`) into a `.tmp-*` file in `dest_dir` (created if missing),
    /// hashing it on the way. On any failure no temp file is left behind.
    #[tracing::instrument(level = "debug", skip_all, fields(rel = rel))]
    pub async fn download(
        &self,
        rel: &str,
        dest_dir: &Path,
        limit: u64,
        token: &CancellationToken,
    ) -> Result<Downloaded, FetchError> {
        self.fetch::<FileSink>(rel, &dest_dir.to_path_buf(), limit, token)
            .await
    }

    /// The counters so far, for the run summary and metrics.
    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats.snapshot()
    }

    /// Requests and failures per upstream so far (every client sharing this one's
    /// counters), for `status` and metrics.
    pub fn upstream_health(&self) -> Vec<UpstreamHealth> {
        self.inner.health.snapshot()
    }

    async fn fetch<S: Sink>(
        &self,
        rel: &str,
        args: &S::Args,
        limit: u64,
        token: &CancellationToken,
    ) -> Result<S::Output, FetchError> {
        self.fetch_query::<S>(rel, &[], args, limit, token).await
    }

    async fn fetch_query<S: Sink>(
        &self,
        rel: &str,
        query: &[(&str, String)],
        args: &S::Args,
        limit: u64,
        token: &CancellationToken,
    ) -> Result<S::Output, FetchError> {
        check_rel(rel)?;
        let mut not_found = None;
        let mut failed = None;
        for (i, source) in self.sources.iter().enumerate() {
            let loc = with_query(source.upstream.locate(rel)?, rel, query)?;
            let res = self.fetch_from::<S>(source, &loc, args, limit, token).await;
            let last = i + 1 == self.sources.len();
            match res {
                Err(e) if e.is_not_found() => {
                    debug!(upstream = %source.upstream, cause = %e, "not found, trying next upstream");
                    self.inner.stats.record_not_found();
                    not_found = Some(e);
                }
                // GOPROXY's `|`: any failure moves on. Everything is verified whichever
                // upstream served it, so this trades nothing for availability.
                Err(e) if !last && source.upstream.falls_through_on_any_error() && falls(&e) => {
                    warn!(upstream = %source.upstream, cause = %Chain(&e), "upstream failed, trying the next");
                    failed.get_or_insert(e);
                }
                done => return done,
            }
        }
        // A failure that is not "not found" is not permanent: report it before a 404.
        Err(failed
            .or(not_found)
            .expect("Client::new rejects an empty upstream list"))
    }

    /// All attempts against one upstream.
    async fn fetch_from<S: Sink>(
        &self,
        source: &Source,
        loc: &Location,
        args: &S::Args,
        limit: u64,
        token: &CancellationToken,
    ) -> Result<S::Output, FetchError> {
        let inner = &*self.inner;
        let host = source.host.as_deref();
        let mut attempt = 0;
        loop {
            attempt += 1;
            let waited = inner.throttle.wait_turn(host, token).await?;
            inner.stats.record_wait(waited);
            let permit = tokio::select! {
                biased;
                () = token.cancelled() => return Err(FetchError::Cancelled),
                p = self.in_flight.acquire() => p.expect("the in-flight semaphore is never closed"),
            };
            inner.stats.record_request();
            inner.health.record_request(source.upstream.as_str());
            let res = self.attempt::<S>(loc, args, limit, token).await;
            drop(permit);
            let Failed {
                mut error,
                retry_after,
            } = match res {
                Ok(out) => return Ok(out),
                Err(failed) => failed,
            };
            inner.stats.record_failure(&error);
            error.set_attempts(attempt);
            if !error.is_retryable() || attempt >= inner.max_attempts {
                if !error.is_not_found() && !error.is_cancelled() {
                    inner.health.record_error(source.upstream.as_str(), &error);
                }
                return Err(error);
            }
            let delay = retry_after.unwrap_or_else(|| inner.backoff.delay(attempt));
            // A server that asks for a pause, or rate-limits us, gets it from every
            // request of the run, not only this one.
            if retry_after.is_some() || is_too_many(&error) {
                if let Some(host) = host {
                    inner.throttle.hold_off(host, delay);
                }
            }
            inner.stats.record_retry();
            debug!(url = loc.shown(), attempt, delay = %humantime::format_duration(delay), cause = %Chain(&error), "retrying");
            // tokio::time::sleep, not Instant + delay: a huge backoff_max must not overflow.
            cancellable(tokio::time::sleep(delay), token).await?;
        }
    }

    async fn attempt<S: Sink>(
        &self,
        loc: &Location,
        args: &S::Args,
        limit: u64,
        token: &CancellationToken,
    ) -> Result<S::Output, Failed> {
        let inner = &*self.inner;
        let (body, url, declared) = match loc {
            Location::Http { url, shown } => {
                let send = inner.http.get(url.clone()).send();
                let resp = guarded(token, inner.header_timeout, shown, send)
                    .await
                    .map_err(|e| header_timeout(e, inner.header_timeout))?
                    .map_err(|e| transport(shown, e))?;
                let declared = resp.content_length();
                (self.check_response(resp, shown)?, shown, declared)
            }
            Location::File { path, shown } => {
                let (file, len) =
                    guarded(token, inner.read_timeout, shown, open_file(path, shown)).await??;
                let body = Body::File {
                    file,
                    path: path.clone(),
                };
                (body, shown, Some(len))
            }
        };
        check_declared(url, declared, limit)?;
        let cx = ReadCx {
            url,
            limit,
            expected: declared,
            read_timeout: inner.read_timeout,
            min_rate: inner.min_rate,
            token,
            stats: &inner.stats,
        };
        Ok(pump::<S>(body, args, &cx).await?)
    }

    /// Turns a non-2xx response into the error it means.
    fn check_response(&self, resp: reqwest::Response, shown: &str) -> Result<Body, Failed> {
        let status = resp.status();
        self.inner.stats.record_status(status);
        if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
            return Err(FetchError::NotFound {
                url: shown.to_string(),
                status,
            }
            .into());
        }
        if status.is_success() {
            return Ok(Body::Http(resp));
        }
        // RFC 9110 §10.2.3: Retry-After accompanies 503 as well as 429.
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(resp.headers(), OffsetDateTime::now_utc())
            }
            _ => None,
        };
        Err(Failed {
            error: FetchError::Status {
                url: shown.to_string(),
                status,
                attempts: 0,
            },
            retry_after,
        })
    }
}

fn check_config(upstreams: &[Upstream], cfg: &FetchSettings) -> Result<(), ClientError> {
    let invalid = |field, reason: &str| ClientError::Invalid {
        field,
        reason: reason.to_string(),
    };
    if upstreams.is_empty() {
        return Err(ClientError::NoUpstreams);
    }
    if cfg.concurrency == 0 || cfg.concurrency > Semaphore::MAX_PERMITS {
        return Err(invalid("concurrency", "must be at least 1"));
    }
    if cfg.max_attempts == 0 {
        return Err(invalid("max_attempts", "must be at least 1"));
    }
    if cfg.connect_timeout.is_zero() {
        return Err(invalid("connect_timeout", "must be more than zero"));
    }
    if cfg.read_timeout.is_zero() {
        return Err(invalid("read_timeout", "must be more than zero"));
    }
    if cfg.header_timeout.is_zero() {
        return Err(invalid("header_timeout", "must be more than zero"));
    }
    if cfg.throughput_window.is_zero() {
        return Err(invalid("throughput_window", "must be more than zero"));
    }
    Ok(())
}

/// Whether `|` moves on after `e`: not when the run is stopping or the caller erred.
fn falls(e: &FetchError) -> bool {
    !matches!(e, FetchError::Cancelled | FetchError::InvalidPath { .. })
}

fn is_too_many(e: &FetchError) -> bool {
    matches!(e, FetchError::Status { status, .. } if *status == StatusCode::TOO_MANY_REQUESTS)
}

/// `loc` with `query` appended; a query needs an http(s) upstream.
fn with_query(loc: Location, rel: &str, query: &[(&str, String)]) -> Result<Location, FetchError> {
    if query.is_empty() {
        return Ok(loc);
    }
    match loc {
        Location::Http { mut url, shown } => {
            url.query_pairs_mut().extend_pairs(query);
            let shown = format!("{shown}?{}", url.query().unwrap_or_default());
            Ok(Location::Http { url, shown })
        }
        Location::File { .. } => Err(FetchError::InvalidPath {
            rel: rel.to_string(),
            reason: "a query needs an http(s) upstream, not a directory",
        }),
    }
}

/// A wait for headers that timed out is the header deadline, not an idle read.
fn header_timeout(e: FetchError, after: Duration) -> FetchError {
    match e {
        FetchError::Timeout { url, attempts, .. } => FetchError::HeaderTimeout {
            url,
            after,
            attempts,
        },
        other => other,
    }
}

fn transport(shown: &str, e: reqwest::Error) -> FetchError {
    FetchError::Transport {
        url: shown.to_string(),
        attempts: 0,
        // The URL is ours to show, redacted; reqwest's copy would repeat it, password included.
        source: e.without_url(),
    }
}

/// Opens a file in a `file://` upstream; missing means not found, as a proxy's 404.
async fn open_file(path: &Path, shown: &str) -> Result<(tokio::fs::File, u64), FetchError> {
    let not_found = || FetchError::NotFound {
        url: shown.to_string(),
        status: StatusCode::NOT_FOUND,
    };
    let io = |op, source| FetchError::Io {
        op,
        path: path.to_path_buf(),
        source,
    };
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory
            ) =>
        {
            return Err(not_found())
        }
        Err(e) => return Err(io("open", e)),
    };
    let meta = file.metadata().await.map_err(|e| io("stat", e))?;
    if meta.is_dir() {
        return Err(not_found());
    }
    Ok((file, meta.len()))
}

impl Location {
    fn shown(&self) -> &str {
        match self {
            Location::Http { shown, .. } | Location::File { shown, .. } => shown,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::testutil::{config, http_response, raw_server, serve, TestConfig};
    use axum::extract::{Path as UrlPath, State};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use axum::Router;
    use reqwest::header::RETRY_AFTER;
    use std::collections::VecDeque;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    const REL: &str = "rsc.io/quote/@v/list";

    fn client(cfg: TestConfig) -> Client {
        Client::new(cfg.upstreams, &cfg.settings).expect("test config is valid")
    }

    /// `/s/{code}/…` answers `code`; `/ok/…` answers 200 with the path it was asked for.
    async fn status_server() -> (String, Arc<AtomicUsize>) {
        let hits = Arc::new(AtomicUsize::new(0));
        let router = Router::new()
            .route(
                "/s/{code}/{*rest}",
                get(|UrlPath((code, _)): UrlPath<(u16, String)>| async move {
                    StatusCode::from_u16(code).expect("test status code")
                }),
            )
            .route(
                "/ok/{*rest}",
                get(|State(hits): State<Arc<AtomicUsize>>, UrlPath(rest): UrlPath<String>| async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    rest
                }),
            )
            .with_state(hits.clone());
        (serve(router).await, hits)
    }

    /// Answers each request with the next scripted (status, Retry-After), then 200 "ok".
    async fn scripted(script: Vec<(u16, Option<&'static str>)>) -> (String, Arc<AtomicUsize>) {
        let calls = Arc::new(AtomicUsize::new(0));
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let handler = {
            let calls = calls.clone();
            move || async move {
                calls.fetch_add(1, Ordering::SeqCst);
                let next = script.lock().expect("script lock").pop_front();
                match next {
                    None => "ok".into_response(),
                    Some((code, retry_after)) => {
                        let mut resp = Response::new(axum::body::Body::empty());
                        *resp.status_mut() = StatusCode::from_u16(code).expect("test status code");
                        if let Some(v) = retry_after {
                            resp.headers_mut()
                                .insert(RETRY_AFTER, v.parse().expect("header value"));
                        }
                        resp
                    }
                }
            }
        };
        (serve(Router::new().fallback(handler)).await, calls)
    }

    #[tokio::test]
    async fn falls_through_on_404_and_410() {
        let (base, hits) = status_server().await;
        for code in [404, 410] {
            let c = client(config(&[
                &format!("{base}s/{code}/"),
                &format!("{base}ok/"),
            ]));
            let body = c
                .get(REL, 1024, &CancellationToken::new())
                .await
                .expect("second upstream answers");
            assert_eq!(body, REL);
            let s = c.stats();
            assert_eq!((s.not_found, s.requests, s.retries), (1, 2, 0), "{code}");
        }
        assert_eq!(hits.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn stops_on_other_errors() {
        let (base, hits) = status_server().await;
        // (status, attempts made: 5xx is retried, 403 is not)
        for (code, attempts) in [(500, 3), (403, 1), (400, 1), (502, 3)] {
            let c = client(config(&[
                &format!("{base}s/{code}/"),
                &format!("{base}ok/"),
            ]));
            let err = c
                .get(REL, 1024, &CancellationToken::new())
                .await
                .expect_err("no fall-through");
            match &err {
                FetchError::Status {
                    status,
                    attempts: n,
                    url,
                } => {
                    assert_eq!((status.as_u16(), *n), (code, attempts));
                    assert_eq!(url, &format!("{base}s/{code}/{REL}"));
                }
                other => panic!("{code}: want Status, got {other:?}"),
            }
            assert_eq!(c.stats().requests, u64::from(attempts));
        }
        assert_eq!(hits.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn not_found_everywhere_reports_the_last_upstream() {
        let (base, _) = status_server().await;
        let c = client(config(&[
            &format!("{base}s/404/"),
            &format!("{base}s/410/"),
        ]));
        let err = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect_err("not found");
        assert!(err.is_not_found());
        assert_eq!(
            err.to_string(),
            format!("reading {base}s/410/{REL}: 410 Gone")
        );
        assert_eq!(c.stats().requests, 2, "404/410 are never retried");
    }

    #[tokio::test]
    async fn retries_503_then_succeeds() {
        let (base, calls) = scripted(vec![(503, None)]).await;
        let c = client(config(&[&base]));
        let body = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect("second attempt succeeds");
        assert_eq!(body, "ok");
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let s = c.stats();
        assert_eq!(
            (s.requests, s.retries, s.responses_5xx, s.responses_2xx),
            (2, 1, 1, 1)
        );
        assert_eq!(s.bytes_received, 2);
    }

    #[tokio::test]
    async fn honours_retry_after_on_429() {
        let (base, calls) = scripted(vec![(429, Some("1"))]).await;
        // Backoff is a few ms, so a wait of about a second can only come from Retry-After.
        let c = client(config(&[&base]));
        let start = std::time::Instant::now();
        let body = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect("retry succeeds");
        assert_eq!(body, "ok");
        assert!(
            start.elapsed() >= Duration::from_millis(950),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let s = c.stats();
        assert_eq!((s.too_many_requests, s.responses_4xx, s.retries), (1, 1, 1));
    }

    #[tokio::test]
    async fn gives_up_on_429_after_max_attempts() {
        let (base, calls) = scripted(vec![(429, Some("0")); 5]).await;
        let c = client(config(&[&base]));
        let err = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect_err("429 each time");
        assert!(
            matches!(
                err,
                FetchError::Status {
                    status: StatusCode::TOO_MANY_REQUESTS,
                    attempts: 3,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    /// Answers `<User-Agent header>?<query>` on every path.
    async fn echo_server() -> String {
        let router = Router::new().fallback(|req: axum::extract::Request| async move {
            let ua = req
                .headers()
                .get(axum::http::header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-")
                .to_string();
            format!("{ua}?{}", req.uri().query().unwrap_or(""))
        });
        serve(router).await
    }

    #[tokio::test]
    async fn sends_user_agent_and_query() {
        let base = echo_server().await;
        let c = client(config(&[&base]));
        let query = [("since", "2019-04-10T19:08:52.997264Z".to_string())];
        let body = c
            .get_query("index", &query, 1024, &CancellationToken::new())
            .await
            .expect("echo");
        let want = format!(
            "gomirror/{}?since=2019-04-10T19%3A08%3A52.997264Z",
            env!("CARGO_PKG_VERSION")
        );
        assert_eq!(body, want);
        let dir = client(config(&["file:///nonexistent"]));
        let err = dir
            .get_query("index", &query, 1024, &CancellationToken::new())
            .await
            .expect_err("no query on a directory");
        assert!(matches!(err, FetchError::InvalidPath { .. }), "{err:?}");
    }

    #[tokio::test]
    async fn derived_client_shares_counters_and_holds() {
        // A 429 without Retry-After holds back the host, for the derived client too
        // (another base on the same server).
        let (base, calls) = scripted(vec![(429, None)]).await;
        let c = client(config(&[&format!("{base}a/")]));
        let feed = c
            .with_upstreams(vec![
                Upstream::parse(&format!("{base}cached-only/")).expect("url")
            ])
            .expect("one upstream");
        c.get(REL, 1024, &CancellationToken::new())
            .await
            .expect("retried after the 429");
        let host = feed.sources[0].host.as_deref().expect("an http upstream");
        assert_eq!(c.sources[0].host.as_deref(), Some(host));
        assert!(
            feed.inner.throttle.held_until(host).is_some(),
            "no hold after a 429"
        );
        feed.get(REL, 1024, &CancellationToken::new())
            .await
            .expect("second client");
        let s = feed.stats();
        assert_eq!((s.requests, s.too_many_requests, s.retries), (3, 1, 1));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
        assert!(c.with_upstreams(vec![]).is_err());
    }

    #[tokio::test]
    async fn retries_truncated_body_then_succeeds() {
        let base = raw_server(vec![
            http_response(10, "abcd"),
            http_response(10, "0123456789"),
        ])
        .await;
        let c = client(config(&[&base]));
        let body = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect("second attempt is whole");
        assert_eq!(body, "0123456789");
        let s = c.stats();
        assert_eq!((s.truncated, s.retries, s.requests), (1, 1, 2));
    }

    #[tokio::test]
    async fn truncated_every_time_is_an_error() {
        let base = raw_server(vec![http_response(10, "abcd")]).await;
        let c = client(config(&[&base]));
        let err = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect_err("always short");
        assert!(
            matches!(
                err,
                FetchError::Truncated {
                    expected: 10,
                    got: 4,
                    attempts: 3,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn get_enforces_limit_on_declared_and_streamed_length() {
        let router = Router::new()
            .route("/declared/{*rest}", get(|| async { "x".repeat(100) }))
            .route(
                "/streamed/{*rest}",
                get(|| async {
                    let chunks = (0..10)
                        .map(|_| Ok::<_, std::convert::Infallible>(Bytes::from("x".repeat(10))));
                    axum::body::Body::from_stream(futures::stream::iter(chunks))
                }),
            );
        let base = serve(router).await;
        for kind in ["declared", "streamed"] {
            let c = client(config(&[&format!("{base}{kind}/")]));
            let token = CancellationToken::new();
            let err = c.get(REL, 50, &token).await.expect_err("over limit");
            assert!(
                matches!(err, FetchError::TooLarge { limit: 50, .. }),
                "{kind}: {err:?}"
            );
            assert_eq!(c.stats().requests, 1, "{kind}: TooLarge is not retried");
            let body = c.get(REL, 100, &token).await.expect("exactly at limit");
            assert_eq!(body.len(), 100, "{kind}");
        }
    }

    /// Most requests in progress at once.
    #[derive(Default)]
    struct Gauge {
        now: AtomicUsize,
        max: AtomicUsize,
    }

    /// A server that answers every request after 100 ms, counting how many overlap.
    async fn gauge_server() -> (String, Arc<Gauge>) {
        let gauge = Arc::new(Gauge::default());
        let router = Router::new()
            .fallback(|State(g): State<Arc<Gauge>>| async move {
                let now = g.now.fetch_add(1, Ordering::SeqCst) + 1;
                g.max.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(100)).await;
                g.now.fetch_sub(1, Ordering::SeqCst);
                "ok"
            })
            .with_state(gauge.clone());
        (serve(router).await, gauge)
    }

    #[tokio::test]
    async fn bounds_requests_in_flight() {
        let (base, gauge) = gauge_server().await;
        let c = client(config(&[&base]).with(|s| s.concurrency = 3));
        let tasks: Vec<_> = (0..12)
            .map(|i| {
                let c = c.clone();
                tokio::spawn(async move {
                    c.get(&format!("m{i}/@v/list"), 16, &CancellationToken::new())
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("get");
        }
        let max = gauge.max.load(Ordering::SeqCst);
        assert!((2..=3).contains(&max), "max concurrent requests {max}");
    }

    #[tokio::test]
    async fn a_service_client_has_its_own_in_flight_budget_and_shares_counters() {
        let (base, gauge) = gauge_server().await;
        let c = client(config(&[&base]).with(|s| s.concurrency = 2));
        let service = c
            .for_service(vec![Upstream::parse(&base).expect("url")])
            .expect("service client");
        let tasks: Vec<_> = (0..8)
            .map(|i| {
                let c = if i % 2 == 0 {
                    c.clone()
                } else {
                    service.clone()
                };
                tokio::spawn(async move {
                    c.get(&format!("m{i}/@v/list"), 16, &CancellationToken::new())
                        .await
                })
            })
            .collect();
        for t in tasks {
            t.await.expect("task").expect("get");
        }
        let max = gauge.max.load(Ordering::SeqCst);
        assert!(
            (3..=4).contains(&max),
            "two budgets of 2: max concurrent {max}"
        );
        assert_eq!(c.stats().requests, 8, "one set of counters");
    }

    #[tokio::test]
    async fn cancellation_is_prompt() {
        let router = Router::new()
            .route(
                "/hang/{*rest}",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/busy/{*rest}",
                get(|| async { StatusCode::SERVICE_UNAVAILABLE }),
            );
        let base = serve(router).await;
        // (upstream, config): waiting for headers; sleeping before a retry.
        let cases = [
            ("hang", config(&[&format!("{base}hang/")])),
            (
                "busy",
                config(&[&format!("{base}busy/")]).with(|s| {
                    s.max_attempts = 10;
                    s.backoff_base = Duration::from_secs(60);
                    s.backoff_max = Duration::from_secs(60);
                }),
            ),
        ];
        for (name, cfg) in cases {
            let c = client(cfg);
            let token = CancellationToken::new();
            let task = {
                let token = token.clone();
                tokio::spawn(async move { c.get(REL, 16, &token).await })
            };
            tokio::time::sleep(Duration::from_millis(200)).await;
            token.cancel();
            let res = tokio::time::timeout(Duration::from_secs(2), task)
                .await
                .expect("returns promptly")
                .expect("task");
            assert!(matches!(res, Err(FetchError::Cancelled)), "{name}: {res:?}");
        }

        let c = client(config(&[&format!("{base}hang/")]));
        let token = CancellationToken::new();
        token.cancel();
        let res = c.get(REL, 16, &token).await;
        assert!(
            matches!(res, Err(FetchError::Cancelled)),
            "already cancelled: {res:?}"
        );
        assert_eq!(c.stats().requests, 0);
    }

    #[tokio::test]
    async fn idle_timeout_on_headers_and_body() {
        let router = Router::new()
            .route(
                "/headers/{*rest}",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    "late"
                }),
            )
            .route(
                "/body/{*rest}",
                get(|| async {
                    let first = futures::stream::iter([Ok::<_, std::convert::Infallible>(
                        Bytes::from("partial"),
                    )]);
                    axum::body::Body::from_stream(futures::StreamExt::chain(
                        first,
                        futures::stream::pending(),
                    ))
                }),
            );
        let base = serve(router).await;
        for kind in ["headers", "body"] {
            let c = client(config(&[&format!("{base}{kind}/")]).with(|s| {
                s.read_timeout = Duration::from_millis(100);
                s.header_timeout = Duration::from_millis(100);
                s.max_attempts = 2;
            }));
            let err = c
                .get(REL, 1024, &CancellationToken::new())
                .await
                .expect_err("stalls");
            let want = match (kind, &err) {
                ("headers", FetchError::HeaderTimeout { attempts, .. }) => *attempts == 2,
                ("body", FetchError::Timeout { attempts, .. }) => *attempts == 2,
                _ => false,
            };
            assert!(want, "{kind}: {err:?}");
            assert_eq!(c.stats().timeouts, 2, "{kind}");
        }
    }

    /// A raw server that writes `resp` one byte per `every`, then closes.
    async fn trickle_server(resp: &'static [u8], every: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = conn.read(&mut buf).await;
                    for b in resp {
                        if conn.write_all(&[*b]).await.is_err() {
                            return;
                        }
                        tokio::time::sleep(every).await;
                    }
                });
            }
        });
        format!("http://{addr}/")
    }

    // See: #13: a trickle stays under read_timeout but must not hang a run.
    #[tokio::test]
    async fn issue_13_slow_headers_and_bodies_fail_and_are_retried() {
        const HEADERS: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nX-Padding: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
        let base = trickle_server(HEADERS, Duration::from_millis(20)).await;
        let c = client(config(&[&base]).with(|s| {
            s.header_timeout = Duration::from_millis(300);
            s.max_attempts = 2;
        }));
        let err = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect_err("headers trickle");
        assert_eq!(
            err.to_string(),
            format!("reading {base}{REL}: no response headers within 300ms (after 2 attempts)")
        );
        assert_eq!(c.stats().timeouts, 2);

        const BODY: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 64\r\n\r\n0123456789012345678901234567890123456789012345678901234567890123";
        let router = Router::new().fallback(|| async {
            let head = futures::stream::iter([Ok::<_, std::convert::Infallible>(Bytes::from("x"))]);
            let drip = futures::stream::unfold((), |()| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                Some((Ok(Bytes::from("x")), ()))
            });
            axum::body::Body::from_stream(futures::StreamExt::chain(head, drip))
        });
        let base = serve(router).await;
        let c = client(config(&[&base]).with(|s| {
            s.min_bytes_per_second = 1000;
            s.throughput_window = Duration::from_millis(200);
            s.max_attempts = 2;
        }));
        let err = c
            .get(REL, 1 << 20, &CancellationToken::new())
            .await
            .expect_err("body trickles");
        assert!(
            matches!(
                err,
                FetchError::TooSlow {
                    min: 1000,
                    attempts: 2,
                    ..
                }
            ),
            "{err:?}"
        );
        let msg = err.to_string();
        assert!(
            msg.starts_with(&format!("reading {base}{REL}: body arriving at "))
                && msg.ends_with(
                    " bytes/s over 200ms, below the minimum of 1000 bytes/s (after 2 attempts)"
                ),
            "{msg}"
        );
        // A steady body above the minimum is untouched.
        let base = trickle_server(BODY, Duration::ZERO).await;
        let c = client(config(&[&base]).with(|s| {
            s.min_bytes_per_second = 1;
            s.throughput_window = Duration::from_millis(1);
        }));
        let body = c.get(REL, 1024, &CancellationToken::new()).await;
        assert_eq!(body.expect("fast enough").len(), 64);
    }

    #[tokio::test]
    async fn connection_refused_is_retried_transport_error() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        drop(listener);
        let c = client(config(&[&format!("http://{addr}/")]));
        let err = c
            .get(REL, 1024, &CancellationToken::new())
            .await
            .expect_err("refused");
        assert!(
            matches!(err, FetchError::Transport { attempts: 3, .. }),
            "{err:?}"
        );
        let msg = err.to_string();
        assert_eq!(
            msg,
            format!("reading http://{addr}/{REL} (after 3 attempts)")
        );
        let chain = Chain(&err).to_string();
        assert_eq!(chain.matches(REL).count(), 1, "url shown once: {chain}");
    }

    #[tokio::test]
    async fn invalid_path_makes_no_request() {
        let (base, _) = status_server().await;
        let c = client(config(&[&format!("{base}ok/")]));
        let err = c
            .get("../etc/passwd", 16, &CancellationToken::new())
            .await
            .expect_err("invalid");
        assert!(matches!(err, FetchError::InvalidPath { .. }), "{err:?}");
        assert_eq!(c.stats().requests, 0);
    }

    #[test]
    fn config_is_checked() {
        let up = || vec![Upstream::parse("https://proxy.golang.org").expect("parses")];
        let with = |f: fn(&mut FetchSettings)| {
            let mut s = FetchSettings::default();
            f(&mut s);
            s
        };
        let cases: Vec<(Vec<Upstream>, FetchSettings, &str)> = vec![
            (
                vec![],
                FetchSettings::default(),
                "fetch client: no upstreams configured",
            ),
            (
                up(),
                with(|s| s.concurrency = 0),
                "fetch client: concurrency: must be at least 1",
            ),
            (
                up(),
                with(|s| s.max_attempts = 0),
                "fetch client: max_attempts: must be at least 1",
            ),
            (
                up(),
                with(|s| s.read_timeout = Duration::ZERO),
                "fetch client: read_timeout: must be more than zero",
            ),
            (
                up(),
                with(|s| s.connect_timeout = Duration::ZERO),
                "fetch client: connect_timeout: must be more than zero",
            ),
        ];
        for (upstreams, cfg, want) in cases {
            let err = Client::new(upstreams, &cfg).err().expect("invalid config");
            assert_eq!(err.to_string(), want);
        }
        assert!(Client::new(up(), &FetchSettings::default()).is_ok());
    }
}
