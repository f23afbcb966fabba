//! `cargo xtask bench`: benchmarks, each reported as ratios to a baseline measured in the
//! same run (these machines are noisy), with the command, Go version and kernel recorded.
//! Results go to target/bench/<name>.md and .json.
//!
//! Benchmarks so far:
//! - `parse`: attach-time reading of a large (20 MB+) Go binary, with DWARF and stripped,
//!   against reading the same file from the page cache.
//! - `census`: ctxleak's goroutine census (g structs, stacks and symbols, groups) of a program
//!   with 100 000 parked goroutines, against Go's own goroutine dump in that program; and the
//!   pauses the program sees meanwhile, against an idle window (the noise floor).
//! - `overhead` (overhead.rs): what the probes cost the target.
//! - `budget` (budget.rs): the probes under `--max-overhead`: their cost at several request
//!   rates and under goroutine churn, and how fast leaks are still named.
//! - `ingest`: probe events per second one core of the daemon decodes and tracks, from a
//!   synthetic stream, against decoding alone.
//! - `memory`: the daemon's heap per tracked goroutine with 1 000 000 live ones, against the
//!   raw event data.
//! - `attach` (attach_time.rs): from `ctxleak attach --pid N` starting to its "attached"
//!   line, on the large binary with and without DWARF, against parsing the binary alone.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::workspace::Workspace;
use crate::{fixtures, go, process, setup};

use crate::attach_time;

/// Generated types in the large binary: each adds two methods (code, pclntab, DWARF).
const GENERATED_TYPES: usize = 8000;

pub fn run(ws: &Workspace, only: Option<&str>) -> Result<()> {
    setup::run(ws, false)?;
    let out = ws.cargo_target().join("bench");
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    match only {
        None => {
            parse(ws, &out)?;
            census(ws, &out, CENSUS_GOROUTINES, "census")?;
            ingest(ws, &out)?;
            memory(ws, &out)?;
            attach_time::run(ws, &out)?;
            crate::overhead::run(ws, &out)?;
            crate::budget::run(ws, &out)
        }
        Some("parse") => parse(ws, &out),
        Some("census") => census(ws, &out, CENSUS_GOROUTINES, "census"),
        Some("census-million") => census(ws, &out, 1_000_000, "census-million"),
        Some("overhead") => crate::overhead::run(ws, &out),
        Some("budget") => crate::budget::run(ws, &out),
        Some("ingest") => ingest(ws, &out),
        Some("memory") => memory(ws, &out),
        Some("attach") => attach_time::run(ws, &out),
        Some(other) => {
            bail!(
                "no benchmark named {other:?}: the benchmarks are: parse, census, overhead, \
                 budget, ingest, memory, attach (and census-million, not run by default: \
                 the census of 1 000 000 goroutines)"
            )
        }
    }
}

/// The kernel release, for the reports.
/// `ctxleak attach` on `pid` as the benchmarks run it: quiet, metrics on a free loopback port.
pub(crate) fn quiet_attach_args(pid: u32) -> [String; 6] {
    [
        "attach".into(),
        "--quiet".into(),
        "--web.listen-address".into(),
        "127.0.0.1:0".into(),
        "--pid".into(),
        pid.to_string(),
    ]
}

