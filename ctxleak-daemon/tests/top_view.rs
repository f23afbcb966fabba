//! `ctxleak top`: the view drawn into ratatui's `TestBackend` from a fixed census, then the real
//! binary end to end on a pseudo-terminal against a small HTTP server that stands in for
//! `ctxleak attach`.
//!
//! The end-to-end tests drive the binary through a pty made here with `openpty` (libc) and read
//! its screen with the `vt100` terminal emulator, rather than through tmux: nothing to install
//! on a bare machine, no tmux server shared between parallel tests, and the emulator also tells
//! whether the alternate screen was left and the cursor shown again, which `capture-pane` does
//! not. None of this needs root or the Go fixtures.

use std::fs::File;
use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsRawFd as _, FromRawFd as _};
use std::os::unix::process::{CommandExt as _, ExitStatusExt as _};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ctxleak_daemon::api::{
    ContextListeners, Group, GroupsResponse, LeaksResponse, OutlivingGoroutines, SourceLocation,
    UnreleasedContexts,
};
use ctxleak_daemon::top::{Action, App, Connection, FetchError, Item, SortKey};
use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::{Color, Modifier};

// ---------------------------------------------------------------------------------------------
// The census every test starts from.

fn loc(function: &str, file: &str, line: u32) -> SourceLocation {
    SourceLocation {
        function: function.to_owned(),
        file: file.to_owned(),
        line,
    }
}

#[allow(clippy::too_many_arguments)]
fn group(
    id: &str,
    count: u64,
    state: &str,
    wait_reason: &str,
    blocked_at: SourceLocation,
    created_by: Option<SourceLocation>,
    oldest_age_s: f64,
    growth: (i64, i64),
    rank: u32,
) -> Group {
    let mut stack = vec![
        loc("runtime.gopark", "/usr/local/go/src/runtime/proc.go", 435),
        blocked_at.clone(),
    ];
    if let Some(created_by) = &created_by {
        stack.push(loc(
            &format!("{}.func1", created_by.function),
            &created_by.file,
            created_by.line + 1,
        ));
    }
    Group {
        id: id.to_owned(),
        count,
        state: state.to_owned(),
        wait_reason: wait_reason.to_owned(),
        created_by,
        blocked_at: Some(blocked_at),
        oldest_age_s,
        growth_short: growth.0,
        growth_long: growth.1,
        window_short_s: 60,
        window_long_s: 900,
        suspect: rank > 0,
        rank,
        stuck: 0,
        stuck_for_s: 0.0,
        stuck_since: Default::default(),
        channel: None,
        listening: 0,
        listens_on: None,
        stack,
    }
}

/// Six groups, in the server's order (suspects by rank, then by count). Each is found on screen
/// by a word of its `blocked at` function, which `needle` gives.
fn census() -> GroupsResponse {
    GroupsResponse {
        pid: 4242,
        exe: "/srv/shop/bin/shop-api".to_owned(),
        go_version: "go1.25.5".to_owned(),
        taken_at_unix_ms: 1_700_000_000_000,
        goroutines_user: 2387,
        goroutines_system: 6,
        probes: Default::default(),
        groups: vec![
            group(
                "a1",
                1200,
                "waiting",
                "chan send",
                loc(
                    "github.com/acme/shop/internal/notify.(*Notifier).send",
                    "/src/shop/internal/notify/notify.go",
                    57,
                ),
                Some(loc(
                    "github.com/acme/shop/internal/notify.(*Notifier).Publish",
                    "/src/shop/internal/notify/notify.go",
                    41,
                )),
                720.0,
                (118, 1350),
                1,
            ),
            group(
                "b2",
                310,
                "waiting",
                "select",
                loc(
                    "github.com/acme/shop/internal/cart.(*Cart).watch",
                    "/src/shop/internal/cart/cart.go",
                    133,
                ),
                Some(loc(
                    "github.com/acme/shop/internal/cart.NewCart",
                    "/src/shop/internal/cart/cart.go",
                    40,
                )),
                3.0 * 3600.0 + 10.0,
                (4, 55),
                2,
            ),
            group(
                "c3",
                800,
                "waiting",
                "IO wait",
                loc(
                    "net/http.(*connReader).backgroundRead",
                    "/usr/local/go/src/net/http/server.go",
                    690,
                ),
                Some(loc(
                    "net/http.(*Server).Serve",
                    "/usr/local/go/src/net/http/server.go",
                    3454,
                )),
                45.0,
                (-12, 3),
                0,
            ),
            group(
                "d4",
                64,
                "waiting",
                "sync.Mutex.Lock",
                loc(
                    "github.com/acme/shop/internal/db.(*Pool).Get",
                    "/src/shop/internal/db/pool.go",
                    88,
                ),
                Some(loc(
                    "github.com/acme/shop/internal/db.(*Pool).Warm",
                    "/src/shop/internal/db/pool.go",
                    30,
                )),
                30.0,
                (9, -2),
                0,
            ),
            group(
                "f6",
                12,
                "syscall",
                "",
                loc(
                    "github.com/fsnotify/fsnotify.(*Watcher).readEvents",
                    "/go/pkg/mod/github.com/fsnotify/fsnotify@v1.7.0/backend_inotify.go",
                    400,
                ),
                Some(loc(
                    "github.com/fsnotify/fsnotify.NewWatcher",
                    "/go/pkg/mod/github.com/fsnotify/fsnotify@v1.7.0/backend_inotify.go",
                    150,
                )),
                5.0,
                (0, 1),
                0,
            ),
            group(
                "e5",
                1,
                "running",
                "",
                loc("main.main", "/src/shop/cmd/shop-api/main.go", 12),
                None,
                2.0 * 86400.0,
                (0, 0),
                0,
            ),
        ],
    }
}

