//! Issue 7, end to end: an online mirror exports signed, chained bundles; an offline mirror
//! (another tree and database, no upstream) imports them; nginx serves it and the real `go`,
//! with the test checksum database's key and nothing else reachable, verifies and builds.
//! Then every way a bundle must be refused, each leaving the offline side unchanged.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::corpus::load_go_corpus;
use crate::harness::{corpus_upstream, gomirror, run_command, BinRun, Mirror};
use crate::nginx::{find_nginx, Nginx, Workers};
use crate::sumdb::SumdbServer;
use crate::sumdb_go::{describe, go_or_skip, GoClient};
use crate::upstream::{ModuleFiles, Upstream};

pub(crate) const DB: &str = "sum.airgap.example";

pub(crate) const FIRST: &[(&str, &str)] = &[
    ("rsc.io/quote", "v1.5.2"),
    ("rsc.io/sampler", "v1.3.0"),
    ("golang.org/x/text", "v0.0.0-20170915032832-14c0d48ead0c"),
];
/// What the second sync adds.
pub(crate) const SECOND: (&str, &str) = ("rsc.io/quote", "v1.5.1");

/// The online side: a verifying mirror of the corpus, with an export key.
pub(crate) struct Online {
    pub(crate) upstream: Upstream,
    pub(crate) db: Arc<SumdbServer>,
    pub(crate) mirror: Mirror,
    pub(crate) vkey: String,
    pub(crate) media: tempfile::TempDir,
}

/// The offline side: no upstream (a closed port), the same checksum database key, and
/// `trusted` bundle keys.
pub(crate) struct Offline {
    pub(crate) mirror: Mirror,
}

fn corpus_files(targets: &[(&str, &str)]) -> Vec<ModuleFiles> {
    load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .filter(|m| targets.iter().any(|(p, v)| m.path == *p && m.version == *v))
        .collect()
}

pub(crate) async fn online(source: &str) -> Online {
    let upstream = corpus_upstream().await;
    let db = SumdbServer::new(DB);
    db.pad(300);
    let files = corpus_files(&[FIRST, &[SECOND]].concat());
    assert_eq!(db.add_modules(&files), files.len());
    db.pad(200);
    online_on(source, upstream, db).await
}

/// An online mirror of `upstream` verifying against `db` (shared with other sources),
/// exporting as `source`.
pub(crate) async fn online_on(source: &str, upstream: Upstream, db: Arc<SumdbServer>) -> Online {
    upstream.attach_sumdb(db.clone());
    let mut mirror = Mirror::new(&upstream.url(), FIRST);
    let key = mirror.dir.path().join("export.key");
    let gen = run_command(gomirror(
        &mirror.config_path(),
        &[
            "keygen",
            "--name",
            source,
            "--out",
            &key.display().to_string(),
        ],
    ))
    .await;
    assert_eq!(gen.code, Some(0), "{gen:#?}");
    let vkey = gen.stdout.trim().to_owned();
    assert!(
        vkey.starts_with(&format!("{source}+")),
        "keygen prints the verifier: {gen:#?}"
    );
    mirror.sumdb = format!(
        "key = \"{}\"\n[export]\nkey = \"{}\"\n",
        db.vkey(),
        key.display()
    );
    let media = tempfile::tempdir().expect("media dir");
    Online {
        upstream,
        db,
        mirror,
        vkey,
        media,
    }
}

impl Online {
    pub(crate) async fn sync(&self) {
        let run = self.mirror.run_bin(&["sync", "--no-progress"]).await;
        assert_eq!(run.code, Some(0), "{run:#?}");
    }

    /// `gomirror export` (plus `extra` arguments); the bundle files it wrote.
    pub(crate) async fn export(&self, extra: &[&str]) -> Vec<PathBuf> {
        let before = bundle_files(self.media.path());
        let to = self.media.path().display().to_string();
        let mut args = vec!["export", "--to", to.as_str()];
        args.extend(extra);
        let run = self.mirror.run_bin(&args).await;
        assert_eq!(run.code, Some(0), "{run:#?}");
        let mut new: Vec<PathBuf> = bundle_files(self.media.path())
            .into_iter()
            .filter(|p| !before.contains(p))
            .collect();
        new.sort();
        assert!(!new.is_empty(), "export wrote no bundle: {run:#?}");
        new
    }
}

