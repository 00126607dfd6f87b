//! Unified business numbers (統一編號): eight digits with a weighted check.

/// Weights of the eight digits in the check.
const WEIGHTS: [u32; 8] = [1, 2, 1, 2, 1, 2, 4, 1];

/// Sums the digit sums of the weighted digits; the seventh digit is left out when it is 7
/// (its product 28 counts as either 1 or 0), which the second value reports.
fn weighted(digits: &[u32; 8]) -> (u32, bool) {
    let mut sum = 0;
    for (i, (&d, &w)) in digits.iter().zip(WEIGHTS.iter()).enumerate() {
        if i == 6 && d == 7 {
            continue;
        }
        let p = d * w;
        sum += p / 10 + p % 10;
    }
    (sum, digits[6] == 7)
}

/// Whether `s` is a valid unified business number (統一編號).
///
/// Each digit is multiplied by 1, 2, 1, 2, 1, 2, 4, 1 and the digits of the products are
/// added up; the number is valid when that sum is divisible by 5 (the Ministry of
/// Finance's rule since 2023; older numbers satisfy the stricter divisible-by-10 rule). When
/// the seventh digit is 7 its product 28 may count as 1 or 0.
pub fn ubn_is_valid(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() != 8 || !b.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let mut digits = [0u32; 8];
    for (d, c) in digits.iter_mut().zip(b) {
        *d = u32::from(c - b'0');
    }
    let (sum, seven) = weighted(&digits);
    sum % 5 == 0 || (seven && (sum + 1) % 5 == 0)
}

/// Completes seven leading digits (below 10,000,000) into a number that passes both the
/// current and the pre-2023 (divisible by 10) check.
pub(crate) fn ubn_from_prefix(prefix: u32) -> String {
    let mut digits = [0u32; 8];
    let mut rest = prefix % 10_000_000;
    for i in (0..7).rev() {
        digits[i] = rest % 10;
        rest /= 10;
    }
    let (sum, _) = weighted(&digits);
    // With a seventh digit of 7 the product counts as 0 here, which is one of its two
    // allowed readings.
    digits[7] = (10 - sum % 10) % 10;
    digits.iter().map(|d| char::from(b'0' + *d as u8)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_numbers_are_valid() {
        // TSMC, Chunghwa Telecom, Hon Hai and President Chain Store.
        for ok in ["22099131", "96979933", "04541302", "22555003"] {
            assert!(ubn_is_valid(ok), "{ok}");
        }
        // Seventh digit 7: valid with 28 read as 0 and as 1 respectively.
        assert!(ubn_is_valid("10458575"));
        assert!(ubn_is_valid("10458574"));
        // Valid only under the divisible-by-5 rule in force since 2023.
        assert!(ubn_is_valid("22099136"));
    }

    #[test]
    fn wrong_numbers_are_rejected() {
        for bad in [
            "22099132",
            "96979934",
            "2209913",
            "220991311",
            "2209913a",
            "",
            "10458573",
        ] {
            assert!(!ubn_is_valid(bad), "{bad}");
        }
    }

    #[test]
    fn completed_prefixes_are_valid_under_both_rules() {
        for p in [0, 1, 2_209_913, 1_045_857, 9_999_999, 1_234_567, 7_777_777] {
            let n = ubn_from_prefix(p);
            assert_eq!(n.len(), 8);
            assert!(ubn_is_valid(&n), "{n}");
            let digits: Vec<u32> = n.bytes().map(|c| u32::from(c - b'0')).collect();
            let mut arr = [0; 8];
            arr.copy_from_slice(&digits);
            let (sum, seven) = weighted(&arr);
            assert!(sum % 10 == 0 || (seven && (sum + 1) % 10 == 0), "{n}");
        }
        assert_eq!(ubn_from_prefix(2_209_913), "22099131");
    }
}
