//! Go's own module-proxy test corpus, turned into the bytes `cmd/go/proxy_test.go` serves.
//!
//! Input: `G/cmd/go/testdata/mod/*.txt` (txtar archives) and `G/cmd/go/testdata/script/*.txt`.
//! Output: [`CorpusVersion`] (per module version: `.info`, `.mod`, `.zip`, whether `@v/list`
//! shows it) and [`GoSumLine`] (every well-formed go.sum line the scripts mention).
//!
//! How proxy_test.go maps the corpus to GOPROXY files
//! (Go: cmd/go/proxy_test.go readModList, proxyHandler, readArchive):
//! - Only `*.txt` names containing `_v` are modules. Before the last `_v` is the escaped module
//!   path with `/` written as `_`; after it is the escaped version. A name whose path does not
//!   unescape or fails CheckPath (`example.com/invalidpath/v1`) is never served.
//! - `.info` and `.mod` are the archive files of those names. A missing one is a 404 (the archive
//!   `example.com_retract_missingmod_v1.9.0.txt` has no `.mod` on purpose).
//! - The zip holds every other archive file, in archive order, named `<path>@<version>/<name>`;
//!   `.info`, `.mod` and `.zip` are skipped, and a name starting with `/` goes in verbatim minus
//!   that slash (`rsc.io_badzip_v1.0.0.txt` uses this to plant a file outside the prefix).
//!   Other dot-files (`.gitignore`, `.dot/dot.go`) do go into the zip, although the test sumdb
//!   (proxyGoSum) leaves every name starting with `.` out of its h1.
//! - `@v/list` shows the versions that are not pseudo-versions and pass module.Check.
//!
//! The semver, pseudo-version and path checks below are small test-side copies of x/mod rules,
//! kept here so test support never depends on the library under test.

// Support code: each test uses a different part of it.
#![allow(dead_code)]

use std::cmp::Ordering;
use std::path::Path;

/// Go's source tree as installed by `apt-get install golang-go`.
pub const GO_SRC: &str = "/usr/share/go-1.19/src";

/// A parsed txtar archive (Go: internal/txtar).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Archive {
    pub comment: Vec<u8>,
    pub files: Vec<(String, Vec<u8>)>,
}

/// One module version of the corpus, as proxy_test.go serves it.
#[derive(Clone, Debug)]
pub struct CorpusVersion {
    /// Unescaped module path, e.g. `rsc.io/QUOTE`.
    pub path: String,
    /// Unescaped version, e.g. `v1.5.3-PRE`.
    pub version: String,
    /// `None` when the archive has no `.info`: proxy_test.go answers 404.
    pub info: Option<Vec<u8>>,
    /// `None` when the archive has no `.mod`: proxy_test.go answers 404.
    pub mod_file: Option<Vec<u8>>,
    /// Built like proxy_test.go builds it; may be hostile (see `rsc.io/badzip`).
    pub zip: Vec<u8>,
    /// Shown by `@v/list`: not a pseudo-version and passes module.Check.
    pub listed: bool,
    /// The txtar file it came from, e.g. `rsc.io_quote_v1.5.2.txt`.
    pub file_name: String,
}

/// One `<path> <version>[/go.mod] h1:<base64>` line found in a script.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoSumLine {
    pub path: String,
    /// Without the `/go.mod` suffix.
    pub version: String,
    pub is_go_mod: bool,
    /// The whole hash field, `h1:` included.
    pub h1: String,
    /// Script file name, e.g. `mod_sum_mismatch.txt`.
    pub source_file: String,
}

/// Parses a txtar archive exactly as Go's internal/txtar Parse does; there are no syntax errors.
pub fn parse_txtar(text: &[u8]) -> Archive {
    let (comment, mut name, mut rest) = find_file_marker(text);
    let mut files = Vec::new();
    while let Some(n) = name {
        let (data, next, after) = find_file_marker(rest);
        files.push((n, data));
        name = next;
        rest = after;
    }
    Archive { comment, files }
}

/// Returns the data before the next marker line, the marker's name and the data after it.
// Go: internal/txtar/archive.go findFileMarker: only the final section gets a newline added.
fn find_file_marker(data: &[u8]) -> (Vec<u8>, Option<String>, &[u8]) {
    let mut i = 0;
    loop {
        if let Some((name, after)) = is_marker(&data[i..]) {
            return (data[..i].to_vec(), Some(name), after);
        }
        match find(&data[i..], b"\n-- ") {
            Some(j) => i += j + 1,
            None => return (fix_nl(data), None, &[]),
        }
    }
}

