//! Checkpoints as C2SP signed notes: the log's Ed25519 key, signing, and verification.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use rand_core::OsRng;
use signed_note::{Note, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::LedgerError;
use crate::tree::Hash;

/// The log's signing key and its public verifier key.
#[derive(Clone)]
pub struct LogKey {
    origin: String,
    signer: StandardSigner,
    verifier_key: String,
}

impl std::fmt::Debug for LogKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LogKey({})", self.verifier_key)
    }
}

/// Generates a new signer key (`PRIVATE+KEY+<origin>+<id>+<key>`) for a log origin.
pub fn generate_signer_key(origin: &str) -> String {
    signed_note::generate_key(&mut OsRng, origin).0
}

impl LogKey {
    /// Loads a signer key in the note format.
    pub fn from_signer_key(skey: &str) -> Result<LogKey, LedgerError> {
        let bad =
            |why: &str| LedgerError::Corrupt(format!("the log's signing key is malformed: {why}"));
        let signer = StandardSigner::new(skey).map_err(|e| bad(&e.to_string()))?;
        let mut parts = skey.splitn(5, '+');
        let (origin, key) = match (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) {
            (Some("PRIVATE"), Some("KEY"), Some(origin), Some(_id), Some(key)) => (origin, key),
            _ => return Err(bad("wrong layout")),
        };
        let raw = BASE64_STANDARD.decode(key).map_err(|_| bad("not base64"))?;
        let secret: [u8; 32] = raw
            .get(1..)
            .and_then(|s| s.try_into().ok())
            .ok_or_else(|| bad("not an Ed25519 key"))?;
        let signing = ed25519_dalek::SigningKey::from_bytes(&secret);
        let verifier_key = signed_note::new_ed25519_verifier_key(origin, &signing.verifying_key());
        Ok(LogKey {
            origin: origin.to_string(),
            signer,
            verifier_key,
        })
    }

    /// The log's origin line, also the key's name.
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The public verifier key (`<origin>+<id>+<key>`), published at `/ledger/key`.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Signs the checkpoint of a tree and returns the signed note.
    pub fn sign_checkpoint(&self, size: u64, root: Hash) -> Result<String, LedgerError> {
        let cp = Checkpoint::new(&self.origin, size, root, "").map_err(|_| {
            LedgerError::Corrupt("the origin is not a valid checkpoint origin".into())
        })?;
        let mut note =
            Note::new(&cp.to_bytes(), &[]).map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        note.add_sigs(&[&self.signer])
            .map_err(|e| LedgerError::Corrupt(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| LedgerError::Corrupt(e.to_string()))
    }
}

pub use civitas_core::is_verifier_key;

/// A checkpoint whose log signature has been verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedCheckpoint {
    /// The log's origin.
    pub origin: String,
    /// Tree size.
    pub size: u64,
    /// Root hash.
    pub root: Hash,
    /// The whole signed note, as received.
    pub note: String,
}

/// Verifies a signed checkpoint note against the log's verifier key and parses it.
pub fn verify_checkpoint(
    note: &str,
    verifier_key: &str,
) -> Result<VerifiedCheckpoint, LedgerError> {
    let fail = |why: String| LedgerError::ProofFailed(format!("checkpoint: {why}"));
    let verifier =
        StandardVerifier::new(verifier_key).map_err(|e| fail(format!("bad verifier key: {e}")))?;
    let parsed =
        Note::from_bytes(note.as_bytes()).map_err(|e| fail(format!("not a signed note: {e}")))?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| fail(format!("the log's signature does not verify: {e}")))?;
    let cp = Checkpoint::from_bytes(parsed.text())
        .map_err(|_| fail("malformed checkpoint body".into()))?;
    let key_name = verifier_key.split('+').next().unwrap_or_default();
    if cp.origin() != key_name {
        return Err(fail(format!(
            "origin `{}` does not match the key's name `{key_name}`",
            cp.origin()
        )));
    }
    Ok(VerifiedCheckpoint {
        origin: cp.origin().to_string(),
        size: cp.size(),
        root: *cp.hash(),
        note: note.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verifier_keys_are_recognised_even_with_plus_signs_in_their_base64() {
        assert!(is_verifier_key("example.gov/ledger+0a1b2c3d+AQ+b/c=="));
        assert!(!is_verifier_key("example.gov/ledger+0a1b2c+AQ=="));
        assert!(!is_verifier_key("just text"));
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_a_changed_one_does_not() {
        let key = LogKey::from_signer_key(&generate_signer_key("example.gov/ledger")).unwrap();
        let root = crate::tree::record_hash(b"x");
        let note = key.sign_checkpoint(7, root).unwrap();
        assert!(note.starts_with("example.gov/ledger\n7\n"));
        let v = verify_checkpoint(&note, key.verifier_key()).unwrap();
        assert_eq!((v.size, v.root), (7, root));

        let forged = note.replacen("\n7\n", "\n8\n", 1);
        assert!(verify_checkpoint(&forged, key.verifier_key()).is_err());
        let other = LogKey::from_signer_key(&generate_signer_key("example.gov/ledger")).unwrap();
        assert!(verify_checkpoint(&note, other.verifier_key()).is_err());
    }
}
