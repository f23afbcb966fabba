//! `cargo xtask bench`: benchmarks, each reported as ratios to a baseline measured in the
//! same run (these machines are noisy), with the command, Go version and kernel recorded.
//! Results go to target/bench/<name>.md and .json.
//!
//! One file per benchmark, each using only what they share (shared.rs):
//! - `parse` (parse.rs): attach-time reading of a large (20 MB+) Go binary, with DWARF and
//!   stripped, against reading the same file from the page cache.
//! - `census` (census.rs): ctxleak's goroutine census (g structs, stacks and symbols, groups)
//!   of a program with 100 000 parked goroutines, against Go's own goroutine dump in that
//!   program; and the pauses the program sees meanwhile, against an idle window (the noise
//!   floor). `census-million`, not run by default: the same with 1 000 000.
//! - `overhead` (overhead.rs): what the probes cost the target.
//! - `budget` (budget.rs): the probes under `--max-overhead`: their cost at several request
//!   rates and under goroutine churn, and how fast leaks are still named.
//! - `hitcost` (hitcost.rs): what the probes cost the net/http target at request rates from
//!   600 to 10 000 a second, probes on against off within one run, against ctxleak's estimate.
//! - `ingest` (ingest.rs): probe events per second one core of the daemon decodes and tracks,
//!   from a synthetic stream, against decoding alone.
//! - `memory` (memory.rs): the daemon's heap per tracked goroutine with 1 000 000 live ones,
//!   against the raw event data.
//! - `attach` (attach.rs): from `ctxleak attach --pid N` starting to its "attached" line, on
//!   the large binary with and without DWARF, against parsing the binary alone.

mod attach;
mod budget;
mod census;
mod hitcost;
mod ingest;
mod memory;
mod overhead;
mod parse;
pub(crate) mod shared;

use std::fs;

use anyhow::{Context, Result, bail};

use crate::setup;
use crate::workspace::Workspace;

/// Run the benchmarks (all, or the one named) and write target/bench/<name>.md and .json.
#[derive(clap::Args)]
pub struct Options {
    /// One benchmark: parse, census, overhead, budget, hitcost, ingest, memory or attach.
    name: Option<String>,
}

pub fn run(ws: &Workspace, options: &Options) -> Result<()> {
    setup::ensure(ws)?;
    let out = ws.bench_out();
    fs::create_dir_all(&out).with_context(|| format!("cannot create {}", out.display()))?;
    match options.name.as_deref() {
        None => {
            parse::run(ws, &out)?;
            census::run(ws, &out)?;
            ingest::run(ws, &out)?;
            memory::run(ws, &out)?;
            attach::run(ws, &out)?;
            overhead::run(ws, &out)?;
            hitcost::run(ws, &out)?;
            budget::run(ws, &out)
        }
        Some("parse") => parse::run(ws, &out),
        Some("census") => census::run(ws, &out),
        Some("census-million") => census::million(ws, &out),
        Some("overhead") => overhead::run(ws, &out),
        Some("budget") => budget::run(ws, &out),
        Some("hitcost") => hitcost::run(ws, &out),
        Some("ingest") => ingest::run(ws, &out),
        Some("memory") => memory::run(ws, &out),
        Some("attach") => attach::run(ws, &out),
        Some(other) => {
            bail!(
                "no benchmark named {other:?}: the benchmarks are: parse, census, overhead, \
                 budget, hitcost, ingest, memory, attach (and census-million, not run by default: \
                 the census of 1 000 000 goroutines)"
            )
        }
    }
}
