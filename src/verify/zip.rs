//! Checks a downloaded module zip against Go's rules without extracting it,
//! and computes its `h1:` hash in the same pass.
//!
//! Input: a [`ModVer`] and the path of a zip on disk. Output: a
//! [`CheckedZip`] (the `h1:`, counts, the root go.mod), or a [`ZipError`]
//! naming the module version, the offending entry and the rule.
//!
//! Go: x/mod/zip/zip.go CheckZip (package doc and checkZip), checked in its
//! order, plus what the go command does with a zip it downloads
//! (cmd/go/internal/modfetch/fetch.go downloadZip, hashZip → dirhash.HashZip):
//! - the zip file is at most [`MAX_ZIP_FILE`] bytes;
//! - every entry name starts with `<module>@<version>/`, and the rest is
//!   clean (`path.Clean`) and passes `module.CheckFilePath`;
//! - no two names are equal under Unicode case folding (`strToFold`), no
//!   path is both a file and a directory, no file appears twice;
//! - `go.mod` only at the root, spelled in lower case;
//! - the declared sizes of the files add up to at most [`MAX_ZIP_FILE`];
//!   the root `go.mod` and `LICENSE` are at most [`MAX_GO_MOD`] and
//!   [`MAX_LICENSE`] bytes;
//! - each file's content is exactly as long as its declared size (Go:
//!   archive/zip checksumReader; Unzip's `io.LimitedReader` of size+1), and
//!   its CRC-32 matches;
//! - symbolic links and other irregular files are not allowed (the package
//!   doc's rule; checkZip itself leaves it to Create);
//! - a directory entry has no content (Go: archive/zip File.Open returns
//!   ErrFormat for one that has);
//! - only Store and Deflate (Go: archive/zip ErrAlgorithm), no encryption.
//!
//! Phase 1 reads only headers: the central directory is parsed here exactly
//! as Go's archive/zip parses it (raw byte names, zip64 extras, the entry
//! count), so a zip bomb or a bad name is refused before anything is
//! decompressed. Phase 2 decompresses each file once through the `zip`
//! crate, reading at most declared size + 1 bytes, and hashes it. The crate
//! keys entries by name and decodes non-UTF-8 names as CP437, so it would
//! silently merge duplicate names; phase 2 uses it only after both readers
//! agree on every entry's name, sizes and offset.
//!
//! Both phases read through one `ZipSource`: a zip of at most `WINDOW`
//! bytes (nearly every module) is read with one `pread` and then parsed from
//! memory; a larger one through a window of that size that is refilled only
//! when a read leaves it. Both parsers seek once or twice per entry, which
//! straight on the file cost a `lseek` and a `read` each (issue 11).
//!
//! Two bounds are ours, not Go's, so that a hostile central directory cannot
//! take gigabytes of memory: [`MAX_FILES`] entries and [`MAX_PATHS`]
//! distinct file and directory paths.

use super::dirhash::{self, FileDigest};
use crate::module::{check_file_path, ModVer, PathError};
use fs_err::os::unix::fs::FileExt as _;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::Path;

/// Go: x/mod/zip/zip.go MaxZipFile: the zip, and the sum of its files.
pub const MAX_ZIP_FILE: u64 = 500 << 20;
/// Go: x/mod/zip/zip.go MaxGoMod.
pub const MAX_GO_MOD: u64 = 16 << 20;
/// Go: x/mod/zip/zip.go MaxLICENSE.
pub const MAX_LICENSE: u64 = 16 << 20;
/// Not a Go rule: the most central-directory entries we parse. Far above
/// any real module, low enough that parsing stays within a few hundred MiB.
pub const MAX_FILES: u64 = 1 << 20;
/// Not a Go rule: the most distinct paths (files and the directories they
/// imply) the collision check tracks; a path of n elements implies n - 1.
pub const MAX_PATHS: usize = 2 << 20;

/// A module zip that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedZip {
    /// Go: dirhash.HashZip with dirhash.Hash1, as go.sum records it.
    pub h1: String,
    /// Number of file entries (directory entries not counted).
    pub files: usize,
    /// Sum of the files' decompressed sizes, as read.
    pub uncompressed_size: u64,
    /// The root go.mod's content if the zip has one; at most [`MAX_GO_MOD`] bytes.
    pub go_mod: Option<Vec<u8>>,
}

/// Why a zip is not a valid module zip for `mv`.
/// Go: x/mod/zip/zip.go FileError (`file: err`), behind the module version.
#[derive(Debug, thiserror::Error)]
#[error("{mv}: zip: {}{kind}", .file.as_ref().map(|f| format!("{f}: ")).unwrap_or_default())]
pub struct ZipError {
    pub mv: ModVer,
    /// The entry name as stored in the zip (control characters escaped),
    /// or `None` when the archive as a whole is at fault.
    pub file: Option<String>,
    pub kind: ZipErrorKind,
}

/// The rule a zip broke, in Go's words where Go has them.
#[derive(Debug, thiserror::Error)]
pub enum ZipErrorKind {
    /// Reading the file failed for a reason other than its content.
    #[error("{0}")]
    Io(io::Error),
    /// Go: archive/zip ErrFormat, with what was wrong.
    #[error("not a valid zip file: {0}")]
    NotAZip(String),
    #[error("module zip file is too large ({size} bytes; limit is {MAX_ZIP_FILE} bytes)")]
    ZipTooLarge { size: u64 },
    #[error(
        "total uncompressed size of module contents too large (max size is {MAX_ZIP_FILE} bytes)"
    )]
    ContentTooLarge,
    #[error("too many files ({count}; limit is {MAX_FILES})")]
    TooManyFiles { count: u64 },
    #[error("too many distinct file and directory paths (limit is {MAX_PATHS})")]
    TooManyPaths,
    #[error("path does not have prefix {prefix:?}")]
    NoPrefix { prefix: String },
    #[error("file path is not clean")]
    NotClean,
    #[error("{0}")]
    InvalidPath(Box<PathError>),
    #[error("case-insensitive file name collision: {other:?} and {path:?}")]
    Collision { other: String, path: String },
    #[error("entry {path:?} is both a file and a directory")]
    FileAndDir { path: String },
    #[error("multiple entries for file {path:?}")]
    Duplicate { path: String },
    #[error("go.mod file not in module root directory")]
    GoModNotRoot,
    #[error("go.mod files must have lowercase names")]
    GoModCase,
    #[error("go.mod file too large (max size is {MAX_GO_MOD} bytes)")]
    GoModTooLarge,
    #[error("LICENSE file too large (max size is {MAX_LICENSE} bytes)")]
    LicenseTooLarge,
    #[error("file is a symbolic link")]
    Symlink,
    #[error("not a regular file")]
    NotRegular,
    #[error("directory entry has content ({size} bytes)")]
    DirWithContent { size: u64 },
    #[error("unsupported compression algorithm (method {method})")]
    UnsupportedMethod { method: u16 },
    #[error("encrypted files are not supported")]
    Encrypted,
    #[error("uncompressed size is larger than declared size ({declared} bytes)")]
    LargerThanDeclared { declared: u64 },
    #[error("uncompressed size is smaller than declared size ({actual} of {declared} bytes)")]
    SmallerThanDeclared { declared: u64, actual: u64 },
    #[error("checksum error")]
    Checksum,
}

/// Go: x/mod/zip/zip.go CheckZip, then dirhash.HashZip over the same file.
pub fn check_zip(mv: &ModVer, zip_file: &Path) -> Result<CheckedZip, ZipError> {
    match fs_err::File::open(zip_file) {
        Ok(file) => check_zip_file(mv, file),
        Err(e) => Err(ZipError {
            mv: mv.clone(),
            file: None,
            kind: ZipErrorKind::Io(e),
        }),
    }
}

/// [`check_zip`] of a file already open (read with `pread`: its offset does
/// not matter and does not change).
pub fn check_zip_file(mv: &ModVer, file: fs_err::File) -> Result<CheckedZip, ZipError> {
    let fail = |kind| ZipError {
        mv: mv.clone(),
        file: None,
        kind,
    };
    let size = file
        .metadata()
        .map_err(|e| fail(ZipErrorKind::Io(e)))?
        .len();
    if size > MAX_ZIP_FILE {
        return Err(fail(ZipErrorKind::ZipTooLarge { size }));
    }
    let mut zip = ZipSource::new(file, size).map_err(|e| fail(read_error(e)))?;
    let entries = read_central_directory(&mut zip, size).map_err(fail)?;
    let planned = check_entries(mv, &entries)?;
    hash_entries(mv, zip, &entries, planned)
}

