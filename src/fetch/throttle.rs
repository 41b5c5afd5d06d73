//! Throttle: when the next upstream request may start, for the whole run.
//!
//! Two limits, shared by every [`Client`](super::Client) cloned or derived
//! from one another (watchlist listings, version files, feed pages):
//! - **Hold-offs per host.** A 429 (or a 503 with `Retry-After`) holds back
//!   every new request to that scheme://host:port until the wait is over,
//!   whichever upstream entry or job it belongs to: one rate-limit answer
//!   slows the whole run against that server, instead of each task finding
//!   out alone (PROTOCOL.md: honour 429 and `Retry-After`).
//! - **A rate cap** (`[fetch] requests_per_second`): request starts are
//!   spaced at least 1/rate apart, across all hosts (a virtual scheduling
//!   clock, GCRA, with a burst of one).

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::FetchError;

/// What a request waited for before it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Waited {
    /// A hold-off of its host.
    pub held: bool,
    /// The rate cap.
    pub limited: bool,
}

#[derive(Debug, Default)]
pub(crate) struct Throttle {
    /// Host → no request to it starts before this instant. std Mutex: only
    /// read or raised, never held across an await.
    holds: Mutex<HashMap<String, Instant>>,
    rate: Option<Rate>,
}

#[derive(Debug)]
struct Rate {
    interval: Duration,
    /// The earliest start of the next request. std Mutex as above.
    next: Mutex<Option<Instant>>,
}

impl Throttle {
    /// `requests_per_second`: `None` or 0 for no cap.
    pub(crate) fn new(requests_per_second: Option<u32>) -> Throttle {
        let rate = requests_per_second.filter(|&n| n > 0).map(|n| Rate {
            interval: Duration::from_secs(1) / n,
            next: Mutex::new(None),
        });
        Throttle {
            holds: Mutex::default(),
            rate,
        }
    }

    /// Holds back every request to `host` for `delay` from now. A shorter
    /// ask never shortens a hold already in place.
    pub(crate) fn hold_off(&self, host: &str, delay: Duration) {
        let Some(until) = Instant::now().checked_add(delay) else {
            return;
        };
        let mut holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        let at = holds.entry(host.to_owned()).or_insert(until);
        *at = (*at).max(until);
    }

    #[cfg(test)]
    pub(crate) fn held_until(&self, host: &str) -> Option<Instant> {
        let holds = self.holds.lock().unwrap_or_else(PoisonError::into_inner);
        holds.get(host).copied()
    }

    /// Waits until a request to `host` (`None`: a local directory, never
    /// held or capped) may start.
    pub(crate) async fn wait_turn(
        &self,
        host: Option<&str>,
        token: &CancellationToken,
    ) -> Result<Waited, FetchError> {
        let Some(host) = host else {
            return Ok(Waited::default());
        };
        let mut waited = Waited::default();
        let hold = self
            .holds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(host)
            .copied();
        if let Some(at) = hold.filter(|&at| at > Instant::now()) {
            cancellable(tokio::time::sleep_until(at), token).await?;
            waited.held = true;
        }
        if let Some(rate) = &self.rate {
            let now = Instant::now();
            let slot = rate.reserve(now);
            if slot > now {
                cancellable(tokio::time::sleep_until(slot), token).await?;
                waited.limited = true;
            }
        }
        Ok(waited)
    }
}

impl Rate {
    /// The start time of one more request asked for at `now`.
    fn reserve(&self, now: Instant) -> Instant {
        let mut next = self.next.lock().unwrap_or_else(PoisonError::into_inner);
        let slot = next.map_or(now, |n| n.max(now));
        *next = Some(slot + self.interval);
        slot
    }
}

/// Waits for `sleep`, or fails with `Cancelled` as soon as `token` fires:
/// every wait of the fetch stage, hold-offs, rate cap and retry backoff.
pub(crate) async fn cancellable(
    sleep: tokio::time::Sleep,
    token: &CancellationToken,
) -> Result<(), FetchError> {
    tokio::select! {
        biased;
        () = token.cancelled() => Err(FetchError::Cancelled),
        () = sleep => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rate_cap_spaces_request_starts() {
        let t = Throttle::new(Some(10));
        let token = CancellationToken::new();
        let start = Instant::now();
        let mut limited = 0;
        for _ in 0..5 {
            limited += usize::from(t.wait_turn(Some("h"), &token).await.unwrap().limited);
        }
        // Five starts 100 ms apart: the first at once, four capped.
        assert_eq!(limited, 4);
        assert_eq!(start.elapsed(), Duration::from_millis(400));
        // After a quiet second, the next start is not held back.
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            t.wait_turn(Some("other"), &token).await.unwrap(),
            Waited::default()
        );
        // A local directory is never capped.
        let dir = Throttle::new(Some(1));
        for _ in 0..3 {
            assert_eq!(
                dir.wait_turn(None, &token).await.unwrap(),
                Waited::default()
            );
        }
    }

    #[tokio::test(start_paused = true)]
    async fn hold_off_covers_every_request_to_the_host() {
        let t = Throttle::new(None);
        let token = CancellationToken::new();
        let start = Instant::now();
        t.hold_off("https://proxy.example", Duration::from_secs(10));
        t.hold_off("https://proxy.example", Duration::from_secs(2)); // does not shorten it
        let other = t
            .wait_turn(Some("https://index.example"), &token)
            .await
            .unwrap();
        assert_eq!(
            (other, start.elapsed()),
            (Waited::default(), Duration::ZERO)
        );
        let held = t
            .wait_turn(Some("https://proxy.example"), &token)
            .await
            .unwrap();
        assert!(held.held);
        assert_eq!(start.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn waits_end_on_cancellation() {
        let t = Throttle::new(None);
        let token = CancellationToken::new();
        t.hold_off("h", Duration::from_secs(60));
        token.cancel();
        let err = t.wait_turn(Some("h"), &token).await.unwrap_err();
        assert!(err.is_cancelled());
    }
}
