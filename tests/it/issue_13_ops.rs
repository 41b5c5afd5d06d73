//! Issue 13, what operators met: output into closed pipes, colour in pipes, config
//! mistakes that were accepted or explained badly, `status` after failed and killed runs,
//! a metrics textfile that cannot be written, and a read-only database or tree.
//! Each test runs the binary and asserts the exit code and the message a user sees.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use crate::harness::{run_command, small_upstream, BinRun, Mirror, WATCH_A};
use crate::upstream::Upstream;
use crate::zipgen::synthetic_module;

/// `gomirror <args>` with stdout and stderr both on pipes nobody reads.
async fn run_into_closed_pipes(mirror: &Mirror, args: &[&str]) -> BinRun {
    let (out_reader, out_writer) = std::io::pipe().expect("pipe");
    let (err_reader, err_writer) = std::io::pipe().expect("pipe");
    drop((out_reader, err_reader));
    let mut cmd = mirror.command(args);
    cmd.env("GOMIRROR_LOG", "info")
        .stdout(Stdio::from(out_writer))
        .stderr(Stdio::from(err_writer));
    run_command(cmd).await
}

/// `gomirror sync 2>&1 | head -1`: tracing-subscriber reported the failed log write with
/// `eprint!`, which panicked on the same closed stderr and killed the state thread (exit 2,
/// the run left `running`). Now every command ends as it would have with a reader.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_closed_stdout_and_stderr_end_any_command_quietly() {
    let upstream = small_upstream().await;
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    for args in [
        &["sync", "--no-progress", "--log-format", "human"][..],
        &["sync", "--no-progress", "--log-format", "json"],
        &["status"],
        &["status", "--json"],
        &["verify"],
        &["retry"],
        &["--help"],
        &["--version"],
    ] {
        let run = run_into_closed_pipes(&mirror, args).await;
        assert_eq!(run.code, Some(0), "{args:?}: {run:#?}");
    }
    // Both syncs finished and were recorded as such (a dead state thread left `running`).
    let outcomes: Vec<String> = mirror
        .db()
        .prepare("SELECT outcome FROM runs ORDER BY id")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("read runs");
    assert_eq!(outcomes, ["ok", "ok"]);
}

/// `--log-format human` into a pipe or a file: plain text, no escape codes.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_human_logs_have_no_colour_in_a_pipe() {
    let upstream = small_upstream().await;
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    let mut cmd = mirror.command(&["sync", "--no-progress", "--log-format", "human"]);
    cmd.env("GOMIRROR_LOG", "info");
    let run = run_command(cmd).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stderr.contains(" INFO "), "{run:#?}");
    assert!(run.stderr.contains("sync finished run=1"), "{run:#?}");
    assert!(!run.stderr.contains('\u{1b}'), "{:?}", run.stderr);
}

/// A range nothing satisfies is valid, so the run goes on, but it says so instead of
/// silently mirroring nothing.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_empty_range_warns() {
    let upstream = small_upstream().await;
    let mirror = Mirror::new(&upstream.url(), &[("example.com/a", ">=v1.1.0, <v1.1.0")]);
    let mut cmd = mirror.command(&["sync", "--no-progress", "--log-format", "human"]);
    cmd.env("GOMIRROR_LOG", "warn");
    let run = run_command(cmd).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let config = mirror.config_path();
    let want = format!(
        "{}:15: [[watch]] #1 versions: range \">=v1.1.0, <v1.1.0\" selects no version; \
         example.com/a is not mirrored",
        config.display()
    );
    assert!(run.stderr.contains(&want), "want {want:?} in {run:#?}");
    assert!(mirror.rows().is_empty(), "{:?}", mirror.rows());
}

