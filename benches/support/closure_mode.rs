//! The closure benchmark (`cargo bench --bench sync -- --closure`): how long a project's
//! closure takes to compute against the mirror, cold (empty tree: every go.mod from upstream)
//! and warm (everything mirrored: no upstream request at all), and how much memory it needs.
//!
//! Input: `--modules N` (300), `--versions N` (1000), `--levels N` (8), `--latency-ms N`
//! (20), `--concurrency N` (64). Output: a table on stdout, then one line of JSON with every
//! figure. Checks only what makes the figures meaningful: the sync exits 0, the warm closure
//! makes no upstream request and needs nothing the tree lacks.
//!
//! The graph: module `i` sits on level `i * levels / modules`; each of its versions requires
//! three modules of the next level (and one two levels down every third version). One module
//! in five is `go 1.16` (unpruned: its whole graph below is loaded), the rest `go 1.21`
//! (pruned). The project (`go 1.21`) requires the latest version of every level-0 module.
//! The upstream serves it in a child process (this binary with [`SERVE`]), sleeping
//! `latency` before every answer, so this process's peak RSS (VmHWM) is the closure's own.
//!
//! Runs, in order: 1. cold closure, in this process (`closure_report`, as `gomirror closure`
//! does), counting upstream requests and load levels (how many times the number of go.mod
//! reads in flight rose from zero: the loader awaits each level before the next); 2.
//! `gomirror sync` of the project (a `[[project]]`), a child process; 3. warm closure.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use gomirror::config::{Config, Overrides};
use gomirror::module::ModVer;
use gomirror::project::graph::ModSource;
use gomirror::project::{closure, Project};
use gomirror::sync::project::closure_report;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::upstream::{ModuleFiles, Upstream};
use crate::zipgen::module_zip;

/// The first argument of the upstream child process.
pub const SERVE: &str = "--serve-closure-upstream";

#[derive(Clone, Copy)]
struct Shape {
    modules: usize,
    versions: usize,
    levels: usize,
    latency_ms: u64,
}

impl Shape {
    fn parse(args: &[String]) -> Result<Shape> {
        let value = |name: &str, default: usize| crate::number_arg(args, name, default);
        let shape = Shape {
            modules: value("--modules", 300)?,
            versions: value("--versions", 1000)?,
            levels: value("--levels", 8)?,
            latency_ms: value("--latency-ms", 20)? as u64,
        };
        ensure!(shape.levels >= 1, "--levels: at least 1");
        ensure!(
            shape.modules >= shape.levels,
            "--modules: at least one per level"
        );
        ensure!(
            shape.versions >= shape.modules,
            "--versions: at least one per module"
        );
        Ok(shape)
    }

    fn args(&self) -> Vec<String> {
        vec![
            SERVE.into(),
            "--modules".into(),
            self.modules.to_string(),
            "--versions".into(),
            self.versions.to_string(),
            "--levels".into(),
            self.levels.to_string(),
            "--latency-ms".into(),
            self.latency_ms.to_string(),
        ]
    }

    fn level(&self, i: usize) -> usize {
        i * self.levels / self.modules
    }

    /// Modules of `level`: a contiguous range of indexes.
    fn on_level(&self, level: usize) -> std::ops::Range<usize> {
        let first = (0..self.modules).find(|&i| self.level(i) >= level);
        let first = first.unwrap_or(self.modules);
        let end = (first..self.modules)
            .find(|&i| self.level(i) > level)
            .unwrap_or(self.modules);
        first..end
    }

    fn count(&self, i: usize) -> usize {
        let base = self.versions / self.modules;
        base + usize::from(i < self.versions % self.modules)
    }

    fn path(&self, i: usize) -> String {
        format!("example.com/g/l{}/m{i:03}", self.level(i))
    }

