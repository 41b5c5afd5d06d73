//! `gomirror verify`: re-checks the tree at rest, with no network.
//!
//! The tree against the state (`tree.rs`): every published version's
//! `.info`, `.mod` and `.zip` is a regular file with the sha256 recorded at
//! publish (and the zip rules and `h1:` hold); each module's `@v/list` and
//! `@latest` are what the state derives; no stray file or symlink. The
//! database itself first passes `PRAGMA quick_check`, or nothing is read
//! (see: #13). With the offline checksum database
//! (`sumdb/<name>/`): `latest` is a head signed by the configured key; every
//! covered version has a lookup naming the recorded id and hashes; each
//! lookup's head is consistent with `latest` and its record is included in
//! `latest`'s tree — all proved with the tiles the tree serves, exactly
//! what a go client would read.
//!
//! Like sync, this connects stages (state, publish layout, verify) and
//! holds the tree's run lock, so it never reads a half-published batch.

mod tree;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::config::{Config, SumdbSettings};
use crate::lock::{LockError, RunLock};
use crate::module::{ModVer, ModulePath};
use crate::publish::layout::{SumdbFile, Tree};
use crate::state::{PublishedFiles, RecordRow, StateError, Store};
use crate::verify::sumdb::client::{open_head, SignedHead};
use crate::verify::sumdb::local::LocalTiles;
use crate::verify::sumdb::note::Verifier;
use crate::verify::sumdb::tile::Tile;
use crate::verify::sumdb::tlog::{format_hash, Hash};
use crate::verify::sumdb::{parse_lookup, parse_record_hashes};

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
/// GOPROXY path can name.
pub const MOVED_DIR: &str = ".gomirror-moved";

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    /// Moving an altered file aside failed; the ones moved before stay moved.
    #[error("moving {} aside", .path.display())]
    Move {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// How `gomirror verify` runs beyond its config.
#[derive(Debug, Clone, Copy, Default)]
pub struct AuditOptions {
    /// Move each altered file of a published version aside (into
    /// [`MOVED_DIR`]), so the next sync restores it from upstream,
    /// re-verified against the hashes recorded at publish.
    pub repair: bool,
}

/// Checks the whole tree; a finding is data, an error means it could not run.
pub async fn audit(config: &Config) -> Result<AuditReport, AuditError> {
    audit_with(config, AuditOptions::default()).await
}

/// [`audit`], with [`AuditOptions`]. The run lock is held throughout, so
/// files are moved aside only while no sync runs.
pub async fn audit_with(config: &Config, options: AuditOptions) -> Result<AuditReport, AuditError> {
    let tree = Tree::new(&config.tree_dir);
    // Shared and read-only: verify works on a read-only tree. See: #13
    let _lock = RunLock::acquire_shared(&tree.lock_file())?;
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
    let (found, by_content) = check_files(&tree, &files).await;
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
    let whole = check_whole_tree(&tree, files, pending, skip).await;
    report.problems.extend(whole);
    if let Some(settings) = config.sumdb.as_ref().filter(|s| s.offline_copy) {
        let (tree, settings, rows) = (tree.clone(), settings.clone(), rows.clone());
        let copy = tokio::task::spawn_blocking(move || {
            OfflineCopy::new(&tree, &settings, &settings.verifier).check(&rows)
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
    if options.repair {
        move_aside(&tree, &mut report)?;
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

/// Moves every altered file the report names to
/// `<tree>/.gomirror-moved/<UTC time>/<its path>`: a rename within the
/// tree, so nothing is copied and nothing is lost. The name becomes free,
/// and a sync fills it only with the bytes that were published (see: #13).
fn move_aside(tree: &Tree, report: &mut AuditReport) -> Result<(), AuditError> {
    let altered: Vec<String> = report
        .problems
        .iter()
        .filter_map(|f| f.altered.clone())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    if altered.is_empty() {
        return Ok(());
    }
    let stamp = time::OffsetDateTime::now_utc()
        .format(time::macros::format_description!(
            "[year][month][day]T[hour][minute][second]Z"
        ))
        .expect("a UTC time formats");
    let dir = tree.root().join(MOVED_DIR).join(stamp);
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

/// Re-hashes every published version's files, a core's worth at a time.
/// Also returns how many `.info` files were checked by content only.
async fn check_files(tree: &Tree, rows: &[PublishedFiles]) -> (Vec<Finding>, usize) {
    let parallel = std::thread::available_parallelism().map_or(2, |n| n.get());
    let tree = Arc::new(tree.clone());
    let checked: Vec<(Vec<Finding>, bool)> = stream::iter(rows.iter().cloned())
        .map(|row| {
            let tree = tree.clone();
            async move {
                tokio::task::spawn_blocking(move || tree::check_version_files(&tree, &row))
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

/// Reads a tile of the offline copy.
type TileLoader<'a> = Box<dyn FnMut(&Tile) -> Result<Option<Vec<u8>>, String> + 'a>;

/// The offline checksum database as a go client would read it: only files
/// of the tree.
struct OfflineCopy<'a> {
    tree: &'a Tree,
    settings: &'a SumdbSettings,
    verifier: &'a Verifier,
    tiles: LocalTiles<TileLoader<'a>>,
    /// Heads proved consistent with the pinned one.
    consistent: HashSet<(i64, Hash)>,
    report: AuditReport,
}

impl<'a> OfflineCopy<'a> {
    fn new(tree: &'a Tree, settings: &'a SumdbSettings, verifier: &'a Verifier) -> Self {
        OfflineCopy {
            tree,
            settings,
            verifier,
            tiles: LocalTiles::new(Box::new(|t: &Tile| {
                crate::publish::read_sumdb_tile(tree, &settings.name, t)
            })),
            consistent: HashSet::new(),
            report: AuditReport::default(),
        }
    }

    fn file(&self, file: SumdbFile<'_>) -> PathBuf {
        self.tree.sumdb_file(&self.settings.name, file)
    }

    fn problem(&mut self, subject: impl Into<String>, problem: impl Into<String>) {
        self.report.problems.push(finding(subject, problem));
    }

    fn check(mut self, rows: &[RecordRow]) -> AuditReport {
        self.report.supported = self.file(SumdbFile::Supported).is_file();
        let latest_path = self.file(SumdbFile::Latest);
        let pin = match fs_err::read(&latest_path) {
            Ok(note) => open_head(self.verifier, &note, "latest"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !self.report.supported => {
                // No copy yet (nothing verified was published).
                return self.report;
            }
            Err(e) => {
                self.problem(latest_path.display().to_string(), e.to_string());
                return self.report;
            }
        };
        let pin = match pin {
            Ok(pin) => pin,
            Err(e) => {
                self.problem(latest_path.display().to_string(), e.to_string());
                return self.report;
            }
        };
        self.report.pinned_tree = Some(pin.tree.n);
        self.consistent.insert((pin.tree.n, pin.tree.hash));
        for row in rows
            .iter()
            .filter(|r| !self.settings.is_private(r.mv.path.as_str()))
        {
            self.check_lookup(&pin, row);
        }
        self.report
    }

    fn check_lookup(&mut self, pin: &SignedHead, row: &RecordRow) {
        let (mv, subject) = (&row.mv, row.mv.to_string());
        let path = self.file(SumdbFile::Lookup(mv));
        let body = match fs_err::read(&path) {
            Ok(body) => body,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && row.record_id.is_none() => {
                if self.report.supported {
                    self.problem(
                        subject,
                        "lookup: missing, and `supported` is served: go fails",
                    );
                }
                return;
            }
            Err(e) => return self.problem(subject, format!("lookup: {e}")),
        };
        if let Err(e) = self.prove_lookup(pin, mv, row, &body) {
            self.problem(subject, format!("lookup: {e}"));
        } else {
            self.report.lookups += 1;
        }
    }

    fn prove_lookup(
        &mut self,
        pin: &SignedHead,
        mv: &ModVer,
        row: &RecordRow,
        body: &[u8],
    ) -> Result<(), String> {
        let lookup = parse_lookup(mv, body).map_err(|e| e.to_string())?;
        if row.record_id.is_some_and(|id| id != lookup.id) {
            return Err(format!(
                "record id {}, recorded {}",
                lookup.id,
                row.record_id.unwrap_or_default()
            ));
        }
        let hashes = parse_record_hashes(mv, &lookup.text).map_err(|e| e.to_string())?;
        if (hashes.h1_zip.as_str(), hashes.h1_mod.as_str()) != (&row.h1_zip, &row.h1_mod) {
            return Err(format!(
                "record says {} and {}, recorded {} and {}",
                hashes.h1_zip, hashes.h1_mod, row.h1_zip, row.h1_mod
            ));
        }
        let head = open_head(self.verifier, &lookup.note, "signed tree head")
            .map_err(|e| e.to_string())?;
        if head.tree.n > pin.tree.n {
            return Err(format!(
                "signed with tree {}, newer than latest (tree {})",
                head.tree.n, pin.tree.n
            ));
        }
        if !self.consistent.contains(&(head.tree.n, head.tree.hash)) {
            self.tiles.check_tree(&head.tree, &pin.tree).map_err(|e| {
                format!(
                    "tree {} ({}) is not consistent with latest: {e}",
                    head.tree.n,
                    format_hash(&head.tree.hash)
                )
            })?;
            self.consistent.insert((head.tree.n, head.tree.hash));
        }
        self.tiles.check_record(&pin.tree, lookup.id, &lookup.text)
    }
}
