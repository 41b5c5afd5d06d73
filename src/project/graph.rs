//! The module graph of a [`Project`] and its build list, by the go command's rules.
//!
//! Go: cmd/go/internal/modload/buildlist.go `readModGraph`, modfile.go `goModSummary`,
//! cmd/go/internal/mvs/graph.go.
//! - **Roots**: the main module's requirements (minus excluded versions), enqueued with the
//!   main module's pruning; in a workspace, the main modules themselves.
//! - **Pruning**: loading a module reads its go.mod and records its requirements. Its
//!   requirements are loaded in turn unless the graph is pruned *and* the module's own go.mod
//!   is at `go 1.17` or later; below a `go ≤ 1.16` module everything is loaded unpruned. A
//!   `go ≤ 1.16` main module loads the whole graph.
//! - **Replacements and exclusions** come from the main modules or go.work only. A replaced
//!   version's go.mod is the replacement's: a module version (fetched) or a directory (read).
//!   Requirements on excluded versions are dropped.
//! - **MVS**: the selected version of a path is the highest version any loaded go.mod (or a
//!   root) requires; main modules are always selected at themselves.
//! - **Workspaces** also load, until nothing changes, every module whose selected version is
//!   higher than a version some loaded module requires.
//!
//! Loading goes level by level: each level's go.mod files are asked of the [`ModSource`]
//! together, up to `concurrency` at once, so a cold graph costs about its depth in round
//! trips. A go.mod that cannot be had is an error of that version; the rest still loads.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::path::Path;

use futures::stream::{self, StreamExt};

use super::modfile::{self, Strictness, Target};
use super::Project;
use crate::module::{ModVer, ModulePath, Version};

/// Where the go.mod files of module versions come from (the tree, upstream).
pub trait ModSource: Sync {
    /// The `.mod` of `mv`, or why there is none.
    fn go_mod(&self, mv: &ModVer) -> impl Future<Output = Result<bytes::Bytes, String>> + Send;

    /// A private module this source may ask no one about (GONOPROXY with no private
    /// upstream): its go.mod is not read and the graph below it is unknown.
    fn is_private(&self, _path: &ModulePath) -> bool {
        false
    }
}

/// How a module's requirements are followed. Go: modload modPruning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Pruning {
    Pruned,
    Unpruned,
    Workspace,
}

/// A graph node: a main module, or a module version as required (before replacement).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Node {
    Main(usize),
    Dep(ModVer),
}

/// What one go.mod contributes. Go: modload modFileSummary.
#[derive(Clone, Debug)]
struct Summary {
    pruning: Pruning,
    require: Vec<ModVer>,
}

/// What a replaced or unreplaced version is loaded from.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    /// A module version from a proxy: the version itself, or its module replacement.
    Module(ModVer),
    /// A directory replacement, read from disk; nothing is fetched for it.
    Dir(String),
}

/// One version whose go.mod could not be had or read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GraphError {
    pub mv: ModVer,
    pub error: String,
}

/// The loaded graph.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    /// Every module version whose go.mod was read, as fetched (replacements applied;
    /// directory replacements left out).
    pub go_mods: BTreeSet<ModVer>,
    /// The selected version of every module path but the main modules, as required.
    pub build_list: BTreeMap<ModulePath, Version>,
    /// Where each build-list entry that is replaced comes from.
    pub replaced: BTreeMap<ModVer, Source>,
    pub errors: Vec<GraphError>,
    /// Private versions (as fetched) whose go.mod no one was asked for: what they
    /// require is missing from the graph.
    pub private: BTreeSet<ModVer>,
}

impl Graph {
    /// The build list as module versions, in path order.
    pub fn selected(&self) -> impl Iterator<Item = ModVer> + '_ {
        self.build_list.iter().map(|(p, v)| ModVer {
            path: p.clone(),
            version: v.clone(),
        })
    }

    /// What a build-list entry is fetched as: itself, its module replacement, or nothing.
    pub fn fetched_as(&self, mv: &ModVer) -> Option<ModVer> {
        match self.replaced.get(mv) {
            None => Some(mv.clone()),
            Some(Source::Module(r)) => Some(r.clone()),
            Some(Source::Dir(_)) => None,
        }
    }
}

