//! What the object-storage tree (see: #17) relies on, checked against the real S3 server
//! (`s3s-fs`, [`crate::s3::S3Server`]) through `object_store`, as gomirror writes, and
//! through the nginx block we ship (`nginx/gomirror-s3.conf`), as `go` reads:
//!
//! - `PutMode::Create` is `If-None-Match: *`: a second create of a key is `AlreadyExists`
//!   and leaves the first object (a published file never changes);
//! - Content-Type, Cache-Control and user metadata are stored with an object and returned;
//! - a multipart upload over 5 MiB completes, keeps its attributes and streams back;
//! - wrong credentials are refused with 403 (`PermissionDenied`), unsigned requests with 403
//!   AccessDenied, and a signed request to the anonymous instance with 501 NotImplemented
//!   (the two instances cannot stand in for each other);
//! - a missing bucket is named in the error of a LIST; a PUT into it creates it (an
//!   `s3s-fs` deviation from S3, which answers NoSuchBucket);
//! - a restarted server deletes the temp files of cut-off writes;
//! - through nginx: objects 200 with their Content-Type and Cache-Control, a missing key 404
//!   and never cached, writes 405, "+" sent to the bucket as %2B, a bucket's 403 turned into
//!   404, client credentials not passed on.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener};
use std::sync::mpsc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{
    Attribute, Attributes, ObjectStore, ObjectStoreExt, PutMode, PutMultipartOptions, PutOptions,
    PutPayload, WriteMultipart,
};
use sha2::{Digest, Sha256};

use crate::nginx::{find_nginx, Nginx};
use crate::s3::{builder_for, s3_server_block, S3Server};
use crate::sumdb_go::{describe, hermetic_go};
use crate::tools::{find_go_119, find_s3s_fs, need};
use crate::zipgen::module_zip;

const IMMUTABLE: &str = "public, max-age=31536000, immutable";

/// The error and its sources, as main.rs prints them (`{:#}`).
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn attributes(content_type: &'static str, cache_control: &'static str) -> Attributes {
    let mut a = Attributes::new();
    a.insert(Attribute::ContentType, content_type.into());
    a.insert(Attribute::CacheControl, cache_control.into());
    a
}

fn create(attributes: Attributes) -> PutOptions {
    PutOptions {
        mode: PutMode::Create,
        attributes,
        ..PutOptions::default()
    }
}

