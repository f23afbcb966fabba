#![no_std]
// This file exists so that ctxleak-daemon can name this crate as a build dependency
// (which makes cargo rebuild the daemon when the eBPF code changes).
