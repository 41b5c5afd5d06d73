//! An object-storage tree: the served tree as objects under a prefix of an
//! S3-compatible bucket (`[tree] url = "s3://bucket/prefix"`, see: #17).
//!
//! The keys are the tree's relative names (`layout::version_rel`, …), so a
//! bucket laid out this way answers the GOPROXY protocol with plain GETs.
//! What the local tree gets from the file system, the bucket gets like this:
//!
//! - an immutable object (module files, lookups, tiles, `supported`) is
//!   written once: with a conditional put (`If-None-Match: *`), or, for a
//!   body large enough to go in parts (object_store offers no conditional
//!   multipart put), after a HEAD that finds the key free. Either way the
//!   object carries its sha256 as metadata, and a key found holding other
//!   bytes is [`WriteError::Conflict`], never an overwrite;
//! - lists, `@latest` and `latest` are plain puts, which replace the object
//!   atomically (a reader sees the old body or the new one);
//! - a completed put is durable, so the local tree's barriers are no-ops
//!   here: the commit order is kept by finishing every put of one step
//!   before the next step starts;
//! - every object carries the `Content-Type` and `Cache-Control` the
//!   shipped nginx block gives the same name ([`attributes`]).
//!
//! Bodies come from the staged temporary files and are streamed: a file
//! of up to [`SINGLE_PUT_MAX`] bytes is one put, a larger one a multipart
//! upload of [`PART_SIZE`] parts, at most [`PARTS_IN_FLIGHT`] at once,
//! journaled in the staging directory while it is open so that the next run
//! aborts one a killed run left (`uploads.rs`).
//!
//! Everything here blocks (like the rest of `publish`): it runs the store's
//! requests on the runtime that opened the bucket, from the blocking pool.
//! Requests are retried by object_store (throttling, 5xx, resets) within
//! its retry budget; an error after that stops the commit, and nothing the
//! failed step would have listed is listed.

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::stream::{self, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as Key;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload,
};
use sha2::{Digest, Sha256};

use super::atomic::{Placed, WriteError};

mod uploads;
pub use uploads::JOURNAL_DIR;

/// Bodies up to this size go in one put (held in memory while it is sent).
pub const SINGLE_PUT_MAX: u64 = 8 << 20;
/// The part size of a multipart upload (S3's minimum is 5 MiB).
pub const PART_SIZE: usize = 8 << 20;
/// Parts of one upload sent at once.
pub const PARTS_IN_FLIGHT: usize = 2;
/// Requests (puts, HEADs, small GETs) in flight at once within one commit
/// step: a store's answer takes a round trip (10–50 ms to S3), so a batch
/// of a few thousand requests needs this many at once to finish in tens of
/// round trips; bodies are bounded by [`IN_MEMORY_KIB`], not by this.
pub const PUTS_IN_FLIGHT: usize = 32;
/// Bodies held in memory at once, in KiB: a single put holds its whole
/// body, a multipart upload its parts in flight. Puts wait for room, so 64
/// puts of 8 MiB bodies do not take 512 MiB.
pub const IN_MEMORY_KIB: u32 = 24 << 10;
/// Attempts of a conditional put that fails in transit.
const PUT_ATTEMPTS: u32 = 6;
/// The first wait between them; doubled each time (0.2 s … 6.4 s).
const PUT_BACKOFF: std::time::Duration = std::time::Duration::from_millis(100);

/// An error a retry may cure: in transit, or the store's own (5xx, 503
/// SlowDown), not an answer about the object or the request.
fn transient(e: &object_store::Error) -> bool {
    matches!(e, object_store::Error::Generic { .. })
}

/// The user metadata key holding an immutable object's sha256 (hex).
const SHA256_META: &str = "sha256";

