//! `h1:` hashes equal Go's for the whole module-proxy test corpus.
//!
//! The expected values are the go.sum lines of Go's own scripts
//! (`cmd/go/testdata/script/*.txt`), which the real `go` command checks
//! against the same corpus. A few scripts hold deliberately wrong hashes to
//! test mismatch errors; those are named here, and every other line must
//! equal what we compute.

use std::collections::BTreeMap;
use std::io::Write;

use gomirror::module::ModVer;
use gomirror::verify::{dirhash, zip};

use crate::corpus::{expected_go_sums, load_go_corpus};

/// Scripts whose go.sum lines are wrong on purpose.
/// See: cmd/go/testdata/script/mod_verify.txt ("bad hash"), work_sum_mismatch.txt.
const DELIBERATELY_WRONG: &[&str] = &["mod_verify.txt", "work_sum_mismatch.txt"];

/// (path, version, is_go_mod) → h1 we compute.
fn our_hashes() -> BTreeMap<(String, String, bool), String> {
    let mut ours = BTreeMap::new();
    let dir = tempfile::tempdir().expect("temp dir");
    for cv in load_go_corpus() {
        let Ok(mv) = ModVer::parse(&cv.path, &cv.version) else {
            continue;
        };
        if let Some(m) = &cv.mod_file {
            ours.insert(
                (cv.path.clone(), cv.version.clone(), true),
                dirhash::hash_go_mod(&dirhash::digest(m)),
            );
        }
        let zip_path = dir.path().join(&cv.file_name);
        std::fs::File::create(&zip_path)
            .and_then(|mut f| f.write_all(&cv.zip))
            .expect("write corpus zip");
        if let Ok(checked) = zip::check_zip(&mv, &zip_path) {
            ours.insert((cv.path, cv.version, false), checked.h1);
        }
    }
    ours
}

#[test]
fn h1_matches_go_for_the_corpus() {
    let ours = our_hashes();
    let (mut matched, mut wrong_on_purpose) = (0, 0);
    let mut mismatches = Vec::new();
    for line in expected_go_sums() {
        let key = (line.path.clone(), line.version.clone(), line.is_go_mod);
        let Some(h1) = ours.get(&key) else {
            continue; // not in the corpus (a real module named in a script)
        };
        if *h1 == line.h1 {
            matched += 1;
        } else if DELIBERATELY_WRONG.contains(&line.source_file.as_str()) {
            wrong_on_purpose += 1;
        } else {
            mismatches.push(format!("{line:?}: we compute {h1}"));
        }
    }
    assert!(
        mismatches.is_empty(),
        "h1 differs from Go:\n{}",
        mismatches.join("\n")
    );
    // 166 lines of Go 1.19's scripts name a corpus version; a drop means the
    // corpus loader or the parser lost some.
    assert!(matched >= 160, "only {matched} go.sum lines compared");
    assert!(
        wrong_on_purpose >= 1,
        "the deliberately wrong lines were not seen"
    );
}

#[test]
fn rsc_io_quote_testdata_copy() {
    // The value cmd/go/testdata/script/mod_*.txt expect for the corpus copy
    // (not the real module's h1:w5fc…, see PROTOCOL.md).
    let ours = our_hashes();
    let key = |go_mod| ("rsc.io/quote".to_string(), "v1.5.2".to_string(), go_mod);
    assert_eq!(
        ours[&key(false)],
        "h1:3fEykkD9k7lYzXqCYrwGAf7iNhbk4yCjHmKBN9td4L0="
    );
}
