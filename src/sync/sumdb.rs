//! The checksum database's part of a run: reach it (once a run has work),
//! look each version up while it downloads, and per batch pin the offline
//! copy to the newest verified head.
//!
//! Go: cmd/go/internal/modfetch/sumdb.go (dbDial: which URL; the proxy's
//! `sumdb/<name>/supported` first) and x/mod/sumdb/client.go (what a lookup
//! must prove). The proofs themselves are `verify::sumdb::client`'s.

use std::sync::Mutex;

use futures::stream::{self, StreamExt};

use tokio_util::sync::CancellationToken;
use tracing::info;

use super::{blocking, Ctx, SyncError};
use crate::commit;
use crate::config::{Config, SumdbSettings};
use crate::fetch::{self, Upstream};
use crate::module::ModVer;
use crate::publish;
use crate::publish::layout::{self, SumdbFile};
use crate::publish::Staged;
use crate::state::{Outcome, RecordId, Store};
use crate::verify::sumdb::client::{open_head, Client, Record, SignedHead, SumdbError};

/// The checksum database for one run.
pub(super) struct Sumdb {
    pub client: Client,
    pub settings: SumdbSettings,
    /// Size of the head this run last pinned the offline copy to: while it
    /// stays the same, a batch needs tiles for its own records only.
    pinned: Mutex<Option<i64>>,
}

impl Sumdb {
    pub fn name(&self) -> &str {
        &self.settings.name
    }

    /// Should `mv` be looked up? Not if private (its name never leaves us).
    pub fn covers(&self, mv: &ModVer) -> bool {
        !self.settings.is_private(mv.path.as_str())
    }

    /// A commit pinned the offline copy to the head of size `n`.
    fn pinned_to(&self, n: i64) {
        *self.pinned.lock().unwrap_or_else(|e| e.into_inner()) = Some(n);
    }
}

/// Reaches the database named in `config`, for a run that has versions to
/// fetch or to [`backfill`]. `None` when verification is off.
pub(super) async fn connect(config: &Config, ctx: &Ctx) -> Result<Option<Sumdb>, SyncError> {
    let (store, token) = (&ctx.store, &ctx.stop);
    let Some(settings) = config.sumdb.clone() else {
        return Ok(None);
    };
    let err = |source| SyncError::Sumdb(Box::new(source));
    let verifier = settings.verifier.clone();
    let http = dial(config, &ctx.client, &settings, token)
        .await
        .map_err(err)?;
    let newest = match store.newest_sumdb_head(&settings.name).await? {
        Some(h) => Some(open_head(&verifier, &h.note, "stored tree head").map_err(err)?),
        None => None,
    };
    let client = Client::new(http, verifier, newest);
    if settings.offline_copy {
        let (tree, name) = (ctx.tree.clone(), settings.name.clone());
        blocking("stray cleanup", move || {
            publish::remove_stray_sumdb_temps(&tree, &name)
        })
        .await?
        .map_err(SyncError::Publish)?;
    }
    Ok(Some(Sumdb {
        client,
        // Unknown at first, even if the state names a pinned head: a run that
        // stopped after pinning it may not have written all of its tiles.
        pinned: Mutex::new(None),
        settings,
    }))
}

/// Published versions the database covers that have no record yet: they
/// were published while verification was off. Until they are looked up the
/// offline copy cannot be `supported`.
pub(super) async fn unvouched(config: &Config, store: &Store) -> Result<Vec<ModVer>, SyncError> {
    let Some(settings) = config.sumdb.as_ref().filter(|s| s.offline_copy) else {
        return Ok(Vec::new());
    };
    let rows = store.published_without_record(&settings.name).await?;
    Ok(rows
        .into_iter()
        .filter(|r| !settings.is_private(r.mv.path.as_str()))
        .map(|r| r.mv)
        .collect())
}

