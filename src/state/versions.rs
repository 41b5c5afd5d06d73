//! Module versions and their status: what plan subtracts, what a run marks
//! `pending`, and what each fetch ended as.
//!
//! Status moves `pending` → `published` | `quarantined` | `not_found` |
//! `failed`, and anything but `published` and `quarantined` may go back to
//! `pending` when a later plan retries it. A quarantined version stays out
//! until the operator runs `gomirror retry` (`retry_failed`): upstream
//! served bytes that failed verification once, and fetching them again on
//! every run only repeats the alarm (see: #13). `published` is final: a published file never
//! changes (STYLE.md §5), so every statement here skips published rows in its
//! `WHERE`, and the `versions_published_immutable` trigger (0001_init.sql)
//! stops any other writer.
//!
//! Writers take whole batches and use one transaction per batch.

use std::collections::{HashMap, HashSet};

use rusqlite::{Connection, OptionalExtension, Transaction, TransactionBehavior};
use serde::Serialize;

use super::{mod_ver, now, RunId, StateError, Store};
use crate::module::{ModVer, ModVerError, ModulePath};

/// The `status` column of `versions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VersionStatus {
    Pending,
    Published,
    /// Published for its go.mod only: `.info` and `.mod` in the tree, no
    /// zip, not in `@v/list` (migrations/0007_go_mod_only.sql).
    ModOnly,
    Quarantined,
    NotFound,
    Failed,
    /// Being pruned (see: #15): out of every list, its files still in the
    /// tree or half deleted; only `pruned` follows
    /// (migrations/0016_retention.sql).
    Pruning,
    /// Pruned by the retention policy: its files are gone. A later plan
    /// that selects it again re-mirrors it (`pending`).
    Pruned,
}

impl VersionStatus {
    pub const ALL: [VersionStatus; 8] = [
        VersionStatus::Pending,
        VersionStatus::Published,
        VersionStatus::ModOnly,
        VersionStatus::Quarantined,
        VersionStatus::NotFound,
        VersionStatus::Failed,
        VersionStatus::Pruning,
        VersionStatus::Pruned,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            VersionStatus::Pending => "pending",
            VersionStatus::Published => "published",
            VersionStatus::ModOnly => "mod_only",
            VersionStatus::Quarantined => "quarantined",
            VersionStatus::NotFound => "not_found",
            VersionStatus::Failed => "failed",
            VersionStatus::Pruning => "pruning",
            VersionStatus::Pruned => "pruned",
        }
    }
}

impl rusqlite::types::FromSql for VersionStatus {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let s = v.as_str()?;
        VersionStatus::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| {
                rusqlite::types::FromSqlError::Other(format!("unknown version status {s:?}").into())
            })
    }
}

/// What fetching one version ended as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub mv: ModVer,
    pub kind: OutcomeKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutcomeKind {
    /// Verified and written to the tree.
    Published(PublishedInfo),
    /// Fetched but failed verification; kept out of the tree.
    Quarantined { reason: String },
    /// Upstream answered 404/410, which is permanent (PROTOCOL.md).
    NotFound { reason: String },
    /// Transient or local failure; a later run may retry.
    Failed { error: String },
}

/// What the tree now holds for a published version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedInfo {
    pub info_size: u64,
    pub mod_size: u64,
    /// `h1:` hash of go.mod.
    pub h1_mod: String,
    /// Lowercase hex sha256 of the `.info` the tree serves.
    pub info_sha256: String,
    /// Lowercase hex sha256 of the `.mod`.
    pub mod_sha256: String,
    /// The `Time` field of `.info`, as served.
    pub time: String,
    /// `None`: published for its go.mod only (status `mod_only`).
    pub zip: Option<ZipInfo>,
}

/// What the tree holds of a published version's zip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ZipInfo {
    pub size: u64,
    /// `h1:` hash of the zip (dirhash.Hash1).
    pub h1: String,
    /// Lowercase hex sha256 of the zip file.
    pub sha256: String,
}

impl PublishedInfo {
    /// Bytes the version's files take in the tree.
    pub fn bytes(&self) -> u64 {
        self.info_size + self.mod_size + self.zip.as_ref().map_or(0, |z| z.size)
    }
}

