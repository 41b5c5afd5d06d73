//! Issue 12 items 3, 4 and 8: go.sum as a second witness, private modules, hostile project
//! files. Projects are written by hand (go.mod + go.sum) over synthetic modules served by
//! the local upstream; no go command is needed.

use std::path::{Path, PathBuf};

use crate::harness::{gomirror, paths_under, run_command, Mirror};
use crate::sumdb::{module_hashes, SumdbServer};
use crate::upstream::{ModuleFiles, Upstream};
use crate::zipgen::synthetic_module;

const BAD: &str = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

fn module(path: &str, version: &str, requires: &[(&str, &str)]) -> ModuleFiles {
    let mut m = synthetic_module(path, version, 2, 0);
    if !requires.is_empty() {
        // The zip's go.mod is not compared with the .mod: the graph reads the .mod.
        let mut text = format!("module {path}\n\ngo 1.19\n");
        for (p, v) in requires {
            text.push_str(&format!("require {p} {v}\n"));
        }
        m.mod_file = Some(text.into());
    }
    m
}

/// `<path> <version> <h1>` and `<path> <version>/go.mod <h1>` lines of `m`.
fn sum_lines(m: &ModuleFiles) -> String {
    let (zip, go_mod) = module_hashes(m).expect("hashes");
    format!(
        "{p} {v} {zip}\n{p} {v}/go.mod {go_mod}\n",
        p = m.path,
        v = m.version
    )
}

fn write_project(dir: &Path, name: &str, requires: &[&ModuleFiles], go_sum: &str) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let mut text = format!("module example.com/{name}\n\ngo 1.21\n");
    for m in requires {
        text.push_str(&format!("require {} {}\n", m.path, m.version));
    }
    std::fs::write(dir.join("go.mod"), text).expect("go.mod");
    std::fs::write(dir.join("go.sum"), go_sum).expect("go.sum");
}

/// `[[project]]` entries for `dirs`. Their `go 1.21` lines name go1.21.0, which these
/// upstreams do not serve: no toolchain is mirrored (`[toolchain] platforms = []`).
fn projects<P: AsRef<Path>>(dirs: &[P]) -> String {
    let entries: String = dirs
        .iter()
        .map(|d| format!("[[project]]\npath = \"{}\"\n", d.as_ref().display()))
        .collect();
    entries + "[toolchain]\nplatforms = []\n"
}

/// Every file under `dir` with its contents.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>)> {
    paths_under(dir)
        .into_iter()
        .filter(|p| !p.ends_with(".lock"))
        .map(|p| {
            let data = std::fs::read(dir.join(&p)).unwrap_or_default();
            (p, data)
        })
        .collect()
}

/// A go.sum line with a wrong hash for a version the checksum database covers fails that
/// project with a SECURITY ERROR naming go.sum:line, both hashes and the database; the
/// version is still published for the other project, and a second run changes nothing.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_go_sum_mismatch_fails_that_project() {
    let a = module("example.com/a", "v1.0.0", &[]);
    let upstream = Upstream::start(vec![a.clone()]).await;
    let db = SumdbServer::new("sum.test.example");
    db.add_modules(std::slice::from_ref(&a));
    upstream.attach_sumdb(db.clone());
    let work = tempfile::tempdir().expect("temp dir");
    let (good, bad) = (work.path().join("good"), work.path().join("bad"));
    write_project(&good, "good", &[&a], &sum_lines(&a));
    let (zip_h1, mod_h1) = module_hashes(&a).expect("hashes");
    write_project(
        &bad,
        "bad",
        &[&a],
        &format!("example.com/a v1.0.0 {BAD}\nexample.com/a v1.0.0/go.mod {mod_h1}\n"),
    );
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    mirror.extra = projects(&[&good, &bad]);

    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let want = format!(
        "project {}: SECURITY ERROR: {}:1: example.com/a@v1.0.0: go.sum has {BAD}, \
         checksum database sum.test.example verified {zip_h1}",
        bad.display(),
        bad.join("go.sum").display()
    );
    assert!(run.stderr.contains(&want), "want {want}\n{}", run.stderr);
    assert!(
        !run.stderr.contains(&good.display().to_string()),
        "{}",
        run.stderr
    );
    // The version is published for everyone: one bad go.sum blocks no one else.
    let row = mirror.row("example.com/a", "v1.0.0");
    assert_eq!(row.status, "published");
    assert_eq!(row.h1_zip.as_deref(), Some(zip_h1.as_str()));
    let tree = mirror.tree();
    assert_eq!(
        std::fs::read(tree.join("example.com/a/@v/v1.0.0.zip")).expect("zip"),
        a.zip
    );
    let before = snapshot(&tree);
    let again = mirror.sync().await.expect("sync");
    assert_eq!(again.plan_errors.len(), 1, "{:?}", again.plan_errors);
    assert!(again.plan_errors[0].message.contains("SECURITY ERROR"));
    assert_eq!(snapshot(&tree), before);
    assert_eq!(mirror.row("example.com/a", "v1.0.0").status, "published");

    // Fixing the line fixes the project.
    write_project(&bad, "bad", &[&a], &sum_lines(&a));
    let fixed = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(fixed.code, Some(0), "{}", fixed.stderr);
}

