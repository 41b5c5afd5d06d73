//! SQLite state: modules, versions and their status, runs.
//!
//! [`Store`] is a cheap, cloneable handle to one `rusqlite::Connection` that
//! lives on a dedicated std thread (SQLite blocks, so it never runs on the
//! async workers; STYLE.md §4). Async callers send closures over a bounded
//! channel and await a oneshot reply. A request that was sent runs to its end
//! even if the awaiting future is dropped, so cancellation never splits a
//! transaction. The thread exits, closing the database, when the last handle
//! is dropped.
//!
//! Writers take whole batches, one transaction each (`mark_pending`,
//! `record_outcomes`, and a commit's `record_commit`: its outcomes with
//! their checksum-database record ids); the < 1 s no-op sync depends on it.
//! A `published` version is never changed again (see `versions.rs`).
//!
//! The API speaks the domain's types (STYLE.md §8): a method takes
//! [`ModVer`]s and [`ModulePath`](crate::module::ModulePath)s and returns them in named rows. Each
//! table's methods are an `impl Store` block beside its SQL:
//! - `runs.rs`: `begin_run`, `finish_run`
//! - `versions.rs`: what is published, `mark_pending`, `record_outcomes`,
//!   `record_commit`
//! - `feed.rs`: the index feed's cursor and pages, retries, listing times
//! - `sumdb.rs`: checksum database heads and record ids
//! - `index.rs`: the downstream index feed's entries, `index_page`
//! - `exports.rs`, `imports.rs`: air-gap bundles made and applied
//! - `projects.rs`: each project's closure per run, `record_projects`, `projects`
//! - `learning.rs`: clients' misses a sync learns from (`client_misses`)
//! - `clients.rs`: the access log's cursor and figures, `record_client_batch`,
//!   `client_figures` (see: #14)
//! - `retention.rs`: what a prune reads, `begin_prune` … `finish_prune` (see: #15)
//! - `status.rs`: `status` (one snapshot for `gomirror status` and metrics)
//!
//! A module path or version read back from the database is checked again
//! (`ModVer::parse`). One that no longer passes Go's rules (written by an
//! older gomirror with looser rules) is logged and skipped by every read,
//! here in [`mod_ver`], so the policy lives in one place.
//!
//! The schema lives in `migrations/NNNN_name.sql`, applied at open
//! (`migrate.rs`). Timestamps are RFC 3339 UTC text with whole seconds.

mod clients;
mod error;
mod exports;
mod feed;
mod imports;
mod index;
mod learning;
mod migrate;
mod projects;
mod retention;
mod runs;
mod status;
mod sumdb;
mod upstreams;
mod versions;

use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

use crate::module::ModVer;

pub use clients::{
    ClassCounts, ClientFigures, LogCursor, RejectCount, SavedCursor, SkipCounts, TopMiss,
    TopModule, CLIENT_HOURS_KEPT, CLIENT_TOP,
};
pub use error::StateError;
pub use exports::{
    ExportCandidate, ExportRecord, ExportedVersion, PreviousExport, VersionId, STATUS_EXPORTS,
};
pub use feed::{DueVersion, FeedCursor, Origin, PageRecord, RetryPolicy};
pub use imports::{ImportChain, ImportRecord};
pub use index::{IndexEntry, MAX_INDEX_PAGE};
pub use learning::{DueMiss, Learned, LearnedCounts};
pub use projects::{
    MissingReason, MissingVersion, Need, ProjectCounts, ProjectSeen, ProjectStatus, SeenClosure,
    PROJECT_MISSING_KEPT,
};
pub use retention::{OpenPrune, PruneCursor, PruneId, PruneItem, RetentionRow, RetentionStatus};
pub use runs::{RunId, RunOutcome, RunRecord, RunSummary};
pub use status::{
    FailedVersion, LastFailure, Problem, RejectedEntry, Rejection, RunTotals, StatusCounts,
    StatusReport, SumdbStatus, STATUS_PROBLEMS, STATUS_RUNS,
};
pub use sumdb::{RecordId, RecordRow, StoredHead};
pub use versions::{
    InvalidVersion, Outcome, OutcomeKind, PublishedFiles, PublishedInfo, Recorded, VerifiedHashes,
    VersionStatus, ZipInfo,
};

/// Requests waiting for the state thread. Senders wait when it is full, so a
/// burst of callers cannot queue unbounded work.
const QUEUE_DEPTH: usize = 64;