/// The result of [`Store::record_outcomes`](super::Store::record_outcomes).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Rows inserted or updated.
    pub written: usize,
    /// Versions whose outcome was ignored because they are already
    /// published. Non-empty means a caller bug: publish ran twice.
    pub already_published: Vec<ModVer>,
}

/// What state recorded of a published version's files: what `verify`
/// checks the tree against and what a restore must reproduce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedFiles {
    pub mv: ModVer,
    pub info_size: u64,
    pub mod_size: u64,
    pub h1_mod: String,
    /// `None` for a version published before gomirror recorded them
    /// (migration 0011).
    pub info_sha256: Option<String>,
    pub mod_sha256: Option<String>,
    /// The `Time` of its `.info`.
    pub time: String,
    /// `None` for a version published for its go.mod only (`mod_only`):
    /// it has no zip and is in no list.
    pub zip: Option<ZipInfo>,
}

/// The hashes gomirror verified of a version in the tree (published, or
/// published for its go.mod only): what a project's go.sum is held to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedHashes {
    pub mv: ModVer,
    pub h1_mod: String,
    /// `None` for a version published for its go.mod only.
    pub h1_zip: Option<String>,
}

/// A published row whose path and version no longer pass Go's rules. Every
/// other read skips it (see `state::mod_ver`); `gomirror verify` reports it.
#[derive(Debug)]
pub struct InvalidVersion {
    pub path: String,
    pub version: String,
    pub error: ModVerError,
}

impl Store {
    /// The published versions of `paths`: what plan subtracts.
    pub async fn published_set(&self, paths: &[ModulePath]) -> Result<HashSet<ModVer>, StateError> {
        let paths = paths.to_vec();
        self.call_as("published set", move |c| {
            let all = version_statuses(c, &paths)?;
            Ok(all
                .into_iter()
                .filter(|(_, s)| *s == VersionStatus::Published)
                .map(|(mv, _)| mv)
                .collect())
        })
        .await
    }

    /// What the tree has of `paths`' versions: published, or published for
    /// their go.mod only. What a plan with project closures subtracts.
    pub async fn done_set(&self, paths: &[ModulePath]) -> Result<crate::plan::Done, StateError> {
        let paths = paths.to_vec();
        self.call_as("done set", move |c| {
            let mut done = crate::plan::Done::default();
            for (mv, status) in version_statuses(c, &paths)? {
                match status {
                    VersionStatus::Published => done.published.insert(mv),
                    VersionStatus::ModOnly => done.go_mod_only.insert(mv),
                    // Until its prune finishes nothing may fetch it again
                    // (the prune would delete what a sync re-published);
                    // once `pruned` it is planned like any missing version.
                    VersionStatus::Pruning => done.published.insert(mv),
                    _ => false,
                };
            }
            Ok(done)
        })
        .await
    }

    /// The quarantined versions of `paths`: kept out of every plan until
    /// `gomirror retry`.
    pub async fn quarantined_set(
        &self,
        paths: &[ModulePath],
    ) -> Result<HashSet<ModVer>, StateError> {
        let paths = paths.to_vec();
        self.call_as("quarantined set", move |c| {
            let all = version_statuses(c, &paths)?;
            Ok(all
                .into_iter()
                .filter(|(_, s)| *s == VersionStatus::Quarantined)
                .map(|(mv, _)| mv)
                .collect())
        })
        .await
    }

    /// Marks `versions` `pending` for `run`, in one transaction. Published
    /// versions (and those published for their go.mod only, whose files
    /// are in the tree) and quarantined versions are left alone. Returns how
    /// many rows were marked.
    pub async fn mark_pending(&self, run: RunId, versions: &[ModVer]) -> Result<usize, StateError> {
        let versions = versions.to_vec();
        self.call_as("mark pending", move |c| mark_pending(c, run, &versions))
            .await
    }

    /// Records a batch of fetch outcomes in one transaction. Outcomes for
    /// versions already published are ignored and listed in the result.
    pub async fn record_outcomes(&self, outcomes: &[Outcome]) -> Result<Recorded, StateError> {
        let outcomes = outcomes.to_vec();
        self.call_as("record outcomes", move |c| record_outcomes(c, &outcomes))
            .await
    }

