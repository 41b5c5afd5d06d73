//! Retention policy: which versions in the tree a prune lets go, and why
//! each stays or goes (see: #15). Pure: no I/O, no clock.
//!
//! Input: every version in the tree as a [`Candidate`] (size, when it was
//! published, when a client last used it), the versions something needs
//! ([`Need`]: a project's closure, a `[[watch]]` selector, a toolchain), the
//! [`Policy`] and now. Output: a [`Decision`] with one [`Verdict`] per
//! version, in the candidates' order. The rules, first match deciding:
//!
//! 1. needed by a project, a watch selector or `[toolchain]`: stays;
//! 2. one of the newest `keep_latest` listed versions of its module, in
//!    semver order with releases before pre-releases (a pseudo-version is
//!    a pre-release; `+incompatible` sorts like any other version, Go:
//!    x/mod/semver Compare ignores build metadata): stays;
//! 3. `keep_unused_for`: a version's *unused since* is the newest of its
//!    publication and its last use (a client's GET, a miss, its learning);
//!    older than `keep_unused_for` goes, newer stays. When use is not
//!    recorded at all (no `[clients] access_log`), nothing can be called
//!    unused, so this rule removes nothing;
//! 4. `max_tree_size`: while the versions that stay take more bytes, those
//!    no earlier rule protects go, least recently used first. Versions rules
//!    1–3 keep are never removed for size, so the size may stay above the
//!    limit ([`Decision::over_size`]).
//!
//! A version published for its go.mod only (`mod_only`) is in no list, so
//! rule 2 does not count it: only a project needs it, and rule 1 keeps it.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::config::RetentionSettings;
use crate::module::{ModVer, Version};

/// The rules, from `[retention]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub keep_unused_for: Option<Duration>,
    pub keep_latest: usize,
    pub max_tree_size: Option<u64>,
    /// Clients' use is recorded (`[clients] access_log` is set).
    pub use_recorded: bool,
}

impl Policy {
    pub fn new(settings: &RetentionSettings, use_recorded: bool) -> Policy {
        Policy {
            keep_unused_for: settings.keep_unused_for,
            keep_latest: settings.keep_latest,
            max_tree_size: settings.max_tree_size,
            use_recorded,
        }
    }
}

/// A version in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub mv: ModVer,
    /// In `@v/list`: published with its zip, not for its go.mod only.
    pub listed: bool,
    pub bytes: u64,
    pub published_at: OffsetDateTime,
    /// A client's newest use, miss or learning of it; `None`: never seen.
    pub last_use: Option<OffsetDateTime>,
}

impl Candidate {
    /// The newest of its publication and its last use.
    pub fn unused_since(&self) -> OffsetDateTime {
        self.last_use
            .map_or(self.published_at, |u| u.max(self.published_at))
    }
}

/// What needs a version, whatever the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// A `[[project]]`'s closure (its directory).
    Project { dir: String },
    /// A `[[watch]]` entry's selector, evaluated against the tree's versions.
    Watch { selector: String },
    /// `[toolchain]`: a configured platform's toolchain.
    Toolchain,
}

/// Why a version stays or goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Needed(Need),
    /// One of the newest `of` listed versions of its module.
    Latest {
        of: usize,
    },
    UsedRecently {
        since: OffsetDateTime,
    },
    /// `keep_unused_for` is set but clients' use is not recorded.
    UseUnknown,
    /// No rule removes it.
    NoRule,
    Unused {
        since: OffsetDateTime,
    },
    /// Least recently used while the tree is over `max_tree_size`.
    OverSize {
        since: OffsetDateTime,
    },
}

impl Reason {
    /// Whether the version goes.
    pub fn goes(&self) -> bool {
        matches!(self, Reason::Unused { .. } | Reason::OverSize { .. })
    }

