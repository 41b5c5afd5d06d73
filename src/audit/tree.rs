//! The served tree against the state, file by file (see: #13):
//!
//! - each published version's `.info`, `.mod` and `.zip` is a regular file
//!   (not missing, not a symlink) with the sha256 recorded when it was
//!   published; the zip also passes the zip rules and hashes to its `h1:`,
//!   the `.mod` to its `h1:`. A version published before the `.info` and
//!   `.mod` sha256 were recorded (migration 0011) has its `.info` checked
//!   by content (size, `Version`, `Time`) instead, and is counted;
//! - each module's `@v/list` and `@latest` are what the commit step writes
//!   for the versions state has published (`publish::module_metadata`);
//! - nothing else is in the tree: no file state did not publish, no
//!   symlink, apart from the offline checksum database (checked on its
//!   own), the run lock, temporary files and the files of pending versions
//!   (both the next sync's to finish or remove), and what `verify --repair`
//!   moved aside.
//!
//! A module with a state row that no longer passes Go's rules is reported
//! once, as that row; its lists and directory are not checked (state
//! cannot say what they should hold).
//!
//! Every finding names the file and its module or module@version.

use std::collections::{BTreeMap, HashSet};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::{finding, Finding};
use crate::module::{ModVer, ModulePath, Version};
use crate::publish::layout::{self, Kind, Tree, TMP_PREFIX};
use crate::publish::{atomic, module_metadata};
use crate::state::PublishedFiles;
use crate::verify::{dirhash, zip};

/// One published version's files; `by_content` is set when its `.info`
/// had no recorded sha256 to compare with.
pub(super) fn check_version_files(tree: &Tree, row: &PublishedFiles) -> (Vec<Finding>, bool) {
    let subject = row.mv.to_string();
    let mut found = Vec::new();
    let mut problem = |kind: Kind, p: String| {
        let rel = layout::version_rel(&row.mv, kind);
        // Present but not as published: `verify --repair` moves it aside.
        let present = std::fs::symlink_metadata(tree.version_file(&row.mv, kind)).is_ok();
        let mut f = finding(&subject, format!("{rel}: {p}"));
        f.altered = present.then_some(rel);
        found.push(f);
    };
    let kinds = [Kind::Info, Kind::Mod]
        .into_iter()
        .chain(row.zip.as_ref().map(|_| Kind::Zip));
    for kind in kinds {
        let path = tree.version_file(&row.mv, kind);
        if let Err(p) = check_regular(&path, "from upstream") {
            problem(kind, p);
            continue;
        }
        let checked = match kind {
            Kind::Zip => check_zip(&path, row),
            Kind::Mod => check_mod(&path, row),
            Kind::Info => check_info(&path, row),
        };
        if let Err(p) = checked {
            problem(kind, p);
        }
    }
    (found, row.info_sha256.is_none())
}

/// A regular file, neither missing nor a symlink (a symlink could point
/// anywhere outside the tree, and nginx would serve it). `source` says
/// where the next sync takes a missing one from.
fn check_regular(path: &Path, source: &str) -> Result<(), String> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_symlink() => Err("is a symlink".into()),
        Ok(m) if !m.is_file() => Err("is not a regular file".into()),
        Ok(_) => Ok(()),
        Err(e) if e.kind() == ErrorKind::NotFound => {
            Err(format!("missing (the next sync restores it {source})"))
        }
        Err(e) => Err(e.to_string()),
    }
}

fn sha256_hex(path: &Path) -> Result<String, String> {
    atomic::sha256_file(path)
        .map(hex::encode)
        .map_err(|e| crate::error::chain(&e))
}

pub(super) fn compare_sha256(actual: &str, recorded: &str) -> Result<(), String> {
    if actual == recorded {
        Ok(())
    } else {
        Err(format!(
            "sha256 is {actual}, recorded {recorded}: changed since it was published"
        ))
    }
}

/// The sha256 catches any change (a rewritten central directory keeps the
/// `h1:`, and breaks `export`); the rules and `h1:` say what changed.
fn check_zip(path: &Path, row: &PublishedFiles) -> Result<(), String> {
    let file = fs_err::File::open(path).map_err(|e| e.to_string())?;
    check_zip_bytes(&sha256_hex(path)?, file, row)
}

