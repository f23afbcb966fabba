//! The `.gopclntab` reader and symbolizer on stripped binaries (`-ldflags='-s -w'`), exe and
//! PIE, for every supported Go toolchain, against the toolchain's own answers:
//!
//! - `go tool addr2line` on the same stripped binary, for 1000 PCs per binary (function
//!   entries, PCs inside functions, PCs in inlined code, PCs anywhere in .text). addr2line
//!   prints the physical function with the innermost inlined call's file and line;
//! - the runtime itself: the `inlines` fixture prints `runtime.CallersFrames` for stacks that
//!   run through code inlined up to five levels deep, and every frame must match ours;
//! - `go tool nm` on the unstripped build: every function's entry, and the by-name lookup of
//!   `runtime.newproc` and `runtime.goexit1` (which appear twice: the function and its ABI0
//!   wrapper) returns the function, not the wrapper.
//!
//! The stripped and PIE variants are built here from the fixture sources with each
//! toolchain, into `CARGO_TARGET_TMPDIR`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use crate::common;
use ctxleak_daemon::goexe::pclntab::{FuncId, Pclntab};
use ctxleak_daemon::goexe::symbolize::{
    Frame, name_for_print, symbolize, symbolize_return_address,
};

const PROGRAM: &str = "inlines";
const PCS_PER_BINARY: usize = 1000;

/// A go command as `cargo xtask` runs it: this toolchain only, no network, no cgo.
fn go(version: &str) -> Command {
    common::go_command(version)
}

