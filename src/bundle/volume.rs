//! A bundle's bytes on disk: one file, or with a volume size the same byte
//! stream cut into `<name>.000`, `<name>.001`, … of at most that size.
//!
//! [`VolumeWriter`] writes temporary files (`.tmp-<final name>`) in the
//! target directory and renames them only in [`VolumeWriter::commit`],
//! after fsyncing every one; dropped before that, it removes them, so an
//! interrupted export leaves nothing half-written under a bundle's name.
//!
//! [`BackgroundWriter`] moves a writer (write(2) calls, a compressor) to a
//! thread of its own.
//!
//! [`open_stream`] joins the volumes again and undoes zstd if the stream
//! starts with its magic bytes.

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::{io_err, BundleError};
use crate::publish::layout::TMP_PREFIX;

/// zstd frame magic number, little-endian 0xFD2FB528 (RFC 8878 §3.1.1).
const ZSTD_MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Writes one byte stream as one file or as size-capped volumes.
pub struct VolumeWriter {
    dir: PathBuf,
    name: String,
    /// `None`: one file named `name`; `Some(n)`: volumes of at most n bytes.
    max: Option<u64>,
    /// The volume being written and how many bytes it holds.
    current: Option<(File, u64)>,
    /// (temporary, final) path of every volume opened, in order. Removed on
    /// drop unless committed.
    volumes: Vec<(PathBuf, PathBuf)>,
    /// Bytes written in all volumes.
    written: u64,
    committed: bool,
}

impl VolumeWriter {
    /// A writer of `<dir>/<name>` (or its volumes if `max` is given).
    pub fn new(dir: &Path, name: &str, max: Option<u64>) -> VolumeWriter {
        VolumeWriter {
            dir: dir.to_owned(),
            name: name.to_owned(),
            max: max.map(|m| m.max(1)),
            current: None,
            volumes: Vec::new(),
            written: 0,
            committed: false,
        }
    }

    fn final_name(&self, index: usize) -> String {
        match self.max {
            None => self.name.clone(),
            Some(_) => format!("{}.{index:03}", self.name),
        }
    }

    /// Closes the current volume (fsynced) and opens the next.
    fn next_volume(&mut self) -> io::Result<()> {
        self.close_current()?;
        let final_name = self.final_name(self.volumes.len());
        let tmp = self.dir.join(format!("{TMP_PREFIX}{final_name}"));
        // The temp is registered before it exists so that drop removes it
        // whatever happens next.
        self.volumes.push((tmp.clone(), self.dir.join(&final_name)));
        let file = fs_err::File::create(&tmp)?.into_parts().0;
        self.current = Some((file, 0));
        Ok(())
    }

    fn close_current(&mut self) -> io::Result<()> {
        if let Some((file, _)) = self.current.take() {
            file.sync_all()?;
        }
        Ok(())
    }

    /// Fsyncs the last volume, renames every volume to its final name and
    /// fsyncs the directory. Returns the final paths.
    ///
    /// The first volume is renamed last, after the others are durably in
    /// place and stale volumes of the same name are gone: a reader starts
    /// from `.000`, so it never sees one without all of its siblings, even
    /// after a crash in the middle of the renames.
    pub fn commit(mut self) -> Result<Vec<PathBuf>, BundleError> {
        if self.volumes.is_empty() {
            self.next_volume()
                .map_err(io_err("create", self.dir.join(&self.name)))?;
        }
        let last = self.volumes.last().expect("one volume at least").0.clone();
        self.close_current().map_err(io_err("fsync", last))?;
        let fsync_dir = |dir: &Path| {
            fs_err::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(io_err("fsync", dir))
        };
        for (tmp, fin) in self.volumes.iter().skip(1) {
            fs_err::rename(tmp, fin).map_err(io_err("rename", fin))?;
        }
        self.remove_stale_volumes()?;
        if self.volumes.len() > 1 {
            fsync_dir(&self.dir)?;
        }
        let (tmp, fin) = &self.volumes[0];
        fs_err::rename(tmp, fin).map_err(io_err("rename", fin))?;
        self.committed = true;
        fsync_dir(&self.dir)?;
        Ok(self.volumes.iter().map(|(_, f)| f.clone()).collect())
    }

