//! RFC 3339 timestamps for the export format: [`Timestamp`]s (microseconds since the Unix
//! epoch, UTC) written as `2024-05-01T12:34:56.123456Z` and read back.
//!
//! The writer always prints six fraction digits and `Z`, so the same timestamp is always the
//! same text (exports are compared byte for byte). The reader accepts any RFC 3339 date-time
//! (`T` or `t`, `Z`, `z` or a `±HH:MM` offset, 0 to 9 fraction digits) but refuses a time
//! before 1970, a leap second and precision finer than a microsecond that is not zero: a
//! timestamp is never rounded silently. Hand-written for these two functions instead of
//! depending on a calendar crate; the civil-date arithmetic is Howard Hinnant's
//! (`days_from_civil` and `civil_from_days`).

use annals::Timestamp;

const MICROS_PER_SECOND: u64 = 1_000_000;
const SECONDS_PER_DAY: u64 = 86_400;

/// `timestamp` as RFC 3339 in UTC with microseconds: `1970-01-01T00:00:00.000000Z`.
pub(crate) fn format(timestamp: Timestamp) -> String {
    let micros = timestamp.as_micros();
    let seconds = micros / MICROS_PER_SECOND;
    let fraction = micros % MICROS_PER_SECOND;
    let days = seconds / SECONDS_PER_DAY;
    let of_day = seconds % SECONDS_PER_DAY;
    // u64 microseconds reach year 586,912: the year always fits an i64.
    let (year, month, day) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{fraction:06}Z",
        of_day / 3600,
        of_day / 60 % 60,
        of_day % 60
    )
}

/// Parses an RFC 3339 date-time into a [`Timestamp`]; the error says what is wrong.
pub(crate) fn parse(text: &str) -> Result<Timestamp, String> {
    let bad = |why: &str| format!("{text:?} is not an RFC 3339 date-time ({why})");
    let b = text.as_bytes();
    if b.len() < 20 {
        return Err(bad("too short; expected e.g. 2024-05-01T12:34:56.000000Z"));
    }
    let digits = |range: std::ops::Range<usize>, what: &str| -> Result<i64, String> {
        let part = &b[range];
        if part.iter().all(u8::is_ascii_digit) {
            Ok(part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        } else {
            Err(bad(&format!("the {what} is not a number")))
        }
    };
    let separators_ok = b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b't')
        && b[13] == b':'
        && b[16] == b':';
    if !separators_ok {
        return Err(bad("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let year = digits(0..4, "year")?;
    let month = digits(5..7, "month")?;
    let day = digits(8..10, "day")?;
    let hour = digits(11..13, "hour")?;
    let minute = digits(14..16, "minute")?;
    let second = digits(17..19, "second")?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(bad("no such date"));
    }
    if hour > 23 || minute > 59 {
        return Err(bad("no such time of day"));
    }
    if second > 59 {
        return Err(bad("leap seconds cannot be represented"));
    }
    let mut rest = &b[19..];
    let mut micros = 0u64;
    if let Some(fraction) = rest.strip_prefix(b".") {
        let len = fraction.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 || len > 9 {
            return Err(bad("a fraction of a second has 1 to 9 digits"));
        }
        let (kept, finer) = fraction[..len].split_at(len.min(6));
        if finer.iter().any(|&d| d != b'0') {
            return Err(bad("finer than a microsecond"));
        }
        micros = kept.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'))
            * 10u64.pow(u32::try_from(6 - kept.len()).unwrap_or(0));
        rest = &fraction[len..];
    }
    let offset_seconds: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return Err(bad("no such offset"));
            }
            let offset = hours * 3600 + minutes * 60;
            if *sign == b'-' {
                -offset
            } else {
                offset
            }
        }
        _ => return Err(bad("expected Z or an offset such as +02:00 at the end")),
    };
    // Four-digit years: the numbers stay far inside i64, and the microseconds inside u64.
    let local = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second;
    let utc =
        u64::try_from(local - offset_seconds).map_err(|_| bad("before 1970-01-01T00:00:00Z"))?;
    Ok(Timestamp(utc * MICROS_PER_SECOND + micros))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let day_of_year = (153 * (month + if month > 2 { -3 } else { 9 }) + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date `days` after 1970-01-01 (`days` is never negative here).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let mp = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_instants() {
        assert_eq!(format(Timestamp(0)), "1970-01-01T00:00:00.000000Z");
        // 2024-02-29T23:59:59.999999Z, a leap day.
        let leap_day = Timestamp(1_709_251_199_999_999);
        assert_eq!(format(leap_day), "2024-02-29T23:59:59.999999Z");
        assert_eq!(parse("2024-02-29T23:59:59.999999Z"), Ok(leap_day));
        assert_eq!(parse("2024-03-01T01:59:59.999999+02:00"), Ok(leap_day));
        assert_eq!(parse("2024-02-29t18:59:59.999999000-05:00"), Ok(leap_day));
        assert_eq!(parse("1970-01-01T00:00:01Z"), Ok(Timestamp(1_000_000)));
        assert_eq!(parse("1970-01-01T00:00:00.5Z"), Ok(Timestamp(500_000)));
    }

    #[test]
    fn round_trip_over_many_days() {
        // Every 7,919 seconds (a prime) plus some microseconds, over about 80 years.
        for i in 0..320_000u64 {
            let t = Timestamp(i * 7_919 * MICROS_PER_SECOND + i % 1_000_000);
            assert_eq!(parse(&format(t)), Ok(t), "{}", format(t));
        }
    }

    #[test]
    fn refusals() {
        for bad in [
            "",
            "2024-02-30T00:00:00Z",
            "2023-02-29T00:00:00Z",
            "2024-13-01T00:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T23:59:60Z",
            "2024-01-01T00:00:00",
            "2024-01-01 00:00:00Z",
            "2024-01-01T00:00:00.Z",
            "2024-01-01T00:00:00.0000001Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:30:00+01:00",
            "2024-01-01T00:00:00+1:00",
            "2024-01-01T00:00:00Zjunk",
            "２024-01-01T00:00:00Z",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} must be refused");
        }
    }
}
