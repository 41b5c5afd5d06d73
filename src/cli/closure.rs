//! `gomirror closure DIR [--json]`: what a project needs from the mirror and what the tree
//! lacks of it. Reads only: publishes nothing, takes no lock, needs no state database.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context;
use gomirror::config::Config;
use gomirror::project::graph::Pruning;
use gomirror::sync::project::{closure_report, ClosureReport};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::output::Stdout;

/// Exit 0 when the tree has everything, 1 when it lacks a file (the project's toolchain for a
/// configured platform included) or a go.mod could not be had.
pub async fn closure(config: Config, dir: &Path, json: bool) -> anyhow::Result<ExitCode> {
    let report = closure_report(&config, dir, CancellationToken::new()).await?;
    let mut out = Stdout::lock();
    if json {
        serde_json::to_writer_pretty(&mut out, &as_json(&report))?;
        writeln!(out)?;
    } else {
        write_text(&mut out, &report)?;
    }
    out.flush().context("writing to stdout")?;
    let complete = report.lacking.is_empty()
        && report.closure.errors.is_empty()
        && report.toolchains.iter().all(|t| t.mv.is_ok());
    Ok(if complete {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn pruning(p: Pruning) -> &'static str {
    match p {
        Pruning::Pruned => "pruned",
        Pruning::Unpruned => "unpruned",
        Pruning::Workspace => "workspace",
    }
}

fn write_text(out: &mut impl Write, r: &ClosureReport) -> std::io::Result<()> {
    let c = &r.closure;
    writeln!(
        out,
        "{}: go {}, {} module graph",
        r.dir.display(),
        c.go,
        pruning(c.pruning)
    )?;
    writeln!(
        out,
        "  build list: {} modules; needs {} .info/.mod and {} .zip",
        c.graph.build_list.len(),
        c.mods.len(),
        c.zips.len()
    )?;
    if let Some(t) = &c.toolchain {
        writeln!(out, "  toolchain: {t}")?;
        for need in &r.toolchains {
            let state = match &need.mv {
                Ok(mv) if need.present => format!("{mv}: in the tree"),
                Ok(mv) => format!("{mv}: lacking"),
                Err(e) => format!("cannot be mirrored: {e}"),
            };
            writeln!(out, "    {}: {state}", need.platform)?;
        }
        if let Some(why) = &r.toolchain_refused {
            writeln!(out, "    a sync mirrors none of them: {why}")?;
        }
    }
    if !c.private.is_empty() {
        writeln!(
            out,
            "  {} private modules, asked of no upstream:",
            c.private.len()
        )?;
        for mv in &c.private {
            writeln!(out, "    {mv} (private)")?;
        }
    }
    if c.approximate {
        writeln!(
            out,
            "  approximate: what private modules require was taken from go.sum"
        )?;
    }
    if r.lacking.is_empty() {
        writeln!(out, "  the tree has every file")?;
    } else {
        writeln!(out, "  the tree lacks {} files:", r.lacking.len())?;
        for l in &r.lacking {
            writeln!(out, "    {} .{}", l.mv, l.kind.ext())?;
        }
    }
    if !c.errors.is_empty() {
        writeln!(
            out,
            "  {} go.mod files could not be read (the closure below them is unknown):",
            c.errors.len()
        )?;
        for e in &c.errors {
            writeln!(out, "    {}: {}", e.mv, e.error)?;
        }
    }
    Ok(())
}

fn as_json(r: &ClosureReport) -> serde_json::Value {
    let c = &r.closure;
    let mv = |m: &gomirror::module::ModVer| json!({"path": m.path.as_str(), "version": m.version.as_str()});
    json!({
        "dir": r.dir,
        "go": c.go.as_str(),
        "pruning": pruning(c.pruning),
        "toolchain": c.toolchain,
        "toolchains": r.toolchains.iter().map(|t| json!({
            "platform": t.platform.to_string(),
            "path": t.mv.as_ref().ok().map(|m| m.path.as_str()),
            "version": t.mv.as_ref().ok().map(|m| m.version.as_str()),
            "error": t.mv.as_ref().err(),
            "present": t.present,
        })).collect::<Vec<_>>(),
        "toolchain_refused": r.toolchain_refused,
        "build_list": c.graph.selected().map(|m| mv(&m)).collect::<Vec<_>>(),
        "mods": c.mods.iter().map(mv).collect::<Vec<_>>(),
        "zips": c.zips.iter().map(mv).collect::<Vec<_>>(),
        "private": c.private.iter().map(mv).collect::<Vec<_>>(),
        "approximate": c.approximate,
        "lacking": r.lacking.iter().map(|l| json!({
            "path": l.mv.path.as_str(),
            "version": l.mv.version.as_str(),
            "file": l.kind.ext(),
        })).collect::<Vec<_>>(),
        "errors": c.errors.iter().map(|e| json!({
            "path": e.mv.path.as_str(),
            "version": e.mv.version.as_str(),
            "error": e.error,
        })).collect::<Vec<_>>(),
        "upstream_requests": r.upstream_requests,
    })
}
