//! `cargo xtask build [--target TRIPLE]`: a release `ctxleak` for this machine, or cross-built
//! for arm64 (`aarch64-unknown-linux-gnu`) on an x86-64 one, with what that needs installed
//! first: nightly and bpf-linker (the eBPF programs, built by ctxleak-daemon's build script for
//! the target's registers, see ctxleak-ebpf/src/regs.rs), the Rust target (rustup), and
//! Debian's cross linker and C library (apt-get). The linker is named once, in
//! .cargo/config.toml, so a plain `cargo build --target …` works as well once installed.
//!
//! glibc, not musl: the same C library and allocator as the x86-64 build that the benchmarks
//! measured (musl's allocator is much slower for the census's many small allocations), and
//! every arm64 distribution and the Containerfile's Debian base have it.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{debian, process, setup, workspace::Workspace};

/// A target ctxleak cross-builds for, and what building for it needs.
pub struct Cross {
    pub triple: &'static str,
    /// Debian's (and Go's) name of the architecture.
    pub debian_arch: &'static str,
    /// The C compiler that links (as in .cargo/config.toml) and the packages that bring it and
    /// the target's C library (also the C compiler of cgo fixtures built for it).
    pub linker: &'static str,
    packages: &'static [&'static str],
    /// Where those packages put the target's C library: its dynamic loader and shared
    /// libraries, which a root filesystem for the target needs beside `ctxleak`.
    pub libraries: &'static str,
}

pub const ARM64: Cross = Cross {
    triple: "aarch64-unknown-linux-gnu",
    debian_arch: "arm64",
    linker: "aarch64-linux-gnu-gcc",
    packages: &["gcc-aarch64-linux-gnu", "libc6-dev-arm64-cross"],
    libraries: "/usr/aarch64-linux-gnu/lib",
};

const CROSS_TARGETS: &[Cross] = &[ARM64];

/// Build a release `ctxleak` (target/release/ctxleak, or target/TRIPLE/release/ctxleak).
#[derive(clap::Args)]
pub struct Options {
    /// Cross-build for this target: aarch64-unknown-linux-gnu (arm64). Default: this machine.
    #[arg(long, value_name = "TRIPLE", value_parser = clap::builder::PossibleValuesParser::new(CROSS_TARGETS.iter().map(|t| t.triple)))]
    target: Option<String>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    let cross = match options.target.as_deref() {
        None => None,
        Some(triple) => Some(
            CROSS_TARGETS
                .iter()
                .find(|cross| cross.triple == triple)
                .with_context(|| {
                    format!("no cross target {triple}: give aarch64-unknown-linux-gnu")
                })?,
        ),
    };
    let binary = ctxleak(ws, cross)?;
    println!("built {}", binary.display());
    Ok(())
}

/// Builds the release `ctxleak` for `cross` (None: this machine): its path.
pub fn ctxleak(ws: &Workspace, cross: Option<&Cross>) -> Result<PathBuf> {
    let args = [
        "build",
        "--release",
        "--package",
        "ctxleak-daemon",
        "--bin",
        "ctxleak",
    ];
    process::run(&mut cargo(ws, cross, &args)?)
        .context("could not build ctxleak: fix the errors above")?;
    let folder = match cross {
        Some(cross) => ws.cargo_target().join(cross.triple),
        None => ws.cargo_target(),
    };
    Ok(folder.join("release/ctxleak"))
}

/// `cargo ARGS` in the workspace, with `--target` for `cross`, once everything the build
/// needs is installed. More arguments may follow, up to a `--`.
pub fn cargo(ws: &Workspace, cross: Option<&Cross>, args: &[&str]) -> Result<Command> {
    setup::ensure_build(ws)?;
    let mut cmd = process::cargo();
    cmd.current_dir(ws.root()).args(args);
    if let Some(cross) = cross {
        ensure_cross(cross)?;
        cmd.args(["--target", cross.triple]);
    }
    Ok(cmd)
}

/// The Rust target and Debian's cross linker and C library for `cross`, installed if missing.
fn ensure_cross(cross: &Cross) -> Result<()> {
    let installed = process::output(Command::new("rustup").args(["target", "list", "--installed"]))
        .context("could not list the Rust targets: check that `rustup` is on PATH")?;
    if !installed.lines().any(|line| line.trim() == cross.triple) {
        println!("installing: the Rust target {}", cross.triple);
        process::run(Command::new("rustup").args(["target", "add", cross.triple])).with_context(
            || {
                format!(
                    "could not add the Rust target: run `rustup target add {}`",
                    cross.triple
                )
            },
        )?;
    }
    if which::which(cross.linker).is_err()
        || !std::path::Path::new(cross.libraries)
            .join("libc.so.6")
            .is_file()
    {
        debian::install(
            cross.packages,
            &format!("to link ctxleak for {}", cross.triple),
        )?;
    }
    if which::which(cross.linker).is_err() {
        bail!(
            "{} is still missing after installing {}: install it by hand",
            cross.linker,
            cross.packages.join(" ")
        );
    }
    Ok(())
}
