//! The batch collector: gathers finished versions and hands each batch to
//! `commit`, with the checksum database's records of its staged versions;
//! outcomes that touch no file (failed, not found, quarantined) are
//! recorded as they are.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{chain, sumdb, Ctx, Finished, Progress, SyncError, Tally};
use crate::commit;
use crate::module::ModVer;
use crate::publish::Staged;
use crate::state::{Outcome, OutcomeKind};
use crate::verify::sumdb::client::Record;

/// How many finished versions are published and recorded together.
const BATCH: usize = 256;
/// A partial batch waits at most this long.
const BATCH_WINDOW: Duration = Duration::from_millis(250);

/// Gathers finished versions into batches and commits each.
pub(super) async fn collect(
    ctx: &Arc<Ctx>,
    mut rx: mpsc::Receiver<Finished>,
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
                    flush(ctx, &mut batch, tally).await?;
                    continue;
                }
            }
        };
        match next {
            None => break,
            Some(Finished::Cancelled) => {}
            Some(Finished::Fatal(e)) => stop_for(ctx, tally, SyncError::Publish(e)),
            Some(Finished::Forked(e)) => stop_for(ctx, tally, SyncError::Sumdb(Box::new(e))),
            Some(Finished::Panicked(source)) => {
                let task = "version task";
                let e = crate::error::TaskError { task, source };
                stop_for(ctx, tally, SyncError::Task(e));
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
                batch.done.push(Outcome { mv, kind });
            }
        }
        if batch.len() >= BATCH {
            flush(ctx, &mut batch, tally).await?;
        }
    }
    flush(ctx, &mut batch, tally).await
}

/// Versions finished since the last flush.
#[derive(Default)]
struct Batch {
    staged: Vec<Staged>,
    /// The checksum database's records of staged versions.
    records: Vec<(ModVer, Record)>,
    done: Vec<Outcome>,
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
/// Something every version would share went wrong: stop taking work. The
/// first such error is the run's, except that a forked log outranks the rest.
fn stop_for(ctx: &Ctx, tally: &mut Tally, e: SyncError) {
    tracing::error!("stopping the run: {}", chain(&e));
    ctx.stop.cancel();
    let fork = matches!(&e, SyncError::Sumdb(s) if s.is_fork());
    if fork || tally.stopped.is_none() {
        tally.stopped = Some(e);
    }
}

fn outcome_name(kind: &OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Published(_) => "published",
        OutcomeKind::Quarantined { .. } => "quarantined",
        OutcomeKind::NotFound { .. } => "not found",
        OutcomeKind::Failed { .. } => "failed",
    }
}

async fn flush(ctx: &Arc<Ctx>, batch: &mut Batch, tally: &mut Tally) -> Result<(), SyncError> {
    let Batch {
        staged,
        records,
        done,
    } = std::mem::take(batch);
    // Failures, not-found and quarantines touch no file: recorded as they are.
    if !done.is_empty() {
        ctx.store.record_outcomes(&done).await?;
    }
    let mut outcomes = done;
    if !staged.is_empty() {
        match sumdb::commit(ctx, ctx.sumdb.get(), staged, &records).await? {
            Ok(placed) => outcomes.extend(placed),
            // The staged versions are neither listed nor recorded as
            // published: they stay pending, and the next run completes them.
            Err(commit::CommitError::Publish(e)) => stop_for(ctx, tally, SyncError::Publish(e)),
            Err(e) => return Err(SyncError::Commit(Box::new(e))),
        }
    }
    for o in &outcomes {
        tally.count(&o.kind);
        if matches!(o.kind, OutcomeKind::NotFound { .. }) && ctx.learned_only(&o.mv) {
            if let Some(learn) = &mut tally.learn {
                learn.not_found += 1;
            }
        }
    }
    Ok(())
}
