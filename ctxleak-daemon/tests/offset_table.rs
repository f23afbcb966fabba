//! The embedded offset table (used for binaries without DWARF) equals what DWARF says, for
//! every supported Go toolchain. Regenerate it with `cargo xtask offsets`.

mod common;

use std::path::Path;

use ctxleak_daemon::goexe::{GoBinary, LayoutSource, offsets};

#[test]
fn the_offset_table_equals_dwarf_for_every_toolchain() {
    let table = offsets::embedded().expect("the embedded table parses");
    let mut mismatches = Vec::new();
    for version in common::go_versions() {
        let path = common::fixture(&version, "phases");
        let binary = GoBinary::open(&path, Path::new(&path)).expect("fixture parses");
        assert_eq!(binary.layout_source, LayoutSource::Dwarf);
        let key = format!("go{version}");
        match table.get(&key) {
            Some(entry) if entry.g == binary.g_layout => {}
            Some(entry) => mismatches.push(format!(
                "{key}: table {:?}, DWARF {:?}",
                entry.g, binary.g_layout
            )),
            None => mismatches.push(format!("{key}: missing from the table")),
        }
    }
    assert!(
        mismatches.is_empty(),
        "run `cargo xtask offsets`: {mismatches:#?}"
    );
}
