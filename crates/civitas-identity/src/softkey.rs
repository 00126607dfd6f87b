//! A software passkey authenticator for tests, standing in for the browser and the
//! authenticator together: it turns the options a relying party sends into the JSON a
//! browser would post back.
//!
//! It makes real WebAuthn responses: ES256 (P-256) keys, "none" attestation, CBOR
//! authenticator data with the relying party id's hash, user presence and verification flags
//! and a signature counter, and discoverable credentials that return their user handle.
//!
//! Unlike a browser it does not check that the origin belongs to the relying party, so tests
//! can present a response from another origin and see it refused. It keeps its keys in memory
//! only and must never be built into a production binary: it is behind the `softkey` feature.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::elliptic_curve::Generate as _;
use sha2_11::{Digest as _, Sha256};
use url::Url;
use webauthn_rs::prelude::{
    CreationChallengeResponse, PublicKeyCredential, RegisterPublicKeyCredential,
    RequestChallengeResponse,
};
use webauthn_rs_proto::{
    AuthenticationExtensionsClientOutputs, AuthenticatorAssertionResponseRaw,
    AuthenticatorAttestationResponseRaw, AuthenticatorTransport, CredProps,
    RegistrationExtensionsClientOutputs,
};

/// COSE algorithm identifier of ES256 (ECDSA with P-256 and SHA-256).
const ES256: i64 = -7;

const FLAG_UP: u8 = 0x01;
const FLAG_UV: u8 = 0x04;
const FLAG_AT: u8 = 0x40;

/// Errors of the software authenticator; each matches what a browser would refuse.
#[derive(Debug, thiserror::Error)]
pub enum SoftKeyError {
    /// The origin given to [`SoftKey::new`] is not a URL.
    #[error("not an origin: {0}")]
    BadOrigin(String),
    /// The relying party's options could not be read.
    #[error("not WebAuthn options: {0}")]
    BadOptions(String),
    /// The relying party does not accept ES256 keys, the only kind this authenticator makes.
    #[error("the relying party does not accept ES256")]
    NoEs256,
    /// One of this authenticator's credentials is in the options' exclude list: it is
    /// already registered on that account.
    #[error("this authenticator already holds a passkey excluded by the relying party")]
    Excluded,
    /// No credential of this authenticator fits the sign-in request.
    #[error("no passkey for this relying party")]
    NoCredential,
    /// The response could not be encoded.
    #[error("cannot encode the response: {0}")]
    Encode(String),
}

/// A software authenticator holding discoverable ES256 credentials.
///
/// Cloning it clones its keys and counters: the clone is a cloned authenticator, whose
/// counter falls behind the original's as soon as either signs in.
#[derive(Debug, Clone)]
pub struct SoftKey {
    origin: String,
    user_verification: bool,
    credentials: Vec<Credential>,
}

#[derive(Debug, Clone)]
struct Credential {
    rp_id: String,
    id: Vec<u8>,
    user_handle: Vec<u8>,
    key: SigningKey,
    counter: u32,
}

impl SoftKey {
    /// An empty authenticator used from pages at `origin` (such as
    /// `http://localhost:8080`), which goes into every response's client data.
    pub fn new(origin: &str) -> Result<SoftKey, SoftKeyError> {
        Ok(SoftKey {
            origin: ascii_origin(origin)?,
            user_verification: true,
            credentials: Vec::new(),
        })
    }

    /// Whether the authenticator claims to have verified the person (PIN or biometric).
    /// `false` behaves like a security key without a PIN.
    pub fn set_user_verification(&mut self, verified: bool) {
        self.user_verification = verified;
    }

    /// Changes the origin reported in later responses, as if the page were served from
    /// elsewhere (a phishing site relaying the ceremony).
    pub fn set_origin(&mut self, origin: &str) -> Result<(), SoftKeyError> {
        self.origin = ascii_origin(origin)?;
        Ok(())
    }

    /// Gives every credential a new private key, so later signatures are made by a key the
    /// relying party never registered.
    pub fn replace_keys(&mut self) {
        for c in &mut self.credentials {
            c.key = SigningKey::generate();
        }
    }

    /// How many credentials the authenticator holds.
    pub fn credential_count(&self) -> usize {
        self.credentials.len()
    }

