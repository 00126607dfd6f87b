//! Civitas's own messages (one-time codes, alerts, notices) go through Notify like any
//! service's: queued, delivered by the same carriers, retried, and logged under the
//! recipient's tag. They are sent by a live system service, "Civitas", with one e-mail and
//! one text-message template of `priority` (ahead of normal messages), made the first time
//! they are needed. Their text (a one-time code) is blanked once they reach a final status.

use serde_json::{Map, Value};

use crate::auth::{Caller, KeyType};
use crate::{Channel, NewNotification, NewTemplate, Notify, NotifyError, Priority, Service};

/// The system service's id.
pub const SYSTEM_SERVICE_ID: &str = "00000000-0000-4000-8000-00000000c1c1";

const SYSTEM_NAME: &str = "Civitas";
const TEMPLATE_NAME: &str = "Civitas message";
const ACTOR: &str = "system";

/// What Civitas sends its own messages with.
#[derive(Clone)]
pub struct OwnMessages {
    notify: Notify,
    caller: Caller,
    email_template: String,
    sms_template: String,
    /// The channels this node can deliver by.
    carried: (bool, bool),
}

impl Notify {
    /// The system service and its templates, made if they are not there yet; messages go
    /// by e-mail only when `email` can be delivered, by text message only when `sms` can.
    pub async fn own_messages(&self, email: bool, sms: bool) -> Result<OwnMessages, NotifyError> {
        let service = match self.service(SYSTEM_SERVICE_ID).await? {
            Some(s) => s,
            None => {
                self.create_service_with_id(SYSTEM_SERVICE_ID, SYSTEM_NAME, None, ACTOR)
                    .await?;
                self.make_live(SYSTEM_SERVICE_ID, ACTOR).await?;
                Service {
                    id: SYSTEM_SERVICE_ID.into(),
                    name: SYSTEM_NAME.into(),
                    live: true,
                    active: true,
                    agency: None,
                }
            }
        };
        let existing = self.templates(&service.id, None).await?;
        let template_of = async |channel: Channel| -> Result<String, NotifyError> {
            if let Some(t) = existing
                .iter()
                .find(|t| t.channel == channel && t.name == TEMPLATE_NAME)
            {
                return Ok(t.id.clone());
            }
            let t = NewTemplate {
                channel,
                name: TEMPLATE_NAME.into(),
                subject: (channel == Channel::Email).then(|| "((subject))".into()),
                body: "((body))".into(),
                priority: Priority::Priority,
                essential: true,
                // The text is bilingual already.
                lang: crate::Language::ZhTw,
                translation: None,
            };
            Ok(self.save_template(&service.id, None, &t, ACTOR).await?.id)
        };
        let email_template = template_of(Channel::Email).await?;
        let sms_template = template_of(Channel::Sms).await?;
        Ok(OwnMessages {
            notify: self.clone(),
            caller: Caller {
                service,
                key_id: "civitas".into(),
                key_type: KeyType::Live,
            },
            email_template,
            sms_template,
            carried: (email, sms),
        })
    }
}

impl OwnMessages {
    /// Sends `subject` and `body` to `to` (an e-mail address or a phone number); the
    /// notification's id.
    pub async fn send(&self, to: &str, subject: &str, body: &str) -> Result<String, NotifyError> {
        let (channel, template_id) = if to.contains('@') {
            (Channel::Email, &self.email_template)
        } else {
            (Channel::Sms, &self.sms_template)
        };
        let carried = match channel {
            Channel::Email => self.carried.0,
            _ => self.carried.1,
        };
        if !carried {
            // Queued, it would wait for a carrier that is not there.
            return Err(NotifyError::BadRequest(format!(
                "nothing delivers {} messages here",
                channel.code()
            )));
        }
        let mut personalisation = Map::new();
        personalisation.insert("subject".into(), Value::String(subject.into()));
        personalisation.insert("body".into(), Value::String(body.into()));
        let n = NewNotification {
            channel,
            recipient: to.into(),
            template_id: template_id.clone(),
            personalisation,
            reference: None,
            from_registers: None,
            scheduled_ms: None,
            language: None,
        };
        Ok(self.notify.accept(&self.caller, &n).await?.0.id)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_system_services_messages_are_the_ones_forgotten() {
        assert!(crate::delivery::FORGET_OWN.contains(&format!("'{}'", super::SYSTEM_SERVICE_ID)));
    }
}
