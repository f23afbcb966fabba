//! ctxleak's integration tests, one binary with one module per area (as ripgrep's
//! `tests/tests.rs`): the suite links once, and the helpers in `common` are shared by all.
//!
//! Run one area with `cargo xtask test -p ctxleak-daemon --test tests -- census::` (a test's
//! full name is `AREA::NAME`). `cargo xtask test` runs the areas in `RUN_ALONE`
//! (xtask/src/test.rs) on their own, one test at a time, after the others: their bounds were
//! measured with nothing else running.

mod common;

mod bad_input;
mod budget;
mod census;
mod context_http;
mod contexts;
mod daemon;
mod daemon_churn;
mod exec;
mod foreign_binaries;
mod goroutine_count;
mod healthy;
mod listeners;
mod offset_table;
mod park_times;
mod pprof_profile;
mod probe_stats;
mod prometheus;
mod report;
mod stop;
mod stuck;
mod suspects;
mod symbolize;
mod top_view;
