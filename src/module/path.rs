//! [`ModulePath`] and the path rules of golang.org/x/mod/module/module.go:
//! `CheckPath` (module paths), `CheckFilePath` (names inside module zips),
//! `EscapePath` (case-encoding with `!`) and `MatchPrefixPatterns`
//! (GONOSUMDB/GOPRIVATE-style globs).
//!
//! On top of Go's rules we refuse escaped path elements longer than a file
//! name may be (255 bytes), because every element becomes a directory in
//! the served tree.

use std::fmt;

/// Longest file name Linux file systems accept (NAME_MAX).
pub(super) const MAX_ELEM_BYTES: usize = 255;

/// A module path that passed `CheckPath` and fits the file system.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ModulePath(String);

/// Go: x/mod/module/module.go InvalidPathError: `malformed module path "x": why`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed {kind} path {path:?}: {reason}")]
pub struct PathError {
    pub kind: &'static str,
    pub path: String,
    pub reason: String,
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum ElemKind {
    Module,
    File,
}

impl ModulePath {
    pub fn new(path: &str) -> Result<ModulePath, PathError> {
        check_path(path)?;
        let escaped = escape_string(path);
        if let Some(long) = escaped.split('/').find(|e| e.len() > MAX_ELEM_BYTES) {
            return Err(PathError {
                kind: "module",
                path: path.to_owned(),
                reason: format!(
                    "path element of {} bytes is longer than the {MAX_ELEM_BYTES} a file name allows",
                    long.len()
                ),
            });
        }
        Ok(ModulePath(path.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Go: x/mod/module/module.go EscapePath.
    pub fn escaped(&self) -> String {
        escape_string(&self.0)
    }

    /// The major-version suffix (`/v2`, `.v1`, `.v3-unstable`) or empty.
    /// Go: x/mod/module/module.go SplitPathVersion.
    pub fn path_major(&self) -> &str {
        split_path_version(&self.0)
            .map(|(_, major)| major)
            .expect("a ModulePath passed CheckPath, which checks SplitPathVersion")
    }
}

impl fmt::Display for ModulePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Go: x/mod/module/module.go CheckPath.
pub fn check_path(path: &str) -> Result<(), PathError> {
    let fail = |reason: String| PathError {
        kind: "module",
        path: path.to_owned(),
        reason,
    };
    check_elems(path, ElemKind::Module).map_err(fail)?;
    let first = path.split('/').next().unwrap_or_default();
    if first.is_empty() {
        return Err(fail("leading slash".into()));
    }
    if !first.contains('.') {
        return Err(fail("missing dot in first path element".into()));
    }
    if path.starts_with('-') {
        return Err(fail("leading dash in first path element".into()));
    }
    if let Some(c) = first.chars().find(|&c| !first_path_ok(c)) {
        return Err(fail(format!("invalid char {c:?} in first path element")));
    }
    if split_path_version(path).is_none() {
        return Err(fail("invalid version".into()));
    }
    Ok(())
}

/// Go: x/mod/module/module.go CheckFilePath.
pub fn check_file_path(path: &str) -> Result<(), PathError> {
    check_elems(path, ElemKind::File).map_err(|reason| PathError {
        kind: "file",
        path: path.to_owned(),
        reason,
    })
}

/// Go: x/mod/module/module.go checkPath.
fn check_elems(path: &str, kind: ElemKind) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty string".into());
    }
    if path.starts_with('-') && kind != ElemKind::File {
        return Err("leading dash".into());
    }
    if path.contains("//") {
        return Err("double slash".into());
    }
    if path.ends_with('/') {
        return Err("trailing slash".into());
    }
    path.split('/').try_for_each(|elem| check_elem(elem, kind))
}

/// Go: x/mod/module/module.go checkElem.
pub(super) fn check_elem(elem: &str, kind: ElemKind) -> Result<(), String> {
    if elem.is_empty() {
        return Err("empty path element".into());
    }
    if elem.bytes().all(|b| b == b'.') {
        return Err(format!("invalid path element {elem:?}"));
    }
    if elem.starts_with('.') && kind == ElemKind::Module {
        return Err("leading dot in path element".into());
    }
    if elem.ends_with('.') {
        return Err("trailing dot in path element".into());
    }
    let char_ok = match kind {
        ElemKind::Module => mod_path_ok,
        ElemKind::File => file_name_ok,
    };
    if let Some(c) = elem.chars().find(|&c| !char_ok(c)) {
        return Err(format!("invalid char {c:?}"));
    }
    let short = elem.split('.').next().unwrap_or(elem);
    if BAD_WINDOWS_NAMES
        .iter()
        .any(|bad| bad.eq_ignore_ascii_case(short))
    {
        return Err(format!(
            "{short:?} disallowed as path element component on Windows"
        ));
    }
    if kind == ElemKind::Module && has_tilde_digits_suffix(short) {
        return Err("trailing tilde and digits in path element".into());
    }
    Ok(())
}

/// Go: checkElem rejects `name~123`, which looks like a Windows short name.
fn has_tilde_digits_suffix(short: &str) -> bool {
    match short.rfind('~') {
        Some(t) if t < short.len() - 1 => short[t + 1..].bytes().all(|b| b.is_ascii_digit()),
        _ => false,
    }
}

const BAD_WINDOWS_NAMES: &[&str] = &[
    "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
    "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
];

fn first_path_ok(c: char) -> bool {
    c == '-' || c == '.' || c.is_ascii_digit() || c.is_ascii_lowercase()
}

fn mod_path_ok(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_' | '~')
}

/// Go: fileNameOK: ASCII letters, digits and `!#$%&()+,-.=@[]^_{}~ `, or
/// any Unicode letter (`unicode.IsLetter`: general category L, which is
/// narrower than Rust's `is_alphabetic`: no marks, no letter numbers).
fn file_name_ok(c: char) -> bool {
    use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};
    if c.is_ascii() {
        c.is_ascii_alphanumeric() || "!#$%&()+,-.=@[]^_{}~ ".contains(c)
    } else {
        c.general_category_group() == GeneralCategoryGroup::Letter
    }
}

/// Go: x/mod/module/module.go SplitPathVersion: `(prefix, pathMajor)`, or
/// `None` when the path ends in a malformed major suffix (`/v1`, `/v0`, `/v2.0`).
fn split_path_version(path: &str) -> Option<(&str, &str)> {
    if path.starts_with("gopkg.in/") {
        return split_gopkg_in(path);
    }
    let bytes = path.as_bytes();
    let mut i = bytes.len();
    let mut dot = false;
    while i > 0 && (bytes[i - 1].is_ascii_digit() || bytes[i - 1] == b'.') {
        dot |= bytes[i - 1] == b'.';
        i -= 1;
    }
    if i <= 1 || i == bytes.len() || bytes[i - 1] != b'v' || bytes[i - 2] != b'/' {
        return Some((path, ""));
    }
    let (prefix, major) = path.split_at(i - 2);
    if dot || major.len() <= 2 || major.as_bytes()[2] == b'0' || major == "/v1" {
        return None;
    }
    Some((prefix, major))
}

/// Go: x/mod/module/module.go splitGopkgIn: `gopkg.in/yaml.v2`, `.v0` allowed.
fn split_gopkg_in(path: &str) -> Option<(&str, &str)> {
    let bytes = path.as_bytes();
    let mut i = path.strip_suffix("-unstable").unwrap_or(path).len();
    while i > 0 && bytes[i - 1].is_ascii_digit() {
        i -= 1;
    }
    if i <= 1 || bytes[i - 1] != b'v' || bytes[i - 2] != b'.' {
        return None;
    }
    let (prefix, major) = path.split_at(i - 2);
    if major.len() <= 2 || (major.as_bytes()[2] == b'0' && major != ".v0") {
        return None;
    }
    Some((prefix, major))
}

/// Go: x/mod/module/module.go escapeString: upper case → `!` + lower case.
/// Callers pass strings that passed checkElem, so they hold no `!`.
pub(super) fn escape_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            out.push('!');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// Go: x/mod/module/module.go MatchPrefixPatterns: does any of the
/// comma-separated `path.Match` globs match a leading run of `target`'s
/// path elements (GONOSUMDB, GOPRIVATE)?
pub fn match_prefix_patterns(globs: &str, target: &str) -> bool {
    globs
        .split(',')
        .any(|glob| match_prefix_pattern(glob, target))
}

/// GONOSUMDB/GOPRIVATE-style globs, split once (at the config's edge) and
/// matched as [`match_prefix_patterns`] does.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrefixPatterns(Vec<String>);

impl PrefixPatterns {
    /// One glob per entry, none holding a comma.
    pub fn new(globs: Vec<String>) -> PrefixPatterns {
        PrefixPatterns(globs)
    }

