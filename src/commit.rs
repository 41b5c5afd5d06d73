//! The commit step: how verified, staged versions become visible in the
//! served tree and are recorded in state. Every way of publishing — a sync
//! batch, an import — ends here; this is the only module that knows the
//! order (STYLE.md §8 "One place commits"):
//!
//! 1. [`prepare`], writing nothing: every final name of the batch — module
//!    files, lookups, tiles — is checked (`publish::check_staged`,
//!    `publish::check_sumdb`). A version whose files clash with published
//!    ones is a [`Conflict`]: a sync quarantines that version, an import
//!    refuses the whole bundle; either way nothing of it is written.
//! 2. [`Prepared::apply`]:
//!    1. state: the checksum-database head the records are under is saved;
//!       another head of the same size is a fork, and the batch stops;
//!    2. tree: tiles and lookups; module files (barrier, `.mod`/`.zip`,
//!       barrier, `.info`); then together each touched module's `@v/list`
//!       and `@latest` (the versions state has published plus the batch's)
//!       and the offline copy's `latest` (the newest pinned head) and
//!       `supported` (once every published version it covers has a lookup);
//!    3. state: every outcome with the record ids, in one transaction.
//!
//! [`rewrite_lists`] is step 2.2's list write alone, for a sync that finds
//! a module's lists missing or edited; a missing file of a published
//! version is restored by an ordinary [`commit`] of its re-fetched,
//! re-verified files (a name that holds them already is left as it is).
//!
//! [`unpublish`] is the same order in reverse, for a prune (see: #15):
//! state first (the versions `pruning`, so no list names them again), then
//! the lists, a wait longer than clients may cache them, `.info`, barrier,
//! `.mod`/`.zip`, barrier, and state last (`pruned`). Lookups, tiles and the
//! offline copy's `latest`/`supported` are never removed.
//!
//! Killed anywhere, the tree lists no version without its files and
//! lookup, and state names a version published only once it is listed: a
//! later run finds identical files in place and completes the version.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use bytes::Bytes;

use crate::config::SumdbSettings;
use crate::error::{blocking, TaskError};
use crate::module::{ModVer, ModulePath, Version};
use crate::publish::{self, Metadata, Staged, SumdbHead, Tree, WriteError};
use crate::state::{
    OpenPrune, Outcome, OutcomeKind, PruneCursor, PruneId, PublishedInfo, RecordId, StateError,
    Store, StoredHead, ZipInfo,
};
use crate::verify::sumdb::client::SignedHead;
use crate::verify::sumdb::tile::Tile;
use crate::verify::sumdb::tlog::format_hash;

/// What one commit makes visible and records.
#[derive(Default)]
pub struct Batch {
    /// Verified versions, written beside their final names.
    pub staged: Vec<Staged>,
    /// The checksum database's records of the staged versions (or, for a
    /// backfill, of versions published before); `None` when the database
    /// is off or every version is private.
    pub records: Option<Records>,
}

/// Checksum-database records, all under one verified head.
pub struct Records {
    pub db: SumdbSettings,
    /// The head the records were proved against: the offline copy's pin.
    pub head: SignedHead,
    /// Record id per version.
    pub ids: Vec<RecordId>,
    /// What the tree's offline copy needs for them; `None` when
    /// `[sumdb] offline_copy` is off (the head and ids go to state only).
    pub offline: Option<OfflineCopy>,
}

/// Tiles the pinned head needs that the tree lacks, and one lookup body
/// (`record` + the pinned head's note) per version.
pub struct OfflineCopy {
    pub tiles: Vec<(Tile, Bytes)>,
    pub lookups: Vec<(ModVer, Vec<u8>)>,
}

/// A staged version whose files clash with published ones.
#[derive(Debug, thiserror::Error)]
#[error("{mv}: {error}")]
pub struct Conflict {
    pub mv: ModVer,
    /// Always [`WriteError::Conflict`]: names the file and both sha256s.
    pub error: WriteError,
}