    /// The rule's name, for `--json`.
    pub fn rule(&self) -> &'static str {
        match self {
            Reason::Needed(Need::Project { .. }) => "project",
            Reason::Needed(Need::Watch { .. }) => "watch",
            Reason::Needed(Need::Toolchain) => "toolchain",
            Reason::Latest { .. } => "keep_latest",
            Reason::UsedRecently { .. } => "used_recently",
            Reason::UseUnknown => "use_unknown",
            Reason::NoRule => "no_rule",
            Reason::Unused { .. } => "keep_unused_for",
            Reason::OverSize { .. } => "max_tree_size",
        }
    }
}

/// Which rule decides a version, one byte while every version is weighed;
/// its [`Reason`] (a time, a need) is made at the end, in the verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Needed,
    Latest,
    UsedRecently,
    UseUnknown,
    NoRule,
    Unused,
    OverSize,
}

impl Fate {
    /// Whether the version goes ([`Reason::goes`]).
    fn goes(self) -> bool {
        matches!(self, Fate::Unused | Fate::OverSize)
    }

    /// Kept, but rule 4 may still remove it.
    fn is_soft(self) -> bool {
        matches!(self, Fate::UseUnknown | Fate::NoRule)
    }
}

fn day(t: &OffsetDateTime) -> String {
    t.format(&Rfc3339).unwrap_or_else(|_| t.to_string())
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::Needed(Need::Project { dir }) => write!(f, "needed by project {dir}"),
            Reason::Needed(Need::Watch { selector }) => {
                write!(f, "selected by [[watch]] {selector}")
            }
            Reason::Needed(Need::Toolchain) => f.write_str("a [toolchain] platform's toolchain"),
            Reason::Latest { of } => write!(f, "one of the newest {of} of its module"),
            Reason::UsedRecently { since } => write!(f, "used since {}", day(since)),
            Reason::UseUnknown => f.write_str("use unknown: [clients] access_log is not set"),
            Reason::NoRule => f.write_str("no rule removes it"),
            Reason::Unused { since } => {
                write!(
                    f,
                    "unused since {}, longer than keep_unused_for",
                    day(since)
                )
            }
            Reason::OverSize { since } => write!(
                f,
                "least recently used (since {}) while the tree is over max_tree_size",
                day(since)
            ),
        }
    }
}

/// One version's fate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub mv: ModVer,
    pub listed: bool,
    pub bytes: u64,
    pub reason: Reason,
}

/// Every version's fate, and the totals.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    pub verdicts: Vec<Verdict>,
    pub kept_bytes: u64,
    pub going_bytes: u64,
    /// How many versions stay and go (a prune keeps only the verdicts of
    /// those that go).
    pub kept_versions: usize,
    pub going_versions: usize,
    /// `max_tree_size` cannot be reached: what rules 1–3 keep is larger.
    pub over_size: bool,
}

impl Decision {
    pub fn going(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| v.reason.goes())
    }
}

