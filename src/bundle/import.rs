//! `gomirror import`: apply a signed bundle to an offline mirror.
//!
//! Nothing is trusted because it is in the bundle:
//! 1. **Header** (first two tar entries): the manifest's signature must be
//!    by a key in `[import] trusted`; the chain must continue (the next
//!    sequence of the same source, following the last applied bundle; a
//!    `--full` bundle fits any state; an applied bundle is a no-op); the
//!    tree must have room for it. All before anything is written.
//! 2. **Stream** (the rest, in the manifest's order): every file's size and
//!    sha256 must be the manifest's, and its path one that gomirror
//!    publishes for the manifest's versions (built with `publish::layout`
//!    from checked types, so a bundle cannot name a path outside the
//!    tree). The pinned tree head must be signed by this mirror's `[sumdb]`
//!    key and consistent with the newest head it verified; each lookup's
//!    record must be included in it (proved with the bundle's and the
//!    tree's tiles) and vouch for the manifest's hashes; each version then
//!    goes through `verify::verify` with that record, exactly as a sync
//!    from upstream does, into temporary files beside their final names.
//! 3. **Publish**, only once all of it verified, in sync's order: tiles and
//!    lookups, then the module files (`publish::place`), then the merged
//!    `@v/list`/`@latest` (union of what the tree and the bundle publish),
//!    then `latest`/`supported`; the state records the versions and, last,
//!    the import.
//!
//! Killed anywhere, the tree shows no torn file and no listed version
//! without its files; the next import removes the temporary files and
//! completes (files already in place are identical, so linking them again
//! is a no-op).

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest, VersionEntry};
use super::{volume, BundleError};
use crate::commit;
use crate::config::Config;
use crate::fetch::{Downloaded, Fetched};
use crate::lock::{LockError, RunLock};
use crate::module::{ModVer, ModulePath};
use crate::publish::layout::{self, Kind, SumdbFile, Tree};
use crate::publish::{self, atomic, Staged, WriteError};
use crate::state::{ImportRecord, OutcomeKind, RunOutcome, RunSummary, StateError, Store};
use crate::sync::Progress;
use crate::verify::sumdb::client::{open_head, SignedHead};
use crate::verify::sumdb::local::LocalTiles;
use crate::verify::sumdb::note::Verifier;
use crate::verify::sumdb::tile::Tile;
use crate::verify::sumdb::tlog::format_hash;
use crate::verify::sumdb::{parse_lookup, parse_record_hashes, RecordHashes};
use crate::verify::{self, Vouched};

/// What an import did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ImportReport {
    pub source: String,
    pub sequence: u64,
    pub bundle_id: String,
    pub full: bool,
    pub signer: String,
    /// The bundle was applied before: nothing was done.
    pub already_applied: bool,
    pub versions: usize,
    pub files: usize,
    pub bytes: u64,
}

/// Why a bundle was refused or could not be applied. A refusal leaves the
/// offline side as it was.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Bundle(Box<BundleError>),
    #[error("refused: {0}")]
    Refused(String),
    #[error("refused: {file}: {problem}")]
    File { file: String, problem: String },
    #[error(
        "not enough free space in {}: the bundle needs {need} bytes, {have} are free",
        dir.display()
    )]
    Space { dir: PathBuf, need: u64, have: u64 },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("publishing")]
    Publish(#[source] WriteError),
    #[error("internal error in {0}")]
    Task(String),
}

impl From<BundleError> for ImportError {
    fn from(e: BundleError) -> Self {
        ImportError::Bundle(Box::new(e))
    }
}

fn refused(reason: impl Into<String>) -> ImportError {
    ImportError::Refused(reason.into())
}

fn file_err(file: &str, problem: impl Into<String>) -> ImportError {
    ImportError::File {
        file: file.to_owned(),
        problem: problem.into(),
    }
}

