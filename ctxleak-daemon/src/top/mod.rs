//! `ctxleak top`: a live, `top`-like terminal view of a running `ctxleak attach`'s goroutine
//! groups, leak suspects, stuck goroutines and context findings (unreleased contexts,
//! goroutines outliving theirs). It is only a client: it polls the attach's JSON API
//! ([`crate::api`]) and draws it, so it runs unprivileged, and over ssh.
//!
//! [`state`] holds what the view knows and how keys change it, [`view`] draws it into a
//! ratatui buffer (tested without a terminal) with [`format`]'s text; this module owns the
//! terminal: raw mode and the alternate screen, always restored on the
//! way out (quit, error, panic, SIGTERM/SIGHUP), and the poller thread.

pub mod client;
pub mod format;
pub mod state;
pub mod view;

use std::io::{IsTerminal as _, Stdout};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ratatui::Terminal;
use ratatui::backend::CrosstermBackend;
use ratatui::crossterm::event::{self, Event};
use ratatui::crossterm::{cursor, execute, terminal};

pub use client::{Endpoint, FetchError};
pub use state::{Action, App, Connection, Item, SortKey};

use crate::api::{GroupsResponse, LeaksResponse};

/// One poll: the census, and the findings beside it when the server has them (an older
/// server, or one answering without them, leaves the groups alone on screen).
type Poll = (Result<GroupsResponse, FetchError>, Option<LeaksResponse>);

/// Test hook, for the end-to-end test of the panic path only: when set, `ctxleak top` panics
/// right after it has drawn its first census. Debug builds only (the tests run those): a
/// release binary has no such behaviour.
#[cfg(debug_assertions)]
const PANIC_FOR_TEST_ENV: &str = "CTXLEAK_TOP_TEST_PANIC";

/// How long one poll may take (connecting, then each read) before it counts as failed.
const MIN_POLL_TIMEOUT: Duration = Duration::from_secs(2);

/// The shortest polling interval accepted.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);

#[derive(Debug, Clone)]
pub struct TopOptions {
    /// Base URL of a running `ctxleak attach` (its `--web.listen-address`).
    pub url: String,
    /// How often to poll it.
    pub interval: Duration,
    /// The process to show, when `url` is a `ctxleak daemon` watching several.
    pub pid: Option<u32>,
}

/// Parses `1s`, `500ms`, `2m`, `1.5s` or a bare number of seconds.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (like 1s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use ms, s, m or h)"
            ));
        }
    };
    let duration = Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))?;
    if duration < MIN_INTERVAL {
        return Err(format!("{text:?} is shorter than the minimum of 100ms"));
    }
    Ok(duration)
}

/// Runs the view until the user quits (or a signal asks it to stop).
pub fn run(options: TopOptions) -> anyhow::Result<()> {
    let endpoint = Endpoint::parse(&options.url)
        .map_err(anyhow::Error::msg)?
        .with_pid(options.pid);
    if !std::io::stdout().is_terminal() || !std::io::stdin().is_terminal() {
        anyhow::bail!("ctxleak top is interactive: run it in a terminal");
    }
    let color = std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let mut app =
        App::new(options.url.trim().trim_end_matches('/'), options.interval).with_color(color);
    let polls = spawn_poller(endpoint, options.interval);
    install_stop_signals();
    let mut terminal = TerminalGuard::enter().context("cannot set up the terminal")?;
    let result = event_loop(terminal.terminal(), &mut app, &polls);
    terminal.leave();
    result
}

