//! Everything ctxleak needs to know about a Go executable, read from the file itself: Go
//! version, symbols, the layout of `runtime.g`, and where to place the probes.

pub mod buildinfo;
pub mod disasm;
pub mod layout;
pub mod offsets;
pub mod symbols;

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectKind, ObjectSection as _, ObjectSegment as _};

pub use buildinfo::GoVersion;
pub use layout::GLayout;
pub use symbols::Symbols;

/// The oldest Go release whose runtime ctxleak understands.
pub const MIN_GO: (u32, u32) = (1, 21);

#[derive(Debug, thiserror::Error)]
pub enum GoBinaryError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path} is not an ELF executable: ctxleak watches Go programs on Linux")]
    NotElf { path: PathBuf },
    #[error("{path} is not a Go program (it has no .go.buildinfo section): give the PID of a Go process")]
    NotGo { path: PathBuf },
    #[error("cannot read the Go version of {path}: {source}")]
    BuildInfo { path: PathBuf, source: buildinfo::BuildInfoError },
    #[error(
        "{path} was built with {version}, and ctxleak needs Go {}.{} or newer: rebuild it with a newer Go toolchain",
        MIN_GO.0, MIN_GO.1
    )]
    TooOld { path: PathBuf, version: GoVersion },
    #[error(
        "{path} has no DWARF debug info (built with -ldflags='-s -w' or -w, or stripped): stripped \
         binaries are not supported yet (issue #4); rebuild it without -s/-w"
    )]
    NoDwarf { path: PathBuf },
    #[error("cannot read the runtime's struct layouts from {path}: {source}")]
    Layout { path: PathBuf, source: layout::LayoutError },
    #[error("{path} has no symbol {symbol}, which ctxleak needs: is this Go runtime supported?")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error("cannot find where {path} calls runtime.newproc1: this Go runtime is not supported")]
    NoCreationSite { path: PathBuf },
}

/// Where a binary's struct layouts came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutSource {
    /// The binary's own DWARF.
    Dwarf,
    /// The embedded offset table, by exact Go version (binaries without DWARF).
    Table,
}

/// Link-time addresses where the probes go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeAddresses {
    /// The instruction after every `CALL runtime.newproc1` in the runtime.
    pub goroutine_created: Vec<u64>,
    /// Inside `runtime.goexit1`, after its stack check.
    pub goroutine_exited: u64,
}

/// A loadable segment: how link-time addresses map to file offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Segment {
    address: u64,
    file_offset: u64,
    file_size: u64,
}

#[derive(Debug)]
pub struct GoBinary {
    pub path: PathBuf,
    pub version: GoVersion,
    pub symbols: Symbols,
    pub g_layout: GLayout,
    pub layout_source: LayoutSource,
    pub probes: ProbeAddresses,
    /// Link-time address of `runtime.allgs`, a `[]*runtime.g`.
    pub allgs: u64,
    /// Position-independent: runtime addresses are link-time addresses plus a load bias.
    pub is_pie: bool,
    segments: Vec<Segment>,
}

impl GoBinary {
    /// Reads and parses the executable at `path` (for a process, `/proc/PID/exe`, which also
    /// reaches binaries in other mount namespaces). `display` names it in errors.
    pub fn open(path: &Path, display: &Path) -> Result<Self, GoBinaryError> {
        let data = std::fs::read(path)
            .map_err(|source| GoBinaryError::Read { path: display.to_owned(), source })?;
        Self::parse(&data, display)
    }

    pub fn parse(data: &[u8], path: &Path) -> Result<Self, GoBinaryError> {
        let path = path.to_owned();
        let file = object::File::parse(data).map_err(|_| GoBinaryError::NotElf { path: path.clone() })?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(GoBinaryError::NotElf { path });
        }
        let buildinfo = file
            .section_by_name(".go.buildinfo")
            .and_then(|section| section.data().ok())
            .ok_or_else(|| GoBinaryError::NotGo { path: path.clone() })?;
        let version = buildinfo::parse_version(buildinfo)
            .map_err(|source| GoBinaryError::BuildInfo { path: path.clone(), source })?;
        if !version.at_least(MIN_GO.0, MIN_GO.1) {
            return Err(GoBinaryError::TooOld { path, version });
        }
        let symbols = Symbols::from_object(&file);
        if symbols.is_empty() || !layout::has_dwarf(&file) {
            return Err(GoBinaryError::NoDwarf { path });
        }
        let g_layout = layout::read_g_layout(&file)
            .map_err(|source| GoBinaryError::Layout { path: path.clone(), source })?;
        let symbol = |name: &'static str| {
            symbols
                .get(name)
                .cloned()
                .ok_or_else(|| GoBinaryError::MissingSymbol { path: path.clone(), symbol: name })
        };
        let allgs = symbol("runtime.allgs")?.address;
        let newproc1 = symbol("runtime.newproc1")?;
        let goexit1 = symbol("runtime.goexit1")?;

        let segments: Vec<Segment> = file
            .segments()
            .filter_map(|segment| {
                let (file_offset, file_size) = segment.file_range();
                (file_size > 0).then(|| Segment { address: segment.address(), file_offset, file_size })
            })
            .collect();
        let code = |symbol: &symbols::Symbol| code_of(data, &segments, symbol.address, symbol.size);

        // Goroutines are made by runtime.newproc1, called from `go` statements (through
        // runtime.newproc.func1) and from a few other runtime functions (coroutines, debug
        // calls, synctest); probe after every call to it from the runtime.
        let mut goroutine_created = Vec::new();
        for function in symbols.functions_with_prefix("runtime.") {
            if let Some(code) = code(function) {
                goroutine_created.extend(disasm::after_calls_to(code, function.address, newproc1.address));
            }
        }
        if goroutine_created.is_empty() {
            return Err(GoBinaryError::NoCreationSite { path });
        }
        let goroutine_exited = code(&goexit1)
            .map(|code| disasm::after_stack_check(code, goexit1.address))
            .ok_or_else(|| GoBinaryError::MissingSymbol { path: path.clone(), symbol: "runtime.goexit1" })?;

        Ok(Self {
            path,
            version,
            symbols,
            g_layout,
            layout_source: LayoutSource::Dwarf,
            probes: ProbeAddresses { goroutine_created, goroutine_exited },
            allgs,
            is_pie: file.kind() == ObjectKind::Dynamic,
            segments,
        })
    }

    /// The file offset of a link-time address, as uprobes want it.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        segment_offset(&self.segments, address)
    }

    /// Link-time address of the first byte of the file's first loadable segment: the runtime
    /// address of the same byte minus this is the load bias.
    pub fn first_segment_address(&self) -> Option<u64> {
        self.segments.iter().find(|s| s.file_offset == 0).map(|s| s.address)
    }
}

fn segment_offset(segments: &[Segment], address: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| address >= s.address && address - s.address < s.file_size)
        .map(|s| address - s.address + s.file_offset)
}

fn code_of<'d>(data: &'d [u8], segments: &[Segment], address: u64, size: u64) -> Option<&'d [u8]> {
    let start = usize::try_from(segment_offset(segments, address)?).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    data.get(start..end)
}
