//! Crash-safe writes into the served tree.
//!
//! Every file is written to a temporary file in its final directory
//! (same file system, so the last step is atomic), fsynced, moved into
//! place, and the directory is fsynced so the new name survives a power
//! loss. A client therefore sees either nothing or the whole file.
//!
//! Version files are immutable: they are linked into place with
//! `link(2)`, which fails if the name exists, so a published file can
//! never be replaced, even by a racing writer. Metadata (`@v/list`,
//! `@latest`) is replaced with `rename(2)`.

use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

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
}

impl WriteError {
    /// A full disk or a read-only tree stops the whole run: every later
    /// version would fail the same way.
    pub fn is_fatal(&self) -> bool {
        matches!(self, WriteError::Io { source, .. } if matches!(
            source.kind(),
            io::ErrorKind::StorageFull
                | io::ErrorKind::ReadOnlyFilesystem
                | io::ErrorKind::QuotaExceeded
                | io::ErrorKind::PermissionDenied
        ))
    }
}

/// What happened to an immutable file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    Created,
    /// Identical content was already there (a re-run after a crash).
    AlreadyPresent,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to a synced temporary file in `dir`.
fn write_temp(dir: &Path, bytes: &[u8]) -> Result<tempfile::NamedTempFile, WriteError> {
    fs_err::create_dir_all(dir).map_err(io_err("create directory", dir))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(TMP_PREFIX)
        .tempfile_in(dir)
        .map_err(io_err("create temporary file in", dir))?;
    tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
    tmp.as_file()
        .sync_all()
        .map_err(io_err("fsync", tmp.path()))?;
    Ok(tmp)
}

/// Replaces `path` with `bytes` atomically (for `@v/list` and `@latest`).
pub fn replace(path: &Path, bytes: &[u8]) -> Result<(), WriteError> {
    let dir = parent(path);
    let tmp = write_temp(dir, bytes)?;
    tmp.persist(path).map_err(|e| WriteError::Io {
        op: "rename into",
        path: path.to_owned(),
        source: e.error,
    })?;
    sync_dir(dir)
}

/// Publishes `bytes` as the immutable file `path`; the caller syncs the
/// directory (once for all files of a version).
pub fn create_immutable(path: &Path, bytes: &[u8]) -> Result<Placed, WriteError> {
    let tmp = write_temp(parent(path), bytes)?;
    link_immutable(tmp.path(), path, &Sha256::digest(bytes).into())
}

/// Publishes an already-written temporary file (in the same directory)
/// whose content has sha256 `sha256` as the immutable file `path`. The
/// temporary file is left for its owner to drop.
pub fn persist_immutable(tmp: &Path, path: &Path, sha256: &[u8; 32]) -> Result<Placed, WriteError> {
    fs_err::File::open(tmp)
        .and_then(|f| f.sync_all())
        .map_err(io_err("fsync", tmp))?;
    link_immutable(tmp, path, sha256)
}

fn link_immutable(tmp: &Path, path: &Path, sha256: &[u8; 32]) -> Result<Placed, WriteError> {
    match std::fs::hard_link(tmp, path) {
        Ok(()) => Ok(Placed::Created),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
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
        Err(source) => Err(WriteError::Io {
            op: "link into place",
            path: path.to_owned(),
            source,
        }),
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

/// fsyncs a directory so that names created or renamed in it are durable.
pub fn sync_dir(dir: &Path) -> Result<(), WriteError> {
    fs_err::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
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

    #[test]
    fn immutable_files_never_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("m/@v/v1.0.0.mod");
        assert_eq!(
            create_immutable(&path, b"module m\n").unwrap(),
            Placed::Created
        );
        assert_eq!(
            create_immutable(&path, b"module m\n").unwrap(),
            Placed::AlreadyPresent
        );
        let err = create_immutable(&path, b"module evil\n").unwrap_err();
        assert!(matches!(err, WriteError::Conflict { .. }), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"module m\n");
        assert_eq!(remove_stray_temps(path.parent().unwrap()).unwrap(), 0);
    }

    #[test]
    fn replace_overwrites_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list");
        replace(&path, b"v1.0.0\n").unwrap();
        replace(&path, b"v1.0.0\nv1.1.0\n").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"v1.0.0\nv1.1.0\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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
