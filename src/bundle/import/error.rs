//! Why an import stopped, as data: a [`Refusal`] of the bundle as a whole,
//! a [`FileProblem`] of one of its files, or an error of this side (no
//! room, a lock, state, the tree). The CLI prints them; a refusal exits 1
//! and leaves the offline side as it was.

use std::io;
use std::path::PathBuf;

use crate::bundle::BundleError;
use crate::lock::LockError;
use crate::module::{ModVer, ModVerError};
use crate::publish::WriteError;
use crate::state::StateError;
use crate::verify::sumdb::client::SumdbError;
use crate::verify::sumdb::LookupError;
use crate::verify::Quarantine;

/// Why a bundle was refused or could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Bundle(Box<BundleError>),
    // No "refused" here: the CLI's line says it ("import refused <bundle>:").
    #[error("{0}")]
    Refused(Box<Refusal>),
    #[error("{file}: {problem}")]
    File {
        file: String,
        problem: Box<FileProblem>,
    },
    /// A file of a split bundle is not what the manifest says: most likely
    /// its volumes are out of order or one is missing.
    #[error(
        "{error} (the bundle is split into {volumes} volumes: are they all there and in order?)"
    )]
    InVolumes {
        volumes: usize,
        error: Box<ImportError>,
    },
    #[error(
        "not enough free space in {}: the bundle needs {need} bytes, {have} are free",
        dir.display()
    )]
    Space { dir: PathBuf, need: u64, have: u64 },
    #[error(transparent)]
    Lock(#[from] LockError),
    #[error(transparent)]
    Bucket(#[from] crate::publish::bucket::BucketError),
    #[error(transparent)]
    Lease(#[from] crate::publish::lease::LeaseError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("publishing")]
    Publish(#[source] WriteError),
    /// A blocking task panicked: a bug, reported instead of crashing.
    #[error(transparent)]
    Task(#[from] crate::error::TaskError),
    /// The verifier threads went away before every version reached them.
    #[error("internal error in the verifier threads")]
    Verifiers,
}

impl ImportError {
    /// The bundle is refused (exit 1); anything else is this side's
    /// problem (exit 2).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ImportError::Refused(_)
                | ImportError::File { .. }
                | ImportError::Bundle(_)
                | ImportError::InVolumes { .. }
        )
    }
}

impl From<BundleError> for ImportError {
    fn from(e: BundleError) -> Self {
        ImportError::Bundle(Box::new(e))
    }
}

impl From<Refusal> for ImportError {
    fn from(r: Refusal) -> Self {
        ImportError::Refused(Box::new(r))
    }
}

/// One of the bundle's files is wrong.
pub(super) fn file_err(file: &str, problem: FileProblem) -> ImportError {
    ImportError::File {
        file: file.to_owned(),
        problem: Box::new(problem),
    }
}

/// `e` with a hint at the volumes, if the bundle at `path` is split and a
/// file of it came out wrong (another size, hash or place, or the end):
/// the volumes were swapped or one is missing more often than a signed
/// bundle was damaged.
// See: #13
pub(super) fn in_volumes(path: &std::path::Path, e: ImportError) -> ImportError {
    let volumes = crate::bundle::volume::volume_paths(path).map_or(1, |v| v.len());
    let suspicious = matches!(
        &e,
        ImportError::File { problem, .. } if matches!(
            **problem,
            FileProblem::Tar(_)
                | FileProblem::Read(_)
                | FileProblem::Missing
                | FileProblem::Misplaced { .. }
                | FileProblem::Size { .. }
                | FileProblem::Sha256 { .. }
        )
    );
    match suspicious && volumes > 1 {
        true => ImportError::InVolumes {
            volumes,
            error: Box::new(e),
        },
        false => e,
    }
}

/// What makes the bundle as a whole unacceptable here.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    #[error(
        "[import] trusted lists no key: add the verifier key `gomirror keygen` printed on \
         the online side"
    )]
    NoTrustedKey,
    #[error(
        "source {source_name:?} is signed by key {signer}, which is not trusted for \
         {source_name:?} ({})",
        trusted_for(source_name, trusted)
    )]
    NotTrustedForSource {
        source_name: String,
        signer: String,
        /// `name+hash` of the keys trusted for the source.
        trusted: Vec<String>,
    },
    #[error(
        "{origin} bundle {sequence} is already applied with id {applied}, this one has id {id}"
    )]
    AppliedWithOtherId {
        origin: String,
        sequence: u64,
        applied: String,
        id: String,
    },
    #[error(
        "a gap: this mirror has applied no bundle, so it expects {origin}'s bundle 1 or a \
         --full bundle; got bundle {got}"
    )]
    NotFirst { origin: String, got: u64 },
    #[error(
        "from another source: this mirror follows {follows}, the bundle comes from {origin} \
         (a --full bundle may switch sources)"
    )]
    OtherSource { follows: String, origin: String },
    #[error(
        "a gap: this mirror is at {origin} bundle {at}, so it expects bundle {}; got bundle {got}",
        at + 1
    )]
    Gap { origin: String, at: u64, got: u64 },
    #[error(
        "bundle {sequence} follows {}, but this mirror applied {applied} as bundle {at}",
        follows.as_deref().unwrap_or("nothing")
    )]
    Follows {
        sequence: u64,
        follows: Option<String>,
        applied: String,
        at: u64,
    },
    #[error("manifest names {path}@{version}: {error}")]
    BadVersion {
        path: String,
        version: String,
        error: ModVerError,
    },
    #[error("manifest names {0} twice")]
    Twice(ModVer),
    #[error("the bundle changed while it was being read")]
    Changed,
    #[error("the bundle holds files its manifest does not name")]
    Unnamed,
    #[error(
        "the bundle carries no checksum-database records, and this mirror verifies against \
         {db} ([sumdb] key = \"off\" accepts unverified bundles)"
    )]
    NoRecords { db: String },
    #[error(
        "the bundle is pinned to checksum database {pinned}, this mirror verifies against {db}"
    )]
    OtherDatabase { pinned: String, db: String },
    /// A head that does not open with this mirror's key (the bundle's, or
    /// the one stored).
    #[error("{0}")]
    Head(Box<SumdbError>),
    #[error("the manifest's tree head does not match its signed note")]
    HeadMismatch,
    #[error(
        "SECURITY ERROR: the bundle's tree head {pin} is not consistent with tree {newest} \
         this mirror verified before: {proof}"
    )]
    Inconsistent {
        pin: i64,
        newest: i64,
        proof: String,
    },
    /// The commit found a different head of the pinned size stored.
    #[error("{0}")]
    Fork(String),
    #[error("{mv}: .info comes before its .mod and .zip")]
    InfoFirst { mv: ModVer },
    #[error("{mv}: no checksum-database lookup in the bundle")]
    NoLookup { mv: ModVer },
    #[error("{mv}: the bundle has no .info for it")]
    NoInfo { mv: ModVer },
    #[error("the manifest names {named} versions, the bundle holds the files of {held}")]
    Count { named: usize, held: usize },
}

