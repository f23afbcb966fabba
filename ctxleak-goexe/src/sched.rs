//! Where the inputs of the runtime's own goroutine count live: what `runtime.gcount` (behind
//! `runtime.NumGoroutine`) subtracts from `allglen`, and the goid allocator, found in the
//! runtime's machine code so that stripped binaries have them too.
//!
//! `gcount` is `allglen - sched.gFree.n - Σ allp[i].gFree.n - sched.ngsys` in Go 1.21–1.24,
//! and the same with the global free list's count split in two (`sched.gFree.stack.size` and
//! `sched.gFree.noStack.size`) and each P's named `gFree.size` from 1.25 (Go 1.26 adds
//! `gcount(includeSys)`; `NumGoroutine` still subtracts `ngsys`). `gcount` itself is inlined
//! into its callers (`NumGoroutine`, runtime/metrics, runtime/pprof), none of which a program
//! must link, so its inputs are taken from functions every Go binary has, with the
//! [`derive`](crate::derive) interpreter on amd64 and [`disasm::arm64::read`] on arm64 (Go
//! 1.21–1.27 on both, checked against the symbols of every release, and on amd64 against
//! `runtime.NumGoroutine()` on live processes of every release):
//!
//! | input | function | what the code does (amd64; arm64) |
//! |---|---|---|
//! | `sched.goidgen` (u64) | `newproc1` | `sched.goidgen.Add(_GoidCacheBatch)`: the one `LOCK XADD` of 16 to 8 bytes of a global; `LDADDAL` of a register holding 16 to an `ADRP`+`ADD` address |
//! | `sched.ngsys` (i32) | `newproc1` | `sched.ngsys.Add(1)`: the one `LOCK XADD` of 1 to 4 bytes of a global; the same with `LDADDALW` and 1 |
//! | the global free list's count(s) (i32) | `gfput(pp, gp)` | `sched.gFree.n += inc` (1.21–1.24), or `pushAll` adding to `stack.size` and `noStack.size` (1.25+): `ADD` of 4 bytes to a global, one or two; a 4-byte load of a global, an `ADD`, and a store back |
//! | a P's free list count (i32) | `gfput` | `for pp.gFree.n >= 32`: a u32 of `pp` (RAX; R0, reloaded from its spill after a call) compared with 32 |
//! | `runtime.allp` (`[]*p`) | its symbol; stripped: `forEachPInternal` (1.22+) or `forEachP` (1.21) | ranges over it: both words of a global slice |
//!
//! `allglen` is `len(allgs)` (the runtime stores one right after the other, under `allglock`):
//! the reader takes the length from the `allgs` slice header it knows already.

use super::derive::{AccessKind, DeriveError, Runtime, Value, one};
use super::disasm::{self, Isa};
use super::pclntab::Pclntab;

/// Why the inputs of the goroutine count could not be found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot find {what} in {function}: {why}")]
pub struct SchedError {
    pub what: &'static str,
    pub function: &'static str,
    pub why: String,
}

impl From<DeriveError> for SchedError {
    fn from(error: DeriveError) -> Self {
        Self {
            what: error.field,
            function: error.function,
            why: error.why,
        }
    }
}

/// Link-time addresses of the runtime's goroutine count inputs.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct SchedAddresses {
    /// `sched.goidgen`, a u64: the last goid handed to a P's cache (Ps take goids in batches
    /// of 16, `_GoidCacheBatch`).
    pub goidgen: u64,
    /// `sched.ngsys`, an i32: live system goroutines (and, in cgo programs, the dead g's kept
    /// for extra Ms).
    pub ngsys: u64,
    /// The global free list's counts, i32 each: one (1.21–1.24) or two (1.25+).
    pub free: Vec<u64>,
    /// `runtime.allp`, a `[]*p`.
    pub allp: u64,
    /// The offset of a P's free list count (i32) in `runtime.p`.
    pub p_free: u64,
}

/// How many goids a P takes from `sched.goidgen` at once (`_GoidCacheBatch`, the same in Go
/// 1.21–1.27): what `goidgen` can be ahead of the goids handed out, per P.
pub const GOID_CACHE_BATCH: u64 = 16;

/// The largest offset accepted for a P's field (`runtime.p` is about 10 KB in Go 1.21–1.27).
const MAX_P_OFFSET: i64 = 64 << 10;

/// Finds the goroutine count's inputs in the runtime's code (`isa`'s: x86-64 by the
/// [`derive`](crate::derive) interpreter, arm64 by [`disasm::arm64::read`]). `read` gives
/// the bytes at a link-time address; `allp_symbol` is `runtime.allp`'s address when the
/// binary has symbols.
pub fn sched_addresses<'a>(
    pclntab: &'a Pclntab,
    read: &'a dyn Fn(u64, u64) -> Option<&'a [u8]>,
    allp_symbol: Option<u64>,
    isa: Isa,
) -> Result<SchedAddresses, SchedError> {
    let runtime = Runtime { pclntab, read, isa };
    let Found {
        goidgen,
        ngsys,
        mut free,
        p_free,
    } = match isa {
        Isa::X86_64 => x86_64(&runtime)?,
        Isa::Aarch64 => arm64(&runtime)?,
    };
    free.sort_unstable();
    free.dedup();
    if free.is_empty() || free.len() > 2 {
        return Err(SchedError {
            what: "sched.gFree",
            function: GFPUT,
            why: format!(
                "{} ADDs of 4 bytes to globals, not the one or two counts of the global free list",
                free.len()
            ),
        });
    }
    if free
        .iter()
        .any(|&address| address == ngsys || address == goidgen)
    {
        return Err(SchedError {
            what: "sched.gFree",
            function: GFPUT,
            why: format!("a count at {free:x?} is also sched.ngsys or sched.goidgen"),
        });
    }
    let p_free = u64::try_from(p_free)
        .ok()
        .filter(|&offset| offset < MAX_P_OFFSET as u64)
        .ok_or_else(|| SchedError {
            what: "p.gFree",
            function: GFPUT,
            why: format!("offset {p_free} is not inside a p"),
        })?;

    let allp = match allp_symbol {
        Some(address) => address,
        None => {
            let names = ["runtime.forEachPInternal", "runtime.forEachP"];
            let found = names.iter().find_map(|name| {
                let (entry, code) = runtime.function(name, "allp").ok()?;
                isa.slice_read_by(code, entry)
            });
            found.ok_or_else(|| SchedError {
                what: "runtime.allp",
                function: "runtime.forEachPInternal",
                why: "neither it nor runtime.forEachP reads both words of a global slice".into(),
            })?
        }
    };
    Ok(SchedAddresses {
        goidgen,
        ngsys,
        free,
        allp,
        p_free,
    })
}

