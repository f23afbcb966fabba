//! `.gopclntab`: the function table the Go runtime keeps for itself (tracebacks, stack growth,
//! GC), which stays in the binary when `-ldflags='-s -w'` removes `.symtab` and DWARF.
//!
//! Layout (Go 1.20 through at least 1.27, magic `0xFFFFFFF1`; `runtime/symtab.go`):
//!
//! - a header `pcHeader`: magic u32, two zero bytes, the PC quantum (1 on amd64, 4 on arm64:
//!   the unit of the pc-value tables' pc deltas), the pointer
//!   size (8), then eight pointer-sized words: `nfunc`, `nfiles`, `textStart` (0 since Go 1.26:
//!   the runtime takes `moduledata.text`), and the offsets from the header of `funcnametab`,
//!   `cutab`, `filetab`, `pctab` and `pclntab`;
//! - `pclntab` starts with `functab`: `nfunc` pairs of u32 (entry offset from the text start,
//!   offset of the function's `_func` record from `pclntab`) and one more entry offset, the end
//!   of the last function;
//! - a `_func` record is 44 bytes (entryOff, nameOff, args, deferreturn, pcsp, pcfile, pcln,
//!   npcdata, cuOffset, startLine: u32 each; funcID, flag, pad, nfuncdata: u8 each), followed by
//!   `npcdata` u32 offsets into `pctab` and `nfuncdata` u32 offsets from `moduledata.gofunc`;
//! - a pc-value table (`pctab`) is a list of (zigzag value delta, pc delta) uvarint pairs,
//!   starting at value -1 and the function's entry, ended by a zero value delta (except first).
//!
//! The inline tree of a function (`FUNCDATA_InlTree`) is not in the table: it is at an offset
//! from `moduledata.gofunc`, the address of the linker symbol `go:func.*`, which a stripped
//! binary does not name. [`Pclntab::from_object`] finds `runtime.firstmoduledata` instead (it
//! starts with the address of the table, then slices into it) and reads `gofunc` from it.
//!
//! Everything read from the file is bounds-checked: a malformed table gives an error (at
//! parse time, for the header and the function records) or "no information" (for the
//! pc-value tables and inline trees, which are decoded lazily, as the runtime does), never a
//! panic, and nothing is allocated from a count found in the file.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use object::{Object as _, ObjectSection as _, SectionKind};

/// `abi.Go120PCLnTabMagic`: Go 1.20 and later.
pub const MAGIC: u32 = 0xFFFF_FFF1;
/// How many header magics the search in `.rodata` tries before giving up.
const MAX_TABLE_CANDIDATES: usize = 64;
/// `abi.PCDATA_InlTreeIndex`.
pub const PCDATA_INL_TREE_INDEX: u32 = 2;
/// `abi.FUNCDATA_InlTree`.
pub const FUNCDATA_INL_TREE: u32 = 3;

const HEADER_LEN: usize = 8 + 8 * 8;
const FUNC_LEN: usize = 44;
const INLINED_CALL_LEN: usize = 16;
/// `functab` entries are two u32.
const FUNCTAB_ENTRY_LEN: usize = 8;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PclntabError {
    #[error("the binary has no .gopclntab section: is it a Go program?")]
    NoSection,
    #[error("cannot read the {section} section")]
    Section {
        section: String,
        source: object::read::Error,
    },
    #[error("the pclntab is truncated: it has {len} bytes, its {what} needs {needed}")]
    Truncated {
        what: &'static str,
        needed: u64,
        len: usize,
    },
    #[error("bad pclntab magic {0:#010x}: ctxleak reads the Go 1.20+ layout (0xfffffff1)")]
    BadMagic(u32),
    #[error(
        "unsupported pclntab header (pad {pad:#x}, pc quantum {quantum}, pointer size {ptr_size}): \
         ctxleak reads linux/amd64 and linux/arm64 binaries (quantum 1 or 4, pointer size 8)"
    )]
    Unsupported { pad: u16, quantum: u8, ptr_size: u8 },
    #[error("the pclntab's {table} table starts at {offset:#x}, outside the table or out of order")]
    BadOffset { table: &'static str, offset: u64 },
    #[error("the pclntab claims {nfunc} functions, more than its function table can hold")]
    TooManyFunctions { nfunc: u64 },
    #[error("the pclntab's function {index} is malformed: {reason}")]
    BadFunction { index: usize, reason: &'static str },
    #[error("the pclntab has no text start (Go 1.26+) and the binary has no .text section")]
    NoTextStart,
}

/// `abi.FuncID`: marks the runtime's special functions. Its values moved between Go releases
/// (`runtime.main` is 17 on 1.21, 18 on 1.22–1.24, 17 again from 1.25); compare with
/// [`Pclntab::wrapper_func_id`] or with the ID of a function found by name, not with numbers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FuncId(pub u8);

impl FuncId {
    /// `abi.FuncIDNormal`, 0 in every release: not a special function.
    pub const NORMAL: FuncId = FuncId(0);
}

/// The parsed table. It owns a copy of the bytes it needs (the table and, when found, the
/// inline trees), so it can outlive the file's data.
pub struct Pclntab {
    data: Vec<u8>,
    /// The header's PC quantum (1 or 4, checked at parse time).
    pc_quantum: u8,
    text_start: u64,
    nfunc: usize,
    funcnametab: Range<usize>,
    cutab: Range<usize>,
    filetab: Range<usize>,
    pctab: Range<usize>,
    /// From `pclnOffset` to the end of `data`; `functab` is at its start.
    pclntable: Range<usize>,
    /// The bytes from `moduledata.gofunc` to the end of their section.
    gofunc: Option<Vec<u8>>,
    wrapper: Option<FuncId>,
}

impl fmt::Debug for Pclntab {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pclntab")
            .field("len", &self.data.len())
            .field("text_start", &format_args!("{:#x}", self.text_start))
            .field("functions", &self.nfunc)
            .field("inline_trees", &self.gofunc.is_some())
            .field("wrapper", &self.wrapper)
            .finish_non_exhaustive()
    }
}

