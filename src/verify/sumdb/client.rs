//! The checksum database over the network: lookups and tiles, checked
//! against the newest tree head this mirror has verified.
//!
//! Go: x/mod/sumdb/client.go. Like Go's client, every signed tree head that
//! arrives (with a lookup) must be consistent with the newest one seen so
//! far — proved with tiles — or the log has forked; every record must be
//! included in the tree its lookup was signed with. Unlike Go's client this
//! one is shared by every version of a run: tiles are fetched once
//! (single-flight) and proofs against a head already checked are not
//! repeated.
//!
//! HTTP, retries and the in-flight bound are `fetch::Client`'s; this module
//! decides what the bytes mean.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::future::try_join_all;
use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;

use super::local::recorded;
use super::note::{self, NoteError, Verifier};
use super::tile::{plan_tiles, Tile, TileHashReader};
use super::tlog::{
    self, check_record, check_tree, format_hash, prove_record, prove_tree, record_hash,
    stored_hash_index, HashReader, TlogError, Tree,
};
use super::{
    lookup_path, parse_lookup, parse_record_hashes, LookupError, RecordHashes, TILE_HEIGHT,
};
use crate::fetch::{self, FetchError};
use crate::module::ModVer;

/// Far beyond any real log (sum.golang.org holds well under 2^30 records).
const MAX_TREE_SIZE: i64 = 1 << 60;
/// A lookup response or a tile is far smaller than this.
const MAX_BODY: u64 = 1 << 20;
/// Tiles kept in memory; past it the cache starts over (a run touches few
/// distinct tiles unless it verifies tens of thousands of versions).
const MAX_CACHED_TILES: usize = 16 * 1024;

/// A signed tree head: the tree and the note that signs it, as served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHead {
    pub tree: Tree,
    pub note: Bytes,
}

/// A record the database vouches for, included in `head`'s tree.
#[derive(Debug, Clone)]
pub struct Record {
    pub id: i64,
    /// The go.sum lines, as hashed into the log.
    pub text: Vec<u8>,
    pub hashes: RecordHashes,
    pub head: SignedHead,
}

#[derive(Debug, thiserror::Error)]
pub enum SumdbError {
    /// 404/410: the database has no such module version.
    #[error("{mv}: checksum database has no record")]
    NotFound {
        mv: String,
        #[source]
        source: FetchError,
    },
    // The cause is `#[source]`: the chain shows it once (STYLE.md §2).
    // See: #13 ("reading … (after 5 attempts)" was printed twice).
    #[error("{what}")]
    Fetch {
        what: String,
        #[source]
        source: FetchError,
    },
    #[error(transparent)]
    Lookup(#[from] LookupError),
    // As for `Fetch`: the cause shows once, from the chain.
    #[error("{what}: verifying signed tree head")]
    Note {
        what: String,
        #[source]
        source: NoteError,
    },
    #[error("{what}")]
    Tlog {
        what: String,
        #[source]
        source: TlogError,
    },
    /// Two signed heads that cannot both be true: the log was forked (or
    /// the server is lying). Stops the run.
    #[error(
        "SECURITY ERROR: checksum database {name} has forked: signed tree {new_n} ({new_hash}) \
         is not consistent with tree {old_n} ({old_hash}) verified before{}",
        detail.as_ref().map(|d| format!(": {d}")).unwrap_or_default()
    )]
    Fork {
        name: String,
        old_n: i64,
        old_hash: String,
        new_n: i64,
        new_hash: String,
        detail: Option<String>,
    },
    /// The database cannot be reached as configured.
    #[error("checksum database {name}: {reason}")]
    Setup { name: String, reason: String },
    #[error("cancelled")]
    Cancelled,
}

impl SumdbError {
    pub fn is_fork(&self) -> bool {
        matches!(self, SumdbError::Fork { .. })
    }

    fn fetch(what: String, source: FetchError) -> SumdbError {
        match source {
            FetchError::Cancelled => SumdbError::Cancelled,
            source => SumdbError::Fetch { what, source },
        }
    }
}

/// One checksum database, reached at one base URL.
pub struct Client {
    http: fetch::Client,
    verifier: Verifier,
    tiles: Mutex<HashMap<Tile, Arc<OnceCell<Bytes>>>>,
    state: Mutex<Heads>,
}

/// The newest verified head, and every head proved consistent with it.
#[derive(Default)]
struct Heads {
    latest: Option<SignedHead>,
    consistent: HashSet<(i64, tlog::Hash)>,
}

