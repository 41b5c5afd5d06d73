//! Publish stage: [`Verified`] versions → the served tree, in the safe order,
//! a batch at a time. `commit` calls these steps in order; nothing else does.
//!
//! 1. [`stage`] (per version, as soon as it is verified): write `.info` to
//!    a temporary file beside the version's `.mod` and zip, which already
//!    are temporary files, as downloaded (sync: in the version directory;
//!    import: in a staging directory of the tree). Nothing is visible yet.
//! 2. [`check_staged`] (per version, before anything of the batch is
//!    written): every final name is free, or holds the same bytes, or (an
//!    `.info` only) holds one that names the same `Version` and `Time`,
//!    which stays. Anything else is a [`WriteError::Conflict`].
//! 3. [`place`] (per batch): barrier (all staged bytes durable); rename every
//!    `.mod` and `.zip` into place; barrier; rename every `.info` — the file
//!    that makes `go` believe a version exists comes last.
//! 4. [`Metadata`] (per batch): stage each touched module's new `@v/list`
//!    and `@latest` (and the offline checksum database's `latest`); barrier
//!    (the `.info` names and the staged files durable); rename them into
//!    place; barrier.
//!
//! So no client ever sees a version listed before its files exist, not even
//! after a power loss. `commit` records the versions in state after step 4.
//!
//! A prune removes in the reverse order ([`remove_lists`], [`remove_version_files`]).
//!
//! Everything here blocks; callers run it on the blocking pool.

pub mod atomic;
pub mod bucket;
mod index;
pub mod layout;
pub mod lease;
mod remove;
mod sumdb;

pub use atomic::{Placed, WriteError};
pub use layout::{Kind, Tree};
pub use remove::{remove_lists, remove_version_files};
pub use sumdb::{
    check_sumdb, lookup_body, place_sumdb, read_sumdb_tile, remove_stray_sumdb_temps, SumdbHead,
};

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use crate::module::{ModVer, ModulePath, Version};
use crate::verify::{Checked, Verified};

use atomic::{io_err, Replacement};
use sha2::{Digest, Sha256};

/// Opens the configured tree: the local directory, or the bucket of
/// `[tree] url` (which must answer: see [`bucket::Bucket::open`]).
pub async fn open_tree(config: &crate::config::Config) -> Result<Tree, bucket::BucketError> {
    match &config.tree_bucket {
        None => Ok(Tree::new(&config.tree_dir)),
        Some(settings) => {
            let bucket = bucket::Bucket::open(settings).await?;
            Ok(Tree::in_bucket(&config.tree_dir, bucket))
        }
    }
}

/// A verified version written beside its final names, not yet visible.
/// Holds no open file and no body but, once placed in a bucket, its
/// `.info` (a few hundred bytes): a batch of them stays small.
pub struct Staged {
    checked: Checked,
    /// Taken when [`place`] renames it into place.
    info_tmp: Option<tempfile::TempPath>,
    info_sha256: [u8; 32],
    /// What [`check_staged`] found under the final names.
    found: Found,
    /// The `.info` body [`place`] put into a bucket (≤ `MAX_INFO` bytes):
    /// the `@latest` of its module is put from this copy, not read back.
    served_info: Option<Vec<u8>>,
}

/// What the final names of a staged version held when it was checked.
#[derive(Debug, Clone, Copy, Default)]
struct Found {
    /// The `.mod` with these very bytes is published already.
    mod_present: bool,
    zip_present: bool,
    /// Size and sha256 of the published `.info`, if one is: identical, or
    /// naming the same version and time (it stays; a published file never
    /// changes).
    info_present: Option<(u64, [u8; 32])>,
}

impl Staged {
    pub fn checked(&self) -> &Checked {
        &self.checked
    }

    /// Size of the `.info` the tree serves once this version is placed: a
    /// published one that stays, else the staged one.
    pub fn info_size(&self) -> u64 {
        self.found
            .info_present
            .map_or_else(|| self.checked.info_size(), |(size, _)| size)
    }

    /// The `.info` body a bucket serves for this placed version, when
    /// [`place`] has it in hand (see: [`Metadata::infos`]).
    pub fn take_served_info(&mut self) -> Option<Vec<u8>> {
        self.served_info.take()
    }

    /// sha256 of the `.info` the tree serves once this version is placed.
    pub fn info_sha256(&self) -> &[u8; 32] {
        self.found
            .info_present
            .as_ref()
            .map_or(&self.info_sha256, |(_, sha)| sha)
    }
}

