//! Go release and language versions (`1.21`, `1.21rc1`, `1.21.0`), as `go` and `toolchain`
//! lines spell them, and their order.
//!
//! Go: src/internal/gover/gover.go `Parse`, `Compare`: a language version sorts before its
//! pre-releases, which sort before its first release (`1.21 < 1.21rc1 < 1.21.0`); before Go
//! 1.21 a bare `1.N` means `1.N.0`. Kinds order `"" < alpha < beta < rc`.

use std::cmp::Ordering;
use std::fmt;

/// A valid Go version. Ordering is gover's; equal versions may be spelled differently
/// (`1.20` and `1.20.0`), and [`fmt::Display`] keeps the spelling it was given.
#[derive(Clone, Debug)]
pub struct GoVersion {
    text: String,
    major: String,
    minor: String,
    patch: String,
    kind: String,
    pre: String,
}

/// `1.17`: from this `go` line on, go.mod files list every module that provides a package,
/// so the module graph is pruned. Go: cmd/go/internal/gover ExplicitIndirectVersion.
pub const EXPLICIT_INDIRECT: &str = "1.17";
/// `1.21`: from this `go` line on, the line is a minimum requirement that can make the go
/// command switch toolchains, and `go 1.N` means the release `go1.N.0`.
/// Go: cmd/go/internal/gover GoStrictVersion.
pub const GO_STRICT: &str = "1.21";
/// The `go` version of a main module whose go.mod has no `go` line.
/// Go: cmd/go/internal/gover DefaultGoModVersion.
pub const DEFAULT_GO_MOD: &str = "1.16";

impl GoVersion {
    /// Go: internal/gover Parse; `None` where it returns the zero Version.
    pub fn parse(x: &str) -> Option<GoVersion> {
        let text = x.to_owned();
        let (major, mut rest) = cut_int(x)?;
        let mut v = GoVersion {
            text,
            major: major.to_owned(),
            minor: String::new(),
            patch: String::new(),
            kind: String::new(),
            pre: String::new(),
        };
        if rest.is_empty() {
            v.minor = "0".into();
            v.patch = "0".into();
            return Some(v);
        }
        rest = rest.strip_prefix('.')?;
        let (minor, after) = cut_int(rest)?;
        v.minor = minor.to_owned();
        rest = after;
        if rest.is_empty() {
            if cmp_int(&v.minor, "21") == Ordering::Less {
                v.patch = "0".into();
            }
            return Some(v);
        }
        if let Some(p) = rest.strip_prefix('.') {
            let (patch, after) = cut_int(p)?;
            if !after.is_empty() {
                return None;
            }
            v.patch = patch.to_owned();
            return Some(v);
        }
        let letters = rest.bytes().take_while(|c| !c.is_ascii_digit()).count();
        if letters == 0 || !rest[..letters].bytes().all(|c| c.is_ascii_lowercase()) {
            return None;
        }
        v.kind = rest[..letters].to_owned();
        rest = &rest[letters..];
        if rest.is_empty() {
            return Some(v);
        }
        let (pre, after) = cut_int(rest)?;
        if !after.is_empty() {
            return None;
        }
        v.pre = pre.to_owned();
        Some(v)
    }

    /// Go: internal/gover IsLang: `1.21` but not `1.21.0` or `1.21rc1`.
    pub fn is_lang(&self) -> bool {
        self.patch.is_empty() && self.kind.is_empty() && self.pre.is_empty()
    }

    /// Whether go.mod files at this `go` version prune the module graph
    /// (Go: cmd/go/internal/modload pruningForGoVersion).
    pub fn prunes(&self) -> bool {
        self >= &known(EXPLICIT_INDIRECT)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

/// One of the constants above, which parse.
pub fn known(x: &str) -> GoVersion {
    GoVersion::parse(x).expect("gover constants are valid Go versions")
}

/// Go: internal/gover cutInt: a decimal without unnecessary leading zeros.
fn cut_int(x: &str) -> Option<(&str, &str)> {
    let n = x.bytes().take_while(u8::is_ascii_digit).count();
    if n == 0 || (x.starts_with('0') && n != 1) {
        return None;
    }
    Some(x.split_at(n))
}

/// Go: internal/gover CmpInt: decimals without leading zeros; `""` sorts first.
fn cmp_int(x: &str, y: &str) -> Ordering {
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

impl Ord for GoVersion {
    fn cmp(&self, o: &Self) -> Ordering {
        cmp_int(&self.major, &o.major)
            .then_with(|| cmp_int(&self.minor, &o.minor))
            .then_with(|| cmp_int(&self.patch, &o.patch))
            .then_with(|| self.kind.cmp(&o.kind))
            .then_with(|| cmp_int(&self.pre, &o.pre))
    }
}

impl PartialOrd for GoVersion {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}

impl PartialEq for GoVersion {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}

impl Eq for GoVersion {}

impl fmt::Display for GoVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compare() {
        // Go: internal/gover/gover_test.go compareTests.
        use Ordering::*;
        let cases = [
            ("", "", Equal),
            ("x", "x", Equal),
            ("", "x", Equal),
            ("1", "1.1", Less),
            ("1.5", "1.6", Less),
            ("1.5", "1.10", Less),
            ("1.6", "1.6.1", Less),
            ("1.19", "1.19.0", Equal),
            ("1.19rc1", "1.19", Less),
            ("1.20", "1.20.0", Equal),
            ("1.20rc1", "1.20", Less),
            ("1.21", "1.21.0", Less),
            ("1.21", "1.21rc1", Less),
            ("1.21rc1", "1.21.0", Less),
            ("1.6", "1.19", Less),
            ("1.19", "1.19.1", Less),
            ("1.19rc1", "1.19.1", Less),
            ("1.19rc1", "1.19rc2", Less),
            ("1.19.0", "1.19.1", Less),
            ("1.19rc1", "1.19.0", Less),
            ("1.19alpha3", "1.19beta2", Less),
            ("1.19beta2", "1.19rc1", Less),
            ("1.1", "1.99999999999999998", Less),
            ("1.99999999999999998", "1.99999999999999999", Less),
            // Ours: the fake toolchain release of Go's testdata.
            ("1.999testmod", "1.999.0", Less),
        ];
        for (x, y, want) in cases {
            let got = match (GoVersion::parse(x), GoVersion::parse(y)) {
                (Some(a), Some(b)) => a.cmp(&b),
                (None, None) => Equal,
                (None, Some(_)) => Less,
                (Some(_), None) => Greater,
            };
            assert_eq!(got, want, "compare({x:?}, {y:?})");
        }
    }

    #[test]
    fn parse_rejects() {
        for bad in [
            "", "v1.21", "1.021", "1.21.0.1", "1.21RC1", "1.21rc1x", "go1.21", "1.",
        ] {
            assert!(GoVersion::parse(bad).is_none(), "{bad:?} parsed");
        }
    }

    #[test]
    fn pruning_starts_at_1_17() {
        for (v, prunes) in [
            ("1.16", false),
            ("1.17", true),
            ("1.17rc1", false),
            ("1.21.0", true),
        ] {
            assert_eq!(GoVersion::parse(v).unwrap().prunes(), prunes, "{v}");
        }
    }
}
