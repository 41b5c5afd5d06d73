//! Module zips built in code: valid ones, big synthetic ones, and hostile ones.
//!
//! Output: zip bytes (`Vec<u8>`) or a whole [`ModuleFiles`]. Nothing binary is committed.
//! The hostile builders each break exactly one rule of x/mod/zip (`G/cmd/vendor/golang.org/x/mod/
//! zip/zip.go` checkZip) on top of a valid `go.mod` + `x.go`, so a test can expect one error.
//! Lies the `zip` crate refuses to write (duplicate names, wrong sizes) are patched into the
//! header bytes afterwards, in both the local header and the central directory.
//!
//! Note: checkZip itself ignores file modes, so the symlink case is rejected only by a mirror
//! that follows PROTOCOL.md ("no symlinks"); Go's Unzip would write it as a regular file.

// Support code: each test uses a different part of it.
#![allow(dead_code)]

use std::collections::HashSet;
use std::io::{Cursor, Write};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::upstream::ModuleFiles;

/// 500 MiB: x/mod zip MaxZipFile, the limit on the whole zip and on its uncompressed contents.
pub const MAX_ZIP_FILE: u64 = 500 << 20;

/// Writes zip entries in order; allows exact duplicate names, which the `zip` crate refuses.
pub struct ZipBuilder {
    w: ZipWriter<Cursor<Vec<u8>>>,
    used: HashSet<String>,
    /// (entry index, real name) for duplicates written under a same-length stand-in name.
    renames: Vec<(usize, String)>,
    count: usize,
}

impl Default for ZipBuilder {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl ZipBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Pre-sizes the buffer so a big zip is not copied while it grows.
    pub fn with_capacity(bytes: usize) -> Self {
        let w = ZipWriter::new(Cursor::new(Vec::with_capacity(bytes)));
        ZipBuilder {
            w,
            used: HashSet::new(),
            renames: Vec::new(),
            count: 0,
        }
    }

    /// Adds a deflated file, as Go's `zip.Writer.Create` does.
    pub fn file(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(name, data, CompressionMethod::Deflated)
    }

    /// Adds a stored (uncompressed) file: fast for incompressible filler.
    pub fn stored(&mut self, name: &str, data: &[u8]) -> &mut Self {
        self.add(name, data, CompressionMethod::Stored)
    }

    /// Adds a symlink entry (S_IFLNK in the external attributes) whose content is `target`.
    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let name = self.claim(name);
        self.w
            .add_symlink(name, target, SimpleFileOptions::default())
            .expect("writing a zip to memory cannot fail");
        self
    }

    pub fn finish(self) -> Vec<u8> {
        let mut zip = self
            .w
            .finish()
            .expect("writing a zip to memory cannot fail")
            .into_inner();
        for (index, name) in &self.renames {
            patch_name(&mut zip, *index, name.as_bytes());
        }
        zip
    }

    fn add(&mut self, name: &str, data: &[u8], method: CompressionMethod) -> &mut Self {
        let name = self.claim(name);
        let opts = SimpleFileOptions::default()
            .compression_method(method)
            .large_file(false);
        self.w
            .start_file(name, opts)
            .expect("writing a zip to memory cannot fail");
        self.w
            .write_all(data)
            .expect("writing a zip to memory cannot fail");
        self
    }

    /// The name to write now: `name` itself, or a fresh same-length stand-in if it is taken.
    fn claim(&mut self, name: &str) -> String {
        let index = self.count;
        self.count += 1;
        if self.used.insert(name.to_string()) {
            return name.to_string();
        }
        let stand_in = (0u64..)
            .map(|n| format!("{n:~>width$}", width = name.len()))
            .find(|s| s.len() == name.len() && !self.used.contains(s))
            .expect("a free stand-in name exists");
        self.used.insert(stand_in.clone());
        self.renames.push((index, name.to_string()));
        stand_in
    }
}

/// A deflated module zip: every file name gets `prefix` (`"path@version/"`) in front.
pub fn module_zip(prefix: &str, files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut z = ZipBuilder::new();
    for (name, data) in files {
        z.file(&format!("{prefix}{name}"), data);
    }
    z.finish()
}

