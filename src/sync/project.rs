//! A project's closure against this mirror: which of the files it needs the tree has.
//!
//! go.mod files come from the tree where a version is published (every published file was
//! verified), else from the upstream proxies: the graph is only discovered with them, and
//! whatever is later published from it is fetched and verified again like any version.
//! A warm closure (everything mirrored) therefore makes no upstream request.
//!
//! A run records each project it computed when it ends (`record`: needed, present,
//! missing by reason, in `state::projects`). `sync --project DIR` computes one closure
//! before the run takes the lock ([`ProjectOnly::compute`]) and hands it to a run that
//! mirrors only that (`RunOptions::project`), waiting for the lock if asked ([`LockWait`]).
//!
//! Private modules (`[upstream] private`, GONOPROXY) are asked of their own upstreams
//! ([`Routes`]) or of no one; below one asked of no one the closure is approximate
//! (`closure::below_private`).
//!
//! go.sum is a second witness (see: #12). Where the checksum database covers a version it
//! is the authority: after the run, every go.sum line is compared with what was verified,
//! and a differing one fails that project (`SECURITY ERROR`), changing nothing in state.
//! Where nothing covers it (private, `key = "off"`), go.sum is the only witness and is
//! checked before publishing ([`Witnesses`], used by `version.rs`).

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{blocking, TaskError};
use crate::fetch::{Client, ClientError};
use crate::lock::{LockError, RunLock};
use crate::module::{ModVer, ModulePath, PrefixPatterns};
use crate::plan::toolchain::{self, Platform};
use crate::plan::{Job, Want};
use crate::project::closure::{self, Closure};
use crate::project::gosum::{self, GoSum};
use crate::project::graph::ModSource;
use crate::project::{Project, ProjectError};
use crate::publish::layout::{self, Kind, Tree};
use crate::state::{Need, ProjectSeen, ProjectStatus, RunId, SeenClosure, StateError, Store};
use crate::verify::MAX_GO_MOD;

use super::Ctx;

/// Which upstream a module is asked of: `[upstream] private` modules (GONOPROXY) never go
/// to the public proxies, only to `private_proxies`, if any.
// See: #12
#[derive(Clone)]
pub struct Routes {
    public: Client,
    private: PrefixPatterns,
    /// `None`: private modules are asked of no one.
    private_client: Option<Client>,
}

impl Routes {
    pub fn new(config: &Config, public: Client) -> Result<Routes, ClientError> {
        let private_client = match config.private.proxies.is_empty() {
            true => None,
            false => Some(public.with_upstreams(config.private.proxies.clone())?),
        };
        Ok(Routes {
            public,
            private: config.private.patterns.clone(),
            private_client,
        })
    }

    /// The client for `path`; `None` for a private module with no private upstream.
    pub fn client(&self, path: &ModulePath) -> Option<&Client> {
        match self.is_private(path) {
            true => self.private_client.as_ref(),
            false => Some(&self.public),
        }
    }

    pub fn is_private(&self, path: &ModulePath) -> bool {
        self.private.matches(path.as_str())
    }
}

/// go.mod files from the tree, else upstream; counts what it asked upstream.
pub struct TreeThenUpstream {
    tree: Tree,
    routes: Routes,
    token: CancellationToken,
    upstream_requests: AtomicUsize,
}

impl TreeThenUpstream {
    pub fn new(tree: Tree, routes: Routes, token: CancellationToken) -> TreeThenUpstream {
        TreeThenUpstream {
            tree,
            routes,
            token,
            upstream_requests: AtomicUsize::new(0),
        }
    }

    /// How many go.mod files were asked of upstream so far.
    pub fn upstream_requests(&self) -> usize {
        self.upstream_requests.load(Ordering::Relaxed)
    }
}

impl ModSource for TreeThenUpstream {
    async fn go_mod(&self, mv: &ModVer) -> Result<bytes::Bytes, String> {
        if let Some(b) = self.tree.bucket() {
            let rel = layout::version_rel(mv, Kind::Mod);
            match b.read_async(&rel, MAX_GO_MOD).await {
                Ok(Some(data)) => return Ok(data.into()),
                Ok(None) => {}
                Err(e) => return Err(format!("{mv}: {}", crate::error::chain(&e))),
            }
        } else {
            let published = self.tree.version_file(mv, Kind::Mod);
            match tokio::fs::read(&published).await {
                Ok(data) => return Ok(data.into()),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{mv}: reading {}: {e}", published.display())),
            }
        }
        let Some(client) = self.routes.client(&mv.path) else {
            return Err(format!(
                "{mv}: private module: no [upstream] private_proxies"
            ));
        };
        self.upstream_requests.fetch_add(1, Ordering::Relaxed);
        let rel = layout::version_rel(mv, Kind::Mod);
        client
            .get(&rel, MAX_GO_MOD, &self.token)
            .await
            .map_err(|e| format!("{mv}: {}", crate::error::chain(&e)))
    }

