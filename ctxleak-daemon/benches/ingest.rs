//! Event ingestion: how many goroutine events per second one core of the daemon turns into
//! its live set, through the daemon's own code, as `watcher::Watcher::drain` and
//! `session::Session::apply_goroutine` run it: ring-buffer records decoded by
//! `probes::decode_record`, applied by `GoroutineTracker::apply`, each creation classified by
//! `tracker::kind_of_start` (the function at the goroutine's start PC, looked up in the
//! target's pclntab), and handed to `ContextTracker::apply_goroutine` (which holds no
//! context here: the stream has goroutine events only, as from a program that makes no
//! cancellable contexts). The daemon loses no event as long as the target
//! produces fewer than this many per second (a burst above it is what the ring absorbs).
//!
//! The stream is synthetic: a live set of N goroutines (seeded, untimed), then creations and
//! exits interleaved one for one, so the live set stays at N; goids increase, each exit is of
//! a live goroutine drawn at random (uniformly: the hash lookups miss the cache as often as
//! they can), and the clock advances 1 µs per event (1 M events/s, the goal of issue #8, so
//! that the tracker remembers as many recent exits as it would at that rate). Start PCs are
//! the entries of real functions of BINARY: 95 % of creations start one of 64 non-runtime
//! functions, 5 % one of 8 runtime functions (system goroutines).
//!
//! Each variant runs the same records (laid out as the kernel's BPF ring buffer lays them
//! out: an 8-byte header, then the event as the probes send it, 48 bytes for a creation and
//! a 24-byte [`EventHeader`] for an exit, 8-aligned), drained in one pass as the daemon
//! drains a ring:
//! - `decode`, the baseline: the loop and `decode_record` alone (the records are read,
//!   nothing is kept);
//! - `hashmap`: the same plus a plain `HashMap<goid, startpc>` insert or remove per event,
//!   the least any keyed live set costs;
//! - `tracker`: `GoroutineTracker::apply` with a constant classification;
//! - `daemon`: `GoroutineTracker::apply` with the daemon's classification, then
//!   `ContextTracker::apply_goroutine`.
//!
//! It prints one JSON object per live-set size. `cargo xtask bench ingest` runs it.
//!
//!     cargo bench -p ctxleak-daemon --bench ingest -- BINARY [--live N]... [--events N]

use std::collections::HashMap;
use std::hint::black_box;
use std::path::Path;
use std::process::exit;
use std::time::{Duration, Instant};

use ctxleak_common::{EventHeader, EventKind, GoroutineEvent};
use ctxleak_daemon::contexts::ContextTracker;
use ctxleak_daemon::goexe::GoBinary;
use ctxleak_daemon::probes::{Record, decode_record};
use ctxleak_daemon::tracker::{GoroutineKind, GoroutineTracker, kind_of_start};
use serde_json::json;

const ROUNDS: usize = 7;
const DEFAULT_LIVE: &[usize] = &[10_000, 100_000];
const DEFAULT_EVENTS: usize = 2_000_000;
const PID: u32 = 4242;
/// The BPF ring buffer's record header (length and page offset, `struct bpf_ringbuf_hdr`).
const HEADER: usize = 8;
/// A creation's ring-buffer record, the larger kind (an exit's is 32 bytes).
const RECORD: usize = (HEADER + GoroutineEvent::SIZE + 7) & !7;
/// Clock step between events: 1 µs, 1 M events/s.
const STEP_NS: u64 = 1_000;

mod common;

fn fail(message: impl std::fmt::Display) -> ! {
    common::fail("ingest", message)
}

/// xorshift64*: deterministic, so every variant and every run sees the same stream.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Start PCs: 64 non-runtime functions and 8 runtime ones, spread over the binary's text.
fn start_pcs(binary: &GoBinary) -> (Vec<u64>, Vec<u64>) {
    let (mut user, mut system) = (Vec::new(), Vec::new());
    for function in binary.pclntab.functions() {
        if function.name.starts_with("runtime.") {
            if function.name != "runtime.main" {
                system.push(function.entry);
            }
        } else {
            user.push(function.entry);
        }
    }
    let spread = |all: Vec<u64>, n: usize| -> Vec<u64> {
        let step = (all.len() / n).max(1);
        all.into_iter().step_by(step).take(n).collect()
    };
    let (user, system) = (spread(user, 64), spread(system, 8));
    if user.is_empty() || system.is_empty() {
        fail("the binary has no functions to start goroutines with");
    }
    (user, system)
}

