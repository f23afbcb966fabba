//! A snapshot of a target's goroutines, read from `runtime.allgs` in its memory.
//!
//! `allgs` lists every g the runtime ever made; dead ones stay in it and are reused, so a g
//! pointer is not a goroutine's identity (its goid is). Reading it costs the target nothing.

use crate::goexe::GLayout;
use crate::procmem::{MemoryError, ProcessMemory};

/// `runtime.g.atomicstatus` values (the same in Go 1.21–1.27).
const G_IDLE: u32 = 0;
const G_DEAD: u32 = 6;
/// Go 1.26+: a dead g kept for an extra M (cgo callbacks).
const G_DEAD_EXTRA: u32 = 11;
/// Set while the GC scans a goroutine's stack, on top of its state.
const G_SCAN: u32 = 0x1000;

/// Whether a g with this status is a goroutine that exists (not unused or being set up).
pub fn is_live_status(status: u32) -> bool {
    !matches!(status & !G_SCAN, G_IDLE | G_DEAD | G_DEAD_EXTRA)
}

/// The runtime's name for a `g.atomicstatus` value, as tracebacks print it.
pub fn status_name(status: u32) -> &'static str {
    match status & !G_SCAN {
        0 => "idle",
        1 => "runnable",
        2 => "running",
        3 => "syscall",
        4 => "waiting",
        6 => "dead",
        8 => "copystack",
        9 => "preempted",
        10 => "leaked",
        11 => "dead",
        _ => "unknown",
    }
}

pub const STATUS_WAITING: u32 = 4;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct GoroutineRecord {
    pub goid: u64,
    pub status: u32,
    pub parent_goid: u64,
    pub gopc: u64,
    pub startpc: u64,
    /// Index into the binary's wait reason strings; meaningful while waiting.
    pub waitreason: u8,
    pub sched_pc: u64,
    pub sched_sp: u64,
    pub sched_bp: u64,
    pub stack_hi: u64,
}

/// Most frames a stack walk follows; deeper stacks are cut.
pub const MAX_FRAMES: usize = 64;
/// Most stack bytes read per goroutine: parked goroutines rarely use more than a few KiB.
const MAX_STACK_READ: u64 = 64 << 10;

/// The return addresses of a goroutine that is not running, innermost first (runtime
/// addresses), walked through frame pointers from `g.sched`, which Go keeps on amd64. The
/// stack is read once, from `sched.sp` up to `stack.hi`, and walked in that copy. Empty for a
/// goroutine that is running (its `sched` is stale) or whose stack cannot be read.
///
/// `first_bp` is the innermost frame's frame pointer when the caller can compute it from the
/// function table (entry SP minus 8): `g.sched.bp` is stale for a goroutine in a system call
/// before Go 1.23, whose `reentersyscall` saved only `pc` and `sp`.
pub fn unwind(memory: &ProcessMemory, record: &GoroutineRecord, first_bp: Option<u64>) -> Vec<u64> {
    if record.status & !G_SCAN == 2 || record.sched_pc == 0 || record.sched_sp == 0 {
        return Vec::new();
    }
    let (low, high) = (
        record.sched_sp,
        record
            .stack_hi
            .min(record.sched_sp.saturating_add(MAX_STACK_READ)),
    );
    let Some(len) = high
        .checked_sub(low)
        .and_then(|len| usize::try_from(len).ok())
    else {
        return vec![record.sched_pc];
    };
    let mut stack = vec![0u8; len];
    if memory.read_exact(low, &mut stack).is_err() {
        return vec![record.sched_pc];
    }
    walk_frames(
        &stack,
        low,
        record.sched_pc,
        first_bp.unwrap_or(record.sched_bp),
    )
}

