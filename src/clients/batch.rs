//! [`ClientBatch`]: the figures of a run of log lines, summed in memory
//! before one transaction records them (`Store::record_client_batch`).
//!
//! Input: a parsed [`LogLine`] with its [`Request`]. Output: per subject
//! (a module version, or a module for `@v/list`/`@latest`) uses, misses,
//! bytes and times, also per hour; misses that may become work; totals per
//! [`ResultClass`] and [`Skip`], per hour; hostile targets by reason.

use std::collections::HashMap;

use super::log::LogLine;
use super::request::{Hostile, Request, ResultClass, Skip};
use crate::module::{ModVer, ModulePath};

/// Longest example of a rejected target kept (the rest is cut).
const EXAMPLE_BYTES: usize = 200;

/// What a request is about, for the per-module figures.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Subject {
    /// A version: its `.info`, `.mod`, `.zip` or checksum-database lookup.
    Version(ModVer),
    /// The module as a whole: `@v/list`, `@latest` (version '' in state).
    Module(ModulePath),
}

impl Subject {
    pub fn path(&self) -> &str {
        match self {
            Subject::Version(mv) => mv.path.as_str(),
            Subject::Module(p) => p.as_str(),
        }
    }

    /// '' for a module.
    pub fn version(&self) -> &str {
        match self {
            Subject::Version(mv) => mv.version.as_str(),
            Subject::Module(_) => "",
        }
    }
}

/// Through which door a miss came.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissVia {
    Proxy,
    Lookup,
}

impl MissVia {
    pub fn as_str(self) -> &'static str {
        match self {
            MissVia::Proxy => "proxy",
            MissVia::Lookup => "lookup",
        }
    }
}

/// Uses, misses and bytes of one subject; times are Unix seconds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UseFigures {
    pub uses: u64,
    pub misses: u64,
    pub bytes: u64,
    pub first_used: Option<i64>,
    pub last_used: Option<i64>,
    pub last_missed: Option<i64>,
}

/// A subject's misses that learning may turn into work.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MissFigures {
    pub via: MissVia,
    pub n: u64,
    pub first: i64,
    pub last: i64,
}

/// Hostile targets of one reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RejectFigures {
    pub n: u64,
    pub last_seen: i64,
    /// The newest such target and why, cut to [`EXAMPLE_BYTES`].
    pub example: String,
}

/// A key of the per-hour and all-time totals.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TotalKey {
    Class(ResultClass),
    Skip(Skip),
    /// Body bytes of every protocol request.
    Bytes,
}

impl TotalKey {
    pub fn as_str(self) -> &'static str {
        match self {
            TotalKey::Class(c) => c.as_str(),
            TotalKey::Skip(s) => s.as_str(),
            TotalKey::Bytes => "bytes",
        }
    }
}

/// What a target means within one batch: parsed once, then looked up.
#[derive(Debug, Clone)]
enum Meaning {
    /// Index into [`ClientBatch::subjects`].
    Subject(u32, MissVia),
    Other(Request),
}

/// Figures of consecutive log lines, to be recorded in one transaction.
///
/// Subjects are interned: each distinct one is stored once and the figures
/// are indexed by its number, and each distinct target is parsed once per
/// batch. The reader ends a batch when [`ClientBatch::is_full`], so memory
/// is bounded by distinct targets, not by lines.
#[derive(Debug, Default)]
pub struct ClientBatch {
    /// Distinct subjects, by number.
    pub subjects: Vec<Subject>,
    /// Figures per subject number, beside `subjects`.
    pub uses: Vec<UseFigures>,
    /// Uses, misses and bytes per `(hour, subject number)`, hour = Unix
    /// seconds / 3600 (recorded summed per module path).
    pub hours: HashMap<(i64, u32), UseFigures>,
    /// Misses per `(hour, subject number)`.
    pub miss_hours: HashMap<(i64, u32), u64>,
    /// Misses learning may turn into work, per subject number.
    pub misses: HashMap<u32, MissFigures>,
    /// `(hour, key)`.
    pub totals: HashMap<(i64, TotalKey), u64>,
    pub rejects: HashMap<&'static str, RejectFigures>,
    /// Lines read, whatever they were.
    pub lines: u64,
    numbers: HashMap<Subject, u32>,
    memo: HashMap<Box<str>, Meaning>,
}

/// Distinct targets per batch at most (each parsed once and remembered).
const MAX_TARGETS: usize = 100_000;

