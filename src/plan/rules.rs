//! Which feed entries to mirror: `[[feed.rule]]`s from mirror.toml,
//! evaluated in order, the first that matches deciding.
//!
//! | rule                      | matches an entry whose module …                  | then   |
//! |---------------------------|--------------------------------------------------|--------|
//! | `exclude = "globs"`       | matches a glob                                   | skip   |
//! | `include = "globs"`       | matches a glob (`github.com/myorg/*`)            | mirror |
//! | `watched = true`          | has a `[[watch]]` entry: every new version       | mirror |
//!
//! Globs are comma-separated `path.Match` patterns matched against leading
//! path elements, as GONOSUMDB and GOPRIVATE are
//! (Go: x/mod/module/module.go MatchPrefixPatterns).
//!
//! Before the rules, the pseudo-version policy: pseudo-versions name commits,
//! not releases, and the feed is full of them; by default only watched
//! modules' are taken. After the rules, when none matched: a new tagged
//! version of a module the tree already mirrors is taken, so that its
//! `@v/list`, `@latest` and newest `.mod` (which carries `retract` and
//! `// Deprecated:`) stay current (PROTOCOL.md: retractions are read from the
//! newest version's go.mod). Anything else is skipped.

use std::fmt;

use crate::module::{match_prefix_patterns, ModVer};

/// One `[[feed.rule]]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rule {
    /// Comma-separated globs, each checked by [`check_globs`].
    Include(String),
    Exclude(String),
    Watched,
}

/// Which pseudo-versions from the feed to take.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PseudoPolicy {
    /// None.
    Skip,
    /// Those of watched modules (the default).
    Watched,
    /// All that the rules select.
    All,
}

/// What the rules made of one entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Decision {
    /// An `include` rule matched.
    Included,
    /// The `watched` rule matched.
    Watched,
    /// No rule matched, but the module is mirrored and this is a new tag.
    Fresh,
    /// An `exclude` rule matched.
    Excluded,
    /// A pseudo-version the policy refuses.
    Pseudo,
    /// No rule matched.
    Unmatched,
}

impl Decision {
    pub fn mirrors(self) -> bool {
        matches!(
            self,
            Decision::Included | Decision::Watched | Decision::Fresh
        )
    }
}

/// What is known about an entry's module besides its name.
#[derive(Clone, Copy, Debug, Default)]
pub struct Known {
    /// A `[[watch]]` entry names it.
    pub watched: bool,
    /// The tree holds a published version of it.
    pub mirrored: bool,
}

/// The rules and pseudo-version policy of `[feed]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rules {
    pub rules: Vec<Rule>,
    pub pseudo: PseudoPolicy,
}

impl Rules {
    pub fn decide(&self, mv: &ModVer, known: Known) -> Decision {
        if mv.version.is_pseudo() {
            let allowed = match self.pseudo {
                PseudoPolicy::Skip => false,
                PseudoPolicy::Watched => known.watched,
                PseudoPolicy::All => true,
            };
            if !allowed {
                return Decision::Pseudo;
            }
        }
        let path = mv.path.as_str();
        for rule in &self.rules {
            match rule {
                Rule::Exclude(g) if match_prefix_patterns(g, path) => return Decision::Excluded,
                Rule::Include(g) if match_prefix_patterns(g, path) => return Decision::Included,
                Rule::Watched if known.watched => return Decision::Watched,
                _ => {}
            }
        }
        if known.mirrored && !mv.version.is_pseudo() {
            Decision::Fresh
        } else {
            Decision::Unmatched
        }
    }
}

/// Checks comma-separated `path.Match` globs: none empty, each well formed.
/// Go's MatchPrefixPatterns silently ignores a malformed glob; in a config
/// file that would be a rule that never matches, so it is refused here.
pub fn check_globs(globs: &str) -> Result<(), String> {
    for glob in globs.split(',') {
        let trimmed = glob.strip_suffix('/').unwrap_or(glob);
        if trimmed.is_empty() {
            return Err(format!("{globs:?}: empty pattern (stray comma?)"));
        }
        if trimmed.trim() != trimmed {
            return Err(format!(
                "{glob:?}: spaces around a pattern are part of it; remove them"
            ));
        }
        check_glob(trimmed).map_err(|why| format!("{glob:?}: {why}"))?;
    }
    Ok(())
}

/// Go: path/match.go: `[` opens a class that must close and hold at least
/// one `lo` or `lo-hi`; `-` and `]` there must be escaped; `\` must escape
/// something.
fn check_glob(glob: &str) -> Result<(), &'static str> {
    let mut chars = glob.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' if chars.next().is_none() => return Err("trailing backslash"),
            '[' => check_class(&mut chars)?,
            _ => {}
        }
    }
    Ok(())
}

type Chars<'a> = std::iter::Peekable<std::str::Chars<'a>>;

