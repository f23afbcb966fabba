//! From a census to what an on-call engineer asks: which line is leaking goroutines, how
//! many, since when, how fast.
//!
//! Each goroutine is symbolized (its stack from `g.sched`, its creation site from `g.gopc`),
//! user goroutines are grouped by (state and wait reason, the `go` statement that created
//! them, where they are blocked), and each group's count is followed over a short and a long
//! window. A group is a leak suspect when goroutines keep piling up at one line, the signal
//! LeakProf used in production, judged so that healthy services do not page
//! ([`SuspectRules`]): its members are blocked (waiting) at a line of the program, its low
//! point rose in every quarter of a window (still growing, not grown once since attach), by
//! enough to matter, and its oldest member has been blocked there longer than a threshold.
//!
//! A leak that does not grow (two goroutines each waiting for the other's lock, a send nobody
//! will receive) gets its own verdict: goroutines **stuck** in a wait that does not end by
//! itself in a healthy program ([`STUCK_WAITS`]) without running once for longer than
//! [`SuspectRules::stuck_after`]. Only goroutines in those waits are followed one by one.
//! Since when one has not run is the earliest of ctxleak's own first sighting, the runtime's
//! record (`g.waitsince`, [`GroupTracker::runtime_bounds`]: a deadlock hours old is stuck at
//! the first census) and, with park timing, its exact park time.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::api::{Group, SourceLocation, StuckSince};
use crate::census::{self, Census, GoroutineRecord};
use crate::goexe::GoBinary;
use crate::goexe::symbolize::{self, Frame};
use crate::procmem::ProcessMemory;
use crate::tracker::{GoroutineKind, kind_of_function};

/// One frame of a goroutine's stack. Names are shared (`Arc<str>`): a census of 100 000
/// goroutines holds a million frames, but only as many distinct names as the program has.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
pub struct StackFrame {
    pub function: Arc<str>,
    pub file: Arc<str>,
    pub line: u32,
    /// Inlined into the next frame.
    pub inlined: bool,
    /// A compiler-generated wrapper (such as `main.main.gowrap1`), which Go's own tracebacks
    /// and profiles leave out.
    pub wrapper: bool,
    /// The return address (link-time) of the physical frame this frame belongs to; inlined
    /// frames share it with the frame they are inlined into.
    pub pc: u64,
}

/// One goroutine, symbolized.
#[derive(Clone, Debug, Serialize)]
pub struct GoroutineView {
    pub goid: u64,
    pub parent_goid: u64,
    pub system: bool,
    pub state: &'static str,
    /// The runtime's wait reason string; empty unless waiting.
    pub wait_reason: Arc<str>,
    pub created_by: Option<Arc<SourceLocation>>,
    pub start_function: Option<Arc<str>>,
    /// Innermost first. Empty for a running goroutine (its saved context is stale). Shared by
    /// the goroutines with the same stack.
    pub stack: Arc<[StackFrame]>,
    /// Exactly how long it has been parked, when park timing (a `gopark` probe) is on.
    pub parked_for_s: Option<f64>,
    /// It has not run since the previous census: the same state, saved PC and `trackingSeq`
    /// (which counts its stops) as then. False at the first census that sees it.
    #[serde(skip)]
    pub still: bool,
    /// Its stack was read at this census (it ran or moved since the last one, or every stack
    /// was read): what else depends on where it waits is read again too (`listeners`).
    #[serde(skip)]
    pub stack_read: bool,
    /// Where the unreleased context it listens on (waits on its `Done()` channel) was created
    /// (`listeners`).
    #[serde(skip)]
    pub listens_on: Option<Arc<SourceLocation>>,
    /// `g.waitsince` as the census read it (0: none).
    #[serde(skip)]
    pub waitsince: u64,
    /// How long, at least, the runtime's own record says it has not run, blocked where it is
    /// ([`GroupTracker::runtime_bounds`]): earlier than ctxleak's first sighting when it was
    /// blocked before ctxleak attached.
    #[serde(skip)]
    pub runtime_blocked_for_s: Option<f64>,
}

/// GET /api/goroutines: every live goroutine of the last census.
#[derive(Debug, Serialize)]
pub struct GoroutinesResponse {
    pub pid: u32,
    pub taken_at_unix_ms: u64,
    pub goroutines: GoroutineList,
}

/// The goroutines of a census, kept between censuses for `/api/goroutines` in 24 bytes each:
/// what their views share (stacks; creation sites, start functions, states and wait reasons)
/// is kept once and referred to by index. Serializes as the list of [`GoroutineView`]s it
/// was made from.
#[derive(Debug, Default)]
pub struct GoroutineList {
    entries: Vec<ListEntry>,
    stacks: Vec<Arc<[StackFrame]>>,
    kinds: Vec<ListKind>,
    /// Each entry's `parked_for_s`; empty when no goroutine has one (park timing off).
    parked_for_s: Vec<Option<f64>>,
}

/// What goroutines of [`GoroutineList`] share besides their stack: `created_by`,
/// `start_function`, `system`, `state` and `wait_reason`.
type ListKind = (
    Option<Arc<SourceLocation>>,
    Option<Arc<str>>,
    bool,
    &'static str,
    Arc<str>,
);

#[derive(Debug)]
struct ListEntry {
    goid: u64,
    parent_goid: u64,
    stack: u32,
    kind: u32,
}

