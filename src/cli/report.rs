//! What the commands print: the status text, the final line of a sync,
//! an export, an import, a verify or a retry, and the JSON forms. Reports
//! to stdout go through [`Stdout`]; the `gomirror: …` lines through
//! [`note!`]. Exit codes are the commands' business, not this module's.

use std::io::{self, Write};
use std::path::Path;
use std::time::Duration;

use gomirror::audit::AuditReport;
use gomirror::bundle::export::ExportReport;
use gomirror::bundle::import::{ImportError, ImportReport};
use gomirror::bundle::inspect::BundleInfo;
use gomirror::error::Chain;
use gomirror::metrics::{self, TreeUsage};
use gomirror::module::ModVer;
use gomirror::state::{MissingReason, MissingVersion, ProjectStatus, RunSummary, StatusReport};
use gomirror::sync::Report;
use indicatif::HumanBytes;

use super::output::{note, Stdout};

/// The last line of `sync`: the outcome, the counts, what else happened.
pub fn sync(report: &Report) {
    let s = &report.summary;
    let extra = sync_extra(report);
    if report.plan_only {
        note!(
            "sync planned (nothing fetched): {} versions to fetch, {} already published{extra} in {:.1}s",
            s.planned - s.skipped,
            s.skipped,
            report.seconds,
        );
        return;
    }
    note!(
        "sync {}: {}{extra} in {:.1}s",
        s.outcome.as_str(),
        counts(s),
        report.seconds,
    );
}

/// `, 2 watched modules not listed, …`: the parts of a sync's last line
/// that only show when there is something to say.
fn sync_extra(report: &Report) -> String {
    let mut extra = String::new();
    let mut by_source = std::collections::BTreeMap::new();
    for e in &report.plan_errors {
        *by_source.entry(e.source).or_insert(0usize) += 1;
    }
    for (source, n) in by_source {
        extra += &format!(", {n} {}", source.noun());
    }
    if !report.rejected.is_empty() {
        extra += &format!(", {} upstream entries rejected", report.rejected.len());
    }
    let r = &report.repair;
    if !r.restored.is_empty() {
        extra += &format!(
            ", {} versions' missing files restored from upstream",
            r.restored.len()
        );
    }
    if !r.lists_rewritten.is_empty() {
        extra += &format!(
            ", {} modules' @v/list and @latest rewritten from the state",
            r.lists_rewritten.len()
        );
    }
    if !r.problems.is_empty() {
        extra += &format!(", {} not repaired", r.problems.len());
    }
    if report.kept_out > 0 {
        extra += &format!(
            ", {} quarantined versions kept out until `gomirror retry`",
            report.kept_out
        );
    }
    // See: #14: a log that cannot be read never fails the run.
    for w in report.clients.iter().flat_map(|c| &c.warnings) {
        extra += &format!(", access log: {w}");
    }
    if report.fetch.retries > 0 {
        extra += &format!(", {} requests retried", report.fetch.retries);
    }
    if let Some(f) = &report.feed {
        extra += &format!(
            ", feed: {} new entries in {} pages, {} planned, {} rejected",
            f.entries, f.pages, f.planned, f.rejected
        );
        extra += &feed_problems(f);
    }
    if let Some(l) = &report.learn {
        extra += &learn_summary(l);
    }
    extra
}

/// `, learned from clients: 3 versions, 2 listings (1 not found upstream), …`. See: #14
fn learn_summary(l: &gomirror::sync::LearnReport) -> String {
    let mut out = format!(
        ", learned from clients: {} versions, {} listings",
        l.versions, l.listings
    );
    if l.listings_not_found > 0 {
        out += &format!(" ({} not found upstream)", l.listings_not_found);
    }
    if l.not_found > 0 {
        out += &format!(", {} learned versions not found upstream", l.not_found);
    }
    let refused = [
        (l.private, "private"),
        (l.excluded, "excluded by [[clients.rule]]"),
        (l.unmatched, "matched by no [[clients.rule]]"),
        (l.quarantined, "quarantined"),
    ];
    for (n, why) in refused {
        if n > 0 {
            out += &format!(", {n} misses {why}");
        }
    }
    if l.deferred > 0 {
        out += &format!(", {} misses over max_learned wait", l.deferred);
    }
    out
}

