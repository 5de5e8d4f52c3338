//! The PNG: a title line, the series over their normal band (top panel), the score over
//! its threshold (bottom panel), the anomalous ticks shaded red on both, times below.
//!
//! Ticks are placed by index, not by time: the agent's ticks are evenly spaced, and a gap
//! (a restart) then shows as a jump in the time labels rather than as an empty stretch. Each
//! series is scaled to the panel on its own (their units differ); the left axis is the top
//! series', whose normal band is drawn. Values that are not finite are gaps.

use plotters::backend::BitMapBackend;
use plotters::coord::Shift;
use plotters::prelude::*;

use lookout_shared::payload::Window;

use super::text::{Align, Labels};
use super::{HEIGHT, Heading, MAX_BYTES, MAX_POINTS, MAX_SERIES, Picture, Skip, WIDTH};

/// The plot areas, in pixels: `[left, right)` by `[top, bottom)`.
pub(crate) const PLOT_LEFT: i32 = 64;
pub(crate) const PLOT_RIGHT: i32 = 628;
pub(crate) const SERIES_PANEL: (i32, i32) = (30, 214);
pub(crate) const SCORE_PANEL: (i32, i32) = (228, 326);

pub(crate) const ANOMALY_SHADE: RGBColor = RGBColor(255, 204, 204);
pub(crate) const BAND: RGBColor = RGBColor(178, 223, 180);
pub(crate) const ANOMALY_LINE: RGBColor = RGBColor(211, 47, 47);
const SERIES_COLOURS: [RGBColor; MAX_SERIES] = [
    RGBColor(25, 118, 210),
    RGBColor(245, 124, 0),
    RGBColor(123, 31, 162),
];
const SCORE_LINE: RGBColor = RGBColor(66, 66, 66);
const THRESHOLD: RGBColor = RGBColor(230, 81, 0);
const GRID: RGBColor = RGBColor(224, 224, 224);
const TEXT: RGBColor = RGBColor(33, 33, 33);
const MUTED: RGBColor = RGBColor(97, 97, 97);
const BAND_TEXT: RGBColor = RGBColor(46, 125, 50);

/// The window as drawn: its newest [`MAX_POINTS`] ticks, non-finite values as gaps.
struct Prepared<'a> {
    ts: &'a [i64],
    level: &'a [u8],
    score: Vec<Option<f64>>,
    series: Vec<Line<'a>>,
}

struct Line<'a> {
    name: &'a str,
    values: Vec<Option<f64>>,
    normal: Option<[f64; 2]>,
}

fn finite(v: &[Option<f64>]) -> Vec<Option<f64>> {
    v.iter().map(|x| x.filter(|x| x.is_finite())).collect()
}

fn prepare(w: &Window) -> Result<Prepared<'_>, Skip> {
    if !w.is_consistent() {
        return Err(Skip::Inconsistent);
    }
    let n = w.ts.len();
    let from = n.saturating_sub(MAX_POINTS);
    let series: Vec<Line<'_>> = w
        .series
        .iter()
        .take(MAX_SERIES)
        .map(|s| Line {
            name: &s.name,
            values: finite(&s.values[from..]),
            normal: s
                .normal
                .filter(|[a, b]| a.is_finite() && b.is_finite())
                .map(|[a, b]| [a.min(b), a.max(b)]),
        })
        .collect();
    let p = Prepared {
        ts: &w.ts[from..],
        level: &w.level[from..],
        score: finite(&w.score[from..]),
        series,
    };
    let anything = p.score.iter().flatten().next().is_some()
        || p.series
            .iter()
            .any(|s| s.values.iter().flatten().next().is_some());
    if p.ts.len() < 2 || !anything {
        return Err(Skip::Empty);
    }
    Ok(p)
}

/// A value range mapped onto a panel's pixel rows, safe for any finite input (the span is
/// computed from halves, so `-MAX..MAX` does not overflow).
#[derive(Clone, Copy, Debug)]
struct Scale {
    lo: f64,
    half_span: f64,
}

