//! Witnessing (C2SP tlog-witness, tlog-cosignature/v1 with Ed25519): a Civitas instance
//! cosigns another log's checkpoints after checking that each one extends the last it saw,
//! and a log collects cosignatures from the witnesses it is configured with.

use base64::Engine;
use base64::prelude::BASE64_STANDARD;
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use rand_core::OsRng;
use signed_note::key_id;
use tlog_tiles::Checkpoint;

use crate::LedgerError;
use crate::note::verify_checkpoint;
use crate::tree::{Hash, verify_consistency};

const COSIGNATURE_ALG: u8 = 0x04;

/// A witness's (cosigner's) Ed25519 key and name.
#[derive(Clone)]
pub struct CosignerKey {
    name: String,
    key: SigningKey,
}

impl std::fmt::Debug for CosignerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CosignerKey({})", self.verifier_key())
    }
}

impl CosignerKey {
    /// A new random key for a cosigner called `name`.
    pub fn generate(name: &str) -> CosignerKey {
        CosignerKey {
            name: name.to_string(),
            key: SigningKey::generate(&mut OsRng),
        }
    }

    /// The secret form stored by the witness: `<name> <base64 seed>`.
    pub fn to_secret(&self) -> String {
        format!(
            "{} {}",
            self.name,
            BASE64_STANDARD.encode(self.key.to_bytes())
        )
    }

