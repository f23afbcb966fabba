//! What ctxleak reads from Go binaries' code, against the symbols and DWARF of the same
//! program built with them (fixtures made by `cargo xtask fixtures` for every supported Go).
//! arm64 (the `-arm64` and `-arm64-stripped` builds of `phases` and `contexts`): probe
//! placement checked against `go tool objdump` of the same toolchain (oldest and newest Go:
//! every site is where the README's arm64 table says, on an instruction the arm64 kernel
//! simulates where it should be, and the stripped build gets the same sites and
//! `runtime.allgs` as the one with symbols); and on every release, the wait reason strings and
//! the struct layouts (the offset table's, which is per release and not per architecture).
//! Both architectures, every release: the goroutine count's inputs.
//!
//! Run with `cargo xtask test -p ctxleak-goexe --test from_code` (it sets CTXLEAK_FIXTURES
//! and CTXLEAK_GO_VERSIONS).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use ctxleak_goexe::disasm::NewGoroutineIn;
use ctxleak_goexe::{GoBinary, LayoutSource, offsets};
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

/// One line of `go tool objdump`: address, Go's mnemonic and operands.
#[derive(Debug, Clone)]
struct Line {
    address: u64,
    text: String,
}

impl Line {
    fn mnemonic(&self) -> &str {
        self.text.split_whitespace().next().unwrap_or_default()
    }

    /// Go assembly writes the destination last.
    fn destination(&self) -> &str {
        self.text.rsplit([' ', ',']).next().unwrap_or_default()
    }
}

/// What `arch/arm64/kernel/probes/decode-insn.c` simulates, in Go's mnemonics: B (JMP), BL
/// (CALL), B.cond (BEQ, BNE, BLS...), CBZ/CBNZ, TBZ/TBNZ, ADR/ADRP, BR/BLR (JMP/CALL (Rn)),
/// RET.
fn simulated(line: &Line) -> bool {
    let mnemonic = line.mnemonic();
    const CONDITIONS: &[&str] = &[
        "EQ", "NE", "CS", "HS", "CC", "LO", "MI", "PL", "VS", "VC", "HI", "LS", "GE", "LT", "GT",
        "LE",
    ];
    matches!(
        mnemonic,
        "JMP"
            | "CALL"
            | "RET"
            | "CBZ"
            | "CBNZ"
            | "CBZW"
            | "CBNZW"
            | "TBZ"
            | "TBNZ"
            | "ADR"
            | "ADRP"
    ) || mnemonic
        .strip_prefix('B')
        .is_some_and(|condition| CONDITIONS.contains(&condition))
}

fn fixtures() -> PathBuf {
    PathBuf::from(std::env::var_os("CTXLEAK_FIXTURES").expect(
        "CTXLEAK_FIXTURES is not set: run `cargo xtask test -p ctxleak-goexe --test from_code`",
    ))
}

/// Every Go the fixtures were built with.
fn all_versions() -> Vec<String> {
    let list = std::env::var("CTXLEAK_GO_VERSIONS").expect("CTXLEAK_GO_VERSIONS is not set");
    let versions: Vec<String> = list
        .split(',')
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
        .collect();
    assert!(!versions.is_empty(), "CTXLEAK_GO_VERSIONS is empty");
    versions
}

/// The oldest and newest Go the fixtures were built with.
fn versions() -> [String; 2] {
    let versions = all_versions();
    let (Some(oldest), Some(newest)) = (versions.first(), versions.last()) else {
        panic!("CTXLEAK_GO_VERSIONS is empty");
    };
    [oldest.clone(), newest.clone()]
}

fn fixture(version: &str, name: &str) -> PathBuf {
    let path = fixtures().join(format!("go{version}")).join(name);
    assert!(
        path.is_file(),
        "missing {}: run `cargo xtask fixtures`",
        path.display()
    );
    path
}

/// The fixture read for its own architecture (an x86-64 build on any host, an arm64 build on
/// any host).
fn parse(path: &Path) -> GoBinary {
    parse_sched(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()))
}

