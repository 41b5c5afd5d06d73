//! The sync benchmark: how fast `gomirror sync` fills a tree, and how much memory it needs.
//!
//! Input: options (`--versions 2000 --latency-ms 20 --concurrency 64 --zip-kib 100
//! --big-zip-mib 400`, see [`USAGE`]). Output: a table on stdout, then one line of JSON with
//! every figure. Not a test: it checks only what makes the figures meaningful (exit code 0,
//! every file in the tree, `go` downloading every version).
//!
//! Runs, in order, against the test upstream (`tests/it/upstream.rs`) sleeping `latency` before
//! each answer:
//! 1. cold: N synthetic modules `example.com/bench/mNNNN@v1.0.0`, each watched exactly;
//! 2. no-op: the same config again, which should make no upstream request;
//! 3. `go mod download -json` of the same N versions into an empty module cache, if `go` is on
//!    PATH;
//! 4. big zip: one module `example.com/bench/big` with a zip of `--big-zip-mib` incompressible
//!    bytes, alone.
//!
//! With `--sumdb`, the upstream also serves a checksum database (`tests/it/sumdb.rs`: a real
//! Merkle log of 100 000 padding records followed by one record per version, behind the same
//! latency), and the cold and no-op syncs run a second time, into a fresh tree and database,
//! with verification on: every version looked up and proved, and the offline copy published.
//! Runs 1 and 2 keep verification off, so the two cold runs compare the cost of verifying.
//!
//! Peak RSS comes from `wait4`, which returns the rusage of exactly that child. But Linux starts
//! a child's `ru_maxrss` at the RSS of the process that spawned it: exec records the high-water
//! mark of the old address space, which after posix_spawn/vfork is the parent's (a 300 MiB
//! parent spawning `/bin/true` reads 300 MiB). So the process that spawns gomirror and go stays
//! small, and the upstream, which holds every zip in memory, runs in a second process: this
//! binary again, started with [`SERVE`]. The floor left (this process's own high-water mark,
//! VmHWM) is reported as `bench_rss_kib`.
//!
//! The gomirror binary is the one cargo builds for this bench (`CARGO_BIN_EXE_gomirror`), copied
//! into the work directory first: the target directory is shared, and another build could
//! replace the file mid-run.

#[path = "support/chain_mode.rs"]
mod chain_mode;
#[path = "support/clients_mode.rs"]
mod clients_mode;
#[path = "support/closure_mode.rs"]
mod closure_mode;
#[path = "../tests/it/corpus.rs"]
mod corpus;
#[path = "support/export_mode.rs"]
mod export_mode;
#[path = "support/feed_mode.rs"]
mod feed_mode;
#[path = "support/prune_mode.rs"]
mod prune_mode;
#[path = "support/s3_mode.rs"]
mod s3_mode;
#[path = "../tests/it/sumdb.rs"]
mod sumdb;
#[path = "support/syscost_mode.rs"]
mod syscost_mode;
#[path = "../tests/it/upstream.rs"]
mod upstream;
#[path = "../tests/it/zipgen.rs"]
mod zipgen;

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::corpus::escape_path;
use crate::upstream::{ModuleFiles, Upstream};

const USAGE: &str = "\
usage: cargo bench --bench sync -- [options]
  --versions N        module versions in the cold run (default 2000)
  --latency-ms MS     upstream latency per request (default 20)
  --concurrency N     [fetch] concurrency (default 64)
  --zip-kib KIB       approximate zip size per version (default 100)
  --files N           files per zip, go.mod and x.go included (default 10)
  --big-zip-mib MIB   zip size of the big-zip run; 0 skips it (default 400)
  --no-go             skip the `go mod download` comparison
  --sumdb             also sync with checksum-database verification on, to compare
  --keep              keep the work directory (trees, state, logs)
  --gomirror PATH     binary to measure (default: the one cargo built for this bench)
  --syscost           instead: the system-cost bench (benches/support/syscost_mode.rs): cold
                      sync into fresh ext4 and tmpfs directories and `cp -r` of the tree, with
                      system CPU; takes --versions, --latency-ms, --concurrency, --zip-kib,
                      --files, --rounds N (3), --tmpfs-dir DIR (/dev/shm), --keep, and
                      --baseline PATH: a second gomirror measured the same way in each round
  --export            instead: the export bench (benches/support/export_mode.rs), which takes
                      --versions N (2000), --zip-kib KIB (100), --big-zip-mib MIB (400; 0: none),
                      --rounds N (3), --keep
  --closure           instead: the project closure bench (benches/support/closure_mode.rs):
                      a generated graph (--modules 300 --versions 1000 --levels 8), cold
                      and warm closure time, upstream requests, load levels, peak RSS
  --feed              instead: the index-feed bench (benches/support/feed_mode.rs), which takes
                      --known N (100000), --watched N (1000), --new N (20000), --keep
  --chain             instead: the chained-sites bench (benches/support/chain_mode.rs): site B
                      catching up from site A's tree and /index at --latency-ms (20); takes
                      --versions N (20000), --concurrency N (64), --zip-kib KIB (4),
                      --files N (4), --keep
  --clients           instead: the access-log bench (benches/support/clients_mode.rs): reading
                      --lines N (1000000) generated log lines with `gomirror clients`, against
                      `wc -l` of the same file; time, lines/s, peak RSS; --keep
  --prune             instead: the retention bench (benches/support/prune_mode.rs), which takes
                      --versions N (100000), --per-module K (5), --tree-dir DIR (/dev/shm), --keep
  --s3                instead: the object-storage bench (benches/support/s3_mode.rs): cold syncs
                      into a local tree and into a bucket of a local S3 server (s3s-fs, which
                      scripts/test.sh installs), alternating, --rounds N (3); then one
                      --big-zip-mib MIB (400; 0 skips it) zip into the bucket, for peak RSS;
                      takes --versions, --latency-ms, --zip-kib, --files, --concurrency, --keep