/// How long a statement waits for another connection's lock (a concurrent
/// `gomirror status`, the migration of another process) before failing with
/// [`StateError::Busy`].
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// A closure run on the state thread. It sends its own reply.
type Job = Box<dyn FnOnce(&mut Connection) + Send>;

/// Handle to the state database. Clone it freely; all clones share the one
/// connection and thread.
#[derive(Debug, Clone)]
pub struct Store {
    /// The only way to reach the connection. The thread stops when every
    /// sender is gone.
    jobs: mpsc::Sender<Job>,
    path: Arc<Path>,
}

impl Store {
    /// Opens (creating it and its parent directory if missing) the database
    /// at `db_path` on a new thread, configures it and applies migrations.
    ///
    /// Async because all of that blocks: it happens on the state thread while
    /// the caller awaits.
    pub async fn open(db_path: &Path) -> Result<Store, StateError> {
        let path: Arc<Path> = Arc::from(db_path);
        let (jobs, queue) = mpsc::channel(QUEUE_DEPTH);
        let (ready_tx, ready) = oneshot::channel();
        let thread_path = path.clone();
        std::thread::Builder::new()
            .name("gomirror-state".into())
            .spawn(move || match open_connection(&thread_path) {
                Ok(conn) => {
                    if ready_tx.send(Ok(())).is_ok() {
                        serve(conn, queue);
                    }
                }
                Err(e) => {
                    let _ = ready_tx.send(Err(e));
                }
            })
            .map_err(|source| StateError::Spawn {
                path: path.to_path_buf(),
                source,
            })?;
        ready.await.map_err(|_| StateError::Stopped {
            path: path.to_path_buf(),
            op: "open",
        })??;
        Ok(Store { jobs, path })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the state thread; errors name the operation `op`.
    ///
    /// Private to `state`: every other module goes through a named method
    /// (in the file that owns its tables), so SQL never leaves this module.
    async fn call_as<T, F>(&self, op: &'static str, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        let (reply, result) = oneshot::channel();
        let job: Job = Box::new(move |conn| {
            // The caller may have gone away; the work is done either way.
            let _ = reply.send(f(conn));
        });
        let stopped = || StateError::Stopped {
            path: self.path.to_path_buf(),
            op,
        };
        self.jobs.send(job).await.map_err(|_| stopped())?;
        result
            .await
            .map_err(|_| stopped())?
            .map_err(|e| StateError::sqlite(self.path.to_path_buf(), op, e))
    }
}

impl Store {
    /// `PRAGMA quick_check`: the database's pages and b-trees are sound.
    /// Linear in the database's size, so it runs where a damaged file
    /// would do harm unseen — `gomirror verify`, daemon start, and a sync
    /// after an interrupted run — not at every open (the no-op sync stays
    /// fast). A damaged file is [`StateError::Corrupt`].
    // See: #13
    pub async fn quick_check(&self) -> Result<(), StateError> {
        let problems = self
            .call_as("quick check", |c| {
                c.prepare("PRAGMA quick_check(5)")?
                    .query_map([], |r| r.get::<_, String>(0))?
                    .collect::<rusqlite::Result<Vec<String>>>()
            })
            .await?;
        if problems.len() == 1 && problems[0] == "ok" {
            return Ok(());
        }
        Err(StateError::Corrupt {
            path: self.path.to_path_buf(),
            detail: format!("quick_check: {}", problems.join("; ").replace('\n', " ")),
        })
    }

    /// [`Store::quick_check`], when a run still marked `running` shows the
    /// previous run was interrupted (the caller holds the run lock, so that
    /// process is gone): a kill mid-write is when damage appears. Returns
    /// whether it checked.
    pub async fn quick_check_if_interrupted(&self) -> Result<bool, StateError> {
        let interrupted = self
            .call_as("find interrupted runs", |c| {
                c.query_row(
                    "SELECT EXISTS (SELECT 1 FROM runs WHERE outcome = 'running')",
                    [],
                    |r| r.get::<_, bool>(0),
                )
            })
            .await?;
        if interrupted {
            self.quick_check().await?;
        }
        Ok(interrupted)
    }
}

/// Runs on the state thread: create, open, configure, migrate.
fn open_connection(path: &Path) -> Result<Connection, StateError> {
    let owned = || PathBuf::from(path);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs_err::create_dir_all(dir).map_err(|source| StateError::Io {
            path: owned(),
            source,
        })?;
    }
    let open_err = |cause: rusqlite::Error| {
        if error::is_corrupt_error(&cause) {
            StateError::Corrupt {
                path: owned(),
                detail: format!("open: {cause}"),
            }
        } else {
            StateError::open(owned(), cause)
        }
    };
    let mut conn = Connection::open(path).map_err(open_err)?;
    configure(&conn).map_err(open_err)?;
    migrate::migrate(&mut conn, path, migrate::MIGRATIONS)?;
    Ok(conn)
}

