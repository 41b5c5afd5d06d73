//! The retention benchmark (`cargo bench --bench sync -- --prune`): how long `gomirror prune`
//! takes over a large tree, without its grace wait, and how much memory it needs (see: #15).
//!
//! Input: `--versions N` (100000) published versions, `--per-module K` (5) per module
//! (`example.com/prune/mNNNNNN@v1.0.x`), all published a year ago, every tenth one used by a
//! client now; each version's `.info`, `.mod` and a small `.zip`, and each module's `@v/list`
//! and `@latest`, written into a tree under `--tree-dir DIR` (default `/dev/shm`: tmpfs, so
//! writing 3 × N files takes seconds, not minutes; unlink and `syncfs` are cheaper there than
//! on a disk, which the README says). State rows are seeded directly with SQL. The policy:
//! `keep_unused_for = "30d"`, `keep_latest = 1`, `list_max_age = "1s"`.
//! Output: a table on stdout, then one line of JSON with every figure.
//!
//! Runs, each a `gomirror` child timed from spawn to exit, its peak RSS from `wait4`:
//! 1. `prune --dry-run`: read state, compute the policy, print every version's fate;
//! 2. `prune`: the same, then the versions `pruning`, lists rewritten, the wait, the files
//!    removed, state `pruned`. The wait is read from gomirror's own log line (`wait=`), and
//!    "without wait" is the wall time minus it.
//!
//! Checked: exit codes, the number of versions pruned, that their files are gone and that no
//! `@v/list` names a version whose `.info` is missing.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::{number, round, wait_rusage};

/// The target: a prune of 100,000 versions in at most this many seconds plus its wait.
const SECS_TARGET: f64 = 10.0;
/// The target for peak RSS.
const RSS_TARGET_KIB: u64 = 64 << 10;

struct PruneOpts {
    versions: usize,
    per_module: usize,
    tree_dir: String,
    keep: bool,
}

fn parse(args: &[String]) -> Result<PruneOpts> {
    let mut opts = PruneOpts {
        versions: 100_000,
        per_module: 5,
        tree_dir: "/dev/shm".into(),
        keep: false,
    };
    let mut it = args
        .iter()
        .skip(1)
        .filter(|a| *a != "--prune" && *a != "--bench");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keep" => opts.keep = true,
            "--versions" => opts.versions = number(it.next().cloned(), "versions", 100_000)?,
            "--per-module" => opts.per_module = number(it.next().cloned(), "per-module", 5)?,
            "--tree-dir" => {
                opts.tree_dir = it
                    .next()
                    .cloned()
                    .context("--tree-dir: needs a directory")?
            }
            other => anyhow::bail!(
                "--prune: unknown option {other:?} (--versions, --per-module, --tree-dir, --keep)"
            ),
        }
    }
    ensure!(opts.per_module > 1, "--per-module: must be at least 2");
    Ok(opts)
}

pub fn main(args: &[String], bin: &Path) -> Result<()> {
    let opts = parse(args)?;
    let work = tempfile::Builder::new()
        .prefix("gomirror-prune-bench-")
        .tempdir()
        .context("creating the work directory")?;
    let tree = tempfile::Builder::new()
        .prefix("gomirror-prune-tree-")
        .tempdir_in(&opts.tree_dir)
        .with_context(|| format!("creating a tree under {}", opts.tree_dir))?;
    eprintln!(
        "work directory {}, tree {}",
        work.path().display(),
        tree.path().display()
    );
    let result = run(&opts, bin, work.path(), tree.path());
    if opts.keep || result.is_err() {
        eprintln!(
            "kept {} and {}",
            work.keep().display(),
            tree.keep().display()
        );
    }
    result
}

