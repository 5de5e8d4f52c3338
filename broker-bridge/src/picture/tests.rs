//! The renderer's tests: the picture is decoded and its pixels looked at.

use serde_json::{Value, json};

use super::render::{
    ANOMALY_LINE, ANOMALY_SHADE, PLOT_LEFT, PLOT_RIGHT, SCORE_PANEL, SERIES_PANEL, column,
};
use super::*;

/// The documentation's example: a cpu model, `system` flat near 5 % then at 60 % for the
/// last 40 ticks, the score crossing 1.75.
pub(crate) fn example() -> Value {
    serde_json::from_str(include_str!("../../../docs/img/alarm-example.json")).unwrap()
}

pub(crate) struct Decoded {
    pub width: u32,
    pub height: u32,
    rgb: Vec<u8>,
}

impl Decoded {
    pub fn of(png_bytes: &[u8]) -> Self {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(png_bytes));
        decoder.set_transformations(png::Transformations::EXPAND);
        let mut reader = decoder.read_info().expect("a PNG");
        let mut rgb = vec![0; reader.output_buffer_size().expect("size")];
        let info = reader.next_frame(&mut rgb).expect("a frame");
        assert_eq!(info.color_type, png::ColorType::Rgb);
        rgb.truncate(info.buffer_size());
        Decoded {
            width: info.width,
            height: info.height,
            rgb,
        }
    }

    fn at(&self, x: i32, y: i32) -> [u8; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.rgb[i], self.rgb[i + 1], self.rgb[i + 2]]
    }

    /// The columns of the plot where some pixel of the panel's rows is `colour`.
    fn columns_with(&self, (top, bottom): (i32, i32), colour: [u8; 3]) -> Vec<i32> {
        (PLOT_LEFT..PLOT_RIGHT)
            .filter(|&x| (top..bottom).any(|y| self.at(x, y) == colour))
            .collect()
    }
}

fn rgb(c: plotters::style::RGBColor) -> [u8; 3] {
    [c.0, c.1, c.2]
}

fn draw(fields: &Value) -> Result<Decoded, Skip> {
    from_fields(fields).expect("a window").map(|p| {
        assert!(p.png.len() <= MAX_BYTES, "{} bytes", p.png.len());
        Decoded::of(&p.png)
    })
}

#[test]
fn the_example_is_a_640_by_360_png_under_100_kib() {
    let p = from_fields(&example()).unwrap().unwrap();
    assert!(p.png.len() <= MAX_BYTES, "{} bytes", p.png.len());
    let d = Decoded::of(&p.png);
    assert_eq!((d.width, d.height), (WIDTH, HEIGHT));
}

#[test]
fn the_anomalous_span_is_shaded_red_on_both_panels_exactly_where_the_levels_are_above_0() {
    let fields = example();
    let levels = fields["window"]["level"].as_array().unwrap();
    let n = levels.len();
    let first = levels.iter().position(|l| l.as_u64() != Some(0)).unwrap();
    let d = draw(&fields).unwrap();
    for panel in [SERIES_PANEL, SCORE_PANEL] {
        let shaded = d.columns_with(panel, rgb(ANOMALY_SHADE));
        assert!(!shaded.is_empty());
        let (lo, hi) = (shaded[0], *shaded.last().unwrap());
        assert!(
            (lo - column(first, n)).abs() <= 1,
            "span starts at {lo}, tick {first} is at {}",
            column(first, n)
        );
        assert!(hi >= PLOT_RIGHT - 3, "span runs to the last tick: {hi}");
        assert!(shaded.len() as i32 >= hi - lo - 2, "no hole in the span");
    }
    let red_line = d.columns_with(SCORE_PANEL, rgb(ANOMALY_LINE));
    assert!(!red_line.is_empty(), "the anomalous scores are drawn red");
    assert!(
        red_line[0] >= column(first, n) - 2,
        "red score line starts at {}",
        red_line[0]
    );
}

