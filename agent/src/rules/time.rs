//! RFC 3339 times (`2018-04-30T14:50:23.1324132Z`) to and from Unix milliseconds.
//!
//! Written here because events carry times in the seed's RFC 3339 form while everything
//! else in Lookout is Unix milliseconds, and the two conversions are a few lines of
//! calendar arithmetic, not worth a date crate on a small device. Offsets (`+02:00`) are
//! accepted, fractions beyond milliseconds are truncated.

use lookout_shared::time::{Civil, days_from_civil, days_in_month};

/// Unix milliseconds of an RFC 3339 time, or `None` if `s` is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return None;
    }
    let num = |from: usize, len: usize| -> Option<i64> {
        let digits = b.get(from..from + len)?;
        digits.iter().try_fold(0i64, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + i64::from(d - b'0'))
        })
    };
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    let (year, month, day) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    let (hour, minute, second) = (num(11, 2)?, num(14, 2)?, num(17, 2)?);
    if !(1..=12).contains(&month)
        || day < 1
        || day > i64::from(days_in_month(year, month as u32))
        || hour > 23
        || minute > 59
        // 60 is a leap second; it simply rolls into the next minute.
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut millis = 0;
    if b.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while b.get(i).is_some_and(u8::is_ascii_digit) {
            if i - start < 3 {
                millis = millis * 10 + i64::from(b[i] - b'0');
            }
            i += 1;
        }
        match i - start {
            0 => return None,
            1 => millis *= 100,
            2 => millis *= 10,
            _ => {}
        }
    }
    let offset_minutes = match b.get(i) {
        Some(b'Z' | b'z') if i + 1 == b.len() => 0,
        Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
            let (h, m) = (num(i + 1, 2)?, num(i + 4, 2)?);
            if h > 23 || m > 59 {
                return None;
            }
            let minutes = h * 60 + m;
            if sign == b'+' { minutes } else { -minutes }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month as u32, day as u32);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_minutes * 60;
    Some(secs * 1000 + millis)
}

/// `2018-04-30T14:51:00.000Z`: always UTC and always milliseconds, so that output lines
/// of the same run line up and compare as strings.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let c = Civil::from_ms(ms);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        c.year, c.month, c.day, c.hour, c.minute, c.second, c.millis
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2018-04-30T14:50:00Z, checked against `date -u -d 2018-04-30T14:50:00Z +%s`.
    const SEED_MINUTE: i64 = 1_525_099_800_000;

    #[test]
    fn reads_the_seeds_event_times_truncating_to_milliseconds() {
        assert_eq!(
            parse_rfc3339("2018-04-30T14:50:23.1324132Z"),
            Some(SEED_MINUTE + 23_132)
        );
        assert_eq!(
            parse_rfc3339("2018-04-30T14:50:37.1324130Z"),
            Some(SEED_MINUTE + 37_132)
        );
        assert_eq!(parse_rfc3339("2018-04-30T14:50:00Z"), Some(SEED_MINUTE));
        assert_eq!(
            parse_rfc3339("2018-04-30T14:50:00.5Z"),
            Some(SEED_MINUTE + 500)
        );
        assert_eq!(
            parse_rfc3339("2018-04-30t14:50:00.05z"),
            Some(SEED_MINUTE + 50)
        );
    }

    #[test]
    fn offsets_move_the_time_to_utc() {
        assert_eq!(
            parse_rfc3339("2018-04-30T16:50:00+02:00"),
            Some(SEED_MINUTE)
        );
        assert_eq!(
            parse_rfc3339("2018-04-30T09:20:00-05:30"),
            Some(SEED_MINUTE)
        );
        assert_eq!(parse_rfc3339("2018-04-30 14:50:00Z"), Some(SEED_MINUTE));
    }

    #[test]
    fn rejects_what_is_not_a_time() {
        for bad in [
            "",
            "2018-04-30",
            "2018-04-30T14:50:00",
            "2018-02-29T00:00:00Z",
            "2018-13-01T00:00:00Z",
            "2018-04-30T24:00:00Z",
            "2018-04-30T14:50:00.Z",
            "2018-04-30T14:50:00+0200",
            "2018-04-30T14:50:00Zjunk",
            "yesterday at noon, roughly",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad:?}");
        }
        assert_eq!(
            parse_rfc3339("2020-02-29T00:00:00Z"),
            Some(1_582_934_400_000),
            "a leap day"
        );
    }

    #[test]
    fn formats_utc_with_milliseconds_and_round_trips() {
        assert_eq!(
            format_rfc3339_ms(SEED_MINUTE + 60_000),
            "2018-04-30T14:51:00.000Z"
        );
        assert_eq!(format_rfc3339_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_rfc3339_ms(-1), "1969-12-31T23:59:59.999Z");
        for ms in [
            0,
            -1,
            951_782_400_123,
            4_102_444_800_000,
            SEED_MINUTE + 37_132,
        ] {
            assert_eq!(parse_rfc3339(&format_rfc3339_ms(ms)), Some(ms), "{ms}");
        }
    }
}
