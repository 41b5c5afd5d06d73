//! Which of the clients' misses become work (`[clients] learn`). See: #14
//!
//! Input: the misses reading the access log recorded (each a valid module
//! path, and a canonical version or none for a listing), most-missed
//! first; `[[clients.rule]]`; what may never leave for a public server;
//! what the tree has. Output: [`Learning`], what to plan and what was
//! refused, each with its reason. No I/O.
//!
//! In order, for each miss:
//! 1. private (`[upstream] private`, `[sumdb] private`): refused; a client
//!    naming a private module never makes the mirror ask anyone about it;
//! 2. `[[clients.rule]]`, the first matching rule deciding: `exclude` or no
//!    match at all refuses it;
//! 3. a quarantined version stays out (until `gomirror retry`), and a
//!    version the tree has already (published after the client missed it)
//!    needs nothing;
//! 4. at most `cap` misses become work; the rest stay for the next sync
//!    (most-missed first, so a scanner's one-off paths wait behind the
//!    versions real builds keep asking for).

use std::fmt;

use crate::module::{match_prefix_patterns, ModVer, ModulePath};
use crate::plan::rules::Rule;

/// What a client missed.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Missed {
    /// A version's `.info`, `.mod`, `.zip` or checksum-database lookup.
    Version(ModVer),
    /// `@v/list` or `@latest`: go resolving a path it has no version of.
    Listing(ModulePath),
}

impl Missed {
    pub fn path(&self) -> &ModulePath {
        match self {
            Missed::Version(mv) => &mv.path,
            Missed::Listing(path) => path,
        }
    }
}

impl fmt::Display for Missed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Missed::Version(mv) => mv.fmt(f),
            Missed::Listing(path) => write!(f, "{path}/@v/list"),
        }
    }
}

/// Why a miss does not become work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Refusal {
    /// Matches `[upstream] private` or `[sumdb] private`.
    Private,
    /// An `exclude` rule matched.
    Excluded,
    /// No rule matched.
    Unmatched,
    /// Quarantined: kept out until `gomirror retry`.
    Quarantined,
    /// The tree has it already.
    Present,
}

impl Refusal {
    /// The word state records as the miss's outcome.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Private => "private",
            Refusal::Excluded => "excluded",
            Refusal::Unmatched => "unmatched",
            Refusal::Quarantined => "quarantined",
            Refusal::Present => "present",
        }
    }
}

/// What the misses came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Learning {
    /// Work for this sync, at most the cap.
    pub planned: Vec<Missed>,
    /// Misses that never become work, with the reason.
    pub refused: Vec<(Missed, Refusal)>,
    /// Misses beyond the cap, left for the next sync.
    pub deferred: usize,
}

/// What the planner knows about a module path besides the misses.
pub trait Known {
    /// Never to be named to a public server.
    fn private(&self, path: &ModulePath) -> bool;
    /// The tree holds this version (a listing: a version of this module) already.
    fn present(&self, missed: &Missed) -> bool;
    /// The version is quarantined.
    fn quarantined(&self, mv: &ModVer) -> bool;
}

/// Decides each of `misses` (most-missed first), planning at most `cap`.
pub fn plan(misses: Vec<Missed>, rules: &[Rule], known: &impl Known, cap: usize) -> Learning {
    let mut out = Learning::default();
    for missed in misses {
        let path = missed.path().as_str();
        let refusal = if known.private(missed.path()) {
            Some(Refusal::Private)
        } else {
            match first_match(rules, path) {
                Some(Rule::Exclude(_)) => Some(Refusal::Excluded),
                Some(_) => match &missed {
                    Missed::Version(mv) if known.quarantined(mv) => Some(Refusal::Quarantined),
                    _ => known.present(&missed).then_some(Refusal::Present),
                },
                None => Some(Refusal::Unmatched),
            }
        };
        match refusal {
            Some(r) => out.refused.push((missed, r)),
            None if out.planned.len() < cap => out.planned.push(missed),
            None => out.deferred += 1,
        }
    }
    out
}

