//! `cargo xtask chaos`: the daemon's reliability drill (issue #20). `ctxleak daemon` watches
//! a churn of short-lived Go processes for a while; the drill measures what it keeps
//! afterwards and how far its view trails the processes, and fails when a bound is broken.
//!
//! - The daemon runs as a deployment runs it (`ctxleak daemon`, default options), on a
//!   loopback port of its own, filtered (`--exe`) to this workspace's fixtures so that other
//!   Go programs on the host stay out of the numbers.
//! - `--processes` workers each run one process after another until `--duration` is over:
//!   the `chaos` fixture (fixtures/go/cmd/chaos) of every supported Go version, plain,
//!   stripped, PIE and, where built, cgo; each lives a random 0.2–20 s (log-uniform: many
//!   short, some long; from a seeded RNG, the seed printed) and ends by exit, SIGKILL, panic
//!   or exec (the `execs` fixture, which becomes a `chaos` process under the same PID). Each
//!   varies its goroutine count and stops at quiet checkpoints to print its own
//!   `runtime.NumGoroutine()`.
//! - Every [`POLL`] the drill reads the daemon's RSS, threads and file descriptors (/proc),
//!   `/metrics` and `/api/targets`, and compares them with the processes alive: targets and
//!   series of processes that are gone (and how long after their end they went), and at each
//!   checkpoint how long until the gauge equals the program's own count.
//! - [`SETTLE`] after the last process ended it takes the "after" sample, then sends SIGTERM
//!   and times the daemon's exit.
//!
//! Results go to target/bench/chaos.md and .json, as the benchmarks' do (bench/shared.rs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::bench::shared::{self, Running, http_get};
use crate::workspace::Workspace;
use crate::{fixtures, go, run, setup};

/// "Done when" of issue #20. Memory after the churn: at most this times the baseline...
const RSS_AFTER_FACTOR: f64 = 1.5;
/// ...plus this.
const RSS_AFTER_MARGIN_MB: f64 = 10.0;
/// An exited process's target and series, and a gauge at a quiet checkpoint, within this.
const MAX_LAG: Duration = Duration::from_secs(2);
/// The daemon's exit after SIGTERM within this.
const MAX_EXIT: Duration = Duration::from_secs(5);

/// How often the drill looks at the daemon.
const POLL: Duration = Duration::from_millis(250);
/// After the last process ended, the drill waits this long before the "after" sample.
const SETTLE: Duration = Duration::from_secs(30);
/// The daemon alone before the first process: its baseline is taken then.
const IDLE_BEFORE: Duration = Duration::from_secs(3);
/// How long each checkpoint of the `chaos` fixture holds still: longer than [`MAX_LAG`], so
/// that a gauge that takes longer is seen to be wrong, not missed.
const QUIET: Duration = Duration::from_secs(3);
/// Lifetimes, log-uniform between these.
const LIFE_MIN: Duration = Duration::from_millis(200);
const LIFE_MAX: Duration = Duration::from_secs(20);
/// Most blocked goroutines a process holds at once, one of these at random.
const MAX_GOROUTINES: [u32; 3] = [100, 500, 1500];
/// How long SIGTERM may take before the drill gives up on the daemon and kills it.
const EXIT_WAIT: Duration = Duration::from_secs(30);

/// The daemon's reliability drill (issue #20): `ctxleak daemon` watching a churn of
/// short-lived Go processes of every Go version and build (ending by exit, SIGKILL, panic
/// or exec); its memory, threads and descriptors, stale targets and series, and gauges at
/// quiet checkpoints against each program's own count. Writes target/bench/chaos.md and
/// .json; fails when a bound of the issue is broken.
#[derive(clap::Args)]
pub struct Options {
    /// How long processes keep being started (then the last ones end, and 30 s later
    /// the "after" sample is taken).
    #[arg(long, default_value = "5m")]
    duration: humantime::Duration,
    /// Processes alive at once.
    #[arg(long, default_value_t = 20)]
    processes: usize,
    /// Seed of the random lifetimes, endings and builds (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Loopback port for the daemon's endpoint.
    #[arg(long, default_value_t = 19790)]
    port: u16,
    /// Report the 2 s lag bounds without failing on them (CI): the daemon attaches
    /// probes on its event loop, and a kernel busy removing other probes can hold an
    /// attach for most of a second (measured up to 0.73 s), which the drill then sees as
    /// lag. The other bounds still fail the run.
    #[arg(long)]
    lag_not_enforced: bool,
}

/// How a process ends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Ending {
    Exit,
    Kill,
    Panic,
    Exec,
}