    fn is_private(&self, path: &ModulePath) -> bool {
        self.routes.client(path).is_none()
    }
}

/// One file the closure needs and the tree lacks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lack {
    pub mv: ModVer,
    pub kind: Kind,
}

/// The project's toolchain for one `[toolchain] platforms` entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolchainNeed {
    pub platform: Platform,
    /// `golang.org/toolchain@v0.0.1-<release>.<os>-<arch>`, or why the release names none.
    pub mv: Result<ModVer, String>,
    /// The tree has its `.info`, `.mod` and `.zip`.
    pub present: bool,
}

/// A project's closure and what the tree lacks of it.
#[derive(Debug)]
pub struct ClosureReport {
    pub dir: PathBuf,
    pub closure: Closure,
    /// The toolchain the project switches to, per configured platform (none without a
    /// toolchain, or with `[toolchain] platforms = []`).
    pub toolchains: Vec<ToolchainNeed>,
    /// Why a sync would not mirror `toolchains` (verification off, or the toolchain module
    /// private): the go command refuses unverified toolchains.
    pub toolchain_refused: Option<String>,
    /// Files of the closure and of `toolchains` the tree does not have.
    pub lacking: Vec<Lack>,
    /// go.mod files asked of upstream while computing it.
    pub upstream_requests: usize,
    /// The project's go.sum files (each main module's, and go.work.sum).
    pub sums: Vec<GoSum>,
}

