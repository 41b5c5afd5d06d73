//! Learning from the clients' misses (`[clients] learn`): the plan stage
//! that turns what clients asked for and the tree lacked into this run's
//! work. See: #14
//!
//! The misses come from the access log (read before planning); which of
//! them become work is [`plan::learned`]'s decision. A missed version is
//! planned as it is; a missed listing (`@v/list`, `@latest`) is listed
//! upstream, and what `@latest` resolves to is planned, so that the next
//! `go get` of that path finds it. go asks about every prefix of an
//! unknown import path, so most listings are not modules: upstream's 404
//! is recorded and the path is not asked about again for
//! `[clients] retry_not_found`, nor at all unless a client misses it again.

use std::collections::HashSet;
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use tracing::info;

use super::plan_error::{PlanError, PlanSource};
use super::{select, Ctx, SyncError, Tally, Unlisted};
use crate::config::Config;
use crate::module::{ModVer, ModulePath};
use crate::plan::learned::{self, Missed, Refusal};
use crate::plan::watchlist::Selector;
use crate::state::Learned;

/// Due misses read per sync at most; each is decided once (refused ones
/// are not read again until missed again), so a flood is worked through
/// over a few syncs without holding it all.
const READ_LIMIT: usize = 50_000;

/// What learning did in one run, for its summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct LearnReport {
    /// Missed versions planned.
    pub versions: u64,
    /// Missed listings asked upstream: resolved to a version, or not found.
    pub listings: u64,
    pub listings_not_found: u64,
    /// Misses refused: private, excluded by a rule, matched by none,
    /// quarantined; or needing nothing (present).
    pub private: u64,
    pub excluded: u64,
    pub unmatched: u64,
    pub quarantined: u64,
    pub present: u64,
    /// Misses beyond `[clients] max_learned`, left for the next sync.
    pub deferred: u64,
    /// Learned versions upstream does not have (not a failure of the run).
    pub not_found: u64,
}

/// The versions this run learns; what was decided is recorded.
pub(super) async fn plan(
    ctx: &Arc<Ctx>,
    config: &Config,
    tally: &mut Tally,
) -> Result<Vec<ModVer>, SyncError> {
    if !config.clients.learn {
        return Ok(Vec::new());
    }
    let due = ctx.store.due_misses(READ_LIMIT).await?;
    if due.is_empty() {
        return Ok(Vec::new());
    }
    let paths: Vec<ModulePath> = due
        .iter()
        .map(|d| d.missed.path().clone())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let done = ctx.store.done_set(&paths).await?;
    let quarantined = ctx.store.quarantined_set(&paths).await?;
    let known = Facts {
        config,
        published: &done.published,
        mirrored: done.published.iter().map(|mv| &mv.path).collect(),
        quarantined: &quarantined,
    };
    let misses = due.into_iter().map(|d| d.missed).collect();
    let decided = learned::plan(
        misses,
        &config.clients.rules,
        &known,
        config.clients.max_learned,
    );

    let mut report = LearnReport {
        deferred: decided.deferred as u64,
        ..LearnReport::default()
    };
    let mut record: Vec<Learned> = Vec::new();
    for (missed, why) in decided.refused {
        *match why {
            Refusal::Private => &mut report.private,
            Refusal::Excluded => &mut report.excluded,
            Refusal::Unmatched => &mut report.unmatched,
            Refusal::Quarantined => &mut report.quarantined,
            Refusal::Present => &mut report.present,
        } += 1;
        record.push(Learned {
            missed,
            outcome: why.as_str(),
            retry_after: None,
        });
    }
    let mut versions = Vec::new();
    let mut listings = Vec::new();
    for missed in decided.planned {
        match missed {
            Missed::Version(mv) => {
                versions.push(mv.clone());
                record.push(Learned {
                    missed: Missed::Version(mv),
                    outcome: "planned",
                    retry_after: None,
                });
            }
            Missed::Listing(path) => listings.push(path),
        }
    }
    report.versions = versions.len() as u64;
    report.listings = listings.len() as u64;
    let listed: Vec<_> = stream::iter(listings)
        .map(|path| async move {
            let mut rejected = Vec::new();
            let got = select(ctx, &path, &Selector::Latest, &mut rejected).await;
            (path, got, rejected)
        })
        .buffer_unordered(config.fetch.concurrency)
        .collect()
        .await;
    for (path, got, rejected) in listed {
        tally.rejected.extend(rejected);
        let missed = Missed::Listing(path);
        match got {
            Ok(found) => {
                versions.extend(found);
                record.push(Learned {
                    missed,
                    outcome: "planned",
                    retry_after: None,
                });
            }
            Err(Unlisted::NotFound(_)) => {
                report.listings_not_found += 1;
                record.push(Learned {
                    missed,
                    outcome: "not_found",
                    retry_after: Some(config.clients.retry_not_found),
                });
            }
            // Stays due: the next sync asks again.
            Err(e @ Unlisted::Failed(_)) => tally.plan_errors.push(PlanError::new(
                PlanSource::Clients,
                format!("learning {missed}: {e}"),
            )),
        }
    }
    ctx.store.record_learned(record).await?;
    info!(
        versions = report.versions,
        listings = report.listings,
        listings_not_found = report.listings_not_found,
        refused = report.private + report.excluded + report.unmatched + report.quarantined,
        deferred = report.deferred,
        "learned from clients' misses"
    );
    tally.learn = Some(report);
    Ok(versions)
}

/// What the planner needs to know of the config and the tree.
struct Facts<'a> {
    config: &'a Config,
    published: &'a HashSet<ModVer>,
    /// Modules with a published version.
    mirrored: HashSet<&'a ModulePath>,
    quarantined: &'a HashSet<ModVer>,
}

impl learned::Known for Facts<'_> {
    fn private(&self, path: &ModulePath) -> bool {
        self.config.private.is_private(path.as_str())
            || self
                .config
                .sumdb
                .as_ref()
                .is_some_and(|s| s.is_private(path.as_str()))
    }

    fn present(&self, missed: &Missed) -> bool {
        match missed {
            Missed::Version(mv) => self.published.contains(mv),
            Missed::Listing(path) => self.mirrored.contains(path),
        }
    }

    fn quarantined(&self, mv: &ModVer) -> bool {
        self.quarantined.contains(mv)
    }
}