    fn go(&self, i: usize) -> &'static str {
        if i.is_multiple_of(5) {
            "1.16"
        } else {
            "1.21"
        }
    }

    /// `path version` of what version `j` of module `i` requires.
    fn requires(&self, i: usize, j: usize) -> Vec<(String, String)> {
        let level = self.level(i);
        let mut out = Vec::new();
        let mut pick = |target_level: usize, salt: usize| {
            let range = self.on_level(target_level);
            if range.is_empty() {
                return;
            }
            let t = range.start + (i * 7 + j * 3 + salt * 11) % range.len();
            let v = (i + j + salt) % self.count(t);
            let req = (self.path(t), format!("v1.{v}.0"));
            if !out.contains(&req) {
                out.push(req);
            }
        };
        if level + 1 < self.levels {
            for salt in 0..3 {
                pick(level + 1, salt);
            }
        }
        if level + 2 < self.levels && j.is_multiple_of(3) {
            pick(level + 2, 5);
        }
        out
    }

    fn go_mod(&self, i: usize, j: usize) -> String {
        let mut s = format!("module {}\n\ngo {}\n", self.path(i), self.go(i));
        let reqs = self.requires(i, j);
        if !reqs.is_empty() {
            s += "\nrequire (\n";
            for (p, v) in reqs {
                let _ = writeln!(s, "\t{p} {v}");
            }
            s += ")\n";
        }
        s
    }

    fn files(&self) -> Vec<ModuleFiles> {
        let mut out = Vec::with_capacity(self.versions);
        for i in 0..self.modules {
            let path = self.path(i);
            for j in 0..self.count(i) {
                let version = format!("v1.{j}.0");
                let go_mod = self.go_mod(i, j);
                let source = format!("package m{i:03}\n\nfunc F() {{}}\n");
                let prefix = format!("{path}@{version}/");
                let zip = module_zip(
                    &prefix,
                    &[("go.mod", go_mod.as_bytes()), ("x.go", source.as_bytes())],
                );
                let info =
                    format!("{{\"Version\":\"{version}\",\"Time\":\"2024-01-02T03:04:05Z\"}}");
                out.push(ModuleFiles::new(&path, &version, info, go_mod, zip));
            }
        }
        out
    }

    /// The project's go.mod: every level-0 module at its latest version.
    fn project_go_mod(&self) -> String {
        let mut s = "module example.com/g/app\n\ngo 1.21\n\nrequire (\n".to_owned();
        for i in self.on_level(0) {
            let _ = writeln!(s, "\t{} v1.{}.0", self.path(i), self.count(i) - 1);
        }
        s + ")\n"
    }
}

/// The upstream child: serves the graph, prints its URL and `ready`, then answers each
/// `count` line on stdin with the requests so far, until stdin closes.
pub fn serve(args: &[String]) -> Result<()> {
    let shape = Shape::parse(args)?;
    let rt = tokio::runtime::Runtime::new().context("starting the upstream's runtime")?;
    let upstream = rt.block_on(Upstream::start(shape.files()));
    upstream
        .faults()
        .set_latency(Duration::from_millis(shape.latency_ms));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}\nready", upstream.url())?;
    out.flush()?;
    for line in std::io::stdin().lines() {
        ensure!(line? == "count", "{SERVE}: the only command is `count`");
        writeln!(out, "{}", upstream.total_requests())?;
        out.flush()?;
    }
    Ok(())
}

struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    url: String,
}

impl Server {
    fn start(shape: Shape) -> Result<Server> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut child = Command::new(exe)
            .args(shape.args())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("starting the upstream process")?;
        let stdin = child.stdin.take().expect("stdin is piped");
        let stdout = BufReader::new(child.stdout.take().expect("stdout is piped"));
        let mut server = Server {
            child,
            stdin: Some(stdin),
            stdout,
            url: String::new(),
        };
        server.url = server.read_line()?;
        ensure!(server.read_line()? == "ready", "upstream process: no ready");
        Ok(server)
    }

    fn requests(&mut self) -> Result<usize> {
        let stdin = self.stdin.as_mut().expect("stdin is taken only by drop");
        writeln!(stdin, "count")?;
        stdin.flush()?;
        Ok(self.read_line()?.parse()?)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("upstream process exited early");
        }
        Ok(line.trim_end().to_owned())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        let _ = self.child.wait();
    }
}

