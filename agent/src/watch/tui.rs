//! The live view of `watch` (ratatui): a header line, the host table, the firing-alarm
//! table and a footer with the keys and counters. Draws from [`Fleet`]'s views only; the
//! terminal itself (raw mode, alternate screen, restoring it) is set up in `mod.rs`.

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::Frame;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, Table};

use super::fleet::{
    AlarmView, Counters, Fleet, HostView, Status, format_age, format_score, format_summary,
};
use super::live::Conn;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Pane {
    #[default]
    Hosts,
    Alarms,
}

/// What the keys change: which pane scrolls, and where each pane starts.
#[derive(Clone, Debug, Default)]
pub struct View {
    pub focus: Pane,
    pub host_offset: usize,
    pub alarm_offset: usize,
    /// Rows the focused pane showed last time, for PgUp/PgDn.
    page: usize,
}

/// What a key asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
}

impl View {
    pub fn on_key(&mut self, key: KeyEvent) -> Flow {
        if key.kind == KeyEventKind::Release {
            return Flow::Continue;
        }
        let page = self.page.max(1);
        let offset = match self.focus {
            Pane::Hosts => &mut self.host_offset,
            Pane::Alarms => &mut self.alarm_offset,
        };
        match key.code {
            KeyCode::Char('q') | KeyCode::Esc => return Flow::Quit,
            KeyCode::Char('c') if key.modifiers.contains(KeyModifiers::CONTROL) => {
                return Flow::Quit;
            }
            KeyCode::Up | KeyCode::Char('k') => *offset = offset.saturating_sub(1),
            KeyCode::Down | KeyCode::Char('j') => *offset = offset.saturating_add(1),
            KeyCode::PageUp => *offset = offset.saturating_sub(page),
            KeyCode::PageDown | KeyCode::Char(' ') => *offset = offset.saturating_add(page),
            KeyCode::Home | KeyCode::Char('g') => *offset = 0,
            // Clamped to the last page when drawn.
            KeyCode::End | KeyCode::Char('G') => *offset = usize::MAX,
            KeyCode::Tab | KeyCode::BackTab => {
                self.focus = match self.focus {
                    Pane::Hosts => Pane::Alarms,
                    Pane::Alarms => Pane::Hosts,
                }
            }
            _ => {}
        }
        Flow::Continue
    }
}

const HEADER: Style = Style::new().add_modifier(Modifier::BOLD);

/// Draws one frame. `source` names the broker.
pub fn draw(
    frame: &mut Frame,
    fleet: &Fleet,
    conn: &Conn,
    source: &str,
    view: &mut View,
    now: i64,
) {
    let hosts = fleet.hosts(now);
    let alarms = fleet.firing(now);
    let [top, hosts_area, alarms_area, bottom] = layout(frame.area(), hosts.len());
    let head = header_line(fleet, conn, source, &hosts, alarms.len());
    frame.render_widget(Paragraph::new(head), top);
    draw_hosts(frame, hosts_area, &hosts, view);
    draw_alarms(frame, alarms_area, &alarms, view);
    view.page = rows_inside(match view.focus {
        Pane::Hosts => hosts_area,
        Pane::Alarms => alarms_area,
    });
    frame.render_widget(footer(fleet.counters()), bottom);
}

/// Header line, host pane, alarm pane and footer. The host pane takes what its rows need,
/// at most 60 % of the screen (and at least room for one row); the alarm pane the rest.
fn layout(area: Rect, host_count: usize) -> [Rect; 4] {
    let panes = area.height.saturating_sub(2);
    let wanted = u16::try_from(host_count.max(1) + 3).unwrap_or(u16::MAX);
    let hosts_h = wanted.min((panes * 3 / 5).max(4));
    Layout::vertical([
        Constraint::Length(1),
        Constraint::Length(hosts_h),
        Constraint::Fill(1),
        Constraint::Length(1),
    ])
    .areas(area)
}

/// What is watched, the connection, and the fleet in numbers.
fn header_line(
    fleet: &Fleet,
    conn: &Conn,
    source: &str,
    hosts: &[HostView<'_>],
    firing: usize,
) -> Line<'static> {
    let online = hosts.iter().filter(|h| h.status == Status::Online).count();
    let offline = hosts.iter().filter(|h| h.status == Status::Offline).count();
    let mut head = vec![
        Span::styled("lookout watch ", HEADER),
        Span::raw(format!("{source} prefix {}", fleet.prefix())),
    ];
    if let Some(f) = fleet.filter() {
        head.push(Span::raw(format!(" filter {}", f.as_str())));
    }
    head.push(Span::raw("  "));
    head.push(match conn {
        Conn::Connecting => Span::styled("connecting", Style::new().fg(Color::Yellow)),
        Conn::Connected => Span::styled("connected", Style::new().fg(Color::Green)),
        Conn::Lost(why) => Span::styled(
            format!("disconnected ({why}), retrying"),
            Style::new().fg(Color::Red),
        ),
    });
    head.push(Span::raw(format!(
        "  {} hosts, {online} online, {offline} offline, {firing} firing",
        hosts.len(),
    )));
    Line::from(head)
}

