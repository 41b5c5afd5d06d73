//! Issue 5, end to end: every version is verified against the checksum database before it is
//! published, and the tree carries an offline copy of that database which the real `go`
//! command, reaching nothing but our nginx, uses to verify everything it downloads.
//!
//! The upstream serves Go's module corpus and a test checksum database (`sumdb.rs`, a real
//! Merkle log signed with a fresh key) under `/sumdb/<name>/`, where gomirror finds it the way
//! `go` does. The log is padded so lookups need full and partial tiles at two levels.

use std::sync::Arc;

use gomirror::sync::SyncError;

use crate::corpus::load_go_corpus;
use crate::harness::{corpus_upstream, gomirror, run_command, Mirror};
use crate::nginx::{find_nginx, Nginx, Workers};
use crate::sumdb::SumdbServer;
use crate::sumdb_go::{describe, go_or_skip, sums, GoClient};
use crate::upstream::{ModuleFiles, Upstream};

const DB: &str = "sum.trust.example";

/// A program importing rsc.io/quote v1.5.2 needs these three (its go.mod requires sampler,
/// whose go.mod requires that x/text pseudo-version).
const WATCH: &[(&str, &str)] = &[
    ("rsc.io/quote", "v1.5.2"),
    ("rsc.io/sampler", "v1.3.0"),
    ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
];

const QUOTE_H1: &str = "h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=";

fn corpus_files(targets: &[(&str, &str)]) -> Vec<ModuleFiles> {
    load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .filter(|m| {
            targets
                .iter()
                .any(|(p, v)| m.path == *p && (m.version == *v || *v == "all"))
        })
        .collect()
}

/// The corpus upstream with a database holding the records of `targets` (as the real
/// database would: hashes of what upstream serves) among padding.
async fn upstream_with_db(targets: &[(&str, &str)]) -> (Upstream, Arc<SumdbServer>) {
    let upstream = corpus_upstream().await;
    let db = SumdbServer::new(DB);
    db.pad(300);
    let files = corpus_files(targets);
    assert_eq!(db.add_modules(&files), files.len(), "corpus versions hash");
    db.pad(1000);
    upstream.attach_sumdb(db.clone());
    (upstream, db)
}

fn verifying_mirror(upstream: &Upstream, db: &SumdbServer, watch: &[(&str, &str)]) -> Mirror {
    let mut mirror = Mirror::new(&upstream.url(), watch);
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    mirror
}

fn sumdb_file(mirror: &Mirror, rel: &str) -> std::path::PathBuf {
    mirror.tree().join("sumdb").join(DB).join(rel)
}

/// Writes a module that imports rsc.io/quote and returns its directory.
pub(crate) fn hello_module() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(
        dir.path().join("go.mod"),
        "module example.com/hello\n\ngo 1.19\n\nrequire rsc.io/quote v1.5.2\n",
    )
    .expect("go.mod");
    std::fs::write(
        dir.path().join("hello.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"rsc.io/quote\"\n)\n\n\
         func main() { fmt.Println(quote.Hello()) }\n",
    )
    .expect("hello.go");
    dir
}

