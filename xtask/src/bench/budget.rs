//! `cargo xtask bench budget`: what ctxleak costs, and how fast it still names a leak, when
//! its probes run under a CPU budget (`--max-overhead`, issue #15), against no ctxleak, in one
//! run, on the overhead bench's targets (pinned to CPU 0 with GOMAXPROCS=1; the load, ctxleak
//! and this process on CPU 1):
//! - the net/http fixture at fixed request rates and at the most one core serves, driven by
//!   the `load` fixture (wrk cannot hold a rate): throughput, the target's own CPU per request,
//!   the probes' CPU share (ctxleak's estimate, `ctxleak_probe_cost_seconds_total`, and what
//!   the target measurably spent over "none") against the budget, and the share of the time
//!   the probes were on (`ctxleak_probe_duty_ratio`); with the probes always on (`exact`)
//!   for comparison;
//! - the churn fixture: time per goroutine, and the same shares;
//! - detection latency: beside full-rate healthy traffic, one leaked goroutine and one
//!   unreleased context a second (the fixture's `GET /leak`), from the first leaking request
//!   until ctxleak names each line (`/api/leaks`, `/api/groups`).
//!
//! A bench of its own beside `overhead`, sharing its targets, builds, pinning, attaching and
//! CPU accounting (shared.rs), rather than more modes of it: a budget works in windows (the
//! bucket holds ten seconds of budget), so a measurement here lasts up to a minute where
//! overhead's last five seconds over many modes and rounds; each stays short enough to run on
//! its own.

use std::fmt::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::shared::{
    ChurnRun, Running, Tools, attach_serving, cpu_ns, http_get, kernel, mean, measure_churn,
    publish, scrape, start_httpserver,
};
use crate::workspace::Workspace;
use crate::{go, process};

/// The budget measured, as given to `--max-overhead` (ctxleak's default).
const BUDGET: &str = "1%";

/// Keep-alive connections of the load generator, as wrk's in the overhead bench.
const CONNECTIONS: u32 = 32;

/// A request rate the net/http target is measured at.
struct Rate {
    /// Requests a second; None: as many as the target serves (each connection sends its next
    /// request as soon as the last is answered).
    per_second: Option<u32>,
    /// Seconds measured under the budget: a minute where the probes go off and on (a cycle
    /// lasts about ten seconds, one bucket; and ctxleak's duty gauge covers the last minute,
    /// so after one it speaks of the measurement alone), less where the budget covers the
    /// rate and they stay on.
    budget_seconds: u32,
}

/// About 1 000 requests a second is 6 000 probe hits, over what 1% covers (3 800 at 1.3 µs a
/// hit, twice that when hits are this sparse): the probes are on about two thirds of the
/// time. 10 000 is ten times over it.
const RATES: &[Rate] = &[
    Rate {
        per_second: Some(1_000),
        budget_seconds: 60,
    },
    Rate {
        per_second: Some(10_000),
        budget_seconds: 60,
    },
    Rate {
        per_second: None,
        budget_seconds: 60,
    },
];

/// Seconds measured without ctxleak, and with the probes always on (no windows to average).
const NONE_SECONDS: u32 = 15;
const EXACT_SECONDS: u32 = 10;
/// Load before each measurement, after ctxleak attached: connections, caches, and under the
/// budget the first burst of a full bucket.
const WARMUP_SECONDS: u32 = 3;

/// Goroutines the churn fixture starts and exits: about 25 s on a quiet core, several
/// windows of the budget.
const CHURN_GOROUTINES: u32 = 20_000_000;

/// The churn runs: without ctxleak before and after, as at each rate.
const CHURN_RUNS: [Mode; 3] = [Mode::None, Mode::Budget, Mode::None];

/// How long the detection runs wait for ctxleak to name both lines, leaking meanwhile.
const DETECTION_TIMEOUT: Duration = Duration::from_secs(90);
/// One leaked goroutine and one unreleased context this often.
const LEAK_EVERY: Duration = Duration::from_secs(1);
/// How often the detection runs ask ctxleak.
const POLL_EVERY: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// No ctxleak.
    None,
    /// `--max-overhead BUDGET`: ctxleak's default.
    Budget,
    /// `--max-overhead exact`: every probe always on, whatever it costs.
    Exact,
}

