//! The checksum database's transparent log: a Merkle tree over records.
//!
//! Input: record bytes, stored hashes read through a [`HashReader`], tree
//! heads. Output: stored hashes to append, tree hashes, and inclusion
//! ([`RecordProof`]) and consistency ([`TreeProof`]) proofs and their checks.
//!
//! Go: x/mod/sumdb/tlog/tlog.go and tlog/note.go. Hashing is RFC 6962:
//! a record hashes as `sha256(0x00 || data)`, an interior node as
//! `sha256(0x01 || left || right)`. Stored hashes are numbered in the order
//! they are appended: after record `n`, the record hash, then every complete
//! subtree that record closes, lowest level first.

use std::cell::RefCell;

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::GO_BASE64;

/// A SHA-256 in the tree. Go: tlog.Hash.
pub type Hash = [u8; 32];
/// Go: tlog.HashSize.
pub const HASH_SIZE: usize = 32;
/// The sibling hashes from a record up to a tree head. Go: tlog.RecordProof.
pub type RecordProof = Vec<Hash>;
/// The hashes that link an older tree head to a newer one. Go: tlog.TreeProof.
pub type TreeProof = Vec<Hash>;

/// Why a log computation or a parse failed. Messages are Go's, with the
/// tile or index added where Go leaves it out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlogError {
    #[error("tlog: invalid inputs in {0}")]
    InvalidInputs(&'static str),
    #[error("tlog: ReadHashes({want} indexes) = {got} hashes")]
    WrongHashCount { want: usize, got: usize },
    #[error("tlog: hash index {index} not stored (have {len})")]
    IndexNotStored { index: i64, len: usize },
    #[error("invalid transparency proof")]
    ProofFailed,
    #[error("malformed hash")]
    MalformedHash,
    #[error("malformed tree note")]
    MalformedTree,
    #[error("malformed record data")]
    MalformedRecord,
    #[error("malformed tile path {0:?}")]
    BadTilePath(String),
    #[error("invalid tile {0}")]
    InvalidTile(String),
    #[error("data len {len} too short for tile {tile}")]
    TileTooShort { len: usize, tile: String },
    #[error("index {index} is in {is_in} not {tile}")]
    IndexNotInTile {
        index: i64,
        is_in: String,
        tile: String,
    },
    #[error("index {index} not in tree of size {tree_size}")]
    IndexNotInTree { index: i64, tree_size: i64 },
    #[error("missing tile {0}")]
    MissingTile(String),
    #[error("tile {tile} has {len} bytes, want {want}")]
    TileWrongSize {
        tile: String,
        len: usize,
        want: usize,
    },
    /// Go: tile.go tileHashReader: the tiles do not hash to the signed tree
    /// head, or a tile does not hash to the entry its parent holds for it.
    #[error("downloaded inconsistent tile: {0}")]
    InconsistentTile(String),
    /// An invariant of the index arithmetic broke: a bug, never input.
    #[error("bad math in {0}")]
    BadMath(String),
}

/// Reads stored hashes by index. Go: tlog.HashReader.
pub trait HashReader {
    /// The hashes at `indexes`, in the same order.
    fn read_hashes(&self, indexes: &[i64]) -> Result<Vec<Hash>, TlogError>;
}

impl HashReader for [Hash] {
    fn read_hashes(&self, indexes: &[i64]) -> Result<Vec<Hash>, TlogError> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|i| self.get(i))
                    .copied()
                    .ok_or(TlogError::IndexNotStored {
                        index,
                        len: self.len(),
                    })
            })
            .collect()
    }
}

impl HashReader for Vec<Hash> {
    fn read_hashes(&self, indexes: &[i64]) -> Result<Vec<Hash>, TlogError> {
        self.as_slice().read_hashes(indexes)
    }
}

/// A closure as a [`HashReader`]. Go: tlog.HashReaderFunc.
pub struct HashReaderFn<F>(pub F);

