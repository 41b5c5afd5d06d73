//! The system-cost benchmark (`cargo bench --bench sync -- --syscost`): what a cold sync costs
//! the kernel, next to what creating the same files costs, side by side in one run.
//!
//! Input: the sync bench's `--versions`, `--latency-ms`, `--concurrency`, `--zip-kib`, `--files`,
//! plus `--rounds N` (3), `--tmpfs-dir DIR` (`/dev/shm`) and `--baseline PATH` (another gomirror
//! binary, e.g. the last release, measured the same way in the same rounds). Output: a table per
//! round and the medians, then one line of JSON with every figure.
//!
//! One upstream process (the sync bench's, same corpus) serves every run. Each round, for the
//! binary measured and then the baseline (the other way round in odd rounds, so neither always
//! runs first):
//! 1. **ext4**: a cold `gomirror sync` into a fresh directory of the work directory (`TMPDIR`,
//!    this VM's ext4): wall time, and user and system CPU from `wait4`;
//! 2. **tmpfs**: the same into a fresh directory under `--tmpfs-dir`;
//!
//! then 3. **`cp -r`** of the tree the first ext4 run left into a fresh directory beside it, on
//! the same file system: the cost of creating those files and directories and writing their
//! bytes, from a warm page cache. It does not fsync; gomirror's barriers (`syncfs`) are in its
//! figure.
//!
//! Trees are deleted only when the bench ends: on this VM's ext4, creating files where a large
//! tree was just deleted is slower (`recently_deleted` under `ext4_create`, issue 11), which would
//! charge one round for the previous round's cleanup. For the same reason, let a minute pass
//! between two runs of this bench (each deletes its trees when it ends).
//!
//! Targets (issue 11): system CPU of the ext4 cold sync ≤ 1.5 × that of `cp -r`; its wall time
//! ≤ 1.3 × the latency bound (3 × N × latency ÷ concurrency).

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::{
    check_tree, latency_bound_secs, measure, print_setup, round, sync, write_config, Corpus,
    Measured, Opts, Server,
};

const SYS_OVER_CP_TARGET: f64 = 1.5;
const WALL_OVER_BOUND_TARGET: f64 = 1.3;

pub struct SyscostOpts {
    pub rounds: usize,
    pub tmpfs_dir: PathBuf,
    pub baseline: Option<PathBuf>,
}

/// One binary's two cold syncs in one round.
struct Cold {
    ext4: Measured,
    tmpfs: Measured,
}

/// One round: the measured binary, the baseline if any, and `cp -r`.
struct Round {
    runs: Vec<Cold>,
    cp: Measured,
}

impl Cold {
    fn json(&self, cp: &Measured, bound: f64) -> Value {
        json!({
            "ext4": self.ext4.json(),
            "tmpfs": self.tmpfs.json(),
            "sys_over_cp": round(self.ext4.sys_secs / cp.sys_secs, 2),
            "ext4_over_bound": round(self.ext4.secs / bound, 2),
            "tmpfs_over_bound": round(self.tmpfs.secs / bound, 2),
        })
    }
}