/// Why a commit stopped. Nothing of the batch is listed or recorded as
/// published; its versions stay as they were (a sync's stay pending).
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    #[error(transparent)]
    State(#[from] StateError),
    /// The tree took no more writes (full disk, read-only), or a lookup or
    /// tile clashes with a published one.
    #[error("publishing")]
    Publish(#[source] WriteError),
    /// State holds another head of this size: two logs under one name.
    #[error(
        "SECURITY ERROR: checksum database {db}: tree head {size} {hash} is verified, \
         but a different head of that size is stored"
    )]
    Fork { db: String, size: i64, hash: String },
    /// A blocking task panicked: a bug, reported instead of crashing.
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// A batch whose every final name was checked: nothing is written yet.
pub struct Prepared {
    staged: Vec<Staged>,
    conflicts: Vec<Conflict>,
    /// Versions that could not be checked (an I/O error of their own).
    failed: Vec<Outcome>,
    records: Option<Records>,
    /// `supported` is served already (it never goes away).
    supported: bool,
}

/// [`prepare`], then [`Prepared::apply`]: the commit of a sync batch, whose
/// conflicting versions are quarantined.
pub async fn commit(tree: &Tree, store: &Store, batch: Batch) -> Result<Vec<Outcome>, CommitError> {
    prepare(tree, batch).await?.apply(tree, store).await
}

/// Step 1: checks every final name of `batch`, writing nothing. A lookup
/// or tile that clashes fails the whole batch; a version's clash is a
/// [`Conflict`] of that version.
pub async fn prepare(tree: &Tree, batch: Batch) -> Result<Prepared, CommitError> {
    let tree = tree.clone();
    blocking("checking the batch", move || {
        let Batch { staged, records } = batch;
        if let Some(r) = &records {
            if let Some(copy) = &r.offline {
                publish::check_sumdb(&tree, &r.db.name, &copy.tiles, &copy.lookups)
                    .map_err(CommitError::Publish)?;
            }
        }
        let supported = match &records {
            Some(r) => SumdbHead::is_supported(&tree, &r.db.name).map_err(CommitError::Publish)?,
            None => false,
        };
        let mut prepared = Prepared {
            staged: Vec::with_capacity(staged.len()),
            conflicts: Vec::new(),
            failed: Vec::new(),
            supported,
            records,
        };
        for (s, result) in publish::check_all_staged(&tree, staged) {
            let mv = s.checked().mv().clone();
            match result {
                Ok(()) => prepared.staged.push(s),
                Err(error @ WriteError::Conflict { .. }) => {
                    prepared.conflicts.push(Conflict { mv, error })
                }
                Err(e) if e.is_fatal() => return Err(CommitError::Publish(e)),
                Err(e) => prepared.failed.push(Outcome {
                    mv,
                    kind: failed(&e),
                }),
            }
        }
        Ok(prepared)
    })
    .await?
}

impl Prepared {
    /// The staged versions whose files clash with published ones.
    pub fn conflicts(&self) -> &[Conflict] {
        &self.conflicts
    }

    /// Gives the batch up, with its clashes.
    pub fn into_conflicts(self) -> Vec<Conflict> {
        self.conflicts
    }

    /// Step 2: makes the batch visible, in order, and records it. Returns
    /// the outcome of every staged version: published, quarantined for a
    /// [`Conflict`], or failed for an error of its own.
    pub async fn apply(self, tree: &Tree, store: &Store) -> Result<Vec<Outcome>, CommitError> {
        let Prepared {
            staged,
            conflicts,
            failed,
            records,
            supported,
        } = self;
        let mut outcomes = failed;
        for c in conflicts {
            // Upstream now serves other bytes for a published version.
            tracing::error!(mv = %c.mv, "ALARM: {}", c.error);
            outcomes.push(Outcome {
                mv: c.mv,
                kind: OutcomeKind::Quarantined {
                    reason: format!("published files differ from upstream: {}", c.error),
                },
            });
        }
        let head = match &records {
            Some(r) => save_head(store, r, supported).await?,
            None => None,
        };
        let before = published_before(store, &staged).await?;
        let tree = tree.clone();
        let (placed, files) = blocking("publishing the batch", move || {
            write_tree(&tree, staged, records, before, head)
        })
        .await?;
        outcomes.extend(placed);
        let (ids, written) = match files {
            Ok(ids) => (ids, Ok(())),
            Err(e) => (None, Err(CommitError::Publish(e))),
        };
        store.record_commit(outcomes.clone(), ids).await?;
        written?;
        Ok(outcomes)
    }
}