fn check_class(chars: &mut Chars<'_>) -> Result<(), &'static str> {
    if chars.peek() == Some(&'^') {
        chars.next();
    }
    let mut ranges = 0;
    loop {
        match chars.peek() {
            None => return Err("unclosed ["),
            Some(']') if ranges > 0 => {
                chars.next();
                return Ok(());
            }
            _ => {}
        }
        class_char(chars)?;
        if chars.peek() == Some(&'-') {
            chars.next();
            class_char(chars)?;
        }
        ranges += 1;
    }
}

/// Go: path/match.go getEsc.
fn class_char(chars: &mut Chars<'_>) -> Result<char, &'static str> {
    match chars.next() {
        None => Err("unclosed ["),
        Some('-' | ']') => Err("'-' and ']' in a character class must be escaped"),
        Some('\\') => chars.next().ok_or("trailing backslash"),
        Some(c) => Ok(c),
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Include(g) => write!(f, "include {g:?}"),
            Rule::Exclude(g) => write!(f, "exclude {g:?}"),
            Rule::Watched => f.write_str("watched"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PSEUDO: &str = "v0.0.0-20240101000000-abcdefabcdef";

    fn rules(rules: Vec<Rule>, pseudo: PseudoPolicy) -> Rules {
        Rules { rules, pseudo }
    }

    #[test]
    fn first_matching_rule_decides() {
        use Decision::*;
        let org = rules(
            vec![
                Rule::Exclude("github.com/myorg/secret*".into()),
                Rule::Include("github.com/myorg/*,example.com".into()),
                Rule::Watched,
            ],
            PseudoPolicy::Watched,
        );
        let none = Known::default();
        let watched = Known {
            watched: true,
            mirrored: false,
        };
        let mirrored = Known {
            watched: false,
            mirrored: true,
        };
        // (path, version, known, want)
        let cases = [
            ("github.com/myorg/tool", "v1.0.0", none, Included),
            ("github.com/myorg/tool/v2", "v2.1.0", none, Included),
            ("github.com/myorg/secrets", "v1.0.0", watched, Excluded),
            ("github.com/other/tool", "v1.0.0", none, Unmatched),
            ("github.com/other/tool", "v1.0.0", watched, Watched),
            ("github.com/other/tool", "v1.1.0", mirrored, Fresh),
            ("example.com/anything/below", "v1.0.0", none, Included),
            ("example.community/x", "v1.0.0", none, Unmatched),
            ("github.com/myorg/tool", PSEUDO, none, Pseudo),
            ("github.com/other/tool", PSEUDO, watched, Watched),
            ("github.com/other/tool", PSEUDO, mirrored, Pseudo),
        ];
        for (p, v, known, want) in cases {
            let mv = ModVer::parse(p, v).unwrap();
            assert_eq!(org.decide(&mv, known), want, "{mv}");
        }
    }

    #[test]
    fn pseudo_version_policy() {
        let mv = ModVer::parse("github.com/myorg/tool", PSEUDO).unwrap();
        let watched = Known {
            watched: true,
            mirrored: true,
        };
        let include = || vec![Rule::Include("github.com/myorg".into()), Rule::Watched];
        // (policy, watched?, want)
        let cases = [
            (PseudoPolicy::Skip, true, Decision::Pseudo),
            (PseudoPolicy::Watched, false, Decision::Pseudo),
            (PseudoPolicy::Watched, true, Decision::Included),
            (PseudoPolicy::All, false, Decision::Included),
        ];
        for (policy, is_watched, want) in cases {
            let known = if is_watched {
                watched
            } else {
                Known::default()
            };
            assert_eq!(
                rules(include(), policy).decide(&mv, known),
                want,
                "{policy:?}"
            );
        }
        // A mirrored module's new pseudo-version is not "fresh": it is never listed.
        let none = rules(vec![], PseudoPolicy::All);
        let mirrored = Known {
            watched: false,
            mirrored: true,
        };
        assert_eq!(none.decide(&mv, mirrored), Decision::Unmatched);
    }

    #[test]
    fn globs_are_checked() {
        let ok = [
            "github.com/myorg/*",
            "*.corp.example.com,rsc.io",
            "x/[a-c]*",
            "x/[^a]",
            "x/[\\]]",
            "a\\*b",
            "x/",
        ];
        for g in ok {
            assert_eq!(check_globs(g), Ok(()), "{g}");
        }
        // (globs, part of the reason)
        let bad = [
            ("", "empty pattern"),
            ("a,,b", "empty pattern"),
            ("a, b", "spaces"),
            ("x/[abc", "unclosed ["),
            ("x/[]", "must be escaped"),
            ("x/[-a]", "must be escaped"),
            ("x/[a-]", "must be escaped"),
            ("x\\", "trailing backslash"),
        ];
        for (g, want) in bad {
            let err = check_globs(g).expect_err(g);
            assert!(err.contains(want), "{g}: {err}");
        }
    }
}