/// What finds each group's row: the start of its `blocked at` function without the import
/// path, which even an 80-column table shows.
fn needle(id: &str) -> &'static str {
    match id {
        "a1" => "notify.(*Notif",
        "b2" => "cart.(*Cart)",
        "c3" => "http.(*connRead",
        "d4" => "db.(*Pool).Get",
        "e5" => "main.main",
        "f6" => "fsnotify.(*Watch",
        "g7" => "main.(*Leaky)",
        other => panic!("no group {other}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering into a TestBackend.

fn app_with(census: GroupsResponse) -> App {
    let mut app = App::new("http://127.0.0.1:9789", Duration::from_secs(1));
    app.update(Ok(census));
    app
}

fn draw(app: &mut App, width: u16, height: u16) -> Buffer {
    let mut terminal = Terminal::new(TestBackend::new(width, height)).unwrap();
    terminal.draw(|frame| app.draw(frame)).unwrap();
    terminal.backend().buffer().clone()
}

fn lines(buffer: &Buffer) -> Vec<String> {
    let area = buffer.area;
    (0..area.height)
        .map(|y| {
            let mut line = String::new();
            let mut x = 0;
            while x < area.width {
                let symbol = buffer[(x, y)].symbol();
                line.push_str(symbol);
                // A wide character covers the next cell, which holds a blank.
                x += unicode_width::UnicodeWidthStr::width(symbol).max(1) as u16;
            }
            line
        })
        .collect()
}

/// The buffer as text, without the blanks that end its lines.
fn screen(buffer: &Buffer) -> String {
    let lines: Vec<String> = lines(buffer)
        .iter()
        .map(|line| line.trim_end().to_owned())
        .collect();
    lines.join("\n")
}

/// The one row that contains `text`.
fn row_of(lines: &[String], text: &str) -> usize {
    let rows: Vec<usize> = (0..lines.len())
        .filter(|&y| lines[y].contains(text))
        .collect();
    assert_eq!(
        rows.len(),
        1,
        "{text:?} should be on exactly one row:\n{}",
        lines.join("\n")
    );
    rows[0]
}

/// The groups' ids in the order the table shows them.
fn shown_order(buffer: &Buffer) -> Vec<&'static str> {
    let lines = lines(buffer);
    let mut ids = ["a1", "b2", "c3", "d4", "e5", "f6"];
    ids.sort_by_key(|id| row_of(&lines, needle(id)));
    ids.to_vec()
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

#[test]
fn rows_in_server_order_with_header() {
    let mut app = app_with(census());
    let buffer = draw(&mut app, 120, 30);
    let text = screen(&buffer);
    assert_eq!(
        shown_order(&buffer),
        ["a1", "b2", "c3", "d4", "f6", "e5"],
        "\n{text}"
    );
    for expected in [
        "ctxleak top",
        "PID 4242",
        "/srv/shop/bin/shop-api",
        "go1.25.5",
        "● connected",
        "goroutines: 2387 user, 6 system",
        "6 groups, 2 suspects",
        "census 22:13:20 UTC",
        "GROW 1m/15m",
        "BLOCKED AT",
        "CREATED BY",
        "sort: rank",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    // One row, column by column: count, growth with signs, age, wait reason, both sites.
    let lines = lines(&buffer);
    let row = &lines[row_of(&lines, needle("a1"))];
    let words: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        &words[..7],
        [
            "!1",
            "1200",
            "+118/+1.4k",
            "12m",
            "chan",
            "send",
            "notify.(*Notifier).send"
        ],
        "{row}"
    );
    assert!(
        row.contains("notify.(*Notifier).send notify.go:57"),
        "{row}"
    );
    // Too long for its column with the file: the function alone.
    assert!(
        row.trim_end().ends_with("  notify.(*Notifier).Publish"),
        "{row}"
    );
    let c3 = &lines[row_of(&lines, needle("c3"))];
    assert!(
        c3.contains("-12/+3") && c3.contains("45s") && c3.contains("IO wait"),
        "{c3}"
    );
    let e5 = &lines[row_of(&lines, needle("e5"))];
    assert!(
        e5.contains(" 0/0 ") && e5.contains("2d") && e5.contains("running"),
        "{e5}"
    );
    assert!(
        e5.trim_end().ends_with('-'),
        "no creation site shows as -: {e5}"
    );
    let b2 = &lines[row_of(&lines, needle("b2"))];
    assert!(b2.contains("3h"), "{b2}");
}

#[test]
fn the_header_says_when_the_probes_run_under_a_budget() {
    let exact = screen(&draw(&mut app_with(census()), 140, 30));
    assert!(!exact.contains("probes"), "{exact}");
    let mut sampled = census();
    sampled.probes = ctxleak_daemon::api::ProbeState {
        max_overhead: "1%".into(),
        on: false,
        duty: 0.123,
        coverage: 0.2,
        sampled: true,
    };
    let screen = screen(&draw(&mut app_with(sampled.clone()), 140, 30));
    assert!(screen.contains("probes off, 12% of 1m (≤1%)"), "{screen}");
    sampled.probes.max_overhead = "0%".into();
    let screen = self::screen(&draw(&mut app_with(sampled), 140, 30));
    assert!(screen.contains("memory only"), "{screen}");
}

#[test]
fn suspects_are_marked() {
    let mut app = app_with(census());
    let buffer = draw(&mut app, 120, 30);
    let lines = lines(&buffer);
    for (id, mark) in [("a1", "!1"), ("b2", "!2")] {
        let y = row_of(&lines, needle(id));
        assert!(lines[y].starts_with(mark), "{id}: {}", lines[y]);
        // Red and bold across the row (the first row is also the selected one: reversed).
        let cell = &buffer[(6, y as u16)];
        assert_eq!(cell.fg, Color::Red, "{id} row colour");
        assert!(cell.modifier.contains(Modifier::BOLD), "{id} row bold");
    }
    for id in ["c3", "d4", "e5", "f6"] {
        let y = row_of(&lines, needle(id));
        assert!(
            !lines[y][..3].contains('!'),
            "{id} is no suspect: {}",
            lines[y]
        );
        let cell = &buffer[(6, y as u16)];
        assert_ne!(cell.fg, Color::Red, "{id} row colour");
        assert!(!cell.modifier.contains(Modifier::BOLD), "{id} not bold");
    }
    // The selection starts on the first row.
    let first = row_of(&lines, needle("a1"));
    assert!(
        buffer[(6, first as u16)]
            .modifier
            .contains(Modifier::REVERSED)
    );

    // Without colours the mark and the bold stay.
    let mut plain = App::new("http://127.0.0.1:9789", Duration::from_secs(1)).with_color(false);
    plain.update(Ok(census()));
    let buffer = draw(&mut plain, 120, 30);
    let lines = self::lines(&buffer);
    let y = row_of(&lines, needle("b2"));
    assert!(lines[y].starts_with("!2"));
    assert_eq!(buffer[(6, y as u16)].fg, Color::Reset);
    assert!(buffer[(6, y as u16)].modifier.contains(Modifier::BOLD));
}

#[test]
fn sorting_by_each_key() {
    let expected = [
        (SortKey::Rank, ["a1", "b2", "c3", "d4", "f6", "e5"], "#▼"),
        (
            SortKey::Count,
            ["a1", "c3", "b2", "d4", "f6", "e5"],
            "COUNT▼",
        ),
        (
            SortKey::Growth,
            ["a1", "d4", "b2", "f6", "e5", "c3"],
            "GROW 1m/15m▼",
        ),
        (SortKey::Age, ["e5", "b2", "a1", "c3", "d4", "f6"], "AGE▼"),
    ];
    let mut app = app_with(census());
    // `s` cycles rank -> count -> growth -> age -> rank.
    for round in 0..2 {
        for (sort, order, marker) in expected {
            assert_eq!(app.sort(), sort, "round {round}");
            let buffer = draw(&mut app, 120, 30);
            let text = screen(&buffer);
            assert_eq!(shown_order(&buffer), order, "sorted by {sort:?}:\n{text}");
            assert!(text.contains(marker), "{marker:?} for {sort:?}:\n{text}");
            assert!(text.contains(&format!("sort: {}", sort.name())), "{text}");
            assert_eq!(app.handle_key(key(KeyCode::Char('s'))), Action::Continue);
        }
    }
    // The server's order is not trusted: a shuffled census is shown in the same order.
    let mut shuffled = census();
    shuffled.groups.reverse();
    let mut app = app_with(shuffled);
    assert_eq!(
        shown_order(&draw(&mut app, 120, 30)),
        ["a1", "b2", "c3", "d4", "f6", "e5"]
    );
}

#[test]
fn detail_pane_shows_the_stack() {
    let mut app = app_with(census());
    let buffer = draw(&mut app, 120, 40);
    assert!(!screen(&buffer).contains("stack ("), "closed at first");
    // Second row (b2), then Enter.
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Enter));
    assert!(app.detail_shown());
    assert_eq!(app.selected_group().unwrap().id, "b2");
    let buffer = draw(&mut app, 120, 40);
    let text = screen(&buffer);
    let lines = lines(&buffer);
    assert!(text.contains("group b2"), "{text}");
    assert!(text.contains("LEAK SUSPECT #2"), "{text}");
    assert!(
        text.contains("310 goroutines · waiting: select · oldest 3h · growth +4 in 1m, +55 in 15m"),
        "{text}"
    );
    assert!(text.contains(
        "created by: github.com/acme/shop/internal/cart.NewCart (/src/shop/internal/cart/cart.go:40)"
    ), "{text}");
    assert!(
        text.contains("stack (3 frames, innermost first; → where they are blocked):"),
        "{text}"
    );
    // Every frame, innermost first, the one they are blocked at marked.
    assert!(text.contains(
        "→ github.com/acme/shop/internal/cart.(*Cart).watch (/src/shop/internal/cart/cart.go:133)"
    ), "{text}");
    let frames: Vec<usize> = census().groups[1]
        .stack
        .iter()
        .map(|frame| row_of(&lines, &format!(" {frame}")))
        .collect();
    assert!(
        frames.windows(2).all(|w| w[0] < w[1]),
        "innermost first: {frames:?}\n{text}"
    );
    assert!(text.contains("Enter hide details"), "{text}");

    // j and k move too; the pane follows the selection.
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('j')));
    app.handle_key(key(KeyCode::Char('k')));
    assert!(screen(&draw(&mut app, 120, 40)).contains("group c3"));
    // Enter again closes it.
    app.handle_key(key(KeyCode::Enter));
    assert!(!screen(&draw(&mut app, 120, 40)).contains("stack ("));
}

