//! Version selectors for `[[watch]]` entries: which versions of one module
//! a run mirrors. Pure: the caller fetches `@v/list` and `@latest`.
//!
//! Input: a selector string from mirror.toml, then the module's tagged
//! versions. Output: the versions to mirror, sorted by semver, without
//! duplicates.
//!
//! | selector          | selects                                                     |
//! |-------------------|-------------------------------------------------------------|
//! | `latest`          | what `go get m@latest` resolves to (Go's rule, below)       |
//! | `latest N`        | the N highest tagged versions, plus what `latest` selects   |
//! | `all`             | every tagged version                                        |
//! | `v1.2.3`          | exactly that version; the only way to name a pseudo-version |
//! | `>=v1.2.0, <v2`   | every tagged version meeting every constraint               |
//!
//! - `latest` follows Go: the highest release, else the highest pre-release,
//!   else the version upstream `@latest` reports (a module with no tags).
//!   Go: cmd/go/internal/modload/query.go queryProxy and filterVersions.
//!   Go skips `+incompatible` versions when the highest compatible version
//!   has a go.mod file, which only the `.mod` can tell; we select both
//!   candidates, so the client finds whichever it resolves to.
//! - Retractions are not applied: they live in the newest `.mod`, which the
//!   selector never sees.
//! - `latest N` counts releases, pre-releases and `+incompatible` versions
//!   alike. `latest N` and `all` fall back to `@latest` for a module with
//!   no tags, so every watched module has something to serve.
//! - Ranges include pre-releases (a mirror wants completeness) and never
//!   fall back to `@latest` (Go: range queries only consider the list).
//!   Operands are Go semver, so `v2` compares as `v2.0.0`. As in Go,
//!   `<=v1.2` and `>v1.2` are refused as ambiguous (does `v1.2` mean
//!   `v1.2.0` or every `v1.2.x`?); so is `=v1.2`.
//!   Go: cmd/go/internal/modload/query.go newQueryMatcher: "ambiguous semantic version".

use std::cmp::Ordering;
use std::fmt;

use crate::module::{semver, Version};

/// Which versions of a watched module to mirror.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Selector {
    Latest,
    /// The N highest tagged versions; N ≥ 1.
    LatestN(usize),
    All,
    /// Canonical, possibly a pseudo-version; selected even if not listed.
    Exact(Version),
    /// Every constraint must hold; never empty.
    Range(Vec<Constraint>),
}

/// One comparison of a range, e.g. `>=v1.2.0`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Constraint {
    op: Op,
    /// Valid Go semver, possibly a shorthand (`v2`, `v1.2`).
    operand: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
    Eq,
}

const EXPECTED: &str = r#"expected "latest", "all", "latest N", an exact version such as "v1.2.3", or a range such as ">=v1.2.0, <v2""#;

impl Selector {
    pub fn parse(s: &str) -> Result<Selector, String> {
        let s = s.trim();
        if s == "latest" {
            return Ok(Selector::Latest);
        }
        if s == "all" {
            return Ok(Selector::All);
        }
        if let Some(n) = s
            .strip_prefix("latest")
            .filter(|n| n.starts_with(char::is_whitespace))
        {
            return match n.trim().parse::<usize>() {
                Ok(0) => Err("latest N: N must be at least 1, got 0".into()),
                Ok(n) => Ok(Selector::LatestN(n)),
                Err(_) => Err(format!(
                    "latest N: N must be a whole number, got {:?}",
                    n.trim()
                )),
            };
        }
        if s.starts_with(['<', '>', '=']) {
            return parse_range(s).map(Selector::Range);
        }
        if s.starts_with('v') && semver::is_valid(s) {
            return Version::new(s).map(Selector::Exact).map_err(|e| {
                let hint = match semver::canonical(s) {
                    Some(c) if is_semver_prefix(s) => {
                        format!("; for every {s}.x write \">={c}, <{}\"", next_prefix(s))
                    }
                    _ => String::new(),
                };
                format!("{e}{hint}")
            });
        }
        Err(format!("{EXPECTED}; got {s:?}"))
    }

    /// The versions to mirror, given the module's tagged versions (from
    /// `@v/list`, no pseudo-versions) and what `@latest` reported.
    pub fn select(&self, tagged: &[Version], latest: Option<&Version>) -> Vec<Version> {
        let fallback = || latest.into_iter().cloned().collect::<Vec<_>>();
        let mut out = match self {
            Selector::Latest if tagged.is_empty() => fallback(),
            Selector::Latest => go_latest(tagged),
            Selector::LatestN(_) | Selector::All if tagged.is_empty() => fallback(),
            Selector::LatestN(n) => {
                let mut sorted = tagged.to_vec();
                sorted.sort_unstable_by(|a, b| b.cmp(a));
                sorted.dedup();
                sorted.truncate(*n);
                sorted.extend(go_latest(tagged));
                sorted
            }
            Selector::All => tagged.to_vec(),
            Selector::Exact(v) => vec![v.clone()],
            Selector::Range(cs) => tagged
                .iter()
                .filter(|v| cs.iter().all(|c| c.allows(v)))
                .cloned()
                .collect(),
        };
        out.sort_unstable();
        out.dedup();
        out
    }
}