fn parse_sched(path: &Path) -> Result<GoBinary, ctxleak_goexe::GoBinaryError> {
    let data = std::fs::read(path).expect("read the fixture");
    let architecture = object::File::parse(&*data).expect("ELF").architecture();
    GoBinary::parse_for(&data, path, architecture)
}

/// `go tool objdump` of the whole binary, by function name (the toolchain that built it).
fn objdump(version: &str, binary: &Path) -> BTreeMap<String, Vec<Line>> {
    let go = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../target/tools/go")
        .join(version)
        .join("go/bin/go");
    let output = Command::new(&go)
        .env("GOTOOLCHAIN", "local")
        .args(["tool", "objdump"])
        .arg(binary)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {}: {err}", go.display()));
    assert!(output.status.success(), "go tool objdump failed");
    let mut functions = BTreeMap::new();
    let mut current: Option<&mut Vec<Line>> = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some(rest) = line.strip_prefix("TEXT ") {
            let name = rest.split("(SB)").next().unwrap_or_default().to_owned();
            current = Some(functions.entry(name).or_default());
            continue;
        }
        // "  file.go:12\t0x4bd30\t\tf9400b90\t\tMOVD 16(R28), R16\t"
        let fields: Vec<&str> = line.split('\t').filter(|f| !f.is_empty()).collect();
        if let (Some(lines), [_, address, _, text, ..]) = (current.as_deref_mut(), &fields[..])
            && let Some(hex) = address.strip_prefix("0x")
            && let Ok(address) = u64::from_str_radix(hex, 16)
        {
            lines.push(Line {
                address,
                text: text.trim().to_owned(),
            });
        }
    }
    functions
}

/// The function's lines, and the index of the one at `address`.
fn at<'a>(
    functions: &'a BTreeMap<String, Vec<Line>>,
    name: &str,
    address: u64,
) -> (&'a [Line], usize) {
    let lines = functions
        .get(name)
        .unwrap_or_else(|| panic!("objdump shows no {name}"));
    let index = lines
        .iter()
        .position(|line| line.address == address)
        .unwrap_or_else(|| panic!("{address:#x} is no instruction of {name}"));
    (lines, index)
}

/// The index of the stack check's `BLS` in a function's first instructions.
fn stack_check(lines: &[Line]) -> usize {
    assert!(
        lines[0].text.starts_with("MOVD 16(R28), "),
        "{:?}",
        lines[0]
    );
    lines
        .iter()
        .take(4)
        .position(|line| line.mnemonic() == "BLS")
        .expect("a BLS to morestack")
}

/// A site past the stack check, on a simulated instruction, with only non-branches before it
/// that write none of `kept`.
fn check_entered(functions: &BTreeMap<String, Vec<Line>>, name: &str, site: u64, kept: &[&str]) {
    let (lines, index) = at(functions, name, site);
    let check = stack_check(lines);
    assert!(
        index > check + 1,
        "{name}: {site:#x} is not past the prologue's first store"
    );
    assert!(
        simulated(&lines[index]),
        "{name}: {:?} is not simulated",
        lines[index]
    );
    for line in &lines[check + 1..index] {
        assert!(!simulated(line), "{name}: {line:?} comes before the site");
        assert!(
            !kept.contains(&line.destination()),
            "{name}: {line:?} overwrites what the probe reads"
        );
    }
}