/// A valid module of `n_files` files (at least `go.mod` and `x.go`) and about
/// `approx_total_bytes` of content; filler under `data/` is pseudo-random and stored, so the
/// zip is about that size. Content is deterministic for a given path and version.
pub fn synthetic_module(
    path: &str,
    version: &str,
    n_files: usize,
    approx_total_bytes: usize,
) -> ModuleFiles {
    let prefix = format!("{path}@{version}/");
    let go_mod = format!("module {path}\n\ngo 1.19\n");
    let fillers = n_files.saturating_sub(2);
    let each = approx_total_bytes.checked_div(fillers).unwrap_or(0);
    let mut rng = XorShift::seeded(&prefix);
    let mut z = ZipBuilder::with_capacity(approx_total_bytes + 128 * n_files + 1024);
    z.file(&format!("{prefix}go.mod"), go_mod.as_bytes());
    z.file(&format!("{prefix}x.go"), b"package x\n");
    let mut buf = vec![0u8; each];
    for i in 0..fillers {
        rng.fill(&mut buf);
        z.stored(&format!("{prefix}data/f{i:06}.dat"), &buf);
    }
    let info = format!(r#"{{"Version":"{version}","Time":"2023-01-01T00:00:00Z"}}"#);
    ModuleFiles::new(path, version, info, go_mod, z.finish())
}

/// xorshift64*: fast, deterministic, incompressible enough for deflate.
struct XorShift(u64);

impl XorShift {
    fn seeded(seed: &str) -> Self {
        // FNV-1a; `| 1` keeps the state non-zero.
        let h = seed.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        XorShift(h | 1)
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let x = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
}

/// The valid part every hostile zip starts with.
fn base(prefix: &str) -> ZipBuilder {
    let mut z = ZipBuilder::new();
    let module = prefix.split('@').next().unwrap_or_default();
    z.file(
        &format!("{prefix}go.mod"),
        format!("module {module}\n").as_bytes(),
    );
    z.file(&format!("{prefix}x.go"), b"package x\n");
    z
}

fn with_extra(prefix: &str, name: &str, data: &[u8]) -> Vec<u8> {
    let mut z = base(prefix);
    z.file(name, data);
    z.finish()
}

/// `<prefix>../evil`: inside the prefix by string, outside the module once cleaned.
pub fn zip_slip(prefix: &str) -> Vec<u8> {
    with_extra(prefix, &format!("{prefix}../evil"), b"evil\n")
}

/// `/etc/x`: an absolute name.
pub fn absolute_name(prefix: &str) -> Vec<u8> {
    with_extra(prefix, "/etc/x", b"evil\n")
}

/// `other.example/m@v1.0.0/x.go`: a name without the module prefix.
pub fn outside_prefix(prefix: &str) -> Vec<u8> {
    with_extra(prefix, "other.example/m@v1.0.0/x.go", b"package x\n")
}

/// `a.go` and `A.go`: equal under case folding.
pub fn case_fold_duplicate(prefix: &str) -> Vec<u8> {
    let mut z = base(prefix);
    z.file(&format!("{prefix}a.go"), b"package x\n");
    z.file(&format!("{prefix}A.go"), b"package x // upper\n");
    z.finish()
}

/// `a.go` twice, with different contents.
pub fn exact_duplicate(prefix: &str) -> Vec<u8> {
    let mut z = base(prefix);
    z.file(&format!("{prefix}a.go"), b"package x\n");
    z.file(&format!("{prefix}a.go"), b"package x // second\n");
    z.finish()
}

/// `sub/go.mod`: "go.mod file not in module root directory".
pub fn nested_go_mod(prefix: &str) -> Vec<u8> {
    let mut z = base(prefix);
    z.file(&format!("{prefix}sub/go.mod"), b"module example.com/sub\n");
    z.file(&format!("{prefix}sub/s.go"), b"package sub\n");
    z.finish()
}

/// `GO.MOD` at the root and no `go.mod`: "go.mod files must have lowercase names".
pub fn go_mod_wrong_case(prefix: &str) -> Vec<u8> {
    let mut z = ZipBuilder::new();
    z.file(&format!("{prefix}GO.MOD"), b"module example.com/m\n");
    z.file(&format!("{prefix}x.go"), b"package x\n");
    z.finish()
}

/// `bad\nname.go`: CheckFilePath rejects it and dirhash cannot hash it.
pub fn newline_name(prefix: &str) -> Vec<u8> {
    with_extra(prefix, &format!("{prefix}bad\nname.go"), b"package x\n")
}

/// `link` → `../../../../etc/passwd`, a symlink entry.
pub fn symlink(prefix: &str) -> Vec<u8> {
    let mut z = base(prefix);
    z.symlink(&format!("{prefix}link"), "../../../../etc/passwd");
    z.finish()
}

/// `lie.txt` whose headers declare `declared` uncompressed bytes while it inflates to `actual`.
pub fn declared_size_lie(prefix: &str, declared: u32, actual: &[u8]) -> Vec<u8> {
    let mut zip = with_extra(prefix, &format!("{prefix}lie.txt"), actual);
    patch_declared_size(&mut zip, 2, declared);
    zip
}

/// Declares 10 bytes, holds 100.
pub fn size_lie_more(prefix: &str) -> Vec<u8> {
    declared_size_lie(prefix, 10, &[b'm'; 100])
}

/// Declares 10 bytes, holds 5.
pub fn size_lie_less(prefix: &str) -> Vec<u8> {
    declared_size_lie(prefix, 10, b"less\n")
}

/// Two tiny files whose headers declare 300 MiB each: 600 MiB > [`MAX_ZIP_FILE`] in total,
/// while each alone is under the limit.
pub fn declared_size_bomb(prefix: &str) -> Vec<u8> {
    let mut z = base(prefix);
    z.file(&format!("{prefix}big1.bin"), b"1");
    z.file(&format!("{prefix}big2.bin"), b"2");
    let mut zip = z.finish();
    patch_declared_size(&mut zip, 2, 300 << 20);
    patch_declared_size(&mut zip, 3, 300 << 20);
    zip
}

/// A valid zip cut in half: no central directory.
pub fn truncated(prefix: &str) -> Vec<u8> {
    let zip = base(prefix).finish();
    zip[..zip.len() / 2].to_vec()
}

/// Starts like a zip, is not one.
pub fn garbage() -> Vec<u8> {
    let mut v = b"PK\x03\x04".to_vec();
    v.extend(b"this is not a zip file, only its first four bytes are\n".repeat(20));
    v
}

/// Byte offsets of one entry's headers.
struct EntryOffsets {
    central: usize,
    local: usize,
}

/// Walks the central directory of a zip we wrote ourselves (no zip64, no comment games).
fn entries(zip: &[u8]) -> Vec<EntryOffsets> {
    let eocd = (0..=zip.len() - 22)
        .rev()
        .find(|&i| zip[i..i + 4] == *b"PK\x05\x06")
        .expect("end of central directory");
    let count = u16_at(zip, eocd + 10);
    let mut at = u32_at(zip, eocd + 16) as usize;
    let mut out = Vec::new();
    for _ in 0..count {
        assert_eq!(zip[at..at + 4], *b"PK\x01\x02", "central directory entry");
        let local = u32_at(zip, at + 42) as usize;
        out.push(EntryOffsets { central: at, local });
        at += 46 + u16_at(zip, at + 28) + u16_at(zip, at + 30) + u16_at(zip, at + 32);
    }
    out
}

fn u16_at(b: &[u8], i: usize) -> usize {
    usize::from(u16::from_le_bytes([b[i], b[i + 1]]))
}

fn u32_at(b: &[u8], i: usize) -> u32 {
    u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]])
}

