//! Time-based one-time passwords (RFC 6238: HMAC-SHA1, 6 digits, 30-second steps), the
//! second factor that any authenticator app provides.

use hmac::{Hmac, Mac};

/// Seconds per step.
pub const STEP_SECS: u64 = 30;
/// Digits per code.
pub const DIGITS: u32 = 6;

/// The code for one time step (RFC 4226 dynamic truncation).
pub fn code_at_step(secret: &[u8], step: u64) -> u32 {
    // HMAC accepts keys of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(secret) else {
        return u32::MAX;
    };
    mac.update(&step.to_be_bytes());
    let digest = mac.finalize().into_bytes();
    let offset = (digest[19] & 0x0f) as usize;
    let binary = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    binary % 10u32.pow(DIGITS)
}

/// The step a Unix time (seconds) falls in.
pub fn step_of(unix_secs: u64) -> u64 {
    unix_secs / STEP_SECS
}

/// Finds the step, within one step of `now_step` either way (clock drift), whose code is
/// `code`, skipping steps at or before `last_used` so a code is never accepted twice.
pub fn matching_step(secret: &[u8], code: &str, now_step: u64, last_used: u64) -> Option<u64> {
    let code = code.trim().replace(' ', "");
    if code.len() != DIGITS as usize || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let wanted: u32 = code.parse().ok()?;
    [now_step.saturating_sub(1), now_step, now_step + 1]
        .into_iter()
        .filter(|s| *s > last_used)
        .find(|s| code_at_step(secret, *s) == wanted)
}

/// RFC 4648 base32 without padding: how authenticator apps take the secret.
pub fn base32(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::with_capacity(bytes.len().div_ceil(5) * 8);
    let mut buffer = 0u32;
    let mut bits = 0;
    for &b in bytes {
        buffer = (buffer << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            out.push(ALPHABET[((buffer >> (bits - 5)) & 31) as usize] as char);
            bits -= 5;
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((buffer << (5 - bits)) & 31) as usize] as char);
    }
    out
}

/// The `otpauth://` URI an authenticator app reads (usually from a QR code).
pub fn otpauth_uri(issuer: &str, account: &str, secret: &[u8]) -> String {
    let enc = |s: &str| -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    };
    format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm=SHA1&digits={DIGITS}&period={STEP_SECS}",
        enc(issuer),
        enc(account),
        base32(secret),
        enc(issuer)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6238_test_vectors() {
        // RFC 6238 appendix B, SHA-1, last 6 digits.
        let secret = b"12345678901234567890";
        assert_eq!(code_at_step(secret, step_of(59)), 287082);
        assert_eq!(code_at_step(secret, step_of(1_111_111_109)), 81804);
        assert_eq!(code_at_step(secret, step_of(1_234_567_890)), 5924);
        assert_eq!(code_at_step(secret, step_of(2_000_000_000)), 279037);
    }

    #[test]
    fn codes_match_within_one_step_and_never_twice() {
        let secret = b"12345678901234567890";
        let now = step_of(1_234_567_890);
        let code = format!("{:06}", code_at_step(secret, now));
        assert_eq!(matching_step(secret, &code, now, 0), Some(now));
        assert_eq!(matching_step(secret, &code, now + 1, 0), Some(now));
        assert_eq!(matching_step(secret, &code, now + 2, 0), None);
        assert_eq!(matching_step(secret, &code, now, now), None, "replay");
        assert_eq!(matching_step(secret, "12345", now, 0), None);
        assert_eq!(matching_step(secret, "abcdef", now, 0), None);
    }

    #[test]
    fn base32_matches_rfc_4648() {
        assert_eq!(base32(b"foobar"), "MZXW6YTBOI");
        assert_eq!(base32(b"f"), "MY");
        assert!(
            otpauth_uri("Civitas", "A123456789", b"12345")
                .starts_with("otpauth://totp/Civitas:A123456789?secret=GEZDGNBV&issuer=Civitas")
        );
    }
}
