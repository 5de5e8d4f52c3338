//! The interval of a series to replay, for the detector's times (`train.long = "24h"`,
//! `train.window = "24m"`) to become ticks: the median step between the first rows'
//! date-times. A series without dates is taken at one row per second, as the replay
//! itself takes it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::time::Duration;

use super::timestamp::{self, Timestamp};

/// Rows read to find the interval; a gap among them does not move a median.
const ROWS: usize = 21;

/// The interval of the series in `path`, its fields separated by `delimiter`, or one
/// second when its first rows carry no date-times; `None` when the file cannot be read.
pub fn of_file(path: &Path, delimiter: char) -> Option<Duration> {
    let file = std::fs::File::open(path).ok()?;
    let lines = BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .take(ROWS + 1);
    Some(of_lines(lines, delimiter))
}

/// The interval of rows `ts,value...` (a header line is skipped as unparseable).
pub fn of_lines(lines: impl Iterator<Item = String>, delimiter: char) -> Duration {
    let times: Vec<f64> = lines
        .filter_map(|l| {
            let field = l.split(delimiter).next()?.to_owned();
            match timestamp::parse(&field)? {
                Timestamp::Civil(secs) => Some(secs),
                Timestamp::Number(_) => None,
            }
        })
        .collect();
    let mut steps: Vec<f64> = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .filter(|d| *d > 0.0 && d.is_finite())
        .collect();
    if steps.is_empty() {
        return Duration::from_secs(1);
    }
    steps.sort_by(f64::total_cmp);
    Duration::from_secs_f64(steps[steps.len() / 2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(s: &str) -> impl Iterator<Item = String> + '_ {
        s.lines().map(str::to_owned)
    }

    #[test]
    fn the_median_step_of_dated_rows_and_one_second_otherwise() {
        let nab = "timestamp,value\n2014-05-14 01:14:00,1\n2014-05-14 01:19:00,2\n\
                   2014-05-14 01:24:00,3\n2014-05-14 03:24:00,3\n2014-05-14 03:29:00,3\n";
        assert_eq!(
            of_lines(lines(nab), ','),
            Duration::from_secs(300),
            "a gap is ignored"
        );
        assert_eq!(
            of_lines(lines("t,v\n1,2\n2,3\n"), ','),
            Duration::from_secs(1)
        );
        assert_eq!(of_lines(lines(""), ','), Duration::from_secs(1));
        let rig =
            "datetime;a\n2020-03-09 10:14:33;1\n2020-03-09 10:14:43;2\n2020-03-09 10:14:53;3\n";
        assert_eq!(of_lines(lines(rig), ';'), Duration::from_secs(10));
    }
}