Every option can also be given as SYNC_BENCH_<NAME>, e.g. SYNC_BENCH_VERSIONS=500,
SYNC_BENCH_NO_GO=1; arguments win over the environment.";

/// Options that take a value; anything not here or in [`FLAGS`] is an error.
const VALUED: &[&str] = &[
    "versions",
    "latency-ms",
    "concurrency",
    "zip-kib",
    "files",
    "big-zip-mib",
    "gomirror",
    "rounds",
    "tmpfs-dir",
    "baseline",
];
const FLAGS: &[&str] = &["no-go", "keep", "sumdb", "syscost"];

/// The first argument that turns this binary into the upstream process.
const SERVE: &str = "--serve-upstream";

/// `go mod download` arguments per invocation. Far below ARG_MAX (2 MiB on Linux), and large
/// enough that 2000 versions go in one call, so go's own parallelism is what gets measured.
const GO_ARG_BYTES: usize = 100_000;

/// The big-zip run's target for gomirror's peak RSS.
const BIG_RSS_TARGET_KIB: u64 = 64 << 10;

struct Opts {
    versions: usize,
    latency: Duration,
    concurrency: usize,
    zip_kib: usize,
    files: usize,
    big_zip_mib: usize,
    go: bool,
    keep: bool,
    sumdb: bool,
    gomirror: PathBuf,
    /// `--syscost`: run [`syscost_mode`] instead.
    syscost: Option<syscost_mode::SyscostOpts>,
}

impl Opts {
    fn parse() -> Result<Opts> {
        let given = given_options()?;
        let get = |name: &str| {
            let env = format!("SYNC_BENCH_{}", name.to_uppercase().replace('-', "_"));
            given.get(name).cloned().or_else(|| std::env::var(env).ok())
        };
        let flag = |name: &str| get(name).is_some_and(|v| !matches!(v.as_str(), "" | "0"));
        let opts = Opts {
            versions: number(get("versions"), "versions", 2000)?,
            latency: Duration::from_millis(number(get("latency-ms"), "latency-ms", 20)?),
            concurrency: number(get("concurrency"), "concurrency", 64)?,
            zip_kib: number(get("zip-kib"), "zip-kib", 100)?,
            files: number(get("files"), "files", 10)?,
            big_zip_mib: number(get("big-zip-mib"), "big-zip-mib", 400)?,
            go: !flag("no-go"),
            keep: flag("keep"),
            sumdb: flag("sumdb"),
            gomirror: get("gomirror").map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from),
            syscost: match flag("syscost") {
                true => Some(syscost_mode::SyscostOpts {
                    rounds: number(get("rounds"), "rounds", 3)?,
                    tmpfs_dir: get("tmpfs-dir").map_or("/dev/shm".into(), PathBuf::from),
                    baseline: get("baseline").map(PathBuf::from),
                }),
                false => None,
            },
        };
        ensure!(opts.versions > 0, "--versions: must be at least 1");
        ensure!(opts.concurrency > 0, "--concurrency: must be at least 1");
        ensure!(
            opts.files >= 3,
            "--files: must be at least 3 (go.mod, x.go, a filler)"
        );
        Ok(opts)
    }
}

/// `--name value`, `--name=value` and flags from the command line.
fn given_options() -> Result<HashMap<String, String>> {
    let mut given = HashMap::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let Some(name) = arg.strip_prefix("--") else {
            bail!("unexpected argument {arg:?}\n{USAGE}");
        };
        let (name, inline) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v.to_string())),
            None => (name, None),
        };
        match name {
            // cargo passes `--bench` to every `harness = false` bench it runs.
            "bench" => {}
            "help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ if FLAGS.contains(&name) => {
                given.insert(name.to_string(), inline.unwrap_or_else(|| "1".into()));
            }
            _ if VALUED.contains(&name) => {
                let value = match inline {
                    Some(v) => v,
                    None => args
                        .next()
                        .with_context(|| format!("--{name}: needs a value"))?,
                };
                given.insert(name.to_string(), value);
            }
            _ => bail!("unknown option --{name}\n{USAGE}"),
        }
    }
    Ok(given)
}

