//! Crash-safe writes into the served tree, committed in groups.
//!
//! Every file is first written to a temporary file (`.tmp-*`) in its final
//! directory, so that making it visible is one atomic step on the same file
//! system. Durability comes from [`barrier`]: one `syncfs(2)` of the tree's
//! file system, which flushes every file's data and every directory entry
//! written so far — what an fsync of each file and of each directory would
//! do, but for a whole batch of versions at once. (On the disks we measured,
//! per-file fsync cost more than the network; see README "Benchmarks".)
//!
//! Version files are immutable: [`rename_immutable`] uses
//! `renameat2(RENAME_NOREPLACE)`, which fails if the name exists, so a
//! published file can never be replaced, even by a racing writer; where the
//! file system refuses the flag it falls back to `link(2)`, which fails the
//! same way, and an unlink of the temporary name ([`link_immutable`]).
//! Metadata (`@v/list`, `@latest`) is replaced with `rename(2)`
//! ([`Replacement`]).

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use sha2::{Digest, Sha256};

use super::layout::TMP_PREFIX;

/// A write to the tree failed.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{op} {path}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// An immutable file exists with other content: upstream changed a
    /// published version. This is an alarm, never an overwrite.
    #[error("{path} is already published with sha256 {existing}, refusing different content with sha256 {new}")]
    Conflict {
        path: PathBuf,
        existing: String,
        new: String,
    },
    /// An object store answered with an error after its retries (see: #17).
    #[error("{op} {key}")]
    Store {
        op: &'static str,
        key: String,
        #[source]
        source: super::bucket::StoreError,
    },
}

impl WriteError {
    /// A full disk or a read-only tree stops the whole run: every later
    /// version would fail the same way. So does an object store that still
    /// fails once its retries are spent.
    pub fn is_fatal(&self) -> bool {
        match self {
            WriteError::Io { source, .. } => is_fatal_io(source),
            WriteError::Store { .. } => true,
            WriteError::Conflict { .. } => false,
        }
    }
}

/// Errors that mean the tree's file system takes no more writes.
pub fn is_fatal_io(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull
            | io::ErrorKind::ReadOnlyFilesystem
            | io::ErrorKind::QuotaExceeded
            | io::ErrorKind::PermissionDenied
    )
}

/// What happened to an immutable file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Created,
    /// Identical content was already there (a re-run after a crash).
    AlreadyPresent,
}

pub(crate) fn io_err<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

pub use crate::files::FILE_MODE;

impl From<crate::files::FileError> for WriteError {
    fn from(e: crate::files::FileError) -> Self {
        WriteError::Io {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    }
}

/// Creates an empty temporary file in `dir` (created if missing).
pub fn create_temp(dir: &Path) -> Result<tempfile::NamedTempFile, WriteError> {
    Ok(crate::files::create_temp(dir, TMP_PREFIX)?)
}

/// Writes `bytes` to a new temporary file in `dir`. Not durable until the
/// next [`barrier`].
pub fn write_temp(dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, WriteError> {
    let mut tmp = create_temp(dir)?;
    tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
    Ok(tmp)
}

/// Makes everything written to the tree's file system so far durable:
/// file data, new names, renames. Linux `syncfs(2)`.
pub fn barrier(root: &Path) -> Result<(), WriteError> {
    let dir = fs_err::File::open(root).map_err(io_err("open", root))?;
    rustix::fs::syncfs(&dir).map_err(|e| io_err("sync file system of", root)(e.into()))
}

/// Gives the temporary file `tmp` (in the same directory, content with
/// sha256 `sha256`) the immutable name `path`. The temporary name is left
/// for its owner to drop.
pub fn link_immutable(tmp: &Path, path: &Path, sha256: &[u8; 32]) -> Result<Placed, WriteError> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(Placed::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => already_there(path, sha256),
        Err(source) => Err(WriteError::Io {
            op: "link into place",
            path: path.to_owned(),
            source,
        }),
    }
}

/// Renames the temporary file `tmp` (in the same directory, content with
/// sha256 `sha256`) to the immutable name `path`, unless `path` exists:
/// one `renameat2(RENAME_NOREPLACE)` instead of a link and an unlink, and
/// nothing left to remove. If `path` exists, `tmp` is removed and the
/// result is as [`link_immutable`]'s.
pub fn rename_immutable(
    tmp: tempfile::TempPath,
    path: &Path,
    sha256: &[u8; 32],
) -> Result<Placed, WriteError> {
    let how = match NOREPLACE_UNSUPPORTED.load(Ordering::Relaxed) {
        true => Immutable::Link,
        false => Immutable::RenameNoReplace,
    };
    place_immutable(tmp, path, sha256, how)
}

/// Set once the kernel answers ENOSYS to renameat2 (before Linux 3.15):
/// every later call would too.
static NOREPLACE_UNSUPPORTED: AtomicBool = AtomicBool::new(false);

/// How [`place_immutable`] makes a name that must not replace another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Immutable {
    RenameNoReplace,
    /// link(2) and unlink(2): what every POSIX file system supports.
    Link,
}

