//! One sync run, stage after stage: the only module that knows the order.
//!
//! lock → state (`quick_check` after an interrupted run) → clean strays →
//! plan (due pending versions; the index feed from its cursor, page by
//! page, each page recorded as pending work with the cursor (`follow.rs`);
//! list each watched module upstream — with the feed on, only when its
//! refresh interval has passed or the feed named it — select, subtract what
//! is published and what is quarantined; with `[clients] learn`, what
//! clients missed (`learn.rs`)) → repair what is missing of those
//! modules' published files and lists (`repair.rs`) → mark pending → for
//! each version, concurrently and bounded: fetch → verify → stage its files
//! → then, per batch (see `batch.rs`), `commit`: place the files, rewrite
//! `@v/list`/`@latest`, record the outcomes.
//!
//! Ordering guarantees (DEVELOPERS.md "every write … ordered", kept by
//! `commit`): a version's files are in place before any list names it, and
//! state records it as published only after its list was rewritten. A crash at
//! any point leaves the version `pending`; the next run cleans temporary
//! files, fetches it again and finds identical files already in place.
//!
//! Versions planned from the feed are fetched from `[feed] proxy` (a client
//! derived from the run's, sharing its limits); a feed version that fails
//! is retried by later runs with backoff (`state::RetryPolicy`).

mod batch;
mod follow;
mod learn;
mod plan_error;
pub mod project;
pub mod prune;
mod repair;
mod sumdb;
mod toolchain;
mod version;

pub use follow::FeedReport;
pub use learn::LearnReport;
use plan_error::PlanErrors;
pub use plan_error::{PlanError, PlanSource};
pub use repair::RepairReport;

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use futures::stream::{self, StreamExt};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, WatchEntry};
use crate::fetch::Client;
use crate::lock::LockError;
use crate::module::{ModVer, ModulePath};
use crate::plan::{self, watchlist::Selector, Job, Listing, Rejected};
use crate::publish::lease::Lease;
use crate::publish::{self, layout, Staged, Tree, WriteError};
use crate::state::{
    Origin, OutcomeKind, RejectedEntry, RetryPolicy, RunId, RunOutcome, RunSummary, StateError,
    Store,
};
use crate::verify;
use crate::verify::sumdb::client::{Record, SumdbError};

/// What the operator watches while a run goes (a progress bar in main.rs).
pub trait Progress: Send + Sync {
    fn planned(&self, _versions: usize) {}
    fn finished(&self, _mv: &ModVer, _outcome: &str, _bytes: u64) {}
}

/// Reports nothing.
pub struct Quiet;
impl Progress for Quiet {}

