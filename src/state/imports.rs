//! Bundles an offline mirror applied (`migrations/0006_imports.sql`).

use rusqlite::{Connection, OptionalExtension};
use serde::Serialize;

use super::{now, StateError, Store};

/// One applied bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportRecord {
    pub source: String,
    pub sequence: u64,
    pub bundle_id: String,
    pub full: bool,
    pub signer: String,
    pub versions: u64,
    pub files: u64,
    pub bytes: u64,
    /// Set by the state when recorded.
    pub imported_at: String,
}

/// Where a bundle would go in the chain of applied ones.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImportChain {
    /// The newest applied bundle: the chain continues from it.
    pub last: Option<ImportRecord>,
    /// The bundle already applied as the asked-for source's sequence.
    pub same_sequence: Option<ImportRecord>,
}

impl Store {
    /// The newest applied bundle, and the one applied as `source`'s
    /// `sequence` (if any), read together.
    pub async fn import_chain(
        &self,
        source: &str,
        sequence: u64,
    ) -> Result<ImportChain, StateError> {
        let source = source.to_owned();
        self.call_as("import chain", move |c| {
            Ok(ImportChain {
                last: last_import(c)?,
                same_sequence: import_of(c, &source, sequence)?,
            })
        })
        .await
    }

    /// Records an applied bundle (after all of it is published).
    pub async fn record_import(&self, record: ImportRecord) -> Result<(), StateError> {
        self.call_as("record import", move |c| record_import(c, &record))
            .await
    }
}

const COLUMNS: &str =
    "source, sequence, bundle_id, full, signer, versions, files, bytes, imported_at";

fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ImportRecord> {
    Ok(ImportRecord {
        source: r.get(0)?,
        sequence: r.get(1)?,
        bundle_id: r.get(2)?,
        full: r.get(3)?,
        signer: r.get(4)?,
        versions: r.get(5)?,
        files: r.get(6)?,
        bytes: r.get(7)?,
        imported_at: r.get(8)?,
    })
}

/// The newest applied bundle: where the chain continues.
pub(crate) fn last_import(conn: &Connection) -> rusqlite::Result<Option<ImportRecord>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM imports ORDER BY id DESC LIMIT 1"),
        [],
        row,
    )
    .optional()
}

/// The bundle applied as `source`'s `sequence`, if any.
pub(crate) fn import_of(
    conn: &Connection,
    source: &str,
    sequence: u64,
) -> rusqlite::Result<Option<ImportRecord>> {
    conn.query_row(
        &format!("SELECT {COLUMNS} FROM imports WHERE source = ?1 AND sequence = ?2"),
        (source, sequence),
        row,
    )
    .optional()
}

pub(crate) fn record_import(conn: &Connection, r: &ImportRecord) -> rusqlite::Result<()> {
    conn.execute(
        &format!("INSERT INTO imports ({COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"),
        rusqlite::params![
            r.source,
            r.sequence,
            r.bundle_id,
            r.full,
            r.signer,
            r.versions,
            r.files,
            r.bytes,
            now()
        ],
    )?;
    Ok(())
}

/// The most recent `limit` imports, newest first.
pub(crate) fn recent_imports(
    conn: &Connection,
    limit: usize,
) -> rusqlite::Result<Vec<ImportRecord>> {
    let mut stmt = conn.prepare(&format!(
        "SELECT {COLUMNS} FROM imports ORDER BY id DESC LIMIT ?1"
    ))?;
    let rows = stmt.query_map([limit as i64], row)?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::migrated;

    fn record(source: &str, sequence: u64, id: &str) -> ImportRecord {
        ImportRecord {
            source: source.into(),
            sequence,
            bundle_id: id.into(),
            full: false,
            signer: "k+00000000".into(),
            versions: 1,
            files: 3,
            bytes: 10,
            imported_at: String::new(),
        }
    }

    #[test]
    fn the_newest_import_is_where_the_chain_continues() {
        let c = migrated();
        assert_eq!(last_import(&c).unwrap(), None);
        record_import(&c, &record("m", 1, "a")).unwrap();
        record_import(&c, &record("m", 2, "b")).unwrap();
        let last = last_import(&c).unwrap().unwrap();
        assert_eq!((last.sequence, last.bundle_id.as_str()), (2, "b"));
        assert_eq!(import_of(&c, "m", 1).unwrap().unwrap().bundle_id, "a");
        assert_eq!(import_of(&c, "other", 1).unwrap(), None);
        assert!(
            record_import(&c, &record("m", 2, "c")).is_err(),
            "one bundle per sequence"
        );
        assert_eq!(recent_imports(&c, 10).unwrap().len(), 2);
    }
}
