//! Goroutine profiles from `ctxleak_daemon::pprof` as `go tool pprof` reads them.
//!
//! 1. A profile built from synthetic stacks (inlined calls, shared frames, recursion, labels,
//!    an unknown address) decoded by pprof: counts, functions, file:line of every frame, the
//!    order of inlined frames and the labels must come back as they went in.
//! 2. Go's own: the `goroutineprofile` fixture writes `pprof.Lookup("goroutine").WriteTo(f, 0)`;
//!    its stacks, read back through `go tool pprof -raw`, are encoded again by ctxleak, and pprof
//!    must show the two profiles alike: `-raw` identical but for what ctxleak does not know
//!    (function start lines, the process's other mappings), `-top` and `-traces` identical.
//!
//! Each profile is decoded by the oldest and the newest supported Go's pprof. No root needed.
//! The Go toolchains are the ones `cargo xtask setup` installs under target/tools/go/. Run
//! through `cargo xtask test`, the fixtures come from $CTXLEAK_FIXTURES for every version in
//! $CTXLEAK_GO_VERSIONS; run alone, the fixture is built here with the oldest and newest Go.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common;
use ctxleak_daemon::pprof::{ProfileFrame, ProfileMapping, ProfileSample, goroutine_profile};

const OLDEST_GO: &str = "1.21.13";
const NEWEST_GO: &str = "1.27.3";
const FIXTURE: &str = "goroutineprofile";

fn go_versions() -> Vec<String> {
    match std::env::var("CTXLEAK_GO_VERSIONS") {
        Ok(list) => list
            .split(',')
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .collect(),
        Err(_) => vec![OLDEST_GO.to_owned(), NEWEST_GO.to_owned()],
    }
}

/// The oldest and newest of the versions: whose pprof decodes the profiles.
fn pprof_versions() -> Vec<String> {
    let versions = go_versions();
    let mut tools: Vec<String> = versions
        .first()
        .into_iter()
        .chain(versions.last())
        .cloned()
        .collect();
    tools.dedup();
    tools
}

/// A go command that stays offline and inside the workspace, as `cargo xtask` runs go.
fn go(version: &str) -> Command {
    let mut cmd = common::go_command(version);
    // pprof prints times in the local zone; the tests read them back as UTC.
    cmd.env("TZ", "UTC")
        // pprof would look for binaries there; nothing should be symbolized again.
        .env_remove("PPROF_BINARY_PATH");
    cmd
}

fn run(mut cmd: Command) -> String {
    let shown = format!("{cmd:?}");
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {shown}: {e}"));
    assert!(
        out.status.success(),
        "{shown} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap_or_else(|e| panic!("{shown} printed non-UTF-8: {e}"))
}

/// `go tool pprof <report> <file>` with Go `version`'s pprof.
fn pprof(version: &str, report: &[&str], file: &Path) -> String {
    let mut cmd = go(version);
    cmd.args(["tool", "pprof"]).args(report).arg(file);
    run(cmd)
}

/// A fresh directory for one test's files.
fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pprof_profile")
        .join(name);
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    dir
}