fn draw_hosts(frame: &mut Frame, area: Rect, hosts: &[HostView<'_>], view: &mut View) {
    let shown = page(hosts, &mut view.host_offset, area);
    let name_w = column_width(shown.iter().map(|h| h.name), "HOST", 32);
    let table = pane_table(
        shown.iter().map(host_row),
        [
            Constraint::Length(name_w),
            Constraint::Length(7),
            Constraint::Length(5),
            Constraint::Length(6),
            Constraint::Fill(1),
        ],
        ["HOST", "STATUS", "SEEN", "ALARMS", "SCORES"],
    )
    .block(pane_block(
        "Hosts",
        view.host_offset,
        shown.len(),
        hosts.len(),
        view.focus == Pane::Hosts,
    ));
    frame.render_widget(table, area);
}

fn host_row<'a>(h: &HostView<'a>) -> Row<'a> {
    let status = match h.status {
        Status::Online => Color::Green,
        Status::Offline => Color::Red,
        Status::Unknown => Color::Yellow,
    };
    let mut scores = Vec::with_capacity(h.scores.len() * 2);
    for (model, s) in h.scores {
        let v = format_score(s);
        if s.anomalous {
            let top = s
                .top
                .as_deref()
                .map_or(String::new(), |d| format!(" ({d})"));
            scores.push(Span::styled(
                format!("{model} {v}!{top}"),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ));
        } else {
            scores.push(Span::raw(format!("{model} {v}")));
        }
        scores.push(Span::raw("  "));
    }
    scores.pop();
    Row::new(vec![
        Cell::from(h.name),
        Cell::from(h.status.as_str()).style(Style::new().fg(status)),
        Cell::from(h.seen_ago.map_or("-".into(), format_age)),
        Cell::from(h.firing.to_string()).style(if h.firing > 0 {
            Style::new().fg(Color::Red)
        } else {
            Style::new()
        }),
        Cell::from(Line::from(scores)),
    ])
}

fn draw_alarms(frame: &mut Frame, area: Rect, alarms: &[AlarmView<'_>], view: &mut View) {
    let shown = page(alarms, &mut view.alarm_offset, area);
    let host_w = column_width(shown.iter().map(|a| a.host), "HOST", 32);
    let source_w = column_width(shown.iter().map(|a| a.source), "SOURCE", 32);
    let table = pane_table(
        shown.iter().map(alarm_row),
        [
            Constraint::Length(host_w),
            Constraint::Length(source_w),
            Constraint::Length(3),
            Constraint::Length(4),
            Constraint::Fill(1),
        ],
        ["HOST", "SOURCE", "SEV", "AGE", "SUMMARY"],
    )
    .block(pane_block(
        "Firing alarms",
        view.alarm_offset,
        shown.len(),
        alarms.len(),
        view.focus == Pane::Alarms,
    ));
    frame.render_widget(table, area);
}

fn alarm_row<'a>(a: &AlarmView<'a>) -> Row<'a> {
    let sev = if a.severity >= 3 {
        Color::Red
    } else {
        Color::Yellow
    };
    Row::new(vec![
        Cell::from(a.host),
        Cell::from(a.source),
        Cell::from(a.severity.to_string()).style(Style::new().fg(sev)),
        Cell::from(format_age(a.age)),
        Cell::from(format_summary(a.summary, a.explain)),
    ])
}

/// The keys, and what became of the messages so far.
fn footer(c: Counters) -> Paragraph<'static> {
    let foot = format!(
        "q quit  ↑↓ PgUp PgDn Home End scroll  Tab pane | messages {} bad {} filtered {} dropped: hosts {} models {} alarms {}",
        c.received, c.bad, c.filtered, c.hosts_dropped, c.models_dropped, c.alarms_dropped
    );
    Paragraph::new(foot).style(Style::new().add_modifier(Modifier::DIM))
}

/// The items a pane shows in `area` from `offset`, which is first clamped so that the
/// last page is full: End sets it past the end, and a pane that grew taller shows more.
fn page<'a, T>(items: &'a [T], offset: &mut usize, area: Rect) -> &'a [T] {
    let visible = rows_inside(area);
    *offset = (*offset).min(items.len().saturating_sub(visible));
    &items[*offset..items.len().min(*offset + visible)]
}

/// Both panes' tables look alike: two spaces between columns, bold titles.
fn pane_table<'a>(
    rows: impl IntoIterator<Item = Row<'a>>,
    widths: [Constraint; 5],
    titles: [&'a str; 5],
) -> Table<'a> {
    Table::new(rows, widths)
        .column_spacing(2)
        .header(Row::new(titles).style(HEADER))
}

/// Table rows that fit in `area` inside its border and below the header.
fn rows_inside(area: Rect) -> usize {
    usize::from(area.height.saturating_sub(3))
}