    /// Loads the secret form.
    pub fn from_secret(secret: &str) -> Result<CosignerKey, LedgerError> {
        let bad = || LedgerError::Corrupt("a witness key is malformed".into());
        let (name, seed) = secret.split_once(' ').ok_or_else(bad)?;
        let seed: [u8; 32] = BASE64_STANDARD
            .decode(seed)
            .map_err(|_| bad())?
            .try_into()
            .map_err(|_| bad())?;
        Ok(CosignerKey {
            name: name.to_string(),
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public verifier key (`<name>+<id>+base64(0x04 || key)`) logs and clients trust.
    pub fn verifier_key(&self) -> String {
        let mut material = vec![COSIGNATURE_ALG];
        material.extend_from_slice(self.key.verifying_key().as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            key_id(&self.name, &material),
            BASE64_STANDARD.encode(&material)
        )
    }

    /// A cosignature line (`— <name> base64(id || timestamp || signature)`) on a checkpoint body.
    pub fn cosign(&self, body: &str, time: u64) -> String {
        let mut material = vec![COSIGNATURE_ALG];
        material.extend_from_slice(self.key.verifying_key().as_bytes());
        let id = key_id(&self.name, &material);
        let sig = self.key.sign(signed_message(body, time).as_bytes());
        let mut blob = id.to_be_bytes().to_vec();
        blob.extend_from_slice(&time.to_be_bytes());
        blob.extend_from_slice(&sig.to_bytes());
        format!("— {} {}\n", self.name, BASE64_STANDARD.encode(blob))
    }
}

fn signed_message(body: &str, time: u64) -> String {
    format!("cosignature/v1\ntime {time}\n{body}")
}

/// A cosigner the log or a client trusts, parsed from its verifier key.
#[derive(Debug, Clone)]
pub struct TrustedCosigner {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl TrustedCosigner {
    /// Parses `<name>+<id>+base64(0x04 || key)`.
    pub fn parse(vkey: &str) -> Result<TrustedCosigner, LedgerError> {
        let bad = |why: &str| LedgerError::ProofFailed(format!("witness key `{vkey}`: {why}"));
        let mut parts = vkey.splitn(3, '+');
        let (Some(name), Some(id), Some(material)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(bad("not name+id+key"));
        };
        let material = BASE64_STANDARD
            .decode(material)
            .map_err(|_| bad("not base64"))?;
        if material.first() != Some(&COSIGNATURE_ALG) || material.len() != 33 {
            return Err(bad("not an Ed25519 cosignature/v1 key"));
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad("bad key id"))?;
        if id != key_id(name, &material) {
            return Err(bad("the key id does not match"));
        }
        let key = VerifyingKey::from_bytes(material[1..].try_into().map_err(|_| bad("bad key"))?)
            .map_err(|_| bad("bad key"))?;
        Ok(TrustedCosigner {
            name: name.to_string(),
            id,
            key,
        })
    }

    /// The cosigner's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Finds this cosigner's valid cosignature among note signature lines over `body`,
    /// returning its timestamp.
    pub fn find_cosignature(&self, body: &str, lines: &str) -> Option<u64> {
        lines.lines().find_map(|line| {
            let rest = line.strip_prefix("— ")?;
            let (name, b64) = rest.split_once(' ')?;
            if name != self.name {
                return None;
            }
            let blob = BASE64_STANDARD.decode(b64).ok()?;
            if blob.len() != 4 + 8 + 64 || u32::from_be_bytes(blob[..4].try_into().ok()?) != self.id
            {
                return None;
            }
            let time = u64::from_be_bytes(blob[4..12].try_into().ok()?);
            let sig = ed25519_dalek::Signature::from_bytes(blob[12..].try_into().ok()?);
            self.key
                .verify(signed_message(body, time).as_bytes(), &sig)
                .ok()?;
            Some(time)
        })
    }
}

/// Why a witness refuses a checkpoint, with the HTTP status tlog-witness assigns to each.
#[derive(Debug, thiserror::Error)]
pub enum WitnessRefusal {
    /// The request is malformed (400).
    #[error("malformed request: {0}")]
    Malformed(String),
    /// The witness does not know the log (404).
    #[error("unknown log origin `{0}`")]
    UnknownLog(String),
    /// No signature verifies against the log's key (403).
    #[error("the checkpoint is not signed by the log's key")]
    BadSignature,
    /// The old size is not the last size the witness cosigned (409, body: that size).
    #[error("the witness last cosigned size {0}")]
    Conflict(u64),
    /// Same size, different root: a fork (409).
    #[error("a different root for size {0}: the log has forked")]
    Fork(u64),
    /// The consistency proof does not verify (422).
    #[error("the consistency proof does not verify: the log has forked or rolled back")]
    Inconsistent,
    /// Storage failed (500).
    #[error(transparent)]
    Store(#[from] LedgerError),
}

impl WitnessRefusal {
    /// The HTTP status tlog-witness requires for this refusal.
    pub fn status(&self) -> u16 {
        match self {
            WitnessRefusal::Malformed(_) => 400,
            WitnessRefusal::UnknownLog(_) => 404,
            WitnessRefusal::BadSignature => 403,
            WitnessRefusal::Conflict(_) | WitnessRefusal::Fork(_) => 409,
            WitnessRefusal::Inconsistent => 422,
            WitnessRefusal::Store(_) => 500,
        }
    }
}

/// A witness: its key, the logs it watches, and their last cosigned state in the database.
#[derive(Clone)]
pub struct Witness {
    db: Db,
    key: CosignerKey,
    logs: Vec<(String, String)>,
}

impl Witness {
    /// A witness named `name` (key created on first use and kept in the database) for logs
    /// given by their verifier keys.
    pub async fn open(db: Db, name: &str, log_keys: &[String]) -> Result<Witness, LedgerError> {
        let secret = crate::storage::signing_key(&db, &format!("witness:{name}"), || {
            CosignerKey::generate(name).to_secret()
        })
        .await?;
        let key = CosignerKey::from_secret(&secret)?;
        let logs = log_keys
            .iter()
            .map(|k| {
                (
                    k.split('+').next().unwrap_or_default().to_string(),
                    k.clone(),
                )
            })
            .collect();
        Ok(Witness { db, key, logs })
    }

    /// The witness's verifier key.
    pub fn verifier_key(&self) -> String {
        self.key.verifier_key()
    }

    /// Handles a tlog-witness `add-checkpoint` body; returns the cosignature lines.
    pub async fn add_checkpoint(&self, body: &str) -> Result<String, WitnessRefusal> {
        let malformed = |why: &str| WitnessRefusal::Malformed(why.to_string());
        let (head, note) = body
            .split_once("\n\n")
            .ok_or_else(|| malformed("no blank line before the checkpoint"))?;
        let mut lines = head.lines();
        let old_text = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| malformed("no old size line"))?;
        if old_text.len() > 1 && old_text.starts_with('0') {
            return Err(malformed("the old size has a leading zero"));
        }
        let old: u64 = old_text
            .parse()
            .map_err(|_| malformed("the old size is not a number"))?;
        let mut proof = Vec::new();
        for l in lines {
            let raw = BASE64_STANDARD
                .decode(l)
                .map_err(|_| malformed("a proof line is not base64"))?;
            proof.push(Hash(
                raw.try_into()
                    .map_err(|_| malformed("a proof line is not a hash"))?,
            ));
        }
        if proof.len() > 63 {
            return Err(malformed("more than 63 proof lines"));
        }
        let body_end = note
            .find("\n\n")
            .ok_or_else(|| malformed("the checkpoint has no signatures"))?;
        let cp = Checkpoint::from_bytes(&note.as_bytes()[..=body_end])
            .map_err(|_| malformed("malformed checkpoint"))?;
        let origin = cp.origin().to_string();
        let (_, log_key) = self
            .logs
            .iter()
            .find(|(o, _)| *o == origin)
            .ok_or_else(|| WitnessRefusal::UnknownLog(origin.clone()))?;
        let verified =
            verify_checkpoint(note, log_key).map_err(|_| WitnessRefusal::BadSignature)?;
        if old > verified.size {
            return Err(malformed("the old size is larger than the checkpoint"));
        }
        if old == 0 && !proof.is_empty() {
            return Err(malformed("the proof must be empty when the old size is 0"));
        }

        let mut tx = self
            .db
            .pool()
            .begin()
            .await
            .map_err(|e| LedgerError::Store(e.into()))?;
        let row = sqlx::query("SELECT size, root FROM ledger_witnessed WHERE origin = $1")
            .bind(&origin)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| LedgerError::Store(e.into()))?;
        let (known_size, known_root) = match row {
            Some(r) => {
                let s: i64 = r
                    .try_get("size")
                    .map_err(|e| LedgerError::Store(e.into()))?;
                let h: Vec<u8> = r
                    .try_get("root")
                    .map_err(|e| LedgerError::Store(e.into()))?;
                (
                    s as u64,
                    Some(Hash(h.try_into().map_err(|_| {
                        LedgerError::Corrupt("bad witnessed root".into())
                    })?)),
                )
            }
            None => (0, None),
        };
        if old != known_size {
            return Err(WitnessRefusal::Conflict(known_size));
        }
        if let Some(root) = known_root {
            if old == verified.size && root != verified.root {
                return Err(WitnessRefusal::Fork(old));
            }
            verify_consistency(&proof, verified.size, verified.root, old, root)
                .map_err(|_| WitnessRefusal::Inconsistent)?;
        }
        // Compare-and-set on the size: two racing requests cannot both move the state.
        let changed = if known_root.is_none() {
            sqlx::query("INSERT INTO ledger_witnessed (origin, size, root, updated_ms) VALUES ($1, $2, $3, $4) ON CONFLICT (origin) DO NOTHING")
                .bind(&origin)
                .bind(verified.size as i64)
                .bind(verified.root.0.as_slice())
                .bind(crate::event::now_ms())
                .execute(&mut *tx)
                .await
        } else {
            sqlx::query("UPDATE ledger_witnessed SET size = $1, root = $2, updated_ms = $3 WHERE origin = $4 AND size = $5")
                .bind(verified.size as i64)
                .bind(verified.root.0.as_slice())
                .bind(crate::event::now_ms())
                .bind(&origin)
                .bind(old as i64)
                .execute(&mut *tx)
                .await
        }
        .map_err(|e| LedgerError::Store(e.into()))?
        .rows_affected();
        if changed != 1 {
            return Err(WitnessRefusal::Conflict(known_size));
        }
        tx.commit()
            .await
            .map_err(|e| LedgerError::Store(e.into()))?;
        let now = (crate::event::now_ms() / 1000) as u64;
        Ok(self.key.cosign(&note[..=body_end], now))
    }
}

/// What a [`WitnessTransport`] returns: the HTTP status and body, or why it could not ask.
pub type TransportFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(u16, String), String>> + Send + 'a>>;

/// Sends add-checkpoint requests to a witness; implemented outside this crate, which knows
/// nothing about HTTP. Returns the HTTP status and body.
pub trait WitnessTransport: Send + Sync {
    /// POSTs `body` to `<url>/add-checkpoint`.
    fn add_checkpoint<'a>(&'a self, url: &'a str, body: String) -> TransportFuture<'a>;
}

/// One witness a log asks for cosignatures.
#[derive(Debug, Clone)]
pub struct WitnessEndpoint {
    /// The witness's submission prefix, such as `http://127.0.0.1:8081/ledger/witness`.
    pub url: String,
    /// Its verifier key.
    pub key: TrustedCosigner,
}

/// Which witnesses a log asks, and how many must cosign before a checkpoint is published.
#[derive(Clone)]
pub struct WitnessPolicy {
    /// The witnesses.
    pub witnesses: Vec<WitnessEndpoint>,
    /// How many valid cosignatures a checkpoint needs.
    pub quorum: usize,
    /// How requests reach them.
    pub transport: std::sync::Arc<dyn WitnessTransport>,
}

/// Verifies a checkpoint's log signature and that at least `quorum` of `witnesses` cosigned it.
pub fn verify_cosigned(
    note: &str,
    log_key: &str,
    witnesses: &[TrustedCosigner],
    quorum: usize,
) -> Result<crate::note::VerifiedCheckpoint, LedgerError> {
    let cp = verify_checkpoint(note, log_key)?;
    let body_end = note
        .find("\n\n")
        .ok_or_else(|| LedgerError::ProofFailed("the checkpoint has no signatures".into()))?;
    let (body, sigs) = (&note[..=body_end], &note[body_end + 2..]);
    let n = witnesses
        .iter()
        .filter(|w| w.find_cosignature(body, sigs).is_some())
        .count();
    if n < quorum {
        return Err(LedgerError::ProofFailed(format!(
            "{n} of the trusted witnesses cosigned; {quorum} are required"
        )));
    }
    Ok(cp)
}

/// The add-checkpoint request body for `note`, from `old` with a consistency proof.
pub fn add_checkpoint_body(old: u64, proof: &[Hash], note: &str) -> String {
    let mut body = format!("old {old}\n");
    for h in proof {
        body.push_str(&BASE64_STANDARD.encode(h.0));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(note);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosignatures_verify_with_the_published_key_only() {
        let w = CosignerKey::generate("witness.example/w1");
        let body = "log.example\n5\nq6b8X1XhXzHTNxTHOZ5oFt8eTCMgBmTsTA1oHcYpj54=\n";
        let line = w.cosign(body, 1_700_000_000);
        let trusted = TrustedCosigner::parse(&w.verifier_key()).unwrap();
        assert_eq!(trusted.find_cosignature(body, &line), Some(1_700_000_000));
        assert_eq!(
            trusted.find_cosignature(&body.replace('5', "6"), &line),
            None
        );
        let other =
            TrustedCosigner::parse(&CosignerKey::generate("witness.example/w1").verifier_key())
                .unwrap();
        assert_eq!(other.find_cosignature(body, &line), None);
        let again = CosignerKey::from_secret(&w.to_secret()).unwrap();
        assert_eq!(again.verifier_key(), w.verifier_key());
    }
}
