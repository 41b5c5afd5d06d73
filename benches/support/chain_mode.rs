//! The chained-sites benchmark (`cargo bench --bench sync -- --chain`, issue 16): site B
//! catching up N versions from site A, at A's latency, against the same run's latency bound.
//!
//! Input: the sync bench's `--versions` (here default 20000), `--latency-ms` (20),
//! `--concurrency` (64), `--zip-kib` (here default 4), `--files` (here default 4), `--keep`.
//! Output: a table on stdout, then one line of JSON with every figure.
//!
//! 1. **A**: the sync bench's upstream process serves N synthetic versions and a checksum
//!    database holding them, with no latency; a cold `gomirror sync` watching each version fills
//!    A's tree, its offline checksum database and its state (timed, not the figure asked for).
//! 2. **A serves**: this process serves A's tree as a static GOPROXY (what nginx does) and
//!    A's `/index` from A's state through `gomirror::serve::index_router`, both behind
//!    `--latency-ms` per request, counting requests.
//! 3. **B**: a cold `gomirror sync` whose `[upstream] proxies`, `[feed] index` and `[feed]
//!    proxy` are A (rule `include = "*"`, `pseudo_versions = "all"`), verifying against A's
//!    offline checksum database: wall time, peak RSS, requests to A. It must exit 0, hold every
//!    version, and make no request to A's upstream.
//!
//! Latency bound: 3 × N × latency ÷ concurrency (`.info`, `.mod`, `.zip` per version), as the
//! sync bench; B's lookups run beside them with a budget of their own, and its feed pages
//! (N ÷ 2000 + 1, one at a time) add their latency before the first fetch.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::{check_tree, measure, mib, round, sync, write_config, Corpus, Measured, Server};

/// Target for B's peak RSS.
const RSS_TARGET_KIB: u64 = 64 << 10;

struct ChainOpts {
    versions: usize,
    latency_ms: u64,
    concurrency: usize,
    zip_kib: usize,
    files: usize,
    keep: bool,
}

impl ChainOpts {
    fn parse(args: &[String]) -> Result<ChainOpts> {
        let value = |name: &str, default: usize| crate::number_arg(args, name, default);
        let opts = ChainOpts {
            versions: value("--versions", 20_000)?,
            latency_ms: u64::try_from(value("--latency-ms", 20)?)?,
            concurrency: value("--concurrency", 64)?,
            zip_kib: value("--zip-kib", 4)?,
            files: value("--files", 4)?,
            keep: args.iter().any(|a| a == "--keep"),
        };
        ensure!(
            opts.versions > 0 && opts.concurrency > 0,
            "--versions, --concurrency: at least 1"
        );
        Ok(opts)
    }

    fn bound_secs(&self) -> f64 {
        3.0 * self.versions as f64 * self.latency_ms as f64 / 1000.0 / self.concurrency as f64
    }
}

pub fn main(args: &[String], gomirror: &Path) -> Result<()> {
    let opts = ChainOpts::parse(args)?;
    crate::in_work_dir("gomirror-chain-bench-", opts.keep, |work| {
        run(&opts, gomirror, work)
    })
}

fn run(opts: &ChainOpts, gomirror: &Path, work: &Path) -> Result<()> {
    let bin = work.join("gomirror");
    std::fs::copy(gomirror, &bin).with_context(|| format!("{}", gomirror.display()))?;
    let mut origin = Server::start(Corpus {
        big: false,
        count: opts.versions,
        files: opts.files,
        bytes: opts.zip_kib << 10,
        latency_ms: 0,
        sumdb: true,
    })?;
    let key = origin
        .sumdb_key
        .clone()
        .context("the upstream serves a checksum database")?;
    let a_dir = work.join("a");
    let a_config = write_config(
        &a_dir,
        &origin.url,
        opts.concurrency,
        Some(&key),
        &origin.targets,
    )?;
    let a = sync(&bin, &a_config, &a_dir.join("sync.log"), &mut origin)?;
    check_tree(&a_dir.join("tree"), &origin.targets)?;
    eprintln!("A:  {:.2}s  {}", a.secs, a.last_line);

    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    let served = rt.block_on(serve_site(&a_dir, Duration::from_millis(opts.latency_ms)))?;
    let b_dir = work.join("b");
    let b_config = follower_config(&b_dir, &served.url, opts.concurrency, &key)?;
    let before = served.requests.load(Ordering::Relaxed);
    let mut cmd = Command::new(&bin);
    cmd.arg("sync").arg("--config").arg(&b_config);
    let b = measure(cmd, &b_dir.join("sync.log"), None, &mut origin)?;
    let b_requests = served.requests.load(Ordering::Relaxed) - before;
    ensure!(
        b.status.success(),
        "B: {}; last line: {}; log: {}",
        b.status,
        b.last_line,
        b_dir.join("sync.log").display()
    );
    ensure!(
        b.requests == 0,
        "B made {} requests to A's upstream",
        b.requests
    );
    check_tree(&b_dir.join("tree"), &origin.targets)?;
    eprintln!("B:  {:.2}s  {}", b.secs, b.last_line);
    print_table(opts, &a, &b, b_requests);
    let figures = json!({
        "bench": "chain",
        "versions": opts.versions,
        "latency_ms": opts.latency_ms,
        "concurrency": opts.concurrency,
        "zip_kib": opts.zip_kib,
        "files_per_zip": opts.files,
        "a": a.json(),
        "b": b.json(),
        "b_requests_to_a": b_requests,
        "latency_bound_secs": round(opts.bound_secs(), 3),
        "b_over_bound": round(b.secs / opts.bound_secs(), 2),
    });
    println!("{figures}");
    Ok(())
}