/// A function of the table. `entry..end` is its code as the runtime sees it: up to the next
/// function's entry, so alignment padding after a function belongs to it.
#[derive(Clone)]
pub struct Function<'t> {
    /// The name as the linker recorded it: generic functions keep their shape
    /// (`main.sum[go.shape.int]`); `go tool addr2line` prints this, the runtime's tracebacks
    /// print [`crate::symbolize::name_for_print`] of it. An ABI wrapper has the name of
    /// the function it wraps (without `.abi0`).
    pub name: Cow<'t, str>,
    /// Link-time address of the first instruction.
    pub entry: u64,
    /// Link-time address of the next function (or of the end of the text).
    pub end: u64,
    pub func_id: FuncId,
    /// Line of the `func` keyword (or `TEXT` directive).
    pub start_line: i32,
    table: &'t Pclntab,
    /// Offset of the `_func` record in `table.data`.
    record: usize,
}

impl fmt::Debug for Function<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Function")
            .field("name", &self.name)
            .field("entry", &format_args!("{:#x}", self.entry))
            .field("end", &format_args!("{:#x}", self.end))
            .field("func_id", &self.func_id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for Function<'_> {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self.table, other.table) && self.record == other.record
    }
}

/// An entry of a function's inline tree (`runtime.inlinedCall`): a call the compiler inlined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InlinedCall<'t> {
    /// The inlined (called) function.
    pub name: Cow<'t, str>,
    pub func_id: FuncId,
    /// Offset from the physical function's entry of an instruction whose position is the call
    /// site, in the caller (which may itself be inlined).
    pub parent_pc: i32,
    /// Line of the inlined function's `func` keyword.
    pub start_line: i32,
}

impl Pclntab {
    /// Reads the table of a Go ELF executable (exe or PIE, stripped or not).
    pub fn from_object(file: &object::File<'_>) -> Result<Self, PclntabError> {
        let sections = Sections::of(file)?;
        let table = sections.pclntab()?;
        let header = Header::parse(table.data)?;
        // The text start: the header's up to Go 1.25; from 1.26 moduledata.text, which is
        // also right when external linking put C code first in .text; the section last.
        let moduledata = sections.moduledata(table.address, &header);
        let text_start = [
            Some(header.text_start).filter(|&t| t != 0),
            moduledata.map(|m| m.text),
            sections.text,
        ]
        .into_iter()
        .flatten()
        .next()
        .ok_or(PclntabError::NoTextStart)?;
        let mut pclntab = Self::with_header(table.data, header, text_start)?;
        pclntab.gofunc = moduledata
            .and_then(|m| sections.bytes_from(m.gofunc?))
            .map(<[u8]>::to_vec);
        Ok(pclntab)
    }

    /// Reads a table from its bytes alone, without inline trees. `text_start` is used when the
    /// header has none (Go 1.26+): the link-time address of `runtime.text`.
    pub fn from_bytes(table: &[u8], text_start: Option<u64>) -> Result<Self, PclntabError> {
        let header = Header::parse(table)?;
        let text_start = Some(header.text_start)
            .filter(|&t| t != 0)
            .or(text_start)
            .ok_or(PclntabError::NoTextStart)?;
        Self::with_header(table, header, text_start)
    }

    /// Adds the inline trees: `gofunc` holds the bytes from `moduledata.gofunc` (the address
    /// of `go:func.*`) to the end of their section.
    pub fn with_inline_trees(mut self, gofunc: &[u8]) -> Self {
        self.gofunc = Some(gofunc.to_vec());
        self
    }

    fn with_header(data: &[u8], header: Header, text_start: u64) -> Result<Self, PclntabError> {
        let len = data.len();
        let offsets = [
            ("funcnametab", header.funcname_offset),
            ("cutab", header.cu_offset),
            ("filetab", header.filetab_offset),
            ("pctab", header.pctab_offset),
            ("pclntab", header.pcln_offset),
        ];
        // The linker writes the tables in this order; each ends where the next starts.
        let mut starts = [0usize; 5];
        let mut previous = HEADER_LEN as u64;
        for (i, &(table, offset)) in offsets.iter().enumerate() {
            if offset < previous || offset > len as u64 {
                return Err(PclntabError::BadOffset { table, offset });
            }
            starts[i] = offset as usize;
            previous = offset;
        }
        let range = |i: usize| starts[i]..starts.get(i + 1).copied().unwrap_or(len);
        let pclntable = range(4);
        let room = (pclntable.len() as u64).saturating_sub(4) / FUNCTAB_ENTRY_LEN as u64;
        if header.nfunc > room {
            return Err(PclntabError::TooManyFunctions {
                nfunc: header.nfunc,
            });
        }
        let mut table = Self {
            data: data.to_vec(),
            pc_quantum: header.pc_quantum,
            text_start,
            nfunc: header.nfunc as usize,
            funcnametab: range(0),
            cutab: range(1),
            filetab: range(2),
            pctab: range(3),
            pclntable,
            gofunc: None,
            wrapper: None,
        };
        table.validate()?;
        table.wrapper = table.find_wrapper_id();
        Ok(table)
    }

