//! X-Road identifiers, as the REST protocol (PR-REST 1.0) writes them: a client is
//! `INSTANCE/CLASS/MEMBER[/SUBSYSTEM]`, a service `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE`,
//! and each part is UTF-8 percent-encoded on its own, so a `/` inside a part could never be
//! taken for a separator. Parts may use only `A-Z a-z 0-9 ' ( ) + , - . = ?` (PR-REST 1.0.3,
//! section 4.8), which this module enforces on everything it parses or builds.

use std::fmt;

/// Why an identifier was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XRoadIdError {
    /// Wrong number of parts.
    #[error("{what} must have {expected} parts separated by '/', not {found}")]
    Parts {
        /// What was being read.
        what: &'static str,
        /// The accepted counts, in words.
        expected: &'static str,
        /// How many parts it had.
        found: usize,
    },
    /// A part is empty.
    #[error("{what} has an empty part")]
    Empty {
        /// What was being read.
        what: &'static str,
    },
    /// A percent sign not followed by two hex digits, a raw character a URI segment cannot
    /// hold, or bytes that are not UTF-8.
    #[error("{what} is not correctly percent-encoded: {part}")]
    Encoding {
        /// What was being read.
        what: &'static str,
        /// The offending part, as given.
        part: String,
    },
    /// A decoded part holds a character identifiers may not use.
    #[error(
        "{what} part {part:?} has the character {ch:?}; identifiers may use only A-Z, a-z, 0-9 and ' ( ) + , - . = ?"
    )]
    Character {
        /// What was being read.
        what: &'static str,
        /// The decoded part.
        part: String,
        /// The first character not allowed.
        ch: char,
    },
}

/// Whether `c` may appear in an identifier part.
pub fn is_identifier_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || "'()+,-.=?".contains(c)
}

/// Checks one decoded part.
pub fn check_part(what: &'static str, part: &str) -> Result<(), XRoadIdError> {
    if part.is_empty() {
        return Err(XRoadIdError::Empty { what });
    }
    match part.chars().find(|c| !is_identifier_char(*c)) {
        Some(ch) => Err(XRoadIdError::Character {
            what,
            part: part.to_string(),
            ch,
        }),
        None => Ok(()),
    }
}

/// Decodes one percent-encoded URI segment: raw characters must be RFC 3986 `pchar`s, `%HH`
/// escapes are UTF-8, and `+` stays a plus.
pub fn decode_segment(what: &'static str, raw: &str) -> Result<String, XRoadIdError> {
    let bad = || XRoadIdError::Encoding {
        what,
        part: raw.to_string(),
    };
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let hex = raw
                .get(i + 1..i + 3)
                .filter(|h| h.bytes().all(|b| b.is_ascii_hexdigit()))
                .ok_or_else(bad)?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
            i += 3;
        } else if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b);
            i += 1;
        } else {
            return Err(bad());
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// Encodes one part as a URI path segment: what is not unreserved or a sub-delimiter is
/// escaped (identifier characters need no escape but `?`).
pub fn encode_segment(part: &str) -> String {
    Segment(part).to_string()
}

/// One part written as [`encode_segment`] encodes it, straight into a formatter: the
/// identifiers are displayed on every call, and this keeps that free of allocations.
struct Segment<'a>(&'a str);

impl fmt::Display for Segment<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = |b: u8| b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b);
        let text = self.0;
        let mut run = 0;
        for (i, b) in text.bytes().enumerate() {
            if plain(b) {
                continue;
            }
            // A run of plain bytes is ASCII, so it starts and ends on character boundaries.
            if run < i {
                f.write_str(&text[run..i])?;
            }
            write!(f, "%{b:02X}")?;
            run = i + 1;
        }
        if run < text.len() {
            f.write_str(&text[run..])?;
        }
        Ok(())
    }
}

/// Splits an encoded identifier at its `/` separators and decodes and checks each part.
fn parts(what: &'static str, text: &str) -> Result<Vec<String>, XRoadIdError> {
    text.split('/')
        .map(|raw| {
            let part = decode_segment(what, raw)?;
            check_part(what, &part)?;
            Ok(part)
        })
        .collect()
}

/// A member, `INSTANCE/CLASS/CODE`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MemberId {
    /// The X-Road instance, such as `TW` or `CIVITAS-DEMO`.
    pub instance: String,
    /// The member class, such as `GOV` or `COM`.
    pub class: String,
    /// The member code.
    pub code: String,
}

