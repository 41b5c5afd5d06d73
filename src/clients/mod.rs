//! What clients did, from the web server's access log: uses, misses, bytes
//! per module version, request classes, and misses that learning may turn
//! into work. See: #14
//!
//! Input: `[clients] access_log` (nginx `combined`, or the JSON
//! `log_format gomirror` of the shipped `nginx/gomirror.conf`) and the
//! cursor saved in state. Output: figures recorded in state
//! (`state/clients.rs`), and a [`ReadReport`] of this read.
//!
//! Phases, one file each: `cursor` (which files to read after the saved
//! cursor, rotation included), `reader` (lines → batches, blocking), `log`
//! (a line → [`log::LogLine`]), `request` (a target → [`request::Request`],
//! method and status → [`request::ResultClass`]), `batch` (figures summed in
//! memory). Each batch is recorded in one transaction with the cursor after
//! its last line, and only if no other reader moved the cursor meanwhile:
//! every line that reached a file is counted exactly once.
//!
//! When: at the start of every sync (before planning, so learning sees this
//! run's misses), after every daemon run (fresh figures on `/metrics`), and
//! by `gomirror clients`. A log that cannot be read is a warning, never fatal.

pub mod batch;
pub mod cursor;
pub mod log;
pub mod reader;
pub mod request;

use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio::sync::mpsc;

use crate::config::ClientSettings;
use crate::error::TaskError;
use crate::state::{StateError, Store};

/// Reading the log failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    #[error("access log {}: {op}", .path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    State(#[from] StateError),
    #[error(transparent)]
    Task(#[from] TaskError),
}

/// What one read of the log did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ReadReport {
    /// Lines read and recorded.
    pub lines: u64,
    /// The files read, in order, with the byte each was read from.
    pub files: Vec<(PathBuf, u64)>,
    /// Lines that may be lost (a rotated file not found), or a read stopped
    /// because another reader recorded first.
    pub warnings: Vec<String>,
}

/// Reads `[clients] access_log`, if set.
pub async fn read_configured(
    store: &Store,
    settings: &ClientSettings,
) -> Option<Result<ReadReport, ClientsError>> {
    let log = settings.access_log.as_ref()?;
    Some(read_log(store, log).await)
}

/// [`read_configured`] for a run: a log that cannot be read is a warning
/// in the report (and the log), never an error.
pub async fn read_for_run(store: &Store, settings: &ClientSettings) -> Option<ReadReport> {
    match read_configured(store, settings).await? {
        Ok(r) => Some(r),
        Err(e) => {
            let message = crate::error::chain(&e);
            tracing::warn!("clients not read: {message}");
            Some(ReadReport {
                warnings: vec![message],
                ..Default::default()
            })
        }
    }
}

/// Reads `log` from where the last read stopped and records what it says.
#[tracing::instrument(skip_all, fields(log = %log.display()))]
pub async fn read_log(store: &Store, log: &Path) -> Result<ReadReport, ClientsError> {
    let saved = store.client_cursor().await?;
    let at = saved.as_ref().map(|s| s.cursor.clone());
    let path = log.to_owned();
    let plan = crate::error::blocking("plan access log", move || cursor::plan(&path, at.as_ref()))
        .await?
        .map_err(|source| ClientsError::Io {
            op: "stat",
            path: log.to_owned(),
            source,
        })?;
    let mut report = ReadReport {
        files: plan
            .segments
            .iter()
            .map(|s| (s.path.clone(), s.start))
            .collect(),
        warnings: plan.warnings,
        ..Default::default()
    };
    for w in &report.warnings {
        tracing::warn!("{w}");
    }
    let (tx, mut rx) = mpsc::channel(1);
    let (recorded, recorded_rx) = std::sync::mpsc::channel();
    let at = saved.as_ref().map(|s| s.cursor.clone());
    let segments = plan.segments;
    let reading = tokio::task::spawn_blocking(move || {
        reader::read_segments(&segments, at.as_ref(), &tx, &recorded_rx)
    });
    let mut generation = saved.map(|s| s.generation);
    let mut raced = false;
    while let Some(r) = rx.recv().await {
        let lines = r.batch.lines;
        match store
            .record_client_batch(generation, r.cursor, r.batch)
            .await
        {
            Ok(Some(g)) => {
                generation = Some(g);
                report.lines += lines;
                // The reader may start another batch; it is gone if it ended.
                let _ = recorded.send(());
            }
            // Another reader recorded first, or is still recording (it
            // holds the write lock past the busy timeout): what this one
            // read is theirs to count.
            Ok(None) | Err(StateError::Busy { .. }) => {
                raced = true;
                break;
            }
            Err(e) => return Err(e.into()),
        }
    }
    // The reader stops at its next batch once nobody receives.
    drop(rx);
    drop(recorded);
    let read = reading.await.map_err(|source| TaskError {
        task: "read access log",
        source,
    })?;
    if raced {
        report
            .warnings
            .push("another reader recorded the log first; this read stopped".to_owned());
    }
    read.map_err(|(source, op, path)| ClientsError::Io { op, path, source })?;
    Ok(report)
}