/// Where an object-storage tree lives, from `[tree]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketSettings {
    /// `s3://bucket/prefix`, as configured (for messages).
    pub url: String,
    pub bucket: String,
    /// Keys are `<prefix>/<relative name>`; empty: the bucket's root.
    pub prefix: String,
    /// An S3-compatible endpoint (`http://127.0.0.1:9000`); `None`: AWS.
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// The bucket could not be opened or answered with an error.
#[derive(Debug, thiserror::Error)]
pub enum BucketError {
    #[error("object store {url}")]
    Open {
        url: String,
        #[source]
        source: StoreError,
    },
    #[error("object store {url}: bucket {bucket:?} does not exist, or refuses these credentials")]
    Missing {
        url: String,
        bucket: String,
        #[source]
        source: StoreError,
    },
}

/// What an object store said, once: object_store's errors repeat their
/// cause at every level ("Error performing HEAD … 403 Forbidden: …: Error
/// performing HEAD …"), so the chain is cut to its most specific message
/// that names the request.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    message: String,
    /// The store answered 404 (a missing key or bucket).
    pub not_found: bool,
}

impl From<object_store::Error> for StoreError {
    fn from(e: object_store::Error) -> StoreError {
        let not_found = matches!(e, object_store::Error::NotFound { .. });
        let mut messages = Vec::new();
        let mut next: Option<&dyn std::error::Error> = Some(&e);
        while let Some(err) = next {
            messages.push(err.to_string());
            next = err.source();
        }
        // The deepest message naming the request (method and URL), else the
        // outermost one; trailing separators of empty bodies dropped.
        let message = messages
            .iter()
            .rev()
            .find(|m| m.contains("Error performing"))
            .unwrap_or(&messages[0]);
        let message = message.split(": : ").next().unwrap_or(message);
        StoreError {
            message: message.trim_end_matches([':', ' ']).to_owned(),
            not_found,
        }
    }
}

/// An open object-storage tree.
#[derive(Clone)]
pub struct Bucket {
    store: Arc<AmazonS3>,
    settings: Arc<BucketSettings>,
    runtime: tokio::runtime::Handle,
    /// KiB of bodies in memory at once, across every put in flight.
    in_memory: Arc<tokio::sync::Semaphore>,
    /// Where open multipart uploads are journaled until completed or
    /// aborted, so that the next run aborts those a killed run left
    /// (`uploads.rs`); set by [`Bucket::with_journal`] for a tree's bucket.
    journal: Option<uploads::Journal>,
    /// Sends the requests object_store cannot (starting an upload whose id
    /// we keep, `uploads.rs`).
    http: reqwest::Client,
}

impl fmt::Debug for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bucket")
            .field("url", &self.settings.url)
            .finish()
    }
}

impl Bucket {
    /// Opens the bucket with credentials from the usual AWS environment
    /// (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// web identity, the instance or task role) and checks it answers: a
    /// missing bucket or credentials it refuses fail here, naming both.
    /// Must be called on a Tokio runtime, whose handle it keeps.
    pub async fn open(settings: &BucketSettings) -> Result<Bucket, BucketError> {
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(&settings.bucket);
        if let Some(endpoint) = &settings.endpoint {
            builder = builder
                .with_endpoint(endpoint)
                .with_allow_http(endpoint.starts_with("http://"));
        }
        if let Some(region) = &settings.region {
            builder = builder.with_region(region);
        }
        let store = builder.build().map_err(|source| BucketError::Open {
            url: settings.url.clone(),
            source: source.into(),
        })?;
        let bucket = Bucket {
            store: Arc::new(store),
            settings: Arc::new(settings.clone()),
            runtime: tokio::runtime::Handle::current(),
            in_memory: Arc::new(tokio::sync::Semaphore::new(IN_MEMORY_KIB as usize)),
            journal: None,
            http: uploads::http_client(),
        };
        bucket.probe().await?;
        Ok(bucket)
    }

