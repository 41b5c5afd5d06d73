//! Issue 13, the feed and the upstreams: an index that caps its pages, a
//! feed that goes backwards, `|` failover between upstreams and their
//! health, `cached-only` 404s that mean "not yet", slow upstreams, and two
//! messages.

use crate::harness::Mirror;
use crate::upstream::{FeedLine, ModuleFiles, Upstream};
use crate::zipgen::synthetic_module;

const START: &str = "2024-01-01T00:00:00Z";

fn at(n: u32) -> String {
    format!("2024-01-01T00:00:{n:02}.5Z")
}

fn module(path: &str, version: &str) -> ModuleFiles {
    synthetic_module(path, version, 2, 512)
}

/// A mirror following `index`'s feed, every version from `index` too.
fn feed_mirror(index: &Upstream, feed: &str) -> Mirror {
    let mut m = Mirror::new(&index.url(), &[]);
    m.fetch.push_str(&format!(
        "[feed]\nenabled = true\nindex = \"{0}\"\nproxy = \"{0}\"\nstart = \"{START}\"\n\
         [[feed.rule]]\ninclude = \"example.com\"\n{feed}",
        index.url()
    ));
    m
}

/// `since` of each feed query.
fn sinces(u: &Upstream) -> Vec<String> {
    u.feed_queries()
        .iter()
        .map(|q| {
            url::form_urlencoded::parse(q.as_bytes())
                .find(|(k, _)| k == "since")
                .map(|(_, v)| v.into_owned())
                .expect("since")
        })
        .collect()
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_feed_short_pages_do_not_stall() {
    // The index serves 3 entries per page whatever is asked (2000).
    let versions: Vec<ModuleFiles> = (0..6)
        .map(|i| module(&format!("example.com/e{i}"), "v1.0.0"))
        .collect();
    let upstream = Upstream::start(versions).await;
    upstream.feed_cap_limit(3);
    upstream.feed_push(
        (0..6).map(|i| FeedLine::entry(&format!("example.com/e{i}"), "v1.0.0", &at(i + 1))),
    );
    let mirror = feed_mirror(&upstream, "");
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    let feed = report.feed.expect("feed report");
    assert_eq!((feed.entries, feed.planned), (6, 6), "{feed:#?}");
    assert!(feed.exhausted && feed.stuck_at.is_none(), "{feed:#?}");
    // Three pages of news (each ends where the next starts: `since` is
    // inclusive), then one that brings nothing new.
    assert_eq!(sinces(&upstream), [START.to_string(), at(3), at(5), at(6)]);
    for i in 0..6 {
        let row = mirror.row(&format!("example.com/e{i}"), "v1.0.0");
        assert_eq!(row.status, "published", "{row:?}");
    }
    // Nothing new: exactly one request.
    let before = upstream.total_requests();
    let report = mirror.sync().await.expect("no-op sync");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(upstream.total_requests() - before, 1);
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_feed_that_cannot_move_past_a_timestamp_fails_naming_it() {
    // e0 at t1, e1..e4 share t2 (more than the index's cap of 3), e5 at t3.
    let versions: Vec<ModuleFiles> = (0..6)
        .map(|i| module(&format!("example.com/e{i}"), "v1.0.0"))
        .collect();
    let upstream = Upstream::start(versions).await;
    upstream.feed_cap_limit(3);
    let stamps = [at(1), at(2), at(2), at(2), at(2), at(3)];
    upstream.feed_push(
        stamps
            .iter()
            .enumerate()
            .map(|(i, t)| FeedLine::entry(&format!("example.com/e{i}"), "v1.0.0", t)),
    );
    let mirror = feed_mirror(&upstream, "");
    let stuck = format!("index feed: cannot move past Timestamp {}", at(2));
    for run in 0..2 {
        let out = mirror.run_bin(&["sync", "--no-progress"]).await;
        assert_eq!(out.code, Some(1), "run {run}: {out:?}");
        assert!(out.stderr.contains(&stuck), "run {run}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("stuck at {}", at(2))),
            "run {run}: {}",
            out.stderr
        );
    }
    // What it could read is mirrored; nothing after the stuck Timestamp was skipped to.
    assert_eq!(mirror.row("example.com/e2", "v1.0.0").status, "published");
    assert!(mirror
        .rows()
        .iter()
        .all(|r| r.path != "example.com/e4" && r.path != "example.com/e5"));
    let status = mirror.run_bin(&["status"]).await;
    assert!(
        status
            .stdout
            .contains("index serves at most 3 entries per page"),
        "{}",
        status.stdout
    );
    // An index that serves bigger pages gets the rest.
    upstream.feed_cap_limit(usize::MAX);
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(mirror.row("example.com/e5", "v1.0.0").status, "published");
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_feed_entries_going_backwards_are_counted_and_reported() {
    let versions: Vec<ModuleFiles> = (0..3)
        .map(|i| module(&format!("example.com/e{i}"), "v1.0.0"))
        .collect();
    let upstream = Upstream::start(versions).await;
    upstream.feed_push([
        FeedLine::entry("example.com/e0", "v1.0.0", &at(5)),
        FeedLine::entry("example.com/e1", "v1.0.0", &at(2)),
        FeedLine::entry("example.com/e2", "v1.0.0", &at(6)),
    ]);
    let mirror = feed_mirror(&upstream, "");
    let out = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert!(
        out.stderr.contains("1 older than the cursor dropped"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains(&format!(
            "Timestamp {} is older than the cursor {}",
            at(2),
            at(5)
        )),
        "{}",
        out.stderr
    );
    let status = mirror.run_bin(&["status"]).await;
    assert!(
        status
            .stdout
            .contains("1 entries older than the cursor dropped"),
        "{}",
        status.stdout
    );
    let json = mirror.run_bin(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    assert_eq!(v["feed"]["backwards"], 1, "{}", json.stdout);
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_cached_only_404_is_not_yet_and_retried() {
    // The index names a version the feed's proxy does not have yet.
    let index = Upstream::start(vec![]).await;
    let cached_only = Upstream::start(vec![]).await;
    index.feed_push([FeedLine::entry("example.com/late", "v1.0.0", &at(1))]);
    let mut mirror = Mirror::new(&index.url(), &[("example.com/gone", "v1.0.0")]);
    mirror.fetch.push_str(&format!(
        "[feed]\nenabled = true\nindex = \"{}\"\nproxy = \"{}\"\nstart = \"{START}\"\n\
         max_attempts = 3\nretry_base = \"1h\"\n[[feed.rule]]\ninclude = \"example.com\"\n",
        index.url(),
        cached_only.url()
    ));
    let report = mirror.sync().await.expect("sync runs");
    assert_eq!(
        (report.summary.failed, report.summary.not_found),
        (1, 1),
        "{report:#?}"
    );
    // The feed's version waits for its next try; the watched one is not found.
    let late = mirror.row("example.com/late", "v1.0.0");
    assert_eq!(late.status, "pending", "{late:?}");
    let error = late.last_error.expect("an error is kept");
    assert!(
        error.contains("404 Not Found: not at the feed's proxy yet"),
        "{error}"
    );
    assert_eq!(mirror.row("example.com/gone", "v1.0.0").status, "not_found");

    // The proxy fetches it; once its time comes the next run publishes it.
    cached_only.add(module("example.com/late", "v1.0.0"));
    mirror
        .db()
        .execute(
            "UPDATE versions SET next_try_at = '2000-01-01T00:00:00Z' WHERE next_try_at IS NOT NULL",
            [],
        )
        .expect("make retries due");
    mirror.watch.clear();
    let report = mirror.sync().await.expect("second sync");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(mirror.row("example.com/late", "v1.0.0").status, "published");
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_slow_upstream_fails_the_request_instead_of_hanging() {
    let upstream = Upstream::start(vec![module("example.com/slow", "v1.0.0")]).await;
    upstream
        .faults()
        .set_latency(std::time::Duration::from_secs(30));
    let mut mirror = Mirror::new(&upstream.url(), &[("example.com/slow", "v1.0.0")]);
    mirror.fetch = "max_attempts = 2\nbackoff_base = \"10ms\"\nbackoff_max = \"20ms\"\n\
                    header_timeout = \"300ms\"\n"
        .into();
    let out = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    let row = mirror.row("example.com/slow", "v1.0.0");
    assert_eq!(row.status, "failed", "{row:?}");
    let error = row.last_error.expect("the reason is kept");
    assert!(
        error.contains("no response headers within 300ms (after 2 attempts)"),
        "{error}"
    );
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_pipe_fails_over_when_the_first_upstream_is_down() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let down = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let up = Upstream::start(vec![module("example.com/m", "v1.0.0")]).await;
    let mut mirror = Mirror::new(&up.url(), &[("example.com/m", "v1.0.0")]);
    mirror.fetch = "max_attempts = 2\nbackoff_base = \"10ms\"\nbackoff_max = \"20ms\"\n".into();
    // With `,` the refused connection fails the version.
    mirror.set_proxies(&[&down, &up.url()]);
    let out = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(out.code, Some(1), "{out:?}");
    // With `|` the second upstream serves it.
    mirror.upstream_url = format!("{down} | {}", up.url());
    let out = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(out.code, Some(0), "{out:?}");
    assert_eq!(mirror.row("example.com/m", "v1.0.0").status, "published");

    let status = mirror.run_bin(&["status"]).await;
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with(&format!("upstream {down}/:")))
        .unwrap_or_else(|| panic!("{}", status.stdout));
    assert!(line.contains(" errors, last failure "), "{line}");
    assert!(line.contains("(after 2 attempts)"), "{line}");
    let json = mirror.run_bin(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("json");
    let ups = v["upstreams"].as_array().expect("upstreams");
    let good = ups
        .iter()
        .find(|u| u["upstream"] == format!("{}/", up.url()))
        .expect("the good upstream");
    assert_eq!(good["errors"], 0, "{good}");
    assert!(good["requests"].as_u64().unwrap_or(0) >= 3, "{good}");
}
