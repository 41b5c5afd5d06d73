//! Phase 2: the bundle's files, in the manifest's order, each checked
//! against its sha256 and its place; tiles, lookups and the pinned head
//! proved; every version verified as a sync verifies a download, on other
//! threads while the stream is read, and staged for the commit.
//!
//! The reading thread only decompresses and takes the tar apart: a `.mod`
//! or `.zip` of up to [`IN_MEMORY`] bytes goes to a verifier thread as
//! bytes, which hashes it against the manifest and writes its temporary
//! file there. Larger ones, and any past [`HELD_BUDGET`] bytes in flight,
//! are streamed to disk and hashed by the reading thread, so memory stays
//! flat whatever the bundle's order and the number of cores.

use std::collections::{HashMap, HashSet};
use std::io::{Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use sha2::{Digest, Sha256};

use crate::bundle::manifest::Manifest;
use crate::bundle::{volume, BundleError};
use crate::fetch::{Downloaded, Fetched};
use crate::module::ModVer;
use crate::publish::layout::{self, Kind, SumdbFile};
use crate::publish::{self, atomic, Staged, WriteError};
use crate::state::RecordId;
use crate::sync::Progress;
use crate::verify::sumdb::client::{open_head, SignedHead};
use crate::verify::sumdb::local::LocalTiles;
use crate::verify::sumdb::tile::Tile;
use crate::verify::sumdb::tlog::format_hash;
use crate::verify::sumdb::{parse_lookup, parse_record_hashes, RecordHashes};
use crate::verify::{self, Vouched};

use super::error::file_err;
use super::header::Header;
use super::{Context, Expect, FileProblem, ImportError, Refusal};

/// Everything of the bundle, verified and written beside its final names.
pub(super) struct StagedBundle {
    pub(super) tiles: Vec<(Tile, Bytes)>,
    pub(super) lookups: Vec<(ModVer, Vec<u8>)>,
    /// Record ids, for the state.
    pub(super) records: Vec<RecordId>,
    pub(super) staged: Vec<Staged>,
    pub(super) pin: Option<SignedHead>,
}

/// Phase 2: reads the whole bundle once more, checking every file, and
/// stages the versions. Blocking.
pub(super) fn stream(
    ctx: &Context,
    path: &Path,
    header: &Header,
    progress: &dyn Progress,
) -> Result<StagedBundle, ImportError> {
    let mut archive = tar::Archive::new(volume::open_stream(path)?);
    let mut entries = archive
        .entries()
        .map_err(|e| file_err("bundle", FileProblem::Tar(e)))?;
    crate::bundle::head::skip_manifest(&mut entries, &header.id).map_err(|e| match e {
        BundleError::Invalid(_) => Refusal::Changed.into(),
        e => ImportError::from(e),
    })?;
    // Versions are hashed, written and verified (zip rules, `h1:`) on other
    // threads while this one decompresses the next files; one per core,
    // since this thread mostly waits for them.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (job_tx, job_rx) = std::sync::mpsc::sync_channel::<Job>(workers * 4);
    let job_rx = std::sync::Mutex::new(job_rx);
    let (done_tx, done_rx) = std::sync::mpsc::channel::<Result<Staged, ImportError>>();
    let held = AtomicU64::new(0);
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let done_tx = done_tx.clone();
            let (job_rx, held) = (&job_rx, &held);
            scope.spawn(move || loop {
                let job = job_rx.lock().unwrap_or_else(|e| e.into_inner()).recv();
                let Ok(job) = job else { break };
                if done_tx.send(verify_job(ctx, job, held, progress)).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        let mut staged = Vec::with_capacity(header.manifest.versions.len());
        let streamed = stream_files(
            ctx,
            header,
            &mut entries,
            (job_tx, &held),
            &done_rx,
            &mut staged,
        );
        // The job sender is gone: the workers finish what is queued, then stop.
        for result in done_rx.iter() {
            staged.push(result?);
        }
        streamed?.finish(staged)
    })
}

/// Every file of the manifest, in order; versions go to the verifiers.
fn stream_files<'a, R: Read>(
    ctx: &'a Context,
    header: &Header,
    entries: &mut tar::Entries<'_, R>,
    (jobs, held): (std::sync::mpsc::SyncSender<Job>, &'a AtomicU64),
    done: &std::sync::mpsc::Receiver<Result<Staged, ImportError>>,
    staged: &mut Vec<Staged>,
) -> Result<Stream<'a>, ImportError> {
    let mut s = Stream::new(ctx, &header.manifest, jobs, held)?;
    for f in &header.manifest.files {
        let mut entry = entries
            .next()
            .ok_or_else(|| file_err(&f.path, FileProblem::Missing))?
            .map_err(|e| file_err(&f.path, FileProblem::Tar(e)))?;
        let name = entry
            .path()
            .map(|p| p.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name != format!("tree/{}", f.path) {
            return Err(file_err(&f.path, FileProblem::Misplaced { found: name }));
        }
        if entry.size() != f.size {
            let (tar, manifest) = (entry.size(), f.size);
            return Err(file_err(&f.path, FileProblem::Size { tar, manifest }));
        }
        s.take(&f.path, &f.sha256, f.size, &mut entry)?;
        // A version that failed verification stops the import early.
        while let Ok(result) = done.try_recv() {
            staged.push(result?);
        }
    }
    if entries.next().is_some() {
        return Err(Refusal::Unnamed.into());
    }
    s.jobs = None;
    Ok(s)
}

/// One version's files, for a verifier thread.
struct Job {
    i: usize,
    mod_file: Received,
    /// `None` for a version the bundle holds for its go.mod only.
    zip: Option<Received>,
    info: Bytes,
    /// The checksum database's record (name, hashes), unless private or off.
    vouched: Option<(String, RecordHashes)>,
}

/// How messages show the zip hash of a version a bundle holds for its go.mod only.
const NO_ZIP: &str = "no zip";

/// A `.mod` or `.zip` as the reading thread passes it on.
enum Received {
    /// Streamed into a temporary file, its sha256 checked.
    Written(Downloaded),
    /// Read whole; not checked yet.
    Read {
        rel: String,
        sha256: String,
        bytes: Vec<u8>,
    },
}

impl Received {
    /// Checks the bytes against the manifest's sha256, then writes them to
    /// a temporary file in `dir`; either way they leave `held`.
    fn into_downloaded(self, dir: &Path, held: &AtomicU64) -> Result<Downloaded, ImportError> {
        let (rel, sha256, bytes) = match self {
            Received::Written(d) => return Ok(d),
            Received::Read { rel, sha256, bytes } => (rel, sha256, bytes),
        };
        let written = write_read(dir, &rel, &sha256, &bytes);
        held.fetch_sub(bytes.len() as u64, Ordering::Relaxed);
        written
    }
}

fn write_read(
    dir: &Path,
    rel: &str,
    sha256: &str,
    bytes: &[u8],
) -> Result<Downloaded, ImportError> {
    let digest: [u8; 32] = Sha256::digest(bytes).into();
    check_sha(rel, sha256, &digest)?;
    let mut file = atomic::create_temp(dir).map_err(ImportError::Publish)?;
    file.write_all(bytes).map_err(|e| {
        ImportError::Publish(WriteError::Io {
            op: "write",
            path: file.path().to_owned(),
            source: e,
        })
    })?;
    Ok(Downloaded {
        file,
        size: bytes.len() as u64,
        sha256: digest,
        url: format!("bundle:{rel}"),
    })
}

/// `verify::verify` with the record, the manifest's hashes, then staging.
fn verify_job(
    ctx: &Context,
    job: Job,
    held: &AtomicU64,
    progress: &dyn Progress,
) -> Result<Staged, ImportError> {
    let (mv, entry) = &ctx.versions[job.i];
    let vouched = job
        .vouched
        .as_ref()
        .map(|(db, hashes)| Vouched { db, hashes });
    let fetched = Fetched {
        mv: mv.clone(),
        info: job.info,
        mod_file: job.mod_file.into_downloaded(&ctx.staging, held)?,
        zip: job
            .zip
            .map(|z| z.into_downloaded(&ctx.staging, held))
            .transpose()?,
    };
    let verified = verify::verify(fetched, vouched)
        .map_err(|q| file_err(&layout::version_rel(mv, Kind::Zip), FileProblem::Verify(q)))?;
    let c = verified.checked();
    let h1_zip = c.zip().map(|z| z.h1.as_str());
    if h1_zip != entry.h1_zip.as_deref() || c.h1_mod() != entry.h1_mod {
        let problem = FileProblem::Hashes {
            zip: h1_zip.unwrap_or(NO_ZIP).to_owned(),
            go_mod: c.h1_mod().to_owned(),
            want_zip: entry.h1_zip.as_deref().unwrap_or(NO_ZIP).to_owned(),
            want_mod: entry.h1_mod.clone(),
        };
        return Err(file_err(&layout::version_rel(mv, Kind::Zip), problem));
    }
    progress.finished(mv, "verified", c.zip_size());
    publish::stage(verified).map_err(ImportError::Publish)
}

/// The files of one version, gathered as the stream goes.
#[derive(Default)]
struct Pending {
    mod_file: Option<Received>,
    zip: Option<Received>,
}

/// A `.mod` or `.zip` up to this size is passed to a verifier as bytes.
const IN_MEMORY: u64 = 1 << 20;

/// What the bytes read for the verifiers and not written yet, waiting for
/// their `.info` or queued, may add up to, however many verifiers there
/// are; past it, files are streamed to disk by the reading thread.
const HELD_BUDGET: u64 = 16 << 20;

/// Reads a tile of this mirror's offline copy.
type TileLoader<'a> = Box<dyn FnMut(&Tile) -> Result<Option<Vec<u8>>, String> + 'a>;

struct Stream<'a> {
    ctx: &'a Context,
    pin: Option<SignedHead>,
    /// The bundle's tiles, then this tree's.
    tiles: LocalTiles<TileLoader<'a>>,
    records: HashMap<usize, (i64, RecordHashes, Vec<u8>)>,
    pending: HashMap<usize, Pending>,
    /// To the verifier threads; `None` once every file was read.
    jobs: Option<std::sync::mpsc::SyncSender<Job>>,
    consistent: HashSet<(i64, [u8; 32])>,
    pin_checked: bool,
    /// [`write_checked`]'s buffer, allocated once: a fresh 256 KiB per
    /// file cost an allocation and a memset for every `.mod` and `.zip`.
    buf: Vec<u8>,
    /// Bytes of [`Received::Read`] files not written yet, here or queued;
    /// only this thread adds to it, the verifiers subtract.
    held: &'a AtomicU64,
}

