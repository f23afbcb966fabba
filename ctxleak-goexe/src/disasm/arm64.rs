//! Probe sites in the runtime code of Go arm64 binaries, decoded with `yaxpeax-arm` (a kept,
//! pure-Rust decoder of the whole A64 set, fuzzed by its author; no C to build).
//!
//! What the arm64 kernel does with a probed instruction decides what a hit costs. Linux's
//! `arm_probe_decode_insn` (arch/arm64/kernel/probes/decode-insn.c, 6.18), which uprobes use,
//! *simulates* B, BL, B.cond, CBZ/CBNZ, TBZ/TBNZ, BR/BLR/RET and ADR/ADRP in the trap handler:
//! one trap per hit. Everything else that may run out of line (loads and stores, STR/STP with
//! pre-index included, arithmetic, NOP) is single-stepped in the XOL slot: a second trap. It
//! refuses PC-relative literal loads (`LDR Xt, label`) and exclusives for uprobes outright
//! (simulating literal loads is kprobes-only), so a site is never one of those.
//!
//! Go's arm64 prologue (1.21–1.27, `go tool objdump`):
//!
//! ```text
//! MOVD 16(R28), R16          // LDR  x16, [x28, #16]: g.stackguard0
//! [SUB $N, RSP, R17]         // large frames compare SP-N
//! CMP R16, RSP (or R17)      // SUBS xzr, ...
//! BLS morestack              // B.LS: grow the stack, then restart at the entry
//! MOVD.W R30, -F(RSP)        // STR  x30, [sp, #-F]!: the frame, LR at [SP]
//! MOVD R29, -8(RSP)          // STUR x29, [sp, #-8]
//! SUB $8, RSP, R29           // FP = SP-8: [FP] the caller's FP, [FP+8] the return address
//! ```
//!
//! A probe past the `BLS` cannot fire twice for one call (stack growth restarts at the entry,
//! before it), but the instruction there is the frame store, which is stepped. So where a
//! probe reads only registers that the code after the prologue leaves alone, [`entered`]
//! moves it forward to the first simulated instruction on the straight path (see there).

use yaxpeax_arch::{Decoder as _, U8Reader};
use yaxpeax_arm::armv8::a64::{InstDecoder, Instruction, Opcode, Operand, SizeCode};

use super::{DirectCall, Reads};

/// Go's `g` register.
const G: u16 = 28;
/// `g.stackguard0`'s offset in `runtime.g`, what the prologue compares SP with.
const STACKGUARD0: i32 = 16;
/// B.LS's condition code.
const LS: u8 = 9;
/// Register 31 as a load/store base or `RegisterOrSP`: the stack pointer.
const SP: u16 = 31;
/// How far [`entered`] looks past the stack check for a simulated instruction.
const MAX_SCAN: usize = 48;

/// Every instruction of `code` (which starts at `ip`) with its address; undecodable words
/// (data in text, or an instruction yaxpeax does not know) are skipped.
fn instructions(code: &[u8], ip: u64) -> impl Iterator<Item = (u64, Instruction)> + '_ {
    let decoder = InstDecoder::default();
    (0u64..)
        .zip(code.chunks_exact(4))
        .filter_map(move |(index, word)| {
            let mut reader = U8Reader::new(word);
            let instruction = decoder.decode(&mut reader).ok()?;
            Some((ip + index * 4, instruction))
        })
}

/// Where a PC-relative branch operand at `address` goes.
fn branch_target(address: u64, instruction: &Instruction) -> Option<u64> {
    instruction
        .operands
        .iter()
        .find_map(|operand| match operand {
            Operand::PCOffset(offset) => Some(address.wrapping_add_signed(*offset)),
            _ => None,
        })
}

/// Every direct `BL` in `code` (which starts at address `ip`).
pub fn direct_calls(code: &[u8], ip: u64) -> Vec<DirectCall> {
    instructions(code, ip)
        .filter(|(_, instruction)| instruction.opcode == Opcode::BL)
        .filter_map(|(address, instruction)| {
            Some(DirectCall {
                address,
                next: address + 4,
                target: branch_target(address, &instruction)?,
            })
        })
        .collect()
}