/// A [`ModSource`] that counts load levels: each time its reads in flight rise from zero
/// (meaningful only cold, where every read of a level waits the latency together), and the
/// reads of each level.
struct Levels<S> {
    inner: S,
    in_flight: AtomicUsize,
    levels: AtomicUsize,
    reads: AtomicUsize,
    /// Reads per level. A std mutex: held for an increment, never across an await.
    per_level: std::sync::Mutex<Vec<usize>>,
}

impl<S: ModSource> ModSource for Levels<S> {
    async fn go_mod(&self, mv: &ModVer) -> Result<bytes::Bytes, String> {
        if self.in_flight.fetch_add(1, Ordering::SeqCst) == 0 {
            self.levels.fetch_add(1, Ordering::SeqCst);
        }
        let level = self.levels.load(Ordering::SeqCst);
        if let Ok(mut per) = self.per_level.lock() {
            if per.len() < level {
                per.resize(level, 0);
            }
            per[level - 1] += 1;
        }
        self.reads.fetch_add(1, Ordering::Relaxed);
        let got = self.inner.go_mod(mv).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        got
    }
}

struct ClosureRun {
    secs: f64,
    requests: usize,
    levels: usize,
    go_mods: usize,
    mods: usize,
    zips: usize,
    lacking: usize,
    per_level: Vec<usize>,
}

/// One closure of `dir`, in this process, with its load levels counted.
async fn closure_once(config: &Config, dir: &Path, server: &mut Server) -> Result<ClosureRun> {
    let before = server.requests()?;
    let started = Instant::now();
    let project = Project::load(dir)?;
    let client = gomirror::fetch::Client::new(config.upstreams.clone(), &config.fetch)?;
    let tree = gomirror::publish::layout::Tree::new(&config.tree_dir);
    let source = Levels {
        inner: gomirror::sync::project::TreeThenUpstream::new(
            tree,
            gomirror::sync::project::Routes::new(config, client)?,
            CancellationToken::new(),
        ),
        in_flight: AtomicUsize::new(0),
        levels: AtomicUsize::new(0),
        reads: AtomicUsize::new(0),
        per_level: std::sync::Mutex::new(Vec::new()),
    };
    let c = closure::closure(&project, &source, config.fetch.concurrency).await;
    let secs = started.elapsed().as_secs_f64();
    ensure!(c.errors.is_empty(), "closure errors: {:?}", c.errors);
    let requests = server.requests()? - before;
    // What the tree lacks, as `gomirror closure` says it (neither timed nor counted).
    let report = closure_report(config, dir, CancellationToken::new()).await?;
    let per_level = source
        .per_level
        .lock()
        .map(|p| p.clone())
        .unwrap_or_default();
    Ok(ClosureRun {
        secs,
        requests,
        levels: source.levels.load(Ordering::SeqCst),
        go_mods: source.reads.load(Ordering::Relaxed),
        mods: c.mods.len(),
        zips: c.zips.len(),
        lacking: report.lacking.len(),
        per_level,
    })
}

fn vm_hwm_kib() -> Result<u64> {
    let status = std::fs::read_to_string("/proc/self/status")?;
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    let kib = hwm.context("/proc/self/status: no VmHWM line")?;
    Ok(kib.trim().trim_end_matches("kB").trim().parse()?)
}