fn write(path: &Path, data: &[u8]) {
    fs::write(path, data).unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------------------
// `go tool pprof -raw`, parsed.

#[derive(Debug, Default)]
struct Raw {
    period_type: String,
    period: String,
    time_nanos: Option<i64>,
    sample_types: String,
    samples: Vec<RawSample>,
    locations: Vec<RawLocation>,
    mappings: Vec<RawMapping>,
}

#[derive(Debug)]
struct RawSample {
    values: Vec<i64>,
    locations: Vec<u64>,
    labels: Vec<(String, String)>,
}

#[derive(Debug)]
struct RawLocation {
    id: u64,
    address: u64,
    mapping: Option<u64>,
    /// Innermost first: all but the last are inlined into the last.
    lines: Vec<RawLine>,
}

#[derive(Debug)]
struct RawLine {
    function: String,
    file: String,
    line: i64,
}

#[derive(Debug)]
struct RawMapping {
    id: u64,
    start: u64,
    limit: u64,
    offset: u64,
    file: String,
    build_id: String,
    bits: String,
}

fn hex(s: &str) -> u64 {
    let digits = s
        .strip_prefix("0x")
        .unwrap_or_else(|| panic!("not hex: {s:?}"));
    u64::from_str_radix(digits, 16).unwrap_or_else(|e| panic!("not hex: {s:?}: {e}"))
}

fn number<T: std::str::FromStr>(s: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    s.parse()
        .unwrap_or_else(|e| panic!("not a number: {s:?}: {e:?}"))
}

/// `function file:line[:column] s=start_line`: newer pprof prints a column, older does not.
fn parse_line(text: &str) -> RawLine {
    let text = text.trim();
    let (text, _start_line) = text
        .rsplit_once(" s=")
        .unwrap_or_else(|| panic!("no start line in {text:?}"));
    let (function, place) = text
        .rsplit_once(' ')
        .unwrap_or_else(|| panic!("no file:line in {text:?}"));
    let (rest, last) = place
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("no line in {place:?}"));
    // A Go file name ends in .go or .s, never in :digits: a second number is the line.
    let (file, line) = match rest.rsplit_once(':') {
        Some((file, line)) if line.bytes().all(|b| b.is_ascii_digit()) && !line.is_empty() => {
            (file, line)
        }
        _ => (rest, last),
    };
    RawLine {
        function: function.to_owned(),
        file: file.to_owned(),
        line: number(line),
    }
}

/// `key:[value] key:[value]`, keys sorted; a value is kept whole (spaces included).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    let mut labels = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let (key, after) = rest
            .split_once(":[")
            .unwrap_or_else(|| panic!("bad labels {text:?}"));
        let end = after.find("] ").unwrap_or_else(|| {
            after
                .strip_suffix(']')
                .map(str::len)
                .unwrap_or_else(|| panic!("bad labels {text:?}"))
        });
        labels.push((key.to_owned(), after[..end].to_owned()));
        rest = after[end + 1..].trim_start();
    }
    labels
}

/// Go's `time.Time.String()` of a UTC time: `2006-01-02 15:04:05.999999999 +0000 UTC`.
fn parse_time(text: &str) -> i64 {
    let fields: Vec<&str> = text.split(' ').collect();
    let [date, clock, "+0000", "UTC"] = fields.as_slice() else {
        panic!("not a UTC time: {text:?}");
    };
    let date: Vec<i64> = date.split('-').map(number).collect();
    let (clock, fraction) = clock.split_once('.').unwrap_or((clock, "0"));
    let clock: Vec<i64> = clock.split(':').map(number).collect();
    let [year, month, day] = date[..] else {
        panic!("bad date in {text:?}")
    };
    let [hour, minute, second] = clock[..] else {
        panic!("bad time in {text:?}")
    };
    let nanos: i64 = number(&format!("{fraction:0<9}"));
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's days_from_civil).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((month + 9) % 12) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    ((days * 24 + hour) * 60 + minute) * 60 * 1_000_000_000 + second * 1_000_000_000 + nanos
}