/// Bytes of the zip held in memory at once: the whole zip when it is no
/// larger, else a window of the file. Per verifying thread, so a few MiB in all.
const WINDOW: usize = 1 << 20;

/// The zip file as `Read + Seek` for both parsers, with seeks that cost no
/// system call: reads come from a buffer of at most [`WINDOW`] bytes, which
/// is refilled (one `pread`, never a `lseek`) only when a read starts
/// outside it. The parsers move forward through the entries, so each byte
/// of a large zip is read about once.
struct ZipSource {
    file: fs_err::File,
    size: u64,
    pos: u64,
    /// The file's bytes `start..start + buf.len()`.
    buf: Vec<u8>,
    start: u64,
}

impl ZipSource {
    /// Reads the whole file now if it fits in [`WINDOW`].
    fn new(file: fs_err::File, size: u64) -> io::Result<ZipSource> {
        let mut zip = ZipSource {
            file,
            size,
            pos: 0,
            buf: Vec::new(),
            start: 0,
        };
        if size <= WINDOW as u64 {
            zip.fill(0)?;
        }
        Ok(zip)
    }

    /// Loads the window starting at `at` (< size).
    fn fill(&mut self, at: u64) -> io::Result<()> {
        let len = (self.size - at).min(WINDOW as u64) as usize;
        self.buf.resize(len, 0);
        self.start = at;
        let filled = self.file.read_exact_at(&mut self.buf, at);
        if filled.is_err() {
            // Never leave bytes that were not read looking valid.
            self.buf.clear();
        }
        filled
    }
}

impl Read for ZipSource {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.size || out.is_empty() {
            return Ok(0);
        }
        let end = self.start + self.buf.len() as u64;
        if self.pos < self.start || self.pos >= end {
            self.fill(self.pos)?;
        }
        let from = (self.pos - self.start) as usize;
        let n = out.len().min(self.buf.len() - from);
        out[..n].copy_from_slice(&self.buf[from..from + n]);
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for ZipSource {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.size.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        let invalid = || io::Error::new(io::ErrorKind::InvalidInput, "seek before byte 0");
        self.pos = pos.ok_or_else(invalid)?;
        Ok(self.pos)
    }
}

/// One central-directory entry, with the fields Go's archive/zip reads.
#[derive(Debug)]
struct Entry {
    /// The name's raw bytes; Go never decodes them.
    name: Vec<u8>,
    creator_version: u16,
    flags: u16,
    method: u16,
    compressed_size: u64,
    uncompressed_size: u64,
    external_attrs: u32,
    /// Local header offset in the file (base offset applied).
    header_offset: u64,
}

impl Entry {
    /// The name for messages: lossy UTF-8, control characters escaped.
    fn label(&self) -> String {
        let mut label = String::new();
        for c in String::from_utf8_lossy(&self.name).chars() {
            if c.is_control() {
                label.extend(c.escape_default());
            } else {
                label.push(c);
            }
        }
        label
    }
}

const DIRECTORY_HEADER_SIG: u32 = 0x0201_4b50;
const DIRECTORY_END_SIG: &[u8] = b"PK\x05\x06";
const DIRECTORY64_LOC_SIG: u32 = 0x0706_4b50;
const DIRECTORY64_END_SIG: u32 = 0x0606_4b50;
const DIRECTORY_HEADER_LEN: usize = 46;
const DIRECTORY_END_LEN: usize = 22;

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}
fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

fn not_a_zip(why: &str) -> ZipErrorKind {
    ZipErrorKind::NotAZip(why.to_owned())
}

/// An I/O error while reading headers: running out of bytes is the
/// archive's fault, anything else the disk's.
fn read_error(e: io::Error) -> ZipErrorKind {
    match e.kind() {
        io::ErrorKind::UnexpectedEof => not_a_zip("unexpected EOF"),
        _ => ZipErrorKind::Io(e),
    }
}

fn read_at(f: &mut ZipSource, offset: u64, len: usize) -> Result<Vec<u8>, ZipErrorKind> {
    let mut buf = vec![0; len];
    f.seek(SeekFrom::Start(offset)).map_err(read_error)?;
    f.read_exact(&mut buf).map_err(read_error)?;
    Ok(buf)
}

/// Where the central directory starts and how many entries it holds.
struct DirectoryEnd {
    records: u64,
    offset: u64,
    base_offset: i128,
}

/// Go: archive/zip/reader.go readDirectoryEnd, findDirectory64End and
/// readDirectory64End.
fn read_directory_end(f: &mut ZipSource, size: u64) -> Result<DirectoryEnd, ZipErrorKind> {
    // Go: look for the signature in the last 1 KiB, then the last 65 KiB.
    let mut found = None;
    for block in [1024, 65 * 1024] {
        let block = size.min(block);
        let buf = read_at(f, size - block, block as usize)?;
        if let Some(p) = find_signature_in_block(&buf) {
            found = Some((size - block + p as u64, buf[p..].to_vec()));
            break;
        }
        if block == size {
            break;
        }
    }
    let (mut end_offset, b) = found.ok_or_else(|| not_a_zip("no end of central directory"))?;
    let mut records = u64::from(u16_at(&b, 10));
    let mut dir_size = u64::from(u32_at(&b, 12));
    let mut offset = u64::from(u32_at(&b, 16));
    // Go tests directorySize against 0xffff; the zip64 sentinel is 0xffffffff.
    if records == 0xffff || dir_size == 0xffff || dir_size == 0xffff_ffff || offset == 0xffff_ffff {
        if let Some(p) = find_directory64_end(f, end_offset)? {
            let b = read_at(f, p, 56)?;
            if u32_at(&b, 0) != DIRECTORY64_END_SIG {
                return Err(not_a_zip("bad zip64 end of central directory"));
            }
            end_offset = p;
            (records, dir_size, offset) = (u64_at(&b, 32), u64_at(&b, 40), u64_at(&b, 48));
        }
    }
    let base_offset = i128::from(end_offset) - i128::from(dir_size) - i128::from(offset);
    let start = base_offset + i128::from(offset);
    if start < 0 || start >= i128::from(size) {
        return Err(not_a_zip("central directory offset out of range"));
    }
    Ok(DirectoryEnd {
        records,
        offset,
        base_offset,
    })
}

/// Go: archive/zip/reader.go findSignatureInBlock: the last end record
/// whose comment fits in the file.
fn find_signature_in_block(b: &[u8]) -> Option<usize> {
    (0..=b.len().checked_sub(DIRECTORY_END_LEN)?)
        .rev()
        .find(|&i| {
            let comment = usize::from(u16_at(b, i + DIRECTORY_END_LEN - 2));
            &b[i..i + 4] == DIRECTORY_END_SIG && i + DIRECTORY_END_LEN + comment <= b.len()
        })
}

/// Go: archive/zip/reader.go findDirectory64End.
fn find_directory64_end(f: &mut ZipSource, end_offset: u64) -> Result<Option<u64>, ZipErrorKind> {
    let Some(loc) = end_offset.checked_sub(20) else {
        return Ok(None);
    };
    let b = read_at(f, loc, 20)?;
    let valid = u32_at(&b, 0) == DIRECTORY64_LOC_SIG && u32_at(&b, 4) == 0 && u32_at(&b, 16) == 1;
    Ok(valid.then(|| u64_at(&b, 8)))
}

/// Go: archive/zip/reader.go Reader.init: every entry of the central
/// directory, in order.
fn read_central_directory(f: &mut ZipSource, size: u64) -> Result<Vec<Entry>, ZipErrorKind> {
    let end = read_directory_end(f, size)?;
    if end.records > MAX_FILES {
        return Err(ZipErrorKind::TooManyFiles { count: end.records });
    }
    let mut base = end.base_offset;
    // Go: if the first header is not where the base offset puts it, retry
    // with a zero base offset, for writers that get the sizes wrong.
    let first = u64::try_from(base + i128::from(end.offset)).expect("checked in range");
    if base != 0 && u32_at(&read_at(f, first, 4)?, 0) != DIRECTORY_HEADER_SIG {
        base = 0;
    }
    let start = u64::try_from(base + i128::from(end.offset))
        .map_err(|_| not_a_zip("central directory offset out of range"))?;
    f.seek(SeekFrom::Start(start)).map_err(read_error)?;
    let r = f;
    let cap = end.records.min(size / DIRECTORY_HEADER_LEN as u64);
    let mut entries = Vec::with_capacity(usize::try_from(cap).unwrap_or(0));
    for _ in 0..end.records {
        entries.push(read_directory_header(r, base)?);
    }
    // Go reads headers until one fails to parse and then compares the count
    // only modulo 65536: an entry past the count would be one Go sees.
    let mut sig = [0; 4];
    if r.read_exact(&mut sig).is_ok() && u32::from_le_bytes(sig) == DIRECTORY_HEADER_SIG {
        return Err(not_a_zip(
            "more central directory entries than the end record counts",
        ));
    }
    Ok(entries)
}

