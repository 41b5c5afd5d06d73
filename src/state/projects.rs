//! Projects as the runs saw them: each `[[project]]` (or `sync --project DIR`) closure,
//! recorded when a run ends, counted against the final version statuses.
//!
//! Input: [`ProjectSeen`] per project (its needed versions, or why it could not be read).
//! Output: [`ProjectStatus`] per project for `status` and metrics — needed, present, and
//! missing by [`MissingReason`], with the first few missing versions named
//! (migrations/0012_projects.sql).

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension};
use serde::Serialize;

use super::runs::RunId;
use super::versions::VersionStatus;
use super::{now, StateError, Store};
use crate::module::ModVer;

/// How many missing versions are named per project and run; the counts say how many.
pub const PROJECT_MISSING_KEPT: usize = 10;

/// One version a project's closure needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub mv: ModVer,
    /// Its zip is needed (it is in the build list), not only its `.info`/`.mod`.
    pub zip: bool,
    /// Its module is private (`[sumdb] private`): upstream may never serve it to us.
    pub private: bool,
}

/// A project as one run computed it.
#[derive(Debug, Clone)]
pub struct ProjectSeen {
    /// The canonical project directory: the key across runs and CI jobs.
    pub dir: String,
    /// The closure's versions, or why the project could not be read (`go.mod:3: …`).
    pub closure: Result<SeenClosure, String>,
}

/// What a readable project's closure needs.
#[derive(Debug, Clone)]
pub struct SeenClosure {
    pub go: String,
    pub toolchain: Option<String>,
    pub needs: Vec<Need>,
}

/// Why a needed version is not in the tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MissingReason {
    NotFound,
    Quarantined,
    Failed,
    /// Not found or failed, and its module is private.
    Private,
    /// Not fetched yet (or only its go.mod while the build needs its zip).
    Pending,
}

impl MissingReason {
    pub const ALL: [MissingReason; 5] = [
        MissingReason::NotFound,
        MissingReason::Quarantined,
        MissingReason::Failed,
        MissingReason::Private,
        MissingReason::Pending,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MissingReason::NotFound => "not_found",
            MissingReason::Quarantined => "quarantined",
            MissingReason::Failed => "failed",
            MissingReason::Private => "private",
            MissingReason::Pending => "pending",
        }
    }

    fn parse(s: &str) -> Option<MissingReason> {
        MissingReason::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Needed, present and missing versions of one project after one run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ProjectCounts {
    pub needed: u64,
    pub present: u64,
    pub not_found: u64,
    pub quarantined: u64,
    pub failed: u64,
    pub private: u64,
    pub pending: u64,
}

impl ProjectCounts {
    pub fn missing(&self) -> u64 {
        self.not_found + self.quarantined + self.failed + self.private + self.pending
    }

    fn add(&mut self, reason: MissingReason) {
        *match reason {
            MissingReason::NotFound => &mut self.not_found,
            MissingReason::Quarantined => &mut self.quarantined,
            MissingReason::Failed => &mut self.failed,
            MissingReason::Private => &mut self.private,
            MissingReason::Pending => &mut self.pending,
        } += 1;
    }
}

/// A needed version the tree lacks, and why (the version's last error, if any).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingVersion {
    pub path: String,
    pub version: String,
    pub reason: MissingReason,
    pub detail: Option<String>,
}

/// A project as its last run left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectStatus {
    pub dir: String,
    pub last_run: RunId,
    pub seen_at: String,
    pub go: Option<String>,
    pub toolchain: Option<String>,
    /// Why the project could not be read; the counts are then empty.
    pub error: Option<String>,
    pub counts: ProjectCounts,
    /// The first [`PROJECT_MISSING_KEPT`] missing versions.
    pub missing: Vec<MissingVersion>,
}

impl Store {
    /// Records what `run` saw of `projects`, counted against the versions' statuses now,
    /// in one transaction, and returns each project's status. With `forget_others` (a
    /// full sync, which reads every configured project), projects not among them are
    /// forgotten, so the rows stay bounded by the config.
    pub async fn record_projects(
        &self,
        run: RunId,
        projects: Vec<ProjectSeen>,
        forget_others: bool,
    ) -> Result<Vec<ProjectStatus>, StateError> {
        self.call_as("record projects", move |c| {
            record_projects(c, run, &projects, forget_others)
        })
        .await
    }

    /// Every known project as its last run left it, by directory.
    pub async fn projects(&self) -> Result<Vec<ProjectStatus>, StateError> {
        self.call_as("projects", |c| projects(c)).await
    }
}

