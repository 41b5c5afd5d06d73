//! `gomirror prune`: what the retention policy removes, wired (see: #15).
//!
//! 1. Under the run locks sync takes (so no sync runs meanwhile), a prune a
//!    kill interrupted is completed first (`commit::unpublish` waits only
//!    what is left of the lists' lifetime).
//! 2. What stays whatever the policy, from the tree alone — no upstream
//!    request: every `[[project]]`'s closure (go.mod files read from the
//!    tree; a project that cannot be read, or whose graph reaches a go.mod
//!    the tree lacks, makes the prune refuse: it cannot know what that
//!    project needs) with its toolchains; every `[[watch]]` selector
//!    evaluated against the tree's own versions; `[toolchain]` platforms'
//!    toolchains.
//! 3. `plan::retention::decide` over state's versions and their last use.
//! 4. Unless `--dry-run`: `Store::begin_prune` (the versions `pruning`),
//!    then `commit::unpublish`.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use tokio_util::sync::CancellationToken;

use super::project::{self, ClosureError, LockWait};
use crate::commit::{self, CommitError, Unpublished};
use crate::config::Config;
use crate::error::TaskError;
use crate::lock::LockError;
use crate::module::{ModVer, ModulePath, Version};
use crate::plan::retention::{self, Candidate, Decision, Need, Policy, Verdict};
use crate::project::closure;
use crate::project::graph::ModSource;
use crate::publish::lease::Lease;
use crate::publish::{Kind, Tree};
use crate::state::{PruneItem, StateError, Store};

/// How a prune runs.
#[derive(Debug, Clone, Default)]
pub struct PruneOptions {
    /// Decide and report; touch nothing.
    pub dry_run: bool,
    /// Wait for a running sync's lock instead of failing.
    pub wait: Option<LockWait>,
}

