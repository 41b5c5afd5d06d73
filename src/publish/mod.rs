//! Publish stage: [`Verified`] versions → the served tree, in the safe order,
//! a batch at a time.
//!
//! 1. [`stage`] (per version, as soon as it is verified): write `.mod` and
//!    `.info` to temporary files beside their final names; the zip already
//!    is one. Nothing is visible yet.
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

use std::path::Path;

pub use atomic::{Placed, WriteError};
pub use layout::{Kind, Tree};

use crate::module::{ModVer, ModulePath, Version};
use crate::verify::Verified;

use atomic::Replacement;
use sha2::{Digest, Sha256};

/// A verified version written beside its final names, not yet visible.
/// Holds no open file: a batch of them must not exhaust descriptors.
pub struct Staged {
    verified: Verified,
    mod_tmp: tempfile::TempPath,
    info_tmp: tempfile::TempPath,
}

impl Staged {
    pub fn verified(&self) -> &Verified {
        &self.verified
    }
}

/// Writes a version's `.mod` and `.info` to temporary files in its
/// directory (step 1).
pub fn stage(tree: &Tree, verified: Verified) -> Result<Staged, WriteError> {
    let dir = tree.version_dir(&verified.mv().path);
    Ok(Staged {
        mod_tmp: atomic::write_temp(&dir, verified.mod_file())?.into_temp_path(),
        info_tmp: atomic::write_temp(&dir, verified.info())?.into_temp_path(),
        verified,
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
            let mv = staged.verified.mv();
            let info = staged.verified.info();
            *result = link(&staged.info_tmp, &tree.version_file(mv, Kind::Info), info).map(drop);
        }
    }
    Ok(placed)
}

fn link_mod_and_zip(tree: &Tree, staged: &Staged) -> Result<(), WriteError> {
    let v = &staged.verified;
    link(
        &staged.mod_tmp,
        &tree.version_file(v.mv(), Kind::Mod),
        v.mod_file(),
    )?;
    atomic::link_immutable(
        v.zip_path(),
        &tree.version_file(v.mv(), Kind::Zip),
        v.zip_sha256(),
    )?;
    Ok(())
}

fn link(tmp: &Path, path: &Path, content: &[u8]) -> Result<Placed, WriteError> {
    atomic::link_immutable(tmp, path, &Sha256::digest(content).into())
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
