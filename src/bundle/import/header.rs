//! Phase 1, before anything is written: the signed manifest (its key must
//! be trusted), the chain (the next bundle of the source this mirror
//! follows, or `--full`), and room in the tree.

use std::io::Read;
use std::path::Path;

use crate::bundle::manifest::{self, Manifest};
use crate::bundle::volume;
use crate::config::Config;
use crate::publish::atomic;
use crate::state::{ImportChain, Store};
use crate::verify::sumdb::note::Verifier;

use super::error::file_err;
use super::{FileProblem, ImportError, Refusal};

pub(super) fn trusted_keys(config: &Config) -> Result<&[Verifier], ImportError> {
    if config.import_trusted.is_empty() {
        return Err(Refusal::NoTrustedKey.into());
    }
    Ok(&config.import_trusted)
}

/// The signed manifest, opened and checked.
pub(super) struct Header {
    pub(super) manifest: Manifest,
    pub(super) json: Vec<u8>,
    pub(super) id: String,
    pub(super) signer: String,
}

/// Manifests hold one line per file; this bounds what a hostile bundle can
/// make us hold before its signature is checked.
pub(super) const MAX_MANIFEST: u64 = 512 << 20;
pub(super) const MAX_SIGNATURE: u64 = 64 << 10;

pub(super) fn read_header(path: &Path, trusted: &[Verifier]) -> Result<Header, ImportError> {
    let mut archive = tar::Archive::new(volume::open_stream(path)?);
    let mut entries = archive
        .entries()
        .map_err(|e| file_err("bundle", FileProblem::Tar(e)))?;
    let json = read_entry(&mut entries, "manifest.json", MAX_MANIFEST)?;
    let sig = read_entry(&mut entries, "manifest.sig", MAX_SIGNATURE)?;
    let verifiers: Vec<&Verifier> = trusted.iter().collect();
    let (manifest, signer) = manifest::open(&sig, &json, &verifiers)?;
    Ok(Header {
        id: manifest::bundle_id(&json),
        manifest,
        json,
        signer,
    })
}

/// The next tar entry, which must be `name`, read whole (at most `limit`).
pub(super) fn read_entry<R: Read>(
    entries: &mut tar::Entries<'_, R>,
    name: &str,
    limit: u64,
) -> Result<Vec<u8>, ImportError> {
    let mut entry = entries
        .next()
        .ok_or_else(|| file_err(name, FileProblem::Missing))?
        .map_err(|e| file_err(name, FileProblem::Tar(e)))?;
    let found = entry
        .path()
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default();
    if found != name {
        return Err(file_err(name, FileProblem::Misplaced { found }));
    }
    if entry.size() > limit {
        let size = entry.size();
        return Err(file_err(name, FileProblem::TooLarge { size, limit }));
    }
    let mut buf = Vec::with_capacity(entry.size() as usize);
    entry
        .read_to_end(&mut buf)
        .map_err(|e| file_err(name, FileProblem::Read(e)))?;
    Ok(buf)
}

/// Go on with this bundle (`false`), or it was applied already (`true`).
pub(super) async fn check_chain(
    store: &Store,
    m: &Manifest,
    id: &str,
) -> Result<bool, ImportError> {
    let ImportChain {
        last,
        same_sequence: same,
    } = store.import_chain(&m.source, m.sequence).await?;
    if let Some(done) = same {
        if done.bundle_id == id {
            return Ok(true);
        }
        return Err(Refusal::AppliedWithOtherId {
            origin: m.source.clone(),
            sequence: m.sequence,
            applied: done.bundle_id,
            id: id.to_owned(),
        }
        .into());
    }
    if m.full {
        return Ok(false);
    }
    let refusal = match last {
        None if m.sequence == 1 && m.follows.is_none() => return Ok(false),
        None => Refusal::NotFirst {
            origin: m.source.clone(),
            got: m.sequence,
        },
        Some(l) if l.source != m.source => Refusal::OtherSource {
            follows: l.source,
            origin: m.source.clone(),
        },
        Some(l) if m.sequence != l.sequence + 1 => Refusal::Gap {
            origin: l.source,
            at: l.sequence,
            got: m.sequence,
        },
        Some(l) if m.follows.as_deref() != Some(l.bundle_id.as_str()) => Refusal::Follows {
            sequence: m.sequence,
            follows: m.follows.clone(),
            applied: l.bundle_id,
            at: l.sequence,
        },
        Some(_) => return Ok(false),
    };
    Err(refusal.into())
}

/// Room for the bundle's files (plus 1 % and 16 MiB for directories and
/// metadata) in the tree's file system.
pub(super) fn check_space(dir: &Path, bytes: u64) -> Result<(), ImportError> {
    let need = bytes + bytes / 100 + (16 << 20);
    let have = crate::bundle::free_bytes(dir)
        .map_err(|e| ImportError::Publish(atomic::io_err("statvfs", dir)(e)))?;
    if have < need {
        return Err(ImportError::Space {
            dir: dir.to_owned(),
            need,
            have,
        });
    }
    Ok(())
}