    /// Answers a registration: takes the relying party's `CreationChallengeResponse` JSON
    /// (`{"publicKey": {...}}`) and returns the `RegisterPublicKeyCredential` JSON a browser
    /// would post back (`{"id", "rawId", "response": {"attestationObject",
    /// "clientDataJSON"}, "type": "public-key", "extensions": {"credProps": {"rk": true}}}`).
    ///
    /// A credential for the same relying party and user replaces the old one, as on a real
    /// authenticator.
    pub fn register(&mut self, creation_options_json: &str) -> Result<String, SoftKeyError> {
        let ccr: CreationChallengeResponse = serde_json::from_str(creation_options_json)
            .map_err(|e| SoftKeyError::BadOptions(e.to_string()))?;
        let options = ccr.public_key;
        if !options.pub_key_cred_params.iter().any(|p| p.alg == ES256) {
            return Err(SoftKeyError::NoEs256);
        }
        let rp_id = options.rp.id;
        let excluded = options.exclude_credentials.unwrap_or_default();
        if self
            .credentials
            .iter()
            .any(|c| c.rp_id == rp_id && excluded.iter().any(|d| d.id == c.id))
        {
            return Err(SoftKeyError::Excluded);
        }

        let key = SigningKey::generate();
        let point = key.verifying_key().to_sec1_point(false);
        let point = point.as_bytes();
        // An uncompressed SEC1 point is 0x04 || x || y, 32 bytes each for P-256.
        let (Some(x), Some(y)) = (point.get(1..33), point.get(33..65)) else {
            return Err(SoftKeyError::Encode("unexpected public key size".into()));
        };
        // Derived from the public key, so it is unique without another source of randomness.
        let id = Sha256::digest(point).to_vec();

        let mut cose_key = Vec::new();
        cbor::map(&mut cose_key, 5);
        cbor::int(&mut cose_key, 1); // kty
        cbor::int(&mut cose_key, 2); // EC2
        cbor::int(&mut cose_key, 3); // alg
        cbor::int(&mut cose_key, ES256);
        cbor::int(&mut cose_key, -1); // crv
        cbor::int(&mut cose_key, 1); // P-256
        cbor::int(&mut cose_key, -2); // x
        cbor::bytes(&mut cose_key, x);
        cbor::int(&mut cose_key, -3); // y
        cbor::bytes(&mut cose_key, y);

        let id_len = u16::try_from(id.len()).map_err(|e| SoftKeyError::Encode(e.to_string()))?;
        let mut auth_data = auth_data_head(&rp_id, self.flags(FLAG_AT), 0);
        auth_data.extend_from_slice(&[0; 16]); // AAGUID: none, as with "none" attestation
        auth_data.extend_from_slice(&id_len.to_be_bytes());
        auth_data.extend_from_slice(&id);
        auth_data.extend_from_slice(&cose_key);

        let mut attestation_object = Vec::new();
        cbor::map(&mut attestation_object, 3);
        cbor::text(&mut attestation_object, "fmt");
        cbor::text(&mut attestation_object, "none");
        cbor::text(&mut attestation_object, "attStmt");
        cbor::map(&mut attestation_object, 0);
        cbor::text(&mut attestation_object, "authData");
        cbor::bytes(&mut attestation_object, &auth_data);

        let response = RegisterPublicKeyCredential {
            id: URL_SAFE_NO_PAD.encode(&id),
            raw_id: id.clone(),
            response: AuthenticatorAttestationResponseRaw {
                attestation_object,
                client_data_json: self.client_data("webauthn.create", &options.challenge)?,
                transports: Some(vec![AuthenticatorTransport::Internal]),
            },
            type_: "public-key".into(),
            extensions: RegistrationExtensionsClientOutputs {
                cred_props: Some(CredProps { rk: Some(true) }),
                ..Default::default()
            },
        };
        let user_handle = options.user.id;
        self.credentials
            .retain(|c| !(c.rp_id == rp_id && c.user_handle == user_handle));
        self.credentials.push(Credential {
            rp_id,
            id,
            user_handle,
            key,
            counter: 0,
        });
        serde_json::to_string(&response).map_err(|e| SoftKeyError::Encode(e.to_string()))
    }

    /// Answers a sign-in: takes the relying party's `RequestChallengeResponse` JSON
    /// (`{"publicKey": {...}, "mediation": ...}`) and returns the `PublicKeyCredential` JSON
    /// a browser would post back (`{"id", "rawId", "response": {"authenticatorData",
    /// "clientDataJSON", "signature", "userHandle"}, "type": "public-key"}`).
    ///
    /// With an empty allow list (passkey-only sign-in) it uses the credential registered
    /// last for the relying party; otherwise the first allowed one it holds. Each sign-in
    /// increments that credential's counter.
    pub fn sign_in(&mut self, request_options_json: &str) -> Result<String, SoftKeyError> {
        let rcr: RequestChallengeResponse = serde_json::from_str(request_options_json)
            .map_err(|e| SoftKeyError::BadOptions(e.to_string()))?;
        let options = rcr.public_key;
        let allowed = &options.allow_credentials;
        let client_data_json = self.client_data("webauthn.get", &options.challenge)?;
        let flags = self.flags(0);
        let credential = if allowed.is_empty() {
            // Passkey-only: the most recent credential, as a person would pick it first.
            self.credentials
                .iter_mut()
                .rev()
                .find(|c| c.rp_id == options.rp_id)
        } else {
            self.credentials
                .iter_mut()
                .find(|c| c.rp_id == options.rp_id && allowed.iter().any(|a| a.id == c.id))
        }
        .ok_or(SoftKeyError::NoCredential)?;
        credential.counter = credential.counter.wrapping_add(1);
        let auth_data = auth_data_head(&credential.rp_id, flags, credential.counter);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(&Sha256::digest(&client_data_json));
        let signature: DerSignature = credential.key.sign(&signed);

        let response = PublicKeyCredential {
            id: URL_SAFE_NO_PAD.encode(&credential.id),
            raw_id: credential.id.clone(),
            response: AuthenticatorAssertionResponseRaw {
                authenticator_data: auth_data,
                client_data_json,
                signature: signature.as_bytes().to_vec(),
                user_handle: Some(credential.user_handle.clone()),
            },
            extensions: AuthenticationExtensionsClientOutputs::default(),
            type_: "public-key".into(),
        };
        serde_json::to_string(&response).map_err(|e| SoftKeyError::Encode(e.to_string()))
    }