/// Why a run could not proceed at all (exit code 2).
#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("create tree directory {path}")]
    Tree {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("publishing stopped")]
    Publish(#[source] WriteError),
    #[error(transparent)]
    Bucket(#[from] crate::publish::bucket::BucketError),
    #[error(transparent)]
    Lease(#[from] crate::publish::lease::LeaseError),
    #[error("upstream client")]
    Client(#[source] crate::fetch::ClientError),
    /// The checksum database cannot be used, or its log forked.
    #[error(transparent)]
    Sumdb(Box<crate::verify::sumdb::client::SumdbError>),
    /// A batch could not be committed (state, a fork, a clashing lookup).
    #[error(transparent)]
    Commit(Box<crate::commit::CommitError>),
    /// A blocking task panicked: a bug, reported instead of crashing.
    #[error(transparent)]
    Task(#[from] crate::error::TaskError),
}

/// Runs blocking work on the blocking pool; a panic becomes [`SyncError::Task`].
async fn blocking<T: Send + 'static>(
    task: &'static str,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, SyncError> {
    Ok(crate::error::blocking(task, f).await?)
}

/// The result of a run that went to its end.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub run_id: i64,
    pub summary: RunSummary,
    pub rejected: Vec<Rejected>,
    /// What planning could not do (each logged as a warning too).
    pub plan_errors: Vec<PlanError>,
    /// Upstream requests, retries, bytes and status codes of this run.
    pub fetch: crate::fetch::StatsSnapshot,
    pub seconds: f64,
    /// What following the index feed did; `None` with the feed off.
    pub feed: Option<FeedReport>,
    /// The run planned (and recorded the plan as pending) but fetched nothing.
    pub plan_only: bool,
    /// Selected versions left out because they are quarantined: they stay
    /// out until `gomirror retry`.
    pub kept_out: u64,
    /// What was put back of the published tree: missing files restored
    /// from upstream, lists rewritten from the state.
    pub repair: RepairReport,
    /// The projects this run computed, as it left them. See: #12
    pub projects: Vec<crate::state::ProjectStatus>,
    /// What learning from clients' misses did; `None` unless `[clients] learn`
    /// and there were misses to look at. See: #14
    pub learn: Option<LearnReport>,
    /// Reading `[clients] access_log` before planning; `None` without one. See: #14
    pub clients: Option<crate::clients::ReadReport>,
}

/// How a run goes beyond its config.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Plan, record the plan as pending work, fetch nothing.
    pub plan_only: bool,
    /// Mirror only this project's closure (computed before the lock): no feed, no
    /// watchlist, no other project, no resumed work. See: #12
    pub project: Option<Arc<project::ProjectOnly>>,
    /// Wait for a run holding the lock instead of failing at once.
    pub wait: Option<project::LockWait>,
}

impl Report {
    /// True when every planned version is present and nothing was refused
    /// (exit code 0).
    pub fn all_ok(&self) -> bool {
        self.summary.outcome == RunOutcome::Ok
    }
}

/// What every per-version task shares.
struct Ctx {
    tree: Tree,
    client: Client,
    /// For versions planned from the feed: `[feed] proxy`, sharing the
    /// run's limits; `None` with the feed off.
    feed_client: Option<Client>,
    /// The jobs fetched with `feed_client`, set once the plan is made.
    feed_jobs: OnceLock<HashSet<ModVer>>,
    /// Versions planned only because clients missed them: upstream not
    /// having one is no failure of the run. Set once the plan is made.
    learned_only: OnceLock<HashSet<ModVer>>,
    /// Private modules' upstream (see: #12): never the public one.
    routes: project::Routes,
    /// go.sum lines of versions no checksum database covers, checked before
    /// such a version is published.
    witnesses: OnceLock<project::Witnesses>,
    store: Store,
    run_id: RunId,
    /// Cancelled by a signal (from main.rs) or by a fatal error here: no
    /// new version starts once it fires.
    stop: CancellationToken,
    /// CPU-heavy zip checks and hashing: more than one per core only thrashes.
    verify_slots: Semaphore,
    /// Versions in flight at once: enough to keep every request slot busy
    /// while others verify and publish.
    window: usize,
    /// The checksum database, reached once the plan has work (a no-op run
    /// never contacts it). Unset when verification is off.
    sumdb: std::sync::OnceLock<sumdb::Sumdb>,
}

/// How one planned version ended.
enum Finished {
    /// Verified and written beside its final names: the collector makes
    /// it visible with the rest of its batch. With the checksum database's
    /// record, unless the module is private or verification is off.
    Staged(Box<(Staged, Option<Record>)>),
    Done {
        mv: ModVer,
        kind: OutcomeKind,
    },
    /// The run is stopping; the version stays pending for the next run.
    Cancelled,
    /// The tree cannot take writes (disk full, read-only): stop the run.
    Fatal(WriteError),
    /// The checksum database's log forked: stop the run.
    Forked(SumdbError),
    /// The version's task panicked (a bug): stop the run.
    Panicked(tokio::task::JoinError),
}

/// Runs one sync to its end. `token` is the shutdown signal: when it
/// fires, no new version starts and in-flight ones finish or are dropped
/// (staying pending); the run is recorded as interrupted.
pub async fn run(
    config: &Config,
    progress: Arc<dyn Progress>,
    token: CancellationToken,
) -> Result<Report, SyncError> {
    run_with(config, progress, token, RunOptions::default()).await
}

/// [`run`], with [`RunOptions`].
pub async fn run_with(
    config: &Config,
    progress: Arc<dyn Progress>,
    token: CancellationToken,
    options: RunOptions,
) -> Result<Report, SyncError> {
    let started = Instant::now();
    let tree = crate::publish::open_tree(config).await?;
    fs_err::create_dir_all(tree.root()).map_err(|source| SyncError::Tree {
        path: tree.root().to_owned(),
        source,
    })?;
    // Two locks: the tree's (two databases must not share a tree) and the
    // database's (two trees must not share a database).
    // `--wait`'s timeout covers both (see: #12).
    let _tree_lock = project::take_lock(&tree.lock_file(), options.wait, started, &token).await?;
    let db_lock = crate::lock::db_lock_path(&config.database);
    let _db_lock = project::take_lock(&db_lock, options.wait, started, &token).await?;
    // A bucket tree is guarded against other hosts by a lease (see: #17).
    let lease = match tree.bucket() {
        Some(b) => Some(Lease::take(b, &tree.lock_file(), token.clone()).await?),
        None => None,
    };
    let result = async {
        let store = Store::open(&config.database).await?;
        // Before `begin_run` marks the previous run interrupted (see: #13).
        store.quick_check_if_interrupted().await?;
        let run_id = store.begin_run().await?;
        let client =
            Client::new(config.upstreams.clone(), &config.fetch).map_err(SyncError::Client)?;
        let feed_client = config
            .feed
            .enabled
            .then(|| client.with_upstreams(vec![config.feed.proxy.clone()]))
            .transpose()
            .map_err(SyncError::Client)?;
        let routes = project::Routes::new(config, client.clone()).map_err(SyncError::Client)?;
        let ctx = Arc::new(Ctx {
            tree,
            client,
            feed_client,
            feed_jobs: OnceLock::new(),
            learned_only: OnceLock::new(),
            routes,
            witnesses: OnceLock::new(),
            store: store.clone(),
            run_id,
            stop: token.child_token(),
            verify_slots: Semaphore::new(
                std::thread::available_parallelism().map_or(2, |n| n.get()),
            ),
            window: config.fetch.concurrency * 2,
            sumdb: std::sync::OnceLock::new(),
        });
        // See: #14: clients' misses are in state before planning; never fatal.
        let clients = crate::clients::read_for_run(&store, &config.clients).await;
        let mut tally = Tally::default();
        let mut result = run_stages(&ctx, config, &mut tally, progress, options.clone()).await;
        if result.is_ok() && !options.plan_only && !token.is_cancelled() {
            result = check_go_sums(&ctx, config, &mut tally).await;
        }
        if result.is_ok() && tally.learn.is_some() {
            // Learned misses take what their versions came to (see: #14).
            result = store
                .settle_learned(config.clients.retry_not_found)
                .await
                .map_err(SyncError::from);
        }
        if result.is_ok() {
            // This run's failed feed versions get their next try.
            result = store
                .schedule_retries(retry_policy(config))
                .await
                .map(drop)
                .map_err(SyncError::from);
        }
        tally.summary.outcome = match (&result, &tally.stopped) {
            (Err(_), _) | (_, Some(_)) => RunOutcome::Failed,
            _ if token.is_cancelled() => RunOutcome::Interrupted,
            _ if tally.all_ok() => RunOutcome::Ok,
            _ => RunOutcome::Partial,
        };
        // See: #13: per-upstream health, for `status` and metrics.
        store
            .record_upstream_health(ctx.client.upstream_health())
            .await?;
        if let Some(e) = result.as_ref().err().or(tally.stopped.as_ref()) {
            store.record_run_error(run_id, e).await?;
        } else if !tally.plan_errors.is_empty() {
            // `status` says why the run was partial (see: #13).
            store
                .record_run_error(run_id, &PlanErrors::of(&tally.plan_errors))
                .await?;
        }
        let full = options.project.is_none();
        let projects = project::record(&store, run_id, config, &tally.projects, full).await?;
        store.finish_run(run_id, &tally.summary).await?;
        result?;
        if let Some(e) = tally.stopped {
            return Err(e);
        }
        let fetch = ctx.client.stats();
        info!(
            run = run_id.0,
            outcome = tally.summary.outcome.as_str(),
            published = tally.summary.published,
            requests = fetch.requests,
            retries = fetch.retries,
            "sync finished"
        );
        Ok(Report {
            run_id: run_id.0,
            summary: tally.summary,
            rejected: tally.rejected,
            plan_errors: tally.plan_errors,
            fetch,
            seconds: started.elapsed().as_secs_f64(),
            feed: tally.feed,
            plan_only: options.plan_only,
            kept_out: tally.kept_out,
            repair: tally.repair,
            projects,
            learn: tally.learn,
            clients,
        })
    }
    .await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    result
}

/// Counts and findings of one run, filled stage by stage.
#[derive(Default)]
struct Tally {
    summary: RunSummary,
    rejected: Vec<Rejected>,
    plan_errors: Vec<PlanError>,
    /// What stopped the run before its end: the tree takes no writes, the
    /// checksum database's log forked, a version task panicked.
    stopped: Option<SyncError>,
    feed: Option<FeedReport>,
    /// Selected versions left out because they are quarantined.
    kept_out: u64,
    repair: RepairReport,
    /// The projects whose closures this run computed.
    projects: Vec<project::ProjectRun>,
    /// What learning from clients' misses did.
    learn: Option<LearnReport>,
}

impl Tally {
    fn all_ok(&self) -> bool {
        let s = &self.summary;
        // A quarantined version kept out is still missing (exit 1). A
        // version only clients asked for that upstream lacks is not (see: #14).
        let learned_not_found = self.learn.as_ref().map_or(0, |l| l.not_found);
        s.failed == 0
            && s.quarantined == 0
            && s.not_found == learned_not_found
            && self.kept_out == 0
            && self.repair.problems.is_empty()
            && self.plan_errors.is_empty()
    }

    fn count(&mut self, kind: &OutcomeKind) {
        let s = &mut self.summary;
        match kind {
            OutcomeKind::Published(p) => {
                s.published += 1;
                s.bytes += p.bytes();
            }
            OutcomeKind::Quarantined { .. } => s.quarantined += 1,
            OutcomeKind::NotFound { .. } => s.not_found += 1,
            OutcomeKind::Failed { .. } => s.failed += 1,
        }
    }
}

async fn run_stages(
    ctx: &Arc<Ctx>,
    config: &Config,
    tally: &mut Tally,
    progress: Arc<dyn Progress>,
    options: RunOptions,
) -> Result<(), SyncError> {
    // Feed versions whose failure a killed run recorded but did not schedule.
    ctx.store.schedule_retries(retry_policy(config)).await?;
    let (resumed, followed, watch, projects, learned) = match &options.project {
        // See: #12: `sync --project DIR` mirrors that closure and nothing else.
        Some(only) => (
            Vec::new(),
            Default::default(),
            Vec::new(),
            vec![only.run()],
            Vec::new(),
        ),
        None => {
            let resumed = clean_interrupted(ctx).await?;
            let followed = follow_feed(ctx, config, tally).await?;
            let watch = watch_entries_due(ctx, config, &followed.mentioned).await?;
            let projects = project::plan_projects(ctx, config).await?;
            let learned = learn::plan(ctx, config, tally).await?;
            (resumed, followed, watch, projects, learned)
        }
    };
    let feed_new: HashSet<ModVer> = followed.planned.into_iter().collect();
    let closure_jobs = closure_jobs(ctx, config, tally, projects).await;
    let paths: Vec<ModulePath> = watch
        .iter()
        .map(|w| w.module.clone())
        .chain(resumed.iter().map(|(mv, _)| mv.path.clone()))
        .chain(feed_new.iter().map(|mv| mv.path.clone()))
        .chain(closure_jobs.iter().map(|j| j.mv.path.clone()))
        .chain(learned.iter().map(|mv| mv.path.clone()))
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let done = ctx.store.done_set(&paths).await?;
    let selected = plan_watchlist(ctx, config, &watch, tally).await?;
    let quarantined = quarantined(ctx, &paths).await?;
    let selected = keep_out(&quarantined, selected, tally);
    let closure_jobs = keep_out_jobs(&quarantined, closure_jobs, tally);
    let by_watch: HashSet<&ModVer> = selected.iter().collect();
    let learned_only: HashSet<ModVer> = {
        let wanted: HashSet<&ModVer> = selected
            .iter()
            .chain(resumed.iter().map(|(mv, _)| mv))
            .chain(&feed_new)
            .chain(closure_jobs.iter().map(|j| &j.mv))
            .collect();
        learned
            .iter()
            .filter(|mv| !wanted.contains(mv))
            .cloned()
            .collect()
    };
    let feed_jobs: HashSet<ModVer> = resumed
        .iter()
        .filter(|(_, origin)| *origin == Origin::Feed)
        .map(|(mv, _)| mv)
        .chain(&feed_new)
        .filter(|mv| !by_watch.contains(mv))
        .cloned()
        .collect();
    // Versions a later run must take up if this one is killed. A closure's
    // versions are not among them: every run computes the closures again.
    let resumable: HashSet<ModVer> = selected
        .iter()
        .cloned()
        .chain(resumed.iter().map(|(mv, _)| mv.clone()))
        .chain(learned.iter().cloned())
        .filter(|mv| !feed_new.contains(mv))
        .collect();
    let plan = plan::subtract(
        selected
            .into_iter()
            .chain(resumed.into_iter().map(|(mv, _)| mv))
            .chain(feed_new.iter().cloned())
            .chain(learned)
            .map(Job::files)
            .chain(closure_jobs),
        &done,
    );
    tally.summary.planned = (plan.jobs.len() + plan.skipped) as u64;
    tally.summary.skipped = plan.skipped as u64;
    info!(
        fetch = plan.jobs.len(),
        from_feed = feed_jobs.len(),
        skipped = plan.skipped,
        "plan ready"
    );
    let _ = ctx.feed_jobs.set(feed_jobs);
    let _ = ctx.learned_only.set(learned_only);
    progress.planned(if options.plan_only {
        0
    } else {
        plan.jobs.len()
    });
    if !options.plan_only {
        // Before new work: put back what is missing of the published tree.
        let survey = repair::survey_paths(ctx, &paths).await?;
        if !survey.is_empty() {
            tally.repair = repair::restore(ctx, survey).await?;
        }
    }
    let unvouched = sumdb::unvouched(config, &ctx.store).await?;
    if plan.jobs.is_empty() && (unvouched.is_empty() || options.plan_only) {
        return Ok(());
    }
    // The feed's new versions are pending already, recorded with the cursor.
    let keys: Vec<ModVer> = plan
        .jobs
        .iter()
        .filter(|j| resumable.contains(&j.mv))
        .map(|j| j.mv.clone())
        .collect();
    if !keys.is_empty() {
        ctx.store.mark_pending(ctx.run_id, &keys).await?;
    }
    if options.plan_only {
        return Ok(());
    }
    if let Some(db) = sumdb::connect(config, ctx).await? {
        let db = ctx.sumdb.get_or_init(|| db);
        if !unvouched.is_empty() {
            let problems = sumdb::backfill(ctx, db, unvouched, config.fetch.concurrency).await?;
            tally.plan_errors.extend(
                problems
                    .into_iter()
                    .map(|e| PlanError::new(PlanSource::Sumdb, e)),
            );
        }
    }
    fetch_verify_publish(ctx, plan.jobs, tally, progress).await
}

/// The jobs of the projects' closures and toolchains; what could not be
/// planned goes to the tally, and the projects too (recorded when the run
/// ends, their go.sum files checked after it).
async fn closure_jobs(
    ctx: &Ctx,
    config: &Config,
    tally: &mut Tally,
    projects: Vec<project::ProjectRun>,
) -> Vec<Job> {
    let mut jobs = Vec::new();
    for p in &projects {
        match &p.closure {
            Ok(c) => {
                jobs.extend(project::jobs(c));
                for e in &c.errors {
                    let e = format!("project {}: {}: {}", p.dir.display(), e.mv, e.error);
                    tally
                        .plan_errors
                        .push(PlanError::new(PlanSource::Project, e));
                }
            }
            Err(e) => tally
                .plan_errors
                .push(PlanError::new(PlanSource::Project, e.clone())),
        }
    }
    let toolchains = toolchain::plan(ctx, config, &projects).await;
    jobs.extend(toolchains.jobs);
    let toolchain_errors = toolchains.errors.into_iter();
    tally
        .plan_errors
        .extend(toolchain_errors.map(|e| PlanError::new(PlanSource::Toolchain, e)));
    let _ = ctx
        .witnesses
        .set(project::witnesses(&projects, |mv| covered(config, mv)));
    tally.projects = projects;
    jobs
}

/// Is `mv` covered by the checksum database (verification on, not private)?
fn covered(config: &Config, mv: &ModVer) -> bool {
    config
        .sumdb
        .as_ref()
        .is_some_and(|s| !s.is_private(mv.path.as_str()))
}

/// After the run: each project's go.sum against what was verified; a
/// differing line fails its project (see: #12).
async fn check_go_sums(ctx: &Ctx, config: &Config, tally: &mut Tally) -> Result<(), SyncError> {
    let db = config.sumdb.as_ref().map(|s| s.name.as_str());
    let projects = &tally.projects;
    let errors = project::check_witnesses(ctx, projects, db, |mv| covered(config, mv)).await?;
    let errors = errors
        .into_iter()
        .map(|e| PlanError::new(PlanSource::Project, e));
    tally.plan_errors.extend(errors);
    Ok(())
}

/// Reads the index feed when `[feed] enabled`; its report goes to the tally.
async fn follow_feed(
    ctx: &Arc<Ctx>,
    config: &Config,
    tally: &mut Tally,
) -> Result<follow::Followed, SyncError> {
    if !config.feed.enabled {
        return Ok(follow::Followed::default());
    }
    let index = ctx
        .client
        .with_upstreams(vec![config.feed.index.clone()])
        .map_err(SyncError::Client)?;
    let watched: HashSet<ModulePath> = config.watch.iter().map(|w| w.module.clone()).collect();
    let followed = follow::follow(ctx, &config.feed, &index, &watched, tally).await?;
    tally.feed = Some(followed.report.clone());
    Ok(followed)
}

/// The watch entries to list upstream this run: all of them with the feed
/// off; with it on, those whose refresh interval has passed and those the
/// feed named, so that a run with nothing new lists nothing.
async fn watch_entries_due<'c>(
    ctx: &Ctx,
    config: &'c Config,
    mentioned: &HashSet<ModulePath>,
) -> Result<Vec<&'c WatchEntry>, SyncError> {
    if !config.feed.enabled {
        return Ok(config.watch.iter().collect());
    }
    let paths: Vec<ModulePath> = config.watch.iter().map(|w| w.module.clone()).collect();
    let due = ctx
        .store
        .listing_due(&paths, config.feed.refresh_interval)
        .await?;
    Ok(config
        .watch
        .iter()
        .filter(|w| mentioned.contains(&w.module) || due.contains(&w.module))
        .collect())
}

