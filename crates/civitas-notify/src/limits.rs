//! The limits Notify puts on a service, answered with 429 as Notify answers them:
//! - calls per minute with each key type (3,000 by default, `notify.rate_limit_per_minute`),
//!   counted in this process over the last 60 seconds;
//! - messages per day on each channel (`daily_limit`, 250,000 unless the operator sets
//!   another), counted in the database, test keys' not counted. The day is Taiwan's.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use civitas_ledger::event::now_ms;
use civitas_store::sqlx;

use crate::auth::{Caller, KeyType};
use crate::{Channel, Notify, NotifyError};

/// Notify's rate limit, per service and key type.
pub(crate) const PER_MINUTE: u32 = 3000;

/// Calls in the last minute, per (service, key type).
pub(crate) struct RateLimit {
    per_minute: u32,
    calls: Mutex<HashMap<(String, KeyType), VecDeque<i64>>>,
}

impl RateLimit {
    pub(crate) fn new(per_minute: u32) -> RateLimit {
        RateLimit {
            per_minute,
            calls: Mutex::new(HashMap::new()),
        }
    }
}

/// Why a call is over a limit: Notify's error name and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OverLimit {
    /// `RateLimitError` or `TooManyRequestsError`.
    pub error: &'static str,
    /// Notify's message.
    pub message: String,
}

/// Milliseconds of Taiwan's day (UTC+8) that began before `ms`.
/// Whether `caller`'s messages count against a daily limit: not a test key's, and not
/// Civitas's own (sign-in codes and alerts must not be stopped by a busy day).
fn counted(caller: &Caller) -> bool {
    caller.key_type != KeyType::Test && caller.service.id != crate::own::SYSTEM_SERVICE_ID
}

pub(crate) fn day_start(ms: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    const TAIPEI: i64 = 8 * 3_600_000;
    (ms + TAIPEI).div_euclid(DAY) * DAY - TAIPEI
}

impl Notify {
    /// Counts a call of `caller` against its per-minute limit; refused when over it.
    pub fn count_call(&self, caller: &Caller) -> Result<(), OverLimit> {
        let now = now_ms();
        let Ok(mut calls) = self.rate.calls.lock() else {
            return Ok(());
        };
        let recent = calls
            .entry((caller.service.id.clone(), caller.key_type))
            .or_default();
        while recent.front().is_some_and(|t| *t <= now - 60_000) {
            recent.pop_front();
        }
        if recent.len() >= self.rate.per_minute as usize {
            return Err(OverLimit {
                error: "RateLimitError",
                message: format!(
                    "Exceeded rate limit for key type {} of {} requests per 60 seconds",
                    match caller.key_type {
                        KeyType::Live => "LIVE",
                        KeyType::Team => "TEAM",
                        KeyType::Test => "TEST",
                    },
                    self.rate.per_minute
                ),
            });
        }
        recent.push_back(now);
        Ok(())
    }

    /// Whether `caller` may send one more message on `channel` today.
    pub(crate) async fn check_daily_limit(
        &self,
        caller: &Caller,
        channel: Channel,
    ) -> Result<Option<OverLimit>, NotifyError> {
        if !counted(caller) {
            return Ok(None);
        }
        // The count as read less than a second ago, with what this process accepted since,
        // while it is below the limit: the write that counts each message refuses the one
        // past the limit anyway, so this read only spares the sender a refused write.
        let day = day_start(now_ms());
        let key = (caller.service.id.clone(), channel.code());
        if let Some(c) = self.caches.days.get(&key)
            && c.day_ms == day
            && c.sent < c.limit
        {
            return Ok(None);
        }
        let (limit, sent): (i64, i64) = sqlx::query_as(
            "SELECT s.daily_limit, COALESCE((SELECT c.sent FROM notify_daily_counts c
                 WHERE c.service_id = s.id AND c.kind = $2 AND c.day_ms = $3), 0)
             FROM notify_services s WHERE s.id = $1",
        )
        .bind(&caller.service.id)
        .bind(channel.code())
        .bind(day)
        .fetch_one(self.db.pool())
        .await?;
        self.caches.days.put(
            key,
            crate::cache::DayCount {
                day_ms: day,
                limit,
                sent,
            },
        );
        Ok((sent >= limit).then(|| OverLimit {
            error: "TooManyRequestsError",
            message: format!(
                "Exceeded send limits ({}: {limit}) for today",
                channel.code()
            ),
        }))
    }

    /// Counts a message just accepted in the day's count this process remembers.
    pub(crate) fn counted_message(&self, caller: &Caller, channel: Channel, now: i64) {
        if counted(caller) {
            self.caches
                .count(&caller.service.id, channel.code(), day_start(now));
        }
    }

    /// Adds to `w` the count of one more message of `caller` on `channel` today, which
    /// changes no row once the day's limit is reached (so two sends at once cannot both
    /// pass it: the accept's writes are refused). Test keys' messages are not counted.
    pub(crate) fn count_message(
        w: &mut civitas_store::Script,
        caller: &Caller,
        channel: Channel,
        now: i64,
    ) {
        if !counted(caller) {
            return;
        }
        w.push(
            "INSERT INTO notify_daily_counts (service_id, kind, day_ms, sent)
             SELECT ?, ?, ?, 1 FROM notify_services s WHERE s.id = ? AND s.daily_limit > 0
             ON CONFLICT (service_id, kind, day_ms) DO UPDATE SET sent = notify_daily_counts.sent + 1
             WHERE notify_daily_counts.sent < (SELECT s.daily_limit FROM notify_services s WHERE s.id = notify_daily_counts.service_id)",
            vec![
                civitas_store::Value::Text(caller.service.id.clone()),
                civitas_store::Value::Str(channel.code()),
                civitas_store::Value::I64(day_start(now)),
                civitas_store::Value::Text(caller.service.id.clone()),
            ],
        );
    }

    /// Sets a service's daily limit per channel (`notify.daily_limit_set`).
    pub async fn set_daily_limit(
        &self,
        service_id: &str,
        limit: i64,
        actor: &str,
    ) -> Result<(), NotifyError> {
        if limit < 0 {
            return Err(NotifyError::Invalid("a daily limit is 0 or more".into()));
        }
        let mut w = civitas_store::Script::new();
        w.push(
            "UPDATE notify_services SET daily_limit = ? WHERE id = ?",
            vec![
                civitas_store::Value::I64(limit),
                civitas_store::Value::Text(service_id.into()),
            ],
        );
        let event = civitas_ledger::Event::new(
            "notify.daily_limit_set",
            actor,
            &format!("notify/service/{service_id}"),
        )
        .with("daily_limit", limit);
        let done = self.ledger.append_with(&event, w).await;
        self.caches.forget_service(service_id);
        match done {
            Ok(_) => Ok(()),
            Err(civitas_ledger::LedgerError::WritesRefused(_)) => {
                Err(NotifyError::NotFound(format!("no service {service_id}")))
            }
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_day_is_taiwans() {
        // 2026-11-22T16:00:00Z is midnight in Taipei.
        let midnight = 1_795_363_200_000;
        assert_eq!(super::day_start(midnight), midnight);
        assert_eq!(super::day_start(midnight + 1), midnight);
        assert_eq!(super::day_start(midnight - 1), midnight - 86_400_000);
    }
}