/// What went wrong with the feed, for the sync's last line. See: #13.
fn feed_problems(f: &gomirror::sync::FeedReport) -> String {
    let mut out = String::new();
    if f.backwards > 0 {
        out += &format!(", {} older than the cursor dropped", f.backwards);
    }
    if let Some(at) = &f.stuck_at {
        out += &format!(", stuck at {at}");
    }
    out
}

/// `status`, as text or JSON.
pub fn status(
    inputs: &metrics::Inputs,
    textfile: Option<&metrics::TextfileStatus>,
    json: bool,
) -> io::Result<()> {
    let mut out = Stdout::lock();
    if json {
        let status = StatusJson {
            report: &inputs.status,
            tree: inputs.tree,
            metrics_textfile: textfile,
        };
        return writeln!(out, "{}", to_json(&status)?);
    }
    print_status(&mut out, &inputs.status)?;
    print_tree_and_runs(&mut out, inputs)?;
    print_textfile(&mut out, textfile)
}

/// `status --json`: the state report with the tree's disk usage beside it.
#[derive(serde::Serialize)]
struct StatusJson<'a> {
    #[serde(flatten)]
    report: &'a StatusReport,
    /// Absent for a tree in object storage.
    #[serde(skip_serializing_if = "Option::is_none")]
    tree: Option<TreeUsage>,
    /// Absent without `[metrics] textfile`.
    #[serde(skip_serializing_if = "Option::is_none")]
    metrics_textfile: Option<&'a metrics::TextfileStatus>,
}

/// `metrics textfile <path>: written <time>`, or `: missing`. See: #13
fn print_textfile(
    out: &mut impl Write,
    textfile: Option<&metrics::TextfileStatus>,
) -> io::Result<()> {
    let Some(t) = textfile else {
        return Ok(());
    };
    match &t.written_at {
        Some(at) => writeln!(out, "metrics textfile {}: written {at}", t.path.display()),
        None => writeln!(out, "metrics textfile {}: missing", t.path.display()),
    }
}

fn print_tree_and_runs(out: &mut impl Write, inputs: &metrics::Inputs) -> io::Result<()> {
    let t = &inputs.status.run_totals;
    match &inputs.tree {
        Some(tree) => writeln!(
            out,
            "\ntree: {} files, {} on disk",
            tree.files,
            HumanBytes(tree.disk_usage_bytes)
        )?,
        None => writeln!(
            out,
            "\ntree: in object storage, {} published",
            HumanBytes(inputs.status.published_bytes)
        )?,
    }
    writeln!(
        out,
        "runs: {} ok, {} partial, {} failed, {} interrupted, {} running",
        t.ok, t.partial, t.failed, t.interrupted, t.running
    )?;
    writeln!(
        out,
        "last ok run ended {}; last completed run ended {}",
        t.last_ok_at.as_deref().unwrap_or("never"),
        t.last_completed_at.as_deref().unwrap_or("never")
    )?;
    print_last_failure(out, &inputs.status)
}

/// `last failure: <time>: run #N <outcome>: <cause>`, the newest run that did not end ok.
/// See: #13
fn print_last_failure(out: &mut impl Write, r: &StatusReport) -> io::Result<()> {
    let Some(f) = &r.last_failure else {
        return Ok(());
    };
    writeln!(
        out,
        "last failure: {}: run #{} {}: {}",
        f.at,
        f.run,
        f.outcome.as_str(),
        f.cause()
    )
}

/// A run's counts, as the final line of `sync` and `status` show them.
fn counts(s: &RunSummary) -> String {
    format!(
        "{} fetched, {} skipped, {} quarantined, {} not found, {} failed, {}",
        s.published,
        s.skipped,
        s.quarantined,
        s.not_found,
        s.failed,
        HumanBytes(s.bytes)
    )
}

/// The counts, the feed cursor and the checksum databases, then the history
/// and the problems.
/// `pruned N versions (size), last prune <time>`, once anything was pruned. See: #15
fn print_retention(out: &mut impl Write, r: &StatusReport) -> io::Result<()> {
    let t = &r.retention;
    if let Some(at) = &t.last_prune_at {
        writeln!(
            out,
            "pruned {} versions ({}) over every prune, {} now pruned, last prune {at}",
            t.pruned_versions,
            HumanBytes(t.pruned_bytes),
            r.versions.pruned
        )?;
    }
    if t.pruning > 0 {
        writeln!(
            out,
            "{} versions of an interrupted prune: the next `gomirror prune` completes it",
            t.pruning
        )?;
    }
    Ok(())
}