/// Watch [`SECOND`] too (a module is watched by one entry).
pub(crate) fn add_second(mirror: &mut Mirror) {
    let quote = mirror
        .watch
        .iter_mut()
        .find(|(m, _)| m == SECOND.0)
        .expect("rsc.io/quote is watched");
    quote.1 = format!(">={}, <=v1.5.2", SECOND.1);
}

pub(crate) fn bundle_files(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .expect("media dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("gomirror-"))
        })
        .collect()
}

pub(crate) fn offline(db: &SumdbServer, trusted: &[&str]) -> Offline {
    let mut mirror = Mirror::new("http://127.0.0.1:9", &[]);
    let trusted: Vec<String> = trusted.iter().map(|k| format!("\"{k}\"")).collect();
    mirror.sumdb = format!(
        "key = \"{}\"\n[import]\ntrusted = [{}]\n",
        db.vkey(),
        trusted.join(", ")
    );
    Offline { mirror }
}

impl Offline {
    pub(crate) async fn import(&self, bundle: &Path) -> BinRun {
        let b = bundle.display().to_string();
        self.mirror.run_bin(&["import", "--no-progress", &b]).await
    }

    /// Every path of the tree (directories too) and every row of the state's versions and
    /// runs: what a refusal must leave exactly as it was.
    fn everything(&self) -> (Vec<String>, Vec<(String, String)>, Vec<String>) {
        let tree = self.mirror.tree();
        let paths = crate::harness::paths_under(&tree)
            .into_iter()
            .filter(|f| f != ".gomirror.lock")
            .collect();
        let db = self.mirror.db();
        let rows = |sql: &str| -> Vec<String> {
            db.prepare(sql)
                .expect(sql)
                .query_map([], |r| r.get(0))
                .expect(sql)
                .collect::<Result<_, _>>()
                .expect(sql)
        };
        let mut state = rows("SELECT id || ' ' || outcome FROM runs ORDER BY id");
        state.extend(rows(
            "SELECT m.path || '@' || v.version || ' ' || v.status FROM versions v \
             JOIN modules m ON m.id = v.module_id ORDER BY 1",
        ));
        (paths, self.snapshot(), state)
    }

    /// Every file of the tree with its sha256, to show a refusal changed nothing.
    pub(crate) fn snapshot(&self) -> Vec<(String, String)> {
        let tree = self.mirror.tree();
        if !tree.exists() {
            return Vec::new();
        }
        crate::harness::files_in(&tree)
            .into_iter()
            .filter(|f| f != ".gomirror.lock")
            .map(|f| {
                let bytes = std::fs::read(tree.join(&f)).expect("read");
                (f, hex::encode(Sha256::digest(&bytes)))
            })
            .collect()
    }

    pub(crate) fn published(&self) -> usize {
        self.mirror
            .rows()
            .iter()
            .filter(|r| r.status == "published")
            .count()
    }
}