/// Why a closure could not be computed at all.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    GoSum(#[from] gosum::GoSumError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Task(#[from] TaskError),
    #[error(transparent)]
    Bucket(#[from] crate::publish::bucket::BucketError),
    /// A bucket tree could not be asked what it holds (see: #17).
    #[error("looking in the tree")]
    Tree(#[source] crate::publish::WriteError),
}

/// Computes the closure of the project in `dir` and compares it with the tree. Publishes
/// nothing and takes no lock: it only reads.
pub async fn closure_report(
    config: &Config,
    dir: &Path,
    token: CancellationToken,
) -> Result<ClosureReport, ClosureError> {
    let owned = dir.to_path_buf();
    let (project, sums) = blocking("reading the project", move || load(&owned)).await??;
    let client = Client::new(config.upstreams.clone(), &config.fetch)?;
    let tree = crate::publish::open_tree(config).await?;
    let routes = Routes::new(config, client)?;
    let source = TreeThenUpstream::new(tree.clone(), routes.clone(), token);
    let mut closure = closure::closure(&project, &source, config.fetch.concurrency).await;
    closure::below_private(&mut closure, &sums, |mv| routes.is_private(&mv.path));
    let needed: Vec<Lack> = closure
        .mods
        .iter()
        .flat_map(|mv| {
            let zip = closure.zips.contains(mv).then_some(Kind::Zip);
            [Some(Kind::Info), Some(Kind::Mod), zip]
                .into_iter()
                .flatten()
                .map(|kind| Lack {
                    mv: mv.clone(),
                    kind,
                })
        })
        .collect();
    let toolchains = toolchain_needs(&closure, &config.toolchain.platforms);
    let toolchain_refused = (!toolchains.is_empty())
        .then(|| toolchain::check_verified(config.sumdb.as_ref()).err())
        .flatten()
        .map(|e| e.to_string());
    let needed = needed.into_iter().chain(
        toolchains
            .iter()
            .filter_map(|t| t.mv.as_ref().ok())
            .flat_map(|mv| {
                [Kind::Info, Kind::Mod, Kind::Zip].map(|kind| Lack {
                    mv: mv.clone(),
                    kind,
                })
            }),
    );
    let needed: Vec<Lack> = needed.collect();
    let lacking: Vec<Lack> = blocking("looking in the tree", move || -> Result<_, ClosureError> {
        match tree.bucket() {
            None => Ok(needed
                .into_iter()
                .filter(|l| !tree.version_file(&l.mv, l.kind).is_file())
                .collect()),
            Some(b) => {
                let rels: Vec<String> = needed
                    .iter()
                    .map(|l| layout::version_rel(&l.mv, l.kind))
                    .collect();
                let found = b.sha256_all(&rels);
                let mut lacking = Vec::new();
                for (l, found) in needed.into_iter().zip(found) {
                    if found.map_err(ClosureError::Tree)?.is_none() {
                        lacking.push(l);
                    }
                }
                Ok(lacking)
            }
        }
    })
    .await??;
    let toolchains = toolchains
        .into_iter()
        .map(|mut t| {
            t.present =
                t.mv.as_ref()
                    .is_ok_and(|mv| !lacking.iter().any(|l| &l.mv == mv));
            t
        })
        .collect();
    Ok(ClosureReport {
        dir: dir.to_path_buf(),
        closure,
        toolchains,
        toolchain_refused,
        lacking,
        upstream_requests: source.upstream_requests(),
        sums,
    })
}

/// The closure's toolchain for each platform, not yet looked for in the tree.
pub(super) fn toolchain_needs(closure: &Closure, platforms: &[Platform]) -> Vec<ToolchainNeed> {
    let Some(release) = &closure.toolchain else {
        return Vec::new();
    };
    platforms
        .iter()
        .map(|p| ToolchainNeed {
            platform: p.clone(),
            mv: toolchain::toolchain_version(release, p).map_err(|e| e.to_string()),
            present: false,
        })
        .collect()
}

/// A project and its go.sum files (each main module's, and go.work.sum).
pub(super) fn load(dir: &Path) -> Result<(Project, Vec<GoSum>), ClosureError> {
    let project = Project::load(dir)?;
    let sums = gosum::project_sums(&project)?;
    Ok((project, sums))
}

/// A configured project as this run saw it.
#[derive(Debug)]
pub struct ProjectRun {
    pub dir: PathBuf,
    /// The closure, or why the project could not be read.
    pub closure: Result<Closure, String>,
    /// Its go.sum files: the second witness of what the run verified.
    pub sums: Vec<GoSum>,
}

/// Jobs for every configured project's closure (re-read each run), and each project's
/// result. A project that cannot be read is an error of that project; the others still sync.
pub(super) async fn plan_projects(
    ctx: &Ctx,
    config: &Config,
) -> Result<Vec<ProjectRun>, TaskError> {
    let patterns = config.projects.clone();
    let dirs = blocking("expanding [[project]] paths", move || expand(&patterns)).await?;
    let source = TreeThenUpstream::new(ctx.tree.clone(), ctx.routes.clone(), ctx.stop.clone());
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let closure = match dir {
            Err(e) => Err(e),
            Ok(dir) => {
                let d = dir.clone();
                let loaded = blocking("reading a project", move || load(&d)).await?;
                let (closure, sums) = match loaded {
                    Ok((project, sums)) => {
                        let mut c =
                            closure::closure(&project, &source, config.fetch.concurrency).await;
                        closure::below_private(&mut c, &sums, |mv| ctx.routes.is_private(&mv.path));
                        (Ok(c), sums)
                    }
                    Err(e) => (Err(crate::error::chain(&e)), Vec::new()),
                };
                runs.push(ProjectRun { dir, closure, sums });
                continue;
            }
        };
        runs.push(ProjectRun {
            dir: PathBuf::new(),
            closure,
            sums: Vec::new(),
        });
    }
    Ok(runs)
}

/// One go.sum line vouching for a version no checksum database covers.
#[derive(Clone, Debug)]
pub(super) struct Witness {
    pub file: PathBuf,
    pub line: usize,
    pub go_mod: bool,
    pub hash: String,
}

/// The go.sum lines of the run's projects for versions no checksum database covers: the
/// only witness of those, checked before they are published.
pub(super) type Witnesses = HashMap<ModVer, Vec<Witness>>;

/// [`Witnesses`] of `projects` (read without errors), for versions `covered` says no.
pub(super) fn witnesses(projects: &[ProjectRun], covered: impl Fn(&ModVer) -> bool) -> Witnesses {
    let mut out = Witnesses::new();
    for sum in projects
        .iter()
        .filter(|p| p.closure.is_ok())
        .flat_map(|p| &p.sums)
    {
        for l in sum.lines.iter().filter(|l| !covered(&l.mv)) {
            out.entry(l.mv.clone()).or_default().push(Witness {
                file: sum.file.clone(),
                line: l.line,
                go_mod: l.go_mod,
                hash: l.hash.clone(),
            });
        }
    }
    out
}

