//! The checksum database (sum.golang.org) protocol. Only [`client`] uses
//! the network (through `fetch::Client`); the rest works on bytes.
//!
//! Input: bytes a checksum database served (lookups, signed tree heads,
//! tiles) and the database's key. Output: opened notes, tree heads, proofs
//! and the `h1:` hashes a record vouches for.
//!
//! - [`note`]: signed notes and keys (Go: x/mod/sumdb/note).
//! - [`tlog`]: the Merkle log, its proofs, tree and record formats
//!   (Go: x/mod/sumdb/tlog/tlog.go, tlog/note.go).
//! - [`client`]: lookups and tiles over the network, each new signed head
//!   proved consistent with the newest verified one (Go: x/mod/sumdb/client.go).
//! - [`tile`]: tiles, and reading authenticated hashes from fetched tiles
//!   (Go: x/mod/sumdb/tlog/tile.go).
//! - here: a lookup response and the go.sum lines of its record
//!   (Go: x/mod/sumdb/client.go Lookup, server.go).
//!
//! PROTOCOL.md "Checksum database" lists the endpoints.
//!
//! How a client checks a lookup of `mv` (Go: client.go Lookup, mergeLatest,
//! checkRecord, checkTrees), with the fetching left to the caller:
//! 1. [`parse_lookup`] the body of [`lookup_path`]`(mv)`;
//!    [`note::open`] its note with the database's [`note::Verifier`];
//!    [`tlog::parse_tree`] the note's text.
//! 2. If a tree was seen before, the newer of the two must contain the older:
//!    `tree_hash(older.n, TileHashReader(newer))` must equal `older.hash`;
//!    run [`tlog::tree_hash`] over a [`tlog::IndexRecorder`] to learn the
//!    indexes, and [`tile::plan_tiles`] to learn the tiles to fetch. A
//!    mismatch is a forked log (Go's "SECURITY ERROR").
//! 3. The record must be in the tree: `id < tree.n`, and the stored hash
//!    [`tlog::stored_hash_index`]`(0, id)` read through a
//!    [`tile::TileHashReader`] over the tiles [`tile::plan_tiles`] names must
//!    equal [`tlog::record_hash`]`(text)`.
//! 4. [`parse_record_hashes`] gives the `h1:` hashes to compare with ours.

pub mod client;
pub mod local;
pub mod note;
pub mod tile;
pub mod tlog;

use base64::alphabet;
use base64::engine::{GeneralPurpose, GeneralPurposeConfig};

use crate::module::ModVer;

/// Go's `base64.StdEncoding`: padded, and lenient about the unused low bits
/// of the last character, as Go's decoder is.
pub(crate) const GO_BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_allow_trailing_bits(true),
);

/// Tile height of sum.golang.org and of every server x/mod runs.
/// Go: x/mod/sumdb/client.go NewClient sets tileHeight 8.
pub const TILE_HEIGHT: i32 = 8;

/// A parsed `/lookup/<mod>@<ver>` response. Go: server.go writes
/// `FormatRecord(id, record)` followed by the signed tree note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    /// The record's position in the log.
    pub id: i64,
    /// The record: go.sum lines, ending in `\n`.
    pub text: Vec<u8>,
    /// The signed tree head the server sent along (Go: client.go Lookup
    /// merges it into the latest known tree).
    pub note: Vec<u8>,
}

/// The two hashes a record vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHashes {
    /// `h1:` of the module zip.
    pub h1_zip: String,
    /// `h1:` of the go.mod.
    pub h1_mod: String,
}

/// Why a lookup response or its record was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("{mv}: lookup response: {source}")]
    Malformed {
        mv: String,
        #[source]
        source: tlog::TlogError,
    },
    #[error("{mv}: record has {got} lines, want 2 (the zip's and the go.mod's)")]
    LineCount { mv: String, got: usize },
    #[error("{mv}: record line {line:?}: want {want:?}")]
    WrongLine {
        mv: String,
        line: String,
        want: String,
    },
    #[error("{mv}: record line {line:?}: malformed h1: hash")]
    MalformedHash { mv: String, line: String },
}

/// Go: client.go Lookup, ParseRecord: splits a lookup response body. A
/// negative id, which ParseRecord lets through, is refused here.
pub fn parse_lookup(mv: &ModVer, body: &[u8]) -> Result<Lookup, LookupError> {
    let malformed = |source| LookupError::Malformed {
        mv: mv.to_string(),
        source,
    };
    let (id, text, note) = tlog::parse_record(body).map_err(malformed)?;
    if id < 0 {
        return Err(malformed(tlog::TlogError::MalformedRecord));
    }
    Ok(Lookup {
        id,
        text: text.to_vec(),
        note: note.to_vec(),
    })
}

/// The relative URL of the lookup for `mv`, case-encoded as
/// Go: client.go Lookup builds it (`lookup/<EscapePath>@<EscapeVersion>`).
pub fn lookup_path(mv: &ModVer) -> String {
    format!("lookup/{}@{}", mv.path.escaped(), mv.version.escaped())
}

