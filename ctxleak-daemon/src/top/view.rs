//! How `ctxleak top` draws its [`App`] state into a ratatui [`Buffer`]: header, table, detail
//! pane and footer. Nothing here touches the terminal, so it is tested with ratatui's
//! `TestBackend`.
//!
//! One table holds every kind of finding beside the goroutine groups: leak suspects (`!1`, a
//! growing group), stuck goroutines (`!S`, a group that does not grow but never runs),
//! unreleased contexts (`!U`, by creation site) and goroutines outliving their context (`!O`).
//! Enter shows the selected row's details and stack (for outliving goroutines, the stack of
//! their group in the census).

use std::time::Duration;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Cell, Paragraph, Row, StatefulWidget, Table, Widget as _};
use unicode_width::UnicodeWidthStr as _;

use super::format::*;
use super::state::{App, Connection, Item, SortKey};
use crate::api::{Group, OutlivingGoroutines, SourceLocation, UnreleasedContexts};

impl App {
    /// Draws the whole view on a frame.
    pub fn draw(&mut self, frame: &mut Frame) {
        let area = frame.area();
        self.render(area, frame.buffer_mut());
    }

    /// Draws the whole view into `area` of `buf`.
    pub fn render(&mut self, area: Rect, buf: &mut Buffer) {
        let [header, body, footer] = Layout::vertical([
            Constraint::Length(2),
            Constraint::Fill(1),
            Constraint::Length(1),
        ])
        .areas(area);
        self.render_header(header, buf);
        self.render_footer(footer, buf);
        let Some(data) = self.data.as_ref() else {
            let lines = match &self.connection {
                Connection::Disconnected { error } => self.unreachable_lines(error),
                Connection::BadAnswer { error } => vec![
                    format!("ctxleak at {} answered without a census:", self.source),
                    format!("  {error}"),
                    format!("Retrying every {}.", human_duration(self.interval)),
                ],
                _ => vec![format!("Connecting to {} …", self.source)],
            };
            render_message(&lines, body, buf);
            return;
        };
        if self.order.is_empty() {
            let lines = vec![
                format!(
                    "No goroutine groups in this census ({} user, {} system goroutines).",
                    data.goroutines_user, data.goroutines_system
                ),
                format!(
                    "Groups appear here as ctxleak sees goroutines blocked; refreshing every {}.",
                    human_duration(self.interval)
                ),
            ];
            render_message(&lines, body, buf);
            return;
        }
        let (table_area, detail_area) = if self.detail && body.height >= 8 {
            let [table, detail] =
                Layout::vertical([Constraint::Percentage(40), Constraint::Fill(1)]).areas(body);
            (table, Some(detail))
        } else {
            (body, None)
        };
        self.render_table(table_area, buf);
        if let Some(detail_area) = detail_area {
            self.render_detail(detail_area, buf);
        }
    }

    fn unreachable_lines(&self, error: &str) -> Vec<String> {
        vec![
            format!("Cannot reach ctxleak at {}: {error}.", self.source),
            format!("Retrying every {}.", human_duration(self.interval)),
            "Is `ctxleak attach --pid PID` running with this --web.listen-address?".to_owned(),
        ]
    }

    fn styled(&self, style: Style) -> Style {
        if self.color {
            style
        } else {
            Style::new().add_modifier(style.add_modifier)
        }
    }

