//! Verify stage: [`Fetched`] temp files → [`Verified`], or a reason to
//! quarantine the version.
//!
//! Checks, in order: the `.info` names the requested version (Go:
//! cmd/go/internal/modfetch/proxy.go Stat), the zip passes every rule of
//! x/mod/zip CheckZip without being
//! extracted ([`zip::check_zip`]), and both `h1:` hashes are computed as
//! x/mod/sumdb/dirhash does. The checksum database check (issue #5) slots
//! in between hashing and building a [`Verified`]: see [`verify`].
//!
//! The size limits ([`MAX_GO_MOD`], [`MAX_ZIP`], [`MAX_INFO`]) are enforced
//! by fetch while the bodies stream in; `sync` passes them.
//!
//! Everything here blocks (reads and hashes whole zips); callers run it on
//! the blocking pool.

pub mod dirhash;
pub mod sumdb;
pub mod zip;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use serde::Deserialize;

use crate::fetch::{FetchError, Fetched};
use crate::module::ModVer;

/// Go: cmd/go/internal/modfetch/codehost MaxGoMod.
pub const MAX_GO_MOD: u64 = 16 << 20;
/// Go: cmd/go/internal/modfetch/codehost MaxZipFile.
pub const MAX_ZIP: u64 = 500 << 20;
/// `.info` is a few hundred bytes of JSON; Go sets no limit, we refuse
/// anything absurd before it reaches memory.
pub const MAX_INFO: u64 = 1 << 20;

/// A version whose files passed every check. Only [`verify`] builds one,
/// so code that publishes an unverified version does not compile.
#[derive(Debug)]
pub struct Verified {
    checked: Checked,
    info: Bytes,
}

/// What verification established about a version, without the `.info`
/// body: once that is on disk, a batch of versions waiting to be placed
/// holds only this (no buffers, no open files).
#[derive(Debug)]
pub struct Checked {
    mv: ModVer,
    /// The `.mod` and zip until publish takes them to rename into place.
    files: Option<TempFiles>,
    /// The `.mod`'s temporary name, kept for messages and for where it was
    /// staged (publish compares its directory with the version's).
    mod_tmp: PathBuf,
    mod_size: u64,
    mod_sha256: [u8; 32],
    info_size: u64,
    h1_mod: String,
    time: Option<String>,
    /// `None` for a version fetched for its go.mod only (a module graph
    /// reads it, no build needs its files): `.info` and `.mod` are checked
    /// and published, and it stays out of `@v/list` until its zip is.
    zip: Option<ZipFacts>,
}

/// What verification established about a version's zip.
#[derive(Debug, Clone)]
pub struct ZipFacts {
    /// The zip's temporary name, beside the `.mod`'s.
    pub tmp: PathBuf,
    pub size: u64,
    pub sha256: [u8; 32],
    pub h1: String,
}

/// A verified version's `.mod` and zip: temporary files in the version
/// directory, closed, as downloaded. Dropping them removes them.
#[derive(Debug)]
pub struct TempFiles {
    pub mod_file: tempfile::TempPath,
    /// `None` for a version fetched for its go.mod only.
    pub zip: Option<tempfile::TempPath>,
}

/// Why a version must not be published. Recorded in state, never retried
/// automatically: the bytes upstream served are wrong.
/// Go: x/mod/module ModuleError{Path, Version, Err}.
#[derive(Debug, thiserror::Error)]
#[error("{mv}: {kind}")]
pub struct Quarantine {
    pub mv: ModVer,
    pub kind: QuarantineKind,
}

