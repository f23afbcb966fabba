//! The arm64 half of [`super`]'s abstract interpreter: the same [`Trace`] (accesses, calls,
//! tests, in terms of [`Value`]) from A64 code decoded with `yaxpeax-arm`, so that every
//! pattern and cross-check of the derivation is shared by both architectures.
//!
//! Go's arm64 ABIInternal passes integer arguments in R0, R1, R2, ... and returns in R0; the
//! current g is R28, the frame pointer R29, the link register R30, and R27 the assembler's
//! scratch register. The prologue allocates the frame with a pre-indexed store
//! (`MOVD.W R30, -F(RSP)`) or, for large frames, `SUB $F, RSP, R20; ...; MOVD R20, RSP`; the
//! arguments are spilled above the frame (`MOVD R0, F+8(RSP)`). Loads and stores take an
//! immediate offset (`LDR`, `STR`, `LDRB`, `STRB`, `LDP`, `STP`, ..., pre- and
//! post-indexed); globals are addressed with `ADRP` then `ADD` or an offset; atomics are
//! `CAS`, `LDADD`, `SWP` (ARMv8.1) beside an `LDAXR`/`STLXR` loop, and `LDAR`/`STLR`.
//! `TST $imm`, `CMP $imm` and `CBZ`/`CBNZ` (a test against zero) are the recorded tests.

use yaxpeax_arm::armv8::a64::{Instruction, Opcode, Operand, SizeCode};

use super::{Access, AccessKind, Call, Callee, Paths, Place, State, Trace, Value, clobber_slots};
use crate::disasm::arm64::{branch_target, instructions};

/// Go's g register.
const G: usize = 28;
/// The frame pointer, which a call keeps.
const FP: usize = 29;
/// The buffer pointer `runtime.gcWriteBarrier{1..8}` returns.
const WRITE_BARRIER_BUFFER: usize = 25;
/// The assembler's scratch register, which any assembly may use.
const SCRATCH: usize = 27;
/// Register 31: SP as a base or `RegisterOrSP`, the zero register otherwise.
const R31: u16 = 31;

/// Follows `code` (which starts at `ip`) once, in address order, as [`super::trace`] does
/// x86-64 code: forward branches carry their state to their target, backward ones are not
/// followed, and `callee` says what a direct call does to the registers.
pub(super) fn trace(code: &[u8], ip: u64, callee: &dyn Fn(u64) -> Callee) -> Trace {
    let mut regs: [Value; 32] = std::array::from_fn(|_| Value::Unknown);
    for (n, value) in regs.iter_mut().take(8).enumerate() {
        // n < 8: the cast is exact.
        *value = Value::Arg(n as u8);
    }
    regs[G] = Value::G;
    let mut st = State::entry(regs);
    let mut paths = Paths::<32>::new();
    let mut frame_sp: Option<i64> = None;
    let mut out = Trace::default();
    for (address, instruction) in instructions(code, ip) {
        paths.arrive(address, &mut st);
        let opcode = instruction.opcode;
        // Padding (NOPs after a branch) does not make the code after it reachable.
        paths.falls_through = (paths.falls_through || opcode != Opcode::HINT)
            && !matches!(opcode, Opcode::B | Opcode::BR | Opcode::RET);
        if is_jump(opcode)
            && let Some(target) = branch_target(address, &instruction)
            && target > address
        {
            paths.branch(target, &st);
        }
        if matches!(opcode, Opcode::BL | Opcode::BLR) {
            let target = if opcode == Opcode::BL {
                branch_target(address, &instruction).unwrap_or(0)
            } else {
                0
            };
            out.calls.push(Call {
                target,
                args: [st.regs[0].clone(), st.regs[1].clone(), st.regs[2].clone()],
            });
            match callee(target) {
                Callee::WriteBarrier => {
                    st.regs[WRITE_BARRIER_BUFFER] = Value::Unknown;
                    st.regs[SCRATCH] = Value::Unknown;
                    continue;
                }
                Callee::NoReturn => paths.falls_through = false,
                Callee::Normal => {}
            }
            // ABIInternal: every register but g and the frame pointer is the callee's.
            for (index, value) in st.regs.iter_mut().enumerate() {
                if index != G && index != FP {
                    *value = Value::Unknown;
                }
            }
            st.regs[0] = Value::Returned(target);
            continue;
        }
        if opcode == Opcode::RET {
            // The code after a RET runs in the function's frame (or is its stack-growth tail).
            st.sp = frame_sp.unwrap_or(0);
            continue;
        }
        step(&instruction, address, &mut st, &mut frame_sp, &mut out);
    }
    out
}

