//! Prometheus metrics: what the state database, the tree and the last run
//! say, in the text exposition format (version 0.0.4).
//!
//! Input: [`Inputs`], gathered after every run by [`gather`] from the
//! [`StatusReport`] (the same numbers `gomirror status` prints), the tree's
//! disk usage and, when this process made the run, what only memory holds
//! (upstream requests, retries, status classes; [`LastRun`]). Output: text
//! from [`render`], written as a node_exporter textfile by
//! [`write_textfile`] (temp file in the same directory, fsync, rename, fsync
//! the directory, so the collector never reads half a file) and, in daemon
//! mode, served on `GET /metrics` by [`serve`].
//!
//! Decisions:
//! - Everything the database knows is a gauge read from it, so a textfile
//!   written by a one-shot `sync` and `/metrics` of a daemon say the same.
//!   Per-run upstream figures are gauges of the last run (`gomirror_last_run_*`):
//!   a one-shot process cannot keep counters across runs.
//! - Timestamps, not ages (`gomirror_last_success_timestamp_seconds`):
//!   Prometheus computes `time() - x`, and a textfile does not go stale.
//! - `/metrics` renders per scrape from the stored [`Inputs`], so a metric
//!   relative to now (the feed lag) is current at every scrape.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::fetch::StatsSnapshot;
use crate::state::{RunOutcome, RunRecord, StateError, StatusReport, Store};

/// The media type of the text exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    #[error(transparent)]
    State(#[from] StateError),
    #[error("measure tree: {op} {}", .path.display())]
    Walk {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics textfile {}: {op}", .path.display())]
    Textfile {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A blocking task panicked: a bug, reported instead of crashing.
    #[error(transparent)]
    Task(#[from] crate::error::TaskError),
}

/// Everything the metrics show.
#[derive(Debug, Clone, Serialize)]
pub struct Inputs {
    pub status: StatusReport,
    /// `None` for a tree in object storage: its size is the state's
    /// published bytes, and nothing lists its objects (see: #17).
    pub tree: Option<TreeUsage>,
    /// Only when this process made the last run: what the database does not keep.
    pub last_run: Option<LastRun>,
}

/// The tree on disk, as `du` counts it: allocated blocks of files and
/// directories, temporary files included.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TreeUsage {
    pub disk_usage_bytes: u64,
    pub files: u64,
}

/// What a run of this process reported beyond its database row.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LastRun {
    pub fetch: StatsSnapshot,
    pub seconds: f64,
    /// Watched modules that could not be resolved upstream.
    pub plan_errors: u64,
    /// Upstream `@v/list` or `@latest` entries refused by Go's rules.
    pub rejected: u64,
}

impl LastRun {
    pub fn of(report: &crate::sync::Report) -> LastRun {
        LastRun {
            fetch: report.fetch,
            seconds: report.seconds,
            plan_errors: report.plan_errors.len() as u64,
            rejected: report.rejected.len() as u64,
        }
    }
}

/// Counters of a running daemon.
#[derive(Debug, Default)]
pub struct DaemonCounters {
    /// Ticks that came while a run was still going.
    pub skipped_ticks: AtomicU64,
    /// SIGHUPs whose config did not load (the old one was kept).
    pub reload_failures: AtomicU64,
    /// Times the textfile could not be written (`/metrics` went on).
    pub textfile_errors: AtomicU64,
}

/// What [`after_run`] gathered, and whether the textfile took it. The two
/// outputs are independent: a textfile that cannot be written (its
/// directory unwritable, a full disk) must not keep `/metrics` at 503.
/// See: #13
#[derive(Debug)]
pub struct AfterRun {
    pub inputs: Inputs,
    /// `Ok` also when no textfile is configured.
    pub textfile: Result<(), MetricsError>,
}

/// After a run: reads `config`'s database and tree and, if `[metrics]
/// textfile` is set, rewrites it. Returns what it read, for `/metrics`, even
/// when the textfile failed (counted in `daemon`'s `textfile_errors`).
pub async fn after_run(
    config: &Config,
    last_run: Option<LastRun>,
    daemon: Option<&DaemonCounters>,
) -> Result<AfterRun, MetricsError> {
    let store = Store::open(&config.database).await?;
    let inputs = gather(&store, config.local_tree_dir(), last_run).await?;
    let mut textfile = Ok(());
    if let Some(path) = config.metrics.textfile.clone() {
        let text = render(&inputs, daemon);
        textfile = crate::error::blocking("textfile write", move || write_textfile(&path, &text))
            .await
            .map_err(MetricsError::from)
            .and_then(|written| written);
        if let (Err(_), Some(d)) = (&textfile, daemon) {
            d.textfile_errors.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(AfterRun { inputs, textfile })
}

/// The `[metrics] textfile` as `status` shows it: when it was last replaced,
/// so a textfile that stopped being written (see the daemon's log and
/// `gomirror_metrics_textfile_errors_total`) shows its age. See: #13
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TextfileStatus {
    pub path: PathBuf,
    /// RFC 3339; `None` if the file is missing or unreadable.
    pub written_at: Option<String>,
}

/// [`TextfileStatus`] of `config`'s textfile, if one is configured.
pub fn textfile_status(config: &Config) -> Option<TextfileStatus> {
    let path = config.metrics.textfile.clone()?;
    let written_at = std::fs::metadata(&path)
        .and_then(|m| m.modified())
        .ok()
        .map(|t| {
            chrono::DateTime::<chrono::Utc>::from(t)
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        });
    Some(TextfileStatus { path, written_at })
}

/// Reads the database and measures `tree_dir`, a local tree's directory.
pub async fn gather(
    store: &Store,
    tree_dir: Option<&Path>,
    last_run: Option<LastRun>,
) -> Result<Inputs, MetricsError> {
    let status = store.status().await?;
    let tree = match tree_dir {
        Some(dir) => {
            let dir = dir.to_owned();
            Some(crate::error::blocking("tree walk", move || disk_usage(&dir)).await??)
        }
        None => None,
    };
    Ok(Inputs {
        status,
        tree,
        last_run,
    })
}

/// Walks `dir` without following symlinks. Entries that vanish during the
/// walk (a run renaming its temporary files) are skipped; a missing `dir`
/// is an empty tree.
pub fn disk_usage(dir: &Path) -> Result<TreeUsage, MetricsError> {
    let mut usage = TreeUsage::default();
    let mut stack = vec![dir.to_path_buf()];
    let walk_err = |op, path: &Path| {
        let path = path.to_owned();
        move |source| MetricsError::Walk { op, path, source }
    };
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            r => r.map_err(walk_err("read directory", &d))?,
        };
        usage.disk_usage_bytes += std::fs::symlink_metadata(&d).map_or(0, |m| m.blocks() * 512);
        for entry in entries {
            let entry = entry.map_err(walk_err("read directory", &d))?;
            let meta = match entry.metadata() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                r => r.map_err(walk_err("stat", &entry.path()))?,
            };
            if meta.is_dir() {
                stack.push(entry.path());
            } else {
                usage.files += 1;
                usage.disk_usage_bytes += meta.blocks() * 512;
            }
        }
    }
    Ok(usage)
}