impl<'a> Stream<'a> {
    fn new(
        ctx: &'a Context,
        m: &Manifest,
        jobs: std::sync::mpsc::SyncSender<Job>,
        held: &'a AtomicU64,
    ) -> Result<Stream<'a>, ImportError> {
        let pin = match (&ctx.sumdb, &m.sumdb) {
            (None, _) => None,
            (Some(db), None) => {
                return Err(Refusal::NoRecords {
                    db: db.name.clone(),
                }
                .into())
            }
            (Some(db), Some(p)) if p.name != db.name => {
                return Err(Refusal::OtherDatabase {
                    pinned: p.name.clone(),
                    db: db.name.clone(),
                }
                .into())
            }
            (Some(db), Some(p)) => {
                let head = open_head(&db.verifier, p.note.as_bytes(), "the bundle's tree head")
                    .map_err(|e| Refusal::Head(Box::new(e)))?;
                if head.tree.n != p.size || format_hash(&head.tree.hash) != p.hash {
                    return Err(Refusal::HeadMismatch.into());
                }
                Some(head)
            }
        };
        Ok(Stream {
            ctx,
            pin,
            tiles: LocalTiles::new(Box::new(move |t: &Tile| match &ctx.sumdb {
                Some(db) => publish::read_sumdb_tile(&ctx.tree, &db.name, t),
                None => Ok(None),
            })),
            records: HashMap::new(),
            pending: HashMap::new(),
            jobs: Some(jobs),
            consistent: HashSet::new(),
            pin_checked: false,
            buf: vec![0; WRITE_BUFFER],
            held,
        })
    }

    fn take(
        &mut self,
        rel: &str,
        sha256: &str,
        size: u64,
        entry: &mut impl Read,
    ) -> Result<(), ImportError> {
        if let Some(tile) = self.tile_path(rel) {
            let data = read_checked(rel, sha256, entry, 1 << 20)?;
            self.tiles.give(tile, data);
            return Ok(());
        }
        if self.ctx.sumdb.is_none() && rel.starts_with("sumdb/") {
            // This mirror does not verify ([sumdb] key = "off"): checked, not kept.
            read_checked(rel, sha256, entry, 1 << 20)?;
            return Ok(());
        }
        let Some(&expect) = self.ctx.expected.get(rel) else {
            return Err(file_err(rel, FileProblem::NotPublished));
        };
        match expect {
            Expect::Mod(i) | Expect::Zip(i) => {
                let file = self.receive(rel, sha256, size, entry)?;
                let p = self.pending.entry(i).or_default();
                match expect {
                    Expect::Mod(_) => p.mod_file = Some(file),
                    _ => p.zip = Some(file),
                }
            }
            Expect::Info(i) => {
                let info = read_checked(rel, sha256, entry, verify::MAX_INFO)?;
                self.stage(i, Bytes::from(info))?;
            }
            Expect::Lookup(i) => {
                let body = read_checked(rel, sha256, entry, 1 << 20)?;
                self.check_lookup(i, rel, body)?;
            }
            Expect::SumdbLatest => {
                let note = read_checked(rel, sha256, entry, 1 << 20)?;
                if self.pin.as_ref().map(|p| &p.note[..]) != Some(&note[..]) {
                    return Err(file_err(rel, FileProblem::NotThePin));
                }
            }
            Expect::List | Expect::Latest | Expect::Supported => {
                // Checked, not copied: lists are rebuilt from what this tree
                // publishes, and `supported` from whether its copy is complete.
                read_checked(rel, sha256, entry, 16 << 20)?;
            }
        }
        Ok(())
    }

    /// A `.mod` or `.zip` of `size` bytes (the tar's and the manifest's):
    /// read whole for a verifier if small and within the budget, else
    /// streamed to disk and checked here.
    fn receive(
        &mut self,
        rel: &str,
        sha256: &str,
        size: u64,
        entry: &mut impl Read,
    ) -> Result<Received, ImportError> {
        if size > IN_MEMORY || self.held.load(Ordering::Relaxed) + size > HELD_BUDGET {
            let file = write_checked(rel, sha256, entry, &self.ctx.staging, &mut self.buf)?;
            return Ok(Received::Written(file));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| file_err(rel, FileProblem::Read(e)))?;
        self.held.fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(Received::Read {
            rel: rel.to_owned(),
            sha256: sha256.to_owned(),
            bytes,
        })
    }

    /// `sumdb/<name>/tile/…` of this mirror's database, as a [`Tile`] whose
    /// path renders back to exactly `rel`.
    fn tile_path(&self, rel: &str) -> Option<Tile> {
        let db = self.ctx.sumdb.as_ref()?;
        let prefix = format!("sumdb/{}/", db.name);
        let tile = Tile::parse_path(rel.strip_prefix(&prefix)?).ok()?;
        (layout::sumdb_rel(&db.name, SumdbFile::Tile(&tile)) == rel && tile.l >= 0).then_some(tile)
    }

    /// A lookup: its record vouches for the manifest's hashes, is signed
    /// under a head consistent with the pin, and is included in the pin.
    fn check_lookup(&mut self, i: usize, rel: &str, body: Vec<u8>) -> Result<(), ImportError> {
        let (mv, entry) = &self.ctx.versions[i];
        let db = self
            .ctx
            .sumdb
            .as_ref()
            .expect("lookups are expected only with a database");
        let pin = self
            .pin
            .clone()
            .expect("a database implies a pin (Stream::new)");
        self.check_pin()?;
        let lookup = parse_lookup(mv, &body).map_err(|e| file_err(rel, FileProblem::Lookup(e)))?;
        let hashes = parse_record_hashes(mv, &lookup.text)
            .map_err(|e| file_err(rel, FileProblem::Lookup(e)))?;
        // A version held for its go.mod only is vouched for by its go.mod's hash.
        let zip_differs = entry.h1_zip.as_ref().is_some_and(|z| *z != hashes.h1_zip);
        if zip_differs || hashes.h1_mod != entry.h1_mod {
            let problem = FileProblem::Record {
                zip: hashes.h1_zip,
                go_mod: hashes.h1_mod,
                want_zip: entry.h1_zip.as_deref().unwrap_or(NO_ZIP).to_owned(),
                want_mod: entry.h1_mod.clone(),
            };
            return Err(file_err(rel, problem));
        }
        let head = open_head(&db.verifier, &lookup.note, rel)
            .map_err(|e| file_err(rel, FileProblem::Head(Box::new(e))))?;
        if !self.consistent.contains(&(head.tree.n, head.tree.hash)) {
            self.tiles
                .check_tree(&head.tree, &pin.tree)
                .map_err(|proof| {
                    file_err(
                        rel,
                        FileProblem::SignedTree {
                            n: head.tree.n,
                            proof,
                        },
                    )
                })?;
            self.consistent.insert((head.tree.n, head.tree.hash));
        }
        self.tiles
            .check_record(&pin.tree, lookup.id, &lookup.text)
            .map_err(|e| file_err(rel, FileProblem::Inclusion(e)))?;
        self.records.insert(i, (lookup.id, hashes, body));
        Ok(())
    }

    /// The pin must extend the newest head this mirror verified (or be
    /// extended by it). Proved once, with the first lookup or at the end.
    fn check_pin(&mut self) -> Result<(), ImportError> {
        let (Some(pin), Some(db)) = (self.pin.clone(), self.ctx.sumdb.as_ref()) else {
            return Ok(());
        };
        if self.pin_checked {
            return Ok(());
        }
        if let Some(newest) = db.newest.clone() {
            let (old, new) = if newest.tree.n <= pin.tree.n {
                (newest.tree, pin.tree)
            } else {
                (pin.tree, newest.tree)
            };
            self.tiles
                .check_tree(&old, &new)
                .map_err(|proof| Refusal::Inconsistent {
                    pin: pin.tree.n,
                    newest: newest.tree.n,
                    proof,
                })?;
        }
        self.consistent.insert((pin.tree.n, pin.tree.hash));
        self.pin_checked = true;
        Ok(())
    }

    fn name(&self) -> String {
        self.ctx
            .sumdb
            .as_ref()
            .map(|d| d.name.clone())
            .unwrap_or_default()
    }

    /// The version's `.info` arrived: its three files go to a verifier,
    /// for the same checks as a download from upstream, with the record.
    fn stage(&mut self, i: usize, info: Bytes) -> Result<(), ImportError> {
        let (mv, entry) = &self.ctx.versions[i];
        let p = self.pending.remove(&i).unwrap_or_default();
        let (mod_file, zip) = match (p.mod_file, p.zip, &entry.h1_zip) {
            (Some(m), Some(z), Some(_)) => (m, Some(z)),
            // Held for its go.mod only: no zip to wait for.
            (Some(m), None, None) => (m, None),
            _ => return Err(Refusal::InfoFirst { mv: mv.clone() }.into()),
        };
        let private = self
            .ctx
            .sumdb
            .as_ref()
            .is_some_and(|d| d.settings.is_private(mv.path.as_str()));
        let record = self.records.get(&i).map(|(_, hashes, _)| hashes.clone());
        if self.ctx.sumdb.is_some() && record.is_none() && !private {
            return Err(Refusal::NoLookup { mv: mv.clone() }.into());
        }
        let job = Job {
            i,
            mod_file,
            zip,
            info,
            vouched: record.map(|hashes| (self.name(), hashes)),
        };
        let jobs = self.jobs.as_ref().expect("open while files are read");
        jobs.send(job).map_err(|_| ImportError::Verifiers)?;
        Ok(())
    }

    fn finish(mut self, staged: Vec<Staged>) -> Result<StagedBundle, ImportError> {
        self.check_pin()?;
        if let Some((i, _)) = self.pending.iter().next() {
            let (mv, _) = &self.ctx.versions[*i];
            return Err(Refusal::NoInfo { mv: mv.clone() }.into());
        }
        if staged.len() != self.ctx.versions.len() {
            return Err(Refusal::Count {
                named: self.ctx.versions.len(),
                held: staged.len(),
            }
            .into());
        }
        let mut lookups = Vec::new();
        let mut records = Vec::new();
        let mut ids: Vec<usize> = self.records.keys().copied().collect();
        ids.sort_unstable();
        for i in ids {
            let (id, _, body) = self.records.remove(&i).expect("listed above");
            let mv = self.ctx.versions[i].0.clone();
            records.push(RecordId { mv: mv.clone(), id });
            lookups.push((mv, body));
        }
        let mut tiles: Vec<(Tile, Bytes)> = self
            .tiles
            .take_given()
            .into_iter()
            .map(|(t, d)| (t, Bytes::from(d)))
            .collect();
        tiles.sort_by_key(|(t, _)| *t);
        Ok(StagedBundle {
            tiles,
            lookups,
            records,
            staged,
            pin: self.pin,
        })
    }
}

