//! `gomirror daemon`: [`sync::run`] on a cron schedule, one run at a time,
//! with metrics after every run, config reload and a bounded shutdown.
//!
//! Input: a checked [`Config`] (its `[daemon]` schedule and grace), where to
//! re-read it, and [`Signals`] that main.rs fills from SIGTERM/SIGINT and
//! SIGHUP. Output: runs recorded in the state database, metrics (textfile
//! and `/metrics`), and how the daemon stopped ([`Stopped`]).
//!
//! Rules:
//! - Runs never overlap: a tick that comes while a run is going is skipped
//!   and logged (and counted: `gomirror_daemon_skipped_ticks_total`). It is
//!   not queued, so a slow run does not cause a burst of runs after it.
//! - Ticks are computed in UTC, each strictly after the previous tick, so
//!   one tick never fires twice; ticks missed while the host slept are
//!   dropped, not caught up.
//! - Shutdown: no tick starts a run once `shutdown` fires. The run in
//!   flight sees the same token (sync stops taking versions, lets in-flight
//!   ones finish or leaves them pending, records itself `interrupted`) and
//!   gets `[daemon] shutdown_grace` to do so (a second signal cuts that
//!   short). Past that it is abandoned: its
//!   row stays `running` and the next run marks it `interrupted` and takes
//!   up its pending versions; the tree is consistent at every instant
//!   anyway (sync's ordering guarantees).
//! - SIGHUP re-reads the config file. A config that does not load is
//!   logged with its error and the old one stays. The new one applies from
//!   the next tick (a run in flight finishes with the old one), except
//!   `[metrics] listen` and `[serve] index_listen`, which need a restart.
//! - After every run the access log (`[clients]`) is read again, so the
//!   client figures on `/metrics` are fresh (see: #14).

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::{Config, Overrides};
use crate::error::chain;
use crate::metrics::{self, LastRun, Latest};
use crate::sync::{self, Quiet};

/// Where the config came from, to read it again on SIGHUP.
#[derive(Debug, Clone)]
pub struct Options {
    pub config_path: PathBuf,
    pub overrides: Overrides,
}

/// What main.rs turns signals into.
#[derive(Debug)]
pub struct Signals {
    /// SIGTERM or SIGINT: stop taking work, let the run in flight end.
    pub shutdown: CancellationToken,
    /// A second SIGTERM or SIGINT: abandon the run in flight now rather
    /// than at the end of the grace period.
    pub abandon: CancellationToken,
    /// One message per SIGHUP (several pending ones may arrive as one).
    pub reload: mpsc::Receiver<()>,
}

/// Why the daemon could not start (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("metrics listener {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// `[serve] index_listen` cannot be bound (see: #16).
    #[error("index listener {addr}")]
    IndexListen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    /// The state database fails `quick_check` (see: #13).
    #[error(transparent)]
    State(#[from] crate::state::StateError),
}

/// How the daemon stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// No run was going.
    Idle,
    /// The run in flight ended within the grace period and recorded itself.
    RunFinished,
    /// The run in flight was abandoned: the grace period ended, or a second
    /// signal came.
    RunAbandoned,
}

/// Runs until `signals.shutdown` fires.
pub async fn run(config: Config, opts: Options, signals: Signals) -> Result<Stopped, DaemonError> {
    if config.database.exists() {
        // Once at start: a damaged database is refused before any run.
        crate::state::Store::open(&config.database)
            .await?
            .quick_check()
            .await?;
    }
    let latest = Arc::new(Latest::default());
    let listener = start_listener(&config, &latest, &signals.shutdown).await?;
    let index_listener = start_index_listener(&config, &signals.shutdown).await?;
    publish_metrics(&config, &latest, None).await;
    let mut daemon = Daemon {
        config,
        opts,
        latest,
        shutdown: signals.shutdown,
        last_tick: None,
    };
    let running = daemon.schedule_loop(signals.reload).await;
    let grace = daemon.config.daemon.shutdown_grace;
    let stopped = stop(running, grace, &signals.abandon).await;
    if let Some(listener) = listener {
        // The listener stops on the same token; it only has to drain.
        let _ = listener.await;
    }
    if let Some(listener) = index_listener {
        let _ = listener.await;
    }
    Ok(stopped)
}

/// A run in flight, polled by the schedule loop itself rather than
/// spawned: `sync::run`'s future is not `Send` (the compiler cannot prove
/// it for the borrowing stream in its planning stage), and it need not be,
/// since its per-version work is spawned inside it. Dropping it abandons
/// the run.
type RunFuture = Pin<Box<dyn Future<Output = ()>>>;

struct Daemon {
    /// Replaced whole on a successful reload; each run takes a clone.
    config: Config,
    opts: Options,
    latest: Arc<Latest>,
    shutdown: CancellationToken,
    /// The last tick that fired: the next one is the first after it.
    last_tick: Option<DateTime<Utc>>,
}

