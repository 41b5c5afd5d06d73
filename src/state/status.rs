//! `StatusReport`: what `gomirror status` (and `--json`) shows, read in one
//! transaction so the numbers agree with each other.

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::exports::{recent_exports, ExportRecord, STATUS_EXPORTS};
use super::feed::{cursor, FeedCursor};
use super::runs::{recent_runs, RunId, RunOutcome, RunRecord};
use super::versions::VersionStatus;
use super::{StateError, Store};

/// How many runs the report lists.
pub const STATUS_RUNS: usize = 10;
/// How many quarantined, not-found or failed versions the report lists.
pub const STATUS_PROBLEMS: usize = 50;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StatusReport {
    pub modules: u64,
    pub versions: StatusCounts,
    /// Sum of info + mod + zip sizes of published versions.
    pub published_bytes: u64,
    /// The most recent runs, newest first.
    pub runs: Vec<RunRecord>,
    /// The most recently updated quarantined, not-found and failed versions,
    /// and pending ones waiting for a retry.
    pub problems: Vec<Problem>,
    /// The most recent upstream entries refused by Go's rules.
    pub rejections: Vec<Rejection>,
    /// Where the index feed resumes and the newest entry timestamp seen
    /// (feed lag = now − `newest`); `None` if the feed was never followed.
    pub feed: Option<FeedCursor>,
    /// Every run counted by outcome, and when the last good ones ended.
    pub run_totals: RunTotals,
    /// Per checksum database: the newest verified head and the newest head
    /// the offline copy is pinned to.
    pub sumdb: Vec<SumdbStatus>,
    /// The most recent air-gap exports, newest first.
    pub exports: Vec<ExportRecord>,
    /// The bundles this (offline) mirror applied, newest first.
    pub imports: Vec<super::imports::ImportRecord>,
    /// Requests and failures per upstream, over all runs. See: #13.
    pub upstreams: Vec<crate::fetch::UpstreamHealth>,
    /// The newest run that did not end `ok`, and why.
    pub last_failure: Option<LastFailure>,
    /// Each project as its last run left it: needed, present, missing. See: #12
    pub projects: Vec<super::projects::ProjectStatus>,
    /// What the access log says clients did, all time. See: #14
    pub clients: super::clients::ClientFigures,
    /// What learning made of clients' misses, and how many wait. See: #14
    pub learned: super::learning::LearnedCounts,
    /// What retention pruned. See: #15
    pub retention: super::retention::RetentionStatus,
}

/// The newest run that failed, finished partial, or was interrupted, and why: what
/// `status` shows as "last failure: <time>: <cause>".
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastFailure {
    pub run: RunId,
    pub outcome: RunOutcome,
    /// When it ended; when it started if nobody saw it end.
    pub at: String,
    /// Why it could not proceed, the whole chain (a `failed` run).
    pub error: Option<String>,
    /// Its planned versions that were not published and why, as the run
    /// left them (the first `runs::RUN_FAILURES_KEPT`), and how many there were:
    /// quarantined, not found and failed.
    pub versions: Vec<FailedVersion>,
    pub versions_total: u64,
}

/// A version a run could not publish, and why, as that run left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedVersion {
    pub path: String,
    pub version: String,
    pub status: VersionStatus,
    pub reason: String,
}

impl LastFailure {
    /// The cause in one line: the run's error, else its first failing
    /// version's reason, else what an interrupted run means.
    pub fn cause(&self) -> String {
        if let Some(e) = &self.error {
            return e.clone();
        }
        if let Some(p) = self.versions.first() {
            let more = match self.versions_total {
                0 | 1 => String::new(),
                n => format!(" (and {} more)", n - 1),
            };
            return format!("{}@{}: {}{more}", p.path, p.version, p.reason);
        }
        match self.outcome {
            RunOutcome::Interrupted => {
                "the run was stopped, or its process died, before it ended".to_owned()
            }
            // A partial run with no failing version and no recorded cause (a
            // run before gomirror recorded its planning problems).
            _ => "planning could not do everything (the run's log says what)".to_owned(),
        }
    }
}

