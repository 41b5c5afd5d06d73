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
//! 3. **Apply**, only once all of it verified: one `commit`, as a sync's
//!    batch. Its files were staged in a `.tmp-import-*` directory of the
//!    tree; the commit checks every final name first, and a clash refuses
//!    the bundle before anything is placed or any run begins. Then, in the
//!    commit's order: tiles and lookups, module files, the merged
//!    `@v/list`/`@latest` with `latest`/`supported`, the state; last, the
//!    import is recorded.
//!
//! Killed anywhere, the tree shows no torn file and no listed version
//! without its files; the next import removes the staging directory and
//! temporary files, and completes (files already in place are identical).
//!
//! One file per phase: `header.rs`, `stream.rs`, `apply.rs`; `error.rs`
//! says why an import stopped.

mod apply;
mod error;
mod header;
mod stream;

pub use error::{FileProblem, ImportError, Refusal};

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lock::RunLock;
use crate::module::{ModVer, ModulePath};
use crate::publish::layout::{self, Kind, SumdbFile, Tree};
use crate::publish::lease::Lease;
use crate::publish::{self, atomic, WriteError};
use crate::state::{ImportRecord, Store};
use crate::sync::Progress;
use crate::verify::sumdb::client::{open_head, SignedHead};
use crate::verify::sumdb::note::Verifier;

use super::manifest::{Manifest, VersionEntry};
use apply::apply;
use header::{check_chain, check_space, read_header, trusted_keys};
use stream::stream;

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

/// Applies the bundle at `path` (a bundle file or its first volume).
pub async fn import(
    config: &Config,
    path: &Path,
    progress: Arc<dyn Progress>,
) -> Result<ImportReport, ImportError> {
    let tree = crate::publish::open_tree(config).await?;
    fs_err::create_dir_all(tree.root()).map_err(|e| {
        ImportError::Publish(WriteError::Io {
            op: "create tree directory",
            path: tree.root().to_owned(),
            source: e,
        })
    })?;
    let _tree_lock = RunLock::acquire(&tree.lock_file())?;
    let _db_lock = RunLock::acquire(&crate::lock::db_lock_path(&config.database))?;
    // A bucket tree: the writer's lease, as for a sync (see: #17). Losing it
    // mid-import is logged; the commit's conditional puts still refuse to
    // overwrite anything another writer published.
    let lease = match tree.bucket() {
        Some(b) => Some(Lease::take(b, &tree.lock_file(), CancellationToken::new()).await?),
        None => None,
    };
    let result = import_locked(config, path, progress, &tree).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    result
}

async fn import_locked(
    config: &Config,
    path: &Path,
    progress: Arc<dyn Progress>,
    tree: &Tree,
) -> Result<ImportReport, ImportError> {
    let store = Store::open(&config.database).await?;
    let trusted = trusted_keys(config)?;
    let header = blocking("reading the bundle header", {
        let path = path.to_owned();
        let config = config.clone();
        move || {
            read_header(&path, &trusted, |source| {
                config
                    .import_keys_for(source)
                    .into_iter()
                    .cloned()
                    .collect()
            })
        }
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
    remove_strays(tree, &header.manifest, config).await?;
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
    let ctx = Arc::new(Context::new(config, &store, tree, staging.path(), m).await?);
    progress.planned(m.versions.len());
    let staged = blocking("verifying the bundle", {
        let (ctx, path, progress) = (ctx.clone(), path.to_owned(), progress.clone());
        move || stream(&ctx, &path, &header, progress.as_ref())
    })
    .await?
    .map_err(|e| error::in_volumes(path, e))?;
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
    task: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ImportError> {
    Ok(crate::error::blocking(task, f).await?)
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
            let mv = ModVer::parse(&v.path, &v.version).map_err(|error| Refusal::BadVersion {
                path: v.path.clone(),
                version: v.version.clone(),
                error,
            })?;
            if !seen.insert(mv.to_string()) {
                return Err(Refusal::Twice(mv).into());
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
                            .map_err(|e| Refusal::Head(Box::new(e)))?,
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
    for (i, (mv, entry)) in versions.iter().enumerate() {
        expected.insert(layout::version_rel(mv, Kind::Mod), Expect::Mod(i));
        if entry.h1_zip.is_some() {
            expected.insert(layout::version_rel(mv, Kind::Zip), Expect::Zip(i));
        }
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
