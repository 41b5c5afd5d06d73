//! A served tree in object storage against the state (see: #17): what
//! `tree.rs` checks of a local tree, read from the objects.
//!
//! - each published version's `.info`, `.mod` and `.zip` object exists, and
//!   its **bytes** hash to the sha256 recorded at publish. The bytes are
//!   streamed and hashed here; the `sha256` metadata the object carries is
//!   only what its writer claimed, and one that disagrees with the bytes is
//!   a finding of its own (a sync's survey and its conditional puts trust
//!   it, so the next sync would not notice). A zip is copied, streamed, to
//!   a temporary file in the staging directory (`.gomirror-verify/`,
//!   cleared when a verify starts), where the zip rules and
//!   `h1:` are checked as for a local tree (they need random access); the
//!   copy is deleted after. Nothing is held whole in memory but a `.info`;
//! - each module's `@v/list` and `@latest` are what the commit step writes
//!   for the versions state has published;
//! - no stray object under each published module's `@v/` prefix: one LIST
//!   per module, so the cost is bounded by what state knows. The rest of
//!   the bucket (other prefixes, keys no module of the state names) is not
//!   listed.
//!
//! Every finding names the object by its `s3://` URL.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::tree::{
    check_info_bytes, check_mod_digest, check_zip_bytes, compare_latest, compare_list,
    compare_sha256,
};
use super::{finding, Finding};
use crate::module::{ModVer, ModulePath, Version};
use crate::publish::bucket::Bucket;
use crate::publish::layout::{self, Kind, Tree, TMP_PREFIX};
use crate::publish::module_metadata;
use crate::state::PublishedFiles;
use crate::verify::zip::MAX_ZIP_FILE;
use crate::verify::MAX_INFO;

/// The largest `@v/list` read: far more versions than any module has.
const MAX_LIST: u64 = 16 << 20;

/// One published version's objects; `by_content` is set when its `.info`
/// had no recorded sha256 to compare with. Blocking.
pub(super) fn check_version_objects(
    tree: &Tree,
    bucket: &Bucket,
    row: &PublishedFiles,
) -> (Vec<Finding>, bool) {
    let subject = row.mv.to_string();
    let mut found = Vec::new();
    let kinds = [Kind::Info, Kind::Mod]
        .into_iter()
        .chain(row.zip.as_ref().map(|_| Kind::Zip));
    for kind in kinds {
        let rel = layout::version_rel(&row.mv, kind);
        let shown = tree.display(&rel).display().to_string();
        let (problem, present) = match check_object(tree, bucket, &rel, kind, row) {
            Ok(()) => continue,
            Err(Problem::Missing) => (
                "missing (the next sync restores it from upstream)".to_owned(),
                false,
            ),
            Err(Problem::Unread(p)) => (p, false),
            Err(Problem::Altered(p)) => (p, true),
        };
        let mut f = finding(&subject, format!("{shown}: {problem}"));
        // Present but not as published: what `verify --repair` takes out.
        f.altered = present.then_some(rel);
        found.push(f);
    }
    (found, row.info_sha256.is_none())
}

/// What is wrong with one object.
enum Problem {
    Missing,
    /// It could not be read (the store failed): nothing to repair.
    Unread(String),
    /// Present, and not as published.
    Altered(String),
}

fn check_object(
    tree: &Tree,
    bucket: &Bucket,
    rel: &str,
    kind: Kind,
    row: &PublishedFiles,
) -> Result<(), Problem> {
    let claimed = match bucket.sha256(rel) {
        Ok(Some(sha)) => sha,
        Ok(None) => return Err(Problem::Missing),
        Err(e) => return Err(Problem::Unread(crate::error::chain(&e))),
    };
    let (actual, checked) = match kind {
        Kind::Zip => {
            let (actual, copy) = copy_to_staging(tree, rel)?;
            let file = fs_err::File::open(&copy).map_err(|e| Problem::Unread(e.to_string()))?;
            (actual, check_zip_bytes(&hex::encode(actual), file, row))
        }
        Kind::Mod => {
            let actual = stream(tree, rel, &mut std::io::sink(), u64::MAX)?;
            (actual, check_mod_digest(&actual, row))
        }
        Kind::Info => {
            let bytes = match tree.read_served(rel, MAX_INFO) {
                Ok(Some(bytes)) => bytes,
                Ok(None) => return Err(Problem::Missing),
                Err(e) => return Err(Problem::Altered(e.to_string())),
            };
            (Sha256::digest(&bytes).into(), check_info_bytes(&bytes, row))
        }
    };
    metadata_agrees(claimed, actual, checked)
}

