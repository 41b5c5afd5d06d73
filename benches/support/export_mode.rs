//! The export and import benchmark (`cargo bench --bench sync -- --export`): how fast
//! `gomirror export` writes a bundle and `gomirror import` applies it, against `tar -c | zstd`
//! and `zstd -d | tar -x` of the same tree in the same run, and how much memory they need.
//!
//! Input: `--versions N` (2000) synthetic modules of `--zip-kib` (100) KiB plus, unless
//! `--big-zip-mib` is 0, one module with a `--big-zip-mib` (400) MiB zip, synced once into one
//! tree from one or two upstream processes (the test upstream, no latency, no checksum
//! database). Output: a table on stdout, then one line of JSON.
//!
//! Then `--rounds` (3) rounds, each side by side: `tar -c -C tree . | zstd -q` (zstd's default
//! level 3, as ours) into a file, then `gomirror export --full` (zstd level 3) into a fresh
//! directory. Then, round by round again: `zstd -d | tar -x` of that round's `tar | zstd`
//! output into a fresh directory, then `gomirror import` of that round's bundle into a fresh
//! offline mirror (which checks every file's sha256, every zip's rules and `h1:`, and publishes
//! with its barriers; both sides end with the file system synced). Every directory written is
//! new: this VM's ext4 creates files slowly in a directory a big tree was just deleted from.
//! Each round's ratio compares the two runs of that round, so a load that changes between
//! rounds moves both sides. Throughput is the tree's bytes over wall time; peak RSS is
//! gomirror's own (`wait4`, see the module doc of `sync.rs`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{ensure, Context, Result};
use serde_json::json;

use crate::{measure, mib, number, round, Corpus, Measured, Server, Target};

/// The target: at least this share of `tar | zstd`'s throughput.
const THROUGHPUT_TARGET: f64 = 0.8;
/// The target for export's peak RSS.
const RSS_TARGET_KIB: u64 = 64 << 10;

struct ExportOpts {
    versions: usize,
    zip_kib: usize,
    big_zip_mib: usize,
    rounds: usize,
    keep: bool,
}

fn parse(args: &[String]) -> Result<ExportOpts> {
    let mut opts = ExportOpts {
        versions: 2000,
        zip_kib: 100,
        big_zip_mib: 400,
        rounds: 3,
        keep: false,
    };
    let mut it = args
        .iter()
        .skip(1)
        .filter(|a| *a != "--export" && *a != "--bench");
    while let Some(a) = it.next() {
        match a.as_str() {
            "--keep" => opts.keep = true,
            "--versions" => opts.versions = number(it.next().cloned(), "versions", 2000)?,
            "--zip-kib" => opts.zip_kib = number(it.next().cloned(), "zip-kib", 100)?,
            "--big-zip-mib" => opts.big_zip_mib = number(it.next().cloned(), "big-zip-mib", 400)?,
            "--rounds" => opts.rounds = number(it.next().cloned(), "rounds", 3)?,
            other => anyhow::bail!(
                "--export: unknown option {other:?} \
                 (--versions, --zip-kib, --big-zip-mib, --rounds, --keep)"
            ),
        }
    }
    ensure!(opts.rounds > 0, "--rounds: must be at least 1");
    Ok(opts)
}

pub fn main(args: &[String], bin: &Path) -> Result<()> {
    let opts = parse(args)?;
    crate::in_work_dir("gomirror-export-bench-", opts.keep, |work| {
        run(&opts, bin, work)
    })
}