impl Scale {
    fn of(values: impl Iterator<Item = f64>) -> Option<Self> {
        let (lo, hi) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
        if lo > hi {
            return None;
        }
        let half_span = hi / 2.0 - lo / 2.0;
        // A flat line sits in the middle of the panel.
        if half_span <= f64::MIN_POSITIVE * 1e6 || !half_span.is_finite() {
            let pad = if lo == 0.0 { 1.0 } else { lo.abs() / 2.0 };
            return Some(Scale {
                lo: lo - pad,
                half_span: pad,
            });
        }
        // 6 % headroom above and below, so lines do not run along the panel's edges; none
        // below 0 for values that are never negative.
        let pad = half_span * 0.12;
        let low = if lo >= 0.0 {
            (lo - pad).max(0.0)
        } else {
            lo - pad
        };
        let high = hi + pad;
        Some(Scale {
            lo: low,
            half_span: high / 2.0 - low / 2.0,
        })
    }

    /// 0 at the bottom, 1 at the top (clamped).
    fn unit(&self, v: f64) -> f64 {
        ((v / 2.0 - self.lo / 2.0) / self.half_span).clamp(0.0, 1.0)
    }

    fn value_at(&self, unit: f64) -> f64 {
        self.lo + unit * self.half_span * 2.0
    }

    fn row(&self, v: f64, (top, bottom): (i32, i32)) -> i32 {
        bottom - 1 - (self.unit(v) * f64::from(bottom - 1 - top)).round() as i32
    }
}

/// The pixel column of tick `i` of `n`.
pub(crate) fn column(i: usize, n: usize) -> i32 {
    let span = f64::from(PLOT_RIGHT - 1 - PLOT_LEFT);
    PLOT_LEFT + (i as f64 * span / (n.max(2) - 1) as f64).round() as i32
}

type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

const LEFT_TOP: (Align, Align) = (Align::Start, Align::Start);
const LEFT_MIDDLE: (Align, Align) = (Align::Start, Align::Middle);
const LEFT_BOTTOM: (Align, Align) = (Align::Start, Align::End);
const RIGHT_MIDDLE: (Align, Align) = (Align::End, Align::Middle);

pub(super) fn failed(e: impl std::fmt::Display) -> Skip {
    Skip::Failed(e.to_string())
}

/// Draws the window and encodes it as PNG.
pub(super) fn render(window: &Window, heading: &Heading) -> Result<Picture, Skip> {
    let buf = pixels(window, heading)?;
    // The picture has few colours (flat fills, lines, text at 5 levels of coverage): as
    // indices into its own palette it is a third of the bytes to compress, and exact.
    let mut png = match encode_palette(&buf)? {
        Some(png) => png,
        None => encode(&buf, (WIDTH, HEIGHT), png::Compression::Fast)?,
    };
    if png.len() > MAX_BYTES {
        // Noise everywhere (a hostile or very busy window): 216 colours compress further.
        png = encode_indexed(&buf)?;
    }
    if png.len() > MAX_BYTES {
        return Err(Skip::Failed(format!(
            "{} bytes, over the limit of {MAX_BYTES}",
            png.len()
        )));
    }
    Ok(Picture { png })
}

/// The picture's RGB pixels, [`WIDTH`] × [`HEIGHT`].
pub(super) fn pixels(window: &Window, heading: &Heading) -> Result<Vec<u8>, Skip> {
    let p = prepare(window)?;
    let mut buf = vec![255u8; (WIDTH * HEIGHT * 3) as usize];
    let mut labels = Labels::default();
    let mut strokes = Vec::new();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        title(&mut labels, heading, &p);
        draw_anomalies(&root, &p).map_err(failed)?;
        draw_series(&root, &mut strokes, &mut labels, &p).map_err(failed)?;
        draw_score(&root, &mut strokes, &mut labels, &p, heading.threshold).map_err(failed)?;
        draw_times(&root, &mut labels, p.ts).map_err(failed)?;
        root.present().map_err(failed)?;
    }
    for s in &strokes {
        s.paint(&mut buf);
    }
    if !labels.paint(&mut buf, WIDTH) {
        return Err(Skip::Failed("the embedded font does not load".into()));
    }
    Ok(buf)
}