impl GoroutineList {
    pub fn new(views: Vec<GoroutineView>) -> Self {
        /// The index of the value `key` names in `list`, added if new.
        fn index<K: Eq + std::hash::Hash, T>(
            indices: &mut FastMap<K, u32>,
            list: &mut Vec<T>,
            key: K,
            value: impl FnOnce() -> T,
        ) -> u32 {
            *indices.entry(key).or_insert_with(|| {
                list.push(value());
                u32::try_from(list.len() - 1).unwrap_or(u32::MAX)
            })
        }
        let mut list = Self::default();
        let (mut stacks, mut kinds) = (FastMap::default(), FastMap::default());
        if views.iter().any(|view| view.parked_for_s.is_some()) {
            list.parked_for_s = views.iter().map(|view| view.parked_for_s).collect();
        }
        list.entries = Vec::with_capacity(views.len());
        for view in views {
            // The shared parts by the addresses of their copies, alive while `view` is.
            let kind_key = (
                view.created_by
                    .as_ref()
                    .map_or(0, |s| Arc::as_ptr(s) as usize),
                view.start_function
                    .as_ref()
                    .map_or(0, |s| s.as_ptr() as usize),
                view.system,
                view.state.as_ptr() as usize,
                view.wait_reason.as_ptr() as usize,
            );
            list.entries.push(ListEntry {
                goid: view.goid,
                parent_goid: view.parent_goid,
                stack: index(
                    &mut stacks,
                    &mut list.stacks,
                    view.stack.as_ptr() as usize,
                    || view.stack.clone(),
                ),
                kind: index(&mut kinds, &mut list.kinds, kind_key, || {
                    (
                        view.created_by,
                        view.start_function,
                        view.system,
                        view.state,
                        view.wait_reason,
                    )
                }),
            });
        }
        list
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The view of the `index`th goroutine, as it was given (but `still`, which is not
    /// served).
    pub fn get(&self, index: usize) -> Option<GoroutineView> {
        let entry = self.entries.get(index)?;
        let (created_by, start_function, system, state, wait_reason) =
            self.kinds.get(entry.kind as usize)?.clone();
        Some(GoroutineView {
            goid: entry.goid,
            parent_goid: entry.parent_goid,
            system,
            state,
            wait_reason,
            created_by,
            start_function,
            stack: self.stacks.get(entry.stack as usize)?.clone(),
            parked_for_s: self.parked_for_s.get(index).copied().flatten(),
            // Not served, so not kept.
            still: false,
            stack_read: false,
            listens_on: None,
            waitsince: 0,
            runtime_blocked_for_s: None,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = GoroutineView> + '_ {
        (0..self.len()).filter_map(|index| self.get(index))
    }
}

impl Serialize for GoroutineList {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.iter())
    }
}

/// Turns PCs into frames. Everything is cached by PC for the life of the attach (goroutines
/// blocked at one line share their PCs, and a program has a bounded number of PCs).
pub struct Symbolizer {
    binary: Arc<GoBinary>,
    bias: u64,
    /// Runtime return address -> the frames of that call, innermost first.
    frames: FastMap<u64, Arc<[StackFrame]>>,
    /// `g.gopc` -> the `go` statement.
    sites: FastMap<u64, Option<Arc<SourceLocation>>>,
    /// `g.startpc` -> (function name, whether a runtime system goroutine).
    starts: FastMap<u64, (Option<Arc<str>>, bool)>,
    wait_reasons: Vec<Arc<str>>,
    empty: Arc<str>,
    /// Whole stacks by their return addresses -> their index in `stack_list`: the goroutines
    /// blocked at one place share one.
    stacks: FastMap<Box<[u64]>, u32>,
    stack_list: Vec<Arc<[StackFrame]>>,
    /// By g (its `allgs` slot): what its goroutine's stack was read from at the last census,
    /// and the stack. A vector, not a map by goid: 16 bytes per goroutine, which matters at a
    /// million of them.
    read_stacks: Vec<ReadStack>,
    /// Censuses symbolized so far; every `FULL_READ_EVERY`th reads every stack again.
    censuses: u64,
}

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

#[derive(Clone, Copy)]
struct ReadStack {
    /// [`StackOrigin::fingerprint`] of the goroutine then.
    origin: u64,
    /// [`StackOrigin::ran`] of the goroutine then.
    ran: u32,
    /// Index in `Symbolizer::stack_list`; [`ReadStack::NONE`]'s for a slot without one.
    stack: u32,
}

impl ReadStack {
    const NONE: Self = Self {
        origin: 0,
        ran: 0,
        stack: u32::MAX,
    };
}

/// Every this many censuses, every stack is read again, whatever `StackOrigin` says (a
/// goroutine that ran exactly a multiple of 256 times and parked again at the very same stack
/// pointer would otherwise keep a stale stack): once a minute at the default 5 s interval.
pub const FULL_READ_EVERY: u64 = 12;

/// The fields of a g that a stack read starts from. While all of them stay the same the
/// goroutine has not run (`trackingSeq` counts, mod 256, every time it stops running) and its
/// stack has not moved, so its stack is what it was: it is not read again.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
struct StackOrigin {
    status: u32,
    tracking_seq: u8,
    sched_pc: u64,
    sched_sp: u64,
    sched_bp: u64,
    stack_hi: u64,
}

impl StackOrigin {
    fn of(record: &GoroutineRecord) -> Self {
        Self {
            status: record.status,
            tracking_seq: record.tracking_seq,
            sched_pc: record.sched_pc,
            sched_sp: record.sched_sp,
            sched_bp: record.sched_bp,
            stack_hi: record.stack_hi,
        }
    }

    /// The goroutine's goid and origin in 64 bits (a fixed hash: two different ones agree
    /// with a chance of 2^-64), which is all a census keeps of them.
    fn fingerprint(record: &GoroutineRecord) -> u64 {
        fixed_hash((record.goid, Self::of(record)))
    }

    /// The goroutine's goid, state (the GC's scan bit aside), saved PC and stop count in 32
    /// bits: while they stay the same, it has not run. Its stack may have moved (the GC
    /// shrinks the stacks of parked goroutines) without it running. Compared only when
    /// [`StackOrigin::fingerprint`] changed; a goroutine that ran passes for one that did not
    /// with a chance of 2^-32 per census, which then carries its "not run since" over that
    /// one run (4 bytes a goroutine less: a 16-byte slot record).
    fn ran(record: &GoroutineRecord) -> u32 {
        let hash = fixed_hash((
            record.goid,
            record.status & !census::G_SCAN,
            record.tracking_seq,
            record.sched_pc,
        ));
        (hash ^ hash >> 32) as u32
    }
}

/// A hash that is the same in every run (foldhash's quality hasher, fixed seed).
fn fixed_hash(value: impl std::hash::Hash) -> u64 {
    use std::hash::BuildHasher as _;
    foldhash::quality::FixedState::with_seed(0x6374_786c_6561_6b21).hash_one(value)
}

impl Symbolizer {
    pub fn new(binary: Arc<GoBinary>, bias: u64) -> Self {
        Self {
            wait_reasons: binary
                .wait_reasons
                .iter()
                .map(|reason| Arc::from(reason.as_str()))
                .collect(),
            binary,
            bias,
            frames: FastMap::default(),
            sites: FastMap::default(),
            starts: FastMap::default(),
            empty: Arc::from(""),
            stacks: FastMap::default(),
            stack_list: Vec::new(),
            read_stacks: Vec::new(),
            censuses: 0,
        }
    }

    /// Frames of the call that returns to `pc` (a runtime address), innermost first: the
    /// runtime's rule for every frame of a saved context and for `g.gopc`.
    fn frames(&mut self, pc: u64) -> Arc<[StackFrame]> {
        let (binary, bias) = (&*self.binary, self.bias);
        self.frames
            .entry(pc)
            .or_insert_with(|| {
                let link_pc = pc.wrapping_sub(bias);
                let wrapper = binary.pclntab.wrapper_func_id();
                symbolize::symbolize_return_address(&binary.pclntab, link_pc)
                    .unwrap_or_default()
                    .into_iter()
                    .map(|frame: Frame| StackFrame {
                        function: Arc::from(frame.function),
                        file: Arc::from(frame.file),
                        line: frame.line,
                        inlined: frame.inlined,
                        wrapper: Some(frame.func_id) == wrapper,
                        pc: link_pc,
                    })
                    .collect()
            })
            .clone()
    }

    /// Where a context was made: the first frame of its creation stack (return addresses,
    /// innermost first) outside package `context` and its wrappers, i.e. the user's line.
    pub fn context_site(&mut self, stack: &[u64]) -> Option<Arc<SourceLocation>> {
        for &pc in stack.iter().take_while(|&&pc| pc != 0) {
            let frames = self.frames(pc);
            if let Some(frame) = frames
                .iter()
                .find(|frame| !frame.wrapper && !frame.function.starts_with("context."))
            {
                return Some(Arc::new(SourceLocation {
                    function: frame.function.to_string(),
                    file: frame.file.to_string(),
                    line: frame.line,
                }));
            }
        }
        None
    }

    /// The innermost frame's pointer from the function table: at `sched.pc` the frame is
    /// `sp_delta` bytes deep (see [`frame_record`]).
    fn first_frame_pointer(&self, record: &GoroutineRecord) -> Option<u64> {
        let link_pc = record.sched_pc.wrapping_sub(self.bias);
        self.binary
            .pclntab
            .function_at(link_pc)
            .and_then(|function| function.sp_delta(link_pc))
            .and_then(|delta| u64::try_from(delta).ok())
            .and_then(|delta| frame_record(record.sched_sp, delta))
    }

    /// The stack with these return addresses, innermost first, by its index in `stack_list`:
    /// one shared copy per distinct stack.
    fn stack(&mut self, pcs: &[u64]) -> u32 {
        if let Some(&stack) = self.stacks.get(pcs) {
            return stack;
        }
        let mut frames = Vec::with_capacity(pcs.len() + pcs.len() / 2);
        for &pc in pcs {
            frames.extend_from_slice(&self.frames(pc));
        }
        self.stack_list.push(frames.into());
        let stack = u32::try_from(self.stack_list.len() - 1).unwrap_or(u32::MAX);
        self.stacks.insert(pcs.into(), stack);
        stack
    }

    fn view(&mut self, record: &GoroutineRecord, stack: Arc<[StackFrame]>) -> GoroutineView {
        let created_by = match self.sites.get(&record.gopc) {
            Some(site) => site.clone(),
            None => {
                let site = self.frames(record.gopc).first().map(|frame| {
                    Arc::new(SourceLocation {
                        function: frame.function.to_string(),
                        file: frame.file.to_string(),
                        line: frame.line,
                    })
                });
                self.sites.insert(record.gopc, site.clone());
                site
            }
        };
        let (binary, bias) = (&*self.binary, self.bias);
        let (start_function, system) = self
            .starts
            .entry(record.startpc)
            .or_insert_with(|| {
                let name = binary.function_name_at(record.startpc.wrapping_sub(bias));
                let system = kind_of_function(name.as_deref()) == GoroutineKind::System;
                (name.map(|name| Arc::from(name.as_ref())), system)
            })
            .clone();
        let waiting = record.status & !census::G_SCAN == census::STATUS_WAITING;
        let wait_reason = match self.wait_reasons.get(usize::from(record.waitreason)) {
            Some(reason) if waiting => reason.clone(),
            _ => self.empty.clone(),
        };
        GoroutineView {
            goid: record.goid,
            parent_goid: record.parent_goid,
            system,
            state: census::status_name(record.status),
            wait_reason,
            created_by,
            start_function,
            stack,
            parked_for_s: None,
            still: false,
            stack_read: false,
            listens_on: None,
            waitsince: record.waitsince,
            runtime_blocked_for_s: None,
        }
    }
}

/// Symbolizes every goroutine of `census`. Stacks are read from `memory` in batches, and only
/// for goroutines that ran or moved since the last census (`StackOrigin`); the others keep the
/// stack read then. Every `FULL_READ_EVERY`th census reads them all.
pub fn symbolize_census(
    census: &Census,
    memory: &ProcessMemory,
    symbolizer: &mut Symbolizer,
) -> Vec<GoroutineView> {
    let full = symbolizer.censuses.is_multiple_of(FULL_READ_EVERY);
    symbolizer.censuses += 1;
    let slots = census
        .goroutines
        .iter()
        .map(|record| record.slot as usize + 1)
        .max()
        .unwrap_or(0);
    // Distinct stacks are at most as many as goroutines: past that, the table holds stacks
    // nobody has any more. Dropped, it refills from the frames cache, and every stack is read.
    if symbolizer.stack_list.len() > 2 * census.goroutines.len() + 1024 {
        symbolizer.stacks.clear();
        symbolizer.stack_list.clear();
        symbolizer.read_stacks.clear();
    }
    if symbolizer.read_stacks.len() < slots {
        symbolizer.read_stacks.resize(slots, ReadStack::NONE);
    }
    let mut to_read: Vec<(&GoroutineRecord, Option<u64>)> = Vec::new();
    // Each goroutine's stack when it is kept, and whether it has not run since the last
    // census.
    let mut kept: Vec<(Option<Arc<[StackFrame]>>, bool)> =
        Vec::with_capacity(census.goroutines.len());
    for record in &census.goroutines {
        let (origin, ran) = (StackOrigin::fingerprint(record), StackOrigin::ran(record));
        let read = symbolizer.read_stacks[record.slot as usize];
        match symbolizer.stack_list.get(read.stack as usize) {
            Some(stack) if !full && read.origin == origin => kept.push((Some(stack.clone()), true)),
            _ => {
                kept.push((None, read.stack != ReadStack::NONE.stack && read.ran == ran));
                to_read.push((record, symbolizer.first_frame_pointer(record)));
            }
        }
    }
    let read = census::unwind_many(memory, &to_read);
    let mut read = read.iter();
    // Slots without a live goroutine in this census forget theirs.
    let mut next_slot = 0;
    let views = census
        .goroutines
        .iter()
        .zip(kept)
        .map(|(record, (kept, still))| {
            let slot = record.slot as usize;
            let stack_read = kept.is_none();
            symbolizer.read_stacks[next_slot.min(slot)..slot].fill(ReadStack::NONE);
            next_slot = slot + 1;
            let stack = match kept {
                Some(stack) => stack,
                None => {
                    let stack = symbolizer.stack(read.next().unwrap_or_default());
                    symbolizer.read_stacks[slot] = ReadStack {
                        origin: StackOrigin::fingerprint(record),
                        ran: StackOrigin::ran(record),
                        stack,
                    };
                    symbolizer
                        .stack_list
                        .get(stack as usize)
                        .cloned()
                        .unwrap_or_default()
                }
            };
            GoroutineView {
                still,
                stack_read,
                ..symbolizer.view(record, stack)
            }
        })
        .collect();
    symbolizer.read_stacks.truncate(next_slot);
    views
}

/// User goroutines grouped by identical stack, as Go's goroutine profile has them (wrapper
/// frames left out, as `runtime.CallersFrames` does). Running goroutines, whose stacks
/// ctxleak cannot see, are one sample with an empty stack.
pub fn profile_samples(goroutines: &[GoroutineView]) -> Vec<crate::pprof::ProfileSample> {
    use crate::pprof::{ProfileFrame, ProfileSample};
    // Goroutines with one stack share one copy: count those first, by address (all alive
    // while `goroutines` is borrowed), then merge equal stacks of different copies.
    let mut by_copy: FastMap<*const StackFrame, (&[StackFrame], i64)> = FastMap::default();
    for goroutine in goroutines.iter().filter(|g| !g.system) {
        by_copy
            .entry(goroutine.stack.as_ptr())
            .or_insert((&goroutine.stack, 0))
            .1 += 1;
    }
    let mut samples: HashMap<Vec<&StackFrame>, i64> = HashMap::new();
    for (stack, count) in by_copy.into_values() {
        let stack = stack.iter().filter(|frame| !frame.wrapper).collect();
        *samples.entry(stack).or_insert(0) += count;
    }
    let frame = |frame: &&StackFrame| ProfileFrame {
        function: frame.function.to_string(),
        file: frame.file.to_string(),
        line: i64::from(frame.line),
        address: frame.pc,
        inlined: frame.inlined,
    };
    let mut samples: Vec<ProfileSample> = samples
        .into_iter()
        .map(|(stack, count)| ProfileSample {
            count,
            stack: stack.iter().map(frame).collect(),
            labels: Vec::new(),
        })
        .collect();
    samples.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.stack.len().cmp(&b.stack.len()))
    });
    samples
}

