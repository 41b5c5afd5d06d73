//! Following the index feed (issue 6): paging with an inclusive `since`,
//! runs of equal timestamps across page boundaries, a feed that grows
//! between runs, failures retried by later runs while the cursor moves on,
//! hostile entries, the rules, refresh of watched modules, the rate cap and
//! `--plan-only`.
//!
//! The local upstream serves the feed at `/index` and, unless a test says
//! otherwise, the versions at its GOPROXY paths; `[feed] proxy` points at it
//! too, or at a second upstream when a test checks where feed versions are
//! fetched from.

use crate::harness::{paths_under, Mirror};
use crate::upstream::{Fault, FeedLine, ModuleFiles, Upstream};
use crate::zipgen::synthetic_module;

/// Before every entry of these tests.
const START: &str = "2024-01-01T00:00:00Z";

/// A distinct timestamp per `n`, with nanoseconds, so full precision matters.
fn at(n: u32) -> String {
    format!("2024-01-01T00:00:{n:02}.123456789Z")
}

fn module(path: &str, version: &str) -> ModuleFiles {
    synthetic_module(path, version, 4, 2048)
}

/// A mirror of `index` (its `[upstream] proxies` and `[feed] index`) whose feed
/// versions come from `proxy`, with `feed` lines appended to `[feed]`.
fn feed_mirror(index: &Upstream, proxy: &str, watch: &[(&str, &str)], feed: &str) -> Mirror {
    let mut m = Mirror::new(&index.url(), watch);
    m.fetch.push_str(&format!(
        "[feed]\nenabled = true\nindex = \"{}\"\nproxy = \"{proxy}\"\nstart = \"{START}\"\n{feed}",
        index.url()
    ));
    m
}

/// Version-file requests (`.info`, `.mod`, `.zip`) of `path@version`.
fn downloads(u: &Upstream, path: &str, version: &str) -> usize {
    ["info", "mod", "zip"]
        .iter()
        .map(|ext| u.requests(&format!("/{path}/@v/{version}.{ext}")))
        .sum()
}

fn status_of(mirror: &Mirror, path: &str, version: &str) -> String {
    mirror.row(path, version).status
}

fn is_published(mirror: &Mirror, path: &str, version: &str) -> bool {
    mirror.file(&format!("{path}/@v/{version}.zip")).is_some()
        && status_of(mirror, path, version) == "published"
}

// See: #6 (since is inclusive; equal timestamps across page boundaries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_pages_lose_and_repeat_nothing_across_pages_and_runs() {
    // e0 at t1; e1..e5 share t2 (a run longer than a page of 3); e6 at t3.
    let versions: Vec<ModuleFiles> = (0..9)
        .map(|i| module(&format!("example.com/e{i}"), "v1.0.0"))
        .collect();
    let upstream = Upstream::start(versions.clone()).await;
    let stamps = [at(1), at(2), at(2), at(2), at(2), at(2), at(3)];
    upstream.feed_push(
        stamps
            .iter()
            .enumerate()
            .map(|(i, t)| FeedLine::entry(&format!("example.com/e{i}"), "v1.0.0", t)),
    );
    let mirror = feed_mirror(
        &upstream,
        &upstream.url(),
        &[],
        "page_size = 3\n[[feed.rule]]\ninclude = \"example.com\"\n",
    );

    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    let feed = report.feed.clone().expect("feed report");
    assert_eq!(
        (feed.entries, feed.planned, feed.rejected),
        (7, 7, 0),
        "{feed:#?}"
    );
    assert!(feed.exhausted);
    assert_eq!(feed.since, at(3));
    // since=START; t2 (e1, e2 new); t2 (e3 new); t2 again: no progress at 3, so limit 6
    // (e4, e5, e6 new); t3 (nothing new, short page: the end).
    let queries = upstream.feed_queries();
    let want = [
        (START.to_string(), 3),
        (at(2), 3),
        (at(2), 3),
        (at(2), 6),
        (at(3), 3),
    ];
    let got: Vec<(String, usize)> = queries.iter().map(|q| parse_query(q)).collect();
    assert_eq!(got, want);
    for i in 0..7 {
        let path = format!("example.com/e{i}");
        assert!(is_published(&mirror, &path, "v1.0.0"), "{path}");
        assert_eq!(
            downloads(&upstream, &path, "v1.0.0"),
            3,
            "{path} fetched once"
        );
    }

    // The feed grows: one more entry at the cursor's own timestamp, one later.
    upstream.feed_push([
        FeedLine::entry("example.com/e7", "v1.0.0", &at(3)),
        FeedLine::entry("example.com/e8", "v1.0.0", &at(4)),
    ]);
    let report = mirror.sync().await.expect("second sync");
    assert!(report.all_ok(), "{report:#?}");
    let feed = report.feed.expect("feed report");
    assert_eq!((feed.entries, feed.planned), (2, 2), "{feed:#?}");
    for i in 0..9 {
        let path = format!("example.com/e{i}");
        assert!(is_published(&mirror, &path, "v1.0.0"), "{path}");
        assert_eq!(
            downloads(&upstream, &path, "v1.0.0"),
            3,
            "{path} fetched once"
        );
    }

    // Nothing new: one feed request and nothing else.
    let before = upstream.total_requests();
    let report = mirror.sync().await.expect("no-op sync");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.planned, 0);
    assert_eq!(upstream.total_requests() - before, 1);
    assert_eq!(
        upstream.feed_queries().last().map(|q| parse_query(q).0),
        Some(at(4))
    );
}