#[test]
fn arm64_probe_sites_match_objdump_on_the_oldest_and_newest_go() {
    for version in versions() {
        let plain_path = fixture(&version, "contexts-arm64");
        let plain = parse(&plain_path);
        let probes = plain.probes.clone().expect("arm64 probes are placed");
        let functions = objdump(&version, &plain_path);

        // What was chosen, for people (`-- --nocapture`).
        for (name, site) in [
            ("runtime.goexit1", probes.goroutine_exited),
            ("runtime.gopark", probes.goroutine_parked),
        ]
        .into_iter()
        .chain(probes.contexts.iter().flat_map(|c| {
            [
                ("context.(*cancelCtx).propagateCancel", c.created),
                ("context.(*cancelCtx).propagateCancel", c.registered),
                ("context.(*cancelCtx).cancel", c.cancelled),
            ]
        })) {
            let (lines, index) = at(&functions, name, site);
            println!(
                "Go {version}: {name}+{:#x}: {}",
                site - lines[0].address,
                lines[index].text
            );
        }
        // goexit1 and gopark read g only: the first simulated instruction after the prologue.
        check_entered(&functions, "runtime.goexit1", probes.goroutine_exited, &[]);
        check_entered(&functions, "runtime.gopark", probes.goroutine_parked, &[]);

        let contexts = probes
            .contexts
            .clone()
            .expect("the context probes are placed");
        // cancel reads the context (R0) and removeFromParent (R1).
        check_entered(
            &functions,
            "context.(*cancelCtx).cancel",
            contexts.cancelled,
            &["R0", "R1"],
        );
        // propagateCancel's program walks the caller's frames: right after the stack check,
        // on the frame store, before SP, R29 and the saved R30 change.
        let name = "context.(*cancelCtx).propagateCancel";
        let (lines, index) = at(&functions, name, contexts.created);
        assert_eq!(index, stack_check(lines) + 1, "{name}");
        assert!(
            lines[index].text.starts_with("MOVD.W R30, -"),
            "{:?}",
            lines[index]
        );
        // The one map assignment of children.
        let (lines, index) = at(&functions, name, contexts.registered);
        assert!(
            lines[index].text.starts_with("CALL runtime.mapassign"),
            "{:?}",
            lines[index]
        );
        assert_eq!(
            lines
                .iter()
                .filter(|l| l.text.starts_with("CALL runtime.mapassign"))
                .count(),
            1
        );

        // One site per call of newproc1 in the runtime; on the go statement's path, the
        // CALL runqput that follows, reading R1.
        let calls: Vec<u64> = functions
            .iter()
            .filter(|(name, _)| name.starts_with("runtime."))
            .flat_map(|(_, lines)| lines)
            .filter(|line| line.text == "CALL runtime.newproc1(SB)")
            .map(|line| line.address)
            .collect();
        assert_eq!(
            probes.goroutine_created.len(),
            calls.len(),
            "{version}: {calls:x?}"
        );
        let (lines, index) = functions
            .get("runtime.newproc.func1")
            .map(|lines| {
                let index = lines
                    .iter()
                    .position(|l| l.text == "CALL runtime.runqput(SB)")
                    .expect("newproc.func1 calls runqput");
                (lines, index)
            })
            .expect("runtime.newproc.func1");
        let enqueued = probes
            .goroutine_created
            .iter()
            .find(|site| site.address == lines[index].address)
            .expect("a site on CALL runqput");
        assert_eq!(enqueued.register, NewGoroutineIn::SecondArgument);
        for site in &probes.goroutine_created {
            let after_newproc1 = calls.contains(&(site.address - 4));
            assert!(
                site.register == NewGoroutineIn::SecondArgument || after_newproc1,
                "{site:?}"
            );
        }

        // Without symbols or DWARF: the same sites, and allgs found in forEachG's code. The
        // stripped link lays data out a little differently (its .bss may move by a few
        // words): allgs is at the same offset in its section.
        let stripped_path = fixture(&version, "contexts-arm64-stripped");
        let stripped = parse(&stripped_path);
        assert_eq!(stripped.probes, Some(probes), "Go {version}, stripped");
        let plain_data = std::fs::read(&plain_path).expect("read");
        let plain_file = object::File::parse(&*plain_data).expect("ELF");
        let allgs = plain_file
            .symbols()
            .find(|symbol| symbol.name() == Ok("runtime.allgs"))
            .expect("runtime.allgs in .symtab");
        let section = plain_file
            .section_by_index(allgs.section_index().expect("a section"))
            .expect("allgs's section");
        let stripped_data = std::fs::read(&stripped_path).expect("read");
        let stripped_file = object::File::parse(&*stripped_data).expect("ELF");
        let moved = stripped_file
            .section_by_name(section.name().expect("a name"))
            .expect("the same section")
            .address();
        assert_eq!(plain.allgs, allgs.address(), "Go {version}");
        assert_eq!(
            stripped.allgs,
            moved + (allgs.address() - section.address()),
            "Go {version}, stripped"
        );
    }
}

