//! What `ctxleak top` shows: the state of the view (last census and findings, connection,
//! selection, sort) and how it is drawn into a ratatui [`Buffer`]. Nothing here touches the
//! terminal, so it is tested with ratatui's `TestBackend`.
//!
//! One table holds every kind of finding beside the goroutine groups: leak suspects (`!1`, a
//! growing group), stuck goroutines (`!S`, a group that does not grow but never runs),
//! unreleased contexts (`!U`, by creation site) and goroutines outliving their context (`!O`).
//! Enter shows the selected row's details and stack (for outliving goroutines, the stack of
//! their group in the census).

use std::time::Duration;

use ratatui::Frame;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout, Rect};
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{
    Block, Cell, Paragraph, Row, StatefulWidget, Table, TableState, Widget as _,
};
use unicode_width::{UnicodeWidthChar as _, UnicodeWidthStr as _};

use super::client::FetchError;
use crate::api::{
    Group, GroupsResponse, LeaksResponse, OutlivingGoroutines, SourceLocation, UnreleasedContexts,
};

/// One row of the table: a goroutine group of the census, or a context finding, by its index
/// in the census or the findings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Group(usize),
    Unreleased(usize),
    Outliving(usize),
}

/// How the table is ordered; `s` cycles through them in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Suspects first by rank, then groups with stuck goroutines, then context findings, then
    /// the other groups by count (the server's order).
    #[default]
    Rank,
    /// Largest groups first.
    Count,
    /// Fastest growing first (short window, then long).
    Growth,
    /// Oldest first.
    Age,
}

impl SortKey {
    pub const ALL: [SortKey; 4] = [SortKey::Rank, SortKey::Count, SortKey::Growth, SortKey::Age];

    pub fn next(self) -> Self {
        match self {
            SortKey::Rank => SortKey::Count,
            SortKey::Count => SortKey::Growth,
            SortKey::Growth => SortKey::Age,
            SortKey::Age => SortKey::Rank,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Rank => "rank",
            SortKey::Count => "count",
            SortKey::Growth => "growth",
            SortKey::Age => "age",
        }
    }
}

/// Whether the last poll of `ctxleak attach` worked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Connection {
    /// No answer yet.
    Connecting,
    Connected,
    /// The last poll reached nothing; the previous census (if any) is still shown.
    Disconnected {
        error: String,
    },
    /// The last poll was answered, but not with a census (an HTTP error, another shape of
    /// JSON); the previous census (if any) is still shown.
    BadAnswer {
        error: String,
    },
}

/// What a key press asks of the terminal loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Quit,
}

/// The view's whole state.
#[derive(Debug)]
pub struct App {
    source: String,
    interval: Duration,
    data: Option<GroupsResponse>,
    /// The context findings and stuck goroutines beside the census, when the server has them.
    leaks: Option<LeaksResponse>,
    connection: Connection,
    sort: SortKey,
    /// The rows, in display order.
    order: Vec<Item>,
    /// Position of the selection in `order`.
    selected: usize,
    /// The selected row's id ([`App::item_id`]), so the selection follows it across
    /// censuses and sorts.
    selected_id: Option<String>,
    detail: bool,
    color: bool,
    table: TableState,
    /// Table rows visible in the last render, for PageUp/PageDown.
    page: usize,
}

impl App {
    /// `source` is shown in the footer and in messages (the server's URL); `interval` is how
    /// often it is polled.
    pub fn new(source: impl Into<String>, interval: Duration) -> Self {
        Self {
            source: source.into(),
            interval,
            data: None,
            leaks: None,
            connection: Connection::Connecting,
            sort: SortKey::Rank,
            order: Vec::new(),
            selected: 0,
            selected_id: None,
            detail: false,
            color: true,
            table: TableState::default(),
            page: 10,
        }
    }

    /// Without colors (`NO_COLOR`): suspects are still marked and bold.
    pub fn with_color(mut self, color: bool) -> Self {
        self.color = color;
        self
    }