/// What a prune decided and did.
#[derive(Debug)]
pub struct PruneReport {
    pub decision: Decision,
    /// Clients' use is recorded (`[clients] access_log` is set).
    pub use_recorded: bool,
    /// `[retention]` has a rule that may remove something.
    pub policy_set: bool,
    pub dry_run: bool,
    /// Versions of a prune a kill interrupted, completed first.
    pub resumed: usize,
    /// Versions and bytes this prune removed; `None` for a dry run.
    pub pruned: Option<(usize, u64)>,
    /// A signal stopped the prune during its wait; the next one completes it.
    pub interrupted: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum PruneError {
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Commit(#[from] CommitError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Bucket(#[from] crate::publish::bucket::BucketError),
    #[error(transparent)]
    Lease(#[from] crate::publish::lease::LeaseError),
    /// What a project needs cannot be known: nothing is pruned.
    #[error("project {}: cannot compute what it needs, so nothing is pruned", .dir.display())]
    Project {
        dir: PathBuf,
        #[source]
        source: ClosureError,
    },
    #[error("[[project]] path: {0}; nothing is pruned")]
    ProjectPath(String),
    /// The project's graph reaches go.mod files the tree lacks.
    #[error(
        "project {}: its module graph reaches go.mod files the tree lacks ({first}{}), \
         so what it needs is unknown and nothing is pruned; sync it first",
        .dir.display(),
        if *.more > 0 { format!(" and {} more", .more) } else { String::new() }
    )]
    Incomplete {
        dir: PathBuf,
        first: String,
        more: usize,
    },
}

/// Decides, and unless a dry run, prunes.
pub async fn prune(
    config: &Config,
    options: PruneOptions,
    token: &CancellationToken,
) -> Result<PruneReport, PruneError> {
    let tree = crate::publish::open_tree(config).await?;
    // The locks a sync takes; a dry run writes nothing and takes none.
    let _locks = match options.dry_run {
        true => None,
        false => {
            // One `--wait` covers both locks, as for a sync.
            let since = std::time::Instant::now();
            let t = project::take_lock(&tree.lock_file(), options.wait, since, token).await?;
            let db = crate::lock::db_lock_path(&config.database);
            let d = project::take_lock(&db, options.wait, since, token).await?;
            Some((t, d))
        }
    };
    // A bucket tree: the writer's lease too (see: #17).
    let lease = match (tree.bucket(), options.dry_run) {
        (Some(b), false) => Some(Lease::take(b, &tree.lock_file(), token.clone()).await?),
        _ => None,
    };
    let result = prune_locked(config, options, token, &tree).await;
    if let Some(lease) = lease {
        lease.release().await;
    }
    result
}

/// [`prune`], once its locks are held.
async fn prune_locked(
    config: &Config,
    options: PruneOptions,
    token: &CancellationToken,
    tree: &Tree,
) -> Result<PruneReport, PruneError> {
    let store = Store::open(&config.database).await?;
    let list_max_age = config.retention.list_max_age;
    let mut resumed = 0;
    if !options.dry_run {
        if let Some(open) = store.unfinished_prune().await? {
            resumed = open.versions;
            tracing::info!(versions = resumed, "completing an interrupted prune");
            let done = commit::unpublish(tree, &store, open, list_max_age, token).await?;
            if done == Unpublished::Interrupted {
                return Ok(report(
                    Decision::default(),
                    config,
                    &options,
                    resumed,
                    None,
                    true,
                ));
            }
        }
    }
    let candidates = candidates(&store).await?;
    let needed = needed(config, tree, &candidates).await?;
    let policy = Policy::new(&config.retention, config.clients.access_log.is_some());
    let now = time::OffsetDateTime::now_utc();
    let mut decision = retention::decide(&policy, candidates, &needed, now);
    drop(needed);
    if options.dry_run || !config.retention.is_set() {
        return Ok(report(decision, config, &options, resumed, None, false));
    }
    // What stays is counted; only what goes is shown after a prune, and
    // 100,000 verdicts are memory the removal does not need.
    decision.verdicts.retain(|v| v.reason.goes());
    decision.verdicts.shrink_to_fit();
    let figures = (decision.verdicts.len(), decision.going_bytes);
    if decision.verdicts.is_empty() {
        return Ok(report(
            decision,
            config,
            &options,
            resumed,
            Some((0, 0)),
            false,
        ));
    }
    // State records the verdicts where they are and hands them back.
    let going = std::mem::take(&mut decision.verdicts);
    let (open, going) = store.begin_prune(going).await?;
    decision.verdicts = going;
    let done = commit::unpublish(tree, &store, open, list_max_age, token).await?;
    let interrupted = done == Unpublished::Interrupted;
    let pruned = (!interrupted).then_some(figures);
    Ok(report(
        decision,
        config,
        &options,
        resumed,
        pruned,
        interrupted,
    ))
}

impl PruneItem for Verdict {
    fn mv(&self) -> &ModVer {
        &self.mv
    }

    fn reason(&self) -> impl std::fmt::Display + '_ {
        &self.reason
    }

    fn bytes(&self) -> u64 {
        self.bytes
    }
}

fn report(
    decision: Decision,
    config: &Config,
    options: &PruneOptions,
    resumed: usize,
    pruned: Option<(usize, u64)>,
    interrupted: bool,
) -> PruneReport {
    PruneReport {
        decision,
        use_recorded: config.clients.access_log.is_some(),
        policy_set: config.retention.is_set(),
        dry_run: options.dry_run,
        resumed,
        pruned,
        interrupted,
    }
}

/// State's versions in the tree as the policy's candidates.
async fn candidates(store: &Store) -> Result<Vec<Candidate>, PruneError> {
    let rows = store.retention_candidates().await?;
    Ok(rows
        .into_iter()
        .map(|r| Candidate {
            published_at: r.published_at,
            last_use: r.last_use,
            mv: r.mv,
            listed: r.listed,
            bytes: r.bytes,
        })
        .collect())
}

/// Versions rule 1 keeps: projects, watch selectors, toolchains.
async fn needed(
    config: &Config,
    tree: &Tree,
    candidates: &[Candidate],
) -> Result<HashMap<ModVer, Need>, PruneError> {
    let mut needed = HashMap::new();
    for (mv, need) in watched(config, candidates) {
        needed.entry(mv).or_insert(need);
    }
    let toolchain = crate::plan::toolchain::module_path();
    for c in candidates.iter().filter(|c| c.mv.path == toolchain) {
        let v = c.mv.version.as_str();
        if config
            .toolchain
            .platforms
            .iter()
            .any(|p| v.ends_with(&p.suffix()))
        {
            needed.insert(c.mv.clone(), Need::Toolchain);
        }
    }
    for dir in project::expand(&config.projects) {
        let dir = dir.map_err(PruneError::ProjectPath)?;
        for mv in project_needs(config, tree, &dir).await? {
            let need = Need::Project {
                dir: dir.display().to_string(),
            };
            needed.insert(mv, need);
        }
    }
    Ok(needed)
}

