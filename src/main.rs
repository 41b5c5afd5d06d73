//! The command-line edge: argument parsing, logging, the one runtime,
//! progress bars and exit codes. Exit codes (STYLE.md §2): 0 every planned
//! version is present; 1 the run finished but some versions failed, were
//! not found or were quarantined; 2 the run could not proceed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use gomirror::config::{Config, Override, Overrides};
use gomirror::daemon;
use gomirror::metrics::{self, LastRun};
use gomirror::module::ModVer;
use gomirror::sync::{self, Progress};

#[derive(Parser)]
#[command(name = "gomirror", version, about = "Keeps a static GOPROXY tree warm")]
struct Cli {
    /// Path to mirror.toml.
    #[arg(
        long,
        short,
        global = true,
        env = "GOMIRROR_CONFIG",
        default_value = "mirror.toml"
    )]
    config: PathBuf,
    /// Log format on stderr; `auto` is human on a terminal, journal when
    /// stderr is systemd's journal (plain lines with a syslog priority
    /// prefix, no timestamps), JSON otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum)]
enum LogFormat {
    Auto,
    Human,
    Json,
    Journal,
}

#[derive(Subcommand)]
enum Command {
    /// Fetch, verify and publish what the watchlist asks for, once.
    Sync {
        /// Comma-separated upstream GOPROXY list, replacing [upstream] proxies
        /// (also from GOMIRROR_UPSTREAM).
        #[arg(long)]
        upstream: Option<String>,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Plan only: read the feed and the watchlist, record what to fetch
        /// as pending (the next sync fetches it), fetch nothing.
        #[arg(long)]
        plan_only: bool,
    },
    /// Put failed versions back to pending, with their attempts reset; the
    /// next sync fetches them.
    Retry {
        /// Only modules matching these comma-separated globs (Go path.Match
        /// on leading path elements, as GONOSUMDB); all when omitted.
        pattern: Option<String>,
    },
    /// Sync on the `[daemon] schedule`, until SIGTERM or SIGINT; SIGHUP
    /// re-reads the config.
    Daemon {
        /// Comma-separated upstream GOPROXY list, replacing [upstream] proxies
        /// (also from GOMIRROR_UPSTREAM); kept across SIGHUP.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// What is mirrored, the last runs, and what failed.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Re-check the tree at rest, offline: every published file's h1:
    /// against the state, every lookup of the offline checksum database
    /// against its pinned signed head. Exit 1 on any difference.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("gomirror: {err:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    match cli.command {
        Command::Sync {
            upstream,
            no_progress,
            plan_only,
        } => {
            let overrides = Overrides {
                upstream: upstream_override(upstream),
            };
            let config = Config::load(&cli.config, &overrides)?;
            let options = sync::RunOptions { plan_only };
            runtime.block_on(sync_once(config, no_progress, options))
        }
        Command::Retry { pattern } => {
            let config = Config::load(&cli.config, &Overrides::default())?;
            runtime.block_on(retry(config, pattern))
        }
        Command::Daemon { upstream } => {
            let overrides = Overrides {
                upstream: upstream_override(upstream),
            };
            let config = Config::load(&cli.config, &overrides)?;
            let options = daemon::Options {
                config_path: cli.config.clone(),
                overrides,
            };
            let code = runtime.block_on(run_daemon(config, options))?;
            // A run abandoned after its grace period may leave a publish
            // running on the blocking pool; it is not waited for forever.
            runtime.shutdown_timeout(Duration::from_secs(5));
            Ok(code)
        }
        Command::Status { json } => {
            let config = Config::load(&cli.config, &Overrides::default())?;
            runtime.block_on(status(config, json))
        }
        Command::Verify { json } => {
            let config = Config::load(&cli.config, &Overrides::default())?;
            runtime.block_on(verify(config, json))
        }
    }
}

/// `--upstream` wins over `GOMIRROR_UPSTREAM`; errors name whichever was used.
fn upstream_override(flag: Option<String>) -> Option<Override> {
    let (value, source) = match flag {
        Some(v) => (v, "--upstream"),
        None => (
            std::env::var("GOMIRROR_UPSTREAM").ok()?,
            "GOMIRROR_UPSTREAM",
        ),
    };
    Some(Override {
        value,
        source: source.to_owned(),
    })
}

