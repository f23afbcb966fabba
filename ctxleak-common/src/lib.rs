//! Types shared by the eBPF programs (`ctxleak-ebpf`) and the daemon (`ctxleak-daemon`).
//!
//! Everything here is `#[repr(C)]` plain data: the kernel side writes it into maps and the
//! ring buffer, the user side reads the same bytes. Keep fields 8-byte aligned with explicit
//! padding so both sides agree without relying on the compiler's layout choices.
#![no_std]

/// Offsets into the target's `runtime.g`, read from the binary's DWARF at attach time.
///
/// They moved between Go versions (see `shared/go-runtime.md`), so they are never compiled
/// into the eBPF programs: the daemon hands them over through [`TARGETS_MAP`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoOffsets {
    pub g_goid: u32,
    pub g_parent_goid: u32,
    pub g_gopc: u32,
    pub g_startpc: u32,
}

/// Per-process configuration, keyed by tgid in [`TARGETS_MAP`]. A probe that fires in a
/// process without an entry does nothing: this is what scopes shared probes to the targets
/// ctxleak was asked to watch.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TargetConfig {
    pub offsets: GoOffsets,
    /// Non-zero: `goroutine_parked` records park times and `goroutine_exited` forgets them.
    pub park_times: u32,
    /// Benchmarks only: how long [`PROG_FLOOR_SPIN`] spins, in nanoseconds.
    pub floor_spin_ns: u32,
    /// Package `context`'s code in this process, [lo, hi) at run time: `context_created`
    /// stops its stack walk after the first return address outside. Zero: walk the whole
    /// depth.
    pub context_text_lo: u64,
    pub context_text_hi: u64,
}

/// Key of [`PARKS_MAP`]: one goroutine of one process.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GoroutineKey {
    pub pid: u32,
    pub _pad: u32,
    pub goid: u64,
}

/// What a [`GoroutineEvent`] reports.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// `runtime.newproc1` returned a new goroutine (it is already runnable).
    Created = 1,
    /// A goroutine entered `runtime.goexit1`: its function returned or it called `Goexit`.
    Exited = 2,
    /// A cancelCtx (or timerCtx, afterFuncCtx) entered `(*cancelCtx).propagateCancel`: it is
    /// being created. A [`ContextEvent`].
    ContextCreated = 3,
    /// `propagateCancel` is adding a child to a parent's `children` map: from now on the
    /// child is held by its parent until it is cancelled. A [`ContextEvent`].
    ContextRegistered = 4,
    /// `(*cancelCtx).cancel` was entered (every cancel path goes through it: the user's
    /// cancel func, a deadline, a parent's cancellation). A [`ContextEvent`].
    ContextCancelled = 5,
}

impl EventKind {
    pub fn from_u32(raw: u32) -> Option<Self> {
        match raw {
            1 => Some(Self::Created),
            2 => Some(Self::Exited),
            3 => Some(Self::ContextCreated),
            4 => Some(Self::ContextRegistered),
            5 => Some(Self::ContextCancelled),
            _ => None,
        }
    }
}

/// The first fields of every goroutine record in [`EVENTS_MAP`]. Every record, context ones
/// included, starts with `kind` and `pid`; `kind` says which record it is. An
/// [`EventKind::Exited`] record is this header alone: the records carry only what their kind
/// needs, since every byte is written on the target's CPU inside its trap.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// An [`EventKind`] as `u32`.
    pub kind: u32,
    /// The target process (tgid).
    pub pid: u32,
    /// `bpf_ktime_get_ns()` when the probe fired.
    pub ktime_ns: u64,
    /// The goroutine the event is about (created, exited), or the one that acted (contexts).
    pub goid: u64,
}

impl EventHeader {
    pub const SIZE: usize = size_of::<Self>();
}

/// One goroutine lifecycle event, streamed through [`EVENTS_MAP`]: sent whole for
/// [`EventKind::Created`], as its [`EventHeader`] alone for [`EventKind::Exited`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineEvent {
    /// Kind, process, time (`bpf_ktime_get_ns()`, which orders events against memory
    /// snapshots) and the goroutine.
    pub header: EventHeader,
    /// Zero for [`EventKind::Exited`].
    pub parent_goid: u64,
    /// PC of the `go` statement; zero for [`EventKind::Exited`].
    pub gopc: u64,
    /// Entry PC of the goroutine's function; zero for [`EventKind::Exited`].
    pub startpc: u64,
}

impl GoroutineEvent {
    pub const SIZE: usize = size_of::<Self>();
}

/// Return addresses kept per context creation: enough to climb out of package `context`
/// (`WithTimeout` -> `WithDeadline` -> `WithDeadlineCause` -> `propagateCancel` is four deep
/// before inlining) to the user's line, with room for wrappers.
pub const CONTEXT_STACK_DEPTH: usize = 8;

/// A [`EventKind::ContextRegistered`] or [`EventKind::ContextCancelled`] record: a
/// [`ContextEvent`]'s first part, without its creator and stack (those kinds need neither, and
/// reading the goroutine would cost the target a memory read per event).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextChange {
    /// An [`EventKind`] as `u32`: one of the `Context*` kinds.
    pub kind: u32,
    pub pid: u32,
    /// Address of the context (its embedded cancelCtx is at offset 0 in every type).
    pub context: u64,
    /// [`EventKind::ContextRegistered`]: the parent's `children` map (its first word is the
    /// map's length). [`EventKind::ContextCancelled`]: `removeFromParent` (1 for a direct
    /// cancel by the owner's cancel func, a deadline or `AfterFunc`'s stop; 0 when a parent's
    /// cancellation propagates). [`EventKind::ContextCreated`]: the parent context (the data
    /// word of the `Context` interface it was made from, which `propagateCancel` stores at
    /// +8 of the new context).
    pub detail: u64,
}

