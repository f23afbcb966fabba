//! Go's register ABI (ABIInternal) read from a uprobe's registers, one accessor per role, for
//! the architecture the programs are built for: aya-build compiles this crate with
//! `--cfg bpf_target_arch="…"` set to the daemon's target architecture
//! (`CARGO_CFG_TARGET_ARCH` of ctxleak-daemon's build script), so an x86-64 `ctxleak` embeds
//! x86-64 accessors and an arm64 one arm64 accessors.
//!
//! | role | x86-64 | arm64 |
//! |---|---|---|
//! | integer arguments 0, 1, 2 | RAX, RBX, RCX | R0, R1, R2 |
//! | current goroutine (`g`) | R14 | R28 |
//! | stack pointer | RSP | SP |
//! | frame pointer | RBP | R29 |
//! | return address at a function's entry | at [SP] | in the link register R30 |
//!
//! The kernel hands arm64 uprobe programs `struct user_pt_regs { regs[31], sp, pc, pstate }`
//! (`bpf_user_pt_regs_t`), x86-64 ones `struct pt_regs`. Go's argument registers go on (x86-64:
//! RDI, RSI, R8–R11; arm64: R3–R15), but no program reads them.

use aya_ebpf::programs::ProbeContext;

#[cfg(not(any(bpf_target_arch = "x86_64", bpf_target_arch = "aarch64")))]
compile_error!(
    "ctxleak's eBPF programs know Go's registers on x86_64 and aarch64 only: build ctxleak for one of them"
);

#[cfg(bpf_target_arch = "x86_64")]
mod arch {
    use aya_ebpf::bindings::pt_regs;

    pub type Regs = pt_regs;

    #[inline(always)]
    pub fn arg0(regs: &Regs) -> u64 {
        regs.rax
    }
    #[inline(always)]
    pub fn arg1(regs: &Regs) -> u64 {
        regs.rbx
    }
    #[inline(always)]
    pub fn arg2(regs: &Regs) -> u64 {
        regs.rcx
    }
    #[inline(always)]
    pub fn g(regs: &Regs) -> u64 {
        regs.r14
    }
    #[inline(always)]
    pub fn sp(regs: &Regs) -> u64 {
        regs.rsp
    }
    #[inline(always)]
    pub fn fp(regs: &Regs) -> u64 {
        regs.rbp
    }
    /// A CALL pushed it: it is at [SP], not in a register.
    #[inline(always)]
    pub fn link(_: &Regs) -> Option<u64> {
        None
    }
}

#[cfg(bpf_target_arch = "aarch64")]
mod arch {
    use aya_ebpf::bindings::user_pt_regs;

    pub type Regs = user_pt_regs;

    #[inline(always)]
    pub fn arg0(regs: &Regs) -> u64 {
        regs.regs[0]
    }
    #[inline(always)]
    pub fn arg1(regs: &Regs) -> u64 {
        regs.regs[1]
    }
    #[inline(always)]
    pub fn arg2(regs: &Regs) -> u64 {
        regs.regs[2]
    }
    #[inline(always)]
    pub fn g(regs: &Regs) -> u64 {
        regs.regs[28]
    }
    #[inline(always)]
    pub fn sp(regs: &Regs) -> u64 {
        regs.sp
    }
    #[inline(always)]
    pub fn fp(regs: &Regs) -> u64 {
        regs.regs[29]
    }
    /// BL leaves the return address in R30; the prologue stores it only after the stack check.
    #[inline(always)]
    pub fn link(regs: &Regs) -> Option<u64> {
        Some(regs.regs[30])
    }
}

/// A uprobe's registers, read by Go ABI role.
pub struct GoRegs<'a>(&'a arch::Regs);

impl<'a> GoRegs<'a> {
    #[inline(always)]
    pub fn of(ctx: &'a ProbeContext) -> Self {
        // SAFETY: the kernel hands uprobe programs a valid, readable register frame, laid out
        // as `arch::Regs` on the architecture this object was built for (see the module doc).
        Self(unsafe { &*ctx.regs.cast::<arch::Regs>() })
    }

    /// The first integer argument (or result, after a call returns).
    #[inline(always)]
    pub fn arg0(&self) -> u64 {
        arch::arg0(self.0)
    }

    #[inline(always)]
    pub fn arg1(&self) -> u64 {
        arch::arg1(self.0)
    }

    #[inline(always)]
    pub fn arg2(&self) -> u64 {
        arch::arg2(self.0)
    }

    /// The running goroutine's `g`.
    #[inline(always)]
    pub fn g(&self) -> u64 {
        arch::g(self.0)
    }

    #[inline(always)]
    pub fn sp(&self) -> u64 {
        arch::sp(self.0)
    }

    /// The frame pointer: the caller's, before the probed function's prologue has run.
    #[inline(always)]
    pub fn fp(&self) -> u64 {
        arch::fp(self.0)
    }

    /// At a function's entry (before its prologue): the return address when a register holds
    /// it (arm64's link register), `None` where the call pushed it at [SP] (x86-64).
    #[inline(always)]
    pub fn link(&self) -> Option<u64> {
        arch::link(self.0)
    }
}
