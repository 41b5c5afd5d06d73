//! Retention (see: #15): `gomirror prune` removes what nobody uses, in the
//! commit's reverse order, and never what a project, a watch entry,
//! `keep_latest` or recent use keeps.
//!
//! - a dry run lists each version's fate and touches nothing; a prune
//!   removes lists first and files after the lists' lifetime, records it,
//!   and a later sync re-mirrors a pruned version byte for byte;
//! - killed at every step (and at random times), no `@v/list` or `@latest`
//!   ever names a version without its files, and the next prune completes;
//! - a project that cannot be read makes prune refuse;
//! - after a prune, go 1.19 and the current go build the kept project
//!   through nginx with the checksum database on, and a pruned version
//!   fetched through a fall-through proxy still verifies through the
//!   mirror's lookups.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::harness::{upstream_with_sumdb, Mirror};
use crate::nginx::{find_nginx, Nginx, Workers};
use crate::sumdb_go::{describe, GoClient};
use crate::tools::{find_go_119, find_go_current, need};
use crate::upstream::{ModuleFiles, Upstream};
use crate::zipgen::synthetic_module;

const A: &str = "example.com/a";
const B: &str = "example.com/b";

/// `[clients]` and `[retention]` of these tests: unused for a day goes, the
/// newest version of each module stays, lists live one second.
const RETENTION: &str = "[clients]\naccess_log = \"access.log\"\n\
     [retention]\nkeep_unused_for = \"1d\"\nkeep_latest = 1\nlist_max_age = \"1s\"\n";

async fn five_versions() -> Upstream {
    let mut files: Vec<ModuleFiles> = ["v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0", "v1.4.0"]
        .iter()
        .map(|v| synthetic_module(A, v, 3, 2048))
        .collect();
    files.push(synthetic_module(B, "v1.0.0", 2, 1024));
    files.push(synthetic_module(B, "v1.1.0", 2, 1024));
    Upstream::start(files).await
}

/// A mirror of [`five_versions`], synced, every version published long ago.
async fn synced(upstream: &Upstream) -> Mirror {
    let mut mirror = Mirror::new(&upstream.url(), &[(A, "all"), (B, "all")]);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    age(&mirror);
    // From now on only b's newest is watched.
    mirror.watch = vec![(B.into(), "latest".into())];
    mirror.extra = RETENTION.into();
    mirror
}

/// Backdates every version's publication by a year: published files are
/// immutable to the store, so the trigger is lifted for the edit.
fn age(mirror: &Mirror) {
    let db = mirror.db();
    let trigger: String = db
        .query_row(
            "SELECT sql FROM sqlite_schema WHERE name = 'versions_published_immutable'",
            [],
            |r| r.get(0),
        )
        .expect("trigger");
    db.execute_batch(&format!(
        "DROP TRIGGER versions_published_immutable;
         UPDATE versions SET published_at = '2025-01-01T00:00:00Z';
         {trigger};"
    ))
    .expect("backdate");
}

/// A client used `path@version` just now, as the access log reader records it.
fn used_now(mirror: &Mirror, path: &str, version: &str) {
    let now = time::OffsetDateTime::now_utc()
        .replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap();
    mirror
        .db()
        .execute(
            "INSERT INTO client_use (path, version, uses, last_used, first_used)
             VALUES (?1, ?2, 1, ?3, ?3)",
            (path, version, &now),
        )
        .expect("client_use");
}

