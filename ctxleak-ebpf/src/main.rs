//! ctxleak's eBPF programs: uprobes on a Go program's runtime.
//!
//! They only read the target's memory (never write it) and only for processes the daemon
//! registered in `TARGETS`, with the `runtime.g` offsets it read from that binary's DWARF.
//! Each hit sends one record (only the fields its kind needs) through the `EVENTS` ring buffer; a full buffer is
//! counted in `COUNTERS`, never silently dropped, so the daemon knows to resynchronise
//! from the target's memory.
#![no_std]
#![no_main]

mod regs;

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{bpf_get_current_pid_tgid, bpf_ktime_get_ns, bpf_probe_read_user},
    macros::{btf_tracepoint, map, uprobe},
    maps::{HashMap, LruHashMap, PerCpuArray, RingBuf},
    programs::{BtfTracePointContext, ProbeContext},
};
use aya_log_ebpf::warn;
use ctxleak_common::{
    CONTEXT_STACK_DEPTH, COUNTER_SLOTS, ContextChange, ContextEvent, Counter, EVENTS_RING_BYTES,
    EXECS_RING_BYTES, EventHeader, EventKind, ExecEvent, GoOffsets, GoroutineEvent, GoroutineKey,
    MAX_PARKS, MAX_TARGETS, TargetConfig,
};
use regs::GoRegs;

#[map]
static TARGETS: HashMap<u32, TargetConfig> = HashMap::with_max_entries(MAX_TARGETS, 0);

#[map]
static EVENTS: RingBuf = RingBuf::with_byte_size(EVENTS_RING_BYTES, 0);

#[map]
static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTER_SLOTS, 0);

/// The size of `EVENTS` in bytes, set by the daemon at load time (as it sizes the ring):
/// one helper call per event fewer than asking the ring.
#[unsafe(no_mangle)]
static EVENTS_RING_SIZE: u64 = EVENTS_RING_BYTES as u64;

#[map]
static EXECS: RingBuf = RingBuf::with_byte_size(EXECS_RING_BYTES, 0);

/// Scratch space for [`unwind`]'s window of stack, too large for the 512-byte BPF stack.
#[map]
static STACK_WINDOW: PerCpuArray<[u64; STACK_WINDOW_WORDS]> = PerCpuArray::with_max_entries(1, 0);

#[map]
static PARKS: LruHashMap<GoroutineKey, u64> = LruHashMap::with_max_entries(MAX_PARKS, 0);

/// Placed on the instruction right after `CALL runtime.newproc1` (found by disassembly at
/// attach time): the result register (arg0: RAX, arm64 R0) then holds the new, already runnable g. Not a uretprobe: those crash Go
/// programs, whose stacks move.
#[uprobe]
pub fn goroutine_created(ctx: ProbeContext) -> u32 {
    report_created(&ctx, GoRegs::of(&ctx).arg0());
    0
}

/// Placed on the `CALL runtime.runqput(pp, newg, true)` that follows `CALL runtime.newproc1`
/// in `runtime.newproc.func1`, the path of every `go` statement: arg1 (RBX, arm64 R1) holds the new g. The
/// kernel emulates a CALL, while the instruction after newproc1's CALL is a load it must
/// single-step out of line, a second trap per goroutine.
#[uprobe]
pub fn goroutine_enqueued(ctx: ProbeContext) -> u32 {
    report_created(&ctx, GoRegs::of(&ctx).arg1());
    0
}

/// Placed after the stack check of `runtime.goexit1` (it cannot fire twice when the stack
/// grows, and the kernel emulates the `PUSHQ BP` there without a second trap; arm64: on the
/// first instruction after the check that the kernel simulates, an `ADRP`). In Go's
/// register ABI, a register holds the current g (R14, arm64 R28): the goroutine that is exiting.
#[uprobe]
pub fn goroutine_exited(ctx: ProbeContext) -> u32 {
    let g = GoRegs::of(&ctx).g();
    let Some((pid, target)) = current_target() else {
        return 0;
    };
    let Some(goid) = read_u64(g, target.offsets.g_goid) else {
        count(Counter::ReadErrors);
        warn!(&ctx, "ctxleak: cannot read g {:x} in pid {}", g, pid);
        return 0;
    };
    send(&EventHeader {
        kind: EventKind::Exited as u32,
        pid,
        // SAFETY: no preconditions.
        ktime_ns: unsafe { bpf_ktime_get_ns() },
        goid,
    });
    if target.park_times != 0 {
        let _ = PARKS.remove(&GoroutineKey { pid, _pad: 0, goid });
    }
    0
}

