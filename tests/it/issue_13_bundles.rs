//! Issue 13, the bundle parts: what new users and a deliberate attack found in export and
//! import. Each test asserts what the user sees: the message, the exit code, the files.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::airgap::{add_second, bundle_files, offline, online, rewrite_bundle, Online};
use crate::harness::{gomirror, run_command};

const A: &str = "a.airgap.example";
const B: &str = "b.airgap.example";

/// `gomirror export --to <media>` with extra arguments and environment; the run.
async fn export_run(on: &Online, extra: &[&str], env: &[(&str, &str)]) -> crate::harness::BinRun {
    let to = on.media.path().display().to_string();
    let mut args = vec!["export", "--no-progress", "--to", to.as_str()];
    args.extend(extra);
    let mut cmd = on.mirror.command(&args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    run_command(cmd).await
}

fn exports_in_state(on: &Online) -> Vec<(u64, String)> {
    let db = on.mirror.db();
    let mut stmt = db
        .prepare("SELECT sequence, bundle_id FROM exports ORDER BY sequence")
        .expect("prepare");
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows")
}

/// An export with nothing new says so, writes nothing and exits 0.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_export_with_nothing_new_writes_nothing() {
    let on = online(A).await;
    on.sync().await;
    let first = on.export(&[]).await;
    let run = export_run(&on, &[], &[]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr
            .contains("export: nothing new since the last export; no bundle written"),
        "{run:#?}"
    );
    assert_eq!(run.stdout, "", "no bundle path printed: {run:#?}");
    assert_eq!(bundle_files(on.media.path()), first, "nothing written");
    assert_eq!(exports_in_state(&on).len(), 1, "nothing recorded");
    // --full always writes.
    let full = on.export(&["--full"]).await;
    assert_eq!(full.len(), 1);
}

/// kill -9 between the bundle's rename and its record: the next export adopts the visible
/// bundle instead of writing the same sequence number with another id, and the chain goes on
/// on the offline side. Killed before the rename, nothing of it is visible and the next
/// export writes it again.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_export_killed_between_rename_and_record_is_adopted() {
    let mut on = online(A).await;
    on.sync().await;
    let run = export_run(
        &on,
        &["--max-volume-size", "4K"],
        &[("GOMIRROR_TEST_EXPORT_KILL_AT", "renamed")],
    )
    .await;
    assert_eq!(run.code, None, "killed: {run:#?}");
    let visible = bundle_files(on.media.path());
    assert!(
        visible.len() > 2,
        "the whole bundle is visible: {visible:?}"
    );

    let run = export_run(&on, &[], &[]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert!(
        run.stderr.contains("an interrupted export left")
            && run.stderr.contains("complete; recorded it"),
        "{run:#?}"
    );
    assert!(run.stderr.contains("nothing new"), "{run:#?}");
    assert_eq!(bundle_files(on.media.path()), visible, "no second bundle 1");
    let state = exports_in_state(&on);
    assert_eq!(state.len(), 1, "{state:?}");

    // Killed after the record, before anything is visible: settled as never written.
    add_second(&mut on.mirror);
    on.sync().await;
    let run = export_run(&on, &[], &[("GOMIRROR_TEST_EXPORT_KILL_AT", "recorded")]).await;
    assert_eq!(run.code, None, "killed: {run:#?}");
    assert_eq!(bundle_files(on.media.path()), visible, "nothing visible");
    let second = on.export(&[]).await;
    assert_eq!(second.len(), 1, "{second:?}");
    let state = exports_in_state(&on);
    assert_eq!(
        state.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
        [1, 2],
        "{state:?}"
    );

    // The offline side takes bundle 1 (the adopted volumes) and then bundle 2.
    let off = offline(&on.db, &[&on.vkey]);
    let first = visible
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".000"))
        .expect("volume .000");
    let run = off.import(first).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    let run = off.import(&second[0]).await;
    assert_eq!(run.code, Some(0), "the chain goes on: {run:#?}");
    assert_eq!(off.published(), 4);
}