fn run(cmd: &mut Command, stdin: &str) -> String {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("piped stdin");
    let stdin = stdin.to_owned();
    let writer = std::thread::spawn(move || input.write_all(stdin.as_bytes()));
    let output = child.wait_with_output().expect("command output");
    writer
        .join()
        .expect("stdin writer")
        .expect("write to stdin");
    assert!(
        output.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Exe,
    Pie,
}

/// One toolchain's builds of the fixture.
struct Builds {
    version: String,
    /// (mode, stripped, unstripped)
    binaries: Vec<(Mode, PathBuf, PathBuf)>,
}

/// Builds the variants once for all tests (in parallel across toolchains).
fn builds() -> &'static [Builds] {
    static BUILDS: OnceLock<Vec<Builds>> = OnceLock::new();
    BUILDS.get_or_init(|| {
        let versions = common::go_versions();
        assert!(!versions.is_empty(), "CTXLEAK_GO_VERSIONS is empty");
        std::thread::scope(|scope| {
            let handles: Vec<_> = versions
                .iter()
                .map(|v| scope.spawn(move || build_version(v)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("build thread"))
                .collect()
        })
    })
}

fn build_version(version: &str) -> Builds {
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("symbolize")
        .join(format!("go{version}"));
    std::fs::create_dir_all(&out).expect("create the build directory");
    let build = |name: &str, pie: bool, stripped: bool| {
        let path = out.join(name);
        let mut cmd = go(version);
        cmd.current_dir(common::workspace_root().join("fixtures/go"))
            .arg("build");
        if pie {
            cmd.arg("-buildmode=pie");
        }
        if stripped {
            cmd.arg("-ldflags=-s -w");
        }
        cmd.arg("-o").arg(&path).arg(format!("./cmd/{PROGRAM}"));
        run(&mut cmd, "");
        path
    };
    // The plain build is the one `cargo xtask fixtures` made.
    let exe = common::fixture(version, PROGRAM);
    let exe_stripped = build(&format!("{PROGRAM}-stripped"), false, true);
    let pie = build(&format!("{PROGRAM}-pie"), true, false);
    let pie_stripped = build(&format!("{PROGRAM}-pie-stripped"), true, true);
    Builds {
        version: version.to_owned(),
        binaries: vec![
            (Mode::Exe, exe_stripped, exe),
            (Mode::Pie, pie_stripped, pie),
        ],
    }
}

fn load(path: &Path) -> Pclntab {
    let data =
        std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let file = object::File::parse(&*data).expect("an ELF file");
    Pclntab::from_object(&file).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// (major, minor) of "1.22.10".
fn minor(version: &str) -> u32 {
    version
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("a Go version")
}

/// SplitMix64: reproducible samples without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// PCs spread over .text: a quarter function entries, a quarter anywhere inside a function,
/// a third inside inlined code (every function of package main, then random others), the
/// rest anywhere in the text, padding included.
fn sample_pcs(table: &Pclntab, seed: u64) -> Vec<u64> {
    let mut rng = Rng(seed);
    let n = table.len() as u64;
    let function = |rng: &mut Rng| {
        table
            .function_by_index(rng.below(n) as usize)
            .expect("a function")
    };
    let mut pcs = Vec::with_capacity(PCS_PER_BINARY);
    for _ in 0..PCS_PER_BINARY / 4 {
        pcs.push(function(&mut rng).entry);
    }
    for _ in 0..PCS_PER_BINARY / 4 {
        let f = function(&mut rng);
        pcs.push(f.entry + rng.below(f.end - f.entry));
    }
    let inlined_target = pcs.len() + PCS_PER_BINARY / 3;
    let mut candidates: Vec<_> = table
        .functions()
        .filter(|f| f.name.starts_with("main."))
        .collect();
    let mut attempts = 0;
    while pcs.len() < inlined_target && attempts < 100_000 {
        attempts += 1;
        let f = match candidates.pop() {
            Some(f) => f,
            None => function(&mut rng),
        };
        let inlined: Vec<u64> = (f.entry..f.end)
            .filter(|&pc| f.inline_index(pc).is_some())
            .collect();
        if !inlined.is_empty() {
            pcs.push(inlined[rng.below(inlined.len() as u64) as usize]);
        }
    }
    let first = table.function_by_index(0).expect("a function").entry;
    let last = table
        .function_by_index(table.len() - 1)
        .expect("a function")
        .end;
    while pcs.len() < PCS_PER_BINARY {
        pcs.push(first + rng.below(last - first));
    }
    pcs
}

/// addr2line's answer for each PC: (function, file, line); a PC without a position reads
/// "(function, "?", 0)", as the runtime (and our symbolizer) say it.
fn addr2line(version: &str, binary: &Path, pcs: &[u64]) -> Vec<(String, String, i64)> {
    let input: String = pcs.iter().map(|pc| format!("{pc:#x}\n")).collect();
    let output = run(go(version).args(["tool", "addr2line"]).arg(binary), &input);
    let lines: Vec<&str> = output.lines().collect();
    assert_eq!(
        lines.len(),
        2 * pcs.len(),
        "addr2line printed {} lines for {} PCs",
        lines.len(),
        pcs.len()
    );
    lines
        .chunks(2)
        .map(|pair| {
            let (file, line) = pair[1].rsplit_once(':').expect("file:line");
            let line: i64 = line.parse().expect("a line number");
            match (file, line) {
                ("", -1) => (pair[0].to_owned(), "?".to_owned(), 0),
                _ => (pair[0].to_owned(), file.to_owned(), line),
            }
        })
        .collect()
}

fn ours(table: &Pclntab, pc: u64) -> (String, String, i64, usize) {
    match symbolize(table, pc) {
        None => ("?".to_owned(), "?".to_owned(), 0, 0),
        Some(frames) => {
            let innermost = &frames[0];
            let physical = frames.last().expect("at least one frame");
            (
                physical.function.clone(),
                innermost.file.clone(),
                i64::from(innermost.line),
                frames.len(),
            )
        }
    }
}

#[test]
fn matches_addr2line_on_stripped_binaries() {
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for builds in builds() {
        for (mode, stripped, _) in &builds.binaries {
            let table = load(stripped);
            assert!(
                table.has_inline_trees(),
                "go{} {mode:?}: no inline trees found",
                builds.version
            );
            let pcs = sample_pcs(
                &table,
                u64::from(minor(&builds.version)) * 2 + (*mode == Mode::Pie) as u64,
            );
            let expected = addr2line(&builds.version, stripped, &pcs);
            let (mut inlined, mut unknown, mut no_table, mut mismatched) = (0, 0, 0, 0);
            for (pc, want) in pcs.iter().zip(&expected) {
                let (function, file, line, depth) = ours(&table, *pc);
                inlined += usize::from(depth > 1);
                unknown += usize::from(line == 0);
                let mut want = want.clone();
                // A function without a line table (go:textfipsstart): debug/gosym decodes the
                // bytes at the start of pctab instead and prints a made-up line ("go:textfipsstart
                // :-7"); the runtime, and we, have no position.
                if table.function_at(*pc).is_some_and(|f| !f.has_line_table()) {
                    no_table += 1;
                    (want.1, want.2) = ("?".to_owned(), 0);
                }
                if (&function, &file, line) != (&want.0, &want.1, want.2) {
                    mismatched += 1;
                    if failures.len() < 30 {
                        failures.push(format!(
                            "go{} {mode:?} {pc:#x}: ours {function} {file}:{line}, addr2line {} {}:{}",
                            builds.version, want.0, want.1, want.2
                        ));
                    }
                }
            }
            summary.push(format!(
                "go{} {mode:?}: {} PCs, {inlined} in inlined code, {unknown} without a line \
                 ({no_table} in functions without a line table), {mismatched} mismatched",
                builds.version,
                pcs.len()
            ));
            assert!(
                inlined >= PCS_PER_BINARY / 4,
                "go{} {mode:?}: only {inlined} inlined PCs sampled",
                builds.version
            );
        }
    }
    println!("{}", summary.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        summary.join("\n"),
        failures.join("\n")
    );
}

/// A frame as the fixture printed it.
#[derive(Debug)]
struct RuntimeFrame {
    pc: u64,
    entry: u64,
    function: String,
    file: String,
    line: u32,
}

/// The stacks the fixture printed, and the runtime address of main.main.
fn runtime_stacks(binary: &Path) -> (u64, Vec<(String, Vec<RuntimeFrame>)>) {
    let output = run(&mut Command::new(binary), "");
    let hex = |s: &str| u64::from_str_radix(s, 16).unwrap_or_else(|e| panic!("bad hex {s:?}: {e}"));
    let mut main_entry = None;
    let mut stacks: Vec<(String, Vec<RuntimeFrame>)> = Vec::new();
    for line in output.lines() {
        if let Some(entry) = line.strip_prefix("entry ") {
            main_entry = Some(hex(entry));
        } else if let Some(label) = line.strip_prefix("stack ") {
            stacks.push((label.to_owned(), Vec::new()));
        } else if let Some(frame) = line.strip_prefix("frame ") {
            let mut parts = frame.splitn(3, ' ');
            let (Some(pc), Some(entry), Some(position)) =
                (parts.next(), parts.next(), parts.next())
            else {
                panic!("bad frame line {line:?}");
            };
            let fields: Vec<&str> = position.split('\t').collect();
            assert_eq!(fields.len(), 3, "bad frame line {line:?}");
            stacks
                .last_mut()
                .expect("a stack line first")
                .1
                .push(RuntimeFrame {
                    pc: hex(pc),
                    entry: hex(entry),
                    function: fields[0].to_owned(),
                    file: fields[1].to_owned(),
                    line: fields[2].parse().expect("a line number"),
                });
        }
    }
    (main_entry.expect("an entry line"), stacks)
}

/// Our frames without the wrappers, which `runtime.Callers` leaves out (`elideWrapperCalling`:
/// the fixture's wrappers never call a panic function, which would keep them).
fn ours_as_the_runtime_shows(table: &Pclntab, pc: u64) -> Option<Vec<Frame>> {
    let wrapper = table.wrapper_func_id();
    let frames: Vec<Frame> = symbolize(table, pc)?
        .into_iter()
        .filter(|f| Some(f.func_id) != wrapper)
        .collect();
    (!frames.is_empty()).then_some(frames)
}

fn same(ours: &Frame, theirs: &RuntimeFrame) -> bool {
    name_for_print(&ours.function) == theirs.function
        && ours.file == theirs.file
        && ours.line == theirs.line
}

#[test]
fn matches_the_runtime_for_inlined_frames() {
    let mut failures = Vec::new();
    let mut summary = Vec::new();
    for builds in builds() {
        for (mode, stripped, _) in &builds.binaries {
            let table = load(stripped);
            let (main_entry, stacks) = runtime_stacks(stripped);
            // PIE runs at a load bias; the exe at its link-time addresses.
            let bias =
                main_entry.wrapping_sub(table.function("main.main").expect("main.main").entry);
            if *mode == Mode::Exe {
                assert_eq!(
                    bias, 0,
                    "go{}: a static exe runs at its link-time addresses",
                    builds.version
                );
            }
            let (mut frames_checked, mut deepest) = (0, 0);
            for (label, frames) in &stacks {
                let context = format!("go{} {mode:?} stack {label}", builds.version);
                let mut i = 0;
                while i < frames.len() {
                    let pc = frames[i].pc.wrapping_sub(bias);
                    let Some(group) = ours_as_the_runtime_shows(&table, pc) else {
                        failures.push(format!(
                            "{context}: no function at {pc:#x} ({:?})",
                            frames[i]
                        ));
                        break;
                    };
                    let physical = table.function_at(pc).expect("function of a symbolized PC");
                    // The same frames for the return address after this PC, the way a caller's
                    // frame is looked up.
                    if symbolize_return_address(&table, pc + 1) != symbolize(&table, pc) {
                        failures.push(format!(
                            "{context}: return address {:#x} differs from {pc:#x}",
                            pc + 1
                        ));
                    }
                    deepest = deepest.max(group.len());
                    for (k, ours) in group.iter().enumerate() {
                        match frames.get(i + k) {
                            Some(theirs)
                                if same(ours, theirs)
                                    && theirs.entry.wrapping_sub(bias) == physical.entry =>
                            {
                                // Each inlined frame's own PC resolves to it as the innermost.
                                let own =
                                    ours_as_the_runtime_shows(&table, theirs.pc.wrapping_sub(bias))
                                        .expect("frames");
                                if !same(&own[0], theirs) {
                                    failures.push(format!(
                                        "{context}: at its own pc {theirs:?} ours {:?}",
                                        own[0]
                                    ));
                                }
                                frames_checked += 1;
                            }
                            theirs => failures.push(format!(
                                "{context}: frame {}: ours {ours:?}, runtime {theirs:?}",
                                i + k
                            )),
                        }
                    }
                    i += group.len();
                }
            }
            summary.push(format!(
                "go{} {mode:?}: {} stacks, {frames_checked} frames equal, deepest inlining {deepest} frames",
                builds.version,
                stacks.len()
            ));
            // The fixture's index panic runs five levels of inlined code (pick4 ... indexPanic).
            assert!(
                deepest >= 5,
                "go{} {mode:?}: deepest inline stack only {deepest}",
                builds.version
            );
            assert!(
                stacks.len() >= 15,
                "go{} {mode:?}: the fixture printed {} stacks",
                builds.version,
                stacks.len()
            );
        }
    }
    println!("{}", summary.join("\n"));
    assert!(
        failures.is_empty(),
        "{}\n{}",
        summary.join("\n"),
        failures.join("\n")
    );
}

/// `go tool nm`'s text symbols of an unstripped build: address -> names.
fn nm_text(version: &str, binary: &Path) -> HashMap<u64, Vec<String>> {
    let output = run(go(version).args(["tool", "nm"]).arg(binary), "");
    let mut symbols: HashMap<u64, Vec<String>> = HashMap::new();
    for line in output.lines() {
        // "<address> <kind> <name>", and names may contain spaces (`struct { ... }`).
        let Some((address, rest)) = line.trim_start().split_once(' ') else {
            continue;
        };
        let Some((kind, name)) = rest.split_once(' ') else {
            continue;
        };
        if matches!(kind, "T" | "t") {
            let address = u64::from_str_radix(address, 16).expect("hex address");
            symbols.entry(address).or_default().push(name.to_owned());
        }
    }
    symbols
}

/// `abi.FuncIDWrapper` and `abi.FuncID_runtime_main` of each release (internal/abi/symtab.go).
fn expected_func_ids(version: &str) -> (FuncId, FuncId) {
    match minor(version) {
        21 => (FuncId(21), FuncId(17)),
        22..=24 => (FuncId(22), FuncId(18)),
        _ => (FuncId(23), FuncId(17)),
    }
}

#[test]
fn finds_functions_by_name_like_nm() {
    let mut failures = Vec::new();
    for builds in builds() {
        let (wrapper, runtime_main) = expected_func_ids(&builds.version);
        for (mode, stripped, unstripped) in &builds.binaries {
            let context = format!("go{} {mode:?}", builds.version);
            let table = load(stripped);
            let symbols = nm_text(&builds.version, unstripped);
            let address_of = |name: &str| {
                symbols
                    .iter()
                    .find(|(_, names)| names.iter().any(|n| n == name))
                    .map(|(&address, _)| address)
            };
            assert_eq!(table.wrapper_func_id(), Some(wrapper), "{context}");
            let main = table.function("runtime.main").expect("runtime.main");
            assert_eq!(main.func_id, runtime_main, "{context}");
            assert_eq!(Some(main.entry), address_of("runtime.main"), "{context}");
            for name in ["runtime.newproc", "runtime.goexit1"] {
                let all: Vec<_> = table.functions_named(name).collect();
                assert_eq!(
                    all.len(),
                    2,
                    "{context}: {name} appears {} times",
                    all.len()
                );
                let found = table.function(name).expect("found by name");
                assert!(!found.is_wrapper(), "{context}: {name} is the wrapper");
                assert_eq!(Some(found.entry), address_of(name), "{context}: {name}");
                let wrapper_fn = all
                    .iter()
                    .find(|f| f.entry != found.entry)
                    .expect("the other one");
                assert_eq!(wrapper_fn.func_id, wrapper, "{context}: {name} wrapper");
                assert_eq!(
                    Some(wrapper_fn.entry),
                    address_of(&format!("{name}.abi0")),
                    "{context}: {name}.abi0"
                );
            }
            // Every function of the table is a text symbol at its entry (wrappers as .abi0).
            let mut checked = 0;
            for function in table.functions() {
                let names = symbols
                    .get(&function.entry)
                    .map(Vec::as_slice)
                    .unwrap_or_default();
                // The ELF symbol table spells the middle dot of a few generated names
                // ("type:.eq.runtime.untracedG·4") as a plain dot.
                let name = function.name.replace('·', ".");
                let abi0 = format!("{name}.abi0");
                if names.iter().any(|n| *n == name || *n == abi0) {
                    checked += 1;
                } else if failures.len() < 30 {
                    failures.push(format!(
                        "{context}: {} at {:#x}: nm has {names:?}",
                        function.name, function.entry
                    ));
                }
            }
            assert!(checked > 1000, "{context}: only {checked} functions");
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `-s -w` removes symbols and DWARF and moves no code: the stripped and unstripped builds
/// have the same function table.
#[test]
fn stripping_moves_no_function() {
    for builds in builds() {
        for (mode, stripped, unstripped) in &builds.binaries {
            let summary = |path: &Path| {
                let table = load(path);
                table
                    .functions()
                    .map(|f| (f.name.into_owned(), f.entry, f.end, f.func_id))
                    .collect::<Vec<_>>()
            };
            let (a, b) = (summary(stripped), summary(unstripped));
            assert!(
                a == b,
                "go{} {mode:?}: the stripped build's functions differ",
                builds.version
            );
        }
    }
}