/// The first witness of `mv` that disagrees with what was fetched and verified: a
/// `SECURITY ERROR` naming the go.sum line. `h1_zip` is `None` for a go.mod-only fetch.
pub(super) fn check_witness(
    mv: &ModVer,
    witnesses: &[Witness],
    h1_mod: &str,
    h1_zip: Option<&str>,
) -> Result<(), String> {
    for w in witnesses {
        let verified = if w.go_mod { Some(h1_mod) } else { h1_zip };
        match verified {
            Some(h) if h != w.hash => {
                let what = if w.go_mod { "/go.mod" } else { "" };
                return Err(format!(
                    "SECURITY ERROR: {}:{}: {mv}{what}: go.sum has {}, upstream served {h} \
                     (no checksum database covers it: go.sum is the only witness)",
                    w.file.display(),
                    w.line,
                    w.hash
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// After a run: every project's go.sum lines against the hashes the tree's versions were
/// verified with. Returns one `SECURITY ERROR` per differing line, each failing its
/// project (exit 1); state and tree are left as they are: one bad go.sum must not block a
/// version for every other project. `db` names the checksum database; `covered` says
/// which versions it covers.
pub(super) async fn check_witnesses(
    ctx: &Ctx,
    projects: &[ProjectRun],
    db: Option<&str>,
    covered: impl Fn(&ModVer) -> bool,
) -> Result<Vec<String>, StateError> {
    let wanted: BTreeSet<ModVer> = projects
        .iter()
        .flat_map(|p| &p.sums)
        .flat_map(|s| &s.lines)
        .map(|l| l.mv.clone())
        .collect();
    if wanted.is_empty() {
        return Ok(Vec::new());
    }
    let wanted: Vec<ModVer> = wanted.into_iter().collect();
    let hashes: HashMap<ModVer, (String, Option<String>)> = ctx
        .store
        .verified_hashes(&wanted)
        .await?
        .into_iter()
        .map(|h| (h.mv, (h.h1_mod, h.h1_zip)))
        .collect();
    let mut errors = Vec::new();
    for p in projects {
        for sum in &p.sums {
            for l in &sum.lines {
                let Some((h1_mod, h1_zip)) = hashes.get(&l.mv) else {
                    continue;
                };
                let verified = if l.go_mod {
                    Some(h1_mod)
                } else {
                    h1_zip.as_ref()
                };
                let Some(verified) = verified.filter(|h| **h != l.hash) else {
                    continue;
                };
                let by = match db {
                    Some(db) if covered(&l.mv) => format!("checksum database {db} verified"),
                    _ => "gomirror published".to_owned(),
                };
                let what = if l.go_mod { "/go.mod" } else { "" };
                errors.push(format!(
                    "project {}: SECURITY ERROR: {}:{}: {}{what}: go.sum has {}, {by} {verified}",
                    p.dir.display(),
                    sum.file.display(),
                    l.line,
                    l.mv,
                    l.hash
                ));
            }
        }
    }
    Ok(errors)
}

/// The jobs a project's closure asks for: every version's `.info` and `.mod`, and the zip
/// where a build needs it.
pub(super) fn jobs(closure: &Closure) -> impl Iterator<Item = Job> + '_ {
    closure.mods.iter().map(|mv| Job {
        mv: mv.clone(),
        want: if closure.zips.contains(mv) {
            Want::Files
        } else {
            Want::GoMod
        },
    })
}

/// Each pattern's directories: itself when it has no glob characters (it must exist), else
/// every match that holds a go.mod or go.work.
pub(super) fn expand(patterns: &[PathBuf]) -> Vec<Result<PathBuf, String>> {
    let mut out = Vec::new();
    for p in patterns {
        let text = p.to_string_lossy();
        if !text.contains(['*', '?', '[']) {
            out.push(Ok(p.clone()));
            continue;
        }
        let matches = match glob::glob(&text) {
            Ok(m) => m,
            Err(e) => {
                out.push(Err(format!("[[project]] path {text:?}: {e}")));
                continue;
            }
        };
        let before = out.len();
        for m in matches {
            match m {
                Ok(dir) if dir.join("go.mod").is_file() || dir.join("go.work").is_file() => {
                    out.push(Ok(dir))
                }
                Ok(_) => {}
                Err(e) => out.push(Err(format!("[[project]] path {text:?}: {e}"))),
            }
        }
        if out.len() == before {
            tracing::warn!(pattern = %text, "[[project]] path matches no directory with a go.mod or go.work");
        }
    }
    out
}

/// A project's closure computed before the run took the lock: what `sync --project DIR`
/// mirrors, and nothing else (no feed, no watchlist, no other project). See: #12
#[derive(Debug, Clone)]
pub struct ProjectOnly {
    pub dir: PathBuf,
    pub closure: Closure,
    /// Its go.sum files, checked after the run as a full sync checks them.
    pub sums: Vec<GoSum>,
}

impl ProjectOnly {
    /// Computes the closure of `dir` without the lock and without the state database:
    /// go.mod files from the tree, else upstream (what `closure_report` reads), so many
    /// CI jobs can compute theirs while a sync runs.
    pub async fn compute(
        config: &Config,
        dir: &Path,
        token: CancellationToken,
    ) -> Result<ProjectOnly, ClosureError> {
        let report = closure_report(config, dir, token).await?;
        Ok(ProjectOnly {
            dir: report.dir,
            closure: report.closure,
            sums: report.sums,
        })
    }

    pub(super) fn run(&self) -> ProjectRun {
        ProjectRun {
            dir: self.dir.clone(),
            closure: Ok(self.closure.clone()),
            sums: self.sums.clone(),
        }
    }
}

/// How a run waits for the run lock another run holds (`sync --wait`).
#[derive(Debug, Clone, Copy)]
pub struct LockWait {
    /// Give up after this long ([`LockError::Timeout`], exit 2).
    pub timeout: std::time::Duration,
    /// Told once per lock, with the holder's pid, when the run starts waiting: main.rs
    /// says so on stderr.
    pub waiting: fn(Option<u32>),
}

/// Takes the run lock at `path`: at once, or waiting as `wait` says. A run
/// takes two locks in turn; `since` is when it started waiting for the
/// first, so that both together wait `wait.timeout` at most.
pub(super) async fn take_lock(
    path: &Path,
    wait: Option<LockWait>,
    since: std::time::Instant,
    token: &CancellationToken,
) -> Result<RunLock, LockError> {
    match wait {
        None => RunLock::acquire(path),
        Some(w) => {
            let mut waiting = w.waiting;
            let left = w.timeout.saturating_sub(since.elapsed());
            RunLock::acquire_waiting(path, left, token, &mut waiting)
                .await
                .map_err(|e| match e {
                    LockError::Timeout { path, pid, .. } => LockError::Timeout {
                        path,
                        pid,
                        waited: w.timeout,
                    },
                    e => e,
                })
        }
    }
}

/// Records what this run saw of its projects, counted against the versions' statuses
/// as the run left them; returns their statuses. A full run (`forget_others`) reads every
/// configured project, so projects it did not see are forgotten. See: #12
pub(super) async fn record(
    store: &Store,
    run: RunId,
    config: &Config,
    runs: &[ProjectRun],
    forget_others: bool,
) -> Result<Vec<ProjectStatus>, StateError> {
    let private = |mv: &ModVer| {
        config
            .sumdb
            .as_ref()
            .is_some_and(|s| s.is_private(mv.path.as_str()))
    };
    let seen = runs
        .iter()
        // A pattern that could not be expanded has no directory; it is a plan error.
        .filter(|r| !r.dir.as_os_str().is_empty())
        .map(|r| ProjectSeen {
            dir: project_key(&r.dir),
            closure: r
                .closure
                .as_ref()
                .map(|c| SeenClosure {
                    go: c.go.to_string(),
                    toolchain: c.toolchain.clone(),
                    needs: c
                        .mods
                        .iter()
                        .map(|mv| Need {
                            mv: mv.clone(),
                            zip: c.zips.contains(mv),
                            private: private(mv),
                        })
                        .collect(),
                })
                .map_err(Clone::clone),
        })
        .collect();
    store.record_projects(run, seen, forget_others).await
}

/// The key a project is known by in state and metrics: its canonical directory, so
/// `./` in a CI checkout and the configured path name the same project.
pub fn project_key(dir: &Path) -> String {
    std::fs::canonicalize(dir)
        .unwrap_or_else(|_| dir.to_path_buf())
        .display()
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    // See: #12: `--wait` waits for two locks in turn, and its timeout covers
    // both: the second lock gets what the first left.
    #[tokio::test]
    async fn issue_12_the_wait_timeout_covers_both_locks() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("db.lock");
        let _held = RunLock::acquire(&path).expect("first holder");
        let wait = LockWait {
            timeout: std::time::Duration::from_secs(600),
            waiting: |_| {},
        };
        // As if the first lock had taken the whole timeout already.
        let since = std::time::Instant::now() - wait.timeout;
        let token = CancellationToken::new();
        match take_lock(&path, Some(wait), since, &token).await {
            Err(LockError::Timeout { waited, .. }) => assert_eq!(waited, wait.timeout),
            other => panic!("want a timeout at once, got {:?}", other.map(drop)),
        }
    }
}
