//! kill -9 at arbitrary points of a sync, then check what a client of the
//! tree could see: never a listed version with a missing or torn file, never
//! a `.tmp-` file named by a list, a database that opens and agrees with the
//! tree; and the next complete run finishes the job and leaves no temp file.

use std::collections::{BTreeSet, HashMap};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;

use crate::harness::{files_in, h1_of_zip, Mirror};
use crate::upstream::{Fault, ModuleFiles, Upstream};
use crate::zipgen::synthetic_module;

/// Four modules of ten versions each.
fn modules() -> Vec<ModuleFiles> {
    let mut out = Vec::new();
    for m in [
        "example.com/c0",
        "example.com/c1",
        "example.com/c2",
        "example.com/c3",
    ] {
        for minor in 0..10 {
            out.push(synthetic_module(m, &format!("v1.{minor}.0"), 6, 48 * 1024));
        }
    }
    out
}

/// Tree-relative path → upstream's bytes, for every version file.
fn upstream_files(modules: &[ModuleFiles]) -> HashMap<String, Bytes> {
    let mut files = HashMap::new();
    for m in modules {
        let base = format!("{}/@v/{}", m.path, m.version);
        files.insert(format!("{base}.zip"), m.zip.clone());
        files.insert(format!("{base}.info"), m.info.clone().expect("info"));
        files.insert(format!("{base}.mod"), m.mod_file.clone().expect("mod"));
    }
    files
}

/// xorshift64: deterministic delays from a fixed seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// The files of the tree, none if a killed run did not create it.
fn check_files(mirror: &Mirror) -> Vec<String> {
    if mirror.tree().exists() {
        files_in(&mirror.tree())
    } else {
        Vec::new()
    }
}

fn is_temp(rel: &str) -> bool {
    rel.rsplit('/').next().unwrap_or(rel).starts_with(".tmp-")
}

/// What a client, or the next run, may rely on at any instant. Returns the
/// versions listed and the temp files found.
fn check_invariants(
    mirror: &Mirror,
    want: &HashMap<String, Bytes>,
    when: &str,
) -> (BTreeSet<String>, usize) {
    let tree = mirror.tree();
    let mut listed = BTreeSet::new();
    let mut temps = 0;
    for rel in check_files(mirror) {
        let bytes = std::fs::read(tree.join(&rel)).expect("read a tree file");
        if rel == ".gomirror.lock" {
            continue;
        }
        if is_temp(&rel) {
            temps += 1;
            continue;
        }
        if let Some(module) = rel.strip_suffix("/@v/list") {
            let text = String::from_utf8(bytes).expect("utf-8 list");
            for v in text.lines() {
                assert!(!v.starts_with(".tmp-"), "{when}: {rel} lists a temp file");
                for ext in ["info", "mod", "zip"] {
                    let f = format!("{module}/@v/{v}.{ext}");
                    let on_disk = std::fs::read(tree.join(&f))
                        .unwrap_or_else(|_| panic!("{when}: {rel} lists {v} but {f} is missing"));
                    let upstream = want
                        .get(&f)
                        .unwrap_or_else(|| panic!("{when}: {rel} lists unknown {v}"));
                    assert!(on_disk == **upstream, "{when}: listed {f} is torn");
                    if ext == "zip" {
                        assert_eq!(h1_of_zip(&on_disk), h1_of_zip(upstream), "{when}: {f}");
                    }
                }
                listed.insert(format!("{module}@{v}"));
            }
            continue;
        }
        if let Some(module) = rel.strip_suffix("/@latest") {
            let is_an_info = want
                .iter()
                .any(|(f, b)| f.starts_with(&format!("{module}/@v/")) && **b == bytes);
            assert!(
                is_an_info,
                "{when}: {rel} is not one of upstream's .info files"
            );
            continue;
        }
        let upstream = want
            .get(&rel)
            .unwrap_or_else(|| panic!("{when}: unexpected file {rel} in the tree"));
        assert!(
            bytes == **upstream,
            "{when}: {rel} is torn (not upstream's bytes)"
        );
    }
    // The database opens, is intact, and says published only for listed versions.
    if !mirror.database().exists() {
        return (listed, temps);
    }
    let db = mirror.db();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .expect("integrity_check runs");
    assert_eq!(check, "ok", "{when}");
    let migrated: bool = db
        .query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'versions'",
            [],
            |r| r.get(0),
        )
        .expect("read the schema");
    if !migrated {
        return (listed, temps);
    }
    for row in mirror.rows() {
        if row.status == "published" {
            let mv = format!("{}@{}", row.path, row.version);
            assert!(
                listed.contains(&mv),
                "{when}: {mv} recorded published but not listed"
            );
        }
    }
    (listed, temps)
}