/// `-- name --` at the start of `data` (name trimmed, non-empty) → name and the bytes after the line.
fn is_marker(data: &[u8]) -> Option<(String, &[u8])> {
    if !data.starts_with(b"-- ") {
        return None;
    }
    let (line, after) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &data[data.len()..]),
    };
    if !line.ends_with(b" --") || line.len() < 6 {
        return None;
    }
    let name = String::from_utf8_lossy(&line[3..line.len() - 3])
        .trim()
        .to_string();
    (!name.is_empty()).then_some((name, after))
}

fn fix_nl(data: &[u8]) -> Vec<u8> {
    let mut v = data.to_vec();
    if v.last().is_some_and(|&b| b != b'\n') {
        v.push(b'\n');
    }
    v
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Every module version proxy_test.go would serve, in directory (file name) order.
pub fn load_go_corpus() -> Vec<CorpusVersion> {
    let dir = Path::new(GO_SRC).join("cmd/go/testdata/mod");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (install golang-go 1.19)", dir.display()))
        .map(|e| {
            e.expect("read_dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
        .iter()
        .filter_map(|name| {
            let (path, version) = module_of_file_name(name)?;
            let text = std::fs::read(dir.join(name)).expect("read corpus file");
            Some(corpus_version(name, path, version, &parse_txtar(&text)))
        })
        .collect()
}

/// `rsc.io_!q!u!o!t!e_v1.5.2.txt` → (`rsc.io/QUOTE`, `v1.5.2`); `None` if proxy_test.go skips it.
// Go: cmd/go/proxy_test.go readModList.
pub fn module_of_file_name(name: &str) -> Option<(String, String)> {
    let stem = name.strip_suffix(".txt")?;
    let i = stem.rfind("_v")?;
    let path = unescape_path(&stem[..i].replace('_', "/"))?;
    let version = unescape_path(&stem[i + 1..])?;
    check_path(&path).ok()?;
    Some((path, version))
}

fn corpus_version(file_name: &str, path: String, version: String, a: &Archive) -> CorpusVersion {
    let get = |want: &str| {
        a.files
            .iter()
            .find(|(n, _)| n == want)
            .map(|(_, d)| d.clone())
    };
    let prefix = format!("{path}@{version}/");
    let entries: Vec<(String, &[u8])> = a
        .files
        .iter()
        .filter(|(n, _)| !matches!(n.as_str(), ".info" | ".mod" | ".zip"))
        .map(|(n, d)| match n.strip_prefix('/') {
            Some(verbatim) => (verbatim.to_string(), d.as_slice()),
            None => (format!("{prefix}{n}"), d.as_slice()),
        })
        .collect();
    let mut zip = crate::zipgen::ZipBuilder::new();
    for (name, data) in &entries {
        zip.file(name, data);
    }
    CorpusVersion {
        listed: !is_pseudo_version(&version) && is_valid_module(&path, &version),
        info: get(".info"),
        mod_file: get(".mod"),
        zip: zip.finish(),
        file_name: file_name.to_string(),
        path,
        version,
    }
}

/// Every well-formed go.sum line in `G/cmd/go/testdata/script/*.txt`, in file order.
///
/// A line qualifies when it is exactly three fields, `<path> <version>[/go.mod] h1:<hash>`, the
/// path passes CheckPath and the hash is standard base64 of 32 bytes. Placeholders such as
/// `h1:garbage+hash` are left out; well-formed but wrong hashes are kept.
pub fn expected_go_sums() -> Vec<GoSumLine> {
    let dir = Path::new(GO_SRC).join("cmd/go/testdata/script");
    let mut paths: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e} (install golang-go 1.19)", dir.display()))
        .map(|e| e.expect("read_dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "txt"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let text = std::fs::read(&p).expect("read script");
        let source = p
            .file_name()
            .expect("file name")
            .to_string_lossy()
            .into_owned();
        let text = String::from_utf8_lossy(&text);
        out.extend(text.lines().filter_map(|l| parse_go_sum_line(l, &source)));
    }
    out
}

/// Parses one go.sum line; `None` for anything else.
pub fn parse_go_sum_line(line: &str, source_file: &str) -> Option<GoSumLine> {
    use base64::engine::{general_purpose::GeneralPurpose, GeneralPurposeConfig};
    use base64::{alphabet, Engine as _};
    // Go compares hashes as strings, so `…l1=` (non-zero trailing bits) is still a hash.
    let lenient = GeneralPurpose::new(
        &alphabet::STANDARD,
        GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
    );
    let f: Vec<&str> = line.split_whitespace().collect();
    let [path, version, h1] = f[..] else {
        return None;
    };
    let hash = lenient.decode(h1.strip_prefix("h1:")?);
    if hash.ok()?.len() != 32 || !version.starts_with('v') || check_path(path).is_err() {
        return None;
    }
    let (version, is_go_mod) = match version.strip_suffix("/go.mod") {
        Some(v) => (v, true),
        None => (version, false),
    };
    Some(GoSumLine {
        path: path.to_string(),
        version: version.to_string(),
        is_go_mod,
        h1: h1.to_string(),
        source_file: source_file.to_string(),
    })
}

/// Go's case encoding: every upper-case ASCII letter becomes `!` + lower case. Used for module
/// paths and versions alike (Go: x/mod/module/module.go EscapePath, EscapeVersion).
pub fn escape_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
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

/// Inverse of [`escape_path`]; `None` for upper case, a bad `!`, or non-ASCII
/// (Go: x/mod/module/module.go unescapeString).
pub fn unescape_path(s: &str) -> Option<String> {
    let mut out = String::with_capacity(s.len());
    let mut bang = false;
    for c in s.chars() {
        match c {
            _ if !c.is_ascii() || c.is_ascii_uppercase() => return None,
            _ if bang && !c.is_ascii_lowercase() => return None,
            _ if bang => out.push(c.to_ascii_uppercase()),
            '!' => {}
            _ => out.push(c),
        }
        bang = c == '!' && !bang;
    }
    (!bang).then_some(out)
}

/// A parsed Go semantic version; empty strings mean "absent".
struct Semver<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    prerelease: &'a str,
    build: &'a str,
}

// Go: x/mod/semver/semver.go parse (shorthands `v1`, `v1.2` are valid without pre-release).
fn parse_semver(v: &str) -> Option<Semver<'_>> {
    let rest = v.strip_prefix('v')?;
    let (core, build) = rest.split_once('+').map_or((rest, ""), |(c, b)| (c, b));
    let (nums, prerelease) = core.split_once('-').map_or((core, ""), |(n, p)| (n, p));
    let parts: Vec<&str> = nums.split('.').collect();
    let short = parts.len() < 3;
    if parts.len() > 3
        || !parts.iter().all(|p| is_num(p))
        || short && (core != nums || rest != core)
    {
        return None;
    }
    let ok_pre = prerelease
        .split('.')
        .all(|i| is_ident(i) && (!is_digits(i) || is_num(i)));
    let ok_build = build.split('.').all(is_ident);
    if (core != nums && !ok_pre) || (rest != core && !ok_build) {
        return None;
    }
    let part = |i: usize| parts.get(i).copied().unwrap_or("0");
    Some(Semver {
        major: parts[0],
        minor: part(1),
        patch: part(2),
        prerelease,
        build,
    })
}

fn is_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_num(s: &str) -> bool {
    is_digits(s) && (s == "0" || !s.starts_with('0'))
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

pub fn is_valid_semver(v: &str) -> bool {
    parse_semver(v).is_some()
}

/// The pre-release part without its `-`, or "" (Go: semver.Prerelease, minus the dash).
pub fn prerelease(v: &str) -> &str {
    parse_semver(v).map_or("", |s| s.prerelease)
}

/// Go's semver.Compare: invalid versions sort before valid ones and equal each other.
pub fn semver_compare(a: &str, b: &str) -> Ordering {
    match (parse_semver(a), parse_semver(b)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(x), Some(y)) => cmp_num(x.major, y.major)
            .then(cmp_num(x.minor, y.minor))
            .then(cmp_num(x.patch, y.patch))
            .then_with(|| cmp_prerelease(x.prerelease, y.prerelease)),
    }
}

fn cmp_num(a: &str, b: &str) -> Ordering {
    a.len().cmp(&b.len()).then(a.cmp(b))
}

fn cmp_prerelease(a: &str, b: &str) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Greater,
        (false, true) => return Ordering::Less,
        _ => {}
    }
    let (mut xs, mut ys) = (a.split('.'), b.split('.'));
    loop {
        let (x, y) = match (xs.next(), ys.next()) {
            (None, None) => return Ordering::Equal,
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (Some(x), Some(y)) => (x, y),
        };
        let o = match (is_digits(x), is_digits(y)) {
            (true, true) => cmp_num(x, y),
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => x.cmp(y),
        };
        if o != Ordering::Equal {
            return o;
        }
    }
}