impl Mode {
    /// The order of the runs at each rate: without ctxleak first and last, so that the two
    /// show the noise, and ctxleak's runs are compared with their mean.
    const RUNS: [Self; 4] = [Self::None, Self::Budget, Self::Exact, Self::None];

    /// `ctxleak attach` arguments; None: ctxleak not running.
    fn args(self) -> Option<[&'static str; 2]> {
        match self {
            Self::None => None,
            Self::Budget => Some(["--max-overhead", BUDGET]),
            Self::Exact => Some(["--max-overhead", "exact"]),
        }
    }

    fn label(self) -> String {
        match self.args() {
            None => "none".into(),
            Some(args) => args.join(" "),
        }
    }

    fn seconds(self, rate: &Rate) -> u32 {
        match self {
            Self::None => NONE_SECONDS,
            Self::Budget => rate.budget_seconds,
            Self::Exact => EXACT_SECONDS,
        }
    }
}

/// What ctxleak said of its probes over a measurement, from its metrics.
#[derive(Clone, Copy)]
struct Probes {
    /// Its estimate of their cost (`ctxleak_probe_cost_seconds_total`), CPU-seconds a second.
    cost_share: f64,
    /// `ctxleak_probe_duty_ratio` at the end: the share of the last minute they were on.
    duty: f64,
    /// `ctxleak_probe_budget_ratio`.
    budget: f64,
}

impl Probes {
    /// From ctxleak's metrics of `pid` after a measurement of `seconds` (`before`: at its
    /// start; None: the counter started at 0 then).
    fn read(
        pid: u32,
        before: Option<&Metrics>,
        after: &Metrics,
        seconds: f64,
    ) -> Result<Option<Self>> {
        let get = |metrics: &Metrics, name: &str| {
            metrics.get(&format!("{name}{{pid=\"{pid}\"}}")).copied()
        };
        let Some(budget) = get(after, "ctxleak_probe_budget_ratio") else {
            return Ok(None); // Exact: no budget, no estimate.
        };
        let cost = |metrics: &Metrics| {
            get(metrics, "ctxleak_probe_cost_seconds_total").with_context(|| {
                format!(
                    "ctxleak exports a budget but no ctxleak_probe_cost_seconds_total for {pid}"
                )
            })
        };
        let spent = cost(after)? - before.map(cost).transpose()?.unwrap_or(0.0);
        Ok(Some(Self {
            cost_share: spent / seconds,
            duty: get(after, "ctxleak_probe_duty_ratio").with_context(|| {
                format!("ctxleak exports no ctxleak_probe_duty_ratio for {pid}")
            })?,
            budget,
        }))
    }
}

type Metrics = std::collections::BTreeMap<String, f64>;

/// One measurement of the net/http target at a rate.
struct HttpRun {
    mode: Mode,
    seconds: f64,
    requests: f64,
    rps: f64,
    p50_us: f64,
    p99_us: f64,
    /// The target's own CPU time per request, uprobe traps included.
    cpu_ns_per_request: f64,
    probes: Option<Probes>,
}

/// One churn measurement.
struct ChurnResult {
    mode: Mode,
    ns_per_goroutine: f64,
    probes: Option<Probes>,
}

/// One detection run: seconds from the first leaking request until ctxleak named each line.
struct Detection {
    mode: Mode,
    context_s: Option<f64>,
    goroutine_s: Option<f64>,
    leaks: u32,
    sites: Sites,
    duty: Option<f64>,
}

/// The lines ctxleak must name, as the fixture's `/leak` says them ("main.leak:36").
#[derive(Clone, Default)]
struct Sites {
    context: String,
    go: String,
    blocked: String,
}