/// The address and size of a symbol of the build with symbols.
fn symbol(file: &object::File<'_>, name: &str) -> (u64, u64) {
    file.symbols()
        .find(|symbol| symbol.name() == Ok(name))
        .map(|symbol| (symbol.address(), symbol.size()))
        .unwrap_or_else(|| panic!("no {name} in .symtab"))
}

/// `runtime.waitReason.String`'s bound and table, read from the stripped build's arm64 code,
/// give the strings the unstripped build's `runtime.waitReasonStrings` holds, on every
/// release.
#[test]
fn wait_reasons_of_stripped_arm64_builds_equal_the_symbols_table() {
    let mut failures = Vec::new();
    for version in all_versions() {
        let plain = parse(&fixture(&version, "phases-arm64"));
        let stripped = parse(&fixture(&version, "phases-arm64-stripped"));
        let data = std::fs::read(fixture(&version, "phases-arm64")).expect("read");
        let file = object::File::parse(&*data).expect("ELF");
        let (_, size) = symbol(&file, "runtime.waitReasonStrings");
        let expected = usize::try_from(size / 16).expect("a count");
        eprintln!(
            "Go {version}: {} wait reasons, stripped {}",
            plain.wait_reasons.len(),
            stripped.wait_reasons.len()
        );
        if plain.wait_reasons.len() != expected
            || !plain
                .wait_reasons
                .iter()
                .any(|reason| reason == "chan receive")
            || stripped.wait_reasons != plain.wait_reasons
        {
            failures.push(format!(
                "Go {version}: the symbol's {expected} {:?}, stripped {:?}",
                plain.wait_reasons, stripped.wait_reasons
            ));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Where every release keeps the goroutine count's inputs, found in the code of a stripped
/// build of `phases` (`suffix`: "" for x86-64, "-arm64"), against the symbols of the same
/// program built with them: `goidgen` is the first field of `runtime.sched`, every count lies
/// inside it, `allp` is the symbol, and the stripped build (whose data may sit a few words
/// elsewhere) finds each at the same place relative to `goidgen`, the P's count at the same
/// offset.
fn count_inputs_match_the_symbols(suffix: &str) {
    let mut failures = Vec::new();
    let plain = format!("phases{suffix}");
    let stripped = format!("phases{suffix}-stripped");
    for version in all_versions() {
        let data = std::fs::read(fixture(&version, &plain)).expect("read");
        let file = object::File::parse(&*data).expect("ELF");
        let (sched, sched_size) = symbol(&file, "runtime.sched");
        let (allp, _) = symbol(&file, "runtime.allp");
        let found = |build: &str| parse_sched(&fixture(&version, build)).map(|binary| binary.sched);
        let (with, without) = match (found(&plain), found(&stripped)) {
            (Ok(Ok(with)), Ok(Ok(without))) => (with, without),
            (with, without) => {
                failures.push(format!("Go {version}: {with:?} / {without:?}"));
                continue;
            }
        };
        let inside = |address: u64| (sched..sched + sched_size).contains(&address);
        if with.goidgen != sched
            || !inside(with.ngsys)
            || !with.free.iter().all(|&address| inside(address))
            || with.allp != allp
        {
            failures.push(format!(
                "Go {version}: {with:x?} against runtime.sched at {sched:#x} ({sched_size} bytes), runtime.allp at {allp:#x}"
            ));
        }
        let relative = |found: &ctxleak_goexe::sched::SchedAddresses| {
            let from = |address: u64| address.wrapping_sub(found.goidgen);
            (
                from(found.ngsys),
                found.free.iter().map(|&a| from(a)).collect::<Vec<_>>(),
                from(found.allp),
                found.p_free,
            )
        };
        if relative(&with) != relative(&without) {
            failures.push(format!(
                "Go {version}: stripped {without:x?}, with symbols {with:x?}"
            ));
        }
        eprintln!("Go {version}{suffix}: {with:x?}");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

#[test]
fn count_inputs_are_found_in_every_release() {
    count_inputs_match_the_symbols("");
}

#[test]
fn count_inputs_of_arm64_builds_are_found_in_every_release() {
    count_inputs_match_the_symbols("-arm64");
}

/// The offset table is keyed by Go release, not by architecture: its entry for each release
/// equals the DWARF of the arm64 build (runtime.g and the wait fields), and so do the layouts
/// a stripped arm64 build uses (derived from its code, see the next test, else the table's).
#[test]
fn offset_table_matches_arm64_dwarf_on_every_release() {
    let mut failures = Vec::new();
    for version in all_versions() {
        let plain = parse(&fixture(&version, "phases-arm64"));
        let stripped = parse(&fixture(&version, "phases-arm64-stripped"));
        assert_eq!(plain.layout_source, LayoutSource::Dwarf, "Go {version}");
        let Some(table) = offsets::lookup(&plain.version) else {
            failures.push(format!("Go {version}: no entry in the offset table"));
            continue;
        };
        let mut differences = table.g.differences(&plain.g_layout);
        match (&table.waits, &plain.waits) {
            (Some(waits), Ok((dwarf, LayoutSource::Dwarf))) => {
                differences.extend(waits.differences(dwarf));
            }
            other => differences.push(format!("wait layouts: {other:?}")),
        }
        differences.extend(stripped.g_layout.differences(&plain.g_layout));
        match &stripped.waits {
            Ok((waits, _)) if Ok(waits) == plain.waits.as_ref().map(|(w, _)| w) => {}
            other => differences.push(format!("the stripped build's wait layout: {other:?}")),
        }
        eprintln!(
            "Go {version}: table and arm64 DWARF {}; the stripped build's layout from {:?}",
            if differences.is_empty() {
                "agree"
            } else {
                "DIFFER"
            },
            stripped.layout_source
        );
        if !differences.is_empty() {
            failures.push(format!("Go {version}: {}", differences.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// The layouts derived from the arm64 code of each release's stripped build (runtime.g and
/// the wait fields, `ctxleak_goexe::derive` on arm64) equal the DWARF of the build with it,
/// field for field, and are what the stripped build uses.
#[test]
fn layouts_derived_from_stripped_arm64_code_equal_dwarf_on_every_release() {
    let mut failures = Vec::new();
    for version in all_versions() {
        let plain = parse(&fixture(&version, "phases-arm64"));
        let stripped = parse(&fixture(&version, "phases-arm64-stripped"));
        assert_eq!(plain.layout_source, LayoutSource::Dwarf, "Go {version}");
        let Ok((dwarf_waits, LayoutSource::Dwarf)) = &plain.waits else {
            panic!("Go {version}: no wait layout from DWARF: {:?}", plain.waits);
        };
        let mut differences = Vec::new();
        match &stripped.g_layout_derived {
            Ok(derived) => differences.extend(derived.differences(&plain.g_layout)),
            Err(err) => differences.push(format!("runtime.g: {err}")),
        }
        match &stripped.waits_derived {
            Ok(derived) => differences.extend(derived.differences(dwarf_waits)),
            Err(err) => differences.push(format!("waits: {err}")),
        }
        if stripped.layout_source != LayoutSource::Code {
            differences.push(format!("runtime.g from {:?}", stripped.layout_source));
        }
        if !matches!(stripped.waits, Ok((_, LayoutSource::Code))) {
            differences.push(format!("waits: {:?}", stripped.waits));
        }
        // The build with DWARF derives the same from the same code.
        if plain.g_layout_derived != stripped.g_layout_derived
            || plain.waits_derived != stripped.waits_derived
        {
            differences.push("the builds with and without DWARF derive differently".to_owned());
        }
        eprintln!(
            "Go {version}: arm64 code and DWARF {}",
            if differences.is_empty() {
                "agree"
            } else {
                "DIFFER"
            }
        );
        if !differences.is_empty() {
            failures.push(format!("Go {version}: {}", differences.join(", ")));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
