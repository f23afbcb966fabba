//! Everything ctxleak needs to know about a Go executable, read from the file itself: Go
//! version, functions and source lines (`.gopclntab`, present even in stripped binaries),
//! the layout of `runtime.g` (DWARF; without it, derived from the runtime's code, or else the
//! offset table), where `runtime.allgs` lives, and where to place the probes.

pub mod buildinfo;
pub mod derive;
pub mod disasm;
pub mod file;
pub mod layout;
pub mod offsets;
pub mod pclntab;
pub mod sched;
pub mod symbolize;

use std::path::{Path, PathBuf};

use object::{Object as _, ObjectKind, ObjectSection as _, ObjectSegment as _, ObjectSymbol as _};

pub use buildinfo::GoVersion;
pub use file::{ExecutableFile, MAX_EXECUTABLE_BYTES};
pub use layout::{ChanLayout, GLayout, WaitLayout};
pub use pclntab::Pclntab;

/// The architecture ctxleak runs on, chosen when it is built: it watches Go programs built for
/// this one (`GOARCH`), and refuses others in one line ([`GoBinaryError::Architecture`]).
pub const HOST_ARCH: object::Architecture = if cfg!(target_arch = "aarch64") {
    object::Architecture::Aarch64
} else {
    object::Architecture::X86_64
};

/// The oldest Go release whose runtime ctxleak understands.
pub const MIN_GO: (u32, u32) = (1, 21);

#[derive(Debug, thiserror::Error)]
pub enum GoBinaryError {
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is {what}, not an executable file: give the path of a Go program")]
    NotAFile { path: PathBuf, what: &'static str },
    #[error(
        "{path} is {}, more than the {} ctxleak reads of an executable: give the path of a Go program",
        gib(*size), gib(MAX_EXECUTABLE_BYTES)
    )]
    TooLarge { path: PathBuf, size: u64 },
    #[error("{path} is not an ELF executable: ctxleak watches Go programs on Linux")]
    NotElf { path: PathBuf },
    #[error(
        "{path} is not a Go program (it has no .go.buildinfo section): give the PID of a Go process"
    )]
    NotGo { path: PathBuf },
    #[error("cannot read the Go version of {path}")]
    BuildInfo {
        path: PathBuf,
        source: buildinfo::BuildInfoError,
    },
    #[error(
        "{path} is a Go program for {arch}, and this ctxleak watches linux/{} programs: run the ctxleak built for {arch} on the host (amd64 and arm64 are supported)",
        go_arch(HOST_ARCH)
    )]
    Architecture { path: PathBuf, arch: &'static str },
    #[error(
        "{path} was built with {version}, and ctxleak needs Go {}.{} or newer: rebuild it with a newer Go toolchain",
        MIN_GO.0, MIN_GO.1
    )]
    TooOld { path: PathBuf, version: GoVersion },
    #[error(
        "{path} has no DWARF (built with -ldflags=-w or stripped), ctxleak {derive}, and the offset \
         table does not know {version}'s minor release (it knows {known}): rebuild the target without \
         -w, or add a release of its minor to GO_VERSIONS in xtask/src/go.rs and run `cargo xtask offsets`"
    )]
    UnknownLayout {
        path: PathBuf,
        version: GoVersion,
        known: String,
        derive: Box<derive::DeriveError>,
    },
    #[error("cannot read the function table (.gopclntab) of {path}")]
    Pclntab {
        path: PathBuf,
        source: pclntab::PclntabError,
    },
    #[error("cannot read the runtime's struct layouts from {path}")]
    Layout {
        path: PathBuf,
        source: layout::LayoutError,
    },
    #[error("{path} has no function {symbol}, which ctxleak needs: is this Go runtime supported?")]
    MissingSymbol { path: PathBuf, symbol: &'static str },
    #[error(
        "cannot find runtime.allgs in {path}: neither its symbol nor runtime.forEachG's code gives it away"
    )]
    NoAllgs { path: PathBuf },
    #[error("cannot find where {path} calls runtime.newproc1: this Go runtime is not supported")]
    NoCreationSite { path: PathBuf },
}

