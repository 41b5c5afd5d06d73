//! What the checksum database told us: verified tree heads (the newest is
//! what every later head must extend) and each version's record id (what
//! the offline copy's tiles must prove). See `migrations/0003_sumdb.sql`.

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};

use super::{mod_ver, now, StateError, Store};
use crate::module::ModVer;

/// A verified signed tree head as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredHead {
    pub size: i64,
    /// Base64, as in the note.
    pub hash: String,
    /// The signed note as the database served it.
    pub note: Vec<u8>,
    pub pinned: bool,
}

/// A published version's record in the checksum database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordRow {
    pub mv: ModVer,
    pub h1_zip: String,
    pub h1_mod: String,
    /// `None`: published without a record (a private module, or published
    /// before verification was on).
    pub record_id: Option<i64>,
}

/// A version's record id in a checksum database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordId {
    pub mv: ModVer,
    pub id: i64,
}

impl Store {
    /// The largest verified tree head of checksum database `db`.
    pub async fn newest_sumdb_head(&self, db: &str) -> Result<Option<StoredHead>, StateError> {
        let db = db.to_owned();
        self.call_as("newest sumdb head", move |c| newest_head(c, &db))
            .await
    }

    /// The heads the offline copy was published with, smallest first.
    pub async fn pinned_sumdb_heads(&self, db: &str) -> Result<Vec<StoredHead>, StateError> {
        let db = db.to_owned();
        self.call_as("pinned sumdb heads", move |c| pinned_heads(c, &db))
            .await
    }

    /// Stores a verified head of `db`. `false`: a head of that size with
    /// another hash is already stored (the caller should have seen the fork).
    pub async fn save_sumdb_head(&self, db: &str, head: StoredHead) -> Result<bool, StateError> {
        let db = db.to_owned();
        self.call_as("save sumdb head", move |c| save_head(c, &db, &head))
            .await
    }

    /// Record ids of every published version of `db`, ascending.
    pub async fn published_sumdb_ids(&self, db: &str) -> Result<Vec<i64>, StateError> {
        let db = db.to_owned();
        self.call_as("published sumdb ids", move |c| published_record_ids(c, &db))
            .await
    }

    /// Every published version with its hashes and `db` record id.
    pub async fn published_records(&self, db: &str) -> Result<Vec<RecordRow>, StateError> {
        let db = db.to_owned();
        self.call_as("published records", move |c| {
            published_records(c, &db, false)
        })
        .await
    }

    /// Published versions `db` has no record id for (private ones, and
    /// those published while verification was off).
    pub async fn published_without_record(&self, db: &str) -> Result<Vec<RecordRow>, StateError> {
        let db = db.to_owned();
        self.call_as("published without record", move |c| {
            published_records(c, &db, true)
        })
        .await
    }
}

pub(crate) fn newest_head(conn: &Connection, db: &str) -> rusqlite::Result<Option<StoredHead>> {
    conn.prepare_cached(
        "SELECT size, hash, note, pinned FROM sumdb_heads WHERE db_name = ?1
         ORDER BY size DESC LIMIT 1",
    )?
    .query_row([db], head_row)
    .optional()
}

pub(crate) fn pinned_heads(conn: &Connection, db: &str) -> rusqlite::Result<Vec<StoredHead>> {
    conn.prepare_cached(
        "SELECT size, hash, note, pinned FROM sumdb_heads WHERE db_name = ?1 AND pinned = 1
         ORDER BY size",
    )?
    .query_map([db], head_row)?
    .collect()
}

fn head_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<StoredHead> {
    Ok(StoredHead {
        size: r.get(0)?,
        hash: r.get(1)?,
        note: r.get(2)?,
        pinned: r.get(3)?,
    })
}

/// Stores a verified head; `pinned` marks it (never unmarks it). A head of
/// the same size is stored once: the caller has already refused one with
/// another hash (a fork), and the `WHERE` keeps a mismatch from passing
/// silently if it did not.
pub(crate) fn save_head(
    conn: &mut Connection,
    db: &str,
    head: &StoredHead,
) -> rusqlite::Result<bool> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let existing: Option<String> = tx
        .prepare_cached("SELECT hash FROM sumdb_heads WHERE db_name = ?1 AND size = ?2")?
        .query_row((db, head.size), |r| r.get(0))
        .optional()?;
    let saved = match existing {
        Some(hash) if hash != head.hash => false,
        Some(_) => {
            if head.pinned {
                tx.execute(
                    "UPDATE sumdb_heads SET pinned = 1 WHERE db_name = ?1 AND size = ?2",
                    (db, head.size),
                )?;
            }
            true
        }
        None => {
            tx.execute(
                "INSERT INTO sumdb_heads (db_name, size, hash, note, seen_at, pinned)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                (db, head.size, &head.hash, &head.note, now(), head.pinned),
            )?;
            true
        }
    };
    tx.commit()?;
    Ok(saved)
}

