//! The feed benchmark (`cargo bench --bench sync -- --feed`): how long a sync that follows the
//! index feed takes when the feed has nothing new over a large database, and how long planning a
//! large feed takes.
//!
//! Input: `--known N` (100000) published versions seeded into the state database, `--watched N`
//! (1000) of their modules watched and recently listed, `--new N` (20000) feed entries to plan.
//! Output: a table on stdout, then one line of JSON with every figure. Checks only what makes the
//! figures meaningful: exit codes, the number of feed requests, the pending rows planned.
//!
//! Runs, in order, each a `gomirror` child process timed from spawn to exit, against the test
//! upstream (`tests/it/upstream.rs`) serving `/index` in this process:
//! 1. no-op: the feed is empty after the cursor; the database holds `known` versions;
//! 2. plan: `new` entries appear (runs of 4 share a timestamp, so pages end inside runs), and
//!    `gomirror sync --plan-only` pages through them and records each as pending, fetching nothing;
//! 3. no-op again, now over `known + new` rows, with the cursor inside the last run. The planned
//!    versions are first marked published in the database, as if a sync had fetched them (the
//!    upstream serves no files: this bench measures planning, not fetching).

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::upstream::{FeedLine, Upstream};

const FEED_START: &str = "2024-01-01T00:00:00Z";

struct FeedOpts {
    known: usize,
    watched: usize,
    new: usize,
    keep: bool,
}

impl FeedOpts {
    fn parse(args: &[String]) -> Result<FeedOpts> {
        let value = |name: &str, default: usize| crate::number_arg(args, name, default);
        let opts = FeedOpts {
            known: value("--known", 100_000)?,
            watched: value("--watched", 1000)?,
            new: value("--new", 20_000)?,
            keep: args.iter().any(|a| a == "--keep"),
        };
        ensure!(opts.known >= 5, "--known: at least 5");
        ensure!(
            opts.watched <= opts.known / 5,
            "--watched: at most known / 5 modules"
        );
        Ok(opts)
    }
}

/// One timed `gomirror` run.
struct Timed {
    secs: f64,
    feed_requests: usize,
    requests: usize,
}

impl Timed {
    fn json(&self) -> Value {
        json!({"secs": crate::round(self.secs, 3), "feed_requests": self.feed_requests, "requests": self.requests})
    }
}

pub fn main(args: &[String], gomirror: &Path) -> Result<()> {
    let opts = FeedOpts::parse(args)?;
    crate::in_work_dir("gomirror-feed-bench-", opts.keep, |work| {
        run(&opts, gomirror, work)
    })
}

fn run(opts: &FeedOpts, gomirror: &Path, work: &Path) -> Result<()> {
    let bin = work.join("gomirror");
    fs::copy(gomirror, &bin).with_context(|| format!("{}", gomirror.display()))?;
    let rt = tokio::runtime::Runtime::new().context("tokio runtime")?;
    let upstream = rt.block_on(Upstream::start(vec![]));

    write_config(work, &upstream.url(), 0)?;
    gomirror_run(&bin, work, &["sync", "--plan-only"], &upstream, "seed")?;
    let seed_start = Instant::now();
    seed(&work.join("state.db"), opts)?;
    let seed_secs = seed_start.elapsed().as_secs_f64();
    write_config(work, &upstream.url(), opts.watched)?;

    let noop = gomirror_run(&bin, work, &["sync"], &upstream, "noop")?;
    let lines = feed_lines(opts.new)?;
    upstream.feed_push(lines);
    let plan = gomirror_run(&bin, work, &["sync", "--plan-only"], &upstream, "plan")?;
    let pending = count(
        &work.join("state.db"),
        "SELECT COUNT(*) FROM versions WHERE status = 'pending'",
    )?;
    ensure!(
        pending == opts.new,
        "plan: {pending} pending rows, want {}",
        opts.new
    );
    publish_pending(&work.join("state.db"))?;
    let noop_after = gomirror_run(&bin, work, &["sync"], &upstream, "noop-after")?;
    for (name, t) in [("no-op", &noop), ("no-op after", &noop_after)] {
        ensure!(
            t.feed_requests == 1,
            "{name}: {} feed requests, want 1",
            t.feed_requests
        );
        ensure!(
            t.requests == 1,
            "{name}: {} requests, want only the feed's",
            t.requests
        );
    }
    print_table(opts, &noop, &plan, &noop_after, seed_secs);
    let figures = json!({
        "bench": "feed",
        "known": opts.known,
        "watched": opts.watched,
        "new": opts.new,
        "seed_secs": crate::round(seed_secs, 3),
        "noop": noop.json(),
        "plan": plan.json(),
        "noop_after": noop_after.json(),
    });
    println!("{figures}");
    Ok(())
}

/// `mirror.toml`: the feed on, the first `watched` seeded modules watched.
fn write_config(work: &Path, url: &str, watched: usize) -> Result<()> {
    let mut text = format!(
        "[upstream]\nproxies = [\"{url}\"]\n[tree]\ndir = \"tree\"\n[state]\ndatabase = \"state.db\"\n[sumdb]\nkey = \"off\"\n\
         [feed]\nenabled = true\nindex = \"{url}\"\nproxy = \"{url}\"\nstart = \"{FEED_START}\"\n\
         [[feed.rule]]\ninclude = \"example.com/feed\"\n[[feed.rule]]\nwatched = true\n"
    );
    for i in 0..watched {
        text.push_str(&format!(
            "[[watch]]\nmodule = \"example.com/known/m{i:06}\"\nversions = \"latest\"\n"
        ));
    }
    fs::write(work.join("mirror.toml"), text).context("writing mirror.toml")
}

