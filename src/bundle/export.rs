//! The online side of the air gap: state + tree → one signed bundle in
//! `--to`, then the export recorded in state.
//!
//! Order, and what it protects:
//! 1. The tree's run lock is held throughout, so no sync publishes while
//!    the file list is made and the files are read.
//! 2. The file list is planned from state (published versions no completed
//!    export of this source held; all of them for `--full`) and the tree
//!    (checksum-database tiles no export held, lookups, lists, heads).
//! 3. The target's free space is checked against the bundle's upper bound.
//! 4. The tar stream is written to temporary files in the target
//!    ([`super::volume::VolumeWriter`]), each tree file re-hashed as it is
//!    copied; everything is fsynced, then renamed.
//! 5. Only then is the export recorded: an export interrupted earlier
//!    records nothing, and the next one holds the same versions.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::manifest::{self, FileEntry, Manifest, PinnedHead, VersionEntry, FORMAT};
use super::volume::{self, VolumeWriter};
use super::{io_err, BundleError};
use crate::config::Config;
use crate::lock::RunLock;
use crate::module::ModulePath;
use crate::publish::layout::{self, Kind, SumdbFile, Tree, TMP_PREFIX};
use crate::state::{ExportCandidate, ExportRecord, Store, VersionId};
use crate::verify::sumdb::note::{Signer, Verifier};
use crate::verify::sumdb::{client, tile::Tile, tlog};

/// How the tar stream is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Zstd,
}

/// zstd's default level: fast enough to keep up with a disk.
const ZSTD_LEVEL: i32 = 3;

/// Bytes per read of a tree file.
const READ_BUFFER: usize = 256 << 10;

/// Bytes per zstd job (see [`zstd_encoder`]).
const ZSTD_JOB_SIZE: u32 = 2 << 20;

/// What `gomirror export` was asked for.
#[derive(Debug, Clone)]
pub struct ExportOptions {
    /// The directory the bundle is written to.
    pub to: PathBuf,
    /// Every published version, every tile, every lookup.
    pub full: bool,
    pub compression: Compression,
    /// Split into volumes of at most this many bytes.
    pub max_volume_size: Option<u64>,
}

/// Told how the export goes; main.rs draws the progress bar with it.
pub trait ExportProgress: Send + Sync {
    /// The bundle will hold `files` tree files of `bytes` bytes in all.
    fn planned(&self, files: usize, bytes: u64);
    /// `bytes` more bytes of tree files were copied into the bundle.
    fn copied(&self, bytes: u64);
}

/// No progress reports.
pub struct Quiet;

impl ExportProgress for Quiet {
    fn planned(&self, _files: usize, _bytes: u64) {}
    fn copied(&self, _bytes: u64) {}
}

/// A finished export.
#[derive(Debug, Clone)]
pub struct ExportReport {
    pub record: ExportRecord,
    /// The bundle file, or its volumes in order.
    pub paths: Vec<PathBuf>,
    pub manifest: Manifest,
}

/// A tree file going into the bundle.
#[derive(Debug, Clone)]
struct Planned {
    entry: FileEntry,
    abs: PathBuf,
}

/// The bundle's content, before it is written.
struct Plan {
    manifest: Manifest,
    files: Vec<Planned>,
    version_ids: Vec<VersionId>,
    tiles: Vec<String>,
}

