//! Date arithmetic on Julian day numbers, and ISO `YYYY-MM-DD` text as stored in the
//! registries.

use time::{Date, Month};

/// The Julian day number of a date.
pub(crate) fn jd(d: Date) -> i32 {
    d.to_julian_day()
}

/// The date of a Julian day number, clamped to the range `time` supports.
pub(crate) fn date(jd: i32) -> Date {
    Date::from_julian_day(jd).unwrap_or(if jd < 0 { Date::MIN } else { Date::MAX })
}

/// Year, month and day of a Julian day number.
pub(crate) fn ymd(jd: i32) -> (i32, u8, u8) {
    let (y, m, d) = date(jd).to_calendar_date();
    (y, m as u8, d)
}

/// A date from its parts, moving the day back to the month's last day when needed (so
/// 29 February becomes 28 February in common years).
pub(crate) fn from_ymd(year: i32, month: u8, day: u8) -> i32 {
    let m = Month::try_from(month).unwrap_or(Month::January);
    let last = m.length(year);
    let d = Date::from_calendar_date(year, m, day.clamp(1, last)).unwrap_or(Date::MIN);
    jd(d)
}

/// The same day `years` years later (or earlier when negative).
pub(crate) fn add_years(jd: i32, years: i32) -> i32 {
    let (y, m, d) = ymd(jd);
    from_ymd(y + years, m, d)
}

/// The same day `months` months later (or earlier when negative), clamped to month ends.
pub(crate) fn add_months(jd: i32, months: i32) -> i32 {
    let (y, m, d) = ymd(jd);
    let total = y * 12 + i32::from(m) - 1 + months;
    from_ymd(total.div_euclid(12), (total.rem_euclid(12) + 1) as u8, d)
}

/// Age in completed years on `on` of someone born on `birth`.
pub(crate) fn age_on(birth: i32, on: i32) -> i32 {
    let (by, bm, bd) = ymd(birth);
    let (y, m, d) = ymd(on);
    let mut age = y - by;
    if (m, d) < (bm, bd) {
        age -= 1;
    }
    age
}

/// A Julian day number as ISO `YYYY-MM-DD` text.
pub(crate) fn iso(jd: i32) -> String {
    let (y, m, d) = ymd(jd);
    let mut s = String::with_capacity(10);
    push_num(&mut s, y.max(0) as u32, 4);
    s.push('-');
    push_num(&mut s, u32::from(m), 2);
    s.push('-');
    push_num(&mut s, u32::from(d), 2);
    s
}

/// Appends `n` with at least `width` digits, zero-padded.
pub(crate) fn push_num(s: &mut String, n: u32, width: usize) {
    let mut buf = [b'0'; 10];
    let mut i = buf.len();
    let mut v = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let start = i.min(buf.len() - width.min(buf.len()));
    for &b in &buf[start..] {
        s.push(b as char);
    }
}

/// Parses ISO `YYYY-MM-DD` text.
pub(crate) fn parse_iso(s: &str) -> Option<Date> {
    let fmt = time::macros::format_description!("[year]-[month]-[day]");
    Date::parse(s, &fmt).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    #[test]
    fn iso_round_trips() {
        for d in [
            date!(2024 - 02 - 29),
            date!(1931 - 01 - 01),
            date!(2025 - 12 - 31),
        ] {
            assert_eq!(parse_iso(&iso(jd(d))), Some(d));
        }
        assert_eq!(iso(jd(date!(0987 - 03 - 04))), "0987-03-04");
    }

    #[test]
    fn months_and_years_clamp_to_month_ends() {
        assert_eq!(
            date(add_years(jd(date!(2024 - 02 - 29)), 1)),
            date!(2025 - 02 - 28)
        );
        assert_eq!(
            date(add_months(jd(date!(2025 - 08 - 31)), -6)),
            date!(2025 - 02 - 28)
        );
        assert_eq!(
            date(add_months(jd(date!(2025 - 01 - 15)), -66)),
            date!(2019 - 07 - 15)
        );
        assert_eq!(
            date(add_months(jd(date!(2025 - 11 - 15)), 3)),
            date!(2026 - 02 - 15)
        );
    }

    #[test]
    fn age_counts_completed_years() {
        let b = jd(date!(2000 - 06 - 15));
        assert_eq!(age_on(b, jd(date!(2025 - 06 - 14))), 24);
        assert_eq!(age_on(b, jd(date!(2025 - 06 - 15))), 25);
    }
}
