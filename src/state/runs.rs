//! Runs: one row per `gomirror sync`, from `begin_run` to `finish_run`.
//!
//! The caller holds the [`RunLock`](crate::lock::RunLock) before `begin_run`,
//! so any other run still marked `running` belongs to a process that died
//! (kill, OOM, power loss): it is marked `interrupted` then. Its `ended_at`
//! stays NULL because nobody saw it end.

use rusqlite::{Connection, Row, TransactionBehavior};
use serde::Serialize;

use super::{now, StateError, Store};

/// The id of a row in `runs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct RunId(pub i64);

impl std::fmt::Display for RunId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

/// How a run ended; `running` until it does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RunOutcome {
    #[default]
    Running,
    /// Every planned version is present (exit code 0).
    Ok,
    /// The run finished but some versions failed or were quarantined (exit 1).
    Partial,
    /// The run could not proceed (exit 2).
    Failed,
    /// The process died or was stopped before `finish_run`.
    Interrupted,
}

impl RunOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            RunOutcome::Running => "running",
            RunOutcome::Ok => "ok",
            RunOutcome::Partial => "partial",
            RunOutcome::Failed => "failed",
            RunOutcome::Interrupted => "interrupted",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        [
            RunOutcome::Running,
            RunOutcome::Ok,
            RunOutcome::Partial,
            RunOutcome::Failed,
            RunOutcome::Interrupted,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// The counts a run reports at its end.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunSummary {
    pub outcome: RunOutcome,
    pub planned: u64,
    /// Versions fetched, verified and published by this run.
    pub published: u64,
    /// Planned versions that were already published.
    pub skipped: u64,
    pub quarantined: u64,
    pub not_found: u64,
    pub failed: u64,
    /// Bytes published (info + mod + zip).
    pub bytes: u64,
}

/// A row of `runs`, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RunRecord {
    pub id: RunId,
    pub pid: u32,
    pub started_at: String,
    /// None while running, and for interrupted runs.
    pub ended_at: Option<String>,
    #[serde(flatten)]
    pub summary: RunSummary,
    /// Why a `failed` run could not proceed: its whole error chain.
    pub error: Option<String>,
}

impl Store {
    /// Records a new run of this process as `running`. Any other run still
    /// `running` is marked `interrupted`: the caller holds the run lock, so
    /// its process is gone.
    pub async fn begin_run(&self) -> Result<RunId, StateError> {
        let pid = std::process::id();
        self.call_as("begin run", move |c| begin_run(c, pid)).await
    }

    /// Records why `run` could not proceed, `error`'s whole chain, for `status`. Called
    /// before [`Store::finish_run`] marks it `failed`.
    pub async fn record_run_error(
        &self,
        run: RunId,
        error: &(dyn std::error::Error + 'static),
    ) -> Result<(), StateError> {
        let text = crate::error::chain(error);
        self.call_as("record run error", move |c| {
            c.execute("UPDATE runs SET error = ?2 WHERE id = ?1", (run.0, text))
                .map(drop)
        })
        .await
    }

    /// Records how `run` ended.
    pub async fn finish_run(&self, run: RunId, summary: &RunSummary) -> Result<(), StateError> {
        let summary = summary.clone();
        self.call_as("finish run", move |c| finish_run(c, run, &summary))
            .await
    }
}

pub(crate) fn begin_run(conn: &mut Connection, pid: u32) -> rusqlite::Result<RunId> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let interrupted: Vec<i64> = tx
        .prepare("UPDATE runs SET outcome = 'interrupted' WHERE outcome = 'running' RETURNING id")?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for id in &interrupted {
        tracing::warn!(run = id, "previous run did not finish; marked interrupted");
    }
    tx.execute(
        "INSERT INTO runs (started_at, pid, outcome) VALUES (?1, ?2, 'running')",
        (now(), pid),
    )?;
    let id = RunId(tx.last_insert_rowid());
    tx.commit()?;
    Ok(id)
}

/// How many failing versions a run keeps with their reasons (see
/// `migrations/0007_run_error.sql`).
pub const RUN_FAILURES_KEPT: usize = 5;