#[test]
fn without_anomalous_ticks_nothing_is_shaded() {
    let mut fields = example();
    let n = fields["window"]["level"].as_array().unwrap().len();
    fields["window"]["level"] = json!(vec![0; n]);
    let d = draw(&fields).unwrap();
    assert!(d.columns_with(SERIES_PANEL, rgb(ANOMALY_SHADE)).is_empty());
    assert!(d.columns_with(SCORE_PANEL, rgb(ANOMALY_LINE)).is_empty());
}

/// Pixels of the normal band in the series panel.
fn band_pixels(d: &Decoded) -> usize {
    let band = rgb(super::render::BAND);
    (PLOT_LEFT..PLOT_RIGHT)
        .flat_map(|x| (SERIES_PANEL.0..SERIES_PANEL.1).map(move |y| (x, y)))
        .filter(|&(x, y)| d.at(x, y) == band)
        .count()
}

#[test]
fn the_top_series_normal_band_is_drawn_and_absent_without_one() {
    let mut fields = example();
    let d = draw(&fields).unwrap();
    // The band is at least 3 rows over the plot's width, less what the lines cover.
    assert!(band_pixels(&d) >= 500, "band pixels: {}", band_pixels(&d));
    fields["window"]["series"][0]
        .as_object_mut()
        .unwrap()
        .remove("normal");
    let d = draw(&fields).unwrap();
    assert_eq!(band_pixels(&d), 0, "no normal range, no band");
}

fn window_of(ts: Value, score: Value, level: Value, series: Value) -> Value {
    json!({"host": "h", "source": "s", "severity": 2, "threshold": 1.0,
           "window": {"ts": ts, "score": score, "level": level, "series": series}})
}

#[test]
fn hostile_windows_are_skipped_with_their_reason() {
    let inconsistent = window_of(
        json!([1, 2, 3]),
        json!([1.0, 2.0]),
        json!([0, 0, 0]),
        json!([]),
    );
    assert_eq!(draw(&inconsistent).err(), Some(Skip::Inconsistent));
    let series_short = window_of(
        json!([1, 2]),
        json!([1.0, 2.0]),
        json!([0, 0]),
        json!([{"name": "x", "values": [1.0]}]),
    );
    assert_eq!(draw(&series_short).err(), Some(Skip::Inconsistent));
    let one = window_of(json!([1]), json!([1.0]), json!([1]), json!([]));
    assert_eq!(draw(&one).err(), Some(Skip::Empty));
    let nulls = window_of(
        json!([1, 2]),
        json!([null, null]),
        json!([0, 0]),
        json!([{"name": "x", "values": [null, null]}]),
    );
    assert_eq!(draw(&nulls).err(), Some(Skip::Empty));
    let empty = window_of(json!([]), json!([]), json!([]), json!([]));
    assert_eq!(draw(&empty).err(), Some(Skip::Inconsistent));
    for bad in [
        json!("a string"),
        json!({"ts": [1]}),
        json!({"ts": ["x"], "score": [], "level": [], "series": []}),
    ] {
        let fields = json!({"window": bad});
        assert!(matches!(draw(&fields), Err(Skip::Malformed(_))), "{bad}");
    }
    assert!(
        from_fields(&json!({"host": "h"})).is_none(),
        "no window, nothing to count"
    );
    assert!(from_fields(&json!({"window": null})).is_none());
}

#[test]
fn hostile_values_are_drawn_as_far_as_they_can_be() {
    let huge = window_of(
        json!([1, 2, 3, 4]),
        json!([1e308, -1e308, 0.0, 5e-324]),
        json!([0, 4, 255, 0]),
        json!([{"name": "x", "values": [1e308, -1e308, null, 1.0], "normal": [-1e308, 1e308]},
               {"name": "flat", "values": [3.0, 3.0, 3.0, 3.0], "normal": [1.0, 0.0]}]),
    );
    draw(&huge).expect("huge values draw");
    let unordered = json!({"threshold": -1e308, "severity": "x", "host": "h".repeat(10_000),
        "window": {"ts": [i64::MAX, i64::MIN, 0], "score": [1.0, 2.0, 3.0], "level": [0, 1, 0], "series": []}});
    draw(&unordered).expect("unordered times draw");
    // serde_json reads no NaN; a window built in code can hold one.
    let nan = Window {
        ts: vec![1, 2, 3],
        score: vec![Some(f64::NAN), Some(f64::INFINITY), Some(1.0)],
        level: vec![0, 0, 1],
        series: vec![lookout_shared::payload::WindowSeries {
            name: "x".into(),
            values: vec![Some(f64::NEG_INFINITY), Some(2.0), Some(f64::NAN)],
            normal: Some([f64::NAN, 1.0]),
        }],
    };
    render::render(&nan, &Heading::default()).expect("NaN and inf are gaps");
}

