//! ctxleak's eBPF programs: uprobes on a Go program's runtime.
//!
//! They only read the target's memory (never write it) and only for processes the daemon
//! registered in `TARGETS`, with the `runtime.g` offsets it read from that binary's DWARF.
//! Each hit sends one fixed-size record through the `EVENTS` ring buffer; a full buffer is
//! counted in `COUNTERS`, never silently dropped, so the daemon knows to resynchronise
//! from the target's memory.
#![no_std]
#![no_main]

use aya_ebpf::{
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{map, uprobe},
    maps::{HashMap, PerCpuArray, RingBuf},
    programs::ProbeContext,
};
use aya_log_ebpf::warn;
use ctxleak_common::{
    COUNTER_SLOTS, Counter, EVENTS_RING_BYTES, EventKind, GoOffsets, GoroutineEvent, MAX_TARGETS,
    TargetConfig,
};

#[map]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// Placed on the instruction right after `CALL runtime.newproc1` (found by disassembly at
/// attach time): RAX then holds the new, already runnable g. Not a uretprobe: those crash Go
/// programs, whose stacks move.
#[uprobe]
pub fn goroutine_created(ctx: ProbeContext) -> u32 {
    // SAFETY: the kernel hands uprobe programs a valid pt_regs.
    let g = unsafe { (*ctx.regs).rax };
    report(&ctx, EventKind::Created, g);
    0
}

/// Placed after the stack check of `runtime.goexit1` (it cannot fire twice when the stack
/// grows, and the kernel emulates the `PUSHQ BP` there without a second trap). In Go's
/// register ABI, R14 holds the current g: the goroutine that is exiting.
#[uprobe]
pub fn goroutine_exited(ctx: ProbeContext) -> u32 {
    // SAFETY: as above.
    let g = unsafe { (*ctx.regs).r14 };
    report(&ctx, EventKind::Exited, g);
    0
}

#[inline(always)]
fn report(ctx: &ProbeContext, kind: EventKind, g: u64) {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map lookup by value; the entry is plain data written by the daemon.
    let Some(target) = (unsafe { TARGETS.get(&pid) }) else {
        return;
    };
    let Some(event) = read_event(kind, pid, g, &target.offsets) else {
        count(Counter::ReadErrors);
        warn!(ctx, "ctxleak: cannot read g {:x} in pid {}", g, pid);
        return;
    };
    match EVENTS.reserve::<GoroutineEvent>(0) {
        Some(mut slot) => {
            slot.write(event);
            slot.submit(0);
        }
        None => count(Counter::EventsLost),
    }
}

#[inline(always)]
fn read_event(kind: EventKind, pid: u32, g: u64, offsets: &GoOffsets) -> Option<GoroutineEvent> {
    if g == 0 {
        return None;
    }
    let mut event = GoroutineEvent {
        kind: kind as u32,
        pid,
        // SAFETY: no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        goid: read_u64(g, offsets.g_goid)?,
        ..GoroutineEvent::default()
    };
    if kind == EventKind::Created {
        event.parent_goid = read_u64(g, offsets.g_parent_goid)?;
        event.gopc = read_u64(g, offsets.g_gopc)?;
        event.startpc = read_u64(g, offsets.g_startpc)?;
    }
    Some(event)
}

#[inline(always)]
fn read_u64(base: u64, offset: u32) -> Option<u64> {
    // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
    unsafe { bpf_probe_read_user((base + u64::from(offset)) as *const u64) }.ok()
}

#[inline(always)]
fn count(counter: Counter) {
    if let Some(slot) = COUNTERS.get_ptr_mut(counter as u32) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU while the program runs.
        unsafe { *slot += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