    /// User presence always, verification as set, and `extra`.
    fn flags(&self, extra: u8) -> u8 {
        let uv = if self.user_verification { FLAG_UV } else { 0 };
        FLAG_UP | uv | extra
    }

    fn client_data(&self, kind: &str, challenge: &[u8]) -> Result<Vec<u8>, SoftKeyError> {
        serde_json::to_vec(&serde_json::json!({
            "type": kind,
            "challenge": URL_SAFE_NO_PAD.encode(challenge),
            "origin": self.origin,
            "crossOrigin": false,
        }))
        .map_err(|e| SoftKeyError::Encode(e.to_string()))
    }
}

/// The fixed start of authenticator data: rpIdHash, flags, signCount.
fn auth_data_head(rp_id: &str, flags: u8, counter: u32) -> Vec<u8> {
    let mut out = Sha256::digest(rp_id.as_bytes()).to_vec();
    out.push(flags);
    out.extend_from_slice(&counter.to_be_bytes());
    out
}

/// Serialises an origin the way browsers put it in client data: no path, no trailing slash.
fn ascii_origin(origin: &str) -> Result<String, SoftKeyError> {
    let url = Url::parse(origin).map_err(|e| SoftKeyError::BadOrigin(format!("{origin}: {e}")))?;
    Ok(url.origin().ascii_serialization())
}

/// The few CBOR items WebAuthn needs (RFC 8949 major types 0, 1, 2, 3 and 5), in the
/// definite-length encoding authenticators use.
mod cbor {
    fn head(out: &mut Vec<u8>, major: u8, n: u64) {
        let major = major << 5;
        if n < 24 {
            out.push(major | n as u8);
        } else if let Ok(n) = u8::try_from(n) {
            out.extend_from_slice(&[major | 24, n]);
        } else if let Ok(n) = u16::try_from(n) {
            out.push(major | 25);
            out.extend_from_slice(&n.to_be_bytes());
        } else if let Ok(n) = u32::try_from(n) {
            out.push(major | 26);
            out.extend_from_slice(&n.to_be_bytes());
        } else {
            out.push(major | 27);
            out.extend_from_slice(&n.to_be_bytes());
        }
    }

    /// An integer.
    pub(super) fn int(out: &mut Vec<u8>, v: i64) {
        if v >= 0 {
            head(out, 0, v.unsigned_abs());
        } else {
            // CBOR stores -1 - v for negative integers.
            head(out, 1, (v + 1).unsigned_abs());
        }
    }

    /// A byte string.
    pub(super) fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        head(out, 2, b.len() as u64);
        out.extend_from_slice(b);
    }

    /// A text string.
    pub(super) fn text(out: &mut Vec<u8>, s: &str) {
        head(out, 3, s.len() as u64);
        out.extend_from_slice(s.as_bytes());
    }

    /// The head of a map of `pairs` entries; keys and values follow.
    pub(super) fn map(out: &mut Vec<u8>, pairs: u64) {
        head(out, 5, pairs);
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn encodes_rfc_8949_examples() {
            let mut out = Vec::new();
            int(&mut out, 0);
            int(&mut out, 23);
            int(&mut out, 24);
            int(&mut out, 1000);
            int(&mut out, 1_000_000);
            int(&mut out, -1);
            int(&mut out, -7);
            int(&mut out, -1000);
            assert_eq!(
                out,
                [
                    0x00, 0x17, 0x18, 0x18, 0x19, 0x03, 0xe8, 0x1a, 0x00, 0x0f, 0x42, 0x40, 0x20,
                    0x26, 0x39, 0x03, 0xe7
                ]
            );
            let mut out = Vec::new();
            text(&mut out, "IETF");
            bytes(&mut out, &[1, 2, 3, 4]);
            map(&mut out, 0);
            assert_eq!(out, [0x64, 0x49, 0x45, 0x54, 0x46, 0x44, 1, 2, 3, 4, 0xa0]);
        }
    }
}
