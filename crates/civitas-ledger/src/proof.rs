//! C2SP tlog-proof bundles: an entry's index, its inclusion proof and the signed checkpoint,
//! verifiable offline with nothing but the log's verifier key.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use tlog_tiles::RecordProof;

use crate::LedgerError;
use crate::note::{VerifiedCheckpoint, verify_checkpoint};
use crate::tree::{Hash, record_hash, verify_inclusion};

const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// A tlog-proof bundle.
#[derive(Debug, Clone, PartialEq)]
pub struct ProofBundle {
    /// The logged entry itself (the bundle's `extra` line); Civitas always includes it so
    /// that the bundle proves what was logged, not only that something was.
    pub extra: Option<Vec<u8>>,
    /// The entry's index.
    pub index: u64,
    /// The inclusion proof, from the leaf's sibling up.
    pub proof: RecordProof,
    /// The signed checkpoint the proof is against, verbatim.
    pub checkpoint: String,
}

impl ProofBundle {
    /// The bundle in its text form (`.tlog-proof`).
    pub fn to_text(&self) -> String {
        let mut out = format!("{HEADER}\n");
        if let Some(extra) = &self.extra {
            out.push_str(&format!("extra {}\n", BASE64_STANDARD.encode(extra)));
        }
        out.push_str(&format!("index {}\n", self.index));
        for h in &self.proof {
            out.push_str(&BASE64_STANDARD.encode(h.0));
            out.push('\n');
        }
        out.push('\n');
        out.push_str(&self.checkpoint);
        out
    }

    /// Parses the text form.
    pub fn parse(text: &str) -> Result<ProofBundle, LedgerError> {
        let bad = |why: &str| LedgerError::ProofFailed(format!("not a tlog-proof bundle: {why}"));
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line before the checkpoint"))?;
        let mut lines = head.lines();
        if lines.next() != Some(HEADER) {
            return Err(bad("the first line is not c2sp.org/tlog-proof@v1"));
        }
        let mut line = lines.next().ok_or_else(|| bad("no index line"))?;
        let mut extra = None;
        if let Some(e) = line.strip_prefix("extra ") {
            extra = Some(
                BASE64_STANDARD
                    .decode(e)
                    .map_err(|_| bad("extra is not base64"))?,
            );
            line = lines.next().ok_or_else(|| bad("no index line"))?;
        }
        let index_text = line
            .strip_prefix("index ")
            .ok_or_else(|| bad("no index line"))?;
        if index_text.len() > 1 && index_text.starts_with('0') {
            return Err(bad("the index has a leading zero"));
        }
        let index = index_text
            .parse()
            .map_err(|_| bad("the index is not a number"))?;
        let mut proof = Vec::new();
        for l in lines {
            let raw = BASE64_STANDARD
                .decode(l)
                .map_err(|_| bad("a proof line is not base64"))?;
            let h: [u8; 32] = raw
                .try_into()
                .map_err(|_| bad("a proof line is not a SHA-256 hash"))?;
            proof.push(Hash(h));
        }
        Ok(ProofBundle {
            extra,
            index,
            proof,
            checkpoint: checkpoint.to_string(),
        })
    }

    /// Verifies the bundle offline: the checkpoint's signature with the log's verifier key,
    /// then the inclusion of the entry (the `extra` data) under the checkpoint's root.
    pub fn verify(&self, verifier_key: &str) -> Result<VerifiedCheckpoint, LedgerError> {
        let cp = verify_checkpoint(&self.checkpoint, verifier_key)?;
        let entry = self.extra.as_ref().ok_or_else(|| {
            LedgerError::ProofFailed("the bundle does not carry the entry".into())
        })?;
        verify_inclusion(
            &self.proof,
            cp.size,
            cp.root,
            self.index,
            record_hash(entry),
        )?;
        Ok(cp)
    }
}
