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
pub(crate) fn instructions(code: &[u8], ip: u64) -> impl Iterator<Item = (u64, Instruction)> + '_ {
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
pub(crate) fn branch_target(address: u64, instruction: &Instruction) -> Option<u64> {
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

/// What a register holds, as far as [`read`] knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Value {
    Unknown,
    Const(u64),
    /// The address of a global: `ADRP Xn, page`, then maybe `ADD Xn, Xn, #lo`.
    Address(u64),
    /// R0 as at the entry: the first argument (`pp` of `gfput`).
    FirstArgument,
    /// `size` bytes loaded from a global.
    Global {
        address: u64,
        size: u8,
    },
    /// `size` bytes loaded from the first argument plus `offset`.
    ArgumentField {
        offset: i64,
        size: u8,
    },
    /// A sum with `size` bytes loaded from the global at `address`.
    SumWith {
        address: u64,
        size: u8,
    },
}

/// An atomic add of a constant to a global (`LDADD`, `LDADDAL`...: Go's `Xadd` on ARMv8.1
/// atomics; the `LDAXR`/`STLXR` loop beside it for older CPUs adds the same constant).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AtomicAdd {
    /// 4 or 8 bytes.
    pub size: u8,
    pub address: u64,
    pub added: u64,
}

/// What a straight read of a function's code (branches not followed, registers tracked
/// through `ADRP`/`ADD`, register moves, loads and 8-byte stack spills; a call forgets them)
/// gives away about the globals it uses. Go addresses data with `ADRP Xn, page` then `LDR
/// Xt, [Xn, #lo]`, `LDP Xt1, Xt2, [Xn, #lo]` or `ADD Xn, Xn, #lo` first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Reading {
    /// Every global address formed by `ADRP` + `ADD` (x86: a RIP-relative `LEA`).
    pub addresses: Vec<u64>,
    /// Every 8-byte word of a global loaded (`LDR Xt`; `LDP` loads two).
    pub words_loaded: Vec<u64>,
    pub atomic_adds: Vec<AtomicAdd>,
    /// 4-byte globals stored with what was loaded from them plus something (`count += n`).
    pub counts_added_to: Vec<u64>,
    /// Every compare with an immediate (`CMP Rn, #imm`, Go's `CMPW $imm, Rn`): the 4-byte
    /// field of the first argument compared (its offset), or `None` for anything else.
    pub compares: Vec<(Option<i64>, u64)>,
}

