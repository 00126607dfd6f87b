//! Userinfo claims by scope. The caller supplies the account's details: this module does
//! not read other blocks' tables.

use serde_json::{Map, Value};

/// Every claim this provider may release.
pub const SUPPORTED_CLAIMS: [&str; 17] = [
    "iss",
    "sub",
    "aud",
    "exp",
    "iat",
    "auth_time",
    "nonce",
    "acr",
    "amr",
    "at_hash",
    "sid",
    "name",
    "locale",
    "email",
    "email_verified",
    "phone_number",
    "phone_number_verified",
];

/// What Civitas knows about an account that a client may receive, by scope.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccountClaims {
    /// Display name (`profile`).
    pub name: Option<String>,
    /// Preferred language as a BCP 47 tag, such as `zh-TW` (`profile`).
    pub locale: Option<String>,
    /// E-mail address (`email`).
    pub email: Option<String>,
    /// Whether the address was confirmed (`email`).
    pub email_verified: bool,
    /// Phone number in E.164 (`phone`).
    pub phone_number: Option<String>,
    /// Whether the number was confirmed (`phone`).
    pub phone_number_verified: bool,
}

/// The userinfo response for `sub`: `openid` gives `sub`; `profile` adds `name` and `locale`;
/// `email` adds `email` and `email_verified`; `phone` adds `phone_number` and
/// `phone_number_verified`. Claims the account does not have are left out.
pub fn userinfo_claims(
    sub: &str,
    scopes: &[String],
    account: &AccountClaims,
) -> Map<String, Value> {
    let has = |s: &str| scopes.iter().any(|x| x == s);
    let mut out = Map::new();
    out.insert("sub".into(), sub.into());
    if has("profile") {
        if let Some(n) = &account.name {
            out.insert("name".into(), n.as_str().into());
        }
        if let Some(l) = &account.locale {
            out.insert("locale".into(), l.as_str().into());
        }
    }
    if has("email")
        && let Some(e) = &account.email
    {
        out.insert("email".into(), e.as_str().into());
        out.insert("email_verified".into(), account.email_verified.into());
    }
    if has("phone")
        && let Some(p) = &account.phone_number
    {
        out.insert("phone_number".into(), p.as_str().into());
        out.insert(
            "phone_number_verified".into(),
            account.phone_number_verified.into(),
        );
    }
    out
}