    /// The final paths the volumes get from [`VolumeWriter::commit`].
    pub fn final_paths(&self) -> Vec<PathBuf> {
        self.volumes.iter().map(|(_, f)| f.clone()).collect()
    }

    /// Bytes written, every volume.
    pub fn bytes_written(&self) -> u64 {
        self.written
    }

    /// The path being written when `e` happened: a volume's temporary file.
    fn at(&self, e: io::Error) -> io::Error {
        let path = match self.volumes.last() {
            Some((tmp, _)) => tmp.clone(),
            None => self.dir.join(&self.name),
        };
        VolumeIoError::wrap(path, e)
    }

    /// Removes `<name>.NNN` volumes past the last one written: left by an
    /// export of the same name that never completed, they would otherwise
    /// be joined to this bundle.
    fn remove_stale_volumes(&self) -> Result<(), BundleError> {
        if self.max.is_none() {
            return Ok(());
        }
        let mut index = self.volumes.len();
        loop {
            let stale = self.dir.join(self.final_name(index));
            match fs_err::remove_file(&stale) {
                Ok(()) => index += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(io_err("remove stale volume", &stale)(e)),
            }
        }
    }
}

/// An I/O error of one volume file, carried inside an `io::Error` through
/// the compressor and the writer threads, so that the export's error can
/// name the file (a full disk is reported with its path).
#[derive(Debug, thiserror::Error)]
#[error("{}", path.display())]
pub(crate) struct VolumeIoError {
    pub(crate) path: PathBuf,
    #[source]
    pub(crate) source: io::Error,
}

impl VolumeIoError {
    fn wrap(path: PathBuf, source: io::Error) -> io::Error {
        io::Error::new(source.kind(), VolumeIoError { path, source })
    }

    /// `e` as a [`BundleError::Io`] naming the volume it happened in, or
    /// `fallback` if it did not happen in one.
    pub(crate) fn into_bundle_error(
        op: &'static str,
        fallback: &Path,
        e: io::Error,
    ) -> BundleError {
        let is_ours = e.get_ref().is_some_and(|inner| inner.is::<VolumeIoError>());
        if !is_ours {
            return io_err(op, fallback)(e);
        }
        let inner = e
            .into_inner()
            .expect("checked above")
            .downcast::<VolumeIoError>()
            .expect("checked above");
        BundleError::Io {
            op,
            path: inner.path,
            source: inner.source,
        }
    }
}

impl Write for VolumeWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        let full = match (&self.current, self.max) {
            (None, _) => true,
            (Some((_, used)), Some(max)) => *used >= max,
            (Some(_), None) => false,
        };
        if full {
            self.next_volume().map_err(|e| self.at(e))?;
        }
        let (file, used) = self.current.as_mut().expect("a volume is open");
        let room = self.max.map_or(buf.len() as u64, |max| max - *used);
        let take = buf.len().min(usize::try_from(room).unwrap_or(usize::MAX));
        let n = match file.write(&buf[..take]) {
            Ok(n) => n,
            Err(e) => return Err(self.at(e)),
        };
        *used += n as u64;
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        let flushed = match &mut self.current {
            Some((file, _)) => file.flush(),
            None => Ok(()),
        };
        flushed.map_err(|e| self.at(e))
    }
}

impl Drop for VolumeWriter {
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        self.current = None;
        for (tmp, _) in &self.volumes {
            if let Err(e) = std::fs::remove_file(tmp) {
                if e.kind() != io::ErrorKind::NotFound {
                    tracing::warn!(path = %tmp.display(), "cannot remove unfinished bundle volume: {e}");
                }
            }
        }
    }
}

/// Bytes handed to the writer thread at a time.
const BACKGROUND_CHUNK: usize = 1 << 20;

/// Chunks queued for the writer thread; with the one it writes and the one
/// being filled, at most this + 2 chunks exist.
const BACKGROUND_QUEUE: usize = 2;

/// [`BackgroundWriter`] states.
const RUNNING: u8 = 0;
const FINISHING: u8 = 1;
const ABANDONED: u8 = 2;

