//! `cargo xtask bench overhead`: what ctxleak costs the program it watches.
//!
//! Two targets, each pinned to CPU 0 with GOMAXPROCS=1 (so every uprobe trap lands on the
//! target's CPU), with the load generator and ctxleak on CPU 1:
//! - `httpserver`, a net/http hello handler making one WithTimeout per request, under `wrk`
//!   (32 connections on loopback): requests per second and p99 latency;
//! - `churn`, which starts and exits goroutines as fast as it can: time per goroutine.
//!
//! Modes, interleaved over rounds (medians reported): no ctxleak; the floor (the same uprobes
//! with do-nothing programs: the kernel's trap cost, which no uprobe tool can beat); ctxleak
//! with every probe on; and with --park-times, with its own floor. Every mode keeps its probes
//! always on (`--max-overhead exact`, [`EXACT`]): this bench prices a probe hit; what the
//! default budget makes of that price is `bench budget`'s (budget.rs), which shares the
//! targets, builds, pinning, attaching and CPU accounting (shared.rs). Ratios are to "no
//! ctxleak"; ctxleak's extra cost is also given as a multiple of its floor. Two more floors,
//! with programs that spin for a known time, give what each nanosecond inside a program costs
//! the target.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::shared::{
    Running, Tools, attach_serving, cpu_ns, kernel, measure_churn, median, publish, scrape,
    start_httpserver,
};
use crate::workspace::Workspace;
use crate::{go, process};

const ROUNDS: usize = 3;
const WRK_SECONDS: u32 = 5;
const CHURN_GOROUTINES: u32 = 300_000;

/// Given to ctxleak in every mode: probes always on, whatever the default budget.
const EXACT: [&str; 2] = ["--max-overhead", "exact"];

/// (name, extra `ctxleak attach` arguments besides [`EXACT`]; None: ctxleak not running).
const MODES: &[(&str, Option<&[&str]>)] = &[
    ("none", None),
    ("floor", Some(&["--floor"])),
    ("ctxleak", Some(&[])),
    ("park-times floor", Some(&["--park-times", "--floor"])),
    ("ctxleak --park-times", Some(&["--park-times"])),
    // The goroutine probes alone: the difference to "ctxleak" is what the context probes cost.
    ("ctxleak --no-contexts", Some(&["--no-contexts"])),
    // Cancellations probed instead of read from memory: the difference to "ctxleak" is what
    // the cancellation probe costs.
    ("ctxleak --cancel-probe", Some(&["--cancel-probe"])),
    // The floor with programs that spin for a known time: the difference between the two is
    // what each nanosecond inside a uprobe program costs the target (see `report`).
    (
        "floor, programs spinning 100 ns",
        Some(&["--floor-spin-ns", "100"]),
    ),
    (
        "floor, programs spinning 500 ns",
        Some(&["--floor-spin-ns", "500"]),
    ),
];

/// How long mode `i`'s programs spin, from its `--floor-spin-ns` argument.
fn spin_ns(i: usize) -> Option<f64> {
    let args = MODES.get(i)?.1?;
    let at = args.iter().position(|arg| *arg == "--floor-spin-ns")?;
    args.get(at + 1)?.parse().ok()
}

pub(super) fn run(ws: &Workspace, out: &Path) -> Result<()> {
    ensure_wrk()?;
    let tools = Tools::build(ws, out)?;
    let mut http: Vec<Vec<HttpRun>> = vec![Vec::new(); MODES.len()];
    let mut churn: Vec<Vec<f64>> = vec![Vec::new(); MODES.len()];
    for round in 0..ROUNDS {
        for (i, (name, args)) in MODES.iter().enumerate() {
            let args = args.map(|args| [args, &EXACT].concat());
            let args = args.as_deref();
            let run = measure_http(&tools, args).with_context(|| format!("http, {name}"))?;
            let ns = measure_churn(&tools, args, CHURN_GOROUTINES, false)
                .with_context(|| format!("churn, {name}"))?
                .ns_per_goroutine;
            println!(
                "overhead: round {}: {name}: {:.0} req/s, p99 {:.2} ms, target CPU {:.0} ns/request, churn {ns:.0} ns/goroutine",
                round + 1,
                run.rps,
                run.p99_ms,
                run.cpu_ns_per_request,
            );
            http[i].push(run);
            churn[i].push(ns);
        }
    }
    println!("overhead: probe profile (--probe-stats)");
    let probes = profile_probes(&tools).context("probe profile")?;
    report(out, &http, &churn, &probes)
}

