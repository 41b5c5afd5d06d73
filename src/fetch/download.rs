//! Download: one response body → memory ([`MemSink`]) or a hashed temp file ([`FileSink`]).
//!
//! [`pump`] reads a body chunk by chunk (HTTP or a `file://` upstream alike), enforces
//! the size limit on the declared length and on the running total, and detects bodies
//! that end before `Content-Length`. It never retries; `client.rs` does.
//!
//! A zip cannot be checked while it streams (Go: cmd/go/internal/modfetch/fetch.go
//! downloadZip), so [`FileSink`] only stores and hashes; `verify` reads the file back.
//!
//! Writing: chunks are gathered into batches of [`BATCH`] bytes and each batch is
//! hashed and written by one `spawn_blocking` task, so neither sha256 nor `write(2)`
//! runs on an async worker. The next batch is collected from the network while the
//! previous one is written; at most one write task per download is in flight, which
//! bounds memory to about two batches per download.

use std::future::Future;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use sha2::{Digest, Sha256};
use tempfile::NamedTempFile;
use tokio::io::AsyncReadExt;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::stats::FetchStats;
use super::FetchError;

/// Bytes gathered before one blocking write; see the module docs.
const BATCH: usize = 256 * 1024;

/// Read size for `file://` upstreams.
const FILE_CHUNK: usize = 64 * 1024;

/// A body stored in a temp file inside the requested directory.
#[derive(Debug)]
pub struct Downloaded {
    /// Named `.tmp-*` in `dest_dir`, so persisting it into the tree is a same-filesystem
    /// rename. Deleted on drop unless persisted. Written but not fsynced (publish does
    /// that); the handle's position is at the end, so seek before reading through it.
    pub file: NamedTempFile,
    pub size: u64,
    pub sha256: [u8; 32],
    /// The URL it came from (password redacted), for quarantine reasons and logs.
    pub url: String,
}

/// Where a body goes. One sink per attempt: a retry opens a fresh one, and dropping a
/// sink discards what it held (for [`FileSink`], deletes the temp file).
pub(crate) trait Sink: Sized {
    type Args;
    type Output;
    /// Opens a sink after a 2xx status, with the declared length already within limit.
    async fn open(args: &Self::Args, declared: Option<u64>) -> Result<Self, FetchError>;
    async fn write(&mut self, chunk: Bytes) -> Result<(), FetchError>;
    async fn finish(self, url: &str) -> Result<Self::Output, FetchError>;
}

/// Collects a small body in memory.
pub(crate) struct MemSink(BytesMut);

/// Preallocate at most this much from a declared length.
const MEM_PREALLOC_MAX: u64 = 1024 * 1024;

impl Sink for MemSink {
    type Args = ();
    type Output = Bytes;

    async fn open(_: &(), declared: Option<u64>) -> Result<Self, FetchError> {
        let cap = declared.unwrap_or(0).min(MEM_PREALLOC_MAX);
        Ok(MemSink(BytesMut::with_capacity(cap as usize)))
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        self.0.extend_from_slice(&chunk);
        Ok(())
    }

    async fn finish(self, _url: &str) -> Result<Bytes, FetchError> {
        Ok(self.0.freeze())
    }
}

/// The half of a [`FileSink`] that a blocking write task owns while it runs.
struct Writer {
    /// A clone of the temp file's handle (same open file description, same offset)
    /// and its path, once the first write task has created the file.
    file: Option<(std::fs::File, PathBuf)>,
    hasher: Sha256,
}

/// The temp file, shared between a [`FileSink`] and its write task.
#[derive(Default)]
struct TempSlot {
    tmp: Option<NamedTempFile>,
    /// Set when the sink is dropped: a task that has not created the file yet never does.
    abandoned: bool,
}

/// Streams a body into a `.tmp-*` file, hashing it on the way.
pub(crate) struct FileSink {
    dir: PathBuf,
    /// The file is created by the first write task, in the same trip to the blocking
    /// pool as the first batch: a body of one batch (most `.mod`s and zips) costs one
    /// trip, not two (issue 11). Held here and not by the task, under a lock the task
    /// creates the file under, so that dropping the sink (error, retry, cancellation)
    /// unlinks the file at once even while a write is still running, and a task still
    /// queued never creates it.
    slot: Arc<Mutex<TempSlot>>,
    /// Exactly one of `idle` and `busy` is set between calls: the writer is either here
    /// or inside the task that is writing the previous batch.
    idle: Option<Writer>,
    busy: Option<JoinHandle<Result<Writer, FetchError>>>,
    batch: Vec<Bytes>,
    batch_len: usize,
    size: u64,
}

