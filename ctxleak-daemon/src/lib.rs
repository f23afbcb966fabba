//! ctxleak's daemon: reads Go binaries and processes from outside, drives the eBPF probes,
//! tracks goroutines and serves metrics. The `ctxleak` binary is a thin command line on top.

pub mod attach;
pub mod census;
pub mod goexe;
pub mod inspect;
pub mod metrics;
pub mod probes;
pub mod procmem;
pub mod readable;
pub mod target;
pub mod tracker;
