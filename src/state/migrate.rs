//! Schema migrations: `migrations/NNNN_name.sql`, embedded at build time and
//! applied in order when the store opens.
//!
//! Each migration runs in its own IMMEDIATE transaction together with its row
//! in `schema_migrations(version, name, applied_at)`, so it is applied exactly
//! once or not at all, even when two processes open the database at the same
//! time. A database that records a migration newer than [`MIGRATIONS`] knows is
//! refused: this binary would not understand its schema.

use std::path::Path;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};

use super::{now, StateError};

/// One embedded migration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Migration {
    pub version: u32,
    pub name: &'static str,
    pub sql: &'static str,
    /// A step SQL cannot say, run in the same transaction before `sql`.
    pub before: Option<fn(&rusqlite::Transaction<'_>) -> rusqlite::Result<()>>,
}

/// Every migration this binary knows, in order. Versions start at 1 and have
/// no gaps (checked by a test). Only ever append.
pub(crate) const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "init",
        sql: include_str!("../../migrations/0001_init.sql"),
        before: None,
    },
    Migration {
        version: 2,
        name: "rejections",
        sql: include_str!("../../migrations/0002_rejections.sql"),
        before: None,
    },
    Migration {
        version: 3,
        name: "sumdb",
        sql: include_str!("../../migrations/0003_sumdb.sql"),
        before: None,
    },
    Migration {
        version: 4,
        name: "feed",
        sql: include_str!("../../migrations/0004_feed.sql"),
        before: None,
    },
    Migration {
        version: 5,
        name: "exports",
        sql: include_str!("../../migrations/0005_exports.sql"),
        before: None,
    },
    Migration {
        version: 6,
        name: "imports",
        sql: include_str!("../../migrations/0006_imports.sql"),
        before: None,
    },
    Migration {
        version: 7,
        name: "go_mod_only",
        sql: include_str!("../../migrations/0007_go_mod_only.sql"),
        before: Some(allow_go_mod_only),
    },
    Migration {
        version: 8,
        name: "feed_upstreams",
        sql: include_str!("../../migrations/0008_feed_upstreams.sql"),
        before: None,
    },
    Migration {
        version: 9,
        name: "export_pending",
        sql: include_str!("../../migrations/0009_export_pending.sql"),
        before: None,
    },
    Migration {
        version: 10,
        name: "run_error",
        sql: include_str!("../../migrations/0010_run_error.sql"),
        before: None,
    },
    Migration {
        version: 11,
        name: "file_sha256",
        sql: include_str!("../../migrations/0011_file_sha256.sql"),
        before: None,
    },
    Migration {
        version: 12,
        name: "export_go_mod_only",
        sql: include_str!("../../migrations/0012_export_go_mod_only.sql"),
        before: None,
    },
    Migration {
        version: 13,
        name: "projects",
        sql: include_str!("../../migrations/0013_projects.sql"),
        before: None,
    },
    Migration {
        version: 14,
        name: "clients",
        sql: include_str!("../../migrations/0014_clients.sql"),
        before: None,
    },
    Migration {
        version: 15,
        name: "index_entries",
        sql: include_str!("../../migrations/0015_index_entries.sql"),
        before: None,
    },
    Migration {
        version: 16,
        name: "retention",
        sql: include_str!("../../migrations/0016_retention.sql"),
        before: Some(allow_pruning),
    },
];

/// The `versions` CHECK constraints of 0001_init.sql, as SQLite keeps them.
const STATUS_CHECK: &str =
    "CHECK (status IN ('pending', 'published', 'quarantined', 'not_found', 'failed'))";
const PUBLISHED_CHECK_END: &str = "AND time IS NOT NULL AND published_at IS NOT NULL))";

