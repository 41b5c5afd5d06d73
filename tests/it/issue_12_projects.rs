//! Issue 12, projects in state and CI: `status` per project (needed, present, missing with
//! reasons, a broken go.mod named by file and line), and `sync --project DIR --wait` from
//! concurrent CI jobs queueing behind a running sync. See: #12

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use gomirror::lock::RunLock;

use crate::graphgen;
use crate::harness::{gomirror, run_command, BinRun, Mirror};
use crate::upstream::Upstream;

/// Writes a project whose go.mod is `text` into `dir`.
fn project(dir: &Path, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).expect("mkdir project");
    std::fs::write(dir.join("go.mod"), text).expect("write go.mod");
    dir.to_path_buf()
}

/// `module example.com/<name>`, go 1.21, requiring `requires`.
fn go_mod(name: &str, requires: &[&str]) -> String {
    let mut s = format!("module example.com/{name}\n\ngo 1.21\n\nrequire (\n");
    for r in requires {
        s += &format!("\t{r}\n");
    }
    s + ")\n"
}

fn canonical(p: &Path) -> String {
    std::fs::canonicalize(p)
        .expect("canonical project dir")
        .display()
        .to_string()
}

fn utf8(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_status_shows_each_project_and_a_broken_go_mod() {
    let upstream = Upstream::start(graphgen::upstream_files()).await;
    let work = tempfile::tempdir().expect("temp dir");
    let good = project(
        &work.path().join("good"),
        &go_mod("good", &["example.com/c v1.2.0"]),
    );
    let lacking = project(
        &work.path().join("lacking"),
        &go_mod(
            "lacking",
            &["example.com/e v1.1.0", "example.com/gone v1.0.0"],
        ),
    );
    let broken = project(
        &work.path().join("broken"),
        "module example.com/broken\n\ngo 1.21\nbogus example.com/c v1.2.0\n",
    );
    let gone = work.path().join("no-such-checkout");
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.extra = [&good, &lacking, &broken, &gone]
        .iter()
        .map(|p| format!("[[project]]\npath = \"{}\"\n", p.display()))
        .collect();
    mirror.extra += NO_TOOLCHAINS;

    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "sync:\n{}", run.stderr);
    // The broken project did not stop the others.
    assert!(mirror.tree().join("example.com/c/@v/v1.2.0.zip").is_file());
    assert!(mirror.tree().join("example.com/e/@v/v1.1.0.zip").is_file());

    let status = mirror.run_bin(&["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let text = &status.stdout;
    let good_line = format!(
        "  {} (go 1.21, toolchain go1.21.0), run #1: 1 needed, 1 present, 0 missing",
        canonical(&good)
    );
    assert!(
        text.lines().any(|l| l == good_line),
        "{good_line:?} in:\n{text}"
    );
    let lacking_line = format!(
        "  {} (go 1.21, toolchain go1.21.0), run #1: 2 needed, 1 present, 1 missing (1 not found upstream)",
        canonical(&lacking)
    );
    assert!(
        text.lines().any(|l| l == lacking_line),
        "{lacking_line:?} in:\n{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.starts_with("    example.com/gone@v1.0.0: not found upstream")),
        "{text}"
    );
    let broken_line = text
        .lines()
        .find(|l| l.starts_with(&format!("  {}, run #1: error: ", canonical(&broken))))
        .unwrap_or_else(|| panic!("no line for the broken project in:\n{text}"));
    assert!(broken_line.contains("go.mod:4"), "{broken_line}");
    let gone_line = format!(
        "  {}, run #1: error: reading {}: No such file or directory (os error 2)",
        gone.display(),
        gone.display()
    );
    assert!(
        text.lines().any(|l| l == gone_line),
        "{gone_line:?} in:\n{text}"
    );

    let json = mirror.run_bin(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json");
    let projects = v["projects"].as_array().expect("projects array");
    let by_dir = |dir: &Path| {
        projects
            .iter()
            .find(|p| p["dir"] == canonical(dir).as_str())
            .unwrap_or_else(|| panic!("{} in {projects:?}", dir.display()))
    };
    assert_eq!(by_dir(&lacking)["counts"]["not_found"], 1);
    assert_eq!(by_dir(&lacking)["missing"][0]["reason"], "not_found");
    assert_eq!(by_dir(&good)["counts"]["present"], 1);
    assert!(by_dir(&broken)["error"]
        .as_str()
        .is_some_and(|e| e.contains("go.mod:4")));

    // A changed go.mod is picked up by the next sync.
    std::fs::write(
        good.join("go.mod"),
        go_mod("good", &["example.com/c v1.2.0", "example.com/t v1.0.0"]),
    )
    .expect("edit go.mod");
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "still the broken one:\n{}", run.stderr);
    assert!(mirror.tree().join("example.com/t/@v/v1.0.0.zip").is_file());
    let status = mirror.run_bin(&["status"]).await;
    let good_line = format!(
        "  {} (go 1.21, toolchain go1.21.0), run #2: 2 needed, 2 present, 0 missing",
        canonical(&good)
    );
    assert!(
        status.stdout.lines().any(|l| l == good_line),
        "{good_line:?} in:\n{}",
        status.stdout
    );
}

/// Runs `gomirror sync --project DIR --wait --no-progress` with `config`.
/// The projects here say `go 1.21` (so `go1.21.0`), and these mirrors verify nothing: no
/// toolchain can be mirrored, which is not what these tests are about.
const NO_TOOLCHAINS: &str = "[toolchain]\nplatforms = []\n";

async fn sync_project(config: &Path, dir: &Path, extra: &[&str]) -> BinRun {
    let mut args = vec!["sync", "--no-progress", "--project", utf8(dir), "--wait"];
    args.extend_from_slice(extra);
    run_command(gomirror(config, &args)).await
}

/// Two CI jobs run `sync --project --wait` while a long sync holds the lock: both wait for
/// it (and for each other), both exit 0, and the tree has both closures.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_concurrent_sync_project_wait_queue_behind_a_running_sync() {
    let upstream = Upstream::start(graphgen::upstream_files()).await;
    let work = tempfile::tempdir().expect("temp dir");
    let one = project(
        &work.path().join("one"),
        &go_mod("one", &["example.com/c v1.2.0"]),
    );
    let two = project(
        &work.path().join("two"),
        &go_mod("two", &["example.com/e v1.1.0", "example.com/t v1.0.0"]),
    );
    // The long sync: every version of a watched module, each request slowed down.
    let mut mirror = Mirror::new(&upstream.url(), &[("example.com/b", "all")]);
    mirror.fetch += "concurrency = 1\n";
    mirror.extra += NO_TOOLCHAINS;
    let config = mirror.config_path();
    upstream.faults().set_latency(Duration::from_millis(400));
    let long = tokio::spawn(run_command(gomirror(&config, &["sync", "--no-progress"])));
    let lock = mirror.tree().join(".gomirror.lock");
    let started = Instant::now();
    while gomirror::lock::is_held(&lock) != Some(true) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "the long sync never took the lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (a, b) = tokio::join!(
        sync_project(&config, &one, &[]),
        sync_project(&config, &two, &[])
    );
    let long = long.await.expect("long sync task");
    assert_eq!(long.code, Some(0), "long sync:\n{}", long.stderr);
    assert_eq!(a.code, Some(0), "project one:\n{}", a.stderr);
    assert_eq!(b.code, Some(0), "project two:\n{}", b.stderr);
    assert!(
        [&a, &b]
            .iter()
            .any(|r| r.stderr.contains("waiting for the running sync (pid ")),
        "nobody said it waited:\n{}\n{}",
        a.stderr,
        b.stderr
    );
    for rel in [
        "example.com/b/@v/v1.1.0.zip",
        "example.com/c/@v/v1.2.0.zip",
        "example.com/e/@v/v1.1.0.zip",
        "example.com/t/@v/v1.0.0.zip",
    ] {
        assert!(mirror.tree().join(rel).is_file(), "{rel} missing");
    }
    // Each said what its project needs and has.
    let line = format!(
        "gomirror: project {} (go 1.21, toolchain go1.21.0), run #",
        canonical(&one)
    );
    assert!(a.stderr.contains(&line), "{line:?} in:\n{}", a.stderr);
    assert!(
        a.stderr.contains(": 1 needed, 1 present, 0 missing"),
        "{}",
        a.stderr
    );
    assert!(
        b.stderr.contains(": 2 needed, 2 present, 0 missing"),
        "{}",
        b.stderr
    );
    // Only the closure: a --project run lists no watched module.
    let status = run_command(gomirror(&config, &["status", "--json"])).await;
    let v: serde_json::Value = serde_json::from_str(&status.stdout).expect("status --json");
    assert_eq!(v["projects"].as_array().map(Vec::len), Some(2), "{v}");
}