/// Where a goroutine is blocked: its first frame outside the runtime's own packages and the
/// `sync` primitives and raw system calls (for `mu.Lock()` that is the caller's line, not
/// `sync.(*Mutex).Lock`),
/// skipping compiler wrappers.
pub fn blocked_at(stack: &[StackFrame]) -> Option<&StackFrame> {
    const INTERNAL: &[&str] = &[
        "runtime.",
        "internal/",
        "sync.",
        "sync/atomic.",
        "syscall.",
        "time.Sleep",
    ];
    stack.iter().find(|frame| {
        !frame.wrapper
            && !INTERNAL
                .iter()
                .any(|prefix| frame.function.starts_with(prefix))
    })
}

pub fn source_location(frame: &StackFrame) -> SourceLocation {
    SourceLocation {
        function: frame.function.to_string(),
        file: frame.file.to_string(),
        line: frame.line,
    }
}

/// When a group is a leak suspect (flags of `ctxleak attach`). All of these must hold:
///
/// - **Blocked.** Its members are waiting (parked), not runnable, running or in a system
///   call: a goroutine that runs is making progress. Go 1.26+'s `leaked` state counts as
///   blocked.
/// - **At a line of the program.** Its stack was unwound to a frame outside the runtime
///   (`blocked_at` is known): a group whose stack could not be read says nothing about where
///   a leak would be. The main goroutine (started at `runtime.main`) is never a suspect.
/// - **Still growing.** Over the short window, or over the long one (each as far back as
///   ctxleak has watched), the group's low point rose in every quarter: each quarter's
///   smallest count is above the quarter's before. Leaked goroutines never leave, so a leak's
///   floor climbs steadily; a pool that filled up and then stayed flat stops at its first
///   flat quarter, and connections that come and go with load pull the floor back down.
/// - **By enough to matter.** The floor rose, from the first quarter to the last, by at least
///   `min_growth` goroutines and by at least `min_growth_percent` of the first quarter's
///   floor (a group of 1 000 idle connections that gains 10 is noise). A group stays a
///   suspect while it keeps growing by `min_growth`, however large it has become.
/// - **For long enough.** Its oldest member has been blocked there at least `min_age`.
///
/// A group's members are **stuck**, a separate verdict, when they are blocked at a line of the
/// program (as above, the main goroutine aside) in one of the [`STUCK_WAITS`], and have not run
/// once for at least `stuck_after`: at every census since, the same group (creation site, line,
/// wait reason), state, saved PC and stop count (`g.trackingSeq`), or, with park times, parked
/// that long.
#[derive(Clone, Copy, Debug)]
pub struct SuspectRules {
    pub window_short: Duration,
    pub window_long: Duration,
    /// The oldest member must have been blocked in the group at least this long.
    pub min_age: Duration,
    /// The floor must rise by at least this many goroutines over the window...
    pub min_growth: u64,
    /// ...and by at least this share (percent) of its value in the window's first quarter,
    /// to become a suspect.
    pub min_growth_percent: f64,
    /// A goroutine in one of the [`STUCK_WAITS`] that has not run for this long is stuck.
    pub stuck_after: Duration,
}

