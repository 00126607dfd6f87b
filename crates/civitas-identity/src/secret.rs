//! Random tokens and their stored hashes.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand_core::{OsRng, RngCore};
use sha2::{Digest, Sha256};

/// A random token of `bytes` bytes, URL-safe base64 without padding.
pub(crate) fn token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    b64(&buf)
}

/// Unpadded base64url, as JOSE, PKCE and WebAuthn use it.
pub(crate) fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Random bytes.
pub(crate) fn bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    OsRng.fill_bytes(&mut buf);
    buf
}

/// A random number below `bound`, without modulo bias worth speaking of (u64 source).
pub(crate) fn below(bound: u64) -> u64 {
    OsRng.next_u64() % bound
}

/// The stored form of a high-entropy token: SHA-256, hex. Tokens are random, so a fast
/// hash is enough; passwords, which are not, use argon2id instead.
pub(crate) fn hash(token: &str) -> String {
    civitas_ledger::event::hex(&Sha256::digest(token.as_bytes()))
}

/// Milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> i64 {
    civitas_ledger::event::now_ms()
}
