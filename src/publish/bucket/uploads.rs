//! Multipart uploads a killed run left open, aborted by the next run (see:
//! #17). An upload that is never completed or aborted stays on the store:
//! its parts are invisible and billed. So every multipart upload is
//! journaled on the local staging disk while it is open:
//!
//! 1. [`Bucket::start_upload`] starts the upload itself (a signed `POST
//!    <key>?uploads` carrying the object's `Content-Type`, `Cache-Control`
//!    and sha256 metadata, and the store's checksum and encryption headers,
//!    [`store_headers`]), to know its id: object_store's
//!    `put_multipart_opts` hides the id, and its `MultipartStore::
//!    create_multipart`, which returns it, takes no attributes. The URL and
//!    the signing region are object_store's own for the key (its presigned
//!    URL, [`target`]), so `AWS_ENDPOINT`, virtual-hosted style and the
//!    region default cannot differ from its other requests.
//! 2. [`Bucket::journal_upload`] writes `<staging>/.gomirror-uploads/<id
//!    hash>.json` (the store, the key, the id) and fsyncs it BEFORE the
//!    first part is sent; the entry is removed once the upload is completed
//!    or aborted ([`Bucket::forget_upload`]).
//! 3. The parts go with object_store's `MultipartStore` ([`Bucket::send_parts`]).
//! 4. The next run, once it holds the lease, aborts every journaled upload
//!    ([`Bucket::abort_interrupted_uploads`]). Its caller holds the staging
//!    directory's run lock, so none of them is still in flight. An upload
//!    the store no longer knows (404 NoSuchUpload) counts as gone; one it
//!    fails to abort is a warning, and its entry stays for the next run.
//!    (s3s-fs answers 403 AccessDenied for an id it no longer knows: there,
//!    an upload completed just before a kill stays journaled, warned about
//!    by every run, until its entry is removed by hand.)
//!
//! What this does not see: an upload started from another staging
//! directory, or one whose journal entry was lost with its disk, and the
//! rare upload whose start answered too late and was started again by the
//! retry. Listing the prefix's uploads (ListMultipartUploads) would see
//! them, but the S3 server the tests run, s3s-fs, does not implement it;
//! S3's `AbortIncompleteMultipartUpload` lifecycle rule stays the backstop.

use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsAuthorizer};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::multipart::{MultipartStore, PartId};
use object_store::path::Path as Key;
use object_store::signer::Signer;
use object_store::{Attribute, Attributes, PutPayload};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{retried, Bucket, StoreError, WriteError, PARTS_IN_FLIGHT, PART_SIZE};

/// The journal's directory in the staging directory. Module paths never
/// start with a dot, so no staged download can be named so.
pub const JOURNAL_DIR: &str = ".gomirror-uploads";

/// The open multipart uploads of one staging directory: a file each.
#[derive(Clone, Debug)]
pub struct Journal {
    dir: PathBuf,
}

/// One open upload, as journaled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// `s3://bucket/prefix`: an entry another tree left (the staging
    /// directory reused for another URL) is not this store's to abort.
    pub store: String,
    /// The object's full key in the bucket.
    pub key: String,
    pub upload_id: String,
}

impl Journal {
    /// The journal of the staging directory `staging`.
    pub fn in_staging(staging: &Path) -> Journal {
        Journal {
            dir: staging.join(JOURNAL_DIR),
        }
    }

    /// Writes `entry` durably; returns its file.
    fn record(&self, entry: &Entry) -> Result<PathBuf, WriteError> {
        if !self.dir.is_dir() {
            fs_err::create_dir_all(&self.dir).map_err(io_error("create directory", &self.dir))?;
            // The new directory's name, durable in the staging directory.
            let staging = self.dir.parent().unwrap_or(Path::new("."));
            std::fs::File::open(staging)
                .and_then(|d| d.sync_all())
                .map_err(io_error("fsync directory", staging))?;
        }
        let digest = hex::encode(Sha256::digest(entry.upload_id.as_bytes()));
        let path = self.dir.join(format!("{}.json", &digest[..32]));
        let body = serde_json::to_vec(entry).expect("an entry serialises");
        crate::files::replace_durably(&path, &body, crate::files::TMP_PREFIX)?;
        Ok(path)
    }

