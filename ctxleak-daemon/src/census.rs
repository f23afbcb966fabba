//! A snapshot of a target's goroutines, read from `runtime.allgs` in its memory.
//!
//! `allgs` lists every g the runtime ever made; dead ones stay in it and are reused, so a g
//! pointer is not a goroutine's identity (its goid is). Reading it costs the target nothing.

use std::cell::RefCell;

use crate::goexe::{GLayout, WaitLayout};
use crate::procmem::{MemoryError, ProcessMemory};

/// `runtime.g.atomicstatus` values (the same in Go 1.21–1.27).
const G_IDLE: u32 = 0;
const G_DEAD: u32 = 6;
/// Go 1.26+: a dead g kept for an extra M (cgo callbacks).
const G_DEAD_EXTRA: u32 = 11;
/// Set while the GC scans a goroutine's stack, on top of its state.
pub const G_SCAN: u32 = 0x1000;

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
    /// `g.trackingSeq`: changes (mod 256) whenever the goroutine has run.
    pub tracking_seq: u8,
    /// Its g's index in `runtime.allgs`, which only ever grows: a g keeps its slot for the
    /// life of the process (goroutines come and go on it).
    pub slot: u32,
    /// `g.waiting`: the first `runtime.sudog` of the channel operation it is parked in (0
    /// when there is none, or when the binary's wait layout is unknown).
    pub waiting: u64,
    /// `g.waitsince`: 0, or a GC cycle's start (`nanotime()`, CLOCK_MONOTONIC) that bounds
    /// since when it has not run (`groups::runtime_bound`); 0 when the layout is unknown.
    pub waitsince: u64,
}

/// Most frames a stack walk follows; deeper stacks are cut.
pub const MAX_FRAMES: usize = 64;
/// How far below a frame's SP its frame record (saved frame pointer, return address) may start:
/// 0 on x86-64 (the record is above SP), 8 on arm64 (see `groups::frame_record`), so the copy
/// of a stack starts that much below `sched.sp`.
const RECORD_BELOW_SP: u64 = if cfg!(target_arch = "aarch64") { 8 } else { 0 };

/// Most stack bytes read per goroutine: parked goroutines rarely use more than a few KiB.
const MAX_STACK_READ: u64 = 64 << 10;

/// The return addresses of a goroutine that is not running, innermost first (runtime
/// addresses), walked through frame pointers from `g.sched`, which Go keeps on amd64 and arm64.
/// The stack is read once, from `sched.sp` (on arm64 8 bytes below) up to `stack.hi`, and
/// walked in that copy. Empty for a
/// goroutine that is running (its `sched` is stale) or whose stack cannot be read.
///
/// `first_bp` is the innermost frame's frame pointer when the caller can compute it from the
/// function table (entry SP minus 8): `g.sched.bp` is stale for a goroutine in a system call
/// before Go 1.23, whose `reentersyscall` saved only `pc` and `sp`.
pub fn unwind(memory: &ProcessMemory, record: &GoroutineRecord, first_bp: Option<u64>) -> Vec<u64> {
    let (low, len) = match stack_range(record) {
        Ok(range) => range,
        Err(pcs) => return pcs,
    };
    thread_local! {
        /// The copy of the stack being walked, kept from one call to the next.
        static STACK: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    STACK.with_borrow_mut(|stack| {
        if stack.len() < len {
            stack.resize(len, 0);
        }
        let stack = &mut stack[..len];
        if memory.read_exact(low, stack).is_err() {
            return vec![record.sched_pc];
        }
        let mut pcs = Vec::with_capacity(16);
        walk_frames(
            &mut pcs,
            stack,
            low,
            record.sched_pc,
            first_bp.unwrap_or(record.sched_bp),
        );
        pcs
    })
}

/// The return addresses of many goroutines, one after another in one buffer (rather than a
/// `Vec` each: a census of a million goroutines would make a million small allocations).
#[derive(Debug, Default)]
pub struct Unwound {
    pcs: Vec<u64>,
    /// Where each goroutine's addresses end in `pcs`.
    ends: Vec<usize>,
}

impl Unwound {
    /// The return addresses of the `index`th goroutine (empty past the end).
    pub fn get(&self, index: usize) -> &[u64] {
        let start = index
            .checked_sub(1)
            .and_then(|before| self.ends.get(before))
            .copied()
            .unwrap_or(0);
        let end = self.ends.get(index).copied().unwrap_or(start);
        &self.pcs[start..end]
    }

    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Each goroutine's return addresses, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u64]> {
        (0..self.len()).map(|index| self.get(index))
    }
}

