//! Learning from clients' misses (`client_misses`, written by reading the
//! access log). See: #14
//!
//! A miss is due when no sync has looked at it since a client last missed
//! it (`learned_at` is unset or older than `last_missed`) and no
//! `retry_after` holds it back. A sync marks each due miss it decides with
//! its outcome: a refusal (`private`, `excluded`, `unmatched`, `present`),
//! `not_found` for a listing upstream does not have (with `retry_after`),
//! or `planned`; after the run, [`Store::settle_learned`] turns `planned`
//! into what the versions came to.

use std::time::Duration;

use rusqlite::{params, Connection};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use super::{mod_ver, now, StateError, Store};
use crate::module::ModulePath;
use crate::plan::learned::Missed;

/// A miss no sync has looked at since a client last made it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DueMiss {
    pub missed: Missed,
    pub misses: u64,
}

/// What a sync decided for one miss.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Learned {
    pub missed: Missed,
    /// `planned`, `not_found`, or a refusal's word.
    pub outcome: &'static str,
    /// Not due again before this long has passed.
    pub retry_after: Option<Duration>,
}

/// Missed versions and listings by the outcome learning gave them, for
/// `status` and metrics.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct LearnedCounts {
    /// Missed versions and listings waiting for a sync to look at them.
    pub due: u64,
    /// (outcome, missed versions and listings), by outcome.
    pub outcomes: Vec<(String, u64)>,
}

impl Store {
    /// The due misses, most-missed first, at most `limit`.
    pub async fn due_misses(&self, limit: usize) -> Result<Vec<DueMiss>, StateError> {
        self.call_as("read clients' misses", move |c| due(c, &now(), limit))
            .await
    }

    /// Records what a sync decided for each miss; one transaction.
    pub async fn record_learned(&self, learned: Vec<Learned>) -> Result<(), StateError> {
        self.call_as("record learned misses", move |c| record(c, &learned))
            .await
    }

    /// After a run: each `planned` miss takes the outcome of its version
    /// (`published`, `mod_only`, `not_found`, `failed`, `quarantined`,
    /// `pending`), a listing `published` once its module has a published
    /// version. A version upstream does not have is held back for
    /// `retry_not_found`.
    pub async fn settle_learned(&self, retry_not_found: Duration) -> Result<(), StateError> {
        self.call_as("settle learned misses", move |c| {
            settle(c, &after(retry_not_found))
        })
        .await
    }

    /// How many misses are due, and what the others came to.
    pub async fn learned_counts(&self) -> Result<LearnedCounts, StateError> {
        self.call_as("count learned misses", |c| counts(c, &now()))
            .await
    }
}

/// `now + d`, as stored.
fn after(d: Duration) -> String {
    let at = OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .expect("0 ns")
        + d;
    at.format(&Rfc3339).expect("a time within RFC 3339's years")
}

const DUE: &str = "(learned_at IS NULL OR last_missed > learned_at)
                   AND (retry_after IS NULL OR retry_after <= ?1)";

fn due(conn: &Connection, now: &str, limit: usize) -> rusqlite::Result<Vec<DueMiss>> {
    let sql = format!(
        "SELECT path, version, kind, misses FROM client_misses WHERE {DUE}
         ORDER BY misses DESC, first_missed, path, version LIMIT ?2"
    );
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![now, limit], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (path, version, kind, misses) = row?;
        let missed = if kind == "listing" {
            match ModulePath::new(&path) {
                Ok(p) => Missed::Listing(p),
                Err(e) => {
                    tracing::warn!("state holds a missed path that no longer checks: {e}");
                    continue;
                }
            }
        } else {
            match mod_ver(&path, &version) {
                Some(mv) => Missed::Version(mv),
                None => continue,
            }
        };
        out.push(DueMiss {
            missed,
            misses: u64::try_from(misses).unwrap_or(0),
        });
    }
    Ok(out)
}

fn record(conn: &mut Connection, learned: &[Learned]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let now = now();
    {
        let mut stmt = tx.prepare_cached(
            "UPDATE client_misses SET learned_at = ?1, outcome = ?2, retry_after = ?3
             WHERE path = ?4 AND version = ?5",
        )?;
        for l in learned {
            let (path, version) = key(&l.missed);
            let retry = l.retry_after.map(after);
            stmt.execute(params![now, l.outcome, retry, path, version])?;
        }
    }
    tx.commit()
}

fn key(missed: &Missed) -> (&str, &str) {
    match missed {
        Missed::Version(mv) => (mv.path.as_str(), mv.version.as_str()),
        Missed::Listing(path) => (path.as_str(), ""),
    }
}

fn settle(conn: &mut Connection, retry_after: &str) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    tx.execute(
        "UPDATE client_misses SET outcome = (
             SELECT v.status FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = client_misses.path AND v.version = client_misses.version)
         WHERE outcome = 'planned' AND kind = 'version' AND EXISTS (
             SELECT 1 FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = client_misses.path AND v.version = client_misses.version)",
        [],
    )?;
    tx.execute(
        "UPDATE client_misses SET retry_after = ?1
         WHERE outcome = 'not_found' AND kind = 'version' AND retry_after IS NULL",
        [retry_after],
    )?;
    tx.execute(
        "UPDATE client_misses SET outcome = 'published'
         WHERE outcome = 'planned' AND kind = 'listing' AND EXISTS (
             SELECT 1 FROM versions v JOIN modules m ON m.id = v.module_id
             WHERE m.path = client_misses.path AND v.status = 'published')",
        [],
    )?;
    tx.commit()
}