/// 0007: lets `versions.status` be `mod_only` (published for its go.mod only: `.info` and
/// `.mod` in the tree, no zip), which a table's CHECK constraint cannot be altered to allow.
/// SQLite's documented way to change only CHECK constraints is to edit the table's text in
/// `sqlite_schema` and bump `schema_version` (sqlite.org/lang_altertable.html, "Making Other
/// Kinds Of Table Schema Changes"); the new constraints hold for every existing row (none
/// is `mod_only`), so nothing on disk changes. The text must be found exactly, or nothing
/// is edited and the migration fails.
fn allow_go_mod_only(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    let sql: String = tx.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'versions'",
        [],
        |r| r.get(0),
    )?;
    if !sql.contains(STATUS_CHECK) || !sql.contains(PUBLISHED_CHECK_END) {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("versions: its CHECK constraints are not those of 0001_init.sql".into()),
        ));
    }
    let edited = sql
        .replace(
            STATUS_CHECK,
            "CHECK (status IN ('pending', 'published', 'mod_only', 'quarantined', 'not_found', 'failed'))",
        )
        .replace(
            PUBLISHED_CHECK_END,
            "AND time IS NOT NULL AND published_at IS NOT NULL)),\n    \
             -- 0007: a version published for its go.mod only has no zip.\n    \
             CHECK (status != 'mod_only' OR (\n        \
             info_size IS NOT NULL AND mod_size IS NOT NULL AND h1_mod IS NOT NULL\n        \
             AND time IS NOT NULL AND published_at IS NOT NULL\n        \
             AND zip_size IS NULL AND h1_zip IS NULL AND zip_sha256 IS NULL))",
        );
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.execute_batch("PRAGMA writable_schema = ON")?;
    tx.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'versions'",
        [&edited],
    )?;
    tx.execute_batch(&format!("PRAGMA schema_version = {}", version + 1))?;
    tx.execute_batch("PRAGMA writable_schema = OFF")?;
    Ok(())
}

/// The `versions` status CHECK constraint as 0007 left it.
const STATUS_CHECK_0007: &str =
    "CHECK (status IN ('pending', 'published', 'mod_only', 'quarantined', 'not_found', 'failed'))";

/// 0016: lets `versions.status` be `pruning` and `pruned` (see: #15), the
/// way [`allow_go_mod_only`] let it be `mod_only`. Neither status has
/// column constraints: a pruned row keeps what it recorded of its files.
fn allow_pruning(tx: &rusqlite::Transaction<'_>) -> rusqlite::Result<()> {
    edit_versions_sql(tx, |sql| {
        sql.contains(STATUS_CHECK_0007).then(|| {
            sql.replace(
                STATUS_CHECK_0007,
                "CHECK (status IN ('pending', 'published', 'mod_only', 'quarantined', \
                 'not_found', 'failed', 'pruning', 'pruned'))",
            )
        })
    })
}

/// Replaces the `versions` table's text with `edit`'s, bumping
/// `schema_version` (sqlite.org/lang_altertable.html); `None` from `edit`
/// (the text is not what it expects) fails the migration.
fn edit_versions_sql(
    tx: &rusqlite::Transaction<'_>,
    edit: impl FnOnce(&str) -> Option<String>,
) -> rusqlite::Result<()> {
    let sql: String = tx.query_row(
        "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'versions'",
        [],
        |r| r.get(0),
    )?;
    let Some(edited) = edit(&sql) else {
        return Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some("versions: its status CHECK constraint is not that of 0007".into()),
        ));
    };
    let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
    tx.execute_batch("PRAGMA writable_schema = ON")?;
    tx.execute(
        "UPDATE sqlite_schema SET sql = ?1 WHERE type = 'table' AND name = 'versions'",
        [&edited],
    )?;
    tx.execute_batch(&format!("PRAGMA schema_version = {}", version + 1))?;
    tx.execute_batch("PRAGMA writable_schema = OFF")
}

const CREATE_SCHEMA_MIGRATIONS: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version    INTEGER PRIMARY KEY,
    name       TEXT NOT NULL,
    applied_at TEXT NOT NULL
) STRICT";

/// Applies the migrations of `list` that `conn` lacks. `path` is for errors.
pub(crate) fn migrate(
    conn: &mut Connection,
    path: &Path,
    list: &[Migration],
) -> Result<(), StateError> {
    let open_err = |cause| StateError::open(path.to_path_buf(), cause);
    conn.execute_batch(CREATE_SCHEMA_MIGRATIONS)
        .map_err(open_err)?;
    let known = list.last().map_or(0, |m| m.version);
    let found = current_version(conn).map_err(open_err)?;
    if found > known {
        return Err(StateError::TooNew {
            path: path.to_path_buf(),
            found,
            known,
        });
    }
    for m in list.iter().filter(|m| m.version > found) {
        apply(conn, m).map_err(|e| StateError::Migration {
            path: path.to_path_buf(),
            version: m.version,
            name: m.name,
            cause: locate(m, e),
        })?;
    }
    Ok(())
}