/// `status` (text and `--json`) says why the newest run that did not end ok failed: a run
/// that finished partial names its failing versions and their reasons, a run that could not
/// proceed its whole error chain.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_status_says_why_the_last_run_failed() {
    let q = "example.com/q";
    let mut bad = synthetic_module(q, "v1.0.0", 2, 0);
    bad.zip = crate::zipgen::symlink(&format!("{q}@v1.0.0/")).into();
    let upstream = Upstream::start(vec![
        synthetic_module("example.com/a", "v1.0.0", 3, 1024),
        bad,
    ])
    .await;
    let mut mirror = Mirror::new(&upstream.url(), &[("example.com/a", "all"), (q, "all")]);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");

    let text = mirror.run_bin(&["status"]).await;
    assert_eq!(text.code, Some(0), "{text:#?}");
    let line = last_failure_line(&text);
    assert!(
        line.contains(": run #1 partial: example.com/q@v1.0.0: "),
        "{line}"
    );
    assert!(line.ends_with("file is a symbolic link"), "{line}");
    let json = status_json(&mirror).await;
    let f = &json["last_failure"];
    assert_eq!(f["run"], 1, "{json:#}");
    assert_eq!(f["outcome"], "partial", "{json:#}");
    assert_eq!(f["error"], serde_json::Value::Null, "{json:#}");
    assert_eq!(f["versions_total"], 1, "{json:#}");
    assert_eq!(f["versions"][0]["path"], q, "{json:#}");
    assert_eq!(f["versions"][0]["status"], "quarantined", "{json:#}");
    let at = f["at"].as_str().expect("at");
    assert!(line.starts_with(&format!("last failure: {at}: ")), "{line}");

    // A run that cannot write the tree stops (exit 2): its error chain is kept.
    upstream.add(synthetic_module("example.com/b", "v1.0.0", 3, 1024));
    mirror.watch.push(("example.com/b".into(), "all".into()));
    let b_dir = mirror.tree().join("example.com/b");
    std::fs::create_dir_all(&b_dir).expect("create dir");
    let Some(_read_only) = ReadOnly::make(&b_dir) else {
        return;
    };
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    let cause = run
        .stderr
        .lines()
        .last()
        .and_then(|l| l.strip_prefix("gomirror: "))
        .expect("a gomirror: line")
        .to_owned();
    let text = mirror.run_bin(&["status"]).await;
    let line = last_failure_line(&text);
    assert!(
        line.ends_with(&format!(": run #2 failed: {cause}")),
        "want the run's chain {cause:?} in {line:?}"
    );
    let json = status_json(&mirror).await;
    assert_eq!(json["last_failure"]["outcome"], "failed", "{json:#}");
    assert_eq!(json["last_failure"]["error"], cause.as_str(), "{json:#}");
    assert_eq!(json["runs"][0]["error"], cause.as_str(), "{json:#}");
}

/// A run killed with SIGKILL never records its end, and stayed `running` in `status` until
/// the next run. Its run lock (flock) was released by the kernel when it died, so `status`
/// shows it interrupted; while a live process holds the lock, a run stays `running`.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_status_shows_a_killed_run_as_interrupted() {
    let upstream = small_upstream().await;
    upstream
        .faults()
        .set_latency(std::time::Duration::from_millis(800));
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    let mut child = mirror
        .command(&["sync", "--no-progress"])
        .spawn()
        .expect("spawn sync");
    let pid = child.id().expect("running");
    // The run row exists once the database's lock names the pid and a status shows it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let json = status_json_maybe(&mirror).await;
        if json
            .as_ref()
            .is_some_and(|j| j["runs"][0]["outcome"] == "running")
        {
            let j = json.expect("checked");
            assert_eq!(j["runs"][0]["pid"], pid, "{j:#}");
            assert_eq!(j["run_totals"]["running"], 1, "{j:#}");
            assert_eq!(j["last_failure"], serde_json::Value::Null, "{j:#}");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the run never showed");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("reap");

    let text = mirror.run_bin(&["status"]).await;
    assert_eq!(text.code, Some(0), "{text:#?}");
    assert!(
        text.stdout
            .contains("runs: 0 ok, 0 partial, 0 failed, 1 interrupted, 0 running"),
        "{text:#?}"
    );
    assert!(text.stdout.contains("  #1     "), "{text:#?}");
    assert!(text.stdout.contains(" interrupted "), "{text:#?}");
    let line = last_failure_line(&text);
    assert!(
        line.ends_with(
            ": run #1 interrupted: the run was stopped, or its process died, before it ended"
        ),
        "{line}"
    );
    let json = status_json(&mirror).await;
    assert_eq!(json["runs"][0]["outcome"], "interrupted", "{json:#}");
    assert_eq!(json["last_failure"]["run"], 1, "{json:#}");
    // Showing is all: the database still says running until the next run records it.
    let stored: String = mirror
        .db()
        .query_row("SELECT outcome FROM runs WHERE id = 1", [], |r| r.get(0))
        .expect("run 1");
    assert_eq!(stored, "running");
}