pub(super) fn counts(conn: &Connection, now: &str) -> rusqlite::Result<LearnedCounts> {
    let due: i64 = conn.query_row(
        &format!("SELECT count(*) FROM client_misses WHERE {DUE}"),
        [now],
        |r| r.get(0),
    )?;
    let outcomes = conn
        .prepare(
            "SELECT outcome, count(*) FROM client_misses WHERE outcome IS NOT NULL
             GROUP BY outcome ORDER BY outcome",
        )?
        .query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            ))
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(LearnedCounts {
        due: u64::try_from(due).unwrap_or(0),
        outcomes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::module::ModVer;
    use crate::state::tests::migrated;

    fn miss(conn: &Connection, path: &str, version: &str, misses: i64, last: &str) {
        let kind = if version.is_empty() {
            "listing"
        } else {
            "version"
        };
        conn.execute(
            "INSERT INTO client_misses (path, version, kind, via, misses, first_missed, last_missed)
             VALUES (?1, ?2, ?3, 'proxy', ?4, ?5, ?5)
             ON CONFLICT (path, version) DO UPDATE SET
                 misses = misses + excluded.misses, last_missed = excluded.last_missed",
            params![path, version, kind, misses, last],
        )
        .unwrap();
    }

    fn version(path: &str, v: &str) -> Missed {
        Missed::Version(ModVer::parse(path, v).unwrap())
    }

    // See: #14
    #[test]
    fn issue_14_a_miss_is_due_until_decided_and_again_when_missed_again() {
        let mut conn = migrated();
        miss(&conn, "example.com/a", "v1.0.0", 1, "2026-01-01T00:00:00Z");
        miss(&conn, "example.com/b", "", 5, "2026-01-01T00:00:00Z");
        let now = "2026-01-02T00:00:00Z";
        let got = due(&conn, now, 10).unwrap();
        let listing = Missed::Listing(ModulePath::new("example.com/b").unwrap());
        assert_eq!(
            got,
            vec![
                DueMiss {
                    missed: listing.clone(),
                    misses: 5
                },
                DueMiss {
                    missed: version("example.com/a", "v1.0.0"),
                    misses: 1
                },
            ],
            "most-missed first"
        );
        assert_eq!(due(&conn, now, 1).unwrap().len(), 1, "the limit holds");

        let decided = vec![
            Learned {
                missed: listing,
                outcome: "not_found",
                retry_after: Some(Duration::from_secs(3600)),
            },
            Learned {
                missed: version("example.com/a", "v1.0.0"),
                outcome: "excluded",
                retry_after: None,
            },
        ];
        record(&mut conn, &decided).unwrap();
        assert!(
            due(&conn, &super::now(), 10).unwrap().is_empty(),
            "decided misses wait"
        );

        // Missed again after the decision: due again, unless held back.
        miss(&conn, "example.com/a", "v1.0.0", 1, "2999-01-01T00:00:00Z");
        miss(&conn, "example.com/b", "", 1, "2999-01-01T00:00:00Z");
        let got = due(&conn, &super::now(), 10).unwrap();
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got[0].missed, version("example.com/a", "v1.0.0"));
        // After retry_after the listing is due too.
        let later = after(Duration::from_secs(7200));
        assert_eq!(due(&conn, &later, 10).unwrap().len(), 2);
    }

    // See: #14
    #[test]
    fn issue_14_settling_takes_the_versions_outcome() {
        let mut conn = migrated();
        miss(
            &conn,
            "example.com/gone",
            "v1.0.0",
            1,
            "2026-01-01T00:00:00Z",
        );
        miss(
            &conn,
            "example.com/later",
            "v1.0.0",
            1,
            "2026-01-01T00:00:00Z",
        );
        conn.execute_batch(
            "INSERT INTO modules (id, path, first_seen) VALUES (1, 'example.com/gone', '2026-01-01T00:00:00Z');
             INSERT INTO versions (module_id, version, status, first_seen, updated_at)
                 VALUES (1, 'v1.0.0', 'not_found', '2026-01-01T00:00:00Z', '2026-01-01T00:00:00Z');",
        )
        .unwrap();
        let planned = |m| Learned {
            missed: m,
            outcome: "planned",
            retry_after: None,
        };
        record(
            &mut conn,
            &[
                planned(version("example.com/gone", "v1.0.0")),
                planned(version("example.com/later", "v1.0.0")),
            ],
        )
        .unwrap();
        settle(&mut conn, "2999-01-01T00:00:00Z").unwrap();
        let c = counts(&conn, &super::now()).unwrap();
        assert_eq!(
            c.outcomes,
            vec![("not_found".to_string(), 1), ("planned".to_string(), 1)],
            "a version with no row yet stays planned"
        );
        let retry: Option<String> = conn
            .query_row(
                "SELECT retry_after FROM client_misses WHERE path = 'example.com/gone'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(retry.as_deref(), Some("2999-01-01T00:00:00Z"));
    }
}
