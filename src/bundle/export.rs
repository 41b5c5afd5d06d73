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
//!    Nothing new since the last export (and not `--full`): nothing is
//!    written.
//! 4. The tar stream is written to temporary files in the target
//!    ([`super::volume::VolumeWriter`], on a thread of its own), each tree
//!    file re-hashed as it is copied (small files are copied from the bytes
//!    the plan hashed); everything is fsynced.
//! 5. The export is recorded as pending, the files are renamed (volume
//!    `.000` last), then the export is completed. Killed before the record,
//!    nothing is recorded and the next export holds the same versions;
//!    killed after it, the next export of the source first settles the
//!    pending one: adopted if its bundle is visible, forgotten if not. A
//!    visible bundle is always in the chain, and a sequence number is
//!    never written twice with different ids.

use std::collections::{BTreeSet, HashSet};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use super::manifest::{self, FileEntry, Manifest, PinnedHead, VersionEntry, FORMAT};
use super::volume::{BackgroundWriter, VolumeIoError, VolumeWriter};
use super::{io_err, BundleError};
use crate::config::Config;
use crate::lock::RunLock;
use crate::module::ModulePath;
use crate::publish::layout::{self, Kind, SumdbFile, Tree, TMP_PREFIX};
use crate::state::{ExportCandidate, ExportRecord, ExportedVersion, Store};
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

/// Bytes per read of a tree file; each read goes to the compressor whole.
const READ_BUFFER: usize = 256 << 10;

/// Tree files up to this size (`.mod`, `.info`, lists, lookups, tiles) keep
/// the bytes the plan read and hashed, and are copied from memory: a second
/// open and read of each costs more than the copy itself.
const SMALL_FILE: u64 = 16 << 10;

/// What the kept bytes of small files may add up to, so that memory stays
/// flat however many versions a bundle holds; past it, files are re-read.
const SMALL_FILES_BUDGET: usize = 8 << 20;

/// Heap overhead counted per kept file against [`SMALL_FILES_BUDGET`].
const SMALL_FILE_OVERHEAD: usize = 64;

/// The zero bytes that pad a tar entry to a 512-byte block.
const TAR_PADDING: [u8; 512] = [0; 512];

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

/// What an export did.
#[derive(Debug, Clone)]
pub struct ExportReport {
    /// Bundles a killed export made visible but did not complete, found
    /// complete and recorded now: they are in the chain.
    pub adopted: Vec<ExportRecord>,
    /// The new bundle; `None`: nothing was published since the last export
    /// (and it is not `--full`), so nothing was written.
    pub bundle: Option<NewBundle>,
}

/// A bundle this export wrote.
#[derive(Debug, Clone)]
pub struct NewBundle {
    pub record: ExportRecord,
    /// The bundle file, or its volumes in order.
    pub paths: Vec<PathBuf>,
    pub manifest: Manifest,
}

/// A tree file going into the bundle.
#[derive(Debug, Clone)]
struct Planned {
    entry: FileEntry,
    /// The bytes `entry.sha256` was computed from, for a small file within
    /// the budget; `None`: read the tree's file again, re-hashing it.
    data: Option<Vec<u8>>,
}

/// What is left of [`SMALL_FILES_BUDGET`] while the plan reads files.
struct Keep {
    left: usize,
}

