//! Go's semantic versions, exactly as golang.org/x/mod/semver parses and
//! orders them. Go semver is not Cargo semver: the `v` prefix is required,
//! `v1` and `v1.2` are valid shorthands, and build metadata is ignored when
//! comparing.

use std::cmp::Ordering;

/// The parts of a version, borrowed from the input.
#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed<'a> {
    major: &'a str,
    minor: &'a str,
    patch: &'a str,
    /// `.0.0` or `.0` when the input was a shorthand.
    short: &'static str,
    prerelease: &'a str,
    build: &'a str,
}

/// Go: x/mod/semver/semver.go IsValid.
pub fn is_valid(v: &str) -> bool {
    parse(v).is_some()
}

/// Go: x/mod/semver/semver.go Canonical: shorthands completed, build dropped;
/// `None` for an invalid version.
pub fn canonical(v: &str) -> Option<String> {
    let p = parse(v)?;
    let without_build = &v[..v.len() - p.build.len()];
    Some(format!("{without_build}{}", p.short))
}

/// Go: x/mod/semver/semver.go Major, e.g. `v2`.
pub fn major(v: &str) -> Option<&str> {
    let p = parse(v)?;
    Some(&v[..1 + p.major.len()])
}

/// Go: x/mod/semver/semver.go Prerelease, e.g. `-rc.1`, or empty.
pub fn prerelease(v: &str) -> &str {
    parse(v).map_or("", |p| p.prerelease)
}

/// Go: x/mod/semver/semver.go Build, e.g. `+incompatible`, or empty.
pub fn build(v: &str) -> &str {
    parse(v).map_or("", |p| p.build)
}

/// Go: x/mod/semver/semver.go Compare. An invalid version is lower than
/// every valid one, and equal to any other invalid one.
pub fn compare(v: &str, w: &str) -> Ordering {
    match (parse(v), parse(w)) {
        (None, None) => Ordering::Equal,
        (None, Some(_)) => Ordering::Less,
        (Some(_), None) => Ordering::Greater,
        (Some(pv), Some(pw)) => compare_int(pv.major, pw.major)
            .then_with(|| compare_int(pv.minor, pw.minor))
            .then_with(|| compare_int(pv.patch, pw.patch))
            .then_with(|| compare_prerelease(pv.prerelease, pw.prerelease)),
    }
}

/// Go: x/mod/semver/semver.go Sort: by Compare, ties broken bytewise.
pub fn sort(list: &mut [String]) {
    list.sort_by(|a, b| compare(a, b).then_with(|| a.cmp(b)));
}

fn parse(v: &str) -> Option<Parsed<'_>> {
    let rest = v.strip_prefix('v')?;
    let mut p = Parsed::default();
    let (major, rest) = parse_int(rest)?;
    p.major = major;
    if rest.is_empty() {
        (p.minor, p.patch, p.short) = ("0", "0", ".0.0");
        return Some(p);
    }
    let (minor, rest) = parse_int(rest.strip_prefix('.')?)?;
    p.minor = minor;
    if rest.is_empty() {
        (p.patch, p.short) = ("0", ".0");
        return Some(p);
    }
    let (patch, mut rest) = parse_int(rest.strip_prefix('.')?)?;
    p.patch = patch;
    if rest.starts_with('-') {
        let end = rest.find('+').unwrap_or(rest.len());
        p.prerelease = check_idents(&rest[..end], true)?;
        rest = &rest[end..];
    }
    if rest.starts_with('+') {
        p.build = check_idents(rest, false)?;
        rest = "";
    }
    rest.is_empty().then_some(p)
}

/// A decimal number with no leading zero (but `0` itself).
fn parse_int(v: &str) -> Option<(&str, &str)> {
    let end = v
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(v.len());
    if end == 0 || (v.as_bytes()[0] == b'0' && end != 1) {
        return None;
    }
    Some((&v[..end], &v[end..]))
}

/// `-a.b.c` (pre-release) or `+a.b.c` (build): non-empty dot-separated
/// identifiers of `[0-9A-Za-z-]`; pre-release numbers have no leading zero.
fn check_idents(s: &str, numeric_rule: bool) -> Option<&str> {
    for ident in s[1..].split('.') {
        let ident_ok = !ident.is_empty()
            && ident
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-');
        if !ident_ok || (numeric_rule && is_bad_num(ident)) {
            return None;
        }
    }
    Some(s)
}

fn is_bad_num(v: &str) -> bool {
    v.len() > 1 && v.starts_with('0') && is_num(v)
}

fn is_num(v: &str) -> bool {
    v.bytes().all(|c| c.is_ascii_digit())
}

fn compare_int(x: &str, y: &str) -> Ordering {
    x.len().cmp(&y.len()).then_with(|| x.cmp(y))
}