pub fn run(opts: &Opts, sc: &SyscostOpts, bin: &Path, work: &Path) -> Result<()> {
    ensure!(sc.rounds > 0, "--rounds: must be at least 1");
    let mut bins = vec![bin.to_path_buf()];
    if let Some(baseline) = &sc.baseline {
        let copy = work.join("gomirror-baseline");
        std::fs::copy(baseline, &copy).with_context(|| format!("{}", baseline.display()))?;
        bins.push(copy);
    }
    let mut server = Server::start(Corpus::many(opts, false)?)?;
    let tmpfs = tempfile::Builder::new()
        .prefix("gomirror-bench-")
        .tempdir_in(&sc.tmpfs_dir)
        .with_context(|| format!("creating a work directory in {}", sc.tmpfs_dir.display()))?;
    let mut rounds = Vec::with_capacity(sc.rounds);
    for r in 0..sc.rounds {
        let mut order: Vec<usize> = (0..bins.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        let mut runs: Vec<Option<Cold>> = bins.iter().map(|_| None).collect();
        for &b in &order {
            let name = format!("{r}-{b}");
            let ext4 = cold(
                opts,
                &bins[b],
                &work.join(format!("ext4-{name}")),
                &mut server,
            )?;
            let tm = cold(opts, &bins[b], &tmpfs.path().join(name), &mut server)?;
            runs[b] = Some(Cold { ext4, tmpfs: tm });
        }
        let tree = work.join(format!("ext4-{r}-{}/tree", order[0]));
        let mut cmd = Command::new("cp");
        cmd.arg("-r").arg(&tree).arg(work.join(format!("cp-{r}")));
        let cp = measure(cmd, &work.join(format!("cp-{r}.log")), None, &mut server)?;
        ensure!(cp.status.success(), "cp -r: {}", cp.status);
        let runs: Vec<Cold> = runs
            .into_iter()
            .map(|c| c.expect("every bin ran"))
            .collect();
        for (b, c) in runs.iter().enumerate() {
            eprintln!(
                "round {r} {}: ext4 {:.2}s ({:.2}s sys), tmpfs {:.2}s ({:.2}s sys); cp -r {:.2}s sys",
                label(b),
                c.ext4.secs,
                c.ext4.sys_secs,
                c.tmpfs.secs,
                c.tmpfs.sys_secs,
                cp.sys_secs
            );
        }
        rounds.push(Round { runs, cp });
    }
    let bound = latency_bound_secs(opts);
    print_table(opts, &rounds, bound);
    let json_rounds: Vec<Value> = rounds
        .iter()
        .map(|r| {
            let mut v = r.runs[0].json(&r.cp, bound);
            v["cp"] = r.cp.json();
            if let Some(base) = r.runs.get(1) {
                v["baseline"] = base.json(&r.cp, bound);
            }
            v
        })
        .collect();
    println!(
        "{}",
        json!({
            "bench": "syscost",
            "versions": opts.versions,
            "latency_ms": u64::try_from(opts.latency.as_millis()).unwrap_or(u64::MAX),
            "concurrency": opts.concurrency,
            "zip_kib": opts.zip_kib,
            "files_per_zip": opts.files,
            "latency_bound_secs": round(bound, 3),
            "baseline": sc.baseline.as_ref().map(|p| p.display().to_string()),
            "rounds": json_rounds,
        })
    );
    if opts.keep {
        let kept = tmpfs.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
}

fn label(bin: usize) -> &'static str {
    match bin {
        0 => "gomirror",
        _ => "baseline",
    }
}

/// A cold sync of every target into `dir` (which must not exist yet).
fn cold(opts: &Opts, bin: &Path, dir: &Path, server: &mut Server) -> Result<Measured> {
    ensure!(!dir.exists(), "{}: not fresh", dir.display());
    let config = write_config(dir, &server.url, opts.concurrency, None, &server.targets)?;
    let m = sync(bin, &config, &dir.join("cold.log"), server)?;
    check_tree(&dir.join("tree"), &server.targets)?;
    Ok(m)
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    match n % 2 {
        1 => xs[n / 2],
        _ => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn print_table(opts: &Opts, rounds: &[Round], bound: f64) {
    print_setup(opts);
    println!(
        "{:<14} {:>22} {:>22} {:>16} {:>9} {:>10} {:>10}",
        "round",
        "ext4 wall / user / sys",
        "tmpfs wall / user / sys",
        "cp -r wall / sys",
        "sys / cp",
        "ext4 / bd",
        "tmpfs / bd"
    );
    let secs3 = |m: &Measured| format!("{:.2} / {:.2} / {:.2}", m.secs, m.user_secs, m.sys_secs);
    for (i, r) in rounds.iter().enumerate() {
        for (b, c) in r.runs.iter().enumerate() {
            println!(
                "{:<14} {:>22} {:>22} {:>16} {:>8.2}x {:>9.2}x {:>9.2}x",
                format!("{i} {}", label(b)),
                secs3(&c.ext4),
                secs3(&c.tmpfs),
                format!("{:.2} / {:.2}", r.cp.secs, r.cp.sys_secs),
                c.ext4.sys_secs / r.cp.sys_secs,
                c.ext4.secs / bound,
                c.tmpfs.secs / bound,
            );
        }
    }
    println!();
    println!(
        "{:<44} {bound:>6.2} s  (3 x N x latency / concurrency)",
        "latency bound"
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    for b in 0..rounds[0].runs.len() {
        let med = |f: &dyn Fn(&Cold, &Measured) -> f64| {
            median(rounds.iter().map(|r| f(&r.runs[b], &r.cp)).collect())
        };
        let sys_over_cp = med(&|c, cp| c.ext4.sys_secs / cp.sys_secs);
        let ext4_over_bound = med(&|c, _| c.ext4.secs / bound);
        let who = label(b);
        println!(
            "{:<44} {sys_over_cp:>6.2} x  (target <= {SYS_OVER_CP_TARGET}: {})",
            format!("{who}: median ext4 sys / cp -r sys"),
            verdict(sys_over_cp <= SYS_OVER_CP_TARGET)
        );
        println!(
            "{:<44} {ext4_over_bound:>6.2} x  (target <= {WALL_OVER_BOUND_TARGET}: {})",
            format!("{who}: median ext4 cold wall / bound"),
            verdict(ext4_over_bound <= WALL_OVER_BOUND_TARGET)
        );
        println!(
            "{:<44} {:>6.2} x",
            format!("{who}: median tmpfs cold wall / bound"),
            med(&|c, _| c.tmpfs.secs / bound)
        );
        println!(
            "{:<44} {:>6.2} s ext4, {:.2} s tmpfs",
            format!("{who}: median system CPU"),
            med(&|c, _| c.ext4.sys_secs),
            med(&|c, _| c.tmpfs.sys_secs)
        );
    }
}
