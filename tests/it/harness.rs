//! Shared set-up for tests that run syncs: a temporary mirror (config,
//! tree, database) pointed at a local upstream.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use gomirror::config::{Config, Overrides};
use gomirror::sync::{self, Quiet, Report, SyncError};
use tokio_util::sync::CancellationToken;

use crate::corpus::load_go_corpus;
use crate::upstream::{ModuleFiles, Upstream};

/// A mirror under a temporary directory.
pub struct Mirror {
    pub dir: tempfile::TempDir,
    pub upstream_url: String,
    /// Extra `[upstream]` lines (e.g. `private = [...]`).
    pub upstream: String,
    pub watch: Vec<(String, String)>,
    /// Extra `[fetch]` lines.
    pub fetch: String,
    /// `[sumdb]` lines: verification is off unless a test points it at the
    /// local checksum database (there is no sum.golang.org here).
    pub sumdb: String,
    /// The `[tree]` table's body: a directory by default, or a bucket (see: #17).
    pub tree_toml: String,
    /// More environment for the binary's runs (a bucket's credentials).
    pub env: Vec<(String, String)>,
    /// Whole tables appended after `[fetch]` (e.g. `[export]`).
    pub extra: String,
}

impl Mirror {
    pub fn new(upstream_url: &str, watch: &[(&str, &str)]) -> Mirror {
        Mirror {
            dir: tempfile::tempdir().expect("temp dir"),
            upstream_url: upstream_url.to_string(),
            upstream: String::new(),
            watch: watch
                .iter()
                .map(|(m, v)| (m.to_string(), v.to_string()))
                .collect(),
            fetch: "max_attempts = 4\nbackoff_base = \"10ms\"\nbackoff_max = \"100ms\"\n".into(),
            sumdb: "key = \"off\"\n".into(),
            tree_toml: "dir = \"tree\"\n".into(),
            env: Vec::new(),
            extra: String::new(),
        }
    }

    pub fn tree(&self) -> PathBuf {
        self.dir.path().join("tree")
    }

    pub fn database(&self) -> PathBuf {
        self.dir.path().join("state.db")
    }

    pub fn config_path(&self) -> PathBuf {
        let path = self.dir.path().join("mirror.toml");
        let mut text = format!(
            "[upstream]\nproxies = [\"{}\"]\n{}[tree]\n{}[state]\ndatabase = \"state.db\"\n\
             [sumdb]\n{}[fetch]\n{}{}",
            self.upstream_url, self.upstream, self.tree_toml, self.sumdb, self.fetch, self.extra
        );
        for (module, versions) in &self.watch {
            text.push_str(&format!(
                "[[watch]]\nmodule = \"{module}\"\nversions = \"{versions}\"\n"
            ));
        }
        std::fs::write(&path, text).expect("write mirror.toml");
        path
    }

    pub fn config(&self) -> Config {
        Config::load(&self.config_path(), &Overrides::default()).expect("test config loads")
    }

    pub async fn sync(&self) -> Result<Report, SyncError> {
        sync::run(&self.config(), Arc::new(Quiet), CancellationToken::new()).await
    }

    pub fn file(&self, rel: &str) -> Option<Vec<u8>> {
        std::fs::read(self.tree().join(rel)).ok()
    }
}

/// An upstream serving `files` and a checksum database (`sum.test.example`) that holds
/// every one of them, reached through it.
pub async fn upstream_with_sumdb(
    files: Vec<ModuleFiles>,
) -> (Upstream, Arc<crate::sumdb::SumdbServer>) {
    let db = crate::sumdb::SumdbServer::new("sum.test.example");
    db.add_modules(&files);
    let upstream = Upstream::start(files).await;
    upstream.attach_sumdb(db.clone());
    (upstream, db)
}

/// Two versions of `example.com/a`, for tests of the binary that need a run.
pub async fn small_upstream() -> Upstream {
    Upstream::start(vec![
        crate::zipgen::synthetic_module("example.com/a", "v1.0.0", 3, 1024),
        crate::zipgen::synthetic_module("example.com/a", "v1.1.0", 3, 1024),
    ])
    .await
}

/// What [`small_upstream`] serves, as a watchlist.
pub const WATCH_A: &[(&str, &str)] = &[("example.com/a", "all")];

/// An upstream serving Go's whole module-proxy test corpus.
pub async fn corpus_upstream() -> Upstream {
    Upstream::start(
        load_go_corpus()
            .into_iter()
            .map(ModuleFiles::from)
            .collect(),
    )
    .await
}

// ---------------------------------------------------------------------------
// Helpers for faults.rs, hostile.rs, crash.rs and cli.rs: several upstreams,
// reading state back, running the binary, and an independent `h1:`.
// ---------------------------------------------------------------------------

