//! `replay --plot`: the replayed rows as an SVG, two panels on one time axis.
//!
//! Top: the input series (first value column), rows where the alarm was firing in red.
//! Bottom: the score, and the alarm threshold as a dashed line. Labelled anomaly windows,
//! when given, are shaded in both panels. Drawn by plotters' SVG backend alone; text sizes
//! are plotters' estimate (no font files are read), which is close enough at 1200x600.

use std::ops::Range;

use plotters::coord::Shift;
use plotters::coord::ranged1d::{DefaultFormatting, KeyPointHint};
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Row;
use super::timestamp::{self, Timestamp};
use super::windows::Window;

/// Width and height of the SVG, in pixels.
pub const SIZE: (u32, u32) = (1200, 600);

const VALUE_COLOUR: RGBColor = RGBColor(31, 119, 180);
const ALARM_COLOUR: RGBColor = RED;
const SCORE_COLOUR: RGBColor = RGBColor(0, 128, 128);
const THRESHOLD_COLOUR: RGBColor = RGBColor(40, 40, 40);
const WINDOW_COLOUR: RGBColor = RGBColor(255, 140, 0);
const WINDOW_OPACITY: f64 = 0.22;
const FONT: &str = "sans-serif";
/// Font sizes as plotters takes them (it draws text at about 0.8 of the size given).
const TITLE_SIZE: u32 = 24;
const LABEL_SIZE: u32 = 16;
/// Title and legend row, above the panels.
const HEADER_HEIGHT: u32 = 58;
/// Radius of the dot on each alarm row.
const ALARM_DOT: u32 = 2;
/// Dash and gap of the threshold line, in pixels.
const DASH: (i32, i32) = (8, 6);
/// Room for the y labels; the same in both panels so that their x axes line up.
const Y_LABEL_AREA: u32 = 66;

/// What the x axis shows.
#[derive(Clone, Copy, Debug, PartialEq)]
enum XAxis {
    /// Seconds since the epoch (UTC), labelled as dates.
    Time,
    /// The timestamps as numbers, when they are numbers but not epoch times.
    Number,
    /// The row index: the timestamps did not all parse or went backwards.
    Row,
}

/// Draws `rows` as an SVG document of [`SIZE`]; `Err` carries plotters' message.
pub fn svg(rows: &[Row], title: &str, windows: &[Window]) -> Result<String, String> {
    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, SIZE).into_drawing_area();
        draw(&root, rows, title, windows).map_err(|e| e.to_string())?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(out)
}

type DrawResult<DB> = Result<(), DrawingAreaErrorKind<<DB as DrawingBackend>::ErrorType>>;

fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    rows: &[Row],
    title: &str,
    windows: &[Window],
) -> DrawResult<DB> {
    root.fill(&WHITE)?;
    // Title and legend on top, so that no legend box hides data; then the two panels.
    let (header, body) = root.split_vertically(HEADER_HEIGHT);
    let (top, bottom) = body.split_vertically(body.dim_in_pixel().1 * 47 / 100);
    let x = XScale::new(rows, windows);
    let mut legend = vec![(Marker::Line(VALUE_COLOUR), "value".to_owned())];
    draw_values(&top, rows, &x, &mut legend)?;
    draw_scores(&bottom, rows, &x, &mut legend)?;
    if !x.shaded.is_empty() {
        legend.push((Marker::Shade, "labelled anomaly window".to_owned()));
    }
    draw_header(&header, title, &legend)
}

/// The x axis both panels share.
struct XScale {
    axis: XAxis,
    /// The x of every row.
    xs: Vec<f64>,
    lo: f64,
    hi: f64,
    ticks: Vec<f64>,
    step: f64,
    /// The labelled windows within the axis; none unless it is calendar time.
    shaded: Vec<(f64, f64)>,
}

impl XScale {
    fn new(rows: &[Row], windows: &[Window]) -> Self {
        let (axis, xs) = x_values(rows);
        let (lo, hi) = padded(xs.iter().copied(), 0.0);
        let (mut ticks, step) = match axis {
            XAxis::Time => time_ticks(lo, hi),
            XAxis::Number | XAxis::Row => number_ticks(lo, hi, 8),
        };
        // A label centred on a tick this close to the right edge would be cut off.
        ticks.retain(|t| hi - t >= (hi - lo) * 0.04);
        let shaded = if axis == XAxis::Time {
            windows
                .iter()
                .filter(|w| w.end >= lo && w.start <= hi)
                .map(|w| (w.start.max(lo), w.end.min(hi)))
                .collect()
        } else {
            if !windows.is_empty() {
                tracing::warn!(
                    "the x axis is not calendar time (the timestamps are not all dates or epoch times); labelled windows are not drawn"
                );
            }
            Vec::new()
        };
        Self {
            axis,
            xs,
            lo,
            hi,
            ticks,
            step,
            shaded,
        }
    }