/// Step 2.1: saves the head the records are under; returns what the offline
/// copy's `latest` and `supported` become after this batch, if it has one.
async fn save_head(
    store: &Store,
    r: &Records,
    supported: bool,
) -> Result<Option<SumdbHead>, CommitError> {
    let db = &r.db.name;
    let head = StoredHead {
        size: r.head.tree.n,
        hash: format_hash(&r.head.tree.hash),
        note: r.head.note.to_vec(),
        pinned: r.offline.is_some(),
    };
    if !store.save_sumdb_head(db, head).await? {
        return Err(CommitError::Fork {
            db: db.clone(),
            size: r.head.tree.n,
            hash: format_hash(&r.head.tree.hash),
        });
    }
    if r.offline.is_none() {
        return Ok(None);
    }
    // `latest` names the newest pinned head: a bundle may carry an older one.
    let note = match store.pinned_sumdb_heads(db).await?.pop() {
        Some(newest) if newest.size > r.head.tree.n => newest.note,
        _ => r.head.note.to_vec(),
    };
    let complete = supported || {
        let batch: HashSet<&ModVer> = r.ids.iter().map(|r| &r.mv).collect();
        store
            .published_without_record(db)
            .await?
            .iter()
            .filter(|row| !r.db.is_private(row.mv.path.as_str()))
            .all(|row| batch.contains(&row.mv))
    };
    Ok(Some(SumdbHead {
        name: db.clone(),
        note,
        complete,
    }))
}