/// The slot's lock is held only to create or drop the file, never across an await.
fn lock(slot: &Mutex<TempSlot>) -> std::sync::MutexGuard<'_, TempSlot> {
    slot.lock().unwrap_or_else(|p| p.into_inner())
}

impl FileSink {
    async fn writer(&mut self) -> Result<Writer, FetchError> {
        if let Some(w) = self.idle.take() {
            return Ok(w);
        }
        let task = self.busy.take().expect("writer is idle or busy");
        match task.await {
            Ok(res) => res,
            Err(join) => Err(io_err(
                "write to temp file in",
                &self.dir,
                io::Error::other(join),
            )),
        }
    }

    async fn flush_batch(&mut self) -> Result<(), FetchError> {
        let mut w = self.writer().await?;
        let batch = std::mem::take(&mut self.batch);
        self.batch_len = 0;
        let (slot, dir) = (self.slot.clone(), self.dir.clone());
        self.busy = Some(tokio::task::spawn_blocking(move || {
            let (file, path) = match &mut w.file {
                Some(f) => f,
                None => w.file.insert(create_in_slot(&slot, &dir)?),
            };
            for b in &batch {
                w.hasher.update(b);
                file.write_all(b).map_err(|e| io_err("write", path, e))?;
            }
            Ok(w)
        }));
        Ok(())
    }
}

/// Creates the temp file into `slot` unless the sink is gone; returns a second handle.
fn create_in_slot(
    slot: &Mutex<TempSlot>,
    dir: &Path,
) -> Result<(std::fs::File, PathBuf), FetchError> {
    let mut slot = lock(slot);
    if slot.abandoned {
        return Err(FetchError::Cancelled);
    }
    let (tmp, file) = create_temp(dir)?;
    let path = tmp.path().to_path_buf();
    slot.tmp = Some(tmp);
    Ok((file, path))
}

impl Drop for FileSink {
    fn drop(&mut self) {
        let mut slot = lock(&self.slot);
        slot.abandoned = true;
        // Unlinks the file, if the sink did not hand it out in `finish`.
        slot.tmp = None;
    }
}

impl Sink for FileSink {
    type Args = PathBuf;
    type Output = Downloaded;

    async fn open(dest_dir: &PathBuf, _declared: Option<u64>) -> Result<Self, FetchError> {
        Ok(FileSink {
            dir: dest_dir.clone(),
            slot: Arc::default(),
            idle: Some(Writer {
                file: None,
                hasher: Sha256::new(),
            }),
            busy: None,
            batch: Vec::new(),
            batch_len: 0,
            size: 0,
        })
    }

    async fn write(&mut self, chunk: Bytes) -> Result<(), FetchError> {
        self.size += chunk.len() as u64;
        self.batch_len += chunk.len();
        self.batch.push(chunk);
        if self.batch_len >= BATCH {
            self.flush_batch().await?;
        }
        Ok(())
    }

    async fn finish(mut self, url: &str) -> Result<Downloaded, FetchError> {
        // An empty body still needs its (empty) file.
        if !self.batch.is_empty() || self.size == 0 {
            self.flush_batch().await?;
        }
        let w = self.writer().await?;
        let file = lock(&self.slot)
            .tmp
            .take()
            .expect("the first write created the file");
        Ok(Downloaded {
            file,
            size: self.size,
            sha256: w.hasher.finalize().into(),
            url: url.to_string(),
        })
    }
}

