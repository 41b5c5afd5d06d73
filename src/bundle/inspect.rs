//! `gomirror bundle inspect`: what a bundle says about itself, read from
//! its first two tar entries only (the rest of the stream is never read).

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use super::manifest::{self, Manifest};
use super::{head, volume, BundleError};
use crate::verify::sumdb::note::Verifier;

/// The summary `inspect` prints.
#[derive(Debug, Clone, Serialize)]
pub struct BundleInfo {
    pub path: String,
    pub volumes: usize,
    /// Bytes on disk, every volume.
    pub bytes: u64,
    pub bundle_id: String,
    /// `name+hash` of the key that signed it.
    pub signer: String,
    /// Whether the signature was checked against a trusted key; if not,
    /// `signer` is only what the signature line claims.
    pub signature_verified: bool,
    pub source: String,
    pub sequence: u64,
    pub follows: Option<String>,
    pub full: bool,
    pub created: String,
    pub versions: usize,
    pub files: usize,
    /// Sum of the tree files' sizes.
    pub file_bytes: u64,
    pub sumdb: Option<TreeHead>,
}

/// The checksum-database tree head a bundle is pinned to.
#[derive(Debug, Clone, Serialize)]
pub struct TreeHead {
    pub name: String,
    pub size: i64,
    pub hash: String,
}

/// Reads the manifest and signature of the bundle at `path`; the
/// signature is verified if one of `trusted` made it. The head is read as
/// `import` reads it ([`head`]), with the same limit.
pub fn inspect(path: &Path, trusted: &[Verifier]) -> Result<BundleInfo, BundleError> {
    let known: Vec<&Verifier> = trusted.iter().collect();
    let (m, id, signer, verified) = match head::read_signed(path, &known) {
        Ok(h) => (h.manifest, h.id, h.signer, true),
        Err(BundleError::UnknownKey { .. }) => {
            let (json, sig) = head::read_unverified(path)?;
            let claimed = manifest::claimed_signers(&sig)?;
            let id = manifest::bundle_id(&json);
            (Manifest::from_json(&json)?, id, claimed.join(", "), false)
        }
        Err(e) => return Err(e),
    };
    Ok(BundleInfo {
        path: path.display().to_string(),
        volumes: volume::volume_paths(path)?.len(),
        bytes: volume::bundle_len(path)?,
        bundle_id: id,
        signer,
        signature_verified: verified,
        source: m.source,
        sequence: m.sequence,
        follows: m.follows,
        full: m.full,
        created: m.created,
        versions: m.versions.len(),
        files: m.files.len(),
        file_bytes: m.files.iter().map(|f| f.size).sum(),
        sumdb: m.sumdb.map(|h| TreeHead {
            name: h.name,
            size: h.size,
            hash: h.hash,
        }),
    })
}

impl BundleInfo {
    /// The human-readable form.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let check = if self.signature_verified {
            "verified"
        } else {
            "NOT verified: no trusted key given"
        };
        let follows = self.follows.as_deref().unwrap_or("- (first bundle)");
        let _ = writeln!(
            out,
            "bundle:    {} ({} volume(s), {} bytes)",
            self.path, self.volumes, self.bytes
        );
        let _ = writeln!(out, "id:        {}", self.bundle_id);
        let _ = writeln!(out, "signer:    {} ({check})", self.signer);
        let _ = writeln!(out, "source:    {}", self.source);
        let _ = writeln!(
            out,
            "sequence:  {}{}",
            self.sequence,
            if self.full { " (full)" } else { "" }
        );
        let _ = writeln!(out, "follows:   {follows}");
        let _ = writeln!(out, "created:   {}", self.created);
        let _ = writeln!(out, "versions:  {}", self.versions);
        let _ = writeln!(out, "files:     {} ({} bytes)", self.files, self.file_bytes);
        match &self.sumdb {
            Some(h) => {
                let _ = writeln!(out, "tree head: {} size {} hash {}", h.name, h.size, h.hash);
            }
            None => {
                let _ = writeln!(out, "tree head: none (no checksum-database files)");
            }
        }
        out
    }
}