/// With no checksum database (`key = "off"`), go.sum is the only witness: a version whose
/// fetched hash differs from its go.sum line is not published but quarantined with the
/// SECURITY message naming the line.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_go_sum_is_the_only_witness_when_nothing_covers_it() {
    let a = module("example.com/a", "v1.0.0", &[]);
    let b = module("example.com/b", "v1.0.0", &[]);
    let upstream = Upstream::start(vec![a.clone(), b.clone()]).await;
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("p");
    let (_, mod_h1) = module_hashes(&a).expect("hashes");
    let go_sum = format!(
        "example.com/a v1.0.0 {BAD}\nexample.com/a v1.0.0/go.mod {mod_h1}\n{}",
        sum_lines(&b)
    );
    write_project(&dir, "p", &[&a, &b], &go_sum);
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.extra = projects(&[&dir]);

    let report = mirror.sync().await.expect("sync");
    assert!(!report.all_ok());
    assert_eq!(report.summary.quarantined, 1);
    let row = mirror.row("example.com/a", "v1.0.0");
    assert_eq!(row.status, "quarantined");
    let reason = row.last_error.expect("a reason");
    assert!(
        reason.starts_with(&format!(
            "SECURITY ERROR: {}:1: example.com/a@v1.0.0: go.sum has {BAD}, upstream served h1:",
            dir.join("go.sum").display()
        )),
        "{reason}"
    );
    assert!(reason.contains("go.sum is the only witness"), "{reason}");
    let tree = mirror.tree();
    assert!(!tree.join("example.com/a/@v/v1.0.0.zip").exists());
    assert!(!tree.join("example.com/a/@v/v1.0.0.mod").exists());
    assert_eq!(mirror.row("example.com/b", "v1.0.0").status, "published");
}

/// `[upstream] private` modules are never asked of the public upstream nor looked up in the
/// checksum database. With no private proxy, the closure below them comes from go.sum and
/// is marked approximate; with one, they are fetched from it alone.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_private_modules_ask_no_public_upstream() {
    let c = module("example.com/c", "v1.0.0", &[]);
    let a = module("example.com/a", "v1.0.0", &[]);
    let p = module("corp.example/p", "v1.0.0", &[("example.com/c", "v1.0.0")]);
    // The public upstream even has p: it must still not be asked.
    let upstream = Upstream::start(vec![a.clone(), c.clone(), p.clone()]).await;
    let db = SumdbServer::new("sum.test.example");
    db.add_modules(&[a.clone(), c.clone(), p.clone()]);
    upstream.attach_sumdb(db.clone());
    let private = Upstream::start(vec![p.clone()]).await;
    let work = tempfile::tempdir().expect("temp dir");
    let dir = work.path().join("app");
    let go_sum = format!("{}{}{}", sum_lines(&a), sum_lines(&c), sum_lines(&p));
    write_project(&dir, "app", &[&a, &p], &go_sum);

    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    mirror.extra = projects(&[&dir]);
    let config = mirror.config_path();
    let text = std::fs::read_to_string(&config).expect("config");
    let with_private = |extra: &str| {
        let path = mirror.dir.path().join("private.toml");
        let t = text.replacen(
            "[tree]",
            &format!("private = [\"corp.example\"]\n{extra}[tree]"),
            1,
        );
        std::fs::write(&path, t).expect("write");
        path
    };

    let config = with_private("");
    let run = run_command(gomirror(&config, &["sync", "--no-progress"])).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(upstream.requests("corp.example"), 0);
    assert_eq!(db.lookups_of("corp.example/p"), 0);
    let tree = mirror.tree();
    assert!(!tree.join("corp.example").exists());
    // c is required only by p: its files come from go.sum's lines.
    assert!(tree.join("example.com/c/@v/v1.0.0.zip").is_file());
    assert!(tree.join("example.com/a/@v/v1.0.0.zip").is_file());
    let closure = run_command(gomirror(
        &config,
        &["closure", "--json", dir.to_str().expect("utf-8")],
    ))
    .await;
    assert_eq!(
        closure.code,
        Some(0),
        "{}\n{}",
        closure.stdout,
        closure.stderr
    );
    let json: serde_json::Value = serde_json::from_str(&closure.stdout).expect("json");
    assert_eq!(json["approximate"], true);
    assert_eq!(
        json["private"],
        serde_json::json!([{"path": "corp.example/p", "version": "v1.0.0"}])
    );
    let text_out = run_command(gomirror(
        &config,
        &["closure", dir.to_str().expect("utf-8")],
    ))
    .await;
    assert!(
        text_out
            .stdout
            .contains("    corp.example/p@v1.0.0 (private)")
            && text_out.stdout.contains("approximate"),
        "{}",
        text_out.stdout
    );
    assert_eq!(upstream.requests("corp.example"), 0);

    // With a private proxy: p comes from it, still never from the public one.
    let config = with_private(&format!("private_proxies = [\"{}\"]\n", private.url()));
    let run = run_command(gomirror(&config, &["sync", "--no-progress"])).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    assert_eq!(
        std::fs::read(tree.join("corp.example/p/@v/v1.0.0.zip")).expect("p's zip"),
        p.zip
    );
    assert!(private.requests("corp.example/p") > 0);
    assert_eq!(upstream.requests("corp.example"), 0);
    assert_eq!(db.lookups_of("corp.example/p"), 0);
}

