//! [`Identity`]: the block's API. Sign-in, registration, sessions, step-up, second factors
//! and mandates, each consequential step appended to the ledger (never a secret, and a
//! person only by their subject tag).

use std::sync::Arc;

use civitas_ledger::{Event, Ledger};
use civitas_store::Db;
use civitas_store::sqlx::{self, Row};

use crate::StaffRole;
use crate::accounts::{self, Account, AccountKind, Registration, normalise_username};
use crate::courier::Courier;
use crate::mandate::{self, GrantRequest, Granted, Principal};
use crate::passkey::{self, CeremonyStarted, PasskeyInfo, Passkeys};
use crate::secret::{self, hash, now_ms, token};
use crate::session::{self, ClientInfo, SessionInfo, Timeouts};
use crate::{IdentityError, Loa, password, throttle, totp};

/// How the identity block behaves.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Session timeouts.
    pub timeouts: Timeouts,
    /// Name shown in authenticator apps and messages.
    pub issuer_name: String,
    /// The passkey relying party, when the site has a domain name (WebAuthn refuses IP
    /// addresses as relying-party ids); `None` turns passkeys off.
    pub passkeys: Option<Passkeys>,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            timeouts: Timeouts {
                idle_ms: 30 * 60_000,
                absolute_ms: 12 * 3_600_000,
            },
            issuer_name: "Civitas".into(),
            passkeys: None,
        }
    }
}

/// The identity block, shared by every request handler.
#[derive(Clone)]
pub struct Identity {
    db: Db,
    ledger: Ledger,
    settings: Arc<IdentitySettings>,
    courier: Option<Arc<dyn Courier>>,
}

/// A signed-in session: the cookie token (give it to the browser, never log it) and what
/// it stands for.
#[derive(Debug, Clone)]
pub struct SignInOutcome {
    /// The cookie's value.
    pub token: String,
    /// The session.
    pub session: SessionInfo,
}

/// Where a sign-in stands after the password.
#[derive(Debug, Clone)]
pub enum SignInStep {
    /// Signed in.
    Done(Box<SignInOutcome>),
    /// The account has a second factor: ask for it, carrying this token (five minutes).
    SecondFactor {
        /// Identifies the half-finished sign-in.
        pending_token: String,
    },
}

/// How long a half-finished sign-in (password done, second factor not yet) lasts.
const PENDING_MS: i64 = 5 * 60_000;
/// How long a registration code lasts, and how many guesses it allows.
const REGISTRATION_MS: i64 = 10 * 60_000;
const REGISTRATION_ATTEMPTS: i64 = 5;
/// Recovery codes made at a time.
pub const RECOVERY_CODES: usize = 10;