/// The hashes in a record for `mv`. Stricter than Go's client, which keeps
/// whichever lines start with `<path> <version> `: a record must be exactly
/// `<path> <version> h1:…` then `<path> <version>/go.mod h1:…`, each hash
/// the base64 of 32 bytes, as sum.golang.org writes them.
pub fn parse_record_hashes(mv: &ModVer, text: &[u8]) -> Result<RecordHashes, LookupError> {
    let err_mv = || mv.to_string();
    let text = std::str::from_utf8(text).map_err(|_| LookupError::Malformed {
        mv: err_mv(),
        source: tlog::TlogError::MalformedRecord,
    })?;
    let lines: Vec<&str> = text
        .strip_suffix('\n')
        .unwrap_or(text)
        .split('\n')
        .collect();
    let [zip_line, mod_line] = lines[..] else {
        return Err(LookupError::LineCount {
            mv: err_mv(),
            got: lines.len(),
        });
    };
    let (path, version) = (mv.path.as_str(), mv.version.as_str());
    let h1_zip = record_line_hash(mv, zip_line, &format!("{path} {version} "))?;
    let h1_mod = record_line_hash(mv, mod_line, &format!("{path} {version}/go.mod "))?;
    Ok(RecordHashes { h1_zip, h1_mod })
}

/// The `h1:` hash of one record line that must begin with `prefix`.
fn record_line_hash(mv: &ModVer, line: &str, prefix: &str) -> Result<String, LookupError> {
    let hash = line
        .strip_prefix(prefix)
        .ok_or_else(|| LookupError::WrongLine {
            mv: mv.to_string(),
            line: line.to_owned(),
            want: format!("{prefix}h1:…"),
        })?;
    let decoded = hash.strip_prefix("h1:").and_then(|b64| {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    });
    if decoded.is_none_or(|d| d.len() != tlog::HASH_SIZE) {
        return Err(LookupError::MalformedHash {
            mv: mv.to_string(),
            line: line.to_owned(),
        });
    }
    Ok(hash.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZIP: &str = "h1:w5fcysjrx7yqtD/aO+QwRjYZOKnaM9Uh2b40tElTs3Y=";
    const MOD: &str = "h1:9c8NDE7XDS9iiJRmjcL1LgIAL6U/wMnFfUcd8dcw2W4=";

    fn mv(path: &str, version: &str) -> ModVer {
        ModVer::parse(path, version).unwrap()
    }

    #[test]
    fn lookup_response_splits() {
        let body = format!(
            "42\nrsc.io/quote v1.5.2 {ZIP}\nrsc.io/quote v1.5.2/go.mod {MOD}\n\n\
             go.sum database tree\n43\nhash\n\n— sig\n"
        );
        let m = mv("rsc.io/quote", "v1.5.2");
        let lookup = parse_lookup(&m, body.as_bytes()).unwrap();
        assert_eq!(lookup.id, 42);
        assert!(lookup.note.starts_with(b"go.sum database tree\n43\n"));
        let hashes = parse_record_hashes(&m, &lookup.text).unwrap();
        assert_eq!((hashes.h1_zip.as_str(), hashes.h1_mod.as_str()), (ZIP, MOD));
        for bad in [
            &b"42\nno blank line\n"[..],
            b"-1\nrsc.io/quote v1.5.2 h1:x\n\n",
        ] {
            let err = parse_lookup(&m, bad).unwrap_err();
            assert_eq!(
                err.to_string(),
                "rsc.io/quote@v1.5.2: lookup response: malformed record data"
            );
        }
    }

    #[test]
    fn record_lines_are_strict() {
        let m = mv("github.com/Azure/azure-sdk", "v1.0.0-RC1");
        let (p, v) = ("github.com/Azure/azure-sdk", "v1.0.0-RC1");
        let good = format!("{p} {v} {ZIP}\n{p} {v}/go.mod {MOD}\n");
        assert!(parse_record_hashes(&m, good.as_bytes()).is_ok());
        let cases: Vec<(String, &str)> = vec![
            (format!("{p} {v}/go.mod {MOD}\n{p} {v} {ZIP}\n"), "want"),
            (format!("{p} {v} {ZIP}\n"), "record has 1 lines"),
            (
                format!("{p} {v} {ZIP}\n{p} {v}/go.mod {MOD}\nextra\n"),
                "3 lines",
            ),
            (
                format!("{p} v1.0.0 {ZIP}\n{p} v1.0.0/go.mod {MOD}\n"),
                "want",
            ),
            (
                format!("github.com/azure/azure-sdk {v} {ZIP}\n{p} {v}/go.mod {MOD}\n"),
                "want",
            ),
            (
                format!("{p} {v} h2:{}\n{p} {v}/go.mod {MOD}\n", &ZIP[3..]),
                "malformed h1",
            ),
            (
                format!("{p} {v} h1:AAAA\n{p} {v}/go.mod {MOD}\n"),
                "malformed h1",
            ),
            (
                format!("{p} {v} {ZIP} x\n{p} {v}/go.mod {MOD}\n"),
                "malformed h1",
            ),
            (
                format!("{p} {v}  {ZIP}\n{p} {v}/go.mod {MOD}\n"),
                "malformed h1",
            ),
        ];
        for (text, want) in cases {
            let err = parse_record_hashes(&m, text.as_bytes()).unwrap_err();
            assert!(err.to_string().contains(want), "{text:?}: {err}");
            assert!(err.to_string().starts_with(&format!("{p}@{v}: ")), "{err}");
        }
    }

    #[test]
    fn lookup_paths_are_case_encoded() {
        let m = mv("github.com/Azure/azure-sdk", "v1.0.0-RC1");
        assert_eq!(
            lookup_path(&m),
            "lookup/github.com/!azure/azure-sdk@v1.0.0-!r!c1"
        );
    }
}
