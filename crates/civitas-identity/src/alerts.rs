//! Alerts to people about what happens to their account and their mandates, through the
//! same courier as one-time codes (Notify, in production): a sign-in from a browser (its
//! kind and system, whatever its version) the account has not used in the last 90 days, and
//! a mandate given to or taken from them.
//!
//! An alert never holds up or undoes what it is about: it is sent in the background, and a
//! failure to send is logged (without the address or the text) and dropped.

use civitas_ledger::event::now_ms;
use civitas_store::sqlx;

use crate::accounts::Account;
use crate::mandate::Granted;
use crate::service::Identity;

/// How long a browser stays known to an account after its last sign-in there.
const KNOWN_BROWSER_MS: i64 = 90 * 24 * 60 * 60 * 1000;

/// Unix milliseconds as people in Taiwan read them: `2026-11-23 14:05`.
pub fn taiwan_time(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp(ms / 1000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .to_offset(time::macros::offset!(+8));
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// A browser's name from its user agent, short enough for a text message.
fn browser_of(user_agent: &str) -> String {
    let name = ["Edg/", "Firefox/", "Chrome/", "Safari/"]
        .iter()
        .find(|n| user_agent.contains(*n))
        .map(|n| n.trim_end_matches('/').replace("Edg", "Edge"));
    let system = [
        ("Android", "Android"),
        ("iPhone", "iPhone"),
        ("iPad", "iPad"),
        ("Windows", "Windows"),
        ("Mac OS", "macOS"),
        ("Linux", "Linux"),
    ]
    .iter()
    .find(|(k, _)| user_agent.contains(k))
    .map(|(_, v)| *v);
    match (name, system) {
        (Some(n), Some(s)) => format!("{n}, {s}"),
        (Some(n), None) => n,
        (None, Some(s)) => s.to_string(),
        (None, None) => "?".into(),
    }
}

impl Identity {
    /// Sends `subject` and `body` to `to` in the background, when a courier is configured
    /// and the person has somewhere to be told; `what` names the alert in the log.
    fn alert(&self, to: Option<String>, subject: String, body: String, what: &'static str) {
        let (Some(courier), Some(to)) = (self.courier(), to) else {
            return;
        };
        tokio::spawn(async move {
            if let Err(e) = courier.send(&to, &subject, &body).await {
                tracing::warn!(alert = what, error = %e, "an alert could not be sent");
            }
        });
    }

    /// Tells the account's owner of a sign-in from a browser it has not used in the last 90
    /// days (`session_id` is the new session, `user_agent` its browser).
    pub(crate) async fn alert_new_browser(
        &self,
        account: &Account,
        session_id: &str,
        user_agent: &str,
    ) {
        if self.courier().is_none() {
            return;
        }
        // The same browser on the same system, whatever its version (browsers update
        // themselves every few weeks).
        let browser = browser_of(user_agent);
        let earlier: Result<Vec<(String,)>, _> = sqlx::query_as(
            "SELECT DISTINCT user_agent FROM sessions WHERE account_id = $1 AND id <> $2 AND created_ms > $3",
        )
        .bind(&account.id)
        .bind(session_id)
        .bind(now_ms() - KNOWN_BROWSER_MS)
        .fetch_all(self.db().pool())
        .await;
        match earlier {
            Ok(seen) => {
                let known = seen.iter().any(|(ua,)| {
                    if browser == "?" {
                        ua == user_agent
                    } else {
                        browser_of(ua) == browser
                    }
                });
                if known {
                    return;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot tell whether a browser is new");
                return;
            }
        }
        let (when, issuer) = (taiwan_time(now_ms()), self.issuer_name());
        let body = format!(
            "您的 {issuer} 帳號於 {when}（台灣時間）從新的瀏覽器登入：{browser}。\n如果不是您本人，請立即到帳號的「安全」頁面變更密碼並登出所有裝置。\nYour {issuer} account was signed in to from a new browser at {when} (Taiwan time): {browser}.\nIf this was not you, change your password and sign out everywhere on your account's Security page."
        );
        self.alert(
            account.email.clone().or_else(|| account.phone.clone()),
            format!("{issuer} 新的登入 New sign-in"),
            body,
            "new_browser",
        );
    }

    /// [`Identity::alert_mandate`] in the background.
    pub(crate) fn alert_mandate_later(&self, g: &Granted, grantor: &str, given: bool) {
        if self.courier().is_none() {
            return;
        }
        let (me, g, grantor) = (self.clone(), g.clone(), grantor.to_string());
        tokio::spawn(async move { me.alert_mandate(&g, &grantor, given).await });
    }

    /// Tells the person a mandate names that it was given to them (`given`) or taken back,
    /// at the contact the population register holds for them; `grantor` is the name of
    /// whom it lets them act for.
    async fn alert_mandate(&self, g: &Granted, grantor: &str, given: bool) {
        if self.courier().is_none() {
            return;
        }
        let grantee = match civitas_registry::person_by_id(self.db(), g.grantee_person_id).await {
            Ok(Some(p)) if p.death_date.is_none() => p,
            Ok(_) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot read whom a mandate names");
                return;
            }
        };
        let issuer = self.issuer_name();
        let (subject, body) = if given {
            (
                format!("{issuer} 您獲得授權 A mandate for you"),
                format!(
                    "{grantor} 授權您代為辦理（範圍：{scope}），期間 {from} 至 {until}。登入 {issuer} 後，可在「我的帳號」選擇代理對象。\n{grantor} has given you a mandate to act for them (scope: {scope}) from {from} to {until}. Sign in to {issuer} and choose whom you act for on your account page.",
                    scope = g.scope,
                    from = g.valid_from,
                    until = g.valid_until,
                ),
            )
        } else {
            (
                format!("{issuer} 授權已撤銷 A mandate was revoked"),
                format!(
                    "{grantor} 已撤銷給您的授權（範圍：{scope}），您不能再代為辦理。\n{grantor} has revoked your mandate to act for them (scope: {scope}); you can no longer act for them.",
                    scope = g.scope,
                ),
            )
        };
        self.alert(
            grantee.email.or(grantee.phone),
            subject,
            body,
            if given {
                "mandate_granted"
            } else {
                "mandate_revoked"
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn browsers_are_named_briefly() {
        assert_eq!(
            browser_of(
                "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
            ),
            "Safari, iPhone"
        );
        assert_eq!(
            browser_of(
                "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36 Edg/120.0"
            ),
            "Edge, Windows"
        );
        assert_eq!(browser_of("curl/8.0"), "?");
        assert_eq!(taiwan_time(0), "1970-01-01 08:00");
    }
}
