//! Fetch counters: what the run's requests did, for the run summary and
//! metrics. [`FetchStats`] is the live set, shared by every client derived
//! from one another and by the body readers (`download.rs` counts bytes as
//! they arrive); [`StatsSnapshot`] is its value at one moment.
//!
//! Its own module so that `client.rs` (attempts, statuses, waits) and
//! `download.rs` (bytes, truncation) both record into it without importing
//! each other.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::StatusCode;
use serde::Serialize;

use super::throttle::Waited;
use super::FetchError;

macro_rules! stats {
    ($($(#[$doc:meta])* $name:ident,)*) => {
        /// Live counters; relaxed atomics, read only for reporting.
        #[derive(Debug, Default)]
        pub(crate) struct FetchStats {
            $($name: AtomicU64,)*
        }

        /// The fetch counters at one moment.
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
        pub struct StatsSnapshot {
            $($(#[$doc])* pub $name: u64,)*
        }

        impl FetchStats {
            pub(crate) fn snapshot(&self) -> StatsSnapshot {
                StatsSnapshot {
                    $($name: self.$name.load(Ordering::Relaxed),)*
                }
            }
        }
    };
}

stats! {
    /// Attempts started, against any upstream (retries included).
    requests,
    /// Attempts that were followed by another one.
    retries,
    /// Body bytes received, including those of attempts that later failed.
    bytes_received,
    /// HTTP responses by status class.
    responses_2xx,
    responses_3xx,
    responses_4xx,
    responses_5xx,
    /// 429 Too Many Requests responses (also counted in `responses_4xx`).
    too_many_requests,
    /// Upstreams that answered 404/410 or had no such file.
    not_found,
    /// Attempts that ended in an idle timeout, a header deadline or a body
    /// slower than the minimum throughput.
    timeouts,
    /// Attempts that ended in a connection or protocol error.
    transport_errors,
    /// Attempts whose body ended before `Content-Length`.
    truncated,
    /// Attempts that waited for a host's hold-off (after a 429 or `Retry-After`).
    held_off,
    /// Attempts that waited for the rate cap.
    rate_limited,
}

impl FetchStats {
    /// An attempt is starting.
    pub(crate) fn record_request(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// An attempt failed and another one follows.
    pub(crate) fn record_retry(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }

    /// An upstream answered 404/410 or had no such file.
    pub(crate) fn record_not_found(&self) {
        self.not_found.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_bytes(&self, n: usize) {
        self.bytes_received.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub(crate) fn record_status(&self, status: StatusCode) {
        let class = match status.as_u16() {
            200..=299 => &self.responses_2xx,
            300..=399 => &self.responses_3xx,
            400..=499 => &self.responses_4xx,
            500..=599 => &self.responses_5xx,
            _ => return,
        };
        class.fetch_add(1, Ordering::Relaxed);
        if status == StatusCode::TOO_MANY_REQUESTS {
            self.too_many_requests.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_wait(&self, waited: Waited) {
        if waited.held {
            self.held_off.fetch_add(1, Ordering::Relaxed);
        }
        if waited.limited {
            self.rate_limited.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn record_failure(&self, error: &FetchError) {
        let counter = match error {
            FetchError::Timeout { .. }
            | FetchError::HeaderTimeout { .. }
            | FetchError::TooSlow { .. } => &self.timeouts,
            FetchError::Transport { .. } => &self.transport_errors,
            FetchError::Truncated { .. } => &self.truncated,
            _ => return,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// One upstream's requests and failures in a run. See: #13.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct UpstreamHealth {
    /// The base URL, password redacted.
    pub upstream: String,
    /// Attempts made against it (retries included).
    pub requests: u64,
    /// Requests that failed after their retries (404/410 are answers, not failures).
    pub errors: u64,
    /// When the last failure happened, RFC 3339, and its message.
    pub last_failure_at: Option<String>,
    pub last_failure: Option<String>,
}

/// Per-upstream health, keyed by base URL.
#[derive(Debug, Default)]
pub(crate) struct HealthTable {
    /// Held only to update or copy one entry, never across an await.
    by_base: std::sync::Mutex<std::collections::BTreeMap<String, UpstreamHealth>>,
}

impl HealthTable {
    fn with(&self, base: &str, f: impl FnOnce(&mut UpstreamHealth)) {
        let mut map = self.by_base.lock().unwrap_or_else(|p| p.into_inner());
        let entry = map
            .entry(base.to_owned())
            .or_insert_with(|| UpstreamHealth {
                upstream: base.to_owned(),
                ..UpstreamHealth::default()
            });
        f(entry);
    }

    pub(crate) fn record_request(&self, base: &str) {
        self.with(base, |h| h.requests += 1);
    }

    pub(crate) fn record_error(&self, base: &str, error: &FetchError) {
        let at = time::OffsetDateTime::now_utc()
            .replace_nanosecond(0)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            });
        self.with(base, |h| {
            h.errors += 1;
            h.last_failure_at = at;
            h.last_failure = Some(crate::error::chain(error));
        });
    }

    pub(crate) fn snapshot(&self) -> Vec<UpstreamHealth> {
        let map = self.by_base.lock().unwrap_or_else(|p| p.into_inner());
        map.values().cloned().collect()
    }
}