/// What one instruction (not a call or return) does to `st`, and what `out` records of it.
fn step(
    instruction: &Instruction,
    address: u64,
    st: &mut State<32>,
    frame_sp: &mut Option<i64>,
    out: &mut Trace,
) {
    let [first, second, third, _] = instruction.operands;
    let opcode = instruction.opcode;
    // The value the instruction leaves in its first operand's register, when modelled.
    let mut result: Option<Value> = None;
    match opcode {
        Opcode::ADRP | Opcode::ADR => {
            if let Operand::PCOffset(offset) = second {
                let base = if opcode == Opcode::ADRP {
                    address & !0xfff
                } else {
                    address
                };
                result = Some(Value::Address(base.wrapping_add_signed(offset)));
            }
        }
        Opcode::ADD | Opcode::SUB | Opcode::ADDS | Opcode::SUBS => {
            let immediate = match third {
                Operand::Immediate(n) => Some(i64::from(n)),
                Operand::ImmShift(n, shift) if shift < 32 => Some(i64::from(n) << shift),
                _ => None,
            };
            match immediate {
                // CMP $imm, Rn (SUBS ZR, Rn, #imm)
                Some(n) if opcode == Opcode::SUBS && matches!(first, Operand::Register(_, R31)) => {
                    out.tests.push((operand_value(st, &second), n));
                }
                Some(n) => {
                    let n = if matches!(opcode, Opcode::SUB | Opcode::SUBS) {
                        n.wrapping_neg()
                    } else {
                        n
                    };
                    result = Some(match operand_value(st, &second) {
                        // ADRP then ADD: one link-time address.
                        Value::Address(base) => Value::Address(base.wrapping_add_signed(n)),
                        other => other.plus(n),
                    });
                }
                None => {}
            }
        }
        // TST $imm, Rn (ANDS ZR, Rn, #imm)
        Opcode::ANDS if matches!(first, Operand::Register(_, R31)) => {
            let immediate = match third {
                Operand::Imm64(n) => i64::try_from(n).ok(),
                Operand::Immediate(n) => Some(i64::from(n)),
                _ => None,
            };
            if let Some(n) = immediate {
                out.tests.push((operand_value(st, &second), n));
            }
        }
        // MOV: ORR Rd, ZR, #imm / Rm
        Opcode::ORR if matches!(second, Operand::Register(_, R31)) => {
            result = match third {
                Operand::Imm64(n) => i64::try_from(n).ok().map(Value::Const),
                Operand::Immediate(n) => Some(Value::Const(i64::from(n))),
                Operand::RegShift(_, 0, _, _) => Some(operand_value(st, &third)),
                _ => None,
            };
        }
        Opcode::MOVZ => {
            if let Operand::ImmShift(n, shift) = second
                && shift < 48
            {
                result = Some(Value::Const(i64::from(n) << shift));
            }
        }
        Opcode::CBZ | Opcode::CBNZ => out.tests.push((operand_value(st, &first), 0)),
        _ => {}
    }
    if let Some(access) = memory_access(opcode) {
        let (memory, registers) = match access.operands {
            1 => (second, [first, Operand::Nothing]),
            _ => (third, [first, second]),
        };
        let size = access
            .size
            .or_else(|| match registers[access.operands - 1] {
                Operand::Register(SizeCode::W, _) => Some(4),
                Operand::Register(SizeCode::X, _) => Some(8),
                _ => None,
            })
            .unwrap_or(8);
        let place = place(st, &memory);
        // CAS Rs, Rt and STLXR Ws, Rt store Rt, and Rs or Ws receives the old value or the
        // status; LDADD Rs, Rt and SWP Rs, Rt add or store Rs, and Rt receives the old value.
        let (exchanged, receives) = match (access.what, access.kind) {
            (What::Exchange, AccessKind::AtomicAdd | AccessKind::Other) => (first, second),
            _ => (second, first),
        };
        // Each register of the access, with its place (a pair's second word is `size` on).
        let transfers: Vec<(Operand, i64)> = match access.what {
            What::Load | What::Store => registers
                .iter()
                .take(access.operands)
                .zip([0, i64::from(size)])
                .map(|(register, at)| (*register, at))
                .collect(),
            What::Exchange | What::StoreExclusive => vec![(exchanged, 0)],
        };
        for (register, at) in transfers {
            let stored = match access.what {
                What::Load => None,
                _ => Some(operand_value(st, &register)),
            };
            match &place {
                Place::Slot(slot) => {
                    let slot = slot.saturating_add(at);
                    match access.what {
                        What::Load => set(st, &register, slots_value(st, slot)),
                        _ => {
                            clobber_slots(&mut st.slots, slot, size);
                            if let Some(stored) = stored {
                                st.slots.insert(slot, stored);
                            }
                        }
                    }
                }
                Place::Memory(base, offset) => {
                    let offset = offset.saturating_add(at);
                    out.accesses.push(Access {
                        kind: access.kind,
                        base: base.clone(),
                        offset,
                        size,
                        stored,
                    });
                    if access.what == What::Load {
                        set(st, &register, Value::loaded(base, offset, size));
                    }
                }
                Place::Elsewhere => {
                    if access.what == What::Load {
                        set(st, &register, Value::Unknown);
                    }
                }
            }
        }
        if matches!(access.what, What::Exchange | What::StoreExclusive) {
            set(st, &receives, Value::Unknown);
        }
        writeback(st, &memory, frame_sp);
        return;
    }
    // Whatever the model does not say, the first register operand is written (a branch's,
    // a compare's into ZR, a TBZ's are read only).
    let reads_only = is_jump(opcode) || matches!(opcode, Opcode::HINT);
    if !reads_only {
        match first {
            Operand::RegisterOrSP(_, R31) => {
                if let Some(Value::Stack(at)) = result {
                    st.sp = at;
                    frame_sp.get_or_insert(at);
                }
            }
            Operand::Register(_, r) | Operand::RegisterOrSP(_, r) if r < R31 => {
                st.regs[usize::from(r)] = result.unwrap_or(Value::Unknown);
            }
            _ => {}
        }
    }
}

