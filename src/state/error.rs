//! `StateError`: every failure of the state store, naming the database file
//! and the operation, in Go's style (`state /var/lib/gomirror/state.db: mark
//! pending: database is locked`).
//!
//! The SQLite cause is part of the message and deliberately not a
//! `#[source]`: a `rusqlite::Error`'s own source is the bare result code
//! (`Error code 5: The database file is locked`), which would repeat the
//! cause in `{:#}` chains. The `cause` field keeps it for callers that match.

use std::path::PathBuf;

/// An error from [`Store`](super::Store).
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Creating the database's parent directory failed; the cause names it.
    #[error("state {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The database file could not be opened or configured.
    #[error("state {}: open: {cause}", .path.display())]
    Open {
        path: PathBuf,
        cause: rusqlite::Error,
    },

    /// A migration failed; nothing of it was applied.
    #[error("state {}: migration {version} ({name}): {cause}", .path.display())]
    Migration {
        path: PathBuf,
        version: u32,
        name: &'static str,
        cause: rusqlite::Error,
    },

    /// The database was migrated by a newer gomirror than this one.
    #[error(
        "state {}: database has migration {found} but this gomirror knows only up to {known}; \
         upgrade gomirror",
        .path.display()
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        known: u32,
    },

    /// Another connection held the database longer than the busy timeout.
    #[error("state {}: {op}: {cause}", .path.display())]
    Busy {
        path: PathBuf,
        op: &'static str,
        cause: rusqlite::Error,
    },

    /// Any other SQLite failure of an operation.
    #[error("state {}: {op}: {cause}", .path.display())]
    Sqlite {
        path: PathBuf,
        op: &'static str,
        cause: rusqlite::Error,
    },

    /// SQLite could not write (or open) the database, and the reason is that
    /// this user cannot write `file` (the database, its `-wal`/`-shm`, or the
    /// directory they are created in) or it is on a read-only file system.
    /// SQLite's own words ("unable to open database file", "attempt to write a
    /// readonly database") name neither. See: #13
    #[error("state {}: {op}: cannot write {}", .path.display(), .file.display())]
    ReadOnly {
        path: PathBuf,
        op: &'static str,
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The database file is damaged (`PRAGMA quick_check` failed, or SQLite
    /// met a malformed page). Nothing more is read or written: a run on it
    /// could record wrong state or skip rows silently.
    // See: #13
    #[error(
        "state {}: database is corrupt: {detail}; stop gomirror and restore it from a backup \
         (README \"Backing up the state database\")",
        .path.display()
    )]
    Corrupt { path: PathBuf, detail: String },

    /// The state thread could not be started.
    #[error("state {}: start state thread", .path.display())]
    Spawn {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The state thread is gone, or dropped the request because it panicked.
    #[error("state {}: {op}: state thread stopped", .path.display())]
    Stopped { path: PathBuf, op: &'static str },
}

impl StateError {
    /// Wraps a failure of `op`, sorting busy/locked into [`StateError::Busy`].
    pub(crate) fn sqlite(path: PathBuf, op: &'static str, cause: rusqlite::Error) -> Self {
        if is_corrupt_error(&cause) {
            return StateError::Corrupt {
                path,
                detail: format!("{op}: {cause}"),
            };
        }
        if let Some((file, source)) = read_only_cause(&path, &cause) {
            return StateError::ReadOnly {
                path,
                op,
                file,
                source,
            };
        }
        if is_busy_error(&cause) {
            StateError::Busy { path, op, cause }
        } else {
            StateError::Sqlite { path, op, cause }
        }
    }

    /// Opening or configuring the database failed, sorting "cannot write" into
    /// [`StateError::ReadOnly`].
    pub(crate) fn open(path: PathBuf, cause: rusqlite::Error) -> Self {
        match read_only_cause(&path, &cause) {
            Some((file, source)) => StateError::ReadOnly {
                path,
                op: "open",
                file,
                source,
            },
            None => StateError::Open { path, cause },
        }
    }

    /// True if another connection held the database past the busy timeout
    /// (SQLITE_BUSY or SQLITE_LOCKED), at open, in a migration or in an
    /// operation. The caller may retry later; nothing was written.
    pub fn is_busy(&self) -> bool {
        match self {
            StateError::Busy { .. } => true,
            StateError::Open { cause, .. } | StateError::Migration { cause, .. } => {
                is_busy_error(cause)
            }
            _ => false,
        }
    }
}

/// For a SQLite "read-only" or "cannot open" failure: the first of the
/// database, its `-wal` and `-shm` (where they exist) and its directory (where
/// they do not, for creating them) this process may not write, and why.
fn read_only_cause(
    path: &std::path::Path,
    err: &rusqlite::Error,
) -> Option<(PathBuf, std::io::Error)> {
    use rustix::fs::{access, Access};
    let code = err.sqlite_error_code()?;
    if !matches!(
        code,
        rusqlite::ErrorCode::ReadOnly | rusqlite::ErrorCode::CannotOpen
    ) {
        return None;
    }
    let sibling = |suffix: &str| {
        let mut name = path.as_os_str().to_owned();
        name.push(suffix);
        PathBuf::from(name)
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut candidates = vec![path.to_owned()];
    let mut need_dir = false;
    for extra in [sibling("-wal"), sibling("-shm")] {
        if extra.exists() {
            candidates.push(extra);
        } else {
            need_dir = true;
        }
    }
    if need_dir {
        candidates.push(dir);
    }
    candidates
        .into_iter()
        .find_map(|file| match access(&file, Access::WRITE_OK) {
            Err(e) if e != rustix::io::Errno::NOENT => Some((file, std::io::Error::from(e))),
            _ => None,
        })
}

/// SQLITE_CORRUPT or SQLITE_NOTADB: the file itself is damaged.
pub(crate) fn is_corrupt_error(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
    )
}

fn is_busy_error(err: &rusqlite::Error) -> bool {
    matches!(
        err.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}
