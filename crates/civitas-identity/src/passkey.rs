//! Passkeys (WebAuthn): registering them on an account, signing in with them (with or without
//! a username), and managing them.
//!
//! Every ceremony requires user verification (a PIN or biometric on the authenticator), so a
//! passkey sign-in is multi-factor on its own; the platform maps it to eIDAS level "high".
//! Passkeys are registered as discoverable credentials so that a person can sign in without
//! typing anything.
//!
//! Ceremony state lives in the database rather than in memory because the node that finishes
//! a ceremony need not be the one that started it. Each ceremony is single-use and expires
//! after [`CEREMONY_TTL`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};
use serde::{Deserialize, Serialize};
use url::Url;
use uuid::Uuid;
use webauthn_rs::prelude::{
    AuthenticationResult, DiscoverableAuthentication, Passkey, PasskeyAuthentication,
    PasskeyRegistration, PublicKeyCredential, RegisterPublicKeyCredential, Webauthn,
    WebauthnBuilder, WebauthnError,
};
use webauthn_rs_proto::{AuthenticatorSelectionCriteria, ResidentKeyRequirement};

use crate::IdentityError;

/// How long a started ceremony can be finished. Also the timeout the browser is given.
pub const CEREMONY_TTL: Duration = Duration::from_secs(300);

/// The longest label a passkey may have, in characters.
pub const MAX_LABEL_CHARS: usize = 64;

/// The relying party: this platform as WebAuthn sees it, and the ceremonies it runs.
#[derive(Debug, Clone)]
pub struct Passkeys {
    webauthn: Webauthn,
}

/// A started ceremony: what to send to the browser and how to find the ceremony again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CeremonyStarted {
    /// The options for the browser as JSON: a `CreationChallengeResponse`
    /// (`{"publicKey": {...}}`) for registration, a `RequestChallengeResponse` for sign-in.
    /// Binary fields are base64url.
    pub challenge: String,
    /// The id to hand back to the matching `finish_*` call, from any node.
    pub ceremony_id: String,
}

/// A registered passkey as shown to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeyInfo {
    /// The passkey's id in Civitas (not the WebAuthn credential id).
    pub id: String,
    /// The name its owner gave it.
    pub label: String,
    /// When it was registered, in Unix milliseconds.
    pub created_ms: i64,
    /// When it last signed in, in Unix milliseconds; `None` if never.
    pub last_used_ms: Option<i64>,
}

/// A successful passkey sign-in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasskeySignIn {
    /// The account whose passkey signed.
    pub account_id: String,
    /// Which of its passkeys signed.
    pub passkey_id: String,
}

/// What a stored ceremony is for, with the library's state for it.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum CeremonyState {
    Registration {
        user_handle: Uuid,
        state: PasskeyRegistration,
    },
    Authentication {
        state: PasskeyAuthentication,
    },
    Discoverable {
        state: DiscoverableAuthentication,
    },
}

const REGISTRATION: &str = "registration";
const AUTHENTICATION: &str = "authentication";
const DISCOVERABLE: &str = "discoverable";

/// One row of `passkey_credentials`, as a sign-in needs it.
struct StoredPasskey {
    id: String,
    account_id: String,
    user_handle: String,
    passkey: Passkey,
}

impl Passkeys {
    /// A relying party with id `rp_id` (a domain, such as `gov.example`) serving pages at
    /// `origin` (such as `https://id.gov.example`), shown to people as `rp_name`.
    ///
    /// The origin's host must be `rp_id` or a subdomain of it, and a domain name rather than
    /// an IP address: tests on a loopback port use `localhost` and `http://localhost:PORT`.
    pub fn new(rp_id: &str, origin: &Url, rp_name: &str) -> Result<Passkeys, IdentityError> {
        let webauthn = WebauthnBuilder::new(rp_id, origin)
            .map_err(setup)?
            .rp_name(rp_name)
            .timeout(CEREMONY_TTL)
            .build()
            .map_err(setup)?;
        Ok(Passkeys { webauthn })
    }

