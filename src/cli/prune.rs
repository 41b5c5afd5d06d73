//! `gomirror prune [--dry-run] [--json]`: what the retention policy keeps
//! and removes, each version with its reason, and the totals (see: #15).
//! Exit 0 when the prune (or the dry run) completed; 1 when a signal
//! stopped it during its wait (the next prune completes it); 2 when it
//! could not proceed (a lock, the database, a project it cannot read).

use std::io::{self, Write};
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use anyhow::Context;
use gomirror::config::Config;
use gomirror::sync::prune::{self, PruneOptions, PruneReport};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::output::{note, Stdout};
use super::signals;

/// `gomirror prune`.
pub async fn prune(config: Config, dry_run: bool, json: bool) -> anyhow::Result<ExitCode> {
    drop(super::state::existing_store(&config).await?);
    let token = CancellationToken::new();
    let stopped_by = signals::spawn_signal_handler(token.clone(), None);
    let options = PruneOptions {
        dry_run,
        wait: None,
    };
    let report = prune::prune(&config, options, &token).await?;
    match json {
        true => write_json(&report),
        false => write_text(&report),
    }
    .context("writing to stdout")?;
    say(&report);
    if report.interrupted {
        let by = stopped_by.load(Ordering::Relaxed);
        note!("prune interrupted (signal {by}) while waiting for cached lists to expire; the next prune completes it");
        return Ok(ExitCode::from(1));
    }
    Ok(ExitCode::SUCCESS)
}

/// One line per version (`go` or `keep`, the version, bytes, why), then the totals.
fn write_text(r: &PruneReport) -> io::Result<()> {
    let mut out = Stdout::lock();
    // A real prune lists only what went: the kept are the dry run's business.
    for v in r
        .decision
        .verdicts
        .iter()
        .filter(|v| r.dry_run || v.reason.goes())
    {
        let action = if v.reason.goes() { "go" } else { "keep" };
        writeln!(out, "{action:<4} {} {} bytes: {}", v.mv, v.bytes, v.reason)?;
    }
    let (going, kept) = counts(r);
    let verb = if r.dry_run || !r.policy_set {
        "would prune"
    } else {
        "pruned"
    };
    writeln!(
        out,
        "{verb} {going} versions, {} bytes; {kept} versions, {} bytes stay",
        r.decision.going_bytes, r.decision.kept_bytes
    )?;
    out.flush()
}

fn write_json(r: &PruneReport) -> io::Result<()> {
    let versions: Vec<_> = r
        .decision
        .verdicts
        .iter()
        .map(|v| {
            json!({
                "path": v.mv.path.as_str(),
                "version": v.mv.version.as_str(),
                "bytes": v.bytes,
                "action": if v.reason.goes() { "go" } else { "keep" },
                "rule": v.reason.rule(),
                "reason": v.reason.to_string(),
            })
        })
        .collect();
    let (going, kept) = counts(r);
    let doc = json!({
        "dry_run": r.dry_run,
        "policy_set": r.policy_set,
        "use_recorded": r.use_recorded,
        "resumed": r.resumed,
        "interrupted": r.interrupted,
        "over_size": r.decision.over_size,
        "going": { "versions": going, "bytes": r.decision.going_bytes },
        "kept": { "versions": kept, "bytes": r.decision.kept_bytes },
        "pruned": r.pruned.map(|(n, b)| json!({ "versions": n, "bytes": b })),
        "versions": versions,
    });
    let mut out = Stdout::lock();
    serde_json::to_writer_pretty(&mut out, &doc)?;
    writeln!(out)?;
    out.flush()
}

fn counts(r: &PruneReport) -> (usize, usize) {
    (r.decision.going_versions, r.decision.kept_versions)
}

/// What the numbers cannot say, on stderr.
fn say(r: &PruneReport) {
    if !r.policy_set {
        note!("[retention] sets neither keep_unused_for nor max_tree_size: nothing is pruned");
    }
    if !r.use_recorded {
        note!("clients' use is not recorded ([clients] access_log is not set): keep_unused_for removes nothing");
    }
    if r.decision.over_size {
        note!("max_tree_size cannot be reached: what projects, watch entries, keep_latest and recent use keep is larger");
    }
    if r.resumed > 0 {
        note!("completed an interrupted prune of {} versions", r.resumed);
    }
}
