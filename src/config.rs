//! mirror.toml → validated [`Config`], in two layers (like ripgrep
//! `flags/lowargs.rs` → `flags/hiargs.rs`): [`File`] is the serde copy of
//! the TOML, unknown keys refused; [`Config`] holds checked, typed values.
//!
//! Every error names the file, the line, the key and why, e.g.
//! `mirror.toml:14: [fetch] concurrency: must be at least 1, got 0`.
//! toml parses once, keeping spans; serde_path_to_error says which key a
//! deserialize error belongs to, and the same spans give the line of a
//! key that fails validation.
//!
//! Decisions:
//! - Every key has a default, so a file with only `[[watch]]` entries
//!   works: upstream `https://proxy.golang.org`, tree `tree`, database
//!   `state/gomirror.db`. Relative paths resolve against the config file's
//!   directory.
//! - Upstreams are GOPROXY bases tried in order, the next only on 404/410
//!   (PROTOCOL.md, GOPROXY). `direct` and `off` are refused: gomirror
//!   fetches only from proxies. An array entry `"a | b"` is GOPROXY's
//!   `a|b`: b is tried after any error of a (See: #13); `--upstream` takes
//!   Go's own `a,b|c`.
//! - A module may appear in one `[[watch]]` entry only; a second one is an
//!   error naming the first, rather than a silent merge.
//! - `versions` defaults to `latest`. Selectors: [`crate::plan::watchlist`].
//! - `[feed]` is off unless `enabled = true`. With no `[[feed.rule]]` the
//!   rules are `[{ watched = true }]`. Rules: [`crate::plan::rules`]; a
//!   malformed glob is refused here, where Go would silently never match it.

use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::time::Duration;

use toml::de::{DeTable, DeValue};
use toml::Spanned;

pub use crate::fetch::FetchSettings;
use crate::fetch::Upstream;
use crate::module::{ModulePath, PrefixPatterns};
use crate::plan::feed::{parse_timestamp, MAX_PAGE};
use crate::plan::rules::{check_globs, PseudoPolicy, Rule, Rules};
pub use crate::plan::toolchain::Platform;
use crate::plan::watchlist::Selector;
use crate::verify::sumdb::note::Verifier;

pub use file::File;

/// The serde copy of mirror.toml: every key optional, unknown keys refused.
pub mod file {
    use serde::Deserialize;

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        #[serde(default)]
        pub upstream: Upstream,
        #[serde(default)]
        pub tree: Tree,
        #[serde(default)]
        pub state: State,
        #[serde(default)]
        pub fetch: Fetch,
        #[serde(default)]
        pub watch: Vec<Watch>,
        #[serde(default)]
        pub project: Vec<Project>,
        #[serde(default)]
        pub sumdb: Sumdb,
        #[serde(default)]
        pub import: Import,
        #[serde(default)]
        pub feed: Feed,
        #[serde(default)]
        pub daemon: Daemon,
        #[serde(default)]
        pub metrics: Metrics,
        #[serde(default)]
        pub export: Export,
        #[serde(default)]
        pub toolchain: Toolchain,
        #[serde(default)]
        pub clients: Clients,
        #[serde(default)]
        pub serve: Serve,
        #[serde(default)]
        pub retention: Retention,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Serve {
        pub index_listen: Option<String>,
    }

    /// `[retention]`. See: #15
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Retention {
        pub keep_unused_for: Option<String>,
        pub keep_latest: Option<i64>,
        pub max_tree_size: Option<String>,
        pub list_max_age: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Export {
        pub key: Option<String>,
        pub source: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Upstream {
        pub proxies: Option<Vec<String>>,
        pub private: Option<Vec<String>>,
        pub private_proxies: Option<Vec<String>>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Tree {
        pub dir: Option<String>,
        pub url: Option<String>,
        pub endpoint: Option<String>,
        pub region: Option<String>,
        pub staging: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct State {
        pub database: Option<String>,
    }

    /// Integers are read as `i64` so that bounds, not serde, report `0` or `-1`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Fetch {
        pub concurrency: Option<i64>,
        pub connect_timeout: Option<String>,
        pub read_timeout: Option<String>,
        pub header_timeout: Option<String>,
        pub min_bytes_per_second: Option<i64>,
        pub throughput_window: Option<String>,
        pub max_attempts: Option<i64>,
        pub backoff_base: Option<String>,
        pub backoff_max: Option<String>,
        pub user_agent: Option<String>,
        pub requests_per_second: Option<i64>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Feed {
        pub enabled: Option<bool>,
        pub index: Option<String>,
        pub proxy: Option<String>,
        pub start: Option<String>,
        pub page_size: Option<i64>,
        pub max_pages: Option<i64>,
        pub max_attempts: Option<i64>,
        pub retry_base: Option<String>,
        pub retry_max: Option<String>,
        pub refresh_interval: Option<String>,
        pub pseudo_versions: Option<String>,
        #[serde(default)]
        pub rule: Vec<FeedRule>,
    }

    /// Exactly one key per rule; checked in `Config::parse`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct FeedRule {
        pub include: Option<String>,
        pub exclude: Option<String>,
        pub watched: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Import {
        pub trusted: Option<Vec<String>>,
        #[serde(default)]
        pub source: Vec<ImportSource>,
    }

    /// `[[import.source]]`: the keys trusted for one source's bundles.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ImportSource {
        pub name: String,
        pub keys: Vec<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Sumdb {
        pub key: Option<String>,
        pub url: Option<String>,
        pub private: Option<Vec<String>>,
        pub offline_copy: Option<bool>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Daemon {
        pub schedule: Option<String>,
        pub shutdown_grace: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Metrics {
        pub textfile: Option<String>,
        pub listen: Option<String>,
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Watch {
        pub module: String,
        pub versions: Option<Versions>,
    }

    /// `versions = "latest"` (a selector) or `versions = ["v1.2.3", …]` (exact versions).
    #[derive(Debug, Deserialize)]
    #[serde(untagged)]
    pub enum Versions {
        Selector(String),
        Exact(Vec<String>),
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Project {
        pub path: String,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Clients {
        pub access_log: Option<String>,
        pub learn: Option<bool>,
        pub retry_not_found: Option<String>,
        pub max_learned: Option<i64>,
        #[serde(default)]
        pub rule: Vec<ClientRule>,
    }

    /// Exactly one key per rule; checked in `Config::parse`.
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct ClientRule {
        pub include: Option<String>,
        pub exclude: Option<String>,
    }

    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Toolchain {
        pub platforms: Option<Vec<String>>,
        pub versions: Option<String>,
    }
}

/// A checked configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    /// GOPROXY bases in order, never empty; schemes `https`, `http` or
    /// `file` (absolute). Each path ends with `/`, so `Url::join` with an
    /// escaped `module/@v/...` path appends to it.
    pub upstreams: Vec<Upstream>,
    /// `[upstream] private` and `private_proxies` (GONOPROXY).
    pub private: PrivateUpstream,
    /// The served tree's directory; for a bucket tree, its local staging
    /// directory (`[tree] staging`), where downloads wait to be uploaded.
    pub tree_dir: PathBuf,
    /// `[tree] url`: the tree is objects in this bucket (see: #17).
    pub tree_bucket: Option<crate::publish::bucket::BucketSettings>,
    pub database: PathBuf,
    pub fetch: FetchSettings,
    /// Several entries may name one module: the run takes the union.
    pub watch: Vec<WatchEntry>,
    /// `[[project]] path`s, absolute; a path may be a glob (`*`, `?`, `[…]`),
    /// expanded when a sync reads the projects.
    pub projects: Vec<PathBuf>,
    pub feed: FeedSettings,
    /// `None`: verification is off (`key = "off"`, GOSUMDB=off).
    pub sumdb: Option<SumdbSettings>,
    /// `[import] trusted`: the keys whose bundles `gomirror import`
    /// accepts, each for the source of its own name. Empty: none.
    pub import_trusted: Vec<Verifier>,
    /// `[[import.source]]`: sources bound to the keys trusted for them;
    /// such a source is trusted from these keys only. Names are unique.
    pub import_sources: Vec<ImportSource>,
    pub daemon: DaemonSettings,
    pub metrics: MetricsSettings,
    /// `None`: no `[export] key`, so `gomirror export` cannot sign.
    pub export: Option<ExportSettings>,
    pub toolchain: ToolchainSettings,
    pub clients: ClientSettings,
    pub serve: ServeSettings,
    pub retention: RetentionSettings,
}

/// `[retention]`: what `gomirror prune` may remove (see: #15 and
/// [`crate::plan::retention`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetentionSettings {
    /// Versions no client used for this long may go; `None`: no age rule.
    pub keep_unused_for: Option<Duration>,
    /// The newest this many listed versions of every module always stay.
    pub keep_latest: usize,
    /// Least recently used versions go until the tree's versions take at
    /// most this many bytes; `None`: no size rule.
    pub max_tree_size: Option<u64>,
    /// How long a client or cache may keep `@v/list` and `@latest`: the
    /// shipped nginx block's `Cache-Control: max-age` for them. A prune
    /// waits longer than this between rewriting the lists and deleting.
    pub list_max_age: Duration,
}

impl RetentionSettings {
    /// Whether any rule may remove a version.
    pub fn is_set(&self) -> bool {
        self.keep_unused_for.is_some() || self.max_tree_size.is_some()
    }
}

impl Default for RetentionSettings {
    fn default() -> RetentionSettings {
        RetentionSettings {
            keep_unused_for: None,
            keep_latest: KEEP_LATEST.0 as usize,
            max_tree_size: None,
            list_max_age: LIST_MAX_AGE,
        }
    }
}

/// `[clients]`: what the web server's access log says clients did. See: #14
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientSettings {
    /// nginx's access log of the tree (combined or the shipped JSON format);
    /// `None`: clients are not read.
    pub access_log: Option<PathBuf>,
    /// Misses of valid module paths and versions become planned work.
    pub learn: bool,
    /// `[[clients.rule]]`, first match deciding; a miss no rule matches is
    /// not learned. No rules: `[{ include = "*" }]`. Only `Include` and
    /// `Exclude` occur.
    pub rules: Vec<Rule>,
    /// A listing upstream answered 404 or 410 for is not asked again for this long.
    pub retry_not_found: Duration,
    /// Learned work planned per sync at most (versions plus listings); the
    /// rest waits for the next sync.
    pub max_learned: usize,
}

/// `[serve]`: what `gomirror daemon` serves besides the tree (see: #16).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServeSettings {
    /// Where `GET /index` (the downstream index feed) is served; the shipped
    /// nginx block proxies `/index` to `127.0.0.1:9151`.
    pub index_listen: Option<std::net::SocketAddr>,
}

/// `[toolchain]`: which Go toolchains (`golang.org/toolchain`) are mirrored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ToolchainSettings {
    /// Every toolchain is mirrored for each of these; empty: no toolchains at all.
    pub platforms: Vec<Platform>,
    /// `versions = "latest N"`: also the newest patch of the N newest Go minors.
    pub latest: Option<usize>,
}

impl Default for ToolchainSettings {
    fn default() -> ToolchainSettings {
        ToolchainSettings {
            platforms: vec![Platform::parse(DEFAULT_PLATFORM).expect("a known platform")],
            latest: None,
        }
    }
}

const DEFAULT_PLATFORM: &str = "linux/amd64";

/// `[[import.source]]`: whose keys may sign bundles of source `name`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImportSource {
    pub name: String,
    /// Never empty.
    pub keys: Vec<Verifier>,
}

/// `[export]`: how `gomirror export` signs and names its bundles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportSettings {
    /// The private key file (`PRIVATE+KEY+…`, from `gomirror keygen`). Read
    /// when exporting, not here: the config is read by commands that must
    /// not need the secret.
    pub key: PathBuf,
    /// The mirror's id in bundles; `None`: the signing key's name.
    pub source: Option<String>,
}

/// `[upstream] private` (GONOPROXY): modules never requested from the
/// public `proxies` — not their go.mod, list, zip, nor a checksum database
/// lookup. They are fetched from `private_proxies` if any, else not at all.
/// `[sumdb] private` (GONOSUMDB) is the other half: fetched from the public
/// proxies, never looked up. A path matching here is private in both senses.
// See: #12
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PrivateUpstream {
    pub patterns: PrefixPatterns,
    /// GOPROXY bases for private modules, in order; may be empty.
    pub proxies: Vec<Upstream>,
}

impl PrivateUpstream {
    /// Is `path` never to be asked of the public upstreams?
    pub fn is_private(&self, path: &str) -> bool {
        self.patterns.matches(path)
    }
}

/// The checksum database every download is verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SumdbSettings {
    /// The database's key, from `<name>+<hash>+<key>`.
    pub verifier: Verifier,
    /// The key's name; a host name ([`crate::publish::layout::check_sumdb_name`]).
    pub name: String,
    /// Where to reach it; `None`: as the go command does, through the first
    /// upstream proxy that serves `sumdb/<name>/supported`, else `https://<name>`.
    pub url: Option<Upstream>,
    /// GONOSUMDB/GOPRIVATE globs.
    pub private: PrefixPatterns,
    /// Publish `sumdb/<name>/…` in the tree.
    pub offline_copy: bool,
}

impl SumdbSettings {
    /// Modules the database is never asked about (GONOSUMDB semantics).
    pub fn is_private(&self, path: &str) -> bool {
        self.private.matches(path)
    }
}

/// `[daemon]`: how `gomirror daemon` schedules runs and stops.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DaemonSettings {
    /// When runs start: a cron expression with a seconds field, in UTC.
    pub schedule: cron::Schedule,
    /// After SIGTERM/SIGINT, how long a run in flight may take to finish
    /// before it is abandoned (its versions stay pending for the next run).
    pub shutdown_grace: Duration,
}

/// `[metrics]`: where Prometheus metrics go; both optional.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MetricsSettings {
    /// A `.prom` file for node_exporter's textfile collector, rewritten
    /// atomically after every run.
    pub textfile: Option<PathBuf>,
    /// Where `gomirror daemon` serves `GET /metrics`.
    pub listen: Option<std::net::SocketAddr>,
}