/// Exports what `options` asks for; see the module docs for the order.
#[tracing::instrument(skip_all, fields(to = %options.to.display(), full = options.full))]
pub async fn export(
    config: &Config,
    options: &ExportOptions,
    progress: Arc<dyn ExportProgress>,
) -> Result<ExportReport, BundleError> {
    let settings = config.export.as_ref().ok_or(BundleError::NoExportKey)?;
    let signer = read_signer(&settings.key)?;
    let source = settings
        .source
        .clone()
        .unwrap_or_else(|| signer.name().to_owned());
    let tree = Tree::new(&config.tree_dir);
    let _lock = RunLock::acquire(&tree.lock_file())?;
    let store = Store::open(&config.database).await?;
    let (header, candidates, exported) = gather(&store, &source, options.full).await?;
    let sumdb = match &config.sumdb {
        Some(s) if s.offline_copy => Some((s.name.clone(), s.verifier.clone())),
        _ => None,
    };
    let options = options.clone();
    let written = tokio::task::spawn_blocking(move || {
        let plan = plan(&tree, sumdb.as_ref(), header, &candidates, &exported)?;
        progress.planned(
            plan.files.len(),
            plan.manifest.files.iter().map(|f| f.size).sum(),
        );
        let (paths, json) = write_bundle(&plan, &options, &signer, progress.as_ref())?;
        Ok::<_, BundleError>((plan, paths, json))
    })
    .await
    .map_err(|e| BundleError::Join(e.to_string()))?;
    let (plan, paths, json) = written?;
    let record = ExportRecord {
        source,
        sequence: plan.manifest.sequence,
        bundle_id: manifest::bundle_id(&json),
        full: plan.manifest.full,
        created: plan.manifest.created.clone(),
        completed: String::new(),
        files: plan.files.len() as u64,
        bytes: volume::bundle_len(&paths[0])?,
        path: paths[0].display().to_string(),
        versions: 0,
        tiles: 0,
    };
    let record = store
        .record_export(record, plan.version_ids, plan.tiles)
        .await?;
    Ok(ExportReport {
        record,
        paths,
        manifest: plan.manifest,
    })
}

/// From state: the new manifest's header (sequence, follows), the versions
/// to export and the tiles earlier exports of `source` held.
async fn gather(
    store: &Store,
    source: &str,
    full: bool,
) -> Result<(Manifest, Vec<ExportCandidate>, HashSet<String>), BundleError> {
    let previous = store.previous_export(source).await?;
    let candidates = store.export_candidates(source, full).await?;
    let exported = match full {
        true => HashSet::new(),
        false => store.exported_tiles(source).await?,
    };
    let header = Manifest {
        format: FORMAT,
        source: source.to_owned(),
        sequence: previous.as_ref().map_or(1, |p| p.sequence + 1),
        follows: previous.map(|p| p.bundle_id),
        full,
        created: crate::state::now(),
        sumdb: None,
        versions: Vec::new(),
        files: Vec::new(),
    };
    Ok((header, candidates, exported))
}

/// Reads the `PRIVATE+KEY+…` string `gomirror keygen` wrote.
pub fn read_signer(path: &Path) -> Result<Signer, BundleError> {
    let text = fs_err::read_to_string(path).map_err(io_err("read", path))?;
    Signer::parse(text.trim()).map_err(|source| BundleError::Key {
        path: path.to_owned(),
        source,
    })
}