fn print_status(out: &mut impl Write, r: &StatusReport) -> io::Result<()> {
    let v = &r.versions;
    writeln!(
        out,
        "{} modules, {} versions published, {} for their go.mod only ({})",
        r.modules,
        v.published,
        v.mod_only,
        HumanBytes(r.published_bytes)
    )?;
    // See: #13 — a quarantined version is not fetched again by itself.
    let held = if v.quarantined > 0 {
        " (kept out until `gomirror retry`)"
    } else {
        ""
    };
    writeln!(
        out,
        "pending {}, quarantined {}{held}, not found {}, failed {}",
        v.pending, v.quarantined, v.not_found, v.failed
    )?;
    print_retention(out, r)?;
    if let Some(f) = &r.feed {
        let newest = f.newest.as_deref().unwrap_or("none yet");
        writeln!(
            out,
            "feed: next read since {}, newest entry {newest}{}",
            f.since,
            feed_cursor_notes(f)
        )?;
    }
    for db in &r.sumdb {
        let pinned = db.pinned_tree.map_or_else(
            || "no offline copy".to_owned(),
            |n| format!("offline copy pinned at tree {n}"),
        );
        writeln!(
            out,
            "checksum database {}: tree {} verified {}, {pinned}, {} published versions with a record",
            db.name, db.verified_tree, db.verified_at, db.records
        )?;
    }
    print_upstreams(out, r)?;
    print_projects(out, r)?;
    super::clients::print_status(out, &r.clients, &r.learned)?;
    print_history(out, r)?;
    print_problems(out, r)
}

/// Each project as its last run left it: needed, present, missing by reason with the
/// first missing versions, or why it could not be read. See: #12
fn print_projects(out: &mut impl Write, r: &StatusReport) -> io::Result<()> {
    if !r.projects.is_empty() {
        writeln!(out, "\nprojects:")?;
    }
    for p in &r.projects {
        writeln!(out, "  {}", project_line(p))?;
        for m in &p.missing {
            writeln!(out, "    {}", missing_line(m))?;
        }
        let more = p.counts.missing().saturating_sub(p.missing.len() as u64);
        if more > 0 {
            writeln!(out, "    and {more} more")?;
        }
    }
    Ok(())
}

/// `DIR (go 1.21, toolchain go1.22.3), run #N: 12 needed, 10 present, 2 missing (…)`,
/// or `DIR, run #N: error: go.mod:3: …`.
fn project_line(p: &ProjectStatus) -> String {
    let mut about = Vec::new();
    if let Some(go) = &p.go {
        about.push(format!("go {go}"));
    }
    if let Some(t) = &p.toolchain {
        about.push(format!("toolchain {t}"));
    }
    let about = if about.is_empty() {
        String::new()
    } else {
        format!(" ({})", about.join(", "))
    };
    if let Some(e) = &p.error {
        return format!("{}, run #{}: error: {e}", p.dir, p.last_run);
    }
    let c = &p.counts;
    let reasons: Vec<String> = [
        (c.not_found, "not found upstream"),
        (c.quarantined, "quarantined"),
        (c.failed, "failed"),
        (c.private, "private"),
        (c.pending, "pending"),
    ]
    .into_iter()
    .filter(|(n, _)| *n > 0)
    .map(|(n, why)| format!("{n} {why}"))
    .collect();
    let reasons = if reasons.is_empty() {
        String::new()
    } else {
        format!(" ({})", reasons.join(", "))
    };
    format!(
        "{}{about}, run #{}: {} needed, {} present, {} missing{reasons}",
        p.dir,
        p.last_run,
        c.needed,
        c.present,
        c.missing()
    )
}

/// `path@version: not found upstream: <detail>`.
fn missing_line(m: &MissingVersion) -> String {
    let why = match m.reason {
        MissingReason::NotFound => "not found upstream",
        MissingReason::Quarantined => "quarantined",
        MissingReason::Failed => "failed",
        MissingReason::Private => "private, not served by upstream",
        MissingReason::Pending => "not fetched yet",
    };
    match &m.detail {
        Some(d) => format!("{}@{}: {why}: {d}", m.path, m.version),
        None => format!("{}@{}: {why}", m.path, m.version),
    }
}