fn number<T: FromStr>(value: Option<String>, name: &str, default: T) -> Result<T> {
    match value {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| anyhow::anyhow!("--{name}: {v:?} is not a non-negative integer")),
    }
}

/// What one upstream process serves: `count` synthetic modules at `v1.0.0`.
#[derive(Clone, Copy)]
struct Corpus {
    /// One module, `example.com/bench/big`, instead of `example.com/bench/mNNNN`.
    big: bool,
    count: usize,
    files: usize,
    /// Approximate zip size of each module.
    bytes: usize,
    latency_ms: u64,
    /// Serve a checksum database holding every version's record.
    sumdb: bool,
}

impl Corpus {
    /// The `--versions` small modules the options describe.
    fn many(opts: &Opts, sumdb: bool) -> Result<Corpus> {
        Ok(Corpus {
            big: false,
            count: opts.versions,
            files: opts.files,
            bytes: opts.zip_kib << 10,
            latency_ms: u64::try_from(opts.latency.as_millis())?,
            sumdb,
        })
    }

    fn args(&self) -> Vec<String> {
        let kind = if self.big { "big" } else { "many" };
        let numbers = [self.count, self.files, self.bytes].map(|n| n.to_string());
        [SERVE.to_string(), kind.to_string()]
            .into_iter()
            .chain(numbers)
            .chain([self.latency_ms.to_string(), self.sumdb.to_string()])
            .collect()
    }

    fn from_args(args: &[String]) -> Result<Corpus> {
        let [kind, count, files, bytes, latency_ms, sumdb] = args else {
            bail!("{SERVE}: want kind, count, files, bytes, latency_ms, sumdb; got {args:?}");
        };
        Ok(Corpus {
            big: kind == "big",
            count: count.parse()?,
            files: files.parse()?,
            bytes: bytes.parse()?,
            latency_ms: latency_ms.parse()?,
            sumdb: sumdb.parse()?,
        })
    }

    fn module(&self, i: usize) -> ModuleFiles {
        let width = self.count.to_string().len().max(4);
        let path = match self.big {
            true => "example.com/bench/big".to_string(),
            false => format!("example.com/bench/m{i:0width$}"),
        };
        zipgen::synthetic_module(&path, "v1.0.0", self.files, self.bytes)
    }
}

/// Padding records before the bench's own in the checksum database: enough for a level-2 tile.
const SUMDB_PADDING: usize = 100_000;

/// The upstream process: generates `corpus`, serves it, prints its URL, `sumdb <verifier key>`
/// if it serves a checksum database, one [`Target`] line per version and `ready <generation
/// seconds>`, then answers each `count` line on stdin with the
/// number of requests so far. Exits when stdin closes, i.e. when the bench process is done.
fn serve(corpus: Corpus) -> Result<()> {
    let rt = tokio::runtime::Runtime::new().context("starting the upstream's runtime")?;
    let start = Instant::now();
    let modules: Vec<ModuleFiles> = (0..corpus.count).map(|i| corpus.module(i)).collect();
    let manifest: Vec<String> = modules.iter().map(Target::line).collect();
    let db = corpus.sumdb.then(|| {
        let db = sumdb::SumdbServer::new("sum.bench.example");
        db.pad(SUMDB_PADDING);
        db.add_modules(&modules);
        db
    });
    let gen_secs = start.elapsed().as_secs_f64();
    let upstream = rt.block_on(Upstream::start(modules));
    upstream
        .faults()
        .set_latency(Duration::from_millis(corpus.latency_ms));
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", upstream.url())?;
    if let Some(db) = db {
        writeln!(out, "sumdb {}", db.vkey())?;
        upstream.attach_sumdb(db);
    }
    for line in manifest {
        writeln!(out, "{line}")?;
    }
    writeln!(out, "ready {gen_secs}")?;
    out.flush()?;
    for line in std::io::stdin().lines() {
        ensure!(line? == "count", "{SERVE}: the only command is `count`");
        writeln!(out, "{}", upstream.total_requests())?;
        out.flush()?;
    }
    Ok(())
}

/// A running upstream process; dropping it closes its stdin, which stops it.
struct Server {
    child: Child,
    /// `None` only while dropping.
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    url: String,
    /// The verifier key of the checksum database it serves, if any.
    sumdb_key: Option<String>,
    targets: Vec<Target>,
    gen_secs: f64,
}

impl Server {
    fn start(corpus: Corpus) -> Result<Server> {
        Server::spawn(corpus.args())
    }

