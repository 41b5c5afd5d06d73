//! `gomirror verify`: re-checks the tree at rest, with no network.
//!
//! The tree against the state: every published version's `.info`, `.mod`
//! and `.zip` has the sha256 recorded at publish (and the zip rules and
//! `h1:` hold); each module's `@v/list` and `@latest` are what the state
//! derives; nothing stray. A local tree is checked file by file
//! (`tree.rs`), a tree in object storage object by object, from the bytes
//! it serves (`objects.rs`, see: #17). The database itself first passes
//! `PRAGMA quick_check`, or nothing is read (see: #13). With the offline
//! checksum database (`sumdb/<name>/`), what a go client reads of it is
//! proved (`sumdb.rs`).
//!
//! Like sync, this connects stages (state, publish layout, verify) and
//! holds the tree's run lock, so it never reads a half-published batch.
//! On a bucket tree it also holds the writer's lease (as sync, prune and
//! import do), since a writer on another host is not stopped by a local
//! lock; the run lock is then taken exclusively, as the lease is one
//! writer's.

mod objects;
mod sumdb;
mod tree;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::lock::{LockError, RunLock};
use crate::module::{ModVer, ModulePath};
use crate::publish::bucket::{Bucket, BucketError, PUTS_IN_FLIGHT};
use crate::publish::layout::Tree;
use crate::publish::lease::{Lease, LeaseError};
use crate::state::{PublishedFiles, StateError, Store};

/// What `gomirror verify` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuditReport {
    /// Published versions whose files were re-hashed.
    pub versions: usize,
    /// Lookups proved against the pinned head.
    pub lookups: usize,
    /// The pinned head of the offline checksum database, if there is one.
    pub pinned_tree: Option<i64>,
    /// Whether `sumdb/<name>/supported` is served.
    pub supported: bool,
    /// Versions published before gomirror recorded the sha256 of `.info`
    /// and `.mod` (migration 0011): their `.info` was checked by content.
    pub info_by_content: usize,
    /// With `--repair`: the directory the altered files were moved to, and
    /// those files (relative to the tree). The next sync restores them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub moved_to: Option<PathBuf>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub moved: Vec<String>,
    /// With `--repair` on a tree in object storage: the bucket the altered
    /// objects were deleted from, after being copied to `moved_to`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deleted_from: Option<String>,
    pub problems: Vec<Finding>,
}

/// One difference between the tree, the state and the checksum database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// `path@version`, or a file of the tree.
    pub subject: String,
    pub problem: String,
    /// A published version's file, relative to the tree, that is present
    /// but not as published (changed, a symlink): what `--repair` moves.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub altered: Option<String>,
}