/// After `sync --project`: each project's counts and what it still lacks, on stderr.
/// See: #12
pub fn project_missing(report: &Report) {
    for p in &report.projects {
        note!("project {}", project_line(p));
        for m in &p.missing {
            note!("  missing {}", missing_line(m));
        }
        let more = p.counts.missing().saturating_sub(p.missing.len() as u64);
        if more > 0 {
            note!("  and {more} more missing");
        }
    }
    for e in &report.plan_errors {
        note!("{e}");
    }
}

/// The recent runs, exports and imports.
fn print_history(out: &mut impl Write, r: &StatusReport) -> io::Result<()> {
    if !r.runs.is_empty() {
        writeln!(out, "\nrecent runs:")?;
    }
    for run in &r.runs {
        let s = &run.summary;
        writeln!(
            out,
            "  #{:<5} {}  {:<11} {}",
            run.id,
            run.started_at,
            s.outcome.as_str(),
            counts(s)
        )?;
    }
    if !r.exports.is_empty() {
        writeln!(out, "\nrecent exports:")?;
    }
    for e in &r.exports {
        writeln!(
            out,
            "  {} #{:<5} {}{}  {} versions, {} tiles, {} files, {}  {}",
            e.source,
            e.sequence,
            e.completed,
            if e.full { " full" } else { "" },
            e.versions,
            e.tiles,
            e.files,
            HumanBytes(e.bytes),
            e.path
        )?;
    }
    if !r.imports.is_empty() {
        writeln!(out, "\nrecent imports:")?;
    }
    for i in &r.imports {
        writeln!(
            out,
            "  {} #{:<5} {}{}  {} versions, {} files, {}  signed by {}  {}",
            i.source,
            i.sequence,
            i.imported_at,
            if i.full { " full" } else { "" },
            i.versions,
            i.files,
            HumanBytes(i.bytes),
            i.signer,
            &i.bundle_id[..i.bundle_id.len().min(12)]
        )?;
    }
    Ok(())
}

/// What upstream served that was refused, and the versions not published,
/// each with its reason.
fn print_problems(out: &mut impl Write, r: &StatusReport) -> io::Result<()> {
    if !r.rejections.is_empty() {
        writeln!(out, "\nupstream entries rejected:")?;
    }
    for x in &r.rejections {
        writeln!(
            out,
            "  {} {:?}  {}: {}",
            x.module, x.entry, x.seen_at, x.reason
        )?;
    }
    if !r.problems.is_empty() {
        writeln!(out, "\nversions not published:")?;
    }
    for p in &r.problems {
        let next = p
            .next_try_at
            .as_ref()
            .map_or_else(String::new, |at| format!(", next try {at}"));
        writeln!(
            out,
            "  {}@{}  {} after {} attempt(s){next}, {}: {}",
            p.path,
            p.version,
            p.status.as_str(),
            p.attempts,
            p.updated_at,
            p.reason.as_deref().unwrap_or("-")
        )?;
    }
    Ok(())
}

/// `verify`: each problem on stdout (or the JSON report), the verdict on
/// stderr.
pub fn verify(report: &AuditReport, json: bool) -> io::Result<()> {
    let mut out = Stdout::lock();
    if json {
        writeln!(out, "{}", to_json(report)?)?;
    } else {
        for p in &report.problems {
            writeln!(out, "{}: {}", p.subject, p.problem)?;
        }
    }
    drop(out);
    let pinned = report
        .pinned_tree
        .map(|n| format!(", {} lookups proved against tree {n}", report.lookups))
        .unwrap_or_default();
    let verdict = if report.problems.is_empty() {
        "ok"
    } else {
        "FAILED"
    };
    // Said, not hidden: older rows carry no sha256 for these (see: #13).
    let by_content = match report.info_by_content {
        0 => String::new(),
        n => format!(
            ", {n} .info files checked by content (published before their sha256 was recorded)"
        ),
    };
    note!(
        "verify {verdict}: {} versions re-hashed{pinned}{by_content}, {} problems",
        report.versions,
        report.problems.len()
    );
    if let (Some(dir), Some(bucket)) = (&report.moved_to, &report.deleted_from) {
        // See: #17
        note!(
            "verify: copied {} altered objects to {} and deleted them from {bucket}; \
             the next sync restores them from upstream",
            report.moved.len(),
            dir.display()
        );
    } else if let Some(dir) = &report.moved_to {
        note!(
            "verify: moved {} altered files aside to {}; the next sync restores them from upstream",
            report.moved.len(),
            dir.display()
        );
    }
    Ok(())
}

