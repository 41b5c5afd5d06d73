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

/// The `/go.mod` hash of a go.sum line, from the SHA-256 of the go.mod
/// (which the download computed while streaming it).
/// Go: cmd/go/internal/modfetch/fetch.go goModSum: `Hash1([]string{"go.mod"}, ...)`.
pub fn hash_go_mod(sha256: &FileDigest) -> String {
    hash1(vec![("go.mod".to_owned(), *sha256)]).expect("\"go.mod\" holds no newline")
}

/// The SHA-256 of `content`, as [`hash1`] takes it.
pub fn digest(content: &[u8]) -> FileDigest {
    Sha256::digest(content).into()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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

    #[test]
    fn go_mod_is_a_one_file_tree_named_go_mod() {
        // Go: cmd/go/internal/modfetch/fetch.go checkGoMod hashes
        // dirhash.Hash1([]string{"go.mod"}, ...). The whole-corpus check
        // against Go's go.sum lines is tests/it/h1.rs.
        let content = b"module rsc.io/quote\n";
        let want = hash1(vec![("go.mod".to_string(), digest(content))]).unwrap();
        assert_eq!(hash_go_mod(&digest(content)), want);
    }
}
