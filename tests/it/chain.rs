//! Issue 16: sites that follow each other. Three sites on 127.0.0.1, each its own state,
//! tree, index listener (`gomirror::serve`) and real nginx with the shipped server block:
//! A syncs from the local upstream and its checksum database; B follows A (A's nginx as
//! upstream, A's `/index` as feed, A's offline checksum database through A's
//! `/sumdb/<name>/supported`); C follows B. Everything is verified again at every site.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use gomirror::plan::feed::{parse_timestamp, FEED_START};
use gomirror::state::Store;
use tokio_util::sync::CancellationToken;

use crate::corpus::load_go_corpus;
use crate::harness::{files_in, gomirror, run_command, upstream_with_sumdb, Mirror};
use crate::nginx::{find_nginx, Nginx};
use crate::sumdb::SumdbServer;
use crate::sumdb_go::{describe, GoClient};
use crate::tools::{find_go_119, find_go_current, need};
use crate::trust::hello_module;
use crate::upstream::{ModuleFiles, Upstream};
use crate::zipgen::{module_zip, synthetic_module};

/// What a program importing rsc.io/quote v1.5.2 needs (see trust.rs).
const WATCH: &[(&str, &str)] = &[
    ("rsc.io/quote", "v1.5.2"),
    ("rsc.io/sampler", "v1.3.0"),
    ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
];

/// A site: a mirror, its `/index` listener and its nginx.
struct Site {
    mirror: Mirror,
    /// Where the index listener binds; nginx proxies `/index` to it.
    index: SocketAddr,
    /// Stops the index listener (and does when the site drops).
    stop: CancellationToken,
    nginx: Nginx,
}

/// Serves `database`'s feed on `addr` until the returned token is cancelled; the listener
/// is bound when this returns.
async fn serve_index(database: &Path, addr: SocketAddr) -> (SocketAddr, CancellationToken) {
    let store = Store::open(database).await.expect("open state");
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .expect("bind index listener");
    let addr = listener.local_addr().expect("listener address");
    let stop = CancellationToken::new();
    tokio::spawn(gomirror::serve::serve_index(listener, store, stop.clone()));
    (addr, stop)
}

impl Site {
    async fn start(mirror: Mirror, nginx: &Path) -> Site {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let (index, stop) = serve_index(&mirror.database(), any).await;
        std::fs::create_dir_all(mirror.tree()).expect("tree dir");
        let nginx = Nginx::start_with_index(nginx, &mirror.tree(), index);
        Site {
            mirror,
            index,
            stop,
            nginx,
        }
    }

    fn url(&self) -> String {
        self.nginx.url()
    }

    /// A mirror following this site: its tree, its feed, its offline checksum database.
    fn follower(&self, db: &SumdbServer) -> Mirror {
        let url = self.url();
        let mut m = Mirror::new(&url, &[]);
        m.sumdb = format!("key = \"{}\"\n", db.vkey());
        m.fetch.push_str(&format!(
            "[feed]\nenabled = true\nindex = \"{url}\"\nproxy = \"{url}\"\n\
             start = \"{FEED_START}\"\npage_size = 2\npseudo_versions = \"all\"\n\
             [[feed.rule]]\ninclude = \"*\"\n"
        ));
        m
    }

    /// `gomirror sync` on this site's config: exit code and output.
    async fn sync_bin(&self) -> crate::harness::BinRun {
        run_command(gomirror(&self.mirror.config_path(), &["sync"])).await
    }

    fn tree(&self) -> PathBuf {
        self.mirror.tree()
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn corpus(paths: &[&str]) -> Vec<ModuleFiles> {
    load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .filter(|m| paths.contains(&m.path.as_str()))
        .collect()
}

/// The local upstream with the modules of [`WATCH`] and a checksum database holding them.
async fn upstream() -> (Upstream, std::sync::Arc<SumdbServer>) {
    upstream_with_sumdb(corpus(&[
        "rsc.io/quote",
        "rsc.io/sampler",
        "golang.org/x/text",
    ]))
    .await
}

/// Site A's mirror: the local upstream, verified against its checksum database.
fn origin(upstream: &Upstream, db: &SumdbServer, watch: &[(&str, &str)]) -> Mirror {
    let mut m = Mirror::new(&upstream.url(), watch);
    m.sumdb = format!("key = \"{}\"\n", db.vkey());
    m
}

/// Module files, lists and `@latest` of a tree: every file but the checksum database's.
fn module_files(tree: &Path) -> Vec<(String, Vec<u8>)> {
    files_in(tree)
        .into_iter()
        .filter(|rel| !rel.starts_with("sumdb/") && !rel.starts_with('.'))
        .map(|rel| {
            let bytes = std::fs::read(tree.join(&rel)).expect("read tree file");
            (rel, bytes)
        })
        .collect()
}

fn assert_same_module_files(a: &Site, other: &Site, name: &str) {
    let (want, got) = (module_files(&a.tree()), module_files(&other.tree()));
    let names = |v: &[(String, Vec<u8>)]| v.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&got), names(&want), "{name}'s files");
    for ((rel, w), (_, g)) in want.iter().zip(&got) {
        assert!(w == g, "{name}: {rel} differs from A's");
    }
}