/// The bundle's content, before it is written.
struct Plan {
    /// Where the files are read from.
    tree: Tree,
    manifest: Manifest,
    files: Vec<Planned>,
    version_ids: Vec<ExportedVersion>,
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
    let tree = crate::publish::open_tree(config).await?;
    let _lock = RunLock::acquire(&tree.lock_file())?;
    let store = Store::open(&config.database).await?;
    // A bundle from a damaged database would carry its damage (see: #13).
    store.quick_check().await?;
    let adopted = settle_pending(&store, &source).await?;
    let (header, candidates, exported) = gather(&store, &source, options.full).await?;
    let sumdb = match &config.sumdb {
        Some(s) if s.offline_copy => Some((s.name.clone(), s.verifier.clone())),
        _ => None,
    };
    let mut options = options.clone();
    // Absolute: a pending export is found again from its recorded path,
    // whatever the next run's working directory.
    options.to = fs_err::canonicalize(&options.to).map_err(io_err("resolve", &options.to))?;
    let written = tokio::task::spawn_blocking(move || {
        let plan = plan(&tree, sumdb.as_ref(), header, &candidates, &exported)?;
        if !plan.manifest.full && plan.version_ids.is_empty() && plan.tiles.is_empty() {
            return Ok(None);
        }
        progress.planned(
            plan.files.len(),
            plan.manifest.files.iter().map(|f| f.size).sum(),
        );
        let (volumes, json) = write_bundle(&plan, &options, &signer, progress.as_ref())?;
        Ok::<_, BundleError>(Some((plan, volumes, json)))
    })
    .await
    .map_err(|e| BundleError::Join(e.to_string()))?;
    let Some((plan, volumes, json)) = written? else {
        return Ok(ExportReport {
            adopted,
            bundle: None,
        });
    };
    let paths = volumes.final_paths();
    let record = ExportRecord {
        source,
        sequence: plan.manifest.sequence,
        bundle_id: manifest::bundle_id(&json),
        full: plan.manifest.full,
        created: plan.manifest.created.clone(),
        completed: String::new(),
        files: plan.files.len() as u64,
        bytes: volumes.bytes_written(),
        path: paths[0].display().to_string(),
        versions: 0,
        tiles: 0,
    };
    // Recorded before it is visible, completed after: killed in between,
    // the next export finds it and adopts it or forgets it.
    let mut record = store
        .record_export(record, plan.version_ids, plan.tiles)
        .await?;
    test_kill_point("recorded");
    let paths = tokio::task::spawn_blocking(move || volumes.commit())
        .await
        .map_err(|e| BundleError::Join(e.to_string()))??;
    test_kill_point("renamed");
    store.complete_export(&record.bundle_id).await?;
    record.completed = crate::state::now();
    Ok(ExportReport {
        adopted,
        bundle: Some(NewBundle {
            record,
            paths,
            manifest: plan.manifest,
        }),
    })
}

/// Settles the exports of `source` a killed run left pending: one whose
/// bundle is visible (its file, or volume `.000`, which is renamed last)
/// is complete and is recorded as such; one whose bundle is not was never
/// seen, so it is forgotten, with any later volumes already renamed.
/// Returns the adopted ones.
// See: #13
async fn settle_pending(store: &Store, source: &str) -> Result<Vec<ExportRecord>, BundleError> {
    let mut adopted = Vec::new();
    for mut pending in store.pending_exports(source).await? {
        let first = PathBuf::from(&pending.path);
        if first.is_file() {
            tracing::info!(bundle = %first.display(), sequence = pending.sequence,
                "an interrupted export left its bundle complete; recording it");
            store.complete_export(&pending.bundle_id).await?;
            pending.completed = crate::state::now();
            adopted.push(pending);
            continue;
        }
        if let Some(base) = pending.path.strip_suffix(".000") {
            for i in 1.. {
                let volume = PathBuf::from(format!("{base}.{i:03}"));
                match fs_err::remove_file(&volume) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) => return Err(io_err("remove", &volume)(e)),
                }
            }
        }
        store.drop_pending_export(&pending.bundle_id).await?;
    }
    Ok(adopted)
}

