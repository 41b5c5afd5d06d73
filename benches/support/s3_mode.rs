//! The object-storage benchmark (`cargo bench --bench sync -- --s3`, issue 17): the core
//! workload synced into a bucket of a real S3 server against the same workload synced into a
//! local directory, in one run; then one big zip into the bucket, for gomirror's peak RSS.
//!
//! Input: `--versions` (2000), `--latency-ms` (20), `--zip-kib` (100), `--files` (10),
//! `--concurrency` (64), `--rounds` (3), `--big-zip-mib` (400; 0 skips it), `--keep`, and
//! the S3 server binary, `s3s-fs` (`$GOMIRROR_S3S_FS`, else `.tools/s3s-fs/bin/s3s-fs`, which
//! `scripts/test.sh` installs). Output: a table on stdout, then one line of JSON.
//!
//! 1. **S3 server**: one `s3s-fs` with credentials on a free loopback port, its root in the
//!    work directory (the same file system as the local trees). Objects are plain files at
//!    `<root>/<bucket>/<key>`, which is how the bench reads them back.
//! 2. **Core workload**: the sync bench's upstream process (its own process, `--latency-ms`
//!    before each answer) serving `--versions` synthetic modules, shared by every round.
//! 3. **Rounds**: each round a cold `gomirror sync` into a fresh local tree and a cold one into
//!    a fresh prefix of the bucket, each with a fresh state database; the first of the two
//!    alternates between rounds, so a slow patch of the machine hits both. Per sync: wall time,
//!    CPU and peak RSS of the gomirror child (`wait4`), and the S3 server's CPU while it ran
//!    (`/proc/<pid>/stat`). The figure: bucket ÷ local per round, and their median (aim ≤ 1.5×).
//!    After each round, outside the timing, the bucket must hold every version in its
//!    `@v/list` and exactly the local tree's files, byte for byte.
//! 4. **Big zip**: a second upstream process writes one module with a `--big-zip-mib` zip of
//!    incompressible stored files to a file (streaming, never whole in memory) and serves it
//!    from that file. It is synced into a fresh local tree and then into a fresh prefix of the
//!    bucket; the figures are gomirror's peak RSS into the bucket (target ≤ 64 MiB) and the
//!    throughput of both; the bucket's object must be the served zip, byte for byte.
//!
//! `SYNC_BENCH_S3S_LOG` is the server's `RUST_LOG` (default `warn`; `debug` logs every request
//! with its duration into `s3s-fs.log` in the work directory).
//!
//! The bench process stays small (see the sync bench's module doc on `ru_maxrss`): nothing
//! here holds a tree or a zip in memory, and its VmHWM is reported as the floor.

