//! `ctxleak daemon` under process churn (issue #7): 200 short-lived Go processes, a few at a
//! time, from three Go versions (three executables), each with blocked goroutines and
//! contexts, some never cancelled. The daemon attaches to them as they exec and forgets them as
//! they exit: every process that lives long enough is attached, quickly, every attached one is
//! detached as it exits, the daemon logs nothing else about them than its routine lines, by the
//! end no target and no executable is left, the /metrics series are back to the count before
//! the run and never outgrew the processes alive at once, the daemon is still running, and its
//! memory and file descriptors are back near where they started. The measured numbers are
//! printed; the bounds below are calibrated from them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use crate::common;
use crate::common::{Ctxleak, fixtures_dir, go_versions, sample, series_count, vm_rss_kib};

/// Processes in the measured run.
const PROCESSES: usize = 200;
/// Processes alive at once.
const CONCURRENCY: usize = 5;
/// Processes run before the baseline is taken: the same concurrency, so the allocator's
/// arenas, the daemon's tables and its thread pool reach their working size first.
const WARM_UP: usize = 3 * CONCURRENCY;
/// Lifetimes (`-live`), in turn. `0ms` exits as soon as it has set up its goroutines and
/// contexts (about 50 ms after its spawn here): the daemon must cope with processes exiting
/// before or while it attaches, which is normal. The longer ones leave it time to attach.
const LIFETIMES_MS: [u64; 5] = [0, 200, 1000, 1500, 2500];
/// Every process that lives this long or longer must have been attached. Measured on 2 cores
/// (debug build of the daemon, other builds running beside; printed as `attach latency`, the
/// `attached` line's time minus the spawn's), over twelve runs: median 7.0 to 8.2 ms, p95 94
/// to 175 ms, max 279 to 869 ms (the max is a process queued behind others' attaches). 1.5 s is
/// 1.7 times the worst max seen and 4 times the usual one, so the 1500 and 2500 ms processes
/// (80 of the 200) must all be attached; the 200 ms ones usually are, but not always (a p95 of
/// up to 175 ms), so they are not required to be.
const ATTACH_EXPECTED: Duration = Duration::from_millis(1500);
/// The median attach latency may not exceed this. Measured 7.0 to 8.2 ms (see above), and
/// 243 ms with an earlier build of the daemon (whose attaches held up its whole loop): 100 ms
/// tells the two apart with a wide margin for loaded machines.
const MEDIAN_ATTACH_LATENCY_MS: f64 = 100.0;
/// Every attached process must be detached this soon after the test reaped it. Measured (printed
/// as `detach latency`): at most 166 ms after the reap over twelve runs, usually before it (the
/// test looks every 50 ms); an earlier daemon, whose loop was held up by attaches, took up to
/// 1.8 s. 1 s is 6 times the measured worst.
const DETACH_LATENCY_MS: f64 = 1000.0;
/// Series one target may add to /metrics. Measured (printed as `per target at most`, the
/// series above the baseline over ctxleak_targets): 13 to 16 over twelve runs. Twice that
/// leaves room for more context-site gauges and new per-process metrics, while series left
/// behind by exited targets add up far past it within a few processes.
const SERIES_PER_TARGET: usize = 30;
/// How far the daemon's RSS may end above its baseline. Measured (printed as `end: ... RSS`):
/// +0 to +652 KiB over twelve runs with today's daemon, +1376 KiB with an earlier build; the
/// warm-up already took the allocator to the working size of CONCURRENCY targets. 4 MiB is
/// three times the largest growth seen; a leak of 20 KiB per process (what one target's
/// goroutine and context tables cost at least) over 200 processes, or of one executable's
/// parsed tables (MiBs) per process, exceeds it.
const RSS_MARGIN_KIB: u64 = 4 * 1024;
/// Generous bounds on waiting for the daemon to settle (it normally takes a second or two).
const SETTLE: Duration = Duration::from_secs(60);