/// Test seam: `GOMIRROR_TEST_EXPORT_KILL_AT=<point>` aborts the process at
/// `point` (`recorded`: the pending record written, the bundle not yet
/// visible; `renamed`: visible, not yet completed), as `kill -9` would, so
/// the tests can check the next export settles it. Read nowhere else.
fn test_kill_point(point: &str) {
    if std::env::var("GOMIRROR_TEST_EXPORT_KILL_AT").is_ok_and(|p| p == point) {
        std::process::abort();
    }
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
    let keep = &mut Keep {
        left: SMALL_FILES_BUDGET,
    };
    let (mut files, tiles) = match db {
        Some(name) => tiles_and_lookups(tree, name, candidates, exported_tiles, keep)?,
        None => (Vec::new(), Vec::new()),
    };
    for c in candidates {
        let mv = &c.mv;
        files.push(hashed(tree, layout::version_rel(mv, Kind::Mod), keep)?);
        if let Some(zip) = &c.zip {
            let rel = layout::version_rel(mv, Kind::Zip);
            files.push(known(rel, zip.size, &zip.sha256));
        }
        files.push(hashed(tree, layout::version_rel(mv, Kind::Info), keep)?);
    }
    let modules: BTreeSet<&ModulePath> = candidates.iter().map(|c| &c.mv.path).collect();
    for path in modules {
        for rel in [layout::list_rel(path), layout::latest_rel(path)] {
            files.extend(existing(tree, rel, keep)?);
        }
    }
    if let Some(name) = db {
        for file in [SumdbFile::Latest, SumdbFile::Supported] {
            files.extend(existing(tree, layout::sumdb_rel(name, file), keep)?);
        }
    }
    manifest.sumdb = head;
    manifest.versions = candidates
        .iter()
        .map(|c| VersionEntry {
            path: c.mv.path.to_string(),
            version: c.mv.version.to_string(),
            h1_zip: c.zip.as_ref().map(|z| z.h1.clone()),
            h1_mod: c.h1_mod.clone(),
        })
        .collect();
    manifest.files = files.iter().map(|f| f.entry.clone()).collect();
    Ok(Plan {
        tree: tree.clone(),
        manifest,
        files,
        version_ids: candidates
            .iter()
            .map(|c| ExportedVersion {
                id: c.version_id,
                with_zip: c.zip.is_some(),
            })
            .collect(),
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
    keep: &mut Keep,
) -> Result<(Vec<Planned>, Vec<String>), BundleError> {
    let mut files = Vec::new();
    let tiles = new_tiles(tree, name, exported)?;
    for rel in &tiles {
        files.push(hashed(tree, rel.clone(), keep)?);
    }
    for c in versions {
        files.extend(existing(
            tree,
            layout::sumdb_rel(name, SumdbFile::Lookup(&c.mv)),
            keep,
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
    let rel = layout::sumdb_rel(name, SumdbFile::Latest);
    let path = tree.display(&rel);
    let note = match tree.open_served(&rel) {
        Ok((mut reader, _)) => {
            let mut note = Vec::new();
            reader
                .read_to_end(&mut note)
                .map_err(io_err("read", &path))?;
            note
        }
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
    let dir = format!("sumdb/{name}/tile");
    let listed = tree
        .list_served(&dir)
        .map_err(io_err("list", &tree.display(&dir)))?;
    let mut found = Vec::with_capacity(listed.len());
    for rel in listed {
        found.push(tile_rel(tree, name, &rel)?);
    }
    found.retain(|rel| !exported.contains(rel));
    found.sort();
    Ok(found)
}

/// `sumdb/<name>/tile/…` of a listed tile, rebuilt by `layout` from the
/// parsed tile, so only a well-formed tile path gets into a bundle.
fn tile_rel(tree: &Tree, name: &str, rel: &str) -> Result<String, BundleError> {
    let base = format!("sumdb/{name}/");
    let within = rel.strip_prefix(&base).expect("listed below the base");
    let tile = Tile::parse_path(within).map_err(|e| BundleError::Malformed {
        path: tree.display(rel),
        reason: format!("not a tile: {e}"),
    })?;
    Ok(layout::sumdb_rel(name, SumdbFile::Tile(&tile)))
}

/// A tree file whose size and sha256 state already knows (zips); the copy
/// into the tar re-hashes it.
fn known(rel: String, size: u64, sha256: &str) -> Planned {
    Planned {
        entry: FileEntry {
            path: rel,
            size,
            sha256: sha256.to_owned(),
        },
        data: None,
    }
}

/// `rel` with its size and sha256, if it exists as a file.
fn existing(tree: &Tree, rel: String, keep: &mut Keep) -> Result<Option<Planned>, BundleError> {
    read_planned(tree, rel, false, keep)
}

/// `rel` with its size and sha256, read from the tree.
fn hashed(tree: &Tree, rel: String, keep: &mut Keep) -> Result<Planned, BundleError> {
    Ok(read_planned(tree, rel, true, keep)?.expect("a required file is Some or an error"))
}

/// Reads and hashes `rel`; `None` if it is optional and missing or not a
/// file. A small file's bytes are kept while the budget lasts.
fn read_planned(
    tree: &Tree,
    rel: String,
    required: bool,
    keep: &mut Keep,
) -> Result<Option<Planned>, BundleError> {
    let tree_err = |source| BundleError::TreeFile {
        path: rel.clone(),
        source,
    };
    let (mut file, len) = match tree.open_served(&rel) {
        Ok(opened) => opened,
        Err(e) if !required && e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(tree_err(e)),
    };
    let cost = usize::try_from(len).unwrap_or(usize::MAX) + SMALL_FILE_OVERHEAD;
    let (size, sha256, data) = if len <= SMALL_FILE && cost <= keep.left {
        let mut data = Vec::with_capacity(cost - SMALL_FILE_OVERHEAD);
        file.read_to_end(&mut data).map_err(tree_err)?;
        keep.left = keep.left.saturating_sub(data.len() + SMALL_FILE_OVERHEAD);
        (data.len() as u64, Sha256::digest(&data), Some(data))
    } else {
        let mut hasher = Sha256::new();
        let size = io::copy(&mut file, &mut hasher).map_err(tree_err)?;
        (size, hasher.finalize(), None)
    };
    Ok(Some(Planned {
        entry: FileEntry {
            sha256: hex::encode(sha256),
            path: rel,
            size,
        },
        data,
    }))
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

/// Writes the bundle into fsynced temporaries in the target; the caller
/// renames them ([`VolumeWriter::commit`]) once the export is recorded.
fn write_bundle(
    plan: &Plan,
    options: &ExportOptions,
    signer: &Signer,
    progress: &dyn ExportProgress,
) -> Result<(VolumeWriter, Vec<u8>), BundleError> {
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
    // Three threads, as `tar | zstd` runs as three (tar, zstd and its
    // worker): this one reads and hashes the tree, one compresses, one
    // writes the bundle. The queues between them also batch tar's 512-byte
    // headers into large writes.
    let out =
        BackgroundWriter::spawn("bundle-writer", out, Ok).map_err(io_err("write", &target))?;
    let failed = |e| VolumeIoError::into_bundle_error("write", &target, e);
    let out = match options.compression {
        Compression::None => out,
        Compression::Zstd => {
            let enc = zstd_encoder(out).map_err(io_err("zstd", &target))?;
            BackgroundWriter::spawn("bundle-zstd", enc, |enc| enc.finish()?.finish())
                .map_err(io_err("zstd", &target))?
        }
    };
    let out = write_tar(out, plan, &json, &sig, progress, &target)?;
    let volumes = out.finish().map_err(failed)?;
    Ok((volumes, json))
}

/// A level-3 zstd stream, single-threaded: it runs on a thread of its own
/// ([`BackgroundWriter`]) beside the reading and hashing. zstd's own worker
/// (`nbWorkers = 1`, 2 MiB jobs) did the same for about 40 % more CPU on
/// 209 MiB of small versions (0.63 s against 0.45 s: per-job buffers, the
/// overlap each job re-loads, locks on every write).
fn zstd_encoder<W: Write>(out: W) -> io::Result<zstd::Encoder<'static, W>> {
    zstd::Encoder::new(out, ZSTD_LEVEL)
}

/// The tar stream into `out`; returns `out` once the tar is complete.
fn write_tar<W: Write>(
    out: W,
    plan: &Plan,
    json: &[u8],
    sig: &[u8],
    progress: &dyn ExportProgress,
    target: &Path,
) -> Result<W, BundleError> {
    // A write error names the volume file it happened in (a full disk).
    let failed = |e| VolumeIoError::into_bundle_error("write", target, e);
    let mut tar = tar::Builder::new(out);
    append(&mut tar, "manifest.json", json).map_err(failed)?;
    append(&mut tar, "manifest.sig", sig).map_err(failed)?;
    let mut buf = vec![0; READ_BUFFER];
    let mut copied = 0;
    for f in &plan.files {
        let name = format!("tree/{}", f.entry.path);
        append_header(&mut tar, &name, f.entry.size).map_err(failed)?;
        match &f.data {
            Some(data) => {
                tar.get_mut().write_all(data).map_err(failed)?;
                progress.copied(data.len() as u64);
            }
            None => copy_file(&plan.tree, f, tar.get_mut(), &mut buf, progress, target)?,
        }
        pad(tar.get_mut(), f.entry.size).map_err(failed)?;
        copied += 1;
        check_test_interruption(copied)?;
    }
    tar.into_inner().map_err(failed)
}

/// A whole entry, header and data.
fn append<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> io::Result<()> {
    append_header(tar, name, data.len() as u64)?;
    tar.get_mut().write_all(data)?;
    pad(tar.get_mut(), data.len() as u64)
}

/// The header of an entry of `size` bytes (after a GNU long-name entry if
/// `name` needs one); its data and [`pad`] follow. `tar` copies data only
/// through an 8 KiB buffer, and each write into the zstd stream takes its
/// locks: written here, a file goes in as a few large writes instead.
fn append_header<W: Write>(tar: &mut tar::Builder<W>, name: &str, size: u64) -> io::Result<()> {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Regular);
    header.set_size(size);
    header.set_mode(0o644);
    header.set_mtime(0);
    // No data: tar writes the header (the size field says `size`) and, for
    // an empty copy, no padding.
    tar.append_data(&mut header, name, io::empty())
}

/// Zeros up to the next 512-byte block after `size` bytes of data.
fn pad(out: &mut impl Write, size: u64) -> io::Result<()> {
    let rest = (size % 512) as usize;
    match rest {
        0 => Ok(()),
        _ => out.write_all(&TAR_PADDING[rest..]),
    }
}

/// Copies the file of `f` into `out`, hashing it: it must still be the
/// bytes the manifest names.
fn copy_file(
    tree: &Tree,
    f: &Planned,
    out: &mut impl Write,
    buf: &mut [u8],
    progress: &dyn ExportProgress,
    target: &Path,
) -> Result<(), BundleError> {
    let tree_err = |source| BundleError::TreeFile {
        path: f.entry.path.clone(),
        source,
    };
    let (mut file, _) = tree.open_served(&f.entry.path).map_err(tree_err)?;
    let mut hasher = Sha256::new();
    let mut left = f.entry.size;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = match file.read(&mut buf[..want]) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(tree_err(e)),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| VolumeIoError::into_bundle_error("write", target, e))?;
        progress.copied(n as u64);
        left -= n as u64;
    }
    let got = hex::encode(hasher.finalize());
    if left != 0 || got != f.entry.sha256 {
        return Err(BundleError::Changed {
            path: f.entry.path.clone(),
            want: f.entry.sha256.clone(),
            got,
        });
    }
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The tar crate's own `append_data` of the same entry, as export wrote
    /// it before it wrote data itself.
    fn crate_entry(name: &str, data: &[u8]) -> Vec<u8> {
        let mut tar = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        tar.append_data(&mut header, name, data).unwrap();
        tar.into_inner().unwrap()
    }

    #[test]
    fn entries_are_the_bytes_tar_writes() {
        let long = format!("tree/{}/@v/v1.0.0.zip", "example.com/long".repeat(10));
        for (name, size) in [
            ("manifest.json", 0),
            ("tree/a/@v/v1.0.0.mod", 1),
            ("tree/a/@v/v1.0.0.info", 511),
            ("tree/a/@v/v1.0.0.zip", 512),
            (long.as_str(), 513),
            (long.as_str(), 4096 + 17),
        ] {
            let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
            let mut ours = tar::Builder::new(Vec::new());
            append(&mut ours, name, &data).unwrap();
            let ours = ours.into_inner().unwrap();
            assert_eq!(ours, crate_entry(name, &data), "{name} ({size} bytes)");
            assert_eq!(ours.len() % 512, 0);
        }
    }
}