pub(crate) fn kernel() -> String {
    process::output(Command::new("uname").arg("-r"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Which crate a benchmark is in.
#[derive(Clone, Copy)]
pub(crate) enum BenchCrate {
    /// ctxleak-goexe: the readers of Go binaries alone.
    Goexe,
    /// ctxleak-daemon, with or without its `probes` feature (the eBPF build).
    Daemon { probes: bool },
}

/// `cargo bench --quiet --package CRATE [--no-default-features] --bench NAME -- ARGS...`: its
/// command line, and the JSON objects it printed (one a line).
pub(crate) fn bench_json(
    ws: &Workspace,
    crate_: BenchCrate,
    name: &str,
    args: &[impl AsRef<std::ffi::OsStr>],
) -> Result<(String, Vec<Value>)> {
    let mut cmd = process::cargo();
    cmd.current_dir(ws.root())
        .args(["bench", "--quiet", "--package"]);
    match crate_ {
        BenchCrate::Goexe => cmd.arg("ctxleak-goexe"),
        BenchCrate::Daemon { probes: true } => cmd.arg("ctxleak-daemon"),
        BenchCrate::Daemon { probes: false } => {
            cmd.args(["ctxleak-daemon", "--no-default-features"])
        }
    };
    cmd.args(["--bench", name, "--"]).args(args);
    let shown = process::show(&cmd);
    println!("bench: `{shown}`");
    let stdout = process::output(&mut cmd)?;
    let rows = stdout
        .lines()
        .filter(|line| line.starts_with('{'))
        .map(serde_json::from_str)
        .collect::<Result<Vec<Value>, _>>()
        .with_context(|| format!("the {name} benchmark printed malformed JSON"))?;
    if rows.is_empty() {
        bail!("`{shown}` printed no result");
    }
    Ok((shown, rows))
}

/// Writes a benchmark's results to target/bench/<name>.md and .json and prints the table.
pub fn publish(out: &Path, name: &str, md: &str, json: &Value) -> Result<()> {
    let md_path = out.join(format!("{name}.md"));
    fs::write(
        out.join(format!("{name}.json")),
        serde_json::to_string_pretty(json)? + "\n",
    )?;
    fs::write(&md_path, md)?;
    print!("{md}");
    println!("\nbench: wrote {}", md_path.display());
    Ok(())
}

fn parse(ws: &Workspace, out: &Path) -> Result<()> {
    let version = go::NEWEST;
    let binaries = build_big(ws, out, version)?;
    let (shown, rows) = bench_json(ws, BenchCrate::Goexe, "parse", &binaries)?;
    let kernel = kernel();
    let mut md = String::new();
    writeln!(md, "# Attach-time parsing of Go binaries\n")?;
    writeln!(md, "Go {version}, kernel {kernel}; `{shown}`\n")?;
    writeln!(
        md,
        "Median of 15 rounds; the baseline is reading the same file from the page cache.\n"
    )?;
    writeln!(
        md,
        "| binary | size | read (baseline) | parse | parse / read | outcome |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for row in &rows {
        let file = row["file"].as_str().unwrap_or_default();
        let name = Path::new(file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(file);
        writeln!(
            md,
            "| {name} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1}× | {} |",
            row["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            row["read_ms"].as_f64().unwrap_or(0.0),
            row["parse_ms"].as_f64().unwrap_or(0.0),
            row["ratio"].as_f64().unwrap_or(0.0),
            row["outcome"].as_str().unwrap_or_default(),
        )?;
    }
    let json =
        serde_json::json!({ "go": version, "kernel": kernel, "command": shown, "results": rows });
    publish(out, "parse", &md, &json)
}

/// Builds the large binary: the `big` fixture (many standard-library packages) plus
/// generated types, in a module under target/bench/big-src: target/bench/big and, without
/// symbols or DWARF, big-stripped. Returns the builds to measure (those two, then a small
/// fixture for scale). `big wait` stays running, for the attach benchmark.
pub(crate) fn build_big(ws: &Workspace, out: &Path, version: &str) -> Result<Vec<PathBuf>> {
    let module = out.join("big-src");
    fs::create_dir_all(&module)?;
    fs::write(
        module.join("go.mod"),
        "module ctxleak.dev/bench/big\n\ngo 1.21\n",
    )?;
    let main = ws.fixtures_module().join("bench/big/main.go");
    fs::copy(&main, module.join("main.go"))
        .with_context(|| format!("cannot copy {}", main.display()))?;
    fs::write(module.join("generated.go"), generated_code(GENERATED_TYPES))?;
    fs::write(module.join("keepalive.go"), KEEPALIVE)?;

    let mut built = Vec::new();
    for (suffix, ldflags) in [("", None), ("-stripped", Some("-s -w"))] {
        let binary = out.join(format!("big{suffix}"));
        let mut cmd = go::command(ws, version);
        cmd.current_dir(&module).arg("build");
        if let Some(ldflags) = ldflags {
            cmd.arg(format!("-ldflags={ldflags}"));
        }
        cmd.arg("-o").arg(&binary).arg(".");
        process::run(&mut cmd).context("cannot build the large benchmark binary")?;
        built.push(binary);
    }
    // A small binary for scale.
    let phases = ws.fixture(version, "phases");
    if phases.is_file() {
        built.push(phases);
    }
    Ok(built)
}

/// With `wait`, the fixture's main blocks in `select {}` with no other goroutine, which the
/// runtime reports as a deadlock; a goroutine asleep on a timer keeps it running.
const KEEPALIVE: &str = "// Code generated by cargo xtask bench; DO NOT EDIT.

package main

import (
\t\"os\"
\t\"time\"
)

func init() {
\tif len(os.Args) > 1 && os.Args[1] == \"wait\" {
\t\tgo func() {
\t\t\tfor {
\t\t\t\ttime.Sleep(time.Hour)
\t\t\t}
\t\t}()
\t}
}
";

/// Go source with `types` types, each with two methods kept alive through an interface.
fn generated_code(types: usize) -> String {
    let mut code = String::from(
        "// Code generated by cargo xtask bench; DO NOT EDIT.\n\npackage main\n\nimport \"fmt\"\n\n\
         type stepper interface {\n\tStep(int) int\n\tName() string\n}\n\n\
         var generated []stepper\n\n\
         func register(s stepper) bool {\n\tgenerated = append(generated, s)\n\treturn true\n}\n",
    );
    for i in 0..types {
        let _ = write!(
            code,
            "\ntype G{i} struct {{\n\ta, b int\n\ts string\n}}\n\n\
             func (g *G{i}) Step(x int) int {{\n\tswitch x % 4 {{\n\tcase 0:\n\t\treturn g.a + x*{i}\n\tcase 1:\n\t\treturn g.b - x\n\tcase 2:\n\t\treturn len(g.s) + {i}\n\tdefault:\n\t\tg.a++\n\t\treturn g.a\n\t}}\n}}\n\n\
             func (g *G{i}) Name() string {{ return fmt.Sprintf(\"G{i}:%d\", g.a) }}\n\n\
             var _ = register(&G{i}{{s: \"g{i}\"}})\n"
        );
    }
    code
}

/// Goroutines the `many` fixture parks for the census benchmark.
const CENSUS_GOROUTINES: u32 = 100_000;
/// Rounds of Go's own dump.
const CENSUS_ROUNDS: u32 = 10;
/// Rounds of ctxleak's census after the first: every 12th (`groups::FULL_READ_EVERY`) reads
/// every stack again, the others only those of goroutines that ran. Two of the first kind.
const CTXLEAK_CENSUS_ROUNDS: u32 = 24;
/// The period of the fixture's pause meter: a gap beyond it is a pause.
const METER_PERIOD_MS: f64 = 1.0;

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
        ("group", "groups (`GroupTracker::update`)"),
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

    let json = json!({
        "go": version,
        "kernel": kernel,
        "command": shown,
        "fixture": format!("{} -n {goroutines}", binary.display()),
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

/// The goal of issue #8 for ingestion, in events per second per core.
const INGEST_GOAL: f64 = 1e6;

/// Events per second the daemon's decoding and tracking take on one core, from a synthetic
/// stream (the `ingest` bench binary), against the same loop decoding alone.
fn ingest(ws: &Workspace, out: &Path) -> Result<()> {
    let version = go::NEWEST;
    let binaries = build_big(ws, out, version)?;
    let big = &binaries[0];
    let (shown, rows) = bench_json(
        ws,
        BenchCrate::Daemon { probes: true },
        "ingest",
        std::slice::from_ref(big),
    )?;
    let kernel = kernel();
    let first = &rows[0];
    let mut md = String::new();
    writeln!(md, "# Event ingestion on one core\n")?;
    writeln!(md, "Go {version}, kernel {kernel}; `{shown}`\n")?;
    writeln!(
        md,
        "{} events ({} bytes each on average as ring-buffer records: 56 for a creation, 32 for an exit), creations and exits one for one \
         over a live set of N goroutines (seeded first, untimed); goids increase, each exit is \
         of a live goroutine drawn at random, the clock advances 1 µs per event. Start PCs are \
         entries of {} non-runtime and {} runtime functions of `{}` ({} functions). Median of \
         {} rounds. The baseline is the same loop over the same records with \
         `probes::decode_record` alone; the daemon's loop (`watcher::Watcher::drain`) adds \
         `GoroutineTracker::apply`, each creation classified from the binary's pclntab, and \
         `ContextTracker::apply_goroutine` (no contexts in this stream). Not included: \
         aya's ring-buffer bookkeeping (an atomic load and store per record) and the wakeups \
         of the daemon's event loop.\n",
        first["events"],
        first["record_bytes"],
        first["start_functions"]["user"],
        first["start_functions"]["system"],
        big.file_name().and_then(|n| n.to_str()).unwrap_or_default(),
        first["functions_in_binary"],
        first["rounds"],
    )?;
    writeln!(
        md,
        "| live goroutines | loop | ns/event | events/s | / decode |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let mut verdicts = Vec::new();
    for row in &rows {
        let live = row["live"].as_u64().unwrap_or(0);
        for (key, label) in [
            ("decode", "`decode_record` alone (baseline)"),
            ("hashmap", "decode + `HashMap<goid, pc>` insert/remove"),
            (
                "tracker",
                "decode + `GoroutineTracker::apply`, constant kind",
            ),
            (
                "daemon",
                "**the daemon: decode + `apply` + classification + contexts**",
            ),
        ] {
            let v = &row[key];
            writeln!(
                md,
                "| {live} | {label} | {:.0} | {:.2} M | {:.1}× |",
                v["ns_per_event"].as_f64().unwrap_or(0.0),
                v["events_per_second"].as_f64().unwrap_or(0.0) / 1e6,
                v["ratio_to_decode"].as_f64().unwrap_or(0.0),
            )?;
        }
        let rate = row["daemon"]["events_per_second"].as_f64().unwrap_or(0.0);
        verdicts.push(format!(
            "{:.2} M events/s with {live} live goroutines ({})",
            rate / 1e6,
            if rate >= INGEST_GOAL {
                "met"
            } else {
                "not met"
            }
        ));
    }
    writeln!(
        md,
        "\nThe daemon, on one core: {} (goal of issue #8: at least {:.0} M events/s per core).\n",
        verdicts.join(", "),
        INGEST_GOAL / 1e6
    )?;
    writeln!(
        md,
        "Beyond that rate, or in a burst longer than the ring holds (4 MiB: about 75 000 events), \
         the kernel side drops events and counts them (`ctxleak_events_lost_total`); the daemon \
         sees the count rise within a second and resynchronises the live set from the target's \
         memory (`ctxleak_resyncs_total`), so the counts are exact again (tested with a one-page \
         ring in tests/goroutine_count.rs, not measured here)."
    )?;
    let json = json!({
        "go": version,
        "kernel": kernel,
        "command": shown,
        "binary": big.display().to_string(),
        "goal_events_per_second": INGEST_GOAL,
        "results": rows,
    });
    publish(out, "ingest", &md, &json)
}

/// The goal of issue #8 for memory, in bytes per tracked goroutine.
const MEMORY_GOAL: f64 = 128.0;

/// The daemon's heap per tracked goroutine (the `memory` bench binary), against the raw
/// event data of the same goroutines.
fn memory(ws: &Workspace, out: &Path) -> Result<()> {
    let (shown, rows) = bench_json(
        ws,
        BenchCrate::Daemon { probes: false },
        "memory",
        &[] as &[&str],
    )?;
    let result = &rows[0];
    let kernel = kernel();
    let goroutines = result["goroutines"].as_u64().unwrap_or(0);
    let mut md = String::new();
    writeln!(md, "# Daemon memory per tracked goroutine\n")?;
    writeln!(md, "Kernel {kernel}; `{shown}`\n")?;
    writeln!(
        md,
        "{goroutines} goroutines. Heap counted by a global allocator wrapping the system one \
         (bytes held once built, and the peak while building); the growth of resident memory \
         (RSS) as a cross-check, which also counts pages the allocator kept after freeing \
         them (the tables a growing hash table left behind). The baseline is the raw event data, a `Vec<GoroutineEvent>` of the same \
         goroutines ({} bytes each).\n",
        result["event_bytes"],
    )?;
    writeln!(
        md,
        "| what | bytes/goroutine | peak bytes/goroutine | RSS growth | / raw events |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let empty = Vec::new();
    let entries = result["rows"].as_array().unwrap_or(&empty);
    for row in entries {
        writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} MB | {:.2}× |",
            row["what"].as_str().unwrap_or_default(),
            row["bytes_per_goroutine"].as_f64().unwrap_or(0.0),
            row["peak_bytes_per_goroutine"].as_f64().unwrap_or(0.0),
            row["resident_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            row["ratio_to_raw_events"].as_f64().unwrap_or(0.0),
        )?;
    }
    let tracked = result["tracked_bytes_per_goroutine"]
        .as_f64()
        .unwrap_or(f64::NAN);
    writeln!(
        md,
        "\nThe daemon's live set: {tracked:.1} bytes per tracked goroutine (goal of issue #8: at \
         most {MEMORY_GOAL:.0}; {}). Not counted here: while a census runs (every \
         `--census-interval`) it holds a {}-byte record per goroutine, and its stacks and frames.",
        if tracked <= MEMORY_GOAL {
            "met"
        } else {
            "not met"
        },
        result["census_record_bytes"],
    )?;
    let json = json!({
        "kernel": kernel,
        "command": shown,
        "goal_bytes_per_goroutine": MEMORY_GOAL,
        "result": result,
    });
    publish(out, "memory", &md, &json)
}