pub(super) fn encode(
    rgb: &[u8],
    (width, height): (u32, u32),
    compression: png::Compression,
) -> Result<Vec<u8>, Skip> {
    let mut out = Vec::with_capacity(64 * 1024);
    let mut enc = png::Encoder::new(&mut out, width, height);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_compression(compression);
    let mut writer = enc.write_header().map_err(failed)?;
    writer.write_image_data(rgb).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

/// The picture with its exact colours as a palette; `None` when it has more than 256.
fn encode_palette(rgb: &[u8]) -> Result<Option<Vec<u8>>, Skip> {
    let mut slots: std::collections::HashMap<[u8; 3], u8> = std::collections::HashMap::new();
    let mut palette: Vec<u8> = Vec::with_capacity(256 * 3);
    let mut index = Vec::with_capacity(rgb.len() / 3);
    let mut last: Option<([u8; 3], u8)> = None;
    for p in rgb.chunks_exact(3) {
        let c = [p[0], p[1], p[2]];
        let i = match last {
            Some((prev, i)) if prev == c => i,
            _ => {
                let next = slots.len();
                let i = match slots.get(&c) {
                    Some(&i) => i,
                    None if next < 256 => {
                        slots.insert(c, next as u8);
                        palette.extend_from_slice(&c);
                        next as u8
                    }
                    None => return Ok(None),
                };
                last = Some((c, i));
                i
            }
        };
        index.push(i);
    }
    let mut out = Vec::with_capacity(32 * 1024);
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette);
    enc.set_filter(png::Filter::NoFilter);
    enc.set_compression(png::Compression::Fast);
    let mut writer = enc.write_header().map_err(failed)?;
    writer.write_image_data(&index).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(Some(out))
}

/// The picture in the 6 × 6 × 6 colour cube, one byte a pixel.
fn encode_indexed(rgb: &[u8]) -> Result<Vec<u8>, Skip> {
    let level = |c: u8| (u16::from(c) * 5 + 127) / 255;
    let index: Vec<u8> = rgb
        .chunks_exact(3)
        .map(|p| (level(p[0]) * 36 + level(p[1]) * 6 + level(p[2])) as u8)
        .collect();
    let palette: Vec<u8> = (0..216u16)
        .flat_map(|i| [i / 36, i / 6 % 6, i % 6].map(|l| (l * 51) as u8))
        .collect();
    let mut out = Vec::with_capacity(64 * 1024);
    let mut enc = png::Encoder::new(&mut out, WIDTH, HEIGHT);
    enc.set_color(png::ColorType::Indexed);
    enc.set_depth(png::BitDepth::Eight);
    enc.set_palette(palette);
    enc.set_compression(png::Compression::Balanced);
    let mut writer = enc.write_header().map_err(failed)?;
    writer.write_image_data(&index).map_err(failed)?;
    writer.finish().map_err(failed)?;
    Ok(out)
}

type Drawn =
    Result<(), DrawingAreaErrorKind<<BitMapBackend<'static> as DrawingBackend>::ErrorType>>;

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn title(labels: &mut Labels, h: &Heading, p: &Prepared<'_>) {
    let mut parts = vec![cut(&h.host, 32), cut(&h.source, 32)];
    if let Some(s) = h.severity {
        parts.push(format!("severity {s}"));
    }
    if !h.state.is_empty() {
        parts.push(cut(&h.state, 12));
    }
    labels.add(parts.join(" · "), (8, 14), 15.0, TEXT, LEFT_MIDDLE);
    let last = p.ts[p.ts.len() - 1];
    let when = lookout_shared::time::Civil::from_ms(last);
    let stamp = format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        when.year, when.month, when.day, when.hour, when.minute
    );
    labels.add(stamp, (WIDTH as i32 - 8, 14), 11.0, MUTED, RIGHT_MIDDLE);
}

