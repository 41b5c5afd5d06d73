//! What each air-gap export held (`migrations/0005_exports.sql`), so that
//! the next incremental export holds exactly what was published since.

use std::collections::HashSet;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::{mod_ver, now, StateError, Store};
use crate::module::ModVer;

/// How many exports `status` lists.
pub const STATUS_EXPORTS: usize = 10;

/// A row of `versions`, as an export records which versions it held. Only
/// state makes one (in an [`ExportCandidate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct VersionId(i64);

/// A published version an export may hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportCandidate {
    /// Recorded with the export.
    pub version_id: VersionId,
    pub mv: ModVer,
    pub h1_mod: String,
    pub info_size: u64,
    pub mod_size: u64,
    /// `None` for a version published for its go.mod only.
    pub zip: Option<super::ZipInfo>,
}

/// A version an export holds, and whether it held its zip (a version
/// exported for its go.mod only is exported again once its zip is published).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExportedVersion {
    pub id: VersionId,
    pub with_zip: bool,
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

impl Store {
    /// The newest completed export of `source`.
    pub async fn previous_export(
        &self,
        source: &str,
    ) -> Result<Option<PreviousExport>, StateError> {
        let source = source.to_owned();
        self.call_as("previous export", move |c| previous_export(c, &source))
            .await
    }

    /// Published versions to export, by path and version: all if `full`,
    /// else those no completed export of `source` held.
    pub async fn export_candidates(
        &self,
        source: &str,
        full: bool,
    ) -> Result<Vec<ExportCandidate>, StateError> {
        let source = source.to_owned();
        self.call_as("export candidates", move |c| {
            export_candidates(c, &source, full)
        })
        .await
    }

    /// Tiles (tree-relative) some completed export of `source` held.
    pub async fn exported_tiles(&self, source: &str) -> Result<HashSet<String>, StateError> {
        let source = source.to_owned();
        self.call_as("exported tiles", move |c| exported_tiles(c, &source))
            .await
    }

    /// Records an export whose bundle is written but not yet visible, as
    /// pending, with its versions and tiles, in one transaction. Returns the
    /// record as stored; [`Store::complete_export`] completes it.
    pub async fn record_export(
        &self,
        record: ExportRecord,
        versions: Vec<ExportedVersion>,
        tiles: Vec<String>,
    ) -> Result<ExportRecord, StateError> {
        self.call_as("record export", move |c| {
            record_export(c, record, &versions, &tiles)
        })
        .await
    }

    /// Marks the pending export `bundle_id` completed: its bundle is
    /// visible.
    pub async fn complete_export(&self, bundle_id: &str) -> Result<(), StateError> {
        let id = bundle_id.to_owned();
        self.call_as("complete export", move |c| complete_export(c, &id))
            .await
    }

    /// Pending exports of `source`: written, perhaps made visible, never
    /// completed (the export was killed).
    pub async fn pending_exports(&self, source: &str) -> Result<Vec<ExportRecord>, StateError> {
        let source = source.to_owned();
        self.call_as("pending exports", move |c| pending_exports(c, &source))
            .await
    }

    /// Forgets a pending export whose bundle never became visible.
    pub async fn drop_pending_export(&self, bundle_id: &str) -> Result<(), StateError> {
        let id = bundle_id.to_owned();
        self.call_as("drop pending export", move |c| drop_pending_export(c, &id))
            .await
    }
}

pub(crate) fn complete_export(conn: &Connection, bundle_id: &str) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE exports SET pending = 0, completed = ?2 WHERE bundle_id = ?1 AND pending = 1",
        (bundle_id, now()),
    )?;
    Ok(())
}

pub(crate) fn pending_exports(
    conn: &Connection,
    source: &str,
) -> rusqlite::Result<Vec<ExportRecord>> {
    select_exports(
        conn,
        "WHERE e.pending = 1 AND e.source = ?1 ORDER BY e.id",
        source,
    )
}

