//! How the fetch client behaves: mirror.toml's `[fetch]` table, typed.
//!
//! The one definition of these settings and of their defaults. `config`
//! parses and bounds-checks `[fetch]` into a [`FetchSettings`], taking every
//! missing key from [`FetchSettings::default`]; mirror.toml documents the
//! same values (`config`'s `sample_config_loads` test holds the two together).
//! [`Client::new`](super::Client::new) takes it as it is.

use std::time::Duration;

/// `User-Agent` when `[fetch] user_agent` is not set.
const DEFAULT_USER_AGENT: &str = concat!("gomirror/", env!("CARGO_PKG_VERSION"));

/// `[fetch]`: limits, timeouts and retries of upstream requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FetchSettings {
    /// Requests (including reading their bodies) in progress at once, across
    /// all callers of one client; 1..=1024 from mirror.toml.
    pub concurrency: usize,
    /// TCP + TLS connection setup.
    pub connect_timeout: Duration,
    /// Idle timeout: the longest wait for the next body chunk, not a
    /// deadline for the whole body.
    pub read_timeout: Duration,
    /// Deadline from sending a request (connecting included) until its
    /// response headers have arrived, however slowly they trickle in.
    pub header_timeout: Duration,
    /// A body that brings fewer than this many bytes per second over a
    /// whole `throughput_window` fails (and is retried): a trickle that
    /// never lets `read_timeout` fire must not hold a run forever. 0: off.
    pub min_bytes_per_second: u64,
    /// The window `min_bytes_per_second` is measured over.
    pub throughput_window: Duration,
    /// Attempts per request and upstream, including the first; 1..=100 from
    /// mirror.toml.
    pub max_attempts: u32,
    /// Backoff ceiling for the first retry; doubles per attempt.
    pub backoff_base: Duration,
    /// Backoff ceiling never exceeds this; at least `backoff_base`.
    /// (Retry-After has its own cap, `retry::RETRY_AFTER_MAX`.)
    pub backoff_max: Duration,
    /// Sent on every request.
    pub user_agent: String,
    /// Request starts per second across the run; `None`: no cap.
    pub requests_per_second: Option<u32>,
}

impl Default for FetchSettings {
    /// mirror.toml's documented defaults: 64 in flight, 10s connect, 60s idle
    /// read, headers within 60s, bodies at least 1 KiB/s over 60s, 5
    /// attempts, backoff from 250ms up to 30s, no rate cap.
    fn default() -> FetchSettings {
        FetchSettings {
            concurrency: 64,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(60),
            header_timeout: Duration::from_secs(60),
            min_bytes_per_second: 1024,
            throughput_window: Duration::from_secs(60),
            max_attempts: 5,
            backoff_base: Duration::from_millis(250),
            backoff_max: Duration::from_secs(30),
            user_agent: DEFAULT_USER_AGENT.to_owned(),
            requests_per_second: None,
        }
    }
}