/// Applies `policy` at `now`; `needed` holds versions rule 1 keeps.
pub fn decide(
    policy: &Policy,
    candidates: Vec<Candidate>,
    needed: &HashMap<ModVer, Need>,
    now: OffsetDateTime,
) -> Decision {
    let latest = newest(policy.keep_latest, &candidates);
    let mut fates: Vec<Fate> = candidates
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if needed.contains_key(&c.mv) {
                return Fate::Needed;
            }
            if latest.get(i).copied().unwrap_or(false) {
                return Fate::Latest;
            }
            match policy.keep_unused_for {
                None => Fate::NoRule,
                Some(_) if !policy.use_recorded => Fate::UseUnknown,
                Some(d) if now - c.unused_since() > d => Fate::Unused,
                Some(_) => Fate::UsedRecently,
            }
        })
        .collect();
    drop(latest);
    let mut kept: u64 = candidates
        .iter()
        .zip(&fates)
        .filter(|(_, r)| !r.goes())
        .map(|(c, _)| c.bytes)
        .sum();
    let mut over_size = false;
    if let Some(max) = policy.max_tree_size.filter(|max| kept > *max) {
        let mut soft: Vec<usize> = (0..candidates.len())
            .filter(|&i| fates[i].is_soft())
            .collect();
        soft.sort_by(|&a, &b| {
            let (a, b) = (&candidates[a], &candidates[b]);
            (a.unused_since(), &a.mv).cmp(&(b.unused_since(), &b.mv))
        });
        for i in soft {
            if kept <= max {
                break;
            }
            kept -= candidates[i].bytes;
            fates[i] = Fate::OverSize;
        }
        over_size = kept > max;
    }
    let mut d = Decision {
        over_size,
        ..Decision::default()
    };
    d.verdicts = candidates
        .into_iter()
        .zip(fates)
        .map(|(c, fate)| {
            let since = c.unused_since();
            let reason = match fate {
                Fate::Needed => Reason::Needed(needed[&c.mv].clone()),
                Fate::Latest => Reason::Latest {
                    of: policy.keep_latest,
                },
                Fate::UsedRecently => Reason::UsedRecently { since },
                Fate::UseUnknown => Reason::UseUnknown,
                Fate::NoRule => Reason::NoRule,
                Fate::Unused => Reason::Unused { since },
                Fate::OverSize => Reason::OverSize { since },
            };
            let (bytes, versions) = match reason.goes() {
                true => (&mut d.going_bytes, &mut d.going_versions),
                false => (&mut d.kept_bytes, &mut d.kept_versions),
            };
            (*bytes, *versions) = (*bytes + c.bytes, *versions + 1);
            Verdict {
                mv: c.mv,
                listed: c.listed,
                bytes: c.bytes,
                reason,
            }
        })
        .collect();
    d
}

// A verdict fits in its candidate's place (see `decide`).
const _: () = assert!(
    std::mem::size_of::<Verdict>() <= std::mem::size_of::<Candidate>()
        && std::mem::align_of::<Verdict>() == std::mem::align_of::<Candidate>()
);

/// Per candidate: whether it is one of the newest `n` listed versions of
/// its module (releases before pre-releases, then semver).
fn newest(n: usize, candidates: &[Candidate]) -> Vec<bool> {
    let mut by_module: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in candidates.iter().enumerate().filter(|(_, c)| c.listed) {
        by_module.entry(c.mv.path.as_str()).or_default().push(i);
    }
    let mut out = vec![false; candidates.len()];
    let key = |v: &Version| (!v.is_prerelease(), v.clone());
    for mut list in by_module.into_values() {
        list.sort_by_key(|&i| std::cmp::Reverse(key(&candidates[i].mv.version)));
        for i in list.into_iter().take(n) {
            out[i] = true;
        }
    }
    out
}