async fn get(url: &str) -> (u16, String) {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = resp.status().as_u16();
    (status, resp.text().await.expect("body"))
}

fn timestamps(body: &str) -> Vec<String> {
    body.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            v["Timestamp"].as_str().expect("Timestamp").to_string()
        })
        .collect()
}

// See: #16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_three_sites_converge_and_go_builds_through_the_last() {
    let test = "chain::issue_16_three_sites_converge_and_go_builds_through_the_last";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let Some(go119) = need(test, "go", find_go_119()) else {
        return;
    };
    let Some(go_current) = need(test, "current go", find_go_current()) else {
        return;
    };
    let (upstream, db) = upstream().await;
    let mut a = Site::start(origin(&upstream, &db, WATCH), &nginx).await;
    let report = a.mirror.sync().await.expect("A syncs");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.published, 3);

    // A's feed through its nginx: index.golang.org's format, since inclusive, and no two
    // entries share a Timestamp.
    let (status, body) = get(&format!("{}/index", a.url())).await;
    assert_eq!(status, 200, "{body}");
    let stamps = timestamps(&body);
    assert_eq!(stamps.len(), 3, "{body}");
    assert!(stamps
        .windows(2)
        .all(|w| parse_timestamp(&w[0]) < parse_timestamp(&w[1])));
    let (_, page) = get(&format!("{}/index?since={}&limit=1", a.url(), stamps[1])).await;
    assert_eq!(
        page,
        body.lines().nth(1).map(|l| format!("{l}\n")).expect("line")
    );
    let (status, refused) = get(&format!("{}/index?limit=zero", a.url())).await;
    assert_eq!(
        (status, refused.as_str()),
        (400, "invalid limit \"zero\": want a positive integer\n")
    );

    let b = Site::start(a.follower(&db), &nginx).await;
    let c = Site::start(b.follower(&db), &nginx).await;
    for (site, name) in [(&b, "B"), (&c, "C")] {
        let report = site.mirror.sync().await.expect("follower syncs");
        assert!(report.all_ok(), "{name}: {report:#?}");
        assert_eq!(report.summary.published, 3, "{name}");
        let feed = report.feed.as_ref().expect("feed report");
        // Pages of 2 over 3 entries: the cursor walked pages with an inclusive since.
        assert!(feed.pages >= 2, "{name}: {feed:?}");
        assert_same_module_files(&a, site, name);
    }

    // A publishes more: a new module, and the database grows.
    let more = synthetic_module("example.com/more", "v1.0.0", 3, 1024);
    db.add_modules(std::slice::from_ref(&more));
    upstream.add(more);
    a.mirror
        .watch
        .push(("example.com/more".into(), "all".into()));
    let report = a.mirror.sync().await.expect("A syncs more");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.published, 1);
    for (site, name) in [(&b, "B"), (&c, "C")] {
        let run = site.sync_bin().await;
        assert_eq!(run.code, Some(0), "{name}: {run:#?}");
        assert_same_module_files(&a, site, name);
        assert!(
            site.mirror.file("example.com/more/@latest").is_some(),
            "{name}"
        );
    }

    // A's upstream and database are gone: go builds through C alone, checking every
    // download against C's offline copy of the checksum database.
    let vkey = db.vkey().to_string();
    drop(upstream);
    for go in [go119, go_current] {
        let client = GoClient::with_proxy(go, &c.url(), &vkey);
        let hello = hello_module();
        let built = client
            .run(hello.path(), &["build", "-o", "hello", "."])
            .await;
        assert!(built.status.success(), "go build: {}", describe(&built));
        let ran = std::process::Command::new(hello.path().join("hello"))
            .output()
            .expect("run hello");
        assert_eq!(String::from_utf8_lossy(&ran.stdout).trim(), "Hello, world.");
        let got = client.download(&["example.com/more@v1.0.0"]).await;
        assert!(got.status.success(), "go mod download: {}", describe(&got));
    }
}