/// Every version some `@v/list` or `@latest` names whose `.info`, `.mod`
/// or `.zip` is missing, as `module@version: file`.
fn listed_without_files(tree: &Path) -> Vec<String> {
    let mut missing = Vec::new();
    for file in walk(tree) {
        let rel = file
            .strip_prefix(tree)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        let (module, versions) = if let Some(m) = rel.strip_suffix("/@v/list") {
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            (m.to_owned(), text.lines().map(str::to_owned).collect())
        } else if let Some(m) = rel.strip_suffix("/@latest") {
            let Ok(text) = std::fs::read(&file) else {
                continue;
            };
            let info: serde_json::Value = serde_json::from_slice(&text).expect("@latest json");
            (
                m.to_owned(),
                vec![info["Version"].as_str().unwrap().to_owned()],
            )
        } else {
            continue;
        };
        for v in versions {
            for ext in ["info", "mod", "zip"] {
                if !tree.join(format!("{module}/@v/{v}.{ext}")).is_file() {
                    missing.push(format!("{module}@{v}: .{ext}"));
                }
            }
        }
    }
    missing
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn statuses(mirror: &Mirror) -> BTreeMap<String, String> {
    mirror
        .rows()
        .into_iter()
        .map(|r| (format!("{}@{}", r.path, r.version), r.status))
        .collect()
}

fn sha256_of(file: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(file).expect("read")))
}