impl Default for SuspectRules {
    fn default() -> Self {
        Self {
            window_short: Duration::from_secs(60),
            window_long: Duration::from_secs(600),
            min_age: Duration::from_secs(30),
            min_growth: 5,
            min_growth_percent: 10.0,
            stuck_after: Duration::from_secs(180),
        }
    }
}

/// The runtime's wait reasons (`runtime.waitReasonStrings`, Go 1.21–1.27) of waits that do
/// not end by themselves in a healthy program, so that a goroutine that stays in one without
/// running is stuck: locks (`sync.Mutex`, `sync.RWMutex`; the runtime's semaphores, which are
/// `WaitGroup.Wait` before Go 1.24), `WaitGroup.Wait`, `Cond.Wait`, a channel send, and waits
/// that can never end (a nil channel, an empty `select`). Idle waits for work are not among
/// them: a receive or a `select` (a worker waiting on its channel), IO, sleeps, timers, and
/// the runtime's own (GC, finalizers).
pub const STUCK_WAITS: &[&str] = &[
    "sync.Mutex.Lock",
    "sync.RWMutex.RLock",
    "sync.RWMutex.Lock",
    "sync.WaitGroup.Wait",
    "sync.Cond.Wait",
    "semacquire",
    "chan send",
    "chan send (nil chan)",
    "chan receive (nil chan)",
    "select (no cases)",
];

/// Checks a `--suspect-min-growth-percent` value (flag or config key): a finite number, at
/// least 0.
pub fn check_growth_percent(percent: f64) -> Result<f64, String> {
    if percent.is_finite() && percent >= 0.0 {
        Ok(percent)
    } else {
        Err(format!(
            "{percent} is not a percentage of the group's size: give a number such as 10 (0 to turn the relative threshold off)"
        ))
    }
}

/// Whether a group's members can be leak suspects at all (see [`SuspectRules`]): blocked at
/// a known line of the program, and not the main goroutine.
fn may_be_suspect(goroutine: &GoroutineView, blocked: Option<&StackFrame>) -> bool {
    matches!(goroutine.state, "waiting" | "leaked")
        && blocked.is_some()
        && goroutine.start_function.as_deref() != Some("runtime.main")
}

/// A user goroutine of the last census, as [`GroupTracker`] follows it.
struct Member {
    goid: u64,
    group: u64,
    /// First seen in that group, in nanoseconds after the first census (before it when
    /// negative): 8 bytes where an `Instant` takes 16.
    since_ns: i64,
    /// Since when it has not run, in one of the [`STUCK_WAITS`] in that group, the same way;
    /// [`Member::NOT_STILL`] when it is not in one.
    still_ns: i64,
}

impl Member {
    const NOT_STILL: i64 = i64::MIN;

    /// The time `offset` (nanoseconds after `first`) stands for.
    fn at(offset: i64, first: Instant) -> Instant {
        let distance = Duration::from_nanos(offset.unsigned_abs());
        if offset >= 0 {
            first + distance
        } else {
            first.checked_sub(distance).unwrap_or(first)
        }
    }

    /// `time` as nanoseconds after `first`.
    fn offset(time: Instant, first: Instant) -> i64 {
        let ns = |d: Duration| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX);
        match time.checked_duration_since(first) {
            Some(after) => ns(after),
            None => -ns(first.duration_since(time)),
        }
    }
}

/// Follows groups across censuses: per-goroutine time in its group, per-group count history,
/// and since when each goroutine in one of the [`STUCK_WAITS`] has not run.
pub struct GroupTracker {
    rules: SuspectRules,
    first_census: Option<Instant>,
    /// The user goroutines of the last census, in its order, each with its group, since when
    /// it is in it and since when it has not run: a vector (32 bytes a goroutine; a map by
    /// goid and one for the goroutines in stuck waits held 86 and 48 at a million), looked up
    /// by position first, as censuses list goroutines in `allgs` order.
    members: Vec<Member>,
    /// Censuses grouped so far.
    censuses: u64,
    /// group id -> (time, count), oldest first, reaching back one sample past the long window.
    history: HashMap<u64, VecDeque<(Instant, u64)>>,
    /// The groups that were suspects at the last census: the relative threshold does not
    /// apply to them (a leak stays one however large it has grown).
    suspects: HashSet<u64, foldhash::fast::RandomState>,
    /// GC cycle start times (`nanotime()`) seen in `g.waitsince`s, the newest
    /// [`MAX_GC_STARTS`]: the bounds of [`GroupTracker::runtime_bounds`].
    gc_starts: BTreeSet<u64>,
}

/// GC cycle starts kept: at a cycle a second, more than an hour of them.
const MAX_GC_STARTS: usize = 4096;

impl GroupTracker {
    pub fn new(rules: SuspectRules) -> Self {
        Self {
            rules,
            first_census: None,
            members: Vec::new(),
            censuses: 0,
            history: HashMap::new(),
            suspects: HashSet::default(),
            gc_starts: BTreeSet::new(),
        }
    }

    /// The goids of the last census's members of the group with this id (`Group::id`, in
    /// hex).
    pub fn members_of(&self, group: u64) -> Vec<u64> {
        self.members
            .iter()
            .filter(|member| member.group == group)
            .map(|member| member.goid)
            .collect()
    }

    /// The rules it judges by.
    pub fn rules(&self) -> &SuspectRules {
        &self.rules
    }

