//! Accounts: who may sign in, and what the population register says about citizens.

use civitas_store::Db;
use civitas_store::sqlx::{self, Row};

use crate::IdentityError;

/// The kinds of account.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountKind {
    /// A resident, linked to their record in the population register. Business
    /// representatives are citizens whom the business register names for a business.
    Citizen,
    /// Agency staff, with a role at one agency.
    Staff,
    /// A platform operator.
    Operator,
}

impl AccountKind {
    /// Stable code stored in the database.
    pub fn code(self) -> &'static str {
        match self {
            AccountKind::Citizen => "citizen",
            AccountKind::Staff => "staff",
            AccountKind::Operator => "operator",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<AccountKind> {
        match code {
            "citizen" => Some(AccountKind::Citizen),
            "staff" => Some(AccountKind::Staff),
            "operator" => Some(AccountKind::Operator),
            _ => None,
        }
    }
}

/// An account, without its secrets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Stable account id.
    pub id: String,
    /// What kind of account it is.
    pub kind: AccountKind,
    /// What the person types to sign in: the identification number for citizens, the
    /// work e-mail address for staff and operators.
    pub username: String,
    /// Name shown on pages.
    pub display_name: String,
    /// Agency of a staff member or operator.
    pub agency_code: Option<String>,
    /// Role at that agency (`caseworker`, `supervisor`, `agency_admin`, `operator`).
    pub role: Option<String>,
    /// The citizen's row in the population register.
    pub person_id: Option<i64>,
    /// Contact e-mail, when known.
    pub email: Option<String>,
    /// Contact phone, when known.
    pub phone: Option<String>,
}

impl Account {
    /// The reference under which the ledger tags this account's events: a citizen's events
    /// share the tag of their person, so they appear with everything else about them.
    pub fn subject_ref(&self) -> String {
        match self.person_id {
            Some(p) => format!("person:{p}"),
            None => format!("account:{}", self.id),
        }
    }
}

/// A registration in progress: a code was sent to the contact details the register holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Registration {
    /// Identifies the registration in the next step.
    pub id: String,
    /// Where the code went, masked (`c***@example.tw`).
    pub sent_to: String,
}

pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, kind, username, display_name, agency_code, role, person_id, email, phone";

pub(crate) fn account_from(
    row: &civitas_store::sqlx::any::AnyRow,
) -> Result<Account, IdentityError> {
    let kind: String = row.try_get("kind")?;
    Ok(Account {
        id: row.try_get("id")?,
        kind: AccountKind::from_code(&kind)
            .ok_or_else(|| IdentityError::Invalid(format!("unknown account kind `{kind}`")))?,
        username: row.try_get("username")?,
        display_name: row.try_get("display_name")?,
        agency_code: row.try_get("agency_code")?,
        role: row.try_get("role")?,
        person_id: row.try_get("person_id")?,
        email: row.try_get("email")?,
        phone: row.try_get("phone")?,
    })
}

/// Normalises what a person typed to sign in: identification numbers are upper case,
/// e-mail addresses lower case.
pub(crate) fn normalise_username(typed: &str) -> String {
    let t = typed.trim();
    if t.contains('@') {
        t.to_lowercase()
    } else {
        t.to_uppercase()
    }
}

/// Finds an account by id.
pub(crate) async fn by_id(db: &Db, id: &str) -> Result<Option<Account>, IdentityError> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE id = $1 AND disabled_ms IS NULL"
    ))
    .bind(id)
    .fetch_optional(db.pool())
    .await?;
    row.as_ref().map(account_from).transpose()
}

/// An agency's staff in a role, enabled.
pub(crate) async fn staff_of(
    db: &Db,
    agency: &str,
    role: &str,
) -> Result<Vec<Account>, IdentityError> {
    let rows = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE kind = 'staff' AND agency_code = $1 AND role = $2 AND disabled_ms IS NULL ORDER BY username"
    ))
    .bind(agency)
    .bind(role)
    .fetch_all(db.pool())
    .await?;
    rows.iter().map(account_from).collect()
}

