//! Projects: what the go command fetches to build a checkout, derived by its own rules.
//!
//! Input: a directory holding a `go.mod` (one main module) or a `go.work` (a workspace of
//! main modules). Output: a [`Project`] — its main modules' go.mod files, parsed strictly,
//! the replacements and exclusions that apply (from the main modules or go.work only, never
//! from dependencies), and a way to read a directory replacement's go.mod from disk.
//!
//! - `modfile`: go.mod and go.work syntax (x/mod/modfile).
//! - `graph`: the module graph, pruned as the main module's `go` line decides, and MVS
//!   (cmd/go/internal/modload/buildlist.go readModGraph, cmd/go/internal/mvs).
//!
//! **Where a project may read.** Every directory a project names — a go.work's `use`, a
//! `replace … => ../dir` — must resolve, after symlinks, inside the project's *checkout*:
//! the nearest directory at or above the project that holds `.git`, else the project
//! directory itself. `=> ../x` inside a monorepo checkout works; `=> /etc` or a symlink
//! out of the checkout is an error naming `file:line`. Only `go.mod` files are read there.
//!
//! A `go.work` is looked for in the project directory only, not above it: point a project
//! at the directory of its go.work to build it as a workspace.

pub mod closure;
pub mod gosum;
pub mod graph;
pub mod modfile;

use std::io::Read;
use std::path::{Path, PathBuf};

use modfile::{ModFile, ParseError, Replace, Strictness, Target, WorkFile, MAX_MOD_FILE};

use crate::module::gover::{self, GoVersion};
use crate::module::ModVer;

/// One main module: its directory and go.mod.
#[derive(Clone, Debug)]
pub struct MainModule {
    /// The `module` line (a main module's path need not be a valid dependency path).
    pub path: String,
    pub dir: PathBuf,
    pub file: ModFile,
}

/// A checkout as the go command sees it.
#[derive(Clone, Debug)]
pub struct Project {
    /// The directory the project was loaded from, as given.
    pub dir: PathBuf,
    /// Where the project may read (see the module docs), canonical.
    pub checkout: PathBuf,
    pub mains: Vec<MainModule>,
    /// The go.work and its path, in workspace mode.
    pub work: Option<(PathBuf, WorkFile)>,
}

/// Why a project cannot be read. Each names the file (and line, where there is one).
#[derive(Debug, thiserror::Error)]
pub enum ProjectError {
    #[error("{}: no go.mod or go.work", .dir.display())]
    NoModule { dir: PathBuf },
    #[error("reading {}", .path.display())]
    Read {
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{}: larger than {MAX_MOD_FILE} bytes", .path.display())]
    TooLarge { path: PathBuf },
    #[error(transparent)]
    Parse(#[from] ParseError),
    #[error("{}:{line}: no module line", .file.display())]
    NoModuleLine { file: PathBuf, line: usize },
    #[error("{}:{line}: {dir:?} resolves to {}, outside the checkout {}", .file.display(), .resolved.display(), .checkout.display())]
    Escapes {
        file: PathBuf,
        line: usize,
        dir: String,
        resolved: PathBuf,
        checkout: PathBuf,
    },
}

impl Project {
    /// Reads the project in `dir`: its go.work if there is one, else its go.mod.
    pub fn load(dir: &Path) -> Result<Project, ProjectError> {
        let canonical = canonicalize(dir)?;
        let checkout = checkout_root(&canonical);
        let mut project = Project {
            dir: dir.to_path_buf(),
            checkout,
            mains: Vec::new(),
            work: None,
        };
        let work_path = dir.join("go.work");
        if work_path.is_file() {
            let data = read_limited(&work_path)?;
            let work = modfile::parse_work(&work_path.display().to_string(), &data)?;
            for (use_dir, line) in &work.uses {
                let module_dir = project.inside(&work_path, *line, dir, use_dir)?;
                project.mains.push(read_main(&module_dir)?);
            }
            project.work = Some((work_path, work));
        } else if dir.join("go.mod").is_file() {
            project.mains.push(read_main(dir)?);
        } else {
            return Err(ProjectError::NoModule {
                dir: dir.to_path_buf(),
            });
        }
        Ok(project)
    }

    /// The `go` version that decides pruning: the go.work's, else the main module's, else
    /// 1.16 (Go: cmd/go/internal/gover FromGoMod, FromGoWork).
    pub fn go_version(&self) -> GoVersion {
        let line = match &self.work {
            Some((_, w)) => w.go.clone(),
            None => self.mains.first().and_then(|m| m.file.go.clone()),
        };
        line.unwrap_or_else(|| gover::known(gover::DEFAULT_GO_MOD))
    }

    /// Whether `path` is one of the main modules.
    pub fn is_main(&self, path: &str) -> bool {
        self.mains.iter().any(|m| m.path == path)
    }

    /// Whether the main modules exclude `mv` (Go: modFileIndex.exclude, from every main).
    pub fn is_excluded(&self, mv: &ModVer) -> bool {
        self.mains.iter().any(|m| m.file.exclude.contains(mv))
    }

    /// The replacement that applies to `mv`, and the directory a relative target is taken
    /// from: go.work's first, then the main modules'; an exact `path version` match before a
    /// path-only one. Go: cmd/go/internal/modload/modfile.go replacementFrom, replacement.
    pub fn replacement(&self, mv: &ModVer) -> Option<(&Replace, &Path)> {
        if let Some((path, w)) = &self.work {
            let base = path.parent().unwrap_or(Path::new("."));
            if let Some(r) = find_replace(&w.replace, mv) {
                return Some((r, base));
            }
        }
        self.mains
            .iter()
            .find_map(|m| find_replace(&m.file.replace, mv).map(|r| (r, m.dir.as_path())))
    }

    /// The go.mod of a directory replacement, read from disk (lax, as a dependency's).
    pub fn replacement_go_mod(
        &self,
        replace: &Replace,
        base: &Path,
        file: &Path,
    ) -> Result<ModFile, ProjectError> {
        let Target::Dir(dir) = &replace.new else {
            unreachable!("only directory replacements are read from disk");
        };
        let module_dir = self.inside(file, replace.line, base, dir)?;
        let path = module_dir.join("go.mod");
        let data = read_limited(&path)?;
        Ok(modfile::parse_mod(
            &path.display().to_string(),
            &data,
            Strictness::Dependency,
        )?)
    }

    /// `base/dir`, resolved through symlinks, if it stays inside the checkout.
    fn inside(
        &self,
        file: &Path,
        line: usize,
        base: &Path,
        dir: &str,
    ) -> Result<PathBuf, ProjectError> {
        let resolved = canonicalize(&base.join(dir))?;
        if !resolved.starts_with(&self.checkout) {
            return Err(ProjectError::Escapes {
                file: file.to_path_buf(),
                line,
                dir: dir.to_owned(),
                resolved,
                checkout: self.checkout.clone(),
            });
        }
        Ok(resolved)
    }
}

fn find_replace<'a>(list: &'a [Replace], mv: &ModVer) -> Option<&'a Replace> {
    list.iter()
        .find(|r| r.old == mv.path && r.old_version.as_ref() == Some(&mv.version))
        .or_else(|| {
            list.iter()
                .find(|r| r.old == mv.path && r.old_version.is_none())
        })
}