impl Identity {
    /// The identity block over `db`, appending its events to `ledger`, sending codes through
    /// `courier` when one is configured.
    pub fn new(
        db: Db,
        ledger: Ledger,
        settings: IdentitySettings,
        courier: Option<Arc<dyn Courier>>,
    ) -> Identity {
        Identity {
            db,
            ledger,
            settings: Arc::new(settings),
            courier,
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// The courier one-time codes and alerts go by, if any.
    pub(crate) fn courier(&self) -> Option<Arc<dyn Courier>> {
        self.courier.clone()
    }

    pub(crate) fn db(&self) -> &Db {
        &self.db
    }

    /// The name people know this service by ("Civitas").
    pub(crate) fn issuer_name(&self) -> &str {
        &self.settings.issuer_name
    }

    async fn record(&self, event: Event, subject_ref: Option<&str>) -> Result<u64, IdentityError> {
        let event = match subject_ref {
            Some(r) => event.about(self.ledger.subject_secret(r).await?.tag()),
            None => event,
        };
        Ok(self.ledger.append(&event).await?)
    }

    /// Appends an event about a person on behalf of another block's web handler: `actor` is
    /// the account acting, `subject_ref` whom it is about.
    pub async fn record_event(
        &self,
        event: Event,
        subject_ref: Option<&str>,
    ) -> Result<u64, IdentityError> {
        self.record(event, subject_ref).await
    }

    /// Finds an account by id.
    pub async fn account(&self, id: &str) -> Result<Option<Account>, IdentityError> {
        accounts::by_id(&self.db, id).await
    }

    /// An agency's staff in a role.
    pub async fn staff_of(
        &self,
        agency: &str,
        role: StaffRole,
    ) -> Result<Vec<Account>, IdentityError> {
        accounts::staff_of(&self.db, agency, role.code()).await
    }

    /// Tells a staff member of their work (a case due soon, one past its date) at their work
    /// address, through the courier; false when there is no courier.
    pub async fn tell_staff(
        &self,
        to: &Account,
        subject: &str,
        body: &str,
    ) -> Result<bool, IdentityError> {
        let Some(courier) = self.courier() else {
            return Ok(false);
        };
        let address = to.email.clone().unwrap_or_else(|| to.username.clone());
        courier.send(&address, subject, body).await?;
        Ok(true)
    }

    /// Finds an enabled account by what its holder types to sign in (national ID or
    /// e-mail address, in any case).
    pub async fn account_named(&self, identifier: &str) -> Result<Option<Account>, IdentityError> {
        Ok(
            accounts::by_username(&self.db, &normalise_username(identifier))
                .await?
                .map(|(a, _)| a),
        )
    }

    // ----- password sign-in -------------------------------------------------------------

    /// Checks an identifier and password. Locks the account and the client address after
    /// repeated failures (with doubling waits); a wrong identifier costs the same time as a
    /// wrong password. Logs success and failure (never the password).
    pub async fn sign_in_password(
        &self,
        identifier: &str,
        password_typed: &str,
        client: &ClientInfo,
    ) -> Result<SignInStep, IdentityError> {
        let username = normalise_username(identifier);
        let account_key = format!("user:{username}");
        let address_key = format!("ip:{}", client.ip);
        let record = accounts::for_sign_in(&self.db, &username, &account_key, &address_key).await?;
        let had_failures = record.throttle.verdict()?;
        let found = record.account;
        let stored = match found.as_ref().and_then(|(_, h)| h.clone()) {
            Some(h) => h,
            None => password::decoy_hash().await?.to_string(),
        };
        let ok = password::verify_async(password_typed, &stored).await?;
        let account = match (found, ok) {
            (Some((account, Some(_))), true) => account,
            (found, _) => {
                throttle::fail(&self.db, &account_key, throttle::ACCOUNT_FREE_FAILURES).await?;
                throttle::fail(&self.db, &address_key, throttle::ADDRESS_FREE_FAILURES).await?;
                let subject = found.as_ref().map(|(a, _)| a.subject_ref());
                let event = Event::new("identity.sign_in_failed", "anonymous", "session")
                    .with("method", "password")
                    .with(
                        "reason",
                        if subject.is_some() {
                            "wrong_password"
                        } else {
                            "unknown_account"
                        },
                    );
                self.record(event, subject.as_deref()).await?;
                return Err(IdentityError::BadCredentials);
            }
        };
        if had_failures {
            throttle::clear(&self.db, &account_key).await?;
        }
        if record.has_totp {
            let pending = token(32);
            sqlx::query("INSERT INTO pending_sign_ins (token_hash, account_id, amr, expires_ms) VALUES ($1, $2, $3, $4)")
                .bind(hash(&pending))
                .bind(&account.id)
                .bind("pwd")
                .bind(now_ms() + PENDING_MS)
                .execute(self.db.pool())
                .await?;
            return Ok(SignInStep::SecondFactor {
                pending_token: pending,
            });
        }
        let outcome = self
            .start_session(&account, Loa::Low, &["pwd"], client)
            .await?;
        Ok(SignInStep::Done(Box::new(outcome)))
    }

    /// Finishes a sign-in with the second factor: a TOTP code (level substantial) or a
    /// recovery code (level low; the person should set up a new authenticator).
    pub async fn sign_in_second_factor(
        &self,
        pending_token: &str,
        code: &str,
        client: &ClientInfo,
    ) -> Result<SignInOutcome, IdentityError> {
        let row = sqlx::query(
            "SELECT account_id, expires_ms FROM pending_sign_ins WHERE token_hash = $1",
        )
        .bind(hash(pending_token))
        .fetch_optional(self.db.pool())
        .await?;
        let Some(row) = row else {
            return Err(IdentityError::Expired);
        };
        let account_id: String = row.try_get("account_id")?;
        if row.try_get::<i64, _>("expires_ms")? < now_ms() {
            self.drop_pending(pending_token).await?;
            return Err(IdentityError::Expired);
        }
        let account = accounts::by_id(&self.db, &account_id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        let account_key = format!("user:{}", account.username);
        let had_failures = throttle::check(&self.db, &account_key).await?;
        let method = if self.check_totp(&account.id, code).await? {
            Some((Loa::Substantial, "otp"))
        } else if self.use_recovery_code(&account.id, code).await? {
            Some((Loa::Low, "rec"))
        } else {
            None
        };
        let Some((loa, method)) = method else {
            throttle::fail(&self.db, &account_key, throttle::ACCOUNT_FREE_FAILURES).await?;
            let event = Event::new("identity.sign_in_failed", "anonymous", "session")
                .with("method", "otp")
                .with("reason", "wrong_code");
            self.record(event, Some(&account.subject_ref())).await?;
            return Err(IdentityError::BadCredentials);
        };
        if had_failures {
            throttle::clear(&self.db, &account_key).await?;
        }
        self.drop_pending(pending_token).await?;
        self.start_session(&account, loa, &["pwd", method], client)
            .await
    }

    async fn drop_pending(&self, pending_token: &str) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM pending_sign_ins WHERE token_hash = $1 OR expires_ms < $2")
            .bind(hash(pending_token))
            .bind(now_ms())
            .execute(self.db.pool())
            .await?;
        Ok(())
    }

    /// Starts a session for an account that has just proved itself (a password, a passkey)
    /// and logs the sign-in. Each sign-in gets a new session id and token.
    pub async fn start_session(
        &self,
        account: &Account,
        loa: Loa,
        amr: &[&str],
        client: &ClientInfo,
    ) -> Result<SignInOutcome, IdentityError> {
        let (token, session, insert) =
            session::create(account, loa, amr, client, self.settings.timeouts);
        let event = Event::new(
            "identity.signed_in",
            &format!("account:{}", account.id),
            "session",
        )
        .with("session", session.id.clone())
        .with("loa", loa.code())
        .with("amr", amr.iter().map(|s| s.to_string()).collect::<Vec<_>>());
        // The session and its event commit together, in the ledger's batch.
        let event = event.about(
            self.ledger
                .subject_secret(&account.subject_ref())
                .await?
                .tag(),
        );
        self.ledger.append_with(&event, insert).await?;
        if self.courier.is_some() {
            let (me, account, id, agent) = (
                self.clone(),
                account.clone(),
                session.id.clone(),
                client.user_agent.clone(),
            );
            tokio::spawn(async move { me.alert_new_browser(&account, &id, &agent).await });
        }
        Ok(SignInOutcome { token, session })
    }

    /// The live session of a cookie token, if any.
    pub async fn session(&self, cookie_token: &str) -> Result<Option<SessionInfo>, IdentityError> {
        session::lookup(&self.db, cookie_token, self.settings.timeouts).await
    }

    /// The account's live sessions.
    pub async fn sessions(&self, account: &Account) -> Result<Vec<SessionInfo>, IdentityError> {
        session::list(&self.db, account).await
    }

    /// Ends one of the account's sessions. `NotFound` when it is not theirs or already over.
    pub async fn end_session(
        &self,
        account: &Account,
        session_id: &str,
        reason: &str,
    ) -> Result<(), IdentityError> {
        let theirs = session::list(&self.db, account)
            .await?
            .iter()
            .any(|s| s.id == session_id);
        if !theirs || !session::end(&self.db, session_id, reason).await? {
            return Err(IdentityError::NotFound);
        }
        let event = Event::new(
            "identity.signed_out",
            &format!("account:{}", account.id),
            "session",
        )
        .with("session", session_id)
        .with("reason", reason);
        self.record(event, Some(&account.subject_ref())).await?;
        Ok(())
    }

    /// Raises a session's level of assurance after a second proof; returns the new cookie
    /// token. Logs the step-up.
    pub async fn step_up(
        &self,
        current: &SessionInfo,
        loa: Loa,
        method: &str,
    ) -> Result<SignInOutcome, IdentityError> {
        let (token, session) = session::step_up(&self.db, current, loa, method).await?;
        let event = Event::new(
            "identity.stepped_up",
            &format!("account:{}", current.account.id),
            "session",
        )
        .with("session", current.id.clone())
        .with("from", current.loa.code())
        .with("to", session.loa.code())
        .with("method", method);
        self.record(event, Some(&current.account.subject_ref()))
            .await?;
        Ok(SignInOutcome { token, session })
    }

    /// Steps a session up with a TOTP code (to substantial).
    pub async fn step_up_totp(
        &self,
        current: &SessionInfo,
        code: &str,
    ) -> Result<SignInOutcome, IdentityError> {
        let key = format!("user:{}", current.account.username);
        let had_failures = throttle::check(&self.db, &key).await?;
        if !self.check_totp(&current.account.id, code).await? {
            throttle::fail(&self.db, &key, throttle::ACCOUNT_FREE_FAILURES).await?;
            let event = Event::new(
                "identity.step_up_failed",
                &format!("account:{}", current.account.id),
                "session",
            )
            .with("method", "otp");
            self.record(event, Some(&current.account.subject_ref()))
                .await?;
            return Err(IdentityError::BadCredentials);
        }
        if had_failures {
            throttle::clear(&self.db, &key).await?;
        }
        self.step_up(current, Loa::Substantial, "otp").await
    }

    /// The level a verified passkey earns for this account: high for a citizen verified
    /// against the population register, substantial otherwise.
    pub fn passkey_level(account: &Account) -> Loa {
        if account.kind == AccountKind::Citizen && account.person_id.is_some() {
            Loa::High
        } else {
            Loa::Substantial
        }
    }

    // ----- passkeys ---------------------------------------------------------------------

    /// Whether passkeys are available on this site.
    pub fn passkeys_enabled(&self) -> bool {
        self.settings.passkeys.is_some()
    }

    fn relying_party(&self) -> Result<&Passkeys, IdentityError> {
        self.settings.passkeys.as_ref().ok_or_else(|| {
            IdentityError::PasskeySetup(
                "passkeys are off: the site has no domain name to be their relying party".into(),
            )
        })
    }

    /// Starts a passkey-only sign-in (no account named). Refused while the client address
    /// is locked after repeated failures.
    pub async fn start_passkey_sign_in(
        &self,
        client: &ClientInfo,
    ) -> Result<CeremonyStarted, IdentityError> {
        let rp = self.relying_party()?;
        throttle::check(&self.db, &format!("ip:{}", client.ip)).await?;
        rp.start_discoverable_authentication(&self.db).await
    }

    /// Finishes a passkey-only sign-in: a verified passkey starts a session at
    /// [`Identity::passkey_level`] with amr `hwk user` (possession of the authenticator and
    /// its PIN or biometric). A refused passkey is logged (never the credential or the
    /// challenge) and counted against the client address.
    pub async fn finish_passkey_sign_in(
        &self,
        ceremony_id: &str,
        response_json: &str,
        client: &ClientInfo,
    ) -> Result<SignInOutcome, IdentityError> {
        let rp = self.relying_party()?;
        let address_key = format!("ip:{}", client.ip);
        throttle::check(&self.db, &address_key).await?;
        let signed = match rp
            .finish_discoverable_authentication(&self.db, ceremony_id, response_json)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                if let Some(reason) = passkey_refusal(&e) {
                    throttle::fail(&self.db, &address_key, throttle::ADDRESS_FREE_FAILURES).await?;
                    let event = Event::new("identity.sign_in_failed", "anonymous", "session")
                        .with("method", "passkey")
                        .with("reason", reason);
                    self.record(event, None).await?;
                }
                return Err(e);
            }
        };
        let account = accounts::by_id(&self.db, &signed.account_id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        self.start_session(
            &account,
            Self::passkey_level(&account),
            &["hwk", "user"],
            client,
        )
        .await
    }

    /// Starts registering a passkey on the signed-in account.
    pub async fn start_passkey_registration(
        &self,
        session: &SessionInfo,
    ) -> Result<CeremonyStarted, IdentityError> {
        let a = &session.account;
        self.relying_party()?
            .start_registration(&self.db, &a.id, &a.username, &a.display_name)
            .await
    }

    /// Finishes registering a passkey on the signed-in account under `label`. Logged.
    pub async fn finish_passkey_registration(
        &self,
        session: &SessionInfo,
        ceremony_id: &str,
        response_json: &str,
        label: &str,
    ) -> Result<PasskeyInfo, IdentityError> {
        let a = &session.account;
        let info = self
            .relying_party()?
            .finish_registration(&self.db, ceremony_id, &a.id, response_json, label)
            .await?;
        let event = Event::new(
            "identity.passkey_added",
            &format!("account:{}", a.id),
            "account",
        )
        .with("passkey", info.id.clone());
        self.record(event, Some(&a.subject_ref())).await?;
        Ok(info)
    }

    /// The account's passkeys, oldest first.
    pub async fn passkeys_of(&self, account_id: &str) -> Result<Vec<PasskeyInfo>, IdentityError> {
        passkey::list(&self.db, account_id).await
    }

    /// Removes one of the signed-in account's passkeys; `NotFound` when it is not theirs.
    /// Logged.
    pub async fn remove_passkey(
        &self,
        session: &SessionInfo,
        passkey_id: &str,
    ) -> Result<(), IdentityError> {
        let a = &session.account;
        if !passkey::remove(&self.db, &a.id, passkey_id).await? {
            return Err(IdentityError::NotFound);
        }
        let event = Event::new(
            "identity.passkey_removed",
            &format!("account:{}", a.id),
            "account",
        )
        .with("passkey", passkey_id);
        self.record(event, Some(&a.subject_ref())).await?;
        Ok(())
    }

    /// Starts a step-up with one of the signed-in account's passkeys.
    pub async fn start_passkey_step_up(
        &self,
        session: &SessionInfo,
    ) -> Result<CeremonyStarted, IdentityError> {
        let rp = self.relying_party()?;
        throttle::check(&self.db, &format!("user:{}", session.account.username)).await?;
        rp.start_authentication(&self.db, &session.account.id).await
    }

    /// Finishes a passkey step-up: the session rises to [`Identity::passkey_level`] with a
    /// new token. A refused passkey is logged and counted against the account.
    pub async fn finish_passkey_step_up(
        &self,
        session: &SessionInfo,
        ceremony_id: &str,
        response_json: &str,
    ) -> Result<SignInOutcome, IdentityError> {
        let rp = self.relying_party()?;
        let key = format!("user:{}", session.account.username);
        let had_failures = throttle::check(&self.db, &key).await?;
        if let Err(e) = rp
            .finish_authentication(&self.db, ceremony_id, &session.account.id, response_json)
            .await
        {
            if let Some(reason) = passkey_refusal(&e) {
                throttle::fail(&self.db, &key, throttle::ACCOUNT_FREE_FAILURES).await?;
                let event = Event::new(
                    "identity.step_up_failed",
                    &format!("account:{}", session.account.id),
                    "session",
                )
                .with("method", "passkey")
                .with("reason", reason);
                self.record(event, Some(&session.account.subject_ref()))
                    .await?;
            }
            return Err(e);
        }
        if had_failures {
            throttle::clear(&self.db, &key).await?;
        }
        self.step_up(session, Self::passkey_level(&session.account), "hwk")
            .await
    }

    // ----- registration -----------------------------------------------------------------

    /// Starts a citizen's registration: the identification number and date of birth must
    /// match the population register, and a code goes to the contact details it holds.
    pub async fn start_registration(
        &self,
        national_id: &str,
        birth_date: &str,
        client: &ClientInfo,
    ) -> Result<Registration, IdentityError> {
        let address_key = format!("register:{}", client.ip);
        throttle::check(&self.db, &address_key).await?;
        let nid = national_id.trim().to_uppercase();
        let person = match civitas_registry::person_by_national_id(&self.db, &nid).await? {
            Some(p) if p.birth_date == birth_date.trim() && p.death_date.is_none() => p,
            _ => {
                throttle::fail(&self.db, &address_key, throttle::ACCOUNT_FREE_FAILURES).await?;
                return Err(IdentityError::Invalid(
                    "the identification number and date of birth do not match the population register".into(),
                ));
            }
        };
        let taken = sqlx::query("SELECT 1 AS x FROM accounts WHERE person_id = $1")
            .bind(person.id)
            .fetch_optional(self.db.pool())
            .await?;
        if taken.is_some() {
            return Err(IdentityError::AlreadyRegistered);
        }
        let Some(to) = person.email.clone().or(person.phone.clone()) else {
            return Err(IdentityError::NoContact);
        };
        let courier = self.courier.as_ref().ok_or(IdentityError::NoCourier)?;
        let code = format!("{:06}", secret::below(1_000_000));
        let id = token(18);
        sqlx::query("INSERT INTO registrations (id, person_id, code_hash, attempts, sent_to, expires_ms) VALUES ($1, $2, $3, 0, $4, $5)")
            .bind(&id)
            .bind(person.id)
            .bind(hash(&format!("{id}:{code}")))
            .bind(&to)
            .bind(now_ms() + REGISTRATION_MS)
            .execute(self.db.pool())
            .await?;
        let body = format!(
            "您的 {issuer} 註冊驗證碼是 {code}，10 分鐘內有效。\nYour {issuer} registration code is {code}. It is valid for 10 minutes.\n如果您沒有申請，請忽略這封信。 If you did not ask for it, ignore this message.",
            issuer = self.settings.issuer_name
        );
        courier
            .send(
                &to,
                &format!("{} registration code", self.settings.issuer_name),
                &body,
            )
            .await?;
        let event = Event::new("identity.registration_started", "anonymous", "account")
            .with("channel", if to.contains('@') { "email" } else { "sms" });
        self.record(event, Some(&format!("person:{}", person.id)))
            .await?;
        Ok(Registration {
            id,
            sent_to: accounts::mask_address(&to),
        })
    }

    /// Completes a registration with the code and a chosen password: creates the citizen's
    /// account, linked to their register record, and signs them in (level low).
    pub async fn complete_registration(
        &self,
        registration_id: &str,
        code: &str,
        new_password: &str,
        client: &ClientInfo,
    ) -> Result<SignInOutcome, IdentityError> {
        let row = sqlx::query("SELECT person_id, code_hash, attempts, expires_ms, verified_ms FROM registrations WHERE id = $1")
            .bind(registration_id)
            .fetch_optional(self.db.pool())
            .await?
            .ok_or(IdentityError::Expired)?;
        let person_id: i64 = row.try_get("person_id")?;
        let attempts: i64 = row.try_get("attempts")?;
        let verified: Option<i64> = row.try_get("verified_ms")?;
        if verified.is_some()
            || row.try_get::<i64, _>("expires_ms")? < now_ms()
            || attempts >= REGISTRATION_ATTEMPTS
        {
            return Err(IdentityError::Expired);
        }
        let stored: String = row.try_get("code_hash")?;
        let given = hash(&format!("{registration_id}:{}", code.trim()));
        if !bool::from(subtle::ConstantTimeEq::ct_eq(
            stored.as_bytes(),
            given.as_bytes(),
        )) {
            sqlx::query("UPDATE registrations SET attempts = attempts + 1 WHERE id = $1")
                .bind(registration_id)
                .execute(self.db.pool())
                .await?;
            return Err(IdentityError::BadCredentials);
        }
        let person = civitas_registry::person_by_id(&self.db, person_id)
            .await?
            .ok_or(IdentityError::NotFound)?;
        let personal = [
            person.national_id.as_str(),
            person.name_latin.as_str(),
            person.birth_date.as_str(),
        ];
        password::check(new_password, &personal).map_err(IdentityError::WeakPassword)?;
        let hashed = self.hash_password(new_password).await?;
        let account = Account {
            id: format!("citizen-{}", token(9)),
            kind: AccountKind::Citizen,
            username: person.national_id.clone(),
            display_name: person.name_zh.clone(),
            agency_code: None,
            role: None,
            person_id: Some(person.id),
            email: person.email.clone(),
            phone: person.phone.clone(),
        };
        let mut tx = self.db.pool().begin().await?;
        let done = sqlx::query(
            "UPDATE registrations SET verified_ms = $2 WHERE id = $1 AND verified_ms IS NULL",
        )
        .bind(registration_id)
        .bind(now_ms())
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() == 0 {
            return Err(IdentityError::Expired);
        }
        insert_account(&mut tx, &account, Some(&hashed))
            .await
            .map_err(|e| match e {
                IdentityError::Store(_) => IdentityError::AlreadyRegistered,
                other => other,
            })?;
        tx.commit().await?;
        let event = Event::new(
            "identity.account_registered",
            &format!("account:{}", account.id),
            "account",
        )
        .with("kind", "citizen")
        .with("verified_by", "register_contact_code");
        self.record(event, Some(&account.subject_ref())).await?;
        self.start_session(&account, Loa::Low, &["pwd"], client)
            .await
    }

    async fn hash_password(&self, new_password: &str) -> Result<String, IdentityError> {
        password::hash_async(new_password).await
    }

    /// Changes a signed-in person's password after checking the current one.
    pub async fn change_password(
        &self,
        session: &SessionInfo,
        current: &str,
        new_password: &str,
    ) -> Result<(), IdentityError> {
        let (_, stored) = accounts::by_username(&self.db, &session.account.username)
            .await?
            .ok_or(IdentityError::NotFound)?;
        let stored = match stored {
            Some(h) => h,
            None => password::decoy_hash().await?.to_string(),
        };
        let ok = password::verify_async(current, &stored).await?;
        if !ok {
            return Err(IdentityError::BadCredentials);
        }
        let a = &session.account;
        let personal = [a.username.as_str(), a.display_name.as_str()];
        password::check(new_password, &personal).map_err(IdentityError::WeakPassword)?;
        let hashed = self.hash_password(new_password).await?;
        sqlx::query(
            "UPDATE accounts SET password_hash = $2, password_changed_ms = $3 WHERE id = $1",
        )
        .bind(&a.id)
        .bind(hashed)
        .bind(now_ms())
        .execute(self.db.pool())
        .await?;
        let event = Event::new(
            "identity.password_changed",
            &format!("account:{}", a.id),
            "account",
        );
        self.record(event, Some(&a.subject_ref())).await?;
        Ok(())
    }

    // ----- TOTP and recovery codes ------------------------------------------------------

    async fn has_totp(&self, account_id: &str) -> Result<bool, IdentityError> {
        Ok(sqlx::query(
            "SELECT 1 AS x FROM totp_secrets WHERE account_id = $1 AND confirmed_ms IS NOT NULL",
        )
        .bind(account_id)
        .fetch_optional(self.db.pool())
        .await?
        .is_some())
    }

    /// Whether the account has a confirmed authenticator app.
    pub async fn totp_enabled(&self, account_id: &str) -> Result<bool, IdentityError> {
        self.has_totp(account_id).await
    }

    /// Checks a TOTP code and, when it matches, remembers its step so it cannot be used again.
    async fn check_totp(&self, account_id: &str, code: &str) -> Result<bool, IdentityError> {
        let row = sqlx::query("SELECT secret, last_step FROM totp_secrets WHERE account_id = $1 AND confirmed_ms IS NOT NULL")
            .bind(account_id)
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else { return Ok(false) };
        let secret: Vec<u8> = row.try_get("secret")?;
        let last: i64 = row.try_get("last_step")?;
        let now_step = totp::step_of((now_ms() / 1000) as u64);
        let Some(step) = totp::matching_step(&secret, code, now_step, last as u64) else {
            return Ok(false);
        };
        // Compare-and-set on the last step: two requests with the same code cannot both win.
        let done = sqlx::query(
            "UPDATE totp_secrets SET last_step = $3 WHERE account_id = $1 AND last_step = $2",
        )
        .bind(account_id)
        .bind(last)
        .bind(step as i64)
        .execute(self.db.pool())
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Starts setting up an authenticator app: returns the secret (base32) and the
    /// `otpauth://` URI to show. Replaces an unconfirmed one.
    pub async fn begin_totp(
        &self,
        session: &SessionInfo,
    ) -> Result<(String, String), IdentityError> {
        let secret = secret::bytes::<20>();
        sqlx::query("DELETE FROM totp_secrets WHERE account_id = $1 AND confirmed_ms IS NULL")
            .bind(&session.account.id)
            .execute(self.db.pool())
            .await?;
        if self.has_totp(&session.account.id).await? {
            return Err(IdentityError::Invalid(
                "an authenticator app is already set up; remove it first".into(),
            ));
        }
        sqlx::query("INSERT INTO totp_secrets (account_id, secret, last_step) VALUES ($1, $2, 0)")
            .bind(&session.account.id)
            .bind(secret.to_vec())
            .execute(self.db.pool())
            .await?;
        Ok((
            totp::base32(&secret),
            totp::otpauth_uri(
                &self.settings.issuer_name,
                &session.account.username,
                &secret,
            ),
        ))
    }

    /// Confirms the authenticator app with its first code; returns fresh recovery codes
    /// (shown once).
    pub async fn confirm_totp(
        &self,
        session: &SessionInfo,
        code: &str,
    ) -> Result<Vec<String>, IdentityError> {
        let row = sqlx::query(
            "SELECT secret FROM totp_secrets WHERE account_id = $1 AND confirmed_ms IS NULL",
        )
        .bind(&session.account.id)
        .fetch_optional(self.db.pool())
        .await?
        .ok_or(IdentityError::Expired)?;
        let secret: Vec<u8> = row.try_get("secret")?;
        let now_step = totp::step_of((now_ms() / 1000) as u64);
        let step =
            totp::matching_step(&secret, code, now_step, 0).ok_or(IdentityError::BadCredentials)?;
        sqlx::query(
            "UPDATE totp_secrets SET confirmed_ms = $2, last_step = $3 WHERE account_id = $1",
        )
        .bind(&session.account.id)
        .bind(now_ms())
        .bind(step as i64)
        .execute(self.db.pool())
        .await?;
        let event = Event::new(
            "identity.totp_enabled",
            &format!("account:{}", session.account.id),
            "account",
        );
        self.record(event, Some(&session.account.subject_ref()))
            .await?;
        self.new_recovery_codes(session).await
    }

    /// Removes the authenticator app.
    pub async fn remove_totp(&self, session: &SessionInfo) -> Result<(), IdentityError> {
        sqlx::query("DELETE FROM totp_secrets WHERE account_id = $1")
            .bind(&session.account.id)
            .execute(self.db.pool())
            .await?;
        let event = Event::new(
            "identity.totp_removed",
            &format!("account:{}", session.account.id),
            "account",
        );
        self.record(event, Some(&session.account.subject_ref()))
            .await?;
        Ok(())
    }

    /// Replaces the account's recovery codes with [`RECOVERY_CODES`] new ones (shown once,
    /// stored hashed).
    pub async fn new_recovery_codes(
        &self,
        session: &SessionInfo,
    ) -> Result<Vec<String>, IdentityError> {
        const ALPHABET: &[u8] = b"abcdefghjkmnpqrstuvwxyz23456789";
        let codes: Vec<String> = (0..RECOVERY_CODES)
            .map(|_| {
                let raw: String = (0..10)
                    .map(|_| ALPHABET[secret::below(ALPHABET.len() as u64) as usize] as char)
                    .collect();
                format!("{}-{}", &raw[..5], &raw[5..])
            })
            .collect();
        let mut tx = self.db.pool().begin().await?;
        sqlx::query("DELETE FROM recovery_codes WHERE account_id = $1")
            .bind(&session.account.id)
            .execute(&mut *tx)
            .await?;
        for c in &codes {
            sqlx::query("INSERT INTO recovery_codes (account_id, code_hash, created_ms) VALUES ($1, $2, $3)")
                .bind(&session.account.id)
                .bind(hash(&recovery_normal(c)))
                .bind(now_ms())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        let event = Event::new(
            "identity.recovery_codes_created",
            &format!("account:{}", session.account.id),
            "account",
        )
        .with("count", RECOVERY_CODES as i64);
        self.record(event, Some(&session.account.subject_ref()))
            .await?;
        Ok(codes)
    }

    /// How many unused recovery codes the account has.
    pub async fn recovery_codes_left(&self, account_id: &str) -> Result<i64, IdentityError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM recovery_codes WHERE account_id = $1 AND used_ms IS NULL",
        )
        .bind(account_id)
        .fetch_one(self.db.pool())
        .await?;
        Ok(row.try_get("n")?)
    }

    async fn use_recovery_code(&self, account_id: &str, code: &str) -> Result<bool, IdentityError> {
        let done = sqlx::query("UPDATE recovery_codes SET used_ms = $3 WHERE account_id = $1 AND code_hash = $2 AND used_ms IS NULL")
            .bind(account_id)
            .bind(hash(&recovery_normal(code)))
            .bind(now_ms())
            .execute(self.db.pool())
            .await?;
        Ok(done.rows_affected() == 1)
    }

    // ----- mandates ---------------------------------------------------------------------

    /// Today's date, `YYYY-MM-DD` (UTC+8, Taiwan's day).
    pub fn today() -> String {
        let now = time::OffsetDateTime::now_utc().to_offset(time::macros::offset!(+8));
        let d = now.date();
        format!("{:04}-{:02}-{:02}", d.year(), u8::from(d.month()), d.day())
    }

    /// The mandates a signed-in citizen holds today.
    pub async fn mandates_held(&self, account: &Account) -> Result<Vec<Principal>, IdentityError> {
        match account.person_id {
            Some(p) => mandate::held_by(&self.db, p, &Self::today()).await,
            None => Ok(Vec::new()),
        }
    }

    /// Mandates a citizen granted to others, newest first.
    pub async fn mandates_granted(&self, account: &Account) -> Result<Vec<Granted>, IdentityError> {
        match account.person_id {
            Some(p) => mandate::granted(&self.db, "grantor_person_id", p).await,
            None => Ok(Vec::new()),
        }
    }

    /// Grants a mandate from the signed-in citizen to another person. Logged about both.
    pub async fn grant_mandate(
        &self,
        session: &SessionInfo,
        req: &GrantRequest,
    ) -> Result<Granted, IdentityError> {
        let grantor = session
            .account
            .person_id
            .ok_or_else(|| IdentityError::Invalid("only citizens grant mandates".into()))?;
        let g = mandate::grant(&self.db, grantor, req, &Self::today()).await?;
        let grantee_tag = self
            .ledger
            .subject_secret(&format!("person:{}", g.grantee_person_id))
            .await?
            .tag();
        let event = Event::new(
            "identity.mandate_granted",
            &format!("account:{}", session.account.id),
            "mandate",
        )
        .with("mandate", g.id.clone())
        .with("scope", g.scope.clone())
        .with("valid_from", g.valid_from.clone())
        .with("valid_until", g.valid_until.clone())
        .with("grantee", grantee_tag.to_string());
        self.record(event, Some(&session.account.subject_ref()))
            .await?;
        self.alert_mandate_later(&g, &session.account.display_name, true);
        Ok(g)
    }

    /// Revokes a mandate the signed-in citizen granted; if the grantee is acting under it
    /// now, that stops at their next request. Logged.
    pub async fn revoke_mandate(
        &self,
        session: &SessionInfo,
        id: &str,
    ) -> Result<Granted, IdentityError> {
        let grantor = session.account.person_id.ok_or(IdentityError::NotFound)?;
        let g = mandate::revoke(&self.db, grantor, id).await?;
        let event = Event::new(
            "identity.mandate_revoked",
            &format!("account:{}", session.account.id),
            "mandate",
        )
        .with("mandate", g.id.clone());
        self.record(event, Some(&session.account.subject_ref()))
            .await?;
        self.alert_mandate_later(&g, &session.account.display_name, false);
        Ok(g)
    }

    /// Starts acting for someone under a mandate the person holds (`key` from
    /// [`Identity::mandates_held`]), or stops when `key` is `None`. Logged about both.
    pub async fn act_for(
        &self,
        session: &SessionInfo,
        key: Option<&str>,
    ) -> Result<Option<Principal>, IdentityError> {
        let principal = match key {
            None => None,
            Some(k) => Some(
                self.mandates_held(&session.account)
                    .await?
                    .into_iter()
                    .find(|p| p.key == k)
                    .ok_or(IdentityError::NotFound)?,
            ),
        };
        session::set_acting_for(&self.db, &session.id, principal.as_ref()).await?;
        if let Some(p) = &principal {
            self.mandate_used(session, p, "act_for", "session").await?;
        }
        Ok(principal)
    }

    /// The principal a session acts for, if the mandate still holds; a revoked or expired
    /// mandate is dropped from the session.
    pub async fn current_principal(
        &self,
        session: &SessionInfo,
    ) -> Result<Option<Principal>, IdentityError> {
        let Some(p) = &session.acting_for else {
            return Ok(None);
        };
        let held = self.mandates_held(&session.account).await?;
        if held.iter().any(|h| h.key == p.key) {
            Ok(Some(p.clone()))
        } else {
            session::set_acting_for(&self.db, &session.id, None).await?;
            Ok(None)
        }
    }

    /// Logs a request made under a mandate: the actor (this account) and the person or
    /// business acted for (the subject), with what was done.
    pub async fn mandate_used(
        &self,
        session: &SessionInfo,
        principal: &Principal,
        action: &str,
        object: &str,
    ) -> Result<u64, IdentityError> {
        let actor_tag = self
            .ledger
            .subject_secret(&session.account.subject_ref())
            .await?
            .tag();
        let event = Event::new(
            "identity.mandate_used",
            &format!("account:{}", session.account.id),
            object,
        )
        .with("mandate", principal.key.clone())
        .with("basis", principal.basis.clone())
        .with("scope", principal.scope.clone())
        .with("action", action)
        .with("actor", actor_tag.to_string());
        self.record(event, Some(&principal.subject_ref())).await
    }

    // ----- demo -------------------------------------------------------------------------

    /// Gives every demo staff and operator account, and accounts for the featured demo
    /// citizens, the shared demo password. Only the demo calls this.
    pub async fn seed_demo_sign_ins(
        &self,
        demo_password: &str,
        featured_national_ids: &[String],
    ) -> Result<u64, IdentityError> {
        let hashed = self.hash_password(demo_password).await?;
        let mut tx = self.db.pool().begin().await?;
        let staff = sqlx::query("UPDATE accounts SET password_hash = $1 WHERE kind IN ('staff', 'operator') AND created_on = 'demo'")
            .bind(&hashed)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        let mut made = 0u64;
        for nid in featured_national_ids {
            let Some(p) = civitas_registry::person_by_national_id(&self.db, nid).await? else {
                continue;
            };
            let account = Account {
                id: format!("citizen-demo-{}", p.id),
                kind: AccountKind::Citizen,
                username: p.national_id.clone(),
                display_name: p.name_zh.clone(),
                agency_code: None,
                role: None,
                person_id: Some(p.id),
                email: p.email.clone(),
                phone: p.phone.clone(),
            };
            insert_account(&mut tx, &account, Some(&hashed)).await?;
            made += 1;
        }
        tx.commit().await?;
        Ok(staff + made)
    }
}

/// The ledger's reason for a refused passkey, or `None` when the failure was ours (the
/// database, the ledger) rather than the passkey's.
fn passkey_refusal(e: &IdentityError) -> Option<&'static str> {
    match e {
        IdentityError::PasskeyRejected(_) => Some("rejected"),
        IdentityError::CeremonyUnknown => Some("ceremony_unknown"),
        IdentityError::CeremonyExpired => Some("ceremony_expired"),
        _ => None,
    }
}

/// Recovery codes are compared without case, spaces or dashes.
fn recovery_normal(code: &str) -> String {
    code.chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

async fn insert_account(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    a: &Account,
    password_hash: Option<&str>,
) -> Result<(), IdentityError> {
    sqlx::query(
        "INSERT INTO accounts (id, kind, username, display_name, agency_code, role, created_on, person_id, email, phone, password_hash, password_changed_ms)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(&a.id)
    .bind(a.kind.code())
    .bind(&a.username)
    .bind(&a.display_name)
    .bind(&a.agency_code)
    .bind(&a.role)
    .bind(Identity::today())
    .bind(a.person_id)
    .bind(&a.email)
    .bind(&a.phone)
    .bind(password_hash)
    .bind(now_ms())
    .execute(&mut **tx)
    .await?;
    Ok(())
}