/// Go: archive/zip/reader.go readDirectoryHeader.
fn read_directory_header(r: &mut impl Read, base: i128) -> Result<Entry, ZipErrorKind> {
    let mut b = [0; DIRECTORY_HEADER_LEN];
    r.read_exact(&mut b).map_err(read_error)?;
    if u32_at(&b, 0) != DIRECTORY_HEADER_SIG {
        return Err(not_a_zip("bad central directory header"));
    }
    let lens = [u16_at(&b, 28), u16_at(&b, 30), u16_at(&b, 32)].map(usize::from);
    let mut var = vec![0; lens.iter().sum()];
    r.read_exact(&mut var).map_err(read_error)?;
    let extra = &var[lens[0]..lens[0] + lens[1]];
    let (mut csize, mut usize_, mut offset) = (
        u64::from(u32_at(&b, 20)),
        u64::from(u32_at(&b, 24)),
        u64::from(u32_at(&b, 42)),
    );
    let mut need = [
        usize_ == 0xffff_ffff,
        csize == 0xffff_ffff,
        offset == 0xffff_ffff,
    ];
    // Go: the zip64 extra (tag 1) holds, in order, each value that is maxed out.
    let mut x = extra;
    while x.len() >= 4 {
        let (tag, len) = (u16_at(x, 0), usize::from(u16_at(x, 2)));
        let Some(mut field) = x.get(4..4 + len) else {
            break;
        };
        x = &x[4 + len..];
        if tag != 1 {
            continue;
        }
        for (needed, value) in need.iter_mut().zip([&mut usize_, &mut csize, &mut offset]) {
            if std::mem::take(needed) {
                *value = u64_at(
                    field
                        .get(..8)
                        .ok_or_else(|| not_a_zip("short zip64 extra"))?,
                    0,
                );
                field = &field[8..];
            }
        }
    }
    // Go: an uncompressed size of 0xffffffff without zip64 is taken as is.
    if need[1] || need[2] {
        return Err(not_a_zip("missing zip64 extra"));
    }
    let header_offset = u64::try_from(i128::from(offset) + base)
        .map_err(|_| not_a_zip("local header offset out of range"))?;
    var.truncate(lens[0]);
    Ok(Entry {
        name: var,
        creator_version: u16_at(&b, 4),
        flags: u16_at(&b, 8),
        method: u16_at(&b, 10),
        compressed_size: csize,
        uncompressed_size: usize_,
        external_attrs: u32_at(&b, 38),
        header_offset,
    })
}

/// What phase 1 decided about an entry, in archive order.
enum Planned {
    /// Hashed as empty content, never read.
    Dir {
        name: String,
    },
    File {
        name: String,
        root_go_mod: bool,
    },
}

/// Phase 1: every rule that headers decide. Go: x/mod/zip/zip.go checkZip;
/// like Go, a size error wins over file errors, and among file errors the
/// first in archive order is reported.
fn check_entries(mv: &ModVer, entries: &[Entry]) -> Result<Vec<Planned>, ZipError> {
    let prefix = format!("{mv}/");
    let mut collisions = Collisions::default();
    let mut planned = Vec::with_capacity(entries.len());
    let mut first_error = None;
    let mut size_error = None;
    let mut total: u64 = 0;
    for entry in entries {
        let plan = check_entry(&prefix, entry, &mut collisions, &mut total);
        match plan {
            Ok(plan) => planned.push(plan),
            Err(ZipErrorKind::ContentTooLarge) => {
                size_error.get_or_insert(ZipErrorKind::ContentTooLarge);
            }
            Err(kind) if first_error.is_none() => first_error = Some((entry.label(), kind)),
            Err(_) => {}
        }
    }
    if let Some(kind) = size_error {
        return Err(ZipError {
            mv: mv.clone(),
            file: None,
            kind,
        });
    }
    match first_error {
        Some((file, kind)) => Err(ZipError {
            mv: mv.clone(),
            file: Some(file),
            kind,
        }),
        None => Ok(planned),
    }
}

/// Go: the body of checkZip's loop, plus our header-only rules (file type,
/// directory content, method, encryption) where checkFiles puts its own.
fn check_entry(
    prefix: &str,
    entry: &Entry,
    collisions: &mut Collisions,
    total: &mut u64,
) -> Result<Planned, ZipErrorKind> {
    let Some(rest) = entry.name.strip_prefix(prefix.as_bytes()) else {
        return Err(ZipErrorKind::NoPrefix {
            prefix: prefix.to_owned(),
        });
    };
    let rest = std::str::from_utf8(rest).map_err(|_| {
        ZipErrorKind::InvalidPath(Box::new(PathError {
            kind: "file",
            path: String::from_utf8_lossy(rest).into_owned(),
            reason: "invalid UTF-8".to_owned(),
        }))
    })?;
    let full = format!("{prefix}{rest}");
    if rest.is_empty() {
        // Go: the `module@version/` entry itself is skipped by checkZip and
        // still hashed by HashZip.
        check_dir_entry(entry)?;
        return Ok(Planned::Dir { name: full });
    }
    let (name, is_dir) = match rest.strip_suffix('/') {
        Some(dir) => (dir, true),
        None => (rest, false),
    };
    if path_clean(name) != name {
        return Err(ZipErrorKind::NotClean);
    }
    check_file_path(name).map_err(|e| ZipErrorKind::InvalidPath(Box::new(e)))?;
    collisions.check(name, is_dir)?;
    if is_dir {
        check_dir_entry(entry)?;
        return Ok(Planned::Dir { name: full });
    }
    check_file_entry(name, entry, total)?;
    Ok(Planned::File {
        name: full,
        root_go_mod: name == "go.mod",
    })
}

/// The rules for a file entry whose name passed; `name` is relative to the
/// module root.
fn check_file_entry(name: &str, entry: &Entry, total: &mut u64) -> Result<(), ZipErrorKind> {
    match file_type(entry) {
        FileType::Regular => {}
        FileType::Symlink => return Err(ZipErrorKind::Symlink),
        FileType::Dir | FileType::Other => return Err(ZipErrorKind::NotRegular),
    }
    let base = name.rsplit('/').next().unwrap_or(name);
    // Go: strings.EqualFold(base, "go.mod").
    if str_to_fold(base) == "go.mod" {
        if base != name {
            return Err(ZipErrorKind::GoModNotRoot);
        }
        if name != "go.mod" {
            return Err(ZipErrorKind::GoModCase);
        }
    }
    let size = entry.uncompressed_size;
    match total.checked_add(size).filter(|&t| t <= MAX_ZIP_FILE) {
        Some(t) => *total = t,
        None => return Err(ZipErrorKind::ContentTooLarge),
    }
    if name == "go.mod" && size > MAX_GO_MOD {
        return Err(ZipErrorKind::GoModTooLarge);
    }
    if name == "LICENSE" && size > MAX_LICENSE {
        return Err(ZipErrorKind::LicenseTooLarge);
    }
    if entry.method != 0 && entry.method != 8 {
        return Err(ZipErrorKind::UnsupportedMethod {
            method: entry.method,
        });
    }
    if entry.flags & 1 != 0 {
        return Err(ZipErrorKind::Encrypted);
    }
    Ok(())
}

/// A directory entry must be a directory and hold nothing.
/// Go: archive/zip File.Open: a name ending in `/` with a nonzero
/// uncompressed size is ErrFormat; its data is never read otherwise.
fn check_dir_entry(entry: &Entry) -> Result<(), ZipErrorKind> {
    match file_type(entry) {
        FileType::Symlink => return Err(ZipErrorKind::Symlink),
        FileType::Other => return Err(ZipErrorKind::NotRegular),
        FileType::Regular | FileType::Dir => {}
    }
    match entry.uncompressed_size {
        0 => Ok(()),
        size => Err(ZipErrorKind::DirWithContent { size }),
    }
}

