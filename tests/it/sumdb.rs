//! A checksum database for tests and benches: a real Merkle log, signed with a fresh key.
//!
//! Input: records added by hand ([`SumdbServer::add`]), from upstream [`ModuleFiles`]
//! ([`SumdbServer::add_modules`]) or as padding ([`SumdbServer::pad`]). Output: the sumdb
//! protocol (PROTOCOL.md "Checksum database") through [`SumdbServer::handle`]: `supported`,
//! `latest`, `lookup/<mod>@<ver>` and `tile/8/...`, served under `/sumdb/<name>/` by an
//! [`Upstream`](crate::upstream::Upstream) it is attached to.
//!
//! Go: x/mod/sumdb/test.go TestServer and server.go: the log is built with gomirror's own
//! `tlog` (stored hashes appended per record), every change signs a new tree head, and a lookup
//! answers `FormatRecord(id, record)` followed by the signed head. Unlike TestServer, records
//! exist only once added: a lookup of anything else is 404, as sum.golang.org answers for a
//! module it cannot fetch.
//!
//! Misbehaviour on demand: a lookup that serves a record the log does not hold
//! ([`SumdbServer::tamper_lookup`]), a log that honestly holds a wrong hash (just
//! [`SumdbServer::add`] it), a forked history under the same key ([`SumdbServer::fork_of`]), a
//! corrupted tile ([`SumdbServer::corrupt_tile`]) and a switched-off database
//! ([`SumdbServer::set_disabled`]).
//!
//! Needs `corpus.rs` and `upstream.rs` included as the modules `corpus` and `upstream` (a bench
//! includes it with `#[path]` next to them).

// Support code: each test uses a different part of it.
#![allow(dead_code)]

use std::collections::{HashMap, HashSet};
use std::io::Write as _;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use gomirror::module::ModVer;
use gomirror::verify::sumdb::note::{self, Signer};
use gomirror::verify::sumdb::tile::{read_tile_data, Tile};
use gomirror::verify::sumdb::tlog::{self, Hash, Tree};
use gomirror::verify::sumdb::TILE_HEIGHT;
use gomirror::verify::{dirhash, zip};

use crate::corpus::unescape_path;
use crate::upstream::{ModuleFiles, SumdbHandler};

/// A checksum database. Cheap to share: every method takes `&self`.
pub struct SumdbServer {
    name: String,
    signer: Signer,
    vkey: String,
    /// The log and what is served from it. Held only for one change or one answer.
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Record texts, by id.
    records: Vec<Vec<u8>>,
    /// The log's stored hashes (Go: tlog.StoredHashes, appended per record).
    hashes: Vec<Hash>,
    /// `path@version` → record id.
    ids: HashMap<String, i64>,
    tree: Option<Tree>,
    /// The signed note of `tree`, re-signed after every change.
    signed: Bytes,
    /// `path@version` → record text a lookup serves instead of the logged one.
    tampered: HashMap<String, Vec<u8>>,
    /// Tile paths served with one byte flipped.
    corrupt: HashSet<String>,
    disabled: bool,
    lookups: usize,
    /// Unescaped module path → lookups, served or not.
    lookups_by_path: HashMap<String, usize>,
}

impl SumdbServer {
    /// An empty database named `name` (e.g. `sum.test.example`) with a fresh key.
    pub fn new(name: &str) -> Arc<SumdbServer> {
        let (signer, _skey, vkey) = Signer::generate(name).expect("a valid sumdb name");
        Arc::new(Self::with_signer(signer, vkey))
    }

    fn with_signer(signer: Signer, vkey: String) -> SumdbServer {
        let server = SumdbServer {
            name: signer.name().to_owned(),
            signer,
            vkey,
            state: Mutex::new(State::default()),
        };
        server.sign(&mut server.state());
        server
    }

