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
            StateError::Corrupt {
                path,
                detail: format!("{op}: {cause}"),
            }
        } else if is_busy_error(&cause) {
            StateError::Busy { path, op, cause }
        } else {
            StateError::Sqlite { path, op, cause }
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