/// Appends `event` as a ring-buffer record, as the probes send it: an exit is its header alone.
fn push_record(ring: &mut Vec<u8>, event: &GoroutineEvent) {
    let size = if event.header.kind == EventKind::Exited as u32 {
        EventHeader::SIZE
    } else {
        GoroutineEvent::SIZE
    };
    let start = ring.len();
    ring.resize(start + ((HEADER + size + 7) & !7), 0);
    ring[start..start + 4].copy_from_slice(&(size as u32).to_ne_bytes());
    // SAFETY: GoroutineEvent is plain #[repr(C)] integers without padding holes, and an
    // EventHeader is its prefix.
    let bytes = unsafe { std::slice::from_raw_parts(std::ptr::from_ref(event).cast::<u8>(), size) };
    ring[start + HEADER..start + HEADER + size].copy_from_slice(bytes);
}

/// The seed (the live set's creations) and the measured stream, as ring-buffer records.
struct Stream {
    seed: Vec<u8>,
    records: Vec<u8>,
    events: usize,
}

fn stream(live: usize, events: usize, user: &[u64], system: &[u64]) -> Stream {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ live as u64);
    let mut alive: Vec<u64> = Vec::with_capacity(live + 1);
    let (mut goid, mut ktime) = (0u64, 0u64);
    let create = |rng: &mut Rng, alive: &mut Vec<u64>, goid: &mut u64, ktime: u64| {
        *goid += 1;
        alive.push(*goid);
        let startpc = if rng.below(100) < 5 {
            system[rng.below(system.len())]
        } else {
            user[rng.below(user.len())]
        };
        GoroutineEvent {
            header: EventHeader {
                kind: EventKind::Created as u32,
                pid: PID,
                ktime_ns: ktime,
                goid: *goid,
            },
            parent_goid: 1,
            gopc: startpc.wrapping_add(0x40),
            startpc,
        }
    };
    let mut seed = Vec::with_capacity(live * RECORD);
    for _ in 0..live {
        ktime += STEP_NS;
        push_record(&mut seed, &create(&mut rng, &mut alive, &mut goid, ktime));
    }
    let mut records = Vec::with_capacity(events * RECORD);
    for i in 0..events {
        ktime += STEP_NS;
        let event = if i % 2 == 0 || alive.is_empty() {
            create(&mut rng, &mut alive, &mut goid, ktime)
        } else {
            let gone = alive.swap_remove(rng.below(alive.len()));
            GoroutineEvent {
                header: EventHeader {
                    kind: EventKind::Exited as u32,
                    pid: PID,
                    ktime_ns: ktime,
                    goid: gone,
                },
                ..GoroutineEvent::default()
            }
        };
        push_record(&mut records, &event);
    }
    Stream {
        seed,
        records,
        events,
    }
}

