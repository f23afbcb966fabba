//! Attach-time parsing of Go binaries: how long ctxleak takes to read what it needs from a
//! binary (version, symbols, layouts, probe addresses), as a ratio to reading the file from
//! the page cache, measured in the same run. `cargo xtask bench parse` builds the binaries
//! and runs this; it prints one JSON object per binary.
//!
//!     cargo bench -p ctxleak-goexe --bench parse -- FILE...

use std::path::Path;
use std::time::{Duration, Instant};

use ctxleak_goexe::GoBinary;

const ROUNDS: usize = 15;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn time(mut work: impl FnMut()) -> Duration {
    // One warm-up round fills the page cache and the allocator.
    work();
    median(
        (0..ROUNDS)
            .map(|_| {
                let start = Instant::now();
                work();
                start.elapsed()
            })
            .collect(),
    )
}

fn main() {
    let files: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with("--"))
        .collect();
    if files.is_empty() {
        eprintln!("usage: parse FILE...: run it through `cargo xtask bench parse`");
        std::process::exit(2);
    }
    for file in files {
        let path = Path::new(&file);
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if let Err(error) = std::fs::read(path) {
            eprintln!("parse: cannot read {file}: {error}");
            std::process::exit(1);
        }
        let read = time(|| {
            std::hint::black_box(std::fs::read(path).ok());
        });
        let mut outcome = String::from("ok");
        let parse = time(|| match GoBinary::open(path, path) {
            Ok(binary) => {
                std::hint::black_box(binary);
            }
            Err(error) => outcome = error.to_string(),
        });
        println!(
            "{{\"file\":{:?},\"bytes\":{size},\"read_ms\":{:.3},\"parse_ms\":{:.3},\"ratio\":{:.2},\"outcome\":{:?}}}",
            file,
            read.as_secs_f64() * 1e3,
            parse.as_secs_f64() * 1e3,
            parse.as_secs_f64() / read.as_secs_f64(),
            outcome,
        );
    }
}
