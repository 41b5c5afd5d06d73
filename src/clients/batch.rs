//! [`ClientBatch`]: the figures of a run of log lines, summed in memory
//! while they are read, then handed to the recorder as [`BatchFigures`]
//! for one transaction (`Store::record_client_batch`).
//!
//! Input: a parsed [`LogLine`]; its target's meaning comes from the read's
//! [`Interner`] (each distinct target parsed once). Output: per subject (a
//! module version, or a module for `@v/list`/`@latest`) uses, misses, bytes
//! and times, also per hour; misses that may become work; totals per
//! [`ResultClass`] and [`Skip`], per hour; hostile targets by reason.

use std::collections::HashMap as StdHashMap;
use std::sync::Arc;

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

/// Longest target an [`Interner`] keeps inline.
const SHORT_TARGET: usize = 63;

/// A target of up to [`SHORT_TARGET`] bytes, by value.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct ShortTarget {
    len: u8,
    bytes: [u8; SHORT_TARGET],
}

impl ShortTarget {
    fn new(target: &str) -> Option<ShortTarget> {
        let mut bytes = [0; SHORT_TARGET];
        bytes
            .get_mut(..target.len())?
            .copy_from_slice(target.as_bytes());
        Some(ShortTarget {
            len: target.len() as u8,
            bytes,
        })
    }
}

impl std::fmt::Debug for ShortTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        String::from_utf8_lossy(&self.bytes[..self.len as usize]).fmt(f)
    }
}

/// Targets and subjects seen by one read, each numbered once, across its
/// batches: a log repeats the same targets, and parsing one checks Go's
/// path rules.
#[derive(Debug, Default)]
pub struct Interner {
    /// Targets of up to [`SHORT_TARGET`] bytes (nearly all), kept inside
    /// the table: every line looks one up, and comparing it where its hash
    /// leads, rather than in an allocation of its own, saves a random
    /// memory access per line (the largest cost of reading, by `perf`).
    short: HashMap<ShortTarget, Meaning>,
    long: HashMap<Box<str>, Meaning>,
    /// Subjects by number, shared with the batches that name them.
    subjects: Vec<Arc<Subject>>,
    /// A subject's hash → its number (checked against `subjects`: on a
    /// collision the second subject gets a number of its own, unmapped).
    numbers: HashMap<u64, u32>,
    hasher: foldhash::fast::RandomState,
}

impl Interner {
    /// Whether it should be emptied once the current batch is recorded.
    pub fn is_full(&self) -> bool {
        self.short.len() + self.long.len() >= MAX_TARGETS
    }

    pub fn clear(&mut self) {
        self.short = HashMap::default();
        self.long = HashMap::default();
        self.subjects = Vec::new();
        self.numbers = HashMap::default();
    }