/// Writes a version's `.info` to a temporary file beside its staged `.mod`
/// and `.zip` (step 1).
pub fn stage(verified: Verified) -> Result<Staged, WriteError> {
    let (checked, info) = verified.into_parts();
    let dir = parent(checked.mod_path());
    Ok(Staged {
        info_tmp: Some(atomic::write_temp(dir, &info)?.into_temp_path()),
        info_sha256: Sha256::digest(&info).into(),
        checked,
        found: Found::default(),
        served_info: None,
    })
}

/// Checks what `staged`'s final names hold, writing nothing (step 2). A
/// name held by other bytes is [`WriteError::Conflict`], except an `.info`
/// that names the same `Version` and `Time`: upstreams serve such `.info`
/// files with other fields (an `Origin`, say), and the published one stays.
pub fn check_staged(tree: &Tree, staged: &mut Staged) -> Result<(), WriteError> {
    let (mod_rel, zip_rel, info_rel) = final_rels(staged);
    let existing = Existing {
        mod_sha256: existing_sha256(tree, &mod_rel)?,
        zip_sha256: match zip_rel {
            Some(rel) => existing_sha256(tree, &rel)?,
            None => None,
        },
        info: read_small(tree, &info_rel)?,
    };
    judge(tree, staged, existing)
}

/// A staged version's final names: `.mod`, `.zip` (if it has one), `.info`.
fn final_rels(staged: &Staged) -> (String, Option<String>, String) {
    let c = &staged.checked;
    let rel = |kind| layout::version_rel(c.mv(), kind);
    (
        rel(Kind::Mod),
        c.zip().map(|_| rel(Kind::Zip)),
        rel(Kind::Info),
    )
}

/// What a staged version's final names hold.
struct Existing {
    mod_sha256: Option<[u8; 32]>,
    zip_sha256: Option<[u8; 32]>,
    info: Option<Vec<u8>>,
}

/// [`check_staged`]'s verdict on what the final names hold.
fn judge(tree: &Tree, staged: &mut Staged, existing: Existing) -> Result<(), WriteError> {
    let c = &staged.checked;
    let mv = c.mv();
    let mod_rel = layout::version_rel(mv, Kind::Mod);
    staged.found.mod_present =
        same_or_conflict(tree, &mod_rel, existing.mod_sha256, c.mod_sha256())?;
    if let Some(zip) = c.zip() {
        let zip_rel = layout::version_rel(mv, Kind::Zip);
        staged.found.zip_present =
            same_or_conflict(tree, &zip_rel, existing.zip_sha256, &zip.sha256)?;
    }
    staged.found.info_present = match existing.info {
        None => None,
        Some(existing) if Sha256::digest(&existing)[..] == staged.info_sha256 => {
            Some((existing.len() as u64, staged.info_sha256))
        }
        Some(existing) => {
            let tmp = staged
                .info_tmp
                .as_deref()
                .expect("checked before it is placed");
            let staged_info = fs_err::read(tmp).map_err(io_err("read", tmp))?;
            if !same_version_and_time(&existing, &staged_info) {
                return Err(WriteError::Conflict {
                    path: tree.display(&layout::version_rel(mv, Kind::Info)),
                    existing: hex::encode(Sha256::digest(&existing)),
                    new: hex::encode(staged.info_sha256),
                });
            }
            Some((existing.len() as u64, Sha256::digest(&existing).into()))
        }
    };
    Ok(())
}

/// [`check_staged`] for every version of a batch, in order. A bucket is
/// asked about every name of the batch at once: the `.mod` and `.zip`
/// HEADs and the `.info` GETs, [`bucket::PUTS_IN_FLIGHT`] of each at a
/// time, not three requests one after another per version.
pub fn check_all_staged(tree: &Tree, batch: Vec<Staged>) -> Vec<(Staged, Result<(), WriteError>)> {
    let Some(b) = tree.bucket() else {
        return batch
            .into_iter()
            .map(|mut s| {
                let r = check_staged(tree, &mut s);
                (s, r)
            })
            .collect();
    };
    let mut hashed = Vec::with_capacity(2 * batch.len());
    let mut read = Vec::with_capacity(batch.len());
    for s in &batch {
        let (mod_rel, zip_rel, info_rel) = final_rels(s);
        hashed.push(mod_rel);
        hashed.extend(zip_rel);
        read.push(info_rel);
    }
    let (shas, infos) = b.sha256_and_read_all(&hashed, &read, crate::verify::MAX_INFO);
    let mut shas = shas.into_iter();
    batch
        .into_iter()
        .zip(infos)
        .map(|(mut s, info)| {
            let mod_sha256 = shas.next().expect("one per .mod");
            let zip_sha256 = s.checked.zip().map(|_| shas.next().expect("one per .zip"));
            let r = (|| {
                let existing = Existing {
                    mod_sha256: mod_sha256?,
                    zip_sha256: zip_sha256.transpose()?.flatten(),
                    info: info?,
                };
                judge(tree, &mut s, existing)
            })();
            (s, r)
        })
        .collect()
}

