//! Encryption to a client's key: compact JWE (RFC 7516) with direct key agreement
//! `ECDH-ES` on P-256 and `A256GCM` content encryption (RFC 7518 §4.6, §5.3), for a client
//! that registered an encryption key (a P-256 key with `"use": "enc"` in its JWKS). What
//! the provider signs for such a client (a data release) is signed first and then encrypted,
//! as a nested JWT (RFC 7519 §5.2, `cty: "JWT"`): only the client can read it, and it still
//! verifies with the provider's signing keys.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{aead, agreement, digest};
use serde_json::{Value, json};

use super::OidcError;

/// The key-management algorithm.
pub const JWE_ALG: &str = "ECDH-ES";
/// The content-encryption algorithm.
pub const JWE_ENC: &str = "A256GCM";

/// A client's encryption key, as its JWKS gives it.
#[derive(Debug, Clone)]
pub struct EncryptionKey {
    /// Its `kid`, echoed in the JWE header so the client knows which key to use.
    pub kid: Option<String>,
    /// The uncompressed point (`0x04 || x || y`).
    point: Vec<u8>,
}

/// Whether `jwk` is meant for encryption (`"use": "enc"`).
pub(crate) fn is_encryption_key(jwk: &Jwk) -> bool {
    matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption))
}

/// The encryption key in `set`: its first key with `"use": "enc"`. Such a key must be a
/// P-256 key on the curve (checked by agreeing a key with it), else the set is refused.
pub(crate) fn encryption_key(set: &JwkSet) -> Result<Option<EncryptionKey>, String> {
    let Some(jwk) = set.keys.iter().find(|k| is_encryption_key(k)) else {
        return Ok(None);
    };
    let AlgorithmParameters::EllipticCurve(ec) = &jwk.algorithm else {
        return Err("the encryption key must be an EC P-256 key (ECDH-ES)".into());
    };
    if ec.curve != EllipticCurve::P256 {
        return Err("the encryption key must be on P-256 (ECDH-ES)".into());
    }
    let coordinate = |c: &str, name: &str| {
        URL_SAFE_NO_PAD
            .decode(c)
            .ok()
            .filter(|b| b.len() == 32)
            .ok_or_else(|| format!("the encryption key's {name} is not a P-256 coordinate"))
    };
    let mut point = vec![4u8];
    point.extend(coordinate(&ec.x, "x")?);
    point.extend(coordinate(&ec.y, "y")?);
    let key = EncryptionKey {
        kid: jwk.common.key_id.clone(),
        point,
    };
    // A point off the curve fails the agreement; better now than at the first release.
    key.agree()
        .map_err(|_| "the encryption key is not a point on P-256".to_string())?;
    Ok(Some(key))
}

impl EncryptionKey {
    /// A fresh ephemeral key pair and the content key agreed with this key (Concat KDF of
    /// RFC 7518 §4.6.2, for `A256GCM`, with no party information).
    fn agree(&self) -> Result<(Vec<u8>, [u8; 32]), ()> {
        let rng = SystemRandom::new();
        let mine = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng)
            .map_err(|_| ())?;
        let public = mine.compute_public_key().map_err(|_| ())?.as_ref().to_vec();
        let peer = agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &self.point);
        let key = agreement::agree_ephemeral(mine, &peer, |z| concat_kdf(z, JWE_ENC, 256))
            .map_err(|_| ())?;
        Ok((public, key))
    }

    /// `plaintext` as a compact JWE to this key; `cty` names what it holds.
    pub fn encrypt(&self, plaintext: &[u8], cty: &str) -> Result<String, OidcError> {
        let failed = || OidcError::Key("encrypting to the client's key failed".into());
        let (epk, cek) = self.agree().map_err(|_| failed())?;
        let mut header = json!({
            "alg": JWE_ALG,
            "enc": JWE_ENC,
            "cty": cty,
            "epk": {
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(&epk[1..33]),
                "y": URL_SAFE_NO_PAD.encode(&epk[33..65]),
            },
        });
        if let Some(kid) = &self.kid {
            header["kid"] = Value::String(kid.clone());
        }
        let protected = URL_SAFE_NO_PAD.encode(header.to_string());
        let mut iv = [0u8; 12];
        SystemRandom::new().fill(&mut iv).map_err(|_| failed())?;
        let sealing = aead::LessSafeKey::new(
            aead::UnboundKey::new(&aead::AES_256_GCM, &cek).map_err(|_| failed())?,
        );
        let mut body = plaintext.to_vec();
        // The additional data is the encoded protected header (RFC 7516 §5.1, step 14).
        let tag = sealing
            .seal_in_place_separate_tag(
                aead::Nonce::assume_unique_for_key(iv),
                aead::Aad::from(protected.as_bytes()),
                &mut body,
            )
            .map_err(|_| failed())?;
        // Direct key agreement: the encrypted key is empty.
        Ok(format!(
            "{protected}..{}.{}.{}",
            URL_SAFE_NO_PAD.encode(iv),
            URL_SAFE_NO_PAD.encode(&body),
            URL_SAFE_NO_PAD.encode(tag.as_ref())
        ))
    }
}