impl StatusReport {
    /// Shows runs still `running` whose process is gone as `interrupted`. The
    /// run lock (flock) is free exactly when no process holds it: the kernel
    /// releases it when its holder dies. `lock_is_held` is
    /// [`crate::lock::is_held`] of the database's lock; when it cannot tell
    /// (`None`), or the lock is held, nothing changes. The database is not
    /// written (status may run read-only): the next run records it.
    /// See: #13
    pub fn show_dead_runs(&mut self, lock_is_held: Option<bool>) {
        if lock_is_held != Some(false) {
            return;
        }
        for run in &mut self.runs {
            if run.summary.outcome == RunOutcome::Running {
                run.summary.outcome = RunOutcome::Interrupted;
                self.run_totals.running = self.run_totals.running.saturating_sub(1);
                self.run_totals.interrupted += 1;
                if self.last_failure.as_ref().is_none_or(|f| f.run < run.id) {
                    self.last_failure = Some(LastFailure {
                        run: run.id,
                        outcome: RunOutcome::Interrupted,
                        at: run.started_at.clone(),
                        error: None,
                        versions: Vec::new(),
                        versions_total: 0,
                    });
                }
            }
        }
    }
}

/// What this mirror knows of one checksum database.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SumdbStatus {
    pub name: String,
    /// Records in the newest verified tree.
    pub verified_tree: i64,
    pub verified_at: String,
    /// Records in the tree the offline copy's `latest` names, if published.
    pub pinned_tree: Option<i64>,
    /// Published versions with a record in this database.
    pub records: u64,
}

/// All runs by outcome, for metrics and `status`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunTotals {
    pub ok: u64,
    pub partial: u64,
    pub failed: u64,
    pub interrupted: u64,
    pub running: u64,
    /// When the newest run with outcome `ok` ended (RFC 3339).
    pub last_ok_at: Option<String>,
    /// When the newest run that went to its end (`ok` or `partial`) ended.
    pub last_completed_at: Option<String>,
}

/// An upstream entry that can never be mirrored, and why, as it is
/// recorded. Raw text: it did not pass Go's rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RejectedEntry {
    /// The module path as upstream wrote it (`<feed>` when even that is bad).
    pub module: String,
    /// The entry refused: a version, or `path@version`.
    pub entry: String,
    pub reason: String,
}

/// A recorded rejection, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub module: String,
    pub entry: String,
    pub reason: String,
    pub seen_at: String,
}

/// Number of versions per status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StatusCounts {
    pub pending: u64,
    pub published: u64,
    /// Published for their go.mod only (a project's module graph reads them).
    pub mod_only: u64,
    pub quarantined: u64,
    pub not_found: u64,
    pub failed: u64,
    /// Being pruned: a killed `gomirror prune` left them (see: #15).
    pub pruning: u64,
    /// Pruned by the retention policy; their files are gone.
    pub pruned: u64,
}

/// A version that did not make it into the tree, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub version: String,
    pub status: VersionStatus,
    pub reason: Option<String>,
    pub attempts: u32,
    pub updated_at: String,
    /// A pending version waits until then for its next try.
    pub next_try_at: Option<String>,
}

impl Store {
    /// Counts, recent runs and recent problems for `gomirror status`.
    pub async fn status(&self) -> Result<StatusReport, StateError> {
        self.call_as("status", status).await
    }

    /// Records upstream entries that can never be mirrored, as seen by
    /// `run`; one transaction.
    pub async fn record_rejections(
        &self,
        run: RunId,
        rejections: &[RejectedEntry],
    ) -> Result<(), StateError> {
        let rejections = rejections.to_vec();
        self.call_as("record rejections", move |c| {
            record_rejections(c, run, &rejections)
        })
        .await
    }
}

pub(crate) fn status(conn: &mut Connection) -> rusqlite::Result<StatusReport> {
    let tx = conn.transaction()?;
    let report = StatusReport {
        modules: tx.query_row("SELECT COUNT(*) FROM modules", [], |r| r.get(0))?,
        versions: counts(&tx)?,
        published_bytes: tx.query_row(
            "SELECT COALESCE(SUM(info_size + mod_size + COALESCE(zip_size, 0)), 0)
             FROM versions WHERE status IN ('published', 'mod_only')",
            [],
            |r| r.get(0),
        )?,
        runs: recent_runs(&tx, STATUS_RUNS)?,
        problems: problems(&tx, STATUS_PROBLEMS)?,
        rejections: rejections(&tx, STATUS_PROBLEMS)?,
        feed: cursor(&tx)?,
        run_totals: run_totals(&tx)?,
        sumdb: sumdb_status(&tx)?,
        exports: recent_exports(&tx, STATUS_EXPORTS)?,
        imports: super::imports::recent_imports(&tx, STATUS_RUNS)?,
        upstreams: super::upstreams::upstream_health(&tx)?,
        last_failure: last_failure(&tx)?,
        projects: super::projects::projects(&tx)?,
        clients: super::clients::client_figures(&tx, None, super::clients::CLIENT_TOP)?,
        learned: super::learning::counts(&tx, &super::now())?,
        retention: super::retention::retention_status(&tx)?,
    };
    tx.commit()?;
    Ok(report)
}

