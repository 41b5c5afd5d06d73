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

// Support code: each test uses a different part of it.
#![allow(dead_code)]

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
    load_corpus_dir(&Path::new(GO_SRC).join("cmd/go/testdata/mod"))
}

/// [`load_go_corpus`] of the Go installed at `goroot` (a current Go's corpus is larger: it
/// has the fake toolchain modules `golang.org/toolchain@v0.0.1-go1.999testmod.<os>-<arch>`).
pub fn load_corpus_of(goroot: &Path) -> Vec<CorpusVersion> {
    load_corpus_dir(&goroot.join("src/cmd/go/testdata/mod"))
}

fn load_corpus_dir(dir: &Path) -> Vec<CorpusVersion> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e} (install golang-go)", dir.display()))
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

// The rules deciding what Go would serve and list are the library's own
// checked implementations of x/mod, which have table tests of their own.
pub use gomirror::module::is_pseudo_version;
pub use gomirror::module::semver::{compare as semver_compare, prerelease};

/// Go: x/mod/module/module.go Check (for the canonical versions the corpus holds).
pub fn is_valid_module(path: &str, version: &str) -> bool {
    gomirror::module::ModVer::parse(path, version).is_ok()
}

/// Go: x/mod/module/module.go CheckPath.
pub fn check_path(path: &str) -> Result<(), String> {
    gomirror::module::check_path(path).map_err(|e| e.to_string())
}