/// `vX.0.0-yyyymmddhhmmss-abcdef123456`, `vX.Y.Z-pre.0.yyyymmddhhmmss-…`, `vX.Y.(Z+1)-0.yyyy…-…`,
/// optionally `+build` (Go: x/mod/module/pseudo.go IsPseudoVersion, without the regexp).
pub fn is_pseudo_version(v: &str) -> bool {
    let core = v.split_once('+').map_or(v, |(c, _)| c);
    let Some((rest, rev)) = core.rsplit_once('-') else {
        return false;
    };
    let Some(head) = rest.len().checked_sub(14).and_then(|i| rest.get(..i)) else {
        return false;
    };
    let timestamp_ok = is_digits(&rest[head.len()..]);
    let rev_ok = !rev.is_empty() && rev.bytes().all(|b| b.is_ascii_alphanumeric());
    let Some((release, after_dash)) = head.split_once('-') else {
        return false;
    };
    let form_ok = match after_dash {
        "" => release.ends_with(".0.0"),
        s => s == "0." || s.ends_with(".0."),
    };
    timestamp_ok && rev_ok && form_ok && is_valid_semver(v)
}

/// x/mod module.Check as a bool: valid path, valid semver, major version matching the path.
pub fn is_valid_module(path: &str, version: &str) -> bool {
    let Some(v) = parse_semver(version) else {
        return false;
    };
    let Ok(path_major) = check_path(path) else {
        return false;
    };
    // Go: x/mod/module/module.go CheckPathMajor.
    let pm = path_major
        .strip_suffix("-unstable")
        .filter(|p| p.starts_with(".v"));
    let pm = pm.unwrap_or(path_major);
    if version.starts_with("v0.0.0-") && pm == ".v1" {
        return true;
    }
    match pm {
        "" => v.major == "0" || v.major == "1" || v.build == "incompatible",
        _ => pm[2..] == *v.major,
    }
}