/// Go's `@latest` over a list, for both outcomes of the go.mod check in
/// query.go filterVersions: all versions, and compatible ones only.
fn go_latest(tagged: &[Version]) -> Vec<Version> {
    let pick = |compatible_only: bool| {
        let candidates = tagged
            .iter()
            .filter(|v| !compatible_only || semver::build(v.as_str()) != "+incompatible");
        let (pre, rel): (Vec<&Version>, Vec<&Version>) =
            candidates.partition(|v| v.is_prerelease());
        rel.into_iter()
            .max()
            .or_else(|| pre.into_iter().max())
            .cloned()
    };
    [pick(false), pick(true)].into_iter().flatten().collect()
}

fn parse_range(s: &str) -> Result<Vec<Constraint>, String> {
    s.split(',')
        .map(|c| parse_constraint(c.trim(), s))
        .collect()
}

fn parse_constraint(c: &str, range: &str) -> Result<Constraint, String> {
    if c.is_empty() {
        return Err(format!("range {range:?}: empty constraint (stray comma?)"));
    }
    let (op, rest) = [
        (">=", Op::Ge),
        ("<=", Op::Le),
        (">", Op::Gt),
        ("<", Op::Lt),
        ("=", Op::Eq),
    ]
    .into_iter()
    .find_map(|(p, op)| c.strip_prefix(p).map(|rest| (op, rest.trim_start())))
    .ok_or_else(|| {
        format!("range {range:?}: constraint {c:?} must start with >=, >, <=, < or =")
    })?;
    // `">=v1.2.0 <v2"`: two constraints where one was written.
    // See: #13
    if let Some((first, next)) = rest.split_once(char::is_whitespace) {
        let next = next.trim_start();
        if next.starts_with(['<', '>', '=']) {
            let op_text = &c[..c.len() - rest.len()];
            let first = format!("{}{first}", op_text.trim_end());
            return Err(format!(
                "range {range:?}: a comma is missing between {first:?} and {next:?}; \
                 write \"{first}, {next}\""
            ));
        }
    }
    if !semver::is_valid(rest) {
        return Err(format!(
            "range {range:?}: {rest:?} is not a Go semantic version (want e.g. v1.2.3, v1.2 or v2)"
        ));
    }
    if matches!(op, Op::Le | Op::Gt | Op::Eq) && is_semver_prefix(rest) {
        // Go: cmd/go/internal/modload/query.go newQueryMatcher refuses <=v1.2 and >v1.2.
        return Err(format!(
            "range {range:?}: ambiguous version {rest:?} in {c:?}: write {}",
            unambiguous(op, rest)
        ));
    }
    Ok(Constraint {
        op,
        operand: rest.to_owned(),
    })
}

impl Constraint {
    fn allows(&self, v: &Version) -> bool {
        let ord = semver::compare(v.as_str(), &self.operand);
        match self.op {
            Op::Ge => ord != Ordering::Less,
            Op::Gt => ord == Ordering::Greater,
            Op::Le => ord != Ordering::Greater,
            Op::Lt => ord == Ordering::Less,
            Op::Eq => ord == Ordering::Equal,
        }
    }
}

impl Selector {
    /// Whether this is a range no version can satisfy (`>=v1.5.0, <v1.5.0`): its highest
    /// lower bound lies above its lowest upper bound, or meets it where either excludes it.
    pub fn is_empty_range(&self) -> bool {
        let Selector::Range(cs) = self else {
            return false;
        };
        let lowers = cs
            .iter()
            .filter(|c| matches!(c.op, Op::Ge | Op::Gt | Op::Eq));
        let uppers = || {
            cs.iter()
                .filter(|c| matches!(c.op, Op::Le | Op::Lt | Op::Eq))
        };
        lowers.into_iter().any(|lo| {
            uppers().any(|hi| match semver::compare(&lo.operand, &hi.operand) {
                Ordering::Greater => true,
                Ordering::Equal => matches!(lo.op, Op::Gt) || matches!(hi.op, Op::Lt),
                Ordering::Less => false,
            })
        })
    }
}

/// Go: cmd/go/internal/modload/query.go isSemverPrefix: `v1` or `v1.2`, not `v1.2.3`.
fn is_semver_prefix(v: &str) -> bool {
    !v.contains(['-', '+']) && v.matches('.').count() < 2
}

