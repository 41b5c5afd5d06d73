//! Proofs from tiles at hand, with no network: some given up front (a
//! bundle's), the rest loaded on demand by the caller (an offline copy's
//! files). `gomirror verify` and `gomirror import` prove with it;
//! [`super::client`] fetches its tiles instead.

use std::collections::HashMap;

use super::tile::{plan_tiles, Tile, TileData, TileHashReader};
use super::tlog::{
    check_record, check_tree, prove_record, prove_tree, record_hash, IndexRecorder, TlogError, Tree,
};
use super::TILE_HEIGHT;

/// Loaded tiles kept in memory; past it they are loaded again when needed.
const MAX_LOADED: usize = 16 * 1024;

/// The stored-hash indexes a proof computation reads, learned by running it
/// over a reader that only records them (sorted, without duplicates).
pub fn recorded(prove: impl FnOnce(&IndexRecorder) -> Result<(), TlogError>) -> Vec<i64> {
    let recorder = IndexRecorder::new();
    // Over zero hashes a proof can fail to check, never to be computed:
    // computing it reads every index it needs first.
    let _ = prove(&recorder);
    let mut indexes = recorder.take();
    indexes.sort_unstable();
    indexes.dedup();
    indexes
}

/// Tiles for proofs. `load` reads a tile the caller has somewhere (`None`:
/// it has not; `Err`: reading failed).
pub struct LocalTiles<L> {
    given: HashMap<Tile, Vec<u8>>,
    loaded: HashMap<Tile, Vec<u8>>,
    load: L,
}

impl<L> TileData for LocalTiles<L> {
    fn tile_data(&self, tile: &Tile) -> Option<&[u8]> {
        self.given
            .get(tile)
            .or_else(|| self.loaded.get(tile))
            .map(Vec::as_slice)
    }
}

impl<L: FnMut(&Tile) -> Result<Option<Vec<u8>>, String>> LocalTiles<L> {
    pub fn new(load: L) -> Self {
        LocalTiles {
            given: HashMap::new(),
            loaded: HashMap::new(),
            load,
        }
    }

    /// A tile the caller holds (authenticated only when a proof reads it).
    pub fn give(&mut self, tile: Tile, data: Vec<u8>) {
        self.given.insert(tile, data);
    }

    /// The tiles given so far, removed.
    pub fn take_given(&mut self) -> HashMap<Tile, Vec<u8>> {
        std::mem::take(&mut self.given)
    }

    /// `old` is a prefix of `new`: a tree proof from tiles of `new`. A tree
    /// of the same size must have the same hash.
    pub fn check_tree(&mut self, old: &Tree, new: &Tree) -> Result<(), String> {
        if old.n == new.n {
            return (old.hash == new.hash)
                .then_some(())
                .ok_or_else(|| "same size, other hash: a forked log".to_owned());
        }
        let (n, m) = (new.n, old.n);
        let reader = self.reader(new, |r| prove_tree(n, m, r).map(drop))?;
        let proof = prove_tree(n, m, &reader).map_err(|e| e.to_string())?;
        check_tree(&proof, n, new.hash, m, old.hash).map_err(|e| e.to_string())
    }

    /// Record `id` with go.sum lines `text` is included in `tree`.
    pub fn check_record(&mut self, tree: &Tree, id: i64, text: &[u8]) -> Result<(), String> {
        if id < 0 || id >= tree.n {
            return Err(format!("record {id} is not in tree {}", tree.n));
        }
        let n = tree.n;
        let reader = self.reader(tree, |r| prove_record(n, id, r).map(drop))?;
        let proof = prove_record(n, id, &reader).map_err(|e| e.to_string())?;
        check_record(&proof, n, tree.hash, id, record_hash(text))
            .map_err(|e| format!("record {id} is not included in tree {n}: {e}"))
    }

    /// A tile reader over `tree` for what `prove` reads, loading what is not
    /// at hand. A partial tile may be at hand as the prefix of its full one.
    fn reader(
        &mut self,
        tree: &Tree,
        prove: impl FnOnce(&IndexRecorder) -> Result<(), TlogError>,
    ) -> Result<TileHashReader<'_>, String> {
        let plan = plan_tiles(TILE_HEIGHT, tree, &recorded(prove)).map_err(|e| e.to_string())?;
        if self.loaded.len() > MAX_LOADED {
            self.loaded.clear();
        }
        for tile in plan {
            for t in [tile, tile.full()] {
                if self.tile_data(&t).is_some() {
                    break;
                }
                if let Some(data) = (self.load)(&t)? {
                    self.loaded.insert(t, data);
                    break;
                }
            }
        }
        Ok(TileHashReader::new(*tree, TILE_HEIGHT, self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::sumdb::tile::read_tile_data;
    use crate::verify::sumdb::tlog::{stored_hashes, tree_hash, Hash};

    /// A log of `n` records and every tile of it.
    fn log(n: i64) -> (Vec<Vec<u8>>, Tree, HashMap<Tile, Vec<u8>>) {
        let mut hashes: Vec<Hash> = Vec::new();
        let mut records = Vec::new();
        for i in 0..n {
            let text = format!("example.com/m{i} v1.0.0 h1:x\n").into_bytes();
            let new = stored_hashes(i, &text, &hashes).unwrap();
            hashes.extend(new);
            records.push(text);
        }
        let tree = Tree {
            n,
            hash: tree_hash(n, &hashes).unwrap(),
        };
        let tiles = crate::verify::sumdb::tile::new_tiles(TILE_HEIGHT, 0, n)
            .into_iter()
            .map(|t| (t, read_tile_data(t, &hashes).unwrap()))
            .collect();
        (records, tree, tiles)
    }

    #[test]
    fn proves_from_given_and_loaded_tiles_and_refuses_a_wrong_one() {
        let (records, tree, tiles) = log(600);
        let (old_records, old_tree, _) = log(300);
        assert_eq!(old_records[..], records[..300]);
        let on_disk = tiles.clone();
        let mut local = LocalTiles::new(|t: &Tile| Ok(on_disk.get(t).cloned()));
        local.check_record(&tree, 450, &records[450]).unwrap();
        local.check_tree(&old_tree, &tree).unwrap();
        assert!(local.check_record(&tree, 450, b"other\n").is_err());
        assert!(local.check_record(&tree, 600, &records[0]).is_err());
        let forked = Tree {
            n: 600,
            hash: [7; 32],
        };
        assert!(local.check_tree(&forked, &tree).is_err());
        // A given tile wins over the loaded one: a wrong one fails the proof.
        let (tile, data) = tiles.iter().find(|(t, _)| t.l == 0 && t.n == 1).unwrap();
        let mut bad = data.clone();
        bad[45 * 32] ^= 1;
        let mut local = LocalTiles::new(|t: &Tile| Ok(on_disk.get(t).cloned()));
        local.give(*tile, bad);
        assert!(local
            .check_record(&tree, 256 + 45, &records[256 + 45])
            .is_err());
        assert_eq!(local.take_given().len(), 1);
        let mut nothing = LocalTiles::new(|_: &Tile| Ok(None));
        assert!(nothing.check_record(&tree, 1, &records[1]).is_err());
    }
}
