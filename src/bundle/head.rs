//! A bundle's signed head (its first two tar entries, `manifest.json` and
//! `manifest.sig`), read the same way by `import` and `bundle inspect`,
//! with one limit, and nothing of it held before its signature is checked:
//!
//! 1. `manifest.json` is hashed as it streams past, never kept: a bundle
//!    that claims a huge manifest costs reading it, not memory.
//! 2. `manifest.sig` (small) is verified with the trusted keys and must sign
//!    that hash (the bundle id).
//! 3. Only then is `manifest.json` read again, now held, and it must hash
//!    to the same id.
//!
//! A file that does not start with `manifest.json` is not a bundle, and
//! says so.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

use super::manifest::{self, Manifest};
use super::{volume, BundleError};
use crate::verify::sumdb::note::Verifier;

/// `manifest.json` larger than this is refused, by `import` and `inspect`
/// alike: ~1.5 million files at ~170 bytes of JSON each.
pub const MAX_MANIFEST: u64 = 256 << 20;

/// `manifest.sig` larger than this is refused: a note of a few lines.
pub const MAX_SIGNATURE: u64 = 64 << 10;

/// A bundle's manifest, its signature verified.
#[derive(Debug, Clone)]
pub struct SignedHead {
    pub manifest: Manifest,
    /// The exact `manifest.json` bytes.
    pub json: Vec<u8>,
    /// The bundle id, sha256 of `json`.
    pub id: String,
    /// The exact `manifest.sig` bytes.
    pub sig: Vec<u8>,
    /// `name+hash` of the key that signed it.
    pub signer: String,
}

/// Reads and verifies the head of the bundle at `path` with `trusted`;
/// see the module docs for the order.
pub fn read_signed(path: &Path, trusted: &[&Verifier]) -> Result<SignedHead, BundleError> {
    let (id, size, sig) = scan(path)?;
    manifest::check_signature(&sig, &id, trusted)?;
    let (json, sig_again) = read_unverified(path)?;
    if json.len() as u64 != size || manifest::bundle_id(&json) != id || sig_again != sig {
        return Err(BundleError::Invalid(
            "the bundle changed while it was being read".into(),
        ));
    }
    let (manifest, signer) = manifest::open(&sig, &json, trusted)?;
    Ok(SignedHead {
        manifest,
        json,
        id,
        sig,
        signer,
    })
}

/// `manifest.json` and `manifest.sig`, unverified, each within its limit:
/// for `bundle inspect` without a trusted key, and the second read of
/// [`read_signed`].
pub fn read_unverified(path: &Path) -> Result<(Vec<u8>, Vec<u8>), BundleError> {
    let mut archive = tar::Archive::new(volume::open_stream(path)?);
    let mut entries = first_entries(path, &mut archive)?;
    let mut json = first(path, &mut entries)?;
    let json = read_bounded(&mut json, "manifest.json", MAX_MANIFEST)?;
    let sig = read_sig(&mut entries)?;
    Ok((json, sig))
}

/// Skips the `manifest.json` entry of `entries`, hashing it: it must be the
/// one whose id is `id`. For the import's stream, which reads the bundle
/// again after its head was verified.
pub fn skip_manifest<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    id: &str,
) -> Result<(), BundleError> {
    let mut entry = next_named(entries, "manifest.json")?;
    let (got, _) = hash_bounded(&mut entry, MAX_MANIFEST)?;
    if got != id {
        return Err(BundleError::Invalid(
            "the bundle changed while it was being read".into(),
        ));
    }
    read_sig(entries)?;
    Ok(())
}

/// Pass 1: the id and size of `manifest.json` (hashed, not kept) and
/// `manifest.sig`.
fn scan(path: &Path) -> Result<(String, u64, Vec<u8>), BundleError> {
    let mut archive = tar::Archive::new(volume::open_stream(path)?);
    let mut entries = first_entries(path, &mut archive)?;
    let mut json = first(path, &mut entries)?;
    let (id, size) = hash_bounded(&mut json, MAX_MANIFEST)?;
    let sig = read_sig(&mut entries)?;
    Ok((id, size, sig))
}