    /// Tick labels: dates, with the time of day when ticks are less than a day apart, or
    /// short numbers.
    fn label(&self) -> impl Fn(&f64) -> String + use<> {
        let number_label = number_labels(&self.ticks, self.step);
        let (axis, step) = (self.axis, self.step);
        move |x: &f64| match axis {
            XAxis::Time => timestamp::format_civil(*x, step < 86_400.0),
            XAxis::Number | XAxis::Row => number_label(x),
        }
    }

    fn desc(&self) -> &'static str {
        match self.axis {
            XAxis::Time => "time (UTC)",
            XAxis::Number => "timestamp",
            XAxis::Row => "row",
        }
    }
}

/// Top panel: the input series, alarm rows in red.
fn draw_values<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[Row],
    x: &XScale,
    legend: &mut Vec<(Marker, String)>,
) -> DrawResult<DB> {
    let values = || {
        x.xs.iter()
            .zip(rows)
            .filter(|(_, r)| r.value.is_finite())
            .map(|(x, r)| (*x, r.value))
    };
    let y = padded(values().map(|(_, v)| v), 0.05);
    let mut chart = panel(area, x, y, Panel::Values)?;
    chart.draw_series(LineSeries::new(values(), VALUE_COLOUR.stroke_width(1)))?;
    let alarms: Vec<(f64, f64)> =
        x.xs.iter()
            .zip(rows)
            .filter(|(_, r)| r.alarm && r.value.is_finite())
            .map(|(x, r)| (*x, r.value))
            .collect();
    if alarms.is_empty() {
        return Ok(());
    }
    for run in runs(rows, &x.xs, |r| r.alarm && r.value.is_finite()) {
        chart.draw_series(LineSeries::new(
            run.map(|(x, r)| (x, r.value)),
            ALARM_COLOUR.stroke_width(2),
        ))?;
    }
    chart.draw_series(
        alarms
            .iter()
            .map(|p| Circle::new(*p, ALARM_DOT, ALARM_COLOUR.filled())),
    )?;
    legend.push((Marker::Alarm, "alarm firing".to_owned()));
    Ok(())
}

/// Bottom panel: the score, and the threshold as a dashed step line.
fn draw_scores<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    rows: &[Row],
    x: &XScale,
    legend: &mut Vec<(Marker, String)>,
) -> DrawResult<DB> {
    let scores = rows
        .iter()
        .filter_map(|r| r.score.filter(|s| s.is_finite()));
    let thresholds = rows
        .iter()
        .filter_map(|r| r.threshold.filter(|t| t.is_finite()));
    let y = padded(scores.chain(thresholds).chain([0.0]), 0.06);
    let mut chart = panel(area, x, y, Panel::Scores)?;
    let mut score_runs = runs(rows, &x.xs, |r| r.score.is_some_and(f64::is_finite)).peekable();
    if score_runs.peek().is_some() {
        legend.push((Marker::Line(SCORE_COLOUR), "score".to_owned()));
    }
    for run in score_runs {
        chart.draw_series(LineSeries::new(
            run.map(|(x, r)| (x, r.score.unwrap_or_default())),
            SCORE_COLOUR.stroke_width(1),
        ))?;
    }
    let steps = threshold_steps(rows, &x.xs);
    if steps.is_empty() {
        return Ok(());
    }
    for run in steps.split(|p| p.1.is_nan()) {
        chart.draw_series(DashedLineSeries::new(
            run.iter().copied(),
            DASH.0,
            DASH.1,
            THRESHOLD_COLOUR.stroke_width(2),
        ))?;
    }
    let constant = steps.windows(2).all(|w| w[0].1 == w[1].1);
    let label = if constant {
        format!("alarm threshold {}", steps[0].1)
    } else {
        "alarm threshold".to_owned()
    };
    legend.push((Marker::Dashed, label));
    Ok(())
}

