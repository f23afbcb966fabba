//! `cargo xtask fuzz`: the fuzz targets in ctxleak-goexe/fuzz (cargo fuzz, libFuzzer) for the
//! readers of Go binaries. It installs cargo-fuzz when missing, builds the Go fixtures, extracts
//! a seed corpus from them into target/fuzz/corpus/<target>/ (megabytes: generated, never
//! committed), then runs each target on those seeds and the committed reproducers
//! (ctxleak-goexe/fuzz/regressions/<target>/), with limits that turn a hang or an oversized
//! allocation into a failure, and reports runs, coverage and crashes. What a run finds goes to
//! target/fuzz/found/<target>/, its log to target/fuzz/logs/<target>.log.
//!
//! The input formats of the `pclntab` and `dwarf` targets are written here and read there: a
//! change to one needs the same change to the other (each target's file documents its own).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs;
use std::io::{BufRead, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::builder::PossibleValuesParser;
use object::{Object as _, ObjectSection as _, ObjectSymbol as _};

use crate::{fixtures, go, process, setup, workspace::Workspace};

/// The fuzz targets, in the order `cargo xtask fuzz` runs them.
const TARGETS: &[&str] = &["buildinfo", "pclntab", "dwarf", "gobinary"];

/// The fixtures the seeds come from: with DWARF and symbols, without either, and PIE without
/// either (its table sits in `.data.rel.ro.gopclntab` before Go 1.26).
const SEED_FIXTURES: &[&str] = &["phases", "phases-stripped", "phases-pie-stripped"];

/// The arm64 builds among the seeds: the
/// `gobinary` target reads each file for its own architecture, so these reach the arm64
/// decoder (ctxleak-goexe/src/disasm/arm64.rs).
const ARM64_SEED_FIXTURES: &[&str] = &["phases-arm64", "phases-arm64-stripped"];

/// libFuzzer's limits. A run above RSS_LIMIT_MB, a single allocation above MALLOC_LIMIT_MB
/// (inputs are at most a few megabytes: anything near this was sized from a count in the
/// file), or one input taking longer than the target's timeout is a failure.
const RSS_LIMIT_MB: u32 = 2048;
const MALLOC_LIMIT_MB: u32 = 512;

/// cargo-fuzz, when it has to be installed.
const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Fuzz the readers of Go binaries (cargo fuzz): build the fixtures, extract seeds from them
/// into target/fuzz/corpus/<target>/, run each target (all by default) and report.
#[derive(clap::Args)]
pub struct Options {
    /// One target: buildinfo, pclntab, dwarf or gobinary.
    #[arg(value_parser = PossibleValuesParser::new(TARGETS.iter().copied()))]
    target: Option<String>,
    /// How long to fuzz each target.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    /// Run every seed once and stop (quick, for CI).
    #[arg(long, conflicts_with = "seconds")]
    smoke: bool,
}

/// Seconds one input may take before libFuzzer calls it a hang. A `gobinary` run reads a
/// whole binary (tens of milliseconds with the sanitizer, more for the largest inputs); the
/// others read one section.
fn timeout_seconds(target: &str) -> u32 {
    match target {
        "gobinary" => 30,
        _ => 10,
    }
}

pub fn run(ws: &Workspace, options: &Options) -> Result<ExitCode> {
    let Options {
        target: only,
        seconds,
        smoke,
    } = options;
    let (seconds, smoke) = (*seconds, *smoke);
    setup::ensure(ws)?;
    ensure_cargo_fuzz()?;
    // Only the program the seeds come from (with its variants).
    fixtures::build(ws, go::GO_VERSIONS, &[SEED_FIXTURES[0].to_string()], true)?;

    let targets: Vec<&str> = match only {
        Some(target) => vec![target.as_str()],
        None => TARGETS.to_vec(),
    };
    let corpus_root = ws.fuzz_out().join("corpus");
    let found_root = ws.fuzz_out().join("found");
    let mut seeds = BTreeMap::new();
    for &target in &targets {
        let dir = corpus_root.join(target);
        let stats = write_seeds(ws, target, &dir)?;
        println!(
            "fuzz: {} seeds for {target} in {} (largest {} bytes)",
            stats.count,
            shown(ws, &dir),
            stats.largest
        );
        seeds.insert(target, (dir, stats));
    }

    build(ws)?;
    let logs = ws.fuzz_out().join("logs");
    fs::create_dir_all(&logs).with_context(|| format!("could not create {}", logs.display()))?;
    let mut outcomes = Vec::new();
    for &target in &targets {
        let (dir, stats) = &seeds[target];
        // Room for mutations to grow the largest seed.
        let max_len = (stats.largest + stats.largest / 4).max(4096);
        println!(
            "\nfuzz: {target}: {}",
            if smoke {
                "every seed once".to_string()
            } else {
                format!("{seconds} s")
            }
        );
        outcomes.push(run_target(
            ws,
            target,
            dir,
            &found_root.join(target),
            &logs,
            max_len,
            seconds,
            smoke,
        )?);
    }

    println!("\n{}", summary(ws, &outcomes));
    Ok(if outcomes.iter().all(|o| o.success) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn shown(ws: &Workspace, path: &Path) -> String {
    path.strip_prefix(ws.root())
        .unwrap_or(path)
        .display()
        .to_string()
}

fn fuzz_dir(ws: &Workspace) -> PathBuf {
    ws.path(Workspace::FUZZ_CRATE)
}

/// Where cargo fuzz builds: under the main target folder, so `cargo clean` removes it.
fn build_dir(ws: &Workspace) -> PathBuf {
    ws.fuzz_out().join("build")
}

/// `cargo +nightly fuzz SUBCOMMAND` for the fuzz crate, run from the workspace root.
fn cargo_fuzz(ws: &Workspace, subcommand: &str) -> Command {
    // cargo on PATH is rustup's proxy, which understands `+nightly` (cargo fuzz needs nightly's
    // sanitizer flags); the stable cargo running xtask would not.
    let mut cmd = Command::new("cargo");
    cmd.current_dir(ws.root())
        .args(["+nightly", "fuzz", subcommand, "--fuzz-dir"])
        .arg(fuzz_dir(ws))
        .arg("--target-dir")
        .arg(build_dir(ws));
    cmd
}

fn cargo_fuzz_version() -> Result<String> {
    process::output(Command::new("cargo").args(["fuzz", "--version"])).map(|v| v.trim().to_string())
}

fn ensure_cargo_fuzz() -> Result<()> {
    if cargo_fuzz_version().is_ok() {
        return Ok(());
    }
    println!("installing: cargo-fuzz {CARGO_FUZZ_VERSION} (about a minute)");
    process::run(process::cargo().args([
        "install",
        "cargo-fuzz",
        "--locked",
        "--version",
        CARGO_FUZZ_VERSION,
    ]))
    .context("could not install cargo-fuzz: check that crates.io is reachable")?;
    let version = cargo_fuzz_version()
        .context("cargo-fuzz was installed but `cargo fuzz --version` fails: check that $CARGO_HOME/bin is on PATH")?;
    println!("installed: {version}");
    Ok(())
}

/// Builds every target once, so that a compile error is reported as such and the runs start
/// at once.
fn build(ws: &Workspace) -> Result<()> {
    process::run(&mut cargo_fuzz(ws, "build")).context(
        "could not build the fuzz targets: `rustup toolchain install nightly` if nightly is missing, else fix the errors above",
    )
}

#[derive(Clone, Copy, Default)]
struct SeedStats {
    count: usize,
    largest: usize,
}

/// Writes `target`'s seeds, named after the fixture they come from, into `dir`, which holds
/// nothing else.
fn write_seeds(ws: &Workspace, target: &str, dir: &Path) -> Result<SeedStats> {
    recreate(dir)?;
    let mut stats = SeedStats::default();
    let mut put = |name: String, bytes: &[u8]| -> Result<()> {
        let path = dir.join(format!("seed-{name}"));
        fs::write(&path, bytes).with_context(|| format!("could not write {}", path.display()))?;
        stats.count += 1;
        stats.largest = stats.largest.max(bytes.len());
        Ok(())
    };
    for &version in go::GO_VERSIONS {
        let arm64: &[&str] = if target == "gobinary" {
            ARM64_SEED_FIXTURES
        } else {
            &[]
        };
        for &fixture in SEED_FIXTURES.iter().chain(arm64) {
            let path = ws.fixture(version, fixture);
            let data =
                fs::read(&path).with_context(|| format!("could not read {}", path.display()))?;
            let file = object::File::parse(&*data)
                .with_context(|| format!("{} is not an object file", path.display()))?;
            let name = format!("go{version}-{fixture}");
            let context = || format!("could not make {target} seeds from {}", path.display());
            match target {
                "buildinfo" => put(
                    name,
                    section_data(&file, &[".go.buildinfo"]).with_context(context)?,
                )?,
                "pclntab" => {
                    if version == go::GO_VERSIONS[0] && fixture == SEED_FIXTURES[0] {
                        put("synthetic-table".to_string(), &synthetic_pclntab())?;
                    }
                    put(name, &pclntab_seed(&file).with_context(context)?)?
                }
                "dwarf" => {
                    if version == go::GO_VERSIONS[0] && fixture == SEED_FIXTURES[0] {
                        put("synthetic-runtime-structs".to_string(), &synthetic_dwarf())?;
                    }
                    for (kind, seed) in dwarf_seeds(&file).with_context(context)? {
                        put(format!("{name}-{kind}"), &seed)?;
                    }
                }
                "gobinary" => put(name, &data)?,
                other => bail!("no fuzz target named {other}"),
            }
        }
    }
    Ok(stats)
}

/// The raw bytes of the first of `names` the file has.
fn section_data<'d>(file: &object::File<'d>, names: &[&str]) -> Result<&'d [u8]> {
    let section = names
        .iter()
        .find_map(|name| file.section_by_name(name))
        .with_context(|| format!("no section {}", names.join(" or ")))?;
    section
        .data()
        .with_context(|| format!("cannot read section {}", names.join(" or ")))
}

/// The `pclntab` target's input: text start (u64 LE), length of the inline-tree bytes (u32 LE),
/// those bytes, the table.
fn pclntab_seed(file: &object::File<'_>) -> Result<Vec<u8>> {
    let table = section_data(file, &[".gopclntab", ".data.rel.ro.gopclntab"])?;
    // runtime.text: what Pclntab::from_object uses when the header has none (Go 1.26+).
    let text = file
        .section_by_name(".text")
        .context("no .text section")?
        .address();
    let gofunc = gofunc(file).unwrap_or_default();
    let mut seed = Vec::with_capacity(12 + gofunc.len() + table.len());
    seed.extend_from_slice(&text.to_le_bytes());
    seed.extend_from_slice(&u32::try_from(gofunc.len())?.to_le_bytes());
    seed.extend_from_slice(gofunc);
    seed.extend_from_slice(table);
    Ok(seed)
}

/// A table of four functions in a few hundred bytes, in the Go 1.20+ layout: line tables, a
/// wrapper ID to find (`runtime.systemstack_switch`), and an inlined call with its inline tree,
/// as the `pclntab` target's input. Beside the real tables (half a megabyte and more), this
/// seed runs thousands of times a second and every mutation lands in what the reader decodes.
fn synthetic_pclntab() -> Vec<u8> {
    const TEXT: u64 = 0x40_1000;
    fn uvarint(mut value: u32, out: &mut Vec<u8>) {
        while value >= 0x80 {
            out.push(value as u8 | 0x80);
            value >>= 7;
        }
        out.push(value as u8);
    }
    /// A pc-value table from (pc delta, value) rows.
    fn pc_table(rows: &[(u32, i32)], out: &mut Vec<u8>) -> u32 {
        let start = out.len() as u32;
        let mut value = -1i32;
        for &(pc_delta, v) in rows {
            let delta = v - value;
            uvarint(((delta << 1) ^ (delta >> 31)) as u32, out);
            uvarint(pc_delta, out);
            value = v;
        }
        out.push(0);
        start
    }
    // (name, entry offset, size, func ID, line rows, inline-index rows)
    type Func = (
        &'static str,
        u32,
        u32,
        u8,
        &'static [(u32, i32)],
        &'static [(u32, i32)],
    );
    const FUNCS: &[Func] = &[
        (
            "main.main",
            0x00,
            0x40,
            0,
            &[(0x10, 10), (0x20, 11), (0x10, 12)],
            &[(0x08, -1), (0x10, 0), (0x28, -1)],
        ),
        (
            "runtime.systemstack_switch",
            0x40,
            0x20,
            23,
            &[(0x20, 30)],
            &[],
        ),
        ("main.helper", 0x60, 0x20, 0, &[(0x20, 20)], &[]),
        ("main.helper", 0x80, 0x20, 24, &[(0x20, 20)], &[]),
    ];
    let mut names = vec![0u8];
    let name_off = |name: &str, names: &mut Vec<u8>| {
        let offset = names.len() as u32;
        names.extend_from_slice(name.as_bytes());
        names.push(0);
        offset
    };
    let cutab = 0u32.to_le_bytes().to_vec();
    let filetab = b"main.go\0".to_vec();
    // Offset 0 in pctab means "no table": start with a pad byte.
    let mut pctab = vec![0u8];
    let mut gofunc = Vec::new();
    let mut records = Vec::new();
    let mut functab = Vec::new();
    let records_start = (FUNCS.len() as u32 * 2 + 1) * 4;
    for &(name, entry, size, func_id, lines, inline) in FUNCS {
        let name = name_off(name, &mut names);
        let pcsp = pc_table(&[(size, 0)], &mut pctab);
        let pcfile = pc_table(&[(size, 0)], &mut pctab);
        let pcln = pc_table(lines, &mut pctab);
        let mut pcdata = Vec::new();
        let mut funcdata = Vec::new();
        if !inline.is_empty() {
            // PCDATA_InlTreeIndex (2) and FUNCDATA_InlTree (3): a call of main.inlined in
            // main.main, whose code is at 0x08..0x18 and whose call site is at 0x04.
            pcdata = vec![0, 0, pc_table(inline, &mut pctab)];
            funcdata = vec![u32::MAX, u32::MAX, u32::MAX, gofunc.len() as u32];
            let callee = name_off("main.inlined", &mut names);
            gofunc.extend_from_slice(&[0, 0, 0, 0]);
            for word in [callee, 0x04, 40] {
                gofunc.extend_from_slice(&word.to_le_bytes());
            }
        }
        functab.extend_from_slice(&entry.to_le_bytes());
        functab.extend_from_slice(&(records_start + records.len() as u32).to_le_bytes());
        for word in [
            entry,
            name,
            0,
            0,
            pcsp,
            pcfile,
            pcln,
            pcdata.len() as u32,
            0,
            1,
        ] {
            records.extend_from_slice(&word.to_le_bytes());
        }
        records.extend_from_slice(&[func_id, 0, 0, funcdata.len() as u8]);
        for word in pcdata.iter().chain(&funcdata) {
            records.extend_from_slice(&word.to_le_bytes());
        }
    }
    let end = FUNCS.last().map_or(0, |f| f.1 + f.2);
    functab.extend_from_slice(&end.to_le_bytes());

    let mut table = Vec::new();
    table.extend_from_slice(&0xFFFF_FFF1u32.to_le_bytes());
    table.extend_from_slice(&[0, 0, 1, 8]);
    // nfunc, nfiles, text start (0: the caller's, as since Go 1.26), then the offsets.
    let mut offset = 8 + 8 * 8;
    let mut words = vec![FUNCS.len() as u64, 1, 0];
    for part in [&names, &cutab, &filetab, &pctab] {
        words.push(offset as u64);
        offset += part.len();
    }
    words.push(offset as u64);
    for word in words {
        table.extend_from_slice(&word.to_le_bytes());
    }
    for part in [&names, &cutab, &filetab, &pctab, &functab, &records] {
        table.extend_from_slice(part);
    }

    let mut input = TEXT.to_le_bytes().to_vec();
    input.extend_from_slice(&(gofunc.len() as u32).to_le_bytes());
    input.extend_from_slice(&gofunc);
    input.extend_from_slice(&table);
    input
}

/// The bytes from `moduledata.gofunc` (`go:func.*`, where the inline trees are) to the end of
/// their section, when the binary names that symbol (not when stripped: finding it then is
/// `Pclntab::from_object`'s job, which the `gobinary` target fuzzes).
fn gofunc<'d>(file: &object::File<'d>) -> Option<&'d [u8]> {
    let address = file
        .symbols()
        .find(|symbol| symbol.name() == Ok("go:func.*"))?
        .address();
    file.sections().find_map(|section| {
        let offset = usize::try_from(address.checked_sub(section.address())?).ok()?;
        section
            .data()
            .ok()?
            .get(offset..)
            .filter(|rest| !rest.is_empty())
    })
}

