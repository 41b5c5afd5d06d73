//! Upstream misbehaviour that a mirror must ride out or report: transient
//! faults are retried until every version is published byte for byte;
//! 404/410 are permanent (`not_found`, PROTOCOL.md "404 and 410 both mean
//! not found"); a fault that outlasts `max_attempts` is `failed` and retried
//! by the next run; the next upstream is tried only on 404/410.

use std::time::Instant;

use crate::harness::{files_in, h1_of_zip, Mirror};
use crate::upstream::{Fault, ModuleFiles, Upstream};
use crate::zipgen::synthetic_module;

/// `example.com/a` at three versions and `example.com/b` at two.
fn modules() -> Vec<ModuleFiles> {
    [
        ("example.com/a", "v1.0.0"),
        ("example.com/a", "v1.1.0"),
        ("example.com/a", "v1.2.0"),
        ("example.com/b", "v0.1.0"),
        ("example.com/b", "v0.2.0"),
    ]
    .into_iter()
    .map(|(p, v)| synthetic_module(p, v, 6, 16 * 1024))
    .collect()
}

const WATCH: &[(&str, &str)] = &[("example.com/a", "all"), ("example.com/b", "all")];

/// `/<path>/@v/<version>.<ext>` (paths here need no case-escaping).
fn url(path: &str, version: &str, ext: &str) -> String {
    format!("/{path}/@v/{version}.{ext}")
}

/// Every version of `modules` is in the tree with upstream's exact bytes,
/// recorded `published` with the `h1:` of upstream's zip, and listed.
fn assert_mirrored(mirror: &Mirror, modules: &[ModuleFiles]) {
    for m in modules {
        let (p, v) = (m.path.as_str(), m.version.as_str());
        let file = |ext| {
            mirror
                .file(&format!("{p}/@v/{v}.{ext}"))
                .unwrap_or_else(|| panic!("{p}@{v}.{ext} missing from the tree"))
        };
        assert_eq!(file("zip"), m.zip, "{p}@{v}.zip differs from upstream");
        assert_eq!(
            file("info"),
            m.info.clone().expect("info"),
            "{p}@{v}.info differs"
        );
        assert_eq!(
            file("mod"),
            m.mod_file.clone().expect("mod"),
            "{p}@{v}.mod differs"
        );
        let row = mirror.row(p, v);
        assert_eq!(row.status, "published", "{row:?}");
        assert_eq!(row.h1_zip.as_deref(), Some(h1_of_zip(&m.zip).as_str()));
        let list = String::from_utf8(mirror.file(&format!("{p}/@v/list")).expect("list"))
            .expect("utf-8 list");
        assert!(list.lines().any(|l| l == v), "{p} list lacks {v}: {list}");
    }
}

/// The tree holds exactly the files of `versions` plus the lists, `@latest`s and lock.
/// Every module published correctly, and the tree holds nothing else.
fn assert_all_mirrored(mirror: &Mirror, modules: &[ModuleFiles]) {
    assert_mirrored(mirror, modules);
    let all: Vec<(&str, &str)> = modules
        .iter()
        .map(|m| (m.path.as_str(), m.version.as_str()))
        .collect();
    assert_tree_is(mirror, &all);
}

