//! One version's way through the stages that can run in parallel: fetch →
//! verify → stage its files. The result goes to the batch collector
//! (`batch.rs`), which alone makes files visible and records state.

use std::sync::Arc;

use tracing::{debug, info_span, warn, Instrument};

use super::{chain, project, Ctx, Finished};
use crate::fetch::{Client, FetchError, Fetched};
use crate::module::ModVer;
use crate::plan::{Job, Want};
use crate::publish::{self, layout, Kind, WriteError};
use crate::state::OutcomeKind;
use crate::verify::sumdb::client::{Record, SumdbError};
use crate::verify::{self, Quarantine, QuarantineKind, Vouched};

/// One version: fetch → verify → publish its files. Never records state:
/// the collector does, after the module's list is rewritten.
pub(super) async fn process(ctx: Arc<Ctx>, job: Job) -> Finished {
    let Job { mv, want } = job;
    let span = info_span!("version", mv = %mv);
    async move {
        let Some(client) = ctx.client_for(&mv) else {
            // See: #12: a private module is asked of no public upstream.
            let error = format!("{mv}: private module: no [upstream] private_proxies");
            return done(mv, OutcomeKind::Failed { error });
        };
        // The lookup (and its proofs) runs while the files download.
        let (fetched, record) =
            tokio::join!(fetch_version(&ctx, client, &mv, want), lookup(&ctx, &mv));
        let fetched = match fetched {
            Ok(f) => f,
            Err(e) => return fetch_failed(&ctx, mv, e),
        };
        let record = match record {
            Ok(r) => r,
            Err(e) => return lookup_failed(mv, e),
        };
        let db = ctx.sumdb.get().map(|db| db.name().to_owned());
        // See: #12: no database vouches for it: its go.sum lines are the witness.
        let witnesses = match &record {
            None => ctx.witnesses.get().and_then(|w| w.get(&mv)).cloned(),
            Some(_) => None,
        };
        let _slot = ctx.verify_slots.acquire().await.expect("never closed");
        // Verify and stage in one trip to the blocking pool: each trip
        // costs two thread wake-ups (issue 11).
        let check_and_stage = move || {
            let vouched = record.as_ref().zip(db.as_deref()).map(|(r, db)| Vouched {
                db,
                hashes: &r.hashes,
            });
            match verify::verify(fetched, vouched) {
                Ok(verified) => {
                    let c = verified.checked();
                    let h1_zip = c.zip().map(|z| z.h1.as_str());
                    let witnessed = witnesses.as_deref().map_or(Ok(()), |w| {
                        project::check_witness(c.mv(), w, c.h1_mod(), h1_zip)
                    });
                    match witnessed {
                        // Dropping `verified` removes its temporary files.
                        Err(reason) => Ok(Err(reason)),
                        Ok(()) => Ok(Ok(publish::stage(verified).map(|s| (s, record)))),
                    }
                }
                Err(q) => Err(q),
            }
        };
        match tokio::task::spawn_blocking(check_and_stage).await {
            Ok(Ok(Err(reason))) => {
                warn!("quarantined: {reason}");
                done(mv, OutcomeKind::Quarantined { reason })
            }
            Ok(Ok(Ok(Ok(staged)))) => Finished::Staged(Box::new(staged)),
            Ok(Ok(Ok(Err(e)))) if e.is_fatal() => Finished::Fatal(e),
            Ok(Ok(Ok(Err(e)))) => done(mv, OutcomeKind::Failed { error: chain(&e) }),
            Ok(Err(q)) => quarantine(mv, q),
            Err(e) => done(
                mv,
                OutcomeKind::Failed {
                    error: format!("verify task: {e}"),
                },
            ),
        }
    }
    .instrument(span)
    .await
}

/// The checksum database's record of `mv`, verified; `None` when `mv` is
/// private or verification is off.
async fn lookup(ctx: &Ctx, mv: &ModVer) -> Result<Option<Record>, SumdbError> {
    match ctx.sumdb.get() {
        Some(db) if db.covers(mv) => db.client.lookup(mv, &ctx.stop).await.map(Some),
        _ => Ok(None),
    }
}

