//! The running log: a sequencer task that batches concurrent appends into one transaction
//! (one sync to disk), signs checkpoints, and the read side (proofs, tiles, subject events).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use civitas_store::{Db, Script};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tlog_tiles::{RecordProof, TreeProof};

use civitas_store::Engine;
use tokio::sync::{Mutex, RwLock, mpsc, oneshot, watch};

use crate::LedgerError;
use crate::event::Event;
use crate::hashfile::HashFile;
use crate::note::{LogKey, generate_signer_key};
use crate::proof::ProofBundle;
use crate::storage::{self, NewEntry};
use crate::subject::{Known, SubjectSecret, SubjectTag};
use crate::tree::{Frontier, Hash, Prefetched, Recording, record_hash, stored_hash_index};
use crate::witness::{WitnessPolicy, add_checkpoint_body};

/// How a log runs.
#[derive(Clone)]
pub struct LedgerConfig {
    /// The log's origin: its name in checkpoints, such as `civitas.example.gov/ledger`.
    pub origin: String,
    /// Longest time between an append and a checkpoint that covers it.
    pub checkpoint_interval: Duration,
    /// Most entries written in one transaction.
    pub max_batch: usize,
    /// Witnesses whose cosignatures a checkpoint needs before it is published; none means
    /// a checkpoint is published as soon as the log signs it.
    pub witnesses: Option<WitnessPolicy>,
    /// A local file for a copy of the stored hashes, from which proofs and tiles are read;
    /// without one they are read from the database.
    pub hash_file: Option<std::path::PathBuf>,
}

impl LedgerConfig {
    /// Defaults for a log named `origin`: a checkpoint at least every 250 ms while the log
    /// grows, batches of up to 4,096 entries.
    pub fn new(origin: &str) -> LedgerConfig {
        LedgerConfig {
            origin: origin.to_string(),
            checkpoint_interval: Duration::from_millis(250),
            max_batch: 4096,
            witnesses: None,
            hash_file: None,
        }
    }
}

/// A signed checkpoint as published.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The C2SP signed note.
    pub note: String,
}

struct Append {
    /// One entry, or several that go in together, in order (see [`Ledger::append_all_with`]).
    entries: Vec<NewEntry>,
    /// Writes that commit with the entries (see [`Ledger::append_with`]), shared with the
    /// SQLite writer thread that runs them.
    writes: Option<Arc<Script>>,
    reply: oneshot::Sender<Result<u64, LedgerError>>,
}

struct Inner {
    db: Db,
    key: LogKey,
    config: LedgerConfig,
    appends: mpsc::Sender<Append>,
    /// The receiving end of `appends`, held by the sequencer while this node leads.
    receiver: Mutex<Option<mpsc::Receiver<Append>>>,
    /// Whether this node is the sequencer now.
    leader: AtomicBool,
    /// Entries durable in the tree, as far as this node knows.
    durable: AtomicU64,
    /// The local copy of the stored hashes, when configured.
    hashes: Option<HashFile>,
    latest: RwLock<Option<Arc<SignedCheckpoint>>>,
    published: watch::Receiver<u64>,
    publish: watch::Sender<u64>,
    /// Subjects' secrets known in this process, and new ones waiting to be written.
    known: Arc<Known>,
    /// New subjects whose secrets wait to be written, each with the secret to write (on
    /// SQLite, its pending one; on PostgreSQL, a new one that may lose to another node's)
    /// and whoever waits for it: whoever takes `subject_writer` next writes all of them in
    /// one commit, so a burst of first uses costs one sync to disk, not one each.
    new_subjects: std::sync::Mutex<Vec<(String, [u8; 32], NewSubjectReply)>>,
    subject_writer: Mutex<()>,
    /// Tells the sequencer that entries wait in the queue (see [`Ledger::append_in`]).
    queue_nudge: Arc<tokio::sync::Notify>,
}

/// Where a new subject's secret is sent once written (errors as text: they go to many).
type NewSubjectReply = oneshot::Sender<Result<Vec<u8>, String>>;

/// The most new subjects' secrets written in one commit.
const NEW_SUBJECTS_BATCH: usize = 1_000;

/// A handle to the log; cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

/// Any number that fits PostgreSQL's advisory-lock key space and names this log's sequencer.
const SEQUENCER_LOCK: i64 = 0x0063_6976_6974_6173;