fn counts(conn: &Connection) -> rusqlite::Result<StatusCounts> {
    let mut c = StatusCounts::default();
    let mut stmt = conn.prepare("SELECT status, COUNT(*) FROM versions GROUP BY status")?;
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
    for row in rows {
        let (status, n): (VersionStatus, u64) = row?;
        *match status {
            VersionStatus::Pending => &mut c.pending,
            VersionStatus::Published => &mut c.published,
            VersionStatus::ModOnly => &mut c.mod_only,
            VersionStatus::Quarantined => &mut c.quarantined,
            VersionStatus::NotFound => &mut c.not_found,
            VersionStatus::Failed => &mut c.failed,
            VersionStatus::Pruning => &mut c.pruning,
            VersionStatus::Pruned => &mut c.pruned,
        } = n;
    }
    Ok(c)
}

fn run_totals(conn: &Connection) -> rusqlite::Result<RunTotals> {
    let mut t = RunTotals::default();
    let mut stmt = conn.prepare("SELECT outcome, COUNT(*) FROM runs GROUP BY outcome")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
    for row in rows {
        let (outcome, n): (String, u64) = row?;
        match outcome.as_str() {
            "ok" => t.ok = n,
            "partial" => t.partial = n,
            "failed" => t.failed = n,
            "interrupted" => t.interrupted = n,
            "running" => t.running = n,
            // The schema's CHECK admits only the five above.
            _ => {}
        }
    }
    let last_ended = |outcomes: &str| {
        conn.query_row(
            &format!("SELECT MAX(ended_at) FROM runs WHERE outcome IN ({outcomes})"),
            [],
            |r| r.get::<_, Option<String>>(0),
        )
    };
    t.last_ok_at = last_ended("'ok'")?;
    t.last_completed_at = last_ended("'ok', 'partial'")?;
    Ok(t)
}

fn last_failure(conn: &Connection) -> rusqlite::Result<Option<LastFailure>> {
    let run = conn
        .query_row(
            "SELECT id, outcome, COALESCE(ended_at, started_at), error,
                    quarantined + not_found + failed
             FROM runs WHERE outcome IN ('failed', 'partial', 'interrupted')
             ORDER BY id DESC LIMIT 1",
            [],
            |r| {
                let outcome: String = r.get(1)?;
                Ok((RunId(r.get(0)?), outcome, r.get(2)?, r.get(3)?, r.get(4)?))
            },
        )
        .optional()?;
    let Some((run, outcome, at, error, versions_total)) = run else {
        return Ok(None);
    };
    let outcome = match outcome.as_str() {
        "failed" => RunOutcome::Failed,
        "partial" => RunOutcome::Partial,
        _ => RunOutcome::Interrupted,
    };
    let versions = conn
        .prepare(
            "SELECT path, version, status, reason FROM run_failures
             WHERE run_id = ?1 ORDER BY path, version",
        )?
        .query_map([run.0], |r| {
            Ok(FailedVersion {
                path: r.get(0)?,
                version: r.get(1)?,
                status: r.get(2)?,
                reason: r.get(3)?,
            })
        })?
        .collect::<Result<_, _>>()?;
    Ok(Some(LastFailure {
        run,
        outcome,
        at,
        error,
        versions,
        versions_total,
    }))
}

