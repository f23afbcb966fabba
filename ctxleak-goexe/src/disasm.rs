//! Finds probe addresses inside Go runtime functions by decoding their machine code.
//!
//! Offsets inside functions differ between Go releases and builds, so they are found at attach
//! time, never hard-coded. x86-64 code is decoded here (iced-x86), arm64 code in [`arm64`];
//! [`Isa`] picks one by the ELF's machine.

pub mod arm64;

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, OpKind, Register};

/// One direct `CALL rel32` in decoded code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectCall {
    /// The CALL instruction itself.
    pub address: u64,
    /// The instruction after it, where the call returns.
    pub next: u64,
    pub target: u64,
}

/// Every direct `CALL` in `code` (which starts at address `ip`).
pub fn direct_calls(code: &[u8], ip: u64) -> impl Iterator<Item = DirectCall> + '_ {
    Decoder::with_ip(64, code, ip, DecoderOptions::NONE)
        .into_iter()
        .filter(|instruction| {
            instruction.flow_control() == FlowControl::Call
                && instruction.op0_kind() == OpKind::NearBranch64
        })
        .map(|instruction| DirectCall {
            address: instruction.ip(),
            next: instruction.next_ip(),
            target: instruction.near_branch_target(),
        })
}

/// The instruction sets whose code ctxleak places probes in, by the ELF's machine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Isa {
    X86_64,
    Aarch64,
}

/// What a "function entered" probe's program reads, which decides how far into the function
/// it may go (see [`Isa::entered`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reads {
    /// Only the current g (`runtime.goexit1`, `runtime.gopark`).
    G,
    /// The first `n` integer arguments (`(*cancelCtx).cancel`: the context and a flag).
    Arguments(u8),
    /// Arguments and the caller's frame as at the entry: SP, FP and the return address
    /// (`propagateCancel`, whose program walks the creation stack).
    Frame,
}

impl Isa {
    /// The instruction set of an ELF file's machine, if ctxleak places probes in it.
    pub fn of(architecture: object::Architecture) -> Option<Self> {
        match architecture {
            object::Architecture::X86_64 => Some(Self::X86_64),
            object::Architecture::Aarch64 => Some(Self::Aarch64),
            _ => None,
        }
    }

    /// Every direct call (x86 `CALL rel32`, arm64 `BL`) in `code`, which starts at `ip`.
    pub fn direct_calls(self, code: &[u8], ip: u64) -> Vec<DirectCall> {
        match self {
            Self::X86_64 => direct_calls(code, ip).collect(),
            Self::Aarch64 => arm64::direct_calls(code, ip),
        }
    }

    /// One creation site per direct call of `newproc1` in `code` (which starts at `ip`).
    ///
    /// When the next direct call is `runqput` (as in `runtime.newproc.func1`, the path of
    /// every `go` statement: `runqput(pp, newg, true)`), the probe goes on that call, which
    /// the kernel emulates (x86 `CALL`, arm64 `BL`), and reads the new g from its second
    /// argument. Otherwise it goes on the instruction after the call of `newproc1` and reads
    /// its result; that instruction is usually a load, which the kernel must single-step out
    /// of line: a second trap per goroutine. Either way the goroutine is not on a run queue
    /// yet, so its creation is always reported before it can exit.
    pub fn creation_sites(
        self,
        code: &[u8],
        ip: u64,
        newproc1: u64,
        runqput: Option<u64>,
    ) -> Vec<CreationSite> {
        sites_from_calls(&self.direct_calls(code, ip), newproc1, runqput)
    }

    /// Where a probe for "this function was entered" goes. x86-64: [`after_stack_check`],
    /// whatever the program reads (the `PUSHQ BP` there is emulated: one trap). arm64:
    /// [`arm64::entered`], the first simulated instruction the registers read survive to.
    pub fn entered(self, code: &[u8], ip: u64, reads: Reads) -> u64 {
        match self {
            Self::X86_64 => after_stack_check(code, ip),
            Self::Aarch64 => arm64::entered(code, ip, reads),
        }
    }

    /// The bound and candidate tables of a bounds-checked table lookup (see [`table_lookup`]).
    pub fn table_lookup(self, code: &[u8], ip: u64) -> (Option<u8>, Vec<u64>) {
        match self {
            Self::X86_64 => table_lookup(code, ip),
            Self::Aarch64 => arm64::table_lookup(code, ip),
        }
    }