fn last_failure_line(run: &BinRun) -> String {
    run.stdout
        .lines()
        .find(|l| l.starts_with("last failure: "))
        .unwrap_or_else(|| panic!("no last failure line: {run:#?}"))
        .to_owned()
}

async fn status_json_maybe(mirror: &Mirror) -> Option<serde_json::Value> {
    let run = mirror.run_bin(&["status", "--json"]).await;
    (run.code == Some(0))
        .then(|| serde_json::from_str(&run.stdout).ok())
        .flatten()
}

async fn status_json(mirror: &Mirror) -> serde_json::Value {
    let run = mirror.run_bin(&["status", "--json"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    serde_json::from_str(&run.stdout).unwrap_or_else(|e| panic!("{e}: {run:#?}"))
}

/// A directory made read-only for gomirror until dropped: as root (whom file modes do not
/// stop) a read-only bind mount of it onto itself (EROFS), else mode 0555 (EACCES).
struct ReadOnly {
    dir: PathBuf,
    mounted: bool,
}

impl ReadOnly {
    /// `None` after saying why, when root cannot mount here.
    fn make(dir: &Path) -> Option<ReadOnly> {
        if !crate::nginx::is_root() {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o555)).expect("chmod");
            return Some(ReadOnly {
                dir: dir.to_owned(),
                mounted: false,
            });
        }
        let mount = |args: &[&str]| {
            std::process::Command::new("mount")
                .args(args)
                .arg(dir)
                .arg(dir)
                .output()
                .is_ok_and(|o| o.status.success())
        };
        if !mount(&["--bind"]) {
            eprintln!("skipped: root, and `mount --bind` failed: file modes do not stop root");
            return None;
        }
        let guard = ReadOnly {
            dir: dir.to_owned(),
            mounted: true,
        };
        if !mount(&["-o", "remount,bind,ro"]) {
            eprintln!("skipped: root, and a read-only remount failed");
            return None;
        }
        Some(guard)
    }
}

impl Drop for ReadOnly {
    fn drop(&mut self) {
        if self.mounted {
            let _ = std::process::Command::new("umount").arg(&self.dir).status();
        } else {
            let _ = std::fs::set_permissions(&self.dir, std::fs::Permissions::from_mode(0o755));
        }
    }
}

/// `verify` checks a tree it may only read (a read-only mount, or another user's tree): it
/// takes the run lock shared and read-only instead of creating and writing it.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_verify_works_on_a_read_only_tree() {
    let upstream = small_upstream().await;
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let verify = mirror.command(&["verify"]);
    let tree = mirror.tree();
    let Some(_read_only) = ReadOnly::make(&tree) else {
        return;
    };
    let run = run_command(verify).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        run.stderr, "gomirror: verify ok: 2 versions re-hashed, 0 problems\n",
        "{run:#?}"
    );
    // A sync still cannot run there, and says where.
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains(&tree.display().to_string()), "{run:#?}");
}

/// A database gomirror may not write: the message names the file that cannot be written
/// and why, not SQLite's "attempt to write a readonly database" or "unable to open database
/// file". (`status` only reads, and works.)
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_read_only_database_is_named() {
    let upstream = small_upstream().await;
    let mirror = Mirror::new(&upstream.url(), WATCH_A);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let db = mirror.database();
    let Some(_read_only) = ReadOnly::make(&db) else {
        return;
    };
    let status = mirror.run_bin(&["status"]).await;
    assert_eq!(status.code, Some(0), "{status:#?}");
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    let why = if crate::nginx::is_root() {
        "Read-only file system (os error 30)" // a read-only bind mount of the file
    } else {
        "Permission denied (os error 13)" // mode 0555
    };
    let d = db.display();
    let (start, end) = (
        format!("gomirror: state {d}: "),
        format!(": cannot write {d}: {why}\n"),
    );
    assert!(
        run.stderr.starts_with(&start) && run.stderr.ends_with(&end),
        "want {start:?}…{end:?}: {run:#?}"
    );
}
