//! Syncs against the local upstream: what lands in the tree and in state.

use crate::harness::{corpus_upstream, Mirror};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sync_publishes_the_watchlist_from_the_corpus() {
    let upstream = corpus_upstream().await;
    let mirror = Mirror::new(
        &upstream.url(),
        &[
            ("rsc.io/quote", "all"),
            ("golang.org/x/text", "latest"),
            ("rsc.io/sampler", "v1.3.0"),
        ],
    );
    let report = mirror.sync().await.expect("sync runs");
    assert!(report.all_ok(), "{report:#?}");
    assert!(report.summary.published >= 8, "{report:#?}");
    let list = String::from_utf8(mirror.file("rsc.io/quote/@v/list").expect("list")).unwrap();
    assert!(list.starts_with("v1.0.0\n"), "{list}");
    assert!(list.contains("v1.5.2\n"), "{list}");
    assert!(mirror.file("rsc.io/quote/@v/v1.5.2.zip").is_some());
    assert!(mirror.file("rsc.io/sampler/@v/v1.3.0.mod").is_some());
    assert!(mirror.file("rsc.io/quote/@latest").is_some());

    // Nothing new: listings are read again, but no version file is downloaded.
    let downloads = |u: &crate::upstream::Upstream| {
        u.requests(".zip") + u.requests(".info") + u.requests(".mod")
    };
    let before = downloads(&upstream);
    let again = mirror.sync().await.expect("second sync runs");
    assert!(again.all_ok(), "{again:#?}");
    assert_eq!(again.summary.published, 0);
    assert_eq!(
        downloads(&upstream),
        before,
        "a no-op sync downloaded version files"
    );
}
