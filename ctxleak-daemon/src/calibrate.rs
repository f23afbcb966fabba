//! What one probe hit costs on this host, measured once when a budget is in force.
//!
//! The budget (`--max-overhead`, [`crate::budget`]) turns probe hits into CPU time. The trap
//! is most of a hit's price and depends on the host: about 0.9 µs on this project's VMs,
//! about 0.3 µs on bare metal. So ctxleak measures it on itself: it times calls of a
//! function of its own that starts with an instruction the kernel emulates, as at the Go
//! probe sites ctxleak uses (x86-64: `PUSH RBP`; arm64: `B`, a branch the kernel simulates
//! like the ADRP, B.cond, CBZ and BL sites), then the same calls with the do-nothing program
//! attached there, trapping in ctxleak's own process only. The difference per call is the
//! trap, in a loop that does nothing else.
//!
//! That bare trap is cheaper than what a hit costs a real program (455 ns here, against
//! 0.93 µs per hit of empty programs in a net/http server, whose caches the trap disturbs),
//! so it is not the cost itself: it scales [`DEFAULT_HIT_COST`], which `cargo xtask bench`
//! measured on real programs on the host where this measurement gives [`REFERENCE_TRAP`].
//! A host whose traps are three times faster gets a hit cost three times smaller, and its
//! budget allows three times as many hits. Each timing is the best of a few rounds, so that
//! a busy host does not inflate it; it takes about 50 ms, and the detach happens off the
//! caller's thread.

use std::time::{Duration, Instant};

use crate::budget::DEFAULT_HIT_COST;
use crate::probes::Programs;

/// What [`trap_cost`] measures on the VMs where [`DEFAULT_HIT_COST`] was measured (2 cores,
/// Linux 6.18: 451–457 ns over three runs).
pub const REFERENCE_TRAP: Duration = Duration::from_nanos(455);

/// How far from the reference host a measurement may move the hit cost, either way.
const MAX_SCALE: f64 = 5.0;

/// Calls timed per round, and rounds (the fastest counts).
const CALLS: u32 = 4_000;
const ROUNDS: u32 = 5;

/// Why the trap could not be measured (the default hit cost is used instead).
#[derive(Debug, thiserror::Error)]
pub enum CalibrationError {
    #[error("ctxleak's own code is not mapped from a file")]
    NotMapped,
    #[error("cannot attach the do-nothing program to ctxleak itself")]
    Attach(#[source] crate::probes::ProbeError),
    #[error("a trap measured {trap:?} ({trapped:?} per call with the probe, {bare:?} without)")]
    Implausible {
        trap: Duration,
        trapped: Duration,
        bare: Duration,
    },
}

/// A measured trap outside this range is not believed: the default is used instead.
const PLAUSIBLE_TRAP: std::ops::Range<Duration> =
    Duration::from_nanos(50)..Duration::from_micros(50);

#[cfg(target_arch = "x86_64")]
std::arch::global_asm!(
    ".pushsection .text.ctxleak_trap_site,\"ax\",@progbits",
    ".globl ctxleak_trap_site",
    ".p2align 4",
    "ctxleak_trap_site:",
    "push rbp",
    "pop rbp",
    "ret",
    ".popsection",
);

#[cfg(target_arch = "aarch64")]
std::arch::global_asm!(
    ".pushsection .text.ctxleak_trap_site,\"ax\",%progbits",
    ".globl ctxleak_trap_site",
    ".p2align 4",
    "ctxleak_trap_site:",
    "b 1f",
    "1:",
    "ret",
    ".popsection",
);

unsafe extern "C" {
    /// x86-64 `PUSH RBP; POP RBP; RET`, arm64 `B next; RET`: a probe site like the Go ones,
    /// that does nothing.
    fn ctxleak_trap_site();
}

/// The fastest of [`ROUNDS`] rounds of [`CALLS`] calls, per call.
fn time_calls() -> Duration {
    (0..ROUNDS)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..CALLS {
                // SAFETY: the function only pushes and pops RBP (arm64: branches to its RET)
                // and returns: no arguments, no memory but its own stack slot, every register
                // as it was.
                unsafe { ctxleak_trap_site() };
            }
            started.elapsed() / CALLS
        })
        .min()
        .unwrap_or_default()
}