    /// `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.settings.url
    }

    /// What the key of `rel` is shown as in messages: `s3://bucket/prefix/rel`.
    pub fn display_path(&self, rel: &str) -> PathBuf {
        PathBuf::from(format!("{}/{rel}", self.settings.url.trim_end_matches('/')))
    }

    /// One LIST of at most a page under the prefix: what a bucket that
    /// exists answers to credentials it accepts. (A HEAD would not do: a
    /// missing key and a missing bucket are both 404.)
    async fn probe(&self) -> Result<(), BucketError> {
        let prefix = match self.settings.prefix.as_str() {
            "" => None,
            p => Some(Key::parse(p).map_err(|e| BucketError::Open {
                url: self.settings.url.clone(),
                source: StoreError::from(object_store::Error::from(e)),
            })?),
        };
        match self.store.list_with_delimiter(prefix.as_ref()).await {
            Ok(_) => Ok(()),
            Err(source) => Err(BucketError::Missing {
                url: self.settings.url.clone(),
                bucket: self.settings.bucket.clone(),
                source: source.into(),
            }),
        }
    }

    /// The store, for the lease.
    pub(super) fn store(&self) -> &AmazonS3 {
        &self.store
    }

    /// `<prefix>.gomirror-lease`: beside the served prefix, never under it.
    pub(super) fn lease_key(&self) -> Key {
        let name = format!("{}.gomirror-lease", self.settings.prefix);
        Key::parse(&name).unwrap_or_else(|_| Key::from(".gomirror-lease"))
    }

    fn key(&self, rel: &str) -> Result<Key, object_store::Error> {
        let full = match self.settings.prefix.as_str() {
            "" => rel.to_owned(),
            prefix => format!("{prefix}/{rel}"),
        };
        Key::parse(full).map_err(object_store::Error::from)
    }

    fn error(&self, op: &'static str, rel: &str, source: object_store::Error) -> WriteError {
        WriteError::Store {
            op,
            key: self.display_path(rel).display().to_string(),
            source: source.into(),
        }
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.runtime.block_on(f)
    }

    /// The sha256 of the object at `rel`, `None` if there is none: from its
    /// metadata when it carries one, else by reading it.
    pub fn sha256(&self, rel: &str) -> Result<Option<[u8; 32]>, WriteError> {
        self.block_on(self.sha256_async(rel))
    }

    async fn sha256_async(&self, rel: &str) -> Result<Option<[u8; 32]>, WriteError> {
        let key = self.key(rel).map_err(|e| self.error("name", rel, e))?;
        let head = GetOptions {
            head: true,
            ..GetOptions::default()
        };
        let found = match self.store.get_opts(&key, head).await {
            Ok(found) => found,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("head", rel, e)),
        };
        let recorded = found
            .attributes
            .get(&Attribute::Metadata(SHA256_META.into()))
            .and_then(|v| hex::decode(v.as_ref()).ok())
            .and_then(|v| <[u8; 32]>::try_from(v).ok());
        if let Some(sha) = recorded {
            return Ok(Some(sha));
        }
        // Written by something else: hash what it serves.
        let got = match self.store.get(&key).await {
            Ok(got) => got,
            Err(object_store::Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(self.error("get", rel, e)),
        };
        let mut hasher = Sha256::new();
        let mut body = got.into_stream();
        while let Some(chunk) = body.next().await {
            hasher.update(chunk.map_err(|e| self.error("get", rel, e))?);
        }
        Ok(Some(hasher.finalize().into()))
    }

    /// The sha256 of each object of `rels` ([`Bucket::sha256`]), at most
    /// [`PUTS_IN_FLIGHT`] asked at once.
    pub fn sha256_all(&self, rels: &[String]) -> Vec<Result<Option<[u8; 32]>, WriteError>> {
        self.block_on(each(rels, |rel| self.sha256_async(rel)))
    }

    /// The object at `rel`, at most `max` bytes of it; `None` if there is none.
    pub fn read(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, WriteError> {
        self.block_on(self.read_async(rel, max))
    }

    /// [`Bucket::sha256_all`] of `hashed` and [`Bucket::read_all`] of
    /// `read` (each at most `max` bytes), both at the same time.
    #[allow(clippy::type_complexity)]
    pub fn sha256_and_read_all(
        &self,
        hashed: &[String],
        read: &[String],
        max: u64,
    ) -> (
        Vec<Result<Option<[u8; 32]>, WriteError>>,
        Vec<Result<Option<Vec<u8>>, WriteError>>,
    ) {
        let hashed = each(hashed, |rel| self.sha256_async(rel));
        let read = each(read, |rel| self.read_async(rel, max));
        self.block_on(async { futures::join!(hashed, read) })
    }

    /// [`Bucket::read`] of each of `rels`, at most [`PUTS_IN_FLIGHT`] at once.
    pub fn read_all(&self, rels: &[String], max: u64) -> Vec<Result<Option<Vec<u8>>, WriteError>> {
        self.block_on(each(rels, |rel| self.read_async(rel, max)))
    }

    /// [`Bucket::read`], for async callers.
    pub async fn read_async(&self, rel: &str, max: u64) -> Result<Option<Vec<u8>>, WriteError> {
        {
            let key = self.key(rel).map_err(|e| self.error("name", rel, e))?;
            let got = match self.store.get(&key).await {
                Ok(got) => got,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(self.error("get", rel, e)),
            };
            let mut out = Vec::new();
            let mut body = got.into_stream();
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| self.error("get", rel, e))?;
                let room = usize::try_from(max).unwrap_or(usize::MAX) - out.len();
                out.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if out.len() as u64 >= max {
                    break;
                }
            }
            Ok(Some(out))
        }
    }

    /// Whether an object exists at `rel`.
    pub fn exists(&self, rel: &str) -> Result<bool, WriteError> {
        self.block_on(self.exists_async(rel))
    }

    /// [`Bucket::exists`] of each of `rels`, at most [`PUTS_IN_FLIGHT`] at once.
    pub fn exists_all(&self, rels: &[String]) -> Vec<Result<bool, WriteError>> {
        self.block_on(each(rels, |rel| self.exists_async(rel)))
    }

    /// [`Bucket::exists`], for async callers: one HEAD.
    async fn exists_async(&self, rel: &str) -> Result<bool, WriteError> {
        let key = self.key(rel).map_err(|e| self.error("name", rel, e))?;
        match self.store.head(&key).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(self.error("head", rel, e)),
        }
    }

    /// Writes every immutable object of `puts` (at most [`PUTS_IN_FLIGHT`]
    /// at once) and returns each one's result, in order. A key that holds
    /// the same bytes already is [`Placed::AlreadyPresent`]; one that holds
    /// others is [`WriteError::Conflict`].
    pub fn put_all_immutable(&self, puts: Vec<Immutable>) -> Vec<Result<Placed, WriteError>> {
        self.block_on(
            stream::iter(puts)
                .map(|p| async move { self.put_immutable(&p).await })
                .buffered(PUTS_IN_FLIGHT)
                .collect(),
        )
    }

    async fn put_immutable(&self, p: &Immutable) -> Result<Placed, WriteError> {
        let rel = p.rel.as_str();
        let key = self.key(rel).map_err(|e| self.error("name", rel, e))?;
        let mut attributes = attributes(rel);
        attributes.insert(
            Attribute::Metadata(SHA256_META.into()),
            AttributeValue::from(hex::encode(p.sha256)),
        );
        let size = p.body.size().map_err(|e| WriteError::Io {
            op: "stat",
            path: p.body.path().unwrap_or(Path::new("")).to_owned(),
            source: e,
        })?;
        if size > SINGLE_PUT_MAX {
            // No conditional multipart put: look first, and a key found
            // taken is judged like a refused conditional put.
            if let Some(existing) = self.sha256_async(rel).await? {
                return self.judge(rel, existing, &p.sha256);
            }
            let path = p.body.path().expect("only files exceed SINGLE_PUT_MAX");
            // `send_parts` holds the parts in flight, no more.
            let parts = (PART_SIZE * PARTS_IN_FLIGHT) as u64;
            let _room = self.room(parts).await;
            self.upload_parts(&key, rel, path, attributes).await?;
            return Ok(Placed::Created);
        }
        let room = self.room(size).await;
        let payload = p.body.payload().map_err(|e| WriteError::Io {
            op: "read",
            path: p.body.path().unwrap_or(Path::new("")).to_owned(),
            source: e,
        })?;
        let options = PutOptions {
            mode: PutMode::Create,
            attributes,
            ..PutOptions::default()
        };
        // object_store does not retry a conditional put that failed in
        // transit (it may have succeeded); it is safe here: a put of ours
        // that did succeed answers AlreadyExists, judged by its sha256.
        let put = retried(rel, transient, || {
            self.store.put_opts(&key, payload.clone(), options.clone())
        })
        .await;
        drop(payload);
        drop(room);
        match put {
            Ok(_) => Ok(Placed::Created),
            Err(object_store::Error::AlreadyExists { .. }) => {
                match self.sha256_async(rel).await? {
                    Some(existing) => self.judge(rel, existing, &p.sha256),
                    // Deleted again since (a prune elsewhere): try once more.
                    None => Box::pin(self.put_immutable(p)).await,
                }
            }
            Err(e) => Err(self.error("put", rel, e)),
        }
    }

    /// Waits until `bytes` more fit in [`IN_MEMORY_KIB`] (all of it, for a
    /// body larger than that) and holds them until dropped.
    async fn room(&self, bytes: u64) -> tokio::sync::SemaphorePermit<'_> {
        let kib = u32::try_from(bytes.div_ceil(1024))
            .unwrap_or(u32::MAX)
            .min(IN_MEMORY_KIB);
        self.in_memory
            .acquire_many(kib)
            .await
            .expect("the semaphore is never closed")
    }

    fn judge(&self, rel: &str, existing: [u8; 32], new: &[u8; 32]) -> Result<Placed, WriteError> {
        if &existing == new {
            Ok(Placed::AlreadyPresent)
        } else {
            Err(WriteError::Conflict {
                path: self.display_path(rel),
                existing: hex::encode(existing),
                new: hex::encode(new),
            })
        }
    }

    /// Streams `path` in parts of an upload journaled in the staging
    /// directory until it is completed or aborted (`uploads.rs`); a failure
    /// aborts the upload, so no part of it is ever visible.
    async fn upload_parts(
        &self,
        key: &Key,
        rel: &str,
        path: &Path,
        attributes: Attributes,
    ) -> Result<(), WriteError> {
        let id = self
            .start_upload(key, &attributes)
            .await
            .map_err(|source| WriteError::Store {
                op: "start upload",
                key: self.display_path(rel).display().to_string(),
                source,
            })?;
        // Journaled before the first part is sent: a kill from here on
        // leaves an entry the next run aborts.
        let entry = match self.journal_upload(key, &id) {
            Ok(entry) => entry,
            Err(e) => {
                self.abort_upload(key, &id, false).await;
                return Err(e);
            }
        };
        let done = match self.send_parts(key, rel, path, &id).await {
            Ok(parts) => self.complete_upload(key, rel, &id, parts).await,
            Err(e) => Err(e),
        };
        // An upload not aborted stays journaled, for the next run.
        if done.is_ok() || self.abort_upload(key, &id, entry.is_some()).await {
            self.forget_upload(entry);
        }
        done
    }

    /// Replaces the objects of `puts` (lists, `@latest`, `latest`), at most
    /// [`PUTS_IN_FLIGHT`] at once; the first error is returned once every
    /// put has ended.
    pub fn put_all_replacing(&self, puts: Vec<(String, Vec<u8>)>) -> Result<(), WriteError> {
        let results: Vec<Result<(), WriteError>> = self.block_on(
            stream::iter(puts)
                .map(|(rel, body)| async move {
                    let key = self.key(&rel).map_err(|e| self.error("name", &rel, e))?;
                    let mut attributes = attributes(&rel);
                    attributes.insert(
                        Attribute::Metadata(SHA256_META.into()),
                        AttributeValue::from(hex::encode(Sha256::digest(&body))),
                    );
                    let options = PutOptions {
                        mode: PutMode::Overwrite,
                        attributes,
                        ..PutOptions::default()
                    };
                    self.store
                        .put_opts(&key, PutPayload::from(body), options)
                        .await
                        .map(drop)
                        .map_err(|e| self.error("put", &rel, e))
                })
                .buffered(PUTS_IN_FLIGHT)
                .collect(),
        );
        results.into_iter().collect()
    }

    /// Deletes the objects of `rels`, at most [`PUTS_IN_FLIGHT`] at once; a
    /// key already gone counts as deleted. Returns how many were deleted.
    pub fn delete_all(&self, rels: Vec<String>) -> Result<usize, WriteError> {
        let results = self.block_on(each(&rels, |rel| async move {
            if !self.exists_async(rel).await? {
                return Ok(false);
            }
            let key = self.key(rel).map_err(|e| self.error("name", rel, e))?;
            match self.store.delete(&key).await {
                Ok(()) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(self.error("delete", rel, e)),
            }
        }));
        let mut n = 0;
        for r in results {
            n += usize::from(r?);
        }
        Ok(n)
    }
}

