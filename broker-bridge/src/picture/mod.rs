//! A picture of an anomaly: the alarm's `window` (docs/topics.md) drawn as a small PNG
//! for the targets that can show one (Telegram, Slack, e-mail, ntfy, Discord), and as a
//! one-line text sparkline for the others.
//!
//! Pictures are drawn where they are sent, from the notification's fields, and never
//! stored: a retried or recovered notification draws its picture again, so the notification
//! log holds the window's JSON (tens of KiB), never an image. A window that cannot be drawn
//! is skipped with a counted reason ([`Skip`]) and the alarm goes out without a picture; a
//! picture is never a reason for an alarm not to be sent.
//!
//! - [`render`]: the PNG: fills by plotters' bitmap backend into a buffer, then the lines
//!   (Bresenham) and the text (`text`: ab_glyph and the embedded DejaVu Sans Mono, so no
//!   system font is needed) straight into it, encoded by `png` with the picture's own
//!   palette; `chat`: the same in a chat bubble, for `lookout-bridge picture --chat`;
//! - [`sparkline`]: the text version.

mod chat;
mod render;
mod sparkline;
mod text;

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use lookout_shared::payload::Window;
use serde::Deserialize;
use serde_json::Value;

use crate::stats::RateLimited;

pub use sparkline::sparkline;

/// The picture's size in pixels: readable on a phone, small enough to send anywhere.
pub const WIDTH: u32 = 640;
pub const HEIGHT: u32 = 360;
/// The most ticks drawn: the agent sends at most 600 (`[detector] picture_points`); a
/// longer window from another publisher is drawn by its newest 600.
pub const MAX_POINTS: usize = 600;
/// The most series drawn (the agent sends at most 3, the largest shares first).
pub const MAX_SERIES: usize = 3;
/// A PNG larger than this is not sent (none has come near it: BENCHMARKS.md).
pub const MAX_BYTES: usize = 100 * 1024;
/// The file name the picture is attached as.
pub const FILE_NAME: &str = "anomaly.png";

/// A rendered picture.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Picture {
    pub png: Vec<u8>,
}

/// Why an alarm's window was not drawn. Each is counted in the bridge's stats
/// (`pictures.skipped_<reason>`).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum Skip {
    /// `window` is not an object of the documented shape.
    #[error("the window is not a window object: {0}")]
    Malformed(String),
    /// Its parallel arrays differ in length (or it has no ticks).
    #[error("the window's arrays differ in length")]
    Inconsistent,
    /// Fewer than two ticks, or no finite value to draw.
    #[error("the window has nothing to draw (fewer than 2 ticks or no finite value)")]
    Empty,
    /// Drawing or encoding failed, or the PNG came out over [`MAX_BYTES`].
    #[error("the picture could not be drawn: {0}")]
    Failed(String),
}

impl Skip {
    pub fn reason(&self) -> &'static str {
        match self {
            Skip::Malformed(_) => "malformed",
            Skip::Inconsistent => "inconsistent",
            Skip::Empty => "empty",
            Skip::Failed(_) => "failed",
        }
    }
}

/// Pictures drawn and skipped since start, for the bridge's stats. The plugins that draw
/// them are built without the stats (they know nothing of the pipeline), so the counts live
/// here and `run` copies them into each stats message.
#[derive(Debug, Default)]
pub struct Counts {
    pub rendered: AtomicU64,
    pub malformed: AtomicU64,
    pub inconsistent: AtomicU64,
    pub empty: AtomicU64,
    pub failed: AtomicU64,
}

static COUNTS: Counts = Counts {
    rendered: AtomicU64::new(0),
    malformed: AtomicU64::new(0),
    inconsistent: AtomicU64::new(0),
    empty: AtomicU64::new(0),
    failed: AtomicU64::new(0),
};

pub fn counts() -> &'static Counts {
    &COUNTS
}

/// What the title line says, from the alarm's fields.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Heading {
    pub host: String,
    pub source: String,
    pub severity: Option<u64>,
    pub state: String,
    /// The score threshold, drawn as a line on the score panel.
    pub threshold: Option<f64>,
}

