//! Prometheus metrics as an operator's scraper sees them: the node_exporter
//! textfile a `sync` writes and the daemon's `/metrics` parse as the text
//! exposition format (with a parser crate, every line accounted for), and
//! their numbers equal what the state database and the tree hold, and what
//! `gomirror status --json` prints.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use prometheus_parse::{Scrape, Value};

use crate::daemon::{count, daemon_config, modules, wait_for, Daemon};
use crate::harness::{gomirror, run_command, Mirror};
use crate::upstream::Upstream;

/// Parses `text` strictly: every sample line must become a sample of a
/// family with HELP and TYPE (the parser skips lines it cannot read, so
/// they are counted here).
pub(crate) fn parse(text: &str) -> Scrape {
    let lines = text.lines().map(|l| Ok(l.to_string()));
    let scrape = Scrape::parse(lines).expect("exposition text parses");
    let sample_lines = text
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count();
    assert_eq!(
        scrape.samples.len(),
        sample_lines,
        "unparsed lines in:\n{text}"
    );
    for s in &scrape.samples {
        assert!(
            matches!(s.value, Value::Gauge(_) | Value::Counter(_)),
            "{} has no TYPE",
            s.metric
        );
        assert!(
            scrape.docs.contains_key(&s.metric),
            "{} has no HELP",
            s.metric
        );
    }
    scrape
}

/// `name{label="value"}` → its value; panics if absent.
pub(crate) fn get(scrape: &Scrape, name: &str, label: Option<(&str, &str)>) -> f64 {
    let found = scrape
        .samples
        .iter()
        .find(|s| s.metric == name && label.is_none_or(|(k, v)| s.labels.get(k) == Some(v)));
    match found.map(|s| &s.value) {
        Some(Value::Gauge(v) | Value::Counter(v)) => *v,
        _ => panic!("no sample {name} {label:?}"),
    }
}

fn has(scrape: &Scrape, name: &str) -> bool {
    scrape.samples.iter().any(|s| s.metric == name)
}

/// The metrics equal the database: version and run counts, bytes, the
/// newest run's row and when it ended.
fn check_against_database(scrape: &Scrape, mirror: &Mirror) {
    let n = |q: &str| count(mirror, q) as f64;
    for status in ["published", "pending", "quarantined", "not_found", "failed"] {
        let want = n(&format!(
            "SELECT COUNT(*) FROM versions WHERE status = '{status}'"
        ));
        let got = get(scrape, "gomirror_versions", Some(("status", status)));
        assert_eq!(got, want, "gomirror_versions{{status={status:?}}}");
    }
    for outcome in ["ok", "partial", "failed", "interrupted", "running"] {
        let want = n(&format!(
            "SELECT COUNT(*) FROM runs WHERE outcome = '{outcome}'"
        ));
        let got = get(scrape, "gomirror_runs", Some(("outcome", outcome)));
        assert_eq!(got, want, "gomirror_runs{{outcome={outcome:?}}}");
    }
    assert_eq!(
        get(scrape, "gomirror_modules", None),
        n("SELECT COUNT(*) FROM modules")
    );
    let bytes =
        n("SELECT SUM(info_size + mod_size + zip_size) FROM versions WHERE status = 'published'");
    assert_eq!(get(scrape, "gomirror_published_bytes", None), bytes);

    let last = "FROM runs WHERE outcome != 'running' ORDER BY id DESC LIMIT 1";
    for (metric, label, column) in [
        (
            "gomirror_last_run_versions",
            Some(("outcome", "published")),
            "published",
        ),
        (
            "gomirror_last_run_versions",
            Some(("outcome", "not_found")),
            "not_found",
        ),
        (
            "gomirror_last_run_versions",
            Some(("outcome", "skipped")),
            "skipped",
        ),
        ("gomirror_last_run_planned_versions", None, "planned"),
        ("gomirror_last_run_published_bytes", None, "bytes"),
    ] {
        let want = n(&format!("SELECT {column} {last}"));
        assert_eq!(get(scrape, metric, label), want, "{metric} {label:?}");
    }
    let ended: String = mirror
        .db()
        .query_row(&format!("SELECT ended_at {last}"), [], |r| r.get(0))
        .expect("the newest run ended");
    let ended = time::OffsetDateTime::parse(&ended, &time::format_description::well_known::Rfc3339)
        .expect("RFC 3339")
        .unix_timestamp() as f64;
    assert_eq!(
        get(scrape, "gomirror_last_run_timestamp_seconds", None),
        ended
    );
}

/// `du`'s count of `dir`: allocated blocks of every file and directory.
fn du(dir: &Path) -> (u64, u64) {
    let (mut bytes, mut files) = (0, 0);
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        bytes += std::fs::symlink_metadata(&d).expect("stat dir").blocks() * 512;
        for e in std::fs::read_dir(&d).expect("read dir") {
            let e = e.expect("entry");
            let meta = e.metadata().expect("stat");
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                files += 1;
                bytes += meta.blocks() * 512;
            }
        }
    }
    (bytes, files)
}