/// The two panels; the scores', at the bottom, carries the x labels for both.
#[derive(Clone, Copy, Debug)]
enum Panel {
    Values,
    Scores,
}

/// A panel's chart from `y.0` to `y.1` on the shared x axis, with its grid, labels and
/// shaded windows drawn.
fn panel<'a, DB: DrawingBackend>(
    area: &'a DrawingArea<DB, Shift>,
    x: &XScale,
    (y_lo, y_hi): (f64, f64),
    which: Panel,
) -> Result<Chart<'a, DB>, DrawingAreaErrorKind<DB::ErrorType>> {
    let (y_desc, y_tick_count) = match which {
        Panel::Values => ("value", 6),
        Panel::Scores => ("score", 5),
    };
    let (y_ticks, y_step) = number_ticks(y_lo, y_hi, y_tick_count);
    let y_label = number_labels(&y_ticks, y_step);
    let mut builder = ChartBuilder::on(area);
    builder
        .margin_left(10)
        .margin_right(25)
        .y_label_area_size(Y_LABEL_AREA);
    match which {
        Panel::Values => builder.margin_top(4).x_label_area_size(4),
        Panel::Scores => builder.margin_top(8).margin_bottom(4).x_label_area_size(48),
    };
    let mut chart = builder.build_cartesian_2d(
        Ticked::new(x.lo..x.hi, x.ticks.clone()),
        Ticked::new(y_lo..y_hi, y_ticks),
    )?;
    let x_label = x.label();
    let no_label = |_: &f64| String::new();
    let mut mesh = chart.configure_mesh();
    mesh.bold_line_style(BLACK.mix(0.1))
        .light_line_style(TRANSPARENT)
        .y_label_formatter(&y_label)
        .y_desc(y_desc)
        .label_style((FONT, LABEL_SIZE))
        .axis_desc_style((FONT, LABEL_SIZE));
    match which {
        Panel::Values => mesh.x_label_formatter(&no_label),
        Panel::Scores => mesh.x_label_formatter(&x_label).x_desc(x.desc()),
    };
    mesh.draw()?;
    shade_windows(&mut chart, &x.shaded, y_lo, y_hi)?;
    Ok(chart)
}

/// How a legend entry is drawn.
#[derive(Clone, Copy, Debug)]
enum Marker {
    Line(RGBColor),
    Alarm,
    Dashed,
    Shade,
}

/// The title, and below it one row of legend entries, both centred.
fn draw_header<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    legend: &[(Marker, String)],
) -> DrawResult<DB> {
    let width = area.dim_in_pixel().0 as i32;
    let title_style =
        TextStyle::from((FONT, TITLE_SIZE).into_font()).pos(Pos::new(HPos::Center, VPos::Top));
    area.draw(&Text::new(title, (width / 2, 6), title_style))?;

    let label_style =
        TextStyle::from((FONT, LABEL_SIZE).into_font()).pos(Pos::new(HPos::Left, VPos::Center));
    const SAMPLE: i32 = 26;
    const GAP: i32 = 6;
    const SPACING: i32 = 28;
    let widths = legend
        .iter()
        .map(|(_, text)| {
            area.estimate_text_size(text, &label_style)
                .map(|(w, _)| w as i32)
        })
        .collect::<Result<Vec<_>, _>>()?;
    let total: i32 = widths.iter().map(|w| SAMPLE + GAP + w).sum::<i32>()
        + SPACING * (legend.len() as i32 - 1).max(0);
    let y = 44;
    let mut x = (width - total) / 2;
    for ((marker, text), w) in legend.iter().zip(widths) {
        let line = |colour: RGBColor, stroke: u32| {
            PathElement::new(vec![(x, y), (x + SAMPLE, y)], colour.stroke_width(stroke))
        };
        match marker {
            Marker::Line(colour) => area.draw(&line(*colour, 2))?,
            Marker::Alarm => {
                area.draw(&line(ALARM_COLOUR, 2))?;
                area.draw(&Circle::new(
                    (x + SAMPLE / 2, y),
                    ALARM_DOT + 1,
                    ALARM_COLOUR.filled(),
                ))?;
            }
            Marker::Dashed => {
                for dash in [0, DASH.0 + DASH.1] {
                    area.draw(&PathElement::new(
                        vec![(x + dash, y), (x + dash + DASH.0, y)],
                        THRESHOLD_COLOUR.stroke_width(2),
                    ))?;
                }
            }
            Marker::Shade => area.draw(&Rectangle::new(
                [(x, y - 8), (x + SAMPLE, y + 8)],
                WINDOW_COLOUR.mix(WINDOW_OPACITY).filled(),
            ))?,
        }
        area.draw(&Text::new(
            text.as_str(),
            (x + SAMPLE + GAP, y),
            label_style.clone(),
        ))?;
        x += SAMPLE + GAP + w + SPACING;
    }
    Ok(())
}

