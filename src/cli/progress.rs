//! Progress bars on stderr: versions of a sync or an import ([`Bar`]),
//! bytes of an export ([`ExportBar`]). Hidden unless stderr is a terminal
//! and `--no-progress` is not given; the library reports through the
//! `sync::Progress` and `ExportProgress` traits and never draws.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};

use gomirror::bundle::export::ExportProgress;
use gomirror::module::ModVer;
use gomirror::sync::Progress;
use indicatif::{ProgressBar, ProgressStyle};

/// Whether to draw a bar: on a terminal, unless `--no-progress`.
pub fn visible(no_progress: bool) -> bool {
    !no_progress && std::io::stderr().is_terminal()
}

/// The progress bar: versions done/total, bytes and rate.
pub struct Bar {
    bar: Option<ProgressBar>,
    bytes: AtomicU64,
}

impl Bar {
    pub fn new(visible: bool) -> Bar {
        let bar = visible.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} versions  {msg}",
                )
                .expect("the template is valid"),
            );
            bar
        });
        Bar {
            bar,
            bytes: AtomicU64::new(0),
        }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl Progress for Bar {
    fn planned(&self, versions: usize) {
        if let Some(bar) = &self.bar {
            bar.set_length(versions as u64);
        }
    }

    fn finished(&self, _mv: &ModVer, _outcome: &str, bytes: u64) {
        if let Some(bar) = &self.bar {
            let total = self.bytes.fetch_add(bytes, Ordering::Relaxed) + bytes;
            let secs = bar.elapsed().as_secs_f64().max(0.001);
            bar.set_message(format!(
                "{}  {}/s",
                indicatif::HumanBytes(total),
                indicatif::HumanBytes((total as f64 / secs) as u64)
            ));
            bar.inc(1);
        }
    }
}

/// The export progress bar: bytes copied of the bundle's tree files.
pub struct ExportBar {
    bar: Option<ProgressBar>,
}

impl ExportBar {
    pub fn new(visible: bool) -> ExportBar {
        let bar = visible.then(|| {
            let bar = ProgressBar::new(0);
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} [{elapsed_precise}] {bar:30} {bytes}/{total_bytes}  {bytes_per_sec}  {msg}",
                )
                .expect("the template is valid"),
            );
            bar
        });
        ExportBar { bar }
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

impl ExportProgress for ExportBar {
    fn planned(&self, files: usize, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.set_length(bytes);
            bar.set_message(format!("{files} files"));
        }
    }

    fn copied(&self, bytes: u64) {
        if let Some(bar) = &self.bar {
            bar.inc(bytes);
        }
    }
}