impl ClientBatch {
    /// Whether the batch should be recorded before it takes more lines.
    pub fn is_full(&self) -> bool {
        self.memo.len() >= MAX_TARGETS
    }

    /// Counts a line that did not parse (its time is unknown: `now`).
    pub fn unparsed(&mut self, now: i64) {
        self.lines += 1;
        self.total(now, TotalKey::Skip(Skip::Unparsed), 1);
    }

    /// Counts one parsed line.
    pub fn add(&mut self, line: &LogLine<'_>) {
        let meaning = match self.memo.get(line.target.as_ref()) {
            Some(m) => m.clone(),
            None => {
                let m = self.meaning(Request::parse(&line.target));
                // Checksum-database tiles and other paths are cheap to tell
                // again, and many: not remembered.
                if !matches!(m, Meaning::Other(Request::Sumdb(_) | Request::NotProtocol)) {
                    self.memo.insert(line.target.as_ref().into(), m.clone());
                }
                m
            }
        };
        self.lines += 1;
        let t = line.time;
        let (id, via) = match meaning {
            Meaning::Subject(id, via) => (id, via),
            Meaning::Other(Request::Sumdb(_)) => {
                let class = ResultClass::of(&line.method, line.status);
                self.total(t, TotalKey::Class(class), 1);
                return self.total(t, TotalKey::Bytes, line.bytes);
            }
            Meaning::Other(Request::Rejected(h)) => return self.reject(t, &line.target, &h),
            Meaning::Other(Request::NonCanonical) => {
                return self.total(t, TotalKey::Skip(Skip::NonCanonical), 1)
            }
            Meaning::Other(_) => return self.total(t, TotalKey::Skip(Skip::NotProtocol), 1),
        };
        let class = ResultClass::of(&line.method, line.status);
        self.total(t, TotalKey::Class(class), 1);
        self.total(t, TotalKey::Bytes, line.bytes);
        let (uses, misses, bytes) = match class {
            ResultClass::Use => (1, 0, line.bytes),
            ResultClass::Miss => (0, 1, 0),
            _ => return,
        };
        let hour = t.div_euclid(3600);
        let h = self.hours.entry((hour, id)).or_default();
        h.uses += uses;
        h.misses += misses;
        h.bytes += bytes;
        let f = &mut self.uses[id as usize];
        f.uses += uses;
        f.misses += misses;
        f.bytes += bytes;
        if uses > 0 {
            f.first_used = Some(f.first_used.map_or(t, |x| x.min(t)));
            f.last_used = Some(f.last_used.map_or(t, |x| x.max(t)));
            return;
        }
        f.last_missed = Some(f.last_missed.map_or(t, |x| x.max(t)));
        *self.miss_hours.entry((hour, id)).or_default() += 1;
        let m = self.misses.entry(id).or_insert(MissFigures {
            via,
            n: 0,
            first: t,
            last: t,
        });
        m.n += 1;
        m.first = m.first.min(t);
        m.last = m.last.max(t);
        if via == MissVia::Lookup {
            m.via = via;
        }
    }

    /// The subject of `request`, numbered.
    fn meaning(&mut self, request: Request) -> Meaning {
        let (subject, via) = match request {
            Request::File { mv, .. } => (Subject::Version(mv), MissVia::Proxy),
            Request::Lookup(mv) => (Subject::Version(mv), MissVia::Lookup),
            Request::List(p) | Request::Latest(p) => (Subject::Module(p), MissVia::Proxy),
            other => return Meaning::Other(other),
        };
        let next = self.subjects.len() as u32;
        let id = *self.numbers.entry(subject.clone()).or_insert(next);
        if id == next {
            self.subjects.push(subject);
            self.uses.push(UseFigures::default());
        }
        Meaning::Subject(id, via)
    }

    fn total(&mut self, time: i64, key: TotalKey, n: u64) {
        *self.totals.entry((time.div_euclid(3600), key)).or_default() += n;
    }

    fn reject(&mut self, time: i64, target: &str, why: &Hostile) {
        self.total(time, TotalKey::Skip(Skip::Rejected), 1);
        let mut cut = EXAMPLE_BYTES.min(target.len());
        while !target.is_char_boundary(cut) {
            cut -= 1;
        }
        let r = self.rejects.entry(why.as_str()).or_insert(RejectFigures {
            n: 0,
            last_seen: time,
            example: String::new(),
        });
        r.n += 1;
        if time >= r.last_seen || r.example.is_empty() {
            r.last_seen = time;
            r.example = format!("{:?}: {why}", &target[..cut]);
        }
    }
}
