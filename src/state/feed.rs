//! Following the index feed: its cursor, the pending work each page plans,
//! retries of failed feed versions across runs, and the refresh times of
//! watched modules.
//!
//! The cursor never runs ahead of the work: [`record_page`] inserts a page's
//! versions as `pending` and moves the cursor in one transaction, so a crash
//! either keeps both or neither, and the next run asks for the same page.
//! A failed feed version stays `pending` with a `next_try_at` (exponential
//! backoff across runs) until it has used its attempts; then it is `failed`
//! until `gomirror retry` puts it back. Nothing here waits on it: the cursor
//! has long moved on, and other versions are unaffected.

use std::collections::HashSet;
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, TransactionBehavior};
use serde::Serialize;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{mod_ver, now, RejectedEntry, RunId, StateError, Store};
use crate::module::{match_prefix_patterns, ModVer, ModulePath};

/// Where the feed resumes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FeedCursor {
    /// The next request's `since`, RFC 3339 at full precision.
    pub since: String,
    /// Raw `(Path, Version)` of the entries seen whose Timestamp is `since`:
    /// the next page repeats them (`since` is inclusive) and they are skipped.
    /// Raw text, not [`ModVer`]: entries Go's rules refuse are seen too.
    pub seen: Vec<(String, String)>,
    /// The newest entry Timestamp seen so far, for feed lag.
    pub newest: Option<String>,
    /// The most entries the index serves per page, when it was seen to
    /// serve fewer than asked with more behind; `None`: none seen.
    pub page_cap: Option<u64>,
    /// Entries dropped, over all runs, because their Timestamp was older
    /// than the cursor (the index went backwards). Not written with the
    /// cursor: [`Store::add_feed_backwards`] counts them.
    pub backwards: u64,
}

/// One page's effect on state, written in one transaction.
#[derive(Debug, Clone, Default)]
pub struct PageRecord {
    /// Versions to mirror.
    pub planned: Vec<ModVer>,
    /// Entries refused by Go's rules.
    pub rejections: Vec<RejectedEntry>,
    /// The cursor after this page.
    pub cursor: FeedCursor,
}

/// How failed feed versions are retried across runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Runs that may try a version, the first included; then it is `failed`.
    pub max_attempts: u32,
    /// Wait after the first failure; doubles with each further one.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// Who planned a version, which decides where it is fetched from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The watchlist: fetched from `[upstream] proxies`.
    Watch,
    /// The index feed: fetched from `[feed] proxy`.
    Feed,
}

/// A `pending` version whose time has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueVersion {
    pub mv: ModVer,
    pub origin: Origin,
}

impl Store {
    /// Where the index feed resumes; `None` before the first feed run.
    pub async fn feed_cursor(&self) -> Result<Option<FeedCursor>, StateError> {
        self.call_as("feed cursor", |c| cursor(c)).await
    }

    /// Records one feed page in one transaction: its versions as `pending`
    /// feed work, its rejections, and the cursor after it. Returns the
    /// versions that were not known before.
    pub async fn record_feed_page(
        &self,
        run: RunId,
        page: PageRecord,
    ) -> Result<Vec<ModVer>, StateError> {
        self.call_as("record feed page", move |c| record_page(c, run, &page))
            .await
    }

    /// Adds `n` to the entries dropped because the index went backwards.
    pub async fn add_feed_backwards(&self, n: u64) -> Result<(), StateError> {
        self.call_as("feed backwards", move |c| {
            c.execute(
                "UPDATE feed_cursor SET backwards = backwards + ?1 WHERE id = 1",
                [i64::try_from(n).unwrap_or(i64::MAX)],
            )
            .map(drop)
        })
        .await
    }

    /// The modules among `paths` that have a published version.
    pub async fn mirrored_modules(
        &self,
        paths: &[ModulePath],
    ) -> Result<HashSet<ModulePath>, StateError> {
        let paths = paths.to_vec();
        self.call_as("mirrored modules", move |c| mirrored_modules(c, &paths))
            .await
    }

    /// `pending` versions due now: interrupted, newly planned, or whose
    /// retry time has come.
    pub async fn due_versions(&self) -> Result<Vec<DueVersion>, StateError> {
        let now = now();
        self.call_as("due versions", move |c| due_versions(c, &now))
            .await
    }

    /// Schedules the next try of feed versions that failed (see
    /// [`RetryPolicy`]); returns how many were scheduled.
    pub async fn schedule_retries(&self, policy: RetryPolicy) -> Result<usize, StateError> {
        self.call_as("schedule retries", move |c| {
            schedule_retries(c, &policy, OffsetDateTime::now_utc())
        })
        .await
    }

