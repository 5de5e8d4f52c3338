//! Which dimension: an anomalous tick's per-dimension attribution as the payloads carry it
//! (docs/scorer.md, "Which dimension"). An operator reading "cpu anomalous" needs "system
//! time, 38 where 2–6 is normal"; this turns the model's shares ([`Model::attribution`])
//! into the payloads' `dimensions` and a one-line `explain`.
//!
//! [`Model::attribution`]: crate::scorer::Model::attribution

use lookout_shared::payload::Dimension;

use crate::scorer::model::DimShare;

/// Dimensions a payload lists at most, largest share first: a model of many dimensions
/// (every thermal zone) must not make an alarm grow with it.
pub const TOP: usize = 3;

/// What an anomalous score or a firing alarm carries.
#[derive(Clone, Debug, PartialEq)]
pub struct Attribution {
    pub dimensions: Vec<Dimension>,
    pub explain: String,
}

/// The names the payloads give a model's dimensions (`metrics`: chart, dimension): the
/// dimension's own name (`system`), or `chart|dimension` when another chart of the model
/// has a dimension of the same name.
pub fn dimension_names(metrics: &[(String, String)]) -> Vec<String> {
    metrics
        .iter()
        .map(|(chart, dim)| {
            if metrics.iter().filter(|(_, d)| d == dim).count() > 1 {
                format!("{chart}|{dim}")
            } else {
                dim.clone()
            }
        })
        .collect()
}

/// The attribution of model `model` from its shares (in dimension order, named by
/// `names`); `diffs`: the model scores per-tick changes, so values are changes.
pub fn attribute(model: &str, names: &[String], shares: &[DimShare], diffs: bool) -> Attribution {
    let mut order: Vec<usize> = (0..shares.len()).collect();
    // Largest share first; a tie keeps the configured order.
    order.sort_by(|&a, &b| shares[b].share.total_cmp(&shares[a].share));
    let dimensions: Vec<Dimension> = order
        .iter()
        .take(TOP)
        .map(|&i| Dimension {
            name: names.get(i).cloned().unwrap_or_else(|| (i + 1).to_string()),
            share: (shares[i].share * 1000.0).round() / 1000.0,
            value: round_sig(shares[i].value),
            normal: shares[i]
                .normal
                .map(|(lo, hi)| [round_sig(lo), round_sig(hi)]),
        })
        .collect();
    let explain = dimensions
        .first()
        .map(|top| explain(model, top, shares.len(), diffs))
        .unwrap_or_default();
    Attribution {
        dimensions,
        explain,
    }
}

/// One line: `system at 38.1, normal 2–6 (83 % of the cpu anomaly)`; a one-dimension
/// model leaves out the share, a model of changes says so (`system changing by +5.2 per
/// tick, normal -0.3 to 0.4`).
fn explain(model: &str, top: &Dimension, n_dims: usize, diffs: bool) -> String {
    let sig = top.normal.map_or(3, |[lo, hi]| digits_for(lo, hi));
    let value = fmt_sig(top.value, sig);
    let mut line = if diffs {
        let sign = if top.value > 0.0 { "+" } else { "" };
        format!("{} changing by {sign}{value} per tick", top.name)
    } else {
        format!("{} at {value}", top.name)
    };
    if let Some([lo, hi]) = top.normal {
        // An en dash between two numbers reads as a minus when one is negative.
        let sep = if lo < 0.0 || hi < 0.0 { " to " } else { "–" };
        let (lo, hi) = (fmt_sig(lo, sig), fmt_sig(hi, sig));
        line.push_str(&format!(", normal {lo}{sep}{hi}"));
    }
    if n_dims > 1 {
        let pct = (top.share * 100.0).round();
        line.push_str(&format!(" ({pct} % of the {model} anomaly)"));
    }
    line
}

/// Significant digits that show a range's width with two of its own: three, more for a
/// narrow range far from zero (53.794–53.878, not 53.8–53.9), at most six.
fn digits_for(lo: f64, hi: f64) -> usize {
    let magnitude = |x: f64| x.abs().log10().floor();
    let (top, width) = (lo.abs().max(hi.abs()), hi - lo);
    if !(width > 0.0 && top.is_finite() && width.is_finite()) {
        return 3;
    }
    let needed = magnitude(top) - magnitude(width) + 2.0;
    (needed.max(3.0) as usize).min(6)
}