pub(crate) fn drop_pending_export(conn: &mut Connection, bundle_id: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let id: Option<i64> = tx
        .query_row(
            "SELECT id FROM exports WHERE bundle_id = ?1 AND pending = 1",
            [bundle_id],
            |r| r.get(0),
        )
        .optional()?;
    if let Some(id) = id {
        tx.execute("DELETE FROM export_versions WHERE export_id = ?1", [id])?;
        tx.execute("DELETE FROM export_tiles WHERE export_id = ?1", [id])?;
        tx.execute("DELETE FROM exports WHERE id = ?1", [id])?;
    }
    tx.commit()
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
         WHERE v.status IN ('published', 'mod_only')
           AND (?2 OR NOT EXISTS (
               SELECT 1 FROM export_versions ev JOIN exports e ON e.id = ev.export_id
               WHERE ev.version_id = v.id AND e.source = ?1
                 AND (ev.with_zip = 1 OR v.status = 'mod_only')))
         ORDER BY m.path, v.version",
    )?;
    let rows = stmt.query_map((source, full), |r| {
        let (path, version): (String, String) = (r.get(1)?, r.get(2)?);
        let Some(mv) = mod_ver(&path, &version) else {
            return Ok(None);
        };
        let zip = match (r.get(3)?, r.get(5)?, r.get(8)?) {
            (Some(h1), Some(sha256), Some(size)) => Some(super::ZipInfo { size, h1, sha256 }),
            _ => None,
        };
        Ok(Some(ExportCandidate {
            version_id: VersionId(r.get(0)?),
            mv,
            h1_mod: r.get(4)?,
            info_size: r.get(6)?,
            mod_size: r.get(7)?,
            zip,
        }))
    })?;
    Ok(rows
        .collect::<rusqlite::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .collect())
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

