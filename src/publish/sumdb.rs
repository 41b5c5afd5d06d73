//! The tree's offline copy of a checksum database, `sumdb/<name>/…`, served
//! the way the go command asks a proxy for it (PROTOCOL.md "Through a
//! proxy"; Go's own test `mod_sumdb_file_path.txt` serves such a tree):
//!
//! - `tile/…` and `lookup/…` are immutable like module files. A lookup is
//!   the record followed by the head the copy was pinned to when it was
//!   written; the tiles every pinned head needs stay, so a lookup written
//!   under an older head still verifies, for a fresh client and for one
//!   that cached a newer head.
//! - `latest` is the newest pinned head; `supported` (empty) appears once
//!   every published version that the database covers has its lookup: from
//!   then on a missing lookup is fatal to `go`.
//!
//! Order within a batch: tiles and lookups ([`place_sumdb`]) before the
//! module files ([`super::place`]), whose first barrier makes them durable;
//! `latest` and `supported` ([`SumdbHead`]) with the lists.

use std::path::Path;

use bytes::Bytes;
use sha2::{Digest, Sha256};

use super::atomic::{self, Replacement, WriteError};
use super::bucket::{Body, Bucket, Immutable};
use super::layout::{sumdb_rel, SumdbFile, Tree};
use crate::module::ModVer;
use crate::verify::sumdb::tile::Tile;
use crate::verify::sumdb::tlog;

/// Writes tiles, then lookups (`format_record(id, text)` + the pinned
/// head's note). An existing lookup with the same record and another head
/// is kept: it verifies against its own head, whose tiles are served.
pub fn place_sumdb(
    tree: &Tree,
    name: &str,
    tiles: &[(Tile, Bytes)],
    lookups: &[(ModVer, Vec<u8>)],
) -> Result<(), WriteError> {
    if let Some(b) = tree.bucket() {
        return place_in_bucket(b, name, tiles, lookups);
    }
    let staging = tree.sumdb_dir(name);
    for (tile, data) in tiles {
        let path = tree.sumdb_file(name, SumdbFile::Tile(tile));
        write_immutable(&staging, &path, data)?;
    }
    for (mv, body) in lookups {
        let path = tree.sumdb_file(name, SumdbFile::Lookup(mv));
        match write_immutable(&staging, &path, body) {
            Err(WriteError::Conflict { .. }) => {
                let existing = fs_err::read(&path).map_err(atomic::io_err("read", &path))?;
                lookup_clash(path, &existing, body)?;
            }
            result => result?,
        }
    }
    Ok(())
}

/// A lookup found published with other bytes is fine if it holds the same
/// record (under another head); anything else is a conflict.
fn lookup_clash(path: std::path::PathBuf, existing: &[u8], body: &[u8]) -> Result<(), WriteError> {
    if same_record(existing, body) {
        return Ok(());
    }
    Err(WriteError::Conflict {
        path,
        existing: hex::encode(Sha256::digest(existing)),
        new: hex::encode(Sha256::digest(body)),
    })
}

/// [`place_sumdb`] into a bucket: every tile, then every lookup.
fn place_in_bucket(
    b: &Bucket,
    name: &str,
    tiles: &[(Tile, Bytes)],
    lookups: &[(ModVer, Vec<u8>)],
) -> Result<(), WriteError> {
    let immutable = |rel: String, bytes: &[u8]| Immutable {
        rel,
        sha256: Sha256::digest(bytes).into(),
        body: Body::Bytes(bytes.to_vec()),
    };
    let puts = tiles
        .iter()
        .map(|(tile, data)| immutable(sumdb_rel(name, SumdbFile::Tile(tile)), data))
        .collect();
    b.put_all_immutable(puts)
        .into_iter()
        .try_for_each(|r| r.map(drop))?;
    let puts = lookups
        .iter()
        .map(|(mv, body)| immutable(sumdb_rel(name, SumdbFile::Lookup(mv)), body))
        .collect();
    for ((mv, body), result) in lookups.iter().zip(b.put_all_immutable(puts)) {
        match result {
            Err(WriteError::Conflict { path, .. }) => {
                let rel = sumdb_rel(name, SumdbFile::Lookup(mv));
                let existing = b.read(&rel, MAX_LOOKUP)?.unwrap_or_default();
                lookup_clash(path, &existing, body)?;
            }
            result => drop(result?),
        }
    }
    Ok(())
}

/// A tile read from a bucket is cut off here (a hash tile of height 8 is
/// 8 KiB; a data tile holds 2^h records).
const MAX_TILE: u64 = 16 << 20;

/// A lookup body is a record and a signed note: a few KiB at most.
const MAX_LOOKUP: u64 = 64 << 10;

/// The offline copy's head, rewritten with a batch's lists: `latest`
/// names `note`; once `complete`, `supported` (empty) exists.
pub struct SumdbHead {
    pub name: String,
    pub note: Vec<u8>,
    pub complete: bool,
}

impl SumdbHead {
    /// The next `latest`, staged beside it.
    pub(super) fn stage(&self, tree: &Tree) -> Result<Replacement, WriteError> {
        Replacement::with_content(&tree.sumdb_file(&self.name, SumdbFile::Latest), &self.note)
    }