/// The entry names of a bundle (all volumes joined, decompressed).
fn entries(bundle: &Path) -> Vec<String> {
    let stream = gomirror::bundle::volume::open_stream(bundle).expect("open bundle");
    let mut archive = tar::Archive::new(stream);
    archive
        .entries()
        .expect("tar")
        .map(|e| {
            e.expect("entry")
                .path()
                .expect("path")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_mirror_imports_and_go_builds_with_no_upstream() {
    let on = online("mirror.airgap.example").await;
    on.sync().await;
    let first = on.export(&[]).await;
    let off = offline(&on.db, &[&on.vkey]);
    let run = off.import(&first[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(off.published(), 3);
    let again = off.import(&first[0]).await;
    assert_eq!(
        again.code,
        Some(0),
        "re-importing is a no-op success: {again:#?}"
    );
    assert!(again.stderr.contains("applied before"), "{again:#?}");
    let audit = off.mirror.run_bin(&["verify"]).await;
    assert_eq!(audit.code, Some(0), "{audit:#?}");
    let status = off.mirror.run_bin(&["status", "--json"]).await;
    let json: serde_json::Value = serde_json::from_str(&status.stdout).expect("status json");
    assert_eq!(json["imports"][0]["source"], "mirror.airgap.example");
    assert_eq!(json["imports"][0]["sequence"], 1);
    assert_eq!(json["imports"][0]["versions"], 3);
    let human = off.mirror.run_bin(&["status"]).await;
    assert!(human.stdout.contains("recent imports:"), "{human:#?}");

    on.db.set_disabled(true);
    let go = go_or_skip("offline_mirror_imports_and_go_builds_with_no_upstream");
    let nginx = find_nginx();
    if let (Some(go), Some(nginx)) = (go.clone(), nginx.clone()) {
        let server = Nginx::start(&nginx, &off.mirror.tree(), Workers::SameUser);
        let client = GoClient::with_proxy(go, &server.url(), on.db.vkey());
        let hello = crate::trust::hello_module();
        let built = client
            .run(hello.path(), &["build", "-o", "hello", "."])
            .await;
        assert!(
            built.status.success(),
            "go build offline: {}",
            describe(&built)
        );
    }
    on.db.set_disabled(false);

    // A second sync brings one more version; the next export holds exactly its files.
    let mut on = on;
    add_second(&mut on.mirror);
    on.sync().await;
    let second = on.export(&[]).await;
    let names = entries(&second[0]);
    let files: Vec<&str> = names
        .iter()
        .filter_map(|n| n.strip_prefix("tree/"))
        .filter(|n| !n.contains("/tile/"))
        .collect();
    assert_eq!(
        files,
        [
            "sumdb/sum.airgap.example/lookup/rsc.io/quote@v1.5.1",
            "rsc.io/quote/@v/v1.5.1.mod",
            "rsc.io/quote/@v/v1.5.1.zip",
            "rsc.io/quote/@v/v1.5.1.info",
            "rsc.io/quote/@v/list",
            "rsc.io/quote/@latest",
            "sumdb/sum.airgap.example/latest",
            "sumdb/sum.airgap.example/supported",
        ],
        "{names:#?}"
    );
    let run = off.import(&second[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(off.published(), 4);
    let list =
        std::fs::read_to_string(off.mirror.tree().join("rsc.io/quote/@v/list")).expect("list");
    assert_eq!(list, "v1.5.1\nv1.5.2\n", "lists are merged");
    if let Some(go) = go {
        on.db.set_disabled(true);
        let proxy = format!("file://{}", off.mirror.tree().display());
        let out = GoClient::with_proxy(go, &proxy, on.db.vkey())
            .download(&["rsc.io/quote@v1.5.1", "rsc.io/quote@v1.5.2"])
            .await;
        assert!(out.status.success(), "{}", describe(&out));
    }
    let _ = &on.upstream;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gaps_untrusted_keys_and_other_sources_are_refused_with_nothing_changed() {
    let on = online("mirror.airgap.example").await;
    on.sync().await;
    let first = on.export(&[]).await;
    let mut on = on;
    add_second(&mut on.mirror);
    on.sync().await;
    let second = on.export(&[]).await;

    // A gap: bundle 2 onto a mirror that has nothing.
    let off = offline(&on.db, &[&on.vkey]);
    let run = off.import(&second[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("a gap"), "{run:#?}");
    assert!(off.snapshot().is_empty(), "nothing written");

    // An untrusted key.
    let other_key = run_command(gomirror(
        &off.mirror.config_path(),
        &[
            "keygen",
            "--name",
            "someone.else",
            "--out",
            &off.mirror.dir.path().join("k").display().to_string(),
        ],
    ))
    .await;
    let stranger = offline(&on.db, &[other_key.stdout.trim()]);
    let run = stranger.import(&first[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(stranger.snapshot().is_empty());

    // Another source: a second online mirror's bundle 1, signed by a trusted key, onto a
    // mirror that follows the first.
    let other = online("other.airgap.example").await;
    other.sync().await;
    let other_first = other.export(&[]).await;
    let off = offline(&on.db, &[&on.vkey, &other.vkey]);
    assert_eq!(off.import(&first[0]).await.code, Some(0));
    let before = off.snapshot();
    let run = off.import(&other_first[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("another source"), "{run:#?}");
    assert_eq!(off.snapshot(), before, "nothing changed");
}

/// Rewrites a bundle: `edit` changes the files (by tree path); the manifest's hashes follow;
/// `resign` signs it again with `key` (else the old signature stays).
pub(crate) fn rewrite_bundle(
    bundle: &Path,
    out: &Path,
    edit: impl Fn(&str, Vec<u8>) -> Vec<u8>,
    resign: Option<&Path>,
) {
    use gomirror::bundle::manifest::{self, Manifest};
    let stream = gomirror::bundle::volume::open_stream(bundle).expect("open");
    let mut archive = tar::Archive::new(stream);
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    for e in archive.entries().expect("tar") {
        let mut e = e.expect("entry");
        let name = e.path().expect("path").to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).expect("read");
        files.push((name, data));
    }
    let mut m = Manifest::from_json(&files[0].1).expect("manifest");
    for (name, data) in files.iter_mut().skip(2) {
        let rel = name.strip_prefix("tree/").expect("tree entry").to_owned();
        *data = edit(&rel, std::mem::take(data));
        let f = m
            .files
            .iter_mut()
            .find(|f| f.path == rel)
            .expect("in manifest");
        f.size = data.len() as u64;
        f.sha256 = hex::encode(Sha256::digest(&*data));
    }
    let json = m.to_json();
    let sig = match resign {
        Some(key) => {
            let signer = gomirror::bundle::export::read_signer(key).expect("key");
            manifest::sign(&json, &m, &signer).expect("sign")
        }
        None => files[1].1.clone(),
    };
    files[0].1 = json;
    files[1].1 = sig;
    let mut builder = tar::Builder::new(std::fs::File::create(out).expect("create"));
    for (name, data) in &files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        builder
            .append_data(&mut h, name, &data[..])
            .expect("append");
    }
    builder.finish().expect("finish");
}

/// A valid module zip with other content than the corpus's.
fn other_zip(prefix: &str) -> Vec<u8> {
    crate::zipgen::module_zip(
        prefix,
        &[
            ("go.mod", b"module \"rsc.io/quote\"\n"),
            (
                "quote.go",
                b"package quote\n\nfunc Hello() string { return \"tampered\" }\n",
            ),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_bundles_are_refused_with_nothing_changed() {
    let on = online("mirror.airgap.example").await;
    on.sync().await;
    let first = on.export(&[]).await;
    let work = tempfile::tempdir().expect("temp dir");
    let zip = "rsc.io/quote/@v/v1.5.2.zip";
    let tamper = |rel: &str, data: Vec<u8>| {
        if rel == zip {
            other_zip("rsc.io/quote@v1.5.2/")
        } else {
            data
        }
    };

    // One zip changed, the manifest re-hashed, not re-signed: the signature no longer
    // covers the manifest.
    let unsigned = work.path().join("unsigned.tar");
    rewrite_bundle(&first[0], &unsigned, tamper, None);
    let off = offline(&on.db, &[&on.vkey]);
    let run = off.import(&unsigned).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        off.snapshot().is_empty(),
        "nothing written: {:?}",
        off.snapshot()
    );

    // Re-signed with the trusted key (a compromised exporter): the manifest is consistent,
    // but the zip is not what the checksum database's record says.
    let key = on.mirror.dir.path().join("export.key");
    let resigned = work.path().join("resigned.tar");
    rewrite_bundle(&first[0], &resigned, tamper, Some(&key));
    let run = off.import(&resigned).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(zip), "names the file: {run:#?}");
    assert!(run.stderr.contains("SECURITY ERROR"), "{run:#?}");
    let left: Vec<_> = off
        .snapshot()
        .into_iter()
        .filter(|(f, _)| !f.rsplit('/').next().unwrap_or(f).starts_with(".tmp-"))
        .collect();
    assert!(left.is_empty(), "nothing visible: {left:?}");
    assert_eq!(off.published(), 0);

    // The genuine bundle still imports afterwards.
    let run = off.import(&first[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(off.published(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_room_for_the_bundle_is_a_clear_error() {
    let on = online("mirror.airgap.example").await;
    on.sync().await;
    let first = on.export(&[]).await;
    let off = offline(&on.db, &[&on.vkey]);
    let b = first[0].display().to_string();
    let mut cmd = off.mirror.command(&["import", "--no-progress", &b]);
    cmd.env("GOMIRROR_TEST_FREE_BYTES", "1000");
    let run = run_command(cmd).await;
    assert_eq!(run.code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("not enough free space"), "{run:#?}");
    assert_eq!(off.published(), 0);
}

/// kill -9 at points of an import, then the same import again: the invariants of a sync
/// hold at every point (no listed version without its files) and the import completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_imports_leave_no_torn_tree_and_complete_when_run_again() {
    let mut on = online("mirror.airgap.example").await;
    // More versions, so that kills land inside the import.
    let all = load_go_corpus()
        .into_iter()
        .map(ModuleFiles::from)
        .filter(|m| m.path.starts_with("rsc.io/") && m.listed)
        .collect::<Vec<_>>();
    on.db.add_modules(&all);
    on.mirror.watch = [
        "rsc.io/quote",
        "rsc.io/sampler",
        "rsc.io/QUOTE",
        "rsc.io/breaker",
    ]
    .iter()
    .map(|m| (m.to_string(), "all".to_string()))
    .chain([(FIRST[2].0.to_string(), FIRST[2].1.to_string())])
    .collect();
    on.sync().await;
    let first = on.export(&[]).await;
    let off = offline(&on.db, &[&on.vkey]);
    let total = on.mirror.rows().len();
    let b = first[0].display().to_string();
    let mut mid = 0;
    for delay_ms in [10u64, 40, 80, 120, 170, 230, 300, 400] {
        let mut cmd = off.mirror.command(&["import", "--no-progress", &b]);
        cmd.stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        let mut child = cmd.spawn().expect("spawn");
        tokio::time::sleep(std::time::Duration::from_millis(delay_ms)).await;
        let _ = child.start_kill();
        child.wait().await.expect("reap");
        let when = format!("after a kill at {delay_ms} ms");
        let files = check_listed_files(&off.mirror.tree(), &when);
        let imported = off.mirror.database().exists()
            && off
                .mirror
                .db()
                .query_row("SELECT COUNT(*) FROM imports", [], |r| r.get::<_, i64>(0))
                .unwrap_or(0)
                > 0;
        if files > 0 && !imported {
            mid += 1;
        }
    }
    assert!(mid >= 2, "only {mid} kills landed inside the import");
    let run = off.import(&first[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(off.published(), total);
    let audit = off.mirror.run_bin(&["verify"]).await;
    assert_eq!(audit.code, Some(0), "{audit:#?}");
    let temps: Vec<String> = crate::harness::files_in(&off.mirror.tree())
        .into_iter()
        .filter(|f| f.rsplit('/').next().is_some_and(|n| n.starts_with(".tmp-")))
        .collect();
    assert!(temps.is_empty(), "{temps:?}");
}

/// Every version a list names has its three files. Returns how many files the tree has.
fn check_listed_files(tree: &Path, when: &str) -> usize {
    if !tree.exists() {
        return 0;
    }
    let files = crate::harness::files_in(tree);
    for rel in &files {
        let Some(module) = rel.strip_suffix("/@v/list") else {
            continue;
        };
        for v in std::fs::read_to_string(tree.join(rel))
            .expect("list")
            .lines()
        {
            for ext in ["info", "mod", "zip"] {
                // The list holds versions as `go` names them; files are case-encoded.
                let escaped = gomirror::module::Version::new(v)
                    .expect("listed version")
                    .escaped();
                let f = tree.join(format!("{module}/@v/{escaped}.{ext}"));
                assert!(
                    f.is_file(),
                    "{when}: {module} lists {v}, {} is missing",
                    f.display()
                );
            }
        }
    }
    files.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_bundle_imports_as_one() {
    let on = online("mirror.airgap.example").await;
    on.sync().await;
    let parts = on.export(&["--max-volume-size", "4K"]).await;
    assert!(parts.len() > 2, "split into volumes: {parts:?}");
    let off = offline(&on.db, &[&on.vkey]);
    let run = off.import(&parts[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(off.published(), 3);
}

/// A `--full` bundle fits any state: a fresh mirror, and one whose chain it supersedes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_bundle_imports_onto_any_state() {
    let mut on = online("mirror.airgap.example").await;
    on.sync().await;
    let first = on.export(&[]).await;
    add_second(&mut on.mirror);
    on.sync().await;
    let _second = on.export(&[]).await;
    let full = on.export(&["--full"]).await;
    assert!(
        full[0].to_string_lossy().contains("-full"),
        "named as full: {full:?}"
    );
    let fresh = offline(&on.db, &[&on.vkey]);
    let run = fresh.import(&full[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(fresh.published(), 4);
    let behind = offline(&on.db, &[&on.vkey]);
    assert_eq!(behind.import(&first[0]).await.code, Some(0));
    let run = behind.import(&full[0]).await;
    assert_eq!(
        run.code,
        Some(0),
        "a full bundle supersedes the chain: {run:#?}"
    );
    assert_eq!(behind.published(), 4);
    let audit = behind.mirror.run_bin(&["verify"]).await;
    assert_eq!(audit.code, Some(0), "{audit:#?}");
}

/// An `.info` of `rsc.io/quote@v1.5.2` as `edit` makes it from the one `on` published.
fn edited_info(on: &Online, edit: impl FnOnce(&mut serde_json::Value)) -> Vec<u8> {
    let info = on.mirror.file(QUOTE_INFO).expect("published .info");
    let mut json: serde_json::Value = serde_json::from_slice(&info).expect(".info is JSON");
    edit(&mut json);
    serde_json::to_vec(&json).expect("JSON")
}

const QUOTE_INFO: &str = "rsc.io/quote/@v/v1.5.2.info";

/// A second source whose upstream serves `info` for `rsc.io/quote@v1.5.2`, watching
/// [`SECOND`] too, verified against `db`; synced.
async fn second_source(source: &str, db: &Arc<SumdbServer>, info: Vec<u8>) -> Online {
    let upstream = corpus_upstream().await;
    upstream.set_raw(&format!("/{QUOTE_INFO}"), info);
    let mut on = online_on(source, upstream, db.clone()).await;
    add_second(&mut on.mirror);
    on.sync().await;
    on
}

/// A bundle whose version clashes with a published file is refused before anything is
/// placed — no lookup, no file of another version, no directory, no run, no pending row —
/// and the next genuine bundle of the chain imports. An `.info` that differs only in fields
/// other than `Version` and `Time` is no clash: the published one stays.
/// See: #11
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_11_a_refused_import_changes_nothing_and_the_chain_goes_on() {
    let mut a = online("a.airgap.example").await;
    a.sync().await;
    let a1 = a.export(&[]).await;

    // Source B's upstream serves the same version with another time.
    let moved = edited_info(&a, |j| j["Time"] = "2001-02-03T04:05:06Z".into());
    let b = second_source("b.airgap.example", &a.db, moved).await;
    let b_full = b.export(&["--full"]).await;
    // Source C's upstream adds an Origin, as real proxies do.
    let origin = edited_info(&a, |j| {
        j["Origin"] = serde_json::json!({"VCS": "git", "URL": "https://example.com/quote"});
    });
    let c = second_source("c.airgap.example", &a.db, origin).await;
    let c_full = c.export(&["--full"]).await;

    let off = offline(&a.db, &[&a.vkey, &b.vkey, &c.vkey]);
    let run = off.import(&a1[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let info_a = off.mirror.file(QUOTE_INFO).expect("imported .info");
    let before = off.everything();

    let run = off.import(&b_full[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains("refused"), "{run:#?}");
    assert!(run.stderr.contains(QUOTE_INFO), "names the file: {run:#?}");
    assert_eq!(off.everything(), before, "a refusal changes nothing");
    assert!(
        !off.mirror
            .tree()
            .join("rsc.io/quote/@v/v1.5.1.info")
            .exists(),
        "B's other version is not reachable"
    );

    // The chain goes on: A's next bundle imports.
    add_second(&mut a.mirror);
    a.sync().await;
    let a2 = a.export(&[]).await;
    let run = off.import(&a2[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(off.published(), 4);
    let verify = off.mirror.run_bin(&["verify"]).await;
    assert_eq!(verify.code, Some(0), "{verify:#?}");

    // C differs only in Origin: imported, and the published .info stays.
    let run = off.import(&c_full[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(off.mirror.file(QUOTE_INFO), Some(info_a));
    let verify = off.mirror.run_bin(&["verify"]).await;
    assert_eq!(verify.code, Some(0), "{verify:#?}");
}