    /// Puts `failed` and `quarantined` versions of modules matching `pattern` (comma-separated
    /// `path.Match` globs on leading path elements, as GONOSUMDB; `None`:
    /// every module) back to `pending` with no attempts used. A row that no
    /// longer passes Go's rules stays `failed`: no run could fetch it.
    pub async fn retry_failed(&self, pattern: Option<&str>) -> Result<Vec<ModVer>, StateError> {
        let pattern = pattern.map(str::to_owned);
        self.call_as("retry failed", move |c| retry_failed(c, pattern.as_deref()))
            .await
    }

    /// The modules among `paths` whose `@v/list` was not read within `interval`.
    pub async fn listing_due(
        &self,
        paths: &[ModulePath],
        interval: Duration,
    ) -> Result<HashSet<ModulePath>, StateError> {
        let cutoff = OffsetDateTime::now_utc()
            .checked_sub(time::Duration::try_from(interval).unwrap_or(time::Duration::MAX))
            .map_or_else(|| "0000".to_string(), stamp);
        let paths = paths.to_vec();
        self.call_as("listing due", move |c| listing_due(c, &paths, &cutoff))
            .await
    }

    /// Records that `paths` were listed upstream now.
    pub async fn mark_listed(&self, paths: &[ModulePath]) -> Result<(), StateError> {
        let paths = paths.to_vec();
        self.call_as("mark listed", move |c| mark_listed(c, &paths))
            .await
    }
}

pub(crate) fn cursor(conn: &Connection) -> rusqlite::Result<Option<FeedCursor>> {
    let Some((since, newest, page_cap, backwards)) = conn
        .query_row(
            "SELECT since, newest, page_cap, backwards FROM feed_cursor WHERE id = 1",
            [],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, Option<i64>>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()?
    else {
        return Ok(None);
    };
    let seen = conn
        .prepare("SELECT path, version FROM feed_seen ORDER BY path, version")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(Some(FeedCursor {
        since,
        seen,
        newest,
        page_cap: page_cap.and_then(|n| u64::try_from(n).ok()),
        backwards: u64::try_from(backwards).unwrap_or(0),
    }))
}

/// Inserts the page's versions as `pending` feed work (a version state
/// already knows keeps its row), records its rejections and moves the
/// cursor, all in one transaction. Returns the versions newly made pending.
pub(crate) fn record_page(
    conn: &mut Connection,
    run: RunId,
    page: &PageRecord,
) -> rusqlite::Result<Vec<ModVer>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let now = now();
    let mut added = Vec::new();
    {
        let mut module = tx.prepare_cached(
            "INSERT INTO modules (path, first_seen) VALUES (?1, ?2)
             ON CONFLICT (path) DO UPDATE SET path = path RETURNING id",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO versions (module_id, version, status, origin, first_seen, updated_at, last_run_id)
             VALUES (?1, ?2, 'pending', 'feed', ?3, ?3, ?4)
             ON CONFLICT (module_id, version) DO NOTHING",
        )?;
        for mv in &page.planned {
            let id: i64 = module.query_row((mv.path.as_str(), &now), |r| r.get(0))?;
            if insert.execute((id, mv.version.as_str(), &now, run.0))? == 1 {
                added.push(mv.clone());
            }
        }
        let mut reject = tx.prepare_cached(
            "INSERT INTO rejections (run_id, module, entry, reason, seen_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        )?;
        for r in &page.rejections {
            reject.execute(rusqlite::params![run.0, r.module, r.entry, r.reason, now])?;
        }
    }
    write_cursor(&tx, &page.cursor, &now)?;
    tx.commit()?;
    Ok(added)
}

fn write_cursor(tx: &Connection, c: &FeedCursor, now: &str) -> rusqlite::Result<()> {
    tx.execute(
        "INSERT INTO feed_cursor (id, since, newest, page_cap, updated_at) VALUES (1, ?1, ?2, ?4, ?3)
         ON CONFLICT (id) DO UPDATE SET since = excluded.since,
             newest = COALESCE(excluded.newest, feed_cursor.newest),
             page_cap = COALESCE(excluded.page_cap, feed_cursor.page_cap),
             updated_at = excluded.updated_at",
        (
            &c.since,
            &c.newest,
            now,
            c.page_cap.and_then(|n| i64::try_from(n).ok()),
        ),
    )?;
    tx.execute("DELETE FROM feed_seen", [])?;
    let mut seen =
        tx.prepare_cached("INSERT OR IGNORE INTO feed_seen (path, version) VALUES (?1, ?2)")?;
    for (path, version) in &c.seen {
        seen.execute((path, version))?;
    }
    Ok(())
}

/// The modules among `paths` with at least one published version.
pub(crate) fn mirrored_modules(
    conn: &Connection,
    paths: &[ModulePath],
) -> rusqlite::Result<HashSet<ModulePath>> {
    let mut stmt = conn.prepare_cached(
        "SELECT 1 FROM modules m WHERE m.path = ?1 AND EXISTS (
             SELECT 1 FROM versions v WHERE v.module_id = m.id AND v.status = 'published')",
    )?;
    let mut out = HashSet::new();
    for path in paths {
        if stmt.exists([path.as_str()])? {
            out.insert(path.clone());
        }
    }
    Ok(out)
}