#[derive(Debug, PartialEq, Eq)]
enum FileType {
    Regular,
    Dir,
    Symlink,
    Other,
}

/// Go: archive/zip/struct.go FileHeader.Mode, reduced to the file type.
fn file_type(entry: &Entry) -> FileType {
    const S_IFMT: u32 = 0o170000;
    match entry.creator_version >> 8 {
        // creatorUnix, creatorMacOSX: unixModeToFileMode.
        3 | 19 => match (entry.external_attrs >> 16) & S_IFMT {
            0o120000 => FileType::Symlink,
            0o040000 => FileType::Dir,
            0o010000 | 0o020000 | 0o060000 | 0o140000 => FileType::Other,
            _ => FileType::Regular,
        },
        // creatorFAT, creatorNTFS, creatorVFAT: msdosModeToFileMode.
        0 | 11 | 14 if entry.external_attrs & 0x10 != 0 => FileType::Dir,
        _ => FileType::Regular,
    }
}

/// Go: path.Clean.
fn path_clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut out: Vec<&str> = Vec::new();
    for elem in p.split('/') {
        match elem {
            "" | "." => {}
            ".." if out.last().is_some_and(|&last| last != "..") => {
                out.pop();
            }
            ".." if rooted => {}
            elem => out.push(elem),
        }
    }
    match (rooted, out.join("/")) {
        (true, joined) => format!("/{joined}"),
        (false, joined) if joined.is_empty() => ".".to_owned(),
        (false, joined) => joined,
    }
}

/// Go: x/mod/zip/zip.go collisionChecker, which keys whole paths by
/// `strToFold` and walks every parent; here each node is one path element
/// under its parent, so a deep path costs time and memory linear in its
/// length instead of quadratic.
#[derive(Default)]
struct Collisions {
    /// (parent node, folded element) → node; node 0 is the module root.
    nodes: HashMap<(u32, String), Node>,
    /// The names checked so far, so a collision can quote the other path.
    names: Vec<String>,
}

struct Node {
    id: u32,
    /// Which of `names` created the node, and where its element ends there.
    name: u32,
    end: u32,
    is_dir: bool,
}

impl Collisions {
    /// Go: collisionChecker.check(p, isDir), top-down: a zip is refused by
    /// the same entry, the message may name a different level of it.
    fn check(&mut self, name: &str, is_dir: bool) -> Result<(), ZipErrorKind> {
        let name_index = u32::try_from(self.names.len()).expect("names ≤ MAX_FILES");
        self.names.push(name.to_owned());
        let mut parent = 0;
        let mut end = 0;
        for elem in name.split('/') {
            end += elem.len();
            let path = &name[..end];
            let elem_is_dir = end < name.len() || is_dir;
            let key = (parent, str_to_fold(elem));
            if let Some(node) = self.nodes.get(&key) {
                let other = &self.names[node.name as usize][..node.end as usize];
                if other != path {
                    return Err(ZipErrorKind::Collision {
                        other: other.to_owned(),
                        path: path.to_owned(),
                    });
                }
                if node.is_dir != elem_is_dir {
                    return Err(ZipErrorKind::FileAndDir {
                        path: path.to_owned(),
                    });
                }
                if !elem_is_dir {
                    return Err(ZipErrorKind::Duplicate {
                        path: path.to_owned(),
                    });
                }
                parent = node.id;
            } else {
                if self.nodes.len() >= MAX_PATHS {
                    return Err(ZipErrorKind::TooManyPaths);
                }
                let id = u32::try_from(self.nodes.len() + 1).expect("nodes ≤ MAX_PATHS");
                let end32 = u32::try_from(end).expect("zip names are under 64 KiB");
                let node = Node {
                    id,
                    name: name_index,
                    end: end32,
                    is_dir: elem_is_dir,
                };
                self.nodes.insert(key, node);
                parent = id;
            }
            end += 1;
        }
        Ok(())
    }
}

/// Go: x/mod/zip/zip.go strToFold: equal for two strings iff
/// `strings.EqualFold` holds between them.
fn str_to_fold(s: &str) -> String {
    if s.bytes().all(|b| b.is_ascii() && !b.is_ascii_uppercase()) {
        return s.to_owned();
    }
    s.chars()
        .map(|mut r| {
            // SimpleFold cycles through the equivalent runes, upwards and
            // then wrapping: stop at the wrap.
            loop {
                let r0 = r;
                r = simple_fold(r0);
                if r <= r0 {
                    break;
                }
            }
            r.to_ascii_lowercase()
        })
        .collect()
}

/// Go: unicode.SimpleFold: the caseOrbit table, else ToLower if it changes
/// the rune, else ToUpper. Rust's case mappings stand in for Go's simple
/// ones. Compared rune by rune with Go 1.19's strToFold: identical for every
/// character of Unicode 13; later characters fold by Rust's newer tables,
/// as they do in newer Go.
fn simple_fold(c: char) -> char {
    if let Ok(i) = CASE_ORBIT.binary_search_by_key(&u32::from(c), |&(from, _)| from) {
        return char::from_u32(CASE_ORBIT[i].1).expect("the table holds scalar values");
    }
    let lower = only(c.to_lowercase(), c);
    if lower != c {
        return lower;
    }
    only(c.to_uppercase(), c)
}

/// The one character of a case mapping, or `c` if it has several.
fn only(mut mapped: impl Iterator<Item = char>, c: char) -> char {
    match (mapped.next(), mapped.next()) {
        (Some(one), None) => one,
        _ => c,
    }
}

/// Go 1.19: unicode/tables.go caseOrbit (Unicode 13.0.0).
#[rustfmt::skip]
const CASE_ORBIT: &[(u32, u32)] = &[
    (0x004B, 0x006B), (0x0053, 0x0073), (0x006B, 0x212A), (0x0073, 0x017F), (0x00B5, 0x039C), (0x00C5, 0x00E5),
    (0x00DF, 0x1E9E), (0x00E5, 0x212B), (0x0130, 0x0130), (0x0131, 0x0131), (0x017F, 0x0053), (0x01C4, 0x01C5),
    (0x01C5, 0x01C6), (0x01C6, 0x01C4), (0x01C7, 0x01C8), (0x01C8, 0x01C9), (0x01C9, 0x01C7), (0x01CA, 0x01CB),
    (0x01CB, 0x01CC), (0x01CC, 0x01CA), (0x01F1, 0x01F2), (0x01F2, 0x01F3), (0x01F3, 0x01F1), (0x0345, 0x0399),
    (0x0392, 0x03B2), (0x0395, 0x03B5), (0x0398, 0x03B8), (0x0399, 0x03B9), (0x039A, 0x03BA), (0x039C, 0x03BC),
    (0x03A0, 0x03C0), (0x03A1, 0x03C1), (0x03A3, 0x03C2), (0x03A6, 0x03C6), (0x03A9, 0x03C9), (0x03B2, 0x03D0),
    (0x03B5, 0x03F5), (0x03B8, 0x03D1), (0x03B9, 0x1FBE), (0x03BA, 0x03F0), (0x03BC, 0x00B5), (0x03C0, 0x03D6),
    (0x03C1, 0x03F1), (0x03C2, 0x03C3), (0x03C3, 0x03A3), (0x03C6, 0x03D5), (0x03C9, 0x2126), (0x03D0, 0x0392),
    (0x03D1, 0x03F4), (0x03D5, 0x03A6), (0x03D6, 0x03A0), (0x03F0, 0x039A), (0x03F1, 0x03A1), (0x03F4, 0x0398),
    (0x03F5, 0x0395), (0x0412, 0x0432), (0x0414, 0x0434), (0x041E, 0x043E), (0x0421, 0x0441), (0x0422, 0x0442),
    (0x042A, 0x044A), (0x0432, 0x1C80), (0x0434, 0x1C81), (0x043E, 0x1C82), (0x0441, 0x1C83), (0x0442, 0x1C84),
    (0x044A, 0x1C86), (0x0462, 0x0463), (0x0463, 0x1C87), (0x1C80, 0x0412), (0x1C81, 0x0414), (0x1C82, 0x041E),
    (0x1C83, 0x0421), (0x1C84, 0x1C85), (0x1C85, 0x0422), (0x1C86, 0x042A), (0x1C87, 0x0462), (0x1C88, 0xA64A),
    (0x1E60, 0x1E61), (0x1E61, 0x1E9B), (0x1E9B, 0x1E60), (0x1E9E, 0x00DF), (0x1FBE, 0x0345), (0x2126, 0x03A9),
    (0x212A, 0x004B), (0x212B, 0x00C5), (0xA64A, 0xA64B), (0xA64B, 0x1C88),
];

