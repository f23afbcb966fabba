//! `cargo xtask`: the project's developer commands (the README starts with them).
//!
//! Each command is a module that owns its `Options` (its flags, and as their doc its help) and
//! its `run`, as aya's and bpfman's xtasks are laid out; this file only dispatches.

mod bench;
mod build;
mod chaos;
mod debian;
mod deploy;
mod fixtures;
mod fuzz;
mod go;
mod offsets;
mod process;
mod run;
mod setup;
mod signals;
mod test;
mod test_arm64;
mod workspace;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::workspace::Workspace;

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    about = "ctxleak's developer commands"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    Setup(setup::Options),
    Build(build::Options),
    Fixtures(fixtures::Options),
    Bench(bench::Options),
    Chaos(chaos::Options),
    DeployCheck(deploy::Options),
    Offsets(offsets::Options),
    Fuzz(fuzz::Options),
    Test(test::Options),
    TestArm64(test_arm64::Options),
    Run(run::Options),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let ws = Workspace::locate();
    let done = |()| ExitCode::SUCCESS;
    let outcome = match &cli.command {
        Command::Setup(options) => setup::run(&ws, options).map(done),
        Command::Build(options) => build::run(&ws, options).map(done),
        Command::Fixtures(options) => fixtures::run(&ws, options).map(done),
        Command::Bench(options) => bench::run(&ws, options).map(done),
        Command::Chaos(options) => chaos::run(&ws, options),
        Command::DeployCheck(options) => deploy::run(&ws, options).map(done),
        Command::Offsets(options) => offsets::run(&ws, options).map(done),
        Command::Fuzz(options) => fuzz::run(&ws, options),
        Command::Test(options) => test::run(&ws, options),
        Command::TestArm64(options) => test_arm64::run(&ws, options).map(done),
        Command::Run(options) => run::run(&ws, options),
    };
    outcome.unwrap_or_else(|err| {
        // `{:#}` keeps anyhow's context chain on one line: "what failed: why".
        eprintln!("error: {err:#}");
        ExitCode::FAILURE
    })
}