    fn render_header(&self, area: Rect, buf: &mut Buffer) {
        if area.height == 0 {
            return;
        }
        let width = area.width as usize;
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let (state, state_style) = match &self.connection {
            Connection::Connecting => ("connecting…".to_owned(), Style::new().fg(Color::Yellow)),
            Connection::Connected => ("● connected".to_owned(), Style::new().fg(Color::Green)),
            Connection::Disconnected { error } => (
                format!(
                    "✖ disconnected ({error}), retrying every {}",
                    human_duration(self.interval)
                ),
                Style::new().fg(Color::Red).add_modifier(Modifier::BOLD),
            ),
            Connection::BadAnswer { error } => (
                format!(
                    "✖ {error}, retrying every {}",
                    human_duration(self.interval)
                ),
                Style::new().fg(Color::Yellow).add_modifier(Modifier::BOLD),
            ),
        };
        let mut left = vec![Span::styled("ctxleak top", bold)];
        if let Some(data) = &self.data {
            left.push(Span::raw(format!(" │ PID {} ", data.pid)));
            left.push(Span::styled(data.exe.clone(), bold));
            left.push(Span::raw(format!(" │ {}", data.go_version)));
        }
        let state = truncate(&state, width);
        let state_width = state.width();
        let left = fit_spans(left, width.saturating_sub(state_width + 1));
        let gap = width.saturating_sub(left.width() + state_width);
        let mut first = left.spans;
        first.push(Span::raw(" ".repeat(gap)));
        first.push(Span::styled(state, self.styled(state_style)));
        Line::from(first).render(Rect { height: 1, ..area }, buf);

        if area.height < 2 {
            return;
        }
        let second = match &self.data {
            None => vec![Span::raw(format!("source {}", self.source))],
            Some(data) => {
                let suspects = data.groups.iter().filter(|g| g.suspect).count();
                let stuck = data.groups.iter().filter(|g| g.stuck > 0).count();
                let contexts = self.unreleased().len() + self.outliving().len();
                let alarm = self.styled(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD));
                let counted = |text: String, n: usize| {
                    Span::styled(text, if n > 0 { alarm } else { Style::new() })
                };
                let stale = match self.connection {
                    Connection::Disconnected { .. } | Connection::BadAnswer { .. } => " (stale)",
                    _ => "",
                };
                let mut spans = vec![
                    Span::raw("goroutines: "),
                    Span::styled(data.goroutines_user.to_string(), bold),
                    Span::raw(format!(" user, {} system │ ", data.goroutines_system)),
                    Span::raw(format!(
                        "{} group{}, ",
                        data.groups.len(),
                        plural(data.groups.len())
                    )),
                    counted(format!("{suspects} suspect{}", plural(suspects)), suspects),
                ];
                // The other findings only when there are some: the line is narrow.
                if stuck > 0 {
                    spans.push(Span::raw(", "));
                    spans.push(counted(format!("{stuck} stuck"), stuck));
                }
                if contexts > 0 {
                    spans.push(Span::raw(", "));
                    spans.push(counted(
                        format!("{contexts} context finding{}", plural(contexts)),
                        contexts,
                    ));
                }
                spans.extend([
                    Span::raw(format!(
                        " │ census {}{stale}",
                        utc_time_of_day(data.taken_at_unix_ms)
                    )),
                    Span::raw(probes_text(&data.probes)),
                ]);
                spans
            }
        };
        fit_spans(second, width).render(
            Rect {
                y: area.y + 1,
                height: 1,
                ..area
            },
            buf,
        );
    }

    fn render_footer(&self, area: Rect, buf: &mut Buffer) {
        if area.height == 0 {
            return;
        }
        let key = Style::new().add_modifier(Modifier::BOLD);
        let spans = vec![
            Span::styled("↑↓/jk", key),
            Span::raw(" select  "),
            Span::styled("Enter", key),
            Span::raw(if self.detail {
                " hide details  "
            } else {
                " details  "
            }),
            Span::styled("s", key),
            Span::raw(format!(" sort: {}  ", self.sort.name())),
            Span::styled("q", key),
            Span::raw(" quit"),
        ];
        let width = area.width as usize;
        let left = fit_spans(spans, width);
        let right = format!("{} every {}", self.source, human_duration(self.interval));
        let mut spans = left.spans;
        let used: usize = spans.iter().map(Span::width).sum();
        if used + 2 + right.width() <= width {
            spans.push(Span::raw(" ".repeat(width - used - right.width())));
            spans.push(Span::styled(
                right,
                self.styled(Style::new().fg(Color::DarkGray)),
            ));
        }
        Line::from(spans).render(area, buf);
    }

    fn render_table(&mut self, area: Rect, buf: &mut Buffer) {
        let Some(data) = self.data.as_ref() else {
            return;
        };
        let windows = data
            .groups
            .first()
            .map(|g| (g.window_short_s, g.window_long_s));
        let growth_title = match windows {
            Some((short, long)) => format!(
                "GROW {}/{}",
                human_duration(Duration::from_secs(short)),
                human_duration(Duration::from_secs(long))
            ),
            None => "GROWTH".to_owned(),
        };
        let mark = |title: &str, key: SortKey| {
            if self.sort == key {
                format!("{title}▼")
            } else {
                title.to_owned()
            }
        };
        let titles = [
            mark("#", SortKey::Rank),
            mark("COUNT", SortKey::Count),
            mark(&growth_title, SortKey::Growth),
            mark("AGE", SortKey::Age),
            "STATE".to_owned(),
            "BLOCKED AT".to_owned(),
            "CREATED BY".to_owned(),
        ];
        let growth_width = (titles[2].width() as u16).max(11);
        let columns = Layout::horizontal([
            Constraint::Length(3),
            Constraint::Length(6),
            Constraint::Length(growth_width),
            Constraint::Length(5),
            Constraint::Length(14),
            Constraint::Fill(3),
            Constraint::Fill(2),
        ])
        .spacing(1)
        .split(Rect {
            x: 0,
            y: 0,
            width: area.width,
            height: 1,
        });
        let widths: Vec<usize> = columns.iter().map(|c| c.width as usize).collect();
        let right = [false, true, true, true, false, false, false];
        let cell = |text: &str, column: usize| {
            let text = truncate(text, widths[column]);
            if right[column] {
                Cell::from(Line::from(text).right_aligned())
            } else {
                Cell::from(text)
            }
        };
        let header = Row::new(titles.iter().enumerate().map(|(i, t)| cell(t, i)))
            .style(Style::new().add_modifier(Modifier::BOLD | Modifier::UNDERLINED));
        let suspect_style = self.styled(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD));
        let finding_style =
            self.styled(Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD));
        let rows: Vec<Row> = self
            .order
            .iter()
            .map(|&item| {
                let (texts, style) = match item {
                    Item::Group(i) => {
                        let group = &data.groups[i];
                        let texts = [
                            if group.suspect {
                                format!("!{}", group.rank)
                            } else if group.stuck > 0 {
                                "!S".to_owned()
                            } else {
                                String::new()
                            },
                            compact_count(group.count),
                            format!(
                                "{}/{}",
                                signed_compact(group.growth_short),
                                signed_compact(group.growth_long)
                            ),
                            human_age(group.oldest_age_s),
                            state_text(group).to_owned(),
                            location_cell(group.blocked_at.as_ref(), widths[5]),
                            location_cell(group.created_by.as_ref(), widths[6]),
                        ];
                        let style = if group.suspect {
                            Some(suspect_style)
                        } else {
                            (group.stuck > 0).then_some(finding_style)
                        };
                        (texts, style)
                    }
                    Item::Unreleased(i) => {
                        let u = &self.unreleased()[i];
                        let texts = [
                            "!U".to_owned(),
                            compact_count(u.count),
                            format!("{}/·", signed_compact(u.growth)),
                            human_age(u.oldest_age_s),
                            "unreleased ctx".to_owned(),
                            "-".to_owned(),
                            location_cell(u.site.as_ref(), widths[6]),
                        ];
                        (texts, Some(finding_style))
                    }
                    Item::Outliving(i) => {
                        let o = &self.outliving()[i];
                        let blocked_at = self.group_of(o).and_then(|g| g.blocked_at.as_ref());
                        let texts = [
                            "!O".to_owned(),
                            compact_count(o.count),
                            format!("{}/·", signed_compact(o.growth)),
                            human_age(o.oldest_cancelled_s),
                            "outlives ctx".to_owned(),
                            location_cell(blocked_at, widths[5]),
                            location_cell(o.goroutine_site.as_ref(), widths[6]),
                        ];
                        (texts, Some(finding_style))
                    }
                };
                let row = Row::new(texts.iter().enumerate().map(|(i, t)| cell(t, i)));
                match style {
                    Some(style) => row.style(style),
                    None => row,
                }
            })
            .collect();
        self.page = area.height.saturating_sub(1) as usize;
        self.table.select(if rows.is_empty() {
            None
        } else {
            Some(self.selected)
        });
        let table = Table::new(rows, widths.iter().map(|&w| Constraint::Length(w as u16)))
            .header(header)
            .column_spacing(1)
            .row_highlight_style(Style::new().add_modifier(Modifier::REVERSED));
        StatefulWidget::render(table, area, buf, &mut self.table);
    }

    fn render_detail(&self, area: Rect, buf: &mut Buffer) {
        let Some(item) = self.selected_item() else {
            return;
        };
        let (title, lines) = match item {
            Item::Group(_) => {
                let Some(group) = self.selected_group() else {
                    return;
                };
                (format!(" group {} ", group.id), None)
            }
            Item::Unreleased(i) => (
                " unreleased contexts ".to_owned(),
                self.unreleased()
                    .get(i)
                    .map(|u| self.unreleased_lines(u, area)),
            ),
            Item::Outliving(i) => (
                " goroutines outliving their context ".to_owned(),
                self.outliving()
                    .get(i)
                    .map(|o| self.outliving_lines(o, area)),
            ),
        };
        let block = Block::bordered().title(Line::from(truncate(
            &title,
            area.width.saturating_sub(2) as usize,
        )));
        let inner = block.inner(area);
        block.render(area, buf);
        let lines = match (lines, self.selected_group()) {
            (Some(lines), _) => lines,
            (None, Some(group)) => self.group_lines(group, inner),
            (None, None) => return,
        };
        Paragraph::new(lines).render(inner, buf);
    }

    /// The detail of an unreleased-contexts row: no stack, the creation line is the finding.
    fn unreleased_lines(&self, u: &UnreleasedContexts, area: Rect) -> Vec<Line<'static>> {
        let width = area.width.saturating_sub(2) as usize;
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut lines = vec![
            Line::from(truncate(
                &format!(
                    "{} context{} never cancelled ({} orphaned: their creator has exited) · oldest {} · {} in {}",
                    u.count,
                    plural(u.count as usize),
                    u.orphaned,
                    human_age(u.oldest_age_s),
                    signed(u.growth),
                    human_duration(Duration::from_secs(u.window_s)),
                ),
                width,
            )),
            Line::styled(
                truncate(
                    "UNRELEASED: each holds its parent's children map entry until cancel() is called",
                    width,
                ),
                self.styled(Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)),
            ),
        ];
        lines.extend(location_lines(
            Span::styled("created at: ", bold),
            u.site.as_ref(),
            width,
        ));
        // The goroutines parked on their Done() channels (handed the contexts, they wait for
        // a cancellation that has not come).
        for listeners in &u.listeners {
            lines.push(Line::from(truncate(
                &crate::report::listeners_summary(listeners),
                width,
            )));
            lines.extend(location_lines(
                Span::styled("waiting at: ", bold),
                listeners.blocked_at.as_ref(),
                width,
            ));
        }
        lines
    }

    /// The detail of an outliving row, with the stack of the goroutines' group in the census.
    fn outliving_lines(&self, o: &OutlivingGoroutines, area: Rect) -> Vec<Line<'static>> {
        let inner = Block::bordered().inner(area);
        let width = inner.width as usize;
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut lines = vec![
            Line::from(truncate(
                &format!(
                    "{} goroutine{} still {} · context cancelled {} ago · {} in {}",
                    o.count,
                    plural(o.count as usize),
                    if o.wait_reason.is_empty() {
                        &o.state
                    } else {
                        &o.wait_reason
                    },
                    human_age(o.oldest_cancelled_s),
                    signed(o.growth),
                    human_duration(Duration::from_secs(o.window_s)),
                ),
                width,
            )),
            Line::styled(
                truncate(
                    "OUTLIVING: started under a context that was cancelled, and not watching ctx.Done()",
                    width,
                ),
                self.styled(Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)),
            ),
        ];
        lines.extend(location_lines(
            Span::styled("started at: ", bold),
            o.goroutine_site.as_ref(),
            width,
        ));
        lines.extend(location_lines(
            Span::styled("context made at: ", bold),
            o.context_site.as_ref(),
            width,
        ));
        match self.group_of(o) {
            Some(group) => {
                let room = (inner.height as usize).saturating_sub(lines.len());
                lines.extend(stack_lines(group, room, width));
            }
            None => lines.push(Line::from(truncate(
                "stack: their group is not in this census",
                width,
            ))),
        }
        lines
    }

    /// The detail of a group: its figures, its verdicts and its stack.
    fn group_lines(&self, group: &Group, inner: Rect) -> Vec<Line<'static>> {
        let width = inner.width as usize;
        let bold = Style::new().add_modifier(Modifier::BOLD);
        let mut lines: Vec<Line> = Vec::new();
        let state = if group.wait_reason.is_empty() {
            group.state.clone()
        } else {
            format!("{}: {}", group.state, group.wait_reason)
        };
        lines.push(Line::from(truncate(
            &format!(
                "{} goroutine{} · {state} · oldest {} · growth {} in {}, {} in {}",
                group.count,
                plural(group.count as usize),
                human_age(group.oldest_age_s),
                signed(group.growth_short),
                human_duration(Duration::from_secs(group.window_short_s)),
                signed(group.growth_long),
                human_duration(Duration::from_secs(group.window_long_s)),
            ),
            width,
        )));
        if group.suspect {
            lines.push(Line::styled(
                truncate(
                    &format!(
                        "LEAK SUSPECT #{}: blocked, still growing by enough to matter, oldest member past the threshold",
                        group.rank
                    ),
                    width,
                ),
                self.styled(Style::new().fg(Color::Red).add_modifier(Modifier::BOLD)),
            ));
        }
        if group.stuck > 0 {
            lines.push(Line::styled(
                truncate(
                    &format!(
                        "STUCK: {} goroutine{} not run for at least {} ({}) (a deadlock, or a send nobody receives)",
                        group.stuck,
                        plural(group.stuck as usize),
                        human_age(group.stuck_for_s),
                        group.stuck_since.label(),
                    ),
                    width,
                ),
                self.styled(Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)),
            ));
            if let Some(evidence) = &group.channel {
                lines.push(Line::raw(truncate(
                    &format!("channel: {}", evidence.summary()),
                    width,
                )));
            }
        }
        lines.extend(location_lines(
            Span::styled("created by: ", bold),
            group.created_by.as_ref(),
            width,
        ));
        let room = (inner.height as usize).saturating_sub(lines.len());
        lines.extend(stack_lines(group, room, width));
        lines
    }
}

