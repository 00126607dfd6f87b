//! Passwords: the policy that refuses weak and breached ones, and argon2id hashing.

use argon2::password_hash::{PasswordHash, SaltString};
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

thread_local! {
    /// argon2id's working memory (19 MiB per computation), kept by the thread for its next
    /// computation instead of being mapped, zeroed and unmapped every time: that churn cost
    /// about a sixth of each sign-in. Argon2's first pass overwrites every block before
    /// reading it, so a reused buffer needs no clearing. What is left in it is the last pass
    /// of a past computation, from which nothing but that password's stored hash can be
    /// derived. The service hashes only on its hashing lanes, so it keeps one buffer per lane.
    static WORK_MEMORY: std::cell::RefCell<Vec<argon2::Block>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs argon2 into `out`, on this thread's working memory.
fn compute(argon: &Argon2<'_>, password: &[u8], salt: &[u8], out: &mut [u8]) -> bool {
    let blocks = argon.params().block_count();
    WORK_MEMORY.with_borrow_mut(|memory| {
        if memory.len() < blocks {
            *memory = vec![argon2::Block::default(); blocks];
        }
        argon
            .hash_password_into_with_memory(password, salt, out, &mut memory[..blocks])
            .is_ok()
    })
}

/// Hashes a password with argon2id and a fresh salt, in PHC string form. CPU-heavy: call
/// it from a blocking thread (or use [`hash_async`]).
pub fn hash(password: &str) -> Result<String, IdentityError> {
    let fail = |e: &dyn std::fmt::Display| IdentityError::Hashing(e.to_string());
    let salt = SaltString::generate(&mut OsRng);
    let mut salt_bytes = [0u8; 64];
    let salt_bytes = salt.decode_b64(&mut salt_bytes).map_err(|e| fail(&e))?;
    let argon = hasher();
    let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
    if !compute(&argon, password.as_bytes(), salt_bytes, &mut out) {
        return Err(IdentityError::Hashing("argon2id failed".into()));
    }
    let phc = PasswordHash {
        algorithm: Algorithm::Argon2id.ident(),
        version: Some(Version::V0x13.into()),
        params: argon2::password_hash::ParamsString::try_from(argon.params())
            .map_err(|e| fail(&e))?,
        salt: Some(salt.as_salt()),
        hash: Some(argon2::password_hash::Output::new(&out).map_err(|e| fail(&e))?),
    };
    Ok(phc.to_string())
}

/// Whether `password` matches the stored PHC hash, computed with the parameters stored in it.
/// CPU-heavy: call it from a blocking thread (or use [`verify_async`]).
pub fn verify(password: &str, stored: &str) -> bool {
    use subtle::ConstantTimeEq;
    let Ok(parsed) = PasswordHash::new(stored) else {
        return false;
    };
    let (Some(expected), Some(salt)) = (parsed.hash, parsed.salt) else {
        return false;
    };
    let (Ok(algorithm), Ok(params)) = (
        Algorithm::try_from(parsed.algorithm),
        Params::try_from(&parsed),
    ) else {
        return false;
    };
    let version = match parsed.version.map(Version::try_from) {
        None => Version::default(),
        Some(Ok(v)) => v,
        Some(Err(_)) => return false,
    };
    let mut salt_bytes = [0u8; 64];
    let Ok(salt_bytes) = salt.decode_b64(&mut salt_bytes) else {
        return false;
    };
    let mut out = vec![0u8; expected.len()];
    compute(
        &Argon2::new(algorithm, version, params),
        password.as_bytes(),
        salt_bytes,
        &mut out,
    ) && bool::from(out.as_slice().ct_eq(expected.as_bytes()))
}

type Job = Box<dyn FnOnce() + Send>;

/// The hashing lanes: one thread per core, taking argon2id jobs from one queue. Each job
/// takes 19 MiB and a core for about 18 ms, so running more at once would only thrash the
/// caches (fewer sign-ins per second, not more), and a burst of sign-in attempts could
/// exhaust memory. A lane that finishes a job takes the next one at once, without a round
/// trip through the async runtime.
static LANES: std::sync::LazyLock<Result<std::sync::mpsc::Sender<Job>, String>> =
    std::sync::LazyLock::new(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        let rx = std::sync::Arc::new(std::sync::Mutex::new(rx));
        let lanes = std::thread::available_parallelism().map_or(2, |n| n.get());
        for i in 0..lanes {
            let rx = rx.clone();
            std::thread::Builder::new()
                .name(format!("argon2-lane-{i}"))
                .spawn(move || {
                    loop {
                        let job = match rx.lock() {
                            Ok(queue) => queue.recv(),
                            Err(_) => return,
                        };
                        match job {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })
                .map_err(|e| format!("cannot start a hashing lane: {e}"))?;
        }
        Ok(tx)
    });

/// Runs an argon2id job on the next free hashing lane. A job whose caller has gone away
/// (the request was dropped) is skipped.
async fn in_lane<T: Send + 'static>(
    job: impl FnOnce() -> T + Send + 'static,
) -> Result<T, IdentityError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    let lanes = LANES
        .as_ref()
        .map_err(|e| IdentityError::Hashing(e.clone()))?;
    lanes
        .send(Box::new(move || {
            if !reply.is_closed() {
                let _ = reply.send(job());
            }
        }))
        .map_err(|_| IdentityError::Hashing("the hashing lanes have stopped".into()))?;
    answer
        .await
        .map_err(|_| IdentityError::Hashing("a hashing lane dropped its job".into()))
}

/// [`hash`], on a hashing lane.
pub async fn hash_async(password: &str) -> Result<String, IdentityError> {
    let p = password.to_string();
    in_lane(move || hash(&p)).await?
}

/// [`verify`], on a hashing lane.
pub async fn verify_async(password: &str, stored: &str) -> Result<bool, IdentityError> {
    let (p, s) = (password.to_string(), stored.to_string());
    in_lane(move || verify(&p, &s)).await
}

/// A hash of a random password, verified against when an identifier is unknown, so that a
/// wrong identifier costs as much time as a wrong password and timing does not tell which
/// accounts exist.
pub(crate) async fn decoy_hash() -> Result<&'static str, IdentityError> {
    static DECOY: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();
    DECOY
        .get_or_try_init(|| async { hash_async(&crate::secret::token(24)).await })
        .await
        .map(String::as_str)
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

    #[test]
    fn hashes_agree_with_the_argon2_crates_own_hasher_and_verifier() {
        use argon2::password_hash::{PasswordHasher, PasswordVerifier};
        // Ours verify with the crate's verifier, and the crate's hashes (also with other
        // parameters, such as an older cost) verify with ours, on reused memory.
        let ours = hash("Keelung-harbour-19-rain").unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            hasher()
                .verify_password(b"Keelung-harbour-19-rain", &parsed)
                .is_ok()
        );
        for params in [params(), Params::new(8 * 1024, 3, 2, Some(24)).unwrap()] {
            let theirs = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
                .hash_password(
                    b"Keelung-harbour-19-rain",
                    &SaltString::generate(&mut OsRng),
                )
                .unwrap()
                .to_string();
            for _ in 0..2 {
                assert!(verify("Keelung-harbour-19-rain", &theirs));
                assert!(!verify("Keelung-harbour-19-rain.", &theirs));
            }
        }
    }
}