/// A client: a member, or one of its subsystems (`INSTANCE/CLASS/MEMBER[/SUBSYSTEM]`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientId {
    /// The member.
    pub member: MemberId,
    /// The subsystem, when the client is one.
    pub subsystem: Option<String>,
}

/// A service, `INSTANCE/CLASS/MEMBER/SUBSYSTEM/SERVICE` (REST services carry no version).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ServiceId {
    /// The subsystem that provides it.
    pub provider: ClientId,
    /// The service code.
    pub code: String,
}

impl MemberId {
    /// A member from its decoded parts, each checked.
    pub fn new(instance: &str, class: &str, code: &str) -> Result<MemberId, XRoadIdError> {
        for p in [instance, class, code] {
            check_part("member identifier", p)?;
        }
        Ok(MemberId {
            instance: instance.into(),
            class: class.into(),
            code: code.into(),
        })
    }

    /// Parses an encoded member identifier, `INSTANCE/CLASS/CODE`.
    pub fn parse(text: &str) -> Result<MemberId, XRoadIdError> {
        let what = "member identifier";
        let p = parts(what, text.trim())?;
        match p.as_slice() {
            [i, c, m] => MemberId::new(i, c, m),
            _ => Err(XRoadIdError::Parts {
                what,
                expected: "3",
                found: p.len(),
            }),
        }
    }

    /// This member's subsystem `code`.
    pub fn subsystem(&self, code: &str) -> Result<ClientId, XRoadIdError> {
        check_part("subsystem code", code)?;
        Ok(ClientId {
            member: self.clone(),
            subsystem: Some(code.into()),
        })
    }
}

impl ClientId {
    /// Parses an encoded client identifier (the `X-Road-Client` header's form).
    pub fn parse(text: &str) -> Result<ClientId, XRoadIdError> {
        let what = "client identifier";
        let p = parts(what, text.trim())?;
        match p.as_slice() {
            [i, c, m] => Ok(ClientId {
                member: MemberId::new(i, c, m)?,
                subsystem: None,
            }),
            [i, c, m, s] => Ok(ClientId {
                member: MemberId::new(i, c, m)?,
                subsystem: Some(s.clone()),
            }),
            _ => Err(XRoadIdError::Parts {
                what,
                expected: "3 or 4",
                found: p.len(),
            }),
        }
    }

    /// This subsystem's service `code`; a member-level client provides no services.
    pub fn service(&self, code: &str) -> Result<ServiceId, XRoadIdError> {
        check_part("service code", code)?;
        if self.subsystem.is_none() {
            return Err(XRoadIdError::Parts {
                what: "service identifier",
                expected: "5",
                found: 4,
            });
        }
        Ok(ServiceId {
            provider: self.clone(),
            code: code.into(),
        })
    }
}

impl ServiceId {
    /// Parses an encoded service identifier.
    pub fn parse(text: &str) -> Result<ServiceId, XRoadIdError> {
        let what = "service identifier";
        let p = parts(what, text.trim())?;
        match p.as_slice() {
            [i, c, m, s, code] => Ok(ServiceId {
                provider: ClientId {
                    member: MemberId::new(i, c, m)?,
                    subsystem: Some(s.clone()),
                },
                code: code.clone(),
            }),
            _ => Err(XRoadIdError::Parts {
                what,
                expected: "5",
                found: p.len(),
            }),
        }
    }
}

impl fmt::Display for MemberId {
    /// The encoded form, each part escaped on its own.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}",
            Segment(&self.instance),
            Segment(&self.class),
            Segment(&self.code)
        )
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.member)?;
        if let Some(s) = &self.subsystem {
            write!(f, "/{}", Segment(s))?;
        }
        Ok(())
    }
}

impl fmt::Display for ServiceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, Segment(&self.code))
    }
}

/// Identifiers serialise as their encoded text, and are parsed back from it.
macro_rules! serialise_as_text {
    ($($t:ty),*) => {$(
        impl serde::Serialize for $t {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> serde::Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                <$t>::parse(&text).map_err(serde::de::Error::custom)
            }
        }
    )*};
}
serialise_as_text!(MemberId, ClientId, ServiceId);

/// `X-Road-Represented-Party`: `CLASS/CODE` or just `CODE` (no instance).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepresentedParty {
    /// The member class, when given.
    pub class: Option<String>,
    /// The member code.
    pub code: String,
}

