//! [`ClientBatch`]: the figures of a run of log lines, summed in memory
//! before one transaction records them (`Store::record_client_batch`).
//!
//! Input: a parsed [`LogLine`] with its [`Request`]. Output: per subject
//! (a module version, or a module for `@v/list`/`@latest`) uses, misses,
//! bytes and times, also per hour; misses that may become work; totals per
//! [`ResultClass`] and [`Skip`], per hour; hostile targets by reason.

use std::collections::HashMap as StdHashMap;

/// Hash maps of the reader: keyed by what clients sent, so seeded at
/// random (foldhash's per-process seed), and fast, since every line
/// touches several.
type HashMap<K, V> = StdHashMap<K, V, foldhash::fast::RandomState>;

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

/// What a target means: parsed once, then looked up.
#[derive(Debug, Clone)]
enum Meaning {
    /// A subject's number in the [`Interner`].
    Subject(u32, MissVia),
    Sumdb,
    NonCanonical,
    NotProtocol,
    Rejected(Box<Hostile>),
}

/// Distinct targets remembered at most; past that the interner is emptied
/// at the next batch's end, so memory stays bounded under a flood of
/// distinct targets.
const MAX_TARGETS: usize = 100_000;

/// Targets and subjects seen by one read, each numbered once, across its
/// batches: a log repeats the same targets, and parsing one checks Go's
/// path rules.
#[derive(Debug, Default)]
pub struct Interner {
    memo: HashMap<Box<str>, Meaning>,
    /// Subjects by number.
    subjects: Vec<Subject>,
    /// A subject's hash → its number (checked against `subjects`: on a
    /// collision the second subject gets a number of its own, unmapped).
    numbers: HashMap<u64, u32>,
    hasher: foldhash::fast::RandomState,
}

impl Interner {
    /// Whether it should be emptied once the current batch is recorded.
    pub fn is_full(&self) -> bool {
        self.memo.len() >= MAX_TARGETS
    }

    pub fn clear(&mut self) {
        self.memo = HashMap::default();
        self.subjects = Vec::new();
        self.numbers = HashMap::default();
    }

    fn meaning(&mut self, target: &str) -> Meaning {
        if let Some(m) = self.memo.get(target) {
            return m.clone();
        }
        let m = match Request::parse(target) {
            Request::File { mv, .. } => self.number(Subject::Version(mv), MissVia::Proxy),
            Request::Lookup(mv) => self.number(Subject::Version(mv), MissVia::Lookup),
            Request::List(p) | Request::Latest(p) => {
                self.number(Subject::Module(p), MissVia::Proxy)
            }
            // Checksum-database tiles and other paths are cheap to tell
            // again, and many: not remembered.
            Request::Sumdb(_) => return Meaning::Sumdb,
            Request::NotProtocol => return Meaning::NotProtocol,
            Request::NonCanonical => Meaning::NonCanonical,
            Request::Rejected(h) => Meaning::Rejected(Box::new(h)),
        };
        self.memo.insert(target.into(), m.clone());
        m
    }

    fn number(&mut self, subject: Subject, via: MissVia) -> Meaning {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(&subject);
        let next = self.subjects.len() as u32;
        let id = match self.numbers.get(&hash) {
            Some(&id) if self.subjects[id as usize] == subject => id,
            Some(_) => {
                self.subjects.push(subject);
                next
            }
            None => {
                self.numbers.insert(hash, next);
                self.subjects.push(subject);
                next
            }
        };
        Meaning::Subject(id, via)
    }
}

/// Figures of consecutive log lines, to be recorded in one transaction.
/// Keyed by the [`Interner`]'s numbers; [`ClientBatch::resolve`] names the
/// subjects before the batch leaves the reader.
#[derive(Debug, Default)]
pub struct ClientBatch {
    /// The subjects of `uses` (every number below is one of its keys).
    pub subjects: HashMap<u32, Subject>,
    /// Figures per subject number.
    pub uses: HashMap<u32, UseFigures>,
    /// (uses, misses, bytes) per `(hour, subject number)`, hour = Unix
    /// seconds / 3600 (recorded summed per module path, and misses per subject).
    pub hours: HashMap<(i64, u32), (u64, u64, u64)>,
    /// Misses learning may turn into work, per subject number.
    pub misses: HashMap<u32, MissFigures>,
    /// `(hour, key)`.
    pub totals: HashMap<(i64, TotalKey), u64>,
    pub rejects: HashMap<&'static str, RejectFigures>,
    /// Lines read, whatever they were.
    pub lines: u64,
}

impl ClientBatch {
    /// Counts a line that did not parse (its time is unknown: `now`).
    pub fn unparsed(&mut self, now: i64) {
        self.lines += 1;
        self.total(now, TotalKey::Skip(Skip::Unparsed), 1);
    }

    /// Names the subjects of this batch's figures.
    pub fn resolve(&mut self, interner: &Interner) {
        self.subjects = self
            .uses
            .keys()
            .map(|&id| (id, interner.subjects[id as usize].clone()))
            .collect();
    }

    /// Counts one parsed line.
    pub fn add(&mut self, interner: &mut Interner, line: &LogLine<'_>) {
        self.lines += 1;
        let t = line.time;
        let (id, via) = match interner.meaning(&line.target) {
            Meaning::Subject(id, via) => (id, via),
            Meaning::Sumdb => {
                let class = ResultClass::of(&line.method, line.status);
                self.total(t, TotalKey::Class(class), 1);
                return self.total(t, TotalKey::Bytes, line.bytes);
            }
            Meaning::Rejected(h) => return self.reject(t, &line.target, &h),
            Meaning::NonCanonical => return self.total(t, TotalKey::Skip(Skip::NonCanonical), 1),
            Meaning::NotProtocol => return self.total(t, TotalKey::Skip(Skip::NotProtocol), 1),
        };
        let class = ResultClass::of(&line.method, line.status);
        self.total(t, TotalKey::Class(class), 1);
        self.total(t, TotalKey::Bytes, line.bytes);
        let (uses, misses, bytes) = match class {
            ResultClass::Use => (1, 0, line.bytes),
            ResultClass::Miss => (0, 1, 0),
            _ => return,
        };
        let h = self.hours.entry((t.div_euclid(3600), id)).or_default();
        h.0 += uses;
        h.1 += misses;
        h.2 += bytes;
        let f = self.uses.entry(id).or_default();
        f.uses += uses;
        f.misses += misses;
        f.bytes += bytes;
        if uses > 0 {
            f.first_used = Some(f.first_used.map_or(t, |x| x.min(t)));
            f.last_used = Some(f.last_used.map_or(t, |x| x.max(t)));
            return;
        }
        f.last_missed = Some(f.last_missed.map_or(t, |x| x.max(t)));
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
