//! Access and refresh tokens that carry what they grant, sealed with the provider's token key.
//!
//! A token is `<kind>.<payload>.<mac>`: the kind (`at1` for access, `rt1` for refresh), the
//! payload as base64url JSON, and HMAC-SHA256 under a random key kept in `oidc_secrets`
//! over the kind and the payload. Nobody without the key can make or alter one, so nothing
//! about a token needs storing when it is issued:
//!
//! - an access token names its grant, its expiry and its (perhaps narrowed) scopes; userinfo
//!   still reads the grant, so revoking the grant (logout, reuse) ends its access tokens at
//!   once;
//! - a refresh token names its grant, its expiry and a generation. The grant row keeps the
//!   current generation: a refresh is one compare-and-set that moves it on by one, and a
//!   genuine token with an older generation is a rotated-out token coming back (RFC 9700
//!   §4.14.2), which revokes the grant.
//!
//! Issuing tokens therefore writes one small row (the grant's generation) instead of
//! inserting two, and the token table that grew by two rows per refresh is gone.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// What an access token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct AccessClaims {
    /// The grant it was issued from.
    pub grant_id: String,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// The scopes it carries, space-separated.
    pub scope: String,
}

/// What a refresh token carries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RefreshClaims {
    /// The grant it was issued from.
    pub grant_id: String,
    /// Its place in the grant's rotation: 0 from the code, one more at every refresh.
    pub generation: i64,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
}

const ACCESS: &str = "at1";
const REFRESH: &str = "rt1";

fn mac(key: &[u8; 32], kind: &str, payload: &str) -> Hmac<Sha256> {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(kind.as_bytes());
    mac.update(b".");
    mac.update(payload.as_bytes());
    mac
}

fn seal<T: Serialize>(key: &[u8; 32], kind: &str, claims: &T) -> String {
    let json = serde_json::to_vec(claims).expect("token claims serialise");
    let payload = URL_SAFE_NO_PAD.encode(json);
    let tag = URL_SAFE_NO_PAD.encode(mac(key, kind, &payload).finalize().into_bytes());
    format!("{kind}.{payload}.{tag}")
}

/// The claims of a token of `kind` made with `key`, or `None` for anything else (another
/// kind, another key, an altered payload, not a token at all). Compares in constant time.
fn open<T: for<'de> Deserialize<'de>>(key: &[u8; 32], kind: &str, token: &str) -> Option<T> {
    let mut parts = token.split('.');
    let (k, payload, tag) = (parts.next()?, parts.next()?, parts.next()?);
    if k != kind || parts.next().is_some() {
        return None;
    }
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    mac(key, kind, payload).verify_slice(&tag).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

/// A new access token.
pub(crate) fn seal_access(key: &[u8; 32], claims: &AccessClaims) -> String {
    seal(key, ACCESS, claims)
}

/// A new refresh token.
pub(crate) fn seal_refresh(key: &[u8; 32], claims: &RefreshClaims) -> String {
    seal(key, REFRESH, claims)
}

/// An access token's claims, if it is one of ours (expired or not).
pub(crate) fn open_access(key: &[u8; 32], token: &str) -> Option<AccessClaims> {
    open(key, ACCESS, token)
}

/// A refresh token's claims, if it is one of ours (expired or not).
pub(crate) fn open_refresh(key: &[u8; 32], token: &str) -> Option<RefreshClaims> {
    open(key, REFRESH, token)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn refresh() -> RefreshClaims {
        RefreshClaims {
            grant_id: "g1".into(),
            generation: 3,
            exp: 2_000_000_000,
        }
    }

    #[test]
    fn a_sealed_token_opens_with_its_key_and_kind_only() {
        let t = seal_refresh(&KEY, &refresh());
        assert_eq!(open_refresh(&KEY, &t), Some(refresh()));
        assert_eq!(open_refresh(&[8; 32], &t), None, "another key");
        assert_eq!(open_access(&KEY, &t), None, "another kind");
        let a = AccessClaims {
            grant_id: "g1".into(),
            exp: 1,
            scope: "openid profile".into(),
        };
        assert_eq!(open_access(&KEY, &seal_access(&KEY, &a)), Some(a));
    }

    #[test]
    fn altered_or_malformed_tokens_do_not_open() {
        let t = seal_refresh(&KEY, &refresh());
        let (head, tag) = t.rsplit_once('.').unwrap();
        // A payload claiming a later generation, with the old tag.
        let forged = serde_json::to_vec(&RefreshClaims {
            generation: 4,
            ..refresh()
        })
        .unwrap();
        let forged = format!("rt1.{}.{tag}", URL_SAFE_NO_PAD.encode(forged));
        assert_eq!(open_refresh(&KEY, &forged), None);
        for bad in [
            String::new(),
            "rt1".into(),
            format!("{head}."),
            format!("{t}.extra"),
            format!("{head}.{}", &tag[1..]),
            t.replacen("rt1", "at1", 1),
        ] {
            assert_eq!(open_refresh(&KEY, &bad), None, "{bad}");
        }
    }
}