    /// The slice variable `code` reads both words of (see [`slice_read_by`]).
    pub fn slice_read_by(self, code: &[u8], ip: u64) -> Option<u64> {
        match self {
            Self::X86_64 => slice_read_by(code, ip),
            Self::Aarch64 => arm64::slice_read_by(code, ip),
        }
    }
}

/// Which register holds the new g where a [`CreationSite`] is probed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub enum NewGoroutineIn {
    /// Right after the call of `runtime.newproc1`: its result (RAX; arm64 R0).
    Result,
    /// On the call of `runtime.runqput(pp, gp, next)`: its second argument (RBX; arm64 R1).
    SecondArgument,
}

/// Where the probe for a goroutine creation goes, and where it reads the new g.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct CreationSite {
    pub address: u64,
    pub register: NewGoroutineIn,
}

/// One creation site per call of `newproc1` in `calls` (see [`Isa::creation_sites`]).
fn sites_from_calls(
    calls: &[DirectCall],
    newproc1: u64,
    runqput: Option<u64>,
) -> Vec<CreationSite> {
    calls
        .iter()
        .enumerate()
        .filter(|(_, call)| call.target == newproc1)
        .map(|(index, call)| match calls.get(index + 1) {
            Some(next) if Some(next.target) == runqput => CreationSite {
                address: next.address,
                register: NewGoroutineIn::SecondArgument,
            },
            _ => CreationSite {
                address: call.next,
                register: NewGoroutineIn::Result,
            },
        })
        .collect()
}

/// The address to probe for "this function was entered": the first instruction after Go's
/// stack-bound check (`CMPQ SP, 16(R14)` or, for large frames, `LEAQ -N(SP), R12; CMPQ R12,
/// 16(R14)`, then `JBE morestack`), or the entry itself for functions without one (nosplit).
///
/// Probing there instead of at the entry costs the target about a quarter (the kernel emulates
/// the `PUSHQ BP` found there instead of single-stepping the `CMP`), and it cannot fire twice
/// for one call, since a stack growth restarts the function at its entry, before this point.
pub fn after_stack_check(code: &[u8], ip: u64) -> u64 {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut saw_stack_compare = false;
    // The check is always within the first three instructions.
    for _ in 0..4 {
        if !decoder.can_decode() {
            break;
        }
        decoder.decode_out(&mut instruction);
        if is_stack_bound_compare(&instruction) {
            saw_stack_compare = true;
        } else if saw_stack_compare && instruction.flow_control() == FlowControl::ConditionalBranch
        {
            return instruction.next_ip();
        }
    }
    ip
}

/// The address of a slice variable that `code` reads both words of: two RIP-relative 8-byte
/// loads whose targets differ by 8 (the data pointer at +0, the length at +8). This is how
/// `runtime.forEachG`, which ranges over `runtime.allgs`, gives away where `allgs` lives in a
/// binary without symbols.
pub fn slice_read_by(code: &[u8], ip: u64) -> Option<u64> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut targets = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if matches!(
            instruction.code(),
            Code::Mov_r64_rm64 | Code::Cmp_r64_rm64 | Code::Cmp_rm64_r64
        ) && instruction.is_ip_rel_memory_operand()
        {
            targets.push(instruction.ip_rel_memory_address());
        }
    }
    targets
        .iter()
        .copied()
        .filter(|&base| targets.contains(&(base + 8)))
        .min()
}

/// What a bounds-checked table lookup like `runtime.waitReason.String` gives away: the bound
/// it compares its index against (`CMP AL, imm8`), and every RIP-relative `LEA` target (one of
/// them is the table).
pub fn table_lookup(code: &[u8], ip: u64) -> (Option<u8>, Vec<u64>) {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    let mut bound = None;
    let mut leas = Vec::new();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.code() == Code::Cmp_AL_imm8 && bound.is_none() {
            bound = Some(instruction.immediate8());
        } else if instruction.code() == Code::Lea_r64_m && instruction.is_ip_rel_memory_operand() {
            leas.push(instruction.ip_rel_memory_address());
        }
    }
    (bound, leas)
}

/// `CMP reg, [R14 + 0x10]` (or `CMP [R14+0x10], reg`): R14 is g and 0x10 is `g.stackguard0`.
fn is_stack_bound_compare(instruction: &Instruction) -> bool {
    matches!(instruction.code(), Code::Cmp_r64_rm64 | Code::Cmp_rm64_r64)
        && (0..2).any(|operand| instruction.op_kind(operand) == OpKind::Memory)
        && instruction.memory_base() == Register::R14
        && instruction.memory_displacement64() == 0x10
}

