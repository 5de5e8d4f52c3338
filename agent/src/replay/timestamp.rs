//! Timestamps for the plot's time axis, parsed by hand: `YYYY-MM-DD HH:MM:SS[.ffffff]`
//! (NAB's format, read as UTC; `T` is accepted in place of the space) or a plain number.
//! Only `--plot` reads timestamps; the replay itself copies them through untouched.

/// One row's timestamp, as far as the plot is concerned.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Timestamp {
    /// A calendar date and time, as seconds since 1970-01-01 00:00:00 UTC.
    Civil(f64),
    /// A plain number: epoch seconds or milliseconds, or any other count.
    Number(f64),
}

use lookout_shared::time::{civil_from_days, days_from_civil, days_in_month};

const SECS_PER_DAY: i64 = 86_400;

/// Parses one timestamp field; `None` when it is neither a date-time nor a finite number.
pub fn parse(field: &str) -> Option<Timestamp> {
    let s = field.trim().trim_matches('"');
    if let Some(secs) = parse_civil(s) {
        return Some(Timestamp::Civil(secs));
    }
    s.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .map(Timestamp::Number)
}

/// `YYYY-MM-DD HH:MM:SS[.fraction]` as seconds since the epoch (UTC).
pub fn parse_civil(s: &str) -> Option<f64> {
    let b = s.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b' ' | b'T')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<u32> {
        b[from..to].iter().try_fold(0u32, |acc, &c| {
            c.is_ascii_digit().then(|| acc * 10 + u32::from(c - b'0'))
        })
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(i64::from(year), month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    // Bytes 0..19 are ASCII, so 19 is a character boundary.
    let fraction = match &s[19..] {
        "" => 0.0,
        rest if rest.len() > 1
            && rest.starts_with('.')
            && rest[1..].bytes().all(|c| c.is_ascii_digit()) =>
        {
            rest.parse::<f64>().ok()?
        }
        _ => return None,
    };
    let days = days_from_civil(i64::from(year), month, day);
    let secs =
        days * SECS_PER_DAY + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    Some(secs as f64 + fraction)
}

/// Seconds since the epoch as `YYYY-MM-DD` (`with_time` false) or `YYYY-MM-DD HH:MM`.
pub fn format_civil(secs: f64, with_time: bool) -> String {
    let secs = secs.floor() as i64;
    let (y, m, d) = civil_from_days(secs.div_euclid(SECS_PER_DAY));
    if !with_time {
        return format!("{y:04}-{m:02}-{d:02}");
    }
    let in_day = secs.rem_euclid(SECS_PER_DAY);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        in_day / 3600,
        in_day % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nab_timestamps_are_seconds_since_the_epoch_in_utc() {
        // 2014-02-14 14:30:00 UTC is 1392388200 (date -u -d '2014-02-14 14:30:00' +%s).
        assert_eq!(
            parse("2014-02-14 14:30:00"),
            Some(Timestamp::Civil(1_392_388_200.0))
        );
        assert_eq!(parse_civil("1970-01-01 00:00:00"), Some(0.0));
        assert_eq!(parse_civil("2000-03-01T00:00:00"), Some(951_868_800.0));
    }

    #[test]
    fn fractional_seconds_as_in_the_windows_file_are_kept() {
        let t = parse_civil("2014-02-19 00:22:00.250000").unwrap();
        assert_eq!(t, parse_civil("2014-02-19 00:22:00").unwrap() + 0.25);
    }

    #[test]
    fn leap_days_exist_only_in_leap_years() {
        assert!(parse_civil("2016-02-29 12:00:00").is_some());
        assert!(parse_civil("2000-02-29 12:00:00").is_some());
        assert!(parse_civil("1900-02-29 12:00:00").is_none());
        assert!(parse_civil("2015-02-29 12:00:00").is_none());
        assert_eq!(
            parse_civil("2016-03-01 00:00:00").unwrap()
                - parse_civil("2016-02-28 00:00:00").unwrap(),
            2.0 * 86_400.0
        );
    }

    #[test]
    fn malformed_dates_are_not_timestamps() {
        for bad in [
            "2014-13-01 00:00:00",
            "2014-02-14 24:00:00",
            "2014-02-14 14:60:00",
            "2014-02-14 14:30",
            "2014-02-14 14:30:00.",
            "2014-02-14 14:30:00Z",
            "2014/02/14 14:30:00",
            "t12",
            "",
            "nan",
            "inf",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn plain_numbers_are_numbers() {
        assert_eq!(
            parse("1392388200"),
            Some(Timestamp::Number(1_392_388_200.0))
        );
        assert_eq!(parse(" 17.5 "), Some(Timestamp::Number(17.5)));
        assert_eq!(parse("-3"), Some(Timestamp::Number(-3.0)));
    }

    #[test]
    fn formatting_inverts_parsing() {
        for s in ["1970-01-01", "2014-02-14", "2000-02-29", "2099-12-31"] {
            let t = parse_civil(&format!("{s} 00:00:00")).unwrap();
            assert_eq!(format_civil(t, false), s);
        }
        let t = parse_civil("2014-02-14 14:30:59").unwrap();
        assert_eq!(format_civil(t, true), "2014-02-14 14:30");
        assert_eq!(format_civil(-86_400.0, false), "1969-12-31");
    }
}
