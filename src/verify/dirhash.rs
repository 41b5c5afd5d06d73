//! The `h1:` hash recorded in go.sum and the checksum database.
//!
//! Input: (file name, SHA-256 of the file's content) pairs, or a go.mod's
//! bytes. Output: `h1:` + standard base64 of the SHA-256 of a summary.
//!
//! Go: x/mod/sumdb/dirhash/hash.go Hash1: the summary has one line per file,
//! sorted bytewise by name, `hex(sha256(content)) + "  " + name + "\n"`, as
//! `find . -type f | sort | sha256sum` would print it. A zip is hashed with
//! its entry names, `module@version/` prefix included (dirhash.HashZip; see
//! `verify::zip`, which hashes in the same pass as its checks). A go.mod is
//! hashed as a one-file tree named `go.mod` (cmd/go/internal/modfetch/fetch.go
//! goModSum).

use base64::Engine as _;
use sha2::{Digest, Sha256};
use std::io::Write as _;

/// A SHA-256 digest of one file's content.
pub type FileDigest = [u8; 32];

/// Go: x/mod/sumdb/dirhash/hash.go Hash1: a line of the summary is ended by
/// `\n`, so a name holding one would make two summaries equal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dirhash: filenames with newlines are not supported")]
pub struct NewlineError;

/// Go: x/mod/sumdb/dirhash/hash.go Hash1, over digests already computed.
pub fn hash1(mut files: Vec<(String, FileDigest)>) -> Result<String, NewlineError> {
    // Go: sort.Strings compares bytes, as Rust's str Ord does.
    files.sort_unstable_by(|a, b| a.0.cmp(&b.0));
    let mut summary = Sha256::new();
    for (name, digest) in &files {
        if name.contains('\n') {
            return Err(NewlineError);
        }
        writeln!(summary, "{}  {name}", hex::encode(digest))
            .expect("writing into a hasher cannot fail");
    }
    Ok(format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary.finalize())
    ))
}

/// The `/go.mod` hash of a go.sum line.
/// Go: cmd/go/internal/modfetch/fetch.go goModSum: `Hash1([]string{"go.mod"}, ...)`.
pub fn hash_go_mod(content: &[u8]) -> String {
    hash1(vec![("go.mod".to_owned(), Sha256::digest(content).into())])
        .expect("\"go.mod\" holds no newline")
}

