//! The two ways ctxleak counts a target's goroutines from memory while its probes are off,
//! timed against each other on a running Go program: a scan of `allgs` (`census::take`, every
//! g read) and the runtime's own arithmetic (`gcount::GcountReader::read`: `len(allgs)` minus
//! the free lists, split by `sched.ngsys`). Prints one JSON object with each one's median and
//! minimum time per read, bytes per read, and the counts each gave on the last round (equal
//! when the target is quiescent). Needs root (it reads /proc/PID/mem).
//!
//!     cargo bench -p ctxleak-daemon --no-default-features --bench gcount -- PID [--rounds N]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ctxleak_daemon::census;
use ctxleak_daemon::gcount::GcountReader;
use ctxleak_daemon::goexe::GoBinary;
use ctxleak_daemon::procmem::{self, ProcessMemory};
use ctxleak_daemon::tracker::{GoroutineKind, kind_of_start};
use serde_json::json;

mod common;

fn fail(message: impl std::fmt::Display) -> ! {
    common::fail("gcount", message)
}

/// Median and minimum, in microseconds.
fn summary(mut samples: Vec<Duration>) -> serde_json::Value {
    samples.sort();
    json!({
        "median_us": samples[samples.len() / 2].as_secs_f64() * 1e6,
        "min_us": samples[0].as_secs_f64() * 1e6,
    })
}

fn main() {
    let usage = "usage: gcount PID [--rounds N]";
    let args = common::Args::parse(usage, &["--rounds"]);
    let rounds = args.number("--rounds", 20);
    let pid: u32 = args
        .positional
        .first()
        .and_then(|pid| pid.parse().ok())
        .unwrap_or_else(|| fail(usage));
    let exe = PathBuf::from(format!("/proc/{pid}/exe"));
    let binary = GoBinary::open(&exe, &exe).unwrap_or_else(|error| fail(error));
    let memory = ProcessMemory::open(pid).unwrap_or_else(|error| fail(error));
    let bias = if binary.is_pie {
        let first = binary.first_segment_address().unwrap_or(0);
        procmem::load_bias(pid, &exe, first).unwrap_or_else(|error| fail(error))
    } else {
        0
    };
    let allgs = binary.allgs.wrapping_add(bias);
    let sched = binary.sched.as_ref().unwrap_or_else(|error| fail(error));
    let reader = GcountReader::new(pid, sched, allgs, bias);

    let (mut scans, mut sums) = (Vec::new(), Vec::new());
    let (mut census, mut gcount) = (None, None);
    for _ in 0..rounds {
        let start = Instant::now();
        let taken = census::take(&memory, &binary.g_layout, None, allgs)
            .unwrap_or_else(|error| fail(format_args!("census of PID {pid}: {error}")));
        scans.push(start.elapsed());
        census = Some(taken);
        let start = Instant::now();
        let counted = reader.read(&memory).unwrap_or_else(|error| fail(error));
        sums.push(start.elapsed());
        gcount = Some(counted);
    }
    let (Some(census), Some(gcount)) = (census, gcount) else {
        fail("no round ran")
    };
    let system = census
        .goroutines
        .iter()
        .filter(|g| kind_of_start(&binary, bias, g.startpc) == GoroutineKind::System)
        .count();
    let result = json!({
        "pid": pid,
        "go": binary.version.raw,
        "rounds": rounds,
        "scan": {
            "time": summary(scans),
            "bytes": census.bytes,
            "user": census.goroutines.len() - system,
            "system": system,
            "unreadable": census.unreadable,
            "high_goid": census.high_goid,
        },
        "gcount": {
            "time": summary(sums),
            "bytes": gcount.bytes,
            "user": gcount.counts.user,
            "system": gcount.counts.system,
            "goidgen": gcount.goidgen,
            "procs": gcount.procs,
        },
    });
    println!("{result}");
}
