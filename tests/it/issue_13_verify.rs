//! Issue 13 (items 8, 12, 13, 15): `verify` names every tampered, missing or
//! stray file and `sync` repairs what it can; a quarantined version stays
//! out until `gomirror retry`; a corrupted state database is refused with a
//! clear message; the watchlist's rejected upstream entries are stored like
//! the feed's. Each test asserts what the operator sees: the output lines,
//! the exit code, the files of the tree.

use crate::harness::Mirror;
use crate::upstream::Upstream;
use crate::zipgen::{self, synthetic_module};

/// A quarantined version is not fetched again by the next sync: it stays
/// out (the run is still partial: the version is missing), and `status`
/// and the sync's last line say so, until `gomirror
/// retry` puts it back; then a sync publishes upstream's fixed files.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_quarantine_is_sticky_until_retry() {
    let q = "example.com/q";
    let good = synthetic_module(q, "v1.0.0", 2, 512);
    let mut bad = good.clone();
    bad.zip = zipgen::symlink(&format!("{q}@v1.0.0/")).into();
    let upstream = Upstream::start(vec![bad]).await;
    let mirror = Mirror::new(&upstream.url(), &[(q, "all")]);
    let first = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(first.code, Some(1), "{first:#?}");
    assert_eq!(mirror.row(q, "v1.0.0").status, "quarantined");
    let zips = upstream.requests("/@v/v1.0.0.zip");
    assert!(zips >= 1, "the first run fetched the zip");

    // Still missing, so still exit 1, but nothing is fetched.
    let second = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(second.code, Some(1), "{second:#?}");
    assert!(
        second.stderr.contains(
            "gomirror: sync partial: 0 fetched, 0 skipped, 0 quarantined, 0 not found, 0 failed"
        ) && second
            .stderr
            .contains(", 1 quarantined versions kept out until `gomirror retry`"),
        "{second:#?}"
    );
    assert_eq!(upstream.requests("/@v/v1.0.0.zip"), zips, "fetched again");
    assert_eq!(mirror.row(q, "v1.0.0").status, "quarantined");
    let status = mirror.run_bin(&["status"]).await;
    assert!(
        status.stdout.contains(
            "pending 0, quarantined 1 (kept out until `gomirror retry`), not found 0, failed 0"
        ),
        "{status:#?}"
    );

    upstream.add(good);
    let retry = mirror.run_bin(&["retry"]).await;
    assert_eq!(retry.code, Some(0), "{retry:#?}");
    assert_eq!(retry.stdout, format!("{q}@v1.0.0\n"), "{retry:#?}");
    assert_eq!(
        retry.stderr,
        "gomirror: retry: 1 failed or quarantined versions back to pending; \
         the next sync fetches them\n"
    );
    let third = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(third.code, Some(0), "{third:#?}");
    assert_eq!(mirror.row(q, "v1.0.0").status, "published");
    assert!(mirror.file(&format!("{q}/@v/v1.0.0.zip")).is_some());
}

