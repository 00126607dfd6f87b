//! Taiwan's national identification number and the matching resident-certificate (UI)
//! number for foreign residents: a letter for the place of first registration, a digit for
//! sex and kind, seven serial digits and a check digit.

use std::fmt;

/// A national identification number whose format and check digit are valid.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NationalId([u8; 10]);

/// Who holds a [`NationalId`], read from its second character.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// A citizen with household registration (second digit 1 or 2).
    Citizen,
    /// A foreign resident with a resident certificate (second digit 8 or 9).
    ForeignResident,
}

/// Sex as recorded in the identification number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sex {
    /// Second digit 1 or 8.
    Male,
    /// Second digit 2 or 9.
    Female,
}

/// Why a string is not a valid identification number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NationalIdError {
    /// Not ten characters long.
    #[error("an identification number has 10 characters; this one has {0}")]
    Length(usize),
    /// The first character is not a letter A-Z.
    #[error("an identification number starts with a letter A-Z")]
    Letter,
    /// The second character is not 1, 2, 8 or 9.
    #[error("the second character of an identification number is 1, 2, 8 or 9")]
    KindDigit,
    /// Something other than a digit after the letter.
    #[error("an identification number has nine digits after its letter")]
    Digits,
    /// The check digit does not match.
    #[error("the check digit of this identification number is wrong")]
    CheckDigit,
}

/// The two-digit code of each first letter, as used by the check-digit formula.
fn letter_code(letter: u8) -> Option<u32> {
    const CODES: [u32; 26] = [
        10, 11, 12, 13, 14, 15, 16, 17, 34, 18, 19, 20, 21, 22, 35, 23, 24, 25, 26, 27, 28, 29, 32,
        30, 31, 33,
    ];
    letter
        .checked_sub(b'A')
        .and_then(|i| CODES.get(i as usize).copied())
}

/// The weighted sum of the first nine characters (letter code and eight digits).
fn weighted_sum(letter: u8, digits: &[u8]) -> Option<u32> {
    let code = letter_code(letter)?;
    let mut sum = code / 10 + (code % 10) * 9;
    for (i, d) in digits.iter().take(8).enumerate() {
        sum += u32::from(*d) * (8 - i as u32);
    }
    Some(sum)
}

impl NationalId {
    /// Parses and checks an identification number; lower-case letters are accepted.
    pub fn parse(s: &str) -> Result<NationalId, NationalIdError> {
        let s = s.trim();
        let bytes = s.as_bytes();
        if bytes.len() != 10 || s.chars().count() != 10 {
            return Err(NationalIdError::Length(s.chars().count()));
        }
        let letter = bytes[0].to_ascii_uppercase();
        if !letter.is_ascii_uppercase() {
            return Err(NationalIdError::Letter);
        }
        if !bytes[1..].iter().all(u8::is_ascii_digit) {
            return Err(NationalIdError::Digits);
        }
        if !matches!(bytes[1], b'1' | b'2' | b'8' | b'9') {
            return Err(NationalIdError::KindDigit);
        }
        let digits: Vec<u8> = bytes[1..].iter().map(|b| b - b'0').collect();
        let sum = weighted_sum(letter, &digits).ok_or(NationalIdError::Letter)?;
        if (sum + u32::from(digits[8])) % 10 != 0 {
            return Err(NationalIdError::CheckDigit);
        }
        let mut out = [0u8; 10];
        out[0] = letter;
        out[1..].copy_from_slice(&bytes[1..]);
        Ok(NationalId(out))
    }

    /// Builds the number for a region letter, holder, sex and a serial below 10,000,000,
    /// computing its check digit.
    pub fn compose(letter: char, holder: Holder, sex: Sex, serial: u32) -> Option<NationalId> {
        if !letter.is_ascii_uppercase() || serial >= 10_000_000 {
            return None;
        }
        let kind = match (holder, sex) {
            (Holder::Citizen, Sex::Male) => 1,
            (Holder::Citizen, Sex::Female) => 2,
            (Holder::ForeignResident, Sex::Male) => 8,
            (Holder::ForeignResident, Sex::Female) => 9,
        };
        let mut digits = [0u8; 9];
        digits[0] = kind;
        let mut rest = serial;
        for i in (1..8).rev() {
            digits[i] = (rest % 10) as u8;
            rest /= 10;
        }
        let sum = weighted_sum(letter as u8, &digits)?;
        digits[8] = ((10 - sum % 10) % 10) as u8;
        let mut out = [0u8; 10];
        out[0] = letter as u8;
        for (o, d) in out[1..].iter_mut().zip(digits) {
            *o = d + b'0';
        }
        Some(NationalId(out))
    }

    /// The number as text.
    pub fn as_str(&self) -> &str {
        // Only ASCII letters and digits are ever stored.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }

    /// Whether it belongs to a citizen or a foreign resident.
    pub fn holder(&self) -> Holder {
        match self.0[1] {
            b'8' | b'9' => Holder::ForeignResident,
            _ => Holder::Citizen,
        }
    }

    /// The sex recorded in the number.
    pub fn sex(&self) -> Sex {
        match self.0[1] {
            b'1' | b'8' => Sex::Male,
            _ => Sex::Female,
        }
    }

    /// The number with all but the letter and the last three digits hidden, for pages and
    /// logs that must not show it whole.
    pub fn masked(&self) -> String {
        format!("{}******{}", self.0[0] as char, &self.as_str()[7..])
    }
}

impl fmt::Display for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for NationalId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Debug output ends up in logs: never print the full number there.
        write!(f, "NationalId({})", self.masked())
    }
}

impl std::str::FromStr for NationalId {
    type Err = NationalIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NationalId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_valid_numbers_parse() {
        // The textbook example and the Ministry of the Interior's sample number.
        for ok in ["A123456789", "F131104093", "a123456789"] {
            assert!(NationalId::parse(ok).is_ok(), "{ok}");
        }
    }

    #[test]
    fn each_kind_of_mistake_has_its_own_error() {
        assert_eq!(
            NationalId::parse("A12345678"),
            Err(NationalIdError::Length(9))
        );
        assert_eq!(
            NationalId::parse("1123456789"),
            Err(NationalIdError::Letter)
        );
        assert_eq!(
            NationalId::parse("A323456789"),
            Err(NationalIdError::KindDigit)
        );
        assert_eq!(
            NationalId::parse("A12345678X"),
            Err(NationalIdError::Digits)
        );
        assert_eq!(
            NationalId::parse("A123456788"),
            Err(NationalIdError::CheckDigit)
        );
    }

    #[test]
    fn composed_numbers_are_valid_and_carry_holder_and_sex() {
        for serial in [0, 1, 4_567_890, 9_999_999] {
            for (holder, sex) in [
                (Holder::Citizen, Sex::Male),
                (Holder::Citizen, Sex::Female),
                (Holder::ForeignResident, Sex::Male),
                (Holder::ForeignResident, Sex::Female),
            ] {
                for letter in 'A'..='Z' {
                    let id = NationalId::compose(letter, holder, sex, serial).unwrap();
                    let back = NationalId::parse(id.as_str()).unwrap();
                    assert_eq!(back, id);
                    assert_eq!(back.holder(), holder);
                    assert_eq!(back.sex(), sex);
                }
            }
        }
        assert_eq!(
            NationalId::compose('A', Holder::Citizen, Sex::Male, 2_345_678)
                .unwrap()
                .as_str(),
            "A123456789"
        );
    }

    #[test]
    fn debug_output_masks_the_number() {
        let id = NationalId::parse("A123456789").unwrap();
        assert_eq!(format!("{id:?}"), "NationalId(A******789)");
    }
}