/// A group's stack in at most `room` lines of `width`: a title, then as many whole frames as
/// fit (innermost first, `→` where they are blocked), then how many more there are.
fn stack_lines(group: &Group, room: usize, width: usize) -> Vec<Line<'static>> {
    let bold = Style::new().add_modifier(Modifier::BOLD);
    let mut lines = Vec::new();
    lines.push(Line::styled(
        truncate(
            &format!(
                "stack ({} frames, innermost first; → where they are blocked):",
                group.stack.len()
            ),
            width,
        ),
        bold,
    ));
    let room = room.saturating_sub(lines.len());
    let blocked = group
        .blocked_at
        .as_ref()
        .and_then(|at| group.stack.iter().position(|frame| frame == at));
    let frames: Vec<Vec<Line>> = group
        .stack
        .iter()
        .enumerate()
        .map(|(i, frame)| {
            let mark = if Some(i) == blocked {
                Span::styled("→ ", bold)
            } else {
                Span::raw("  ")
            };
            location_lines(mark, Some(frame), width)
        })
        .collect();
    // As many whole frames as fit, keeping a line for "… more" if some do not.
    let (mut used, mut shown) = (0, 0);
    for (i, frame) in frames.iter().enumerate() {
        let more = usize::from(i + 1 < frames.len());
        if used + frame.len() + more > room {
            break;
        }
        used += frame.len();
        shown += 1;
    }
    let hidden = frames.len() - shown;
    lines.extend(frames.into_iter().take(shown).flatten());
    if hidden > 0 && used < room {
        lines.push(Line::from(truncate(
            &format!("  … {hidden} more frame{}", plural(hidden)),
            width,
        )));
    }
    lines
}

