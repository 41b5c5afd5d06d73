//! Issue 7, the online side of the air gap: `gomirror keygen`, `export`
//! and `bundle inspect` against a mirror that verified its versions with a
//! checksum database and publishes an offline copy of it.
//!
//! Every export runs the binary, so the test seams (`GOMIRROR_TEST_*`) are
//! set for that process only.

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use gomirror::bundle::manifest::{self, Manifest};
use gomirror::bundle::volume;
use gomirror::verify::sumdb::note::Verifier;
use sha2::{Digest, Sha256};

use crate::harness::{corpus_upstream, gomirror, run_command, BinRun, Mirror};
use crate::sumdb::SumdbServer;
use crate::upstream::{ModuleFiles, Upstream};

const DB: &str = "sum.bundle.example";
const SOURCE: &str = "mirror.bundle.example";

const FIRST: &[(&str, &str)] = &[("rsc.io/quote", "v1.5.2")];
const SECOND: &[(&str, &str)] = &[
    ("rsc.io/quote", "v1.5.2"),
    ("rsc.io/sampler", "v1.3.0"),
    ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
];

/// An upstream with a checksum database holding every SECOND version.
async fn upstream_with_db() -> (Upstream, Arc<SumdbServer>) {
    let upstream = corpus_upstream().await;
    let db = SumdbServer::new(DB);
    db.pad(300);
    let files: Vec<ModuleFiles> = crate::corpus::load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .filter(|m| SECOND.iter().any(|(p, v)| m.path == *p && m.version == *v))
        .collect();
    assert_eq!(db.add_modules(&files), SECOND.len());
    db.pad(1000);
    upstream.attach_sumdb(db.clone());
    (upstream, db)
}

/// A verifying mirror with an export key; returns it and the key's verifier.
fn exporting_mirror(
    upstream: &Upstream,
    db: &SumdbServer,
    watch: &[(&str, &str)],
) -> (Mirror, Verifier) {
    let mut mirror = Mirror::new(&upstream.url(), watch);
    mirror.sumdb = format!("key = \"{}\"\n", db.vkey());
    let key = mirror.dir.path().join("export.key");
    let vkey = gomirror::bundle::export::keygen(SOURCE, &key).expect("keygen");
    mirror.extra = format!("[export]\nkey = \"{}\"\n", key.display());
    (mirror, Verifier::parse(&vkey).expect("verifier"))
}

fn set_watch(mirror: &mut Mirror, watch: &[(&str, &str)]) {
    mirror.watch = watch
        .iter()
        .map(|(m, v)| (m.to_string(), v.to_string()))
        .collect();
}

async fn export(mirror: &Mirror, to: &Path, args: &[&str], env: &[(&str, &str)]) -> BinRun {
    let mut all = vec!["export", "--to", to.to_str().expect("utf-8 path")];
    all.extend_from_slice(args);
    let mut cmd = gomirror(&mirror.config_path(), &all);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd).await
}

/// The bundle files in `dir`, sorted.
fn bundle_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("list target")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    files
}

/// Every tar entry of the bundle at `path`: (name, bytes).
fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut archive = tar::Archive::new(volume::open_stream(path).expect("open bundle"));
    let mut out = Vec::new();
    for entry in archive.entries().expect("entries") {
        let mut entry = entry.expect("entry");
        let header = entry.header();
        assert_eq!(header.entry_type(), tar::EntryType::Regular);
        assert_eq!(header.mode().expect("mode"), 0o644);
        assert_eq!(header.mtime().expect("mtime"), 0);
        let name = String::from_utf8(entry.path_bytes().into_owned()).expect("utf-8 name");
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).expect("read entry");
        out.push((name, bytes));
    }
    out
}

/// Checks the bundle is consistent (entries in manifest order, sizes and
/// hashes, a signature by `key`) and returns its manifest and id.
fn check_bundle(path: &Path, key: &Verifier) -> (Manifest, String) {
    let entries = entries(path);
    assert_eq!(entries[0].0, "manifest.json");
    assert_eq!(entries[1].0, "manifest.sig");
    let (m, signer) = manifest::open(&entries[1].1, &entries[0].1, &[key]).expect("signature");
    assert_eq!(signer, format!("{}+{:08x}", key.name(), key.key_hash()));
    let names: Vec<&str> = entries[2..].iter().map(|(n, _)| n.as_str()).collect();
    let want: Vec<String> = m.files.iter().map(|f| format!("tree/{}", f.path)).collect();
    assert_eq!(names, want);
    for ((_, bytes), f) in entries[2..].iter().zip(&m.files) {
        assert_eq!(bytes.len() as u64, f.size, "{}", f.path);
        assert_eq!(hex::encode(Sha256::digest(bytes)), f.sha256, "{}", f.path);
    }
    (m, manifest::bundle_id(&entries[0].1))
}