fn configure(conn: &Connection) -> rusqlite::Result<()> {
    // First, so that switching to WAL waits for other connections too.
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // WAL: `gomirror status` reads while a sync writes, neither blocks.
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        tracing::warn!(journal_mode = %mode, "state database is not in WAL mode");
    }
    // NORMAL, not FULL: in WAL mode a commit survives a crash of the process
    // (it is in the OS's WAL file); only power loss or an OS crash can drop
    // the last commits, and never corrupts the database. That is enough
    // because the tree is the source of truth: publish fsyncs files before
    // the state records them, so a lost row only makes a published version
    // look unpublished, and the next sync reconciles it with the tree.
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    conn.pragma_update(None, "foreign_keys", true)?;
    Ok(())
}

/// The state thread's loop, until every [`Store`] handle is dropped.
fn serve(mut conn: Connection, mut queue: mpsc::Receiver<Job>) {
    while let Some(job) = queue.blocking_recv() {
        // A panicking closure is a bug in its caller, who gets
        // `StateError::Stopped` (its reply sender was dropped). Keep serving
        // everyone else; roll back whatever the closure left open.
        if panic::catch_unwind(AssertUnwindSafe(|| job(&mut conn))).is_err() {
            tracing::error!("state request panicked");
            if !conn.is_autocommit() {
                if let Err(e) = conn.execute_batch("ROLLBACK") {
                    tracing::error!(error = %e, "rollback after panic failed");
                }
            }
        }
    }
}

/// Now, as stored: RFC 3339 UTC, whole seconds (fixed width, sorts as text).
pub(crate) fn now() -> String {
    OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
        .format(&Rfc3339)
        .expect("the current time is within RFC 3339's years")
}