/// Phase 2: one streaming pass over the files through the `zip` crate,
/// after checking that it sees the archive phase 1 checked.
/// Go: dirhash.HashZip: every entry, directories included, by full name.
fn hash_entries(
    mv: &ModVer,
    zip: ZipSource,
    entries: &[Entry],
    planned: Vec<Planned>,
) -> Result<CheckedZip, ZipError> {
    let fail = |file: Option<&Entry>, kind| ZipError {
        mv: mv.clone(),
        file: file.map(Entry::label),
        kind,
    };
    let mut archive = zip::ZipArchive::new(zip).map_err(|e| fail(None, crate_error(e)))?;
    let (crate_index, distinct) = crate_indices(entries);
    if archive.len() != distinct {
        let why = "zip readers disagree on the number of entries";
        return Err(fail(None, not_a_zip(why)));
    }
    let mut checked = CheckedZip {
        h1: String::new(),
        files: 0,
        uncompressed_size: 0,
        go_mod: None,
    };
    let mut digests = Vec::with_capacity(planned.len());
    let mut buf = vec![0; 64 << 10];
    for ((entry, plan), index) in entries.iter().zip(planned).zip(crate_index) {
        let (name, root_go_mod) = match plan {
            Planned::Dir { name } => {
                digests.push((name, dirhash::digest(b"")));
                continue;
            }
            Planned::File { name, root_go_mod } => (name, root_go_mod),
        };
        let mut zf = archive
            .by_index(index)
            .map_err(|e| fail(Some(entry), crate_error(e)))?;
        let same = zf.name_raw() == entry.name.as_slice()
            && zf.size() == entry.uncompressed_size
            && zf.compressed_size() == entry.compressed_size
            && zf.header_start() == entry.header_offset;
        if !same {
            let why = "zip readers disagree about the entry";
            return Err(fail(Some(entry), not_a_zip(why)));
        }
        let mut go_mod = root_go_mod.then(Vec::new);
        let (digest, read) =
            hash_content(&mut zf, entry.uncompressed_size, &mut buf, go_mod.as_mut())
                .map_err(|kind| fail(Some(entry), kind))?;
        digests.push((name, digest));
        checked.files += 1;
        checked.uncompressed_size += read;
        checked.go_mod = checked.go_mod.or(go_mod);
    }
    // Names passed CheckFilePath and the prefix comes from a ModVer: no newlines.
    checked.h1 = dirhash::hash1(digests).expect("checked names hold no newline");
    Ok(checked)
}

/// Where the `zip` crate keeps each entry, and how many it keeps: one per
/// name, where the name was first seen. Only directories may repeat (Go:
/// collisionChecker), and phase 2 never reads them.
fn crate_indices(entries: &[Entry]) -> (Vec<usize>, usize) {
    let mut first_seen: HashMap<&[u8], usize> = HashMap::with_capacity(entries.len());
    let index = entries
        .iter()
        .map(|e| {
            let next = first_seen.len();
            *first_seen.entry(&e.name).or_insert(next)
        })
        .collect();
    (index, first_seen.len())
}

/// Reads one file's content, at most `declared` + 1 bytes of it, into a
/// SHA-256 (and `keep`, for the root go.mod, bounded by MAX_GO_MOD + 1).
/// Go: x/mod/zip/zip.go Unzip: `io.LimitedReader{N: size + 1}`.
fn hash_content(
    r: &mut impl Read,
    declared: u64,
    buf: &mut [u8],
    mut keep: Option<&mut Vec<u8>>,
) -> Result<(FileDigest, u64), ZipErrorKind> {
    let mut limited = r.take(declared.saturating_add(1));
    let mut sha = Sha256::new();
    let mut read: u64 = 0;
    loop {
        let n = match limited.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(content_error(e)),
        };
        sha.update(&buf[..n]);
        if let Some(keep) = keep.as_mut() {
            keep.extend_from_slice(&buf[..n]);
        }
        read += n as u64;
    }
    if read > declared {
        return Err(ZipErrorKind::LargerThanDeclared { declared });
    }
    if read < declared {
        let actual = read;
        return Err(ZipErrorKind::SmallerThanDeclared { declared, actual });
    }
    Ok((sha.finalize().into(), read))
}

/// An error from the `zip` crate while opening the archive or an entry.
fn crate_error(e: zip::result::ZipError) -> ZipErrorKind {
    match e {
        zip::result::ZipError::Io(e) => content_error(e),
        zip::result::ZipError::UnsupportedArchive(why) => not_a_zip(why),
        e => ZipErrorKind::NotAZip(e.to_string()),
    }
}