/// Go: x/mod/semver/semver.go comparePrerelease: a release sorts after its
/// pre-releases; numeric identifiers sort before alphanumeric ones.
fn compare_prerelease(x: &str, y: &str) -> Ordering {
    if x == y {
        return Ordering::Equal;
    }
    if x.is_empty() {
        return Ordering::Greater;
    }
    if y.is_empty() {
        return Ordering::Less;
    }
    let mut xs = x[1..].split('.');
    let mut ys = y[1..].split('.');
    loop {
        match (xs.next(), ys.next()) {
            (Some(dx), Some(dy)) if dx == dy => continue,
            (Some(dx), Some(dy)) => return compare_ident(dx, dy),
            (None, Some(_)) => return Ordering::Less,
            (Some(_), None) => return Ordering::Greater,
            (None, None) => return Ordering::Equal,
        }
    }
}

fn compare_ident(dx: &str, dy: &str) -> Ordering {
    match (is_num(dx), is_num(dy)) {
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (true, true) => compare_int(dx, dy),
        (false, false) => dx.cmp(dy),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Go: x/mod/semver/semver_test.go tests (input, canonical or "" if invalid).
    const TESTS: &[(&str, &str)] = &[
        ("bad", ""),
        ("v1-alpha.beta.gamma", ""),
        ("v1-pre", ""),
        ("v1+meta", ""),
        ("v1-pre+meta", ""),
        ("v1.2-pre", ""),
        ("v1.2+meta", ""),
        ("v1.2-pre+meta", ""),
        ("v1.0.0-alpha", "v1.0.0-alpha"),
        ("v1.0.0-alpha.1", "v1.0.0-alpha.1"),
        ("v1.0.0-alpha.beta", "v1.0.0-alpha.beta"),
        ("v1.0.0-beta", "v1.0.0-beta"),
        ("v1.0.0-beta.2", "v1.0.0-beta.2"),
        ("v1.0.0-beta.11", "v1.0.0-beta.11"),
        ("v1.0.0-rc.1", "v1.0.0-rc.1"),
        ("v1", "v1.0.0"),
        ("v1.0", "v1.0.0"),
        ("v1.0.0", "v1.0.0"),
        ("v1.2", "v1.2.0"),
        ("v1.2.0", "v1.2.0"),
        ("v1.2.3-456", "v1.2.3-456"),
        ("v1.2.3-456.789", "v1.2.3-456.789"),
        ("v1.2.3-456-789", "v1.2.3-456-789"),
        ("v1.2.3-456a", "v1.2.3-456a"),
        ("v1.2.3-pre", "v1.2.3-pre"),
        ("v1.2.3-pre+meta", "v1.2.3-pre"),
        ("v1.2.3-pre.1", "v1.2.3-pre.1"),
        ("v1.2.3-zzz", "v1.2.3-zzz"),
        ("v1.2.3", "v1.2.3"),
        ("v1.2.3+meta", "v1.2.3"),
        ("v1.2.3+meta-pre", "v1.2.3"),
        ("v1.2.3+meta-pre.sha.256a", "v1.2.3"),
        ("v1.2.3-01", ""),
        ("v1.2.3-pre..1", ""),
        ("v1.2.3+", ""),
        ("v01.2.3", ""),
        ("v1.02.3", ""),
        ("1.2.3", ""),
        ("v1.2.3.4", ""),
        ("", ""),
    ];

    #[test]
    fn canonical_and_valid() {
        for &(input, want) in TESTS {
            let got = canonical(input).unwrap_or_default();
            assert_eq!(got, want, "canonical({input:?})");
            assert_eq!(is_valid(input), !want.is_empty(), "is_valid({input:?})");
        }
    }

    #[test]
    fn compare_orders_like_go() {
        // Go: semver_test.go TestCompare: the table is in increasing order,
        // with equal canonical forms comparing equal.
        for (i, &(vi, ci)) in TESTS.iter().enumerate() {
            for (j, &(vj, cj)) in TESTS.iter().enumerate() {
                let want = if ci == cj {
                    Ordering::Equal
                } else if ci.is_empty() {
                    Ordering::Less
                } else if cj.is_empty() {
                    Ordering::Greater
                } else {
                    i.cmp(&j)
                };
                assert_eq!(compare(vi, vj), want, "compare({vi:?}, {vj:?})");
            }
        }
    }

    #[test]
    fn parts() {
        assert_eq!(major("v2.3.4-pre+meta"), Some("v2"));
        assert_eq!(prerelease("v2.3.4-pre+meta"), "-pre");
        assert_eq!(build("v2.0.0+incompatible"), "+incompatible");
        assert_eq!(major("2.0"), None);
        let mut list = vec!["v1.10.0".into(), "v1.2.0".into(), "v1.2.0-rc.1".into()];
        sort(&mut list);
        assert_eq!(list, ["v1.2.0-rc.1", "v1.2.0", "v1.10.0"]);
    }
}