fn problems(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Problem>> {
    conn.prepare(
        "SELECT m.path, v.version, v.status, v.last_error, v.attempts, v.updated_at, v.next_try_at
         FROM versions v JOIN modules m ON m.id = v.module_id
         WHERE v.status IN ('quarantined', 'not_found', 'failed')
             OR (v.status = 'pending' AND v.next_try_at IS NOT NULL)
         ORDER BY v.updated_at DESC, v.id DESC LIMIT ?1",
    )?
    .query_map([limit as i64], |r| {
        Ok(Problem {
            path: r.get(0)?,
            version: r.get(1)?,
            status: r.get(2)?,
            reason: r.get(3)?,
            attempts: r.get(4)?,
            updated_at: r.get(5)?,
            next_try_at: r.get(6)?,
        })
    })?
    .collect()
}

pub(crate) fn record_rejections(
    conn: &mut Connection,
    run: RunId,
    rejections: &[RejectedEntry],
) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    {
        let mut insert = tx.prepare(
            "INSERT INTO rejections (run_id, module, entry, reason, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let now = super::now();
        for r in rejections {
            insert.execute(rusqlite::params![run.0, r.module, r.entry, r.reason, now])?;
        }
    }
    tx.commit()
}

fn rejections(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Rejection>> {
    conn.prepare(
        "SELECT module, entry, reason, seen_at FROM rejections
         ORDER BY seen_at DESC, id DESC LIMIT ?1",
    )?
    .query_map([limit as i64], |r| {
        Ok(Rejection {
            module: r.get(0)?,
            entry: r.get(1)?,
            reason: r.get(2)?,
            seen_at: r.get(3)?,
        })
    })?
    .collect()
}

fn sumdb_status(conn: &Connection) -> rusqlite::Result<Vec<SumdbStatus>> {
    let mut stmt = conn.prepare(
        "SELECT h.db_name, h.size, h.seen_at,
             (SELECT MAX(size) FROM sumdb_heads p WHERE p.db_name = h.db_name AND p.pinned = 1),
             (SELECT COUNT(*) FROM sumdb_records r JOIN versions v ON v.id = r.version_id
              WHERE r.db_name = h.db_name AND v.status = 'published')
         FROM sumdb_heads h
         WHERE h.size = (SELECT MAX(size) FROM sumdb_heads m WHERE m.db_name = h.db_name)
         ORDER BY h.db_name",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(SumdbStatus {
            name: r.get(0)?,
            verified_tree: r.get(1)?,
            verified_at: r.get(2)?,
            pinned_tree: r.get(3)?,
            records: r.get(4)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::runs::{begin_run, finish_run, RunOutcome, RunSummary};
    use crate::state::tests::{migrated, mv, outcome, published_info};
    use crate::state::versions::{mark_pending, record_outcomes, OutcomeKind};

    #[test]
    fn rejections_are_reported_newest_first() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 7).unwrap();
        let rejected = |entry: &str, reason: &str| RejectedEntry {
            module: "a.example/m".into(),
            entry: entry.into(),
            reason: reason.into(),
        };
        let rows = [
            rejected("../../etc", "not a semantic version"),
            rejected("v1.2", "not canonical"),
        ];
        record_rejections(&mut conn, run, &rows).unwrap();
        let r = status(&mut conn).unwrap();
        let entries: Vec<&str> = r.rejections.iter().map(|x| x.entry.as_str()).collect();
        assert_eq!(entries, ["v1.2", "../../etc"]);
        assert_eq!(r.rejections[1].reason, "not a semantic version");
    }

    // See: #13
    #[test]
    fn issue_13_last_failure_keeps_its_reasons_after_a_retry() {
        let mut conn = migrated();
        let b = mv("b.example/m", "v0.2.0");
        let summary = |outcome, failed| RunSummary {
            outcome,
            planned: 1,
            failed,
            ..RunSummary::default()
        };
        let first = begin_run(&mut conn, 7).unwrap();
        mark_pending(&mut conn, first, std::slice::from_ref(&b)).unwrap();
        let failed = OutcomeKind::Failed {
            error: "b.example/m@v0.2.0: 503 Service Unavailable".into(),
        };
        record_outcomes(&mut conn, &[outcome("b.example/m", "v0.2.0", failed)]).unwrap();
        finish_run(&conn, first, &summary(RunOutcome::Partial, 1)).unwrap();
        // The next run retries it and publishes it: its row moves on.
        let second = begin_run(&mut conn, 8).unwrap();
        mark_pending(&mut conn, second, std::slice::from_ref(&b)).unwrap();
        let published = OutcomeKind::Published(published_info(10));
        record_outcomes(&mut conn, &[outcome("b.example/m", "v0.2.0", published)]).unwrap();
        finish_run(&conn, second, &summary(RunOutcome::Ok, 0)).unwrap();

        let r = status(&mut conn).unwrap();
        let f = r.last_failure.expect("run 1 failed");
        assert_eq!(
            (f.run, f.outcome, f.versions_total),
            (first, RunOutcome::Partial, 1)
        );
        assert_eq!(f.error, None);
        assert_eq!(
            f.cause(),
            "b.example/m@v0.2.0: b.example/m@v0.2.0: 503 Service Unavailable"
        );
        assert_eq!(f.versions[0].status, VersionStatus::Failed);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
    }

    #[test]
    fn empty_database() {
        let mut conn = migrated();
        let r = status(&mut conn).unwrap();
        assert_eq!(r.modules, 0);
        assert_eq!(r.versions, StatusCounts::default());
        assert_eq!(r.published_bytes, 0);
        assert!(r.runs.is_empty() && r.problems.is_empty());
        assert_eq!(r.run_totals, RunTotals::default());
    }

    #[test]
    fn counts_bytes_runs_and_problems() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 7).unwrap();
        let pending = [mv("a.example/m", "v1.0.0"), mv("c.example/m", "v0.0.1")];
        mark_pending(&mut conn, run, &pending).unwrap();
        let q = OutcomeKind::Quarantined {
            reason: "zip: go.mod files must have lowercase names".into(),
        };
        let batch = [
            outcome(
                "a.example/m",
                "v1.0.0",
                OutcomeKind::Published(published_info(100)),
            ),
            outcome(
                "a.example/m",
                "v1.1.0",
                OutcomeKind::Published(published_info(200)),
            ),
            outcome("b.example/m", "v0.1.0", q),
            outcome(
                "b.example/m",
                "v0.2.0",
                OutcomeKind::Failed {
                    error: "503".into(),
                },
            ),
        ];
        record_outcomes(&mut conn, &batch).unwrap();
        let summary = RunSummary {
            outcome: RunOutcome::Partial,
            planned: 5,
            published: 2,
            skipped: 0,
            quarantined: 1,
            not_found: 0,
            failed: 1,
            bytes: 338,
        };
        finish_run(&conn, run, &summary).unwrap();

        let r = status(&mut conn).unwrap();
        assert_eq!(r.modules, 3);
        let totals = &r.run_totals;
        assert_eq!((totals.partial, totals.ok, totals.running), (1, 0, 0));
        assert_eq!(totals.last_ok_at, None);
        assert_eq!(totals.last_completed_at, r.runs[0].ended_at);
        let want = StatusCounts {
            pending: 1,
            published: 2,
            mod_only: 0,
            quarantined: 1,
            not_found: 0,
            failed: 1,
            pruning: 0,
            pruned: 0,
        };
        assert_eq!(r.versions, want);
        // published_info(n): info 12 + mod 7 + zip n.
        assert_eq!(r.published_bytes, (12 + 7 + 100) + (12 + 7 + 200));
        assert_eq!(r.runs.len(), 1);
        assert_eq!(r.runs[0].summary, summary);
        assert_eq!(r.runs[0].pid, 7);
        let mut got: Vec<_> = r
            .problems
            .iter()
            .map(|p| {
                (
                    p.version.as_str(),
                    p.status,
                    p.reason.as_deref(),
                    p.attempts,
                )
            })
            .collect();
        got.sort_by_key(|p| p.0);
        let want = vec![
            (
                "v0.1.0",
                VersionStatus::Quarantined,
                Some("zip: go.mod files must have lowercase names"),
                1,
            ),
            ("v0.2.0", VersionStatus::Failed, Some("503"), 1),
        ];
        assert_eq!(got, want);
    }

    #[test]
    fn run_totals_count_outcomes_and_name_the_last_good_runs() {
        let mut conn = migrated();
        let finish = |conn: &mut Connection, outcome, ended: &str| {
            let run = begin_run(conn, 7).unwrap();
            let summary = RunSummary {
                outcome,
                ..RunSummary::default()
            };
            finish_run(conn, run, &summary).unwrap();
            conn.execute(
                "UPDATE runs SET ended_at = ?2 WHERE id = ?1",
                (run.0, ended),
            )
            .unwrap();
        };
        finish(&mut conn, RunOutcome::Ok, "2026-01-01T00:00:00Z");
        finish(&mut conn, RunOutcome::Partial, "2026-01-02T00:00:00Z");
        finish(&mut conn, RunOutcome::Failed, "2026-01-03T00:00:00Z");
        begin_run(&mut conn, 8).unwrap();
        let t = status(&mut conn).unwrap().run_totals;
        let want = RunTotals {
            ok: 1,
            partial: 1,
            failed: 1,
            interrupted: 0,
            running: 1,
            last_ok_at: Some("2026-01-01T00:00:00Z".into()),
            last_completed_at: Some("2026-01-02T00:00:00Z".into()),
        };
        assert_eq!(t, want);
    }

    #[test]
    fn report_serializes() {
        let mut conn = migrated();
        let json = serde_json::to_value(status(&mut conn).unwrap()).unwrap();
        assert_eq!(json["versions"]["not_found"], 0);
        assert_eq!(json["published_bytes"], 0);
    }
}