    /// Checks every function record once, so that lookups cannot fail on them later: sorted
    /// entries, records and their pcdata/funcdata arrays inside the table, names inside
    /// `funcnametab`, entries that agree with the record's own.
    fn validate(&self) -> Result<(), PclntabError> {
        let mut previous = 0u32;
        for index in 0..=self.nfunc {
            let bad = |reason| PclntabError::BadFunction { index, reason };
            let entry_off = self
                .functab_entry(index)
                .ok_or(bad("function table entry out of bounds"))?;
            if entry_off < previous {
                return Err(bad("function table not sorted by address"));
            }
            previous = entry_off;
            if index == self.nfunc {
                self.text_start
                    .checked_add(u64::from(entry_off))
                    .ok_or(bad("end of text overflows"))?;
                break;
            }
            let record = self
                .record_offset(index)
                .ok_or(bad("record outside the table"))?;
            let field = |i: usize| read_u32(&self.data, record + 4 * i);
            let fixed_end = record
                .checked_add(FUNC_LEN)
                .filter(|&e| e <= self.pclntable.end);
            let (Some(_), Some(own_entry), Some(name_off), Some(npcdata)) =
                (fixed_end, field(0), field(1), field(7))
            else {
                return Err(bad("record outside the table"));
            };
            if own_entry != entry_off {
                return Err(bad("record's entry differs from the function table's"));
            }
            let nfuncdata = u64::from(self.data[record + 43]);
            let arrays_end = record as u64 + FUNC_LEN as u64 + 4 * (u64::from(npcdata) + nfuncdata);
            if arrays_end > self.pclntable.end as u64 {
                return Err(bad("pcdata or funcdata past the end of the table"));
            }
            if name_off as usize >= self.funcnametab.len() {
                return Err(bad("name outside funcnametab"));
            }
        }
        Ok(())
    }

    /// `abi.FuncIDWrapper` in this binary's Go release: it comes right after
    /// `FuncID_systemstack_switch` in every release since Go 1.21, and `runtime.systemstack_switch`
    /// carries that ID (21, 22 on Go 1.22–1.24, 23 from 1.25).
    fn find_wrapper_id(&self) -> Option<FuncId> {
        let switch = self.functions_named("runtime.systemstack_switch").next()?;
        (switch.func_id != FuncId::NORMAL).then(|| switch.func_id.0.checked_add(1).map(FuncId))?
    }

    /// Link-time address the entry offsets are relative to (`runtime.text`).
    pub fn text_start(&self) -> u64 {
        self.text_start
    }

    /// Number of functions.
    pub fn len(&self) -> usize {
        self.nfunc
    }

    pub fn is_empty(&self) -> bool {
        self.nfunc == 0
    }

    /// Whether inline trees were found: without them, [`crate::symbolize`] reports
    /// only physical functions.
    pub fn has_inline_trees(&self) -> bool {
        self.gofunc.is_some()
    }

    /// The ID the runtime gives its wrappers (ABI wrappers, method wrappers, generated
    /// equality functions), when it could be told for this release.
    pub fn wrapper_func_id(&self) -> Option<FuncId> {
        self.wrapper
    }

