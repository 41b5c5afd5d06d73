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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::error::{blocking, TaskError};
use crate::fetch::{Client, ClientError};
use crate::lock::{LockError, RunLock};
use crate::module::ModVer;
use crate::plan::toolchain::{self, Platform};
use crate::plan::{Job, Want};
use crate::project::closure::{self, Closure};
use crate::project::graph::ModSource;
use crate::project::{Project, ProjectError};
use crate::publish::layout::{self, Kind, Tree};
use crate::state::{Need, ProjectSeen, ProjectStatus, RunId, SeenClosure, StateError, Store};
use crate::verify::MAX_GO_MOD;

use super::Ctx;

/// go.mod files from the tree, else upstream; counts what it asked upstream.
pub struct TreeThenUpstream {
    tree: Tree,
    client: Client,
    token: CancellationToken,
    upstream_requests: AtomicUsize,
}

impl TreeThenUpstream {
    pub fn new(tree: Tree, client: Client, token: CancellationToken) -> TreeThenUpstream {
        TreeThenUpstream {
            tree,
            client,
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
        let published = self.tree.version_file(mv, Kind::Mod);
        match tokio::fs::read(&published).await {
            Ok(data) => return Ok(data.into()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(format!("{mv}: reading {}: {e}", published.display())),
        }
        self.upstream_requests.fetch_add(1, Ordering::Relaxed);
        let rel = layout::version_rel(mv, Kind::Mod);
        self.client
            .get(&rel, MAX_GO_MOD, &self.token)
            .await
            .map_err(|e| format!("{mv}: {}", crate::error::chain(&e)))
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
}

/// Why a closure could not be computed at all.
#[derive(Debug, thiserror::Error)]
pub enum ClosureError {
    #[error(transparent)]
    Project(#[from] ProjectError),
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// Computes the closure of the project in `dir` and compares it with the tree. Publishes
/// nothing and takes no lock: it only reads.
pub async fn closure_report(
    config: &Config,
    dir: &Path,
    token: CancellationToken,
) -> Result<ClosureReport, ClosureError> {
    let owned = dir.to_path_buf();
    let project = blocking("reading the project", move || Project::load(&owned)).await??;
    let client = Client::new(config.upstreams.clone(), &config.fetch)?;
    let tree = Tree::new(&config.tree_dir);
    let source = TreeThenUpstream::new(tree.clone(), client, token);
    let closure = closure::closure(&project, &source, config.fetch.concurrency).await;
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
    let lacking: Vec<Lack> = blocking("looking in the tree", move || {
        needed
            .into_iter()
            .filter(|l| !tree.version_file(&l.mv, l.kind).is_file())
            .collect()
    })
    .await?;
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
    })
}

/// The closure's toolchain for each platform, not yet looked for in the tree.
fn toolchain_needs(closure: &Closure, platforms: &[Platform]) -> Vec<ToolchainNeed> {
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

/// A configured project as this run saw it.
#[derive(Debug)]
pub struct ProjectRun {
    pub dir: PathBuf,
    /// The closure, or why the project could not be read.
    pub closure: Result<Closure, String>,
}

/// Jobs for every configured project's closure (re-read each run), and each project's
/// result. A project that cannot be read is an error of that project; the others still sync.
pub(super) async fn plan_projects(
    ctx: &Ctx,
    config: &Config,
) -> Result<Vec<ProjectRun>, TaskError> {
    let patterns = config.projects.clone();
    let dirs = blocking("expanding [[project]] paths", move || expand(&patterns)).await?;
    let source = TreeThenUpstream::new(ctx.tree.clone(), ctx.client.clone(), ctx.stop.clone());
    let mut runs = Vec::with_capacity(dirs.len());
    for dir in dirs {
        let closure = match dir {
            Err(e) => Err(e),
            Ok(dir) => {
                let d = dir.clone();
                let loaded = blocking("reading a project", move || Project::load(&d)).await?;
                let closure = match loaded {
                    Ok(project) => {
                        Ok(closure::closure(&project, &source, config.fetch.concurrency).await)
                    }
                    Err(e) => Err(crate::error::chain(&e)),
                };
                runs.push(ProjectRun { dir, closure });
                continue;
            }
        };
        runs.push(ProjectRun {
            dir: PathBuf::new(),
            closure,
        });
    }
    Ok(runs)
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
fn expand(patterns: &[PathBuf]) -> Vec<Result<PathBuf, String>> {
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
        })
    }

    pub(super) fn run(&self) -> ProjectRun {
        ProjectRun {
            dir: self.dir.clone(),
            closure: Ok(self.closure.clone()),
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

/// Takes the run lock at `path`: at once, or waiting as `wait` says.
pub(super) async fn take_lock(
    path: &Path,
    wait: Option<LockWait>,
    token: &CancellationToken,
) -> Result<RunLock, LockError> {
    match wait {
        None => RunLock::acquire(path),
        Some(w) => {
            let mut waiting = w.waiting;
            RunLock::acquire_waiting(path, w.timeout, token, &mut waiting).await
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