    /// A commit's last step: its outcomes and the checksum database `db`'s
    /// record ids of its versions, in one transaction, so a version is never
    /// published in state without its record id.
    pub async fn record_commit(
        &self,
        outcomes: Vec<Outcome>,
        ids: Option<(String, Vec<super::RecordId>)>,
    ) -> Result<Recorded, StateError> {
        self.call_as("record commit", move |c| {
            let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let recorded = write_outcomes(&tx, &outcomes)?;
            if let Some((db, ids)) = &ids {
                super::sumdb::write_ids(&tx, db, ids)?;
            }
            tx.commit()?;
            Ok(recorded)
        })
        .await
    }

    /// What state recorded of every published version of `paths` (of
    /// every module with `None`), by path and version; versions published
    /// for their go.mod only included, without a zip.
    pub async fn published_files(
        &self,
        paths: Option<&[ModulePath]>,
    ) -> Result<Vec<PublishedFiles>, StateError> {
        let paths = paths.map(<[ModulePath]>::to_vec);
        self.call_as("published files", move |c| {
            published_files(c, paths.as_deref())
        })
        .await
    }

    /// The verified hashes of those of `versions` that are in the tree, in
    /// the order asked; versions not in the tree are left out.
    // See: #12
    pub async fn verified_hashes(
        &self,
        versions: &[ModVer],
    ) -> Result<Vec<VerifiedHashes>, StateError> {
        let versions = versions.to_vec();
        self.call_as("verified hashes", move |c| verified_hashes(c, &versions))
            .await
    }

    /// Versions left `pending` by an interrupted run, by path and version.
    pub async fn pending_versions(&self) -> Result<Vec<ModVer>, StateError> {
        self.call_as("pending versions", |c| pending_versions(c))
            .await
    }

    /// Published rows that no longer pass Go's rules, by path and version.
    pub async fn invalid_published(&self) -> Result<Vec<InvalidVersion>, StateError> {
        self.call_as("invalid published", |c| invalid_published(c))
            .await
    }
}

pub(crate) fn mark_pending(
    conn: &mut Connection,
    run: RunId,
    items: &[ModVer],
) -> rusqlite::Result<usize> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    let mut modules = ModuleIds::default();
    let mut marked = 0;
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO versions (module_id, version, status, first_seen, updated_at, last_run_id)
             VALUES (?1, ?2, 'pending', ?3, ?3, ?4)
             ON CONFLICT (module_id, version) DO UPDATE SET
                 status = 'pending', updated_at = excluded.updated_at,
                 last_run_id = excluded.last_run_id, next_try_at = NULL
             WHERE versions.status NOT IN ('published', 'mod_only', 'quarantined', 'pruning')",
        )?;
        for mv in items {
            let module = modules.get(&tx, &mv.path, &now)?;
            marked += upsert.execute((module, mv.version.as_str(), &now, run.0))?;
        }
    }
    tx.commit()?;
    Ok(marked)
}

pub(crate) fn record_outcomes(
    conn: &mut Connection,
    outcomes: &[Outcome],
) -> rusqlite::Result<Recorded> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let recorded = write_outcomes(&tx, outcomes)?;
    tx.commit()?;
    Ok(recorded)
}