/// Every `pending` version that is due at `now`: left by an interrupted
/// run, newly planned, or waiting for a retry whose time has come.
pub(crate) fn due_versions(conn: &Connection, now: &str) -> rusqlite::Result<Vec<DueVersion>> {
    let rows = conn
        .prepare(
            "SELECT m.path, v.version, v.origin FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE v.status = 'pending' AND (v.next_try_at IS NULL OR v.next_try_at <= ?1)
             ORDER BY m.path, v.version",
        )?
        .query_map([now], |r| {
            let (path, version, origin): (String, String, String) =
                (r.get(0)?, r.get(1)?, r.get(2)?);
            Ok(mod_ver(&path, &version).map(|mv| DueVersion {
                mv,
                origin: if origin == "feed" {
                    Origin::Feed
                } else {
                    Origin::Watch
                },
            }))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?;
    Ok(rows.into_iter().flatten().collect())
}

/// Gives each feed version that failed in a run and has attempts left a
/// time to try again: `pending` with `next_try_at` = now + min(max, base ·
/// 2^(attempts-1)). Those out of attempts stay `failed`. Returns how many
/// were scheduled.
pub(crate) fn schedule_retries(
    conn: &Connection,
    policy: &RetryPolicy,
    now: OffsetDateTime,
) -> rusqlite::Result<usize> {
    let secs = |d: Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX).max(1);
    conn.execute(
        "UPDATE versions SET status = 'pending', updated_at = ?5,
             next_try_at = strftime('%Y-%m-%dT%H:%M:%SZ',
                 ?1 + MIN(?3, ?2 * (1 << MIN(attempts - 1, 40))), 'unixepoch')
         WHERE status = 'failed' AND origin = 'feed' AND next_try_at IS NULL
             AND attempts < ?4",
        rusqlite::params![
            now.unix_timestamp(),
            secs(policy.base),
            secs(policy.max),
            policy.max_attempts,
            stamp(now),
        ],
    )
}

/// Puts `failed` and `quarantined` versions whose module matches `pattern` (comma-separated
/// globs, GONOSUMDB's rules; `None`: all) back to `pending` with their
/// attempts reset. Returns them, by path and version. A row that no longer
/// checks is skipped (and stays `failed`): no run could fetch it.
pub(crate) fn retry_failed(
    conn: &mut Connection,
    pattern: Option<&str>,
) -> rusqlite::Result<Vec<ModVer>> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let failed: Vec<(i64, String, String)> = tx
        .prepare(
            "SELECT v.id, m.path, v.version FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE v.status IN ('failed', 'quarantined') ORDER BY m.path, v.version",
        )?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let now = now();
    let mut back = Vec::new();
    {
        let mut update = tx.prepare(
            "UPDATE versions SET status = 'pending', attempts = 0, next_try_at = NULL,
                 updated_at = ?2
             WHERE id = ?1 AND status IN ('failed', 'quarantined')",
        )?;
        for (id, path, version) in failed {
            if !pattern.is_none_or(|p| match_prefix_patterns(p, &path)) {
                continue;
            }
            if let Some(mv) = mod_ver(&path, &version) {
                update.execute((id, &now))?;
                back.push(mv);
            }
        }
    }
    tx.commit()?;
    Ok(back)
}