fn paths_of(m: &Manifest) -> BTreeSet<String> {
    m.files.iter().map(|f| f.path.clone()).collect()
}

/// The files `versions` bring, tiles aside, as the layout names them.
fn version_files(versions: &[(&str, &str)]) -> BTreeSet<String> {
    use gomirror::publish::layout::{self, Kind, SumdbFile};
    let mut want = BTreeSet::new();
    for (p, v) in versions {
        let mv = gomirror::module::ModVer::parse(p, v).expect("valid");
        want.insert(layout::sumdb_rel(DB, SumdbFile::Lookup(&mv)));
        for kind in [Kind::Mod, Kind::Zip, Kind::Info] {
            want.insert(layout::version_rel(&mv, kind));
        }
        // Written for a module with only pseudo-versions too (empty).
        want.insert(layout::list_rel(&mv.path));
        want.insert(layout::latest_rel(&mv.path));
    }
    want.insert(layout::sumdb_rel(DB, SumdbFile::Latest));
    want.insert(layout::sumdb_rel(DB, SumdbFile::Supported));
    want
}

fn without_tiles(paths: &BTreeSet<String>) -> BTreeSet<String> {
    paths
        .iter()
        .filter(|p| !p.contains("/tile/"))
        .cloned()
        .collect()
}

fn tiles(paths: &BTreeSet<String>) -> BTreeSet<String> {
    paths
        .iter()
        .filter(|p| p.contains("/tile/"))
        .cloned()
        .collect()
}