/// [`record_outcomes`] inside the caller's transaction.
pub(super) fn write_outcomes(
    tx: &Transaction<'_>,
    outcomes: &[Outcome],
) -> rusqlite::Result<Recorded> {
    let now = now();
    let mut modules = ModuleIds::default();
    let mut recorded = Recorded::default();
    let mut stamps = super::index::Stamps::default();
    {
        let mut upsert = tx.prepare_cached(
            "INSERT INTO versions (module_id, version, status, info_size, mod_size, zip_size,
                 h1_zip, h1_mod, zip_sha256, time, attempts, last_error,
                 first_seen, updated_at, published_at, info_sha256, mod_sha256)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, 1, ?11, ?12, ?12, ?13, ?14, ?15)
             ON CONFLICT (module_id, version) DO UPDATE SET
                 status = excluded.status, info_size = excluded.info_size,
                 mod_size = excluded.mod_size, zip_size = excluded.zip_size,
                 h1_zip = excluded.h1_zip, h1_mod = excluded.h1_mod,
                 zip_sha256 = excluded.zip_sha256, time = excluded.time,
                 info_sha256 = excluded.info_sha256, mod_sha256 = excluded.mod_sha256,
                 attempts = versions.attempts + 1, last_error = excluded.last_error,
                 updated_at = excluded.updated_at, published_at = excluded.published_at
             WHERE versions.status NOT IN ('published', 'pruning')
                 AND (versions.status != 'mod_only' OR excluded.status = 'published')",
        )?;
        for o in outcomes {
            let module = modules.get(tx, &o.mv.path, &now)?;
            let (status, p, last_error) = columns(&o.kind);
            let zip = p.and_then(|p| p.zip.as_ref());
            let published_at = p.map(|_| now.as_str());
            let changed = upsert.execute(rusqlite::params![
                module,
                o.mv.version.as_str(),
                status.as_str(),
                p.map(|p| p.info_size),
                p.map(|p| p.mod_size),
                zip.map(|z| z.size),
                zip.map(|z| &z.h1),
                p.map(|p| &p.h1_mod),
                zip.map(|z| &z.sha256),
                p.map(|p| &p.time),
                last_error,
                now,
                published_at,
                p.map(|p| &p.info_sha256),
                p.map(|p| &p.mod_sha256),
            ])?;
            if changed == 0 && p.is_some_and(|p| is_restore(tx, module, &o.mv, p)) {
                // A missing file of this version was restored with the
                // bytes recorded: the row stays as it is (see: #13).
                recorded.already_published.push(o.mv.clone());
            } else if changed == 0 {
                tracing::warn!(
                    mv = %o.mv,
                    status = status.as_str(),
                    "outcome for an already published version ignored"
                );
                recorded.already_published.push(o.mv.clone());
            }
            if changed > 0 && status == VersionStatus::Published {
                // Its downstream feed entry, in this same transaction (see: #16).
                super::index::append(tx, &mut stamps, module, o.mv.version.as_str())?;
            }
            recorded.written += changed;
        }
    }
    Ok(recorded)
}

/// Whether `p` describes `mv`'s published row exactly: the commit that
/// restored a missing file of it, not a second publish.
fn is_restore(tx: &Transaction<'_>, module: i64, mv: &ModVer, p: &PublishedInfo) -> bool {
    let Some(zip) = &p.zip else {
        return false;
    };
    tx.prepare_cached(
        "SELECT 1 FROM versions WHERE module_id = ?1 AND version = ?2 AND status = 'published'
             AND h1_zip = ?3 AND h1_mod = ?4 AND zip_sha256 = ?5",
    )
    .and_then(|mut s| s.exists((module, mv.version.as_str(), &zip.h1, &p.h1_mod, &zip.sha256)))
    .unwrap_or(false)
}

/// The status, published details and reason columns of an outcome.
fn columns(r: &OutcomeKind) -> (VersionStatus, Option<&PublishedInfo>, Option<&str>) {
    match r {
        OutcomeKind::Published(p) if p.zip.is_none() => (VersionStatus::ModOnly, Some(p), None),
        OutcomeKind::Published(p) => (VersionStatus::Published, Some(p), None),
        OutcomeKind::Quarantined { reason } => (VersionStatus::Quarantined, None, Some(reason)),
        OutcomeKind::NotFound { reason } => (VersionStatus::NotFound, None, Some(reason)),
        OutcomeKind::Failed { error } => (VersionStatus::Failed, None, Some(error)),
    }
}

/// Module path → `modules.id`, inserting unknown paths, memoised per batch.
#[derive(Default)]
struct ModuleIds(HashMap<String, i64>);

impl ModuleIds {
    fn get(&mut self, tx: &Transaction<'_>, path: &ModulePath, now: &str) -> rusqlite::Result<i64> {
        let path = path.as_str();
        if let Some(id) = self.0.get(path) {
            return Ok(*id);
        }
        tx.prepare_cached(
            "INSERT INTO modules (path, first_seen) VALUES (?1, ?2) ON CONFLICT (path) DO NOTHING",
        )?
        .execute((path, now))?;
        let id = tx
            .prepare_cached("SELECT id FROM modules WHERE path = ?1")?
            .query_row([path], |r| r.get(0))?;
        self.0.insert(path.to_string(), id);
        Ok(id)
    }
}