/// `retry`: the versions put back, one `path@version` a line.
pub fn retry(back: &[ModVer], pattern: Option<&str>) -> io::Result<()> {
    let mut out = Stdout::lock();
    for mv in back {
        writeln!(out, "{mv}")?;
    }
    drop(out);
    let which = pattern.map_or_else(String::new, |p| format!(" matching {p:?}"));
    note!(
        "retry: {} failed or quarantined versions{which} back to pending; the next sync fetches them",
        back.len()
    );
    Ok(())
}

/// `keygen`: the verifier key on stdout, where the private key went on stderr.
pub fn keygen(vkey: &str, out_path: &Path) -> io::Result<()> {
    writeln!(Stdout::lock(), "{vkey}")?;
    note!(
        "keygen: private key written to {} (mode 0600); the offline mirror trusts the key above",
        out_path.display()
    );
    Ok(())
}

/// `export`: the bundle's files on stdout, what it holds on stderr.
pub fn export(report: &ExportReport) -> io::Result<()> {
    for r in &report.adopted {
        note!(
            "export #{} of {}: an interrupted export left {} complete; recorded it, bundle {}",
            r.sequence,
            r.source,
            r.path,
            r.bundle_id
        );
    }
    let Some(bundle) = &report.bundle else {
        note!("export: nothing new since the last export; no bundle written");
        return Ok(());
    };
    let mut out = Stdout::lock();
    for p in &bundle.paths {
        writeln!(out, "{}", p.display())?;
    }
    drop(out);
    let r = &bundle.record;
    note!(
        "export #{} of {}{}: {} versions, {} tiles, {} files, {} in {} volume(s), bundle {}",
        r.sequence,
        r.source,
        if r.full { " (full)" } else { "" },
        r.versions,
        r.tiles,
        r.files,
        HumanBytes(r.bytes),
        bundle.paths.len(),
        r.bundle_id
    );
    Ok(())
}

/// `bundle inspect`, as text or JSON.
pub fn inspect(info: &BundleInfo, json: bool) -> io::Result<()> {
    let mut out = Stdout::lock();
    if json {
        writeln!(out, "{}", to_json(info)?)
    } else {
        write!(out, "{}", info.render())
    }
}

/// `import` applied the bundle, or had applied it before.
pub fn import(r: &ImportReport, took: Duration) {
    let what = format!(
        "{} bundle {} ({}), signed by {}",
        r.source,
        r.sequence,
        &r.bundle_id[..r.bundle_id.len().min(12)],
        r.signer
    );
    if r.already_applied {
        note!("import ok: {what} was applied before; nothing to do");
    } else {
        note!(
            "import ok: {what}: {} versions, {} files, {} in {:.1}s",
            r.versions,
            r.files,
            HumanBytes(r.bytes),
            took.as_secs_f64()
        );
    }
}

fn to_json(value: &impl serde::Serialize) -> io::Result<String> {
    serde_json::to_string_pretty(value).map_err(io::Error::other)
}

/// `import` refused the bundle; this mirror is unchanged. With the whole
/// chain: a bundle that cannot be read says why (`…: open: No such file or
/// directory`).
pub fn import_refused(bundle: &Path, e: &ImportError) {
    note!("import refused {}: {}", bundle.display(), Chain(e));
}

/// The page cap seen and the entries dropped as older than the cursor, when
/// there are any. See: #13.
fn feed_cursor_notes(f: &gomirror::state::FeedCursor) -> String {
    let mut out = String::new();
    if let Some(cap) = f.page_cap {
        out += &format!(", index serves at most {cap} entries per page");
    }
    if f.backwards > 0 {
        out += &format!(", {} entries older than the cursor dropped", f.backwards);
    }
    out
}

/// Requests and failures per upstream, with the last failure. See: #13.
fn print_upstreams(out: &mut impl Write, r: &StatusReport) -> io::Result<()> {
    for u in &r.upstreams {
        let last = match (&u.last_failure_at, &u.last_failure) {
            (Some(at), Some(msg)) => format!(", last failure {at}: {msg}"),
            _ => String::new(),
        };
        writeln!(
            out,
            "upstream {}: {} requests, {} errors{last}",
            u.upstream, u.requests, u.errors
        )?;
    }
    Ok(())
}