fn event_loop(
    terminal: &mut Terminal<CrosstermBackend<Stdout>>,
    app: &mut App,
    polls: &Receiver<Poll>,
) -> anyhow::Result<()> {
    #[cfg(debug_assertions)]
    let panic_for_test = std::env::var_os(PANIC_FOR_TEST_ENV).is_some();
    let mut dirty = true;
    loop {
        if STOP.load(Ordering::Relaxed) {
            return Ok(());
        }
        loop {
            match polls.try_recv() {
                Ok((groups, leaks)) => {
                    let answered = groups.is_ok();
                    app.update(groups);
                    if answered {
                        app.update_leaks(leaks);
                    }
                    dirty = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Disconnected) => anyhow::bail!("the poller stopped"),
            }
        }
        if dirty {
            terminal.draw(|frame| app.draw(frame))?;
            dirty = false;
            #[cfg(debug_assertions)]
            if panic_for_test && app.groups().next().is_some() {
                panic!("{PANIC_FOR_TEST_ENV} is set: panicking with the view on screen");
            }
        }
        // Short, so a new census or a stop signal is seen soon; keys wake it at once.
        if event::poll(Duration::from_millis(50))? {
            match event::read()? {
                Event::Key(key) => {
                    if app.handle_key(key) == Action::Quit {
                        return Ok(());
                    }
                    dirty = true;
                }
                Event::Resize(..) => {
                    terminal.autoresize()?;
                    dirty = true;
                }
                _ => {}
            }
        }
    }
}

/// Polls the server every `interval` on its own thread, so a slow or vanished server never
/// freezes the keyboard. Stops when the view is gone.
fn spawn_poller(endpoint: Endpoint, interval: Duration) -> Receiver<Poll> {
    let (tx, rx) = mpsc::channel();
    let timeout = interval.max(MIN_POLL_TIMEOUT);
    std::thread::Builder::new()
        .name("ctxleak-top-poll".into())
        .spawn(move || {
            loop {
                let started = Instant::now();
                let groups = endpoint.fetch_groups(timeout);
                let leaks = groups
                    .is_ok()
                    .then(|| endpoint.fetch_leaks(timeout).ok())
                    .flatten();
                if tx.send((groups, leaks)).is_err() {
                    return;
                }
                std::thread::sleep(interval.saturating_sub(started.elapsed()));
            }
        })
        .expect("cannot start the poller thread");
    rx
}

/// Set by SIGTERM, SIGHUP and SIGQUIT (SIGINT too, though in raw mode Ctrl-C arrives as a key):
/// the loop then returns and the terminal is restored.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

fn install_stop_signals() {
    for signal in [libc::SIGTERM, libc::SIGHUP, libc::SIGQUIT, libc::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_stop_signal as *const () as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
}

/// Whether the terminal is in raw mode on the alternate screen: restoring is done once, by
/// whichever comes first of the normal exit, the guard's drop, and the panic hook.
static ACTIVE: AtomicBool = AtomicBool::new(false);

fn restore_terminal() {
    if ACTIVE.swap(false, Ordering::SeqCst) {
        // Best effort: there is nothing better to do if the terminal is gone.
        let _ = terminal::disable_raw_mode();
        let _ = execute!(
            std::io::stdout(),
            terminal::LeaveAlternateScreen,
            cursor::Show
        );
    }
}

/// Raw mode and the alternate screen for as long as it lives.
struct TerminalGuard {
    terminal: Terminal<CrosstermBackend<Stdout>>,
}

impl TerminalGuard {
    fn enter() -> anyhow::Result<Self> {
        static HOOK: std::sync::Once = std::sync::Once::new();
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                // First the terminal, so the panic message lands on a readable screen.
                restore_terminal();
                previous(info);
            }));
        });
        terminal::enable_raw_mode()?;
        ACTIVE.store(true, Ordering::SeqCst);
        let guard = |error: std::io::Error| {
            restore_terminal();
            error
        };
        // Cleared here rather than with `Terminal::clear`, which asks the terminal where its
        // cursor is: a round trip that is slow over ssh and that some terminals never answer.
        execute!(
            std::io::stdout(),
            terminal::EnterAlternateScreen,
            cursor::Hide,
            terminal::Clear(terminal::ClearType::All)
        )
        .map_err(guard)?;
        let terminal = Terminal::new(CrosstermBackend::new(std::io::stdout())).map_err(guard)?;
        Ok(Self { terminal })
    }

    fn terminal(&mut self) -> &mut Terminal<CrosstermBackend<Stdout>> {
        &mut self.terminal
    }

    fn leave(&mut self) {
        restore_terminal();
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        restore_terminal();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intervals() {
        assert_eq!(parse_interval("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_interval("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_interval("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_interval("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_interval("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_interval("10ms").is_err());
        assert!(parse_interval("1x").is_err());
        assert!(parse_interval("s").is_err());
        assert!(parse_interval("").is_err());
    }
}