#[tokio::test]
async fn s3_create_twice_is_already_exists() {
    let Some(bin) = need("s3_create_twice", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let store = s3.store();
    let path = ObjectPath::from("tree/example.com/m/@v/v1.0.0.info");
    store
        .put_opts(
            &path,
            PutPayload::from_static(b"first"),
            create(Attributes::new()),
        )
        .await
        .expect("first create");
    let err = store
        .put_opts(
            &path,
            PutPayload::from_static(b"second"),
            create(Attributes::new()),
        )
        .await
        .expect_err("second create of the same key");
    assert!(
        matches!(err, object_store::Error::AlreadyExists { .. }),
        "want AlreadyExists, got: {}",
        chain(&err)
    );
    let file = s3.root().join(s3.bucket()).join(path.as_ref());
    assert_eq!(std::fs::read(file).expect("object file"), b"first");
}

#[tokio::test]
async fn s3_attributes_round_trip() {
    let Some(bin) = need("s3_attributes", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let store = s3.store();
    let path = ObjectPath::from("tree/example.com/m/@v/v1.0.0.mod");
    let mut attrs = attributes("text/plain; charset=utf-8", IMMUTABLE);
    attrs.insert(Attribute::Metadata("gomirror-h1".into()), "h1:abc=".into());
    store
        .put_opts(
            &path,
            PutPayload::from_static(b"module m\n"),
            create(attrs.clone()),
        )
        .await
        .expect("put with attributes");
    let got = store.get(&path).await.expect("get");
    assert_eq!(got.attributes, attrs);
    assert_eq!(got.bytes().await.expect("body").as_ref(), b"module m\n");
}

#[tokio::test]
async fn s3_multipart_over_5mib_streams() {
    let Some(bin) = need("s3_multipart", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let store = s3.store();
    let path = ObjectPath::from("tree/example.com/big/@v/v1.0.0.zip");
    let data: Vec<u8> = (0..7 * 1024 * 1024 + 123)
        .map(|i| (i % 251) as u8)
        .collect();
    let opts = PutMultipartOptions {
        attributes: attributes("application/zip", IMMUTABLE),
        ..PutMultipartOptions::default()
    };
    let upload = store
        .put_multipart_opts(&path, opts)
        .await
        .expect("start multipart");
    // S3's smallest part is 5 MiB (all but the last): two parts.
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 5 * 1024 * 1024);
    for chunk in data.chunks(64 * 1024) {
        writer.write(chunk);
    }
    let put = writer.finish().await.expect("complete multipart");
    assert!(
        put.e_tag.as_deref().is_some_and(|t| t.ends_with("-2\"")),
        "a two-part upload's ETag ends in -2: {:?}",
        put.e_tag
    );

    let got = store.get(&path).await.expect("get");
    assert_eq!(got.attributes, attributes("application/zip", IMMUTABLE));
    let mut stream = got.into_stream();
    let (mut chunks, mut len, mut hash) = (0, 0, Sha256::new());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.expect("body chunk");
        chunks += 1;
        len += chunk.len();
        hash.update(&chunk);
    }
    assert_eq!(len, data.len());
    assert_eq!(hash.finalize(), Sha256::digest(&data));
    assert!(chunks > 1, "the body came in one piece, not streamed");
    let leftovers: Vec<String> = std::fs::read_dir(s3.root())
        .expect("read root")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".upload") || n.starts_with(".tmp."))
        .collect();
    assert!(leftovers.is_empty(), "parts left behind: {leftovers:?}");
}

