//! `cargo xtask offsets`: the offset table for binaries without DWARF.
//!
//! Builds the phases fixture with every supported Go toolchain, asks `ctxleak inspect --json`
//! for the struct layouts it reads from each build's DWARF, and writes them, keyed by exact
//! Go version, to ctxleak-daemon/data/go-offsets.json, which the daemon embeds. A test
//! (offset_table.rs) checks the committed table against DWARF again, so it cannot go stale.

use std::collections::BTreeMap;
use std::fs;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::workspace::Workspace;
use crate::{fixtures, go, process};

pub fn run(ws: &Workspace) -> Result<()> {
    crate::setup::run(ws, false)?;
    fixtures::run(ws, &[])?;
    process::run(process::cargo().current_dir(ws.root()).args([
        "build",
        "--quiet",
        "--package",
        "ctxleak-daemon",
    ]))?;
    let ctxleak = ws.cargo_target().join("debug/ctxleak");

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
        table.insert(reported.to_owned(), inspection["layouts"].clone());
        println!("offsets: go{version}: {}", inspection["layouts"]);
    }
    let path = ws.root().join("ctxleak-daemon/data/go-offsets.json");
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
