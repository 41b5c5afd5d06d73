//! `gomirror sync` (one run) and `gomirror daemon` (runs on a schedule):
//! the commands that fetch. Each wires signals, the progress bar and the
//! metrics textfile around the library's run, and turns its report into an
//! exit code.

use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use gomirror::config::Config;
use gomirror::daemon;
use gomirror::error::Chain;
use gomirror::metrics::{self, LastRun};
use gomirror::state::RunOutcome;
use gomirror::sync::project::{LockWait, ProjectOnly};
use gomirror::sync::{self, Report};
use tokio_util::sync::CancellationToken;

use super::output::note;
use super::progress::{self, Bar};
use super::{report, signals};

/// `gomirror sync`: one run; exit 0 when every planned version is present.
pub async fn once(
    config: Config,
    no_progress: bool,
    options: sync::RunOptions,
) -> anyhow::Result<ExitCode> {
    let token = CancellationToken::new();
    let stopped_by = signals::spawn_signal_handler(token.clone(), None);
    let bar = Arc::new(Bar::new(progress::visible(no_progress)));
    let result = sync::run_with(&config, bar.clone(), token, options).await;
    bar.finish();
    write_metrics(&config, &result).await;
    let report = result?;
    report::sync(&report);
    Ok(exit_code(&report, stopped_by.load(Ordering::Relaxed)))
}

/// The metrics textfile after a run, if configured; a failure is only logged.
async fn write_metrics(config: &Config, result: &Result<Report, sync::SyncError>) {
    if config.metrics.textfile.is_some() {
        let last_run = result.as_ref().ok().map(LastRun::of);
        match metrics::after_run(config, last_run, None).await {
            Ok(done) => {
                if let Err(e) = done.textfile {
                    tracing::warn!("metrics textfile not written: {}", Chain(&e));
                }
            }
            Err(e) => tracing::warn!("metrics not written: {}", Chain(&e)),
        }
    }
}

/// `sync --wait`: how long to wait, and the line that says so on stderr.
pub fn lock_wait(timeout: Duration) -> LockWait {
    fn waiting(pid: Option<u32>) {
        let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
        note!("waiting for the running sync{pid}…");
    }
    LockWait { timeout, waiting }
}

/// `gomirror sync --project DIR [--wait]`: computes the project's closure before taking
/// the lock (reading the tree and upstream only, so concurrent CI jobs do that part in
/// parallel), then mirrors what the tree still lacks of it. Exit 0 when everything it
/// needs is present, 1 if anything is missing (listed with why), 2 if it could not run.
/// See: #12
pub async fn project(
    config: Config,
    dir: &Path,
    no_progress: bool,
    mut options: sync::RunOptions,
) -> anyhow::Result<ExitCode> {
    let token = CancellationToken::new();
    let stopped_by = signals::spawn_signal_handler(token.clone(), None);
    let only = ProjectOnly::compute(&config, dir, token.clone()).await?;
    options.project = Some(Arc::new(only));
    let bar = Arc::new(Bar::new(progress::visible(no_progress)));
    let result = sync::run_with(&config, bar.clone(), token, options).await;
    bar.finish();
    write_metrics(&config, &result).await;
    let report = result?;
    report::sync(&report);
    report::project_missing(&report);
    let signal = stopped_by.load(Ordering::Relaxed);
    if signal != 0 && report.summary.outcome == RunOutcome::Interrupted {
        return Ok(ExitCode::from(128 + signal as u8));
    }
    let complete = report.plan_errors.is_empty()
        && report
            .projects
            .iter()
            .all(|p| p.error.is_none() && p.counts.missing() == 0);
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// A finished run's exit code; `signal` is the stop signal's number, 0 if
/// none came.
fn exit_code(report: &Report, signal: i32) -> ExitCode {
    if report.plan_only {
        return if report.plan_errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    if report.all_ok() {
        ExitCode::SUCCESS
    } else if signal != 0 && report.summary.outcome == RunOutcome::Interrupted {
        // Stopped on request, not failed: 128 + signal, as a shell reports
        // it, so a script sees the run is incomplete, and a systemd oneshot
        // stopped by `systemctl stop` is not marked failed
        // (gomirror-sync.service lists 143 in SuccessExitStatus=).
        ExitCode::from(128 + signal as u8)
    } else {
        ExitCode::from(1)
    }
}

/// `gomirror daemon`: runs until SIGTERM or SIGINT; SIGHUP reloads.
pub async fn daemon(config: Config, options: daemon::Options) -> anyhow::Result<ExitCode> {
    let (shutdown, abandon) = (CancellationToken::new(), CancellationToken::new());
    signals::spawn_signal_handler(shutdown.clone(), Some(abandon.clone()));
    let reload = signals::spawn_reload_handler()?;
    let signals = daemon::Signals {
        shutdown,
        abandon,
        reload,
    };
    let stopped = daemon::run(config, options, signals).await?;
    tracing::info!(?stopped, "daemon stopped");
    Ok(ExitCode::SUCCESS)
}
