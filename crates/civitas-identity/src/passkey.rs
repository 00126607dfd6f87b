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

use std::time::Duration;

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
use crate::secret::now_ms;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::softkey::{SoftKey, SoftKeyError};

    const RP_ID: &str = "gov.example";
    const ORIGIN: &str = "https://id.gov.example";

    struct Fixture {
        db: Db,
        dir: Option<std::path::PathBuf>,
        passkeys: Passkeys,
    }

    impl Fixture {
        /// A fresh SQLite database in a temporary folder.
        async fn new(name: &str) -> Fixture {
            let dir = civitas_store::scratch::folder(&format!("passkey-{name}"));
            let url = format!("sqlite://{}?mode=rwc", dir.join("t.db").display());
            Fixture::on(&url, Some(dir)).await
        }

        async fn on(url: &str, dir: Option<std::path::PathBuf>) -> Fixture {
            let db = Db::connect(url, 2).await.unwrap();
            civitas_store::migrate(&db, &[crate::COMPONENT])
                .await
                .unwrap();
            for id in ["alice", "bob"] {
                sqlx::query(
                    "INSERT INTO accounts (id, kind, username, display_name, created_on) VALUES ($1, 'citizen', $1, $1, 'test')",
                )
                .bind(id)
                .execute(db.pool())
                .await
                .unwrap();
            }
            let passkeys = Passkeys::new(RP_ID, &Url::parse(ORIGIN).unwrap(), "Civitas").unwrap();
            Fixture { db, dir, passkeys }
        }

        async fn close(self) {
            self.db.close().await;
            if let Some(dir) = &self.dir {
                let _ = std::fs::remove_dir_all(dir);
            }
        }

        async fn register(
            &self,
            key: &mut SoftKey,
            account: &str,
            label: &str,
        ) -> Result<PasskeyInfo, IdentityError> {
            let started = self
                .passkeys
                .start_registration(&self.db, account, account, account)
                .await?;
            let response = key.register(&started.challenge).unwrap();
            self.passkeys
                .finish_registration(&self.db, &started.ceremony_id, account, &response, label)
                .await
        }

        async fn sign_in(&self, key: &mut SoftKey) -> Result<PasskeySignIn, IdentityError> {
            let started = self
                .passkeys
                .start_discoverable_authentication(&self.db)
                .await?;
            let response = key.sign_in(&started.challenge).unwrap();
            self.passkeys
                .finish_discoverable_authentication(&self.db, &started.ceremony_id, &response)
                .await
        }

        async fn step_up(
            &self,
            key: &mut SoftKey,
            account: &str,
        ) -> Result<PasskeySignIn, IdentityError> {
            let started = self
                .passkeys
                .start_authentication(&self.db, account)
                .await?;
            let response = key.sign_in(&started.challenge).unwrap();
            self.passkeys
                .finish_authentication(&self.db, &started.ceremony_id, account, &response)
                .await
        }

        async fn ceremonies(&self) -> i64 {
            sqlx::query("SELECT COUNT(*) AS n FROM passkey_ceremonies")
                .fetch_one(self.db.pool())
                .await
                .unwrap()
                .try_get("n")
                .unwrap()
        }
    }

    fn key() -> SoftKey {
        SoftKey::new(ORIGIN).unwrap()
    }

    #[track_caller]
    fn assert_rejected<T: std::fmt::Debug>(r: Result<T, IdentityError>) {
        match r {
            Err(IdentityError::PasskeyRejected(_)) => {}
            other => panic!("expected PasskeyRejected, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn registered_passkey_signs_in_without_and_with_a_username() {
        let f = Fixture::new("roundtrip").await;
        let mut key = key();
        let info = f.register(&mut key, "alice", " Laptop ").await.unwrap();
        assert_eq!(info.label, "Laptop");
        assert_eq!(info.last_used_ms, None);

        let started = f
            .passkeys
            .start_registration(&f.db, "bob", "bob", "Bob")
            .await
            .unwrap();
        let options: serde_json::Value = serde_json::from_str(&started.challenge).unwrap();
        let selection = &options["publicKey"]["authenticatorSelection"];
        assert_eq!(selection["residentKey"], "required");
        assert_eq!(selection["userVerification"], "required");

        let signed = f.sign_in(&mut key).await.unwrap();
        assert_eq!(
            signed,
            PasskeySignIn {
                account_id: "alice".into(),
                passkey_id: info.id.clone()
            }
        );
        let signed = f.step_up(&mut key, "alice").await.unwrap();
        assert_eq!(signed.account_id, "alice");
        // A second discoverable sign-in works too: the counter moved on.
        assert_eq!(f.sign_in(&mut key).await.unwrap().account_id, "alice");

        let listed = list(&f.db, "alice").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].id, info.id);
        assert!(listed[0].last_used_ms.is_some());
        assert_eq!(count(&f.db, "alice").await.unwrap(), 1);
        assert_eq!(count(&f.db, "bob").await.unwrap(), 0);
        f.close().await;
    }

    #[tokio::test]
    async fn localhost_over_http_works_as_integration_tests_use_it() {
        let mut f = Fixture::new("localhost").await;
        let origin = "http://localhost:38123";
        f.passkeys = Passkeys::new("localhost", &Url::parse(origin).unwrap(), "Civitas").unwrap();
        let mut key = SoftKey::new(origin).unwrap();
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        assert_eq!(f.sign_in(&mut key).await.unwrap().account_id, "alice");
        f.close().await;
    }

    #[tokio::test]
    async fn a_ceremony_started_on_one_node_finishes_on_another() {
        let f = Fixture::new("nodes").await;
        let other_db = Db::connect(
            &format!(
                "sqlite://{}?mode=rwc",
                f.dir.as_ref().unwrap().join("t.db").display()
            ),
            1,
        )
        .await
        .unwrap();
        let other = Passkeys::new(RP_ID, &Url::parse(ORIGIN).unwrap(), "Civitas").unwrap();
        let mut key = key();
        let started = f
            .passkeys
            .start_registration(&f.db, "alice", "alice", "Alice")
            .await
            .unwrap();
        let response = key.register(&started.challenge).unwrap();
        other
            .finish_registration(&other_db, &started.ceremony_id, "alice", &response, "Phone")
            .await
            .unwrap();
        other_db.close().await;
        assert_eq!(count(&f.db, "alice").await.unwrap(), 1);
        f.close().await;
    }

    #[tokio::test]
    async fn a_used_ceremony_is_refused() {
        let f = Fixture::new("replay").await;
        let mut key = key();
        let started = f
            .passkeys
            .start_registration(&f.db, "alice", "alice", "Alice")
            .await
            .unwrap();
        let response = key.register(&started.challenge).unwrap();
        f.passkeys
            .finish_registration(&f.db, &started.ceremony_id, "alice", &response, "Laptop")
            .await
            .unwrap();
        let again = f
            .passkeys
            .finish_registration(&f.db, &started.ceremony_id, "alice", &response, "Laptop")
            .await;
        assert!(
            matches!(again, Err(IdentityError::CeremonyUnknown)),
            "{again:?}"
        );

        let started = f
            .passkeys
            .start_discoverable_authentication(&f.db)
            .await
            .unwrap();
        let response = key.sign_in(&started.challenge).unwrap();
        f.passkeys
            .finish_discoverable_authentication(&f.db, &started.ceremony_id, &response)
            .await
            .unwrap();
        // The same response again, and a fresh one for the same challenge: both refused.
        let replay = f
            .passkeys
            .finish_discoverable_authentication(&f.db, &started.ceremony_id, &response)
            .await;
        assert!(
            matches!(replay, Err(IdentityError::CeremonyUnknown)),
            "{replay:?}"
        );
        let fresh = key.sign_in(&started.challenge).unwrap();
        let replay = f
            .passkeys
            .finish_discoverable_authentication(&f.db, &started.ceremony_id, &fresh)
            .await;
        assert!(
            matches!(replay, Err(IdentityError::CeremonyUnknown)),
            "{replay:?}"
        );
        assert_eq!(f.ceremonies().await, 0);
        f.close().await;
    }

    #[tokio::test]
    async fn a_failed_ceremony_is_used_up_too() {
        let f = Fixture::new("failed").await;
        let mut key = key();
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        let started = f
            .passkeys
            .start_discoverable_authentication(&f.db)
            .await
            .unwrap();
        let mut wrong = key.clone();
        wrong.replace_keys();
        let bad = wrong.sign_in(&started.challenge).unwrap();
        assert_rejected(
            f.passkeys
                .finish_discoverable_authentication(&f.db, &started.ceremony_id, &bad)
                .await,
        );
        let good = key.sign_in(&started.challenge).unwrap();
        let retry = f
            .passkeys
            .finish_discoverable_authentication(&f.db, &started.ceremony_id, &good)
            .await;
        assert!(
            matches!(retry, Err(IdentityError::CeremonyUnknown)),
            "{retry:?}"
        );
        f.close().await;
    }

    #[tokio::test]
    async fn a_ceremony_is_bound_to_its_purpose_and_account() {
        let f = Fixture::new("bound").await;
        let mut key = key();
        let started = f
            .passkeys
            .start_registration(&f.db, "alice", "alice", "Alice")
            .await
            .unwrap();
        let response = key.register(&started.challenge).unwrap();
        let as_bob = f
            .passkeys
            .finish_registration(&f.db, &started.ceremony_id, "bob", &response, "Laptop")
            .await;
        assert!(
            matches!(as_bob, Err(IdentityError::CeremonyUnknown)),
            "{as_bob:?}"
        );
        let as_sign_in = f
            .passkeys
            .finish_discoverable_authentication(&f.db, &started.ceremony_id, &response)
            .await;
        assert!(
            matches!(as_sign_in, Err(IdentityError::CeremonyUnknown)),
            "{as_sign_in:?}"
        );
        // Neither attempt spent it: Alice can still finish.
        f.passkeys
            .finish_registration(&f.db, &started.ceremony_id, "alice", &response, "Laptop")
            .await
            .unwrap();
        f.close().await;
    }

    #[tokio::test]
    async fn an_expired_ceremony_is_refused_and_dropped() {
        let f = Fixture::new("expired").await;
        let mut key = key();
        let started = f
            .passkeys
            .start_registration(&f.db, "alice", "alice", "Alice")
            .await
            .unwrap();
        let response = key.register(&started.challenge).unwrap();
        let expire = |id: String| {
            let db = f.db.clone();
            async move {
                sqlx::query("UPDATE passkey_ceremonies SET expires_ms = $1 WHERE id = $2")
                    .bind(now_ms() - 1)
                    .bind(id)
                    .execute(db.pool())
                    .await
                    .unwrap();
            }
        };
        expire(started.ceremony_id.clone()).await;
        let late = f
            .passkeys
            .finish_registration(&f.db, &started.ceremony_id, "alice", &response, "Laptop")
            .await;
        assert!(
            matches!(late, Err(IdentityError::CeremonyExpired)),
            "{late:?}"
        );
        let again = f
            .passkeys
            .finish_registration(&f.db, &started.ceremony_id, "alice", &response, "Laptop")
            .await;
        assert!(
            matches!(again, Err(IdentityError::CeremonyUnknown)),
            "{again:?}"
        );
        assert_eq!(count(&f.db, "alice").await.unwrap(), 0);

        // Abandoned ceremonies go when the next one starts.
        let abandoned = f
            .passkeys
            .start_discoverable_authentication(&f.db)
            .await
            .unwrap();
        expire(abandoned.ceremony_id).await;
        f.passkeys
            .start_discoverable_authentication(&f.db)
            .await
            .unwrap();
        assert_eq!(f.ceremonies().await, 1);
        f.close().await;
    }

    #[tokio::test]
    async fn a_response_from_another_origin_is_refused() {
        let f = Fixture::new("origin").await;
        let mut phished = SoftKey::new("https://id.gov.example.evil.test").unwrap();
        assert_rejected(f.register(&mut phished, "alice", "Laptop").await);
        assert_eq!(count(&f.db, "alice").await.unwrap(), 0);

        let mut key = key();
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        key.set_origin("https://evil.test").unwrap();
        assert_rejected(f.sign_in(&mut key).await);
        assert_rejected(f.step_up(&mut key, "alice").await);
        f.close().await;
    }

    #[tokio::test]
    async fn a_signature_by_another_key_is_refused() {
        let f = Fixture::new("key").await;
        let mut key = key();
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        key.replace_keys();
        assert_rejected(f.sign_in(&mut key).await);
        assert_rejected(f.step_up(&mut key, "alice").await);
        f.close().await;
    }

    #[tokio::test]
    async fn a_passkey_without_user_verification_is_refused() {
        let f = Fixture::new("uv").await;
        let mut key = key();
        key.set_user_verification(false);
        assert_rejected(f.register(&mut key, "alice", "Laptop").await);
        key.set_user_verification(true);
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        key.set_user_verification(false);
        assert_rejected(f.sign_in(&mut key).await);
        assert_rejected(f.step_up(&mut key, "alice").await);
        f.close().await;
    }

    #[tokio::test]
    async fn a_cloned_authenticator_is_refused() {
        let f = Fixture::new("clone").await;
        let mut key = key();
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        let mut clone = key.clone();
        let mut second_clone = key.clone();
        f.sign_in(&mut key).await.unwrap();
        // The clones' counters (1) are not above the stored one (1).
        assert_rejected(f.sign_in(&mut clone).await);
        assert_rejected(f.step_up(&mut second_clone, "alice").await);
        // The original carries on.
        f.step_up(&mut key, "alice").await.unwrap();
        f.close().await;
    }

    #[tokio::test]
    async fn a_clone_racing_the_original_through_an_older_ceremony_is_refused() {
        let f = Fixture::new("race").await;
        let mut key = key();
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        let mut clone = key.clone();
        // The step-up ceremony holds the passkey as it is now, counter 0 ...
        let started = f
            .passkeys
            .start_authentication(&f.db, "alice")
            .await
            .unwrap();
        // ... then the original signs in elsewhere and the stored counter becomes 1 ...
        f.sign_in(&mut key).await.unwrap();
        // ... so the clone's counter 1 beats the ceremony's copy but not the database.
        let response = clone.sign_in(&started.challenge).unwrap();
        assert_rejected(
            f.passkeys
                .finish_authentication(&f.db, &started.ceremony_id, "alice", &response)
                .await,
        );
        f.close().await;
    }

    #[tokio::test]
    async fn another_accounts_passkey_does_not_step_up_this_one() {
        let f = Fixture::new("other").await;
        let mut alice = key();
        let mut bob = key();
        f.register(&mut alice, "alice", "Laptop").await.unwrap();
        f.register(&mut bob, "bob", "Phone").await.unwrap();
        let started = f
            .passkeys
            .start_authentication(&f.db, "alice")
            .await
            .unwrap();
        // Bob's authenticator answers as if no credential had been named.
        let mut options: serde_json::Value = serde_json::from_str(&started.challenge).unwrap();
        options["publicKey"]["allowCredentials"] = serde_json::json!([]);
        let response = bob.sign_in(&options.to_string()).unwrap();
        assert_rejected(
            f.passkeys
                .finish_authentication(&f.db, &started.ceremony_id, "alice", &response)
                .await,
        );
        f.close().await;
    }

    #[tokio::test]
    async fn a_passkey_the_browser_says_is_not_discoverable_is_refused() {
        let f = Fixture::new("rk").await;
        let mut key = key();
        let started = f
            .passkeys
            .start_registration(&f.db, "alice", "alice", "Alice")
            .await
            .unwrap();
        let mut response: serde_json::Value =
            serde_json::from_str(&key.register(&started.challenge).unwrap()).unwrap();
        assert_eq!(response["extensions"]["credProps"]["rk"], true);
        response["extensions"]["credProps"]["rk"] = false.into();
        assert_rejected(
            f.passkeys
                .finish_registration(
                    &f.db,
                    &started.ceremony_id,
                    "alice",
                    &response.to_string(),
                    "Laptop",
                )
                .await,
        );
        f.close().await;
    }

    #[tokio::test]
    async fn a_user_handle_that_is_not_the_accounts_is_refused() {
        let f = Fixture::new("handle").await;
        let mut key = key();
        f.register(&mut key, "alice", "Laptop").await.unwrap();
        // The user handle is outside the signature, so a tampered one still verifies.
        let other = URL_SAFE_NO_PAD.encode(Uuid::new_v4().as_bytes());
        let tamper = |json: String| {
            let mut v: serde_json::Value = serde_json::from_str(&json).unwrap();
            v["response"]["userHandle"] = other.clone().into();
            v.to_string()
        };
        let started = f
            .passkeys
            .start_discoverable_authentication(&f.db)
            .await
            .unwrap();
        let response = tamper(key.sign_in(&started.challenge).unwrap());
        assert_rejected(
            f.passkeys
                .finish_discoverable_authentication(&f.db, &started.ceremony_id, &response)
                .await,
        );
        let started = f
            .passkeys
            .start_authentication(&f.db, "alice")
            .await
            .unwrap();
        let response = tamper(key.sign_in(&started.challenge).unwrap());
        assert_rejected(
            f.passkeys
                .finish_authentication(&f.db, &started.ceremony_id, "alice", &response)
                .await,
        );
        f.close().await;
    }

    #[tokio::test]
    async fn registered_passkeys_are_excluded_and_removable() {
        let f = Fixture::new("manage").await;
        let mut laptop = key();
        let mut phone = key();
        let first = f.register(&mut laptop, "alice", "Laptop").await.unwrap();
        f.register(&mut phone, "alice", "Phone").await.unwrap();

        let started = f
            .passkeys
            .start_registration(&f.db, "alice", "alice", "Alice")
            .await
            .unwrap();
        assert!(matches!(
            laptop.register(&started.challenge),
            Err(SoftKeyError::Excluded)
        ));
        assert_eq!(laptop.credential_count(), 1);

        let labels: Vec<String> = list(&f.db, "alice")
            .await
            .unwrap()
            .into_iter()
            .map(|p| p.label)
            .collect();
        assert_eq!(labels, ["Laptop", "Phone"]);

        assert!(!remove(&f.db, "bob", &first.id).await.unwrap());
        assert!(remove(&f.db, "alice", &first.id).await.unwrap());
        assert!(!remove(&f.db, "alice", &first.id).await.unwrap());
        assert_eq!(count(&f.db, "alice").await.unwrap(), 1);
        assert_rejected(f.sign_in(&mut laptop).await);
        assert_eq!(f.sign_in(&mut phone).await.unwrap().account_id, "alice");

        let listed = list(&f.db, "alice").await.unwrap();
        assert!(remove(&f.db, "alice", &listed[0].id).await.unwrap());
        assert!(matches!(
            f.passkeys.start_authentication(&f.db, "alice").await,
            Err(IdentityError::NoPasskey)
        ));
        f.close().await;
    }

    #[tokio::test]
    async fn bad_inputs_are_named() {
        let f = Fixture::new("inputs").await;
        assert!(matches!(
            f.passkeys
                .start_registration(&f.db, "nobody", "nobody", "Nobody")
                .await,
            Err(IdentityError::UnknownAccount(_))
        ));
        let mut key = key();
        for label in ["", "   ", "a\u{7}b", &"x".repeat(MAX_LABEL_CHARS + 1)] {
            assert!(matches!(
                f.register(&mut key, "alice", label).await,
                Err(IdentityError::InvalidLabel(_))
            ));
        }
        let started = f
            .passkeys
            .start_discoverable_authentication(&f.db)
            .await
            .unwrap();
        assert_rejected(
            f.passkeys
                .finish_discoverable_authentication(&f.db, &started.ceremony_id, "{}")
                .await,
        );
        assert!(matches!(
            Passkeys::new(
                "gov.example",
                &Url::parse("https://other.test").unwrap(),
                "x"
            ),
            Err(IdentityError::PasskeySetup(_))
        ));
        f.close().await;
    }

    /// A fresh PostgreSQL database, when `CIVITAS_TEST_POSTGRES_URL` names a server.
    async fn postgres(name: &str) -> Option<String> {
        civitas_store::scratch::test_postgres(&format!("passkey_{name}")).await
    }

    #[tokio::test]
    async fn on_postgres_passkeys_register_sign_in_and_refuse_clones_and_replays() {
        let Some(url) = postgres("passkeys").await else {
            return;
        };
        let f = Fixture::on(&url, None).await;
        let mut key = key();
        let info = f.register(&mut key, "alice", "Laptop").await.unwrap();
        let mut clone = key.clone();
        let step_up = f
            .passkeys
            .start_authentication(&f.db, "alice")
            .await
            .unwrap();
        assert_eq!(f.sign_in(&mut key).await.unwrap().account_id, "alice");
        let response = clone.sign_in(&step_up.challenge).unwrap();
        assert_rejected(
            f.passkeys
                .finish_authentication(&f.db, &step_up.ceremony_id, "alice", &response)
                .await,
        );
        let replay = f
            .passkeys
            .finish_authentication(&f.db, &step_up.ceremony_id, "alice", &response)
            .await;
        assert!(
            matches!(replay, Err(IdentityError::CeremonyUnknown)),
            "{replay:?}"
        );
        assert_eq!(
            f.step_up(&mut key, "alice").await.unwrap().passkey_id,
            info.id
        );

        let listed = list(&f.db, "alice").await.unwrap();
        assert_eq!(listed.len(), 1);
        assert!(listed[0].last_used_ms.is_some());
        assert!(remove(&f.db, "alice", &info.id).await.unwrap());
        assert_eq!(count(&f.db, "alice").await.unwrap(), 0);
        f.close().await;
    }
}
