//! ctxleak's daemon: reads Go binaries and processes from outside, drives the eBPF probes,
//! tracks goroutines and serves metrics. The `ctxleak` binary is a thin command line on top.

#[cfg(feature = "probes")]
pub mod attach;
pub mod census;
pub mod goexe;
pub mod inspect;
pub mod metrics;
#[cfg(feature = "probes")]
pub mod probes;
pub mod procmem;
#[cfg(feature = "probes")]
pub mod readable;
#[cfg(feature = "probes")]
pub mod target;
pub mod tracker;