async fn sync_once(
    config: Config,
    no_progress: bool,
    options: sync::RunOptions,
) -> anyhow::Result<ExitCode> {
    let token = CancellationToken::new();
    let stopped_by = spawn_signal_handler(token.clone(), None);
    let show_bar = !no_progress && std::io::stderr().is_terminal();
    let bar = Arc::new(Bar::new(show_bar));
    let result = sync::run_with(&config, bar.clone(), token, options).await;
    bar.finish();
    if config.metrics.textfile.is_some() {
        let last_run = result.as_ref().ok().map(LastRun::of);
        if let Err(e) = metrics::after_run(&config, last_run, None).await {
            tracing::warn!("metrics not written: {e:#}", e = anyhow::Error::from(e));
        }
    }
    let report = result?;
    let s = &report.summary;
    let mut extra = String::new();
    if !report.plan_errors.is_empty() {
        extra += &format!(", {} watched modules not listed", report.plan_errors.len());
    }
    if !report.rejected.is_empty() {
        extra += &format!(", {} upstream entries rejected", report.rejected.len());
    }
    if report.fetch.retries > 0 {
        extra += &format!(", {} requests retried", report.fetch.retries);
    }
    if let Some(f) = &report.feed {
        extra += &format!(
            ", feed: {} new entries in {} pages, {} planned, {} rejected",
            f.entries, f.pages, f.planned, f.rejected
        );
    }
    if report.plan_only {
        eprintln!(
            "gomirror: sync planned (nothing fetched): {} versions to fetch, {} already published{extra} in {:.1}s",
            s.planned - s.skipped,
            s.skipped,
            report.seconds,
        );
        return Ok(if report.plan_errors.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        });
    }
    eprintln!(
        "gomirror: sync {}: {}{extra} in {:.1}s",
        s.outcome.as_str(),
        counts(s),
        report.seconds,
    );
    let signal = stopped_by.load(Ordering::Relaxed);
    Ok(if report.all_ok() {
        ExitCode::SUCCESS
    } else if signal != 0 && s.outcome == gomirror::state::RunOutcome::Interrupted {
        // Stopped on request, not failed: 128 + signal, as a shell reports
        // it, so a script sees the run is incomplete, and a systemd oneshot
        // stopped by `systemctl stop` is not marked failed
        // (gomirror-sync.service lists 143 in SuccessExitStatus=).
        ExitCode::from(128 + signal as u8)
    } else {
        ExitCode::from(1)
    })
}

async fn run_daemon(config: Config, options: daemon::Options) -> anyhow::Result<ExitCode> {
    let (shutdown, abandon) = (CancellationToken::new(), CancellationToken::new());
    spawn_signal_handler(shutdown.clone(), Some(abandon.clone()));
    let reload = spawn_reload_handler()?;
    let signals = daemon::Signals {
        shutdown,
        abandon,
        reload,
    };
    let stopped = daemon::run(config, options, signals).await?;
    tracing::info!(?stopped, "daemon stopped");
    Ok(ExitCode::SUCCESS)
}

/// Opens the state database of an earlier sync; never creates one.
async fn existing_store(config: &Config) -> anyhow::Result<gomirror::state::Store> {
    if !config.database.exists() {
        anyhow::bail!(
            "no state database at {}: no sync has run with this config yet",
            config.database.display()
        );
    }
    Ok(gomirror::state::Store::open(&config.database).await?)
}