/// The first `include`/`exclude` rule whose globs match `path`.
fn first_match<'r>(rules: &'r [Rule], path: &str) -> Option<&'r Rule> {
    rules.iter().find(|rule| match rule {
        Rule::Include(g) | Rule::Exclude(g) => match_prefix_patterns(g, path),
        Rule::Watched => false,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use super::*;

    struct Facts {
        private: Vec<&'static str>,
        present: HashSet<Missed>,
        quarantined: HashSet<ModVer>,
    }

    impl Known for Facts {
        fn private(&self, path: &ModulePath) -> bool {
            self.private.iter().any(|p| path.as_str().starts_with(p))
        }
        fn present(&self, missed: &Missed) -> bool {
            self.present.contains(missed)
        }
        fn quarantined(&self, mv: &ModVer) -> bool {
            self.quarantined.contains(mv)
        }
    }

    fn version(path: &str, v: &str) -> Missed {
        Missed::Version(ModVer::parse(path, v).expect("valid"))
    }

    fn listing(path: &str) -> Missed {
        Missed::Listing(ModulePath::new(path).expect("valid"))
    }

    // See: #14
    #[test]
    fn issue_14_private_rules_presence_and_cap_decide_in_that_order() {
        let facts = Facts {
            private: vec!["corp.example.com"],
            present: [version("example.com/have", "v1.0.0")].into(),
            quarantined: [ModVer::parse("example.com/bad", "v6.6.6+incompatible").expect("valid")]
                .into(),
        };
        let rules = vec![
            Rule::Exclude("github.com/attacker-*".into()),
            Rule::Include("example.com,github.com".into()),
        ];
        let misses = vec![
            version("corp.example.com/secret", "v1.0.0"),
            listing("github.com/attacker-x/evil"),
            version("golang.org/x/text", "v0.3.0"),
            version("example.com/have", "v1.0.0"),
            version("example.com/bad", "v6.6.6+incompatible"),
            version("example.com/a", "v1.2.3"),
            listing("github.com/user/repo"),
            version("example.com/b", "v0.1.0"),
        ];
        let got = plan(misses, &rules, &facts, 2);
        let want = Learning {
            planned: vec![
                version("example.com/a", "v1.2.3"),
                listing("github.com/user/repo"),
            ],
            refused: vec![
                (
                    version("corp.example.com/secret", "v1.0.0"),
                    Refusal::Private,
                ),
                (listing("github.com/attacker-x/evil"), Refusal::Excluded),
                (version("golang.org/x/text", "v0.3.0"), Refusal::Unmatched),
                (version("example.com/have", "v1.0.0"), Refusal::Present),
                (
                    version("example.com/bad", "v6.6.6+incompatible"),
                    Refusal::Quarantined,
                ),
            ],
            deferred: 1,
        };
        assert_eq!(got, want);
    }

    // See: #14
    #[test]
    fn issue_14_private_wins_over_an_include_rule() {
        let facts = Facts {
            private: vec!["corp.example.com"],
            present: HashSet::new(),
            quarantined: HashSet::new(),
        };
        let rules = vec![Rule::Include("*".into())];
        let got = plan(vec![listing("corp.example.com/x")], &rules, &facts, 10);
        assert_eq!(
            got.refused,
            vec![(listing("corp.example.com/x"), Refusal::Private)]
        );
        assert!(got.planned.is_empty());
    }

    // See: #14
    #[test]
    fn issue_14_include_star_matches_every_path() {
        let facts = Facts {
            private: vec![],
            present: HashSet::new(),
            quarantined: HashSet::new(),
        };
        let rules = vec![Rule::Include("*".into())];
        let misses = vec![
            listing("github.com/a/b/c/d"),
            version("gopkg.in/yaml.v3", "v3.0.1"),
        ];
        let got = plan(misses.clone(), &rules, &facts, 10);
        assert_eq!(got.planned, misses);
    }
}
