//! The real `go` command checks the test checksum database: proof that `sumdb.rs` and
//! gomirror's `verify::sumdb` speak Go's protocol, not just agree with each other. (At the end,
//! `server` checks the server with gomirror's own sumdb code; those tests live here rather than
//! in `sumdb.rs`, which a bench includes.)
//!
//! The corpus upstream serves the database under `/sumdb/<name>/` (PROTOCOL.md "Checksum
//! database": `go` probes `supported` on its GOPROXY first). The log is padded around the
//! records `go` looks up, so it reads full and partial level-0 tiles and level-1 and level-2
//! tiles. Then:
//! - an honest database: `go mod download` succeeds and prints the sums the log holds;
//! - a log holding a wrong hash: `go` reports a checksum mismatch, "SECURITY ERROR";
//! - a lookup serving a record the log does not hold: `go` cannot authenticate it;
//! - a corrupted tile: `go` refuses the inconsistent tile;
//! - a fork under the same key after `go` saw the original: "SECURITY ERROR", misbehavior
//!   detected (Go: x/mod/sumdb/client.go checkTrees);
//! - GONOSUMDB keeps a module away from the database.
//!
//! `go` runs with a cleared environment and all its state under temp dirs; without `go` the
//! tests skip with a message, or fail under `GOMIRROR_REQUIRE_TOOLS=1` (as e2e.rs does).

use std::path::PathBuf;
use std::process::Output;
use std::sync::Arc;

use tokio::process::Command;

use gomirror::verify::sumdb::tile::{plan_tiles, Tile};
use gomirror::verify::sumdb::tlog::stored_hash_index;
use gomirror::verify::sumdb::TILE_HEIGHT;

use crate::harness::corpus_upstream;
use crate::nginx::{Misses, Nginx, Workers};
use crate::sumdb::SumdbServer;
use crate::tools::{find_go_119, need};
use crate::upstream::{ModuleFiles, Upstream};

const DB_NAME: &str = "sum.test.example";
const QUOTE: &str = "rsc.io/quote@v1.5.2";
/// Case-encoded in path and version: `lookup/rsc.io/!q!u!o!t!e@v1.5.3-!p!r!e`.
const UPPER_QUOTE: &str = "rsc.io/QUOTE@v1.5.3-PRE";
/// The corpus copy's hash (see h1.rs).
const QUOTE_H1: &str = "h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=";
/// A well-formed hash no corpus version has.
const WRONG_H1: &str = "h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

/// Go 1.19; `None` after saying why the test skips, a panic under `GOMIRROR_REQUIRE_TOOLS=1`.
pub(crate) fn go_or_skip(test: &str) -> Option<PathBuf> {
    need(test, "go", find_go_119())
}

/// The real `go` with a cleared environment, checking `GOSUMDB` through `GOPROXY`. `GOPATH`
/// (where `go` remembers the latest signed tree) and `GOMODCACHE` (cached modules, lookups and
/// tiles) live as long as the client, so a second download sees what the first one did.
pub(crate) struct GoClient {
    bin: PathBuf,
    proxy: String,
    vkey: String,
    home: tempfile::TempDir,
    pub nosumdb: String,
}

impl GoClient {
    fn new(bin: PathBuf, upstream: &Upstream, db: &SumdbServer) -> GoClient {
        GoClient::with_proxy(bin, &upstream.url(), db.vkey())
    }

    /// A client of `proxy` alone (nothing else is reachable) that trusts `vkey`.
    pub(crate) fn with_proxy(bin: PathBuf, proxy: &str, vkey: &str) -> GoClient {
        GoClient {
            bin,
            proxy: proxy.to_owned(),
            vkey: vkey.to_owned(),
            home: tempfile::tempdir().expect("temp dir"),
            nosumdb: String::new(),
        }
    }

    /// `go mod download -json <targets>` outside any module.
    pub(crate) async fn download(&self, targets: &[&str]) -> Output {
        let work = tempfile::tempdir().expect("temp dir");
        let mut args = vec!["mod", "download", "-json"];
        args.extend(targets);
        self.run(work.path(), &args).await
    }