/// The one place that knows how the daemon is started: watching only the `shortlived`
/// fixtures, so that Go processes of other tests running beside this one do not count, and
/// logging at debug level what its discovery decides, so that the processes it did not attach
/// to are accounted for.
fn start_daemon() -> Ctxleak {
    let fixtures = fixtures_dir()
        .canonicalize()
        .expect("canonical fixtures folder");
    // `*` stays within one folder: <fixtures>/go<version>/shortlived and nothing else.
    let exe = format!("{}/*/shortlived", fixtures.display());
    Ctxleak::daemon_logging(
        "ctxleak_daemon::daemon=debug,info",
        &["--exe", &exe, "--census-interval", "1s"],
    )
}

/// Seconds since the epoch of a log line's RFC 3339 UTC timestamp
/// (`2026-11-25T13:02:09.535801Z`), its first word.
fn log_time(line: &str) -> Option<f64> {
    let stamp = line.split_whitespace().next()?.strip_suffix('Z')?;
    let (date, time) = stamp.split_once('T')?;
    let mut ymd = date.splitn(3, '-').map(|n| n.parse::<i64>().ok());
    let (y, m, d) = (ymd.next()??, ymd.next()??, ymd.next()??);
    let mut hms = time.splitn(3, ':');
    let h: f64 = hms.next()?.parse().ok()?;
    let min: f64 = hms.next()?.parse().ok()?;
    let s: f64 = hms.next()?.parse().ok()?;
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's days_from_civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (m + if m > 2 { -3 } else { 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days as f64 * 86_400.0 + h * 3600.0 + min * 60.0 + s)
}