/// Applies the bundle at `path` (a bundle file or its first volume).
pub async fn import(
    config: &Config,
    path: &Path,
    progress: Arc<dyn Progress>,
) -> Result<ImportReport, ImportError> {
    let tree = Tree::new(&config.tree_dir);
    fs_err::create_dir_all(tree.root()).map_err(|e| {
        ImportError::Publish(WriteError::Io {
            op: "create tree directory",
            path: tree.root().to_owned(),
            source: e,
        })
    })?;
    let _tree_lock = RunLock::acquire(&tree.lock_file())?;
    let _db_lock = RunLock::acquire(&crate::lock::db_lock_path(&config.database))?;
    let store = Store::open(&config.database).await?;
    let trusted = trusted_keys(config)?.to_vec();
    let header = blocking("reading the bundle header", {
        let path = path.to_owned();
        move || read_header(&path, &trusted)
    })
    .await??;
    let m = &header.manifest;
    let mut report = ImportReport {
        source: m.source.clone(),
        sequence: m.sequence,
        bundle_id: header.id.clone(),
        full: m.full,
        signer: header.signer.clone(),
        already_applied: false,
        versions: m.versions.len(),
        files: m.files.len(),
        bytes: m.files.iter().map(|f| f.size).sum(),
    };
    if check_chain(&store, m, &header.id).await? {
        report.already_applied = true;
        return Ok(report);
    }
    check_space(tree.root(), report.bytes)?;
    remove_strays(&tree, &header.manifest, config).await?;
    // Files are staged in a directory of their own until the commit: a
    // refused bundle leaves the tree as it was, not even a new directory.
    let staging = blocking("staging directory", {
        let root = tree.root().to_owned();
        move || {
            tempfile::Builder::new()
                .prefix(STAGING_PREFIX)
                .tempdir_in(&root)
                .map_err(|e| ImportError::Publish(atomic::io_err("create directory in", &root)(e)))
        }
    })
    .await??;
    let ctx = Arc::new(Context::new(config, &store, &tree, staging.path(), m).await?);
    progress.planned(m.versions.len());
    let staged = blocking("verifying the bundle", {
        let (ctx, path, progress) = (ctx.clone(), path.to_owned(), progress.clone());
        move || stream(&ctx, &path, &header, progress.as_ref())
    })
    .await??;
    apply(&ctx, &store, staged).await?;
    store
        .record_import(ImportRecord {
            source: report.source.clone(),
            sequence: report.sequence,
            bundle_id: report.bundle_id.clone(),
            full: report.full,
            signer: report.signer.clone(),
            versions: report.versions as u64,
            files: report.files as u64,
            bytes: report.bytes,
            imported_at: String::new(),
        })
        .await?;
    Ok(report)
}

async fn blocking<T: Send + 'static>(
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ImportError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ImportError::Task(format!("{what}: {e}")))
}

fn trusted_keys(config: &Config) -> Result<&[Verifier], ImportError> {
    if config.import_trusted.is_empty() {
        return Err(refused(
            "[import] trusted lists no key: add the verifier key `gomirror keygen` printed on \
             the online side",
        ));
    }
    Ok(&config.import_trusted)
}

/// The signed manifest, opened and checked.
struct Header {
    manifest: Manifest,
    json: Vec<u8>,
    id: String,
    signer: String,
}

/// Manifests hold one line per file; this bounds what a hostile bundle can
/// make us hold before its signature is checked.
const MAX_MANIFEST: u64 = 512 << 20;
const MAX_SIGNATURE: u64 = 64 << 10;

fn read_header(path: &Path, trusted: &[Verifier]) -> Result<Header, ImportError> {
    let mut archive = tar::Archive::new(volume::open_stream(path)?);
    let mut entries = archive
        .entries()
        .map_err(|e| file_err("bundle", format!("reading tar: {e}")))?;
    let json = read_entry(&mut entries, "manifest.json", MAX_MANIFEST)?;
    let sig = read_entry(&mut entries, "manifest.sig", MAX_SIGNATURE)?;
    let verifiers: Vec<&Verifier> = trusted.iter().collect();
    let (manifest, signer) = manifest::open(&sig, &json, &verifiers)?;
    Ok(Header {
        id: manifest::bundle_id(&json),
        manifest,
        json,
        signer,
    })
}

/// The next tar entry, which must be `name`, read whole (at most `limit`).
fn read_entry<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, ImportError> {
    let mut entry = entries
        .next()
        .ok_or_else(|| file_err(name, "missing: the bundle ends early"))?
        .map_err(|e| file_err(name, format!("reading tar: {e}")))?;
    let found = entry
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if found != name {
        return Err(file_err(name, format!("expected here, found {found:?}")));
    }
    if entry.size() > limit {
        return Err(file_err(
            name,
            format!("{} bytes, more than {limit}", entry.size()),
        ));
    }
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| file_err(name, format!("reading: {e}")))?;
    Ok(buf)
}