/// Measurements made before giving up on an implausible one: a round of calls can be slowed
/// by anything else on the host (another ctxleak calibrating on the same binary, in the
/// tests), which a second measurement a moment later usually is not.
const ATTEMPTS: u32 = 3;

/// The bare trap's price on this host, measured on ctxleak's own process (up to [`ATTEMPTS`]
/// times while the result is implausible); an error in one line if it cannot be measured.
pub fn trap_cost(probes: &mut Programs) -> Result<Duration, CalibrationError> {
    let mut attempt = 1;
    loop {
        match measure_trap(probes) {
            Err(CalibrationError::Implausible { .. }) if attempt < ATTEMPTS => attempt += 1,
            result => return result,
        }
    }
}

/// One measurement of [`trap_cost`].
fn measure_trap(probes: &mut Programs) -> Result<Duration, CalibrationError> {
    let address = ctxleak_trap_site as *const () as u64;
    let offset = crate::procmem::own_file_offset(address).ok_or(CalibrationError::NotMapped)?;
    let bare = time_calls();
    let link = probes
        .attach_floor(
            std::path::Path::new("/proc/self/exe"),
            offset,
            std::process::id(),
        )
        .map_err(CalibrationError::Attach)?;
    let trapped = time_calls();
    // Detaching waits for an RCU grace period: not on the caller's time.
    std::thread::spawn(move || drop(link));
    let trap = trapped.saturating_sub(bare);
    if PLAUSIBLE_TRAP.contains(&trap) {
        Ok(trap)
    } else {
        Err(CalibrationError::Implausible {
            trap,
            trapped,
            bare,
        })
    }
}

/// What a hit costs on this host: [`DEFAULT_HIT_COST`] scaled by the measured trap against
/// [`REFERENCE_TRAP`] (see the module's doc), or unscaled (with a warning) if the trap cannot
/// be measured.
pub fn hit_cost(probes: &mut Programs) -> Duration {
    match trap_cost(probes) {
        Ok(trap) => {
            let cost = scaled(trap);
            tracing::debug!(?trap, ?cost, "probe hit cost measured on this host");
            cost
        }
        Err(why) => {
            tracing::warn!(
                "cannot measure what a probe hit costs on this host ({}); the budget assumes {DEFAULT_HIT_COST:?} per hit",
                crate::error_line::ErrorLine(&why)
            );
            DEFAULT_HIT_COST
        }
    }
}

/// [`DEFAULT_HIT_COST`] scaled by `trap` against [`REFERENCE_TRAP`], by at most [`MAX_SCALE`].
fn scaled(trap: Duration) -> Duration {
    let scale =
        (trap.as_secs_f64() / REFERENCE_TRAP.as_secs_f64()).clamp(1.0 / MAX_SCALE, MAX_SCALE);
    DEFAULT_HIT_COST.mul_f64(scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reference_host_gets_the_benched_cost_and_others_scale_within_bounds() {
        let near = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_nanos(2);
        assert!(near(scaled(REFERENCE_TRAP), DEFAULT_HIT_COST));
        assert!(near(scaled(REFERENCE_TRAP / 3), DEFAULT_HIT_COST / 3));
        assert!(near(scaled(REFERENCE_TRAP * 2), DEFAULT_HIT_COST * 2));
        assert!(near(scaled(Duration::from_nanos(1)), DEFAULT_HIT_COST / 5));
        assert!(near(scaled(Duration::from_secs(1)), DEFAULT_HIT_COST * 5));
    }
}
