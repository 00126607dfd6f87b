//! The signed configuration: the whole directory (members, subsystems, services with their
//! OpenAPI documents, access rights) and the gateways with their keys, as one document with
//! a version and an expiry, signed with the directory's Ed25519 key. Gateways poll it and
//! check it against the directory's public key (the anchor), as X-Road's security servers do
//! with the global configuration.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use civitas_core::xroad::MemberId;
use ed25519_dalek::{Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};

use crate::ExchangeError;
use crate::directory::{AccessRight, Member, Service, Subsystem};

/// The domain separation of configuration signatures.
const CONTEXT: &[u8] = b"civitas-exchange/configuration\n";

/// A gateway: the member whose subsystems it hosts, where other gateways reach it, and its
/// keys (its TLS certificate for mutual TLS, its key for signing messages).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gateway {
    /// The member it serves.
    pub member: MemberId,
    /// Its address for other gateways, `https://host:port`.
    pub address: String,
    /// Its TLS certificate (DER, base64).
    pub tls_certificate: String,
    /// Its Ed25519 message-signing key (base64).
    pub signing_key: String,
}

impl Gateway {
    /// Its TLS certificate's DER bytes.
    pub fn certificate_der(&self) -> Result<Vec<u8>, ExchangeError> {
        STANDARD
            .decode(&self.tls_certificate)
            .map_err(|_| ExchangeError::Invalid("a gateway's TLS certificate is not base64".into()))
    }

    /// Its message-signing key.
    pub fn verifying_key(&self) -> Result<VerifyingKey, ExchangeError> {
        parse_key(&self.signing_key)
    }
}

/// The directory as gateways receive it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Configuration {
    /// The X-Road instance.
    pub instance: String,
    /// Grows with every change to the directory.
    pub version: u64,
    /// When it was signed (ms since the epoch).
    pub issued_ms: i64,
    /// After this it is stale (ms since the epoch).
    pub expires_ms: i64,
    /// Every member.
    pub members: Vec<Member>,
    /// Every subsystem.
    pub subsystems: Vec<Subsystem>,
    /// Every service.
    pub services: Vec<Service>,
    /// The services' OpenAPI documents, by service identifier.
    pub openapi: BTreeMap<String, String>,
    /// Every access right.
    pub rights: Vec<AccessRight>,
    /// Every gateway in force (a revoked one is gone).
    pub gateways: Vec<Gateway>,
}

/// A signed configuration as it travels: the document (base64url of its JSON), the
/// signature, and the key that made it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Signed {
    /// The configuration's JSON, base64url.
    pub configuration: String,
    /// Ed25519 over the domain separator and the JSON bytes, base64url.
    pub signature: String,
    /// The signing key (base64), for the reader to match against its anchor.
    pub key: String,
}

/// What a gateway needs to trust the directory: the instance, where to poll, and the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Anchor {
    /// The X-Road instance.
    pub instance: String,
    /// The directory's public key (base64).
    pub key: String,
}

/// A public key as text.
pub fn key_text(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// A public key from its text.
pub fn parse_key(text: &str) -> Result<VerifyingKey, ExchangeError> {
    let bytes: [u8; 32] = STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            ExchangeError::Invalid("an Ed25519 public key is 32 bytes in base64".into())
        })?;
    VerifyingKey::from_bytes(&bytes)
        .map_err(|_| ExchangeError::Invalid("not an Ed25519 public key".into()))
}

/// Signs a configuration.
pub fn sign(configuration: &Configuration, key: &SigningKey) -> Result<Signed, ExchangeError> {
    let json = serde_json::to_vec(configuration)
        .map_err(|e| ExchangeError::Invalid(format!("configuration: {e}")))?;
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(&json);
    Ok(Signed {
        configuration: URL_SAFE_NO_PAD.encode(&json),
        signature: URL_SAFE_NO_PAD.encode(key.sign(&message).to_bytes()),
        key: key_text(&key.verifying_key()),
    })
}

/// Reads a signed configuration and checks it was signed by `anchor` for `instance`.
pub fn verify(text: &str, anchor: &Anchor) -> Result<Configuration, ExchangeError> {
    let bad = |why: &str| ExchangeError::Invalid(format!("the configuration {why}"));
    let signed: Signed = serde_json::from_str(text).map_err(|_| bad("is not a signed document"))?;
    let key = parse_key(&anchor.key)?;
    if signed.key.trim() != anchor.key.trim() {
        return Err(bad("is signed by another key than the anchor's"));
    }
    let json = URL_SAFE_NO_PAD
        .decode(&signed.configuration)
        .map_err(|_| bad("is not base64url"))?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD
        .decode(&signed.signature)
        .ok()
        .and_then(|s| s.try_into().ok())
        .ok_or_else(|| bad("signature is malformed"))?;
    let mut message = CONTEXT.to_vec();
    message.extend_from_slice(&json);
    key.verify(&message, &ed25519_dalek::Signature::from_bytes(&signature))
        .map_err(|_| bad("signature does not verify"))?;
    let configuration: Configuration =
        serde_json::from_slice(&json).map_err(|e| bad(&format!("cannot be read: {e}")))?;
    if configuration.instance != anchor.instance {
        return Err(bad(&format!(
            "is for instance {}, not {}",
            configuration.instance, anchor.instance
        )));
    }
    Ok(configuration)
}

