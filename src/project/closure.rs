//! A project's closure: every file the go command fetches through GOPROXY to build, test,
//! download and tidy it, as module versions.
//!
//! - **`.mod` (and `.info`)**: every version whose go.mod the module graph reads, and every
//!   version of the build list (`go list -m all` reads `.info` of the whole build list, and
//!   the go.mod of each where go.sum has it). A `go 1.17` main module is also checked by
//!   `go mod tidy` against Go 1.16's unpruned graph (its default `-compat`), so that graph's
//!   go.mod files are added. A workspace adds each of its modules' own graph: `go mod tidy`
//!   runs per module. Go: cmd/go/internal/modcmd/tidy.go, modload/load.go
//!   `checkTidyCompatibility`; PROTOCOL.md "What a build reads".
//! - **Zips**: the whole build list, a documented superset of the modules that provide
//!   packages to `go build ./...`, `go test all` and `go mod tidy` (those need a package
//!   loader over every build tag and platform; the tests measure the difference against what
//!   the real go command fetched).
//! - **Toolchain**: the release the project's `go`/`toolchain` lines make a Go ≥ 1.21 switch
//!   to (Go: cmd/go/internal/toolchain/select.go `Select`): the higher of the `toolchain`
//!   line and the `go` line, where a bare `go 1.N` (N ≥ 21) means `go1.N.0`; a go.work's
//!   lines take the place of its modules'. Nothing below 1.21 can make go switch.

use std::collections::BTreeSet;

use super::graph::{self, Graph, GraphError, ModSource, Pruning};
use super::{MainModule, Project};
use crate::module::gover::{self, GoVersion};
use crate::module::ModVer;

/// What a project needs from the mirror.
#[derive(Clone, Debug)]
pub struct Closure {
    /// The version that decided pruning.
    pub go: GoVersion,
    pub pruning: Pruning,
    /// The project's graph (the workspace's, in workspace mode).
    pub graph: Graph,
    /// Versions whose `.info` and `.mod` are needed, as fetched (replacements applied).
    pub mods: BTreeSet<ModVer>,
    /// Versions whose `.zip` is needed too (a subset of `mods`).
    pub zips: BTreeSet<ModVer>,
    /// The Go release the project switches to (`go1.22.3`), if any.
    pub toolchain: Option<String>,
    /// Versions whose go.mod could not be had: the closure below them is unknown.
    pub errors: Vec<GraphError>,
    /// Private versions (GONOPROXY with no private upstream): never fetched, in neither
    /// `mods` nor `zips`.
    pub private: BTreeSet<ModVer>,
    /// The graph below a private version was taken from go.sum, not from go.mod files:
    /// see [`below_private`].
    pub approximate: bool,
}

/// Computes the closure of `project`, reading go.mod files through `source`.
pub async fn closure<S: ModSource>(project: &Project, source: &S, concurrency: usize) -> Closure {
    let go = project.go_version();
    let graph = graph::load(project, None, source, concurrency).await;
    let pruning = if project.work.is_some() {
        Pruning::Workspace
    } else if go.prunes() {
        Pruning::Pruned
    } else {
        Pruning::Unpruned
    };
    let mut extra = Vec::new();
    if project.work.is_some() {
        for main in &project.mains {
            let alone = single(project, main);
            extra.push(graph::load(&alone, None, source, concurrency).await);
            if tidy_checks_unpruned(&alone.go_version()) {
                extra.push(graph::load(&alone, Some(Pruning::Unpruned), source, concurrency).await);
            }
        }
    } else if tidy_checks_unpruned(&go) {
        extra.push(graph::load(project, Some(Pruning::Unpruned), source, concurrency).await);
    }
    let mut c = Closure {
        toolchain: toolchain(project),
        go,
        pruning,
        mods: BTreeSet::new(),
        zips: BTreeSet::new(),
        errors: Vec::new(),
        private: BTreeSet::new(),
        approximate: false,
        graph,
    };
    for g in std::iter::once(&c.graph).chain(&extra) {
        c.mods.extend(g.go_mods.iter().cloned());
        let fetched: Vec<ModVer> = g.selected().filter_map(|mv| g.fetched_as(&mv)).collect();
        c.mods.extend(fetched.iter().cloned());
        c.zips.extend(fetched);
        c.errors.extend(g.errors.iter().cloned());
    }
    c.errors.sort_by(|a, b| a.mv.cmp(&b.mv));
    c.errors.dedup();
    for g in std::iter::once(&c.graph).chain(&extra) {
        c.private.extend(g.private.iter().cloned());
    }
    c.mods.retain(|mv| !c.private.contains(mv));
    c.zips.retain(|mv| !c.private.contains(mv));
    c
}