// See: #16
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_tampered_zip_on_a_is_refused_by_b_and_never_reaches_c() {
    let test = "chain::issue_16_a_tampered_zip_on_a_is_refused_by_b_and_never_reaches_c";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let v1 = synthetic_module("example.com/t", "v1.0.0", 3, 1024);
    let (upstream, db) = upstream_with_sumdb(vec![v1]).await;
    let a = Site::start(origin(&upstream, &db, &[("example.com/t", "all")]), &nginx).await;
    assert!(a.mirror.sync().await.expect("A syncs").all_ok());
    let b = Site::start(a.follower(&db), &nginx).await;
    let c = Site::start(b.follower(&db), &nginx).await;
    assert!(b.mirror.sync().await.expect("B syncs").all_ok());
    assert!(c.mirror.sync().await.expect("C syncs").all_ok());

    // A publishes v1.1.0, then someone rewrites its zip in A's tree: a well-formed zip
    // of the right module and version, other bytes.
    let v2 = synthetic_module("example.com/t", "v1.1.0", 3, 1024);
    db.add_modules(std::slice::from_ref(&v2));
    let go_mod = v2.mod_file.clone().expect("go.mod");
    upstream.add(v2);
    assert!(a.mirror.sync().await.expect("A syncs v1.1.0").all_ok());
    let zip = a.tree().join("example.com/t/@v/v1.1.0.zip");
    let tampered = module_zip(
        "example.com/t@v1.1.0/",
        &[("go.mod", &go_mod), ("t.go", b"package t // tampered\n")],
    );
    std::fs::write(&zip, tampered).expect("tamper A's zip");

    let run = b.sync_bin().await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let out = format!("{}{}", run.stdout, run.stderr);
    assert!(
        out.contains("example.com/t@v1.1.0")
            && out.contains(
                "SECURITY ERROR: checksum mismatch with checksum database sum.test.example"
            ),
        "{run:#?}"
    );
    assert!(b.mirror.file("example.com/t/@v/v1.1.0.zip").is_none());
    assert_eq!(
        b.mirror.row("example.com/t", "v1.1.0").status,
        "quarantined"
    );

    let run = c.sync_bin().await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(c.mirror.file("example.com/t/@v/v1.1.0.zip").is_none());
    assert!(c.mirror.file("example.com/t/@v/v1.1.0.info").is_none());
    let list = c.mirror.file("example.com/t/@v/list").expect("C's list");
    assert_eq!(String::from_utf8_lossy(&list), "v1.0.0\n");
}

// See: #16 (a down site is retried like any upstream; its follower never skips a version).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_a_down_feed_is_retried_and_nothing_is_skipped() {
    let test = "chain::issue_16_a_down_feed_is_retried_and_nothing_is_skipped";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let v1 = synthetic_module("example.com/d", "v1.0.0", 3, 1024);
    let (upstream, db) = upstream_with_sumdb(vec![v1]).await;
    let mut a = Site::start(origin(&upstream, &db, &[("example.com/d", "all")]), &nginx).await;
    assert!(a.mirror.sync().await.expect("A syncs").all_ok());
    let b = Site::start(a.follower(&db), &nginx).await;
    assert!(b.mirror.sync().await.expect("B syncs").all_ok());

    // A's daemon is down (nginx still up: /index is 502) while A publishes v1.1.0.
    a.stop.cancel();
    let v2 = synthetic_module("example.com/d", "v1.1.0", 3, 1024);
    db.add_modules(std::slice::from_ref(&v2));
    upstream.add(v2);
    assert!(a.mirror.sync().await.expect("A syncs v1.1.0").all_ok());
    let (status, _) = get(&format!("{}/index", a.url())).await;
    assert_eq!(status, 502);
    let run = b.sync_bin().await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!("{}/index", a.url())),
        "{run:#?}"
    );
    assert!(run.stderr.contains("502"), "{run:#?}");
    assert!(b.mirror.file("example.com/d/@v/v1.1.0.zip").is_none());

    // A is back: B's cursor stayed, so the next run takes v1.1.0.
    let (_, stop) = serve_index(&a.mirror.database(), a.index).await;
    a.stop = stop;
    let run = b.sync_bin().await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_same_module_files(&a, &b, "B");
    let list = b.mirror.file("example.com/d/@v/list").expect("B's list");
    assert_eq!(String::from_utf8_lossy(&list), "v1.0.0\nv1.1.0\n");
}

// See: #16 (`[serve] index_listen`: the daemon serves /index, the shipped nginx block proxies it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_16_the_daemon_serves_index_behind_the_shipped_nginx_block() {
    use crate::daemon::{daemon_config, mirror_of, modules, Daemon};
    let test = "chain::issue_16_the_daemon_serves_index_behind_the_shipped_nginx_block";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let upstream = Upstream::start(modules(2)).await;
    let mirror = mirror_of(&upstream, 2);
    assert!(mirror.sync().await.expect("sync runs").all_ok());
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let config = daemon_config(
        &mirror,
        &format!("[daemon]\nschedule = \"0 0 0 1 1 *\"\n[serve]\nindex_listen = \"{addr}\"\n"),
    );
    let daemon = Daemon::start(&config);
    let server = Nginx::start_with_index(&nginx, &mirror.tree(), addr);
    let url = format!("{}/index?since=2019-04-10T19:08:52Z", server.url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let (status, body) = loop {
        let (status, body) = get(&url).await;
        // 502 until the daemon has bound its listener.
        if status != 502 || std::time::Instant::now() > deadline {
            break (status, body);
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    let (code, log) = daemon.stop(std::time::Duration::from_secs(30)).await;
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(status, 200, "{body}\n{log}");
    let names: Vec<String> = body
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            format!(
                "{}@{}",
                v["Path"].as_str().unwrap_or(""),
                v["Version"].as_str().unwrap_or("")
            )
        })
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(sorted, ["example.com/d0@v1.0.0", "example.com/d1@v1.0.0"]);
    assert_eq!(timestamps(&body).len(), 2);
    assert!(log.contains("serving /index"), "{log}");
}
