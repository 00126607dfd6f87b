//! Passwords: the policy that refuses weak and breached ones, and argon2id hashing.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand_core::OsRng;

use crate::IdentityError;

/// Shortest password accepted (NIST SP 800-63B asks for at least 8; we ask 10).
pub const MIN_LENGTH: usize = 10;
/// Longest password accepted, so hashing cost stays bounded.
pub const MAX_LENGTH: usize = 128;

/// The argon2id parameters: OWASP's recommended 19 MiB, 2 passes, 1 lane.
pub fn params() -> Params {
    // These constants are valid; `Params::new` only fails on out-of-range values.
    Params::new(19 * 1024, 2, 1, None).unwrap_or_default()
}

fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params())
}

/// Why a password was refused, in words a person can act on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Weakness {
    /// Fewer than [`MIN_LENGTH`] characters.
    TooShort,
    /// More than [`MAX_LENGTH`] characters.
    TooLong,
    /// It is on the bundled list of common and breached passwords (or a simple variant).
    Breached,
    /// It contains the person's own name or identifier.
    Personal,
    /// It is easy to guess (zxcvbn score below 3); the hint says how to improve it.
    Guessable(String),
}

impl std::fmt::Display for Weakness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Weakness::TooShort => write!(f, "use at least {MIN_LENGTH} characters"),
            Weakness::TooLong => write!(f, "use at most {MAX_LENGTH} characters"),
            Weakness::Breached => f.write_str(
                "this password is on a list of common or leaked passwords; choose another",
            ),
            Weakness::Personal => {
                f.write_str("do not use your name or identification number in your password")
            }
            Weakness::Guessable(hint) => write!(f, "this password is easy to guess. {hint}"),
        }
    }
}

impl Weakness {
    /// A stable code for the reason, so pages can show it in their own language.
    pub fn code(&self) -> &'static str {
        match self {
            Weakness::TooShort => "too_short",
            Weakness::TooLong => "too_long",
            Weakness::Breached => "breached",
            Weakness::Personal => "personal",
            Weakness::Guessable(_) => "guessable",
        }
    }
}

/// Checks a new password against the policy. `personal` holds the person's own words (name,
/// identifier, e-mail) which the password must not be built from.
pub fn check(password: &str, personal: &[&str]) -> Result<(), Weakness> {
    let chars = password.chars().count();
    if chars < MIN_LENGTH {
        return Err(Weakness::TooShort);
    }
    if chars > MAX_LENGTH {
        return Err(Weakness::TooLong);
    }
    let lower = password.to_lowercase();
    if personal
        .iter()
        .map(|w| w.trim().to_lowercase())
        .any(|w| w.chars().count() >= 3 && lower.contains(&w))
    {
        return Err(Weakness::Personal);
    }
    let entropy = zxcvbn::zxcvbn(password, personal);
    // zxcvbn bundles a list of 30,000 of the most common leaked passwords; a password that
    // is, apart from l33t or capitals, one entry of it is refused outright.
    let seq = entropy.sequence();
    if seq.len() == 1
        && matches!(
            &seq[0].pattern,
            zxcvbn::matching::patterns::MatchPattern::Dictionary(d)
                // zxcvbn does not export its dictionary type, only its name through Debug.
                if format!("{:?}", d.dictionary_name) == "Passwords"
        )
    {
        return Err(Weakness::Breached);
    }
    if (entropy.score() as u8) < 3 {
        let hint = entropy
            .feedback()
            .map(|f| {
                let mut parts: Vec<String> =
                    f.warning().map(|w| w.to_string()).into_iter().collect();
                parts.extend(f.suggestions().iter().map(|s| s.to_string()));
                parts.join(" ")
            })
            .unwrap_or_default();
        let hint = if hint.is_empty() {
            "Add more words or characters.".to_string()
        } else {
            hint
        };
        return Err(Weakness::Guessable(hint));
    }
    Ok(())
}

/// Hashes a password with argon2id and a fresh salt, in PHC string form. CPU-heavy: call
/// it from a blocking thread.
pub fn hash(password: &str) -> Result<String, IdentityError> {
    let salt = SaltString::generate(&mut OsRng);
    hasher()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| IdentityError::Hashing(e.to_string()))
}

/// Whether `password` matches the stored PHC hash. CPU-heavy: call it from a blocking thread.
pub fn verify(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => hasher()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A hash of a random password, verified against when an identifier is unknown, so that a
/// wrong identifier costs as much time as a wrong password and timing does not tell which
/// accounts exist.
pub(crate) fn decoy_hash() -> &'static str {
    static DECOY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| hash(&crate::secret::token(24)).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weak_and_breached_passwords_are_refused() {
        assert_eq!(check("short", &[]), Err(Weakness::TooShort));
        assert_eq!(
            check("password123", &[]).map_err(|w| w.code()),
            Err("breached")
        );
        assert_eq!(
            check("Qwertyuiop", &[]).map_err(|w| w.code()),
            Err("breached")
        );
        assert_eq!(
            check("aaaaaaaaaaaa", &[]).map_err(|w| w.code()),
            Err("guessable")
        );
        assert_eq!(
            check("A123456789-chen-mei", &["A123456789"]),
            Err(Weakness::Personal)
        );
        assert_eq!(check(&"x".repeat(200), &[]), Err(Weakness::TooLong));
        assert_eq!(check("correct horse battery staple", &[]), Ok(()));
        assert_eq!(check("Tainan-lantern-47-oyster", &[]), Ok(()));
    }

    #[test]
    fn hashes_verify_only_the_right_password() {
        let h = hash("Tainan-lantern-47-oyster").unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(verify("Tainan-lantern-47-oyster", &h));
        assert!(!verify("Tainan-lantern-47-oyster!", &h));
        assert!(!verify("anything", "not a hash"));
    }
}