    /// Sets each waiting goroutine's `runtime_blocked_for_s` from the `g.waitsince`s of a
    /// census taken at `now_ns` (CLOCK_MONOTONIC, the clock of the runtime's `nanotime`).
    ///
    /// What the runtime does (the same in Go 1.21-1.27, `runtime/mgcmark.go`, `proc.go`): a
    /// GC's stack scan (`markroot`) of a goroutine that is waiting or in a system call, with
    /// `waitsince` 0, sets it to `work.tstart`; `execute` (each time it is scheduled) and
    /// `exitsyscall` set it back to 0. `work.tstart` is set by `gcMark`, at the start of a
    /// cycle's mark termination, after that cycle's stack scans: a scan writes the start of
    /// the *previous* cycle's mark termination (0 before the first cycle has ended, so a
    /// program's first GC records nothing). So `waitsince` W means: a scan in the cycle after
    /// the one that started at W saw it blocked, and it has not been scheduled since; that
    /// scan came before the next cycle's start, the first GC start after W. W itself can be
    /// up to a GC interval before it blocked (the traceback's "N minutes" counts from W), so
    /// the bound used is that next start, when some goroutine's `waitsince` shows it (an
    /// idle goroutine parked between the two cycles does); without one, no runtime bound.
    /// (A goroutine scanned while in a runtime wait it leaves without being scheduled, a GC
    /// assist, keeps W until it is next scheduled, at most a preemption slice later.)
    pub fn runtime_bounds(&mut self, now_ns: u64, goroutines: &mut [GoroutineView]) {
        let mut last = 0;
        for goroutine in goroutines.iter() {
            let since = goroutine.waitsince;
            if since != last && since != 0 && since < now_ns {
                self.gc_starts.insert(since);
                last = since;
            }
        }
        while self.gc_starts.len() > MAX_GC_STARTS {
            self.gc_starts.pop_first();
        }
        for goroutine in goroutines.iter_mut() {
            goroutine.runtime_blocked_for_s = None;
            if goroutine.waitsince == 0
                || goroutine.state != "waiting"
                || !STUCK_WAITS.contains(&&*goroutine.wait_reason)
            {
                continue;
            }
            goroutine.runtime_blocked_for_s = self
                .gc_starts
                .range(goroutine.waitsince.saturating_add(1)..)
                .next()
                .map(|&next| now_ns.saturating_sub(next) as f64 / 1e9);
        }
    }

    /// Groups the user goroutines of a census taken at `now`; suspects first by rank, then
    /// groups with stuck members, then by growth and count.
    pub fn update(&mut self, now: Instant, goroutines: &[GoroutineView]) -> Vec<Group> {
        let first = *self.first_census.get_or_insert(now);
        // Each group, and whether its members may be suspects at all.
        let mut groups: FastMap<u64, (Group, bool)> = FastMap::default();
        // The members of this census replace the last one's.
        self.censuses += 1;
        let previous = std::mem::take(&mut self.members);
        let mut members = Vec::with_capacity(previous.len());
        // goid -> index in `previous`, made the first time a goroutine is not where it was.
        let mut by_goid: Option<FastMap<u64, usize>> = None;
        // Goroutines blocked at one place share their stack, creation site and wait reason
        // (one copy each): their group is worked out once per distinct combination, found by
        // the copies' addresses, which stay unique while `goroutines` is borrowed.
        let mut keys: FastMap<[usize; 4], (u64, Option<&StackFrame>, bool)> = FastMap::default();
        for goroutine in goroutines.iter().filter(|g| !g.system) {
            let copies = [
                goroutine.stack.as_ptr() as usize,
                goroutine
                    .created_by
                    .as_ref()
                    .map_or(0, |site| Arc::as_ptr(site) as usize),
                goroutine.state.as_ptr() as usize,
                goroutine.wait_reason.as_ptr() as usize,
            ];
            let (id, blocked, stuck_wait) = *keys.entry(copies).or_insert_with(|| {
                let blocked = blocked_at(&goroutine.stack);
                let stuck_wait = STUCK_WAITS.contains(&&*goroutine.wait_reason);
                (group_id(goroutine, blocked), blocked, stuck_wait)
            });
            // Exact when the park time is known; else from the census that first saw it in
            // this group (a goroutine that moved to another group starts its age again).
            let parked_since = goroutine
                .parked_for_s
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .and_then(|parked| now.checked_sub(parked));
            let before = match previous.get(members.len()) {
                Some(member) if member.goid == goroutine.goid => Some(member),
                _ => by_goid
                    .get_or_insert_with(|| {
                        previous
                            .iter()
                            .enumerate()
                            .map(|(index, member)| (member.goid, index))
                            .collect()
                    })
                    .get(&goroutine.goid)
                    .map(|&index| &previous[index]),
            };
            let before = before.filter(|member| member.group == id);
            let since = parked_since
                .unwrap_or_else(|| before.map_or(now, |m| Member::at(m.since_ns, first)));
            let may_be = may_be_suspect(goroutine, blocked);
            // Since when it has not run, while in a stuck wait in this group.
            let still_since = (may_be && stuck_wait).then(|| match before {
                Some(member) if goroutine.still && member.still_ns != Member::NOT_STILL => {
                    Member::at(member.still_ns, first)
                }
                _ => now,
            });
            // The runtime's record, when it reaches further back.
            let runtime_since = goroutine
                .runtime_blocked_for_s
                .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
                .and_then(|blocked| now.checked_sub(blocked))
                .filter(|&since| still_since.is_some_and(|still| since < still));
            members.push(Member {
                goid: goroutine.goid,
                group: id,
                since_ns: Member::offset(since, first),
                still_ns: still_since
                    .map_or(Member::NOT_STILL, |still| Member::offset(still, first)),
            });
            let (group, eligible) = groups.entry(id).or_insert_with(|| {
                let group = Group {
                    id: format!("{id:016x}"),
                    count: 0,
                    state: goroutine.state.to_owned(),
                    wait_reason: goroutine.wait_reason.to_string(),
                    created_by: goroutine.created_by.as_deref().cloned(),
                    blocked_at: blocked.map(source_location),
                    oldest_age_s: 0.0,
                    growth_short: 0,
                    growth_long: 0,
                    window_short_s: self.rules.window_short.as_secs(),
                    window_long_s: self.rules.window_long.as_secs(),
                    suspect: false,
                    rank: 0,
                    stuck: 0,
                    stuck_for_s: 0.0,
                    stuck_since: StuckSince::default(),
                    channel: None,
                    listening: 0,
                    listens_on: None,
                    stack: goroutine.stack.iter().map(source_location).collect(),
                };
                (group, true)
            });
            *eligible &= may_be;
            group.count += 1;
            if let Some(site) = &goroutine.listens_on {
                group.listening += 1;
                group
                    .listens_on
                    .get_or_insert_with(|| SourceLocation::clone(site));
            }
            group.oldest_age_s = group
                .oldest_age_s
                .max(now.duration_since(since).as_secs_f64());
            if let Some(still_since) = still_since {
                let (since, source) = match (parked_since, runtime_since) {
                    (Some(parked), _) => (parked, StuckSince::ParkTime),
                    (None, Some(runtime)) => (runtime, StuckSince::Runtime),
                    (None, None) => (still_since, StuckSince::Ctxleak),
                };
                let stuck_for = now.duration_since(since).as_secs_f64();
                if stuck_for >= self.rules.stuck_after.as_secs_f64() {
                    group.stuck += 1;
                    if stuck_for > group.stuck_for_s {
                        group.stuck_for_s = stuck_for;
                        group.stuck_since = source;
                    }
                }
            }
        }
        self.members = members;

        // Count histories: a group first seen after the first census grew from nothing.
        for (id, (group, _)) in &groups {
            let history = self.history.entry(*id).or_default();
            if history.is_empty() && now > first {
                history.push_back((first, 0));
            }
            history.push_back((now, group.count));
        }
        for (id, history) in self.history.iter_mut() {
            if !groups.contains_key(id) {
                history.push_back((now, 0));
            }
            // Keep one sample at or before the long window's start.
            while history.len() > 2 && history[1].0 <= now - self.rules.window_long.min(now - first)
            {
                history.pop_front();
            }
        }
        self.history
            .retain(|_, history| history.iter().any(|&(_, count)| count > 0));

        let rules = self.rules;
        let was_suspect = std::mem::take(&mut self.suspects);
        let mut groups: Vec<Group> = groups
            .into_iter()
            .map(|(id, (mut group, eligible))| {
                let history = &self.history[&id];
                group.growth_short = growth(history, now, rules.window_short);
                group.growth_long = growth(history, now, rules.window_long);
                let enough = |window| {
                    rising_floor(history, now, window).is_some_and(|(base, rise)| {
                        rise >= rules.min_growth
                            && (was_suspect.contains(&id)
                                || rise as f64 * 100.0 >= rules.min_growth_percent * base as f64)
                    })
                };
                group.suspect = eligible
                    && group.growth_long > 0
                    && group.oldest_age_s >= rules.min_age.as_secs_f64()
                    && (enough(rules.window_short) || enough(rules.window_long));
                if group.suspect {
                    self.suspects.insert(id);
                }
                group
            })
            .collect();
        groups.sort_by(|a, b| {
            b.suspect
                .cmp(&a.suspect)
                .then((b.stuck > 0).cmp(&(a.stuck > 0)))
                .then(b.growth_long.cmp(&a.growth_long))
                .then(b.count.cmp(&a.count))
                .then(a.id.cmp(&b.id))
        });
        for (rank, group) in groups.iter_mut().filter(|g| g.suspect).enumerate() {
            group.rank = u32::try_from(rank + 1).unwrap_or(u32::MAX);
        }
        groups
    }
}