type Chart<'a, DB> = ChartContext<'a, DB, Cartesian2d<Ticked, Ticked>>;

/// A linear axis with the ticks we chose (round times or round numbers) and no minor grid
/// lines, so that labels fall where a reader expects them.
struct Ticked {
    linear: RangedCoordf64,
    ticks: Vec<f64>,
}

impl Ticked {
    fn new(range: Range<f64>, ticks: Vec<f64>) -> Self {
        Self {
            linear: range.into(),
            ticks,
        }
    }
}

impl Ranged for Ticked {
    // Labels come from the chart's label formatters.
    type FormatOption = DefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        self.linear.map(value, limit)
    }

    fn key_points<H: KeyPointHint>(&self, hint: H) -> Vec<f64> {
        if hint.weight().allow_light_points() {
            Vec::new()
        } else {
            self.ticks.clone()
        }
    }

    fn range(&self) -> Range<f64> {
        self.linear.range()
    }
}

fn shade_windows<DB: DrawingBackend>(
    chart: &mut Chart<'_, DB>,
    shaded: &[(f64, f64)],
    y_lo: f64,
    y_hi: f64,
) -> DrawResult<DB> {
    let style = WINDOW_COLOUR.mix(WINDOW_OPACITY).filled();
    chart.draw_series(
        shaded
            .iter()
            .map(|&(a, b)| Rectangle::new([(a, y_lo), (b, y_hi)], style)),
    )?;
    Ok(())
}

/// The x of every row (see [`XAxis`]). Plain numbers of at least 1e11 are taken as epoch
/// milliseconds, of at least 1e8 (1973 on) as epoch seconds.
fn x_values(rows: &[Row]) -> (XAxis, Vec<f64>) {
    let by_row = || (XAxis::Row, (0..rows.len()).map(|i| i as f64).collect());
    let all_civil = rows
        .iter()
        .all(|r| matches!(r.ts, Some(Timestamp::Civil(_))));
    let all_numbers = rows
        .iter()
        .all(|r| matches!(r.ts, Some(Timestamp::Number(_))));
    if rows.is_empty() || !(all_civil || all_numbers) {
        return by_row();
    }
    let mut xs: Vec<f64> = rows
        .iter()
        .map(|r| match r.ts {
            Some(Timestamp::Civil(t) | Timestamp::Number(t)) => t,
            None => unreachable!("checked above"),
        })
        .collect();
    // Real logs step their clock back now and then (NAB's machine temperature does once);
    // such rows are drawn at the latest time seen instead of giving up the time axis.
    // Time that mostly runs backwards is not a clock: plot by row.
    let backwards = xs.windows(2).filter(|w| w[1] < w[0]).count();
    if backwards * 100 > xs.len() {
        return by_row();
    }
    for i in 1..xs.len() {
        xs[i] = xs[i].max(xs[i - 1]);
    }
    if all_civil {
        return (XAxis::Time, xs);
    }
    let first = xs[0];
    if first >= 1e11 {
        xs.iter_mut().for_each(|x| *x /= 1000.0);
        (XAxis::Time, xs)
    } else if first >= 1e8 {
        (XAxis::Time, xs)
    } else {
        (XAxis::Number, xs)
    }
}

/// Runs of consecutive rows for which `keep` holds, each as (x, row) pairs.
fn runs<'a>(
    rows: &'a [Row],
    xs: &'a [f64],
    keep: impl Fn(&Row) -> bool + 'a,
) -> impl Iterator<Item = impl Iterator<Item = (f64, &'a Row)> + Clone + 'a> + 'a {
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < rows.len() && !keep(&rows[i]) {
            i += 1;
        }
        if i == rows.len() {
            return None;
        }
        let start = i;
        while i < rows.len() && keep(&rows[i]) {
            i += 1;
        }
        Some(xs[start..i].iter().copied().zip(&rows[start..i]))
    })
}

