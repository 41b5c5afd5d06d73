//! Learning from clients' misses (`[clients] learn`): misses recorded in
//! `client_misses` become the next sync's work, within the rules, the
//! private patterns and the per-sync cap. The misses are written here as
//! reading the access log writes them; `clients.rs` drives the whole loop
//! through a real nginx and the real go command.
// See: #14

use crate::harness::Mirror;
use crate::upstream::Upstream;
use crate::zipgen::synthetic_module;

/// A miss as reading the access log records it.
fn miss(m: &Mirror, path: &str, version: &str, via: &str, misses: i64) {
    let kind = if version.is_empty() {
        "listing"
    } else {
        "version"
    };
    let now = time_now();
    m.db()
        .execute(
            "INSERT INTO client_misses (path, version, kind, via, misses, first_missed, last_missed)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)
             ON CONFLICT (path, version) DO UPDATE SET
                 misses = misses + excluded.misses, last_missed = excluded.last_missed",
            rusqlite::params![path, version, kind, via, misses, now],
        )
        .expect("insert miss");
}

/// Now as state stores times: RFC 3339 UTC, whole seconds.
fn time_now() -> String {
    let now = time::OffsetDateTime::now_utc();
    now.replace_nanosecond(0)
        .expect("0 ns")
        .format(&time::format_description::well_known::Rfc3339)
        .expect("format")
}