/// The census with d4 stuck (64 goroutines, 40 of them not run for 5 minutes), and the
/// findings beside it: unreleased contexts made at one line, and goroutines of the cart
/// watcher (b2's `go` line, in `select`) outliving their context.
fn census_with_findings() -> (GroupsResponse, LeaksResponse) {
    let mut census = census();
    census.groups[3].stuck = 40;
    census.groups[3].stuck_for_s = 300.0;
    let cart = census.groups[1].clone();
    let leaks = LeaksResponse {
        pid: 4242,
        exe: census.exe.clone(),
        go_version: census.go_version.clone(),
        taken_at_unix_ms: census.taken_at_unix_ms,
        contexts_probed: true,
        grace_s: 5.0,
        unreleased: vec![UnreleasedContexts {
            site: Some(loc(
                "github.com/acme/shop/internal/search.(*Index).Query",
                "/src/shop/internal/search/index.go",
                212,
            )),
            count: 77,
            orphaned: 5,
            oldest_age_s: 600.0,
            growth: 12,
            window_s: 60,
            estimate: None,
            listeners: vec![ContextListeners {
                blocked_at: Some(loc(
                    "github.com/acme/shop/internal/search.(*Index).watch",
                    "/src/shop/internal/search/watch.go",
                    31,
                )),
                wait_reason: "select".into(),
                count: 2,
                goids: vec![41, 42],
            }],
        }],
        outliving: vec![OutlivingGoroutines {
            goroutine_site: cart.created_by.clone(),
            context_site: Some(loc(
                "github.com/acme/shop/internal/api.(*Handler).Cart",
                "/src/shop/internal/api/cart.go",
                19,
            )),
            state: cart.state.clone(),
            wait_reason: cart.wait_reason.clone(),
            count: 9,
            oldest_cancelled_s: 90.0,
            growth: 3,
            window_s: 60,
            estimate: None,
        }],
        stuck: vec![census.groups[3].clone()],
        children_check: Default::default(),
        contexts_created: 1000,
        contexts_cancelled: 923,
        contexts_created_estimate: None,
        contexts_tracked: 80,
        goroutines_bound: 9,
        probes: Default::default(),
    };
    (census, leaks)
}

