//! `ctxleak inspect`: what ctxleak reads from a Go binary, without attaching to anything.
//! For people asking "why won't it attach?", and for `cargo xtask offsets`, which builds the
//! offset table from its JSON.

use std::path::Path;

use crate::goexe::offsets::ReleaseLayouts;
use crate::goexe::symbolize::{self, Frame};
use crate::goexe::{GoBinary, GoBinaryError, LayoutSource};

/// A program counter and where it is in the source, innermost inlined frame first.
#[derive(Debug, serde::Serialize)]
pub struct Location {
    pub pc: u64,
    pub frames: Vec<SourceFrame>,
}

#[derive(Debug, serde::Serialize)]
pub struct SourceFrame {
    pub function: String,
    pub file: String,
    pub line: u32,
    pub inlined: bool,
}

impl From<Frame> for SourceFrame {
    fn from(frame: Frame) -> Self {
        Self {
            function: frame.function,
            file: frame.file,
            line: frame.line,
            inlined: frame.inlined,
        }
    }
}

fn locate(binary: &GoBinary, pc: u64) -> Location {
    let frames = symbolize::symbolize(&binary.pclntab, pc).unwrap_or_default();
    Location {
        pc,
        frames: frames.into_iter().map(SourceFrame::from).collect(),
    }
}

impl std::fmt::Display for Location {
    /// `0x4a1b2c main.worker (/src/app/main.go:42)`, inlined frames first, each named as
    /// "inlined into" the next.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#x}", self.pc)?;
        if self.frames.is_empty() {
            return write!(f, " (not in any function)");
        }
        for (i, frame) in self.frames.iter().enumerate() {
            let joint = if i == 0 { " " } else { " inlined into " };
            write!(
                f,
                "{joint}{} ({}:{})",
                frame.function, frame.file, frame.line
            )?;
        }
        Ok(())
    }
}

#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub path: String,
    pub go_version: String,
    pub pie: bool,
    /// Where the layouts came from: "dwarf", "code" (derived from the runtime's machine code)
    /// or "table" (the offset table, by minor release).
    pub layout_source: LayoutSource,
    pub layouts: ReleaseLayouts,
    /// The layouts derived from the runtime's code (also when DWARF gave them), or why not.
    pub layouts_derived: Result<ReleaseLayouts, String>,
    /// Where `layouts.waits` came from, or why it is unknown.
    pub waits_source: Result<LayoutSource, String>,
    /// Where `layouts.chans` came from, or why it is unknown.
    pub chans_source: Result<LayoutSource, String>,
    /// Link-time addresses.
    pub allgs: u64,
    /// Where the inputs of the runtime's own goroutine count are (link-time addresses), or
    /// why they could not be found.
    pub goroutine_count: Result<crate::goexe::sched::SchedAddresses, String>,
    pub functions: usize,
    pub wait_reasons: Vec<String>,
    pub probe_goroutine_created: Vec<Location>,
    /// None where ctxleak cannot place probes yet ([`GoBinary::probes_unavailable`]).
    pub probe_goroutine_exited: Option<Location>,
    /// The PCs asked for with --pc.
    pub pcs: Vec<Location>,
}

