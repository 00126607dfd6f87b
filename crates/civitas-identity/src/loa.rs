//! Levels of assurance, as eIDAS defines them.

/// How sure Civitas is that the person in a session is who the account says.
///
/// Password alone earns `Low`; a password with a second factor (TOTP) earns `Substantial`;
/// a passkey with user verification (phishing-resistant, bound to a device, unlocked by the
/// person) on an account verified against the population register earns `High`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Loa {
    /// eIDAS low.
    Low,
    /// eIDAS substantial.
    Substantial,
    /// eIDAS high.
    High,
}

impl Loa {
    /// Every level, lowest first.
    pub const ALL: [Loa; 3] = [Loa::Low, Loa::Substantial, Loa::High];

    /// Stable code stored in the database and used in URLs.
    pub fn code(self) -> &'static str {
        match self {
            Loa::Low => "low",
            Loa::Substantial => "substantial",
            Loa::High => "high",
        }
    }

    /// Parses a stored code.
    pub fn from_code(code: &str) -> Option<Loa> {
        Loa::ALL.into_iter().find(|l| l.code() == code)
    }

    /// The OpenID Connect `acr` value for this level (the eIDAS URIs).
    pub fn acr(self) -> &'static str {
        match self {
            Loa::Low => "http://eidas.europa.eu/LoA/low",
            Loa::Substantial => "http://eidas.europa.eu/LoA/substantial",
            Loa::High => "http://eidas.europa.eu/LoA/high",
        }
    }

    /// Parses an `acr` value.
    pub fn from_acr(acr: &str) -> Option<Loa> {
        Loa::ALL.into_iter().find(|l| l.acr() == acr)
    }
}

#[cfg(test)]
mod tests {
    use super::Loa;

    #[test]
    fn levels_order_and_round_trip() {
        assert!(Loa::Low < Loa::Substantial && Loa::Substantial < Loa::High);
        for l in Loa::ALL {
            assert_eq!(Loa::from_code(l.code()), Some(l));
            assert_eq!(Loa::from_acr(l.acr()), Some(l));
        }
        assert_eq!(Loa::from_acr("urn:other"), None);
    }
}