pub(super) fn run(ws: &Workspace, out: &Path) -> Result<()> {
    let tools = Tools::build(ws, out)?;
    let started = Instant::now();
    let mut rates = Vec::new();
    for rate in RATES {
        let mut runs = Vec::new();
        for mode in Mode::RUNS {
            let run = measure_rate(&tools, rate, mode)
                .with_context(|| format!("http at {}, {}", rate_label(rate), mode.label()))?;
            println!(
                "budget: {} {}: {:.0} req/s, p99 {:.2} ms, target CPU {:.0} ns/request{}",
                rate_label(rate),
                mode.label(),
                run.rps,
                run.p99_us / 1e3,
                run.cpu_ns_per_request,
                probes_line(run.probes),
            );
            runs.push(run);
        }
        rates.push(runs);
    }
    let mut churn = Vec::new();
    for mode in CHURN_RUNS {
        let run = measure_churn_budget(&tools, mode)
            .with_context(|| format!("churn, {}", mode.label()))?;
        println!(
            "budget: churn {}: {:.0} ns/goroutine{}",
            mode.label(),
            run.ns_per_goroutine,
            probes_line(run.probes)
        );
        churn.push(run);
    }
    let mut detections = Vec::new();
    for mode in [Mode::Budget, Mode::Exact] {
        let found = detect(&tools, mode).with_context(|| format!("detection, {}", mode.label()))?;
        println!(
            "budget: detection {}: context {}, goroutines {} ({} leaks made)",
            mode.label(),
            latency(found.context_s),
            latency(found.goroutine_s),
            found.leaks
        );
        detections.push(found);
    }
    report(out, &rates, &churn, &detections, started.elapsed())
}

fn rate_label(rate: &Rate) -> String {
    match rate.per_second {
        Some(n) => format!("{n}/s"),
        None => "max".into(),
    }
}

fn probes_line(probes: Option<Probes>) -> String {
    probes.map_or_else(String::new, |p| {
        format!(
            ", probes {:.2}% of a CPU by ctxleak's estimate, on {:.1}% of the time",
            p.cost_share * 100.0,
            p.duty * 100.0
        )
    })
}

fn latency(seconds: Option<f64>) -> String {
    seconds.map_or_else(
        || format!("not within {} s", DETECTION_TIMEOUT.as_secs()),
        |s| format!("{s:.1} s"),
    )
}

/// The `load` fixture's summary line.
struct LoadRun {
    requests: f64,
    seconds: f64,
    p50_us: f64,
    p99_us: f64,
}

/// The `load` fixture on CPU 1 against `address`: `per_second` (None: as fast as served)
/// for `seconds`.
pub(super) fn load_command(
    tools: &Tools,
    address: &str,
    per_second: Option<u32>,
    seconds: u32,
) -> Command {
    let mut cmd = Command::new("taskset");
    cmd.args(["-c", "1"])
        .arg(&tools.load)
        .args(["-addr", address, "-c", &CONNECTIONS.to_string()])
        .args(["-rate", &per_second.unwrap_or(0).to_string()])
        .args(["-d", &format!("{seconds}s")]);
    cmd
}

/// Runs the `load` fixture (see [`load_command`]) to its end.
fn load(tools: &Tools, address: &str, per_second: Option<u32>, seconds: u32) -> Result<LoadRun> {
    let mut cmd = load_command(tools, address, per_second, seconds);
    let output = process::output(&mut cmd)?;
    let summary: Value = output
        .lines()
        .find(|line| line.starts_with('{'))
        .and_then(|line| serde_json::from_str(line).ok())
        .with_context(|| format!("the load generator printed no summary: {output}"))?;
    let number = |field: &str| summary[field].as_f64().unwrap_or(0.0);
    if number("errors") > 0.0 || number("requests") <= 0.0 {
        bail!(
            "the load generator failed ({} errors, {} requests): {}",
            number("errors"),
            number("requests"),
            summary["first_error"].as_str().unwrap_or("no error given")
        );
    }
    Ok(LoadRun {
        requests: number("requests"),
        seconds: number("seconds"),
        p50_us: number("p50_us"),
        p99_us: number("p99_us"),
    })
}