/// Reads the binary at `path`; `pcs` are link-time addresses to symbolize.
pub fn inspect(path: &Path, display: &Path, pcs: &[u64]) -> Result<Inspection, GoBinaryError> {
    let binary = GoBinary::open(path, display)?;
    Ok(Inspection {
        path: display.display().to_string(),
        go_version: binary.version.raw.clone(),
        pie: binary.is_pie,
        layout_source: binary.layout_source,
        layouts: ReleaseLayouts {
            g: binary.g_layout,
            waits: binary.waits.as_ref().ok().map(|&(waits, _)| waits),
            chans: binary.chans.as_ref().ok().map(|&(chans, _)| chans),
        },
        layouts_derived: binary
            .g_layout_derived
            .as_ref()
            .map(|&g| ReleaseLayouts {
                g,
                waits: binary.waits_derived.as_ref().ok().copied(),
                chans: None,
            })
            .map_err(ToString::to_string),
        chans_source: binary
            .chans
            .as_ref()
            .map(|&(_, source)| source)
            .map_err(Clone::clone),
        waits_source: binary
            .waits
            .as_ref()
            .map(|&(_, source)| source)
            .map_err(Clone::clone),
        allgs: binary.allgs,
        goroutine_count: binary.sched.clone().map_err(|err| err.to_string()),
        functions: binary.pclntab.len(),
        wait_reasons: binary.wait_reasons.clone(),
        probe_goroutine_created: binary
            .probes
            .iter()
            .flat_map(|probes| &probes.goroutine_created)
            .map(|site| locate(&binary, site.address))
            .collect(),
        probe_goroutine_exited: binary
            .probes
            .as_ref()
            .map(|probes| locate(&binary, probes.goroutine_exited)),
        pcs: pcs.iter().map(|&pc| locate(&binary, pc)).collect(),
    })
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.layouts.g;
        writeln!(
            f,
            "{}: {}{}",
            self.path,
            self.go_version,
            if self.pie { ", PIE" } else { "" }
        )?;
        writeln!(
            f,
            "runtime.g ({:?}): size {}, atomicstatus +{}, goid +{}, parentGoid +{}, gopc +{}, startpc +{}",
            self.layout_source, g.size, g.atomicstatus, g.goid, g.parent_goid, g.gopc, g.startpc
        )?;
        match &self.layouts_derived {
            // The layout shown is the derived one.
            _ if self.layout_source == LayoutSource::Code => {}
            Ok(derived) if derived.g == *g => {
                writeln!(f, "runtime.g derived from the runtime's code: the same")?
            }
            Ok(derived) => writeln!(
                f,
                "runtime.g derived from the runtime's code differs: {}",
                derived.g.differences(g).join(", ")
            )?,
            Err(err) => writeln!(f, "{err}")?,
        }
        match (&self.layouts.waits, &self.waits_source) {
            (Some(waits), Ok(source)) => writeln!(
                f,
                "waits ({source:?}): g.waiting +{}, g.waitsince +{}, sudog.c +{}, sudog.waitlink +{}",
                waits.g_waiting, waits.g_waitsince, waits.sudog_c, waits.sudog_waitlink
            )?,
            (_, Err(why)) => writeln!(f, "channel waits unknown: {why}")?,
            _ => {}
        }
        match (&self.layouts.chans, &self.chans_source) {
            (Some(chans), Ok(source)) => writeln!(
                f,
                "channels ({source:?}): hchan.qcount +{}, dataqsiz +{}, closed +{}, sendx +{}, recvx +{}, recvq +{}, sendq +{}, sudog.next +{}",
                chans.qcount,
                chans.dataqsiz,
                chans.closed,
                chans.sendx,
                chans.recvx,
                chans.recvq,
                chans.sendq,
                chans.sudog_next
            )?,
            (_, Err(why)) => writeln!(f, "channels unknown: {why}")?,
            _ => {}
        }
        writeln!(
            f,
            "runtime.allgs at {:#x}; {} functions",
            self.allgs, self.functions
        )?;
        match &self.goroutine_count {
            Ok(sched) => writeln!(
                f,
                "goroutine count from memory: sched.goidgen at {:#x}, sched.ngsys at {:#x}, free list count{} at {}, runtime.allp at {:#x}, a p's free list count at +{}",
                sched.goidgen,
                sched.ngsys,
                if sched.free.len() > 1 { "s" } else { "" },
                sched
                    .free
                    .iter()
                    .map(|address| format!("{address:#x}"))
                    .collect::<Vec<_>>()
                    .join(" and "),
                sched.allp,
                sched.p_free
            )?,
            Err(err) => writeln!(
                f,
                "goroutine count from memory: {err}; counted by reading every g"
            )?,
        }
        for location in &self.probe_goroutine_created {
            writeln!(f, "goroutine-created probe: {location}")?;
        }
        match &self.probe_goroutine_exited {
            Some(location) => write!(f, "goroutine-exited probe: {location}")?,
            None => write!(f, "probes: none on this architecture yet")?,
        }
        for location in &self.pcs {
            write!(f, "\n{location}")?;
        }
        Ok(())
    }
}
