//! `gomirror daemon` as systemd runs it: the binary on a cron schedule of a
//! second or two, stopped with SIGTERM and reloaded with SIGHUP.
//!
//! - A schedule runs sync again and again (runs counted in the database),
//!   never two at once: a tick during a run is skipped and logged.
//! - SIGTERM in the middle of a run: exit 0 within the bound, the run
//!   recorded `interrupted`, tree and database agree, and the next run
//!   completes.
//! - SIGHUP with a broken config keeps the old one (and logs why); with a
//!   valid changed config, the next run uses it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio::process::Child;

use crate::harness::{files_in, gomirror, Mirror};
use crate::upstream::{ModuleFiles, Upstream};
use crate::zipgen::synthetic_module;

/// Every test bounds its waits with this; a daemon that hangs fails the test.
const PATIENCE: Duration = Duration::from_secs(30);

/// `n` modules `example.com/d<i>` at v1.0.0.
pub fn modules(n: usize) -> Vec<ModuleFiles> {
    (0..n)
        .map(|i| synthetic_module(&format!("example.com/d{i}"), "v1.0.0", 3, 1024))
        .collect()
}

/// A mirror of the first `n` of [`modules`].
pub fn mirror_of(upstream: &Upstream, n: usize) -> Mirror {
    let names: Vec<String> = (0..n).map(|i| format!("example.com/d{i}")).collect();
    let watch: Vec<(&str, &str)> = names.iter().map(|m| (m.as_str(), "v1.0.0")).collect();
    Mirror::new(&upstream.url(), &watch)
}

/// The mirror's config with `extra` sections appended, in its own file
/// beside mirror.toml (so relative paths resolve the same). The harness
/// rewrites mirror.toml on every use, so the daemon reads this one.
pub fn daemon_config(mirror: &Mirror, extra: &str) -> PathBuf {
    let base = std::fs::read_to_string(mirror.config_path()).expect("read mirror.toml");
    let path = mirror.dir.path().join("daemon.toml");
    std::fs::write(&path, format!("{base}{extra}")).expect("write daemon.toml");
    path
}

/// A running `gomirror daemon`.
pub struct Daemon {
    pub child: Child,
    pub pid: u32,
    /// Drains stderr as it comes (a full pipe would block the daemon's
    /// logging) and returns all of it at EOF.
    log: tokio::task::JoinHandle<String>,
}

impl Daemon {
    pub fn start(config: &Path) -> Daemon {
        let mut cmd = gomirror(config, &["daemon"]);
        cmd.env("GOMIRROR_LOG", "info")
            .env("NO_COLOR", "1")
            .env_remove("JOURNAL_STREAM")
            .stdout(Stdio::null());
        let mut child = cmd.spawn().expect("spawn gomirror daemon");
        let pid = child.id().expect("running");
        let mut stderr = child.stderr.take().expect("stderr is piped");
        let log = tokio::spawn(async move {
            let mut log = String::new();
            stderr.read_to_string(&mut log).await.expect("read stderr");
            log
        });
        Daemon { child, pid, log }
    }

    pub fn signal(&self, name: &str) {
        let sent = std::process::Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -{name} {}", self.pid);
    }

