//! The DWARF reader (`layout::read_g_layout`) on hostile DWARF sections.
//!
//! Why sections in a made-up ELF rather than whole binaries: `read_g_layout` takes an
//! `object::File`, and in a whole Go binary (as the `gobinary` target fuzzes) the DWARF is a
//! few compressed sections among a couple of megabytes of code and tables, so most mutations
//! land elsewhere and each run also pays for the symbol table and disassembly: tens of runs a
//! second. Here every byte of the input is DWARF (or its compression header), the ELF around it
//! costs microseconds to write, and the fuzzer runs hundreds to thousands of times a second.
//! The sections still go through `object`'s section lookup and decompression, as they do for a
//! real binary.
//!
//! Input layout (what `cargo xtask fuzz` writes for the seeds, from the fixtures' DWARF):
//!
//! | bytes | what |
//! |---|---|
//! | 1 | flags: bit 0 set makes a big-endian ELF |
//! | 6 × 5 | for each of `.debug_info`, `.debug_abbrev`, `.debug_str`, `.debug_str_offsets`, `.debug_line`, `.debug_line_str`: a mode byte (below, modulo 4) and a u32 LE length |
//! | rest | the sections' bytes, one after the other (each length clamped to what is left) |
//!
//! Modes: 0 the section is absent; 1 plain; 2 `SHF_COMPRESSED` (the bytes start with an
//! `Elf64_Chdr`, as Go writes them); 3 named `.zdebug_*` (GNU style: `"ZLIB"`, a u64 BE size,
//! a zlib stream).

#![no_main]

use ctxleak_goexe::layout::read_g_layout;
use ctxleak_goexe_fuzz::{SKIP_KNOWN_ISSUES, claims_oversized_section, tolerating_known_panics};
use libfuzzer_sys::fuzz_target;
use object::write::Object;
use object::{Architecture, BinaryFormat, Endianness, SectionFlags, SectionKind, elf};

const SECTIONS: [&str; 6] = ["info", "abbrev", "str", "str_offsets", "line", "line_str"];
const HEADER_LEN: usize = 1 + 5 * SECTIONS.len();

fuzz_target!(|data: &[u8]| {
    let Some((header, mut rest)) = data.split_at_checked(HEADER_LEN) else {
        return;
    };
    let endian = if header[0] & 1 == 0 {
        Endianness::Little
    } else {
        Endianness::Big
    };
    let architecture = if endian == Endianness::Little {
        Architecture::X86_64
    } else {
        Architecture::PowerPc64
    };
    let mut elf = Object::new(BinaryFormat::Elf, architecture, endian);
    for (i, name) in SECTIONS.iter().enumerate() {
        let field = &header[1 + 5 * i..1 + 5 * (i + 1)];
        let mode = field[0] % 4;
        let len =
            (u32::from_le_bytes([field[1], field[2], field[3], field[4]]) as usize).min(rest.len());
        let (bytes, next) = rest.split_at(len);
        rest = next;
        let name = match mode {
            0 => continue,
            3 => format!(".zdebug_{name}"),
            _ => format!(".debug_{name}"),
        };
        let id = elf.add_section(Vec::new(), name.into_bytes(), SectionKind::Debug);
        let section = elf.section_mut(id);
        section.set_data(bytes, 1);
        if mode == 2 {
            section.flags = SectionFlags::Elf {
                sh_type: elf::SHT_PROGBITS,
                sh_flags: elf::SHF_COMPRESSED,
            };
        }
    }
    let Ok(bytes) = elf.write() else { return };
    let file =
        object::File::parse(&*bytes).expect("object cannot read the ELF its own writer made");
    if SKIP_KNOWN_ISSUES && claims_oversized_section(&file) {
        return;
    }
    tolerating_known_panics(|| {
        if let Ok(layouts) = read_g_layout(&file, true) {
            let layout = layouts.g;
            // What the daemon does with a layout: the probe offsets and how much of a g to read.
            let _ = layout.probe_offsets();
            let _ = layout.read_len();
        }
    });
});