/// Light red behind each anomalous tick, on both panels, from halfway to its neighbours.
fn draw_anomalies(root: &Area<'_>, p: &Prepared<'_>) -> Drawn {
    let n = p.ts.len();
    let mut i = 0;
    while i < n {
        if p.level[i] == 0 {
            i += 1;
            continue;
        }
        let start = i;
        while i < n && p.level[i] > 0 {
            i += 1;
        }
        let half = (column(1, n) - column(0, n)) / 2;
        let x0 = (column(start, n) - half).max(PLOT_LEFT);
        let x1 = (column(i - 1, n) + half + 1).min(PLOT_RIGHT);
        for (top, bottom) in [SERIES_PANEL, SCORE_PANEL] {
            root.draw(&Rectangle::new(
                [(x0, top), (x1 - 1, bottom - 1)],
                ANOMALY_SHADE.filled(),
            ))?;
        }
    }
    Ok(())
}

/// A line through the points that have a value, broken at gaps; `colour_at` picks each
/// segment's colour from the tick it ends at.
fn draw_line(
    root: &Area<'_>,
    strokes: &mut Vec<Stroke>,
    values: &[Option<f64>],
    width: u32,
    row: impl Fn(f64) -> i32,
    colour_at: impl Fn(usize) -> RGBColor,
) -> Drawn {
    let n = values.len();
    let mut run: Vec<(i32, i32)> = Vec::with_capacity(n);
    let mut colour = colour_at(0);
    for (i, v) in values.iter().enumerate() {
        let c = colour_at(i);
        match v {
            Some(v) => {
                let point = (column(i, n), row(*v));
                if c != colour && !run.is_empty() {
                    run.push(point);
                    strokes.push(Stroke {
                        points: std::mem::take(&mut run),
                        colour,
                        width,
                    });
                }
                colour = c;
                run.push(point);
            }
            None => {
                flush(root, strokes, &mut run, colour, width)?;
            }
        }
    }
    flush(root, strokes, &mut run, colour, width)
}

fn flush(
    root: &Area<'_>,
    strokes: &mut Vec<Stroke>,
    run: &mut Vec<(i32, i32)>,
    colour: RGBColor,
    width: u32,
) -> Drawn {
    match run.len() {
        0 => Ok(()),
        1 => {
            let (x, y) = run[0];
            run.clear();
            root.draw(&Circle::new((x, y), 2, colour.filled()))
        }
        _ => {
            strokes.push(Stroke {
                points: std::mem::take(run),
                colour,
                width,
            });
            Ok(())
        }
    }
}

/// A polyline drawn after the shapes, straight into the buffer: one Bresenham line per
/// segment, `width` rows thick. plotters anti-aliases lines pixel by pixel with blending,
/// which was most of a picture's time and gave it thousands of colours.
pub(super) struct Stroke {
    points: Vec<(i32, i32)>,
    colour: RGBColor,
    width: u32,
}

impl Stroke {
    fn paint(&self, rgb: &mut [u8]) {
        let (w, h) = (WIDTH as i32, HEIGHT as i32);
        let c = [self.colour.0, self.colour.1, self.colour.2];
        let mut put = |x: i32, y: i32| {
            for dy in 0..self.width as i32 {
                let yy = y + dy;
                if (0..w).contains(&x) && (0..h).contains(&yy) {
                    let at = (yy as usize * WIDTH as usize + x as usize) * 3;
                    rgb[at..at + 3].copy_from_slice(&c);
                }
            }
        };
        for pair in self.points.windows(2) {
            let ((mut x, mut y), (x1, y1)) = (pair[0], pair[1]);
            let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
            let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
            let mut err = dx + dy;
            loop {
                put(x, y);
                if x == x1 && y == y1 {
                    break;
                }
                let e2 = 2 * err;
                if e2 >= dy {
                    err += dy;
                    x += sx;
                }
                if e2 <= dx {
                    err += dx;
                    y += sy;
                }
            }
        }
    }
}

fn panel_frame(root: &Area<'_>, (top, bottom): (i32, i32)) -> Drawn {
    root.draw(&Rectangle::new(
        [(PLOT_LEFT, top), (PLOT_RIGHT - 1, bottom - 1)],
        GRID.stroke_width(1),
    ))
}