    pub fn matches(&self, target: &str) -> bool {
        self.0.iter().any(|glob| match_prefix_pattern(glob, target))
    }

    /// Adds `other`'s globs.
    pub fn extend(&mut self, other: &PrefixPatterns) {
        self.0.extend(other.0.iter().cloned());
    }
}

fn match_prefix_pattern(glob: &str, target: &str) -> bool {
    let glob = glob.strip_suffix('/').unwrap_or(glob);
    if glob.is_empty() {
        return false;
    }
    // The leading elements of target, as many as the glob has.
    let n = glob.matches('/').count();
    let prefix = match target.match_indices('/').nth(n) {
        Some((cut, _)) => &target[..cut],
        None if target.matches('/').count() == n => target,
        None => return false,
    };
    path_match(glob.as_bytes(), prefix.as_bytes())
}

/// Go's `path.Match`: `*` any run of non-`/`, `?` one non-`/`, `[...]`
/// classes with ranges and `^` negation, `\` escapes. A malformed pattern
/// matches nothing (Go returns ErrBadPattern, which MatchPrefixPatterns ignores).
fn path_match(pattern: &[u8], name: &[u8]) -> bool {
    match pattern.split_first() {
        None => name.is_empty(),
        Some((b'*', rest)) => (0..=name.len())
            .take_while(|&i| i == 0 || name[i - 1] != b'/')
            .any(|i| path_match(rest, &name[i..])),
        Some((b'?', rest)) => match name.split_first() {
            Some((&c, tail)) if c != b'/' => path_match(rest, tail),
            _ => false,
        },
        Some((b'[', rest)) => match (name.split_first(), match_class(rest)) {
            (Some((&c, tail)), Some((class, after))) if c != b'/' && class(c) => {
                path_match(after, tail)
            }
            _ => false,
        },
        Some((b'\\', rest)) => match (rest.split_first(), name.split_first()) {
            (Some((p, prest)), Some((c, tail))) if p == c => path_match(prest, tail),
            _ => false,
        },
        Some((p, rest)) => match name.split_first() {
            Some((c, tail)) if p == c => path_match(rest, tail),
            _ => false,
        },
    }
}

/// Parses a `[...]` class body (after `[`) into a predicate and the rest
/// of the pattern after `]`.
fn match_class(pattern: &[u8]) -> Option<(impl Fn(u8) -> bool, &[u8])> {
    let (negated, mut p) = match pattern.split_first() {
        Some((b'^', rest)) => (true, rest),
        _ => (false, pattern),
    };
    let mut ranges = Vec::new();
    loop {
        let (lo, rest) = class_char(p)?;
        let (hi, rest) = match rest.split_first() {
            Some((b'-', r)) => class_char(r)?,
            _ => (lo, rest),
        };
        if hi < lo {
            return None;
        }
        ranges.push((lo, hi));
        p = rest;
        if p.first() == Some(&b']') {
            p = &p[1..];
            break;
        }
    }
    Some((
        move |c| ranges.iter().any(|&(lo, hi)| lo <= c && c <= hi) != negated,
        p,
    ))
}

fn class_char(p: &[u8]) -> Option<(u8, &[u8])> {
    match p {
        [b'\\', c, rest @ ..] => Some((*c, rest)),
        [b'-' | b']', ..] | [] => None,
        [c, rest @ ..] => Some((*c, rest)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_path_table() {
        // Go: x/mod/module/module_test.go checkPathTests (ok for CheckPath).
        let cases = [
            ("x.y/z", true),
            ("x.y", true),
            ("", false),
            ("x.y/\u{FFFD}", false),
            ("/x.y/z", false),
            ("x./z", false),
            (".x/z", false),
            ("-x/z", false),
            ("x..y/z", true),
            ("x.y/z/../../w", false),
            ("x.y//z", false),
            ("x.y/z//w", false),
            ("x.y/z/", false),
            ("x.y/z/v0", false),
            ("x.y/z/v1", false),
            ("x.y/z/v2", true),
            ("x.y/z/v2.0", false),
            ("X.y/z", false),
            ("!x.y/z", false),
            ("_x.y/z", false),
            ("x.y!/z", false),
            ("x.y\"/z", false),
            ("x.y#/z", false),
            ("x.y:/z", false),
            ("x.y/Z", true),
            ("x.y/z~", true),
            ("x.y/z~0", false),
            ("x.y/z~09", false),
            ("x.y/z09", true),
            ("x.y/z09~", true),
            ("x.y/z09~09z", true),
            ("x.y/z09~09z~09", false),
            ("github.com/!123/logrus", false),
            ("github.com/user/unicode/испытание", false),
            ("../x", false),
            ("./y", false),
            ("x:y", false),
            ("\\temp\\foo", false),
            (".gitignore", false),
            ("x.y/.gitignore", false),
            ("x.y/com1", false),
            ("x.y/com1.txt", false),
            ("x.y/lpt1-x", true),
            ("x.y/nul.x", false),
            ("gopkg.in/yaml.v2", true),
            ("gopkg.in/yaml.v0", true),
            ("gopkg.in/yaml.v1-unstable", true),
            ("gopkg.in/yaml", false),
            ("gopkg.in/yaml.v02", false),
            ("x.y/z\0", false),
            ("/etc/passwd", false),
        ];
        for (path, ok) in cases {
            assert_eq!(
                check_path(path).is_ok(),
                ok,
                "check_path({path:?}): {:?}",
                check_path(path)
            );
        }
    }

    #[test]
    fn check_file_path_table() {
        let cases = [
            ("go.mod", true),
            ("a/b c/d.go", true),
            ("испытание/x.go", true),
            ("../evil", false),
            ("/abs", false),
            ("a//b", false),
            ("a/./b", false),
            ("dir/", false),
            ("a\\b", false),
            ("x:y", false),
            ("aux.c", false),
            ("a\u{093E}.go", false), // a combining mark is not a letter
            ("\u{2160}.go", false),  // nor is a letter number
            ("\u{0345}.go", false),
            (".hidden", true),
            ("-dash", true),
        ];
        for (path, ok) in cases {
            assert_eq!(
                check_file_path(path).is_ok(),
                ok,
                "check_file_path({path:?})"
            );
        }
    }

    #[test]
    fn long_elements_are_refused_not_crashed() {
        let path = format!("example.com/{}", "a".repeat(5000));
        let err = ModulePath::new(&path).unwrap_err();
        assert!(err.reason.contains("longer than the 255"), "{err}");
    }

    #[test]
    fn escape() {
        // Go: module_test.go escapeTests.
        let cases = [
            ("m.com/a/b", "m.com/a/b"),
            ("m.com/Z", "m.com/!z"),
            (
                "github.com/Azure/azure-sdk-for-go",
                "github.com/!azure/azure-sdk-for-go",
            ),
            (
                "github.com/GoogleCloudPlatform/x",
                "github.com/!google!cloud!platform/x",
            ),
        ];
        for (path, want) in cases {
            assert_eq!(ModulePath::new(path).unwrap().escaped(), want);
        }
    }

    #[test]
    fn path_major() {
        let cases = [
            ("rsc.io/quote", ""),
            ("rsc.io/quote/v3", "/v3"),
            ("gopkg.in/yaml.v2", ".v2"),
            ("gopkg.in/yaml.v3-unstable", ".v3-unstable"),
        ];
        for (path, want) in cases {
            assert_eq!(ModulePath::new(path).unwrap().path_major(), want, "{path}");
        }
    }

    #[test]
    fn prefix_patterns() {
        // Go: module_test.go TestMatchPrefixPatterns.
        let cases = [
            ("*/quote", "rsc.io/quote", true),
            ("*/quo", "rsc.io/quote", false),
            ("rsc.io", "rsc.io/quote", true),
            ("rsc.io/", "rsc.io/quote", true),
            ("rsc", "rsc.io/quote", false),
            ("rsc*", "rsc.io/quote", true),
            ("rsc.io", "rsc.io/quote/v3", true),
            ("*/quote", "rsc.io/quote/v3", true),
            ("*/quote/", "rsc.io/quote/v3", true),
            ("*/quote/*", "rsc.io/quote/v3", true),
            ("*/quote/*/", "rsc.io/quote/v3", true),
            ("*/v3", "rsc.io/quote/v3", false),
            ("*/*/v3", "rsc.io/quote/v3", true),
            ("*/*/*", "rsc.io/quote/v3", true),
            ("*/*/*/", "rsc.io/quote/v3", true),
            ("*/*/*", "rsc.io/quote", false),
            ("*/*/*/", "rsc.io/quote", false),
            ("*/*/*,,", "rsc.io/quote", false),
            ("*/*/*,,*/quote", "rsc.io/quote", true),
            (",,*/quote", "rsc.io/quote", true),
            ("github.com/myorg/*", "github.com/myorg/x/y", true),
            ("github.com/[a-m]*", "github.com/kr/pretty", true),
            ("github.com/[^a-m]*", "github.com/kr/pretty", false),
            ("github.com/k?", "github.com/kr", true),
            ("[", "rsc.io/quote", false),
        ];
        for (globs, target, want) in cases {
            assert_eq!(
                match_prefix_patterns(globs, target),
                want,
                "{globs:?} vs {target:?}"
            );
        }
    }
}
