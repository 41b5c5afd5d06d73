//! The downstream index feed's entries: one per version published with its
//! zip, stamped when the commit step records it (see: #16).
//!
//! Input: the versions a commit's transaction turns `published`
//! ([`append`], called from `versions.rs` `write_outcomes`, the one write
//! every publish path — sync batch, import, repair — goes through). Output:
//! pages of [`IndexEntry`] in Timestamp order ([`Store::index_page`]), what
//! `serve` turns into index.golang.org's format.
//!
//! - Timestamps strictly increase: each is the later of now (truncated to
//!   the microsecond, index.golang.org's precision) and the previous one plus
//!   one microsecond. A reader pages with an inclusive `since`, so a run of
//!   equal timestamps longer than its page would stall it; here there is
//!   none, even for thousands of versions recorded in one transaction.
//! - A page holds only versions whose status is `published` now: versions
//!   published for their go.mod only (`mod_only`) never get an entry, and a
//!   version that leaves `published` (pruned) drops out of the feed.

use rusqlite::{Connection, Transaction};
use time::OffsetDateTime;

use super::{mod_ver, StateError, Store};
use crate::module::ModVer;

/// The most entries one page holds, as index.golang.org (PROTOCOL.md).
pub const MAX_INDEX_PAGE: usize = crate::plan::feed::MAX_PAGE;

/// One microsecond, the step between two entries stamped at once.
const STEP_NS: i64 = 1_000;

/// One line of the feed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexEntry {
    pub mv: ModVer,
    pub timestamp: OffsetDateTime,
}

/// Hands out strictly increasing timestamps inside one transaction.
#[derive(Debug, Default)]
pub(super) struct Stamps {
    /// The newest timestamp in `index_entries`, read once per transaction
    /// (its writes are the only ones: the transaction is IMMEDIATE).
    last: Option<i64>,
}

impl Stamps {
    fn next(&mut self, tx: &Transaction<'_>) -> rusqlite::Result<i64> {
        let last = match self.last {
            Some(last) => last,
            None => tx
                .prepare_cached("SELECT coalesce(max(ts_ns), 0) FROM index_entries")?
                .query_row([], |r| r.get(0))?,
        };
        let now = now_us();
        let ts = now.max(last + STEP_NS);
        self.last = Some(ts);
        Ok(ts)
    }
}

/// Now, in nanoseconds since the epoch, truncated to the microsecond.
fn now_us() -> i64 {
    let ns = OffsetDateTime::now_utc().unix_timestamp_nanos();
    let ns = i64::try_from(ns).expect("now fits in i64 nanoseconds until 2262");
    ns - ns.rem_euclid(STEP_NS)
}

/// Gives `version` of module `module_id`, just recorded `published`, its
/// entry: a new one, or its old one moved to now (published again).
pub(super) fn append(
    tx: &Transaction<'_>,
    stamps: &mut Stamps,
    module_id: i64,
    version: &str,
) -> rusqlite::Result<()> {
    let ts = stamps.next(tx)?;
    tx.prepare_cached(
        "INSERT INTO index_entries (version_id, ts_ns)
         SELECT id, ?3 FROM versions WHERE module_id = ?1 AND version = ?2
         ON CONFLICT (version_id) DO UPDATE SET ts_ns = excluded.ts_ns",
    )?
    .execute(rusqlite::params![module_id, version, ts])?;
    Ok(())
}

impl Store {
    /// Up to `limit` entries (at most [`MAX_INDEX_PAGE`]) stamped at or
    /// after `since`, oldest first: `GET /index?since=&limit=`.
    pub async fn index_page(
        &self,
        since: OffsetDateTime,
        limit: usize,
    ) -> Result<Vec<IndexEntry>, StateError> {
        let limit = limit.min(MAX_INDEX_PAGE);
        self.call_as("index page", move |c| index_page(c, since, limit))
            .await
    }
}