#[tokio::test]
async fn bundle_export_holds_exactly_what_was_published_since_the_last() {
    let (upstream, db) = upstream_with_db().await;
    let (mut mirror, key) = exporting_mirror(&upstream, &db, FIRST);
    mirror.sync().await.expect("first sync");
    let usb = tempfile::tempdir().expect("target");

    let run = export(&mirror, usb.path(), &[], &[]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let first = bundle_files(usb.path());
    assert_eq!(
        first,
        vec![usb.path().join(format!("gomirror-{SOURCE}-000001.tar.zst"))]
    );
    let (m1, id1) = check_bundle(&first[0], &key);
    assert_eq!(
        (m1.sequence, m1.follows.as_deref(), m1.full),
        (1, None, false)
    );
    assert_eq!(m1.source, SOURCE);
    let head = m1.sumdb.as_ref().expect("pinned head");
    assert_eq!((head.name.as_str(), head.size), (DB, db.size()));
    let tree_latest = mirror.file(&format!("sumdb/{DB}/latest")).expect("latest");
    assert_eq!(head.note.as_bytes(), tree_latest);
    assert_eq!(m1.versions.len(), 1);
    assert_eq!(
        m1.versions[0].h1_zip.as_deref(),
        Some("h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=")
    );
    let p1 = paths_of(&m1);
    assert_eq!(without_tiles(&p1), version_files(FIRST));
    assert!(!tiles(&p1).is_empty(), "the lookup needs tiles");
    // Tiles first, then lookups, then the version's files.
    assert!(m1.files[0].path.starts_with(&format!("sumdb/{DB}/tile/")));

    set_watch(&mut mirror, SECOND);
    mirror.sync().await.expect("second sync");
    let usb2 = tempfile::tempdir().expect("target");
    let run = export(&mirror, usb2.path(), &[], &[]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let second = bundle_files(usb2.path());
    assert_eq!(
        second,
        vec![usb2
            .path()
            .join(format!("gomirror-{SOURCE}-000002.tar.zst"))]
    );
    let (m2, _) = check_bundle(&second[0], &key);
    assert_eq!(
        (m2.sequence, m2.follows.as_deref()),
        (2, Some(id1.as_str()))
    );
    let new: Vec<(&str, &str)> = SECOND[1..].to_vec();
    let got: BTreeSet<(String, String)> = m2
        .versions
        .iter()
        .map(|v| (v.path.clone(), v.version.clone()))
        .collect();
    let want: BTreeSet<(String, String)> = new
        .iter()
        .map(|(p, v)| (p.to_string(), v.to_string()))
        .collect();
    assert_eq!(got, want);
    let p2 = paths_of(&m2);
    assert_eq!(without_tiles(&p2), version_files(&new));
    assert!(
        tiles(&p1).is_disjoint(&tiles(&p2)),
        "a tile is exported once"
    );
    let mutable = version_files(&[]);
    for p in &p1 {
        assert!(mutable.contains(p) || !p2.contains(p), "{p} exported twice");
    }

    // --full: everything again, and the chain goes on.
    let usb3 = tempfile::tempdir().expect("target");
    let run = export(
        &mirror,
        usb3.path(),
        &["--full", "--compression", "none"],
        &[],
    )
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let third = bundle_files(usb3.path());
    assert_eq!(
        third,
        vec![usb3
            .path()
            .join(format!("gomirror-{SOURCE}-000003-full.tar"))]
    );
    let (m3, _) = check_bundle(&third[0], &key);
    assert!(m3.full);
    assert_eq!(m3.versions.len(), SECOND.len());
    assert_eq!(without_tiles(&paths_of(&m3)), version_files(SECOND));
    assert_eq!(tiles(&paths_of(&m3)), &tiles(&p1) | &tiles(&p2));

    // status lists the exports, newest first.
    let run = run_command(gomirror(&mirror.config_path(), &["status", "--json"])).await;
    let status: serde_json::Value = serde_json::from_str(&run.stdout).expect("status json");
    let seqs: Vec<u64> = status["exports"]
        .as_array()
        .expect("exports")
        .iter()
        .map(|e| e["sequence"].as_u64().expect("sequence"))
        .collect();
    assert_eq!(seqs, vec![3, 2, 1]);
    assert_eq!(status["exports"][1]["versions"], 2);
}

#[tokio::test]
async fn bundle_export_interrupted_records_nothing_and_leaves_nothing() {
    let (upstream, db) = upstream_with_db().await;
    let (mirror, key) = exporting_mirror(&upstream, &db, SECOND);
    mirror.sync().await.expect("sync");
    let usb = tempfile::tempdir().expect("target");

    let run = export(
        &mirror,
        usb.path(),
        &[],
        &[("GOMIRROR_TEST_EXPORT_FAIL_AFTER", "3")],
    )
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("interrupted after 3 files"),
        "{}",
        run.stderr
    );
    assert_eq!(bundle_files(usb.path()), Vec::<PathBuf>::new());

    let run = export(
        &mirror,
        usb.path(),
        &[],
        &[("GOMIRROR_TEST_FREE_BYTES", "4096")],
    )
    .await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains(&format!(
            "not enough free space in {}: the bundle needs up to ",
            usb.path().display()
        )) && run.stderr.contains("bytes, 4096 are free"),
        "{}",
        run.stderr
    );
    assert_eq!(bundle_files(usb.path()), Vec::<PathBuf>::new());

    // A sync (or another export) holding the tree's run lock: no export.
    let lock =
        gomirror::lock::RunLock::acquire(&mirror.tree().join(".gomirror.lock")).expect("lock");
    let run = export(&mirror, usb.path(), &[], &[]).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains("another gomirror run holds"),
        "{}",
        run.stderr
    );
    drop(lock);

    // Nothing was recorded: the next export is #1 with every version.
    let run = export(&mirror, usb.path(), &[], &[]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let files = bundle_files(usb.path());
    assert_eq!(files.len(), 1);
    let (m, _) = check_bundle(&files[0], &key);
    assert_eq!((m.sequence, m.follows.as_deref()), (1, None));
    assert_eq!(m.versions.len(), SECOND.len());
}