/// `(since, limit)` of a feed query string.
fn parse_query(q: &str) -> (String, usize) {
    let get = |k: &str| {
        url::form_urlencoded::parse(q.as_bytes())
            .find(|(name, _)| name == k)
            .map(|(_, v)| v.into_owned())
            .unwrap_or_else(|| panic!("{q}: no {k}"))
    };
    (
        get("since"),
        get("limit").parse().expect("limit is a number"),
    )
}

// See: #6 (never loop forever, never skip one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_more_equal_timestamps_than_the_index_serves_stops_without_skipping() {
    // 2002 entries share one timestamp; the index serves at most 2000 per page, as
    // index.golang.org does. Only the first and the last are wanted (and served).
    let (first, last) = ("example.com/e0000", "example.com/e2001");
    let upstream = Upstream::start(vec![module(first, "v1.0.0"), module(last, "v1.0.0")]).await;
    upstream.feed_push(
        (0..2002).map(|i| FeedLine::entry(&format!("example.com/e{i:04}"), "v1.0.0", &at(1))),
    );
    upstream.feed_cap_limit(2000);
    let rules = format!("[[feed.rule]]\ninclude = \"{first},{last}\"\n");
    let mirror = feed_mirror(&upstream, &upstream.url(), &[], &rules);
    let report = mirror.sync().await.expect("sync runs");
    // Pages: 2000 new; the same 2000 (no progress); limit 4000, still 2000: stop.
    let limits: Vec<usize> = upstream
        .feed_queries()
        .iter()
        .map(|q| parse_query(q).1)
        .collect();
    assert_eq!(limits, [2000, 2000, 4000]);
    assert!(!report.all_ok(), "{report:#?}");
    assert!(
        report.plan_errors[0].message.starts_with("index feed: cannot move past Timestamp 2024-01-01T00:00:01.123456789Z: a page of 2000 entries (limit 4000) brings nothing new"),
        "{:?}",
        report.plan_errors
    );
    assert!(is_published(&mirror, first, "v1.0.0"));
    // The cursor stayed inside the run: an index that serves more finds the rest.
    upstream.feed_cap_limit(usize::MAX);
    let report = mirror.sync().await.expect("second sync");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(report.feed.expect("feed").entries, 2);
    assert!(is_published(&mirror, last, "v1.0.0"));
    assert!(mirror.rows().iter().all(|r| r.status == "published"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_feed_versions_come_from_the_feed_proxy() {
    let index = Upstream::start(vec![]).await;
    let cached_only = Upstream::start(vec![module("example.com/a", "v1.0.0")]).await;
    index.feed_push([FeedLine::entry("example.com/a", "v1.0.0", &at(1))]);
    let mirror = feed_mirror(
        &index,
        &cached_only.url(),
        &[],
        "[[feed.rule]]\ninclude = \"example.com\"\n",
    );
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    assert!(is_published(&mirror, "example.com/a", "v1.0.0"));
    assert_eq!(downloads(&cached_only, "example.com/a", "v1.0.0"), 3);
    // See: #13: a page with news is followed by one more, which brings nothing.
    assert_eq!(
        index.total_requests(),
        2,
        "only the feed pages come from the index"
    );
}

// See: #6 (a failure never blocks the cursor or other versions).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_failed_version_is_fetched_on_a_later_run_while_the_cursor_moved_on() {
    let mods = ["a", "b", "c"].map(|m| module(&format!("example.com/{m}"), "v1.0.0"));
    let upstream = Upstream::start(mods.to_vec()).await;
    upstream.feed_push([
        FeedLine::entry("example.com/a", "v1.0.0", &at(1)),
        FeedLine::entry("example.com/b", "v1.0.0", &at(2)),
    ]);
    let bad_zip = "/example.com/a/@v/v1.0.0.zip";
    upstream
        .faults()
        .push(bad_zip, Fault::Status(503), usize::MAX);
    let mirror = feed_mirror(
        &upstream,
        &upstream.url(),
        &[],
        "retry_base = \"1h\"\n[[feed.rule]]\ninclude = \"example.com\"\n",
    );

    let report = mirror.sync().await.expect("sync runs");
    assert_eq!(
        (report.summary.published, report.summary.failed),
        (1, 1),
        "{report:#?}"
    );
    assert!(!report.all_ok());
    assert!(is_published(&mirror, "example.com/b", "v1.0.0"));
    // Pending work with its attempt and next try; the cursor is past it.
    assert_eq!(status_of(&mirror, "example.com/a", "v1.0.0"), "pending");
    let (attempts, next): (i64, Option<String>) = mirror
        .db()
        .query_row(
            "SELECT attempts, next_try_at FROM versions WHERE version = 'v1.0.0'
             AND module_id = (SELECT id FROM modules WHERE path = 'example.com/a')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("row");
    assert_eq!(attempts, 1);
    assert!(next.is_some());
    assert_eq!(report.feed.expect("feed").since, at(2));

    // Upstream recovers; the feed grows. The failed version is not due yet.
    upstream.faults().clear();
    upstream.feed_push([FeedLine::entry("example.com/c", "v1.0.0", &at(3))]);
    let zip_tries = upstream.requests(bad_zip);
    let report = mirror.sync().await.expect("second sync");
    assert_eq!(report.summary.published, 1, "{report:#?}");
    assert!(is_published(&mirror, "example.com/c", "v1.0.0"));
    assert_eq!(
        upstream.requests(bad_zip),
        zip_tries,
        "retried before its time"
    );
    assert_eq!(status_of(&mirror, "example.com/a", "v1.0.0"), "pending");

    // Its time comes: the next run fetches it, and the feed is not read again from before.
    make_due(&mirror);
    let report = mirror.sync().await.expect("third sync");
    assert!(report.all_ok(), "{report:#?}");
    assert!(is_published(&mirror, "example.com/a", "v1.0.0"));
    assert_eq!(report.feed.expect("feed").entries, 0);
}

/// Moves every scheduled retry into the past, as if its wait had passed.
fn make_due(mirror: &Mirror) {
    mirror
        .db()
        .execute(
            "UPDATE versions SET next_try_at = '2000-01-01T00:00:00Z' WHERE next_try_at IS NOT NULL",
            [],
        )
        .expect("make retries due");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_out_of_attempts_is_failed_in_status_until_retry() {
    let upstream = Upstream::start(vec![
        module("example.com/a", "v1.0.0"),
        module("example.org/b", "v1.0.0"),
    ])
    .await;
    upstream.feed_push([
        FeedLine::entry("example.com/a", "v1.0.0", &at(1)),
        FeedLine::entry("example.org/b", "v1.0.0", &at(1)),
    ]);
    let zips = [
        "/example.com/a/@v/v1.0.0.zip",
        "/example.org/b/@v/v1.0.0.zip",
    ];
    for z in zips {
        upstream.faults().push(z, Fault::Status(500), usize::MAX);
    }
    let mirror = feed_mirror(
        &upstream,
        &upstream.url(),
        &[],
        "max_attempts = 2\n[[feed.rule]]\ninclude = \"example.com,example.org\"\n",
    );
    mirror.sync().await.expect("first try");
    assert_eq!(status_of(&mirror, "example.com/a", "v1.0.0"), "pending");
    make_due(&mirror);
    mirror.sync().await.expect("second try");
    assert_eq!(status_of(&mirror, "example.com/a", "v1.0.0"), "failed");
    assert_eq!(status_of(&mirror, "example.org/b", "v1.0.0"), "failed");

    let status = mirror.run_bin(&["status"]).await;
    assert_eq!(status.code, Some(0), "{status:#?}");
    assert!(
        status
            .stdout
            .contains("example.com/a@v1.0.0  failed after 2 attempt(s)"),
        "{status:#?}"
    );
    assert!(
        status.stdout.contains("feed: next read since"),
        "{status:#?}"
    );

    // Given up: later runs leave it alone.
    let tries = upstream.requests(zips[0]);
    make_due(&mirror);
    mirror.sync().await.expect("third run");
    assert_eq!(upstream.requests(zips[0]), tries);

    // `retry <pattern>` puts back only what matches; a malformed pattern is refused.
    let bad = mirror.run_bin(&["retry", "example.com/[a"]).await;
    assert_eq!(bad.code, Some(2), "{bad:#?}");
    assert_eq!(
        bad.stderr,
        "gomirror: retry: \"example.com/[a\": unclosed [\n"
    );
    let retry = mirror.run_bin(&["retry", "example.com"]).await;
    assert_eq!(retry.code, Some(0), "{retry:#?}");
    assert_eq!(retry.stdout, "example.com/a@v1.0.0\n");
    assert_eq!(status_of(&mirror, "example.com/a", "v1.0.0"), "pending");
    assert_eq!(status_of(&mirror, "example.org/b", "v1.0.0"), "failed");
    upstream.faults().clear();
    let report = mirror.sync().await.expect("after retry");
    assert!(
        is_published(&mirror, "example.com/a", "v1.0.0"),
        "{report:#?}"
    );
    assert_eq!(status_of(&mirror, "example.org/b", "v1.0.0"), "failed");
}

// See: #6 (hostile feed entries are refused and never reach the disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_hostile_feed_entries_never_touch_the_disk() {
    let upstream = Upstream::start(vec![module("example.com/good", "v1.0.0")]).await;
    let long = format!("example.com/{}", "x".repeat(300));
    let hostile = [
        ("../../etc/passwd", "v1.0.0"),
        ("/etc/passwd", "v1.0.0"),
        ("example.com/../../escape", "v1.0.0"),
        ("example.com/nul\u{0}byte", "v1.0.0"),
        ("example.com/m", "v1.0.0/../../../x"),
        ("example.com/m", "../v1.0.0"),
        ("example.com/m", "v1.0"),
        (long.as_str(), "v1.0.0"),
    ];
    let mut lines: Vec<FeedLine> = hostile
        .iter()
        .map(|(p, v)| FeedLine::entry(p, v, &at(1)))
        .collect();
    lines.push(FeedLine::raw(&at(1), "{not json"));
    lines.push(FeedLine::raw(
        &at(1),
        &format!("{{\"Path\":\"{}\"}}", "y".repeat(5000)),
    ));
    lines.push(FeedLine::entry("example.com/good", "v1.0.0", &at(2)));
    upstream.feed_push(lines);
    let mirror = feed_mirror(
        &upstream,
        &upstream.url(),
        &[],
        "pseudo_versions = \"all\"\n[[feed.rule]]\ninclude = \"*\"\n",
    );
    let report = mirror.sync().await.expect("sync runs");
    let feed = report.feed.clone().expect("feed");
    assert_eq!((feed.rejected, feed.planned), (10, 1), "{feed:#?}");
    assert_eq!(report.rejected.len(), 10);
    assert!(is_published(&mirror, "example.com/good", "v1.0.0"));
    // The tree holds the good module and nothing else; nothing was written beside it.
    let want: Vec<String> = [
        ".gomirror.lock",
        "example.com",
        "example.com/good",
        "example.com/good/@latest",
        "example.com/good/@v",
        "example.com/good/@v/list",
        "example.com/good/@v/v1.0.0.info",
        "example.com/good/@v/v1.0.0.mod",
        "example.com/good/@v/v1.0.0.zip",
    ]
    .map(String::from)
    .to_vec();
    assert_eq!(paths_under(&mirror.tree()), want);
    assert!(!mirror.dir.path().join("etc").exists());
    // Only the feed (a page with news, then one without; see #13) and the good
    // version were requested.
    assert_eq!(upstream.total_requests(), 2 + 3);
    // The reasons are in state, for `status`.
    let rejections: i64 = mirror
        .db()
        .query_row("SELECT COUNT(*) FROM rejections", [], |r| r.get(0))
        .expect("count");
    assert_eq!(rejections, 10);
    // A second run does not refuse them again: they are behind the cursor.
    let again = mirror.sync().await.expect("second run");
    assert_eq!(again.feed.expect("feed").rejected, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_rules_pseudo_versions_and_fresh_lists() {
    let pseudo = "v0.0.0-20240101000000-abcdefabcdef";
    let mut w2 = module("example.com/w", "v1.1.0");
    // The newest .mod retracts the older version: clients must see it.
    w2.mod_file = Some(bytes::Bytes::from_static(
        b"module example.com/w\n\ngo 1.19\n\nretract v1.0.0 // broken\n",
    ));
    let upstream = Upstream::start(vec![
        module("example.com/w", "v1.0.0"),
        w2,
        module("example.com/w", pseudo),
        module("example.com/org/a", "v1.0.0"),
        module("example.com/org/a", pseudo),
        module("example.com/org/secret", "v1.0.0"),
        module("other.example/x", "v1.0.0"),
    ])
    .await;
    // No `watched` rule: a watched module's new tag is taken because it is mirrored.
    let rules = "[[feed.rule]]\nexclude = \"example.com/org/secret\"\n\
                 [[feed.rule]]\ninclude = \"example.com/org\"\n";
    let mirror = feed_mirror(
        &upstream,
        &upstream.url(),
        &[("example.com/w", "v1.0.0")],
        rules,
    );
    let report = mirror.sync().await.expect("first run: the watchlist");
    assert!(report.all_ok(), "{report:#?}");
    assert!(is_published(&mirror, "example.com/w", "v1.0.0"));

    upstream.feed_push([
        FeedLine::entry("example.com/w", "v1.1.0", &at(1)),
        FeedLine::entry("example.com/w", pseudo, &at(2)),
        FeedLine::entry("example.com/org/a", "v1.0.0", &at(3)),
        FeedLine::entry("example.com/org/a", pseudo, &at(4)),
        FeedLine::entry("example.com/org/secret", "v1.0.0", &at(5)),
        FeedLine::entry("other.example/x", "v1.0.0", &at(6)),
    ]);
    let report = mirror.sync().await.expect("second run: the feed");
    assert!(report.all_ok(), "{report:#?}");
    let decisions = report.feed.expect("feed").decisions;
    let want = [
        ("excluded", 1),
        ("fresh", 1),
        ("included", 1),
        ("pseudo", 1),
        ("unmatched", 2),
    ]
    .map(|(k, n)| (k.to_string(), n))
    .into_iter()
    .collect();
    assert_eq!(decisions, want);
    assert!(is_published(&mirror, "example.com/w", "v1.1.0"));
    assert!(is_published(&mirror, "example.com/org/a", "v1.0.0"));
    for (p, v) in [
        ("example.com/w", pseudo),
        ("example.com/org/a", pseudo),
        ("example.com/org/secret", "v1.0.0"),
        ("other.example/x", "v1.0.0"),
    ] {
        assert!(
            mirror.file(&format!("{p}/@v/{v}.zip")).is_none(),
            "{p}@{v} mirrored"
        );
    }
    // The list, @latest and newest .mod of the watched module are current.
    let file = |rel: &str| String::from_utf8(mirror.file(rel).expect(rel)).expect("utf-8");
    assert_eq!(file("example.com/w/@v/list"), "v1.0.0\nv1.1.0\n");
    assert!(file("example.com/w/@latest").contains("\"v1.1.0\""));
    assert!(file("example.com/w/@v/v1.1.0.mod").contains("retract v1.0.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_watched_modules_are_listed_only_when_due() {
    let upstream = Upstream::start(vec![
        module("example.com/w", "v1.0.0"),
        module("example.com/w", "v1.1.0"),
    ])
    .await;
    let mirror = feed_mirror(&upstream, &upstream.url(), &[("example.com/w", "all")], "");
    let list = "/example.com/w/@v/list";
    let report = mirror.sync().await.expect("first run");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(upstream.requests(list), 1);
    assert!(is_published(&mirror, "example.com/w", "v1.1.0"));

    // Not due: one feed request, no listing.
    let before = upstream.total_requests();
    mirror.sync().await.expect("second run");
    assert_eq!(upstream.total_requests() - before, 1);
    assert_eq!(upstream.requests(list), 1);

    // The feed names it: listed (and its new version mirrored by the default rule).
    upstream.add(module("example.com/w", "v1.2.0"));
    upstream.feed_push([FeedLine::entry("example.com/w", "v1.2.0", &at(1))]);
    let report = mirror.sync().await.expect("third run");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(upstream.requests(list), 2);
    assert!(is_published(&mirror, "example.com/w", "v1.2.0"));

    // A version the feed missed (an outage) is found once the interval passes.
    upstream.add(module("example.com/w", "v1.3.0"));
    mirror.sync().await.expect("fourth run");
    assert_eq!(upstream.requests(list), 2);
    mirror
        .db()
        .execute("UPDATE modules SET listed_at = '2000-01-01T00:00:00Z'", [])
        .expect("age the listing");
    let report = mirror.sync().await.expect("fifth run");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(upstream.requests(list), 3);
    assert!(is_published(&mirror, "example.com/w", "v1.3.0"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_rate_cap_holds_back_requests() {
    let upstream = Upstream::start(vec![
        module("example.com/a", "v1.0.0"),
        module("example.com/b", "v1.0.0"),
    ])
    .await;
    upstream.feed_push([
        FeedLine::entry("example.com/a", "v1.0.0", &at(1)),
        FeedLine::entry("example.com/b", "v1.0.0", &at(2)),
    ]);
    let mut mirror = feed_mirror(
        &upstream,
        &upstream.url(),
        &[],
        "[[feed.rule]]\ninclude = \"example.com\"\n",
    );
    // At 5 per second, starts are 200 ms apart: the three files of a version are
    // asked for together, so at least two of them wait, whatever the machine's speed.
    mirror.fetch = mirror
        .fetch
        .replacen("[feed]", "requests_per_second = 5\n[feed]", 1);
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    // Two feed pages (#13: read on until one brings nothing new), 2 × 3 files.
    assert_eq!(report.fetch.requests, 8, "{:#?}", report.fetch);
    assert!(report.fetch.rate_limited >= 2, "{:#?}", report.fetch);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_6_plan_only_records_pending_work_and_fetches_nothing() {
    let upstream = Upstream::start(vec![
        module("example.com/a", "v1.0.0"),
        module("example.com/b", "v1.0.0"),
    ])
    .await;
    upstream.feed_push([
        FeedLine::entry("example.com/a", "v1.0.0", &at(1)),
        FeedLine::entry("example.com/b", "v1.0.0", &at(2)),
    ]);
    let mirror = feed_mirror(
        &upstream,
        &upstream.url(),
        &[],
        "[[feed.rule]]\ninclude = \"example.com\"\n",
    );
    let run = mirror
        .run_bin(&["sync", "--no-progress", "--plan-only"])
        .await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr
            .contains("sync planned (nothing fetched): 2 versions to fetch"),
        "{run:#?}"
    );
    assert_eq!(upstream.total_requests(), 2, "only the feed pages (#13)");
    assert_eq!(status_of(&mirror, "example.com/a", "v1.0.0"), "pending");
    let report = mirror.sync().await.expect("sync fetches the plan");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.published, 2);
}
