//! The systemd units we ship pass `systemd-analyze verify`, and each
//! `ExecStart=` names a gomirror subcommand that exists.
//!
//! `verify` checks that `ExecStart=` is an executable file, so the units are
//! copied to a temporary directory with `/usr/local/bin/gomirror` replaced by
//! the binary under test. Any output at all fails the test: `verify` only
//! warns (exit 0) about unknown keys and misplaced settings.

use std::path::{Path, PathBuf};
use std::process::Command;

const UNITS: &[&str] = &[
    "gomirror.service",
    "gomirror-sync.service",
    "gomirror-sync.timer",
];
const INSTALLED_BINARY: &str = "/usr/local/bin/gomirror";

fn find_systemd_analyze() -> Option<PathBuf> {
    crate::nginx::find_on_path("systemd-analyze").or_else(|| {
        let p = PathBuf::from("/usr/bin/systemd-analyze");
        p.is_file().then_some(p)
    })
}

/// The units, with the binary under test in place of the installed one.
fn units_for_test(dir: &Path) -> Vec<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    UNITS
        .iter()
        .map(|name| {
            let text = std::fs::read_to_string(src.join(name))
                .unwrap_or_else(|e| panic!("read systemd/{name}: {e}"));
            let path = dir.join(name);
            let text = text.replace(INSTALLED_BINARY, env!("CARGO_BIN_EXE_gomirror"));
            std::fs::write(&path, text).expect("write unit copy");
            path
        })
        .collect()
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = find_systemd_analyze() else {
        if std::env::var("GOMIRROR_REQUIRE_TOOLS").as_deref() == Ok("1") {
            panic!("systemd-analyze not found and GOMIRROR_REQUIRE_TOOLS=1");
        }
        eprintln!("skipping units::units_pass_systemd_analyze_verify: systemd-analyze not found (GOMIRROR_REQUIRE_TOOLS=1 makes this a failure)");
        return;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let units = units_for_test(dir.path());
    let out = Command::new(&analyze)
        .arg("verify")
        .arg("--man=no")
        .args(&units)
        .output()
        .expect("run systemd-analyze");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    assert_eq!(text, "", "systemd-analyze verify warned");
}

/// The unit files name the binary where README installs it, with
/// subcommands and flags the binary accepts.
#[test]
fn exec_lines_name_real_subcommands() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let mut checked = 0;
    for name in UNITS {
        let text = std::fs::read_to_string(src.join(name)).expect("read unit");
        for line in text.lines().filter(|l| l.starts_with("ExecStart=")) {
            let args: Vec<&str> = line["ExecStart=".len()..].split_whitespace().collect();
            assert_eq!(args[0], INSTALLED_BINARY, "{name}: {line}");
            // `--help` after the subcommand and its flags: clap refuses an
            // unknown subcommand or flag before it prints help.
            let out = Command::new(env!("CARGO_BIN_EXE_gomirror"))
                .args(&args[1..])
                .arg("--help")
                .output()
                .expect("run gomirror");
            assert!(
                out.status.success(),
                "{name}: {line}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2, "one ExecStart= per service");
}

/// The daemon unit reloads with SIGHUP and restarts on failure; the
/// oneshot treats `systemctl stop` (exit 143) as success.
#[test]
fn units_wire_reload_restart_and_stop() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd");
    let daemon = std::fs::read_to_string(src.join("gomirror.service")).expect("read");
    for want in [
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "ProtectSystem=strict",
        "NoNewPrivileges=true",
    ] {
        assert!(
            daemon.lines().any(|l| l == want),
            "gomirror.service lacks {want}"
        );
    }
    let oneshot = std::fs::read_to_string(src.join("gomirror-sync.service")).expect("read");
    assert!(oneshot.lines().any(|l| l == "SuccessExitStatus=143"));
}
