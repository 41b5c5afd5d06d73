//! Where things live in the served tree: Go's download-cache layout
//! (`<escaped path>/@v/{list,<v>.info,<v>.mod,<v>.zip}`, `<escaped path>/@latest`),
//! which is also the GOPROXY URL layout (PROTOCOL.md, "GOPROXY").
//!
//! This is the only place that turns a module or module@version into a
//! path. It builds paths only from [`ModulePath`] and [`Version`](crate::module::Version), whose
//! escaped forms are checked file-name-safe, so nothing from upstream can
//! name a file outside the tree.

use std::path::{Path, PathBuf};

use crate::module::{ModVer, ModulePath};
use crate::verify::sumdb::tile::Tile;

pub use crate::files::TMP_PREFIX;

/// The three files of one module version, in the order they are published.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Mod,
    Zip,
    Info,
}

impl Kind {
    pub fn ext(self) -> &'static str {
        match self {
            Kind::Mod => "mod",
            Kind::Zip => "zip",
            Kind::Info => "info",
        }
    }
}

/// `<escaped path>/@v/<escaped version>.<ext>`, relative: also the URL path
/// below a GOPROXY base.
pub fn version_rel(mv: &ModVer, kind: Kind) -> String {
    format!(
        "{}/@v/{}.{}",
        mv.path.escaped(),
        mv.version.escaped(),
        kind.ext()
    )
}

/// `<escaped path>/@v/list`, relative.
pub fn list_rel(path: &ModulePath) -> String {
    format!("{}/@v/list", path.escaped())
}

/// `<escaped path>/@latest`, relative.
pub fn latest_rel(path: &ModulePath) -> String {
    format!("{}/@latest", path.escaped())
}

/// A file of the offline copy of a checksum database, served below
/// `sumdb/<name>/` as the go command asks a proxy for it (PROTOCOL.md,
/// "Through a proxy"; x/mod sumdb/client.go).
#[derive(Clone, Copy, Debug)]
pub enum SumdbFile<'a> {
    /// Present (empty) once the copy is complete: tells `go` to use it.
    Supported,
    /// The signed tree head the copy's lookups and tiles were pinned to.
    Latest,
    /// `lookup/<escaped path>@<escaped version>`.
    Lookup(&'a ModVer),
    /// `tile/8/<L>/<NNN>[.p/<W>]`, built from numbers only.
    Tile(&'a Tile),
}

/// `sumdb/<name>/<file>`, relative. `name` passed [`check_sumdb_name`].
pub fn sumdb_rel(name: &str, file: SumdbFile<'_>) -> String {
    let file = match file {
        SumdbFile::Supported => "supported".to_owned(),
        SumdbFile::Latest => "latest".to_owned(),
        SumdbFile::Lookup(mv) => format!("lookup/{}@{}", mv.path.escaped(), mv.version.escaped()),
        SumdbFile::Tile(t) => t.path(),
    };
    format!("sumdb/{name}/{file}")
}

/// A checksum database name becomes one directory of the tree: a host name
/// (letters, digits, `-`, `.`; not starting with `.`), as every real one is.
pub fn check_sumdb_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "checksum database name {name:?} must be a host name (letters, digits, '-', '.')"
        ))
    }
}

/// The served tree: rooted at one directory, or objects in a bucket (see:
/// #17). A bucket tree keeps a local directory too, laid out the same: its
/// staging root, where downloads and every temporary file are written
/// before they are uploaded, and where the run lock lives; the `*_file`
/// paths below then name staging places only, never served files.
#[derive(Clone, Debug)]
pub struct Tree {
    root: PathBuf,
    bucket: Option<super::bucket::Bucket>,
}

impl Tree {
    pub fn new(root: impl Into<PathBuf>) -> Tree {
        Tree {
            root: root.into(),
            bucket: None,
        }
    }

    /// A tree served from `bucket`, staged under `staging`.
    pub fn in_bucket(staging: impl Into<PathBuf>, bucket: super::bucket::Bucket) -> Tree {
        let root = staging.into();
        Tree {
            bucket: Some(bucket.with_journal(&root)),
            root,
        }
    }

    /// The local directory: the served tree, or a bucket tree's staging root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The bucket that serves this tree, if it is not the local directory.
    pub fn bucket(&self) -> Option<&super::bucket::Bucket> {
        self.bucket.as_ref()
    }