#[test]
fn stuck_groups_and_context_findings_are_rows_beside_the_groups() {
    let (census, leaks) = census_with_findings();
    let mut app = app_with(census.clone());
    app.update_leaks(Some(leaks));
    // Suspects by rank, then the stuck group, then the context findings, then the rest.
    assert_eq!(
        app.items(),
        [
            Item::Group(0),
            Item::Group(1),
            Item::Group(3),
            Item::Unreleased(0),
            Item::Outliving(0),
            Item::Group(2),
            Item::Group(4),
            Item::Group(5),
        ]
    );
    let buffer = draw(&mut app, 120, 40);
    let text = screen(&buffer);
    let lines = lines(&buffer);
    assert!(
        text.contains("6 groups, 2 suspects, 1 stuck, 2 context findings"),
        "{text}"
    );
    let stuck = &lines[row_of(&lines, needle("d4"))];
    assert!(stuck.trim_start().starts_with("!S"), "{stuck}");
    let unreleased = &lines[row_of(&lines, "unreleased ctx")];
    assert!(
        unreleased.trim_start().starts_with("!U")
            && unreleased.contains(" 77 ")
            && unreleased.contains("+12/·")
            && unreleased.contains("10m")
            && unreleased.contains("search.(*Index).Query"),
        "{unreleased}"
    );
    let outliving = &lines[row_of(&lines, "outlives ctx")];
    assert!(
        outliving.trim_start().starts_with("!O")
            && outliving.contains(" 9 ")
            && outliving.contains("cart.(*Cart).watch cart.go:133")
            && outliving.contains("cart.NewCart cart.go:40"),
        "blocked where the cart watchers' group is: {outliving}"
    );
    // Sorting by count puts each where its count says.
    app.set_sort(SortKey::Count);
    let position = |item| app.items().iter().position(|&i| i == item);
    assert!(position(Item::Group(1)) < position(Item::Unreleased(0)));
    assert!(position(Item::Unreleased(0)) < position(Item::Group(3)));
    assert!(position(Item::Group(3)) < position(Item::Outliving(0)));
    app.set_sort(SortKey::Rank);

    // Enter on each: the stuck group's verdict and stack...
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Enter));
    assert_eq!(app.selected_group().map(|g| g.id.as_str()), Some("d4"));
    let text = screen(&draw(&mut app, 120, 40));
    assert!(
        text.contains(
            "STUCK: 40 goroutines not run for at least 5m (ctxleak) (a deadlock, or a send nobody receives)"
        ),
        "{text}"
    );
    assert!(
        text.contains("→ github.com/acme/shop/internal/db.(*Pool).Get"),
        "{text}"
    );
    // ...the unreleased contexts' creation line (no stack: the line is the finding)...
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.selected_item(), Some(Item::Unreleased(0)));
    let text = screen(&draw(&mut app, 120, 40));
    assert!(
        text.contains("77 contexts never cancelled (5 orphaned: their creator has exited) · oldest 10m · +12 in 1m"),
        "{text}"
    );
    assert!(text.contains(
        "created at: github.com/acme/shop/internal/search.(*Index).Query (/src/shop/internal/search/index.go:212)"
    ), "{text}");
    // ...with the goroutines parked on their Done() channels...
    assert!(text.contains(
        "2 goroutines wait on it at github.com/acme/shop/internal/search.(*Index).watch (watch.go:31) (select; goroutines 41"
    ), "{text}");
    assert!(text.contains(
        "waiting at: github.com/acme/shop/internal/search.(*Index).watch (/src/shop/internal/search/watch.go:31)"
    ), "{text}");
    // ...and the outliving goroutines' sites and the stack of their group.
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.selected_item(), Some(Item::Outliving(0)));
    let buffer = draw(&mut app, 120, 40);
    let text = screen(&buffer);
    assert!(
        text.contains("9 goroutines still select · context cancelled 1m ago · +3 in 1m"),
        "{text}"
    );
    assert!(text.contains(
        "context made at: github.com/acme/shop/internal/api.(*Handler).Cart (/src/shop/internal/api/cart.go:19)"
    ), "{text}");
    assert!(text.contains(
        "→ github.com/acme/shop/internal/cart.(*Cart).watch (/src/shop/internal/cart/cart.go:133)"
    ), "{text}");

    // The selection follows the finding when the next census reorders the rows; a server
    // without findings leaves the groups alone.
    let mut next = census;
    next.groups[3].stuck = 0;
    app.update(Ok(next));
    assert_eq!(app.selected_item(), Some(Item::Outliving(0)));
    app.update_leaks(None);
    assert_eq!(app.items().len(), 6);
    assert!(!screen(&draw(&mut app, 120, 40)).contains("unreleased ctx"));
}