impl Bucket {
    /// The object at `rel` for reading, streamed, with its size; an
    /// `io::ErrorKind::NotFound` error if there is none. Blocking: for the
    /// blocking pool, like the rest of `publish`.
    pub fn open_read(&self, rel: &str) -> std::io::Result<(ObjectReader, u64)> {
        let key = self.key(rel).map_err(io_error)?;
        let got = self.block_on(self.store.get(&key)).map_err(io_error)?;
        let size = got.meta.size;
        let reader = ObjectReader {
            runtime: self.runtime.clone(),
            body: got.into_stream(),
            chunk: bytes::Bytes::new(),
        };
        Ok((reader, size))
    }

    /// The names of the objects directly in `rel_dir` (none below its
    /// subdirectories), relative to the tree, in no particular order. One
    /// LIST with a delimiter, which a store answers from that directory's
    /// keys alone (s3s-fs walks the whole bucket for one without).
    pub fn list_in(&self, rel_dir: &str) -> std::io::Result<Vec<String>> {
        let key = self.key(rel_dir).map_err(io_error)?;
        let listed = self
            .block_on(self.store.list_with_delimiter(Some(&key)))
            .map_err(io_error)?;
        Ok(listed
            .objects
            .iter()
            .map(|m| self.rel(&m.location))
            .collect())
    }

