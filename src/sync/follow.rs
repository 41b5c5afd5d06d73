//! Following the index feed within a run: read pages from the cursor on,
//! decide each entry with the rules, and record each page's selected
//! versions as `pending` in the same transaction that moves the cursor
//! (`state::Store::record_feed_page`), so the cursor never runs ahead of the
//! work it planned.
//!
//! Paging reads on until a page brings nothing new (a sync with nothing
//! new makes exactly one request), or `[feed] max_pages`, cancellation or
//! an error stops it. A short page is not taken for the end: an index may
//! cap its pages below the limit asked. A failed page request is a plan
//! error (exit 1): the cursor stays, the next run asks again, and the rest
//! of the run goes on. A full page holding only entries already seen (more
//! entries share one Timestamp than a page holds) is asked for again with
//! twice the limit.
//!
//! The index cannot move past a Timestamp when a page that brings nothing
//! new holds as many entries as the index serves per page: 2000 (PROTOCOL.md
//! "index.golang.org"), or less when the index was seen to cap pages (a
//! short page followed by new entries at its last Timestamp; kept in state
//! as the cursor's `page_cap`). The run then fails naming the Timestamp (a
//! plan error; the cursor stays) instead of looping, skipping, or saying
//! "0 new entries" on every later run. See: #13.
//!
//! Entries older than the cursor (the index went backwards) are dropped,
//! counted in the report and in state, and logged.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use super::{chain, Ctx, PlanError, PlanSource, SyncError, Tally};
use crate::config::{FeedSettings, FeedStart};
use crate::fetch::Client;
use crate::module::{ModVer, ModulePath};
use crate::plan::feed::{format_timestamp, parse_timestamp, Cursor, Page, MAX_LINE, MAX_PAGE};
use crate::plan::rules::{Decision, Known};
use crate::state::{FeedCursor, PageRecord, RejectedEntry};

/// The largest body read for a page of `limit` entries: each at most
/// [`MAX_LINE`] bytes and its newline (a longer line is refused anyway).
fn max_page_bytes(limit: usize) -> u64 {
    (limit as u64).saturating_mul(MAX_LINE as u64 + 1)
}

/// How far a stuck page's limit may grow, as a multiple of `page_size`.
const MAX_GROWTH: usize = 64;

/// What following the feed did in one run.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FeedReport {
    /// Feed requests made.
    pub pages: u64,
    /// Entries not seen before.
    pub entries: u64,
    /// Versions newly made pending.
    pub planned: u64,
    /// Entries refused by Go's rules.
    pub rejected: u64,
    /// Entries dropped because their Timestamp was older than the cursor.
    pub backwards: u64,
    /// The most entries the index serves per page, if it was seen to cap
    /// pages below the limit asked.
    pub page_cap: Option<u64>,
    /// The Timestamp the index could not move past, if it could not.
    pub stuck_at: Option<String>,
    /// Entries per decision of the rules (`included`, `watched`, `fresh`,
    /// `excluded`, `pseudo`, `unmatched`).
    pub decisions: BTreeMap<String, u64>,
    /// The cursor after the run.
    pub since: String,
    /// The newest entry Timestamp seen so far (feed lag = now − newest).
    pub newest: Option<String>,
    /// Whether the feed was read to its end (false: `max_pages`, an error,
    /// or cancellation stopped it; the next run continues).
    pub exhausted: bool,
}

/// The feed's contribution to the plan.
#[derive(Default)]
pub(super) struct Followed {
    /// Versions made pending by this run's pages.
    pub planned: Vec<ModVer>,
    /// Modules the feed named, whatever the rules decided.
    pub mentioned: HashSet<ModulePath>,
    pub report: FeedReport,
}