/// The prefix after `v` (`v1` → `v2`, `v1.2` → `v1.3`), for hints.
fn next_prefix(v: &str) -> String {
    let (head, last) = v.rsplit_once('.').unwrap_or(("", &v[1..]));
    let next = last.parse::<u64>().map_or(0, |n| n.saturating_add(1));
    if head.is_empty() {
        format!("v{next}")
    } else {
        format!("{head}.{next}")
    }
}

/// The unambiguous spelling of an ambiguous constraint, for hints.
fn unambiguous(op: Op, prefix: &str) -> String {
    let canonical = semver::canonical(prefix).unwrap_or_default();
    let next = next_prefix(prefix);
    match op {
        Op::Le => format!("\"<{next}\" for every {prefix}.x, or \"<={canonical}\""),
        Op::Gt => format!("\">={next}\" to skip every {prefix}.x, or \">{canonical}\""),
        _ => format!("\">={prefix}, <{next}\" for every {prefix}.x, or \"={canonical}\""),
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::Latest => f.write_str("latest"),
            Selector::LatestN(n) => write!(f, "latest {n}"),
            Selector::All => f.write_str("all"),
            Selector::Exact(v) => write!(f, "{v}"),
            Selector::Range(cs) => {
                for (i, c) in cs.iter().enumerate() {
                    let sep = if i == 0 { "" } else { ", " };
                    write!(f, "{sep}{c}")?;
                }
                Ok(())
            }
        }
    }
}