/// A writer on a thread of its own: `write` fills a chunk and hands it
/// over, so the caller goes on while the thread writes it (compresses it,
/// for a zstd encoder). [`finish`] waits for the thread and returns what
/// its `finish` closure made of the writer; the first error stops the
/// thread, and the next `write` or [`finish`] returns it.
///
/// [`finish`]: BackgroundWriter::finish
pub struct BackgroundWriter<R> {
    chunk: Vec<u8>,
    /// `None` once finished or dropped: the thread then ends.
    to_thread: Option<SyncSender<Vec<u8>>>,
    /// Written chunks, back for reuse.
    from_thread: Receiver<Vec<u8>>,
    /// [`RUNNING`], then [`FINISHING`] (set by [`BackgroundWriter::finish`]
    /// only) or [`ABANDONED`] (dropped unfinished, after an error on the
    /// caller's side): the thread then drops its writer, unfinished, without
    /// writing what is still queued.
    state: Arc<AtomicU8>,
    thread: Option<JoinHandle<io::Result<R>>>,
}

impl<R: Send + 'static> BackgroundWriter<R> {
    /// Runs `out` on a thread named `name`; [`BackgroundWriter::finish`]
    /// returns `finish(out)`.
    pub fn spawn<W, F>(name: &str, mut out: W, finish: F) -> io::Result<BackgroundWriter<R>>
    where
        W: Write + Send + 'static,
        F: FnOnce(W) -> io::Result<R> + Send + 'static,
    {
        let (to_thread, queue) = mpsc::sync_channel::<Vec<u8>>(BACKGROUND_QUEUE);
        // Never blocks: it holds at most every chunk there is.
        let (give_back, from_thread) = mpsc::sync_channel(BACKGROUND_QUEUE + 2);
        let state = Arc::new(AtomicU8::new(RUNNING));
        let seen = state.clone();
        let abandoned = move || io::Error::other("abandoned");
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                for mut chunk in queue {
                    if seen.load(Ordering::Acquire) == ABANDONED {
                        return Err(abandoned());
                    }
                    out.write_all(&chunk)?;
                    chunk.clear();
                    // The sender may be gone already (it is finishing).
                    let _ = give_back.try_send(chunk);
                }
                match seen.load(Ordering::Acquire) {
                    FINISHING => finish(out),
                    _ => Err(abandoned()),
                }
            })?;
        Ok(BackgroundWriter {
            chunk: Vec::with_capacity(BACKGROUND_CHUNK),
            to_thread: Some(to_thread),
            from_thread,
            state,
            thread: Some(thread),
        })
    }

    /// Hands the current chunk to the thread and takes an empty one.
    fn send(&mut self) -> io::Result<()> {
        let next = self
            .from_thread
            .try_recv()
            .unwrap_or_else(|_| Vec::with_capacity(BACKGROUND_CHUNK));
        let full = std::mem::replace(&mut self.chunk, next);
        let sent = match &self.to_thread {
            Some(tx) => tx.send(full).is_ok(),
            None => false,
        };
        match sent {
            true => Ok(()),
            // The thread stopped: its error says why.
            false => Err(self
                .join()
                .err()
                .unwrap_or_else(|| io::Error::other("the bundle writer thread stopped"))),
        }
    }

    fn join(&mut self) -> io::Result<R> {
        self.to_thread = None;
        let thread = self
            .thread
            .take()
            .ok_or_else(|| io::Error::other("the bundle writer thread already stopped"))?;
        thread
            .join()
            .map_err(|_| io::Error::other("the bundle writer thread panicked"))?
    }

    /// Writes what is left, waits for the thread and returns what its
    /// `finish` made.
    pub fn finish(mut self) -> io::Result<R> {
        if !self.chunk.is_empty() {
            self.send()?;
        }
        self.state.store(FINISHING, Ordering::Release);
        self.join()
    }
}

impl<R: Send + 'static> Write for BackgroundWriter<R> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = BACKGROUND_CHUNK - self.chunk.len();
        let n = buf.len().min(room);
        self.chunk.extend_from_slice(&buf[..n]);
        if self.chunk.len() >= BACKGROUND_CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    /// Only hands over what is buffered; [`BackgroundWriter::finish`] is what
    /// waits for it to be written.
    fn flush(&mut self) -> io::Result<()> {
        match self.chunk.is_empty() {
            true => Ok(()),
            false => self.send(),
        }
    }
}

