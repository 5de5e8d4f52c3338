//! `lookout-bridge picture --chat`: the picture as a chat client shows it, in a message
//! bubble with its caption under it and an "Ack" button, for the docs and for people
//! checking what their phone will show. The caption is the default one (title, `explain`,
//! `summary`); a route's templates change it.

use plotters::backend::BitMapBackend;
use plotters::prelude::*;
use serde_json::Value;

use super::render::{encode, failed, pixels};
use super::text::{Align, Labels};
use super::{HEIGHT, Heading, Picture, Skip, WIDTH, window};

const MARGIN: i32 = 16;
const PAD: i32 = 8;
const LINE: i32 = 18;
const BUTTON: i32 = 36;
/// Characters per caption line at 13 px DejaVu Sans Mono across the picture's width.
const LINE_CHARS: usize = 78;
const BACKDROP: RGBColor = RGBColor(207, 220, 232);
const BUBBLE: RGBColor = RGBColor(255, 255, 255);
const BUTTON_FILL: RGBColor = RGBColor(176, 196, 214);
const TEXT: RGBColor = RGBColor(20, 20, 20);

/// The caption a Telegram target sends with the default templates.
pub fn caption(fields: &Value) -> String {
    let text = |k: &str| fields.get(k).and_then(Value::as_str).unwrap_or_default();
    let mut lines = vec![format!(
        "[{}] {} {}",
        text("state"),
        text("host"),
        text("source")
    )];
    lines.extend(
        [text("explain"), text("summary")]
            .into_iter()
            .filter(|l| !l.is_empty())
            .map(str::to_owned),
    );
    lines.join("\n")
}

fn wrap(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.lines() {
        let chars: Vec<char> = line.chars().collect();
        if chars.is_empty() {
            out.push(String::new());
        }
        for chunk in chars.chunks(LINE_CHARS) {
            out.push(chunk.iter().collect());
        }
    }
    out
}

/// The chat bubble: the picture, the caption, the Ack button.
pub fn preview(fields: &Value) -> Option<Result<Picture, Skip>> {
    let w = match window(fields)? {
        Ok(w) => w,
        Err(skip) => return Some(Err(skip)),
    };
    Some(draw(fields, &w))
}

fn draw(fields: &Value, w: &lookout_shared::payload::Window) -> Result<Picture, Skip> {
    let picture = pixels(w, &Heading::from_fields(fields))?;
    let lines = wrap(&caption(fields));
    let width = WIDTH as i32 + 2 * (MARGIN + PAD);
    let bubble_h = PAD + HEIGHT as i32 + PAD + LINE * lines.len() as i32 + PAD;
    let height = MARGIN + bubble_h + 4 + BUTTON + MARGIN;
    let (uw, uh) = (width as u32, height as u32);
    let mut buf = vec![0u8; (uw * uh * 3) as usize];
    let mut labels = Labels::default();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (uw, uh)).into_drawing_area();
        root.fill(&BACKDROP).map_err(failed)?;
        let right = width - MARGIN - 1;
        let bubble = [(MARGIN, MARGIN), (right, MARGIN + bubble_h)];
        root.draw(&Rectangle::new(bubble, BUBBLE.filled()))
            .map_err(failed)?;
        let top = MARGIN + bubble_h + 4;
        let button = [(MARGIN, top), (right, top + BUTTON)];
        root.draw(&Rectangle::new(button, BUTTON_FILL.filled()))
            .map_err(failed)?;
        root.present().map_err(failed)?;
        let centre = (width / 2, top + BUTTON / 2);
        labels.add("Ack", centre, 14.0, TEXT, (Align::Middle, Align::Middle));
        let text_top = MARGIN + PAD + HEIGHT as i32 + PAD;
        for (i, line) in lines.into_iter().enumerate() {
            let at = (MARGIN + PAD, text_top + LINE * i as i32);
            labels.add(line, at, 13.0, TEXT, (Align::Start, Align::Start));
        }
    }
    let row = WIDTH as usize * 3;
    for y in 0..HEIGHT as usize {
        let at = ((MARGIN + PAD) as usize + y) * uw as usize * 3 + (MARGIN + PAD) as usize * 3;
        buf[at..at + row].copy_from_slice(&picture[y * row..(y + 1) * row]);
    }
    if !labels.paint(&mut buf, uw) {
        return Err(Skip::Failed("the embedded font does not load".into()));
    }
    let png = encode(&buf, (uw, uh), png::Compression::Balanced)?;
    Ok(Picture { png })
}