    /// Starts registering a new passkey on an existing account. `user_name` (such as an
    /// e-mail address) and `display_name` are what the authenticator shows when the person
    /// later picks a passkey; they may change and identify nothing.
    ///
    /// The account's existing passkeys are excluded, so one authenticator is not registered
    /// twice.
    pub async fn start_registration(
        &self,
        db: &Db,
        account_id: &str,
        user_name: &str,
        display_name: &str,
    ) -> Result<CeremonyStarted, IdentityError> {
        let known = sqlx::query("SELECT 1 FROM accounts WHERE id = $1")
            .bind(account_id)
            .fetch_optional(db.pool())
            .await?;
        if known.is_none() {
            return Err(IdentityError::UnknownAccount(account_id.to_string()));
        }
        let rows = sqlx::query(
            "SELECT credential_id, user_handle FROM passkey_credentials WHERE account_id = $1",
        )
        .bind(account_id)
        .fetch_all(db.pool())
        .await?;
        let mut exclude = Vec::with_capacity(rows.len());
        let mut user_handle = None;
        for row in &rows {
            let cred: String = row.try_get("credential_id")?;
            exclude.push(URL_SAFE_NO_PAD.decode(cred).map_err(unreadable)?);
            let handle: String = row.try_get("user_handle")?;
            user_handle = Some(Uuid::parse_str(&handle).map_err(unreadable)?);
        }
        // The user handle is what a discoverable passkey hands back at sign-in. It is random
        // rather than derived from the account id, which could identify the person.
        let user_handle = user_handle.unwrap_or_else(Uuid::new_v4);
        let (mut ccr, state) = self
            .webauthn
            .start_passkey_registration(
                user_handle,
                user_name,
                display_name,
                (!exclude.is_empty()).then_some(exclude),
            )
            .map_err(setup)?;
        // webauthn-rs asks for a non-discoverable credential; passkey-only sign-in needs a
        // discoverable one. The library does not check this at finish, so changing the
        // request is enough.
        let selection = ccr
            .public_key
            .authenticator_selection
            .get_or_insert_with(AuthenticatorSelectionCriteria::default);
        selection.resident_key = Some(ResidentKeyRequirement::Required);
        selection.require_resident_key = true;
        let challenge = serde_json::to_string(&ccr).map_err(|e| setup_msg(e.to_string()))?;
        let ceremony_id = put_ceremony(
            db,
            REGISTRATION,
            Some(account_id),
            &CeremonyState::Registration { user_handle, state },
        )
        .await?;
        Ok(CeremonyStarted {
            challenge,
            ceremony_id,
        })
    }