#[tokio::test]
async fn bundle_export_splits_into_volumes_that_join() {
    let (upstream, db) = upstream_with_db().await;
    let (mirror, key) = exporting_mirror(&upstream, &db, SECOND);
    mirror.sync().await.expect("sync");
    let usb = tempfile::tempdir().expect("target");

    let run = export(&mirror, usb.path(), &["--max-volume-size", "2K"], &[]).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let volumes = bundle_files(usb.path());
    assert!(volumes.len() > 2, "{volumes:?}");
    let name = format!("gomirror-{SOURCE}-000001.tar.zst");
    let mut joined = Vec::new();
    for (i, v) in volumes.iter().enumerate() {
        assert_eq!(v, &usb.path().join(format!("{name}.{i:03}")));
        let bytes = std::fs::read(v).expect("volume");
        assert!(bytes.len() <= 2048, "{}: {}", v.display(), bytes.len());
        joined.extend(bytes);
    }
    assert_eq!(
        volume::bundle_len(&volumes[0]).expect("len"),
        joined.len() as u64
    );
    let mut stream = Vec::new();
    volume::open_stream(&volumes[0])
        .expect("open")
        .read_to_end(&mut stream)
        .expect("read");
    assert_eq!(stream, zstd::decode_all(&joined[..]).expect("zstd"));
    let (m, _) = check_bundle(&volumes[0], &key);
    assert_eq!(m.versions.len(), SECOND.len());
    // The name without the volume suffix opens it too.
    assert_eq!(entries(&usb.path().join(&name)).len(), m.files.len() + 2);
}

#[tokio::test]
async fn bundle_inspect_shows_signer_chain_counts_and_head() {
    let (upstream, db) = upstream_with_db().await;
    let (mirror, key) = exporting_mirror(&upstream, &db, SECOND);
    mirror.sync().await.expect("sync");
    let usb = tempfile::tempdir().expect("target");
    assert_eq!(export(&mirror, usb.path(), &[], &[]).await.code, Some(0));
    let files = bundle_files(usb.path());
    let (m, id) = check_bundle(&files[0], &key);

    let path = files[0].to_str().expect("utf-8");
    let run = run_command(gomirror(
        &mirror.config_path(),
        &["bundle", "inspect", path, "--json"],
    ))
    .await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let info: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    assert_eq!(info["signer"], format!("{SOURCE}+{:08x}", key.key_hash()));
    assert_eq!(info["signature_verified"], true);
    assert_eq!(info["source"], SOURCE);
    assert_eq!(info["sequence"], 1);
    assert_eq!(info["follows"], serde_json::Value::Null);
    assert_eq!(info["bundle_id"], id);
    assert_eq!(info["versions"], SECOND.len());
    assert_eq!(info["files"], m.files.len());
    assert_eq!(
        info["file_bytes"],
        m.files.iter().map(|f| f.size).sum::<u64>()
    );
    assert_eq!(
        info["bytes"],
        std::fs::metadata(&files[0]).expect("stat").len()
    );
    assert_eq!(info["sumdb"]["name"], DB);
    assert_eq!(info["sumdb"]["size"], db.size());

    // Without the signing key the signer is only claimed.
    let elsewhere = tempfile::tempdir().expect("dir");
    let cfg = elsewhere.path().join("none.toml");
    let run = run_command(gomirror(&cfg, &["bundle", "inspect", path])).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    assert!(
        run.stdout.contains("(NOT verified: no trusted key given)"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains(&format!("tree head: {DB} size {}", db.size())),
        "{}",
        run.stdout
    );
}

#[tokio::test]
async fn keygen_writes_a_private_key_once() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("dir");
    let out = dir.path().join("export.key");
    let cfg = dir.path().join("mirror.toml");
    let args = [
        "keygen",
        "--name",
        SOURCE,
        "--out",
        out.to_str().expect("utf-8"),
    ];
    let run = run_command(gomirror(&cfg, &args)).await;
    assert_eq!(run.code, Some(0), "{run:?}");
    let vkey = Verifier::parse(run.stdout.trim()).expect("prints a verifier key");
    assert_eq!(vkey.name(), SOURCE);
    let mode = std::fs::metadata(&out).expect("key").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let signer = gomirror::bundle::export::read_signer(&out).expect("key reads back");
    assert_eq!(signer.key_hash(), vkey.key_hash());

    let before = std::fs::read(&out).expect("key");
    let run = run_command(gomirror(&cfg, &args)).await;
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(
        run.stderr.contains(&format!("{}: create", out.display())) && run.stderr.contains("exists"),
        "{}",
        run.stderr
    );
    assert_eq!(std::fs::read(&out).expect("key"), before);
}
