//! Phase 3: the verified bundle goes through `commit`, as a sync's batch.

use std::sync::Arc;

use crate::commit;
use crate::module::ModVer;
use crate::publish::layout::{self, Kind, Tree};
use crate::publish::WriteError;
use crate::state::{Outcome, OutcomeKind, RunOutcome, RunSummary, Store};

use super::error::file_err;
use super::stream::StagedBundle;
use super::{Context, FileProblem, ImportError, Refusal};

/// Phase 3: one commit, as a sync's batch. Every final name is checked
/// first: a clash refuses the bundle with nothing written, not even a run.
pub(super) async fn apply(
    ctx: &Arc<Context>,
    store: &Store,
    bundle: StagedBundle,
) -> Result<(), ImportError> {
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
    if !prepared.conflicts().is_empty() {
        let first = prepared.into_conflicts().swap_remove(0);
        return Err(write_refusal(&ctx.tree, first.error));
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
fn all_published(outcomes: &[Outcome], summary: &mut RunSummary) -> Result<(), ImportError> {
    for Outcome { mv, kind } in outcomes {
        match kind {
            OutcomeKind::Published(p) => {
                summary.published += 1;
                summary.bytes += p.bytes();
            }
            OutcomeKind::Quarantined { reason: why }
            | OutcomeKind::NotFound { reason: why }
            | OutcomeKind::Failed { error: why } => {
                let problem = FileProblem::Unpublished(why.clone());
                return Err(file_err(&zip_rel(mv), problem));
            }
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
        commit::CommitError::Publish(e @ WriteError::Conflict { .. }) => write_refusal(tree, e),
        commit::CommitError::Publish(e) => ImportError::Publish(e),
        e @ commit::CommitError::Fork { .. } => Refusal::Fork(e.to_string()).into(),
        commit::CommitError::State(e) => ImportError::State(e),
        commit::CommitError::Task(e) => ImportError::Task(e),
    }
}

/// A file the bundle would publish clashes with the tree's.
fn write_refusal(tree: &Tree, e: WriteError) -> ImportError {
    let rel = match &e {
        WriteError::Conflict { path, .. } | WriteError::Io { path, .. } => {
            let bucket_root = tree.display("");
            path.strip_prefix(tree.root())
                .or_else(|_| path.strip_prefix(&bucket_root))
                .unwrap_or(path)
                .to_string_lossy()
                .into_owned()
        }
        WriteError::Store { key, .. } => key.clone(),
    };
    file_err(&rel, FileProblem::Clash(e))
}
