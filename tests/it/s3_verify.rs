//! `gomirror verify` on a tree in object storage (see: #17), against a real S3 server
//! (`s3.rs`): a synced bucket verifies clean from its objects' bytes; an object replaced
//! behind the sha256 metadata it carries, a deleted `.mod`, an edited `@v/list`, a stray
//! object and an altered lookup are each named by their `s3://` URL with exit 1; `--repair`
//! copies the altered objects to the staging directory and deletes them, and the next sync
//! restores the bucket to what it published.

use object_store::path::Path as Key;
use object_store::{
    Attribute, AttributeValue, Attributes, GetOptions, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload,
};

use crate::harness::{upstream_with_sumdb, BinRun, Mirror};
use crate::s3::S3Server;
use crate::s3_tree::{in_bucket, objects, sync, PREFIX};
use crate::tools::{find_s3s_fs, need};
use crate::upstream::Upstream;
use crate::zipgen::synthetic_module;

/// The checksum database the upstream serves (`harness::upstream_with_sumdb`).
const DB: &str = "sum.test.example";

/// A mirror of `example.com/a` (v1.0.0, v1.1.0) and `example.com/b` (v1.0.0), checksum
/// database on, synced into `server`'s bucket.
async fn synced(server: &S3Server) -> (Mirror, Upstream) {
    let files = vec![
        synthetic_module("example.com/a", "v1.0.0", 3, 2048),
        synthetic_module("example.com/a", "v1.1.0", 3, 2048),
        synthetic_module("example.com/b", "v1.0.0", 2, 1024),
    ];
    synced_with(
        server,
        files,
        &[("example.com/a", "all"), ("example.com/b", "all")],
    )
    .await
}

/// `files` (watched by `watch`), checksum database on, synced into `server`'s bucket.
async fn synced_with(
    server: &S3Server,
    files: Vec<crate::upstream::ModuleFiles>,
    watch: &[(&str, &str)],
) -> (Mirror, Upstream) {
    let (upstream, db) = upstream_with_sumdb(files).await;
    let mut m = Mirror::new(&upstream.url(), watch);
    in_bucket(&mut m, server, &server.endpoint());
    m.sumdb = format!("key = \"{}\"\n", db.vkey());
    let run = sync(&m, server).await;
    assert_eq!(
        run.code,
        Some(0),
        "sync:\n{}\n{}",
        run.stderr,
        server.logs()
    );
    (m, upstream)
}

/// `s3://<bucket>/<PREFIX>/<rel>`: how verify names an object.
fn url(server: &S3Server, rel: &str) -> String {
    format!("s3://{}/{PREFIX}/{rel}", server.bucket())
}

fn key(rel: &str) -> Key {
    Key::from(format!("{PREFIX}/{rel}").as_str())
}

/// Overwrites the object `rel` with `body`, carrying `sha256` as its metadata when given
/// (what another writer, or a hand with the bucket's credentials, could do).
async fn overwrite(server: &S3Server, rel: &str, body: &[u8], sha256: Option<String>) {
    let mut attributes = Attributes::new();
    if let Some(sha) = sha256 {
        attributes.insert(
            Attribute::Metadata("sha256".into()),
            AttributeValue::from(sha),
        );
    }
    let options = PutOptions {
        mode: PutMode::Overwrite,
        attributes,
        ..PutOptions::default()
    };
    server
        .store()
        .put_opts(&key(rel), PutPayload::from(body.to_vec()), options)
        .await
        .expect("overwrite");
}

/// The `sha256` metadata of the object `rel`.
async fn metadata_sha256(server: &S3Server, rel: &str) -> String {
    let head = GetOptions {
        head: true,
        ..GetOptions::default()
    };
    let got = server
        .store()
        .get_opts(&key(rel), head)
        .await
        .expect("head");
    got.attributes
        .get(&Attribute::Metadata("sha256".into()))
        .map(|v| v.as_ref().to_owned())
        .unwrap_or_else(|| panic!("{rel} carries no sha256 metadata"))
}

async fn verify(m: &Mirror, args: &[&str]) -> BinRun {
    let mut all = vec!["verify"];
    all.extend_from_slice(args);
    m.run_bin(&all).await
}