/// The exposition text. `daemon` adds the daemon's own counters.
pub fn render(inputs: &Inputs, daemon: Option<&DaemonCounters>) -> String {
    let mut x = Exposition::default();
    let s = &inputs.status;
    let v = &s.versions;
    let version = [("version", env!("CARGO_PKG_VERSION"))];
    x.gauge(
        "gomirror_build_info",
        "gomirror's version, as a label.",
        &version,
        1u64,
    );
    let by_status = [
        ("published", v.published),
        ("mod_only", v.mod_only),
        ("pending", v.pending),
        ("quarantined", v.quarantined),
        ("not_found", v.not_found),
        ("failed", v.failed),
        ("pruning", v.pruning),
        ("pruned", v.pruned),
    ];
    let help = "Versions in the state database by status.";
    x.labeled("gomirror_versions", help, "status", &by_status);
    x.gauges(&[
        (
            "gomirror_modules",
            "Modules in the state database.",
            s.modules,
        ),
        (
            "gomirror_published_bytes",
            "Bytes of published .info, .mod and .zip files.",
            s.published_bytes,
        ),
    ]);
    if let Some(tree) = &inputs.tree {
        x.gauges(&[
            (
                "gomirror_tree_disk_usage_bytes",
                "Disk space the tree takes (allocated blocks).",
                tree.disk_usage_bytes,
            ),
            ("gomirror_tree_files", "Files in the tree.", tree.files),
        ]);
    }
    render_runs(&mut x, s);
    render_feed(&mut x, s);
    render_projects(&mut x, s);
    render_retention(&mut x, s);
    render_sumdb(&mut x, s);
    render_upstream_health(&mut x, s);
    render_clients(&mut x, &s.clients);
    render_learned(&mut x, &s.learned);
    if let Some(run) = latest_finished(&s.runs) {
        render_last_run(&mut x, run, inputs.last_run.as_ref());
    }
    if let Some(r) = &inputs.last_run {
        x.gauges(&[
            (
                "gomirror_last_run_plan_errors",
                "Watched modules the last run could not resolve upstream.",
                r.plan_errors,
            ),
            (
                "gomirror_last_run_rejected_entries",
                "Upstream list entries the last run refused by Go's rules.",
                r.rejected,
            ),
        ]);
        render_upstream(&mut x, &r.fetch);
    }
    if let Some(d) = daemon {
        render_daemon(&mut x, d);
    }
    x.out
}