impl Daemon {
    /// Ticks, reloads and run completions until shutdown; returns the run
    /// still going then, if any.
    async fn schedule_loop(&mut self, mut reload: mpsc::Receiver<()>) -> Option<RunFuture> {
        let mut running: Option<RunFuture> = None;
        let mut reload_open = true;
        let shutdown = self.shutdown.clone();
        loop {
            let next = self.next_tick();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return running,
                got = reload.recv(), if reload_open => match got {
                    Some(()) => self.reload(),
                    None => reload_open = false,
                },
                () = run_ended(&mut running) => running = None,
                () = sleep_until(next) => {
                    let at = next.expect("sleep_until(None) never ends");
                    self.last_tick = Some(at);
                    if running.is_some() {
                        warn!(tick = %at, "previous run still going: tick skipped");
                        self.latest.daemon.skipped_ticks.fetch_add(1, Ordering::Relaxed);
                    } else {
                        running = Some(self.start_run(at));
                    }
                }
            }
        }
    }

    /// The first tick after now and after the last one that fired.
    fn next_tick(&self) -> Option<DateTime<Utc>> {
        let now = Utc::now();
        let after = self.last_tick.map_or(now, |t| t.max(now));
        self.config.daemon.schedule.after(&after).next()
    }

    fn start_run(&self, tick: DateTime<Utc>) -> RunFuture {
        let config = self.config.clone();
        let latest = self.latest.clone();
        let token = self.shutdown.child_token();
        info!(tick = %tick, "run starting");
        Box::pin(async move {
            let last_run = match sync::run(&config, Arc::new(Quiet), token).await {
                Ok(report) => Some(LastRun::of(&report)),
                Err(e) => {
                    error!("run could not proceed: {}", chain(&e));
                    None
                }
            };
            // See: #14: the log read after the run, for fresh figures on /metrics.
            read_clients(&config).await;
            publish_metrics(&config, &latest, last_run).await;
        })
    }

    fn reload(&mut self) {
        let path = &self.opts.config_path;
        match Config::load(path, &self.opts.overrides) {
            Ok(new) => {
                if new.serve.index_listen != self.config.serve.index_listen {
                    warn!("[serve] index_listen changed: it takes effect when the daemon restarts");
                }
                if new.metrics.listen != self.config.metrics.listen {
                    warn!("[metrics] listen changed: it takes effect when the daemon restarts");
                }
                info!(config = %path.display(), schedule = %new.daemon.schedule, "config reloaded");
                self.config = new;
            }
            Err(e) => {
                self.latest
                    .daemon
                    .reload_failures
                    .fetch_add(1, Ordering::Relaxed);
                error!("config reload failed, keeping the previous config: {e}");
            }
        }
    }
}

/// Resolves when the run in `running` ends; never if there is none.
async fn run_ended(running: &mut Option<RunFuture>) {
    match running {
        Some(run) => run.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at` (wall clock); never resolves for `None`.
async fn sleep_until(at: Option<DateTime<Utc>>) {
    let Some(at) = at else {
        return std::future::pending().await;
    };
    let wait = (at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
    tokio::time::sleep(wait).await;
}

/// Gives the run in flight `grace` to end, then abandons it; `abandon`
/// cuts the wait short.
async fn stop(running: Option<RunFuture>, grace: Duration, abandon: &CancellationToken) -> Stopped {
    let Some(mut run) = running else {
        info!("stopping: no run in flight");
        return Stopped::Idle;
    };
    info!(
        grace = %humantime::format_duration(grace),
        "stopping: waiting for the run in flight to finish its versions"
    );
    let ended = tokio::select! {
        ended = tokio::time::timeout(grace, &mut run) => ended.is_ok(),
        () = abandon.cancelled() => false,
    };
    match ended {
        true => Stopped::RunFinished,
        false => {
            drop(run);
            warn!("the run in flight was abandoned before it ended; its versions stay pending for the next run");
            Stopped::RunAbandoned
        }
    }
}

/// Binds `[metrics] listen`, if set, and serves `/metrics` until shutdown.
async fn start_listener(
    config: &Config,
    latest: &Arc<Latest>,
    shutdown: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, DaemonError> {
    let Some(addr) = config.metrics.listen else {
        return Ok(None);
    };
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen { addr, source })?;
    info!(%addr, "serving /metrics");
    let (latest, shutdown) = (latest.clone(), shutdown.clone());
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = metrics::serve(listener, latest, shutdown).await {
            error!("metrics listener {addr} stopped: {e}");
        }
    })))
}

/// Binds `[serve] index_listen`, if set, and serves the downstream index
/// feed (`GET /index`) from the state database until shutdown (see: #16).
async fn start_index_listener(
    config: &Config,
    shutdown: &CancellationToken,
) -> Result<Option<JoinHandle<()>>, DaemonError> {
    let Some(addr) = config.serve.index_listen else {
        return Ok(None);
    };
    // A connection of its own: pages are read while a run writes (WAL).
    let store = crate::state::Store::open(&config.database).await?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::IndexListen { addr, source })?;
    info!(%addr, "serving /index");
    let shutdown = shutdown.clone();
    Ok(Some(tokio::spawn(async move {
        if let Err(e) = crate::serve::serve_index(listener, store, shutdown).await {
            error!("index listener {addr} stopped: {e}");
        }
    })))
}

/// Reads `[clients] access_log`, if set; a failure is logged, never fatal.
async fn read_clients(config: &Config) {
    if config.clients.access_log.is_none() {
        return;
    }
    match crate::state::Store::open(&config.database).await {
        Ok(store) => drop(crate::clients::read_for_run(&store, &config.clients).await),
        Err(e) => warn!("clients not read: {}", chain(&e)),
    }
}

/// Gathers metrics into `latest` and the textfile; a failure is logged,
/// never fatal: the mirror matters more than its metrics. A textfile that
/// cannot be written leaves `/metrics` current (and counts the failure in
/// `gomirror_metrics_textfile_errors_total`). See: #13
async fn publish_metrics(config: &Config, latest: &Latest, last_run: Option<LastRun>) {
    match metrics::after_run(config, last_run, Some(&latest.daemon)).await {
        Ok(done) => {
            latest.set(done.inputs);
            if let Err(e) = done.textfile {
                warn!("metrics textfile not written: {}", chain(&e));
            }
        }
        Err(e) => warn!("metrics not updated: {}", chain(&e)),
    }
}