async fn retry(config: Config, pattern: Option<String>) -> anyhow::Result<ExitCode> {
    if let Some(p) = &pattern {
        gomirror::plan::rules::check_globs(p).map_err(|e| anyhow::anyhow!("retry: {e}"))?;
    }
    let store = existing_store(&config).await?;
    let back = store.retry_failed(pattern.clone()).await?;
    for (path, version) in &back {
        println!("{path}@{version}");
    }
    let which = pattern.map_or_else(String::new, |p| format!(" matching {p:?}"));
    eprintln!(
        "gomirror: retry: {} failed versions{which} back to pending; the next sync fetches them",
        back.len()
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    // `status` only reads: it must not create a database where none is.
    let store = existing_store(&config).await?;
    // The same numbers the metrics show: both come from metrics::gather.
    let inputs = metrics::gather(&store, &config.tree_dir, None).await?;
    if json {
        let out = StatusJson {
            report: &inputs.status,
            tree: inputs.tree,
        };
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        print_status(&inputs.status);
        print_tree_and_runs(&inputs);
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    // Like `status`: checking a tree no sync made creates nothing.
    drop(existing_store(&config).await?);
    let report = gomirror::audit::audit(&config).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for p in &report.problems {
            println!("{}: {}", p.subject, p.problem);
        }
    }
    let pinned = report
        .pinned_tree
        .map(|n| format!(", {} lookups proved against tree {n}", report.lookups))
        .unwrap_or_default();
    let verdict = if report.problems.is_empty() {
        "ok"
    } else {
        "FAILED"
    };
    eprintln!(
        "gomirror: verify {verdict}: {} versions re-hashed{pinned}, {} problems",
        report.versions,
        report.problems.len()
    );
    Ok(if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `status --json`: the state report with the tree's disk usage beside it.
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    report: &'a gomirror::state::StatusReport,
    tree: metrics::TreeUsage,
}

fn print_tree_and_runs(inputs: &metrics::Inputs) {
    let t = &inputs.status.run_totals;
    println!(
        "\ntree: {} files, {} on disk",
        inputs.tree.files,
        indicatif::HumanBytes(inputs.tree.disk_usage_bytes)
    );
    println!(
        "runs: {} ok, {} partial, {} failed, {} interrupted, {} running",
        t.ok, t.partial, t.failed, t.interrupted, t.running
    );
    println!(
        "last ok run ended {}; last completed run ended {}",
        t.last_ok_at.as_deref().unwrap_or("never"),
        t.last_completed_at.as_deref().unwrap_or("never")
    );
}

/// A run's counts, as the final line of `sync` and `status` show them.
fn counts(s: &gomirror::state::RunSummary) -> String {
    format!(
        "{} fetched, {} skipped, {} quarantined, {} not found, {} failed, {}",
        s.published,
        s.skipped,
        s.quarantined,
        s.not_found,
        s.failed,
        indicatif::HumanBytes(s.bytes)
    )
}

fn print_status(r: &gomirror::state::StatusReport) {
    let v = &r.versions;
    println!(
        "{} modules, {} versions published ({})",
        r.modules,
        v.published,
        indicatif::HumanBytes(r.published_bytes)
    );
    println!(
        "pending {}, quarantined {}, not found {}, failed {}",
        v.pending, v.quarantined, v.not_found, v.failed
    );
    if let Some(f) = &r.feed {
        let newest = f.newest.as_deref().unwrap_or("none yet");
        println!("feed: next read since {}, newest entry {newest}", f.since);
    }
    for db in &r.sumdb {
        let pinned = db.pinned_tree.map_or_else(
            || "no offline copy".to_owned(),
            |n| format!("offline copy pinned at tree {n}"),
        );
        println!(
            "checksum database {}: tree {} verified {}, {pinned}, {} published versions with a record",
            db.name, db.verified_tree, db.verified_at, db.records
        );
    }
    if !r.runs.is_empty() {
        println!("\nrecent runs:");
    }
    for run in &r.runs {
        let s = &run.summary;
        println!(
            "  #{:<5} {}  {:<11} {}",
            run.id,
            run.started_at,
            s.outcome.as_str(),
            counts(s)
        );
    }
    if !r.rejections.is_empty() {
        println!("\nupstream entries rejected:");
    }
    for x in &r.rejections {
        println!("  {} {:?}  {}: {}", x.module, x.entry, x.seen_at, x.reason);
    }
    if !r.problems.is_empty() {
        println!("\nversions not published:");
    }
    for p in &r.problems {
        let next = p
            .next_try_at
            .as_ref()
            .map_or_else(String::new, |at| format!(", next try {at}"));
        println!(
            "  {}@{}  {} after {} attempt(s){next}, {}: {}",
            p.path,
            p.version,
            p.status.as_str(),
            p.attempts,
            p.updated_at,
            p.reason.as_deref().unwrap_or("-")
        );
    }
}

/// Linux (and POSIX) numbers of the two stop signals, for exit codes.
const SIGINT: i32 = 2;
const SIGTERM: i32 = 15;

/// First SIGINT/SIGTERM: stop taking work and finish cleanly (`stop`).
/// A second one cancels `abandon`, if given: stop waiting at once.
/// Returns the first signal's number once one came, 0 before.
fn spawn_signal_handler(
    stop: CancellationToken,
    abandon: Option<CancellationToken>,
) -> Arc<AtomicI32> {
    use tokio::signal::unix::{signal, SignalKind};
    let received = Arc::new(AtomicI32::new(0));
    let seen = received.clone();
    tokio::spawn(async move {
        let (mut term, mut int) = match (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) {
            (Ok(term), Ok(int)) => (term, int),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot listen for SIGTERM and SIGINT: {e}");
                return;
            }
        };
        let signal = tokio::select! {
            _ = int.recv() => SIGINT,
            _ = term.recv() => SIGTERM,
        };
        seen.store(signal, Ordering::Relaxed);
        tracing::warn!(
            signal,
            "signal received: finishing in-flight versions, then stopping"
        );
        stop.cancel();
        let Some(abandon) = abandon else { return };
        tokio::select! {
            _ = int.recv() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("second signal: not waiting for the run in flight");
        abandon.cancel();
    });
    received
}

/// Every SIGHUP becomes a message; while one waits, more add nothing.
fn spawn_reload_handler() -> anyhow::Result<tokio::sync::mpsc::Receiver<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = signal(SignalKind::hangup()).context("listening for SIGHUP")?;
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!("SIGHUP: reloading the config");
            if let Err(tokio::sync::mpsc::error::TrySendError::Closed(())) = tx.try_send(()) {
                return;
            }
        }
    });
    Ok(rx)
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOMIRROR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let format = match format {
        LogFormat::Auto if std::io::stderr().is_terminal() => LogFormat::Human,
        LogFormat::Auto if stderr_is_journal() => LogFormat::Journal,
        LogFormat::Auto => LogFormat::Json,
        chosen => chosen,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().with_current_span(false).init(),
        LogFormat::Journal => {
            // journald records the time and, from the prefix, the level.
            let plain = tracing_subscriber::fmt::format()
                .without_time()
                .with_level(false)
                .with_target(false)
                .with_ansi(false);
            builder
                .with_ansi(false)
                .event_format(JournalFormat(plain))
                .init()
        }
        LogFormat::Human | LogFormat::Auto => builder.init(),
    }
}

