//! Debian's packages, the one source of outside tools besides rustup, pip and cargo: installed
//! with apt-get (as root), or downloaded with `apt-get download` and unpacked with `dpkg-deb`
//! under target/ without running their maintainer scripts, so nothing is set up system-wide.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

use crate::process;

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Installs `packages` system-wide (apt-get update, then install), for `why` (said first).
pub fn install(packages: &[&str], why: &str) -> Result<()> {
    let list = packages.join(" ");
    if !is_root() {
        bail!(
            "the Debian packages {list} are missing ({why}): install them (apt-get install {list}) or run as root"
        );
    }
    println!("installing: {list} (Debian packages, {why})");
    update()?;
    process::run(
        Command::new("apt-get")
            .args(["install", "-y", "-qq", "--no-install-recommends"])
            .args(packages),
    )
    .with_context(|| format!("cannot install {list}: run `apt-get install {list}`"))
}

fn update() -> Result<()> {
    process::run(Command::new("apt-get").args(["update", "-qq"]))
}

/// Lets apt fetch packages built for `arch` (a Debian architecture, e.g. arm64), whose package
/// lists it then downloads: `dpkg --add-architecture` and apt-get update, once.
pub fn add_architecture(arch: &str) -> Result<()> {
    let known = process::output(Command::new("dpkg").arg("--print-foreign-architectures"))?;
    if known.lines().any(|line| line.trim() == arch) {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "apt does not fetch {arch} packages on this machine: run `dpkg --add-architecture {arch} && apt-get update` as root"
        );
    }
    println!("installing: Debian's {arch} package lists (dpkg --add-architecture {arch})");
    process::run(Command::new("dpkg").args(["--add-architecture", arch]))?;
    update()
}

/// Downloads `package` (`name` or `name:arch`) and unpacks `paths` of it (as in the package,
/// `./usr/bin/x`) into `dir`, which holds nothing else afterwards. Unpacked beside `dir` and
/// renamed into place, so an interrupted run never leaves half a tree where a check finds it.
pub fn extract(package: &str, dir: &Path, paths: &[&str]) -> Result<()> {
    let partial = dir.with_extension("partial");
    let _ = fs::remove_dir_all(&partial);
    fs::create_dir_all(&partial).with_context(|| format!("cannot create {}", partial.display()))?;
    let deb = download(package, &partial)?;
    let mut unpack = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start dpkg-deb")?;
    let tar_input = unpack.stdout.take().context("dpkg-deb has no stdout")?;
    let extracted = Command::new("tar")
        .args(["-x", "--wildcards", "-C"])
        .arg(&partial)
        .args(paths)
        .stdin(tar_input)
        .status()
        .context("cannot start tar")?;
    let unpacked = unpack.wait().context("cannot wait for dpkg-deb")?;
    if !extracted.success() || !unpacked.success() {
        bail!("cannot extract {} from {}", paths.join(", "), deb.display());
    }
    fs::remove_file(&deb).with_context(|| format!("cannot remove {}", deb.display()))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&partial, dir)
        .with_context(|| format!("cannot move {} to {}", partial.display(), dir.display()))
}

/// `apt-get download package` into `dir`: the .deb's path. Fetches the package lists first
/// when apt does not know the package (most often they were never fetched on this machine).
fn download(package: &str, dir: &Path) -> Result<PathBuf> {
    let download = || {
        process::output(
            Command::new("apt-get")
                .args(["download", "-qq", package])
                .current_dir(dir),
        )
    };
    if download().is_err() {
        if !is_root() {
            bail!("cannot download Debian's {package} package: run `apt-get update` as root");
        }
        update()?;
        download().with_context(|| format!("cannot download Debian's {package} package"))?;
    }
    fs::read_dir(dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .find(|path| path.extension().is_some_and(|ext| ext == "deb"))
        .with_context(|| format!("apt-get download {package} left no .deb"))
}