/// Version → status for every known version of `paths`, read in one
/// transaction (one consistent snapshot, one prepared statement).
pub(crate) fn version_statuses(
    conn: &mut Connection,
    paths: &[ModulePath],
) -> rusqlite::Result<HashMap<ModVer, VersionStatus>> {
    let tx = conn.transaction()?;
    let mut out = HashMap::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT v.version, v.status FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = ?1",
        )?;
        for path in paths {
            let rows = stmt.query_map([path.as_str()], |r| Ok((r.get(0)?, r.get(1)?)))?;
            for row in rows {
                let (version, status): (String, VersionStatus) = row?;
                if let Some(mv) = mod_ver(path.as_str(), &version) {
                    out.insert(mv, status);
                }
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Versions left `pending`, ordered by path and version.
pub(crate) fn pending_versions(conn: &Connection) -> rusqlite::Result<Vec<ModVer>> {
    let rows = conn
        .prepare(
            "SELECT m.path, v.version FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE v.status = 'pending' ORDER BY m.path, v.version",
        )?
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.iter().filter_map(|(p, v)| mod_ver(p, v)).collect())
}

/// [`Store::published_files`]: one statement per path, or one for all.
fn published_files(
    conn: &mut Connection,
    paths: Option<&[ModulePath]>,
) -> rusqlite::Result<Vec<PublishedFiles>> {
    const SELECT: &str = "SELECT m.path, v.version, v.info_size, v.mod_size, v.zip_size,
             v.h1_zip, v.h1_mod, v.zip_sha256, v.info_sha256, v.mod_sha256, v.time
         FROM versions v JOIN modules m ON m.id = v.module_id
         WHERE v.status IN ('published', 'mod_only')";
    let tx = conn.transaction()?;
    let mut out = Vec::new();
    {
        // Two statements, so that the per-path one uses `modules.path`'s
        // index (`?1 IS NULL OR …` would scan every row per path).
        let (mut stmt, wanted): (_, Vec<Option<&str>>) = match paths {
            Some(paths) => (
                tx.prepare_cached(&format!("{SELECT} AND m.path = ?1 ORDER BY v.version"))?,
                paths.iter().map(|p| Some(p.as_str())).collect(),
            ),
            None => (
                tx.prepare_cached(&format!(
                    "{SELECT} AND ?1 IS NULL ORDER BY m.path, v.version"
                ))?,
                vec![None],
            ),
        };
        for path in wanted {
            let rows = stmt.query_map([path], |r| {
                let (path, version): (String, String) = (r.get(0)?, r.get(1)?);
                let Some(mv) = mod_ver(&path, &version) else {
                    return Ok(None);
                };
                let zip = match (r.get(4)?, r.get(5)?, r.get(7)?) {
                    (Some(size), Some(h1), Some(sha256)) => Some(ZipInfo { size, h1, sha256 }),
                    _ => None,
                };
                Ok(Some(PublishedFiles {
                    mv,
                    info_size: r.get(2)?,
                    mod_size: r.get(3)?,
                    h1_mod: r.get(6)?,
                    info_sha256: r.get(8)?,
                    mod_sha256: r.get(9)?,
                    time: r.get(10)?,
                    zip,
                }))
            })?;
            for row in rows {
                out.extend(row?);
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// [`Store::verified_hashes`]: one indexed lookup per version, in one
/// read transaction.
fn verified_hashes(
    conn: &mut Connection,
    versions: &[ModVer],
) -> rusqlite::Result<Vec<VerifiedHashes>> {
    let tx = conn.transaction()?;
    let mut out = Vec::new();
    {
        let mut stmt = tx.prepare_cached(
            "SELECT v.h1_mod, v.h1_zip FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = ?1 AND v.version = ?2 AND v.status IN ('published', 'mod_only')",
        )?;
        for mv in versions {
            let row = stmt
                .query_row((mv.path.as_str(), mv.version.as_str()), |r| {
                    Ok((
                        r.get::<_, Option<String>>(0)?,
                        r.get::<_, Option<String>>(1)?,
                    ))
                })
                .optional()?;
            if let Some((Some(h1_mod), h1_zip)) = row {
                out.push(VerifiedHashes {
                    mv: mv.clone(),
                    h1_mod,
                    h1_zip,
                });
            }
        }
    }
    tx.commit()?;
    Ok(out)
}

/// Published rows whose path and version fail `ModVer::parse`.
fn invalid_published(conn: &Connection) -> rusqlite::Result<Vec<InvalidVersion>> {
    let mut stmt = conn.prepare(
        "SELECT m.path, v.version FROM versions v JOIN modules m ON m.id = v.module_id
         WHERE v.status = 'published' ORDER BY m.path, v.version",
    )?;
    let mut invalid = Vec::new();
    for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))? {
        let (path, version) = row?;
        if let Err(error) = ModVer::parse(&path, &version) {
            invalid.push(InvalidVersion {
                path,
                version,
                error,
            });
        }
    }
    Ok(invalid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::runs::begin_run;
    use crate::state::tests::{migrated, module, mv, outcome, published_info};

    fn status_of(conn: &mut Connection, path: &str, version: &str) -> Option<VersionStatus> {
        version_statuses(conn, &[module(path)])
            .unwrap()
            .get(&mv(path, version))
            .copied()
    }

    fn attempts(conn: &Connection, version: &str) -> i64 {
        conn.query_row(
            "SELECT attempts FROM versions WHERE version = ?1",
            [version],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn mark_pending_inserts_modules_and_versions() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        let items = [
            mv("golang.org/x/text", "v0.3.7"),
            mv("golang.org/x/text", "v0.3.8"),
            mv("rsc.io/quote", "v1.5.2"),
        ];
        assert_eq!(mark_pending(&mut conn, run, &items).unwrap(), 3);
        assert_eq!(mark_pending(&mut conn, run, &items).unwrap(), 3);
        let modules: i64 = conn
            .query_row("SELECT COUNT(*) FROM modules", [], |r| r.get(0))
            .unwrap();
        assert_eq!(modules, 2);
        assert_eq!(pending_versions(&conn).unwrap(), items.to_vec());
    }

    #[test]
    fn outcomes_set_status_and_count_attempts() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        let items = [mv("a.example/m", "v1.0.0"), mv("a.example/m", "v1.1.0")];
        mark_pending(&mut conn, run, &items).unwrap();
        let failed = OutcomeKind::Failed {
            error: "connection reset".into(),
        };
        let batch = [
            outcome(
                "a.example/m",
                "v1.0.0",
                OutcomeKind::Published(published_info(10)),
            ),
            outcome("a.example/m", "v1.1.0", failed.clone()),
            // Not marked pending first: the row is created.
            outcome(
                "b.example/m",
                "v0.1.0",
                OutcomeKind::NotFound {
                    reason: "410 Gone".into(),
                },
            ),
        ];
        let rec = record_outcomes(&mut conn, &batch).unwrap();
        assert_eq!(
            rec,
            Recorded {
                written: 3,
                already_published: vec![]
            }
        );
        assert_eq!(pending_versions(&conn).unwrap(), vec![]);
        assert_eq!(
            status_of(&mut conn, "a.example/m", "v1.1.0"),
            Some(VersionStatus::Failed)
        );
        assert_eq!(
            status_of(&mut conn, "b.example/m", "v0.1.0"),
            Some(VersionStatus::NotFound)
        );

        mark_pending(&mut conn, run, &items[1..]).unwrap();
        record_outcomes(&mut conn, &[outcome("a.example/m", "v1.1.0", failed)]).unwrap();
        assert_eq!(attempts(&conn, "v1.1.0"), 2);
    }

    #[test]
    fn published_is_never_downgraded() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        let m = "golang.org/x/text";
        record_outcomes(
            &mut conn,
            &[outcome(
                m,
                "v0.3.7",
                OutcomeKind::Published(published_info(10)),
            )],
        )
        .unwrap();

        assert_eq!(mark_pending(&mut conn, run, &[mv(m, "v0.3.7")]).unwrap(), 0);
        let again = [
            outcome(
                m,
                "v0.3.7",
                OutcomeKind::Quarantined {
                    reason: "h1 mismatch".into(),
                },
            ),
            outcome(m, "v0.3.7", OutcomeKind::Published(published_info(99))),
        ];
        let rec = record_outcomes(&mut conn, &again).unwrap();
        assert_eq!(rec.written, 0);
        assert_eq!(
            rec.already_published,
            vec![mv(m, "v0.3.7"), mv(m, "v0.3.7")]
        );
        assert_eq!(
            status_of(&mut conn, m, "v0.3.7"),
            Some(VersionStatus::Published)
        );
        assert_eq!(attempts(&conn, "v0.3.7"), 1);
        let zip_size: i64 = conn
            .query_row("SELECT zip_size FROM versions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(zip_size, 10);
    }

    #[test]
    fn trigger_stops_other_writers_from_changing_published_rows() {
        let mut conn = migrated();
        record_outcomes(
            &mut conn,
            &[outcome(
                "a.example/m",
                "v1.0.0",
                OutcomeKind::Published(published_info(1)),
            )],
        )
        .unwrap();
        let err = conn
            .execute("UPDATE versions SET status = 'failed'", [])
            .unwrap_err();
        assert!(
            err.to_string().contains("published version is immutable"),
            "{err}"
        );
        // Columns outside the published record stay writable.
        conn.execute("UPDATE versions SET last_error = 'note'", [])
            .unwrap();
    }

    // See: #12 (one status for a version published for its go.mod only).
    #[test]
    fn go_mod_only_is_kept_until_its_zip_is_published() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        let m = || mv("a.example/m", "v1.0.0");
        let status =
            |conn: &mut Connection| version_statuses(conn, &[module("a.example/m")]).unwrap()[&m()];
        let mut go_mod_only = published_info(0);
        go_mod_only.zip = None;
        let record = |conn: &mut Connection, kind| {
            record_outcomes(conn, &[outcome("a.example/m", "v1.0.0", kind)]).unwrap()
        };
        record(&mut conn, OutcomeKind::Published(go_mod_only.clone()));
        assert_eq!(status(&mut conn), VersionStatus::ModOnly);
        // Its files are in the tree: neither a retry nor a failed zip fetch demotes it.
        assert_eq!(mark_pending(&mut conn, run, &[m()]).unwrap(), 0);
        let failed = OutcomeKind::Failed {
            error: "connection reset".into(),
        };
        assert_eq!(record(&mut conn, failed).written, 0);
        assert_eq!(status(&mut conn), VersionStatus::ModOnly);
        record(&mut conn, OutcomeKind::Published(published_info(10)));
        assert_eq!(status(&mut conn), VersionStatus::Published);

        // The constraints of 0007: no zip columns for mod_only, all of them for published,
        // and no way back from mod_only but to published.
        let insert = |conn: &Connection, status: &str, zip: Option<i64>| {
            conn.execute(
                "INSERT INTO versions (module_id, version, status, info_size, mod_size, zip_size,
                     h1_zip, h1_mod, zip_sha256, time, first_seen, updated_at, published_at)
                 VALUES (1, ?1, ?2, 1, 1, ?3, ?4, 'h1:m=', ?4, 't', 't', 't', 't')",
                rusqlite::params![
                    format!("v9.{}.0", zip.unwrap_or(0)),
                    status,
                    zip,
                    zip.map(|_| "x")
                ],
            )
        };
        assert!(insert(&conn, "mod_only", Some(1)).is_err());
        assert!(insert(&conn, "published", None).is_err());
        insert(&conn, "mod_only", None).unwrap();
        let demote = conn.execute(
            "UPDATE versions SET status = 'failed' WHERE version = 'v9.0.0'",
            [],
        );
        assert!(demote.unwrap_err().to_string().contains("keeps its go.mod"));
    }

    #[test]
    fn batch_is_one_transaction() {
        let mut conn = migrated();
        // A temp trigger makes the second row fail; the whole batch,
        // including the first row, must be rolled back.
        let mut bad = published_info(1);
        bad.zip
            .as_mut()
            .expect("published_info has a zip")
            .h1
            .clear();
        conn.execute_batch(
            "CREATE TEMP TRIGGER no_bad BEFORE INSERT ON versions
             WHEN NEW.h1_zip = '' BEGIN SELECT RAISE(ABORT, 'bad row'); END",
        )
        .unwrap();
        let batch = [
            outcome(
                "a.example/m",
                "v1.0.0",
                OutcomeKind::Published(published_info(1)),
            ),
            outcome("a.example/m", "v1.1.0", OutcomeKind::Published(bad)),
        ];
        record_outcomes(&mut conn, &batch).unwrap_err();
        assert_eq!(status_of(&mut conn, "a.example/m", "v1.0.0"), None);
    }

    #[test]
    fn statuses_cover_only_requested_modules() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        mark_pending(
            &mut conn,
            run,
            &[mv("a.example/m", "v1.0.0"), mv("b.example/m", "v1.0.0")],
        )
        .unwrap();
        let got =
            version_statuses(&mut conn, &[module("a.example/m"), module("c.example/m")]).unwrap();
        assert_eq!(
            got,
            HashMap::from([(mv("a.example/m", "v1.0.0"), VersionStatus::Pending)])
        );
    }

    #[test]
    fn rows_that_no_longer_check_are_skipped_and_listed() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        let published = |v| outcome("a.example/m", v, OutcomeKind::Published(published_info(1)));
        record_outcomes(&mut conn, &[published("v1.0.0"), published("v1.2.0")]).unwrap();
        mark_pending(&mut conn, run, &[mv("b.example/m", "v0.1.0")]).unwrap();
        // What Go's rules refuse (not canonical), as a hand edit would leave it.
        conn.execute_batch(
            "UPDATE versions SET version = 'v1.2' WHERE version = 'v1.2.0';
             UPDATE versions SET version = 'v0.1' WHERE version = 'v0.1.0';",
        )
        .unwrap();
        assert_eq!(
            version_statuses(&mut conn, &[module("a.example/m")]).unwrap(),
            HashMap::from([(mv("a.example/m", "v1.0.0"), VersionStatus::Published)])
        );
        assert_eq!(pending_versions(&conn).unwrap(), vec![]);
        let invalid: Vec<_> = invalid_published(&conn)
            .unwrap()
            .into_iter()
            .map(|i| (i.path, i.version, i.error.to_string()))
            .collect();
        assert_eq!(
            invalid,
            [(
                "a.example/m".to_string(),
                "v1.2".to_string(),
                "a.example/m@v1.2: invalid version: not canonical (want v1.2.0)".to_string()
            )]
        );
    }

    /// A quarantined version stays quarantined when a later plan selects
    /// it again; only `retry` puts it back.
    // See: #13
    #[test]
    fn issue_13_mark_pending_leaves_quarantined_alone() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        let m = "example.com/q";
        let quarantined = OutcomeKind::Quarantined {
            reason: "zip: bad".into(),
        };
        record_outcomes(&mut conn, &[outcome(m, "v1.0.0", quarantined)]).unwrap();
        assert_eq!(mark_pending(&mut conn, run, &[mv(m, "v1.0.0")]).unwrap(), 0);
        assert_eq!(
            status_of(&mut conn, m, "v1.0.0"),
            Some(VersionStatus::Quarantined)
        );
        let back = crate::state::feed::retry_failed(&mut conn, None).unwrap();
        assert_eq!(back, [mv(m, "v1.0.0")]);
        assert_eq!(
            status_of(&mut conn, m, "v1.0.0"),
            Some(VersionStatus::Pending)
        );
    }

    /// The sha256 of `.info` and `.mod` are recorded with the version and
    /// read back for `verify`; once published they cannot change, while an
    /// older row's NULLs read back as `None`.
    // See: #13
    #[test]
    fn issue_13_file_sha256_are_recorded_and_immutable() {
        let mut conn = migrated();
        let m = "example.com/a";
        let published = OutcomeKind::Published(published_info(10));
        record_outcomes(&mut conn, &[outcome(m, "v1.0.0", published)]).unwrap();
        let rows = published_files(&mut conn, Some(&[module(m)])).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].info_sha256.as_deref(),
            Some("cd".repeat(32).as_str())
        );
        assert_eq!(
            rows[0].mod_sha256.as_deref(),
            Some("ef".repeat(32).as_str())
        );
        let err = conn
            .execute("UPDATE versions SET info_sha256 = 'x'", [])
            .unwrap_err();
        assert!(
            err.to_string().contains("published version is immutable"),
            "{err}"
        );

        conn.execute_batch(
            "DROP TRIGGER versions_published_sha256_immutable;
             UPDATE versions SET info_sha256 = NULL, mod_sha256 = NULL;",
        )
        .unwrap();
        let rows = published_files(&mut conn, None).unwrap();
        assert_eq!(
            (rows[0].info_sha256.clone(), rows[0].mod_sha256.clone()),
            (None, None)
        );
    }
}
