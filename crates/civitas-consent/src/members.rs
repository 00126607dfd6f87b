//! The people who act for an organisation (a registered client) on its pages: the operator
//! names them by their Civitas account, and each sees the organisation's agreements, their
//! consent statistics, and can check whether a consent is valid, as the organisation's
//! systems do through the API with the client's credentials.

use civitas_ledger::Event;
use civitas_ledger::event::now_ms;
use civitas_store::sqlx::{self, Row};
use civitas_store::{Script, Value as Sql};

use crate::{ConsentError, Consents};

impl Consents {
    /// Lets the account `account_id` act for the organisation `client_id` on its pages
    /// (`consent.org_member_added`, with `actor`).
    pub async fn add_member(
        &self,
        client_id: &str,
        account_id: &str,
        actor: &str,
    ) -> Result<(), ConsentError> {
        if self
            .organisations_of(account_id)
            .await?
            .iter()
            .any(|c| c == client_id)
        {
            return Err(ConsentError::Conflict(
                "that account acts for this organisation already".into(),
            ));
        }
        let mut w = Script::new();
        w.push(
            "INSERT INTO consent_org_members (client_id, account_id, added_ms) VALUES (?, ?, ?) ON CONFLICT (client_id, account_id) DO NOTHING",
            vec![
                Sql::Text(client_id.into()),
                Sql::Text(account_id.into()),
                Sql::I64(now_ms()),
            ],
        );
        let event = Event::new(
            "consent.org_member_added",
            actor,
            &format!("organisation/{client_id}"),
        )
        .with("account", format!("account:{account_id}"));
        self.ledger.append_with(&event, w).await.map_err(|e| {
            crate::agreement::conflict_or(e, "that account acts for this organisation already")
        })?;
        Ok(())
    }

    /// Stops the account `account_id` acting for the organisation `client_id`
    /// (`consent.org_member_removed`).
    pub async fn remove_member(
        &self,
        client_id: &str,
        account_id: &str,
        actor: &str,
    ) -> Result<(), ConsentError> {
        let mut w = Script::new();
        w.push(
            "DELETE FROM consent_org_members WHERE client_id = ? AND account_id = ?",
            vec![Sql::Text(client_id.into()), Sql::Text(account_id.into())],
        );
        let event = Event::new(
            "consent.org_member_removed",
            actor,
            &format!("organisation/{client_id}"),
        )
        .with("account", format!("account:{account_id}"));
        self.ledger
            .append_with(&event, w)
            .await
            .map_err(|e| match e {
                civitas_ledger::LedgerError::WritesRefused(_) => {
                    ConsentError::NotFound("that account does not act for this organisation".into())
                }
                e => ConsentError::Ledger(e),
            })?;
        Ok(())
    }

    /// Who acts for which organisation: (client id, account id) pairs.
    pub async fn members(&self) -> Result<Vec<(String, String)>, ConsentError> {
        let rows = sqlx::query(
            "SELECT client_id, account_id FROM consent_org_members ORDER BY client_id, added_ms",
        )
        .fetch_all(self.db.pool())
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("client_id")?, r.try_get("account_id")?)))
            .collect()
    }

    /// The organisations (client ids) the account `account_id` acts for.
    pub async fn organisations_of(&self, account_id: &str) -> Result<Vec<String>, ConsentError> {
        let rows = sqlx::query(
            "SELECT client_id FROM consent_org_members WHERE account_id = $1 ORDER BY client_id",
        )
        .bind(account_id)
        .fetch_all(self.db.pool())
        .await?;
        rows.iter().map(|r| Ok(r.try_get("client_id")?)).collect()
    }
}