    fn meaning(&mut self, target: &str) -> Meaning {
        let short = ShortTarget::new(target);
        let known = match &short {
            Some(k) => self.short.get(k),
            None => self.long.get(target),
        };
        if let Some(m) = known {
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
        match short {
            Some(k) => self.short.insert(k, m.clone()),
            None => self.long.insert(target.into(), m.clone()),
        };
        m
    }

    fn number(&mut self, subject: Subject, via: MissVia) -> Meaning {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(&subject);
        let next = self.subjects.len() as u32;
        let id = match self.numbers.get(&hash) {
            Some(&id) if *self.subjects[id as usize] == subject => id,
            Some(_) => {
                self.subjects.push(Arc::new(subject));
                next
            }
            None => {
                self.numbers.insert(hash, next);
                self.subjects.push(Arc::new(subject));
                next
            }
        };
        Meaning::Subject(id, via)
    }
}

/// Figures of consecutive log lines, summed while they are read; turned
/// into [`BatchFigures`] by [`ClientBatch::resolve`] before they leave the
/// reader.
///
/// Every line touches it, so each kind of figure is where one line finds
/// it with the fewest memory accesses: a subject's figures in a slot
/// indexed by its [`Interner`] number (no hashing), its figures of one hour
/// in the same slot until a line of another hour comes (a log is in time
/// order, so the hourly map is touched about once per subject and hour,
/// not per line), and the totals of the current hour found first.
#[derive(Debug, Default)]
pub struct ClientBatch {
    /// By subject number; a slot with neither uses nor misses is unused.
    slots: Vec<Slot>,
    /// (uses, misses, bytes) per `(hour, subject number)` of the hours a
    /// slot moved on from (hour = Unix seconds / 3600).
    hours: HashMap<(i64, u32), Hourly>,
    totals: Totals,
    rejects: HashMap<&'static str, RejectFigures>,
    /// Lines read, whatever they were.
    pub lines: u64,
}

/// (uses, misses, bytes).
type Hourly = (u64, u64, u64);

#[derive(Debug, Clone, Default)]
struct Slot {
    figures: UseFigures,
    miss: Option<MissFigures>,
    /// The hour `in_hour` sums, while `in_hour` is not all zero.
    hour: i64,
    in_hour: Hourly,
}

/// Counts per `(hour, key)`: a row of [`TotalKey::COUNT`] per hour, and
/// which row each hour has; the previous line's row is tried first.
#[derive(Debug, Default)]
struct Totals {
    rows: Vec<(i64, [u64; TotalKey::COUNT])>,
    index: HashMap<i64, usize>,
    last: usize,
}

impl Totals {
    fn add(&mut self, hour: i64, key: TotalKey, n: u64) {
        if self.rows.get(self.last).is_none_or(|r| r.0 != hour) {
            self.last = *self.index.entry(hour).or_insert_with(|| {
                self.rows.push((hour, [0; TotalKey::COUNT]));
                self.rows.len() - 1
            });
        }
        self.rows[self.last].1[key.index()] += n;
    }
}

impl TotalKey {
    /// Keys there are: every class, every skip, bytes.
    pub const COUNT: usize = ResultClass::ALL.len() + Skip::ALL.len() + 1;

    fn index(self) -> usize {
        match self {
            TotalKey::Class(c) => c as usize,
            TotalKey::Skip(s) => ResultClass::ALL.len() + s as usize,
            TotalKey::Bytes => Self::COUNT - 1,
        }
    }

    fn at(i: usize) -> TotalKey {
        let skips = ResultClass::ALL.len();
        match ResultClass::ALL.get(i) {
            Some(&c) => TotalKey::Class(c),
            None => Skip::ALL
                .get(i - skips)
                .map_or(TotalKey::Bytes, |&s| TotalKey::Skip(s)),
        }
    }
}

/// A batch's figures as recorded (`Store::record_client_batch`), each list
/// sorted by its table's primary key so that SQLite walks each B-tree once,
/// in order, instead of spilling and re-reading pages at random.
#[derive(Debug, Default)]
pub struct BatchFigures {
    /// Lines read, whatever they were.
    pub lines: u64,
    /// By (path, version).
    pub uses: Vec<(Arc<Subject>, UseFigures)>,
    /// Misses learning may turn into work, by (path, version).
    pub misses: Vec<(Arc<Subject>, MissFigures)>,
    /// (uses, misses, bytes) per hour and module path (the subject's), by
    /// (hour, path).
    pub module_hours: Vec<(i64, Arc<Subject>, Hourly)>,
    /// Misses per hour and subject, by (hour, path, version).
    pub miss_hours: Vec<(i64, Arc<Subject>, u64)>,
    /// `(hour, key, n)`, by hour.
    pub totals: Vec<(i64, TotalKey, u64)>,
    pub rejects: Vec<(&'static str, RejectFigures)>,
}

fn by_subject(a: &Subject, b: &Subject) -> std::cmp::Ordering {
    (a.path(), a.version()).cmp(&(b.path(), b.version()))
}

/// Figures a batch holds at most (a subject's, or a subject's of one hour,
/// tens of bytes each) before it is recorded.
const MAX_FIGURES: usize = 250_000;

impl ClientBatch {
    /// Whether it should be recorded now, to keep memory bounded.
    pub fn is_full(&self) -> bool {
        self.slots.len() + self.hours.len() >= MAX_FIGURES
    }