/// The dry run names every version's fate and reason and touches nothing;
/// the prune removes exactly those, lists first; state, status and metrics
/// count them; a later sync that selects them re-mirrors identical files.
// See: #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_prune_removes_the_unused_and_keeps_what_is_needed() {
    let upstream = five_versions().await;
    let mut mirror = synced(&upstream).await;
    used_now(&mirror, A, "v1.1.0");
    let before: BTreeMap<String, String> = ["v1.0.0", "v1.2.0"]
        .iter()
        .map(|v| {
            let f = mirror.tree().join(format!("{A}/@v/{v}.zip"));
            (v.to_string(), sha256_of(&f))
        })
        .collect();

    let dry = mirror.run_bin(&["prune", "--dry-run", "--json"]).await;
    assert_eq!(dry.code, Some(0), "{dry:#?}");
    let json: serde_json::Value = serde_json::from_str(&dry.stdout).expect("json");
    let fate: BTreeMap<String, (String, String)> = json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| {
            (
                format!(
                    "{}@{}",
                    v["path"].as_str().unwrap(),
                    v["version"].as_str().unwrap()
                ),
                (
                    v["action"].as_str().unwrap().to_owned(),
                    v["rule"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, String)> = [
        ("example.com/a@v1.0.0", "go", "keep_unused_for"),
        ("example.com/a@v1.1.0", "keep", "used_recently"),
        ("example.com/a@v1.2.0", "go", "keep_unused_for"),
        ("example.com/a@v1.3.0", "go", "keep_unused_for"),
        ("example.com/a@v1.4.0", "keep", "keep_latest"),
        ("example.com/b@v1.0.0", "go", "keep_unused_for"),
        ("example.com/b@v1.1.0", "keep", "watch"),
    ]
    .iter()
    .map(|(k, a, r)| (k.to_string(), (a.to_string(), r.to_string())))
    .collect();
    assert_eq!(fate, want);
    assert_eq!(json["going"]["versions"], 4);
    assert_eq!(json["kept"]["versions"], 3);
    assert_eq!(json["dry_run"], true);
    let text = mirror.run_bin(&["prune", "--dry-run"]).await;
    assert!(
        text.stdout.contains(&format!(
            "go   {A}@v1.0.0 {} bytes: unused since 2025-01-01T00:00:00Z, longer than keep_unused_for",
            json["versions"][0]["bytes"]
        )),
        "{text:#?}"
    );
    assert!(text.stdout.contains("would prune 4 versions"), "{text:#?}");
    assert!(listed_without_files(&mirror.tree()).is_empty());
    assert!(
        mirror.tree().join(format!("{A}/@v/v1.0.0.zip")).is_file(),
        "dry run touches nothing"
    );
    assert!(statuses(&mirror).values().all(|s| s == "published"));

    let run = mirror.run_bin(&["prune"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("pruned 4 versions"), "{run:#?}");
    let list = std::fs::read_to_string(mirror.tree().join(format!("{A}/@v/list"))).unwrap();
    assert_eq!(list, "v1.1.0\nv1.4.0\n");
    for v in ["v1.0.0", "v1.2.0", "v1.3.0"] {
        for ext in ["info", "mod", "zip"] {
            assert!(
                !mirror.tree().join(format!("{A}/@v/{v}.{ext}")).exists(),
                "{v}.{ext}"
            );
        }
    }
    assert!(mirror.tree().join(format!("{A}/@v/v1.1.0.zip")).is_file());
    assert!(listed_without_files(&mirror.tree()).is_empty());
    let st = statuses(&mirror);
    assert_eq!(st[&format!("{A}@v1.0.0")], "pruned");
    assert_eq!(st[&format!("{B}@v1.1.0")], "published");
    let reason: String = mirror
        .db()
        .query_row(
            "SELECT p.reason FROM pruned_versions p JOIN versions v ON v.id = p.version_id
             WHERE v.version = 'v1.0.0' AND v.module_id = (SELECT id FROM modules WHERE path = ?1)",
            [A],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(
        reason,
        "unused since 2025-01-01T00:00:00Z, longer than keep_unused_for"
    );

    let status = mirror.run_bin(&["status", "--json"]).await;
    let s: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(s["versions"]["pruned"], 4);
    assert_eq!(s["retention"]["pruned_versions"], 4);
    assert_eq!(s["retention"]["pruned_bytes"], json["going"]["bytes"]);
    let human = mirror.run_bin(&["status"]).await;
    assert!(
        human.stdout.contains("pruned 4 versions (")
            && human.stdout.contains(", 4 now pruned, last prune "),
        "{human:#?}"
    );
    let audit = mirror.run_bin(&["verify"]).await;
    assert_eq!(
        audit.code,
        Some(0),
        "verify finds nothing amiss: {audit:#?}"
    );

    // Nothing more to prune: a second run removes nothing.
    let again = mirror.run_bin(&["prune"]).await;
    assert_eq!(again.code, Some(0), "{again:#?}");
    assert!(again.stdout.contains("pruned 0 versions"), "{again:#?}");

    // Selected again: re-mirrored, byte for byte.
    mirror.watch = vec![(A.into(), "all".into()), (B.into(), "all".into())];
    let sync = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(sync.code, Some(0), "{sync:#?}");
    assert!(statuses(&mirror).values().all(|s| s == "published"));
    for (v, sum) in &before {
        let f = mirror.tree().join(format!("{A}/@v/{v}.zip"));
        assert_eq!(&sha256_of(&f), sum, "{v}");
    }
    let list = std::fs::read_to_string(mirror.tree().join(format!("{A}/@v/list"))).unwrap();
    assert_eq!(list, "v1.0.0\nv1.1.0\nv1.2.0\nv1.3.0\nv1.4.0\n");
}

/// A module every version of which goes loses its list and `@latest`, so
/// a client gets 404 and falls through. See: #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_a_module_pruned_whole_loses_its_lists() {
    let upstream = five_versions().await;
    let mut mirror = synced(&upstream).await;
    mirror.watch.clear();
    mirror.extra = RETENTION.replace("keep_latest = 1", "keep_latest = 0");
    let run = mirror.run_bin(&["prune"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("pruned 7 versions"), "{run:#?}");
    for m in [A, B] {
        assert!(!mirror.tree().join(format!("{m}/@v/list")).exists(), "{m}");
        assert!(!mirror.tree().join(format!("{m}/@latest")).exists(), "{m}");
    }
}

/// Killed at each step of a prune and at random times: no list ever names
/// a version without its files, and the next prune completes. See: #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_killed_prune_never_lists_a_version_without_files() {
    let upstream = five_versions().await;
    let seams = ["lists", "info", "files"];
    let random: Vec<u64> = (0..5).map(|_| rand::random_range(0..3500)).collect();
    let points = seams
        .iter()
        .map(|s| (Some(*s), 0))
        .chain(random.iter().map(|ms| (None, *ms)));
    for (seam, ms) in points {
        let mirror = synced(&upstream).await;
        let mut cmd = mirror.command(&["prune"]);
        if let Some(s) = seam {
            cmd.env("GOMIRROR_TEST_PRUNE_KILL_AT", s);
        }
        let mut child = cmd.spawn().expect("spawn prune");
        if seam.is_none() {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            // SIGKILL, as `kill -9` would; a prune that already ended is fine.
            let _ = child.start_kill();
        }
        let _ = child.wait().await;
        let at = format!("killed at {seam:?} / {ms} ms");
        assert_eq!(
            listed_without_files(&mirror.tree()),
            Vec::<String>::new(),
            "{at}"
        );
        let audit = mirror.run_bin(&["verify"]).await;
        assert_eq!(
            audit.code,
            Some(0),
            "{at}: verify after the kill: {audit:#?}"
        );
        let next = mirror.run_bin(&["prune"]).await;
        assert_eq!(next.code, Some(0), "{at}: {next:#?}");
        assert_eq!(
            listed_without_files(&mirror.tree()),
            Vec::<String>::new(),
            "{at}"
        );
        let st = statuses(&mirror);
        let pruned = st.values().filter(|s| *s == "pruned").count();
        assert_eq!(pruned, 5, "{at}: {st:?}");
        assert!(
            !mirror.tree().join(format!("{A}/@v/v1.0.0.info")).exists(),
            "{at}"
        );
        assert!(
            !mirror.tree().join(format!("{A}/@v/v1.0.0.zip")).exists(),
            "{at}"
        );
    }
}

/// A project that cannot be read makes prune refuse, naming the error; a
/// readable one keeps its whole closure whatever the policy. See: #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_projects_keep_their_closure_or_stop_the_prune() {
    let upstream = five_versions().await;
    let mut mirror = synced(&upstream).await;
    let project = tempfile::tempdir().unwrap();
    let go_mod = project.path().join("go.mod");
    std::fs::write(
        &go_mod,
        "module example.com/app\n\ngo 1.19\n\nrequire example.com/a v1.0.0 bogus\n",
    )
    .unwrap();
    mirror.extra = format!(
        "{RETENTION}[[project]]\npath = \"{}\"\n[toolchain]\nplatforms = []\n",
        project.path().display()
    );
    let run = mirror.run_bin(&["prune"]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "project {}: cannot compute what it needs, so nothing is pruned",
            project.path().display()
        )),
        "{run:#?}"
    );
    assert!(statuses(&mirror).values().all(|s| s == "published"));

    std::fs::write(
        &go_mod,
        "module example.com/app\n\ngo 1.19\n\nrequire example.com/a v1.0.0\n",
    )
    .unwrap();
    let dry = mirror.run_bin(&["prune", "--dry-run", "--json"]).await;
    assert_eq!(dry.code, Some(0), "{dry:#?}");
    let json: serde_json::Value = serde_json::from_str(&dry.stdout).expect("json");
    let a100 = json["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["path"] == A && v["version"] == "v1.0.0")
        .unwrap();
    assert_eq!(a100["action"], "keep");
    assert_eq!(
        a100["reason"],
        format!("needed by project {}", project.path().display())
    );
    let run = mirror.run_bin(&["prune", "--json"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let json: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert!(mirror.tree().join(format!("{A}/@v/v1.0.0.zip")).is_file());
    assert_eq!(json["pruned"]["versions"], 4);
    assert_eq!(json["kept"]["versions"], 3);
    assert_eq!(
        json["versions"].as_array().unwrap().len(),
        4,
        "only what went is listed"
    );
}

/// After a prune, go 1.19 and the current go build the kept project through
/// nginx with the checksum database on; a pruned version fetched through a
/// fall-through proxy still verifies through the mirror's lookups. See: #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_go_builds_kept_modules_and_verifies_pruned_ones_after_prune() {
    let test = "issue_15_go_builds_kept_modules_and_verifies_pruned_ones_after_prune";
    let Some(go119) = need(test, "go", find_go_119()) else {
        return;
    };
    let Some(go_current) = need(test, "go (current)", find_go_current()) else {
        return;
    };
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let targets = [
        ("rsc.io/quote", "v1.5.0"),
        ("rsc.io/quote", "v1.5.1"),
        ("rsc.io/quote", "v1.5.2"),
        ("rsc.io/sampler", "v1.3.0"),
        ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
    ];
    let files: Vec<ModuleFiles> = crate::corpus::load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .filter(|m| targets.iter().any(|(p, v)| m.path == *p && m.version == *v))
        .collect();
    assert_eq!(files.len(), targets.len());
    let (upstream, db) = upstream_with_sumdb(files).await;
    let mut mirror = Mirror::new(&upstream.url(), &targets);
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    age(&mirror);
    let hello = crate::trust::hello_module();
    mirror.watch.clear();
    mirror.extra = format!(
        "{RETENTION}[[project]]\npath = \"{}\"\n[toolchain]\nplatforms = []\n",
        hello.path().display()
    );
    let run = mirror.run_bin(&["prune"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(run.stdout.contains("pruned 2 versions"), "{run:#?}");
    let lookup = mirror
        .tree()
        .join("sumdb/sum.test.example/lookup/rsc.io/quote@v1.5.1");
    assert!(lookup.is_file(), "lookups are never pruned");
    assert!(!mirror.tree().join("rsc.io/quote/@v/v1.5.1.zip").exists());

    db.set_disabled(true);
    let lookups = db.lookups();
    let server = Nginx::start(&nginx, &mirror.tree(), Workers::SameUser);
    for go in [go119, go_current] {
        let client = GoClient::with_proxy(go.clone(), &server.url(), db.vkey());
        let work = tempfile::tempdir().unwrap();
        for f in ["go.mod", "hello.go"] {
            std::fs::copy(hello.path().join(f), work.path().join(f)).unwrap();
        }
        let built = client
            .run(work.path(), &["build", "-o", "hello", "."])
            .await;
        assert!(
            built.status.success(),
            "{}: {}",
            go.display(),
            describe(&built)
        );
        // The pruned version: 404 from the mirror, the files from upstream,
        // the checksum from the mirror's offline copy (upstream's is off).
        let proxy = format!("{},{}", server.url(), upstream.url());
        let through = GoClient::with_proxy(go.clone(), &proxy, db.vkey());
        let out = through.download(&["rsc.io/quote@v1.5.1"]).await;
        assert!(out.status.success(), "{}: {}", go.display(), describe(&out));
    }
    assert_eq!(db.lookups(), lookups, "every lookup came from the mirror");
}

/// A prune takes the run lock a sync holds, and without a `[retention]`
/// rule removes nothing and says why. See: #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_15_prune_takes_the_run_lock_and_needs_a_rule() {
    let upstream = five_versions().await;
    let mut mirror = synced(&upstream).await;
    let held = gomirror::lock::RunLock::acquire(&mirror.tree().join(".gomirror.lock")).unwrap();
    let run = mirror.run_bin(&["prune"]).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(
        run.stderr.contains("another gomirror run holds"),
        "{run:#?}"
    );
    drop(held);
    // A dry run writes nothing and takes no lock.
    let held = gomirror::lock::RunLock::acquire(&mirror.tree().join(".gomirror.lock")).unwrap();
    let dry = mirror.run_bin(&["prune", "--dry-run"]).await;
    assert_eq!(dry.code, Some(0), "{dry:#?}");
    drop(held);

    mirror.extra = "[retention]\nkeep_latest = 1\n".into();
    let run = mirror.run_bin(&["prune"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains(
            "[retention] sets neither keep_unused_for nor max_tree_size: nothing is pruned"
        ),
        "{run:#?}"
    );
    assert!(run.stdout.contains("would prune 0 versions"), "{run:#?}");
    assert!(statuses(&mirror).values().all(|s| s == "published"));

    // Without an access log, keep_unused_for cannot call anything unused.
    mirror.extra = "[retention]\nkeep_unused_for = \"1d\"\nkeep_latest = 0\n".into();
    let run = mirror.run_bin(&["prune"]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains("clients' use is not recorded ([clients] access_log is not set): keep_unused_for removes nothing"),
        "{run:#?}"
    );
    assert!(run.stdout.contains("pruned 0 versions"), "{run:#?}");
    assert!(statuses(&mirror).values().all(|s| s == "published"));
}