fn run(opts: &ExportOpts, bin: &Path, work: &Path) -> Result<()> {
    let local = work.join("gomirror");
    fs::copy(bin, &local).with_context(|| format!("{}", bin.display()))?;
    let mut many = Server::start(Corpus {
        big: false,
        count: opts.versions,
        files: 10,
        bytes: opts.zip_kib << 10,
        latency_ms: 0,
        sumdb: false,
    })?;
    let big = match opts.big_zip_mib {
        0 => None,
        mib => Some(Server::start(Corpus {
            big: true,
            count: 1,
            files: mib + 2,
            bytes: mib << 20,
            latency_ms: 0,
            sumdb: false,
        })?),
    };
    let mut proxies = vec![many.url.as_str()];
    let mut targets = vec![&many.targets[..]];
    if let Some(big) = &big {
        proxies.push(&big.url);
        targets.push(&big.targets);
    }
    let config = write_config(work, &proxies, &targets)?;
    keygen(&local, &config, &work.join("export.key"))?;
    let synced = crate::sync(&local, &config, &work.join("sync.log"), &mut many)?;
    eprintln!("sync:   {:.2}s  {}", synced.secs, synced.last_line);
    drop(big);
    let tree = work.join("tree");
    let bytes = tree_bytes(&tree)?;

    let mut tar = Vec::new();
    let mut export = Vec::new();
    for round_no in 0..opts.rounds {
        tar.push(tar_zstd(
            &tree,
            &work.join(format!("tar-{round_no}.tar.zst")),
            work,
            &mut many,
        )?);
        export.push(export_full(&local, &config, work, round_no, &mut many)?);
    }
    let vkey = fs::read_to_string(work.join("export.vkey"))?;
    let mut untar = Vec::new();
    let mut import = Vec::new();
    for round_no in 0..opts.rounds {
        untar.push(zstd_untar(
            &work.join(format!("tar-{round_no}.tar.zst")),
            &work.join(format!("untar-{round_no}")),
            work,
            &mut many,
        )?);
        import.push(import_bundle(&local, &vkey, work, round_no, &mut many)?);
    }
    let results = Results {
        bytes,
        bundle: bundle_bytes(&work.join("usb-0"))?,
        tar_out: fs::metadata(work.join("tar-0.tar.zst"))?.len(),
        export_peak: export.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0),
        import_peak: import.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0),
        tar: tar.iter().map(|m| m.secs).collect(),
        export: export.iter().map(|m| m.secs).collect(),
        untar: untar.iter().map(|m| m.secs).collect(),
        import: import.iter().map(|m| m.secs).collect(),
    };
    results.print(opts);
    Ok(())
}

/// Seconds per round of each of the four commands, and what they wrote.
struct Results {
    bytes: u64,
    bundle: u64,
    tar_out: u64,
    export_peak: u64,
    import_peak: u64,
    tar: Vec<f64>,
    export: Vec<f64>,
    untar: Vec<f64>,
    import: Vec<f64>,
}

impl Results {
    /// Per round: gomirror's throughput over the pipeline's, in the same round.
    fn ratios(ours: &[f64], theirs: &[f64]) -> Vec<f64> {
        ours.iter().zip(theirs).map(|(o, t)| t / o).collect()
    }