fn place_immutable(
    mut tmp: tempfile::TempPath,
    path: &Path,
    sha256: &[u8; 32],
    how: Immutable,
) -> Result<Placed, WriteError> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    use rustix::io::Errno;
    if how == Immutable::RenameNoReplace {
        match renameat_with(CWD, &*tmp, CWD, path, RenameFlags::NOREPLACE) {
            Ok(()) => {
                // The temporary name is gone: dropping `tmp` must not unlink it.
                tmp.disable_cleanup(true);
                return Ok(Placed::Created);
            }
            Err(Errno::EXIST) => return already_there(path, sha256),
            // The file system does not take the flag (NFS, some overlay and
            // ZFS setups answer EINVAL); the kernel lacks renameat2 (ENOSYS).
            Err(Errno::NOSYS) => NOREPLACE_UNSUPPORTED.store(true, Ordering::Relaxed),
            Err(Errno::INVAL) => {}
            Err(e) => return Err(io_err("rename into place", path)(e.into())),
        }
    }
    // `tmp` is unlinked when dropped, whatever the link did.
    link_immutable(&tmp, path, sha256)
}

/// `path` exists: the same content is [`Placed::AlreadyPresent`], other
/// content a [`WriteError::Conflict`].
fn already_there(path: &Path, sha256: &[u8; 32]) -> Result<Placed, WriteError> {
    let existing = sha256_file(path)?;
    if &existing == sha256 {
        Ok(Placed::AlreadyPresent)
    } else {
        Err(WriteError::Conflict {
            path: path.to_owned(),
            existing: hex::encode(existing),
            new: hex::encode(sha256),
        })
    }
}

/// A new version of a metadata file, staged under a temporary name beside
/// `path` until [`Replacement::commit`] renames it over `path`.
pub struct Replacement {
    tmp: tempfile::TempPath,
    path: PathBuf,
}

impl Replacement {
    /// Stages `bytes` as the next content of `path`.
    pub fn with_content(path: &Path, bytes: &[u8]) -> Result<Replacement, WriteError> {
        let tmp = write_temp(parent(path), bytes)?.into_temp_path();
        Ok(Replacement {
            tmp,
            path: path.to_owned(),
        })
    }

    /// Stages a hard link to the immutable file `target` as the next
    /// content of `path`: same bytes, no new inode to write. `None` when
    /// `path` already is that file: rename(2) between two links to one inode
    /// does nothing and would leave the temporary name behind.
    pub fn linking(path: &Path, target: &Path) -> Result<Option<Replacement>, WriteError> {
        use std::os::unix::fs::MetadataExt;
        let target_meta = fs_err::metadata(target).map_err(io_err("stat", target))?;
        match std::fs::metadata(path) {
            Ok(m) if (m.dev(), m.ino()) == (target_meta.dev(), target_meta.ino()) => {
                return Ok(None)
            }
            _ => {}
        }
        let dir = parent(path);
        loop {
            let name = format!("{TMP_PREFIX}{:016x}", rand::random::<u64>());
            let tmp = dir.join(name);
            match std::fs::hard_link(target, &tmp) {
                Ok(()) => {
                    let tmp =
                        tempfile::TempPath::try_from_path(&tmp).map_err(io_err("resolve", &tmp))?;
                    return Ok(Some(Replacement {
                        tmp,
                        path: path.to_owned(),
                    }));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(source) => return Err(io_err("link", &tmp)(source)),
            }
        }
    }

    /// Renames the staged file over `path`: readers see the old or the new
    /// content, never a mix.
    pub fn commit(self) -> Result<(), WriteError> {
        self.tmp.persist(&self.path).map_err(|e| WriteError::Io {
            op: "rename into",
            path: self.path.clone(),
            source: e.error,
        })
    }
}

/// sha256 of a file, read in chunks.
pub fn sha256_file(path: &Path) -> Result<[u8; 32], WriteError> {
    let mut file = fs_err::File::open(path).map_err(io_err("open", path))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            return Ok(hasher.finalize().into());
        }
        hasher.update(&buf[..n]);
    }
}