    /// `go <args>` in `dir`.
    pub(crate) async fn run(&self, dir: &std::path::Path, args: &[&str]) -> Output {
        hermetic_go(
            &self.bin,
            self.home.path(),
            &self.proxy,
            &self.vkey,
            &self.nosumdb,
        )
        .args(args)
        .current_dir(dir)
        .output()
        .await
        .unwrap_or_else(|e| panic!("run {}: {e}", self.bin.display()))
    }

    /// The signed tree this client remembers, `GOPATH/pkg/sumdb/<name>/latest`.
    pub(crate) fn cached_latest(&self, name: &str) -> Option<Vec<u8>> {
        let gopath = self.home.path().join("gopath");
        std::fs::read(gopath.join("pkg/sumdb").join(name).join("latest")).ok()
    }
}

/// `go` with a cleared environment: every cache and config under `home`, only `proxy`
/// reachable, the checksum database as `gosumdb` names it (a key, or `off`), and nothing
/// from the host's Go setup.
pub(crate) fn hermetic_go(
    bin: &std::path::Path,
    home: &std::path::Path,
    proxy: &str,
    gosumdb: &str,
    gonosumdb: &str,
) -> Command {
    let mut cmd = Command::new(bin);
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home)
        .env("GOENV", "off")
        .env("GOPATH", home.join("gopath"))
        .env("GOMODCACHE", home.join("modcache"))
        .env("GOCACHE", home.join("gocache"))
        .env("GOPROXY", proxy)
        .env("GOSUMDB", gosumdb)
        .env("GONOSUMDB", gonosumdb)
        .env("GONOPROXY", "")
        .env("GOPRIVATE", "")
        .env("GOINSECURE", "")
        // -modcacherw: the module cache is left writable, so the temp dir can be removed.
        .env("GOFLAGS", "-mod=mod -modcacherw")
        .env("GO111MODULE", "on")
        .env("GOWORK", "off")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0");
    cmd
}