/// Each `[[watch]]` selector against the tree's listed versions of its module.
fn watched(config: &Config, candidates: &[Candidate]) -> Vec<(ModVer, Need)> {
    let watched: std::collections::HashSet<&ModulePath> =
        config.watch.iter().map(|w| &w.module).collect();
    let mut listed: BTreeMap<&ModulePath, Vec<Version>> = BTreeMap::new();
    for c in candidates
        .iter()
        .filter(|c| c.listed && watched.contains(&c.mv.path))
    {
        listed
            .entry(&c.mv.path)
            .or_default()
            .push(c.mv.version.clone());
    }
    let mut out = Vec::new();
    for w in &config.watch {
        let versions = listed.get(&w.module).map_or(&[][..], Vec::as_slice);
        let tagged: Vec<Version> = versions
            .iter()
            .filter(|v| !v.is_pseudo())
            .cloned()
            .collect();
        let (_, latest) = crate::publish::module_metadata(&w.module, versions);
        let latest = latest.map(|mv| mv.version);
        for v in w.selector.select(&tagged, latest.as_ref()) {
            if let Ok(mv) = ModVer::new(w.module.clone(), v) {
                let selector = format!("{} versions = {}", w.module, w.selector);
                out.push((mv, Need::Watch { selector }));
            }
        }
    }
    out
}

/// A project's closure and toolchains, go.mod files read from the tree only.
async fn project_needs(
    config: &Config,
    tree: &Tree,
    dir: &std::path::Path,
) -> Result<Vec<ModVer>, PruneError> {
    let owned = dir.to_path_buf();
    let loaded = crate::error::blocking("reading the project", move || project::load(&owned))
        .await?
        .map_err(|source| PruneError::Project {
            dir: dir.to_path_buf(),
            source,
        })?;
    let (p, sums) = loaded;
    let source = TreeOnly {
        tree: tree.clone(),
        private: config.private.patterns.clone(),
    };
    let mut c = closure::closure(&p, &source, config.fetch.concurrency).await;
    closure::below_private(&mut c, &sums, |mv| {
        config.private.is_private(mv.path.as_str())
    });
    if let Some(first) = c.errors.first() {
        return Err(PruneError::Incomplete {
            dir: dir.to_path_buf(),
            first: first.mv.to_string(),
            more: c.errors.len() - 1,
        });
    }
    let toolchains = project::toolchain_needs(&c, &config.toolchain.platforms);
    let mut out: Vec<ModVer> = c.mods.into_iter().collect();
    out.extend(toolchains.into_iter().filter_map(|t| t.mv.ok()));
    Ok(out)
}

/// go.mod files from the tree alone: a prune asks upstream nothing.
struct TreeOnly {
    tree: Tree,
    private: crate::module::PrefixPatterns,
}

impl ModSource for TreeOnly {
    async fn go_mod(&self, mv: &ModVer) -> Result<bytes::Bytes, String> {
        if let Some(b) = self.tree.bucket() {
            let rel = crate::publish::layout::version_rel(mv, Kind::Mod);
            return match b.read_async(&rel, crate::verify::MAX_GO_MOD).await {
                Ok(Some(data)) => Ok(data.into()),
                Ok(None) => Err(format!(
                    "{mv}: {} is missing",
                    b.display_path(&rel).display()
                )),
                Err(e) => Err(format!("{mv}: {}", crate::error::chain(&e))),
            };
        }
        let file = self.tree.version_file(mv, Kind::Mod);
        match tokio::fs::read(&file).await {
            Ok(data) => Ok(data.into()),
            Err(e) => Err(format!("{mv}: reading {}: {e}", file.display())),
        }
    }

    fn is_private(&self, path: &ModulePath) -> bool {
        self.private.matches(path.as_str())
    }
}