/// Entries of a watched module's `@v/list` and `@latest` that can never be
/// mirrored are stored in `rejections`, so `status` lists them as it lists
/// the feed's (before: only counted in the sync's last line).
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_watchlist_rejections_are_stored() {
    let a = "example.com/a";
    let t = "example.com/t";
    let upstream = Upstream::start(vec![synthetic_module(a, "v1.0.0", 2, 512)]).await;
    upstream.set_raw(&format!("/{a}/@v/list"), "v1.0.0\n../../etc/passwd\n");
    // No tags: the module's @latest is read, and it names a bad version.
    upstream.set_raw(
        &format!("/{t}/@latest"),
        r#"{"Version":"v1.0.0/../x","Time":"2023-01-01T00:00:00Z"}"#,
    );
    let mirror = Mirror::new(&upstream.url(), &[(a, "all"), (t, "latest")]);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(", 2 upstream entries rejected"),
        "{run:#?}"
    );

    let stored: Vec<(String, String)> = mirror
        .db()
        .prepare("SELECT module, entry FROM rejections ORDER BY module")
        .and_then(|mut s| {
            s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<Result<_, _>>()
        })
        .expect("read rejections");
    assert_eq!(
        stored,
        [
            (a.to_string(), "../../etc/passwd".to_string()),
            (t.to_string(), "v1.0.0/../x".to_string())
        ]
    );
    let status = mirror.run_bin(&["status"]).await;
    assert_eq!(status.code, Some(0), "{status:#?}");
    assert!(
        status.stdout.contains("upstream entries rejected:"),
        "{status:#?}"
    );
    assert!(
        status
            .stdout
            .contains(&format!("  {a} \"../../etc/passwd\"  ")),
        "{status:#?}"
    );
    assert!(
        status.stdout.contains(&format!("  {t} \"v1.0.0/../x\"  ")),
        "{status:#?}"
    );
}

/// Damages the b-tree page of index `index` in the mirror's database (its
/// page type byte becomes invalid), the way a torn write or a bad disk
/// does; every other page stays intact, so the file still opens.
fn corrupt_index_page(mirror: &Mirror, index: &str) {
    let db = mirror.db();
    db.execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .expect("checkpoint");
    let page_size: u64 = db
        .query_row("PRAGMA page_size", [], |r| r.get(0))
        .expect("page size");
    let root: u64 = db
        .query_row(
            "SELECT rootpage FROM sqlite_schema WHERE name = ?1",
            [index],
            |r| r.get(0),
        )
        .expect("index root page");
    drop(db);
    let path = mirror.database();
    let mut bytes = std::fs::read(&path).expect("read database");
    let at = usize::try_from((root - 1) * page_size).expect("offset");
    bytes[at] = 0x6b;
    bytes[at + 1..at + 8].fill(0xff);
    std::fs::write(&path, bytes).expect("write database");
}

/// A damaged state database is refused, exit 2, naming the file and what
/// to do: by `verify`, by `daemon` at start, by `export`, and by `sync`
/// after an interrupted run (before: `verify` skipped rows, `sync` said ok,
/// `export` wrote a bundle).
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_corrupt_database_is_refused() {
    let a = "example.com/a";
    let upstream = Upstream::start(vec![synthetic_module(a, "v1.0.0", 2, 512)]).await;
    let mut mirror = Mirror::new(&upstream.url(), &[(a, "all")]);
    let key = mirror.dir.path().join("export.key");
    gomirror::bundle::export::keygen("mirror.example.com", &key).expect("keygen");
    mirror.extra = format!("[export]\nkey = \"{}\"\n", key.display());
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    // The process of the next run is killed: its row stays `running`.
    mirror
        .db()
        .execute(
            "INSERT INTO runs (started_at, pid, outcome) VALUES ('2024-01-01T00:00:00Z', 1, 'running')",
            [],
        )
        .expect("stage an interrupted run");
    corrupt_index_page(&mirror, "versions_status");
    let want = format!(
        "gomirror: state {}: database is corrupt: quick_check: ",
        mirror.database().display()
    );
    let advice = "; stop gomirror and restore it from a backup \
         (README \"Backing up the state database\")\n";
    let bundles = mirror.dir.path().join("bundles");
    std::fs::create_dir(&bundles).expect("bundle dir");
    let to = bundles.to_str().expect("utf-8 path");
    let export = ["export", "--to", to, "--no-progress"];
    for args in [
        &["verify"][..],
        &["sync", "--no-progress"],
        &["daemon"],
        &export,
    ] {
        let out = mirror.run_bin(args).await;
        assert_eq!(out.code, Some(2), "{args:?}: {out:#?}");
        let last = out.stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&want) && out.stderr.ends_with(advice),
            "{args:?}: {out:#?}"
        );
    }
    // Nothing was recorded on the damaged file: the interrupted run is
    // still the last one.
    let runs: i64 = mirror
        .db()
        .query_row("SELECT COUNT(*) FROM runs", [], |r| r.get(0))
        .expect("count runs");
    assert_eq!(runs, 2);
    assert_eq!(
        std::fs::read_dir(&bundles).expect("list").count(),
        0,
        "a bundle was written"
    );
}