/// systemd sets `JOURNAL_STREAM=<dev>:<inode>` to the stream it connects
/// to stderr; a match means our stderr goes to the journal (and not, say,
/// to a file a child process inherited the variable with).
/// See: systemd.exec(5), JOURNAL_STREAM.
fn stderr_is_journal() -> bool {
    let Some(value) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = value.to_str().and_then(|v| v.split_once(':')) else {
        return false;
    };
    rustix::fs::fstat(std::io::stderr())
        .is_ok_and(|st| dev.parse() == Ok(st.st_dev) && ino.parse() == Ok(st.st_ino))
}

/// Prefixes each line with its syslog priority (`<3>` error … `<7>`
/// debug), which journald reads as the entry's level and strips.
/// See: sd-daemon(3).
struct JournalFormat<F>(F);

impl<S, N, F> tracing_subscriber::fmt::FormatEvent<S, N> for JournalFormat<F>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
    F: tracing_subscriber::fmt::FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            tracing::Level::ERROR => 3,
            tracing::Level::WARN => 4,
            tracing::Level::INFO => 6,
            _ => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// The progress bar: versions done/total, bytes and rate.
struct Bar {
    bar: Option<ProgressBar>,
    bytes: AtomicU64,
}

impl Bar {
    fn new(visible: bool) -> Bar {
        let bar = visible.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} versions  {msg}",
                )
                .expect("the template is valid"),
            );
            bar
        });
        Bar {
            bar,
            bytes: AtomicU64::new(0),
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn planned(&self, versions: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(versions as u64);
        }
    }

    fn finished(&self, _mv: &ModVer, _outcome: &str, bytes: u64) {
        if let Some(bar) = &self.bar {
            let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            let secs = bar.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{}  {}/s",
                indicatif::HumanBytes(total),
                indicatif::HumanBytes((total as f64 / secs) as u64)
            ));
            bar.inc(1);
        }
    }
}