    /// This binary started with `args` (a serve argument first), speaking [`serve`]'s protocol.
    fn spawn(args: Vec<String>) -> Result<Server> {
        let exe = std::env::current_exe().context("finding the bench binary")?;
        let mut child = Command::new(exe)
            .args(args)
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
            sumdb_key: None,
            targets: Vec::new(),
            gen_secs: 0.0,
        };
        server.url = server.read_line()?;
        loop {
            let line = server.read_line()?;
            if let Some(secs) = line.strip_prefix("ready ") {
                server.gen_secs = secs.parse()?;
                break;
            }
            if let Some(key) = line.strip_prefix("sumdb ") {
                server.sumdb_key = Some(key.to_string());
                continue;
            }
            server.targets.push(Target::parse(&line)?);
        }
        eprintln!(
            "upstream {}: {} version(s) generated in {:.2}s",
            server.url,
            server.targets.len(),
            server.gen_secs
        );
        Ok(server)
    }

    /// Upstream requests so far.
    fn requests(&mut self) -> Result<usize> {
        let stdin = self.stdin.as_mut().expect("stdin is taken only by drop");
        writeln!(stdin, "count").context("upstream process")?;
        stdin.flush().context("upstream process")?;
        Ok(self.read_line()?.parse()?)
    }

    fn read_line(&mut self) -> Result<String> {
        let mut line = String::new();
        if self
            .stdout
            .read_line(&mut line)
            .context("upstream process")?
            == 0
        {
            bail!("upstream process exited early");
        }
        Ok(line.trim_end().to_string())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.stdin.take());
        // Its exit status tells nothing the bench has not already checked.
        let _ = self.child.wait();
    }
}

/// A module version the upstream serves, and what the tree must end up holding for it.
struct Target {
    path: String,
    version: String,
    zip_len: u64,
}

impl Target {
    /// `path version zip_len`, as the upstream process prints it.
    fn line(m: &ModuleFiles) -> String {
        format!("{} {} {}", m.path, m.version, m.zip.len())
    }

    fn parse(line: &str) -> Result<Target> {
        let fields: Vec<&str> = line.split(' ').collect();
        let [path, version, zip_len] = fields[..] else {
            bail!("upstream process: bad manifest line {line:?}");
        };
        Ok(Target {
            path: path.to_string(),
            version: version.to_string(),
            zip_len: zip_len.parse()?,
        })
    }
}

/// One child process, measured.
struct Measured {
    secs: f64,
    /// CPU time of the child (and of any children it waited for), from `wait4`.
    user_secs: f64,
    sys_secs: f64,
    peak_rss_kib: u64,
    /// Upstream requests made while it ran.
    requests: usize,
    status: ExitStatus,
    /// The last non-empty line of its log (gomirror's summary line).
    last_line: String,
}

impl Measured {
    fn json(&self) -> Value {
        json!({
            "secs": round(self.secs, 3),
            "user_secs": round(self.user_secs, 3),
            "sys_secs": round(self.sys_secs, 3),
            "requests": self.requests,
            "requests_per_sec": round(self.requests as f64 / self.secs, 1),
            "peak_rss_kib": self.peak_rss_kib,
            "exit": self.status.code(),
        })
    }
}

/// Starts `cmd` with stdout and stderr in `log` (stdout in `out` if given), waits, measures.
fn measure(
    mut cmd: Command,
    log: &Path,
    out: Option<&Path>,
    server: &mut Server,
) -> Result<Measured> {
    let err = File::create(log).with_context(|| format!("{}", log.display()))?;
    let stdout = match out {
        Some(p) => File::create(p).with_context(|| format!("{}", p.display()))?,
        None => err.try_clone().context("duplicating the log file")?,
    };
    cmd.stdin(Stdio::null()).stdout(stdout).stderr(err);
    let before = server.requests()?;
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let (status, usage) = wait_rusage(child)?;
    let secs = start.elapsed().as_secs_f64();
    let cpu = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Ok(Measured {
        secs,
        user_secs: cpu(usage.ru_utime),
        sys_secs: cpu(usage.ru_stime),
        // Linux reports ru_maxrss in KiB.
        peak_rss_kib: u64::try_from(usage.ru_maxrss)?,
        requests: server.requests()? - before,
        status,
        last_line: last_line(log)?,
    })
}

