//! How gomirror creates a file beside its final name: the one home for a
//! temporary file in a directory (its name prefix, its mode, the directory
//! made on demand) and for replacing a file durably (temporary file, fsync,
//! rename, fsync of the directory). Not a stage: fetch writes downloads
//! this way, publish its tree files, metrics its textfile.
//!
//! Publishing a batch does not fsync file by file: it makes a batch durable
//! with one barrier (`publish::atomic`); [`replace_durably`] is for a lone
//! file outside the tree.

use std::fs::Permissions;
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use tempfile::NamedTempFile;

/// Prefix of every temporary file in the tree. nginx must not serve these
/// (see the sample server block) and start-up removes strays.
pub const TMP_PREFIX: &str = ".tmp-";

/// Mode of every file we publish: the web server's user must read it
/// (tempfile's own default, 0600, makes nginx answer 403).
pub const FILE_MODE: u32 = 0o644;

/// A step of creating or replacing a file failed.
#[derive(Debug, thiserror::Error)]
#[error("{op} {}", path.display())]
pub struct FileError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> FileError + 'a {
    move |source| FileError {
        op,
        path: path.to_owned(),
        source,
    }
}

/// A new, empty temporary file `<prefix>…` in `dir`, mode [`FILE_MODE`];
/// `dir` is created if missing. Deleted on drop unless persisted.
pub fn create_temp(dir: &Path, prefix: &str) -> Result<NamedTempFile, FileError> {
    let create = || {
        tempfile::Builder::new()
            .prefix(prefix)
            .permissions(Permissions::from_mode(FILE_MODE))
            .tempfile_in(dir)
    };
    // The directory almost always exists: trying first saves a mkdir per
    // file, which costs on some file systems.
    match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            std::fs::create_dir_all(dir).map_err(err("create directory", dir))?;
            create()
        }
        result => result,
    }
    .map_err(err("create temporary file in", dir))
}

/// Replaces `path` with `bytes`, durably: a temporary file `<prefix>…`
/// beside it, fsync, rename over `path`, fsync of the directory, which must
/// exist. Readers see the old content or the new, never a mix. Every error
/// names `path`.
pub fn replace_durably(path: &Path, bytes: &[u8], prefix: &str) -> Result<(), FileError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(prefix)
        .permissions(Permissions::from_mode(FILE_MODE))
        .tempfile_in(dir)
        .map_err(err("create temporary file beside", path))?;
    tmp.write_all(bytes).map_err(err("write", path))?;
    tmp.as_file().sync_all().map_err(err("fsync", path))?;
    tmp.persist(path)
        .map_err(|e| err("rename into", path)(e.error))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(err("fsync directory of", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temporary_files_are_readable_and_made_where_asked() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        let tmp = create_temp(&sub, TMP_PREFIX).unwrap();
        assert_eq!(tmp.path().parent(), Some(sub.as_path()));
        let name = tmp.path().file_name().unwrap().to_string_lossy();
        assert!(name.starts_with(TMP_PREFIX), "{name}");
        let mode = std::fs::metadata(tmp.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, FILE_MODE);
    }

    #[test]
    fn replacing_leaves_the_new_content_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.prom");
        replace_durably(&path, b"one\n", ".x.tmp-").unwrap();
        replace_durably(&path, b"two\n", ".x.tmp-").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        let missing = dir.path().join("no/such/dir/x.prom");
        let e = replace_durably(&missing, b"", ".x.tmp-").unwrap_err();
        assert_eq!(e.op, "create temporary file beside");
        assert_eq!(e.path, missing);
    }
}
