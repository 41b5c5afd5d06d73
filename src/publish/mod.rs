//! Publish stage: [`Verified`] versions → the served tree, in the safe order.
//!
//! For one version: `.mod`, then `.zip`, directory synced, then `.info`,
//! directory synced. Only after every version of a batch is in place are
//! the affected modules' `@v/list` and `@latest` rewritten
//! ([`update_index`]), so no client ever sees a version listed before its
//! files exist. `sync` records the versions in state after that.
//!
//! Everything here blocks (fsync); callers run it on the blocking pool.

pub mod atomic;
mod index;
pub mod layout;

pub use atomic::{Placed, WriteError};
pub use layout::{Kind, Tree};

use crate::module::{ModulePath, Version};
use crate::verify::Verified;

/// Places one verified version's files. Files that already exist with
/// the same content (a re-run after a crash) are accepted; different
/// content is [`WriteError::Conflict`].
pub fn publish_version(tree: &Tree, v: &Verified) -> Result<(), WriteError> {
    let mv = v.mv();
    let dir = tree.version_dir(&mv.path);
    atomic::create_immutable(&tree.version_file(mv, Kind::Mod), v.mod_file())?;
    atomic::persist_immutable(
        v.zip_path(),
        &tree.version_file(mv, Kind::Zip),
        v.zip_sha256(),
    )?;
    // The .info is what makes `go` believe the version exists: only once
    // .mod and .zip are durable.
    atomic::sync_dir(&dir)?;
    atomic::create_immutable(&tree.version_file(mv, Kind::Info), v.info())?;
    atomic::sync_dir(&dir)
}

/// Rewrites `@v/list` and `@latest` of `path` for its complete set of
/// published `versions`. Every version given must already be published.
pub fn update_index(
    tree: &Tree,
    path: &ModulePath,
    versions: &[Version],
) -> Result<(), WriteError> {
    atomic::replace(&tree.list_file(path), &index::list_body(versions))?;
    let Some(latest) = index::latest_version(versions) else {
        return Ok(());
    };
    let mv = crate::module::ModVer::new(path.clone(), latest.clone())
        .expect("published versions were checked against their path");
    let info_path = tree.version_file(&mv, Kind::Info);
    let info = fs_err::read(&info_path).map_err(|source| WriteError::Io {
        op: "read",
        path: info_path,
        source,
    })?;
    atomic::replace(&tree.latest_file(path), &info)
}

/// Removes temporary files a killed run left beside `path`'s versions.
pub fn remove_stray_temps(tree: &Tree, path: &ModulePath) -> Result<usize, WriteError> {
    atomic::remove_stray_temps(&tree.version_dir(path))
}