/// The value of a register operand (the zero register is 0, SP the entry's plus `st.sp`).
fn operand_value(st: &State<32>, operand: &Operand) -> Value {
    match *operand {
        Operand::Register(_, R31) | Operand::RegShift(_, 0, _, R31) => Value::Const(0),
        Operand::RegisterOrSP(_, R31) => Value::Stack(st.sp),
        Operand::Register(_, r) | Operand::RegisterOrSP(_, r) | Operand::RegShift(_, 0, _, r) => st
            .regs
            .get(usize::from(r))
            .cloned()
            .unwrap_or(Value::Unknown),
        _ => Value::Unknown,
    }
}

/// Sets a register operand's register (not ZR or SP).
fn set(st: &mut State<32>, operand: &Operand, value: Value) {
    if let Operand::Register(_, r) | Operand::RegisterOrSP(_, r) = *operand
        && r < R31
    {
        st.regs[usize::from(r)] = value;
    }
}

fn slots_value(st: &State<32>, slot: i64) -> Value {
    st.slots.get(&slot).cloned().unwrap_or(Value::Unknown)
}

/// Where a memory operand points (before any write-back).
fn place(st: &State<32>, memory: &Operand) -> Place {
    let (base, offset) = match *memory {
        Operand::RegPreIndex(base, offset, _) => (base, i64::from(offset)),
        Operand::RegPostIndex(base, _) => (base, 0),
        _ => return Place::Elsewhere,
    };
    let base = if base == R31 {
        Value::Stack(st.sp)
    } else {
        st.regs
            .get(usize::from(base))
            .cloned()
            .unwrap_or(Value::Unknown)
    };
    match base {
        Value::Stack(at) => at.checked_add(offset).map_or(Place::Elsewhere, Place::Slot),
        Value::Address(address) => {
            Place::Memory(Value::Address(address.wrapping_add_signed(offset)), 0)
        }
        Value::Unknown => Place::Elsewhere,
        other => {
            let (base, at) = other.split();
            at.checked_add(offset)
                .map_or(Place::Elsewhere, |offset| Place::Memory(base, offset))
        }
    }
}