/// Writes a new signing key to `out` (mode 0600, never over an existing
/// file) and returns the verifier key to give the offline side.
pub fn keygen(name: &str, out: &Path) -> Result<String, BundleError> {
    use fs_err::os::unix::fs::OpenOptionsExt;
    let (_, skey, vkey) = Signer::generate(name).map_err(|source| BundleError::Key {
        path: out.to_owned(),
        source,
    })?;
    let mut file = fs_err::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(io_err("create", out))?;
    file.write_all(format!("{skey}\n").as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(io_err("write", out))?;
    Ok(vkey)
}

/// Lists the bundle's files in tar order and fills in the manifest.
fn plan(
    tree: &Tree,
    sumdb: Option<&(String, Verifier)>,
    mut manifest: Manifest,
    candidates: &[ExportCandidate],
    exported_tiles: &HashSet<String>,
) -> Result<Plan, BundleError> {
    let head = match sumdb {
        Some((name, verifier)) => pinned_head(tree, name, verifier)?,
        None => None,
    };
    let db = sumdb
        .filter(|_| head.is_some())
        .map(|(name, _)| name.as_str());
    let (mut files, tiles) = match db {
        Some(name) => tiles_and_lookups(tree, name, candidates, exported_tiles)?,
        None => (Vec::new(), Vec::new()),
    };
    for c in candidates {
        let mv = &c.mv;
        files.push(hashed(tree, layout::version_rel(mv, Kind::Mod))?);
        files.push(known(
            tree,
            layout::version_rel(mv, Kind::Zip),
            c.zip_size,
            &c.zip_sha256,
        ));
        files.push(hashed(tree, layout::version_rel(mv, Kind::Info))?);
    }
    let modules: BTreeSet<&ModulePath> = candidates.iter().map(|c| &c.mv.path).collect();
    for path in modules {
        for rel in [layout::list_rel(path), layout::latest_rel(path)] {
            files.extend(existing(tree, rel)?);
        }
    }
    if let Some(name) = db {
        for file in [SumdbFile::Latest, SumdbFile::Supported] {
            files.extend(existing(tree, layout::sumdb_rel(name, file))?);
        }
    }
    manifest.sumdb = head;
    manifest.versions = candidates
        .iter()
        .map(|c| VersionEntry {
            path: c.mv.path.to_string(),
            version: c.mv.version.to_string(),
            h1_zip: c.h1_zip.clone(),
            h1_mod: c.h1_mod.clone(),
        })
        .collect();
    manifest.files = files.iter().map(|f| f.entry.clone()).collect();
    Ok(Plan {
        manifest,
        files,
        version_ids: candidates.iter().map(|c| c.version_id).collect(),
        tiles,
    })
}

/// The offline copy's files that come first: tiles not in `exported`
/// (also returned alone, for state), then the versions' lookups.
fn tiles_and_lookups(
    tree: &Tree,
    name: &str,
    versions: &[ExportCandidate],
    exported: &HashSet<String>,
) -> Result<(Vec<Planned>, Vec<String>), BundleError> {
    let mut files = Vec::new();
    let tiles = new_tiles(tree, name, exported)?;
    for rel in &tiles {
        files.push(hashed(tree, rel.clone())?);
    }
    for c in versions {
        files.extend(existing(
            tree,
            layout::sumdb_rel(name, SumdbFile::Lookup(&c.mv)),
        )?);
    }
    Ok((files, tiles))
}

/// The head the tree's offline copy is pinned to, verified with the
/// configured key; `None` if the tree has no offline copy yet.
fn pinned_head(
    tree: &Tree,
    name: &str,
    verifier: &Verifier,
) -> Result<Option<PinnedHead>, BundleError> {
    let path = tree.sumdb_file(name, SumdbFile::Latest);
    let note = match fs_err::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("read", &path)(e)),
    };
    let head =
        client::open_head(verifier, &note, "tree latest").map_err(|source| BundleError::Head {
            name: name.to_owned(),
            source: Box::new(source),
        })?;
    let note = String::from_utf8(note).map_err(|_| BundleError::Malformed {
        path: path.clone(),
        reason: "not UTF-8".into(),
    })?;
    Ok(Some(PinnedHead {
        name: name.to_owned(),
        size: head.tree.n,
        hash: tlog::format_hash(&head.tree.hash),
        note,
    }))
}

/// Tiles of the offline copy (tree-relative, sorted) not in `exported`.
fn new_tiles(
    tree: &Tree,
    name: &str,
    exported: &HashSet<String>,
) -> Result<Vec<String>, BundleError> {
    let base = tree.sumdb_dir(name);
    let mut found = Vec::new();
    let mut dirs = vec![base.join("tile")];
    while let Some(dir) = dirs.pop() {
        let entries = match fs_err::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(io_err("list", &dir)(e)),
        };
        for entry in entries {
            let entry = entry.map_err(io_err("list", &dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io_err("stat", &path))?;
            if kind.is_dir() {
                dirs.push(path);
            } else if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                found.push(tile_rel(name, &base, &path)?);
            }
        }
    }
    found.retain(|rel| !exported.contains(rel));
    found.sort();
    Ok(found)
}

/// `sumdb/<name>/tile/…` of a tile file, rebuilt by `layout` from the
/// parsed tile, so only a well-formed tile path gets into a bundle.
fn tile_rel(name: &str, base: &Path, path: &Path) -> Result<String, BundleError> {
    let rel = path
        .strip_prefix(base)
        .expect("listed below base")
        .to_string_lossy()
        .replace(std::path::MAIN_SEPARATOR, "/");
    let tile = Tile::parse_path(&rel).map_err(|e| BundleError::Malformed {
        path: path.to_owned(),
        reason: format!("not a tile: {e}"),
    })?;
    Ok(layout::sumdb_rel(name, SumdbFile::Tile(&tile)))
}