/// What a failed lookup means for the version, or for the run. Without a
/// verified record nothing is published; a later run tries again.
fn lookup_failed(mv: ModVer, e: SumdbError) -> Finished {
    match e {
        SumdbError::Cancelled => Finished::Cancelled,
        e if e.is_fork() => Finished::Forked(e),
        e => {
            warn!("{}", chain(&e));
            done(mv, OutcomeKind::Failed { error: chain(&e) })
        }
    }
}

/// What a failed fetch means for the version, or for the run.
fn fetch_failed(ctx: &Ctx, mv: ModVer, e: FetchError) -> Finished {
    match e {
        FetchError::Cancelled => Finished::Cancelled,
        // Writing the download into the tree failed: a full or read-only
        // tree fails every version alike, so the run stops.
        FetchError::Io { op, path, source }
            if path.starts_with(ctx.tree.root()) && publish::atomic::is_fatal_io(&source) =>
        {
            Finished::Fatal(WriteError::Io { op, path, source })
        }
        // See: #13: the feed's proxy (`cached-only`) answers 404 for what it
        // has not fetched yet: a failure the feed's backoff retries, not a
        // permanent "not found" as for a watched module's listed version.
        e if e.is_not_found() && from_feed(ctx, &mv) => {
            let error = format!("{}: not at the feed's proxy yet", chain(&e));
            done(mv, OutcomeKind::Failed { error })
        }
        e if e.is_not_found() => done(mv, OutcomeKind::NotFound { reason: chain(&e) }),
        // Go's size limits (PROTOCOL.md "Module zips"): the content is what
        // is wrong, not the transfer.
        e @ FetchError::TooLarge { .. } => quarantine(
            mv.clone(),
            Quarantine {
                mv,
                kind: QuarantineKind::TooLarge(Box::new(e)),
            },
        ),
        e => done(mv, OutcomeKind::Failed { error: chain(&e) }),
    }
}

/// Whether `mv` was planned from the feed (and is fetched from its proxy).
fn from_feed(ctx: &Ctx, mv: &ModVer) -> bool {
    ctx.feed_client.is_some() && ctx.feed_jobs.get().is_some_and(|jobs| jobs.contains(mv))
}

fn done(mv: ModVer, kind: OutcomeKind) -> Finished {
    Finished::Done { mv, kind }
}

fn quarantine(mv: ModVer, q: Quarantine) -> Finished {
    warn!("quarantined: {q}");
    done(
        mv,
        OutcomeKind::Quarantined {
            reason: q.kind.to_string(),
        },
    )
}

/// `.info`, `.mod` and (unless only the go.mod is wanted) `.zip` at once.
/// The `.mod` is fetched on its own, never taken from the zip (PROTOCOL.md:
/// legacy go.mod is synthesised).
async fn fetch_version(
    ctx: &Ctx,
    client: &Client,
    mv: &ModVer,
    want: Want,
) -> Result<Fetched, FetchError> {
    let token = &ctx.stop;
    let dest = ctx.tree.version_dir(&mv.path);
    let [info_rel, mod_rel, zip_rel] =
        [Kind::Info, Kind::Mod, Kind::Zip].map(|k| layout::version_rel(mv, k));

    let zip = async {
        match want {
            Want::Files => client
                .download(&zip_rel, &dest, verify::MAX_ZIP, token)
                .await
                .map(Some),
            Want::GoMod => Ok(None),
        }
    };
    let (info, mod_file, zip) = tokio::try_join!(
        client.get(&info_rel, verify::MAX_INFO, token),
        client.download(&mod_rel, &dest, verify::MAX_GO_MOD, token),
        zip,
    )?;
    debug!(bytes = zip.as_ref().map_or(0, |z| z.size), "fetched");
    Ok(Fetched {
        mv: mv.clone(),
        info,
        mod_file,
        zip,
    })
}