#[test]
fn selection_follows_its_group_across_censuses() {
    let mut app = app_with(census());
    app.handle_key(key(KeyCode::Down));
    app.handle_key(key(KeyCode::Down));
    assert_eq!(app.selected_group().unwrap().id, "c3");
    // c3 grows past everything: it moves to second place (after the suspect), and stays selected.
    let mut next = census();
    next.groups[2].count = 5000;
    app.update(Ok(next));
    assert_eq!(app.selected_group().unwrap().id, "c3");
    app.set_sort(SortKey::Count);
    assert_eq!(app.selected_group().unwrap().id, "c3");
    let buffer = draw(&mut app, 120, 30);
    let lines = lines(&buffer);
    let y = row_of(&lines, needle("c3"));
    assert_eq!(y, row_of(&lines, "COUNT▼") + 1, "c3 is first by count");
    assert!(buffer[(6, y as u16)].modifier.contains(Modifier::REVERSED));
    // Up past the top and down past the bottom stay in the table.
    for _ in 0..20 {
        app.handle_key(key(KeyCode::Up));
    }
    assert_eq!(app.selected_group().unwrap().id, "c3");
    for _ in 0..20 {
        app.handle_key(key(KeyCode::Down));
    }
    assert_eq!(app.selected_group().unwrap().id, "e5");
}

#[test]
fn small_terminal_truncates_without_wrapping() {
    let mut app = app_with(census());
    let buffer = draw(&mut app, 80, 24);
    let text = screen(&buffer);
    let lines = lines(&buffer);
    // Every group still on one row of its own, in order, with the header intact.
    assert_eq!(
        shown_order(&buffer),
        ["a1", "b2", "c3", "d4", "f6", "e5"],
        "\n{text}"
    );
    assert!(text.contains("PID 4242"), "{text}");
    assert!(text.contains("● connected"), "{text}");
    assert!(text.contains("BLOCKED AT"), "{text}");
    // Long sites were cut with an ellipsis.
    let a1 = &lines[row_of(&lines, needle("a1"))];
    assert!(
        a1.contains("notify.(*Notifier).s…") && a1.trim_end().ends_with("notify.(*Noti…"),
        "{a1}"
    );
    let d4 = &lines[row_of(&lines, needle("d4"))];
    assert!(d4.contains("sync.Mutex.Lo…"), "{d4}");
    // No line carries on into the next: the footer is one line, whole words.
    assert!(lines[23].starts_with("↑↓/jk select"), "{}", lines[23]);

    // With the detail pane open too.
    app.handle_key(key(KeyCode::Enter));
    let buffer = draw(&mut app, 80, 24);
    let (text, lines) = (screen(&buffer), self::lines(&buffer));
    assert!(text.contains("group a1"), "{text}");
    // Sites too long for one line take two: the function, then the file and line under it.
    let y = row_of(
        &lines,
        "created by: github.com/acme/shop/internal/notify.(*Notifier).Publish",
    );
    assert!(
        lines[y + 1].contains("  /src/shop/internal/notify/notify.go:41"),
        "{}",
        lines[y + 1]
    );
    let y = row_of(
        &lines,
        "→ github.com/acme/shop/internal/notify.(*Notifier).send",
    );
    assert!(
        lines[y + 1].contains("/src/shop/internal/notify/notify.go:57"),
        "{}",
        lines[y + 1]
    );
    // All three frames fit.
    assert!(
        text.contains("  runtime.gopark (/usr/local/go/src/runtime/proc.go:435)"),
        "{text}"
    );
    let y = row_of(
        &lines,
        "  github.com/acme/shop/internal/notify.(*Notifier).Publish.func1",
    );
    assert!(
        lines[y + 1].contains("/src/shop/internal/notify/notify.go:42"),
        "{}",
        lines[y + 1]
    );
    assert!(!text.contains("more frame"), "{text}");

    // A deep stack on a tall terminal: every frame, none left out.
    let mut deep = census();
    deep.groups[0].stack = (0..12)
        .map(|i| loc(&format!("main.f{i}"), "/src/app/main.go", i))
        .collect();
    let mut app = app_with(deep);
    app.handle_key(key(KeyCode::Enter));
    let text = screen(&draw(&mut app, 80, 60));
    assert!(
        text.contains("main.f0 (/src/app/main.go:0)")
            && text.contains("main.f11 (/src/app/main.go:11)"),
        "{text}"
    );
    assert!(!text.contains("more frame"), "{text}");
    let text = screen(&draw(&mut app, 80, 24));
    assert!(
        text.contains("main.f0 (") && !text.contains("main.f11 ("),
        "{text}"
    );
    assert!(text.contains("more frames"), "{text}");

    // Anything down to nothing draws without panicking.
    for (width, height) in [
        (1, 1),
        (10, 3),
        (20, 5),
        (40, 8),
        (79, 23),
        (80, 2),
        (200, 60),
    ] {
        for detail in [false, true] {
            let mut app = app_with(census());
            if detail {
                app.handle_key(key(KeyCode::Enter));
            }
            draw(&mut app, width, height);
        }
    }
}