/// Joins what the content check found with a `sha256` metadata that is
/// not the bytes' (the writer's claim, which a sync trusts).
fn metadata_agrees(
    claimed: [u8; 32],
    actual: [u8; 32],
    checked: Result<(), String>,
) -> Result<(), Problem> {
    let metadata = (claimed != actual).then(|| {
        format!(
            "its sha256 metadata says {}, its bytes hash to {}",
            hex::encode(claimed),
            hex::encode(actual)
        )
    });
    match (checked, metadata) {
        (Ok(()), None) => Ok(()),
        (Ok(()), Some(m)) => Err(Problem::Altered(m)),
        (Err(p), None) => Err(Problem::Altered(p)),
        (Err(p), Some(m)) => Err(Problem::Altered(format!("{p}; {m}"))),
    }
}

/// Streams the object at `rel` into `sink`, at most `max` bytes, and
/// returns the sha256 of what it read.
fn stream(tree: &Tree, rel: &str, sink: &mut impl Write, max: u64) -> Result<[u8; 32], Problem> {
    let (reader, _) = tree.open_served(rel).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Problem::Missing,
        _ => Problem::Unread(e.to_string()),
    })?;
    let mut reader = reader.take(max);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(hasher.finalize().into()),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(Problem::Unread(format!("reading: {e}"))),
        };
        hasher.update(&buf[..n]);
        sink.write_all(&buf[..n])
            .map_err(|e| Problem::Unread(format!("copying to the staging directory: {e}")))?;
    }
}

/// Where zips are copied to be checked: a directory of the staging root of
/// its own (its name starts with `.`, like the run lock's), so a verify
/// killed mid-copy leaves nothing that the next one does not clear.
const SCRATCH_DIR: &str = ".gomirror-verify";