/// A value in the metric's own unit, for people: three significant digits, trailing
/// zeros dropped, and k, M, G, T from 10,000 on (byte rates, request counts).
pub fn fmt_value(x: f64) -> String {
    fmt_sig(x, 3)
}

/// [`fmt_value`] with `sig` significant digits.
fn fmt_sig(x: f64, sig: usize) -> String {
    let a = x.abs();
    let (v, suffix) = if a >= 1e12 {
        (x / 1e12, "T")
    } else if a >= 1e9 {
        (x / 1e9, "G")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e4 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let digits = if v == 0.0 || !v.is_finite() {
        0
    } else {
        v.abs().log10().floor() as i32
    };
    let decimals = (sig as i32 - 1 - digits).clamp(0, 9) as usize;
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.truncate(s.trim_end_matches('0').trim_end_matches('.').len());
    }
    if s == "-0" {
        s = "0".into();
    }
    s + suffix
}

/// Six significant digits: the ring keeps `f32`, so more would be noise in a payload.
pub(crate) fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let p = 5 - x.abs().log10().floor() as i32;
    if !(-300..=300).contains(&p) {
        return x;
    }
    let f = 10f64.powi(p);
    (x * f).round() / f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn share(share: f64, value: f64, normal: Option<(f64, f64)>) -> DimShare {
        DimShare {
            share,
            value,
            normal,
        }
    }

    #[test]
    fn values_read_with_three_digits_and_a_suffix_for_large_ones() {
        assert_eq!(fmt_value(38.14), "38.1");
        assert_eq!(fmt_value(2.0), "2");
        assert_eq!(fmt_value(0.01234), "0.0123");
        assert_eq!(fmt_value(1234.4), "1234");
        assert_eq!(fmt_value(12_345.0), "12.3k");
        assert_eq!(fmt_value(-2_500_000.0), "-2.5M");
        assert_eq!(fmt_value(-0.0001), "-0.0001");
        assert_eq!(fmt_value(0.0), "0");
    }

    #[test]
    fn the_largest_shares_come_first_bounded_and_the_line_names_the_top_one() {
        let names: Vec<String> = ["a", "b", "c", "d"].map(String::from).into();
        let shares = [
            share(0.05, 1.0, Some((0.0, 2.0))),
            share(0.83, 38.123_456_789, Some((2.0, 6.0))),
            share(0.02, 1.0, None),
            share(0.10, 5.0, Some((4.0, 6.0))),
        ];
        let a = attribute("cpu", &names, &shares, false);
        let order: Vec<&str> = a.dimensions.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(order, ["b", "d", "a"], "largest first, at most {TOP}");
        assert_eq!(a.dimensions[0].value, 38.1235);
        assert_eq!(a.dimensions[0].normal, Some([2.0, 6.0]));
        assert_eq!(a.explain, "b at 38.1, normal 2–6 (83 % of the cpu anomaly)");

        let one = attribute("load", &names[..1], &[share(1.0, 12.3, None)], false);
        assert_eq!(
            one.explain, "a at 12.3",
            "one dimension: no share, no range yet"
        );
        let diffs = attribute(
            "cpu",
            &names[..1],
            &[share(1.0, 5.2, Some((-0.3, 0.4)))],
            true,
        );
        assert_eq!(
            diffs.explain,
            "a changing by +5.2 per tick, normal -0.3 to 0.4"
        );
        let narrow = [share(1.0, 53.86, Some((53.7937, 53.8776)))];
        assert_eq!(
            attribute("disk", &names[..1], &narrow, false).explain,
            "a at 53.86, normal 53.794–53.878",
            "a narrow range gets the digits that tell its ends apart"
        );
    }

    #[test]
    fn a_dimension_name_shared_by_two_charts_is_qualified_by_its_chart() {
        let metrics = [
            ("system.io".to_string(), "read".to_string()),
            ("disk.sda".to_string(), "read".to_string()),
            ("system.io".to_string(), "write".to_string()),
        ];
        assert_eq!(
            dimension_names(&metrics),
            ["system.io|read", "disk.sda|read", "write"]
        );
    }
}
