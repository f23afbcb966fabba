//! Gives the memory that departed targets freed back to the kernel.
//!
//! glibc's malloc keeps what is freed: in its arenas (one per thread that allocated, up to
//! eight per core: the event loop, tokio's workers, the blocking threads that parse binaries
//! and read stacks) and, once a large block was freed, above a raised mmap threshold (a parse
//! of a Go binary allocates MBs at a time). A daemon that sees processes come and go keeps
//! the high-water mark of that churn for good: issue #20 saw `ctxleak daemon` at 143 MB with
//! nothing left to watch. `malloc_trim(0)` hands every free page of every arena back.
//!
//! Measured with `cargo xtask chaos --duration 45s --processes 8 --seed 1` (RSS: before the
//! churn, at its peak, 30 s after it):
//! - glibc as it was: 18.8, 38.0, 38.0 MB; in the same run again, one `malloc_trim(0)`
//!   (through gdb) in the idle daemon took it from 39.5 to 19.4 MB: everything kept was free
//!   memory, nothing was still in use;
//! - mimalloc 0.1: 60.1, 78.4, 66.4 MB;
//! - jemalloc (tikv-jemallocator 0.7): 35.7, 40.8, 21.5 MB, and 1 min 50 s more to build;
//! - glibc with this module: 18.7, 37.6, 18.8 MB.
//!
//! So glibc stays (the lowest baseline and the lowest "after", no C allocator to build), and
//! the watcher trims when sessions or executables were dropped: at most once every
//! [`TRIM_EVERY`], a walk over the free lists that took 1.2 ms (median of 12 in that run;
//! 4.8 ms at most) on the event loop. A session also trims right after a census of 100 000
//! goroutines or more, whose tables glibc would otherwise keep (`Session::census`).

use std::time::{Duration, Instant};

/// The shortest time between two trims.
pub const TRIM_EVERY: Duration = Duration::from_secs(5);

/// Decides when to trim: after memory was freed, not more often than [`TRIM_EVERY`].
#[derive(Debug, Default)]
pub struct Trimmer {
    freed: bool,
    last: Option<Instant>,
}

impl Trimmer {
    /// Something large was dropped (a session, a parsed executable).
    pub fn freed(&mut self) {
        self.freed = true;
    }

    /// Trims if memory was freed since the last trim and that was [`TRIM_EVERY`] ago;
    /// returns whether it did.
    pub fn tick(&mut self, now: Instant) -> bool {
        if !self.freed || self.last.is_some_and(|last| now - last < TRIM_EVERY) {
            return false;
        }
        self.freed = false;
        self.last = Some(now);
        release_free_memory();
        tracing::debug!(
            took_us = now.elapsed().as_micros(),
            "freed memory given back"
        );
        true
    }
}

/// `malloc_trim(0)` where the C library is glibc; other allocators give memory back on
/// their own.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks and releases the allocator's own free lists, under its
    // locks; it frees nothing that is in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_once_after_freeing_and_not_too_often() {
        let mut trimmer = Trimmer::default();
        let start = Instant::now();
        assert!(!trimmer.tick(start), "nothing freed yet");
        trimmer.freed();
        assert!(trimmer.tick(start));
        assert!(!trimmer.tick(start + TRIM_EVERY), "nothing freed since");
        trimmer.freed();
        assert!(!trimmer.tick(start + TRIM_EVERY / 2), "too soon");
        assert!(trimmer.tick(start + TRIM_EVERY));
    }
}