/// Loads the graph of `project` with the pruning its `go` version (or go.work) gives, or
/// with `pruning` when given (`Unpruned` is how `go mod tidy` checks a `go 1.17` module's
/// compatibility with Go 1.16).
pub async fn load<S: ModSource>(
    project: &Project,
    pruning: Option<Pruning>,
    source: &S,
    concurrency: usize,
) -> Graph {
    let pruning = pruning.unwrap_or(if project.work.is_some() {
        Pruning::Workspace
    } else if project.go_version().prunes() {
        Pruning::Pruned
    } else {
        Pruning::Unpruned
    });
    let mut l = Loader {
        project,
        source,
        concurrency: concurrency.max(1),
        summaries: HashMap::new(),
        required: HashMap::new(),
        selected: HashMap::new(),
        enqueued: HashSet::new(),
        queue: Vec::new(),
        graph: Graph::default(),
    };
    if project.work.is_some() {
        for i in 0..project.mains.len() {
            l.enqueue(Node::Main(i), pruning);
        }
        l.drain().await;
        l.workspace_upgrades().await;
    } else {
        let roots: Vec<ModVer> = project.mains[0]
            .file
            .require
            .iter()
            .map(|r| r.mv.clone())
            .filter(|mv| !project.is_excluded(mv))
            .collect();
        l.require(Node::Main(0), roots.clone());
        for mv in roots {
            l.enqueue(Node::Dep(mv), pruning);
        }
        l.drain().await;
    }
    l.finish()
}

struct Loader<'a, S> {
    project: &'a Project,
    source: &'a S,
    concurrency: usize,
    /// Go: mg.loadCache: one summary (or failure) per node, whatever the pruning.
    summaries: HashMap<Node, Option<Summary>>,
    /// Go: mvs.Graph.required.
    required: HashMap<Node, Vec<ModVer>>,
    /// Go: mvs.Graph.selected, for dependency paths (main modules always win).
    selected: HashMap<ModulePath, Version>,
    /// Go: readModGraph's `loading` set of (module, pruning).
    enqueued: HashSet<(Node, Pruning)>,
    /// The next level to load.
    queue: Vec<(Node, Pruning)>,
    graph: Graph,
}

