//! `cargo xtask bench census` (and `census-million`): ctxleak's goroutine census (g structs,
//! stacks and symbols, groups) of a program with 100 000 (1 000 000) parked goroutines, against
//! Go's own goroutine dump in that program; and the pauses the program sees meanwhile, against
//! an idle window (the noise floor).

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::shared::{kernel, publish, quiet_attach_args};
use crate::workspace::Workspace;
use crate::{fixtures, go, process};

/// Goroutines the `many` fixture parks for the census benchmark.
const CENSUS_GOROUTINES: u32 = 100_000;
/// Goroutines it parks for `census-million`.
const MILLION_GOROUTINES: u32 = 1_000_000;
/// Rounds of Go's own dump.
const CENSUS_ROUNDS: u32 = 10;
/// Rounds of ctxleak's census after the first: every 12th (`groups::FULL_READ_EVERY`) reads
/// every stack again, the others only those of goroutines that ran. Two of the first kind.
const CTXLEAK_CENSUS_ROUNDS: u32 = 24;
/// The period of the fixture's pause meter: a gap beyond it is a pause.
const METER_PERIOD_MS: f64 = 1.0;

/// `bench census`: see [`census`].
pub(super) fn run(ws: &Workspace, out: &Path) -> Result<()> {
    census(ws, out, CENSUS_GOROUTINES, "census")
}

/// `bench census-million`: [`census`] of 1 000 000 goroutines (about three minutes, and some
/// 3 GB for the target).
pub(super) fn million(ws: &Workspace, out: &Path) -> Result<()> {
    census(ws, out, MILLION_GOROUTINES, "census-million")
}