/// The net/http target at `rate` in `mode`: started, ctxleak attached, warmed up, then
/// measured. ctxleak adds to its cost counter once a second, so the estimate's interval may
/// be off by up to a second at either end.
fn measure_rate(tools: &Tools, rate: &Rate, mode: Mode) -> Result<HttpRun> {
    let (server, _stdout, address) = start_httpserver(tools)?;
    let pid = server.0.id();
    let ctxleak = mode
        .args()
        .map(|args| attach_serving(tools, pid, &args))
        .transpose()?;
    let metrics_at = ctxleak.as_ref().map(|(_, at)| at.as_str());
    load(tools, &address, rate.per_second, WARMUP_SECONDS)?;
    let before = metrics_at.map(scrape).transpose()?;
    let cpu_before = cpu_ns(pid)?;
    let run = load(tools, &address, rate.per_second, mode.seconds(rate))?;
    let cpu = cpu_ns(pid)?.saturating_sub(cpu_before);
    let probes = match metrics_at {
        Some(at) => Probes::read(pid, before.as_ref(), &scrape(at)?, run.seconds)?,
        None => None,
    };
    Ok(HttpRun {
        mode,
        seconds: run.seconds,
        requests: run.requests,
        rps: run.requests / run.seconds,
        p50_us: run.p50_us,
        p99_us: run.p99_us,
        cpu_ns_per_request: cpu as f64 / run.requests,
        probes,
    })
}

/// The churn fixture in `mode`, with ctxleak's figures scraped until it finished (from
/// attaching: the first window, a full bucket, included).
fn measure_churn_budget(tools: &Tools, mode: Mode) -> Result<ChurnResult> {
    let args = mode.args();
    let ChurnRun {
        ns_per_goroutine,
        metrics,
        pid,
    } = measure_churn(
        tools,
        args.as_ref().map(|args| &args[..]),
        CHURN_GOROUTINES,
        mode != Mode::None,
    )?;
    let seconds = ns_per_goroutine * f64::from(CHURN_GOROUTINES) / 1e9;
    let probes = match &metrics {
        Some(metrics) => Probes::read(pid, None, metrics, seconds)?,
        None => None,
    };
    Ok(ChurnResult {
        mode,
        ns_per_goroutine,
        probes,
    })
}

/// `function:line` of a `SourceLocation` in ctxleak's JSON, as the fixture writes sites.
fn site(location: &Value) -> Option<String> {
    Some(format!(
        "{}:{}",
        location["function"].as_str()?,
        location["line"].as_u64()?
    ))
}

/// The leak sites from the fixture's answer to `GET /leak`.
fn parse_sites(body: &str) -> Result<Sites> {
    let mut sites = Sites::default();
    for line in body.lines() {
        match line.split_once(' ') {
            Some(("context", at)) => sites.context = at.to_owned(),
            Some(("go", at)) => sites.go = at.to_owned(),
            Some(("blocked", at)) => sites.blocked = at.to_owned(),
            _ => {}
        }
    }
    if sites.context.is_empty() || sites.go.is_empty() || sites.blocked.is_empty() {
        bail!(
            "GET /leak answered {body:?}, not its context, go and blocked lines: rebuild the httpserver fixture"
        );
    }
    Ok(sites)
}

/// Whether `/api/leaks` names the context line among the unreleased.
fn names_context(leaks: &Value, sites: &Sites) -> bool {
    leaks["unreleased"].as_array().is_some_and(|entries| {
        entries
            .iter()
            .any(|entry| site(&entry["site"]).as_deref() == Some(&sites.context))
    })
}

/// Whether `/api/groups` has a suspect group created at the `go` line or blocked at the
/// leaking goroutine's line.
fn names_goroutines(groups: &Value, sites: &Sites) -> bool {
    groups["groups"].as_array().is_some_and(|groups| {
        groups.iter().any(|group| {
            group["suspect"].as_bool() == Some(true)
                && (site(&group["created_by"]).as_deref() == Some(&sites.go)
                    || site(&group["blocked_at"]).as_deref() == Some(&sites.blocked))
        })
    })
}

