//! Repair: what a sync puts back of the published tree (see: #13).
//!
//! For the modules a run looks at (every watched module with the feed off;
//! with it on, those listed this run and the feed's), [`survey`] finds
//! published versions with a missing `.info`, `.mod` or `.zip`, and
//! modules whose `@v/list` or `@latest` is missing or not what the state
//! derives. [`restore`] then:
//!
//! 1. fetches each such version again and verifies it like any other
//!    (`version::process`); its hashes must equal what state recorded at
//!    publish — anything else is an alarm, and nothing of it is written;
//! 2. commits the re-verified versions through `commit::commit`, which
//!    fills in only the missing names (a name that holds the same bytes
//!    stays; one that holds other bytes is a clash, as ever) and rewrites
//!    their modules' lists;
//! 3. rewrites the remaining stale lists from the state
//!    (`commit::rewrite_lists`).
//!
//! A file that is present but altered is not replaced here — a published
//! name never changes under a sync. `gomirror verify` names it; once the
//! operator removes it, the next sync restores it this way.

use std::collections::{BTreeMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use sha2::{Digest, Sha256};
use tracing::{error, info, warn};

use super::{blocking, chain, version, Ctx, Finished, SyncError};
use crate::commit::{self, Batch};
use crate::module::{ModVer, ModulePath, Version};
use crate::plan::{Job, Want};
use crate::publish::{module_metadata, Kind, Staged, Tree};
use crate::state::{OutcomeKind, PublishedFiles};

/// What [`survey`] found missing or stale.
#[derive(Debug, Default)]
pub(super) struct Survey {
    /// Published versions with at least one file missing.
    missing: Vec<PublishedFiles>,
    /// Modules whose `@v/list` or `@latest` is missing or stale.
    stale: Vec<ModulePath>,
}

impl Survey {
    pub(super) fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.stale.is_empty()
    }
}

/// What the repair step did, for the run's report.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct RepairReport {
    /// Versions whose missing files were fetched, re-verified and put back.
    #[serde(serialize_with = "as_strings")]
    pub restored: Vec<ModVer>,
    /// Modules whose `@v/list` and `@latest` were rewritten from the state.
    #[serde(serialize_with = "as_strings")]
    pub lists_rewritten: Vec<ModulePath>,
    /// What could not be restored, and why (exit 1).
    pub problems: Vec<String>,
}

/// Finds what is missing or stale among `rows` (blocking: it stats files).
/// Cheap by design: no file is read but the lists.
pub(super) fn survey(tree: &Tree, rows: &[PublishedFiles]) -> Survey {
    if let Some(b) = tree.bucket() {
        return survey_bucket(b, rows);
    }
    let mut survey = Survey::default();
    let mut modules: BTreeMap<&ModulePath, Vec<Version>> = BTreeMap::new();
    for row in rows {
        if row.zip.is_some() {
            modules
                .entry(&row.mv.path)
                .or_default()
                .push(row.mv.version.clone());
        }
        let kinds = [Kind::Info, Kind::Mod]
            .into_iter()
            .chain(row.zip.as_ref().map(|_| Kind::Zip));
        let missing = kinds.into_iter().any(|k| {
            matches!(
                std::fs::symlink_metadata(tree.version_file(&row.mv, k)),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound
            )
        });
        if missing {
            survey.missing.push(row.clone());
        }
    }
    for (path, versions) in modules {
        let (list, latest) = module_metadata(path, &versions);
        let list_ok = std::fs::read(tree.list_file(path)).is_ok_and(|b| b == list);
        // `@latest` is a link to the latest version's `.info`: the same inode.
        let latest_ok = latest.is_none_or(|mv| {
            let inode = |p: &std::path::Path| std::fs::metadata(p).map(|m| (m.dev(), m.ino()));
            matches!(
                (inode(&tree.latest_file(path)), inode(&tree.version_file(&mv, Kind::Info))),
                (Ok(a), Ok(b)) if a == b
            )
        });
        if !(list_ok && latest_ok) {
            survey.stale.push(path.clone());
        }
    }
    survey
}

