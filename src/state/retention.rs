//! What retention reads and records (see: #15; migrations/0015_retention.sql).
//!
//! Input to the policy: [`Store::retention_candidates`], every version whose
//! files are in the tree (`published`, `mod_only`) with its size, when it was
//! published and when a client last used it (the access log's `client_use`
//! and `client_misses` of issue 14).
//! A prune's steps, each one transaction: [`Store::begin_prune`] (versions →
//! `pruning`, with why), [`Store::lists_rewritten`] (when no list named them
//! any more), [`Store::finish_prune`] (→ `pruned`). [`Store::unfinished_prune`]
//! is what a killed prune left for the next to complete.

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;

use super::{mod_ver, now, StateError, Store};
use crate::module::ModVer;

/// A version whose files are in the tree, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRow {
    pub mv: ModVer,
    /// In `@v/list` (published with its zip), not published for its go.mod only.
    pub listed: bool,
    /// `.info` + `.mod` + `.zip` sizes.
    pub bytes: u64,
    /// RFC 3339, whole seconds.
    pub published_at: String,
    /// The newest of: a client's use of it (`client_use.last_used`), a miss
    /// of it (`client_misses.last_missed`), and its learning
    /// (`client_misses.learned_at`); `None` when the log never named it.
    pub last_use: Option<String>,
}

/// One version a prune lets go, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneItem {
    pub mv: ModVer,
    pub reason: String,
    pub bytes: u64,
}

/// Which prune; rows of `prunes`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct PruneId(pub i64);

/// A prune that has not finished: its versions are `pruning`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenPrune {
    pub id: PruneId,
    /// When the lists stopped naming its versions; `None`: not yet.
    pub lists_rewritten_at: Option<String>,
    /// Its versions, with what they were (`true`: listed).
    pub versions: Vec<(ModVer, bool)>,
}

/// What `status` and metrics show of retention.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RetentionStatus {
    /// Versions pruned, over every finished prune (a version pruned twice counts twice).
    pub pruned_versions: u64,
    pub pruned_bytes: u64,
    /// When the newest prune finished.
    pub last_prune_at: Option<String>,
    /// Versions a killed prune left `pruning`: the next prune completes them.
    pub pruning: u64,
}

impl Store {
    /// Every version in the tree, by path and version.
    pub async fn retention_candidates(&self) -> Result<Vec<RetentionRow>, StateError> {
        self.call_as("retention candidates", retention_candidates)
            .await
    }

    /// The prune a killed `gomirror prune` left, if any.
    pub async fn unfinished_prune(&self) -> Result<Option<OpenPrune>, StateError> {
        self.call_as("unfinished prune", unfinished_prune).await
    }

    /// Starts a prune of `items`: each that is still in the tree becomes
    /// `pruning`, recorded with its reason and bytes; one transaction.
    pub async fn begin_prune(&self, items: Vec<PruneItem>) -> Result<OpenPrune, StateError> {
        self.call_as("begin prune", move |c| begin_prune(c, &items))
            .await
    }

    /// Records that no list names `id`'s versions any more; returns the time.
    pub async fn lists_rewritten(&self, id: PruneId) -> Result<String, StateError> {
        self.call_as("record lists rewritten", move |c| {
            let at = now();
            c.execute(
                "UPDATE prunes SET lists_rewritten_at = ?2 WHERE id = ?1",
                params![id.0, at],
            )?;
            Ok(at)
        })
        .await
    }

    /// `id`'s versions are gone from the tree: `pruned`; one transaction.
    pub async fn finish_prune(&self, id: PruneId) -> Result<(), StateError> {
        self.call_as("finish prune", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let now = now();
            tx.execute(
                "UPDATE versions SET status = 'pruned', updated_at = ?2
                 WHERE status = 'pruning'
                   AND id IN (SELECT version_id FROM pruned_versions WHERE prune_id = ?1)",
                params![id.0, now],
            )?;
            tx.execute(
                "UPDATE prunes SET finished_at = ?2 WHERE id = ?1",
                params![id.0, now],
            )?;
            tx.commit()
        })
        .await
    }

    /// Pruned counts and bytes for `status` and metrics.
    pub async fn retention_status(&self) -> Result<RetentionStatus, StateError> {
        self.call_as("retention status", |c| retention_status(c))
            .await
    }
}