#[cfg(test)]
mod tests {
    use super::*;

    // From runtime.goexit1 of a Go 1.27 binary:
    //   cmp 0x10(%r14),%rsp ; jbe +0x88 ; push %rbp ; mov %rsp,%rbp
    const GOEXIT1: &[u8] = &[
        0x49, 0x3b, 0x66, 0x10, 0x0f, 0x86, 0x88, 0x00, 0x00, 0x00, 0x55, 0x48, 0x89, 0xe5,
    ];

    #[test]
    fn skips_the_stack_check() {
        assert_eq!(after_stack_check(GOEXIT1, 0x44fce0), 0x44fcea);
    }

    #[test]
    fn nosplit_functions_are_probed_at_entry() {
        // push %rbp ; mov %rsp,%rbp ; ret
        assert_eq!(
            after_stack_check(&[0x55, 0x48, 0x89, 0xe5, 0xc3], 0x1000),
            0x1000
        );
    }

    #[test]
    fn finds_a_slice_from_its_two_loads() {
        // mov rax, [rip+0x100] ; mov rcx, [rip+0xf9] (0x108 from the start) ; ret
        let ip = 0x1000u64;
        let code = [
            0x48, 0x8b, 0x05, 0xf9, 0x00, 0x00, 0x00, // next ip 0x1007 -> 0x1100
            0x48, 0x8b, 0x0d, 0xfa, 0x00, 0x00, 0x00, // next ip 0x100e -> 0x1108
            0xc3,
        ];
        assert_eq!(slice_read_by(&code, ip), Some(0x1100));
        // Only one of the two words: not a slice read.
        assert_eq!(slice_read_by(&code[..7], ip), None);
    }

    #[test]
    fn reads_a_table_lookup() {
        // runtime.waitReason.String from Go 1.27: cmp $0x2f,%al ; jb ; lea (rip) ; mov ; ret ;
        // movzbl ; shl ; lea (rip)
        let ip = 0x4588e0u64;
        let code = [
            0x3c, 0x2f, 0x72, 0x0d, 0x48, 0x8d, 0x05, 0x8c, 0x9e, 0x04, 0x00, 0xbb, 0x13, 0x00,
            0x00, 0x00, 0xc3, 0x0f, 0xb6, 0xc8, 0x48, 0xc1, 0xe1, 0x04, 0x48, 0x8d, 0x15, 0x21,
            0x3a, 0x12, 0x00,
        ];
        assert_eq!(
            table_lookup(&code, ip),
            (Some(0x2f), vec![0x4a2777, 0x57c320])
        );
    }

    #[test]
    fn probes_the_call_to_runqput_after_newproc1_or_the_instruction_after_it() {
        // call rel32 to 0x2000 (newproc1) ; mov %rax,%rbx ; call rel32 to 0x3000 ; nop
        let ip = 0x1000u64;
        let rel = |from_next: u64, to: u64| ((to as i64 - from_next as i64) as i32).to_le_bytes();
        let mut code = vec![0xe8];
        code.extend_from_slice(&rel(ip + 5, 0x2000));
        code.extend_from_slice(&[0x48, 0x89, 0xc3, 0xe8]);
        code.extend_from_slice(&rel(ip + 13, 0x3000));
        code.push(0x90);
        // 0x3000 is runqput: its CALL, reading RBX.
        assert_eq!(
            Isa::X86_64.creation_sites(&code, ip, 0x2000, Some(0x3000)),
            vec![CreationSite {
                address: ip + 8,
                register: NewGoroutineIn::SecondArgument
            }]
        );
        // Something else follows: after newproc1's CALL, reading RAX.
        assert_eq!(
            Isa::X86_64.creation_sites(&code, ip, 0x2000, Some(0x4000)),
            vec![CreationSite {
                address: ip + 5,
                register: NewGoroutineIn::Result
            }]
        );
        assert_eq!(
            Isa::X86_64.creation_sites(&code, ip, 0x3000, None),
            vec![CreationSite {
                address: ip + 13,
                register: NewGoroutineIn::Result
            }]
        );
        assert!(
            Isa::X86_64
                .creation_sites(&code, ip, 0x4000, None)
                .is_empty()
        );
    }
}