/// A tree file whose size and sha256 state already knows (zips); the copy
/// into the tar re-hashes it.
fn known(tree: &Tree, rel: String, size: u64, sha256: &str) -> Planned {
    Planned {
        abs: tree.root().join(&rel),
        entry: FileEntry {
            path: rel,
            size,
            sha256: sha256.to_owned(),
        },
    }
}

/// `rel` with its size and sha256, if it exists.
fn existing(tree: &Tree, rel: String) -> Result<Option<Planned>, BundleError> {
    if tree.root().join(&rel).is_file() {
        hashed(tree, rel).map(Some)
    } else {
        Ok(None)
    }
}

/// `rel` with its size and sha256, read from the tree.
fn hashed(tree: &Tree, rel: String) -> Result<Planned, BundleError> {
    let abs = tree.root().join(&rel);
    let tree_err = |source| BundleError::TreeFile {
        path: rel.clone(),
        source,
    };
    let mut file = fs_err::File::open(&abs).map_err(tree_err)?;
    let mut hasher = Sha256::new();
    let size = io::copy(&mut file, &mut hasher).map_err(tree_err)?;
    Ok(Planned {
        entry: FileEntry {
            sha256: hex::encode(hasher.finalize()),
            path: rel,
            size,
        },
        abs,
    })
}

/// `gomirror-<source>-<sequence:06>[-full].tar[.zst]`.
pub fn bundle_name(m: &Manifest, compression: Compression) -> String {
    let full = if m.full { "-full" } else { "" };
    let ext = match compression {
        Compression::None => "tar",
        Compression::Zstd => "tar.zst",
    };
    format!("gomirror-{}-{:06}{full}.{ext}", m.source, m.sequence)
}

/// An upper bound of the bundle's bytes: the tar size (512-byte headers,
/// GNU long names, padding, the 1 KiB end), plus zstd's worst-case growth.
fn upper_bound(plan: &Plan, json: &[u8], sig: &[u8], compression: Compression) -> u64 {
    let padded = |n: u64| n.div_ceil(512) * 512;
    let entry = |name_len: usize, size: u64| 512 + padded(name_len as u64 + 1) + 512 + padded(size);
    let mut total = entry(13, json.len() as u64) + entry(12, sig.len() as u64) + 1024 + 10240;
    for f in &plan.manifest.files {
        total += entry(f.path.len() + 5, f.size);
    }
    match compression {
        Compression::None => total,
        // ZSTD_compressBound: n + n/256 + a little per block.
        Compression::Zstd => total + total / 128 + (1 << 16),
    }
}

/// Writes the bundle into temporaries in the target, then renames them.
fn write_bundle(
    plan: &Plan,
    options: &ExportOptions,
    signer: &Signer,
    progress: &dyn ExportProgress,
) -> Result<(Vec<PathBuf>, Vec<u8>), BundleError> {
    let json = plan.manifest.to_json();
    let sig = manifest::sign(&json, &plan.manifest, signer)?;
    let need = upper_bound(plan, &json, &sig, options.compression);
    let free = super::free_bytes(&options.to).map_err(io_err("statvfs", &options.to))?;
    if need > free {
        return Err(BundleError::NoSpace {
            dir: options.to.clone(),
            need,
            free,
        });
    }
    let name = bundle_name(&plan.manifest, options.compression);
    let target = options.to.join(&name);
    let out = VolumeWriter::new(&options.to, &name, options.max_volume_size);
    let volumes = match options.compression {
        Compression::None => {
            // tar writes headers of 512 bytes: batch them.
            let out = BufWriter::with_capacity(1 << 20, out);
            let out = write_tar(out, plan, &json, &sig, progress)?;
            out.into_inner()
                .map_err(|e| io_err("write", &target)(e.into_error()))?
        }
        Compression::Zstd => {
            // No buffer below: zstd already writes whole blocks.
            let enc = zstd_encoder(out).map_err(io_err("zstd", &target))?;
            let enc = write_tar(enc, plan, &json, &sig, progress)?;
            enc.finish().map_err(io_err("write", &target))?
        }
    };
    Ok((volumes.commit()?, json))
}

