//! The index.golang.org feed: pages of new module versions, and the cursor
//! that walks them without losing or repeating an entry. Pure: `sync`
//! fetches the pages.
//!
//! Input: a page body, `GET <index>/index?since=<RFC3339Nano>&limit=<n>`:
//! newline-delimited JSON `{"Path","Version","Timestamp"}` in timestamp
//! order (PROTOCOL.md "index.golang.org"). Output: a [`Page`] of checked
//! [`ModVer`]s, the entries refused (as [`Rejected`], with the reason), and
//! the [`Cursor`] moved past the page.
//!
//! - `since` is inclusive. The cursor keeps the newest Timestamp at full
//!   precision and the raw `(Path, Version)` of every entry carrying it; the
//!   next page repeats those and they are skipped. Entries older than
//!   `since` (the index went backwards) are dropped and counted as
//!   [`Page::backwards`], so the caller can report them.
//! - New entries at exactly the `since` asked with ([`Page::new_at_since`])
//!   were held back from the page before: if that page was short, the
//!   index caps its pages below the limit asked.
//! - A page can end inside a run of equal Timestamps, and a full page can
//!   hold nothing but entries already seen (more entries share one Timestamp
//!   than a page holds). Such a page makes no progress (the cursor did not
//!   move): [`Page::progressed`] is false and the caller must ask for a
//!   bigger page, never skip ahead.
//! - A Timestamp more than [`FUTURE_SLACK`] ahead of the reader's clock is
//!   refused and does not move the cursor: one bad entry must not carry the
//!   cursor past every real one to come.
//! - Every entry is hostile until [`ModVer::parse`] accepts it (x/mod
//!   `module.Check` plus canonical versions and file-name limits): `..`,
//!   absolute paths, NUL, bad versions and over-long names are refused with
//!   Go's reason. A line longer than [`MAX_LINE`] or not JSON is refused
//!   whole. A refused entry with a valid Timestamp still moves the cursor,
//!   so it is refused once, not on every run.

use std::collections::HashSet;

use serde::Deserialize;
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

use super::Rejected;
use crate::module::ModVer;

/// The most entries the index serves per page, and its default.
pub const MAX_PAGE: usize = 2000;

/// The longest feed line read. A real entry is a path (Go allows no more
/// than a few hundred bytes in practice), a version and a timestamp.
pub const MAX_LINE: usize = 4096;

/// How far ahead of our clock a Timestamp may be (clock skew).
pub const FUTURE_SLACK: time::Duration = time::Duration::hours(24);

/// The first entry of index.golang.org; nothing is older.
pub const FEED_START: &str = "2019-04-10T19:08:52.997264Z";

/// An entry that passed Go's rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedEntry {
    pub mv: ModVer,
    pub timestamp: OffsetDateTime,
}

/// Where the feed resumes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cursor {
    since: OffsetDateTime,
    /// Raw `(Path, Version)` of the entries seen whose Timestamp is `since`.
    seen: HashSet<(String, String)>,
}

/// One page read against a cursor.
#[derive(Debug, Default)]
pub struct Page {
    /// New entries that passed Go's rules, in feed order.
    pub entries: Vec<FeedEntry>,
    /// New entries refused, with the reason.
    pub rejected: Vec<Rejected>,
    /// Non-empty lines in the body: a page of `limit` lines may have more behind it.
    pub lines: usize,
    /// Lines skipped as already seen at `since`.
    pub repeated: usize,
    /// Lines dropped because their Timestamp is older than the cursor (the
    /// index went backwards); the first of them, for the log.
    pub backwards: usize,
    pub first_backwards: Option<Rejected>,
    /// New lines whose Timestamp equals the `since` the page was asked
    /// with: entries the index held back from the page before.
    pub new_at_since: usize,
    /// Whether the cursor moved: a later `since`, or more entries seen at it.
    advanced: bool,
    /// The newest Timestamp on the page.
    pub newest: Option<OffsetDateTime>,
}

impl Page {
    /// Whether the page held anything not seen before. A full page that did
    /// not progress must be asked for again with a bigger limit.
    pub fn progressed(&self) -> bool {
        self.advanced
    }
}