/// Looks up `versions` (published, without a record), checks that the
/// database agrees with what the tree serves, and adds them to the offline
/// copy. Returns what disagreed or failed: a published file never changes,
/// so a disagreement is reported (exit 1), not repaired.
pub(super) async fn backfill(
    ctx: &Ctx,
    db: &Sumdb,
    versions: Vec<ModVer>,
    concurrency: usize,
) -> Result<Vec<String>, SyncError> {
    info!(
        versions = versions.len(),
        "looking up versions published before verification was on"
    );
    let published: std::collections::HashMap<ModVer, (String, String)> = ctx
        .store
        .published_records(db.name())
        .await?
        .into_iter()
        .map(|r| (r.mv, (r.h1_zip, r.h1_mod)))
        .collect();
    let looked_up: Vec<_> = stream::iter(versions)
        .map(|mv| async move {
            let r = db.client.lookup(&mv, &ctx.stop).await;
            (mv, r)
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut problems = Vec::new();
    let mut records = Vec::new();
    for (mv, result) in looked_up {
        match result {
            Err(e) if e.is_fork() => return Err(SyncError::Sumdb(Box::new(e))),
            Err(e) => problems.push(super::chain(&e)),
            Ok(r) => {
                let ours = published.get(&mv);
                if ours == Some(&(r.hashes.h1_zip.clone(), r.hashes.h1_mod.clone())) {
                    records.push((mv, r));
                } else {
                    let (zip, m) = ours.cloned().unwrap_or_default();
                    let p = format!(
                        "SECURITY ERROR: {mv} is published with {zip} and go.mod {m}, \
                         but checksum database {} says {} and go.mod {}",
                        db.name(),
                        r.hashes.h1_zip,
                        r.hashes.h1_mod
                    );
                    tracing::error!("ALARM: {p}");
                    problems.push(p);
                }
            }
        }
    }
    for chunk in records.chunks(256) {
        commit(ctx, Some(db), Vec::new(), chunk)
            .await?
            .map_err(|e| SyncError::Commit(Box::new(e)))?;
    }
    Ok(problems)
}

/// The database's base URL, as the go command picks it: `[sumdb] url` if
/// set; else the first upstream proxy that answers `sumdb/<name>/supported`
/// (404/410: try the next); else `https://<name>/`.
async fn dial(
    config: &Config,
    run_client: &fetch::Client,
    settings: &SumdbSettings,
    token: &CancellationToken,
) -> Result<fetch::Client, SumdbError> {
    let client_for = |base: Upstream| {
        // The run's request rate, Retry-After holds and counters cover the
        // database's requests too; its in-flight budget is its own.
        run_client
            .for_service(vec![base])
            .map_err(|e| SumdbError::Setup {
                name: settings.name.clone(),
                reason: e.to_string(),
            })
    };
    if let Some(url) = &settings.url {
        return reachable(client_for(url.clone())?, settings, token).await;
    }
    for proxy in &config.upstreams {
        let base = format!("{}sumdb/{}/", proxy.as_str(), settings.name);
        let Ok(base) = Upstream::parse(&base) else {
            continue;
        };
        let http = client_for(base)?;
        match http.get("supported", 1 << 10, token).await {
            Ok(_) => {
                info!(via = %proxy, db = %settings.name, "checksum database through the proxy");
                return Ok(http);
            }
            Err(e) if e.is_not_found() => continue,
            Err(e) => {
                return Err(SumdbError::Fetch {
                    what: format!("asking {proxy} for checksum database {}", settings.name),
                    source: e,
                })
            }
        }
    }
    let direct =
        Upstream::parse(&format!("https://{}/", settings.name)).map_err(|e| SumdbError::Setup {
            name: settings.name.clone(),
            reason: e.to_string(),
        })?;
    reachable(client_for(direct)?, settings, token).await
}

/// Fails the run early, with one clear error, when the database does not
/// answer `latest`, rather than failing every version's lookup alike.
async fn reachable(
    http: fetch::Client,
    settings: &SumdbSettings,
    token: &CancellationToken,
) -> Result<fetch::Client, SumdbError> {
    match http.get("latest", 1 << 16, token).await {
        Ok(_) => Ok(http),
        Err(source) => Err(SumdbError::Fetch {
            what: format!("reaching checksum database {}", settings.name),
            source,
        }),
    }
}

/// Commits `staged` with the database's `records` of its versions (or, for
/// a backfill, of versions published before), then notes the head the
/// offline copy is pinned to. The outer error stopped the run before the
/// commit (a tile that could not be fetched); the inner one is the commit's.
pub(super) async fn commit(
    ctx: &Ctx,
    db: Option<&Sumdb>,
    staged: Vec<Staged>,
    records: &[(ModVer, Record)],
) -> Result<Result<Vec<Outcome>, commit::CommitError>, SyncError> {
    let records = match db {
        Some(db) if !records.is_empty() => self::records(ctx, db, records).await?,
        _ => None,
    };
    let pinned = records
        .as_ref()
        .filter(|r| r.offline.is_some())
        .map(|r| r.head.tree.n);
    let committed = commit::commit(&ctx.tree, &ctx.store, commit::Batch { staged, records }).await;
    if let (Ok(_), Some(db), Some(n)) = (&committed, db, pinned) {
        db.pinned_to(n);
    }
    Ok(committed)
}

/// A batch's records, for `commit`: the pinned head (the newest verified
/// one), their ids, and — with the offline copy on — the tiles that head
/// needs and the lookups. `None` before any head was verified.
async fn records(
    ctx: &Ctx,
    db: &Sumdb,
    records: &[(ModVer, Record)],
) -> Result<Option<commit::Records>, SyncError> {
    let Some(pin) = db.client.latest() else {
        return Ok(None);
    };
    let offline = match db.settings.offline_copy {
        true => Some(offline_copy(ctx, db, &pin, records).await?),
        false => None,
    };
    Ok(Some(commit::Records {
        db: db.settings.clone(),
        ids: records
            .iter()
            .map(|(mv, r)| RecordId {
                mv: mv.clone(),
                id: r.id,
            })
            .collect(),
        head: pin,
        offline,
    }))
}

/// The tiles `pin` needs that the tree lacks, and the lookups.
async fn offline_copy(
    ctx: &Ctx,
    db: &Sumdb,
    pin: &SignedHead,
    records: &[(ModVer, Record)],
) -> Result<commit::OfflineCopy, SyncError> {
    let err = |e| SyncError::Sumdb(Box::new(e));
    let name = db.name().to_owned();
    let repinned = *db.pinned.lock().unwrap_or_else(|e| e.into_inner()) != Some(pin.tree.n);
    let mut ids: Vec<i64> = records.iter().map(|(_, r)| r.id).collect();
    let mut old_sizes = Vec::new();
    if repinned {
        // Every lookup already served must verify against the new head too
        // (a client that sees it caches it), and so must the consistency of
        // every older pinned head a client may have cached.
        ids.extend(ctx.store.published_sumdb_ids(&name).await?);
        old_sizes = ctx
            .store
            .pinned_sumdb_heads(&name)
            .await?
            .iter()
            .map(|h| h.size)
            .collect();
    }
    let needed = db
        .client
        .tiles_needed(&pin.tree, &ids, &old_sizes)
        .await
        .map_err(err)?;
    // Only the tiles the tree lacks are fetched (a bucket is asked about
    // them all at once). One it could not be asked about is fetched again:
    // its conditional put finds it in place. See: #17
    let tree = ctx.tree.clone();
    let rels: Vec<String> = needed
        .iter()
        .map(|t| layout::sumdb_rel(&name, SumdbFile::Tile(t)))
        .collect();
    let served = blocking("looking for tiles", move || tree.are_served(&rels)).await?;
    let missing = needed
        .into_iter()
        .zip(served)
        .filter(|(_, served)| !matches!(served, Ok(true)))
        .map(|(t, _)| t)
        .collect();
    let tiles = db
        .client
        .tiles(&pin.tree, missing, &ctx.stop)
        .await
        .map_err(err)?;
    let lookups = records
        .iter()
        .map(|(mv, r)| {
            publish::lookup_body(r.id, &r.text, &pin.note)
                .map(|body| (mv.clone(), body))
                .map_err(|source| SumdbError::Tlog {
                    what: format!("{mv}: lookup for the offline copy"),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    tracing::debug!(
        tiles = tiles.len(),
        lookups = lookups.len(),
        tree = pin.tree.n,
        "offline checksum database"
    );
    Ok(commit::OfflineCopy { tiles, lookups })
}
