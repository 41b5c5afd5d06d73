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

/// Figures of consecutive log lines, to be recorded in one transaction.
#[derive(Debug, Default)]
pub struct ClientBatch {
    pub uses: HashMap<Subject, UseFigures>,
    /// `(hour, subject)`, hour = Unix seconds / 3600.
    pub hourly: HashMap<(i64, Subject), UseFigures>,
    pub misses: HashMap<Subject, MissFigures>,
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

    /// Counts one parsed line, whose target means `request`.
    pub fn add(&mut self, line: &LogLine<'_>, request: &Request) {
        self.lines += 1;
        let t = line.time;
        let (subject, via) = match request {
            Request::File { mv, .. } => (Subject::Version(mv.clone()), MissVia::Proxy),
            Request::Lookup(mv) => (Subject::Version(mv.clone()), MissVia::Lookup),
            Request::List(p) | Request::Latest(p) => (Subject::Module(p.clone()), MissVia::Proxy),
            Request::Sumdb(_) => {
                let class = ResultClass::of(&line.method, line.status);
                self.total(t, TotalKey::Class(class), 1);
                self.total(t, TotalKey::Bytes, line.bytes);
                return;
            }
            Request::NonCanonical => return self.total(t, TotalKey::Skip(Skip::NonCanonical), 1),
            Request::NotProtocol => return self.total(t, TotalKey::Skip(Skip::NotProtocol), 1),
            Request::Rejected(h) => return self.reject(t, &line.target, h),
        };
        let class = ResultClass::of(&line.method, line.status);
        self.total(t, TotalKey::Class(class), 1);
        self.total(t, TotalKey::Bytes, line.bytes);
        let (uses, misses, bytes) = match class {
            ResultClass::Use => (1, 0, line.bytes),
            ResultClass::Miss => (0, 1, 0),
            _ => return,
        };
        let step = |f: &mut UseFigures| {
            f.uses += uses;
            f.misses += misses;
            f.bytes += bytes;
        };
        step(self.hourly.entry((t / 3600, subject.clone())).or_default());
        let f = self.uses.entry(subject.clone()).or_default();
        step(f);
        if uses > 0 {
            f.first_used = Some(f.first_used.map_or(t, |x| x.min(t)));
            f.last_used = Some(f.last_used.map_or(t, |x| x.max(t)));
            return;
        }
        f.last_missed = Some(f.last_missed.map_or(t, |x| x.max(t)));
        let m = self.misses.entry(subject).or_insert(MissFigures {
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
        let example = format!("{:?}: {why}", &target[..cut]);
        let r = self.rejects.entry(why.as_str()).or_insert(RejectFigures {
            n: 0,
            last_seen: time,
            example: example.clone(),
        });
        r.n += 1;
        if time >= r.last_seen {
            r.last_seen = time;
            r.example = example;
        }
    }
}