#[derive(Deserialize)]
struct Line {
    #[serde(rename = "Path")]
    path: String,
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "Timestamp")]
    timestamp: String,
}

impl Cursor {
    /// A cursor before the first entry at or after `since`.
    pub fn start(since: OffsetDateTime) -> Cursor {
        Cursor {
            since: since.to_offset(UtcOffset::UTC),
            seen: HashSet::new(),
        }
    }

    /// The cursor a run left: its `since` as sent, and the entries seen at
    /// it; `Err` if the timestamp does not parse.
    pub fn resume(
        since: &str,
        seen: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Cursor, String> {
        Ok(Cursor {
            since: parse_timestamp(since)?,
            seen: seen.into_iter().collect(),
        })
    }

    /// The entries seen at `since`, sorted, for storing.
    pub fn seen(&self) -> Vec<(String, String)> {
        let mut seen: Vec<_> = self.seen.iter().cloned().collect();
        seen.sort();
        seen
    }

    pub fn since(&self) -> OffsetDateTime {
        self.since
    }

    /// The query of the next request: `since` at full precision, and `limit`.
    pub fn query(&self, limit: usize) -> [(&'static str, String); 2] {
        [
            ("since", format_timestamp(self.since)),
            ("limit", limit.to_string()),
        ]
    }

    /// Reads one page body and moves the cursor past it. `now` is the
    /// reader's clock, for refusing Timestamps from the future.
    pub fn read_page(&mut self, body: &[u8], now: OffsetDateTime) -> Page {
        let before = (self.since, self.seen.len());
        let latest = now + FUTURE_SLACK;
        let mut page = Page::default();
        for raw in body.split(|&b| b == b'\n') {
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            if raw.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            page.lines += 1;
            self.read_line(raw, (before.0, latest), &mut page);
        }
        page.advanced = (self.since, self.seen.len()) != before;
        page
    }

    fn read_line(
        &mut self,
        raw: &[u8],
        (asked, latest): (OffsetDateTime, OffsetDateTime),
        page: &mut Page,
    ) {
        let line = match parse_line(raw) {
            Ok(line) => line,
            Err(reason) => {
                page.rejected.push(Rejected {
                    module: "index".into(),
                    version: shorten(&String::from_utf8_lossy(raw)),
                    reason,
                });
                return;
            }
        };
        let reject = |reason: String| Rejected {
            module: shorten(&line.path),
            version: shorten(&line.version),
            reason,
        };
        let timestamp = match parse_timestamp(&line.timestamp) {
            Ok(t) if t > latest => {
                let reason = format!("Timestamp {} is in the future", shorten(&line.timestamp));
                return page.rejected.push(reject(reason));
            }
            Ok(t) => t,
            Err(reason) => return page.rejected.push(reject(reason)),
        };
        let key = (line.path.clone(), line.version.clone());
        if timestamp < self.since {
            // See: #13: counted and reported, not taken for a repeat.
            page.backwards += 1;
            if page.first_backwards.is_none() {
                let reason = format!(
                    "Timestamp {} is older than the cursor {}",
                    shorten(&line.timestamp),
                    format_timestamp(self.since)
                );
                page.first_backwards = Some(reject(reason));
            }
            return;
        }
        if timestamp == self.since && self.seen.contains(&key) {
            page.repeated += 1;
            return;
        }
        if timestamp == asked {
            page.new_at_since += 1;
        }
        if timestamp > self.since {
            self.since = timestamp;
            self.seen.clear();
        }
        self.seen.insert(key);
        page.newest = page.newest.max(Some(timestamp));
        match ModVer::parse(&line.path, &line.version) {
            Ok(mv) => page.entries.push(FeedEntry { mv, timestamp }),
            Err(e) => page.rejected.push(reject(e.to_string())),
        }
    }
}

fn parse_line(raw: &[u8]) -> Result<Line, String> {
    if raw.len() > MAX_LINE {
        return Err(format!(
            "feed line of {} bytes is longer than {MAX_LINE}",
            raw.len()
        ));
    }
    serde_json::from_slice(raw).map_err(|e| format!("malformed feed line: {e}"))
}

/// Parses a feed Timestamp (RFC 3339, any precision) as UTC.
pub fn parse_timestamp(s: &str) -> Result<OffsetDateTime, String> {
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| t.to_offset(UtcOffset::UTC))
        .map_err(|e| format!("invalid Timestamp {:?}: {e}", shorten(s)))
}

/// Go's time.RFC3339Nano in UTC: `2019-04-10T19:08:52.997264Z`, trailing
/// zeros of the fraction dropped, nothing lost.
pub fn format_timestamp(t: OffsetDateTime) -> String {
    let t = t.to_offset(UtcOffset::UTC);
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    if t.nanosecond() != 0 {
        let frac = format!("{:09}", t.nanosecond());
        out.push('.');
        out.push_str(frac.trim_end_matches('0'));
    }
    out.push('Z');
    out
}

/// A hostile string cut to a length fit for logs and state.
fn shorten(s: &str) -> String {
    const KEEP: usize = 200;
    match s.char_indices().nth(KEEP) {
        Some((cut, _)) => format!("{}…", &s[..cut]),
        None => s.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn line(path: &str, version: &str, ts: &str) -> String {
        let entry = serde_json::json!({"Path": path, "Version": version, "Timestamp": ts});
        format!("{entry}\n")
    }

    fn now() -> OffsetDateTime {
        datetime!(2024-06-01 00:00 UTC)
    }

    fn names(page: &Page) -> Vec<String> {
        page.entries.iter().map(|e| e.mv.to_string()).collect()
    }

    #[test]
    fn timestamps_keep_full_precision() {
        // (feed text, as we send it back)
        let cases = [
            ("2019-04-10T19:08:52.997264Z", "2019-04-10T19:08:52.997264Z"),
            (
                "2019-04-10T19:08:52.000000001Z",
                "2019-04-10T19:08:52.000000001Z",
            ),
            ("2019-04-10T19:08:52Z", "2019-04-10T19:08:52Z"),
            ("2019-04-10T19:08:52.100Z", "2019-04-10T19:08:52.1Z"),
            ("2019-04-10T21:08:52.5+02:00", "2019-04-10T19:08:52.5Z"),
        ];
        for (given, want) in cases {
            let t = parse_timestamp(given).unwrap();
            assert_eq!(format_timestamp(t), want, "{given}");
        }
        assert!(parse_timestamp("yesterday").is_err());
        assert!(parse_timestamp("2019-04-10T19:08:52").is_err());
    }

    // See: #6 (since is inclusive).
    #[test]
    fn since_is_inclusive_and_repeats_are_skipped() {
        let t1 = "2024-01-01T00:00:00.000000001Z";
        let t2 = "2024-01-01T00:00:00.000000002Z";
        let mut c = Cursor::start(datetime!(2024-01-01 00:00 UTC));
        let first = line("a.example/m", "v1.0.0", t1) + &line("b.example/m", "v1.0.0", t2);
        let page = c.read_page(first.as_bytes(), now());
        assert_eq!(names(&page), ["a.example/m@v1.0.0", "b.example/m@v1.0.0"]);
        assert_eq!(c.query(2000)[0].1, t2);
        // The server repeats the entry at `since`, then a new one at the same instant.
        let second = line("b.example/m", "v1.0.0", t2) + &line("c.example/m", "v1.0.0", t2);
        let page = c.read_page(second.as_bytes(), now());
        assert_eq!(names(&page), ["c.example/m@v1.0.0"]);
        assert_eq!((page.lines, page.repeated), (2, 1));
        assert!(page.progressed());
        // Both are now behind the cursor.
        let page = c.read_page(second.as_bytes(), now());
        assert!(page.entries.is_empty() && !page.progressed());
        // It survives a round trip through state.
        let since = format_timestamp(c.since());
        assert_eq!(Cursor::resume(&since, c.seen()).unwrap(), c);
        assert_eq!(c.seen().len(), 2);
    }

    #[test]
    fn older_than_since_is_skipped() {
        let mut c = Cursor::start(datetime!(2024-01-02 00:00 UTC));
        let body = line("a.example/m", "v1.0.0", "2024-01-01T00:00:00Z");
        let page = c.read_page(body.as_bytes(), now());
        assert!(page.entries.is_empty());
        assert_eq!((page.repeated, page.backwards), (0, 1));
        let first = page.first_backwards.expect("the first is kept");
        assert_eq!(
            first.reason,
            "Timestamp 2024-01-01T00:00:00Z is older than the cursor 2024-01-02T00:00:00Z"
        );
        assert_eq!(c.since(), datetime!(2024-01-02 00:00 UTC));
    }

    #[test]
    fn hostile_entries_are_refused_with_the_reason() {
        let ts = "2024-01-01T00:00:00Z";
        let long = format!("example.com/{}", "a".repeat(300));
        // (path, version, part of the reason)
        let cases = [
            ("../../etc/passwd", "v1.0.0", "malformed module path"),
            ("/etc/passwd", "v1.0.0", "malformed module path"),
            ("example.com/a/../b", "v1.0.0", "malformed module path"),
            ("example.com/nul\u{0}", "v1.0.0", "malformed module path"),
            ("example.com/m", "v1.0.0/../../x", "invalid version"),
            ("example.com/m", "v1.0", "not canonical"),
            ("example.com/m", "latest", "not a semantic version"),
            ("example.com/m", "v2.0.0", "should be v0 or v1"),
            (long.as_str(), "v1.0.0", "longer than the 255"),
        ];
        let body: String = cases.iter().map(|(p, v, _)| line(p, v, ts)).collect();
        let mut c = Cursor::start(datetime!(2024-01-01 00:00 UTC));
        let page = c.read_page(body.as_bytes(), now());
        assert!(page.entries.is_empty(), "{:?}", names(&page));
        assert_eq!(page.rejected.len(), cases.len());
        for (r, (p, _, want)) in page.rejected.iter().zip(cases) {
            assert!(r.reason.contains(want), "{p:?}: {}", r.reason);
        }
        // Refused entries still move the cursor: they are refused once.
        assert_eq!(c.read_page(body.as_bytes(), now()).rejected.len(), 0);

        let junk = format!(
            "not json\n{{\"Path\":\"example.com/m\"}}\n{}\n{}{}",
            "x".repeat(MAX_LINE + 1),
            line("example.com/m", "v1.0.0", "soon"),
            line("example.com/m", "v1.0.0", "2024-06-02T00:00:01Z"),
        );
        let since = c.since();
        let page = c.read_page(junk.as_bytes(), now());
        let reasons: Vec<&str> = page.rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(reasons.len(), 5, "{reasons:?}");
        assert!(reasons[4].contains("is in the future"), "{reasons:?}");
        // None of them moves the cursor: a page of them makes no progress.
        assert_eq!(c.since(), since);
        assert!(!page.progressed());
        assert!(reasons[0].starts_with("malformed feed line"), "{reasons:?}");
        assert!(
            reasons[1].contains("missing field `Version`"),
            "{reasons:?}"
        );
        assert!(reasons[2].contains("longer than 4096"), "{reasons:?}");
        assert!(
            reasons[3].starts_with("invalid Timestamp \"soon\""),
            "{reasons:?}"
        );
        assert!(page.rejected[2].version.chars().count() <= 201);
    }

    #[test]
    fn a_full_page_of_seen_entries_makes_no_progress() {
        let ts = "2024-01-01T00:00:00Z";
        let body: String = (0..3)
            .map(|i| line(&format!("example.com/m{i}"), "v1.0.0", ts))
            .collect();
        let mut c = Cursor::start(datetime!(2024-01-01 00:00 UTC));
        assert_eq!(c.read_page(body.as_bytes(), now()).entries.len(), 3);
        let again = c.read_page(body.as_bytes(), now());
        assert!(!again.progressed());
        assert_eq!(again.lines, 3);
    }
}
