//! `cargo xtask run`: build ctxleak and attach it to a Go program, by default
//! the demo, which leaks goroutines so the count has something to show.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::workspace::{Profile, Workspace};
use crate::{fixtures, go, process, setup, signals};

/// How long the demo gets to exit after SIGTERM before it is killed outright.
const DEMO_GRACE: Duration = Duration::from_secs(5);

/// Build ctxleak and attach it to a process: the leaking demo unless --pid is given.
#[derive(clap::Args)]
pub struct Options {
    /// Attach to this running Go program instead of starting the demo.
    #[arg(long)]
    pid: Option<u32>,
    /// Build and run the demo with this Go version.
    #[arg(long = "go", value_name = "VERSION", value_parser = go::version_parser(),
          default_value = go::NEWEST, conflicts_with = "pid")]
    go: String,
    /// Extra arguments for `ctxleak attach`, after `--`.
    #[arg(last = true)]
    extra: Vec<String>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<ExitCode> {
    let Options { pid, go, extra } = options;
    setup::ensure(ws)?;
    let ctxleak = build_ctxleak(ws, false)?;
    match *pid {
        Some(pid) => {
            // Nothing to clean up afterwards, so ctxleak simply takes over
            // this process: Ctrl-C and the exit status are its own.
            let err = attach(&ctxleak, pid, extra).exec();
            Err(err).with_context(|| {
                format!(
                    "could not start {}: build it with `cargo build --release -p ctxleak-daemon`",
                    ctxleak.display()
                )
            })
        }
        None => run_with_demo(ws, &ctxleak, go, extra),
    }
}

/// Builds ctxleak's release binary (`quiet`: without cargo's progress) and returns its path.
pub(crate) fn build_ctxleak(ws: &Workspace, quiet: bool) -> Result<PathBuf> {
    build(ws, quiet, None)?;
    Ok(ws.ctxleak(Profile::Release))
}

/// Builds the release binary with the benchmarks' `--floor` flags (the `bench-floor` feature),
/// apart from the one users run (its own target folder), and returns its path.
pub(crate) fn build_bench_ctxleak(ws: &Workspace) -> Result<PathBuf> {
    let target = ws.bench_build();
    build(ws, true, Some(&target))?;
    Ok(target.join("release/ctxleak"))
}

fn build(ws: &Workspace, quiet: bool, bench_target: Option<&Path>) -> Result<()> {
    let mut cmd = process::cargo();
    cmd.current_dir(ws.root()).arg("build");
    if quiet {
        cmd.arg("--quiet");
    }
    cmd.args(["--release", "--package", "ctxleak-daemon"]);
    if let Some(target) = bench_target {
        cmd.args(["--features", "bench-floor", "--target-dir"])
            .arg(target);
    }
    process::run(&mut cmd).context("could not build ctxleak: fix the errors above")
}

fn attach(ctxleak: &Path, pid: u32, extra: &[String]) -> Command {
    let mut cmd = Command::new(ctxleak);
    cmd.arg("attach")
        .arg("--pid")
        .arg(pid.to_string())
        .args(extra);
    cmd
}

fn run_with_demo(ws: &Workspace, ctxleak: &Path, go: &str, extra: &[String]) -> Result<ExitCode> {
    fixtures::build(ws, &[go], &["demo".to_string()], false)?;
    // From here on a Ctrl-C must not stop xtask before it has stopped the demo.
    signals::ignore_interrupts()?;
    let demo = Demo::start(&ws.fixture(go, "demo"))?;
    println!(
        "xtask: started the demo (Go {go}) as pid {}; attaching ctxleak, Ctrl-C stops both",
        demo.pid()
    );
    let mut cmd = attach(ctxleak, demo.pid(), extra);
    signals::default_interrupts_in(&mut cmd);
    let status = cmd.status().with_context(|| {
        format!(
            "could not start {}: build it with `cargo build --release -p ctxleak-daemon`",
            ctxleak.display()
        )
    })?;
    drop(demo);
    Ok(process::exit_code(status))
}

/// The running demo; dropping it stops it, so every way out of
/// `run_with_demo`, errors included, leaves no demo behind.
struct Demo {
    child: Child,
}

impl Demo {
    fn start(path: &Path) -> Result<Self> {
        let mut cmd = Command::new(path);
        cmd.stdin(Stdio::null())
            // Its own process group: a Ctrl-C in the terminal goes to the
            // foreground group only, so the demo keeps running while ctxleak
            // detaches from it.
            .process_group(0);
        signals::default_interrupts_in(&mut cmd);
        let child = cmd.spawn().with_context(|| {
            format!(
                "could not start the demo {}: rebuild it with `cargo xtask fixtures`",
                path.display()
            )
        })?;
        Ok(Self { child })
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM (the demo exits quietly on it), then SIGKILL if it lingers.
    fn stop(&mut self) -> std::io::Result<()> {
        if self.child.try_wait()?.is_some() {
            return Ok(());
        }
        if let Ok(pid) = libc::pid_t::try_from(self.child.id()) {
            // SAFETY: kill has no memory-safety preconditions; the pid is our
            // unreaped child, so it cannot have been reused.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
        let deadline = Instant::now() + DEMO_GRACE;
        while Instant::now() < deadline {
            if self.child.try_wait()?.is_some() {
                return Ok(());
            }
            thread::sleep(Duration::from_millis(20));
        }
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        match self.stop() {
            Ok(()) => eprintln!("xtask: stopped the demo (pid {})", self.pid()),
            Err(err) => eprintln!(
                "warning: could not stop the demo (pid {}): {err}: kill it by hand",
                self.pid()
            ),
        }
    }
}
