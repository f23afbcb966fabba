//! `cargo xtask bench hitcost`: what the probes cost the net/http target at each request
//! rate, against ctxleak's own estimate (`ctxleak_probe_cost_seconds_total`), measured within
//! one run: ctxleak attached under a budget of about half its estimate, so that the probes go
//! on and off in windows of about ten seconds, and the target's CPU time (all threads,
//! `/proc/PID/task/*/schedstat`) sampled every second. Seconds whose neighbours had the probes
//! in the same state are compared: the mean CPU of steady seconds on, less that of steady
//! seconds off, is the probes' cost, with the noise of both means. Drifts of the VM slower
//! than a window (they span 25% of the target's CPU between runs minutes apart at 1 000
//! requests a second) cancel, which comparing separate runs does not allow.
//!
//! The estimate must bound the measurement at every rate: a hit on a CPU that ran other code
//! since the last one costs more than one in a busy loop, which is what ctxleak's sparse
//! factor (`ctxleak-daemon/src/budget.rs`) was fitted to from this bench.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::json;

use super::budget::load_command;
use super::shared::{
    Running, Tools, attach_serving, cpu_ns, kernel, mean, publish, scrape, start_httpserver,
};
use crate::go;
use crate::workspace::Workspace;

/// (requests a second, `--max-overhead`): a budget of about half ctxleak's estimate at that
/// rate, so that the probes are on about half the time.
const RATES: &[(u32, &str)] = &[
    (600, "0.4%"),
    (1_000, "0.6%"),
    (2_000, "1%"),
    (3_000, "1.5%"),
    (10_000, "4%"),
];

/// Seconds sampled at each rate, after [`WARMUP`].
const SECONDS: usize = 90;
const WARMUP: Duration = Duration::from_secs(4);

/// One rate's result.
struct OnOff {
    rate: u32,
    budget: &'static str,
    /// Steady seconds with the probes on, and off.
    on: Vec<f64>,
    off: Vec<f64>,
    /// ctxleak's estimate, CPU-seconds a second, over the steady seconds on.
    estimate: Vec<f64>,
}

/// The standard error of the mean.
fn noise(values: &[f64]) -> f64 {
    if values.len() < 2 {
        return f64::NAN;
    }
    let m = mean(values);
    let variance = values.iter().map(|v| (v - m).powi(2)).sum::<f64>() / (values.len() - 1) as f64;
    (variance / values.len() as f64).sqrt()
}

impl OnOff {
    /// The probes' measured cost, share of a CPU, and its noise.
    fn measured(&self) -> (f64, f64) {
        (
            mean(&self.on) - mean(&self.off),
            noise(&self.on).hypot(noise(&self.off)),
        )
    }
}

pub(super) fn run(ws: &Workspace, out: &Path) -> Result<()> {
    let tools = Tools::build(ws, out)?;
    let started = Instant::now();
    let mut results = Vec::new();
    for &(rate, budget) in RATES {
        let result = measure(&tools, rate, budget).with_context(|| format!("{rate}/s"))?;
        let (measured, noise) = result.measured();
        println!(
            "hitcost: {rate}/s under {budget}: {} seconds on, {} off: probes on cost {:.2}% ±{:.2}% of a CPU, estimate {:.2}%",
            result.on.len(),
            result.off.len(),
            measured * 100.0,
            noise * 100.0,
            mean(&result.estimate) * 100.0
        );
        results.push(result);
    }
    report(out, &results, started.elapsed())
}

