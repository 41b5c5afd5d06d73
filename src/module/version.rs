//! [`Version`]: a canonical Go module version, as a proxy serves it.
//!
//! Go: x/mod/module/module.go `CanonicalVersion`, `CheckPathMajor`,
//! `EscapeVersion`; x/mod/module/pseudo.go `IsPseudoVersion`.

use std::cmp::Ordering;
use std::fmt;

use super::path::{check_elem, escape_string, ElemKind, ModulePath, MAX_ELEM_BYTES};
use super::semver;

/// Longest escaped version we accept: `<version>.info` must still fit in
/// one 255-byte file name.
const MAX_VERSION_BYTES: usize = MAX_ELEM_BYTES - ".info".len();

/// A checked, canonical module version (`v1.2.3`, `v1.2.3-pre`,
/// `v2.0.0+incompatible`, or a pseudo-version).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Version(String);

/// Why a string is not a version we can mirror.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {noun} {version:?}: {reason}")]
pub struct VersionError {
    pub version: String,
    pub noun: &'static str,
    pub reason: String,
}

impl Version {
    /// Checks `s` is valid Go semver in canonical form (Go:
    /// module.CanonicalVersion(v) == v), and safe to escape into a file name.
    pub fn new(s: &str) -> Result<Version, VersionError> {
        let fail = |reason: String| VersionError {
            version: s.to_owned(),
            noun: if is_pseudo_version(s) {
                "pseudo-version"
            } else {
                "version"
            },
            reason,
        };
        let Some(canonical) = canonical_version(s) else {
            return Err(fail("not a semantic version".into()));
        };
        if canonical != s {
            return Err(fail(format!("not canonical (want {canonical})")));
        }
        // Go: module.EscapeVersion: the version must be a valid file path element.
        if let Err(reason) = check_elem(s, ElemKind::File) {
            return Err(fail(format!("disallowed version string: {reason}")));
        }
        let escaped = escape_string(s);
        if escaped.len() > MAX_VERSION_BYTES {
            return Err(fail(format!(
                "escaped version is {} bytes, longer than the {MAX_VERSION_BYTES} a file name allows",
                escaped.len()
            )));
        }
        Ok(Version(s.to_owned()))
    }

    /// Checks `s` and that it may be a version of `path`.
    pub fn for_path(path: &ModulePath, s: &str) -> Result<Version, VersionError> {
        let v = Version::new(s)?;
        v.check_path_major(path)?;
        Ok(v)
    }

