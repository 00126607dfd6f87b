//! A local, append-only copy of the tree's stored hashes, in stored-index order (hash `i` at
//! byte `32·i`), so proofs and tiles are read with a few `pread`s instead of a query.
//!
//! The database stays the source of truth. The file is written after each batch commits, so
//! it can only lag behind the database; on open it is checked against the database and cut
//! or refilled, and a node that did not write some batches (a PostgreSQL follower) fills the
//! gap from the database before it reads there.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use civitas_store::Db;
use tokio::sync::Mutex;

use crate::LedgerError;
use crate::storage;
use crate::tree::Hash;

/// The hash file and how many hashes it holds.
pub(crate) struct HashFile {
    file: File,
    /// Hashes written and readable; set after the bytes are written.
    len: AtomicU64,
    /// Serialises appends and fills.
    write: Mutex<()>,
}

fn io(e: std::io::Error) -> LedgerError {
    LedgerError::Corrupt(format!("the ledger's hash file: {e}"))
}

impl HashFile {
    /// Opens (or creates) the file and makes it agree with the database's tree of `size`
    /// with `root`: a longer or disagreeing file is cut, a shorter one filled, and the file's
    /// right edge must give the database's root.
    pub(crate) async fn open(
        path: &Path,
        db: &Db,
        size: u64,
        root: Hash,
    ) -> Result<HashFile, LedgerError> {
        let count = crate::tree::stored_hash_index(0, size);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let on_disk = file.metadata().map_err(io)?.len() / 32;
        let hf = HashFile {
            file,
            len: AtomicU64::new(on_disk.min(count)),
            write: Mutex::new(()),
        };
        // Spot-check the file against the database at a few places; any difference means it
        // belongs to another history (a rebuilt database), so it is rebuilt from scratch.
        let kept = hf.len.load(Ordering::SeqCst);
        if kept > 0 {
            let probes: Vec<u64> = [0, kept / 3, kept / 2, kept - 1].into_iter().collect();
            let want = storage::read_hashes(db, &probes).await?;
            let agrees = probes
                .iter()
                .all(|i| hf.read_one(*i).is_some_and(|h| h == want[i]));
            if !agrees {
                hf.len.store(0, Ordering::SeqCst);
            }
        }
        hf.file
            .set_len(hf.len.load(Ordering::SeqCst) * 32)
            .map_err(io)?;
        hf.fill(db, count).await?;
        if hf.root(size) != Some(root) {
            tracing::warn!("the ledger's hash file disagrees with the database; rebuilding it");
            hf.len.store(0, Ordering::SeqCst);
            hf.file.set_len(0).map_err(io)?;
            hf.fill(db, count).await?;
            if hf.root(size) != Some(root) {
                return Err(LedgerError::Corrupt(
                    "the stored hashes do not give the stored root".into(),
                ));
            }
        }
        Ok(hf)
    }

    /// The root of the tree of `size` computed from the file's right edge.
    fn root(&self, size: u64) -> Option<Hash> {
        let idx: Vec<u64> = crate::tree::Frontier::indexes(size)
            .into_iter()
            .map(|(_, i)| i)
            .collect();
        let hashes = self.read(&idx)?;
        crate::tree::Frontier::from_hashes(size, &hashes)
            .ok()
            .map(|f| f.root())
    }

    fn read_one(&self, i: u64) -> Option<Hash> {
        let mut b = [0u8; 32];
        self.file.read_exact_at(&mut b, i * 32).ok()?;
        Some(Hash(b))
    }

    /// The hashes at `indexes`, or `None` if the file does not reach them all.
    pub(crate) fn read(&self, indexes: &[u64]) -> Option<Vec<Hash>> {
        let len = self.len.load(Ordering::Acquire);
        indexes
            .iter()
            .map(|i| if *i < len { self.read_one(*i) } else { None })
            .collect()
    }

    /// Appends hashes that start at stored index `start`, right after a batch committed.
    /// A gap (batches this node did not write) is left for [`HashFile::fill`].
    pub(crate) async fn append(&self, start: u64, hashes: &[Hash]) -> Result<(), LedgerError> {
        let _guard = self.write.lock().await;
        if start != self.len.load(Ordering::SeqCst) {
            return Ok(());
        }
        let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
        self.file.write_all_at(&bytes, start * 32).map_err(io)?;
        self.len
            .store(start + hashes.len() as u64, Ordering::Release);
        Ok(())
    }

    /// Copies stored hashes from the database until the file holds `count`.
    pub(crate) async fn fill(&self, db: &Db, count: u64) -> Result<(), LedgerError> {
        let _guard = self.write.lock().await;
        const CHUNK: u64 = 100_000;
        loop {
            let start = self.len.load(Ordering::SeqCst);
            if start >= count {
                return Ok(());
            }
            let end = (start + CHUNK).min(count);
            let hashes = storage::hash_range(db, start, end).await?;
            if hashes.len() as u64 != end - start {
                return Err(LedgerError::Corrupt(format!(
                    "stored hashes {start}..{end} are incomplete"
                )));
            }
            let bytes: Vec<u8> = hashes.iter().flat_map(|h| h.0).collect();
            self.file.write_all_at(&bytes, start * 32).map_err(io)?;
            self.len.store(end, Ordering::Release);
        }
    }
}
