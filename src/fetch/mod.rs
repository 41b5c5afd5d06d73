//! Fetch: relative GOPROXY request paths → bytes or temp files.
//!
//! Input is an already-escaped path relative to a proxy base, such as
//! `golang.org/x/text/@v/v0.3.7.zip` or `github.com/!azure/x/@v/list`. Output is
//! [`bytes::Bytes`] ([`Client::get`], for `@v/list`, `.info`, `.mod`, `@latest`) or a
//! [`Downloaded`] temp file with its size and sha256 ([`Client::download`], for `.zip`).
//! This stage decides nothing about the validity of what it fetched; `verify` does.
//!
//! Rules it implements (PROTOCOL.md, GOPROXY):
//! - Upstreams are tried in order; the next one is tried only when the current one says
//!   404 or 410. Any other final error stops at that upstream.
//!   Go: cmd/go/internal/modfetch/proxy.go TryProxies: `,` falls through on 404/410 only.
//! - Upstream 404/410 is permanent for the request and never retried.
//! - 5xx, 429, timeouts, connection errors and truncated bodies are retried with
//!   exponential backoff and full jitter; `Retry-After` is honoured. Retries live only in
//!   `client.rs`, their waits in `retry.rs` (STYLE.md §3).
//! - Size limits are enforced while streaming, before the limit is passed.
//!
//! Modules: `upstream` (what a GOPROXY entry may be), `client` (requests, retries,
//! concurrency), `retry` (how long to wait before the next attempt), `throttle`
//! (hold-offs per host and the rate cap for the whole run), `download` (streaming
//! bodies into memory or a hashed temp file), `stats` (the counters both record into).

mod client;
mod download;
mod retry;
mod settings;
mod stats;
mod throttle;
mod upstream;

use std::io;
use std::path::PathBuf;
use std::time::Duration;

pub use client::{Client, ClientError};
pub use download::Downloaded;
pub use reqwest::StatusCode;
pub use settings::FetchSettings;
pub use stats::{StatsSnapshot, UpstreamHealth};
pub use upstream::{Upstream, UpstreamError};

/// One module version's three files as upstream served them, unchecked:
/// the hand-off from fetch to verify.
#[derive(Debug)]
pub struct Fetched {
    pub mv: crate::module::ModVer,
    pub info: bytes::Bytes,
    /// Fetched on its own, never taken from the zip: legacy versions have
    /// a synthesised go.mod whose hash differs (PROTOCOL.md, "GOPROXY").
    /// Streamed to a temporary file like the zip: up to 16 MiB each, many
    /// in flight, it has no business in memory.
    pub mod_file: Downloaded,
    /// `None` for a version fetched for its go.mod only (see `verify::Checked`).
    pub zip: Option<Downloaded>,
}

/// Why a fetch failed. Every variant that concerns a request carries the URL
/// (with any password redacted); `attempts` counts the tries made against that URL.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// Every upstream answered 404 or 410 (or, for `file://`, had no such file).
    /// `url` and `status` are those of the last upstream tried.
    #[error("reading {url}: {status}")]
    NotFound { url: String, status: StatusCode },

    /// An error status that is not "not found"; 5xx and 429 after all attempts.
    #[error("reading {url}: {status}{}", after_attempts(*.attempts))]
    Status {
        url: String,
        status: StatusCode,
        attempts: u32,
    },

    /// The declared `Content-Length` or the bytes received so far exceed the limit.
    #[error("reading {url}: response body larger than {limit} bytes")]
    TooLarge { url: String, limit: u64 },

    /// The body ended before `Content-Length` bytes arrived.
    #[error("reading {url}: unexpected end of body after {got} of {expected} bytes{}", after_attempts(*.attempts))]
    Truncated {
        url: String,
        expected: u64,
        got: u64,
        attempts: u32,
    },

    /// No data arrived for `after` (response headers or the next body chunk).
    #[error("reading {url}: no data for {}{}", humantime::format_duration(*.after), after_attempts(*.attempts))]
    Timeout {
        url: String,
        after: Duration,
        attempts: u32,
    },

    /// The response headers did not arrive within `after` of sending the request.
    #[error("reading {url}: no response headers within {}{}", humantime::format_duration(*.after), after_attempts(*.attempts))]
    HeaderTimeout {
        url: String,
        after: Duration,
        attempts: u32,
    },

    /// The body arrived slower than the minimum throughput over a whole window.
    #[error(
        "reading {url}: body arriving at {rate} bytes/s over {}, below the minimum of {min} bytes/s{}",
        humantime::format_duration(*.window),
        after_attempts(*.attempts)
    )]
    TooSlow {
        url: String,
        rate: u64,
        min: u64,
        window: Duration,
        attempts: u32,
    },

    /// Connecting, sending the request or reading the body failed.
    #[error("reading {url}{}", after_attempts(*.attempts))]
    Transport {
        url: String,
        attempts: u32,
        #[source]
        source: reqwest::Error,
    },

    /// A local file operation failed: reading a `file://` upstream or writing a temp file.
    #[error("{op} {}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The caller passed a path that is not a plain relative path.
    #[error("invalid request path {rel:?}: {reason}")]
    InvalidPath { rel: String, reason: &'static str },

    /// The cancellation token fired.
    #[error("fetch cancelled")]
    Cancelled,
}