    /// Once the copy is complete, makes sure `supported` exists (it never
    /// goes away: from then on a missing lookup is fatal to `go`).
    pub(super) fn mark_supported(&self, tree: &Tree) -> Result<(), WriteError> {
        let supported = tree.sumdb_file(&self.name, SumdbFile::Supported);
        if self.complete && !supported.exists() {
            write_immutable(&tree.sumdb_dir(&self.name), &supported, b"")?;
        }
        Ok(())
    }

    /// `latest`, then (once complete) `supported`, in a bucket.
    pub(super) fn write_to_bucket(&self, b: &Bucket) -> Result<(), WriteError> {
        let latest = sumdb_rel(&self.name, SumdbFile::Latest);
        b.put_all_replacing(vec![(latest, self.note.clone())])?;
        if self.complete {
            let supported = Immutable {
                rel: sumdb_rel(&self.name, SumdbFile::Supported),
                sha256: Sha256::digest(b"").into(),
                body: Body::Bytes(Vec::new()),
            };
            for r in b.put_all_immutable(vec![supported]) {
                r?;
            }
        }
        Ok(())
    }

    /// Whether `supported` is served already.
    pub fn is_supported(tree: &Tree, name: &str) -> Result<bool, WriteError> {
        match tree.bucket() {
            Some(b) => b.exists(&sumdb_rel(name, SumdbFile::Supported)),
            None => Ok(tree.sumdb_file(name, SumdbFile::Supported).exists()),
        }
    }
}

/// Checks, writing nothing, that every tile and lookup is new or already
/// published the same (a lookup: with the same record, under any head).
pub fn check_sumdb(
    tree: &Tree,
    name: &str,
    tiles: &[(Tile, Bytes)],
    lookups: &[(ModVer, Vec<u8>)],
) -> Result<(), WriteError> {
    if tree.bucket().is_some() {
        // A HEAD per name would only say what `place_sumdb`'s conditional
        // puts say: a clash there fails the batch the same way, before any
        // module file of it is written, and what it wrote is immutable and
        // verified (tiles of the pinned head, lookups of the batch).
        return Ok(());
    }
    for (tile, data) in tiles {
        check_same(&tree.sumdb_file(name, SumdbFile::Tile(tile)), data, |_| {
            false
        })?;
    }
    for (mv, body) in lookups {
        let path = tree.sumdb_file(name, SumdbFile::Lookup(mv));
        check_same(&path, body, |existing| same_record(existing, body))?;
    }
    Ok(())
}

/// `path` is missing, holds `bytes`, or holds what `also_fine` accepts.
fn check_same(
    path: &Path,
    bytes: &[u8],
    also_fine: impl FnOnce(&[u8]) -> bool,
) -> Result<(), WriteError> {
    let existing = match std::fs::read(path) {
        Ok(existing) => existing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(atomic::io_err("read", path)(source)),
    };
    if existing == bytes || also_fine(&existing) {
        return Ok(());
    }
    Err(WriteError::Conflict {
        path: path.to_owned(),
        existing: hex::encode(Sha256::digest(&existing)),
        new: hex::encode(Sha256::digest(bytes)),
    })
}

/// A lookup body for record `id` with go.sum lines `text`, under `note`.
/// Go: sumdb/server.go answers `FormatRecord(id, text)` then the note.
pub fn lookup_body(id: i64, text: &[u8], note: &[u8]) -> Result<Vec<u8>, tlog::TlogError> {
    let mut body = tlog::format_record(id, text)?;
    body.extend_from_slice(note);
    Ok(body)
}

/// A tile of the offline copy, if the tree has it: what `gomirror verify`
/// and `gomirror import` prove with.
pub fn read_sumdb_tile(tree: &Tree, name: &str, tile: &Tile) -> Result<Option<Vec<u8>>, String> {
    if let Some(b) = tree.bucket() {
        let rel = sumdb_rel(name, SumdbFile::Tile(tile));
        return b.read(&rel, MAX_TILE).map_err(|e| crate::error::chain(&e));
    }
    let path = tree.sumdb_file(name, SumdbFile::Tile(tile));
    match fs_err::read(&path) {
        Ok(data) => Ok(Some(data)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Removes temporary files a killed run left in the offline copy.
pub fn remove_stray_sumdb_temps(tree: &Tree, name: &str) -> Result<usize, WriteError> {
    atomic::remove_stray_temps(&tree.sumdb_dir(name))
}

/// Writes `bytes` to a temporary file in `staging` (`sumdb/<name>/`, one
/// directory to clean after a crash, on the same file system) and renames it
/// to `path`, which must not exist with other content.
fn write_immutable(staging: &Path, path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let tmp = atomic::write_temp(staging, bytes)?.into_temp_path();
    let dir = path.parent().expect("sumdb files live below sumdb/<name>/");
    if !dir.is_dir() {
        fs_err::create_dir_all(dir).map_err(atomic::io_err("create directory", dir))?;
    }
    atomic::rename_immutable(tmp, path, &Sha256::digest(bytes).into()).map(drop)
}

/// Do two lookups hold the same record (id and lines)?
fn same_record(existing: &[u8], body: &[u8]) -> bool {
    let record = |b: &[u8]| {
        tlog::parse_record(b)
            .ok()
            .map(|(id, text, _)| (id, text.to_vec()))
    };
    record(existing).is_some() && record(existing) == record(body)
}
