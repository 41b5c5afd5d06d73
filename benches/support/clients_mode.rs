//! The access-log benchmark (`cargo bench --bench sync -- --clients`): how fast `gomirror
//! clients` reads an nginx access log into the state database, and how much memory it needs.
//! See: #14
//!
//! Input: `--lines N` (1000000) generated log lines, `--keep`. Output: a table on stdout, then
//! one line of JSON with every figure. Checks only what makes the figures meaningful: exit
//! codes, every line read, and the uses and misses the generator wrote.
//!
//! The log is written by this process, streaming (so the bench stays small: a child's peak RSS
//! cannot read below its spawner's), and is realistic: 2000 modules with 5 versions each; of
//! the lines 70 % are the shipped JSON format and 30 % `combined`; 80 % are uses (`.info`,
//! `.mod`, `.zip` answered 200), 8 % misses (404 of versions and `@v/list`), 5 % `@v/list`
//! and `@latest` uses, 4 % checksum-database lookups and tiles, 1 % HEAD probes, 1 %
//! non-canonical versions, 1 % hostile or not-protocol paths. Then, each a child timed from
//! spawn to exit with its peak RSS from `wait4`:
//! 1. baseline: `wc -l` of the log (the cost of reading the bytes at all);
//! 2. cold: `gomirror clients --json` reading all N lines into a fresh database;
//! 3. no-op: the same again, with nothing new to read.

use std::fs::{self, File};
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

struct ClientsOpts {
    lines: usize,
    keep: bool,
}

/// What the generator wrote, to check the reader against.
#[derive(Default)]
struct Written {
    uses: u64,
    misses: u64,
    bytes: u64,
}

/// One timed child.
struct Timed {
    secs: f64,
    peak_rss_kib: u64,
    stdout: String,
}

impl Timed {
    fn json(&self, lines: usize) -> Value {
        json!({
            "secs": crate::round(self.secs, 3),
            "lines_per_sec": crate::round(lines as f64 / self.secs, 0),
            "peak_rss_kib": self.peak_rss_kib,
        })
    }
}

pub fn main(args: &[String], gomirror: &Path) -> Result<()> {
    let opts = ClientsOpts {
        lines: crate::number_arg(args, "--lines", 1_000_000)?,
        keep: args.iter().any(|a| a == "--keep"),
    };
    ensure!(opts.lines > 0, "--lines: at least 1");
    crate::in_work_dir("gomirror-clients-bench-", opts.keep, |work| {
        run(&opts, gomirror, work)
    })
}

fn run(opts: &ClientsOpts, gomirror: &Path, work: &Path) -> Result<()> {
    let bin = work.join("gomirror");
    fs::copy(gomirror, &bin).with_context(|| format!("{}", gomirror.display()))?;
    fs::write(
        work.join("mirror.toml"),
        "[upstream]\nproxies = [\"http://127.0.0.1:9\"]\n[tree]\ndir = \"tree\"\n\
         [state]\ndatabase = \"state.db\"\n[clients]\naccess_log = \"access.log\"\n",
    )?;
    let log = work.join("access.log");
    let gen_start = Instant::now();
    let written = generate(&log, opts.lines)?;
    let gen_secs = gen_start.elapsed().as_secs_f64();
    let log_bytes = fs::metadata(&log)?.len();

    let mut wc = Command::new("wc");
    wc.arg("-l").arg(&log);
    let baseline = timed(wc)?;
    let counted: usize = baseline
        .stdout
        .split_whitespace()
        .next()
        .unwrap_or("")
        .parse()?;
    ensure!(
        counted == opts.lines,
        "wc -l: {counted} lines, want {}",
        opts.lines
    );

    let clients = || {
        let mut c = Command::new(&bin);
        c.args(["clients", "--json", "--config"])
            .arg(work.join("mirror.toml"));
        c.env("GOMIRROR_LOG", "warn");
        c
    };
    let cold = timed(clients())?;
    let j: Value = serde_json::from_str(&cold.stdout).context("clients --json")?;
    ensure!(
        j["read"]["lines"] == opts.lines,
        "cold read {} lines",
        j["read"]["lines"]
    );
    ensure!(
        j["requests"]["use"] == written.uses,
        "uses {} want {}",
        j["requests"]["use"],
        written.uses
    );
    ensure!(
        j["requests"]["miss"] == written.misses,
        "misses {} want {}",
        j["requests"]["miss"],
        written.misses
    );
    ensure!(
        j["bytes"] == written.bytes,
        "bytes {} want {}",
        j["bytes"],
        written.bytes
    );
    let noop = timed(clients())?;
    let j2: Value = serde_json::from_str(&noop.stdout).context("clients --json")?;
    ensure!(
        j2["read"]["lines"] == 0,
        "no-op read {} lines",
        j2["read"]["lines"]
    );

    let floor = crate::self_vm_hwm_kib()?;
    println!(
        "access log: {} lines, {:.1} MiB (generated in {gen_secs:.1}s)",
        opts.lines,
        log_bytes as f64 / 1048576.0
    );
    println!(
        "{:<28} {:>9} {:>14} {:>12}",
        "run", "time", "lines/s", "peak RSS"
    );
    for (name, t) in [
        ("wc -l (baseline)", &baseline),
        ("gomirror clients (cold)", &cold),
        ("gomirror clients (no-op)", &noop),
    ] {
        println!(
            "{name:<28} {:>8.3}s {:>14.0} {:>9} KiB",
            t.secs,
            opts.lines as f64 / t.secs,
            t.peak_rss_kib
        );
    }
    println!(
        "cold / baseline: {:.1}x; RSS floor {floor} KiB",
        cold.secs / baseline.secs
    );
    println!(
        "{}",
        json!({
            "lines": opts.lines,
            "log_bytes": log_bytes,
            "baseline": baseline.json(opts.lines),
            "cold": cold.json(opts.lines),
            "noop": noop.json(opts.lines),
            "cold_over_baseline": crate::round(cold.secs / baseline.secs, 2),
            "bench_rss_kib": floor,
        })
    );
    Ok(())
}

