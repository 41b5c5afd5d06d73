//! Phase 1, before anything is written: the signed manifest (read with
//! [`crate::bundle::head`]: its key must be trusted, and trusted for the
//! bundle's source), the chain (the next bundle of the source this mirror
//! follows, or `--full`), and room in the tree.

use std::path::Path;

use crate::bundle::head::{self, SignedHead};
use crate::bundle::manifest::{self, Manifest};
use crate::bundle::BundleError;
use crate::config::Config;
use crate::publish::atomic;
use crate::state::{ImportChain, Store};
use crate::verify::sumdb::note::Verifier;

use super::{ImportError, Refusal};

/// Every key `[import]` trusts for some source.
pub(super) fn trusted_keys(config: &Config) -> Result<Vec<Verifier>, ImportError> {
    let keys: Vec<Verifier> = config.import_keys().into_iter().cloned().collect();
    if keys.is_empty() {
        return Err(Refusal::NoTrustedKey.into());
    }
    Ok(keys)
}

/// The signed manifest, opened and checked.
pub(super) type Header = SignedHead;

/// Reads the head of the bundle at `path`: signed by one of `trusted`,
/// and by a key trusted for its source (`bound` gives those keys).
pub(super) fn read_header(
    path: &Path,
    trusted: &[Verifier],
    bound: impl Fn(&str) -> Vec<Verifier>,
) -> Result<Header, ImportError> {
    let verifiers: Vec<&Verifier> = trusted.iter().collect();
    let mut header = head::read_signed(path, &verifiers)?;
    let source = header.manifest.source.clone();
    let for_source = bound(&source);
    let for_source_refs: Vec<&Verifier> = for_source.iter().collect();
    // Any of the note's signatures may be the one by a key of the source.
    match manifest::open(&header.sig, &header.json, &for_source_refs) {
        Ok((_, signer)) => header.signer = signer,
        Err(BundleError::UnknownKey { .. }) => {
            return Err(Refusal::NotTrustedForSource {
                source_name: source,
                signer: header.signer,
                trusted: for_source
                    .iter()
                    .map(|v| format!("{}+{:08x}", v.name(), v.key_hash()))
                    .collect(),
            }
            .into())
        }
        Err(e) => return Err(e.into()),
    }
    Ok(header)
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