/// Finds an account and its password hash by what the person types to sign in.
pub(crate) async fn by_username(
    db: &Db,
    username: &str,
) -> Result<Option<(Account, Option<String>)>, IdentityError> {
    let row = sqlx::query(&format!(
        "SELECT {ACCOUNT_COLUMNS}, password_hash FROM accounts WHERE username = $1 AND disabled_ms IS NULL"
    ))
    .bind(username)
    .fetch_optional(db.pool())
    .await?;
    match row {
        Some(r) => Ok(Some((account_from(&r)?, r.try_get("password_hash")?))),
        None => Ok(None),
    }
}

/// What a password sign-in reads before it hashes, in one query: the throttle on the
/// account and the client address, and the account with its password hash and whether it
/// has a confirmed authenticator app.
pub(crate) struct SignInRecord {
    /// The throttle on `user:` (first) and `ip:` (second) keys.
    pub throttle: crate::throttle::State,
    /// The account and its password hash, when the username names a live account.
    pub account: Option<(Account, Option<String>)>,
    /// Whether that account has a confirmed authenticator app.
    pub has_totp: bool,
}

/// Reads a [`SignInRecord`] for `username`, with the throttle keys `account_key` and
/// `address_key`.
pub(crate) async fn for_sign_in(
    db: &Db,
    username: &str,
    account_key: &str,
    address_key: &str,
) -> Result<SignInRecord, IdentityError> {
    // One row whether or not the account exists: the throttle is read either way.
    let row = sqlx::query(&format!(
        "SELECT CAST(COALESCE((SELECT MAX(locked_until_ms) FROM sign_in_throttle WHERE key IN ($2, $3)), 0) AS BIGINT) AS locked_until_ms,
                CAST(CASE WHEN EXISTS (SELECT 1 FROM sign_in_throttle WHERE key = $2) THEN 1 ELSE 0 END AS BIGINT) AS on_record,
                CAST(CASE WHEN EXISTS (SELECT 1 FROM totp_secrets t WHERE t.account_id = a.id AND t.confirmed_ms IS NOT NULL) THEN 1 ELSE 0 END AS BIGINT) AS has_totp,
                {ACCOUNT_COLUMNS}, password_hash
         FROM (SELECT 1 AS one) AS o LEFT JOIN accounts a ON a.username = $1 AND a.disabled_ms IS NULL"
    ))
    .bind(username)
    .bind(account_key)
    .bind(address_key)
    .fetch_one(db.pool())
    .await?;
    let found = row.try_get::<Option<String>, _>("id")?.is_some();
    Ok(SignInRecord {
        throttle: crate::throttle::State {
            locked_until_ms: row.try_get("locked_until_ms")?,
            first_on_record: row.try_get::<i64, _>("on_record")? == 1,
        },
        account: match found {
            true => Some((account_from(&row)?, row.try_get("password_hash")?)),
            false => None,
        },
        has_totp: row.try_get::<i64, _>("has_totp")? == 1,
    })
}

/// Masks an address for display: enough to recognise, not enough to harvest.
pub(crate) fn mask_address(addr: &str) -> String {
    if let Some((local, domain)) = addr.split_once('@') {
        let first: String = local.chars().take(1).collect();
        format!("{first}***@{domain}")
    } else {
        let digits: Vec<char> = addr.chars().collect();
        let keep = digits.len().saturating_sub(3);
        digits
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i < keep && c.is_ascii_digit() {
                    '*'
                } else {
                    *c
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_normalise_and_addresses_mask() {
        assert_eq!(normalise_username(" a123456789 "), "A123456789");
        assert_eq!(
            normalise_username("Caseworker.1@HRO.gov.example"),
            "caseworker.1@hro.gov.example"
        );
        assert_eq!(mask_address("chen.mei@example.tw"), "c***@example.tw");
        assert_eq!(mask_address("0912345678"), "*******678");
    }
}
