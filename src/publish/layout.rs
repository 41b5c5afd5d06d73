//! Where things live in the served tree: Go's download-cache layout
//! (`<escaped path>/@v/{list,<v>.info,<v>.mod,<v>.zip}`, `<escaped path>/@latest`),
//! which is also the GOPROXY URL layout (PROTOCOL.md, "GOPROXY").
//!
//! This is the only place that turns a module or module@version into a
//! path. It builds paths only from [`ModulePath`] and [`Version`](crate::module::Version), whose
//! escaped forms are checked file-name-safe, so nothing from upstream can
//! name a file outside the tree.

use std::path::{Path, PathBuf};

use crate::module::{ModVer, ModulePath};

/// Prefix of every temporary file we create in the tree. nginx must not
/// serve these (see the sample server block) and start-up removes strays.
pub const TMP_PREFIX: &str = ".tmp-";

/// The three files of one module version, in the order they are published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mod,
    Zip,
    Info,
}

impl Kind {
    pub fn ext(self) -> &'static str {
        match self {
            Kind::Mod => "mod",
            Kind::Zip => "zip",
            Kind::Info => "info",
        }
    }
}

/// `<escaped path>/@v/<escaped version>.<ext>`, relative: also the URL path
/// below a GOPROXY base.
pub fn version_rel(mv: &ModVer, kind: Kind) -> String {
    format!(
        "{}/@v/{}.{}",
        mv.path.escaped(),
        mv.version.escaped(),
        kind.ext()
    )
}

/// `<escaped path>/@v/list`, relative.
pub fn list_rel(path: &ModulePath) -> String {
    format!("{}/@v/list", path.escaped())
}

/// `<escaped path>/@latest`, relative.
pub fn latest_rel(path: &ModulePath) -> String {
    format!("{}/@latest", path.escaped())
}

/// The served tree rooted at one directory.
#[derive(Clone, Debug)]
pub struct Tree {
    root: PathBuf,
}

impl Tree {
    pub fn new(root: impl Into<PathBuf>) -> Tree {
        Tree { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `<root>/<escaped path>/@v`: where a module's version files, its list
    /// and every temporary file for them live.
    pub fn version_dir(&self, path: &ModulePath) -> PathBuf {
        self.root.join(path.escaped()).join("@v")
    }

    pub fn version_file(&self, mv: &ModVer, kind: Kind) -> PathBuf {
        self.root.join(version_rel(mv, kind))
    }

    pub fn list_file(&self, path: &ModulePath) -> PathBuf {
        self.root.join(list_rel(path))
    }

    pub fn latest_file(&self, path: &ModulePath) -> PathBuf {
        self.root.join(latest_rel(path))
    }

    /// The run lock, at the root so that two runs with different
    /// databases still cannot share one tree.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".gomirror.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_case_encoded() {
        let mv = ModVer::parse("github.com/Azure/go-autorest", "v1.0.0-RC1").unwrap();
        let tree = Tree::new("/srv/t");
        assert_eq!(
            tree.version_file(&mv, Kind::Zip),
            Path::new("/srv/t/github.com/!azure/go-autorest/@v/v1.0.0-!r!c1.zip")
        );
        assert_eq!(list_rel(&mv.path), "github.com/!azure/go-autorest/@v/list");
        assert_eq!(
            latest_rel(&mv.path),
            "github.com/!azure/go-autorest/@latest"
        );
    }
}
