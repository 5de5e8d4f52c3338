//! Text on the picture: ab_glyph outlines of the embedded DejaVu Sans Mono, blended into the
//! RGB buffer after the shapes are drawn (so labels stay readable over lines).

use std::sync::OnceLock;

use ab_glyph::{Font, FontRef, PxScale, ScaleFont, point};
use plotters::style::RGBColor;

/// DejaVu Sans Mono 2.37 (`fonts/LICENSE-DejaVu.txt`).
const FONT: &[u8] = include_bytes!("../../fonts/DejaVuSansMono.ttf");

fn font() -> Option<&'static FontRef<'static>> {
    static FONT_REF: OnceLock<Option<FontRef<'static>>> = OnceLock::new();
    FONT_REF
        .get_or_init(|| FontRef::try_from_slice(FONT).ok())
        .as_ref()
}

/// Where a label's point is: its left, centre or right; its top, middle or bottom.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Align {
    Start,
    Middle,
    End,
}

/// One label to draw.
#[derive(Clone, Debug)]
pub(super) struct Label {
    pub text: String,
    pub at: (i32, i32),
    pub size: f32,
    pub colour: RGBColor,
    pub align: (Align, Align),
}

/// Labels collected while the shapes are drawn.
#[derive(Debug, Default)]
pub(super) struct Labels(pub Vec<Label>);

impl Labels {
    pub fn add(
        &mut self,
        text: impl Into<String>,
        at: (i32, i32),
        size: f32,
        colour: RGBColor,
        align: (Align, Align),
    ) {
        self.0.push(Label {
            text: text.into(),
            at,
            size,
            colour,
            align,
        });
    }

    /// Blends every label into `rgb` (`width` pixels a row); `false` if the font does
    /// not load.
    pub fn paint(&self, rgb: &mut [u8], width: u32) -> bool {
        let Some(font) = font() else {
            return false;
        };
        for label in &self.0 {
            paint(font, label, rgb, width);
        }
        true
    }
}

fn paint(font: &FontRef<'static>, label: &Label, rgb: &mut [u8], width: u32) {
    let scale = PxScale::from(label.size);
    let sf = font.as_scaled(scale);
    let ids: Vec<_> = label.text.chars().map(|c| sf.glyph_id(c)).collect();
    let advance: f32 = ids
        .iter()
        .enumerate()
        .map(|(i, &id)| sf.h_advance(id) + if i > 0 { sf.kern(ids[i - 1], id) } else { 0.0 })
        .sum();
    let (x, y) = (label.at.0 as f32, label.at.1 as f32);
    let left = match label.align.0 {
        Align::Start => x,
        Align::Middle => x - advance / 2.0,
        Align::End => x - advance,
    };
    let height = sf.ascent() - sf.descent();
    let top = match label.align.1 {
        Align::Start => y,
        Align::Middle => y - height / 2.0,
        Align::End => y - height,
    };
    let baseline = top + sf.ascent();
    let height_px = rgb.len() / 3 / width as usize;
    let [r, g, b] = [label.colour.0, label.colour.1, label.colour.2].map(f32::from);
    let mut caret = left;
    for (i, &id) in ids.iter().enumerate() {
        if i > 0 {
            caret += sf.kern(ids[i - 1], id);
        }
        let glyph = id.with_scale_and_position(scale, point(caret, baseline));
        caret += sf.h_advance(id);
        let Some(outline) = font.outline_glyph(glyph) else {
            continue;
        };
        let bounds = outline.px_bounds();
        outline.draw(|gx, gy, coverage| {
            let px = bounds.min.x as i64 + i64::from(gx);
            let py = bounds.min.y as i64 + i64::from(gy);
            if px < 0 || py < 0 || px >= i64::from(width) || py >= height_px as i64 {
                return;
            }
            let at = (py as usize * width as usize + px as usize) * 3;
            // Five levels of coverage: smooth enough at these sizes, and few colours, so
            // the picture fits a palette (`render::encode_palette`).
            let a = (coverage.clamp(0.0, 1.0) * 4.0).round() / 4.0;
            for (k, c) in [r, g, b].into_iter().enumerate() {
                let old = f32::from(rgb[at + k]);
                rgb[at + k] = (old + (c - old) * a).round() as u8;
            }
        });
    }
}
