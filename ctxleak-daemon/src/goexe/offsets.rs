//! The offset table for binaries without DWARF: struct layouts of the Go runtime per exact Go
//! version, read from DWARF of reference builds by `cargo xtask offsets` and embedded here.
//!
//! Layouts only change between releases (and were checked identical for exe, PIE, cgo and
//! stripped builds of one toolchain), so the exact version string from `.go.buildinfo` is
//! the key. A binary with DWARF never uses the table: its own DWARF is the truth.

use std::collections::BTreeMap;

use super::layout::GLayout;

/// The layouts of one Go release.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseLayouts {
    #[serde(rename = "runtime.g")]
    pub g: GLayout,
}

/// Go version (`go1.25.5`) to layouts.
pub type OffsetTable = BTreeMap<String, ReleaseLayouts>;

const EMBEDDED: &str = include_str!("../../data/go-offsets.json");

/// The table built into this ctxleak.
pub fn embedded() -> Result<OffsetTable, serde_json::Error> {
    serde_json::from_str(EMBEDDED)
}

/// The layouts for exactly `version`, if the table has them.
pub fn lookup(version: &str) -> Option<ReleaseLayouts> {
    embedded().ok()?.remove(version)
}

/// The versions the table knows, oldest first by release number.
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
            assert!(version.starts_with("go1."), "{version}");
            assert!(g.size >= 400 && g.size <= 1024, "{version}: {g:?}");
            for offset in [g.atomicstatus, g.goid, g.parent_goid, g.gopc, g.startpc] {
                assert!(offset < g.size, "{version}: {g:?}");
            }
        }
    }
}