/// Runs `cmd` to its end: wall time, peak RSS, stdout.
fn timed(mut cmd: Command) -> Result<Timed> {
    let out = tempfile::NamedTempFile::new()?;
    cmd.stdin(Stdio::null())
        .stdout(out.reopen()?)
        .stderr(Stdio::inherit());
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let (status, usage) = crate::wait_rusage(child)?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(status.success(), "{cmd:?}: {status}");
    Ok(Timed {
        secs,
        peak_rss_kib: u64::try_from(usage.ru_maxrss)?,
        stdout: fs::read_to_string(out.path())?,
    })
}

/// Writes `n` lines (see the module doc), streaming; returns what they hold.
fn generate(path: &Path, n: usize) -> Result<Written> {
    let mut out = BufWriter::with_capacity(1 << 20, File::create(path)?);
    let mut w = Written::default();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let start = chrono::Utc::now().timestamp() - n as i64 / 100;
    for i in 0..n {
        let r = next();
        let m = (r >> 8) % 2000;
        let module = format!("github.com/org{}/repo{m}", m % 97);
        let version = format!("v1.{}.0", (r >> 20) % 5);
        let kind = (r >> 32) % 100;
        let file = ["info", "mod", "zip"][((r >> 40) % 3) as usize];
        let (method, target, status, bytes) = match kind {
            0..=79 => {
                let bytes = match file {
                    "zip" => 10_000 + (r >> 44) % 100_000,
                    "mod" => 200,
                    _ => 60,
                };
                ("GET", format!("/{module}/@v/{version}.{file}"), 200, bytes)
            }
            80..=85 => (
                "GET",
                format!("/{module}/@v/v2.0.{}.{file}", r % 7).replace("/@v/v2", "/v2/@v/v2"),
                404,
                0,
            ),
            86..=87 => ("GET", format!("/{module}/sub{}/@v/list", r % 5), 404, 0),
            88..=90 => ("GET", format!("/{module}/@v/list"), 200, 40),
            91..=92 => ("GET", format!("/{module}/@latest"), 200, 80),
            93..=94 => (
                "GET",
                format!("/sumdb/sum.golang.org/lookup/{module}@{version}"),
                200,
                400,
            ),
            95..=96 => (
                "GET",
                format!(
                    "/sumdb/sum.golang.org/tile/8/0/x{:03}/{:03}",
                    r % 1000,
                    (r >> 10) % 1000
                ),
                200,
                8192,
            ),
            97 => ("HEAD", format!("/{module}/@v/{version}.zip"), 200, 0),
            98 => ("GET", format!("/{module}/@v/master.info"), 404, 0),
            _ => match r % 3 {
                0 => ("GET", "/../../etc/passwd".to_owned(), 404, 0),
                1 => ("GET", format!("/{module}/%00/@v/list"), 404, 0),
                _ => ("GET", "/favicon.ico".to_owned(), 404, 0),
            },
        };
        // Protocol GETs (not the HEAD probes, non-canonical or hostile lines) are uses or
        // misses; every protocol request's bytes count.
        if kind < 97 {
            match status {
                200 => w.uses += 1,
                _ => w.misses += 1,
            }
        }
        if kind < 98 {
            w.bytes += bytes;
        }
        let t = start + (i / 100) as i64;
        if r % 10 < 7 {
            writeln!(
                out,
                "{{\"time\":\"-\",\"msec\":{t}.{:03},\"method\":\"{method}\",\"uri\":\"{target}\",\"status\":{status},\"bytes\":{bytes},\"request_time\":0.000}}",
                r % 1000
            )?;
        } else {
            let when = chrono::DateTime::from_timestamp(t, 0).unwrap_or_default();
            writeln!(
                out,
                "10.{}.{}.{} - - [{}] \"{method} {target} HTTP/1.1\" {status} {bytes} \"-\" \"Go-http-client/1.1\"",
                r % 256,
                (r >> 8) % 256,
                (r >> 16) % 256,
                when.format("%d/%b/%Y:%H:%M:%S +0000")
            )?;
        }
    }
    out.flush()?;
    Ok(w)
}