    fn print(&self, opts: &ExportOpts) {
        let big = match opts.big_zip_mib {
            0 => String::new(),
            mib => format!(" + one {mib} MiB zip"),
        };
        println!(
            "export bench: {} versions of ~{} KiB{big}, {:.1} MiB of tree files, {} rounds",
            opts.versions,
            opts.zip_kib,
            self.bytes as f64 / (1 << 20) as f64,
            opts.rounds,
        );
        let export_ratio = Results::ratios(&self.export, &self.tar);
        let import_ratio = Results::ratios(&self.import, &self.untar);
        println!(
            "{:<6} {:>14} {:>9} {:>8}   {:>17} {:>9} {:>8}",
            "round",
            "tar | zstd s",
            "export s",
            "export%",
            "zstd -d | tar -x s",
            "import s",
            "import%"
        );
        for r in 0..opts.rounds {
            println!(
                "{:<6} {:>14.2} {:>9.2} {:>7.0}%   {:>17.2} {:>9.2} {:>7.0}%",
                r + 1,
                self.tar[r],
                self.export[r],
                export_ratio[r] * 100.0,
                self.untar[r],
                self.import[r],
                import_ratio[r] * 100.0
            );
        }
        let rate = |secs: f64| self.bytes as f64 / secs / (1 << 20) as f64;
        println!(
            "best: tar | zstd {:.1} MiB/s, export {:.1} MiB/s, zstd -d | tar -x {:.1} MiB/s, \
             import {:.1} MiB/s; output MiB: tar | zstd {:.1}, bundle {:.1}",
            rate(min(&self.tar)),
            rate(min(&self.export)),
            rate(min(&self.untar)),
            rate(min(&self.import)),
            self.tar_out as f64 / (1 << 20) as f64,
            self.bundle as f64 / (1 << 20) as f64,
        );
        for (what, ratios, peak) in [
            ("export", &export_ratio, self.export_peak),
            ("import", &import_ratio, self.import_peak),
        ] {
            println!(
                "{what}: throughput {:.0}-{:.0} % (median {:.0} %) of the pipeline in the same \
                 round (target >= {:.0} %), peak RSS {:.1} MiB (target < {} MiB)",
                min(ratios) * 100.0,
                max(ratios) * 100.0,
                median(ratios) * 100.0,
                THROUGHPUT_TARGET * 100.0,
                mib(peak),
                RSS_TARGET_KIB >> 10
            );
        }
        let secs = |v: &[f64]| v.iter().map(|s| round(*s, 3)).collect::<Vec<_>>();
        println!(
            "{}",
            json!({
                "versions": opts.versions,
                "zip_kib": opts.zip_kib,
                "big_zip_mib": opts.big_zip_mib,
                "rounds": opts.rounds,
                "tree_bytes": self.bytes,
                "tar_zstd_secs": secs(&self.tar),
                "export_secs": secs(&self.export),
                "export_over_tar_throughput": secs(&export_ratio),
                "export_peak_rss_kib": self.export_peak,
                "bundle_bytes": self.bundle,
                "tar_zstd_bytes": self.tar_out,
                "untar_secs": secs(&self.untar),
                "import_secs": secs(&self.import),
                "import_over_untar_throughput": secs(&import_ratio),
                "import_peak_rss_kib": self.import_peak,
            })
        );
    }
}