    /// A database with `other`'s name and key and another history: `other`'s records, except
    /// that a record `other` never had takes the place of its last one (which follows it).
    /// Every lookup `other` answers, this one answers too; trees smaller than `other`'s current
    /// one agree, but none of this database's trees extends `other`'s current tree, so a client
    /// that saw that tree must detect the fork (Go: sumdb/client_test.go fork).
    pub fn fork_of(other: &SumdbServer) -> Arc<SumdbServer> {
        let fork = Self::with_signer(other.signer.clone(), other.vkey.clone());
        let mut records = other.state().records.clone();
        let last = records.pop();
        {
            let mut st = fork.state();
            for text in records {
                let key = record_key(&text);
                st.append(key, text);
            }
            let marker =
                b"fork.sumdb.test v0.0.0 h1:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
            st.append(None, marker.to_vec());
            if let Some(text) = last {
                let key = record_key(&text);
                st.append(key, text);
            }
            fork.sign(&mut st);
        }
        Arc::new(fork)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `name+hash+key`, the value for `GOSUMDB` and for gomirror's sumdb key.
    pub fn vkey(&self) -> &str {
        &self.vkey
    }

    /// Appends the record for `path@version` and signs the new head; returns its id. Adding the
    /// same record again returns the first id; adding different hashes for a version the log
    /// holds is a test bug and panics (a log never changes a record).
    pub fn add(&self, path: &str, version: &str, h1_zip: &str, h1_mod: &str) -> i64 {
        let text = format!("{path} {version} {h1_zip}\n{path} {version}/go.mod {h1_mod}\n");
        let key = format!("{path}@{version}");
        let mut st = self.state();
        if let Some(&id) = st.ids.get(&key) {
            assert_eq!(
                st.records[id as usize],
                text.as_bytes(),
                "{key} is already in the log with other hashes"
            );
            return id;
        }
        let id = st.append(Some(key), text.into_bytes());
        self.sign(&mut st);
        id
    }

    /// Adds the record of one upstream version, with the `h1:` hashes gomirror computes (the
    /// zip must pass `check_zip` and the `.mod` must exist); `None` if it cannot be hashed.
    pub fn add_module(&self, files: &ModuleFiles) -> Option<i64> {
        let (h1_zip, h1_mod) = module_hashes(files)?;
        Some(self.add(&files.path, &files.version, &h1_zip, &h1_mod))
    }

    /// [`SumdbServer::add_module`] for each version; returns how many were added.
    pub fn add_modules(&self, versions: &[ModuleFiles]) -> usize {
        versions.iter().filter_map(|v| self.add_module(v)).count()
    }

    /// Appends `n` records of modules nobody looks up, then signs once: enough of them give
    /// full and partial tiles and higher levels (256 records fill a level-0 tile, 65536 a
    /// level-1 tile).
    pub fn pad(&self, n: usize) {
        let mut st = self.state();
        let start = st.records.len();
        for i in start..start + n {
            let h = |what: &str| {
                let digest = dirhash::digest(format!("{what} {i}").as_bytes());
                format!("h1:{}", tlog::format_hash(&digest))
            };
            let text = format!(
                "pad.sumdb.test/m v0.0.{i} {}\npad.sumdb.test/m v0.0.{i}/go.mod {}\n",
                h("zip"),
                h("mod")
            );
            st.append(None, text.into_bytes());
        }
        self.sign(&mut st);
    }

    /// The number of records, the size of the current tree.
    pub fn size(&self) -> i64 {
        self.state().records.len() as i64
    }

    /// The current tree head.
    pub fn tree(&self) -> Tree {
        self.state().tree.expect("signed at construction")
    }

    /// The signed note of the current tree head, as `latest` serves it.
    pub fn latest(&self) -> Bytes {
        self.state().signed.clone()
    }

    /// The record text a lookup of `path@version` would be checked against.
    pub fn record(&self, path: &str, version: &str) -> Option<Vec<u8>> {
        let st = self.state();
        let id = *st.ids.get(&format!("{path}@{version}"))?;
        Some(st.records[id as usize].clone())
    }

    /// Lookups served or refused so far.
    pub fn lookups(&self) -> usize {
        self.state().lookups
    }

    /// Lookups of any version of module `path` so far.
    pub fn lookups_of(&self, path: &str) -> usize {
        self.state().lookups_by_path.get(path).copied().unwrap_or(0)
    }

    /// From now on a lookup of `path@version` serves this zip hash in a record the log does not
    /// hold; the signed head stays honest, so a client fails to authenticate the record.
    pub fn tamper_lookup(&self, path: &str, version: &str, h1_zip: &str) {
        let mut st = self.state();
        let key = format!("{path}@{version}");
        let id = *st
            .ids
            .get(&key)
            .expect("tamper_lookup: record not in the log");
        let logged = String::from_utf8(st.records[id as usize].clone()).expect("UTF-8 record");
        let mod_line = logged.lines().nth(1).expect("two-line record");
        let text = format!("{path} {version} {h1_zip}\n{mod_line}\n");
        st.tampered.insert(key, text.into_bytes());
    }

    /// From now on the tile at `tile_path` (e.g. `tile/8/0/001.p/44`) is served with its last
    /// byte flipped.
    pub fn corrupt_tile(&self, tile_path: &str) {
        Tile::parse_path(tile_path).expect("corrupt_tile: a canonical tile path");
        self.state().corrupt.insert(tile_path.to_owned());
    }

    /// Switches every answer, `supported` included, to 404.
    pub fn set_disabled(&self, disabled: bool) {
        self.state().disabled = disabled;
    }

    /// Undoes tampering and tile corruption.
    pub fn heal(&self) {
        let mut st = self.state();
        st.tampered.clear();
        st.corrupt.clear();
    }

    /// The answer for `rel_path`, the part after `/sumdb/<name>/`; `None` means 404.
    /// Go: x/mod/sumdb/server.go ServeHTTP (and 200 with an empty body for `supported`, as
    /// cmd/go/internal/modfetch/sumdb.go probes it).
    pub fn handle(&self, rel_path: &str) -> Option<(u16, Bytes)> {
        let mut st = self.state();
        if st.disabled {
            return None;
        }
        if rel_path == "supported" {
            return Some((200, Bytes::new()));
        }
        if rel_path == "latest" {
            return Some((200, st.signed.clone()));
        }
        if let Some(modver) = rel_path.strip_prefix("lookup/") {
            return st.lookup(modver);
        }
        if rel_path.starts_with("tile/") {
            return st.tile(rel_path);
        }
        None
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("sumdb state lock")
    }

    /// Go: x/mod/sumdb/test.go Signed: the tree head over all records, signed.
    fn sign(&self, st: &mut State) {
        let n = st.records.len() as i64;
        let hash = tlog::tree_hash(n, &st.hashes).expect("the log stores every hash it needs");
        let tree = Tree { n, hash };
        let signed = note::sign(&tlog::format_tree(&tree), &[&self.signer]).expect("sign tree");
        st.tree = Some(tree);
        st.signed = Bytes::from(signed);
    }
}

impl SumdbHandler for SumdbServer {
    fn name(&self) -> &str {
        &self.name
    }