/// Every file left under `dir`, relative to it.
fn files_under(dir: &std::path::Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for entry in std::fs::read_dir(&d).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else {
                let rel = path.strip_prefix(dir).expect("below").to_string_lossy();
                found.push(rel.into_owned());
            }
        }
    }
    found.sort();
    found
}

/// A synced bucket verifies clean from its objects: every version re-hashed, every lookup
/// proved from the bucket's own tiles, the lease released, and no copy of a zip left in the
/// staging directory (not even one a killed verify left).
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_synced_bucket_verifies_clean_from_its_objects() {
    let test = "s3_verify::issue_17_a_synced_bucket_verifies_clean_from_its_objects";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let server = S3Server::start(&s3s);
    let (m, _upstream) = synced(&server).await;
    // A copy a killed verify left behind.
    let staging = m.dir.path().join("staging");
    let scratch = staging.join(".gomirror-verify");
    std::fs::create_dir_all(&scratch).expect("mkdir");
    std::fs::write(scratch.join(".tmp-left"), b"half a zip").expect("leftover");

    let out = verify(&m, &[]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert_eq!(out.stdout, "", "no findings");
    let last = out.stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with(
            "gomirror: verify ok: 3 versions re-hashed, 3 lookups proved against tree "
        ) && last.ends_with(", 0 problems"),
        "{}",
        out.stderr
    );
    let json = verify(&m, &["--json"]).await;
    assert_eq!(json.code, Some(0), "{}", json.stderr);
    let report: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(report["versions"], 3, "{report}");
    assert_eq!(report["lookups"], 3, "{report}");
    assert_eq!(report["supported"], true, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");

    let lease = Key::from(format!("{PREFIX}.gomirror-lease").as_str());
    assert!(server.store().head(&lease).await.is_err(), "released");
    assert_eq!(
        files_under(&staging),
        [".gomirror.lock"],
        "nothing left staged"
    );
}

/// Each altered object is named by its URL, with exit 1: a zip replaced by other bytes under
/// the sha256 metadata it carried (only reading the bytes catches it), a deleted `.mod`, an
/// edited `@v/list`, an `@latest` whose metadata lies about its (right) bytes, and a stray
/// object. `--repair` copies the two altered objects to the staging directory and deletes
/// them; once the stray is removed, the next sync restores every object as published and
/// verify is clean.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_verify_names_altered_objects_and_repair_lets_sync_restore_them() {
    let test = "s3_verify::issue_17_verify_names_altered_objects_and_repair_lets_sync_restore_them";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let server = S3Server::start(&s3s);
    let (m, _upstream) = synced(&server).await;
    let published = objects(&server).await;

    let zip = "example.com/a/@v/v1.0.0.zip";
    let claimed = metadata_sha256(&server, zip).await;
    let other = b"PK\x05\x06 other bytes under the same sha256 metadata".to_vec();
    overwrite(&server, zip, &other, Some(claimed.clone())).await;
    let gomod = "example.com/a/@v/v1.1.0.mod";
    server.store().delete(&key(gomod)).await.expect("delete");
    let list = "example.com/b/@v/list";
    overwrite(&server, list, b"v0.0.1\n", None).await;
    let latest = "example.com/a/@latest";
    let latest_bytes = published
        .iter()
        .find(|(rel, _)| rel == latest)
        .map(|(_, b)| b.clone())
        .expect("@latest published");
    overwrite(&server, latest, &latest_bytes, Some("00".repeat(32))).await;
    let stray = "example.com/a/@v/v0.9.0.zip";
    overwrite(&server, stray, b"stray", None).await;

    let out = verify(&m, &[]).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let want_prefixes = [
        format!(
            "example.com/a: {}: its sha256 metadata says {}, its bytes hash to ",
            url(&server, latest),
            "00".repeat(32)
        ),
        format!(
            "example.com/a: {}: stray object: not published according to the state database",
            url(&server, stray)
        ),
        format!(
            "example.com/a@v1.0.0: {}: sha256 is {}, recorded {claimed}: changed since it was \
             published; its sha256 metadata says {claimed}, its bytes hash to ",
            url(&server, zip),
            sha256_hex(&other)
        ),
        format!(
            "example.com/a@v1.1.0: {}: missing (the next sync restores it from upstream)",
            url(&server, gomod)
        ),
        format!(
            "example.com/b: {}: lists [v0.0.1], the state has published [v1.0.0] (the next sync \
             rewrites it)",
            url(&server, list)
        ),
    ];
    assert_eq!(lines.len(), want_prefixes.len(), "{}", out.stdout);
    for want in &want_prefixes {
        assert!(
            lines.iter().any(|l| l.starts_with(want.as_str())),
            "no line starts with {want:?}:\n{}",
            out.stdout
        );
    }
    assert!(
        out.stderr.contains(
            "gomirror: verify FAILED: 3 versions re-hashed, 3 lookups proved against tree "
        ) && out.stderr.contains(", 5 problems"),
        "{}",
        out.stderr
    );

    let repair = verify(&m, &["--repair"]).await;
    assert_eq!(repair.code, Some(1), "{}\n{}", repair.stdout, repair.stderr);
    let staging = m.dir.path().join("staging");
    let line = repair
        .stderr
        .lines()
        .find(|l| l.starts_with("gomirror: verify: copied 2 altered objects to "))
        .unwrap_or_else(|| panic!("{}", repair.stderr));
    let bucket_url = format!("s3://{}/{PREFIX}", server.bucket());
    assert!(
        line.ends_with(&format!(
            " and deleted them from {bucket_url}; the next sync restores them from upstream"
        )),
        "{line}"
    );
    let moved = files_under(&staging.join(".gomirror-moved"));
    assert_eq!(moved.len(), 2, "{moved:?}");
    let stamp = moved[0].split('/').next().expect("a stamp directory");
    assert_eq!(
        moved,
        [format!("{stamp}/{latest}"), format!("{stamp}/{zip}")]
    );
    let kept = std::fs::read(staging.join(".gomirror-moved").join(stamp).join(zip)).expect("kept");
    assert_eq!(kept, other, "the altered bytes are kept for inspection");
    for rel in [zip, latest] {
        assert!(
            server.store().head(&key(rel)).await.is_err(),
            "{rel} deleted"
        );
    }
    assert!(
        server.store().head(&key(stray)).await.is_ok(),
        "a stray object is never taken out"
    );

    // The operator removes the stray; the next sync restores the rest.
    server.store().delete(&key(stray)).await.expect("delete");
    let run = sync(&m, &server).await;
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert!(
        run.stderr
            .contains("2 versions' missing files restored from upstream")
            && run
                .stderr
                .contains("2 modules' @v/list and @latest rewritten from the state"),
        "{}",
        run.stderr
    );
    assert_eq!(objects(&server).await, published, "the bucket as published");
    let clean = verify(&m, &[]).await;
    assert_eq!(clean.code, Some(0), "{}\n{}", clean.stdout, clean.stderr);
    assert!(
        clean.stderr.contains("verify ok: 3 versions re-hashed"),
        "{}",
        clean.stderr
    );
}