/// Empties (or creates) the scratch directory under `staging`; called
/// under the run lock, before any copy.
pub(super) fn clear_scratch(staging: &Path) -> std::io::Result<()> {
    let dir = staging.join(SCRATCH_DIR);
    match fs_err::remove_dir_all(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    fs_err::create_dir_all(&dir)
}

/// The zip object at `rel`, streamed into a temporary file of the staging
/// directory (deleted when the returned path is dropped), and its sha256.
/// One byte past Go's size limit is copied, enough for the zip check to
/// refuse it, and no more.
fn copy_to_staging(tree: &Tree, rel: &str) -> Result<([u8; 32], tempfile::TempPath), Problem> {
    let unread = |e: std::io::Error| {
        Problem::Unread(format!(
            "a temporary file in {}: {e}",
            tree.root().join(SCRATCH_DIR).display()
        ))
    };
    let mut file = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(tree.root().join(SCRATCH_DIR))
        .map_err(unread)?;
    let mut sink = std::io::BufWriter::new(file.as_file_mut());
    let actual = stream(tree, rel, &mut sink, MAX_ZIP_FILE + 1)?;
    sink.flush().map_err(unread)?;
    drop(sink);
    Ok((actual, file.into_temp_path()))
}

/// One module's `@v/list` and `@latest` objects against what state
/// derives from `versions`, and its `@v/` prefix against `known`.
/// Blocking.
pub(super) fn check_module_objects(
    tree: &Tree,
    bucket: &Bucket,
    module: (&ModulePath, &[Version]),
    info_sha256: impl Fn(&ModVer) -> Option<String>,
    known: &HashSet<PathBuf>,
) -> Vec<Finding> {
    let (path, versions) = module;
    let (list, latest) = module_metadata(path, versions);
    let mut found = Vec::new();
    let mut problem = |rel: &str, p: String, altered: bool| {
        let shown = tree.display(rel).display().to_string();
        let mut f = finding(path.as_str(), format!("{shown}: {p}"));
        f.altered = altered.then(|| rel.to_owned());
        found.push(f);
    };
    let list_rel = layout::list_rel(path);
    if let Err((p, altered)) = check_replaced(bucket, &list_rel, |have| {
        compare_list(have, &list).map(|()| None)
    }) {
        problem(&list_rel, p, altered);
    }
    if let Some(mv) = latest {
        let latest_rel = layout::latest_rel(path);
        let want = info_sha256(&mv).or_else(|| {
            let info = layout::version_rel(&mv, Kind::Info);
            let bytes = tree.read_served(&info, MAX_INFO).ok().flatten()?;
            Some(hex::encode(Sha256::digest(bytes)))
        });
        let checked = check_replaced(bucket, &latest_rel, |have| match &want {
            Some(want) => {
                compare_latest(&mv, &hex::encode(Sha256::digest(have)), want).map(|()| None)
            }
            None => Ok(Some(format!(
                "the .info of {mv} is not there to compare with"
            ))),
        });
        if let Err((p, altered)) = checked {
            problem(&latest_rel, p, altered);
        }
    }
    for stray in strays(bucket, path, known) {
        match stray {
            Ok(rel) => problem(
                &rel,
                "stray object: not published according to the state database \
                 (remove it, or restore the database that published it)"
                    .to_owned(),
                false,
            ),
            Err(e) => problem(&format!("{}/@v", path.escaped()), e, false),
        }
    }
    found
}

/// A replaced object (a list, `@latest`): missing, or its bytes not what
/// `check` wants, are for the next sync to rewrite; a `sha256` metadata
/// that is not its bytes' hides it from that sync, so it is altered (what
/// `--repair` takes out, for the sync to write again). `check` returns a
/// problem that is not the object's fault as `Ok(Some(_))`.
fn check_replaced(
    bucket: &Bucket,
    rel: &str,
    check: impl FnOnce(&[u8]) -> Result<Option<String>, String>,
) -> Result<(), (String, bool)> {
    let claimed = match bucket.sha256(rel) {
        Ok(Some(sha)) => sha,
        Ok(None) => {
            return Err((
                "missing (the next sync writes it from the state)".into(),
                false,
            ))
        }
        Err(e) => return Err((crate::error::chain(&e), false)),
    };
    let have = match bucket.read(rel, MAX_LIST + 1) {
        Ok(Some(have)) if have.len() as u64 <= MAX_LIST => have,
        Ok(Some(_)) => return Err((format!("larger than {MAX_LIST} bytes"), true)),
        Ok(None) => {
            return Err((
                "missing (the next sync writes it from the state)".into(),
                false,
            ))
        }
        Err(e) => return Err((crate::error::chain(&e), false)),
    };
    let actual: [u8; 32] = Sha256::digest(&have).into();
    let metadata = compare_sha256(&hex::encode(actual), &hex::encode(claimed)).map_err(|_| {
        format!(
            "its sha256 metadata says {}, its bytes hash to {} (the next sync would trust the \
             metadata: `verify --repair` deletes it, and the next sync writes it again)",
            hex::encode(claimed),
            hex::encode(actual)
        )
    });
    match (check(&have), metadata) {
        (Ok(None), Ok(())) => Ok(()),
        (Ok(Some(p)), _) => Err((p, false)),
        (Err(p), Ok(())) => Err((p, false)),
        (Ok(None), Err(m)) => Err((m, true)),
        (Err(p), Err(m)) => Err((format!("{p}; {m}"), true)),
    }
}

/// The objects under `path`'s `@v/` prefix that are not in `known`.
fn strays(
    bucket: &Bucket,
    path: &ModulePath,
    known: &HashSet<PathBuf>,
) -> Vec<Result<String, String>> {
    let dir = format!("{}/@v", path.escaped());
    match bucket.list_in(&dir) {
        Ok(mut rels) => {
            rels.sort();
            rels.into_iter()
                .filter(|rel| !known.contains(std::path::Path::new(rel)))
                .map(Ok)
                .collect()
        }
        Err(e) => vec![Err(format!("listing: {e}"))],
    }
}

/// Copies each object of `altered` (relative names) to `<dir>/<name>`,
/// streamed, then deletes it from the bucket, so the next sync puts the
/// published bytes back. Returns the names done; the first failure stops
/// (what was copied and deleted before it stays so). Blocking.
pub(super) fn take_out(
    tree: &Tree,
    bucket: &Bucket,
    altered: &[String],
    dir: &std::path::Path,
) -> Result<Vec<String>, super::AuditError> {
    let mut done = Vec::new();
    for rel in altered {
        let to = dir.join(rel);
        let io = |source: std::io::Error| super::AuditError::TakeOut {
            object: tree.display(rel),
            to: to.clone(),
            source,
        };
        let parent = to.parent().expect("an object of a module has a directory");
        fs_err::create_dir_all(parent).map_err(io)?;
        let mut file = fs_err::File::create(&to).map_err(io)?;
        let (mut reader, _) = tree.open_served(rel).map_err(io)?;
        std::io::copy(&mut reader, &mut file)
            .and_then(|_| file.sync_all())
            .map_err(io)?;
        bucket
            .delete_all(vec![rel.clone()])
            .map_err(|e| io(std::io::Error::other(e)))?;
        tracing::warn!(object = %tree.display(rel).display(), to = %to.display(), "took an altered object out of the bucket");
        done.push(rel.clone());
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The content check and the metadata, joined: one finding per object, and an object
    /// whose bytes are right but whose metadata lies is altered all the same.
    // See: #17
    #[test]
    fn issue_17_metadata_that_is_not_the_bytes_is_a_finding() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let lie = format!(
            "its sha256 metadata says {}, its bytes hash to {}",
            hex::encode(a),
            hex::encode(b)
        );
        /// (claimed, actual, content check, the finding)
        type Case = ([u8; 32], [u8; 32], Result<(), &'static str>, Option<String>);
        let cases: &[Case] = &[
            (a, a, Ok(()), None),
            (a, b, Ok(()), Some(lie.clone())),
            (a, a, Err("changed"), Some("changed".into())),
            (a, b, Err("changed"), Some(format!("changed; {lie}"))),
        ];
        for (claimed, actual, checked, want) in cases {
            let got = match metadata_agrees(*claimed, *actual, checked.map_err(str::to_owned)) {
                Ok(()) => None,
                Err(Problem::Altered(p)) => Some(p),
                Err(_) => panic!("only Altered here"),
            };
            assert_eq!(&got, want, "{checked:?}");
        }
    }
}