/// Where a binary's struct layouts came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LayoutSource {
    /// The binary's own DWARF.
    Dwarf,
    /// Derived from the runtime's machine code (binaries without DWARF; see [`derive`]).
    Code,
    /// The embedded offset table, by minor release (binaries without DWARF whose code did not
    /// give every field).
    Table,
}

/// Link-time addresses where the probes go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProbeAddresses {
    /// One per `CALL runtime.newproc1` in the runtime (see [`disasm::Isa::creation_sites`]).
    pub goroutine_created: Vec<disasm::CreationSite>,
    /// Inside `runtime.goexit1`, after its stack check (see [`disasm::Isa::entered`]).
    pub goroutine_exited: u64,
    /// Inside `runtime.gopark`, after its stack check (used with park timing only).
    pub goroutine_parked: u64,
    /// The `context` package's cancel tree; `None` when the binary does not use it (or the
    /// linker left out a function the probes need).
    pub contexts: Option<ContextProbes>,
}

/// Link-time addresses of the `context` probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContextProbes {
    /// Inside `context.(*cancelCtx).propagateCancel`, after its stack check and before its
    /// prologue (the program walks the caller's frames).
    pub created: u64,
    /// The call of `runtime.mapassign` in `propagateCancel` (`p.children[child] = struct{}{}`).
    pub registered: u64,
    /// Inside `context.(*cancelCtx).cancel`, after its stack check.
    pub cancelled: u64,
    /// From the lowest entry to the highest end of package `context`'s functions (the linker
    /// lays a package's code out together): the creation probe's stack walk stops at the
    /// first return address outside, the user's line (or the library's that made the context).
    pub text: (u64, u64),
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
    /// Functions, files and lines; works without symbols or DWARF.
    pub pclntab: Pclntab,
    pub g_layout: GLayout,
    pub layout_source: LayoutSource,
    /// The layout derived from the runtime's code, also when DWARF gave it (a cross-check).
    pub g_layout_derived: Result<GLayout, derive::DeriveError>,
    /// Where a goroutine's channel waits are, and from where (DWARF, else the runtime's code,
    /// else the offset table, as for `runtime.g`); or why they are unknown (then ctxleak does
    /// not look at what goroutines wait on).
    pub waits: Result<(WaitLayout, LayoutSource), String>,
    /// The wait layout derived from the runtime's code, also when DWARF gave it.
    pub waits_derived: Result<WaitLayout, derive::DeriveError>,
    /// Where a channel's state and queues are (DWARF, else the offset table), or why they
    /// are unknown (then stuck goroutines get no channel evidence).
    pub chans: Result<(ChanLayout, LayoutSource), String>,
    /// Where the probes go; `None` on an architecture whose code ctxleak cannot place them
    /// in ([`disasm::Isa::of`]): then it reads memory only (counts, census, stacks).
    pub probes: Option<ProbeAddresses>,
    /// Link-time address of `runtime.allgs`, a `[]*runtime.g`.
    pub allgs: u64,
    /// Where the inputs of the runtime's own goroutine count live (see [`sched`]), or why
    /// they could not be found (then only a scan of `allgs` counts the goroutines).
    pub sched: Result<sched::SchedAddresses, sched::SchedError>,
    /// `runtime.waitReasonStrings`, indexed by `g.waitreason` (the enum moved between
    /// releases, so the strings come from each binary). Empty if they cannot be found.
    pub wait_reasons: Vec<String>,
    /// Position-independent: runtime addresses are link-time addresses plus a load bias.
    pub is_pie: bool,
    /// The main module's path and its dependencies' (empty if the binary does not say).
    pub modules: Vec<String>,
    segments: Vec<Segment>,
}