fn record_projects(
    conn: &mut Connection,
    run: RunId,
    seen: &[ProjectSeen],
    forget_others: bool,
) -> rusqlite::Result<Vec<ProjectStatus>> {
    let tx = conn.transaction()?;
    let at = now();
    if forget_others {
        tx.execute(
            "CREATE TEMP TABLE IF NOT EXISTS seen_dirs (dir TEXT PRIMARY KEY)",
            [],
        )?;
        tx.execute("DELETE FROM temp.seen_dirs", [])?;
        for p in seen {
            tx.execute("INSERT OR IGNORE INTO temp.seen_dirs VALUES (?1)", [&p.dir])?;
        }
        tx.execute(
            "DELETE FROM projects WHERE dir NOT IN (SELECT dir FROM temp.seen_dirs)",
            [],
        )?;
    }
    for p in seen {
        let (go, toolchain, error) = match &p.closure {
            Ok(c) => (Some(c.go.as_str()), c.toolchain.as_deref(), None),
            Err(e) => (None, None, Some(e.as_str())),
        };
        tx.execute(
            "INSERT INTO projects (dir, last_run, seen_at, go, toolchain, error)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (dir) DO UPDATE SET last_run = ?2, seen_at = ?3, go = ?4,
                 toolchain = ?5, error = ?6",
            params![p.dir, run.0, at, go, toolchain, error],
        )?;
        let needs = p.closure.as_ref().map_or(&[][..], |c| &c.needs[..]);
        let (counts, missing) = classify(&tx, needs)?;
        tx.execute(
            "INSERT OR REPLACE INTO project_runs
             (run_id, dir, needed, present, not_found, quarantined, failed, private, pending)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
            params![
                run.0,
                p.dir,
                counts.needed,
                counts.present,
                counts.not_found,
                counts.quarantined,
                counts.failed,
                counts.private,
                counts.pending
            ],
        )?;
        for m in missing.iter().take(PROJECT_MISSING_KEPT) {
            tx.execute(
                "INSERT OR REPLACE INTO project_missing
                 (run_id, dir, path, version, reason, detail) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![run.0, p.dir, m.path, m.version, m.reason.as_str(), m.detail],
            )?;
        }
    }
    let all = projects(&tx)?;
    tx.commit()?;
    let wanted: HashMap<&str, ()> = seen.iter().map(|p| (p.dir.as_str(), ())).collect();
    Ok(all
        .into_iter()
        .filter(|p| wanted.contains_key(p.dir.as_str()))
        .collect())
}