/// The modules among `paths` not listed since `cutoff` (or never).
pub(crate) fn listing_due(
    conn: &Connection,
    paths: &[ModulePath],
    cutoff: &str,
) -> rusqlite::Result<HashSet<ModulePath>> {
    let mut stmt = conn.prepare_cached("SELECT listed_at FROM modules WHERE path = ?1")?;
    let mut due = HashSet::new();
    for path in paths {
        let listed: Option<Option<String>> =
            stmt.query_row([path.as_str()], |r| r.get(0)).optional()?;
        if listed.flatten().is_none_or(|at| at.as_str() <= cutoff) {
            due.insert(path.clone());
        }
    }
    Ok(due)
}

/// Records that `paths` were listed upstream now.
pub(crate) fn mark_listed(conn: &mut Connection, paths: &[ModulePath]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let now = now();
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO modules (path, first_seen, listed_at) VALUES (?1, ?2, ?2)
             ON CONFLICT (path) DO UPDATE SET listed_at = excluded.listed_at",
        )?;
        for path in paths {
            stmt.execute((path.as_str(), &now))?;
        }
    }
    tx.commit()
}

/// `t` as state stores times: RFC 3339 UTC, whole seconds.
pub(crate) fn stamp(t: OffsetDateTime) -> String {
    t.to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .expect("0 is a valid nanosecond")
        .format(&Rfc3339)
        .unwrap_or_default()
}