/// The target at `rate` under `budget`, sampled every second.
fn measure(tools: &Tools, rate: u32, budget: &'static str) -> Result<OnOff> {
    let (server, _stdout, address) = start_httpserver(tools)?;
    let pid = server.0.id();
    let (_ctxleak, metrics_at) = attach_serving(tools, pid, &["--max-overhead", budget])?;
    let total = WARMUP.as_secs() as u32 + SECONDS as u32 + 2;
    let _load = Running(
        load_command(tools, &address, Some(rate), total)
            .stdout(Stdio::null())
            .spawn()
            .context("cannot start the load generator")?,
    );
    std::thread::sleep(WARMUP);
    let counter = format!("ctxleak_probe_cost_seconds_total{{pid=\"{pid}\"}}");
    let cost = || -> Result<f64> {
        scrape(&metrics_at)?
            .get(&counter)
            .copied()
            .with_context(|| format!("ctxleak exports no {counter}"))
    };
    // (target CPU-seconds, ctxleak's estimate) of each second.
    let mut seconds = Vec::with_capacity(SECONDS);
    let (mut cpu_before, mut cost_before) = (cpu_ns(pid)?, cost()?);
    let mut at = Instant::now();
    for _ in 0..SECONDS {
        let next = at + Duration::from_secs(1);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        let (cpu, spent) = (cpu_ns(pid)?, cost()?);
        let elapsed = at.elapsed().as_secs_f64();
        at = Instant::now();
        seconds.push((
            cpu.saturating_sub(cpu_before) as f64 / 1e9 / elapsed,
            (spent - cost_before) / elapsed,
        ));
        (cpu_before, cost_before) = (cpu, spent);
    }
    let mut result = OnOff {
        rate,
        budget,
        on: Vec::new(),
        off: Vec::new(),
        estimate: Vec::new(),
    };
    // ctxleak adds to its counter once a second: a second is steady when it and both
    // neighbours agree on whether the probes cost anything.
    for window in seconds.windows(3) {
        let on = |(_, estimate): (f64, f64)| estimate > 0.0;
        let (before, this, after) = (window[0], window[1], window[2]);
        if on(before) && on(this) && on(after) {
            result.on.push(this.0);
            result.estimate.push(this.1);
        } else if !on(before) && !on(this) && !on(after) {
            result.off.push(this.0);
        }
    }
    Ok(result)
}

fn report(out: &Path, results: &[OnOff], took: Duration) -> Result<()> {
    let pct = |share: f64| format!("{:.2}%", share * 100.0);
    let mut md = String::new();
    writeln!(
        md,
        "# What the probes cost by request rate, on against off\n"
    )?;
    writeln!(
        md,
        "Go {}, kernel {}; the net/http fixture pinned to CPU 0 with GOMAXPROCS=1, the load \
         generator and ctxleak on CPU 1; at each rate ctxleak under a budget of about half its \
         estimate, so that the probes switch every few seconds; {SECONDS} s sampled a second \
         at a time after {} s of load; {:.0} s in all, builds aside. \"Measured\" is the \
         target's mean CPU over steady seconds with the probes on less that over steady \
         seconds off (± the noise of the two means); \"estimate\" is ctxleak's \
         (`ctxleak_probe_cost_seconds_total`) over the seconds on. The estimate should not be \
         below the measurement by more than its noise.\n",
        go::NEWEST,
        kernel(),
        WARMUP.as_secs(),
        took.as_secs_f64()
    )?;
    writeln!(
        md,
        "| requests/s | budget | seconds on / off | target CPU off | measured | estimate | estimate / measured |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|")?;
    let mut json_rates = Vec::new();
    for result in results {
        let (measured, noise) = result.measured();
        let estimate = mean(&result.estimate);
        writeln!(
            md,
            "| {} | {} | {} / {} | {} | {} ±{} | {} | {:.2} |",
            result.rate,
            result.budget,
            result.on.len(),
            result.off.len(),
            pct(mean(&result.off)),
            pct(measured),
            pct(noise),
            pct(estimate),
            estimate / measured
        )?;
        json_rates.push(json!({
            "requests_per_second": result.rate,
            "budget": result.budget,
            "seconds_on": result.on.len(),
            "seconds_off": result.off.len(),
            "target_cpu_off": mean(&result.off),
            "measured": measured,
            "noise": noise,
            "estimate": estimate,
        }));
    }
    let json = json!({
        "bench": "hitcost",
        "go": go::NEWEST,
        "kernel": kernel(),
        "seconds": took.as_secs_f64(),
        "rates": json_rates,
    });
    publish(out, "hitcost", &md, &json)
}