    /// True while the process has not exited.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then the exit code and everything it logged; fails if it
    /// takes longer than `bound`.
    pub async fn stop(mut self, bound: Duration) -> (Option<i32>, String) {
        self.signal("TERM");
        let sent = Instant::now();
        let status = tokio::time::timeout(bound, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the daemon did not exit within {bound:?} of SIGTERM"))
            .expect("wait for the daemon");
        eprintln!("daemon stopped {:?} after SIGTERM", sent.elapsed());
        let log = self.log.await.expect("stderr reader");
        (status.code(), log)
    }
}

/// Polls the state database until `query` (one integer) reaches `want`.
pub async fn wait_for(mirror: &Mirror, what: &str, query: &str, want: i64) {
    let deadline = Instant::now() + PATIENCE;
    loop {
        if count(mirror, query) >= want {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One integer from the state database; 0 while it does not exist yet.
pub fn count(mirror: &Mirror, query: &str) -> i64 {
    if !mirror.database().exists() {
        return 0;
    }
    mirror.db().query_row(query, [], |r| r.get(0)).unwrap_or(0)
}

fn outcomes(mirror: &Mirror) -> Vec<String> {
    let db = mirror.db();
    let mut stmt = db
        .prepare("SELECT outcome FROM runs ORDER BY id")
        .expect("prepare");
    stmt.query_map([], |r| r.get(0))
        .expect("query runs")
        .collect::<Result<_, _>>()
        .expect("read runs")
}

/// What a client relies on at every instant, even after a crash: every
/// version a list names has its three files. Returns the listed versions.
fn check_lists_name_whole_versions(mirror: &Mirror) -> Vec<(String, String)> {
    let tree = mirror.tree();
    let mut listed = Vec::new();
    for rel in files_in(&tree).iter().filter(|f| f.ends_with("/@v/list")) {
        let module = rel.trim_end_matches("/@v/list");
        let list = std::fs::read_to_string(tree.join(rel)).expect("read list");
        for version in list.lines().filter(|l| !l.is_empty()) {
            for ext in ["info", "mod", "zip"] {
                let file = tree.join(format!("{module}/@v/{version}.{ext}"));
                assert!(
                    file.is_file(),
                    "{rel} names {version}, but {} is missing",
                    file.display()
                );
            }
            listed.push((module.to_string(), version.to_string()));
        }
    }
    listed
}

/// What the next run relies on after a run that recorded its end: the
/// above, a version in a list is published in the database, and every
/// published row has its files.
fn check_consistent(mirror: &Mirror) {
    for (module, version) in check_lists_name_whole_versions(mirror) {
        let status = mirror.row(&module, &version).status;
        assert_eq!(status, "published", "{module}@{version}");
    }
    let tree = mirror.tree();
    for row in mirror.rows().iter().filter(|r| r.status == "published") {
        let zip = tree.join(format!("{}/@v/{}.zip", row.path, row.version));
        assert!(
            zip.is_file(),
            "published in the database, missing in the tree: {row:?}"
        );
    }
}

const FINISHED_RUNS: &str = "SELECT COUNT(*) FROM runs WHERE outcome != 'running'";
const OK_RUNS: &str = "SELECT COUNT(*) FROM runs WHERE outcome = 'ok'";

/// A two-second schedule runs sync again and again; runs never overlap,
/// and a tick during a slow run is skipped and logged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedule_runs_syncs_one_at_a_time() {
    let upstream = Upstream::start(modules(3)).await;
    // The first run, which fetches, takes longer than the 2 s between
    // ticks, so it spans one; later runs find everything published and
    // fetch nothing.
    upstream.faults().set_latency(Duration::from_millis(2500));
    let mirror = mirror_of(&upstream, 3);
    let config = daemon_config(&mirror, "[daemon]\nschedule = \"*/2 * * * * *\"\n");
    let daemon = Daemon::start(&config);
    wait_for(&mirror, "three finished runs", FINISHED_RUNS, 3).await;
    let (code, log) = daemon.stop(PATIENCE).await;
    assert_eq!(code, Some(0), "{log}");

    let runs = outcomes(&mirror);
    assert!(runs.len() >= 3, "{runs:?}");
    assert!(runs.iter().all(|o| o == "ok"), "{runs:?}\n{log}");
    // One run at a time: every run but the last ended before the next began.
    let overlaps = count(
        &mirror,
        "SELECT COUNT(*) FROM runs a JOIN runs b ON b.id = a.id + 1 WHERE b.started_at < a.ended_at",
    );
    assert_eq!(overlaps, 0, "{log}");
    assert!(
        log.contains("tick skipped"),
        "no skipped tick logged:\n{log}"
    );
    assert_eq!(mirror.rows().len(), 3);
    assert!(mirror.rows().iter().all(|r| r.status == "published"));
    check_consistent(&mirror);
}

/// SIGTERM in the middle of a run: exit 0 within the bound, the run
/// recorded `interrupted`, tree and database agree; the next daemon's
/// first run completes the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_run_exits_0_and_the_next_run_completes() {
    let upstream = Upstream::start(modules(20)).await;
    upstream.faults().set_latency(Duration::from_millis(300));
    let mut mirror = mirror_of(&upstream, 20);
    mirror.fetch.push_str("concurrency = 2\n");
    let extra = "[daemon]\nschedule = \"* * * * * *\"\nshutdown_grace = \"10s\"\n";
    let config = daemon_config(&mirror, extra);
    let daemon = Daemon::start(&config);
    let published = "SELECT COUNT(*) FROM versions WHERE status = 'published'";
    wait_for(&mirror, "a run under way", published, 2).await;
    let (code, log) = daemon.stop(Duration::from_secs(15)).await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(outcomes(&mirror), ["interrupted"], "{log}");
    let done = count(&mirror, published);
    assert!(done < 20, "the run was not interrupted: {done} published");
    check_consistent(&mirror);

    upstream.faults().set_latency(Duration::ZERO);
    let daemon = Daemon::start(&config);
    wait_for(&mirror, "a complete run", OK_RUNS, 1).await;
    let (code, log) = daemon.stop(PATIENCE).await;
    assert_eq!(code, Some(0), "{log}");
    assert!(mirror.rows().iter().all(|r| r.status == "published"));
    assert_eq!(mirror.rows().len(), 20);
    check_consistent(&mirror);
}

/// A run that cannot record its end (the test holds the database's write
/// lock) is abandoned: when the grace period ends, or at once on a second
/// SIGTERM. Either way the daemon exits 0, clients never see a listed
/// version without its files, and the next run takes the abandoned one up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_run_is_abandoned_after_the_grace_or_a_second_sigterm() {
    let upstream = Upstream::start(modules(20)).await;
    upstream.faults().set_latency(Duration::from_millis(300));
    let mut mirror = mirror_of(&upstream, 20);
    mirror.fetch.push_str("concurrency = 2\n");
    let published = "SELECT COUNT(*) FROM versions WHERE status = 'published'";
    for (grace, second_sigterm) in [("1s", false), ("60s", true)] {
        let extra = format!("[daemon]\nschedule = \"* * * * * *\"\nshutdown_grace = \"{grace}\"\n");
        let config = daemon_config(&mirror, &extra);
        let daemon = Daemon::start(&config);
        let before = count(&mirror, published);
        wait_for(&mirror, "a run under way", published, before + 1).await;
        let mut lock = mirror.db();
        let hold = lock
            .transaction_with_behavior(rusqlite::TransactionBehavior::Exclusive)
            .expect("take the database's write lock");
        if second_sigterm {
            daemon.signal("TERM");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        // The first SIGTERM of the 60 s case is already sent; stop() sends
        // the next one. Either way no grace of 60 s is waited for.
        let (code, log) = daemon.stop(Duration::from_secs(15)).await;
        hold.rollback().expect("release the lock");
        assert_eq!(code, Some(0), "{log}");
        assert!(log.contains("abandoned"), "grace {grace}:\n{log}");
        check_lists_name_whole_versions(&mirror);
        let running = "SELECT COUNT(*) FROM runs WHERE outcome = 'running'";
        assert_eq!(
            count(&mirror, running),
            1,
            "the abandoned run could not record its end"
        );
    }

    upstream.faults().set_latency(Duration::ZERO);
    let config = daemon_config(&mirror, "[daemon]\nschedule = \"* * * * * *\"\n");
    let daemon = Daemon::start(&config);
    wait_for(&mirror, "a complete run", OK_RUNS, 1).await;
    let (code, log) = daemon.stop(PATIENCE).await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(mirror.rows().len(), 20);
    assert!(mirror.rows().iter().all(|r| r.status == "published"));
    let stale = "SELECT COUNT(*) FROM runs WHERE outcome IN ('running', 'ok', 'partial')";
    assert_eq!(
        count(&mirror, stale),
        1,
        "the abandoned runs are marked interrupted: {log}"
    );
    check_consistent(&mirror);
}

/// SIGHUP with a broken config: the daemon keeps running with the old one
/// and says why; with a valid changed config, the next run uses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_a_valid_config_and_keeps_the_old_one_otherwise() {
    let upstream = Upstream::start(modules(2)).await;
    let one = mirror_of(&upstream, 1);
    let schedule = "[daemon]\nschedule = \"* * * * * *\"\n";
    let config = daemon_config(&one, schedule);
    let mut daemon = Daemon::start(&config);
    wait_for(&one, "a first run", OK_RUNS, 1).await;

    let good = std::fs::read_to_string(&config).expect("read config");
    let broken = good.replace("[fetch]\n", "[fetch]\nconcurrency = 0\n");
    let broken_line = 1 + broken
        .lines()
        .position(|l| l == "concurrency = 0")
        .expect("the broken line");
    std::fs::write(&config, broken).expect("break config");
    daemon.signal("HUP");
    let runs = count(&one, OK_RUNS);
    wait_for(&one, "a run after the broken reload", OK_RUNS, runs + 2).await;
    assert!(
        daemon.is_running(),
        "the daemon exited after a broken config"
    );

    // Same directory, so the same tree and database: now with a second module.
    let two = mirror_of(&upstream, 2);
    let two_text = std::fs::read_to_string(two.config_path()).expect("read");
    std::fs::write(&config, format!("{two_text}{schedule}")).expect("write the changed config");
    daemon.signal("HUP");
    let d1 = "SELECT COUNT(*) FROM versions v JOIN modules m ON m.id = v.module_id \
              WHERE m.path = 'example.com/d1' AND v.status = 'published'";
    wait_for(&one, "the added module to be published", d1, 1).await;
    let (code, log) = daemon.stop(PATIENCE).await;
    assert_eq!(code, Some(0), "{log}");
    let want = format!(
        "config reload failed, keeping the previous config: {}:{broken_line}: [fetch] concurrency: must be at least 1, got 0",
        config.display()
    );
    assert!(log.contains(&want), "want {want:?} in:\n{log}");
    assert!(log.contains("config reloaded"), "{log}");
    check_consistent(&one);
}

/// Under systemd (`JOURNAL_STREAM` names our stderr), every log line starts
/// with its syslog priority and carries no timestamp: journald adds its
/// own. A `JOURNAL_STREAM` inherited by a process whose stderr is elsewhere
/// does not count.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logs_are_journal_lines_when_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;