/// Reaps `child` with `wait4`: its exit status and its own resource usage (peak RSS, CPU).
fn wait_rusage(child: Child) -> Result<(ExitStatus, libc::rusage)> {
    let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, for which all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    loop {
        // SAFETY: both pointers are valid for writes for the duration of the call. `child` is
        // never waited on through std, so this is the only reaper of `pid`.
        let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if r == pid {
            break;
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::Interrupted {
            return Err(e).context("wait4");
        }
    }
    Ok((ExitStatus::from_raw(status), usage))
}

/// Runs `run` in a fresh work directory named `<prefix>…` under the system's temp dir, and
/// keeps the directory when `keep` is set or the run failed (its error names the log to read).
pub fn in_work_dir(prefix: &str, keep: bool, run: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    let work = tempfile::Builder::new()
        .prefix(prefix)
        .tempdir()
        .context("creating the work directory")?;
    eprintln!("work directory {}", work.path().display());
    let result = run(work.path());
    if keep || result.is_err() {
        let kept = work.keep();
        eprintln!("kept {}", kept.display());
    }
    result
}

/// This process's VmHWM in KiB: the floor under every child's figure, since a child's exec
/// records this address space's high-water mark. Not `getrusage(RUSAGE_SELF)`, which likewise
/// starts at the RSS of whoever spawned this process (cargo, some 80 MiB).
fn self_vm_hwm_kib() -> Result<u64> {
    let status = fs::read_to_string("/proc/self/status").context("/proc/self/status")?;
    let hwm = status.lines().find_map(|l| l.strip_prefix("VmHWM:"));
    let kib = hwm.context("/proc/self/status: no VmHWM line")?;
    Ok(kib.trim().trim_end_matches("kB").trim().parse()?)
}

/// The last non-empty line of `log`, reading only its tail: a log of 2000 versions is large,
/// and this process must stay small (see the module doc).
fn last_line(log: &Path) -> Result<String> {
    let ctx = || format!("{}", log.display());
    let mut f = File::open(log).with_context(ctx)?;
    let len = f.metadata().with_context(ctx)?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096)))
        .with_context(ctx)?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).with_context(ctx)?;
    let tail = String::from_utf8_lossy(&tail);
    let line = tail.lines().rev().find(|l| !l.trim().is_empty());
    Ok(line.unwrap_or_default().to_string())
}

/// `.info`, `.mod` and `.zip` of every target are in `tree`, and each zip has upstream's size.
fn check_tree(tree: &Path, targets: &[Target]) -> Result<()> {
    for t in targets {
        let dir = tree.join(escape_path(&t.path)).join("@v");
        for ext in ["info", "mod", "zip"] {
            // Not `with_extension`: it would replace the `.0` of `v1.0.0`.
            let file = dir.join(format!("{}.{ext}", escape_path(&t.version)));
            let meta = fs::metadata(&file)
                .with_context(|| format!("{}@{}: {}", t.path, t.version, file.display()))?;
            ensure!(
                ext != "zip" || meta.len() == t.zip_len,
                "{}: {} bytes, upstream served {}",
                file.display(),
                meta.len(),
                t.zip_len
            );
        }
    }
    Ok(())
}

/// A mirror.toml for `targets` under `dir` (tree, state, config), watching each exactly;
/// verifying against the checksum database `sumdb_key` names, or not at all.
fn write_config(
    dir: &Path,
    url: &str,
    concurrency: usize,
    sumdb_key: Option<&str>,
    targets: &[Target],
) -> Result<PathBuf> {
    let tree = dir.join("tree").to_string_lossy().into_owned();
    let tree = format!("dir = {}\n", toml::Value::String(tree));
    write_config_tree(dir, url, concurrency, sumdb_key, &tree, targets)
}

/// [`write_config`] with `tree` as the body of `[tree]` (a `dir`, or a bucket's `url`).
fn write_config_tree(
    dir: &Path,
    url: &str,
    concurrency: usize,
    sumdb_key: Option<&str>,
    tree: &str,
    targets: &[Target],
) -> Result<PathBuf> {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let path_str = |p: PathBuf| p.to_string_lossy().into_owned();
    let mut text = format!(
        "[upstream]\nproxies = [{}]\n[tree]\n{tree}[state]\ndatabase = {}\n\
         [fetch]\nconcurrency = {concurrency}\n[sumdb]\nkey = {}\n",
        q(url),
        q(&path_str(dir.join("state.db"))),
        q(sumdb_key.unwrap_or("off")),
    );
    for t in targets {
        let (module, versions) = (q(&t.path), q(&t.version));
        text += &format!("\n[[watch]]\nmodule = {module}\nversions = {versions}\n");
    }
    fs::create_dir_all(dir).with_context(|| format!("{}", dir.display()))?;
    let config = dir.join("mirror.toml");
    fs::write(&config, text).with_context(|| format!("{}", config.display()))?;
    Ok(config)
}

/// One `gomirror sync`; fails unless it exits 0, since the figures of a failed run mislead.
fn sync(bin: &Path, config: &Path, log: &Path, server: &mut Server) -> Result<Measured> {
    let mut cmd = Command::new(bin);
    cmd.arg("sync").arg("--config").arg(config);
    let m = measure(cmd, log, None, server)?;
    sync_succeeded(&m, config, log)?;
    Ok(m)
}

/// An error naming the config, the status, the last line and the log of a sync that failed.
fn sync_succeeded(m: &Measured, config: &Path, log: &Path) -> Result<()> {
    ensure!(
        m.status.success(),
        "gomirror sync --config {}: {}; last line: {}; log: {}",
        config.display(),
        m.status,
        m.last_line,
        log.display()
    );
    Ok(())
}