impl Ending {
    const ALL: [Self; 4] = [Self::Exit, Self::Kill, Self::Panic, Self::Exec];

    fn name(self) -> &'static str {
        match self {
            Self::Exit => "exit",
            Self::Kill => "SIGKILL",
            Self::Panic => "panic",
            Self::Exec => "exec",
        }
    }
}

/// One program run by one process: a PID and an executable (an exec starts another under
/// the same PID).
type Incarnation = (u32, String);

/// What the workers tell the drill.
enum Event {
    /// A process was started, to end this way.
    Process(Ending),
    Started(Incarnation),
    Checkpoint(Incarnation, u64),
    Ended(Incarnation, Ending),
    Failed(String),
}

/// A process's plan, drawn by its worker.
struct Plan {
    binary: PathBuf,
    /// The `execs` fixture of the same Go version, when it ends by exec.
    execs: Option<PathBuf>,
    life: Duration,
    /// With exec: how long the program it becomes lives (then exits).
    after_exec: Duration,
    ending: Ending,
    max_goroutines: u32,
    seed: u32,
}

/// The binaries the drill runs: `chaos` builds, and each version's `execs`.
struct Binaries {
    /// (chaos build, execs of its Go version).
    chaos: Vec<(PathBuf, PathBuf)>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<ExitCode> {
    setup::ensure(ws)?;
    let ctxleak = run::build_ctxleak(ws, false)?;
    let binaries = build_fixtures(ws)?;
    let seed = options.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |since| since.as_nanos() as u64)
    });
    println!(
        "chaos: seed {seed} (repeat with --seed {seed}); {} processes at once for {}, {} builds",
        options.processes,
        humantime::format_duration(*options.duration),
        binaries.chaos.len()
    );
    let out = ws.bench_out();
    std::fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    let address = format!("127.0.0.1:{}", options.port);
    let daemon = start_daemon(&ctxleak, &address, &ws.fixtures_out(), &out)?;
    let report = drill(&daemon, &address, &binaries, options, seed)?;
    let exit = stop_daemon(daemon)?;
    publish(&out, options, seed, &binaries, &report, exit)
}

/// Builds the `chaos` fixture (plain, stripped, PIE, cgo) and `execs` with every supported Go
/// version; the builds found.
fn build_fixtures(ws: &Workspace) -> Result<Binaries> {
    fixtures::build(
        ws,
        go::GO_VERSIONS,
        &["chaos".to_string(), "execs".to_string()],
        true,
    )?;
    let mut chaos = Vec::new();
    for version in go::GO_VERSIONS {
        let execs = ws.fixture(version, "execs");
        for name in ["chaos", "chaos-stripped", "chaos-pie", "chaos-cgo"] {
            let binary = ws.fixture(version, name);
            if binary.is_file() {
                chaos.push((binary, execs.clone()));
            }
        }
    }
    if chaos.is_empty() {
        bail!("no chaos fixture was built: run `cargo xtask fixtures`");
    }
    Ok(Binaries { chaos })
}

