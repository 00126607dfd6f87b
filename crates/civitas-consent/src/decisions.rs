//! What a consent decision needs of each record, kept in memory on SQLite, so that a
//! decision is a lookup instead of two queries.
//!
//! It is correct only where one process makes every change: on SQLite a process holds its
//! data folder alone (`civitas::open_database` locks it), and every change of a record goes
//! through [`crate::Consents`] in that process, which puts the new version here before the
//! change returns. A read that raced a change can only put back an older version, and an
//! older version never replaces a newer one. Several nodes on PostgreSQL change records
//! behind each other's back, so there every decision reads the database.
//!
//! The memory is process-wide (records and agreements are keyed by random UUIDs, so several
//! databases in one process, as in the tests, cannot mix) and compact: about 60 bytes a
//! record, 60 MB for a million.

use std::collections::HashMap;
use std::sync::{OnceLock, RwLock};

use crate::ConsentState;

/// A record as a decision needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Known {
    /// The agreement, by its index in [`Memory::agreements`].
    pub(crate) agreement: u32,
    pub(crate) state: ConsentState,
    pub(crate) version: i64,
    pub(crate) expires_ms: i64,
    /// A digest of the owner's subject reference (see [`owner_digest`]): enough to tell
    /// that a release is for the person who consented, without keeping who that is.
    pub(crate) owner: u64,
}

/// The digest [`Known::owner`] keeps of a subject reference.
pub(crate) fn owner_digest(subject_ref: &str) -> u64 {
    use sha2::Digest;
    let d = sha2::Sha256::digest(subject_ref.as_bytes());
    u64::from_le_bytes(d[..8].try_into().unwrap_or_default())
}

const SHARDS: usize = 16;

/// Records by id, in shards so that callers on different records seldom wait for one lock.
pub(crate) struct Memory {
    shards: Vec<RwLock<HashMap<u128, Known>>>,
    /// Agreement ids, interned: a record keeps the index.
    agreements: RwLock<(Vec<String>, HashMap<String, u32>)>,
}

pub(crate) fn memory() -> &'static Memory {
    static MEMORY: OnceLock<Memory> = OnceLock::new();
    MEMORY.get_or_init(|| Memory {
        shards: (0..SHARDS).map(|_| RwLock::new(HashMap::new())).collect(),
        agreements: RwLock::new((Vec::new(), HashMap::new())),
    })
}

/// A record id as a key: only in the form the block writes ids (hyphenated, lower case),
/// so that another spelling of the same UUID, which the database would not find either, is
/// not found here.
pub(crate) fn key(id: &str) -> Option<u128> {
    let canonical = id.len() == 36
        && id
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b) || b == b'-');
    canonical
        .then(|| uuid::Uuid::try_parse(id).ok().map(|u| u.as_u128()))
        .flatten()
}

impl Memory {
    fn shard(&self, key: u128) -> &RwLock<HashMap<u128, Known>> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// What is known of record `key`, and its agreement's id.
    pub(crate) fn get(&self, key: u128) -> Option<(Known, String)> {
        let known = *self.shard(key).read().ok()?.get(&key)?;
        let agreements = self.agreements.read().ok()?;
        let id = agreements.0.get(known.agreement as usize)?.clone();
        Some((known, id))
    }

    /// Keeps `state` (at `version`) of record `key`, unless a newer version is kept already.
    pub(crate) fn put(
        &self,
        key: u128,
        agreement_id: &str,
        state: ConsentState,
        version: i64,
        expires_ms: i64,
        owner: u64,
    ) {
        let Some(agreement) = self.intern(agreement_id) else {
            return;
        };
        let Ok(mut shard) = self.shard(key).write() else {
            return;
        };
        let known = Known {
            agreement,
            state,
            version,
            expires_ms,
            owner,
        };
        match shard.get(&key) {
            Some(k) if k.version >= version => {}
            _ => {
                shard.insert(key, known);
            }
        }
    }

    /// Bytes its tables hold (their capacity: keys, values and the table's control bytes).
    pub(crate) fn bytes(&self) -> usize {
        let entry = std::mem::size_of::<u128>() + std::mem::size_of::<Known>() + 1;
        self.shards
            .iter()
            .filter_map(|s| s.read().ok().map(|m| m.capacity() * entry))
            .sum()
    }

    /// Forgets record `key`: its next decision reads the database.
    pub(crate) fn forget(&self, key: u128) {
        if let Ok(mut shard) = self.shard(key).write() {
            shard.remove(&key);
        }
    }

    fn intern(&self, agreement_id: &str) -> Option<u32> {
        if let Some(i) = self.agreements.read().ok()?.1.get(agreement_id) {
            return Some(*i);
        }
        let mut a = self.agreements.write().ok()?;
        if let Some(i) = a.1.get(agreement_id) {
            return Some(*i);
        }
        let i = u32::try_from(a.0.len()).ok()?;
        a.0.push(agreement_id.to_string());
        a.1.insert(agreement_id.to_string(), i);
        Some(i)
    }
}

/// Agreements as decisions need them, by id (kept on SQLite only, like the records).
pub(crate) fn agreements() -> &'static RwLock<HashMap<String, std::sync::Arc<crate::Agreement>>> {
    static AGREEMENTS: OnceLock<RwLock<HashMap<String, std::sync::Arc<crate::Agreement>>>> =
        OnceLock::new();
    AGREEMENTS.get_or_init(|| RwLock::new(HashMap::new()))
}