/// What `gomirror prune` removed, over every finished prune. See: #15
fn render_retention(x: &mut Exposition, s: &StatusReport) {
    let r = &s.retention;
    x.gauges(&[
        (
            "gomirror_pruned_versions",
            "Versions removed by the retention policy, over every prune.",
            r.pruned_versions,
        ),
        (
            "gomirror_pruned_bytes",
            "Bytes of .info, .mod and .zip files removed by the retention policy.",
            r.pruned_bytes,
        ),
    ]);
}

/// The index feed's newest entry, and how far behind now it is.
/// Per project (label: its directory; the rows are bounded by the config, a full sync
/// forgets the others): versions needed, present and missing, missing by reason, and
/// whether its go.mod could not be read. See: #12
fn render_projects(x: &mut Exposition, s: &StatusReport) {
    if s.projects.is_empty() {
        return;
    }
    let name = "gomirror_project_versions";
    x.family(
        name,
        "gauge",
        "Versions a project's closure needs, and of them present and missing in the tree.",
    );
    for p in &s.projects {
        let c = &p.counts;
        for (state, n) in [
            ("needed", c.needed),
            ("present", c.present),
            ("missing", c.missing()),
        ] {
            x.sample(name, &[("project", &p.dir), ("state", state)], n as f64);
        }
    }
    let name = "gomirror_project_missing_versions";
    x.family(name, "gauge", "A project's missing versions by reason.");
    for p in &s.projects {
        let c = &p.counts;
        for (reason, n) in [
            ("not_found", c.not_found),
            ("quarantined", c.quarantined),
            ("failed", c.failed),
            ("private", c.private),
            ("pending", c.pending),
        ] {
            x.sample(name, &[("project", &p.dir), ("reason", reason)], n as f64);
        }
    }
    let name = "gomirror_project_error";
    x.family(
        name,
        "gauge",
        "1 when the project could not be read (its go.mod or go.work), else 0.",
    );
    for p in &s.projects {
        let bad = if p.error.is_some() { 1.0 } else { 0.0 };
        x.sample(name, &[("project", &p.dir)], bad);
    }
}

fn render_feed(x: &mut Exposition, s: &StatusReport) {
    let newest = s.feed.as_ref().and_then(|f| f.newest.as_deref());
    let Some(at) = newest.and_then(|t| OffsetDateTime::parse(t, &Rfc3339).ok()) else {
        return;
    };
    x.gauge(
        "gomirror_feed_newest_timestamp_seconds",
        "Timestamp of the newest index feed entry recorded.",
        &[],
        at.unix_timestamp(),
    );
    let lag = (OffsetDateTime::now_utc() - at).as_seconds_f64().max(0.0);
    x.gauge(
        "gomirror_feed_lag_seconds",
        "Now minus the newest index feed entry recorded.",
        &[],
        lag,
    );
}

/// Per checksum database: the tree verified, and the one served offline.
fn render_sumdb(x: &mut Exposition, s: &StatusReport) {
    if s.sumdb.is_empty() {
        return;
    }
    let per_db = |f: fn(&crate::state::SumdbStatus) -> Option<u64>| -> Vec<(&str, u64)> {
        s.sumdb
            .iter()
            .filter_map(|db| f(db).map(|v| (db.name.as_str(), v)))
            .collect()
    };
    let verified = per_db(|db| u64::try_from(db.verified_tree).ok());
    let help = "Records in the newest checksum-database tree head verified.";
    x.labeled("gomirror_sumdb_verified_tree_size", help, "db", &verified);
    let pinned = per_db(|db| db.pinned_tree.and_then(|n| u64::try_from(n).ok()));
    if !pinned.is_empty() {
        let help = "Records in the tree head the offline checksum database is pinned to.";
        x.labeled("gomirror_sumdb_pinned_tree_size", help, "db", &pinned);
    }
    let records = per_db(|db| Some(db.records));
    let help = "Published versions with a checksum-database record.";
    x.labeled("gomirror_sumdb_records", help, "db", &records);
}