/// Counts `needs` against the versions' statuses; the missing ones in order.
fn classify(
    conn: &Connection,
    needs: &[Need],
) -> rusqlite::Result<(ProjectCounts, Vec<MissingVersion>)> {
    let mut stmt = conn.prepare_cached(
        "SELECT v.status, v.last_error FROM versions v JOIN modules m ON m.id = v.module_id
         WHERE m.path = ?1 AND v.version = ?2",
    )?;
    let mut counts = ProjectCounts::default();
    let mut missing = Vec::new();
    for need in needs {
        counts.needed += 1;
        let row: Option<(VersionStatus, Option<String>)> = stmt
            .query_row(
                params![need.mv.path.as_str(), need.mv.version.as_str()],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let (status, detail) = row.map_or((None, None), |(s, d)| (Some(s), d));
        let reason = match status {
            Some(VersionStatus::Published) => None,
            Some(VersionStatus::ModOnly) if !need.zip => None,
            Some(VersionStatus::Quarantined) => Some(MissingReason::Quarantined),
            Some(VersionStatus::NotFound | VersionStatus::Failed) if need.private => {
                Some(MissingReason::Private)
            }
            Some(VersionStatus::NotFound) => Some(MissingReason::NotFound),
            Some(VersionStatus::Failed) => Some(MissingReason::Failed),
            // A pruned version a project needs is planned again (see: #15).
            Some(
                VersionStatus::ModOnly
                | VersionStatus::Pending
                | VersionStatus::Pruning
                | VersionStatus::Pruned,
            )
            | None => Some(MissingReason::Pending),
        };
        match reason {
            None => counts.present += 1,
            Some(reason) => {
                counts.add(reason);
                missing.push(MissingVersion {
                    path: need.mv.path.as_str().to_owned(),
                    version: need.mv.version.as_str().to_owned(),
                    reason,
                    detail: if reason == MissingReason::Pending {
                        None
                    } else {
                        detail
                    },
                });
            }
        }
    }
    Ok((counts, missing))
}

pub(crate) fn projects(conn: &Connection) -> rusqlite::Result<Vec<ProjectStatus>> {
    let mut stmt = conn.prepare(
        "SELECT p.dir, p.last_run, p.seen_at, p.go, p.toolchain, p.error,
                COALESCE(r.needed, 0), COALESCE(r.present, 0), COALESCE(r.not_found, 0),
                COALESCE(r.quarantined, 0), COALESCE(r.failed, 0), COALESCE(r.private, 0),
                COALESCE(r.pending, 0)
         FROM projects p LEFT JOIN project_runs r ON r.run_id = p.last_run AND r.dir = p.dir
         ORDER BY p.dir",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ProjectStatus {
            dir: r.get(0)?,
            last_run: RunId(r.get(1)?),
            seen_at: r.get(2)?,
            go: r.get(3)?,
            toolchain: r.get(4)?,
            error: r.get(5)?,
            counts: ProjectCounts {
                needed: r.get(6)?,
                present: r.get(7)?,
                not_found: r.get(8)?,
                quarantined: r.get(9)?,
                failed: r.get(10)?,
                private: r.get(11)?,
                pending: r.get(12)?,
            },
            missing: Vec::new(),
        })
    })?;
    let mut out = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    let mut missing = conn.prepare(
        "SELECT path, version, reason, detail FROM project_missing
         WHERE run_id = ?1 AND dir = ?2 ORDER BY path, version",
    )?;
    for p in &mut out {
        let rows = missing.query_map(params![p.last_run.0, p.dir], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, String>(2)?, r.get(3)?))
        })?;
        for row in rows {
            let (path, version, reason, detail) = row?;
            // The table is only written above, with `as_str`.
            if let Some(reason) = MissingReason::parse(&reason) {
                p.missing.push(MissingVersion {
                    path,
                    version,
                    reason,
                    detail,
                });
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::tests::{mv, outcome, published_info};
    use super::*;
    use crate::state::OutcomeKind;

    fn need(path: &str, version: &str, zip: bool, private: bool) -> Need {
        Need {
            mv: mv(path, version),
            zip,
            private,
        }
    }

    // See: #12
    #[tokio::test]
    async fn issue_12_project_counts_follow_version_statuses() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("state.db")).await.unwrap();
        let run = store.begin_run().await.unwrap();
        let all = [
            mv("example.com/a", "v1.0.0"),
            mv("example.com/b", "v1.0.0"),
            mv("example.com/c", "v1.0.0"),
            mv("corp.example/d", "v1.0.0"),
            mv("example.com/e", "v1.0.0"),
        ];
        store.mark_pending(run, &all).await.unwrap();
        store
            .record_outcomes(&[
                outcome(
                    "example.com/a",
                    "v1.0.0",
                    OutcomeKind::Published(published_info(5)),
                ),
                outcome(
                    "example.com/b",
                    "v1.0.0",
                    OutcomeKind::NotFound {
                        reason: "410 gone".into(),
                    },
                ),
                outcome(
                    "corp.example/d",
                    "v1.0.0",
                    OutcomeKind::NotFound {
                        reason: "404".into(),
                    },
                ),
            ])
            .await
            .unwrap();
        let seen = vec![
            ProjectSeen {
                dir: "/src/app".into(),
                closure: Ok(SeenClosure {
                    go: "1.21".into(),
                    toolchain: Some("go1.22.3".into()),
                    needs: vec![
                        need("example.com/a", "v1.0.0", true, false),
                        need("example.com/b", "v1.0.0", true, false),
                        need("example.com/c", "v1.0.0", false, false),
                        need("corp.example/d", "v1.0.0", true, true),
                    ],
                }),
            },
            ProjectSeen {
                dir: "/src/broken".into(),
                closure: Err("/src/broken/go.mod:3: unknown directive: bogus".into()),
            },
        ];
        let got = store.record_projects(run, seen, true).await.unwrap();
        assert_eq!(got.len(), 2);
        let app = &got[0];
        assert_eq!(
            app.counts,
            ProjectCounts {
                needed: 4,
                present: 1,
                not_found: 1,
                pending: 1,
                private: 1,
                ..ProjectCounts::default()
            }
        );
        assert_eq!(app.counts.missing(), 3);
        let reasons: Vec<_> = app
            .missing
            .iter()
            .map(|m| (m.path.as_str(), m.reason, m.detail.as_deref()))
            .collect();
        assert_eq!(
            reasons,
            vec![
                ("corp.example/d", MissingReason::Private, Some("404")),
                ("example.com/b", MissingReason::NotFound, Some("410 gone")),
                ("example.com/c", MissingReason::Pending, None),
            ]
        );
        assert_eq!(app.toolchain.as_deref(), Some("go1.22.3"));
        assert_eq!(
            got[1].error.as_deref(),
            Some("/src/broken/go.mod:3: unknown directive: bogus")
        );
        // A full sync that no longer sees /src/broken forgets it.
        let next = store.begin_run().await.unwrap();
        let only = vec![ProjectSeen {
            dir: "/src/app".into(),
            closure: Err("gone".into()),
        }];
        store.record_projects(next, only, true).await.unwrap();
        let dirs: Vec<_> = store
            .projects()
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.dir, p.last_run))
            .collect();
        assert_eq!(dirs, vec![("/src/app".to_owned(), next)]);
    }
}