/// Reads a small entry whole, checking its sha256.
fn read_checked(
    rel: &str,
    sha256: &str,
    entry: &mut impl Read,
    limit: u64,
) -> Result<Vec<u8>, ImportError> {
    let mut buf = Vec::new();
    entry
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| file_err(rel, FileProblem::Read(e)))?;
    if buf.len() as u64 > limit {
        return Err(file_err(rel, FileProblem::LargerThan { limit }));
    }
    check_sha(rel, sha256, &Sha256::digest(&buf).into())?;
    Ok(buf)
}

/// Bytes per read of a `.mod` or `.zip` from the bundle.
const WRITE_BUFFER: usize = 256 << 10;

/// Streams an entry into a temporary file in `dir`, hashing it.
fn write_checked(
    rel: &str,
    sha256: &str,
    entry: &mut impl Read,
    dir: &Path,
    buf: &mut [u8],
) -> Result<Downloaded, ImportError> {
    let mut file = atomic::create_temp(dir).map_err(ImportError::Publish)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    loop {
        let n = entry
            .read(buf)
            .map_err(|e| file_err(rel, FileProblem::Read(e)))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut file, &buf[..n]).map_err(|e| {
            ImportError::Publish(WriteError::Io {
                op: "write",
                path: file.path().to_owned(),
                source: e,
            })
        })?;
        size += n as u64;
    }
    let digest: [u8; 32] = hasher.finalize().into();
    check_sha(rel, sha256, &digest)?;
    Ok(Downloaded {
        file,
        size,
        sha256: digest,
        url: format!("bundle:{rel}"),
    })
}

