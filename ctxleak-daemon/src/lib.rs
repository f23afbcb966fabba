//! ctxleak's daemon: reads Go binaries and processes from outside, drives the eBPF probes,
//! tracks goroutines and serves metrics. The `ctxleak` binary is a thin command line on top.

pub mod api;
#[cfg(feature = "probes")]
pub mod attach;
pub mod budget;
#[cfg(feature = "probes")]
pub mod calibrate;
pub mod census;
pub mod cgroup;
pub mod chans;
pub mod config;
pub mod contexts;
#[cfg(feature = "probes")]
pub mod daemon;
pub mod dashboard;
pub mod discover;
pub mod error_line;
pub mod gcount;
pub mod options;
/// The readers of Go executables: their own crate, the boundary of untrusted input.
pub use ctxleak_goexe as goexe;
pub mod groups;
#[cfg(feature = "probes")]
pub mod http;
pub mod inspect;
pub mod listeners;
pub mod metrics;
#[cfg(feature = "probes")]
pub mod multi;
pub mod pprof;
#[cfg(feature = "probes")]
pub mod prober;
#[cfg(feature = "probes")]
pub mod probes;
pub mod procmem;
#[cfg(feature = "probes")]
pub mod readable;
#[cfg(feature = "probes")]
pub mod release;
pub mod report;
#[cfg(feature = "probes")]
pub mod session;
#[cfg(feature = "probes")]
pub mod target;
pub mod top;
pub mod tracker;
pub mod trim;
#[cfg(feature = "probes")]
pub mod watcher;
