//! The binary as an operator meets it: the run lock, config errors, the
//! upstream override, `status`, and a tree that cannot take writes. Each test
//! asserts the exit code (STYLE.md §2: 0 all present, 1 some versions not,
//! 2 could not run) and the message on stderr.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::harness::{gomirror, run_command, small_upstream, Mirror, WATCH_A};
use crate::upstream::Upstream;
use crate::zipgen::{self, synthetic_module};

/// Polls until `path` holds `pid` (the run lock's content once taken).
async fn wait_for_pid_in(path: &Path, pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    let want = format!("{pid}\n");
    while std::fs::read_to_string(path).ok().as_deref() != Some(want.as_str()) {
        assert!(
            Instant::now() < deadline,
            "{} never named pid {pid}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_run_on_the_same_tree_or_database_exits_2_naming_the_first() {
    let upstream = small_upstream().await;
    // Slow enough that the first run is still going while the others start.
    upstream.faults().set_latency(Duration::from_millis(600));
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    let mut first = mirror
        .command(&["sync", "--no-progress"])
        .spawn()
        .expect("spawn the first run");
    let pid = first.id().expect("running");
    let tree_lock = mirror.tree().join(".gomirror.lock");
    wait_for_pid_in(&tree_lock, pid).await;
    let mut db_lock = mirror.database().into_os_string();
    db_lock.push(".lock");
    let db_lock = PathBuf::from(db_lock);
    wait_for_pid_in(&db_lock, pid).await;

    // Same config: the tree lock is taken first.
    let second = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(second.code, Some(2), "{second:#?}");
    let want = format!(
        "gomirror: another gomirror run holds {} (pid {pid})",
        tree_lock.display()
    );
    assert_eq!(second.stderr.trim_end(), want, "{second:#?}");

    // Another tree, the same database.
    let other = tempfile::tempdir().expect("temp dir");
    let config = other.path().join("mirror.toml");
    std::fs::write(
        &config,
        format!(
            "[upstream]\nproxies = [\"{}\"]\n[state]\ndatabase = \"{}\"\n\
             [[watch]]\nmodule = \"example.com/a\"\nversions = \"all\"\n",
            upstream.url(),
            mirror.database().display()
        ),
    )
    .expect("write mirror.toml");
    let third = run_command(gomirror(&config, &["sync", "--no-progress"])).await;
    assert_eq!(third.code, Some(2), "{third:#?}");
    let want = format!(
        "gomirror: another gomirror run holds {} (pid {pid})",
        db_lock.display()
    );
    assert_eq!(third.stderr.trim_end(), want, "{third:#?}");

    assert!(
        first.try_wait().expect("poll").is_none(),
        "the refused runs did not return at once: the first run already ended"
    );
    let status = first.wait().await.expect("first run ends");
    assert_eq!(status.code(), Some(0));
    assert!(
        !other.path().join("tree").join("example.com").exists(),
        "the refused run wrote to its tree"
    );
}

/// (config text, what stderr shows after the file name: line, key, reason)
const BAD_CONFIGS: &[(&str, &str)] = &[
    (
        "[upstream]\nproxies = [\"http://127.0.0.1:9\"]\n[fetch]\nconcurrenci = 3\n",
        ":4: [fetch] concurrenci: unknown key (expected one of: concurrency, connect_timeout, \
         read_timeout, header_timeout, min_bytes_per_second, throughput_window, max_attempts, backoff_base, backoff_max, user_agent, requests_per_second)",
    ),
    (
        "[fetch]\nmax_attempts = 3\nconcurrency = \"many\"\n",
        ":3: [fetch] concurrency: invalid type: string \"many\", expected an integer",
    ),
    (
        "[tree]\ndir = 5\n",
        ":2: [tree] dir: invalid type: integer `5`, expected a string",
    ),
    (
        "[[watch]]\nmodule = \"example.com/a\"\n[[watch]]\nmodule = \"example.com/b\"\nversion = \"all\"\n",
        ":5: [[watch]] #2 version: unknown key (expected one of: module, versions)",
    ),
    (
        "[fetch]\nconcurrency = 0\n",
        ":2: [fetch] concurrency: must be at least 1, got 0",
    ),
    (
        "[fetch\nconcurrency = 1\n",
        ":1: unclosed table, expected `]`",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_config_exits_2_naming_file_line_and_key() {
    for (text, want) in BAD_CONFIGS {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = dir.path().join("mirror.toml");
        std::fs::write(&config, text).expect("write mirror.toml");
        let run = run_command(gomirror(&config, &["sync", "--no-progress"])).await;
        assert_eq!(run.code, Some(2), "{text}\n{run:#?}");
        let want = format!("gomirror: {}{want}", config.display());
        assert_eq!(run.stderr, format!("{want}\n"), "{text}");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .expect("list dir")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(left, ["mirror.toml"], "{text}: a bad config still wrote");
        // `status` reads the same file and refuses it the same way.
        let status = run_command(gomirror(&config, &["status"])).await;
        assert_eq!(status.code, Some(2), "{text}\n{status:#?}");
        assert_eq!(status.stderr, format!("{want}\n"), "{text}");
    }
}

/// A URL nothing listens on.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", l.local_addr().expect("addr"));
    drop(l);
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_flag_and_env_replace_the_configured_proxies() {
    let upstream = small_upstream().await;
    let live = upstream.url();
    let dead = dead_url();
    let published = |m: &Mirror| m.rows().iter().filter(|r| r.status == "published").count();

    // As configured: nothing answers, the module cannot even be listed.
    let mirror = Mirror::new(&dead, WATCH_A);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(&dead), "{run:#?}");
    assert_eq!(published(&mirror), 0);

    // --upstream
    let mirror = Mirror::new(&dead, WATCH_A);
    let run = mirror
        .run_bin(&["sync", "--no-progress", "--upstream", &live])
        .await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(published(&mirror), 2);

    // GOMIRROR_UPSTREAM
    let mirror = Mirror::new(&dead, WATCH_A);
    let mut cmd = mirror.command(&["sync", "--no-progress"]);
    cmd.env("GOMIRROR_UPSTREAM", &live);
    let run = run_command(cmd).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(published(&mirror), 2);

    // The flag wins over the environment.
    let mirror = Mirror::new(&dead, WATCH_A);
    let mut cmd = mirror.command(&["sync", "--no-progress", "--upstream", &live]);
    cmd.env("GOMIRROR_UPSTREAM", &dead);
    let run = run_command(cmd).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(published(&mirror), 2);

    // A bad override is a config error naming where it came from.
    let mirror = Mirror::new(&live, WATCH_A);
    let run = mirror
        .run_bin(&["sync", "--no-progress", "--upstream", "direct"])
        .await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    let want = format!(
        "gomirror: {}: --upstream: \"direct\": gomirror needs a proxy",
        mirror.config_path().display()
    );
    assert!(run.stderr.starts_with(&want), "want {want}\n{run:#?}");
    let mut cmd = mirror.command(&["sync", "--no-progress"]);
    cmd.env("GOMIRROR_UPSTREAM", "ftp://example.com");
    let run = run_command(cmd).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains(
            ": GOMIRROR_UPSTREAM: invalid upstream \"ftp://example.com\": unsupported scheme"
        ),
        "{run:#?}"
    );
    assert!(!mirror.database().exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_prints_counts_after_a_run() {
    let a = "example.com/a";
    let q = "example.com/q";
    let good = [
        synthetic_module(a, "v1.0.0", 3, 1024),
        synthetic_module(a, "v1.1.0", 3, 1024),
    ];
    let mut bad = synthetic_module(q, "v1.0.0", 2, 0);
    bad.zip = zipgen::symlink(&format!("{q}@v1.0.0/")).into();
    let mut served = good.to_vec();
    served.push(bad);
    let upstream = Upstream::start(served).await;
    let mirror = Mirror::new(&upstream.url(), &[(a, "all"), (q, "all")]);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");

    let text = mirror.run_bin(&["status"]).await;
    assert_eq!(text.code, Some(0), "{text:#?}");
    let mut lines = text.stdout.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with("2 modules, 2 versions published, 0 for their go.mod only ("),
        "{text:#?}"
    );
    assert_eq!(
        lines.next(),
        Some("pending 0, quarantined 1 (kept out until `gomirror retry`), not found 0, failed 0"),
        "{text:#?}"
    );
    assert!(text.stdout.contains("recent runs:"), "{text:#?}");
    assert!(
        text.stdout
            .contains(&format!("{q}@v1.0.0  quarantined after 1 attempt(s)")),
        "{text:#?}"
    );
    assert!(
        text.stdout.contains("link: file is a symbolic link"),
        "{text:#?}"
    );

    let json = mirror.run_bin(&["status", "--json"]).await;
    assert_eq!(json.code, Some(0), "{json:#?}");
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json is JSON");
    assert_eq!(v["modules"], 2, "{v:#}");
    assert_eq!(
        v["versions"],
        serde_json::json!({"pending": 0, "published": 2, "mod_only": 0, "quarantined": 1, "not_found": 0, "failed": 0, "pruning": 0, "pruned": 0}),
        "{v:#}"
    );
    let sizes: u64 = good
        .iter()
        .map(|m| {
            (m.zip.len() + m.info.as_ref().unwrap().len() + m.mod_file.as_ref().unwrap().len())
                as u64
        })
        .sum();
    assert_eq!(v["published_bytes"], sizes, "{v:#}");
    let runs = v["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 1, "{v:#}");
    assert_eq!(runs[0]["outcome"], "partial", "{v:#}");
    assert_eq!(runs[0]["published"], 2, "{v:#}");
    assert_eq!(runs[0]["quarantined"], 1, "{v:#}");
    let problems = v["problems"].as_array().expect("problems");
    assert_eq!(problems.len(), 1, "{v:#}");
    assert_eq!(problems[0]["path"], q);
    assert_eq!(problems[0]["version"], "v1.0.0");
    assert_eq!(problems[0]["status"], "quarantined");
    let reason = problems[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("file is a symbolic link"), "{reason}");
}

/// `gomirror status | head -1`: a reader that went away is not a panic
/// (STYLE.md §8). Before, `println!` panicked on the closed pipe (exit 101).
/// The pipe's read end is closed before the run starts, so the first write
/// already fails with EPIPE. `retry` answers on stdout too, then says on
/// stderr what it did: the stderr line stays.
// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_closed_stdout_is_not_a_panic() {
    let upstream = small_upstream().await;
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    for args in [&["status"][..], &["status", "--json"], &["retry"]] {
        let (reader, writer) = std::io::pipe().expect("pipe");
        drop(reader);
        let mut cmd = mirror.command(args);
        cmd.stdout(writer);
        let out = run_command(cmd).await;
        assert_eq!(out.code, Some(0), "{args:?}: {out:#?}");
        assert!(!out.stderr.contains("panicked"), "{args:?}: {out:#?}");
        if args == ["retry"] {
            assert_eq!(
                out.stderr,
                "gomirror: retry: 0 failed or quarantined versions back to pending; the next sync fetches them\n",
                "{out:#?}"
            );
        } else {
            assert_eq!(out.stderr, "", "{args:?}: {out:#?}");
        }
    }
}

/// A refused import says why down to the cause: a bundle that is not there
/// names the file, the operation and the cause, through the one chain
/// formatter (before: `…: open`, the cause dropped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_refused_shows_the_whole_chain() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("mirror.toml");
    std::fs::write(&config, "").expect("write mirror.toml");
    let key = dir.path().join("signing.key");
    let keygen = run_command(gomirror(
        &config,
        &[
            "keygen",
            "--name",
            "m.example",
            "--out",
            &key.display().to_string(),
        ],
    ))
    .await;
    assert_eq!(keygen.code, Some(0), "{keygen:#?}");
    std::fs::write(
        &config,
        format!("[import]\ntrusted = [\"{}\"]\n", keygen.stdout.trim()),
    )
    .expect("write mirror.toml");
    let missing = dir.path().join("missing.tar");
    let run = run_command(gomirror(
        &config,
        &["import", &missing.display().to_string()],
    ))
    .await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let m = missing.display();
    assert_eq!(
        run.stderr,
        format!("gomirror: import refused {m}: {m}: open: entity not found\n"),
        "{run:#?}"
    );
}

/// Unmounts on drop, so a failing test does not leave a mount behind.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

fn running_as_root(dir: &Path) -> bool {
    let probe = dir.join("uid-probe");
    std::fs::write(&probe, b"").expect("write a probe file");
    let uid = std::fs::metadata(&probe).expect("stat the probe").uid();
    let _ = std::fs::remove_file(probe);
    uid == 0
}

/// A tree that cannot take the version files: a 1 MiB tmpfs as root (whose
/// writes fail with ENOSPC), else a read-only directory (EACCES; root ignores
/// modes). Either way the run cannot proceed: exit 2 with an error naming the
/// path, and nothing recorded published.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unwritable_tree_exits_2_naming_the_path() {
    let m = "example.com/full";
    // Each zip alone is bigger than the tmpfs.
    let upstream = Upstream::start(vec![
        synthetic_module(m, "v1.0.0", 4, 1536 * 1024),
        synthetic_module(m, "v1.1.0", 4, 1536 * 1024),
    ])
    .await;
    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let tree = mirror.tree();
    std::fs::create_dir_all(&tree).expect("create the tree");
    let _mounted;
    let how = if running_as_root(mirror.dir.path()) {
        let mount = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=1m", "tmpfs"])
            .arg(&tree)
            .output();
        match mount {
            Ok(out) if out.status.success() => {}
            other => {
                eprintln!(
                    "skipped: running as root (file modes do not stop root) and \
                     `mount -t tmpfs -o size=1m` failed: {other:?}"
                );
                return;
            }
        }
        _mounted = Mounted(tree.clone());
        "a full disk"
    } else {
        // The lock file exists, so the run gets past the lock to the writes.
        std::fs::write(tree.join(".gomirror.lock"), b"").expect("pre-create the lock");
        std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o555)).expect("chmod 555");
        "a read-only tree"
    };

    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    if !running_as_root(mirror.dir.path()) {
        let _ = std::fs::set_permissions(&tree, std::fs::Permissions::from_mode(0o755));
    }
    assert_eq!(run.code, Some(2), "{how}: {run:#?}\n{:#?}", mirror.rows());
    let last = run.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("gomirror: ") && last.contains(&tree.display().to_string()),
        "{how}: the error does not name a path in the tree: {run:#?}"
    );
    let published: Vec<_> = mirror
        .rows()
        .into_iter()
        .filter(|r| r.status == "published")
        .collect();
    assert!(published.is_empty(), "{how}: {published:#?}");
}