fn assert_tree_is(mirror: &Mirror, versions: &[(&str, &str)]) {
    let mut want = vec![".gomirror.lock".to_string()];
    for (p, v) in versions {
        for ext in ["info", "mod", "zip"] {
            want.push(format!("{p}/@v/{v}.{ext}"));
        }
    }
    let mut modules: Vec<&str> = versions.iter().map(|(p, _)| *p).collect();
    modules.dedup();
    for p in modules {
        want.push(format!("{p}/@v/list"));
        want.push(format!("{p}/@latest"));
    }
    want.sort();
    assert_eq!(files_in(&mirror.tree()), want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_faults_are_retried_until_every_version_is_published() {
    let modules = modules();
    let upstream = Upstream::start(modules.clone()).await;
    let faults = upstream.faults();
    let a = "example.com/a";
    let b = "example.com/b";
    let too_many = Fault::TooMany {
        retry_after_secs: 1,
    };
    // (URL, faults in order): fewer than max_attempts (4) for every URL. The
    // 429s come in two waves (listing, then fetching), each pausing the run
    // about a second.
    let plan: Vec<(String, Vec<Fault>)> = vec![
        (
            url(a, "v1.0.0", "zip"),
            vec![Fault::Status(500), Fault::Status(500), Fault::Truncate],
        ),
        (url(a, "v1.1.0", "zip"), vec![Fault::Reset, Fault::Reset]),
        (
            url(a, "v1.2.0", "zip"),
            vec![Fault::Status(502), Fault::Status(503)],
        ),
        (url(b, "v0.2.0", "zip"), vec![too_many]),
        (url(a, "v1.2.0", "info"), vec![too_many, Fault::Status(500)]),
        (
            url(b, "v0.1.0", "zip"),
            vec![Fault::Reset, Fault::Status(502)],
        ),
        (
            url(a, "v1.0.0", "info"),
            vec![Fault::Status(503), Fault::Status(503)],
        ),
        (
            url(a, "v1.1.0", "info"),
            vec![Fault::Truncate, Fault::Reset],
        ),
        (
            url(b, "v0.1.0", "mod"),
            vec![too_many, Fault::Status(502), Fault::Status(502)],
        ),
        (url(b, "v0.2.0", "mod"), vec![Fault::Reset, Fault::Truncate]),
        (
            format!("/{a}/@v/list"),
            vec![Fault::Status(500), Fault::Reset],
        ),
        (
            format!("/{b}/@v/list"),
            vec![Fault::Truncate, too_many, Fault::Status(503)],
        ),
    ];
    for (u, fs) in &plan {
        for f in fs {
            faults.push(u, *f, 1);
        }
    }
    let mut mirror = Mirror::new(&upstream.url(), WATCH);
    // Retry-After (1 s) must be honoured whichever of backoff_max and the
    // client's own cap bounds it.
    mirror.fetch = "max_attempts = 4\nbackoff_base = \"10ms\"\nbackoff_max = \"2s\"\n".into();

    let started = Instant::now();
    let report = mirror.sync().await.expect("sync runs");
    let elapsed = started.elapsed();

    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.published, 5, "{report:#?}");
    for (u, fs) in &plan {
        assert!(
            upstream.requests(u) > fs.len(),
            "{u}: {} requests, {} faults: a fault was not hit",
            upstream.requests(u),
            fs.len()
        );
    }
    // Listing ends before fetching starts: two waits of a second each.
    assert!(
        elapsed.as_secs_f64() >= 1.95,
        "429 Retry-After: 1 was not honoured: the run took {elapsed:?}"
    );
    // No temp file from a truncated or reset download is left behind.
    assert_all_mirrored(&mirror, &modules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_404_and_410_are_not_found_and_exit_1() {
    let modules = modules();
    let upstream = Upstream::start(modules.clone()).await;
    let a = "example.com/a";
    let gone_zip = url(a, "v1.1.0", "zip");
    let gone_info = url(a, "v1.2.0", "info");
    upstream.remove(&gone_zip);
    upstream
        .faults()
        .push(&gone_info, Fault::Status(410), usize::MAX);

    let mirror = Mirror::new(&upstream.url(), WATCH);
    let report = mirror.sync().await.expect("sync runs");
    assert!(!report.all_ok(), "{report:#?}");
    assert_eq!(
        (
            report.summary.published,
            report.summary.not_found,
            report.summary.failed
        ),
        (3, 2, 0),
        "{report:#?}"
    );
    for (v, u, status) in [
        ("v1.1.0", &gone_zip, "404 Not Found"),
        ("v1.2.0", &gone_info, "410 Gone"),
    ] {
        let row = mirror.row(a, v);
        assert_eq!(row.status, "not_found", "{row:?}");
        let reason = row.last_error.expect("a not_found row records why");
        let full_url = format!("{}{u}", upstream.url());
        assert!(reason.contains(&full_url), "{reason} lacks {full_url}");
        assert!(reason.contains(status), "{reason} lacks {status}");
        assert_eq!(upstream.requests(u), 1, "{u}: 404/410 must not be retried");
        for ext in ["info", "mod", "zip"] {
            assert!(
                mirror.file(&format!("{a}/@v/{v}.{ext}")).is_none(),
                "{a}@{v}.{ext} was published"
            );
        }
    }
    let list = String::from_utf8(mirror.file(&format!("{a}/@v/list")).unwrap()).unwrap();
    assert_eq!(list, "v1.0.0\n");
    assert_mirrored(
        &mirror,
        &[modules[0].clone(), modules[3].clone(), modules[4].clone()],
    );

    // The binary reports the same as exit code 1 with the summary line.
    let fresh = Mirror::new(&upstream.url(), WATCH);
    let run = fresh.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let summary = run.stderr.lines().last().unwrap_or_default();
    assert!(
        summary.starts_with("gomirror: sync partial: 3 fetched")
            && summary.contains("2 not found, 0 failed"),
        "{run:#?}"
    );
    assert_eq!(fresh.row(a, "v1.1.0").status, "not_found");
    assert_eq!(fresh.row(a, "v1.2.0").status, "not_found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fault_outlasting_max_attempts_fails_then_next_run_publishes() {
    let modules = modules();
    let upstream = Upstream::start(modules.clone()).await;
    let b = "example.com/b";
    let zip = url(b, "v0.1.0", "zip");
    upstream.faults().push(&zip, Fault::Status(503), 100);

    let mirror = Mirror::new(&upstream.url(), WATCH);
    let report = mirror.sync().await.expect("sync runs");
    assert!(!report.all_ok());
    assert_eq!(
        (report.summary.published, report.summary.failed),
        (4, 1),
        "{report:#?}"
    );
    let row = mirror.row(b, "v0.1.0");
    assert_eq!(row.status, "failed", "{row:?}");
    let reason = row.last_error.expect("a failed row records why");
    let want = format!(
        "reading {}{zip}: 503 Service Unavailable (after 4 attempts)",
        upstream.url()
    );
    assert_eq!(reason, want);
    assert_eq!(upstream.requests(&zip), 4);
    assert!(mirror.file(&format!("{b}/@v/v0.1.0.zip")).is_none());
    assert!(mirror.file(&format!("{b}/@v/v0.1.0.info")).is_none());

    // Still failing: the binary says so with exit code 1.
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("1 failed"), "{run:#?}");

    // The fault is gone: the next run publishes the version.
    upstream.faults().clear();
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_all_mirrored(&mirror, &modules);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn next_upstream_only_on_404() {
    let modules = modules();
    let a = "example.com/a";
    // The first upstream has only example.com/a, and lacks one of its zips.
    let first = Upstream::start(modules[..3].to_vec()).await;
    let second = Upstream::start(modules.clone()).await;
    let missing = url(a, "v1.1.0", "zip");
    first.remove(&missing);

    let mut mirror = Mirror::new(&first.url(), WATCH);
    mirror.set_proxies(&[&first.url(), &second.url()]);
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    assert_mirrored(&mirror, &modules);
    assert_eq!(first.requests(&missing), 1);
    assert_eq!(second.requests(&missing), 1, "404 falls through");
    assert_eq!(
        second.requests(&url(a, "v1.0.0", "zip")),
        0,
        "only 404 falls through"
    );
    assert_eq!(second.requests("/example.com/a/@v/list"), 0);
    assert_eq!(second.requests("/example.com/b/@v/list"), 1);

    // A 500 from the first upstream is not "not found": no fall-through.
    let first = Upstream::start(modules.clone()).await;
    let second = Upstream::start(modules.clone()).await;
    let broken = url(a, "v1.0.0", "zip");
    first.faults().push(&broken, Fault::Status(500), usize::MAX);
    let mut mirror = Mirror::new(&first.url(), WATCH);
    mirror.set_proxies(&[&first.url(), &second.url()]);
    let report = mirror.sync().await.expect("sync runs");
    assert_eq!(
        (report.summary.published, report.summary.failed),
        (4, 1),
        "{report:#?}"
    );
    let row = mirror.row(a, "v1.0.0");
    assert_eq!(row.status, "failed", "{row:?}");
    let reason = row.last_error.unwrap_or_default();
    assert!(
        reason.contains(&format!("{}{broken}: 500", first.url())),
        "{reason}"
    );
    assert_eq!(second.requests(&broken), 0, "a 500 must not fall through");
    assert_eq!(second.total_requests(), 0);
}