impl GoBinary {
    /// Reads and parses the executable at `path` (for a process, `/proc/PID/exe`, which also
    /// reaches binaries in other mount namespaces). `display` names it in errors. Only a
    /// regular file of at most [`MAX_EXECUTABLE_BYTES`] is read, and only once its headers
    /// say it is a Go executable (see [`ExecutableFile`]).
    pub fn open(path: &Path, display: &Path) -> Result<Self, GoBinaryError> {
        let file = ExecutableFile::open(path, display)?;
        file.check_go()?;
        Self::parse(&file.read()?, display)
    }

    pub fn parse(data: &[u8], path: &Path) -> Result<Self, GoBinaryError> {
        Self::parse_for(data, path, HOST_ARCH)
    }

    /// [`Self::parse`] for a ctxleak running on `host`: it reads Go programs of that
    /// architecture only. Tests and tools use it to read another architecture's binaries.
    pub fn parse_for(
        data: &[u8],
        path: &Path,
        host: object::Architecture,
    ) -> Result<Self, GoBinaryError> {
        let path = path.to_owned();
        let file =
            object::File::parse(data).map_err(|_| GoBinaryError::NotElf { path: path.clone() })?;
        if file.format() != object::BinaryFormat::Elf {
            return Err(GoBinaryError::NotElf { path });
        }
        let buildinfo = file
            .section_by_name(".go.buildinfo")
            .and_then(|section| section.data().ok())
            .ok_or_else(|| GoBinaryError::NotGo { path: path.clone() })?;
        let version =
            buildinfo::parse_version(buildinfo).map_err(|source| GoBinaryError::BuildInfo {
                path: path.clone(),
                source,
            })?;
        if file.architecture() != host {
            return Err(GoBinaryError::Architecture {
                path,
                arch: go_arch(file.architecture()),
            });
        }
        if !version.at_least(MIN_GO.0, MIN_GO.1) {
            return Err(GoBinaryError::TooOld { path, version });
        }
        let pclntab = Pclntab::from_object(&file).map_err(|source| GoBinaryError::Pclntab {
            path: path.clone(),
            source,
        })?;
        let segments: Vec<Segment> = file
            .segments()
            .filter_map(|segment| {
                let (file_offset, file_size) = segment.file_range();
                (file_size > 0).then(|| Segment {
                    address: segment.address(),
                    file_offset,
                    file_size,
                })
            })
            .collect();
        let read = |address: u64, len: u64| code_of(data, &segments, address, len);
        let isa = disasm::Isa::of(file.architecture());
        // Another machine's code is read as x86-64's, as before arm64 (it finds nothing).
        let code_isa = isa.unwrap_or(disasm::Isa::X86_64);
        let g_layout_derived = derive::g_layout(&pclntab, &read, code_isa);
        let mut dwarf_waits = None;
        let mut dwarf_chans = None;
        let (g_layout, layout_source) = if layout::has_dwarf(&file) {
            let layouts =
                layout::read_g_layout(&file, version.at_least(1, 26)).map_err(|source| {
                    GoBinaryError::Layout {
                        path: path.clone(),
                        source,
                    }
                })?;
            let layout = layouts.g;
            dwarf_waits = Some(layouts.waits);
            dwarf_chans = Some(layouts.chans);
            match &g_layout_derived {
                Ok(derived) if *derived != layout => tracing::warn!(
                    "{}: the runtime.g layout derived from the code differs from DWARF ({}); using DWARF",
                    path.display(),
                    derived.differences(&layout).join(", ")
                ),
                Ok(_) => {}
                Err(err) => tracing::debug!("{}: {err}; using DWARF", path.display()),
            }
            (layout, LayoutSource::Dwarf)
        } else {
            let table = offsets::lookup(&version);
            match (&g_layout_derived, table) {
                (Ok(derived), table) => {
                    if table.is_none() {
                        tracing::warn!(
                            "{}: built with {version}, newer than the Go releases ctxleak was checked with: using the runtime.g layout derived from its code",
                            path.display()
                        );
                    }
                    (*derived, LayoutSource::Code)
                }
                (Err(err), Some(layouts)) => {
                    layouts.g.check().map_err(|source| GoBinaryError::Layout {
                        path: path.clone(),
                        source,
                    })?;
                    tracing::warn!(
                        "{}: {err}; using the offset table's layout for {}",
                        path.display(),
                        version.minor_release().unwrap_or_default()
                    );
                    (layouts.g, LayoutSource::Table)
                }
                (Err(err), None) => {
                    let known = offsets::known_versions().join(", ");
                    return Err(GoBinaryError::UnknownLayout {
                        path,
                        version,
                        known,
                        derive: Box::new(err.clone()),
                    });
                }
            }
        };

        // The wait fields: from DWARF, else from the table's entry for the minor release.
        let table_waits = || {
            let minor = version.minor_release().unwrap_or_default();
            offsets::lookup(&version)
                .and_then(|layouts| layouts.waits)
                .filter(|waits| waits.check(g_layout.size).is_ok())
                .map(|waits| (waits, LayoutSource::Table))
                .ok_or_else(|| {
                    format!(
                        "the offset table has no g.waiting/sudog layout for {minor} (it knows {})",
                        offsets::known_versions().join(", ")
                    )
                })
        };
        let waits_derived = derive::wait_layout(&pclntab, &read, g_layout.size, code_isa);
        // The channel fields: from DWARF, else from the table.
        let chans = match dwarf_chans {
            Some(Ok(chans)) => Ok((chans, LayoutSource::Dwarf)),
            Some(Err(err)) => Err(format!("DWARF: {err}")),
            None => offsets::lookup(&version)
                .and_then(|layouts| layouts.chans)
                .filter(|chans| chans.check().is_ok())
                .map(|chans| (chans, LayoutSource::Table))
                .ok_or_else(|| {
                    format!(
                        "the offset table has no hchan layout for {} (it knows {})",
                        version.minor_release().unwrap_or_default(),
                        offsets::known_versions().join(", ")
                    )
                }),
        };
        let waits = match dwarf_waits {
            Some(Ok(waits)) => {
                match &waits_derived {
                    Ok(derived) if *derived != waits => tracing::warn!(
                        "{}: the g.waiting/sudog layout derived from the code differs from DWARF ({}); using DWARF",
                        path.display(),
                        derived.differences(&waits).join(", ")
                    ),
                    Ok(_) => {}
                    Err(err) => tracing::debug!("{}: {err}; using DWARF", path.display()),
                }
                Ok((waits, LayoutSource::Dwarf))
            }
            Some(Err(err)) => Err(format!("DWARF: {err}")),
            None => match &waits_derived {
                Ok(derived) => Ok((*derived, LayoutSource::Code)),
                Err(err) => {
                    let table = table_waits().map_err(|why| format!("{err}; {why}"));
                    if table.is_ok() {
                        tracing::warn!(
                            "{}: {err}; using the offset table's g.waiting/sudog layout",
                            path.display()
                        );
                    }
                    table
                }
            },
        };

        let code = |function: &pclntab::Function<'_>| {
            code_of(
                data,
                &segments,
                function.entry,
                function.end.saturating_sub(function.entry),
            )
        };
        let function = |name: &'static str| needed(&pclntab, name, &path);
        // runtime.allgs: its symbol when the binary has one, else the slice runtime.forEachG
        // ranges over.
        let allgs = match data_symbol(&file, "runtime.allgs") {
            Some(address) => address,
            None => code(&function("runtime.forEachG")?)
                .and_then(|code| isa?.slice_read_by(code, function("runtime.forEachG").ok()?.entry))
                .ok_or_else(|| GoBinaryError::NoAllgs { path: path.clone() })?,
        };