#[tokio::test]
async fn go_verifies_and_builds_from_the_offline_copy_alone() {
    let Some(go) = go_or_skip("go_verifies_and_builds_from_the_offline_copy_alone") else {
        return;
    };
    let Some(nginx) = find_nginx() else {
        assert!(
            std::env::var("GOMIRROR_REQUIRE_TOOLS").as_deref() != Ok("1"),
            "nginx not found and GOMIRROR_REQUIRE_TOOLS=1"
        );
        eprintln!("skipping: nginx not found");
        return;
    };
    let (upstream, db) = upstream_with_db(WATCH).await;
    let mirror = verifying_mirror(&upstream, &db, WATCH);
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.summary.published, 3);
    assert_eq!(db.lookups(), 3, "one lookup per version");
    for rel in ["supported", "latest", "lookup/rsc.io/quote@v1.5.2"] {
        assert!(
            sumdb_file(&mirror, rel).is_file(),
            "{rel} in the offline copy"
        );
    }

    // Only our tree answers from now on: the upstream's database is switched off and go's
    // GOPROXY names nginx alone, so every lookup and tile comes from the offline copy.
    db.set_disabled(true);
    let server = Nginx::start(&nginx, &mirror.tree(), Workers::SameUser);
    let client = GoClient::with_proxy(go, &server.url(), db.vkey());
    let out = client.download(&["rsc.io/quote@v1.5.2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(sums(&out, "rsc.io/quote").0, QUOTE_H1);
    let hello = hello_module();
    let built = client
        .run(hello.path(), &["build", "-o", "hello", "."])
        .await;
    assert!(built.status.success(), "go build: {}", describe(&built));
    let ran = std::process::Command::new(hello.path().join("hello"))
        .output()
        .expect("run hello");
    assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "Hello, world.");
    let go_sum = std::fs::read_to_string(hello.path().join("go.sum")).expect("go.sum");
    assert!(
        go_sum.contains(&format!("rsc.io/quote v1.5.2 {QUOTE_H1}")),
        "{go_sum}"
    );
    assert_eq!(db.lookups(), 3, "go asked the disabled upstream nothing");

    // The tree at rest verifies, offline.
    let verified = run_command(gomirror(&mirror.config_path(), &["verify", "--json"])).await;
    assert_eq!(verified.code, Some(0), "{verified:#?}");
    let json: serde_json::Value = serde_json::from_str(&verified.stdout).expect("json");
    assert_eq!(json["versions"], 3);
    assert_eq!(json["lookups"], 3);
    assert_eq!(json["supported"], true);
}