    /// The names of the objects under `rel_dir`, relative to the tree, in no
    /// particular order. One LIST (paged by the store).
    pub fn list_under(&self, rel_dir: &str) -> std::io::Result<Vec<String>> {
        use futures::TryStreamExt;
        let key = self.key(rel_dir).map_err(io_error)?;
        let listed: Vec<object_store::ObjectMeta> = self
            .block_on(self.store.list(Some(&key)).try_collect())
            .map_err(io_error)?;
        Ok(listed.iter().map(|m| self.rel(&m.location)).collect())
    }

    /// The tree-relative name of a listed `key` (under the prefix): the
    /// inverse of [`Bucket::key`].
    fn rel(&self, key: &Key) -> String {
        let skip = match self.settings.prefix.as_str() {
            "" => 0,
            p => p.len() + 1,
        };
        key.as_ref()[skip..].to_owned()
    }
}

/// `op` again after a failure `is_transient` says a retry may cure, at most
/// [`PUT_ATTEMPTS`] times in all, waiting [`PUT_BACKOFF`] doubled each
/// time: for the requests object_store does not retry itself (a conditional
/// put, the start of an upload). `what` names the object in the log.
async fn retried<T, E, Fut>(
    what: &str,
    is_transient: impl Fn(&E) -> bool,
    mut op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut attempt = 0;
    loop {
        match op().await {
            Err(e) if attempt + 1 < PUT_ATTEMPTS && is_transient(&e) => {
                attempt += 1;
                tracing::debug!(what, attempt, "retrying: {e}");
                tokio::time::sleep(PUT_BACKOFF * 2u32.pow(attempt)).await;
            }
            result => return result,
        }
    }
}