/// A pre- or post-indexed access's write-back to its base register.
fn writeback(st: &mut State<32>, memory: &Operand, frame_sp: &mut Option<i64>) {
    let (base, offset) = match *memory {
        Operand::RegPreIndex(base, offset, true) | Operand::RegPostIndex(base, offset) => {
            (base, i64::from(offset))
        }
        _ => return,
    };
    if base == R31 {
        st.sp = st.sp.wrapping_add(offset);
        frame_sp.get_or_insert(st.sp);
    } else if let Some(register) = st.regs.get_mut(usize::from(base)) {
        *register = register.clone().plus(offset);
    }
}

/// What a memory instruction moves.
#[derive(Clone, Copy, PartialEq, Eq)]
enum What {
    /// Into its register operands.
    Load,
    /// From its register operands.
    Store,
    /// `CAS Rs, Rt, [Xn]` (stores Rt), `LDADD Rs, Rt, [Xn]` (adds Rs), `SWP`: the first
    /// register receives the old value.
    Exchange,
    /// `STXR`/`STLXR Ws, Rt, [Xn]`.
    StoreExclusive,
}

/// How a memory instruction is modelled.
struct MemoryAccess {
    what: What,
    kind: AccessKind,
    /// Register operands before the memory one (1 or 2).
    operands: usize,
    /// Bytes per register, when the opcode says (else the register's width).
    size: Option<u8>,
}

fn memory_access(opcode: Opcode) -> Option<MemoryAccess> {
    use Opcode as O;
    let access = |what, kind, operands, size| {
        Some(MemoryAccess {
            what,
            kind,
            operands,
            size,
        })
    };
    let (load, store, other) = (What::Load, What::Store, AccessKind::Other);
    match opcode {
        O::LDR | O::LDUR | O::LDAR | O::LDAPR | O::LDAXR | O::LDXR => access(load, other, 1, None),
        O::LDRB | O::LDURB | O::LDRSB | O::LDURSB | O::LDARB | O::LDAXRB | O::LDXRB => {
            access(load, other, 1, Some(1))
        }
        O::LDRH | O::LDURH | O::LDRSH | O::LDURSH | O::LDARH | O::LDAXRH | O::LDXRH => {
            access(load, other, 1, Some(2))
        }
        O::LDRSW | O::LDURSW => access(load, other, 1, Some(4)),
        O::LDP | O::LDNP | O::LDXP | O::LDAXP => access(load, other, 2, None),
        O::LDPSW => access(load, other, 2, Some(4)),
        O::STR | O::STUR | O::STLR => access(store, other, 1, None),
        O::STRB | O::STURB | O::STLRB => access(store, other, 1, Some(1)),
        O::STRH | O::STURH | O::STLRH => access(store, other, 1, Some(2)),
        O::STP | O::STNP => access(store, other, 2, None),
        O::STXR | O::STLXR => access(What::StoreExclusive, other, 2, None),
        O::STXRB | O::STLXRB => access(What::StoreExclusive, other, 2, Some(1)),
        O::STXRH | O::STLXRH => access(What::StoreExclusive, other, 2, Some(2)),
        O::CAS(_) => access(What::Exchange, AccessKind::CompareAndSwap, 2, None),
        O::CASB(_) => access(What::Exchange, AccessKind::CompareAndSwap, 2, Some(1)),
        O::CASH(_) => access(What::Exchange, AccessKind::CompareAndSwap, 2, Some(2)),
        O::LDADD(_) => access(What::Exchange, AccessKind::AtomicAdd, 2, None),
        O::LDADDB(_) => access(What::Exchange, AccessKind::AtomicAdd, 2, Some(1)),
        O::LDADDH(_) => access(What::Exchange, AccessKind::AtomicAdd, 2, Some(2)),
        O::SWP(_) => access(What::Exchange, other, 2, None),
        O::SWPB(_) => access(What::Exchange, other, 2, Some(1)),
        O::SWPH(_) => access(What::Exchange, other, 2, Some(2)),
        _ => None,
    }
}