/// Go on with this bundle (`false`), or it was applied already (`true`).
async fn check_chain(store: &Store, m: &Manifest, id: &str) -> Result<bool, ImportError> {
    let (last, same) = store.import_chain(&m.source, m.sequence).await?;
    if let Some(done) = same {
        if done.bundle_id == id {
            return Ok(true);
        }
        return Err(refused(format!(
            "{} bundle {} is already applied with id {}, this one has id {id}",
            m.source, m.sequence, done.bundle_id
        )));
    }
    if m.full {
        return Ok(false);
    }
    match last {
        None if m.sequence == 1 && m.follows.is_none() => Ok(false),
        None => Err(refused(format!(
            "a gap: this mirror has applied no bundle, so it expects {}'s bundle 1 or a \
             --full bundle; got bundle {}",
            m.source, m.sequence
        ))),
        Some(l) if l.source != m.source => Err(refused(format!(
            "from another source: this mirror follows {}, the bundle comes from {} \
             (a --full bundle may switch sources)",
            l.source, m.source
        ))),
        Some(l) if m.sequence != l.sequence + 1 => Err(refused(format!(
            "a gap: this mirror is at {} bundle {}, so it expects bundle {}; got bundle {}",
            l.source,
            l.sequence,
            l.sequence + 1,
            m.sequence
        ))),
        Some(l) if m.follows.as_deref() != Some(l.bundle_id.as_str()) => Err(refused(format!(
            "bundle {} follows {}, but this mirror applied {} as bundle {}",
            m.sequence,
            m.follows.as_deref().unwrap_or("nothing"),
            l.bundle_id,
            l.sequence
        ))),
        Some(_) => Ok(false),
    }
}

/// Room for the bundle's files (plus 1 % and 16 MiB for directories and
/// metadata) in the tree's file system.
fn check_space(dir: &Path, bytes: u64) -> Result<(), ImportError> {
    let need = bytes + bytes / 100 + (16 << 20);
    let have = free_bytes(dir)?;
    if have < need {
        return Err(ImportError::Space {
            dir: dir.to_owned(),
            need,
            have,
        });
    }
    Ok(())
}

/// Free bytes for an unprivileged writer of `dir`. `GOMIRROR_TEST_FREE_BYTES`
/// overrides it, so tests can stand for a full disk.
fn free_bytes(dir: &Path) -> Result<u64, ImportError> {
    if let Some(n) = std::env::var("GOMIRROR_TEST_FREE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Ok(n);
    }
    let st = rustix::fs::statvfs(dir).map_err(|e| {
        ImportError::Publish(WriteError::Io {
            op: "statvfs",
            path: dir.to_owned(),
            source: e.into(),
        })
    })?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}

/// What every step of one import shares.
struct Context {
    tree: Tree,
    /// Where the bundle's module files are staged until the commit.
    staging: PathBuf,
    /// This mirror's checksum database (`None`: `[sumdb] key = "off"`).
    sumdb: Option<SumdbSide>,
    /// Tree-relative path → what it must be, for every file the manifest may
    /// name: built from its versions with `publish::layout`.
    expected: HashMap<String, Expect>,
    versions: Vec<(ModVer, VersionEntry)>,
}

struct SumdbSide {
    name: String,
    verifier: Verifier,
    settings: crate::config::SumdbSettings,
    /// The newest head this mirror verified before.
    newest: Option<SignedHead>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Mod(usize),
    Zip(usize),
    Info(usize),
    Lookup(usize),
    List,
    Latest,
    SumdbLatest,
    Supported,
}

impl Context {
    async fn new(
        config: &Config,
        store: &Store,
        tree: &Tree,
        staging: &Path,
        m: &Manifest,
    ) -> Result<Context, ImportError> {
        let mut versions = Vec::with_capacity(m.versions.len());
        let mut seen = HashSet::new();
        for v in &m.versions {
            let mv = ModVer::parse(&v.path, &v.version)
                .map_err(|e| refused(format!("manifest names {}@{}: {e}", v.path, v.version)))?;
            if !seen.insert(mv.to_string()) {
                return Err(refused(format!("manifest names {mv} twice")));
            }
            versions.push((mv, v.clone()));
        }
        let sumdb = match &config.sumdb {
            None => None,
            Some(s) => {
                let verifier = s.verifier.clone();
                let newest = match store.newest_sumdb_head(&s.name).await? {
                    Some(h) => Some(
                        open_head(&verifier, &h.note, "stored tree head")
                            .map_err(|e| refused(e.to_string()))?,
                    ),
                    None => None,
                };
                Some(SumdbSide {
                    name: s.name.clone(),
                    verifier,
                    settings: s.clone(),
                    newest,
                })
            }
        };
        let expected = expected_paths(&versions, sumdb.as_ref().map(|s| s.name.as_str()));
        Ok(Context {
            tree: tree.clone(),
            staging: staging.to_owned(),
            sumdb,
            expected,
            versions,
        })
    }
}