/// `[feed]`: following the index feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FeedSettings {
    /// Off unless `enabled = true`; then every sync reads the feed.
    pub enabled: bool,
    /// The index base, http(s); requests go to `<index>/index`.
    pub index: Upstream,
    /// Where versions planned from the feed are fetched.
    pub proxy: Upstream,
    /// Where a database that never followed the feed starts.
    pub start: FeedStart,
    /// Entries per page, 1..=2000.
    pub page_size: usize,
    /// Pages per run, at least 1; the rest waits for the next run.
    pub max_pages: usize,
    /// Runs that may try a feed version before it is `failed`.
    pub max_attempts: u32,
    /// Wait before the second try of a failed feed version; doubles per try.
    pub retry_base: Duration,
    /// The longest such wait; at least `retry_base`.
    pub retry_max: Duration,
    /// A watched module's `@v/list` is read again after this long, to catch
    /// what the feed missed (it has stalled before).
    pub refresh_interval: Duration,
    pub rules: Rules,
}

/// Where a database that never followed the feed starts reading it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeedStart {
    /// At the first run's time: only what is published from then on.
    Now,
    /// At this Timestamp (inclusive).
    At(time::OffsetDateTime),
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WatchEntry {
    pub module: ModulePath,
    pub selector: Selector,
}

/// Values from outside the file that replace keys in it.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// Replaces `[upstream] proxies`: a comma-separated list.
    pub upstream: Option<Override>,
}

#[derive(Clone, Debug)]
pub struct Override {
    pub value: String,
    /// Named in errors: `--upstream` or `GOMIRROR_UPSTREAM`.
    pub source: String,
}

/// A configuration problem: `file:line: key: reason`.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: PathBuf,
    /// 1-based; `None` when the problem has no place in the file (an
    /// unreadable file, an override).
    pub line: Option<usize>,
    /// As written in errors: `[fetch] concurrency`, `[[watch]] #2 module`,
    /// `--upstream`; empty for syntax errors.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.reason)
    }
}

pub const DEFAULT_PROXY: &str = "https://proxy.golang.org";
pub const DEFAULT_TREE_DIR: &str = "tree";
pub const DEFAULT_DATABASE: &str = "state/gomirror.db";
/// sum.golang.org's key, as the go command knows it (cmd/go/internal/modfetch/key.go).
pub const DEFAULT_SUMDB_KEY: &str =
    "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
pub const DEFAULT_SCHEDULE: &str = "0 */10 * * * *";
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
// `[fetch]` bounds; its defaults are `FetchSettings::default()`.
const CONCURRENCY: RangeInclusive<i64> = 1..=1024;
const MAX_ATTEMPTS: RangeInclusive<i64> = 1..=100;
/// Longest duration accepted, so that `Instant::now() + d` cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Longest wait between tries of a feed version, or between listings.
const MAX_FEED_DURATION: Duration = Duration::from_secs(30 * 24 * 60 * 60);
const REQUESTS_PER_SECOND: RangeInclusive<i64> = 1..=100_000;
/// `[fetch] min_bytes_per_second`: 0 turns the rule off; at most 1 GB/s.
const MIN_BYTES_PER_SECOND: RangeInclusive<i64> = 0..=1_000_000_000;
pub const DEFAULT_INDEX: &str = "https://index.golang.org";
/// What the Go team asks bulk fetchers driven by the feed to use (PROTOCOL.md).
pub const DEFAULT_FEED_PROXY: &str = "https://proxy.golang.org/cached-only";
const PAGE_SIZE: (i64, RangeInclusive<i64>) = (MAX_PAGE as i64, 1..=MAX_PAGE as i64);
const MAX_PAGES: (i64, RangeInclusive<i64>) = (100, 1..=1_000_000);
const FEED_MAX_ATTEMPTS: (i64, RangeInclusive<i64>) = (10, 1..=1000);
const RETRY_BASE: Duration = Duration::from_secs(10 * 60);
const RETRY_MAX: Duration = Duration::from_secs(24 * 60 * 60);
const REFRESH_INTERVAL: Duration = Duration::from_secs(24 * 60 * 60);
const RETRY_NOT_FOUND: Duration = Duration::from_secs(24 * 60 * 60);
const MAX_LEARNED: (i64, RangeInclusive<i64>) = (100, 1..=100_000);
const KEEP_LATEST: (i64, RangeInclusive<i64>) = (3, 0..=1_000_000);
/// The shipped nginx block's max-age for `@v/list` and `@latest` (nginx/gomirror.conf).
const LIST_MAX_AGE: Duration = Duration::from_secs(60);

impl Config {
    /// The served tree's directory, unless the tree is in object storage.
    pub fn local_tree_dir(&self) -> Option<&Path> {
        self.tree_bucket
            .is_none()
            .then_some(self.tree_dir.as_path())
    }

    /// Every key `[import]` trusts, for one source or another.
    pub fn import_keys(&self) -> Vec<&Verifier> {
        let bound = self.import_sources.iter().flat_map(|s| &s.keys);
        self.import_trusted.iter().chain(bound).collect()
    }

    /// The keys trusted to sign bundles of `source`: those of its
    /// `[[import.source]]`, or else the `[import] trusted` keys named
    /// `source` (an export names its bundles after its key by default).
    /// A key trusted for one source cannot sign into another's chain.
    // See: #13
    pub fn import_keys_for(&self, source: &str) -> Vec<&Verifier> {
        match self.import_sources.iter().find(|s| s.name == source) {
            Some(bound) => bound.keys.iter().collect(),
            None => self
                .import_trusted
                .iter()
                .filter(|k| k.name() == source)
                .collect(),
        }
    }

    /// Reads and checks the file at `path`, then applies `overrides`.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        // std::fs, not fs-err: the ConfigError already names the path.
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_owned(),
            line: None,
            key: String::new(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path, overrides)
    }

    /// Checks `text`, the contents of `path`; relative paths in it resolve
    /// against `path`'s directory.
    pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let src = Source::parse(text, path)?;
        let file = src.deserialize()?;
        let base = path.parent().unwrap_or(Path::new(""));
        let database = src.dir(
            &["state", "database"],
            &file.state.database,
            DEFAULT_DATABASE,
            base,
        )?;
        let tree_bucket = src.tree_bucket(&file.tree)?;
        let tree_dir = match &tree_bucket {
            None => {
                let dir = src.dir(&["tree", "dir"], &file.tree.dir, DEFAULT_TREE_DIR, base)?;
                src.check_outside_tree(&["state", "database"], &database, &dir)?;
                dir
            }
            Some(_) => {
                // Beside the database by default: both are this host's own.
                let beside = database.parent().unwrap_or(base).join("staging");
                let beside = beside.to_string_lossy();
                src.dir(&["tree", "staging"], &file.tree.staging, &beside, base)?
            }
        };
        let private = src.private_upstream(&file.upstream)?;
        let mut sumdb = src.sumdb(&file.sumdb)?;
        if let Some(s) = &mut sumdb {
            // A module never asked of the public proxies is never named to
            // the public checksum database either: no private name leaves.
            s.private.extend(&private.patterns);
        }
        Ok(Config {
            upstreams: src.upstreams(&file.upstream, overrides)?,
            private,
            tree_dir,
            tree_bucket,
            database,
            fetch: src.fetch(&file.fetch)?,
            watch: src.watch(&file.watch)?,
            projects: src.projects(&file.project, base)?,
            sumdb,
            import_trusted: src.import_trusted(&file.import)?,
            import_sources: src.import_sources(&file.import)?,
            feed: src.feed(&file.feed)?,
            daemon: src.daemon(&file.daemon)?,
            metrics: src.metrics(&file.metrics, base)?,
            export: src.export(&file.export, base)?,
            toolchain: src.toolchain(&file.toolchain)?,
            clients: src.clients(&file.clients, base)?,
            serve: src.serve(&file.serve)?,
            retention: src.retention(&file.retention)?,
        })
    }
}

/// A size such as `2T`, `500G`, `1.5T` or `1000000`: a number and an optional
/// binary unit (K, M, G, T, P; `KiB`, `KB` and `K` all mean 1024), as `du -h`
/// and nginx write them.
fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 0,
        "K" | "KB" | "KIB" => 10,
        "M" | "MB" | "MIB" => 20,
        "G" | "GB" | "GIB" => 30,
        "T" | "TB" | "TIB" => 40,
        "P" | "PB" | "PIB" => 50,
        _ => return Err(format!("invalid size {s:?}: unknown unit {unit:?}")),
    };
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid size {s:?}: want a number and a unit, like \"2T\""))?;
    let bytes = n * (1u64 << shift) as f64;
    if !(bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("must be at least 1 byte, got {s:?}"));
    }
    Ok(bytes as u64)
}

/// One step of a key path: a table key or an array index.
#[derive(Clone, Debug)]
enum Seg {
    Key(String),
    Index(usize),
}

impl From<&str> for Seg {
    fn from(key: &str) -> Seg {
        Seg::Key(key.to_owned())
    }
}

impl From<usize> for Seg {
    fn from(index: usize) -> Seg {
        Seg::Index(index)
    }
}

/// The file being checked, with the spans of its keys and values.
struct Source<'a> {
    file: &'a Path,
    text: &'a str,
    root: Spanned<DeTable<'a>>,
}

