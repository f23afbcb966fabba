//! What the benchmarks share: running a bench binary of the workspace and publishing its
//! report; the large Go binary (`parse`, `ingest`, `attach`); and the targets of `overhead` and
//! `budget` (and the `chaos` drill): ctxleak's release build and the Go programs of
//! fixtures/go/bench, pinned to CPU 0 with GOMAXPROCS=1, ctxleak attached on CPU 1, their CPU
//! time, ctxleak's metrics.
//!
//! Each benchmark is a file of its own beside this one and uses only this module.

use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::workspace::Workspace;
use crate::{go, process, run};

/// Generated types in the large binary: each adds two methods (code, pclntab, DWARF).
const GENERATED_TYPES: usize = 8000;

/// `ctxleak attach` on `pid` as the benchmarks run it: quiet, metrics on a free loopback port.
pub(super) fn quiet_attach_args(pid: u32) -> [String; 6] {
    [
        "attach".into(),
        "--quiet".into(),
        "--web.listen-address".into(),
        "127.0.0.1:0".into(),
        "--pid".into(),
        pid.to_string(),
    ]
}

/// The kernel release, for the reports.
pub(crate) fn kernel() -> String {
    process::output(Command::new("uname").arg("-r"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Which crate a benchmark is in.
#[derive(Clone, Copy)]
pub(super) enum BenchCrate {
    /// ctxleak-goexe: the readers of Go binaries alone.
    Goexe,
    /// ctxleak-daemon, with or without its `probes` feature (the eBPF build).
    Daemon { probes: bool },
}

/// `cargo bench --quiet --package CRATE [--no-default-features] --bench NAME -- ARGS...`: its
/// command line, and the JSON objects it printed (one a line).
pub(super) fn bench_json(
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

/// The file name of a path the bench binaries reported, for the tables.
pub(super) fn file_name(path: &str) -> &str {
    Path::new(path)
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or(path)
}

/// Writes a benchmark's results to target/bench/<name>.md and .json and prints the table.
pub(crate) fn publish(out: &Path, name: &str, md: &str, json: &Value) -> Result<()> {
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

/// The mean of `values` (0 for none).
pub(super) fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len().max(1) as f64
}

pub(super) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Builds the large binary: the `big` fixture (many standard-library packages) plus
/// generated types, in a module under target/bench/big-src: target/bench/big and, without
/// symbols or DWARF, big-stripped. Returns the builds to measure (those two, then a small
/// fixture for scale). `big wait` stays running, for the attach benchmark.
pub(super) fn build_big(ws: &Workspace, out: &Path, version: &str) -> Result<Vec<PathBuf>> {
    let module = out.join("big-src");
    fs::create_dir_all(&module)?;
    fs::write(
        module.join("go.mod"),
        "module ctxleak.dev/bench/big\n\ngo 1.21\n",
    )?;
    let main = ws.bench_program("big").join("main.go");
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

/// What the overhead and budget benches run: ctxleak's release build and the Go fixtures of
/// fixtures/go/bench, built with the newest Go.
pub(super) struct Tools {
    pub(super) ctxleak: PathBuf,
    pub(super) httpserver: PathBuf,
    pub(super) churn: PathBuf,
    /// The rate-limited HTTP load generator (fixtures/go/bench/load).
    pub(super) load: PathBuf,
}

impl Tools {
    /// Builds them, the Go programs into OUT/overhead/.
    pub(super) fn build(ws: &Workspace, out: &Path) -> Result<Self> {
        // With the floors' flags: the overhead bench measures them.
        let ctxleak = run::build_bench_ctxleak(ws)?;
        let dir = out.join("overhead");
        fs::create_dir_all(&dir)?;
        let binary = |name: &str| -> Result<PathBuf> {
            let path = dir.join(name);
            let mut cmd = go::command(ws, go::NEWEST);
            cmd.current_dir(ws.fixtures_module())
                .arg("build")
                .arg("-o")
                .arg(&path)
                .arg(format!("./bench/{name}"));
            process::run(&mut cmd).with_context(|| format!("cannot build {name}"))?;
            Ok(path)
        };
        Ok(Self {
            ctxleak,
            httpserver: binary("httpserver")?,
            churn: binary("churn")?,
            load: binary("load")?,
        })
    }
}

/// A child killed on drop.
pub(crate) struct Running(pub(crate) Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `program` pinned to CPU 0 with GOMAXPROCS=1, and waits for `ready` on its stdout.
pub(super) fn start_target(
    program: &Path,
    args: &[&str],
    ready: &str,
) -> Result<(Running, BufReader<std::process::ChildStdout>)> {
    let mut child = Command::new("taskset")
        .args(["-c", "0"])
        .arg(program)
        .args(args)
        .env("GOMAXPROCS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", program.display()))?;
    let mut stdout = BufReader::new(child.stdout.take().context("stdout")?);
    let mut line = String::new();
    stdout.read_line(&mut line)?;
    if line.trim() != ready {
        bail!("{} said {line:?}, not {ready:?}", program.display());
    }
    Ok((Running(child), stdout))
}

/// Attaches ctxleak (on CPU 1) with `args` and waits until its probes are in: it, and the
/// address it serves its metrics at.
pub(super) fn attach_serving(tools: &Tools, pid: u32, args: &[&str]) -> Result<(Running, String)> {
    let mut child = Command::new("taskset")
        .args(["-c", "1"])
        .arg(&tools.ctxleak)
        .args(quiet_attach_args(pid))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start ctxleak")?;
    let mut stderr = BufReader::new(child.stderr.take().context("stderr")?);
    let mut line = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        line.clear();
        if stderr.read_line(&mut line)? == 0 {
            bail!("ctxleak exited before attaching");
        }
        if let Some((_, rest)) = line.split_once("metrics at http://") {
            let address = rest.split('/').next().unwrap_or_default().trim().to_owned();
            // Keep draining its stderr so it never blocks on a full pipe.
            std::thread::spawn(move || for _ in stderr.lines() {});
            return Ok((Running(child), address));
        }
    }
    bail!("ctxleak did not attach within 30 s")
}

/// Nanoseconds `pid` has run on a CPU, all its threads together (`/proc/PID/task/*/schedstat`,
/// first field). Threads that exited in between are missed: Go keeps its threads.
pub(super) fn cpu_ns(pid: u32) -> Result<u64> {
    let mut total = 0;
    for task in fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        let Ok(text) = fs::read_to_string(&path) else {
            continue; // The thread exited.
        };
        total += text
            .split_whitespace()
            .next()
            .and_then(|ns| ns.parse::<u64>().ok())
            .with_context(|| format!("{} says {text:?}", path.display()))?;
    }
    Ok(total)
}

/// Starts the net/http target on a free loopback port: it, its stdout (kept open while it
/// runs), and its address.
pub(super) fn start_httpserver(
    tools: &Tools,
) -> Result<(Running, BufReader<std::process::ChildStdout>, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let address = format!("127.0.0.1:{port}");
    let (server, stdout) = start_target(&tools.httpserver, &[&address], "listening")?;
    Ok((server, stdout, address))
}

/// ctxleak's metrics at `address`: each sample's series (name and labels, as written:
/// `ctxleak_probe_duty_ratio{pid="42"}`) and its value.
pub(super) fn scrape(address: &str) -> Result<std::collections::BTreeMap<String, f64>> {
    let text = http_get(address, "/metrics")?;
    Ok(text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse::<f64>().ok()?))
        })
        .collect())
}

