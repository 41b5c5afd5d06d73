//! What clients did, from the web server's log: the reading cursor, the
//! figures per module version and per hour, misses for learning, and the
//! figures `clients`, `status` and metrics show (migrations/0014_clients.sql).
//!
//! Input: a batch's [`BatchFigures`] with the [`LogCursor`] after its last line,
//! recorded in one transaction only if the saved cursor's generation is
//! still the one the reader started from (compare-and-swap: two readers at
//! once never count a line twice; the loser records nothing). Output:
//! [`ClientFigures`], all time or since an hour.
//!
//! `client_misses` rows are only ever inserted or have `misses`,
//! `first_missed`, `last_missed` (and `via`, a lookup winning) updated
//! here; `learned_at`, `outcome` and `retry_after` belong to learning.

use std::collections::HashMap;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};
use serde::ser::SerializeMap;
use serde::{Serialize, Serializer};

use super::{now, StateError, Store};
use crate::clients::batch::{BatchFigures, Subject};
use crate::clients::request::{ResultClass, Skip};

/// Hours of per-hour figures kept for `clients --since` (31 days).
pub const CLIENT_HOURS_KEPT: i64 = 31 * 24;
/// How many top modules and top misses the figures name.
pub const CLIENT_TOP: usize = 10;

/// Where reading the log resumes. See the table's comment in the migration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogCursor {
    pub dev: u64,
    pub ino: u64,
    /// Bytes hashed into `head_sha256`: min(4 KiB, `offset`).
    pub head_len: u64,
    pub head_sha256: String,
    /// After the last whole line read.
    pub offset: u64,
}

/// The cursor as saved, with the generation a reader must still see to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedCursor {
    pub cursor: LogCursor,
    pub generation: i64,
    pub read_at: String,
}

/// Requests per [`ResultClass`]; serialized as `{"use": n, …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassCounts([u64; ResultClass::ALL.len()]);

impl ClassCounts {
    pub fn get(&self, class: ResultClass) -> u64 {
        self.0[class as usize]
    }
    pub fn total(&self) -> u64 {
        self.0.iter().sum()
    }
    pub fn add(&mut self, class: ResultClass, n: u64) {
        self.0[class as usize] += n;
    }
}

impl Serialize for ClassCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for c in ResultClass::ALL {
            m.serialize_entry(c.as_str(), &self.get(c))?;
        }
        m.end()
    }
}

/// Lines in no class, per [`Skip`]; serialized as `{"unparsed": n, …}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkipCounts([u64; Skip::ALL.len()]);

impl SkipCounts {
    pub fn get(&self, skip: Skip) -> u64 {
        self.0[skip as usize]
    }
}

impl Serialize for SkipCounts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(self.0.len()))?;
        for k in Skip::ALL {
            m.serialize_entry(k.as_str(), &self.get(k))?;
        }
        m.end()
    }
}

/// A module by its uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopModule {
    pub path: String,
    pub uses: u64,
    pub misses: u64,
    pub bytes: u64,
    pub last_used: Option<String>,
}

/// A missed version (or, `version` '', a missed `@v/list`/`@latest`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TopMiss {
    pub path: String,
    pub version: String,
    pub misses: u64,
    pub last_missed: Option<String>,
}

/// Hostile targets of one reason.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RejectCount {
    pub reason: String,
    pub count: u64,
    pub last_seen: String,
    /// The newest such target (quoted) and why.
    pub example: String,
}

/// What the log said, for `clients`, `status` and metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ClientFigures {
    /// Start of the window (RFC 3339, an hour's start); `None`: all time.
    pub since: Option<String>,
    /// Protocol requests by class.
    pub requests: ClassCounts,
    /// Body bytes of protocol requests.
    pub bytes: u64,
    pub skipped: SkipCounts,
    pub top_modules: Vec<TopModule>,
    pub top_misses: Vec<TopMiss>,
    pub rejected: Vec<RejectCount>,
    /// When the log was last read; `None`: never.
    pub read_at: Option<String>,
}

impl ClientFigures {
    /// uses / (uses + misses); `None` before any.
    pub fn hit_ratio(&self) -> Option<f64> {
        let uses = self.requests.get(ResultClass::Use);
        let seen = uses + self.requests.get(ResultClass::Miss);
        (seen > 0).then(|| uses as f64 / seen as f64)
    }
}

