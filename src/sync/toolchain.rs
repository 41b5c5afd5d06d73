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
    // Each error is logged once, where the run records it (`PlanError`).
    if let Err(e) = check_verified(config.sumdb.as_ref()) {
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
            Err(e) => out.errors.push(e),
        }
    }
    out
}

/// `versions = "latest N"` resolved against upstream's `golang.org/toolchain/@v/list`; a
/// platform upstream lacks a picked release for is skipped for it, with a warning.
async fn latest(ctx: &Ctx, config: &Config, n: usize) -> Result<Vec<Job>, String> {
    let module = toolchain::module_path();
    let body = ctx
        .get_optional(
            &module,
            &crate::publish::layout::list_rel(&module),
            MAX_LIST,
        )
        .await?
        .ok_or_else(|| format!("{module}: not found upstream (no @v/list)"))?;
    let (listed, _) = plan::parse_list(&module, &body);
    let picked = toolchain::latest(&listed, &config.toolchain.platforms, n);
    for (release, platform) in &picked.missing {
        warn!(%release, %platform, "[toolchain] versions: upstream lists no {release} for {platform}; skipped for that platform");
    }
    Ok(picked.versions.into_iter().map(Job::files).collect())
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use crate::module::ModVer;
    use crate::verify::zip::check_zip;

    /// A real toolchain zip holds a whole Go install: tens of thousands of files, more than a
    /// zip's 16-bit entry count (zip64), with nested go.mod files stored as `_go.mod` (Go:
    /// select.go Exec renames them back after unzipping). Go's zip rules allow all of it, and
    /// so must ours.
    // See: #12
    #[test]
    fn issue_12_toolchain_zips_pass_the_zip_rules() {
        let mv = ModVer::parse("golang.org/toolchain", "v0.0.1-go1.22.3.linux-amd64").unwrap();
        let prefix = format!("{mv}/");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("toolchain.zip");
        let mut w = ::zip::ZipWriter::new(std::fs::File::create(&path).unwrap());
        let opts = ::zip::write::SimpleFileOptions::default()
            .compression_method(::zip::CompressionMethod::Stored);
        let mut names = vec![
            "bin/go".to_owned(),
            "src/_go.mod".to_owned(),
            "src/cmd/_go.mod".to_owned(),
            "src/cmd/vendor/golang.org/x/mod/_go.mod".to_owned(),
        ];
        names.extend((0..70_000).map(|i| format!("src/pkg{}/f{i}.go", i / 100)));
        for name in &names {
            w.start_file(format!("{prefix}{name}"), opts).unwrap();
            w.write_all(name.as_bytes()).unwrap();
        }
        w.finish().unwrap();
        let checked = check_zip(&mv, &path).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(checked.files, names.len());
        assert_eq!(checked.go_mod, None, "no go.mod at the root");
    }
}