/// What a gateway sends with its poll so that the directory knows which version it holds:
/// `MEMBER TIME-MS VERSION SIGNATURE`, signed (base64url) with its message key over
/// `civitas-exchange/poll MEMBER TIME-MS VERSION`.
pub fn poll_claim(member: &MemberId, key: &SigningKey, version: u64, now_ms: i64) -> String {
    let text = format!("civitas-exchange/poll {member} {now_ms} {version}");
    let signature = URL_SAFE_NO_PAD.encode(key.sign(text.as_bytes()).to_bytes());
    format!("{member} {now_ms} {version} {signature}")
}

/// Reads a poll claim: the member, its time and the version it held, when the signature
/// verifies under the key `key_of` gives for the member and the time is within five
/// minutes of `now_ms`.
pub fn read_poll_claim(
    claim: &str,
    now_ms: i64,
    key_of: impl Fn(&MemberId) -> Option<VerifyingKey>,
) -> Option<(MemberId, i64, u64)> {
    let parts: Vec<&str> = claim.split(' ').collect();
    let [member, at, version, signature] = parts.as_slice() else {
        return None;
    };
    let member = MemberId::parse(member).ok()?;
    let at: i64 = at.parse().ok()?;
    let version: u64 = version.parse().ok()?;
    if now_ms.abs_diff(at) > 300_000 {
        return None;
    }
    let key = key_of(&member)?;
    let signature: [u8; 64] = URL_SAFE_NO_PAD.decode(signature).ok()?.try_into().ok()?;
    let text = format!("civitas-exchange/poll {member} {at} {version}");
    key.verify(
        text.as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .ok()?;
    Some((member, at, version))
}

/// A gateway's signature over a body it sends the directory (base64url, over SHA-512 of
/// the body).
pub fn sign_body(key: &SigningKey, body: &[u8]) -> String {
    use sha2::Digest;
    let mut message = b"civitas-exchange/body\n".to_vec();
    message.extend_from_slice(&sha2::Sha512::digest(body));
    URL_SAFE_NO_PAD.encode(key.sign(&message).to_bytes())
}

/// Whether `signature` is `key`'s over `body` (see [`sign_body`]).
pub fn verify_body(key: &VerifyingKey, body: &[u8], signature: &str) -> bool {
    use sha2::Digest;
    let mut message = b"civitas-exchange/body\n".to_vec();
    message.extend_from_slice(&sha2::Sha512::digest(body));
    URL_SAFE_NO_PAD
        .decode(signature.trim())
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .is_some_and(|s| {
            key.verify(&message, &ed25519_dalek::Signature::from_bytes(&s))
                .is_ok()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_configuration_verifies_only_unchanged_and_under_its_anchor() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let conf = Configuration {
            instance: "TW".into(),
            version: 3,
            issued_ms: 1,
            expires_ms: 2,
            ..Configuration::default()
        };
        let signed = sign(&conf, &key).unwrap();
        let anchor = Anchor {
            instance: "TW".into(),
            key: key_text(&key.verifying_key()),
        };
        let text = serde_json::to_string(&signed).unwrap();
        assert_eq!(verify(&text, &anchor).unwrap(), conf);

        // Another version under the same signature.
        let mut forged = signed.clone();
        let other = Configuration {
            version: 4,
            ..conf.clone()
        };
        forged.configuration = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).unwrap());
        let err = verify(&serde_json::to_string(&forged).unwrap(), &anchor).unwrap_err();
        assert!(err.to_string().contains("does not verify"), "{err}");

        // Signed by someone else, claiming the anchor's key.
        let mallory = SigningKey::from_bytes(&[9; 32]);
        let mut theirs = sign(&conf, &mallory).unwrap();
        theirs.key = anchor.key.clone();
        assert!(verify(&serde_json::to_string(&theirs).unwrap(), &anchor).is_err());

        // A poll claim verifies under its member's key only, and only while recent.
        let member = MemberId::parse("TW/GOV/HRO").unwrap();
        let claim = poll_claim(&member, &key, 5, 1_000_000);
        let mine = |_: &MemberId| Some(key.verifying_key());
        assert_eq!(
            read_poll_claim(&claim, 1_000_000, mine).map(|c| c.2),
            Some(5)
        );
        assert!(read_poll_claim(&claim, 1_000_000 + 301_000, mine).is_none());
        assert!(read_poll_claim(&claim, 1_000_000, |_| Some(mallory.verifying_key())).is_none());

        // A body's signature binds the body and the key.
        let sig = sign_body(&key, b"[1]");
        assert!(verify_body(&key.verifying_key(), b"[1]", &sig));
        assert!(!verify_body(&key.verifying_key(), b"[2]", &sig));
        assert!(!verify_body(&mallory.verifying_key(), b"[1]", &sig));

        // Another instance's anchor.
        let ee = Anchor {
            instance: "EE".into(),
            ..anchor
        };
        assert!(
            verify(&text, &ee)
                .unwrap_err()
                .to_string()
                .contains("instance")
        );
    }
}