impl<'a> Source<'a> {
    fn parse(text: &'a str, file: &'a Path) -> Result<Source<'a>, ConfigError> {
        let root = DeTable::parse(text).map_err(|e| ConfigError {
            file: file.to_owned(),
            line: e.span().map(|s| line_of(text, s.start)),
            key: String::new(),
            reason: e.message().to_owned(),
        })?;
        Ok(Source { file, text, root })
    }

    fn deserialize(&self) -> Result<File, ConfigError> {
        let de = toml::Deserializer::from(self.root.clone());
        serde_path_to_error::deserialize(de).map_err(|e| {
            let at: Vec<Seg> = e
                .path()
                .iter()
                .filter_map(|seg| match seg {
                    serde_path_to_error::Segment::Seq { index } => Some(Seg::Index(*index)),
                    serde_path_to_error::Segment::Map { key } => Some(Seg::Key(key.clone())),
                    _ => None,
                })
                .collect();
            ConfigError {
                file: self.file.to_owned(),
                line: e.inner().span().map(|s| line_of(self.text, s.start)),
                key: render_key(&at),
                reason: humanize(e.inner().message()),
            }
        })
    }

    /// An error at a key: its line is that of the deepest part of `at`
    /// present in the file (the value if set, else the nearest table).
    fn error(&self, at: &[Seg], reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.file.to_owned(),
            line: self.line(at),
            key: render_key(at),
            reason: reason.into(),
        }
    }

    fn line(&self, at: &[Seg]) -> Option<usize> {
        let [Seg::Key(top), rest @ ..] = at else {
            return None;
        };
        let mut node: &Spanned<DeValue> = self.root.get_ref().get(top.as_str())?;
        for seg in rest {
            let next = match seg {
                Seg::Key(k) => node.get_ref().get(k.as_str()),
                Seg::Index(i) => node.get_ref().get(*i),
            };
            let Some(next) = next else { break };
            node = next;
        }
        Some(line_of(self.text, node.span().start))
    }

    /// `[upstream] private` globs and `private_proxies`.
    fn private_upstream(&self, f: &file::Upstream) -> Result<PrivateUpstream, ConfigError> {
        let mut patterns = Vec::new();
        for (i, glob) in f.private.iter().flatten().enumerate() {
            let at = ["upstream".into(), "private".into(), i.into()];
            if glob.trim().is_empty() || glob.contains(',') {
                let reason = format!("{glob:?}: one non-empty glob per entry, without commas");
                return Err(self.error(&at, reason));
            }
            patterns.push(glob.trim().to_owned());
        }
        let mut proxies = Vec::new();
        for (i, entry) in f.private_proxies.iter().flatten().enumerate() {
            let at = ["upstream".into(), "private_proxies".into(), i.into()];
            push_proxies(&mut proxies, [(entry.trim(), ',')].into_iter())
                .map_err(|reason| self.error(&at, reason))?;
        }
        if patterns.is_empty() && !proxies.is_empty() {
            let at = ["upstream".into(), "private_proxies".into()];
            return Err(self.error(&at, "set [upstream] private to say which modules use them"));
        }
        Ok(PrivateUpstream {
            patterns: PrefixPatterns::new(patterns),
            proxies,
        })
    }

    fn upstreams(
        &self,
        upstream: &file::Upstream,
        overrides: &Overrides,
    ) -> Result<Vec<Upstream>, ConfigError> {
        if let Some(o) = &overrides.upstream {
            return override_upstreams(o).map_err(|reason| ConfigError {
                file: self.file.to_owned(),
                line: None,
                key: o.source.clone(),
                reason,
            });
        }
        let Some(proxies) = &upstream.proxies else {
            return Ok(vec![
                check_proxy(DEFAULT_PROXY).expect("the default proxy is valid")
            ]);
        };
        if proxies.is_empty() {
            let at = ["upstream".into(), "proxies".into()];
            return Err(self.error(&at, "must list at least one proxy URL"));
        }
        let mut urls = Vec::new();
        for (i, entry) in proxies.iter().enumerate() {
            let at = ["upstream".into(), "proxies".into(), i.into()];
            if entry.contains(',') {
                let reason = format!("{entry:?}: list each proxy as its own array entry");
                return Err(self.error(&at, reason));
            }
            // See: #13: `"a | b"` is GOPROXY's `a|b`: b after any error of a.
            let parts: Vec<(&str, char)> = entry.split('|').map(|e| (e.trim(), '|')).collect();
            push_proxies(&mut urls, parts.into_iter()).map_err(|reason| self.error(&at, reason))?;
        }
        Ok(urls)
    }

    fn dir(
        &self,
        at: &[&str],
        value: &Option<String>,
        default: &str,
        base: &Path,
    ) -> Result<PathBuf, ConfigError> {
        let value = value.as_deref().unwrap_or(default);
        let at: Vec<Seg> = at.iter().map(|&k| k.into()).collect();
        if value.is_empty() {
            return Err(self.error(&at, "must not be empty"));
        }
        self.path(&at, value, base)
    }

    /// A path from the file: `~` and `~/…` expanded with `$HOME` as a shell would (else
    /// `~/x` became a directory named `~`), relative paths resolved against `base`.
    /// See: #13
    fn path(&self, at: &[Seg], value: &str, base: &Path) -> Result<PathBuf, ConfigError> {
        let home = std::env::var_os("HOME");
        let expanded = expand_home(value, home.as_deref().map(Path::new))
            .map_err(|reason| self.error(at, reason))?;
        Ok(base.join(expanded))
    }

    /// The web server serves the whole tree, so a file inside it (the state database, with
    /// every run's errors and the upstream list) would be served to anyone.
    /// See: #13
    fn check_outside_tree(
        &self,
        at: &[&str],
        path: &Path,
        tree_dir: &Path,
    ) -> Result<(), ConfigError> {
        if !is_inside(path, tree_dir) {
            return Ok(());
        }
        let at: Vec<Seg> = at.iter().map(|&k| k.into()).collect();
        let reason = format!(
            "{} is inside [tree] dir {}, which the web server serves to clients; \
             keep it outside the tree",
            path.display(),
            tree_dir.display()
        );
        Err(self.error(&at, reason))
    }

    /// `[tree] url` and what goes with it: `None` for a local tree, where
    /// none of `endpoint`, `region` and `staging` may be set. See: #17
    fn tree_bucket(
        &self,
        t: &file::Tree,
    ) -> Result<Option<crate::publish::bucket::BucketSettings>, ConfigError> {
        let Some(url) = &t.url else {
            for (key, set) in [
                ("endpoint", t.endpoint.is_some()),
                ("region", t.region.is_some()),
                ("staging", t.staging.is_some()),
            ] {
                if set {
                    return Err(self.error(
                        &["tree".into(), key.into()],
                        "only for a tree in object storage ([tree] url)",
                    ));
                }
            }
            return Ok(None);
        };
        let at: [Seg; 2] = ["tree".into(), "url".into()];
        if t.dir.is_some() {
            return Err(self.error(
                &at,
                "set either [tree] dir (a local tree) or [tree] url (object storage), not both",
            ));
        }
        let (bucket, prefix) = crate::publish::bucket::parse_url(url)
            .map_err(|reason| self.error(&at, format!("{url:?}: {reason}")))?;
        if let Some(endpoint) = &t.endpoint {
            let parsed = url::Url::parse(endpoint).ok();
            if !parsed.is_some_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
                return Err(self.error(
                    &["tree".into(), "endpoint".into()],
                    format!("{endpoint:?}: must be an http:// or https:// URL"),
                ));
            }
        }
        Ok(Some(crate::publish::bucket::BucketSettings {
            url: url.clone(),
            bucket,
            prefix,
            endpoint: t.endpoint.clone(),
            region: t.region.clone(),
        }))
    }

    /// `[fetch]`; a key not set keeps its value of [`FetchSettings::default`].
    fn fetch(&self, f: &file::Fetch) -> Result<FetchSettings, ConfigError> {
        let d = FetchSettings::default();
        let backoff_base = self.duration("backoff_base", &f.backoff_base, d.backoff_base)?;
        let backoff_max = self.duration("backoff_max", &f.backoff_max, d.backoff_max)?;
        if backoff_base > backoff_max {
            let key = if f.backoff_base.is_some() {
                "backoff_base"
            } else {
                "backoff_max"
            };
            return Err(self.error(
                &["fetch".into(), key.into()],
                format!(
                    "backoff_base ({}) must not exceed backoff_max ({})",
                    humantime::format_duration(backoff_base),
                    humantime::format_duration(backoff_max)
                ),
            ));
        }
        let concurrency = (d.concurrency as i64, CONCURRENCY);
        let max_attempts = (i64::from(d.max_attempts), MAX_ATTEMPTS);
        Ok(FetchSettings {
            concurrency: self.int("concurrency", f.concurrency, concurrency)? as usize,
            requests_per_second: f
                .requests_per_second
                .map(|n| self.int("requests_per_second", Some(n), (1, REQUESTS_PER_SECOND)))
                .transpose()?
                .map(|n| n as u32),
            connect_timeout: self.duration(
                "connect_timeout",
                &f.connect_timeout,
                d.connect_timeout,
            )?,
            read_timeout: self.duration("read_timeout", &f.read_timeout, d.read_timeout)?,
            header_timeout: self.duration("header_timeout", &f.header_timeout, d.header_timeout)?,
            min_bytes_per_second: self.int(
                "min_bytes_per_second",
                f.min_bytes_per_second,
                (d.min_bytes_per_second as i64, MIN_BYTES_PER_SECOND),
            )? as u64,
            throughput_window: self.duration(
                "throughput_window",
                &f.throughput_window,
                d.throughput_window,
            )?,
            max_attempts: self.int("max_attempts", f.max_attempts, max_attempts)? as u32,
            backoff_base,
            backoff_max,
            user_agent: self.user_agent(&f.user_agent, d.user_agent)?,
        })
    }

    /// A `[fetch]` integer within `bounds`, which fit `u32`.
    fn int(
        &self,
        key: &str,
        value: Option<i64>,
        bounds: (i64, RangeInclusive<i64>),
    ) -> Result<i64, ConfigError> {
        self.int_in("fetch", key, value, bounds)
    }

    /// An integer of `[table]` within `bounds`, which fit `u32`.
    fn int_in(
        &self,
        table: &str,
        key: &str,
        value: Option<i64>,
        (default, bounds): (i64, RangeInclusive<i64>),
    ) -> Result<i64, ConfigError> {
        let v = value.unwrap_or(default);
        let reason = if v < *bounds.start() {
            format!("must be at least {}, got {v}", bounds.start())
        } else if v > *bounds.end() {
            format!("must be at most {}, got {v}", bounds.end())
        } else {
            return Ok(v);
        };
        Err(self.error(&[table.into(), key.into()], reason))
    }

    fn duration(
        &self,
        key: &str,
        value: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        self.duration_in("fetch", key, value, default, (MAX_DURATION, "24h"))
    }

    /// A duration of `[table]`, more than 0 and at most `max`.
    fn duration_in(
        &self,
        table: &str,
        key: &str,
        value: &Option<String>,
        default: Duration,
        (max, max_text): (Duration, &str),
    ) -> Result<Duration, ConfigError> {
        let Some(s) = value else { return Ok(default) };
        let reason = match humantime::parse_duration(s) {
            Err(e) => format!("invalid duration {s:?}: {e}"),
            Ok(d) if d.is_zero() => format!("must be greater than 0, got {s:?}"),
            Ok(d) if d > max => format!("must be at most {max_text}, got {s:?}"),
            Ok(d) => return Ok(d),
        };
        Err(self.error(&[table.into(), key.into()], reason))
    }

    fn user_agent(&self, value: &Option<String>, default: String) -> Result<String, ConfigError> {
        let Some(ua) = value else {
            return Ok(default);
        };
        // An HTTP header value: visible ASCII and inner spaces (RFC 9110 field-value).
        let reason = if ua.trim().is_empty() {
            "must not be empty"
        } else if ua.trim() != ua || !ua.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
            "must be printable ASCII without leading or trailing spaces"
        } else {
            return Ok(ua.clone());
        };
        Err(self.error(&["fetch".into(), "user_agent".into()], reason))
    }

    fn feed(&self, f: &file::Feed) -> Result<FeedSettings, ConfigError> {
        let at = |key: &str| ["feed".into(), Seg::from(key)];
        let int = |key, value, bounds| self.int_in("feed", key, value, bounds);
        let long = |key, value: &Option<String>, default| {
            self.duration_in("feed", key, value, default, (MAX_FEED_DURATION, "30 days"))
        };
        let retry_base = long("retry_base", &f.retry_base, RETRY_BASE)?;
        let retry_max = long("retry_max", &f.retry_max, RETRY_MAX)?;
        if retry_base > retry_max {
            let key = if f.retry_base.is_some() {
                "retry_base"
            } else {
                "retry_max"
            };
            let reason = format!(
                "retry_base ({}) must not exceed retry_max ({})",
                humantime::format_duration(retry_base),
                humantime::format_duration(retry_max)
            );
            return Err(self.error(&at(key), reason));
        }
        Ok(FeedSettings {
            enabled: f.enabled.unwrap_or(false),
            index: self.index_url(&f.index)?,
            proxy: check_proxy(f.proxy.as_deref().unwrap_or(DEFAULT_FEED_PROXY))
                .map_err(|reason| self.error(&at("proxy"), reason))?,
            start: self.feed_start(&f.start)?,
            page_size: int("page_size", f.page_size, PAGE_SIZE)? as usize,
            max_pages: int("max_pages", f.max_pages, MAX_PAGES)? as usize,
            max_attempts: int("max_attempts", f.max_attempts, FEED_MAX_ATTEMPTS)? as u32,
            retry_base,
            retry_max,
            refresh_interval: long("refresh_interval", &f.refresh_interval, REFRESH_INTERVAL)?,
            rules: Rules {
                rules: self.feed_rules(&f.rule)?,
                pseudo: self.pseudo_policy(&f.pseudo_versions)?,
            },
        })
    }

    fn index_url(&self, value: &Option<String>) -> Result<Upstream, ConfigError> {
        let s = value.as_deref().unwrap_or(DEFAULT_INDEX);
        let at = ["feed".into(), "index".into()];
        if !(s.starts_with("https://") || s.starts_with("http://")) {
            return Err(self.error(
                &at,
                format!("{s:?}: the index is an https:// or http:// URL"),
            ));
        }
        Upstream::parse(s).map_err(|e| self.error(&at, e.to_string()))
    }

    fn feed_start(&self, value: &Option<String>) -> Result<FeedStart, ConfigError> {
        match value.as_deref() {
            None | Some("now") => Ok(FeedStart::Now),
            Some(s) => parse_timestamp(s).map(FeedStart::At).map_err(|e| {
                let reason = format!(
                    "{e}; want \"now\" or an RFC 3339 time such as \"2024-01-01T00:00:00Z\""
                );
                self.error(&["feed".into(), "start".into()], reason)
            }),
        }
    }

    fn pseudo_policy(&self, value: &Option<String>) -> Result<PseudoPolicy, ConfigError> {
        match value.as_deref() {
            None | Some("watched") => Ok(PseudoPolicy::Watched),
            Some("skip") => Ok(PseudoPolicy::Skip),
            Some("all") => Ok(PseudoPolicy::All),
            Some(other) => Err(self.error(
                &["feed".into(), "pseudo_versions".into()],
                format!("expected \"watched\", \"skip\" or \"all\", got {other:?}"),
            )),
        }
    }

    /// `[[feed.rule]]`s; none means `[{ watched = true }]`.
    fn feed_rules(&self, rules: &[file::FeedRule]) -> Result<Vec<Rule>, ConfigError> {
        if rules.is_empty() {
            return Ok(vec![Rule::Watched]);
        }
        let mut out = Vec::with_capacity(rules.len());
        for (i, r) in rules.iter().enumerate() {
            let at = |key: &str| ["feed".into(), "rule".into(), i.into(), key.into()];
            let rule = match (&r.include, &r.exclude, r.watched) {
                (Some(g), None, None) => check_globs(g)
                    .map(|()| Rule::Include(g.clone()))
                    .map_err(|e| self.error(&at("include"), e))?,
                (None, Some(g), None) => check_globs(g)
                    .map(|()| Rule::Exclude(g.clone()))
                    .map_err(|e| self.error(&at("exclude"), e))?,
                (None, None, Some(true)) => Rule::Watched,
                (None, None, Some(false)) => {
                    let reason =
                        "a rule that matches nothing: write watched = true or remove the rule";
                    return Err(self.error(&at("watched"), reason));
                }
                _ => {
                    let reason = "give each rule exactly one of include, exclude or watched";
                    let whole = ["feed".into(), "rule".into(), i.into()];
                    return Err(self.error(&whole, reason));
                }
            };
            out.push(rule);
        }
        Ok(out)
    }

    fn daemon(&self, d: &file::Daemon) -> Result<DaemonSettings, ConfigError> {
        let text = d.schedule.as_deref().unwrap_or(DEFAULT_SCHEDULE);
        let schedule = check_schedule(text)
            .map_err(|reason| self.error(&["daemon".into(), "schedule".into()], reason))?;
        let grace = self.duration_in(
            "daemon",
            "shutdown_grace",
            &d.shutdown_grace,
            SHUTDOWN_GRACE,
            (MAX_DURATION, "24h"),
        )?;
        Ok(DaemonSettings {
            schedule,
            shutdown_grace: grace,
        })
    }

    fn metrics(&self, m: &file::Metrics, base: &Path) -> Result<MetricsSettings, ConfigError> {
        let textfile = match &m.textfile {
            None => None,
            Some(t) => Some(self.textfile(t, base)?),
        };
        let listen = match &m.listen {
            None => None,
            Some(addr) => Some(addr.parse().map_err(|e| {
                let reason =
                    format!("{addr:?}: {e}; write an address and port, as \"127.0.0.1:9150\"");
                self.error(&["metrics".into(), "listen".into()], reason)
            })?),
        };
        Ok(MetricsSettings { textfile, listen })
    }

    fn serve(&self, s: &file::Serve) -> Result<ServeSettings, ConfigError> {
        let index_listen = match &s.index_listen {
            None => None,
            Some(addr) => Some(addr.parse().map_err(|e| {
                let reason =
                    format!("{addr:?}: {e}; write an address and port, as \"127.0.0.1:9151\"");
                self.error(&["serve".into(), "index_listen".into()], reason)
            })?),
        };
        Ok(ServeSettings { index_listen })
    }

    /// node_exporter's textfile collector reads only `*.prom` files, and
    /// the file is replaced by rename, so it needs a file name of its own.
    fn textfile(&self, value: &str, base: &Path) -> Result<PathBuf, ConfigError> {
        let reason = if !value.ends_with(".prom") {
            format!("{value:?}: must end in .prom (node_exporter's textfile collector reads only those)")
        } else if value.ends_with('/') || Path::new(value).file_name().is_none() {
            format!("{value:?}: must name a file")
        } else {
            return self.path(&["metrics".into(), "textfile".into()], value, base);
        };
        Err(self.error(&["metrics".into(), "textfile".into()], reason))
    }

    fn watch(&self, entries: &[file::Watch]) -> Result<Vec<WatchEntry>, ConfigError> {
        let mut out = Vec::with_capacity(entries.len());
        for (i, w) in entries.iter().enumerate() {
            let at = |key: &str| ["watch".into(), i.into(), key.into()];
            let module =
                ModulePath::new(&w.module).map_err(|e| self.error(&at("module"), e.to_string()))?;
            let selectors = match &w.versions {
                None => vec![Selector::parse("latest").expect("a valid selector")],
                Some(file::Versions::Selector(s)) => {
                    let selector =
                        Selector::parse(s).map_err(|e| self.error(&at("versions"), e))?;
                    if selector.is_empty_range() {
                        // Valid, so not refused, but a range nothing satisfies is almost surely
                        // a typo, and it would silently mirror nothing. See: #13
                        let warning = self.error(
                            &at("versions"),
                            format!("range {s:?} selects no version; {module} is not mirrored"),
                        );
                        tracing::warn!("{warning}");
                    }
                    vec![selector]
                }
                Some(file::Versions::Exact(list)) if list.is_empty() => {
                    return Err(self.error(&at("versions"), "an empty list selects nothing"));
                }
                Some(file::Versions::Exact(list)) => list
                    .iter()
                    .map(|v| match Selector::parse(v) {
                        Ok(s @ Selector::Exact(_)) => Ok(s),
                        Ok(_) | Err(_) => Err(self.error(
                            &at("versions"),
                            format!("{v:?}: a list holds exact versions, as \"v1.2.3\""),
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            };
            for selector in selectors {
                if let Selector::Exact(v) = &selector {
                    v.check_path_major(&module)
                        .map_err(|e| self.error(&at("versions"), format!("{module}: {e}")))?;
                }
                out.push(WatchEntry {
                    module: module.clone(),
                    selector,
                });
            }
        }
        Ok(out)
    }

    /// `[[project]] path`, relative to the config file; a glob is checked here and expanded
    /// by each sync (checkouts come and go).
    /// `[retention]`. See: #15
    fn retention(&self, r: &file::Retention) -> Result<RetentionSettings, ConfigError> {
        let year = (Duration::from_secs(100 * 365 * 24 * 60 * 60), "100y");
        let keep_unused_for = match &r.keep_unused_for {
            None => None,
            v => Some(self.duration_in("retention", "keep_unused_for", v, LIST_MAX_AGE, year)?),
        };
        let keep_latest = self.int_in("retention", "keep_latest", r.keep_latest, KEEP_LATEST)?;
        let max_tree_size = match &r.max_tree_size {
            None => None,
            Some(s) => Some(parse_size(s).map_err(|reason| {
                self.error(&["retention".into(), "max_tree_size".into()], reason)
            })?),
        };
        let list_max_age = self.duration_in(
            "retention",
            "list_max_age",
            &r.list_max_age,
            LIST_MAX_AGE,
            (Duration::from_secs(7 * 24 * 60 * 60), "7d"),
        )?;
        Ok(RetentionSettings {
            keep_unused_for,
            keep_latest: keep_latest as usize,
            max_tree_size,
            list_max_age,
        })
    }

    /// `[clients]`. See: #14
    fn clients(&self, c: &file::Clients, base: &Path) -> Result<ClientSettings, ConfigError> {
        let access_log = match &c.access_log {
            None => None,
            Some(p) => Some(self.dir(&["clients", "access_log"], &Some(p.clone()), "", base)?),
        };
        let retry_not_found = self.duration_in(
            "clients",
            "retry_not_found",
            &c.retry_not_found,
            RETRY_NOT_FOUND,
            (Duration::from_secs(365 * 24 * 60 * 60), "365d"),
        )?;
        let max_learned = self.int_in("clients", "max_learned", c.max_learned, MAX_LEARNED)?;
        let mut rules = Vec::with_capacity(c.rule.len());
        for (i, r) in c.rule.iter().enumerate() {
            let at = |key: &str| ["clients".into(), "rule".into(), i.into(), key.into()];
            let rule = match (&r.include, &r.exclude) {
                (Some(g), None) => check_globs(g)
                    .map(|()| Rule::Include(g.clone()))
                    .map_err(|e| self.error(&at("include"), e))?,
                (None, Some(g)) => check_globs(g)
                    .map(|()| Rule::Exclude(g.clone()))
                    .map_err(|e| self.error(&at("exclude"), e))?,
                _ => {
                    let reason = "give each rule exactly one of include or exclude";
                    let whole = ["clients".into(), "rule".into(), i.into()];
                    return Err(self.error(&whole, reason));
                }
            };
            rules.push(rule);
        }
        if rules.is_empty() {
            rules.push(Rule::Include("*".into()));
        }
        Ok(ClientSettings {
            access_log,
            learn: c.learn.unwrap_or(false),
            rules,
            retry_not_found,
            max_learned: max_learned as usize,
        })
    }

    fn projects(
        &self,
        entries: &[file::Project],
        base: &Path,
    ) -> Result<Vec<PathBuf>, ConfigError> {
        entries
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let at = ["project".into(), i.into(), "path".into()];
                if p.path.trim().is_empty() {
                    return Err(self.error(&at, "must not be empty"));
                }
                let path = base.join(&p.path);
                let text = path
                    .to_str()
                    .ok_or_else(|| self.error(&at, "must be UTF-8"))?;
                glob::Pattern::new(text)
                    .map_err(|e| self.error(&at, format!("{:?}: {e}", p.path)))?;
                Ok(path)
            })
            .collect()
    }
}

impl Source<'_> {
    /// `[toolchain] platforms` (Go's ports, no duplicates) and `versions = "latest N"`.
    fn toolchain(&self, f: &file::Toolchain) -> Result<ToolchainSettings, ConfigError> {
        let mut out = ToolchainSettings::default();
        if let Some(list) = &f.platforms {
            out.platforms.clear();
            for (i, text) in list.iter().enumerate() {
                let at = ["toolchain".into(), "platforms".into(), i.into()];
                let p = Platform::parse(text.trim()).map_err(|e| self.error(&at, e))?;
                if out.platforms.contains(&p) {
                    return Err(self.error(&at, format!("{text:?} is listed twice")));
                }
                out.platforms.push(p);
            }
        }
        if let Some(text) = &f.versions {
            let n = text
                .trim()
                .strip_prefix("latest ")
                .and_then(|n| n.trim().parse::<usize>().ok())
                .filter(|&n| n >= 1);
            let Some(n) = n else {
                let reason = format!("{text:?}: want \"latest N\" with N at least 1");
                return Err(self.error(&["toolchain".into(), "versions".into()], reason));
            };
            out.latest = Some(n);
        }
        Ok(out)
    }

    fn export(&self, f: &file::Export, base: &Path) -> Result<Option<ExportSettings>, ConfigError> {
        let at = |key: &str| -> Vec<Seg> { vec!["export".into(), key.into()] };
        if let Some(source) = &f.source {
            // It names bundle files, so it is a host name like a key's name.
            crate::publish::layout::check_sumdb_name(source).map_err(|e| {
                self.error(&at("source"), e.replace("checksum database name", "source"))
            })?;
        }
        let Some(key) = &f.key else {
            if f.source.is_some() {
                return Err(self.error(&at("source"), "needs [export] key too"));
            }
            return Ok(None);
        };
        if key.trim().is_empty() {
            return Err(self.error(&at("key"), "must not be empty"));
        }
        Ok(Some(ExportSettings {
            key: self.path(&at("key"), key, base)?,
            source: f.source.clone(),
        }))
    }

    fn import_trusted(&self, f: &file::Import) -> Result<Vec<Verifier>, ConfigError> {
        let mut keys = Vec::new();
        for (i, key) in f.trusted.iter().flatten().enumerate() {
            let at = ["import".into(), "trusted".into(), i.into()];
            keys.push(Verifier::parse(key).map_err(|e| {
                self.error(&at, format!("{key:?}: {e} (want \"<name>+<hash>+<key>\")"))
            })?);
        }
        Ok(keys)
    }

    fn import_sources(&self, f: &file::Import) -> Result<Vec<ImportSource>, ConfigError> {
        let mut sources: Vec<ImportSource> = Vec::new();
        for (i, s) in f.source.iter().enumerate() {
            let at = |key: &str| -> Vec<Seg> {
                vec!["import".into(), "source".into(), i.into(), key.into()]
            };
            crate::publish::layout::check_sumdb_name(&s.name).map_err(|e| {
                self.error(&at("name"), e.replace("checksum database name", "source"))
            })?;
            if sources.iter().any(|o| o.name == s.name) {
                return Err(self.error(&at("name"), format!("{:?} is listed twice", s.name)));
            }
            if s.keys.is_empty() {
                return Err(self.error(&at("keys"), "must list at least one key"));
            }
            let mut keys = Vec::new();
            for (j, key) in s.keys.iter().enumerate() {
                let mut at = at("keys");
                at.push(j.into());
                keys.push(Verifier::parse(key).map_err(|e| {
                    self.error(&at, format!("{key:?}: {e} (want \"<name>+<hash>+<key>\")"))
                })?);
            }
            sources.push(ImportSource {
                name: s.name.clone(),
                keys,
            });
        }
        Ok(sources)
    }

    fn sumdb(&self, f: &file::Sumdb) -> Result<Option<SumdbSettings>, ConfigError> {
        let at = |key: &str| -> Vec<Seg> { vec!["sumdb".into(), key.into()] };
        let key = f.key.as_deref().unwrap_or(DEFAULT_SUMDB_KEY).trim();
        if key == "off" {
            return Ok(None);
        }
        // GOSUMDB's forms: a known name alone, or a key, optionally followed
        // by the URL (cmd/go/internal/modfetch/sumdb.go dbDial).
        let (key, key_url) = match key.split_once(char::is_whitespace) {
            Some((k, u)) => (k, Some(u.trim())),
            None => (key, None),
        };
        let key = if key == "sum.golang.org" {
            DEFAULT_SUMDB_KEY
        } else {
            key
        };
        let verifier = Verifier::parse(key).map_err(|e| {
            self.error(
                &at("key"),
                format!("{key:?}: {e} (want \"<name>+<hash>+<key>\" or \"off\")"),
            )
        })?;
        let name = verifier.name().to_owned();
        crate::publish::layout::check_sumdb_name(&name).map_err(|e| self.error(&at("key"), e))?;
        let url = match (f.url.as_deref(), key_url) {
            (Some(u), _) => {
                Some(Upstream::parse(u).map_err(|e| self.error(&at("url"), e.to_string()))?)
            }
            (None, Some(u)) => {
                Some(Upstream::parse(u).map_err(|e| self.error(&at("key"), e.to_string()))?)
            }
            (None, None) => None,
        };
        let mut private = Vec::new();
        for (i, glob) in f.private.iter().flatten().enumerate() {
            let at = ["sumdb".into(), "private".into(), i.into()];
            if glob.trim().is_empty() || glob.contains(',') {
                let reason = format!("{glob:?}: one non-empty glob per entry, without commas");
                return Err(self.error(&at, reason));
            }
            private.push(glob.trim().to_owned());
        }
        Ok(Some(SumdbSettings {
            verifier,
            name,
            url,
            private: PrefixPatterns::new(private),
            offline_copy: f.offline_copy.unwrap_or(true),
        }))
    }
}