/// `unwind` of many goroutines, each with its `first_bp`, with the stacks read in a few large
/// batches (`ProcessMemory::read_many`) rather than one system call each: the same results
/// as calling `unwind` on each, in order.
pub fn unwind_many(
    memory: &ProcessMemory,
    goroutines: &[(&GoroutineRecord, Option<u64>)],
) -> Unwound {
    // (goroutine index, stack address, length) of the stacks to read, and (index, answer) of
    // the goroutines with nothing to read, both in index order.
    let mut stacks = Vec::with_capacity(goroutines.len());
    let mut answers = Vec::new();
    for (index, (record, _)) in goroutines.iter().enumerate() {
        match stack_range(record) {
            Ok((low, len)) => stacks.push((index, low, len)),
            Err(pcs) => answers.push((index, pcs)),
        }
    }
    let mut unwound = Unwound {
        pcs: Vec::with_capacity(goroutines.len() * 8),
        ends: Vec::with_capacity(goroutines.len()),
    };
    let mut answers = answers.into_iter().peekable();
    // Appends the answers of the goroutines before `index` that had nothing to read.
    let mut answer_before = |unwound: &mut Unwound, index: usize| {
        while let Some((_, pcs)) = answers.next_if(|&(answered, _)| answered < index) {
            unwound.pcs.extend_from_slice(&pcs);
            unwound.ends.push(unwound.pcs.len());
        }
    };
    let mut buffer = Vec::new();
    for batch in batches(&stacks, |&(_, _, len)| len) {
        let total: usize = batch.iter().map(|&(_, _, len)| len).sum();
        buffer.resize(total.max(buffer.len()), 0);
        let read = {
            let mut rest = &mut buffer[..total];
            let mut reads = Vec::with_capacity(batch.len());
            for &(_, low, len) in batch {
                let (this, next) = rest.split_at_mut(len);
                reads.push((low, this));
                rest = next;
            }
            memory.read_many(&mut reads)
        };
        let mut offset = 0;
        for (&(index, low, len), read) in batch.iter().zip(read) {
            answer_before(&mut unwound, index);
            let (record, first_bp) = goroutines[index];
            if read {
                walk_frames(
                    &mut unwound.pcs,
                    &buffer[offset..offset + len],
                    low,
                    record.sched_pc,
                    first_bp.unwrap_or(record.sched_bp),
                );
            } else {
                unwound.pcs.push(record.sched_pc);
            }
            unwound.ends.push(unwound.pcs.len());
            offset += len;
        }
        yield_between_batches();
    }
    answer_before(&mut unwound, goroutines.len());
    unwound
}

/// The part of a goroutine's stack `unwind` reads, `(address, length)`, or its answer when
/// there is nothing to read.
fn stack_range(record: &GoroutineRecord) -> Result<(u64, usize), Vec<u64>> {
    if record.status & !G_SCAN == 2 || record.sched_pc == 0 || record.sched_sp == 0 {
        return Err(Vec::new());
    }
    let (low, high) = (
        record.sched_sp.saturating_sub(RECORD_BELOW_SP),
        record
            .stack_hi
            .min(record.sched_sp.saturating_add(MAX_STACK_READ)),
    );
    high.checked_sub(low)
        .and_then(|len| usize::try_from(len).ok())
        .map(|len| (low, len))
        .ok_or_else(|| vec![record.sched_pc])
}