impl Store {
    /// The saved cursor, if the log was ever read.
    pub async fn client_cursor(&self) -> Result<Option<SavedCursor>, StateError> {
        self.call_as("read client log cursor", |c| client_cursor(c))
            .await
    }

    /// Records `batch` and moves the cursor to `cursor`, if the saved
    /// generation is still `expected` (`None`: no cursor saved). Returns the
    /// new generation, or `None` when another reader recorded first (then
    /// nothing was recorded).
    pub async fn record_client_batch(
        &self,
        expected: Option<i64>,
        cursor: LogCursor,
        batch: BatchFigures,
    ) -> Result<Option<i64>, StateError> {
        self.call_as("record client figures", move |c| {
            record_batch(c, expected, &cursor, &batch)
        })
        .await
    }

    /// The figures since `since_hour` (Unix hours), or of all time.
    pub async fn client_figures(
        &self,
        since_hour: Option<i64>,
    ) -> Result<ClientFigures, StateError> {
        self.call_as("client figures", move |c| {
            let tx = c.transaction()?;
            let f = client_figures(&tx, since_hour, CLIENT_TOP)?;
            tx.commit()?;
            Ok(f)
        })
        .await
    }
}

fn client_cursor(c: &Connection) -> rusqlite::Result<Option<SavedCursor>> {
    c.query_row(
        "SELECT dev, ino, head_len, head_sha256, offset, generation, read_at
         FROM client_log_cursor WHERE id = 1",
        [],
        |r| {
            Ok(SavedCursor {
                cursor: LogCursor {
                    dev: r.get::<_, i64>(0)? as u64,
                    ino: r.get::<_, i64>(1)? as u64,
                    head_len: r.get(2)?,
                    head_sha256: r.get(3)?,
                    offset: r.get(4)?,
                },
                generation: r.get(5)?,
                read_at: r.get(6)?,
            })
        },
    )
    .optional()
}

