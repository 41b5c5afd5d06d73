//! Plan stage: what this run must fetch, as de-duplicated [`ModVer`]s.
//!
//! Sources: the watchlist (`watchlist`), and the index feed (`feed` reads
//! its pages and moves its cursor; `rules` decides which entries to take).
//!
//! Input: the watchlist and upstream's answers for each watched module
//! (`@v/list`, `@latest`), as raw bytes; output: a [`Plan`]. Every version
//! string from upstream is hostile until [`Version::for_path`] accepts it;
//! entries it refuses are kept as [`Rejected`] with the reason. The plan
//! does no I/O: `sync` fetches the listings and subtracts what state says
//! is already done.

pub mod feed;
pub mod learned;
pub mod retention;
pub mod rules;
pub mod toolchain;
pub mod watchlist;

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};

use crate::module::{ModVer, ModulePath, Version};

/// An entry from upstream that can never be mirrored, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejected {
    pub module: String,
    pub version: String,
    pub reason: String,
}

/// What upstream says one module has.
#[derive(Debug, Default)]
pub struct Listing {
    /// Tagged versions from `@v/list` that passed Go's rules.
    pub tagged: Vec<Version>,
    /// `@latest`, fetched only when it can matter (no tagged versions).
    pub latest: Option<Version>,
}

/// Parses an `@v/list` body. Go: cmd/go/internal/modfetch/proxy.go
/// Versions takes the first field of each line and silently drops
/// pseudo-versions; we also refuse what Go would later fail on
/// (non-canonical, wrong major version, unsafe strings) and say why.
pub fn parse_list(path: &ModulePath, body: &[u8]) -> (Vec<Version>, Vec<Rejected>) {
    let mut tagged = BTreeSet::new();
    let mut rejected = Vec::new();
    for line in String::from_utf8_lossy(body).lines() {
        let Some(field) = line.split_whitespace().next() else {
            continue;
        };
        match Version::for_path(path, field) {
            Ok(v) if v.is_pseudo() => {}
            Ok(v) => {
                tagged.insert(v);
            }
            Err(e) => rejected.push(Rejected {
                module: path.to_string(),
                version: e.version.clone(),
                reason: e.to_string(),
            }),
        }
    }
    (tagged.into_iter().collect(), rejected)
}

/// Parses an `@latest` body (a `.info` JSON object).
pub fn parse_latest(path: &ModulePath, body: &[u8]) -> Result<Version, Rejected> {
    #[derive(Deserialize)]
    struct Info {
        #[serde(rename = "Version")]
        version: String,
    }
    let reject = |version: &str, reason: String| Rejected {
        module: path.to_string(),
        version: version.to_owned(),
        reason,
    };
    let info: Info = serde_json::from_slice(body)
        .map_err(|e| reject("@latest", format!("invalid @latest: {e}")))?;
    Version::for_path(path, &info.version).map_err(|e| reject(&info.version, e.to_string()))
}

/// Which files of a version a job fetches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Want {
    /// `.info` and `.mod` only: a project's module graph reads the version,
    /// no build needs its zip (the version becomes `mod_only`).
    GoMod,
    /// `.info`, `.mod` and `.zip`.
    Files,
}

/// One version to fetch.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Job {
    pub mv: ModVer,
    pub want: Want,
}

impl Job {
    pub fn files(mv: ModVer) -> Job {
        Job {
            mv,
            want: Want::Files,
        }
    }
}

/// The work of one run.
#[derive(Debug, Default)]
pub struct Plan {
    /// Versions to fetch, sorted, one job per version.
    pub jobs: Vec<Job>,
    /// Versions that were wanted but are already published.
    pub skipped: usize,
}

/// What the tree already has, by state.
#[derive(Debug, Default)]
pub struct Done {
    /// Published with every file.
    pub published: HashSet<ModVer>,
    /// Published for their go.mod only.
    pub go_mod_only: HashSet<ModVer>,
}

/// One job per version, wanting the most any source wants of it, without
/// those `done` already covers.
pub fn subtract(selected: impl IntoIterator<Item = Job>, done: &Done) -> Plan {
    let mut unique: std::collections::BTreeMap<ModVer, Want> = Default::default();
    for job in selected {
        let want = unique.entry(job.mv).or_insert(job.want);
        *want = (*want).max(job.want);
    }
    let mut plan = Plan::default();
    for (mv, want) in unique {
        let covered =
            done.published.contains(&mv) || (want == Want::GoMod && done.go_mod_only.contains(&mv));
        if covered {
            plan.skipped += 1;
        } else {
            plan.jobs.push(Job { mv, want });
        }
    }
    plan
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_parsing_refuses_hostile_lines() {
        let path = ModulePath::new("example.com/m").unwrap();
        let body = b"v1.0.0\nv1.1.0 2019-01-01T00:00:00Z\n\n../../etc/passwd\nv1.2\nv2.0.0\n\
            v0.0.0-20200101000000-abcdefabcdef\nv1.0.0\nv1.3.0\x00\n";
        let (tagged, rejected) = parse_list(&path, body);
        let tagged: Vec<&str> = tagged.iter().map(Version::as_str).collect();
        assert_eq!(tagged, ["v1.0.0", "v1.1.0"]);
        let reasons: Vec<&str> = rejected.iter().map(|r| r.reason.as_str()).collect();
        assert_eq!(rejected.len(), 4, "{reasons:#?}");
        assert!(
            reasons[0].contains("not a semantic version"),
            "{}",
            reasons[0]
        );
        assert!(
            reasons[1].contains("not canonical (want v1.2.0)"),
            "{}",
            reasons[1]
        );
        assert!(
            reasons[2].contains("should be v0 or v1, not v2"),
            "{}",
            reasons[2]
        );
        assert!(
            reasons[3].contains("not a semantic version"),
            "{}",
            reasons[3]
        );
    }

    #[test]
    fn latest_parsing() {
        let path = ModulePath::new("example.com/m").unwrap();
        let v = parse_latest(
            &path,
            br#"{"Version":"v0.0.0-20200101000000-abcdefabcdef"}"#,
        )
        .unwrap();
        assert!(v.is_pseudo());
        assert!(parse_latest(&path, br#"{"Version":"v1.0"}"#).is_err());
        assert!(parse_latest(&path, b"<html>").is_err());
    }

    #[test]
    fn subtract_dedups_and_skips_done() {
        let mv = |p: &str| ModVer::parse(p, "v1.0.0").unwrap();
        let job = |p: &str, want| Job { mv: mv(p), want };
        let done = Done {
            published: HashSet::from([mv("example.com/a")]),
            go_mod_only: HashSet::from([mv("example.com/c"), mv("example.com/d")]),
        };
        let plan = subtract(
            [
                job("example.com/b", Want::Files),
                job("example.com/a", Want::GoMod),
                job("example.com/b", Want::GoMod),
                // Published for its go.mod: enough for a graph, not for a build.
                job("example.com/c", Want::GoMod),
                job("example.com/d", Want::Files),
                job("example.com/e", Want::GoMod),
            ],
            &done,
        );
        assert_eq!(
            plan.jobs,
            [
                job("example.com/b", Want::Files),
                job("example.com/d", Want::Files),
                job("example.com/e", Want::GoMod)
            ]
        );
        assert_eq!(plan.skipped, 2);
    }
}