/// The first instruction after Go's stack-bound check (`MOVD 16(R28), Rn; [SUB $N, RSP,
/// R17;] CMP; BLS morestack`), or `ip` for a function without one (nosplit). There the
/// prologue has not run: arguments, SP, FP (the caller's) and LR (the return address) are
/// those of the entry, as at x86's `PUSHQ BP`. The instruction is the `STR x30, [sp,
/// #-F]!` that makes the frame, which the kernel single-steps.
pub fn after_stack_check(code: &[u8], ip: u64) -> u64 {
    let mut check = instructions(code, ip).take(4);
    match check.next() {
        Some((_, first)) if is_stackguard_load(&first) => {}
        _ => return ip,
    }
    check
        .find(|(_, instruction)| instruction.opcode == Opcode::Bcc(LS))
        .map_or(ip, |(address, _)| address + 4)
}

/// `LDR Xn, [X28, #16]`: g.stackguard0.
fn is_stackguard_load(instruction: &Instruction) -> bool {
    instruction.opcode == Opcode::LDR
        && matches!(instruction.operands[0], Operand::Register(SizeCode::X, _))
        && instruction.operands[1] == Operand::RegPreIndex(G, STACKGUARD0, false)
}

/// Where a probe for "this function was entered" goes, given what its program `reads`.
///
/// [`Reads::Frame`] (the caller's frame: SP, FP, LR, as the creation stack walk wants them)
/// gets [`after_stack_check`]: the prologue changes SP and FP right after, and no simulated
/// instruction comes before it, so such a hit costs two traps.
///
/// Otherwise the probe goes on the first instruction the kernel simulates (a branch, CBZ,
/// ADRP...) after the stack check, when the code up to it runs straight (it is before the
/// first branch by construction, and no branch in the function lands between the check and
/// it: then each call passes it once), consists of instructions whose register writes are
/// known (loads, stores, arithmetic, NOP; anything else ends the search), and writes none of
/// the registers read ([`Reads::G`]: R28, which Go code never writes; [`Reads::Arguments`]:
/// R0 up). Failing that, [`after_stack_check`].
pub fn entered(code: &[u8], ip: u64, reads: Reads) -> u64 {
    let start = after_stack_check(code, ip);
    let read: &[u16] = match reads {
        Reads::Frame => return start,
        Reads::G => &[G],
        Reads::Arguments(count) => &[0, 1, 2, 3][..usize::from(count.min(4))],
    };
    let landings: Vec<u64> = instructions(code, ip)
        .filter(|(_, instruction)| is_branch(instruction.opcode))
        .filter_map(|(address, instruction)| branch_target(address, &instruction))
        .collect();
    let skipped = |site: u64| !landings.iter().any(|&to| to > start && to <= site);
    let offset = usize::try_from(start - ip).unwrap_or(usize::MAX);
    for (address, instruction) in
        instructions(code.get(offset..).unwrap_or_default(), start).take(MAX_SCAN)
    {
        if is_simulated(instruction.opcode) {
            return if skipped(address) { address } else { start };
        }
        match written(&instruction) {
            Some(written) if !written.iter().flatten().any(|r| read.contains(r)) => {}
            _ => return start,
        }
    }
    start
}

/// Whether the kernel simulates `opcode` (decode-insn.c: `arm_probe_decode_insn`'s branches).
fn is_simulated(opcode: Opcode) -> bool {
    is_branch(opcode) || matches!(opcode, Opcode::ADR | Opcode::ADRP)
}

fn is_branch(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::B
            | Opcode::BL
            | Opcode::Bcc(_)
            | Opcode::CBZ
            | Opcode::CBNZ
            | Opcode::TBZ
            | Opcode::TBNZ
            | Opcode::BR
            | Opcode::BLR
            | Opcode::RET
    )
}