fn parse_raw(text: &str) -> Raw {
    #[derive(PartialEq)]
    enum Section {
        Header,
        SampleTypes,
        Samples,
        Locations,
        Mappings,
    }
    let mut raw = Raw::default();
    let mut section = Section::Header;
    for line in text.lines() {
        let trimmed = line.trim();
        match trimmed {
            "Samples:" => {
                section = Section::SampleTypes;
                continue;
            }
            "Locations" => {
                section = Section::Locations;
                continue;
            }
            "Mappings" => {
                section = Section::Mappings;
                continue;
            }
            "" => continue,
            _ => {}
        }
        match section {
            Section::Header => {
                if let Some(v) = trimmed.strip_prefix("PeriodType: ") {
                    raw.period_type = v.to_owned();
                } else if let Some(v) = trimmed.strip_prefix("Period: ") {
                    raw.period = v.to_owned();
                } else if let Some(v) = trimmed.strip_prefix("Time: ") {
                    raw.time_nanos = Some(parse_time(v));
                }
            }
            Section::SampleTypes => {
                raw.sample_types = trimmed.to_owned();
                section = Section::Samples;
            }
            Section::Samples => {
                let (values, locations) = trimmed.split_once(':').unwrap_or(("", ""));
                if !values.is_empty() && values.split_whitespace().all(|v| v.parse::<i64>().is_ok())
                {
                    raw.samples.push(RawSample {
                        values: values.split_whitespace().map(number).collect(),
                        locations: locations.split_whitespace().map(number).collect(),
                        labels: Vec::new(),
                    });
                } else {
                    let sample = raw
                        .samples
                        .last_mut()
                        .unwrap_or_else(|| panic!("labels before any sample: {line:?}"));
                    sample.labels.extend(parse_labels(trimmed));
                }
            }
            Section::Locations => {
                let first = trimmed
                    .split_once(": 0x")
                    .filter(|(id, _)| id.parse::<u64>().is_ok());
                if let Some((id, rest)) = first {
                    let (address, mut rest) = rest.split_once(' ').unwrap_or((rest, ""));
                    let mut mapping = None;
                    if let Some(after) = rest.strip_prefix("M=") {
                        let (m, after) = after.split_once(' ').unwrap_or((after, ""));
                        mapping = Some(number(m));
                        rest = after;
                    }
                    let lines = if rest.is_empty() {
                        vec![]
                    } else {
                        vec![parse_line(rest)]
                    };
                    raw.locations.push(RawLocation {
                        id: number(id),
                        address: hex(&format!("0x{address}")),
                        mapping,
                        lines,
                    });
                } else {
                    let location = raw
                        .locations
                        .last_mut()
                        .unwrap_or_else(|| panic!("line before any location: {line:?}"));
                    location.lines.push(parse_line(trimmed));
                }
            }
            Section::Mappings => {
                // `id: start/limit/offset file build_id bits`
                let (id, rest) = trimmed
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("bad mapping {line:?}"));
                let (range, rest) = rest.split_once(' ').unwrap_or((rest, ""));
                let range: Vec<u64> = range.split('/').map(hex).collect();
                let [start, limit, offset] = range[..] else {
                    panic!("bad mapping range {line:?}")
                };
                // Split on the last two spaces of the untrimmed line: the build ID and the
                // bits may be empty.
                let rest = &line[line.find(rest).unwrap_or(0)..];
                let mut parts = rest.rsplitn(3, ' ');
                let bits = parts.next().unwrap_or_default();
                let build_id = parts.next().unwrap_or_default();
                let file = parts.next().unwrap_or_default();
                raw.mappings.push(RawMapping {
                    id: number(id),
                    start,
                    limit,
                    offset,
                    file: file.to_owned(),
                    build_id: build_id.to_owned(),
                    bits: bits.to_owned(),
                });
            }
        }
    }
    raw
}

impl Raw {
    fn location(&self, id: u64) -> &RawLocation {
        self.locations
            .iter()
            .find(|l| l.id == id)
            .unwrap_or_else(|| panic!("no location {id}"))
    }

    /// The samples as the encoder's input: a location's lines become frames sharing its
    /// address, all but the last inlined.
    fn to_samples(&self) -> Vec<ProfileSample> {
        self.samples
            .iter()
            .map(|sample| {
                assert_eq!(sample.values.len(), 1, "one value per sample: {sample:?}");
                let stack = sample
                    .locations
                    .iter()
                    .flat_map(|&id| {
                        let location = self.location(id);
                        let last = location.lines.len().saturating_sub(1);
                        location
                            .lines
                            .iter()
                            .enumerate()
                            .map(move |(i, line)| ProfileFrame {
                                function: line.function.clone(),
                                file: line.file.clone(),
                                line: line.line,
                                address: location.address,
                                inlined: i < last,
                            })
                    })
                    .collect();
                ProfileSample {
                    count: sample.values[0],
                    stack,
                    labels: sample.labels.clone(),
                }
            })
            .collect()
    }