fn column_width<'a>(names: impl Iterator<Item = &'a str>, title: &str, max: usize) -> u16 {
    let w = names
        .map(|n| n.chars().count())
        .chain([title.len()])
        .max()
        .unwrap_or(0)
        .min(max);
    u16::try_from(w).unwrap_or(u16::MAX)
}

fn pane_block(
    title: &str,
    offset: usize,
    shown: usize,
    total: usize,
    focused: bool,
) -> Block<'static> {
    let range = if shown == 0 || shown == total {
        format!(" {title} ({total}) ")
    } else {
        format!(" {title} ({}-{} of {total}) ", offset + 1, offset + shown)
    };
    let border = if focused {
        Style::new().fg(Color::Cyan)
    } else {
        Style::new()
    };
    Block::bordered().title(range).border_style(border)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::watch::fleet::Limits;
    use ratatui::Terminal;
    use ratatui::backend::TestBackend;

    fn key(code: KeyCode) -> KeyEvent {
        KeyEvent::new(code, KeyModifiers::NONE)
    }

    #[test]
    fn q_esc_and_ctrl_c_quit_and_arrows_scroll_the_focused_pane() {
        let mut v = View::default();
        assert_eq!(v.on_key(key(KeyCode::Char('q'))), Flow::Quit);
        assert_eq!(v.on_key(key(KeyCode::Esc)), Flow::Quit);
        let ctrl_c = KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL);
        assert_eq!(v.on_key(ctrl_c), Flow::Quit);
        assert_eq!(v.on_key(key(KeyCode::Char('c'))), Flow::Continue);
        v.on_key(key(KeyCode::Down));
        v.on_key(key(KeyCode::Down));
        v.on_key(key(KeyCode::Up));
        assert_eq!((v.host_offset, v.alarm_offset), (1, 0));
        v.on_key(key(KeyCode::Tab));
        v.on_key(key(KeyCode::Down));
        assert_eq!((v.host_offset, v.alarm_offset), (1, 1));
    }

    #[test]
    fn draws_hosts_and_alarms_and_clamps_scrolling() {
        let now = 1_795_457_400_000;
        let mut f = Fleet::new("lookout", None, Limits::default());
        for i in 1..=30 {
            f.apply(&format!("lookout/sim-{i}/status"), b"online", true, now);
        }
        let p = serde_json::json!({"ts": now, "host": "sim-1", "model": "cpu",
            "score": 2.5, "learning": false, "anomalous": true, "level": 2,
            "threshold": 1.75, "alarm": true, "labels": {},
            "dimensions": [{"name": "system", "share": 0.9, "value": 38.0}]});
        f.apply(
            "lookout/sim-1/scores/cpu",
            p.to_string().as_bytes(),
            false,
            now,
        );
        let p = serde_json::json!({"id": "sim-1:cpu:1", "host": "sim-1", "source": "cpu",
            "state": "firing", "severity": 3, "ts": now - 5000, "started_at": now - 5000,
            "score": 2.5, "threshold": 1.75, "summary": "cpu: anomaly score 2.50", "labels": {}});
        f.apply(
            "lookout/sim-1/alarms/cpu",
            p.to_string().as_bytes(),
            true,
            now,
        );

        let mut term = Terminal::new(TestBackend::new(100, 30)).unwrap();
        let mut view = View {
            host_offset: 1000,
            ..View::default()
        };
        term.draw(|fr| draw(fr, &f, &Conn::Connected, "mqtt://h:1883", &mut view, now))
            .unwrap();
        let text: String = term
            .backend()
            .buffer()
            .content()
            .chunks(100)
            .map(|row| row.iter().map(|c| c.symbol()).collect::<String>() + "\n")
            .collect();
        assert!(text.contains("connected"), "{text}");
        assert!(text.contains("30 hosts, 30 online"), "{text}");
        // Scrolled as far as it goes: the last host shows, the first does not.
        assert!(text.contains("sim-30"), "{text}");
        assert!(!text.contains("sim-1 online"), "{text}");
        assert!(view.host_offset < 30);
        assert!(text.contains("cpu: anomaly score 2.50"), "{text}");

        view.host_offset = 0;
        term.draw(|fr| draw(fr, &f, &Conn::Connected, "mqtt://h:1883", &mut view, now))
            .unwrap();
        let text: String = term
            .backend()
            .buffer()
            .content()
            .iter()
            .map(|c| c.symbol())
            .collect();
        assert!(text.contains("cpu 2.50! (system)"), "{text}");
    }

    #[test]
    fn a_pane_scrolled_too_far_shows_its_last_full_page() {
        let items: Vec<usize> = (0..10).collect();
        // Four rows inside the border and below the header.
        let area = Rect::new(0, 0, 20, 7);
        let mut offset = usize::MAX;
        assert_eq!(page(&items, &mut offset, area), [6, 7, 8, 9]);
        assert_eq!(offset, 6);
        let mut offset = 2;
        assert_eq!(page(&items, &mut offset, area), [2, 3, 4, 5]);
        let mut offset = 3;
        assert_eq!(page(&items[..2], &mut offset, area), [0, 1]);
        assert_eq!(offset, 0);
    }
}
