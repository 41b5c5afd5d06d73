//! The export and import benchmark (`cargo bench --bench sync -- --export`): how fast
//! `gomirror export` writes a bundle and `gomirror import` applies it, against `tar -c | zstd`
//! and `zstd -d | tar -x` of the same tree in the same run, and how much memory they need.
//!
//! Input: `--versions N` (2000) synthetic modules of `--zip-kib` (100) KiB plus one module with a
//! `--big-zip-mib` (400) MiB zip, synced once into one tree from two upstream processes (the test
//! upstream, no latency, no checksum database). Output: a table on stdout, then one line of JSON.
//!
//! Then, twice each and alternating, so that both read from a warm page cache: `tar -c -C tree .
//! | zstd -q` (zstd's default level 3, as ours) into a file, and `gomirror export --full`
//! (zstd level 3) into a fresh directory. Then, twice each and alternating: `zstd -d | tar -x`
//! of the `tar | zstd` output into a fresh directory, and `gomirror import` of the bundle into a
//! fresh offline mirror (which checks every file's sha256, every zip's rules and `h1:`, and
//! publishes with its barriers; both sides end with the file system synced). The best run of
//! each is reported. Throughput is the tree's bytes over wall time; peak RSS is gomirror's own
//! (`wait4`, see the module doc of `sync.rs`).

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
    keep: bool,
}

fn parse(args: &[String]) -> Result<ExportOpts> {
    let mut opts = ExportOpts {
        versions: 2000,
        zip_kib: 100,
        big_zip_mib: 400,
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
            other => anyhow::bail!(
                "--export: unknown option {other:?} (--versions, --zip-kib, --big-zip-mib, --keep)"
            ),
        }
    }
    Ok(opts)
}

pub fn main(args: &[String], bin: &Path) -> Result<()> {
    let opts = parse(args)?;
    let work = tempfile::Builder::new()
        .prefix("gomirror-export-bench-")
        .tempdir()
        .context("creating the work directory")?;
    eprintln!("work directory {}", work.path().display());
    let result = run(&opts, bin, work.path());
    if opts.keep || result.is_err() {
        let kept = work.keep();
        eprintln!("kept {}", kept.display());
    }
    result
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
    let big = Server::start(Corpus {
        big: true,
        count: 1,
        files: opts.big_zip_mib + 2,
        bytes: opts.big_zip_mib << 20,
        latency_ms: 0,
        sumdb: false,
    })?;
    let config = write_config(work, &many.url, &big.url, &[&many.targets, &big.targets])?;
    keygen(&local, &config, &work.join("export.key"))?;
    let synced = crate::sync(&local, &config, &work.join("sync.log"), &mut many)?;
    eprintln!("sync:   {:.2}s  {}", synced.secs, synced.last_line);
    drop(big);
    let tree = work.join("tree");
    let bytes = tree_bytes(&tree)?;

    let mut tar = Vec::new();
    let mut export = Vec::new();
    for round_no in 0..2 {
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
    for round_no in 0..2 {
        untar.push(zstd_untar(
            &work.join(format!("tar-{round_no}.tar.zst")),
            &work.join(format!("untar-{round_no}")),
            work,
            &mut many,
        )?);
        import.push(import_bundle(&local, &vkey, work, round_no, &mut many)?);
    }
    let best = |runs: &[Measured]| runs.iter().map(|m| m.secs).fold(f64::INFINITY, f64::min);
    let (tar_secs, export_secs) = (best(&tar), best(&export));
    let (untar_secs, import_secs) = (best(&untar), best(&import));
    let peak = export.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0);
    let import_peak = import.iter().map(|m| m.peak_rss_kib).max().unwrap_or(0);
    let ratio = tar_secs / export_secs;
    let bundle = bundle_bytes(&work.join("usb-1"))?;
    let tar_out = fs::metadata(work.join("tar-1.tar.zst"))?.len();
    let rate = |secs: f64| bytes as f64 / secs / (1 << 20) as f64;
    println!(
        "export bench: {} versions of ~{} KiB + one {} MiB zip, {:.1} MiB of tree files",
        opts.versions,
        opts.zip_kib,
        opts.big_zip_mib,
        bytes as f64 / (1 << 20) as f64
    );
    println!(
        "{:<22} {:>8} {:>10} {:>12} {:>10}",
        "", "secs", "MiB/s", "output MiB", "peak RSS"
    );
    println!(
        "{:<22} {:>8.2} {:>10.1} {:>12.1} {:>10}",
        "tar -c | zstd",
        tar_secs,
        rate(tar_secs),
        tar_out as f64 / (1 << 20) as f64,
        "-"
    );
    println!(
        "{:<22} {:>8.2} {:>10.1} {:>12.1} {:>6.1} MiB",
        "gomirror export --full",
        export_secs,
        rate(export_secs),
        bundle as f64 / (1 << 20) as f64,
        mib(peak)
    );
    println!(
        "{:<22} {:>8.2} {:>10.1} {:>12} {:>10}",
        "zstd -d | tar -x",
        untar_secs,
        rate(untar_secs),
        "-",
        "-"
    );
    println!(
        "{:<22} {:>8.2} {:>10.1} {:>12} {:>6.1} MiB",
        "gomirror import",
        import_secs,
        rate(import_secs),
        "-",
        mib(import_peak)
    );
    println!(
        "export: throughput {:.0} % of tar | zstd (target >= {:.0} %), peak RSS {:.1} MiB (target < {} MiB)",
        ratio * 100.0,
        THROUGHPUT_TARGET * 100.0,
        mib(peak),
        RSS_TARGET_KIB >> 10
    );
    println!(
        "import: throughput {:.0} % of zstd -d | tar -x (target >= {:.0} %), peak RSS {:.1} MiB (target < {} MiB)",
        untar_secs / import_secs * 100.0,
        THROUGHPUT_TARGET * 100.0,
        mib(import_peak),
        RSS_TARGET_KIB >> 10
    );
    println!(
        "{}",
        json!({
            "versions": opts.versions,
            "zip_kib": opts.zip_kib,
            "big_zip_mib": opts.big_zip_mib,
            "tree_bytes": bytes,
            "tar_zstd_secs": round(tar_secs, 3),
            "export_secs": round(export_secs, 3),
            "export_over_tar_throughput": round(ratio, 3),
            "export_peak_rss_kib": peak,
            "bundle_bytes": bundle,
            "tar_zstd_bytes": tar_out,
            "untar_secs": round(untar_secs, 3),
            "import_secs": round(import_secs, 3),
            "import_over_untar_throughput": round(untar_secs / import_secs, 3),
            "import_peak_rss_kib": import_peak,
        })
    );
    Ok(())
}

/// A config watching every target, from two proxies (each 404s the other's modules), with an
/// `[export] key`.
fn write_config(dir: &Path, a: &str, b: &str, targets: &[&[Target]]) -> Result<PathBuf> {
    let q = |s: &str| toml::Value::String(s.to_string()).to_string();
    let p = |name: &str| q(&dir.join(name).to_string_lossy());
    let mut text = format!(
        "[upstream]\nproxies = [{}, {}]\n[tree]\ndir = {}\n[state]\ndatabase = {}\n\
         [fetch]\nconcurrency = 64\n[sumdb]\nkey = \"off\"\n[export]\nkey = {}\n",
        q(a),
        q(b),
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