/// `verify` names every tampered, missing or stray file with its module or
/// module@version, where before all of these passed: an edited `.info`, an
/// edited `@v/list` naming a version that does not exist, a deleted
/// `@latest`, a stray file, a zip replaced by a symlink out of the tree,
/// and a zip whose central directory changed but whose `h1:` did not.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_verify_names_every_tampered_file() {
    let (a, b) = ("example.com/a", "example.com/b");
    let (_upstream, mirror) = synced_ab().await;
    let clean = mirror.run_bin(&["verify"]).await;
    assert_eq!(clean.code, Some(0), "{clean:#?}");
    assert_eq!(clean.stdout, "");

    let tree = mirror.tree();
    // Same length, another time: only the sha256 can tell.
    std::fs::write(
        tree.join(format!("{a}/@v/v1.0.0.info")),
        r#"{"Version":"v1.0.0","Time":"2023-01-01T00:00:09Z"}"#,
    )
    .expect("edit .info");
    std::fs::write(
        tree.join(format!("{a}/@v/list")),
        "v1.0.0\nv1.1.0\nv1.2.0\n",
    )
    .expect("edit list");
    std::fs::remove_file(tree.join(format!("{b}/@latest"))).expect("delete @latest");
    std::fs::write(tree.join(format!("{a}/@v/v0.9.0.zip")), "not ours").expect("stray");
    let b_zip = tree.join(format!("{b}/@v/v1.0.0.zip"));
    std::fs::remove_file(&b_zip).expect("remove zip");
    std::os::unix::fs::symlink("/etc/passwd", &b_zip).expect("symlink the zip");
    // The same files in another order, stored: the h1: is unchanged.
    let prefix = format!("{a}@v1.1.0/");
    let mut z = zipgen::ZipBuilder::new();
    z.stored(&format!("{prefix}x.go"), b"package x\n");
    z.stored(
        &format!("{prefix}go.mod"),
        format!("module {a}\n\ngo 1.19\n").as_bytes(),
    );
    let rewritten = z.finish();
    let a_zip = tree.join(format!("{a}/@v/v1.1.0.zip"));
    assert_eq!(
        crate::harness::h1_of_zip(&rewritten),
        crate::harness::h1_of_zip(&std::fs::read(&a_zip).expect("read zip"))
    );
    std::fs::write(&a_zip, &rewritten).expect("rewrite the zip");

    let out = mirror.run_bin(&["verify"]).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    let lines: Vec<&str> = out.stdout.lines().collect();
    let want_prefixes = [
        format!("{a}@v1.0.0: {a}/@v/v1.0.0.info: sha256 is "),
        format!("{a}@v1.1.0: {a}/@v/v1.1.0.zip: sha256 is "),
        format!("{b}@v1.0.0: {b}/@v/v1.0.0.zip: is a symlink"),
        format!(
            "{a}: {a}/@v/list: lists [v1.0.0 v1.1.0 v1.2.0], the state has published \
             [v1.0.0 v1.1.0] (the next sync rewrites it)"
        ),
        format!("{b}: {b}/@latest: missing (the next sync restores it from the state)"),
        format!("{a}/@v/v0.9.0.zip: stray file: not published according to the state database"),
    ];
    for want in &want_prefixes {
        assert!(
            lines.iter().any(|l| l.starts_with(want.as_str())),
            "no line starts with {want:?}: {out:#?}"
        );
    }
    assert_eq!(lines.len(), want_prefixes.len(), "{out:#?}");
    assert!(
        out.stderr
            .ends_with("gomirror: verify FAILED: 3 versions re-hashed, 6 problems\n"),
        "{out:#?}"
    );
}