/// A bundle re-signed by another trusted key under source A is refused: each source is
/// bound to the keys trusted for it. A's genuine bundle still imports afterwards.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_key_trusted_for_one_source_cannot_sign_into_another() {
    let a = online(A).await;
    a.sync().await;
    let a1 = a.export(&[]).await;
    let b = online(B).await;
    let b_key = b.mirror.dir.path().join("export.key");
    let work = tempfile::tempdir().expect("temp dir");
    let forged = work.path().join("forged.tar");
    rewrite_bundle(&a1[0], &forged, |_, data| data, Some(&b_key));

    let off = offline(&a.db, &[&a.vkey, &b.vkey]);
    let run = off.import(&forged).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let b_name = b.vkey.splitn(3, '+').take(2).collect::<Vec<_>>().join("+");
    let a_name = a.vkey.splitn(3, '+').take(2).collect::<Vec<_>>().join("+");
    assert!(
        run.stderr.contains(&format!(
            "import refused {}: source \"{A}\" is signed by key {b_name}, which is not \
             trusted for \"{A}\" (trusted: {a_name})",
            forged.display()
        )),
        "{run:#?}"
    );
    assert!(off.snapshot().is_empty(), "nothing written");
    let run = off.import(&a1[0]).await;
    assert_eq!(run.code, Some(0), "A's genuine bundle: {run:#?}");
}

/// A source whose key has another name is trusted only through `[[import.source]]`; the
/// refusal says how to bind it.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_import_source_binds_a_source_to_its_keys() {
    let mut on = online(A).await;
    let key = on.mirror.dir.path().join("site.key");
    let gen = run_command(gomirror(
        &on.mirror.config_path(),
        &[
            "keygen",
            "--name",
            "key.airgap.example",
            "--out",
            &key.display().to_string(),
        ],
    ))
    .await;
    assert_eq!(gen.code, Some(0), "{gen:#?}");
    let vkey = gen.stdout.trim().to_owned();
    on.mirror.sumdb = format!(
        "key = \"{}\"\n[export]\nkey = \"{}\"\nsource = \"site.airgap.example\"\n",
        on.db.vkey(),
        key.display()
    );
    on.sync().await;
    let bundle = on.export(&[]).await;

    let off = offline(&on.db, &[&vkey]);
    let run = off.import(&bundle[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(
            "which is not trusted for \"site.airgap.example\" (no key is: a key in [import] \
             trusted is trusted for the source of its own name; bind others with \
             [[import.source]] name = \"site.airgap.example\", keys = [...])"
        ),
        "{run:#?}"
    );

    let mut bound = offline(&on.db, &[]);
    bound.mirror.sumdb = format!(
        "key = \"{}\"\n[[import.source]]\nname = \"site.airgap.example\"\nkeys = [\"{vkey}\"]\n",
        on.db.vkey()
    );
    let run = bound.import(&bundle[0]).await;
    assert_eq!(run.code, Some(0), "{run:#?}");
    assert_eq!(bound.published(), 3);
}

/// A tar whose first entry is `manifest.json` claiming `size` bytes, followed by `data`
/// (as much of it as there is), uncompressed.
fn claimed_manifest(size: u64, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_gnu();
    h.set_path("manifest.json").expect("path");
    h.set_size(size);
    h.set_mode(0o644);
    h.set_cksum();
    let mut out = h.as_bytes().to_vec();
    out.extend_from_slice(data);
    out
}