#[test]
fn empty_and_missing_censuses_say_why() {
    let mut empty = census();
    empty.groups.clear();
    let mut app = app_with(empty);
    let text = screen(&draw(&mut app, 100, 30));
    assert!(
        text.contains("No goroutine groups in this census (2387 user, 6 system goroutines)."),
        "{text}"
    );
    assert!(!text.contains("BLOCKED AT"), "no empty table: {text}");

    let mut app = App::new("http://127.0.0.1:9789", Duration::from_secs(1));
    let text = screen(&draw(&mut app, 100, 30));
    assert!(
        text.contains("Connecting to http://127.0.0.1:9789"),
        "{text}"
    );

    app.update(Err(FetchError::Unreachable(
        "connection refused".to_owned(),
    )));
    let text = screen(&draw(&mut app, 100, 30));
    assert!(
        text.contains("Cannot reach ctxleak at http://127.0.0.1:9789: connection refused."),
        "{text}"
    );
    assert!(
        text.contains("Is `ctxleak attach --pid PID` running"),
        "{text}"
    );
    assert!(text.contains("disconnected (connection refused)"), "{text}");

    // Something answers, but not with a census: said as such, not as "disconnected".
    app.update(Err(FetchError::BadAnswer(
        "HTTP 503 Service Unavailable: no census yet".to_owned(),
    )));
    let text = screen(&draw(&mut app, 100, 30));
    assert!(
        text.contains("ctxleak at http://127.0.0.1:9789 answered without a census:\n   HTTP 503 Service Unavailable: no census yet\n Retrying every 1s."),
        "{text}"
    );
    assert!(
        text.contains("✖ HTTP 503 Service Unavailable: no census yet, retrying every 1s"),
        "{text}"
    );
    assert!(!text.contains("disconnected"), "{text}");
}

#[test]
fn disconnected_keeps_the_last_census() {
    let mut app = app_with(census());
    app.update(Err(FetchError::Unreachable(
        "connection refused".to_owned(),
    )));
    assert_eq!(
        app.connection(),
        &Connection::Disconnected {
            error: "connection refused".into()
        }
    );
    let buffer = draw(&mut app, 100, 30);
    let text = screen(&buffer);
    assert!(
        text.contains("✖ disconnected (connection refused), retrying every 1s"),
        "{text}"
    );
    assert!(text.contains("census 22:13:20 UTC (stale)"), "{text}");
    assert_eq!(shown_order(&buffer), ["a1", "b2", "c3", "d4", "f6", "e5"]);
    app.update(Ok(census()));
    let text = screen(&draw(&mut app, 100, 30));
    assert!(
        text.contains("● connected") && !text.contains("stale"),
        "{text}"
    );
}

#[test]
fn quit_keys() {
    let mut app = app_with(census());
    for quit in [
        key(KeyCode::Char('q')),
        key(KeyCode::Esc),
        KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL),
    ] {
        assert_eq!(app.handle_key(quit), Action::Quit, "{quit:?}");
    }
    for other in [
        key(KeyCode::Char('c')),
        key(KeyCode::Char('x')),
        key(KeyCode::Left),
    ] {
        assert_eq!(app.handle_key(other), Action::Continue, "{other:?}");
    }
}

// ---------------------------------------------------------------------------------------------
// End to end: the real binary on a pty, against a stand-in for `ctxleak attach`.

/// Serves `GET /api/groups` with whatever JSON it was last given; 404 for anything else.
struct FakeAttach {
    address: SocketAddr,
    body: Arc<Mutex<String>>,
    requests: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeAttach {
    fn start(address: &str, census: &GroupsResponse) -> Self {
        let listener = TcpListener::bind(address).expect("bind the fake attach");
        let address = listener.local_addr().unwrap();
        let body = Arc::new(Mutex::new(serde_json::to_string(census).unwrap()));
        let requests = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (body, requests, stop) = (body.clone(), requests.clone(), stop.clone());
            std::thread::spawn(move || {
                for stream in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    let Ok(stream) = stream else { continue };
                    let _ = serve(stream, &body, &requests);
                }
            })
        };
        Self {
            address,
            body,
            requests,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.address)
    }

    fn set(&self, census: &GroupsResponse) {
        *self.body.lock().unwrap() = serde_json::to_string(census).unwrap();
    }

    /// Closes the listening socket: from then on connections are refused.
    fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(self.address); // wakes accept()
        self.thread.take().unwrap().join().unwrap();
    }
}

impl Drop for FakeAttach {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            self.stop.store(true, Ordering::SeqCst);
            let _ = TcpStream::connect(self.address);
            let _ = thread.join();
        }
    }
}