pub(crate) fn describe(out: &Output) -> String {
    format!(
        "{}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The `Sum` and `GoModSum` `go mod download -json` printed for `path`.
pub(crate) fn sums(out: &Output, path: &str) -> (String, String) {
    let objects: Vec<serde_json::Value> = serde_json::Deserializer::from_slice(&out.stdout)
        .into_iter()
        .collect::<Result<_, _>>()
        .unwrap_or_else(|e| panic!("bad JSON ({e}): {}", describe(out)));
    let obj = objects
        .iter()
        .find(|o| o["Path"] == path)
        .unwrap_or_else(|| panic!("no {path} in {}", describe(out)));
    let field = |name: &str| obj[name].as_str().unwrap_or_default().to_owned();
    (field("Sum"), field("GoModSum"))
}

/// The corpus upstream with a database attached: 300 padding records, then the records of
/// `with_records` (hashed as gomirror hashes them), then 70 000 more padding records, so the
/// looked-up records sit in full level-0 and level-1 tiles below a partial right edge.
async fn setup(with_records: &[&str]) -> (Upstream, Arc<SumdbServer>) {
    let upstream = corpus_upstream().await;
    let db = SumdbServer::new(DB_NAME);
    db.pad(300);
    let wanted: Vec<ModuleFiles> = crate::corpus::load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .filter(|m| with_records.contains(&format!("{}@{}", m.path, m.version).as_str()))
        .collect();
    assert_eq!(
        db.add_modules(&wanted),
        with_records.len(),
        "hash {with_records:?}"
    );
    db.pad(70_000);
    upstream.attach_sumdb(db.clone());
    (upstream, db)
}

fn tile_requests(upstream: &Upstream, tile: &str) -> usize {
    upstream.requests(&format!("/sumdb/{DB_NAME}/{tile}"))
}

#[tokio::test]
async fn go_verifies_lookups_through_the_proxy() {
    let Some(go) = go_or_skip("go_verifies_lookups_through_the_proxy") else {
        return;
    };
    let (upstream, db) = setup(&[QUOTE, UPPER_QUOTE]).await;
    let client = GoClient::new(go, &upstream, &db);
    let out = client.download(&[QUOTE, UPPER_QUOTE]).await;
    assert!(out.status.success(), "{}", describe(&out));

    for (target, path, version) in [
        (QUOTE, "rsc.io/quote", "v1.5.2"),
        (UPPER_QUOTE, "rsc.io/QUOTE", "v1.5.3-PRE"),
    ] {
        let record = String::from_utf8(db.record(path, version).unwrap()).unwrap();
        let (sum, go_mod_sum) = sums(&out, path);
        assert_eq!(
            record,
            format!("{path} {version} {sum}\n{path} {version}/go.mod {go_mod_sum}\n"),
            "{target}"
        );
        assert_eq!(db.lookups_of(path), 1, "{target}");
    }
    assert_eq!(sums(&out, "rsc.io/quote").0, QUOTE_H1);
    assert_eq!(tile_requests(&upstream, "supported"), 1);
    // Records 300 and 301 of 70 302: Go reads the right edge of every level, then the full
    // tiles between the records and the edge: exactly what plan_tiles predicts, once each.
    let size = db.size();
    assert_eq!(size, 70_302);
    let want = [
        "tile/8/2/000.p/1",
        "tile/8/1/001.p/18",
        "tile/8/0/274.p/158",
        "tile/8/1/000",
        "tile/8/0/001",
    ];
    let tree = db.tree();
    for id in [300, 301] {
        let plan = plan_tiles(TILE_HEIGHT, &tree, &[stored_hash_index(0, id)]).unwrap();
        let plan: Vec<String> = plan.iter().map(Tile::path).collect();
        assert_eq!(plan, want, "record {id}");
    }
    for tile in want {
        assert_eq!(tile_requests(&upstream, tile), 1, "{tile}");
    }
    assert_eq!(tile_requests(&upstream, "tile/"), want.len());
}

#[tokio::test]
async fn go_skips_the_database_for_gonosumdb() {
    let Some(go) = go_or_skip("go_skips_the_database_for_gonosumdb") else {
        return;
    };
    let (upstream, db) = setup(&[QUOTE]).await;
    let mut client = GoClient::new(go, &upstream, &db);
    client.nosumdb = "rsc.io/QUOTE".to_owned();
    let out = client.download(&[QUOTE, UPPER_QUOTE]).await;
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(db.lookups_of("rsc.io/quote"), 1);
    assert_eq!(db.lookups_of("rsc.io/QUOTE"), 0);
}

#[tokio::test]
async fn go_reports_a_checksum_mismatch_for_a_wrong_logged_hash() {
    let Some(go) = go_or_skip("go_reports_a_checksum_mismatch_for_a_wrong_logged_hash") else {
        return;
    };
    let (upstream, db) = setup(&[]).await;
    let mod_h1 = crate::sumdb::module_hashes(&quote_files()).unwrap().1;
    db.add("rsc.io/quote", "v1.5.2", WRONG_H1, &mod_h1);
    let out = GoClient::new(go, &upstream, &db).download(&[QUOTE]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let text = describe(&out);
    for want in [
        "verifying module: checksum mismatch",
        &format!("downloaded: {QUOTE_H1}"),
        &format!("{DB_NAME}: {WRONG_H1}"),
        "SECURITY ERROR",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
}

#[tokio::test]
async fn go_refuses_a_record_outside_the_log() {
    let Some(go) = go_or_skip("go_refuses_a_record_outside_the_log") else {
        return;
    };
    let (upstream, db) = setup(&[QUOTE]).await;
    db.tamper_lookup("rsc.io/quote", "v1.5.2", WRONG_H1);
    let out = GoClient::new(go, &upstream, &db).download(&[QUOTE]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let text = describe(&out);
    // Go: x/mod/sumdb/client.go checkRecord.
    assert!(
        text.contains(
            "rsc.io/quote@v1.5.2/go.mod: cannot authenticate record data in server response"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn go_refuses_a_corrupt_tile() {
    let Some(go) = go_or_skip("go_refuses_a_corrupt_tile") else {
        return;
    };
    let (upstream, db) = setup(&[QUOTE]).await;
    // The right edge of level 0: Go checks it against the signed tree hash.
    let size = db.size();
    let edge = Tile {
        h: TILE_HEIGHT,
        l: 0,
        n: size >> TILE_HEIGHT,
        w: (size % (1 << TILE_HEIGHT)) as i32,
    };
    db.corrupt_tile(&edge.path());
    let out = GoClient::new(go, &upstream, &db).download(&[QUOTE]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let text = describe(&out);
    assert!(text.contains("downloaded inconsistent tile"), "{text}");
}

#[tokio::test]
async fn go_detects_a_forked_log() {
    let Some(go) = go_or_skip("go_detects_a_forked_log") else {
        return;
    };
    let (upstream, db) = setup(&[QUOTE, UPPER_QUOTE]).await;
    let client = GoClient::new(go, &upstream, &db);
    let out = client.download(&[QUOTE]).await;
    assert!(out.status.success(), "{}", describe(&out));

    // Same name and key, another history. `go` remembers the tree it saw (GOPATH) and has its
    // tiles cached (GOMODCACHE); the fork's newer tree must contain that tree, and does not.
    let fork = SumdbServer::fork_of(&db);
    upstream.attach_sumdb(fork.clone());
    let out = client.download(&[UPPER_QUOTE]).await;
    assert!(!out.status.success(), "{}", describe(&out));
    let text = describe(&out);
    for want in [
        "SECURITY ERROR",
        "go.sum database server misbehavior detected!",
    ] {
        assert!(text.contains(want), "want {want:?} in:\n{text}");
    }
    assert_eq!(fork.lookups_of("rsc.io/QUOTE"), 1);
}

// ---- clients that fall through to another proxy, through the shipped nginx block ----

/// A module the fall-through test's mirror does not have; its record enters the database
/// after the mirror's sync, so the database grew past the tree head the mirror pinned.
const LACKED: &str = "rsc.io/fortune@v1.0.0";

/// The corpus version `target` (`path@version`) as the upstream serves it.
fn corpus_files(target: &str) -> ModuleFiles {
    crate::corpus::load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .find(|m| format!("{}@{}", m.path, m.version) == target)
        .unwrap_or_else(|| panic!("corpus has {target}"))
}

/// `GOPROXY=<mirror's nginx>,<upstream>`, as README suggests: `go` downloads a module the
/// mirror has and one it lacks, and checks both against the database. The mirror serves
/// `supported`, so every lookup goes to nginx. As shipped, the lacked module's lookup is 404
/// and `go` fails (what users measured); with the block's checksum-database fall-through
/// enabled, nginx answers it and the tiles of the grown tree from the database, and `go`
/// verifies both, never asking the upstream proxy about the database.
// See: #13
async fn fall_through_clients_verify_what_the_mirror_lacks(test: &str, go: PathBuf) {
    let Some(nginx) = need(test, "nginx", crate::nginx::find_nginx()) else {
        return;
    };
    let upstream = corpus_upstream().await;
    let db = SumdbServer::new(DB_NAME);
    db.pad(300);
    assert!(
        db.add_module(&corpus_files(QUOTE)).is_some(),
        "hash {QUOTE}"
    );
    db.pad(1000);
    upstream.attach_sumdb(db.clone());
    let mut mirror = crate::harness::Mirror::new(&upstream.url(), &[("rsc.io/quote", "v1.5.2")]);
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    let sync = mirror.run_bin(&["sync", "--no-progress"]).await;
    assert_eq!(sync.code, Some(0), "{sync:#?}");
    let pinned = db.size();
    assert!(
        db.add_module(&corpus_files(LACKED)).is_some(),
        "hash {LACKED}"
    );
    db.pad(300);

    let lacked_lookup = "lookup/rsc.io/fortune@v1.0.0";
    {
        let server = Nginx::start(&nginx, &mirror.tree(), Workers::SameUser);
        let proxies = format!("{},{}", server.url(), upstream.url());
        let client = GoClient::with_proxy(go.clone(), &proxies, db.vkey());
        let out = client.download(&[QUOTE, LACKED]).await;
        assert!(!out.status.success(), "{}", describe(&out));
        let text = describe(&out);
        let want = format!("/sumdb/{DB_NAME}/{lacked_lookup}: 404 Not Found");
        assert!(text.contains(&want), "want {want:?} in:\n{text}");
    }

    let base = format!("{}/sumdb/{DB_NAME}", upstream.url());
    let misses = Misses::SumdbFallThrough(&base);
    let server = Nginx::start_with(&nginx, &mirror.tree(), Workers::SameUser, misses);
    let proxies = format!("{},{}", server.url(), upstream.url());
    let client = GoClient::with_proxy(go, &proxies, db.vkey());
    let quote_zips = upstream.requests("/rsc.io/quote/@v/v1.5.2.zip");
    let supported = tile_requests(&upstream, "supported");
    let out = client.download(&[QUOTE, LACKED]).await;
    assert!(
        out.status.success(),
        "{}\n{}",
        describe(&out),
        server.logs()
    );
    for target in [QUOTE, LACKED] {
        let (path, version) = target.split_once('@').expect("path@version");
        let record = String::from_utf8(db.record(path, version).expect("record")).expect("utf-8");
        let (sum, go_mod_sum) = sums(&out, path);
        assert_eq!(
            record,
            format!("{path} {version} {sum}\n{path} {version}/go.mod {go_mod_sum}\n"),
            "{target}"
        );
    }
    // The mirror's copy and lookup were used; what it lacks came through nginx.
    assert_eq!(upstream.requests("/rsc.io/quote/@v/v1.5.2.zip"), quote_zips);
    assert_eq!(
        tile_requests(&upstream, "lookup/rsc.io/quote@"),
        1,
        "the sync's only"
    );
    assert_eq!(
        tile_requests(&upstream, lacked_lookup),
        1,
        "forwarded by nginx"
    );
    assert_eq!(
        tile_requests(&upstream, "supported"),
        supported,
        "go asked nginx only"
    );
    // go now trusts the grown tree, proven consistent with the one the mirror pinned.
    let latest = client
        .cached_latest(DB_NAME)
        .expect("go stored the latest tree");
    let size = db.size().to_string();
    assert!(
        String::from_utf8_lossy(&latest).contains(&format!("\n{size}\n")),
        "want size {size} (pinned {pinned}) in {:?}",
        String::from_utf8_lossy(&latest)
    );
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_fall_through_clients_verify_through_nginx() {
    let test = "sumdb_go::issue_13_fall_through_clients_verify_through_nginx";
    if let Some(go) = go_or_skip(test) {
        fall_through_clients_verify_what_the_mirror_lacks(test, go).await;
    }
}

// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_fall_through_clients_verify_through_nginx_current_go() {
    let test = "sumdb_go::issue_13_fall_through_clients_verify_through_nginx_current_go";
    if let Some(go) = need(test, "current go", crate::tools::find_go_current()) {
        fall_through_clients_verify_what_the_mirror_lacks(test, go).await;
    }
}

fn quote_files() -> ModuleFiles {
    crate::corpus::load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .find(|m| m.path == "rsc.io/quote" && m.version == "v1.5.2")
        .expect("corpus has rsc.io/quote v1.5.2")
}

// ---- the server on its own, checked with gomirror's sumdb code (no go needed) ----

mod server {
    use super::*;
    use bytes::Bytes;
    use gomirror::module::ModVer;
    use gomirror::verify::sumdb::note::{open, Verifier};
    use gomirror::verify::sumdb::tile::{plan_tiles, TileHashReader};
    use gomirror::verify::sumdb::tlog;
    use gomirror::verify::sumdb::tlog::{parse_record, parse_tree, stored_hash_index};
    use gomirror::verify::sumdb::{parse_lookup, parse_record_hashes};
    use std::collections::HashMap;

    const ZIP: &str = "h1:w5fcysjrx7yqtD/aO+QwRjYZOKnaM9Uh2b40tElTs3Y=";
    const MOD: &str = "h1:9c8NDE7XDS9iiJRmjcL1LgIAL6U/wMnFfUcd8dcw2W4=";

    /// What a client does with a lookup: open the note, fetch the planned tiles, check the
    /// record's inclusion. Returns the record's zip hash.
    fn client_lookup(db: &SumdbServer, path: &str, version: &str) -> Result<String, String> {
        let verifier = Verifier::parse(db.vkey()).map_err(|e| e.to_string())?;
        let mv = ModVer::parse(path, version).map_err(|e| e.to_string())?;
        let rel = gomirror::verify::sumdb::lookup_path(&mv);
        let (status, body) = db.handle(&rel).ok_or("lookup: 404")?;
        assert_eq!(status, 200);
        let lookup = parse_lookup(&mv, &body).map_err(|e| e.to_string())?;
        let note = open(&lookup.note, &[&verifier]).map_err(|e| e.to_string())?;
        let tree = parse_tree(note.text.as_bytes()).map_err(|e| e.to_string())?;
        let x = stored_hash_index(0, lookup.id);
        let mut tiles: HashMap<Tile, Bytes> = HashMap::new();
        for tile in plan_tiles(TILE_HEIGHT, &tree, &[x]).map_err(|e| e.to_string())? {
            let (status, data) = db.handle(&tile.path()).ok_or("tile: 404")?;
            assert_eq!(status, 200);
            tiles.insert(tile, data);
        }
        let reader = TileHashReader::new(tree, TILE_HEIGHT, &tiles);
        let got = tlog::HashReader::read_hashes(&reader, &[x]).map_err(|e| e.to_string())?;
        if got[0] != tlog::record_hash(&lookup.text) {
            return Err("cannot authenticate record data in server response".into());
        }
        let hashes = parse_record_hashes(&mv, &lookup.text).map_err(|e| e.to_string())?;
        Ok(hashes.h1_zip)
    }

    #[test]
    fn serves_the_protocol() {
        let db = SumdbServer::new("sum.test.example");
        assert!(db.vkey().starts_with("sum.test.example+"));
        db.pad(300);
        db.add("github.com/Azure/x", "v1.0.0-RC1", ZIP, MOD);
        db.pad(70_000);
        assert_eq!(db.size(), 70_301);
        assert_eq!(db.handle("supported"), Some((200, Bytes::new())));
        let (_, latest) = db.handle("latest").unwrap();
        let verifier = Verifier::parse(db.vkey()).unwrap();
        let tree = parse_tree(open(&latest, &[&verifier]).unwrap().text.as_bytes()).unwrap();
        assert_eq!(tree, db.tree());

        let (status, body) = db
            .handle("lookup/github.com/!azure/x@v1.0.0-!r!c1")
            .unwrap();
        assert_eq!(status, 200);
        let (id, text, rest) = parse_record(&body).unwrap();
        assert_eq!(id, 300);
        assert_eq!(text, db.record("github.com/Azure/x", "v1.0.0-RC1").unwrap());
        assert_eq!(rest, &latest[..]);
        assert_eq!(
            client_lookup(&db, "github.com/Azure/x", "v1.0.0-RC1"),
            Ok(ZIP.into())
        );
        assert_eq!(db.lookups_of("github.com/Azure/x"), 2);

        assert_eq!(
            db.handle("lookup/github.com/Azure/x@v1.0.0-RC1").unwrap().0,
            400
        );
        assert_eq!(db.handle("lookup/example.com/nope@v1.0.0"), None);
        assert_eq!(db.lookups(), 4);
        assert_eq!(db.lookups_of("example.com/nope"), 1);

        // Tiles: full, partial, level 1 and 2, data; beyond the tree and malformed.
        assert_eq!(db.handle("tile/8/0/000").unwrap().1.len(), 256 * 32);
        assert_eq!(db.handle("tile/8/0/274.p/157").unwrap().1.len(), 157 * 32);
        assert_eq!(db.handle("tile/8/1/000").unwrap().1.len(), 256 * 32);
        assert_eq!(db.handle("tile/8/1/001.p/18").unwrap().1.len(), 18 * 32);
        assert_eq!(db.handle("tile/8/2/000.p/1").unwrap().1.len(), 32);
        assert_eq!(db.handle("tile/8/0/274.p/158"), None);
        assert_eq!(db.handle("tile/8/0/275.p/1"), None);
        assert_eq!(db.handle("tile/8/0/0001").unwrap().0, 400);
        let (_, data) = db.handle("tile/8/data/001.p/45").unwrap();
        assert!(data.starts_with(b"256\npad.sumdb.test/m v0.0.256 h1:"));
        assert!(std::str::from_utf8(&data)
            .unwrap()
            .contains("\n300\ngithub.com/Azure/x "));
    }

    #[test]
    fn misbehaves_on_demand() {
        let db = SumdbServer::new("sum.test.example");
        db.pad(1000);
        db.add("example.com/m", "v1.0.0", ZIP, MOD);
        db.pad(10);
        assert_eq!(
            client_lookup(&db, "example.com/m", "v1.0.0"),
            Ok(ZIP.into())
        );

        db.tamper_lookup("example.com/m", "v1.0.0", MOD);
        assert_eq!(
            client_lookup(&db, "example.com/m", "v1.0.0"),
            Err("cannot authenticate record data in server response".into())
        );
        db.heal();

        // The right-edge level-0 tile: every client reads it.
        db.corrupt_tile("tile/8/0/003.p/243");
        let err = client_lookup(&db, "example.com/m", "v1.0.0").unwrap_err();
        assert!(err.starts_with("downloaded inconsistent tile"), "{err}");
        db.heal();

        db.set_disabled(true);
        assert_eq!(db.handle("supported"), None);
        assert_eq!(
            client_lookup(&db, "example.com/m", "v1.0.0"),
            Err("lookup: 404".into())
        );
        db.set_disabled(false);

        // A fork: same key, every lookup answered, no tree consistent with the original's.
        let fork = SumdbServer::fork_of(&db);
        assert_eq!(fork.vkey(), db.vkey());
        assert_eq!(
            client_lookup(&fork, "example.com/m", "v1.0.0"),
            Ok(ZIP.into())
        );
        fork.pad(5);
        let (old, new) = (db.tree(), fork.tree());
        assert!(new.n > old.n);
        let mut tiles: HashMap<Tile, Bytes> = HashMap::new();
        let rec = tlog::IndexRecorder::new();
        tlog::tree_hash(old.n, &rec).unwrap();
        for tile in plan_tiles(TILE_HEIGHT, &new, &rec.take()).unwrap() {
            tiles.insert(tile, fork.handle(&tile.path()).unwrap().1);
        }
        let reader = TileHashReader::new(new, TILE_HEIGHT, &tiles);
        assert_ne!(tlog::tree_hash(old.n, &reader).unwrap(), old.hash);
    }

    #[test]
    fn hashes_upstream_modules_like_gomirror() {
        let versions: Vec<ModuleFiles> = crate::corpus::load_go_corpus()
            .into_iter()
            .filter(|v| v.path == "rsc.io/quote" && v.version == "v1.5.2")
            .map(ModuleFiles::from)
            .collect();
        let db = SumdbServer::new("sum.test.example");
        assert_eq!(db.add_modules(&versions), 1);
        let record = String::from_utf8(db.record("rsc.io/quote", "v1.5.2").unwrap()).unwrap();
        // The go.sum line Go's scripts expect for the corpus copy (see h1.rs).
        assert!(
            record.starts_with(
                "rsc.io/quote v1.5.2 h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=\n"
            ),
            "{record}"
        );
    }
}