impl<F: Fn(&[i64]) -> Result<Vec<Hash>, TlogError>> HashReader for HashReaderFn<F> {
    fn read_hashes(&self, indexes: &[i64]) -> Result<Vec<Hash>, TlogError> {
        (self.0)(indexes)
    }
}

/// A [`HashReader`] that answers zero hashes and remembers which indexes
/// were asked for: running a proof over it first tells a caller which
/// stored hashes (hence which tiles) the real proof will need.
#[derive(Debug, Default)]
pub struct IndexRecorder {
    asked: RefCell<Vec<i64>>,
}

impl IndexRecorder {
    pub fn new() -> Self {
        Self::default()
    }

    /// The indexes asked for so far, in order, and forgets them.
    pub fn take(&self) -> Vec<i64> {
        self.asked.take()
    }
}

impl HashReader for IndexRecorder {
    fn read_hashes(&self, indexes: &[i64]) -> Result<Vec<Hash>, TlogError> {
        self.asked.borrow_mut().extend_from_slice(indexes);
        Ok(vec![[0; HASH_SIZE]; indexes.len()])
    }
}

/// Reads exactly `indexes.len()` hashes, as every Go caller checks.
fn read_exact(r: &(impl HashReader + ?Sized), indexes: &[i64]) -> Result<Vec<Hash>, TlogError> {
    let hashes = r.read_hashes(indexes)?;
    if hashes.len() != indexes.len() {
        return Err(TlogError::WrongHashCount {
            want: indexes.len(),
            got: hashes.len(),
        });
    }
    Ok(hashes)
}

/// Standard base64 of a hash, as Go's `Hash.String` prints it.
pub fn format_hash(h: &Hash) -> String {
    GO_BASE64.encode(h)
}

/// Go: tlog.go ParseHash.
pub fn parse_hash(s: &str) -> Result<Hash, TlogError> {
    let data = GO_BASE64.decode(s).map_err(|_| TlogError::MalformedHash)?;
    data.try_into().map_err(|_| TlogError::MalformedHash)
}

/// Go: tlog.go maxpow2: the largest power of two `k < n` and its log2 (for
/// `n > 1`; 1 and 0 for `n <= 2`).
fn maxpow2(n: i64) -> (i64, i32) {
    let mut l = 0;
    while (1i64 << (l + 1)) < n {
        l += 1;
    }
    (1 << l, l)
}

/// Go: tlog.go RecordHash.
pub fn record_hash(data: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0x00]);
    h.update(data);
    h.finalize().into()
}