pub fn main(args: &[String], gomirror_bin: &Path) -> Result<()> {
    let shape = Shape::parse(args)?;
    let concurrency = crate::number_arg(args, "--concurrency", 64)?;
    let work = tempfile::Builder::new()
        .prefix("gomirror-closure-bench-")
        .tempdir()?;
    let dir = work.path().join("app");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("go.mod"), shape.project_go_mod())?;
    let mut server = Server::start(shape)?;
    let config_path = work.path().join("mirror.toml");
    std::fs::write(
        &config_path,
        format!(
            "[upstream]\nproxies = [\"{}\"]\n[tree]\ndir = \"tree\"\n[state]\ndatabase = \"state.db\"\n\
             [sumdb]\nkey = \"off\"\n[fetch]\nconcurrency = {concurrency}\n[[project]]\npath = \"{}\"\n\
             [toolchain]\nplatforms = []\n",
            server.url,
            dir.display()
        ),
    )?;
    let config = Config::load(&config_path, &Overrides::default())?;
    let rt = tokio::runtime::Runtime::new()?;

    let cold = rt.block_on(closure_once(&config, &dir, &mut server))?;
    let before = server.requests()?;
    let started = Instant::now();
    let out = Command::new(gomirror_bin)
        .args(["sync", "--no-progress", "--config"])
        .arg(&config_path)
        .env("GOMIRROR_LOG", "warn")
        .output()?;
    let sync_secs = started.elapsed().as_secs_f64();
    let sync_requests = server.requests()? - before;
    ensure!(
        out.status.success(),
        "gomirror sync: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let warm = rt.block_on(closure_once(&config, &dir, &mut server))?;
    ensure!(
        warm.requests == 0,
        "the warm closure made {} upstream requests",
        warm.requests
    );
    ensure!(warm.lacking == 0, "the tree lacks {} files", warm.lacking);
    let rss_kib = vm_hwm_kib()?;

    let latency = shape.latency_ms as f64 / 1000.0;
    let bound = cold.levels as f64 * latency + cold.requests.div_ceil(concurrency) as f64 * latency;
    // Each level waits for its slowest batch: Σ ⌈reads of the level / concurrency⌉ rounds.
    let rounds: usize = cold.per_level.iter().map(|n| n.div_ceil(concurrency)).sum();
    println!(
        "graph: {} modules, {} versions, {} levels generated; latency {} ms, concurrency {concurrency}",
        shape.modules, shape.versions, shape.levels, shape.latency_ms
    );
    println!(
        "closure: {} go.mod files read, {} .info/.mod and {} .zip needed",
        cold.go_mods, cold.mods, cold.zips
    );
    println!("| run | time | upstream requests | load levels |");
    println!("|---|---|---|---|");
    println!(
        "| cold closure | {:.3} s | {} | {} |",
        cold.secs, cold.requests, cold.levels
    );
    println!("| bound: levels × latency + ⌈requests/{concurrency}⌉ × latency | {bound:.3} s | | |");
    println!(
        "| rounds: Σ ⌈level reads/{concurrency}⌉ × latency ({:?}) | {:.3} s | | |",
        cold.per_level,
        rounds as f64 * latency
    );
    println!("| gomirror sync (child process) | {sync_secs:.3} s | {sync_requests} | |");
    println!(
        "| warm closure | {:.3} s | {} | - |",
        warm.secs, warm.requests
    );
    println!(
        "peak RSS of this process (VmHWM): {:.1} MiB",
        rss_kib as f64 / 1024.0
    );
    println!(
        "{}",
        json!({
            "modules": shape.modules, "versions": shape.versions, "latency_ms": shape.latency_ms,
            "concurrency": concurrency,
            "cold": {"secs": cold.secs, "requests": cold.requests, "levels": cold.levels,
                     "go_mods": cold.go_mods, "mods": cold.mods, "zips": cold.zips},
            "bound_secs": bound, "per_level": cold.per_level, "rounds_secs": rounds as f64 * latency,
            "sync": {"secs": sync_secs, "requests": sync_requests},
            "warm": {"secs": warm.secs, "requests": warm.requests},
            "peak_rss_kib": rss_kib,
        })
    );
    Ok(())
}
