//! A generated dependency graph for closure tests: modules with real Go packages, written the
//! way Go's own corpus is (a `.mod`, an `.info`, the zip's files), served by the local
//! upstream, and a main module that uses them in every way the go command distinguishes.
//!
//! The graph (`M` = the main module `example.com/main`, `go 1.21`):
//! - `a` (go 1.21, pruned) imports `b`; `b` v1.0.0 / v1.1.0 are **go 1.16** (unpruned), so
//!   everything below `b` is loaded: `c` v1.0.0, v1.1.0 (what `b` v1.1.0 needs, excluded by
//!   M, so `go mod tidy` lifts it to v1.2.0) and `e` v1.0.0, which M imports at v1.1.0: the
//!   graph reads `e` v1.0.0's go.mod, no build needs its zip.
//! - `p` (go 1.21) requires `q` v1.0.0 which M never imports: `q`'s go.mod is never read.
//! - `t` is imported only by M's tests; `w` only under `//go:build windows`.
//! - `v2mod/v2` is a `/v2` module; `inc` is `v2.0.0+incompatible` (no go.mod in its zip, a
//!   synthesised `module` line as its `.mod`).
//! - `r` v1.1.0 retracts v1.0.0.
//! - `fork` is replaced by the module `forked` v1.0.0; `local` by the directory `./local`,
//!   whose go.mod requires `deep` v1.0.0.
//! - M excludes `c` v1.1.0.

// Support code: each test uses a different part of it.
#![allow(dead_code)]

use std::path::Path;

use crate::upstream::ModuleFiles;
use crate::zipgen::module_zip;

/// One module version of the graph.
pub struct Gen {
    pub path: &'static str,
    pub version: &'static str,
    /// The go.mod text after the `module` line (`None`: no go.mod in the zip).
    pub go_mod: Option<&'static str>,
    /// Packages imported by the module's root package.
    pub imports: &'static [&'static str],
}

/// Every version the upstream serves.
pub const GRAPH: &[Gen] = &[
    g(
        "example.com/a",
        "v1.0.0",
        Some("go 1.21\nrequire example.com/b v1.0.0\n"),
        &["example.com/b"],
    ),
    g(
        "example.com/b",
        "v1.0.0",
        Some("go 1.16\nrequire example.com/c v1.0.0\n"),
        &["example.com/c"],
    ),
    g(
        "example.com/b",
        "v1.1.0",
        Some("go 1.16\nrequire (\n\texample.com/c v1.1.0\n\texample.com/e v1.0.0\n)\n"),
        &["example.com/c"],
    ),
    g("example.com/c", "v1.0.0", Some("go 1.16\n"), &[]),
    g("example.com/c", "v1.1.0", Some("go 1.16\n"), &[]),
    g("example.com/c", "v1.2.0", Some("go 1.16\n"), &[]),
    g("example.com/e", "v1.0.0", Some("go 1.16\n"), &[]),
    g("example.com/e", "v1.1.0", Some("go 1.16\n"), &[]),
    g(
        "example.com/p",
        "v1.0.0",
        Some("go 1.21\nrequire example.com/q v1.0.0\n"),
        &[],
    ),
    g("example.com/q", "v1.0.0", Some("go 1.21\n"), &[]),
    g("example.com/t", "v1.0.0", Some("go 1.20\n"), &[]),
    g("example.com/w", "v1.0.0", Some("go 1.20\n"), &[]),
    g("example.com/v2mod/v2", "v2.0.0", Some("go 1.18\n"), &[]),
    g("example.com/inc", "v2.0.0+incompatible", None, &[]),
    g("example.com/r", "v1.0.0", Some("go 1.21\n"), &[]),
    g(
        "example.com/r",
        "v1.1.0",
        Some("go 1.21\nretract v1.0.0 // broken\n"),
        &[],
    ),
    g("example.com/forked", "v1.0.0", Some("go 1.21\n"), &[]),
    g("example.com/deep", "v1.0.0", Some("go 1.21\n"), &[]),
];

const fn g(
    path: &'static str,
    version: &'static str,
    go_mod: Option<&'static str>,
    imports: &'static [&'static str],
) -> Gen {
    Gen {
        path,
        version,
        go_mod,
        imports,
    }
}

