//! Levels of assurance of a sign-in, as eIDAS defines them: low, substantial, high.

/// How sure Civitas is that the person signed in is who they claim to be (eIDAS levels).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Loa {
    /// eIDAS low: a single factor, such as a password.
    Low,
    /// eIDAS substantial: two factors, one of them possession-based.
    Substantial,
    /// eIDAS high: a certified device with a tamper-resistant key (a citizen certificate card).
    High,
}

impl Loa {
    /// Stable code stored in the database and used in URLs: `low`, `substantial`, `high`.
    pub fn code(self) -> &'static str {
        match self {
            Loa::Low => "low",
            Loa::Substantial => "substantial",
            Loa::High => "high",
        }
    }

    /// The OpenID Connect `acr` value of this level (the eIDAS URIs).
    pub fn acr(self) -> &'static str {
        match self {
            Loa::Low => "http://eidas.europa.eu/LoA/low",
            Loa::Substantial => "http://eidas.europa.eu/LoA/substantial",
            Loa::High => "http://eidas.europa.eu/LoA/high",
        }
    }

    /// The level an `acr` value names, if it is one of the eIDAS URIs.
    pub fn from_acr(acr: &str) -> Option<Loa> {
        [Loa::Low, Loa::Substantial, Loa::High]
            .into_iter()
            .find(|l| l.acr() == acr)
    }
}

#[cfg(test)]
mod tests {
    use super::Loa;

    #[test]
    fn levels_are_ordered_and_round_trip_through_acr() {
        assert!(Loa::Low < Loa::Substantial && Loa::Substantial < Loa::High);
        for l in [Loa::Low, Loa::Substantial, Loa::High] {
            assert_eq!(Loa::from_acr(l.acr()), Some(l));
        }
        assert_eq!(
            Loa::from_acr("http://eidas.europa.eu/LoA/substantial"),
            Some(Loa::Substantial)
        );
        assert_eq!(Loa::from_acr("urn:mace:incommon:iap:silver"), None);
        assert_eq!(Loa::High.code(), "high");
    }
}