/// Per upstream base: requests, failures and when the last one was, over
/// all runs (from state). See: #13.
fn render_upstream_health(x: &mut Exposition, s: &StatusReport) {
    if s.upstreams.is_empty() {
        return;
    }
    let per = |f: fn(&crate::fetch::UpstreamHealth) -> Option<u64>| -> Vec<(&str, u64)> {
        s.upstreams
            .iter()
            .filter_map(|u| f(u).map(|v| (u.upstream.as_str(), v)))
            .collect()
    };
    let help = "Requests made to an upstream (retries included), over all runs.";
    x.labeled(
        "gomirror_upstream_requests_total",
        help,
        "upstream",
        &per(|u| Some(u.requests)),
    );
    let help = "Requests to an upstream that failed after their retries, over all runs.";
    x.labeled(
        "gomirror_upstream_errors_total",
        help,
        "upstream",
        &per(|u| Some(u.errors)),
    );
    let last = per(|u| {
        let at = u.last_failure_at.as_deref()?;
        let t = OffsetDateTime::parse(at, &Rfc3339).ok()?;
        u64::try_from(t.unix_timestamp()).ok()
    });
    if !last.is_empty() {
        let help = "When a request to an upstream last failed.";
        x.labeled(
            "gomirror_upstream_last_failure_timestamp_seconds",
            help,
            "upstream",
            &last,
        );
    }
}

/// What the access log says clients did, from the same figures `status`
/// and `gomirror clients` show (all time). The module and miss families are
/// bounded: the top [`crate::state::CLIENT_TOP`] only. See: #14
fn render_clients(x: &mut Exposition, c: &crate::state::ClientFigures) {
    use crate::clients::request::{ResultClass, Skip};
    let requests: Vec<_> = ResultClass::ALL
        .iter()
        .map(|&class| (class.as_str(), c.requests.get(class)))
        .collect();
    let help = "Protocol requests in the access log by what they meant.";
    x.labeled_kind(
        "gomirror_client_requests_total",
        "counter",
        help,
        "result",
        &requests,
    );
    let skipped: Vec<_> = Skip::ALL
        .iter()
        .map(|&skip| (skip.as_str(), c.skipped.get(skip)))
        .collect();
    let help = "Access-log lines in no result class, by why.";
    x.labeled_kind(
        "gomirror_client_skipped_total",
        "counter",
        help,
        "reason",
        &skipped,
    );
    let rejected: Vec<_> = c
        .rejected
        .iter()
        .map(|r| (r.reason.as_str(), r.count))
        .collect();
    let help = "Hostile request targets refused, by reason.";
    x.labeled_kind(
        "gomirror_client_rejected_total",
        "counter",
        help,
        "reason",
        &rejected,
    );
    x.counter(
        "gomirror_client_bytes_total",
        "Body bytes sent for protocol requests.",
        c.bytes,
    );
    if let Some(ratio) = c.hit_ratio() {
        let help = "Uses / (uses + misses) of protocol requests, all time.";
        x.gauge("gomirror_client_hit_ratio", help, &[], ratio);
    }
    let name = "gomirror_client_top_misses";
    x.family(
        name,
        "gauge",
        "Misses of the most missed module versions ('' for @v/list and @latest).",
    );
    for m in &c.top_misses {
        let labels = [("module", m.path.as_str()), ("version", m.version.as_str())];
        x.sample(name, &labels, m.misses as f64);
    }
    let name = "gomirror_client_top_modules";
    x.family(name, "gauge", "Uses of the most used modules.");
    for m in &c.top_modules {
        x.sample(name, &[("module", &m.path)], m.uses as f64);
    }
    if let Some(at) = c.read_at.as_deref().and_then(unix_seconds) {
        let help = "When the access log was last read.";
        x.gauge("gomirror_client_log_read_timestamp_seconds", help, &[], at);
    }
}

/// What learning made of clients' misses (`status`'s "learning:" line). See: #14
fn render_learned(x: &mut Exposition, l: &crate::state::LearnedCounts) {
    x.gauge(
        "gomirror_client_misses_due",
        "Missed versions and listings waiting for the next sync to learn them.",
        &[],
        l.due,
    );
    let outcomes: Vec<_> = l.outcomes.iter().map(|(o, n)| (o.as_str(), *n)).collect();
    let help = "Missed versions and listings by what learning made of them.";
    x.labeled("gomirror_client_misses_learned", help, "outcome", &outcomes);
}

fn render_daemon(x: &mut Exposition, d: &DaemonCounters) {
    x.counter(
        "gomirror_daemon_skipped_ticks_total",
        "Schedule ticks skipped because a run was still going.",
        d.skipped_ticks.load(Ordering::Relaxed),
    );
    x.counter(
        "gomirror_daemon_config_reload_failures_total",
        "SIGHUP reloads that kept the old config.",
        d.reload_failures.load(Ordering::Relaxed),
    );
    x.counter(
        "gomirror_metrics_textfile_errors_total",
        "Times the [metrics] textfile could not be written.",
        d.textfile_errors.load(Ordering::Relaxed),
    );
}