    /// Every entry, with its file; one that cannot be read or parsed is
    /// its file and why. Blocking.
    pub fn entries(&self) -> io::Result<Vec<(PathBuf, Result<Entry, String>)>> {
        let listed = match std::fs::read_dir(&self.dir) {
            Ok(listed) => listed,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut out = Vec::new();
        for item in listed {
            let path = item?.path();
            // Temporary files of a write cut off before its rename.
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let entry = std::fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()));
            out.push((path, entry));
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }
}

/// The client [`Bucket::start_upload`] sends with: an answer is due
/// within the time object_store gives its own requests by default.
pub(super) fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap_or_default()
}

fn io_error<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> WriteError + 'a {
    move |source| WriteError::Io {
        op,
        path: path.to_owned(),
        source,
    }
}

/// Where requests about one key go, and the region they are signed for.
#[derive(Debug, PartialEq, Eq)]
pub struct Target {
    pub url: url::Url,
    pub region: String,
}

/// The [`Target`] of a presigned URL of object_store's: the URL without
/// its query, and the region of its credential scope
/// (`X-Amz-Credential=<key id>/<date>/<region>/s3/aws4_request`).
pub fn target(presigned: &url::Url) -> Option<Target> {
    let scope = presigned
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Credential")?
        .1;
    let region = scope.rsplit('/').nth(2)?.to_owned();
    let mut url = presigned.clone();
    url.set_query(None);
    Some(Target { url, region })
}

/// The answer to `POST <key>?uploads`.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct InitiateMultipartUploadResult {
    upload_id: String,
}

/// An S3 error answer's body.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