const NEWPROC1: &str = "runtime.newproc1";
const GFPUT: &str = "runtime.gfput";

/// What each instruction set's reading finds; [`sched_addresses`] checks it.
struct Found {
    goidgen: u64,
    ngsys: u64,
    /// The global free list's counts, maybe repeated.
    free: Vec<u64>,
    /// The offset of a P's free list count, not yet checked.
    p_free: i64,
}

/// x86-64: traced by the [`derive`](crate::derive) interpreter.
fn x86_64(runtime: &Runtime<'_>) -> Result<Found, SchedError> {
    // The address of a global that `access` touches.
    let global = |base: &Value, offset: i64| match base {
        Value::Address(address) => address.checked_add_signed(offset),
        _ => None,
    };

    let newproc1 = runtime.trace(NEWPROC1, "sched.goidgen")?;
    // The globals that newproc1 adds `added` to atomically, `size` bytes wide.
    let xadd = |size: u8, added: i64| {
        newproc1
            .accesses
            .iter()
            .filter(move |access| {
                access.kind == AccessKind::AtomicAdd
                    && access.size == size
                    && access.stored == Some(Value::Const(added))
            })
            .filter_map(|access| global(&access.base, access.offset))
    };
    let goidgen = one(
        xadd(8, GOID_CACHE_BATCH as i64),
        "sched.goidgen",
        NEWPROC1,
        "LOCK XADD of 16 to 8 bytes of a global",
    )?;
    let ngsys = one(
        xadd(4, 1),
        "sched.ngsys",
        NEWPROC1,
        "LOCK XADD of 1 to 4 bytes of a global",
    )?;

    let gfput = runtime.trace(GFPUT, "sched.gFree")?;
    let free: Vec<u64> = gfput
        .accesses
        .iter()
        .filter(|access| access.kind == AccessKind::Add && access.size == 4)
        .filter_map(|access| global(&access.base, access.offset))
        .collect();
    // for pp.gFree.n >= 32 { ... }: a u32 of pp (RAX) compared with 32.
    let p_free = one(
        gfput
            .tests
            .iter()
            .filter_map(|(value, immediate)| match value {
                Value::Loaded {
                    base,
                    offset,
                    size: 4,
                } if **base == Value::Arg(0) && *immediate == 32 => Some(*offset),
                _ => None,
            }),
        "p.gFree",
        GFPUT,
        "comparison of a u32 of pp (RAX) with 32",
    )?;
    Ok(Found {
        goidgen,
        ngsys,
        free,
        p_free,
    })
}

/// arm64: the same patterns read by [`disasm::arm64::read`]: in `newproc1`, `LDADD`s of
/// the constants 16 and 1 to globals (the `LDAXR`/`STLXR` loop beside each, for CPUs
/// without ARMv8.1 atomics, adds the same); in `gfput`, 4-byte globals stored with what was
/// loaded from them plus something, and a u32 of pp (R0, through its stack spill) compared
/// with 32.
fn arm64(runtime: &Runtime<'_>) -> Result<Found, SchedError> {
    let (entry, code) = runtime.function(NEWPROC1, "sched.goidgen")?;
    let newproc1 = disasm::arm64::read(code, entry);
    let adds = |size: u8, added: u64| {
        newproc1
            .atomic_adds
            .iter()
            .filter(move |add| add.size == size && add.added == added)
            .map(|add| add.address)
            .collect::<std::collections::BTreeSet<u64>>()
    };
    let goidgen = one(
        adds(8, GOID_CACHE_BATCH),
        "sched.goidgen",
        NEWPROC1,
        "LDADD of 16 to 8 bytes of a global",
    )?;
    let ngsys = one(
        adds(4, 1),
        "sched.ngsys",
        NEWPROC1,
        "LDADD of 1 to 4 bytes of a global",
    )?;
    let (entry, code) = runtime.function(GFPUT, "sched.gFree")?;
    let gfput = disasm::arm64::read(code, entry);
    let p_free = one(
        gfput
            .compares
            .iter()
            .filter(|(_, immediate)| *immediate == 32)
            .filter_map(|(field, _)| *field)
            .collect::<std::collections::BTreeSet<i64>>(),
        "p.gFree",
        GFPUT,
        "comparison of a u32 of pp (R0) with 32",
    )?;
    Ok(Found {
        goidgen,
        ngsys,
        free: gfput.counts_added_to,
        p_free,
    })
}