#[tokio::test]
async fn go_fails_on_a_tampered_tile_or_lookup_in_our_tree() {
    let Some(go) = go_or_skip("go_fails_on_a_tampered_tile_or_lookup_in_our_tree") else {
        return;
    };
    let (upstream, db) = upstream_with_db(WATCH).await;
    let mirror = verifying_mirror(&upstream, &db, WATCH);
    assert!(mirror.sync().await.expect("sync runs").all_ok());
    db.set_disabled(true);
    let proxy = format!("file://{}", mirror.tree().display());
    let honest = GoClient::with_proxy(go.clone(), &proxy, db.vkey());
    let out = honest.download(&["rsc.io/quote@v1.5.2"]).await;
    assert!(out.status.success(), "untampered: {}", describe(&out));

    // The tile holding the record's own hash, with that hash changed. (Go 1.19 checks a
    // record against that hash; it does not always authenticate a full tile below the right
    // edge against its parent, so a change elsewhere in it can go unnoticed by `go`, not by
    // `gomirror verify`.)
    let lookup = sumdb_file(&mirror, "lookup/rsc.io/quote@v1.5.2");
    let body = std::fs::read_to_string(&lookup).expect("read lookup");
    let id: i64 = body
        .lines()
        .next()
        .and_then(|l| l.parse().ok())
        .expect("record id");
    let tile = sumdb_file(&mirror, &format!("tile/8/0/{:03}", id / 256));
    let original = std::fs::read(&tile).expect("read tile");
    let mut bad = original.clone();
    bad[(id % 256) as usize * 32] ^= 0x01;
    std::fs::write(&tile, &bad).expect("write tile");
    let client = GoClient::with_proxy(go.clone(), &proxy, db.vkey());
    let out = client.download(&["rsc.io/quote@v1.5.2"]).await;
    assert!(
        !out.status.success(),
        "tampered tile accepted: {}",
        describe(&out)
    );
    let err = String::from_utf8_lossy(&out.stdout);
    assert!(
        err.contains("cannot authenticate record data"),
        "{}",
        describe(&out)
    );
    let audit = run_command(gomirror(&mirror.config_path(), &["verify"])).await;
    assert_eq!(audit.code, Some(1), "{audit:#?}");
    assert!(
        audit.stdout.contains("rsc.io/quote@v1.5.2: lookup:"),
        "{audit:#?}"
    );
    std::fs::write(&tile, &original).expect("restore tile");

    // A right-edge tile changed: it no longer hashes to the signed tree.
    let edge = std::fs::read_dir(sumdb_file(&mirror, "tile/8/1"))
        .expect("level-1 tiles")
        .map(|e| e.expect("entry").path())
        .find(|p| p.extension().is_some_and(|x| x == "p"))
        .map(|dir| {
            std::fs::read_dir(dir)
                .expect("partial")
                .next()
                .expect("a width")
                .expect("entry")
                .path()
        })
        .expect("a partial level-1 tile");
    let original = std::fs::read(&edge).expect("read edge tile");
    let mut bad = original.clone();
    bad[0] ^= 0x01;
    std::fs::write(&edge, &bad).expect("write edge tile");
    let client = GoClient::with_proxy(go.clone(), &proxy, db.vkey());
    let out = client.download(&["rsc.io/quote@v1.5.2"]).await;
    assert!(
        !out.status.success(),
        "tampered edge tile accepted: {}",
        describe(&out)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("inconsistent tile"),
        "{}",
        describe(&out)
    );
    let audit = run_command(gomirror(&mirror.config_path(), &["verify"])).await;
    assert_eq!(audit.code, Some(1), "{audit:#?}");
    std::fs::write(&edge, &original).expect("restore edge tile");

    // A lookup whose record claims another hash, under the genuine signed head.
    let forged = body.replace(QUOTE_H1, "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=");
    assert_ne!(forged, body);
    std::fs::write(&lookup, forged).expect("write lookup");
    let client = GoClient::with_proxy(go, &proxy, db.vkey());
    let out = client.download(&["rsc.io/quote@v1.5.2"]).await;
    assert!(
        !out.status.success(),
        "forged lookup accepted: {}",
        describe(&out)
    );
    let audit = run_command(gomirror(&mirror.config_path(), &["verify", "--json"])).await;
    assert_eq!(audit.code, Some(1), "{audit:#?}");
    let json: serde_json::Value = serde_json::from_str(&audit.stdout).expect("json");
    let problems = json["problems"].as_array().expect("problems").clone();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0]["subject"], "rsc.io/quote@v1.5.2");
}

#[tokio::test]
async fn a_zip_the_database_disagrees_with_is_quarantined_not_published() {
    let (upstream, db) = upstream_with_db(WATCH).await;
    // Upstream now serves another valid zip for rsc.io/quote v1.5.2: same files but one
    // changed byte of content, so a different h1: than the log holds.
    let mut tampered = corpus_files(&[("rsc.io/quote", "v1.5.2")]).remove(0);
    tampered.zip = crate::zipgen::module_zip(
        "rsc.io/quote@v1.5.2/",
        &[
            ("go.mod", b"module \"rsc.io/quote\"\n"),
            (
                "quote.go",
                b"package quote\n\nfunc Hello() string { return \"pwned\" }\n",
            ),
        ],
    )
    .into();
    upstream.add(tampered);
    let mirror = verifying_mirror(&upstream, &db, WATCH);
    let report = mirror.sync().await.expect("sync runs");
    assert!(!report.all_ok(), "a SECURITY quarantine must fail the run");
    assert_eq!(report.summary.quarantined, 1, "{report:?}");
    assert_eq!(report.summary.published, 2, "{report:?}");
    let row = mirror
        .rows()
        .into_iter()
        .find(|r| r.path == "rsc.io/quote")
        .expect("row");
    assert_eq!(row.status, "quarantined");
    let reason = row.last_error.unwrap_or_default();
    assert!(
        reason.starts_with("SECURITY ERROR: checksum mismatch"),
        "{reason}"
    );
    assert!(
        reason.contains(QUOTE_H1),
        "names the database's hash: {reason}"
    );
    assert!(
        !mirror.tree().join("rsc.io/quote/@v/v1.5.2.zip").exists()
            && !mirror.tree().join("rsc.io/quote/@v/v1.5.2.info").exists()
            && !sumdb_file(&mirror, "lookup/rsc.io/quote@v1.5.2").exists(),
        "nothing of the tampered version is in the tree"
    );
    let cli = run_command(gomirror(&mirror.config_path(), &["sync", "--no-progress"])).await;
    assert_eq!(cli.code, Some(1), "{cli:#?}");
}