    /// Takes the outcome of one poll: a new census, or why there is none. A failed poll keeps
    /// the last census on screen.
    pub fn update(&mut self, poll: Result<GroupsResponse, FetchError>) {
        match poll {
            Ok(data) => {
                self.data = Some(data);
                self.connection = Connection::Connected;
                self.reorder();
            }
            Err(FetchError::Unreachable(error)) => {
                self.connection = Connection::Disconnected { error }
            }
            Err(FetchError::BadAnswer(error)) => self.connection = Connection::BadAnswer { error },
        }
    }

    /// Takes the findings fetched with the last census (None: the server had none to give).
    pub fn update_leaks(&mut self, leaks: Option<LeaksResponse>) {
        self.leaks = leaks;
        self.reorder();
    }

    pub fn connection(&self) -> &Connection {
        &self.connection
    }

    pub fn sort(&self) -> SortKey {
        self.sort
    }

    pub fn set_sort(&mut self, sort: SortKey) {
        self.sort = sort;
        self.reorder();
    }

    pub fn detail_shown(&self) -> bool {
        self.detail
    }

    /// The groups in display order.
    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        let groups = self.census_groups();
        self.order.iter().filter_map(move |item| match *item {
            Item::Group(i) => groups.get(i),
            _ => None,
        })
    }

    /// The rows in display order.
    pub fn items(&self) -> &[Item] {
        &self.order
    }

    pub fn selected_item(&self) -> Option<Item> {
        self.order.get(self.selected).copied()
    }

    pub fn selected_group(&self) -> Option<&Group> {
        match self.selected_item()? {
            Item::Group(i) => self.census_groups().get(i),
            _ => None,
        }
    }

    fn census_groups(&self) -> &[Group] {
        self.data.as_ref().map_or(&[], |d| &d.groups)
    }

    fn unreleased(&self) -> &[UnreleasedContexts] {
        self.leaks.as_ref().map_or(&[], |l| &l.unreleased)
    }

    fn outliving(&self) -> &[OutlivingGoroutines] {
        self.leaks.as_ref().map_or(&[], |l| &l.outliving)
    }

    /// A row's identity across censuses: the group's id, or the sites of a finding.
    fn item_id(&self, item: Item) -> Option<String> {
        let site = |site: &Option<SourceLocation>| {
            site.as_ref()
                .map_or_else(|| "?".to_owned(), ToString::to_string)
        };
        Some(match item {
            Item::Group(i) => self.census_groups().get(i)?.id.clone(),
            Item::Unreleased(i) => format!("unreleased {}", site(&self.unreleased().get(i)?.site)),
            Item::Outliving(i) => {
                let o = self.outliving().get(i)?;
                format!(
                    "outliving {} {} {}",
                    site(&o.goroutine_site),
                    site(&o.context_site),
                    o.wait_reason
                )
            }
        })
    }

    /// The census group the goroutines of an outliving finding are in: made at its `go` line,
    /// in its state and wait reason (the largest, if several are blocked at different lines).
    fn group_of(&self, outliving: &OutlivingGoroutines) -> Option<&Group> {
        self.census_groups()
            .iter()
            .filter(|g| {
                g.created_by == outliving.goroutine_site
                    && g.state == outliving.state
                    && g.wait_reason == outliving.wait_reason
            })
            .max_by_key(|g| g.count)
    }

    pub fn handle_key(&mut self, key: KeyEvent) -> Action {
        if key.kind == KeyEventKind::Release {
            return Action::Continue;
        }
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        match key.code {
            KeyCode::Char('c' | 'C') if ctrl => return Action::Quit,
            KeyCode::Char('q' | 'Q') | KeyCode::Esc => return Action::Quit,
            KeyCode::Up | KeyCode::Char('k') => self.select_by(-1),
            KeyCode::Down | KeyCode::Char('j') => self.select_by(1),
            KeyCode::PageUp => self.select_by(-(self.page.max(1) as isize)),
            KeyCode::PageDown => self.select_by(self.page.max(1) as isize),
            KeyCode::Home | KeyCode::Char('g') => self.select_at(0),
            KeyCode::End | KeyCode::Char('G') => self.select_at(usize::MAX),
            KeyCode::Enter => self.detail = !self.detail,
            KeyCode::Char('s') => self.set_sort(self.sort.next()),
            _ => {}
        }
        Action::Continue
    }

    fn select_by(&mut self, delta: isize) {
        self.select_at(self.selected.saturating_add_signed(delta));
    }

    fn select_at(&mut self, position: usize) {
        self.selected = position.min(self.order.len().saturating_sub(1));
        self.selected_id = self.selected_item().and_then(|item| self.item_id(item));
    }

    fn reorder(&mut self) {
        self.order = display_order(
            self.census_groups(),
            self.unreleased(),
            self.outliving(),
            self.sort,
        );
        let position = self
            .selected_id
            .as_ref()
            .and_then(|id| {
                self.order
                    .iter()
                    .position(|&item| self.item_id(item).as_ref() == Some(id))
            })
            .unwrap_or(self.selected);
        self.select_at(position);
    }

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
                        "STUCK: {} goroutine{} not run for {} (a deadlock, or a send nobody receives)",
                        group.stuck,
                        plural(group.stuck as usize),
                        human_age(group.stuck_for_s),
                    ),
                    width,
                ),
                self.styled(Style::new().fg(Color::Magenta).add_modifier(Modifier::BOLD)),
            ));
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

