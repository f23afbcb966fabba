//! `cargo xtask bench attach`: how long `ctxleak attach --pid N` takes, from starting the
//! command to the "ctxleak: attached to PID" line on its stderr (the binary read, the eBPF
//! programs loaded and attached, the live set seeded from the target's memory), on the large
//! benchmark binary with DWARF and stripped (`-ldflags=-s -w`, where the struct layouts come
//! from the offset table). The baseline is parsing the same binary alone (the `parse` bench
//! binary), measured in the same run. The release build of ctxleak is used, as in `overhead`.

use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::json;

use super::shared::{
    BenchCrate, bench_json, build_big, file_name, kernel, publish, quiet_attach_args,
};
use crate::workspace::Workspace;
use crate::{go, run};

/// Attaches measured per binary, after a first one reported on its own (cold caches).
const ROUNDS: usize = 5;
/// The goal of issue #8.
const GOAL: Duration = Duration::from_secs(1);
/// Longer than any attach should take.
const TIMEOUT: Duration = Duration::from_secs(60);

pub(super) fn run(ws: &Workspace, out: &Path) -> Result<()> {
    let version = go::NEWEST;
    let binaries: Vec<PathBuf> = build_big(ws, out, version)?.into_iter().take(2).collect();
    let ctxleak = run::build_ctxleak(ws, true)?;
    let (parse_shown, parse_rows) = bench_json(ws, BenchCrate::Goexe, "parse", &binaries)?;

    let mut results = Vec::new();
    for (binary, parsed) in binaries.iter().zip(&parse_rows) {
        let target = Target::start(binary)?;
        let mut samples = Vec::new();
        let mut said = String::new();
        for round in 0..=ROUNDS {
            let (elapsed, line) = attach_once(&ctxleak, target.pid())
                .with_context(|| format!("attaching to {}", binary.display()))?;
            println!(
                "attach: {}: round {round}: {:.0} ms",
                binary.display(),
                elapsed.as_secs_f64() * 1e3
            );
            samples.push(elapsed.as_secs_f64() * 1e3);
            said = line;
        }
        drop(target);
        let first = samples.remove(0);
        samples.sort_by(f64::total_cmp);
        let median = samples[samples.len() / 2];
        let parse_ms = parsed["parse_ms"].as_f64().unwrap_or(f64::NAN);
        results.push(json!({
            "binary": binary.display().to_string(),
            "bytes": std::fs::metadata(binary).map(|m| m.len()).unwrap_or(0),
            "first_ms": first,
            "median_ms": median,
            "max_ms": samples[samples.len() - 1],
            "rounds_ms": samples,
            "parse_ms": parse_ms,
            "ratio_to_parse": median / parse_ms,
            "attached_line": said,
        }));
    }

    let kernel = kernel();
    let shown = format!(
        "{} attach --quiet --web.listen-address 127.0.0.1:0 --pid PID",
        ctxleak.display()
    );
    let mut md = String::new();
    writeln!(md, "# Time to attach\n")?;
    writeln!(md, "Go {version}, kernel {kernel}; `{shown}`\n")?;
    writeln!(
        md,
        "From starting the command to its \"ctxleak: attached to PID\" line (binary read, \
         probes loaded and attached, live set seeded from memory), release build; target \
         `big wait` (the large benchmark binary, idle). A first attach, then the median and \
         maximum of {ROUNDS} more. The baseline is parsing the same binary alone, median of 15 \
         (`{parse_shown}`).\n"
    )?;
    writeln!(
        md,
        "| binary | size | parse (baseline) | first attach | attach, median | max | attach / parse | attach − parse |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|")?;
    let mut verdicts = Vec::new();
    for result in &results {
        let name = file_name(result["binary"].as_str().unwrap_or_default());
        let median = result["median_ms"].as_f64().unwrap_or(f64::NAN);
        let parse = result["parse_ms"].as_f64().unwrap_or(f64::NAN);
        writeln!(
            md,
            "| {name} | {:.1} MB | {parse:.1} ms | {:.0} ms | {median:.0} ms | {:.0} ms | {:.1}× | {:.0} ms |",
            result["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            result["first_ms"].as_f64().unwrap_or(0.0),
            result["max_ms"].as_f64().unwrap_or(0.0),
            result["ratio_to_parse"].as_f64().unwrap_or(0.0),
            median - parse,
        )?;
        verdicts.push(format!(
            "{name} {median:.0} ms ({})",
            if median < GOAL.as_secs_f64() * 1e3 {
                "met"
            } else {
                "not met"
            }
        ));
    }
    writeln!(
        md,
        "\nAttach, median: {} (goal of issue #8: under {} s). What is not parsing (attach − \
         parse) does not depend on the binary's size: starting the process, loading and \
         verifying the eBPF programs, attaching the probes, seeding the live set.",
        verdicts.join(", "),
        GOAL.as_secs()
    )?;
    let json = json!({
        "go": version,
        "kernel": kernel,
        "command": shown,
        "parse_command": parse_shown,
        "goal_ms": GOAL.as_secs_f64() * 1e3,
        "results": results,
    });
    publish(out, "attach", &md, &json)
}

/// The large binary running as `BINARY wait`; killed on drop.
struct Target(Child);

impl Target {
    fn start(binary: &Path) -> Result<Self> {
        let mut child = Command::new(binary)
            .arg("wait")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        // It prints one line once main runs: the runtime is up, its goroutines exist.
        let stdout = child.stdout.take().context("no stdout")?;
        let target = Self(child);
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        if !line.starts_with("big:") {
            bail!("{} said {line:?}", binary.display());
        }
        Ok(target)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `ctxleak attach --pid PID` and times it to its "attached" line; then interrupts it
/// and waits for it to detach. Returns the time and the line.
fn attach_once(ctxleak: &Path, pid: u32) -> Result<(Duration, String)> {
    let start = Instant::now();
    let mut child = Command::new(ctxleak)
        .args(quiet_attach_args(pid))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {}", ctxleak.display()))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let (send, lines) = mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = send.send((Instant::now(), line));
        }
    });
    let mut said = Vec::new();
    let attached = loop {
        match lines.recv_timeout(TIMEOUT) {
            Ok((at, line)) if line.starts_with("ctxleak: attached to PID") => {
                break Some((at - start, line));
            }
            Ok((_, line)) => said.push(line),
            Err(_) => break None,
        }
    };
    let detached = i32::try_from(child.id())
        // SAFETY: kill(2) on our own child, which has not been waited for yet.
        .map(|child_pid| unsafe { libc::kill(child_pid, libc::SIGINT) } == 0)
        .unwrap_or(false);
    // It detaches and exits on SIGINT; killed if it has not within the timeout.
    let deadline = Instant::now() + TIMEOUT;
    while detached && child.try_wait()?.is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    if child.try_wait()?.is_none() {
        let _ = child.kill();
    }
    let status = child.wait()?;
    let _ = reader.join();
    let Some(attached) = attached else {
        bail!(
            "ctxleak did not say it attached ({status}); it said: {}",
            said.join(" / ")
        );
    };
    Ok(attached)
}