/// The sections the `dwarf` target puts in its ELF, in the order of its input.
const DWARF_SECTIONS: &[&str] = &["info", "abbrev", "str", "str_offsets", "line", "line_str"];

/// The `dwarf` target's inputs from a binary with DWARF (none from one without): the sections
/// decompressed (`plain`), as they are in the file (`raw`: compressed, as Go writes them), and
/// decompressed with `.debug_info` cut down to the compilation unit that holds `runtime.g`
/// (`runtime-unit`: what the reader needs, a fraction of the bytes, so more runs a second).
fn dwarf_seeds(file: &object::File<'_>) -> Result<Vec<(&'static str, Vec<u8>)>> {
    if file.section_by_name(".debug_info").is_none() {
        return Ok(Vec::new());
    }
    // (mode, bytes) per section; modes as the target reads them: 0 absent, 1 plain,
    // 2 SHF_COMPRESSED, 3 .zdebug_.
    let mut plain = Vec::new();
    let mut raw = Vec::new();
    for name in DWARF_SECTIONS {
        let name = format!(".debug_{name}");
        match file.section_by_name(&name) {
            Some(section) => {
                let data = section
                    .uncompressed_data()
                    .with_context(|| format!("cannot decompress {name}"))?;
                plain.push((1u8, data.into_owned()));
                let compressed = section
                    .compressed_file_range()
                    .with_context(|| format!("cannot read {name}"))?;
                let mode = match (compressed.format, section.name()) {
                    (object::CompressionFormat::None, _) => 1,
                    (_, Ok(actual)) if actual.starts_with(".zdebug_") => 3,
                    _ => 2,
                };
                raw.push((
                    mode,
                    section
                        .data()
                        .with_context(|| format!("cannot read {name}"))?
                        .to_vec(),
                ));
            }
            None => {
                plain.push((0, Vec::new()));
                raw.push((0, Vec::new()));
            }
        }
    }
    let mut seeds = vec![("plain", dwarf_input(&plain)), ("raw", dwarf_input(&raw))];
    if let Some(unit) = unit_holding(&plain[0].1, b"runtime.g\0") {
        let mut cut = plain.clone();
        cut[0].1 = plain[0].1[unit].to_vec();
        seeds.push(("runtime-unit", dwarf_input(&cut)));
    }
    Ok(seeds)
}

