//! `gomirror clients [--json] [--since 24h]`: reads the access log from
//! where the last read stopped, then shows what clients did. Also the
//! short clients section of `status`. See: #14
//!
//! It takes no run lock: a sync may read the log at the same time, and the
//! cursor's compare-and-swap keeps every line counted once. A log that
//! cannot be read still shows the figures recorded so far, and exits 1.

use std::io::{self, Write};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use gomirror::clients::request::{ResultClass, Skip};
use gomirror::clients::ReadReport;
use gomirror::config::Config;
use gomirror::error::chain;
use gomirror::state::{ClientFigures, LearnedCounts, Store};
use indicatif::HumanBytes;

use super::output::{note, Stdout};

/// `gomirror clients`.
pub async fn clients(
    config: Config,
    json: bool,
    since: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let store = Store::open(&config.database).await?;
    let read = gomirror::clients::read_configured(&store, &config.clients).await;
    let since_hour = since.map(|d| (chrono::Utc::now().timestamp() - d.as_secs() as i64) / 3600);
    let figures = store.client_figures(since_hour).await?;
    let (report, error) = match &read {
        None => (None, None),
        Some(Ok(r)) => (Some(r), None),
        Some(Err(e)) => (None, Some(chain(e))),
    };
    let mut out = Stdout::lock();
    if json {
        let j = ClientsJson {
            figures: &figures,
            hit_ratio: figures.hit_ratio(),
            access_log: config.clients.access_log.as_deref(),
            read: report,
            read_error: error.clone(),
        };
        writeln!(out, "{}", serde_json::to_string_pretty(&j)?).context("writing to stdout")?;
    } else {
        print(&mut out, &config, report, &figures).context("writing to stdout")?;
    }
    for w in report.iter().flat_map(|r| &r.warnings) {
        note!("access log: {w}");
    }
    match (&config.clients.access_log, error) {
        (None, _) => {
            note!("no [clients] access_log in the config: showing the figures recorded so far");
            Ok(ExitCode::SUCCESS)
        }
        (Some(_), Some(e)) => {
            note!("{e}");
            Ok(ExitCode::from(1))
        }
        (Some(_), None) => Ok(ExitCode::SUCCESS),
    }
}

/// `clients --json`.
#[derive(serde::Serialize)]
struct ClientsJson<'a> {
    #[serde(flatten)]
    figures: &'a ClientFigures,
    hit_ratio: Option<f64>,
    access_log: Option<&'a std::path::Path>,
    /// This read, if the log is configured and could be read.
    read: Option<&'a ReadReport>,
    read_error: Option<String>,
}

fn print(
    out: &mut impl Write,
    config: &Config,
    read: Option<&ReadReport>,
    f: &ClientFigures,
) -> io::Result<()> {
    if let (Some(log), Some(r)) = (&config.clients.access_log, read) {
        let files: Vec<String> = r
            .files
            .iter()
            .map(|(p, at)| format!("{} from byte {at}", p.display()))
            .collect();
        let from = if files.is_empty() {
            "no file".to_owned()
        } else {
            files.join(", ")
        };
        writeln!(
            out,
            "access log {}: read {} lines ({from})",
            log.display(),
            r.lines
        )?;
    }
    let window = match &f.since {
        Some(at) => format!("since {at}"),
        None => "all time".to_owned(),
    };
    writeln!(out, "requests, {window}: {}", requests_line(f))?;
    let s = &f.skipped;
    writeln!(
        out,
        "skipped: {} unparsed lines, {} not GOPROXY or checksum-database paths, {} hostile paths rejected, {} non-canonical versions",
        s.get(Skip::Unparsed),
        s.get(Skip::NotProtocol),
        s.get(Skip::Rejected),
        s.get(Skip::NonCanonical)
    )?;
    for r in &f.rejected {
        writeln!(
            out,
            "  rejected {}: {} (last {}: {})",
            r.reason, r.count, r.last_seen, r.example
        )?;
    }
    print_tops(out, f)
}

/// `120 uses, 30 misses (hit ratio 80.0%), …, 1.2 MiB sent`.
pub fn requests_line(f: &ClientFigures) -> String {
    let r = &f.requests;
    let ratio = f.hit_ratio().map_or_else(
        || "no hit ratio yet".to_owned(),
        |x| format!("hit ratio {:.1}%", x * 100.0),
    );
    format!(
        "{} uses, {} misses ({ratio}), {} probes, {} client gone, {} range not satisfiable, {} forbidden, {} server errors, {} other; {} sent",
        r.get(ResultClass::Use),
        r.get(ResultClass::Miss),
        r.get(ResultClass::Probe),
        r.get(ResultClass::ClientGone),
        r.get(ResultClass::RangeNotSatisfiable),
        r.get(ResultClass::Forbidden),
        r.get(ResultClass::ServerError),
        r.get(ResultClass::Other),
        HumanBytes(f.bytes)
    )
}

/// The top modules and top misses.
pub fn print_tops(out: &mut impl Write, f: &ClientFigures) -> io::Result<()> {
    if !f.top_modules.is_empty() {
        writeln!(out, "top modules:")?;
    }
    for m in &f.top_modules {
        writeln!(
            out,
            "  {} {} uses, {} misses, {}, last used {}",
            m.path,
            m.uses,
            m.misses,
            HumanBytes(m.bytes),
            m.last_used.as_deref().unwrap_or("never")
        )?;
    }
    if !f.top_misses.is_empty() {
        writeln!(out, "top misses:")?;
    }
    for m in &f.top_misses {
        let what = match m.version.as_str() {
            "" => format!("{} (@v/list, @latest)", m.path),
            v => format!("{}@{v}", m.path),
        };
        writeln!(
            out,
            "  {what} {} misses, last {}",
            m.misses,
            m.last_missed.as_deref().unwrap_or("never")
        )?;
    }
    Ok(())
}

/// `status`'s clients section: only once the log was read (or learning saw a miss).
pub fn print_status(
    out: &mut impl Write,
    f: &ClientFigures,
    learned: &LearnedCounts,
) -> io::Result<()> {
    let learning = learned_line(learned);
    match &f.read_at {
        Some(at) => writeln!(
            out,
            "\nclients (access log read {at}): {}",
            requests_line(f)
        )?,
        None if learning.is_some() => writeln!(out, "\nclients (access log not read yet)")?,
        None => return Ok(()),
    }
    if let Some(line) = learning {
        writeln!(out, "{line}")?;
    }
    print_tops(out, f)
}

/// `learning: 2 misses wait for the next sync; so far: 3 published, 5 not_found`, or
/// `None` when learning never saw a miss. See: #14
fn learned_line(l: &LearnedCounts) -> Option<String> {
    if l.due == 0 && l.outcomes.is_empty() {
        return None;
    }
    let mut line = format!("learning: {} misses wait for the next sync", l.due);
    for (i, (outcome, n)) in l.outcomes.iter().enumerate() {
        line.push_str(if i == 0 { "; so far: " } else { ", " });
        line.push_str(&format!("{n} {outcome}"));
    }
    Some(line)
}
