//! Go toolchains as module versions: which `golang.org/toolchain` versions a run mirrors.
//!
//! Input: the releases projects switch to (`go1.22.3`, from
//! [`crate::project::closure::toolchain`]), the configured [`Platform`]s, and for
//! `[toolchain] versions = "latest N"` upstream's `golang.org/toolchain/@v/list`. Output:
//! [`ModVer`]s of `golang.org/toolchain`, one per release and platform. No I/O.
//!
//! Go: cmd/go/internal/toolchain/select.go `Exec`: a switch to `go1.22.3` on linux/amd64
//! downloads `golang.org/toolchain@v0.0.1-go1.22.3.linux-amd64` (the suffix is the running
//! go's `runtime.GOOS-runtime.GOARCH`), and refuses it unless the checksum database vouches
//! for it: GOSUMDB=off fails the download, GOPRIVATE/GONOSUMDB do not exempt it
//! (PROTOCOL.md "Toolchains"). go's `@v/list` reading keeps only the versions ending in its
//! own `.GOOS-GOARCH` (toolchain.go `modfetch.toolchainRepo.Versions`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::config::SumdbSettings;
use crate::module::{ModVer, ModVerError, ModulePath, Version};

/// The module every Go toolchain is published as.
pub const TOOLCHAIN_MODULE: &str = "golang.org/toolchain";

/// Go: select.go gotoolchainVersion: the version every toolchain module version starts with.
const VERSION_PREFIX: &str = "v0.0.1-";

/// `go tool dist list` of Go 1.27.3: the `GOOS/GOARCH` pairs a toolchain can be built for.
const KNOWN_PLATFORMS: &[&str] = &[
    "aix/ppc64",
    "android/386",
    "android/amd64",
    "android/arm",
    "android/arm64",
    "darwin/amd64",
    "darwin/arm64",
    "dragonfly/amd64",
    "freebsd/386",
    "freebsd/amd64",
    "freebsd/arm",
    "freebsd/arm64",
    "freebsd/riscv64",
    "illumos/amd64",
    "ios/amd64",
    "ios/arm64",
    "js/wasm",
    "linux/386",
    "linux/amd64",
    "linux/arm",
    "linux/arm64",
    "linux/loong64",
    "linux/mips",
    "linux/mips64",
    "linux/mips64le",
    "linux/mipsle",
    "linux/ppc64",
    "linux/ppc64le",
    "linux/riscv64",
    "linux/s390x",
    "netbsd/386",
    "netbsd/amd64",
    "netbsd/arm",
    "netbsd/arm64",
    "openbsd/386",
    "openbsd/amd64",
    "openbsd/arm",
    "openbsd/arm64",
    "openbsd/ppc64",
    "openbsd/riscv64",
    "plan9/386",
    "plan9/amd64",
    "plan9/arm",
    "solaris/amd64",
    "wasip1/wasm",
    "windows/386",
    "windows/amd64",
    "windows/arm64",
];

/// A `GOOS/GOARCH` pair from Go's list of ports.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Platform {
    os: String,
    arch: String,
}

impl Platform {
    /// Checks `linux/amd64` against [`KNOWN_PLATFORMS`].
    pub fn parse(s: &str) -> Result<Platform, String> {
        let Some((os, arch)) = s.split_once('/') else {
            return Err(format!("{s:?}: want GOOS/GOARCH, e.g. \"linux/amd64\""));
        };
        if !KNOWN_PLATFORMS.contains(&s) {
            return Err(format!(
                "{s:?}: unknown GOOS/GOARCH (`go tool dist list` names the known ones)"
            ));
        }
        Ok(Platform {
            os: os.to_owned(),
            arch: arch.to_owned(),
        })
    }

    /// `linux-amd64`: how a toolchain module version names the platform.
    pub fn suffix(&self) -> String {
        format!("{}-{}", self.os, self.arch)
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.arch)
    }
}

/// Why toolchains cannot be mirrored at all.
#[derive(Debug, thiserror::Error)]
pub enum ToolchainError {
    #[error(
        "{TOOLCHAIN_MODULE}: toolchains need the checksum database, but [sumdb] key is \"off\": \
         the go command refuses a toolchain it cannot verify (set [toolchain] platforms = [] \
         to mirror none)"
    )]
    VerificationOff,
    #[error(
        "{TOOLCHAIN_MODULE}: toolchains need the checksum database, but [sumdb] private \
         matches {TOOLCHAIN_MODULE}: the go command verifies toolchains even when GOPRIVATE \
         or GONOSUMDB match them"
    )]
    Private,
}