/// A lookup of the offline checksum database altered in the bucket is named by its URL
/// (the go.sum lines no longer those recorded), with exit 1; `--repair` leaves it alone, as
/// on a local tree, and once the published lookup is put back verify is clean.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_verify_names_an_altered_lookup_in_a_bucket() {
    let test = "s3_verify::issue_17_verify_names_an_altered_lookup_in_a_bucket";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let server = S3Server::start(&s3s);
    let (m, _upstream) = synced(&server).await;
    let lookup = format!("sumdb/{DB}/lookup/example.com/b@v1.0.0");
    let published = objects(&server).await;
    let body = published
        .iter()
        .find(|(rel, _)| *rel == lookup)
        .map(|(_, b)| b.clone())
        .expect("the lookup was published");
    let text = String::from_utf8(body.clone()).expect("a lookup is text");
    let line = text
        .lines()
        .find(|l| l.starts_with("example.com/b v1.0.0 h1:"))
        .expect("the zip's go.sum line");
    let forged = text.replace(
        line,
        "example.com/b v1.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
    );
    overwrite(&server, &lookup, forged.as_bytes(), None).await;

    let out = verify(&m, &["--repair"]).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let want = format!(
        "example.com/b@v1.0.0: lookup: {}: record says \
         h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= and ",
        url(&server, &lookup)
    );
    assert!(
        out.stdout.lines().count() == 1 && out.stdout.starts_with(&want),
        "want {want:?}:\n{}",
        out.stdout
    );
    assert!(!out.stderr.contains("copied"), "{}", out.stderr);
    assert!(
        server.store().head(&key(&lookup)).await.is_ok(),
        "left alone"
    );

    overwrite(&server, &lookup, &body, None).await;
    let clean = verify(&m, &[]).await;
    assert_eq!(clean.code, Some(0), "{}\n{}", clean.stdout, clean.stderr);
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Verify reads a bucket only under the writer's lease: while another host holds it (a sync
/// publishing there), verify is refused with exit 2, naming the holder, and reads nothing;
/// once that lease is gone it runs and releases its own.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_verify_reads_a_bucket_only_under_the_writers_lease() {
    let test = "s3_verify::issue_17_verify_reads_a_bucket_only_under_the_writers_lease";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let server = S3Server::start(&s3s);
    let (m, _upstream) = synced(&server).await;
    let lease = Key::from(format!("{PREFIX}.gomirror-lease").as_str());
    let held = serde_json::json!({
        "host": "writer.elsewhere.example",
        "lock": "/srv/gomirror/staging/.gomirror.lock",
        "pid": 4242,
        "since": "2026-01-01T00:00:00Z",
        "until": "2999-01-01T00:00:00Z",
    });
    let store = server.store();
    store
        .put(&lease, serde_json::to_vec(&held).expect("json").into())
        .await
        .expect("put lease");

    let refused = verify(&m, &[]).await;
    assert_eq!(refused.code, Some(2), "{}", refused.stderr);
    assert!(
        refused.stderr.contains(&format!(
            "s3://{}/{PREFIX} is being written by writer.elsewhere.example (pid 4242, lock \
             /srv/gomirror/staging/.gomirror.lock)",
            server.bucket()
        )),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.stdout, "", "nothing was read");

    store.delete(&lease).await.expect("the writer is done");
    let out = verify(&m, &[]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        store.head(&lease).await.is_err(),
        "verify released its lease"
    );
}