/// The series' scales: one shared axis when the others are of the top series' size (the
/// dimensions of one chart usually share a unit: a cpu's `system`, `user`, `iowait`), so
/// their levels compare; otherwise each of the others on its own scale, drawn thin.
fn scales(p: &Prepared<'_>) -> Vec<Option<Scale>> {
    let values = |l: &Line<'_>| l.values.iter().flatten().copied().collect::<Vec<f64>>();
    let band = p.series.first().and_then(|l| l.normal);
    let top_size = p.series.first().map_or(0.0, |l| {
        values(l)
            .iter()
            .chain(band.iter().flatten())
            .fold(0.0_f64, |m, v| m.max(v.abs()))
    });
    let comparable = p.series.iter().skip(1).all(|l| {
        values(l)
            .iter()
            .all(|v| v.abs() <= top_size * 20.0 + f64::MIN_POSITIVE)
    });
    if comparable {
        let all = p
            .series
            .iter()
            .flat_map(values)
            .chain(band.into_iter().flatten());
        let shared = Scale::of(all);
        return p.series.iter().map(|_| shared).collect();
    }
    p.series
        .iter()
        .enumerate()
        .map(|(k, l)| {
            let band = if k == 0 { l.normal } else { None };
            Scale::of(values(l).into_iter().chain(band.into_iter().flatten()))
        })
        .collect()
}

fn draw_series(
    root: &Area<'_>,
    strokes: &mut Vec<Stroke>,
    labels: &mut Labels,
    p: &Prepared<'_>,
) -> Drawn {
    panel_frame(root, SERIES_PANEL)?;
    let top = SERIES_PANEL.0;
    let scales = scales(p);
    let shared = scales
        .windows(2)
        .all(|w| w[0].map(|s| s.lo) == w[1].map(|s| s.lo));
    if let (Some(Some(scale)), Some([lo, hi])) =
        (scales.first(), p.series.first().and_then(|l| l.normal))
    {
        let row = |v: f64| scale.row(v, SERIES_PANEL);
        // At least 3 rows, so a narrow normal range still shows.
        let (y0, y1) = (row(hi).min(row(lo) - 2), row(lo));
        root.draw(&Rectangle::new(
            [(PLOT_LEFT + 1, y0), (PLOT_RIGHT - 2, y1)],
            BAND.filled(),
        ))?;
        let label = format!("normal {}–{}", number(lo), number(hi));
        labels.add(label, (PLOT_LEFT + 4, y0 - 1), 10.0, BAND_TEXT, LEFT_BOTTOM);
    }
    if let Some(Some(scale)) = scales.first() {
        axis_labels(labels, scale, SERIES_PANEL);
    }
    // The others first, so the top series is drawn over them.
    for (k, line) in p.series.iter().enumerate().rev() {
        let Some(scale) = scales[k] else { continue };
        let colour = SERIES_COLOURS[k];
        let width = if k == 0 { 2 } else { 1 };
        draw_line(
            root,
            strokes,
            &line.values,
            width,
            |v| scale.row(v, SERIES_PANEL),
            |_| colour,
        )?;
    }
    let mut legend_x = PLOT_LEFT + 6;
    for (k, line) in p.series.iter().enumerate() {
        let last = line.values.iter().rev().flatten().next();
        let mut label = match last {
            Some(v) => format!("{} {}", cut(line.name, 24), number(*v)),
            None => cut(line.name, 24),
        };
        if k > 0 && !shared {
            label.push_str(" (own scale)");
        }
        let colour = SERIES_COLOURS[k];
        root.draw(&Rectangle::new(
            [(legend_x, top + 6), (legend_x + 8, top + 14)],
            colour.filled(),
        ))?;
        labels.add(
            label.clone(),
            (legend_x + 12, top + 4),
            11.0,
            TEXT,
            LEFT_TOP,
        );
        legend_x += 12 + 7 * label.chars().count() as i32 + 14;
    }
    Ok(())
}

/// Three values on the left axis: bottom, middle, top.
fn axis_labels(labels: &mut Labels, scale: &Scale, (top, bottom): (i32, i32)) {
    for unit in [0.0, 0.5, 1.0] {
        let y = bottom - 1 - (unit * f64::from(bottom - 1 - top)).round() as i32;
        let text = number(scale.value_at(unit));
        labels.add(text, (PLOT_LEFT - 4, y), 10.0, MUTED, RIGHT_MIDDLE);
    }
}