/// `ask` of each of `rels`, at most [`PUTS_IN_FLIGHT`] at once, the
/// answers in `rels`' order.
async fn each<'a, T, F, Fut>(rels: &'a [String], ask: F) -> Vec<T>
where
    F: FnMut(&'a str) -> Fut,
    Fut: std::future::Future<Output = T>,
{
    let mut ask = ask;
    stream::iter(rels)
        .map(|rel| ask(rel.as_str()))
        .buffered(PUTS_IN_FLIGHT)
        .collect()
        .await
}

/// A bucket's error as the I/O error a reader returns: 404 is `NotFound`.
fn io_error(e: object_store::Error) -> std::io::Error {
    let e = StoreError::from(e);
    match e.not_found {
        true => std::io::Error::new(std::io::ErrorKind::NotFound, e),
        false => std::io::Error::other(e),
    }
}

/// An object's body as a blocking reader ([`Bucket::open_read`]).
pub struct ObjectReader {
    runtime: tokio::runtime::Handle,
    body: futures::stream::BoxStream<'static, object_store::Result<bytes::Bytes>>,
    chunk: bytes::Bytes,
}

impl Read for ObjectReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.chunk.is_empty() {
            match self.runtime.block_on(self.body.next()) {
                None => return Ok(0),
                Some(chunk) => self.chunk = chunk.map_err(io_error)?,
            }
        }
        let n = buf.len().min(self.chunk.len());
        buf[..n].copy_from_slice(&self.chunk.split_to(n));
        Ok(n)
    }
}