    /// Finishes a registration with the browser's response (a `RegisterPublicKeyCredential`
    /// as JSON) and stores the passkey under `label`. The ceremony is used up whatever the
    /// outcome.
    pub async fn finish_registration(
        &self,
        db: &Db,
        ceremony_id: &str,
        account_id: &str,
        response_json: &str,
        label: &str,
    ) -> Result<PasskeyInfo, IdentityError> {
        let label = check_label(label)?;
        let CeremonyState::Registration { user_handle, state } =
            take_ceremony(db, ceremony_id, REGISTRATION, Some(account_id)).await?
        else {
            return Err(IdentityError::CeremonyUnknown);
        };
        let response: RegisterPublicKeyCredential = serde_json::from_str(response_json)
            .map_err(|e| rejected_msg(format!("not a registration response: {e}")))?;
        // Only the browser reports whether a discoverable credential was made, and not every
        // browser does; refuse when it says no, since such a passkey could not sign in alone.
        if response
            .extensions
            .cred_props
            .as_ref()
            .and_then(|p| p.rk)
            .is_some_and(|rk| !rk)
        {
            return Err(rejected_msg(
                "the authenticator did not make a discoverable passkey".into(),
            ));
        }
        let passkey = self
            .webauthn
            .finish_passkey_registration(&response, &state)
            .map_err(rejected)?;
        let credential_id = URL_SAFE_NO_PAD.encode(passkey.cred_id());
        let already = sqlx::query("SELECT 1 FROM passkey_credentials WHERE credential_id = $1")
            .bind(&credential_id)
            .fetch_optional(db.pool())
            .await?;
        if already.is_some() {
            return Err(rejected_msg("this passkey is already registered".into()));
        }
        let info = PasskeyInfo {
            id: Uuid::new_v4().to_string(),
            label,
            created_ms: now_ms(),
            last_used_ms: None,
        };
        let json = serde_json::to_string(&passkey).map_err(unreadable)?;
        let inserted = sqlx::query(
            "INSERT INTO passkey_credentials (id, account_id, credential_id, user_handle, passkey, sign_count, label, created_ms)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&info.id)
        .bind(account_id)
        .bind(&credential_id)
        .bind(user_handle.to_string())
        .bind(json)
        .bind(0_i64)
        .bind(&info.label)
        .bind(info.created_ms)
        .execute(db.pool())
        .await;
        match inserted {
            Ok(_) => Ok(info),
            // Another node registered the same credential between the check and the insert.
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                Err(rejected_msg("this passkey is already registered".into()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Starts a passkey-only sign-in: the person picks one of their passkeys for this site
    /// without naming an account first.
    ///
    /// The options ask for conditional mediation (passkeys offered in the username field's
    /// autofill); a page with a "sign in with a passkey" button may drop `mediation` before
    /// calling `navigator.credentials.get`.
    pub async fn start_discoverable_authentication(
        &self,
        db: &Db,
    ) -> Result<CeremonyStarted, IdentityError> {
        let (rcr, state) = self
            .webauthn
            .start_discoverable_authentication()
            .map_err(setup)?;
        let challenge = serde_json::to_string(&rcr).map_err(|e| setup_msg(e.to_string()))?;
        let ceremony_id = put_ceremony(
            db,
            DISCOVERABLE,
            None,
            &CeremonyState::Discoverable { state },
        )
        .await?;
        Ok(CeremonyStarted {
            challenge,
            ceremony_id,
        })
    }

    /// Finishes a passkey-only sign-in with the browser's response (a `PublicKeyCredential`
    /// as JSON) and says whose passkey it was. The ceremony is used up whatever the outcome.
    pub async fn finish_discoverable_authentication(
        &self,
        db: &Db,
        ceremony_id: &str,
        response_json: &str,
    ) -> Result<PasskeySignIn, IdentityError> {
        let CeremonyState::Discoverable { state } =
            take_ceremony(db, ceremony_id, DISCOVERABLE, None).await?
        else {
            return Err(IdentityError::CeremonyUnknown);
        };
        let response = parse_assertion(response_json)?;
        let (user_handle, credential_id) = self
            .webauthn
            .identify_discoverable_authentication(&response)
            .map_err(rejected)?;
        let stored = load_by_credential(db, credential_id).await?;
        if stored.user_handle != user_handle.to_string() {
            return Err(rejected_msg(
                "the passkey's user handle is not its account's".into(),
            ));
        }
        let result = self
            .webauthn
            .finish_discoverable_authentication_v2(&response, state, &stored.passkey)
            .map_err(rejected)?;
        record_use(db, stored, &result).await
    }

    /// Starts a sign-in with one of a known account's passkeys, such as a step-up before a
    /// sensitive action. Fails with [`IdentityError::NoPasskey`] if it has none.
    pub async fn start_authentication(
        &self,
        db: &Db,
        account_id: &str,
    ) -> Result<CeremonyStarted, IdentityError> {
        let rows = sqlx::query("SELECT passkey FROM passkey_credentials WHERE account_id = $1")
            .bind(account_id)
            .fetch_all(db.pool())
            .await?;
        let passkeys = rows
            .iter()
            .map(|r| {
                let json: String = r.try_get("passkey")?;
                serde_json::from_str::<Passkey>(&json).map_err(unreadable)
            })
            .collect::<Result<Vec<_>, IdentityError>>()?;
        if passkeys.is_empty() {
            return Err(IdentityError::NoPasskey);
        }
        let (rcr, state) = self
            .webauthn
            .start_passkey_authentication(&passkeys)
            .map_err(setup)?;
        let challenge = serde_json::to_string(&rcr).map_err(|e| setup_msg(e.to_string()))?;
        let ceremony_id = put_ceremony(
            db,
            AUTHENTICATION,
            Some(account_id),
            &CeremonyState::Authentication { state },
        )
        .await?;
        Ok(CeremonyStarted {
            challenge,
            ceremony_id,
        })
    }

    /// Finishes a sign-in started by [`Passkeys::start_authentication`] for the same account.
    /// The ceremony is used up whatever the outcome.
    pub async fn finish_authentication(
        &self,
        db: &Db,
        ceremony_id: &str,
        account_id: &str,
        response_json: &str,
    ) -> Result<PasskeySignIn, IdentityError> {
        let CeremonyState::Authentication { state } =
            take_ceremony(db, ceremony_id, AUTHENTICATION, Some(account_id)).await?
        else {
            return Err(IdentityError::CeremonyUnknown);
        };
        let response = parse_assertion(response_json)?;
        let stored = load_by_credential(db, response.get_credential_id()).await?;
        if stored.account_id != account_id {
            return Err(rejected_msg(
                "the passkey is not registered to this account".into(),
            ));
        }
        // The user handle is optional here, but when present it must be this account's
        // (WebAuthn § 7.2, step 6).
        if let Some(handle) = response.get_user_unique_id()
            && Uuid::from_slice(handle).ok().map(|u| u.to_string())
                != Some(stored.user_handle.clone())
        {
            return Err(rejected_msg(
                "the passkey's user handle is not its account's".into(),
            ));
        }
        let result = self
            .webauthn
            .finish_passkey_authentication(&response, &state)
            .map_err(rejected)?;
        record_use(db, stored, &result).await
    }
}

/// The passkeys of an account, oldest first.
pub async fn list(db: &Db, account_id: &str) -> Result<Vec<PasskeyInfo>, IdentityError> {
    let rows = sqlx::query(
        "SELECT id, label, created_ms, last_used_ms FROM passkey_credentials
         WHERE account_id = $1 ORDER BY created_ms, id",
    )
    .bind(account_id)
    .fetch_all(db.pool())
    .await?;
    rows.iter()
        .map(|r| {
            Ok(PasskeyInfo {
                id: r.try_get("id")?,
                label: r.try_get("label")?,
                created_ms: r.try_get("created_ms")?,
                last_used_ms: r.try_get("last_used_ms")?,
            })
        })
        .collect::<Result<_, sqlx::Error>>()
        .map_err(Into::into)
}

/// Removes one of an account's passkeys. Returns whether it was there; a passkey of another
/// account is never removed.
pub async fn remove(db: &Db, account_id: &str, passkey_id: &str) -> Result<bool, IdentityError> {
    let done = sqlx::query("DELETE FROM passkey_credentials WHERE id = $1 AND account_id = $2")
        .bind(passkey_id)
        .bind(account_id)
        .execute(db.pool())
        .await?;
    Ok(done.rows_affected() == 1)
}

/// How many passkeys an account has.
pub async fn count(db: &Db, account_id: &str) -> Result<i64, IdentityError> {
    let row = sqlx::query("SELECT COUNT(*) AS n FROM passkey_credentials WHERE account_id = $1")
        .bind(account_id)
        .fetch_one(db.pool())
        .await?;
    Ok(row.try_get("n")?)
}

/// Stores a new ceremony and returns its id; drops expired ones on the way, so abandoned
/// ceremonies do not pile up.
async fn put_ceremony(
    db: &Db,
    kind: &str,
    account_id: Option<&str>,
    state: &CeremonyState,
) -> Result<String, IdentityError> {
    let now = now_ms();
    sqlx::query("DELETE FROM passkey_ceremonies WHERE expires_ms <= $1")
        .bind(now)
        .execute(db.pool())
        .await?;
    let id = Uuid::new_v4().to_string();
    let json = serde_json::to_string(state).map_err(unreadable)?;
    sqlx::query(
        "INSERT INTO passkey_ceremonies (id, kind, account_id, state, expires_ms) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&id)
    .bind(kind)
    .bind(account_id.map(str::to_string))
    .bind(json)
    .bind(now.saturating_add(ttl_ms()))
    .execute(db.pool())
    .await?;
    Ok(id)
}

/// Takes a ceremony out of the database: it can be taken once, by one node.
async fn take_ceremony(
    db: &Db,
    id: &str,
    kind: &str,
    account_id: Option<&str>,
) -> Result<CeremonyState, IdentityError> {
    // A ceremony started for another purpose or account is left alone, so that knowing its id
    // is not enough to spoil it.
    let (select, delete) = match account_id {
        Some(_) => (
            "SELECT state, expires_ms FROM passkey_ceremonies WHERE id = $1 AND kind = $2 AND account_id = $3",
            "DELETE FROM passkey_ceremonies WHERE id = $1 AND kind = $2 AND account_id = $3",
        ),
        None => (
            "SELECT state, expires_ms FROM passkey_ceremonies WHERE id = $1 AND kind = $2 AND account_id IS NULL",
            "DELETE FROM passkey_ceremonies WHERE id = $1 AND kind = $2 AND account_id IS NULL",
        ),
    };
    let mut query = sqlx::query(select).bind(id).bind(kind);
    if let Some(account) = account_id {
        query = query.bind(account);
    }
    let Some(row) = query.fetch_optional(db.pool()).await? else {
        return Err(IdentityError::CeremonyUnknown);
    };
    let mut query = sqlx::query(delete).bind(id).bind(kind);
    if let Some(account) = account_id {
        query = query.bind(account);
    }
    // Whoever deletes the row owns the ceremony; a second node that read it concurrently
    // deletes nothing and stops here.
    if query.execute(db.pool()).await?.rows_affected() != 1 {
        return Err(IdentityError::CeremonyUnknown);
    }
    let expires_ms: i64 = row.try_get("expires_ms")?;
    if expires_ms <= now_ms() {
        return Err(IdentityError::CeremonyExpired);
    }
    let state: String = row.try_get("state")?;
    serde_json::from_str(&state).map_err(unreadable)
}

async fn load_by_credential(db: &Db, credential_id: &[u8]) -> Result<StoredPasskey, IdentityError> {
    let row = sqlx::query(
        "SELECT id, account_id, user_handle, passkey FROM passkey_credentials WHERE credential_id = $1",
    )
    .bind(URL_SAFE_NO_PAD.encode(credential_id))
    .fetch_optional(db.pool())
    .await?;
    let Some(row) = row else {
        return Err(rejected_msg("unknown passkey".into()));
    };
    let json: String = row.try_get("passkey")?;
    Ok(StoredPasskey {
        id: row.try_get("id")?,
        account_id: row.try_get("account_id")?,
        user_handle: row.try_get("user_handle")?,
        passkey: serde_json::from_str(&json).map_err(unreadable)?,
    })
}

/// Records a verified sign-in: the new counter and backup state, and the time.
async fn record_use(
    db: &Db,
    mut stored: StoredPasskey,
    result: &AuthenticationResult,
) -> Result<PasskeySignIn, IdentityError> {
    // webauthn-rs enforces this through the policy; checked again because the assurance
    // level given to the sign-in rests on it.
    if !result.user_verified() {
        return Err(rejected_msg("the person was not verified".into()));
    }
    stored.passkey.update_credential(result);
    let json = serde_json::to_string(&stored.passkey).map_err(unreadable)?;
    let counter = i64::from(result.counter());
    // webauthn-rs compared the counter with the copy of the passkey the ceremony started
    // from, which another sign-in may have overtaken since; this compare-and-set against the
    // stored counter is what catches a cloned authenticator racing the original. Counters
    // that stay at zero are authenticators without one (most synced passkeys).
    let updated = sqlx::query(
        "UPDATE passkey_credentials SET passkey = $1, sign_count = $2, last_used_ms = $3
         WHERE id = $4 AND (sign_count < $2 OR ($2 = 0 AND sign_count = 0))",
    )
    .bind(json)
    .bind(counter)
    .bind(now_ms())
    .bind(&stored.id)
    .execute(db.pool())
    .await?;
    if updated.rows_affected() != 1 {
        let still_there = sqlx::query("SELECT 1 FROM passkey_credentials WHERE id = $1")
            .bind(&stored.id)
            .fetch_optional(db.pool())
            .await?;
        return Err(rejected_msg(if still_there.is_some() {
            "the signature counter went backwards: the passkey may have been cloned".into()
        } else {
            "the passkey was removed".into()
        }));
    }
    Ok(PasskeySignIn {
        account_id: stored.account_id,
        passkey_id: stored.id,
    })
}

fn parse_assertion(json: &str) -> Result<PublicKeyCredential, IdentityError> {
    serde_json::from_str(json).map_err(|e| rejected_msg(format!("not a sign-in response: {e}")))
}

fn check_label(label: &str) -> Result<String, IdentityError> {
    let label = label.trim();
    if label.is_empty() {
        return Err(IdentityError::InvalidLabel("it is empty".into()));
    }
    if label.chars().count() > MAX_LABEL_CHARS {
        return Err(IdentityError::InvalidLabel(format!(
            "it is longer than {MAX_LABEL_CHARS} characters"
        )));
    }
    if label.chars().any(char::is_control) {
        return Err(IdentityError::InvalidLabel(
            "it holds control characters".into(),
        ));
    }
    Ok(label.to_string())
}

fn ttl_ms() -> i64 {
    i64::try_from(CEREMONY_TTL.as_millis()).unwrap_or(i64::MAX)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn rejected(e: WebauthnError) -> IdentityError {
    IdentityError::PasskeyRejected(e.to_string())
}

fn rejected_msg(msg: String) -> IdentityError {
    IdentityError::PasskeyRejected(msg)
}

fn setup(e: WebauthnError) -> IdentityError {
    IdentityError::PasskeySetup(e.to_string())
}

fn setup_msg(msg: String) -> IdentityError {
    IdentityError::PasskeySetup(msg)
}

fn unreadable(e: impl std::fmt::Display) -> IdentityError {
    IdentityError::StoredPasskeyData(e.to_string())
}