impl<S: ModSource> Loader<'_, S> {
    fn enqueue(&mut self, node: Node, pruning: Pruning) {
        if self.enqueued.insert((node.clone(), pruning)) {
            self.queue.push((node, pruning));
        }
    }

    /// Go: mvs.Graph.Require: records `node`'s requirements and raises the selected versions.
    fn require(&mut self, node: Node, reqs: Vec<ModVer>) {
        for r in &reqs {
            if self.project.is_main(r.path.as_str()) {
                continue;
            }
            let sel = self
                .selected
                .entry(r.path.clone())
                .or_insert_with(|| r.version.clone());
            if *sel < r.version {
                *sel = r.version.clone();
            }
        }
        self.required.insert(node, reqs);
    }

    /// Loads level after level until nothing is queued.
    async fn drain(&mut self) {
        while !self.queue.is_empty() {
            let level = std::mem::take(&mut self.queue);
            self.load_summaries(&level).await;
            for (node, pruning) in level {
                let Some(Some(summary)) = self.summaries.get(&node).cloned() else {
                    continue;
                };
                if !self.required.contains_key(&node) {
                    self.require(node.clone(), summary.require.clone());
                }
                // Go: readModGraph enqueue: below an unpruned module everything is unpruned.
                let next = if pruning == Pruning::Unpruned {
                    Pruning::Unpruned
                } else {
                    summary.pruning
                };
                if pruning != Pruning::Pruned || summary.pruning == Pruning::Unpruned {
                    // A versioned requirement on a main module's path is still loaded
                    // (only its selection loses to the main module).
                    for r in summary.require {
                        self.enqueue(Node::Dep(r), next);
                    }
                }
            }
        }
    }

    /// The summaries of this level's nodes not yet loaded, fetched together.
    async fn load_summaries(&mut self, level: &[(Node, Pruning)]) {
        let mut todo: Vec<Node> = level
            .iter()
            .map(|(n, _)| n.clone())
            .filter(|n| !self.summaries.contains_key(n))
            .collect();
        todo.sort();
        todo.dedup();
        let project = self.project;
        // See: #12: a private module's go.mod is asked of no one.
        todo.retain(|node| {
            let Node::Dep(mv) = node else { return true };
            match source_of(project, mv) {
                Some(Source::Module(f)) if self.source.is_private(&f.path) => {
                    self.graph.private.insert(f);
                    self.summaries.insert(node.clone(), None);
                    false
                }
                _ => true,
            }
        });
        let source = self.source;
        let results: Vec<(Node, Result<Summary, String>)> = stream::iter(todo)
            .map(|node| async move {
                let s = summary(project, source, &node).await;
                (node, s)
            })
            .buffer_unordered(self.concurrency)
            .collect()
            .await;
        for (node, result) in results {
            match result {
                Ok(s) => {
                    self.summaries.insert(node, Some(s));
                }
                Err(error) => {
                    if let Node::Dep(mv) = &node {
                        self.graph.errors.push(GraphError {
                            mv: mv.clone(),
                            error,
                        });
                    }
                    self.summaries.insert(node, None);
                }
            }
        }
    }

    /// Go: readModGraph's workspace loop: load every selected version that is higher than
    /// what a loaded module requires, until there is none.
    async fn workspace_upgrades(&mut self) {
        let mut has_deps_in_all: BTreeSet<Node> =
            (0..self.project.mains.len()).map(Node::Main).collect();
        let mut seen: HashSet<Node> = HashSet::new();
        loop {
            let mut needs = BTreeSet::new();
            for node in &has_deps_in_all {
                let node = self.selected_node(node);
                if !seen.contains(&node) {
                    needs.insert(node);
                    continue;
                }
                for r in self.required.get(&node).into_iter().flatten() {
                    let s = self.selected_node(&Node::Dep(r.clone()));
                    if matches!(&s, Node::Dep(sel) if sel.version > r.version) && !seen.contains(&s)
                    {
                        needs.insert(s);
                    }
                }
            }
            if needs.is_empty() {
                return;
            }
            for node in needs {
                self.enqueue(node.clone(), Pruning::Workspace);
                seen.insert(node.clone());
                has_deps_in_all.insert(node);
            }
            self.drain().await;
        }
    }

    /// The node selected for `node`'s module path.
    fn selected_node(&self, node: &Node) -> Node {
        match node {
            Node::Main(i) => Node::Main(*i),
            Node::Dep(mv) => match self.selected.get(&mv.path) {
                Some(v) => Node::Dep(ModVer {
                    path: mv.path.clone(),
                    version: v.clone(),
                }),
                None => node.clone(),
            },
        }
    }

    fn finish(mut self) -> Graph {
        for node in self.summaries.keys() {
            let Node::Dep(mv) = node else { continue };
            if let Some(Source::Module(fetched)) = source_of(self.project, mv) {
                if self.graph.private.contains(&fetched) {
                    continue;
                }
                self.graph.go_mods.insert(fetched);
            }
        }
        for (path, version) in self.selected {
            let mv = ModVer { path, version };
            match source_of(self.project, &mv) {
                Some(s @ Source::Dir(_)) => {
                    self.graph.replaced.insert(mv.clone(), s);
                }
                Some(Source::Module(r)) if r != mv => {
                    self.graph.replaced.insert(mv.clone(), Source::Module(r));
                }
                _ => {}
            }
            self.graph.build_list.insert(mv.path, mv.version);
        }
        self.graph.errors.sort_by(|a, b| a.mv.cmp(&b.mv));
        self.graph
    }
}

/// What `mv` is loaded from after the project's replacements.
fn source_of(project: &Project, mv: &ModVer) -> Option<Source> {
    match project.replacement(mv) {
        None => Some(Source::Module(mv.clone())),
        Some((r, _)) => match &r.new {
            Target::Module(to) => Some(Source::Module(to.clone())),
            Target::Dir(d) => Some(Source::Dir(d.clone())),
        },
    }
}

/// Go: modload goModSummary: the go.mod of `node` (after replacement), with requirements on
/// excluded versions dropped.
async fn summary<S: ModSource>(
    project: &Project,
    source: &S,
    node: &Node,
) -> Result<Summary, String> {
    let file = match node {
        Node::Main(i) => project.mains[*i].file.clone(),
        Node::Dep(mv) => dep_go_mod(project, source, mv).await?,
    };
    let pruning = match &file.go {
        Some(v) if v.prunes() => Pruning::Pruned,
        _ => Pruning::Unpruned,
    };
    let require = file
        .require
        .into_iter()
        .map(|r| r.mv)
        .filter(|mv| !project.is_excluded(mv))
        .collect();
    Ok(Summary { pruning, require })
}

