//! The command-line edge: parses the arguments and the config, builds the
//! one runtime, dispatches to a subcommand in `cli`, and exits. Exit codes
//! (STYLE.md §2): 0 every planned version is present; 1 the run finished
//! but some versions failed, were not found or were quarantined (or a
//! bundle was refused, or `verify` found a problem); 2 the run could not
//! proceed. The only user of anyhow.

mod cli;

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use cli::args::{upstream_override, BundleCommand, Cli, Command};
use cli::output::note;
use gomirror::config::{Config, Overrides};
use gomirror::error::Chain;
use gomirror::{bundle, daemon, sync};

fn main() -> ExitCode {
    let cli = Cli::parse();
    cli::logging::init(cli.log_format);
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            note!("{}", Chain(err.as_ref()));
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    let load = || Config::load(&cli.config, &Overrides::default());
    match cli.command {
        Command::Sync {
            upstream,
            no_progress,
            plan_only,
            project,
            wait,
            wait_timeout,
        } => {
            let overrides = Overrides {
                upstream: upstream_override(upstream),
            };
            let config = Config::load(&cli.config, &overrides)?;
            let options = sync::RunOptions {
                plan_only,
                wait: wait.then(|| cli::sync::lock_wait(wait_timeout)),
                ..Default::default()
            };
            match project {
                Some(dir) => {
                    runtime.block_on(cli::sync::project(config, &dir, no_progress, options))
                }
                None => runtime.block_on(cli::sync::once(config, no_progress, options)),
            }
        }
        Command::Daemon { upstream } => {
            let overrides = Overrides {
                upstream: upstream_override(upstream),
            };
            let config = Config::load(&cli.config, &overrides)?;
            let options = daemon::Options {
                config_path: cli.config.clone(),
                overrides,
            };
            let code = runtime.block_on(cli::sync::daemon(config, options))?;
            // A run abandoned after its grace period may leave a publish
            // running on the blocking pool; it is not waited for forever.
            runtime.shutdown_timeout(Duration::from_secs(5));
            Ok(code)
        }
        Command::Prune { dry_run, json } => {
            runtime.block_on(cli::prune::prune(load()?, dry_run, json))
        }
        Command::Retry { pattern } => runtime.block_on(cli::state::retry(load()?, pattern)),
        Command::Closure { dir, json } => {
            runtime.block_on(cli::closure::closure(load()?, &dir, json))
        }
        Command::Clients { json, since } => {
            runtime.block_on(cli::clients::clients(load()?, json, since))
        }
        Command::Status { json } => runtime.block_on(cli::state::status(load()?, json)),
        Command::Verify { json, repair } => {
            runtime.block_on(cli::state::verify(load()?, json, repair))
        }
        Command::Keygen { name, out } => cli::bundle::keygen(&name, &out),
        Command::Export {
            to,
            full,
            compression,
            max_volume_size,
            no_progress,
        } => {
            let options = bundle::export::ExportOptions {
                to,
                full,
                compression: compression.into(),
                max_volume_size,
            };
            runtime.block_on(cli::bundle::export(load()?, options, no_progress))
        }
        Command::Bundle {
            command:
                BundleCommand::Inspect {
                    bundle,
                    trust,
                    json,
                },
        } => {
            // A config is optional here (a bundle can be looked at anywhere),
            // but one that exists must be valid.
            let config = match cli.config.exists() {
                true => Some(load()?),
                false => None,
            };
            cli::bundle::inspect(config.as_ref(), &bundle, &trust, json)
        }
        Command::Import {
            bundle,
            no_progress,
        } => runtime.block_on(cli::bundle::import(load()?, bundle, no_progress)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A run that could not proceed is shown through the library's chain
    /// formatter; it prints what anyhow's `{:#}` printed, context included.
    #[test]
    fn chain_matches_anyhow_alternate() {
        let io = std::io::Error::other("denied");
        let err = anyhow::Error::new(io)
            .context("opening x")
            .context("loading config");
        assert_eq!(Chain(err.as_ref()).to_string(), format!("{err:#}"));
        assert_eq!(
            Chain(err.as_ref()).to_string(),
            "loading config: opening x: denied"
        );
    }
}
