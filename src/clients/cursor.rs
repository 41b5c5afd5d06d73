//! Where to resume reading the log: the saved [`LogCursor`] against the
//! files on disk → the [`Segment`]s to read, in order.
//!
//! A cursor names a file by identity (device, inode) and by the sha256 of
//! its first `head_len` bytes (min(4 KiB, offset): only bytes already read,
//! which never change while the file lives). The file at the log's path is
//! the one the cursor names when both agree and it is at least `offset`
//! long. Otherwise the log was rotated:
//! - by rename (logrotate's default): the old file is `<log>.1`, found by
//!   its identity (its head checked too, an inode can be reused);
//! - by `copytruncate`: same inode, but shorter than the offset or, when it
//!   already grew past it, with another head; the old content is the copy
//!   `<log>.1`, found by its head;
//! - compressed: `<log>.1.gz`, found by the head of its decompressed
//!   content.
//!
//! The old file is read from the offset to its end, then the new one from
//! its start. An old file that cannot be found is a warning (its lines
//! after the offset are lost), never an error.

use std::fs::{File, Metadata};
use std::io::{self, Read};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::state::LogCursor;

/// Bytes of a file's start hashed into its cursor.
pub const HEAD_BYTES: u64 = 4096;

/// One file to read, from `start`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub path: PathBuf,
    pub gz: bool,
    pub start: u64,
    /// The identity saved in the cursor while reading it: the original
    /// file's, also when it is read from its `.gz`.
    pub dev: u64,
    pub ino: u64,
    /// A rotated file, complete: a last line without a newline is read too.
    pub finished: bool,
}

/// The segments to read, and what could not be found.
#[derive(Debug, Default)]
pub struct Plan {
    pub segments: Vec<Segment>,
    pub warnings: Vec<String>,
}

/// Which files to read after `saved`, for the log at `log`.
pub fn plan(log: &Path, saved: Option<&LogCursor>) -> io::Result<Plan> {
    let mut plan = Plan::default();
    let current = match std::fs::metadata(log) {
        Ok(m) => Some(m),
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => return Err(e),
    };
    let from_start = |m: &Metadata| Segment {
        path: log.to_owned(),
        gz: false,
        start: 0,
        dev: m.dev(),
        ino: m.ino(),
        finished: false,
    };
    let Some(c) = saved else {
        plan.segments.extend(current.as_ref().map(from_start));
        return Ok(plan);
    };
    if let Some(m) = &current {
        if (m.dev(), m.ino()) == (c.dev, c.ino)
            && m.len() >= c.offset
            && head_matches(log, false, c)?
        {
            plan.segments.push(Segment {
                start: c.offset,
                ..from_start(m)
            });
            return Ok(plan);
        }
    }
    match find_rotated(log, c)? {
        Some((path, gz)) => plan.segments.push(Segment {
            path,
            gz,
            start: c.offset,
            dev: c.dev,
            ino: c.ino,
            finished: true,
        }),
        // Replaced by a copy of itself (another inode, the same content).
        None if current.as_ref().is_some_and(|m| m.len() >= c.offset)
            && c.head_len > 0
            && head_matches(log, false, c)? =>
        {
            let m = current.as_ref().expect("checked above");
            plan.segments.push(Segment { start: c.offset, ..from_start(m) });
            return Ok(plan);
        }
        None => plan.warnings.push(format!(
            "{} was rotated but its old file is not {} or {}: its lines after byte {} are not counted",
            log.display(),
            sibling(log, ".1").display(),
            sibling(log, ".1.gz").display(),
            c.offset
        )),
    }
    plan.segments.extend(current.as_ref().map(from_start));
    Ok(plan)
}

/// `<log><suffix>`.
pub fn sibling(log: &Path, suffix: &str) -> PathBuf {
    let mut s = log.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// The rotated file holding the cursor's file: `<log>.1` by identity or
/// head, `<log>.1.gz` by head.
fn find_rotated(log: &Path, c: &LogCursor) -> io::Result<Option<(PathBuf, bool)>> {
    for (suffix, gz) in [(".1", false), (".1.gz", true)] {
        let path = sibling(log, suffix);
        let m = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let same = !gz && (m.dev(), m.ino()) == (c.dev, c.ino);
        // With nothing read yet (head_len 0) only the identity tells.
        if (same || c.head_len > 0) && head_matches(&path, gz, c)? {
            return Ok(Some((path, gz)));
        }
    }
    Ok(None)
}

/// Whether the first `head_len` bytes of `path` (decompressed for `gz`)
/// hash to the cursor's head.
fn head_matches(path: &Path, gz: bool, c: &LogCursor) -> io::Result<bool> {
    let head = match read_head(path, gz, c.head_len) {
        Ok(h) => h,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        // A file that is not gzip (or is cut short) is not ours.
        Err(e) if gz && e.kind() != io::ErrorKind::PermissionDenied => return Ok(false),
        Err(e) => return Err(e),
    };
    Ok(head.len() as u64 == c.head_len && head_sha256(&head) == c.head_sha256)
}

/// Up to `n` first bytes.
fn read_head(path: &Path, gz: bool, n: u64) -> io::Result<Vec<u8>> {
    let file = File::open(path)?;
    let mut head = Vec::with_capacity(n as usize);
    if gz {
        flate2::read::MultiGzDecoder::new(file)
            .take(n)
            .read_to_end(&mut head)?;
    } else {
        head.resize(n as usize, 0);
        let mut got = 0;
        while got < head.len() {
            match file.read_at(&mut head[got..], got as u64)? {
                0 => break,
                k => got += k,
            }
        }
        head.truncate(got);
    }
    Ok(head)
}

pub fn head_sha256(head: &[u8]) -> String {
    hex::encode(Sha256::digest(head))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cursor_of(path: &Path, offset: u64) -> LogCursor {
        let m = std::fs::metadata(path).unwrap();
        let head = read_head(path, false, offset.min(HEAD_BYTES)).unwrap();
        LogCursor {
            dev: m.dev(),
            ino: m.ino(),
            head_len: head.len() as u64,
            head_sha256: head_sha256(&head),
            offset,
        }
    }

    // See: #14
    #[test]
    fn issue_14_rotation_is_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("access.log");
        std::fs::write(&log, "one\ntwo\n").unwrap();
        let c = cursor_of(&log, 8);
        let p = plan(&log, Some(&c)).unwrap();
        assert_eq!(p.segments.len(), 1);
        assert_eq!((p.segments[0].start, p.segments[0].finished), (8, false));

        // copytruncate, grown past the old offset: another head.
        std::fs::copy(&log, sibling(&log, ".1")).unwrap();
        std::fs::write(&log, "three three three\n").unwrap();
        let p = plan(&log, Some(&c)).unwrap();
        let got: Vec<_> = p
            .segments
            .iter()
            .map(|s| (s.path.clone(), s.start))
            .collect();
        assert_eq!(got, [(sibling(&log, ".1"), 8), (log.clone(), 0)]);

        // Nothing to find: a warning naming what is lost.
        std::fs::remove_file(sibling(&log, ".1")).unwrap();
        let p = plan(&log, Some(&c)).unwrap();
        assert_eq!(p.segments.len(), 1);
        assert!(
            p.warnings[0].ends_with("its lines after byte 8 are not counted"),
            "{:?}",
            p.warnings
        );
    }
}
