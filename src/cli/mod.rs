//! The binary's side of gomirror, one module per job (STYLE.md §8; ripgrep
//! `messages.rs`, uv's printer): `args` (clap), `logging` (tracing setup),
//! `signals` (SIGINT/SIGTERM/SIGHUP into tokens), `progress` (bars),
//! `output` and `report` (what goes to stdout and stderr), and the
//! subcommands by what they work on: `sync` (sync, daemon), `state`
//! (status, verify, retry), `bundle` (keygen, export, inspect, import),
//! `closure` (what a project needs), `clients` (what the access log says), `prune`
//! (retention).
//! The library never prints; this side never decides what a run does.

pub mod args;
pub mod bundle;
pub mod clients;
pub mod closure;
pub mod logging;
pub mod output;
pub mod progress;
pub mod prune;
pub mod report;
pub mod signals;
pub mod state;
pub mod sync;
