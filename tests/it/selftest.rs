//! Tests of the test support itself: corpus loading, the fake upstream, its faults, zipgen.

use std::io::{Cursor, Read};
use std::time::Duration;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::corpus::{
    escape_path, expected_go_sums, is_pseudo_version, is_valid_module, load_go_corpus, parse_txtar,
    semver_compare, unescape_path, Archive, CorpusVersion,
};
use crate::upstream::{Fault, ModuleFiles, Upstream};
use crate::zipgen::{self, declared_entries as declared};

/// (name, content) of every entry, in order.
fn zip_entries(zip: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(Cursor::new(zip)).expect("open zip");
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).expect("zip entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("read zip entry");
            (f.name().to_string(), data)
        })
        .collect()
}

/// dirhash.Hash1 over (name, content) pairs (Go: x/mod/sumdb/dirhash/hash.go Hash1).
fn hash1(files: &[(String, Vec<u8>)]) -> String {
    let mut lines: Vec<String> = files
        .iter()
        .map(|(name, data)| format!("{}  {name}\n", hex::encode(Sha256::digest(data))))
        .collect();
    lines.sort_by(|a, b| a[66..].cmp(&b[66..]));
    let summary = Sha256::digest(lines.concat().as_bytes());
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(summary)
    )
}

fn corpus_version(path: &str, version: &str) -> CorpusVersion {
    load_go_corpus()
        .into_iter()
        .find(|c| c.path == path && c.version == version)
        .unwrap_or_else(|| panic!("{path}@{version} not in the corpus"))
}

/// (input, comment, files)
type TxtarCase = (
    &'static [u8],
    &'static [u8],
    &'static [(&'static str, &'static [u8])],
);

#[test]
fn txtar_parses_like_go() {
    // Go: internal/txtar/archive_test.go TestParse, plus the marker edge cases.
    let a = parse_txtar(b"comment1\ncomment2\n-- file1 --\nFile 1 text.\n-- foo ---\nMore.\n-- file 2 --\nFile 2 text.\n-- empty --\n-- noNL --\nhello");
    let want = Archive {
        comment: b"comment1\ncomment2\n".to_vec(),
        files: vec![
            (
                "file1".into(),
                b"File 1 text.\n-- foo ---\nMore.\n".to_vec(),
            ),
            ("file 2".into(), b"File 2 text.\n".to_vec()),
            ("empty".into(), vec![]),
            ("noNL".into(), b"hello\n".to_vec()),
        ],
    };
    assert_eq!(a, want);
    let cases: &[TxtarCase] = &[
        (b"", b"", &[]),
        (b"no marker", b"no marker\n", &[]),
        (b"-- a --", b"", &[("a", b"")]),
        (b"--  --\nx\n-- b --\ny", b"--  --\nx\n", &[("b", b"y\n")]),
        (b"-- a --\r\nx", b"-- a --\r\nx\n", &[]),
        (b"-- /abs/name --\nz\n", b"", &[("/abs/name", b"z\n")]),
    ];
    for (input, comment, files) in cases {
        let a = parse_txtar(input);
        let files: Vec<(String, Vec<u8>)> = files
            .iter()
            .map(|(n, d)| (n.to_string(), d.to_vec()))
            .collect();
        assert_eq!(
            a,
            Archive {
                comment: comment.to_vec(),
                files
            },
            "{input:?}"
        );
    }
}

#[test]
fn helpers_follow_go_rules() {
    assert_eq!(escape_path("github.com/Azure/x"), "github.com/!azure/x");
    assert_eq!(
        unescape_path("github.com/!azure/x").as_deref(),
        Some("github.com/Azure/x")
    );
    for bad in ["Upper", "a!", "a!!b", "a!1"] {
        assert_eq!(unescape_path(bad), None, "{bad}");
    }
    // Go: x/mod/module/pseudo_test.go TestIsPseudoVersion, plus non-pseudo corpus versions.
    let pseudo = [
        "v0.0.0-20190430073000-30950c05d534",
        "v0.1.1-0.20190429073117-b5426c86b553",
        "v0.5.0-alpha.0.20190619023908-3da23a9deb9e",
        "v2.0.0-20060102150405-abcdef123456+incompatible",
    ];
    assert!(pseudo.iter().all(|v| is_pseudo_version(v)));
    let tagged = [
        "v1.0.0-bad",
        "v0.0.0-empty",
        "v1.2.0-20190430073000-30950c05d534",
        "v1.5.2",
    ];
    assert!(tagged.iter().all(|v| !is_pseudo_version(v)), "{tagged:?}");
    let ordered = [
        "bad",
        "v0.1.0-alpha",
        "v0.1.0-alpha.1",
        "v0.1.0-beta",
        "v0.1.0",
        "v1.10.0",
    ];
    for w in ordered.windows(2) {
        assert!(semver_compare(w[0], w[1]).is_lt(), "{} < {}", w[0], w[1]);
    }
    assert!(is_valid_module("rsc.io/breaker", "v2.0.0+incompatible"));
    assert!(is_valid_module("gopkg.in/dummy.v2-unstable", "v2.0.0"));
    assert!(!is_valid_module("rsc.io/breaker", "v2.0.0"));
    assert!(!is_valid_module("example.com/invalidpath/v1", "v1.0.0"));
}

