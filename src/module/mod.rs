//! Go's naming rules as types: a [`ModulePath`] and a [`Version`] are only
//! ever built by checking a string with the exact rules of golang.org/x/mod
//! (`module.CheckPath`, `semver`, `module.CheckPathMajor`), and a [`ModVer`]
//! pairs them. Everything downstream takes these types, so a string from
//! upstream, the feed or the config can never reach the file system unchecked.
//!
//! Input: untrusted strings. Output: checked values and their case-encoded
//! forms (`module.EscapePath`, `module.EscapeVersion`).

pub mod gover;
mod path;
pub mod semver;
mod version;

pub use path::{
    check_file_path, check_path, match_prefix_patterns, ModulePath, PathError, PrefixPatterns,
};
pub use version::{canonical_version, is_pseudo_version, Version, VersionError};

use std::fmt;

/// A module version whose path and version have both been checked, and
/// whose version is allowed for the path's major-version suffix.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModVer {
    pub path: ModulePath,
    pub version: Version,
}

/// Why a `path@version` pair is not a module version.
#[derive(Debug, thiserror::Error)]
pub enum ModVerError {
    #[error(transparent)]
    Path(#[from] PathError),
    /// Go: x/mod/module/module.go ModuleError: `path@version: invalid version: why`.
    #[error("{path}@{}: invalid {}: {}", .error.version, .error.noun, .error.reason)]
    Version { path: String, error: VersionError },
}

impl ModVer {
    /// Checks a path and version as x/mod `module.Check` does, but demands
    /// the canonical spelling a proxy serves.
    pub fn parse(path: &str, version: &str) -> Result<ModVer, ModVerError> {
        let path = ModulePath::new(path)?;
        let version = Version::for_path(&path, version).map_err(|error| ModVerError::Version {
            path: path.to_string(),
            error,
        })?;
        Ok(ModVer { path, version })
    }

    /// Pairs an already-checked path and version, checking only the
    /// major-version rule that ties them together.
    pub fn new(path: ModulePath, version: Version) -> Result<ModVer, ModVerError> {
        version
            .check_path_major(&path)
            .map_err(|error| ModVerError::Version {
                path: path.to_string(),
                error,
            })?;
        Ok(ModVer { path, version })
    }
}

impl fmt::Display for ModVer {
    /// `path@version`, as x/mod `module.Version.String`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.path, self.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modver_checks_major_suffix() {
        // Go: x/mod/module/module_test.go checkTests (path, version pairs).
        let ok = [
            ("rsc.io/quote", "v1.5.2"),
            ("rsc.io/quote/v3", "v3.1.0"),
            ("github.com/go-yaml/yaml", "v2.2.8+incompatible"),
            ("gopkg.in/yaml.v2", "v2.4.0"),
            ("gopkg.in/check.v1", "v0.0.0-20200227125254-8fa46927fb4f"),
            ("gopkg.in/yaml.v3-unstable", "v3.0.0"),
            ("example.com/m/v2", "v2.0.0-20200101000000-abcdefabcdef"),
        ];
        for (p, v) in ok {
            let mv = ModVer::parse(p, v).unwrap_or_else(|e| panic!("{p}@{v}: {e}"));
            assert_eq!(mv.to_string(), format!("{p}@{v}"));
        }
        let bad = [
            ("rsc.io/quote", "v2.0.0", "should be v0 or v1, not v2"),
            ("rsc.io/quote/v3", "v1.0.0", "should be v3, not v1"),
            (
                "rsc.io/quote/v3",
                "v3.0.0+incompatible",
                "+incompatible not allowed",
            ),
            (
                "rsc.io/quote",
                "v2.0.0",
                "rsc.io/quote@v2.0.0: invalid version: should be",
            ),
            ("gopkg.in/yaml.v2", "v3.0.0", "should be v2, not v3"),
            ("rsc.io/quote", "v1.5", "not canonical"),
            ("rsc.io/quote", "1.5.2", "not a semantic version"),
            ("rsc.io/quote/v1", "v1.0.0", "invalid version"),
        ];
        for (p, v, want) in bad {
            let err = ModVer::parse(p, v).expect_err(p).to_string();
            assert!(err.contains(want), "{p}@{v}: got {err:?}, want {want:?}");
        }
    }
}
