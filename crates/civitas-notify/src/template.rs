//! Notify's template language, as its clients and senders expect it:
//! - `((name))` is filled from the personalisation; names match whatever their case and
//!   their spaces, hyphens and underscores (`((First name))` takes `first_name`);
//! - `((name??text))` shows `text` only when the value says yes (`yes`, `y`, `true`, `t`,
//!   `1`, `include`, `show`, in any case, or the JSON `true`);
//! - a list value becomes a bulleted list;
//! - a placeholder left without a value, optional ones included, is an error that names
//!   every one missing (Notify's `Missing personalisation: a, b`); extra values are ignored.
//!
//! And the length of a text message: 160 characters in one message, 153 per part beyond,
//! in the GSM 7-bit alphabet (whose extension characters count twice); 70 and 67 when any
//! character is outside it, as Chinese always is.

use serde_json::{Map, Value};

/// A placeholder in a template's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placeholder {
    /// Its name as written.
    pub name: String,
    /// For `((name??text))`, the text shown when the value says yes.
    pub optional: Option<String>,
}

/// The placeholders of `text`, in order, each name once (the first spelling kept).
pub fn placeholders(text: &str) -> Vec<Placeholder> {
    let mut keys: Vec<String> = Vec::new();
    let mut found: Vec<Placeholder> = Vec::new();
    for (_, inner) in spans(text) {
        let p = parse(inner);
        let k = key(&p.name);
        if !keys.contains(&k) {
            keys.push(k);
            found.push(p);
        }
    }
    found
}

/// A template's text could not be filled: these placeholders have no value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing(pub Vec<String>);

impl std::fmt::Display for Missing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Missing personalisation: {}", self.0.join(", "))
    }
}

impl std::error::Error for Missing {}

/// `text` with every placeholder filled from `values`.
pub fn render(text: &str, values: &Map<String, Value>) -> Result<String, Missing> {
    let given = keys(values);
    let mut out = String::with_capacity(text.len() + 64);
    // Each missing placeholder once, as first spelled, in the order they come.
    let mut missing: Vec<(String, String)> = Vec::new();
    let mut rest = 0;
    for (start, inner) in spans(text) {
        out.push_str(&text[rest..start]);
        rest = start + inner.len() + 4;
        let (name, shown) = split(inner);
        let Some(value) = value_of(&given, name) else {
            let k = key(name);
            if !missing.iter().any(|(m, _)| *m == k) {
                missing.push((k, name.to_string()));
            }
            continue;
        };
        match shown {
            Some(shown) => {
                if says_yes(value) {
                    out.push_str(shown);
                }
            }
            None => push_text(&mut out, value),
        }
    }
    if !missing.is_empty() {
        return Err(Missing(missing.into_iter().map(|(_, name)| name).collect()));
    }
    out.push_str(&text[rest..]);
    Ok(out)
}

/// Each `((…))` in `text`: where it starts, and what is between the brackets (no brackets
/// inside; an unclosed one is text).
fn spans(text: &str) -> Vec<(usize, &str)> {
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(open) = text[from..].find("((").map(|i| from + i) {
        // `(((x)))` holds the placeholder `x` inside a pair of brackets.
        let mut open = open;
        while text[open + 2..].starts_with('(') {
            open += 1;
        }
        let inner_start = open + 2;
        match text[inner_start..].find(['(', ')']) {
            Some(i) if text[inner_start + i..].starts_with("))") && i > 0 => {
                out.push((open, &text[inner_start..inner_start + i]));
                from = inner_start + i + 2;
            }
            _ => from = inner_start,
        }
    }
    out
}

fn parse(inner: &str) -> Placeholder {
    let (name, shown) = split(inner);
    Placeholder {
        name: name.to_string(),
        optional: shown.map(str::to_string),
    }
}

/// What is between a placeholder's brackets: its name, and for `name??text` the text shown
/// when the value says yes.
fn split(inner: &str) -> (&str, Option<&str>) {
    match inner.split_once("??") {
        Some((name, shown)) => (name.trim(), Some(shown)),
        None => (inner.trim(), None),
    }
}

/// A name as matched: lower case, without spaces, hyphens and underscores.
pub(crate) fn key(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .collect()
}

fn keys(values: &Map<String, Value>) -> Vec<(String, &Value)> {
    values
        .iter()
        .filter(|(_, v)| !v.is_null())
        .map(|(k, v)| (key(k), v))
        .collect()
}

/// The value given for the placeholder `name` (keys made by [`keys`]).
fn value_of<'v>(given: &[(String, &'v Value)], name: &str) -> Option<&'v Value> {
    given
        .iter()
        .find(|(k, _)| same_key(k, name))
        .map(|(_, v)| *v)
}

/// Whether `name`, as matched ([`key`]), is `k`, without making its key.
fn same_key(k: &str, name: &str) -> bool {
    let mut expected = k.chars();
    name.chars()
        .filter(|c| !matches!(c, ' ' | '-' | '_'))
        .flat_map(char::to_lowercase)
        .all(|c| expected.next() == Some(c))
        && expected.next().is_none()
}