impl Client {
    /// `http` fetches relative to the database's base URL (direct, or a
    /// proxy's `sumdb/<name>/`). `newest` is the newest head verified in an
    /// earlier run: every head from now on must be consistent with it.
    pub fn new(http: fetch::Client, verifier: Verifier, newest: Option<SignedHead>) -> Client {
        let mut heads = Heads::default();
        if let Some(h) = newest {
            heads.consistent.insert((h.tree.n, h.tree.hash));
            heads.latest = Some(h);
        }
        Client {
            http,
            verifier,
            tiles: Mutex::default(),
            state: Mutex::new(heads),
        }
    }

    pub fn name(&self) -> &str {
        self.verifier.name()
    }

    /// The newest head verified so far.
    pub fn latest(&self) -> Option<SignedHead> {
        self.heads().latest.clone()
    }

    /// Fetches `mv`'s record, verifies the signed head that comes with it
    /// (signature, consistency with the newest head) and the record's
    /// inclusion in that head's tree. Go: client.go Lookup.
    pub async fn lookup(
        &self,
        mv: &ModVer,
        token: &CancellationToken,
    ) -> Result<Record, SumdbError> {
        let rel = lookup_path(mv);
        let body = match self.http.get(&rel, MAX_BODY, token).await {
            Ok(body) => body,
            Err(e) if e.is_not_found() => {
                return Err(SumdbError::NotFound {
                    mv: mv.to_string(),
                    source: e,
                })
            }
            Err(e) => {
                return Err(SumdbError::fetch(
                    format!("{mv}: checksum database lookup"),
                    e,
                ))
            }
        };
        let lookup = parse_lookup(mv, &body)?;
        let head = self.open_head(&lookup.note, &format!("{mv}: lookup"))?;
        self.merge(&head, token).await?;
        self.check_inclusion(&head.tree, lookup.id, &lookup.text, mv, token)
            .await?;
        let hashes = parse_record_hashes(mv, &lookup.text)?;
        Ok(Record {
            id: lookup.id,
            text: lookup.text,
            hashes,
            head,
        })
    }

    /// Opens a signed tree note with this database's key.
    pub fn open_head(&self, note_bytes: &[u8], what: &str) -> Result<SignedHead, SumdbError> {
        open_head(&self.verifier, note_bytes, what)
    }

    /// Proves `head` consistent with the newest verified head and makes it
    /// the newest if it is larger. Go: client.go mergeLatest.
    pub async fn merge(
        &self,
        head: &SignedHead,
        token: &CancellationToken,
    ) -> Result<(), SumdbError> {
        loop {
            let (latest, known) = {
                let heads = self.heads();
                let known = heads.consistent.contains(&(head.tree.n, head.tree.hash));
                (heads.latest.clone(), known)
            };
            let Some(latest) = latest else {
                // Nothing verified before: this head starts the history, as
                // for a go client with an empty cache.
                if self.replace_latest(None, head) {
                    return Ok(());
                }
                continue;
            };
            if known && head.tree.n <= latest.tree.n {
                return Ok(());
            }
            let (old, new) = if head.tree.n <= latest.tree.n {
                (head.tree, latest.tree)
            } else {
                (latest.tree, head.tree)
            };
            self.check_consistent(old, new, token).await?;
            if head.tree.n <= latest.tree.n {
                self.heads()
                    .consistent
                    .insert((head.tree.n, head.tree.hash));
                return Ok(());
            }
            if self.replace_latest(Some(&latest), head) {
                return Ok(());
            }
            // Another lookup advanced the newest head meanwhile: check again.
        }
    }

    fn replace_latest(&self, expected: Option<&SignedHead>, head: &SignedHead) -> bool {
        let mut heads = self.heads();
        if heads.latest.as_ref() != expected {
            return false;
        }
        heads.consistent.insert((head.tree.n, head.tree.hash));
        heads.latest = Some(head.clone());
        true
    }