/// The SHA-256 of `content`, as [`hash1`] takes it.
pub fn digest(content: &[u8]) -> FileDigest {
    Sha256::digest(content).into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::path::PathBuf;

    #[test]
    fn hash1_vectors() {
        // Go: x/mod/sumdb/dirhash/hash_test.go TestHash1: the summary is
        // built by hand here and hashed independently.
        let h = |files: &[(&str, &[u8])]| {
            hash1(
                files
                    .iter()
                    .map(|(n, c)| (n.to_string(), digest(c)))
                    .collect(),
            )
        };
        let manual = |lines: &str| {
            format!(
                "h1:{}",
                base64::engine::general_purpose::STANDARD.encode(Sha256::digest(lines))
            )
        };
        let (a, b) = (hex::encode(digest(b"data1")), hex::encode(digest(b"data2")));
        type Files<'a> = &'a [(&'a str, &'a [u8])];
        let cases: &[(Files, String)] = &[
            (&[], manual("")),
            (&[("xyz", b"data1")], manual(&format!("{a}  xyz\n"))),
            // Sorted bytewise: "B" < "a", "a" < "a/b" < "ab".
            (
                &[("ab", b"data2"), ("a", b"data1"), ("B", b"data2")],
                manual(&format!("{b}  B\n{a}  a\n{b}  ab\n")),
            ),
            (
                &[("a/b", b"data1"), ("a", b"data2")],
                manual(&format!("{b}  a\n{a}  a/b\n")),
            ),
        ];
        for (files, want) in cases {
            assert_eq!(h(files).as_deref(), Ok(want.as_str()), "{files:?}");
        }
        assert_eq!(h(&[("a\nb", b"x")]), Err(NewlineError));
        // The empty tree, a value any implementation must reproduce.
        assert_eq!(
            h(&[]).unwrap(),
            "h1:47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    /// Go's module corpus, or `None` with a message naming what is missing.
    /// Under CI a missing corpus is a failure, never a silent skip.
    pub(crate) fn go_testdata() -> Option<PathBuf> {
        let dir = PathBuf::from("/usr/share/go-1.19/src/cmd/go/testdata");
        if dir.join("mod").is_dir() {
            return Some(dir);
        }
        assert!(
            std::env::var_os("CI").is_none(),
            "{} missing: install golang-go (Go 1.19)",
            dir.display()
        );
        eprintln!("skipping: {} missing (install golang-go)", dir.display());
        None
    }

    /// Go: internal/txtar Parse: `(name, data)` of each file in the archive.
    pub(crate) fn parse_txtar(text: &[u8]) -> Vec<(String, Vec<u8>)> {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        let mut current: Option<(String, Vec<u8>)> = None;
        for line in text.split_inclusive(|&b| b == b'\n') {
            let trimmed = line.strip_suffix(b"\n").unwrap_or(line);
            let name = trimmed
                .strip_prefix(b"-- ")
                .and_then(|rest| rest.strip_suffix(b" --"))
                .map(|n| String::from_utf8_lossy(n).trim().to_owned())
                .filter(|n| !n.is_empty());
            match (name, &mut current) {
                (Some(name), _) => files.extend(current.replace((name, Vec::new()))),
                (None, Some((_, data))) => data.extend_from_slice(line),
                (None, None) => {}
            }
        }
        if let Some((name, mut data)) = current {
            // Go: txtar fixNL: the last file gets a final newline.
            if !data.is_empty() && !data.ends_with(b"\n") {
                data.push(b'\n');
            }
            files.push((name, data));
        }
        files
    }

    /// The most frequent `h1:` value Go's test scripts record for `key`
    /// (`"path version"` or `"path version/go.mod"`): some scripts hold
    /// deliberately wrong values, never the most common one.
    pub(crate) fn script_sum(testdata: &std::path::Path, key: &str) -> String {
        let mut counts: HashMap<String, usize> = HashMap::new();
        for entry in fs_err::read_dir(testdata.join("script")).unwrap() {
            let text = fs_err::read_to_string(entry.unwrap().path()).unwrap();
            for line in text.lines() {
                if let Some(h) = line.strip_prefix(key).and_then(|r| r.strip_prefix(" h1:")) {
                    *counts.entry(format!("h1:{}", h.trim())).or_default() += 1;
                }
            }
        }
        counts
            .into_iter()
            .max_by_key(|(h, n)| (*n, h.clone()))
            .unwrap_or_else(|| panic!("no go.sum line for {key} in Go's scripts"))
            .0
    }

    #[test]
    fn hash_go_mod_matches_go_corpus() {
        let Some(testdata) = go_testdata() else {
            return;
        };
        // (corpus file, go.sum key); several are required by many scripts.
        let cases = [
            ("rsc.io_quote_v1.5.2", "rsc.io/quote v1.5.2/go.mod"),
            ("rsc.io_quote_v1.0.0", "rsc.io/quote v1.0.0/go.mod"),
            ("rsc.io_sampler_v1.3.0", "rsc.io/sampler v1.3.0/go.mod"),
            ("rsc.io_testonly_v1.0.0", "rsc.io/testonly v1.0.0/go.mod"),
            (
                "golang.org_x_text_v0.0.0-20170915032832-14c0d48ead0c",
                "golang.org/x/text v0.0.0-20170915032832-14c0d48ead0c/go.mod",
            ),
            (
                "example.com_ambiguous_a_v1.0.0",
                "example.com/ambiguous/a v1.0.0/go.mod",
            ),
        ];
        for (file, key) in cases {
            let text = fs_err::read(testdata.join("mod").join(format!("{file}.txt"))).unwrap();
            let files = parse_txtar(&text);
            let (_, mod_file) = files.iter().find(|(n, _)| n == ".mod").expect(file);
            assert_eq!(hash_go_mod(mod_file), script_sum(&testdata, key), "{key}");
        }
    }

    #[test]
    fn txtar_parse() {
        let files = parse_txtar(b"comment\n-- a --\nx\n-- b/c --\n\n-- d --\nno newline");
        let want = [("a", &b"x\n"[..]), ("b/c", b"\n"), ("d", b"no newline\n")];
        assert_eq!(files.len(), want.len());
        for ((n, d), (wn, wd)) in files.iter().zip(want) {
            assert_eq!((n.as_str(), d.as_slice()), (wn, wd));
        }
    }
}