/// The groups with stuck members, longest stuck first: `/api/leaks`'s `stuck`.
pub fn stuck_groups(groups: &[Group]) -> Vec<Group> {
    let mut stuck: Vec<Group> = groups.iter().filter(|g| g.stuck > 0).cloned().collect();
    stuck.sort_by(|a, b| {
        b.stuck_for_s
            .total_cmp(&a.stuck_for_s)
            .then(b.stuck.cmp(&a.stuck))
            .then(a.id.cmp(&b.id))
    });
    stuck
}

/// Count now minus the count at the window's start (the newest sample at or before it, or the
/// oldest sample when the history is shorter than the window).
fn growth(history: &VecDeque<(Instant, u64)>, now: Instant, window: Duration) -> i64 {
    let Some(&(_, current)) = history.back() else {
        return 0;
    };
    let start = now.checked_sub(window);
    let base = history
        .iter()
        .rev()
        .find(|(time, _)| start.is_some_and(|start| *time <= start))
        .or(history.front())
        .map_or(current, |&(_, count)| count);
    i64::try_from(current).unwrap_or(i64::MAX) - i64::try_from(base).unwrap_or(i64::MAX)
}

/// Whether the group is still growing over the window ending at `now` (as far back as the
/// history reaches): the smallest count of each quarter of the window is above the quarter's
/// before. The history is a step function (a count holds until the next census). Gives the
/// first quarter's floor and how far the floor rose to the last quarter's.
fn rising_floor(
    history: &VecDeque<(Instant, u64)>,
    now: Instant,
    window: Duration,
) -> Option<(u64, u64)> {
    let &(oldest, _) = history.front()?;
    let start = now
        .checked_sub(window)
        .map_or(oldest, |start| start.max(oldest));
    let quarter = now.checked_duration_since(start)? / 4;
    if quarter.is_zero() {
        return None;
    }
    // One pass: `value` is the count holding since the last sample, each quarter's floor the
    // smallest count that held in it (a sample at a quarter's very start replaces the value
    // before it there).
    let mut samples = history
        .iter()
        .skip_while(|(time, _)| *time <= start)
        .peekable();
    let mut value = history
        .iter()
        .take_while(|(time, _)| *time <= start)
        .last()
        .map(|&(_, count)| count)?;
    let mut floors = [value, u64::MAX, u64::MAX, u64::MAX];
    let mut current = 0;
    let quarter_ns = quarter.as_nanos();
    while current < 3 || samples.peek().is_some() {
        let Some(&(time, count)) = samples.next() else {
            current += 1;
            floors[current] = floors[current].min(value);
            continue;
        };
        let since = time.duration_since(start).as_nanos();
        let index = usize::try_from(since / quarter_ns).unwrap_or(3).min(3);
        while current < index {
            current += 1;
            let at_start = current == index && since == quarter_ns * current as u128;
            if !at_start {
                floors[current] = floors[current].min(value);
            }
        }
        floors[index] = floors[index].min(count);
        value = count;
    }
    floors
        .windows(2)
        .all(|pair| pair[1] > pair[0])
        .then(|| (floors[0], floors[3] - floors[0]))
}

/// Stable across censuses and restarts: FNV-1a of the grouping key.
fn group_id(goroutine: &GoroutineView, blocked: Option<&StackFrame>) -> u64 {
    let mut hash = Fnv::default();
    hash.write(goroutine.state.as_bytes());
    hash.write(goroutine.wait_reason.as_bytes());
    match &goroutine.created_by {
        Some(site) => {
            hash.write(site.function.as_bytes());
            hash.write(site.file.as_bytes());
            hash.write(&site.line.to_le_bytes());
        }
        None => hash.write(b"-"),
    }
    match blocked {
        Some(frame) => {
            hash.write(frame.function.as_bytes());
            hash.write(frame.file.as_bytes());
            hash.write(&frame.line.to_le_bytes());
        }
        None => hash.write(b"-"),
    }
    hash.0
}

/// FNV-1a, with a separator after each part: stable across runs and versions, unlike std's
/// SipHash with its random keys.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Self(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes.iter().chain([0xffu8].iter()) {
            self.0 = (self.0 ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}

