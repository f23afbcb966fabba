//! What ctxleak-daemon's benchmark binaries share: failing with one line, and their command
//! line (positional arguments, `--NAME N` options taking a positive integer, bare `--flags`;
//! `cargo bench` adds `--bench` to `harness = false` benchmarks, which is a bare flag too).

use std::fmt::Display;
use std::process::exit;

/// Prints "`bench`: `message`" and exits with status 1.
#[allow(dead_code, reason = "not every benchmark fails after parsing")]
pub fn fail(bench: &str, message: impl Display) -> ! {
    eprintln!("{bench}: {message}");
    exit(1)
}

/// A benchmark's command line.
pub struct Args {
    pub positional: Vec<String>,
    numbers: Vec<(String, usize)>,
    flags: Vec<String>,
}

impl Args {
    /// Parses the process's arguments: each of `numeric` (for example `"--rounds"`) takes a
    /// positive integer after it (else `usage` and exit 2).
    pub fn parse(usage: &str, numeric: &[&str]) -> Self {
        let mut parsed = Self {
            positional: Vec::new(),
            numbers: Vec::new(),
            flags: Vec::new(),
        };
        let mut args = std::env::args().skip(1);
        while let Some(arg) = args.next() {
            if numeric.contains(&arg.as_str()) {
                let Some(n) = args
                    .next()
                    .and_then(|n| n.parse::<usize>().ok())
                    .filter(|&n| n > 0)
                else {
                    eprintln!("{usage}");
                    exit(2)
                };
                parsed.numbers.push((arg, n));
            } else if arg.starts_with("--") {
                parsed.flags.push(arg);
            } else {
                parsed.positional.push(arg);
            }
        }
        parsed
    }

    /// Every value given to `name`, in order.
    pub fn numbers(&self, name: &str) -> Vec<usize> {
        self.numbers
            .iter()
            .filter(|(given, _)| given == name)
            .map(|(_, n)| *n)
            .collect()
    }

    /// The last value given to `name`, or `default`.
    pub fn number(&self, name: &str, default: usize) -> usize {
        self.numbers(name).last().copied().unwrap_or(default)
    }

    /// Whether the bare flag `name` was given.
    #[allow(dead_code, reason = "not every benchmark has flags")]
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|given| given == name)
    }
}