/// (name, declared uncompressed size) of every central directory entry, duplicates included
/// (the `zip` crate's reader keeps only one entry per name).
pub fn declared_entries(zip: &[u8]) -> Vec<(String, u64)> {
    entries(zip)
        .iter()
        .map(|e| {
            let len = u16_at(zip, e.central + 28);
            let name = &zip[e.central + 46..e.central + 46 + len];
            let size = u32_at(zip, e.central + 24);
            (String::from_utf8_lossy(name).into_owned(), u64::from(size))
        })
        .collect()
}

/// Rewrites entry `index`'s declared uncompressed size in both headers.
pub fn patch_declared_size(zip: &mut [u8], index: usize, size: u32) {
    let e = &entries(zip)[index];
    let (central, local) = (e.central, e.local);
    zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    zip[local + 22..local + 26].copy_from_slice(&size.to_le_bytes());
}

/// Rewrites entry `index`'s name in both headers; `name` must have the old name's length.
pub fn patch_name(zip: &mut [u8], index: usize, name: &[u8]) {
    let e = &entries(zip)[index];
    let (central, local) = (e.central, e.local);
    assert_eq!(
        u16_at(zip, central + 28),
        name.len(),
        "patched name must keep its length"
    );
    zip[central + 46..central + 46 + name.len()].copy_from_slice(name);
    zip[local + 30..local + 30 + name.len()].copy_from_slice(name);
}