/// [`survey`] of a bucket tree: a HEAD per file (its sha256 is metadata),
/// a GET per list, [`crate::publish::bucket::PUTS_IN_FLIGHT`] at once. A
/// request that fails counts as nothing missing: the next commit would
/// fail on the same store, and the next sync surveys again.
fn survey_bucket(b: &crate::publish::bucket::Bucket, rows: &[PublishedFiles]) -> Survey {
    use crate::publish::layout::{latest_rel, list_rel, version_rel};
    let mut survey = Survey::default();
    let kinds = |row: &PublishedFiles| {
        let zip = row.zip.as_ref().map(|_| Kind::Zip);
        [Some(Kind::Info), Some(Kind::Mod), zip]
            .into_iter()
            .flatten()
    };
    let rels: Vec<String> = rows
        .iter()
        .flat_map(|row| kinds(row).map(|k| version_rel(&row.mv, k)))
        .collect();
    let mut found = b.sha256_all(&rels).into_iter();
    for row in rows {
        let missing = kinds(row).fold(false, |missing, _| {
            missing | matches!(found.next(), Some(Ok(None)))
        });
        if missing {
            survey.missing.push(row.clone());
        }
    }
    let mut modules: BTreeMap<&ModulePath, Vec<Version>> = BTreeMap::new();
    for row in rows.iter().filter(|r| r.zip.is_some()) {
        modules
            .entry(&row.mv.path)
            .or_default()
            .push(row.mv.version.clone());
    }
    // Per module: its list, and its `@latest` with the latest version's
    // `.info` (the same bytes, so the same sha256).
    let mut rels = Vec::with_capacity(3 * modules.len());
    let mut want = Vec::with_capacity(modules.len());
    for (path, versions) in &modules {
        let (list, latest) = module_metadata(path, versions);
        rels.push(list_rel(path));
        if let Some(mv) = &latest {
            rels.push(latest_rel(path));
            rels.push(version_rel(mv, Kind::Info));
        }
        want.push((*path, list, latest.is_some()));
    }
    let mut got = b.sha256_all(&rels).into_iter();
    for (path, list, has_latest) in want {
        // An error is not evidence of anything: `None`, counted as fine.
        let mut next = || got.next().and_then(Result::ok);
        let list_ok = next().is_none_or(|sha| sha == Some(Sha256::digest(&list).into()));
        let latest_ok = !has_latest
            || match (next(), next()) {
                (Some(latest), Some(Some(info))) => latest == Some(info),
                _ => true,
            };
        if !(list_ok && latest_ok) {
            survey.stale.push(path.clone());
        }
    }
    survey
}

/// Surveys the published versions of `paths`.
pub(super) async fn survey_paths(ctx: &Ctx, paths: &[ModulePath]) -> Result<Survey, SyncError> {
    if paths.is_empty() {
        return Ok(Survey::default());
    }
    let rows = ctx.store.published_files(Some(paths)).await?;
    let tree = ctx.tree.clone();
    blocking("surveying published files", move || survey(&tree, &rows)).await
}

/// Puts back what `survey` found, in the order the module doc gives.
pub(super) async fn restore(ctx: &Arc<Ctx>, survey: Survey) -> Result<RepairReport, SyncError> {
    let mut report = RepairReport::default();
    let staged = refetch(ctx, &survey, &mut report).await?;
    let restored_modules = commit_restored(ctx, staged, &mut report).await?;
    let restored: HashSet<&ModVer> = report.restored.iter().collect();
    // A module still missing a file keeps its lists until it is restored:
    // they would name (or link) the missing file. The restored versions'
    // commit rewrote their modules' lists already.
    let unrestored: HashSet<&ModulePath> = survey
        .missing
        .iter()
        .map(|r| &r.mv)
        .filter(|mv| !restored.contains(mv))
        .map(|mv| &mv.path)
        .collect();
    let mut problems = Vec::new();
    let mut stale = Vec::new();
    for path in &survey.stale {
        if unrestored.contains(path) {
            problems.push(format!(
                "{path}: @v/list and @latest not rewritten: files of its versions are missing"
            ));
        } else if !restored_modules.contains(path) {
            stale.push(path.clone());
        }
    }
    for problem in problems {
        warn!("{problem}");
        report.problems.push(problem);
    }
    rewrite_stale(ctx, stale, &mut report).await;
    report.lists_rewritten.extend(restored_modules);
    report.lists_rewritten.sort();
    Ok(report)
}

