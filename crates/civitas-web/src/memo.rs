//! What the web edge remembers of the registers between requests, where the registers never
//! change it while the program runs: which register row a national ID names (persons are
//! added, never renumbered or removed), and the date the registers are as of (set when the
//! demo country is generated, before the server starts). Each exchange call about a person
//! and each data release asked for both; remembering them saves a query on every call.

use std::collections::HashMap;
use std::sync::RwLock;

use civitas_store::Db;

/// At most this many national IDs are remembered; past it, the memory starts again.
const PEOPLE_REMEMBERED: usize = 200_000;

/// The registers' facts remembered (see the module's text).
#[derive(Default)]
pub struct RegisterMemo {
    people: RwLock<HashMap<String, i64>>,
    as_of: RwLock<Option<String>>,
}

impl RegisterMemo {
    /// The population register's row id of the person with `national_id` (as the register
    /// writes it), or `None` when there is no such person (not remembered: they may be
    /// registered later).
    pub async fn person_id(
        &self,
        db: &Db,
        national_id: &str,
    ) -> Result<Option<i64>, civitas_registry::RegistryError> {
        if let Some(id) = self
            .people
            .read()
            .ok()
            .and_then(|m| m.get(national_id).copied())
        {
            return Ok(Some(id));
        }
        let Some(person) = civitas_registry::person_by_national_id(db, national_id).await? else {
            return Ok(None);
        };
        if let Ok(mut m) = self.people.write() {
            if m.len() >= PEOPLE_REMEMBERED {
                m.clear();
            }
            m.insert(national_id.to_string(), person.id);
        }
        Ok(Some(person.id))
    }

    /// The date the registers are as of (ISO 8601), when the demo country recorded one
    /// (remembered once there is one: another node may still be generating it).
    pub async fn as_of(&self, db: &Db) -> Result<Option<String>, civitas_registry::RegistryError> {
        if let Some(d) = self.as_of.read().ok().and_then(|d| d.clone()) {
            return Ok(Some(d));
        }
        let found = civitas_registry::demo_summary(db)
            .await?
            .map(|s| s.as_of.to_string());
        if let (Some(d), Ok(mut kept)) = (&found, self.as_of.write()) {
            *kept = Some(d.clone());
        }
        Ok(found)
    }
}