/// The structs the layout reader looks for, in a few hundred bytes of DWARF 4 (`.debug_info` and
/// `.debug_abbrev` only, names inline, offsets as ULEB128, as Go writes them), with Go 1.25's
/// offsets. Beside the real sections (a third of a megabyte and more), this seed runs thousands
/// of times a second and every mutation lands in what the reader interprets.
fn synthetic_dwarf() -> Vec<u8> {
    /// (name, byte size, members as (name, offset))
    type Struct = (&'static str, u64, &'static [(&'static str, u64)]);
    const STRUCTS: &[Struct] = &[
        ("runtime.stack", 16, &[("lo", 0), ("hi", 8)]),
        (
            "runtime.gobuf",
            48,
            &[
                ("sp", 0),
                ("pc", 8),
                ("g", 16),
                ("ctxt", 24),
                ("lr", 32),
                ("bp", 40),
            ],
        ),
        (
            "runtime.g",
            448,
            &[
                ("stack", 0),
                ("stackguard0", 16),
                ("sched", 56),
                ("atomicstatus", 144),
                ("goid", 152),
                ("waitreason", 178),
                ("parentGoid", 264),
                ("gopc", 272),
                ("startpc", 288),
            ],
        ),
    ];
    fn uleb(mut value: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (value & 0x7f) as u8;
            value >>= 7;
            if value == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn string(text: &str, out: &mut Vec<u8>) {
        out.extend_from_slice(text.as_bytes());
        out.push(0);
    }
    // Codes 1-3: compile unit (name), structure type (name, byte size), member (name, offset).
    let abbrev = vec![
        1, 0x11, 1, 0x03, 0x08, 0, 0, // DW_TAG_compile_unit, children: DW_AT_name string
        2, 0x13, 1, 0x03, 0x08, 0x0b, 0x0f, 0,
        0, // DW_TAG_structure_type: name, byte_size udata
        3, 0x0d, 0, 0x03, 0x08, 0x38, 0x0f, 0,
        0, // DW_TAG_member: name, data_member_location udata
        0,
    ];
    let mut dies = vec![1];
    string("runtime", &mut dies);
    for (name, size, members) in STRUCTS {
        dies.push(2);
        string(name, &mut dies);
        uleb(*size, &mut dies);
        for (member, offset) in *members {
            dies.push(3);
            string(member, &mut dies);
            uleb(*offset, &mut dies);
        }
        dies.push(0);
    }
    dies.push(0);
    // Unit header: length, version 4, abbrev offset 0, address size 8.
    let mut info = Vec::new();
    info.extend_from_slice(&((2 + 4 + 1 + dies.len()) as u32).to_le_bytes());
    info.extend_from_slice(&4u16.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes());
    info.push(8);
    info.extend_from_slice(&dies);
    let mut sections = vec![(1, info), (1, abbrev)];
    sections.resize(DWARF_SECTIONS.len(), (0, Vec::new()));
    dwarf_input(&sections)
}

/// flags (little-endian ELF), then per section a mode byte and a u32 LE length, then the bytes.
fn dwarf_input(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
    let mut input = vec![0u8];
    for (mode, bytes) in sections {
        input.push(*mode);
        input.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    }
    for (_, bytes) in sections {
        input.extend_from_slice(bytes);
    }
    input
}

/// The byte range of the 32-bit DWARF unit in `info` whose bytes contain `needle` (Go writes
/// names inline, `DW_FORM_string`).
fn unit_holding(info: &[u8], needle: &[u8]) -> Option<std::ops::Range<usize>> {
    let at = info.windows(needle.len()).position(|w| w == needle)?;
    let mut start = 0usize;
    while start < info.len() {
        let length = u32::from_le_bytes(info.get(start..start + 4)?.try_into().ok()?);
        if length >= 0xffff_fff0 {
            return None;
        }
        let end = start.checked_add(4)?.checked_add(length as usize)?;
        if (start..end).contains(&at) {
            return (end <= info.len()).then_some(start..end);
        }
        start = end;
    }
    None
}

/// Makes `dir` an empty folder.
fn recreate(dir: &Path) -> Result<()> {
    match fs::remove_dir_all(dir) {
        Ok(()) => {}
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
        Err(err) => bail!(
            "could not remove {}: {err}: remove it by hand",
            dir.display()
        ),
    }
    fs::create_dir_all(dir).with_context(|| format!("could not create {}", dir.display()))
}

struct Outcome {
    target: String,
    success: bool,
    seconds: f64,
    runs: Option<u64>,
    exec_per_sec: Option<u64>,
    /// From libFuzzer's last status line: edges covered, features, corpus size.
    cov: Option<u64>,
    ft: Option<u64>,
    corpus: Option<String>,
    peak_rss_mb: Option<u64>,
    /// The first line saying what went wrong, the innermost stack frame in ctxleak's own code
    /// (where a sanitizer printed a stack), and the input that did it.
    error: Option<String>,
    frame: Option<String>,
    artifact: Option<String>,
    log: PathBuf,
}

/// Longest output line kept, in characters.
const MAX_LINE: usize = 2000;

/// Runs one target on its seeds and reproducers. Each run starts from those alone: what it finds
/// goes to `found` (emptied first, kept afterwards). A corpus kept across runs would grow by a
/// few hundred megabytes per run of the targets whose inputs are whole sections and binaries,
/// and libFuzzer holds its corpus in memory, under the RSS limit.
#[allow(clippy::too_many_arguments)]
fn run_target(
    ws: &Workspace,
    target: &str,
    corpus: &Path,
    found: &Path,
    logs: &Path,
    max_len: usize,
    seconds: u64,
    smoke: bool,
) -> Result<Outcome> {
    recreate(found)?;
    let mut cmd = cargo_fuzz(ws, "run");
    // libFuzzer writes what it finds into the first folder.
    cmd.arg(target).arg(found).arg(corpus);
    // The committed reproducers of past findings are run too, every time.
    let regressions = fuzz_dir(ws).join("regressions").join(target);
    if regressions.is_dir() {
        cmd.arg(&regressions);
    }
    cmd.arg("--").args([
        format!("-max_len={max_len}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
        format!("-timeout={}", timeout_seconds(target)),
        "-print_final_stats=1".to_string(),
    ]);
    if smoke {
        cmd.arg("-runs=0");
    } else {
        cmd.arg(format!("-max_total_time={seconds}"));
    }
    let log_path = logs.join(format!("{target}.log"));
    let mut log = fs::File::create(&log_path)
        .with_context(|| format!("could not create {}", log_path.display()))?;
    writeln!(log, "$ {}", process::show(&cmd))?;
    println!("$ {}", process::show(&cmd));

    let started = Instant::now();
    // libFuzzer reports on stderr; cargo's own lines come there too.
    let mut child = cmd
        .stdout(Stdio::inherit())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("could not start `{}`", process::show(&cmd)))?;
    let stderr = child.stderr.take().context("no stderr")?;
    let mut outcome = Outcome {
        target: target.to_string(),
        success: false,
        seconds: 0.0,
        runs: None,
        exec_per_sec: None,
        cov: None,
        ft: None,
        corpus: None,
        peak_rss_mb: None,
        error: None,
        frame: None,
        artifact: None,
        log: log_path.clone(),
    };
    for line in BufReader::new(stderr).split(b'\n') {
        let line = line.context("could not read the fuzzer's output")?;
        let line = String::from_utf8_lossy(&line);
        // After a crash cargo fuzz prints the input's Debug form on one line: megabytes for
        // the larger targets. The file is kept whole; the log and the terminal get its start.
        let line = match line.char_indices().nth(MAX_LINE) {
            Some((cut, _)) => format!("{} ... ({} bytes more)", &line[..cut], line.len() - cut),
            None => line.into_owned(),
        };
        writeln!(log, "{line}")?;
        // The terminal skips the one-per-new-input lines.
        if !(line.starts_with('#') && (line.contains("\tNEW ") || line.contains("\tREDUCE "))) {
            eprintln!("{line}");
        }
        read_line(&line, &mut outcome);
    }
    let status = child.wait().context("could not wait for cargo fuzz")?;
    outcome.seconds = started.elapsed().as_secs_f64();
    outcome.success = status.success();
    if !status.success() && outcome.error.is_none() {
        outcome.error = Some(format!("cargo fuzz run failed ({status})"));
    }
    Ok(outcome)
}

/// Picks what the report needs from one line of libFuzzer's output.
fn read_line(line: &str, outcome: &mut Outcome) {
    if line.starts_with('#') && line.contains(" cov: ") {
        outcome.cov = number_after(line, "cov: ").or(outcome.cov);
        outcome.ft = number_after(line, "ft: ").or(outcome.ft);
        outcome.corpus = word_after(line, "corp: ")
            .map(str::to_string)
            .or(outcome.corpus.take());
        outcome.exec_per_sec = number_after(line, "exec/s: ").or(outcome.exec_per_sec);
    } else if let Some(runs) = number_after(line, "stat::number_of_executed_units: ") {
        outcome.runs = Some(runs);
    } else if let Some(rate) = number_after(line, "stat::average_exec_per_sec: ") {
        outcome.exec_per_sec = Some(rate);
    } else if let Some(rss) = number_after(line, "stat::peak_rss_mb: ") {
        outcome.peak_rss_mb = Some(rss);
    } else if let Some(at) = line.find("Test unit written to ") {
        outcome.artifact = Some(
            line[at + "Test unit written to ".len()..]
                .trim()
                .to_string(),
        );
    } else if outcome.error.is_none()
        && let Some(at) = ["ERROR: libFuzzer", "ERROR: AddressSanitizer", "panicked at"]
            .iter()
            .find_map(|key| line.find(key))
    {
        outcome.error = Some(line[at..].trim().to_string());
    } else if outcome.frame.is_none()
        && line.trim_start().starts_with('#')
        && line.contains(" in ")
        && line.contains("/ctxleak-goexe/src/")
    {
        // "#12 0x... in load_section /work/main/ctxleak-goexe/src/layout.rs:157:14"
        outcome.frame = line
            .split_once(" in ")
            .map(|(_, frame)| frame.trim().to_string());
    }
}

fn word_after<'l>(line: &'l str, key: &str) -> Option<&'l str> {
    let at = line.find(key)? + key.len();
    line[at..].split_whitespace().next()
}

fn number_after(line: &str, key: &str) -> Option<u64> {
    word_after(line, key)?.parse().ok()
}

fn summary(ws: &Workspace, outcomes: &[Outcome]) -> String {
    let show = |value: Option<u64>| value.map_or("-".to_string(), |v| v.to_string());
    let mut out =
        String::from("| target | result | time | runs | exec/s | cov | ft | corpus | peak RSS |\n");
    out.push_str("|---|---|---|---|---|---|---|---|---|\n");
    for o in outcomes {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} s | {} | {} | {} | {} | {} | {} MB |",
            o.target,
            if o.success { "ok" } else { "FAILED" },
            o.seconds,
            show(o.runs),
            show(o.exec_per_sec),
            show(o.cov),
            show(o.ft),
            o.corpus.as_deref().unwrap_or("-"),
            show(o.peak_rss_mb),
        );
    }
    for o in outcomes.iter().filter(|o| !o.success) {
        let _ = writeln!(
            out,
            "\n{}: {}",
            o.target,
            o.error.as_deref().unwrap_or("failed")
        );
        if let Some(frame) = &o.frame {
            let _ = writeln!(out, "  in ctxleak: {frame}");
        }
        if let Some(artifact) = &o.artifact {
            let _ = writeln!(
                out,
                "  input: {artifact}\n  reproduce: cargo +nightly fuzz run --fuzz-dir ctxleak-goexe/fuzz --target-dir {} {} {artifact}",
                shown(ws, &build_dir(ws)),
                o.target
            );
        }
        let _ = writeln!(out, "  log: {}", shown(ws, &o.log));
    }
    out
}