/// `sync` puts back what is missing of the published tree and says so:
/// deleted files of a published version are fetched again, re-verified
/// against the hashes recorded at publish and restored; a deleted
/// `@latest` and an edited `@v/list` are rewritten from the state. After
/// it, `verify` is clean again.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_sync_restores_missing_files_and_lists() {
    let (a, b) = ("example.com/a", "example.com/b");
    let (_upstream, mirror) = synced_ab().await;
    let tree = mirror.tree();
    let published: Vec<(String, Vec<u8>)> = crate::harness::files_in(&tree)
        .into_iter()
        .filter(|f| !f.starts_with('.'))
        .map(|f| {
            let bytes = std::fs::read(tree.join(&f)).expect("read");
            (f, bytes)
        })
        .collect();

    for f in ["v1.1.0.zip", "v1.1.0.mod", "v1.1.0.info"] {
        std::fs::remove_file(tree.join(format!("{a}/@v/{f}"))).expect("delete");
    }
    std::fs::remove_file(tree.join(format!("{b}/@latest"))).expect("delete @latest");
    std::fs::write(tree.join(format!("{b}/@v/list")), "v1.0.0\nv9.0.0\n").expect("edit list");
    let missing = mirror.run_bin(&["verify"]).await;
    assert_eq!(missing.code, Some(1), "{missing:#?}");
    assert!(
        missing.stdout.contains(&format!(
            "{a}@v1.1.0: {a}/@v/v1.1.0.zip: missing (the next sync restores it from upstream)"
        )),
        "{missing:#?}"
    );

    let repair = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(repair.code, Some(0), "{repair:#?}");
    assert!(
        repair.stderr.contains(
            "gomirror: sync ok: 0 fetched, 3 skipped, 0 quarantined, 0 not found, 0 failed, 0 B, \
             1 versions' missing files restored from upstream, \
             2 modules' @v/list and @latest rewritten from the state in "
        ),
        "{repair:#?}"
    );
    for (f, bytes) in &published {
        assert_eq!(
            std::fs::read(tree.join(f)).ok().as_ref(),
            Some(bytes),
            "{f} not restored as published"
        );
    }
    let clean = mirror.run_bin(&["verify"]).await;
    assert_eq!(clean.code, Some(0), "{clean:#?}");
    assert_eq!(mirror.row(a, "v1.1.0").status, "published");
}

/// A missing file is restored only with the bytes that were published: if
/// upstream now serves another zip for the version, nothing is written,
/// the run says so and exits 1, and the state still holds the recorded
/// hashes.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_sync_does_not_restore_other_bytes() {
    let a = "example.com/a";
    let upstream = Upstream::start(vec![synthetic_module(a, "v1.0.0", 3, 2048)]).await;
    let mirror = Mirror::new(&upstream.url(), &[(a, "all")]);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let recorded = mirror.row(a, "v1.0.0").h1_zip;
    upstream.add(synthetic_module(a, "v1.0.0", 5, 4096));
    let zip = mirror.tree().join(format!("{a}/@v/v1.0.0.zip"));
    std::fs::remove_file(&zip).expect("delete the zip");

    let out = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    assert!(
        out.stderr
            .contains("ALARM: upstream now serves another zip"),
        "{out:#?}"
    );
    assert!(out.stderr.contains(", 1 not repaired in "), "{out:#?}");
    assert!(!zip.exists(), "other bytes were restored");
    assert_eq!(mirror.row(a, "v1.0.0").h1_zip, recorded);
    assert_eq!(mirror.row(a, "v1.0.0").status, "published");
}