    /// The `index`th function in address order.
    pub fn function_by_index(&self, index: usize) -> Option<Function<'_>> {
        if index >= self.nfunc {
            return None;
        }
        let record = self.record_offset(index)?;
        let entry_off = self.functab_entry(index)?;
        let end_off = self.functab_entry(index + 1)?;
        let name_off = read_u32(&self.data, record + 4)?;
        Some(Function {
            name: String::from_utf8_lossy(self.name_bytes(name_off)?),
            entry: self.text_start.checked_add(u64::from(entry_off))?,
            end: self.text_start.checked_add(u64::from(end_off))?,
            func_id: FuncId(*self.data.get(record + 40)?),
            start_line: read_u32(&self.data, record + 36)? as i32,
            table: self,
            record,
        })
    }

    /// Every function, in address order. Names that appear twice (a function and its ABI
    /// wrapper) appear twice here.
    pub fn functions(&self) -> impl Iterator<Item = Function<'_>> {
        (0..self.nfunc).filter_map(|index| self.function_by_index(index))
    }

    /// The function called `name`. When two functions have that name (`runtime.newproc`,
    /// `runtime.goexit1`, ... and their ABI0 wrappers), the one that is not a wrapper. A linear
    /// scan of the names, without allocation: meant for a few lookups.
    pub fn function(&self, name: &str) -> Option<Function<'_>> {
        let mut found: Option<Function<'_>> = None;
        for function in self.functions_named(name) {
            let wrapper = match self.wrapper {
                Some(id) => function.func_id == id,
                None => function.func_id != FuncId::NORMAL,
            };
            if !wrapper {
                return Some(function);
            }
            found.get_or_insert(function);
        }
        found
    }

    /// Every function called `name`, in address order.
    pub fn functions_named<'s, 'n>(
        &'s self,
        name: &'n str,
    ) -> impl Iterator<Item = Function<'s>> + use<'s, 'n> {
        (0..self.nfunc).filter_map(move |index| {
            let record = self.record_offset(index)?;
            let name_off = read_u32(&self.data, record + 4)?;
            (self.name_bytes(name_off)? == name.as_bytes())
                .then(|| self.function_by_index(index))?
        })
    }

    /// The function whose code contains `pc` (link-time address), as the runtime's `findfunc`
    /// and `go tool addr2line` see it.
    pub fn function_at(&self, pc: u64) -> Option<Function<'_>> {
        let offset = u32::try_from(pc.checked_sub(self.text_start)?).ok()?;
        if self.nfunc == 0
            || offset < self.functab_entry(0)?
            || offset >= self.functab_entry(self.nfunc)?
        {
            return None;
        }
        // The last function whose entry is at or before offset (entries are sorted: validated).
        let (mut lo, mut hi) = (0, self.nfunc);
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            if self.functab_entry(mid)? <= offset {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        self.function_by_index(lo)
    }

    fn functab_entry(&self, index: usize) -> Option<u32> {
        read_u32(
            &self.data,
            self.pclntable
                .start
                .checked_add(index.checked_mul(FUNCTAB_ENTRY_LEN)?)?,
        )
    }

    fn record_offset(&self, index: usize) -> Option<usize> {
        let at = self
            .pclntable
            .start
            .checked_add(index.checked_mul(FUNCTAB_ENTRY_LEN)?.checked_add(4)?)?;
        let func_off = read_u32(&self.data, at)? as usize;
        let record = self.pclntable.start.checked_add(func_off)?;
        (record < self.pclntable.end).then_some(record)
    }

    /// The NUL-terminated string at `offset` in `funcnametab` (`moduledata.funcName`).
    fn name_bytes(&self, offset: u32) -> Option<&[u8]> {
        c_string(self.data.get(self.funcnametab.clone())?, offset as usize)
    }

    /// `runtime.funcfile`: a file of the function's compilation unit.
    fn file(&self, cu_offset: u32, file_index: i32) -> Option<Cow<'_, str>> {
        let index = u64::from(cu_offset) + u64::try_from(file_index).ok()?;
        let at = usize::try_from(index.checked_mul(4)?).ok()?;
        let cutab = self.data.get(self.cutab.clone())?;
        let file_off = read_u32(cutab, at)?;
        if file_off == u32::MAX {
            return None;
        }
        Some(String::from_utf8_lossy(c_string(
            self.data.get(self.filetab.clone())?,
            file_off as usize,
        )?))
    }

    /// `runtime.pcvalue`: the value of the pc-value table at `table_off` in `pctab` for
    /// `target`, in the function starting at `entry`; None when there is no table or it does
    /// not cover `target`.
    fn pcvalue(&self, table_off: u32, entry: u64, target: u64) -> Option<i32> {
        if table_off == 0 {
            return None;
        }
        let mut p = self
            .data
            .get(self.pctab.clone())?
            .get(table_off as usize..)?;
        let mut pc = entry;
        let mut value: i32 = -1;
        loop {
            // runtime.step: a zero value delta ends the table, except as the first entry.
            let first = pc == entry;
            if *p.first()? == 0 && !first {
                return None;
            }
            let (uvdelta, n) = read_varint(p)?;
            p = &p[n..];
            value = value.wrapping_add((-((uvdelta & 1) as i32)) ^ ((uvdelta >> 1) as i32));
            let (pcdelta, n) = read_varint(p)?;
            p = &p[n..];
            // runtime.step: the delta counts PC quanta (1 or 4: checked at parse time).
            pc = pc.checked_add(u64::from(pcdelta) * u64::from(self.pc_quantum))?;
            if target < pc {
                return Some(value);
            }
        }
    }

    /// `runtime.funcdata`: the offset into the inline-tree bytes of funcdata `index`.
    fn funcdata_offset(&self, function: &Function<'_>, index: u32) -> Option<usize> {
        let nfuncdata = u32::from(*self.data.get(function.record + 43)?);
        if index >= nfuncdata {
            return None;
        }
        let npcdata = read_u32(&self.data, function.record + 28)?;
        let at = u64::try_from(function.record + FUNC_LEN).ok()?
            + 4 * (u64::from(npcdata) + u64::from(index));
        let off = read_u32(&self.data, usize::try_from(at).ok()?)?;
        (off != u32::MAX).then_some(off as usize)
    }
}

impl<'t> Function<'t> {
    fn field(&self, index: usize) -> Option<u32> {
        read_u32(&self.table.data, self.record + 4 * index)
    }

    /// Whether this is a wrapper (an ABI wrapper, a method wrapper, generated code).
    pub fn is_wrapper(&self) -> bool {
        self.table.wrapper == Some(self.func_id)
    }

    pub fn contains(&self, pc: u64) -> bool {
        (self.entry..self.end).contains(&pc)
    }

    /// `runtime.funcline1`: the file and line of `pc`, of the innermost inlined call there.
    /// None where the runtime says `"?", 0` (no table, a PC it does not cover, a negative
    /// value); the file is `"?"` where the runtime says so (a file missing from the
    /// compilation unit's table) and the line is still given.
    pub fn file_line(&self, pc: u64) -> Option<(Cow<'t, str>, u32)> {
        let table = self.table;
        let file = table.pcvalue(self.field(5)?, self.entry, pc)?;
        let line = table.pcvalue(self.field(6)?, self.entry, pc)?;
        if file < 0 || line < 0 || file as usize >= table.filetab.len() {
            return None;
        }
        let name = table
            .file(self.field(8)?, file)
            .unwrap_or(Cow::Borrowed("?"));
        Some((name, line as u32))
    }

    /// Whether the function has a line table at all. Some linker-made symbols have none
    /// (`go:textfipsstart` since Go 1.24): the runtime has no position for them; `debug/gosym`
    /// (so `go tool addr2line`) then decodes whatever starts `pctab` and prints a made-up line.
    pub fn has_line_table(&self) -> bool {
        self.field(6).is_some_and(|offset| offset != 0)
    }

    /// `runtime.pcdatavalue`: the value of pcdata table `table` at `pc`.
    pub fn pcdata(&self, table: u32, pc: u64) -> Option<i32> {
        if table >= self.field(7)? {
            return None;
        }
        let offset = self
            .record
            .checked_add(FUNC_LEN)?
            .checked_add(usize::try_from(table).ok()?.checked_mul(4)?)?;
        self.table
            .pcvalue(read_u32(&self.table.data, offset)?, self.entry, pc)
    }

