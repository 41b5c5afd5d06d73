//! The toolchains a run mirrors: each configured project's toolchain and, with
//! `[toolchain] versions = "latest N"`, the newest releases upstream lists, each for every
//! `[toolchain] platforms` entry, as jobs for the same fetch → verify → commit path as any
//! version (a toolchain zip, 70–80 MB, streams to disk like every zip).
//!
//! Toolchains are refused as a whole, with a plan error, when verification is off or
//! `[sumdb] private` matches `golang.org/toolchain`: the go command would refuse them
//! (PROTOCOL.md "Toolchains"). `@v/list` of `golang.org/toolchain` is written by the commit
//! step like any list, so a platform's version is named only once its files are in place;
//! go keeps only the lines ending in its own `.GOOS-GOARCH`.

use std::collections::BTreeSet;

use tracing::warn;

use super::project::ProjectRun;
use super::{Ctx, MAX_LIST};
use crate::config::Config;
use crate::plan::toolchain::{self, check_verified};
use crate::plan::{self, Job};

/// What the toolchain part of a plan asks for.
#[derive(Debug, Default)]
pub(super) struct Toolchains {
    pub jobs: Vec<Job>,
    /// Why toolchains a project or the config asks for cannot be mirrored (exit 1).
    pub errors: Vec<String>,
}

/// Jobs for the toolchains of `projects` and of `[toolchain] versions`.
pub(super) async fn plan(ctx: &Ctx, config: &Config, projects: &[ProjectRun]) -> Toolchains {
    let settings = &config.toolchain;
    let releases: BTreeSet<&str> = projects
        .iter()
        .filter_map(|p| p.closure.as_ref().ok()?.toolchain.as_deref())
        .collect();
    let mut out = Toolchains::default();
    if settings.platforms.is_empty() || (releases.is_empty() && settings.latest.is_none()) {
        return out;
    }
    if let Err(e) = check_verified(config.sumdb.as_ref()) {
        warn!("{e}");
        out.errors.push(e.to_string());
        return out;
    }
    for release in releases {
        for p in &settings.platforms {
            match toolchain::toolchain_version(release, p) {
                Ok(mv) => out.jobs.push(Job::files(mv)),
                Err(e) => out.errors.push(format!("toolchain {release} for {p}: {e}")),
            }
        }
    }
    if let Some(n) = settings.latest {
        match latest(ctx, config, n).await {
            Ok(jobs) => out.jobs.extend(jobs),
            Err(e) => {
                warn!("{e}");
                out.errors.push(e);
            }
        }
    }
    out
}

/// `versions = "latest N"` resolved against upstream's `golang.org/toolchain/@v/list`; a
/// platform upstream lacks a picked release for is skipped for it, with a warning.
async fn latest(ctx: &Ctx, config: &Config, n: usize) -> Result<Vec<Job>, String> {
    let module = toolchain::module_path();
    let body = ctx
        .get_optional(&crate::publish::layout::list_rel(&module), MAX_LIST)
        .await?
        .ok_or_else(|| format!("{module}: not found upstream (no @v/list)"))?;
    let (listed, _) = plan::parse_list(&module, &body);
    let picked = toolchain::latest(&listed, &config.toolchain.platforms, n);
    for (release, platform) in &picked.missing {
        warn!(%release, %platform, "[toolchain] versions: upstream lists no {release} for {platform}; skipped for that platform");
    }
    Ok(picked.versions.into_iter().map(Job::files).collect())
}