fn expected_paths(
    versions: &[(ModVer, VersionEntry)],
    db: Option<&str>,
) -> HashMap<String, Expect> {
    let mut expected = HashMap::new();
    for (i, (mv, _)) in versions.iter().enumerate() {
        expected.insert(layout::version_rel(mv, Kind::Mod), Expect::Mod(i));
        expected.insert(layout::version_rel(mv, Kind::Zip), Expect::Zip(i));
        expected.insert(layout::version_rel(mv, Kind::Info), Expect::Info(i));
        expected.insert(layout::list_rel(&mv.path), Expect::List);
        expected.insert(layout::latest_rel(&mv.path), Expect::Latest);
        if let Some(db) = db {
            expected.insert(
                layout::sumdb_rel(db, SumdbFile::Lookup(mv)),
                Expect::Lookup(i),
            );
        }
    }
    if let Some(db) = db {
        expected.insert(
            layout::sumdb_rel(db, SumdbFile::Latest),
            Expect::SumdbLatest,
        );
        expected.insert(
            layout::sumdb_rel(db, SumdbFile::Supported),
            Expect::Supported,
        );
    }
    expected
}

/// Prefix of an import's staging directory in the tree root (a
/// [`layout::TMP_PREFIX`] name, so nginx never serves it).
const STAGING_PREFIX: &str = ".tmp-import-";

/// What a killed import (or sync) left: temporary files beside the
/// bundle's modules and in the offline copy, and staging directories.
async fn remove_strays(tree: &Tree, m: &Manifest, config: &Config) -> Result<(), ImportError> {
    let tree = tree.clone();
    let modules: HashSet<ModulePath> = m
        .versions
        .iter()
        .filter_map(|v| ModulePath::new(&v.path).ok())
        .collect();
    let db = config.sumdb.as_ref().map(|s| s.name.clone());
    blocking("stray cleanup", move || -> Result<(), WriteError> {
        for path in &modules {
            publish::remove_stray_temps(&tree, path)?;
        }
        if let Some(db) = &db {
            publish::remove_stray_sumdb_temps(&tree, db)?;
        }
        let root = tree.root();
        for entry in fs_err::read_dir(root).map_err(atomic::io_err("read directory", root))? {
            let entry = entry.map_err(atomic::io_err("read directory", root))?;
            if entry
                .file_name()
                .to_string_lossy()
                .starts_with(STAGING_PREFIX)
            {
                let path = entry.path();
                fs_err::remove_dir_all(&path).map_err(atomic::io_err("remove", &path))?;
            }
        }
        Ok(())
    })
    .await?
    .map_err(ImportError::Publish)
}

/// Everything of the bundle, verified and written beside its final names.
struct StagedBundle {
    tiles: Vec<(Tile, Bytes)>,
    lookups: Vec<(ModVer, Vec<u8>)>,
    /// Record ids, for the state.
    records: Vec<(ModVer, i64)>,
    staged: Vec<Staged>,
    pin: Option<SignedHead>,
}

/// Phase 2: reads the whole bundle once more, checking every file, and
/// stages the versions. Blocking.
fn stream(
    ctx: &Context,
    path: &Path,
    header: &Header,
    progress: &dyn Progress,
) -> Result<StagedBundle, ImportError> {
    let mut archive = tar::Archive::new(volume::open_stream(path)?);
    let mut entries = archive
        .entries()
        .map_err(|e| file_err("bundle", format!("reading tar: {e}")))?;
    let json = read_entry(&mut entries, "manifest.json", MAX_MANIFEST)?;
    if json != header.json {
        return Err(refused("the bundle changed while it was being read"));
    }
    read_entry(&mut entries, "manifest.sig", MAX_SIGNATURE)?;
    // Versions are verified (zip rules, `h1:`) on other threads while this
    // one decompresses and writes the next files.
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get().saturating_sub(1))
        .max(1);
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(workers * 4);
    let job_rx = std::sync::Mutex::new(job_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<Staged, ImportError>>();
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let job_rx = &job_rx;
            scope.spawn(move || loop {
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(job) = job else { break };
                if done_tx.send(verify_job(ctx, job, progress)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut staged = Vec::with_capacity(header.manifest.versions.len());
        let streamed = stream_files(ctx, header, &mut entries, job_tx, &done_rx, &mut staged);
        // The job sender is gone: the workers finish what is queued, then stop.
        for result in done_rx.iter() {
            staged.push(result?);
        }
        streamed?.finish(staged)
    })
}

/// Every file of the manifest, in order; versions go to the verifiers.
fn stream_files<'a, R: Read>(
    ctx: &'a Context,
    header: &Header,
    entries: &mut tar::Entries<'_, R>,
    jobs: std::sync::mpsc::SyncSender<Job>,
    done: &std::sync::mpsc::Receiver<Result<Staged, ImportError>>,
    staged: &mut Vec<Staged>,
) -> Result<Stream<'a>, ImportError> {
    let mut s = Stream::new(ctx, &header.manifest, jobs)?;
    for f in &header.manifest.files {
        let mut entry = entries
            .next()
            .ok_or_else(|| file_err(&f.path, "missing: the bundle ends early"))?
            .map_err(|e| file_err(&f.path, format!("reading tar: {e}")))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name != format!("tree/{}", f.path) {
            return Err(file_err(&f.path, format!("expected here, found {name:?}")));
        }
        if entry.size() != f.size {
            return Err(file_err(
                &f.path,
                format!(
                    "{} bytes in the tar, {} in the manifest",
                    entry.size(),
                    f.size
                ),
            ));
        }
        s.take(&f.path, &f.sha256, &mut entry)?;
        // A version that failed verification stops the import early.
        while let Ok(result) = done.try_recv() {
            staged.push(result?);
        }
    }
    if entries.next().is_some() {
        return Err(refused("the bundle holds files its manifest does not name"));
    }
    s.jobs = None;
    Ok(s)
}