/// A zip large enough to be uploaded in parts (past `SINGLE_PUT_MAX`, 8 MiB) verifies clean,
/// streamed through the staging directory; one byte changed in its middle, under the sha256
/// metadata it carried, is found from the bytes.
// See: #17
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_17_a_zip_uploaded_in_parts_is_checked_from_its_bytes() {
    let test = "s3_verify::issue_17_a_zip_uploaded_in_parts_is_checked_from_its_bytes";
    let Some(s3s) = need(test, "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let server = S3Server::start(&s3s);
    let big = synthetic_module("example.com/big", "v1.0.0", 4, 10 << 20);
    let (m, _upstream) = synced_with(&server, vec![big], &[("example.com/big", "all")]).await;
    let out = verify(&m, &[]).await;
    assert_eq!(out.code, Some(0), "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("verify ok: 1 versions re-hashed, 1 lookups proved"),
        "{}",
        out.stderr
    );

    let zip = "example.com/big/@v/v1.0.0.zip";
    let claimed = metadata_sha256(&server, zip).await;
    let mut bytes = objects(&server)
        .await
        .into_iter()
        .find(|(rel, _)| rel == zip)
        .map(|(_, b)| b)
        .expect("the zip");
    assert!(bytes.len() > 10 << 20, "{} bytes", bytes.len());
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    overwrite(&server, zip, &bytes, Some(claimed.clone())).await;
    let out = verify(&m, &[]).await;
    assert_eq!(out.code, Some(1), "{}\n{}", out.stdout, out.stderr);
    let want = format!(
        "example.com/big@v1.0.0: {}: sha256 is {}, recorded {claimed}: changed since it was published; \
         its sha256 metadata says {claimed}, its bytes hash to {}\n",
        url(&server, zip),
        sha256_hex(&bytes),
        sha256_hex(&bytes)
    );
    assert_eq!(out.stdout, want);
    let staging = m.dir.path().join("staging");
    assert_eq!(
        files_under(&staging),
        [".gomirror.lock"],
        "the copy was deleted"
    );
}