    let upstream = Upstream::start(modules(1)).await;
    // A watched module upstream lacks: the run logs a warning.
    let mirror = Mirror::new(
        &upstream.url(),
        &[("example.com/d0", "v1.0.0"), ("example.com/gone", "latest")],
    );
    let config = mirror.config_path();
    let log_path = mirror.dir.path().join("stderr.log");
    let run_with = |journal_stream: Option<String>| {
        let log = std::fs::File::create(&log_path).expect("create log file");
        let mut cmd = gomirror(&config, &["sync", "--no-progress"]);
        cmd.env("GOMIRROR_LOG", "info").stderr(Stdio::from(log));
        match journal_stream {
            Some(v) => cmd.env("JOURNAL_STREAM", v),
            None => cmd.env_remove("JOURNAL_STREAM"),
        };
        cmd
    };
    let meta = std::fs::File::create(&log_path)
        .and_then(|f| f.metadata())
        .expect("stat log file");
    // File::create truncates the same inode, so dev:ino stays valid.
    let status = |mut cmd: tokio::process::Command| async move {
        // Not `output()`, which would pipe stderr instead of the file.
        cmd.spawn()
            .expect("spawn")
            .wait()
            .await
            .expect("wait")
            .code()
    };
    let cmd = run_with(Some(format!("{}:{}", meta.dev(), meta.ino())));
    assert_eq!(status(cmd).await, Some(1));
    let log = std::fs::read_to_string(&log_path).expect("read log");
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| !l.starts_with("gomirror: "))
        .collect();
    let warning = "<4>example.com/gone: not found upstream";
    assert!(
        lines.iter().any(|l| l.starts_with(warning)),
        "no warning:\n{log}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with("<6>sync finished")),
        "no info:\n{log}"
    );
    for line in &lines {
        let rest = ["<3>", "<4>", "<6>", "<7>"]
            .iter()
            .find_map(|p| line.strip_prefix(p))
            .unwrap_or_else(|| panic!("no priority prefix: {line:?}"));
        // No timestamp and no level word: journald keeps both itself.
        let first = rest.split_whitespace().next().unwrap_or("");
        let is_level = ["ERROR", "WARN", "INFO", "DEBUG"].contains(&first);
        assert!(!first.starts_with("20") && !is_level, "{line:?}");
        assert!(!line.contains('\x1b'), "colour codes: {line:?}");
    }

    let cmd = run_with(Some("1:1".into()));
    assert_eq!(status(cmd).await, Some(1));
    let log = std::fs::read_to_string(&log_path).expect("read log");
    let first = log.lines().next().expect("a log line");
    assert!(
        first.starts_with('{'),
        "not the journal: JSON expected, got {first:?}"
    );
}
