//! Issue 13, what operators met: output into closed pipes, colour in pipes, config
//! mistakes that were accepted or explained badly, `status` after failed and killed runs,
//! a metrics textfile that cannot be written, and a read-only database or tree.
//! Each test runs the binary and asserts the exit code and the message a user sees.

use std::process::Stdio;

use crate::harness::{run_command, BinRun, Mirror};
use crate::upstream::Upstream;
use crate::zipgen::synthetic_module;

/// Two versions of `example.com/a`.
async fn small_upstream() -> Upstream {
    Upstream::start(vec![
        synthetic_module("example.com/a", "v1.0.0", 3, 1024),
        synthetic_module("example.com/a", "v1.1.0", 3, 1024),
    ])
    .await
}

const WATCH_A: &[(&str, &str)] = &[("example.com/a", "all")];

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