    /// The one mapping the locations point to.
    fn main_mapping(&self) -> ProfileMapping {
        let used: BTreeSet<u64> = self.locations.iter().filter_map(|l| l.mapping).collect();
        assert_eq!(used.len(), 1, "locations in one mapping: {used:?}");
        let id = used.first().copied().unwrap_or_default();
        let m = self
            .mappings
            .iter()
            .find(|m| m.id == id)
            .unwrap_or_else(|| panic!("no mapping {id}"));
        ProfileMapping {
            start: m.start,
            limit: m.limit,
            offset: m.offset,
            file: m.file.clone(),
            build_id: m.build_id.clone(),
        }
    }
}

/// A `-raw` dump without what ctxleak does not write: function start lines (` s=N`) and the
/// mappings no location points to (Go lists its process's vdso and the like).
fn comparable_raw(text: &str) -> String {
    let raw = parse_raw(text);
    let used: BTreeSet<u64> = raw.locations.iter().filter_map(|l| l.mapping).collect();
    let mut out = String::new();
    let mut in_mappings = false;
    for line in text.lines() {
        if line == "Mappings" {
            in_mappings = true;
        } else if in_mappings {
            let id: u64 = number(line.split_once(':').map_or(line, |(id, _)| id));
            if !used.contains(&id) {
                continue;
            }
        }
        let line = match line.rsplit_once(" s=") {
            Some((before, start)) if start.bytes().all(|b| b.is_ascii_digit()) => before,
            _ => line,
        };
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// Panics with the first differing line, then both texts.
fn assert_same(what: &str, go: &str, ours: &str) {
    if go == ours {
        return;
    }
    let first = go
        .lines()
        .zip(ours.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| go.lines().count().min(ours.lines().count()));
    panic!(
        "{what} differs at line {}:\n  Go:      {:?}\n  ctxleak: {:?}\n--- Go\n{go}--- ctxleak\n{ours}",
        first + 1,
        go.lines().nth(first),
        ours.lines().nth(first)
    );
}

// ---------------------------------------------------------------------------------------------
// 1. Synthetic stacks.

const TIME_NANOS: i64 = 1_700_000_000_123_456_789;
const TIME_TEXT: &str = "2023-11-14 22:13:20.123456789 +0000 UTC";

fn frame(function: &str, file: &str, line: i64, address: u64, inlined: bool) -> ProfileFrame {
    ProfileFrame {
        function: function.to_owned(),
        file: file.to_owned(),
        line,
        address,
        inlined,
    }
}

fn gopark() -> ProfileFrame {
    frame(
        "runtime.gopark",
        "/go/src/runtime/proc.go",
        435,
        0x43d5ee,
        false,
    )
}

fn chanrecv() -> [ProfileFrame; 2] {
    [
        frame(
            "runtime.chanrecv",
            "/go/src/runtime/chan.go",
            664,
            0x40874c,
            false,
        ),
        frame(
            "runtime.chanrecv1",
            "/go/src/runtime/chan.go",
            506,
            0x408712,
            false,
        ),
    ]
}

fn goexit() -> ProfileFrame {
    frame(
        "runtime.goexit",
        "/go/src/runtime/asm_amd64.s",
        1700,
        0x474f21,
        false,
    )
}

fn synthetic() -> Vec<ProfileSample> {
    let labels = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    };
    let mut inlined = vec![gopark()];
    inlined.extend(chanrecv());
    inlined.extend([
        // Two calls inlined into main.worker at one PC.
        frame("main.(*Queue).pop", "/src/app/queue.go", 31, 0x4a1234, true),
        frame(
            "main.(*Server).next",
            "/src/app/server.go",
            88,
            0x4a1234,
            true,
        ),
        frame("main.worker", "/src/app/server.go", 120, 0x4a1234, false),
        frame("main.main.func1", "/src/app/main.go", 40, 0x4a5010, false),
        goexit(),
    ]);
    let mut fetch = vec![gopark()];
    fetch.extend(chanrecv());
    fetch.extend([
        frame("main.fetch", "/src/app/fetch.go", 12, 0x4a3000, false),
        // main.worker again, at another call site: another location, the same function.
        frame("main.worker", "/src/app/server.go", 131, 0x4a1300, false),
        frame("main.main.func1", "/src/app/main.go", 40, 0x4a5010, false),
        goexit(),
    ]);
    let recursive = vec![
        gopark(),
        frame(
            "runtime.selectgo",
            "/go/src/runtime/select.go",
            335,
            0x44b9c5,
            false,
        ),
        frame("main.walk", "/src/app/tree.go", 9, 0x4a4100, false),
        frame("main.walk", "/src/app/tree.go", 14, 0x4a4150, false),
        frame("main.walk", "/src/app/tree.go", 14, 0x4a4150, false),
        goexit(),
    ];
    // A frame whose PC was not read: still shown, in no mapping.
    let unknown = vec![
        frame(
            "time.Sleep",
            "/go/src/runtime/time.go",
            300,
            0x46f0aa,
            false,
        ),
        frame("main.tick", "/src/app/main.go", 70, 0, false),
    ];
    vec![
        ProfileSample {
            count: 5,
            stack: inlined,
            labels: labels(&[("state", "chan receive"), ("pool", "workers")]),
        },
        ProfileSample {
            count: 2,
            stack: recursive,
            labels: labels(&[("state", "select")]),
        },
        ProfileSample {
            count: 9,
            stack: fetch,
            labels: labels(&[("state", "chan receive")]),
        },
        ProfileSample {
            count: 1,
            stack: unknown,
            labels: vec![],
        },
    ]
}

fn app_mapping() -> ProfileMapping {
    ProfileMapping {
        start: 0x400000,
        limit: 0x4c0000,
        offset: 0,
        // Not a file here: pprof must not need it (the mapping says it has functions).
        file: "/srv/app/server".to_owned(),
        build_id: "0123456789abcdef".to_owned(),
    }
}

/// The stacks pprof decoded, as (count, frames as `function file:line` with ` (inline)` for
/// inlined ones, labels).
type Stack = (i64, Vec<String>, Vec<(String, String)>);

fn decoded_stacks(raw: &Raw) -> Vec<Stack> {
    raw.to_samples()
        .into_iter()
        .map(|sample| {
            let frames = sample
                .stack
                .iter()
                .map(|f| {
                    let inline = if f.inlined { " (inline)" } else { "" };
                    format!("{} {}:{}{inline}", f.function, f.file, f.line)
                })
                .collect();
            let mut labels = sample.labels;
            labels.sort();
            (sample.count, frames, labels)
        })
        .collect()
}

/// What pprof must decode from `synthetic()`: largest count first, goexit left out.
fn expected_stacks() -> Vec<Stack> {
    let frames = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let labels = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<Vec<_>>()
    };
    vec![
        (
            9,
            frames(&[
                "runtime.gopark /go/src/runtime/proc.go:435",
                "runtime.chanrecv /go/src/runtime/chan.go:664",
                "runtime.chanrecv1 /go/src/runtime/chan.go:506",
                "main.fetch /src/app/fetch.go:12",
                "main.worker /src/app/server.go:131",
                "main.main.func1 /src/app/main.go:40",
            ]),
            labels(&[("state", "chan receive")]),
        ),
        (
            5,
            frames(&[
                "runtime.gopark /go/src/runtime/proc.go:435",
                "runtime.chanrecv /go/src/runtime/chan.go:664",
                "runtime.chanrecv1 /go/src/runtime/chan.go:506",
                "main.(*Queue).pop /src/app/queue.go:31 (inline)",
                "main.(*Server).next /src/app/server.go:88 (inline)",
                "main.worker /src/app/server.go:120",
                "main.main.func1 /src/app/main.go:40",
            ]),
            labels(&[("pool", "workers"), ("state", "chan receive")]),
        ),
        (
            2,
            frames(&[
                "runtime.gopark /go/src/runtime/proc.go:435",
                "runtime.selectgo /go/src/runtime/select.go:335",
                "main.walk /src/app/tree.go:9",
                "main.walk /src/app/tree.go:14",
                "main.walk /src/app/tree.go:14",
            ]),
            labels(&[("state", "select")]),
        ),
        (
            1,
            frames(&[
                "time.Sleep /go/src/runtime/time.go:300",
                "main.tick /src/app/main.go:70",
            ]),
            vec![],
        ),
    ]
}