/// Runs started and (most of them) killed.
const RUNS: usize = 22;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_points_never_tears_the_tree() {
    let test_started = Instant::now();
    let modules = modules();
    let want = upstream_files(&modules);
    let upstream = Upstream::start(modules.clone()).await;
    let watch: Vec<(&str, &str)> = [
        "example.com/c0",
        "example.com/c1",
        "example.com/c2",
        "example.com/c3",
    ]
    .iter()
    .map(|m| (*m, "all"))
    .collect();
    let mut mirror = Mirror::new(&upstream.url(), &watch);
    // A few requests at a time, so a run lasts long enough to be cut anywhere.
    mirror.fetch.push_str("concurrency = 3\n");

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    // (delay, killed while running, versions listed, version files, temp files)
    let mut seen = Vec::new();
    let mut listed = BTreeSet::new();
    for i in 0..RUNS {
        // One 429 a few versions into the run pauses every request for a
        // second: the versions already fetched are flushed (lists rewritten,
        // state recorded) in the lull, so kills also land between and inside
        // flushes. A run takes about a second plus two per 40 versions
        // left, so nearly every kill lands inside one, even on a loaded
        // machine; a few may come after it ends.
        let left: Vec<&ModuleFiles> = modules
            .iter()
            .filter(|m| !listed.contains(&format!("{}@{}", m.path, m.version)))
            .collect();
        let faults = upstream.faults();
        faults.clear();
        faults.set_latency(Duration::from_millis(30));
        if let Some(m) = left.get(4).or(left.last()) {
            let pause_at = format!("/{}/@v/{}.zip", m.path, m.version);
            faults.push(
                &pause_at,
                Fault::TooMany {
                    retry_after_secs: 1,
                },
                1,
            );
        }
        let span = 1100 + 1000 * left.len() as u64 / modules.len() as u64;
        let delay = Duration::from_millis(rng.below(span));
        let mut cmd = mirror.command(&["sync", "--no-progress"]);
        cmd.stdout(Stdio::null()).stderr(Stdio::null());
        let mut child = cmd.spawn().expect("spawn gomirror");
        tokio::time::sleep(delay).await;
        let running = child.try_wait().expect("poll child").is_none();
        if running {
            child.start_kill().expect("SIGKILL");
        }
        child.wait().await.expect("reap child");
        let when = format!("after kill #{i} at {delay:?}");
        let temps;
        (listed, temps) = check_invariants(&mirror, &want, &when);
        // Statistics only: a missing tree counts as empty.
        let files = if mirror.tree().exists() {
            files_in(&mirror.tree())
        } else {
            Vec::new()
        }
        .iter()
        .filter(|f| f.ends_with(".zip"))
        .count();
        seen.push((delay, running, listed.len(), files, temps));
        if listed.len() == modules.len() {
            // Done: start again from nothing so that the next kills still
            // land inside a run.
            listed.clear();
            std::fs::remove_dir_all(mirror.tree()).expect("remove the tree");
            std::fs::remove_file(mirror.database()).expect("remove the database");
            for ext in ["-wal", "-shm"] {
                let mut p = mirror.database().into_os_string();
                p.push(ext);
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let killed = seen.iter().filter(|s| s.1).count();
    let mid_run = seen.iter().filter(|s| s.1 && (s.3 > 0 || s.4 > 0)).count();
    assert!(
        killed >= 15,
        "only {killed} of {RUNS} runs were killed while running: {seen:?}"
    );
    assert!(
        mid_run >= 5,
        "only {mid_run} kills landed while files were being written: {seen:?}"
    );

    // A complete run finishes the job.
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let (listed, temps) = check_invariants(&mirror, &want, "after the final run");
    assert_eq!(listed.len(), modules.len());
    let left: Vec<String> = files_in(&mirror.tree())
        .into_iter()
        .filter(|f| is_temp(f))
        .collect();
    assert_eq!(
        temps, 0,
        "temp files left after a complete run: {left:?} (a run killed while \
         replacing @latest leaves <module>/.tmp-*: see \
         stray_temps_of_a_killed_run_are_removed_beside_latest_too)"
    );
    let rows = mirror.rows();
    assert_eq!(rows.len(), modules.len());
    assert!(rows.iter().all(|r| r.status == "published"), "{rows:#?}");
    // Every file in the tree is a published version's, and vice versa.
    let in_tree: BTreeSet<String> = files_in(&mirror.tree())
        .into_iter()
        .filter_map(|f| f.strip_suffix(".zip").map(|s| s.replace("/@v/", "@")))
        .collect();
    let published: BTreeSet<String> = rows
        .iter()
        .map(|r| format!("{}@{}", r.path, r.version))
        .collect();
    assert_eq!(in_tree, published);
    assert!(
        test_started.elapsed() < Duration::from_secs(60),
        "the crash test took {:?}; keep it under a minute",
        test_started.elapsed()
    );
}

/// A run killed while replacing `@latest` leaves its temp file beside
/// `@latest` (`<module>/.tmp-*`), not in `@v/`; the next run must remove it
/// as it removes those in `@v/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_temps_of_a_killed_run_are_removed_beside_latest_too() {
    let m = "example.com/s";
    let versions = [
        synthetic_module(m, "v1.0.0", 3, 1024),
        synthetic_module(m, "v1.1.0", 3, 1024),
    ];
    let upstream = Upstream::start(versions.to_vec()).await;
    let zip = format!("/{m}/@v/v1.1.0.zip");
    upstream.faults().push(&zip, Fault::Status(503), 100);
    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let report = mirror.sync().await.expect("first sync runs");
    assert_eq!(report.summary.published, 1, "{report:#?}");

    // As a run killed mid-flush leaves it: v1.1.0 pending, temp files in
    // both directories the flush writes to.
    mirror
        .db()
        .execute(
            "UPDATE versions SET status = 'pending' WHERE version = 'v1.1.0'",
            [],
        )
        .expect("mark pending");
    let strays = [
        format!("{m}/@v/.tmp-killedlist"),
        format!("{m}/.tmp-killedlatest"),
    ];
    for s in &strays {
        std::fs::write(mirror.tree().join(s), b"torn").expect("write a stray");
    }
    upstream.faults().clear();
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(mirror.row(m, "v1.1.0").status, "published");
    let left: Vec<String> = files_in(&mirror.tree())
        .into_iter()
        .filter(|f| is_temp(f))
        .collect();
    assert!(
        left.is_empty(),
        "temp files left after a complete run: {left:?}"
    );
}

/// A mirror whose database was lost syncs again from an upstream whose `.info` bytes
/// differ from the published ones: only in `Origin`, the version is published again with
/// the published `.info` kept; in `Time`, it is quarantined, and the published files stay.
/// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_a_lost_database_resyncs_despite_other_info_bytes() {
    let m = "example.com/lost";
    let versions = [
        synthetic_module(m, "v1.0.0", 3, 1024),
        synthetic_module(m, "v1.1.0", 3, 1024),
    ];
    let upstream = Upstream::start(versions.to_vec()).await;
    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let report = mirror.sync().await.expect("first sync runs");
    assert_eq!(report.summary.published, 2, "{report:#?}");
    let before: Vec<(String, Option<Vec<u8>>)> = files_in(&mirror.tree())
        .into_iter()
        .filter(|f| f.starts_with(m) && f.contains("/@v/v"))
        .map(|f| (f.clone(), mirror.file(&f)))
        .collect();

    let edit = |v: &str, f: &dyn Fn(&mut serde_json::Value)| {
        let rel = format!("{m}/@v/{v}.info");
        let mut json: serde_json::Value =
            serde_json::from_slice(&mirror.file(&rel).expect("published .info")).expect("JSON");
        f(&mut json);
        upstream.set_raw(&format!("/{rel}"), serde_json::to_vec(&json).expect("JSON"));
    };
    edit("v1.0.0", &|j| {
        j["Origin"] = serde_json::json!({"VCS": "git"})
    });
    edit("v1.1.0", &|j| j["Time"] = "2001-02-03T04:05:06Z".into());
    std::fs::remove_file(mirror.database()).expect("lose the database");

    let report = mirror.sync().await.expect("second sync runs");
    assert_eq!(report.summary.published, 1, "{report:#?}");
    assert_eq!(report.summary.quarantined, 1, "{report:#?}");
    assert_eq!(mirror.row(m, "v1.0.0").status, "published");
    assert_eq!(mirror.row(m, "v1.1.0").status, "quarantined");
    for (f, bytes) in &before {
        assert_eq!(
            &mirror.file(f),
            bytes,
            "{f}: a published file never changes"
        );
    }
}