    fn handle(&self, rel_path: &str) -> Option<(u16, Bytes)> {
        SumdbServer::handle(self, rel_path)
    }
}

impl State {
    /// Go: x/mod/sumdb/test.go Lookup: append the record and its stored hashes.
    fn append(&mut self, key: Option<String>, text: Vec<u8>) -> i64 {
        let id = self.records.len() as i64;
        let hashes = tlog::stored_hashes(id, &text, &self.hashes).expect("stored hashes");
        self.hashes.extend(hashes);
        self.records.push(text);
        if let Some(key) = key {
            self.ids.insert(key, id);
        }
        id
    }

    /// Go: x/mod/sumdb/server.go, `/lookup/`: 400 for bad syntax, 404 for a module the log
    /// lacks, else the record and the signed head.
    fn lookup(&mut self, modver: &str) -> Option<(u16, Bytes)> {
        self.lookups += 1;
        let Some((path, version)) = modver
            .split_once('@')
            .and_then(|(p, v)| Some((unescape_path(p)?, unescape_path(v)?)))
        else {
            return Some((400, Bytes::from_static(b"invalid module@version syntax\n")));
        };
        *self.lookups_by_path.entry(path.clone()).or_default() += 1;
        let key = format!("{path}@{version}");
        let id = *self.ids.get(&key)?;
        let text = match self.tampered.get(&key) {
            Some(t) => t.clone(),
            None => self.records[id as usize].clone(),
        };
        let mut body = tlog::format_record(id, &text).expect("records are valid record text");
        body.extend_from_slice(&self.signed);
        Some((200, Bytes::from(body)))
    }

    /// Go: x/mod/sumdb/server.go, `/tile/`: 400 for a malformed path, 404 beyond the tree.
    fn tile(&self, rel_path: &str) -> Option<(u16, Bytes)> {
        let Ok(tile) = Tile::parse_path(rel_path) else {
            return Some((400, Bytes::from_static(b"invalid tile syntax\n")));
        };
        if tile.h != TILE_HEIGHT {
            return None;
        }
        let mut data = if tile.l == -1 {
            self.data_tile(tile)?
        } else {
            read_tile_data(tile, &self.hashes).ok()?
        };
        if self.corrupt.contains(rel_path) {
            if let Some(last) = data.last_mut() {
                *last ^= 0x01;
            }
        }
        Some((200, Bytes::from(data)))
    }

    /// Go: x/mod/sumdb/server.go: a data tile is the records, each as FormatRecord writes it.
    fn data_tile(&self, tile: Tile) -> Option<Vec<u8>> {
        let start = tile.n << tile.h;
        let end = start + i64::from(tile.w);
        if end > self.records.len() as i64 {
            return None;
        }
        let mut data = Vec::new();
        for id in start..end {
            let record = tlog::format_record(id, &self.records[id as usize]).ok()?;
            data.extend_from_slice(&record);
        }
        Some(data)
    }
}

/// `path@version` of a record's first line.
fn record_key(text: &[u8]) -> Option<String> {
    let line = std::str::from_utf8(text).ok()?.lines().next()?;
    let mut fields = line.split(' ');
    Some(format!("{}@{}", fields.next()?, fields.next()?))
}

/// The zip's and the go.mod's `h1:` as gomirror computes them (a zip's only after it passes
/// `check_zip`), `None` if the version cannot be hashed.
pub fn module_hashes(files: &ModuleFiles) -> Option<(String, String)> {
    let mv = ModVer::parse(&files.path, &files.version).ok()?;
    let mod_file = files.mod_file.as_ref()?;
    let mut tmp = tempfile::NamedTempFile::new().ok()?;
    tmp.write_all(&files.zip).ok()?;
    let checked = zip::check_zip(&mv, tmp.path()).ok()?;
    Some((checked.h1, dirhash::hash_go_mod(&dirhash::digest(mod_file))))
}