/// What is wrong with what upstream served. State records its text as the
/// quarantine reason.
#[derive(Debug, thiserror::Error)]
pub enum QuarantineKind {
    #[error(transparent)]
    Info(#[from] InfoError),
    /// The zip breaks a rule of x/mod/zip CheckZip. Its text starts with
    /// the version again, as x/mod's zip errors do.
    #[error(transparent)]
    Zip(Box<zip::ZipError>),
    #[error(transparent)]
    Sumdb(Box<SumdbMismatch>),
    /// A body is larger than Go allows ([`MAX_ZIP`], [`MAX_GO_MOD`],
    /// [`MAX_INFO`]); always [`FetchError::TooLarge`], refused while it
    /// streamed (PROTOCOL.md "Module zips").
    #[error("{0}")]
    TooLarge(Box<FetchError>),
}

// Boxed: a `Result<_, Quarantine>` stays small on the happy path.
impl From<zip::ZipError> for QuarantineKind {
    fn from(e: zip::ZipError) -> Self {
        QuarantineKind::Zip(Box::new(e))
    }
}

impl From<SumdbMismatch> for QuarantineKind {
    fn from(e: SumdbMismatch) -> Self {
        QuarantineKind::Sumdb(Box::new(e))
    }
}

/// Go: cmd/go/internal/modfetch/proxy.go Stat: what is wrong with a `.info`.
#[derive(Debug, thiserror::Error)]
pub enum InfoError {
    #[error("invalid .info: {0}")]
    Json(serde_json::Error),
    /// The version it names, which is not the one requested.
    #[error("proxy returned info for version {} instead of requested version", .0.escape_debug())]
    Version(String),
    /// `Time` is not RFC 3339.
    #[error("invalid .info: Time {:?}: {error}", .time.escape_debug().to_string())]
    Time {
        time: String,
        error: time::error::Parse,
    },
}

/// Go: cmd/go/internal/modfetch/fetch.go checkModSum reports a mismatch
/// with the checksum database as a SECURITY ERROR; so do we, naming both
/// hashes of each file that differs (at least one).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SumdbMismatch {
    /// The database's name.
    pub db: String,
    pub zip: Option<HashMismatch>,
    pub go_mod: Option<HashMismatch>,
}

/// Two `h1:` hashes of one file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HashMismatch {
    /// Of the bytes upstream served.
    pub upstream: String,
    /// As the checksum database records it.
    pub vouched: String,
}

impl std::fmt::Display for SumdbMismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let db = &self.db;
        write!(
            f,
            "SECURITY ERROR: checksum mismatch with checksum database {db}: "
        )?;
        let files = [("zip", &self.zip), ("go.mod", &self.go_mod)];
        let wrong = files
            .iter()
            .filter_map(|(name, m)| m.as_ref().map(|m| (name, m)));
        for (i, (name, m)) in wrong.enumerate() {
            let sep = if i == 0 { "" } else { "; " };
            write!(
                f,
                "{sep}{name}: upstream {}, {db} {}",
                m.upstream, m.vouched
            )?;
        }
        f.write_str(" (upstream served bytes other than the ones the Go ecosystem agreed on)")
    }
}

impl Verified {
    pub fn checked(&self) -> &Checked {
        &self.checked
    }
    pub fn info(&self) -> &[u8] {
        &self.info
    }
    /// Splits the facts from the `.info` body, for the caller that writes
    /// the body to disk.
    pub fn into_parts(self) -> (Checked, Bytes) {
        (self.checked, self.info)
    }
}

impl Checked {
    pub fn mv(&self) -> &ModVer {
        &self.mv
    }
    /// The verified `.mod` and zip, for publish to rename into place;
    /// `None` once taken.
    pub fn take_files(&mut self) -> Option<TempFiles> {
        self.files.take()
    }
    /// The verified zip; `None` for a version fetched for its go.mod only.
    pub fn zip(&self) -> Option<&ZipFacts> {
        self.zip.as_ref()
    }
    /// The zip's size, 0 for a go.mod-only version (for byte counts).
    pub fn zip_size(&self) -> u64 {
        self.zip.as_ref().map_or(0, |z| z.size)
    }
    pub fn info_size(&self) -> u64 {
        self.info_size
    }
    /// The fetched `.mod`'s temporary name, in the version directory or a
    /// staging directory; the file is there until [`Checked::take_files`].
    pub fn mod_path(&self) -> &Path {
        &self.mod_tmp
    }
    pub fn mod_sha256(&self) -> &[u8; 32] {
        &self.mod_sha256
    }
    pub fn mod_size(&self) -> u64 {
        self.mod_size
    }
    pub fn h1_mod(&self) -> &str {
        &self.h1_mod
    }
    /// The commit time from `.info`, as upstream wrote it.
    pub fn time(&self) -> Option<&str> {
        self.time.as_deref()
    }
}

/// What a checksum database vouches a version's hashes are: the record of
/// a lookup whose signature and inclusion were verified.
#[derive(Debug, Clone, Copy)]
pub struct Vouched<'a> {
    /// The database's name, for messages.
    pub db: &'a str,
    pub hashes: &'a sumdb::RecordHashes,
}