/// Runs `gomirror <args>` to its end (exit 0 required) and times it.
fn gomirror_run(
    bin: &Path,
    work: &Path,
    args: &[&str],
    upstream: &Upstream,
    name: &str,
) -> Result<Timed> {
    let log = work.join(format!("{name}.log"));
    let err = fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
    let mut cmd = Command::new(bin);
    cmd.args(args)
        .arg("--no-progress")
        .arg("--config")
        .arg(work.join("mirror.toml"))
        .env("GOMIRROR_LOG", "warn")
        .env_remove("GOMIRROR_UPSTREAM")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(err);
    let (feed_before, total_before) = (upstream.requests("/index"), upstream.total_requests());
    let start = Instant::now();
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    let secs = start.elapsed().as_secs_f64();
    ensure!(status.success(), "{name}: {status}; see {}", log.display());
    Ok(Timed {
        secs,
        feed_requests: upstream.requests("/index") - feed_before,
        requests: upstream.total_requests() - total_before,
    })
}

/// `known` published versions, five per module, in one transaction; the modules listed now.
fn seed(db: &Path, opts: &FeedOpts) -> Result<()> {
    let mut conn = rusqlite::Connection::open(db).context("opening the state database")?;
    let tx = conn.transaction()?;
    let now = OffsetDateTime::now_utc()
        .replace_nanosecond(0)?
        .format(&Rfc3339)?;
    {
        let mut module = tx.prepare(
            "INSERT INTO modules (path, first_seen, listed_at) VALUES (?1, ?2, ?2) RETURNING id",
        )?;
        let mut version = tx.prepare(
            "INSERT INTO versions (module_id, version, status, info_size, mod_size, zip_size,
                 h1_zip, h1_mod, zip_sha256, time, attempts, first_seen, updated_at, published_at)
             VALUES (?1, ?2, 'published', 60, 30, 1000, 'h1:zip=', 'h1:mod=', ?3,
                 '2023-01-01T00:00:00Z', 1, ?4, ?4, ?4)",
        )?;
        let sha = "ab".repeat(32);
        for m in 0..opts.known / 5 {
            let id: i64 =
                module.query_row((format!("example.com/known/m{m:06}"), &now), |r| r.get(0))?;
            for v in 0..5 {
                version.execute((id, format!("v1.0.{v}"), &sha, &now))?;
            }
        }
    }
    tx.commit()?;
    Ok(())
}

/// `n` feed entries for new modules; runs of four share a timestamp.
fn feed_lines(n: usize) -> Result<Vec<FeedLine>> {
    let start = OffsetDateTime::parse(FEED_START, &Rfc3339)?;
    (0..n)
        .map(|i| {
            let micros = i64::try_from(i / 4 + 1)?;
            let at = start + time::Duration::microseconds(micros) + time::Duration::nanoseconds(7);
            let ts = at.format(&Rfc3339)?;
            Ok(FeedLine::entry(
                &format!("example.com/feed/m{i:06}"),
                "v1.0.0",
                &ts,
            ))
        })
        .collect()
}

/// Records every pending version as published, as a sync that fetched them would.
fn publish_pending(db: &Path) -> Result<()> {
    let conn = rusqlite::Connection::open(db).context("opening the state database")?;
    conn.execute(
        "UPDATE versions SET status = 'published', info_size = 60, mod_size = 30,
             zip_size = 1000, h1_zip = 'h1:zip=', h1_mod = 'h1:mod=', zip_sha256 = 'ab',
             time = '2023-01-01T00:00:00Z', published_at = updated_at
         WHERE status = 'pending'",
        [],
    )?;
    Ok(())
}

fn count(db: &Path, sql: &str) -> Result<usize> {
    let conn = rusqlite::Connection::open(db).context("opening the state database")?;
    let n: i64 = conn.query_row(sql, [], |r| r.get(0))?;
    Ok(usize::try_from(n)?)
}

fn print_table(opts: &FeedOpts, noop: &Timed, plan: &Timed, after: &Timed, seed_secs: f64) {
    println!(
        "{} known versions ({} watched modules, listed recently), {} new feed entries\n",
        opts.known, opts.watched, opts.new
    );
    println!(
        "{:<40}{:>9}{:>15}{:>11}",
        "", "time", "feed requests", "requests"
    );
    for (name, t) in [
        ("gomirror sync, feed has nothing new", noop),
        ("gomirror sync --plan-only, new entries", plan),
        ("gomirror sync, nothing new again", after),
    ] {
        println!(
            "{name:<40}{:>7.3} s{:>15}{:>11}",
            t.secs, t.feed_requests, t.requests
        );
    }
    println!(
        "\ntargets: no-op < 1 s with exactly 1 feed request ({}), plan < 2 s ({})",
        met(noop.secs < 1.0 && noop.feed_requests == 1),
        met(plan.secs < 2.0)
    );
    println!("(seeding the database took {seed_secs:.2} s, not measured above)");
}

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "NOT met"
    }
}