/// Published versions of the modules `staged` touches: the lists are
/// rewritten from these plus the batch's.
async fn published_before(
    store: &Store,
    staged: &[Staged],
) -> Result<BTreeMap<ModulePath, BTreeSet<Version>>, CommitError> {
    let paths: Vec<ModulePath> = staged
        .iter()
        .map(|s| s.checked().mv().path.clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let mut before: BTreeMap<ModulePath, BTreeSet<Version>> = BTreeMap::new();
    if paths.is_empty() {
        return Ok(before);
    }
    for mv in store.published_set(&paths).await? {
        before.entry(mv.path).or_default().insert(mv.version);
    }
    Ok(before)
}

/// What [`write_tree`] leaves for state: the database and the record ids
/// to store, once the outcomes are.
type Written = Option<(String, Vec<RecordId>)>;

/// Step 2.2, blocking. Returns each staged version's outcome, and either
/// the record ids to store or the error that stopped the writes (versions
/// not placed by then have no outcome: they stay as they were).
fn write_tree(
    tree: &Tree,
    staged: Vec<Staged>,
    records: Option<Records>,
    mut lists: BTreeMap<ModulePath, BTreeSet<Version>>,
    head: Option<SumdbHead>,
) -> (Vec<Outcome>, Result<Written, WriteError>) {
    let mut outcomes = Vec::with_capacity(staged.len());
    let written = (|| {
        let mut ids = None;
        if let Some(r) = records {
            if let Some(copy) = &r.offline {
                publish::place_sumdb(tree, &r.db.name, &copy.tiles, &copy.lookups)?;
            }
            ids = Some((r.db.name, r.ids));
        }
        let mut touched = BTreeSet::new();
        let mut infos = HashMap::new();
        for (mut s, result) in publish::place(tree, staged)? {
            let mv = s.checked().mv().clone();
            if let Some(body) = s.take_served_info() {
                infos.insert(mv.clone(), body);
            }
            let kind = match result {
                // A version published for its go.mod only stays out of the lists.
                Ok(()) if s.checked().zip().is_none() => OutcomeKind::Published(published_info(&s)),
                Ok(()) => {
                    lists
                        .entry(mv.path.clone())
                        .or_default()
                        .insert(mv.version.clone());
                    touched.insert(mv.path.clone());
                    OutcomeKind::Published(published_info(&s))
                }
                Err(e @ WriteError::Conflict { .. }) => {
                    tracing::error!(mv = %mv, "ALARM: {e}");
                    OutcomeKind::Quarantined {
                        reason: format!("published files differ from upstream: {e}"),
                    }
                }
                Err(e) => failed(&e),
            };
            outcomes.push(Outcome { mv, kind });
        }
        let modules = lists
            .into_iter()
            .filter(|(path, _)| touched.contains(path))
            .map(|(path, versions)| (path, versions.into_iter().collect()))
            .collect();
        Metadata {
            modules,
            sumdb: head,
            infos,
        }
        .write(tree)?;
        Ok(ids)
    })();
    if written.is_err() {
        // Placed but not listed: not published. The versions stay as they
        // were, and a later run finds their files in place.
        outcomes.retain(|o| !matches!(o.kind, OutcomeKind::Published(_)));
    }
    (outcomes, written)
}

/// Rewrites `paths`' `@v/list` and `@latest` from the versions state has
/// published — step 2.2's list write alone, for lists found missing or
/// edited (see: #13). Every listed version's files are in place already;
/// nothing is recorded, since state is what the lists are made from.
pub async fn rewrite_lists(
    tree: &Tree,
    store: &Store,
    paths: Vec<ModulePath>,
) -> Result<(), CommitError> {
    let mut modules: BTreeMap<ModulePath, Vec<Version>> =
        paths.iter().map(|p| (p.clone(), Vec::new())).collect();
    for mv in store.published_set(&paths).await? {
        modules.entry(mv.path).or_default().push(mv.version);
    }
    let tree = tree.clone();
    blocking("rewriting lists", move || {
        Metadata {
            modules: modules.into_iter().collect(),
            sumdb: None,
            ..Metadata::default()
        }
        .write(&tree)
    })
    .await?
    .map_err(CommitError::Publish)
}

/// What [`unpublish`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unpublished {
    /// Every version's files are gone and state says `pruned`.
    Done { files: usize },
    /// Stopped during the wait: the lists no longer name the versions, the
    /// files are still there; the next prune waits only the remainder.
    Interrupted,
}

/// How much longer than the lists' `max-age` a prune waits: the recorded
/// time is whole seconds, rounded down, and clocks of caches drift.
pub const LIST_AGE_MARGIN: std::time::Duration = std::time::Duration::from_secs(2);

/// How many modules' lists one step of [`unpublish`] rewrites, and how
/// many versions' files one step removes: what a prune holds at a time,
/// whatever its size (each list step costs two barriers).
const UNPUBLISH_CHUNK: usize = 2048;

/// Steps 2–5 of a prune whose versions state holds `pruning` (step 1,
/// `Store::begin_prune`): rewrites the touched modules' lists from the
/// versions state has published (a module with none left loses both, so
/// clients fall through), records when; waits until `list_max_age` plus
/// [`LIST_AGE_MARGIN`] has passed since then (only the remainder, for a
/// prune a kill interrupted); removes `.info`, barrier, `.mod` and `.zip`,
/// barrier; records them `pruned`. Modules and versions are read from
/// state [`UNPUBLISH_CHUNK`] at a time, each step as it goes.
pub async fn unpublish(
    tree: &Tree,
    store: &Store,
    open: OpenPrune,
    list_max_age: std::time::Duration,
    token: &tokio_util::sync::CancellationToken,
) -> Result<Unpublished, CommitError> {
    let rewritten = match &open.lists_rewritten_at {
        Some(at) => at.clone(),
        None => {
            // A kill between chunks leaves some lists rewritten and none
            // recorded: the next prune rewrites them all again, from state.
            let paths = store.prune_modules(open.id).await?;
            for chunk in paths.chunks(UNPUBLISH_CHUNK) {
                rewrite_or_remove_lists(tree, store, chunk.to_vec()).await?;
            }
            drop(paths);
            test_kill_point("lists");
            store.lists_rewritten(open.id).await?
        }
    };
    let since = crate::plan::retention::parse_time(&rewritten)
        .map_or(std::time::SystemTime::now(), std::time::SystemTime::from);
    let until = since + list_max_age + LIST_AGE_MARGIN;
    if let Ok(left) = until.duration_since(std::time::SystemTime::now()) {
        tracing::info!(wait = ?left, "waiting for clients' cached lists to expire");
        tokio::select! {
            () = tokio::time::sleep(left) => {}
            () = token.cancelled() => return Ok(Unpublished::Interrupted),
        }
    }
    use publish::Kind;
    // `.info` first: it is what makes `go` believe a version exists.
    let mut files = remove_files(tree, store, open.id, &[Kind::Info]).await?;
    test_kill_point("info");
    files += remove_files(tree, store, open.id, &[Kind::Mod, Kind::Zip]).await?;
    test_kill_point("files");
    store.finish_prune(open.id).await?;
    Ok(Unpublished::Done { files })
}