/// Shortens `text` to at most `width` columns by cutting its start: `…` then its end.
pub fn truncate_left(text: &str, width: usize) -> String {
    if text.width() <= width {
        return text.to_owned();
    }
    if width == 0 {
        return String::new();
    }
    let mut tail = Vec::new();
    let mut used = 0;
    for c in text.chars().rev() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        tail.push(c);
        used += w;
    }
    std::iter::once('…').chain(tail.into_iter().rev()).collect()
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

/// What a row is sorted by: findings first (`tier`: suspects, stuck groups, context
/// findings, the rest), then by `key`; ties by rank, count, then id, so the order is stable
/// from one census to the next.
struct SortFacts {
    tier: u8,
    rank: u32,
    count: u64,
    growth: (i64, i64),
    age_s: f64,
    id: String,
}

/// The display order of the groups and the context findings under `key`.
pub fn display_order(
    groups: &[Group],
    unreleased: &[UnreleasedContexts],
    outliving: &[OutlivingGoroutines],
    key: SortKey,
) -> Vec<Item> {
    let site = |site: &Option<SourceLocation>| site.as_ref().map(ToString::to_string);
    let facts = groups
        .iter()
        .enumerate()
        .map(|(i, g)| {
            let tier = if g.suspect {
                0
            } else if g.stuck > 0 {
                1
            } else {
                3
            };
            let rank = if g.suspect && g.rank > 0 {
                g.rank
            } else {
                u32::MAX
            };
            let facts = SortFacts {
                tier,
                rank,
                count: g.count,
                growth: (g.growth_short, g.growth_long),
                age_s: g.oldest_age_s,
                id: g.id.clone(),
            };
            (Item::Group(i), facts)
        })
        .chain(unreleased.iter().enumerate().map(|(i, u)| {
            let facts = SortFacts {
                tier: 2,
                rank: u32::MAX,
                count: u.count,
                growth: (u.growth, 0),
                age_s: u.oldest_age_s,
                id: site(&u.site).unwrap_or_default(),
            };
            (Item::Unreleased(i), facts)
        }))
        .chain(outliving.iter().enumerate().map(|(i, o)| {
            let facts = SortFacts {
                tier: 2,
                rank: u32::MAX,
                count: o.count,
                growth: (o.growth, 0),
                age_s: o.oldest_cancelled_s,
                id: site(&o.goroutine_site).unwrap_or_default(),
            };
            (Item::Outliving(i), facts)
        }));
    let mut rows: Vec<(Item, SortFacts)> = facts.collect();
    fn by_rank(a: &SortFacts, b: &SortFacts) -> std::cmp::Ordering {
        a.tier
            .cmp(&b.tier)
            .then(a.rank.cmp(&b.rank))
            .then(b.count.cmp(&a.count))
            .then_with(|| a.id.cmp(&b.id))
    }
    rows.sort_by(|(_, a), (_, b)| match key {
        SortKey::Rank => by_rank(a, b),
        SortKey::Count => b.count.cmp(&a.count).then_with(|| by_rank(a, b)),
        SortKey::Growth => b.growth.cmp(&a.growth).then_with(|| by_rank(a, b)),
        SortKey::Age => b.age_s.total_cmp(&a.age_s).then_with(|| by_rank(a, b)),
    });
    rows.into_iter().map(|(item, _)| item).collect()
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn state_text(group: &Group) -> &str {
    if group.wait_reason.is_empty() {
        &group.state
    } else {
        &group.wait_reason
    }
}

/// A location for a table cell of `width` columns: the function without its import path, then
/// the file's base name and line when they fit too, e.g. `server.(*Conn).serve conn.go:88`. The
/// function says more at a glance; the detail pane has the rest.
fn location_cell(location: Option<&SourceLocation>, width: usize) -> String {
    let Some(location) = location else {
        return "-".to_owned();
    };
    let function = short_function(&location.function);
    let file = location.file.rsplit('/').next().unwrap_or(&location.file);
    let full = format!("{function} {file}:{}", location.line);
    if full.width() <= width {
        full
    } else {
        truncate(function, width)
    }
}

/// `github.com/acme/api/server.(*Conn).serve` -> `server.(*Conn).serve`: the import path's last
/// element stays. Slashes inside a receiver or type parameters (`pkg.F[go.shape.*a/b.T]`) are not
/// part of the path.
pub fn short_function(function: &str) -> &str {
    let name_start = function.find(['(', '[']).unwrap_or(function.len());
    let start = function[..name_start]
        .rfind('/')
        .map_or(0, |slash| slash + 1);
    &function[start..]
}

/// Shortens `text` to at most `width` columns, ending with `…` when something was cut.
pub fn truncate(text: &str, width: usize) -> String {
    if text.width() <= width {
        text.to_owned()
    } else {
        cut(text, width)
    }
}

/// The start of `text` that fits in `width - 1` columns, then `…` (nothing if `width` is 0).
fn cut(text: &str, width: usize) -> String {
    if width == 0 {
        return String::new();
    }
    let mut out = String::new();
    let mut used = 0;
    for c in text.chars() {
        let w = c.width().unwrap_or(0);
        if used + w > width - 1 {
            break;
        }
        out.push(c);
        used += w;
    }
    out.push('…');
    out
}

/// The spans, cut to `width` columns with a `…` where the cut is.
fn fit_spans(spans: Vec<Span<'static>>, width: usize) -> Line<'static> {
    let mut out = Vec::new();
    let mut used = 0;
    let total: usize = spans.iter().map(Span::width).sum();
    if total <= width {
        return Line::from(spans);
    }
    for span in spans {
        let w = span.width();
        if used + w < width {
            used += w;
            out.push(span);
        } else {
            // Something is cut here: this span, or (when it fills the rest exactly) the ones
            // after it. Either way the line ends with `…`.
            let room = width - used;
            if room > 0 {
                out.push(Span::styled(cut(&span.content, room), span.style));
            }
            break;
        }
    }
    Line::from(out)
}

/// 45s, 12m, 3h, 2d: the largest whole unit.
pub fn human_age(seconds: f64) -> String {
    let s = if seconds.is_finite() && seconds > 0.0 {
        seconds as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m", s / 60),
        3600..86400 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

/// 500ms, 1.5s, 90s, 15m, 1h, 1d: for intervals and windows, in the largest exact unit.
pub fn human_duration(duration: Duration) -> String {
    let ms = duration.as_millis();
    if ms < 1000 {
        return format!("{ms}ms");
    }
    if !ms.is_multiple_of(1000) {
        return format!("{:.1}s", duration.as_secs_f64());
    }
    let s = duration.as_secs();
    if s.is_multiple_of(86400) {
        format!("{}d", s / 86400)
    } else if s.is_multiple_of(3600) {
        format!("{}h", s / 3600)
    } else if s.is_multiple_of(60) {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn signed(n: i64) -> String {
    if n > 0 {
        format!("+{n}")
    } else {
        n.to_string()
    }
}

/// Signed, at most 5 columns: +999, +1.2k, +12k, +1.2M.
fn signed_compact(n: i64) -> String {
    let magnitude = compact(n.unsigned_abs(), 1000);
    match n.signum() {
        1 => format!("+{magnitude}"),
        -1 => format!("-{magnitude}"),
        _ => "0".to_owned(),
    }
}

/// Exact up to 999999, then 1.2M.
fn compact_count(n: u64) -> String {
    compact(n, 1_000_000)
}

fn compact(n: u64, exact_below: u64) -> String {
    if n < exact_below {
        return n.to_string();
    }
    let (value, unit) = if n < 1_000_000 {
        (n as f64 / 1e3, "k")
    } else if n < 1_000_000_000 {
        (n as f64 / 1e6, "M")
    } else {
        (n as f64 / 1e9, "G")
    };
    if value < 9.95 {
        format!("{value:.1}{unit}")
    } else {
        format!("{value:.0}{unit}")
    }
}

/// `HH:MM:SS UTC` of a Unix time in milliseconds.
pub fn utc_time_of_day(unix_ms: u64) -> String {
    let s = (unix_ms / 1000) % 86400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

/// The probes under `--max-overhead`, for the header: nothing when they are always on.
fn probes_text(probes: &crate::api::ProbeState) -> String {
    match probes.max_overhead.as_str() {
        "" | "exact" => String::new(),
        "0%" => " │ memory only".to_owned(),
        budget => format!(
            " │ probes {} {:.0}% of 1m (≤{budget})",
            if probes.on { "on," } else { "off," },
            probes.duty * 100.0
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(human_age(0.4), "0s");
        assert_eq!(human_age(45.9), "45s");
        assert_eq!(human_age(12.0 * 60.0 + 5.0), "12m");
        assert_eq!(human_age(3.0 * 3600.0 + 59.0), "3h");
        assert_eq!(human_age(2.0 * 86400.0), "2d");
        assert_eq!(human_age(f64::NAN), "0s");
        assert_eq!(human_duration(Duration::from_millis(250)), "250ms");
        assert_eq!(human_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(human_duration(Duration::from_secs(1)), "1s");
        assert_eq!(human_duration(Duration::from_secs(90)), "90s");
        assert_eq!(human_duration(Duration::from_secs(60)), "1m");
        assert_eq!(human_duration(Duration::from_secs(900)), "15m");
        assert_eq!(human_duration(Duration::from_secs(3600)), "1h");
        assert_eq!(human_duration(Duration::from_secs(86400)), "1d");
        assert_eq!(signed_compact(0), "0");
        assert_eq!(signed_compact(999), "+999");
        assert_eq!(signed_compact(-1234), "-1.2k");
        assert_eq!(signed_compact(12_345), "+12k");
        assert_eq!(signed_compact(1_234_567), "+1.2M");
        assert_eq!(compact_count(999_999), "999999");
        assert_eq!(compact_count(1_500_000), "1.5M");
        assert_eq!(utc_time_of_day(1_700_000_000_123), "22:13:20 UTC");
    }

    #[test]
    fn truncates() {
        assert_eq!(truncate("abcdef", 6), "abcdef");
        assert_eq!(truncate("abcdef", 4), "abc…");
        assert_eq!(truncate("abcdef", 1), "…");
        assert_eq!(truncate("abcdef", 0), "");
        assert_eq!(truncate_left("abcdef", 4), "…def");
        assert_eq!(truncate_left("abcdef", 6), "abcdef");
        assert_eq!(
            short_function("github.com/acme/api/server.(*Conn).serve"),
            "server.(*Conn).serve"
        );
        assert_eq!(short_function("main.main.func1"), "main.main.func1");
        assert_eq!(short_function("example.com/a.b/c.F"), "c.F");
        assert_eq!(
            short_function("example.com/a.Map[go.shape.*x/y.T]"),
            "a.Map[go.shape.*x/y.T]"
        );
        let line = fit_spans(vec![Span::raw("abc"), Span::raw("defgh")], 5);
        assert_eq!(line.to_string(), "abcd…");
        let location = SourceLocation {
            function: "github.com/acme/api/server.(*Conn).serve".into(),
            file: "/src/api/server/conn.go".into(),
            line: 88,
        };
        assert_eq!(
            location_cell(Some(&location), 40),
            "server.(*Conn).serve conn.go:88"
        );
        assert_eq!(location_cell(Some(&location), 30), "server.(*Conn).serve");
        assert_eq!(location_cell(Some(&location), 10), "server.(*…");
        assert_eq!(location_cell(None, 10), "-");
    }
}