/// A cron expression as the `cron` crate reads it: six or seven fields,
/// seconds first (`sec min hour day-of-month month day-of-week [year]`),
/// that fires at least once more.
/// `~` or `~/rest` → `home/rest`; `~user` is refused (gomirror does not look users up), as
/// is `~` without a home.
fn expand_home(value: &str, home: Option<&Path>) -> Result<PathBuf, String> {
    let Some(rest) = value.strip_prefix('~') else {
        return Ok(PathBuf::from(value));
    };
    let rest = match rest.strip_prefix('/') {
        Some(rest) => rest,
        None if rest.is_empty() => rest,
        None => {
            return Err(format!(
                "{value:?}: \"~user\" is not expanded; write the full path"
            ))
        }
    };
    match home {
        Some(home) if home.is_absolute() => Ok(home.join(rest)),
        _ => Err(format!(
            "{value:?}: $HOME is not set to an absolute path, so \"~\" cannot be expanded; \
             write the full path"
        )),
    }
}

/// Whether `path` lies inside `dir`, comparing `.`/`..`-free forms and, where they exist,
/// the real paths (a symlinked state directory pointing into the tree).
fn is_inside(path: &Path, dir: &Path) -> bool {
    if lexical(path).starts_with(lexical(dir)) {
        return true;
    }
    let real = |p: &Path| std::fs::canonicalize(p).ok();
    let parent = path.parent().and_then(real);
    match (parent, real(dir)) {
        (Some(parent), Some(dir)) => parent.starts_with(dir),
        _ => false,
    }
}