/// A branch within the function, whose target the state is carried to: not a call (`BL`,
/// `BLR`: modelled as calls) nor `RET` (`crate::disasm::arm64`'s `is_branch`, which decides
/// what the kernel simulates, has those too).
fn is_jump(opcode: Opcode) -> bool {
    matches!(
        opcode,
        Opcode::B
            | Opcode::Bcc(_)
            | Opcode::CBZ
            | Opcode::CBNZ
            | Opcode::TBZ
            | Opcode::TBNZ
            | Opcode::BR
    )
}

/// The gobuf offsets arm64's `gogo` loads SP, BP and its jump target from (as
/// [`super::gobuf_loads`] on x86-64), from the gobuf in R5 (asm_arm64.s, 1.21–1.27):
/// `MOVD gobuf_sp(R5), R0; MOVD R0, RSP; MOVD gobuf_bp(R5), R29; ...;
/// MOVD gobuf_pc(R5), R6; B (R6)`. All three must come from one base register.
pub(super) fn gobuf_loads(code: &[u8], entry: u64) -> (Option<u64>, Option<u64>, Option<u64>) {
    let (mut sp, mut bp, mut pc) = (None, None, None);
    // Per register: the (base, offset) of the 8-byte load that last set it.
    let mut loaded: [Option<(u16, u64)>; 32] = [None; 32];
    let mut base_seen: Option<u16> = None;
    let mut from = |base: u16, offset: u64| -> Option<u64> {
        (*base_seen.get_or_insert(base) == base).then_some(offset)
    };
    for (_, instruction) in instructions(code, entry) {
        let [first, second, third, _] = instruction.operands;
        match (instruction.opcode, first, second, third) {
            (
                Opcode::LDR,
                Operand::Register(SizeCode::X, rt),
                Operand::RegPreIndex(base, offset, false),
                _,
            ) if rt < R31 && base < R31 => {
                let load = u64::try_from(offset).ok().map(|offset| (base, offset));
                if rt == 29 {
                    bp = bp.or_else(|| load.and_then(|(base, offset)| from(base, offset)));
                }
                loaded[usize::from(rt)] = load;
            }
            // MOVD Rn, RSP: ADD SP, Rn, #0
            (
                Opcode::ADD,
                Operand::RegisterOrSP(_, R31),
                Operand::RegisterOrSP(_, rn),
                Operand::Immediate(0),
            ) if rn < R31 => {
                if let Some((base, offset)) = loaded[usize::from(rn)] {
                    sp = sp.or_else(|| from(base, offset));
                }
            }
            (Opcode::BR, Operand::Register(_, rn), _, _) if rn < R31 => {
                pc = loaded[usize::from(rn)].and_then(|(base, offset)| from(base, offset));
                break;
            }
            // Anything else that writes its first register (stores read theirs).
            (opcode, Operand::Register(_, r) | Operand::RegisterOrSP(_, r), _, _)
                if r < R31 && !matches!(opcode, Opcode::STR | Opcode::STP | Opcode::STUR) =>
            {
                loaded[usize::from(r)] = None;
            }
            _ => {}
        }
    }
    (sp, bp, pc)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(words: &[u32]) -> Vec<u8> {
        words.iter().flat_map(|word| word.to_le_bytes()).collect()
    }

    fn run(words: &[u32], ip: u64) -> Trace {
        trace(&code(words), ip, &|target| {
            if target == 0x2000 {
                Callee::WriteBarrier
            } else {
                Callee::Normal
            }
        })
    }

    #[test]
    fn follows_the_frame_spills_and_pairs() {
        // From runtime.newproc1 (Go 1.27): the frame, callergp spilled above it, a call,
        // callergp reloaded, newg.parentGoid, newg.gopc = callergp.goid, R3 in one STP.
        let trace = run(
            &[
                0xf81b0ffe, // str x30, [sp, #-80]!
                0xf90033e1, // str x1, [sp, #96]: entry + 16
                0x940007fe, // bl 0x3000
                0xf94033e0, // ldr x0, [sp, #96]
                0xf9404c02, // ldr x2, [x0, #152]
                0xaa0003e4, // mov x4, x0
                0xa9118c82, // stp x2, x3, [x4, #280]
            ],
            0x1000,
        );
        assert_eq!(trace.calls.len(), 1);
        assert_eq!(trace.calls[0].target, 0x3000);
        let [.., first, second] = &trace.accesses[..] else {
            panic!("{trace:?}");
        };
        assert_eq!(
            (&first.base, first.offset, first.size),
            (&Value::Arg(1), 280, 8)
        );
        assert_eq!(first.stored, Some(Value::loaded(&Value::Arg(1), 152, 8)));
        assert_eq!((&second.base, second.offset), (&Value::Arg(1), 288));
        // R3 did not survive the call.
        assert_eq!(second.stored, Some(Value::Unknown));
    }

    #[test]
    fn reads_compare_and_swap_and_tests() {
        let trace = run(
            &[
                0x91024005, // add x5, x0, #144
                0x88fbfca2, // casal w27, w2, [x5]
                0x3940f005, // ldrb w5, [x0, #60]
                0x720008bf, // tst w5, #7
                0xb5000045, // cbnz x5, +8
            ],
            0x1000,
        );
        let cas = &trace.accesses[0];
        assert_eq!(cas.kind, AccessKind::CompareAndSwap);
        assert_eq!((&cas.base, cas.offset, cas.size), (&Value::Arg(0), 144, 4));
        assert_eq!(cas.stored, Some(Value::Arg(2)));
        let byte = Value::loaded(&Value::Arg(0), 60, 1);
        assert_eq!(trace.tests, vec![(byte.clone(), 7), (byte, 0)]);
    }

    #[test]
    fn adrp_and_add_make_one_address() {
        // From runtime.malg (Go 1.21): newobject(type of g).
        let trace = run(&[0xf0000340, 0x91180000, 0x94000000], 0x4c2dc);
        assert_eq!(trace.calls[0].args[0], Value::Address(0xb7600));
    }

    #[test]
    fn write_barriers_keep_registers_but_their_buffer() {
        // mov x4, x1 ; bl 0x2000 (a write barrier) ; str x4, [x25] ; str x4, [x0, #8]
        let trace = run(
            &[0xaa0103e4, 0x94000000 | 0x3ff, 0xf9000324, 0xf9000404],
            0x1000,
        );
        assert_eq!(trace.accesses.len(), 1, "{trace:?}");
        assert_eq!(trace.accesses[0].base, Value::Arg(0));
        assert_eq!(trace.accesses[0].stored, Some(Value::Arg(1)));
    }

    #[test]
    fn reads_gogo() {
        // gogo<> of Go 1.21 (asm_arm64.s)
        let words = [
            0xaa0603fc, 0x940011c3, 0xf94000a0, 0x9100001f, 0xf94018bd, 0xf94014be, 0xf94010a0,
            0xf9400cba, 0xf90000bf, 0xf90018bf, 0xf90010bf, 0xf90014bf, 0xf9000cbf, 0xeb1f03ff,
            0xf94004a6, 0xd61f00c0,
        ];
        assert_eq!(
            gobuf_loads(&code(&words), 0x6c460),
            (Some(0), Some(48), Some(8))
        );
    }
}