/// An immutable object to write: its name, body and sha256.
pub struct Immutable {
    pub rel: String,
    pub body: Body,
    pub sha256: [u8; 32],
}

/// Where an object's bytes come from.
pub enum Body {
    /// A staged file, streamed.
    File(PathBuf),
    Bytes(Vec<u8>),
}

impl Body {
    fn size(&self) -> std::io::Result<u64> {
        match self {
            Body::File(path) => Ok(std::fs::metadata(path)?.len()),
            Body::Bytes(b) => Ok(b.len() as u64),
        }
    }

    fn path(&self) -> Option<&Path> {
        match self {
            Body::File(path) => Some(path),
            Body::Bytes(_) => None,
        }
    }

    /// The whole body, for a single put (at most [`SINGLE_PUT_MAX`] bytes).
    fn payload(&self) -> std::io::Result<PutPayload> {
        match self {
            Body::File(path) => Ok(PutPayload::from(std::fs::read(path)?)),
            Body::Bytes(b) => Ok(PutPayload::from(b.clone())),
        }
    }
}

/// The `Content-Type` and `Cache-Control` of the object at `rel`: what the
/// shipped nginx block (`nginx/gomirror.conf`) serves the same name with,
/// so that a client cannot tell a bucket from the local tree.
pub fn attributes(rel: &str) -> Attributes {
    const IMMUTABLE: &str = "public, max-age=31536000, immutable";
    const SHORT: &str = "public, max-age=60";
    const TEXT: &str = "text/plain; charset=utf-8";
    let (content_type, cache) = if let Some(rest) = rel.strip_prefix("sumdb/") {
        let file = rest.split_once('/').map_or("", |(_, f)| f);
        match file {
            "latest" | "supported" => (TEXT, SHORT),
            f if f.starts_with("tile/") => ("application/octet-stream", IMMUTABLE),
            _ => (TEXT, IMMUTABLE),
        }
    } else if rel.ends_with("/@v/list") {
        (TEXT, SHORT)
    } else if rel.ends_with("/@latest") {
        ("application/json", SHORT)
    } else if rel.ends_with(".info") {
        ("application/json", IMMUTABLE)
    } else if rel.ends_with(".zip") {
        ("application/zip", IMMUTABLE)
    } else {
        (TEXT, IMMUTABLE)
    };
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, AttributeValue::from(content_type));
    a.insert(Attribute::CacheControl, AttributeValue::from(cache));
    a
}