fn render_runs(x: &mut Exposition, s: &StatusReport) {
    let t = &s.run_totals;
    x.labeled(
        "gomirror_runs",
        "Runs in the state database by outcome.",
        "outcome",
        &[
            ("ok", t.ok),
            ("partial", t.partial),
            ("failed", t.failed),
            ("interrupted", t.interrupted),
            ("running", t.running),
        ],
    );
    if let Some(at) = t.last_ok_at.as_deref().and_then(unix_seconds) {
        x.gauge(
            "gomirror_last_success_timestamp_seconds",
            "When the newest run with every planned version present ended.",
            &[],
            at,
        );
    }
    if let Some(at) = t.last_completed_at.as_deref().and_then(unix_seconds) {
        x.gauge(
            "gomirror_last_completed_run_timestamp_seconds",
            "When the newest run that went to its end (ok or partial) ended.",
            &[],
            at,
        );
    }
}

fn render_last_run(x: &mut Exposition, run: &RunRecord, mem: Option<&LastRun>) {
    let s = &run.summary;
    let ended = run.ended_at.as_deref().and_then(unix_seconds);
    if let Some(ended) = ended {
        x.gauge(
            "gomirror_last_run_timestamp_seconds",
            "When the newest finished run ended.",
            &[],
            ended,
        );
    }
    let outcomes = [
        RunOutcome::Ok,
        RunOutcome::Partial,
        RunOutcome::Failed,
        RunOutcome::Interrupted,
    ];
    let hits: Vec<(&str, u64)> = outcomes
        .iter()
        .map(|o| (o.as_str(), u64::from(s.outcome == *o)))
        .collect();
    x.labeled(
        "gomirror_last_run_outcome",
        "1 for the outcome of the newest finished run.",
        "outcome",
        &hits,
    );
    x.gauge(
        "gomirror_last_run_planned_versions",
        "Versions the newest finished run planned.",
        &[],
        s.planned,
    );
    x.labeled(
        "gomirror_last_run_versions",
        "Versions of the newest finished run by outcome.",
        "outcome",
        &[
            ("published", s.published),
            ("skipped", s.skipped),
            ("quarantined", s.quarantined),
            ("not_found", s.not_found),
            ("failed", s.failed),
        ],
    );
    x.gauge(
        "gomirror_last_run_published_bytes",
        "Bytes the newest finished run published.",
        &[],
        s.bytes,
    );
    let started = unix_seconds(&run.started_at);
    let seconds = mem
        .map(|m| m.seconds)
        .or_else(|| Some((ended? - started?) as f64));
    if let Some(seconds) = seconds {
        x.gauge(
            "gomirror_last_run_duration_seconds",
            "How long the newest finished run took.",
            &[],
            seconds,
        );
    }
}

fn render_upstream(x: &mut Exposition, f: &StatsSnapshot) {
    x.gauge(
        "gomirror_last_run_upstream_requests",
        "Upstream requests of the last run, retries included.",
        &[],
        f.requests,
    );
    x.gauge(
        "gomirror_last_run_upstream_retries",
        "Upstream requests of the last run that were retried.",
        &[],
        f.retries,
    );
    x.gauge(
        "gomirror_last_run_upstream_received_bytes",
        "Body bytes received from upstream in the last run.",
        &[],
        f.bytes_received,
    );
    x.labeled(
        "gomirror_last_run_upstream_responses",
        "Upstream responses of the last run by status class.",
        "class",
        &[
            ("2xx", f.responses_2xx),
            ("3xx", f.responses_3xx),
            ("4xx", f.responses_4xx),
            ("5xx", f.responses_5xx),
        ],
    );
    x.gauge(
        "gomirror_last_run_upstream_too_many_requests",
        "429 responses in the last run (also in class 4xx).",
        &[],
        f.too_many_requests,
    );
    x.gauge(
        "gomirror_last_run_upstream_not_found",
        "Upstream 404/410 answers in the last run.",
        &[],
        f.not_found,
    );
    x.labeled(
        "gomirror_last_run_upstream_errors",
        "Upstream attempts of the last run that failed without a status.",
        "kind",
        &[
            ("timeout", f.timeouts),
            ("transport", f.transport_errors),
            ("truncated", f.truncated),
        ],
    );
}

/// The newest run that is no longer `running`.
fn latest_finished(runs: &[RunRecord]) -> Option<&RunRecord> {
    runs.iter()
        .find(|r| r.summary.outcome != RunOutcome::Running)
}

/// State timestamps are RFC 3339 in whole seconds.
fn unix_seconds(rfc3339: &str) -> Option<i64> {
    OffsetDateTime::parse(rfc3339, &Rfc3339)
        .ok()
        .map(OffsetDateTime::unix_timestamp)
}