/// The threshold as a step line: one horizontal stretch per run of rows with the same
/// threshold, a NaN point where rows without one break it. A constant threshold is two
/// points, so its dashes stay even.
fn threshold_steps(rows: &[Row], xs: &[f64]) -> Vec<(f64, f64)> {
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut current: Option<f64> = None;
    for (x, r) in xs.iter().zip(rows) {
        let t = r.threshold.filter(|t| t.is_finite());
        match (current, t) {
            (Some(c), Some(t)) if c == t => {
                // Extend the stretch to this row.
                if let Some(last) = steps.last_mut() {
                    last.0 = *x;
                }
            }
            (Some(_), Some(t)) => {
                steps.push((*x, t));
                steps.push((*x, t));
            }
            (None, Some(t)) => {
                steps.push((*x, t));
                steps.push((*x, t));
            }
            (Some(_), None) => steps.push((*x, f64::NAN)),
            (None, None) => {}
        }
        current = t;
    }
    steps
}

/// The smallest and largest of `values`, widened by `pad` of their span on each side (and
/// to a span of at least 1 or 1 % of the value, so that a flat series still has a range).
fn padded(values: impl Iterator<Item = f64>, pad: f64) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let half = (hi.abs() * 0.01).max(0.5);
        return (lo - half, hi + half);
    }
    let p = (hi - lo) * pad;
    (lo - p, hi + p)
}

/// Tick positions on a time axis: multiples of a round step (a minute ... a year) that
/// gives at most 8 ticks, so that labels fall on whole hours or midnights (UTC); and the step.
fn time_ticks(lo: f64, hi: f64) -> (Vec<f64>, f64) {
    const MIN: f64 = 60.0;
    const HOUR: f64 = 3600.0;
    const DAY: f64 = 86_400.0;
    const STEPS: [f64; 18] = [
        MIN,
        2.0 * MIN,
        5.0 * MIN,
        10.0 * MIN,
        15.0 * MIN,
        30.0 * MIN,
        HOUR,
        2.0 * HOUR,
        3.0 * HOUR,
        6.0 * HOUR,
        12.0 * HOUR,
        DAY,
        2.0 * DAY,
        7.0 * DAY,
        14.0 * DAY,
        28.0 * DAY,
        91.0 * DAY,
        365.0 * DAY,
    ];
    let span = hi - lo;
    let step = STEPS
        .into_iter()
        .find(|s| span / s <= 8.0)
        .unwrap_or_else(|| (span / 8.0 / (365.0 * DAY)).ceil() * 365.0 * DAY);
    // 7-day steps fall on Mondays: the epoch was a Thursday.
    let offset = if step == 7.0 * DAY || step == 14.0 * DAY {
        4.0 * DAY
    } else {
        0.0
    };
    (ticks_every(lo, hi, step, offset), step)
}

/// Tick positions at multiples of 1, 2 or 5 times a power of ten, at most about `count`,
/// and the step between them.
fn number_ticks(lo: f64, hi: f64, count: u32) -> (Vec<f64>, f64) {
    let raw = (hi - lo) / f64::from(count);
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * magnitude)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * magnitude);
    (ticks_every(lo, hi, step, 0.0), step)
}

fn ticks_every(lo: f64, hi: f64, step: f64, offset: f64) -> Vec<f64> {
    if !(step.is_finite() && step > 0.0) {
        return vec![lo];
    }
    let first = ((lo - offset) / step).ceil() * step + offset;
    (0..)
        .map(|i| first + f64::from(i) * step)
        .take_while(|t| *t <= hi)
        .take(64)
        .collect()
}

