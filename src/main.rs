//! The command-line edge: argument parsing, logging, the one runtime,
//! progress bars and exit codes. Exit codes (STYLE.md §2): 0 every planned
//! version is present; 1 the run finished but some versions failed, were
//! not found or were quarantined; 2 the run could not proceed.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use tokio_util::sync::CancellationToken;

use gomirror::config::{Config, Override, Overrides};
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
    /// Log format on stderr; `auto` is human on a terminal, JSON otherwise.
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
    spawn_signal_handler(token.clone());
    let show_bar = !no_progress && std::io::stderr().is_terminal();
    let bar = Arc::new(Bar::new(show_bar));
    let report = sync::run_with(&config, bar.clone(), token, options).await?;
    bar.finish();
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
    Ok(if report.all_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
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
    let report = store.status().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_status(&report);
    }
    Ok(ExitCode::SUCCESS)
}

async fn verify(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    // Like `status`: checking a tree no sync made creates nothing.
    if !config.database.exists() {
        anyhow::bail!(
            "no state database at {}: no sync has run with this config yet",
            config.database.display()
        );
    }
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

/// First SIGINT/SIGTERM: stop taking work and finish cleanly.
fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("cannot listen for SIGTERM: {e}");
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        tracing::warn!("signal received: finishing in-flight versions, then stopping");
        token.cancel();
    });
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("GOMIRROR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let json = match format {
        LogFormat::Auto => !std::io::stderr().is_terminal(),
        LogFormat::Human => false,
        LogFormat::Json => true,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().with_current_span(false).init();
    } else {
        builder.init();
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