/// B's mirror.toml: A everywhere, the feed from its first entry, everything it lists.
fn follower_config(dir: &Path, url: &str, concurrency: usize, key: &str) -> Result<PathBuf> {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path_str = |p: PathBuf| p.to_string_lossy().into_owned();
    let text = format!(
        "[upstream]\nproxies = [{u}]\n[tree]\ndir = {}\n[state]\ndatabase = {}\n\
         [fetch]\nconcurrency = {concurrency}\n[sumdb]\nkey = {}\n\
         [feed]\nenabled = true\nindex = {u}\nproxy = {u}\nstart = \"2019-04-10T19:08:52.997264Z\"\n\
         pseudo_versions = \"all\"\n[[feed.rule]]\ninclude = \"*\"\n",
        q(&path_str(dir.join("tree"))),
        q(&path_str(dir.join("state.db"))),
        q(key),
        u = q(url),
    );
    std::fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let config = dir.join("mirror.toml");
    std::fs::write(&config, text).with_context(|| format!("{}", config.display()))?;
    Ok(config)
}

/// Site A as B sees it: the tree, `/index`, latency, a request count.
struct Served {
    url: String,
    requests: Arc<AtomicUsize>,
}

#[derive(Clone)]
struct Site {
    tree: Arc<Path>,
    latency: Duration,
    requests: Arc<AtomicUsize>,
}

async fn serve_site(dir: &Path, latency: Duration) -> Result<Served> {
    let store = gomirror::state::Store::open(&dir.join("state.db")).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}", listener.local_addr()?);
    let site = Site {
        tree: Arc::from(dir.join("tree").as_path()),
        latency,
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let requests = site.requests.clone();
    let app = axum::Router::new()
        .fallback(static_file)
        .with_state(site.clone())
        .merge(gomirror::serve::index_router(store))
        .layer(axum::middleware::from_fn_with_state(site, delay));
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(Served { url, requests })
}

/// Every answer waits `latency`, as an upstream across a WAN would.
async fn delay(State(site): State<Site>, req: Request, next: axum::middleware::Next) -> Response {
    site.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(site.latency).await;
    next.run(req).await
}

/// A file of the tree, as nginx serves it; 404 for anything else.
async fn static_file(State(site): State<Site>, req: Request) -> Response {
    let path = req.uri().path().trim_start_matches('/');
    if path.split('/').any(|e| e.is_empty() || e.starts_with('.')) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(site.tree.join(path)).await {
        Ok(bytes) => bytes.into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

fn print_table(opts: &ChainOpts, a: &Measured, b: &Measured, b_requests: usize) {
    println!(
        "{} versions, ~{} KiB zips of {} files, {} ms per request to A, concurrency {}\n",
        opts.versions, opts.zip_kib, opts.files, opts.latency_ms, opts.concurrency
    );
    println!(
        "{:<38}{:>9}{:>10}{:>12}",
        "", "time", "requests", "peak RSS"
    );
    println!(
        "{:<38}{:>7.2} s{:>10}{:>8.1} MiB",
        "A: sync from its upstream (0 ms)",
        a.secs,
        a.requests,
        mib(a.peak_rss_kib)
    );
    println!(
        "{:<38}{:>7.2} s{:>10}{:>8.1} MiB",
        "B: catch up from A (feed + tree)",
        b.secs,
        b_requests,
        mib(b.peak_rss_kib)
    );
    let bound = opts.bound_secs();
    println!(
        "\nlatency bound {:>26.2} s  (3 x N x latency / concurrency)",
        bound
    );
    println!("B / bound {:>30.2} x", b.secs / bound);
    let met = if b.peak_rss_kib <= RSS_TARGET_KIB {
        "met"
    } else {
        "NOT met"
    };
    println!(
        "B peak RSS {:>29.1} MiB  (target <= 64 MiB: {met})",
        mib(b.peak_rss_kib)
    );
}