fn serve(stream: TcpStream, body: &Mutex<String>, requests: &AtomicUsize) -> std::io::Result<()> {
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    let mut reader = BufReader::new(&stream);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header == "\r\n" {
            break;
        }
    }
    let (status, body) = if request_line.starts_with("GET /api/groups HTTP/1.1") {
        requests.fetch_add(1, Ordering::SeqCst);
        ("200 OK", body.lock().unwrap().clone())
    } else {
        ("404 Not Found", String::new())
    };
    let mut stream = &stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

const ROWS: u16 = 30;
const COLS: u16 = 100;

/// `ctxleak top` running on a pty of ROWS x COLS, its output fed to a terminal emulator.
struct TopOnPty {
    child: Child,
    master: File,
    screen: Arc<Mutex<vt100::Parser>>,
    reader: Option<JoinHandle<()>>,
}

impl TopOnPty {
    fn start(url: &str, env: &[(&str, &str)]) -> Self {
        let (mut master, mut slave) = (-1, -1);
        let size = libc::winsize {
            ws_row: ROWS,
            ws_col: COLS,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors; the null name and termios are allowed.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) = unsafe { (File::from_raw_fd(master), File::from_raw_fd(slave)) };
        let mut command = Command::new(env!("CARGO_BIN_EXE_ctxleak"));
        command
            .args(["top", "--url", url, "--interval", "200ms"])
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .env("RUST_BACKTRACE", "0")
            .env_remove(PANIC_ENV)
            .envs(env.iter().copied())
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec: a new session whose
        // controlling terminal is the pty, as a login shell would have.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start ctxleak top");
        drop(command); // closes this side's copies of the slave
        let screen = Arc::new(Mutex::new(vt100::Parser::new(
            ROWS.try_into().unwrap(),
            COLS.try_into().unwrap(),
            0,
        )));
        let reader = {
            let screen = screen.clone();
            let mut master = master.try_clone().unwrap();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                // Ends with EIO once the child has exited and the slave is closed.
                while let Ok(n @ 1..) = master.read(&mut buf) {
                    screen.lock().unwrap().process(&buf[..n]);
                }
            })
        };
        Self {
            child,
            master,
            screen,
            reader: Some(reader),
        }
    }

    fn contents(&self) -> String {
        self.screen.lock().unwrap().screen().contents()
    }

    fn alternate_screen(&self) -> bool {
        self.screen.lock().unwrap().screen().alternate_screen()
    }

    fn cursor_hidden(&self) -> bool {
        self.screen.lock().unwrap().screen().hide_cursor()
    }

    /// Whether the pty is in raw mode (no line editing, no echo), from its termios.
    fn raw_mode(&self) -> bool {
        // SAFETY: tcgetattr fills the zeroed struct; on a pty master it reads the slave's
        // settings, which the child changes.
        let mut termios: libc::termios = unsafe { std::mem::zeroed() };
        let rc = unsafe { libc::tcgetattr(self.master.as_raw_fd(), &mut termios) };
        assert_eq!(rc, 0, "tcgetattr: {}", std::io::Error::last_os_error());
        termios.c_lflag & (libc::ICANON | libc::ECHO) == 0
    }

    fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).unwrap();
        self.master.flush().unwrap();
    }

    /// Waits (up to 10 s) until the screen satisfies `check`, and returns it.
    fn wait_for(&mut self, what: &str, check: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let contents = self.contents();
            if check(&contents) {
                return contents;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!(
                    "ctxleak top exited ({status}) while waiting for {what}; screen:\n{contents}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; screen:\n{contents}"
            );
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    fn wait_for_text(&mut self, text: &str) -> String {
        self.wait_for(&format!("{text:?}"), |screen| screen.contains(text))
    }

    /// Waits (up to 10 s) for the child to exit, and for the last of its output.
    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("ctxleak top did not exit; screen:\n{}", self.contents());
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        self.reader.take().unwrap().join().unwrap();
        status
    }

    fn assert_restored(&self) {
        let contents = self.contents();
        assert!(
            !self.alternate_screen(),
            "still on the alternate screen:\n{contents}"
        );
        assert!(!self.cursor_hidden(), "the cursor is still hidden");
        assert!(!self.raw_mode(), "the terminal is still in raw mode");
    }
}

impl Drop for TopOnPty {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

const PANIC_ENV: &str = "CTXLEAK_TOP_TEST_PANIC";

/// The groups among `ids` in the order the screen shows them.
fn order_on_screen<'a>(screen: &str, ids: &[&'a str]) -> Vec<&'a str> {
    let lines: Vec<String> = screen.lines().map(str::to_owned).collect();
    let mut ids = ids.to_vec();
    ids.sort_by_key(|id| row_of(&lines, needle(id)));
    ids
}

/// Whether each id is on exactly one row of `screen`, and the rows come in this order.
fn rows_in_order(screen: &str, ids: &[&str]) -> bool {
    let lines: Vec<&str> = screen.lines().collect();
    let mut previous = None;
    for id in ids {
        let rows: Vec<usize> = (0..lines.len())
            .filter(|&y| lines[y].contains(needle(id)))
            .collect();
        match rows.as_slice() {
            [row] if previous.is_none_or(|p| p < *row) => previous = Some(*row),
            _ => return false,
        }
    }
    true
}