/// Checks a fetched version and, unless it is private (or verification is
/// off), that its hashes are those `vouched` by the checksum database.
/// Blocking.
pub fn verify(fetched: Fetched, vouched: Option<Vouched<'_>>) -> Result<Verified, Quarantine> {
    let Fetched {
        mv,
        info,
        mod_file,
        zip,
    } = fetched;
    let quarantine = |kind| Quarantine {
        mv: mv.clone(),
        kind,
    };
    let time = check_info(&mv, &info).map_err(|e| quarantine(e.into()))?;
    // The .mod's size limit (MAX_GO_MOD) was enforced while it streamed in.
    let h1_mod = dirhash::hash_go_mod(&mod_file.sha256);
    let (zip_facts, zip_tmp) = match zip {
        Some(zip) => {
            // The zip is read through the download's own handle: no second open.
            let (zip_handle, zip_tmp) = zip.file.into_parts();
            let zip_file = fs_err::File::from_parts(zip_handle, zip_tmp.to_path_buf());
            let checked = zip::check_zip_file(&mv, zip_file).map_err(|e| quarantine(e.into()))?;
            let facts = ZipFacts {
                tmp: zip_tmp.to_path_buf(),
                size: zip.size,
                sha256: zip.sha256,
                h1: checked.h1,
            };
            (Some(facts), Some(zip_tmp))
        }
        None => (None, None),
    };
    if let Some(v) = vouched {
        let h1_zip = zip_facts.as_ref().map(|z| z.h1.as_str());
        check_vouched(h1_zip, &h1_mod, v).map_err(|e| quarantine(e.into()))?;
    }
    Ok(Verified {
        checked: Checked {
            h1_mod,
            info_size: info.len() as u64,
            mod_size: mod_file.size,
            mod_sha256: mod_file.sha256,
            mod_tmp: mod_file.file.path().to_owned(),
            files: Some(TempFiles {
                mod_file: mod_file.file.into_temp_path(),
                zip: zip_tmp,
            }),
            time,
            zip: zip_facts,
            mv,
        },
        info,
    })
}

/// Go: cmd/go/internal/modfetch/fetch.go checkModSum. `h1_zip` is `None`
/// for a version fetched for its go.mod only.
fn check_vouched(h1_zip: Option<&str>, h1_mod: &str, v: Vouched<'_>) -> Result<(), SumdbMismatch> {
    let differ = |upstream: &str, vouched: &str| {
        (upstream != vouched).then(|| HashMismatch {
            upstream: upstream.to_owned(),
            vouched: vouched.to_owned(),
        })
    };
    let mismatch = SumdbMismatch {
        db: v.db.to_owned(),
        zip: h1_zip.and_then(|h| differ(h, &v.hashes.h1_zip)),
        go_mod: differ(h1_mod, &v.hashes.h1_mod),
    };
    match (&mismatch.zip, &mismatch.go_mod) {
        (None, None) => Ok(()),
        _ => Err(mismatch),
    }
}

/// The fields of a `.info` the go command reads (cmd/go/internal/modfetch/proxy.go
/// Stat, RevInfo); other fields (`Origin`, …) are ignored.
#[derive(Debug, Deserialize)]
pub struct Info {
    #[serde(rename = "Version")]
    pub version: String,
    #[serde(rename = "Time")]
    pub time: Option<String>,
}

