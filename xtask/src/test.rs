//! `cargo xtask test`: the README's test command, and CI's.

use std::process::ExitCode;

use anyhow::{Context, Result};

use crate::{deploy, fixtures, go, offsets, process, setup, workspace::Workspace};

pub fn run(ws: &Workspace, args: &[String]) -> Result<ExitCode> {
    setup::run(ws, false)?;
    fixtures::build(ws, go::GO_VERSIONS, &fixtures::programs(ws)?, true)?;
    // tests/offset_table.rs checks a few more Go releases than the supported ones, different
    // ones each day (`cargo xtask offsets --check` checks them all).
    let extra = offsets::todays_extra_releases();
    offsets::prepare(ws, &extra)?;
    // tests/prometheus.rs scrapes ctxleak with a real Prometheus server and queries it.
    let prometheus = deploy::ensure_prometheus(ws.root())?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!(
            "warning: not running as root: the tests that load BPF programs will fail (run `sudo -E cargo xtask test`)"
        );
    }
    // Not --workspace: the default members leave out the eBPF crate, which
    // only builds for the BPF target.
    let mut cmd = process::cargo();
    cmd.current_dir(ws.root())
        .arg("test")
        // Report every failing test binary, not only the first.
        .arg("--no-fail-fast")
        .args(args)
        .env("CTXLEAK_FIXTURES", ws.fixtures_out())
        .env("CTXLEAK_GO_VERSIONS", go::GO_VERSIONS.join(","))
        .env("CTXLEAK_OFFSETS_MATRIX", extra.join(","))
        .env("CTXLEAK_PROMETHEUS", &prometheus.prometheus);
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", process::show(&cmd)))?;
    Ok(process::exit_code(status))
}
