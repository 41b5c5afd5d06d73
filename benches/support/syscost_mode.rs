//! The system-cost benchmark (`cargo bench --bench sync -- --syscost`): what a cold sync costs
//! the kernel, next to what creating the same files costs, side by side in one run.
//!
//! Input: the sync bench's `--versions`, `--latency-ms`, `--concurrency`, `--zip-kib`, `--files`,
//! plus `--rounds N` and `--tmpfs-dir DIR`. Output: a table per round and the median, then one
//! line of JSON with every figure.
//!
//! One upstream process (the sync bench's, same corpus) serves every run. Each round, in order:
//! 1. **ext4**: a cold `gomirror sync` into a fresh directory of the work directory (`TMPDIR`,
//!    this VM's ext4): wall time, and user and system CPU from `wait4`;
//! 2. **tmpfs**: the same into a fresh directory under `--tmpfs-dir` (`/dev/shm`);
//! 3. **`cp -r`** of the tree run 1 left into a fresh directory beside it, on the same file
//!    system: the cost of creating those files and directories and writing their bytes, from a
//!    warm page cache. It does not fsync; gomirror's barriers (`syncfs`) are in its figure.
//!
//! Trees are deleted only when the bench ends: on this VM's ext4, creating files where a large
//! tree was just deleted is slower (`recently_deleted` under `ext4_create`, issue 11), which would
//! charge one round for the previous round's cleanup.
//!
//! Targets (issue 11): system CPU of the ext4 cold sync ≤ 1.5 × that of `cp -r`; its wall time
//! ≤ 1.3 × the latency bound (3 × N × latency ÷ concurrency).

use std::path::Path;
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::{
    check_tree, latency_bound_secs, measure, round, sync, write_config, Corpus, Measured, Opts,
    Server,
};

const SYS_OVER_CP_TARGET: f64 = 1.5;
const WALL_OVER_BOUND_TARGET: f64 = 1.3;

/// One round's three runs.
struct Round {
    ext4: Measured,
    tmpfs: Measured,
    cp: Measured,
}

impl Round {
    fn sys_over_cp(&self) -> f64 {
        self.ext4.sys_secs / self.cp.sys_secs
    }
    fn json(&self, bound: f64) -> Value {
        json!({
            "ext4": self.ext4.json(),
            "tmpfs": self.tmpfs.json(),
            "cp": self.cp.json(),
            "sys_over_cp": round(self.sys_over_cp(), 2),
            "ext4_over_bound": round(self.ext4.secs / bound, 2),
            "tmpfs_over_bound": round(self.tmpfs.secs / bound, 2),
        })
    }
}

pub fn run(opts: &Opts, rounds: usize, tmpfs: &Path, bin: &Path, work: &Path) -> Result<()> {
    ensure!(rounds > 0, "--rounds: must be at least 1");
    let mut server = Server::start(Corpus {
        big: false,
        count: opts.versions,
        files: opts.files,
        bytes: opts.zip_kib << 10,
        latency_ms: u64::try_from(opts.latency.as_millis())?,
        sumdb: false,
    })?;
    let tmpfs_work = tempfile::Builder::new()
        .prefix("gomirror-bench-")
        .tempdir_in(tmpfs)
        .with_context(|| format!("creating a work directory in {}", tmpfs.display()))?;
    let mut done = Vec::with_capacity(rounds);
    for r in 0..rounds {
        let ext4 = cold(opts, bin, &work.join(format!("ext4-{r}")), &mut server)?;
        let tm = cold(
            opts,
            bin,
            &tmpfs_work.path().join(format!("tmpfs-{r}")),
            &mut server,
        )?;
        let tree = work.join(format!("ext4-{r}/tree"));
        let copy = work.join(format!("cp-{r}"));
        let mut cmd = Command::new("cp");
        cmd.arg("-r").arg(&tree).arg(&copy);
        let cp = measure(cmd, &work.join(format!("cp-{r}.log")), None, &mut server)?;
        ensure!(cp.status.success(), "cp -r: {}", cp.status);
        eprintln!(
            "round {r}: ext4 {:.2}s ({:.2}s sys), tmpfs {:.2}s ({:.2}s sys), cp -r {:.2}s sys",
            ext4.secs, ext4.sys_secs, tm.secs, tm.sys_secs, cp.sys_secs
        );
        done.push(Round {
            ext4,
            tmpfs: tm,
            cp,
        });
    }
    let bound = latency_bound_secs(opts);
    print_table(opts, &done, bound);
    let rounds: Vec<Value> = done.iter().map(|r| r.json(bound)).collect();
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
            "rounds": rounds,
        })
    );
    if opts.keep {
        let kept = tmpfs_work.keep();
        eprintln!("kept {}", kept.display());
    }
    Ok(())
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
    println!(
        "\n{} versions, ~{} KiB zips of {} files, {} ms per upstream request, concurrency {}\n",
        opts.versions,
        opts.zip_kib,
        opts.files,
        opts.latency.as_millis(),
        opts.concurrency
    );
    println!(
        "{:<8} {:>22} {:>22} {:>16} {:>9} {:>10} {:>10}",
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
        println!(
            "{:<8} {:>22} {:>22} {:>16} {:>8.2}x {:>9.2}x {:>9.2}x",
            i,
            secs3(&r.ext4),
            secs3(&r.tmpfs),
            format!("{:.2} / {:.2}", r.cp.secs, r.cp.sys_secs),
            r.sys_over_cp(),
            r.ext4.secs / bound,
            r.tmpfs.secs / bound,
        );
    }
    let med = |f: &dyn Fn(&Round) -> f64| median(rounds.iter().map(f).collect());
    let (sys_over_cp, ext4_over_bound) = (med(&|r| r.sys_over_cp()), med(&|r| r.ext4.secs / bound));
    println!();
    println!(
        "{:<36} {bound:>6.2} s  (3 x N x latency / concurrency)",
        "latency bound"
    );
    let verdict = |ok: bool| if ok { "met" } else { "MISSED" };
    println!(
        "{:<36} {sys_over_cp:>6.2} x  (target <= {SYS_OVER_CP_TARGET}: {})",
        "median ext4 sys / cp -r sys",
        verdict(sys_over_cp <= SYS_OVER_CP_TARGET)
    );
    println!(
        "{:<36} {ext4_over_bound:>6.2} x  (target <= {WALL_OVER_BOUND_TARGET}: {})",
        "median ext4 cold wall / bound",
        verdict(ext4_over_bound <= WALL_OVER_BOUND_TARGET)
    );
    println!(
        "{:<36} {:>6.2} x",
        "median tmpfs cold wall / bound",
        med(&|r| r.tmpfs.secs / bound)
    );
}