/// The general registers `instruction` writes (at most three: two loaded, one written-back
/// base), or `None` for one whose writes this module does not model. The zero register
/// (31 as a plain register) is not a write; SP is reported as 31.
fn written(instruction: &Instruction) -> Option<[Option<u16>; 3]> {
    let register = |operand: &Operand| match *operand {
        Operand::Register(_, 31) => None,
        Operand::Register(_, r) | Operand::RegisterOrSP(_, r) => Some(r),
        _ => None,
    };
    let writeback = instruction
        .operands
        .iter()
        .find_map(|operand| match *operand {
            Operand::RegPreIndex(base, _, true) | Operand::RegPostIndex(base, _) => Some(base),
            _ => None,
        });
    let [first, second, ..] = &instruction.operands;
    use Opcode as O;
    match instruction.opcode {
        O::HINT => Some([None, None, None]),
        O::STR | O::STUR | O::STRB | O::STRH | O::STURB | O::STURH | O::STP => {
            Some([None, None, writeback])
        }
        O::LDP | O::LDPSW => Some([register(first), register(second), writeback]),
        O::LDR
        | O::LDUR
        | O::LDRB
        | O::LDRH
        | O::LDRSB
        | O::LDRSH
        | O::LDRSW
        | O::LDURB
        | O::LDURH
        | O::LDAR
        | O::LDARB
        | O::LDARH
        | O::LDAPR
        | O::ADD
        | O::ADDS
        | O::SUB
        | O::SUBS
        | O::ORR
        | O::AND
        | O::ANDS
        | O::EOR
        | O::MOVZ
        | O::MOVN
        | O::MOVK
        | O::UBFM
        | O::SBFM
        | O::CSEL => Some([register(first), None, writeback]),
        _ => None,
    }
}