fn run(opts: &PruneOpts, gomirror: &Path, work: &Path, tree: &Path) -> Result<()> {
    let bin = work.join("gomirror");
    fs::copy(gomirror, &bin).with_context(|| format!("{}", gomirror.display()))?;
    let text = format!(
        "[upstream]\nproxies = [\"http://127.0.0.1:9/\"]\n[tree]\ndir = \"{}\"\n\
         [state]\ndatabase = \"state.db\"\n[sumdb]\nkey = \"off\"\n\
         [clients]\naccess_log = \"access.log\"\n\
         [retention]\nkeep_unused_for = \"30d\"\nkeep_latest = 1\nlist_max_age = \"1s\"\n",
        tree.display()
    );
    fs::write(work.join("mirror.toml"), text).context("writing mirror.toml")?;
    // A sync with nothing to do creates the database and its schema.
    let created = gomirror_run(&bin, work, &["sync", "--no-progress"], "create")?;
    ensure!(created.exit == Some(0), "create: exit {:?}", created.exit);
    let seed_start = Instant::now();
    let used = seed(&work.join("state.db"), opts)?;
    write_tree(tree, opts)?;
    let seed_secs = seed_start.elapsed().as_secs_f64();
    let want_gone = opts.versions - opts.versions / opts.per_module - used;

    let dry = gomirror_run(&bin, work, &["prune", "--dry-run"], "dry-run")?;
    ensure!(dry.exit == Some(0), "dry run: exit {:?}", dry.exit);
    let real = gomirror_run(&bin, work, &["prune"], "prune")?;
    ensure!(real.exit == Some(0), "prune: exit {:?}", real.exit);
    let log = fs::read_to_string(work.join("prune.log")).context("prune.log")?;
    let wait = wait_of(&log).context("prune.log: no `wait` line")?;
    let pruned = count(
        &work.join("state.db"),
        "SELECT COUNT(*) FROM versions WHERE status = 'pruned'",
    )?;
    ensure!(pruned == want_gone, "{pruned} pruned, want {want_gone}");
    check_tree(tree, opts)?;

    let without_wait = real.secs - wait;
    println!(
        "{} versions, {} per module, {} used recently; tree on {}\n",
        opts.versions, opts.per_module, used, opts.tree_dir
    );
    println!("{:<34}{:>10}{:>12}", "", "wall s", "peak RSS");
    println!("{:<34}{:>10.2}", "seed state + write tree", seed_secs);
    for (name, t) in [
        ("prune --dry-run", &dry),
        ("prune (wall, with wait)", &real),
    ] {
        println!("{name:<34}{:>10.2}{:>9} MiB", t.secs, t.rss_kib >> 10);
    }
    println!("{:<34}{:>10.2}", "  of which the grace wait", wait);
    println!(
        "{:<34}{:>10.2}   target ≤ {SECS_TARGET} s, ≤ {} MiB",
        "prune without the wait",
        without_wait,
        RSS_TARGET_KIB >> 10
    );
    println!("versions pruned: {pruned}, files removed: {}\n", 3 * pruned);
    let figures = json!({
        "bench": "prune",
        "versions": opts.versions,
        "per_module": opts.per_module,
        "tree_dir": opts.tree_dir,
        "pruned": pruned,
        "seed_secs": round(seed_secs, 3),
        "dry_run": { "secs": round(dry.secs, 3), "peak_rss_kib": dry.rss_kib },
        "prune": { "secs": round(real.secs, 3), "peak_rss_kib": real.rss_kib,
                   "wait_secs": round(wait, 3), "secs_without_wait": round(without_wait, 3) },
        "within_target": without_wait <= SECS_TARGET && real.rss_kib <= RSS_TARGET_KIB
            && dry.rss_kib <= RSS_TARGET_KIB,
    });
    println!("{figures}");
    Ok(())
}

struct Run {
    secs: f64,
    rss_kib: u64,
    exit: Option<i32>,
}

/// `gomirror <args>`, stdout discarded, the log (info, JSON) in `<name>.log`.
fn gomirror_run(bin: &Path, work: &Path, args: &[&str], name: &str) -> Result<Run> {
    let log = work.join(format!("{name}.log"));
    let err = fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("--config")
        .arg(work.join("mirror.toml"))
        .arg("--log-format")
        .arg("json")
        .env("GOMIRROR_LOG", "info")
        .env_remove("GOMIRROR_UPSTREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let start = Instant::now();
    let child = cmd.spawn().with_context(|| format!("starting {cmd:?}"))?;
    let (status, usage) = wait_rusage(child)?;
    Ok(Run {
        secs: start.elapsed().as_secs_f64(),
        rss_kib: u64::try_from(usage.ru_maxrss)?,
        exit: status.code(),
    })
}

/// The grace wait gomirror logged (`"wait":"2.31s"`, Rust's Debug of a Duration), in seconds.
fn wait_of(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("cached lists to expire"))?;
    let v: serde_json::Value = serde_json::from_str(line).ok()?;
    let text = v["fields"]["wait"].as_str()?.to_owned();
    for (suffix, scale) in [("ms", 1e-3), ("µs", 1e-6), ("ns", 1e-9), ("s", 1.0)] {
        if let Some(n) = text.strip_suffix(suffix) {
            return n.parse::<f64>().ok().map(|n| n * scale);
        }
    }
    None
}