/// Reads `code` (which starts at `ip`) as [`Reading`] says.
pub fn read(code: &[u8], ip: u64) -> Reading {
    let mut registers = [Value::Unknown; 32];
    registers[0] = Value::FirstArgument;
    let mut slots: Vec<(i32, Value)> = Vec::new();
    let mut reading = Reading::default();
    for (address, instruction) in instructions(code, ip) {
        // A register operand's value (a register shifted by nothing included).
        let value = |operand: &Operand| match *operand {
            Operand::Register(_, 31) | Operand::RegShift(_, 0, _, 31) => Value::Const(0),
            Operand::Register(_, r)
            | Operand::RegisterOrSP(_, r)
            | Operand::RegShift(_, 0, _, r)
                if r < 31 =>
            {
                registers[usize::from(r)]
            }
            _ => Value::Unknown,
        };
        let [first, second, third, _] = instruction.operands;
        // What the instruction leaves in its first operand's register, when modelled.
        let mut result = None;
        match (instruction.opcode, first, second, third) {
            (Opcode::ADRP, _, Operand::PCOffset(offset), _) => {
                result = Some(Value::Address(
                    (address & !0xfff).wrapping_add_signed(offset),
                ));
            }
            (Opcode::ADD, _, _, Operand::Immediate(lo)) => {
                result = Some(match value(&second) {
                    Value::Address(base) => {
                        let formed = base.wrapping_add(u64::from(lo));
                        reading.addresses.push(formed);
                        Value::Address(formed)
                    }
                    Value::Global { address, size } => Value::SumWith { address, size },
                    _ => Value::Unknown,
                });
            }
            (Opcode::ADD, _, _, _) => {
                let sum =
                    [value(&second), value(&third)]
                        .into_iter()
                        .find_map(|value| match value {
                            Value::Global { address, size } => {
                                Some(Value::SumWith { address, size })
                            }
                            _ => None,
                        });
                result = Some(sum.unwrap_or(Value::Unknown));
            }
            // MOV: ORR Rd, ZR, #imm / Rm; MOVZ.
            (Opcode::ORR, _, Operand::Register(_, 31), Operand::Imm64(imm)) => {
                result = Some(Value::Const(imm));
            }
            (Opcode::ORR, _, Operand::Register(_, 31), Operand::Immediate(imm)) => {
                result = Some(Value::Const(imm.into()));
            }
            (Opcode::ORR, _, Operand::Register(_, 31), Operand::RegShift(_, 0, _, _)) => {
                result = Some(value(&third));
            }
            (Opcode::MOVZ, _, Operand::ImmShift(imm, shift), _) => {
                result = Some(Value::Const(u64::from(imm) << shift));
            }
            (Opcode::SUBS, Operand::Register(_, 31), _, Operand::Immediate(imm)) => {
                let field = match value(&second) {
                    Value::ArgumentField { offset, size: 4 } => Some(offset),
                    _ => None,
                };
                reading.compares.push((field, imm.into()));
            }
            (
                Opcode::LDR | Opcode::LDRSW | Opcode::LDUR,
                Operand::Register(size, _),
                Operand::RegPreIndex(base, offset, false),
                _,
            ) => {
                let size = if instruction.opcode == Opcode::LDRSW || size == SizeCode::W {
                    4
                } else {
                    8
                };
                result = Some(if base == SP {
                    slots
                        .iter()
                        .rev()
                        .find(|(slot, _)| *slot == offset && size == 8)
                        .map_or(Value::Unknown, |(_, value)| *value)
                } else {
                    match registers[usize::from(base & 31)] {
                        Value::Address(page) => {
                            let address = page.wrapping_add_signed(offset.into());
                            if size == 8 {
                                reading.words_loaded.push(address);
                            }
                            Value::Global { address, size }
                        }
                        Value::FirstArgument => Value::ArgumentField {
                            offset: offset.into(),
                            size,
                        },
                        _ => Value::Unknown,
                    }
                });
            }
            (
                Opcode::LDP,
                Operand::Register(SizeCode::X, _),
                Operand::Register(SizeCode::X, _),
                Operand::RegPreIndex(base, offset, false),
            ) => {
                if let Value::Address(page) = registers[usize::from(base & 31)] {
                    let address = page.wrapping_add_signed(offset.into());
                    reading
                        .words_loaded
                        .extend([address, address.wrapping_add(8)]);
                }
            }
            (
                Opcode::STR | Opcode::STUR,
                Operand::Register(size, _),
                Operand::RegPreIndex(base, offset, false),
                _,
            ) => {
                if base == SP {
                    if size == SizeCode::X {
                        slots.push((offset, value(&first)));
                    }
                } else if let (Value::Address(page), SizeCode::W) =
                    (registers[usize::from(base & 31)], size)
                {
                    let stored = page.wrapping_add_signed(offset.into());
                    if value(&first)
                        == (Value::SumWith {
                            address: stored,
                            size: 4,
                        })
                    {
                        reading.counts_added_to.push(stored);
                    }
                }
            }
            (
                Opcode::LDADD(_),
                Operand::Register(size, _),
                _,
                Operand::RegPreIndex(base, 0, false),
            ) => {
                if let (Value::Const(added), Value::Address(address)) =
                    (value(&first), registers[usize::from(base & 31)])
                {
                    reading.atomic_adds.push(AtomicAdd {
                        size: if size == SizeCode::X { 8 } else { 4 },
                        address,
                        added,
                    });
                }
                if let Operand::Register(_, rt) = second
                    && rt < 31
                {
                    registers[usize::from(rt)] = Value::Unknown;
                }
            }
            _ => {}
        }
        if matches!(instruction.opcode, Opcode::BL | Opcode::BLR) {
            registers = [Value::Unknown; 32];
            continue;
        }
        match written(&instruction) {
            Some(writes) => {
                for register in writes.into_iter().flatten() {
                    if register == SP {
                        slots.clear();
                    } else {
                        registers[usize::from(register & 31)] = Value::Unknown;
                    }
                }
            }
            // Not modelled: its first register operand is taken as written.
            None => match first {
                Operand::Register(_, r) | Operand::RegisterOrSP(_, r) if r < 31 => {
                    registers[usize::from(r)] = Value::Unknown;
                }
                _ => {}
            },
        }
        if let (Some(result), Operand::Register(_, rd) | Operand::RegisterOrSP(_, rd)) =
            (result, first)
            && rd < 31
        {
            registers[usize::from(rd)] = result;
        }
    }
    reading
}