/// Text exposition format, family by family.
#[derive(Default)]
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        self.out += &format!("# HELP {name} {help}\n# TYPE {name} {kind}\n");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out += name;
        if !labels.is_empty() {
            let pairs: Vec<String> = labels
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape_label(v)))
                .collect();
            self.out += &format!("{{{}}}", pairs.join(","));
        }
        self.out += &format!(" {value}\n");
    }

    fn gauge(&mut self, name: &str, help: &str, labels: &[(&str, &str)], value: impl Number) {
        self.family(name, "gauge", help);
        self.sample(name, labels, value.to_f64());
    }

    /// Unlabelled gauges: (name, help, value).
    fn gauges(&mut self, list: &[(&str, &str, u64)]) {
        for (name, help, value) in list {
            self.gauge(name, help, &[], *value);
        }
    }

    /// A gauge family with one sample per value of `label`.
    fn labeled(&mut self, name: &str, help: &str, label: &str, values: &[(&str, u64)]) {
        self.labeled_kind(name, "gauge", help, label, values);
    }

    /// A family of `kind` with one sample per value of `label`.
    fn labeled_kind(
        &mut self,
        name: &str,
        kind: &str,
        help: &str,
        label: &str,
        values: &[(&str, u64)],
    ) {
        self.family(name, kind, help);
        for (value, n) in values {
            self.sample(name, &[(label, value)], *n as f64);
        }
    }

    fn counter(&mut self, name: &str, help: &str, value: u64) {
        self.family(name, "counter", help);
        self.sample(name, &[], value as f64);
    }
}

/// Sample values; f64 is exact for every count below 2^53.
trait Number {
    fn to_f64(self) -> f64;
}
impl Number for u64 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Number for i64 {
    fn to_f64(self) -> f64 {
        self as f64
    }
}
impl Number for f64 {
    fn to_f64(self) -> f64 {
        self
    }
}

/// Label values escape `\`, `"` and newlines.
fn escape_label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// Replaces `path` with `text`: a temporary file in the same directory
/// (named so the textfile collector, which reads `*.prom`, skips it),
/// fsync, rename, fsync the directory. A missing directory is created, as
/// the state database's is (node_exporter may start after gomirror's first
/// run, and its directory is not ours to require). See: #13
pub fn write_textfile(path: &Path, text: &str) -> Result<(), MetricsError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| MetricsError::Textfile {
            op: "create directory",
            path: path.to_owned(),
            source,
        })?;
    }
    crate::files::replace_durably(path, text.as_bytes(), ".gomirror-metrics.tmp-").map_err(|e| {
        MetricsError::Textfile {
            op: e.op,
            path: e.path,
            source: e.source,
        }
    })
}

/// The newest [`Inputs`] and the daemon's counters, shared between the
/// daemon loop (writer) and the `/metrics` handler (reader).
#[derive(Debug, Default)]
pub struct Latest {
    /// Swapped whole after each run; held only to clone the Arc, never
    /// across an await.
    inputs: Mutex<Option<Arc<Inputs>>>,
    pub daemon: DaemonCounters,
}

