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

use std::path::Path;

use bytes::Bytes;
use serde::Deserialize;

use crate::fetch::Fetched;
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
    /// The zip's temporary file in the version directory, closed.
    zip: tempfile::TempPath,
    zip_size: u64,
    zip_sha256: [u8; 32],
    /// The `.mod`'s temporary file in the version directory, closed.
    mod_file: tempfile::TempPath,
    mod_size: u64,
    mod_sha256: [u8; 32],
    info_size: u64,
    h1_zip: String,
    h1_mod: String,
    time: Option<String>,
}

/// Why a version must not be published. Recorded in state, never retried
/// automatically: the bytes upstream served are wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{mv}: {reason}")]
pub struct Quarantine {
    pub mv: String,
    pub reason: String,
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
    /// The verified zip, still a temporary file in the version directory.
    pub fn zip_path(&self) -> &Path {
        &self.zip
    }
    pub fn zip_sha256(&self) -> &[u8; 32] {
        &self.zip_sha256
    }
    pub fn zip_size(&self) -> u64 {
        self.zip_size
    }
    pub fn info_size(&self) -> u64 {
        self.info_size
    }
    /// The fetched `.mod`, still a temporary file in the version directory.
    pub fn mod_path(&self) -> &Path {
        &self.mod_file
    }
    pub fn mod_sha256(&self) -> &[u8; 32] {
        &self.mod_sha256
    }
    pub fn mod_size(&self) -> u64 {
        self.mod_size
    }
    pub fn h1_zip(&self) -> &str {
        &self.h1_zip
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
    let quarantine = |reason: String| Quarantine {
        mv: mv.to_string(),
        reason,
    };
    let time = check_info(&mv, &info).map_err(quarantine)?;
    // The .mod's size limit (MAX_GO_MOD) was enforced while it streamed in.
    let checked = zip::check_zip(&mv, zip.file.path()).map_err(|e| quarantine(e.to_string()))?;
    let h1_mod = dirhash::hash_go_mod(&mod_file.sha256);
    if let Some(v) = vouched {
        check_vouched(&checked.h1, &h1_mod, v).map_err(quarantine)?;
    }
    Ok(Verified {
        checked: Checked {
            h1_zip: checked.h1,
            h1_mod,
            mv,
            info_size: info.len() as u64,
            mod_size: mod_file.size,
            mod_sha256: mod_file.sha256,
            mod_file: mod_file.file.into_temp_path(),
            zip_size: zip.size,
            zip_sha256: zip.sha256,
            zip: zip.file.into_temp_path(),
            time,
        },
        info,
    })
}

/// Go: cmd/go/internal/modfetch/fetch.go checkModSum reports a mismatch
/// with the database as a SECURITY ERROR; so do we, naming both hashes.
fn check_vouched(h1_zip: &str, h1_mod: &str, v: Vouched<'_>) -> Result<(), String> {
    let mut wrong = Vec::new();
    if h1_zip != v.hashes.h1_zip {
        wrong.push(format!(
            "zip: upstream {h1_zip}, {} {}",
            v.db, v.hashes.h1_zip
        ));
    }
    if h1_mod != v.hashes.h1_mod {
        wrong.push(format!(
            "go.mod: upstream {h1_mod}, {} {}",
            v.db, v.hashes.h1_mod
        ));
    }
    if wrong.is_empty() {
        return Ok(());
    }
    Err(format!(
        "SECURITY ERROR: checksum mismatch with checksum database {}: {} \
         (upstream served bytes other than the ones the Go ecosystem agreed on)",
        v.db,
        wrong.join("; ")
    ))
}

#[derive(Deserialize)]
struct Info {
    #[serde(rename = "Version")]
    version: String,
    #[serde(rename = "Time")]
    time: Option<String>,
}

/// Go: cmd/go/internal/modfetch/proxy.go Stat: the `.info` must be JSON
/// naming exactly the requested version, with an RFC 3339 time if any.
fn check_info(mv: &ModVer, info: &[u8]) -> Result<Option<String>, String> {
    let parsed: Info = serde_json::from_slice(info).map_err(|e| format!("invalid .info: {e}"))?;
    if parsed.version != mv.version.as_str() {
        return Err(format!(
            "proxy returned info for version {} instead of requested version",
            parsed.version.escape_debug()
        ));
    }
    if let Some(t) = &parsed.time {
        time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).map_err(
            |e| {
                format!(
                    "invalid .info: Time {:?}: {e}",
                    t.escape_debug().to_string()
                )
            },
        )?;
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
        assert_eq!(check_vouched("h1:zzz=", "h1:mmm=", v), Ok(()));
        let e = check_vouched("h1:other=", "h1:mmm=", v).unwrap_err();
        assert!(e.starts_with("SECURITY ERROR: checksum mismatch with checksum database sum.golang.org: zip: upstream h1:other=, sum.golang.org h1:zzz="), "{e}");
        let e = check_vouched("h1:zzz=", "h1:x=", v).unwrap_err();
        assert!(
            e.contains("go.mod: upstream h1:x=, sum.golang.org h1:mmm="),
            "{e}"
        );
    }

    #[test]
    fn info_must_name_the_requested_version() {
        let mv = ModVer::parse("rsc.io/quote", "v1.5.2").unwrap();
        let cases: &[(&str, Result<Option<&str>, &str>)] = &[
            (
                r#"{"Version":"v1.5.2","Time":"2018-02-14T15:44:20Z"}"#,
                Ok(Some("2018-02-14T15:44:20Z")),
            ),
            (r#"{"Version":"v1.5.2"}"#, Ok(None)),
            (
                r#"{"Version":"v1.5.1","Time":"2018-02-14T15:44:20Z"}"#,
                Err("instead of requested"),
            ),
            (r#"{"Version":"v1.5.2","Time":"yesterday"}"#, Err("Time")),
            (r#"not json"#, Err("invalid .info")),
            (r#"{"Time":"2018-02-14T15:44:20Z"}"#, Err("invalid .info")),
        ];
        for (info, want) in cases {
            let got = check_info(&mv, info.as_bytes());
            match (got, want) {
                (Ok(t), Ok(w)) => assert_eq!(t.as_deref(), *w, "{info}"),
                (Err(e), Err(w)) => assert!(e.contains(w), "{info}: {e}"),
                (got, want) => panic!("{info}: got {got:?}, want {want:?}"),
            }
        }
    }
}