use std::fs::{self, File};
use std::io::{BufWriter, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use crate::corpus::escape_path;
use crate::{
    check_tree, measure, mib, round, self_vm_hwm_kib, write_config, write_config_tree, Corpus,
    Measured, Server, Target,
};

/// The first argument that turns this binary into the big-zip upstream process.
pub const SERVE: &str = "--serve-s3-big-upstream";

/// The aim for the median of bucket ÷ local.
const RATIO_AIM: f64 = 1.5;
/// The target for gomirror's peak RSS syncing the big zip into the bucket.
const BIG_RSS_TARGET_KIB: u64 = 64 << 10;

const ACCESS_KEY: &str = "gomirror-bench";
const SECRET_KEY: &str = "gomirror-bench-secret";
const BUCKET: &str = "bench";

const BIG_PATH: &str = "example.com/bench/big";
const BIG_VERSION: &str = "v1.0.0";

const USAGE: &str = "--s3 takes --versions N (2000), --latency-ms MS (20), --zip-kib KIB (100), \
                     --files N (10), --concurrency N (64), --rounds N (3), --big-zip-mib MIB \
                     (400; 0 skips it), --keep";

struct S3Opts {
    versions: usize,
    latency_ms: u64,
    zip_kib: usize,
    files: usize,
    concurrency: usize,
    rounds: usize,
    big_zip_mib: usize,
    keep: bool,
}

impl S3Opts {
    fn parse(args: &[String]) -> Result<S3Opts> {
        const VALUED: &[&str] = &[
            "--versions",
            "--latency-ms",
            "--zip-kib",
            "--files",
            "--concurrency",
            "--rounds",
            "--big-zip-mib",
        ];
        let mut it = args.iter().skip(1);
        while let Some(a) = it.next() {
            match a.as_str() {
                "--s3" | "--keep" | "--bench" => {}
                a if VALUED.contains(&a) => {
                    it.next().with_context(|| format!("{a}: needs a value"))?;
                }
                a => bail!("unknown argument {a:?}: {USAGE}"),
            }
        }
        let value = |name: &str, default: usize| crate::number_arg(args, name, default);
        let opts = S3Opts {
            versions: value("--versions", 2000)?,
            latency_ms: u64::try_from(value("--latency-ms", 20)?)?,
            zip_kib: value("--zip-kib", 100)?,
            files: value("--files", 10)?,
            concurrency: value("--concurrency", 64)?,
            rounds: value("--rounds", 3)?,
            big_zip_mib: value("--big-zip-mib", 400)?,
            keep: args.iter().any(|a| a == "--keep"),
        };
        ensure!(
            opts.versions > 0 && opts.concurrency > 0 && opts.rounds > 0,
            "--versions, --concurrency, --rounds: at least 1"
        );
        ensure!(
            opts.files >= 3,
            "--files: at least 3 (go.mod, x.go, a filler)"
        );
        Ok(opts)
    }
}

pub fn main(args: &[String], gomirror: &Path) -> Result<()> {
    let opts = S3Opts::parse(args)?;
    let s3s_fs = find_s3s_fs()?;
    crate::in_work_dir("gomirror-s3-bench-", opts.keep, |work| {
        run(&opts, gomirror, &s3s_fs, work)
    })
}

/// `$GOMIRROR_S3S_FS`, else `.tools/s3s-fs/bin/s3s-fs`; an error saying how to install it.
fn find_s3s_fs() -> Result<PathBuf> {
    let (path, from) = match std::env::var_os("GOMIRROR_S3S_FS") {
        Some(p) => (PathBuf::from(p), "$GOMIRROR_S3S_FS"),
        None => (
            Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/s3s-fs/bin/s3s-fs"),
            "the default place",
        ),
    };
    ensure!(
        path.is_file(),
        "the S3 server s3s-fs is not at {} ({from}): run scripts/test.sh once, which \
         installs the pinned version into .tools/s3s-fs (a few minutes), or set \
         GOMIRROR_S3S_FS to an s3s-fs binary",
        path.display()
    );
    Ok(path)
}

fn run(opts: &S3Opts, gomirror: &Path, s3s_fs: &Path, work: &Path) -> Result<()> {
    let bin = work.join("gomirror");
    fs::copy(gomirror, &bin).with_context(|| {
        let path = gomirror.display();
        format!("{path}: build it with `cargo build --release --bin gomirror`")
    })?;
    let s3 = S3fs::start(s3s_fs, work)?;
    let mut server = Server::start(Corpus {
        big: false,
        count: opts.versions,
        files: opts.files,
        bytes: opts.zip_kib << 10,
        latency_ms: opts.latency_ms,
        sumdb: false,
    })?;
    let mut rounds = Vec::with_capacity(opts.rounds);
    for n in 1..=opts.rounds {
        rounds.push(bench_round(opts, n, &bin, &s3, &mut server, work)?);
    }
    drop(server);
    let big = match opts.big_zip_mib {
        0 => None,
        _ => Some(bench_big(opts, &bin, &s3, work)?),
    };
    let floor = self_vm_hwm_kib()?;
    print_table(opts, &rounds, big.as_ref(), floor);
    println!("{}", figures(opts, &rounds, big.as_ref(), floor));
    Ok(())
}

/// One `s3s-fs` with credentials; dropping it kills it.
struct S3fs {
    child: Child,
    root: PathBuf,
    port: u16,
    /// Clock ticks per second, for `/proc/<pid>/stat`.
    ticks: f64,
}

impl S3fs {
    /// Starts it on a free loopback port over `<work>/s3root` with the bucket created, and
    /// waits until it accepts connections.
    fn start(binary: &Path, work: &Path) -> Result<S3fs> {
        let root = work.join("s3root");
        // A bucket is a directory; CreateBucket would only mkdir it.
        fs::create_dir_all(root.join(BUCKET)).with_context(|| format!("{}", root.display()))?;
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|l| l.local_addr())
            .context("finding a free port")?
            .port();
        let log_path = work.join("s3s-fs.log");
        let log = File::create(&log_path).with_context(|| format!("{}", log_path.display()))?;
        let child = Command::new(binary)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .env(
                "RUST_LOG",
                std::env::var("SYNC_BENCH_S3S_LOG").unwrap_or("warn".into()),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone().context("duplicating the log file")?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        // SAFETY: sysconf has no preconditions.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let mut s3 = S3fs {
            child,
            root,
            port,
            ticks,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect((Ipv4Addr::LOCALHOST, port)).is_err() {
            if let Some(status) = s3.child.try_wait()? {
                bail!("s3s-fs exited with {status}; log: {}", log_path.display());
            }
            ensure!(
                Instant::now() < deadline,
                "s3s-fs not answering on port {port} after 10 s; log: {}",
                log_path.display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(s3)
    }

    /// `[tree]` for a tree under `prefix` of the bucket.
    fn tree_toml(&self, prefix: &str) -> String {
        format!(
            "url = \"s3://{BUCKET}/{prefix}\"\nendpoint = \"http://127.0.0.1:{}\"\n\
             region = \"us-east-1\"\n",
            self.port
        )
    }

    /// The directory holding the objects under `prefix`.
    fn dir(&self, prefix: &str) -> PathBuf {
        self.root.join(BUCKET).join(prefix)
    }

    /// User and system CPU seconds the server has used so far.
    fn cpu_secs(&self) -> Result<(f64, f64)> {
        let path = format!("/proc/{}/stat", self.child.id());
        let stat = fs::read_to_string(&path).with_context(|| path.clone())?;
        // Fields 14 and 15 (utime, stime), counted after the parenthesised command name.
        let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let tick = |i: usize| -> Result<f64> {
            let f = fields
                .get(i)
                .with_context(|| format!("{path}: too short"))?;
            Ok(f.parse::<f64>()? / self.ticks)
        };
        Ok((tick(11)?, tick(12)?))
    }
}

impl Drop for S3fs {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One cold sync, measured, with the S3 server's CPU while it ran.
struct Run {
    m: Measured,
    s3_user_secs: f64,
    s3_sys_secs: f64,
}

impl Run {
    fn json(&self) -> Value {
        let mut v = self.m.json();
        v["s3_server_user_secs"] = json!(round(self.s3_user_secs, 3));
        v["s3_server_sys_secs"] = json!(round(self.s3_sys_secs, 3));
        v
    }
}

/// `gomirror sync --config config` with the server's credentials and no other AWS setting.
fn sync(bin: &Path, config: &Path, log: &Path, server: &mut Server, s3: &S3fs) -> Result<Run> {
    let mut cmd = Command::new(bin);
    cmd.arg("sync").arg("--config").arg(config);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("AWS_") {
            cmd.env_remove(name);
        }
    }
    cmd.env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY);
    let before = s3.cpu_secs()?;
    let m = measure(cmd, log, None, server)?;
    let after = s3.cpu_secs()?;
    crate::sync_succeeded(&m, config, log)?;
    Ok(Run {
        m,
        s3_user_secs: after.0 - before.0,
        s3_sys_secs: after.1 - before.1,
    })
}

struct Round {
    local: Run,
    bucket: Run,
    bucket_first: bool,
}

impl Round {
    fn ratio(&self) -> f64 {
        self.bucket.m.secs / self.local.m.secs
    }
}

/// The configs of a sync from `server` into a local tree in `dirs.0` and into the bucket's
/// `prefix` (state in `dirs.1`).
fn configs(
    opts: &S3Opts,
    s3: &S3fs,
    server: &Server,
    dirs: (&Path, &Path),
    prefix: &str,
) -> Result<(PathBuf, PathBuf)> {
    let local = write_config(dirs.0, &server.url, opts.concurrency, None, &server.targets)?;
    let bucket = write_config_tree(
        dirs.1,
        &server.url,
        opts.concurrency,
        None,
        &s3.tree_toml(prefix),
        &server.targets,
    )?;
    Ok((local, bucket))
}

/// Round `n`: a cold sync into `<work>/rN/local/tree` and one into the bucket's prefix `rN`,
/// in the order the round's parity gives; then the bucket checked against the local tree.
fn bench_round(
    opts: &S3Opts,
    n: usize,
    bin: &Path,
    s3: &S3fs,
    server: &mut Server,
    work: &Path,
) -> Result<Round> {
    let (local_dir, bucket_dir) = (
        work.join(format!("r{n}/local")),
        work.join(format!("r{n}/bucket")),
    );
    let prefix = format!("r{n}");
    let (local_config, bucket_config) =
        configs(opts, s3, server, (&local_dir, &bucket_dir), &prefix)?;
    let bucket_first = n.is_multiple_of(2);
    let mut local = None;
    let mut bucket = None;
    for into_bucket in [bucket_first, !bucket_first] {
        if into_bucket {
            let log = bucket_dir.join("sync.log");
            bucket = Some(sync(bin, &bucket_config, &log, server, s3)?);
        } else {
            let log = local_dir.join("sync.log");
            local = Some(sync(bin, &local_config, &log, server, s3)?);
        }
    }
    let (local, bucket) = (local.expect("ran"), bucket.expect("ran"));
    check_tree(&local_dir.join("tree"), &server.targets)?;
    let objects = check_bucket(&local_dir.join("tree"), &s3.dir(&prefix), &server.targets)?;
    let round = Round {
        local,
        bucket,
        bucket_first,
    };
    eprintln!(
        "round {n}: local {:.2}s, bucket {:.2}s ({:.2}x); {objects} objects checked",
        round.local.m.secs,
        round.bucket.m.secs,
        round.ratio()
    );
    Ok(round)
}

/// Every target listed in the bucket's `@v/list`, and the bucket holding exactly the files of
/// the local tree, byte for byte. Returns how many objects it compared.
fn check_bucket(tree: &Path, bucket: &Path, targets: &[Target]) -> Result<usize> {
    for t in targets {
        let list = bucket.join(escape_path(&t.path)).join("@v/list");
        let body = fs::read_to_string(&list)
            .with_context(|| format!("{}@{}: {}", t.path, t.version, list.display()))?;
        ensure!(
            body.lines().any(|v| v == t.version),
            "{} does not list {}",
            list.display(),
            t.version
        );
    }
    let (local, remote) = (files_under(tree)?, files_under(bucket)?);
    if let Some(rel) = local.iter().find(|r| remote.binary_search(r).is_err()) {
        bail!(
            "{rel}: in the local tree {}, not in the bucket {}",
            tree.display(),
            bucket.display()
        );
    }
    if let Some(rel) = remote.iter().find(|r| local.binary_search(r).is_err()) {
        bail!(
            "{rel}: in the bucket {}, not in the local tree {}",
            bucket.display(),
            tree.display()
        );
    }
    for rel in &local {
        ensure!(
            same_bytes(&tree.join(rel), &bucket.join(rel))?,
            "{rel}: the bucket's object differs from the local tree's file"
        );
    }
    Ok(local.len())
}

/// The relative names of the regular files under `dir`, sorted.
fn files_under(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("{}", d.display()))? {
            let entry = entry.with_context(|| format!("{}", d.display()))?;
            // Not served: the local tree's run lock (`.gomirror.lock`), and no module path
            // or version element starts with a dot.
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push(entry.path());
            } else {
                let rel = entry.path();
                let rel = rel.strip_prefix(dir).expect("under dir");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Whether two files hold the same bytes, read in 1 MiB pieces.
fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
    let open = |p: &Path| File::open(p).with_context(|| format!("{}", p.display()));
    let (mut fa, mut fb) = (open(a)?, open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = read_full(&mut fa, &mut ba).with_context(|| format!("{}", a.display()))?;
        let m = read_full(&mut fb, &mut bb).with_context(|| format!("{}", b.display()))?;
        if ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the file ends.
fn read_full(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// The big zip synced into a local tree and into the bucket.
struct Big {
    zip_bytes: u64,
    local: Run,
    bucket: Run,
}

fn bench_big(opts: &S3Opts, bin: &Path, s3: &S3fs, work: &Path) -> Result<Big> {
    let dir = work.join("big");
    fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
    let zip = dir.join("served.zip");
    let args = [SERVE, &path_str(&zip), &opts.big_zip_mib.to_string()]
        .into_iter()
        .map(String::from)
        .chain([opts.latency_ms.to_string()])
        .collect();
    let mut server = Server::spawn(args)?;
    let (local_dir, bucket_dir) = (dir.join("local"), dir.join("bucket"));
    let (local_config, bucket_config) =
        configs(opts, s3, &server, (&local_dir, &bucket_dir), "big")?;
    let local = sync(
        bin,
        &local_config,
        &local_dir.join("sync.log"),
        &mut server,
        s3,
    )?;
    let bucket = sync(
        bin,
        &bucket_config,
        &bucket_dir.join("sync.log"),
        &mut server,
        s3,
    )?;
    check_tree(&local_dir.join("tree"), &server.targets)?;
    check_bucket(&local_dir.join("tree"), &s3.dir("big"), &server.targets)?;
    let rel = format!("{}/@v/{BIG_VERSION}.zip", escape_path(BIG_PATH));
    ensure!(
        same_bytes(&zip, &s3.dir("big").join(&rel))?,
        "{rel}: the bucket's object is not the zip upstream served"
    );
    let zip_bytes = server.targets[0].zip_len;
    eprintln!(
        "big zip: local {:.2}s, bucket {:.2}s, bucket peak RSS {:.1} MiB",
        local.m.secs,
        bucket.m.secs,
        mib(bucket.m.peak_rss_kib)
    );
    Ok(Big {
        zip_bytes,
        local,
        bucket,
    })
}

fn path_str(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

/// The big-zip upstream process (`SERVE zip-path mib latency-ms`): writes the zip to the file,
/// serves it from there, and otherwise speaks the sync bench's upstream protocol (its URL, one
/// target line, `ready <secs>`, then a request count per `count` line until stdin closes).
pub fn serve(args: &[String]) -> Result<()> {
    let [zip, mib, latency_ms] = args else {
        bail!("{SERVE}: want zip path, MiB, latency ms; got {args:?}");
    };
    let (zip, latency) = (
        PathBuf::from(zip),
        Duration::from_millis(latency_ms.parse()?),
    );
    let start = Instant::now();
    let go_mod = format!("module {BIG_PATH}\n\ngo 1.19\n");
    let zip_len = write_big_zip(&zip, mib.parse()?, &go_mod)?;
    let gen_secs = start.elapsed().as_secs_f64();
    let rt = tokio::runtime::Runtime::new().context("starting the upstream's runtime")?;
    let site = Site {
        zip: Arc::from(zip.as_path()),
        go_mod: Bytes::from(go_mod),
        latency,
        requests: Arc::new(AtomicUsize::new(0)),
    };
    let requests = site.requests.clone();
    let listener = rt.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let url = format!("http://{}", listener.local_addr()?);
    let app = axum::Router::new()
        .fallback(answer)
        .with_state(site.clone())
        .layer(axum::middleware::from_fn_with_state(site, delay));
    rt.spawn(async move { axum::serve(listener, app).await });
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{url}\n{BIG_PATH} {BIG_VERSION} {zip_len}\nready {gen_secs:.3}"
    )?;
    out.flush()?;
    for line in std::io::stdin().lines() {
        ensure!(line? == "count", "{SERVE}: the only command is `count`");
        writeln!(out, "{}", requests.load(Ordering::Relaxed))?;
        out.flush()?;
    }
    Ok(())
}

/// A module zip of `go.mod`, `x.go` and `mib` stored 1 MiB files of pseudo-random bytes,
/// written to `path` as it is built. Returns its size.
fn write_big_zip(path: &Path, mib: usize, go_mod: &str) -> Result<u64> {
    use zip::write::SimpleFileOptions;
    use zip::CompressionMethod;
    let file = File::create(path).with_context(|| format!("{}", path.display()))?;
    let mut w = zip::ZipWriter::new(BufWriter::with_capacity(1 << 20, file));
    let prefix = format!("{BIG_PATH}@{BIG_VERSION}/");
    let deflated = SimpleFileOptions::default().large_file(false);
    let stored = deflated.compression_method(CompressionMethod::Stored);
    w.start_file(format!("{prefix}go.mod"), deflated)?;
    w.write_all(go_mod.as_bytes())?;
    w.start_file(format!("{prefix}x.go"), deflated)?;
    w.write_all(b"package x\n")?;
    // xorshift64*: incompressible, and far faster than the sync it feeds.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut buf = vec![0u8; 1 << 20];
    for i in 0..mib {
        for chunk in buf.chunks_mut(8) {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            chunk.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        w.start_file(format!("{prefix}data/f{i:06}.dat"), stored)?;
        w.write_all(&buf)?;
    }
    let mut file = w.finish()?.into_inner().context("flushing the zip")?;
    file.flush()?;
    Ok(file.metadata()?.len())
}

/// What the big-zip upstream serves.
#[derive(Clone)]
struct Site {
    zip: Arc<Path>,
    go_mod: Bytes,
    latency: Duration,
    requests: Arc<AtomicUsize>,
}

/// Every answer waits `latency`, as the core workload's upstream does.
async fn delay(State(site): State<Site>, req: Request, next: axum::middleware::Next) -> Response {
    site.requests.fetch_add(1, Ordering::Relaxed);
    tokio::time::sleep(site.latency).await;
    next.run(req).await
}

/// The big module's `@v/list`, `.info`, `.mod` and `.zip` (streamed from the file); 404 else.
async fn answer(State(site): State<Site>, req: Request) -> Response {
    let Some(file) = req.uri().path().strip_prefix(&format!("/{BIG_PATH}/@v/")) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    match file.strip_prefix(BIG_VERSION) {
        _ if file == "list" => format!("{BIG_VERSION}\n").into_response(),
        Some(".info") => format!(r#"{{"Version":"{BIG_VERSION}","Time":"2023-01-01T00:00:00Z"}}"#)
            .into_response(),
        Some(".mod") => site.go_mod.clone().into_response(),
        Some(".zip") => match stream_file(&site.zip).await {
            Ok(r) => r,
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        },
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// `path` as a response body, 256 KiB at a time, with its Content-Length.
async fn stream_file(path: &Path) -> std::io::Result<Response> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let len = file.metadata().await?.len();
    let chunks = futures::stream::unfold(Some(file), |file| async move {
        let mut file = file?;
        let mut buf = vec![0u8; 256 << 10];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Bytes::from(buf)), Some(file)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    Ok(([(header::CONTENT_LENGTH, len)], Body::from_stream(chunks)).into_response())
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let mid = xs.len() / 2;
    match xs.len() % 2 {
        0 => (xs[mid - 1] + xs[mid]) / 2.0,
        _ => xs[mid],
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "NOT met"
    }
}

fn print_table(opts: &S3Opts, rounds: &[Round], big: Option<&Big>, floor_kib: u64) {
    println!(
        "\ns3 bench: {} versions, ~{} KiB zips of {} files, {} ms per upstream request, \
         concurrency {}, {} rounds\n",
        opts.versions, opts.zip_kib, opts.files, opts.latency_ms, opts.concurrency, opts.rounds
    );
    println!(
        "{:<6}{:<8}{:>9}{:>8}{:>10}{:>10}{:>8}{:>10}{:>16}{:>14}",
        "round",
        "first",
        "local s",
        "cpu s",
        "RSS MiB",
        "bucket s",
        "cpu s",
        "RSS MiB",
        "s3s-fs usr+sys",
        "bucket/local"
    );
    for (i, r) in rounds.iter().enumerate() {
        let cpu = |m: &Measured| m.user_secs + m.sys_secs;
        println!(
            "{:<6}{:<8}{:>9.2}{:>8.2}{:>10.1}{:>10.2}{:>8.2}{:>10.1}{:>16}{:>13.2}x",
            i + 1,
            if r.bucket_first { "bucket" } else { "local" },
            r.local.m.secs,
            cpu(&r.local.m),
            mib(r.local.m.peak_rss_kib),
            r.bucket.m.secs,
            cpu(&r.bucket.m),
            mib(r.bucket.m.peak_rss_kib),
            format!("{:.2}+{:.2}", r.bucket.s3_user_secs, r.bucket.s3_sys_secs),
            r.ratio()
        );
    }
    let ratios: Vec<f64> = rounds.iter().map(Round::ratio).collect();
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), &r| (l.min(r), h.max(r)));
    let med = median(ratios);
    println!(
        "\nbucket / local: {lo:.2}-{hi:.2}x, median {med:.2}x (aim <= {RATIO_AIM}x: {})",
        verdict(med <= RATIO_AIM)
    );
    if let Some(b) = big {
        let zmib = b.zip_bytes as f64 / f64::from(1 << 20);
        for (name, run) in [("local", &b.local), ("bucket", &b.bucket)] {
            println!(
                "big zip ({zmib:.1} MiB) into {name:<6} {:>7.2} s {:>7.1} MiB/s, cpu {:.2} s, \
                 peak RSS {:.1} MiB, s3s-fs cpu {:.2}+{:.2} s",
                run.m.secs,
                zmib / run.m.secs,
                run.m.user_secs + run.m.sys_secs,
                mib(run.m.peak_rss_kib),
                run.s3_user_secs,
                run.s3_sys_secs
            );
        }
        println!(
            "big zip into the bucket: peak RSS {:.1} MiB (target <= 64 MiB: {})",
            mib(b.bucket.m.peak_rss_kib),
            verdict(b.bucket.m.peak_rss_kib <= BIG_RSS_TARGET_KIB)
        );
    }
    println!(
        "RSS floor {:.1} MiB (the bench's own VmHWM; no peak RSS above reads lower)",
        mib(floor_kib)
    );
}

fn figures(opts: &S3Opts, rounds: &[Round], big: Option<&Big>, floor_kib: u64) -> Value {
    let ratio = median(rounds.iter().map(Round::ratio).collect());
    json!({
        "bench": "s3",
        "versions": opts.versions,
        "latency_ms": opts.latency_ms,
        "zip_kib": opts.zip_kib,
        "files_per_zip": opts.files,
        "concurrency": opts.concurrency,
        "rounds": rounds.iter().map(|r| json!({
            "bucket_first": r.bucket_first,
            "local": r.local.json(),
            "bucket": r.bucket.json(),
            "bucket_over_local": round(r.ratio(), 3),
        })).collect::<Vec<_>>(),
        "bucket_over_local_median": round(ratio, 3),
        "within_aim": ratio <= RATIO_AIM,
        "big_zip_mib": opts.big_zip_mib,
        "big": big.map(|b| json!({
            "zip_bytes": b.zip_bytes,
            "local": b.local.json(),
            "bucket": b.bucket.json(),
            "within_target": b.bucket.m.peak_rss_kib <= BIG_RSS_TARGET_KIB,
        })),
        "bench_rss_kib": floor_kib,
    })
}
