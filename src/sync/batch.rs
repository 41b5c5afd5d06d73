//! The batch collector: gathers finished versions and, per batch, makes
//! the staged ones visible (`publish::place`), rewrites the lists of the
//! modules that gained versions, and records every outcome in one
//! transaction — in that order, so state never names a version the tree
//! does not list.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::version::published_info;
use super::{blocking, chain, sumdb, Ctx, Finished, Progress, Published, SyncError, Tally};
use crate::module::ModVer;
use crate::publish::{self, Staged, WriteError};
use crate::state::{Outcome, OutcomeKind};
use crate::verify::sumdb::client::Record;

/// How many finished versions are published and recorded together.
const BATCH: usize = 256;
/// A partial batch waits at most this long.
const BATCH_WINDOW: Duration = Duration::from_millis(250);

/// Gathers finished versions into batches. Per batch: place the staged
/// versions, rewrite the lists of modules that gained versions, then record
/// every outcome in one transaction.
pub(super) async fn collect(
    ctx: &Arc<Ctx>,
    mut rx: mpsc::Receiver<Finished>,
    published: &mut Published,
    tally: &mut Tally,
    progress: Arc<dyn Progress>,
) -> Result<(), SyncError> {
    let mut batch = Batch::default();
    loop {
        let next = if batch.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout(BATCH_WINDOW, rx.recv()).await {
                Ok(next) => next,
                Err(_) => {
                    flush(ctx, &mut batch, published, tally).await?;
                    continue;
                }
            }
        };
        match next {
            None => break,
            Some(Finished::Cancelled) => {}
            Some(Finished::Fatal(e)) => stop_for(ctx, tally, e),
            Some(Finished::Forked(e)) => {
                tracing::error!("stopping the run: {}", chain(&e));
                ctx.stop.cancel();
                tally.forked.get_or_insert(e);
            }
            Some(Finished::Staged(staged)) => {
                let (staged, record) = *staged;
                let v = staged.checked();
                progress.finished(v.mv(), "published", v.zip_size());
                if let Some(record) = record {
                    batch.records.push((v.mv().clone(), record));
                }
                batch.staged.push(staged);
            }
            Some(Finished::Done { mv, kind }) => {
                progress.finished(&mv, outcome_name(&kind), 0);
                batch.done.push((mv, kind));
            }
        }
        if batch.len() >= BATCH {
            flush(ctx, &mut batch, published, tally).await?;
        }
    }
    flush(ctx, &mut batch, published, tally).await
}

/// Versions finished since the last flush.
#[derive(Default)]
struct Batch {
    staged: Vec<Staged>,
    /// The checksum database's records of staged versions.
    records: Vec<(ModVer, Record)>,
    done: Vec<(ModVer, OutcomeKind)>,
}

impl Batch {
    fn len(&self) -> usize {
        self.staged.len() + self.done.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A write every version would fail the same way: stop taking work.
fn stop_for(ctx: &Ctx, tally: &mut Tally, e: WriteError) {
    tracing::error!("stopping the run: {}", chain(&e));
    ctx.stop.cancel();
    tally.fatal.get_or_insert(e);
}

fn outcome_name(kind: &OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Published(_) => "published",
        OutcomeKind::Quarantined { .. } => "quarantined",
        OutcomeKind::NotFound { .. } => "not found",
        OutcomeKind::Failed { .. } => "failed",
    }
}

async fn flush(
    ctx: &Arc<Ctx>,
    batch: &mut Batch,
    published: &mut Published,
    tally: &mut Tally,
) -> Result<(), SyncError> {
    let mut outcomes = std::mem::take(&mut batch.done);
    let staged = std::mem::take(&mut batch.staged);
    let records = std::mem::take(&mut batch.records);
    if !staged.is_empty() {
        // Lookups and tiles first: once `supported` is served, `go` needs
        // a version's lookup as soon as a list names the version.
        let pin = match ctx.sumdb.get() {
            Some(db) if !records.is_empty() => sumdb::publish_records(ctx, db, &records).await?,
            _ => None,
        };
        let tree = ctx.tree.clone();
        match blocking("placing files", move || publish::place(&tree, staged)).await? {
            Ok(placed) => {
                let placed = placed
                    .into_iter()
                    .map(|(s, result)| placed_outcome(&s, result));
                outcomes.extend(placed);
                update_indexes(ctx, &outcomes, published).await?;
                if let (Some(db), Some(pin)) = (ctx.sumdb.get(), pin) {
                    sumdb::publish_head(ctx, db, pin).await?;
                }
            }
            // The staged versions are neither listed nor recorded: they stay
            // pending, and the next run completes them.
            Err(e) => stop_for(ctx, tally, e),
        }
    }
    let records: Vec<Outcome> = outcomes
        .into_iter()
        .map(|(mv, kind)| {
            tally.count(&kind);
            Outcome {
                path: mv.path.to_string(),
                version: mv.version.to_string(),
                result: kind,
            }
        })
        .collect();
    ctx.store.record_outcomes(&records).await?;
    Ok(())
}

fn placed_outcome(staged: &Staged, result: Result<(), WriteError>) -> (ModVer, OutcomeKind) {
    let v = staged.checked();
    let kind = match result {
        Ok(()) => OutcomeKind::Published(published_info(v)),
        Err(e @ WriteError::Conflict { .. }) => {
            // Upstream now serves other bytes for a published version.
            tracing::error!(mv = %v.mv(), "ALARM: {e}");
            OutcomeKind::Quarantined {
                reason: format!("published files differ from upstream: {e}"),
            }
        }
        Err(e) => OutcomeKind::Failed { error: chain(&e) },
    };
    (v.mv().clone(), kind)
}

/// Rewrites `@v/list`/`@latest` of every module that gained a version.
async fn update_indexes(
    ctx: &Ctx,
    outcomes: &[(ModVer, OutcomeKind)],
    published: &mut Published,
) -> Result<(), SyncError> {
    let mut touched = BTreeMap::new();
    for (mv, kind) in outcomes {
        if matches!(kind, OutcomeKind::Published(_)) {
            let versions = published.entry(mv.path.clone()).or_default();
            versions.push(mv.version.clone());
            touched.insert(mv.path.clone(), versions.clone());
        }
    }
    let modules: Vec<_> = touched.into_iter().collect();
    let tree = ctx.tree.clone();
    blocking("index update", move || {
        publish::update_indexes(&tree, &modules)
    })
    .await?
    .map_err(SyncError::Publish)
}