#[test]
fn corpus_has_rsc_quote_with_go_hashes() {
    let c = corpus_version("rsc.io/quote", "v1.5.2");
    let entries = zip_entries(&c.zip);
    assert!(entries
        .iter()
        .any(|(n, _)| n == "rsc.io/quote@v1.5.2/quote.go"));
    assert!(c.listed);
    // The testdata copy differs from the real module; scripts record its hashes.
    let sums = expected_go_sums();
    let want = |go_mod: bool| {
        sums.iter()
            .find(|s| s.path == c.path && s.version == c.version && s.is_go_mod == go_mod)
            .map(|s| s.h1.clone())
    };
    assert_eq!(
        want(false).as_deref(),
        Some("h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0=")
    );
    assert_eq!(Some(hash1(&entries)), want(false));
    let go_mod = vec![(
        "go.mod".to_string(),
        c.mod_file.expect("rsc.io/quote has .mod"),
    )];
    assert_eq!(Some(hash1(&go_mod)), want(true));
}

#[test]
fn corpus_follows_proxy_test_go() {
    let corpus = load_go_corpus();
    assert!(corpus.len() > 150, "{} versions", corpus.len());
    let find = |p: &str, v: &str| corpus.iter().find(|c| c.path == p && c.version == v);
    assert!(find("example.com/invalidpath/v1", "v1.0.0").is_none());
    assert!(find("rsc.io/QUOTE", "v1.5.3-PRE").is_some());
    let missing = find("example.com/retract/missingmod", "v1.9.0").expect("missingmod");
    assert!(missing.mod_file.is_none() && missing.info.is_some());
    let pseudo = find(
        "example.com/pseudoupgrade",
        "v0.0.0-20190430073000-30950c05d534",
    );
    assert!(!pseudo.expect("pseudo version").listed);
    let badzip = find("rsc.io/badzip", "v1.0.0").expect("badzip");
    let names: Vec<String> = zip_entries(&badzip.zip).into_iter().map(|e| e.0).collect();
    assert_eq!(
        names,
        ["rsc.io/badzip@v1.0.0/x.go", "rsc.io/badzip@v1.0.0.txt"]
    );
}

/// Hashes the scripts get wrong on purpose: (script, h1).
const DELIBERATELY_WRONG: &[(&str, &str)] = &[
    (
        "mod_verify.txt",
        "h1:a3YaZoizPtXyv6ZsJ74oo2L4/bwOSTKMY7MAyo4O/1c=",
    ),
    (
        "mod_verify.txt",
        "h1:bwawxfHBFNV+L2hUp1rHADufV3IMtnDRdf1r5NINEl1=",
    ),
    (
        "work_sum_mismatch.txt",
        "h1:U1hPZKmBbMNahiBKFy5HrXp6adAjACjK9JXDnKaTXpA=",
    ),
];

#[test]
fn every_corpus_hash_in_scripts_is_reproduced() {
    let corpus = load_go_corpus();
    let mut checked = 0;
    for s in expected_go_sums() {
        let Some(c) = corpus
            .iter()
            .find(|c| c.path == s.path && c.version == s.version)
        else {
            continue;
        };
        let got = match (s.is_go_mod, &c.mod_file) {
            (true, Some(m)) => hash1(&[("go.mod".to_string(), m.clone())]),
            (true, None) => continue,
            (false, _) => hash1(&zip_entries(&c.zip)),
        };
        let wrong_on_purpose = DELIBERATELY_WRONG.contains(&(s.source_file.as_str(), &s.h1));
        assert_eq!(got != s.h1, wrong_on_purpose, "{s:?}: we compute {got}");
        checked += 1;
    }
    assert!(checked >= 100, "only {checked} lines checked");
}