        let sched = sched::sched_addresses(
            &pclntab,
            &read,
            data_symbol(&file, "runtime.allp"),
            code_isa,
        );

        let wait_reasons =
            wait_reason_strings(&file, isa, data, &segments, &pclntab).unwrap_or_default();

        let probes = isa
            .map(|isa| probe_addresses(isa, &pclntab, code, &path))
            .transpose()?;

        Ok(Self {
            path,
            version,
            pclntab,
            g_layout,
            layout_source,
            g_layout_derived,
            waits,
            waits_derived,
            chans,
            probes,
            allgs,
            sched,
            wait_reasons,
            is_pie: file.kind() == ObjectKind::Dynamic,
            modules: buildinfo::module_paths(buildinfo),
            segments,
        })
    }

    /// The `context` probes' places, when the binary has probes and uses package `context`.
    pub fn context_probes(&self) -> Option<&ContextProbes> {
        self.probes.as_ref()?.contexts.as_ref()
    }

    /// One line saying that ctxleak cannot probe this binary's architecture (its probe
    /// placement reads x86-64 and arm64 code: [`disasm::Isa::of`]), or `None` when it can.
    pub fn probes_unavailable(&self) -> Option<String> {
        self.probes.is_none().then(|| {
            format!(
                "memory only: probes are not available for linux/{} programs yet (goroutine counts, census, stacks and pprof work; no context findings)",
                go_arch(HOST_ARCH)
            )
        })
    }

    /// The name of the function containing `pc` (a link-time address).
    pub fn function_name_at(&self, pc: u64) -> Option<std::borrow::Cow<'_, str>> {
        self.pclntab.function_at(pc).map(|function| function.name)
    }

    /// Whether a function belongs to the program rather than to Go's standard library:
    /// package `main`, or a package of the main module or a dependency. Without module
    /// information, Go's own rule of thumb: standard library paths have no dot in their first
    /// element.
    pub fn is_program_function(&self, name: &str) -> bool {
        let package = package_of(name);
        if package == "main" {
            return true;
        }
        if self.modules.is_empty() {
            return package
                .split('/')
                .next()
                .is_some_and(|first| first.contains('.'));
        }
        self.modules.iter().any(|module| {
            package == module
                || package
                    .strip_prefix(module.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// The file offset of a link-time address, as uprobes want it.
    pub fn file_offset(&self, address: u64) -> Option<u64> {
        segment_offset(&self.segments, address)
    }

    /// Link-time address of the first byte of the file's first loadable segment: the runtime
    /// address of the same byte minus this is the load bias.
    pub fn first_segment_address(&self) -> Option<u64> {
        self.segments
            .iter()
            .find(|s| s.file_offset == 0)
            .map(|s| s.address)
    }
}

/// The function `name`, which ctxleak needs: a missing one is an error naming it.
fn needed<'p>(
    pclntab: &'p Pclntab,
    name: &'static str,
    path: &Path,
) -> Result<pclntab::Function<'p>, GoBinaryError> {
    pclntab
        .function(name)
        .ok_or_else(|| GoBinaryError::MissingSymbol {
            path: path.to_owned(),
            symbol: name,
        })
}

/// Where the probes go in a binary of instruction set `isa`, from its runtime's code (`code`
/// gives a function's bytes).
fn probe_addresses<'d>(
    isa: disasm::Isa,
    pclntab: &Pclntab,
    code: impl Fn(&pclntab::Function<'_>) -> Option<&'d [u8]>,
    path: &Path,
) -> Result<ProbeAddresses, GoBinaryError> {
    let path = path.to_owned();
    let function = |name: &'static str| needed(pclntab, name, &path);
    let newproc1 = function("runtime.newproc1")?.entry;
    // Not found (inlined, renamed): every creation is probed after newproc1 instead.
    let runqput = function("runtime.runqput").ok().map(|f| f.entry);
    let goexit1 = function("runtime.goexit1")?;

    // Goroutines are made by runtime.newproc1, called from `go` statements (through
    // runtime.newproc.func1) and from a few other runtime functions (coroutines, debug
    // calls, synctest); probe every call to it from the runtime.
    let mut goroutine_created = Vec::new();
    for function in pclntab
        .functions()
        .filter(|f| f.name.starts_with("runtime.") && !f.is_wrapper())
    {
        if let Some(code) = code(&function) {
            goroutine_created.extend(isa.creation_sites(code, function.entry, newproc1, runqput));
        }
    }
    if goroutine_created.is_empty() {
        return Err(GoBinaryError::NoCreationSite { path });
    }
    let gopark = function("runtime.gopark")?;
    let goroutine_parked = code(&gopark)
        .map(|code| isa.entered(code, gopark.entry, disasm::Reads::G))
        .ok_or_else(|| GoBinaryError::MissingSymbol {
            path: path.clone(),
            symbol: "runtime.gopark",
        })?;
    let goroutine_exited = code(&goexit1)
        .map(|code| isa.entered(code, goexit1.entry, disasm::Reads::G))
        .ok_or_else(|| GoBinaryError::MissingSymbol {
            path: path.clone(),
            symbol: "runtime.goexit1",
        })?;

    let contexts = context_probes(isa, pclntab, |function| code(function));

    Ok(ProbeAddresses {
        goroutine_created,
        goroutine_exited,
        goroutine_parked,
        contexts,
    })
}

/// A size in GiB, for people: `20 GiB`, `1.5 GiB`.
fn gib(bytes: u64) -> String {
    let gib = bytes as f64 / f64::from(1u32 << 30);
    if gib.fract() == 0.0 {
        format!("{gib:.0} GiB")
    } else {
        format!("{gib:.1} GiB")
    }
}

/// The import path of a function's package: `net/http` of `net/http.(*conn).serve`.
fn package_of(name: &str) -> &str {
    let last_slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[last_slash..].find('.') {
        Some(dot) => &name[..last_slash + dot],
        None => name,
    }
}

/// Where the `context` probes go, if the binary has the functions (see [`ContextProbes`]).
/// The insertion into `children` is the one map assignment in `propagateCancel`, with
/// `parentCancelCtx` inlined or not; a build where that is not so gets no context probes
/// rather than a probe in the wrong place.
fn context_probes<'d>(
    isa: disasm::Isa,
    pclntab: &Pclntab,
    code: impl Fn(&pclntab::Function<'_>) -> Option<&'d [u8]>,
) -> Option<ContextProbes> {
    let propagate = pclntab.function("context.(*cancelCtx).propagateCancel")?;
    let cancel = pclntab.function("context.(*cancelCtx).cancel")?;
    let propagate_code = code(&propagate)?;
    let calls = isa.direct_calls(propagate_code, propagate.entry);
    let mut assignments = calls.iter().filter(|call| {
        pclntab.function_at(call.target).is_some_and(|callee| {
            callee.entry == call.target && callee.name.starts_with("runtime.mapassign")
        })
    });
    let registered = assignments.next()?.address;
    if assignments.next().is_some() {
        tracing::warn!(
            "context.(*cancelCtx).propagateCancel assigns to more than one map; not probing contexts"
        );
        return None;
    }
    let text = pclntab
        .functions()
        .filter(|function| package_of(&function.name) == "context")
        .fold((u64::MAX, 0), |(lo, hi), function| {
            (lo.min(function.entry), hi.max(function.end))
        });
    Some(ContextProbes {
        text,
        created: isa.entered(propagate_code, propagate.entry, disasm::Reads::Frame),
        registered,
        // The context and removeFromParent.
        cancelled: code(&cancel)
            .map(|c| isa.entered(c, cancel.entry, disasm::Reads::Arguments(2)))?,
    })
}

/// `runtime.waitReasonStrings`, a `[N]string` in initialised data, read from the file: from
/// its symbol when there is one, else from `runtime.waitReason.String`, which bounds-checks
/// the index against N and loads the array's address (the candidate whose N entries all read
/// as short printable strings; x86-64 and arm64 code, [`disasm::Isa::table_lookup`]).
fn wait_reason_strings(
    file: &object::File<'_>,
    isa: Option<disasm::Isa>,
    data: &[u8],
    segments: &[Segment],
    pclntab: &Pclntab,
) -> Option<Vec<String>> {
    let read_table = |address: u64, count: u64| -> Option<Vec<String>> {
        (0..count)
            .map(|i| {
                let entry = address.checked_add(i.checked_mul(16)?)?;
                let pointer = read_u64(data, segments, entry)?;
                let len = read_u64(data, segments, entry.checked_add(8)?)?;
                if len > 64 {
                    return None;
                }
                if len == 0 {
                    return Some(String::new());
                }
                let bytes = code_of(data, segments, pointer, len)?;
                let text = std::str::from_utf8(bytes).ok()?;
                text.chars()
                    .all(|c| c.is_ascii_graphic() || c == ' ')
                    .then(|| text.to_owned())
            })
            .collect()
    };
    if let Some(symbol) = file
        .symbols()
        .find(|symbol| symbol.name() == Ok("runtime.waitReasonStrings"))
    {
        return read_table(symbol.address(), symbol.size() / 16);
    }
    let function = pclntab.function("runtime.waitReason.String")?;
    let code = code_of(
        data,
        segments,
        function.entry,
        function.end.saturating_sub(function.entry),
    )?;
    let (bound, candidates) = isa?.table_lookup(code, function.entry);
    let count = u64::from(bound?);
    candidates
        .into_iter()
        .find_map(|address| read_table(address, count))
}

fn read_u64(data: &[u8], segments: &[Segment], address: u64) -> Option<u64> {
    Some(u64::from_le_bytes(
        code_of(data, segments, address, 8)?.try_into().ok()?,
    ))
}

/// The address of a data symbol, from `.symtab` when the binary still has one.
fn data_symbol(file: &object::File<'_>, name: &str) -> Option<u64> {
    file.symbols()
        .find(|symbol| symbol.name() == Ok(name))
        .map(|symbol| symbol.address())
}

fn segment_offset(segments: &[Segment], address: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| address >= s.address && address - s.address < s.file_size)
        .and_then(|s| (address - s.address).checked_add(s.file_offset))
}