#[test]
fn end_to_end_live_view() {
    let server = FakeAttach::start("127.0.0.1:0", &census());
    let url = server.url();
    let mut top = TopOnPty::start(&url, &[]);

    // A frame can be caught mid-draw: wait until every row is shown once, in this order.
    let first = top.wait_for("the first census", |s| {
        s.contains("● connected")
            && s.contains("PID 4242")
            && rows_in_order(s, &["a1", "b2", "c3", "d4", "f6", "e5"])
    });
    assert!(top.alternate_screen(), "draws on the alternate screen");
    assert!(top.raw_mode(), "keys are read raw");
    assert!(first.contains(&format!("{url} every 200ms")), "{first}");
    assert_eq!(
        order_on_screen(&first, &["a1", "b2", "c3", "d4", "f6", "e5"]),
        ["a1", "b2", "c3", "d4", "f6", "e5"],
        "\n{first}"
    );

    // The census changes: a new group shows up and a count moves.
    let mut next = census();
    next.goroutines_user = 2999;
    next.groups[2].count = 1500;
    next.groups.push(group(
        "g7",
        7,
        "waiting",
        "chan receive",
        loc("main.(*Leaky).run", "/src/shop/cmd/shop-api/leaky.go", 21),
        None,
        1.0,
        (7, 7),
        0,
    ));
    server.set(&next);
    let updated = top.wait_for("the second census", |s| {
        s.contains(needle("g7")) && s.contains("goroutines: 2999 user")
    });
    assert!(updated.contains("7 groups, 2 suspects"), "{updated}");

    // s: sorted by count, c3 (1500) now first.
    top.send("s");
    let by_count = top.wait_for("sorted by count", |s| {
        s.contains("sort: count") && rows_in_order(s, &["c3", "a1", "b2", "d4", "f6", "g7", "e5"])
    });
    assert_eq!(
        order_on_screen(&by_count, &["a1", "b2", "c3", "d4", "e5", "f6", "g7"]),
        ["c3", "a1", "b2", "d4", "f6", "g7", "e5"],
        "\n{by_count}"
    );
    // The selection stayed on a1 (now second); ↓ then Enter: the details of b2, with its stack.
    top.send("\x1b[B");
    top.send("\r");
    let detail = top.wait_for_text("group b2");
    assert!(
        detail.contains("created by: github.com/acme/shop/internal/cart.NewCart (/src/shop/internal/cart/cart.go:40)"),
        "{detail}"
    );
    assert!(
        detail.contains("runtime.gopark (/usr/local/go/src/runtime/proc.go:435)"),
        "{detail}"
    );
    top.send("\r");
    top.wait_for("the detail pane to close", |s| !s.contains("group b2"));
    top.send("s");
    top.send("s");
    top.send("s");
    let view = top.wait_for_text("sort: rank");
    println!("ctxleak top at {COLS}x{ROWS}:\n{view}\n");

    // The server goes away: the view says so, keeps the last census and keeps running.
    server.stop();
    let down = top.wait_for_text("disconnected (connection refused)");
    assert!(
        down.contains("(stale)") && down.contains(needle("g7")),
        "{down}"
    );
    assert!(top.child.try_wait().unwrap().is_none(), "still running");
    println!(
        "after the server stopped:\n{}\n",
        down.lines().next().unwrap_or_default()
    );

    // It comes back on the same address: the view reconnects by itself.
    let server = FakeAttach::start(&url["http://".len()..], &census());
    top.wait_for("reconnection", |s| {
        s.contains("● connected") && !s.contains(needle("g7"))
    });
    assert!(server.requests.load(Ordering::SeqCst) > 0);

    top.send("q");
    let status = top.wait_exit();
    assert!(status.success(), "q exits with status 0, not {status}");
    top.assert_restored();
}

#[test]
fn end_to_end_never_connected_then_ctrl_c() {
    // A port nobody listens on: bind one, then close it.
    let address = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut top = TopOnPty::start(&format!("http://{address}"), &[]);
    let screen = top.wait_for_text("Cannot reach ctxleak at");
    assert!(screen.contains("connection refused"), "{screen}");
    assert!(screen.contains("retrying every 200ms"), "{screen}");
    top.send("\x03");
    let status = top.wait_exit();
    assert!(status.success(), "Ctrl-C exits with status 0, not {status}");
    top.assert_restored();
}

#[test]
fn end_to_end_esc_and_sigterm_restore_the_terminal() {
    let server = FakeAttach::start("127.0.0.1:0", &census());
    let mut top = TopOnPty::start(&server.url(), &[]);
    top.wait_for_text(needle("a1"));
    top.send("\x1b");
    assert!(top.wait_exit().success(), "Esc exits with status 0");
    top.assert_restored();

    let mut top = TopOnPty::start(&server.url(), &[]);
    top.wait_for_text(needle("a1"));
    // SAFETY: kill() on our own child's pid.
    assert_eq!(
        unsafe { libc::kill(top.child.id() as i32, libc::SIGTERM) },
        0
    );
    let status = top.wait_exit();
    assert!(status.success(), "SIGTERM exits cleanly, not {status}");
    top.assert_restored();
}

#[test]
fn end_to_end_panic_restores_the_terminal() {
    let server = FakeAttach::start("127.0.0.1:0", &census());
    let mut top = TopOnPty::start(&server.url(), &[(PANIC_ENV, "1")]);
    let status = top.wait_exit();
    assert_eq!(
        status.code(),
        Some(101),
        "a panic's exit status, not {status}"
    );
    assert!(status.signal().is_none());
    top.assert_restored();
    // The message is on the normal screen, readable.
    let screen = top.contents();
    assert!(screen.contains("panicked"), "{screen}");
    assert!(screen.contains(PANIC_ENV), "{screen}");
}
