//! Bad input gets one line naming the cause and the fix, and harms nothing.

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Ctxleak, Phases, ctxleak, fixture, newest_go, wait_timeout};

/// Runs `ctxleak attach --pid <pid>` to completion (it must not hang).
fn attach(pid: u32) -> Output {
    attach_with(ctxleak(), pid)
}

fn attach_with(mut command: Command, pid: u32) -> Output {
    let mut child = command
        .args(common::attach_args(pid))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cannot start ctxleak");
    if wait_timeout(&mut child, Duration::from_secs(60)).is_none() {
        let _ = child.kill();
        panic!("ctxleak did not exit for PID {pid}");
    }
    child.wait_with_output().expect("ctxleak's output")
}

/// The single line ctxleak printed on stderr, after checking it failed with exactly one line.
fn one_line_error(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(1),
        "expected a failure, got {:?}: {stderr}",
        output.status
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "expected one line on stderr, got {lines:?}");
    assert!(lines[0].starts_with("ctxleak: error: "), "{}", lines[0]);
    assert!(!stderr.contains("panicked"), "{stderr}");
    lines[0].to_owned()
}

/// A process that runs until dropped.
struct Running(std::process::Child);

impl Running {
    fn start(program: &Path, args: &[&str]) -> Self {
        // A binary this test binary just wrote (PatchedVersion) can be "text file busy" for a
        // moment: another test's fork inherits its write descriptor until that child execs.
        let mut tries = 0;
        let child = loop {
            match Command::new(program)
                .args(args)
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .spawn()
            {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 50 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(20));
                }
                spawned => {
                    break spawned
                        .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
                }
            }
        };
        // Give it time to exec, so /proc/PID/exe is the new program.
        std::thread::sleep(Duration::from_millis(200));
        Self(child)
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }

    fn is_running(&mut self) -> bool {
        self.0.try_wait().ok().flatten().is_none()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn no_such_pid() {
    // A PID that just existed and is now gone (reaped), so it names no process.
    let mut child = Command::new("true").spawn().expect("true");
    let pid = child.id();
    child.wait().expect("wait");
    let line = one_line_error(&attach(pid));
    assert_eq!(
        line,
        format!("ctxleak: error: no process with PID {pid}: check the PID (ps -e)")
    );
}

#[test]
fn a_kernel_thread() {
    // kthreadd is PID 2 in the initial PID namespace; elsewhere PID 2 may be anything.
    let comm = std::fs::read_to_string("/proc/2/comm").unwrap_or_default();
    if comm.trim() != "kthreadd" {
        eprintln!("skipped: PID 2 is {comm:?}, not kthreadd");
        return;
    }
    let line = one_line_error(&attach(2));
    assert_eq!(
        line,
        "ctxleak: error: PID 2 has no executable file (a kernel thread?): give the PID of a Go process"
    );
}

#[test]
fn a_process_that_is_not_go() {
    let mut sleep = Running::start(Path::new("sleep"), &["60"]);
    let line = one_line_error(&attach(sleep.pid()));
    assert!(line.contains(&format!("PID {}: ", sleep.pid())), "{line}");
    assert!(
        line.contains("is not a Go program (it has no .go.buildinfo section)"),
        "{line}"
    );
    assert!(line.contains("give the PID of a Go process"), "{line}");
    assert_eq!(
        line.matches("is not a Go program").count(),
        1,
        "said once: {line}"
    );
    assert!(sleep.is_running());
}

/// A copy of a fixture whose `.go.buildinfo` says `to` instead of `from` (same length); the
/// program itself runs unchanged. Removed when dropped.
struct PatchedVersion {
    dir: std::path::PathBuf,
    binary: std::path::PathBuf,
}

impl PatchedVersion {
    fn new(fixture_path: &Path, from: &str, to: &str) -> Self {
        assert_eq!(from.len(), to.len());
        let mut bytes = std::fs::read(fixture_path).expect("fixture");
        let magic = b"\xff Go buildinf:";
        let header = bytes
            .windows(magic.len())
            .position(|w| w == magic)
            .expect(".go.buildinfo");
        let at = header
            + bytes[header..]
                .windows(from.len())
                .position(|window| window == from.as_bytes())
                .expect("the version string in .go.buildinfo");
        bytes[at..at + to.len()].copy_from_slice(to.as_bytes());
        // Tests run in parallel: one folder per copy.
        static COPIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let copy = COPIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("ctxleak-{to}-{}-{copy}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let binary = dir.join("app");
        std::fs::write(&binary, &bytes).expect("write");
        std::fs::set_permissions(&binary, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        Self { dir, binary }
    }

    /// Also replaces every `from` in the copy with `to` (same length), e.g. a function's name
    /// in `.gopclntab`.
    fn replacing(self, from: &[u8], to: &[u8]) -> Self {
        assert_eq!(from.len(), to.len());
        let mut bytes = std::fs::read(&self.binary).expect("the copy");
        let mut replaced = 0;
        let mut at = 0;
        while let Some(found) = bytes[at..].windows(from.len()).position(|w| w == from) {
            bytes[at + found..at + found + to.len()].copy_from_slice(to);
            at += found + to.len();
            replaced += 1;
        }
        assert!(replaced > 0, "nothing to replace");
        std::fs::write(&self.binary, &bytes).expect("write");
        self
    }
}

impl Drop for PatchedVersion {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[test]
fn go_older_than_1_21() {
    // No Go < 1.21 toolchain is installable here, so take a Go 1.21 fixture and stamp an older
    // version into its .go.buildinfo.
    let patched = PatchedVersion::new(&fixture("1.21.13", "phases"), "go1.21.13", "go1.20.14");
    let mut target = Running::start(&patched.binary, &[]);
    let line = one_line_error(&attach(target.pid()));
    assert!(
        line.contains("was built with go1.20.14, and ctxleak needs Go 1.21 or newer"),
        "{line}"
    );
    assert!(
        line.contains("rebuild it with a newer Go toolchain"),
        "{line}"
    );
    assert!(target.is_running());
}

/// The newest fixture, stripped, stamped as a Go release whose minor the offset table lacks
/// (same length): go1.27.3 -> go1.99.3.
fn newer_go() -> (String, PatchedVersion) {
    let version = newest_go();
    let unknown = format!("go1.99{}", &version[4..]);
    let patched = PatchedVersion::new(
        &fixture(&version, "phases-stripped"),
        &format!("go{version}"),
        &unknown,
    );
    (unknown, patched)
}

#[test]
fn a_stripped_binary_of_a_newer_go_gets_layouts_from_its_code() {
    let (unknown, patched) = newer_go();
    let target = Running::start(&patched.binary, &[]);
    let ctxleak = Ctxleak::attach(target.pid());
    let warning = format!(
        "built with {unknown}, newer than the Go releases ctxleak was checked with: using the runtime.g layout derived from its code"
    );
    assert!(
        ctxleak
            .stderr
            .seen
            .iter()
            .any(|line| line.contains(&warning)),
        "{:?}",
        ctxleak.stderr.seen
    );
    let series = format!(
        r#"ctxleak_goroutines{{pid="{}",kind="user"}}"#,
        target.pid()
    );
    let settled = common::wait_for_sample(&ctxleak, &series, 1.0, Duration::from_secs(15));
    assert!(
        settled.is_ok(),
        "the fixture has one goroutine at its first checkpoint: {settled:?}"
    );
}

#[test]
fn a_stripped_binary_whose_layout_is_neither_derived_nor_in_the_table() {
    // Renamed in the function table, runtime.casgstatus cannot give atomicstatus.
    let (unknown, patched) = newer_go();
    let patched = patched.replacing(b"runtime.casgstatus\0", b"runtime.casgstatuX\0");
    let mut target = Running::start(&patched.binary, &[]);
    let line = one_line_error(&attach(target.pid()));
    assert!(
        line.contains("has no DWARF (built with -ldflags=-w or stripped), ctxleak cannot derive runtime.g.atomicstatus from runtime.casgstatus: the binary has no such function"),
        "{line}"
    );
    let minor: String = newest_go().split('.').take(2).collect::<Vec<_>>().join(".");
    assert!(
        line.contains(&format!(
            "does not know {unknown}'s minor release (it knows go1.21, "
        )) && line.contains(&format!("go{minor})")),
        "the known minor releases are listed: {line}"
    );
    assert!(line.contains("rebuild the target without -w, or add a release of its minor to GO_VERSIONS in xtask/src/go.rs and run `cargo xtask offsets`"), "{line}");
    assert!(target.is_running());
}

/// A binary with symbols but without DWARF (-ldflags=-w) attaches like any other (the count on
/// binaries without DWARF is checked at every checkpoint by goroutine_count's stripped matrix).
#[test]
fn a_binary_without_dwarf_attaches() {
    let target = Running::start(&fixture(&newest_go(), "phases-nodwarf"), &[]);
    let ctxleak = Ctxleak::attach(target.pid());
    let series = format!(
        r#"ctxleak_goroutines{{pid="{}",kind="user"}}"#,
        target.pid()
    );
    let settled = common::wait_for_sample(&ctxleak, &series, 1.0, Duration::from_secs(15));
    assert!(
        settled.is_ok(),
        "the fixture has one goroutine at its first checkpoint: {settled:?}"
    );
}

/// ctxleak run as root with `drop` removed from its capability bounding set.
fn without_capabilities(drop: &str) -> (String, bool) {
    let mut target = Running::start(&fixture(&newest_go(), "phases"), &[]);
    // Dropped from the bounding set, so even uid 0 does not get them back at exec.
    let mut command = Command::new("setpriv");
    command.args([&format!("--bounding-set={drop}"), "--inh-caps=-all", "--"]);
    command.arg(env!("CARGO_BIN_EXE_ctxleak"));
    let line = one_line_error(&attach_with(command, target.pid()));
    (line, target.is_running())
}

#[test]
fn missing_privileges() {
    // None of them; and all but CAP_SYS_ADMIN, which uprobes need again since Linux 6.16: it
    // must be refused up front, not with an EACCES from perf_event_open halfway through.
    for drop in ["-bpf,-perfmon,-sys_admin,-sys_ptrace", "-sys_admin"] {
        let (line, running) = without_capabilities(drop);
        assert!(
            line.contains("lacks the privileges to load eBPF programs and read the memory of PID"),
            "{drop}: {line}"
        );
        assert!(
            line.contains("run it as root (sudo), or with the capabilities CAP_SYS_ADMIN, CAP_BPF, CAP_PERFMON and CAP_SYS_PTRACE"),
            "{drop}: {line}"
        );
        assert!(running, "{drop}: the target must keep running");
    }
}

#[test]
fn a_target_that_exits_during_attach() {
    // The fixture exits as soon as it reads EOF on stdin; ctxleak starts around then, so the
    // exit lands somewhere in its attach sequence (or just after it). The fixture is not
    // reaped until ctxleak is done, so its PID stays taken (a zombie, as under a parent that
    // has not waited yet). Every outcome must be one of the two clean ones, never a raw OS
    // error or a hang.
    let version = newest_go();
    for delay_ms in [0u64, 10, 40, 80, 150, 300, 1000] {
        let mut phases = Phases::start(&fixture(&version, "phases"));
        let pid = phases.pid();
        phases.checkpoint();
        let mut command = ctxleak();
        command.args(common::attach_args(pid));
        let ctxleak = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("ctxleak");
        std::thread::sleep(Duration::from_millis(delay_ms));
        phases.close_stdin();
        let output = ctxleak.wait_with_output().expect("ctxleak output");
        assert!(phases.finish().success());
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        let last = stderr.lines().last().unwrap_or_default().to_owned();
        let clean_exit =
            output.status.success() && last == format!("ctxleak: PID {pid} exited; detached");
        let clean_error = output.status.code() == Some(1)
            && stderr.lines().count() == 1
            && last
                == format!(
                    "ctxleak: error: PID {pid} exited while ctxleak was attaching: nothing to watch"
                );
        eprintln!("delay {delay_ms} ms: {last}");
        assert!(
            clean_exit || clean_error,
            "delay {delay_ms} ms: {:?}: {stderr}",
            output.status
        );
    }
}

#[test]
fn a_busy_metrics_address() {
    let mut target = Running::start(&fixture(&newest_go(), "phases"), &[]);
    let first = Ctxleak::attach(target.pid());
    let address = first.metrics_url.clone();
    let mut command = ctxleak();
    let output = command
        .args([
            "attach",
            "--quiet",
            "--web.listen-address",
            &address,
            "--pid",
            &target.pid().to_string(),
        ])
        .output()
        .expect("ctxleak");
    let line = one_line_error(&output);
    assert!(
        line.contains(&format!("cannot listen on {address} for metrics")),
        "{line}"
    );
    assert!(
        line.contains("pick another address with --web.listen-address"),
        "{line}"
    );
    drop(first);
    assert!(target.is_running());
}
