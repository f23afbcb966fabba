//! The nightly toolchain: aya builds the eBPF crate with it (build-std needs
//! its rust-src), and bpf-linker links against its libLLVM.

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result};

use super::Report;
use crate::process;

pub struct Nightly {
    pub sysroot: PathBuf,
    /// LLVM major version, which picks bpf-linker's `llvm-N` feature.
    pub llvm_major: String,
}

pub fn check(report: &Report) -> Result<Nightly> {
    let version = process::output(Command::new("rustc").args(["+nightly", "-vV"]))
        .context("the nightly toolchain is missing: run `rustup toolchain install nightly`")?;
    let llvm_major = version
        .lines()
        .find_map(|line| line.strip_prefix("LLVM version: "))
        .and_then(|v| v.trim().split('.').next())
        .filter(|major| !major.is_empty())
        .context("`rustc +nightly -vV` names no LLVM version: reinstall nightly with `rustup toolchain install nightly --force`")?
        .to_string();
    let sysroot = process::output(Command::new("rustc").args(["+nightly", "--print", "sysroot"]))
        .context("could not ask nightly rustc for its sysroot: reinstall nightly with `rustup toolchain install nightly --force`")?;
    let release = version
        .lines()
        .find_map(|line| line.strip_prefix("release: "))
        .unwrap_or("nightly");
    report.found(format!("rust {release} (LLVM {llvm_major})"));
    Ok(Nightly {
        sysroot: PathBuf::from(sysroot.trim()),
        llvm_major,
    })
}

pub fn ensure_rust_src(report: &Report) -> Result<()> {
    let installed = process::output(Command::new("rustup").args([
        "component",
        "list",
        "--toolchain",
        "nightly",
        "--installed",
    ]))
    .context("could not list nightly's components: check that `rustup` is on PATH")?;
    if installed.lines().any(|line| line.trim() == "rust-src") {
        report.found("rust-src for nightly");
        return Ok(());
    }
    report.installing("rust-src for nightly");
    process::run(Command::new("rustup").args(["component", "add", "rust-src", "--toolchain", "nightly"]))
        .context("could not add rust-src to nightly: run `rustup component add rust-src --toolchain nightly` and read its message")?;
    report.installed("rust-src for nightly");
    Ok(())
}