/// One wrk run against the net/http target.
#[derive(Clone, Copy)]
struct HttpRun {
    rps: f64,
    p99_ms: f64,
    /// The target's own CPU time (all its threads, uprobe traps included: the kernel runs
    /// them in the target's context) per request served.
    cpu_ns_per_request: f64,
}

fn report(
    out: &Path,
    http: &[Vec<HttpRun>],
    churn: &[Vec<f64>],
    probes: &[ProbeShare],
) -> Result<()> {
    let of = |field: fn(&HttpRun) -> f64| -> Vec<f64> {
        http.iter()
            .map(|runs| median(runs.iter().map(field).collect()))
            .collect()
    };
    let (rps, p99, cpu) = (
        of(|r| r.rps),
        of(|r| r.p99_ms),
        of(|r| r.cpu_ns_per_request),
    );
    let ns: Vec<f64> = churn.iter().map(|runs| median(runs.clone())).collect();
    // Extra time per request / per goroutine over "no ctxleak", in ns.
    let per_request = |i: usize| 1e9 / rps[i] - 1e9 / rps[0];
    // The same from the target's CPU time: what the probes cost the service itself, apart
    // from wrk sharing CPU 1 with ctxleak's daemon (which drains the events there).
    let cpu_per_request = |i: usize| cpu[i] - cpu[0];
    let per_goroutine = |i: usize| ns[i] - ns[0];
    let kernel = kernel();

    let mut md = String::new();
    writeln!(md, "# Overhead on the target\n")?;
    writeln!(
        md,
        "Go {}, kernel {}; target pinned to CPU 0 with GOMAXPROCS=1, wrk and ctxleak on CPU 1; \
         median of {ROUNDS} interleaved rounds. `wrk -t1 -c32 -d{WRK_SECONDS}s` on a net/http hello \
         handler (one WithTimeout per request); churn: {CHURN_GOROUTINES} goroutines started and \
         exited, each making and cancelling a WithTimeout.\n",
        go::NEWEST,
        kernel
    )?;
    writeln!(
        md,
        "| mode | req/s | vs none | p99 ms | extra ns/request | target CPU ns/request | extra CPU ns/request | churn ns/goroutine | vs none | extra ns/goroutine |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|")?;
    for (i, (name, _)) in MODES.iter().enumerate() {
        writeln!(
            md,
            "| {name} | {:.0} | {:.3} | {:.2} | {:.0} | {:.0} | {:.0} | {:.0} | {:.3} | {:.0} |",
            rps[i],
            rps[i] / rps[0],
            p99[i],
            per_request(i),
            cpu[i],
            cpu_per_request(i),
            ns[i],
            ns[i] / ns[0],
            per_goroutine(i),
        )?;
    }
    let multiple = |cost: f64, floor: f64| {
        if floor > 0.0 {
            format!("{:.2}×", cost / floor)
        } else {
            "n/a (floor not above noise)".into()
        }
    };
    writeln!(md)?;
    writeln!(
        md,
        "ctxleak's extra cost as a multiple of the floor: {} per request in the target's CPU \
         time ({} in throughput), {} per goroutine; with --park-times: {} per request ({} in \
         throughput), {} per goroutine.",
        multiple(cpu_per_request(2), cpu_per_request(1)),
        multiple(per_request(2), per_request(1)),
        multiple(per_goroutine(2), per_goroutine(1)),
        multiple(cpu_per_request(4), cpu_per_request(3)),
        multiple(per_request(4), per_request(3)),
        multiple(per_goroutine(4), per_goroutine(3)),
    )?;
    writeln!(
        md,
        "\nThe context probes' share (ctxleak minus ctxleak --no-contexts): {:.0} ns of the \
         target's CPU per request ({:.0} ns in throughput), {:.0} ns per goroutine (each makes \
         and cancels a WithTimeout).",
        cpu_per_request(2) - cpu_per_request(5),
        per_request(2) - per_request(5),
        per_goroutine(2) - per_goroutine(5),
    )?;
    writeln!(
        md,
        "\n## Where ctxleak's time on the target goes\n\nOne more net/http run with \
         `--probe-stats` (the kernel's per-program run count and time; the counting itself \
         adds two clock reads per run). Program time only: the trap around each run is the \
         floor's.\n"
    )?;
    writeln!(md, "| probe | runs/request | ns/run | ns/request |")?;
    writeln!(md, "|---|---|---|---|")?;
    for share in probes {
        writeln!(
            md,
            "| {} | {:.2} | {:.0} | {:.0} |",
            share.probe,
            share.runs_per_request,
            share.ns_per_run,
            share.runs_per_request * share.ns_per_run
        )?;
    }
    let total: f64 = probes
        .iter()
        .map(|share| share.runs_per_request * share.ns_per_run)
        .sum();
    let runs: f64 = probes.iter().map(|share| share.runs_per_request).sum();
    writeln!(md, "| all | {runs:.2} | | {total:.0} |")?;
    // The two spinning floors of MODES, shorter first.
    let mut spinning: Vec<usize> = (0..MODES.len()).filter(|&i| spin_ns(i).is_some()).collect();
    spinning.sort_by(|&a, &b| {
        spin_ns(a)
            .partial_cmp(&spin_ns(b))
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    let [short, long] = spinning[..] else {
        bail!(
            "MODES must hold two floors with --floor-spin-ns, not {}",
            spinning.len()
        );
    };
    // Each spinning run spins at least its length and stops within a clock read of it, so
    // the difference between the two spinning floors is (difference of lengths) x (runs per
    // request) of program time, whatever a run's fixed part costs.
    let spun = spin_ns(long)
        .zip(spin_ns(short))
        .map(|(l, s)| (l - s) * runs);
    let per_program_ns = spun
        .filter(|spun| *spun > 0.0)
        .map(|spun| (cpu[long] - cpu[short]) / spun);
    writeln!(
        md,
        "\n## What time inside a program costs the target\n\nThe floor again, its programs \
         spinning on the clock for {:.0} ns and for {:.0} ns per run ({runs:.2} runs per \
         request, from the profile above): {:.0} vs {:.0} ns of the target's CPU per request.",
        spin_ns(short).unwrap_or(f64::NAN),
        spin_ns(long).unwrap_or(f64::NAN),
        cpu[short],
        cpu[long],
    )?;
    match per_program_ns {
        Some(factor) => writeln!(
            md,
            "Each nanosecond inside a uprobe program costs the target {factor:.2} ns. At that \
             rate ctxleak's programs ({total:.0} ns per request as counted above, the \
             counting included) account for about {:.0} ns of the {:.0} ns ctxleak adds over \
             the floor.",
            factor * total,
            cpu_per_request(2) - cpu_per_request(1),
        )?,
        None => writeln!(md, "No runs were counted: no factor.")?,
    }
    let json = json!({
        "go": go::NEWEST,
        "target_cpu_ns_per_program_ns": per_program_ns,
        "probe_profile": probes.iter().map(|share| json!({
            "probe": share.probe,
            "runs_per_request": share.runs_per_request,
            "ns_per_run": share.ns_per_run,
        })).collect::<Vec<_>>(),
        "kernel": kernel,
        "modes": MODES.iter().enumerate().map(|(i, (name, args))| json!({
            "mode": name,
            "ctxleak_args": args.map(|args| [args, &EXACT].concat()),
            "requests_per_second": rps[i],
            "p99_ms": p99[i],
            "target_cpu_ns_per_request": cpu[i],
            "churn_ns_per_goroutine": ns[i],
            "runs_http": http[i].iter().map(|run| json!({
                "requests_per_second": run.rps,
                "p99_ms": run.p99_ms,
                "target_cpu_ns_per_request": run.cpu_ns_per_request,
            })).collect::<Vec<_>>(),
            "runs_churn_ns": churn[i],
        })).collect::<Vec<_>>(),
    });
    publish(out, "overhead", &md, &json)
}

fn ensure_wrk() -> Result<()> {
    if which::which("wrk").is_ok() {
        return Ok(());
    }
    println!("overhead: installing wrk (Debian package)");
    process::run(Command::new("apt-get").arg("update").arg("-qq"))?;
    process::run(Command::new("apt-get").args(["install", "-y", "-qq", "wrk"]))
        .context("cannot install wrk: run `apt-get install wrk` as root")
}

/// Attaches ctxleak (on CPU 1) and waits until its probes are in.
fn attach(tools: &Tools, pid: u32, args: &[&str]) -> Result<Running> {
    attach_serving(tools, pid, args).map(|(running, _)| running)
}

/// `wrk` on CPU 1 for `seconds`, with latencies: its output.
fn wrk(url: &str, seconds: u32) -> Result<String> {
    process::output(Command::new("taskset").args([
        "-c",
        "1",
        "wrk",
        "-t1",
        "-c32",
        &format!("-d{seconds}s"),
        "--latency",
        url,
    ]))
}

/// Requests served, from wrk's "  470000 requests in 5.00s, 56.12MB read".
fn wrk_requests(output: &str) -> Result<f64> {
    output
        .lines()
        .find_map(|line| line.split_once(" requests in "))
        .and_then(|(count, _)| count.trim().parse::<f64>().ok())
        .filter(|&count| count > 0.0)
        .with_context(|| format!("no request count in wrk's output: {output}"))
}

/// One probe's share of a request, from the kernel's run statistics.
struct ProbeShare {
    probe: String,
    runs_per_request: f64,
    ns_per_run: f64,
}

/// Where ctxleak's own time on the target goes, probe by probe: one more net/http run with
/// `--probe-stats` (the kernel's per-program run counts and times, read from ctxleak's
/// metrics before and after). Not one of the timed modes: the counting adds two clock reads
/// to every run.
fn profile_probes(tools: &Tools) -> Result<Vec<ProbeShare>> {
    let (server, _stdout, address) = start_httpserver(tools)?;
    let args = [&["--probe-stats"][..], &EXACT].concat();
    let (_ctxleak, metrics) = attach_serving(tools, server.0.id(), &args)?;
    let url = format!("http://{address}/");
    wrk(&url, 1)?;
    // ctxleak refreshes the statistics every second.
    std::thread::sleep(Duration::from_millis(1500));
    let before = probe_stats(&metrics)?;
    let requests = wrk_requests(&wrk(&url, WRK_SECONDS)?)?;
    std::thread::sleep(Duration::from_millis(1500));
    let after = probe_stats(&metrics)?;
    let mut shares: Vec<ProbeShare> = after
        .iter()
        .map(|(probe, &(runs, seconds))| {
            let (runs0, seconds0) = before.get(probe).copied().unwrap_or((0.0, 0.0));
            let runs = runs - runs0;
            ProbeShare {
                probe: probe.clone(),
                runs_per_request: runs / requests,
                ns_per_run: if runs > 0.0 {
                    (seconds - seconds0) * 1e9 / runs
                } else {
                    0.0
                },
            }
        })
        .collect();
    shares.sort_by(|a, b| {
        (b.runs_per_request * b.ns_per_run).total_cmp(&(a.runs_per_request * a.ns_per_run))
    });
    Ok(shares)
}

/// `ctxleak_probe_runs_total` and `ctxleak_probe_run_seconds_total` by probe, from the
/// metrics endpoint at `address`.
fn probe_stats(address: &str) -> Result<std::collections::BTreeMap<String, (f64, f64)>> {
    let mut stats = std::collections::BTreeMap::<String, (f64, f64)>::new();
    for (series, value) in scrape(address)? {
        let probe_of = |prefix: &str| {
            series
                .strip_prefix(prefix)?
                .strip_prefix("{probe=\"")?
                .strip_suffix("\"}")
                .map(str::to_owned)
        };
        if let Some(probe) = probe_of("ctxleak_probe_runs_total") {
            stats.entry(probe).or_default().0 = value;
        } else if let Some(probe) = probe_of("ctxleak_probe_run_seconds_total") {
            stats.entry(probe).or_default().1 = value;
        }
    }
    if stats.is_empty() {
        bail!("ctxleak at {address} exports no probe statistics");
    }
    Ok(stats)
}

fn measure_http(tools: &Tools, ctxleak: Option<&[&str]>) -> Result<HttpRun> {
    let (server, _stdout, address) = start_httpserver(tools)?;
    let _ctxleak = ctxleak
        .map(|args| attach(tools, server.0.id(), args))
        .transpose()?;
    let url = format!("http://{address}/");
    wrk(&url, 1)?; // Warm-up: connections, caches, the JIT-free but lazy parts of both sides.
    let cpu_before = cpu_ns(server.0.id())?;
    let output = wrk(&url, WRK_SECONDS)?;
    let cpu = cpu_ns(server.0.id())?.saturating_sub(cpu_before);
    let requests = wrk_requests(&output)?;
    let rps = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("Requests/sec:"))
        .and_then(|value| value.trim().parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's output: {output}"))?;
    let p99 = output
        .lines()
        .find_map(|line| line.trim().strip_prefix("99%"))
        .and_then(|value| parse_ms(value.trim()))
        .with_context(|| format!("no 99% latency in wrk's output: {output}"))?;
    Ok(HttpRun {
        rps,
        p99_ms: p99,
        cpu_ns_per_request: cpu as f64 / requests,
    })
}

/// wrk's latencies: "812.00us", "1.23ms", "2.00s".
fn parse_ms(text: &str) -> Option<f64> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1e3)
    } else {
        return None;
    };
    number.parse::<f64>().ok().map(|n| n * scale)
}
