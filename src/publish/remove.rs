//! Removing from the served tree: the commit's steps in reverse, for a
//! prune (see: #15). `commit::unpublish` calls these in order; nothing else
//! does.
//!
//! - [`remove_lists`]: a module none of whose versions stays loses its
//!   `@v/list` and `@latest`, so clients get 404 and fall through to the
//!   next GOPROXY entry (an empty list would be an answer: "no matching
//!   versions"). PROTOCOL.md "GOPROXY": 404 and 410 let a client fall through.
//! - [`remove_version_files`]: the named files of each version; a name
//!   already gone is fine (a killed prune removed it).
//!
//! Neither is durable until the next [`super::atomic::barrier`] (in a
//! bucket: once it returns).
//! Everything here blocks; callers run it on the blocking pool.

use std::io;
use std::path::Path;

use super::atomic::io_err;
use super::layout::{latest_rel, list_rel, version_rel};
use super::{Kind, Tree, WriteError};
use crate::module::{ModVer, ModulePath};

/// Removes `path`'s `@v/list` and `@latest`.
pub fn remove_lists(tree: &Tree, path: &ModulePath) -> Result<(), WriteError> {
    if let Some(b) = tree.bucket() {
        return b
            .delete_all(vec![latest_rel(path), list_rel(path)])
            .map(drop);
    }
    remove(&tree.latest_file(path))?;
    remove(&tree.list_file(path)).map(drop)
}

/// Removes the `kind` files of `versions`; returns how many were there.
pub fn remove_version_files<'a>(
    tree: &Tree,
    versions: impl IntoIterator<Item = &'a ModVer>,
    kinds: &[Kind],
) -> Result<usize, WriteError> {
    if let Some(b) = tree.bucket() {
        let rels = versions
            .into_iter()
            .flat_map(|mv| kinds.iter().map(|&kind| version_rel(mv, kind)))
            .collect();
        return b.delete_all(rels);
    }
    let mut removed = 0;
    for mv in versions {
        for &kind in kinds {
            removed += usize::from(remove(&tree.version_file(mv, kind))?);
        }
    }
    Ok(removed)
}

/// Unlinks `file`; `false` if it was not there.
fn remove(file: &Path) -> Result<bool, WriteError> {
    match std::fs::remove_file(file) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", file)(e)),
    }
}
