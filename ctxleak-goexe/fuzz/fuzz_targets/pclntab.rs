//! `.gopclntab` parsing and every lookup on the parsed table.
//!
//! Input layout (what `cargo xtask fuzz` writes for the seeds, from the fixtures' tables):
//!
//! | bytes | what |
//! |---|---|
//! | 8 | `text_start`, u64 LE, passed to `Pclntab::from_bytes` (0: `None`) |
//! | 4 | `n`, u32 LE: length of the inline-tree bytes that follow (clamped to what is left) |
//! | n | the bytes from `moduledata.gofunc` (`go:func.*`), for `with_inline_trees`; none if 0 |
//! | rest | the table |
//!
//! Parsing checks the header and every function record up front; the pc-value tables and
//! inline trees are decoded lazily, so the target also looks things up: a bounded number of
//! functions from both ends of the table, functions at PCs derived from the input, their
//! lines, pcdata, inline indexes and inline-tree entries, and `symbolize`.

#![no_main]

use ctxleak_goexe::pclntab::{Function, Pclntab};
use ctxleak_goexe::symbolize::{name_for_print, symbolize, symbolize_return_address};
use libfuzzer_sys::fuzz_target;

/// Functions looked at from each end of the table, and PCs looked up.
const FUNCTIONS_PER_END: usize = 32;
const PCS: u64 = 16;

fuzz_target!(|data: &[u8]| {
    let Some((text_start, rest)) = data.split_first_chunk::<8>() else {
        return;
    };
    let Some((gofunc_len, rest)) = rest.split_first_chunk::<4>() else {
        return;
    };
    let text_start = u64::from_le_bytes(*text_start);
    let gofunc_len = (u32::from_le_bytes(*gofunc_len) as usize).min(rest.len());
    let (gofunc, table) = rest.split_at(gofunc_len);

    let Ok(mut pclntab) = Pclntab::from_bytes(table, (text_start != 0).then_some(text_start))
    else {
        return;
    };
    if !gofunc.is_empty() {
        pclntab = pclntab.with_inline_trees(gofunc);
    }
    let pclntab = &pclntab;
    let _ = format!("{pclntab:?}");
    let _ = (
        pclntab.len(),
        pclntab.is_empty(),
        pclntab.text_start(),
        pclntab.has_inline_trees(),
    );
    let _ = pclntab.wrapper_func_id();

    // Functions from both ends of the table.
    let n = pclntab.len();
    let ends = (0..n.min(FUNCTIONS_PER_END))
        .chain(n.saturating_sub(FUNCTIONS_PER_END).max(FUNCTIONS_PER_END)..n);
    for index in ends {
        if let Some(function) = pclntab.function_by_index(index) {
            exercise(pclntab, &function, PCs::within(&function));
        }
    }

    // PCs spread over the text, from a seed taken from the input: function_at's binary search,
    // then the same lookups as above at that PC.
    let (Some(first), Some(last)) = (
        pclntab.function_by_index(0),
        n.checked_sub(1).and_then(|i| pclntab.function_by_index(i)),
    ) else {
        return;
    };
    let span = last.end.saturating_sub(first.entry).max(1);
    let mut seed = table
        .iter()
        .rev()
        .take(8)
        .fold(0x9e37_79b9_7f4a_7c15u64, |h, &b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
    for _ in 0..PCS {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let pc = first.entry.wrapping_add((seed >> 11) % span);
        if let Some(function) = pclntab.function_at(pc) {
            assert!(
                function.contains(pc),
                "function_at({pc:#x}) gave {function:?}"
            );
            exercise(pclntab, &function, [pc, pc, pc]);
        }
        let _ = symbolize_return_address(pclntab, pc);
    }
    // Outside the text.
    for pc in [0, first.entry.wrapping_sub(1), last.end, u64::MAX] {
        let _ = pclntab.function_at(pc);
        let _ = symbolize(pclntab, pc);
    }
    // Lookups by name (linear scans), for names the table has and names it may not have.
    let _ = pclntab.function(&first.name);
    let _ = pclntab.functions_named(&last.name).take(4).count();
    let _ = pclntab.function("runtime.main");
});

struct PCs;

impl PCs {
    /// The entry, the middle and the last byte of a function.
    fn within(function: &Function<'_>) -> [u64; 3] {
        let mid = function.entry + (function.end.saturating_sub(function.entry)) / 2;
        [
            function.entry,
            mid,
            function.end.saturating_sub(1).max(function.entry),
        ]
    }
}

fn exercise(pclntab: &Pclntab, function: &Function<'_>, pcs: [u64; 3]) {
    let _ = format!("{function:?}");
    let _ = name_for_print(&function.name);
    let _ = (function.is_wrapper(), function.has_line_table());
    for pc in pcs {
        let _ = function.file_line(pc);
        let _ = function.sp_delta(pc);
        for table in [0, 1, 2, 3] {
            let _ = function.pcdata(table, pc);
        }
        if let Some(index) = function.inline_index(pc) {
            let _ = function.inlined_call(index);
        }
        if let Some(frames) = symbolize(pclntab, pc) {
            assert!(
                !frames.is_empty() && !frames[frames.len() - 1].inlined,
                "{frames:?}"
            );
        }
    }
    for index in [0, 1, 7, u32::MAX] {
        let _ = function.inlined_call(index);
    }
}