impl Heading {
    pub(crate) fn from_fields(fields: &Value) -> Self {
        let text = |k: &str| {
            fields
                .get(k)
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        Heading {
            host: text("host"),
            source: text("source"),
            severity: fields.get("severity").and_then(Value::as_u64),
            state: text("state"),
            threshold: fields
                .get("threshold")
                .and_then(Value::as_f64)
                .filter(|t| t.is_finite()),
        }
    }
}

/// The alarm's window, if it has one (`None`: nothing to draw and nothing to count).
pub fn window(fields: &Value) -> Option<Result<Window, Skip>> {
    let w = fields.get("window").filter(|w| !w.is_null())?;
    Some(Window::deserialize(w).map_err(|e| Skip::Malformed(e.to_string())))
}

/// The picture of a notification's alarm: `None` when it has no window (resolved alarms,
/// rule alarms, anything not from the agent); otherwise the picture, or why there is none.
/// Not counted: [`attach`] counts.
pub fn from_fields(fields: &Value) -> Option<Result<Picture, Skip>> {
    let window = match window(fields)? {
        Ok(w) => w,
        Err(skip) => return Some(Err(skip)),
    };
    Some(render::render(&window, &Heading::from_fields(fields)))
}

/// The picture a plugin sends with a notification, counted as rendered or skipped (and the
/// skip logged, at most once a minute): `None` when the alarm has no window or it cannot
/// be drawn.
pub fn attach(target: &str, fields: &Value) -> Option<Picture> {
    static SKIP_LOG: std::sync::OnceLock<RateLimited> = std::sync::OnceLock::new();
    match from_fields(fields)? {
        Ok(p) => {
            COUNTS.rendered.fetch_add(1, Ordering::Relaxed);
            Some(p)
        }
        Err(skip) => {
            let counter = match skip {
                Skip::Malformed(_) => &COUNTS.malformed,
                Skip::Inconsistent => &COUNTS.inconsistent,
                Skip::Empty => &COUNTS.empty,
                Skip::Failed(_) => &COUNTS.failed,
            };
            counter.fetch_add(1, Ordering::Relaxed);
            SKIP_LOG
                .get_or_init(|| RateLimited::new(Duration::from_secs(60)))
                .hit(|suppressed| {
                    tracing::warn!(target_name = target, reason = skip.reason(), error = %skip, suppressed,
                        "alarm picture skipped; sending the alarm without it")
                });
            None
        }
    }
}

/// The text sparkline of a notification's alarm, if it has a window that can be drawn.
pub fn sparkline_of(fields: &Value) -> Option<String> {
    let window = window(fields)?.ok()?;
    let threshold = fields.get("threshold").and_then(Value::as_f64);
    sparkline(&window, threshold)
}

#[cfg(test)]
pub(crate) mod tests;

/// `lookout-bridge picture ALARM.json -o OUT.png`: the picture the bridge would send with
/// this alarm, so users can see what their pager will show. Returns the sparkline.
///
/// With `chat`, the picture in a chat bubble with its caption (`chat`).
pub fn write_file(
    alarm: &std::path::Path,
    out: &std::path::Path,
    chat: bool,
) -> Result<Option<String>, crate::Error> {
    let bad = |message: String| crate::Error::Picture {
        path: alarm.to_owned(),
        message,
    };
    let io = |path: &std::path::Path| {
        let path = path.to_owned();
        move |source| crate::Error::Io { path, source }
    };
    let text = if alarm.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin()).map_err(io(alarm))?
    } else {
        std::fs::read_to_string(alarm).map_err(io(alarm))?
    };
    let fields: Value = serde_json::from_str(&text).map_err(|e| bad(format!("not JSON: {e}")))?;
    let drawn = if chat {
        chat::preview(&fields)
    } else {
        from_fields(&fields)
    };
    let picture = drawn
        .ok_or_else(|| {
            bad(
                "no \"window\": only firing alarms of learned models carry one (docs/topics.md)"
                    .into(),
            )
        })?
        .map_err(|skip| bad(skip.to_string()))?;
    std::fs::write(out, &picture.png).map_err(io(out))?;
    Ok(sparkline_of(&fields))
}