/// Hostile project files: each fails its project with `file:line`; nothing is written
/// outside the tree and nothing already mirrored changes. A `=> ../lib` inside a checkout
/// still works.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_hostile_project_files_name_file_line() {
    let a = module("example.com/a", "v1.0.0", &[]);
    let upstream = Upstream::start(vec![a.clone()]).await;
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path();
    let good = root.join("repo/app");
    std::fs::create_dir_all(root.join("repo/.git")).expect("git dir");
    write_project(&good, "app", &[&a], &sum_lines(&a));
    std::fs::create_dir_all(root.join("repo/lib")).expect("lib");
    std::fs::write(root.join("repo/lib/go.mod"), "module example.com/lib\n").expect("lib");
    let mut go_mod = std::fs::read_to_string(good.join("go.mod")).expect("go.mod");
    go_mod.push_str("require example.com/lib v0.0.0\nreplace example.com/lib => ../lib\n");
    std::fs::write(good.join("go.mod"), go_mod).expect("go.mod");
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.extra = projects(&[&good]);
    let first = mirror.sync().await.expect("sync");
    assert!(first.all_ok(), "{:?}", first.plan_errors);
    assert_eq!(mirror.row("example.com/a", "v1.0.0").status, "published");

    let mk = |name: &str, go_sum: &str| -> PathBuf {
        let d = root.join(name);
        write_project(&d, name, &[&a], go_sum);
        d
    };
    let ok_lines = sum_lines(&a);
    let path_attack = mk("pathattack", &format!("{ok_lines}../../etc v1.0.0 {BAD}\n"));
    let version_attack = mk(
        "verattack",
        &format!("example.com/x v1.0.0/../../x {BAD}\n"),
    );
    let malformed = mk("malformed", &format!("{ok_lines}\nexample.com/a v1.0.0\n"));
    let huge = mk("huge", "");
    std::fs::File::create(huge.join("go.sum"))
        .expect("go.sum")
        .set_len(100 << 20) // sparse: no disk used
        .expect("sparse");
    let escape = mk("escape", &ok_lines);
    std::fs::create_dir_all(root.join("outside")).expect("outside");
    std::fs::write(root.join("outside/go.mod"), "module example.com/out\n").expect("out");
    std::fs::write(
        escape.join("go.mod"),
        "module example.com/escape\n\ngo 1.21\nrequire example.com/out v1.0.0\n\
         replace example.com/out => ../../../../../../../../../../../../..",
    )
    .expect("go.mod");
    let go_mod_version = mk("gomodver", "");
    std::fs::write(
        go_mod_version.join("go.mod"),
        "module example.com/gomodver\n\ngo 1.21\nrequire example.com/a v1.0.0/../../x\n",
    )
    .expect("go.mod");

    let dirs = [
        &good,
        &path_attack,
        &version_attack,
        &malformed,
        &huge,
        &escape,
        &go_mod_version,
    ];
    mirror.extra = projects(&dirs);
    let tree_before = snapshot(&mirror.tree());
    let outside_before = paths_under(root);
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let sum = |d: &Path| d.join("go.sum").display().to_string();
    let wants = [
        format!("{}:3: malformed module path", sum(&path_attack)),
        format!(
            "{}:1: example.com/x@v1.0.0/../../x: invalid version",
            sum(&version_attack)
        ),
        // (The log line is JSON: the message's newline is escaped.)
        format!(
            "malformed go.sum:\\n{}:4: wrong number of fields 2",
            sum(&malformed)
        ),
        format!("{}: larger than 64 MiB", sum(&huge)),
        format!("{}:5:", escape.join("go.mod").display()),
        format!("{}:4:", go_mod_version.join("go.mod").display()),
    ];
    for want in &wants {
        assert!(
            run.stderr.contains(want.as_str()),
            "want {want}\n{}",
            run.stderr
        );
    }
    assert!(
        run.stderr.contains("outside the checkout"),
        "{}",
        run.stderr
    );
    // Nothing already mirrored changed; nothing new was written beside the projects.
    assert_eq!(snapshot(&mirror.tree()), tree_before);
    assert_eq!(paths_under(root), outside_before);
    assert_eq!(mirror.row("example.com/a", "v1.0.0").status, "published");
    assert_eq!(upstream.requests("example.com/x"), 0);
}
