//! bpf-linker, which links the eBPF crate. It is built against nightly's own
//! libLLVM (no system LLVM to install), found through symlinks in
//! target/tools/llvm/lib; the binary keeps that folder as its runpath.

use std::ffi::OsStr;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use super::Report;
use super::nightly::Nightly;
use crate::{process, workspace::Workspace};

const BPF_LINKER_VERSION: &str = "0.13.0";

pub fn ensure(ws: &Workspace, nightly: &Nightly, report: &Report) -> Result<()> {
    // Always refreshed, even when bpf-linker is present: an installed
    // bpf-linker loads libLLVM through these links, so a `cargo clean` or a
    // nightly update would otherwise leave it unable to start.
    if link_llvm(ws, nightly)? {
        report.installed(format!(
            "libLLVM links in {}",
            ws.llvm_prefix().join("lib").display()
        ));
    }
    if let Some(path) = find() {
        match runs(&path) {
            Ok(()) => {
                report.found(format!("bpf-linker ({})", path.display()));
                return Ok(());
            }
            Err(err) => println!(
                "bpf-linker at {} does not run, rebuilding it: {err:#}",
                path.display()
            ),
        }
    }
    report.installing(format!(
        "bpf-linker with LLVM {} (about 90 s)",
        nightly.llvm_major
    ));
    install(ws, nightly)?;
    let path = find().context(
        "bpf-linker was installed but is neither on PATH nor in $CARGO_HOME/bin: add $CARGO_HOME/bin to PATH",
    )?;
    runs(&path).context("the freshly built bpf-linker does not run: remove target/tools/llvm and run `cargo xtask setup` again")?;
    report.installed(format!("bpf-linker ({})", path.display()));
    Ok(())
}

/// bpf-linker on PATH, else in $CARGO_HOME/bin, where `cargo install` puts it
/// even when that folder is not on PATH.
fn find() -> Option<PathBuf> {
    which::which("bpf-linker").ok().or_else(|| {
        let path = cargo_home()?.join("bin/bpf-linker");
        path.is_file().then_some(path)
    })
}

fn cargo_home() -> Option<PathBuf> {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".cargo")))
}

/// Found is not enough: a bpf-linker whose libLLVM is gone fails to start.
fn runs(path: &Path) -> Result<()> {
    process::output(Command::new(path).arg("--version")).map(drop)
}

/// Points target/tools/llvm/lib/{libLLVM.so, <soname>} at nightly's libLLVM;
/// llvm-sys links against the first, the dynamic loader looks for the second.
/// Returns whether anything changed.
fn link_llvm(ws: &Workspace, nightly: &Nightly) -> Result<bool> {
    let lib = nightly.sysroot.join("lib");
    let target = fs::read_dir(&lib)
        .with_context(|| format!("could not read {}: reinstall nightly with `rustup toolchain install nightly --force`", lib.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.file_name().and_then(OsStr::to_str).is_some_and(|n| n.starts_with("libLLVM.so.")))
        .with_context(|| format!("nightly has no libLLVM.so.* in {}: reinstall it with `rustup toolchain install nightly --force`", lib.display()))?;
    // Rust's libLLVM is named after its soname, so the file name serves as both.
    let soname = target
        .file_name()
        .context("libLLVM path has no file name")?;
    let dir = ws.llvm_prefix().join("lib");
    fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    let mut changed = false;
    for name in [OsStr::new("libLLVM.so"), soname] {
        changed |= symlink(&target, &dir.join(name))?;
    }
    Ok(changed)
}

/// Makes `link` point at `target`, replacing whatever was there; returns
/// whether it had to.
fn symlink(target: &Path, link: &Path) -> Result<bool> {
    if fs::read_link(link).is_ok_and(|current| current == target) {
        return Ok(false);
    }
    match fs::remove_file(link) {
        Ok(()) => {}
        Err(err) if err.kind() == ErrorKind::NotFound => {}
        Err(err) => bail!(
            "could not replace {}: {err}: remove it by hand",
            link.display()
        ),
    }
    std::os::unix::fs::symlink(target, link)
        .with_context(|| format!("could not link {} to {}", link.display(), target.display()))?;
    Ok(true)
}

fn install(ws: &Workspace, nightly: &Nightly) -> Result<()> {
    let features = format!("llvm-{}", nightly.llvm_major);
    let mut cmd = process::cargo();
    cmd.args([
        "install",
        "bpf-linker",
        // The release checked against nightly 1.97's LLVM 22 here; a newer one may need a
        // newer rustc or LLVM.
        "--version",
        BPF_LINKER_VERSION,
        "--no-default-features",
        "--features",
        &features,
    ])
    // We only get here when bpf-linker is missing or broken, but cargo's
    // records may still call it installed and skip the build.
    .arg("--force")
    .env("LLVM_PREFIX", ws.llvm_prefix());
    process::run(&mut cmd).with_context(|| {
        format!("could not build bpf-linker: check that crates.io is reachable and that bpf-linker offers the feature {features} for nightly's LLVM")
    })
}