/// Step 1: fetches and verifies each version with a missing file; returns
/// those identical to what was published. Others are problems (and an
/// alarm when upstream serves other bytes).
async fn refetch(
    ctx: &Arc<Ctx>,
    survey: &Survey,
    report: &mut RepairReport,
) -> Result<Vec<Staged>, SyncError> {
    let results: Vec<(PublishedFiles, Finished)> = stream::iter(survey.missing.clone())
        .map(|row| async move {
            let want = match row.zip {
                Some(_) => Want::Files,
                None => Want::GoMod,
            };
            let job = Job {
                mv: row.mv.clone(),
                want,
            };
            let finished = version::process(ctx.clone(), job).await;
            (row, finished)
        })
        .buffer_unordered(ctx.window.max(1))
        .collect()
        .await;
    let mut staged = Vec::new();
    for (row, finished) in results {
        let problem = match finished {
            Finished::Staged(s) => match same_as_recorded(&s.0, &row) {
                Ok(()) => {
                    staged.push(s.0);
                    continue;
                }
                Err(why) => {
                    error!(mv = %row.mv, "ALARM: upstream now serves {why}");
                    format!(
                        "{}: missing files not restored: upstream now serves {why}",
                        row.mv
                    )
                }
            },
            Finished::Done { mv, kind } => {
                let problem = format!("{mv}: missing files not restored: {}", reason(&kind));
                warn!("{problem}");
                problem
            }
            Finished::Cancelled => continue,
            Finished::Fatal(e) => return Err(SyncError::Publish(e)),
            Finished::Forked(e) => return Err(SyncError::Sumdb(Box::new(e))),
            Finished::Panicked(source) => {
                let task = "version task";
                return Err(crate::error::TaskError { task, source }.into());
            }
        };
        report.problems.push(problem);
    }
    Ok(staged)
}

/// Step 2: the commit step fills in the missing names; returns the
/// modules whose lists it rewrote.
async fn commit_restored(
    ctx: &Ctx,
    staged: Vec<Staged>,
    report: &mut RepairReport,
) -> Result<HashSet<ModulePath>, SyncError> {
    let mut modules = HashSet::new();
    if staged.is_empty() {
        return Ok(modules);
    }
    let batch = Batch {
        staged,
        records: None,
    };
    let outcomes = commit::commit(&ctx.tree, &ctx.store, batch)
        .await
        .map_err(|e| SyncError::Commit(Box::new(e)))?;
    for o in outcomes {
        match o.kind {
            OutcomeKind::Published(_) => {
                info!(mv = %o.mv, "restored the missing files of a published version");
                modules.insert(o.mv.path.clone());
                report.restored.push(o.mv);
            }
            kind => {
                let problem = format!("{}: missing files not restored: {}", o.mv, reason(&kind));
                warn!("{problem}");
                report.problems.push(problem);
            }
        }
    }
    Ok(modules)
}

/// Step 3: the other stale lists, rewritten from the state.
async fn rewrite_stale(ctx: &Ctx, stale: Vec<ModulePath>, report: &mut RepairReport) {
    if stale.is_empty() {
        return;
    }
    match commit::rewrite_lists(&ctx.tree, &ctx.store, stale.clone()).await {
        Ok(()) => {
            for path in &stale {
                info!(module = %path, "rewrote @v/list and @latest from the state");
            }
            report.lists_rewritten = stale;
        }
        Err(e) => {
            warn!("rewriting lists: {}", chain(&e));
            report
                .problems
                .push(format!("rewriting @v/list and @latest: {}", chain(&e)));
        }
    }
}