impl fmt::Display for Constraint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Ge => ">=",
            Op::Gt => ">",
            Op::Le => "<=",
            Op::Lt => "<",
            Op::Eq => "=",
        };
        write!(f, "{op}{}", self.operand)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn versions(list: &str) -> Vec<Version> {
        list.split_whitespace()
            .map(|v| Version::new(v).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    }

    fn show(list: &[Version]) -> String {
        list.iter()
            .map(Version::as_str)
            .collect::<Vec<_>>()
            .join(" ")
    }

    #[test]
    fn parse_ok() {
        // (input, Display of the parsed selector)
        let cases = [
            ("latest", "latest"),
            ("  latest ", "latest"),
            ("all", "all"),
            ("latest 3", "latest 3"),
            ("latest   12", "latest 12"),
            ("v1.2.3", "v1.2.3"),
            ("v1.2.3-rc.1", "v1.2.3-rc.1"),
            ("v2.0.0+incompatible", "v2.0.0+incompatible"),
            (
                "v0.0.0-20200101000000-abcdefabcdef",
                "v0.0.0-20200101000000-abcdefabcdef",
            ),
            (">=v1.2.0, <v2", ">=v1.2.0, <v2"),
            (">= v1.2.0,<v2", ">=v1.2.0, <v2"),
            (">v1.2.3", ">v1.2.3"),
            ("<=v1.2.3", "<=v1.2.3"),
            ("=v1.2.3", "=v1.2.3"),
            (">=v1.2, <v1.3", ">=v1.2, <v1.3"),
            (">=v1.0.0-rc.1", ">=v1.0.0-rc.1"),
        ];
        for (input, want) in cases {
            let got = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(got.to_string(), want, "{input:?}");
        }
    }

    #[test]
    fn parse_err() {
        // (input, part of the message)
        let cases = [
            ("", "expected \"latest\", \"all\""),
            ("newest", "got \"newest\""),
            ("Latest", "expected \"latest\""),
            ("latest0", "expected \"latest\""),
            ("latest 0", "N must be at least 1, got 0"),
            ("latest -1", "N must be a whole number, got \"-1\""),
            ("latest two", "N must be a whole number"),
            ("1.2.3", "an exact version such as \"v1.2.3\""),
            (
                "v1.2",
                "not canonical (want v1.2.0); for every v1.2.x write \">=v1.2.0, <v1.3\"",
            ),
            ("v1", "for every v1.x write \">=v1.0.0, <v2\""),
            ("v1.2.3+build", "not canonical (want v1.2.3)"),
            (">=1.2.0", "\"1.2.0\" is not a Go semantic version"),
            (">=v1.2.0,", "empty constraint"),
            (
                ">=v1.2.0, v2",
                "constraint \"v2\" must start with >=, >, <=, < or =",
            ),
            (
                "<=v1.2",
                "ambiguous version \"v1.2\" in \"<=v1.2\": write \"<v1.3\"",
            ),
            (">v1", "ambiguous version \"v1\" in \">v1\": write \">=v2\""),
            (
                "=v1.2",
                "\">=v1.2, <v1.3\" for every v1.2.x, or \"=v1.2.0\"",
            ),
            ("!=v1.2.3", "expected \"latest\""),
            // See: #13
            (
                ">=v1.2.0 <v2",
                "a comma is missing between \">=v1.2.0\" and \"<v2\"; write \">=v1.2.0, <v2\"",
            ),
            (
                "> v1.2.0   <=v1.3.0",
                "a comma is missing between \">v1.2.0\" and \"<=v1.3.0\"",
            ),
        ];
        for (input, want) in cases {
            let err = Selector::parse(input).expect_err(input);
            assert!(err.contains(want), "{input:?}: got {err:?}, want {want:?}");
        }
    }

    // See: #13
    #[test]
    fn issue_13_empty_ranges_are_recognised() {
        let cases = [
            (">=v1.5.0, <v1.5.0", true),
            (">v1.5.0, <=v1.5.0", true),
            (">=v2, <v1.9.0", true),
            ("=v1.2.0, >v1.2.0", true),
            ("=v1.2.0, =v1.3.0", true),
            (">=v1.5.0, <=v1.5.0", false),
            (">=v1.2.0, <v2", false),
            ("=v1.2.0", false),
            (">=v1.0.0", false),
            ("all", false),
        ];
        for (input, empty) in cases {
            let sel = Selector::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(sel.is_empty_range(), empty, "{input:?}");
        }
    }

    #[test]
    fn select() {
        let list = "v0.9.0 v1.0.0-rc.1 v1.0.0 v1.1.0 v1.2.0-beta.1 v1.2.0 v1.2.1 v1.3.0-rc.1";
        let pre_only = "v0.1.0-alpha v0.2.0-beta v0.2.0-alpha";
        let incompatible = "v1.4.0 v1.5.0-rc.1 v2.0.0+incompatible v3.1.0+incompatible";
        let incompatible_pre = "v1.5.0-rc.1 v2.0.0+incompatible";
        let pseudo = "v0.0.0-20200101000000-abcdefabcdef";
        // (selector, tagged, @latest, want)
        let cases = [
            ("latest", list, None, "v1.2.1"),
            ("latest", pre_only, None, "v0.2.0-beta"),
            ("latest", "", Some(pseudo), pseudo),
            ("latest", "", None, ""),
            ("latest", list, Some("v1.3.0-rc.1"), "v1.2.1"),
            // Go prefers the highest compatible version when it has a go.mod.
            ("latest", incompatible, None, "v1.4.0 v3.1.0+incompatible"),
            (
                "latest",
                incompatible_pre,
                None,
                "v1.5.0-rc.1 v2.0.0+incompatible",
            ),
            ("latest", "v2.0.0+incompatible", None, "v2.0.0+incompatible"),
            ("latest 2", list, None, "v1.2.1 v1.3.0-rc.1"),
            ("latest 3", list, None, "v1.2.0 v1.2.1 v1.3.0-rc.1"),
            ("latest 1", "v1.0.0 v1.1.0-rc.1", None, "v1.0.0 v1.1.0-rc.1"),
            ("latest 100", "v1.0.0 v0.1.0", None, "v0.1.0 v1.0.0"),
            ("latest 2", "v1.0.0 v1.0.0 v1.1.0", None, "v1.0.0 v1.1.0"),
            ("latest 2", "", Some(pseudo), pseudo),
            ("all", list, None, list),
            ("all", "v1.1.0 v1.0.0 v1.1.0", None, "v1.0.0 v1.1.0"),
            ("all", "", Some(pseudo), pseudo),
            ("v1.1.0", list, None, "v1.1.0"),
            ("v9.9.9", list, None, "v9.9.9"),
            (pseudo, list, None, pseudo),
            (">=v1.0.0, <v1.2", list, None, "v1.0.0 v1.1.0 v1.2.0-beta.1"),
            (">=v1.2", list, None, "v1.2.0 v1.2.1 v1.3.0-rc.1"),
            (
                ">=v1.0.0-0, <v1.2.0",
                list,
                None,
                "v1.0.0-rc.1 v1.0.0 v1.1.0 v1.2.0-beta.1",
            ),
            (">v1.2.0", list, None, "v1.2.1 v1.3.0-rc.1"),
            ("<=v1.0.0", list, None, "v0.9.0 v1.0.0-rc.1 v1.0.0"),
            ("<v1", list, None, "v0.9.0 v1.0.0-rc.1"),
            ("=v1.2.1", list, None, "v1.2.1"),
            (">=v2", list, Some("v1.2.1"), ""),
            (">=v0.0.0", "", Some(pseudo), ""),
        ];
        for (sel, tagged, latest, want) in cases {
            let s = Selector::parse(sel).unwrap_or_else(|e| panic!("{sel}: {e}"));
            let latest = latest.map(|v| Version::new(v).expect("test version"));
            let got = s.select(&versions(tagged), latest.as_ref());
            assert_eq!(show(&got), want, "{sel} over [{tagged}]");
        }
    }
}