/// SIGTERM (what `systemctl stop` sends): no new version starts, in-flight
/// ones finish or stay pending, the run is recorded `interrupted`, the exit
/// code is 128 + SIGTERM (143: stopped on request, not failed; the oneshot
/// unit lists it in SuccessExitStatus=), and the next sync completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly_and_the_next_run_completes() {
    let versions: Vec<_> = (0..20)
        .map(|i| synthetic_module(&format!("example.com/t{i}"), "v1.0.0", 3, 1024))
        .collect();
    let upstream = Upstream::start(versions).await;
    upstream.faults().set_latency(Duration::from_millis(300));
    let watch: Vec<(String, &str)> = (0..20)
        .map(|i| (format!("example.com/t{i}"), "v1.0.0"))
        .collect();
    let watch: Vec<(&str, &str)> = watch.iter().map(|(m, v)| (m.as_str(), *v)).collect();
    let mut mirror = Mirror::new(&upstream.url(), &watch);
    mirror.fetch.push_str("concurrency = 2\n");
    let run = mirror
        .command(&["sync", "--no-progress"])
        .spawn()
        .expect("spawn");
    let pid = run.id().expect("running");
    wait_for_pid_in(&mirror.tree().join(".gomirror.lock"), pid).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let stopped = Instant::now();
    let out = run.wait_with_output().await.expect("run ends");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "took {:?} to stop",
        stopped.elapsed()
    );
    assert_eq!(
        out.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gomirror: sync interrupted:"), "{stderr}");
    let outcome: String = mirror
        .db()
        .query_row(
            "SELECT outcome FROM runs ORDER BY id DESC LIMIT 1",
            [],
            |r| r.get(0),
        )
        .expect("run row");
    assert_eq!(outcome, "interrupted");
    let published_before = mirror
        .rows()
        .iter()
        .filter(|r| r.status == "published")
        .count();
    assert!(published_before < 20, "the run was not interrupted at all");

    upstream.faults().set_latency(Duration::ZERO);
    let rerun = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(rerun.code, Some(0), "{rerun:#?}");
    assert!(mirror.rows().iter().all(|r| r.status == "published"));
}