/// `path` with `.` dropped and `..` applied to what precedes it.
fn lexical(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir if out.file_name().is_some() => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

fn check_schedule(text: &str) -> Result<cron::Schedule, String> {
    let fields = text.split_whitespace().count();
    if fields == 5 {
        return Err(format!(
            "{text:?}: 5 fields; gomirror's cron has a seconds field first, as \"0 {text}\""
        ));
    }
    let schedule: cron::Schedule = text
        .parse()
        .map_err(|e| format!("invalid cron expression {text:?}: {e}"))?;
    if schedule.upcoming(chrono::Utc).next().is_none() {
        return Err(format!("{text:?} never fires again"));
    }
    Ok(schedule)
}

/// A list from `--upstream` or `GOMIRROR_UPSTREAM`, in GOPROXY's own syntax:
/// `a,b` tries b after a 404/410 from a, `a|b` after any error of a.
fn override_upstreams(o: &Override) -> Result<Vec<Upstream>, String> {
    if o.value.trim().is_empty() {
        return Err("empty: list at least one proxy URL, comma-separated".into());
    }
    let mut urls = Vec::new();
    let mut entries = Vec::new();
    let mut rest = o.value.as_str();
    while let Some(i) = rest.find([',', '|']) {
        entries.push((rest[..i].trim(), rest.as_bytes()[i] as char));
        rest = &rest[i + 1..];
    }
    entries.push((rest.trim(), ','));
    push_proxies(&mut urls, entries.into_iter())?;
    Ok(urls)
}

/// Appends GOPROXY entries, each with the separator after it (`|`: the next
/// is tried after any error; the last entry's separator does not matter).
fn push_proxies<'a>(
    urls: &mut Vec<Upstream>,
    entries: impl ExactSizeIterator<Item = (&'a str, char)>,
) -> Result<(), String> {
    let n = entries.len();
    for (i, (entry, sep)) in entries.enumerate() {
        let url = check_proxy(entry)?;
        if urls.iter().any(|u| u.as_str() == url.as_str()) {
            return Err(format!("{entry:?} is listed twice"));
        }
        urls.push(if sep == '|' && i + 1 < n {
            url.falling_through_on_any_error()
        } else {
            url
        });
    }
    Ok(())
}

/// Checks one GOPROXY entry. The URL rules are fetch's ([`Upstream::parse`]);
/// here only what a config file can get wrong beyond them.
/// Go: cmd/go/internal/modfetch/proxy.go proxyList.
fn check_proxy(entry: &str) -> Result<Upstream, String> {
    if matches!(entry, "direct" | "off" | "noproxy") {
        return Err(format!(
            "{entry:?}: gomirror needs a proxy: it fetches only from GOPROXY servers \
             (https://, http:// or file:///abs/dir), never from version control"
        ));
    }
    Upstream::parse(entry).map_err(|e| e.to_string())
}

/// The 1-based line holding byte `offset`.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

/// `[fetch] concurrency`, `[[watch]] #2 module`, `[upstream] proxies #1`,
/// or a bare top-level key. Indexes are shown 1-based.
fn render_key(at: &[Seg]) -> String {
    let mut out = String::new();
    match at {
        [] => {}
        [Seg::Key(k)] => out.push_str(k),
        [Seg::Key(k), Seg::Index(i), rest @ ..] => {
            out = format!("[[{k}]] #{}", i + 1);
            push_rest(&mut out, rest);
        }
        [Seg::Key(k), rest @ ..] => {
            out = format!("[{k}]");
            push_rest(&mut out, rest);
        }
        [Seg::Index(i), ..] => out = format!("#{}", i + 1),
    }
    out
}

fn push_rest(out: &mut String, rest: &[Seg]) {
    for (n, seg) in rest.iter().enumerate() {
        match seg {
            Seg::Key(k) if n == 0 => *out += &format!(" {k}"),
            Seg::Key(k) => *out += &format!(".{k}"),
            Seg::Index(i) => *out += &format!(" #{}", i + 1),
        }
    }
}

/// Rewords serde's messages in TOML's terms: keys, integers, arrays, tables.
fn humanize(msg: &str) -> String {
    if let Some(rest) = msg.strip_prefix("unknown field `") {
        let expected = rest.split_once(", ").map_or("", |(_, e)| e);
        if expected == "there are no fields" {
            return "unknown key (this table takes no keys)".into();
        }
        let list = expected
            .trim_start_matches("expected ")
            .trim_start_matches("one of ")
            .replace(" or ", ", ")
            .replace('`', "");
        return format!("unknown key (expected one of: {list})");
    }
    if let Some(field) = msg.strip_prefix("missing field `") {
        return format!("missing required key {}", field.trim_end_matches('`'));
    }
    let msg = match msg.find("expected struct ") {
        Some(i) => format!("{}expected a table", &msg[..i]),
        None => msg.to_owned(),
    };
    msg.replace("expected i64", "expected an integer")
        .replace("expected a sequence", "expected an array")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::sumdb::note::Signer;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("mirror.toml"), &Overrides::default())
    }

    fn upstream(value: &str, source: &str) -> Overrides {
        Overrides {
            upstream: Some(Override {
                value: value.into(),
                source: source.into(),
            }),
        }
    }

    #[test]
    fn sample_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("mirror.toml");
        let cfg = Config::load(&path, &Overrides::default()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.upstreams.len(), 1);
        assert_eq!(cfg.upstreams[0].as_str(), "https://proxy.golang.org/");
        // Six entries, one of them a list of two exact versions.
        assert_eq!(cfg.watch.len(), 7);
        assert_eq!(
            cfg.tree_dir,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("tree")
        );
        assert_eq!(
            cfg.database,
            Path::new(env!("CARGO_MANIFEST_DIR")).join("state/gomirror.db")
        );
        assert_eq!(cfg.fetch.concurrency, 64);
        assert_eq!(cfg.fetch.backoff_base, Duration::from_millis(250));
        let defaults = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.fetch, defaults.fetch,
            "the sample's [fetch] is the defaults, FetchSettings::default()"
        );
        assert_eq!(
            cfg.feed, defaults.feed,
            "the sample's [feed] is the defaults"
        );
        let watched: Vec<String> = cfg
            .watch
            .iter()
            .map(|w| format!("{} {}", w.module, w.selector))
            .collect();
        assert!(
            watched.contains(&"golang.org/x/text latest".to_owned()),
            "{watched:?}"
        );
        assert!(
            watched.contains(&"rsc.io/quote all".to_owned()),
            "{watched:?}"
        );
        assert!(
            watched.contains(&"rsc.io/sampler latest 2".to_owned()),
            "{watched:?}"
        );
    }

    #[test]
    fn defaults() {
        let cfg = Config::parse(
            "[[watch]]\nmodule = \"rsc.io/quote\"\n",
            Path::new("/etc/gomirror/mirror.toml"),
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let want = Config {
            upstreams: vec![Upstream::parse("https://proxy.golang.org/").expect("valid")],
            private: PrivateUpstream::default(),
            tree_dir: "/etc/gomirror/tree".into(),
            tree_bucket: None,
            database: "/etc/gomirror/state/gomirror.db".into(),
            fetch: FetchSettings {
                concurrency: 64,
                connect_timeout: Duration::from_secs(10),
                read_timeout: Duration::from_secs(60),
                header_timeout: Duration::from_secs(60),
                min_bytes_per_second: 1024,
                throughput_window: Duration::from_secs(60),
                max_attempts: 5,
                backoff_base: Duration::from_millis(250),
                backoff_max: Duration::from_secs(30),
                user_agent: format!("gomirror/{}", env!("CARGO_PKG_VERSION")),
                requests_per_second: None,
            },
            projects: vec![],
            watch: vec![WatchEntry {
                module: ModulePath::new("rsc.io/quote").expect("valid"),
                selector: Selector::Latest,
            }],
            sumdb: Some(SumdbSettings {
                verifier: Verifier::parse(DEFAULT_SUMDB_KEY).expect("valid"),
                name: "sum.golang.org".into(),
                url: None,
                private: PrefixPatterns::default(),
                offline_copy: true,
            }),
            import_trusted: Vec::new(),
            import_sources: Vec::new(),
            feed: FeedSettings {
                enabled: false,
                index: Upstream::parse("https://index.golang.org/").expect("valid"),
                proxy: Upstream::parse("https://proxy.golang.org/cached-only/").expect("valid"),
                start: FeedStart::Now,
                page_size: 2000,
                max_pages: 100,
                max_attempts: 10,
                retry_base: Duration::from_secs(600),
                retry_max: Duration::from_secs(24 * 3600),
                refresh_interval: Duration::from_secs(24 * 3600),
                rules: Rules {
                    rules: vec![Rule::Watched],
                    pseudo: PseudoPolicy::Watched,
                },
            },
            daemon: DaemonSettings {
                schedule: "0 */10 * * * *".parse().expect("valid"),
                shutdown_grace: Duration::from_secs(30),
            },
            metrics: MetricsSettings::default(),
            export: None,
            toolchain: ToolchainSettings {
                platforms: vec![Platform::parse("linux/amd64").expect("valid")],
                latest: None,
            },
            clients: ClientSettings {
                access_log: None,
                learn: false,
                rules: vec![Rule::Include("*".into())],
                retry_not_found: RETRY_NOT_FOUND,
                max_learned: 100,
            },
            serve: ServeSettings::default(),
            retention: RetentionSettings::default(),
        };
        assert_eq!(cfg, want);
        let empty = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert!(empty.watch.is_empty());
        assert_eq!(empty.tree_dir, Path::new("tree"));
    }

    #[test]
    fn values_are_read() {
        let text = r#"
[upstream]
proxies = ["http://127.0.0.1:8080/goproxy", "file:///var/cache/go/download/", "https://proxy.golang.org/cached-only"]
[tree]
dir = "/srv/goproxy"
[state]
database = "db/x.db"
[fetch]
concurrency = 1024
connect_timeout = "1m 30s"
read_timeout = "5s"
max_attempts = 1
backoff_base = "1s"
backoff_max = "1s"
user_agent = "example-mirror/1.0 (ops@example.com)"
[[watch]]
module = "golang.org/x/mod"
versions = ">=v0.10.0, <v0.20"
"#;
        let cfg = parse(text).unwrap_or_else(|e| panic!("{e}"));
        let urls: Vec<&str> = cfg.upstreams.iter().map(Upstream::as_str).collect();
        let want = [
            "http://127.0.0.1:8080/goproxy/",
            "file:///var/cache/go/download/",
            "https://proxy.golang.org/cached-only/",
        ];
        assert_eq!(urls, want);
        assert_eq!(cfg.tree_dir, Path::new("/srv/goproxy"));
        assert_eq!(cfg.database, Path::new("db/x.db"));
        assert_eq!(cfg.fetch.concurrency, 1024);
        assert_eq!(cfg.fetch.connect_timeout, Duration::from_secs(90));
        assert_eq!(cfg.fetch.max_attempts, 1);
        assert_eq!(cfg.fetch.user_agent, "example-mirror/1.0 (ops@example.com)");
        assert_eq!(cfg.watch[0].selector.to_string(), ">=v0.10.0, <v0.20");
    }

    #[test]
    fn daemon_and_metrics_are_read() {
        let text = "[daemon]\nschedule = \"*/2 * * * * *\"\nshutdown_grace = \"5s\"\n\
                    [metrics]\ntextfile = \"prom/gomirror.prom\"\nlisten = \"[::1]:9150\"\n";
        let cfg = Config::parse(
            text,
            Path::new("/etc/gomirror/mirror.toml"),
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.daemon.schedule.source(), "*/2 * * * * *");
        assert_eq!(cfg.daemon.shutdown_grace, Duration::from_secs(5));
        let textfile = cfg.metrics.textfile.as_deref();
        assert_eq!(
            textfile,
            Some(Path::new("/etc/gomirror/prom/gomirror.prom"))
        );
        assert_eq!(
            cfg.metrics.listen,
            Some("[::1]:9150".parse().expect("valid"))
        );
    }

    // See: #16
    #[test]
    fn issue_16_serve_index_listen_is_an_address() {
        let cfg =
            parse("[serve]\nindex_listen = \"127.0.0.1:9151\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            cfg.serve.index_listen,
            Some("127.0.0.1:9151".parse().expect("valid"))
        );
        let err = parse("[serve]\nindex_listen = \"localhost\"\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "mirror.toml:2: [serve] index_listen: \"localhost\": invalid socket address syntax; \
             write an address and port, as \"127.0.0.1:9151\""
        );
    }

    // See: #12 (exact version lists; a module may be named by several entries).
    #[test]
    fn watch_entries_union_and_exact_lists() {
        let cfg = parse(
            "[[watch]]\nmodule = \"golang.org/x/text\"\nversions = [\"v0.14.0\", \"v0.3.8\"]\n\
             [[watch]]\nmodule = \"golang.org/x/text\"\n\
             [[project]]\npath = \"checkouts/*\"\n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let selectors: Vec<String> = cfg
            .watch
            .iter()
            .map(|w| format!("{}", w.selector))
            .collect();
        assert_eq!(selectors.len(), 3, "{selectors:?}");
        assert!(cfg
            .watch
            .iter()
            .all(|w| w.module.as_str() == "golang.org/x/text"));
        assert!(matches!(&cfg.watch[1].selector, Selector::Exact(v) if v.as_str() == "v0.3.8"));
        assert_eq!(cfg.projects, [Path::new("checkouts/*")]);
    }

    #[test]
    fn issue_17_a_tree_in_object_storage_stages_beside_the_database() {
        let text = "[tree]\nurl = \"s3://go-mirror/prod/\"\nendpoint = \"http://127.0.0.1:9000\"\n\
                    region = \"eu-west-1\"\n[state]\ndatabase = \"/var/lib/gomirror/state.db\"\n";
        let cfg = parse(text).unwrap_or_else(|e| panic!("{e}"));
        let bucket = cfg.tree_bucket.as_ref().expect("a bucket tree");
        assert_eq!(
            (bucket.bucket.as_str(), bucket.prefix.as_str()),
            ("go-mirror", "prod")
        );
        assert_eq!(bucket.endpoint.as_deref(), Some("http://127.0.0.1:9000"));
        assert_eq!(bucket.region.as_deref(), Some("eu-west-1"));
        assert_eq!(cfg.tree_dir, Path::new("/var/lib/gomirror/staging"));
        assert_eq!(cfg.local_tree_dir(), None);
        let staged = parse("[tree]\nurl = \"s3://b\"\nstaging = \"/srv/stage\"\n").unwrap();
        assert_eq!(staged.tree_dir, Path::new("/srv/stage"));
        assert_eq!(staged.tree_bucket.unwrap().prefix, "");
    }

    #[test]
    fn errors_name_line_and_key() {
        let w = "[[watch]]\nmodule = \"rsc.io/quote\"\n";
        // (file text, the whole message)
        let cases: &[(&str, &str)] = &[
            ("bogus = 1\n", "mirror.toml:1: bogus: unknown key (expected one of: upstream, tree, state, fetch, watch, project, sumdb, import, feed, daemon, metrics, export, toolchain, clients, serve, retention)"),
            ("[fetch]\nconcurrency = 3\n\n[tre]\n", "mirror.toml:4: tre: unknown key (expected one of: upstream, tree, state, fetch, watch, project, sumdb, import, feed, daemon, metrics, export, toolchain, clients, serve, retention)"),
            ("[fetch]\nconcurency = 3\n", "mirror.toml:2: [fetch] concurency: unknown key (expected one of: concurrency, connect_timeout, read_timeout, header_timeout, min_bytes_per_second, throughput_window, max_attempts, backoff_base, backoff_max, user_agent, requests_per_second)"),
            ("[tree]\ndir = \"t\"\npath = \"t\"\n", "mirror.toml:3: [tree] path: unknown key (expected one of: dir, url, endpoint, region, staging)"),
            ("[tree]\ndir = \"t\"\nurl = \"s3://b\"\n", "mirror.toml:3: [tree] url: set either [tree] dir (a local tree) or [tree] url (object storage), not both"),
            ("[tree]\nurl = \"gs://b/p\"\n", "mirror.toml:2: [tree] url: \"gs://b/p\": only s3:// URLs are supported"),
            ("[tree]\nurl = \"s3://b/../p\"\n", "mirror.toml:2: [tree] url: \"s3://b/../p\": prefix \"../p\" has an empty, . or .. segment"),
            ("[tree]\nendpoint = \"http://127.0.0.1:9000\"\n", "mirror.toml:2: [tree] endpoint: only for a tree in object storage ([tree] url)"),
            ("[tree]\nurl = \"s3://b\"\nendpoint = \"127.0.0.1:9000\"\n", "mirror.toml:3: [tree] endpoint: \"127.0.0.1:9000\": must be an http:// or https:// URL"),
            (&format!("{w}[[watch]]\nmodule = \"rsc.io/sampler\"\nversion = \"all\"\n"), "mirror.toml:5: [[watch]] #2 version: unknown key (expected one of: module, versions)"),
            ("[fetch]\nconcurrency = \"64\"\n", "mirror.toml:2: [fetch] concurrency: invalid type: string \"64\", expected an integer"),
            ("[upstream]\nproxies = \"https://proxy.golang.org\"\n", "mirror.toml:2: [upstream] proxies: invalid type: string \"https://proxy.golang.org\", expected an array"),
            ("[upstream]\nproxies = [\n  \"https://a.example\",\n  7,\n]\n", "mirror.toml:4: [upstream] proxies #2: invalid type: integer `7`, expected a string"),
            ("fetch = 3\n", "mirror.toml:1: fetch: invalid type: integer `3`, expected a table"),
            ("[[watch]]\nversions = \"all\"\n", "mirror.toml:1: [[watch]] #1: missing required key module"),
            ("\n\n[fetch]\nconcurrency = 0\n", "mirror.toml:4: [fetch] concurrency: must be at least 1, got 0"),
            ("[fetch]\nconcurrency = 1025\n", "mirror.toml:2: [fetch] concurrency: must be at most 1024, got 1025"),
            ("[fetch]\nmax_attempts = -1\n", "mirror.toml:2: [fetch] max_attempts: must be at least 1, got -1"),
            ("[fetch]\nread_timeout = \"10 parsecs\"\n", "mirror.toml:2: [fetch] read_timeout: invalid duration \"10 parsecs\": unknown time unit \"parsecs\""),
            ("[fetch]\nconnect_timeout = \"0s\"\n", "mirror.toml:2: [fetch] connect_timeout: must be greater than 0, got \"0s\""),
            ("[fetch]\nconnect_timeout = \"2days\"\n", "mirror.toml:2: [fetch] connect_timeout: must be at most 24h, got \"2days\""),
            ("[fetch]\nbackoff_max = \"100ms\"\n", "mirror.toml:2: [fetch] backoff_max: backoff_base (250ms) must not exceed backoff_max (100ms)"),
            ("[fetch]\nbackoff_base = \"1m\"\nbackoff_max = \"10s\"\n", "mirror.toml:2: [fetch] backoff_base: backoff_base (1m) must not exceed backoff_max (10s)"),
            ("[fetch]\nuser_agent = \"a\\nb\"\n", "mirror.toml:2: [fetch] user_agent: must be printable ASCII"),
            ("[upstream]\nproxies = []\n", "mirror.toml:2: [upstream] proxies: must list at least one proxy URL"),
            ("[upstream]\nproxies = [\"https://a.example\", \"direct\"]\n", "mirror.toml:2: [upstream] proxies #2: \"direct\": gomirror needs a proxy"),
            ("[upstream]\nproxies = [\"off\"]\n", "mirror.toml:2: [upstream] proxies #1: \"off\": gomirror needs a proxy"),
            ("[upstream]\nproxies = [\"proxy.golang.org\"]\n", "mirror.toml:2: [upstream] proxies #1: invalid upstream \"proxy.golang.org\": not a URL: relative URL without a base; write https://proxy.golang.org"),
            ("[upstream]\nproxies = [\"https://\"]\n", "mirror.toml:2: [upstream] proxies #1: invalid upstream \"https://\": not a URL: empty host"),
            ("[upstream]\nproxies = [\"ftp://example.com\"]\n", "mirror.toml:2: [upstream] proxies #1: invalid upstream \"ftp://example.com\": unsupported scheme \"ftp\""),
            ("[upstream]\nproxies = [\"https://a.example?x=1\"]\n", "proxies #1: invalid upstream \"https://a.example?x=1\": a proxy base cannot have a query or fragment"),
            ("[upstream]\nproxies = [\"file://cache/download\"]\n", "mirror.toml:2: [upstream] proxies #1: invalid upstream \"file://cache/download\": a file:// proxy needs a local absolute directory, as file:///abs/dir"),
            ("[upstream]\nproxies = [\"file:cache\"]\n", "proxies #1: invalid upstream \"file:cache\": a file:// proxy needs a local absolute directory"),
            ("[upstream]\nproxies = [\"https://a.example | direct\"]\n", "mirror.toml:2: [upstream] proxies #1: \"direct\": gomirror needs a proxy"),
            ("[upstream]\nproxies = [\"https://a.example | https://a.example/\"]\n", "mirror.toml:2: [upstream] proxies #1: \"https://a.example/\" is listed twice"),
            ("[upstream]\nproxies = [\"https://a.example,https://b.example\"]\n", "proxies #1: \"https://a.example,https://b.example\": list each proxy as its own array entry"),
            ("[upstream]\nproxies = [\"https://a.example\", \"https://a.example/\"]\n", "mirror.toml:2: [upstream] proxies #2: \"https://a.example/\" is listed twice"),
            ("[tree]\ndir = \"\"\n", "mirror.toml:2: [tree] dir: must not be empty"),
            (&format!("{w}\n[[watch]]\nmodule = \"Foo/bar\"\n"), "mirror.toml:5: [[watch]] #2 module: malformed module path \"Foo/bar\": missing dot in first path element"),
            (&format!("{w}versions = \"newest\"\n"), "mirror.toml:3: [[watch]] #1 versions: expected \"latest\", \"all\", \"latest N\""),
            (&format!("{w}versions = \"<=v1.2\"\n"), "mirror.toml:3: [[watch]] #1 versions: range \"<=v1.2\": ambiguous version"),
            (&format!("{w}versions = \"v2.0.0\"\n"), "mirror.toml:3: [[watch]] #1 versions: rsc.io/quote: invalid version \"v2.0.0\": should be v0 or v1, not v2"),
            ("[[watch]]\nmodule = \"rsc.io/quote\"\nversions = []\n", "mirror.toml:3: [[watch]] #1 versions: an empty list selects nothing"),
            ("[[watch]]\nmodule = \"rsc.io/quote\"\nversions = [\"v1.5.2\", \"latest\"]\n", "mirror.toml:3: [[watch]] #1 versions: \"latest\": a list holds exact versions, as \"v1.2.3\""),
            ("[[watch]]\nmodule = \"rsc.io/quote/v2\"\nversions = [\"v1.5.2\"]\n", "mirror.toml:3: [[watch]] #1 versions: rsc.io/quote/v2: "),
            ("[[project]]\npath = \"\"\n", "mirror.toml:2: [[project]] #1 path: must not be empty"),
            ("[[project]]\npath = \"/srv/[x\"\n", "mirror.toml:2: [[project]] #1 path: \"/srv/[x\": "),
            ("[fetch]\nconcurrency = 3\n[fetch]\n", "mirror.toml:3: duplicate key"),
            ("[fetch\n", "mirror.toml:1: unclosed table"),
            ("[daemon]\nschedule = \"*/10 * * * *\"\n", "mirror.toml:2: [daemon] schedule: \"*/10 * * * *\": 5 fields; gomirror's cron has a seconds field first, as \"0 */10 * * * *\""),
            ("[daemon]\nschedule = \"0 */10 * * * * * *\"\n", "mirror.toml:2: [daemon] schedule: invalid cron expression \"0 */10 * * * * * *\""),
            ("[daemon]\nschedule = \"0 61 * * * *\"\n", "mirror.toml:2: [daemon] schedule: invalid cron expression \"0 61 * * * *\""),
            ("[daemon]\nschedule = \"0 0 0 1 1 * 2001\"\n", "mirror.toml:2: [daemon] schedule: \"0 0 0 1 1 * 2001\" never fires again"),
            ("[daemon]\nschedule = 10\n", "mirror.toml:2: [daemon] schedule: invalid type: integer `10`, expected a string"),
            ("[daemon]\nshutdown_grace = \"0s\"\n", "mirror.toml:2: [daemon] shutdown_grace: must be greater than 0, got \"0s\""),
            ("[daemon]\nschedul = \"x\"\n", "mirror.toml:2: [daemon] schedul: unknown key (expected one of: schedule, shutdown_grace)"),
            ("[metrics]\nlisten = \"localhost:9150\"\n", "mirror.toml:2: [metrics] listen: \"localhost:9150\": invalid socket address syntax; write an address and port, as \"127.0.0.1:9150\""),
            ("[metrics]\nlisten = \"127.0.0.1\"\n", "mirror.toml:2: [metrics] listen: \"127.0.0.1\": invalid socket address syntax"),
            ("[metrics]\ntextfile = \"/var/lib/node_exporter/gomirror.txt\"\n", "mirror.toml:2: [metrics] textfile: \"/var/lib/node_exporter/gomirror.txt\": must end in .prom"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}\n got: {err}\nwant: {want}");
        }
    }

    #[test]
    fn feed_values_are_read() {
        let text = r#"
[fetch]
requests_per_second = 20
[feed]
enabled = true
index = "http://127.0.0.1:9/idx"
proxy = "http://127.0.0.1:9/cached-only"
start = "2019-04-10T19:08:52.997264Z"
page_size = 500
max_pages = 3
max_attempts = 4
retry_base = "1m"
retry_max = "7days"
refresh_interval = "6h"
pseudo_versions = "all"
[[feed.rule]]
exclude = "github.com/myorg/secret"
[[feed.rule]]
include = "github.com/myorg/*,*.corp.example.com"
[[feed.rule]]
watched = true
"#;
        let cfg = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.fetch.requests_per_second, Some(20));
        let f = &cfg.feed;
        assert!(f.enabled);
        assert_eq!(f.index.as_str(), "http://127.0.0.1:9/idx/");
        assert_eq!(f.proxy.as_str(), "http://127.0.0.1:9/cached-only/");
        assert_eq!(
            f.start,
            FeedStart::At(time::macros::datetime!(2019-04-10 19:08:52.997264 UTC))
        );
        assert_eq!((f.page_size, f.max_pages, f.max_attempts), (500, 3, 4));
        assert_eq!(f.retry_base, Duration::from_secs(60));
        assert_eq!(f.retry_max, Duration::from_secs(7 * 24 * 3600));
        assert_eq!(f.refresh_interval, Duration::from_secs(6 * 3600));
        let want = Rules {
            rules: vec![
                Rule::Exclude("github.com/myorg/secret".into()),
                Rule::Include("github.com/myorg/*,*.corp.example.com".into()),
                Rule::Watched,
            ],
            pseudo: PseudoPolicy::All,
        };
        assert_eq!(f.rules, want);
    }

    // See: #14
    #[test]
    fn issue_14_clients_values_are_read() {
        let text = "[clients]\naccess_log = \"logs/access.log\"\nlearn = true\nretry_not_found = \"2h\"\nmax_learned = 7\n\
                    [[clients.rule]]\nexclude = \"github.com/attacker-*\"\n[[clients.rule]]\ninclude = \"*\"\n";
        let c = parse(text).unwrap_or_else(|e| panic!("{e}")).clients;
        assert_eq!(c.access_log.as_deref(), Some(Path::new("logs/access.log")));
        assert!(c.learn);
        assert_eq!(c.retry_not_found, Duration::from_secs(2 * 3600));
        assert_eq!(c.max_learned, 7);
        let want = vec![
            Rule::Exclude("github.com/attacker-*".into()),
            Rule::Include("*".into()),
        ];
        assert_eq!(c.rules, want);
        let cases: &[(&str, &str)] = &[
            ("[clients]\naccess_log = \"\"\n", "mirror.toml:2: [clients] access_log: must not be empty"),
            ("[clients]\nlearn = 1\n", "mirror.toml:2: [clients] learn: invalid type: integer `1`, expected a boolean"),
            ("[clients]\nmax_learned = 0\n", "mirror.toml:2: [clients] max_learned: must be at least 1, got 0"),
            ("[clients]\nretry_not_found = \"often\"\n", "mirror.toml:2: [clients] retry_not_found: invalid duration \"often\""),
            ("[[clients.rule]]\ninclude = \"a.example\"\nexclude = \"b.example\"\n", "mirror.toml:1: [clients] rule #1: give each rule exactly one of include or exclude"),
            ("[[clients.rule]]\nwatched = true\n", "mirror.toml:2: [clients] rule #1.watched: unknown key (expected one of: include, exclude)"),
            ("[[clients.rule]]\ninclude = \"github.com/[org\"\n", "mirror.toml:2: [clients] rule #1.include: \"github.com/[org\": unclosed ["),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with(want), "{text:?}\n got: {err}\nwant: {want}");
        }
    }

    #[test]
    fn feed_errors_name_line_and_key() {
        // (file text, the whole message or its start)
        let cases: &[(&str, &str)] = &[
            ("[feed]\nenable = true\n", "mirror.toml:2: [feed] enable: unknown key (expected one of: enabled, index, proxy, start, page_size, max_pages, max_attempts, retry_base, retry_max, refresh_interval, pseudo_versions, rule)"),
            ("[feed]\nenabled = \"yes\"\n", "mirror.toml:2: [feed] enabled: invalid type: string \"yes\", expected a boolean"),
            ("[feed]\nindex = \"file:///srv/index\"\n", "mirror.toml:2: [feed] index: \"file:///srv/index\": the index is an https:// or http:// URL"),
            ("[feed]\nindex = \"https://index.golang.org?x\"\n", "mirror.toml:2: [feed] index: invalid upstream \"https://index.golang.org?x\": a proxy base cannot have a query or fragment"),
            ("[feed]\nproxy = \"direct\"\n", "mirror.toml:2: [feed] proxy: \"direct\": gomirror needs a proxy"),
            ("[feed]\nstart = \"yesterday\"\n", "mirror.toml:2: [feed] start: invalid Timestamp \"yesterday\""),
            ("[feed]\npage_size = 2001\n", "mirror.toml:2: [feed] page_size: must be at most 2000, got 2001"),
            ("[feed]\npage_size = 0\n", "mirror.toml:2: [feed] page_size: must be at least 1, got 0"),
            ("[feed]\nmax_pages = 0\n", "mirror.toml:2: [feed] max_pages: must be at least 1, got 0"),
            ("[feed]\nmax_attempts = 0\n", "mirror.toml:2: [feed] max_attempts: must be at least 1, got 0"),
            ("[feed]\nretry_base = \"soon\"\n", "mirror.toml:2: [feed] retry_base: invalid duration \"soon\""),
            ("[feed]\nretry_max = \"60days\"\n", "mirror.toml:2: [feed] retry_max: must be at most 30 days, got \"60days\""),
            ("[feed]\nretry_base = \"2days\"\n", "mirror.toml:2: [feed] retry_base: retry_base (2days) must not exceed retry_max (1day)"),
            ("[feed]\nrefresh_interval = \"0s\"\n", "mirror.toml:2: [feed] refresh_interval: must be greater than 0, got \"0s\""),
            ("[feed]\npseudo_versions = \"some\"\n", "mirror.toml:2: [feed] pseudo_versions: expected \"watched\", \"skip\" or \"all\", got \"some\""),
            ("[[feed.rule]]\ninclude = \"a.example\"\nexclude = \"b.example\"\n", "mirror.toml:1: [feed] rule #1: give each rule exactly one of include, exclude or watched"),
            ("[[feed.rule]]\nwatched = true\n[[feed.rule]]\n", "mirror.toml:3: [feed] rule #2: give each rule exactly one of include, exclude or watched"),
            ("[[feed.rule]]\nwatched = false\n", "mirror.toml:2: [feed] rule #1.watched: a rule that matches nothing"),
            ("[[feed.rule]]\ninclude = \"github.com/[org\"\n", "mirror.toml:2: [feed] rule #1.include: \"github.com/[org\": unclosed ["),
            ("[[feed.rule]]\nexclude = \"a.example,\"\n", "mirror.toml:2: [feed] rule #1.exclude: \"a.example,\": empty pattern"),
            ("[[feed.rule]]\nincludes = \"a.example\"\n", "mirror.toml:2: [feed] rule #1.includes: unknown key (expected one of: include, exclude, watched)"),
            ("[fetch]\nrequests_per_second = 0\n", "mirror.toml:2: [fetch] requests_per_second: must be at least 1, got 0"),
            ("[fetch]\nrequests_per_second = 1.5\n", "mirror.toml:2: [fetch] requests_per_second: invalid type: floating point `1.5`, expected an integer"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with(want), "{text:?}\n got: {err}\nwant: {want}");
        }
    }

    #[test]
    fn error_fields() {
        let err = parse("[fetch]\nconcurrency = 0\n").expect_err("out of bounds");
        assert_eq!(err.file, Path::new("mirror.toml"));
        assert_eq!(err.line, Some(2));
        assert_eq!(err.key, "[fetch] concurrency");
        assert_eq!(err.reason, "must be at least 1, got 0");
        assert_eq!(
            err.to_string(),
            "mirror.toml:2: [fetch] concurrency: must be at least 1, got 0"
        );
    }

    #[test]
    fn unreadable_file() {
        let err = Config::load(Path::new("/nonexistent/mirror.toml"), &Overrides::default())
            .expect_err("missing");
        assert!(
            err.to_string()
                .starts_with("/nonexistent/mirror.toml: cannot read: "),
            "{err}"
        );
    }

    #[test]
    fn upstream_override_replaces_proxies() {
        let text = "[upstream]\nproxies = [\"https://a.example\"]\n";
        let over = upstream(" https://b.example/go , file:///srv/cache", "--upstream");
        let cfg =
            Config::parse(text, Path::new("mirror.toml"), &over).unwrap_or_else(|e| panic!("{e}"));
        let urls: Vec<&str> = cfg.upstreams.iter().map(Upstream::as_str).collect();
        assert_eq!(urls, ["https://b.example/go/", "file:///srv/cache/"]);
        // The override is used even where the file's own list is invalid.
        let bad_file = "[upstream]\nproxies = [\"direct\"]\n";
        assert!(Config::parse(bad_file, Path::new("mirror.toml"), &over).is_ok());
    }

    // See: #13
    #[test]
    fn issue_13_pipe_falls_through_on_any_error() {
        let shown = |cfg: &Config| -> Vec<(String, bool)> {
            cfg.upstreams
                .iter()
                .map(|u| (u.to_string(), u.falls_through_on_any_error()))
                .collect()
        };
        let want = [
            ("https://a.example/".to_string(), true),
            ("https://b.example/".to_string(), false),
            ("file:///srv/cache/".to_string(), false),
        ];
        let text = "[upstream]\nproxies = [\"https://a.example | https://b.example\", \"file:///srv/cache\"]\n";
        assert_eq!(shown(&parse(text).unwrap_or_else(|e| panic!("{e}"))), want);
        // Go's own syntax on the command line.
        let over = upstream(
            "https://a.example|https://b.example,file:///srv/cache",
            "--upstream",
        );
        let cfg =
            Config::parse("", Path::new("mirror.toml"), &over).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(shown(&cfg), want);
    }

    #[test]
    fn bad_override_names_its_source() {
        // (override, source, the whole message)
        let cases = [
            ("direct", "GOMIRROR_UPSTREAM", "mirror.toml: GOMIRROR_UPSTREAM: \"direct\": gomirror needs a proxy"),
            ("https://a.example,off", "--upstream", "mirror.toml: --upstream: \"off\": gomirror needs a proxy"),
            ("https://a.example,,https://b.example", "--upstream", "mirror.toml: --upstream: invalid upstream \"\": empty"),
            ("https://a.example|/srv/cache", "--upstream", "mirror.toml: --upstream: invalid upstream \"/srv/cache\": not a URL: relative URL without a base; write file:///srv/cache"),
            ("https://a.example,https://a.example", "--upstream", "mirror.toml: --upstream: \"https://a.example\" is listed twice"),
            ("  ", "GOMIRROR_UPSTREAM", "mirror.toml: GOMIRROR_UPSTREAM: empty: list at least one proxy URL"),
            ("file://rel/dir", "--upstream", "mirror.toml: --upstream: invalid upstream \"file://rel/dir\": a file:// proxy needs a local absolute directory"),
        ];
        for (value, source, want) in cases {
            let err = Config::parse("", Path::new("mirror.toml"), &upstream(value, source))
                .expect_err(value);
            assert_eq!(err.line, None);
            assert!(
                err.to_string().starts_with(want),
                "{value:?}\n got: {err}\nwant: {want}"
            );
        }
    }

    #[test]
    fn issue_12_upstream_private_is_gonoproxy_and_gonosumdb() {
        // See: #12
        let text = "[upstream]\nprivate = [\"corp.example.com\"]\n\
                    private_proxies = [\"https://goproxy.corp.example.com\"]\n\
                    [sumdb]\nkey = \"sum.golang.org\"\nprivate = [\"github.com/myorg\"]\n";
        let cfg = parse(text).unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.private.is_private("corp.example.com/x/v2"));
        assert!(!cfg.private.is_private("github.com/myorg/tool"));
        let urls: Vec<&str> = cfg.private.proxies.iter().map(Upstream::as_str).collect();
        assert_eq!(urls, ["https://goproxy.corp.example.com/"]);
        let db = cfg.sumdb.expect("on");
        assert!(db.is_private("corp.example.com/x") && db.is_private("github.com/myorg/t"));
        let cases = [
            (
                "[upstream]\nprivate = [\"a,b\"]\n",
                "mirror.toml:2: [upstream] private #1: \"a,b\": one non-empty glob",
            ),
            (
                "[upstream]\nprivate_proxies = [\"https://p.example\"]\n",
                "mirror.toml:2: [upstream] private_proxies: set [upstream] private",
            ),
            (
                "[upstream]\nprivate = [\"x.example\"]\nprivate_proxies = [\"direct\"]\n",
                "mirror.toml:3: [upstream] private_proxies #1: \"direct\": gomirror needs a proxy",
            ),
        ];
        for (text, want) in cases {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.starts_with(want), "{text:?}\n got: {e}\nwant: {want}");
        }
    }

    #[test]
    fn sumdb_settings() {
        let off = parse("[sumdb]\nkey = \"off\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(off.sumdb, None);
        let by_name =
            parse("[sumdb]\nkey = \"sum.golang.org\"\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(by_name.sumdb.unwrap().verifier.vkey(), DEFAULT_SUMDB_KEY);
        let text = format!(
            "[sumdb]\nkey = \"{DEFAULT_SUMDB_KEY} https://sum.example.com/db\"\n\
             private = [\"*.corp.example.com\", \"github.com/myorg\"]\noffline_copy = false\n"
        );
        let s = parse(&text)
            .unwrap_or_else(|e| panic!("{e}"))
            .sumdb
            .unwrap();
        assert_eq!(s.name, "sum.golang.org");
        assert_eq!(
            s.url.as_ref().map(Upstream::as_str),
            Some("https://sum.example.com/db/")
        );
        assert!(!s.offline_copy);
        assert!(s.is_private("git.corp.example.com/team/x"));
        assert!(s.is_private("github.com/myorg/tool"));
        assert!(!s.is_private("github.com/other/tool"));
    }

    #[test]
    fn sumdb_errors_name_the_key() {
        for (text, want) in [
            (
                "[sumdb]\nkey = \"sum.golang.org+033de0ae+AAAA\"",
                "mirror.toml:2: [sumdb] key: \"sum.golang.org+033de0ae+AAAA\": ",
            ),
            (
                "[sumdb]\nkey = \"nonsense\"",
                "mirror.toml:2: [sumdb] key: ",
            ),
            ("[sumdb]\nurl = \"ftp://x\"", "mirror.toml:2: [sumdb] url: "),
            (
                "[sumdb]\nprivate = [\"a,b\"]",
                "mirror.toml:2: [sumdb] private #1: \"a,b\": one non-empty glob",
            ),
            (
                "[sumdb]\nprivate = [\"\"]",
                "mirror.toml:2: [sumdb] private #1: ",
            ),
            (
                "[sumdb]\noffline = true",
                "mirror.toml:2: [sumdb] offline: unknown key",
            ),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    /// A key trusted for one source cannot sign another's bundles; `[[import.source]]`
    /// binds a source to its keys, and only to them.
    // See: #13
    #[test]
    fn issue_13_import_sources_bind_keys() {
        let (_, _, a) = Signer::generate("a.example").unwrap();
        let (_, _, b) = Signer::generate("b.example").unwrap();
        let (_, _, k) = Signer::generate("key.example").unwrap();
        let c = parse(&format!(
            "[import]\ntrusted = [\"{a}\", \"{b}\"]\n\
             [[import.source]]\nname = \"site.example\"\nkeys = [\"{k}\"]\n\
             [[import.source]]\nname = \"b.example\"\nkeys = [\"{k}\"]\n"
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        let names = |keys: Vec<&Verifier>| -> Vec<String> {
            keys.iter().map(|v| v.name().to_owned()).collect()
        };
        assert_eq!(
            names(c.import_keys()),
            ["a.example", "b.example", "key.example", "key.example"]
        );
        assert_eq!(names(c.import_keys_for("a.example")), ["a.example"]);
        assert_eq!(names(c.import_keys_for("site.example")), ["key.example"]);
        // Bound explicitly: the trusted key of the same name is not enough.
        assert_eq!(names(c.import_keys_for("b.example")), ["key.example"]);
        assert!(c.import_keys_for("other.example").is_empty());
        for (text, want) in [
            (
                "[[import.source]]\nname = \"a/b\"\nkeys = [\"x\"]".to_string(),
                "mirror.toml:2: [import] source #1.name: source \"a/b\" must be a host name",
            ),
            (
                "[[import.source]]\nname = \"a.example\"\nkeys = []".to_string(),
                "mirror.toml:3: [import] source #1.keys: must list at least one key",
            ),
            (
                format!(
                    "[[import.source]]\nname = \"a.example\"\nkeys = [\"{a}\"]\n\
                     [[import.source]]\nname = \"a.example\"\nkeys = [\"{a}\"]"
                ),
                "mirror.toml:5: [import] source #2.name: \"a.example\" is listed twice",
            ),
        ] {
            let e = parse(&text).expect_err(&text).to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    #[test]
    fn export_settings() {
        let none = parse("").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(none.export, None);
        let c = Config::parse(
            "[export]\nkey = \"keys/export.key\"\nsource = \"mirror.example.com\"\n",
            Path::new("/etc/gomirror/mirror.toml"),
            &Overrides::default(),
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            c.export,
            Some(ExportSettings {
                key: "/etc/gomirror/keys/export.key".into(),
                source: Some("mirror.example.com".into()),
            })
        );
        for (text, want) in [
            (
                "[export]\nkey = \"\"",
                "mirror.toml:2: [export] key: must not be empty",
            ),
            (
                "[export]\nkey = \"k\"\nsource = \"a/b\"",
                "mirror.toml:3: [export] source: source \"a/b\" must be a host name",
            ),
            (
                "[export]\nsource = \"a.example\"",
                "mirror.toml:2: [export] source: needs [export] key too",
            ),
            (
                "[export]\nsign = 1",
                "mirror.toml:2: [export] sign: unknown key",
            ),
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.starts_with(want), "{text:?}: {e}");
        }
    }

    // See: #13
    #[test]
    fn issue_13_database_inside_the_tree_is_refused() {
        // (file text, the whole message)
        let cases = [
            (
                "[tree]\ndir = \"tree\"\n[state]\ndatabase = \"tree/state.db\"\n",
                "mirror.toml:4: [state] database: tree/state.db is inside [tree] dir tree, \
                 which the web server serves to clients; keep it outside the tree",
            ),
            (
                "[tree]\ndir = \"./srv/../tree\"\n[state]\ndatabase = \"tree/./x/s.db\"\n",
                "mirror.toml:4: [state] database: tree/./x/s.db is inside [tree] dir \
                 ./srv/../tree, which the web server serves to clients; keep it outside the tree",
            ),
            (
                "[tree]\ndir = \".\"\n",
                "mirror.toml: [state] database: state/gomirror.db is inside [tree] dir ., \
                 which the web server serves to clients; keep it outside the tree",
            ),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.to_string(), want, "{text}");
        }
        for ok in [
            "[tree]\ndir = \"tree\"\n[state]\ndatabase = \"treehouse.db\"\n",
            "[tree]\ndir = \"srv/tree\"\n[state]\ndatabase = \"srv/state.db\"\n",
        ] {
            parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    // See: #13
    #[test]
    fn issue_13_home_is_expanded_in_paths() {
        let home = Some(Path::new("/home/op"));
        assert_eq!(expand_home("~/x", home), Ok("/home/op/x".into()));
        assert_eq!(expand_home("~", home), Ok("/home/op".into()));
        assert_eq!(expand_home("x/~", home), Ok("x/~".into()));
        assert_eq!(expand_home("/srv/x", home), Ok("/srv/x".into()));
        assert_eq!(
            expand_home("~op/x", home),
            Err("\"~op/x\": \"~user\" is not expanded; write the full path".into())
        );
        assert_eq!(
            expand_home("~/x", None),
            Err(
                "\"~/x\": $HOME is not set to an absolute path, so \"~\" cannot be \
                 expanded; write the full path"
                    .into()
            )
        );
        // Through the config: an absolute result does not join the config's directory.
        let Some(home) = std::env::var_os("HOME").filter(|h| Path::new(h).is_absolute()) else {
            return;
        };
        let cfg = parse("[tree]\ndir = \"~/gomirror-tree\"\n").expect("valid");
        assert_eq!(cfg.tree_dir, Path::new(&home).join("gomirror-tree"));
        let err = parse("[tree]\ndir = \"~root/t\"\n").expect_err("~user");
        assert_eq!(
            err.to_string(),
            "mirror.toml:2: [tree] dir: \"~root/t\": \"~user\" is not expanded; write the full path"
        );
    }

    // See: #13
    #[test]
    fn issue_13_missing_comma_in_a_range_is_named() {
        let err = parse("[[watch]]\nmodule = \"rsc.io/quote\"\nversions = \">=v1.2.0 <v2\"\n")
            .expect_err("missing comma");
        assert_eq!(
            err.to_string(),
            "mirror.toml:3: [[watch]] #1 versions: range \">=v1.2.0 <v2\": a comma is missing \
             between \">=v1.2.0\" and \"<v2\"; write \">=v1.2.0, <v2\""
        );
    }

    #[test]
    fn issue_12_toolchain_platforms_and_versions() {
        // See: #12
        let cfg = parse("[toolchain]\nplatforms = [\"linux/amd64\", \"darwin/arm64\"]\nversions = \"latest 2\"\n")
            .unwrap_or_else(|e| panic!("{e}"));
        let shown: Vec<String> = cfg
            .toolchain
            .platforms
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(shown, ["linux/amd64", "darwin/arm64"]);
        assert_eq!(cfg.toolchain.latest, Some(2));
        let none = parse("[toolchain]\nplatforms = []\n").unwrap_or_else(|e| panic!("{e}"));
        assert!(none.toolchain.platforms.is_empty());
        let cases: &[(&str, &str)] = &[
            ("[toolchain]\nplatforms = [\"linux/x86_64\"]\n", "mirror.toml:2: [toolchain] platforms #1: \"linux/x86_64\": unknown GOOS/GOARCH (`go tool dist list` names the known ones)"),
            ("[toolchain]\nplatforms = [\"linux\"]\n", "mirror.toml:2: [toolchain] platforms #1: \"linux\": want GOOS/GOARCH, e.g. \"linux/amd64\""),
            ("[toolchain]\nplatforms = [\"linux/arm64\", \"linux/arm64\"]\n", "mirror.toml:2: [toolchain] platforms #2: \"linux/arm64\" is listed twice"),
            ("[toolchain]\nversions = \"latest 0\"\n", "mirror.toml:2: [toolchain] versions: \"latest 0\": want \"latest N\" with N at least 1"),
            ("[toolchain]\nversions = \"all\"\n", "mirror.toml:2: [toolchain] versions: \"all\": want \"latest N\""),
            ("[toolchain]\nplatform = []\n", "mirror.toml:2: [toolchain] platform: unknown key (expected one of: platforms, versions)"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.contains(want), "{text:?}\n got: {err}\nwant: {want}");
        }
    }

    /// `[retention]` reads its keys, defaults to keeping everything, and
    /// names the key of a bad value. See: #15
    #[test]
    fn issue_15_retention_values_are_read() {
        let text = "[retention]\nkeep_unused_for = \"180d\"\nkeep_latest = 5\n\
                    max_tree_size = \"2T\"\nlist_max_age = \"2m\"\n";
        let r = parse(text).unwrap_or_else(|e| panic!("{e}")).retention;
        let want = RetentionSettings {
            keep_unused_for: Some(Duration::from_secs(180 * 24 * 3600)),
            keep_latest: 5,
            max_tree_size: Some(2 << 40),
            list_max_age: Duration::from_secs(120),
        };
        assert_eq!(r, want);
        let none = parse("").unwrap_or_else(|e| panic!("{e}")).retention;
        assert!(!none.is_set());
        assert_eq!((none.keep_latest, none.list_max_age.as_secs()), (3, 60));
        let sizes: &[(&str, u64)] = &[
            ("1000", 1000),
            ("1K", 1024),
            ("1.5G", 3 << 29),
            ("2 TiB", 2 << 40),
            ("10MB", 10 << 20),
        ];
        for (text, want) in sizes {
            assert_eq!(parse_size(text), Ok(*want), "{text}");
        }
        let cases: &[(&str, &str)] = &[
            ("[retention]\nkeep_unused_for = \"soon\"\n", "mirror.toml:2: [retention] keep_unused_for: invalid duration \"soon\""),
            ("[retention]\nkeep_latest = -1\n", "mirror.toml:2: [retention] keep_latest: must be at least 0, got -1"),
            ("[retention]\nmax_tree_size = \"2X\"\n", "mirror.toml:2: [retention] max_tree_size: invalid size \"2X\": unknown unit \"X\""),
            ("[retention]\nmax_tree_size = \"0\"\n", "mirror.toml:2: [retention] max_tree_size: must be at least 1 byte, got \"0\""),
            ("[retention]\nlist_max_age = \"0s\"\n", "mirror.toml:2: [retention] list_max_age: must be greater than 0"),
            ("[retention]\nkeep = 1\n", "mirror.toml:2: [retention] keep: unknown key (expected one of: keep_unused_for, keep_latest, max_tree_size, list_max_age)"),
        ];
        for (text, want) in cases {
            let err = parse(text).expect_err(text).to_string();
            assert!(err.starts_with(want), "{text:?}\n got: {err}\nwant: {want}");
        }
    }
}
