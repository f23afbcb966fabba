//! `.go.buildinfo` parsing: the input is the section's contents.
//!
//! Seeds: the `.go.buildinfo` sections of the Go fixtures (`cargo xtask fuzz` extracts them).

#![no_main]

use ctxleak_goexe::buildinfo::parse_version;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(version) = parse_version(data) {
        // What GoBinary does with the result: both must hold for any string.
        let _ = version.at_least(1, 21);
        let _ = version.to_string();
    }
});