impl FetchError {
    /// Whether every upstream said 404/410: permanent for this request (PROTOCOL.md).
    pub fn is_not_found(&self) -> bool {
        matches!(self, FetchError::NotFound { .. })
    }

    /// Whether the run is shutting down rather than the request failing.
    pub fn is_cancelled(&self) -> bool {
        matches!(self, FetchError::Cancelled)
    }

    /// Whether another attempt against the same upstream may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => {
                status.is_server_error() || *status == StatusCode::TOO_MANY_REQUESTS
            }
            // Builder errors (bad URL) and redirect loops fail the same way every time.
            FetchError::Transport { source, .. } => !(source.is_builder() || source.is_redirect()),
            FetchError::Truncated { .. }
            | FetchError::Timeout { .. }
            | FetchError::HeaderTimeout { .. }
            | FetchError::TooSlow { .. } => true,
            FetchError::NotFound { .. }
            | FetchError::TooLarge { .. }
            | FetchError::Io { .. }
            | FetchError::InvalidPath { .. }
            | FetchError::Cancelled => false,
        }
    }

    /// Records how many attempts were made; errors are built with 0 inside one attempt.
    pub(crate) fn set_attempts(&mut self, n: u32) {
        match self {
            FetchError::Status { attempts, .. }
            | FetchError::Truncated { attempts, .. }
            | FetchError::Timeout { attempts, .. }
            | FetchError::HeaderTimeout { attempts, .. }
            | FetchError::TooSlow { attempts, .. }
            | FetchError::Transport { attempts, .. } => *attempts = n,
            _ => {}
        }
    }
}

fn after_attempts(n: u32) -> String {
    if n > 1 {
        format!(" (after {n} attempts)")
    } else {
        String::new()
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    use super::{FetchSettings, Upstream};
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Serves `router` on 127.0.0.1:0 for the rest of the test; returns `http://addr/`.
    pub(crate) async fn serve(router: axum::Router) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr: SocketAddr = listener.local_addr().expect("bound socket has an address");
        tokio::spawn(async move { axum::serve(listener, router).await });
        format!("http://{addr}/")
    }

    /// A raw HTTP/1.1 server: connection i gets `responses[i]` (the last one repeats),
    /// then the connection is closed. For what axum will not send, such as a body
    /// shorter than its Content-Length.
    pub(crate) async fn raw_server(responses: Vec<Vec<u8>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            for i in 0.. {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let resp = responses[i.min(responses.len() - 1)].clone();
                tokio::spawn(async move {
                    let mut req = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => req.extend_from_slice(&buf[..n]),
                        }
                    }
                    let _ = conn.write_all(&resp).await;
                    let _ = conn.shutdown().await;
                });
            }
        });
        format!("http://{addr}/")
    }

    pub(crate) fn http_response(declared: usize, body: &str) -> Vec<u8> {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n{body}")
            .into_bytes()
    }

    /// A test client's upstreams and settings.
    pub(crate) struct TestConfig {
        pub upstreams: Vec<Upstream>,
        pub settings: FetchSettings,
    }

    impl TestConfig {
        pub(crate) fn with(mut self, f: impl FnOnce(&mut FetchSettings)) -> TestConfig {
            f(&mut self.settings);
            self
        }
    }

    /// A config with fast backoff so retry tests take milliseconds.
    pub(crate) fn config(bases: &[&str]) -> TestConfig {
        let upstreams = bases
            .iter()
            .map(|b| Upstream::parse(b).expect("test upstream parses"))
            .collect();
        TestConfig {
            upstreams,
            settings: FetchSettings {
                max_attempts: 3,
                backoff_base: Duration::from_millis(1),
                backoff_max: Duration::from_millis(5),
                read_timeout: Duration::from_secs(5),
                ..FetchSettings::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_show_url_status_and_attempts() {
        let url = "https://proxy.golang.org/rsc.io/quote/@v/list".to_string();
        let cases: &[(FetchError, &str)] = &[
            (
                FetchError::NotFound { url: url.clone(), status: StatusCode::GONE },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: 410 Gone",
            ),
            (
                FetchError::Status { url: url.clone(), status: StatusCode::BAD_GATEWAY, attempts: 5 },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: 502 Bad Gateway (after 5 attempts)",
            ),
            (
                FetchError::Status { url: url.clone(), status: StatusCode::FORBIDDEN, attempts: 1 },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: 403 Forbidden",
            ),
            (
                FetchError::Truncated { url: url.clone(), expected: 10, got: 4, attempts: 2 },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: unexpected end of body after 4 of 10 bytes (after 2 attempts)",
            ),
            (
                FetchError::Timeout { url: url.clone(), after: Duration::from_secs(30), attempts: 1 },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: no data for 30s",
            ),
            (
                FetchError::HeaderTimeout { url: url.clone(), after: Duration::from_secs(60), attempts: 5 },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: no response headers within 1m (after 5 attempts)",
            ),
            (
                FetchError::TooSlow { url: url.clone(), rate: 1, min: 1024, window: Duration::from_secs(60), attempts: 1 },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: body arriving at 1 bytes/s over 1m, below the minimum of 1024 bytes/s",
            ),
            (
                FetchError::TooLarge { url, limit: 16 },
                "reading https://proxy.golang.org/rsc.io/quote/@v/list: response body larger than 16 bytes",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), *want);
        }
    }
}