    /// Counts a line that did not parse (its time is unknown: `now`).
    pub fn unparsed(&mut self, now: i64) {
        self.lines += 1;
        self.total(now, TotalKey::Skip(Skip::Unparsed), 1);
    }

    /// The figures to record, with the subjects named.
    pub fn resolve(mut self, interner: &Interner) -> BatchFigures {
        let mut out = BatchFigures {
            lines: self.lines,
            ..Default::default()
        };
        for (id, slot) in self.slots.into_iter().enumerate() {
            if slot.figures.uses == 0 && slot.figures.misses == 0 {
                continue;
            }
            let subject = &interner.subjects[id];
            flush_hour(&mut self.hours, id as u32, slot.hour, slot.in_hour);
            if let Some(m) = slot.miss {
                out.misses.push((subject.clone(), m));
            }
            out.uses.push((subject.clone(), slot.figures));
        }
        out.uses.sort_unstable_by(|a, b| by_subject(&a.0, &b.0));
        out.misses.sort_unstable_by(|a, b| by_subject(&a.0, &b.0));
        let mut per_module: HashMap<(i64, &str), (&Arc<Subject>, Hourly)> = HashMap::default();
        for (&(hour, id), f) in &self.hours {
            let subject = &interner.subjects[id as usize];
            let (_, m) = per_module
                .entry((hour, subject.path()))
                .or_insert((subject, (0, 0, 0)));
            (m.0, m.1, m.2) = (m.0 + f.0, m.1 + f.1, m.2 + f.2);
            if f.1 > 0 {
                out.miss_hours.push((hour, subject.clone(), f.1));
            }
        }
        out.miss_hours
            .sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| by_subject(&a.1, &b.1)));
        out.module_hours = per_module
            .into_iter()
            .map(|((hour, _), (subject, f))| (hour, subject.clone(), f))
            .collect();
        out.module_hours
            .sort_unstable_by(|a, b| (a.0, a.1.path()).cmp(&(b.0, b.1.path())));
        self.totals.rows.sort_unstable_by_key(|r| r.0);
        out.totals = self
            .totals
            .rows
            .iter()
            .flat_map(|&(hour, ns)| {
                (0..TotalKey::COUNT)
                    .filter(move |&i| ns[i] > 0)
                    .map(move |i| (hour, TotalKey::at(i), ns[i]))
            })
            .collect();
        out.rejects = self.rejects.into_iter().collect();
        out.rejects.sort_unstable_by_key(|r| r.0);
        out
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
        let id = id as usize;
        if id >= self.slots.len() {
            self.slots.resize(id + 1, Slot::default());
        }
        let slot = &mut self.slots[id];
        let hour = t.div_euclid(3600);
        if slot.hour != hour {
            flush_hour(&mut self.hours, id as u32, slot.hour, slot.in_hour);
            (slot.hour, slot.in_hour) = (hour, (0, 0, 0));
        }
        let h = &mut slot.in_hour;
        (h.0, h.1, h.2) = (h.0 + uses, h.1 + misses, h.2 + bytes);
        let f = &mut slot.figures;
        f.uses += uses;
        f.misses += misses;
        f.bytes += bytes;
        if uses > 0 {
            f.first_used = Some(f.first_used.map_or(t, |x| x.min(t)));
            f.last_used = Some(f.last_used.map_or(t, |x| x.max(t)));
            return;
        }
        f.last_missed = Some(f.last_missed.map_or(t, |x| x.max(t)));
        let m = slot.miss.get_or_insert(MissFigures {
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
        self.totals.add(time.div_euclid(3600), key, n);
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

/// Adds a slot's figures of `hour` to the hourly map, unless there are none.
fn flush_hour(hours: &mut HashMap<(i64, u32), Hourly>, id: u32, hour: i64, f: Hourly) {
    if f != (0, 0, 0) {
        let h = hours.entry((hour, id)).or_default();
        (h.0, h.1, h.2) = (h.0 + f.0, h.1 + f.1, h.2 + f.2);
    }
}