pub(crate) fn finish_run(conn: &Connection, run: RunId, s: &RunSummary) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    let changed = tx.execute(
        "UPDATE runs SET ended_at = ?2, outcome = ?3, planned = ?4, published = ?5,
             skipped = ?6, quarantined = ?7, not_found = ?8, failed = ?9, bytes = ?10
         WHERE id = ?1",
        rusqlite::params![
            run.0,
            now(),
            s.outcome.as_str(),
            s.planned,
            s.published,
            s.skipped,
            s.quarantined,
            s.not_found,
            s.failed,
            s.bytes
        ],
    )?;
    if changed == 0 {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_NOTFOUND),
            Some(format!("no run {run}")),
        ));
    }
    // Copied now: a later run that retries a version overwrites its
    // last_error, and `status` must still say why this run failed. See: #13
    tx.execute(
        "INSERT OR IGNORE INTO run_failures (run_id, path, version, status, reason)
         SELECT ?1, m.path, v.version, v.status, v.last_error
         FROM versions v JOIN modules m ON m.id = v.module_id
         WHERE v.last_run_id = ?1 AND v.status != 'published' AND v.last_error IS NOT NULL
         ORDER BY m.path, v.version LIMIT ?2",
        (run.0, RUN_FAILURES_KEPT as i64),
    )?;
    tx.commit()
}

/// The `limit` most recent runs, newest first.
pub(crate) fn recent_runs(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<RunRecord>> {
    conn.prepare(
        "SELECT id, pid, started_at, ended_at, outcome, planned, published, skipped,
                quarantined, not_found, failed, bytes, error
         FROM runs ORDER BY id DESC LIMIT ?1",
    )?
    .query_map([limit as i64], run_record)?
    .collect()
}

fn run_record(r: &Row<'_>) -> rusqlite::Result<RunRecord> {
    let outcome: String = r.get(4)?;
    let outcome = RunOutcome::parse(&outcome).ok_or_else(|| {
        rusqlite::Error::FromSqlConversionFailure(
            4,
            rusqlite::types::Type::Text,
            format!("unknown run outcome {outcome:?}").into(),
        )
    })?;
    Ok(RunRecord {
        id: RunId(r.get(0)?),
        pid: r.get(1)?,
        started_at: r.get(2)?,
        ended_at: r.get(3)?,
        summary: RunSummary {
            outcome,
            planned: r.get(5)?,
            published: r.get(6)?,
            skipped: r.get(7)?,
            quarantined: r.get(8)?,
            not_found: r.get(9)?,
            failed: r.get(10)?,
            bytes: r.get(11)?,
        },
        error: r.get(12)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::migrated;

    fn summary(outcome: RunOutcome) -> RunSummary {
        RunSummary {
            outcome,
            planned: 10,
            published: 6,
            skipped: 1,
            quarantined: 1,
            not_found: 1,
            failed: 1,
            bytes: 4096,
        }
    }

    #[test]
    fn begin_marks_older_running_runs_interrupted() {
        let mut conn = migrated();
        let first = begin_run(&mut conn, 100).unwrap();
        let second = begin_run(&mut conn, 200).unwrap();
        assert!(second > first);
        let runs = recent_runs(&conn, 10).unwrap();
        assert_eq!(runs[0].id, second);
        assert_eq!(runs[0].summary.outcome, RunOutcome::Running);
        assert_eq!(runs[0].pid, 200);
        assert_eq!(runs[1].id, first);
        assert_eq!(runs[1].summary.outcome, RunOutcome::Interrupted);
        assert_eq!(runs[1].ended_at, None);
    }

    #[test]
    fn finished_runs_are_not_interrupted_later() {
        let mut conn = migrated();
        let first = begin_run(&mut conn, 100).unwrap();
        finish_run(&conn, first, &summary(RunOutcome::Partial)).unwrap();
        begin_run(&mut conn, 200).unwrap();
        let runs = recent_runs(&conn, 10).unwrap();
        assert_eq!(runs[1].summary, summary(RunOutcome::Partial));
        assert!(runs[1].ended_at.is_some());
    }

    #[test]
    fn finishing_an_unknown_run_fails() {
        let conn = migrated();
        let err = finish_run(&conn, RunId(42), &summary(RunOutcome::Ok)).unwrap_err();
        assert_eq!(err.to_string(), "no run 42");
    }

    #[test]
    fn recent_runs_is_limited_newest_first() {
        let mut conn = migrated();
        let ids: Vec<_> = (0..5).map(|i| begin_run(&mut conn, i).unwrap()).collect();
        let got: Vec<_> = recent_runs(&conn, 2)
            .unwrap()
            .iter()
            .map(|r| r.id)
            .collect();
        assert_eq!(got, vec![ids[4], ids[3]]);
    }
}