/// Parses `s3://bucket[/prefix]` into the bucket and the prefix (without
/// slashes at either end).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url
        .strip_prefix("s3://")
        .ok_or_else(|| "only s3:// URLs are supported".to_owned())?;
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    if bucket.is_empty() {
        return Err("no bucket name after s3://".into());
    }
    let prefix = prefix.trim_matches('/');
    if prefix
        .split('/')
        .any(|seg| seg == "." || seg == ".." || (seg.is_empty() && !prefix.is_empty()))
    {
        return Err(format!("prefix {prefix:?} has an empty, . or .. segment"));
    }
    Ok((bucket.to_owned(), prefix.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(a: &Attributes, k: Attribute) -> String {
        a.get(&k).map(|v| v.as_ref().to_owned()).unwrap_or_default()
    }

    #[test]
    fn issue_17_objects_carry_the_nginx_blocks_types_and_lifetimes() {
        let cases = [
            (
                "example.com/m/@v/list",
                "text/plain; charset=utf-8",
                "public, max-age=60",
            ),
            (
                "example.com/m/@latest",
                "application/json",
                "public, max-age=60",
            ),
            (
                "example.com/m/@v/v1.0.0.info",
                "application/json",
                "public, max-age=31536000, immutable",
            ),
            (
                "example.com/m/@v/v1.0.0.mod",
                "text/plain; charset=utf-8",
                "public, max-age=31536000, immutable",
            ),
            (
                "example.com/m/@v/v1.0.0.zip",
                "application/zip",
                "public, max-age=31536000, immutable",
            ),
            (
                "sumdb/sum.golang.org/latest",
                "text/plain; charset=utf-8",
                "public, max-age=60",
            ),
            (
                "sumdb/sum.golang.org/supported",
                "text/plain; charset=utf-8",
                "public, max-age=60",
            ),
            (
                "sumdb/sum.golang.org/lookup/example.com/m@v1.0.0",
                "text/plain; charset=utf-8",
                "public, max-age=31536000, immutable",
            ),
            (
                "sumdb/sum.golang.org/tile/8/0/000",
                "application/octet-stream",
                "public, max-age=31536000, immutable",
            ),
        ];
        for (rel, ct, cc) in cases {
            let a = attributes(rel);
            assert_eq!(get(&a, Attribute::ContentType), ct, "{rel}");
            assert_eq!(get(&a, Attribute::CacheControl), cc, "{rel}");
        }
    }

    #[test]
    fn issue_17_bucket_urls() {
        assert_eq!(parse_url("s3://b"), Ok(("b".into(), String::new())));
        assert_eq!(parse_url("s3://b/"), Ok(("b".into(), String::new())));
        assert_eq!(parse_url("s3://b/p/q/"), Ok(("b".into(), "p/q".into())));
        assert!(parse_url("gs://b").is_err());
        assert!(parse_url("s3:///p").is_err());
        assert!(parse_url("s3://b/p/../q").is_err());
        assert!(parse_url("s3://b/p//q").is_err());
    }
}
