//! A module's metadata files: `@v/list` and `@latest`.
//!
//! PROTOCOL.md "GOPROXY": `@v/list` holds tagged versions only, one per
//! line (Go: cmd/go/internal/modfetch/proxy.go Versions drops
//! pseudo-versions); `@latest` is the `.info` of the version `go` should
//! take when the list is empty, so it matters most for modules mirrored
//! only at pseudo-versions.

use crate::module::Version;

/// `@v/list`: tagged versions sorted by semver, one per line.
pub fn list_body(versions: &[Version]) -> Vec<u8> {
    let mut tagged: Vec<&Version> = versions.iter().filter(|v| !v.is_pseudo()).collect();
    tagged.sort();
    tagged.dedup();
    tagged
        .iter()
        .flat_map(|v| [v.as_str().as_bytes(), b"\n"])
        .flatten()
        .copied()
        .collect()
}

/// The version `@latest` names: the highest release, else the highest
/// pre-release, else the highest pseudo-version (Go: modload/query.go
/// prefers releases, then pre-releases; pseudo-versions only when nothing
/// is tagged).
pub fn latest_version(versions: &[Version]) -> Option<&Version> {
    let highest = |keep: fn(&Version) -> bool| versions.iter().filter(|v| keep(v)).max();
    highest(|v| !v.is_pseudo() && !v.is_prerelease())
        .or_else(|| highest(|v| !v.is_pseudo()))
        .or_else(|| highest(|_| true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vs(list: &[&str]) -> Vec<Version> {
        list.iter().map(|v| Version::new(v).unwrap()).collect()
    }

    #[test]
    fn list_is_tagged_and_sorted() {
        let versions = vs(&[
            "v1.10.0",
            "v1.2.0",
            "v0.0.0-20200101000000-abcdefabcdef",
            "v1.2.0-rc.1",
        ]);
        assert_eq!(list_body(&versions), b"v1.2.0-rc.1\nv1.2.0\nv1.10.0\n");
        assert_eq!(list_body(&[]), b"");
    }

    #[test]
    fn latest_prefers_release_then_prerelease_then_pseudo() {
        let cases: &[(&[&str], Option<&str>)] = &[
            (&["v1.0.0", "v1.1.0-rc.1"], Some("v1.0.0")),
            (&["v1.1.0-rc.1", "v1.0.0-rc.1"], Some("v1.1.0-rc.1")),
            (
                &["v0.0.0-20200101000000-abcdefabcdef", "v0.1.0-pre"],
                Some("v0.1.0-pre"),
            ),
            (
                &["v0.0.0-20200101000000-abcdefabcdef"],
                Some("v0.0.0-20200101000000-abcdefabcdef"),
            ),
            (&[], None),
        ];
        for (list, want) in cases {
            let versions = vs(list);
            assert_eq!(
                latest_version(&versions).map(Version::as_str),
                *want,
                "{list:?}"
            );
        }
    }
}