/// Three versions published and one not found upstream.
async fn partial_mirror() -> (Upstream, Mirror) {
    let upstream = Upstream::start(modules(3)).await;
    let mirror = Mirror::new(
        &upstream.url(),
        &[
            ("example.com/d0", "v1.0.0"),
            ("example.com/d1", "v1.0.0"),
            ("example.com/d2", "v1.0.0"),
            ("example.com/gone", "v1.0.0"),
        ],
    );
    std::fs::create_dir(mirror.dir.path().join("node")).expect("textfile dir");
    (upstream, mirror)
}

/// `gomirror status` and `--json` show the numbers the metrics show.
async fn check_status(scrape: &Scrape, config: &Path, bytes: u64, files: u64) {
    let status = run_command(gomirror(config, &["status", "--json"])).await;
    assert_eq!(status.code, Some(0), "{status:#?}");
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status JSON");
    for s in ["published", "pending", "quarantined", "not_found", "failed"] {
        let metric = get(scrape, "gomirror_versions", Some(("status", s)));
        assert_eq!(json["versions"][s].as_f64(), Some(metric), "status {s}");
    }
    assert_eq!(
        json["published_bytes"].as_f64(),
        Some(get(scrape, "gomirror_published_bytes", None))
    );
    assert_eq!(
        json["tree"]["disk_usage_bytes"].as_f64(),
        Some(bytes as f64)
    );
    assert_eq!(json["tree"]["files"].as_f64(), Some(files as f64));
    assert_eq!(json["run_totals"]["partial"].as_f64(), Some(1.0));
    let human = run_command(gomirror(config, &["status"])).await;
    assert!(
        human.stdout.contains(&format!("tree: {files} files, ")),
        "{human:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_textfile_parses_and_equals_the_database_and_status() {
    let (upstream, mirror) = partial_mirror().await;
    let config = daemon_config(&mirror, "[metrics]\ntextfile = \"node/gomirror.prom\"\n");
    let run = run_command(gomirror(&config, &["sync", "--no-progress"])).await;
    assert_eq!(run.code, Some(1), "one version is not found: {run:#?}");
    let text = std::fs::read_to_string(mirror.dir.path().join("node/gomirror.prom"))
        .expect("the textfile is written");
    let scrape = parse(&text);
    check_against_database(&scrape, &mirror);
    assert_eq!(
        get(&scrape, "gomirror_versions", Some(("status", "published"))),
        3.0
    );
    assert_eq!(
        get(&scrape, "gomirror_versions", Some(("status", "not_found"))),
        1.0
    );
    assert_eq!(
        get(
            &scrape,
            "gomirror_last_run_outcome",
            Some(("outcome", "partial"))
        ),
        1.0
    );
    assert_eq!(
        get(
            &scrape,
            "gomirror_last_run_outcome",
            Some(("outcome", "ok"))
        ),
        0.0
    );
    // Partial: it completed, but nothing was ever fully ok.
    assert!(
        !has(&scrape, "gomirror_last_success_timestamp_seconds"),
        "{text}"
    );
    assert_eq!(
        get(
            &scrape,
            "gomirror_last_completed_run_timestamp_seconds",
            None
        ),
        get(&scrape, "gomirror_last_run_timestamp_seconds", None)
    );
    // Upstream counters are the run's own: the test server counted the same requests, but
    // for a race: a version's three requests run together, and when one answers 404 the
    // other two are dropped; one dropped before it reached the server is counted only here.
    let requests = get(&scrape, "gomirror_last_run_upstream_requests", None);
    let served = upstream.total_requests() as f64;
    assert!(
        (served..=served + 2.0).contains(&requests),
        "{requests} requests counted, {served} served"
    );
    assert_eq!(
        get(&scrape, "gomirror_last_run_upstream_retries", None),
        0.0
    );
    let not_found = get(
        &scrape,
        "gomirror_last_run_upstream_responses",
        Some(("class", "4xx")),
    );
    assert!(not_found >= 1.0, "the missing version's 404: {text}");
    let (bytes, files) = du(&mirror.tree());
    assert_eq!(
        get(&scrape, "gomirror_tree_disk_usage_bytes", None),
        bytes as f64
    );
    assert_eq!(get(&scrape, "gomirror_tree_files", None), files as f64);
    // Only the textfile, no temporary file beside it.
    let names: Vec<_> = std::fs::read_dir(mirror.dir.path().join("node"))
        .expect("read textfile dir")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, ["gomirror.prom"]);

    check_status(&scrape, &config, bytes, files).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_serves_metrics_over_http_equal_to_the_textfile() {
    let (_upstream, mirror) = partial_mirror().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // One tick a minute, 3 s from now: the scrape below comes long before
    // the next (every 10 s raced it on a loaded machine).
    let second = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs()
        + 3)
        % 60;
    let extra = format!(
        "[daemon]\nschedule = \"{second} * * * * *\"\n\
         [metrics]\ntextfile = \"node/gomirror.prom\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = daemon_config(&mirror, &extra);
    let daemon = Daemon::start(&config);
    let finished = "SELECT COUNT(*) FROM runs WHERE outcome != 'running'";
    wait_for(&mirror, "a finished run", finished, 1).await;
    let textfile = mirror.dir.path().join("node/gomirror.prom");
    // The textfile follows the run's database row; wait until it shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let from_file = loop {
        let text = std::fs::read_to_string(&textfile).unwrap_or_default();
        if text.contains("gomirror_last_run_timestamp_seconds") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no run in the textfile:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // The next tick is a minute away: scrape and stop before it, so
    // nothing changes in between.
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let resp = client.get(&url).send().await.expect("GET /metrics");
    assert_eq!(resp.status(), 200);
    let content_type = resp.headers()[reqwest::header::CONTENT_TYPE]
        .to_str()
        .expect("ascii")
        .to_string();
    assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
    let from_http = resp.text().await.expect("body");
    let other = client
        .get(format!("http://127.0.0.1:{port}/"))
        .send()
        .await
        .expect("GET /");
    assert_eq!(other.status(), 404);
    let (code, log) = daemon.stop(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{log}");

    // Both were rendered from what the one run left, with no run since.
    assert_eq!(from_http, from_file);
    let http = parse(&from_http);
    assert!(
        has(&http, "gomirror_daemon_skipped_ticks_total"),
        "{from_http}"
    );
    check_against_database(&http, &mirror);
}

/// A metrics address the daemon cannot bind stops it at start (exit 2),
/// naming the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_exits_2_when_the_metrics_address_is_taken() {
    let (_upstream, mirror) = partial_mirror().await;
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("address");
    let extra = format!("[metrics]\nlisten = \"{addr}\"\n");
    let config = daemon_config(&mirror, &extra);
    let run = tokio::time::timeout(
        Duration::from_secs(30),
        run_command(gomirror(&config, &["daemon"])),
    )
    .await
    .expect("the daemon exits at once");
    assert_eq!(run.code, Some(2), "{run:#?}");
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(&format!("gomirror: metrics listener {addr}: ")),
        "{run:#?}"
    );
    assert_eq!(
        count(&mirror, "SELECT COUNT(*) FROM runs"),
        0,
        "no run started"
    );
}

