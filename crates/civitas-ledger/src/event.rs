//! Ledger events: typed, versioned records with a canonical byte encoding, which is what the
//! log's leaves hash.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::LedgerError;
use crate::subject::SubjectTag;

/// Version of the event encoding written today.
pub const EVENT_VERSION: u32 = 1;

/// Largest encoded event accepted: C2SP entry bundles prefix each entry with a 16-bit length,
/// and events are meant to be small (the private payload stays outside, by hash).
pub const MAX_EVENT_BYTES: usize = 4096;

/// A consequential event, as it appears in the public log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Encoding version ([`EVENT_VERSION`]).
    pub v: u32,
    /// What happened, as a dotted name: `platform.demo_seeded`, `consent.withdrawn`.
    pub kind: String,
    /// Who did it: `system`, `operator:<id>`, `staff:<id>`, `citizen`, `client:<id>`.
    pub actor: String,
    /// Keyed tag of the person the event is about; the log never names the person.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<SubjectTag>,
    /// What it happened to: `config`, `registry/demo`, `consent/<id>`.
    pub object: String,
    /// When, in milliseconds since the Unix epoch (UTC).
    pub time_ms: i64,
    /// SHA-256 of the private payload kept outside the log, hex; proves what it was later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_sha256: Option<String>,
    /// A small public payload (no personal data).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub public: Map<String, Value>,
    /// Whether the entry is left out of the list by tag ([`Event::about_unlisted`]); not
    /// part of the encoding, so a decoded event reads `false`.
    #[serde(skip)]
    pub unlisted: bool,
}

fn check_name(
    field: &'static str,
    value: &str,
    max: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), LedgerError> {
    if value.is_empty() || value.len() > max || !value.chars().all(allowed) {
        return Err(LedgerError::InvalidEvent(format!(
            "{field} `{value}` must be 1 to {max} characters of the allowed set"
        )));
    }
    Ok(())
}

impl Event {
    /// Starts an event of `kind` by `actor` on `object`, stamped now.
    pub fn new(kind: &str, actor: &str, object: &str) -> Event {
        Event {
            v: EVENT_VERSION,
            kind: kind.to_string(),
            actor: actor.to_string(),
            subject: None,
            object: object.to_string(),
            time_ms: now_ms(),
            payload_sha256: None,
            public: Map::new(),
            unlisted: false,
        }
    }

    /// Sets the person the event is about; the log lists the entry under their tag
    /// (`Ledger::subject_events`).
    pub fn about(mut self, subject: SubjectTag) -> Event {
        self.subject = Some(subject);
        self.unlisted = false;
        self
    }

    /// Sets whom the event is about, as [`Event::about`] does, but leaves the entry out of
    /// the list by tag: for subjects nobody looks up there, such as the address a Notify
    /// message went to (the person's own tracker lists what concerns the person). The entry
    /// still carries the tag, which erasing the subject's secret unlinks as for any other.
    /// Every entry listed costs an insert at a random place of the list's index, a page of
    /// the database written at each commit.
    pub fn about_unlisted(mut self, subject: SubjectTag) -> Event {
        self.subject = Some(subject);
        self.unlisted = true;
        self
    }

    /// Records the hash of a private payload that stays outside the log.
    pub fn private_payload(mut self, payload: &[u8]) -> Event {
        use sha2::Digest;
        self.payload_sha256 = Some(hex(&sha2::Sha256::digest(payload)));
        self
    }

    /// Adds a public field.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Event {
        self.public.insert(key.to_string(), value.into());
        self
    }

    /// Checks the fields and returns the canonical encoding that the log stores and hashes.
    pub fn encode(&self) -> Result<Vec<u8>, LedgerError> {
        check_name("kind", &self.kind, 64, |c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
        })?;
        check_name("actor", &self.actor, 128, |c| c.is_ascii_graphic())?;
        check_name("object", &self.object, 256, |c| c.is_ascii_graphic())?;
        // serde_json keeps struct fields in declaration order and map keys sorted, so the
        // same event always encodes to the same bytes.
        let bytes =
            serde_json::to_vec(self).map_err(|e| LedgerError::InvalidEvent(e.to_string()))?;
        if bytes.len() > MAX_EVENT_BYTES {
            return Err(LedgerError::InvalidEvent(format!(
                "the event encodes to {} bytes; the limit is {MAX_EVENT_BYTES}",
                bytes.len()
            )));
        }
        Ok(bytes)
    }

    /// Decodes an event from the log's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Event, LedgerError> {
        serde_json::from_slice(bytes)
            .map_err(|e| LedgerError::InvalidEvent(format!("undecodable event: {e}")))
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Lower-case hexadecimal, into one string (no allocation per byte: a subject's tag, a
/// payload's digest and an idempotency key are written this way on every logged call).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}