/// `label` then `function (file:line)` on one line when it fits in `width`; otherwise on two,
/// like a Go traceback: the function, then the file and line indented under it (the file cut at
/// its start if need be, so the line number stays).
fn location_lines(
    label: Span<'static>,
    location: Option<&SourceLocation>,
    width: usize,
) -> Vec<Line<'static>> {
    let Some(location) = location else {
        return vec![fit_spans(vec![label, Span::raw("unknown")], width)];
    };
    let one = location.to_string();
    if label.width() + one.width() <= width {
        return vec![Line::from(vec![label, Span::raw(one)])];
    }
    let indent = (label.width() + 2).min(width / 3);
    let file_line = format!("{}:{}", location.file, location.line);
    vec![
        fit_spans(vec![label, Span::raw(location.function.clone())], width),
        Line::from(format!(
            "{}{}",
            " ".repeat(indent),
            truncate_left(&file_line, width - indent)
        )),
    ]
}

fn render_message(lines: &[String], area: Rect, buf: &mut Buffer) {
    let width = area.width.saturating_sub(2) as usize;
    let lines: Vec<Line> = std::iter::once(Line::default())
        .chain(
            lines
                .iter()
                .map(|l| Line::from(format!(" {}", truncate(l, width)))),
        )
        .collect();
    Paragraph::new(lines).render(area, buf);
}