/// A textfile that cannot be written (its directory's place taken by a file) no longer
/// keeps `/metrics` at 503: the listener serves every run, counting the failed writes in
/// `gomirror_metrics_textfile_errors_total`; the log says why; `status` shows the textfile
/// missing. A textfile whose directory is merely missing gets it created.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_metrics_survive_an_unwritable_textfile() {
    let (_upstream, mirror) = partial_mirror().await;
    std::fs::write(mirror.dir.path().join("blocker"), "a file, not a directory").expect("write");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let extra = format!(
        "[daemon]\nschedule = \"*/10 * * * * *\"\n\
         [metrics]\ntextfile = \"blocker/gomirror.prom\"\nlisten = \"127.0.0.1:{port}\"\n"
    );
    let config = daemon_config(&mirror, &extra);
    let daemon = Daemon::start(&config);
    let finished = "SELECT COUNT(*) FROM runs WHERE outcome != 'running'";
    wait_for(&mirror, "a finished run", finished, 1).await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let url = format!("http://127.0.0.1:{port}/metrics");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let scrape = loop {
        let resp = client.get(&url).send().await.expect("GET /metrics");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        if status == 200 && text.contains("gomirror_last_run_timestamp_seconds") {
            break text;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "/metrics never showed the run: {status}\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let parsed = parse(&scrape);
    check_against_database(&parsed, &mirror);
    // Once at start, then after each run.
    let errors = get(&parsed, "gomirror_metrics_textfile_errors_total", None);
    assert!(errors >= 2.0, "{scrape}");
    let textfile = mirror.dir.path().join("blocker/gomirror.prom");
    let status = run_command(gomirror(&config, &["status"])).await;
    assert!(
        status.stdout.contains(&format!(
            "metrics textfile {}: missing\n",
            textfile.display()
        )),
        "{status:#?}"
    );
    let (code, log) = daemon.stop(Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{log}");
    let want = format!(
        "metrics textfile not written: metrics textfile {}: create directory: ",
        textfile.display()
    );
    assert!(log.contains(&want), "want {want:?} in:\n{log}");

    // A missing directory is created, as the state database's is.
    let config = daemon_config(&mirror, "[metrics]\ntextfile = \"new/dir/gomirror.prom\"\n");
    let run = run_command(gomirror(&config, &["sync", "--no-progress"])).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let written = mirror.dir.path().join("new/dir/gomirror.prom");
    let text = std::fs::read_to_string(&written).expect("textfile written");
    assert!(text.contains("gomirror_versions"), "{text}");
    let status = run_command(gomirror(&config, &["status"])).await;
    let line = format!("metrics textfile {}: written ", written.display());
    assert!(status.stdout.contains(&line), "{status:#?}");
}