/// Toolchains are only mirrored verified: go refuses them otherwise (select.go: the download
/// is checked against the checksum database whatever GOSUMDB/GONOSUMDB say, and fails with
/// GOSUMDB=off).
pub fn check_verified(sumdb: Option<&SumdbSettings>) -> Result<(), ToolchainError> {
    match sumdb {
        None => Err(ToolchainError::VerificationOff),
        Some(s) if s.is_private(TOOLCHAIN_MODULE) => Err(ToolchainError::Private),
        Some(_) => Ok(()),
    }
}

pub fn module_path() -> ModulePath {
    ModulePath::new(TOOLCHAIN_MODULE).expect("golang.org/toolchain is a valid module path")
}

/// `go1.22.3` on linux/amd64 → `golang.org/toolchain@v0.0.1-go1.22.3.linux-amd64`.
/// Go: select.go Exec. An error for a release name no version can hold (a hostile
/// `toolchain` line).
pub fn toolchain_version(release: &str, platform: &Platform) -> Result<ModVer, ModVerError> {
    ModVer::parse(
        TOOLCHAIN_MODULE,
        &format!("{VERSION_PREFIX}{release}.{}", platform.suffix()),
    )
}

/// The release a listed version is for `platform`: `v0.0.1-go1.22.3.linux-amd64` →
/// `go1.22.3`; `None` for another platform's.
fn release_of<'v>(v: &'v Version, platform: &Platform) -> Option<&'v str> {
    let rest = v.as_str().strip_prefix(VERSION_PREFIX)?;
    let release = rest.strip_suffix(&platform.suffix())?.strip_suffix('.')?;
    release.starts_with("go").then_some(release)
}

/// `go1.22.3` → `(1, 22, 3)`; `go1.20` (a release before 1.21) → `(1, 20, 0)`. `None` for
/// pre-releases (`go1.22rc1`), language versions (`go1.22`) and anything else.
fn release_number(release: &str) -> Option<(u64, u64, u64)> {
    let nums: Vec<u64> = release
        .strip_prefix("go")?
        .split('.')
        .map(|n| {
            let ok = !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit());
            ok.then(|| n.parse().ok()).flatten()
        })
        .collect::<Option<_>>()?;
    match nums[..] {
        [1, minor, patch] => Some((1, minor, patch)),
        [1, minor] if minor < 21 => Some((1, minor, 0)),
        _ => None,
    }
}

/// What `versions = "latest N"` picks from upstream's `@v/list`.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Latest {
    /// One version per picked release and platform that upstream lists.
    pub versions: Vec<ModVer>,
    /// A picked release upstream does not list for a platform: skipped for that platform.
    pub missing: Vec<(String, Platform)>,
}

