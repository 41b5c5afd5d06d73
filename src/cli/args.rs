//! The command line: clap's definitions of `gomirror`'s subcommands and
//! flags, and the few values they parse (`--max-volume-size`, the
//! `--upstream`/`GOMIRROR_UPSTREAM` override). What each subcommand does is
//! in `commands`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use gomirror::bundle::export::Compression;
use gomirror::config::Override;

#[derive(Parser)]
#[command(name = "gomirror", version, about = "Keeps a static GOPROXY tree warm")]
pub struct Cli {
    /// Path to mirror.toml.
    #[arg(
        long,
        short,
        global = true,
        env = "GOMIRROR_CONFIG",
        default_value = "mirror.toml"
    )]
    pub config: PathBuf,
    /// Log format on stderr; `auto` is human on a terminal, journal when
    /// stderr is systemd's journal (plain lines with a syslog priority
    /// prefix, no timestamps), JSON otherwise.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Auto)]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum BundleCommand {
    /// Signer, sequence, predecessor, counts, sizes and tree head of a
    /// bundle (the file or its `.000` volume).
    Inspect {
        bundle: PathBuf,
        /// Check the signature with this verifier key (repeatable); the
        /// config's `[import] trusted` keys and `[export] key`'s own
        /// verifier are always tried.
        #[arg(long)]
        trust: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum CompressionArg {
    None,
    Zstd,
}

impl From<CompressionArg> for Compression {
    fn from(arg: CompressionArg) -> Compression {
        match arg {
            CompressionArg::None => Compression::None,
            CompressionArg::Zstd => Compression::Zstd,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Auto,
    Human,
    Json,
    Journal,
}

#[derive(Subcommand)]
pub enum Command {
    /// Fetch, verify and publish what the watchlist asks for, once.
    Sync {
        /// Comma-separated upstream GOPROXY list, replacing [upstream] proxies
        /// (also from GOMIRROR_UPSTREAM).
        #[arg(long)]
        upstream: Option<String>,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
        /// Plan only: read the feed and the watchlist, record what to fetch
        /// as pending (the next sync fetches it), fetch nothing.
        #[arg(long, conflicts_with = "project")]
        plan_only: bool,
        /// Mirror only the closure of this project (a directory with go.mod or
        /// go.work): no feed, no watchlist, no other project. Exit 1 if
        /// anything it needs is missing, listing what and why.
        #[arg(long, value_name = "DIR")]
        project: Option<PathBuf>,
        /// When another sync holds the lock, wait for it (up to
        /// --wait-timeout) instead of exiting 2 at once.
        #[arg(long)]
        wait: bool,
        /// How long --wait waits for the lock (e.g. 30s, 10m).
        #[arg(long, value_name = "DURATION", default_value = "10m", value_parser = humantime::parse_duration, requires = "wait")]
        wait_timeout: std::time::Duration,
    },
    /// Remove what the [retention] policy lets go: lists first, files after
    /// the lists' cache lifetime. Lists every version with why it stays or
    /// goes, and the totals.
    Prune {
        /// Decide and list; touch nothing.
        #[arg(long)]
        dry_run: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Put failed and quarantined versions back to pending, with their
    /// attempts reset; the next sync fetches them.
    Retry {
        /// Only modules matching these comma-separated globs (Go path.Match
        /// on leading path elements, as GONOSUMDB); all when omitted.
        pattern: Option<String>,
    },
    /// Sync on the `[daemon] schedule`, until SIGTERM or SIGINT; SIGHUP
    /// re-reads the config.
    Daemon {
        /// Comma-separated upstream GOPROXY list, replacing [upstream] proxies
        /// (also from GOMIRROR_UPSTREAM); kept across SIGHUP.
        #[arg(long)]
        upstream: Option<String>,
    },
    /// What a project (a directory with go.mod or go.work) needs from the
    /// mirror and what the tree lacks of it; publishes nothing.
    Closure {
        /// The project directory.
        dir: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// What is mirrored, the last runs, and what failed.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// What clients did, from `[clients] access_log` (read first, from where
    /// the last read stopped): requests by result, hit ratio, bytes, top
    /// modules and top misses.
    Clients {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Only the figures of this last while (e.g. 24h, 7d), counted by
        /// whole hours; at most 31 days are kept.
        #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
        since: Option<std::time::Duration>,
    },
    /// Write a new bundle-signing key (mode 0600) and print its verifier key,
    /// which the offline mirror trusts.
    Keygen {
        /// The key's name, e.g. this mirror's host name.
        #[arg(long)]
        name: String,
        /// Where to write the private key; never overwritten.
        #[arg(long)]
        out: PathBuf,
    },
    /// Write what was published since the last export as a signed bundle.
    Export {
        /// The directory to write the bundle to (e.g. a mounted USB disk).
        #[arg(long)]
        to: PathBuf,
        /// Everything published, not only what is new since the last export.
        #[arg(long)]
        full: bool,
        #[arg(long, value_enum, default_value_t = CompressionArg::Zstd)]
        compression: CompressionArg,
        /// Split into volumes of at most this size (e.g. 4G, 700M; K, M, G,
        /// T are powers of 1024).
        #[arg(long, value_parser = parse_size)]
        max_volume_size: Option<u64>,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
    /// Look at bundles.
    Bundle {
        #[command(subcommand)]
        command: BundleCommand,
    },
    /// Re-check the tree at rest, offline: every published file's h1:
    /// against the state, every lookup of the offline checksum database
    /// against its pinned signed head. Exit 1 on any difference.
    Verify {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// Move each altered file of a published version aside (to
        /// `.gomirror-moved/` in the tree); the next sync restores it from
        /// upstream, re-verified against the hashes recorded at publish.
        #[arg(long)]
        repair: bool,
    },
    /// Apply a bundle from `gomirror export` to this (offline) mirror:
    /// verified against its signature, the chain, the checksum database and
    /// the zip rules before anything becomes visible.
    Import {
        /// The bundle file, or the first volume (`.000`) of a split bundle.
        bundle: PathBuf,
        /// No progress bar, even on a terminal.
        #[arg(long)]
        no_progress: bool,
    },
}

/// `--upstream` wins over `GOMIRROR_UPSTREAM`; errors name whichever was used.
pub fn upstream_override(flag: Option<String>) -> Option<Override> {
    let (value, source) = match flag {
        Some(v) => (v, "--upstream"),
        None => (
            std::env::var("GOMIRROR_UPSTREAM").ok()?,
            "GOMIRROR_UPSTREAM",
        ),
    };
    Some(Override {
        value,
        source: source.to_owned(),
    })
}

/// `K`, `M`, `G`, `T` (powers of 1024, optional `B`/`iB`) or plain bytes.
fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let t = t
        .strip_suffix("iB")
        .or_else(|| t.strip_suffix('B'))
        .unwrap_or(t);
    let (digits, shift) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let shift = match c.to_ascii_uppercase() {
                'K' => 10,
                'M' => 20,
                'G' => 30,
                'T' => 40,
                _ => return Err(format!("{text:?}: unknown unit {c:?} (K, M, G, T)")),
            };
            (&t[..i], shift)
        }
        _ => (t, 0),
    };
    let n: u64 = digits
        .trim()
        .parse()
        .map_err(|_| format!("{text:?}: not a size like 4G or 700M"))?;
    match n.checked_mul(1 << shift) {
        Some(0) | None => Err(format!("{text:?}: must be between 1 byte and 16 EiB")),
        Some(v) => Ok(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_size_table() {
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("1", Ok(1)),
            ("4096", Ok(4096)),
            ("1K", Ok(1 << 10)),
            ("700M", Ok(700 << 20)),
            ("4G", Ok(4 << 30)),
            ("4g", Ok(4 << 30)),
            ("4GB", Ok(4 << 30)),
            ("4GiB", Ok(4 << 30)),
            (" 2T ", Ok(2 << 40)),
            (
                "16777216T",
                Err("\"16777216T\": must be between 1 byte and 16 EiB"),
            ),
            ("0", Err("\"0\": must be between 1 byte and 16 EiB")),
            ("4X", Err("\"4X\": unknown unit 'X' (K, M, G, T)")),
            ("G", Err("\"G\": not a size like 4G or 700M")),
            ("-1", Err("\"-1\": not a size like 4G or 700M")),
            ("", Err("\"\": not a size like 4G or 700M")),
        ];
        for (text, want) in cases {
            assert_eq!(parse_size(text), want.map_err(str::to_owned), "{text:?}");
        }
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