impl<R> Drop for BackgroundWriter<R> {
    /// Unfinished (an error on the way): the thread ends and drops its
    /// writer (a [`VolumeWriter`] removes its temporary files) before this
    /// returns.
    fn drop(&mut self) {
        if self.state.load(Ordering::Acquire) == RUNNING {
            self.state.store(ABANDONED, Ordering::Release);
        }
        self.to_thread = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// The files of the bundle at `path`: `path` itself, or if it (or the
/// path it names without `.000`) is split, every volume in order.
///
/// A split bundle's volumes are checked before a byte is read, so that a
/// missing or misplaced volume is named rather than found later as a
/// corrupt stream: they must be numbered without a gap from `.000`, and
/// every volume but the last is as large as the first (the writer fills
/// each one to the volume size).
pub fn volume_paths(path: &Path) -> Result<Vec<PathBuf>, BundleError> {
    let text = path.to_string_lossy();
    let base = match text.strip_suffix(".000") {
        Some(base) => PathBuf::from(base),
        None if path.is_file() => return Ok(vec![path.to_owned()]),
        None => path.to_owned(),
    };
    let volume = |i: usize| PathBuf::from(format!("{}.{i:03}", base.display()));
    let mut volumes = Vec::new();
    while volume(volumes.len()).is_file() {
        volumes.push(volume(volumes.len()));
    }
    let later = later_volumes(&base, volumes.len())?;
    if volumes.is_empty() {
        if let Some(found) = later.first() {
            return Err(BundleError::Volume {
                path: volume(0),
                reason: format!(
                    "missing: the bundle starts with it, but only {} is there",
                    found.display()
                ),
            });
        }
        let missing = if base == path { path } else { &base };
        return Err(BundleError::Io {
            op: "open",
            path: missing.to_owned(),
            source: io::Error::from(io::ErrorKind::NotFound),
        });
    }
    if let Some(found) = later.first() {
        return Err(BundleError::Volume {
            path: volume(volumes.len()),
            reason: format!(
                "missing: {} is there, the volume before it is not",
                found.display()
            ),
        });
    }
    check_volume_sizes(&volumes)?;
    Ok(volumes)
}

/// Volumes of `base` numbered `from` or higher (`.NNN`, three digits or
/// more), in order.
fn later_volumes(base: &Path, from: usize) -> Result<Vec<PathBuf>, BundleError> {
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let Some(stem) = base.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Ok(Vec::new());
    };
    let entries = match fs_err::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = name
            .strip_prefix(&stem)
            .and_then(|rest| rest.strip_prefix('.'))
            .filter(|n| n.len() >= 3 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<usize>().ok());
        if let Some(i) = index.filter(|i| *i >= from) {
            found.push((i, entry.path()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p)| p).collect())
}

/// Every volume but the last has the first one's size.
fn check_volume_sizes(volumes: &[PathBuf]) -> Result<(), BundleError> {
    let len =
        |p: &PathBuf| Ok::<_, BundleError>(fs_err::metadata(p).map_err(io_err("stat", p))?.len());
    let Some((last, full)) = volumes.split_last() else {
        return Ok(());
    };
    let size = len(&volumes[0])?;
    for v in full.iter().skip(1) {
        let got = len(v)?;
        if got != size {
            return Err(BundleError::Volume {
                path: v.clone(),
                reason: format!(
                    "{got} bytes, but every volume before the last has the first one's {size}: \
                     the volumes are out of order, or one is truncated"
                ),
            });
        }
    }
    let got = len(last)?;
    if got > size {
        return Err(BundleError::Volume {
            path: last.clone(),
            reason: format!(
                "{got} bytes, more than the first volume's {size}: the volumes are out of order"
            ),
        });
    }
    Ok(())
}

/// Total bytes on disk of the bundle at `path` (every volume).
pub fn bundle_len(path: &Path) -> Result<u64, BundleError> {
    let mut total = 0;
    for v in volume_paths(path)? {
        total += fs_err::metadata(&v).map_err(io_err("stat", &v))?.len();
    }
    Ok(total)
}

/// The bundle at `path` (a file or its `.000` volume) as one stream of tar
/// bytes, decompressed if it is zstd. A read error of a split bundle names
/// the volume the stream was in: two volumes swapped show up as corrupt
/// data there.
pub fn open_stream(path: &Path) -> Result<impl Read + Send, BundleError> {
    let paths = volume_paths(path)?;
    let split = paths.len() > 1;
    let at = Arc::new(AtomicUsize::new(0));
    let joined = Joined::new(paths.clone(), at.clone());
    let mut joined = BufReader::with_capacity(1 << 16, joined);
    let head = io::BufRead::fill_buf(&mut joined).map_err(io_err("read", path))?;
    let zstd = head.starts_with(&ZSTD_MAGIC);
    let inner = if zstd {
        let decoder = zstd::Decoder::with_buffer(joined).map_err(io_err("zstd", path))?;
        Inner::Zstd(decoder)
    } else {
        Inner::Plain(joined)
    };
    Ok(Stream {
        inner,
        volumes: split.then_some((paths, at)),
    })
}

/// The decompressed or plain stream [`open_stream`] returns.
struct Stream {
    inner: Inner,
    /// A split bundle's volumes and the index of the one being read.
    volumes: Option<(Vec<PathBuf>, Arc<AtomicUsize>)>,
}

enum Inner {
    Plain(BufReader<Joined>),
    Zstd(zstd::Decoder<'static, BufReader<Joined>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let read = match &mut self.inner {
            Inner::Plain(r) => r.read(buf),
            Inner::Zstd(r) => r.read(buf),
        };
        read.map_err(|e| match &self.volumes {
            Some((paths, at)) => {
                let i = at.load(Ordering::Relaxed).min(paths.len() - 1);
                io::Error::new(
                    e.kind(),
                    format!(
                        "in volume {} of {} ({}): {e}: are the volumes complete and in order?",
                        i + 1,
                        paths.len(),
                        paths[i].display()
                    ),
                )
            }
            None => e,
        })
    }
}