#[tokio::test]
async fn a_forked_log_stops_the_run() {
    let (upstream, db) = upstream_with_db(WATCH).await;
    let mirror = verifying_mirror(&upstream, &db, &WATCH[..2]);
    assert!(mirror.sync().await.expect("first sync").all_ok());
    // Same name and key, another history: the database now signs trees that do not extend
    // the one this mirror verified.
    let fork = SumdbServer::fork_of(&db);
    upstream.attach_sumdb(fork.clone());
    let mut mirror = mirror;
    mirror.watch = WATCH
        .iter()
        .map(|(m, v)| (m.to_string(), v.to_string()))
        .collect();
    let err = mirror.sync().await.expect_err("a fork must stop the run");
    assert!(matches!(err, SyncError::Sumdb(_)), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("has forked"), "{msg}");
    assert!(
        !mirror.tree().join("golang.org/x/text/@v/list").exists(),
        "nothing published"
    );
    let cli = run_command(gomirror(&mirror.config_path(), &["sync", "--no-progress"])).await;
    assert_eq!(cli.code, Some(2), "{cli:#?}");
    assert!(cli.stderr.contains("SECURITY ERROR"), "{cli:#?}");
    assert!(cli.stderr.contains("has forked"), "{cli:#?}");
}

#[tokio::test]
async fn private_modules_never_reach_the_database() {
    let (upstream, db) = upstream_with_db(WATCH).await;
    let mut mirror = verifying_mirror(&upstream, &db, WATCH);
    mirror
        .sumdb
        .push_str("private = [\"rsc.io/quote\", \"golang.org/x\"]\n");
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.summary.published, 3);
    assert_eq!(db.lookups_of("rsc.io/quote"), 0);
    assert_eq!(db.lookups_of("golang.org/x/text"), 0);
    assert_eq!(db.lookups_of("rsc.io/sampler"), 1);
    let quote = mirror
        .rows()
        .into_iter()
        .find(|r| r.path == "rsc.io/quote")
        .expect("row");
    assert_eq!(
        quote.h1_zip.as_deref(),
        Some(QUOTE_H1),
        "still hashed and recorded"
    );
    assert!(!sumdb_file(&mirror, "lookup/rsc.io/quote@v1.5.2").exists());
    assert!(sumdb_file(&mirror, "lookup/rsc.io/sampler@v1.3.0").exists());
}

