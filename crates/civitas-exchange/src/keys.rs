//! A gateway's own keys: an Ed25519 key that signs its messages and a TLS key with a
//! self-signed certificate for mutual TLS. Both are this node's identity, kept in its data
//! folder (readable by its owner only); the directory publishes their public halves in the
//! signed configuration, which is what other gateways trust.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
pub use ed25519_dalek::SigningKey;
use serde::{Deserialize, Serialize};

use crate::ExchangeError;
use crate::configuration::key_text;

/// The file the keys live in, in the data folder.
pub const FILE: &str = "exchange-gateway-keys.json";

/// A gateway's keys.
pub struct GatewayKeys {
    /// Signs this gateway's messages.
    pub signing: SigningKey,
    /// The TLS private key (PKCS#8 DER).
    pub tls_key: Vec<u8>,
    /// The TLS certificate (DER).
    pub tls_certificate: Vec<u8>,
}

/// The public halves, as the operator registers them (`civitas exchange gateway add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublicKeys {
    /// The TLS certificate (DER, base64).
    pub tls_certificate: String,
    /// The message-signing key (base64).
    pub signing_key: String,
}

#[derive(Serialize, Deserialize)]
struct Stored {
    signing_key: String,
    tls_key: String,
    tls_certificate: String,
}

fn io(path: &Path, e: impl std::fmt::Display) -> ExchangeError {
    ExchangeError::Invalid(format!("the gateway keys in {}: {e}", path.display()))
}

impl GatewayKeys {
    /// Makes new keys.
    pub fn generate() -> Result<GatewayKeys, ExchangeError> {
        let signing = SigningKey::generate(&mut rand_core::OsRng);
        let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| ExchangeError::Invalid(format!("cannot make a TLS key: {e}")))?;
        let mut params = rcgen::CertificateParams::new(vec!["civitas-gateway".to_string()])
            .map_err(|e| ExchangeError::Invalid(format!("certificate: {e}")))?;
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2100, 1, 1);
        let certificate = params
            .self_signed(&pair)
            .map_err(|e| ExchangeError::Invalid(format!("certificate: {e}")))?;
        Ok(GatewayKeys {
            signing,
            tls_key: pair.serialize_der(),
            tls_certificate: certificate.der().to_vec(),
        })
    }

    /// The keys in `data_dir`, made and saved on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<GatewayKeys, ExchangeError> {
        let path: PathBuf = data_dir.join(FILE);
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let s: Stored = serde_json::from_str(&text).map_err(|e| io(&path, e))?;
                let decode = |v: &str| STANDARD.decode(v).map_err(|e| io(&path, e));
                let seed: [u8; 32] = decode(&s.signing_key)?
                    .try_into()
                    .map_err(|_| io(&path, "the signing key is not 32 bytes"))?;
                Ok(GatewayKeys {
                    signing: SigningKey::from_bytes(&seed),
                    tls_key: decode(&s.tls_key)?,
                    tls_certificate: decode(&s.tls_certificate)?,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let keys = GatewayKeys::generate()?;
                let stored = Stored {
                    signing_key: STANDARD.encode(keys.signing.to_bytes()),
                    tls_key: STANDARD.encode(&keys.tls_key),
                    tls_certificate: STANDARD.encode(&keys.tls_certificate),
                };
                let text = serde_json::to_string_pretty(&stored).map_err(|e| io(&path, e))?;
                write_private(&path, text.as_bytes()).map_err(|e| io(&path, e))?;
                Ok(keys)
            }
            Err(e) => Err(io(&path, e)),
        }
    }

    /// The public halves.
    pub fn public(&self) -> PublicKeys {
        PublicKeys {
            tls_certificate: STANDARD.encode(&self.tls_certificate),
            signing_key: key_text(&self.signing.verifying_key()),
        }
    }
}

/// Writes a file only its owner can read, without ever leaving it readable to others.
pub(crate) fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}