fn read_main(dir: &Path) -> Result<MainModule, ProjectError> {
    let path = dir.join("go.mod");
    let data = read_limited(&path)?;
    let file = modfile::parse_mod(&path.display().to_string(), &data, Strictness::Main)?;
    let Some(module) = file.module.clone() else {
        return Err(ProjectError::NoModuleLine {
            file: path,
            line: 1,
        });
    };
    Ok(MainModule {
        path: module,
        dir: dir.to_path_buf(),
        file,
    })
}

/// A go.mod or go.work, refusing one larger than [`MAX_MOD_FILE`] without reading past it.
fn read_limited(path: &Path) -> Result<Vec<u8>, ProjectError> {
    let read_err = |cause| ProjectError::Read {
        path: path.to_path_buf(),
        cause,
    };
    let f = std::fs::File::open(path).map_err(read_err)?;
    let mut data = Vec::new();
    f.take(MAX_MOD_FILE + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > MAX_MOD_FILE {
        return Err(ProjectError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(data)
}

fn canonicalize(p: &Path) -> Result<PathBuf, ProjectError> {
    std::fs::canonicalize(p).map_err(|cause| ProjectError::Read {
        path: p.to_path_buf(),
        cause,
    })
}

/// The nearest directory at or above `dir` holding `.git`, else `dir`.
fn checkout_root(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.join(".git").exists())
        .unwrap_or(dir)
        .to_path_buf()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, text: &str) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    #[test]
    fn replacements_stay_inside_the_checkout() {
        let tmp = tempfile::tempdir().unwrap();
        let repo = tmp.path().join("repo");
        std::fs::create_dir_all(repo.join(".git")).unwrap();
        write(&repo, "lib/go.mod", "module example.com/lib\ngo 1.21\n");
        write(tmp.path(), "outside/go.mod", "module example.com/out\n");
        write(
            &repo,
            "app/go.mod",
            "module example.com/app\ngo 1.21\nreplace example.com/lib => ../lib\n\
             replace example.com/out => ../../outside\n",
        );
        std::os::unix::fs::symlink(tmp.path().join("outside"), repo.join("link")).unwrap();
        write(
            &repo,
            "app2/go.mod",
            "module example.com/app2\nreplace example.com/out => ../link\n",
        );

        let app = Project::load(&repo.join("app")).unwrap();
        let lib = ModVer::parse("example.com/lib", "v1.0.0").unwrap();
        let (r, base) = app.replacement(&lib).unwrap();
        let file = app.mains[0].dir.join("go.mod");
        let m = app.replacement_go_mod(r, base, &file).unwrap();
        assert_eq!(m.module.as_deref(), Some("example.com/lib"));

        let out = ModVer::parse("example.com/out", "v1.0.0").unwrap();
        for project in [app, Project::load(&repo.join("app2")).unwrap()] {
            let (r, base) = project.replacement(&out).unwrap();
            let file = project.mains[0].dir.join("go.mod");
            let e = project
                .replacement_go_mod(r, base, &file)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("go.mod:") && e.contains("outside the checkout"),
                "{e}"
            );
        }
    }

    #[test]
    fn workspace_and_errors() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        write(root, "go.work", "go 1.22\nuse (\n\t./a\n\t./b\n)\n");
        write(root, "a/go.mod", "module example.com/a\ngo 1.21\n");
        write(root, "b/go.mod", "module example.com/b\ngo 1.20\n");
        let p = Project::load(root).unwrap();
        assert_eq!(p.mains.len(), 2);
        assert_eq!(p.go_version().as_str(), "1.22");

        write(root, "c/go.mod", "go 1.21\n");
        let e = Project::load(&root.join("c")).unwrap_err().to_string();
        assert!(e.ends_with("c/go.mod:1: no module line"), "{e}");
        let e = Project::load(&root.join("missing"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing"), "{e}");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        let e = Project::load(&root.join("empty")).unwrap_err().to_string();
        assert!(e.ends_with("empty: no go.mod or go.work"), "{e}");
    }
}