/// A `(path, version)` read back from the database as a [`ModVer`], or
/// `None` if it no longer passes Go's rules: logged and skipped, so one bad
/// row cannot stop a run (`gomirror verify` reports them, see
/// [`Store::invalid_published`]).
fn mod_ver(path: &str, version: &str) -> Option<ModVer> {
    match ModVer::parse(path, version) {
        Ok(mv) => Some(mv),
        Err(e) => {
            tracing::warn!("state holds a version that no longer checks: {e}");
            None
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::module::ModulePath;
    use std::collections::HashSet;

    /// An in-memory database with every migration applied.
    pub(crate) fn migrated() -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        configure(&conn).unwrap();
        migrate::migrate(&mut conn, Path::new(":memory:"), migrate::MIGRATIONS).unwrap();
        conn
    }

    /// A published record with info 12 bytes, mod 7 bytes and zip `zip_size`.
    pub(crate) fn published_info(zip_size: u64) -> PublishedInfo {
        PublishedInfo {
            info_size: 12,
            mod_size: 7,
            h1_mod: "h1:mod=".into(),
            info_sha256: "cd".repeat(32),
            mod_sha256: "ef".repeat(32),
            time: "2019-01-01T00:00:00Z".into(),
            zip: Some(ZipInfo {
                size: zip_size,
                h1: "h1:zip=".into(),
                sha256: "ab".repeat(32),
            }),
        }
    }

    pub(crate) fn module(path: &str) -> ModulePath {
        ModulePath::new(path).unwrap()
    }

    pub(crate) fn mv(path: &str, version: &str) -> ModVer {
        ModVer::parse(path, version).unwrap()
    }

    pub(crate) fn outcome(path: &str, version: &str, kind: OutcomeKind) -> Outcome {
        Outcome {
            mv: mv(path, version),
            kind,
        }
    }

    #[test]
    fn now_is_whole_seconds_utc() {
        let t = now();
        assert_eq!(t.len(), "2024-05-01T12:00:00Z".len(), "{t}");
        assert!(t.ends_with('Z'), "{t}");
    }

    #[tokio::test]
    async fn open_creates_dir_and_configures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/lib/state.db");
        let store = Store::open(&path).await.unwrap();
        assert!(path.exists());
        let (mode, sync, fk): (String, i64, i64) = store
            .call_as("query", |c| {
                let mode = c.query_row("PRAGMA journal_mode", [], |r| r.get(0))?;
                let sync = c.query_row("PRAGMA synchronous", [], |r| r.get(0))?;
                let fk = c.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
                Ok((mode, sync, fk))
            })
            .await
            .unwrap();
        assert_eq!((mode.as_str(), sync, fk), ("wal", 1, 1));
    }

    #[tokio::test]
    async fn reopen_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let count = |s: Store| async move {
            s.call_as("query", |c| {
                c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0))
            })
            .await
            .unwrap()
        };
        let first: i64 = count(Store::open(&path).await.unwrap()).await;
        let second: i64 = count(Store::open(&path).await.unwrap()).await;
        assert_eq!(first, migrate::MIGRATIONS.len() as i64);
        assert_eq!(second, first);
    }

    /// A sound database passes; the check after an interrupted run runs
    /// only when a run is still marked `running`.
    // See: #13
    #[tokio::test]
    async fn issue_13_quick_check_passes_a_sound_database() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        store.quick_check().await.unwrap();
        assert!(!store.quick_check_if_interrupted().await.unwrap());
        store.begin_run().await.unwrap();
        assert!(store.quick_check_if_interrupted().await.unwrap());
    }

    #[tokio::test]
    async fn newer_migration_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        let known = migrate::MIGRATIONS.last().map_or(0, |m| m.version);
        let later = known + 1;
        store
            .call_as("query", move |c| {
                c.execute(
                    "INSERT INTO schema_migrations VALUES (?1, 'later', '2030-01-01T00:00:00Z')",
                    [later],
                )
            })
            .await
            .unwrap();
        drop(store);
        let err = Store::open(&path).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "state {}: database has migration {later} but this gomirror knows only up to \
                 {known}; upgrade gomirror",
                path.display(),
            )
        );
    }

    #[tokio::test]
    async fn interrupted_run_leaves_pending_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        let killed = store.begin_run().await.unwrap();
        let planned = [
            mv("golang.org/x/text", "v0.3.7"),
            mv("rsc.io/quote", "v1.5.2"),
        ];
        store.mark_pending(killed, &planned).await.unwrap();
        let done = outcome(
            "rsc.io/quote",
            "v1.5.2",
            OutcomeKind::Published(published_info(5)),
        );
        store.record_outcomes(&[done]).await.unwrap();
        drop(store); // the process dies here

        let store = Store::open(&path).await.unwrap();
        let next = store.begin_run().await.unwrap();
        assert_eq!(
            store.pending_versions().await.unwrap(),
            vec![mv("golang.org/x/text", "v0.3.7")]
        );
        let paths = [module("golang.org/x/text"), module("rsc.io/quote")];
        assert_eq!(
            store.published_set(&paths).await.unwrap(),
            HashSet::from([mv("rsc.io/quote", "v1.5.2")])
        );
        let report = store.status().await.unwrap();
        let outcomes: Vec<_> = report
            .runs
            .iter()
            .map(|r| (r.id, r.summary.outcome))
            .collect();
        assert_eq!(
            outcomes,
            vec![
                (next, RunOutcome::Running),
                (killed, RunOutcome::Interrupted)
            ]
        );
        assert_eq!(report.runs[0].pid, std::process::id());
    }

    #[tokio::test]
    async fn errors_name_path_and_operation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        let err = store
            .finish_run(
                RunId(99),
                &RunSummary {
                    outcome: RunOutcome::Ok,
                    planned: 0,
                    published: 0,
                    skipped: 0,
                    quarantined: 0,
                    not_found: 0,
                    failed: 0,
                    bytes: 0,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("state {}: finish run: no run 99", path.display())
        );
        assert!(!err.is_busy());
    }

    #[tokio::test]
    async fn busy_database_is_distinguishable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        store
            .call_as("query", |c| c.busy_timeout(Duration::from_millis(20)))
            .await
            .unwrap();
        let other = Connection::open(&path).unwrap();
        other.execute_batch("BEGIN IMMEDIATE").unwrap();
        let err = store.begin_run().await.unwrap_err();
        assert!(err.is_busy(), "{err:?}");
        assert!(matches!(
            err,
            StateError::Busy {
                op: "begin run",
                ..
            }
        ));
        other.execute_batch("ROLLBACK").unwrap();
        store.begin_run().await.unwrap();
    }

    #[tokio::test]
    async fn panicking_request_does_not_stop_the_thread() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let err = store
            .call_as("explode", |c| -> rusqlite::Result<()> {
                c.execute_batch("BEGIN")?;
                panic!("bug in a caller")
            })
            .await
            .unwrap_err();
        assert!(matches!(err, StateError::Stopped { op: "explode", .. }));
        // The open transaction was rolled back, so a write can start.
        store.begin_run().await.unwrap();
    }
}