// See: #11
#[tokio::test]
async fn issue_11_a_state_row_that_no_longer_checks_is_skipped_by_sync_and_reported_by_verify() {
    let upstream = small_upstream().await;
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    let first = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(first.code, Some(0), "{first:#?}");
    // Not canonical, so Go's rules refuse it: what a hand edit could leave.
    mirror
        .db()
        .execute(
            "UPDATE versions SET version = 'v1.1' WHERE version = 'v1.1.0'",
            [],
        )
        .expect("edit the state");

    let audit = mirror.run_bin(&["verify"]).await;
    assert_eq!(audit.code, Some(1), "{audit:#?}");
    assert_eq!(
        audit.stdout,
        "example.com/a@v1.1: state holds an invalid version: \
         example.com/a@v1.1: invalid version: not canonical (want v1.1.0)\n",
        "{audit:#?}"
    );
    assert!(
        audit.stderr.contains("2 versions re-hashed, 1 problems"),
        "{audit:#?}"
    );

    // A sync skips the row, says so, and publishes v1.1.0 again under its
    // own row: the files in the tree are the same.
    let again = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert!(
        again.stderr.contains(
            "state holds a version that no longer checks: \
             example.com/a@v1.1: invalid version: not canonical (want v1.1.0)"
        ),
        "{again:#?}"
    );
    let statuses: Vec<_> = mirror
        .rows()
        .into_iter()
        .map(|r| (r.version, r.status))
        .collect();
    let published = |v: &str| (v.to_string(), "published".to_string());
    assert_eq!(
        statuses,
        [published("v1.0.0"), published("v1.1"), published("v1.1.0")]
    );
}