/// The package name of a module path (`example.com/v2mod/v2` → `v2mod`).
pub fn package_name(path: &str) -> String {
    let mut elems = path.rsplit('/');
    let last = elems.next().unwrap_or(path);
    let name = if last.starts_with('v') && last[1..].bytes().all(|c| c.is_ascii_digit()) {
        elems.next().unwrap_or(last)
    } else {
        last
    };
    name.replace(['.', '-'], "_")
}

/// A Go file of package `name` that imports `imports` for their side effects.
fn go_file(name: &str, build: &str, imports: &[&str]) -> String {
    let mut s = String::new();
    if !build.is_empty() {
        s.push_str(&format!("//go:build {build}\n\n"));
    }
    s.push_str(&format!("package {name}\n\n"));
    for i in imports {
        s.push_str(&format!("import _ \"{i}\"\n"));
    }
    s.push_str("\nfunc F() {}\n");
    s
}

impl Gen {
    /// The `.mod` served for this version.
    pub fn mod_text(&self) -> String {
        match self.go_mod {
            Some(rest) => format!("module {}\n\n{rest}", self.path),
            // Go: modfetch LegacyGoMod.
            None => format!("module {}\n", self.path),
        }
    }

    pub fn files(&self) -> ModuleFiles {
        let name = package_name(self.path);
        let source = go_file(&name, "", self.imports);
        let mod_text = self.mod_text();
        let mut files: Vec<(&str, &[u8])> = vec![("x.go", source.as_bytes())];
        if self.go_mod.is_some() {
            files.push(("go.mod", mod_text.as_bytes()));
        }
        let prefix = format!("{}@{}/", self.path, self.version);
        let zip = module_zip(&prefix, &files);
        let info = format!(
            "{{\"Version\":\"{}\",\"Time\":\"2024-01-02T03:04:05Z\"}}",
            self.version
        );
        ModuleFiles::new(self.path, self.version, info, mod_text, zip)
    }
}

/// Every version of [`GRAPH`] as the upstream serves it.
pub fn upstream_files() -> Vec<ModuleFiles> {
    GRAPH.iter().map(Gen::files).collect()
}

/// Writes the main module into `dir`: go.mod (untidy: `go mod tidy` completes it), its
/// packages and tests, and the `./local` directory replacement.
pub fn write_main(dir: &Path) {
    let w = |rel: &str, text: &str| {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().expect("a parent")).expect("mkdir");
        std::fs::write(p, text).expect("write main module file");
    };
    w(
        "go.mod",
        "module example.com/main\n\ngo 1.21\n\n\
         require (\n\texample.com/a v1.0.0\n\texample.com/b v1.1.0\n\texample.com/e v1.1.0\n\texample.com/p v1.0.0\n\
         \texample.com/t v1.0.0\n\texample.com/w v1.0.0\n\texample.com/v2mod/v2 v2.0.0\n\
         \texample.com/inc v2.0.0+incompatible\n\texample.com/r v1.1.0\n\
         \texample.com/fork v1.0.0\n\texample.com/local v0.0.0-00010101000000-000000000000\n)\n\n\
         exclude example.com/c v1.1.0\n\n\
         replace example.com/fork => example.com/forked v1.0.0\n\
         replace example.com/local => ./local\n",
    );
    w(
        "main.go",
        &go_file(
            "main",
            "",
            &[
                "example.com/a",
                "example.com/e",
                "example.com/p",
                "example.com/v2mod/v2",
                "example.com/inc",
                "example.com/r",
                "example.com/fork",
                "example.com/local",
            ],
        )
        .replace("func F() {}", "func main() {}"),
    );
    w(
        "main_test.go",
        &go_file("main", "", &["example.com/t"]).replace("func F() {}", ""),
    );
    w(
        "win.go",
        &go_file("main", "windows", &["example.com/w"]).replace("func F() {}", ""),
    );
    w(
        "local/go.mod",
        "module example.com/local\n\ngo 1.21\n\nrequire example.com/deep v1.0.0\n",
    );
    w(
        "local/local.go",
        &go_file("local", "", &["example.com/deep"]),
    );
}