/// One version's files, for a verifier thread.
struct Job {
    i: usize,
    fetched: Fetched,
    /// The checksum database's record (name, hashes), unless private or off.
    vouched: Option<(String, RecordHashes)>,
}

/// `verify::verify` with the record, the manifest's hashes, then staging.
fn verify_job(ctx: &Context, job: Job, progress: &dyn Progress) -> Result<Staged, ImportError> {
    let (mv, entry) = &ctx.versions[job.i];
    let vouched = job
        .vouched
        .as_ref()
        .map(|(db, hashes)| Vouched { db, hashes });
    let verified = verify::verify(job.fetched, vouched)
        .map_err(|q| file_err(&layout::version_rel(mv, Kind::Zip), q.reason))?;
    let c = verified.checked();
    if c.h1_zip() != entry.h1_zip || c.h1_mod() != entry.h1_mod {
        return Err(file_err(
            &layout::version_rel(mv, Kind::Zip),
            format!(
                "hashes to {} and go.mod {}, the manifest says {} and {}",
                c.h1_zip(),
                c.h1_mod(),
                entry.h1_zip,
                entry.h1_mod
            ),
        ));
    }
    progress.finished(mv, "verified", c.zip_size());
    publish::stage(verified).map_err(ImportError::Publish)
}

/// The files of one version, gathered as the stream goes.
#[derive(Default)]
struct Pending {
    mod_file: Option<Downloaded>,
    zip: Option<Downloaded>,
}

/// Reads a tile of this mirror's offline copy.
type TileLoader<'a> = Box<dyn FnMut(&Tile) -> Result<Option<Vec<u8>>, String> + 'a>;

struct Stream<'a> {
    ctx: &'a Context,
    pin: Option<SignedHead>,
    /// The bundle's tiles, then this tree's.
    tiles: LocalTiles<TileLoader<'a>>,
    records: HashMap<usize, (i64, RecordHashes, Vec<u8>)>,
    pending: HashMap<usize, Pending>,
    /// To the verifier threads; `None` once every file was read.
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    consistent: HashSet<(i64, [u8; 32])>,
    pin_checked: bool,
}