/// Placed after the stack check of `runtime.gopark` (only with park timing on; arm64: on the
/// first simulated instruction after it, a B.cond): g is the
/// goroutine about to park. Records when, in a map the daemon reads at census time: one map
/// update per park, no event.
#[uprobe]
pub fn goroutine_parked(_ctx: ProbeContext) -> u32 {
    let Some((pid, target)) = current_target() else {
        return 0;
    };
    if target.park_times == 0 {
        return 0;
    }
    let g = GoRegs::of(&_ctx).g();
    let Some(goid) = read_u64(g, target.offsets.g_goid) else {
        count(Counter::ReadErrors);
        return 0;
    };
    let key = GoroutineKey { pid, _pad: 0, goid };
    // SAFETY: no preconditions.
    let now = unsafe { bpf_ktime_get_ns() };
    // A full LRU map evicts the least recently parked: an insert cannot fail for lack of room.
    let _ = PARKS.insert(&key, &now, 0);
    0
}

/// Placed after the stack check of `context.(*cancelCtx).propagateCancel`, which every
/// cancelCtx, timerCtx and afterFuncCtx goes through when it is made: arg0 is the new context,
/// arg1/arg2 the parent `Context` interface (its data word is sent as the event's detail: the
/// daemon tells the context from a reuse of its memory by it), g the goroutine making it. The
/// prologue has not run yet, so the return address is at [SP] (arm64: in the link register)
/// and the frame pointer is still the caller's: the creation stack is read from there,
/// up to the user's line outside package `context`.
#[uprobe]
pub fn context_created(ctx: ProbeContext) -> u32 {
    let regs = GoRegs::of(&ctx);
    let (context, parent_type, parent) = (regs.arg0(), regs.arg1(), regs.arg2());
    let (sp, fp, link) = (regs.sp(), regs.fp(), regs.link());
    let Some((change, target)) = context_change(EventKind::ContextCreated, context, parent) else {
        return 0;
    };
    let Some(goid) = read_u64(regs.g(), target.offsets.g_goid) else {
        count(Counter::ReadErrors);
        return 0;
    };
    let mut event = ContextEvent {
        change,
        goid,
        parent_type,
        stack: [0; CONTEXT_STACK_DEPTH],
    };
    let text = (target.context_text_lo, target.context_text_hi);
    if !unwind(&mut event, sp, fp, link, text) {
        count(Counter::ReadErrors);
        return 0;
    }
    send(&event);
    0
}

/// Placed on the `CALL runtime.mapassign` of `p.children[child] = struct{}{}` in
/// `propagateCancel` (the kernel emulates a CALL, arm64 a BL: no second trap). It fires only for contexts
/// that really join a parent's `children` map: those under `Background`, `WithoutCancel` or
/// an already-cancelled parent never do, and never cost the daemon memory. Arguments of
/// mapassign(type, map, key): arg1 is the map, arg2 points at the key, the `canceler` interface
/// whose data word is the child.
#[uprobe]
pub fn context_registered(ctx: ProbeContext) -> u32 {
    let regs = GoRegs::of(&ctx);
    let (map, key) = (regs.arg1(), regs.arg2());
    let Some(child) = read_u64(key, 8) else {
        count(Counter::ReadErrors);
        return 0;
    };
    if let Some((event, _)) = context_change(EventKind::ContextRegistered, child, map) {
        send(&event);
    }
    0
}

/// Placed after the stack check of `context.(*cancelCtx).cancel(removeFromParent, err,
/// cause)` (arm64: on its `CBZ` of `err`, the first simulated instruction after the check, with
/// R0 and R1 untouched); timerCtx and afterFuncCtx cancel through it too. arg0 is the context,
/// arg1's low byte `removeFromParent`.
#[uprobe]
pub fn context_cancelled(ctx: ProbeContext) -> u32 {
    let regs = GoRegs::of(&ctx);
    let (context, flag) = (regs.arg0(), regs.arg1() & 0xff);
    if let Some((event, _)) = context_change(EventKind::ContextCancelled, context, flag) {
        send(&event);
    }
    0
}

/// Words of stack read at once from SP when walking a creation stack (see [`unwind`]): 32
/// measured faster per run than 64 on the net/http bench.
const STACK_WINDOW_WORDS: usize = 32;

