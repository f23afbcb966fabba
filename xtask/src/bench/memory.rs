//! `cargo xtask bench memory`: the daemon's heap per tracked goroutine with 1 000 000 live ones
//! (the `memory` bench binary), against the raw event data.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;
use serde_json::json;

use super::shared::{BenchCrate, bench_json, kernel, publish};
use crate::workspace::Workspace;

/// The goal of issue #8 for memory, in bytes per tracked goroutine.
const MEMORY_GOAL: f64 = 128.0;

/// The daemon's heap per tracked goroutine (the `memory` bench binary), against the raw
/// event data of the same goroutines.
pub(super) fn run(ws: &Workspace, out: &Path) -> Result<()> {
    let (shown, rows) = bench_json(
        ws,
        BenchCrate::Daemon { probes: false },
        "memory",
        &[] as &[&str],
    )?;
    let result = &rows[0];
    let kernel = kernel();
    let goroutines = result["goroutines"].as_u64().unwrap_or(0);
    let mut md = String::new();
    writeln!(md, "# Daemon memory per tracked goroutine\n")?;
    writeln!(md, "Kernel {kernel}; `{shown}`\n")?;
    writeln!(
        md,
        "{goroutines} goroutines. Heap counted by a global allocator wrapping the system one \
         (bytes held once built, and the peak while building); the growth of resident memory \
         (RSS) as a cross-check, which also counts pages the allocator kept after freeing \
         them (the tables a growing hash table left behind). The baseline is the raw event data, a `Vec<GoroutineEvent>` of the same \
         goroutines ({} bytes each).\n",
        result["event_bytes"],
    )?;
    writeln!(
        md,
        "| what | bytes/goroutine | peak bytes/goroutine | RSS growth | / raw events |"
    )?;
    writeln!(md, "|---|---|---|---|---|")?;
    let empty = Vec::new();
    let entries = result["rows"].as_array().unwrap_or(&empty);
    for row in entries {
        writeln!(
            md,
            "| {} | {:.1} | {:.1} | {:.1} MB | {:.2}× |",
            row["what"].as_str().unwrap_or_default(),
            row["bytes_per_goroutine"].as_f64().unwrap_or(0.0),
            row["peak_bytes_per_goroutine"].as_f64().unwrap_or(0.0),
            row["resident_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            row["ratio_to_raw_events"].as_f64().unwrap_or(0.0),
        )?;
    }
    let tracked = result["tracked_bytes_per_goroutine"]
        .as_f64()
        .unwrap_or(f64::NAN);
    writeln!(
        md,
        "\nThe daemon's live set: {tracked:.1} bytes per tracked goroutine (goal of issue #8: at \
         most {MEMORY_GOAL:.0}; {}). Not counted here: while a census runs (every \
         `--census-interval`) it holds a {}-byte record per goroutine, and its stacks and frames.",
        if tracked <= MEMORY_GOAL {
            "met"
        } else {
            "not met"
        },
        result["census_record_bytes"],
    )?;
    let json = json!({
        "kernel": kernel,
        "command": shown,
        "goal_bytes_per_goroutine": MEMORY_GOAL,
        "result": result,
    });
    publish(out, "memory", &md, &json)
}
