//! `manifest.json` (what a bundle holds), the bundle id (sha256 of those
//! bytes) and `manifest.sig`, a signed note (x/mod `sumdb/note`) whose text
//! repeats the fields that chain bundles together:
//!
//! ```text
//! gomirror bundle
//! format 1
//! source <source>
//! sequence <n>
//! follows <bundle id or ->
//! full <yes|no>
//! manifest <bundle id>
//! ```
//!
//! [`open`] trusts nothing in `manifest.json` until the note verifies with
//! a trusted key and every line agrees with the parsed manifest.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::BundleError;
use crate::verify::sumdb::note::{self, NoteError, Signer, Verifier};

/// The manifest format this build writes and reads.
pub const FORMAT: u32 = 1;

/// What a bundle holds; serialized as `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`FORMAT`].
    pub format: u32,
    /// The online mirror's id: `[export] source`, default the key's name.
    pub source: String,
    /// 1, 2, 3, … per source; a full bundle takes the next number too.
    pub sequence: u64,
    /// Bundle id of the previous export of this source (`None` for the first).
    pub follows: Option<String>,
    pub full: bool,
    /// RFC 3339 UTC.
    pub created: String,
    /// The head the checksum-database files are pinned to (`None` if the
    /// online mirror has no offline copy).
    pub sumdb: Option<PinnedHead>,
    /// Every module version whose files are in the bundle.
    pub versions: Vec<VersionEntry>,
    /// Every file, in tar order.
    pub files: Vec<FileEntry>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PinnedHead {
    pub name: String,
    pub size: i64,
    /// Base64 tree hash.
    pub hash: String,
    /// The signed tree note, exactly as `sumdb/<name>/latest` holds it.
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VersionEntry {
    pub path: String,
    pub version: String,
    /// `None` for a version published for its go.mod only: the bundle holds
    /// its `.info` and `.mod`, no zip (the field is left out of the JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub h1_zip: Option<String>,
    pub h1_mod: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Tree-relative, '/'-separated, exactly as `publish::layout` builds it.
    pub path: String,
    pub size: u64,
    /// Lowercase hex.
    pub sha256: String,
}

impl Manifest {
    /// Pretty JSON ending in a newline.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("a Manifest always serializes");
        out.push(b'\n');
        out
    }

    /// Parses `manifest.json`; refuses unknown fields and other formats.
    pub fn from_json(bytes: &[u8]) -> Result<Manifest, BundleError> {
        // The format first, so a newer bundle says so rather than failing
        // on a field this build does not know.
        #[derive(Deserialize)]
        struct FormatOnly {
            format: u32,
        }
        let bad = |e: serde_json::Error| BundleError::ManifestJson(e.to_string());
        let found = serde_json::from_slice::<FormatOnly>(bytes)
            .map_err(bad)?
            .format;
        if found != FORMAT {
            return Err(BundleError::Format {
                found,
                supported: FORMAT,
            });
        }
        serde_json::from_slice(bytes).map_err(bad)
    }

    /// The note text `manifest.sig` signs for this manifest.
    fn signed_text(&self, bundle_id: &str) -> String {
        format!(
            "gomirror bundle\nformat {}\nsource {}\nsequence {}\nfollows {}\nfull {}\nmanifest {}\n",
            self.format,
            self.source,
            self.sequence,
            self.follows.as_deref().unwrap_or("-"),
            if self.full { "yes" } else { "no" },
            bundle_id
        )
    }
}

/// The bundle id: lowercase hex sha256 of the `manifest.json` bytes.
pub fn bundle_id(manifest_json: &[u8]) -> String {
    hex::encode(Sha256::digest(manifest_json))
}

/// `manifest.sig` for `manifest_json`, the serialized `m`.
pub fn sign(manifest_json: &[u8], m: &Manifest, signer: &Signer) -> Result<Vec<u8>, BundleError> {
    let text = m.signed_text(&bundle_id(manifest_json));
    note::sign(&text, &[signer]).map_err(|source| BundleError::BadSignature {
        key: key_name(signer.name(), signer.key_hash()),
        source,
    })
}