/// Records a pending export with its versions and tiles, in one
/// transaction. Returns the record as stored.
pub(crate) fn record_export(
    conn: &mut Connection,
    mut record: ExportRecord,
    version_ids: &[ExportedVersion],
    tiles: &[String],
) -> rusqlite::Result<ExportRecord> {
    record.completed = String::new();
    record.versions = version_ids.len() as u64;
    record.tiles = tiles.len() as u64;
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute(
        "INSERT INTO exports (source, sequence, bundle_id, full, created, completed, files, bytes,
                              path, pending)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, 1)",
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
            "INSERT INTO export_versions (export_id, version_id, with_zip) VALUES (?1, ?2, ?3)",
        )?;
        for version in version_ids {
            v.execute((id, version.id.0, version.with_zip))?;
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

/// The newest `limit` completed exports, newest first.
pub(crate) fn recent_exports(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<ExportRecord>> {
    let limit = limit.to_string();
    select_exports(
        conn,
        "WHERE e.pending = 0 ORDER BY e.id DESC LIMIT CAST(?1 AS INTEGER)",
        &limit,
    )
}

/// Exports rows, `filter` with one parameter `?1`.
fn select_exports(
    conn: &Connection,
    filter: &str,
    param: &str,
) -> rusqlite::Result<Vec<ExportRecord>> {
    let mut stmt = conn.prepare_cached(&format!(
        "SELECT e.source, e.sequence, e.bundle_id, e.full, e.created, e.completed, e.files,
                e.bytes, e.path,
                (SELECT COUNT(*) FROM export_versions v WHERE v.export_id = e.id),
                (SELECT COUNT(*) FROM export_tiles t WHERE t.export_id = e.id)
         FROM exports e {filter}"
    ))?;
    let rows = stmt.query_map([param], |r| {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{migrated, mv, outcome, published_info};
    use crate::state::versions::record_outcomes;
    use crate::state::OutcomeKind;

    fn record(sequence: u64) -> ExportRecord {
        ExportRecord {
            source: "src".into(),
            sequence,
            bundle_id: format!("b{sequence}"),
            full: false,
            created: "2026-01-01T00:00:00Z".into(),
            completed: String::new(),
            files: 3,
            bytes: 10,
            path: "/media/b".into(),
            versions: 0,
            tiles: 0,
        }
    }

    fn mvs(candidates: &[ExportCandidate]) -> Vec<ModVer> {
        candidates.iter().map(|c| c.mv.clone()).collect()
    }

    fn exported(c: &ExportCandidate) -> ExportedVersion {
        ExportedVersion {
            id: c.version_id,
            with_zip: c.zip.is_some(),
        }
    }

    // See: #12: a version published for its go.mod only is exported without a zip,
    // and again, with it, once its zip is published.
    #[test]
    fn go_mod_only_versions_are_exported_and_again_with_their_zip() {
        let mut c = migrated();
        let mut go_mod_only = published_info(0);
        go_mod_only.zip = None;
        let kind = |p: &crate::state::PublishedInfo| OutcomeKind::Published(p.clone());
        record_outcomes(
            &mut c,
            &[outcome("a.example/m", "v1.0.0", kind(&go_mod_only))],
        )
        .unwrap();
        let first = export_candidates(&c, "src", false).unwrap();
        assert_eq!(first.len(), 1);
        assert!(first[0].zip.is_none());
        let ids: Vec<ExportedVersion> = first.iter().map(exported).collect();
        record_export(&mut c, record(1), &ids, &[]).unwrap();
        complete_export(&c, "b1").unwrap();
        assert_eq!(export_candidates(&c, "src", false).unwrap().len(), 0);
        record_outcomes(
            &mut c,
            &[outcome("a.example/m", "v1.0.0", kind(&published_info(5)))],
        )
        .unwrap();
        let again = export_candidates(&c, "src", false).unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].zip.as_ref().map(|z| z.size), Some(5));
    }

    #[test]
    fn an_incremental_export_holds_what_was_published_since() {
        let mut c = migrated();
        let published = |v| outcome("a.example/m", v, OutcomeKind::Published(published_info(1)));
        record_outcomes(&mut c, &[published("v1.0.0"), published("v1.1.0")]).unwrap();
        let first = export_candidates(&c, "src", false).unwrap();
        let want = [mv("a.example/m", "v1.0.0"), mv("a.example/m", "v1.1.0")];
        assert_eq!(mvs(&first), want);
        let ids: Vec<ExportedVersion> = first.iter().map(exported).collect();
        let stored = record_export(&mut c, record(1), &ids, &["tile/8/0/000".into()]).unwrap();
        assert_eq!((stored.versions, stored.tiles), (2, 1));
        assert_eq!(
            pending_exports(&c, "src").unwrap(),
            std::slice::from_ref(&stored)
        );
        assert_eq!(recent_exports(&c, 10).unwrap(), [], "pending is not listed");
        complete_export(&c, "b1").unwrap();
        assert_eq!(pending_exports(&c, "src").unwrap(), []);
        let stored = recent_exports(&c, 10).unwrap().remove(0);
        assert!(!stored.completed.is_empty());

        record_outcomes(&mut c, &[published("v1.2.0"), published("v1.3.0")]).unwrap();
        // A row Go's rules refuse (a hand edit) is left out, not an error.
        c.execute(
            "UPDATE versions SET version = 'v1.3' WHERE version = 'v1.3.0'",
            [],
        )
        .unwrap();
        let next = export_candidates(&c, "src", false).unwrap();
        assert_eq!(mvs(&next), [mv("a.example/m", "v1.2.0")]);
        assert_eq!(export_candidates(&c, "src", true).unwrap().len(), 3);
        assert_eq!(export_candidates(&c, "other", false).unwrap().len(), 3);
        assert_eq!(
            previous_export(&c, "src").unwrap(),
            Some(PreviousExport {
                sequence: 1,
                bundle_id: "b1".into()
            })
        );
        assert_eq!(previous_export(&c, "other").unwrap(), None);
        assert_eq!(
            exported_tiles(&c, "src").unwrap(),
            HashSet::from(["tile/8/0/000".to_string()])
        );
        assert_eq!(recent_exports(&c, 10).unwrap(), [stored]);
    }
}