/// x/mod module.CheckPath for module paths; returns the path's major suffix (`/v2`, `.v1`, or "").
// Go: x/mod/module/module.go CheckPath, checkPath, checkElem, SplitPathVersion.
pub fn check_path(path: &str) -> Result<&str, String> {
    if path.is_empty() || path.starts_with('-') || path.ends_with('/') {
        return Err(format!("malformed module path {path:?}"));
    }
    for elem in path.split('/') {
        check_elem(elem)?;
    }
    let first = path.split('/').next().unwrap_or_default();
    let first_ok = first
        .bytes()
        .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.'));
    if !first.contains('.') || !first_ok {
        return Err(format!("{path:?}: bad first path element"));
    }
    split_path_version(path).ok_or_else(|| format!("{path:?}: invalid version suffix"))
}

fn check_elem(elem: &str) -> Result<(), String> {
    const BAD_WINDOWS: &[&str] = &[
        "CON", "PRN", "AUX", "NUL", "COM1", "COM2", "COM3", "COM4", "COM5", "COM6", "COM7", "COM8",
        "COM9", "LPT1", "LPT2", "LPT3", "LPT4", "LPT5", "LPT6", "LPT7", "LPT8", "LPT9",
    ];
    let chars_ok = elem
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b));
    if elem.is_empty() || elem.bytes().all(|b| b == b'.') || elem.starts_with('.') {
        return Err(format!("invalid path element {elem:?}"));
    }
    if elem.ends_with('.') || !chars_ok {
        return Err(format!("invalid path element {elem:?}"));
    }
    let short = elem.split('.').next().unwrap_or_default();
    if BAD_WINDOWS.iter().any(|b| b.eq_ignore_ascii_case(short)) {
        return Err(format!(
            "{short:?} disallowed as path element component on Windows"
        ));
    }
    match short.rsplit_once('~') {
        Some((_, digits)) if is_digits(digits) => Err("trailing tilde and digits".into()),
        _ => Ok(()),
    }
}

/// The major-version suffix of `path`, or `None` if the suffix is malformed (e.g. `/v1`, `/v02`).
fn split_path_version(path: &str) -> Option<&str> {
    if path.starts_with("gopkg.in/") {
        let base = path.strip_suffix("-unstable").unwrap_or(path);
        let i = base.trim_end_matches(|c: char| c.is_ascii_digit()).len();
        if i < 2 || &base[i - 2..i] != ".v" {
            return None;
        }
        let pm = &path[i - 2..];
        return (pm.len() > 2 && (pm.as_bytes()[2] != b'0' || pm == ".v0")).then_some(pm);
    }
    let i = path
        .trim_end_matches(|c: char| c.is_ascii_digit() || c == '.')
        .len();
    if i <= 1 || i == path.len() || &path[i - 2..i] != "/v" {
        return Some("");
    }
    let pm = &path[i - 2..];
    let bad = pm.contains('.') || pm.len() <= 2 || pm.as_bytes()[2] == b'0' || pm == "/v1";
    (!bad).then_some(pm)
}