/// Where a Go function's frame record (the caller's saved frame pointer, then the return
/// address) is, from its SP and how deep its frame is (`sp_delta`); None for a function
/// without a frame. x86-64: the function was entered with SP = sp + delta, and its prologue
/// pushed BP just below the return address there. arm64: the prologue stores the link
/// register at the new SP and the frame pointer just below it (`STP (R29, R30), -8(RSP)`), so
/// the record is at SP - 8 whatever the frame's size.
fn frame_record(sp: u64, sp_delta: u64) -> Option<u64> {
    if cfg!(target_arch = "aarch64") {
        (sp_delta > 0).then(|| sp.wrapping_sub(8))
    } else {
        (sp_delta >= 8).then(|| sp + sp_delta - 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(function: &str, line: u32) -> StackFrame {
        StackFrame {
            function: function.into(),
            file: "x.go".into(),
            line,
            inlined: false,
            wrapper: false,
            pc: 0,
        }
    }

    /// The compact list gives back the views it was made from, in order, and serializes as
    /// they do: shared parts (one stack copy for two goroutines) and distinct ones alike.
    #[test]
    fn goroutine_list_serializes_as_its_views() {
        let shared = goroutine(7, 20);
        let mut views = vec![goroutine(5, 20), shared.clone(), shared, goroutine(9, 30)];
        views[1].state = "runnable";
        views[1].parent_goid = 3;
        views[3].created_by = None;
        views[3].start_function = None;
        views[3].system = true;
        let with_parks = {
            let mut views = views.clone();
            views[2].parked_for_s = Some(1.5);
            views
        };
        for views in [views, with_parks] {
            let list = GoroutineList::new(views.clone());
            assert_eq!(list.len(), views.len());
            assert_eq!(
                serde_json::to_value(&list).unwrap(),
                serde_json::to_value(&views).unwrap()
            );
        }
        assert!(GoroutineList::new(Vec::new()).is_empty());
    }

    fn goroutine(goid: u64, blocked_line: u32) -> GoroutineView {
        GoroutineView {
            goid,
            parent_goid: 1,
            system: false,
            state: "waiting",
            wait_reason: "chan send".into(),
            created_by: Some(Arc::new(SourceLocation {
                function: "main.main".into(),
                file: "main.go".into(),
                line: 10,
            })),
            start_function: Some("main.main.gowrap1".into()),
            stack: vec![
                frame("runtime.gopark", 1),
                frame("runtime.chansend1", 2),
                frame("main.worker", blocked_line),
            ]
            .into(),
            parked_for_s: None,
            still: true,
            stack_read: false,
            listens_on: None,
            waitsince: 0,
            runtime_blocked_for_s: None,
        }
    }

    #[test]
    fn blocked_at_skips_runtime_and_sync() {
        let stack = vec![
            frame("runtime.gopark", 1),
            frame("sync.runtime_SemacquireMutex", 2),
            frame("internal/sync.(*Mutex).lockSlow", 3),
            frame("sync.(*Mutex).Lock", 4),
            StackFrame {
                wrapper: true,
                ..frame("main.main.gowrap1", 5)
            },
            frame("main.handler", 6),
        ];
        assert_eq!(blocked_at(&stack).map(|l| l.line), Some(6));
    }

    #[test]
    fn a_growing_group_is_a_suspect_and_a_stable_one_is_not() {
        let rules = SuspectRules {
            window_short: Duration::from_secs(10),
            window_long: Duration::from_secs(60),
            min_age: Duration::from_secs(5),
            ..SuspectRules::default()
        };
        let mut tracker = GroupTracker::new(rules);
        let start = Instant::now();
        // A stable pool of 8 at line 20, and a leak at line 30 growing by 2 per census.
        let mut leaked = Vec::new();
        let mut groups = Vec::new();
        for step in 0..10u64 {
            let now = start + Duration::from_secs(step * 2);
            let mut census: Vec<GoroutineView> = (0..8).map(|i| goroutine(100 + i, 20)).collect();
            leaked.extend([1000 + 2 * step, 1001 + 2 * step]);
            census.extend(leaked.iter().map(|&goid| goroutine(goid, 30)));
            groups = tracker.update(now, &census);
        }
        let leak = &groups[0];
        assert_eq!(leak.blocked_at.as_ref().map(|l| l.line), Some(30));
        assert!(leak.suspect && leak.rank == 1, "{leak:?}");
        assert_eq!(leak.count, 20);
        assert_eq!(leak.growth_short, 10, "{leak:?}");
        assert_eq!(leak.growth_long, 18, "since the first census");
        assert!((leak.oldest_age_s - 18.0).abs() < 1e-9);
        let pool = &groups[1];
        assert_eq!(
            (
                pool.count,
                pool.growth_short,
                pool.growth_long,
                pool.suspect,
                pool.rank
            ),
            (8, 0, 0, false, 0)
        );
        assert_ne!(leak.id, pool.id);
    }

    /// Feeds `counts[i]` goroutines at line 30 (made by `make`, goids from 1000) at census i,
    /// one every 5 s, with the default rules; the group as the last census saw it.
    fn judge(counts: &[u64], make: impl Fn(u64) -> GoroutineView) -> Group {
        judge_with(SuspectRules::default(), counts, make)
    }

    fn judge_with(
        rules: SuspectRules,
        counts: &[u64],
        make: impl Fn(u64) -> GoroutineView,
    ) -> Group {
        let mut tracker = GroupTracker::new(rules);
        let start = Instant::now();
        let mut last = Vec::new();
        for (step, &count) in (0u32..).zip(counts) {
            let census: Vec<GoroutineView> = (0..count).map(|i| make(1000 + i)).collect();
            last = tracker.update(start + Duration::from_secs(5) * step, &census);
        }
        last.into_iter()
            .next()
            .expect("the group is in the last census")
    }

    fn leaked(goid: u64) -> GoroutineView {
        goroutine(goid, 30)
    }

    #[test]
    fn a_leak_growing_two_a_census_is_a_suspect_within_45_s() {
        let counts: Vec<u64> = (0..10).map(|step| 2 * step).collect();
        let group = judge(&counts, leaked);
        assert!(group.suspect, "{group:?}");
    }

    #[test]
    fn a_pool_that_filled_up_then_stayed_flat_is_not_a_suspect() {
        // Grows to its cap of 10 in the first 10 s of a 45 s watch, then flat for 35 s: it
        // grew by 9 since attach, but not in every quarter.
        let group = judge(&[1, 5, 10, 10, 10, 10, 10, 10, 10, 10], leaked);
        assert_eq!(group.growth_long, 9);
        assert!(!group.suspect, "{group:?}");
    }

    #[test]
    fn connections_coming_and_going_with_load_are_not_suspects() {
        // Up with load and back down, and up further: the floor falls back each time.
        let group = judge(&[2, 6, 3, 9, 2, 8, 12, 4, 14, 16], leaked);
        assert!(group.growth_long > 0);
        assert!(!group.suspect, "{group:?}");
    }

    #[test]
    fn growth_by_one_connection_is_too_little_to_matter() {
        // Still growing in every quarter, by one goroutine each: under --suspect-min-growth.
        let group = judge(&[1, 1, 2, 2, 3, 3, 4, 4, 5, 5], leaked);
        assert!(!group.suspect, "{group:?}");
    }

    #[test]
    fn growth_small_beside_the_group_needs_the_relative_threshold() {
        // 1000 idle connections gaining 2 a census: +12 from the first quarter to the last,
        // 1.2%.
        let counts: Vec<u64> = (0..10).map(|step| 1000 + 2 * step).collect();
        let group = judge(&counts, leaked);
        assert!(!group.suspect, "{group:?}");
        // The same growth from 20 is a leak.
        let counts: Vec<u64> = (0..10).map(|step| 20 + 2 * step).collect();
        assert!(judge(&counts, leaked).suspect);
    }

    #[test]
    fn a_suspect_stays_one_however_large_it_grows() {
        // With a 2-minute long window, a leak of 2 a census grows by 48 over either window:
        // under 10% of the group once it is past 480.
        let rules = SuspectRules {
            window_long: Duration::from_secs(120),
            ..SuspectRules::default()
        };
        // Flagged early, it is still one at 1 000 goroutines...
        let counts: Vec<u64> = (0..520).map(|step| 2 * step).collect();
        let group = judge_with(rules, &counts, leaked);
        assert!(group.count > 1000 && group.suspect, "{group:?}");
        // ...where the same growth, first seen there, is not enough to become one.
        let counts: Vec<u64> = (490..520).map(|step| 2 * step).collect();
        let group = judge_with(rules, &counts, leaked);
        assert!(group.count > 1000 && !group.suspect, "{group:?}");
    }

    #[test]
    fn only_blocked_goroutines_at_a_known_line_outside_main_are_suspects() {
        let counts: Vec<u64> = (0..10).map(|step| 2 * step).collect();
        let runnable = judge(&counts, |goid| GoroutineView {
            state: "runnable",
            wait_reason: "".into(),
            ..leaked(goid)
        });
        assert!(!runnable.suspect, "{runnable:?}");
        let unwound = judge(&counts, |goid| GoroutineView {
            stack: vec![frame("runtime.gopark", 1)].into(),
            ..leaked(goid)
        });
        assert!(
            unwound.blocked_at.is_none() && !unwound.suspect,
            "{unwound:?}"
        );
        let main = judge(&counts, |goid| GoroutineView {
            start_function: Some("runtime.main".into()),
            ..leaked(goid)
        });
        assert!(!main.suspect, "{main:?}");
        let leaked_state = judge(&counts, |goid| GoroutineView {
            state: "leaked",
            ..leaked(goid)
        });
        assert!(leaked_state.suspect, "{leaked_state:?}");
    }

    /// Feeds the same 3 goroutines (made by `make`, goids from 1000) at 10 censuses 5 s apart,
    /// `still` as `still(census)` says, with stuck-after 20 s: the group as the last census
    /// saw it.
    fn judge_stuck(still: impl Fn(u32) -> bool, make: impl Fn(u64) -> GoroutineView) -> Group {
        let mut tracker = GroupTracker::new(SuspectRules {
            stuck_after: Duration::from_secs(20),
            ..SuspectRules::default()
        });
        let start = Instant::now();
        let mut last = Vec::new();
        for census in 0u32..10 {
            let views: Vec<GoroutineView> = (0..3)
                .map(|i| GoroutineView {
                    still: census > 0 && still(census),
                    ..make(1000 + i)
                })
                .collect();
            last = tracker.update(start + Duration::from_secs(5) * census, &views);
        }
        last.into_iter()
            .next()
            .expect("the group is in the last census")
    }

    fn waiting_on(reason: &str) -> impl Fn(u64) -> GoroutineView {
        move |goid| GoroutineView {
            wait_reason: reason.into(),
            ..leaked(goid)
        }
    }

    #[test]
    fn goroutines_that_never_run_in_a_lock_or_a_send_are_stuck() {
        for reason in [
            "sync.Mutex.Lock",
            "chan send",
            "sync.WaitGroup.Wait",
            "semacquire",
        ] {
            let group = judge_stuck(|_| true, waiting_on(reason));
            // Not run since the first census, 45 s before the last.
            assert_eq!((group.stuck, group.stuck_for_s), (3, 45.0), "{group:?}");
            assert!(!group.suspect, "a deadlock does not grow: {group:?}");
        }
        // Ran at census 6: stuck for the 15 s since, under the threshold.
        let group = judge_stuck(|census| census != 6, waiting_on("sync.Mutex.Lock"));
        assert_eq!(group.stuck, 0, "{group:?}");
        // Ran at census 3: stuck for the 30 s since.
        let group = judge_stuck(|census| census != 3, waiting_on("sync.Mutex.Lock"));
        assert_eq!((group.stuck, group.stuck_for_s), (3, 30.0), "{group:?}");
    }

    #[test]
    fn contended_locks_and_idle_waits_are_not_stuck() {
        // Waiting at every census, but running in between (a contended lock).
        let group = judge_stuck(|_| false, waiting_on("sync.Mutex.Lock"));
        assert_eq!(group.stuck, 0, "{group:?}");
        // Idle workers never run, and are not stuck.
        for reason in [
            "chan receive",
            "select",
            "IO wait",
            "sleep",
            "GC worker (idle)",
        ] {
            let group = judge_stuck(|_| true, waiting_on(reason));
            assert_eq!(group.stuck, 0, "{group:?}");
        }
        // Nor is the main goroutine waiting for the program's end, or an unwound stack.
        let main = judge_stuck(
            |_| true,
            |goid| GoroutineView {
                start_function: Some("runtime.main".into()),
                wait_reason: "sync.WaitGroup.Wait".into(),
                ..leaked(goid)
            },
        );
        assert_eq!(main.stuck, 0, "{main:?}");
        let unwound = judge_stuck(
            |_| true,
            |goid| GoroutineView {
                stack: vec![frame("runtime.gopark", 1)].into(),
                ..leaked(goid)
            },
        );
        assert_eq!(unwound.stuck, 0, "{unwound:?}");
    }

    #[test]
    fn floors_are_per_quarter_and_a_sample_at_a_quarter_start_opens_it() {
        let start = Instant::now();
        let at = |s: u64, count: u64| (start + Duration::from_secs(s), count);
        let now = start + Duration::from_secs(4);
        let window = Duration::from_secs(4);
        // One sample at the start of each quarter: the floors are 0, 1, 2 and 3.
        let history: VecDeque<_> = (0..=4).map(|s| at(s, s)).collect();
        assert_eq!(rising_floor(&history, now, window), Some((0, 3)));
        // A dip inside the third quarter brings its floor to the second's: not rising.
        let mut dipped = history.clone();
        dipped.insert(3, (start + Duration::from_millis(2500), 1));
        assert_eq!(rising_floor(&dipped, now, window), None);
        // Quarters without a sample hold the count before them.
        let sparse: VecDeque<_> = [at(0, 0), at(4, 9)].into_iter().collect();
        assert_eq!(rising_floor(&sparse, now, window), None);
        // The window reaches back no further than the history; an empty one says nothing.
        assert_eq!(
            rising_floor(&history, now, Duration::from_secs(60)),
            Some((0, 3))
        );
        assert_eq!(rising_floor(&history, now, Duration::ZERO), None);
    }

    /// `runtime_bounds` on goroutines with these `(wait reason, waitsince)`, at `now_ns`.
    fn bounds(now_ns: u64, goroutines: &[(&str, u64)]) -> Vec<Option<f64>> {
        let mut views: Vec<GoroutineView> = goroutines
            .iter()
            .zip(1000..)
            .map(|(&(reason, waitsince), goid)| GoroutineView {
                waitsince,
                ..waiting_on(reason)(goid)
            })
            .collect();
        GroupTracker::new(SuspectRules::default()).runtime_bounds(now_ns, &mut views);
        views.iter().map(|v| v.runtime_blocked_for_s).collect()
    }

    #[test]
    fn the_runtime_bound_is_the_gc_start_after_the_recorded_one() {
        let s = 1_000_000_000;
        // Stuck ones recorded at the GC that started at 100 s; an idle receiver at 160 s
        // shows the next GC started then: stuck since at least 160 s, 40 s before 200 s.
        let found = bounds(
            200 * s,
            &[
                ("sync.Mutex.Lock", 100 * s),
                ("chan send", 100 * s),
                ("chan receive", 160 * s),
                ("chan send", 160 * s),
                ("chan send", 0),
                // Not a GC start: in the future.
                ("chan receive", 300 * s),
            ],
        );
        assert_eq!(
            found,
            [Some(40.0), Some(40.0), None, None, None, None],
            "no bound without a later GC start, for idle waits or no record"
        );
    }

    #[test]
    fn a_runtime_bound_makes_a_goroutine_stuck_at_the_first_census() {
        let mut tracker = GroupTracker::new(SuspectRules {
            stuck_after: Duration::from_secs(20),
            ..SuspectRules::default()
        });
        let start = Instant::now();
        let view = |goid, blocked_for| GoroutineView {
            runtime_blocked_for_s: blocked_for,
            ..waiting_on("chan send")(goid)
        };
        let group = tracker.update(start, &[view(1, Some(600.0)), view(2, None)])[0].clone();
        assert_eq!(
            (group.stuck, group.stuck_for_s, group.stuck_since),
            (1, 600.0, StuckSince::Runtime),
            "{group:?}"
        );
        // 30 s on, both still: the other is stuck by ctxleak's own record; the first still
        // by the runtime's, which reaches further back.
        let views =
            [view(1, Some(630.0)), view(2, None)].map(|v| GoroutineView { still: true, ..v });
        let group = tracker.update(start + Duration::from_secs(30), &views)[0].clone();
        assert_eq!(
            (group.stuck, group.stuck_for_s, group.stuck_since),
            (2, 630.0, StuckSince::Runtime),
            "{group:?}"
        );
    }
}
