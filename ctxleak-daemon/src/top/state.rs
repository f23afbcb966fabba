//! What `ctxleak top` knows: the last census and findings, the connection, the selection and
//! the sort, and how keys change them. Drawn by [`super::view`]; nothing here draws.

use std::time::Duration;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use ratatui::widgets::TableState;

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
    pub(super) source: String,
    pub(super) interval: Duration,
    pub(super) data: Option<GroupsResponse>,
    /// The context findings and stuck goroutines beside the census, when the server has them.
    pub(super) leaks: Option<LeaksResponse>,
    pub(super) connection: Connection,
    pub(super) sort: SortKey,
    /// The rows, in display order.
    pub(super) order: Vec<Item>,
    /// Position of the selection in `order`.
    pub(super) selected: usize,
    /// The selected row's id ([`App::item_id`]), so the selection follows it across
    /// censuses and sorts.
    pub(super) selected_id: Option<String>,
    pub(super) detail: bool,
    pub(super) color: bool,
    pub(super) table: TableState,
    /// Table rows visible in the last render, for PageUp/PageDown.
    pub(super) page: usize,
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

    pub(super) fn census_groups(&self) -> &[Group] {
        self.data.as_ref().map_or(&[], |d| &d.groups)
    }

    pub(super) fn unreleased(&self) -> &[UnreleasedContexts] {
        self.leaks.as_ref().map_or(&[], |l| &l.unreleased)
    }

    pub(super) fn outliving(&self) -> &[OutlivingGoroutines] {
        self.leaks.as_ref().map_or(&[], |l| &l.outliving)
    }

    /// A row's identity across censuses: the group's id, or the sites of a finding.
    pub(super) fn item_id(&self, item: Item) -> Option<String> {
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
    pub(super) fn group_of(&self, outliving: &OutlivingGoroutines) -> Option<&Group> {
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

    pub(super) fn select_by(&mut self, delta: isize) {
        self.select_at(self.selected.saturating_add_signed(delta));
    }

    pub(super) fn select_at(&mut self, position: usize) {
        self.selected = position.min(self.order.len().saturating_sub(1));
        self.selected_id = self.selected_item().and_then(|item| self.item_id(item));
    }

    pub(super) fn reorder(&mut self) {
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
}

/// What a row is sorted by: findings first (`tier`: suspects, stuck groups, context
/// findings, the rest), then by `key`; ties by rank, count, then id, so the order is stable
/// from one census to the next.
pub(super) struct SortFacts {
    tier: u8,
    rank: u32,
    count: u64,
    growth: (i64, i64),
    age_s: f64,
    id: String,
}

impl SortFacts {
    /// A context finding's: after the suspects and stuck groups, before the rest.
    fn finding(count: u64, growth: i64, age_s: f64, site: Option<String>) -> Self {
        Self {
            tier: 2,
            rank: u32::MAX,
            count,
            growth: (growth, 0),
            age_s,
            id: site.unwrap_or_default(),
        }
    }
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
            let facts = SortFacts::finding(u.count, u.growth, u.oldest_age_s, site(&u.site));
            (Item::Unreleased(i), facts)
        }))
        .chain(outliving.iter().enumerate().map(|(i, o)| {
            let facts = SortFacts::finding(
                o.count,
                o.growth,
                o.oldest_cancelled_s,
                site(&o.goroutine_site),
            );
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