    /// The served file `rel` for reading, and its size (blocking). A
    /// missing one, or a directory, is an `io::ErrorKind::NotFound` error.
    pub fn open_served(&self, rel: &str) -> std::io::Result<(Box<dyn std::io::Read + Send>, u64)> {
        if let Some(b) = &self.bucket {
            let (reader, size) = b.open_read(rel)?;
            return Ok((Box::new(reader), size));
        }
        let file = fs_err::File::open(self.root.join(rel))?;
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(std::io::ErrorKind::NotFound.into());
        }
        Ok((Box::new(file), meta.len()))
    }

    /// The served file `rel`, whole, when it holds at most `max` bytes
    /// (blocking); `None` if there is none. A larger one is an
    /// `io::ErrorKind::InvalidData` error, so a hostile size is never read
    /// into memory.
    pub fn read_served(&self, rel: &str, max: u64) -> std::io::Result<Option<Vec<u8>>> {
        use std::io::Read;
        let (reader, size) = match self.open_served(rel) {
            Ok(opened) => opened,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let too_big = || {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: larger than {max} bytes", self.display(rel).display()),
            )
        };
        if size > max {
            return Err(too_big());
        }
        let mut body = Vec::with_capacity(usize::try_from(size).unwrap_or(0));
        reader.take(max + 1).read_to_end(&mut body)?;
        if body.len() as u64 > max {
            return Err(too_big());
        }
        Ok(Some(body))
    }

    /// [`Tree::is_served`] of each of `rels` (blocking): a bucket is asked
    /// about them all at once.
    pub fn are_served(&self, rels: &[String]) -> Vec<std::io::Result<bool>> {
        match &self.bucket {
            Some(b) => b
                .exists_all(rels)
                .into_iter()
                .map(|r| r.map_err(std::io::Error::other))
                .collect(),
            None => rels.iter().map(|rel| self.is_served(rel)).collect(),
        }
    }

    /// Whether the served file `rel` exists (blocking): a HEAD on a bucket.
    pub fn is_served(&self, rel: &str) -> std::io::Result<bool> {
        match &self.bucket {
            Some(b) => b.exists(rel).map_err(std::io::Error::other),
            None => Ok(self.root.join(rel).is_file()),
        }
    }

    /// The served files below `rel_dir`, relative to the tree, sorted
    /// (blocking); temporary files left out.
    pub fn list_served(&self, rel_dir: &str) -> std::io::Result<Vec<String>> {
        let mut found = match &self.bucket {
            Some(b) => b.list_under(rel_dir)?,
            None => {
                let mut found = Vec::new();
                let mut dirs = vec![self.root.join(rel_dir)];
                while let Some(dir) = dirs.pop() {
                    let entries = match fs_err::read_dir(&dir) {
                        Ok(e) => e,
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                        Err(e) => return Err(e),
                    };
                    for entry in entries {
                        let entry = entry?;
                        let path = entry.path();
                        if entry.file_type()?.is_dir() {
                            dirs.push(path);
                        } else if !entry.file_name().to_string_lossy().starts_with(TMP_PREFIX) {
                            let rel = path.strip_prefix(&self.root).expect("below the root");
                            found.push(
                                rel.to_string_lossy()
                                    .replace(std::path::MAIN_SEPARATOR, "/"),
                            );
                        }
                    }
                }
                found
            }
        };
        found.sort();
        Ok(found)
    }

    /// What the served file `rel` is called in messages: its path, or its
    /// `s3://` key.
    pub fn display(&self, rel: &str) -> PathBuf {
        match &self.bucket {
            Some(b) => b.display_path(rel),
            None => self.root.join(rel),
        }
    }

    /// `<root>/<escaped path>/@v`: where a module's version files, its list
    /// and every temporary file for them live.
    pub fn version_dir(&self, path: &ModulePath) -> PathBuf {
        self.root.join(path.escaped()).join("@v")
    }

    pub fn version_file(&self, mv: &ModVer, kind: Kind) -> PathBuf {
        self.root.join(version_rel(mv, kind))
    }

    pub fn list_file(&self, path: &ModulePath) -> PathBuf {
        self.root.join(list_rel(path))
    }

    pub fn latest_file(&self, path: &ModulePath) -> PathBuf {
        self.root.join(latest_rel(path))
    }

    /// `<root>/sumdb/<name>`: the offline copy, and where its temporary
    /// files are written before being linked into place.
    pub fn sumdb_dir(&self, name: &str) -> PathBuf {
        self.root.join("sumdb").join(name)
    }

    pub fn sumdb_file(&self, name: &str, file: SumdbFile<'_>) -> PathBuf {
        self.root.join(sumdb_rel(name, file))
    }

    /// The run lock, at the root so that two runs with different
    /// databases still cannot share one tree.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join(".gomirror.lock")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_case_encoded() {
        let mv = ModVer::parse("github.com/Azure/go-autorest", "v1.0.0-RC1").unwrap();
        let tree = Tree::new("/srv/t");
        assert_eq!(
            tree.version_file(&mv, Kind::Zip),
            Path::new("/srv/t/github.com/!azure/go-autorest/@v/v1.0.0-!r!c1.zip")
        );
        assert_eq!(list_rel(&mv.path), "github.com/!azure/go-autorest/@v/list");
        assert_eq!(
            latest_rel(&mv.path),
            "github.com/!azure/go-autorest/@latest"
        );
        assert_eq!(
            sumdb_rel("sum.golang.org", SumdbFile::Lookup(&mv)),
            "sumdb/sum.golang.org/lookup/github.com/!azure/go-autorest@v1.0.0-!r!c1"
        );
        assert_eq!(
            sumdb_rel("sum.golang.org", SumdbFile::Supported),
            "sumdb/sum.golang.org/supported"
        );
    }

    #[test]
    fn sumdb_names_are_host_names() {
        for ok in [
            "sum.golang.org",
            "sum.golang.google.cn",
            "localhost",
            "a-b.example",
        ] {
            assert_eq!(check_sumdb_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../x",
            "a/b",
            "a b",
            ".hidden",
            "a\\b",
            "a\0b",
            "ü.example",
        ] {
            assert!(check_sumdb_name(bad).is_err(), "{bad:?}");
        }
    }
}