impl<'a> Stream<'a> {
    fn new(
        ctx: &'a Context,
        m: &Manifest,
        jobs: std::sync::mpsc::SyncSender<Job>,
    ) -> Result<Stream<'a>, ImportError> {
        let pin = match (&ctx.sumdb, &m.sumdb) {
            (None, _) => None,
            (Some(db), None) => {
                return Err(refused(format!(
                    "the bundle carries no checksum-database records, and this mirror \
                     verifies against {} ([sumdb] key = \"off\" accepts unverified bundles)",
                    db.name
                )))
            }
            (Some(db), Some(p)) if p.name != db.name => {
                return Err(refused(format!(
                    "the bundle is pinned to checksum database {}, this mirror verifies \
                     against {}",
                    p.name, db.name
                )))
            }
            (Some(db), Some(p)) => {
                let head = open_head(&db.verifier, p.note.as_bytes(), "the bundle's tree head")
                    .map_err(|e| refused(e.to_string()))?;
                if head.tree.n != p.size || format_hash(&head.tree.hash) != p.hash {
                    return Err(refused(
                        "the manifest's tree head does not match its signed note",
                    ));
                }
                Some(head)
            }
        };
        Ok(Stream {
            ctx,
            pin,
            tiles: LocalTiles::new(Box::new(move |t: &Tile| match &ctx.sumdb {
                Some(db) => publish::read_sumdb_tile(&ctx.tree, &db.name, t),
                None => Ok(None),
            })),
            records: HashMap::new(),
            pending: HashMap::new(),
            jobs: Some(jobs),
            consistent: HashSet::new(),
            pin_checked: false,
        })
    }

    fn take(&mut self, rel: &str, sha256: &str, entry: &mut impl Read) -> Result<(), ImportError> {
        if let Some(tile) = self.tile_path(rel) {
            let data = read_checked(rel, sha256, entry, 1 << 20)?;
            self.tiles.give(tile, data);
            return Ok(());
        }
        if self.ctx.sumdb.is_none() && rel.starts_with("sumdb/") {
            // This mirror does not verify ([sumdb] key = "off"): checked, not kept.
            read_checked(rel, sha256, entry, 1 << 20)?;
            return Ok(());
        }
        let Some(&expect) = self.ctx.expected.get(rel) else {
            return Err(file_err(
                rel,
                "not a file gomirror publishes for this bundle's versions",
            ));
        };
        match expect {
            Expect::Mod(i) | Expect::Zip(i) => {
                let file = write_checked(rel, sha256, entry, &self.ctx.staging)?;
                let p = self.pending.entry(i).or_default();
                match expect {
                    Expect::Mod(_) => p.mod_file = Some(file),
                    _ => p.zip = Some(file),
                }
            }
            Expect::Info(i) => {
                let info = read_checked(rel, sha256, entry, verify::MAX_INFO)?;
                self.stage(i, Bytes::from(info))?;
            }
            Expect::Lookup(i) => {
                let body = read_checked(rel, sha256, entry, 1 << 20)?;
                self.check_lookup(i, rel, body)?;
            }
            Expect::SumdbLatest => {
                let note = read_checked(rel, sha256, entry, 1 << 20)?;
                if self.pin.as_ref().map(|p| &p.note[..]) != Some(&note[..]) {
                    return Err(file_err(rel, "is not the head the manifest pins"));
                }
            }
            Expect::List | Expect::Latest | Expect::Supported => {
                // Checked, not copied: lists are rebuilt from what this tree
                // publishes, and `supported` from whether its copy is complete.
                read_checked(rel, sha256, entry, 16 << 20)?;
            }
        }
        Ok(())
    }

    /// `sumdb/<name>/tile/…` of this mirror's database, as a [`Tile`] whose
    /// path renders back to exactly `rel`.
    fn tile_path(&self, rel: &str) -> Option<Tile> {
        let db = self.ctx.sumdb.as_ref()?;
        let prefix = format!("sumdb/{}/", db.name);
        let tile = Tile::parse_path(rel.strip_prefix(&prefix)?).ok()?;
        (layout::sumdb_rel(&db.name, SumdbFile::Tile(&tile)) == rel && tile.l >= 0).then_some(tile)
    }

    /// A lookup: its record vouches for the manifest's hashes, is signed
    /// under a head consistent with the pin, and is included in the pin.
    fn check_lookup(&mut self, i: usize, rel: &str, body: Vec<u8>) -> Result<(), ImportError> {
        let (mv, entry) = &self.ctx.versions[i];
        let db = self
            .ctx
            .sumdb
            .as_ref()
            .expect("lookups are expected only with a database");
        let pin = self
            .pin
            .clone()
            .expect("a database implies a pin (Stream::new)");
        self.check_pin()?;
        let lookup = parse_lookup(mv, &body).map_err(|e| file_err(rel, e.to_string()))?;
        let hashes =
            parse_record_hashes(mv, &lookup.text).map_err(|e| file_err(rel, e.to_string()))?;
        if hashes.h1_zip != entry.h1_zip || hashes.h1_mod != entry.h1_mod {
            return Err(file_err(
                rel,
                format!(
                    "the checksum database says {} and go.mod {}, the manifest {} and {}",
                    hashes.h1_zip, hashes.h1_mod, entry.h1_zip, entry.h1_mod
                ),
            ));
        }
        let head =
            open_head(&db.verifier, &lookup.note, rel).map_err(|e| file_err(rel, e.to_string()))?;
        if !self.consistent.contains(&(head.tree.n, head.tree.hash)) {
            self.tiles
                .check_tree(&head.tree, &pin.tree)
                .map_err(|e| file_err(rel, format!("signed tree {}: {e}", head.tree.n)))?;
            self.consistent.insert((head.tree.n, head.tree.hash));
        }
        self.tiles
            .check_record(&pin.tree, lookup.id, &lookup.text)
            .map_err(|e| file_err(rel, e))?;
        self.records.insert(i, (lookup.id, hashes, body));
        Ok(())
    }

    /// The pin must extend the newest head this mirror verified (or be
    /// extended by it). Proved once, with the first lookup or at the end.
    fn check_pin(&mut self) -> Result<(), ImportError> {
        let (Some(pin), Some(db)) = (self.pin.clone(), self.ctx.sumdb.as_ref()) else {
            return Ok(());
        };
        if self.pin_checked {
            return Ok(());
        }
        if let Some(newest) = db.newest.clone() {
            let (old, new) = if newest.tree.n <= pin.tree.n {
                (newest.tree, pin.tree)
            } else {
                (pin.tree, newest.tree)
            };
            self.tiles.check_tree(&old, &new).map_err(|e| {
                refused(format!(
                    "SECURITY ERROR: the bundle's tree head {} is not consistent with tree {} \
                     this mirror verified before: {e}",
                    pin.tree.n, newest.tree.n
                ))
            })?;
        }
        self.consistent.insert((pin.tree.n, pin.tree.hash));
        self.pin_checked = true;
        Ok(())
    }

    fn name(&self) -> String {
        self.ctx
            .sumdb
            .as_ref()
            .map(|d| d.name.clone())
            .unwrap_or_default()
    }

    /// The version's `.info` arrived: its three files go to a verifier,
    /// for the same checks as a download from upstream, with the record.
    fn stage(&mut self, i: usize, info: Bytes) -> Result<(), ImportError> {
        let (mv, _) = &self.ctx.versions[i];
        let p = self.pending.remove(&i).unwrap_or_default();
        let (Some(mod_file), Some(zip)) = (p.mod_file, p.zip) else {
            return Err(refused(format!(
                "{mv}: .info comes before its .mod and .zip"
            )));
        };
        let private = self
            .ctx
            .sumdb
            .as_ref()
            .is_some_and(|d| d.settings.is_private(mv.path.as_str()));
        let record = self.records.get(&i).map(|(_, hashes, _)| hashes.clone());
        if self.ctx.sumdb.is_some() && record.is_none() && !private {
            return Err(refused(format!(
                "{mv}: no checksum-database lookup in the bundle"
            )));
        }
        let job = Job {
            i,
            fetched: Fetched {
                mv: mv.clone(),
                info,
                mod_file,
                zip,
            },
            vouched: record.map(|hashes| (self.name(), hashes)),
        };
        let jobs = self.jobs.as_ref().expect("open while files are read");
        jobs.send(job)
            .map_err(|_| ImportError::Task("the verifier threads stopped".into()))?;
        Ok(())
    }

    fn finish(mut self, staged: Vec<Staged>) -> Result<StagedBundle, ImportError> {
        self.check_pin()?;
        if let Some((i, _)) = self.pending.iter().next() {
            let (mv, _) = &self.ctx.versions[*i];
            return Err(refused(format!("{mv}: the bundle has no .info for it")));
        }
        if staged.len() != self.ctx.versions.len() {
            return Err(refused(format!(
                "the manifest names {} versions, the bundle holds the files of {}",
                self.ctx.versions.len(),
                staged.len()
            )));
        }
        let mut lookups = Vec::new();
        let mut records = Vec::new();
        let mut ids: Vec<usize> = self.records.keys().copied().collect();
        ids.sort_unstable();
        for i in ids {
            let (id, _, body) = self.records.remove(&i).expect("listed above");
            let mv = self.ctx.versions[i].0.clone();
            records.push((mv.clone(), id));
            lookups.push((mv, body));
        }
        let mut tiles: Vec<(Tile, Bytes)> = self
            .tiles
            .take_given()
            .into_iter()
            .map(|(t, d)| (t, Bytes::from(d)))
            .collect();
        tiles.sort_by_key(|(t, _)| *t);
        Ok(StagedBundle {
            tiles,
            lookups,
            records,
            staged,
            pin: self.pin,
        })
    }
}