    fn heads(&self) -> std::sync::MutexGuard<'_, Heads> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `old` must be a prefix of `new`: a tree proof from tiles of `new`.
    async fn check_consistent(
        &self,
        old: Tree,
        new: Tree,
        token: &CancellationToken,
    ) -> Result<(), SumdbError> {
        let fork = |detail: Option<String>| SumdbError::Fork {
            name: self.name().to_owned(),
            old_n: old.n,
            old_hash: format_hash(&old.hash),
            new_n: new.n,
            new_hash: format_hash(&new.hash),
            detail,
        };
        if old.n == new.n {
            return if old.hash == new.hash {
                Ok(())
            } else {
                Err(fork(None))
            };
        }
        if old.n == 0 {
            return Ok(());
        }
        let indexes = recorded(|r| prove_tree(new.n, old.n, r).map(drop));
        let tiles = self.read_tiles(&new, &indexes, token).await?;
        let proof = prove_tree(new.n, old.n, &TileHashReader::new(new, TILE_HEIGHT, &tiles));
        // A tile that does not authenticate against `new` is a fork too:
        // the server signed a head its own tiles do not support.
        let proof = proof.map_err(|e| fork(Some(e.to_string())))?;
        check_tree(&proof, new.n, new.hash, old.n, old.hash).map_err(|e| fork(Some(e.to_string())))
    }

    async fn check_inclusion(
        &self,
        tree: &Tree,
        id: i64,
        text: &[u8],
        mv: &ModVer,
        token: &CancellationToken,
    ) -> Result<(), SumdbError> {
        let tlog_err = |source| SumdbError::Tlog {
            what: format!("{mv}: record {id} in tree {}", tree.n),
            source,
        };
        if id < 0 || id >= tree.n {
            return Err(tlog_err(TlogError::IndexNotInTree {
                index: id,
                tree_size: tree.n,
            }));
        }
        let indexes = recorded(|r| prove_record(tree.n, id, r).map(drop));
        let tiles = self.read_tiles(tree, &indexes, token).await?;
        let proof = prove_record(tree.n, id, &TileHashReader::new(*tree, TILE_HEIGHT, &tiles))
            .map_err(tlog_err)?;
        check_record(&proof, tree.n, tree.hash, id, record_hash(text)).map_err(tlog_err)
    }

    /// The tiles `tree`'s offline copy needs so that records `ids` and
    /// consistency with trees of `old_sizes` verify against it.
    pub async fn tiles_needed(
        &self,
        tree: &Tree,
        ids: &[i64],
        old_sizes: &[i64],
    ) -> Result<Vec<Tile>, SumdbError> {
        let tlog_err = |source| SumdbError::Tlog {
            what: format!("planning tiles for tree {}", tree.n),
            source,
        };
        let (n, ids, old_sizes) = (tree.n, ids.to_vec(), old_sizes.to_vec());
        let tree_copy = *tree;
        tokio::task::spawn_blocking(move || {
            let indexes = recorded(|r| {
                for &id in ids.iter().filter(|&&id| id < n) {
                    prove_record(n, id, r)?;
                }
                for &s in old_sizes.iter().filter(|&&s| s > 0 && s < n) {
                    prove_tree(n, s, r)?;
                }
                Ok(())
            });
            plan_tiles(TILE_HEIGHT, &tree_copy, &indexes)
        })
        .await
        .map_err(|e| tlog_err(TlogError::BadMath(format!("tile planning task: {e}"))))?
        .map_err(tlog_err)
    }

    /// The bytes of each tile of `missing` (some of [`Client::tiles_needed`]:
    /// those the offline copy lacks), each authenticated against `tree`.
    pub async fn tiles(
        &self,
        tree: &Tree,
        missing: Vec<Tile>,
        token: &CancellationToken,
    ) -> Result<Vec<(Tile, Bytes)>, SumdbError> {
        if missing.is_empty() {
            return Ok(Vec::new());
        }
        // Authenticate each missing tile by reading one hash of it.
        let probes: Vec<i64> = missing
            .iter()
            .map(|t| stored_hash_index(t.l * t.h, t.n << t.h))
            .collect();
        let tiles = self.read_tiles(tree, &probes, token).await?;
        TileHashReader::new(*tree, TILE_HEIGHT, &tiles)
            .read_hashes(&probes)
            .map_err(|source| SumdbError::Tlog {
                what: format!("authenticating tiles of tree {}", tree.n),
                source,
            })?;
        Ok(missing
            .into_iter()
            .filter_map(|t| tile_bytes(&tiles, &t).map(|b| (t, b)))
            .collect())
    }

