//! The picture as one line of text, for targets that cannot show an image: the score over
//! the window in [`WIDTH`] block characters, each the highest score of its ticks (so a
//! short spike is not averaged away), scaled from 0 to the larger of the highest score and
//! the threshold, so a line that never reaches `█` never crossed it.

use lookout_shared::payload::Window;

const BLOCKS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Characters in the line: fits a phone's notification.
pub const WIDTH: usize = 30;

/// `score ▁▁▁▁▂▁▁▇██ 4.10 (threshold 1.75, last 10m)`; `None` when the window is
/// inconsistent or has no finite score. Ticks without a score are a space.
pub fn sparkline(window: &Window, threshold: Option<f64>) -> Option<String> {
    if !window.is_consistent() {
        return None;
    }
    let scores: Vec<Option<f64>> = window
        .score
        .iter()
        .map(|s| s.filter(|v| v.is_finite() && *v >= 0.0))
        .collect();
    let top = scores.iter().flatten().fold(f64::NAN, |a, &b| a.max(b));
    if top.is_nan() {
        return None;
    }
    let threshold = threshold.filter(|t| t.is_finite() && *t > 0.0);
    let scale = top.max(threshold.unwrap_or(0.0));
    let n = scores.len();
    let width = WIDTH.min(n);
    let mut line = String::with_capacity(width * 3 + 48);
    line.push_str("score ");
    for b in 0..width {
        let bucket = &scores[b * n / width..((b + 1) * n / width).max(b * n / width + 1)];
        let high = bucket.iter().flatten().fold(f64::NAN, |a, &b| a.max(b));
        line.push(if high.is_nan() {
            ' '
        } else if scale <= 0.0 {
            BLOCKS[0]
        } else {
            BLOCKS[((high / scale * 7.0).round() as usize).min(7)]
        });
    }
    let last = scores.iter().rev().flatten().next().copied().unwrap_or(top);
    line.push_str(&format!(" {last:.2}"));
    let span = window.ts[n - 1].saturating_sub(window.ts[0]);
    let mut detail = Vec::new();
    if let Some(t) = threshold {
        detail.push(format!("threshold {t:.2}"));
    }
    if span > 0 {
        detail.push(format!("last {}", super::render::relative(span)));
    }
    if !detail.is_empty() {
        line.push_str(&format!(" ({})", detail.join(", ")));
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(score: Vec<Option<f64>>) -> Window {
        let n = score.len();
        Window {
            ts: (0..n as i64).map(|i| i * 1000).collect(),
            level: vec![0; n],
            score,
            series: vec![],
        }
    }

    #[test]
    fn a_jump_at_the_end_shows_as_full_blocks_at_the_end_of_a_thirty_character_line() {
        let mut s: Vec<Option<f64>> = vec![Some(0.2); 560];
        s.extend(vec![Some(4.0); 40]);
        let line = sparkline(&window(s), Some(1.75)).unwrap();
        let blocks: String = line.chars().skip(6).take(WIDTH).collect();
        assert_eq!(blocks.chars().count(), WIDTH);
        assert!(blocks.starts_with("▁▁▁▁▁▁▁▁▁▁"), "{line}");
        assert!(blocks.ends_with("██"), "{line}");
        assert!(!blocks[..blocks.len() - 6].contains('█'), "{line}");
        assert_eq!(
            &line[6 + blocks.len()..],
            " 4.00 (threshold 1.75, last 9m59s)"
        );
    }

    #[test]
    fn scores_below_the_threshold_never_reach_a_full_block() {
        let line = sparkline(&window(vec![Some(0.5), Some(1.0)]), Some(2.0)).unwrap();
        assert_eq!(line, "score ▃▅ 1.00 (threshold 2.00, last 1s)");
    }

    #[test]
    fn missing_and_hostile_scores_are_gaps_or_no_line_at_all() {
        let line = sparkline(
            &window(vec![None, Some(f64::NAN), Some(1.0), Some(f64::INFINITY)]),
            None,
        )
        .unwrap();
        assert_eq!(line, "score   █  1.00 (last 3s)");
        assert_eq!(sparkline(&window(vec![None, None]), Some(1.0)), None);
        let mut bad = window(vec![Some(1.0); 3]);
        bad.level.pop();
        assert_eq!(sparkline(&bad, Some(1.0)), None);
    }
}