fn check_sha(rel: &str, want: &str, got: &[u8; 32]) -> Result<(), ImportError> {
    let got = hex::encode(got);
    if got != want {
        let want = want.to_owned();
        return Err(file_err(rel, FileProblem::Sha256 { got, want }));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8], sha256: String) -> Received {
        Received::Read {
            rel: "example.com/m/@v/v1.0.0.zip".into(),
            sha256,
            bytes: bytes.to_vec(),
        }
    }

    #[test]
    fn bytes_read_for_a_verifier_are_checked_before_they_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let held = AtomicU64::new(18);
        let good = hex::encode(Sha256::digest(b"zip bytes"));
        let d = read(b"zip bytes", good.clone())
            .into_downloaded(dir.path(), &held)
            .unwrap();
        assert_eq!(std::fs::read(d.file.path()).unwrap(), b"zip bytes");
        assert_eq!(hex::encode(d.sha256), good);
        assert_eq!(d.size, 9);
        drop(d);

        assert_eq!(held.load(Ordering::Relaxed), 9);
        let err = read(b"zip bytez", good.clone())
            .into_downloaded(dir.path(), &held)
            .unwrap_err()
            .to_string();
        assert_eq!(held.load(Ordering::Relaxed), 0, "refused bytes leave too");
        assert!(
            err.contains("example.com/m/@v/v1.0.0.zip: sha256 ")
                && err.contains(&format!("the signed manifest says {good}")),
            "{err}"
        );
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