/// Removes the `kinds` files of every version prune `id` holds `pruning`,
/// a page at a time, then a barrier; returns how many were there.
async fn remove_files(
    tree: &Tree,
    store: &Store,
    id: PruneId,
    kinds: &'static [publish::Kind],
) -> Result<usize, CommitError> {
    let (mut from, mut files) = (PruneCursor::default(), 0);
    loop {
        let (versions, next) = store.prune_page(id, from, UNPUBLISH_CHUNK).await?;
        let tree = tree.clone();
        files += blocking("removing pruned files", move || {
            publish::remove_version_files(&tree, &versions, kinds)
        })
        .await?
        .map_err(CommitError::Publish)?;
        match next {
            Some(next) => from = next,
            None => break,
        }
    }
    let tree = tree.clone();
    blocking("removing pruned files", move || {
        publish::atomic::barrier(tree.root())
    })
    .await?
    .map_err(CommitError::Publish)?;
    Ok(files)
}

/// [`rewrite_lists`], except that a module with no published version left
/// loses its `@v/list` and `@latest` instead of listing nothing.
async fn rewrite_or_remove_lists(
    tree: &Tree,
    store: &Store,
    paths: Vec<ModulePath>,
) -> Result<(), CommitError> {
    let lists = store.published_lists(paths).await?;
    let tree = tree.clone();
    blocking("rewriting lists", move || {
        let (modules, empty): (Vec<_>, Vec<_>) = lists
            .into_iter()
            .partition(|(_, versions)| !versions.is_empty());
        Metadata {
            modules,
            sumdb: None,
            ..Metadata::default()
        }
        .write(&tree)?;
        for (path, _) in &empty {
            publish::remove_lists(&tree, path)?;
        }
        publish::atomic::barrier(tree.root())
    })
    .await?
    .map_err(CommitError::Publish)
}

/// Test seam: `GOMIRROR_TEST_PRUNE_KILL_AT=<point>` aborts the process at
/// `point` of [`unpublish`] (`lists`: rewritten, not yet recorded; `info`:
/// `.info` removed; `files`: every file removed, state not yet `pruned`), as
/// `kill -9` would. Read nowhere else.
fn test_kill_point(point: &str) {
    if std::env::var("GOMIRROR_TEST_PRUNE_KILL_AT").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

/// What state records for a version placed in the tree.
pub fn published_info(s: &Staged) -> PublishedInfo {
    let v = s.checked();
    PublishedInfo {
        info_size: s.info_size(),
        mod_size: v.mod_size(),
        h1_mod: v.h1_mod().to_owned(),
        info_sha256: hex::encode(s.info_sha256()),
        mod_sha256: hex::encode(v.mod_sha256()),
        time: v.time().unwrap_or_default().to_owned(),
        zip: v.zip().map(|z| ZipInfo {
            size: z.size,
            h1: z.h1.clone(),
            sha256: hex::encode(z.sha256),
        }),
    }
}

fn failed(e: &WriteError) -> OutcomeKind {
    OutcomeKind::Failed {
        error: crate::error::chain(e),
    }
}