/// A zstd bomb: a small file holding a 128 MiB `manifest.json` of spaces and a signature by
/// a key nobody trusts. The head is checked before the manifest is held: refused with the
/// signer named, and the process never gets near 128 MiB. A manifest claiming more than the
/// limit is refused before a byte of it is read, by import and inspect alike.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_hostile_bundle_is_refused_before_its_manifest_is_held() {
    let on = online(A).await;
    let work = tempfile::tempdir().expect("temp dir");
    let huge: u64 = 128 << 20;
    let stranger = work.path().join("stranger.key");
    let gen = run_command(gomirror(
        &on.mirror.config_path(),
        &[
            "keygen",
            "--name",
            "x.example",
            "--out",
            &stranger.display().to_string(),
        ],
    ))
    .await;
    assert_eq!(gen.code, Some(0), "{gen:#?}");
    let signer = gomirror::bundle::export::read_signer(&stranger).expect("key");
    let sig = gomirror::verify::sumdb::note::sign(
        &format!("gomirror bundle\nmanifest {}\n", "0".repeat(64)),
        &[&signer],
    )
    .expect("sign");
    let bomb = work.path().join("bomb.tar.zst");
    {
        let file = std::fs::File::create(&bomb).expect("create");
        let mut enc = zstd::Encoder::new(file, 1).expect("zstd");
        enc.write_all(&claimed_manifest(huge, &[])).expect("write");
        let spaces = vec![b' '; 1 << 20];
        for _ in 0..(huge >> 20) {
            enc.write_all(&spaces).expect("write");
        }
        let mut sig_tar = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(sig.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        sig_tar
            .append_data(&mut h, "manifest.sig", &sig[..])
            .expect("append");
        enc.write_all(&sig_tar.into_inner().expect("tar"))
            .expect("write");
        enc.finish().expect("finish");
    }
    let size = std::fs::metadata(&bomb).expect("stat").len();
    assert!(size < 32 << 10, "a small file: {size} bytes");

    let off = offline(&on.db, &[&on.vkey]);
    let (code, stderr, max_rss_kib) = run_measured(&off.mirror.config_path(), &bomb);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "import refused {}: manifest.sig: signed by x.example+{:08x}, which is not a \
             trusted key",
            bomb.display(),
            signer.key_hash()
        )),
        "{stderr}"
    );
    // About 32 MiB on a quiet machine; up to ~66 MiB under a loaded test run, when the
    // decompressing reader gets ahead of the hasher by its bounded buffers. Holding the
    // manifest would take more than its 128 MiB.
    assert!(
        max_rss_kib < 100 << 10,
        "peak RSS {max_rss_kib} KiB: the 128 MiB manifest was held"
    );

    // Over the limit: refused from the header alone, with the same limit for both commands.
    let over = work.path().join("over.tar");
    std::fs::write(&over, claimed_manifest(300 << 20, &[b'{'; 16 << 10])).expect("write");
    let want = format!(
        "manifest.json: {} bytes, more than the limit of {}",
        300u64 << 20,
        256u64 << 20
    );
    let run = off.import(&over).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(run.stderr.contains(&want), "{run:#?}");
    let o = over.display().to_string();
    let run = off.mirror.run_bin(&["bundle", "inspect", &o]).await;
    assert_ne!(run.code, Some(0), "{run:#?}");
    assert!(run.stderr.contains(&want), "{run:#?}");
}