/// Creates `dir` if missing and a `.tmp-*` file in it, plus a second handle for writing.
/// Mode 0644: publish renames this very file into the served tree, where the
/// web server's user must read it.
fn create_temp(dir: &Path) -> Result<(NamedTempFile, std::fs::File), FetchError> {
    let tmp = crate::files::create_temp(dir, crate::files::TMP_PREFIX)
        .map_err(|e| io_err(e.op, &e.path, e.source))?;
    let file = tmp
        .as_file()
        .try_clone()
        .map_err(|e| io_err("open", tmp.path(), e))?;
    Ok((tmp, file))
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> FetchError {
    FetchError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A response body being read.
pub(crate) enum Body {
    Http(reqwest::Response),
    File {
        file: tokio::fs::File,
        path: PathBuf,
    },
}

enum BodyError {
    Http(reqwest::Error),
    Io(io::Error, PathBuf),
}

impl Body {
    async fn chunk(&mut self) -> Result<Option<Bytes>, BodyError> {
        match self {
            Body::Http(resp) => resp.chunk().await.map_err(BodyError::Http),
            Body::File { file, path } => {
                let mut buf = BytesMut::with_capacity(FILE_CHUNK);
                match file.read_buf(&mut buf).await {
                    Ok(0) => Ok(None),
                    Ok(_) => Ok(Some(buf.freeze())),
                    Err(e) => Err(BodyError::Io(e, path.clone())),
                }
            }
        }
    }
}

/// What [`pump`] needs to know about the request it reads.
pub(crate) struct ReadCx<'a> {
    pub url: &'a str,
    pub limit: u64,
    /// The declared length (`Content-Length`, or the file size), already `<= limit`.
    pub expected: Option<u64>,
    pub read_timeout: Duration,
    /// The least bytes per second over a window, and the window; `None`: off.
    pub min_rate: Option<(u64, Duration)>,
    pub token: &'a CancellationToken,
    pub stats: &'a FetchStats,
}

/// Checks a declared length against the limit before any body byte is read.
pub(crate) fn check_declared(
    url: &str,
    declared: Option<u64>,
    limit: u64,
) -> Result<(), FetchError> {
    match declared {
        Some(n) if n > limit => Err(FetchError::TooLarge {
            url: url.to_string(),
            limit,
        }),
        _ => Ok(()),
    }
}

/// Reads `body` into a fresh `S`, enforcing the limit and the declared length.
pub(crate) async fn pump<S: Sink>(
    mut body: Body,
    args: &S::Args,
    cx: &ReadCx<'_>,
) -> Result<S::Output, FetchError> {
    let mut sink = S::open(args, cx.expected).await?;
    let mut got = 0u64;
    let mut pace = cx.min_rate.map(|(min, window)| Pace::new(min, window));
    loop {
        let chunk = match guarded(cx.token, cx.read_timeout, cx.url, body.chunk()).await? {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // hyper reports a connection closed before Content-Length as a body error.
            Err(BodyError::Http(source)) => {
                return Err(match cx.expected {
                    Some(expected) if got < expected => truncated(cx.url, expected, got),
                    _ => FetchError::Transport {
                        url: cx.url.to_string(),
                        attempts: 0,
                        source: source.without_url(),
                    },
                })
            }
            Err(BodyError::Io(source, path)) => return Err(io_err("read", &path, source)),
        };
        got += chunk.len() as u64;
        cx.stats.add_bytes(chunk.len());
        if let Some(pace) = &mut pace {
            pace.check(got, cx.url)?;
        }
        if got > cx.limit {
            return Err(FetchError::TooLarge {
                url: cx.url.to_string(),
                limit: cx.limit,
            });
        }
        // Local disk writes are short and not raced against cancellation: stopping
        // between chunks is prompt enough and keeps the writer state simple.
        sink.write(chunk).await?;
    }
    match cx.expected {
        Some(expected) if got < expected => Err(truncated(cx.url, expected, got)),
        _ => sink.finish(cx.url).await,
    }
}

/// The minimum-throughput rule: over every whole window since the body
/// started, at least `min` bytes per second. Windows are consecutive, not
/// sliding: a check after each chunk closes the window once it has lasted
/// long enough. A window with no chunk at all is `read_timeout`'s business.
struct Pace {
    min: u64,
    window: Duration,
    /// When the current window started, and the bytes received before it.
    start: tokio::time::Instant,
    got_before: u64,
}

impl Pace {
    fn new(min: u64, window: Duration) -> Pace {
        Pace {
            min,
            window,
            start: tokio::time::Instant::now(),
            got_before: 0,
        }
    }

    fn check(&mut self, got: u64, url: &str) -> Result<(), FetchError> {
        let elapsed = self.start.elapsed();
        if elapsed < self.window {
            return Ok(());
        }
        let bytes = got - self.got_before;
        let rate = (bytes as f64 / elapsed.as_secs_f64()) as u64;
        if rate < self.min {
            return Err(FetchError::TooSlow {
                url: url.to_string(),
                rate,
                min: self.min,
                window: self.window,
                attempts: 0,
            });
        }
        self.start = tokio::time::Instant::now();
        self.got_before = got;
        Ok(())
    }
}

fn truncated(url: &str, expected: u64, got: u64) -> FetchError {
    FetchError::Truncated {
        url: url.to_string(),
        expected,
        got,
        attempts: 0,
    }
}

/// Awaits `fut` unless the token fires first (→ `Cancelled`) or no result arrives
/// within `timeout` (→ `Timeout`). The timeout is per wait, so it is an idle timeout.
pub(crate) async fn guarded<F: Future>(
    token: &CancellationToken,
    timeout: Duration,
    url: &str,
    fut: F,
) -> Result<F::Output, FetchError> {
    tokio::select! {
        biased;
        () = token.cancelled() => Err(FetchError::Cancelled),
        res = tokio::time::timeout(timeout, fut) => res.map_err(|_| FetchError::Timeout {
            url: url.to_string(),
            after: timeout,
            attempts: 0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fetch::testutil::{config, http_response, raw_server, serve, TestConfig};
    use crate::fetch::Client;
    use axum::routing::get;
    use axum::Router;
    use std::convert::Infallible;

    const REL: &str = "golang.org/x/text/@v/v0.3.7.zip";

    /// Deterministic bytes that are not one repeated value, so offsets matter to the hash.
    fn payload(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 7 + i / 251) as u8).collect()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut names: Vec<_> = entries
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        names.sort();
        names
    }

    fn client(cfg: TestConfig) -> Client {
        Client::new(cfg.upstreams, &cfg.settings).expect("test config is valid")
    }

    #[tokio::test]
    async fn download_hashes_and_leaves_one_temp_file() {
        // More than a few batches, and not a multiple of the batch size.
        let body = payload(3 * BATCH + 17);
        let served = Bytes::from(body.clone());
        let base = serve(Router::new().fallback(get(move || async move { served }))).await;
        let root = tempfile::tempdir().expect("tempdir");
        let dest = root.path().join("golang.org/x/text/@v"); // missing: created on demand
        let c = client(config(&[&base]));

        let got = c
            .download(REL, &dest, 10 << 20, &CancellationToken::new())
            .await
            .expect("download");

        assert_eq!(got.size, body.len() as u64);
        assert_eq!(got.sha256, <[u8; 32]>::from(Sha256::digest(&body)));
        assert_eq!(got.url, format!("{base}{REL}"));
        assert_eq!(std::fs::read(got.file.path()).expect("read temp"), body);
        let names = files_in(&dest);
        assert_eq!(names.len(), 1, "{names:?}");
        assert!(names[0].starts_with(".tmp-"), "{names:?}");
        drop(got);
        assert!(
            files_in(&dest).is_empty(),
            "an unpersisted download is deleted on drop"
        );
    }

    #[tokio::test]
    async fn an_empty_body_is_an_empty_file() {
        // The file is created with the first batch (issue 11); an empty body has none.
        let base = serve(Router::new().fallback(get(|| async { "" }))).await;
        let root = tempfile::tempdir().expect("tempdir");
        let dest = root.path().join("golang.org/x/text/@v");
        let c = client(config(&[&base]));
        let got = c
            .download(REL, &dest, 1024, &CancellationToken::new())
            .await
            .expect("download");
        assert_eq!(got.size, 0);
        assert_eq!(got.sha256, <[u8; 32]>::from(Sha256::digest(b"")));
        assert_eq!(std::fs::read(got.file.path()).expect("read temp"), b"");
        assert_eq!(files_in(&dest).len(), 1);
    }

    #[test]
    fn a_write_task_outliving_its_sink_creates_no_file() {
        let root = tempfile::tempdir().expect("tempdir");
        let slot = Mutex::new(TempSlot::default());
        let (_, path) = create_in_slot(&slot, root.path()).expect("created");
        assert_eq!(files_in(root.path()).len(), 1);
        // What dropping the sink does.
        let mut s = lock(&slot);
        (s.abandoned, s.tmp) = (true, None);
        drop(s);
        assert!(!path.exists());
        let again = create_in_slot(&slot, root.path());
        assert!(matches!(again, Err(FetchError::Cancelled)), "{again:?}");
        assert!(files_in(root.path()).is_empty());
    }

    #[tokio::test]
    async fn download_over_limit_removes_temp_file() {
        let chunk = Bytes::from(payload(100 * 1024));
        let declared = chunk.clone();
        let router = Router::new()
            .route(
                "/declared/{*rest}",
                get(move || async move { declared.repeat(10) }),
            )
            .route(
                "/streamed/{*rest}",
                get(move || async move {
                    let chunks = (0..10).map(move |_| Ok::<_, Infallible>(chunk.clone()));
                    axum::body::Body::from_stream(futures::stream::iter(chunks))
                }),
            );
        let base = serve(router).await;
        let root = tempfile::tempdir().expect("tempdir");
        for kind in ["declared", "streamed"] {
            let c = client(config(&[&format!("{base}{kind}/")]));
            // 5½ chunks: the stream is stopped while a batch write may be in flight.
            let limit = 550 * 1024;
            let err = c
                .download(REL, root.path(), limit, &CancellationToken::new())
                .await
                .expect_err("over limit");
            assert!(
                matches!(err, FetchError::TooLarge { limit: l, .. } if l == limit),
                "{kind}: {err:?}"
            );
            assert!(
                files_in(root.path()).is_empty(),
                "{kind}: {:?}",
                files_in(root.path())
            );
            let received = c.stats().bytes_received;
            assert!(
                received <= limit + 100 * 1024,
                "{kind}: read {received} bytes past the limit"
            );
        }
    }

    #[tokio::test]
    async fn truncated_download_retries_into_a_fresh_file() {
        let base = raw_server(vec![
            http_response(10, "abcd"),
            http_response(10, "0123456789"),
        ])
        .await;
        let root = tempfile::tempdir().expect("tempdir");
        let c = client(config(&[&base]));
        let got = c
            .download(REL, root.path(), 1024, &CancellationToken::new())
            .await
            .expect("second attempt is whole");
        assert_eq!(
            std::fs::read(got.file.path()).expect("read temp"),
            b"0123456789"
        );
        assert_eq!(got.size, 10);
        assert_eq!(
            files_in(root.path()).len(),
            1,
            "the truncated attempt's file is gone"
        );
        assert_eq!(c.stats().truncated, 1);
    }

    #[tokio::test]
    async fn cancelled_download_removes_temp_file() {
        let router = Router::new().fallback(get(|| async {
            let first =
                futures::stream::iter([Ok::<_, Infallible>(Bytes::from(payload(BATCH + 1)))]);
            axum::body::Body::from_stream(futures::StreamExt::chain(
                first,
                futures::stream::pending(),
            ))
        }));
        let base = serve(router).await;
        let root = tempfile::tempdir().expect("tempdir");
        let dest = root.path().to_path_buf();
        let c = client(config(&[&base]));
        let token = CancellationToken::new();
        let task = {
            let token = token.clone();
            tokio::spawn(async move { c.download(REL, &dest, 1 << 20, &token).await })
        };
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(files_in(root.path()).len(), 1, "download in progress");
        token.cancel();
        let res = tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .expect("returns promptly")
            .expect("task");
        assert!(matches!(res, Err(FetchError::Cancelled)), "{res:?}");
        assert!(files_in(root.path()).is_empty());
    }

    #[tokio::test]
    async fn file_upstream_serves_and_falls_through() {
        let tree = tempfile::tempdir().expect("tempdir");
        let list = tree.path().join("rsc.io/quote/@v/list");
        std::fs::create_dir_all(list.parent().expect("parent")).expect("mkdir");
        std::fs::write(&list, "v1.5.2\n").expect("write list");
        let zip = payload(FILE_CHUNK * 3 + 5);
        std::fs::write(tree.path().join("rsc.io/quote/@v/v1.5.2.zip"), &zip).expect("write zip");
        let dir_url = format!("file://{}", tree.path().display());
        let http = serve(Router::new().fallback(get(|| async { "from http" }))).await;
        let c = client(config(&[&dir_url, &http]));
        let token = CancellationToken::new();

        assert_eq!(
            c.get("rsc.io/quote/@v/list", 1024, &token)
                .await
                .expect("file"),
            "v1.5.2\n"
        );
        // Missing file, a path through a file, and a directory all fall through.
        for rel in [
            "rsc.io/quote/@v/v9.9.9.info",
            "rsc.io/quote/@v/list/x",
            "rsc.io/quote/@v",
        ] {
            assert_eq!(
                c.get(rel, 1024, &token).await.expect("http"),
                "from http",
                "{rel}"
            );
        }

        let out = tempfile::tempdir().expect("tempdir");
        let got = c
            .download("rsc.io/quote/@v/v1.5.2.zip", out.path(), 1 << 20, &token)
            .await
            .expect("zip");
        assert_eq!(
            (got.size, got.sha256),
            (zip.len() as u64, <[u8; 32]>::from(Sha256::digest(&zip)))
        );
        let err = c
            .download("rsc.io/quote/@v/v1.5.2.zip", out.path(), 10, &token)
            .await
            .expect_err("limit");
        assert!(
            matches!(err, FetchError::TooLarge { limit: 10, .. }),
            "{err:?}"
        );

        let only_dir = client(config(&[&dir_url]));
        let err = only_dir
            .get("rsc.io/quote/@v/v9.9.9.info", 1024, &token)
            .await
            .expect_err("missing");
        assert_eq!(
            err.to_string(),
            format!(
                "reading file://{}/rsc.io/quote/@v/v9.9.9.info: 404 Not Found",
                tree.path().display()
            )
        );
    }
}
