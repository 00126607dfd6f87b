//! What Notify keeps in memory of its tables, so that accepting a message does not read
//! the same service, keys and template from the database on every call.
//!
//! Kept per database and process ([`civitas_store::Db::shared`]): every `Notify` made on
//! the same database in this process sees the same entries, and a change made through any
//! of them forgets what it changed at once. A change made by another process (another node,
//! or the command line) is seen within [`FRESH_FOR`]: entries older than that are read
//! again. A call whose signature matches no remembered key reads the keys again before it
//! is refused, so a key made elsewhere works at once; a key revoked elsewhere still works
//! for at most [`FRESH_FOR`].

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::Service;
use crate::auth::StoredKey;
use crate::store::Template;

/// How long an entry read from the database is used without reading it again.
pub const FRESH_FOR: Duration = Duration::from_secs(1);

/// Entries kept before the oldest are dropped (all at once: they are read again cheaply).
const MOST: usize = 10_000;

/// Values read from the database, each used for [`FRESH_FOR`].
pub(crate) struct Fresh<K, V> {
    entries: Mutex<HashMap<K, (Instant, V)>>,
}

impl<K, V> Default for Fresh<K, V> {
    fn default() -> Self {
        Fresh {
            entries: Mutex::new(HashMap::new()),
        }
    }
}

impl<K: Hash + Eq, V: Clone> Fresh<K, V> {
    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<K, (Instant, V)>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The value, if it was read less than [`FRESH_FOR`] ago.
    pub(crate) fn get<Q>(&self, key: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map()
            .get(key)
            .filter(|(at, _)| at.elapsed() < FRESH_FOR)
            .map(|(_, v)| v.clone())
    }

    /// Keeps a value just read.
    pub(crate) fn put(&self, key: K, value: V) {
        let mut m = self.map();
        if m.len() >= MOST {
            m.clear();
        }
        m.insert(key, (Instant::now(), value));
    }

    /// Forgets a value that has changed.
    pub(crate) fn forget<Q>(&self, key: &Q)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.map().remove(key);
    }
}

/// A service as authentication needs it: the service and its keys.
pub(crate) struct ServiceKeys {
    pub(crate) service: Service,
    pub(crate) keys: Vec<StoredKey>,
}

/// A service's count of messages of one kind today, as last read, and those accepted
/// through this process since.
#[derive(Clone, Copy)]
pub(crate) struct DayCount {
    pub(crate) day_ms: i64,
    pub(crate) limit: i64,
    pub(crate) sent: i64,
}

/// Notify's memory of one database.
#[derive(Default)]
pub(crate) struct Caches {
    /// By service id.
    pub(crate) callers: Fresh<String, Arc<ServiceKeys>>,
    /// The latest version of each template, by service id and template id.
    pub(crate) templates: Fresh<(String, String), Arc<Template>>,
    /// By service id and kind of message.
    pub(crate) days: Fresh<(String, &'static str), DayCount>,
}

impl Caches {
    /// Forgets what is kept of a service (its keys, state or limits changed).
    pub(crate) fn forget_service(&self, service_id: &str) {
        self.callers.forget(service_id);
        for kind in ["email", "sms", "letter"] {
            self.days.forget(&(service_id.to_string(), kind));
        }
    }

    /// Counts one more message accepted today, if the day's count is kept.
    pub(crate) fn count(&self, service_id: &str, kind: &'static str, day_ms: i64) {
        let mut m = self.days.map();
        if let Some((_, c)) = m.get_mut(&(service_id.to_string(), kind))
            && c.day_ms == day_ms
        {
            c.sent += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_kept_for_a_while_and_forgotten_when_changed() {
        let f: Fresh<String, i32> = Fresh::default();
        assert_eq!(f.get("a"), None);
        f.put("a".into(), 1);
        assert_eq!(f.get("a"), Some(1));
        f.forget("a");
        assert_eq!(f.get("a"), None);
        f.put("b".into(), 2);
        f.map().get_mut("b").unwrap().0 = Instant::now() - FRESH_FOR;
        assert_eq!(f.get("b"), None, "read too long ago");
    }
}