/// `--wait-timeout` expiring: a clear message and exit 2; a project with something missing
/// exits 1 and says what and why.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_sync_project_wait_timeout_and_missing_versions() {
    let upstream = Upstream::start(graphgen::upstream_files()).await;
    let work = tempfile::tempdir().expect("temp dir");
    let dir = project(
        &work.path().join("app"),
        &go_mod("app", &["example.com/c v1.2.0", "example.com/gone v1.0.0"]),
    );
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.extra += NO_TOOLCHAINS;
    let config = mirror.config_path();
    std::fs::create_dir_all(mirror.tree()).expect("tree");
    let lock_path = mirror.tree().join(".gomirror.lock");
    let held = RunLock::acquire(&lock_path).expect("hold the run lock");

    let waited = Instant::now();
    let run = sync_project(&config, &dir, &["--wait-timeout", "1s"]).await;
    assert_eq!(run.code, Some(2), "{}", run.stderr);
    assert!(waited.elapsed() >= Duration::from_secs(1));
    let pid = std::process::id();
    assert!(
        run.stderr
            .contains(&format!("waiting for the running sync (pid {pid})…")),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(&format!(
            "gomirror: another gomirror run holds {} (pid {pid}); gave up waiting after 1s",
            lock_path.display()
        )),
        "{}",
        run.stderr
    );
    // Without --wait: exit 2 at once, as before.
    let now = run_command(gomirror(
        &config,
        &["sync", "--no-progress", "--project", utf8(&dir)],
    ))
    .await;
    assert_eq!(now.code, Some(2), "{}", now.stderr);
    assert!(
        now.stderr.contains("another gomirror run holds"),
        "{}",
        now.stderr
    );
    drop(held);

    let run = sync_project(&config, &dir, &[]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("gomirror:   missing example.com/gone@v1.0.0: not found upstream"),
        "{}",
        run.stderr
    );
    assert!(mirror.tree().join("example.com/c/@v/v1.2.0.zip").is_file());
}