/// What a run of the `gomirror` binary left behind.
#[derive(Debug)]
pub struct BinRun {
    /// `None` if killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

/// One row of `versions`, joined with its module path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    pub path: String,
    pub version: String,
    pub status: String,
    pub last_error: Option<String>,
    pub h1_zip: Option<String>,
}

impl Mirror {
    /// Several `[upstream] proxies`, tried in order. `config_path` writes
    /// `proxies = ["<upstream_url>"]`, so the list is joined into that slot.
    pub fn set_proxies(&mut self, proxies: &[&str]) {
        self.upstream_url = proxies.join("\", \"");
    }

    /// A connection to the state database (which must exist).
    pub fn db(&self) -> rusqlite::Connection {
        rusqlite::Connection::open(self.database()).expect("open state database")
    }

    /// Every version row, sorted by path and version.
    pub fn rows(&self) -> Vec<Row> {
        if !self.database().exists() {
            return Vec::new();
        }
        let db = self.db();
        let mut stmt = db
            .prepare(
                "SELECT m.path, v.version, v.status, v.last_error, v.h1_zip
                 FROM versions v JOIN modules m ON m.id = v.module_id
                 ORDER BY m.path, v.version",
            )
            .expect("prepare");
        stmt.query_map([], |r| {
            Ok(Row {
                path: r.get(0)?,
                version: r.get(1)?,
                status: r.get(2)?,
                last_error: r.get(3)?,
                h1_zip: r.get(4)?,
            })
        })
        .expect("query versions")
        .collect::<Result<_, _>>()
        .expect("read versions")
    }

    /// The row of `path@version`.
    pub fn row(&self, path: &str, version: &str) -> Row {
        self.rows()
            .into_iter()
            .find(|r| r.path == path && r.version == version)
            .unwrap_or_else(|| panic!("no state row for {path}@{version}"))
    }

    /// `gomirror <args> --config <this mirror's mirror.toml>`; see [`gomirror`].
    pub fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut cmd = gomirror(&self.config_path(), args);
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs `gomirror <args>` to its end.
    pub async fn run_bin(&self, args: &[&str]) -> BinRun {
        run_command(self.command(args)).await
    }
}

/// `gomirror <args> --config <config>`, with the environment overrides
/// cleared so that the test's own environment cannot leak in, output piped,
/// and killed if dropped.
pub fn gomirror(config: &Path, args: &[&str]) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_gomirror"));
    cmd.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("GOMIRROR_UPSTREAM")
        .env_remove("GOMIRROR_CONFIG")
        .env("GOMIRROR_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Runs a prepared command to its end and collects its output.
pub async fn run_command(mut cmd: tokio::process::Command) -> BinRun {
    let out = cmd.output().await.expect("run gomirror");
    BinRun {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// dirhash.Hash1 of a module zip, computed here with the `zip` crate rather
/// than by gomirror's own code (Go: x/mod/sumdb/dirhash/hash.go Hash1).
pub fn h1_of_zip(zip_bytes: &[u8]) -> String {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    use std::io::Read;

    let mut z = zip::ZipArchive::new(std::io::Cursor::new(zip_bytes)).expect("a valid zip");
    let mut lines: Vec<(String, String)> = (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).expect("zip entry");
            let mut data = Vec::new();
            f.read_to_end(&mut data).expect("read zip entry");
            let name = f.name().to_string();
            let line = format!("{}  {name}\n", hex::encode(Sha256::digest(&data)));
            (name, line)
        })
        .collect();
    lines.sort();
    let all: String = lines.into_iter().map(|(_, l)| l).collect();
    format!(
        "h1:{}",
        base64::engine::general_purpose::STANDARD.encode(Sha256::digest(all.as_bytes()))
    )
}

/// Every path under `dir`, files and directories, relative, sorted. An
/// unreadable directory fails the test instead of being skipped, so an
/// invariant check cannot pass by not looking.
pub fn paths_under(dir: &Path) -> Vec<String> {
    walk(dir, true)
}

/// Every file under `dir`, relative, sorted; fails the test on any error.
pub fn files_in(dir: &Path) -> Vec<String> {
    walk(dir, false)
}

fn walk(dir: &Path, with_dirs: bool) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries =
            std::fs::read_dir(&d).unwrap_or_else(|e| panic!("read directory {}: {e}", d.display()));
        for e in entries {
            let e = e.unwrap_or_else(|e| panic!("read directory {}: {e}", d.display()));
            let p = e.path();
            let rel = p.strip_prefix(dir).expect("under dir");
            let rel = rel.to_string_lossy().into_owned();
            let is_dir = e
                .file_type()
                .unwrap_or_else(|e| panic!("stat {}: {e}", p.display()))
                .is_dir();
            if is_dir {
                stack.push(p);
            }
            if with_dirs || !is_dir {
                out.push(rel);
            }
        }
    }
    out.sort();
    out
}
