//! The goroutine census of a running Go program, stage by stage, as the daemon runs it every
//! `--census-interval`: `census::take` (the g structs from `runtime.allgs`), symbolization
//! (`groups::symbolize_census`: the stacks of goroutines that ran since the last census read
//! and unwound, their PCs turned into frames), who listens on a context
//! (`listeners::Listeners::update`, as if the target had an unreleased context: every
//! goroutine read again in a receive or a select has its sudogs read), grouping (the
//! runtime's `g.waitsince` bounds, `GroupTracker::runtime_bounds`, and
//! `GroupTracker::update`), channel evidence for stuck groups (`chans::ChannelWatch::update`,
//! the worst case: as if every group in a stuck wait were stuck) and the
//! goroutine profile (`groups::profile_samples` and `pprof::goroutine_profile`). Also timed on
//! their own, outside the total: unwinding every goroutine (`census::unwind` of each), and the
//! same with the stacks read in batches (`census::unwind_many`), whose results must be the same.
//!
//! The Symbolizer and the GroupTracker live across rounds, as in the daemon. Three kinds of
//! round are reported apart: the first (empty caches, like the first census after attaching,
//! every stack read); every `FULL_READ_EVERY`th after it, which reads every stack again with
//! warm caches (the cost of a census where every goroutine ran since the last one); and the
//! others, where only goroutines that ran are read again (in a target whose goroutines are all
//! parked, none). It prints one JSON object. `cargo xtask bench census`
//! starts the `many` fixture, runs this against it and compares with Go's own goroutine dump.
//! Needs root (it reads /proc/PID/mem).
//!
//!     cargo bench -p ctxleak-daemon --no-default-features --bench census -- PID [BINARY]
//!         [--rounds N] [--wait]
//!
//! BINARY defaults to /proc/PID/exe. With --wait it prints "waiting" and reads a line from
//! stdin before the first round, so a caller can start measuring the target just then.

use std::io::BufRead as _;
use std::path::{Path, PathBuf};
use std::process::exit;
use std::time::{Duration, Instant};

use ctxleak_daemon::census;
use ctxleak_daemon::goexe::GoBinary;
use ctxleak_daemon::groups::{self, GroupTracker, SuspectRules, Symbolizer};
use ctxleak_daemon::pprof;
use ctxleak_daemon::procmem::{self, ProcessMemory};
use serde_json::{Value, json};

/// Two full rereads with warm caches after the first round, the rest incremental.
const DEFAULT_ROUNDS: usize = 2 * groups::FULL_READ_EVERY as usize;

mod common;

fn fail(message: impl std::fmt::Display) -> ! {
    common::fail("census", message)
}

struct Args {
    pid: u32,
    binary: PathBuf,
    rounds: usize,
    wait: bool,
}

fn parse_args() -> Args {
    let usage = "usage: census PID [BINARY] [--rounds N] [--wait]: run it through `cargo xtask bench census`";
    let args = common::Args::parse(usage, &["--rounds"]);
    let Some(pid) = args.positional.first().and_then(|pid| pid.parse().ok()) else {
        eprintln!("{usage}");
        exit(2)
    };
    let binary = args
        .positional
        .get(1)
        .map_or_else(|| PathBuf::from(format!("/proc/{pid}/exe")), PathBuf::from);
    Args {
        pid,
        binary,
        rounds: args.number("--rounds", DEFAULT_ROUNDS),
        wait: args.flag("--wait"),
    }
}

/// How long each stage of one round took.
#[derive(Clone, Copy, Default)]
struct Round {
    take: Duration,
    symbolize: Duration,
    listen: Duration,
    group: Duration,
    stuck: Duration,
    profile: Duration,
    unwind: Duration,
    unwind_many: Duration,
}

