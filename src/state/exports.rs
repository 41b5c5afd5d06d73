//! What each air-gap export held (`migrations/0005_exports.sql`), so that
//! the next incremental export holds exactly what was published since.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::now;

/// How many exports `status` lists.
pub const STATUS_EXPORTS: usize = 10;

/// A published version an export may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCandidate {
    /// `versions.id`, recorded with the export.
    pub version_id: i64,
    pub path: String,
    pub version: String,
    pub h1_zip: String,
    pub h1_mod: String,
    pub zip_sha256: String,
    pub info_size: u64,
    pub mod_size: u64,
    pub zip_size: u64,
}

/// The newest completed export of a source: the next one follows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousExport {
    pub sequence: u64,
    pub bundle_id: String,
}

/// A completed export as written to state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExportRecord {
    pub source: String,
    pub sequence: u64,
    pub bundle_id: String,
    pub full: bool,
    pub created: String,
    /// Set when recorded; ignored by [`crate::state::Store::record_export`].
    pub completed: String,
    pub files: u64,
    pub bytes: u64,
    pub path: String,
    pub versions: u64,
    pub tiles: u64,
}

pub(crate) fn previous_export(
    conn: &Connection,
    source: &str,
) -> rusqlite::Result<Option<PreviousExport>> {
    conn.prepare_cached(
        "SELECT sequence, bundle_id FROM exports WHERE source = ?1 ORDER BY sequence DESC LIMIT 1",
    )?
    .query_row([source], |r| {
        Ok(PreviousExport {
            sequence: r.get(0)?,
            bundle_id: r.get(1)?,
        })
    })
    .optional()
}

/// Published versions, by path and version; unless `full`, only those no
/// completed export of `source` held.
pub(crate) fn export_candidates(
    conn: &Connection,
    source: &str,
    full: bool,
) -> rusqlite::Result<Vec<ExportCandidate>> {
    let mut stmt = conn.prepare_cached(
        "SELECT v.id, m.path, v.version, v.h1_zip, v.h1_mod, v.zip_sha256,
                v.info_size, v.mod_size, v.zip_size
         FROM versions v JOIN modules m ON m.id = v.module_id
         WHERE v.status = 'published'
           AND (?2 OR NOT EXISTS (
               SELECT 1 FROM export_versions ev JOIN exports e ON e.id = ev.export_id
               WHERE ev.version_id = v.id AND e.source = ?1))
         ORDER BY m.path, v.version",
    )?;
    let rows = stmt.query_map((source, full), |r| {
        Ok(ExportCandidate {
            version_id: r.get(0)?,
            path: r.get(1)?,
            version: r.get(2)?,
            h1_zip: r.get(3)?,
            h1_mod: r.get(4)?,
            zip_sha256: r.get(5)?,
            info_size: r.get(6)?,
            mod_size: r.get(7)?,
            zip_size: r.get(8)?,
        })
    })?;
    rows.collect()
}

/// Tiles (tree-relative paths) some completed export of `source` held.
pub(crate) fn exported_tiles(conn: &Connection, source: &str) -> rusqlite::Result<HashSet<String>> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT t.tile FROM export_tiles t JOIN exports e ON e.id = t.export_id
         WHERE e.source = ?1",
    )?;
    let rows = stmt.query_map([source], |r| r.get(0))?;
    rows.collect()
}

/// Records a completed export with its versions and tiles, in one
/// transaction. Returns the record as stored.
pub(crate) fn record_export(
    conn: &mut Connection,
    mut record: ExportRecord,
    version_ids: &[i64],
    tiles: &[String],
) -> rusqlite::Result<ExportRecord> {
    record.completed = now();
    record.versions = version_ids.len() as u64;
    record.tiles = tiles.len() as u64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO exports (source, sequence, bundle_id, full, created, completed, files, bytes, path)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        (
            &record.source,
            record.sequence,
            &record.bundle_id,
            record.full,
            &record.created,
            &record.completed,
            record.files,
            record.bytes,
            &record.path,
        ),
    )?;
    let id = tx.last_insert_rowid();
    {
        let mut v = tx.prepare_cached(
            "INSERT INTO export_versions (export_id, version_id) VALUES (?1, ?2)",
        )?;
        for version_id in version_ids {
            v.execute((id, version_id))?;
        }
        let mut t =
            tx.prepare_cached("INSERT INTO export_tiles (export_id, tile) VALUES (?1, ?2)")?;
        for tile in tiles {
            t.execute((id, tile))?;
        }
    }
    tx.commit()?;
    Ok(record)
}

/// The newest `limit` exports, newest first.
pub(crate) fn recent_exports(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<ExportRecord>> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.source, e.sequence, e.bundle_id, e.full, e.created, e.completed, e.files,
                e.bytes, e.path,
                (SELECT COUNT(*) FROM export_versions v WHERE v.export_id = e.id),
                (SELECT COUNT(*) FROM export_tiles t WHERE t.export_id = e.id)
         FROM exports e ORDER BY e.id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map([limit as i64], |r| {
        Ok(ExportRecord {
            source: r.get(0)?,
            sequence: r.get(1)?,
            bundle_id: r.get(2)?,
            full: r.get(3)?,
            created: r.get(4)?,
            completed: r.get(5)?,
            files: r.get(6)?,
            bytes: r.get(7)?,
            path: r.get(8)?,
            versions: r.get(9)?,
            tiles: r.get(10)?,
        })
    })?;
    rows.collect()
}
