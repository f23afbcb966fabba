//! The daemon's memory per tracked goroutine: the heap a `GoroutineTracker` holds once
//! 1 000 000 goroutines are alive in it, counted by a global allocator that wraps the system
//! one and keeps the bytes currently allocated (and their peak), divided by the goroutines.
//! The baseline is the raw event data: a `Vec<GoroutineEvent>` of the same goroutines (48
//! bytes each, what the probes send), measured the same way; a `Vec<u64>` of their goids (8
//! bytes each) is shown for scale.
//!
//! Rows:
//! - the live set built from 1 M `Created` events, as the daemon builds it from the probes
//!   (bytes held, and the peak while it grew: a hash table that grows briefly holds its old
//!   and new arrays);
//! - the same after a snapshot (`GoroutineTracker::reset`, what attaching does) of 1 M
//!   goroutines;
//! - after 1 M further exits within the tracker's memory of recent exits (2 s): what a burst
//!   leaves behind (exits are remembered, and the table keeps its size).
//!
//! Per tracked context: see [`context_rows`], the place for the context tracker's rows.
//!
//! It prints one JSON object. `cargo xtask bench memory` runs it.
//!
//!     cargo bench -p ctxleak-daemon --no-default-features --bench memory -- [--goroutines N]

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

use ctxleak_common::{ContextChange, ContextEvent, EventHeader, EventKind, GoroutineEvent};
use ctxleak_daemon::census::GoroutineRecord;
use ctxleak_daemon::contexts::ContextTracker;
use ctxleak_daemon::tracker::{GoroutineKind, GoroutineTracker};
use serde_json::{Value, json};

const DEFAULT_GOROUTINES: usize = 1_000_000;

/// Bytes currently allocated through the global allocator, and their peak since the last
/// [`reset_peak`].
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

struct Counting;

impl Counting {
    fn grew(size: usize) {
        let now = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
        PEAK.fetch_max(now, Ordering::Relaxed);
    }

    fn shrank(size: usize) {
        CURRENT.fetch_sub(size, Ordering::Relaxed);
    }
}

// SAFETY: every call is passed to the system allocator unchanged; only counters are kept.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's contract is the system allocator's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for alloc.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            Self::grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for alloc.
        unsafe { System.dealloc(ptr, layout) };
        Self::shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for alloc.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            Self::grew(new_size);
            Self::shrank(layout.size());
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn current() -> usize {
    CURRENT.load(Ordering::Relaxed)
}

fn reset_peak() {
    PEAK.store(current(), Ordering::Relaxed);
}

/// Resident memory of this process in bytes (/proc/self/statm), a cross-check of the counts.
fn resident() -> usize {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|statm| statm.split_whitespace().nth(1)?.parse::<usize>().ok())
        .map_or(0, |pages| pages * 4096)
}

/// What building something cost over the heap before: bytes held once built, the peak
/// while building, and the change in resident memory.
#[derive(Clone, Copy)]
struct Stats {
    held: usize,
    peak: usize,
    resident: isize,
}

impl Stats {
    /// `self`, then `more` on top of it.
    fn then(self, more: Stats) -> Stats {
        Stats {
            held: self.held + more.held,
            peak: self.peak.max(self.held + more.peak),
            resident: self.resident + more.resident,
        }
    }
}

fn measure<T>(build: impl FnOnce() -> T) -> (T, Stats) {
    let (before, resident_before) = (current(), resident());
    reset_peak();
    let value = black_box(build());
    let stats = Stats {
        held: current().saturating_sub(before),
        peak: PEAK.load(Ordering::Relaxed).saturating_sub(before),
        resident: resident() as isize - resident_before as isize,
    };
    (value, stats)
}

/// One row of the table: `stats` for `n` goroutines (or contexts), against `raw` bytes each.
fn row(what: &str, stats: Stats, n: usize, raw: f64) -> Value {
    let per_item = stats.held as f64 / n as f64;
    json!({
        "what": what,
        "bytes": stats.held,
        "peak_bytes": stats.peak,
        "resident_bytes": stats.resident,
        "bytes_per_goroutine": per_item,
        "peak_bytes_per_goroutine": stats.peak as f64 / n as f64,
        "ratio_to_raw_events": per_item / raw,
    })
}

fn created(goid: u64) -> GoroutineEvent {
    GoroutineEvent {
        header: EventHeader {
            kind: EventKind::Created as u32,
            pid: 1,
            ktime_ns: 1_000 + goid,
            goid,
        },
        parent_goid: 1,
        gopc: 0x40_1000,
        startpc: 0x40_2000 + (goid % 64) * 0x100,
    }
}

/// startpc 0x40_2000 starts a runtime (system) goroutine, as `kind_of_function` would say.
fn classify(startpc: u64) -> GoroutineKind {
    if startpc == 0x40_2000 {
        GoroutineKind::System
    } else {
        GoroutineKind::User
    }
}

