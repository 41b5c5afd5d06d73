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

#[derive(Subcommand)]
enum BundleCommand {
    /// Signer, sequence, predecessor, counts, sizes and tree head of a
    /// bundle (the file or its `.000` volume).
    Inspect {
        bundle: PathBuf,
        /// Check the signature with this verifier key (repeatable); the
        /// config's `[import] trusted` keys and `[export] key`'s own
        /// verifier are always tried.
        #[arg(long)]
        trust: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum CompressionArg {
    None,
    Zstd,
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
    /// Write a new bundle-signing key (mode 0600) and print its verifier key,
    /// which the offline mirror trusts.
    Keygen {
        /// The key's name, e.g. this mirror's host name.
        #[arg(long)]
        name: String,
        /// Where to write the private key; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write what was published since the last export as a signed bundle.
    Export {
        /// The directory to write the bundle to (e.g. a mounted USB disk).
        #[arg(long)]
        to: PathBuf,
        /// Everything published, not only what is new since the last export.
        #[arg(long)]
        full: bool,
        #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
        compression: CompressionArg,
        /// Split into volumes of at most this size (e.g. 4G, 700M; K, M, G,
        /// T are powers of 1024).
        #[arg(long, value_parser = parse_size)]
        max_volume_size: Option<u64>,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Look at bundles.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Re-check the tree at rest, offline: every published file's h1:
    /// against the state, every lookup of the offline checksum database
    /// against its pinned signed head. Exit 1 on any difference.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Apply a bundle from `gomirror export` to this (offline) mirror:
    /// verified against its signature, the chain, the checksum database and
    /// the zip rules before anything becomes visible.
    Import {
        /// The bundle file, or the first volume (`.000`) of a split bundle.
        bundle: PathBuf,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
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
        Command::Keygen { name, out } => {
            let vkey = gomirror::bundle::export::keygen(&name, &out)?;
            println!("{vkey}");
            eprintln!(
                "gomirror: keygen: private key written to {} (mode 0600); the offline mirror trusts the key above",
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Export {
            to,
            full,
            compression,
            max_volume_size,
            no_progress,
        } => {
            let config = Config::load(&cli.config, &Overrides::default())?;
            let options = gomirror::bundle::export::ExportOptions {
                to,
                full,
                compression: match compression {
                    CompressionArg::None => gomirror::bundle::export::Compression::None,
                    CompressionArg::Zstd => gomirror::bundle::export::Compression::Zstd,
                },
                max_volume_size,
            };
            runtime.block_on(export(config, options, no_progress))
        }
        Command::Bundle {
            command:
                BundleCommand::Inspect {
                    bundle,
                    trust,
                    json,
                },
        } => {
            // A config is optional here (a bundle can be looked at anywhere),
            // but one that exists must be valid.
            let config = match cli.config.exists() {
                true => Some(Config::load(&cli.config, &Overrides::default())?),
                false => None,
            };
            inspect(config.as_ref(), &bundle, &trust, json)
        }
        Command::Import {
            bundle,
            no_progress,
        } => {
            let config = Config::load(&cli.config, &Overrides::default())?;
            runtime.block_on(import(config, bundle, no_progress))
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

async fn export(
    config: Config,
    options: gomirror::bundle::export::ExportOptions,
    no_progress: bool,
) -> anyhow::Result<ExitCode> {
    drop(existing_store(&config).await?);
    if !options.to.is_dir() {
        anyhow::bail!("export: --to {}: not a directory", options.to.display());
    }
    let stray = gomirror::bundle::export::remove_stray_temps(&options.to)?;
    if stray > 0 {
        tracing::info!(
            stray,
            "removed unfinished bundle files of an earlier export"
        );
    }
    let bar = Arc::new(ExportBar::new(
        !no_progress && std::io::stderr().is_terminal(),
    ));
    let result = gomirror::bundle::export::export(&config, &options, bar.clone()).await;
    bar.finish();
    let report = result?;
    let r = &report.record;
    for p in &report.paths {
        println!("{}", p.display());
    }
    eprintln!(
        "gomirror: export #{} of {}{}: {} versions, {} tiles, {} files, {} in {} volume(s), bundle {}",
        r.sequence,
        r.source,
        if r.full { " (full)" } else { "" },
        r.versions,
        r.tiles,
        r.files,
        indicatif::HumanBytes(r.bytes),
        report.paths.len(),
        r.bundle_id
    );
    Ok(ExitCode::SUCCESS)
}

fn inspect(
    config: Option<&Config>,
    bundle: &std::path::Path,
    trust: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut keys = Vec::new();
    for k in trust {
        keys.push(
            gomirror::verify::sumdb::note::Verifier::parse(k)
                .with_context(|| format!("--trust {k:?}"))?,
        );
    }
    keys.extend(config.iter().flat_map(|c| c.import_trusted.iter().cloned()));
    if let Some(settings) = config.and_then(|c| c.export.as_ref()) {
        if let Ok(signer) = gomirror::bundle::export::read_signer(&settings.key) {
            keys.push(signer.verifier());
        }
    }
    let info = gomirror::bundle::inspect::inspect(bundle, &keys)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&info)?);
    } else {
        print!("{}", info.render());
    }
    Ok(ExitCode::SUCCESS)
}

/// `K`, `M`, `G`, `T` (powers of 1024, optional `B`/`iB`) or plain bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text:?}: unknown unit {c:?} (K, M, G, T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: not a size like 4G or 700M"))?;
    match n.checked_mul(1 << shift) {
        Some(0) | None => Err(format!("{text:?}: must be between 1 byte and 16 EiB")),
        Some(v) => Ok(v),
    }
}

/// The export progress bar: bytes copied of the bundle's tree files.
struct ExportBar {
    bar: Option<ProgressBar>,
}

impl ExportBar {
    fn new(visible: bool) -> ExportBar {
        let bar = visible.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes}  {bytes_per_sec}  {msg}",
                )
                .expect("the template is valid"),
            );
            bar
        });
        ExportBar { bar }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl gomirror::bundle::export::ExportProgress for ExportBar {
    fn planned(&self, files: usize, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
            bar.set_message(format!("{files} files"));
        }
    }

    fn copied(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
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

async fn import(config: Config, bundle: PathBuf, no_progress: bool) -> anyhow::Result<ExitCode> {
    use gomirror::bundle::import::ImportError;
    let started = std::time::Instant::now();
    let show_bar = !no_progress && std::io::stderr().is_terminal();
    let bar = Arc::new(Bar::new(show_bar));
    let result = gomirror::bundle::import::import(&config, &bundle, bar.clone()).await;
    bar.finish();
    let r = match result {
        Ok(r) => r,
        // The bundle is refused; this mirror is unchanged.
        Err(e @ (ImportError::Refused(_) | ImportError::File { .. } | ImportError::Bundle(_))) => {
            eprintln!("gomirror: import refused {}: {e:#}", bundle.display());
            return Ok(ExitCode::from(1));
        }
        Err(e) => return Err(e.into()),
    };
    let what = format!(
        "{} bundle {} ({}), signed by {}",
        r.source,
        r.sequence,
        &r.bundle_id[..r.bundle_id.len().min(12)],
        r.signer
    );
    if r.already_applied {
        eprintln!("gomirror: import ok: {what} was applied before; nothing to do");
    } else {
        eprintln!(
            "gomirror: import ok: {what}: {} versions, {} files, {} in {:.1}s",
            r.versions,
            r.files,
            indicatif::HumanBytes(r.bytes),
            started.elapsed().as_secs_f64()
        );
    }
    Ok(ExitCode::SUCCESS)
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
    if !r.exports.is_empty() {
        println!("\nrecent exports:");
    }
    for e in &r.exports {
        println!(
            "  {} #{:<5} {}{}  {} versions, {} tiles, {} files, {}  {}",
            e.source,
            e.sequence,
            e.completed,
            if e.full { " full" } else { "" },
            e.versions,
            e.tiles,
            e.files,
            indicatif::HumanBytes(e.bytes),
            e.path
        );
    }
    if !r.imports.is_empty() {
        println!("\nrecent imports:");
    }
    for i in &r.imports {
        println!(
            "  {} #{:<5} {}{}  {} versions, {} files, {}  signed by {}  {}",
            i.source,
            i.sequence,
            i.imported_at,
            if i.full { " full" } else { "" },
            i.versions,
            i.files,
            indicatif::HumanBytes(i.bytes),
            i.signer,
            &i.bundle_id[..i.bundle_id.len().min(12)]
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
