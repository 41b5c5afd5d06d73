//! What retention reads and records (see: #15; migrations/0016_retention.sql).
//!
//! Input to the policy: [`Store::retention_candidates`], every version whose
//! files are in the tree (`published`, `mod_only`) with its size, when it was
//! published and when a client last used it (the access log's `client_use`
//! and `client_misses` of issue 14).
//! A prune's steps, each one transaction: [`Store::begin_prune`] (versions →
//! `pruning`, with why), [`Store::lists_rewritten`] (when no list named them
//! any more), [`Store::finish_prune`] (→ `pruned`). [`Store::unfinished_prune`]
//! is what a killed prune left for the next to complete.
//!
//! Between the steps, a prune reads its versions back a bounded part at a
//! time ([`Store::prune_modules`], [`Store::published_lists`],
//! [`Store::prune_page`]): a prune of 100,000 versions never holds them
//! twice, and what state says is what the tree is made from.

use std::fmt::{self, Write as _};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{mod_ver, now, StateError, Store};
use crate::module::{ModVer, ModulePath, Version};

/// A version whose files are in the tree, as the policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRow {
    pub mv: ModVer,
    /// In `@v/list` (published with its zip), not published for its go.mod only.
    pub listed: bool,
    /// `.info` + `.mod` + `.zip` sizes.
    pub bytes: u64,
    pub published_at: OffsetDateTime,
    /// The newest of: a client's use of it (`client_use.last_used`), a miss
    /// of it (`client_misses.last_missed`), and its learning
    /// (`client_misses.learned_at`); `None` when the log never named it.
    pub last_use: Option<OffsetDateTime>,
}

/// One version a prune lets go, and why: the caller's own value (a
/// verdict), read where it is. [`Store::begin_prune`] takes them and hands
/// them back, so 100,000 of them are never copied into another form, nor
/// their reasons into 100,000 strings at once.
pub trait PruneItem: Send + 'static {
    fn mv(&self) -> &ModVer;
    /// Why it goes, as `prune` shows it; stored as text.
    fn reason(&self) -> impl fmt::Display + '_;
    /// `.info` + `.mod` + `.zip` sizes.
    fn bytes(&self) -> u64;
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
    /// How many of its versions are still `pruning` (their names are read
    /// a page at a time, [`Store::prune_page`]).
    pub versions: usize,
}