/// Records the record ids in `db` of versions that are known (pending or
/// published), inside the caller's transaction; returns how many were.
pub(super) fn write_ids(
    tx: &Transaction<'_>,
    db: &str,
    records: &[RecordId],
) -> rusqlite::Result<usize> {
    let mut written = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO sumdb_records (version_id, db_name, record_id)
             SELECT v.id, ?1, ?4 FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = ?2 AND v.version = ?3
             ON CONFLICT (version_id, db_name) DO UPDATE SET record_id = excluded.record_id",
        )?;
        for r in records {
            written += insert.execute((db, r.mv.path.as_str(), r.mv.version.as_str(), r.id))?;
        }
    }
    Ok(written)
}

/// Record ids of every published version that has one.
pub(crate) fn published_record_ids(conn: &Connection, db: &str) -> rusqlite::Result<Vec<i64>> {
    conn.prepare_cached(
        "SELECT r.record_id FROM sumdb_records r JOIN versions v ON v.id = r.version_id
         WHERE r.db_name = ?1 AND v.status = 'published' ORDER BY r.record_id",
    )?
    .query_map([db], |r| r.get(0))?
    .collect()
}

/// Every published version with its hashes and record id, if any; only
/// those without a record if `missing_only`.
pub(crate) fn published_records(
    conn: &mut Connection,
    db: &str,
    missing_only: bool,
) -> rusqlite::Result<Vec<RecordRow>> {
    let tx = conn.transaction()?;
    let rows = tx
        .prepare_cached(
            "SELECT m.path, v.version, v.h1_zip, v.h1_mod, r.record_id
             FROM versions v JOIN modules m ON m.id = v.module_id
             LEFT JOIN sumdb_records r ON r.version_id = v.id AND r.db_name = ?1
             WHERE v.status = 'published' AND (?2 = 0 OR r.record_id IS NULL)
             ORDER BY m.path, v.version",
        )?
        .query_map((db, missing_only), |r| {
            let (path, version): (String, String) = (r.get(0)?, r.get(1)?);
            let Some(mv) = mod_ver(&path, &version) else {
                return Ok(None);
            };
            Ok(Some(RecordRow {
                mv,
                h1_zip: r.get(2)?,
                h1_mod: r.get(3)?,
                record_id: r.get(4)?,
            }))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    tx.commit()?;
    Ok(rows.into_iter().flatten().collect())
}

#[cfg(test)]
mod tests {

    /// Records the record ids of versions that already have a row
    /// (mark_pending made it), in one transaction.
    fn record_ids(
        conn: &mut Connection,
        db: &str,
        records: &[RecordId],
    ) -> rusqlite::Result<usize> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let written = write_ids(&tx, db, records)?;
        tx.commit()?;
        Ok(written)
    }

    use super::*;
    use crate::state::tests::{migrated, mv, outcome, published_info};
    use crate::state::{versions, OutcomeKind};

    fn head(size: i64, hash: &str, pinned: bool) -> StoredHead {
        StoredHead {
            size,
            hash: hash.into(),
            note: format!("note {size}").into_bytes(),
            pinned,
        }
    }

    #[test]
    fn newest_head_is_the_largest_and_a_same_size_other_hash_is_refused() {
        let mut c = migrated();
        assert_eq!(newest_head(&c, "db").unwrap(), None);
        assert!(save_head(&mut c, "db", &head(10, "a", false)).unwrap());
        assert!(save_head(&mut c, "db", &head(30, "c", true)).unwrap());
        assert!(save_head(&mut c, "db", &head(20, "b", false)).unwrap());
        assert_eq!(newest_head(&c, "db").unwrap().unwrap().size, 30);
        assert!(!save_head(&mut c, "db", &head(20, "other", true)).unwrap());
        assert!(save_head(&mut c, "db", &head(20, "b", true)).unwrap());
        let pinned: Vec<i64> = pinned_heads(&c, "db")
            .unwrap()
            .iter()
            .map(|h| h.size)
            .collect();
        assert_eq!(pinned, [20, 30]);
        assert_eq!(newest_head(&c, "other-db").unwrap(), None);
    }

    #[test]
    fn record_ids_attach_to_versions_and_only_published_ones_count() {
        let mut c = migrated();
        let a = mv("example.com/a", "v1.0.0");
        let run = crate::state::runs::begin_run(&mut c, 1).unwrap();
        versions::mark_pending(&mut c, run, std::slice::from_ref(&a)).unwrap();
        let ids = [RecordId {
            mv: a.clone(),
            id: 7,
        }];
        assert_eq!(record_ids(&mut c, "db", &ids).unwrap(), 1);
        let unknown = [RecordId {
            mv: mv("example.com/b", "v1.0.0"),
            id: 8,
        }];
        assert_eq!(record_ids(&mut c, "db", &unknown).unwrap(), 0);
        assert!(published_record_ids(&c, "db").unwrap().is_empty());
        let published = outcome(
            "example.com/a",
            "v1.0.0",
            OutcomeKind::Published(published_info(5)),
        );
        versions::record_outcomes(&mut c, &[published]).unwrap();
        assert_eq!(published_record_ids(&c, "db").unwrap(), [7]);
        let rows = published_records(&mut c, "db", false).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!((&rows[0].mv, rows[0].record_id), (&a, Some(7)));
        assert!(published_records(&mut c, "db", true).unwrap().is_empty());
        let other = published_records(&mut c, "other", true).unwrap();
        assert_eq!(other.len(), 1);
        assert_eq!(other[0].record_id, None);
    }
}