/// `GET path` over HTTP/1.0 (no client crate for one local scrape): the body.
pub(crate) fn http_get(address: &str, path: &str) -> Result<String> {
    use std::io::Read as _;
    let mut stream = std::net::TcpStream::connect(address)
        .with_context(|| format!("cannot connect to ctxleak at {address}"))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {address}\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    match response.split_once("\r\n\r\n") {
        Some((head, body))
            if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") =>
        {
            Ok(body.to_owned())
        }
        _ => bail!("GET {path} from {address}: {response:.200}"),
    }
}

/// One run of the churn fixture.
pub(super) struct ChurnRun {
    /// What the fixture measured in itself.
    pub(super) ns_per_goroutine: f64,
    /// With `watch`: ctxleak's last metrics scraped before the fixture finished (it exits
    /// then, and its series with it).
    pub(super) metrics: Option<std::collections::BTreeMap<String, f64>>,
    pub(super) pid: u32,
}

/// How often [`measure_churn`] scrapes ctxleak's metrics while it watches.
const CHURN_SCRAPE_EVERY: Duration = Duration::from_millis(500);

/// Starts and exits `goroutines` goroutines in the churn fixture, ctxleak attached with
/// `ctxleak`'s arguments (None: not running); with `watch`, scraping ctxleak's metrics
/// meanwhile.
pub(super) fn measure_churn(
    tools: &Tools,
    ctxleak: Option<&[&str]>,
    goroutines: u32,
    watch: bool,
) -> Result<ChurnRun> {
    let n = goroutines.to_string();
    let (mut target, mut stdout) = start_target(&tools.churn, &["-n", &n], "ready")?;
    let pid = target.0.id();
    let ctxleak = ctxleak
        .map(|args| attach_serving(tools, pid, args))
        .transpose()?;
    let metrics_at = ctxleak
        .as_ref()
        .filter(|_| watch)
        .map(|(_, at)| at.as_str());
    target
        .0
        .stdin
        .as_mut()
        .context("stdin")?
        .write_all(b"go\n")?;
    let done = std::sync::atomic::AtomicBool::new(false);
    let (line, metrics) = std::thread::scope(|scope| {
        let sampler = metrics_at.map(|address| {
            let done = &done;
            scope.spawn(move || {
                let mut last = None;
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    if let Ok(metrics) = scrape(address) {
                        last = Some(metrics);
                    }
                    std::thread::sleep(CHURN_SCRAPE_EVERY);
                }
                last
            })
        });
        let mut line = String::new();
        let read = stdout.read_line(&mut line);
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        let metrics = sampler.and_then(|sampler| sampler.join().ok().flatten());
        read.map(|_| (line, metrics))
    })?;
    let ns_per_goroutine = line
        .trim()
        .strip_prefix("ns/op ")
        .and_then(|value| value.parse::<f64>().ok())
        .with_context(|| format!("churn said {line:?}"))?;
    if watch && metrics.is_none() {
        bail!("could not scrape ctxleak's metrics while the churn fixture ran");
    }
    Ok(ChurnRun {
        ns_per_goroutine,
        metrics,
        pid,
    })
}