async fn dep_go_mod<S: ModSource>(
    project: &Project,
    source: &S,
    mv: &ModVer,
) -> Result<modfile::ModFile, String> {
    let (file, name, actual) = match project.replacement(mv) {
        Some((r, base)) if matches!(r.new, Target::Dir(_)) => {
            let at = base.join("go.mod");
            let f = project
                .replacement_go_mod(r, base, &replace_file(project, base, &at))
                .map_err(|e| crate::error::chain(&e).to_string())?;
            // Go: a directory replacement's module line is not checked.
            return Ok(f);
        }
        Some((r, _)) => {
            let Target::Module(to) = &r.new else {
                unreachable!("directory targets returned above")
            };
            let data = source.go_mod(to).await?;
            (data, format!("{to}.mod"), to.clone())
        }
        None => (source.go_mod(mv).await?, format!("{mv}.mod"), mv.clone()),
    };
    let f = modfile::parse_mod(&name, &file, Strictness::Dependency).map_err(|e| e.to_string())?;
    // Go: goModSummary: the module line must name the version's path or its replacement's.
    match f.module.as_deref() {
        None => Err("parsing go.mod: missing module line".into()),
        Some(p) if p != mv.path.as_str() && p != actual.path.as_str() => Err(format!(
            "parsing go.mod:\n\tmodule declares its path as: {p}\n\t        but was required as: {}",
            mv.path
        )),
        Some(_) => Ok(f),
    }
}

