//! `cargo xtask test`: the README's test command, and CI's.
//!
//! ctxleak-daemon's integration tests are one binary (tests/tests.rs, a module per area), whose
//! tests run in parallel. The areas in [`RUN_ALONE`] run after the others, one test at a time
//! and with nothing else beside them, as they did when each area was a binary of its own.

use std::process::{Command, ExitCode, Stdio};

use anyhow::{Context, Result};

use crate::{deploy, fixtures, go, offsets, process, setup, workspace::Workspace};

/// Areas (test name prefixes in ctxleak-daemon's `tests` binary) whose bounds were measured with
/// nothing else running: `daemon_churn`'s attach and detach latencies (the kernel serializes
/// uprobe registration with other tests' probe removals), memory and file descriptors, and
/// `healthy`'s 45 s watches of services under load, and `stuck`'s 30 s ones (a goroutine that
/// did not run for 10 s: a loaded machine must not starve the fixture's healthy controls).
const RUN_ALONE: &[&str] = &["daemon_churn::", "healthy::", "stuck::"];

/// libtest's options that take a value as the next argument (the rest are flags or filters).
const HARNESS_OPTIONS_WITH_VALUE: &[&str] = &[
    "--test-threads",
    "--skip",
    "--logfile",
    "--color",
    "--format",
    "--shuffle-seed",
    "-Z",
];

/// Set up, build the fixtures, then run `cargo test ARGS...` (as root, for the BPF tests).
///
/// ctxleak-daemon's integration tests are one binary with a module per area: `-p
/// ctxleak-daemon --test tests -- census::` runs one area. The areas whose bounds were
/// measured alone (daemon_churn, healthy) run after the others, one test at a time.
#[derive(clap::Args)]
pub struct Options {
    /// Passed to `cargo test` as they are, e.g. `-p ctxleak-daemon -- --nocapture`.
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<ExitCode> {
    let mut args = options.args.clone();
    // clap takes a leading `--` as its own separator, but cargo test
    // needs it (`cargo xtask test -- --nocapture`): put it back.
    if std::env::args_os().nth(2).is_some_and(|arg| arg == "--") {
        args.insert(0, "--".to_string());
    }
    setup::ensure(ws)?;
    fixtures::build(ws, go::GO_VERSIONS, &fixtures::programs(ws)?, true)?;
    // tests/offset_table.rs checks a few more Go releases than the supported ones, different
    // ones each day (`cargo xtask offsets --check` checks them all).
    let extra = offsets::todays_extra_releases();
    offsets::prepare(ws, &extra)?;
    // tests/prometheus.rs scrapes ctxleak with a real Prometheus server and queries it.
    let prometheus = deploy::ensure_prometheus(ws)?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "warning: not running as root: the tests that load BPF programs will fail (run `sudo -E cargo xtask test`)"
        );
    }
    // Not --workspace: the default members leave out the eBPF crate, which
    // only builds for the BPF target.
    let cargo_test = || {
        let mut cmd = process::cargo();
        cmd.current_dir(ws.root())
            .arg("test")
            .env("CTXLEAK_FIXTURES", ws.fixtures_out())
            .env("CTXLEAK_GO_VERSIONS", go::GO_VERSIONS.join(","))
            .env("CTXLEAK_OFFSETS_MATRIX", extra.join(","))
            .env("CTXLEAK_PROMETHEUS", &prometheus.prometheus);
        cmd
    };
    let (cargo_args, harness_args) = split_at_separator(&args);
    if harness_args
        .iter()
        .any(|arg| ["--list", "--help", "-h"].contains(&arg.as_str()))
    {
        // Nothing runs: list (or explain) everything at once.
        let mut cmd = cargo_test();
        cmd.args(&args);
        return status_of(&mut cmd);
    }

    // The tests of RUN_ALONE that `args` select, by their full names.
    let mut list = cargo_test();
    list.args(cargo_args)
        .arg("--")
        .args(harness_args)
        .arg("--list")
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    // This builds everything (its progress and errors on the terminal), and lists.
    let listed = list
        .output()
        .with_context(|| format!("could not start `{}`", process::show(&list)))?;
    if !listed.status.success() {
        return Ok(process::exit_code(listed.status));
    }
    let alone: Vec<&str> = std::str::from_utf8(&listed.stdout)
        .context("`cargo test -- --list` printed non-UTF-8")?
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .filter(|name| RUN_ALONE.iter().any(|area| name.starts_with(area)))
        .collect();

    // Report every failing test binary, not only the first.
    let mut everything_else = cargo_test();
    everything_else
        .arg("--no-fail-fast")
        .args(cargo_args)
        .arg("--")
        .args(harness_args)
        .args(RUN_ALONE.iter().flat_map(|area| ["--skip", area]));
    let first = status_of(&mut everything_else)?;
    if alone.is_empty() {
        return Ok(first);
    }
    let mut one_at_a_time = cargo_test();
    one_at_a_time
        .arg("--no-fail-fast")
        .args(cargo_args)
        .args(["--test", "tests", "--"])
        .args(harness_flags(harness_args))
        .args(["--exact", "--test-threads=1"])
        .args(&alone);
    let second = status_of(&mut one_at_a_time)?;
    Ok(if first == ExitCode::SUCCESS {
        second
    } else {
        first
    })
}

/// `cargo test`'s own arguments and the test harness's (those after `--`).
fn split_at_separator(args: &[String]) -> (&[String], &[String]) {
    match args.iter().position(|arg| arg == "--") {
        Some(at) => (&args[..at], &args[at + 1..]),
        None => (args, &[]),
    }
}

/// The harness arguments without the ones that select tests (filters, `--skip`, `--exact`)
/// and without `--test-threads`, for a run that names its tests itself.
fn harness_flags(harness_args: &[String]) -> Vec<&String> {
    let mut kept = Vec::new();
    let mut args = harness_args.iter();
    while let Some(arg) = args.next() {
        let name = arg.split('=').next().unwrap_or(arg);
        let selects = ["--skip", "--exact", "--test-threads"].contains(&name);
        let value = (HARNESS_OPTIONS_WITH_VALUE.contains(&arg.as_str()))
            .then(|| args.next())
            .flatten();
        if arg.starts_with('-') && !selects {
            kept.push(arg);
            kept.extend(value);
        }
    }
    kept
}

/// Runs `cmd` with the terminal as its stdio: the exit code to pass on.
fn status_of(cmd: &mut Command) -> Result<ExitCode> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", process::show(cmd)))?;
    Ok(process::exit_code(status))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(args: &[&str]) -> Vec<String> {
        args.iter().map(|arg| (*arg).to_owned()).collect()
    }

    #[test]
    fn the_separator_splits_cargo_from_harness_arguments() {
        let args = strings(&["-p", "ctxleak-daemon", "--", "census::", "--nocapture"]);
        let (cargo, harness) = split_at_separator(&args);
        assert_eq!(cargo, &args[..2]);
        assert_eq!(harness, &args[3..]);
        let args = strings(&["-p", "xtask"]);
        assert_eq!(split_at_separator(&args), (&args[..], &[][..]));
    }

    #[test]
    fn a_run_that_names_its_tests_keeps_only_the_harness_flags() {
        let args = strings(&[
            "census::",
            "--nocapture",
            "--skip",
            "slow",
            "--color",
            "always",
            "--test-threads=4",
            "--exact",
            "--test-threads",
            "2",
            "daemon::",
            "--format=terse",
        ]);
        assert_eq!(
            harness_flags(&args),
            ["--nocapture", "--color", "always", "--format=terse"]
        );
    }
}