/// Removes temporary files a killed run left in `dir`; returns how many.
pub fn remove_stray_temps(dir: &Path) -> Result<usize, WriteError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(source) => return Err(io_err("read directory", dir)(source)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(io_err("read directory", dir))?;
        if entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
            let path = entry.path();
            fs_err::remove_file(&path).map_err(io_err("remove", &path))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn parent(path: &Path) -> &Path {
    path.parent()
        .expect("tree paths always have a parent directory")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;

    /// Places `bytes` at `path` the way `how` names: `None` is
    /// [`link_immutable`] with the temporary file dropped after.
    fn place(path: &Path, bytes: &[u8], how: Option<Immutable>) -> Result<Placed, WriteError> {
        let tmp = write_temp(path.parent().unwrap(), bytes)?.into_temp_path();
        let sha256 = Sha256::digest(bytes).into();
        match how {
            None => link_immutable(&tmp, path, &sha256),
            Some(how) => place_immutable(tmp, path, &sha256, how),
        }
    }

    #[test]
    fn immutable_files_never_change() {
        let hows = [
            None,
            Some(Immutable::RenameNoReplace),
            // The fallback where renameat2 answers EINVAL or ENOSYS.
            Some(Immutable::Link),
        ];
        for how in hows {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("m/@v/v1.0.0.mod");
            let place = |bytes: &[u8]| place(&path, bytes, how);
            assert_eq!(place(b"module m\n").unwrap(), Placed::Created, "{how:?}");
            let inode = std::fs::metadata(&path).unwrap().ino();
            assert_eq!(place(b"module m\n").unwrap(), Placed::AlreadyPresent);
            let err = place(b"module evil\n").unwrap_err();
            assert!(matches!(err, WriteError::Conflict { .. }), "{how:?}: {err}");
            assert_eq!(std::fs::read(&path).unwrap(), b"module m\n", "{how:?}");
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.ino(), inode, "{how:?}: the first file stays");
            assert_eq!(meta.nlink(), 1, "{how:?}: no second name is left");
            let names = std::fs::read_dir(path.parent().unwrap()).unwrap().count();
            assert_eq!(names, 1, "{how:?}: no temporary file is left");
            assert_eq!(
                meta.permissions().mode() & 0o777,
                FILE_MODE,
                "published files are world-readable"
            );
            barrier(dir.path()).unwrap();
        }
    }

    #[test]
    fn a_failed_rename_names_the_file_and_removes_the_temporary_one() {
        // Not a missing flag: the error is the caller's, and dropping the
        // temporary path still removes the temporary file.
        let dir = tempfile::tempdir().unwrap();
        let tmp = write_temp(dir.path(), b"x").unwrap().into_temp_path();
        let tmp_name = tmp.to_path_buf();
        let missing = dir.path().join("no/such/dir/v1.0.0.zip");
        let err = rename_immutable(tmp, &missing, &[0; 32]).unwrap_err();
        assert!(
            matches!(
                &err,
                WriteError::Io {
                    op: "rename into place",
                    ..
                }
            ),
            "{err}"
        );
        assert!(!tmp_name.exists());
    }

    #[test]
    fn replacements_overwrite_and_leave_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let list = dir.path().join("list");
        Replacement::with_content(&list, b"v1.0.0\n")
            .unwrap()
            .commit()
            .unwrap();
        Replacement::with_content(&list, b"v1.0.0\nv1.1.0\n")
            .unwrap()
            .commit()
            .unwrap();
        assert_eq!(std::fs::read(&list).unwrap(), b"v1.0.0\nv1.1.0\n");
        let latest = dir.path().join("@latest");
        let link = Replacement::linking(&latest, &list).unwrap();
        link.expect("a new link").commit().unwrap();
        assert_eq!(std::fs::read(&latest).unwrap(), b"v1.0.0\nv1.1.0\n");
        // Already that file: nothing to stage (rename would keep the temp).
        assert!(Replacement::linking(&latest, &list).unwrap().is_none());
        // An uncommitted replacement leaves nothing behind.
        drop(Replacement::with_content(&list, b"torn").unwrap());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
    }

    #[test]
    fn strays_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".tmp-abc"), b"torn").unwrap();
        std::fs::write(dir.path().join("v1.0.0.zip"), b"kept").unwrap();
        assert_eq!(remove_stray_temps(dir.path()).unwrap(), 1);
        assert_eq!(remove_stray_temps(&dir.path().join("missing")).unwrap(), 0);
        assert!(dir.path().join("v1.0.0.zip").exists());
    }
}