fn says_yes(v: &Value) -> bool {
    match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_i64() == Some(1),
        Value::String(s) => matches!(
            s.trim().to_lowercase().as_str(),
            "yes" | "y" | "true" | "t" | "1" | "include" | "show"
        ),
        _ => false,
    }
}

/// A value as it is shown in the text: a list as a bulleted list.
fn push_text(out: &mut String, v: &Value) {
    use std::fmt::Write as _;
    match v {
        Value::String(s) => out.push_str(s),
        Value::Array(items) => {
            out.push_str("\n\n");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push('\n');
                }
                out.push_str("* ");
                push_text(out, item);
            }
            out.push('\n');
        }
        Value::Null => {}
        other => {
            let _ = write!(out, "{other}");
        }
    }
}

/// How a text message is sent: its length in characters (GSM extension characters count
/// twice in the GSM alphabet) and the number of messages it takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmsLength {
    /// Characters, as the network counts them.
    pub characters: usize,
    /// Whether every character is in the GSM 7-bit alphabet.
    pub gsm: bool,
    /// Messages it is sent in.
    pub fragments: usize,
}

/// The longest text message Notify sends (six parts of 153).
pub const SMS_CHARACTER_LIMIT: usize = 918;

/// The length of the text message `text`.
pub fn sms_length(text: &str) -> SmsLength {
    const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
    const EXTENSION: &str = "^{}\\[~]|€\u{c}";
    let gsm = text
        .chars()
        .all(|c| BASIC.contains(c) || EXTENSION.contains(c));
    let characters = if gsm {
        text.chars()
            .map(|c| if EXTENSION.contains(c) { 2 } else { 1 })
            .sum()
    } else {
        // Outside GSM, UCS-2 code units.
        text.encode_utf16().count()
    };
    let (one, part) = if gsm { (160, 153) } else { (70, 67) };
    let fragments = match characters {
        0 => 0,
        n if n <= one => 1,
        n => n.div_ceil(part),
    };
    SmsLength {
        characters,
        gsm,
        fragments,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn values(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn placeholders_are_filled_whatever_the_case_and_separators() {
        let text = "Dear ((First name)), your ((reference_number)) is ready. ((first name))!";
        let filled = render(
            text,
            &values(json!({"first_name": "Mei-ling", "Reference-Number": 42, "extra": "ignored"})),
        )
        .unwrap();
        assert_eq!(filled, "Dear Mei-ling, your 42 is ready. Mei-ling!");
        assert_eq!(
            placeholders(text)
                .into_iter()
                .map(|p| p.name)
                .collect::<Vec<_>>(),
            ["First name", "reference_number"]
        );
    }

    #[test]
    fn optional_text_shows_only_when_the_value_says_yes() {
        let text = "Hello.((urgent??\nPlease reply today.)) Bye.";
        for (value, shown) in [
            (json!("yes"), true),
            (json!("Show"), true),
            (json!(true), true),
            (json!(1), true),
            (json!("no"), false),
            (json!(""), false),
            (json!(false), false),
        ] {
            let out = render(text, &values(json!({ "urgent": value }))).unwrap();
            assert_eq!(out.contains("Please reply today."), shown, "{value}");
        }
    }

    #[test]
    fn every_missing_value_is_named_optional_ones_too() {
        let err = render(
            "((name)) ((date)) ((vip??Welcome back)) ((name))",
            &values(json!({"date": "2026-12-01", "vip": null})),
        )
        .unwrap_err();
        assert_eq!(err.0, ["name", "vip"]);
        assert_eq!(err.to_string(), "Missing personalisation: name, vip");
        // Once each, as first spelled, however spelled after.
        let err = render(
            "((First name)) ((when)) ((first_name)) ((When))",
            &values(json!({"place": "Taipei"})),
        )
        .unwrap_err();
        assert_eq!(err.0, ["First name", "when"]);
    }

    #[test]
    fn lists_become_bullets_and_stray_brackets_stay_text() {
        let out = render(
            "Bring: ((documents)) (and (this)) ((not closed",
            &values(json!({"documents": ["passport", "photo"]})),
        )
        .unwrap();
        assert_eq!(
            out,
            "Bring: \n\n* passport\n* photo\n (and (this)) ((not closed"
        );
        assert_eq!(
            render("(((x)))", &values(json!({"x": "y"}))).unwrap(),
            "(y)"
        );
    }

    #[test]
    fn text_messages_count_as_the_network_counts_them() {
        assert_eq!(sms_length("").fragments, 0);
        let plain = "a".repeat(160);
        assert_eq!(sms_length(&plain).fragments, 1);
        assert_eq!(sms_length(&format!("{plain}a")).fragments, 2);
        assert_eq!(sms_length(&"a".repeat(306)).fragments, 2);
        assert_eq!(sms_length(&"a".repeat(307)).fragments, 3);
        // Extension characters count twice.
        let braces = sms_length("{}");
        assert_eq!((braces.characters, braces.gsm), (4, true));
        // Chinese is outside GSM: 70 in one message, 67 per part beyond.
        let zh = "您的申請已核准".repeat(10);
        let length = sms_length(&zh);
        assert_eq!(
            (length.characters, length.gsm, length.fragments),
            (70, false, 1)
        );
        assert_eq!(sms_length(&format!("{zh}。")).fragments, 2);
    }
}