/// Below a private version nothing was read: its requirements are taken from the project's
/// go.sum files instead (the rule, see: #12). Every version go.sum lists by its
/// `/go.mod` hash needs its `.mod`; every version it lists by its zip hash whose path is not
/// in the build list needs its zip too (a module only the private one provides). Private
/// paths (`is_private`) are left out. Marks the closure approximate: a superset where go.sum
/// holds stale lines, a subset where it lacks some.
pub fn below_private(
    c: &mut Closure,
    sums: &[super::gosum::GoSum],
    is_private: impl Fn(&ModVer) -> bool,
) {
    if c.private.is_empty() {
        return;
    }
    c.approximate = true;
    for l in sums.iter().flat_map(|s| &s.lines) {
        if is_private(&l.mv) || c.private.contains(&l.mv) {
            continue;
        }
        c.mods.insert(l.mv.clone());
        if !l.go_mod && !c.graph.build_list.contains_key(&l.mv.path) {
            c.zips.insert(l.mv.clone());
        }
    }
}

/// One module of a workspace as a project of its own (what `go mod tidy` in its directory
/// loads: its own go.mod's replacements and exclusions).
fn single(project: &Project, main: &MainModule) -> Project {
    Project {
        dir: main.dir.clone(),
        checkout: project.checkout.clone(),
        mains: vec![main.clone()],
        work: None,
    }
}

/// Whether `go mod tidy`'s default `-compat` loads the unpruned graph: its default is the
/// `go` line itself from 1.21 on, and the previous release before; only a main module at
/// exactly Go 1.17 (pruned, with an unpruned predecessor) has such a check. Go: tidy.go
/// `tidyCompat`, gover.Prev.
fn tidy_checks_unpruned(go: &GoVersion) -> bool {
    go.prunes() && !gover::known("1.18").le(go)
}

/// The toolchain a Go ≥ 1.21 switches to for this project. Go: toolchain.Select.
pub fn toolchain(project: &Project) -> Option<String> {
    let (go, toolchain) = match &project.work {
        Some((_, w)) => (w.go.clone(), w.toolchain.clone()),
        None => {
            let f = &project.mains.first()?.file;
            (f.go.clone(), f.toolchain.clone())
        }
    };
    let strict = gover::known(gover::GO_STRICT);
    let mut best: Option<(GoVersion, String)> = None;
    if let Some(t) = toolchain.filter(|t| t != "default") {
        if let Some(v) = from_toolchain(&t) {
            best = Some((v, t));
        }
    }
    if let Some(go) = go {
        if best.as_ref().is_none_or(|(v, _)| go > *v) {
            let mut name = format!("go{go}");
            if go.is_lang() && go >= strict {
                name.push_str(".0");
            }
            best = Some((go, name));
        }
    }
    best.filter(|(v, _)| *v >= strict).map(|(_, name)| name)
}

/// Go: gover.FromToolchain: `go1.22.3` (or `go1.22.3-suffix`) → `1.22.3`.
fn from_toolchain(name: &str) -> Option<GoVersion> {
    let v = name.strip_prefix("go")?;
    let v = v.split_once('-').map_or(v, |(v, _)| v);
    GoVersion::parse(v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::modfile::{parse_mod, Strictness};

    fn project(go_mod: &str) -> Project {
        let file = parse_mod("go.mod", go_mod.as_bytes(), Strictness::Main).unwrap();
        Project {
            dir: "/x".into(),
            checkout: "/x".into(),
            mains: vec![MainModule {
                path: "example.com/m".into(),
                dir: "/x".into(),
                file,
            }],
            work: None,
        }
    }

    #[test]
    fn toolchain_lines() {
        // Go: cmd/go/testdata/script/gotoolchain_modcmds.txt and toolchain.Select.
        let cases = [
            ("go 1.20\n", None),
            ("", None),
            ("go 1.21\n", Some("go1.21.0")),
            ("go 1.21.3\n", Some("go1.21.3")),
            ("go 1.22rc1\n", Some("go1.22rc1")),
            ("go 1.21\ntoolchain go1.22.3\n", Some("go1.22.3")),
            ("go 1.23.1\ntoolchain go1.22.3\n", Some("go1.23.1")),
            ("go 1.20\ntoolchain go1.21.5\n", Some("go1.21.5")),
            ("go 1.20\ntoolchain go1.19\n", None),
            ("go 1.21\ntoolchain default\n", Some("go1.21.0")),
            (
                "go 1.21\ntoolchain go1.999testmod\n",
                Some("go1.999testmod"),
            ),
        ];
        for (text, want) in cases {
            let got = toolchain(&project(&format!("module example.com/m\n{text}")));
            assert_eq!(got.as_deref(), want, "{text:?}");
        }
    }

    #[test]
    fn tidy_compat() {
        for (v, want) in [
            ("1.16", false),
            ("1.17", true),
            ("1.17.3", true),
            ("1.18", false),
            ("1.21.0", false),
        ] {
            assert_eq!(tidy_checks_unpruned(&gover::known(v)), want, "{v}");
        }
    }
}
