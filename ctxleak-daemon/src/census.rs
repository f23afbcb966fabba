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

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GoroutineRecord {
    pub goid: u64,
    pub status: u32,
    pub parent_goid: u64,
    pub gopc: u64,
    pub startpc: u64,
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
    Some(GoroutineRecord {
        goid: u64_at(layout.goid)?,
        status: u32_at(layout.atomicstatus)?,
        parent_goid: u64_at(layout.parent_goid)?,
        gopc: u64_at(layout.gopc)?,
        startpc: u64_at(layout.startpc)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
            size: 64,
            atomicstatus: 8,
            goid: 16,
            parent_goid: 24,
            gopc: 32,
            startpc: 40,
        };
        let mut g = vec![0u8; layout.read_len() as usize];
        g[8..12].copy_from_slice(&4u32.to_le_bytes());
        g[16..24].copy_from_slice(&77u64.to_le_bytes());
        g[24..32].copy_from_slice(&1u64.to_le_bytes());
        g[32..40].copy_from_slice(&0x401000u64.to_le_bytes());
        g[40..48].copy_from_slice(&0x402000u64.to_le_bytes());
        let record = decode(&g, &layout).unwrap();
        assert_eq!(
            record,
            GoroutineRecord {
                goid: 77,
                status: 4,
                parent_goid: 1,
                gopc: 0x401000,
                startpc: 0x402000
            }
        );
        assert!(decode(&g[..20], &layout).is_none());
    }
}