/// Full-rate healthy traffic on the net/http target, ctxleak attached in `mode`, and after
/// the warm-up one `GET /leak` every [`LEAK_EVERY`]: the seconds from the first until
/// ctxleak names the unreleased context's line and the leaked goroutines' group.
fn detect(tools: &Tools, mode: Mode) -> Result<Detection> {
    let (server, _stdout, address) = start_httpserver(tools)?;
    let pid = server.0.id();
    let args = mode.args().context("detection needs ctxleak")?;
    let (_ctxleak, metrics_at) = attach_serving(tools, pid, &args)?;
    let traffic_seconds = WARMUP_SECONDS + DETECTION_TIMEOUT.as_secs() as u32 + 5;
    let mut healthy = Running(
        load_command(tools, &address, None, traffic_seconds)
            .stdout(Stdio::piped())
            .spawn()
            .context("cannot start the load generator")?,
    );
    std::thread::sleep(Duration::from_secs(WARMUP_SECONDS.into()));

    let query = format!("?pid={pid}");
    let start = Instant::now();
    let mut next_leak = start;
    let mut leaks = 0;
    let mut sites = None;
    let (mut context_s, mut goroutine_s) = (None, None);
    let mut last_error = None;
    while start.elapsed() < DETECTION_TIMEOUT && (context_s.is_none() || goroutine_s.is_none()) {
        if Instant::now() >= next_leak {
            let body = http_get(&address, "/leak")?;
            if sites.is_none() {
                sites = Some(parse_sites(&body)?);
            }
            leaks += 1;
            next_leak += LEAK_EVERY;
        }
        let Some(sites) = &sites else { continue };
        let ask = |path: &str| -> Result<Value> {
            let body = http_get(&metrics_at, &format!("{path}{query}"))?;
            serde_json::from_str(&body).with_context(|| format!("{path} is not JSON: {body:.200}"))
        };
        let at = start.elapsed().as_secs_f64();
        if context_s.is_none() {
            match ask("/api/leaks") {
                Ok(leaks) if names_context(&leaks, sites) => context_s = Some(at),
                Ok(_) => {}
                Err(error) => last_error = Some(error),
            }
        }
        if goroutine_s.is_none() {
            match ask("/api/groups") {
                Ok(groups) if names_goroutines(&groups, sites) => goroutine_s = Some(at),
                Ok(_) => {}
                Err(error) => last_error = Some(error),
            }
        }
        let now = Instant::now();
        std::thread::sleep(POLL_EVERY.min(next_leak.saturating_duration_since(now)));
    }
    if let Some(status) = healthy.0.try_wait()? {
        bail!("the healthy traffic stopped early ({status}): the load generator failed");
    }
    if let (None, None, Some(error)) = (context_s, goroutine_s, last_error) {
        return Err(error.context("ctxleak never answered its API"));
    }
    let duty = scrape(&metrics_at)?
        .get(&format!("ctxleak_probe_duty_ratio{{pid=\"{pid}\"}}"))
        .copied();
    Ok(Detection {
        mode,
        context_s,
        goroutine_s,
        leaks,
        sites: sites.unwrap_or_default(),
        duty,
    })
}