/// Follows the frame-pointer chain in `stack` (a copy of memory starting at `base`): at each
/// frame pointer `bp`, `[bp]` is the caller's frame pointer and `[bp + 8]` the return address.
fn walk_frames(stack: &[u8], base: u64, pc: u64, mut bp: u64) -> Vec<u64> {
    let word = |address: u64| -> Option<u64> {
        let start = usize::try_from(address.checked_sub(base)?).ok()?;
        Some(u64::from_le_bytes(
            stack.get(start..start.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    let mut pcs = vec![pc];
    while pcs.len() < MAX_FRAMES {
        let (Some(next_bp), Some(return_pc)) = (word(bp), word(bp.wrapping_add(8))) else {
            break;
        };
        if return_pc == 0 {
            break;
        }
        pcs.push(return_pc);
        // Frames grow towards higher addresses; anything else is the end of the chain.
        if next_bp <= bp {
            break;
        }
        bp = next_bp;
    }
    pcs
}

#[derive(Debug, Default)]
pub struct Census {
    /// Live goroutines, system ones included.
    pub goroutines: Vec<GoroutineRecord>,
    /// g pointers that could not be read (the slice moved under us, or memory was unmapped).
    pub unreadable: usize,
}

/// Reads every live goroutine of the target. `allgs` is the runtime address of the slice.
pub fn take(memory: &ProcessMemory, layout: &GLayout, allgs: u64) -> Result<Census, MemoryError> {
    let array = memory.read_u64(allgs)?;
    let len = memory.read_u64(allgs + 8)?;
    // Bounded: a slice header read mid-update must not make us allocate without limit.
    let len = usize::try_from(len.min(16 << 20)).unwrap_or(0);
    let mut pointers = vec![0u8; len * 8];
    memory.read_exact(array, &mut pointers)?;

    let read_len = usize::try_from(layout.read_len()).unwrap_or(512);
    let mut g = vec![0u8; read_len];
    let mut census = Census {
        goroutines: Vec::with_capacity(len),
        unreadable: 0,
    };
    for pointer in pointers.chunks_exact(8) {
        let address = u64::from_le_bytes(pointer.try_into().unwrap_or_default());
        if address == 0 {
            continue;
        }
        if memory.read_exact(address, &mut g).is_err() {
            census.unreadable += 1;
            continue;
        }
        if let Some(record) = decode(&g, layout).filter(|record| is_live_status(record.status)) {
            census.goroutines.push(record);
        }
    }
    Ok(census)
}

fn decode(g: &[u8], layout: &GLayout) -> Option<GoroutineRecord> {
    let u64_at = |offset: u64| {
        let start = usize::try_from(offset).ok()?;
        Some(u64::from_le_bytes(
            g.get(start..start + 8)?.try_into().ok()?,
        ))
    };
    let u32_at = |offset: u64| {
        let start = usize::try_from(offset).ok()?;
        Some(u32::from_le_bytes(
            g.get(start..start + 4)?.try_into().ok()?,
        ))
    };
    let u8_at = |offset: u64| g.get(usize::try_from(offset).ok()?).copied();
    Some(GoroutineRecord {
        goid: u64_at(layout.goid)?,
        status: u32_at(layout.atomicstatus)?,
        parent_goid: u64_at(layout.parent_goid)?,
        gopc: u64_at(layout.gopc)?,
        startpc: u64_at(layout.startpc)?,
        waitreason: u8_at(layout.waitreason)?,
        sched_pc: u64_at(layout.sched_pc)?,
        sched_sp: u64_at(layout.sched_sp)?,
        sched_bp: u64_at(layout.sched_bp)?,
        stack_hi: u64_at(layout.stack_hi)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walks_frame_pointers() {
        // A stack copy at 0x1000: frames at bp=0x1010 -> 0x1030 -> 0x1050 (end: next bp 0).
        let mut stack = vec![0u8; 0x60];
        let mut put =
            |at: usize, value: u64| stack[at..at + 8].copy_from_slice(&value.to_le_bytes());
        put(0x10, 0x1030);
        put(0x18, 0x4000_0010);
        put(0x30, 0x1050);
        put(0x38, 0x4000_0020);
        put(0x50, 0);
        put(0x58, 0x4000_0030);
        assert_eq!(
            walk_frames(&stack, 0x1000, 0x4000_0000, 0x1010),
            vec![0x4000_0000, 0x4000_0010, 0x4000_0020, 0x4000_0030]
        );
        // A frame pointer outside the copy ends the walk.
        assert_eq!(
            walk_frames(&stack, 0x1000, 0x4000_0000, 0x9000),
            vec![0x4000_0000]
        );
    }

    #[test]
    fn live_statuses() {
        for status in [1, 2, 3, 4, 8, 9, 10, 4 | G_SCAN] {
            assert!(is_live_status(status), "{status}");
        }
        for status in [G_IDLE, G_DEAD, G_DEAD_EXTRA, G_DEAD | G_SCAN] {
            assert!(!is_live_status(status), "{status}");
        }
    }

    #[test]
    fn decodes_fields_at_their_offsets() {
        let layout = GLayout {
            size: 96,
            atomicstatus: 8,
            goid: 16,
            parent_goid: 24,
            gopc: 32,
            startpc: 40,
            stack_hi: 48,
            sched_sp: 56,
            sched_pc: 64,
            sched_bp: 72,
            waitreason: 80,
        };
        let mut g = vec![0u8; layout.read_len() as usize];
        g[8..12].copy_from_slice(&4u32.to_le_bytes());
        g[16..24].copy_from_slice(&77u64.to_le_bytes());
        g[24..32].copy_from_slice(&1u64.to_le_bytes());
        g[32..40].copy_from_slice(&0x401000u64.to_le_bytes());
        g[40..48].copy_from_slice(&0x402000u64.to_le_bytes());
        g[80] = 19;
        let record = decode(&g, &layout).unwrap();
        assert_eq!(
            record,
            GoroutineRecord {
                goid: 77,
                status: 4,
                parent_goid: 1,
                gopc: 0x401000,
                startpc: 0x402000,
                waitreason: 19,
                ..GoroutineRecord::default()
            }
        );
        assert!(decode(&g[..20], &layout).is_none());
    }
}