/// `-top` rows: function -> (flat, cum).
fn top_rows(text: &str) -> Vec<(String, i64, i64)> {
    text.lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .skip(1)
        .map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            assert!(fields.len() >= 6, "bad -top row {line:?}");
            (fields[5..].join(" "), number(fields[0]), number(fields[3]))
        })
        .collect()
}

#[test]
fn synthetic_profile_reads_back_through_pprof() {
    let dir = scratch("synthetic");
    let file = dir.join("goroutine.pb.gz");
    write(
        &file,
        &goroutine_profile(&synthetic(), TIME_NANOS, Some(&app_mapping())),
    );

    for version in pprof_versions() {
        let raw_text = pprof(&version, &["-raw"], &file);
        let raw = parse_raw(&raw_text);
        assert_eq!(
            raw.period_type, "goroutine count",
            "go {version}:\n{raw_text}"
        );
        assert_eq!(raw.period, "1");
        assert_eq!(raw.sample_types, "goroutine/count");
        assert_eq!(
            raw.time_nanos,
            Some(TIME_NANOS),
            "go {version}:\n{raw_text}"
        );
        assert!(raw_text.contains(&format!("Time: {TIME_TEXT}\n")));

        // Every stack, frame by frame, with its count and labels.
        assert_eq!(
            decoded_stacks(&raw),
            expected_stacks(),
            "go {version}:\n{raw_text}"
        );

        // Locations: one per physical frame, shared across and within stacks; the inlined
        // calls are lines of main.worker's location; the unknown PC is in no mapping.
        assert_eq!(raw.locations.len(), 12, "go {version}:\n{raw_text}");
        let worker = raw
            .locations
            .iter()
            .find(|l| l.address == 0x4a1234)
            .unwrap_or_else(|| panic!("no location at 0x4a1234:\n{raw_text}"));
        let functions: Vec<&str> = worker.lines.iter().map(|l| l.function.as_str()).collect();
        assert_eq!(
            functions,
            ["main.(*Queue).pop", "main.(*Server).next", "main.worker"]
        );
        let gopark_id = raw.location(raw.samples[0].locations[0]).id;
        assert!(raw.samples[..3].iter().all(|s| s.locations[0] == gopark_id));
        let walk = &raw.samples[2].locations;
        assert_eq!(
            walk[3], walk[4],
            "the recursive frame is one location: {walk:?}"
        );
        for location in &raw.locations {
            let expect = (location.address != 0).then_some(1);
            assert_eq!(location.mapping, expect, "go {version}: {location:?}");
        }
        assert_eq!(raw.mappings.len(), 1);
        let m = &raw.mappings[0];
        assert_eq!(
            (
                m.id,
                m.start,
                m.limit,
                m.offset,
                m.file.as_str(),
                m.build_id.as_str(),
                m.bits.as_str()
            ),
            (
                1,
                0x400000,
                0x4c0000,
                0,
                "/srv/app/server",
                "0123456789abcdef",
                "[FN]"
            )
        );

        // -top: totals, and each function once with its own and cumulative counts.
        let top = pprof(&version, &["-top"], &file);
        assert!(top.contains("Type: goroutine\n"), "go {version}:\n{top}");
        assert!(top.contains("File: server\n"), "go {version}:\n{top}");
        assert!(
            top.contains("Build ID: 0123456789abcdef\n"),
            "go {version}:\n{top}"
        );
        assert!(
            top.contains("Showing nodes accounting for 17, 100% of 17 total"),
            "go {version}:\n{top}"
        );
        let rows = top_rows(&top);
        let row = |name: &str| {
            rows.iter()
                .find(|(n, _, _)| n == name)
                .map(|&(_, flat, cum)| (flat, cum))
                .unwrap_or_else(|| panic!("go {version}: no {name} in -top:\n{top}"))
        };
        assert_eq!(row("runtime.gopark"), (16, 16));
        assert_eq!(row("time.Sleep"), (1, 1));
        assert_eq!(row("main.worker"), (0, 14));
        assert_eq!(row("main.(*Queue).pop (inline)"), (0, 5));
        assert_eq!(row("main.(*Server).next (inline)"), (0, 5));
        assert_eq!(row("main.walk"), (0, 2));
        assert_eq!(row("main.tick"), (0, 1));
        assert_eq!(rows.len(), 12, "go {version}: one row per function:\n{top}");
        assert!(!top.contains("runtime.goexit"));

        // -traces: the stacks in order, inlined calls marked, labels above them.
        let traces = pprof(&version, &["-traces"], &file);
        let body = traces
            .split_once("-----------+")
            .map(|(_, body)| format!("-----------+{body}"))
            .unwrap_or_default();
        let separator = "-----------+-------------------------------------------------------\n";
        let expected = [
            "     state:  chan receive\n",
            "         9   runtime.gopark\n",
            "             runtime.chanrecv\n",
            "             runtime.chanrecv1\n",
            "             main.fetch\n",
            "             main.worker\n",
            "             main.main.func1\n",
            separator,
            "      pool:  workers\n",
            "     state:  chan receive\n",
            "         5   runtime.gopark\n",
            "             runtime.chanrecv\n",
            "             runtime.chanrecv1\n",
            "             main.(*Queue).pop (inline)\n",
            "             main.(*Server).next (inline)\n",
            "             main.worker\n",
            "             main.main.func1\n",
            separator,
            "     state:  select\n",
            "         2   runtime.gopark\n",
            "             runtime.selectgo\n",
            "             main.walk\n",
            "             main.walk\n",
            "             main.walk\n",
            separator,
            "         1   time.Sleep\n",
            "             main.tick\n",
            separator,
        ]
        .concat();
        assert_same(
            &format!("go {version} -traces"),
            &format!("{separator}{expected}"),
            &body,
        );
    }
}

