//! gomirror keeps a static GOPROXY tree warm.
//!
//! The data path, one module per stage:
//! `config` → `plan` (watchlist, index feed) → `fetch` → `verify` (zip rules, `h1:`, checksum database) → `publish` → `state`.
//! `sync` is the only module that knows the order of the stages; stages never call each other.
//! Every way of publishing — a sync batch, an import — ends in `commit`, the only module that
//! knows the commit order (files, lists, checksum-database head, state).
//! Around it: `daemon` runs `sync` on a cron schedule, `metrics` reports state, tree and the
//! last run in Prometheus' text format, and `serve` the downstream index feed (`/index`)
//! another site follows. `clients` reads the web server's access log (what clients used
//! and missed) into `state`. `error` is how every error chain is shown.

pub mod audit;
pub mod bundle;
pub mod clients;
pub mod commit;
pub mod config;
pub mod daemon;
pub mod error;
pub mod fetch;
pub mod files;
pub mod lock;
pub mod metrics;
pub mod module;
pub mod plan;
pub mod project;
pub mod publish;
pub mod serve;
pub mod state;
pub mod sync;
pub mod verify;