/// New versions arrive after clients have visited: the copy is re-pinned to a newer head and
/// every lookup verifies for a fresh client, for one that cached the old head, and for one
/// that cached the new head and then reads a lookup written under the old one.
#[tokio::test]
async fn repinning_keeps_every_lookup_verifiable() {
    let Some(go) = go_or_skip("repinning_keeps_every_lookup_verifiable") else {
        return;
    };
    let (upstream, db) = upstream_with_db(WATCH).await;
    let mirror = verifying_mirror(&upstream, &db, &WATCH[..1]);
    assert!(mirror.sync().await.expect("first sync").all_ok());
    let proxy = format!("file://{}", mirror.tree().display());
    let old_client = GoClient::with_proxy(go.clone(), &proxy, db.vkey());
    let out = old_client.download(&["rsc.io/quote@v1.5.2"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let old_head = old_client
        .cached_latest(DB)
        .expect("go cached the pinned head");
    let first_pin = std::fs::read(sumdb_file(&mirror, "latest")).expect("latest");
    assert_eq!(old_head, first_pin);

    // The log grows (past a tile boundary), and the mirror takes two more versions.
    db.pad(700);
    let mut mirror = mirror;
    mirror.watch = WATCH
        .iter()
        .map(|(m, v)| (m.to_string(), v.to_string()))
        .collect();
    assert!(mirror.sync().await.expect("second sync").all_ok());
    let second_pin = std::fs::read(sumdb_file(&mirror, "latest")).expect("latest");
    assert_ne!(first_pin, second_pin, "re-pinned to the newer head");
    db.set_disabled(true);

    // Cached the old head; reads a lookup signed with the new one.
    let out = old_client.download(&["rsc.io/sampler@v1.3.0"]).await;
    assert!(out.status.success(), "old head cached: {}", describe(&out));
    assert_eq!(old_client.cached_latest(DB), Some(second_pin.clone()));
    // Cached the new head now; reads the lookup written under the old one (fresh cache of
    // modules, same GOPATH would reuse it, so a second client that first saw the new head).
    let new_client = GoClient::with_proxy(go.clone(), &proxy, db.vkey());
    let out = new_client.download(&["rsc.io/sampler@v1.3.0"]).await;
    assert!(out.status.success(), "{}", describe(&out));
    let out = new_client.download(&["rsc.io/quote@v1.5.2"]).await;
    assert!(
        out.status.success(),
        "new head cached, old lookup: {}",
        describe(&out)
    );
    // A fresh client, everything.
    let fresh = GoClient::with_proxy(go, &proxy, db.vkey());
    let out = fresh
        .download(&[
            "rsc.io/quote@v1.5.2",
            "rsc.io/sampler@v1.3.0",
            "golang.org/x/text@v0.0.0-20170915032832-14c0d48ead0c",
        ])
        .await;
    assert!(out.status.success(), "fresh: {}", describe(&out));
    let audit = run_command(gomirror(&mirror.config_path(), &["verify"])).await;
    assert_eq!(audit.code, Some(0), "{audit:#?}");
}

/// A tree filled while verification was off gets its lookups on the first verifying run,
/// and only then is the offline copy `supported`.
#[tokio::test]
async fn versions_published_before_verification_are_backfilled() {
    let (upstream, db) = upstream_with_db(WATCH).await;
    let mut mirror = Mirror::new(&upstream.url(), WATCH);
    assert!(mirror.sync().await.expect("unverified sync").all_ok());
    assert!(!mirror.tree().join("sumdb").exists());
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    let report = mirror.sync().await.expect("verifying sync");
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(report.summary.published, 0, "nothing new to fetch");
    assert_eq!(db.lookups(), 3);
    assert!(sumdb_file(&mirror, "supported").is_file());
    let audit = run_command(gomirror(&mirror.config_path(), &["verify"])).await;
    assert_eq!(audit.code, Some(0), "{audit:#?}");
}

/// `[sumdb] url` reaches a database that no upstream proxy serves; without it, the same
/// database name would be looked for at `https://<name>/`, which does not exist here.
#[tokio::test]
async fn the_database_url_can_be_configured() {
    let upstream = corpus_upstream().await;
    let db = SumdbServer::new(DB);
    db.add_modules(&corpus_files(&WATCH[..1]));
    let elsewhere = Upstream::start(Vec::new()).await;
    elsewhere.attach_sumdb(db.clone());
    let mut mirror = verifying_mirror(&upstream, &db, &WATCH[..1]);
    let err = mirror
        .sync()
        .await
        .expect_err("no database at https://<name>/ here");
    assert!(matches!(err, SyncError::Sumdb(_)), "{err:?}");
    mirror.sumdb = format!("key = \"{} {}/sumdb/{DB}\"\n", db.vkey(), elsewhere.url());
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:?}");
    assert_eq!(db.lookups_of("rsc.io/quote"), 1);
    assert_eq!(upstream.requests(&format!("/sumdb/{DB}/lookup")), 0);
    assert_eq!(
        upstream.requests(&format!("/sumdb/{DB}/supported")),
        1,
        "probed once, 404"
    );
}

/// `status --json` and the Prometheus textfile show the verified and the pinned tree, and
/// how many published versions have a record.
#[tokio::test]
async fn status_and_metrics_show_the_checksum_database() {
    let (upstream, db) = upstream_with_db(WATCH).await;
    let mut mirror = verifying_mirror(&upstream, &db, WATCH);
    mirror
        .sumdb
        .push_str("[metrics]\ntextfile = \"gomirror.prom\"\n");
    let synced = run_command(gomirror(&mirror.config_path(), &["sync", "--no-progress"])).await;
    assert_eq!(synced.code, Some(0), "{synced:#?}");
    let status = run_command(gomirror(&mirror.config_path(), &["status", "--json"])).await;
    assert_eq!(status.code, Some(0), "{status:#?}");
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("json");
    let entry = &json["sumdb"][0];
    assert_eq!(entry["name"], DB);
    assert_eq!(entry["verified_tree"], db.size());
    assert_eq!(entry["pinned_tree"], db.size());
    assert_eq!(entry["records"], 3);
    let text = std::fs::read_to_string(mirror.dir.path().join("gomirror.prom")).expect("textfile");
    let scrape = crate::metrics::parse(&text);
    let label = Some(("db", DB));
    let get = |name| crate::metrics::get(&scrape, name, label);
    assert_eq!(get("gomirror_sumdb_verified_tree_size"), db.size() as f64);
    assert_eq!(get("gomirror_sumdb_pinned_tree_size"), db.size() as f64);
    assert_eq!(get("gomirror_sumdb_records"), 3.0);
}

/// What a go client of the tree may rely on at any instant of a verifying sync: once
/// `supported` is served, every version a list names has its lookup, and every lookup names a
/// head whose tiles are there (`gomirror verify` checks the proofs of the recorded ones).
fn check_listed_have_lookups(mirror: &Mirror, when: &str) -> usize {
    let tree = mirror.tree();
    if !sumdb_file(mirror, "supported").exists() {
        return 0;
    }
    let mut listed = 0;
    for rel in crate::harness::files_in(&tree) {
        let Some(module) = rel.strip_suffix("/@v/list") else {
            continue;
        };
        let text = std::fs::read_to_string(tree.join(&rel)).expect("read a list");
        for version in text.lines() {
            let escaped = gomirror::module::Version::new(version)
                .expect("listed version")
                .escaped();
            let lookup = sumdb_file(mirror, &format!("lookup/{module}@{escaped}"));
            let body = std::fs::read_to_string(&lookup)
                .unwrap_or_else(|e| panic!("{when}: {module}@{version} listed, lookup: {e}"));
            assert!(
                body.contains(" h1:"),
                "{when}: torn lookup {}",
                lookup.display()
            );
            listed += 1;
        }
    }
    listed
}

/// kill -9 at random points of verifying syncs: no listed version ever lacks its lookup, and
/// the next complete run leaves a tree that `gomirror verify` and the real `go` accept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_verifying_syncs_keeps_the_offline_copy_usable() {
    let mut modules = Vec::new();
    for m in ["example.com/k0", "example.com/k1", "example.com/k2"] {
        for minor in 0..8 {
            let v = format!("v1.{minor}.0");
            modules.push(crate::zipgen::synthetic_module(m, &v, 4, 16 * 1024));
        }
    }
    let upstream = Upstream::start(modules.clone()).await;
    let db = SumdbServer::new(DB);
    db.pad(500);
    assert_eq!(db.add_modules(&modules), modules.len());
    upstream.attach_sumdb(db.clone());
    let watch = [
        ("example.com/k0", "all"),
        ("example.com/k1", "all"),
        ("example.com/k2", "all"),
    ];
    let mut mirror = verifying_mirror(&upstream, &db, &watch);
    mirror.fetch.push_str("concurrency = 2\n");
    upstream
        .faults()
        .set_latency(std::time::Duration::from_millis(25));
    let mut delay_ms = 0;
    let mut listed_after_kill = Vec::new();
    for i in 0..8 {
        // A 429 a few versions in pauses the run for a second, so the versions done so far
        // are published (lookups, tiles, lists) before the kill can land.
        let done: Vec<(String, String)> = mirror
            .rows()
            .into_iter()
            .filter(|r| r.status == "published")
            .map(|r| (r.path, r.version))
            .collect();
        let pause = modules
            .iter()
            .filter(|m| !done.contains(&(m.path.clone(), m.version.clone())))
            .nth(3)
            .map(|m| format!("/{}/@v/{}.zip", m.path, m.version));
        upstream.faults().clear();
        upstream
            .faults()
            .set_latency(std::time::Duration::from_millis(25));
        if let Some(p) = pause {
            let fault = crate::upstream::Fault::TooMany {
                retry_after_secs: 1,
            };
            upstream.faults().push(&p, fault, 1);
        }
        let mut cmd = mirror.command(&["sync", "--no-progress"]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let published_before = published_count(&mirror);
        let mut child = cmd.spawn().expect("spawn gomirror");
        // Kill once the run has published something of its own (a fixed delay
        // missed the middle on a loaded machine), a little later each time.
        wait_for_published(&mirror, published_before, &mut child).await;
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        let _ = child.start_kill();
        child.wait().await.expect("reap");
        listed_after_kill.push(check_listed_have_lookups(
            &mirror,
            &format!("after kill #{i}"),
        ));
        delay_ms += 40;
        // The log grows meanwhile, so later runs re-pin.
        if i == 3 {
            db.pad(300);
        }
    }
    let cut = listed_after_kill
        .iter()
        .filter(|&&n| n > 0 && n < modules.len())
        .count();
    assert!(
        cut >= 2,
        "too few kills landed mid-way (versions listed with `supported` served after each kill: \
         {listed_after_kill:?})"
    );
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(
        check_listed_have_lookups(&mirror, "after the final run"),
        modules.len()
    );
    let temps: Vec<String> = crate::harness::files_in(&mirror.tree().join("sumdb"))
        .into_iter()
        .filter(|f| f.rsplit('/').next().is_some_and(|n| n.starts_with(".tmp-")))
        .collect();
    assert!(temps.is_empty(), "temporary files left: {temps:?}");
    let audit = mirror.run_bin(&["verify"]).await;
    assert_eq!(audit.code, Some(0), "{audit:#?}");
    let Some(go) = go_or_skip("kill_9_during_verifying_syncs_keeps_the_offline_copy_usable") else {
        return;
    };
    db.set_disabled(true);
    let proxy = format!("file://{}", mirror.tree().display());
    let targets: Vec<String> = modules
        .iter()
        .map(|m| format!("{}@{}", m.path, m.version))
        .collect();
    let targets: Vec<&str> = targets.iter().map(String::as_str).collect();
    let out = GoClient::with_proxy(go, &proxy, db.vkey())
        .download(&targets)
        .await;
    assert!(out.status.success(), "{}", describe(&out));
}

/// Published versions in the mirror's state (0 before its first run).
/// A database the run is still creating counts as 0.
fn published_count(mirror: &Mirror) -> usize {
    let Ok(db) = rusqlite::Connection::open_with_flags(
        mirror.database(),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    ) else {
        return 0;
    };
    db.query_row(
        "SELECT count(*) FROM versions WHERE status = 'published'",
        [],
        |r| r.get::<_, i64>(0),
    )
    .map_or(0, |n| n as usize)
}

/// Waits (at most 30 s) until more than `before` versions are published,
/// or the run has ended.
async fn wait_for_published(mirror: &Mirror, before: usize, run: &mut tokio::process::Child) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while published_count(mirror) <= before
        && std::time::Instant::now() < deadline
        && matches!(run.try_wait(), Ok(None))
    {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}