/// Go: tlog.go NodeHash.
pub fn node_hash(left: Hash, right: Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([0x01]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Go: tlog.go StoredHashIndex: where the hash of the `n`th subtree of
/// `2^level` records sits among the stored hashes.
pub fn stored_hash_index(level: i32, n: i64) -> i64 {
    // The last record in that subtree closes it; count the hashes stored
    // before that record's, then step up `level`.
    let mut n = n;
    for _ in 0..level {
        n = 2 * n + 1;
    }
    let mut i = 0;
    while n > 0 {
        i += n;
        n >>= 1;
    }
    i + i64::from(level)
}

/// Go: tlog.go SplitStoredHashIndex, the inverse of [`stored_hash_index`].
pub fn split_stored_hash_index(index: i64) -> (i32, i64) {
    // A record `n` has index at least 2n, and at most 2n + log2(n) + 1, so
    // start at index/2 and walk forward.
    let mut n = index / 2;
    let mut index_n = stored_hash_index(0, n);
    debug_assert!(index_n <= index, "bad math in split_stored_hash_index");
    loop {
        let x = index_n + 1 + i64::from((n + 1).trailing_zeros());
        if x > index {
            break;
        }
        n += 1;
        index_n = x;
    }
    let level = (index - index_n) as i32;
    (level, n >> level)
}

/// Go: tlog.go StoredHashCount: how many hashes a log of `n` records stores.
pub fn stored_hash_count(n: i64) -> i64 {
    if n == 0 {
        return 0;
    }
    let mut count = stored_hash_index(0, n - 1) + 1;
    let mut i = (n - 1) as u64;
    while i & 1 != 0 {
        count += 1;
        i >>= 1;
    }
    count
}

/// Go: tlog.go StoredHashes: the hashes to append when record `n` (with
/// these bytes) joins a log whose earlier stored hashes `r` reads.
pub fn stored_hashes(
    n: i64,
    data: &[u8],
    r: &(impl HashReader + ?Sized),
) -> Result<Vec<Hash>, TlogError> {
    stored_hashes_for_record_hash(n, record_hash(data), r)
}

/// Go: tlog.go StoredHashesForRecordHash.
pub fn stored_hashes_for_record_hash(
    n: i64,
    h: Hash,
    r: &(impl HashReader + ?Sized),
) -> Result<Vec<Hash>, TlogError> {
    // Record n closes one subtree per trailing 1 bit of n; their left
    // siblings are already stored.
    let m = (n + 1).trailing_zeros() as i32;
    let indexes: Vec<i64> = (0..m)
        .rev()
        .map(|i| stored_hash_index(i, (n >> i) - 1))
        .collect();
    let old = read_exact(r, &indexes)?;
    let mut hashes = vec![h];
    let mut h = h;
    for sibling in old.iter().rev() {
        h = node_hash(*sibling, h);
        hashes.push(h);
    }
    Ok(hashes)
}

/// Go: tlog.go TreeHash: the hash of the tree of the first `n` records.
pub fn tree_hash(n: i64, r: &(impl HashReader + ?Sized)) -> Result<Hash, TlogError> {
    if n == 0 {
        return Ok([0; HASH_SIZE]);
    }
    let indexes = sub_tree_index(0, n, Vec::new());
    let hashes = read_exact(r, &indexes)?;
    let (hash, rest) = sub_tree_hash(0, n, &hashes);
    debug_assert!(rest.is_empty(), "bad index math in tree_hash");
    Ok(hash)
}

/// Go: tlog.go subTreeIndex: the stored hashes that make up the records
/// `[lo, hi)`, largest complete subtree first, appended to `need`.
pub(crate) fn sub_tree_index(mut lo: i64, hi: i64, mut need: Vec<i64>) -> Vec<i64> {
    while lo < hi {
        let (k, level) = maxpow2(hi - lo + 1);
        assert!(lo & (k - 1) == 0, "bad math in sub_tree_index");
        need.push(stored_hash_index(level, lo >> level));
        lo += k;
    }
    need
}

/// Go: tlog.go subTreeHash: hashes the records `[lo, hi)` from the hashes
/// [`sub_tree_index`] asked for; returns the rest of `hashes`.
fn sub_tree_hash(mut lo: i64, hi: i64, hashes: &[Hash]) -> (Hash, &[Hash]) {
    let mut num_tree = 0;
    while lo < hi {
        let (k, _) = maxpow2(hi - lo + 1);
        assert!(lo & (k - 1) == 0, "bad math in sub_tree_hash");
        num_tree += 1;
        lo += k;
    }
    assert!(hashes.len() >= num_tree, "bad index math in sub_tree_hash");
    // Fold from the right: the smallest subtree is the deepest right child.
    let mut h = hashes[num_tree - 1];
    for left in hashes[..num_tree - 1].iter().rev() {
        h = node_hash(*left, h);
    }
    (h, &hashes[num_tree..])
}

/// Go: tlog.go ProveRecord: the proof that record `n` is in the tree of
/// size `t`.
pub fn prove_record(
    t: i64,
    n: i64,
    r: &(impl HashReader + ?Sized),
) -> Result<RecordProof, TlogError> {
    if t < 0 || n < 0 || n >= t {
        return Err(TlogError::InvalidInputs("ProveRecord"));
    }
    let indexes = leaf_proof_index(0, t, n, Vec::new());
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = read_exact(r, &indexes)?;
    let (p, rest) = leaf_proof(0, t, n, &hashes);
    debug_assert!(rest.is_empty(), "bad index math in prove_record");
    Ok(p)
}

/// Go: tlog.go leafProofIndex.
fn leaf_proof_index(lo: i64, hi: i64, n: i64, need: Vec<i64>) -> Vec<i64> {
    assert!(lo <= n && n < hi, "bad math in leaf_proof_index");
    if lo + 1 == hi {
        return need;
    }
    let (k, _) = maxpow2(hi - lo);
    if n < lo + k {
        let need = leaf_proof_index(lo, lo + k, n, need);
        sub_tree_index(lo + k, hi, need)
    } else {
        let need = sub_tree_index(lo, lo + k, need);
        leaf_proof_index(lo + k, hi, n, need)
    }
}

/// Go: tlog.go leafProof.
fn leaf_proof(lo: i64, hi: i64, n: i64, hashes: &[Hash]) -> (RecordProof, &[Hash]) {
    assert!(lo <= n && n < hi, "bad math in leaf_proof");
    if lo + 1 == hi {
        return (Vec::new(), hashes);
    }
    let (k, _) = maxpow2(hi - lo);
    let (mut p, th, rest) = if n < lo + k {
        let (p, hashes) = leaf_proof(lo, lo + k, n, hashes);
        let (th, hashes) = sub_tree_hash(lo + k, hi, hashes);
        (p, th, hashes)
    } else {
        let (th, hashes) = sub_tree_hash(lo, lo + k, hashes);
        let (p, hashes) = leaf_proof(lo + k, hi, n, hashes);
        (p, th, hashes)
    };
    p.push(th);
    (p, rest)
}

/// Go: tlog.go CheckRecord: `p` proves that record `n`, with hash `h`, is
/// in the tree of size `t` with hash `th`.
pub fn check_record(p: &[Hash], t: i64, th: Hash, n: i64, h: Hash) -> Result<(), TlogError> {
    if t < 0 || n < 0 || n >= t {
        return Err(TlogError::InvalidInputs("CheckRecord"));
    }
    if run_record_proof(p, 0, t, n, h)? == th {
        Ok(())
    } else {
        Err(TlogError::ProofFailed)
    }
}

/// Go: tlog.go runRecordProof.
fn run_record_proof(p: &[Hash], lo: i64, hi: i64, n: i64, leaf: Hash) -> Result<Hash, TlogError> {
    assert!(lo <= n && n < hi, "bad math in run_record_proof");
    if lo + 1 == hi {
        return if p.is_empty() {
            Ok(leaf)
        } else {
            Err(TlogError::ProofFailed)
        };
    }
    let Some((last, rest)) = p.split_last() else {
        return Err(TlogError::ProofFailed);
    };
    let (k, _) = maxpow2(hi - lo);
    if n < lo + k {
        let th = run_record_proof(rest, lo, lo + k, n, leaf)?;
        Ok(node_hash(th, *last))
    } else {
        let th = run_record_proof(rest, lo + k, hi, n, leaf)?;
        Ok(node_hash(*last, th))
    }
}

/// Go: tlog.go ProveTree: the proof that the tree of size `t` contains the
/// tree of size `n` as a prefix.
pub fn prove_tree(t: i64, n: i64, r: &(impl HashReader + ?Sized)) -> Result<TreeProof, TlogError> {
    if t < 1 || n < 1 || n > t {
        return Err(TlogError::InvalidInputs("ProveTree"));
    }
    let indexes = tree_proof_index(0, t, n, Vec::new());
    if indexes.is_empty() {
        return Ok(Vec::new());
    }
    let hashes = read_exact(r, &indexes)?;
    let (p, rest) = tree_proof(0, t, n, &hashes);
    debug_assert!(rest.is_empty(), "bad index math in prove_tree");
    Ok(p)
}

/// Go: tlog.go treeProofIndex.
fn tree_proof_index(lo: i64, hi: i64, n: i64, need: Vec<i64>) -> Vec<i64> {
    assert!(lo < n && n <= hi, "bad math in tree_proof_index");
    if n == hi {
        return if lo == 0 {
            need
        } else {
            sub_tree_index(lo, hi, need)
        };
    }
    let (k, _) = maxpow2(hi - lo);
    if n <= lo + k {
        let need = tree_proof_index(lo, lo + k, n, need);
        sub_tree_index(lo + k, hi, need)
    } else {
        let need = sub_tree_index(lo, lo + k, need);
        tree_proof_index(lo + k, hi, n, need)
    }
}

/// Go: tlog.go treeProof.
fn tree_proof(lo: i64, hi: i64, n: i64, hashes: &[Hash]) -> (TreeProof, &[Hash]) {
    assert!(lo < n && n <= hi, "bad math in tree_proof");
    if n == hi {
        if lo == 0 {
            return (Vec::new(), hashes);
        }
        let (th, rest) = sub_tree_hash(lo, hi, hashes);
        return (vec![th], rest);
    }
    let (k, _) = maxpow2(hi - lo);
    let (mut p, th, rest) = if n <= lo + k {
        let (p, hashes) = tree_proof(lo, lo + k, n, hashes);
        let (th, hashes) = sub_tree_hash(lo + k, hi, hashes);
        (p, th, hashes)
    } else {
        let (th, hashes) = sub_tree_hash(lo, lo + k, hashes);
        let (p, hashes) = tree_proof(lo + k, hi, n, hashes);
        (p, th, hashes)
    };
    p.push(th);
    (p, rest)
}

/// Go: tlog.go CheckTree: `p` proves that the tree of size `t` with hash
/// `th` contains the tree of size `n` with hash `h` as a prefix.
pub fn check_tree(p: &[Hash], t: i64, th: Hash, n: i64, h: Hash) -> Result<(), TlogError> {
    if t < 1 || n < 1 || n > t {
        return Err(TlogError::InvalidInputs("CheckTree"));
    }
    let (h2, th2) = run_tree_proof(p, 0, t, n, h)?;
    if th2 == th && h2 == h {
        Ok(())
    } else {
        Err(TlogError::ProofFailed)
    }
}

/// Go: tlog.go runTreeProof: returns the old and the new tree hash the
/// proof implies.
fn run_tree_proof(
    p: &[Hash],
    lo: i64,
    hi: i64,
    n: i64,
    old: Hash,
) -> Result<(Hash, Hash), TlogError> {
    assert!(lo < n && n <= hi, "bad math in run_tree_proof");
    if n == hi {
        return match (lo, p) {
            (0, []) => Ok((old, old)),
            (0, _) => Err(TlogError::ProofFailed),
            (_, [only]) => Ok((*only, *only)),
            _ => Err(TlogError::ProofFailed),
        };
    }
    let Some((last, rest)) = p.split_last() else {
        return Err(TlogError::ProofFailed);
    };
    let (k, _) = maxpow2(hi - lo);
    if n <= lo + k {
        let (oh, th) = run_tree_proof(rest, lo, lo + k, n, old)?;
        Ok((oh, node_hash(th, *last)))
    } else {
        let (oh, th) = run_tree_proof(rest, lo + k, hi, n, old)?;
        Ok((node_hash(*last, oh), node_hash(*last, th)))
    }
}

/// A tree head: the number of records and the hash over them. Go: tlog.Tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Tree {
    pub n: i64,
    pub hash: Hash,
}

const TREE_PREFIX: &str = "go.sum database tree\n";
/// Go: tlog/note.go ParseTree refuses texts longer than this.
const MAX_TREE_TEXT: usize = 1_000_000;

/// Go: tlog/note.go FormatTree: the text a signed tree note carries.
pub fn format_tree(tree: &Tree) -> String {
    format!("{TREE_PREFIX}{}\n{}\n", tree.n, format_hash(&tree.hash))
}

/// Go: tlog/note.go ParseTree: `go.sum database tree\n<N>\n<hash>\n`, with
/// anything after the third line ignored (room for future extensions).
pub fn parse_tree(text: &[u8]) -> Result<Tree, TlogError> {
    if !text.starts_with(TREE_PREFIX.as_bytes())
        || text.iter().filter(|&&b| b == b'\n').count() < 3
        || text.len() > MAX_TREE_TEXT
    {
        return Err(TlogError::MalformedTree);
    }
    // Go converts with string(text), which keeps invalid UTF-8 as is; the
    // fields that matter are ASCII, so a lossy conversion decides the same.
    let text = String::from_utf8_lossy(text);
    let mut lines = text.splitn(4, '\n').skip(1);
    let (Some(n_line), Some(hash_line)) = (lines.next(), lines.next()) else {
        return Err(TlogError::MalformedTree);
    };
    let n: i64 = n_line.parse().map_err(|_| TlogError::MalformedTree)?;
    if n < 0 || n_line != n.to_string() {
        return Err(TlogError::MalformedTree);
    }
    let hash = parse_hash(hash_line).map_err(|_| TlogError::MalformedTree)?;
    Ok(Tree { n, hash })
}

/// Go: tlog/note.go FormatRecord: `<id>\n<text>\n`.
pub fn format_record(id: i64, text: &[u8]) -> Result<Vec<u8>, TlogError> {
    if !is_valid_record_text(text) {
        return Err(TlogError::MalformedRecord);
    }
    let mut msg = format!("{id}\n").into_bytes();
    msg.extend_from_slice(text);
    msg.push(b'\n');
    Ok(msg)
}

/// Go: tlog/note.go isValidRecordText: UTF-8, no control characters but
/// `\n`, no blank line, ends in `\n`.
fn is_valid_record_text(text: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(text) else {
        return false;
    };
    if text.chars().any(|c| c < '\u{20}' && c != '\n') || text.contains("\n\n") {
        return false;
    }
    text.ends_with('\n')
}

/// Go: tlog/note.go ParseRecord: splits `<id>\n<text>\n<rest>` (a lookup
/// response) into the record id, its text and what follows the blank line.
pub fn parse_record(msg: &[u8]) -> Result<(i64, &[u8], &[u8]), TlogError> {
    let i = msg
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(TlogError::MalformedRecord)?;
    let id = parse_go_int(&msg[..i]).ok_or(TlogError::MalformedRecord)?;
    let msg = &msg[i + 1..];
    let i = msg
        .windows(2)
        .position(|w| w == b"\n\n")
        .ok_or(TlogError::MalformedRecord)?;
    let (text, rest) = (&msg[..i + 1], &msg[i + 2..]);
    if !is_valid_record_text(text) {
        return Err(TlogError::MalformedRecord);
    }
    Ok((id, text, rest))
}

/// Go: strconv.ParseInt(s, 10, 64): an optional sign, then decimal digits
/// (leading zeros allowed), which is also what Rust's `i64` parser takes.
fn parse_go_int(s: &[u8]) -> Option<i64> {
    std::str::from_utf8(s).ok()?.parse().ok()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A log of `n` records `"leaf <i>"`: its stored hashes, as Go's
    /// tlog_test.go TestTree builds one.
    pub(crate) fn build_log(n: i64) -> Vec<Hash> {
        let mut stored = Vec::new();
        for i in 0..n {
            let hashes = stored_hashes(i, format!("leaf {i}").as_bytes(), &stored).unwrap();
            stored.extend(hashes);
        }
        stored
    }

    /// RFC 6962 section 2.1 MTH, written recursively as the RFC states it.
    fn mth(leaves: &[Vec<u8>]) -> Hash {
        match leaves.len() {
            0 => Sha256::digest([]).into(),
            1 => record_hash(&leaves[0]),
            n => {
                let (k, _) = maxpow2(n as i64);
                let k = k as usize;
                node_hash(mth(&leaves[..k]), mth(&leaves[k..]))
            }
        }
    }

    #[test]
    fn rfc6962_vectors() {
        // The RFC 6962 test leaves and roots used by certificate-transparency.
        let leaves: Vec<Vec<u8>> = [
            "",
            "00",
            "10",
            "2021",
            "3031",
            "40414243",
            "5051525354555657",
            "606162636465666768696a6b6c6d6e6f",
        ]
        .iter()
        .map(|h| hex::decode(h).unwrap())
        .collect();
        let roots = [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
            "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
            "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
            "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
            "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
        ];
        let mut stored = Vec::new();
        for (i, leaf) in leaves.iter().enumerate() {
            let i = i as i64;
            stored.extend(stored_hashes(i, leaf, &stored).unwrap());
            let th = tree_hash(i + 1, &stored).unwrap();
            assert_eq!(hex::encode(th), roots[i as usize], "tree of {}", i + 1);
        }
    }

    #[test]
    fn stored_hash_index_round_trips() {
        // Go: tlog_test.go TestSplitStoredHashIndex.
        for l in 0..10 {
            for n in 0..100 {
                let x = stored_hash_index(l, n);
                assert_eq!(split_stored_hash_index(x), (l, n), "index {x}");
            }
        }
        let mut next = 0;
        for n in 0..1000 {
            assert_eq!(stored_hash_index(0, n), next);
            next = stored_hash_count(n + 1);
        }
        // Stored order: leaf 0, leaf 1, node(0-1), leaf 2, leaf 3, node(2-3), node(0-3).
        let table = [
            (0, 0, 0),
            (0, 1, 1),
            (1, 0, 2),
            (0, 2, 3),
            (0, 3, 4),
            (1, 1, 5),
            (2, 0, 6),
        ];
        for (level, n, index) in table {
            assert_eq!(stored_hash_index(level, n), index);
        }
    }

    #[test]
    fn tree_hashes_and_proofs() {
        // Go: tlog_test.go TestTree: every prefix of a growing log, every
        // record's inclusion and every older tree's consistency.
        const N: i64 = 100;
        let mut stored = Vec::new();
        let mut leaves = Vec::new();
        let mut heads = Vec::new();
        for i in 0..N {
            let data = format!("leaf {i}").into_bytes();
            stored.extend(stored_hashes(i, &data, &stored).unwrap());
            leaves.push(data);
            assert_eq!(stored.len() as i64, stored_hash_count(i + 1));
            let th = tree_hash(i + 1, &stored).unwrap();
            assert_eq!(th, mth(&leaves), "tree of {}", i + 1);
            heads.push(th);
            let t = i + 1;
            for j in 0..t {
                let p = prove_record(t, j, &stored).unwrap();
                check_record(&p, t, th, j, record_hash(&leaves[j as usize])).unwrap();
                let wrong = record_hash(b"other");
                assert_eq!(
                    check_record(&p, t, th, j, wrong),
                    Err(TlogError::ProofFailed)
                );
                for bad in corruptions(&p) {
                    let h = record_hash(&leaves[j as usize]);
                    assert!(check_record(&bad, t, th, j, h).is_err(), "t={t} j={j}");
                }
            }
            for n in 1..=t {
                let p = prove_tree(t, n, &stored).unwrap();
                let old = heads[n as usize - 1];
                check_tree(&p, t, th, n, old).unwrap();
                for bad in corruptions(&p) {
                    assert!(check_tree(&bad, t, th, n, old).is_err(), "t={t} n={n}");
                }
                if n < t {
                    let forked = node_hash(old, old);
                    assert_eq!(
                        check_tree(&p, t, th, n, forked),
                        Err(TlogError::ProofFailed)
                    );
                }
            }
        }
    }

    /// The proof with one hash flipped, one hash dropped, one hash added.
    fn corruptions(p: &[Hash]) -> Vec<Vec<Hash>> {
        let mut out = Vec::new();
        for i in 0..p.len() {
            let mut flipped = p.to_vec();
            flipped[i][0] ^= 1;
            out.push(flipped);
        }
        if let Some((_, rest)) = p.split_last() {
            out.push(rest.to_vec());
        }
        let mut longer = p.to_vec();
        longer.push([7; HASH_SIZE]);
        out.push(longer);
        out
    }

    #[test]
    fn proofs_refuse_invalid_inputs() {
        let stored = build_log(4);
        assert_eq!(
            prove_record(4, 4, &stored),
            Err(TlogError::InvalidInputs("ProveRecord"))
        );
        assert_eq!(
            prove_tree(4, 0, &stored),
            Err(TlogError::InvalidInputs("ProveTree"))
        );
        assert_eq!(
            check_tree(&[], 3, [0; 32], 4, [0; 32]),
            Err(TlogError::InvalidInputs("CheckTree"))
        );
        assert!(matches!(
            tree_hash(5, &stored),
            Err(TlogError::IndexNotStored { .. })
        ));
        let short = HashReaderFn(|_: &[i64]| Ok(vec![[0; HASH_SIZE]]));
        assert_eq!(
            tree_hash(3, &short),
            Err(TlogError::WrongHashCount { want: 2, got: 1 })
        );
    }

    #[test]
    fn index_recorder_names_what_a_proof_reads() {
        let stored = build_log(13);
        let rec = IndexRecorder::new();
        prove_record(13, 5, &rec).unwrap();
        let asked = rec.take();
        let counting = HashReaderFn(|ix: &[i64]| {
            assert_eq!(ix, &asked[..]);
            stored.read_hashes(ix)
        });
        prove_record(13, 5, &counting).unwrap();
        assert!(rec.take().is_empty());
        tree_hash(13, &rec).unwrap();
        assert_eq!(rec.take(), sub_tree_index(0, 13, Vec::new()));
    }

    #[test]
    fn tree_notes() {
        let tree = Tree {
            n: 123456789012,
            hash: record_hash(b"x"),
        };
        let text = format_tree(&tree);
        assert_eq!(parse_tree(text.as_bytes()), Ok(tree));
        // Go: tlog/note_test.go TestParseTree: extra lines are allowed.
        assert_eq!(
            parse_tree(format!("{text}extra\nlines\n").as_bytes()),
            Ok(tree)
        );
        let h = format_hash(&tree.hash);
        for bad in [
            format!("go.sum database tree\n123\n{h}"),
            format!("go.sum database tree\n0123\n{h}\n"),
            format!("go.sum database tree\n+123\n{h}\n"),
            format!("go.sum database tree\n-1\n{h}\n"),
            format!("go.sum database tree\n123\n{}\n", &h[1..]),
            "go.sum database tree\n123\nAAAA\n".to_string(),
            format!("go.sum database treE\n123\n{h}\n"),
            format!(
                "go.sum database tree\n123\n{h}\n{}\n",
                "x".repeat(1_000_000)
            ),
        ] {
            assert_eq!(
                parse_tree(bad.as_bytes()),
                Err(TlogError::MalformedTree),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn records() {
        // Go: tlog/note_test.go TestFormatRecord, TestParseRecord.
        let text = b"hello, world\n";
        let msg = format_record(12345, text).unwrap();
        assert_eq!(msg, b"12345\nhello, world\n\n");
        let mut resp = msg.clone();
        resp.extend_from_slice(b"note follows\n");
        let (id, t, rest) = parse_record(&resp).unwrap();
        assert_eq!((id, t, rest), (12345, &text[..], &b"note follows\n"[..]));
        for bad in [
            &b"hello"[..],
            b"hello\n\nworld\n",
            b"hello\tworld\n",
            b"\xffhello\n",
            b"",
        ] {
            assert_eq!(
                format_record(1, bad),
                Err(TlogError::MalformedRecord),
                "{bad:?}"
            );
        }
        for bad in [
            &b"12345"[..],
            b"12345\nhello\n",
            b"x12345\nhello\n\n",
            b"12345\nhel\x01lo\n\n",
            b"12345\n\n",
            b"99999999999999999999\nhello\n\n",
        ] {
            assert_eq!(
                parse_record(bad),
                Err(TlogError::MalformedRecord),
                "{bad:?}"
            );
        }
    }
}