    /// Go: x/mod/module/module.go CheckPathMajor, plus the rule of
    /// cmd/go/internal/modfetch/coderepo.go appendIncompatibleVersions that
    /// `+incompatible` exists only for paths without a major suffix.
    pub fn check_path_major(&self, path: &ModulePath) -> Result<(), VersionError> {
        let v = self.as_str();
        let mut path_major = path.path_major();
        if path_major.starts_with(".v") {
            path_major = path_major.strip_suffix("-unstable").unwrap_or(path_major);
        }
        let incompatible = semver::build(v) == "+incompatible";
        if incompatible && !path_major.is_empty() {
            return Err(self.error(format!(
                "+incompatible not allowed: module path {path} has a major version suffix"
            )));
        }
        if v.starts_with("v0.0.0-") && path_major == ".v1" {
            return Ok(());
        }
        let m = semver::major(v).expect("a Version is valid semver");
        let want = match path_major {
            "" if m == "v0" || m == "v1" || incompatible => return Ok(()),
            "" => "v0 or v1",
            suffix if &suffix[1..] == m => return Ok(()),
            suffix => &suffix[1..],
        };
        Err(self.error(format!("should be {want}, not {m}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Go: x/mod/module/module.go EscapeVersion (`!` + lower case for upper case).
    pub fn escaped(&self) -> String {
        escape_string(&self.0)
    }

    /// Pseudo-versions name commits, not tags: they never go in `@v/list`.
    pub fn is_pseudo(&self) -> bool {
        is_pseudo_version(&self.0)
    }

    pub fn is_prerelease(&self) -> bool {
        !semver::prerelease(&self.0).is_empty()
    }

    fn error(&self, reason: String) -> VersionError {
        VersionError {
            version: self.0.clone(),
            noun: if self.is_pseudo() {
                "pseudo-version"
            } else {
                "version"
            },
            reason,
        }
    }
}

/// Go: x/mod/module/module.go CanonicalVersion: semver.Canonical, keeping
/// a `+incompatible` build suffix.
pub fn canonical_version(v: &str) -> Option<String> {
    let mut cv = semver::canonical(v)?;
    if semver::build(v) == "+incompatible" {
        cv.push_str("+incompatible");
    }
    Some(cv)
}

/// Go: x/mod/module/pseudo.go IsPseudoVersion, whose regexp is
/// `^v[0-9]+\.(0\.0-|\d+\.\d+-([^+]*\.)?0\.)\d{14}-[A-Za-z0-9]+(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$`.
pub fn is_pseudo_version(v: &str) -> bool {
    if v.matches('-').count() < 2 || !semver::is_valid(v) {
        return false;
    }
    // The build suffix is already valid semver build syntax, which is
    // exactly the regexp's optional `+...` group.
    let core = &v[..v.len() - semver::build(v).len()];
    // `...-<14 digits>-<rev>`: the revision is alphanumeric.
    let Some((rest, rev)) = core.rsplit_once('-') else {
        return false;
    };
    if rev.is_empty() || !rev.bytes().all(|c| c.is_ascii_alphanumeric()) {
        return false;
    }
    let (base, stamp) = match rest.len().checked_sub(14) {
        Some(i) if rest.is_char_boundary(i) => rest.split_at(i),
        _ => return false,
    };
    stamp.bytes().all(|c| c.is_ascii_digit()) && is_pseudo_base(base)
}

/// The part before the timestamp: `vN.0.0-`, or `vN.N.N-` followed by
/// an optional pre-release ending in `.` and then `0.`.
fn is_pseudo_base(base: &str) -> bool {
    let Some(rest) = base.strip_prefix('v') else {
        return false;
    };
    let Some((major, rest)) = split_digits(rest) else {
        return false;
    };
    let _ = major;
    let Some(rest) = rest.strip_prefix('.') else {
        return false;
    };
    if rest == "0.0-" {
        return true;
    }
    let Some((_, rest)) = split_digits(rest) else {
        return false;
    };
    let Some(rest) = rest.strip_prefix('.') else {
        return false;
    };
    let Some((_, rest)) = split_digits(rest) else {
        return false;
    };
    let Some(pre) = rest.strip_prefix('-') else {
        return false;
    };
    // `([^+]*\.)?0\.`
    pre == "0." || (pre.ends_with(".0.") && !pre.contains('+'))
}

fn split_digits(s: &str) -> Option<(&str, &str)> {
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    (end > 0).then(|| s.split_at(end))
}

impl Ord for Version {
    /// Semver order (Go: semver.Compare), ties broken bytewise so that the
    /// order is total.
    fn cmp(&self, other: &Self) -> Ordering {
        semver::compare(&self.0, &other.0).then_with(|| self.0.cmp(&other.0))
    }
}

impl PartialOrd for Version {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudo_versions() {
        // Go: x/mod/module/pseudo_test.go (IsPseudoVersion cases).
        let cases = [
            ("v0.0.0-20060102150405-hash", true),
            ("v1.2.4-0.20060102150405-hash", true),
            ("v1.2.3-pre.0.20060102150405-hash", true),
            ("v1.2.3-pre.0.20060102150405-hash+incompatible", true),
            ("v2.0.0-20191109021931-daa7c04131f5", true),
            ("v1.2.3-pre.1.20060102150405-hash", false),
            ("v1.2.3-20060102150405-hash", false),
            ("v0.0.0-2006010215040-hash", false),
            ("v0.0.0-20060102150405", false),
            ("v1.2.3", false),
            ("v1.2.3-pre", false),
            ("v1.2.4-0.20060102150405-ha-sh", false),
        ];
        for (v, want) in cases {
            assert_eq!(is_pseudo_version(v), want, "{v}");
        }
    }

    #[test]
    fn new_accepts_only_canonical() {
        let cases: &[(&str, Result<(), &str>)] = &[
            ("v1.2.3", Ok(())),
            ("v1.2.3-RC1", Ok(())),
            ("v2.0.0+incompatible", Ok(())),
            ("v1.2.3+meta", Err("not canonical (want v1.2.3)")),
            ("v1.2", Err("not canonical (want v1.2.0)")),
            ("v1.2.3\0", Err("not a semantic version")),
            ("../../etc", Err("not a semantic version")),
            ("latest", Err("not a semantic version")),
            ("", Err("not a semantic version")),
        ];
        for (v, want) in cases {
            let got = Version::new(v).map(|_| ()).map_err(|e| e.reason);
            match (got, want) {
                (Ok(()), Ok(())) => {}
                (Err(got), Err(want)) => assert!(got.contains(want), "{v:?}: {got}"),
                (got, want) => panic!("{v:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn long_versions_are_refused_not_crashed() {
        let v = format!("v1.0.0-{}", "a".repeat(5000));
        let err = Version::new(&v).unwrap_err();
        assert!(err.reason.contains("longer than"), "{err}");
    }

    #[test]
    fn escaping() {
        assert_eq!(
            Version::new("v1.2.3-RC1").unwrap().escaped(),
            "v1.2.3-!r!c1"
        );
        assert_eq!(Version::new("v1.0.0").unwrap().escaped(), "v1.0.0");
    }

    #[test]
    fn order_is_semver() {
        let mut vs: Vec<Version> = ["v1.10.0", "v1.9.0", "v1.9.0-rc.1", "v2.0.0+incompatible"]
            .iter()
            .map(|v| Version::new(v).unwrap())
            .collect();
        vs.sort();
        let got: Vec<&str> = vs.iter().map(Version::as_str).collect();
        assert_eq!(
            got,
            ["v1.9.0-rc.1", "v1.9.0", "v1.10.0", "v2.0.0+incompatible"]
        );
    }
}