/// A zip whose bytes hash to `sha256` and are in `file`: that sha256
/// against the recorded one, then the zip rules and `h1:`.
pub(super) fn check_zip_bytes(
    sha256: &str,
    file: fs_err::File,
    row: &PublishedFiles,
) -> Result<(), String> {
    let recorded = row.zip.as_ref().ok_or("no zip was published")?;
    compare_sha256(sha256, &recorded.sha256)?;
    match zip::check_zip_file(&row.mv, file) {
        Ok(z) if z.h1 != recorded.h1 => {
            Err(format!("hashes to {}, recorded {}", z.h1, recorded.h1))
        }
        Ok(_) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn check_mod(path: &Path, row: &PublishedFiles) -> Result<(), String> {
    let bytes = fs_err::read(path).map_err(|e| e.to_string())?;
    check_mod_digest(&dirhash::digest(&bytes), row)
}

/// A `.mod` whose bytes hash to `sha256`: the recorded sha256 and `h1:`
/// (the `h1:` of a go.mod is made from its sha256 alone).
pub(super) fn check_mod_digest(sha256: &[u8; 32], row: &PublishedFiles) -> Result<(), String> {
    if let Some(recorded) = &row.mod_sha256 {
        compare_sha256(&hex::encode(sha256), recorded)?;
    }
    let h1 = dirhash::hash_go_mod(sha256);
    if h1 != row.h1_mod {
        return Err(format!("hashes to {h1}, recorded {}", row.h1_mod));
    }
    Ok(())
}

fn check_info(path: &Path, row: &PublishedFiles) -> Result<(), String> {
    let bytes = fs_err::read(path).map_err(|e| e.to_string())?;
    check_info_bytes(&bytes, row)
}

/// With a recorded sha256, the bytes; without (an older row), what `go`
/// reads of it: `Version` and `Time`, and the size recorded.
pub(super) fn check_info_bytes(bytes: &[u8], row: &PublishedFiles) -> Result<(), String> {
    if let Some(recorded) = &row.info_sha256 {
        return compare_sha256(&hex::encode(dirhash::digest(bytes)), recorded);
    }
    let info = crate::verify::Info::parse(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if info.version != row.mv.version.as_str() || info.time.as_deref() != Some(&row.time) {
        return Err(format!(
            "names {} at {}, recorded {} at {}",
            info.version,
            info.time.as_deref().unwrap_or("no time"),
            row.mv.version,
            row.time
        ));
    }
    if bytes.len() as u64 != row.info_size {
        return Err(format!("{} bytes, recorded {}", bytes.len(), row.info_size));
    }
    Ok(())
}

/// Each module's `@v/list` and `@latest` against what state derives,
/// except for the modules in `skip`.
pub(super) fn check_metadata(
    tree: &Tree,
    rows: &[PublishedFiles],
    skip: &HashSet<ModulePath>,
) -> Vec<Finding> {
    let by_mv: BTreeMap<&ModVer, &PublishedFiles> = rows.iter().map(|r| (&r.mv, r)).collect();
    let mut found = Vec::new();
    for (path, versions) in listed_modules(rows, skip) {
        let (list, latest) = module_metadata(path, &versions);
        let list_rel = layout::list_rel(path);
        if let Err(p) = check_list(&tree.list_file(path), &list) {
            found.push(finding(path.as_str(), format!("{list_rel}: {p}")));
        }
        if let Some(mv) = latest {
            let info = by_mv.get(&mv).and_then(|r| r.info_sha256.as_deref());
            if let Err(p) = check_latest(tree, &mv, info) {
                let rel = layout::latest_rel(path);
                found.push(finding(path.as_str(), format!("{rel}: {p}")));
            }
        }
    }
    found
}

/// The modules with a list (a version with a zip published), with their
/// listed versions, apart from those in `skip`.
pub(super) fn listed_modules<'a>(
    rows: &'a [PublishedFiles],
    skip: &HashSet<ModulePath>,
) -> BTreeMap<&'a ModulePath, Vec<Version>> {
    let mut modules: BTreeMap<&ModulePath, Vec<Version>> = BTreeMap::new();
    // A version published for its go.mod only is in no list.
    for r in rows.iter().filter(|r| r.zip.is_some()) {
        if !skip.contains(&r.mv.path) {
            modules
                .entry(&r.mv.path)
                .or_default()
                .push(r.mv.version.clone());
        }
    }
    modules
}

fn check_list(path: &Path, want: &[u8]) -> Result<(), String> {
    check_regular(path, "from the state")?;
    let have = fs_err::read(path).map_err(|e| e.to_string())?;
    compare_list(&have, want)
}

/// A module's `@v/list` as served, `have`, against what state derives.
pub(super) fn compare_list(have: &[u8], want: &[u8]) -> Result<(), String> {
    if have == want {
        return Ok(());
    }
    let words = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    Err(format!(
        "lists [{}], the state has published [{}] (the next sync rewrites it)",
        words(have),
        words(want)
    ))
}

/// `@latest` is the `.info` of the version `module_metadata` names.
fn check_latest(tree: &Tree, mv: &ModVer, info_sha256: Option<&str>) -> Result<(), String> {
    let path = tree.latest_file(&mv.path);
    check_regular(&path, "from the state")?;
    let have = sha256_hex(&path)?;
    let want = match info_sha256 {
        Some(sha) => sha.to_owned(),
        None => sha256_hex(&tree.version_file(mv, Kind::Info))?,
    };
    compare_latest(mv, &have, &want)
}

/// `@latest`, whose bytes hash to `have`, against the `.info` of `mv`
/// (sha256 `want`).
pub(super) fn compare_latest(mv: &ModVer, have: &str, want: &str) -> Result<(), String> {
    if have == want {
        Ok(())
    } else {
        Err(format!(
            "is not the .info of {mv} (sha256 {have}, want {want}; the next sync rewrites it)"
        ))
    }
}

/// Every file and symlink under the tree that is not one of `known`
/// (relative paths), the offline checksum database, the run lock, a
/// temporary file, or under the directory of a module in `skip`.
pub(super) fn check_strays(
    tree: &Tree,
    known: &HashSet<PathBuf>,
    skip: &HashSet<ModulePath>,
) -> Vec<Finding> {
    let root = tree.root();
    let lock = tree.lock_file();
    let skipped: HashSet<PathBuf> = skip.iter().map(|p| root.join(p.escaped())).collect();
    let mut found = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let entries = match fs_err::read_dir(&dir) {
            Ok(entries) => entries,
            Err(e) => {
                found.push(finding(rel(root, &dir), e.to_string()));
                continue;
            }
        };
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    found.push(finding(rel(root, &dir), e.to_string()));
                    continue;
                }
            };
            let path = entry.path();
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(TMP_PREFIX)
                || path == lock
                || (dir == root && name == super::MOVED_DIR)
                || (dir == root && name == "sumdb")
                || skipped.contains(&path)
            {
                continue;
            }
            let relative = rel(root, &path);
            match entry.file_type() {
                // A known name is reported with its version or module.
                Ok(t) if t.is_symlink() && known.contains(Path::new(&relative)) => {}
                Ok(t) if t.is_symlink() => found.push(finding(relative, "is a symlink")),
                Ok(t) if t.is_dir() => dirs.push(path),
                Ok(_) if known.contains(Path::new(&relative)) => {}
                Ok(_) => found.push(finding(
                    relative,
                    "stray file: not published according to the state database \
                     (remove it, or restore the database that published it)",
                )),
                Err(e) => found.push(finding(relative, e.to_string())),
            }
        }
    }
    found.sort_by(|a, b| a.subject.cmp(&b.subject));
    found
}