/// How many versions are `pending`, per origin.
#[cfg(test)]
fn pending_by_origin(conn: &Connection) -> std::collections::HashMap<String, i64> {
    conn.prepare("SELECT origin, COUNT(*) FROM versions WHERE status = 'pending' GROUP BY origin")
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .collect::<rusqlite::Result<_>>()
        .unwrap()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::runs::begin_run;
    use crate::state::tests::{migrated, module, mv, outcome, published_info};
    use crate::state::versions::{mark_pending, record_outcomes, OutcomeKind};
    use std::collections::HashMap;
    use time::macros::datetime;

    fn kv(p: &str, v: &str) -> (String, String) {
        (p.to_string(), v.to_string())
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            base: Duration::from_secs(60),
            max: Duration::from_secs(3600),
        }
    }

    fn fail(conn: &mut Connection, p: &str, v: &str) {
        let o = outcome(
            p,
            v,
            OutcomeKind::Failed {
                error: "503".into(),
            },
        );
        record_outcomes(conn, &[o]).unwrap();
    }

    fn row(conn: &Connection, v: &str) -> (String, i64, Option<String>) {
        conn.query_row(
            "SELECT status, attempts, next_try_at FROM versions WHERE version = ?1",
            [v],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap()
    }

    #[test]
    fn page_and_cursor_commit_together() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        assert_eq!(cursor(&conn).unwrap(), None);
        let page = PageRecord {
            planned: vec![mv("a.example/m", "v1.0.0"), mv("b.example/m", "v0.1.0")],
            rejections: vec![RejectedEntry {
                module: "<feed>".into(),
                entry: "../x@v1".into(),
                reason: "malformed module path".into(),
            }],
            cursor: FeedCursor {
                since: "2024-01-01T00:00:00.5Z".into(),
                seen: vec![kv("b.example/m", "v0.1.0")],
                newest: Some("2024-01-01T00:00:00.5Z".into()),
                ..FeedCursor::default()
            },
        };
        let added = record_page(&mut conn, run, &page).unwrap();
        assert_eq!(added, page.planned);
        assert_eq!(cursor(&conn).unwrap(), Some(page.cursor.clone()));
        // The same page again plans nothing new; a known version keeps its row.
        assert!(record_page(&mut conn, run, &page).unwrap().is_empty());
        assert_eq!(
            pending_by_origin(&conn),
            HashMap::from([("feed".into(), 2)])
        );

        // A page that fails to record leaves the cursor where it was.
        conn.execute_batch(
            "CREATE TEMP TRIGGER boom BEFORE INSERT ON versions BEGIN SELECT RAISE(ABORT, 'x'); END",
        )
        .unwrap();
        let next = PageRecord {
            planned: vec![mv("c.example/m", "v1.0.0")],
            rejections: vec![],
            cursor: FeedCursor {
                since: "2024-01-02T00:00:00Z".into(),
                seen: vec![],
                newest: None,
                ..FeedCursor::default()
            },
        };
        record_page(&mut conn, run, &next).unwrap_err();
        assert_eq!(cursor(&conn).unwrap(), Some(page.cursor));
    }

    #[test]
    fn failed_feed_versions_back_off_then_give_up() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        let page = PageRecord {
            planned: vec![mv("a.example/m", "v1.0.0")],
            ..PageRecord::default()
        };
        record_page(&mut conn, run, &page).unwrap();
        // (the run's now, want next_try_at): 60 s, then doubled, then given up.
        let tries = [
            (
                datetime!(2024-05-01 12:00:00 UTC),
                Some("2024-05-01T12:01:00Z"),
            ),
            (
                datetime!(2024-05-01 12:01:00 UTC),
                Some("2024-05-01T12:03:00Z"),
            ),
            (datetime!(2024-05-01 12:03:00 UTC), None),
        ];
        for (i, (now, want)) in tries.into_iter().enumerate() {
            assert_eq!(
                due_versions(&conn, &stamp(now)).unwrap().len(),
                1,
                "try {i}"
            );
            mark_pending(&mut conn, run, &page.planned).unwrap();
            fail(&mut conn, "a.example/m", "v1.0.0");
            schedule_retries(&conn, &policy(), now).unwrap();
            let (status, attempts, next) = row(&conn, "v1.0.0");
            assert_eq!(attempts, i as i64 + 1);
            assert_eq!(next.as_deref(), want, "try {i}");
            assert_eq!(status, if want.is_some() { "pending" } else { "failed" });
            if let Some(at) = want {
                assert!(due_versions(&conn, &stamp(now)).unwrap().is_empty());
                assert_eq!(due_versions(&conn, at).unwrap()[0].origin, Origin::Feed);
            }
        }
        assert!(due_versions(&conn, "2100-01-01T00:00:00Z")
            .unwrap()
            .is_empty());
    }

    #[test]
    fn watch_failures_are_not_scheduled() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        mark_pending(&mut conn, run, &[mv("a.example/m", "v1.0.0")]).unwrap();
        fail(&mut conn, "a.example/m", "v1.0.0");
        let now = datetime!(2024-05-01 12:00:00 UTC);
        assert_eq!(schedule_retries(&conn, &policy(), now).unwrap(), 0);
        assert_eq!(row(&conn, "v1.0.0").0, "failed");
    }

    #[test]
    fn retry_by_pattern() {
        let mut conn = migrated();
        for (p, v) in [
            ("github.com/org/a", "v1.0.0"),
            ("github.com/org/b", "v1.1.0"),
            ("example.com/c", "v1.2.0"),
        ] {
            fail(&mut conn, p, v);
        }
        let published = outcome(
            "github.com/org/a",
            "v2.0.0+incompatible",
            OutcomeKind::Published(published_info(1)),
        );
        record_outcomes(&mut conn, &[published]).unwrap();
        let back = retry_failed(&mut conn, Some("github.com/org")).unwrap();
        assert_eq!(
            back,
            [
                mv("github.com/org/a", "v1.0.0"),
                mv("github.com/org/b", "v1.1.0")
            ]
        );
        assert_eq!(row(&conn, "v1.0.0"), ("pending".into(), 0, None));
        assert_eq!(row(&conn, "v1.2.0").0, "failed");
        assert_eq!(
            retry_failed(&mut conn, None).unwrap(),
            [mv("example.com/c", "v1.2.0")]
        );
        assert!(retry_failed(&mut conn, None).unwrap().is_empty());
    }

    #[test]
    fn listing_is_due_after_the_interval() {
        let mut conn = migrated();
        let paths = [module("a.example/m"), module("b.example/m")];
        assert_eq!(
            listing_due(&conn, &paths, "2000-01-01T00:00:00Z")
                .unwrap()
                .len(),
            2
        );
        mark_listed(&mut conn, &paths[..1]).unwrap();
        let due = listing_due(&conn, &paths, "2000-01-01T00:00:00Z").unwrap();
        assert_eq!(due, HashSet::from([module("b.example/m")]));
        assert_eq!(
            listing_due(&conn, &paths, "2999-01-01T00:00:00Z")
                .unwrap()
                .len(),
            2
        );
    }

    #[test]
    fn mirrored_means_a_published_version() {
        let mut conn = migrated();
        let run = begin_run(&mut conn, 1).unwrap();
        mark_pending(&mut conn, run, &[mv("a.example/m", "v1.0.0")]).unwrap();
        let o = outcome(
            "b.example/m",
            "v1.0.0",
            OutcomeKind::Published(published_info(1)),
        );
        record_outcomes(&mut conn, &[o]).unwrap();
        let paths = ["a.example/m", "b.example/m", "c.example/m"].map(module);
        assert_eq!(
            mirrored_modules(&conn, &paths).unwrap(),
            HashSet::from([module("b.example/m")])
        );
    }
}