/// The sha256 of the published file `rel`, `None` if there is none.
fn existing_sha256(tree: &Tree, rel: &str) -> Result<Option<[u8; 32]>, WriteError> {
    if let Some(b) = tree.bucket() {
        return b.sha256(rel);
    }
    match atomic::sha256_file(&tree.root().join(rel)) {
        Ok(existing) => Ok(Some(existing)),
        Err(WriteError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `true` when `existing` is `sha256`, `false` when there is nothing, a
/// conflict when `rel` holds other bytes.
fn same_or_conflict(
    tree: &Tree,
    rel: &str,
    existing: Option<[u8; 32]>,
    sha256: &[u8; 32],
) -> Result<bool, WriteError> {
    match existing {
        None => Ok(false),
        Some(existing) if &existing == sha256 => Ok(true),
        Some(existing) => Err(WriteError::Conflict {
            path: tree.display(rel),
            existing: hex::encode(existing),
            new: hex::encode(sha256),
        }),
    }
}

/// A published `.info` (at most [`crate::verify::MAX_INFO`] bytes are read).
fn read_small(tree: &Tree, rel: &str) -> Result<Option<Vec<u8>>, WriteError> {
    if let Some(b) = tree.bucket() {
        return b.read(rel, crate::verify::MAX_INFO);
    }
    let path = tree.root().join(rel);
    let file = match std::fs::File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(io_err("open", &path)(source)),
    };
    let mut buf = Vec::new();
    file.take(crate::verify::MAX_INFO)
        .read_to_end(&mut buf)
        .map_err(io_err("read", &path))?;
    Ok(Some(buf))
}

/// Do two `.info` bodies name the same version at the same time? Go reads
/// only these two fields (cmd/go/internal/modfetch/proxy.go Stat, RevInfo).
fn same_version_and_time(a: &[u8], b: &[u8]) -> bool {
    use crate::verify::Info;
    let parse_time = |t: &str| {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok()
    };
    match (Info::parse(a), Info::parse(b)) {
        (Ok(a), Ok(b)) => {
            a.version == b.version
                && match (&a.time, &b.time) {
                    (None, None) => true,
                    (Some(x), Some(y)) => {
                        x == y || parse_time(x).is_some_and(|x| Some(x) == parse_time(y))
                    }
                    _ => false,
                }
        }
        _ => false,
    }
}

/// A staged version and whether [`place`] made it visible.
pub type PlacedVersion = (Staged, Result<(), WriteError>);

/// Makes a batch of checked, staged versions visible (step 3). Returns each
/// version's result: a name taken since [`check_staged`] by other content is
/// [`WriteError::Conflict`] for that version only. A failure that every
/// version would share (full disk, unreadable tree) is the outer error.
pub fn place(tree: &Tree, batch: Vec<Staged>) -> Result<Vec<PlacedVersion>, WriteError> {
    if let Some(b) = tree.bucket() {
        return place_in_bucket(b, batch);
    }
    atomic::barrier(tree.root())?;
    let mut placed = Vec::with_capacity(batch.len());
    for mut staged in batch {
        match place_mod_and_zip(tree, &mut staged) {
            Err(e) if e.is_fatal() => return Err(e),
            result => placed.push((staged, result)),
        }
    }
    atomic::barrier(tree.root())?;
    for (staged, result) in &mut placed {
        let publish_info = result.is_ok() && staged.found.info_present.is_none();
        if let Some(tmp) = staged.info_tmp.take().filter(|_| publish_info) {
            let info = tree.version_file(staged.checked.mv(), Kind::Info);
            *result = atomic::rename_immutable(tmp, &info, &staged.info_sha256).map(drop);
        }
    }
    Ok(placed)
}

fn place_mod_and_zip(tree: &Tree, staged: &mut Staged) -> Result<(), WriteError> {
    let c = &mut staged.checked;
    let dir = tree.version_dir(&c.mv().path);
    if parent(c.mod_path()) != dir {
        // Staged elsewhere (an import's staging directory): the version's
        // directory appears only now, when the batch is committed.
        fs_err::create_dir_all(&dir).map_err(io_err("create directory", &dir))?;
    }
    // A file found published with these bytes stays; its copy is dropped.
    let files = c
        .take_files()
        .expect("place consumes the versions it places");
    if !staged.found.mod_present {
        let path = tree.version_file(c.mv(), Kind::Mod);
        atomic::rename_immutable(files.mod_file, &path, c.mod_sha256())?;
    }
    if let (Some(zip), Some(facts)) = (files.zip, c.zip()) {
        if !staged.found.zip_present {
            let path = tree.version_file(c.mv(), Kind::Zip);
            atomic::rename_immutable(zip, &path, &facts.sha256)?;
        }
    }
    Ok(())
}

/// [`place`] into a bucket: every `.mod` and `.zip` uploaded (the staged
/// files streamed, then removed), then every `.info`. A completed put is
/// durable, so finishing one step before the next keeps the order the
/// local tree's barriers keep.
fn place_in_bucket(
    b: &bucket::Bucket,
    batch: Vec<Staged>,
) -> Result<Vec<PlacedVersion>, WriteError> {
    let mut placed: Vec<PlacedVersion> = Vec::with_capacity(batch.len());
    // The staged files of each version, kept until its uploads end.
    let mut held = Vec::with_capacity(batch.len());
    let mut puts = Vec::new();
    let mut owner = Vec::new();
    for mut staged in batch {
        let i = placed.len();
        let c = &mut staged.checked;
        let files = c
            .take_files()
            .expect("place consumes the versions it places");
        if !staged.found.mod_present {
            puts.push(bucket::Immutable {
                rel: layout::version_rel(c.mv(), Kind::Mod),
                body: bucket::Body::File(files.mod_file.to_path_buf()),
                sha256: *c.mod_sha256(),
            });
            owner.push(i);
        }
        if let (Some(zip), Some(facts)) = (&files.zip, c.zip()) {
            if !staged.found.zip_present {
                puts.push(bucket::Immutable {
                    rel: layout::version_rel(c.mv(), Kind::Zip),
                    body: bucket::Body::File(zip.to_path_buf()),
                    sha256: facts.sha256,
                });
                owner.push(i);
            }
        }
        held.push(files);
        placed.push((staged, Ok(())));
    }
    for (i, result) in owner.into_iter().zip(b.put_all_immutable(puts)) {
        match result {
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) if placed[i].1.is_ok() => placed[i].1 = Err(e),
            _ => {}
        }
    }
    drop(held);
    let mut puts = Vec::new();
    let mut owner = Vec::new();
    for (i, (staged, result)) in placed.iter_mut().enumerate() {
        let publish_info = result.is_ok() && staged.found.info_present.is_none();
        if let Some(tmp) = staged.info_tmp.take().filter(|_| publish_info) {
            let body = fs_err::read(&tmp).map_err(io_err("read", &tmp))?;
            puts.push(bucket::Immutable {
                rel: layout::version_rel(staged.checked.mv(), Kind::Info),
                body: bucket::Body::Bytes(body.clone()),
                sha256: staged.info_sha256,
            });
            owner.push((i, body));
        }
    }
    for ((i, body), result) in owner.into_iter().zip(b.put_all_immutable(puts)) {
        match result {
            Err(e) if e.is_fatal() => return Err(e),
            Err(e) => placed[i].1 = Err(e),
            // The object holds these bytes, put now or found.
            Ok(_) => placed[i].0.served_info = Some(body),
        }
    }
    Ok(placed)
}

/// The metadata files of a batch, rewritten together (step 4): `@v/list`
/// and `@latest` of each module for its complete set of published
/// versions (every one already placed), and the offline checksum
/// database's head.
#[derive(Default)]
pub struct Metadata {
    pub modules: Vec<(ModulePath, Vec<Version>)>,
    pub sumdb: Option<SumdbHead>,
    /// `.info` bodies the tree serves, of versions the batch just placed
    /// ([`Staged::take_served_info`]): a bucket's `@latest` is put from
    /// these, and read back only for a version not here.
    pub infos: HashMap<ModVer, Vec<u8>>,
}

/// What a module's metadata files serve for its published `versions`:
/// the `@v/list` body, and the version whose `.info` `@latest` is (the same
/// file, linked). [`Metadata::write`] writes exactly this, and `gomirror
/// verify` checks the tree against it, so the two cannot drift.
pub fn module_metadata(path: &ModulePath, versions: &[Version]) -> (Vec<u8>, Option<ModVer>) {
    let latest = index::latest_version(versions).map(|v| {
        ModVer::new(path.clone(), v.clone())
            .expect("published versions were checked against their path")
    });
    (index::list_body(versions), latest)
}

impl Metadata {
    /// Stages every file, barrier, renames them into place, barrier. In a
    /// bucket: every list and `@latest` put, then `latest`, then `supported`.
    pub fn write(self, tree: &Tree) -> Result<(), WriteError> {
        if let Some(b) = tree.bucket() {
            return self.write_to_bucket(tree, b);
        }
        let mut staged = Vec::with_capacity(2 * self.modules.len() + 1);
        for (path, versions) in &self.modules {
            let (list, latest) = module_metadata(path, versions);
            staged.push(Replacement::with_content(&tree.list_file(path), &list)?);
            if let Some(mv) = latest {
                // @latest is the .info of the latest version: share its bytes.
                let info = tree.version_file(&mv, Kind::Info);
                staged.extend(Replacement::linking(&tree.latest_file(path), &info)?);
            }
        }
        if let Some(head) = &self.sumdb {
            staged.push(head.stage(tree)?);
        }
        if staged.is_empty() {
            return Ok(());
        }
        atomic::barrier(tree.root())?;
        staged.into_iter().try_for_each(Replacement::commit)?;
        if let Some(head) = &self.sumdb {
            head.mark_supported(tree)?;
        }
        atomic::barrier(tree.root())
    }

    fn write_to_bucket(self, tree: &Tree, b: &bucket::Bucket) -> Result<(), WriteError> {
        let mut puts = Vec::with_capacity(2 * self.modules.len());
        let mut latest = Vec::with_capacity(self.modules.len());
        let mut infos = self.infos;
        for (path, versions) in &self.modules {
            let (list, newest) = module_metadata(path, versions);
            puts.push((layout::list_rel(path), list));
            match newest.map(|mv| (infos.remove(&mv), mv)) {
                Some((Some(body), _)) => puts.push((layout::latest_rel(path), body)),
                Some((None, mv)) => latest.push((
                    layout::latest_rel(path),
                    layout::version_rel(&mv, Kind::Info),
                )),
                None => {}
            }
        }
        // @latest serves the latest version's .info, byte for byte.
        let infos: Vec<String> = latest.iter().map(|(_, info)| info.clone()).collect();
        let bodies = b.read_all(&infos, crate::verify::MAX_INFO);
        for ((latest_rel, info_rel), body) in latest.into_iter().zip(bodies) {
            let body = body?.ok_or_else(|| WriteError::Io {
                op: "read",
                path: tree.display(&info_rel),
                source: std::io::ErrorKind::NotFound.into(),
            })?;
            puts.push((latest_rel, body));
        }
        b.put_all_replacing(puts)?;
        if let Some(head) = &self.sumdb {
            head.write_to_bucket(b)?;
        }
        Ok(())
    }
}

/// Removes temporary files a killed run left beside `path`'s files.
pub fn remove_stray_temps(tree: &Tree, path: &ModulePath) -> Result<usize, WriteError> {
    let version_dir = tree.version_dir(path);
    let module_dir = version_dir.parent().expect("@v has a parent");
    Ok(atomic::remove_stray_temps(&version_dir)? + atomic::remove_stray_temps(module_dir)?)
}

fn parent(path: &Path) -> &Path {
    path.parent().expect("staged files live in a directory")
}

#[cfg(test)]
mod tests {
    use super::same_version_and_time;

    #[test]
    fn info_files_agree_on_version_and_time_only() {
        let base = br#"{"Version":"v1.0.0","Time":"2023-01-01T00:00:00Z"}"#;
        let cases: &[(&[u8], bool)] = &[
            (base, true),
            (
                br#"{"Version":"v1.0.0","Time":"2023-01-01T00:00:00Z","Origin":{"VCS":"git"}}"#,
                true,
            ),
            (
                br#"{"Time":"2023-01-01T00:00:00Z","Version":"v1.0.0"}"#,
                true,
            ),
            // The same instant, written another way.
            (
                br#"{"Version":"v1.0.0","Time":"2023-01-01T01:00:00+01:00"}"#,
                true,
            ),
            (
                br#"{"Version":"v1.0.0","Time":"2023-01-01T00:00:01Z"}"#,
                false,
            ),
            (br#"{"Version":"v1.0.0"}"#, false),
            (
                br#"{"Version":"v1.0.1","Time":"2023-01-01T00:00:00Z"}"#,
                false,
            ),
            (b"not json", false),
        ];
        for (other, want) in cases {
            assert_eq!(
                same_version_and_time(base, other),
                *want,
                "{}",
                String::from_utf8_lossy(other)
            );
        }
    }
}
