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
//! `record_outcomes`); the < 1 s no-op sync depends on it. A `published`
//! version is never changed again (see `versions.rs`).
//!
//! The schema lives in `migrations/NNNN_name.sql`, applied at open
//! (`migrate.rs`). Timestamps are RFC 3339 UTC text with whole seconds.
//!
//! Module paths and versions are plain strings here: the caller has already
//! checked them (`module::ModulePath`, `module::Version`).

mod error;
mod exports;
mod feed;
mod imports;
mod migrate;
mod runs;
mod status;
mod sumdb;
mod versions;

use std::collections::HashSet;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::Connection;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;
use tokio::sync::{mpsc, oneshot};

pub use error::StateError;
pub use exports::{ExportCandidate, ExportRecord, PreviousExport, STATUS_EXPORTS};
pub use feed::{DueVersion, FeedCursor, Origin, PageRecord, RetryPolicy};
pub use imports::ImportRecord;
pub use runs::{RunId, RunOutcome, RunRecord, RunSummary};
pub use status::{
    Problem, Rejection, RunTotals, StatusCounts, StatusReport, SumdbStatus, STATUS_PROBLEMS,
    STATUS_RUNS,
};
pub use sumdb::{RecordRow, StoredHead};
pub use versions::{Outcome, OutcomeKind, PublishedInfo, Recorded, VersionStatus};

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

    /// Runs `f` on the state thread and returns its result. Errors name the
    /// operation `query`; prefer [`Store::call_as`] to name it.
    pub async fn call<T, F>(&self, f: F) -> Result<T, StateError>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> rusqlite::Result<T> + Send + 'static,
    {
        self.call_as("query", f).await
    }

    /// Runs `f` on the state thread; errors name the operation `op`.
    pub async fn call_as<T, F>(&self, op: &'static str, f: F) -> Result<T, StateError>
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

    /// Records a new run of this process as `running`. Any other run still
    /// `running` is marked `interrupted`: the caller holds the run lock, so
    /// its process is gone.
    pub async fn begin_run(&self) -> Result<RunId, StateError> {
        let pid = std::process::id();
        self.call_as("begin run", move |c| runs::begin_run(c, pid))
            .await
    }

    /// Records how `run` ended.
    pub async fn finish_run(&self, run: RunId, summary: &RunSummary) -> Result<(), StateError> {
        let summary = summary.clone();
        self.call_as("finish run", move |c| runs::finish_run(c, run, &summary))
            .await
    }

    /// The published `(path, version)` pairs of `paths`: what plan subtracts.
    pub async fn published_set(
        &self,
        paths: &[String],
    ) -> Result<HashSet<(String, String)>, StateError> {
        let paths = paths.to_vec();
        self.call_as("published set", move |c| {
            let all = versions::version_statuses(c, &paths)?;
            Ok(all
                .into_iter()
                .filter(|(_, s)| *s == VersionStatus::Published)
                .map(|(mv, _)| mv)
                .collect())
        })
        .await
    }

    /// Marks `(path, version)` pairs `pending` for `run`, in one transaction.
    /// Published versions are left alone. Returns how many rows were marked.
    pub async fn mark_pending(
        &self,
        run: RunId,
        items: &[(String, String)],
    ) -> Result<usize, StateError> {
        let items = items.to_vec();
        self.call_as("mark pending", move |c| {
            versions::mark_pending(c, run, &items)
        })
        .await
    }

    /// Records a batch of fetch outcomes in one transaction. Outcomes for
    /// versions already published are ignored and listed in the result.
    pub async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<Recorded, StateError> {
        let outcomes = outcomes.to_vec();
        self.call_as("record outcomes", move |c| {
            versions::record_outcomes(c, &outcomes)
        })
        .await
    }

    /// Versions left `pending` by an interrupted run, by path and version.
    pub async fn pending_versions(&self) -> Result<Vec<(String, String)>, StateError> {
        self.call_as("pending versions", |c| versions::pending_versions(c))
            .await
    }

    /// Records upstream entries that can never be mirrored, `(module, entry,
    /// reason)`, as seen by `run`; one transaction.
    pub async fn record_rejections(
        &self,
        run: RunId,
        rejections: &[(String, String, String)],
    ) -> Result<(), StateError> {
        let rejections = rejections.to_vec();
        self.call_as("record rejections", move |c| {
            status::record_rejections(c, run, &rejections)
        })
        .await
    }

    /// The largest verified tree head of checksum database `db`.
    pub async fn newest_sumdb_head(&self, db: &str) -> Result<Option<StoredHead>, StateError> {
        let db = db.to_owned();
        self.call_as("newest sumdb head", move |c| sumdb::newest_head(c, &db))
            .await
    }

    /// The heads the offline copy was published with, smallest first.
    pub async fn pinned_sumdb_heads(&self, db: &str) -> Result<Vec<StoredHead>, StateError> {
        let db = db.to_owned();
        self.call_as("pinned sumdb heads", move |c| sumdb::pinned_heads(c, &db))
            .await
    }

    /// Stores a verified head of `db`. `false`: a head of that size with
    /// another hash is already stored (the caller should have seen the fork).
    pub async fn save_sumdb_head(&self, db: &str, head: StoredHead) -> Result<bool, StateError> {
        let db = db.to_owned();
        self.call_as("save sumdb head", move |c| sumdb::save_head(c, &db, &head))
            .await
    }

    /// Records the checksum database's record id of `(path, version, id)`
    /// triples whose versions are known (pending or published).
    pub async fn record_sumdb_ids(
        &self,
        db: &str,
        records: Vec<(String, String, i64)>,
    ) -> Result<usize, StateError> {
        let db = db.to_owned();
        self.call_as("record sumdb ids", move |c| {
            sumdb::record_ids(c, &db, &records)
        })
        .await
    }

    /// Record ids of every published version of `db`, ascending.
    pub async fn published_sumdb_ids(&self, db: &str) -> Result<Vec<i64>, StateError> {
        let db = db.to_owned();
        self.call_as("published sumdb ids", move |c| {
            sumdb::published_record_ids(c, &db)
        })
        .await
    }

    /// Every published version with its hashes and `db` record id.
    pub async fn published_records(&self, db: &str) -> Result<Vec<RecordRow>, StateError> {
        let db = db.to_owned();
        self.call_as("published records", move |c| {
            sumdb::published_records(c, &db, false)
        })
        .await
    }

    /// Published versions `db` has no record id for (private ones, and
    /// those published while verification was off).
    pub async fn published_without_record(&self, db: &str) -> Result<Vec<RecordRow>, StateError> {
        let db = db.to_owned();
        self.call_as("published without record", move |c| {
            sumdb::published_records(c, &db, true)
        })
        .await
    }

    /// Where the index feed resumes; `None` before the first feed run.
    pub async fn feed_cursor(&self) -> Result<Option<FeedCursor>, StateError> {
        self.call_as("feed cursor", |c| feed::cursor(c)).await
    }

    /// Records one feed page in one transaction: its versions as `pending`
    /// feed work, its rejections, and the cursor after it. Returns the
    /// versions that were not known before.
    pub async fn record_feed_page(
        &self,
        run: RunId,
        page: PageRecord,
    ) -> Result<Vec<(String, String)>, StateError> {
        self.call_as("record feed page", move |c| {
            feed::record_page(c, run, &page)
        })
        .await
    }

    /// The modules among `paths` that have a published version.
    pub async fn mirrored_modules(
        &self,
        paths: Vec<String>,
    ) -> Result<HashSet<String>, StateError> {
        self.call_as("mirrored modules", move |c| {
            feed::mirrored_modules(c, &paths)
        })
        .await
    }

    /// `pending` versions due now: interrupted, newly planned, or whose
    /// retry time has come.
    pub async fn due_versions(&self) -> Result<Vec<DueVersion>, StateError> {
        let now = now();
        self.call_as("due versions", move |c| feed::due_versions(c, &now))
            .await
    }

    /// Schedules the next try of feed versions that failed (see
    /// [`RetryPolicy`]); returns how many were scheduled.
    pub async fn schedule_retries(&self, policy: RetryPolicy) -> Result<usize, StateError> {
        self.call_as("schedule retries", move |c| {
            feed::schedule_retries(c, &policy, OffsetDateTime::now_utc())
        })
        .await
    }

    /// Puts `failed` versions of modules matching `pattern` (comma-separated
    /// `path.Match` globs on leading path elements, as GONOSUMDB; `None`:
    /// every module) back to `pending` with no attempts used.
    pub async fn retry_failed(
        &self,
        pattern: Option<String>,
    ) -> Result<Vec<(String, String)>, StateError> {
        self.call_as("retry failed", move |c| {
            feed::retry_failed(c, pattern.as_deref())
        })
        .await
    }

    /// The modules among `paths` whose `@v/list` was not read within `interval`.
    pub async fn listing_due(
        &self,
        paths: Vec<String>,
        interval: Duration,
    ) -> Result<HashSet<String>, StateError> {
        let cutoff = OffsetDateTime::now_utc()
            .checked_sub(time::Duration::try_from(interval).unwrap_or(time::Duration::MAX))
            .map_or_else(|| "0000".to_string(), feed::stamp);
        self.call_as("listing due", move |c| {
            feed::listing_due(c, &paths, &cutoff)
        })
        .await
    }

    /// Records that `paths` were listed upstream now.
    pub async fn mark_listed(&self, paths: Vec<String>) -> Result<(), StateError> {
        self.call_as("mark listed", move |c| feed::mark_listed(c, &paths))
            .await
    }

    /// The newest completed export of `source`.
    pub async fn previous_export(
        &self,
        source: &str,
    ) -> Result<Option<PreviousExport>, StateError> {
        let source = source.to_owned();
        self.call_as("previous export", move |c| {
            exports::previous_export(c, &source)
        })
        .await
    }

    /// Published versions to export: all if `full`, else those no completed
    /// export of `source` held.
    pub async fn export_candidates(
        &self,
        source: &str,
        full: bool,
    ) -> Result<Vec<ExportCandidate>, StateError> {
        let source = source.to_owned();
        self.call_as("export candidates", move |c| {
            exports::export_candidates(c, &source, full)
        })
        .await
    }

    /// Tiles (tree-relative) some completed export of `source` held.
    pub async fn exported_tiles(&self, source: &str) -> Result<HashSet<String>, StateError> {
        let source = source.to_owned();
        self.call_as("exported tiles", move |c| {
            exports::exported_tiles(c, &source)
        })
        .await
    }

    /// Records a completed export, its versions and tiles, in one transaction.
    pub async fn record_export(
        &self,
        record: ExportRecord,
        version_ids: Vec<i64>,
        tiles: Vec<String>,
    ) -> Result<ExportRecord, StateError> {
        self.call_as("record export", move |c| {
            exports::record_export(c, record, &version_ids, &tiles)
        })
        .await
    }

    /// The newest applied bundle, and the one applied as `source`'s
    /// `sequence` (if any).
    pub async fn import_chain(
        &self,
        source: &str,
        sequence: u64,
    ) -> Result<(Option<ImportRecord>, Option<ImportRecord>), StateError> {
        let source = source.to_owned();
        self.call_as("import chain", move |c| {
            Ok((
                imports::last_import(c)?,
                imports::import_of(c, &source, sequence)?,
            ))
        })
        .await
    }

    /// Records an applied bundle (after all of it is published).
    pub async fn record_import(&self, record: ImportRecord) -> Result<(), StateError> {
        self.call_as("record import", move |c| imports::record_import(c, &record))
            .await
    }

    /// Counts, recent runs and recent problems for `gomirror status`.
    pub async fn status(&self) -> Result<StatusReport, StateError> {
        self.call_as("status", status::status).await
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
    let open_err = |cause| StateError::Open {
        path: owned(),
        cause,
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

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
            zip_size,
            h1_zip: "h1:zip=".into(),
            h1_mod: "h1:mod=".into(),
            zip_sha256: "ab".repeat(32),
            time: "2019-01-01T00:00:00Z".into(),
        }
    }

    fn mv(path: &str, version: &str) -> (String, String) {
        (path.to_string(), version.to_string())
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
            .call(|c| {
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
            s.call(|c| c.query_row("SELECT COUNT(*) FROM schema_migrations", [], |r| r.get(0)))
                .await
                .unwrap()
        };
        let first: i64 = count(Store::open(&path).await.unwrap()).await;
        let second: i64 = count(Store::open(&path).await.unwrap()).await;
        assert_eq!(first, migrate::MIGRATIONS.len() as i64);
        assert_eq!(second, first);
    }

    #[tokio::test]
    async fn newer_migration_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.db");
        let store = Store::open(&path).await.unwrap();
        store
            .call(|c| {
                c.execute(
                    "INSERT INTO schema_migrations VALUES (7, 'later', '2030-01-01T00:00:00Z')",
                    [],
                )
            })
            .await
            .unwrap();
        drop(store);
        let err = Store::open(&path).await.unwrap_err();
        let known = migrate::MIGRATIONS.last().map_or(0, |m| m.version);
        assert_eq!(
            err.to_string(),
            format!(
                "state {}: database has migration 7 but this gomirror knows only up to \
                 {known}; upgrade gomirror",
                path.display()
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
        let done = Outcome {
            path: "rsc.io/quote".into(),
            version: "v1.5.2".into(),
            result: OutcomeKind::Published(published_info(5)),
        };
        store.record_outcomes(&[done]).await.unwrap();
        drop(store); // the process dies here

        let store = Store::open(&path).await.unwrap();
        let next = store.begin_run().await.unwrap();
        assert_eq!(
            store.pending_versions().await.unwrap(),
            vec![mv("golang.org/x/text", "v0.3.7")]
        );
        let paths = vec!["golang.org/x/text".to_string(), "rsc.io/quote".to_string()];
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
            .call(|c| c.busy_timeout(Duration::from_millis(20)))
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