/// Why one attempt to start an upload failed, and whether another may cure it.
struct Failed {
    message: String,
    transient: bool,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl Bucket {
    /// This bucket, journaling its multipart uploads in `staging` (the
    /// tree's staging directory).
    pub fn with_journal(self, staging: &Path) -> Bucket {
        Bucket {
            journal: Some(Journal::in_staging(staging)),
            ..self
        }
    }

    /// Starts a multipart upload of `key` whose object will carry
    /// `attributes`; returns its id. Failures in transit, 5xx and 429 are
    /// retried like a conditional put's.
    pub(super) async fn start_upload(
        &self,
        key: &Key,
        attributes: &Attributes,
    ) -> Result<String, StoreError> {
        let what = format!("the start of an upload of {key}");
        retried(
            &what,
            |f: &Failed| f.transient,
            || self.try_start_upload(key, attributes),
        )
        .await
        .map_err(|f| StoreError {
            message: f.message,
            not_found: false,
        })
    }

    async fn try_start_upload(&self, key: &Key, attributes: &Attributes) -> Result<String, Failed> {
        let fatal = |message: String| Failed {
            message,
            transient: false,
        };
        let credential = self
            .store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| fatal(StoreError::from(e).message))?;
        let presigned = self
            .store
            .signed_url(http::Method::POST, key, Duration::from_secs(60))
            .await
            .map_err(|e| fatal(StoreError::from(e).message))?;
        let Target { mut url, region } = target(&presigned)
            .ok_or_else(|| fatal(format!("no credential scope in {presigned}")))?;
        url.query_pairs_mut().append_pair("uploads", "");
        // What `Bucket::open` read from the environment, read again.
        let extra = store_headers(&AmazonS3Builder::from_env())
            .map_err(|e| fatal(format!("POST {url}: {e}")))?;
        let mut request = upload_request(&url, attributes, &extra).map_err(fatal)?;
        AwsAuthorizer::new(&credential, "s3", &region).authorize(&mut request, None);
        // In transit: the request may be sent again.
        let failed = |e: reqwest::Error| {
            let e = e.without_url();
            let mut message = format!("POST {url}: {e}");
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                message = format!("{message}: {c}");
                cause = c.source();
            }
            Failed {
                message,
                transient: true,
            }
        };
        let answer = self
            .http
            .post(url.as_str())
            .headers(request.headers().clone())
            .send()
            .await
            .map_err(failed)?;
        let status = answer.status();
        let body = answer.text().await.map_err(failed)?;
        if !status.is_success() {
            let why = match quick_xml::de::from_str::<ErrorBody>(&body) {
                Ok(e) if e.message.is_empty() => format!(": {}", e.code),
                Ok(e) => format!(": {}: {}", e.code, e.message),
                Err(_) => String::new(),
            };
            return Err(Failed {
                message: format!("POST {url}: {status}{why}"),
                transient: status.is_server_error() || status.as_u16() == 429,
            });
        }
        quick_xml::de::from_str::<InitiateMultipartUploadResult>(&body)
            .map(|r| r.upload_id)
            .map_err(|e| fatal(format!("POST {url}: an answer without an upload id: {e}")))
    }

    /// Journals the upload `id` of `key` (blocking: an fsync); returns the
    /// entry's file, `None` for a bucket without a journal.
    pub(super) fn journal_upload(
        &self,
        key: &Key,
        id: &str,
    ) -> Result<Option<PathBuf>, WriteError> {
        let Some(journal) = &self.journal else {
            return Ok(None);
        };
        let entry = Entry {
            store: self.settings.url.clone(),
            key: key.to_string(),
            upload_id: id.to_owned(),
        };
        journal.record(&entry).map(Some)
    }

    /// Removes a journal entry of an upload completed or aborted. Not made
    /// durable: an entry that comes back after a power loss is aborted by
    /// the next run, and the store answers that it is gone.
    pub(super) fn forget_upload(&self, entry: Option<PathBuf>) {
        if let Some(path) = entry {
            if let Err(e) = std::fs::remove_file(&path) {
                tracing::warn!("removing {}: {e}", path.display());
            }
        }
    }

    /// Sends the file at `path` as the parts of upload `id`, at most
    /// [`PARTS_IN_FLIGHT`] at once, each read from the file as its turn
    /// comes (so at most that many parts are in memory); returns the parts
    /// in order. The first failure ends it.
    pub(super) async fn send_parts(
        &self,
        key: &Key,
        rel: &str,
        path: &Path,
        id: &str,
    ) -> Result<Vec<PartId>, WriteError> {
        let file = std::fs::File::open(path).map_err(io_error("open", path))?;
        let size = file.metadata().map_err(io_error("stat", path))?.len();
        let part = PART_SIZE as u64;
        let count = size.div_ceil(part).max(1);
        let file = &file;
        stream::iter(0..count)
            .map(|idx| {
                let offset = idx * part;
                let mut data = vec![0; (size - offset).min(part) as usize];
                // This future runs on a blocking-pool thread (`Bucket::block_on`).
                let read = file.read_exact_at(&mut data, offset);
                async move {
                    read.map_err(io_error("read", path))?;
                    let idx = usize::try_from(idx).expect("fewer parts than usize::MAX");
                    self.store
                        .put_part(key, &id.to_owned(), idx, PutPayload::from(data))
                        .await
                        .map_err(|e| self.error("upload part", rel, e))
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await
    }

    /// Completes upload `id` of `key` from its `parts`, in order.
    pub(super) async fn complete_upload(
        &self,
        key: &Key,
        rel: &str,
        id: &str,
        parts: Vec<PartId>,
    ) -> Result<(), WriteError> {
        self.store
            .complete_multipart(key, &id.to_owned(), parts)
            .await
            .map(drop)
            .map_err(|e| self.error("complete upload", rel, e))
    }

    /// Aborts upload `id` of `key`; whether it is gone (aborted, or
    /// unknown to the store). A failure is logged, saying whether the
    /// upload stays `journaled` for the next run.
    pub(super) async fn abort_upload(&self, key: &Key, id: &str, journaled: bool) -> bool {
        match self.store.abort_multipart(key, &id.to_owned()).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => true,
            Err(e) => {
                tracing::warn!(
                    "aborting the multipart upload {id} of s3://{}/{key}: {}{}",
                    self.settings.bucket,
                    StoreError::from(e),
                    if journaled {
                        "; it stays journaled, and the next run tries again"
                    } else {
                        ""
                    }
                );
                false
            }
        }
    }

    /// Aborts every upload in the journal that a killed run left open (see
    /// the module doc); returns how many. The caller holds the lease and
    /// the staging directory's run lock. Never fails: an upload that is
    /// not aborted stays journaled for the next run, and the store's
    /// lifecycle rule is the backstop.
    pub(crate) async fn abort_interrupted_uploads(&self) -> usize {
        let Some(journal) = self.journal.clone() else {
            return 0;
        };
        let listed = tokio::task::spawn_blocking(move || journal.entries()).await;
        let entries = match listed {
            Ok(Ok(entries)) => entries,
            Ok(Err(e)) => {
                tracing::warn!("reading the journal of multipart uploads: {e}");
                return 0;
            }
            Err(e) => {
                tracing::warn!("reading the journal of multipart uploads: {e}");
                return 0;
            }
        };
        let mut aborted = 0;
        for (path, entry) in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(why) => {
                    tracing::warn!("{}: not a multipart upload: {why}", path.display());
                    continue;
                }
            };
            if entry.store != self.settings.url {
                tracing::warn!(
                    "{}: the multipart upload {} of {} was started in {}, not {}: left alone",
                    path.display(),
                    entry.upload_id,
                    entry.key,
                    entry.store,
                    self.settings.url
                );
                continue;
            }
            let key = Key::from(entry.key.as_str());
            if self.abort_upload(&key, &entry.upload_id, true).await {
                aborted += 1;
                self.forget_upload(Some(path));
            }
        }
        if aborted > 0 {
            tracing::info!("aborted {aborted} multipart upload(s) left by an interrupted run");
        }
        aborted
    }
}