fn rel(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .to_string_lossy()
        .into_owned()
}

/// The relative names state accounts for: every file of a published or
/// pending version, and each published module's `@v/list` and `@latest`.
pub(super) fn known_files(published: &[PublishedFiles], pending: &[ModVer]) -> HashSet<PathBuf> {
    let mut known = HashSet::new();
    let with_zip = published.iter().map(|r| (&r.mv, r.zip.is_some()));
    for (mv, zip) in with_zip.chain(pending.iter().map(|mv| (mv, true))) {
        let kinds = [Kind::Info, Kind::Mod]
            .into_iter()
            .chain(zip.then_some(Kind::Zip));
        for kind in kinds {
            known.insert(PathBuf::from(layout::version_rel(mv, kind)));
        }
    }
    for r in published.iter().filter(|r| r.zip.is_some()) {
        known.insert(PathBuf::from(layout::list_rel(&r.mv.path)));
        known.insert(PathBuf::from(layout::latest_rel(&r.mv.path)));
    }
    known
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What the stray walk lets pass and what it names.
    // See: #13
    #[test]
    fn issue_13_strays_are_named_and_known_files_pass() {
        let dir = tempfile::tempdir().unwrap();
        let tree = Tree::new(dir.path());
        let mv = ModVer::parse("example.com/a", "v1.0.0").unwrap();
        let write = |rel: &str| {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, "x").unwrap();
        };
        let cases: &[(&str, Option<&str>)] = &[
            ("example.com/a/@v/v1.0.0.info", None),
            ("example.com/a/@v/v1.0.0.zip", None),
            ("example.com/a/@v/list", None),
            ("example.com/a/@v/.tmp-0123", None),
            (".gomirror.lock", None),
            ("sumdb/sum.golang.org/latest", None),
            (
                ".gomirror-moved/20260101T000000Z/example.com/a/@v/v1.0.0.mod",
                None,
            ),
            ("example.com/a/@v/v0.9.0.zip", Some("stray file")),
            ("example.com/b/@latest", Some("stray file")),
        ];
        for (rel, _) in cases {
            write(rel);
        }
        std::os::unix::fs::symlink("/etc", dir.path().join("example.com/etc")).unwrap();
        let known: HashSet<PathBuf> = [Kind::Info, Kind::Zip]
            .map(|k| PathBuf::from(layout::version_rel(&mv, k)))
            .into_iter()
            .chain([PathBuf::from(layout::list_rel(&mv.path))])
            .collect();
        let found: Vec<(String, String)> = check_strays(&tree, &known, &HashSet::new())
            .into_iter()
            .map(|f| (f.subject, f.problem))
            .collect();
        let mut want: Vec<(&str, &str)> = cases
            .iter()
            .filter_map(|(rel, p)| p.map(|p| (*rel, p)))
            .chain([("example.com/etc", "is a symlink")])
            .collect();
        want.sort();
        assert_eq!(found.len(), want.len(), "{found:#?}");
        for ((subject, problem), (rel, p)) in found.iter().zip(&want) {
            assert_eq!(subject, rel);
            assert!(problem.starts_with(p), "{subject}: {problem}");
        }
    }
}
