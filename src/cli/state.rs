//! The commands that read what earlier syncs left: `status`, `verify` and
//! `retry`. None of them creates a state database where none is.

use std::process::ExitCode;

use anyhow::Context;
use gomirror::config::Config;
use gomirror::metrics;
use gomirror::state::Store;

use super::report;

/// Opens the state database of an earlier sync; never creates one.
pub async fn existing_store(config: &Config) -> anyhow::Result<Store> {
    if !config.database.exists() {
        anyhow::bail!(
            "no state database at {}: no sync has run with this config yet",
            config.database.display()
        );
    }
    Ok(Store::open(&config.database).await?)
}

/// `gomirror status [--json]`.
pub async fn status(config: Config, json: bool) -> anyhow::Result<ExitCode> {
    let store = existing_store(&config).await?;
    // The same numbers the metrics show: both come from metrics::gather.
    let mut inputs = metrics::gather(&store, config.local_tree_dir(), None).await?;
    let db_lock = gomirror::lock::db_lock_path(&config.database);
    inputs
        .status
        .show_dead_runs(gomirror::lock::is_held(&db_lock));
    let textfile = metrics::textfile_status(&config);
    report::status(&inputs, textfile.as_ref(), json).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}

/// `gomirror verify [--json] [--repair]`: exit 1 on any problem.
pub async fn verify(config: Config, json: bool, repair: bool) -> anyhow::Result<ExitCode> {
    // Like `status`: checking a tree no sync made creates nothing.
    drop(existing_store(&config).await?);
    let options = gomirror::audit::AuditOptions { repair };
    let audit = gomirror::audit::audit_with(&config, options).await?;
    report::verify(&audit, json).context("writing to stdout")?;
    Ok(if audit.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `gomirror retry [pattern]`: failed and quarantined versions back to pending.
pub async fn retry(config: Config, pattern: Option<String>) -> anyhow::Result<ExitCode> {
    if let Some(p) = &pattern {
        gomirror::plan::rules::check_globs(p).map_err(|e| anyhow::anyhow!("retry: {e}"))?;
    }
    let store = existing_store(&config).await?;
    let back = store.retry_failed(pattern.as_deref()).await?;
    report::retry(&back, pattern.as_deref()).context("writing to stdout")?;
    Ok(ExitCode::SUCCESS)
}
