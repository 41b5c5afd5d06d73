//! The blocking side of reading the log: [`Segment`]s → batches of figures
//! with the cursor after their last line, sent to the recorder.
//!
//! Memory stays flat: a line longer than [`MAX_LINE`] is skipped (and
//! counted unparsed) without being held, a batch holds a bounded number of
//! figures ([`ClientBatch::is_full`]), and the targets it knows are bounded
//! ([`Interner::is_full`]). Only whole lines (ending in `\n`) move
//! the cursor of a live file: a line nginx is still writing is read next
//! time. A rotated file is complete, so its last line counts without one.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;

use tokio::sync::mpsc;

use super::batch::{BatchFigures, ClientBatch, Interner};
use super::cursor::{head_sha256, Segment, HEAD_BYTES};
use super::log::parse_line;
use crate::state::LogCursor;

/// Longest line read; nginx's own lines are far shorter (a target is at
/// most its `large_client_header_buffers`, 8 KiB by default).
pub const MAX_LINE: usize = 64 * 1024;
/// Lines per batch at most, one transaction each. Not what bounds memory
/// ([`ClientBatch::is_full`] does): it bounds the reading thrown away when
/// another reader records first or the read is interrupted, about two
/// seconds of it. Each batch writes a row per subject and hour it saw, the
/// same rows again for every batch of a log that repeats its targets, so
/// fewer batches are less work.
pub const BATCH_LINES: u64 = 2_000_000;

/// One batch for the recorder.
pub struct Recorded {
    pub batch: BatchFigures,
    pub cursor: LogCursor,
}

/// Reads `segments` in order, sending a batch every [`BATCH_LINES`] lines
/// (or when it or the [`Interner`] is full) and one at the end if anything moved.
/// At most two batches exist at once: before starting a third the reader
/// waits for `recorded` to say the first is in the database. Stops early,
/// without error, when the recorder hangs up (another reader won). `saved`
/// is where the first segment resumes (for its head).
pub fn read_segments(
    segments: &[Segment],
    saved: Option<&LogCursor>,
    out: &mpsc::Sender<Recorded>,
    recorded: &std::sync::mpsc::Receiver<()>,
) -> Result<(), (io::Error, &'static str, std::path::PathBuf)> {
    let mut batch = ClientBatch::default();
    let mut interner = Interner::default();
    let mut last_sent = saved.cloned();
    let mut in_flight = 0;
    let mut cursor = None;
    // Unparsed lines have no time of their own: they count in this hour.
    let now = chrono::Utc::now().timestamp();
    for seg in segments {
        let ctx = |op| move |e| (e, op, seg.path.clone());
        let mut r =
            SegmentReader::open(seg, saved.filter(|_| seg.start > 0)).map_err(ctx("open"))?;
        loop {
            match r.next_line().map_err(ctx("read"))? {
                Line::Whole => match parse_line(&r.line) {
                    Ok(line) => batch.add(&mut interner, &line),
                    Err(_) => batch.unparsed(now),
                },
                Line::TooLong => batch.unparsed(now),
                Line::End => break,
            }
            if batch.lines >= BATCH_LINES || batch.is_full() || interner.is_full() {
                let at = r.cursor(seg);
                last_sent = Some(at.clone());
                let sent = std::mem::take(&mut batch).resolve(&interner);
                if interner.is_full() {
                    interner.clear();
                }
                if out
                    .blocking_send(Recorded {
                        batch: sent,
                        cursor: at,
                    })
                    .is_err()
                {
                    return Ok(());
                }
                in_flight += 1;
                if in_flight == 2 {
                    if recorded.recv().is_err() {
                        return Ok(());
                    }
                    in_flight -= 1;
                }
            }
        }
        cursor = Some(r.cursor(seg));
    }
    if let Some(at) = cursor.filter(|at| batch.lines > 0 || last_sent.as_ref() != Some(at)) {
        let batch = batch.resolve(&interner);
        let _ = out.blocking_send(Recorded { batch, cursor: at });
    }
    Ok(())
}