impl Round {
    fn total(&self) -> Duration {
        self.take + self.symbolize + self.listen + self.group + self.stuck + self.profile
    }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

fn summary(rounds: &[Round], stage: impl Fn(&Round) -> Duration) -> Value {
    let mut samples: Vec<Duration> = rounds.iter().map(stage).collect();
    samples.sort();
    json!({
        "median_ms": ms(samples[samples.len() / 2]),
        "min_ms": ms(samples[0]),
        "max_ms": ms(samples[samples.len() - 1]),
    })
}

fn main() {
    let args = parse_args();
    let pid = args.pid;
    let binary = std::sync::Arc::new(
        GoBinary::open(&args.binary, &args.binary).unwrap_or_else(|error| fail(error)),
    );
    let memory = ProcessMemory::open(pid).unwrap_or_else(|error| {
        fail(format_args!(
            "{error} (run it as root: it reads the target's memory)"
        ))
    });
    let bias = if binary.is_pie {
        let exe = PathBuf::from(format!("/proc/{pid}/exe"));
        let first = binary.first_segment_address().unwrap_or(0);
        procmem::load_bias(pid, Path::new(&exe), first).unwrap_or_else(|error| fail(error))
    } else {
        0
    };
    let allgs = binary.allgs.wrapping_add(bias);
    let mut symbolizer = Symbolizer::new(binary.clone(), bias);
    let mut tracker = GroupTracker::new(SuspectRules::default());
    let mut listeners = ctxleak_daemon::listeners::Listeners::default();
    let mut channels = ctxleak_daemon::chans::ChannelWatch::default();

    if args.wait {
        println!("waiting");
        let mut line = String::new();
        if std::io::stdin().lock().read_line(&mut line).is_err() {
            fail("cannot read stdin");
        }
    }

    // One more round than asked: the first, with cold caches, is reported on its own.
    let mut rounds = Vec::with_capacity(args.rounds + 1);
    let mut last = Value::Null;
    for _ in 0..=args.rounds {
        let start = Instant::now();
        let waits = binary.waits.as_ref().ok().map(|&(waits, _)| waits);
        let taken = census::take(&memory, &binary.g_layout, waits.as_ref(), allgs)
            .unwrap_or_else(|error| fail(format_args!("census of PID {pid} failed: {error}")));
        let took = start.elapsed();

        let start = Instant::now();
        let views = groups::symbolize_census(&taken, &memory, &mut symbolizer);
        let symbolized = start.elapsed();

        // Who listens on a context: the worst case, as if the target had an unreleased context
        // (one done channel nobody waits on), so that every goroutine read again in a receive
        // or a select has its sudogs read.
        let start = Instant::now();
        if let Some(waits) = &waits {
            listeners.update(&memory, waits, &taken.goroutines, &views, || {
                std::collections::HashMap::from([(1, 1)])
            });
        }
        let listen = start.elapsed();

        let mut views = views;
        let start = Instant::now();
        tracker.runtime_bounds(procmem::monotonic_ns(), &mut views);
        let grouped = tracker.update(Instant::now(), &views);
        let group = start.elapsed();

        // Channel evidence, the worst case: every group in a stuck wait taken as stuck.
        let start = Instant::now();
        if let (Some(waits), Ok((chans, _))) = (&waits, &binary.chans) {
            let mut stuck = grouped.clone();
            for group in &mut stuck {
                if groups::STUCK_WAITS.contains(&group.wait_reason.as_str()) {
                    group.stuck = group.count;
                }
            }
            channels.update(
                &memory,
                (waits, chans),
                (Instant::now(), Duration::ZERO),
                &mut stuck,
                &taken.goroutines,
                |group| tracker.members_of(group),
            );
            std::hint::black_box(stuck);
        }
        let stuck = start.elapsed();

        let start = Instant::now();
        let profile = pprof::goroutine_profile(&groups::profile_samples(&views), 0, None);
        let profiled = start.elapsed();

        let start = Instant::now();
        let one_by_one: Vec<Vec<u64>> = taken
            .goroutines
            .iter()
            .map(|record| census::unwind(&memory, record, None))
            .collect();
        let unwind = start.elapsed();

        let start = Instant::now();
        let requests: Vec<_> = taken.goroutines.iter().map(|r| (r, None)).collect();
        let batched = census::unwind_many(&memory, &requests);
        let unwind_many = start.elapsed();
        // The target is parked: the same stacks, read either way.
        let differ = one_by_one
            .iter()
            .zip(batched.iter())
            .filter(|(a, b)| a.as_slice() != *b)
            .count();
        let pcs: usize = one_by_one.iter().map(Vec::len).sum();

        rounds.push(Round {
            take: took,
            symbolize: symbolized,
            listen,
            group,
            stuck,
            profile: profiled,
            unwind,
            unwind_many,
        });
        let user = views.iter().filter(|view| !view.system).count();
        last = json!({
            "goroutines": taken.goroutines.len(),
            "user": user,
            "system": views.len() - user,
            "unreadable": taken.unreadable,
            "frames": views.iter().map(|view| view.stack.len()).sum::<usize>(),
            "return_addresses": pcs,
            "unwind_many_differs": differ,
            "empty_stacks": views.iter().filter(|view| view.stack.is_empty()).count(),
            "groups": grouped.len(),
            "profile_bytes": profile.len(),
        });
        std::hint::black_box((views, grouped, profile));
    }

    let (first, rest) = rounds.split_first().expect("at least one round");
    // Round i of `rest` is census i + 1: every FULL_READ_EVERYth reads every stack again.
    let is_full = |i: usize| (i + 1).is_multiple_of(groups::FULL_READ_EVERY as usize);
    let pick = |full: bool| -> Vec<Round> {
        rest.iter()
            .enumerate()
            .filter(|&(i, _)| is_full(i) == full)
            .map(|(_, round)| *round)
            .collect()
    };
    let (full, incremental) = (pick(true), pick(false));
    let stages = |rounds: &[Round]| {
        if rounds.is_empty() {
            return Value::Null;
        }
        json!({
            "rounds": rounds.len(),
            "take": summary(rounds, |r| r.take),
            "symbolize": summary(rounds, |r| r.symbolize),
            "listen": summary(rounds, |r| r.listen),
            "group": summary(rounds, |r| r.group),
            "stuck": summary(rounds, |r| r.stuck),
            "profile": summary(rounds, |r| r.profile),
            "total": summary(rounds, Round::total),
            "unwind_only": summary(rounds, |r| r.unwind),
            "unwind_many": summary(rounds, |r| r.unwind_many),
        })
    };
    let result = json!({
        "pid": pid,
        "binary": args.binary.display().to_string(),
        "go": binary.version.raw,
        "rounds": rest.len(),
        "census": last,
        "first": stages(std::slice::from_ref(first)),
        "stages": stages(&incremental),
        "full_reread": stages(&full),
    });
    println!("{result}");
}