/// A level-3 zstd stream with one worker thread: compression runs beside
/// the reading and hashing of the next bytes, as `tar | zstd` runs in two
/// processes. Jobs of 2 MiB keep its buffers within the memory budget.
fn zstd_encoder<W: Write>(out: W) -> io::Result<zstd::Encoder<'static, W>> {
    use zstd::stream::raw::CParameter;
    let mut enc = zstd::Encoder::new(out, ZSTD_LEVEL)?;
    enc.multithread(1)?;
    enc.set_parameter(CParameter::JobSize(ZSTD_JOB_SIZE))?;
    Ok(enc)
}

/// The tar stream into `out`; returns `out` once the tar is complete.
fn write_tar<W: Write>(
    out: W,
    plan: &Plan,
    json: &[u8],
    sig: &[u8],
    progress: &dyn ExportProgress,
) -> Result<W, BundleError> {
    let bundle = PathBuf::from("bundle");
    let mut tar = tar::Builder::new(out);
    append(&mut tar, "manifest.json", json.len() as u64, json).map_err(io_err("write", &bundle))?;
    append(&mut tar, "manifest.sig", sig.len() as u64, sig).map_err(io_err("write", &bundle))?;
    let mut copied = 0;
    for f in &plan.files {
        let tree_err = |source| BundleError::TreeFile {
            path: f.entry.path.clone(),
            source,
        };
        let file = fs_err::File::open(&f.abs).map_err(tree_err)?;
        let mut reader = HashingReader {
            // tar copies through an 8 KiB buffer; read the file in
            // larger pieces than that.
            inner: BufReader::with_capacity(READ_BUFFER, file.take(f.entry.size)),
            hasher: Sha256::new(),
            read: 0,
            progress,
        };
        let name = format!("tree/{}", f.entry.path);
        append(&mut tar, &name, f.entry.size, &mut reader).map_err(io_err("write", &bundle))?;
        let got = hex::encode(reader.hasher.finalize());
        if reader.read != f.entry.size || got != f.entry.sha256 {
            return Err(BundleError::Changed {
                path: f.entry.path.clone(),
                want: f.entry.sha256.clone(),
                got,
            });
        }
        copied += 1;
        check_test_interruption(copied)?;
    }
    tar.into_inner().map_err(io_err("write", &bundle))
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    tar.append_data(&mut header, name, data)
}

/// Hashes and counts what the tar builder reads, and reports progress.
struct HashingReader<'a, R> {
    inner: R,
    hasher: Sha256,
    read: u64,
    progress: &'a dyn ExportProgress,
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        self.progress.copied(n as u64);
        Ok(n)
    }
}

/// Test seam: `GOMIRROR_TEST_EXPORT_FAIL_AFTER=<n>` fails the export after
/// `n` tree files were copied, as a full disk or a pulled USB stick would,
/// so the tests can check that an interrupted export leaves and records
/// nothing. Read nowhere else.
fn check_test_interruption(copied: usize) -> Result<(), BundleError> {
    let limit = std::env::var("GOMIRROR_TEST_EXPORT_FAIL_AFTER")
        .ok()
        .and_then(|v| v.parse::<usize>().ok());
    match limit {
        Some(n) if copied >= n => Err(BundleError::Invalid(format!(
            "interrupted after {copied} files (GOMIRROR_TEST_EXPORT_FAIL_AFTER)"
        ))),
        _ => Ok(()),
    }
}

/// Removes temporary bundle files a killed export left in `dir`.
pub fn remove_stray_temps(dir: &Path) -> Result<usize, BundleError> {
    let mut removed = 0;
    for entry in fs_err::read_dir(dir).map_err(io_err("list", dir))? {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{TMP_PREFIX}gomirror-")) {
            fs_err::remove_file(entry.path()).map_err(io_err("remove", entry.path()))?;
            removed += 1;
        }
    }
    Ok(removed)
}
