//! `cargo xtask bench parse`: attach-time reading of a large (20 MB+) Go binary, with DWARF and
//! stripped (the `parse` bench binary of ctxleak-goexe), against reading the same file from the
//! page cache.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use super::shared::{BenchCrate, bench_json, build_big, file_name, kernel, publish};
use crate::go;
use crate::workspace::Workspace;

pub(super) fn run(ws: &Workspace, out: &Path) -> Result<()> {
    let version = go::NEWEST;
    let binaries = build_big(ws, out, version)?;
    let (shown, rows) = bench_json(ws, BenchCrate::Goexe, "parse", &binaries)?;
    let kernel = kernel();
    let mut md = String::new();
    writeln!(md, "# Attach-time parsing of Go binaries\n")?;
    writeln!(md, "Go {version}, kernel {kernel}; `{shown}`\n")?;
    writeln!(
        md,
        "Median of 15 rounds; the baseline is reading the same file from the page cache.\n"
    )?;
    writeln!(
        md,
        "| binary | size | read (baseline) | parse | parse / read | outcome |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|")?;
    for row in &rows {
        let name = file_name(row["file"].as_str().unwrap_or_default());
        writeln!(
            md,
            "| {name} | {:.1} MB | {:.1} ms | {:.1} ms | {:.1}× | {} |",
            row["bytes"].as_f64().unwrap_or(0.0) / 1e6,
            row["read_ms"].as_f64().unwrap_or(0.0),
            row["parse_ms"].as_f64().unwrap_or(0.0),
            row["ratio"].as_f64().unwrap_or(0.0),
            row["outcome"].as_str().unwrap_or_default(),
        )?;
    }
    let json =
        serde_json::json!({ "go": version, "kernel": kernel, "command": shown, "results": rows });
    publish(out, "parse", &md, &json)
}
