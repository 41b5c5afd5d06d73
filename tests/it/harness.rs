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
    pub watch: Vec<(String, String)>,
    /// Extra `[fetch]` lines.
    pub fetch: String,
}

impl Mirror {
    pub fn new(upstream_url: &str, watch: &[(&str, &str)]) -> Mirror {
        Mirror {
            dir: tempfile::tempdir().expect("temp dir"),
            upstream_url: upstream_url.to_string(),
            watch: watch
                .iter()
                .map(|(m, v)| (m.to_string(), v.to_string()))
                .collect(),
            fetch: "max_attempts = 4\nbackoff_base = \"10ms\"\nbackoff_max = \"100ms\"\n".into(),
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
            "[upstream]\nproxies = [\"{}\"]\n[tree]\ndir = \"tree\"\n[state]\ndatabase = \"state.db\"\n[fetch]\n{}",
            self.upstream_url, self.fetch
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

/// Every file under `dir`, relative, sorted.
pub fn files_under(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(
                    p.strip_prefix(dir)
                        .expect("under dir")
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }
    out.sort();
    out
}