/// Unix seconds as stored: RFC 3339 UTC, whole seconds.
fn rfc3339(t: i64) -> String {
    chrono::DateTime::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn record_batch(
    c: &mut Connection,
    expected: Option<i64>,
    cursor: &LogCursor,
    batch: &BatchFigures,
) -> rusqlite::Result<Option<i64>> {
    let tx = c.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let generation = expected.map_or(1, |g| g + 1);
    let values = params![
        cursor.dev as i64,
        cursor.ino as i64,
        cursor.head_len,
        cursor.head_sha256,
        cursor.offset,
        generation,
        now(),
        expected,
    ];
    let moved = match expected {
        None => tx.execute(
            "INSERT INTO client_log_cursor
               (id, dev, ino, head_len, head_sha256, offset, generation, read_at)
             SELECT 1, ?1, ?2, ?3, ?4, ?5, ?6, ?7 WHERE ?8 IS NULL
             ON CONFLICT (id) DO NOTHING",
            values,
        )?,
        Some(_) => tx.execute(
            "UPDATE client_log_cursor SET dev = ?1, ino = ?2, head_len = ?3,
               head_sha256 = ?4, offset = ?5, generation = ?6, read_at = ?7
             WHERE id = 1 AND generation = ?8",
            values,
        )?,
    };
    if moved != 1 {
        return Ok(None);
    }
    record_uses(&tx, batch)?;
    record_misses(&tx, batch)?;
    record_totals(&tx, batch)?;
    tx.commit()?;
    Ok(Some(generation))
}

fn record_uses(tx: &Connection, batch: &BatchFigures) -> rusqlite::Result<()> {
    let mut up = tx.prepare_cached(
        "INSERT INTO client_use
           (path, version, uses, misses, bytes, first_used, last_used, last_missed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (path, version) DO UPDATE SET
           uses = uses + excluded.uses,
           misses = misses + excluded.misses,
           bytes = bytes + excluded.bytes,
           first_used = CASE WHEN first_used IS NULL OR excluded.first_used < first_used
                        THEN COALESCE(excluded.first_used, first_used) ELSE first_used END,
           last_used = CASE WHEN last_used IS NULL OR excluded.last_used > last_used
                       THEN COALESCE(excluded.last_used, last_used) ELSE last_used END,
           last_missed = CASE WHEN last_missed IS NULL OR excluded.last_missed > last_missed
                         THEN COALESCE(excluded.last_missed, last_missed) ELSE last_missed END",
    )?;
    for (s, f) in &batch.uses {
        up.execute(params![
            s.path(),
            s.version(),
            f.uses,
            f.misses,
            f.bytes,
            f.first_used.map(rfc3339),
            f.last_used.map(rfc3339),
            f.last_missed.map(rfc3339),
        ])?;
    }
    let mut hourly = tx.prepare_cached(
        "INSERT INTO client_module_hours (hour, path, uses, misses, bytes)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT (hour, path) DO UPDATE SET
           uses = uses + excluded.uses, misses = misses + excluded.misses,
           bytes = bytes + excluded.bytes",
    )?;
    for (hour, s, (uses, misses, bytes)) in &batch.module_hours {
        hourly.execute(params![hour, s.path(), uses, misses, bytes])?;
    }
    let mut missed = tx.prepare_cached(
        "INSERT INTO client_miss_hours (hour, path, version, misses) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (hour, path, version) DO UPDATE SET misses = misses + excluded.misses",
    )?;
    for (hour, s, n) in &batch.miss_hours {
        missed.execute(params![hour, s.path(), s.version(), n])?;
    }
    Ok(())
}

fn record_misses(tx: &Connection, batch: &BatchFigures) -> rusqlite::Result<()> {
    let mut up = tx.prepare_cached(
        "INSERT INTO client_misses (path, version, kind, via, misses, first_missed, last_missed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (path, version) DO UPDATE SET
           misses = misses + excluded.misses,
           first_missed = MIN(first_missed, excluded.first_missed),
           last_missed = MAX(last_missed, excluded.last_missed),
           via = CASE WHEN excluded.via = 'lookup' THEN 'lookup' ELSE via END",
    )?;
    for (s, m) in &batch.misses {
        let kind = match **s {
            Subject::Version(_) => "version",
            Subject::Module(_) => "listing",
        };
        up.execute(params![
            s.path(),
            s.version(),
            kind,
            m.via.as_str(),
            m.n,
            rfc3339(m.first),
            rfc3339(m.last),
        ])?;
    }
    Ok(())
}

fn record_totals(tx: &Connection, batch: &BatchFigures) -> rusqlite::Result<()> {
    let mut up = tx.prepare_cached(
        "INSERT INTO client_totals (hour, key, n) VALUES (?1, ?2, ?3)
         ON CONFLICT (hour, key) DO UPDATE SET n = n + excluded.n",
    )?;
    let mut all_time: HashMap<&str, u64> = HashMap::new();
    for &(hour, key, n) in &batch.totals {
        up.execute(params![hour, key.as_str(), n])?;
        *all_time.entry(key.as_str()).or_default() += n;
    }
    for (key, n) in all_time {
        up.execute(params![-1, key, n])?;
    }
    let mut rej = tx.prepare_cached(
        "INSERT INTO client_rejects (reason, n, last_seen, example) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (reason) DO UPDATE SET n = n + excluded.n,
           example = CASE WHEN excluded.last_seen >= last_seen THEN excluded.example ELSE example END,
           last_seen = MAX(last_seen, excluded.last_seen)",
    )?;
    for (reason, r) in &batch.rejects {
        rej.execute(params![reason, r.n, rfc3339(r.last_seen), r.example])?;
    }
    let oldest = chrono::Utc::now().timestamp() / 3600 - CLIENT_HOURS_KEPT;
    tx.execute("DELETE FROM client_module_hours WHERE hour < ?1", [oldest])?;
    tx.execute("DELETE FROM client_miss_hours WHERE hour < ?1", [oldest])?;
    tx.execute(
        "DELETE FROM client_totals WHERE hour >= 0 AND hour < ?1",
        [oldest],
    )?;
    Ok(())
}

/// The figures since `since_hour`, or of all time; `top` names at most.
pub(crate) fn client_figures(
    c: &Connection,
    since_hour: Option<i64>,
    top: usize,
) -> rusqlite::Result<ClientFigures> {
    let mut f = ClientFigures {
        since: since_hour.map(|h| rfc3339(h * 3600)),
        read_at: client_cursor(c)?.map(|s| s.read_at),
        ..Default::default()
    };
    let (sql, hour) = match since_hour {
        None => ("SELECT key, n FROM client_totals WHERE hour = -1", -1),
        Some(h) => (
            "SELECT key, SUM(n) FROM client_totals WHERE hour >= ?1 GROUP BY key",
            h,
        ),
    };
    let mut stmt = c.prepare(sql)?;
    let bind = if since_hour.is_some() { 1 } else { 0 };
    let mut rows = if bind == 1 {
        stmt.query([hour])?
    } else {
        stmt.query([])?
    };
    while let Some(r) = rows.next()? {
        let (key, n): (String, u64) = (r.get(0)?, r.get(1)?);
        if key == "bytes" {
            f.bytes = n;
        } else if let Some(i) = ResultClass::ALL.iter().position(|c| c.as_str() == key) {
            f.requests.0[i] = n;
        } else if let Some(i) = Skip::ALL.iter().position(|s| s.as_str() == key) {
            f.skipped.0[i] = n;
        }
    }
    f.top_modules = top_modules(c, since_hour, top)?;
    f.top_misses = top_misses(c, since_hour, top)?;
    f.rejected = c
        .prepare(
            "SELECT reason, n, last_seen, example FROM client_rejects ORDER BY n DESC, reason",
        )?
        .query_map([], |r| {
            Ok(RejectCount {
                reason: r.get(0)?,
                count: r.get(1)?,
                last_seen: r.get(2)?,
                example: r.get(3)?,
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(f)
}

fn top_modules(
    c: &Connection,
    since_hour: Option<i64>,
    top: usize,
) -> rusqlite::Result<Vec<TopModule>> {
    let sql = match since_hour {
        None => {
            "SELECT path, SUM(uses), SUM(misses), SUM(bytes), MAX(last_used)
             FROM client_use WHERE ?1 IS NULL GROUP BY path HAVING SUM(uses) > 0
             ORDER BY 2 DESC, path LIMIT ?2"
        }
        Some(_) => {
            "SELECT h.path, SUM(h.uses), SUM(h.misses), SUM(h.bytes),
               (SELECT MAX(u.last_used) FROM client_use u WHERE u.path = h.path)
             FROM client_module_hours h WHERE h.hour >= ?1 GROUP BY h.path
             HAVING SUM(h.uses) > 0 ORDER BY 2 DESC, h.path LIMIT ?2"
        }
    };
    c.prepare(sql)?
        .query_map(params![since_hour, top as i64], |r| {
            Ok(TopModule {
                path: r.get(0)?,
                uses: r.get(1)?,
                misses: r.get(2)?,
                bytes: r.get(3)?,
                last_used: r.get(4)?,
            })
        })?
        .collect()
}

fn top_misses(
    c: &Connection,
    since_hour: Option<i64>,
    top: usize,
) -> rusqlite::Result<Vec<TopMiss>> {
    let sql = match since_hour {
        None => {
            "SELECT path, version, misses, last_missed FROM client_use
             WHERE ?1 IS NULL AND misses > 0
             ORDER BY misses DESC, last_missed DESC, path, version LIMIT ?2"
        }
        Some(_) => {
            "SELECT h.path, h.version, SUM(h.misses),
               (SELECT u.last_missed FROM client_use u
                WHERE u.path = h.path AND u.version = h.version)
             FROM client_miss_hours h WHERE h.hour >= ?1 GROUP BY h.path, h.version
             HAVING SUM(h.misses) > 0 ORDER BY 3 DESC, 4 DESC, h.path, h.version LIMIT ?2"
        }
    };
    c.prepare(sql)?
        .query_map(params![since_hour, top as i64], |r| {
            Ok(TopMiss {
                path: r.get(0)?,
                version: r.get(1)?,
                misses: r.get(2)?,
                last_missed: r.get(3)?,
            })
        })?
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clients::log::LogLine;
    use crate::state::tests::migrated;
    use std::borrow::Cow;

    fn batch(lines: &[(i64, &str, &str, u16, u64)]) -> BatchFigures {
        let mut b = crate::clients::batch::ClientBatch::default();
        let mut interner = crate::clients::batch::Interner::default();
        for &(time, method, target, status, bytes) in lines {
            let line = LogLine {
                time,
                method: Cow::Borrowed(method),
                target: Cow::Borrowed(target),
                status,
                bytes,
            };
            b.add(&mut interner, &line);
        }
        b.resolve(&interner)
    }

    fn cursor(offset: u64) -> LogCursor {
        LogCursor {
            dev: 1,
            ino: 2,
            head_len: offset.min(4096),
            head_sha256: "00".repeat(32),
            offset,
        }
    }

    /// The second reader, starting from the same cursor, records nothing.
    // See: #14
    #[test]
    fn issue_14_two_readers_from_one_cursor_count_once() {
        let mut c = migrated();
        let b = || batch(&[(7200, "GET", "/a.io/m/@v/v1.0.0.zip", 200, 10)]);
        assert_eq!(
            record_batch(&mut c, None, &cursor(10), &b()).unwrap(),
            Some(1)
        );
        assert_eq!(record_batch(&mut c, None, &cursor(10), &b()).unwrap(), None);
        assert_eq!(
            record_batch(&mut c, Some(1), &cursor(20), &b()).unwrap(),
            Some(2)
        );
        assert_eq!(
            record_batch(&mut c, Some(1), &cursor(20), &b()).unwrap(),
            None
        );
        let f = client_figures(&c, None, 10).unwrap();
        assert_eq!(f.requests.get(ResultClass::Use), 2);
        assert_eq!(client_cursor(&c).unwrap().unwrap().cursor, cursor(20));
    }

    // See: #14
    #[test]
    fn issue_14_figures_per_module_and_misses_for_learning() {
        let mut c = migrated();
        let h = chrono::Utc::now().timestamp() / 3600 * 3600;
        let b = batch(&[
            (h, "GET", "/a.io/m/@v/v1.0.0.mod", 200, 5),
            (h + 1, "GET", "/a.io/m/@v/v1.0.0.zip", 200, 100),
            (h + 2, "GET", "/a.io/m/@v/v1.1.0.info", 404, 0),
            (
                h + 3,
                "GET",
                "/sumdb/sum.golang.org/lookup/a.io/m@v1.1.0",
                404,
                0,
            ),
            (h + 4, "GET", "/b.io/x/@v/list", 404, 0),
            (h + 5, "HEAD", "/a.io/m/@v/v1.0.0.zip", 200, 0),
            (h + 6, "GET", "/a.io/m/@v/main.info", 404, 0),
            (h - 3600, "GET", "/../x", 404, 0),
        ]);
        record_batch(&mut c, None, &cursor(1), &b).unwrap();
        let misses: Vec<(String, String, String, String, i64)> = c
            .prepare("SELECT path, version, kind, via, misses FROM client_misses ORDER BY path")
            .unwrap()
            .query_map([], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        let row = |p: &str, v: &str, k: &str, via: &str, n| {
            (p.to_owned(), v.to_owned(), k.to_owned(), via.to_owned(), n)
        };
        assert_eq!(
            misses,
            [
                row("a.io/m", "v1.1.0", "version", "lookup", 2),
                row("b.io/x", "", "listing", "proxy", 1)
            ]
        );
        let f = client_figures(&c, None, 10).unwrap();
        assert_eq!(
            (
                f.requests.get(ResultClass::Use),
                f.requests.get(ResultClass::Miss)
            ),
            (2, 3)
        );
        assert_eq!(f.requests.get(ResultClass::Probe), 1);
        assert_eq!(f.skipped.get(Skip::NonCanonical), 1);
        assert_eq!(f.skipped.get(Skip::Rejected), 1);
        assert_eq!(f.hit_ratio(), Some(0.4));
        assert_eq!(f.top_modules[0].path, "a.io/m");
        assert_eq!((f.top_modules[0].uses, f.top_modules[0].bytes), (2, 105));
        assert_eq!(f.top_misses[0].path, "a.io/m");
        assert_eq!(f.top_misses[0].misses, 2);
        assert_eq!(f.rejected[0].reason, "dot_dot");
        // The window since the hour of the lines leaves the rejected line
        // of the hour before out.
        let since = client_figures(&c, Some(h / 3600), 10).unwrap();
        assert_eq!(since.skipped.get(Skip::Rejected), 0);
        assert_eq!(since.requests.get(ResultClass::Use), 2);
        assert_eq!(since.top_misses.len(), 2);
    }
}