/// An I/O error while decompressing: bad data is the archive's fault
/// (quarantine), anything else the disk's (stop).
fn content_error(e: io::Error) -> ZipErrorKind {
    match e.kind() {
        // The zip crate's Crc32Reader reports a mismatch this way.
        io::ErrorKind::InvalidData if e.to_string().contains("checksum") => ZipErrorKind::Checksum,
        io::ErrorKind::InvalidData | io::ErrorKind::InvalidInput | io::ErrorKind::UnexpectedEof => {
            ZipErrorKind::NotAZip(e.to_string())
        }
        _ => ZipErrorKind::Io(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write as _;

    const PREFIX: &str = "example.com/m@v1.0.0/";

    fn mv() -> ModVer {
        ModVer::parse("example.com/m", "v1.0.0").unwrap()
    }

    /// One entry of a zip built by hand, so every header field can lie.
    #[derive(Clone)]
    struct E {
        name: Vec<u8>,
        /// The bytes stored in the archive (already compressed).
        data: Vec<u8>,
        method: u16,
        /// Declared uncompressed size and CRC-32.
        size: u64,
        crc: u32,
        creator: u16,
        attrs: u32,
        flags: u16,
        zip64: bool,
        /// Sizes and CRC after the data, zeros in the local header, as Go's
        /// archive/zip writes them.
        descriptor: bool,
    }

    /// A stored file under the module prefix, with honest headers.
    fn file(name: &str, content: &[u8]) -> E {
        raw(format!("{PREFIX}{name}").as_bytes(), content)
    }

    fn raw(name: &[u8], content: &[u8]) -> E {
        E {
            name: name.to_vec(),
            data: content.to_vec(),
            method: 0,
            size: content.len() as u64,
            crc: crc32(content),
            creator: 20,
            attrs: 0,
            flags: 0,
            zip64: false,
            descriptor: false,
        }
    }

    fn dir(name: &str) -> E {
        file(name, b"")
    }

    impl E {
        fn with(mut self, f: impl FnOnce(&mut E)) -> E {
            f(&mut self);
            self
        }

        /// The same content as Deflate made of stored blocks, which is
        /// what archive/zip or flate2 decode like any other deflate stream.
        fn deflated(self) -> E {
            let mut out = Vec::new();
            let mut chunks = self.data.chunks(0xffff).peekable();
            if chunks.peek().is_none() {
                out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
            }
            while let Some(chunk) = chunks.next() {
                let len = chunk.len() as u16;
                out.push(u8::from(chunks.peek().is_none()));
                out.extend_from_slice(&len.to_le_bytes());
                out.extend_from_slice(&(!len).to_le_bytes());
                out.extend_from_slice(chunk);
            }
            self.with(|e| (e.data, e.method) = (out, 8))
        }

        fn unix(self, mode: u32) -> E {
            self.with(|e| (e.creator, e.attrs) = (0x0314, mode << 16))
        }
    }

    /// Go: hash/crc32 ChecksumIEEE.
    fn crc32(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = (crc >> 1) ^ (0xedb8_8320 & (crc & 1).wrapping_neg());
            }
        }
        !crc
    }

    /// Little-endian fields, appended.
    #[derive(Default)]
    struct Le(Vec<u8>);

    impl Le {
        fn n(&mut self, value: u64, width: usize) -> &mut Le {
            self.0.extend_from_slice(&value.to_le_bytes()[..width]);
            self
        }
        fn b(&mut self, bytes: &[u8]) -> &mut Le {
            self.0.extend_from_slice(bytes);
            self
        }
    }

    /// Local headers, data (and descriptors), central directory, end record.
    fn build(entries: &[E]) -> Vec<u8> {
        let (mut out, mut cd) = (Le::default(), Le::default());
        for e in entries {
            let (offset, csize, crc) = (out.0.len() as u64, e.data.len() as u64, e.crc.into());
            let mut extra = Le::default();
            let (c32, u32_) = if e.zip64 {
                extra.n(1, 2).n(16, 2).n(e.size, 8).n(csize, 8);
                (u32::MAX.into(), u32::MAX.into())
            } else {
                (csize, e.size)
            };
            let local = if e.descriptor {
                [0; 3]
            } else {
                [crc, c32, u32_]
            };
            let flags = u64::from(e.flags | if e.descriptor { 8 } else { 0 });
            let (name, nlen, xlen) = (&e.name, e.name.len() as u64, extra.0.len() as u64);
            let (method, creator) = (e.method.into(), e.creator.into());
            out.b(b"PK\x03\x04")
                .n(45, 2)
                .n(flags, 2)
                .n(method, 2)
                .n(0x21 << 16, 4);
            out.n(local[0], 4)
                .n(local[1], 4)
                .n(local[2], 4)
                .n(nlen, 2)
                .n(xlen, 2);
            out.b(name).b(&extra.0).b(&e.data);
            if e.descriptor {
                out.b(b"PK\x07\x08").n(crc, 4).n(csize, 4).n(e.size, 4);
            }
            cd.b(b"PK\x01\x02")
                .n(creator, 2)
                .n(45, 2)
                .n(flags, 2)
                .n(method, 2)
                .n(0x21 << 16, 4);
            cd.n(crc, 4)
                .n(c32, 4)
                .n(u32_, 4)
                .n(nlen, 2)
                .n(xlen, 2)
                .n(0, 6);
            cd.n(e.attrs.into(), 4).n(offset, 4).b(name).b(&extra.0);
        }
        let (count, at, len) = (entries.len() as u64, out.0.len() as u64, cd.0.len() as u64);
        out.b(&cd.0)
            .b(b"PK\x05\x06")
            .n(0, 4)
            .n(count, 2)
            .n(count, 2);
        out.n(len, 4).n(at, 4).n(0, 2);
        out.0
    }

    /// Writes `bytes` to a temp file and checks it.
    fn check_bytes(bytes: &[u8]) -> Result<CheckedZip, ZipError> {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(bytes).unwrap();
        check_zip(&mv(), tmp.path())
    }

    /// Overwrites `len` bytes at `at` with a little-endian `value`.
    fn patch(mut bytes: Vec<u8>, at: usize, len: usize, value: u64) -> Vec<u8> {
        bytes[at..at + len].copy_from_slice(&value.to_le_bytes()[..len]);
        bytes
    }

    /// Offset of the central directory header of entry `i`.
    fn cd_header(bytes: &[u8], i: usize) -> usize {
        (0..bytes.len() - 4)
            .filter(|&p| &bytes[p..p + 4] == b"PK\x01\x02")
            .nth(i)
            .expect("entry exists")
    }

    /// Our own deflate through the `zip` crate's writer (real compression).
    fn crate_zip(files: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = ::zip::ZipWriter::new(io::Cursor::new(Vec::new()));
        let opts = ::zip::write::SimpleFileOptions::default()
            .compression_method(::zip::CompressionMethod::Deflated);
        for (name, content) in files {
            w.start_file(*name, opts).unwrap();
            w.write_all(content).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    fn expected_h1(files: &[(&str, &[u8])]) -> String {
        let digests = files
            .iter()
            .map(|(n, c)| (format!("{PREFIX}{n}"), dirhash::digest(c)));
        dirhash::hash1(digests.collect()).unwrap()
    }

    const GO_MOD: &[u8] = b"module example.com/m\n\ngo 1.19\n";

    fn valid() -> Vec<E> {
        vec![
            dir(""),
            file("go.mod", GO_MOD),
            dir("sub/"),
            file("sub/a.go", b"package sub\n"),
            file("LICENSE", b"MIT\n"),
        ]
    }

    #[test]
    fn valid_zips_hash_like_go() {
        let want = expected_h1(&[
            ("", b""),
            ("go.mod", GO_MOD),
            ("sub/", b""),
            ("sub/a.go", b"package sub\n"),
            ("LICENSE", b"MIT\n"),
        ]);
        let go_style: Vec<E> = valid()
            .into_iter()
            .map(|e| e.deflated().with(|e| e.descriptor = true))
            .collect();
        let zip64: Vec<E> = valid()
            .into_iter()
            .map(|e| e.with(|e| e.zip64 = true))
            .collect();
        let unix: Vec<E> = valid().into_iter().map(|e| e.unix(0o100644)).collect();
        for (what, entries) in [
            ("stored", valid()),
            ("go style", go_style),
            ("zip64", zip64),
            ("unix", unix),
        ] {
            let checked = check_bytes(&build(&entries)).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(checked.h1, want, "{what}");
            assert_eq!(checked.files, 3, "{what}");
            assert_eq!(
                checked.uncompressed_size,
                (GO_MOD.len() + 12 + 4) as u64,
                "{what}"
            );
            assert_eq!(checked.go_mod.as_deref(), Some(GO_MOD), "{what}");
        }
        let names = [&format!("{PREFIX}go.mod")[..], &format!("{PREFIX}a.go")];
        let zip = crate_zip(&[(names[0], GO_MOD), (names[1], b"package m\n")]);
        let checked = check_bytes(&zip).unwrap();
        assert_eq!(
            checked.h1,
            expected_h1(&[("go.mod", GO_MOD), ("a.go", b"package m\n")])
        );
        // No entries at all, and no go.mod: Go accepts both.
        let empty = check_bytes(&build(&[])).unwrap();
        assert_eq!(
            (empty.h1, empty.files, empty.go_mod),
            (dirhash::hash1(vec![]).unwrap(), 0, None)
        );
        // A directory may be listed twice (Go: collisionChecker), and a
        // Java-style directory with compressed bytes but no content is fine.
        let dirs = [
            dir("d/"),
            dir("d/"),
            dir("e/").deflated(),
            file("d/x", b"x"),
        ];
        check_bytes(&build(&dirs)).unwrap();
    }

    type Want = fn(&ZipErrorKind) -> bool;

    /// `case!(what, zip bytes, pattern [if guard])`: one hostile case.
    macro_rules! case {
        ($what:expr, $zip:expr, $($want:tt)+) => {
            ($what, $zip, (|k: &ZipErrorKind| matches!(k, $($want)+)) as Want)
        };
    }

    /// Checks every case and reports all mismatches at once.
    fn run_cases(cases: Vec<(&str, Vec<u8>, Want)>) {
        let mut failures = Vec::new();
        for (what, bytes, want) in cases {
            match check_bytes(&bytes) {
                Err(e) if want(&e.kind) => {}
                other => failures.push(format!("{what}: got {other:?}")),
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn hostile_entries() {
        use ZipErrorKind as K;
        // Deflate-marked data that is not deflate, with a declared size: a
        // size rule that fires here fired before anything was decompressed.
        let junk = |name, size| file(name, b"junk").with(|e| (e.method, e.size) = (8, size));
        let big = MAX_GO_MOD + 1;
        #[rustfmt::skip]
        let cases = vec![
            // Names. Go: x/mod/zip/zip.go checkZip, module.CheckFilePath.
            case!("outside prefix", build(&[raw(b"example.com/other@v1.0.0/a.go", b"")]), K::NoPrefix { .. }),
            case!("other version", build(&[raw(b"example.com/m@v1.0.1/a.go", b"")]), K::NoPrefix { .. }),
            case!("prefix-sharing version", build(&[raw(b"example.com/m@v1.0.0-rc/a.go", b"")]), K::NoPrefix { .. }),
            case!("nested module path", build(&[raw(b"example.com/m/sub@v1.0.0/a.go", b"")]), K::NoPrefix { .. }),
            case!("no slash", build(&[raw(b"example.com/m@v1.0.0", b"")]), K::NoPrefix { .. }),
            case!("absolute", build(&[raw(b"/etc/passwd", b"")]), K::NoPrefix { .. }),
            case!("absolute after prefix", build(&[file("/etc/passwd", b"")]), K::InvalidPath(_)),
            case!("dot-dot slip", build(&[file("../evil.go", b"")]), K::InvalidPath(e) if e.reason.contains("\"..\"")),
            case!("dot-dot inside", build(&[file("a/../../evil.go", b"")]), K::NotClean),
            case!("dot element", build(&[file("a/./b.go", b"")]), K::NotClean),
            case!("double slash", build(&[file("a//b.go", b"")]), K::NotClean),
            case!("bare slash", build(&[file("/", b"")]), K::NotClean),
            case!("backslash", build(&[file("a\\b.go", b"")]), K::InvalidPath(e) if e.reason.contains("invalid char")),
            case!("newline", build(&[file("a\nb.go", b"")]), K::InvalidPath(_)),
            case!("windows name", build(&[file("sub/aux.go", b"")]), K::InvalidPath(_)),
            case!("not utf-8", build(&[raw(&[PREFIX.as_bytes(), b"a\xff.go"].concat(), b"")]), K::InvalidPath(e) if e.reason == "invalid UTF-8"),
            // Collisions. Go: collisionChecker, strToFold.
            case!("case-fold duplicate", build(&[file("a.go", b""), file("A.go", b"")]), K::Collision { other, path } if other == "a.go" && path == "A.go"),
            case!("case-fold directory", build(&[file("d/a.go", b""), file("D/b.go", b"")]), K::Collision { path, .. } if path == "D"),
            case!("kelvin sign", build(&[file("K.go", b""), file("\u{212A}.go", b"")]), K::Collision { .. }),
            case!("long s", build(&[file("s.go", b""), file("\u{17F}.go", b"")]), K::Collision { .. }),
            case!("exact duplicate", build(&[file("a.go", b"1"), file("a.go", b"2")]), K::Duplicate { path } if path == "a.go"),
            case!("file and directory", build(&[file("a", b""), file("a/b.go", b"")]), K::FileAndDir { path } if path == "a"),
            case!("directory entry and file", build(&[dir("a/"), file("a", b"")]), K::FileAndDir { .. }),
            // go.mod: a nested module's go.mod is refused, not omitted as Create does.
            case!("nested go.mod", build(&[file("go.mod", b""), file("sub/go.mod", b"")]), K::GoModNotRoot),
            case!("nested GO.MOD", build(&[file("sub/GO.MOD", b"")]), K::GoModNotRoot),
            case!("root GO.MOD", build(&[file("GO.MOD", b"")]), K::GoModCase),
            case!("root Go.Mod", build(&[file("Go.Mod", b"")]), K::GoModCase),
            // File types. Go: the package doc; archive/zip FileHeader.Mode.
            case!("symlink", build(&[file("link", b"go.mod").unix(0o120777)]), K::Symlink),
            case!("symlink directory", build(&[dir("d/").unix(0o120777)]), K::Symlink),
            case!("fifo", build(&[file("fifo", b"").unix(0o010644)]), K::NotRegular),
            case!("device", build(&[file("dev", b"").unix(0o020644)]), K::NotRegular),
            case!("unix directory as file", build(&[file("d", b"").unix(0o040755)]), K::NotRegular),
            case!("dos directory as file", build(&[file("d", b"").with(|e| e.attrs = 0x10)]), K::NotRegular),
            case!("directory with content", build(&[dir("d/").with(|e| e.size = 5)]), K::DirWithContent { size: 5 }),
            case!("root entry with content", build(&[file("", b"x")]), K::DirWithContent { size: 1 }),
            // Sizes, from headers only.
            case!("bomb: declared total", build(&[junk("a", 300 << 20), junk("b", 300 << 20)]), K::ContentTooLarge),
            case!("bomb: one file", build(&[junk("a", MAX_ZIP_FILE + 1)]), K::ContentTooLarge),
            case!("bomb: u64 overflow", build(&[junk("a", u64::MAX).with(|e| e.zip64 = true)]), K::ContentTooLarge),
            case!("go.mod too large", build(&[junk("go.mod", big)]), K::GoModTooLarge),
            case!("LICENSE too large", build(&[junk("LICENSE", big)]), K::LicenseTooLarge),
            case!("bzip2", build(&[file("a.go", b"x").with(|e| e.method = 12)]), K::UnsupportedMethod { method: 12 }),
            case!("encrypted", build(&[file("a.go", b"x").with(|e| e.flags = 1)]), K::Encrypted),
            // Content that does not match its header.
            case!("declared smaller", build(&[file("a.go", b"0123456789").with(|e| e.size = 4)]), K::LargerThanDeclared { declared: 4 }),
            case!("declared larger", build(&[file("a.go", b"0123456789").with(|e| e.size = 100)]), K::SmallerThanDeclared { declared: 100, actual: 10 }),
            case!("deflate declared larger", build(&[file("a.go", b"0123456789").deflated().with(|e| e.size = 11)]), K::SmallerThanDeclared { .. }),
            case!("bad crc", build(&[file("a.go", b"package m\n").with(|e| e.crc = 1234)]), K::Checksum),
            case!("bad crc, go style", build(&[file("a.go", b"package m\n").deflated().with(|e| (e.crc, e.descriptor) = (1, true))]), K::Checksum),
            case!("corrupt deflate", build(&[file("a.go", b"\xff\xff\xff\xff").with(|e| e.method = 8)]), K::NotAZip(_)),
        ];
        run_cases(cases);
    }

    /// Puts a zip64 end record and locator before the end record, counting
    /// `records` entries, and marks the end record as zip64.
    fn with_zip64_end(bytes: &[u8], records: u64) -> Vec<u8> {
        let eocd = bytes.len() - DIRECTORY_END_LEN;
        let (cd_len, cd_offset) = (u32_at(bytes, eocd + 12), u32_at(bytes, eocd + 16));
        let mut out = bytes[..eocd].to_vec();
        let end64 = out.len() as u64;
        out.extend_from_slice(b"PK\x06\x06");
        out.extend_from_slice(&44u64.to_le_bytes());
        out.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        for field in [records, records, cd_len.into(), cd_offset.into()] {
            out.extend_from_slice(&u64::to_le_bytes(field));
        }
        out.extend_from_slice(b"PK\x06\x07\0\0\0\0");
        out.extend_from_slice(&end64.to_le_bytes());
        out.extend_from_slice(&1u32.to_le_bytes());
        out.extend_from_slice(&bytes[eocd..]);
        let at = out.len() - DIRECTORY_END_LEN;
        patch(patch(out, at + 8, 2, 0xffff), at + 10, 2, 0xffff)
    }

    #[test]
    fn hostile_archives() {
        use ZipErrorKind as K;
        let good = build(&valid());
        let eocd = good.len() - DIRECTORY_END_LEN;
        let n = valid().len() as u64;
        let go_mod = cd_header(&good, 1);
        let count = |bytes: &[u8], n| patch(patch(bytes.to_vec(), eocd + 8, 2, n), eocd + 10, 2, n);
        let garbage: Vec<u8> = (0..4096u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        #[rustfmt::skip]
        let cases = vec![
            case!("empty file", vec![], K::NotAZip(_)),
            case!("garbage", garbage.clone(), K::NotAZip(_)),
            case!("garbage after a local header", [&b"PK\x03\x04"[..], &garbage].concat(), K::NotAZip(_)),
            case!("truncated to half", good[..good.len() / 2].to_vec(), K::NotAZip(_)),
            case!("truncated end record", good[..good.len() - 1].to_vec(), K::NotAZip(_)),
            case!("comment length lies", patch(good.clone(), eocd + 20, 2, 100), K::NotAZip(_)),
            case!("central directory signature", patch(good.clone(), cd_header(&good, 0), 4, 0), K::NotAZip(_)),
            case!("central directory offset past end", patch(good.clone(), eocd + 16, 4, 1 << 30), K::NotAZip(_)),
            case!("count too low: an entry Go would see", count(&good, n - 1), K::NotAZip(w) if w.contains("more central directory entries")),
            case!("count too high", count(&good, n + 1), K::NotAZip(_)),
            case!("too many files", with_zip64_end(&good, MAX_FILES + 1), K::TooManyFiles { count } if *count == MAX_FILES + 1),
            case!("local header offset lies", patch(good.clone(), go_mod + 42, 4, 3), K::NotAZip(_)),
            case!("local header offset past end", patch(good.clone(), go_mod + 42, 4, 1 << 30), K::NotAZip(_)),
            // Stored data then runs into what follows it: more than declared.
            case!("compressed size past end", patch(good.clone(), go_mod + 20, 4, 1 << 30), K::LargerThanDeclared { .. }),
            case!("zip64 sizes without zip64 extra", patch(good.clone(), go_mod + 20, 4, u32::MAX.into()), K::NotAZip(w) if w.contains("zip64")),
        ];
        run_cases(cases);
        // The zip64 end record itself is read like Go reads it.
        let zip64 = check_bytes(&with_zip64_end(&good, n)).unwrap();
        assert_eq!(zip64, check_bytes(&good).unwrap());
    }

    #[test]
    fn errors_read_like_go() {
        let mv = ModVer::parse("rsc.io/quote", "v1.5.2").unwrap();
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&build(&[raw(b"rsc.io/quote@v1.5.2/GO.MOD", b"")]))
            .unwrap();
        let err = check_zip(&mv, tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "rsc.io/quote@v1.5.2: zip: rsc.io/quote@v1.5.2/GO.MOD: go.mod files must have lowercase names"
        );
        let err = check_bytes(&build(&[raw(b"x\x1b[2J", b"")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "example.com/m@v1.0.0: zip: x\\u{{1b}}[2J: path does not have prefix \"{PREFIX}\""
            )
        );
        // A size error wins over file errors, as in Go's CheckedFiles.Err.
        let err = check_bytes(&build(&[
            file("GO.MOD", b""),
            file("a", b"junk").with(|e| e.size = MAX_ZIP_FILE + 1),
        ]));
        assert_eq!(
            err.unwrap_err().to_string(),
            "example.com/m@v1.0.0: zip: total uncompressed size of module contents too large (max size is 524288000 bytes)"
        );
        let missing = check_zip(&mv, Path::new("/nonexistent/x.zip")).unwrap_err();
        assert!(matches!(missing.kind, ZipErrorKind::Io(_)), "{missing}");
    }

    #[test]
    fn zip_file_too_large_is_refused_unread() {
        // Sparse: no data is written, and none would be read.
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(MAX_ZIP_FILE + 1).unwrap();
        let err = check_zip(&mv(), tmp.path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "example.com/m@v1.0.0: zip: module zip file is too large (524288001 bytes; limit is 524288000 bytes)"
        );
    }

    #[test]
    fn deflate_bomb_stops_after_declared_size() {
        // 16 MiB of zeros deflate to ~16 KiB; the header claims 1 KiB.
        let zeros = vec![0; 16 << 20];
        let name = format!("{PREFIX}a.go");
        let honest = crate_zip(&[(&name, &zeros)]);
        assert!(honest.len() < 1 << 20);
        let lying = patch(honest.clone(), cd_header(&honest, 0) + 24, 4, 1024);
        let err = check_bytes(&lying).unwrap_err();
        assert!(
            matches!(
                err.kind,
                ZipErrorKind::LargerThanDeclared { declared: 1024 }
            ),
            "{err}"
        );
        assert_eq!(err.file.as_deref(), Some(name.as_str()));
        let checked = check_bytes(&honest).unwrap();
        assert_eq!(checked.uncompressed_size, 16 << 20);
    }

    #[test]
    fn mutations_never_panic() {
        // Every truncation, and single-byte corruptions all over the file:
        // each must come back as a value, never a panic.
        let good = build(&valid().into_iter().map(E::deflated).collect::<Vec<_>>());
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        let mut run = |bytes: &[u8]| {
            tmp.as_file().set_len(0).unwrap();
            tmp.as_file_mut().seek(SeekFrom::Start(0)).unwrap();
            tmp.write_all(bytes).unwrap();
            check_zip(&mv(), tmp.path())
        };
        for len in 0..good.len() {
            assert!(run(&good[..len]).is_err(), "truncated to {len}");
        }
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        for _ in 0..3000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let mut bytes = good.clone();
            let at = (seed % bytes.len() as u64) as usize;
            bytes[at] = (seed >> 32) as u8;
            let _ = run(&bytes);
        }
    }

    #[test]
    fn fold_and_clean_follow_go() {
        // Go: strings.EqualFold holds within each group and not across.
        let groups: &[&[&str]] = &[
            &["a", "A"],
            &["k", "K", "\u{212A}"],
            &["s", "S", "\u{17F}"],
            &["\u{B5}", "\u{39C}", "\u{3BC}"],
            &["\u{DF}", "\u{1E9E}"],
            &["\u{3A3}", "\u{3C2}", "\u{3C3}"],
            &["\u{1C4}", "\u{1C5}", "\u{1C6}"],
            &["\u{1F80}", "\u{1F88}"],
            &["i", "I"],
            &["\u{130}"],
            &["\u{131}"],
            &["ss"],
            &["\u{13A0}", "\u{AB70}"],
        ];
        for (i, group) in groups.iter().enumerate() {
            for a in *group {
                assert_eq!(
                    str_to_fold(a),
                    str_to_fold(group[0]),
                    "{a:?} ~ {:?}",
                    group[0]
                );
                for other in &groups[i + 1..] {
                    assert_ne!(
                        str_to_fold(a),
                        str_to_fold(other[0]),
                        "{a:?} !~ {:?}",
                        other[0]
                    );
                }
            }
        }
        assert_eq!(str_to_fold("Go.MOD"), "go.mod");
        // Go: path/path_test.go cleantests.
        let clean = [
            ("", "."),
            ("abc", "abc"),
            (".", "."),
            ("..", ".."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("abc/", "abc"),
            ("./", "."),
            ("../../", "../.."),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc//", "/abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("abc/../../././../def", "../../def"),
        ];
        for (path, want) in clean {
            assert_eq!(path_clean(path), want, "{path:?}");
        }
    }

    /// Content no compressor shrinks, so a zip of it is as large as it.
    fn noise(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                // xorshift64
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn zips_larger_than_the_window_hash_the_same() {
        // See: #11 (a zip above WINDOW is read through a moving window).
        let (a, b) = (noise(700_000, 1), noise(900_000, 2));
        let files: &[(&str, &[u8])] = &[("go.mod", GO_MOD), ("a.bin", &a), ("c/b.bin", &b)];
        let want = expected_h1(files);
        let stored: Vec<E> = files.iter().map(|(n, c)| file(n, c)).collect();
        let deflated: Vec<E> = files.iter().map(|(n, c)| file(n, c).deflated()).collect();
        let named: Vec<String> = files.iter().map(|(n, _)| format!("{PREFIX}{n}")).collect();
        let by_crate: Vec<(&str, &[u8])> = named
            .iter()
            .map(String::as_str)
            .zip(files.iter().map(|f| f.1))
            .collect();
        for (what, bytes) in [
            ("stored", build(&stored)),
            ("deflated", build(&deflated)),
            ("zip crate", crate_zip(&by_crate)),
        ] {
            assert!(bytes.len() > WINDOW, "{what}: {} bytes", bytes.len());
            let checked = check_bytes(&bytes).unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(checked.h1, want, "{what}");
            assert_eq!(checked.go_mod.as_deref(), Some(GO_MOD), "{what}");
            // A bad byte past the first window is still found.
            let mut bad = bytes.clone();
            let at = (0..bad.len())
                .rev()
                .find(|&i| bad[i..].starts_with(&b[b.len() - 64..]))
                .unwrap();
            bad[at] ^= 1;
            let e = check_bytes(&bad).expect_err(what);
            assert!(
                matches!(e.kind, ZipErrorKind::Checksum | ZipErrorKind::NotAZip(_)),
                "{what}: {e}"
            );
        }
    }

    #[test]
    fn zip_source_reads_what_the_file_holds() {
        let bytes = noise(2 * WINDOW + WINDOW / 2, 3);
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(&bytes).unwrap();
        let file = fs_err::File::open(tmp.path()).unwrap();
        let mut src = ZipSource::new(file, bytes.len() as u64).unwrap();
        let len = bytes.len();
        // (where to seek, how many bytes to read): inside a window, across
        // the boundary of one, backwards, at the end, past the end.
        let reads = [
            (SeekFrom::Start(0), 100),
            (SeekFrom::Start(WINDOW as u64 - 10), 20),
            (SeekFrom::Current(-5), 3 * WINDOW),
            (SeekFrom::Start(17), WINDOW + 1),
            (SeekFrom::End(-1024), 4096),
            (SeekFrom::End(0), 1),
            (SeekFrom::End(10), 1),
        ];
        let mut pos = 0usize;
        for (to, n) in reads {
            pos = src.seek(to).unwrap() as usize;
            let mut got = Vec::new();
            (&mut src).take(n as u64).read_to_end(&mut got).unwrap();
            let want = &bytes[pos.min(len)..(pos + n).min(len)];
            assert!(
                got == want,
                "{to:?} {n}: {} bytes, want {}",
                got.len(),
                want.len()
            );
        }
        assert_eq!(pos, len + 10);
        assert!(src.seek(SeekFrom::Current(-(len as i64) - 11)).is_err());
    }
}
