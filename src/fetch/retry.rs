//! Retry arithmetic: how long to wait before the next attempt. The one
//! place it is written (STYLE.md §3, §8); `client.rs` decides *whether* to
//! retry and does the waiting.
//!
//! - Backoff: full jitter, uniform in `[0, min(backoff_max, backoff_base ·
//!   2^(attempt-1))]`.
//!   See: https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
//! - `Retry-After` (RFC 9110 §10.2.3): delta-seconds or an IMF-fixdate
//!   HTTP-date, capped at [`RETRY_AFTER_MAX`]; it replaces the backoff.

use std::time::Duration;

use rand::Rng;
use reqwest::header::{HeaderMap, RETRY_AFTER};
use time::{OffsetDateTime, PrimitiveDateTime};

/// The longest `Retry-After` we honour. Longer asks are cut to this: the wait is
/// cancellable and holds no permit, but an upstream answering "come back tomorrow"
/// should cost a few attempts, not stall the run for a day.
pub(crate) const RETRY_AFTER_MAX: Duration = Duration::from_secs(5 * 60);

/// Backoff settings of one client: `[fetch] backoff_base` and `backoff_max`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    /// The ceiling of the first retry's wait; doubles per attempt.
    pub base: Duration,
    /// The ceiling never exceeds this.
    pub max: Duration,
}

impl Backoff {
    /// The wait before retry number `attempt` (1-based) when the server
    /// named none.
    pub(crate) fn delay(&self, attempt: u32) -> Duration {
        full_jitter(backoff_ceiling(self.base, self.max, attempt))
    }
}

/// The backoff ceiling before retry number `attempt` (1-based):
/// `min(max, base · 2^(attempt-1))`, saturating.
fn backoff_ceiling(base: Duration, max: Duration, attempt: u32) -> Duration {
    let factor = 2u32
        .checked_pow(attempt.saturating_sub(1))
        .unwrap_or(u32::MAX);
    base.checked_mul(factor).unwrap_or(Duration::MAX).min(max)
}

/// Full jitter: uniform in `[0, ceiling]`.
// See: https://aws.amazon.com/blogs/architecture/exponential-backoff-and-jitter/
fn full_jitter(ceiling: Duration) -> Duration {
    let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
    Duration::from_nanos(rand::rng().random_range(0..=nanos))
}

/// The `Retry-After` delay in `headers`, capped at [`RETRY_AFTER_MAX`]; `None` if
/// absent or unparsable (the caller then uses backoff).
pub(crate) fn retry_after(headers: &HeaderMap, now: OffsetDateTime) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, now).map(|d| d.min(RETRY_AFTER_MAX))
}

/// Parses a `Retry-After` value: delta-seconds or an IMF-fixdate HTTP-date
/// (RFC 9110 §10.2.3, §5.6.7). A date in the past means no wait. The obsolete
/// RFC 850 and asctime date forms are not accepted.
fn parse_retry_after(value: &str, now: OffsetDateTime) -> Option<Duration> {
    const IMF_FIXDATE: &[time::format_description::BorrowedFormatItem<'_>] = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Too many digits to fit is still "a very long time".
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let when = PrimitiveDateTime::parse(value, IMF_FIXDATE)
        .ok()?
        .assume_utc();
    Some(Duration::try_from(when - now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn parse_retry_after_table() {
        let now = datetime!(1994-11-06 08:49:30 UTC);
        let secs = |n| Some(Duration::from_secs(n));
        let cases = [
            ("5", secs(5)),
            ("0", secs(0)),
            (" 7 ", secs(7)),
            ("120", secs(120)),
            ("99999999999999999999999", secs(u64::MAX)),
            ("Sun, 06 Nov 1994 08:49:37 GMT", secs(7)),
            ("Sun, 06 Nov 1994 09:49:30 GMT", secs(3600)),
            ("Sun, 06 Nov 1994 08:49:00 GMT", secs(0)), // in the past: no wait
            ("Sunday, 06-Nov-94 08:49:37 GMT", None),   // RFC 850: obsolete
            ("Sun Nov  6 08:49:37 1994", None),         // asctime: obsolete
            ("Sun, 06 Nov 1994 08:49:37 +0000", None),
            ("", None),
            ("-1", None),
            ("+5", None),
            ("1.5", None),
            ("soon", None),
        ];
        for (value, want) in cases {
            assert_eq!(parse_retry_after(value, now), want, "{value:?}");
        }
    }

    #[test]
    fn retry_after_header_is_capped() {
        let now = OffsetDateTime::now_utc();
        let cases = [
            (Some("3"), Some(Duration::from_secs(3))),
            (Some("86400"), Some(RETRY_AFTER_MAX)),
            (Some("garbage"), None),
            (None, None),
        ];
        for (value, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(v) = value {
                headers.insert(RETRY_AFTER, v.parse().expect("header value"));
            }
            assert_eq!(retry_after(&headers, now), want, "{value:?}");
        }
    }

    #[test]
    fn backoff_ceiling_table() {
        let ms = Duration::from_millis;
        // (base, max, attempt, ceiling)
        let cases = [
            (ms(100), ms(1000), 1, ms(100)),
            (ms(100), ms(1000), 2, ms(200)),
            (ms(100), ms(1000), 3, ms(400)),
            (ms(100), ms(1000), 4, ms(800)),
            (ms(100), ms(1000), 5, ms(1000)),
            (ms(100), ms(1000), 40, ms(1000)),
            (ms(100), ms(1000), u32::MAX, ms(1000)),
            (ms(0), ms(1000), 3, ms(0)),
            (ms(500), ms(100), 1, ms(100)),
            (Duration::MAX, Duration::MAX, 3, Duration::MAX),
        ];
        for (base, max, attempt, want) in cases {
            assert_eq!(
                backoff_ceiling(base, max, attempt),
                want,
                "{base:?} {max:?} {attempt}"
            );
        }
    }

    #[test]
    fn full_jitter_stays_within_ceiling() {
        for ceiling in [
            Duration::ZERO,
            Duration::from_nanos(1),
            Duration::from_millis(100),
            Duration::MAX,
        ] {
            for _ in 0..1000 {
                assert!(full_jitter(ceiling) <= ceiling, "{ceiling:?}");
            }
        }
        let ceiling = Duration::from_millis(100);
        let samples: Vec<_> = (0..1000).map(|_| full_jitter(ceiling)).collect();
        assert!(
            samples.iter().any(|d| *d < ceiling / 2),
            "full jitter reaches the lower half"
        );
        assert!(
            samples.iter().any(|d| *d > ceiling / 2),
            "full jitter reaches the upper half"
        );
    }
}