fn retry_policy(config: &Config) -> RetryPolicy {
    RetryPolicy {
        max_attempts: config.feed.max_attempts,
        base: config.feed.retry_base,
        max: config.feed.retry_max,
    }
}

/// Pending versions that are due: left by a killed run (their temporary
/// files are removed), or feed versions whose retry time has come. They
/// are planned again, each with who planned it first.
async fn clean_interrupted(ctx: &Arc<Ctx>) -> Result<Vec<(ModVer, Origin)>, SyncError> {
    let due = ctx.store.due_versions().await?;
    let resumed: Vec<(ModVer, Origin)> = due.into_iter().map(|d| (d.mv, d.origin)).collect();
    let modules: HashSet<ModulePath> = resumed.iter().map(|(mv, _)| mv.path.clone()).collect();
    let tree = ctx.tree.clone();
    let removed = blocking("stray cleanup", move || {
        modules
            .iter()
            .map(|path| publish::remove_stray_temps(&tree, path))
            .sum::<Result<usize, WriteError>>()
    })
    .await?
    .map_err(SyncError::Publish)?;
    if !resumed.is_empty() {
        info!(
            versions = resumed.len(),
            temp_files_removed = removed,
            "resuming pending versions"
        );
    }
    Ok(resumed)
}

/// The quarantined versions of `paths`: they stay out of every plan until
/// `gomirror retry` puts them back to pending. (The feed and resumed work
/// never name them: those plan only pending rows.)
// See: #13
async fn quarantined(ctx: &Ctx, paths: &[ModulePath]) -> Result<HashSet<ModVer>, SyncError> {
    Ok(ctx.store.quarantined_set(paths).await?)
}