/// An RFC 3339 time as state stores it; `None` if it does not parse.
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const NOW: OffsetDateTime = datetime!(2026-12-01 00:00 UTC);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    /// `path@version`, its bytes, days since publication, days since last use.
    fn c(mv: &str, bytes: u64, published: i64, used: Option<i64>) -> Candidate {
        let (path, version) = mv.split_once('@').unwrap();
        Candidate {
            mv: ModVer::parse(path, version).unwrap(),
            listed: true,
            bytes,
            published_at: NOW - time::Duration::days(published),
            last_use: used.map(|d| NOW - time::Duration::days(d)),
        }
    }

    fn policy(unused_days: Option<u64>, latest: usize, max: Option<u64>) -> Policy {
        Policy {
            keep_unused_for: unused_days.map(|d| DAY * d as u32),
            keep_latest: latest,
            max_tree_size: max,
            use_recorded: true,
        }
    }

    /// The versions that go, as `path@version`.
    fn going(p: &Policy, cands: Vec<Candidate>, needed: &HashMap<ModVer, Need>) -> Vec<String> {
        decide(p, cands, needed, NOW)
            .going()
            .map(|v| v.mv.to_string())
            .collect()
    }

    /// keep_latest counts releases before pre-releases, in semver order;
    /// `+incompatible` is a version like any other. See: #15
    #[test]
    fn issue_15_keep_latest_orders_releases_before_prereleases() {
        let m = "example.com/m";
        let all = |vs: &[&str]| -> Vec<Candidate> {
            vs.iter()
                .map(|v| c(&format!("{m}@{v}"), 10, 400, None))
                .collect()
        };
        // (versions, keep_latest, the versions that go)
        let cases: &[(&[&str], usize, &[&str])] = &[
            (&["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0"], 3, &["v1.0.0"]),
            (
                &["v1.0.0", "v1.10.0", "v1.9.0", "v1.2.0"],
                2,
                &["v1.0.0", "v1.2.0"],
            ),
            // A pre-release above every release still ranks after them.
            (&["v1.0.0", "v1.1.0", "v1.2.0-rc.1"], 2, &["v1.2.0-rc.1"]),
            (&["v1.0.0-rc.1", "v1.0.0-rc.2"], 1, &["v1.0.0-rc.1"]),
            (
                &["v0.0.0-20200101000000-abcdefabcdef", "v0.1.0"],
                1,
                &["v0.0.0-20200101000000-abcdefabcdef"],
            ),
            (
                &["v2.0.0+incompatible", "v3.1.0+incompatible", "v1.5.0"],
                1,
                &["v1.5.0", "v2.0.0+incompatible"],
            ),
            (&["v2.0.0+incompatible", "v1.5.0"], 2, &[]),
            (&["v1.0.0", "v1.1.0"], 0, &["v1.0.0", "v1.1.0"]),
        ];
        for (vs, latest, want) in cases {
            let got = going(&policy(Some(180), *latest, None), all(vs), &HashMap::new());
            let want: Vec<String> = want.iter().map(|v| format!("{m}@{v}")).collect();
            let mut got_sorted = got.clone();
            got_sorted.sort();
            let mut want_sorted = want.clone();
            want_sorted.sort();
            assert_eq!(got_sorted, want_sorted, "{vs:?} keep_latest {latest}");
        }
    }

    /// keep_unused_for: the newest of publication and use decides, one
    /// line per case. See: #15
    #[test]
    fn issue_15_unused_age_counts_from_the_last_use() {
        // (days since published, days since last use, keep_unused_for days, goes)
        let cases: &[(i64, Option<i64>, u64, bool)] = &[
            (400, None, 180, true),
            (400, Some(200), 180, true),
            (400, Some(10), 180, false),
            (10, None, 180, false), // published recently: unused for only 10 days
            (181, None, 180, true),
            (179, None, 180, false),
            (400, Some(179), 180, false),
        ];
        for &(published, used, days, goes) in cases {
            let cands = vec![c("example.com/a@v1.0.0", 5, published, used)];
            let got = going(&policy(Some(days), 0, None), cands, &HashMap::new());
            assert_eq!(!got.is_empty(), goes, "{published} {used:?} {days}");
        }
    }

    /// Without recorded use, keep_unused_for removes nothing, and the size
    /// rule goes by publication. See: #15
    #[test]
    fn issue_15_unknown_use_prunes_nothing_by_age() {
        let mut p = policy(Some(1), 0, None);
        p.use_recorded = false;
        let cands = || {
            vec![
                c("example.com/a@v1.0.0", 10, 900, None),
                c("example.com/a@v1.1.0", 10, 800, None),
            ]
        };
        let d = decide(&p, cands(), &HashMap::new(), NOW);
        assert!(d.verdicts.iter().all(|v| v.reason == Reason::UseUnknown));
        p.max_tree_size = Some(15);
        assert_eq!(
            going(&p, cands(), &HashMap::new()),
            ["example.com/a@v1.0.0"]
        );
    }

    /// max_tree_size removes least recently used first, down to the size,
    /// never what an earlier rule keeps. See: #15
    #[test]
    fn issue_15_max_size_goes_least_recently_used_first() {
        let cands = || {
            vec![
                c("example.com/a@v1.0.0", 100, 900, Some(5)), // used 5 days ago
                c("example.com/a@v1.1.0", 100, 900, Some(50)),
                c("example.com/b@v1.0.0", 100, 900, Some(20)),
                c("example.com/c@v1.0.0", 100, 900, None), // never: since 900 days
            ]
        };
        // (max bytes, the versions that go, over_size)
        let cases: &[(u64, &[&str], bool)] = &[
            (400, &[], false),
            (399, &["example.com/c@v1.0.0"], false),
            (
                250,
                &["example.com/a@v1.1.0", "example.com/c@v1.0.0"],
                false,
            ),
            (
                10,
                &[
                    "example.com/a@v1.0.0",
                    "example.com/a@v1.1.0",
                    "example.com/b@v1.0.0",
                    "example.com/c@v1.0.0",
                ],
                false,
            ),
        ];
        for (max, want, over) in cases {
            let d = decide(&policy(None, 0, Some(*max)), cands(), &HashMap::new(), NOW);
            let mut got: Vec<String> = d.going().map(|v| v.mv.to_string()).collect();
            got.sort();
            assert_eq!(got, *want, "max {max}");
            assert_eq!(d.over_size, *over, "max {max}");
            assert_eq!(d.kept_bytes + d.going_bytes, 400);
        }
        // Used recently within keep_unused_for: protected from the size rule.
        let d = decide(
            &policy(Some(30), 0, Some(10)),
            cands(),
            &HashMap::new(),
            NOW,
        );
        let mut got: Vec<String> = d.going().map(|v| v.mv.to_string()).collect();
        got.sort();
        assert_eq!(got, ["example.com/a@v1.1.0", "example.com/c@v1.0.0"]);
        assert!(d.over_size);
    }

    /// A project's closure, a watch selector and a toolchain survive any
    /// policy, with their reason. See: #15
    #[test]
    fn issue_15_needed_versions_survive_any_policy() {
        let cands = || {
            vec![
                c("example.com/a@v1.0.0", 100, 900, None),
                c("example.com/w@v1.0.0", 100, 900, None),
                c(
                    "golang.org/toolchain@v0.0.1-go1.22.0.linux-amd64",
                    100,
                    900,
                    None,
                ),
                c("example.com/x@v1.0.0", 100, 900, None),
            ]
        };
        let mut needed = HashMap::new();
        let key = |s: &str| {
            cands()
                .into_iter()
                .find(|c| c.mv.to_string() == s)
                .unwrap()
                .mv
        };
        needed.insert(
            key("example.com/a@v1.0.0"),
            Need::Project {
                dir: "/src/app".into(),
            },
        );
        needed.insert(
            key("example.com/w@v1.0.0"),
            Need::Watch {
                selector: "example.com/w latest".into(),
            },
        );
        needed.insert(
            key("golang.org/toolchain@v0.0.1-go1.22.0.linux-amd64"),
            Need::Toolchain,
        );
        for p in [
            policy(Some(1), 0, None),
            policy(None, 0, Some(1)),
            policy(Some(1), 0, Some(1)),
        ] {
            let d = decide(&p, cands(), &needed, NOW);
            let got: Vec<String> = d.going().map(|v| v.mv.to_string()).collect();
            assert_eq!(got, ["example.com/x@v1.0.0"], "{p:?}");
            assert_eq!(
                d.verdicts[0].reason.to_string(),
                "needed by project /src/app"
            );
        }
        let mod_only = Candidate {
            listed: false,
            ..c("example.com/g@v1.0.0", 1, 900, None)
        };
        // Not listed: keep_latest does not count it.
        let got = going(&policy(Some(1), 3, None), vec![mod_only], &HashMap::new());
        assert_eq!(got, ["example.com/g@v1.0.0"]);
    }
}