/// A re-fetched version must be the one published: the same zip bytes,
/// the same `h1:` hashes, and (where state recorded them) the same `.mod`
/// and `.info` bytes.
fn same_as_recorded(s: &Staged, row: &PublishedFiles) -> Result<(), String> {
    let v = s.checked();
    if let Some(recorded) = &row.zip {
        let zip = v.zip().ok_or("no zip was fetched")?;
        let zip_sha256 = hex::encode(zip.sha256);
        if zip_sha256 != recorded.sha256 || zip.h1 != recorded.h1 {
            return Err(format!(
                "another zip (sha256 {zip_sha256}, {}), published sha256 {}, {}",
                zip.h1, recorded.sha256, recorded.h1
            ));
        }
    }
    let mod_sha256 = hex::encode(v.mod_sha256());
    if v.h1_mod() != row.h1_mod || row.mod_sha256.as_ref().is_some_and(|r| *r != mod_sha256) {
        return Err(format!(
            "another go.mod ({}), published {}",
            v.h1_mod(),
            row.h1_mod
        ));
    }
    let info_sha256 = hex::encode(s.info_sha256());
    if let Some(recorded) = row.info_sha256.as_ref().filter(|r| **r != info_sha256) {
        return Err(format!(
            "another .info (sha256 {info_sha256}), published sha256 {recorded}"
        ));
    }
    Ok(())
}

/// `path@version`s and module paths serialize as they display.
fn as_strings<S: serde::Serializer, T: std::fmt::Display>(
    items: &[T],
    s: S,
) -> Result<S::Ok, S::Error> {
    s.collect_seq(items.iter().map(ToString::to_string))
}

fn reason(kind: &OutcomeKind) -> &str {
    match kind {
        OutcomeKind::Published(_) => "published",
        OutcomeKind::Quarantined { reason } | OutcomeKind::NotFound { reason } => reason,
        OutcomeKind::Failed { error } => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(version: &str) -> PublishedFiles {
        PublishedFiles {
            mv: ModVer::parse("example.com/a", version).unwrap(),
            info_size: 1,
            mod_size: 1,
            h1_mod: String::new(),
            info_sha256: None,
            mod_sha256: None,
            time: String::new(),
            zip: Some(crate::state::ZipInfo {
                size: 1,
                h1: String::new(),
                sha256: String::new(),
            }),
        }
    }

    /// A missing file marks its version; a list that differs from the
    /// state's, or an `@latest` that is not the latest `.info`, its module.
    // See: #13
    #[test]
    fn issue_13_survey_finds_missing_files_and_stale_lists() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path());
        let rows = [row("v1.0.0"), row("v1.1.0")];
        for r in &rows {
            for kind in [Kind::Info, Kind::Mod, Kind::Zip] {
                let path = tree.version_file(&r.mv, kind);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, r.mv.version.as_str()).unwrap();
            }
        }
        let path = &rows[0].mv.path;
        std::fs::write(tree.list_file(path), "v1.0.0\nv1.1.0\n").unwrap();
        let latest_info = tree.version_file(&rows[1].mv, Kind::Info);
        std::fs::hard_link(&latest_info, tree.latest_file(path)).unwrap();
        assert!(survey(&tree, &rows).is_empty());

        // A copy with the same bytes is not the link the commit step makes.
        std::fs::remove_file(tree.latest_file(path)).unwrap();
        std::fs::copy(&latest_info, tree.latest_file(path)).unwrap();
        let s = survey(&tree, &rows);
        assert_eq!((s.missing.len(), s.stale.clone()), (0, vec![path.clone()]));

        std::fs::remove_file(tree.version_file(&rows[0].mv, Kind::Mod)).unwrap();
        std::fs::write(tree.list_file(path), "v1.0.0\n").unwrap();
        let s = survey(&tree, &rows);
        assert_eq!(s.missing, [rows[0].clone()]);
        assert_eq!(s.stale, std::slice::from_ref(path));
    }
}