fn min(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(v: &[f64]) -> f64 {
    v.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// A config watching every target, from every proxy (each 404s the others' modules), with an
/// `[export] key`.
fn write_config(dir: &Path, proxies: &[&str], targets: &[&[Target]]) -> Result<PathBuf> {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let p = |name: &str| q(&dir.join(name).to_string_lossy());
    let proxies: Vec<String> = proxies.iter().map(|u| q(u)).collect();
    let mut text = format!(
        "[upstream]\nproxies = [{}]\n[tree]\ndir = {}\n[state]\ndatabase = {}\n\
         [fetch]\nconcurrency = 64\n[sumdb]\nkey = \"off\"\n[export]\nkey = {}\n",
        proxies.join(", "),
        p("tree"),
        p("state.db"),
        p("export.key"),
    );
    for t in targets.iter().flat_map(|t| t.iter()) {
        text += &format!(
            "\n[[watch]]\nmodule = {}\nversions = {}\n",
            q(&t.path),
            q(&t.version)
        );
    }
    let config = dir.join("mirror.toml");
    fs::write(&config, text).with_context(|| format!("{}", config.display()))?;
    Ok(config)
}

/// Writes the private key to `out` and the verifier key beside it (`export.vkey`).
fn keygen(bin: &Path, config: &Path, out: &Path) -> Result<()> {
    let status = Command::new(bin)
        .args(["keygen", "--name", "bench.example", "--out"])
        .arg(out)
        .arg("--config")
        .arg(config)
        .output()?;
    ensure!(status.status.success(), "keygen: {status:?}");
    let vkey = String::from_utf8(status.stdout)?;
    fs::write(out.with_file_name("export.vkey"), vkey.trim())?;
    Ok(())
}

fn zstd_untar(bundle: &Path, into: &Path, work: &Path, server: &mut Server) -> Result<Measured> {
    fs::create_dir_all(into)?;
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("zstd -d -q -c \"$1\" | tar -x -C \"$2\" && sync -f \"$2\"")
        .arg("sh")
        .arg(bundle)
        .arg(into);
    let m = measure(cmd, &work.join("untar.log"), None, server)?;
    ensure!(
        m.status.success(),
        "zstd -d | tar -x: {}; {}",
        m.status,
        m.last_line
    );
    eprintln!("zstd -d | tar -x: {:.2}s", m.secs);
    Ok(m)
}

/// `gomirror import` of the round's bundle into a fresh offline mirror trusting `vkey`.
fn import_bundle(
    bin: &Path,
    vkey: &str,
    work: &Path,
    n: usize,
    server: &mut Server,
) -> Result<Measured> {
    let dir = work.join(format!("offline-{n}"));
    fs::create_dir_all(&dir)?;
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let config = dir.join("offline.toml");
    fs::write(
        &config,
        format!(
            "[tree]\ndir = {}\n[state]\ndatabase = {}\n[sumdb]\nkey = \"off\"\n\
             [import]\ntrusted = [{}]\n",
            q(&dir.join("tree").to_string_lossy()),
            q(&dir.join("state.db").to_string_lossy()),
            q(vkey)
        ),
    )?;
    let bundle = fs::read_dir(work.join(format!("usb-{n}")))?
        .next()
        .context("no bundle")??
        .path();
    let mut cmd = Command::new(bin);
    cmd.args(["import", "--no-progress", "--config"])
        .arg(&config)
        .arg(&bundle);
    let m = measure(cmd, &work.join(format!("import-{n}.log")), None, server)?;
    ensure!(
        m.status.success(),
        "gomirror import: {}; {}",
        m.status,
        m.last_line
    );
    eprintln!("import: {:.2}s  {}", m.secs, m.last_line);
    Ok(m)
}

/// Bytes of every regular file in the tree but the run lock.
fn tree_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir).with_context(|| format!("{}", dir.display()))? {
        let entry = entry?;
        let kind = entry.file_type()?;
        if kind.is_dir() {
            total += tree_bytes(&entry.path())?;
        } else if kind.is_file() && entry.file_name() != ".gomirror.lock" {
            total += entry.metadata()?.len();
        }
    }
    Ok(total)
}

fn bundle_bytes(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in fs::read_dir(dir)? {
        total += entry?.metadata()?.len();
    }
    Ok(total)
}

fn tar_zstd(tree: &Path, out: &Path, work: &Path, server: &mut Server) -> Result<Measured> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg("tar -c -C \"$1\" --exclude=.gomirror.lock . | zstd -q -c > \"$2\" && sync -f \"$2\"")
        .arg("sh")
        .arg(tree)
        .arg(out);
    let m = measure(cmd, &work.join("tar.log"), None, server)?;
    ensure!(
        m.status.success(),
        "tar | zstd: {}; {}",
        m.status,
        m.last_line
    );
    eprintln!("tar | zstd: {:.2}s", m.secs);
    Ok(m)
}

fn export_full(
    bin: &Path,
    config: &Path,
    work: &Path,
    n: usize,
    server: &mut Server,
) -> Result<Measured> {
    let to = work.join(format!("usb-{n}"));
    fs::create_dir_all(&to)?;
    let mut cmd = Command::new(bin);
    cmd.args(["export", "--full", "--no-progress", "--config"])
        .arg(config)
        .arg("--to")
        .arg(&to);
    let m = measure(cmd, &work.join(format!("export-{n}.log")), None, server)?;
    ensure!(
        m.status.success(),
        "gomirror export: {}; {}",
        m.status,
        m.last_line
    );
    eprintln!("export: {:.2}s  {}", m.secs, m.last_line);
    Ok(m)
}
