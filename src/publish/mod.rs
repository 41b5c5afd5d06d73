//! Publish stage: [`Verified`] versions → the served tree, in the safe order,
//! a batch at a time.
//!
//! 1. [`stage`] (per version, as soon as it is verified): write `.info` to
//!    a temporary file beside its final name; the `.mod` and the zip already
//!    are, as downloaded. Nothing is visible yet.
//! 2. [`place`] (per batch): barrier (all staged bytes durable); link every
//!    `.mod` and `.zip` into place; barrier; link every `.info` — the file
//!    that makes `go` believe a version exists comes last.
//! 3. [`update_indexes`] (per batch): stage each touched module's new
//!    `@v/list` and `@latest`; barrier (the `.info` names and the staged
//!    lists durable); rename them into place; barrier.
//!
//! So no client ever sees a version listed before its files exist, not even
//! after a power loss. `sync` records the versions in state after step 3.
//!
//! Everything here blocks; callers run it on the blocking pool.

pub mod atomic;
mod index;
pub mod layout;
mod sumdb;

pub use atomic::{Placed, WriteError};
pub use layout::{Kind, Tree};
pub use sumdb::{
    lookup_body, place_sumdb, read_sumdb_tile, remove_stray_sumdb_temps, update_sumdb_head,
};

use crate::module::{ModVer, ModulePath, Version};
use crate::verify::{Checked, Verified};

use atomic::Replacement;
use sha2::{Digest, Sha256};

/// A verified version written beside its final names, not yet visible.
/// Holds no body and no open file: a batch of them stays small.
pub struct Staged {
    checked: Checked,
    info_tmp: tempfile::TempPath,
    info_sha256: [u8; 32],
}

impl Staged {
    pub fn checked(&self) -> &Checked {
        &self.checked
    }
}

/// Writes a version's `.info` to a temporary file in its directory; its
/// `.mod` and `.zip` already are temporary files there, as downloaded (step 1).
pub fn stage(tree: &Tree, verified: Verified) -> Result<Staged, WriteError> {
    let (checked, info) = verified.into_parts();
    let dir = tree.version_dir(&checked.mv().path);
    Ok(Staged {
        info_tmp: atomic::write_temp(&dir, &info)?.into_temp_path(),
        info_sha256: Sha256::digest(&info).into(),
        checked,
    })
}

/// A staged version and whether [`place`] made it visible.
pub type PlacedVersion = (Staged, Result<(), WriteError>);

/// Makes a batch of staged versions visible (step 2). Returns each
/// version's result: an existing file with other content is
/// [`WriteError::Conflict`] for that version only. A failure that every
/// version would share (full disk, unreadable tree) is the outer error.
pub fn place(tree: &Tree, batch: Vec<Staged>) -> Result<Vec<PlacedVersion>, WriteError> {
    atomic::barrier(tree.root())?;
    let mut placed = Vec::with_capacity(batch.len());
    for staged in batch {
        match link_mod_and_zip(tree, &staged) {
            Err(e) if e.is_fatal() => return Err(e),
            result => placed.push((staged, result)),
        }
    }
    atomic::barrier(tree.root())?;
    for (staged, result) in &mut placed {
        if result.is_ok() {
            let info = tree.version_file(staged.checked.mv(), Kind::Info);
            *result =
                atomic::link_immutable(&staged.info_tmp, &info, &staged.info_sha256).map(drop);
        }
    }
    Ok(placed)
}

fn link_mod_and_zip(tree: &Tree, staged: &Staged) -> Result<(), WriteError> {
    let c = &staged.checked;
    atomic::link_immutable(
        c.mod_path(),
        &tree.version_file(c.mv(), Kind::Mod),
        c.mod_sha256(),
    )?;
    atomic::link_immutable(
        c.zip_path(),
        &tree.version_file(c.mv(), Kind::Zip),
        c.zip_sha256(),
    )?;
    Ok(())
}

/// Rewrites `@v/list` and `@latest` of each module for its complete set of
/// published versions (step 3). Every version given must already be placed.
pub fn update_indexes(
    tree: &Tree,
    modules: &[(ModulePath, Vec<Version>)],
) -> Result<(), WriteError> {
    let mut staged = Vec::with_capacity(2 * modules.len());
    for (path, versions) in modules {
        staged.push(Replacement::with_content(
            &tree.list_file(path),
            &index::list_body(versions),
        )?);
        if let Some(latest) = index::latest_version(versions) {
            let mv = ModVer::new(path.clone(), latest.clone())
                .expect("published versions were checked against their path");
            // @latest is the .info of the latest version: share its bytes.
            let info = tree.version_file(&mv, Kind::Info);
            staged.extend(Replacement::linking(&tree.latest_file(path), &info)?);
        }
    }
    atomic::barrier(tree.root())?;
    staged.into_iter().try_for_each(Replacement::commit)?;
    atomic::barrier(tree.root())
}

/// Removes temporary files a killed run left beside `path`'s files.
pub fn remove_stray_temps(tree: &Tree, path: &ModulePath) -> Result<usize, WriteError> {
    let version_dir = tree.version_dir(path);
    let module_dir = version_dir.parent().expect("@v has a parent");
    Ok(atomic::remove_stray_temps(&version_dir)? + atomic::remove_stray_temps(module_dir)?)
}
