//! Upstream health: requests, failures and the last failure per upstream
//! base URL, added up over runs (See: #13). Input: the run's
//! [`UpstreamHealth`] from the fetch client; output: the totals, for
//! `status` and metrics.

use rusqlite::Connection;

use super::{now, StateError, Store};
use crate::fetch::UpstreamHealth;

impl Store {
    /// Adds one run's per-upstream counts to the totals; one transaction.
    pub async fn record_upstream_health(
        &self,
        health: Vec<UpstreamHealth>,
    ) -> Result<(), StateError> {
        self.call_as("record upstream health", move |c| record(c, &health))
            .await
    }
}

fn record(conn: &mut Connection, health: &[UpstreamHealth]) -> rusqlite::Result<()> {
    let tx = conn.transaction()?;
    let now = now();
    {
        let mut stmt = tx.prepare_cached(
            "INSERT INTO upstream_health
                 (upstream, requests, errors, last_failure_at, last_failure, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (upstream) DO UPDATE SET
                 requests = requests + excluded.requests,
                 errors = errors + excluded.errors,
                 last_failure_at = COALESCE(excluded.last_failure_at, last_failure_at),
                 last_failure = COALESCE(excluded.last_failure, last_failure),
                 updated_at = excluded.updated_at",
        )?;
        for h in health {
            stmt.execute(rusqlite::params![
                h.upstream,
                i64::try_from(h.requests).unwrap_or(i64::MAX),
                i64::try_from(h.errors).unwrap_or(i64::MAX),
                h.last_failure_at,
                h.last_failure,
                now
            ])?;
        }
    }
    tx.commit()
}

/// The totals per upstream, by base URL.
pub(crate) fn upstream_health(conn: &Connection) -> rusqlite::Result<Vec<UpstreamHealth>> {
    conn.prepare(
        "SELECT upstream, requests, errors, last_failure_at, last_failure
         FROM upstream_health ORDER BY upstream",
    )?
    .query_map([], |r| {
        Ok(UpstreamHealth {
            upstream: r.get(0)?,
            requests: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
            errors: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
            last_failure_at: r.get(3)?,
            last_failure: r.get(4)?,
        })
    })?
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::migrated;

    #[test]
    fn runs_add_up_and_keep_the_last_failure() {
        let mut conn = migrated();
        let run = |requests, errors, failure: Option<&str>| UpstreamHealth {
            upstream: "https://a.example/".into(),
            requests,
            errors,
            last_failure_at: failure.map(|_| "2024-01-01T00:00:00Z".into()),
            last_failure: failure.map(str::to_owned),
        };
        record(&mut conn, &[run(5, 1, Some("reading x: refused"))]).unwrap();
        record(&mut conn, &[run(3, 0, None)]).unwrap();
        let got = upstream_health(&conn).unwrap();
        assert_eq!(got, [run(8, 1, Some("reading x: refused"))]);
    }
}