/// Splits `items` into consecutive batches of at most `BATCH_BYTES` bytes (by `len`), each
/// with at least one item.
fn batches<T>(items: &[T], len: impl Fn(&T) -> usize) -> impl Iterator<Item = &[T]> {
    let mut rest = items;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bytes = 0usize;
        let count = rest
            .iter()
            .take_while(|item| {
                bytes = bytes.saturating_add(len(item));
                bytes <= BATCH_BYTES
            })
            .count()
            .max(1);
        let (batch, next) = rest.split_at(count);
        rest = next;
        Some(batch)
    })
}

/// Follows the frame-pointer chain in `stack` (a copy of memory starting at `base`): at each
/// frame pointer `bp`, `[bp]` is the caller's frame pointer and `[bp + 8]` the return address.
/// Appends the return addresses to `pcs`.
fn walk_frames(pcs: &mut Vec<u64>, stack: &[u8], base: u64, pc: u64, mut bp: u64) {
    let word = |address: u64| -> Option<u64> {
        let start = usize::try_from(address.checked_sub(base)?).ok()?;
        Some(u64::from_le_bytes(
            stack.get(start..start.checked_add(8)?)?.try_into().ok()?,
        ))
    };
    let first = pcs.len();
    pcs.push(pc);
    while pcs.len() - first < MAX_FRAMES {
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
}

#[derive(Debug, Default)]
pub struct Census {
    /// Live goroutines, system ones included.
    pub goroutines: Vec<GoroutineRecord>,
    /// g pointers that could not be read (the slice moved under us, or memory was unmapped).
    pub unreadable: usize,
    /// The highest goid in any g, dead ones included (a dead g keeps the goid of the last
    /// goroutine that ran on it): about the last goid handed out, so how far it moves between
    /// two censuses bounds the goroutines created meanwhile, even those already gone.
    pub high_goid: u64,
    /// Bytes read from the target: the pointers, and the ranges of g structs.
    pub bytes: usize,
}

/// g structs this close to each other are read as one range, the bytes between them
/// included: the runtime allocates g's side by side in spans, so a census reads a few large
/// ranges rather than one small one per g.
const MAX_GAP: u64 = 2 << 10;
/// The longest range read at once.
const MAX_RANGE: u64 = 256 << 10;
/// The most bytes read in one batch of ranges (the size of the buffer they share). Batches
/// are bounded so that a census of a huge target is many short reads with pauses between
/// them ([`yield_between_batches`]) rather than one long one.
const BATCH_BYTES: usize = 2 << 20;

/// How long a census steps aside between two batches of reads.
const BATCH_PAUSE: std::time::Duration = std::time::Duration::from_micros(100);

/// Steps aside between two batches of reads. Reading a target's memory takes its
/// `mmap_lock` for reading, page run by page run; a thread of the target that maps or
/// unmaps memory meanwhile waits for the readers, and stalls that program. A pause between
/// bounded batches lets such a writer in, and lets the target's threads have the cores the
/// reads were using (on a small machine, a census's two reading threads are all of them).
/// It costs a census of 1 000 000 goroutines a few tens of milliseconds.
fn yield_between_batches() {
    std::thread::sleep(BATCH_PAUSE);
}

/// Reads every live goroutine of the target. `allgs` is the runtime address of the slice;
/// `waits` says where `g.waiting` and `g.waitsince` are, when known.
///
/// The g structs are read in batches of ranges (`ProcessMemory::read_many`), each range
/// holding g's that lie close together; a range that cannot be read is read again g by g,
/// so each g is read, or counted as unreadable, as a read of that g alone would have it.
pub fn take(
    memory: &ProcessMemory,
    layout: &GLayout,
    waits: Option<&WaitLayout>,
    allgs: u64,
) -> Result<Census, MemoryError> {
    let (array, len) = slice_header(memory, allgs)?;
    // Bounded: a slice header read mid-update must not make us allocate without limit.
    let len = usize::try_from(len.min(16 << 20)).unwrap_or(0);
    let mut pointers = vec![0u8; len * 8];
    memory.read_exact(array, &mut pointers)?;
    let addresses: Vec<u64> = pointers
        .chunks_exact(8)
        .map(|pointer| u64::from_le_bytes(pointer.try_into().unwrap_or_default()))
        .collect();

    let read_len = layout.read_len().max(
        waits
            .map_or(0, |waits| {
                waits.g_waiting.max(waits.g_waitsince).saturating_add(8)
            })
            .min(layout.size),
    );
    let read_len = usize::try_from(read_len).unwrap_or(512);
    let read_len_u64 = read_len as u64;
    // The g's by address, grouped into ranges to read; a g whose end would overflow the
    // address space is read alone (and fails).
    let mut by_address: Vec<(u64, usize)> = addresses
        .iter()
        .enumerate()
        .filter(|&(_, &address)| address != 0)
        .map(|(index, &address)| (address, index))
        .collect();
    by_address.sort_unstable();
    let mut ranges: Vec<GRange> = Vec::new();
    let mut alone = Vec::new();
    for (position, &(address, index)) in by_address.iter().enumerate() {
        let Some(end) = address.checked_add(read_len_u64) else {
            alone.push(index);
            continue;
        };
        match ranges.last_mut() {
            Some(range)
                if address <= range.end.saturating_add(MAX_GAP)
                    && end - range.start <= MAX_RANGE
                    && range.last == position =>
            {
                range.end = range.end.max(end);
                range.last = position + 1;
            }
            _ => ranges.push(GRange {
                start: address,
                end,
                first: position,
                last: position + 1,
            }),
        }
    }

    let mut records: Vec<Option<GoroutineRecord>> = vec![None; addresses.len()];
    let mut unreadable = 0;
    let mut g = vec![0u8; read_len];
    let mut read_alone = |address: u64, unreadable: &mut usize| {
        if memory.read_exact(address, &mut g).is_err() {
            *unreadable += 1;
            return None;
        }
        decode(&g, layout, waits)
    };
    let mut buffer = Vec::new();
    let mut bytes = pointers.len() + alone.len() * read_len;
    for batch in batches(&ranges, GRange::len) {
        let total: usize = batch.iter().map(GRange::len).sum();
        bytes += total;
        buffer.resize(total.max(buffer.len()), 0);
        let read = {
            let mut rest = &mut buffer[..total];
            let mut reads = Vec::with_capacity(batch.len());
            for range in batch {
                let (this, next) = rest.split_at_mut(range.len());
                reads.push((range.start, this));
                rest = next;
            }
            memory.read_many(&mut reads)
        };
        let mut offset = 0;
        for (range, read) in batch.iter().zip(read) {
            for &(address, index) in &by_address[range.first..range.last] {
                records[index] = if read {
                    let at = offset + usize::try_from(address - range.start).unwrap_or(0);
                    decode(&buffer[at..at + read_len], layout, waits)
                } else {
                    read_alone(address, &mut unreadable)
                };
            }
            offset += range.len();
        }
        yield_between_batches();
    }
    for index in alone {
        records[index] = read_alone(addresses[index], &mut unreadable);
    }
    for (slot, record) in records.iter_mut().enumerate() {
        if let Some(record) = record {
            record.slot = u32::try_from(slot).unwrap_or(u32::MAX);
        }
    }

    let high_goid = records.iter().flatten().map(|r| r.goid).max().unwrap_or(0);
    Ok(Census {
        goroutines: records
            .into_iter()
            .flatten()
            .filter(|record| is_live_status(record.status))
            .collect(),
        unreadable,
        high_goid,
        bytes,
    })
}

/// `allgs`'s (array, len), read in one go. A process caught as its runtime starts can show
/// a length with no array yet (the header is not written atomically): the header is read
/// again, and a slice with no array is empty (no goroutine exists before the first `allgadd`).
fn slice_header(memory: &ProcessMemory, allgs: u64) -> Result<(u64, u64), MemoryError> {
    let mut header = [0u8; 16];
    for _ in 0..3 {
        memory.read_exact(allgs, &mut header)?;
        let word =
            |i: usize| u64::from_le_bytes(header[i * 8..i * 8 + 8].try_into().unwrap_or_default());
        let (array, len) = (word(0), word(1));
        if array != 0 || len == 0 {
            return Ok((array, len));
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Ok((0, 0))
}

/// Adjacent g structs read as one: `[start, end)`, holding `by_address[first..last]`.
struct GRange {
    start: u64,
    end: u64,
    first: usize,
    last: usize,
}

impl GRange {
    fn len(&self) -> usize {
        usize::try_from(self.end - self.start).unwrap_or(usize::MAX)
    }
}

fn decode(g: &[u8], layout: &GLayout, waits: Option<&WaitLayout>) -> Option<GoroutineRecord> {
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
        tracking_seq: u8_at(layout.tracking_seq)?,
        slot: 0,
        waiting: waits.and_then(|w| u64_at(w.g_waiting)).unwrap_or(0),
        waitsince: waits.and_then(|w| u64_at(w.g_waitsince)).unwrap_or(0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn walked(stack: &[u8], base: u64, pc: u64, bp: u64) -> Vec<u64> {
        let mut pcs = vec![1, 2];
        walk_frames(&mut pcs, stack, base, pc, bp);
        // Appended after what was there.
        assert_eq!(pcs[..2], [1, 2]);
        pcs.split_off(2)
    }

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
            walked(&stack, 0x1000, 0x4000_0000, 0x1010),
            vec![0x4000_0000, 0x4000_0010, 0x4000_0020, 0x4000_0030]
        );
        // A frame pointer outside the copy ends the walk.
        assert_eq!(
            walked(&stack, 0x1000, 0x4000_0000, 0x9000),
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
        let layout = test_layout();
        let mut g = vec![0u8; layout.read_len() as usize];
        g[8..12].copy_from_slice(&4u32.to_le_bytes());
        g[16..24].copy_from_slice(&77u64.to_le_bytes());
        g[24..32].copy_from_slice(&1u64.to_le_bytes());
        g[32..40].copy_from_slice(&0x401000u64.to_le_bytes());
        g[40..48].copy_from_slice(&0x402000u64.to_le_bytes());
        g[80] = 19;
        g[0..8].copy_from_slice(&0xc000_1000u64.to_le_bytes());
        g[56..64].copy_from_slice(&123_456_789u64.to_le_bytes());
        let waits = WaitLayout {
            g_waiting: 0,
            g_waitsince: 56,
            sudog_c: 80,
            sudog_waitlink: 64,
        };
        let record = decode(&g, &layout, Some(&waits)).unwrap();
        assert_eq!(
            record,
            GoroutineRecord {
                goid: 77,
                status: 4,
                parent_goid: 1,
                gopc: 0x401000,
                startpc: 0x402000,
                waitreason: 19,
                waiting: 0xc000_1000,
                waitsince: 123_456_789,
                sched_sp: 123_456_789,
                ..GoroutineRecord::default()
            }
        );
        let unknown = decode(&g, &layout, None).unwrap();
        assert_eq!((unknown.waiting, unknown.waitsince), (0, 0));
        assert!(decode(&g[..20], &layout, None).is_none());
    }

    fn test_layout() -> GLayout {
        GLayout {
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
            tracking_seq: 88,
        }
    }

    /// `take` as it was before it read in batches: one read per g.
    fn take_one_by_one(
        memory: &ProcessMemory,
        layout: &GLayout,
        allgs: u64,
    ) -> Result<Census, MemoryError> {
        let array = memory.read_u64(allgs)?;
        let len = usize::try_from(memory.read_u64(allgs + 8)?.min(16 << 20)).unwrap();
        let mut pointers = vec![0u8; len * 8];
        memory.read_exact(array, &mut pointers)?;
        let mut g = vec![0u8; usize::try_from(layout.read_len()).unwrap()];
        let mut census = Census::default();
        for (slot, pointer) in pointers.chunks_exact(8).enumerate() {
            let address = u64::from_le_bytes(pointer.try_into().unwrap());
            if address == 0 {
                continue;
            }
            if memory.read_exact(address, &mut g).is_err() {
                census.unreadable += 1;
                continue;
            }
            if let Some(record) = decode(&g, layout, None).filter(|r| is_live_status(r.status)) {
                census.goroutines.push(GoroutineRecord {
                    slot: u32::try_from(slot).unwrap(),
                    ..record
                });
            }
        }
        Ok(census)
    }

    /// Writes a g with this goid and status at `at` in `memory`.
    fn put_g(memory: &mut [u8], at: usize, goid: u64, status: u32) {
        memory[at + 8..at + 12].copy_from_slice(&status.to_le_bytes());
        memory[at + 16..at + 24].copy_from_slice(&goid.to_le_bytes());
        memory[at + 32..at + 40].copy_from_slice(&(0x40_0000 + goid).to_le_bytes());
        memory[at + 80] = (goid % 40) as u8;
    }

    /// The census of a fake runtime in this very process: g's side by side, far apart, dead,
    /// unreadable, null, one only /proc/PID/mem can read (in a PROT_NONE page, which
    /// process_vm_readv refuses) and one across the end of a mapping, listed in no order.
    /// Batched reads must give what one read per g gave.
    #[test]
    fn take_reads_in_batches_what_one_read_per_g_reads() {
        let layout = test_layout();
        let stride = 96;
        let mut dense = vec![0u8; 3000 * stride];
        let mut sparse = vec![0u8; 40 * 5000];
        let mut pointers = Vec::new();
        for i in 0..3000 {
            put_g(
                &mut dense,
                i * stride,
                1000 + i as u64,
                if i % 5 == 0 { 6 } else { 4 },
            );
            pointers.push(dense.as_ptr() as u64 + (i * stride) as u64);
        }
        for i in 0..40 {
            put_g(&mut sparse, i * 5000, 9000 + i as u64, 1);
            pointers.push(sparse.as_ptr() as u64 + (i * 5000) as u64);
        }
        // Three pages: the second PROT_NONE, the third unmapped.
        let page = 4096;
        // SAFETY: a fresh anonymous mapping, used only through the raw pointer below.
        let pages = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                3 * page,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(pages, libc::MAP_FAILED);
        let base = pages as u64;
        {
            // SAFETY: the first two pages are mapped and writable, and nothing else uses them.
            let bytes = unsafe { std::slice::from_raw_parts_mut(pages.cast::<u8>(), 2 * page) };
            put_g(bytes, page - 48, 7001, 4);
            put_g(bytes, page + 100, 7002, 4);
            put_g(bytes, 2 * page - 82, 7003, 4);
        }
        // SAFETY: both calls change only the mapping made above.
        unsafe {
            assert_eq!(
                libc::munmap(pages.cast::<u8>().add(2 * page).cast(), page),
                0
            );
            assert_eq!(
                libc::mprotect(pages.cast::<u8>().add(page).cast(), page, libc::PROT_NONE),
                0
            );
        }
        pointers.extend([
            base + page as u64 - 48,
            base + page as u64 + 100,
            base + 2 * page as u64 - 82,
        ]);
        pointers.extend([0, 16, 0, u64::MAX - 8]);
        // A fixed shuffle, so allgs is in no address order.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        for i in (1..pointers.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            pointers.swap(i, usize::try_from(state % (i as u64 + 1)).unwrap());
        }
        let header = [
            pointers.as_ptr() as u64,
            pointers.len() as u64,
            pointers.len() as u64,
        ];
        let allgs = header.as_ptr() as u64;

        let memory = ProcessMemory::open(std::process::id()).unwrap();
        let batched = take(&memory, &layout, None, allgs).unwrap();
        let reference = take_one_by_one(&memory, &layout, allgs).unwrap();
        // SAFETY: unmaps the two pages still mapped; nothing refers to them any more.
        unsafe { libc::munmap(pages, 2 * page) };

        assert_eq!(batched.goroutines, reference.goroutines);
        assert_eq!(batched.unreadable, reference.unreadable);
        // 2400 live of the dense ones, 40 sparse, 7001 and 7002 (through /proc/PID/mem);
        // unreadable: 7003 (across the unmapped page), 16 and u64::MAX - 8.
        let goids: std::collections::BTreeSet<u64> =
            batched.goroutines.iter().map(|r| r.goid).collect();
        assert_eq!(batched.goroutines.len(), 2400 + 40 + 2);
        assert!(goids.contains(&7001) && goids.contains(&7002) && !goids.contains(&7003));
        assert_eq!(batched.unreadable, 3);
        std::hint::black_box((&dense, &sparse, &pointers, &header));
    }

    /// `unwind_many` gives what `unwind` gives for each goroutine.
    #[test]
    fn unwind_many_matches_unwind() {
        // 300 stacks of 256 bytes, each with frames at +0x10 -> +0x30 -> +0x50 (end).
        let mut stacks = vec![0u8; 300 * 256];
        let base = stacks.as_ptr() as u64;
        for i in 0..300usize {
            let at = i * 256;
            let address = base + at as u64;
            let mut put = |offset: usize, value: u64| {
                stacks[at + offset..at + offset + 8].copy_from_slice(&value.to_le_bytes());
            };
            put(0x10, address + 0x30);
            put(0x18, 0x4000_0010 + i as u64);
            put(0x30, address + 0x50);
            put(0x38, 0x4000_0020);
            put(0x50, 0);
            put(0x58, 0x4000_0030);
        }
        let mut records = Vec::new();
        for i in 0..300u64 {
            let sp = base + i * 256;
            records.push(GoroutineRecord {
                goid: i,
                status: match i % 10 {
                    1 => 2, // running: no stack
                    _ => 4,
                },
                sched_pc: if i % 10 == 2 { 0 } else { 0x4000_0000 + i },
                sched_sp: match i % 10 {
                    3 => 16, // unreadable
                    _ => sp,
                },
                sched_bp: sp + 0x10,
                stack_hi: match i % 10 {
                    4 => sp - 8, // below sp
                    _ => sp + 256,
                },
                ..GoroutineRecord::default()
            });
        }
        let memory = ProcessMemory::open(std::process::id()).unwrap();
        let requests: Vec<(&GoroutineRecord, Option<u64>)> = records
            .iter()
            .map(|r| (r, (r.goid % 10 == 5).then_some(r.sched_sp + 0x30)))
            .collect();
        let many: Vec<Vec<u64>> = unwind_many(&memory, &requests)
            .iter()
            .map(<[u64]>::to_vec)
            .collect();
        let one_by_one: Vec<Vec<u64>> = requests
            .iter()
            .map(|&(record, first_bp)| unwind(&memory, record, first_bp))
            .collect();
        assert_eq!(many, one_by_one);
        assert_eq!(
            many[0],
            vec![0x4000_0000, 0x4000_0010, 0x4000_0020, 0x4000_0030]
        );
        assert_eq!(many[5], vec![0x4000_0005, 0x4000_0020, 0x4000_0030]);
        assert!(many[1].is_empty() && many[2].is_empty());
        assert_eq!(many[3], vec![0x4000_0003]);
        assert_eq!(many[4], vec![0x4000_0004]);
        std::hint::black_box(&stacks);
    }
}
