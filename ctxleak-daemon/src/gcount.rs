//! The runtime's own goroutine count, read from a target's memory: what `runtime.gcount`
//! (behind `runtime.NumGoroutine()`) computes, from the same inputs (see
//! [`crate::goexe::sched`]), and the goid allocator.
//!
//! A read is three system calls and a few dozen bytes plus 12 per P, whatever the number of
//! goroutines, where a scan of `allgs` ([`crate::census::take`]) reads every g. Like the
//! runtime's own, the sum is exact whenever the runtime is not moving g's between its free
//! lists meanwhile (the counts are updated one after another, under different locks): at a
//! quiescent moment it is exactly `NumGoroutine()`; under churn it can be off by the g's in
//! flight during the read, as the runtime's own can.

use crate::goexe::sched::SchedAddresses;
use crate::procmem::ProcessMemory;
use crate::tracker::Counts;

/// More Ps than any runtime has (`GOMAXPROCS` is bounded by the machine's CPUs unless set
/// higher, and the runtime caps it at 2^31 − 1, but a slice header read mid-update must not
/// make ctxleak read without limit).
const MAX_PROCS: u64 = 1 << 16;

#[derive(Debug, thiserror::Error)]
pub enum GcountError {
    #[error(
        "cannot read the runtime's goroutine counts of PID {pid} (at {address:#x}): the process may be exiting"
    )]
    Unreadable { pid: u32, address: u64 },
    #[error(
        "the runtime's goroutine counts of PID {pid} do not add up ({what}): they changed during the read"
    )]
    Inconsistent { pid: u32, what: String },
}

/// One read of the runtime's counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gcount {
    /// User goroutines (what `NumGoroutine()` says) and system ones (`sched.ngsys`).
    pub counts: Counts,
    /// `sched.goidgen`: no goroutine has a higher goid, and every P may hold up to
    /// [`GOID_CACHE_BATCH`](crate::goexe::sched::GOID_CACHE_BATCH) goids below it that it has
    /// not handed out yet.
    pub goidgen: u64,
    /// `len(allp)`: GOMAXPROCS.
    pub procs: u64,
    /// Bytes read.
    pub bytes: usize,
}

/// The runtime addresses of one process's goroutine count inputs.
#[derive(Clone, Debug)]
pub struct GcountReader {
    pid: u32,
    /// `len(allgs)`, the word after the slice's data pointer: `allglen`.
    allglen: u64,
    goidgen: u64,
    ngsys: u64,
    free: Vec<u64>,
    allp: u64,
    p_free: u64,
}

impl GcountReader {
    /// For a process whose code is loaded `bias` above the link-time addresses of `sched`;
    /// `allgs` is the runtime address of `runtime.allgs`.
    pub fn new(pid: u32, sched: &SchedAddresses, allgs: u64, bias: u64) -> Self {
        Self {
            pid,
            allglen: allgs.wrapping_add(8),
            goidgen: sched.goidgen.wrapping_add(bias),
            ngsys: sched.ngsys.wrapping_add(bias),
            free: sched
                .free
                .iter()
                .map(|address| address.wrapping_add(bias))
                .collect(),
            allp: sched.allp.wrapping_add(bias),
            p_free: sched.p_free,
        }
    }

    /// Reads the counts: `len(allgs)` minus the free lists' counts (the global one and each
    /// P's), split into `sched.ngsys` system goroutines and the rest.
    pub fn read(&self, memory: &ProcessMemory) -> Result<Gcount, GcountError> {
        let unreadable = |address| GcountError::Unreadable {
            pid: self.pid,
            address,
        };
        let mut allglen = [0u8; 8];
        let mut allp = [0u8; 16];
        let mut goidgen = [0u8; 8];
        let mut ngsys = [0u8; 4];
        let mut free = vec![[0u8; 4]; self.free.len()];
        let mut reads: Vec<(u64, &mut [u8])> = vec![
            (self.allglen, &mut allglen),
            (self.allp, &mut allp),
            (self.goidgen, &mut goidgen),
            (self.ngsys, &mut ngsys),
        ];
        reads.extend(
            self.free
                .iter()
                .copied()
                .zip(free.iter_mut())
                .map(|(address, bytes)| (address, &mut bytes[..])),
        );
        let mut bytes: usize = reads.iter().map(|(_, buffer)| buffer.len()).sum();
        if let Some(failed) = failed(&mut reads, memory) {
            return Err(unreadable(failed));
        }
        let word = |bytes: &[u8]| u64::from_le_bytes(bytes.try_into().unwrap_or_default());
        let int32 = |bytes: &[u8; 4]| i64::from(i32::from_le_bytes(*bytes));
        let (array, procs) = (word(&allp[..8]), word(&allp[8..]));
        if procs == 0 || procs > MAX_PROCS {
            return Err(GcountError::Inconsistent {
                pid: self.pid,
                what: format!("len(allp) is {procs}"),
            });
        }
        // procs <= MAX_PROCS: the cast is exact.
        let mut pointers = vec![0u8; procs as usize * 8];
        memory
            .read_exact(array, &mut pointers)
            .map_err(|_| unreadable(array))?;
        let mut p_free = vec![[0u8; 4]; pointers.len() / 8];
        let mut reads: Vec<(u64, &mut [u8])> = pointers
            .chunks_exact(8)
            .map(|pointer| word(pointer).wrapping_add(self.p_free))
            .zip(p_free.iter_mut())
            .map(|(address, bytes)| (address, &mut bytes[..]))
            .collect();
        bytes += pointers.len() + reads.len() * 4;
        if let Some(failed) = failed(&mut reads, memory) {
            return Err(unreadable(failed));
        }
        let free_total: i64 = free.iter().chain(&p_free).map(int32).sum();
        // allglen fits in an i64: allgs holds at most a few million pointers.
        let total = i64::try_from(word(&allglen)).unwrap_or(i64::MAX) - free_total;
        let system = int32(&ngsys);
        let user = total - system;
        let (Ok(user), Ok(system)) = (u64::try_from(user), u64::try_from(system)) else {
            return Err(GcountError::Inconsistent {
                pid: self.pid,
                what: format!(
                    "{total} goroutines not on a free list, {system} of them system goroutines"
                ),
            });
        };
        Ok(Gcount {
            counts: Counts { user, system },
            goidgen: word(&goidgen),
            procs,
            bytes,
        })
    }
}

/// Reads `reads`; the address of the first that failed, if any.
fn failed(reads: &mut [(u64, &mut [u8])], memory: &ProcessMemory) -> Option<u64> {
    let read = memory.read_many(reads);
    reads
        .iter()
        .zip(read)
        .find(|(_, read)| !read)
        .map(|((address, _), _)| *address)
}