impl Ledger {
    /// Opens the log in a migrated database, loads or creates its signing key, and starts
    /// sequencing. On SQLite this process is the sequencer. On PostgreSQL every node
    /// competes for an advisory lock: the holder sequences, the others queue their appends
    /// for it, and when the holder dies another node takes over.
    pub async fn open(db: Db, config: LedgerConfig) -> Result<Ledger, LedgerError> {
        let skey = storage::signing_key(&db, "log", || generate_signer_key(&config.origin)).await?;
        let key = LogKey::from_signer_key(&skey)?;
        let latest = load_published(&db, &key).await?;
        let (appends, rx) = mpsc::channel(config.max_batch * 4);
        let (publish, published) = watch::channel(latest.as_ref().map_or(0, |c| c.size));
        let hashes = match &config.hash_file {
            Some(path) => {
                let (size, root) = storage::tree_state(&db).await?;
                Some(HashFile::open(path, &db, size, root).await?)
            }
            None => None,
        };
        let known = db.shared::<Known>();
        let inner = Arc::new(Inner {
            db,
            key,
            config,
            appends,
            receiver: Mutex::new(Some(rx)),
            leader: AtomicBool::new(false),
            durable: AtomicU64::new(0),
            hashes,
            latest: RwLock::new(latest),
            published,
            publish,
            known,
            new_subjects: std::sync::Mutex::default(),
            subject_writer: Mutex::new(()),
            queue_nudge: Arc::default(),
        });
        match inner.db.engine() {
            Engine::Sqlite => {
                lead(&inner, None).await?;
            }
            Engine::Postgres => {
                if let Some(lock) = try_lock(&inner.db).await? {
                    let term = lead(&inner, Some(lock)).await?;
                    tokio::spawn(elect(Arc::downgrade(&inner), Some(term)));
                } else {
                    tokio::spawn(elect(Arc::downgrade(&inner), None));
                }
            }
        }
        let ledger = Ledger { inner };
        // Without witnesses the first checkpoint is published at once: wait for it, so an
        // open log always has one to serve. With witnesses it comes when they answer.
        if ledger.inner.config.witnesses.is_none() && ledger.is_sequencer() {
            let target = ledger.durable_size();
            let mut rx = ledger.inner.published.clone();
            let _ =
                tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| *p >= target)).await;
        }
        Ok(ledger)
    }

    /// How many entries are durable, as far as this node knows (on a node that does not
    /// sequence: as of the last published checkpoint).
    pub fn durable_size(&self) -> u64 {
        self.inner
            .durable
            .load(Ordering::SeqCst)
            .max(*self.inner.published.borrow())
    }

    /// Whether this node sequences the log now.
    pub fn is_sequencer(&self) -> bool {
        self.inner.leader.load(Ordering::SeqCst)
    }

    /// Appends an event and returns its index once it is durable.
    pub async fn append(&self, event: &Event) -> Result<u64, LedgerError> {
        self.submit(event, None).await
    }

    /// Appends an event together with the writes it records (say, the session a sign-in
    /// starts), in one transaction: both are durable, or neither, at the cost of one commit
    /// instead of two. Each statement must change exactly one row and be one that valid data
    /// cannot make fail, such as an insert under fresh random keys into a table without
    /// foreign keys: on the node that sequences, it commits in the same transaction as the
    /// other events of its batch. (Should one fail all the same, only its own append fails.)
    pub async fn append_with(&self, event: &Event, writes: Script) -> Result<u64, LedgerError> {
        self.submit(event, Some(writes)).await
    }

    /// Appends several events, in order, together with the writes they record, in one
    /// transaction, as [`Ledger::append_with`] does for one (each statement must change
    /// exactly one row; if one does not, say a compare-and-set that lost, nothing is written
    /// and the answer is [`LedgerError::WritesRefused`]). Returns once all are durable. On a
    /// node that does not sequence, they go through the queue as [`Ledger::append_in`]'s do.
    pub async fn append_all_with(
        &self,
        events: &[Event],
        writes: Script,
    ) -> Result<(), LedgerError> {
        if !self.is_sequencer() {
            let db = &self.inner.db;
            let mut tx = db.begin_write().await.map_err(crate::storage::sql)?;
            tx = storage::companion_writes(db, tx, &writes).await?;
            self.append_in(&mut tx, events).await?;
            tx.commit().await.map_err(crate::storage::sql)?;
            self.queued();
            return Ok(());
        }
        let entries = events
            .iter()
            .map(new_entry)
            .collect::<Result<Vec<_>, _>>()?;
        self.send(entries, Some(writes)).await.map(|_| ())
    }

    async fn submit(&self, event: &Event, writes: Option<Script>) -> Result<u64, LedgerError> {
        let entry = new_entry(event)?;
        if !self.is_sequencer() {
            return self.append_through_queue(entry, writes).await;
        }
        self.send(vec![entry], writes).await
    }

    /// Hands entries to the sequencer; the index of the first once they are durable.
    async fn send(
        &self,
        entries: Vec<NewEntry>,
        writes: Option<Script>,
    ) -> Result<u64, LedgerError> {
        let (reply, answer) = oneshot::channel();
        self.inner
            .appends
            .send(Append {
                entries,
                writes: writes.map(Arc::new),
                reply,
            })
            .await
            .map_err(|_| LedgerError::Unavailable("the sequencer has stopped".into()))?;
        answer.await.map_err(|_| {
            LedgerError::Unavailable("the sequencer stopped before answering".into())
        })?
    }

    /// Records events within the caller's database transaction (an outbox): they enter the
    /// sequencer's queue when, and only if, that transaction commits, so that an action and
    /// its event are durable together. After the commit, call [`Ledger::queued`]; the
    /// sequencer then puts them in the log moments later. Nobody waits for their indexes.
    pub async fn append_in(
        &self,
        conn: &mut civitas_store::sqlx::AnyConnection,
        events: &[Event],
    ) -> Result<(), LedgerError> {
        let entries = events
            .iter()
            .map(new_entry)
            .collect::<Result<Vec<_>, LedgerError>>()?;
        storage::enqueue_in(conn, self.inner.db.engine(), &entries).await
    }

    /// Tells this node's sequencer that a transaction with [`Ledger::append_in`] events has
    /// committed. (A sequencer on another node finds them on its next poll.)
    pub fn queued(&self) {
        self.inner.queue_nudge.notify_one();
    }

    /// On a node that does not sequence: queue the entry for the sequencer (in one
    /// transaction with its writes) and wait until it is in the log.
    async fn append_through_queue(
        &self,
        entry: NewEntry,
        writes: Option<Script>,
    ) -> Result<u64, LedgerError> {
        let queue_ref = storage::enqueue(&self.inner.db, &entry, writes.as_ref()).await?;
        let started = Instant::now();
        let mut wait = Duration::from_millis(5);
        loop {
            if let Some(idx) = storage::index_of_queued(&self.inner.db, queue_ref).await? {
                return Ok(idx);
            }
            if started.elapsed() > Duration::from_secs(30) {
                return Err(LedgerError::Unavailable(
                    "no sequencer took the entry within 30 s; it stays queued".into(),
                ));
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(100));
        }
    }

    /// Waits until a signed checkpoint covers entry `index`, and returns it.
    pub async fn wait_for_checkpoint(
        &self,
        index: u64,
    ) -> Result<Arc<SignedCheckpoint>, LedgerError> {
        let mut rx = self.inner.published.clone();
        rx.wait_for(|size| *size > index)
            .await
            .map_err(|_| LedgerError::Unavailable("the sequencer has stopped".into()))?;
        self.checkpoint().await
    }

    /// The newest signed checkpoint.
    pub async fn checkpoint(&self) -> Result<Arc<SignedCheckpoint>, LedgerError> {
        self.inner
            .latest
            .read()
            .await
            .clone()
            .ok_or_else(|| LedgerError::Unavailable("no checkpoint has been signed yet".into()))
    }

    /// The log's origin.
    pub fn origin(&self) -> &str {
        self.inner.key.origin()
    }

    /// The log's public verifier key.
    pub fn verifier_key(&self) -> &str {
        self.inner.key.verifier_key()
    }

    /// The inclusion proof of entry `index` in the tree of `size`.
    pub async fn inclusion_proof(&self, index: u64, size: u64) -> Result<RecordProof, LedgerError> {
        if index >= size {
            return Err(LedgerError::NotFound(format!(
                "entry {index} is not in a tree of {size}"
            )));
        }
        self.prove_record(size, index, false).await
    }

    /// Builds a record proof from the hash file (or, with `from_db`, straight from the
    /// database): a first pass finds which hashes it needs, the second uses them.
    async fn prove_record(
        &self,
        size: u64,
        index: u64,
        from_db: bool,
    ) -> Result<RecordProof, LedgerError> {
        let rec = Recording::default();
        tlog_tiles::prove_record(size, index, &rec)
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        let needed = rec.take();
        let hashes = if from_db {
            storage::read_hashes(&self.inner.db, &needed).await?
        } else {
            read_stored(&self.inner, &needed).await?
        };
        tlog_tiles::prove_record(size, index, &Prefetched(hashes))
            .map_err(|e| LedgerError::Corrupt(e.to_string()))
    }

    /// The consistency proof from the tree of `old` to the tree of `new`.
    pub async fn consistency_proof(&self, old: u64, new: u64) -> Result<TreeProof, LedgerError> {
        consistency_proof(&self.inner, old, new).await
    }

    /// Every published checkpoint, oldest first.
    pub async fn published_checkpoints(&self) -> Result<Vec<String>, LedgerError> {
        storage::published_checkpoints(&self.inner.db).await
    }

    /// The stored bytes of entry `index`.
    pub async fn entry(&self, index: u64) -> Result<Vec<u8>, LedgerError> {
        storage::entries(&self.inner.db, index, index + 1)
            .await?
            .pop()
            .map(|(_, d)| d)
            .ok_or_else(|| LedgerError::NotFound(format!("there is no entry {index}")))
    }

    /// A C2SP tlog-proof bundle for entry `index` against the newest checkpoint, with the
    /// entry itself as the bundle's extra data.
    pub async fn proof_bundle(&self, index: u64) -> Result<ProofBundle, LedgerError> {
        let cp = self.wait_for_checkpoint(index).await?;
        let entry = self.entry(index).await?;
        let mut proof = self.inclusion_proof(index, cp.size).await?;
        // A bundle goes to a person who will check it: check it first, and if the local
        // hash file served a wrong hash, build the proof from the database instead.
        if crate::tree::verify_inclusion(&proof, cp.size, cp.root, index, record_hash(&entry))
            .is_err()
        {
            tracing::error!(
                index,
                "a proof from the hash file did not verify; using the database"
            );
            proof = self.prove_record(cp.size, index, true).await?;
            crate::tree::verify_inclusion(&proof, cp.size, cp.root, index, record_hash(&entry))?;
        }
        Ok(ProofBundle {
            extra: Some(entry),
            index,
            proof,
            checkpoint: cp.note.clone(),
        })
    }

    /// The hash tile at tile level `level`, index `n`, with `width` hashes (C2SP tlog-tiles,
    /// height 8). Only tiles inside the newest checkpoint are served.
    pub async fn hash_tile(&self, level: u8, n: u64, width: u32) -> Result<Vec<u8>, LedgerError> {
        let size = self.checkpoint().await?.size;
        check_tile(level, n, width, size)?;
        let tree_level = level * 8;
        let indexes: Vec<u64> = (0..u64::from(width))
            .map(|i| stored_hash_index(tree_level, n * 256 + i))
            .collect();
        let got = read_stored(&self.inner, &indexes).await?;
        Ok(indexes.iter().flat_map(|i| got[i].0).collect())
    }

    /// The entry bundle `n` with `width` entries: each entry prefixed by its 16-bit length.
    pub async fn entry_bundle(&self, n: u64, width: u32) -> Result<Vec<u8>, LedgerError> {
        let size = self.checkpoint().await?.size;
        check_tile(0, n, width, size)?;
        let start = n * 256;
        let rows = storage::entries(&self.inner.db, start, start + u64::from(width)).await?;
        if rows.len() != width as usize {
            return Err(LedgerError::Corrupt(format!(
                "entry bundle {n} is missing entries"
            )));
        }
        let mut out = Vec::new();
        for (_, data) in rows {
            out.extend_from_slice(&(data.len() as u16).to_be_bytes());
            out.extend_from_slice(&data);
        }
        Ok(out)
    }

    /// The private secret of a subject (a person), created on first use and stored when
    /// this returns. `subject_ref` is the caller's own stable reference for the person; it
    /// never reaches the log.
    pub async fn subject_secret(&self, subject_ref: &str) -> Result<SubjectSecret, LedgerError> {
        let known = &self.inner.known;
        let value = match known.get(subject_ref) {
            Some((s, false)) => return Ok(SubjectSecret(s)),
            // Made for an event that is not written yet: written now, the same one.
            Some((s, true)) => s,
            None => match self.stored_or_new(subject_ref).await? {
                (s, false) => return Ok(SubjectSecret(s)),
                (s, true) => s,
            },
        };
        let bytes = self.new_subject_secret(subject_ref, value).await?;
        let secret = SubjectSecret::from_bytes(&bytes)?;
        known.stored(&[(subject_ref.to_string(), secret.0)]);
        Ok(secret)
    }

    /// The secret of a subject for an event about to be appended through this ledger
    /// ([`Ledger::append`], [`Ledger::append_with`], [`Ledger::append_all_with`]; not
    /// [`Ledger::append_in`]). On SQLite a new subject's secret is made in memory and the
    /// sequencer writes it in its next batch, which is at the latest the batch that holds
    /// the event: the first event about a person costs one commit, not two. Until the
    /// event is durable, its tag may appear only in the event and in the writes that
    /// commit with it ([`Ledger::append_with`]). On PostgreSQL, where another
    /// node may make a secret for the same person at the same moment, it is
    /// [`Ledger::subject_secret`].
    pub async fn subject_secret_for_event(
        &self,
        subject_ref: &str,
    ) -> Result<SubjectSecret, LedgerError> {
        if self.inner.db.engine() != Engine::Sqlite {
            return self.subject_secret(subject_ref).await;
        }
        if let Some((s, _)) = self.inner.known.get(subject_ref) {
            return Ok(SubjectSecret(s));
        }
        Ok(SubjectSecret(self.stored_or_new(subject_ref).await?.0))
    }

    /// The stored secret of a subject not known in memory, or (`true`) one to write: on
    /// SQLite the pending one, made now if need be; on PostgreSQL a new one.
    async fn stored_or_new(&self, subject_ref: &str) -> Result<([u8; 32], bool), LedgerError> {
        let known = &self.inner.known;
        loop {
            let mark = known.mark();
            if let Some(bytes) = storage::stored_subject_secret(&self.inner.db, subject_ref).await?
            {
                let s = SubjectSecret::from_bytes(&bytes)?.0;
                known.stored(&[(subject_ref.to_string(), s)]);
                return Ok((s, false));
            }
            if self.inner.db.engine() != Engine::Sqlite {
                return Ok((SubjectSecret::generate().0, true));
            }
            // Emptied since the read, so a secret stored meanwhile may be forgotten: read
            // again rather than make a second one.
            if let Some(s) = known.make(subject_ref, mark) {
                return Ok((s, true));
            }
        }
    }

    /// Writes a subject's secret (`value`, unless one is stored by then): queued with the
    /// others waiting, written with them by whoever holds the writer's turn first. The
    /// stored secret.
    async fn new_subject_secret(
        &self,
        subject_ref: &str,
        value: [u8; 32],
    ) -> Result<Vec<u8>, LedgerError> {
        let (reply, mut answer) = oneshot::channel();
        let waiting = || {
            self.inner
                .new_subjects
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        waiting().push((subject_ref.to_string(), value, reply));
        let answered = loop {
            let _turn = self.inner.subject_writer.lock().await;
            // Written by an earlier turn?
            match answer.try_recv() {
                Ok(a) => break Some(a),
                Err(oneshot::error::TryRecvError::Closed) => break None,
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let batch: Vec<(String, [u8; 32], NewSubjectReply)> = {
                let mut w = waiting();
                let n = w.len().min(NEW_SUBJECTS_BATCH);
                w.drain(..n).collect()
            };
            if batch.is_empty() {
                // Taken by a turn whose write is still under way: its task answers.
                break None;
            }
            // Written by a task of its own, so that the batch's other waiters are answered
            // even if this caller goes away (a client that hangs up drops its handler).
            let db = self.inner.db.clone();
            let _ = tokio::spawn(async move {
                let secrets: Vec<(&str, [u8; 32])> =
                    batch.iter().map(|(r, s, _)| (r.as_str(), *s)).collect();
                let written = storage::create_subject_secrets(&db, &secrets).await;
                for (r, _, reply) in batch {
                    let _ = reply.send(match &written {
                        Ok(found) => found
                            .get(&r)
                            .cloned()
                            .ok_or_else(|| "a subject's secret vanished".to_string()),
                        Err(e) => Err(e.to_string()),
                    });
                }
            })
            .await;
        };
        let answered = match answered {
            Some(a) => Ok(a),
            None => answer.await,
        };
        match answered {
            Ok(Ok(bytes)) => Ok(bytes),
            Ok(Err(e)) => Err(LedgerError::Unavailable(e)),
            Err(_) => Err(LedgerError::Unavailable(
                "a subject's secret was not written".into(),
            )),
        }
    }

    /// The newest event of `kind`, with its index.
    pub async fn latest_of_kind(&self, kind: &str) -> Result<Option<(u64, Event)>, LedgerError> {
        storage::latest_of_kind(&self.inner.db, kind)
            .await?
            .map(|(i, d)| Ok((i, Event::decode(&d)?)))
            .transpose()
    }

    /// Every event about the person with this tag, with its index, oldest first.
    pub async fn subject_events(&self, tag: SubjectTag) -> Result<Vec<(u64, Event)>, LedgerError> {
        storage::entries_with_tag(&self.inner.db, &tag.to_string())
            .await?
            .into_iter()
            .map(|(i, d)| Ok((i, Event::decode(&d)?)))
            .collect()
    }
}

/// Checks that a tile lies within a tree of `size`: full tiles and partial ones of any width
/// that ends inside it (a partial tile of an earlier, smaller tree).
fn check_tile(level: u8, n: u64, width: u32, size: u64) -> Result<(), LedgerError> {
    if width == 0 || width > 256 || level > 7 {
        return Err(LedgerError::NotFound("no such tile".into()));
    }
    let level_size = size >> (8 * u32::from(level));
    let end = n
        .checked_mul(256)
        .and_then(|s| s.checked_add(u64::from(width)));
    match end {
        // A partial tile stays served after the tree has grown past it: C2SP's tlog-tiles
        // requires partial tiles for every size a checkpoint was produced for, and a client
        // holding an older checkpoint asks for its width. Its content never changes.
        Some(end) if end <= level_size => Ok(()),
        _ => Err(LedgerError::NotFound(format!(
            "tile {level}/{n} of width {width} is not in the tree of {size}"
        ))),
    }
}

/// Stored hashes by index: from the hash file when it has them (filling it from the
/// database first if this node has not written them), else from the database.
async fn read_stored(inner: &Inner, indexes: &[u64]) -> Result<HashMap<u64, Hash>, LedgerError> {
    if let Some(hf) = &inner.hashes {
        if let Some(found) = hf.read(indexes) {
            return Ok(indexes.iter().copied().zip(found).collect());
        }
        if let Some(max) = indexes.iter().max() {
            hf.fill(&inner.db, max + 1).await?;
            if let Some(found) = hf.read(indexes) {
                return Ok(indexes.iter().copied().zip(found).collect());
            }
        }
    }
    storage::read_hashes(&inner.db, indexes).await
}

async fn consistency_proof(inner: &Inner, old: u64, new: u64) -> Result<TreeProof, LedgerError> {
    if old == 0 || old == new {
        return Ok(Vec::new());
    }
    if old > new {
        return Err(LedgerError::NotFound(format!(
            "a tree of {old} cannot be proven inside a tree of {new}"
        )));
    }
    let rec = Recording::default();
    tlog_tiles::prove_tree(new, old, &rec).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
    let pre = Prefetched(read_stored(inner, &rec.take()).await?);
    tlog_tiles::prove_tree(new, old, &pre).map_err(|e| LedgerError::Corrupt(e.to_string()))
}

async fn load_published(
    db: &Db,
    key: &LogKey,
) -> Result<Option<Arc<SignedCheckpoint>>, LedgerError> {
    match storage::latest_published(db).await? {
        Some(note) => {
            let v = crate::note::verify_checkpoint(&note, key.verifier_key())?;
            Ok(Some(Arc::new(SignedCheckpoint {
                size: v.size,
                root: v.root,
                note,
            })))
        }
        None => Ok(None),
    }
}

async fn load_frontier(db: &Db) -> Result<Frontier, LedgerError> {
    let (size, root) = storage::tree_state(db).await?;
    let idx: Vec<u64> = Frontier::indexes(size)
        .into_iter()
        .map(|(_, i)| i)
        .collect();
    let stored = storage::read_hashes(db, &idx).await?;
    let hashes: Vec<Hash> = idx.iter().map(|i| stored[i]).collect();
    let frontier = Frontier::from_hashes(size, &hashes)?;
    if frontier.root() != root {
        return Err(LedgerError::Corrupt(format!(
            "the stored root of the tree of {size} does not match its hashes"
        )));
    }
    Ok(frontier)
}

type LockConn = civitas_store::sqlx::pool::PoolConnection<civitas_store::sqlx::Any>;

/// Takes the sequencer lock on a dedicated PostgreSQL connection, if it is free.
async fn try_lock(db: &Db) -> Result<Option<LockConn>, LedgerError> {
    let mut conn = db
        .pool()
        .acquire()
        .await
        .map_err(|e| LedgerError::Store(e.into()))?;
    let locked: bool = civitas_store::sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(SEQUENCER_LOCK)
        .fetch_one(&mut *conn)
        .await
        .map_err(|e| LedgerError::Store(e.into()))?;
    Ok(locked.then_some(conn))
}

/// Starts a term as sequencer: reloads the tree (another node may have grown it), starts
/// the publisher, signs a checkpoint if the last one is not published, and runs.
async fn lead(
    inner: &Arc<Inner>,
    lock: Option<LockConn>,
) -> Result<tokio::task::JoinHandle<()>, LedgerError> {
    let frontier = load_frontier(&inner.db).await?;
    let (signed, signed_rx) = watch::channel(None);
    let publisher = Publisher {
        inner: Arc::downgrade(inner),
        policy: inner.config.witnesses.clone(),
        known: vec![
            0;
            inner
                .config
                .witnesses
                .as_ref()
                .map_or(0, |p| p.witnesses.len())
        ],
    };
    tokio::spawn(publisher.run(signed_rx));
    let mut sequencer = Sequencer {
        inner: Arc::downgrade(inner),
        frontier,
        signed,
        lock,
        nudge: inner.queue_nudge.clone(),
    };
    let published = inner.latest.read().await.as_ref().map(|c| c.size);
    if published.is_none_or(|p| p < sequencer.frontier.size()) {
        sequencer.sign(inner).await?;
    }
    let rx = inner.receiver.lock().await.take().ok_or_else(|| {
        LedgerError::Unavailable("another sequencer term is still running".into())
    })?;
    inner
        .durable
        .store(sequencer.frontier.size(), Ordering::SeqCst);
    inner.leader.store(true, Ordering::SeqCst);
    tracing::info!(
        size = sequencer.frontier.size(),
        "this node sequences the ledger"
    );
    Ok(tokio::spawn(sequencer.run(rx)))
}

/// The election loop of a PostgreSQL node: follow the published checkpoints while another
/// node leads; take the lock and lead when it is free.
async fn elect(weak: std::sync::Weak<Inner>, mut term: Option<tokio::task::JoinHandle<()>>) {
    loop {
        if let Some(t) = term.take() {
            let _ = t.await;
        }
        let Some(inner) = weak.upgrade() else { return };
        match try_lock(&inner.db).await {
            Ok(Some(lock)) => match lead(&inner, Some(lock)).await {
                Ok(t) => term = Some(t),
                Err(e) => tracing::error!(error = %e, "cannot start sequencing"),
            },
            Ok(None) => {
                if let Ok(Some(cp)) = load_published(&inner.db, &inner.key).await {
                    let newer = inner
                        .latest
                        .read()
                        .await
                        .as_ref()
                        .is_none_or(|c| c.size < cp.size);
                    if newer {
                        let size = cp.size;
                        *inner.latest.write().await = Some(cp);
                        inner.publish.send_replace(size);
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot reach the database to elect a sequencer"),
        }
        drop(inner);
        if term.is_none() {
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

struct Sequencer {
    inner: std::sync::Weak<Inner>,
    frontier: Frontier,
    signed: watch::Sender<Option<Arc<SignedCheckpoint>>>,
    /// The connection holding the PostgreSQL sequencer lock; `None` on SQLite.
    lock: Option<LockConn>,
    /// Rung when entries were queued on this node.
    nudge: Arc<tokio::sync::Notify>,
}

impl Sequencer {
    /// Signs the current tree and hands the checkpoint to the publisher.
    async fn sign(&mut self, inner: &Inner) -> Result<u64, LedgerError> {
        let (size, root) = (self.frontier.size(), self.frontier.root());
        let note = inner.key.sign_checkpoint(size, root)?;
        // Without witnesses a signed checkpoint is published as it is; storing it as
        // published here keeps the sequencer the only writer (on SQLite a second writer
        // waits in the busy handler's coarse sleeps, which shows up as tail latency).
        let published = inner.config.witnesses.is_none();
        storage::save_checkpoint(&inner.db, size, &note, published).await?;
        self.signed
            .send_replace(Some(Arc::new(SignedCheckpoint { size, root, note })));
        Ok(size)
    }

    /// Whether the lock connection still holds the lock (always true on SQLite).
    async fn still_leads(&mut self) -> bool {
        let Some(conn) = self.lock.as_mut() else {
            return true;
        };
        civitas_store::sqlx::query_scalar::<_, bool>(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid() AND granted)",
        )
        .fetch_one(&mut **conn)
        .await
        .unwrap_or(false)
    }

    async fn run(mut self, mut rx: mpsc::Receiver<Append>) {
        let mut signed_size = self.signed.borrow().as_ref().map_or(0, |c| c.size);
        let mut last_signed = Instant::now();
        let mut last_lock_check = Instant::now();
        let mut last_poll = Instant::now();
        // Queued entries: other nodes' are polled every 20 ms on PostgreSQL; this node's are
        // read when it rings the nudge. The slow poll on SQLite picks up what a crash left
        // between a commit and its nudge.
        let poll = Some(Duration::from_millis(if self.lock.is_some() {
            20
        } else {
            1000
        }));
        let nudge = self.nudge.clone();
        while let Some(interval) = self.inner.upgrade().map(|i| i.config.checkpoint_interval) {
            let due = (self.frontier.size() > signed_size).then(|| last_signed + interval);
            let wake = match (due, poll) {
                (Some(d), Some(p)) => Some(d.min(Instant::now() + p)),
                (d, p) => d.or_else(|| p.map(|p| Instant::now() + p)),
            };
            let mut nudged = false;
            let first = tokio::select! {
                msg = rx.recv() => match msg {
                    Some(m) => Some(m),
                    None => break,
                },
                () = nudge.notified() => {
                    nudged = true;
                    None
                }
                () = sleep_until(wake) => None,
            };
            let Some(inner) = self.inner.upgrade() else {
                break;
            };
            if inner.db.pool().is_closed() {
                // The database was closed under a live handle (at the end of a command):
                // nothing more can be written, and a checkpoint due would be retried at once,
                // over and over.
                refuse(
                    first.into_iter().collect(),
                    &LedgerError::Unavailable("the database is closed".into()),
                );
                break;
            }
            if first.is_some() {
                // Let the tasks that are ready run first: on a busy node some of them append
                // too, and join this batch (one commit for all). On an idle one this returns
                // at once. Measured: yielding only when an append came alone took consent's
                // releases from 0.41-0.43 of their baseline to 0.36, and gained Notify nothing.
                tokio::task::yield_now().await;
            }
            let mut batch: Vec<Append> = first.into_iter().collect();
            while batch.len() < inner.config.max_batch {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            // Other nodes' queued entries are read on the poll tick, not on every batch.
            let poll_due = nudged || poll.is_some_and(|p| last_poll.elapsed() >= p);
            let queued = if poll_due {
                last_poll = Instant::now();
                let limit = inner.config.max_batch.saturating_sub(batch.len()).max(1);
                let queued = storage::queued(&inner.db, limit).await.unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read queued ledger entries");
                    Vec::new()
                });
                if queued.len() >= limit {
                    // More may wait: read again on the next turn rather than the next poll.
                    nudge.notify_one();
                }
                queued
            } else {
                Vec::new()
            };
            if (!batch.is_empty() || !queued.is_empty())
                && let Err(e) = self.write(&inner, batch, queued).await
            {
                tracing::error!(error = %e, "ledger batch not written; stepping down");
                break;
            }
            if poll.is_some() && last_lock_check.elapsed() > Duration::from_secs(1) {
                last_lock_check = Instant::now();
                if !self.still_leads().await {
                    tracing::warn!("lost the sequencer lock");
                    break;
                }
            }
            let now = Instant::now();
            if self.frontier.size() > signed_size && now >= last_signed + interval {
                match self.sign(&inner).await {
                    Ok(size) => {
                        signed_size = size;
                        last_signed = now;
                    }
                    Err(e) => tracing::error!(error = %e, "cannot sign a checkpoint"),
                }
            }
        }
        // End of this term: release the lock by closing its session (a pooled connection
        // would keep holding it), refuse what is waiting, hand the queue back.
        if let Some(conn) = self.lock.take() {
            let _ = civitas_store::sqlx::Connection::close(conn.detach()).await;
        }
        if let Some(inner) = self.inner.upgrade() {
            inner.leader.store(false, Ordering::SeqCst);
            while let Ok(a) = rx.try_recv() {
                let _ = a.reply.send(Err(LedgerError::Unavailable(
                    "this node stopped sequencing; retry the append".into(),
                )));
            }
            *inner.receiver.lock().await = Some(rx);
        }
    }

    /// Writes a batch and answers its appends. A failed write steps this node down, except
    /// when the batch carries companion writes and the stored tree shows nothing of it was
    /// committed: then the appends are written again apart (the plain ones together, each
    /// with writes alone), so that a companion that fails fails only its own append.
    async fn write(
        &mut self,
        inner: &Inner,
        batch: Vec<Append>,
        queued: Vec<NewEntry>,
    ) -> Result<(), LedgerError> {
        let start = self.frontier.size();
        let e = match self.commit(inner, &batch, &queued).await {
            Ok(start) => {
                answer(batch, start);
                return Ok(());
            }
            Err(e) => e,
        };
        // Nothing of the batch was committed only if the stored tree is where it was (a commit
        // whose outcome is unknown, or another sequencer, moves it): then, and only then, the
        // appends may be written again.
        self.frontier = load_frontier(&inner.db).await?;
        let untouched = self.frontier.size() == start;
        let isolate = untouched
            && !matches!(e, LedgerError::Corrupt(_))
            && batch.iter().any(|a| a.writes.is_some());
        if !isolate {
            refuse(batch, &e);
            return Err(e);
        }
        if batch.len() + queued.len() == 1 {
            // A lone append whose writes failed: it fails, the log goes on.
            refuse(batch, &e);
            return Ok(());
        }
        tracing::warn!(error = %e, "a ledger batch with companion writes failed; writing its appends apart");
        let (own, plain): (Vec<Append>, Vec<Append>) =
            batch.into_iter().partition(|a| a.writes.is_some());
        if !plain.is_empty() || !queued.is_empty() {
            match self.commit(inner, &plain, &queued).await {
                Ok(start) => answer(plain, start),
                Err(e) => {
                    refuse(plain, &e);
                    refuse(own, &e);
                    self.frontier = load_frontier(&inner.db).await?;
                    return Err(e);
                }
            }
        }
        for a in own {
            let before = self.frontier.size();
            if let Err(e) = self.commit(inner, std::slice::from_ref(&a), &[]).await {
                refuse(vec![a], &e);
                self.frontier = load_frontier(&inner.db).await?;
                if self.frontier.size() != before || matches!(e, LedgerError::Corrupt(_)) {
                    return Err(e);
                }
            } else {
                answer(vec![a], before);
            }
        }
        Ok(())
    }

    /// Writes the appends' and the queued entries in one transaction and advances the tree;
    /// returns the index of the first.
    async fn commit(
        &mut self,
        inner: &Inner,
        batch: &[Append],
        queued: &[NewEntry],
    ) -> Result<u64, LedgerError> {
        let start = self.frontier.size();
        let mut next = self.frontier.clone();
        let mut hashes = Vec::with_capacity((batch.len() + queued.len()) * 2);
        let mut entries: Vec<NewEntry> = batch
            .iter()
            .flat_map(|a| a.entries.iter().cloned())
            .chain(queued.iter().cloned())
            .collect();
        for (i, e) in entries.iter_mut().enumerate() {
            e.idx = start + i as u64;
            next.append(record_hash(&e.data), &mut hashes);
        }
        let for_file: Vec<Hash> = match &inner.hashes {
            Some(_) => hashes.iter().map(|(_, h)| *h).collect(),
            None => Vec::new(),
        };
        let writes: Vec<Arc<Script>> = batch.iter().filter_map(|a| a.writes.clone()).collect();
        // New subjects' secrets made for events (`Ledger::subject_secret_for_event`): every
        // one waiting now, so those of this batch's events too.
        let secrets = inner.known.pending();
        storage::write_batch(
            &inner.db,
            start,
            entries,
            hashes,
            next.size(),
            next.root(),
            writes,
            &secrets,
        )
        .await?;
        inner.known.stored(&secrets);
        if let Some(hf) = &inner.hashes
            && let Err(e) = hf.append(stored_hash_index(0, start), &for_file).await
        {
            tracing::warn!(error = %e, "the hash file fell behind; proofs read the database until it is refilled");
        }
        self.frontier = next;
        inner.durable.store(self.frontier.size(), Ordering::SeqCst);
        Ok(start)
    }
}

/// Tells each append the index of its first entry: `start` for the first, and on in order.
fn answer(batch: Vec<Append>, start: u64) {
    let mut next = start;
    for a in batch {
        let n = a.entries.len() as u64;
        let _ = a.reply.send(Ok(next));
        next += n;
    }
}

/// An event as the sequencer takes it.
fn new_entry(event: &Event) -> Result<NewEntry, LedgerError> {
    Ok(NewEntry {
        idx: 0,
        data: event.encode()?,
        kind: event.kind.clone(),
        subject_tag: event
            .subject
            .filter(|_| !event.unlisted)
            .map(|t| t.to_string()),
        time_ms: event.time_ms,
        queue_ref: None,
    })
}

/// Tells each append that it was not written, and why.
fn refuse(batch: Vec<Append>, e: &LedgerError) {
    for a in batch {
        // Refused writes stay recognisable (a lost compare-and-set is the caller's conflict);
        // anything else means the log could not take the append.
        let told = match e {
            LedgerError::WritesRefused(m) => LedgerError::WritesRefused(m.clone()),
            e => LedgerError::Unavailable(e.to_string()),
        };
        let _ = a.reply.send(Err(told));
    }
}

async fn sleep_until(due: Option<Instant>) {
    match due {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Publishes signed checkpoints once they meet the witness policy.
struct Publisher {
    inner: std::sync::Weak<Inner>,
    policy: Option<WitnessPolicy>,
    /// The size each witness last cosigned, as far as this log knows.
    known: Vec<u64>,
}

impl Publisher {
    async fn run(mut self, mut signed: watch::Receiver<Option<Arc<SignedCheckpoint>>>) {
        let mut pending: Option<Arc<SignedCheckpoint>> = None;
        loop {
            let retry = pending
                .is_some()
                .then(|| Instant::now() + Duration::from_secs(1));
            tokio::select! {
                changed = signed.changed() => {
                    if changed.is_err() {
                        return;
                    }
                    pending = signed.borrow_and_update().clone();
                }
                () = sleep_until(retry) => {}
            }
            let Some(cp) = pending.clone() else { continue };
            let Some(inner) = self.inner.upgrade() else {
                return;
            };
            let note = match &self.policy {
                None => Some(cp.note.clone()),
                Some(_) => self.cosign(&inner, &cp).await,
            };
            let Some(note) = note else { continue };
            if self.policy.is_some()
                && let Err(e) = storage::save_checkpoint(&inner.db, cp.size, &note, true).await
            {
                tracing::error!(error = %e, "cannot store a published checkpoint");
                continue;
            }
            *inner.latest.write().await = Some(Arc::new(SignedCheckpoint {
                size: cp.size,
                root: cp.root,
                note,
            }));
            inner.publish.send_replace(cp.size);
            pending = None;
        }
    }

    /// Asks every witness to cosign; returns the note with the cosignatures when enough did.
    async fn cosign(&mut self, inner: &Inner, cp: &SignedCheckpoint) -> Option<String> {
        let policy = self.policy.as_ref()?;
        let body_end = cp.note.find("\n\n")?;
        let body = &cp.note[..=body_end];
        let mut lines = Vec::new();
        for (i, w) in policy.witnesses.iter().enumerate() {
            // One retry: the first answer may tell us the size the witness really holds.
            for _ in 0..2 {
                let old = self.known[i];
                if old > cp.size {
                    break;
                }
                let proof = match consistency_proof(inner, old, cp.size).await {
                    Ok(p) => p,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot prove consistency for a witness");
                        break;
                    }
                };
                let request = add_checkpoint_body(old, &proof, &cp.note);
                match policy.transport.add_checkpoint(&w.url, request).await {
                    Ok((200, text)) => {
                        match w.key.find_cosignature(body, &text) {
                            Some(_) => {
                                lines.extend(
                                    text.lines()
                                        .filter(|l| l.starts_with(&format!("— {} ", w.key.name())))
                                        .map(str::to_string)
                                        .take(1),
                                );
                                self.known[i] = cp.size;
                            }
                            None => {
                                tracing::warn!(witness = %w.url, "the witness answered without a valid cosignature")
                            }
                        }
                        break;
                    }
                    Ok((409, text)) => match text.trim().parse::<u64>() {
                        Ok(size) => self.known[i] = size,
                        Err(_) => {
                            tracing::warn!(witness = %w.url, "the witness reports a conflict: a different root for the same size");
                            break;
                        }
                    },
                    Ok((status, text)) => {
                        tracing::warn!(witness = %w.url, status, answer = %text.trim(), "the witness refused the checkpoint");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(witness = %w.url, error = %e, "the witness is unreachable");
                        break;
                    }
                }
            }
        }
        if lines.len() < policy.quorum {
            tracing::warn!(
                size = cp.size,
                cosigned = lines.len(),
                needed = policy.quorum,
                "checkpoint not yet published: too few cosignatures"
            );
            return None;
        }
        let mut note = cp.note.clone();
        for l in lines {
            note.push_str(&l);
            note.push('\n');
        }
        Some(note)
    }
}

/// Fills an empty log with `n` synthetic `bench.entry` events in large batches, bypassing
/// the sequencer: only for building benchmark logs quickly. The log must not be open.
pub async fn bulk_load_for_benchmark(db: &Db, n: u64) -> Result<(), LedgerError> {
    let mut frontier = load_frontier(db).await?;
    if frontier.size() != 0 {
        return Err(LedgerError::InvalidEvent(
            "benchmark logs are built in an empty database".into(),
        ));
    }
    const CHUNK: u64 = 50_000;
    let mut done = 0;
    while done < n {
        let start = frontier.size();
        let count = CHUNK.min(n - done);
        let mut next = frontier.clone();
        let mut hashes = Vec::with_capacity(count as usize * 2);
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count {
            let idx = start + i;
            let data = format!(r#"{{"v":1,"kind":"bench.entry","actor":"system","object":"bench/{idx}","time_ms":0}}"#).into_bytes();
            next.append(record_hash(&data), &mut hashes);
            entries.push(NewEntry {
                idx,
                data,
                kind: "bench.entry".into(),
                subject_tag: None,
                time_ms: 0,
                queue_ref: None,
            });
        }
        storage::write_batch(
            db,
            start,
            entries,
            hashes,
            next.size(),
            next.root(),
            Vec::new(),
            &[],
        )
        .await?;
        frontier = next;
        done += count;
    }
    Ok(())
}