fn retention_candidates(conn: &mut Connection) -> rusqlite::Result<Vec<RetentionRow>> {
    let tx = conn.transaction()?;
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare(
            "SELECT m.path, v.version, v.status = 'published',
                    v.info_size + v.mod_size + COALESCE(v.zip_size, 0), v.published_at,
                    u.last_used, c.last_missed, c.learned_at
             FROM versions v JOIN modules m ON m.id = v.module_id
             LEFT JOIN client_use u ON u.path = m.path AND u.version = v.version
             LEFT JOIN client_misses c ON c.path = m.path AND c.version = v.version
             WHERE v.status IN ('published', 'mod_only')
             ORDER BY m.path, v.version",
        )?;
        let rows = stmt.query_map([], |r| {
            let uses = [
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, Option<String>>(7)?,
            ];
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, bool>(2)?,
                r.get::<_, i64>(3)?,
                r.get::<_, String>(4)?,
                // RFC 3339 UTC with whole seconds sorts as text.
                uses.into_iter().flatten().max(),
            ))
        })?;
        for row in rows {
            let (path, version, listed, bytes, published_at, last_use) = row?;
            if let Some(mv) = mod_ver(&path, &version) {
                out.push(RetentionRow {
                    mv,
                    listed,
                    bytes: bytes.max(0) as u64,
                    published_at,
                    last_use,
                });
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

fn unfinished_prune(conn: &mut Connection) -> rusqlite::Result<Option<OpenPrune>> {
    let tx = conn.transaction()?;
    let open = tx
        .query_row(
            "SELECT id, lists_rewritten_at FROM prunes WHERE finished_at IS NULL
             ORDER BY id LIMIT 1",
            [],
            |r| Ok((PruneId(r.get(0)?), r.get::<_, Option<String>>(1)?)),
        )
        .optional()?;
    let Some((id, lists_rewritten_at)) = open else {
        return Ok(None);
    };
    let versions = prune_versions(&tx, id)?;
    drop(tx);
    Ok(Some(OpenPrune {
        id,
        lists_rewritten_at,
        versions,
    }))
}

fn prune_versions(conn: &Connection, id: PruneId) -> rusqlite::Result<Vec<(ModVer, bool)>> {
    let mut stmt = conn.prepare_cached(
        "SELECT m.path, v.version, p.was = 'published'
         FROM pruned_versions p JOIN versions v ON v.id = p.version_id
         JOIN modules m ON m.id = v.module_id
         WHERE p.prune_id = ?1 AND v.status = 'pruning' ORDER BY m.path, v.version",
    )?;
    let rows = stmt.query_map([id.0], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, bool>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (path, version, listed) = row?;
        out.extend(mod_ver(&path, &version).map(|mv| (mv, listed)));
    }
    Ok(out)
}

fn begin_prune(conn: &mut Connection, items: &[PruneItem]) -> rusqlite::Result<OpenPrune> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    tx.execute("INSERT INTO prunes (started_at) VALUES (?1)", [&now])?;
    let id = PruneId(tx.last_insert_rowid());
    {
        let mut take =
            tx.prepare_cached("UPDATE versions SET status = 'pruning', updated_at = ?2 WHERE id = ?1")?;
        let mut record = tx.prepare_cached(
            "INSERT INTO pruned_versions (prune_id, version_id, was, reason, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut was_stmt = tx.prepare_cached(
            "SELECT v.id, v.status FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = ?1 AND v.version = ?2 AND v.status IN ('published', 'mod_only')",
        )?;
        for item in items {
            let (path, version) = (item.mv.path.as_str(), item.mv.version.as_str());
            let Some((vid, was)) = was_stmt
                .query_row((path, version), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?
            else {
                continue;
            };
            take.execute(params![vid, now])?;
            record.execute(params![id.0, vid, was, item.reason, item.bytes as i64])?;
        }
    }
    let versions = prune_versions(&tx, id)?;
    tx.commit()?;
    Ok(OpenPrune {
        id,
        lists_rewritten_at: None,
        versions,
    })
}

/// [`Store::retention_status`] inside the caller's read transaction.
pub(super) fn retention_status(conn: &Connection) -> rusqlite::Result<RetentionStatus> {
    let tx = conn;
    let (pruned_versions, pruned_bytes, last_prune_at) = tx.query_row(
        "SELECT COUNT(p.version_id), COALESCE(SUM(p.bytes), 0), MAX(r.finished_at)
         FROM prunes r LEFT JOIN pruned_versions p ON p.prune_id = r.id
         WHERE r.finished_at IS NOT NULL",
        [],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )?;
    let pruning = tx.query_row(
        "SELECT COUNT(*) FROM versions WHERE status = 'pruning'",
        [],
        |r| r.get(0),
    )?;
    Ok(RetentionStatus {
        pruned_versions,
        pruned_bytes,
        last_prune_at,
        pruning,
    })
}