impl RepresentedParty {
    /// Parses the header's value.
    pub fn parse(text: &str) -> Result<RepresentedParty, XRoadIdError> {
        let what = "represented party";
        let p = parts(what, text.trim())?;
        match p.as_slice() {
            [code] => Ok(RepresentedParty {
                class: None,
                code: code.clone(),
            }),
            [class, code] => Ok(RepresentedParty {
                class: Some(class.clone()),
                code: code.clone(),
            }),
            _ => Err(XRoadIdError::Parts {
                what,
                expected: "1 or 2",
                found: p.len(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_from_the_protocol_text_parse_and_print_back() {
        let client = ClientId::parse("INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1").unwrap();
        assert_eq!(client.member.code, "MEMBER1");
        assert_eq!(client.subsystem.as_deref(), Some("SUBSYSTEM1"));
        assert_eq!(client.to_string(), "INSTANCE/CLASS1/MEMBER1/SUBSYSTEM1");
        let member = ClientId::parse("DEV/COM/222").unwrap();
        assert_eq!(member.subsystem, None);
        let service = ServiceId::parse("DEV/COM/222/TESTSERVICE/petstore").unwrap();
        assert_eq!(service.code, "petstore");
        assert_eq!(service.provider.to_string(), "DEV/COM/222/TESTSERVICE");
        assert_eq!(service.to_string(), "DEV/COM/222/TESTSERVICE/petstore");
    }

    #[test]
    fn each_part_is_decoded_on_its_own_and_printed_escaped() {
        // `?` is an identifier character but must be escaped in a path segment.
        let s = ServiceId::parse("TW/GOV/HRO/population/find%3F").unwrap();
        assert_eq!(s.code, "find?");
        assert_eq!(s.to_string(), "TW/GOV/HRO/population/find%3F");
        // Every byte of a character outside ASCII is escaped, and plain runs around it kept.
        assert_eq!(encode_segment("戶政?a b"), "%E6%88%B6%E6%94%BF%3Fa%20b");
        assert_eq!(encode_segment("a%"), "a%25");
        assert_eq!(encode_segment(""), "");
        // `+` stays a plus; it is not a space.
        assert_eq!(ClientId::parse("TW/GOV/A+B").unwrap().member.code, "A+B");
        // An encoded whole identifier is one part, not five.
        assert!(matches!(
            ServiceId::parse("TW%2FGOV%2FHRO%2Fpop%2Ffind"),
            Err(XRoadIdError::Character { ch: '/', .. })
        ));
    }

    #[test]
    fn bad_identifiers_are_refused_with_their_reason() {
        assert!(matches!(
            ClientId::parse("TW/GOV"),
            Err(XRoadIdError::Parts { found: 2, .. })
        ));
        assert!(matches!(
            ServiceId::parse("TW/GOV/HRO/pop"),
            Err(XRoadIdError::Parts { found: 4, .. })
        ));
        assert!(matches!(
            ClientId::parse("TW//HRO"),
            Err(XRoadIdError::Empty { .. })
        ));
        assert!(matches!(
            ClientId::parse("TW/GOV/H%ZZ"),
            Err(XRoadIdError::Encoding { .. })
        ));
        assert!(matches!(
            ClientId::parse("TW/GOV/H R"),
            Err(XRoadIdError::Encoding { .. })
        ));
        // `from_str_radix` would take a sign: `%+1` is not an escape.
        assert!(matches!(
            ClientId::parse("TW/GOV/A%+1"),
            Err(XRoadIdError::Encoding { .. })
        ));
        for bad in [
            "TW/GOV/a%3Bb",
            "TW/GOV/a_b",
            "TW/GOV/%E8%87%BA",
            "TW/GOV/a%00",
        ] {
            assert!(
                matches!(ClientId::parse(bad), Err(XRoadIdError::Character { .. })),
                "{bad}"
            );
        }
        let e = ClientId::parse("TW/GOV/a_b").unwrap_err().to_string();
        assert!(e.contains("'_'"), "{e}");
    }

    #[test]
    fn represented_parties_have_a_class_or_not_and_no_instance() {
        let p = RepresentedParty::parse("COM/12345678").unwrap();
        assert_eq!(
            (p.class.as_deref(), p.code.as_str()),
            (Some("COM"), "12345678")
        );
        assert_eq!(RepresentedParty::parse("12345678").unwrap().class, None);
        assert!(RepresentedParty::parse("TW/COM/12345678").is_err());
    }
}
