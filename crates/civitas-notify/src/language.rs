//! A template's languages: its text is written in Traditional Chinese (`zh-TW`) or English
//! (`en`), and may carry a translation into the other. A message goes out in the language
//! the sender asks for, else the one the person chose for their messages, else the
//! template's own; a language the template lacks falls back to its own.
//!
//! A translation uses exactly the placeholders of the text it translates, so a sender who
//! fills one in fills in the other.

use std::collections::BTreeMap;

use crate::template::{key, placeholders};
use crate::{Channel, NotifyError};

/// A language messages are written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub enum Language {
    /// Traditional Chinese, as written in Taiwan.
    #[default]
    ZhTw,
    /// English.
    En,
}

impl Language {
    /// Both, in the order pages list them.
    pub const ALL: [Language; 2] = [Language::ZhTw, Language::En];

    /// Its BCP 47 tag.
    pub fn code(self) -> &'static str {
        match self {
            Language::ZhTw => "zh-TW",
            Language::En => "en",
        }
    }

    /// Its name, written in itself.
    pub fn native_name(self) -> &'static str {
        match self {
            Language::ZhTw => "中文",
            Language::En => "English",
        }
    }

    /// Parses a BCP 47 tag: `zh`, `zh-TW`, `zh-Hant`, … are Chinese; `en`, `en-GB`, … are
    /// English.
    pub fn parse(tag: &str) -> Option<Language> {
        let primary = tag.trim().split(['-', '_']).next()?.to_ascii_lowercase();
        match primary.as_str() {
            "zh" => Some(Language::ZhTw),
            "en" => Some(Language::En),
            _ => None,
        }
    }

    /// The other one.
    pub fn other(self) -> Language {
        match self {
            Language::ZhTw => Language::En,
            Language::En => Language::ZhTw,
        }
    }
}

/// A template's text in one language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// Its language.
    pub lang: Language,
    /// The subject (e-mail) or heading (letter).
    pub subject: Option<String>,
    /// The text with its placeholders.
    pub body: String,
}

/// The placeholders of a subject and a body, by the key they are matched with (the name
/// as first written kept for messages).
fn names(subject: Option<&str>, body: &str) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for p in placeholders(subject.unwrap_or_default())
        .into_iter()
        .chain(placeholders(body))
    {
        found.entry(key(&p.name)).or_insert(p.name);
    }
    found
}

/// Checks that `t` translates the text `subject` and `body` of `lang` for `channel`: another
/// language, some text, a subject where the channel has one, and the same placeholders.
pub(crate) fn check_translation(
    channel: Channel,
    lang: Language,
    subject: Option<&str>,
    body: &str,
    t: &Text,
) -> Result<(), NotifyError> {
    if t.lang == lang {
        return Err(NotifyError::Invalid(format!(
            "the translation is in {}, the language of the template itself",
            t.lang.code()
        )));
    }
    let t_subject = t
        .subject
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty());
    if t.body.trim().is_empty() {
        return Err(NotifyError::Invalid(format!(
            "the {} translation has no text",
            t.lang.code()
        )));
    }
    match (channel, t_subject) {
        (Channel::Sms, Some(_)) => {
            return Err(NotifyError::Invalid("a text message has no subject".into()));
        }
        (Channel::Email | Channel::Letter, None) => {
            return Err(NotifyError::Invalid(format!(
                "the {} translation needs a subject (e-mail) or heading (letter)",
                t.lang.code()
            )));
        }
        _ => {}
    }
    let ours = names(subject, body);
    let theirs = names(t_subject, &t.body);
    if ours.keys().ne(theirs.keys()) {
        let only = |a: &BTreeMap<String, String>, b: &BTreeMap<String, String>| {
            a.iter()
                .filter(|(k, _)| !b.contains_key(*k))
                .map(|(_, n)| format!("(({n}))"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let (missing, extra) = (only(&ours, &theirs), only(&theirs, &ours));
        let mut why = Vec::new();
        if !missing.is_empty() {
            why.push(format!("lacks {missing}"));
        }
        if !extra.is_empty() {
            why.push(format!("adds {extra}"));
        }
        return Err(NotifyError::Invalid(format!(
            "the {} translation must use the same placeholders as the {} text: it {}",
            t.lang.code(),
            lang.code(),
            why.join(" and ")
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_parse_by_their_primary_language() {
        for (tag, lang) in [
            ("zh-TW", Language::ZhTw),
            ("zh-Hant-TW", Language::ZhTw),
            ("ZH", Language::ZhTw),
            ("en", Language::En),
            ("en-GB", Language::En),
            ("en_US", Language::En),
        ] {
            assert_eq!(Language::parse(tag), Some(lang), "{tag}");
        }
        assert_eq!(Language::parse("fr"), None);
        assert_eq!(Language::parse(""), None);
        assert_eq!(Language::En.other(), Language::ZhTw);
    }

    fn en(subject: Option<&str>, body: &str) -> Text {
        Text {
            lang: Language::En,
            subject: subject.map(str::to_string),
            body: body.into(),
        }
    }

    #[test]
    fn a_translation_keeps_the_placeholders() {
        let (s, b) = (Some("((name))，您好"), "您的案件 ((case)) 已受理。");
        check_translation(
            Channel::Email,
            Language::ZhTw,
            s,
            b,
            &en(Some("Hello ((Name))"), "Your case ((case)) was received."),
        )
        .unwrap();
        let e = check_translation(
            Channel::Email,
            Language::ZhTw,
            s,
            b,
            &en(Some("Hello"), "Your case ((case)) on ((date))."),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("lacks ((name))") && e.contains("adds ((date))"),
            "{e}"
        );
    }

    #[test]
    fn a_translation_is_in_the_other_language_with_the_channels_parts() {
        let e = check_translation(Channel::Sms, Language::En, None, "Hi", &en(None, "Hi"));
        assert!(
            e.unwrap_err()
                .to_string()
                .contains("language of the template")
        );
        let zh = |subject: Option<&str>| Text {
            lang: Language::ZhTw,
            subject: subject.map(str::to_string),
            body: "你好".into(),
        };
        assert!(check_translation(Channel::Sms, Language::En, None, "Hi", &zh(Some("x"))).is_err());
        assert!(
            check_translation(Channel::Letter, Language::En, Some("H"), "Hi", &zh(None)).is_err()
        );
        assert!(check_translation(Channel::Sms, Language::En, None, "Hi", &zh(None)).is_ok());
    }
}