#[test]
fn profile_without_mapping_reads_back() {
    let dir = scratch("no-mapping");
    let file = dir.join("goroutine.pb.gz");
    write(&file, &goroutine_profile(&synthetic(), TIME_NANOS, None));
    for version in pprof_versions() {
        let raw_text = pprof(&version, &["-raw"], &file);
        let raw = parse_raw(&raw_text);
        // Go's stand-in: no range, no file, every location in it, functions known.
        assert_eq!(raw.mappings.len(), 1, "go {version}:\n{raw_text}");
        let m = &raw.mappings[0];
        assert_eq!(
            (m.id, m.start, m.limit, m.file.as_str(), m.bits.as_str()),
            (1, 0, 0, "", "[FN]")
        );
        assert!(raw.locations.iter().all(|l| l.mapping == Some(1)));
        assert_eq!(
            decoded_stacks(&raw),
            expected_stacks(),
            "go {version}:\n{raw_text}"
        );
        // Nothing for pprof to symbolize, so nothing to warn about.
        let mut cmd = go(&version);
        cmd.args(["tool", "pprof", "-top"]).arg(&file);
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run pprof: {e}"));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stderr.trim().is_empty(),
            "go {version}: {stderr}"
        );
        let top = pprof(&version, &["-top"], &file);
        assert!(
            top.contains("Showing nodes accounting for 17, 100% of 17 total"),
            "go {version}:\n{top}"
        );
    }
}