/// `go mod download -json` of every target into a fresh GOPATH and module cache, from an
/// empty directory outside any module. `None` when `go` is not on PATH.
fn go_download(dir: &Path, server: &mut Server) -> Result<Option<Measured>> {
    if Command::new("go").arg("version").output().is_err() {
        eprintln!("go is not on PATH: skipping the `go mod download` comparison");
        return Ok(None);
    }
    let cwd = dir.join("empty");
    fs::create_dir_all(&cwd).with_context(|| format!("{}", cwd.display()))?;
    let mut total: Option<Measured> = None;
    for (i, chunk) in go_chunks(&server.targets).into_iter().enumerate() {
        let mut cmd = Command::new("go");
        cmd.args(["mod", "download", "-json"]).args(chunk);
        go_env(&mut cmd, dir, &server.url);
        cmd.current_dir(&cwd);
        let (log, out) = (
            dir.join(format!("go-{i}.log")),
            dir.join(format!("go-{i}.json")),
        );
        let m = measure(cmd, &log, Some(&out), server)?;
        check_go_output(&out, &m, &log)?;
        total = Some(match total {
            None => m,
            Some(t) => Measured {
                secs: t.secs + m.secs,
                user_secs: t.user_secs + m.user_secs,
                sys_secs: t.sys_secs + m.sys_secs,
                peak_rss_kib: t.peak_rss_kib.max(m.peak_rss_kib),
                requests: t.requests + m.requests,
                ..m
            },
        });
    }
    Ok(total)
}

/// `path@version` arguments in groups of at most [`GO_ARG_BYTES`].
fn go_chunks(targets: &[Target]) -> Vec<Vec<String>> {
    let mut chunks: Vec<Vec<String>> = vec![Vec::new()];
    let mut bytes = 0;
    for t in targets {
        let arg = format!("{}@{}", t.path, t.version);
        let last = chunks.last_mut().expect("chunks starts non-empty");
        if bytes + arg.len() + 1 > GO_ARG_BYTES && !last.is_empty() {
            chunks.push(Vec::new());
            bytes = 0;
        }
        bytes += arg.len() + 1;
        chunks.last_mut().expect("chunks is non-empty").push(arg);
    }
    chunks
}

/// A hermetic go: only `url`, no checksum database, caches under `dir`, no go.env file.
fn go_env(cmd: &mut Command, dir: &Path, url: &str) {
    cmd.env("GOPROXY", url)
        .env("GOSUMDB", "off")
        .env("GONOSUMCHECK", "1")
        // -modcacherw: the module cache can be deleted with the work directory.
        .env("GOFLAGS", "-mod=mod -modcacherw")
        .env("GOPATH", dir.join("gopath"))
        .env("GOMODCACHE", dir.join("modcache"))
        .env("GOCACHE", dir.join("gocache"))
        .env("GO111MODULE", "on")
        .env("GOENV", "off")
        .env_remove("GOPRIVATE")
        .env_remove("GONOPROXY")
        .env_remove("GONOSUMDB");
}

/// go exited 0 and printed no object with an `Error`.
fn check_go_output(out: &Path, m: &Measured, log: &Path) -> Result<()> {
    let file = File::open(out).with_context(|| format!("{}", out.display()))?;
    let mut first_error = None;
    for v in serde_json::Deserializer::from_reader(BufReader::new(file)).into_iter() {
        let v: Value = v.with_context(|| format!("{}: not a JSON stream", out.display()))?;
        if let Some(e) = v.get("Error") {
            first_error.get_or_insert_with(|| e.to_string());
        }
    }
    ensure!(
        m.status.success() && first_error.is_none(),
        "go mod download: {}; first error: {}; log: {}",
        m.status,
        first_error.unwrap_or_else(|| m.last_line.clone()),
        log.display()
    );
    Ok(())
}

/// Figures of the many-versions part: cold sync, no-op sync, go.
struct Many {
    gen_secs: f64,
    cold: Measured,
    noop: Measured,
    go: Option<Measured>,
    /// Cold and no-op with checksum-database verification on (`--sumdb`).
    verified: Option<(Measured, Measured)>,
}

fn bench_many(opts: &Opts, bin: &Path, work: &Path) -> Result<Many> {
    let mut server = Server::start(Corpus::many(opts, opts.sumdb)?)?;
    let dir = work.join("many");
    let config = write_config(&dir, &server.url, opts.concurrency, None, &server.targets)?;
    let cold = sync(bin, &config, &dir.join("cold.log"), &mut server)?;
    check_tree(&dir.join("tree"), &server.targets)?;
    eprintln!("cold:  {:.2}s  {}", cold.secs, cold.last_line);
    let noop = sync(bin, &config, &dir.join("noop.log"), &mut server)?;
    eprintln!("no-op: {:.2}s  {}", noop.secs, noop.last_line);
    let go = match opts.go {
        true => go_download(&work.join("go"), &mut server)?,
        false => None,
    };
    if let Some(g) = &go {
        eprintln!("go:    {:.2}s", g.secs);
    }
    let verified = match server.sumdb_key.clone() {
        Some(key) => Some(bench_verified(opts, bin, work, &key, &mut server)?),
        None => None,
    };
    Ok(Many {
        gen_secs: server.gen_secs,
        cold,
        noop,
        go,
        verified,
    })
}