/// `selected` without the quarantined versions, counted as kept out.
fn keep_out(
    quarantined: &HashSet<ModVer>,
    selected: Vec<ModVer>,
    tally: &mut Tally,
) -> Vec<ModVer> {
    let (held, kept): (Vec<ModVer>, Vec<ModVer>) = selected
        .into_iter()
        .partition(|mv| quarantined.contains(mv));
    note_kept_out(held.len(), tally);
    kept
}

/// A closure's jobs without the quarantined versions, counted as kept out.
fn keep_out_jobs(quarantined: &HashSet<ModVer>, jobs: Vec<Job>, tally: &mut Tally) -> Vec<Job> {
    let (held, kept): (Vec<Job>, Vec<Job>) =
        jobs.into_iter().partition(|j| quarantined.contains(&j.mv));
    note_kept_out(held.len(), tally);
    kept
}

fn note_kept_out(held: usize, tally: &mut Tally) {
    if held > 0 {
        info!(
            versions = held,
            "quarantined versions kept out until `gomirror retry`"
        );
    }
    tally.kept_out += held as u64;
}

/// Resolves `entries` against upstream, concurrently. A module that cannot
/// be listed is a plan error (exit 1), not a fatal one. With the feed on,
/// the modules listed are recorded, for their refresh interval.
async fn plan_watchlist(
    ctx: &Arc<Ctx>,
    config: &Config,
    entries: &[&WatchEntry],
    tally: &mut Tally,
) -> Result<Vec<ModVer>, SyncError> {
    let resolved: Vec<_> = stream::iter(entries)
        .map(|entry| async move {
            (
                &entry.module,
                resolve(ctx, &entry.module, &entry.selector).await,
            )
        })
        .buffer_unordered(config.fetch.concurrency)
        .collect()
        .await;
    let mut selected = Vec::new();
    let mut listed = Vec::new();
    let mut rejections = Vec::new();
    for (module, Resolved { versions, rejected }) in resolved {
        for r in &rejected {
            warn!(module = %r.module, version = %r.version, "upstream entry rejected: {}", r.reason);
            rejections.push(RejectedEntry {
                module: r.module.clone(),
                entry: r.version.clone(),
                reason: r.reason.clone(),
            });
        }
        tally.rejected.extend(rejected);
        match versions {
            Ok(versions) => {
                selected.extend(versions);
                listed.push(module.clone());
            }
            Err(e) => tally
                .plan_errors
                .push(PlanError::new(PlanSource::Watch, e.to_string())),
        }
    }
    // Stored like the feed's, so `status` shows them (see: #13).
    if !rejections.is_empty() {
        ctx.store.record_rejections(ctx.run_id, &rejections).await?;
    }
    if config.feed.enabled && !listed.is_empty() {
        ctx.store.mark_listed(&listed).await?;
    }
    Ok(selected)
}

