//! Hostile input from both sides: a watchlist naming unsafe modules or
//! selectors (config errors, exit 2), an upstream `@v/list` naming unsafe
//! versions (rejected, never fetched), hostile zips and `.info` files
//! (quarantined, never published), bodies over Go's size limits (refused
//! without reading them whole), and upstream changing a published version
//! (quarantined, the published file kept).

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use gomirror::config::{Config, Overrides};

use crate::harness::{files_in, paths_under, Mirror};
use crate::upstream::Upstream;
use crate::zipgen::{self, synthetic_module};

/// The 1-based line of the first line of `path` starting with `prefix`.
fn line_starting(path: &Path, prefix: &str) -> usize {
    let text = std::fs::read_to_string(path).expect("read mirror.toml");
    text.lines()
        .position(|l| l.starts_with(prefix))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("no line starting with {prefix:?} in\n{text}"))
}

/// (module, versions, key that is wrong, fragment of the reason). `module`
/// and `versions` are written into TOML basic strings as they are, so
/// `\u0000` is TOML's escape for NUL.
const BAD_WATCH: &[(&str, &str, &str, &str)] = &[
    ("../x", "all", "module", r#"malformed module path "../x""#),
    (
        "/etc",
        "all",
        "module",
        r#"malformed module path "/etc": empty path element"#,
    ),
    (
        "Foo/bar",
        "all",
        "module",
        "missing dot in first path element",
    ),
    ("Example.com/bar", "all", "module", "invalid char 'E'"),
    (
        "example.com/a\\u0000b",
        "all",
        "module",
        "invalid char '\\0'",
    ),
    (
        "example.com/x/../../etc",
        "all",
        "module",
        "malformed module path",
    ),
    (
        "example.com/m",
        "latest 0",
        "versions",
        "N must be at least 1",
    ),
    (
        "example.com/m",
        "newest",
        "versions",
        r#"expected "latest", "all""#,
    ),
    ("example.com/m", "v1.2", "versions", "not canonical"),
    ("example.com/m", "<=v1.2", "versions", "ambiguous version"),
    (
        "example.com/m",
        "../../etc/passwd",
        "versions",
        r#"got "../../etc/passwd""#,
    ),
    (
        "example.com/m",
        "v2.0.0",
        "versions",
        "should be v0 or v1, not v2",
    ),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_watch_entries_are_config_errors_naming_line_and_key() {
    let long = format!("example.com/{}", "a".repeat(5000));
    let mut cases: Vec<(String, String, String, String)> = BAD_WATCH
        .iter()
        .map(|(m, v, k, r)| (m.to_string(), v.to_string(), k.to_string(), r.to_string()))
        .collect();
    cases.push((
        long,
        "all".into(),
        "module".into(),
        "path element of 5000 bytes is longer than the 255 a file name allows".into(),
    ));
    for (module, versions, key, reason) in &cases {
        let short = &module[..module.len().min(40)];
        // The dead upstream is never contacted: the config is refused first.
        let mirror = Mirror::new("http://127.0.0.1:9", &[(module, versions)]);
        let path = mirror.config_path();
        let line = line_starting(&path, &format!("{key} = "));
        let err = Config::load(&path, &Overrides::default()).expect_err(short);
        assert_eq!(err.line, Some(line), "{short}: {err}");
        assert_eq!(err.key, format!("[[watch]] #1 {key}"), "{short}: {err}");
        assert!(err.reason.contains(reason.as_str()), "{short}: {err}");

        let run = mirror.run_bin(&["sync", "--no-progress"]).await;
        assert_eq!(run.code, Some(2), "{short}: {run:#?}");
        let want = format!("gomirror: {}:{line}: [[watch]] #1 {key}: ", path.display());
        assert!(run.stderr.contains(&want), "{short}: want {want}\n{run:#?}");
        assert!(run.stderr.contains(reason.as_str()), "{short}: {run:#?}");
        assert!(!mirror.tree().exists(), "{short}: a tree was created");
        assert!(
            !mirror.database().exists(),
            "{short}: a database was created"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_list_lines_are_rejected_and_nothing_escapes_the_tree() {
    let m = "example.com/m";
    let good = [
        synthetic_module(m, "v1.0.0", 3, 1024),
        synthetic_module(m, "v1.1.0", 3, 1024),
    ];
    let upstream = Upstream::start(good.to_vec()).await;
    let long = format!("v1.0.0-{}", "a".repeat(5000));
    // (line, fragment of the reason it is rejected for)
    let hostile: Vec<(String, &str)> = vec![
        ("../../etc/passwd".into(), "not a semantic version"),
        ("v1.0.0/../../x".into(), "not a semantic version"),
        ("/etc/passwd".into(), "not a semantic version"),
        ("v1.3.0\0".into(), "not a semantic version"),
        (long.clone(), "longer than the 250 a file name allows"),
        ("v1.2".into(), "not canonical (want v1.2.0)"),
        ("v2.0.0".into(), "should be v0 or v1, not v2"),
    ];
    let mut body = String::from("v1.0.0\n");
    for (line, _) in &hostile {
        body.push_str(line);
        body.push('\n');
    }
    body.push_str("v1.1.0 2019-01-01T00:00:00Z\n");
    upstream.set_raw(&format!("/{m}/@v/list"), body);

    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let outside = mirror.dir.path().parent().expect("temp dir has a parent");
    let escapes = [outside.join("etc"), outside.join("x")];
    let existed: Vec<bool> = escapes.iter().map(|p| p.exists()).collect();

    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.published, 2, "{report:#?}");
    assert_eq!(report.rejected.len(), hostile.len(), "{report:#?}");
    for (r, (line, why)) in report.rejected.iter().zip(&hostile) {
        assert_eq!(r.module, m);
        assert!(
            r.reason.contains(why),
            "{:?}: reason {:?} lacks {why:?}",
            &line[..line.len().min(40)],
            r.reason
        );
    }
    // The entry is kept as upstream sent it; messages show it escaped.
    assert_eq!(report.rejected[3].version, "v1.3.0\0");
    assert!(
        report.rejected[3].reason.contains(r#""v1.3.0\0""#),
        "{:?}",
        report.rejected[3].reason
    );
    // Only the two good versions were asked for.
    assert_eq!(upstream.requests(".info"), 2);
    assert_eq!(upstream.requests(".zip"), 2);
    assert_eq!(upstream.requests("etc"), 0);

    // Everything under the temporary directory is accounted for.
    let mut want: Vec<String> = [
        "mirror.toml",
        "state.db",
        "state.db.lock",
        "tree",
        "tree/.gomirror.lock",
        "tree/example.com",
        "tree/example.com/m",
        "tree/example.com/m/@latest",
        "tree/example.com/m/@v",
        "tree/example.com/m/@v/list",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for v in ["v1.0.0", "v1.1.0"] {
        for ext in ["info", "mod", "zip"] {
            want.push(format!("tree/{m}/@v/{v}.{ext}"));
        }
    }
    want.sort();
    let got: Vec<String> = paths_under(mirror.dir.path())
        .into_iter()
        .filter(|p| !p.ends_with("-wal") && !p.ends_with("-shm"))
        .collect();
    assert_eq!(got, want);
    for (p, before) in escapes.iter().zip(existed) {
        assert_eq!(p.exists(), before, "{} appeared", p.display());
    }
    let list = mirror.file(&format!("{m}/@v/list")).expect("list");
    assert_eq!(list, b"v1.0.0\nv1.1.0\n");
}

/// (name, builder, fragment of the quarantine reason naming the rule)
type HostileZip = (&'static str, fn(&str) -> Vec<u8>, &'static str);

const HOSTILE_ZIPS: &[HostileZip] = &[
    (
        "zip slip",
        zipgen::zip_slip,
        r#"malformed file path "../evil": invalid path element "..""#,
    ),
    (
        "absolute name",
        zipgen::absolute_name,
        "/etc/x: path does not have prefix",
    ),
    (
        "outside prefix",
        zipgen::outside_prefix,
        "other.example/m@v1.0.0/x.go: path does not have prefix",
    ),
    (
        "case-fold duplicate",
        zipgen::case_fold_duplicate,
        "case-insensitive file name collision",
    ),
    (
        "exact duplicate",
        zipgen::exact_duplicate,
        "multiple entries for file",
    ),
    (
        "nested go.mod",
        zipgen::nested_go_mod,
        "sub/go.mod: go.mod file not in module root directory",
    ),
    (
        "GO.MOD",
        zipgen::go_mod_wrong_case,
        "GO.MOD: go.mod files must have lowercase names",
    ),
    (
        "newline in name",
        zipgen::newline_name,
        "invalid char '\\n'",
    ),
    ("symlink", zipgen::symlink, "link: file is a symbolic link"),
    (
        "size lie (more)",
        zipgen::size_lie_more,
        "lie.txt: uncompressed size is larger than declared size",
    ),
    (
        "size lie (less)",
        zipgen::size_lie_less,
        "lie.txt: uncompressed size is smaller than declared size",
    ),
    (
        "declared-size bomb",
        zipgen::declared_size_bomb,
        "total uncompressed size of module contents too large",
    ),
    ("truncated", zipgen::truncated, "not a valid zip file"),
    ("garbage", |_| zipgen::garbage(), "not a valid zip file"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_zips_are_quarantined_never_published() {
    let m = "example.com/h";
    let good = synthetic_module(m, "v0.1.0", 3, 1024);
    let mut served = vec![good.clone()];
    // Version v1.<i>.0 serves hostile zip i, with a valid .info and .mod.
    let version = |i: usize| format!("v1.{i}.0");
    for (i, (_, build, _)) in HOSTILE_ZIPS.iter().enumerate() {
        let v = version(i);
        let mut files = synthetic_module(m, &v, 2, 0);
        files.zip = Bytes::from(build(&format!("{m}@{v}/")));
        served.push(files);
    }
    let upstream = Upstream::start(served).await;
    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let report = mirror.sync().await.expect("sync runs");
    assert!(!report.all_ok());
    assert_eq!(
        (report.summary.published, report.summary.quarantined),
        (1, HOSTILE_ZIPS.len() as u64),
        "{report:#?}"
    );
    for (i, (name, _, why)) in HOSTILE_ZIPS.iter().enumerate() {
        let row = mirror.row(m, &version(i));
        assert_eq!(row.status, "quarantined", "{name}: {row:?}");
        let reason = row.last_error.unwrap_or_default();
        assert!(
            reason.contains(why),
            "{name}: reason {reason:?} does not name the rule {why:?}"
        );
    }
    // Only the good version is in the tree; no temp file is left behind.
    let mut want = vec![
        ".gomirror.lock".to_string(),
        format!("{m}/@latest"),
        format!("{m}/@v/list"),
    ];
    for ext in ["info", "mod", "zip"] {
        want.push(format!("{m}/@v/v0.1.0.{ext}"));
    }
    want.sort();
    assert_eq!(files_in(&mirror.tree()), want);
    assert_eq!(mirror.file(&format!("{m}/@v/list")).unwrap(), b"v0.1.0\n");
    assert_eq!(
        mirror.file(&format!("{m}/@v/v0.1.0.zip")).unwrap(),
        good.zip
    );

    let fresh = Mirror::new(&upstream.url(), &[(m, "all")]);
    let run = fresh.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let n = HOSTILE_ZIPS.len();
    assert!(run.stderr.contains(&format!("{n} quarantined")), "{run:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_naming_another_version_is_quarantined() {
    let m = "example.com/d";
    let upstream = Upstream::start(vec![synthetic_module(m, "v1.0.0", 3, 1024)]).await;
    upstream.set_raw(
        &format!("/{m}/@v/v1.0.0.info"),
        r#"{"Version":"v1.0.1","Time":"2023-01-01T00:00:00Z"}"#,
    );
    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let report = mirror.sync().await.expect("sync runs");
    assert_eq!(report.summary.quarantined, 1, "{report:#?}");
    let row = mirror.row(m, "v1.0.0");
    assert_eq!(row.status, "quarantined");
    assert_eq!(
        row.last_error.as_deref(),
        Some("proxy returned info for version v1.0.1 instead of requested version")
    );
    assert_eq!(files_in(&mirror.tree()), [".gomirror.lock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_mod_over_16_mib_is_refused() {
    let m = "example.com/d";
    let upstream = Upstream::start(vec![synthetic_module(m, "v1.0.0", 3, 1024)]).await;
    let mod_url = format!("/{m}/@v/v1.0.0.mod");
    let mut huge = b"module example.com/d\n".to_vec();
    huge.resize((16 << 20) + 1, b'\n');
    upstream.set_raw(&mod_url, huge);
    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let report = mirror.sync().await.expect("sync runs");
    assert!(!report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.published, 0, "{report:#?}");
    let row = mirror.row(m, "v1.0.0");
    assert!(
        matches!(row.status.as_str(), "failed" | "quarantined"),
        "{row:?}"
    );
    let reason = row.last_error.unwrap_or_default();
    let want = format!(
        "reading {}{mod_url}: response body larger than 16777216 bytes",
        upstream.url()
    );
    assert!(reason.contains(&want), "{reason}");
    assert_eq!(
        upstream.requests(&mod_url),
        1,
        "an oversized body is not retried"
    );
    assert_eq!(files_in(&mirror.tree()), [".gomirror.lock"]);
}

/// A server whose answer to `target` declares `declared` bytes and then
/// streams zeros until the client hangs up; everything else is 404. Returns
/// its base URL and how many body bytes it managed to send.
async fn huge_body_server(target: &str, declared: u64) -> (String, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let sent = Arc::new(AtomicU64::new(0));
    let (target, counter) = (target.to_string(), sent.clone());
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let (target, counter) = (target.clone(), counter.clone());
            tokio::spawn(async move {
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&req);
                let path = line.split(' ').nth(1).unwrap_or_default().to_string();
                if path != target {
                    let _ = conn
                        .write_all(
                            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                        )
                        .await;
                    return;
                }
                let head = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {declared}\r\nConnection: close\r\n\r\n"
                );
                if conn.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = vec![0u8; 64 * 1024];
                // Stop at 64 MiB whatever happens, so a client that reads on
                // fails the assertion instead of hanging the test.
                while counter.load(Ordering::Relaxed) < 64 << 20 {
                    match conn.write_all(&chunk).await {
                        Ok(()) => counter.fetch_add(chunk.len() as u64, Ordering::Relaxed),
                        Err(_) => return,
                    };
                }
            });
        }
    });
    (url, sent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zip_declared_over_500_mib_is_refused_without_downloading_it() {
    let m = "example.com/big";
    let upstream = Upstream::start(vec![synthetic_module(m, "v1.0.0", 3, 1024)]).await;
    let zip_url = format!("/{m}/@v/v1.0.0.zip");
    let (huge, sent) = huge_body_server(&zip_url, 600 << 20).await;
    // The huge server comes first; everything it lacks falls through.
    let mut mirror = Mirror::new(&huge, &[(m, "all")]);
    mirror.set_proxies(&[&huge, &upstream.url()]);
    let report = tokio::time::timeout(Duration::from_secs(60), mirror.sync())
        .await
        .expect("sync does not hang on a huge body")
        .expect("sync runs");
    assert!(!report.all_ok(), "{report:#?}");
    assert_eq!(report.summary.published, 0, "{report:#?}");
    let row = mirror.row(m, "v1.0.0");
    assert_ne!(row.status, "published");
    let reason = row.last_error.unwrap_or_default();
    let want = format!("reading {huge}{zip_url}: response body larger than 524288000 bytes");
    assert!(reason.contains(&want), "{reason}");
    assert_eq!(
        upstream.requests(&zip_url),
        0,
        "a too-large body is not a 404"
    );
    let sent = sent.load(Ordering::Relaxed);
    assert!(
        sent < 16 << 20,
        "{sent} body bytes were sent before the client gave up"
    );
    assert_eq!(files_in(&mirror.tree()), [".gomirror.lock"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_changing_a_published_version_is_quarantined_not_overwritten() {
    let m = "example.com/c";
    let original = synthetic_module(m, "v1.0.0", 3, 4096);
    let upstream = Upstream::start(vec![original.clone()]).await;
    let mirror = Mirror::new(&upstream.url(), &[(m, "all")]);
    let report = mirror.sync().await.expect("first sync runs");
    assert!(report.all_ok(), "{report:#?}");
    let zip_rel = format!("{m}/@v/v1.0.0.zip");
    assert_eq!(mirror.file(&zip_rel).unwrap(), original.zip);

    // Upstream now serves other (valid) zip bytes for the same version; the
    // .info and .mod are unchanged.
    let changed = synthetic_module(m, "v1.0.0", 5, 8192);
    assert_eq!(changed.mod_file, original.mod_file);
    assert_ne!(changed.zip, original.zip);
    upstream.add(changed);
    // Stage a re-fetch: the row goes back to pending (the immutability
    // trigger is the backstop against exactly this, so it goes first).
    mirror
        .db()
        .execute_batch(
            "DROP TRIGGER versions_published_immutable;
             UPDATE versions SET status = 'pending' WHERE version = 'v1.0.0';",
        )
        .expect("stage a pending re-fetch");

    let report = mirror.sync().await.expect("second sync runs");
    assert_eq!(
        (report.summary.published, report.summary.quarantined),
        (0, 1),
        "{report:#?}"
    );
    let row = mirror.row(m, "v1.0.0");
    assert_eq!(row.status, "quarantined", "{row:?}");
    let reason = row.last_error.unwrap_or_default();
    assert!(
        reason.starts_with("published files differ from upstream: ")
            && reason.contains("v1.0.0.zip is already published with sha256"),
        "{reason}"
    );
    assert_eq!(
        mirror.file(&zip_rel).unwrap(),
        original.zip,
        "the published zip was overwritten"
    );
    assert_eq!(mirror.file(&format!("{m}/@v/list")).unwrap(), b"v1.0.0\n");
    assert!(
        !files_in(&mirror.tree()).iter().any(|f| f.contains(".tmp-")),
        "a temp file was left behind"
    );

    let run = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert_eq!(mirror.file(&zip_rel).unwrap(), original.zip);
}