/// The headers object_store adds to the start of every multipart upload
/// for the store `builder` configures: the checksum algorithm its parts
/// carry, and server-side encryption (`AWS_SERVER_SIDE_ENCRYPTION`,
/// `AWS_SSE_KMS_KEY_ID`, `AWS_SSE_BUCKET_KEY_ENABLED`). Customer-provided
/// keys (SSE-C) are refused: clients could not read such objects anyway.
pub fn store_headers(builder: &AmazonS3Builder) -> Result<Vec<(&'static str, String)>, String> {
    // object_store does not export the encryption keys' type: named by
    // their configuration names instead.
    let get = |name: &str| {
        name.parse::<AmazonS3ConfigKey>()
            .ok()
            .and_then(|key| builder.get_config_value(&key))
    };
    let mut headers = Vec::new();
    if let Some(algorithm) = get("aws_checksum_algorithm") {
        headers.push(("x-amz-checksum-algorithm", algorithm.to_uppercase()));
    }
    if let Some(kind) = get("aws_server_side_encryption") {
        if kind == "sse-c" {
            return Err(
                "server-side encryption with a customer key (sse-c) is not supported".into(),
            );
        }
        headers.push(("x-amz-server-side-encryption", kind));
        if let Some(id) = get("aws_sse_kms_key_id") {
            headers.push(("x-amz-server-side-encryption-aws-kms-key-id", id));
        }
        if let Some(on) = get("aws_sse_bucket_key_enabled") {
            headers.push(("x-amz-server-side-encryption-bucket-key-enabled", on));
        }
    }
    Ok(headers)
}

