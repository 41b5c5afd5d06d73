//! go.sum and go.work.sum: the hashes a project's go command already trusts, read as a
//! second witness of what gomirror verified.
//!
//! Input: a file on disk (untrusted, possibly huge or hostile). Output: [`GoSum`], its lines
//! as checked [`ModVer`]s with the line number each came from, or a [`GoSumError`] naming
//! `file:line`.
//!
//! Go: cmd/go/internal/modfetch/fetch.go `readGoSum`, `checkModSum`:
//! - a line is `<path> <version>[/go.mod] <hash>`; blank lines are skipped; any other number
//!   of fields is `malformed go.sum: <file>:<line>: wrong number of fields N`;
//! - the hash of an empty go.mod (an old go bug) is dropped;
//! - only `h1:` hashes are compared; other prefixes are kept by go and never checked, so
//!   they are skipped here.
//!
//! Paths and versions are checked as a proxy serves them ([`ModVer::parse`]): a hostile
//! `../../etc` or `v1.0.0/../x` is an error of that line, never a name in the tree. The file
//! is streamed line by line with a cap per line ([`MAX_LINE`]) and in total ([`MAX_GO_SUM`]):
//! a 100 MB go.sum is refused without being held in memory.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use crate::module::{ModVer, ModVerError};
use crate::verify::dirhash;

/// Largest go.sum or go.work.sum read: far beyond any real project (kubernetes' is about
/// 200 KiB), and bounds what a hostile checkout can make a sync read.
pub const MAX_GO_SUM: u64 = 64 << 20;

/// Longest line: a module path is at most a few hundred bytes, a hash 47.
pub const MAX_LINE: usize = 4096;

/// One `h1:` line of a go.sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumLine {
    /// 1-based.
    pub line: usize,
    pub mv: ModVer,
    /// A `<version>/go.mod` line: the hash of the go.mod, not of the zip.
    pub go_mod: bool,
    /// `h1:<base64>`.
    pub hash: String,
}

/// A parsed go.sum or go.work.sum.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GoSum {
    pub file: PathBuf,
    pub lines: Vec<SumLine>,
}

/// Why a go.sum cannot be used; every variant names the file.
#[derive(Debug, thiserror::Error)]
pub enum GoSumError {
    #[error("reading {}", .file.display())]
    Read {
        file: PathBuf,
        #[source]
        cause: std::io::Error,
    },
    #[error("{}: not a regular file", .file.display())]
    NotAFile { file: PathBuf },
    #[error("{}: larger than {} MiB", .file.display(), MAX_GO_SUM >> 20)]
    TooLarge { file: PathBuf },
    #[error("{}:{line}: line longer than {MAX_LINE} bytes", .file.display())]
    LongLine { file: PathBuf, line: usize },
    /// Go's own words: `malformed go.sum:\n<file>:<line>: wrong number of fields N`.
    #[error("malformed go.sum:\n{}:{line}: wrong number of fields {fields}", .file.display())]
    Fields {
        file: PathBuf,
        line: usize,
        fields: usize,
    },
    #[error("{}:{line}: {error}", .file.display())]
    ModVer {
        file: PathBuf,
        line: usize,
        error: ModVerError,
    },
    #[error("{}:{line}: not UTF-8", .file.display())]
    Utf8 { file: PathBuf, line: usize },
}

/// Reads `file` if it exists (`None` if not): a project without a go.sum has no witness.
pub fn read_go_sum(file: &Path) -> Result<Option<GoSum>, GoSumError> {
    let read_err = |cause| GoSumError::Read {
        file: file.to_path_buf(),
        cause,
    };
    let meta = match std::fs::metadata(file) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    // A FIFO or a device (a go.sum linked to /dev/zero) would block or never end.
    if !meta.is_file() {
        return Err(GoSumError::NotAFile {
            file: file.to_path_buf(),
        });
    }
    if meta.len() > MAX_GO_SUM {
        return Err(GoSumError::TooLarge {
            file: file.to_path_buf(),
        });
    }
    let f = std::fs::File::open(file).map_err(read_err)?;
    parse_go_sum(file, f).map(Some)
}