/// Reads volumes one after another, opening each when it is reached.
struct Joined {
    paths: std::vec::IntoIter<PathBuf>,
    current: Option<fs_err::File>,
    /// Index of the volume being read (shared with [`Stream`]).
    at: Arc<AtomicUsize>,
    opened: usize,
}

impl Joined {
    fn new(paths: Vec<PathBuf>, at: Arc<AtomicUsize>) -> Joined {
        Joined {
            paths: paths.into_iter(),
            current: None,
            at,
            opened: 0,
        }
    }
}

impl Read for Joined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.current.is_none() {
                match self.paths.next() {
                    Some(p) => {
                        self.current = Some(fs_err::File::open(p)?);
                        self.at.store(self.opened, Ordering::Relaxed);
                        self.opened += 1;
                    }
                    None => return Ok(0),
                }
            }
            let file = self.current.as_mut().expect("just opened");
            match file.read(buf)? {
                0 if !buf.is_empty() => self.current = None,
                n => return Ok(n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_all(dir: &Path, name: &str, max: Option<u64>, data: &[u8]) -> Vec<PathBuf> {
        let mut w = VolumeWriter::new(dir, name, max);
        for chunk in data.chunks(7) {
            w.write_all(chunk).expect("write");
        }
        w.commit().expect("commit")
    }

    /// Everything the bundle whose first volume is `first` holds, read back.
    fn read_back(first: &Path) -> Vec<u8> {
        let mut back = Vec::new();
        open_stream(first).unwrap().read_to_end(&mut back).unwrap();
        back
    }

    #[test]
    fn volumes_join_to_the_same_stream() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for (max, count) in [(None, 1), (Some(100), 10), (Some(999), 2), (Some(1000), 1)] {
            let name = format!("b-{max:?}.tar");
            let paths = write_all(dir.path(), &name, max, &data);
            assert_eq!(paths.len(), count, "{max:?}");
            for p in &paths {
                assert!(fs_err::metadata(p).unwrap().len() <= max.unwrap_or(u64::MAX));
            }
            let mut back = Vec::new();
            open_stream(&paths[0])
                .unwrap()
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "{max:?}");
            assert_eq!(bundle_len(&paths[0]).unwrap(), 1000);
        }
    }

    #[test]
    fn zstd_is_detected_by_its_magic() {
        let dir = tempfile::tempdir().unwrap();
        // Pseudo-random, so that it stays larger than a volume compressed.
        let mut x: u32 = 1;
        let data: Vec<u8> = (0..2000)
            .map(|_| {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
                (x >> 16) as u8
            })
            .collect();
        let packed = zstd::encode_all(&data[..], 3).unwrap();
        let paths = write_all(dir.path(), "b.tar.zst", Some(50), &packed);
        assert!(paths.len() > 1);
        let back = read_back(&paths[0]);
        assert_eq!(back, data);
    }

    #[test]
    fn stale_volumes_of_the_same_name_are_removed() {
        let dir = tempfile::tempdir().unwrap();
        let old = write_all(dir.path(), "b.tar", Some(10), &[1; 45]);
        assert_eq!(old.len(), 5);
        let new = write_all(dir.path(), "b.tar", Some(10), &[2; 25]);
        assert_eq!(new.len(), 3);
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 3);
        let back = read_back(&new[0]);
        assert_eq!(back, vec![2; 25]);
    }

    #[test]
    fn a_background_writer_writes_the_same_volumes() {
        let dir = tempfile::tempdir().unwrap();
        let data: Vec<u8> = (0..3 * BACKGROUND_CHUNK + 123)
            .map(|i| (i % 253) as u8)
            .collect();
        let max = BACKGROUND_CHUNK as u64 + 7;
        let out = VolumeWriter::new(dir.path(), "b.tar", Some(max));
        let mut w = BackgroundWriter::spawn("test", out, Ok).unwrap();
        for piece in data.chunks(100_003) {
            w.write_all(piece).unwrap();
        }
        let paths = w.finish().unwrap().commit().unwrap();
        // 3 chunks + 123 bytes in volumes of a chunk + 7 bytes.
        assert_eq!(paths.len(), 4);
        for p in &paths {
            assert!(fs_err::metadata(p).unwrap().len() <= max);
        }
        let back = read_back(&paths[0]);
        assert_eq!(back, data);
    }

    #[test]
    fn an_unfinished_background_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let out = VolumeWriter::new(dir.path(), "b.tar", Some(1000));
        let mut w = BackgroundWriter::spawn("test", out, Ok).unwrap();
        w.write_all(&vec![1; 2 * BACKGROUND_CHUNK + 5]).unwrap();
        drop(w);
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn an_uncommitted_writer_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = VolumeWriter::new(dir.path(), "b.tar", Some(10));
        w.write_all(&[0; 35]).unwrap();
        drop(w);
        assert_eq!(fs_err::read_dir(dir.path()).unwrap().count(), 0);
    }

    /// A missing volume and a volume out of place are named before a byte
    /// is read; `.000` is renamed last, so it never shows without the rest.
    // See: #13
    #[test]
    fn issue_13_missing_and_misplaced_volumes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let paths = write_all(dir.path(), "b.tar", Some(10), &[7; 45]);
        assert_eq!(paths.len(), 5);
        assert_eq!(volume_paths(&paths[0]).unwrap(), paths);

        fs_err::rename(&paths[2], dir.path().join("aside")).unwrap();
        let err = volume_paths(&paths[0]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: missing: {} is there, the volume before it is not",
                paths[2].display(),
                paths[3].display()
            )
        );
        // The short last volume in the middle.
        fs_err::rename(&paths[4], &paths[2]).unwrap();
        let err = volume_paths(&paths[0]).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "{}: 5 bytes, but every volume before the last has the first one's 10: the \
                 volumes are out of order, or one is truncated",
                paths[2].display()
            )
        );
        fs_err::remove_file(&paths[0]).unwrap();
        let err = volume_paths(&paths[0]).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!(
                "{}: missing: the bundle starts with it",
                paths[0].display()
            )),
            "{err}"
        );
    }

    /// A write error that happens on the writer thread, through the
    /// compressor, still names the volume file.
    // See: #13
    #[test]
    fn issue_13_write_errors_name_the_volume() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("gone");
        fs_err::create_dir(&target).unwrap();
        let out = VolumeWriter::new(&target, "b.tar.zst", Some(1000));
        fs_err::remove_dir(&target).unwrap();
        let out = BackgroundWriter::spawn("test", out, Ok).unwrap();
        let mut enc = zstd::Encoder::new(out, 1).unwrap();
        let data: Vec<u8> = (0..3 * BACKGROUND_CHUNK as u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        let err = enc
            .write_all(&data)
            .and_then(|()| enc.finish()?.finish().map(|_| ()))
            .unwrap_err();
        let err = VolumeIoError::into_bundle_error("write", Path::new("fallback"), err);
        let want = format!("{}: write", target.join(".tmp-b.tar.zst.000").display());
        assert_eq!(err.to_string(), want);
    }
}