/// `POST <url>` with the headers object_store gives a put of `attributes`
/// and the store's `extra` headers ([`store_headers`]), unsigned.
fn upload_request(
    url: &url::Url,
    attributes: &Attributes,
    extra: &[(&'static str, String)],
) -> Result<HttpRequest, String> {
    let mut builder = http::Request::builder()
        .method(http::Method::POST)
        .uri(url.as_str())
        .header(http::header::CONTENT_LENGTH, "0");
    for (name, value) in extra {
        builder = builder.header(*name, value.as_str());
    }
    for (attribute, value) in attributes {
        let name = match attribute {
            Attribute::ContentType => "content-type".to_owned(),
            Attribute::CacheControl => "cache-control".to_owned(),
            Attribute::ContentDisposition => "content-disposition".to_owned(),
            Attribute::ContentEncoding => "content-encoding".to_owned(),
            Attribute::ContentLanguage => "content-language".to_owned(),
            Attribute::StorageClass => "x-amz-storage-class".to_owned(),
            Attribute::Metadata(suffix) => format!("x-amz-meta-{suffix}"),
            other => return Err(format!("an attribute S3 has no header for: {other:?}")),
        };
        builder = builder.header(name, value.as_ref());
    }
    builder
        .body(HttpRequestBody::empty())
        .map_err(|e| format!("POST {url}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn upload_target(builder: AmazonS3Builder, key: &str) -> Target {
        let store = builder
            .with_bucket_name("mirror")
            .with_access_key_id("AKIDEXAMPLE")
            .with_secret_access_key("secret")
            .build()
            .expect("a store");
        let presigned = store
            .signed_url(http::Method::POST, &Key::from(key), Duration::from_secs(60))
            .await
            .expect("a presigned URL");
        target(&presigned).expect("a target")
    }

    // See: #17
    #[tokio::test]
    async fn issue_17_uploads_go_where_object_stores_other_requests_go() {
        let key = "go/example.com/m/@v/v1.0.0+incompatible.zip";
        let cases = [
            (
                AmazonS3Builder::new()
                    .with_endpoint("http://127.0.0.1:9000")
                    .with_allow_http(true)
                    .with_region("eu-west-1"),
                "http://127.0.0.1:9000/mirror/go/example.com/m/%40v/v1.0.0%2Bincompatible.zip",
                "eu-west-1",
            ),
            (
                AmazonS3Builder::new().with_region("us-west-2"),
                "https://s3.us-west-2.amazonaws.com/mirror/go/example.com/m/%40v/v1.0.0%2Bincompatible.zip",
                "us-west-2",
            ),
            (
                AmazonS3Builder::new(),
                "https://s3.us-east-1.amazonaws.com/mirror/go/example.com/m/%40v/v1.0.0%2Bincompatible.zip",
                "us-east-1",
            ),
            (
                AmazonS3Builder::new()
                    .with_region("eu-central-1")
                    .with_virtual_hosted_style_request(true),
                "https://mirror.s3.eu-central-1.amazonaws.com/go/example.com/m/%40v/v1.0.0%2Bincompatible.zip",
                "eu-central-1",
            ),
        ];
        for (builder, url, region) in cases {
            let got = upload_target(builder, key).await;
            assert_eq!(got.url.as_str(), url);
            assert_eq!(got.region, region, "{url}");
        }
    }

    // See: #17
    #[test]
    fn issue_17_the_upload_request_carries_the_objects_attributes() {
        let url = url::Url::parse("http://127.0.0.1:9000/mirror/a.zip?uploads=").unwrap();
        let mut attributes = super::super::attributes("example.com/m/@v/v1.0.0.zip");
        attributes.insert(
            Attribute::Metadata("sha256".into()),
            object_store::AttributeValue::from("ab"),
        );
        let request = upload_request(&url, &attributes, &[]).unwrap();
        let header = |name: &str| request.headers()[name].to_str().unwrap().to_owned();
        assert_eq!(request.method(), http::Method::POST);
        assert_eq!(header("content-type"), "application/zip");
        assert_eq!(
            header("cache-control"),
            "public, max-age=31536000, immutable"
        );
        assert_eq!(header("x-amz-meta-sha256"), "ab");
        assert_eq!(header("content-length"), "0");
    }

    // See: #17
    #[test]
    fn issue_17_journal_entries_are_durable_files_read_back_whole() {
        let staging = tempfile::tempdir().unwrap();
        let journal = Journal::in_staging(staging.path());
        assert!(
            journal.entries().unwrap().is_empty(),
            "no directory: no entries"
        );
        let entry = Entry {
            store: "s3://b/p".into(),
            key: "p/example.com/m/@v/v1.0.0.zip".into(),
            upload_id: "2~abc/def+ghi".into(),
        };
        let path = journal.record(&entry).unwrap();
        assert_eq!(path.parent().unwrap(), staging.path().join(JOURNAL_DIR));
        std::fs::write(staging.path().join(JOURNAL_DIR).join(".tmp-cut"), b"{").unwrap();
        std::fs::write(staging.path().join(JOURNAL_DIR).join("zz.json"), b"{").unwrap();
        let entries = journal.entries().unwrap();
        assert_eq!(entries.len(), 2, "{entries:?}");
        assert_eq!(entries[0], (path, Ok(entry)));
        assert!(entries[1].1.is_err());
    }

    // See: #17
    #[test]
    fn issue_17_uploads_start_with_the_stores_checksum_and_encryption() {
        let with = |pairs: &[(&str, &str)]| {
            pairs.iter().fold(AmazonS3Builder::new(), |b, (k, v)| {
                b.with_config(k.parse().expect("a configuration key"), *v)
            })
        };
        assert_eq!(store_headers(&with(&[])), Ok(vec![]));
        let kms = with(&[
            ("aws_checksum_algorithm", "sha256"),
            ("aws_server_side_encryption", "aws:kms"),
            ("aws_sse_kms_key_id", "key-1"),
            ("aws_sse_bucket_key_enabled", "true"),
        ]);
        assert_eq!(
            store_headers(&kms),
            Ok(vec![
                ("x-amz-checksum-algorithm", "SHA256".to_owned()),
                ("x-amz-server-side-encryption", "aws:kms".to_owned()),
                (
                    "x-amz-server-side-encryption-aws-kms-key-id",
                    "key-1".to_owned()
                ),
                (
                    "x-amz-server-side-encryption-bucket-key-enabled",
                    "true".to_owned()
                ),
            ])
        );
        let customer = with(&[("aws_server_side_encryption", "sse-c")]);
        assert!(store_headers(&customer).is_err());
    }
}