/// What one watch entry resolved to upstream.
struct Resolved {
    /// The versions it selects, or why it could not be listed.
    versions: Result<Vec<ModVer>, Unlisted>,
    /// What upstream listed that can never be mirrored, kept even when the
    /// module could not be listed (a bad `@latest` is the only answer).
    rejected: Vec<Rejected>,
}

/// The versions one watch entry selects, and what upstream listed that
/// can never be mirrored.
async fn resolve(ctx: &Ctx, module: &ModulePath, selector: &Selector) -> Resolved {
    let mut rejected = Vec::new();
    let versions = select(ctx, module, selector, &mut rejected).await;
    Resolved { versions, rejected }
}

async fn select(
    ctx: &Ctx,
    module: &ModulePath,
    selector: &Selector,
    rejected: &mut Vec<Rejected>,
) -> Result<Vec<ModVer>, Unlisted> {
    if let Selector::Exact(v) = selector {
        // Named exactly: no listing needed; `.info` will say if it exists.
        return ModVer::new(module.clone(), v.clone())
            .map(|mv| vec![mv])
            .map_err(|e| Unlisted::Failed(e.to_string()));
    }
    let list = ctx
        .get_optional(module, &layout::list_rel(module), MAX_LIST)
        .await
        .map_err(Unlisted::Failed)?;
    let (tagged, list_rejected) =
        list.map_or_else(Default::default, |body| plan::parse_list(module, &body));
    rejected.extend(list_rejected);
    let mut listing = Listing {
        tagged,
        latest: None,
    };
    if listing.tagged.is_empty() && !matches!(selector, Selector::Range(_)) {
        // Only a module without tags needs @latest (a pseudo-version).
        if let Some(body) = ctx
            .get_optional(module, &layout::latest_rel(module), verify::MAX_INFO)
            .await
            .map_err(Unlisted::Failed)?
        {
            match plan::parse_latest(module, &body) {
                Ok(v) => listing.latest = Some(v),
                Err(r) => rejected.push(r),
            }
        }
    }
    let versions = selector.select(&listing.tagged, listing.latest.as_ref());
    if versions.is_empty() && listing.tagged.is_empty() && listing.latest.is_none() {
        return Err(Unlisted::NotFound(module.clone()));
    }
    Ok(versions
        .into_iter()
        .filter_map(|v| ModVer::new(module.clone(), v).ok())
        .collect())
}