/// Reads a small entry whole, checking its sha256.
fn read_checked(
    rel: &str,
    sha256: &str,
    entry: &mut impl Read,
    limit: u64,
) -> Result<Vec<u8>, ImportError> {
    let mut buf = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| file_err(rel, format!("reading: {e}")))?;
    if buf.len() as u64 > limit {
        return Err(file_err(rel, format!("larger than {limit} bytes")));
    }
    check_sha(rel, sha256, &Sha256::digest(&buf).into())?;
    Ok(buf)
}

/// Streams an entry into a temporary file in `dir`, hashing it.
fn write_checked(
    rel: &str,
    sha256: &str,
    entry: &mut impl Read,
    dir: &Path,
) -> Result<Downloaded, ImportError> {
    let mut file = atomic::create_temp(dir).map_err(ImportError::Publish)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    let mut size = 0u64;
    loop {
        let n = entry
            .read(&mut buf)
            .map_err(|e| file_err(rel, format!("reading: {e}")))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut file, &buf[..n]).map_err(|e| {
            ImportError::Publish(WriteError::Io {
                op: "write",
                path: file.path().to_owned(),
                source: e,
            })
        })?;
        size += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    check_sha(rel, sha256, &digest)?;
    Ok(Downloaded {
        file,
        size,
        sha256: digest,
        url: format!("bundle:{rel}"),
    })
}

