//! What the fuzz targets share: the known findings they step around.

use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use object::{Object as _, ObjectSection as _};

/// Findings the targets can step around, so that a run goes on looking for new ones while a
/// fix is pending. Each has a reproducer in `regressions/<target>/`. All of those below are
/// fixed (layout.rs bounds decompressed sizes and checks offsets), so this is false and the
/// reproducers, which `cargo xtask fuzz` runs every time, check the fixes; set it to true only
/// while a new finding awaits its fix.
///
/// - `dwarf/compressed-size-from-header`: `layout::read_g_layout` decompresses DWARF sections
///   with `object`'s `uncompressed_data`, which reserves the size the section's compression
///   header claims (`Elf64_Chdr.ch_size`, or the size after `"ZLIB"` in a `.zdebug_*` section)
///   before reading the stream: a 55-byte input asks for 9 TiB. Stepped around by
///   [`claims_oversized_section`], before the call.
/// - `dwarf/member-offset-overflow`, `dwarf/read-len-overflow`: `layout.rs` adds offsets read
///   from DWARF (`g.stack + stack.hi`, `g.sched + gobuf.sp`, ..., and `+ 8` in
///   `GLayout::read_len`) without checking: a member offset near `u64::MAX` panics with
///   overflow checks on, and wraps to a wrong offset without. Stepped around by
///   [`tolerating_known_panics`].
pub const SKIP_KNOWN_ISSUES: bool = false;

/// Largest decompressed size a section may claim before [`claims_oversized_section`] says so.
/// The inputs are at most a few megabytes; real Go binaries of that size have DWARF sections
/// of a few megabytes decompressed.
pub const MAX_CLAIMED_SECTION: u64 = 64 << 20;

/// Whether a section of `file` claims to decompress to more than [`MAX_CLAIMED_SECTION`].
pub fn claims_oversized_section(file: &object::File<'_>) -> bool {
    file.sections().any(|section| {
        section
            .compressed_data()
            .is_ok_and(|data| data.uncompressed_size > MAX_CLAIMED_SECTION)
    })
}

/// Panics that are known findings: (source file suffix, words of the message).
const KNOWN_PANICS: &[(&str, &str)] = &[("src/goexe/layout.rs", "with overflow")];

thread_local! {
    static KNOWN_PANIC: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f`; None if it panicked with a known finding ([`KNOWN_PANICS`]), when
/// [`SKIP_KNOWN_ISSUES`]. Any other panic is reported as libFuzzer's hook does: a crash.
pub fn tolerating_known_panics<R>(f: impl FnOnce() -> R) -> Option<R> {
    if !SKIP_KNOWN_ISSUES {
        return Some(f());
    }
    static HOOK: Once = Once::new();
    // libfuzzer-sys's hook prints the panic and aborts; this one lets known panics unwind.
    HOOK.call_once(|| {
        let fuzzer_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let message = info.payload_as_str().unwrap_or_default();
            let known = info.location().is_some_and(|location| {
                KNOWN_PANICS
                    .iter()
                    .any(|(file, words)| location.file().ends_with(file) && message.contains(words))
            });
            if known {
                KNOWN_PANIC.set(true);
            } else {
                fuzzer_hook(info);
            }
        }));
    });
    KNOWN_PANIC.set(false);
    match panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(value) => Some(value),
        Err(_) if KNOWN_PANIC.get() => None,
        Err(payload) => panic::resume_unwind(payload),
    }
}