/// Why a module could not be listed upstream.
#[derive(Debug)]
enum Unlisted {
    /// Upstream has no `@v/list` versions and no `@latest` for it.
    NotFound(ModulePath),
    /// Asking failed (or the module is private with no proxy to ask).
    Failed(String),
}

impl std::fmt::Display for Unlisted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Unlisted::NotFound(module) => write!(
                f,
                "{module}: not found upstream (no @v/list versions, no @latest)"
            ),
            Unlisted::Failed(e) => f.write_str(e),
        }
    }
}

/// `@v/list` holds one short line per version; 16 MiB is far beyond any
/// real module and bounds what a hostile upstream can make us hold.
const MAX_LIST: u64 = 16 << 20;

impl Ctx {
    /// Was `mv` planned only because clients missed it? See: #14
    fn learned_only(&self, mv: &ModVer) -> bool {
        self.learned_only.get().is_some_and(|l| l.contains(mv))
    }

    /// The client that fetches `mv`: a private module's own (`None` if it
    /// has none), the feed's base for versions planned from the feed, the
    /// configured upstreams for everything else.
    fn client_for(&self, mv: &ModVer) -> Option<&Client> {
        if self.routes.is_private(&mv.path) {
            return self.routes.client(&mv.path);
        }
        Some(match (&self.feed_client, self.feed_jobs.get()) {
            (Some(feed), Some(jobs)) if jobs.contains(mv) => feed,
            _ => &self.client,
        })
    }