/// Parses a go.sum from `reader`, streaming; `file` names it in errors.
pub fn parse_go_sum(file: &Path, reader: impl Read) -> Result<GoSum, GoSumError> {
    let empty_go_mod = dirhash::hash_go_mod(&dirhash::digest(b""));
    // One byte past the cap tells a file that grew while read from one that fits.
    let mut r = BufReader::new(reader.take(MAX_GO_SUM + 1));
    let mut total = 0u64;
    let mut buf = Vec::with_capacity(256);
    let mut lines = Vec::new();
    let mut lineno = 0;
    loop {
        buf.clear();
        lineno += 1;
        // Read at most one byte past the line cap, so a line without '\n' stays bounded.
        let n = (&mut r)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut buf)
            .map_err(|cause| GoSumError::Read {
                file: file.to_path_buf(),
                cause,
            })?;
        if n == 0 {
            break;
        }
        total += n as u64;
        if total > MAX_GO_SUM {
            return Err(GoSumError::TooLarge {
                file: file.to_path_buf(),
            });
        }
        if buf.last() == Some(&b'\n') {
            buf.pop();
        } else if n > MAX_LINE {
            return Err(GoSumError::LongLine {
                file: file.to_path_buf(),
                line: lineno,
            });
        }
        if let Some(l) = parse_line(file, lineno, &buf, &empty_go_mod)? {
            lines.push(l);
        }
    }
    Ok(GoSum {
        file: file.to_path_buf(),
        lines,
    })
}

/// One line: `None` for a blank line, a non-`h1:` hash or the empty go.mod's hash.
fn parse_line(
    file: &Path,
    line: usize,
    raw: &[u8],
    empty_go_mod: &str,
) -> Result<Option<SumLine>, GoSumError> {
    let text = std::str::from_utf8(raw).map_err(|_| GoSumError::Utf8 {
        file: file.to_path_buf(),
        line,
    })?;
    // Go: strings.Fields.
    let f: Vec<&str> = text.split_whitespace().collect();
    if f.is_empty() {
        return Ok(None);
    }
    if f.len() != 3 {
        return Err(GoSumError::Fields {
            file: file.to_path_buf(),
            line,
            fields: f.len(),
        });
    }
    let (path, version, hash) = (f[0], f[1], f[2]);
    if hash == empty_go_mod || !hash.starts_with("h1:") {
        return Ok(None);
    }
    let (version, go_mod) = match version.strip_suffix("/go.mod") {
        Some(v) => (v, true),
        None => (version, false),
    };
    let mv = ModVer::parse(path, version).map_err(|error| GoSumError::ModVer {
        file: file.to_path_buf(),
        line,
        error,
    })?;
    Ok(Some(SumLine {
        line,
        mv,
        go_mod,
        hash: hash.to_owned(),
    }))
}