impl ContextChange {
    pub const SIZE: usize = size_of::<Self>();
}

/// One `context` cancel-tree event, streamed through [`EVENTS_MAP`] beside
/// [`GoroutineEvent`]s; all records start with `kind` and `pid`, so `kind` tells them
/// apart. Sent whole for [`EventKind::ContextCreated`], as a [`ContextChange`] otherwise.
///
/// No timestamp: the daemon stamps context events when it drains them (a context's age is
/// counted in seconds; the drain runs every 10 ms at most), which spares every event a
/// `bpf_ktime_get_ns` call, about 30 ns of the target's CPU. Goroutine events keep theirs:
/// they are ordered against memory snapshots.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ContextEvent {
    /// Kind (one of the `Context*` kinds), process, context and detail: all a
    /// [`EventKind::ContextRegistered`] or [`EventKind::ContextCancelled`] record carries.
    pub change: ContextChange,
    /// [`EventKind::ContextCreated`]: the goroutine that created the context. Zero otherwise.
    pub goid: u64,
    /// [`EventKind::ContextCreated`]: the type word (itab) of the `Context` interface it was
    /// made from, stored at +0 of the new context: with `detail`, what tells the context from
    /// another object the GC later put at its address.
    pub parent_type: u64,
    /// [`EventKind::ContextCreated`]: return addresses, innermost first (the caller of
    /// `propagateCancel`, then its callers by frame pointer), zero-padded.
    pub stack: [u64; CONTEXT_STACK_DEPTH],
}

impl ContextEvent {
    pub const SIZE: usize = size_of::<Self>();
}

// Every record starts with `kind` and `pid` (the daemon reads `kind` first to tell them apart).
const _: () = {
    use core::mem::offset_of;
    assert!(offset_of!(ContextChange, kind) == offset_of!(EventHeader, kind));
    assert!(offset_of!(ContextChange, pid) == offset_of!(EventHeader, pid));
};

/// Index into [`COUNTERS_MAP`], a per-CPU array of `u64`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counter {
    /// Events that did not fit in the ring buffer: the daemon must resynchronise from memory.
    EventsLost = 0,
    /// Probe hits where reading the target's memory failed (the event was not sent).
    ReadErrors = 1,
    /// Exec notifications that did not fit in [`EXECS_MAP`]: the daemon rescans /proc.
    ExecsLost = 2,
}

pub const COUNTER_SLOTS: u32 = 3;

/// A process called execve(2) and now runs a new program: sent by the `process_exec` BTF
/// tracepoint through [`EXECS_MAP`], so that `ctxleak daemon` looks at new processes within
/// milliseconds instead of at its next scan of /proc.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecEvent {
    /// The process (tgid) after the exec.
    pub pid: u32,
    pub _pad: u32,
}

/// Ring buffer of [`ExecEvent`]s, apart from [`EVENTS_MAP`] so that a host busy with short
/// processes (a build, a shell loop) can never crowd out a target's goroutine events.
pub const EXECS_MAP: &str = "EXECS";
/// 64 KiB: about 4 000 execs between two drains (every 10 ms).
pub const EXECS_RING_BYTES: u32 = 64 << 10;

pub const TARGETS_MAP: &str = "TARGETS";
pub const EVENTS_MAP: &str = "EVENTS";
pub const COUNTERS_MAP: &str = "COUNTERS";
/// Last park time (`bpf_ktime_get_ns`) per goroutine, when park timing is on.
pub const PARKS_MAP: &str = "PARKS";
/// Goroutines whose park time is kept at once; the least recently parked are evicted.
pub const MAX_PARKS: u32 = 1 << 18;

/// Program names, as the daemon looks them up in the loaded object.
pub const PROG_GOROUTINE_CREATED: &str = "goroutine_created";
/// The same, on `CALL runtime.runqput` right after newproc1 (the new g in RBX).
pub const PROG_GOROUTINE_ENQUEUED: &str = "goroutine_enqueued";
pub const PROG_GOROUTINE_EXITED: &str = "goroutine_exited";
pub const PROG_GOROUTINE_PARKED: &str = "goroutine_parked";
pub const PROG_CONTEXT_CREATED: &str = "context_created";
pub const PROG_CONTEXT_REGISTERED: &str = "context_registered";
pub const PROG_CONTEXT_CANCELLED: &str = "context_cancelled";
/// BTF tracepoint on `sched_process_exec`: every exec on the host (daemon mode only).
pub const PROG_PROCESS_EXEC: &str = "process_exec";
/// Does nothing: attached at the same addresses as the real programs, it measures the floor,
/// the kernel's cost of the traps alone.
pub const PROG_FLOOR: &str = "floor";
/// The floor made to spin for `TargetConfig::floor_spin_ns` (benchmarks only): what the
/// target pays per nanosecond spent inside a uprobe program.
pub const PROG_FLOOR_SPIN: &str = "floor_spin";

/// Ring buffer size in bytes (a power of two, a multiple of the page size). 4 MiB holds
/// about 70 000 events: a burst of that many goroutine starts without a reader.
pub const EVENTS_RING_BYTES: u32 = 4 << 20;

/// How many processes one daemon can watch at once.
pub const MAX_TARGETS: u32 = 1024;

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all of these are #[repr(C)] with only integer fields and no padding holes.
    unsafe impl aya::Pod for super::GoOffsets {}
    unsafe impl aya::Pod for super::TargetConfig {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::GoroutineEvent {}
    unsafe impl aya::Pod for super::ContextChange {}
    unsafe impl aya::Pod for super::ContextEvent {}
    unsafe impl aya::Pod for super::GoroutineKey {}
    unsafe impl aya::Pod for super::ExecEvent {}
}