impl Info {
    pub fn parse(bytes: &[u8]) -> Result<Info, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Go: cmd/go/internal/modfetch/proxy.go Stat: the `.info` must be JSON
/// naming exactly the requested version, with an RFC 3339 time if any.
fn check_info(mv: &ModVer, info: &[u8]) -> Result<Option<String>, InfoError> {
    let parsed = Info::parse(info).map_err(InfoError::Json)?;
    if parsed.version != mv.version.as_str() {
        return Err(InfoError::Version(parsed.version));
    }
    if let Some(t) = &parsed.time {
        let rfc3339 = &time::format_description::well_known::Rfc3339;
        if let Err(error) = time::OffsetDateTime::parse(t, rfc3339) {
            let time = t.clone();
            return Err(InfoError::Time { time, error });
        }
    }
    Ok(parsed.time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatch_with_the_database_names_both_hashes() {
        let hashes = sumdb::RecordHashes {
            h1_zip: "h1:zzz=".into(),
            h1_mod: "h1:mmm=".into(),
        };
        let v = Vouched {
            db: "sum.golang.org",
            hashes: &hashes,
        };
        assert_eq!(check_vouched(Some("h1:zzz="), "h1:mmm=", v), Ok(()));
        // A version fetched for its go.mod only is checked on its go.mod alone.
        assert_eq!(check_vouched(None, "h1:mmm=", v), Ok(()));
        assert!(check_vouched(None, "h1:x=", v).is_err_and(|e| e.zip.is_none()));
        let head = "SECURITY ERROR: checksum mismatch with checksum database sum.golang.org: ";
        let tail = " (upstream served bytes other than the ones the Go ecosystem agreed on)";
        let cases = [
            (
                "h1:other=",
                "h1:mmm=",
                "zip: upstream h1:other=, sum.golang.org h1:zzz=",
            ),
            (
                "h1:zzz=",
                "h1:x=",
                "go.mod: upstream h1:x=, sum.golang.org h1:mmm=",
            ),
            (
                "h1:other=",
                "h1:x=",
                "zip: upstream h1:other=, sum.golang.org h1:zzz=; \
                 go.mod: upstream h1:x=, sum.golang.org h1:mmm=",
            ),
        ];
        for (h1_zip, h1_mod, want) in cases {
            let e = check_vouched(Some(h1_zip), h1_mod, v).unwrap_err();
            assert_eq!(e.to_string(), format!("{head}{want}{tail}"));
            let zip_differs = e.zip.as_ref().map(|m| (&m.upstream[..], &m.vouched[..]));
            let want_zip = (h1_zip != "h1:zzz=").then_some((h1_zip, "h1:zzz="));
            assert_eq!(zip_differs, want_zip);
        }
    }

    #[test]
    fn info_must_name_the_requested_version() {
        // The texts are those state recorded before the errors were typed
        // (issue 11): they must not change.
        let mv = ModVer::parse("rsc.io/quote", "v1.5.2").unwrap();
        let cases: &[(&str, Result<Option<&str>, &str>)] = &[
            (
                r#"{"Version":"v1.5.2","Time":"2018-02-14T15:44:20Z"}"#,
                Ok(Some("2018-02-14T15:44:20Z")),
            ),
            (r#"{"Version":"v1.5.2"}"#, Ok(None)),
            (
                r#"{"Version":"v1.5.1","Time":"2018-02-14T15:44:20Z"}"#,
                Err("proxy returned info for version v1.5.1 instead of requested version"),
            ),
            (
                r#"{"Version":"v1.5.2\n"}"#,
                Err(r"proxy returned info for version v1.5.2\n instead of requested version"),
            ),
            (
                r#"{"Version":"v1.5.2","Time":"yesterday"}"#,
                Err(r#"invalid .info: Time "yesterday": TIME"#),
            ),
            (
                r#"{"Version":"v1.5.2","Time":"a\tb"}"#,
                Err(r#"invalid .info: Time "a\\tb": TIME"#),
            ),
            (
                r#"not json"#,
                Err("invalid .info: expected ident at line 1 column 2"),
            ),
            (
                r#"{"Time":"2018-02-14T15:44:20Z"}"#,
                Err("invalid .info: missing field `Version` at line 1 column 31"),
            ),
        ];
        for (info, want) in cases {
            let got = check_info(&mv, info.as_bytes());
            match (got, want) {
                (Ok(t), Ok(w)) => assert_eq!(t.as_deref(), *w, "{info}"),
                (Err(e), Err(w)) => {
                    // The time crate's own words, whatever its version says.
                    let w = match &e {
                        InfoError::Time { error, .. } => w.replace("TIME", &error.to_string()),
                        _ => w.to_string(),
                    };
                    assert_eq!(e.to_string(), w, "{info}");
                }
                (got, want) => panic!("{info}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn a_quarantine_reads_version_then_reason() {
        let mv = ModVer::parse("rsc.io/quote", "v1.5.2").unwrap();
        let kind = QuarantineKind::from(InfoError::Version("v1.0.0".into()));
        let q = Quarantine {
            mv: mv.clone(),
            kind,
        };
        let reason = "proxy returned info for version v1.0.0 instead of requested version";
        assert_eq!(q.kind.to_string(), reason);
        assert_eq!(q.to_string(), format!("rsc.io/quote@v1.5.2: {reason}"));
        let zip = zip::ZipError {
            mv: mv.clone(),
            file: Some("rsc.io/quote@v1.5.2/GO.MOD".into()),
            kind: zip::ZipErrorKind::GoModCase,
        };
        let kind = QuarantineKind::from(zip);
        assert_eq!(
            kind.to_string(),
            "rsc.io/quote@v1.5.2: zip: rsc.io/quote@v1.5.2/GO.MOD: go.mod files must have lowercase names"
        );
        let too_large = FetchError::TooLarge {
            url: "https://proxy.example/rsc.io/quote/@v/v1.5.2.zip".into(),
            limit: MAX_ZIP,
        };
        let want = too_large.to_string();
        assert_eq!(
            QuarantineKind::TooLarge(Box::new(too_large)).to_string(),
            want
        );
    }
}