/// Reads the feed from the stored cursor on. Only state failures stop the
/// run; a feed that cannot be read is a plan error.
pub(super) async fn follow(
    ctx: &Ctx,
    feed: &FeedSettings,
    index: &Client,
    watched: &HashSet<ModulePath>,
    tally: &mut Tally,
) -> Result<Followed, SyncError> {
    let mut out = Followed::default();
    let stored = ctx.store.feed_cursor().await?;
    let mut cursor = match start_cursor(feed, stored.as_ref()) {
        Ok(c) => c,
        Err(e) => {
            tally.plan_errors.push(PlanError::new(PlanSource::Feed, e));
            return Ok(out);
        }
    };
    let mut newest = stored
        .as_ref()
        .and_then(|s| s.newest.as_deref())
        .and_then(|n| parse_timestamp(n).ok());
    let mut paging = Paging {
        limit: feed.page_size,
        page_size: feed.page_size,
        cap: stored.as_ref().and_then(|s| s.page_cap),
        short: None,
    };
    while out.report.pages < feed.max_pages as u64 && !ctx.stop.is_cancelled() {
        out.report.pages += 1;
        let body = match fetch_page(ctx, index, &cursor, paging.limit).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(e) => {
                tally.plan_errors.push(PlanError::new(PlanSource::Feed, e));
                break;
            }
        };
        let page = cursor.read_page(&body, OffsetDateTime::now_utc());
        note_backwards(&page, &mut out.report);
        match paging.next(&page) {
            Step::Grow => paging.limit *= 2,
            Step::Stuck => {
                out.report.stuck_at = Some(format_timestamp(cursor.since()));
                let e = stuck_message(&cursor, &page, paging.limit);
                tally.plan_errors.push(PlanError::new(PlanSource::Feed, e));
                break;
            }
            Step::End => {
                out.report.exhausted = true;
                break;
            }
            Step::Next => {
                newest = newest.max(page.newest);
                let after = FeedCursor {
                    since: format_timestamp(cursor.since()),
                    seen: cursor.seen(),
                    newest: newest.map(format_timestamp),
                    page_cap: paging.cap,
                    backwards: 0,
                };
                record(ctx, feed, watched, page, after, tally, &mut out).await?;
                paging.limit = feed.page_size;
            }
        }
    }
    out.report.page_cap = paging.cap;
    if out.report.backwards > 0 {
        ctx.store.add_feed_backwards(out.report.backwards).await?;
    }
    out.report.since = format_timestamp(cursor.since());
    out.report.newest = newest.map(format_timestamp);
    info!(
        pages = out.report.pages,
        entries = out.report.entries,
        planned = out.report.planned,
        rejected = out.report.rejected,
        backwards = out.report.backwards,
        since = %out.report.since,
        "feed read"
    );
    Ok(out)
}

/// One feed request from `cursor`; `None` when the run is cancelled.
async fn fetch_page(
    ctx: &Ctx,
    index: &Client,
    cursor: &Cursor,
    limit: usize,
) -> Result<Option<bytes::Bytes>, String> {
    let query = cursor.query(limit);
    debug!(since = %query[0].1, limit, "feed page");
    match index
        .get_query("index", &query, max_page_bytes(limit), &ctx.stop)
        .await
    {
        Ok(body) => Ok(Some(body)),
        Err(e) if e.is_cancelled() => Ok(None),
        Err(e) => Err(format!("index feed: {}", chain(&e))),
    }
}

/// What follows a page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// It brought something new: record it and ask for the next page.
    Next,
    /// It brought nothing new: the feed has nothing more.
    End,
    /// It was full and moved nothing: ask again with twice the limit.
    Grow,
    /// It cannot move the cursor and the index cannot give more.
    Stuck,
}

/// How the pages of one run are asked for.
struct Paging {
    /// The limit of the next request.
    limit: usize,
    page_size: usize,
    /// The most entries the index serves per page, if it was seen to cap
    /// pages below the limit asked; `None`: its documented 2000.
    cap: Option<u64>,
    /// The line count of the page before, if it was short and progressed.
    short: Option<usize>,
}

impl Paging {
    /// Decides what follows `page`, learning the index's page cap on the way.
    fn next(&mut self, page: &Page) -> Step {
        if let (Some(lines), true) = (self.short, page.new_at_since > 0) {
            // The page before ended inside a run of equal Timestamps although
            // it was short: the index held the rest back, it caps pages.
            let lines = lines as u64;
            self.cap = Some(self.cap.map_or(lines, |c| c.min(lines)));
        }
        let full = page.lines >= self.limit;
        self.short = (page.progressed() && !full).then_some(page.lines);
        next_step(
            page.progressed(),
            page.lines,
            self.limit,
            self.page_size,
            self.cap,
        )
    }
}

/// Decides what follows a page of `lines` asked for with `limit`. A page
/// that moved the cursor is followed by another. One that did not is the
/// feed's end, unless the index cannot give more: it is full (ask again,
/// bigger, up to [`MAX_GROWTH`] times `page_size`), or it holds as many
/// entries as the index serves per page (`cap`, else [`MAX_PAGE`]).
fn next_step(
    progressed: bool,
    lines: usize,
    limit: usize,
    page_size: usize,
    cap: Option<u64>,
) -> Step {
    let full = lines >= limit;
    let capped = match cap {
        Some(cap) => lines as u64 >= cap,
        None => lines == MAX_PAGE,
    };
    match (progressed, full) {
        (true, _) => Step::Next,
        (false, true) if limit < page_size * MAX_GROWTH => Step::Grow,
        (false, true) => Step::Stuck,
        (false, false) if capped && lines > 0 => Step::Stuck,
        (false, false) => Step::End,
    }
}