/// The context tracker's rows: `n` contexts registered under one long-lived parent and never
/// cancelled (the leak ctxleak counts), each made by its own goroutine, once while those
/// goroutines are alive (each bound to its context) and once after they exited (orphaned: the
/// record alone). Baseline: the raw `ContextEvent`s of the creations.
fn context_rows(n: usize) -> Vec<Value> {
    let count = n as u64;
    let event = |kind: EventKind, goid: u64, detail: u64| ContextEvent {
        change: ContextChange {
            kind: kind as u32,
            pid: 1,
            context: 0xc000_0000_0000 + goid * 0x60,
            detail,
        },
        goid,
        parent_type: 0,
        stack: [0x40_3000 + (goid % 16) * 0x10, 0x40_4000, 0, 0, 0, 0, 0, 0],
    };
    let (events, events_stats) = measure(|| {
        (1..=count)
            .map(|goid| event(EventKind::ContextCreated, goid, 0))
            .collect::<Vec<_>>()
    });
    let raw = events_stats.held as f64 / n as f64;
    let site = std::sync::Arc::new(ctxleak_daemon::api::SourceLocation {
        function: "main.leak".into(),
        file: "/src/main.go".into(),
        line: 42,
    });
    // Every context created and registered under one parent; with `creators_exit`, each
    // creator exits right after, leaving the context alone (orphaned, the runtime lostcancel),
    // else each creator stays alive, bound to its context.
    let build = |creators_exit: bool| {
        measure(|| {
            let mut tracker = ContextTracker::default();
            for (goid, created) in (1..=count).zip(&events) {
                tracker.apply(created, 1_000 + goid, |_| Some(site.clone()));
                tracker.apply(
                    &event(EventKind::ContextRegistered, goid, 0xc000_1000),
                    1_000 + goid,
                    |_| None,
                );
                if creators_exit {
                    tracker.apply_goroutine(&GoroutineEvent {
                        header: EventHeader {
                            kind: EventKind::Exited as u32,
                            pid: 1,
                            goid,
                            ..EventHeader::default()
                        },
                        ..GoroutineEvent::default()
                    });
                }
            }
            tracker
        })
    };
    let (tracker, orphaned_stats) = build(true);
    assert_eq!(tracker.sizes(), (n, 0), "every context tracked, no binding");
    drop(tracker);
    let (tracker, bound_stats) = build(false);
    assert_eq!(tracker.sizes(), (n, n), "every context and binding tracked");
    drop(tracker);
    drop(events);
    vec![
        row(
            "raw context events, `Vec<ContextEvent>` (baseline, per context)",
            events_stats,
            n,
            raw,
        ),
        row(
            "**context tracker, unreleased contexts** (creators exited; per context)",
            orphaned_stats,
            n,
            raw,
        ),
        row(
            "context tracker, the same with each creator alive and bound (per context + its goroutine's binding)",
            bound_stats,
            n,
            raw,
        ),
    ]
}

mod common;

fn main() {
    let args = common::Args::parse(
        "usage: memory [--goroutines N]: run it through `cargo xtask bench memory`",
        &["--goroutines"],
    );
    let n = args.number("--goroutines", DEFAULT_GOROUTINES);
    let count = n as u64;

    // The baselines.
    let (events, events_stats) = measure(|| (1..=count).map(created).collect::<Vec<_>>());
    let raw = events_stats.held as f64 / n as f64;
    let (goids, goids_stats) = measure(|| (1..=count).collect::<Vec<u64>>());
    drop(goids);

    // The live set from events, as the probes build it.
    let (mut tracker, live_stats) = measure(|| {
        let mut tracker = GoroutineTracker::default();
        for event in &events {
            tracker.apply(event, classify);
        }
        tracker
    });
    let counts = tracker.counts();
    assert_eq!(
        counts.user + counts.system,
        count,
        "every goroutine tracked"
    );

    // A burst of exits: the live set emptied within the memory of recent exits.
    let ((), exits_stats) = measure(|| {
        for goid in 1..=count {
            let exit = GoroutineEvent {
                header: EventHeader {
                    kind: EventKind::Exited as u32,
                    pid: 1,
                    ktime_ns: 2_000_000 + goid,
                    goid,
                },
                ..GoroutineEvent::default()
            };
            tracker.apply(&exit, classify);
        }
    });
    assert_eq!(tracker.counts().user + tracker.counts().system, 0);
    drop(tracker);

    // The live set from a snapshot, as attaching seeds it.
    let records: Vec<GoroutineRecord> = (1..=count)
        .map(|goid| GoroutineRecord {
            goid,
            status: 4,
            startpc: created(goid).startpc,
            ..GoroutineRecord::default()
        })
        .collect();
    let (tracker, snapshot_stats) = measure(|| {
        let mut tracker = GoroutineTracker::default();
        tracker.reset(1_000, &records, classify);
        tracker
    });
    drop(tracker);
    drop(events);

    let mut rows = vec![
        row(
            "raw event data, `Vec<GoroutineEvent>` (baseline)",
            events_stats,
            n,
            raw,
        ),
        row("goids alone, `Vec<u64>`", goids_stats, n, raw),
        row(
            "**tracker, live set from `Created` events**",
            live_stats,
            n,
            raw,
        ),
        row(
            "tracker, live set from a snapshot (`reset`)",
            snapshot_stats,
            n,
            raw,
        ),
        row(
            "tracker, after as many exits within 2 s (live set empty)",
            live_stats.then(exits_stats),
            n,
            raw,
        ),
    ];
    rows.extend(context_rows(n));
    println!(
        "{}",
        json!({
            "goroutines": n,
            "event_bytes": GoroutineEvent::SIZE,
            "census_record_bytes": size_of::<GoroutineRecord>(),
            "tracked_bytes_per_goroutine": live_stats.held as f64 / n as f64,
            "rows": rows,
        })
    );
}