/// Verifies `sig` with `trusted`, checks that it signs exactly
/// `manifest_json`, and returns the manifest and the signer's `name+hash`.
pub fn open(
    sig: &[u8],
    manifest_json: &[u8],
    trusted: &[&Verifier],
) -> Result<(Manifest, String), BundleError> {
    let note = note::open(sig, trusted).map_err(note_error)?;
    let signer = note
        .sigs
        .first()
        .map(|s| key_name(&s.name, s.hash))
        .expect("note::open returns at least one verified signature");
    let want_id = bundle_id(manifest_json);
    let id_line = format!("manifest {want_id}");
    if let Some(line) = note.text.lines().find(|l| l.starts_with("manifest ")) {
        if line != id_line {
            return Err(BundleError::SignedLine {
                line: line.to_owned(),
                want: id_line,
            });
        }
    }
    let manifest = Manifest::from_json(manifest_json)?;
    check_lines(&note.text, &manifest.signed_text(&want_id))?;
    Ok((manifest, signer))
}

/// Verifies `sig` with `trusted` and checks that it signs the manifest
/// whose bundle id is `id`, before that manifest is read: see
/// [`super::head`].
pub fn check_signature(sig: &[u8], id: &str, trusted: &[&Verifier]) -> Result<(), BundleError> {
    let note = note::open(sig, trusted).map_err(note_error)?;
    let want = format!("manifest {id}");
    let line = note
        .text
        .lines()
        .find(|l| l.starts_with("manifest "))
        .unwrap_or("");
    if line != want {
        return Err(BundleError::SignedLine {
            line: line.to_owned(),
            want,
        });
    }
    Ok(())
}

/// The keys that claim to have signed `sig`, unverified (`name+hash`):
/// for `bundle inspect` without a trusted key.
pub fn claimed_signers(sig: &[u8]) -> Result<Vec<String>, BundleError> {
    match note::open(sig, &[]) {
        Err(NoteError::NoVerifiedSignatures { note }) => Ok(note
            .unverified_sigs
            .iter()
            .map(|s| key_name(&s.name, s.hash))
            .collect()),
        Err(e) => Err(BundleError::Signature {
            reason: e.to_string(),
        }),
        Ok(_) => unreachable!("no key is known, so no signature verifies"),
    }
}

/// Compares the signed text with the expected one line by line, naming
/// the first line that differs.
fn check_lines(signed: &str, want: &str) -> Result<(), BundleError> {
    let mut got = signed.lines();
    for want_line in want.lines() {
        let line = got.next().unwrap_or("");
        if line != want_line {
            return Err(BundleError::SignedLine {
                line: line.to_owned(),
                want: want_line.to_owned(),
            });
        }
    }
    match got.next() {
        Some(extra) => Err(BundleError::SignedLine {
            line: extra.to_owned(),
            want: String::new(),
        }),
        None => Ok(()),
    }
}

fn note_error(e: NoteError) -> BundleError {
    match e {
        NoteError::NoVerifiedSignatures { note } => BundleError::UnknownKey {
            key: note
                .unverified_sigs
                .iter()
                .map(|s| key_name(&s.name, s.hash))
                .collect::<Vec<_>>()
                .join(", "),
        },
        NoteError::InvalidSignature { ref name, hash } => BundleError::BadSignature {
            key: key_name(name, hash),
            source: e.clone(),
        },
        other => BundleError::Signature {
            reason: other.to_string(),
        },
    }
}