/// Why the feed cannot go on from `cursor`, naming the Timestamp.
fn stuck_message(cursor: &Cursor, page: &Page, limit: usize) -> String {
    format!(
        "index feed: cannot move past Timestamp {}: a page of {} entries (limit {limit}) \
         brings nothing new: more entries share that Timestamp than the index serves per \
         page, or none has a usable Timestamp; the cursor stays rather than skip any",
        format_timestamp(cursor.since()),
        page.lines,
    )
}

/// Counts and logs the entries of `page` older than the cursor.
fn note_backwards(page: &Page, report: &mut FeedReport) {
    if page.backwards == 0 {
        return;
    }
    report.backwards += page.backwards as u64;
    if let Some(first) = &page.first_backwards {
        warn!(
            entries = page.backwards,
            first = %format_args!("{}@{}", first.module, first.version),
            "index feed went backwards: entries older than the cursor dropped ({})",
            first.reason
        );
    }
}

/// The cursor to start from: the stored one, else `[feed] start`.
fn start_cursor(feed: &FeedSettings, stored: Option<&FeedCursor>) -> Result<Cursor, String> {
    match stored {
        Some(s) => Cursor::resume(&s.since, s.seen.iter().cloned())
            .map_err(|e| format!("state holds a feed cursor that does not parse: {e}")),
        None => Ok(Cursor::start(match feed.start {
            FeedStart::Now => OffsetDateTime::now_utc(),
            FeedStart::At(t) => t,
        })),
    }
}

/// Decides a page's entries and records them with the cursor after it.
async fn record(
    ctx: &Ctx,
    feed: &FeedSettings,
    watched: &HashSet<ModulePath>,
    page: Page,
    after: FeedCursor,
    tally: &mut Tally,
    out: &mut Followed,
) -> Result<(), SyncError> {
    let paths: Vec<ModulePath> = page
        .entries
        .iter()
        .map(|e| e.mv.path.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mirrored = ctx.store.mirrored_modules(&paths).await?;
    let mut planned = Vec::new();
    for entry in &page.entries {
        let known = Known {
            watched: watched.contains(&entry.mv.path),
            mirrored: mirrored.contains(&entry.mv.path),
        };
        let decision = feed.rules.decide(&entry.mv, known);
        *out.report
            .decisions
            .entry(decision_name(decision).into())
            .or_default() += 1;
        out.mentioned.insert(entry.mv.path.clone());
        if decision.mirrors() {
            planned.push(entry.mv.clone());
        }
    }
    for r in &page.rejected {
        warn!(module = %r.module, version = %r.version, "feed entry rejected: {}", r.reason);
    }
    out.report.entries += (page.entries.len() + page.rejected.len()) as u64;
    out.report.rejected += page.rejected.len() as u64;
    let record = PageRecord {
        planned,
        rejections: page
            .rejected
            .iter()
            .map(|r| RejectedEntry {
                module: r.module.clone(),
                entry: r.version.clone(),
                reason: r.reason.clone(),
            })
            .collect(),
        cursor: after,
    };
    tally.rejected.extend(page.rejected);
    let added = ctx.store.record_feed_page(ctx.run_id, record).await?;
    out.report.planned += added.len() as u64;
    out.planned.extend(added);
    Ok(())
}

fn decision_name(d: Decision) -> &'static str {
    match d {
        Decision::Included => "included",
        Decision::Watched => "watched",
        Decision::Fresh => "fresh",
        Decision::Excluded => "excluded",
        Decision::Pseudo => "pseudo",
        Decision::Unmatched => "unmatched",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_follows_a_page() {
        // (cursor moved, lines, limit, page_size, cap, want)
        let cases = [
            (true, 2000, 2000, 2000, None, Step::Next),
            // See: #13: a short page is not the end; the next one may be.
            (true, 1999, 2000, 2000, None, Step::Next),
            (true, 3, 2000, 2000, Some(3), Step::Next),
            (false, 0, 2000, 2000, None, Step::End),
            (false, 1, 2000, 2000, None, Step::End),
            (false, 2000, 2000, 2000, None, Step::Grow),
            (false, 2002, 4000, 2000, None, Step::End),
            (false, 2000, 4000, 2000, None, Step::Stuck),
            (false, 3, 3, 3, None, Step::Grow),
            (false, 4, 6, 3, None, Step::End),
            (false, 192, 192, 3, None, Step::Stuck),
            // See: #13: an index that caps pages at 3.
            (false, 3, 2000, 2000, Some(3), Step::Stuck),
            (false, 2, 2000, 2000, Some(3), Step::End),
            (false, 0, 2000, 2000, Some(0), Step::End),
        ];
        for (progressed, lines, limit, page_size, cap, want) in cases {
            assert_eq!(
                next_step(progressed, lines, limit, page_size, cap),
                want,
                "{progressed} {lines}/{limit} of {page_size}, cap {cap:?}"
            );
        }
    }
}