    /// Fetches (or takes from the cache) every tile Go's tile reader would
    /// read for `indexes` of `tree`. Authentication is the caller's, through
    /// [`TileHashReader`].
    async fn read_tiles(
        &self,
        tree: &Tree,
        indexes: &[i64],
        token: &CancellationToken,
    ) -> Result<HashMap<Tile, Bytes>, SumdbError> {
        let plan = plan_tiles(TILE_HEIGHT, tree, indexes).map_err(|source| SumdbError::Tlog {
            what: format!("planning tiles for tree {}", tree.n),
            source,
        })?;
        let fetched = try_join_all(plan.into_iter().map(|t| async move {
            let data = self.tile(t, token).await?;
            Ok::<_, SumdbError>((t, data))
        }))
        .await?;
        Ok(fetched.into_iter().collect())
    }

    /// One tile, fetched once per run however many versions need it.
    async fn tile(&self, tile: Tile, token: &CancellationToken) -> Result<Bytes, SumdbError> {
        let cell = {
            let mut cache = self.tiles.lock().unwrap_or_else(PoisonError::into_inner);
            if cache.len() >= MAX_CACHED_TILES {
                cache.clear();
            }
            cache.entry(tile).or_default().clone()
        };
        cell.get_or_try_init(|| self.fetch_tile(tile, token))
            .await
            .cloned()
    }

    /// A partial tile that the server no longer has is the prefix of its
    /// full tile. Go: client.go readTile (which tries the full tile first;
    /// we try it second, as the partial one at the edge is the common case).
    async fn fetch_tile(&self, tile: Tile, token: &CancellationToken) -> Result<Bytes, SumdbError> {
        let what = || format!("reading tile {}", tile.path());
        match self.http.get(&tile.path(), MAX_BODY, token).await {
            Ok(data) => Ok(data),
            Err(e) if e.is_not_found() && !tile.is_full() => {
                let full = self
                    .http
                    .get(&tile.full().path(), MAX_BODY, token)
                    .await
                    .map_err(|e| SumdbError::fetch(what(), e))?;
                let want = tile.w as usize * tlog::HASH_SIZE;
                if full.len() < want {
                    return Err(SumdbError::Tlog {
                        what: what(),
                        source: TlogError::TileTooShort {
                            len: full.len(),
                            tile: tile.full().path(),
                        },
                    });
                }
                Ok(full.slice(..want))
            }
            Err(e) => Err(SumdbError::fetch(what(), e)),
        }
    }
}

/// Opens a signed tree note with `verifier`: signature, then tree text.
/// Go: tlog.ParseTree(note.Open(...).Text).
pub fn open_head(
    verifier: &Verifier,
    note_bytes: &[u8],
    what: &str,
) -> Result<SignedHead, SumdbError> {
    let note = note::open(note_bytes, &[verifier]).map_err(|source| SumdbError::Note {
        what: what.to_owned(),
        source,
    })?;
    let tree = tlog::parse_tree(note.text.as_bytes()).map_err(|source| SumdbError::Tlog {
        what: what.to_owned(),
        source,
    })?;
    // Stored-hash indexes of a larger tree overflow i64 (Go wraps silently).
    if tree.n > MAX_TREE_SIZE {
        return Err(SumdbError::Tlog {
            what: what.to_owned(),
            source: TlogError::InvalidInputs("tree size beyond 2^60"),
        });
    }
    Ok(SignedHead {
        tree,
        note: Bytes::copy_from_slice(note_bytes),
    })
}

/// The bytes of `tile` in `tiles`, or the matching prefix of its full tile.
fn tile_bytes(tiles: &HashMap<Tile, Bytes>, tile: &Tile) -> Option<Bytes> {
    if let Some(b) = tiles.get(tile) {
        return Some(b.clone());
    }
    let want = tile.w as usize * tlog::HASH_SIZE;
    tiles
        .get(&tile.full())
        .filter(|b| b.len() >= want)
        .map(|b| b.slice(..want))
}

#[cfg(test)]
mod tests {
    use super::*;

    // A cause shows once in the chain, as for `Fetch` (See: #13).
    #[test]
    fn note_and_tlog_errors_show_their_cause_once() {
        let note = SumdbError::Note {
            what: "sum.example latest".into(),
            source: NoteError::MalformedNote,
        };
        assert_eq!(
            crate::error::chain(&note),
            "sum.example latest: verifying signed tree head: malformed note"
        );
        let tlog = SumdbError::Tlog {
            what: "sum.example tile 0/0/001".into(),
            source: TlogError::InvalidInputs("tree size beyond 2^60"),
        };
        let shown = crate::error::chain(&tlog);
        assert_eq!(shown.matches("tree size beyond 2^60").count(), 1, "{shown}");
    }
}
