//! Air-gap bundles: the files a sync added to the tree, carried to an
//! offline mirror as one signed, chained tar stream.
//!
//! - [`manifest`]: what a bundle holds (`manifest.json`), its id and its
//!   signature (`manifest.sig`, a signed note), shared by export and import.
//! - [`volume`]: the bundle's bytes on disk, one file or `.000`, `.001`, …
//!   volumes, zstd-compressed or not; read back as one stream.
//! - [`export`]: the online side, state + tree → bundle, recorded in state
//!   only once the bundle is completely written and fsynced.
//!
//! Tar layout: `manifest.json`, `manifest.sig`, then `tree/<path>` for every
//! [`manifest::FileEntry`] in manifest order; regular files, mode 0644,
//! mtime 0.

pub mod export;
pub mod head;
pub mod import;
pub mod inspect;
pub mod manifest;
pub mod volume;

use std::io;
use std::path::{Path, PathBuf};

use crate::lock::LockError;
use crate::state::StateError;
use crate::verify::sumdb::note::NoteError;

/// Everything that can go wrong writing, reading or checking a bundle.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Bucket(#[from] crate::publish::bucket::BucketError),
    #[error("{}: {op}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("manifest.json: {0}")]
    ManifestJson(String),
    #[error(
        "manifest.json: format {found} is not supported (this gomirror reads format {supported})"
    )]
    Format { found: u32, supported: u32 },
    #[error("manifest.sig: {reason}")]
    Signature { reason: String },
    #[error("manifest.sig: signed by {key}, which is not a trusted key")]
    UnknownKey { key: String },
    #[error("manifest.sig: signature by {key}")]
    BadSignature {
        key: String,
        #[source]
        source: NoteError,
    },
    #[error("manifest.sig: {line:?} does not match manifest.json ({want:?})")]
    SignedLine { line: String, want: String },
    #[error("{}: {reason}", path.display())]
    Malformed { path: PathBuf, reason: String },
    #[error("signing key {}", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: NoteError,
    },
    #[error("signing key {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    #[error("not enough free space in {}: the bundle needs up to {need} bytes, {free} are free", dir.display())]
    NoSpace { dir: PathBuf, need: u64, free: u64 },
    #[error("{path}: changed while it was exported (sha256 {got}, manifest {want})")]
    Changed {
        path: String,
        want: String,
        got: String,
    },
    #[error("{path}: tree file")]
    TreeFile {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Invalid(String),
    /// A volume of a split bundle is missing or out of place.
    #[error("{}: {reason}", path.display())]
    Volume { path: PathBuf, reason: String },
    /// The file is not a bundle (or not its first volume) at all.
    #[error("not a gomirror bundle: {reason}")]
    NotABundle { reason: String },
    #[error("export needs an [export] key in the config")]
    NoExportKey,
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error("checksum database {name}: the tree's sumdb/{name}/latest")]
    Head {
        name: String,
        #[source]
        source: Box<crate::verify::sumdb::client::SumdbError>,
    },
    #[error("export task stopped: {0}")]
    Join(String),
}

/// Maps an `io::Error` to [`BundleError::Io`] naming `path` and `op`.
pub(crate) fn io_err(
    op: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(io::Error) -> BundleError {
    let path = path.into();
    move |source| BundleError::Io { op, path, source }
}

/// Bytes available to an unprivileged writer in `dir`'s file system.
/// Test seam: `GOMIRROR_TEST_FREE_BYTES` replaces it, so the integration
/// tests can run out of space without a small file system. Read nowhere
/// else.
pub(crate) fn free_bytes(dir: &Path) -> io::Result<u64> {
    if let Some(free) = std::env::var("GOMIRROR_TEST_FREE_BYTES")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return Ok(free);
    }
    let st = rustix::fs::statvfs(dir)?;
    Ok(st.f_bavail.saturating_mul(st.f_frsize))
}
