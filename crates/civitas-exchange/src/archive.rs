//! The optional body archive: with `exchange.archive_days` set, a gateway keeps each call's
//! request and answer bodies (up to [`MAX_BODY`] each; beyond that, the first part and a
//! note) encrypted with AES-256-GCM under a key kept in its data folder, apart from the
//! database, for that many days. The ledger keeps only hashes and metadata; the archive is
//! for disputes, and reading it is logged.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::rand::{SecureRandom, SystemRandom};
use serde::{Deserialize, Serialize};

use crate::ExchangeError;

/// The file the key lives in, in the data folder.
pub const KEY_FILE: &str = "exchange-archive.key";

/// The most of each body kept.
pub const MAX_BODY: usize = 1 << 20;

/// One call's bodies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The call's `X-Road-Request-Id`.
    pub request_id: String,
    /// The method and the path with its query.
    pub method: String,
    /// The path and query.
    pub target: String,
    /// The request body (base64), or its first [`MAX_BODY`] bytes.
    pub request_body: String,
    /// Whether the request body was longer than what is kept.
    pub request_cut: bool,
    /// The answer's status.
    pub status: u16,
    /// The answer's body (base64), or its first [`MAX_BODY`] bytes.
    pub response_body: String,
    /// Whether the answer's body was longer than what is kept.
    pub response_cut: bool,
}

/// The archive's key.
pub struct ArchiveKey(LessSafeKey);

/// Bytes kept of a body as it streams: its first [`MAX_BODY`] bytes, and whether there
/// were more.
#[derive(Debug, Default)]
pub struct Captured {
    /// The bytes kept.
    pub bytes: Vec<u8>,
    /// Whether the body was longer.
    pub cut: bool,
}

impl Captured {
    /// Adds a piece of the body.
    pub fn add(&mut self, piece: &[u8]) {
        let room = MAX_BODY.saturating_sub(self.bytes.len());
        if piece.len() > room {
            self.cut = true;
        }
        self.bytes
            .extend_from_slice(&piece[..piece.len().min(room)]);
    }

    /// The kept bytes as base64.
    pub fn base64(&self) -> String {
        STANDARD.encode(&self.bytes)
    }
}

fn bad(e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::Invalid(format!("the exchange archive: {e}"))
}

impl ArchiveKey {
    /// The key in `data_dir`, made on first use (readable by its owner only).
    pub fn load_or_create(data_dir: &Path) -> Result<ArchiveKey, ExchangeError> {
        let path = data_dir.join(KEY_FILE);
        let bytes = match std::fs::read_to_string(&path) {
            Ok(text) => STANDARD.decode(text.trim()).map_err(bad)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; 32];
                SystemRandom::new()
                    .fill(&mut key)
                    .map_err(|_| bad("no randomness"))?;
                crate::keys::write_private(&path, STANDARD.encode(key).as_bytes()).map_err(bad)?;
                key.to_vec()
            }
            Err(e) => return Err(bad(e)),
        };
        let key =
            UnboundKey::new(&AES_256_GCM, &bytes).map_err(|_| bad("the key is not 32 bytes"))?;
        Ok(ArchiveKey(LessSafeKey::new(key)))
    }

    /// Encrypts a record, bound to its request id: the nonce, then the ciphertext and tag.
    pub fn seal(&self, record: &Record) -> Result<Vec<u8>, ExchangeError> {
        let mut nonce = [0u8; 12];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| bad("no randomness"))?;
        let mut data = serde_json::to_vec(record).map_err(bad)?;
        self.0
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(record.request_id.as_bytes()),
                &mut data,
            )
            .map_err(|_| bad("cannot encrypt"))?;
        let mut out = nonce.to_vec();
        out.extend(data);
        Ok(out)
    }

    /// Decrypts a record stored under `request_id`.
    pub fn open(&self, request_id: &str, sealed: &[u8]) -> Result<Record, ExchangeError> {
        if sealed.len() < 12 + 16 {
            return Err(bad("a record is too short"));
        }
        let (nonce, rest) = sealed.split_at(12);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| bad("a bad nonce"))?;
        let mut data = rest.to_vec();
        let plain = self
            .0
            .open_in_place(nonce, Aad::from(request_id.as_bytes()), &mut data)
            .map_err(|_| {
                bad("a record does not decrypt under this key (changed, or another key)")
            })?;
        serde_json::from_slice(plain).map_err(bad)
    }
}

/// Stores a sealed record until `expires_ms`.
pub async fn store(
    db: &Db,
    request_id: &str,
    sealed: &[u8],
    now_ms: i64,
    expires_ms: i64,
) -> Result<(), ExchangeError> {
    sqlx::query(
        "INSERT INTO exchange_archive (request_id, sealed, created_ms, expires_ms) VALUES ($1, $2, $3, $4)",
    )
    .bind(request_id)
    .bind(STANDARD.encode(sealed))
    .bind(now_ms)
    .bind(expires_ms)
    .execute(db.pool())
    .await?;
    Ok(())
}

/// A stored record, still sealed.
pub async fn sealed(db: &Db, request_id: &str) -> Result<Option<Vec<u8>>, ExchangeError> {
    let row = sqlx::query("SELECT sealed FROM exchange_archive WHERE request_id = $1")
        .bind(request_id)
        .fetch_optional(db.pool())
        .await?;
    match row {
        Some(r) => {
            let text: String = r.try_get("sealed")?;
            Ok(Some(STANDARD.decode(text).map_err(bad)?))
        }
        None => Ok(None),
    }
}

/// Deletes the records whose time is over; returns how many.
pub async fn purge(db: &Db, now_ms: i64) -> Result<u64, ExchangeError> {
    Ok(
        sqlx::query("DELETE FROM exchange_archive WHERE expires_ms < $1")
            .bind(now_ms)
            .execute(db.pool())
            .await?
            .rows_affected(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_decrypt_only_unchanged_under_their_key_and_id() {
        let dir = civitas_store::scratch::folder("archive");
        let key = ArchiveKey::load_or_create(&dir).unwrap();
        let record = Record {
            request_id: "r-1".into(),
            method: "GET".into(),
            target: "/r1/TW/GOV/HRO/registry/population/persons/A1".into(),
            request_body: String::new(),
            request_cut: false,
            status: 200,
            response_body: STANDARD.encode(b"{\"name\":\"x\"}"),
            response_cut: false,
        };
        let sealed = key.seal(&record).unwrap();
        assert!(!String::from_utf8_lossy(&sealed).contains("persons"));
        // The same key, read back from its file.
        let again = ArchiveKey::load_or_create(&dir).unwrap();
        assert_eq!(again.open("r-1", &sealed).unwrap(), record);
        assert!(
            again.open("r-2", &sealed).is_err(),
            "bound to its request id"
        );
        let mut changed = sealed.clone();
        *changed.last_mut().unwrap() ^= 1;
        assert!(again.open("r-1", &changed).is_err());
        let other = civitas_store::scratch::folder("archive-other");
        assert!(
            ArchiveKey::load_or_create(&other)
                .unwrap()
                .open("r-1", &sealed)
                .is_err()
        );
    }
}
