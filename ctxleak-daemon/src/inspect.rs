//! `ctxleak inspect`: what ctxleak reads from a Go binary, without attaching to anything.
//! For people asking "why won't it attach?", and for `cargo xtask offsets`, which builds the
//! offset table from its JSON.

use std::path::Path;

use crate::goexe::offsets::ReleaseLayouts;
use crate::goexe::{GoBinary, GoBinaryError, LayoutSource};

#[derive(Debug, serde::Serialize)]
pub struct Inspection {
    pub path: String,
    pub go_version: String,
    pub pie: bool,
    /// Where the layouts came from: "dwarf" or "table".
    pub layout_source: LayoutSource,
    pub layouts: ReleaseLayouts,
    /// Link-time addresses.
    pub allgs: u64,
    pub probe_goroutine_created: Vec<u64>,
    pub probe_goroutine_exited: u64,
}

pub fn inspect(path: &Path, display: &Path) -> Result<Inspection, GoBinaryError> {
    let binary = GoBinary::open(path, display)?;
    Ok(Inspection {
        path: display.display().to_string(),
        go_version: binary.version.raw.clone(),
        pie: binary.is_pie,
        layout_source: binary.layout_source,
        layouts: ReleaseLayouts { g: binary.g_layout },
        allgs: binary.allgs,
        probe_goroutine_created: binary.probes.goroutine_created.clone(),
        probe_goroutine_exited: binary.probes.goroutine_exited,
    })
}

impl std::fmt::Display for Inspection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = &self.layouts.g;
        writeln!(f, "{}: {}{}", self.path, self.go_version, if self.pie { ", PIE" } else { "" })?;
        writeln!(
            f,
            "runtime.g ({:?}): size {}, atomicstatus +{}, goid +{}, parentGoid +{}, gopc +{}, startpc +{}",
            self.layout_source, g.size, g.atomicstatus, g.goid, g.parent_goid, g.gopc, g.startpc
        )?;
        writeln!(f, "runtime.allgs at {:#x}", self.allgs)?;
        let created: Vec<String> = self.probe_goroutine_created.iter().map(|a| format!("{a:#x}")).collect();
        writeln!(f, "goroutine-created probes at {}", created.join(", "))?;
        write!(f, "goroutine-exited probe at {:#x}", self.probe_goroutine_exited)
    }
}