fn check_sha(rel: &str, want: &str, got: &[u8; 32]) -> Result<(), ImportError> {
    let got = hex::encode(got);
    if got != want {
        return Err(file_err(
            rel,
            format!("sha256 {got}, the signed manifest says {want}"),
        ));
    }
    Ok(())
}

/// Phase 3: one commit, as a sync's batch. Every final name is checked
/// first: a clash refuses the bundle with nothing written, not even a run.
async fn apply(ctx: &Arc<Context>, store: &Store, bundle: StagedBundle) -> Result<(), ImportError> {
    let records = match (&ctx.sumdb, bundle.pin) {
        (Some(db), Some(pin)) => Some(commit::Records {
            db: db.settings.clone(),
            head: pin,
            ids: bundle.records,
            offline: Some(commit::OfflineCopy {
                tiles: bundle.tiles,
                lookups: bundle.lookups,
            }),
        }),
        _ => None,
    };
    let batch = commit::Batch {
        staged: bundle.staged,
        records,
    };
    let prepared = commit::prepare(&ctx.tree, batch)
        .await
        .map_err(|e| commit_error(&ctx.tree, e))?;
    if let Some(c) = prepared.conflicts().first() {
        return Err(write_refusal(&ctx.tree, &c.error));
    }
    let run = store.begin_run().await?;
    let mut summary = RunSummary {
        planned: ctx.versions.len() as u64,
        outcome: RunOutcome::Failed,
        ..RunSummary::default()
    };
    let result = match prepared.apply(&ctx.tree, store).await {
        Ok(outcomes) => all_published(&outcomes, &mut summary),
        Err(e) => Err(commit_error(&ctx.tree, e)),
    };
    if result.is_ok() {
        summary.outcome = RunOutcome::Ok;
    }
    store.finish_run(run, &summary).await?;
    result
}

/// Every version of the bundle must have been published; counts them.
fn all_published(
    outcomes: &[(ModVer, OutcomeKind)],
    summary: &mut RunSummary,
) -> Result<(), ImportError> {
    for (mv, kind) in outcomes {
        match kind {
            OutcomeKind::Published(p) => {
                summary.published += 1;
                summary.bytes += p.info_size + p.mod_size + p.zip_size;
            }
            OutcomeKind::Quarantined { reason } => return Err(file_err(&zip_rel(mv), reason)),
            OutcomeKind::NotFound { reason } => return Err(file_err(&zip_rel(mv), reason)),
            OutcomeKind::Failed { error } => return Err(file_err(&zip_rel(mv), error)),
        }
    }
    Ok(())
}

fn zip_rel(mv: &ModVer) -> String {
    layout::version_rel(mv, Kind::Zip)
}

/// A commit that stopped: a clash is a refusal naming the file, a full disk
/// an error of the environment.
fn commit_error(tree: &Tree, e: commit::CommitError) -> ImportError {
    match e {
        commit::CommitError::Publish(e @ WriteError::Conflict { .. }) => write_refusal(tree, &e),
        commit::CommitError::Publish(e) => ImportError::Publish(e),
        e @ commit::CommitError::Fork { .. } => refused(e.to_string()),
        commit::CommitError::State(e) => ImportError::State(e),
        e @ commit::CommitError::Task { .. } => ImportError::Task(crate::sync::chain(&e)),
    }
}

/// A file the bundle would publish clashes with the tree's.
fn write_refusal(tree: &Tree, e: &WriteError) -> ImportError {
    let rel = match e {
        WriteError::Conflict { path, .. } | WriteError::Io { path, .. } => path
            .strip_prefix(tree.root())
            .unwrap_or(path)
            .to_string_lossy()
            .into_owned(),
    };
    file_err(&rel, e.to_string())
}