/// The address of a slice variable that `code` reads both words of, as
/// [`super::slice_read_by`] on x86-64 (see [`read`]): the lowest address whose next word is
/// read too.
pub fn slice_read_by(code: &[u8], ip: u64) -> Option<u64> {
    let loaded = read(code, ip).words_loaded;
    loaded
        .iter()
        .copied()
        .filter(|&base| loaded.contains(&(base.wrapping_add(8))))
        .min()
}

/// What a bounds-checked table lookup like `runtime.waitReason.String` gives away, as
/// [`super::table_lookup`] on x86-64: the bound of its first compare with a small immediate
/// (`CMPW $N, Rn`), and every `ADRP`+`ADD` address (one of them is the table).
pub fn table_lookup(code: &[u8], ip: u64) -> (Option<u8>, Vec<u64>) {
    let reading = read(code, ip);
    let bound = reading
        .compares
        .iter()
        .find_map(|&(_, bound)| u8::try_from(bound).ok());
    (bound, reading.addresses)
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

    #[test]
    fn reads_a_table_lookup() {
        // runtime.waitReason.String, Go 1.27.3: UBFX; CMPW $47, R2; BCC; ADRP; ADD (the
        // string "unknown wait reason"); MOVD $19, R1; RET; UBFX; ADRP; ADD (the table); ...
        let ip = 0x64ed0;
        let words = [
            0xd3401c02, 0x7100bc5f, 0x540000a3, 0xd0000260, 0x911dec00, 0xd2800261, 0xd65f03c0,
            0xd3401c02, 0xf0000903, 0x910b8063, 0x8b021062, 0xa9400440, 0xd65f03c0,
        ];
        assert_eq!(
            table_lookup(&code(&words), ip),
            (
                Some(47),
                vec![0x64000 + 319_488 + 1915, 0x64000 + 1_191_936 + 736]
            )
        );
    }

    #[test]
    fn reads_atomic_adds_counts_and_compares() {
        // newproc1, Go 1.21.13: MOVD $16, R2 (ORR); ADRP; ADD $1728; LDADDAL R2, R4, (R3).
        let ip = 0x4c804;
        let words = [0xb27c03e2, 0xd00007e3, 0x911b0063, 0xf8e20064];
        let goidgen = 0x4c000 + 1_040_384 + 1728;
        assert_eq!(
            read(&code(&words), ip).atomic_adds,
            vec![AtomicAdd {
                size: 8,
                address: goidgen,
                added: 16
            }]
        );
        // gfput, Go 1.21.13: pp spilled, a call, pp reloaded; MOVW 2472(R0), R2; CMPW $32,
        // R2. Then sched.gFree.n += inc: ADRP; MOVW 1912(R27), R1; MOVW 36(RSP), R2; ADD R1,
        // R2, R1; ADRP; MOVW R1, 1912(R27).
        let ip = 0x4cb78;
        let words = [
            0xf9003fe0, 0x94003332, 0xf9403fe0, 0xb989a802, 0x7100805f, 0xd00007fb, 0xb9877b61,
            0xb98027e2, 0x8b010041, 0xd00007fb, 0xb9077b61,
        ];
        let reading = read(&code(&words), ip);
        assert_eq!(reading.compares, vec![(Some(2472), 32)]);
        let page = ((ip + 20) & !0xfff) + 1_040_384;
        assert_eq!(reading.counts_added_to, vec![page + 1912]);
    }
}