/// The highest applied migration, 0 for a new database.
pub(crate) fn current_version(conn: &Connection) -> rusqlite::Result<u32> {
    conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
        [],
        |r| r.get(0),
    )
}

fn apply(conn: &mut Connection, m: &Migration) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Another process may have applied it while we waited for the write lock.
    let done = tx
        .query_row(
            "SELECT 1 FROM schema_migrations WHERE version = ?1",
            [m.version],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if !done {
        if let Some(step) = m.before {
            step(&tx)?;
        }
        tx.execute_batch(m.sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
            (m.version, m.name, now()),
        )?;
        tracing::info!(
            version = m.version,
            name = m.name,
            "applied state migration"
        );
    }
    tx.commit()
}

/// Turns a syntax error's "in <rest of the file> at offset N" into "at line
/// N" of the migration file, keeping SQLite's message and code.
fn locate(m: &Migration, e: rusqlite::Error) -> rusqlite::Error {
    let rusqlite::Error::SqlInputError {
        error,
        msg,
        sql,
        offset,
    } = e
    else {
        return e;
    };
    // execute_batch reports the unparsed tail of the file.
    let msg = match usize::try_from(offset) {
        Ok(offset) if m.sql.ends_with(sql.as_str()) => {
            let at = (m.sql.len() - sql.len() + offset).min(m.sql.len());
            let line = m.sql.as_bytes()[..at]
                .iter()
                .filter(|b| **b == b'\n')
                .count()
                + 1;
            format!("{msg} at line {line}")
        }
        _ => msg,
    };
    rusqlite::Error::SqliteFailure(error, Some(msg))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn applied(conn: &Connection) -> Vec<(u32, String)> {
        let mut stmt = conn
            .prepare("SELECT version, name FROM schema_migrations ORDER BY version")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    }

    #[test]
    fn versions_start_at_one_without_gaps() {
        for (i, m) in MIGRATIONS.iter().enumerate() {
            assert_eq!(m.version as usize, i + 1, "migration {}", m.name);
        }
    }

    #[test]
    fn applies_once_and_records() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new("mem.db");
        migrate(&mut conn, path, MIGRATIONS).unwrap();
        migrate(&mut conn, path, MIGRATIONS).unwrap();
        let want: Vec<_> = MIGRATIONS
            .iter()
            .map(|m| (m.version, m.name.to_string()))
            .collect();
        assert_eq!(applied(&conn), want);
    }

    #[test]
    fn newer_database_is_refused() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new("/srv/state.db");
        migrate(&mut conn, path, MIGRATIONS).unwrap();
        conn.execute(
            "INSERT INTO schema_migrations VALUES (99, 'future', '2030-01-01T00:00:00Z')",
            [],
        )
        .unwrap();
        let err = migrate(&mut conn, path, MIGRATIONS).unwrap_err();
        assert!(
            matches!(err, StateError::TooNew { found: 99, .. }),
            "{err:?}"
        );
        assert_eq!(
            err.to_string(),
            format!(
                "state /srv/state.db: database has migration 99 but this gomirror knows only \
                 up to {}; upgrade gomirror",
                MIGRATIONS.last().map_or(0, |m| m.version)
            )
        );
    }

    #[test]
    fn failed_migration_names_itself_and_rolls_back() {
        let mut conn = Connection::open_in_memory().unwrap();
        let path = Path::new("/var/lib/gomirror/state.db");
        let broken = [
            MIGRATIONS[0],
            Migration {
                version: 2,
                name: "add_cursor",
                sql: "CREATE TABLE cursor (x TEXT);\n\n  X;\nSELECT 1;",
                before: None,
            },
        ];
        let err = migrate(&mut conn, path, &broken).unwrap_err();
        assert_eq!(
            err.to_string(),
            "state /var/lib/gomirror/state.db: migration 2 (add_cursor): \
             near \"X\": syntax error at line 3"
        );
        assert!(std::error::Error::source(&err).is_none());
        assert_eq!(current_version(&conn).unwrap(), 1);
        let cursor_exists: bool = conn
            .query_row(
                "SELECT COUNT(*) > 0 FROM sqlite_master WHERE name = 'cursor'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert!(!cursor_exists, "the failed migration left a table behind");
    }
}