fn outcome(m: &Mirror, path: &str, version: &str) -> (Option<String>, Option<String>) {
    m.db()
        .query_row(
            "SELECT outcome, retry_after FROM client_misses WHERE path = ?1 AND version = ?2",
            [path, version],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .expect("miss row")
}

async fn upstream() -> Upstream {
    Upstream::start(vec![
        synthetic_module("example.com/a", "v1.0.0", 3, 1024),
        synthetic_module("example.com/a", "v1.1.0", 3, 1024),
        synthetic_module("example.com/b", "v0.1.0", 3, 1024),
        synthetic_module("example.com/b", "v0.2.0", 3, 1024),
        synthetic_module("github.com/attacker-x/evil", "v1.0.0", 3, 1024),
        synthetic_module("corp.example.com/secret", "v1.0.0", 3, 1024),
    ])
    .await
}

fn learning_mirror(upstream: &Upstream, extra: &str) -> Mirror {
    let mut m = Mirror::new(&upstream.url(), &[]);
    m.upstream = "private = [\"corp.example.com\"]\n".into();
    m.extra = format!(
        "[clients]\nlearn = true\n{extra}[[clients.rule]]\nexclude = \"github.com/attacker-*\"\n\
         [[clients.rule]]\ninclude = \"*\"\n"
    );
    m
}

// See: #14
#[tokio::test]
async fn issue_14_missed_versions_and_listings_are_mirrored_by_the_next_sync() {
    let upstream = upstream().await;
    let m = learning_mirror(&upstream, "");
    let first = m.sync().await.expect("empty sync");
    assert!(
        first.learn.is_none(),
        "nothing missed yet: {:?}",
        first.learn
    );

    miss(&m, "example.com/a", "v1.0.0", "proxy", 3);
    miss(&m, "example.com/a", "v1.1.0", "lookup", 1);
    miss(&m, "example.com/a", "v1.9.9", "proxy", 1);
    miss(&m, "example.com/b", "", "proxy", 2);
    // go asks about every prefix of an import path it cannot place.
    miss(&m, "example.com/b/sub", "", "proxy", 1);
    miss(&m, "example.com/nothing", "", "proxy", 1);
    miss(&m, "github.com/attacker-x/evil", "v1.0.0", "proxy", 9);
    miss(&m, "corp.example.com/secret", "", "proxy", 4);
    miss(&m, "corp.example.com/secret", "v1.0.0", "lookup", 4);

    let report = m.sync().await.expect("learning sync");
    let learn = report.learn.clone().expect("learn report");
    assert!(
        report.all_ok(),
        "a learned version upstream lacks fails nothing: {report:?}"
    );
    assert_eq!((learn.versions, learn.listings), (3, 3), "{learn:?}");
    assert_eq!(learn.listings_not_found, 2, "{learn:?}");
    assert_eq!(
        (learn.excluded, learn.private, learn.deferred),
        (1, 2, 0),
        "{learn:?}"
    );
    assert_eq!(learn.not_found, 1, "example.com/a@v1.9.9: {learn:?}");

    for zip in [
        "example.com/a/@v/v1.0.0.zip",
        "example.com/a/@v/v1.1.0.zip",
        "example.com/b/@v/v0.2.0.zip",
    ] {
        assert!(m.file(zip).is_some(), "{zip} mirrored");
    }
    assert!(
        m.file("example.com/b/@v/v0.1.0.zip").is_none(),
        "a listing learns @latest only"
    );
    assert_eq!(
        m.file("example.com/b/@v/list").as_deref(),
        Some(&b"v0.2.0\n"[..])
    );
    assert_eq!(upstream.requests("attacker"), 0, "excluded: never asked");
    assert_eq!(
        upstream.requests("corp.example.com"),
        0,
        "private: never asked"
    );

    assert_eq!(
        outcome(&m, "example.com/a", "v1.0.0").0.as_deref(),
        Some("published")
    );
    assert_eq!(
        outcome(&m, "example.com/b", "").0.as_deref(),
        Some("published")
    );
    assert_eq!(
        outcome(&m, "github.com/attacker-x/evil", "v1.0.0")
            .0
            .as_deref(),
        Some("excluded")
    );
    assert_eq!(
        outcome(&m, "corp.example.com/secret", "").0.as_deref(),
        Some("private")
    );
    let (gone, retry) = outcome(&m, "example.com/a", "v1.9.9");
    assert_eq!(gone.as_deref(), Some("not_found"));
    assert!(retry.is_some(), "held back for retry_not_found");
    let (prefix, retry) = outcome(&m, "example.com/b/sub", "");
    assert_eq!(prefix.as_deref(), Some("not_found"));
    assert!(retry.is_some(), "held back for retry_not_found");

    // Missed again within retry_not_found: not asked again.
    let asked = upstream.requests("example.com/b/sub/");
    assert!(asked > 0);
    // A second later than the learning, as times are stored.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    miss(&m, "example.com/b/sub", "", "proxy", 1);
    let again = m.sync().await.expect("third sync");
    assert!(again.all_ok(), "{again:?}");
    assert!(again.learn.is_none(), "nothing due: {:?}", again.learn);
    assert_eq!(
        upstream.requests("example.com/b/sub/"),
        asked,
        "not asked again"
    );
}

// See: #14
#[tokio::test]
async fn issue_14_a_flood_of_misses_is_bounded_per_sync() {
    let upstream = upstream().await;
    let m = learning_mirror(&upstream, "max_learned = 20\n");
    m.sync().await.expect("empty sync");
    {
        let db = m.db();
        let now = time_now();
        let mut stmt = db
            .prepare(
                "INSERT INTO client_misses (path, version, kind, via, misses, first_missed, last_missed)
                 VALUES (?1, '', 'listing', 'proxy', 1, ?2, ?2)",
            )
            .expect("prepare");
        for i in 0..500 {
            stmt.execute(rusqlite::params![format!("flood.example/p{i}"), now])
                .expect("insert");
        }
    }
    // The real module a build keeps missing goes first.
    miss(&m, "example.com/a", "v1.1.0", "proxy", 3);

    let report = m.sync().await.expect("flooded sync");
    let learn = report.learn.clone().expect("learn report");
    assert_eq!(learn.versions + learn.listings, 20, "{learn:?}");
    assert_eq!(
        learn.versions, 1,
        "the most-missed version is among them: {learn:?}"
    );
    assert_eq!(learn.deferred, 481, "{learn:?}");
    assert!(m.file("example.com/a/@v/v1.1.0.zip").is_some());
    // Each listing asks @v/list and @latest: 19 listings, nothing more.
    assert_eq!(upstream.requests("flood.example/"), 19 * 2);

    let next = m.sync().await.expect("next sync");
    let learn = next.learn.clone().expect("learn report");
    assert_eq!((learn.listings, learn.deferred), (20, 461), "{learn:?}");
    assert_eq!(upstream.requests("flood.example/"), 39 * 2);
}