fn code_of<'d>(data: &'d [u8], segments: &[Segment], address: u64, size: u64) -> Option<&'d [u8]> {
    let start = usize::try_from(segment_offset(segments, address)?).ok()?;
    let end = start.checked_add(usize::try_from(size).ok()?)?;
    data.get(start..end)
}

/// Go's name (`GOARCH`) of an ELF file's architecture, for people.
fn go_arch(architecture: object::Architecture) -> &'static str {
    use object::Architecture as A;
    match architecture {
        A::X86_64 => "amd64",
        A::Aarch64 => "arm64",
        A::I386 => "386",
        A::Arm => "arm",
        A::Riscv64 => "riscv64",
        A::PowerPc64 => "ppc64",
        A::S390x => "s390x",
        A::Mips64 => "mips64",
        A::Mips => "mips",
        A::LoongArch64 => "loong64",
        _ => "another architecture",
    }
}

#[cfg(test)]
mod tests {
    use super::package_of;

    #[test]
    fn package_of_function_names() {
        assert_eq!(package_of("net/http.(*conn).serve"), "net/http");
        assert_eq!(package_of("main.main.func1"), "main");
        assert_eq!(
            package_of("ctxleak.dev/fixtures/pkg.(*T).Run"),
            "ctxleak.dev/fixtures/pkg"
        );
        assert_eq!(package_of("context.WithCancel"), "context");
        assert_eq!(package_of("gopkg.in/yaml.v3.Unmarshal"), "gopkg.in/yaml");
    }
}