/// `ctxleak daemon` on `address`, watching the fixtures under `fixtures` only, its log in
/// out/chaos-daemon.log; returns once it serves /metrics.
fn start_daemon(ctxleak: &Path, address: &str, fixtures: &Path, out: &Path) -> Result<Running> {
    let log_path = out.join("chaos-daemon.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("cannot create {}", log_path.display()))?;
    let child = Command::new(ctxleak)
        .args(["daemon", "--web.listen-address", address, "--exe"])
        .arg(format!("{}/**", fixtures.display()))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .with_context(|| format!("cannot start {}", ctxleak.display()))?;
    let mut daemon = Running(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    while http_get(address, "/metrics").is_err() {
        if let Some(status) = daemon.0.try_wait()? {
            bail!(
                "ctxleak daemon exited ({status}) before serving {address}: see {} (is the port taken? give another with --port)",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            bail!(
                "ctxleak daemon did not serve {address} within 30 s: see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    println!(
        "chaos: ctxleak daemon (PID {}) serving http://{address}, log in {}",
        daemon.0.id(),
        log_path.display()
    );
    Ok(daemon)
}

/// SIGTERM, then the time until the daemon exited (None: not within [`EXIT_WAIT`]; it is
/// killed then).
fn stop_daemon(mut daemon: Running) -> Result<Option<Duration>> {
    let pid = daemon.0.id();
    let started = Instant::now();
    // SAFETY: kill(2) on our own child, which has not been waited for, so the PID is still its.
    if unsafe { libc::kill(pid as libc::pid_t, libc::SIGTERM) } != 0 {
        bail!(
            "cannot send SIGTERM to the daemon: {}",
            std::io::Error::last_os_error()
        );
    }
    while started.elapsed() < EXIT_WAIT {
        if daemon.0.try_wait()?.is_some() {
            return Ok(Some(started.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(None) // Dropping `daemon` kills it.
}

/// The daemon's resources at one moment, from /proc.
#[derive(Clone, Copy, Default)]
pub(crate) struct Resources {
    pub(crate) rss_kib: u64,
    threads: u64,
    fds: u64,
}

impl Resources {
    pub(crate) fn read(pid: u32) -> Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status: did the daemon exit?"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
                .with_context(|| format!("/proc/{pid}/status has no {name}"))
        };
        let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
            .with_context(|| format!("cannot list /proc/{pid}/fd"))?
            .count() as u64;
        Ok(Self {
            rss_kib: field("VmRSS:")?,
            threads: field("Threads:")?,
            fds,
        })
    }

    fn max(self, other: Self) -> Self {
        Self {
            rss_kib: self.rss_kib.max(other.rss_kib),
            threads: self.threads.max(other.threads),
            fds: self.fds.max(other.fds),
        }
    }

    fn json(self) -> Value {
        json!({ "rss_kib": self.rss_kib, "threads": self.threads, "fds": self.fds })
    }
}

/// What the daemon serves at one moment.
struct View {
    /// `/api/targets`.
    targets: BTreeSet<Incarnation>,
    /// Series at `/metrics`.
    series: usize,
    /// (pid, exe) of each `ctxleak_target_info` series.
    infos: BTreeSet<Incarnation>,
    /// PIDs that label any series.
    pids: BTreeSet<u32>,
    /// `ctxleak_goroutines{kind="user"}` by PID.
    user: HashMap<u32, f64>,
}

impl View {
    fn read(address: &str) -> Result<Self> {
        let metrics = http_get(address, "/metrics")?;
        let body = http_get(address, "/api/targets")?;
        let listed: Value = serde_json::from_str(&body)
            .with_context(|| format!("/api/targets is not JSON: {body:.200}"))?;
        let targets = listed
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| {
                        let pid = u32::try_from(entry["pid"].as_u64()?).ok()?;
                        Some((pid, entry["exe"].as_str()?.to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut view = Self {
            targets,
            series: 0,
            infos: BTreeSet::new(),
            pids: BTreeSet::new(),
            user: HashMap::new(),
        };
        for line in metrics.lines().filter(|line| !line.starts_with('#')) {
            let Some((series, value)) = line.rsplit_once(' ') else {
                continue;
            };
            view.series += 1;
            let Some(pid) = label(series, "pid").and_then(|pid| pid.parse().ok()) else {
                continue;
            };
            view.pids.insert(pid);
            if series.starts_with("ctxleak_target_info{")
                && let Some(exe) = label(series, "exe")
            {
                view.infos.insert((pid, exe.to_owned()));
            } else if series.starts_with("ctxleak_goroutines{")
                && label(series, "kind") == Some("user")
                && let Ok(value) = value.parse()
            {
                view.user.insert(pid, value);
            }
        }
        Ok(view)
    }
}

/// A label's value in a series as written (`name{a="1",b="x"}`); the drill's paths and PIDs
/// need no unescaping.
fn label<'s>(series: &'s str, name: &str) -> Option<&'s str> {
    let labels = series.split_once('{')?.1;
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let rest = &labels[start..];
    Some(&rest[..rest.find('"')?])
}

/// One process incarnation as the drill follows it.
struct Followed {
    ended: Option<(Instant, Ending)>,
    /// Until when, after its end, the daemon still listed it in /api/targets, and still
    /// exported its series.
    target_until: Option<Instant>,
    series_until: Option<Instant>,
    /// When it was first seen gone from both after its end.
    settled: bool,
}

/// A checkpoint waiting for the gauge.
struct Pending {
    incarnation: Incarnation,
    want: u64,
    at: Instant,
    last: Option<f64>,
}

/// What the drill measured.
#[derive(Default)]
struct Report {
    baseline: Resources,
    peak: Resources,
    after: Resources,
    series_baseline: usize,
    series_peak: usize,
    series_after: usize,
    targets_after: usize,
    started: BTreeMap<Ending, u64>,
    /// Most targets listed at once, and the processes alive then.
    most_listed: (usize, usize),
    /// Most targets listed at once whose process had ended.
    max_stale_targets: usize,
    max_target_lag: Duration,
    max_series_lag: Duration,
    /// Incarnations whose target or series outlived [`MAX_LAG`], by how it ended.
    late: BTreeMap<Ending, u64>,
    exact: u64,
    inexact: Vec<String>,
    max_gauge_lag: Duration,
    /// Checkpoints whose process ended before the gauge agreed or its quiet window passed.
    unjudged: u64,
    view_errors: u64,
    failures: Vec<String>,
    /// (seconds since the start, RSS KiB, threads, fds, series, targets, processes alive),
    /// once a second.
    timeline: Vec<[f64; 7]>,
    churn_seconds: f64,
}

/// Runs the churn against the daemon and follows it until [`SETTLE`] after the last process.
fn drill(
    daemon: &Running,
    address: &str,
    binaries: &Binaries,
    options: &Options,
    seed: u64,
) -> Result<Report> {
    let pid = daemon.0.id();
    std::thread::sleep(IDLE_BEFORE);
    let mut report = Report {
        baseline: Resources::read(pid)?,
        series_baseline: View::read(address)?.series,
        ..Report::default()
    };
    report.peak = report.baseline;
    let (events, received) = mpsc::channel();
    let start = Instant::now();
    let churn_until = start + *options.duration;
    let workers: Vec<_> = (0..options.processes)
        .map(|worker| {
            let events = events.clone();
            let chaos = binaries.chaos.clone();
            let mut rng = fastrand::Rng::with_seed(seed.wrapping_add(worker as u64));
            std::thread::spawn(move || {
                while Instant::now() < churn_until {
                    let plan = draw(&mut rng, &chaos);
                    if let Err(error) = run_one(&plan, &events) {
                        let _ = events.send(Event::Failed(format!(
                            "{}: {error:#}",
                            plan.binary.display()
                        )));
                    }
                }
            })
        })
        .collect();
    drop(events);

    let mut followed: HashMap<Incarnation, Followed> = HashMap::new();
    let mut pending: Vec<Pending> = Vec::new();
    let mut churn_over: Option<Instant> = None;
    let mut next_timeline = start;
    loop {
        let now = Instant::now();
        // Every event up to now, before the look: the view is compared with what was alive.
        loop {
            match received.try_recv() {
                Ok(Event::Started(incarnation)) => {
                    followed.insert(
                        incarnation,
                        Followed {
                            ended: None,
                            target_until: None,
                            series_until: None,
                            settled: false,
                        },
                    );
                }
                Ok(Event::Checkpoint(incarnation, want)) => pending.push(Pending {
                    incarnation,
                    want,
                    at: Instant::now(),
                    last: None,
                }),
                Ok(Event::Process(ending)) => *report.started.entry(ending).or_default() += 1,
                Ok(Event::Ended(incarnation, ending)) => {
                    if let Some(process) = followed.get_mut(&incarnation) {
                        process.ended = Some((Instant::now(), ending));
                    }
                }
                Ok(Event::Failed(error)) => {
                    if report.failures.len() < 10 {
                        println!("chaos: {error}");
                    }
                    report.failures.push(error);
                }
                Err(mpsc::TryRecvError::Empty) => break,
                Err(mpsc::TryRecvError::Disconnected) => {
                    churn_over.get_or_insert(now);
                    break;
                }
            }
        }
        let resources = Resources::read(pid)?;
        report.peak = report.peak.max(resources);
        let view = match View::read(address) {
            Ok(view) => view,
            Err(error) => {
                report.view_errors += 1;
                if report.view_errors == 1 {
                    println!("chaos: cannot read the daemon's view: {error:#}");
                }
                std::thread::sleep(POLL);
                continue;
            }
        };
        let looked = Instant::now();
        report.series_peak = report.series_peak.max(view.series);
        let alive: BTreeSet<Incarnation> = followed
            .iter()
            .filter(|(_, process)| process.ended.is_none())
            .map(|(incarnation, _)| incarnation.clone())
            .collect();
        let alive_pids: BTreeSet<u32> = alive.iter().map(|(pid, _)| *pid).collect();
        if view.targets.len() > report.most_listed.0 {
            report.most_listed = (view.targets.len(), alive.len());
        }
        let stale = view
            .targets
            .iter()
            .filter(|incarnation| !alive.contains(incarnation))
            .count();
        report.max_stale_targets = report.max_stale_targets.max(stale);
        for (incarnation, process) in &mut followed {
            let Some((ended, _)) = process.ended else {
                continue;
            };
            if process.settled {
                continue;
            }
            let listed = view.targets.contains(incarnation);
            let exported = view.infos.contains(incarnation)
                || (!alive_pids.contains(&incarnation.0) && view.pids.contains(&incarnation.0));
            if listed {
                process.target_until = Some(looked);
            }
            if exported {
                process.series_until = Some(looked);
            }
            if !listed && !exported {
                process.settled = true;
                let lag = |until: Option<Instant>| {
                    until.map_or(Duration::ZERO, |until| {
                        until.saturating_duration_since(ended)
                    })
                };
                report.max_target_lag = report.max_target_lag.max(lag(process.target_until));
                report.max_series_lag = report.max_series_lag.max(lag(process.series_until));
            }
        }
        pending.retain_mut(|checkpoint| {
            let value = view.user.get(&checkpoint.incarnation.0).copied();
            if value == Some(checkpoint.want as f64) {
                report.exact += 1;
                report.max_gauge_lag = report.max_gauge_lag.max(looked - checkpoint.at);
                return false;
            }
            checkpoint.last = value.or(checkpoint.last);
            let gone = followed
                .get(&checkpoint.incarnation)
                .is_none_or(|process| process.ended.is_some());
            if gone {
                report.unjudged += 1;
                return false;
            }
            // Judged within the quiet window only, less one look: after it the count moves.
            if looked - checkpoint.at >= QUIET - POLL {
                report.inexact.push(format!(
                    "PID {} ({}): runtime.NumGoroutine() = {}, gauge {} after {:.1} s",
                    checkpoint.incarnation.0,
                    checkpoint.incarnation.1,
                    checkpoint.want,
                    checkpoint
                        .last
                        .map_or_else(|| "absent".to_owned(), |v| v.to_string()),
                    (looked - checkpoint.at).as_secs_f64()
                ));
                return false;
            }
            true
        });
        if looked >= next_timeline {
            next_timeline += Duration::from_secs(1);
            report.timeline.push([
                (looked - start).as_secs_f64().round(),
                resources.rss_kib as f64,
                resources.threads as f64,
                resources.fds as f64,
                view.series as f64,
                view.targets.len() as f64,
                alive.len() as f64,
            ]);
            if report.timeline.len().is_multiple_of(30) {
                println!(
                    "chaos: {:>4.0} s: RSS {:.1} MB, {} threads, {} fds, {} series, {} targets listed, {} processes alive",
                    (looked - start).as_secs_f64(),
                    resources.rss_kib as f64 / 1024.0,
                    resources.threads,
                    resources.fds,
                    view.series,
                    view.targets.len(),
                    alive.len()
                );
            }
        }
        if let Some(over) = churn_over
            && looked - over >= SETTLE
        {
            report.after = resources;
            report.series_after = view.series;
            report.targets_after = view.targets.len();
            report.churn_seconds = (over - start).as_secs_f64();
            break;
        }
        std::thread::sleep(POLL.saturating_sub(looked.elapsed()));
    }
    for worker in workers {
        let _ = worker.join();
    }
    // Those never seen gone: their lag is the whole wait.
    for process in followed.values() {
        if let (Some((ended, ending)), false) = (process.ended, process.settled) {
            let lag = |until: Option<Instant>| {
                until.map_or(Duration::ZERO, |until| {
                    until.saturating_duration_since(ended)
                })
            };
            report.max_target_lag = report.max_target_lag.max(lag(process.target_until));
            report.max_series_lag = report.max_series_lag.max(lag(process.series_until));
            *report.late.entry(ending).or_default() += 1;
        }
    }
    for process in followed.values().filter(|process| process.settled) {
        if let Some((ended, ending)) = process.ended {
            let late = |until: Option<Instant>| {
                until.is_some_and(|until| until.saturating_duration_since(ended) > MAX_LAG)
            };
            if late(process.target_until) || late(process.series_until) {
                *report.late.entry(ending).or_default() += 1;
            }
        }
    }
    report.unjudged += pending.len() as u64;
    Ok(report)
}

/// A random plan for the next process.
fn draw(rng: &mut fastrand::Rng, chaos: &[(PathBuf, PathBuf)]) -> Plan {
    let (binary, execs) = chaos[rng.usize(..chaos.len())].clone();
    let log_uniform = |rng: &mut fastrand::Rng, min: Duration, max: Duration| {
        let (min, max) = (min.as_secs_f64().ln(), max.as_secs_f64().ln());
        Duration::from_secs_f64((min + rng.f64() * (max - min)).exp())
    };
    let ending = Ending::ALL[rng.usize(..Ending::ALL.len())];
    Plan {
        life: log_uniform(rng, LIFE_MIN, LIFE_MAX),
        after_exec: log_uniform(rng, LIFE_MIN, LIFE_MAX / 4),
        execs: (ending == Ending::Exec).then_some(execs),
        binary,
        ending,
        max_goroutines: MAX_GOROUTINES[rng.usize(..MAX_GOROUTINES.len())],
        seed: rng.u32(..),
    }
}

/// Runs one process to its end, telling the drill of its start, checkpoints and end.
fn run_one(plan: &Plan, events: &mpsc::Sender<Event>) -> Result<()> {
    let chaos_args = |life: Duration, end: &str| -> Vec<String> {
        vec![
            "-live".into(),
            format!("{}ms", life.as_millis()),
            "-end".into(),
            end.into(),
            "-max".into(),
            plan.max_goroutines.to_string(),
            "-quiet".into(),
            format!("{}ms", QUIET.as_millis()),
            "-seed".into(),
            plan.seed.to_string(),
        ]
    };
    let mut cmd = match (&plan.execs, plan.ending) {
        (Some(execs), _) => {
            let mut cmd = Command::new(execs);
            cmd.arg(&plan.binary)
                .args(chaos_args(plan.after_exec, "exit"));
            cmd
        }
        (None, ending) => {
            let end = match ending {
                Ending::Exit => "exit",
                Ending::Panic => "panic",
                Ending::Kill | Ending::Exec => "wait",
            };
            let mut cmd = Command::new(&plan.binary);
            cmd.args(chaos_args(plan.life, end));
            cmd
        }
    };
    let program = cmd.get_program().to_owned();
    let mut child = Running(
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .with_context(|| format!("cannot start {}", program.to_string_lossy()))?,
    );
    let started = Instant::now();
    let pid = child.0.id();
    let mut current: Incarnation = (pid, exe_name(Path::new(&program))?);
    let _ = events.send(Event::Process(plan.ending));
    let _ = events.send(Event::Started(current.clone()));
    let lines = crate::process::lines_of(&mut child.0)?;
    let deadline = (plan.ending != Ending::Exit && plan.ending != Ending::Panic)
        .then_some(started + plan.life);
    let mut deadline = deadline;
    loop {
        let timeout = deadline.map_or(Duration::from_secs(3600), |at| {
            at.saturating_duration_since(Instant::now())
        });
        match lines.recv_timeout(timeout) {
            Ok(line) => {
                if let Some(count) = line.strip_prefix("checkpoint goroutines ") {
                    let count = count
                        .trim()
                        .parse()
                        .with_context(|| format!("the chaos fixture said {line:?}"))?;
                    let _ = events.send(Event::Checkpoint(current.clone(), count));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                deadline = None;
                if plan.ending == Ending::Kill {
                    child.0.kill().context("cannot kill the process")?;
                    child.0.wait()?;
                    let _ = events.send(Event::Ended(current, Ending::Kill));
                    return Ok(());
                }
                // Exec: the program it becomes is the chaos build, under the same PID.
                writeln!(child.0.stdin.as_mut().context("no stdin")?, "exec")
                    .context("the execs fixture exited before its exec")?;
                let _ = events.send(Event::Ended(current, Ending::Exec));
                current = (pid, exe_name(&plan.binary)?);
                let _ = events.send(Event::Started(current.clone()));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.0.wait()?;
                let ending = match plan.ending {
                    Ending::Panic => Ending::Panic,
                    _ => Ending::Exit,
                };
                let _ = events.send(Event::Ended(current, ending));
                let expected = if ending == Ending::Panic { 2 } else { 0 };
                if status.code() != Some(expected) {
                    bail!("ended with {status}, not status {expected}");
                }
                return Ok(());
            }
        }
    }
}

/// The executable's path as the daemon names it (the target of /proc/PID/exe).
fn exe_name(path: &Path) -> Result<String> {
    Ok(std::fs::canonicalize(path)
        .with_context(|| format!("cannot resolve {}", path.display()))?
        .display()
        .to_string())
}

/// The bounds the run broke, one line each, and those it broke that are only reported.
fn broken(
    report: &Report,
    exit: Option<Duration>,
    lag_not_enforced: bool,
) -> (Vec<String>, Vec<String>) {
    let mut broken = Vec::new();
    let mut reported = Vec::new();
    let mb = |kib: u64| kib as f64 / 1024.0;
    let allowed = mb(report.baseline.rss_kib) * RSS_AFTER_FACTOR + RSS_AFTER_MARGIN_MB;
    if mb(report.after.rss_kib) > allowed {
        broken.push(format!(
            "RSS after the churn {:.1} MB > {RSS_AFTER_FACTOR}× the baseline {:.1} MB + {RSS_AFTER_MARGIN_MB} MB = {allowed:.1} MB",
            mb(report.after.rss_kib),
            mb(report.baseline.rss_kib)
        ));
    }
    for (what, lag) in [
        ("target", report.max_target_lag),
        ("series", report.max_series_lag),
        ("gauge at a checkpoint", report.max_gauge_lag),
    ] {
        if lag > MAX_LAG {
            if lag_not_enforced {
                &mut reported
            } else {
                &mut broken
            }
            .push(format!(
                "a {what} trailed by {:.1} s > {} s",
                lag.as_secs_f64(),
                MAX_LAG.as_secs()
            ));
        }
    }
    if !report.inexact.is_empty() {
        broken.push(format!(
            "{} checkpoints inexact, e.g. {}",
            report.inexact.len(),
            report.inexact[0]
        ));
    }
    match exit {
        Some(took) if took <= MAX_EXIT => {}
        Some(took) => broken.push(format!(
            "the daemon took {:.1} s to exit after SIGTERM > {} s",
            took.as_secs_f64(),
            MAX_EXIT.as_secs()
        )),
        None => broken.push(format!(
            "the daemon did not exit within {} s of SIGTERM",
            EXIT_WAIT.as_secs()
        )),
    }
    if !report.failures.is_empty() {
        broken.push(format!(
            "{} processes did not run as planned, e.g. {}",
            report.failures.len(),
            report.failures[0]
        ));
    }
    if report.view_errors > 0 {
        broken.push(format!(
            "the daemon did not answer /metrics or /api/targets {} times",
            report.view_errors
        ));
    }
    (broken, reported)
}

fn publish(
    out: &Path,
    options: &Options,
    seed: u64,
    binaries: &Binaries,
    report: &Report,
    exit: Option<Duration>,
) -> Result<ExitCode> {
    let (broken, reported) = broken(report, exit, options.lag_not_enforced);
    let mb = |kib: u64| format!("{:.1} MB", kib as f64 / 1024.0);
    let secs = |lag: Duration| format!("{:.2} s", lag.as_secs_f64());
    let started: u64 = report.started.values().sum();
    let endings = Ending::ALL
        .iter()
        .map(|ending| {
            format!(
                "{} {}",
                report.started.get(ending).copied().unwrap_or(0),
                ending.name()
            )
        })
        .collect::<Vec<_>>()
        .join(", ");
    let late = report
        .late
        .iter()
        .map(|(ending, n)| format!("{n} ended by {}", ending.name()))
        .collect::<Vec<_>>()
        .join(", ");
    let checkpoints = report.exact + report.inexact.len() as u64;
    let exit_text = exit.map_or_else(
        || format!("not within {} s", EXIT_WAIT.as_secs()),
        |took| format!("{:.2} s", took.as_secs_f64()),
    );
    let kernel = shared::kernel();
    let mut md = String::new();
    writeln!(md, "# `ctxleak daemon` under process churn (chaos drill)\n")?;
    writeln!(
        md,
        "`cargo xtask chaos --duration {} --processes {} --seed {seed}`; kernel {kernel}. \
         {started} processes ({endings}) over {:.0} s, {} at once, from {} builds of the \
         `chaos` fixture (Go {}; plain, stripped, PIE, cgo), each living 0.2–20 s \
         (log-uniform); exec: `execs` becoming `chaos`. The daemon looked at every {} ms; \
         \"after\" is {} s after the last process ended.\n",
        humantime::format_duration(*options.duration),
        options.processes,
        report.churn_seconds,
        options.processes,
        binaries.chaos.len(),
        go::GO_VERSIONS.join(", "),
        POLL.as_millis(),
        SETTLE.as_secs(),
    )?;
    writeln!(md, "| daemon | baseline | peak | after | bound (after) |")?;
    writeln!(md, "|---|---|---|---|---|")?;
    writeln!(
        md,
        "| RSS | {} | {} | {} | ≤ {RSS_AFTER_FACTOR}× baseline + {RSS_AFTER_MARGIN_MB} MB = {:.1} MB |",
        mb(report.baseline.rss_kib),
        mb(report.peak.rss_kib),
        mb(report.after.rss_kib),
        report.baseline.rss_kib as f64 / 1024.0 * RSS_AFTER_FACTOR + RSS_AFTER_MARGIN_MB,
    )?;
    writeln!(
        md,
        "| threads | {} | {} | {} | |",
        report.baseline.threads, report.peak.threads, report.after.threads
    )?;
    writeln!(
        md,
        "| file descriptors | {} | {} | {} | |",
        report.baseline.fds, report.peak.fds, report.after.fds
    )?;
    writeln!(
        md,
        "| /metrics series | {} | {} | {} | |",
        report.series_baseline, report.series_peak, report.series_after
    )?;
    writeln!(md, "\n| view of the processes | measured | bound |")?;
    writeln!(md, "|---|---|---|")?;
    writeln!(
        md,
        "| most targets listed at once (processes alive then) | {} ({}) | |",
        report.most_listed.0, report.most_listed.1
    )?;
    writeln!(
        md,
        "| most targets listed whose process had ended | {} | |",
        report.max_stale_targets
    )?;
    writeln!(
        md,
        "| longest an ended process stayed in /api/targets | {} | ≤ {} s |",
        secs(report.max_target_lag),
        MAX_LAG.as_secs()
    )?;
    writeln!(
        md,
        "| longest its series stayed at /metrics | {} | ≤ {} s |",
        secs(report.max_series_lag),
        MAX_LAG.as_secs()
    )?;
    writeln!(
        md,
        "| processes that stayed beyond the bound | {} | 0 |",
        if late.is_empty() { "0".into() } else { late }
    )?;
    writeln!(
        md,
        "| targets listed after the churn | {} | 0 |",
        report.targets_after
    )?;
    writeln!(
        md,
        "| checkpoints exact (gauge = the program's `runtime.NumGoroutine()`) | {}/{checkpoints} ({} cut short by the process's end) | all |",
        report.exact, report.unjudged
    )?;
    writeln!(
        md,
        "| longest until the gauge agreed at a checkpoint | {} | ≤ {} s |",
        secs(report.max_gauge_lag),
        MAX_LAG.as_secs()
    )?;
    writeln!(
        md,
        "| daemon exit after SIGTERM | {exit_text} | ≤ {} s |",
        MAX_EXIT.as_secs()
    )?;
    if broken.is_empty() && reported.is_empty() {
        writeln!(md, "\nEvery bound held.")?;
    }
    if !broken.is_empty() {
        writeln!(md, "\nBounds broken:\n")?;
        for line in &broken {
            writeln!(md, "- {line}")?;
        }
    }
    if !reported.is_empty() {
        writeln!(
            md,
            "\nLag bounds broken (reported only, `--lag-not-enforced`):\n"
        )?;
        for line in &reported {
            writeln!(md, "- {line}")?;
        }
    }
    let json = json!({
        "kernel": kernel,
        "seed": seed,
        "duration_s": options.duration.as_secs_f64(),
        "concurrency": options.processes,
        "churn_seconds": report.churn_seconds,
        "builds": binaries.chaos.iter().map(|(b, _)| b.display().to_string()).collect::<Vec<_>>(),
        "processes": report.started.iter().map(|(e, n)| (e.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "baseline": report.baseline.json(),
        "peak": report.peak.json(),
        "after": report.after.json(),
        "series": { "baseline": report.series_baseline, "peak": report.series_peak, "after": report.series_after },
        "most_listed": { "targets": report.most_listed.0, "alive": report.most_listed.1 },
        "max_stale_targets": report.max_stale_targets,
        "max_target_lag_s": report.max_target_lag.as_secs_f64(),
        "max_series_lag_s": report.max_series_lag.as_secs_f64(),
        "late": report.late.iter().map(|(e, n)| (e.name().to_owned(), json!(n))).collect::<serde_json::Map<_, _>>(),
        "targets_after": report.targets_after,
        "checkpoints": { "exact": report.exact, "inexact": report.inexact, "unjudged": report.unjudged },
        "max_gauge_lag_s": report.max_gauge_lag.as_secs_f64(),
        "exit_after_sigterm_s": exit.map(|took| took.as_secs_f64()),
        "process_failures": report.failures,
        "view_errors": report.view_errors,
        "bounds": {
            "rss_after_factor": RSS_AFTER_FACTOR,
            "rss_after_margin_mb": RSS_AFTER_MARGIN_MB,
            "max_lag_s": MAX_LAG.as_secs_f64(),
            "max_exit_s": MAX_EXIT.as_secs_f64(),
        },
        "broken": broken,
        "broken_not_enforced": reported,
        "timeline_columns": ["s", "rss_kib", "threads", "fds", "series", "targets", "alive"],
        "timeline": report.timeline,
    });
    shared::publish(out, "chaos", &md, &json)?;
    for line in &reported {
        eprintln!("warning: the chaos drill broke a lag bound of issue #20 (not enforced): {line}");
    }
    if broken.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!(
            "error: the chaos drill broke {} bound(s) of issue #20: {}",
            broken.len(),
            broken.join("; ")
        );
        Ok(ExitCode::FAILURE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_read_from_series() {
        let series = r#"ctxleak_target_info{pid="42",exe="/srv/app",go_version="go1.27.3"}"#;
        assert_eq!(label(series, "pid"), Some("42"));
        assert_eq!(label(series, "exe"), Some("/srv/app"));
        assert_eq!(label(series, "container_id"), None);
        assert_eq!(label("ctxleak_targets", "pid"), None);
    }
}