fn index_page(
    conn: &Connection,
    since: OffsetDateTime,
    limit: usize,
) -> rusqlite::Result<Vec<IndexEntry>> {
    // Before 1678 or after 2262 nothing is stamped: clamp rather than fail.
    let since = i64::try_from(since.unix_timestamp_nanos()).unwrap_or(if since.year() < 1970 {
        i64::MIN
    } else {
        i64::MAX
    });
    let mut stmt = conn.prepare_cached(
        "SELECT m.path, v.version, e.ts_ns FROM index_entries e
         JOIN versions v ON v.id = e.version_id
         JOIN modules m ON m.id = v.module_id
         WHERE e.ts_ns >= ?1 AND v.status = 'published'
         ORDER BY e.ts_ns LIMIT ?2",
    )?;
    let rows = stmt.query_map(rusqlite::params![since, limit as i64], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (path, version, ts) = row?;
        let Some(mv) = mod_ver(&path, &version) else {
            continue;
        };
        let timestamp = OffsetDateTime::from_unix_timestamp_nanos(i128::from(ts))
            .expect("an i64 of nanoseconds is a valid time");
        out.push(IndexEntry { mv, timestamp });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{migrated, outcome, published_info};
    use crate::state::versions::record_outcomes;
    use crate::state::OutcomeKind;

    fn all(conn: &Connection) -> Vec<IndexEntry> {
        index_page(conn, OffsetDateTime::UNIX_EPOCH, usize::MAX).unwrap()
    }

    fn published(path: &str, version: &str) -> crate::state::Outcome {
        outcome(path, version, OutcomeKind::Published(published_info(10)))
    }

    // See: #16 (a large import must not produce a run of equal timestamps).
    #[test]
    fn issue_16_a_commit_of_5000_versions_gets_strictly_increasing_timestamps() {
        let mut conn = migrated();
        let batch: Vec<_> = (0..5000)
            .map(|i| published(&format!("example.com/m{}", i % 50), &format!("v1.0.{i}")))
            .collect();
        let before = OffsetDateTime::now_utc() - time::Duration::seconds(1);
        record_outcomes(&mut conn, &batch).unwrap();
        let entries = all(&conn);
        assert_eq!(entries.len(), 5000);
        assert!(entries.windows(2).all(|w| w[0].timestamp < w[1].timestamp));
        assert!(entries[0].timestamp >= before);
        // In the order the commit recorded them, at microsecond precision.
        assert_eq!(entries[0].mv.to_string(), "example.com/m0@v1.0.0");
        assert_eq!(entries[4999].mv.to_string(), "example.com/m49@v1.0.4999");
        assert!(entries.iter().all(|e| e.timestamp.nanosecond() % 1000 == 0));

        // A second commit continues after the first, even within its microsecond.
        record_outcomes(&mut conn, &[published("example.com/late", "v1.0.0")]).unwrap();
        let entries = all(&conn);
        assert_eq!(entries.len(), 5001);
        assert!(entries[4999].timestamp < entries[5000].timestamp);
    }

    // See: #16 (go.mod-only versions are not in the feed; they join it with their zip).
    #[test]
    fn issue_16_only_versions_published_with_their_zip_are_in_the_feed() {
        let mut conn = migrated();
        let mut go_mod_only = published_info(0);
        go_mod_only.zip = None;
        record_outcomes(
            &mut conn,
            &[
                outcome(
                    "example.com/a",
                    "v1.0.0",
                    OutcomeKind::Published(go_mod_only),
                ),
                outcome(
                    "example.com/a",
                    "v1.1.0",
                    OutcomeKind::Failed {
                        error: "503".into(),
                    },
                ),
                published("example.com/b", "v1.0.0"),
            ],
        )
        .unwrap();
        let names = |conn: &Connection| -> Vec<String> {
            all(conn).iter().map(|e| e.mv.to_string()).collect()
        };
        assert_eq!(names(&conn), ["example.com/b@v1.0.0"]);
        record_outcomes(&mut conn, &[published("example.com/a", "v1.0.0")]).unwrap();
        assert_eq!(
            names(&conn),
            ["example.com/b@v1.0.0", "example.com/a@v1.0.0"]
        );
        // A version that leaves `published` (a prune) leaves the feed.
        conn.execute_batch("DROP TRIGGER versions_published_immutable;")
            .unwrap();
        conn.execute(
            "UPDATE versions SET status = 'failed' WHERE version = 'v1.0.0'
             AND module_id = (SELECT id FROM modules WHERE path = 'example.com/b')",
            [],
        )
        .unwrap();
        assert_eq!(names(&conn), ["example.com/a@v1.0.0"]);
    }

    // See: #16 (since is inclusive; limit is capped).
    #[test]
    fn issue_16_pages_start_at_since_inclusive_and_hold_at_most_limit() {
        let mut conn = migrated();
        let batch: Vec<_> = (0..5)
            .map(|i| published("example.com/p", &format!("v1.0.{i}")))
            .collect();
        record_outcomes(&mut conn, &batch).unwrap();
        let entries = all(&conn);
        let page = index_page(&conn, entries[2].timestamp, 2).unwrap();
        assert_eq!(page, entries[2..4]);
        let after = entries[4].timestamp + time::Duration::nanoseconds(1);
        assert!(index_page(&conn, after, 10).unwrap().is_empty());
    }

    // See: #16 (versions published before the feed existed are backfilled, in order).
    #[test]
    fn issue_16_migration_backfills_published_versions_in_publish_order() {
        use crate::state::migrate::{migrate, MIGRATIONS};
        let mut conn = migrated();
        record_outcomes(&mut conn, &[published("example.com/x", "v1.0.0")]).unwrap();
        record_outcomes(
            &mut conn,
            &[
                published("example.com/y", "v1.0.0"),
                published("example.com/y", "v1.1.0"),
            ],
        )
        .unwrap();
        // As if x had been published in an earlier second.
        conn.execute_batch("DROP TRIGGER versions_published_immutable;")
            .unwrap();
        conn.execute(
            "UPDATE versions SET published_at = '2024-01-01T00:00:00Z'
             WHERE module_id = (SELECT id FROM modules WHERE path = 'example.com/x')",
            [],
        )
        .unwrap();
        // The database as it was before this migration, then migrated up to it (later
        // migrations' rows go too: migrations apply in order).
        let this = MIGRATIONS
            .iter()
            .position(|m| m.name == "index_entries")
            .unwrap();
        conn.execute(
            "DELETE FROM schema_migrations WHERE version >= ?1",
            [MIGRATIONS[this].version],
        )
        .unwrap();
        conn.execute_batch("DROP TABLE index_entries;").unwrap();
        let path = std::path::Path::new(":memory:");
        migrate(&mut conn, path, &MIGRATIONS[..=this]).unwrap();
        let entries = all(&conn);
        let names: Vec<_> = entries.iter().map(|e| e.mv.to_string()).collect();
        assert_eq!(
            names,
            [
                "example.com/x@v1.0.0",
                "example.com/y@v1.0.0",
                "example.com/y@v1.1.0"
            ]
        );
        assert_eq!(
            crate::plan::feed::format_timestamp(entries[0].timestamp),
            "2024-01-01T00:00:00Z"
        );
        assert!(entries[1].timestamp < entries[2].timestamp);
    }
}