/// The newest patch release of each of the `n` newest Go minors any platform has (releases
/// only, no rc or beta), for every platform in `platforms`; a platform that lacks one of them
/// is skipped for that release and named in [`Latest::missing`].
pub fn latest(list: &[Version], platforms: &[Platform], n: usize) -> Latest {
    let mut have: BTreeMap<(u64, u64, u64), (String, BTreeSet<&Platform>)> = BTreeMap::new();
    for v in list {
        for p in platforms {
            let Some(release) = release_of(v, p) else {
                continue;
            };
            if let Some(num) = release_number(release) {
                let e = have
                    .entry(num)
                    .or_insert_with(|| (release.to_owned(), Default::default()));
                e.1.insert(p);
            }
        }
    }
    let mut newest_per_minor: BTreeMap<(u64, u64), (u64, u64, u64)> = BTreeMap::new();
    for &num in have.keys() {
        let slot = newest_per_minor.entry((num.0, num.1)).or_insert(num);
        *slot = (*slot).max(num);
    }
    let mut out = Latest::default();
    for num in newest_per_minor.values().rev().take(n) {
        let (release, on) = &have[num];
        for p in platforms {
            if !on.contains(p) {
                out.missing.push((release.clone(), p.clone()));
                continue;
            }
            if let Ok(mv) = toolchain_version(release, p) {
                out.versions.push(mv);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn platforms(list: &[&str]) -> Vec<Platform> {
        list.iter().map(|p| Platform::parse(p).unwrap()).collect()
    }

    #[test]
    fn platforms_are_go_ports() {
        for (text, want) in [
            ("linux/amd64", Ok("linux-amd64")),
            ("darwin/arm64", Ok("darwin-arm64")),
            ("wasip1/wasm", Ok("wasip1-wasm")),
            ("linux", Err("want GOOS/GOARCH")),
            ("linux/x86_64", Err("unknown GOOS/GOARCH")),
            ("Linux/amd64", Err("unknown GOOS/GOARCH")),
            ("linux/amd64/v3", Err("unknown GOOS/GOARCH")),
        ] {
            match (Platform::parse(text), want) {
                (Ok(p), Ok(suffix)) => assert_eq!(p.suffix(), suffix, "{text}"),
                (Err(e), Err(part)) => assert!(e.contains(part), "{text}: {e}"),
                (got, want) => panic!("{text}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn toolchain_versions_are_module_versions() {
        // Go: select.go Exec builds v0.0.1-<toolchain>.<GOOS>-<GOARCH>.
        let p = Platform::parse("linux/amd64").unwrap();
        for (release, want) in [
            (
                "go1.22.3",
                "golang.org/toolchain@v0.0.1-go1.22.3.linux-amd64",
            ),
            (
                "go1.21.0",
                "golang.org/toolchain@v0.0.1-go1.21.0.linux-amd64",
            ),
            (
                "go1.22rc1",
                "golang.org/toolchain@v0.0.1-go1.22rc1.linux-amd64",
            ),
            (
                "go1.999testmod",
                "golang.org/toolchain@v0.0.1-go1.999testmod.linux-amd64",
            ),
        ] {
            let mv = toolchain_version(release, &p).unwrap();
            assert_eq!(mv.to_string(), want);
            assert!(!mv.version.is_pseudo(), "{want} is listed in @v/list");
            assert_eq!(release_of(&mv.version, &p), Some(release));
        }
        assert!(toolchain_version("go1.22.03", &p).is_err());
        assert!(toolchain_version("go1.22/../x", &p).is_err());
    }

    #[test]
    fn releases_only() {
        for (release, want) in [
            ("go1.22.3", Some((1, 22, 3))),
            ("go1.20", Some((1, 20, 0))),
            ("go1.22", None),
            ("go1.22rc1", None),
            ("go1.21beta1", None),
            ("go1.999testmod", None),
            ("go2.0.0", None),
            ("go1.22.3.1", None),
        ] {
            assert_eq!(release_number(release), want, "{release}");
        }
    }

    #[test]
    fn latest_picks_newest_patch_of_newest_minors_per_platform() {
        let list: Vec<Version> = [
            "v0.0.1-go1.21.13.linux-amd64",
            "v0.0.1-go1.22.3.linux-amd64",
            "v0.0.1-go1.22.3.darwin-arm64",
            "v0.0.1-go1.22.5.linux-amd64",
            "v0.0.1-go1.22.5.darwin-arm64",
            "v0.0.1-go1.23.1.linux-amd64",
            "v0.0.1-go1.23.1.darwin-arm64",
            "v0.0.1-go1.24rc1.linux-amd64",
            "v0.0.1-go1.24rc1.darwin-arm64",
            "v0.0.1-go1.23.2.linux-amd64",
            "v0.0.1-go1.23.2.windows-amd64",
        ]
        .iter()
        .map(|v| Version::new(v).unwrap())
        .collect();
        let got = latest(&list, &platforms(&["linux/amd64", "darwin/arm64"]), 2);
        let names: Vec<String> = got
            .versions
            .iter()
            .map(|mv| mv.version.to_string())
            .collect();
        assert_eq!(
            names,
            [
                "v0.0.1-go1.23.2.linux-amd64",
                "v0.0.1-go1.22.5.linux-amd64",
                "v0.0.1-go1.22.5.darwin-arm64",
            ]
        );
        assert_eq!(
            got.missing,
            [(
                "go1.23.2".to_owned(),
                Platform::parse("darwin/arm64").unwrap()
            )]
        );
        assert_eq!(
            latest(&list, &platforms(&["linux/amd64"]), 0),
            Latest::default()
        );
    }
}