#[test]
fn the_largest_window_draws_its_newest_600_ticks_and_three_series_within_the_size_limit() {
    let n = 5000;
    let series: Vec<Value> = (0..5)
        .map(|k| {
            json!({"name": format!("dimension-{k}-with-a-long-name"),
            "values": (0..n).map(|i| ((i * (k + 7)) % 97) as f64 * 1.37).collect::<Vec<_>>(),
            "normal": [10.0, 50.0]})
        })
        .collect();
    let fields = window_of(
        json!((0..n as i64).map(|i| i * 1000).collect::<Vec<_>>()),
        json!((0..n).map(|i| (i % 13) as f64 / 3.0).collect::<Vec<_>>()),
        json!((0..n).map(|i| u8::from(i % 7 == 0)).collect::<Vec<_>>()),
        json!(series),
    );
    let d = draw(&fields).expect("draws");
    assert_eq!((d.width, d.height), (WIDTH, HEIGHT));
}

#[test]
fn attach_counts_pictures_rendered_and_skipped_by_reason() {
    let before = (
        counts().rendered.load(Ordering::Relaxed),
        counts().inconsistent.load(Ordering::Relaxed),
    );
    assert!(attach("t", &example()).is_some());
    let bad = window_of(json!([1, 2]), json!([1.0]), json!([0, 0]), json!([]));
    assert!(attach("t", &bad).is_none());
    assert!(attach("t", &json!({"host": "h"})).is_none());
    assert!(counts().rendered.load(Ordering::Relaxed) > before.0);
    assert!(counts().inconsistent.load(Ordering::Relaxed) > before.1);
}

#[test]
fn relative_times_read_as_people_write_them() {
    use super::render::relative;
    assert_eq!(relative(45_000), "45s");
    assert_eq!(relative(600_000), "10m");
    assert_eq!(relative(90_000), "1m30s");
    assert_eq!(relative(7_200_000), "2h");
    assert_eq!(relative(3 * 86_400_000 + 4 * 3_600_000), "3d4h");
}

#[test]
fn the_cli_writes_the_png_and_refuses_alarms_it_cannot_draw_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let alarm = dir.path().join("alarm.json");
    let out = dir.path().join("out.png");
    std::fs::write(&alarm, example().to_string()).unwrap();
    let line = write_file(&alarm, &out, false).unwrap();
    assert!(line.unwrap().starts_with("score "));
    assert_eq!(Decoded::of(&std::fs::read(&out).unwrap()).width, WIDTH);

    write_file(&alarm, &out, true).unwrap();
    let chat = Decoded::of(&std::fs::read(&out).unwrap());
    assert!(
        chat.width > WIDTH && chat.height > HEIGHT + 3 * 18,
        "the bubble holds picture and caption"
    );

    for (text, why) in [
        ("{\"host\": \"h\"}", "no \"window\""),
        ("not json", "not JSON"),
        (
            "{\"window\": {\"ts\": [1, 2], \"score\": [1], \"level\": [0, 0], \"series\": []}}",
            "differ in length",
        ),
    ] {
        std::fs::write(&alarm, text).unwrap();
        let err = write_file(&alarm, &out, false).expect_err(text);
        assert!(matches!(err, crate::Error::Picture { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with(&alarm.display().to_string()) && message.contains(why),
            "{message}"
        );
    }
    let missing = write_file(&dir.path().join("nope.json"), &out, false).expect_err("missing");
    assert!(matches!(missing, crate::Error::Io { .. }));
}