/// Fills `event.stack` with return addresses at a function's first instructions
/// (before the prologue saves the frame pointer): the return address is at [SP] (arm64: in
/// the link register), the frame pointer still the caller's. Go's frames are alike on both:
/// [FP] is the caller's saved FP, [FP+8] the frame's return address.
/// Stops after the first one outside `context_text` ([lo, hi) of package `context`; (0, 0)
/// walks the whole depth): that is the line that made the context, all the daemon looks for,
/// and each frame read costs the target. False if not even the return address could be read.
///
/// The frames it visits (package `context`'s, then the user's) are small and adjacent above
/// SP, so one read of [`STACK_WINDOW_WORDS`] words from SP usually holds all of them: each
/// `bpf_probe_read_user` costs the target 25-50 ns on these VMs, much more than the bytes it
/// copies. Frames outside the window are read one at a time.
#[inline(always)]
fn unwind(
    event: &mut ContextEvent,
    sp: u64,
    fp: u64,
    link: Option<u64>,
    context_text: (u64, u64),
) -> bool {
    // Near the top of a stack the window may end in unmapped memory: then every frame is
    // read alone.
    let window = STACK_WINDOW.get_ptr_mut(0).and_then(|scratch| {
        // SAFETY: the helper checks the source address (a bad one returns an error) and
        // writes the scratch slot, this CPU's own while the program runs.
        let status = unsafe {
            aya_ebpf::helpers::generated::bpf_probe_read_user(
                scratch.cast(),
                core::mem::size_of::<[u64; STACK_WINDOW_WORDS]>() as u32,
                sp as *const core::ffi::c_void,
            )
        };
        // SAFETY: as above; the slot is plain data.
        (status == 0).then(|| unsafe { &*scratch })
    });
    // The two words at `address` ([BP] and [BP+8] of a frame, or [SP] and what follows).
    let pair = |address: u64| -> Option<[u64; 2]> {
        // Go's frames are 8-byte aligned; a frame pointer that is not is garbage either way.
        // Opaque to the optimiser, so that the bound checked below is the one the verifier
        // sees on the index it scales (else LLVM folds `/ 8 * 8` into a mask it cannot bound).
        let index = core::hint::black_box((address.wrapping_sub(sp) / 8) as usize);
        if let Some(words) = &window
            && index < STACK_WINDOW_WORDS - 1
        {
            return Some([*words.get(index)?, *words.get(index + 1)?]);
        }
        // SAFETY: as above.
        unsafe { bpf_probe_read_user(address as *const [u64; 2]) }.ok()
    };
    let caller = if let Some(link) = link {
        link
    } else {
        let Some([caller, _]) = pair(sp) else {
            return false;
        };
        caller
    };
    event.stack[0] = caller;
    let (lo, hi) = context_text;
    let outside = |pc: u64| hi != 0 && (pc < lo || pc >= hi);
    if outside(caller) {
        return true;
    }
    // Go keeps frame pointers: [BP] is the caller's saved BP, [BP+8] its return address.
    let mut frame = fp;
    for slot in 1..CONTEXT_STACK_DEPTH {
        if frame == 0 {
            break;
        }
        let Some([next, ret]) = pair(frame) else {
            break;
        };
        event.stack[slot] = ret;
        if outside(ret) {
            break;
        }
        // Stacks grow down: a caller's frame is always above. Anything else ends the chain.
        if next <= frame {
            break;
        }
        frame = next;
    }
    true
}

/// Every exec on the host (`ctxleak daemon` only): the new program's process, so the daemon
/// can look at it at once. No wakeup: the daemon drains this ring on its 10 ms timer, and a
/// host running many short processes must not wake it for each.
#[btf_tracepoint(function = "sched_process_exec")]
pub fn process_exec(_ctx: BtfTracePointContext) -> i32 {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    match EXECS.reserve::<ExecEvent>(0) {
        Some(mut slot) => {
            slot.write(ExecEvent { pid, _pad: 0 });
            slot.submit(u64::from(BPF_RB_NO_WAKEUP));
        }
        None => count(Counter::ExecsLost),
    }
    0
}

/// Does nothing, at the same addresses as the programs above: the floor of what probing costs.
#[uprobe]
pub fn floor(_ctx: ProbeContext) -> u32 {
    0
}

/// Clock reads at most in one [`floor_spin`] run (a bound the verifier can see): about 25 µs.
#[cfg(feature = "bench-floor")]
const FLOOR_SPIN_MAX_READS: u32 = 1024;