#[tokio::test]
async fn s3_wrong_credentials_are_access_denied() {
    let Some(bin) = need("s3_wrong_credentials", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let path = ObjectPath::from("tree/x.info");
    for (key, secret) in [
        (s3.access_key(), "not-the-secret"),
        ("not-the-key", s3.secret_key()),
    ] {
        let store = builder_for(&s3.endpoint(), s3.bucket())
            .with_access_key_id(key)
            .with_secret_access_key(secret)
            .build()
            .expect("build");
        let err = store
            .put(&path, PutPayload::from_static(b"{}"))
            .await
            .expect_err("a put with wrong credentials");
        // s3s-fs names the cause SignatureDoesNotMatch (a wrong secret) or NotSignedUp (an
        // unknown key; S3 says InvalidAccessKeyId); object_store maps any 403 to
        // PermissionDenied.
        let text = chain(&err);
        assert!(
            matches!(err, object_store::Error::PermissionDenied { .. }) && text.contains("403"),
            "{key}/{secret}: {text}"
        );
    }
    // Unsigned, to the authenticated instance: AccessDenied by name.
    let anonymous = builder_for(&s3.endpoint(), s3.bucket())
        .with_skip_signature(true)
        .build()
        .expect("build");
    let err = anonymous
        .put(&path, PutPayload::from_static(b"{}"))
        .await
        .expect_err("an unsigned put");
    let text = chain(&err);
    assert!(text.contains("AccessDenied"), "{text}");
    assert!(!s3.root().join(s3.bucket()).join("tree/x.info").exists());
}

#[tokio::test]
async fn s3_signed_requests_to_the_anonymous_instance_fail() {
    let Some(bin) = need("s3_signed_to_anonymous", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let store = builder_for(&s3.anonymous_endpoint(), s3.bucket())
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .build()
        .expect("build");
    let err = store
        .put(
            &ObjectPath::from("tree/x.info"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .expect_err("a signed put to the anonymous instance");
    let text = chain(&err);
    assert!(text.contains("NotImplemented"), "{text}");
}

#[tokio::test]
async fn s3_missing_bucket() {
    let Some(bin) = need("s3_missing_bucket", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let store = builder_for(&s3.endpoint(), "no-such-bucket")
        .with_access_key_id(s3.access_key())
        .with_secret_access_key(s3.secret_key())
        .build()
        .expect("build");
    let err = store
        .list(None)
        .next()
        .await
        .expect("a list result")
        .expect_err("listing a missing bucket");
    let text = chain(&err);
    assert!(
        text.contains("no-such-bucket") && text.contains("NoSuchBucket"),
        "{text}"
    );
    let err = store
        .head(&ObjectPath::from("tree/x.info"))
        .await
        .expect_err("head in a missing bucket");
    assert!(
        matches!(err, object_store::Error::NotFound { .. }),
        "{}",
        chain(&err)
    );
    // s3s-fs deviates from S3 here: a PUT creates the bucket's directory instead of
    // failing with NoSuchBucket. A check that the bucket exists must LIST, not PUT.
    store
        .put(
            &ObjectPath::from("tree/x.info"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .expect("s3s-fs puts into a missing bucket");
    assert!(s3.root().join("no-such-bucket/tree/x.info").is_file());
}

#[tokio::test]
async fn s3_restart_deletes_temp_files_of_cut_off_writes() {
    let Some(bin) = need("s3_restart", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let mut s3 = S3Server::start(&bin);
    // What a write cut off by a crash leaves: s3s-fs writes `.tmp.<n>.internal.part` at the
    // root and renames it over the object when the body is complete.
    let stale = s3.root().join(".tmp.7.internal.part");
    std::fs::write(&stale, b"half a zip").expect("write a stale temp file");
    s3.stop();
    s3.store()
        .put(
            &ObjectPath::from("tree/x.info"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .expect_err("the stopped instance refuses connections");
    assert!(
        stale.exists(),
        "nothing deleted it while the writer was down"
    );
    s3.restart();
    assert!(
        !stale.exists(),
        "the restarted server did not delete {}",
        stale.display()
    );
    s3.store()
        .put(
            &ObjectPath::from("tree/x.info"),
            PutPayload::from_static(b"{}"),
        )
        .await
        .expect("put after the restart");
}

#[tokio::test]
async fn s3_nginx_serves_the_bucket_to_go_clients() {
    let Some(bin) = need("s3_nginx", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let Some(nginx_bin) = need("s3_nginx", "nginx", find_nginx()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let store = s3.store();
    let put = |key: &'static str, body: &'static [u8], ct, cc| {
        let store = &store;
        async move {
            store
                .put_opts(
                    &ObjectPath::from(key),
                    PutPayload::from_static(body),
                    create(attributes(ct, cc)),
                )
                .await
                .unwrap_or_else(|e| panic!("put {key}: {}", chain(&e)));
        }
    };
    let info = br#"{"Version":"v1.0.0+incompatible"}"#;
    put(
        "tree/example.com/m/@v/v1.0.0+incompatible.info",
        info,
        "application/json",
        IMMUTABLE,
    )
    .await;
    put(
        "tree/example.com/m/@v/list",
        b"v1.0.0+incompatible\n",
        "text/plain; charset=utf-8",
        "public, max-age=60",
    )
    .await;
    put(
        "tree/sumdb/sum.golang.org/lookup/example.com/m@v1.0.0+incompatible",
        b"lookup\n",
        "text/plain; charset=utf-8",
        IMMUTABLE,
    )
    .await;
    // Outside the prefix: nginx never reaches it.
    put(
        "other/example.com/m/@v/list",
        b"other\n",
        "text/plain",
        "no-cache",
    )
    .await;

    let nginx = s3.start_nginx(&nginx_bin, "tree");
    let client = reqwest::Client::new();
    let base = nginx.url();
    let get = |path: &str| client.get(format!("{base}{path}")).send();

    let r = get("/example.com/m/@v/v1.0.0+incompatible.info")
        .await
        .expect("get");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    assert_eq!(status, 200, "{}", nginx.logs());
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(headers["cache-control"], IMMUTABLE);
    assert!(!headers.contains_key("x-amz-request-id"));
    assert_eq!(r.bytes().await.expect("body").as_ref(), info);

    let r = get("/example.com/m/@v/list").await.expect("get list");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");

    let r = get("/sumdb/sum.golang.org/lookup/example.com/m@v1.0.0+incompatible").await;
    assert_eq!(r.expect("get lookup").status().as_u16(), 200);

    // The query string never reaches the bucket: no listing, the object itself.
    let r = get("/example.com/m/@v/list?list-type=2&prefix=")
        .await
        .expect("get");
    assert_eq!(
        r.bytes().await.expect("body").as_ref(),
        b"v1.0.0+incompatible\n"
    );

    let r = client
        .head(format!("{base}/example.com/m/@v/list"))
        .send()
        .await
        .expect("head");
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-length"], "20");
    assert_eq!(r.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(r.headers()["cache-control"], "public, max-age=60");

    // A client's credentials are not sent on: the anonymous bucket would refuse them.
    let r = client
        .get(format!("{base}/example.com/m/@v/list"))
        .basic_auth("user", Some("password"))
        .send()
        .await
        .expect("get with credentials");
    assert_eq!(r.status().as_u16(), 200);

    for missing in [
        "/example.com/m/@v/v9.9.9.info",
        "/example.com/none/@latest",
        "/sumdb/sum.golang.org/lookup/example.com/m@v9.9.9",
        "/",
        "/example.com/m/@v/",
        "/example.com/m",
        "/other/example.com/m/@v/list/..",
        "/example.com/m/@v/.tmp.1.info",
    ] {
        let r = get(missing).await.expect("get missing");
        let (status, headers) = (r.status().as_u16(), r.headers().clone());
        let body = r.text().await.expect("body");
        assert_eq!(status, 404, "{missing}: {body}");
        if missing.contains('@') {
            assert_eq!(headers["cache-control"], "no-store", "{missing}");
        }
        assert!(
            !body.contains("NoSuchKey"),
            "{missing}: the bucket's error: {body}"
        );
    }

    let r = client
        .put(format!("{base}/example.com/m/@v/v2.0.0.info"))
        .body("{}")
        .send()
        .await
        .expect("put through nginx");
    assert_eq!(r.status().as_u16(), 405);
    assert!(!s3
        .root()
        .join(s3.bucket())
        .join("tree/example.com/m/@v/v2.0.0.info")
        .exists());
}

/// What nginx sends to the bucket, from a listener that records each request head and
/// answers with the bucket's 403 for a missing key (no ListBucket permission).
#[tokio::test]
async fn s3_nginx_encodes_plus_and_turns_403_into_404() {
    let Some(nginx_bin) = need("s3_nginx_requests", "nginx", find_nginx()) else {
        return;
    };
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).expect("bind");
    let upstream = listener.local_addr().expect("addr");
    let (heads, received) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap_or(0) == 1 {
                head.push(byte[0]);
            }
            let body = "<?xml version=\"1.0\"?><Error><Code>AccessDenied</Code></Error>";
            let _ = write!(
                stream,
                "HTTP/1.1 403 Forbidden\r\nContent-Type: application/xml\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            if heads
                .send(String::from_utf8_lossy(&head).into_owned())
                .is_err()
            {
                return;
            }
        }
    });
    let nginx = Nginx::start_config(&nginx_bin, |port| {
        s3_server_block(port, upstream, "bkt", "pre/fix")
    });
    let r = reqwest::Client::new()
        .get(format!(
            "{}/example.com/m/@v/v1.0.0+incompatible.zip",
            nginx.url()
        ))
        .basic_auth("user", Some("password"))
        .header("cookie", "session=1")
        .send()
        .await
        .expect("get");
    let (status, headers) = (r.status().as_u16(), r.headers().clone());
    let body = r.text().await.expect("body");
    assert_eq!(status, 404, "{body}\n{}", nginx.logs());
    assert_eq!(headers["cache-control"], "no-store");
    assert!(!body.contains("AccessDenied"), "{body}");

    let head = received.recv().expect("a request reached the bucket");
    let request_line = head.lines().next().unwrap_or("");
    assert_eq!(
        request_line,
        "GET /bkt/pre/fix/example.com/m/@v/v1.0.0%2Bincompatible.zip HTTP/1.1"
    );
    let fields: HashMap<String, String> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    assert_eq!(fields.get("host"), Some(&upstream.to_string()));
    assert!(!fields.contains_key("authorization"), "{head}");
    assert!(!fields.contains_key("cookie"), "{head}");
}

/// The real `go` reads a bucket through the shipped block: a version list, a
/// `+incompatible` version (whose "+" S3 would decode as a space) and a plain one, and a
/// missing version is "404 Not Found", which lets `go` fall through.
#[tokio::test]
async fn s3_go_downloads_through_nginx() {
    let Some(bin) = need("s3_go", "s3s-fs", find_s3s_fs()) else {
        return;
    };
    let Some(nginx_bin) = need("s3_go", "nginx", find_nginx()) else {
        return;
    };
    let Some(go) = need("s3_go", "go", find_go_119()) else {
        return;
    };
    let s3 = S3Server::start(&bin);
    let store = s3.store();
    let v1_zip = module_zip(
        "example.com/m@v1.0.0/",
        &[
            ("go.mod", b"module example.com/m\n"),
            ("m.go", b"package m\n"),
        ],
    );
    // +incompatible: a v2 without go.mod (Go: cmd/go/internal/modfetch/coderepo.go).
    let v2_zip = module_zip(
        "example.com/m@v2.0.0+incompatible/",
        &[("m.go", b"package m\n")],
    );
    let files: Vec<(&str, Vec<u8>, &'static str)> = vec![
        (
            "@v/v1.0.0.info",
            br#"{"Version":"v1.0.0","Time":"2020-01-01T00:00:00Z"}"#.to_vec(),
            "application/json",
        ),
        (
            "@v/v1.0.0.mod",
            b"module example.com/m\n".to_vec(),
            "text/plain; charset=utf-8",
        ),
        ("@v/v1.0.0.zip", v1_zip, "application/zip"),
        (
            "@v/v2.0.0+incompatible.info",
            br#"{"Version":"v2.0.0+incompatible","Time":"2020-02-01T00:00:00Z"}"#.to_vec(),
            "application/json",
        ),
        (
            "@v/v2.0.0+incompatible.mod",
            b"module example.com/m\n".to_vec(),
            "text/plain; charset=utf-8",
        ),
        ("@v/v2.0.0+incompatible.zip", v2_zip, "application/zip"),
        (
            "@v/list",
            b"v1.0.0\nv2.0.0+incompatible\n".to_vec(),
            "text/plain; charset=utf-8",
        ),
    ];
    for (name, body, content_type) in files {
        let key = ObjectPath::from(format!("tree/example.com/m/{name}"));
        store
            .put_opts(
                &key,
                PutPayload::from(body),
                create(attributes(content_type, IMMUTABLE)),
            )
            .await
            .unwrap_or_else(|e| panic!("put {key}: {}", chain(&e)));
    }
    let nginx = s3.start_nginx(&nginx_bin, "tree");
    let home = tempfile::tempdir().expect("temp dir");
    let go_cmd = |args: &[&str]| {
        let mut cmd = hermetic_go(&go, home.path(), &nginx.url(), "off", "");
        cmd.args(args).current_dir(home.path());
        cmd
    };
    let out = go_cmd(&[
        "mod",
        "download",
        "-json",
        "example.com/m@v1.0.0",
        "example.com/m@v2.0.0+incompatible",
    ])
    .output()
    .await
    .expect("run go");
    assert!(out.status.success(), "{}\n{}", describe(&out), nginx.logs());

    let out = go_cmd(&["list", "-m", "-versions", "example.com/m"])
        .output()
        .await
        .expect("run go");
    assert!(out.status.success(), "{}", describe(&out));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "example.com/m v1.0.0 v2.0.0+incompatible"
    );

    let out = go_cmd(&["mod", "download", "example.com/m@v3.0.0+incompatible"])
        .output()
        .await
        .expect("run go");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("404 Not Found"),
        "{}",
        describe(&out)
    );
}