/// Drains `ring` as `watcher::Watcher::drain` does: each record's header gives its
/// length, the event is decoded and, if it is the target's, handed on.
fn drain(ring: &[u8], mut handle: impl FnMut(&GoroutineEvent)) {
    let mut at = 0;
    while at + HEADER <= ring.len() {
        let len = u32::from_ne_bytes(ring[at..at + 4].try_into().unwrap_or_default()) as usize;
        let item = &ring[at + HEADER..(at + HEADER + len).min(ring.len())];
        at += (HEADER + len + 7) & !7;
        if let Some(Record::Goroutine(event)) = decode_record(item)
            && event.header.pid == PID
        {
            handle(&event);
        }
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Times `run` ROUNDS times (after a warm-up round), each on fresh state that `prepare`
/// builds (seeded, untimed); the median.
fn time<S>(mut prepare: impl FnMut() -> S, mut run: impl FnMut(&mut S)) -> Duration {
    let mut samples = Vec::new();
    for round in 0..=ROUNDS {
        let mut state = prepare();
        let start = Instant::now();
        run(&mut state);
        let elapsed = start.elapsed();
        black_box(&state);
        drop(state);
        if round > 0 {
            samples.push(elapsed);
        }
    }
    median(samples)
}

fn main() {
    let usage = "usage: ingest BINARY [--live N]... [--events N]: run it through `cargo xtask bench ingest`";
    let args = common::Args::parse(usage, &["--live", "--events"]);
    let positional = &args.positional;
    let mut live_sizes = args.numbers("--live");
    let events = args.number("--events", DEFAULT_EVENTS);
    let Some(file) = positional.first() else {
        eprintln!("{usage}");
        exit(2)
    };
    if live_sizes.is_empty() {
        live_sizes = DEFAULT_LIVE.to_vec();
    }
    let path = Path::new(file);
    let binary = GoBinary::open(path, path).unwrap_or_else(|error| fail(error));
    let (user, system) = start_pcs(&binary);
    let bias = 0;

    for live in live_sizes {
        let s = stream(live, events, &user, &system);
        let seeded = |classify: &dyn Fn(u64) -> GoroutineKind| {
            let mut tracker = GoroutineTracker::default();
            drain(&s.seed, |event| tracker.apply(event, classify));
            tracker
        };

        let decode = time(
            || 0u64,
            |sum| {
                drain(&s.records, |event| {
                    *sum = sum.wrapping_add(
                        event.header.goid ^ u64::from(event.header.kind) ^ event.startpc,
                    );
                });
            },
        );
        let hashmap = time(
            || {
                let mut map = HashMap::new();
                drain(&s.seed, |event| {
                    map.insert(event.header.goid, event.startpc);
                });
                map
            },
            |map| {
                drain(&s.records, |event| {
                    if event.header.kind == EventKind::Created as u32 {
                        map.insert(event.header.goid, event.startpc);
                    } else {
                        map.remove(&event.header.goid);
                    }
                });
            },
        );
        let constant = |_: u64| GoroutineKind::User;
        let tracker = time(
            || seeded(&constant),
            |tracker| drain(&s.records, |event| tracker.apply(event, constant)),
        );
        let real = |startpc: u64| kind_of_start(&binary, bias, startpc);
        let daemon_seeded = || {
            let (mut tracker, mut contexts) =
                (GoroutineTracker::default(), ContextTracker::default());
            drain(&s.seed, |event| {
                tracker.apply(event, real);
                contexts.apply_goroutine(event);
            });
            (tracker, contexts)
        };
        let daemon = time(daemon_seeded, |(tracker, contexts)| {
            drain(&s.records, |event| {
                tracker.apply(event, |startpc| kind_of_start(&binary, bias, startpc));
                contexts.apply_goroutine(event);
            });
        });
        // What the daemon ends with, as a check that the stream is what it says.
        let (mut check, _) = daemon_seeded();
        drain(&s.records, |event| check.apply(event, real));
        let counts = check.counts();
        assert_eq!(
            counts.user + counts.system,
            live as u64,
            "the stream keeps the live set"
        );

        let per_second = |d: Duration| s.events as f64 / d.as_secs_f64();
        let row = |d: Duration| {
            json!({
                "median_ms": d.as_secs_f64() * 1e3,
                "ns_per_event": d.as_secs_f64() * 1e9 / s.events as f64,
                "events_per_second": per_second(d),
                "ratio_to_decode": d.as_secs_f64() / decode.as_secs_f64(),
            })
        };
        println!(
            "{}",
            json!({
                "live": live,
                "events": s.events,
                "rounds": ROUNDS,
                "record_bytes": s.records.len() as f64 / s.events as f64,
                "start_functions": { "user": user.len(), "system": system.len() },
                "functions_in_binary": binary.pclntab.functions().count(),
                "final_counts": { "user": counts.user, "system": counts.system },
                "decode": row(decode),
                "hashmap": row(hashmap),
                "tracker": row(tracker),
                "daemon": row(daemon),
            })
        );
    }
}
