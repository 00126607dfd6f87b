//! Letters: the address a sender gives in a letter's personalisation, checked as Notify
//! checks it, and the letter itself as a PDF (A4, the address where a window envelope
//! shows it, the date, the heading and the text).

use serde_json::{Map, Value};

use crate::NotifyError;

/// Notify's address fields, in order.
const LINES: [&str; 7] = [
    "address_line_1",
    "address_line_2",
    "address_line_3",
    "address_line_4",
    "address_line_5",
    "address_line_6",
    "address_line_7",
];

/// Characters an address line must not start with (Notify's rule).
const BAD_FIRST: &[char] = &['@', '(', ')', '=', '[', ']', '”', '\\', '/', ',', '<', '>'];

/// The address lines of a letter's personalisation: `address_line_1` to `_7`, with
/// Notify's older `postcode` as the last line; empty lines dropped. Notify's rules and
/// messages: `address_line_1` present, 3 to 7 lines, no line starting with one of
/// `@ ( ) = [ ] ” \ / , < >`, and a last line that is a postal code (Taiwan's, of 3, 5 or
/// 6 digits) or a country.
pub fn address(personalisation: &Map<String, Value>) -> Result<Vec<String>, NotifyError> {
    let field = |name: &str| -> Option<String> {
        personalisation
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .and_then(|(_, v)| match v {
                Value::String(s) => Some(s.trim().to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|s| !s.is_empty())
    };
    if field("address_line_1").is_none() {
        return Err(NotifyError::Invalid(
            "personalisation address_line_1 is a required property".into(),
        ));
    }
    let mut lines: Vec<String> = LINES.iter().filter_map(|l| field(l)).collect();
    if let Some(postcode) = field("postcode") {
        lines.push(postcode);
    }
    if lines.len() < 3 {
        return Err(NotifyError::Invalid(
            "Address must be at least 3 lines".into(),
        ));
    }
    if lines.len() > 7 {
        return Err(NotifyError::Invalid(
            "Address must be no more than 7 lines".into(),
        ));
    }
    if lines.iter().any(|l| l.starts_with(BAD_FIRST)) {
        return Err(NotifyError::Invalid(
            "Address lines must not start with any of the following characters: @ ( ) = [ ] ” \\ / , < >".into(),
        ));
    }
    let last = lines.last().map(String::as_str).unwrap_or_default();
    let postal_code = last.chars().all(|c| c.is_ascii_digit() || c == '-')
        && matches!(last.chars().filter(char::is_ascii_digit).count(), 3 | 5 | 6);
    let country = !last.chars().any(|c| c.is_ascii_digit());
    if !(postal_code || country) {
        return Err(NotifyError::Invalid(
            "Last line of address must be a postal code or a country".into(),
        ));
    }
    Ok(lines)
}

/// The letter as a PDF: the address lines, the date (`sent_ms`, Taiwan's day), the
/// heading and the text, paragraphs at blank lines.
pub fn pdf(address: &[String], heading: &str, body: &str, sent_ms: i64) -> Vec<u8> {
    let mut doc = civitas_pdf::Pdf::new();
    // Where a DL window envelope shows the address.
    doc.gap(60.0);
    for line in address {
        doc.text(line, 11.0, 0.0);
    }
    doc.gap(36.0);
    doc.text(&taiwan_date(sent_ms), 11.0, 0.0);
    doc.gap(18.0);
    doc.text(heading, 15.0, 0.0);
    doc.gap(8.0);
    for paragraph in body.split("\n\n") {
        for line in paragraph.lines() {
            doc.text(line, 11.0, 0.0);
        }
        doc.gap(8.0);
    }
    let ascii = heading.is_ascii() && body.is_ascii();
    doc.finish(heading, if ascii { "en" } else { "zh-TW" })
}

/// `ms` as a date in Taiwan (UTC+8): `2026-11-23`.
fn taiwan_date(ms: i64) -> String {
    let days = (ms + 8 * 3_600_000).div_euclid(86_400_000);
    // Howard Hinnant's civil-from-days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn of(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn addresses_are_checked_as_notify_checks_them() {
        let ok = address(&of(json!({
            "address_line_1": "王小明",
            "address_line_2": "臺北市中正區重慶南路一段122號",
            "address_line_3": "",
            "postcode": "100",
        })))
        .unwrap();
        assert_eq!(ok, ["王小明", "臺北市中正區重慶南路一段122號", "100"]);
        let message = |v| address(&of(v)).unwrap_err().to_string();
        assert_eq!(
            message(json!({"address_line_2": "x"})),
            "personalisation address_line_1 is a required property"
        );
        assert_eq!(
            message(json!({"address_line_1": "a", "address_line_2": "b"})),
            "Address must be at least 3 lines"
        );
        assert_eq!(
            message(
                json!({"address_line_1": "a", "address_line_2": "(b", "address_line_3": "100"})
            ),
            "Address lines must not start with any of the following characters: @ ( ) = [ ] ” \\ / , < >"
        );
        assert_eq!(
            message(
                json!({"address_line_1": "a", "address_line_2": "b", "address_line_3": "Street 12"})
            ),
            "Last line of address must be a postal code or a country"
        );
        assert!(
            address(&of(
                json!({"address_line_1": "a", "address_line_2": "b", "address_line_3": "Japan"})
            ))
            .is_ok()
        );
    }

    #[test]
    fn the_date_is_taiwans_day() {
        // 2026-11-22T16:30:00Z is already the 23rd in Taipei.
        assert_eq!(taiwan_date(1_795_365_000_000), "2026-11-23");
        assert_eq!(taiwan_date(0), "1970-01-01");
    }
}