/// ctxleak's census of 100 000 goroutines in the `many` fixture, stage by stage (the
/// `census` bench binary), against Go's own goroutine dump in the same process
/// (`pprof.Lookup("goroutine").WriteTo(io.Discard, 1)`), with the largest scheduling gap the
/// fixture measured in itself during each, and during an idle window of the same length.
fn census(ws: &Workspace, out: &Path, goroutines: u32, name: &str) -> Result<()> {
    let version = go::NEWEST;
    fixtures::build(ws, &[version], &["many".to_string()], false)?;
    let binary = ws.fixture(version, "many");
    let bench_args = |run: bool| {
        let mut args: Vec<String> = [
            "bench",
            "--quiet",
            "--package",
            "ctxleak-daemon",
            "--no-default-features",
            "--bench",
            "census",
        ]
        .map(String::from)
        .to_vec();
        if !run {
            args.push("--no-run".into());
        }
        args
    };
    // Built first, so that no compiling happens while the target is being measured.
    let mut build = process::cargo();
    build.current_dir(ws.root()).args(bench_args(false));
    process::run(&mut build).context("cannot build the census benchmark")?;
    let ctxleak_binary = crate::run::build_ctxleak(ws, true)?;

    let mut fixture = Fixture::start(&binary, goroutines)?;
    let pid = fixture.pid();
    let mut cmd = process::cargo();
    cmd.current_dir(ws.root())
        .args(bench_args(true))
        .arg("--")
        .arg(pid.to_string())
        .arg(&binary)
        .args(["--rounds", &CTXLEAK_CENSUS_ROUNDS.to_string(), "--wait"]);
    let shown = process::show(&cmd);
    println!("bench: census of PID {pid}: `{shown}`");

    // ctxleak's rounds, with the fixture's pause window around them.
    let mut bench = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start `{shown}`"))?;
    let bench_out = BufReader::new(bench.stdout.take().context("no stdout")?);
    let mut bench_in = bench.stdin.take().context("no stdin")?;
    let mut result = None;
    let mut ctxleak_pause = None;
    for line in bench_out.lines() {
        let line = line.context("cannot read the census benchmark's output")?;
        if line == "waiting" {
            fixture.ask("pause")?; // Starts a new window.
            writeln!(bench_in, "go").context("cannot start the census rounds")?;
        } else if line.starts_with('{') {
            result = Some(line);
        }
    }
    if result.is_some() {
        ctxleak_pause = Some(fixture.ask("pause")?);
    }
    let status = bench.wait()?;
    if !status.success() {
        bail!("`{shown}` failed ({status}): see its message above");
    }
    let (Some(result), Some(ctxleak_pause)) = (result, ctxleak_pause) else {
        bail!("`{shown}` printed no result");
    };
    let ctxleak: Value =
        serde_json::from_str(&result).context("the census benchmark printed malformed JSON")?;

    // The noise floor: a window as long as ctxleak's, with nothing running; then one with a
    // core kept busy by this process, which reads nothing of the target: what ctxleak's use
    // of one of the machine's cores alone does to the target's scheduling.
    let window = Duration::from_micros(ctxleak_pause["window_us"].as_u64().unwrap_or(1_000_000));
    fixture.ask("pause")?;
    std::thread::sleep(window);
    let idle = fixture.ask("pause")?;
    fixture.ask("pause")?;
    let start = std::time::Instant::now();
    while start.elapsed() < window {
        std::hint::spin_loop();
    }
    let busy = fixture.ask("pause")?;

    // Go's own dump of every goroutine: debug=1 rounds, then one debug=2 (runtime.Stack).
    let mut dumps = Vec::new();
    for _ in 0..CENSUS_ROUNDS {
        dumps.push(fixture.ask("profile")?);
    }
    let stacks = fixture.ask("stacks")?;
    let attached = attach_memory(&ctxleak_binary, &mut fixture)?;
    drop(fixture);

    let kernel = kernel();
    let stage = |name: &str, what: &str| ctxleak["stages"][name][what].as_f64().unwrap_or(0.0);
    let first = |name: &str| ctxleak["first"][name]["median_ms"].as_f64().unwrap_or(0.0);
    let full = |name: &str| {
        ctxleak["full_reread"][name]["median_ms"]
            .as_f64()
            .unwrap_or(0.0)
    };
    let mut dump_ms: Vec<f64> = dumps
        .iter()
        .map(|d| d["dump_us"].as_f64().unwrap_or(0.0) / 1e3)
        .collect();
    dump_ms.sort_by(f64::total_cmp);
    let dump_median = dump_ms[dump_ms.len() / 2];
    let dump_max = dump_ms[dump_ms.len() - 1];
    let max_gap_ms = |window: &Value| window["max_gap_us"].as_f64().unwrap_or(0.0) / 1e3;
    let dump_gap = dumps.iter().map(max_gap_ms).fold(0.0, f64::max);
    let dump_window_us: u64 = dumps.iter().filter_map(|d| d["window_us"].as_u64()).sum();
    let dump_samples: u64 = dumps.iter().filter_map(|d| d["samples"].as_u64()).sum();
    let total = stage("total", "median_ms");
    let goroutines = ctxleak["census"]["goroutines"].as_u64().unwrap_or(0);

    let mut md = String::new();
    writeln!(md, "# Goroutine census of {goroutines} goroutines\n")?;
    writeln!(md, "Go {version}, kernel {kernel}; `{shown}`\n")?;
    writeln!(
        md,
        "Target: `many -n {goroutines}` (fixtures/go/cmd/many): {goroutines} goroutines in \
         ctxleak's census ({} user, {} system, {} unreadable), {} frames, {} groups. \
         {CTXLEAK_CENSUS_ROUNDS} rounds after a first one with cold caches that reads every \
         stack. Every 12th rereads every stack (warm caches): what a census costs when every \
         goroutine ran since the last one. The others read again only the stacks of goroutines \
         that ran (`g.trackingSeq` or `g.sched` changed): here none, as in a program whose \
         goroutines are stuck; median and maximum of those. The baseline is Go's own goroutine \
         dump in the target, `pprof.Lookup(\"goroutine\").WriteTo(io.Discard, 1)`, median of \
         {CENSUS_ROUNDS}.\n",
        ctxleak["census"]["user"],
        ctxleak["census"]["system"],
        ctxleak["census"]["unreadable"],
        ctxleak["census"]["frames"],
        ctxleak["census"]["groups"],
    )?;
    writeln!(
        md,
        "| stage | median | max | every stack reread | first round | median / Go's dump |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for (name, label) in [
        ("take", "g structs (`census::take`)"),
        (
            "symbolize",
            "stacks and symbols (`groups::symbolize_census`)",
        ),
        (
            "listen",
            "who listens on a context (`listeners::Listeners::update`: sudogs of the goroutines read again in a receive or a select)",
        ),
        (
            "group",
            "groups (`GroupTracker::runtime_bounds` from `g.waitsince`, `GroupTracker::update`)",
        ),
        (
            "stuck",
            "channel evidence (`chans::ChannelWatch::update`; worst case: every group in a stuck wait taken as stuck)",
        ),
        (
            "profile",
            "pprof profile (`groups::profile_samples`, `pprof::goroutine_profile`)",
        ),
        ("total", "**census**"),
        (
            "unwind_only",
            "stack reads and unwinding alone (part of symbols)",
        ),
        (
            "unwind_many",
            "the same, stacks read in batches (`census::unwind_many`)",
        ),
    ] {
        writeln!(
            md,
            "| {label} | {:.1} ms | {:.1} ms | {:.1} ms | {:.1} ms | {:.2}× |",
            stage(name, "median_ms"),
            stage(name, "max_ms"),
            full(name),
            first(name),
            stage(name, "median_ms") / dump_median,
        )?;
    }
    writeln!(
        md,
        "| Go's dump (debug=1), the baseline | {dump_median:.1} ms | {dump_max:.1} ms | | | 1× |"
    )?;
    writeln!(
        md,
        "| Go's dump (debug=2, `runtime.Stack` of all), 1 round | {:.1} ms | | | | {:.2}× |\n",
        stacks["dump_us"].as_f64().unwrap_or(0.0) / 1e3,
        stacks["dump_us"].as_f64().unwrap_or(0.0) / 1e3 / dump_median,
    )?;
    writeln!(
        md,
        "Pauses of the target: a goroutine in it reads the clock every {METER_PERIOD_MS} ms; \
         the largest gap between two reads shows any stop. The idle window, as long as \
         ctxleak's, is the noise floor of this machine; in the busy one this process keeps a \
         core busy without reading the target, as ctxleak's census does while it reads.\n"
    )?;
    writeln!(
        md,
        "| target's window | length | clock reads | largest gap | / idle |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let idle_gap = max_gap_ms(&idle);
    let window = |label: &str, window_us: u64, samples: u64, gap: f64| {
        format!(
            "| {label} | {:.0} ms | {samples} | {gap:.1} ms | {:.2}× |",
            window_us as f64 / 1e3,
            gap / idle_gap
        )
    };
    let field = |v: &Value, name: &str| v[name].as_u64().unwrap_or(0);
    let measured = |label: String, v: &Value| {
        (
            label,
            field(v, "window_us"),
            field(v, "samples"),
            max_gap_ms(v),
        )
    };
    let rows = [
        measured("idle (noise floor)".into(), &idle),
        measured(
            "one core busy, nothing read (CPU contention alone)".into(),
            &busy,
        ),
        measured(
            format!("ctxleak's {} census rounds", CTXLEAK_CENSUS_ROUNDS + 1),
            &ctxleak_pause,
        ),
        (
            format!("Go's dump (debug=1), {CENSUS_ROUNDS} rounds"),
            dump_window_us,
            dump_samples,
            dump_gap,
        ),
        measured("Go's dump (debug=2), 1 round".into(), &stacks),
    ];
    for (label, window_us, samples, gap) in rows {
        writeln!(md, "{}", window(&label, window_us, samples, gap))?;
    }
    writeln!(
        md,
        "\nctxleak's census: {total:.1} ms median with only goroutines that ran reread, \
         {:.1} ms rereading every stack, {:.1} ms the first; {:.2}× Go's dump (goal of the \
         issue: under 50 ms).",
        full("total"),
        first("total"),
        total / dump_median
    )?;

    let mb = |name: &str| attached[name].as_f64().unwrap_or(0.0) / 1e6;
    let per = |name: &str| attached[name].as_f64().unwrap_or(0.0) / goroutines.max(1) as f64;
    writeln!(
        md,
        "\n`ctxleak attach` on the same target for {ATTACH_WINDOW_S} s (its RSS from /proc every \
         100 ms): {:.1} MB between censuses ({:.0} bytes per goroutine), {:.1} MB at most \
         ({:.0} per goroutine); the target's largest gap {:.1} ms, against {:.1} ms idle just \
         before.",
        mb("rss_between_censuses_bytes"),
        per("rss_between_censuses_bytes"),
        mb("rss_peak_bytes"),
        per("rss_peak_bytes"),
        attached["gap"]["max_gap_us"].as_f64().unwrap_or(0.0) / 1e3,
        attached["idle"]["max_gap_us"].as_f64().unwrap_or(0.0) / 1e3,
    )?;

    let json = json!({
        "go": version,
        "kernel": kernel,
        "command": shown,
        "fixture": format!("{} -n {goroutines}", binary.display()),
        "attach": attached,
        "goroutines": goroutines,
        "ctxleak": ctxleak,
        "go_dump": {
            "call": "pprof.Lookup(\"goroutine\").WriteTo(io.Discard, 1)",
            "median_ms": dump_median,
            "max_ms": dump_max,
            "rounds": dumps,
        },
        "go_dump_debug2": stacks,
        "ratio_census_to_go_dump": total / dump_median,
        "ratio_full_reread_to_go_dump": full("total") / dump_median,
        "pauses": {
            "meter_period_ms": METER_PERIOD_MS,
            "idle": idle,
            "busy_core": busy,
            "ctxleak": ctxleak_pause,
            "go_dump_max_gap_us": (dump_gap * 1e3).round(),
            "go_dump_debug2": { "max_gap_us": stacks["max_gap_us"], "window_us": stacks["window_us"] },
        },
    });
    publish(out, name, &md, &json)
}

/// How long `attach_memory` watches `ctxleak attach`: the attach and several censuses.
const ATTACH_WINDOW_S: u64 = 20;

/// `ctxleak attach` on the fixture for [`ATTACH_WINDOW_S`]: its RSS sampled every 100 ms
/// (the lowest in the second half, after the first census: what it keeps between censuses;
/// and the most), and the fixture's largest scheduling gap meanwhile against an idle window
/// just before. The fixture's GC is stopped first: its forced collection every two minutes
/// takes seconds at this size and makes gaps of its own, in either window.
fn attach_memory(ctxleak: &Path, fixture: &mut Fixture) -> Result<Value> {
    let window = Duration::from_secs(ATTACH_WINDOW_S);
    fixture.ask("nogc")?;
    std::thread::sleep(window);
    let idle = fixture.ask("pause")?;
    let mut child = Command::new(ctxleak)
        .args(quiet_attach_args(fixture.pid()))
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", ctxleak.display()))?;
    let start = std::time::Instant::now();
    let mut samples = Vec::new();
    while start.elapsed() < window {
        let Ok(resources) = crate::chaos::Resources::read(child.id()) else {
            break;
        };
        samples.push((start.elapsed(), resources.rss_kib * 1024));
        std::thread::sleep(Duration::from_millis(100));
    }
    let gap = fixture.ask("pause")?;
    let _ = child.kill();
    let _ = child.wait();
    if samples.len() < 10 {
        bail!("`ctxleak attach --pid {}` exited early", fixture.pid());
    }
    let between = samples
        .iter()
        .filter(|(at, _)| *at > window / 2)
        .map(|&(_, rss)| rss)
        .min()
        .unwrap_or(0);
    let peak = samples.iter().map(|&(_, rss)| rss).max().unwrap_or(0);
    Ok(json!({
        "rss_between_censuses_bytes": between,
        "rss_peak_bytes": peak,
        "idle": idle,
        "gap": gap,
    }))
}

/// The running `many` fixture, which answers requests on stdin with a line of JSON. Dropping it
/// kills it.
struct Fixture {
    child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Fixture {
    fn start(binary: &Path, goroutines: u32) -> Result<Self> {
        let mut child = Command::new(binary)
            .arg("-n")
            .arg(goroutines.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let stdin = child.stdin.take().context("no stdin")?;
        let lines = process::lines_of(&mut child)?;
        let mut fixture = Self {
            child,
            stdin,
            lines,
        };
        let ready = fixture.line(Duration::from_secs(120))?;
        if ready != "ready" {
            bail!("{} said {ready:?} instead of \"ready\"", binary.display());
        }
        Ok(fixture)
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self, timeout: Duration) -> Result<String> {
        self.lines.recv_timeout(timeout).map_err(|_| {
            anyhow::anyhow!(
                "the many fixture did not answer within {} s (or exited)",
                timeout.as_secs()
            )
        })
    }

    /// Sends one request and returns the fixture's answer.
    fn ask(&mut self, request: &str) -> Result<Value> {
        writeln!(self.stdin, "{request}").context("the many fixture exited")?;
        let line = self.line(Duration::from_secs(120))?;
        serde_json::from_str(&line)
            .with_context(|| format!("the many fixture answered {request:?} with {line:?}"))
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