/// The go.sum files the go command reads for a project: each main module's go.sum, and in a
/// workspace the go.work.sum beside go.work. Go: modload.initGoSum / modfetch.GoSumFile.
pub fn project_sums(project: &super::Project) -> Result<Vec<GoSum>, GoSumError> {
    let mut files: Vec<PathBuf> = project.mains.iter().map(|m| m.dir.join("go.sum")).collect();
    if let Some((work, _)) = &project.work {
        files.push(work.with_file_name("go.work.sum"));
    }
    let mut out = Vec::new();
    for f in files {
        if let Some(s) = read_go_sum(&f)? {
            out.push(s);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "h1:cTNQFgQNJ24SSHf5BBcJnORFRQbOn/xpqQhsX1/PHgk=";

    fn parse(text: &str) -> Result<GoSum, String> {
        parse_go_sum(Path::new("go.sum"), text.as_bytes()).map_err(|e| e.to_string())
    }

    /// A case's want: `(module@version, go_mod)` per kept line, or an error's start.
    type Want = Result<Vec<(&'static str, bool)>, &'static str>;

    #[test]
    fn lines() {
        // Go: cmd/go/internal/modfetch/fetch.go readGoSum.
        let empty = dirhash::hash_go_mod(&dirhash::digest(b""));
        let cases: Vec<(String, Want)> = vec![
            (
                format!("rsc.io/quote v1.5.2 {H}\n"),
                Ok(vec![("rsc.io/quote@v1.5.2", false)]),
            ),
            (
                format!("rsc.io/quote v1.5.2/go.mod {H}"),
                Ok(vec![("rsc.io/quote@v1.5.2", true)]),
            ),
            (
                format!("\n  \n\trsc.io/quote  v1.5.2\t{H}  \n"),
                Ok(vec![("rsc.io/quote@v1.5.2", false)]),
            ),
            (
                format!("rsc.io/quote v1.5.2 h2:abc\nrsc.io/quote v1.5.2/go.mod {empty}\n"),
                Ok(vec![]),
            ),
            (
                "rsc.io/quote v1.5.2\n".into(),
                Err("malformed go.sum:\ngo.sum:1: wrong number of fields 2"),
            ),
            (
                format!("\nrsc.io/quote v1.5.2 {H} x\n"),
                Err("malformed go.sum:\ngo.sum:2: wrong number of fields 4"),
            ),
            (
                format!("../../etc v1.0.0 {H}\n"),
                Err("go.sum:1: malformed module path \"../../etc\""),
            ),
            (
                format!("example.com/x v1.0.0/../../x {H}\n"),
                Err("go.sum:1: example.com/x@v1.0.0/../../x: invalid version"),
            ),
            (
                format!("example.com/x v1.0 {H}\n"),
                Err("go.sum:1: example.com/x@v1.0: invalid version"),
            ),
            (
                format!("example.com/x/v2 v1.0.0 {H}\n"),
                Err("go.sum:1: example.com/x/v2@v1.0.0: invalid version"),
            ),
            (
                format!("a\u{0}b.com/x v1.0.0 {H}\n"),
                Err("go.sum:1: malformed module path"),
            ),
        ];
        for (text, want) in cases {
            let got = parse(&text).map(|s| {
                s.lines
                    .iter()
                    .map(|l| (l.mv.to_string(), l.go_mod))
                    .collect::<Vec<_>>()
            });
            match (got, want) {
                (Ok(got), Ok(want)) => {
                    let want: Vec<(String, bool)> =
                        want.into_iter().map(|(m, g)| (m.to_owned(), g)).collect();
                    assert_eq!(got, want, "{text:?}");
                }
                (Err(got), Err(want)) => assert!(got.starts_with(want), "{text:?}: {got}"),
                (got, want) => panic!("{text:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn line_numbers_and_invalid_utf8() {
        let s = parse(&format!(
            "\na.example/m v1.0.0 {H}\n\nb.example/m v1.0.0/go.mod {H}\n"
        ))
        .unwrap();
        let nums: Vec<usize> = s.lines.iter().map(|l| l.line).collect();
        assert_eq!(nums, [2, 4]);
        let e = parse_go_sum(Path::new("go.sum"), &b"a.example/m v1.0.0 \xff\n"[..]).unwrap_err();
        assert_eq!(e.to_string(), "go.sum:1: not UTF-8");
    }

    #[test]
    fn caps() {
        let long = format!("a.example/{} v1.0.0 {H}\n", "x".repeat(MAX_LINE));
        let e = parse(&long).unwrap_err();
        assert_eq!(e, format!("go.sum:1: line longer than {MAX_LINE} bytes"));
        // Streamed: the reader is endless, the parser stops at the cap.
        struct Blank;
        impl Read for Blank {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = buf.len().min(4000);
                buf[..n].fill(b' ');
                buf[n - 1] = b'\n';
                Ok(n)
            }
        }
        let e = parse_go_sum(Path::new("go.sum"), Blank).unwrap_err();
        assert_eq!(e.to_string(), "go.sum: larger than 64 MiB");

        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("go.sum");
        let f = std::fs::File::create(&big).unwrap();
        f.set_len(100 << 20).unwrap(); // sparse: takes no disk
        let e = read_go_sum(&big).unwrap_err().to_string();
        assert_eq!(e, format!("{}: larger than 64 MiB", big.display()));
        assert!(read_go_sum(&tmp.path().join("none")).unwrap().is_none());
        let e = read_go_sum(tmp.path()).unwrap_err().to_string();
        assert!(e.ends_with(": not a regular file"), "{e}");
    }
}