    /// The stack pointer's distance below its value at entry, at `pc` (`runtime.funcspdelta`).
    pub fn sp_delta(&self, pc: u64) -> Option<i32> {
        self.table.pcvalue(self.field(4)?, self.entry, pc)
    }

    /// The index in the inline tree of the innermost inlined call at `pc`, None outside any
    /// inlined call (`PCDATA_InlTreeIndex`, -1 there).
    pub fn inline_index(&self, pc: u64) -> Option<u32> {
        u32::try_from(self.pcdata(PCDATA_INL_TREE_INDEX, pc)?).ok()
    }

    /// Entry `index` of the function's inline tree, if the tree was found and has it.
    pub fn inlined_call(&self, index: u32) -> Option<InlinedCall<'t>> {
        let table = self.table;
        let gofunc = table.gofunc.as_deref()?;
        let tree = table.funcdata_offset(self, FUNCDATA_INL_TREE)?;
        let at = tree.checked_add(usize::try_from(index).ok()?.checked_mul(INLINED_CALL_LEN)?)?;
        let entry = gofunc.get(at..at.checked_add(INLINED_CALL_LEN)?)?;
        let name_off = read_u32(entry, 4)?;
        Some(InlinedCall {
            func_id: FuncId(entry[0]),
            name: String::from_utf8_lossy(table.name_bytes(name_off)?),
            parent_pc: read_u32(entry, 8)? as i32,
            start_line: read_u32(entry, 12)? as i32,
        })
    }
}

/// The fixed part of `pcHeader`.
#[derive(Clone, Copy, Debug)]
struct Header {
    nfunc: u64,
    /// What a pc-value table's pc delta counts: 1 byte on amd64, a 4-byte instruction on arm64.
    pc_quantum: u8,
    text_start: u64,
    funcname_offset: u64,
    cu_offset: u64,
    filetab_offset: u64,
    pctab_offset: u64,
    pcln_offset: u64,
}

impl Header {
    fn parse(data: &[u8]) -> Result<Self, PclntabError> {
        if data.len() < HEADER_LEN {
            let truncated = PclntabError::Truncated {
                what: "header",
                needed: HEADER_LEN as u64,
                len: data.len(),
            };
            // Report a wrong magic first: it says more about what the bytes are.
            return Err(match read_u32(data, 0) {
                Some(magic) if magic != MAGIC => PclntabError::BadMagic(magic),
                _ => truncated,
            });
        }
        let magic = read_u32(data, 0).unwrap_or_default();
        if magic != MAGIC {
            return Err(PclntabError::BadMagic(magic));
        }
        let (pad, quantum, ptr_size) = (u16::from_le_bytes([data[4], data[5]]), data[6], data[7]);
        if pad != 0 || !matches!(quantum, 1 | 4) || ptr_size != 8 {
            return Err(PclntabError::Unsupported {
                pad,
                quantum,
                ptr_size,
            });
        }
        let word = |i: usize| read_u64(data, 8 + 8 * i).unwrap_or_default();
        Ok(Self {
            nfunc: word(0),
            pc_quantum: quantum,
            text_start: word(2),
            funcname_offset: word(3),
            cu_offset: word(4),
            filetab_offset: word(5),
            pctab_offset: word(6),
            pcln_offset: word(7),
        })
    }
}

/// What `runtime.firstmoduledata` tells beyond the table itself.
#[derive(Clone, Copy, Debug)]
struct ModuleData {
    text: u64,
    gofunc: Option<u64>,
}

/// The sections of the file that matter here.
struct Sections<'d> {
    /// Allocated sections with bytes in the file: name, address, bytes.
    data: Vec<(String, u64, &'d [u8])>,
    text: Option<u64>,
    rodata: Option<u64>,
}

struct Located<'d> {
    address: u64,
    data: &'d [u8],
}

/// Where `runtime.firstmoduledata` usually is, most likely first; then every other section.
const MODULEDATA_SECTIONS: &[&str] = &[".go.module", ".noptrdata", ".data", ".data.rel.ro"];

impl<'d> Sections<'d> {
    fn of(file: &object::File<'d>) -> Result<Self, PclntabError> {
        let mut data = Vec::new();
        let (mut text, mut rodata) = (None, None);
        for section in file.sections() {
            let Ok(name) = section.name() else { continue };
            match name {
                ".text" => text = Some(section.address()),
                ".rodata" => rodata = Some(section.address()),
                _ => {}
            }
            if section.address() == 0
                || matches!(
                    section.kind(),
                    SectionKind::UninitializedData | SectionKind::Text
                )
            {
                continue;
            }
            let bytes = section.data().map_err(|source| PclntabError::Section {
                section: name.to_owned(),
                source,
            });
            match bytes {
                Ok(bytes) => data.push((name.to_owned(), section.address(), bytes)),
                // Only the table's own section must be readable.
                Err(error) if is_pclntab_section(name) => return Err(error),
                Err(_) => {}
            }
        }
        Ok(Self { data, text, rodata })
    }

