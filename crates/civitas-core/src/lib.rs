//! Civitas's shared vocabulary: identifiers that parse rather than validate, and the
//! configuration model. Nothing here does I/O.

pub mod config;
pub mod national_id;
pub mod xroad;

pub use national_id::NationalId;

/// Whether `s` has the shape of a C2SP signed-note verifier key, `<name>+<8 hex digits>+<base64>`.
/// The base64 part may itself contain `+`, so the text is split at the first two only.
pub fn is_verifier_key(s: &str) -> bool {
    let mut parts = s.trim().splitn(3, '+');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(id), Some(key)) => {
            !name.is_empty()
                && id.len() == 8
                && id.bytes().all(|b| b.is_ascii_hexdigit())
                && !key.is_empty()
        }
        _ => false,
    }
}