/// The end of [`Refusal::NotTrustedForSource`]'s message.
fn trusted_for(source: &str, trusted: &[String]) -> String {
    match trusted {
        [] => format!(
            "no key is: a key in [import] trusted is trusted for the source of its own name; \
             bind others with [[import.source]] name = {source:?}, keys = [...]"
        ),
        keys => format!("trusted: {}", keys.join(", ")),
    }
}

/// What is wrong with one file of the bundle.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    #[error("reading tar: {0}")]
    Tar(io::Error),
    #[error("reading: {0}")]
    Read(io::Error),
    #[error("missing: the bundle ends early")]
    Missing,
    #[error("expected here, found {found:?}")]
    Misplaced { found: String },
    #[error("larger than {limit} bytes")]
    LargerThan { limit: u64 },
    #[error("{tar} bytes in the tar, {manifest} in the manifest")]
    Size { tar: u64, manifest: u64 },
    #[error("sha256 {got}, the signed manifest says {want}")]
    Sha256 { got: String, want: String },
    #[error("not a file gomirror publishes for this bundle's versions")]
    NotPublished,
    #[error("is not the head the manifest pins")]
    NotThePin,
    /// The version fails the checks a download from upstream must pass.
    #[error("{}", .0.kind)]
    Verify(Quarantine),
    #[error("hashes to {zip} and go.mod {go_mod}, the manifest says {want_zip} and {want_mod}")]
    Hashes {
        zip: String,
        go_mod: String,
        want_zip: String,
        want_mod: String,
    },
    #[error(
        "the checksum database says {zip} and go.mod {go_mod}, the manifest {want_zip} and \
         {want_mod}"
    )]
    Record {
        zip: String,
        go_mod: String,
        want_zip: String,
        want_mod: String,
    },
    #[error("{0}")]
    Lookup(LookupError),
    #[error("{0}")]
    Head(Box<SumdbError>),
    #[error("signed tree {n}: {proof}")]
    SignedTree { n: i64, proof: String },
    /// The record is not proved to be in the pinned tree.
    #[error("{0}")]
    Inclusion(String),
    /// Publishing it would change a published file.
    #[error("{0}")]
    Clash(WriteError),
    /// The commit did not publish it.
    #[error("{0}")]
    Unpublished(String),
}