fn first_entries<'a, R: Read>(
    path: &Path,
    archive: &'a mut tar::Archive<R>,
) -> Result<tar::Entries<'a, R>, BundleError> {
    archive
        .entries()
        .map_err(|e| not_a_bundle(path, e.to_string()))
}

/// The first entry, which makes the file a bundle: `manifest.json`.
fn first<'a, R: Read>(
    path: &Path,
    entries: &mut tar::Entries<'a, R>,
) -> Result<tar::Entry<'a, R>, BundleError> {
    let entry = match entries.next() {
        None => return Err(not_a_bundle(path, "no tar entries".into())),
        Some(Err(e)) => return Err(not_a_bundle(path, e.to_string())),
        Some(Ok(entry)) => entry,
    };
    let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    if name != "manifest.json" {
        return Err(not_a_bundle(
            path,
            format!("it starts with {name:?}, a bundle with manifest.json"),
        ));
    }
    Ok(entry)
}

/// A file that does not start as a bundle does. A split bundle's first
/// volume says which volume broke the stream instead: its volumes are
/// more likely out of order than it is not a bundle.
fn not_a_bundle(path: &Path, reason: String) -> BundleError {
    match volume::volume_paths(path).map(|v| v.len()) {
        Ok(n) if n > 1 => BundleError::Invalid(format!("manifest.json: {reason}")),
        _ => BundleError::NotABundle { reason },
    }
}

/// The `manifest.sig` entry, read whole within [`MAX_SIGNATURE`].
fn read_sig<R: Read>(entries: &mut tar::Entries<'_, R>) -> Result<Vec<u8>, BundleError> {
    let mut entry = next_named(entries, "manifest.sig")?;
    read_bounded(&mut entry, "manifest.sig", MAX_SIGNATURE)
}

fn next_named<'a, R: Read>(
    entries: &mut tar::Entries<'a, R>,
    name: &str,
) -> Result<tar::Entry<'a, R>, BundleError> {
    let malformed = |reason: String| BundleError::Invalid(format!("{name}: {reason}"));
    let entry = entries
        .next()
        .ok_or_else(|| malformed("missing: the bundle ends early".into()))?
        .map_err(|e| malformed(format!("reading tar: {e}")))?;
    let found = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
    if found != name {
        return Err(malformed(format!("expected here, found {found:?}")));
    }
    Ok(entry)
}

/// The entry's declared size, refused past `limit` before reading.
fn check_size<R: Read>(
    entry: &tar::Entry<'_, R>,
    name: &str,
    limit: u64,
) -> Result<u64, BundleError> {
    let size = entry.size();
    if size > limit {
        return Err(BundleError::Invalid(format!(
            "{name}: {size} bytes, more than the limit of {limit}"
        )));
    }
    Ok(size)
}

/// Reads an entry within `limit`; memory grows with the bytes that really
/// arrive, never with what the header claims.
fn read_bounded<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, BundleError> {
    let size = check_size(entry, name, limit)?;
    let mut buf = Vec::new();
    entry
        .take(size)
        .read_to_end(&mut buf)
        .map_err(|e| BundleError::Invalid(format!("{name}: reading: {e}")))?;
    if (buf.len() as u64) < size {
        return Err(BundleError::Invalid(format!(
            "{name}: {} of its {size} bytes: the bundle ends early",
            buf.len()
        )));
    }
    Ok(buf)
}

/// The sha256 (hex) and size of `manifest.json`, streamed.
fn hash_bounded<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    limit: u64,
) -> Result<(String, u64), BundleError> {
    let name = "manifest.json";
    let size = check_size(entry, name, limit)?;
    let mut hasher = Sha256::new();
    let got = io::copy(&mut entry.take(size), &mut hasher)
        .map_err(|e| BundleError::Invalid(format!("{name}: reading: {e}")))?;
    if got < size {
        return Err(BundleError::Invalid(format!(
            "{name}: {got} of its {size} bytes: the bundle ends early"
        )));
    }
    Ok((hex::encode(hasher.finalize()), size))
}