    /// `.gopclntab`; `.data.rel.ro.gopclntab` in PIE before Go 1.26; else a header found at
    /// the start of an 8-aligned position in the read-only data.
    fn pclntab(&self) -> Result<Located<'d>, PclntabError> {
        if let Some(&(_, address, data)) =
            self.data.iter().find(|(name, ..)| is_pclntab_section(name))
        {
            return Ok(Located { address, data });
        }
        // Each try copies the rest of the section, so a file full of fake headers would cost
        // quadratic time: stop after a bounded number of them (a real binary has one table).
        let mut tries = 0;
        for &(ref name, address, data) in &self.data {
            if !matches!(name.as_str(), ".rodata" | ".data.rel.ro") {
                continue;
            }
            for offset in (0..data.len()).step_by(8) {
                if read_u32(data, offset) != Some(MAGIC) {
                    continue;
                }
                tries += 1;
                if tries > MAX_TABLE_CANDIDATES {
                    return Err(PclntabError::NoSection);
                }
                if Pclntab::from_bytes(&data[offset..], Some(1)).is_ok() {
                    return Ok(Located {
                        address: address + offset as u64,
                        data: &data[offset..],
                    });
                }
            }
        }
        Err(PclntabError::NoSection)
    }

    /// Finds `runtime.firstmoduledata`: pointer-sized words, the first the table's address,
    /// then slices (pointer, len, cap) of its parts at the addresses the header gives.
    fn moduledata(&self, pclntab: u64, header: &Header) -> Option<ModuleData> {
        let at = |offset: u64| pclntab.checked_add(offset);
        let expected = [
            (0, Some(pclntab)),
            (1, at(header.funcname_offset)),
            (4, at(header.cu_offset)),
            (7, at(header.filetab_offset)),
            (10, at(header.pctab_offset)),
            (13, at(header.pcln_offset)),
            (16, at(header.pcln_offset)),
            (17, header.nfunc.checked_add(1)),
        ];
        let preferred = MODULEDATA_SECTIONS
            .iter()
            .filter_map(|want| self.data.iter().find(|(name, ..)| name == want));
        let others = self
            .data
            .iter()
            .filter(|(name, ..)| !MODULEDATA_SECTIONS.contains(&name.as_str()));
        for (_, address, data) in preferred.chain(others) {
            let first = (8 - (address % 8) as usize) % 8;
            for offset in (first..data.len()).step_by(8) {
                if read_u64(data, offset) != Some(pclntab) {
                    continue;
                }
                let word = |i: usize| read_u64(data, offset.checked_add(8 * i)?);
                if expected
                    .iter()
                    .all(|&(i, value)| value.is_some() && word(i) == value)
                {
                    // moduledata.text, then gofunc: right after rodata, at word 40 (Go 1.21–1.26)
                    // or 43 (1.27 added typedesclen, itaboffset and itabsize before them).
                    let gofunc = [(42, 43), (39, 40)]
                        .into_iter()
                        .find_map(|(rodata, gofunc)| {
                            let (rodata, gofunc) = (word(rodata)?, word(gofunc)?);
                            let anchored = self.rodata.is_none_or(|start| start == rodata);
                            (anchored && rodata <= gofunc && self.bytes_from(gofunc).is_some())
                                .then_some(gofunc)
                        });
                    return Some(ModuleData {
                        text: word(22)?,
                        gofunc,
                    });
                }
            }
        }
        None
    }

    /// The bytes from `address` to the end of its section.
    fn bytes_from(&self, address: u64) -> Option<&'d [u8]> {
        self.data.iter().find_map(|&(_, start, data)| {
            let offset = usize::try_from(address.checked_sub(start)?).ok()?;
            data.get(offset..).filter(|rest| !rest.is_empty())
        })
    }
}

fn is_pclntab_section(name: &str) -> bool {
    matches!(name, ".gopclntab" | ".data.rel.ro.gopclntab")
}

fn read_u32(data: &[u8], offset: usize) -> Option<u32> {
    let bytes = data.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(bytes.try_into().ok()?))
}

