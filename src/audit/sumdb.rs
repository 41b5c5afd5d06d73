//! The offline checksum database (`sumdb/<name>/`) as a go client reads
//! it, through the served tree (files, or a bucket's objects; see: #13,
//! #17): `latest` is a head signed by the configured key; every covered
//! version has a lookup naming the recorded id and hashes; each lookup's
//! head is consistent with `latest` and its record is included in
//! `latest`'s tree, all proved with the tiles the tree serves.

use std::collections::HashSet;

use super::{finding, AuditReport};
use crate::config::SumdbSettings;
use crate::module::ModVer;
use crate::publish::layout::{sumdb_rel, SumdbFile, Tree};
use crate::state::RecordRow;
use crate::verify::sumdb::client::{open_head, SignedHead};
use crate::verify::sumdb::local::LocalTiles;
use crate::verify::sumdb::note::Verifier;
use crate::verify::sumdb::tile::Tile;
use crate::verify::sumdb::tlog::{format_hash, Hash};
use crate::verify::sumdb::{parse_lookup, parse_record_hashes};

/// The largest `latest` or lookup read: a signed note is a few hundred
/// bytes.
const MAX_NOTE: u64 = 64 << 10;

/// Reads a tile of the offline copy.
type TileLoader<'a> = Box<dyn FnMut(&Tile) -> Result<Option<Vec<u8>>, String> + 'a>;

/// The offline checksum database as a go client would read it: only files
/// of the tree.
pub(super) struct OfflineCopy<'a> {
    tree: &'a Tree,
    settings: &'a SumdbSettings,
    verifier: &'a Verifier,
    tiles: LocalTiles<TileLoader<'a>>,
    /// Heads proved consistent with the pinned one.
    consistent: HashSet<(i64, Hash)>,
    report: AuditReport,
}

impl<'a> OfflineCopy<'a> {
    pub(super) fn new(tree: &'a Tree, settings: &'a SumdbSettings, verifier: &'a Verifier) -> Self {
        OfflineCopy {
            tree,
            settings,
            verifier,
            tiles: LocalTiles::new(Box::new(|t: &Tile| {
                crate::publish::read_sumdb_tile(tree, &settings.name, t)
            })),
            consistent: HashSet::new(),
            report: AuditReport::default(),
        }
    }

    fn rel(&self, file: SumdbFile<'_>) -> String {
        sumdb_rel(&self.settings.name, file)
    }

    /// The file `rel` of the copy, as the tree serves it; `None` if it
    /// serves none.
    fn read(&self, rel: &str) -> Result<Option<Vec<u8>>, String> {
        self.tree
            .read_served(rel, MAX_NOTE)
            .map_err(|e| e.to_string())
    }

    fn shown(&self, rel: &str) -> String {
        self.tree.display(rel).display().to_string()
    }

    fn problem(&mut self, subject: impl Into<String>, problem: impl Into<String>) {
        self.report.problems.push(finding(subject, problem));
    }

    pub(super) fn check(mut self, rows: &[RecordRow]) -> AuditReport {
        let supported = self.rel(SumdbFile::Supported);
        self.report.supported = match self.tree.is_served(&supported) {
            Ok(served) => served,
            Err(e) => {
                let shown = self.shown(&supported);
                self.problem(shown, e.to_string());
                return self.report;
            }
        };
        let latest = self.rel(SumdbFile::Latest);
        let pin = match self.read(&latest) {
            Ok(Some(note)) => open_head(self.verifier, &note, "latest").map_err(|e| e.to_string()),
            // No copy yet (nothing verified was published).
            Ok(None) if !self.report.supported => return self.report,
            Ok(None) => Err("missing, and `supported` is served: go fails".to_owned()),
            Err(e) => Err(e),
        };
        let pin = match pin {
            Ok(pin) => pin,
            Err(e) => {
                let shown = self.shown(&latest);
                self.problem(shown, e);
                return self.report;
            }
        };
        self.report.pinned_tree = Some(pin.tree.n);
        self.consistent.insert((pin.tree.n, pin.tree.hash));
        for row in rows
            .iter()
            .filter(|r| !self.settings.is_private(r.mv.path.as_str()))
        {
            self.check_lookup(&pin, row);
        }
        self.report
    }

    fn check_lookup(&mut self, pin: &SignedHead, row: &RecordRow) {
        let (mv, subject) = (&row.mv, row.mv.to_string());
        let rel = self.rel(SumdbFile::Lookup(mv));
        // Named as the tree serves it: a file, or a bucket's object.
        let shown = self.shown(&rel);
        let body = match self.read(&rel) {
            Ok(Some(body)) => body,
            Ok(None) if row.record_id.is_none() => {
                if self.report.supported {
                    self.problem(
                        subject,
                        format!("lookup: {shown}: missing, and `supported` is served: go fails"),
                    );
                }
                return;
            }
            Ok(None) => return self.problem(subject, format!("lookup: {shown}: missing")),
            Err(e) => return self.problem(subject, format!("lookup: {shown}: {e}")),
        };
        if let Err(e) = self.prove_lookup(pin, mv, row, &body) {
            self.problem(subject, format!("lookup: {shown}: {e}"));
        } else {
            self.report.lookups += 1;
        }
    }

    fn prove_lookup(
        &mut self,
        pin: &SignedHead,
        mv: &ModVer,
        row: &RecordRow,
        body: &[u8],
    ) -> Result<(), String> {
        let lookup = parse_lookup(mv, body).map_err(|e| e.to_string())?;
        if row.record_id.is_some_and(|id| id != lookup.id) {
            return Err(format!(
                "record id {}, recorded {}",
                lookup.id,
                row.record_id.unwrap_or_default()
            ));
        }
        let hashes = parse_record_hashes(mv, &lookup.text).map_err(|e| e.to_string())?;
        if (hashes.h1_zip.as_str(), hashes.h1_mod.as_str()) != (&row.h1_zip, &row.h1_mod) {
            return Err(format!(
                "record says {} and {}, recorded {} and {}",
                hashes.h1_zip, hashes.h1_mod, row.h1_zip, row.h1_mod
            ));
        }
        let head = open_head(self.verifier, &lookup.note, "signed tree head")
            .map_err(|e| e.to_string())?;
        if head.tree.n > pin.tree.n {
            return Err(format!(
                "signed with tree {}, newer than latest (tree {})",
                head.tree.n, pin.tree.n
            ));
        }
        if !self.consistent.contains(&(head.tree.n, head.tree.hash)) {
            self.tiles.check_tree(&head.tree, &pin.tree).map_err(|e| {
                format!(
                    "tree {} ({}) is not consistent with latest: {e}",
                    head.tree.n,
                    format_hash(&head.tree.hash)
                )
            })?;
            self.consistent.insert((head.tree.n, head.tree.hash));
        }
        self.tiles.check_record(&pin.tree, lookup.id, &lookup.text)
    }
}