async fn get(url: &str) -> reqwest::Response {
    reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

fn quote_versions() -> Vec<ModuleFiles> {
    load_go_corpus()
        .into_iter()
        .filter(|c| c.path == "rsc.io/quote")
        .map(Into::into)
        .collect()
}

#[tokio::test]
async fn upstream_serves_the_goproxy_protocol() {
    let up = Upstream::start(quote_versions()).await;
    let base = format!("{}/rsc.io/quote", up.url());
    let list = get(&format!("{base}/@v/list"))
        .await
        .text()
        .await
        .expect("list body");
    assert!(list.lines().any(|l| l == "v1.5.2"), "{list}");
    assert!(list.lines().all(|l| !is_pseudo_version(l)), "{list}");
    let c = corpus_version("rsc.io/quote", "v1.5.2");
    let zip = get(&format!("{base}/@v/v1.5.2.zip")).await;
    assert_eq!(zip.content_length(), Some(c.zip.len() as u64));
    assert_eq!(zip.bytes().await.expect("zip body"), c.zip);
    let info = get(&format!("{base}/@v/v1.5.2.info"))
        .await
        .bytes()
        .await
        .expect("info");
    assert_eq!(Some(info.to_vec()), c.info);
    let m = get(&format!("{base}/@v/v1.5.2.mod"))
        .await
        .bytes()
        .await
        .expect("mod");
    assert_eq!(Some(m.to_vec()), c.mod_file);
    let latest = get(&format!("{base}/@latest"))
        .await
        .text()
        .await
        .expect("latest");
    assert!(latest.contains("v1.5.2"), "{latest}");
    for missing in [
        "/rsc.io/quote/@v/v9.9.9.zip",
        "/nope.example/m/@v/list",
        "/",
    ] {
        let r = get(&format!("{}{missing}", up.url())).await;
        assert_eq!(r.status(), 404, "{missing}");
    }
    assert_eq!(up.requests("/@v/v1.5.2."), 3);
}

#[tokio::test]
async fn upstream_add_raw_and_remove() {
    let up = Upstream::start(vec![]).await;
    up.add(zipgen::synthetic_module(
        "example.com/Big",
        "v1.0.0",
        4,
        10_000,
    ));
    let url = format!("{}/example.com/!big/@v/v1.0.0.zip", up.url());
    assert_eq!(get(&url).await.status(), 200);
    up.remove("/example.com/!big/@v/v1.0.0.zip");
    assert_eq!(get(&url).await.status(), 404);
    up.set_raw("/example.com/!big/@v/list", "v1.0.0\nnot a version\n");
    let list = get(&format!("{}/example.com/!big/@v/list", up.url())).await;
    assert_eq!(list.text().await.expect("list"), "v1.0.0\nnot a version\n");
    assert_eq!(up.total_requests(), 3);
}

#[tokio::test]
async fn status_fault_then_success() {
    let up = Upstream::start(quote_versions()).await;
    up.faults().push("/@v/list", Fault::Status(503), 1);
    let url = format!("{}/rsc.io/quote/@v/list", up.url());
    assert_eq!(get(&url).await.status(), 503);
    assert_eq!(get(&url).await.status(), 200);
    assert_eq!(up.requests("/@v/list"), 2);
}

#[tokio::test]
async fn too_many_has_retry_after() {
    let up = Upstream::start(quote_versions()).await;
    up.faults().push(
        ".info",
        Fault::TooMany {
            retry_after_secs: 7,
        },
        2,
    );
    let url = format!("{}/rsc.io/quote/@v/v1.5.2.info", up.url());
    for _ in 0..2 {
        let r = get(&url).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    assert_eq!(get(&url).await.status(), 200);
}

#[tokio::test]
async fn reset_fails_the_request() {
    let up = Upstream::start(quote_versions()).await;
    up.faults().push(".zip", Fault::Reset, 1);
    let url = format!("{}/rsc.io/quote/@v/v1.5.2.zip", up.url());
    let err = reqwest::get(&url)
        .await
        .expect_err("reset must fail the request");
    assert!(!err.is_status(), "{err:?}");
    assert_eq!(get(&url).await.status(), 200);
}

#[tokio::test]
async fn truncate_fails_the_body_read() {
    let big = zipgen::synthetic_module("example.com/t", "v1.0.0", 3, 1 << 20);
    let full_len = big.zip.len() as u64;
    let up = Upstream::start(vec![big]).await;
    up.faults().push(".zip", Fault::Truncate, 1);
    let url = format!("{}/example.com/t/@v/v1.0.0.zip", up.url());
    let r = get(&url).await;
    assert_eq!(
        (r.status().as_u16(), r.content_length()),
        (200, Some(full_len))
    );
    r.bytes().await.expect_err("truncated body must fail");
    assert_eq!(
        get(&url).await.bytes().await.expect("second try").len() as u64,
        full_len
    );
}

#[tokio::test(start_paused = true)]
async fn latency_is_per_request_not_serialised() {
    let up = Upstream::start(quote_versions()).await;
    up.faults().set_latency(Duration::from_secs(1));
    let url = format!("{}/rsc.io/quote/@v/list", up.url());
    let start = tokio::time::Instant::now();
    let requests = (0..64).map(|_| get(&url));
    let responses = futures::future::join_all(requests).await;
    assert!(responses.iter().all(|r| r.status() == 200));
    let elapsed = start.elapsed();
    // Paused clock: 64 serialised sleeps would take 64 s of virtual time.
    assert!(
        elapsed >= Duration::from_secs(1) && elapsed < Duration::from_secs(5),
        "{elapsed:?}"
    );
}

#[test]
fn synthetic_module_is_valid_and_sized() {
    let m = zipgen::synthetic_module("example.com/s", "v1.2.3", 10, 1 << 20);
    let entries = zip_entries(&m.zip);
    assert_eq!(entries.len(), 10);
    assert_eq!(
        entries[0],
        (
            "example.com/s@v1.2.3/go.mod".into(),
            m.mod_file.expect("mod").to_vec()
        )
    );
    assert!(
        m.zip.len() > 1 << 20 && m.zip.len() < (1 << 20) + 4096,
        "{}",
        m.zip.len()
    );
    let info: serde_json::Value = serde_json::from_slice(&m.info.expect("info")).expect("json");
    assert_eq!(info["Version"], "v1.2.3");
}

#[test]
fn hostile_zips_carry_their_defect() {
    let p = "example.com/m@v1.0.0/";
    let names = |zip: Vec<u8>| declared(&zip).into_iter().map(|e| e.0).collect::<Vec<_>>();
    assert!(names(zipgen::zip_slip(p)).contains(&format!("{p}../evil")));
    assert!(names(zipgen::absolute_name(p)).contains(&"/etc/x".to_string()));
    assert!(names(zipgen::outside_prefix(p))
        .iter()
        .any(|n| !n.starts_with(p)));
    assert!(names(zipgen::case_fold_duplicate(p)).contains(&format!("{p}A.go")));
    let dup = names(zipgen::exact_duplicate(p));
    assert_eq!(
        dup.iter().filter(|n| **n == format!("{p}a.go")).count(),
        2,
        "{dup:?}"
    );
    assert!(names(zipgen::nested_go_mod(p)).contains(&format!("{p}sub/go.mod")));
    assert!(names(zipgen::go_mod_wrong_case(p)).contains(&format!("{p}GO.MOD")));
    assert!(names(zipgen::newline_name(p)).contains(&format!("{p}bad\nname.go")));
    let lie = declared(&zipgen::size_lie_more(p));
    assert_eq!(lie[2], (format!("{p}lie.txt"), 10));
    let total: u64 = declared(&zipgen::declared_size_bomb(p))
        .iter()
        .map(|e| e.1)
        .sum();
    assert!(total > zipgen::MAX_ZIP_FILE, "{total}");
    assert!(zip::ZipArchive::new(Cursor::new(zipgen::truncated(p))).is_err());
    assert!(zip::ZipArchive::new(Cursor::new(zipgen::garbage())).is_err());
}

#[test]
fn symlink_entry_has_s_iflnk() {
    let zip = zipgen::symlink("example.com/m@v1.0.0/");
    let mut z = zip::ZipArchive::new(Cursor::new(zip)).expect("open zip");
    let f = z.by_name("example.com/m@v1.0.0/link").expect("link entry");
    assert_eq!(f.unix_mode().map(|m| m & 0o170000), Some(0o120000));
}