fn draw_score(
    root: &Area<'_>,
    strokes: &mut Vec<Stroke>,
    labels: &mut Labels,
    p: &Prepared<'_>,
    threshold: Option<f64>,
) -> Drawn {
    panel_frame(root, SCORE_PANEL)?;
    let scores = p.score.iter().flatten().copied();
    let threshold = threshold.filter(|t| t.is_finite());
    // From 0, so the height of a score against its threshold means something.
    let Some(scale) = Scale::of(scores.chain(threshold).chain([0.0])) else {
        return Ok(());
    };
    let row = |v: f64| scale.row(v, SCORE_PANEL);
    axis_labels(labels, &scale, SCORE_PANEL);
    labels.add(
        "score",
        (PLOT_LEFT + 4, SCORE_PANEL.0 + 3),
        10.0,
        MUTED,
        LEFT_TOP,
    );
    if let Some(t) = threshold {
        let y = row(t);
        let mut x = PLOT_LEFT;
        while x < PLOT_RIGHT {
            let end = (x + 6).min(PLOT_RIGHT - 1);
            root.draw(&PathElement::new(
                vec![(x, y), (end, y)],
                THRESHOLD.stroke_width(1),
            ))?;
            x += 10;
        }
        let label = format!("threshold {}", number(t));
        labels.add(label, (PLOT_LEFT + 60, y - 1), 10.0, THRESHOLD, LEFT_BOTTOM);
    }
    draw_line(root, strokes, &p.score, 2, row, |i| {
        if p.level[i] > 0 {
            ANOMALY_LINE
        } else {
            SCORE_LINE
        }
    })
}

/// Five labels under the score panel: the time before the last tick (`-10m`), and the last
/// tick's time of day.
fn draw_times(root: &Area<'_>, labels: &mut Labels, ts: &[i64]) -> Drawn {
    let n = ts.len();
    let last = ts[n - 1];
    let y = SCORE_PANEL.1 + 4;
    for k in 0..5 {
        let i = k * (n - 1) / 4;
        let x = column(i, n);
        root.draw(&PathElement::new(
            vec![(x, SCORE_PANEL.1), (x, SCORE_PANEL.1 + 3)],
            MUTED,
        ))?;
        let (text, h) = if i == n - 1 {
            let c = lookout_shared::time::Civil::from_ms(last);
            (
                format!("{:02}:{:02}:{:02} UTC", c.hour, c.minute, c.second),
                Align::End,
            )
        } else {
            let ago = last.saturating_sub(ts[i]);
            let text = if ago > 0 {
                format!("-{}", relative(ago))
            } else {
                "?".into()
            };
            (text, if i == 0 { Align::Start } else { Align::Middle })
        };
        labels.add(text, (x, y), 10.0, MUTED, (h, Align::Start));
    }
    Ok(())
}

/// `10m`, `1m30s`, `45s`, `2h`, `3d4h` from milliseconds.
pub(crate) fn relative(ms: i64) -> String {
    let s = ms / 1000;
    let (d, h, m, sec) = (s / 86_400, s / 3600 % 24, s / 60 % 60, s % 60);
    match (d, h, m, sec) {
        (0, 0, 0, sec) => format!("{sec}s"),
        (0, 0, m, 0) => format!("{m}m"),
        (0, 0, m, sec) => format!("{m}m{sec}s"),
        (0, h, 0, _) => format!("{h}h"),
        (0, h, m, _) => format!("{h}h{m}m"),
        (d, 0, _, _) => format!("{d}d"),
        (d, h, _, _) => format!("{d}d{h}h"),
    }
}

/// A value short enough for an axis: `0.25`, `38.1`, `1200`, `3.1e9`.
fn number(v: f64) -> String {
    let a = v.abs();
    if a != 0.0 && !(0.01..1e6).contains(&a) {
        format!("{v:.1e}")
    } else if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}