/// Cold and no-op sync with verification on, into a fresh tree and database.
fn bench_verified(
    opts: &Opts,
    bin: &Path,
    work: &Path,
    key: &str,
    server: &mut Server,
) -> Result<(Measured, Measured)> {
    let dir = work.join("verified");
    let config = write_config(
        &dir,
        &server.url,
        opts.concurrency,
        Some(key),
        &server.targets,
    )?;
    let cold = sync(bin, &config, &dir.join("cold.log"), server)?;
    check_tree(&dir.join("tree"), &server.targets)?;
    ensure!(
        dir.join("tree/sumdb/sum.bench.example/supported").is_file(),
        "verified run: no offline checksum database in {}",
        dir.display()
    );
    eprintln!("cold, verified:  {:.2}s  {}", cold.secs, cold.last_line);
    let noop = sync(bin, &config, &dir.join("noop.log"), server)?;
    eprintln!("no-op, verified: {:.2}s  {}", noop.secs, noop.last_line);
    Ok((cold, noop))
}

/// One module with a zip of about `big_zip_mib`, synced alone.
fn bench_big(opts: &Opts, bin: &Path, work: &Path) -> Result<Measured> {
    let mib = opts.big_zip_mib;
    let mut server = Server::start(Corpus {
        big: true,
        count: 1,
        // 1 MiB filler files keep the generator's buffer small; the zip itself is held once.
        files: mib + 2,
        bytes: mib << 20,
        latency_ms: u64::try_from(opts.latency.as_millis())?,
        sumdb: false,
    })?;
    let dir = work.join("big");
    let config = write_config(&dir, &server.url, opts.concurrency, None, &server.targets)?;
    let big = sync(bin, &config, &dir.join("sync.log"), &mut server)?;
    check_tree(&dir.join("tree"), &server.targets)?;
    eprintln!("big:   {:.2}s  {}", big.secs, big.last_line);
    Ok(big)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn round(x: f64, digits: i32) -> f64 {
    let p = 10f64.powi(digits);
    (x * p).round() / p
}

/// 3 requests per version, `concurrency` at a time, each taking at least `latency`.
fn latency_bound_secs(opts: &Opts) -> f64 {
    3.0 * opts.versions as f64 * opts.latency.as_secs_f64() / opts.concurrency as f64
}

fn row(name: &str, m: &Measured) {
    println!(
        "{name:<30} {:>8.2} s {:>9} {:>9.0} {:>9.1} MiB",
        m.secs,
        m.requests,
        m.requests as f64 / m.secs,
        mib(m.peak_rss_kib)
    );
}

/// The line above every table: what was synced, and how.
fn print_setup(opts: &Opts) {
    println!(
        "\n{} versions, ~{} KiB zips of {} files, {} ms per upstream request, concurrency {}\n",
        opts.versions,
        opts.zip_kib,
        opts.files,
        opts.latency.as_millis(),
        opts.concurrency
    );
}

fn print_table(opts: &Opts, many: &Many, big: Option<&Measured>, bench_rss_kib: u64) {
    let bound = latency_bound_secs(opts);
    print_setup(opts);
    let head = ["", "time", "requests", "req/s", "peak RSS"];
    println!(
        "{:<30} {:>10} {:>9} {:>9} {:>13}",
        head[0], head[1], head[2], head[3], head[4]
    );
    row("gomirror sync (cold)", &many.cold);
    row("gomirror sync (no-op)", &many.noop);
    if let Some((cold, noop)) = &many.verified {
        row("gomirror sync (cold, sumdb)", cold);
        row("gomirror sync (no-op, sumdb)", noop);
    }
    if let Some(g) = &many.go {
        row("go mod download", g);
    }
    if let Some(b) = big {
        row(&format!("gomirror sync, {} MiB zip", opts.big_zip_mib), b);
    }
    println!();
    println!(
        "{:<30} {:>8.2} s  (3 x N x latency / concurrency)",
        "latency bound", bound
    );
    println!(
        "{:<30} {:>8.2} x",
        "gomirror cold / bound",
        many.cold.secs / bound
    );
    if let Some((cold, _)) = &many.verified {
        println!(
            "{:<30} {:>8.2} x",
            "cold verified / unverified",
            cold.secs / many.cold.secs
        );
    }
    if let Some(g) = &many.go {
        println!(
            "{:<30} {:>8.2} x",
            "go / gomirror cold",
            g.secs / many.cold.secs
        );
    }
    if let Some(b) = big {
        let verdict = match b.peak_rss_kib < BIG_RSS_TARGET_KIB {
            true => "met",
            false => "MISSED",
        };
        let rss = mib(b.peak_rss_kib);
        println!(
            "{:<30} {rss:>8.1} MiB  (target < 64 MiB: {verdict})",
            "big zip peak RSS"
        );
    }
    let floor = mib(bench_rss_kib);
    println!(
        "{:<30} {floor:>8.1} MiB  (no peak RSS above reads lower)",
        "RSS floor"
    );
}

fn figures(opts: &Opts, many: &Many, big: Option<&Measured>, bench_rss_kib: u64) -> Value {
    let bound = latency_bound_secs(opts);
    json!({
        "bench": "sync",
        "versions": opts.versions,
        "latency_ms": u64::try_from(opts.latency.as_millis()).unwrap_or(u64::MAX),
        "concurrency": opts.concurrency,
        "zip_kib": opts.zip_kib,
        "files_per_zip": opts.files,
        "generate_secs": round(many.gen_secs, 3),
        "cold": many.cold.json(),
        "noop": many.noop.json(),
        "go": many.go.as_ref().map(Measured::json),
        "cold_sumdb": many.verified.as_ref().map(|(c, _)| c.json()),
        "noop_sumdb": many.verified.as_ref().map(|(_, n)| n.json()),
        "sumdb_over_cold": many.verified.as_ref().map(|(c, _)| round(c.secs / many.cold.secs, 3)),
        "latency_bound_secs": round(bound, 3),
        "cold_over_bound": round(many.cold.secs / bound, 2),
        "go_over_cold": many.go.as_ref().map(|g| round(g.secs / many.cold.secs, 2)),
        "big_zip_mib": opts.big_zip_mib,
        "big": big.map(Measured::json),
        "bench_rss_kib": bench_rss_kib,
    })
}

fn run(opts: &Opts, work: &Path) -> Result<()> {
    let bin = work.join("gomirror");
    fs::copy(&opts.gomirror, &bin).with_context(|| {
        let path = opts.gomirror.display();
        format!("{path}: build it with `cargo build --release --bin gomirror`")
    })?;
    if let Some(syscost) = &opts.syscost {
        return syscost_mode::run(opts, syscost, &bin, work);
    }
    let many = bench_many(opts, &bin, work)?;
    let big = match opts.big_zip_mib {
        0 => None,
        _ => Some(bench_big(opts, &bin, work)?),
    };
    let floor = self_vm_hwm_kib()?;
    print_table(opts, &many, big.as_ref(), floor);
    println!("{}", figures(opts, &many, big.as_ref(), floor));
    Ok(())
}

/// The number after `name` in `args` (`--modules 300`), or `default` without one.
fn number_arg(args: &[String], name: &str, default: usize) -> Result<usize> {
    match args.iter().position(|a| a == name) {
        Some(i) => args
            .get(i + 1)
            .with_context(|| format!("{name}: needs a value"))?
            .parse()
            .with_context(|| format!("{name}: want a number")),
        None => Ok(default),
    }
}

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(SERVE) {
        return serve(Corpus::from_args(&args[2..])?);
    }
    if args.get(1).map(String::as_str) == Some(closure_mode::SERVE) {
        return closure_mode::serve(&args[2..]);
    }
    if args.get(1).map(String::as_str) == Some(s3_mode::SERVE) {
        return s3_mode::serve(&args[2..]);
    }
    if args.iter().any(|a| a == "--s3") {
        let bin = std::env::var("SYNC_BENCH_GOMIRROR")
            .map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from);
        return s3_mode::main(&args, &bin);
    }
    if args.iter().any(|a| a == "--closure") {
        let bin = std::env::var("SYNC_BENCH_GOMIRROR")
            .map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from);
        return closure_mode::main(&args, &bin);
    }
    if args.iter().any(|a| a == "--export") {
        let bin = std::env::var("SYNC_BENCH_GOMIRROR")
            .map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from);
        return export_mode::main(&args, &bin);
    }
    if args.iter().any(|a| a == "--chain") {
        let bin = std::env::var("SYNC_BENCH_GOMIRROR")
            .map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from);
        return chain_mode::main(&args, &bin);
    }
    if args.iter().any(|a| a == "--clients") {
        let bin = std::env::var("SYNC_BENCH_GOMIRROR")
            .map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from);
        return clients_mode::main(&args, &bin);
    }
    if args.iter().any(|a| a == "--prune") {
        let bin = std::env::var("SYNC_BENCH_GOMIRROR")
            .map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from);
        return prune_mode::main(&args, &bin);
    }
    if args.iter().any(|a| a == "--feed") {
        let bin = std::env::var("SYNC_BENCH_GOMIRROR")
            .map_or(env!("CARGO_BIN_EXE_gomirror").into(), PathBuf::from);
        return feed_mode::main(&args, &bin);
    }
    let opts = Opts::parse()?;
    crate::in_work_dir("gomirror-bench-", opts.keep, |work| run(&opts, work))
}