/// `name+hash`, as a verifier key starts.
fn key_name(name: &str, hash: u32) -> String {
    format!("{name}+{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            format: FORMAT,
            source: "mirror.example.com".into(),
            sequence: 2,
            follows: Some("ab".repeat(32)),
            full: false,
            created: "2026-01-02T03:04:05Z".into(),
            sumdb: Some(PinnedHead {
                name: "sum.example.com".into(),
                size: 3,
                hash: "AAAA".into(),
                note: "sum.example.com\n3\nAAAA\n\n— sum.example.com x\n".into(),
            }),
            versions: vec![VersionEntry {
                path: "rsc.io/quote".into(),
                version: "v1.5.2".into(),
                h1_zip: Some("h1:zip".into()),
                h1_mod: "h1:mod".into(),
            }],
            files: vec![FileEntry {
                path: "rsc.io/quote/@v/v1.5.2.mod".into(),
                size: 10,
                sha256: "00".repeat(32),
            }],
        }
    }

    fn signer(name: &str) -> Signer {
        let (signer, _, _) = Signer::generate(name).expect("generate");
        signer
    }

    #[test]
    fn round_trip() {
        let m = manifest();
        let json = m.to_json();
        assert!(json.ends_with(b"\n"));
        assert_eq!(Manifest::from_json(&json).expect("parses"), m);
        let s = signer("mirror.example.com");
        let sig = sign(&json, &m, &s).expect("sign");
        let v = s.verifier();
        let (opened, by) = open(&sig, &json, &[&v]).expect("opens");
        assert_eq!(opened, m);
        assert_eq!(by, format!("mirror.example.com+{:08x}", s.key_hash()));
        assert_eq!(claimed_signers(&sig).expect("claimed"), vec![by]);
        let text = String::from_utf8(sig).expect("utf-8");
        assert!(text.starts_with(&format!(
            "gomirror bundle\nformat 1\nsource mirror.example.com\nsequence 2\nfollows {}\nfull no\nmanifest {}\n\n",
            "ab".repeat(32),
            bundle_id(&json)
        )));
    }

    #[test]
    fn from_json_refuses_other_formats_and_unknown_fields() {
        let mut m = manifest();
        m.format = 2;
        let err = Manifest::from_json(&m.to_json()).unwrap_err();
        assert!(matches!(err, BundleError::Format { found: 2, .. }), "{err}");
        let mut v: serde_json::Value = serde_json::from_slice(&manifest().to_json()).unwrap();
        v["extra"] = serde_json::Value::Bool(true);
        let err = Manifest::from_json(&serde_json::to_vec(&v).unwrap()).unwrap_err();
        assert!(err.to_string().contains("unknown field `extra`"), "{err}");
    }

    #[test]
    fn open_refuses() {
        let m = manifest();
        let json = m.to_json();
        let s = signer("mirror.example.com");
        let v = s.verifier();
        let sig = sign(&json, &m, &s).expect("sign");
        let key = format!("mirror.example.com+{:08x}", s.key_hash());

        // A key nobody trusts.
        let other = signer("mirror.example.com");
        let err = open(&sig, &json, &[&other.verifier()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("manifest.sig: signed by {key}, which is not a trusted key")
        );

        // A bad signature: the signed text changed, the signature did not.
        let tampered = String::from_utf8(sig.clone())
            .unwrap()
            .replace("sequence 2", "sequence 3");
        let err = open(tampered.as_bytes(), &json, &[&v]).unwrap_err();
        assert!(
            matches!(&err, BundleError::BadSignature { key: k, .. } if *k == key),
            "{err}"
        );

        // manifest.json changed after signing.
        let mut changed = m.clone();
        changed.files[0].size = 11;
        let err = open(&sig, &changed.to_json(), &[&v]).unwrap_err();
        assert!(
            matches!(&err, BundleError::SignedLine { line, .. } if line.starts_with("manifest ")),
            "{err}"
        );

        // A correctly signed note whose line disagrees with the manifest.
        let mut lying = m.clone();
        lying.sequence = 7;
        let text = lying.signed_text(&bundle_id(&json));
        let sig = note::sign(&text, &[&s]).expect("sign");
        let err = open(&sig, &json, &[&v]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "manifest.sig: \"sequence 7\" does not match manifest.json (\"sequence 2\")"
        );
    }
}
