//! The whole pipeline on a whole file: `GoBinary::parse` (ELF, `.go.buildinfo`, the pclntab
//! with `Pclntab::from_object`, symbols, DWARF or the offset table, disassembly), then lookups
//! in the table it read. When parsing fails, `Pclntab::from_object` runs on its own, so that
//! its section search and `runtime.firstmoduledata` search are fuzzed on files whose build
//! info is broken too.
//!
//! Each file is parsed for its own architecture (`GoBinary::parse_for`), as a ctxleak built for
//! it would.
//!
//! Slow per run (a run reads a 1–2.5 MB Go binary), but it is the real entry point. Seeds:
//! whole fixtures (`phases`, `phases-stripped`, `phases-pie-stripped` of every Go version, and
//! `phases-arm64` and `phases-arm64-stripped`); run
//! it with `-max_len` above the largest (`cargo xtask fuzz` does).

#![no_main]

use std::path::Path;

use ctxleak_goexe::GoBinary;
use ctxleak_goexe::pclntab::Pclntab;
use ctxleak_goexe::symbolize::symbolize;
use ctxleak_goexe_fuzz::{SKIP_KNOWN_ISSUES, claims_oversized_section, tolerating_known_panics};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let file = object::File::parse(data);
    if SKIP_KNOWN_ISSUES && file.as_ref().is_ok_and(claims_oversized_section) {
        return;
    }
    // Each file as ctxleak running on its own architecture would read it: arm64 seeds (and
    // mutants that keep their header) reach the arm64 decoder, the others the x86 one.
    let arch = file
        .as_ref()
        .map_or(object::Architecture::X86_64, object::Object::architecture);
    let Some(parsed) =
        tolerating_known_panics(|| GoBinary::parse_for(data, Path::new("fuzz"), arch))
    else {
        return;
    };
    match parsed {
        Ok(binary) => {
            let _ = binary.g_layout.probe_offsets();
            let _ = tolerating_known_panics(|| binary.g_layout.read_len());
            let _ = binary.first_segment_address();
            let probes = binary.probes.iter();
            for &address in probes
                .clone()
                .flat_map(|probes| probes.goroutine_created.iter().take(8))
                .map(|site| &site.address)
                .chain(probes.map(|probes| &probes.goroutine_exited))
                .chain([&binary.allgs])
            {
                let _ = binary.file_offset(address);
                let _ = binary.function_name_at(address);
            }
            lookups(&binary.pclntab);
        }
        Err(error) => {
            let _ = error.to_string();
            let Ok(file) = file else { return };
            if let Ok(pclntab) = Pclntab::from_object(&file) {
                lookups(&pclntab);
            }
        }
    }
});

/// A few functions the daemon looks up, with the inline trees found in the file.
fn lookups(pclntab: &Pclntab) {
    for name in [
        "runtime.newproc1",
        "runtime.goexit1",
        "runtime.main",
        "main.main",
    ] {
        if let Some(function) = pclntab.function(name) {
            let _ = function.file_line(function.entry);
            let _ = symbolize(pclntab, function.entry);
            for index in 0..4 {
                let _ = function.inlined_call(index);
            }
        }
    }
}