fn module(m: usize) -> String {
    format!("example.com/prune/m{m:06}")
}

/// N published rows a year old, K per module; every tenth version used now. Returns how many
/// versions the policy keeps only for that use (not the newest of their module).
fn seed(db: &Path, opts: &PruneOpts) -> Result<usize> {
    let mut conn = rusqlite::Connection::open(db).context("opening the state database")?;
    let tx = conn.transaction()?;
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)?
        .format(&time::format_description::well_known::Rfc3339)?;
    let mut used = 0;
    {
        let mut module_stmt =
            tx.prepare("INSERT INTO modules (path, first_seen) VALUES (?1, ?2) RETURNING id")?;
        let mut version = tx.prepare(
            "INSERT INTO versions (module_id, version, status, info_size, mod_size, zip_size,
                 h1_zip, h1_mod, zip_sha256, time, attempts, first_seen, updated_at, published_at)
             VALUES (?1, ?2, 'published', 50, 30, 100, 'h1:zip=', 'h1:mod=', ?3,
                 '2025-01-01T00:00:00Z', 1, ?4, ?4, '2025-01-01T00:00:00Z')",
        )?;
        let mut use_stmt = tx.prepare(
            "INSERT INTO client_use (path, version, uses, first_used, last_used)
             VALUES (?1, ?2, 1, ?3, ?3)",
        )?;
        let sha = "ab".repeat(32);
        let mut n = 0;
        for m in 0..opts.versions / opts.per_module {
            let path = module(m);
            let id: i64 = module_stmt.query_row((&path, &now), |r| r.get(0))?;
            for v in 0..opts.per_module {
                let ver = format!("v1.0.{v}");
                version.execute((id, &ver, &sha, &now))?;
                if n % 10 == 0 {
                    use_stmt.execute((&path, &ver, &now))?;
                    used += usize::from(v + 1 < opts.per_module);
                }
                n += 1;
            }
        }
    }
    tx.commit()?;
    Ok(used)
}

/// Every version's three files, each module's `@v/list` and `@latest`.
fn write_tree(tree: &Path, opts: &PruneOpts) -> Result<()> {
    for m in 0..opts.versions / opts.per_module {
        let dir = tree.join(module(m)).join("@v");
        fs::create_dir_all(&dir).with_context(|| format!("{}", dir.display()))?;
        let mut list = String::new();
        let mut info = String::new();
        for v in 0..opts.per_module {
            let ver = format!("v1.0.{v}");
            info = format!("{{\"Version\":\"{ver}\",\"Time\":\"2025-01-01T00:00:00Z\"}}\n");
            fs::write(dir.join(format!("{ver}.info")), &info)?;
            fs::write(
                dir.join(format!("{ver}.mod")),
                format!("module {}\n", module(m)),
            )?;
            fs::write(dir.join(format!("{ver}.zip")), [0u8; 100])?;
            list.push_str(&ver);
            list.push('\n');
        }
        fs::write(dir.join("list"), list)?;
        fs::write(tree.join(module(m)).join("@latest"), info)?;
    }
    Ok(())
}

/// Every listed version still has its `.info`; the newest of each module stayed.
fn check_tree(tree: &Path, opts: &PruneOpts) -> Result<()> {
    let newest = format!("v1.0.{}", opts.per_module - 1);
    for m in 0..opts.versions / opts.per_module {
        let dir = tree.join(module(m)).join("@v");
        let list = fs::read_to_string(dir.join("list")).with_context(|| module(m))?;
        ensure!(
            list.lines().any(|v| v == newest),
            "{}: {newest} not listed",
            module(m)
        );
        for v in list.lines() {
            ensure!(
                dir.join(format!("{v}.info")).is_file(),
                "{}: {v} listed without its .info",
                module(m)
            );
        }
    }
    Ok(())
}

fn count(db: &Path, sql: &str) -> Result<usize> {
    let conn = rusqlite::Connection::open(db).context("opening the state database")?;
    let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
    Ok(usize::try_from(n)?)
}
