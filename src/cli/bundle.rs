//! The air-gap commands: `keygen`, `export` (online side), `bundle inspect`
//! (anywhere) and `import` (offline side).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use gomirror::bundle::export::{self, ExportOptions};
use gomirror::bundle::import;
use gomirror::config::Config;
use gomirror::verify::sumdb::note::Verifier;

use super::progress::{self, Bar, ExportBar};
use super::report;
use super::state::existing_store;

/// `gomirror keygen`: a new signing key, its verifier key on stdout.
pub fn keygen(name: &str, out: &Path) -> anyhow::Result<ExitCode> {
    let vkey = export::keygen(name, out)?;
    report::keygen(&vkey, out).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `gomirror export`: what was published since the last export, as a bundle.
pub async fn export(
    config: Config,
    options: ExportOptions,
    no_progress: bool,
) -> anyhow::Result<ExitCode> {
    drop(existing_store(&config).await?);
    if !options.to.is_dir() {
        anyhow::bail!("export: --to {}: not a directory", options.to.display());
    }
    let stray = export::remove_stray_temps(&options.to)?;
    if stray > 0 {
        tracing::info!(
            stray,
            "removed unfinished bundle files of an earlier export"
        );
    }
    let bar = Arc::new(ExportBar::new(progress::visible(no_progress)));
    let result = export::export(&config, &options, bar.clone()).await;
    bar.finish();
    report::export(&result?).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `gomirror bundle inspect`: the signature is checked with `--trust` keys,
/// the config's `[import] trusted` keys and `[export] key`'s own verifier.
pub fn inspect(
    config: Option<&Config>,
    bundle: &Path,
    trust: &[String],
    json: bool,
) -> anyhow::Result<ExitCode> {
    let mut keys = Vec::new();
    for k in trust {
        keys.push(Verifier::parse(k).with_context(|| format!("--trust {k:?}"))?);
    }
    keys.extend(config.iter().flat_map(|c| c.import_trusted.iter().cloned()));
    if let Some(settings) = config.and_then(|c| c.export.as_ref()) {
        if let Ok(signer) = export::read_signer(&settings.key) {
            keys.push(signer.verifier());
        }
    }
    let info = gomirror::bundle::inspect::inspect(bundle, &keys)
        .with_context(|| bundle.display().to_string())?;
    report::inspect(&info, json).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `gomirror import`: exit 1 when the bundle is refused (nothing changed).
pub async fn import(
    config: Config,
    bundle: PathBuf,
    no_progress: bool,
) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let bar = Arc::new(Bar::new(progress::visible(no_progress)));
    let result = import::import(&config, &bundle, bar.clone()).await;
    bar.finish();
    match result {
        Ok(r) => {
            report::import(&r, started.elapsed());
            Ok(ExitCode::SUCCESS)
        }
        // The bundle is refused; this mirror is unchanged.
        Err(e) if e.is_refusal() => {
            report::import_refused(&bundle, &e);
            Ok(ExitCode::from(1))
        }
        Err(e) => Err(e.into()),
    }
}