/// Where [`Store::prune_page`] goes on from: the last version id read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneCursor(i64);

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
    /// Returns the prune and `items`, unchanged.
    pub async fn begin_prune<T: PruneItem>(
        &self,
        items: Vec<T>,
    ) -> Result<(OpenPrune, Vec<T>), StateError> {
        self.call_as("begin prune", move |c| {
            begin_prune(c, &items).map(|open| (open, items))
        })
        .await
    }

    /// The modules with a listed version `id` still holds `pruning`: whose
    /// lists the prune rewrites. By path.
    pub async fn prune_modules(&self, id: PruneId) -> Result<Vec<ModulePath>, StateError> {
        self.call_as("prune modules", move |c| {
            let mut stmt = c.prepare(
                "SELECT DISTINCT m.path FROM pruned_versions p
                 JOIN versions v ON v.id = p.version_id JOIN modules m ON m.id = v.module_id
                 WHERE p.prune_id = ?1 AND v.status = 'pruning' AND p.was = 'published'
                 ORDER BY m.path",
            )?;
            let mut rows = stmt.query([id.0])?;
            let mut out = Vec::new();
            while let Some(r) = rows.next()? {
                out.extend(module_path(r.get_ref(0)?.as_str()?));
            }
            Ok(out)
        })
        .await
    }

    /// Each of `paths` with the versions state has published of it (none:
    /// an empty list), in `paths`' order: what its lists are made from.
    pub async fn published_lists(
        &self,
        paths: Vec<ModulePath>,
    ) -> Result<Vec<(ModulePath, Vec<Version>)>, StateError> {
        self.call_as("published lists", move |c| published_lists(c, paths))
            .await
    }

    /// Up to `limit` of `id`'s versions still `pruning`, after `from`; the
    /// cursor to go on from, `None` once none are left. In version id
    /// order: the primary key's, no sort.
    pub async fn prune_page(
        &self,
        id: PruneId,
        from: PruneCursor,
        limit: usize,
    ) -> Result<(Vec<ModVer>, Option<PruneCursor>), StateError> {
        self.call_as("prune page", move |c| {
            let mut stmt = c.prepare_cached(
                "SELECT p.version_id, m.path, v.version FROM pruned_versions p
                 JOIN versions v ON v.id = p.version_id JOIN modules m ON m.id = v.module_id
                 WHERE p.prune_id = ?1 AND p.version_id > ?2 AND v.status = 'pruning'
                 ORDER BY p.version_id LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![id.0, from.0, limit as i64])?;
            let (mut out, mut last) = (Vec::with_capacity(limit), None);
            while let Some(r) = rows.next()? {
                last = Some(PruneCursor(r.get(0)?));
                out.extend(mod_ver(r.get_ref(1)?.as_str()?, r.get_ref(2)?.as_str()?));
            }
            Ok((out, last))
        })
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

    /// Versions a killed prune left `pruning`, by path and version.
    pub async fn pruning_versions(&self) -> Result<Vec<ModVer>, StateError> {
        self.call_as("pruning versions", |c| {
            let mut stmt = c.prepare(
                "SELECT m.path, v.version FROM versions v JOIN modules m ON m.id = v.module_id
                 WHERE v.status = 'pruning' ORDER BY m.path, v.version",
            )?;
            let rows =
                stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
            let mut out = Vec::new();
            for row in rows {
                let (path, version) = row?;
                out.extend(mod_ver(&path, &version));
            }
            Ok(out)
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
    // Sized once (the status index counts): a Vec grown by doubling would
    // hold up to twice the rows' 10 MB per 100,000 versions.
    let n: i64 = tx.query_row(
        "SELECT COUNT(*) FROM versions WHERE status IN ('published', 'mod_only')",
        [],
        |r| r.get(0),
    )?;
    let mut out = Vec::with_capacity(n.max(0) as usize);
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
        // Times are parsed here, from the row's own bytes: 100,000 rows
        // would otherwise carry up to four strings each to the caller.
        let now = OffsetDateTime::now_utc();
        let time_at =
            |r: &rusqlite::Row<'_>, i: usize| -> rusqlite::Result<Option<OffsetDateTime>> {
                // One that does not parse counts as now: the version looks used and stays.
                Ok(r.get_ref(i)?
                    .as_str_or_null()?
                    .map(|t| OffsetDateTime::parse(t, &Rfc3339).unwrap_or(now)))
            };
        let mut rows = stmt.query([])?;
        while let Some(r) = rows.next()? {
            let last_use = [time_at(r, 5)?, time_at(r, 6)?, time_at(r, 7)?]
                .into_iter()
                .flatten()
                .max();
            let path = r.get_ref(0)?.as_str()?;
            let version = r.get_ref(1)?.as_str()?;
            if let Some(mv) = mod_ver(path, version) {
                out.push(RetentionRow {
                    mv,
                    listed: r.get(2)?,
                    bytes: r.get::<_, i64>(3)?.max(0) as u64,
                    published_at: time_at(r, 4)?.unwrap_or(now),
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
    let versions = pruning_count(&tx, id)?;
    drop(tx);
    Ok(Some(OpenPrune {
        id,
        lists_rewritten_at,
        versions,
    }))
}

fn pruning_count(conn: &Connection, id: PruneId) -> rusqlite::Result<usize> {
    conn.query_row(
        "SELECT COUNT(*) FROM pruned_versions p JOIN versions v ON v.id = p.version_id
         WHERE p.prune_id = ?1 AND v.status = 'pruning'",
        [id.0],
        |r| r.get::<_, i64>(0),
    )
    .map(|n| n.max(0) as usize)
}

fn published_lists(
    conn: &mut Connection,
    paths: Vec<ModulePath>,
) -> rusqlite::Result<Vec<(ModulePath, Vec<Version>)>> {
    // One snapshot for every module, as `version_statuses` reads.
    let tx = conn.transaction()?;
    let mut out = Vec::with_capacity(paths.len());
    {
        let mut stmt = tx.prepare_cached(
            "SELECT v.version FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = ?1 AND v.status = 'published'",
        )?;
        for path in paths {
            let mut versions = Vec::new();
            let mut rows = stmt.query([path.as_str()])?;
            while let Some(r) = rows.next()? {
                let v = r.get_ref(0)?.as_str()?;
                match Version::for_path(&path, v) {
                    Ok(v) => versions.push(v),
                    Err(e) => tracing::warn!("state holds a version that no longer checks: {e}"),
                }
            }
            out.push((path, versions));
        }
    }
    tx.commit()?;
    Ok(out)
}

/// A module path read back from the database; `None` (logged) as
/// [`mod_ver`] does for one that no longer passes Go's rules.
fn module_path(path: &str) -> Option<ModulePath> {
    match ModulePath::new(path) {
        Ok(p) => Some(p),
        Err(e) => {
            tracing::warn!("state holds a module path that no longer checks: {e}");
            None
        }
    }
}

fn begin_prune<T: PruneItem>(conn: &mut Connection, items: &[T]) -> rusqlite::Result<OpenPrune> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    tx.execute("INSERT INTO prunes (started_at) VALUES (?1)", [&now])?;
    let id = PruneId(tx.last_insert_rowid());
    {
        let mut take = tx.prepare_cached(
            "UPDATE versions SET status = 'pruning', updated_at = ?2 WHERE id = ?1",
        )?;
        let mut record = tx.prepare_cached(
            "INSERT INTO pruned_versions (prune_id, version_id, was, reason, bytes)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        let mut was_stmt = tx.prepare_cached(
            "SELECT v.id, v.status FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = ?1 AND v.version = ?2 AND v.status IN ('published', 'mod_only')",
        )?;
        // One buffer for every reason's text.
        let mut reason = String::new();
        for item in items {
            let mv = item.mv();
            let (path, version) = (mv.path.as_str(), mv.version.as_str());
            let Some((vid, was)) = was_stmt
                .query_row((path, version), |r| {
                    Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?))
                })
                .optional()?
            else {
                continue;
            };
            take.execute(params![vid, now])?;
            reason.clear();
            write!(reason, "{}", item.reason()).expect("writing to a String cannot fail");
            record.execute(params![id.0, vid, was, reason, item.bytes() as i64])?;
        }
    }
    let versions = pruning_count(&tx, id)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{module, mv, outcome, published_info};
    use crate::state::{OutcomeKind, VersionStatus};

    async fn store_with(versions: &[&str]) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let outcomes: Vec<_> = versions
            .iter()
            .map(|v| {
                outcome(
                    "a.example/m",
                    v,
                    OutcomeKind::Published(published_info(100)),
                )
            })
            .collect();
        store.record_outcomes(&outcomes).await.unwrap();
        (dir, store)
    }

    /// A version going for being unused, 119 bytes.
    #[derive(Debug, PartialEq, Eq)]
    struct Item(ModVer);

    impl PruneItem for Item {
        fn mv(&self) -> &ModVer {
            &self.0
        }
        fn reason(&self) -> impl fmt::Display + '_ {
            "unused"
        }
        fn bytes(&self) -> u64 {
            119
        }
    }

    async fn status_of(store: &Store, version: &str) -> VersionStatus {
        let paths = [module("a.example/m")];
        let done = store.done_set(&paths).await.unwrap();
        let published = store.published_set(&paths).await.unwrap();
        let status = store
            .call_as("status", {
                let version = version.to_owned();
                move |c| {
                    c.query_row(
                        "SELECT status FROM versions WHERE version = ?1",
                        [version],
                        |r| r.get::<_, VersionStatus>(0),
                    )
                }
            })
            .await
            .unwrap();
        // Being pruned counts as done for a plan, but is in no list.
        let m = mv("a.example/m", version);
        if status == VersionStatus::Pruning {
            assert!(done.published.contains(&m) && !published.contains(&m));
        }
        status
    }

    /// The downstream `/index` feed's versions, oldest entry first (see: #16).
    async fn feed(store: &Store) -> Vec<String> {
        let page = store
            .index_page(time::OffsetDateTime::UNIX_EPOCH, 2000)
            .await
            .unwrap();
        page.iter().map(|e| e.mv.version.to_string()).collect()
    }

    /// published → pruning → pruned → pending → published, and nothing
    /// else: a sync cannot mark a version being pruned pending, nor record
    /// it; the trigger stops any other writer. The downstream feed leaves a
    /// version out from the moment its prune begins; re-mirrored, it is
    /// there again as the newest entry. See: #15
    #[tokio::test]
    async fn issue_15_a_prune_moves_versions_through_pruning_to_pruned() {
        let (_dir, store) = store_with(&["v1.0.0", "v1.1.0"]).await;
        let item = Item(mv("a.example/m", "v1.0.0"));
        let (open, items) = store.begin_prune(vec![item]).await.unwrap();
        assert_eq!(items, [Item(mv("a.example/m", "v1.0.0"))]);
        assert_eq!(open.versions, 1);
        let m = module("a.example/m");
        let modules = store.prune_modules(open.id).await.unwrap();
        assert_eq!(modules, std::slice::from_ref(&m));
        let lists = store.published_lists(vec![m.clone()]).await.unwrap();
        assert_eq!(lists, [(m, vec![mv("a.example/m", "v1.1.0").version])]);
        let page = store.prune_page(open.id, PruneCursor::default(), 10);
        let (versions, next) = page.await.unwrap();
        assert_eq!(versions, [mv("a.example/m", "v1.0.0")]);
        let rest = store.prune_page(open.id, next.unwrap(), 10).await.unwrap();
        assert_eq!(rest, (vec![], None));
        assert_eq!(status_of(&store, "v1.0.0").await, VersionStatus::Pruning);
        assert_eq!(status_of(&store, "v1.1.0").await, VersionStatus::Published);
        assert_eq!(store.unfinished_prune().await.unwrap(), Some(open.clone()));
        assert_eq!(feed(&store).await, ["v1.1.0"]);

        let run = store.begin_run().await.unwrap();
        let v100 = [mv("a.example/m", "v1.0.0")];
        assert_eq!(store.mark_pending(run, &v100).await.unwrap(), 0);
        let again = outcome(
            "a.example/m",
            "v1.0.0",
            OutcomeKind::Published(published_info(100)),
        );
        assert_eq!(
            store
                .record_outcomes(std::slice::from_ref(&again))
                .await
                .unwrap()
                .written,
            0
        );
        let err = store
            .call_as("demote", |c| {
                c.execute(
                    "UPDATE versions SET status = 'published' WHERE version = 'v1.0.0'",
                    [],
                )
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string()
                .contains("a version being pruned is pruned first"),
            "{err}"
        );

        let at = store.lists_rewritten(open.id).await.unwrap();
        let resumed = store.unfinished_prune().await.unwrap().unwrap();
        assert_eq!(resumed.lists_rewritten_at, Some(at));
        store.finish_prune(open.id).await.unwrap();
        assert_eq!(status_of(&store, "v1.0.0").await, VersionStatus::Pruned);
        assert_eq!(store.unfinished_prune().await.unwrap(), None);
        assert_eq!(feed(&store).await, ["v1.1.0"]);
        let report = store.status().await.unwrap();
        assert_eq!((report.versions.pruned, report.versions.published), (1, 1));
        assert_eq!(report.retention.pruned_versions, 1);
        assert_eq!(report.retention.pruned_bytes, 119);
        assert!(report.retention.last_prune_at.is_some());

        // Selected again: re-mirrored normally.
        assert_eq!(store.mark_pending(run, &v100).await.unwrap(), 1);
        assert_eq!(store.record_outcomes(&[again]).await.unwrap().written, 1);
        assert_eq!(status_of(&store, "v1.0.0").await, VersionStatus::Published);
        assert_eq!(feed(&store).await, ["v1.1.0", "v1.0.0"]);
        // A published row still cannot change otherwise.
        let err = store
            .call_as("edit", |c| {
                c.execute("UPDATE versions SET zip_size = 1", [])
            })
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("published version is immutable"),
            "{err}"
        );
    }

    /// The candidates carry the newest of use, miss and learning. See: #15
    #[tokio::test]
    async fn issue_15_candidates_carry_the_last_use() {
        let (_dir, store) = store_with(&["v1.0.0", "v1.1.0", "v1.2.0"]).await;
        store
            .call_as("uses", |c| {
                c.execute_batch(
                    "INSERT INTO client_use (path, version, uses, last_used)
                         VALUES ('a.example/m', 'v1.0.0', 3, '2026-01-02T00:00:00Z');
                     INSERT INTO client_misses (path, version, kind, via, misses, first_missed,
                         last_missed, learned_at, outcome)
                         VALUES ('a.example/m', 'v1.0.0', 'version', 'proxy', 1,
                             '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z', '2026-01-03T00:00:00Z', 'published'),
                            ('a.example/m', 'v1.1.0', 'version', 'proxy', 1,
                             '2026-02-01T00:00:00Z', '2026-02-01T00:00:00Z', NULL, NULL);",
                )
            })
            .await
            .unwrap();
        let rows = store.retention_candidates().await.unwrap();
        let at = |t: &str| Some(OffsetDateTime::parse(t, &Rfc3339).unwrap());
        let uses: Vec<(&str, Option<OffsetDateTime>, u64, bool)> = rows
            .iter()
            .map(|r| (r.mv.version.as_str(), r.last_use, r.bytes, r.listed))
            .collect();
        assert_eq!(
            uses,
            [
                ("v1.0.0", at("2026-01-03T00:00:00Z"), 119, true),
                ("v1.1.0", at("2026-02-01T00:00:00Z"), 119, true),
                ("v1.2.0", None, 119, true),
            ]
        );
    }
}
