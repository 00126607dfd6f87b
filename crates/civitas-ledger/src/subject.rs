//! Subject tags: how an event names the person it is about without saying who they are.
//!
//! Each person has a random 32-byte secret, kept in the ledger's private table and never
//! published. Their tag is HMAC-SHA256(secret, "civitas.subject-tag.v1"). Without the secret,
//! a tag cannot be linked to a person, not even by guessing national identification numbers,
//! which a keyed hash of the number itself would allow to anyone holding the key.

use std::collections::HashMap;
use std::fmt;

use hmac::{Hmac, Mac};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::Sha256;

use crate::LedgerError;

const TAG_CONTEXT: &[u8] = b"civitas.subject-tag.v1";

/// A person's private secret, from which their tag is computed.
#[derive(Clone, PartialEq, Eq)]
pub struct SubjectSecret(pub(crate) [u8; 32]);

impl SubjectSecret {
    /// A new random secret.
    pub fn generate() -> SubjectSecret {
        let mut s = [0u8; 32];
        OsRng.fill_bytes(&mut s);
        SubjectSecret(s)
    }

    /// A secret from its stored bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<SubjectSecret, LedgerError> {
        let s: [u8; 32] = bytes
            .try_into()
            .map_err(|_| LedgerError::Corrupt("a subject secret is not 32 bytes".into()))?;
        Ok(SubjectSecret(s))
    }

    /// The stored bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The tag events about this person carry.
    pub fn tag(&self) -> SubjectTag {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(TAG_CONTEXT);
        SubjectTag(mac.finalize().into_bytes().into())
    }
}

impl fmt::Debug for SubjectSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectSecret(..)")
    }
}

/// The public, unlinkable tag of a person in the log.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubjectTag(pub [u8; 32]);

impl SubjectTag {
    /// Parses the 64-character hex form.
    pub fn parse(s: &str) -> Result<SubjectTag, LedgerError> {
        let bad =
            || LedgerError::InvalidEvent(format!("`{s}` is not a subject tag (64 hex digits)"));
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, o) in out.iter_mut().enumerate() {
            *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(SubjectTag(out))
    }
}

impl fmt::Display for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&crate::event::hex(&self.0))
    }
}

impl fmt::Debug for SubjectTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SubjectTag({self})")
    }
}

impl Serialize for SubjectTag {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::event::hex(&self.0))
    }
}

impl<'de> Deserialize<'de> for SubjectTag {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        SubjectTag::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The most subjects' secrets kept in memory (about 100 bytes each).
const KNOWN_MOST: usize = 65_536;

/// What this process knows of the subjects' secrets of one database (one per database and
/// process, through `Db::shared`, however many ledger handles share it).
#[derive(Default)]
pub(crate) struct Known(std::sync::Mutex<KnownSecrets>);

#[derive(Default)]
struct KnownSecrets {
    /// Secrets known to be stored: they never change once made, and nearly every event
    /// about a person needs one. Bounded; emptied when full. (Should secrets ever be
    /// erased to forget a person, the erasure must empty this on every node.)
    stored: HashMap<String, [u8; 32]>,
    /// New subjects' secrets made here and not yet known to be stored (SQLite only: one
    /// process owns the database, so nobody else makes one). Each batch of the sequencer
    /// writes the ones waiting when it starts.
    pending: HashMap<String, [u8; 32]>,
    /// How many times `stored` was emptied.
    clears: u64,
}

impl Known {
    fn lock(&self) -> std::sync::MutexGuard<'_, KnownSecrets> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The secret of `subject_ref` if known, and whether it is still pending.
    pub(crate) fn get(&self, subject_ref: &str) -> Option<([u8; 32], bool)> {
        let k = self.lock();
        k.stored
            .get(subject_ref)
            .map(|s| (*s, false))
            .or_else(|| k.pending.get(subject_ref).map(|s| (*s, true)))
    }

    /// A mark to pass to [`Known::make`], taken before reading the database.
    pub(crate) fn mark(&self) -> u64 {
        self.lock().clears
    }

    /// The secret of a subject the database did not hold when read after `mark`: the one
    /// known by now, or a new pending one. `None` when what is known was emptied since, so
    /// a secret stored meanwhile may be forgotten: read the database again.
    pub(crate) fn make(&self, subject_ref: &str, mark: u64) -> Option<[u8; 32]> {
        let mut k = self.lock();
        if let Some(s) = k
            .stored
            .get(subject_ref)
            .or_else(|| k.pending.get(subject_ref))
        {
            return Some(*s);
        }
        if k.clears != mark {
            return None;
        }
        let s = SubjectSecret::generate().0;
        k.pending.insert(subject_ref.to_string(), s);
        Some(s)
    }

    /// Every pending secret (none allocates nothing).
    pub(crate) fn pending(&self) -> Vec<(String, [u8; 32])> {
        let k = self.lock();
        k.pending.iter().map(|(r, s)| (r.clone(), *s)).collect()
    }

    /// Records secrets as stored (read, or written), no longer pending.
    pub(crate) fn stored(&self, secrets: &[(String, [u8; 32])]) {
        let mut k = self.lock();
        for (r, s) in secrets {
            if let Some(p) = k.pending.remove(r)
                && p != *s
            {
                tracing::error!("a pending subject secret differs from the stored one");
            }
            if k.stored.len() >= KNOWN_MOST {
                k.stored.clear();
                k.clears += 1;
            }
            k.stored.insert(r.clone(), *s);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_are_stable_per_secret_and_differ_between_people() {
        let a = SubjectSecret::generate();
        let b = SubjectSecret::generate();
        assert_eq!(a.tag(), a.tag());
        assert_ne!(a.tag(), b.tag());
        assert_eq!(SubjectTag::parse(&a.tag().to_string()).unwrap(), a.tag());
    }

    #[test]
    fn known_answer() {
        // HMAC-SHA256 with a zero key over the context string, computed with Python's hmac.
        assert_eq!(
            SubjectSecret([0; 32]).tag().to_string(),
            "6e1b5f00234b64ce907f08b6342936fac366f8ccf5f01861e2ecec41c6e80aa3"
        );
    }
}
