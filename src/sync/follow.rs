//! Following the index feed within a run: read pages from the cursor on,
//! decide each entry with the rules, and record each page's selected
//! versions as `pending` in the same transaction that moves the cursor
//! (`state::Store::record_feed_page`), so the cursor never runs ahead of the
//! work it planned.
//!
//! Paging stops when a page comes back short (the feed is exhausted), after
//! `[feed] max_pages`, when the run is cancelled, or on an error. A failed
//! page request is a plan error (exit 1): the cursor stays, the next run
//! asks again, and the rest of the run goes on. A full page holding only
//! entries already seen (more entries share one Timestamp than a page
//! holds) is asked for again with twice the limit. A short answer to that
//! is the end of the feed, unless it holds exactly the index's cap of 2000
//! entries: then the server cannot give more, and the run says so (a plan
//! error; the cursor stays) instead of looping or skipping.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;
use time::OffsetDateTime;
use tracing::{debug, info, warn};

use super::{chain, Ctx, SyncError, Tally};
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
            tally.plan_errors.push(e);
            return Ok(out);
        }
    };
    let mut newest = stored
        .and_then(|s| s.newest)
        .and_then(|n| parse_timestamp(&n).ok());
    let mut limit = feed.page_size;
    while out.report.pages < feed.max_pages as u64 && !ctx.stop.is_cancelled() {
        out.report.pages += 1;
        let body = match fetch_page(ctx, index, &cursor, limit).await {
            Ok(Some(body)) => body,
            Ok(None) => break,
            Err(e) => {
                warn!("{e}");
                tally.plan_errors.push(e);
                break;
            }
        };
        let page = cursor.read_page(&body, OffsetDateTime::now_utc());
        match next_step(page.progressed(), page.lines, limit, feed.page_size) {
            Step::Grow => {
                limit *= 2;
                continue;
            }
            Step::Stuck => {
                let e = format!(
                    "index feed: a page of {} entries from {} moves the cursor no further: more \
                     entries share that Timestamp than the index serves per page, or none has a \
                     usable Timestamp; the cursor stays rather than skip any",
                    page.lines,
                    format_timestamp(cursor.since())
                );
                warn!("{e}");
                tally.plan_errors.push(e);
                break;
            }
            Step::End if !page.progressed() => {
                out.report.exhausted = true;
                break;
            }
            step => {
                newest = newest.max(page.newest);
                let after = FeedCursor {
                    since: format_timestamp(cursor.since()),
                    seen: cursor.seen(),
                    newest: newest.map(format_timestamp),
                };
                record(ctx, feed, watched, page, after, tally, &mut out).await?;
                if step == Step::End {
                    out.report.exhausted = true;
                    break;
                }
                limit = feed.page_size;
            }
        }
    }
    out.report.since = format_timestamp(cursor.since());
    out.report.newest = newest.map(format_timestamp);
    info!(
        pages = out.report.pages,
        entries = out.report.entries,
        planned = out.report.planned,
        rejected = out.report.rejected,
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
    /// Record it and ask for the next page.
    Next,
    /// Record it (if it moved the cursor); the feed has nothing more.
    End,
    /// It was full and moved nothing: ask again with twice the limit.
    Grow,
    /// It cannot move the cursor and the index cannot give more.
    Stuck,
}

/// Decides what follows a page of `lines` asked for with `limit`. A full
/// page is followed by another. A full page that did not move the cursor
/// is asked for again, bigger; a short answer to that is the feed's end,
/// unless it is exactly the index's cap of 2000 lines (the server cannot
/// give more), or the limit has grown [`MAX_GROWTH`] times.
fn next_step(progressed: bool, lines: usize, limit: usize, page_size: usize) -> Step {
    let full = lines >= limit;
    match (progressed, full) {
        (true, true) => Step::Next,
        (true, false) => Step::End,
        (false, _) if lines < page_size => Step::End,
        (false, true) if limit < page_size * MAX_GROWTH => Step::Grow,
        (false, false) if lines != MAX_PAGE => Step::End,
        (false, _) => Step::Stuck,
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
        // (cursor moved, lines, limit, page_size, want)
        let cases = [
            (true, 2000, 2000, 2000, Step::Next),
            (true, 1999, 2000, 2000, Step::End),
            (true, 0, 2000, 2000, Step::End),
            (false, 0, 2000, 2000, Step::End),
            (false, 1, 2000, 2000, Step::End),
            (false, 2000, 2000, 2000, Step::Grow),
            (false, 2002, 4000, 2000, Step::End),
            (false, 2000, 4000, 2000, Step::Stuck),
            (false, 3, 3, 3, Step::Grow),
            (false, 4, 6, 3, Step::End),
            (false, 192, 192, 3, Step::Stuck),
        ];
        for (progressed, lines, limit, page_size, want) in cases {
            assert_eq!(
                next_step(progressed, lines, limit, page_size),
                want,
                "{progressed} {lines}/{limit} of {page_size}"
            );
        }
    }
}