enum Line {
    /// In [`SegmentReader::line`], until the next call.
    Whole,
    TooLong,
    End,
}

/// A segment's bytes from its start, split into capped lines, with the
/// offset after the last whole line and the head for the cursor.
struct SegmentReader {
    inner: BufReader<Box<dyn Read + Send>>,
    finished: bool,
    /// After the last whole line returned.
    offset: u64,
    /// The file's first bytes, up to [`HEAD_BYTES`], as far as consumed.
    head: Vec<u8>,
    /// Bytes consumed from `inner`, counted from the file's start.
    pos: u64,
    /// The line being read; whole when `complete`.
    line: Vec<u8>,
    complete: bool,
    skipping: bool,
}

impl SegmentReader {
    /// Opens `seg` at its start; `saved`'s head is checked (and kept) when
    /// it resumes mid-file.
    fn open(seg: &Segment, saved: Option<&LogCursor>) -> io::Result<SegmentReader> {
        let file = File::open(&seg.path)?;
        let mut head = Vec::new();
        let inner: Box<dyn Read + Send> = if seg.gz {
            let mut d = flate2::read::MultiGzDecoder::new(file);
            let keep = seg.start.min(HEAD_BYTES);
            (&mut d).take(keep).read_to_end(&mut head)?;
            io::copy(&mut (&mut d).take(seg.start - keep), &mut io::sink())?;
            Box::new(d)
        } else {
            let keep = seg.start.min(HEAD_BYTES) as usize;
            head.resize(keep, 0);
            file.read_exact_at(&mut head, 0)?;
            let mut file = file;
            file.seek(SeekFrom::Start(seg.start))?;
            Box::new(file)
        };
        // The file changed between planning and opening (rotated again):
        // the next read sees it; this one reads nothing.
        if let Some(c) = saved {
            let h = &head[..(c.head_len as usize).min(head.len())];
            if h.len() as u64 != c.head_len || head_sha256(h) != c.head_sha256 {
                return Err(io::Error::other(
                    "the file changed while it was being opened",
                ));
            }
        }
        let pos = seg.start;
        Ok(SegmentReader {
            inner: BufReader::with_capacity(256 * 1024, inner),
            finished: seg.finished,
            offset: pos,
            head,
            pos,
            line: Vec::new(),
            complete: false,
            skipping: false,
        })
    }

    fn next_line(&mut self) -> io::Result<Line> {
        if std::mem::take(&mut self.complete) {
            self.line.clear();
        }
        loop {
            let avail = self.inner.fill_buf()?;
            if avail.is_empty() {
                if self.finished && !self.line.is_empty() && !self.skipping && !self.complete {
                    self.offset = self.pos;
                    self.complete = true;
                    return Ok(Line::Whole);
                }
                return Ok(Line::End);
            }
            let (take, newline) = match memchr::memchr(b'\n', avail) {
                Some(i) => (i + 1, true),
                None => (avail.len(), false),
            };
            if self.head.len() < HEAD_BYTES as usize {
                let room = HEAD_BYTES as usize - self.head.len();
                self.head.extend_from_slice(&avail[..take.min(room)]);
            }
            let body = &avail[..take - usize::from(newline)];
            if !self.skipping {
                if self.line.len() + body.len() > MAX_LINE {
                    self.skipping = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(body);
                }
            }
            self.inner.consume(take);
            self.pos += take as u64;
            if newline {
                self.offset = self.pos;
                if std::mem::take(&mut self.skipping) {
                    return Ok(Line::TooLong);
                }
                self.complete = true;
                return Ok(Line::Whole);
            }
        }
    }

    /// The cursor after the last whole line.
    fn cursor(&self, seg: &Segment) -> LogCursor {
        let head = &self.head[..(self.offset.min(HEAD_BYTES) as usize).min(self.head.len())];
        LogCursor {
            dev: seg.dev,
            ino: seg.ino,
            head_len: head.len() as u64,
            head_sha256: head_sha256(head),
            offset: self.offset,
        }
    }
}