/// The floor, spinning on the clock for the target's `floor_spin_ns` (benchmarks only):
/// two spin lengths give what each nanosecond inside a uprobe program costs the target.
#[cfg(feature = "bench-floor")]
#[uprobe]
pub fn floor_spin(_ctx: ProbeContext) -> u32 {
    let Some((_, target)) = current_target() else {
        return 0;
    };
    let spin = u64::from(target.floor_spin_ns);
    // SAFETY: no preconditions.
    let start = unsafe { bpf_ktime_get_ns() };
    for _ in 0..FLOOR_SPIN_MAX_READS {
        // SAFETY: as above.
        if unsafe { bpf_ktime_get_ns() }.wrapping_sub(start) >= spin {
            break;
        }
    }
    0
}

/// A context event in a target process, and the process's configuration; `None` (and
/// nothing sent) for other processes. Neither timestamped nor attributed to a goroutine: the
/// daemon stamps it on receipt, and only creations need their goroutine (see
/// [`ContextEvent`]).
#[inline(always)]
fn context_change(
    kind: EventKind,
    context: u64,
    detail: u64,
) -> Option<(ContextChange, &'static TargetConfig)> {
    let (pid, target) = current_target()?;
    Some((
        ContextChange {
            kind: kind as u32,
            pid,
            context,
            detail,
        },
        target,
    ))
}

/// The current process and its configuration, if the daemon registered it; `None` for every
/// other process running a probed executable.
#[inline(always)]
fn current_target() -> Option<(u32, &'static TargetConfig)> {
    let pid = (bpf_get_current_pid_tgid() >> 32) as u32;
    // SAFETY: a map lookup by value; the entry is plain data written by the daemon.
    let target = unsafe { TARGETS.get(&pid) }?;
    Some((pid, target))
}

#[inline(always)]
fn send<T: Copy + 'static>(event: &T) {
    if EVENTS.output::<T>(event, wakeup()).is_err() {
        count(Counter::EventsLost);
    }
}

/// Sends the creation of `g`, with its parent and sites.
#[inline(always)]
fn report_created(ctx: &ProbeContext, g: u64) {
    let Some((pid, target)) = current_target() else {
        return;
    };
    match read_created(pid, g, &target.offsets) {
        Some(event) => send(&event),
        None => {
            count(Counter::ReadErrors);
            warn!(ctx, "ctxleak: cannot read g {:x} in pid {}", g, pid);
        }
    }
}

/// Wakes the daemon only once the ring is a quarter full. A wakeup per event is an IPI and a
/// context switch charged to the target's CPU, which measured more than the programs
/// themselves; the daemon drains on a short timer as well, so events still arrive within
/// milliseconds, and a burst still wakes it long before the ring overflows.
#[inline(always)]
fn wakeup() -> u64 {
    let pending = EVENTS.query(u64::from(BPF_RB_AVAIL_DATA));
    // SAFETY: a read-only global the loader sets; volatile, so it is not folded at build time.
    let size = unsafe { core::ptr::read_volatile(&EVENTS_RING_SIZE) };
    if pending.saturating_mul(4) >= size {
        u64::from(BPF_RB_FORCE_WAKEUP)
    } else {
        u64::from(BPF_RB_NO_WAKEUP)
    }
}

/// A new goroutine's event: its goid, then `parentGoid`, `gopc` and `startpc` in one read
/// of the 32 bytes from `parentGoid` (the daemon checks at attach time that they lie there).
#[inline(always)]
fn read_created(pid: u32, g: u64, offsets: &GoOffsets) -> Option<GoroutineEvent> {
    if g == 0 {
        return None;
    }
    let goid = read_u64(g, offsets.g_goid)?;
    // SAFETY: bpf_probe_read_user checks the address; a bad one returns an error.
    let block =
        unsafe { bpf_probe_read_user((g + u64::from(offsets.g_parent_goid)) as *const [u64; 4]) }
            .ok()?;
    let word = |offset: u32| {
        let index = (offset.wrapping_sub(offsets.g_parent_goid) / 8) as usize;
        block.get(index & 3).copied().unwrap_or(0)
    };
    Some(GoroutineEvent {
        header: EventHeader {
            kind: EventKind::Created as u32,
            pid,
            // SAFETY: no preconditions.
            ktime_ns: unsafe { bpf_ktime_get_ns() },
            goid,
        },
        parent_goid: block[0],
        gopc: word(offsets.g_gopc),
        startpc: word(offsets.g_startpc),
    })
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