/// `verify --repair` moves every altered file of a published version aside
/// (never a stray: it may be a version the database forgot), the next sync
/// restores each from upstream with the published bytes, and `verify` is
/// clean again; the altered files are kept for inspection.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_verify_repair_moves_altered_files_and_sync_restores_them() {
    let (a, b) = ("example.com/a", "example.com/b");
    let upstream = Upstream::start(vec![
        synthetic_module(a, "v1.0.0", 2, 0),
        synthetic_module(b, "v1.0.0", 3, 1024),
    ])
    .await;
    let mirror = Mirror::new(&upstream.url(), &[(a, "all"), (b, "all")]);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let tree = mirror.tree();
    let info = format!("{a}/@v/v1.0.0.info");
    let zip = format!("{b}/@v/v1.0.0.zip");
    let (info_bytes, zip_bytes) = (
        std::fs::read(tree.join(&info)).expect("read"),
        std::fs::read(tree.join(&zip)).expect("read"),
    );
    // `.info` is the latest version's, so `@latest` (a link to it) changes too.
    let edited = r#"{"Version":"v1.0.0","Time":"2023-01-01T00:00:09Z"}"#;
    std::fs::write(tree.join(&info), edited).expect("edit .info");
    std::fs::remove_file(tree.join(&zip)).expect("remove zip");
    std::os::unix::fs::symlink("/etc/passwd", tree.join(&zip)).expect("symlink");
    std::fs::write(tree.join(format!("{a}/@v/v0.1.0.mod")), "stray").expect("stray");

    let out = mirror.run_bin(&["verify", "--repair"]).await;
    assert_eq!(out.code, Some(1), "{out:#?}");
    let moved_line = out
        .stderr
        .lines()
        .find(|l| l.starts_with("gomirror: verify: moved 2 altered files aside to "))
        .unwrap_or_else(|| panic!("{out:#?}"));
    assert!(
        moved_line.ends_with("; the next sync restores them from upstream"),
        "{out:#?}"
    );
    let moved_dirs: Vec<_> = std::fs::read_dir(tree.join(".gomirror-moved"))
        .expect("moved dir")
        .map(|e| e.expect("entry").path())
        .collect();
    assert_eq!(moved_dirs.len(), 1, "{moved_dirs:?}");
    assert_eq!(
        std::fs::read_to_string(moved_dirs[0].join(&info)).expect("moved .info"),
        edited
    );
    assert!(std::fs::symlink_metadata(moved_dirs[0].join(&zip))
        .expect("moved zip")
        .file_type()
        .is_symlink());
    assert!(
        tree.join(format!("{a}/@v/v0.1.0.mod")).exists(),
        "a stray was moved"
    );

    let sync = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(sync.code, Some(0), "{sync:#?}");
    assert!(
        sync.stderr
            .contains("2 versions' missing files restored from upstream"),
        "{sync:#?}"
    );
    assert_eq!(std::fs::read(tree.join(&info)).expect("read"), info_bytes);
    assert_eq!(std::fs::read(tree.join(&zip)).expect("read"), zip_bytes);
    assert_eq!(
        std::fs::read(tree.join(format!("{a}/@latest"))).expect("read"),
        info_bytes
    );
    std::fs::remove_file(tree.join(format!("{a}/@v/v0.1.0.mod"))).expect("remove stray");
    let clean = mirror.run_bin(&["verify"]).await;
    assert_eq!(clean.code, Some(0), "{clean:#?}");
    assert_eq!(clean.stdout, "");
}

/// Two versions of `example.com/a` and one of `example.com/b`, synced.
async fn synced_ab() -> (Upstream, Mirror) {
    let (a, b) = ("example.com/a", "example.com/b");
    let upstream = Upstream::start(vec![
        synthetic_module(a, "v1.0.0", 2, 0),
        synthetic_module(a, "v1.1.0", 2, 0),
        synthetic_module(b, "v1.0.0", 2, 0),
    ])
    .await;
    let mirror = Mirror::new(&upstream.url(), &[(a, "all"), (b, "all")]);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    (upstream, mirror)
}