/// Where `verify --repair` moves altered files: a directory of the tree
/// whose name starts with `.`, which the nginx block never serves and no
/// GOPROXY path can name. For a tree in object storage, the same name in
/// the staging directory, which nothing serves.
pub const MOVED_DIR: &str = ".gomirror-moved";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Bucket(#[from] BucketError),
    #[error(transparent)]
    Lease(#[from] LeaseError),
    /// Moving an altered file aside failed; the ones moved before stay moved.
    #[error("moving {} aside", .path.display())]
    Move {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Copying an altered object out of the bucket, or deleting it, failed;
    /// the ones taken out before stay out.
    #[error("taking {} out to {}", .object.display(), .to.display())]
    TakeOut {
        object: PathBuf,
        to: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The staging directory of a bucket tree, where zips are copied to
    /// be checked, could not be made ready.
    #[error("staging directory {}", .path.display())]
    Staging {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("verify: internal error")]
    Internal(#[source] tokio::task::JoinError),
}

/// How `gomirror verify` runs beyond its config.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditOptions {
    /// Move each altered file of a published version aside (into
    /// [`MOVED_DIR`]), so the next sync restores it from upstream,
    /// re-verified against the hashes recorded at publish. On a bucket
    /// tree: copy each altered object there, then delete it.
    pub repair: bool,
}

/// Checks the whole tree; a finding is data, an error means it could not run.
pub async fn audit(config: &Config) -> Result<AuditReport, AuditError> {
    audit_with(config, AuditOptions::default()).await
}

/// [`audit`], with [`AuditOptions`]. The run lock (and on a bucket tree
/// the writer's lease) is held throughout, so files are moved aside only
/// while no sync runs.
pub async fn audit_with(config: &Config, options: AuditOptions) -> Result<AuditReport, AuditError> {
    let tree = crate::publish::open_tree(config).await?;
    let Some(bucket) = tree.bucket().cloned() else {
        // Shared and read-only: verify works on a read-only tree. See: #13
        let _lock = RunLock::acquire_shared(&tree.lock_file())?;
        return audit_locked(config, options, &tree, &CancellationToken::new()).await;
    };
    // See: #17
    let staging = |source| AuditError::Staging {
        path: tree.root().to_owned(),
        source,
    };
    fs_err::create_dir_all(tree.root()).map_err(staging)?;
    let _lock = RunLock::acquire(&tree.lock_file())?;
    // Copies a killed verify left; nothing else writes there.
    objects::clear_scratch(tree.root()).map_err(staging)?;
    let lost = CancellationToken::new();
    let lease = Lease::take(&bucket, &tree.lock_file(), lost.clone()).await?;
    let result = audit_locked(config, options, &tree, &lost).await;
    lease.release().await;
    let mut report = result?;
    if lost.is_cancelled() {
        report.problems.push(finding(
            bucket.url(),
            "lost the writer's lease while verifying: another writer may have published \
             meanwhile; run verify again",
        ));
    }
    Ok(report)
}

/// [`audit_with`], once the tree is locked. `lost` is cancelled if a
/// bucket tree's lease is lost meanwhile: nothing is then taken out of it,
/// since another writer may be publishing.
async fn audit_locked(
    config: &Config,
    options: AuditOptions,
    tree: &Tree,
    lost: &CancellationToken,
) -> Result<AuditReport, AuditError> {
    let store = Store::open(&config.database).await?;
    // A damaged database would make the reads below skip rows silently.
    store.quick_check().await?;
    let db_name = config.sumdb.as_ref().map_or("", |s| s.name.as_str());
    let rows = store.published_records(db_name).await?;
    let files = store.published_files(None).await?;
    let pending = store.pending_versions().await?;
    // The reads above skip rows that no longer pass Go's rules; here they
    // are findings.
    let invalid = store.invalid_published().await?;
    let mut report = AuditReport {
        versions: files.len() + invalid.len(),
        ..AuditReport::default()
    };
    report.problems = invalid
        .iter()
        .map(|i| {
            finding(
                format!("{}@{}", i.path, i.version),
                format!("state holds an invalid version: {}", i.error),
            )
        })
        .collect();
    let (found, by_content) = check_files(tree, &files).await;
    report.problems.extend(found);
    report.info_by_content = by_content;
    // A module a killed prune left half done (its versions `pruning`, its
    // lists perhaps not yet rewritten) is not walked for strays or lists:
    // the next prune completes it (see: #15). Its published files were
    // checked above.
    let pruning = store.pruning_versions().await?;
    let skip = invalid
        .iter()
        .filter_map(|i| ModulePath::new(&i.path).ok())
        .chain(pruning.into_iter().map(|mv| mv.path))
        .collect();
    let whole = check_whole_tree(tree, files, pending, skip).await;
    report.problems.extend(whole);
    if let Some(settings) = config.sumdb.as_ref().filter(|s| s.offline_copy) {
        let (tree, settings, rows) = (tree.clone(), settings.clone(), rows.clone());
        let copy = tokio::task::spawn_blocking(move || {
            sumdb::OfflineCopy::new(&tree, &settings, &settings.verifier).check(&rows)
        })
        .await
        .unwrap_or_else(|e| {
            let mut r = AuditReport::default();
            r.problems
                .push(finding("verify", format!("internal error: {e}")));
            r
        });
        report.lookups = copy.lookups;
        report.pinned_tree = copy.pinned_tree;
        report.supported = copy.supported;
        report.problems.extend(copy.problems);
    }
    if options.repair && !lost.is_cancelled() {
        let tree = tree.clone();
        report = tokio::task::spawn_blocking(move || {
            move_aside(&tree, &mut report)?;
            Ok::<_, AuditError>(report)
        })
        .await
        .map_err(AuditError::Internal)??;
    }
    Ok(report)
}

/// The lists against the state, and what should not be in the tree.
async fn check_whole_tree(
    tree: &Tree,
    files: Vec<PublishedFiles>,
    pending: Vec<ModVer>,
    skip: HashSet<ModulePath>,
) -> Vec<Finding> {
    if let Some(bucket) = tree.bucket() {
        return check_whole_bucket(tree, bucket, files, pending, skip).await;
    }
    let tree = tree.clone();
    tokio::task::spawn_blocking(move || {
        let known = tree::known_files(&files, &pending);
        let mut found = tree::check_metadata(&tree, &files, &skip);
        found.extend(tree::check_strays(&tree, &known, &skip));
        found
    })
    .await
    .unwrap_or_else(|e| vec![finding("verify", format!("internal error: {e}"))])
}

/// [`check_whole_tree`] of a bucket: each module's list, `@latest` and
/// `@v/` prefix, [`PUTS_IN_FLIGHT`] modules at once.
async fn check_whole_bucket(
    tree: &Tree,
    bucket: &Bucket,
    files: Vec<PublishedFiles>,
    pending: Vec<ModVer>,
    skip: HashSet<ModulePath>,
) -> Vec<Finding> {
    let known = Arc::new(tree::known_files(&files, &pending));
    let info: Arc<std::collections::HashMap<ModVer, Option<String>>> = Arc::new(
        files
            .iter()
            .map(|r| (r.mv.clone(), r.info_sha256.clone()))
            .collect(),
    );
    let modules: Vec<(ModulePath, Vec<crate::module::Version>)> =
        tree::listed_modules(&files, &skip)
            .into_iter()
            .map(|(p, v)| (p.clone(), v))
            .collect();
    let found: Vec<Vec<Finding>> = stream::iter(modules)
        .map(|(path, versions)| {
            let (tree, bucket) = (tree.clone(), bucket.clone());
            let (known, info) = (known.clone(), info.clone());
            async move {
                tokio::task::spawn_blocking(move || {
                    let sha = |mv: &ModVer| info.get(mv).cloned().flatten();
                    objects::check_module_objects(&tree, &bucket, (&path, &versions), sha, &known)
                })
                .await
                .unwrap_or_else(|e| vec![finding("verify", format!("internal error: {e}"))])
            }
        })
        .buffer_unordered(PUTS_IN_FLIGHT)
        .collect()
        .await;
    let mut found: Vec<Finding> = found.into_iter().flatten().collect();
    found.sort_by(|a, b| a.subject.cmp(&b.subject));
    found
}

/// The altered files the report names, each once, sorted.
fn altered(report: &AuditReport) -> Vec<String> {
    report
        .problems
        .iter()
        .filter_map(|f| f.altered.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

/// `<root>/.gomirror-moved/<UTC time>`.
fn moved_dir(tree: &Tree) -> PathBuf {
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("a UTC time formats");
    tree.root().join(MOVED_DIR).join(stamp)
}

/// Moves every altered file the report names to
/// `<tree>/.gomirror-moved/<UTC time>/<its path>`: a rename within the
/// tree, so nothing is copied and nothing is lost. The name becomes free,
/// and a sync fills it only with the bytes that were published (see: #13).
/// On a bucket tree, each altered object is copied to the same place in
/// the staging directory, then deleted: a published object is never
/// overwritten, so deleting it is how it gets its published bytes back
/// (see: #17). Blocking.
fn move_aside(tree: &Tree, report: &mut AuditReport) -> Result<(), AuditError> {
    let altered = altered(report);
    if altered.is_empty() {
        return Ok(());
    }
    let dir = moved_dir(tree);
    if let Some(bucket) = tree.bucket() {
        report.moved_to = Some(dir.clone());
        report.deleted_from = Some(bucket.url().to_owned());
        report.moved = objects::take_out(tree, bucket, &altered, &dir)?;
        return Ok(());
    }
    for rel in altered {
        let (from, to) = (tree.root().join(&rel), dir.join(&rel));
        let parent = to.parent().expect("a file of a version has a directory");
        fs_err::create_dir_all(parent)
            .and_then(|()| fs_err::rename(&from, &to))
            .map_err(|source| AuditError::Move {
                path: from.clone(),
                source,
            })?;
        tracing::warn!(file = %rel, to = %to.display(), "moved an altered file aside");
        report.moved.push(rel);
    }
    report.moved_to = Some(dir);
    Ok(())
}

fn finding(subject: impl Into<String>, problem: impl Into<String>) -> Finding {
    Finding {
        subject: subject.into(),
        problem: problem.into(),
        altered: None,
    }
}

/// Versions of a bucket whose objects are read at once: each copies its
/// zip into a temporary file, so this bounds the staging disk's use too.
const BUCKET_VERSIONS_IN_FLIGHT: usize = 16;

/// Re-hashes every published version's files, a core's worth at a time
/// (a local tree), or [`BUCKET_VERSIONS_IN_FLIGHT`] versions' objects at a
/// time (a bucket, where the time goes in requests). Also returns how many
/// `.info` files were checked by content only.
async fn check_files(tree: &Tree, rows: &[PublishedFiles]) -> (Vec<Finding>, usize) {
    let parallel = match tree.bucket() {
        Some(_) => BUCKET_VERSIONS_IN_FLIGHT,
        None => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    let tree = Arc::new(tree.clone());
    let checked: Vec<(Vec<Finding>, bool)> = stream::iter(rows.iter().cloned())
        .map(|row| {
            let tree = tree.clone();
            async move {
                tokio::task::spawn_blocking(move || match tree.bucket() {
                    Some(b) => objects::check_version_objects(&tree, b, &row),
                    None => tree::check_version_files(&tree, &row),
                })
                .await
                .unwrap_or_else(|e| {
                    let internal = finding("verify", format!("internal error: {e}"));
                    (vec![internal], false)
                })
            }
        })
        .buffer_unordered(parallel)
        .collect()
        .await;
    let by_content = checked.iter().filter(|(_, b)| *b).count();
    let mut found: Vec<Finding> = checked.into_iter().flat_map(|(f, _)| f).collect();
    found.sort_by(|a, b| a.subject.cmp(&b.subject));
    (found, by_content)
}