/// Labels for numeric ticks `step` apart: short (`250M`, not `250000000.0`), with as many
/// decimals as the step needs.
fn number_labels(ticks: &[f64], step: f64) -> impl Fn(&f64) -> String + use<> {
    let largest = ticks.iter().fold(0.0f64, |m, t| m.max(t.abs()));
    let (unit, suffix) = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")]
        .into_iter()
        .find(|(unit, _)| largest >= *unit)
        .map_or((1.0, ""), |(unit, suffix)| {
            // 10k and up in thousands, so 12500 reads 12.5k
            (if suffix == "k" { 1e3 } else { unit }, suffix)
        });
    let scaled = step / unit;
    let decimals = if scaled >= 1.0 || scaled <= 0.0 || !scaled.is_finite() {
        0
    } else {
        (-scaled.log10() - 1e-9).ceil().clamp(0.0, 9.0) as usize
    };
    move |x: &f64| {
        let v = x / unit;
        if v.abs() < scaled / 2.0 {
            // Zero is 0, not -0.0 from rounding nor 0M.
            return "0".to_owned();
        }
        format!("{v:.decimals$}{suffix}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(ts: &str, value: f64, score: Option<f64>, alarm: bool) -> Row {
        Row {
            ts: timestamp::parse(ts),
            value,
            score,
            threshold: Some(3.0),
            alarm,
        }
    }

    /// 200 five-minute rows from 2014-02-14 00:00, scores from row 50, the alarm firing on
    /// rows 120..130.
    fn synthetic(ts: impl Fn(usize) -> String) -> Vec<Row> {
        (0..200)
            .map(|i| {
                let value =
                    50.0 + 10.0 * (i as f64 * 0.3).sin() + if i >= 120 { 30.0 } else { 0.0 };
                let score = (i >= 50).then(|| if (118..130).contains(&i) { 4.5 } else { 1.0 });
                row(&ts(i), value, score, (120..130).contains(&i))
            })
            .collect()
    }

    fn five_minutes(i: usize) -> String {
        let start = timestamp::parse_civil("2014-02-14 00:00:00").unwrap();
        let t = start + i as f64 * 300.0;
        // format_civil shows minutes only; these rows fall on whole minutes.
        format!("{}:00", timestamp::format_civil(t, true))
    }

    fn count(svg: &str, needle: &str) -> usize {
        svg.matches(needle).count()
    }

    #[test]
    fn the_plot_shows_title_series_alarms_threshold_and_windows() {
        let rows = synthetic(five_minutes);
        let window = Window {
            start: timestamp::parse_civil("2014-02-14 09:30:00").unwrap(),
            end: timestamp::parse_civil("2014-02-14 11:00:00").unwrap(),
        };
        let svg = svg(&rows, "ec2_cpu & <friends>.csv", &[window]).unwrap();

        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains(r#"width="1200" height="600""#), "size");
        assert!(
            svg.contains("ec2_cpu &amp; &lt;friends&gt;.csv"),
            "escaped title"
        );
        // One red dot per alarm row (and a bigger one in the legend), and the red runs
        // between them.
        let red_dots = |radius: &str| {
            svg.lines()
                .filter(|l| {
                    l.starts_with("<circle")
                        && l.contains(r##"fill="#FF0000""##)
                        && l.contains(&format!(r#"r="{radius}""#))
                })
                .count()
        };
        assert_eq!(red_dots("2"), 10);
        assert_eq!(red_dots("3"), 1);
        assert!(svg.contains(">\nalarm firing\n<"));
        assert!(
            svg.lines()
                .any(|l| l.starts_with("<polyline") && l.contains(r##"stroke="#FF0000""##)),
            "alarm run"
        );
        // The window: one shaded rectangle per panel plus one in the legend.
        let shaded = svg
            .lines()
            .filter(|l| {
                l.starts_with("<rect")
                    && l.contains(r##"fill="#FF8C00""##)
                    && l.contains(r#"opacity="0.22""#)
            })
            .count();
        assert_eq!(shaded, 3, "{svg}");
        assert_eq!(count(&svg, "labelled anomaly window"), 1);
        // The threshold: dashes of its own colour, and its value in the legend.
        assert!(count(&svg, r##"stroke="#282828""##) > 20, "dashes");
        assert!(svg.contains(">\nalarm threshold 3\n<"));
        // Both panels and the time axis.
        for text in ["value", "score", "time (UTC)", "2014-02-14 03:00"] {
            assert!(svg.contains(&format!(">\n{text}\n<")), "{text}");
        }
    }

    #[test]
    fn unparsed_timestamps_fall_back_to_the_row_index_without_windows() {
        let rows = synthetic(|i| if i == 7 { "soon".into() } else { i.to_string() });
        let window = Window {
            start: 0.0,
            end: 1e12,
        };
        let svg = svg(&rows, "t", &[window]).unwrap();
        assert!(svg.contains(">\nrow\n<"));
        assert!(!svg.contains("#FF8C00"), "no window on a row axis");
        assert!(!svg.contains("labelled anomaly window"));
    }

    #[test]
    fn the_x_axis_is_time_numbers_or_rows() {
        let civil = synthetic(five_minutes);
        let (axis, xs) = x_values(&civil);
        assert_eq!(axis, XAxis::Time);
        assert_eq!(xs[1] - xs[0], 300.0);

        let epoch_ms = synthetic(|i| (1_392_336_000_000u64 + i as u64 * 300_000).to_string());
        let (axis, xs) = x_values(&epoch_ms);
        assert_eq!(axis, XAxis::Time);
        assert_eq!(xs[0], 1_392_336_000.0);
        assert_eq!(xs, x_values(&civil).1, "epoch ms and dates agree");

        let epoch_s = synthetic(|i| (1_392_336_000 + i * 300).to_string());
        assert_eq!(x_values(&epoch_s), x_values(&civil));

        let counts = synthetic(|i| (i * 2).to_string());
        let (axis, xs) = x_values(&counts);
        assert_eq!(axis, XAxis::Number);
        assert_eq!(xs[3], 6.0);

        let backwards = synthetic(|i| (1000 - i).to_string());
        assert_eq!(x_values(&backwards).0, XAxis::Row);
        let mixed = synthetic(|i| if i == 0 { "0".into() } else { five_minutes(i) });
        let (axis, xs) = x_values(&mixed);
        assert_eq!(axis, XAxis::Row);
        assert_eq!(xs[199], 199.0);
    }

    #[test]
    fn a_threshold_that_changes_is_drawn_as_steps() {
        let mut rows = synthetic(|i| i.to_string());
        rows.truncate(6);
        for (r, t) in rows.iter_mut().zip([3.0, 3.0, 5.0, 5.0, f64::NAN, 5.0]) {
            r.threshold = Some(t);
        }
        let steps = threshold_steps(&rows, &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let want = [(0.0, 3.0), (1.0, 3.0), (2.0, 5.0), (3.0, 5.0)];
        assert_eq!(steps[..4], want);
        assert!(steps[4].1.is_nan(), "gap at the row without a threshold");
        assert_eq!(steps[5..], [(5.0, 5.0), (5.0, 5.0)]);
    }

    #[test]
    fn time_ticks_fall_on_round_times() {
        let lo = timestamp::parse_civil("2014-02-14 14:30:00").unwrap();
        let hi = timestamp::parse_civil("2014-02-28 14:30:00").unwrap();
        let (ticks, _) = time_ticks(lo, hi);
        assert!(ticks.len() <= 8 && ticks.len() >= 4, "{ticks:?}");
        assert_eq!(timestamp::format_civil(ticks[0], true), "2014-02-15 00:00");
        assert_eq!(ticks[1] - ticks[0], 2.0 * 86_400.0);
        assert!(
            ticks.iter().all(|t| t.rem_euclid(86_400.0) == 0.0),
            "midnights"
        );
        let (ticks, step) = time_ticks(lo, lo + 3.0 * 3600.0);
        assert_eq!(step, 30.0 * 60.0);
        assert_eq!(timestamp::format_civil(ticks[0], true), "2014-02-14 14:30");
        assert_eq!(ticks[1] - ticks[0], 30.0 * 60.0);
    }

    #[test]
    fn number_labels_are_short_and_as_precise_as_the_step() {
        let label = |ticks: &[f64], step: f64, x: f64| number_labels(ticks, step)(&x);
        assert_eq!(label(&[0.0, 5e7, 2.5e8], 5e7, 2.5e8), "250M");
        assert_eq!(label(&[0.0, 5e7, 2.5e8], 5e7, 0.0), "0");
        assert_eq!(label(&[10_000.0, 12_500.0], 500.0, 12_500.0), "12.5k");
        assert_eq!(label(&[10_000.0, 12_000.0], 2_000.0, 12_000.0), "12k");
        assert_eq!(label(&[0.0, 0.5, 2.0], 0.5, 1.5), "1.5");
        assert_eq!(label(&[0.0, 0.05], 0.05, 0.05), "0.05");
        assert_eq!(label(&[0.0, 20.0, 100.0], 20.0, 40.0), "40");
        assert_eq!(label(&[-1e-17, 0.2], 0.2, -1e-17), "0");
    }

    #[test]
    fn an_empty_replay_still_draws() {
        let svg = svg(&[], "empty.csv", &[]).unwrap();
        assert!(svg.contains(">\nempty.csv\n<"));
    }
}