fn report(
    out: &Path,
    rates: &[Vec<HttpRun>],
    churn: &[ChurnResult],
    detections: &[Detection],
    took: Duration,
) -> Result<()> {
    let kernel = kernel();
    let pct = |share: f64| format!("{:.2}%", share * 100.0);
    let mut md = String::new();
    writeln!(
        md,
        "# ctxleak under a CPU budget (`--max-overhead {BUDGET}`)\n"
    )?;
    writeln!(
        md,
        "Go {}, kernel {kernel}; target pinned to CPU 0 with GOMAXPROCS=1, the load generator \
         (fixtures/go/bench/load, {CONNECTIONS} keep-alive connections) and ctxleak on CPU 1; \
         at each rate one run without ctxleak, one under the budget, one with every probe on \
         and one more without; {:.0} s in all, builds aside. The net/http hello handler \
         makes one WithTimeout per request. Measured for {NONE_SECONDS} s without ctxleak, \
         {EXACT_SECONDS} s with every probe on, and under the budget for the seconds given, \
         after {WARMUP_SECONDS} s of the same load.\n",
        go::NEWEST,
        took.as_secs_f64(),
    )?;
    writeln!(
        md,
        "\"Extra CPU\" is the target's own CPU time per request (`/proc/PID/task/*/schedstat`, \
         uprobe traps included) over the mean of the two runs without ctxleak, times the \
         requests it served a second: the share of a CPU the probes measurably cost it (for \
         the runs without ctxleak, each one's difference from their mean: the noise). \"Estimate\" is ctxleak's \
         own, `ctxleak_probe_cost_seconds_total` over the measurement (probe hits × 1.3 µs); \
         \"on\" is `ctxleak_probe_duty_ratio` at the end (the share of the last minute the \
         probes were attached, since attaching when that was less than a minute).\n"
    )?;
    writeln!(
        md,
        "| rate | mode | seconds | req/s | vs none | p50 ms | p99 ms | target CPU µs/request | extra CPU, measured | estimate | on |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|")?;
    let mut json_rates = Vec::new();
    for (rate, runs) in RATES.iter().zip(rates) {
        let none: Vec<&HttpRun> = runs.iter().filter(|run| run.mode == Mode::None).collect();
        if none.is_empty() {
            bail!("no run without ctxleak at {}", rate_label(rate));
        }
        let none_mean = |field: fn(&HttpRun) -> f64| {
            mean(&none.iter().map(|run| field(run)).collect::<Vec<_>>())
        };
        let (none_rps, none_cpu) = (
            none_mean(|run| run.rps),
            none_mean(|run| run.cpu_ns_per_request),
        );
        let mut json_runs = Vec::new();
        for run in runs {
            let extra = (run.cpu_ns_per_request - none_cpu) * run.rps / 1e9;
            writeln!(
                md,
                "| {} | {} | {:.0} | {:.0} | {:.3} | {:.2} | {:.2} | {:.1} | {} | {} | {} |",
                rate_label(rate),
                run.mode.label(),
                run.seconds,
                run.rps,
                run.rps / none_rps,
                run.p50_us / 1e3,
                run.p99_us / 1e3,
                run.cpu_ns_per_request / 1e3,
                pct(extra),
                run.probes.map_or_else(|| "—".into(), |p| pct(p.cost_share)),
                run.probes.map_or_else(
                    || if run.mode == Mode::Exact {
                        "100%".into()
                    } else {
                        "—".into()
                    },
                    |p| pct(p.duty)
                ),
            )?;
            json_runs.push(json!({
                "mode": run.mode.label(),
                "ctxleak_args": run.mode.args(),
                "seconds": run.seconds,
                "requests": run.requests,
                "requests_per_second": run.rps,
                "ratio_to_none": run.rps / none_rps,
                "p50_us": run.p50_us,
                "p99_us": run.p99_us,
                "target_cpu_ns_per_request": run.cpu_ns_per_request,
                "extra_cpu_share_measured": extra,
                "probes": run.probes.map(probes_json),
            }));
        }
        json_rates.push(json!({
            "rate_per_second": rate.per_second,
            "none_mean": {
                "requests_per_second": none_rps,
                "target_cpu_ns_per_request": none_cpu,
            },
            "runs": json_runs,
        }));
    }
    writeln!(
        md,
        "\nThe measured extra CPU is the difference of two runs on a shared machine: at the \
         maximum rate an error of 1% in either run's CPU per request is 1% of a CPU, as much as \
         the budget; it says more at lower rates. ctxleak's estimate is what the budget steers \
         by. A token bucket may spend one bucket (ten seconds of budget, `WINDOW` in \
         ctxleak-daemon/src/budget.rs) beyond the budget in any interval.\n"
    )?;

    writeln!(md, "## Goroutine churn\n")?;
    writeln!(
        md,
        "The churn fixture: {CHURN_GOROUTINES} goroutines started and exited, each making and \
         cancelling a WithTimeout, as fast as one core does, without ctxleak before and after. \
         Extra CPU is the share of the target's time per goroutine over the mean without \
         ctxleak (for those runs: the noise); the estimate and \"on\" are \
         ctxleak's last figures before the fixture finished (since attaching, the first full \
         bucket included).\n"
    )?;
    writeln!(
        md,
        "| mode | ns/goroutine | vs none | extra CPU, measured | estimate | on |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    let none: Vec<f64> = churn
        .iter()
        .filter(|run| run.mode == Mode::None)
        .map(|run| run.ns_per_goroutine)
        .collect();
    if none.is_empty() {
        bail!("no churn run without ctxleak");
    }
    let none_ns = mean(&none);
    let mut json_churn = Vec::new();
    for run in churn {
        let extra = 1.0 - none_ns / run.ns_per_goroutine;
        writeln!(
            md,
            "| {} | {:.0} | {:.3} | {} | {} | {} |",
            run.mode.label(),
            run.ns_per_goroutine,
            run.ns_per_goroutine / none_ns,
            pct(extra),
            run.probes.map_or_else(|| "—".into(), |p| pct(p.cost_share)),
            run.probes.map_or_else(|| "—".into(), |p| pct(p.duty)),
        )?;
        json_churn.push(json!({
            "mode": run.mode.label(),
            "goroutines": CHURN_GOROUTINES,
            "ns_per_goroutine": run.ns_per_goroutine,
            "ratio_to_none": run.ns_per_goroutine / none_ns,
            "extra_cpu_share_measured": extra,
            "probes": run.probes.map(probes_json),
        }));
    }

    writeln!(md, "\n## Detection latency\n")?;
    writeln!(
        md,
        "Full-rate healthy traffic on the net/http target and, from {WARMUP_SECONDS} s after \
         attaching, one `GET /leak` a second: each leaves a child of the server's base context \
         that nobody cancels and a goroutine waiting for it forever. Seconds from the first \
         leaking request until `/api/leaks` lists the context's line as unreleased, and until \
         `/api/groups` has a suspect group created at the `go` line or blocked at the \
         goroutine's line (asked every {} ms; a group is a suspect once it grew in every quarter \
         of a window, by at least 5 goroutines and 10%, and its oldest member is 30 s old: see \
         the README's Leak suspects). Given up after {} s.\n",
        POLL_EVERY.as_millis(),
        DETECTION_TIMEOUT.as_secs(),
    )?;
    writeln!(
        md,
        "| mode | context line named | goroutine line named | leaks made | on |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let mut json_detections = Vec::new();
    for found in detections {
        writeln!(
            md,
            "| {} | {} | {} | {} | {} |",
            found.mode.label(),
            latency(found.context_s),
            latency(found.goroutine_s),
            found.leaks,
            found.duty.map_or_else(|| "—".into(), pct),
        )?;
        json_detections.push(json!({
            "mode": found.mode.label(),
            "context_named_after_s": found.context_s,
            "goroutines_named_after_s": found.goroutine_s,
            "leaks_made": found.leaks,
            "duty": found.duty,
            "sites": {
                "context": found.sites.context,
                "go": found.sites.go,
                "blocked": found.sites.blocked,
            },
        }));
    }
    writeln!(
        md,
        "\nUnder the budget, contexts are sampled: only those made while the probes are on \
         are tracked, so a leak of one context a second is seen at a rate of about one per \
         window the probes are on for, and may be missed. Goroutines are counted and grouped \
         from memory, whatever the probes do."
    )?;

    let json = json!({
        "go": go::NEWEST,
        "kernel": kernel,
        "budget": BUDGET,
        "connections": CONNECTIONS,
        "warmup_seconds": WARMUP_SECONDS,
        "seconds_total": took.as_secs_f64(),
        "rates": json_rates,
        "churn": json_churn,
        "detection": json_detections,
    });
    publish(out, "budget", &md, &json)
}

fn probes_json(probes: Probes) -> Value {
    json!({
        "estimated_cost_share": probes.cost_share,
        "duty": probes.duty,
        "budget": probes.budget,
        "estimate_to_budget": probes.cost_share / probes.budget,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leak_sites_are_read_and_matched() {
        let sites = parse_sites("context main.leak:36\ngo main.leak:38\nblocked main.wait:46\n")
            .expect("sites");
        assert_eq!(sites.context, "main.leak:36");
        let leaks: Value = serde_json::from_str(
            r#"{"unreleased":[{"site":null},{"site":{"function":"main.leak","file":"x.go","line":36}}]}"#,
        )
        .expect("json");
        assert!(names_context(&leaks, &sites));
        let groups = |suspect: bool| -> Value {
            json!({"groups":[{"suspect":suspect,"created_by":{"function":"main.leak","file":"x.go","line":38},"blocked_at":null}]})
        };
        assert!(names_goroutines(&groups(true), &sites));
        assert!(!names_goroutines(&groups(false), &sites));
        assert!(parse_sites("hello\n").is_err());
    }
}