#[test]
fn empty_profile_reads_back() {
    let dir = scratch("empty");
    let file = dir.join("goroutine.pb.gz");
    write(
        &file,
        &goroutine_profile(&[], TIME_NANOS, Some(&app_mapping())),
    );
    for version in pprof_versions() {
        let raw = parse_raw(&pprof(&version, &["-raw"], &file));
        assert_eq!(raw.sample_types, "goroutine/count");
        assert!(raw.samples.is_empty() && raw.locations.is_empty());
        // No location in it: not marked symbolized, as Go leaves such mappings.
        assert_eq!(raw.mappings.len(), 1);
        assert_eq!(raw.mappings[0].bits, "");
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Go's own goroutine profile, encoded again.

/// The fixture built with Go `version`: from `cargo xtask fixtures`, or built here.
fn fixture(version: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("CTXLEAK_FIXTURES") {
        let path = PathBuf::from(dir)
            .join(format!("go{version}"))
            .join(FIXTURE);
        assert!(
            path.is_file(),
            "missing fixture {}: run `cargo xtask fixtures`",
            path.display()
        );
        return path;
    }
    let out = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("pprof_profile")
        .join(format!("go{version}"))
        .join(FIXTURE);
    let mut cmd = go(version);
    cmd.current_dir(common::workspace_root().join("fixtures/go"))
        .args(["build", "-o"])
        .arg(&out)
        .arg(format!("./cmd/{FIXTURE}"));
    run(cmd);
    out
}

fn round_trip(version: &str) {
    let dir = scratch(&format!("go{version}"));
    let go_file = dir.join("go.pb.gz");
    let ours_file = dir.join("ctxleak.pb.gz");
    let mut cmd = Command::new(fixture(version));
    cmd.arg(&go_file);
    run(cmd);

    // What Go wrote, seen by the newest pprof: the stacks the fixture parked.
    let go_raw_text = pprof(NEWEST_GO, &["-raw"], &go_file);
    let go_raw = parse_raw(&go_raw_text);
    let samples = go_raw.to_samples();
    let find = |function: &str| {
        samples
            .iter()
            .find(|s| s.stack.iter().any(|f| f.function == function))
            .unwrap_or_else(|| {
                panic!("go {version}: no {function} in Go's profile:\n{go_raw_text}")
            })
    };
    assert_eq!(find("main.recvForever").count, 3, "{go_raw_text}");
    let parker = find("main.inlinedParker");
    assert_eq!(parker.count, 2, "{go_raw_text}");
    let tail: Vec<(&str, bool)> = parker.stack[parker.stack.len() - 3..]
        .iter()
        .map(|f| (f.function.as_str(), f.inlined))
        .collect();
    assert_eq!(
        tail,
        [
            ("main.awaitRelease", true),
            ("main.relay", true),
            ("main.inlinedParker", false)
        ],
        "go {version}:\n{go_raw_text}"
    );
    let labeled = find("main.labeledWait");
    assert_eq!(labeled.count, 2);
    assert_eq!(
        labeled.labels,
        [
            ("role".to_owned(), "labeled-worker".to_owned()),
            ("shard".to_owned(), "7".to_owned())
        ]
    );
    let recurse = find("main.recurse");
    assert_eq!(
        recurse
            .stack
            .iter()
            .filter(|f| f.function == "main.recurse")
            .count(),
        4
    );
    assert_eq!(
        samples.iter().map(|s| s.count).sum::<i64>(),
        11,
        "{go_raw_text}"
    );

    // The same stacks, encoded by ctxleak.
    let time = go_raw
        .time_nanos
        .unwrap_or_else(|| panic!("no time in Go's profile:\n{go_raw_text}"));
    write(
        &ours_file,
        &goroutine_profile(&samples, time, Some(&go_raw.main_mapping())),
    );

    let mut tools = pprof_versions();
    if !tools.iter().any(|v| v == version) {
        tools.push(version.to_owned());
    }
    for tool in tools {
        let what = |report: &str| format!("Go {version}'s profile, pprof {tool} {report}");
        assert_same(
            &what("-raw"),
            &comparable_raw(&pprof(&tool, &["-raw"], &go_file)),
            &comparable_raw(&pprof(&tool, &["-raw"], &ours_file)),
        );
        for report in ["-top", "-traces"] {
            assert_same(
                &what(report),
                &pprof(&tool, &[report], &go_file),
                &pprof(&tool, &[report], &ours_file),
            );
        }
    }
}

#[test]
fn go_profiles_round_trip() {
    let versions = go_versions();
    // Two at a time: each runs a Go program and a dozen pprof commands.
    for pair in versions.chunks(2) {
        std::thread::scope(|scope| {
            for version in pair {
                scope.spawn(move || round_trip(version));
            }
        });
    }
}