fn epoch_seconds(time: SystemTime) -> f64 {
    time.duration_since(SystemTime::UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

/// What the daemon said about processes, from its log.
#[derive(Default)]
struct Log {
    /// PID -> when the daemon logged `attached`.
    attached: BTreeMap<u32, f64>,
    /// PID -> when the daemon logged `detached`.
    detached: BTreeMap<u32, f64>,
    /// `exited (or exec'd) before ctxleak could watch it` (as `Watcher::watch` says it: it
    /// exited while the daemon read or attached to it), `exited before ctxleak could read
    /// it` or `cannot read the executable` (it exited before the daemon could read it).
    too_short: BTreeSet<u32>,
    /// `the census found goroutines the probe events missed` lines, by PID: a known, counted
    /// and repaired miss not explained yet (see below), tolerated at a low rate.
    missed: BTreeMap<u32, Vec<String>>,
    /// Any other line about one of the fixtures' PIDs that is neither of the above (a
    /// `not watched` warning, `cannot read the executable`, ...), kept whole.
    other: BTreeMap<u32, Vec<String>>,
}

impl Log {
    /// Reads the log lines that arrived so far.
    fn read(&mut self, daemon: &mut Ctxleak) {
        while let Some(line) = daemon.stderr.next(Duration::ZERO) {
            let words: Vec<&str> = line
                .split_whitespace()
                .map(|w| w.trim_end_matches(':'))
                .collect();
            let Some(pid) = words.iter().find_map(|w| {
                w.strip_prefix("pid=")
                    .and_then(|p| p.trim_matches('"').parse::<u32>().ok())
            }) else {
                continue;
            };
            // Lines about processes the filters do not select are the rest of the machine's;
            // the fixtures do leave contexts unreleased, which the daemon reports. A process
            // that waits for its executable's probes gets its `attached` (or exited) line
            // when they are in place.
            if line.contains("not selected by the filters")
                || line.contains("context leak")
                || line.contains("waiting for its executable's probes")
            {
                continue;
            }
            if words.contains(&"attached") {
                self.attached
                    .insert(pid, log_time(&line).expect("timestamp of the log line"));
            } else if words.contains(&"detached") {
                self.detached
                    .insert(pid, log_time(&line).expect("timestamp of the log line"));
            } else if line.contains("exited (or exec'd) before ctxleak could watch it")
                || line.contains("exited before ctxleak could read it")
                // /proc/PID/exe unreadable: "most often it exited meanwhile" (the daemon).
                || line.contains("cannot read the executable")
            {
                self.too_short.insert(pid);
            } else if line.contains("the census found goroutines the probe events missed") {
                self.missed.entry(pid).or_default().push(line.clone());
            } else {
                self.other.entry(pid).or_default().push(line.clone());
            }
        }
    }
}

/// One short-lived process.
struct Run {
    child: Child,
    pid: u32,
    started: Instant,
    /// Just before its spawn, for comparing with the daemon's log timestamps.
    spawned_at: SystemTime,
}

/// Census disagreements tolerated over the whole run (see where it is checked).
const MAX_MISSED: usize = 3;

/// One process that exited.
struct Finished {
    pid: u32,
    /// How long it lived as we saw it (to 50 ms: the loop's pace).
    lived: Duration,
    spawned_at: SystemTime,
    /// When we saw it exited (reaped it): at most 50 ms after its exit.
    reaped_at: SystemTime,
}

/// What the sampling of /metrics saw during a run.
#[derive(Default)]
struct Samples {
    scrapes: usize,
    max_series: usize,
    max_targets: f64,
    max_series_per_target: f64,
    /// Scrapes whose series exceeded what their targets may hold, with the numbers.
    violations: Vec<String>,
}

struct Churn {
    daemon: Ctxleak,
    log: Log,
    binaries: Vec<PathBuf>,
    started: usize,
    finished: Vec<Finished>,
    failures: Vec<String>,
}

impl Churn {
    /// Runs `count` processes, CONCURRENCY at a time, scraping /metrics between starts and
    /// exits; `baseline` is the series count with no target (None during the warm-up).
    fn run(&mut self, count: usize, baseline: Option<usize>) -> Samples {
        let mut samples = Samples::default();
        let mut running: Vec<Run> = Vec::new();
        let mut left = count;
        while left > 0 || !running.is_empty() {
            let mut i = 0;
            while i < running.len() {
                match running[i].child.try_wait() {
                    Ok(Some(status)) => {
                        let run = running.swap_remove(i);
                        if !status.success() {
                            self.failures
                                .push(format!("fixture PID {} exited with {status}", run.pid));
                        }
                        self.finished.push(Finished {
                            pid: run.pid,
                            lived: run.started.elapsed(),
                            spawned_at: run.spawned_at,
                            reaped_at: SystemTime::now(),
                        });
                    }
                    Ok(None) => i += 1,
                    Err(e) => panic!("cannot wait for a fixture: {e}"),
                }
            }
            while left > 0 && running.len() < CONCURRENCY {
                let n = self.started;
                let binary = &self.binaries[n % self.binaries.len()];
                let live = LIFETIMES_MS[n % LIFETIMES_MS.len()];
                let spawned_at = SystemTime::now();
                let child = Command::new(binary)
                    .args(["-live", &format!("{live}ms")])
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::inherit())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
                running.push(Run {
                    pid: child.id(),
                    child,
                    started: Instant::now(),
                    spawned_at,
                });
                self.started += 1;
                left -= 1;
            }
            self.log.read(&mut self.daemon);
            self.sample(&mut samples, baseline);
            // The loop's pace: a scrape and a look at the children every 50 ms.
            std::thread::sleep(Duration::from_millis(50));
        }
        samples
    }

    fn sample(&mut self, samples: &mut Samples, baseline: Option<usize>) {
        if let Ok(Some(status)) = self.daemon.child.try_wait() {
            panic!(
                "the daemon exited ({status}) during the run: {:?}",
                self.daemon.stderr.rest(Duration::from_secs(1))
            );
        }
        let metrics = self.daemon.scrape();
        let series = series_count(&metrics);
        let targets = sample(&metrics, "ctxleak_targets").unwrap_or(f64::NAN);
        samples.scrapes += 1;
        samples.max_series = samples.max_series.max(series);
        samples.max_targets = samples.max_targets.max(targets);
        if let Some(baseline) = baseline {
            let extra = series.saturating_sub(baseline);
            if targets > 0.0 {
                samples.max_series_per_target =
                    samples.max_series_per_target.max(extra as f64 / targets);
            }
            // One target of slack: a scrape may fall between a target's removal from the
            // count and the removal of its series.
            if extra as f64 > SERIES_PER_TARGET as f64 * (targets + 1.0) {
                samples.violations.push(format!(
                    "{series} series ({extra} above the baseline {baseline}) with ctxleak_targets = {targets}"
                ));
            }
        }
    }

    /// Polls /metrics until `check` holds; returns the page and how long that took.
    fn settle(&self, what: &str, check: impl Fn(&str) -> bool) -> (String, Duration) {
        let start = Instant::now();
        loop {
            let metrics = self.daemon.scrape();
            if check(&metrics) {
                return (metrics, start.elapsed());
            }
            assert!(
                start.elapsed() < SETTLE,
                "{what}: not after {SETTLE:?}; /metrics:\n{metrics}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Until no target and no executable is left.
    fn idle(&self, when: &str) -> (String, Duration) {
        self.settle(
            &format!("{when}: ctxleak_targets and ctxleak_attached_executables back to 0"),
            |m| {
                sample(m, "ctxleak_targets") == Some(0.0)
                    && sample(m, "ctxleak_attached_executables") == Some(0.0)
            },
        )
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| dir.count())
        .unwrap_or(0)
}

fn threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Threads:"))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// Milliseconds at the given quantiles of `values` (sorted here).
fn quantiles(values: &mut [f64]) -> String {
    if values.is_empty() {
        return "none".to_owned();
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    format!(
        "min {:.1} ms, median {:.1} ms, p95 {:.1} ms, max {:.1} ms",
        at(0.0),
        at(0.5),
        at(0.95),
        at(1.0)
    )
}

#[test]
fn two_hundred_short_lived_processes_leave_nothing_behind() {
    let versions = go_versions();
    let chosen = [
        &versions[0],
        &versions[versions.len() / 2],
        &versions[versions.len() - 1],
    ];
    let binaries: Vec<PathBuf> = chosen
        .iter()
        .map(|v| {
            common::fixture(v, "shortlived")
                .canonicalize()
                .expect("canonical fixture path")
        })
        .collect();
    let mut churn = Churn {
        daemon: start_daemon(),
        log: Log::default(),
        binaries,
        started: 0,
        finished: Vec::new(),
        failures: Vec::new(),
    };
    let pid = churn.daemon.child.id();
    let (idle, _) = churn.idle("at start");
    eprintln!(
        "daemon PID {pid}: {} series, RSS {} KiB, {} fds with no target",
        series_count(&idle),
        vm_rss_kib(pid).unwrap_or(0),
        open_fds(pid)
    );

    let warm_up = churn.run(WARM_UP, None);
    let (metrics, took) = churn.idle("after the warm-up");
    let baseline = series_count(&metrics);
    let baseline_rss = churn.daemon.rss_kib();
    let baseline_fds = open_fds(pid);
    eprintln!(
        "baseline after {WARM_UP} processes (idle {took:?} after the last exit): {baseline} series, RSS {baseline_rss} KiB, {baseline_fds} fds, {} threads; up to {} series and {} targets during the warm-up",
        threads(pid),
        warm_up.max_series,
        warm_up.max_targets
    );
    // The warm-up's log lines are read before they are forgotten, so none is taken for the run's.
    churn.log.read(&mut churn.daemon);
    churn.finished.clear();
    churn.log = Log::default();

    let started = Instant::now();
    let samples = churn.run(PROCESSES, Some(baseline));
    let ran = started.elapsed();
    let (metrics, took) = churn.idle("after the run");
    // The last `detached` lines may be written just after the count drops.
    let ours: BTreeSet<u32> = churn.finished.iter().map(|f| f.pid).collect();
    let drain = Instant::now();
    loop {
        churn.log.read(&mut churn.daemon);
        let all_detached = churn
            .log
            .attached
            .keys()
            .all(|pid| churn.log.detached.contains_key(pid));
        if all_detached || drain.elapsed() > SETTLE / 6 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "run: {PROCESSES} processes in {ran:?}; idle {took:?} after the last exit; {} scrapes, at most {} series ({} per target at most) and {} targets",
        samples.scrapes, samples.max_series, samples.max_series_per_target, samples.max_targets
    );

    // Every process is accounted for: attached, or logged as exited too soon.
    let attached: Vec<&Finished> = churn
        .finished
        .iter()
        .filter(|f| churn.log.attached.contains_key(&f.pid))
        .collect();
    let too_short: Vec<&Finished> = churn
        .finished
        .iter()
        .filter(|f| churn.log.too_short.contains(&f.pid))
        .collect();
    let unaccounted: Vec<&Finished> = churn
        .finished
        .iter()
        .filter(|f| {
            !churn.log.attached.contains_key(&f.pid) && !churn.log.too_short.contains(&f.pid)
        })
        .collect();
    let mut latencies: Vec<f64> = attached
        .iter()
        .map(|f| (churn.log.attached[&f.pid] - epoch_seconds(f.spawned_at)) * 1000.0)
        .collect();
    let lived_ms = |list: &[&Finished]| -> String {
        let mut ms: Vec<f64> = list
            .iter()
            .map(|f| f.lived.as_secs_f64() * 1000.0)
            .collect();
        quantiles(&mut ms)
    };
    eprintln!(
        "attached to {} of {PROCESSES}; {} logged as exited before or while being attached (lived: {}); {} with no line at all (lived: {})",
        attached.len(),
        too_short.len(),
        lived_ms(&too_short),
        unaccounted.len(),
        lived_ms(&unaccounted),
    );
    let mut vanish: Vec<f64> = attached
        .iter()
        .filter_map(|f| {
            let detached = churn.log.detached.get(&f.pid)?;
            Some((detached - epoch_seconds(f.reaped_at)) * 1000.0)
        })
        .collect();
    eprintln!(
        "attach latency (the `attached` line's time minus the spawn's): {}",
        quantiles(&mut latencies)
    );
    // `quantiles` sorted them.
    let median_latency = latencies.get(latencies.len() / 2).copied();
    let late_detaches: Vec<(u32, f64)> = attached
        .iter()
        .filter_map(|f| {
            let detached = churn.log.detached.get(&f.pid)?;
            let late = (detached - epoch_seconds(f.reaped_at)) * 1000.0;
            (late > DETACH_LATENCY_MS).then_some((f.pid, late))
        })
        .collect();
    eprintln!(
        "detach latency (the `detached` line's time minus when the test reaped the process, which is up to 50 ms after its exit): {}",
        quantiles(&mut vanish)
    );
    let long: Vec<&Finished> = churn
        .finished
        .iter()
        .filter(|f| f.lived >= ATTACH_EXPECTED)
        .collect();
    let long_missed: Vec<u32> = long
        .iter()
        .map(|f| f.pid)
        .filter(|pid| !churn.log.attached.contains_key(pid))
        .collect();
    eprintln!(
        "{} of the {} that lived {ATTACH_EXPECTED:?} or more were attached",
        long.len() - long_missed.len(),
        long.len()
    );
    let not_detached: Vec<u32> = churn
        .log
        .attached
        .keys()
        .copied()
        .filter(|pid| !churn.log.detached.contains_key(pid))
        .collect();
    let others: BTreeMap<&u32, &Vec<String>> = churn
        .log
        .other
        .iter()
        .filter(|(pid, _)| ours.contains(pid))
        .collect();
    // A census disagreement is a creation or exit event that never came, repaired from
    // memory and counted (ctxleak_census_disagreements_total). CI runs saw one in a process
    // just attached at exec time, about once per 200 processes, two censuses in a row (so
    // not an event in flight); the cause is open (see the session note of issue #7). A few
    // are tolerated so that the rest of this test stays a gate; more mean a regression.
    let missed: Vec<&String> = churn
        .log
        .missed
        .iter()
        .filter(|(pid, _)| ours.contains(pid))
        .flat_map(|(_, lines)| lines.iter())
        .collect();
    eprintln!("census disagreements logged: {} {missed:#?}", missed.len());

    let final_series = series_count(&metrics);
    // Allocator slack settles with a little time: poll RSS down to the margin before failing.
    let limit = baseline_rss + RSS_MARGIN_KIB;
    let rss_start = Instant::now();
    let mut final_rss = churn.daemon.rss_kib();
    while final_rss > limit && rss_start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(500));
        final_rss = churn.daemon.rss_kib();
    }
    let final_fds = open_fds(pid);
    let attach_failures = sample(&metrics, "ctxleak_attach_failures_total");
    let exec_events_lost = sample(&metrics, "ctxleak_exec_events_lost_total");
    eprintln!(
        "end: {final_series} series (baseline {baseline}); RSS {final_rss} KiB (baseline {baseline_rss} KiB, {:+} KiB, limit {limit} KiB); {final_fds} fds (baseline {baseline_fds}); {} threads; attach failures {attach_failures:?}, exec events lost {exec_events_lost:?}",
        final_rss as i64 - baseline_rss as i64,
        threads(pid)
    );

    // The daemon's whole log (debug lines of its discovery included), for a failure's details.
    let log_path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("daemon_churn.log");
    let _ = std::fs::write(&log_path, churn.daemon.stderr.seen.join("\n") + "\n");
    eprintln!("the daemon's log: {}", log_path.display());

    let mut failures = std::mem::take(&mut churn.failures);
    if missed.len() > MAX_MISSED {
        failures.push(format!(
            "{} census disagreements (at most {MAX_MISSED} tolerated): {missed:#?}",
            missed.len()
        ));
    }
    if churn.finished.len() != PROCESSES {
        failures.push(format!(
            "{} processes finished, expected {PROCESSES}",
            churn.finished.len()
        ));
    }
    if !long_missed.is_empty() {
        failures.push(format!(
            "never attached to {} processes that lived {ATTACH_EXPECTED:?} or more: {long_missed:?}",
            long_missed.len()
        ));
    }
    if median_latency.is_none_or(|ms| ms > MEDIAN_ATTACH_LATENCY_MS) {
        failures.push(format!(
            "median attach latency {median_latency:?} ms, more than {MEDIAN_ATTACH_LATENCY_MS} ms"
        ));
    }
    if !late_detaches.is_empty() {
        failures.push(format!(
            "{} processes detached more than {DETACH_LATENCY_MS} ms after their exit (PID, ms): {late_detaches:?}",
            late_detaches.len()
        ));
    }
    if !not_detached.is_empty() {
        failures.push(format!(
            "no `detached` logged for PIDs {not_detached:?}, which were attached"
        ));
    }
    // The fixtures exit normally: nothing about them deserves more than the lines above (a
    // warning here is what an operator would see for every such process).
    if !others.is_empty() {
        let lines: Vec<&String> = others.values().flat_map(|lines| lines.iter()).collect();
        failures.push(format!(
            "the daemon logged {} unexpected lines about {} of the fixtures (which exit normally; {} has each one's whole story): {:#?}",
            lines.len(),
            others.len(),
            log_path.display(),
            &lines[..lines.len().min(10)]
        ));
    }
    if attach_failures != Some(0.0) {
        failures.push(format!(
            "ctxleak_attach_failures_total is {attach_failures:?} after the run"
        ));
    }
    if final_series != baseline {
        failures.push(format!(
            "/metrics has {final_series} series after the run, {baseline} before: series were left behind:\n{metrics}"
        ));
    }
    let series_bound = baseline + SERIES_PER_TARGET * 2 * CONCURRENCY;
    if samples.max_series > series_bound {
        failures.push(format!(
            "up to {} series during the run with {CONCURRENCY} processes alive at once (bound {series_bound})",
            samples.max_series
        ));
    }
    if samples.max_targets > (2 * CONCURRENCY) as f64 {
        failures.push(format!(
            "ctxleak_targets reached {} with {CONCURRENCY} processes alive at once: exited processes are kept",
            samples.max_targets
        ));
    }
    if !samples.violations.is_empty() {
        failures.push(format!(
            "{} scrapes had more series than their targets may hold ({SERIES_PER_TARGET} each), e.g. {}",
            samples.violations.len(),
            samples.violations[0]
        ));
    }
    if final_rss > limit {
        failures.push(format!(
            "RSS {final_rss} KiB after the run, baseline {baseline_rss} KiB, limit {limit} KiB: the daemon keeps memory per process"
        ));
    }
    // A little slack for descriptors the runtime opens on its own (an epoll or timer fd).
    if final_fds > baseline_fds + 2 {
        failures.push(format!(
            "{final_fds} open file descriptors after the run, {baseline_fds} before: descriptors leak per process"
        ));
    }
    match churn.daemon.child.try_wait() {
        Ok(None) => {}
        other => failures.push(format!("the daemon is not running at the end: {other:?}")),
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