/// Runs `gomirror import` on `bundle` and returns its exit code, stderr and peak RSS (KiB),
/// from wait4(2) of that child alone.
// The child is reaped by wait4(2), which std's `Child` does not know about.
#[allow(clippy::zombie_processes)]
fn run_measured(config: &Path, bundle: &Path) -> (i32, String, i64) {
    let dir = tempfile::tempdir().expect("temp dir");
    let err_path = dir.path().join("stderr");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_gomirror"))
        .args(["import", "--no-progress"])
        .arg(bundle)
        .arg("--config")
        .arg(config)
        .env_remove("GOMIRROR_CONFIG")
        .env("GOMIRROR_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&err_path).expect("stderr file"))
        .spawn()
        .expect("spawn gomirror");
    // The child's own high-water mark, sampled until it exits. Not `ru_maxrss` from wait4:
    // Linux starts that at the RSS of the process that spawned the child (exec records the
    // spawning mm's high-water mark), and this test process runs every other test too.
    let mut child = child;
    let status_file = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0;
    let status = loop {
        if let Some(kib) = std::fs::read_to_string(&status_file)
            .ok()
            .as_deref()
            .and_then(vm_hwm_kib)
        {
            peak_kib = peak_kib.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    };
    assert!(peak_kib > 0, "VmHWM was read");
    let code = status.code().expect("exited, not killed");
    let stderr = std::fs::read_to_string(&err_path).expect("read stderr");
    (code, stderr, peak_kib)
}

/// `VmHWM:   1234 kB` of a /proc/<pid>/status.
fn vm_hwm_kib(status: &str) -> Option<i64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// A file that is not a bundle says so, and "refused" is said once.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_a_file_that_is_not_a_bundle_says_so() {
    let on = online(A).await;
    let work = tempfile::tempdir().expect("temp dir");
    let off = offline(&on.db, &[&on.vkey]);
    for (name, bytes) in [
        ("notes.txt", b"just some text\n".to_vec()),
        ("empty.tar", Vec::new()),
        ("other.tar", {
            let mut b = tar::Builder::new(Vec::new());
            let mut h = tar::Header::new_gnu();
            h.set_size(3);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, "README", &b"hi\n"[..])
                .expect("append");
            b.into_inner().expect("tar")
        }),
    ] {
        let path = work.path().join(name);
        std::fs::write(&path, &bytes).expect("write");
        let run = off.import(&path).await;
        assert_eq!(run.code, Some(1), "{name}: {run:#?}");
        let want = format!("import refused {}: not a gomirror bundle: ", path.display());
        assert!(run.stderr.contains(&want), "{name}: {run:#?}");
        assert!(!run.stderr.contains("refused: "), "said once: {run:#?}");
        let p = path.display().to_string();
        let run = off.mirror.run_bin(&["bundle", "inspect", &p]).await;
        assert!(
            run.stderr
                .contains(&format!("{}: not a gomirror bundle: ", path.display())),
            "{name}: {run:#?}"
        );
    }
}

/// A split bundle with a volume missing, or volumes swapped, names the volume.
// See: #13
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issue_13_missing_or_swapped_volumes_are_named() {
    let on = online(A).await;
    on.sync().await;
    let parts = on.export(&["--max-volume-size", "4K"]).await;
    assert!(parts.len() > 3, "{parts:?}");
    let off = offline(&on.db, &[&on.vkey]);
    let copy = |dir: &Path| -> Vec<PathBuf> {
        parts
            .iter()
            .map(|p| {
                let to = dir.join(p.file_name().expect("name"));
                std::fs::copy(p, &to).expect("copy");
                to
            })
            .collect()
    };

    // A middle volume missing.
    let d = tempfile::tempdir().expect("temp dir");
    let v = copy(d.path());
    std::fs::remove_file(&v[2]).expect("remove");
    let run = off.import(&v[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!(
            "{}: missing: {} is there, the volume before it is not",
            v[2].display(),
            v[3].display()
        )),
        "{run:#?}"
    );

    // The short last volume swapped into the middle.
    let d = tempfile::tempdir().expect("temp dir");
    let v = copy(d.path());
    let last = v.len() - 1;
    let tmp = d.path().join("swap");
    std::fs::rename(&v[1], &tmp).expect("rename");
    std::fs::rename(&v[last], &v[1]).expect("rename");
    std::fs::rename(&tmp, &v[last]).expect("rename");
    let run = off.import(&v[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    assert!(
        run.stderr.contains(&format!("{}: ", v[1].display()))
            && run
                .stderr
                .contains("the volumes are out of order, or one is truncated"),
        "{run:#?}"
    );

    // Two full volumes swapped: a file comes out wrong, or the stream breaks in a named
    // volume; either way the message points at the volumes.
    let d = tempfile::tempdir().expect("temp dir");
    let v = copy(d.path());
    let tmp = d.path().join("swap");
    std::fs::rename(&v[1], &tmp).expect("rename");
    std::fs::rename(&v[2], &v[1]).expect("rename");
    std::fs::rename(&tmp, &v[2]).expect("rename");
    let run = off.import(&v[0]).await;
    assert_eq!(run.code, Some(1), "{run:#?}");
    let named = run.stderr.contains(&format!(" of {} (", v.len()))
        && run
            .stderr
            .contains("are the volumes complete and in order?");
    let hinted = run.stderr.contains(&format!(
        "(the bundle is split into {} volumes: are they all there and in order?)",
        v.len()
    ));
    assert!(named || hinted, "{run:#?}");
    assert_eq!(off.published(), 0);
}