impl Latest {
    pub fn set(&self, inputs: Inputs) {
        *self.inputs.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(inputs));
    }

    /// The exposition text, `None` before the first [`Latest::set`].
    pub fn render(&self) -> Option<String> {
        let inputs = self
            .inputs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()?;
        Some(render(&inputs, Some(&self.daemon)))
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` fires; every other
/// path is 404, and 503 until the first metrics are gathered.
pub async fn serve(
    listener: tokio::net::TcpListener,
    latest: Arc<Latest>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::http::{header, StatusCode};
    use axum::response::IntoResponse;

    let handler = move || {
        let latest = latest.clone();
        async move {
            match latest.render() {
                Some(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
                None => {
                    (StatusCode::SERVICE_UNAVAILABLE, "no metrics gathered yet\n").into_response()
                }
            }
        }
    };
    let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn status_with_feed(newest: Option<&str>) -> StatusReport {
        StatusReport {
            modules: 0,
            versions: Default::default(),
            published_bytes: 0,
            runs: Vec::new(),
            problems: Vec::new(),
            rejections: Vec::new(),
            feed: Some(crate::state::FeedCursor {
                since: "2026-11-23T00:00:00Z".into(),
                seen: Vec::new(),
                newest: newest.map(str::to_owned),
                ..Default::default()
            }),
            run_totals: Default::default(),
            sumdb: Vec::new(),
            exports: Vec::new(),
            imports: Vec::new(),
            upstreams: Vec::new(),
            last_failure: None,
            projects: Vec::new(),
            clients: Default::default(),
            learned: Default::default(),
            retention: Default::default(),
        }
    }

    // See: #12
    #[test]
    fn issue_12_project_metrics_carry_the_status_counts() {
        let mut s = status_with_feed(None);
        s.projects = vec![crate::state::ProjectStatus {
            dir: "/src/app".into(),
            last_run: crate::state::RunId(3),
            seen_at: "2026-01-01T00:00:00Z".into(),
            go: Some("1.21".into()),
            toolchain: None,
            error: None,
            counts: crate::state::ProjectCounts {
                needed: 10,
                present: 7,
                not_found: 2,
                quarantined: 1,
                ..Default::default()
            },
            missing: Vec::new(),
        }];
        let mut x = Exposition::default();
        render_projects(&mut x, &s);
        for line in [
            r#"gomirror_project_versions{project="/src/app",state="needed"} 10"#,
            r#"gomirror_project_versions{project="/src/app",state="present"} 7"#,
            r#"gomirror_project_versions{project="/src/app",state="missing"} 3"#,
            r#"gomirror_project_missing_versions{project="/src/app",reason="not_found"} 2"#,
            r#"gomirror_project_missing_versions{project="/src/app",reason="quarantined"} 1"#,
            r#"gomirror_project_error{project="/src/app"} 0"#,
        ] {
            assert!(x.out.lines().any(|l| l == line), "{line} in:\n{}", x.out);
        }
    }

    /// Pruned versions by status, and what every prune removed. See: #15
    #[test]
    fn issue_15_metrics_show_pruned_counts_and_bytes() {
        let mut s = status_with_feed(None);
        s.versions.pruned = 4;
        s.versions.pruning = 1;
        s.retention = crate::state::RetentionStatus {
            pruned_versions: 6,
            pruned_bytes: 12345,
            last_prune_at: Some("2026-01-01T00:00:00Z".into()),
            pruning: 1,
        };
        let inputs = Inputs {
            status: s,
            tree: Default::default(),
            last_run: None,
        };
        let text = render(&inputs, None);
        for line in [
            r#"gomirror_versions{status="pruned"} 4"#,
            r#"gomirror_versions{status="pruning"} 1"#,
            "gomirror_pruned_versions 6",
            "gomirror_pruned_bytes 12345",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }

    #[test]
    fn feed_lag_is_now_minus_the_newest_entry() {
        let mut x = Exposition::default();
        let an_hour_ago = OffsetDateTime::now_utc() - time::Duration::hours(1);
        let newest = an_hour_ago.format(&Rfc3339).unwrap();
        render_feed(&mut x, &status_with_feed(Some(&newest)));
        let sample = |name: &str| -> f64 {
            let line = x
                .out
                .lines()
                .find(|l| l.starts_with(&format!("{name} ")))
                .unwrap();
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        let lag = sample("gomirror_feed_lag_seconds");
        assert!((3600.0..3660.0).contains(&lag), "{lag}");
        assert_eq!(
            sample("gomirror_feed_newest_timestamp_seconds"),
            an_hour_ago.unix_timestamp() as f64
        );
        let mut none = Exposition::default();
        render_feed(&mut none, &status_with_feed(None));
        assert!(none.out.is_empty(), "no entry yet, no lag: {}", none.out);
    }

    #[test]
    fn label_values_are_escaped() {
        let mut x = Exposition::default();
        x.sample("m", &[("a", "x\"y\\z\nw")], 1.0);
        assert_eq!(x.out, "m{a=\"x\\\"y\\\\z\\nw\"} 1\n");
    }

    #[test]
    fn timestamps_become_unix_seconds() {
        assert_eq!(unix_seconds("1970-01-01T00:01:40Z"), Some(100));
        assert_eq!(unix_seconds("yesterday"), None);
    }

    #[test]
    fn disk_usage_counts_files_and_skips_a_missing_tree() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            disk_usage(&dir.path().join("absent")).unwrap(),
            TreeUsage::default()
        );
        std::fs::create_dir_all(dir.path().join("a/@v")).unwrap();
        std::fs::write(dir.path().join("a/@v/list"), "v1.0.0\n").unwrap();
        std::fs::write(dir.path().join("a/@v/v1.0.0.zip"), vec![7u8; 10_000]).unwrap();
        let usage = disk_usage(dir.path()).unwrap();
        assert_eq!(usage.files, 2);
        // At least the zip's bytes, whatever the file system's block size.
        assert!(usage.disk_usage_bytes >= 10_000, "{usage:?}");
    }

    #[test]
    fn textfile_is_replaced_and_no_temporary_file_remains() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gomirror.prom");
        write_textfile(&path, "a 1\n").unwrap();
        write_textfile(&path, "a 2\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["gomirror.prom"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "node_exporter runs as its own user");
        // A missing directory is created (see: #13); a file in its place is an error.
        write_textfile(&dir.path().join("absent/deeper/x.prom"), "a 3\n").unwrap();
        let x = std::fs::read_to_string(dir.path().join("absent/deeper/x.prom")).unwrap();
        assert_eq!(x, "a 3\n");
        let err = write_textfile(&path.join("x.prom"), "").unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "metrics textfile {}: create directory",
                path.join("x.prom").display()
            )),
            "{err}"
        );
    }

    /// A status report with every section filled, so every family renders.
    fn status_with_everything() -> StatusReport {
        use crate::state::{ClientFigures, RunId, RunRecord, RunSummary, SumdbStatus};
        let mut s = status_with_feed(Some("2026-11-23T00:00:00Z"));
        let done = RunRecord {
            id: RunId(1),
            pid: 1,
            started_at: "2026-11-23T00:00:00Z".into(),
            ended_at: Some("2026-11-23T00:01:00Z".into()),
            summary: RunSummary {
                outcome: RunOutcome::Ok,
                ..Default::default()
            },
            error: None,
        };
        s.runs = vec![done];
        s.run_totals.last_ok_at = Some("2026-11-23T00:01:00Z".into());
        s.run_totals.last_completed_at = Some("2026-11-23T00:01:00Z".into());
        s.sumdb = vec![SumdbStatus {
            name: "sum.golang.org".into(),
            verified_tree: 10,
            verified_at: "2026-11-23T00:00:00Z".into(),
            pinned_tree: Some(9),
            records: 3,
        }];
        s.upstreams = vec![crate::fetch::UpstreamHealth {
            upstream: "https://proxy.golang.org".into(),
            requests: 5,
            errors: 1,
            last_failure_at: Some("2026-11-23T00:00:00Z".into()),
            last_failure: Some("reset".into()),
        }];
        s.projects = vec![crate::state::ProjectStatus {
            dir: "/src/app".into(),
            last_run: RunId(1),
            seen_at: "2026-01-01T00:00:00Z".into(),
            go: Some("1.21".into()),
            toolchain: None,
            error: None,
            counts: Default::default(),
            missing: Vec::new(),
        }];
        s.clients = ClientFigures {
            read_at: Some("2026-11-23T00:00:00Z".into()),
            top_misses: vec![crate::state::TopMiss {
                path: "example.com/m".into(),
                version: "v1.0.0".into(),
                misses: 2,
                last_missed: None,
            }],
            top_modules: vec![crate::state::TopModule {
                path: "example.com/m".into(),
                uses: 1,
                misses: 2,
                bytes: 3,
                last_used: None,
            }],
            rejected: vec![crate::state::RejectCount {
                reason: "dot_dot".into(),
                count: 1,
                last_seen: "2026-11-23T00:00:00Z".into(),
                example: "\"/..\"".into(),
            }],
            ..Default::default()
        };
        s.learned = crate::state::LearnedCounts {
            due: 1,
            outcomes: vec![("published".into(), 2)],
        };
        s
    }

    /// Every metric a panel of the shipped Grafana dashboard queries is one gomirror
    /// exports (the names of a rendering with every family present), and the dashboard
    /// shows runs, feed lag, the hit ratio and the top misses.
    // See: #14
    #[test]
    fn issue_14_grafana_dashboard_names_only_exported_metrics() {
        let mut status = status_with_everything();
        // A hit ratio needs a use or a miss.
        status
            .clients
            .requests
            .add(crate::clients::request::ResultClass::Use, 3);
        let fetch = StatsSnapshot::default();
        let inputs = Inputs {
            status,
            tree: Some(TreeUsage::default()),
            last_run: Some(LastRun {
                fetch,
                seconds: 1.0,
                plan_errors: 0,
                rejected: 0,
            }),
        };
        let text = render(&inputs, Some(&DaemonCounters::default()));
        let exported: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .collect();
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/grafana/gomirror-dashboard.json");
        let dashboard: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let mut queried = std::collections::BTreeSet::new();
        for panel in dashboard["panels"].as_array().unwrap() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let expr = target["expr"].as_str().unwrap();
                let names = metric_names(expr);
                assert!(!names.is_empty(), "{}: {expr}", panel["title"]);
                queried.extend(names);
            }
        }
        let unknown: Vec<&String> = queried
            .iter()
            .filter(|n| !exported.contains(n.as_str()))
            .collect();
        assert!(
            unknown.is_empty(),
            "not exported: {unknown:?}\nexported: {exported:?}"
        );
        for needed in [
            "gomirror_runs",
            "gomirror_feed_lag_seconds",
            "gomirror_client_hit_ratio",
            "gomirror_client_top_misses",
            "gomirror_client_requests_total",
        ] {
            assert!(
                queried.contains(needed),
                "the dashboard does not show {needed}"
            );
        }
    }

    /// The `gomirror_…` identifiers of a PromQL expression.
    fn metric_names(expr: &str) -> Vec<String> {
        let mut names = Vec::new();
        let mut rest = expr;
        while let Some(i) = rest.find("gomirror_") {
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            names.push(tail[..end].to_owned());
            rest = &tail[end..];
        }
        names
    }
}