/// The Concat KDF (NIST SP 800-56A §5.8.1) as JWA uses it with SHA-256: one round is enough
/// for a key of at most 256 bits. `AlgorithmID` is the `enc` value for direct agreement;
/// `PartyUInfo` and `PartyVInfo` are empty; `SuppPubInfo` is the key length in bits.
pub fn concat_kdf(z: &[u8], algorithm: &str, bits: u32) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&1u32.to_be_bytes());
    ctx.update(z);
    ctx.update(&(algorithm.len() as u32).to_be_bytes());
    ctx.update(algorithm.as_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(&bits.to_be_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 7518 Appendix C: the Concat KDF example (ECDH-ES with A128GCM; the first 16
    /// bytes of the 256-bit round are the key, with `Alice` and `Bob` as party info).
    #[test]
    fn the_kdf_matches_rfc_7518_appendix_c() {
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49,
            110, 163, 218, 128, 106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&1u32.to_be_bytes());
        ctx.update(&z);
        for part in [&b"A128GCM"[..], b"Alice", b"Bob"] {
            ctx.update(&(part.len() as u32).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(&128u32.to_be_bytes());
        let round = ctx.finish();
        assert_eq!(
            URL_SAFE_NO_PAD.encode(&round.as_ref()[..16]),
            "VqqN6vgjbSBcIijNcacQGg"
        );
        // The same construction without party info is what `concat_kdf` computes.
        let ours = concat_kdf(&z, "A128GCM", 128);
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(&1u32.to_be_bytes());
        ctx.update(&z);
        ctx.update(&7u32.to_be_bytes());
        ctx.update(b"A128GCM");
        ctx.update(&[0u8; 8]);
        ctx.update(&128u32.to_be_bytes());
        assert_eq!(ours.as_slice(), ctx.finish().as_ref());
    }

    #[test]
    fn a_release_encrypted_to_a_key_opens_with_it_and_not_when_changed() {
        let rng = SystemRandom::new();
        let client =
            agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).expect("a key");
        let public = client
            .compute_public_key()
            .expect("public")
            .as_ref()
            .to_vec();
        let set: JwkSet = serde_json::from_value(json!({"keys": [{
            "kty": "EC", "crv": "P-256", "use": "enc", "kid": "k1",
            "x": URL_SAFE_NO_PAD.encode(&public[1..33]),
            "y": URL_SAFE_NO_PAD.encode(&public[33..65]),
        }]}))
        .expect("a JWKS");
        let key = encryption_key(&set).expect("valid").expect("an enc key");
        let jwe = key.encrypt(b"a.signed.jwt", "JWT").expect("encrypted");
        let parts: Vec<&str> = jwe.split('.').collect();
        assert_eq!(parts.len(), 5);
        assert_eq!(parts[1], "", "direct agreement has no encrypted key");
        let header: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("b64")).expect("json");
        assert_eq!(header["alg"], "ECDH-ES");
        assert_eq!(header["enc"], "A256GCM");
        assert_eq!(header["kid"], "k1");
        let epk = [
            vec![4u8],
            URL_SAFE_NO_PAD
                .decode(header["epk"]["x"].as_str().expect("x"))
                .expect("b64"),
            URL_SAFE_NO_PAD
                .decode(header["epk"]["y"].as_str().expect("y"))
                .expect("b64"),
        ]
        .concat();
        let cek = agreement::agree_ephemeral(
            client,
            &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, &epk),
            |z| concat_kdf(z, "A256GCM", 256),
        )
        .expect("agreed");
        let open = |protected: &str, ciphertext: &str| {
            let key = aead::LessSafeKey::new(
                aead::UnboundKey::new(&aead::AES_256_GCM, &cek).expect("key"),
            );
            let iv: [u8; 12] = URL_SAFE_NO_PAD
                .decode(parts[2])
                .expect("iv")
                .try_into()
                .expect("12 bytes");
            let mut data = URL_SAFE_NO_PAD.decode(ciphertext).expect("ct");
            data.extend(URL_SAFE_NO_PAD.decode(parts[4]).expect("tag"));
            key.open_in_place(
                aead::Nonce::assume_unique_for_key(iv),
                aead::Aad::from(protected.as_bytes()),
                &mut data,
            )
            .map(|p| p.to_vec())
        };
        assert_eq!(
            open(parts[0], parts[3]).expect("opens"),
            b"a.signed.jwt".to_vec()
        );
        // Another header (the additional data) or a changed ciphertext does not open.
        let other_header = URL_SAFE_NO_PAD.encode(b"{\"alg\":\"ECDH-ES\",\"enc\":\"A256GCM\"}");
        assert!(open(&other_header, parts[3]).is_err());
        let mut changed = URL_SAFE_NO_PAD.decode(parts[3]).expect("ct");
        changed[0] ^= 1;
        assert!(open(parts[0], &URL_SAFE_NO_PAD.encode(changed)).is_err());
    }

    #[test]
    fn encryption_keys_must_be_p256_points() {
        let set = |x: &str, y: &str, crv: &str| -> JwkSet {
            serde_json::from_value(json!({"keys": [{
                "kty": "EC", "crv": crv, "use": "enc", "x": x, "y": y,
            }]}))
            .expect("a JWKS")
        };
        let zero = URL_SAFE_NO_PAD.encode([0u8; 32]);
        assert!(encryption_key(&set(&zero, &zero, "P-256")).is_err());
        let short = URL_SAFE_NO_PAD.encode([1u8; 8]);
        assert!(encryption_key(&set(&short, &short, "P-256")).is_err());
        let no_enc: JwkSet = serde_json::from_value(json!({"keys": []})).expect("a JWKS");
        assert!(encryption_key(&no_enc).expect("fine").is_none());
    }
}