    /// GETs a small body of `module`; `None` when upstream has no such file.
    async fn get_optional(
        &self,
        module: &ModulePath,
        rel: &str,
        limit: u64,
    ) -> Result<Option<bytes::Bytes>, String> {
        let Some(client) = self.routes.client(module) else {
            return Err(format!(
                "{module}: private module: no [upstream] private_proxies to list it from"
            ));
        };
        match client.get(rel, limit, &self.stop).await {
            Ok(body) => Ok(Some(body)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(chain(&e)),
        }
    }
}

/// The whole per-version pipeline, bounded: at most `window` versions are
/// in flight, and the fetch client bounds requests on its own.
async fn fetch_verify_publish(
    ctx: &Arc<Ctx>,
    jobs: Vec<Job>,
    tally: &mut Tally,
    progress: Arc<dyn Progress>,
) -> Result<(), SyncError> {
    let window = ctx.window;
    let (tx, rx) = mpsc::channel(window);
    let producer = {
        let ctx = ctx.clone();
        async move {
            let results = stream::iter(jobs)
                .take_until(ctx.stop.clone().cancelled_owned())
                .map(|job| tokio::spawn(version::process(ctx.clone(), job)))
                .buffer_unordered(window);
            let mut results = std::pin::pin!(results);
            while let Some(joined) = results.next().await {
                let finished = joined.unwrap_or_else(Finished::Panicked);
                if tx.send(finished).await.is_err() {
                    return;
                }
            }
        }
    };
    let collector = batch::collect(ctx, rx, tally, progress);
    let ((), collected) = tokio::join!(producer, collector);
    collected
}

pub(crate) use crate::error::chain;