/// The address of a slice variable that `code` reads both words of, as
/// [`super::slice_read_by`] on x86-64: Go addresses data with `ADRP Xn, page` then `LDR Xt,
/// [Xn, #lo]` (one word), `LDP Xt1, Xt2, [Xn, #lo]` (both) or `ADD Xn, Xn, #lo` first. The
/// lowest address whose next word is read too.
pub fn slice_read_by(code: &[u8], ip: u64) -> Option<u64> {
    let mut known = [None::<u64>; 32];
    let mut targets = Vec::new();
    for (address, instruction) in instructions(code, ip) {
        let [first, second, third, _] = instruction.operands;
        match (instruction.opcode, first, second, third) {
            (Opcode::ADRP, Operand::Register(SizeCode::X, rd), Operand::PCOffset(offset), _) => {
                known[usize::from(rd & 31)] = Some((address & !0xfff).wrapping_add_signed(offset));
                continue;
            }
            (
                Opcode::ADD,
                Operand::RegisterOrSP(SizeCode::X, rd),
                Operand::RegisterOrSP(SizeCode::X, rn),
                Operand::Immediate(lo),
            ) if rd != SP => {
                known[usize::from(rd & 31)] =
                    known[usize::from(rn & 31)].map(|page| page + u64::from(lo));
                continue;
            }
            (
                Opcode::LDR,
                Operand::Register(SizeCode::X, _),
                Operand::RegPreIndex(rn, lo, false),
                _,
            ) => targets
                .extend(known[usize::from(rn & 31)].map(|b| b.wrapping_add_signed(lo.into()))),
            (
                Opcode::LDP,
                Operand::Register(SizeCode::X, _),
                Operand::Register(SizeCode::X, _),
                Operand::RegPreIndex(rn, lo, false),
            ) => {
                if let Some(base) = known[usize::from(rn & 31)] {
                    let base = base.wrapping_add_signed(lo.into());
                    targets.extend([base, base + 8]);
                }
            }
            _ => {}
        }
        // Whatever else the instruction wrote is no longer a known address.
        for register in written(&instruction).into_iter().flatten().flatten() {
            known[usize::from(register & 31)] = None;
        }
    }
    targets
        .iter()
        .copied()
        .filter(|&base| targets.contains(&(base + 8)))
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|word| word.to_le_bytes()).collect()
    }

    // runtime.goexit1 of Go 1.21.13 (linux/arm64), as `go tool objdump` shows it.
    const GOEXIT1: &[u32] = &[
        0xf9400b90, // MOVD 16(R28), R16
        0xeb3063ff, // CMP R16, RSP
        0x54000289, // BLS 20(PC)
        0xf81c0ffe, // MOVD.W R30, -64(RSP)
        0xf81f83fd, // MOVD R29, -8(RSP)
        0xd10023fd, // SUB $8, RSP, R29
        0xb000095b, // ADRP 1216512(PC), R27
        0x39752365, // MOVBU 3400(R27), R5
        0x36000105, // TBZ $0, R5, 8(PC)
    ];

    #[test]
    fn finds_the_stack_check_and_the_first_simulated_instruction() {
        let ip = 0x4bd30;
        assert_eq!(after_stack_check(&code(GOEXIT1), ip), ip + 12);
        assert_eq!(entered(&code(GOEXIT1), ip, Reads::Frame), ip + 12);
        assert_eq!(entered(&code(GOEXIT1), ip, Reads::G), ip + 24);
        // The ADRP writes R27, read by nobody here.
        assert_eq!(entered(&code(GOEXIT1), ip, Reads::Arguments(2)), ip + 24);
    }

    #[test]
    fn large_frames_compare_below_sp() {
        // context.(*cancelCtx).cancel, Go 1.27.3: SUB $96, RSP, R17; CMP R16, R17; BLS; the
        // frame; stores of R2–R5; CBZ R2.
        let words = [
            0xf9400b90, 0xd10183f1, 0xeb10023f, 0x540019a9, 0xf8120ffe, 0xf81f83fd, 0xd10023fd,
            0xf9007fe2, 0xf90083e3, 0xf90087e4, 0xf9008be5, 0xb40017e2,
        ];
        let ip = 0x9d950;
        assert_eq!(after_stack_check(&code(&words), ip), ip + 16);
        assert_eq!(entered(&code(&words), ip, Reads::Arguments(2)), ip + 44);
    }

    #[test]
    fn a_write_to_a_read_register_keeps_the_probe_before_the_prologue() {
        // goexit1's prologue, then MOVD R0, R1 (ORR x1, xzr, x0) before a BL.
        let mut words = GOEXIT1[..6].to_vec();
        words.extend([0xaa0003e1, 0x94000013]);
        let ip = 0x1000;
        assert_eq!(entered(&code(&words), ip, Reads::Arguments(2)), ip + 12);
        assert_eq!(entered(&code(&words), ip, Reads::Arguments(1)), ip + 28);
    }

    #[test]
    fn a_branch_back_into_the_scanned_code_keeps_the_probe_before_the_prologue() {
        // goexit1's prologue, a load, then B back to the load (a loop), then a BL.
        let mut words = GOEXIT1[..6].to_vec();
        words.extend([0xf9400740, 0x17ffffff, 0x94000013]);
        let ip = 0x1000;
        // The B itself is simulated and on the straight path, but the loop lands before it.
        assert_eq!(entered(&code(&words), ip, Reads::G), ip + 12);
    }

    #[test]
    fn nosplit_functions_are_probed_at_entry() {
        // STR x30, [sp, #-16]! ; RET
        let words = [0xf81f0ffe, 0xd65f03c0];
        assert_eq!(after_stack_check(&code(&words), 0x2000), 0x2000);
        assert_eq!(entered(&code(&words), 0x2000, Reads::G), 0x2004);
    }

    #[test]
    fn finds_direct_calls() {
        // newproc.func1 of Go 1.21.13: ...; CALL runtime.newproc1 at 0x4d014.
        let words = [0xf9400f42, 0x94000013];
        assert_eq!(
            direct_calls(&code(&words), 0x4d010),
            vec![DirectCall {
                address: 0x4d014,
                next: 0x4d018,
                target: 0x4d014 + 0x13 * 4,
            }]
        );
    }

    #[test]
    fn finds_a_slice_from_its_two_loads() {
        // runtime.forEachG, Go 1.21.13: two ADRP+LDR 8 bytes apart (allgs, allglen).
        let ip = 0x44d30;
        let words = [0xb000093b, 0xf946bb61, 0xf90013e1, 0xb000093b, 0xf946bf62];
        let page = (ip & !0xfff) + 1_200_128;
        assert_eq!(slice_read_by(&code(&words), ip), Some(page + 3440));
        assert_eq!(slice_read_by(&code(&words[..2]), ip), None);
        // Go 1.27.3: ADRP; ADD; LDP reads both words at once.
        let ip = 0x54d50;
        let words = [0xd0000abb, 0x9116c37b, 0xa9400b61];
        let page = (ip & !0xfff) + 1_400_832;
        assert_eq!(slice_read_by(&code(&words), ip), Some(page + 1456));
    }
}