/// The file whose `replace` line is blamed when a directory replacement fails: the go.work
/// when the replacement came from it, else the main module's go.mod at `base`.
fn replace_file(project: &Project, base: &Path, main_go_mod: &Path) -> std::path::PathBuf {
    match &project.work {
        Some((path, _)) if path.parent() == Some(base) => path.clone(),
        _ => main_go_mod.to_path_buf(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::project::modfile::{parse_mod, Strictness};
    use crate::project::MainModule;

    /// go.mod files by `path@version`, and the versions asked for.
    struct Mem {
        files: HashMap<String, String>,
        asked: std::sync::Mutex<Vec<String>>,
    }

    impl ModSource for Mem {
        async fn go_mod(&self, mv: &ModVer) -> Result<bytes::Bytes, String> {
            self.asked.lock().unwrap().push(mv.to_string());
            self.files
                .get(&mv.to_string())
                .map(|t| bytes::Bytes::from(t.clone()))
                .ok_or_else(|| format!("{mv}: not found"))
        }
    }

    /// A universe of modules: `a.com/x@v1.0.0 1.17 b.com/y@v1.0.0 ...` per line (the go
    /// version `-` for none).
    fn mem(spec: &str) -> Mem {
        let mut files = HashMap::new();
        for line in spec.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let mut f = line.split_whitespace();
            let at = f.next().unwrap();
            let go = f.next().unwrap();
            let (path, _) = at.split_once('@').unwrap();
            let mut text = format!("module {path}\n");
            if go != "-" {
                text += &format!("go {go}\n");
            }
            for r in f {
                let (p, v) = r.split_once('@').unwrap();
                text += &format!("require {p} {v}\n");
            }
            files.insert(at.to_owned(), text);
        }
        Mem {
            files,
            asked: Default::default(),
        }
    }

    fn project(go_mod: &str) -> Project {
        let file = parse_mod("go.mod", go_mod.as_bytes(), Strictness::Main).unwrap();
        Project {
            dir: "/nonexistent".into(),
            checkout: "/nonexistent".into(),
            mains: vec![MainModule {
                path: file.module.clone().unwrap(),
                dir: "/nonexistent".into(),
                file,
            }],
            work: None,
        }
    }

    async fn run(go_mod: &str, universe: &str) -> (Graph, Vec<String>) {
        let src = mem(universe);
        let g = load(&project(go_mod), None, &src, 4).await;
        let mut asked = src.asked.into_inner().unwrap();
        asked.sort();
        (g, asked)
    }

    fn list(g: &Graph) -> Vec<String> {
        g.selected().map(|mv| mv.to_string()).collect()
    }

    const UNIVERSE: &str = "
        a.com/a@v1.0.0 1.17 b.com/b@v1.0.0
        b.com/b@v1.0.0 1.17 c.com/c@v1.0.0
        b.com/b@v1.1.0 1.17 c.com/c@v1.1.0
        c.com/c@v1.0.0 1.17
        c.com/c@v1.1.0 1.17
        o.com/old@v1.0.0 - b.com/b@v1.1.0
        d.com/d@v1.0.0 1.21 a.com/a@v1.0.0 x.com/main@v0.1.0
        x.com/main@v0.1.0 1.21 c.com/c@v1.1.0
    ";

    #[tokio::test]
    async fn pruned_main_reads_only_the_roots() {
        // Go: go.dev/ref/mod "Module graph pruning": a go 1.17 dependency contributes its
        // own go.mod's requirements and no more.
        let (g, asked) = run(
            "module x.com/main\ngo 1.21\nrequire a.com/a v1.0.0\n",
            UNIVERSE,
        )
        .await;
        assert_eq!(asked, ["a.com/a@v1.0.0"]);
        assert_eq!(list(&g), ["a.com/a@v1.0.0", "b.com/b@v1.0.0"]);
    }

    #[tokio::test]
    async fn unpruned_dependency_loads_its_whole_graph() {
        let (g, asked) = run(
            "module x.com/main\ngo 1.21\nrequire o.com/old v1.0.0\n",
            UNIVERSE,
        )
        .await;
        assert_eq!(
            asked,
            ["b.com/b@v1.1.0", "c.com/c@v1.1.0", "o.com/old@v1.0.0"]
        );
        assert_eq!(
            list(&g),
            ["b.com/b@v1.1.0", "c.com/c@v1.1.0", "o.com/old@v1.0.0"]
        );
    }

    #[tokio::test]
    async fn unpruned_main_loads_everything_and_mvs_selects_the_highest() {
        let (g, asked) = run(
            "module x.com/main\ngo 1.16\nrequire (\n\ta.com/a v1.0.0\n\to.com/old v1.0.0\n)\n",
            UNIVERSE,
        )
        .await;
        assert_eq!(
            asked,
            [
                "a.com/a@v1.0.0",
                "b.com/b@v1.0.0",
                "b.com/b@v1.1.0",
                "c.com/c@v1.0.0",
                "c.com/c@v1.1.0",
                "o.com/old@v1.0.0"
            ]
        );
        assert_eq!(
            list(&g),
            [
                "a.com/a@v1.0.0",
                "b.com/b@v1.1.0",
                "c.com/c@v1.1.0",
                "o.com/old@v1.0.0"
            ]
        );
        assert_eq!(g.go_mods.len(), 6);
    }

    #[tokio::test]
    async fn exclude_replace_and_the_main_module_path() {
        // d requires an old version of the main module: its go.mod is read, the main
        // module stays selected; the excluded root is dropped; the replaced root is read
        // from its replacement.
        let (g, asked) = run(
            "module x.com/main\ngo 1.21\nrequire (\n\td.com/d v1.0.0\n\tb.com/b v1.0.0\n\tc.com/c v1.0.0\n)\n\
             exclude b.com/b v1.0.0\nreplace c.com/c v1.0.0 => c.com/c v1.1.0\n",
            UNIVERSE,
        )
        .await;
        assert_eq!(asked, ["c.com/c@v1.1.0", "d.com/d@v1.0.0"]);
        assert_eq!(
            list(&g),
            ["a.com/a@v1.0.0", "c.com/c@v1.0.0", "d.com/d@v1.0.0"]
        );
        assert_eq!(
            g.fetched_as(&ModVer::parse("c.com/c", "v1.0.0").unwrap())
                .unwrap()
                .to_string(),
            "c.com/c@v1.1.0"
        );
    }

    #[tokio::test]
    async fn a_missing_go_mod_is_an_error_of_that_version() {
        let (g, _) = run(
            "module x.com/main\ngo 1.16\nrequire z.com/z v1.0.0\n",
            UNIVERSE,
        )
        .await;
        assert_eq!(g.errors.len(), 1);
        assert_eq!(g.errors[0].error, "z.com/z@v1.0.0: not found");
        assert_eq!(list(&g), ["z.com/z@v1.0.0"]);
    }
}