fn read_u64(data: &[u8], offset: usize) -> Option<u64> {
    let bytes = data.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// `runtime.readvarint`: a little-endian base-128 u32 (bits past 32 are dropped, as there),
/// and how many bytes it took. None if the bytes end first.
fn read_varint(p: &[u8]) -> Option<(u32, usize)> {
    let (mut value, mut shift) = (0u32, 0u32);
    for (i, &byte) in p.iter().enumerate() {
        value |= u32::from(byte & 0x7f).wrapping_shl(shift & 31);
        if byte & 0x80 == 0 {
            return Some((value, i + 1));
        }
        shift = shift.wrapping_add(7);
    }
    None
}

/// The NUL-terminated string at `offset` (without the NUL); None if it does not end.
fn c_string(data: &[u8], offset: usize) -> Option<&[u8]> {
    let rest = data.get(offset..)?;
    let len = rest.iter().position(|&b| b == 0)?;
    Some(&rest[..len])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, entry offset, line table rows as (pc delta, line)).
    type TestFunction = (&'static str, u32, Vec<(u32, i32)>);

    /// A well-formed table with the given functions, all in file main.go, text ending at
    /// `end`, with the given funcIDs.
    struct Builder {
        funcs: Vec<TestFunction>,
        end: u32,
        func_id: Vec<u8>,
    }

    fn uvarint(mut v: u32, out: &mut Vec<u8>) {
        while v >= 0x80 {
            out.push((v as u8) | 0x80);
            v >>= 7;
        }
        out.push(v as u8);
    }

    fn pc_table(rows: &[(u32, i32)], out: &mut Vec<u8>) {
        let mut value = -1;
        for &(pcdelta, v) in rows {
            let delta = v - value;
            uvarint(((delta << 1) ^ (delta >> 31)) as u32, out);
            uvarint(pcdelta, out);
            value = v;
        }
        out.push(0);
    }

    impl Builder {
        fn build(&self, text_start: u64) -> Vec<u8> {
            let mut names = vec![0u8];
            let mut name_offs = Vec::new();
            for (name, ..) in &self.funcs {
                name_offs.push(names.len() as u32);
                names.extend_from_slice(name.as_bytes());
                names.push(0);
            }
            let cutab: Vec<u8> = 0u32.to_le_bytes().to_vec();
            let filetab = b"main.go\0".to_vec();
            // pctab: offset 0 means "no table", so start with a pad byte.
            let mut pctab = vec![0u8];
            let mut pcfile = Vec::new();
            let mut pcln = Vec::new();
            for (_, _, lines) in &self.funcs {
                pcfile.push(pctab.len() as u32);
                let total: u32 = lines.iter().map(|l| l.0).sum();
                pc_table(&[(total, 0)], &mut pctab);
                pcln.push(pctab.len() as u32);
                pc_table(lines, &mut pctab);
            }
            let n = self.funcs.len();
            let mut pclntable = Vec::new();
            let records_start = (n * 2 + 1) * 4;
            let mut records = Vec::new();
            for (i, (_, entry, _)) in self.funcs.iter().enumerate() {
                pclntable.extend_from_slice(&entry.to_le_bytes());
                pclntable
                    .extend_from_slice(&((records_start + records.len()) as u32).to_le_bytes());
                for value in [*entry, name_offs[i], 0, 0, 0, pcfile[i], pcln[i], 0, 0, 1] {
                    records.extend_from_slice(&value.to_le_bytes());
                }
                records.extend_from_slice(&[self.func_id.get(i).copied().unwrap_or(0), 0, 0, 0]);
            }
            pclntable.extend_from_slice(&self.end.to_le_bytes());
            pclntable.extend_from_slice(&records);

            let mut out = Vec::new();
            out.extend_from_slice(&MAGIC.to_le_bytes());
            out.extend_from_slice(&[0, 0, 1, 8]);
            let mut offset = HEADER_LEN as u64;
            let mut offsets = Vec::new();
            for part in [&names, &cutab, &filetab, &pctab] {
                offsets.push(offset);
                offset += part.len() as u64;
            }
            offsets.push(offset);
            for word in [n as u64, 1, text_start] {
                out.extend_from_slice(&word.to_le_bytes());
            }
            for word in offsets {
                out.extend_from_slice(&word.to_le_bytes());
            }
            for part in [&names, &cutab, &filetab, &pctab, &pclntable] {
                out.extend_from_slice(part);
            }
            out
        }
    }

    fn sample() -> Builder {
        Builder {
            funcs: vec![
                ("main.a", 0, vec![(4, 10), (12, 11)]),
                ("main.b", 0x20, vec![(0x10, 20)]),
                ("runtime.systemstack_switch", 0x40, vec![(1, 30)]),
                ("main.b", 0x50, vec![(0x10, 21)]),
            ],
            end: 0x60,
            func_id: vec![0, 23, 22, 0],
        }
    }

    #[test]
    fn reads_a_well_formed_table() {
        let table = Pclntab::from_bytes(&sample().build(0x1000), None).unwrap();
        assert_eq!(table.len(), 4);
        assert_eq!(table.wrapper_func_id(), Some(FuncId(23)));
        let a = table.function_at(0x1003).unwrap();
        assert_eq!(
            (a.name.as_ref(), a.entry, a.end),
            ("main.a", 0x1000, 0x1020)
        );
        assert_eq!(a.file_line(0x1003).unwrap(), ("main.go".into(), 10));
        assert_eq!(a.file_line(0x1004).unwrap(), ("main.go".into(), 11));
        // Padding after the table's coverage: no line, as the runtime says.
        assert_eq!(a.file_line(0x1010), None);
        assert_eq!(table.function_at(0xfff), None);
        assert_eq!(table.function_at(0x1060), None);
        assert_eq!(table.function_at(0x105f).unwrap().entry, 0x1050);
        // Two functions called main.b: the one that is not the wrapper.
        let b = table.function("main.b").unwrap();
        assert_eq!((b.entry, b.is_wrapper()), (0x1050, false));
        assert_eq!(table.functions_named("main.b").count(), 2);
        assert_eq!(table.function("main.zzz"), None);
        // Text start from the caller when the header has none (Go 1.26+).
        let table = Pclntab::from_bytes(&sample().build(0), Some(0x2000)).unwrap();
        assert_eq!(table.function("main.a").unwrap().entry, 0x2000);
        assert_eq!(
            Pclntab::from_bytes(&sample().build(0), None).unwrap_err(),
            PclntabError::NoTextStart
        );
    }

    #[test]
    fn rejects_empty_and_short_input() {
        assert!(matches!(
            Pclntab::from_bytes(&[], Some(0)),
            Err(PclntabError::Truncated { .. })
        ));
        let table = sample().build(0x1000);
        assert!(matches!(
            Pclntab::from_bytes(&table[..2], None),
            Err(PclntabError::Truncated { .. })
        ));
        assert!(matches!(
            Pclntab::from_bytes(&table[..HEADER_LEN - 1], None),
            Err(PclntabError::Truncated { .. })
        ));
        // Header only: every table offset is past the end.
        assert!(matches!(
            Pclntab::from_bytes(&table[..HEADER_LEN], None),
            Err(PclntabError::BadOffset { .. })
        ));
        // Every truncation is an error or a smaller table, never a panic.
        for len in 0..table.len() {
            if let Ok(table) = Pclntab::from_bytes(&table[..len], None) {
                exercise(&table);
            }
        }
    }

    #[test]
    fn rejects_bad_magic_and_other_architectures() {
        let mut table = sample().build(0x1000);
        table[0] = 0xf0;
        assert_eq!(
            Pclntab::from_bytes(&table, None).unwrap_err(),
            PclntabError::BadMagic(0xffff_fff0)
        );
        assert_eq!(
            Pclntab::from_bytes(&table[..8], None).unwrap_err(),
            PclntabError::BadMagic(0xffff_fff0)
        );
        let mut table = sample().build(0x1000);
        table[7] = 4;
        assert!(matches!(
            Pclntab::from_bytes(&table, None),
            Err(PclntabError::Unsupported { ptr_size: 4, .. })
        ));
    }

    #[test]
    fn rejects_huge_counts_and_offsets() {
        let table = sample().build(0x1000);
        let mut huge = table.clone();
        huge[8..16].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(
            Pclntab::from_bytes(&huge, None).unwrap_err(),
            PclntabError::TooManyFunctions { nfunc: u64::MAX }
        );
        let mut huge = table.clone();
        huge[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
        assert!(matches!(
            Pclntab::from_bytes(&huge, None),
            Err(PclntabError::TooManyFunctions { .. })
        ));
        // Each table offset past the end, or before the previous one.
        for word in 3..8 {
            let mut bad = table.clone();
            bad[8 + 8 * word..16 + 8 * word]
                .copy_from_slice(&(table.len() as u64 + 1).to_le_bytes());
            assert!(
                matches!(
                    Pclntab::from_bytes(&bad, None),
                    Err(PclntabError::BadOffset { .. })
                ),
                "word {word}"
            );
            let mut bad = table.clone();
            bad[8 + 8 * word..16 + 8 * word].copy_from_slice(&u64::MAX.to_le_bytes());
            assert!(
                matches!(
                    Pclntab::from_bytes(&bad, None),
                    Err(PclntabError::BadOffset { .. })
                ),
                "word {word}"
            );
        }
        let mut bad = table.clone();
        bad[8 + 8 * 4..16 + 8 * 4].copy_from_slice(&0u64.to_le_bytes());
        assert!(matches!(
            Pclntab::from_bytes(&bad, None),
            Err(PclntabError::BadOffset { .. })
        ));
        // Text start so high that the functions' addresses overflow.
        let table = sample().build(u64::MAX - 0x10);
        assert!(matches!(
            Pclntab::from_bytes(&table, None),
            Err(PclntabError::BadFunction { .. })
        ));
    }

    #[test]
    fn rejects_bad_function_records() {
        let table = sample().build(0x1000);
        let pcln = read_u64(&table, 8 + 8 * 7).unwrap() as usize;
        // Record offset of the first function past the end.
        let mut bad = table.clone();
        bad[pcln + 4..pcln + 8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Pclntab::from_bytes(&bad, None),
            Err(PclntabError::BadFunction { index: 0, .. })
        ));
        // Unsorted entries.
        let mut bad = table.clone();
        bad[pcln + 8..pcln + 12].copy_from_slice(&0x70u32.to_le_bytes());
        assert!(matches!(
            Pclntab::from_bytes(&bad, None),
            Err(PclntabError::BadFunction { .. })
        ));
        // A name offset outside funcnametab, and a huge npcdata.
        let record = pcln + read_u32(&table, pcln + 4).unwrap() as usize;
        let mut bad = table.clone();
        bad[record + 4..record + 8].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert!(matches!(
            Pclntab::from_bytes(&bad, None),
            Err(PclntabError::BadFunction { index: 0, .. })
        ));
        let mut bad = table.clone();
        bad[record + 28..record + 32].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Pclntab::from_bytes(&bad, None),
            Err(PclntabError::BadFunction { index: 0, .. })
        ));
    }

    /// Corrupted pc-value tables and inline trees give "no information", never a panic.
    #[test]
    fn survives_corrupt_lazy_tables() {
        let table = sample().build(0x1000);
        let pctab = read_u64(&table, 8 + 8 * 6).unwrap() as usize;
        let pcln = read_u64(&table, 8 + 8 * 7).unwrap() as usize;
        for at in pctab..pcln {
            for byte in [0x00, 0x80, 0xff, 0x7f] {
                let mut bad = table.clone();
                bad[at] = byte;
                let parsed = Pclntab::from_bytes(&bad, None).unwrap();
                exercise(&parsed);
                exercise(&parsed.with_inline_trees(&[0xff; 40]));
            }
        }
        // pcdata and funcdata offsets pointing anywhere.
        let record = pcln + read_u32(&table, pcln + 4).unwrap() as usize;
        let mut bad = table.clone();
        bad[record + 28..record + 32].copy_from_slice(&3u32.to_le_bytes());
        bad[record + 43] = 1;
        let parsed = Pclntab::from_bytes(&bad, None)
            .unwrap()
            .with_inline_trees(&[0xff; 64]);
        exercise(&parsed);
    }

    fn exercise(table: &Pclntab) {
        for function in table.functions() {
            for pc in function.entry.saturating_sub(1)..=function.end {
                let _ = table.function_at(pc);
                let _ = function.file_line(pc);
                let _ = function.sp_delta(pc);
                for index in [0, 1, 2, u32::MAX] {
                    let _ = function.pcdata(index, pc);
                    let _ = function.inlined_call(index);
                }
                let _ = crate::symbolize::symbolize(table, pc);
            }
            let _ = table.function(&function.name);
        }
    }

    #[test]
    fn reads_varints_like_the_runtime() {
        assert_eq!(read_varint(&[0x05]), Some((5, 1)));
        assert_eq!(read_varint(&[0x80, 0x01]), Some((128, 2)));
        assert_eq!(read_varint(&[0x80, 0x80]), None);
        assert_eq!(read_varint(&[]), None);
        // Longer than 32 bits: the runtime keeps going and masks the shift.
        assert_eq!(
            read_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00]).map(|v| v.1),
            Some(7)
        );
    }
}
